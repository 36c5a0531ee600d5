//! Real data sets for examples and tests.

use fulgur_runtime::data::ClassificationData;
use fulgur_runtime::Result;

/// The handwritten-digits set that `smartcore` ships (UCI optical digits): 1797 images of 8×8 pixels,
/// scaled to `[0, 1]`, labelled 0–9.
pub fn digits() -> Result<ClassificationData<64, 10>> {
    let ds = smartcore::dataset::digits::load_dataset();
    let features = ds.data.iter().map(|&p| p / 16.0).collect();
    let labels = ds.target.iter().map(|&t| t as usize).collect();
    ClassificationData::new(features, labels)
}

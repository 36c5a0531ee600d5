//! Data loading with deterministic, resumable batch order.
//!
//! A loader hands out batches by index within an epoch, and the order of an epoch is a pure function of
//! `(seed, epoch)`. That is what lets a checkpoint taken in the middle of an epoch resume at the next
//! batch and see exactly the batches the uninterrupted run would have seen.

mod classification;
mod rng;
mod tensor_data;

pub use classification::{ClassificationBatch, ClassificationData, ClassificationLoader};
pub use rng::{permutation, SplitMix64};
pub use tensor_data::{SampleShape, TensorBatch, TensorData, TensorLoader};

use crate::{Error, Result};

/// A source of batches for one loop.
pub trait DataLoader {
    /// What one batch is.
    type Batch;

    /// Batches per epoch.
    fn num_batches(&self) -> usize;

    /// Prepares the order of `epoch`; the order must depend only on `(seed, epoch)`.
    fn set_epoch(&mut self, epoch: u64, seed: u64);

    /// The batch at `index` (`0..num_batches()`) of the current epoch.
    fn batch(&mut self, index: usize) -> Result<Self::Batch>;

    /// The number of samples in batch `index`, which weights its values in epoch means.
    fn batch_size(&self, index: usize) -> usize;
}

/// The sample indices of `(train, val)`: `val_fraction` of `indices`, chosen by a shuffle with `seed`.
fn split_indices(
    indices: &[usize],
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..=1.0).contains(&val_fraction) {
        return Err(Error::Config(format!(
            "`val_fraction` must be in [0, 1], got {val_fraction}"
        )));
    }
    let order = permutation(indices.len(), seed, 0);
    let n_val = (indices.len() as f64 * val_fraction).round() as usize;
    let pick = |range: &[usize]| range.iter().map(|&i| indices[i]).collect();
    Ok((pick(&order[n_val..]), pick(&order[..n_val])))
}

/// The positions in the epoch's `order` that batch `index` holds; the last batch holds what is left.
fn batch_rows(order: &[usize], batch_size: usize, index: usize) -> Result<&[usize]> {
    let start = index.saturating_mul(batch_size);
    order
        .get(start..start.saturating_add(batch_size).min(order.len()))
        .filter(|rows| !rows.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "batch index {index} is out of range: the loader has {} batches",
                order.len().div_ceil(batch_size)
            ))
        })
}

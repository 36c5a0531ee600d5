//! Experiment loggers. The trainer sends them step and epoch metrics and the hyperparameters.

mod csv;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use ciborium::Value;

use crate::metrics::MetricValue;
use crate::strategy::RankZeroFs;
use crate::Result;

pub use csv::CsvLogger;

/// An experiment logger. Writes go through the rank-zero gate passed to each call.
pub trait Logger: Send {
    /// The directory of this run's logs (`<root>/lightning_logs/version_N`); checkpoint callbacks put
    /// their files in its `checkpoints` sub-directory by default. Resolved on first use.
    fn log_dir(&mut self) -> Result<&Path>;

    /// Records the hyperparameters.
    fn log_hyperparams(&mut self, hparams: &Value, fs: RankZeroFs<'_>) -> Result<()>;

    /// Records metrics at `step`.
    fn log_metrics(
        &mut self,
        metrics: &BTreeMap<String, MetricValue>,
        step: u64,
        fs: RankZeroFs<'_>,
    ) -> Result<()>;

    /// Flushes what is buffered.
    fn save(&mut self, fs: RankZeroFs<'_>) -> Result<()>;
}

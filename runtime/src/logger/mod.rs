//! Experiment loggers. The trainer sends them step and epoch metrics and the hyperparameters.

mod csv;
mod event_file;
mod tensorboard;
#[cfg(test)]
mod warnings_tests;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ciborium::Value;

use crate::metrics::MetricValue;
use crate::strategy::RankZeroFs;
use crate::{Error, Result};

pub use csv::CsvLogger;
pub use tensorboard::TensorBoardLogger;

/// An experiment logger. Writes go through the rank-zero gate passed to each call.
///
/// A logger that keeps every row in memory, for a test or a notebook-style summary after `fit`:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::path::{Path, PathBuf};
///
/// use ciborium::Value;
/// use fulgur_runtime::logger::Logger;
/// use fulgur_runtime::metrics::MetricValue;
/// use fulgur_runtime::strategy::{RankZeroFs, SingleProcess};
/// use fulgur_runtime::Result;
///
/// struct MemoryLogger {
///     dir: PathBuf,
///     rows: Vec<(u64, BTreeMap<String, f64>)>,
/// }
///
/// impl Logger for MemoryLogger {
///     fn log_dir(&mut self) -> Result<&Path> {
///         Ok(&self.dir)
///     }
///
///     fn log_hyperparams(&mut self, _hparams: &Value, _fs: RankZeroFs<'_>) -> Result<()> {
///         Ok(())
///     }
///
///     fn log_metrics(
///         &mut self,
///         metrics: &BTreeMap<String, MetricValue>,
///         step: u64,
///         _fs: RankZeroFs<'_>,
///     ) -> Result<()> {
///         let row = metrics.iter().map(|(k, v)| (k.clone(), v.as_f64())).collect();
///         self.rows.push((step, row));
///         Ok(())
///     }
///
///     fn save(&mut self, _fs: RankZeroFs<'_>) -> Result<()> {
///         Ok(())
///     }
/// }
///
/// let mut logger = MemoryLogger { dir: PathBuf::from("runs/memory"), rows: Vec::new() };
/// let metrics = BTreeMap::from([("train_loss".to_string(), MetricValue::F32(0.25))]);
/// logger.log_metrics(&metrics, 50, RankZeroFs::new(&SingleProcess))?;
/// assert_eq!(logger.rows[0].1["train_loss"], 0.25);
/// // Used in a run with `Trainer::builder().logger(MemoryLogger { .. })`.
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
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

/// A logger's directory, `<root>/<name>/version_N`: `N` as set, or one more than the highest existing
/// version, decided the first time it is asked for and kept.
#[derive(Debug)]
struct VersionDir {
    root: PathBuf,
    name: String,
    version: Option<u32>,
    resolved: Option<PathBuf>,
}

impl VersionDir {
    fn new(root: PathBuf, name: String) -> Self {
        Self {
            root,
            name,
            version: None,
            resolved: None,
        }
    }

    fn resolve(&mut self) -> Result<&Path> {
        let dir = match self.resolved.take() {
            Some(dir) => dir,
            None => {
                let runs = self.root.join(&self.name);
                let version = match self.version {
                    Some(v) => v,
                    None => next_version(&runs)?,
                };
                self.version = Some(version);
                runs.join(format!("version_{version}"))
            }
        };
        Ok(self.resolved.insert(dir))
    }
}

/// One more than the highest `version_N` directory in `dir` (0 when there is none), as Lightning's
/// loggers number their runs.
fn next_version(dir: &Path) -> Result<u32> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(Error::Io {
                path: dir.into(),
                op: "list",
                source,
            })
        }
    };
    let max = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("version_")?.parse::<u32>().ok())
        })
        .max();
    Ok(max.map_or(0, |m| m + 1))
}

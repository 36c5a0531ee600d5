//! The state of a run: what the trainer is doing, its counters and flags, the metrics, as the trainer
//! keeps them and callbacks see them. It sits below both, so that neither imports the other to describe
//! the run; the public paths are `fulgur_runtime::trainer::{TrainerFn, TrainerState, ValCheckInterval}`.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::metrics::{MetricSpec, MetricValue};
use crate::optim::OptimizerFacts;

/// What the trainer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainerFn {
    /// Not running.
    #[default]
    Idle,
    /// In `fit`.
    Fitting,
    /// In `validate`.
    Validating,
    /// In `test`.
    Testing,
    /// In `predict`.
    Predicting,
}

/// How often validation runs within a training epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValCheckInterval {
    /// A fraction of the training epoch (`1.0`: at its end).
    Fraction(f64),
    /// Every N training batches.
    Batches(u64),
}

/// The trainer's counters, flags and metrics, as callbacks see them.
#[derive(Debug, Clone, Default)]
pub struct TrainerState {
    /// What the trainer is doing.
    pub fn_: TrainerFn,
    /// The epoch being run (0-based): Lightning's `current_epoch`.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub global_step: u64,
    /// Training batches of the current epoch already processed.
    pub batches_done: u64,
    /// Set while the epoch-end hooks of `epoch` run.
    pub epoch_finished: bool,
    /// Training batches processed over the run.
    pub total_batches: u64,
    /// The seed that drives shuffling.
    pub seed: u64,
    /// `true` during the sanity validation before training.
    pub sanity_checking: bool,
    /// `true` while the last training batch of the epoch is being processed.
    pub is_last_batch: bool,
    /// Validation runs (not sanity checks) of at least one batch completed in this `fit`.
    pub validation_runs: u64,
    /// The latest value of every logged metric: step values, then epoch aggregates.
    pub callback_metrics: BTreeMap<String, MetricValue>,
    /// The run's metric registry: the module's metrics (`LightningModule::METRICS`), then those the
    /// callbacks declare ([`Callback::metrics`](crate::callbacks::Callback::metrics)).
    pub metric_registry: &'static [MetricSpec],
    /// How many entries at the start of `metric_registry` are the module's.
    pub(crate) module_metrics: usize,
    /// Values callbacks logged during the hook that runs, by registry index, for the trainer to record.
    pub(crate) logged: std::cell::RefCell<Vec<(usize, MetricValue)>>,
    /// Every optimizer's name and settings in force (learning rate, momentum or betas, weight decay per
    /// parameter group), in the order `configure_optimizers` returns them; empty outside `fit`.
    pub optimizers: Vec<OptimizerFacts>,
    /// Training batches per epoch (after `limit_train_batches`).
    pub num_training_batches: u64,
    /// Validation batches per run (after `limit_val_batches`); 0 when there is no validation.
    pub num_val_batches: u64,
    /// Validation batches of the sanity check before training (`num_sanity_val_steps`, at most
    /// `num_val_batches`).
    pub num_sanity_val_batches: u64,
    /// The validation cadence within an epoch.
    pub val_check_interval: Option<ValCheckInterval>,
    /// Validation runs every N epochs; `None` to count batches across epochs.
    pub check_val_every_n_epoch: Option<u64>,
    /// `max_epochs` in force.
    pub max_epochs: Option<u64>,
    /// `max_steps` in force.
    pub max_steps: Option<u64>,
    /// The checkpoint this `fit` resumed from; checkpoint callbacks never delete it, unless
    /// `ckpt_path = "last"` or `"best"` picked one of their own files (see `resumed_by_path`).
    pub resumed_from: Option<PathBuf>,
    /// Whether `resumed_from` was named by path (`CkptPath::Path`) rather than found by `"last"` or
    /// `"best"`: a file named by path is kept as it is for the whole run, never deleted nor overwritten.
    pub resumed_by_path: bool,
    /// The trainer's `default_root_dir`.
    pub default_root_dir: PathBuf,
    /// The logger's directory, when there is a logger.
    pub log_dir: Option<PathBuf>,
    /// The trainer's `keep_training_on_checkpoint_error`: checkpoint callbacks warn about I/O errors
    /// instead of failing.
    pub keep_training_on_checkpoint_error: bool,
    /// Whether the module steps its optimizers itself (`LightningModule::MANUAL_OPTIMIZATION`); then
    /// `global_step` counts every optimizer's steps, and checkpoint callbacks save on the step trigger
    /// only (B.6).
    pub manual_optimization: bool,
    /// Lightning's `trainer.should_stop`: set by [`CallbackContext::request_stop`]
    /// (`crate::callbacks::CallbackContext`), read through [`should_stop`](Self::should_stop).
    pub(crate) stop_requested: std::cell::Cell<bool>,
    /// `min_epochs` in force: a stop requested earlier is postponed until this many epochs ran.
    pub min_epochs: Option<u64>,
    /// `min_steps` in force: a stop requested earlier is postponed until this many steps were taken.
    pub min_steps: Option<u64>,
    /// `log_every_n_steps` in force: the trainer logs step metrics every this many training batches.
    pub log_every_n_steps: u64,
    /// Lightning's `trainer.fast_dev_run`: a quick check of the loops (`TrainerBuilder::fast_dev_run`),
    /// in which logging and checkpointing are suppressed: checkpoint callbacks skip every save but the
    /// end-of-fit `last` (as Lightning's), early stopping does nothing.
    pub fast_dev_run: bool,
}

impl TrainerState {
    /// Whether a stop was requested (Lightning's `trainer.should_stop`); the trainer honours it after
    /// the current batch once `min_epochs` and `min_steps` are reached.
    pub fn should_stop(&self) -> bool {
        self.stop_requested.get()
    }

    /// Whether `min_epochs` and `min_steps` are reached, so that a requested stop can end training
    /// (Lightning's `_can_stop_early`).
    pub fn can_stop_early(&self) -> bool {
        self.min_epochs.is_none_or(|m| self.epoch >= m)
            && self.min_steps.is_none_or(|m| self.global_step >= m)
    }

    /// `callback_metrics` plus `epoch` and `step` (the global step), which are always available to
    /// monitor and to filename templates (B.3).
    pub fn monitor_candidates(&self) -> BTreeMap<String, MetricValue> {
        let mut m = self.callback_metrics.clone();
        m.insert("epoch".into(), MetricValue::Int(self.epoch as i64));
        m.insert("step".into(), MetricValue::Int(self.global_step as i64));
        m
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The code of the `.rs` files under `src/<part>` (a file or a folder): comments and test modules
    /// left out.
    fn code_of(part: &str) -> Vec<(PathBuf, String)> {
        fn visit(path: &Path, out: &mut Vec<PathBuf>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).unwrap() {
                    visit(&entry.unwrap().path(), out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.to_path_buf());
            }
        }
        let mut files = Vec::new();
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part),
            &mut files,
        );
        files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let lines: Vec<&str> = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                (f, lines.join("\n"))
            })
            .collect()
    }

    /// Arrows point down: the run's state sits below the trainer and the callbacks, the callback trait
    /// below the module, so that no import goes up and round in a circle.
    #[test]
    fn no_import_points_up() {
        let mut ups = Vec::new();
        let mut check = |parts: &[&str], above: &[&str]| {
            for part in parts {
                for (file, code) in code_of(part) {
                    for module in above {
                        if code.contains(&format!("crate::{module}")) {
                            ups.push(format!("{} names `crate::{module}`", file.display()));
                        }
                    }
                }
            }
        };
        check(
            &[
                "state.rs",
                "callbacks",
                "module",
                "checkpoint",
                "strategy",
                "metrics",
                "optim",
                "data",
                "logger",
            ],
            &["trainer"],
        );
        check(&["state.rs", "callbacks"], &["module"]);
        check(&["state.rs"], &["callbacks"]);
        assert!(ups.is_empty(), "{ups:#?}");
    }
}

//! `ModelCheckpoint`: Lightning's checkpoint callback, with the improvements of section G.
//!
//! The decisions (which files to write, link and delete) live in [`policy`] as pure functions. This
//! module holds the type and its builder; `hooks` reads the trainer's state at each hook and asks the
//! policy; `files` performs the actions through the rank-zero gate and searches the directory.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

mod config;
mod deferred;
mod filename;
mod files;
mod hooks;
mod names;
pub(crate) mod policy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciborium::Value;
use serde::{Deserialize, Serialize};

use super::monitor::KnownMetrics;
use crate::metrics::MetricValue;
use crate::state::TrainerState;
use crate::{Error, Result};
use policy::{Book, Namer};

pub use config::{CheckpointConfig, Mode, ModelCheckpointBuilder, SaveLast};
pub use filename::{FilenameTemplate, TemplateError};

/// A monotonic clock for the time trigger; replaceable so that time can be simulated.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Saves checkpoints by Lightning's rules: when (every N steps, N epochs, a time interval, at the end of
/// training epochs or of validation), which (top-k by a monitored metric, last), what (full or weights
/// only) and where (directory, filename template, version counter).
///
/// ```
/// use fulgur_runtime::callbacks::ModelCheckpoint;
///
/// let ckpt = ModelCheckpoint::builder()
///     .monitor("val_loss")
///     .save_top_k(2)
///     .filename("digits-{epoch:02d}-{val_loss:.2f}")
///     .save_last(true)
///     .build()
///     .unwrap();
/// assert_eq!(ckpt.best_model_path(), None);
/// ```
pub struct ModelCheckpoint {
    cfg: CheckpointConfig,
    dirpath: Option<PathBuf>,
    book: Book,
    last_time_checked: Option<Duration>,
    defer: bool,
    warned_missing_monitor: bool,
    clock: Clock,
    /// Deletions that a resumed checkpoint recorded as under way when it was written (see `State`).
    pending_deletes: Vec<PathBuf>,
    /// Whether the checkpoint this `fit` resumed from may be rotated out like the callback's other files:
    /// a `"last"`/`"best"` recovery picked it and the restored book lists it (B.10).
    owns_resume_source: bool,
    /// The trigger whose actions the writer thread of `async_checkpointing` performs or performed, until
    /// it is settled.
    pending: Option<deferred::Pending>,
}

impl std::fmt::Debug for ModelCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCheckpoint")
            .field("cfg", &self.cfg)
            .field("dirpath", &self.dirpath)
            .field("book", &self.book)
            .finish()
    }
}

impl ModelCheckpointBuilder {
    /// Checks the settings and builds the callback.
    pub fn build(self) -> Result<ModelCheckpoint> {
        let cfg = self.config()?;
        let start = Instant::now();
        Ok(ModelCheckpoint {
            dirpath: cfg.dirpath.clone(),
            book: Book::new(&cfg),
            cfg,
            last_time_checked: None,
            defer: false,
            warned_missing_monitor: false,
            clock: Arc::new(move || start.elapsed()),
            pending_deletes: Vec::new(),
            owns_resume_source: false,
            pending: None,
        })
    }
}

/// The persisted state (B.11).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    monitor: Option<String>,
    best_model_score: Option<f64>,
    best_model_path: Option<PathBuf>,
    current_score: Option<f64>,
    dirpath: Option<PathBuf>,
    best_k_models: Vec<(PathBuf, f64)>,
    kth_best_model_path: Option<PathBuf>,
    kth_value: f64,
    last_model_path: Option<PathBuf>,
    /// The files the trigger that wrote this checkpoint deletes after writing it (an evicted top-k file,
    /// the previous templated `last`). A crash can stop those deletions; a run resuming from this file
    /// finishes them, so no stale file outlives a crash.
    #[serde(default)]
    pending_deletes: Vec<PathBuf>,
}

impl ModelCheckpoint {
    /// A builder with Lightning's defaults.
    pub fn builder() -> ModelCheckpointBuilder {
        ModelCheckpointBuilder::default()
    }

    /// Replaces the clock of the time trigger (tests and simulations).
    pub fn with_clock(mut self, clock: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The settings.
    pub fn config(&self) -> &CheckpointConfig {
        &self.cfg
    }

    /// The directory, once resolved (at the start of `fit`, or when given).
    pub fn dirpath(&self) -> Option<&Path> {
        self.dirpath.as_deref()
    }

    /// The best checkpoint so far (the latest one when nothing is monitored).
    pub fn best_model_path(&self) -> Option<&Path> {
        self.book.best_model_path.as_deref()
    }

    /// The best score; `None` when nothing is monitored.
    pub fn best_model_score(&self) -> Option<f64> {
        self.book.best_model_score
    }

    /// The kept top-k files and their scores, in the order they were saved.
    pub fn best_k_models(&self) -> &[(PathBuf, f64)] {
        &self.book.best_k_models
    }

    /// The worst of the kept top-k files, once the top-k is full.
    pub fn kth_best_model_path(&self) -> Option<&Path> {
        self.book.kth_best_model_path.as_deref()
    }

    /// Its score (±inf until the top-k is full).
    pub fn kth_value(&self) -> f64 {
        self.book.kth_value
    }

    /// The last score accepted into the top-k.
    pub fn current_score(&self) -> Option<f64> {
        self.book.current_score
    }

    /// The current `last` file.
    pub fn last_model_path(&self) -> Option<&Path> {
        self.book.last_model_path.as_deref()
    }

    /// `format_checkpoint_name` (B.4): the path a save with `metrics` would use, with an optional version.
    pub fn format_checkpoint_name(
        &self,
        metrics: &BTreeMap<String, MetricValue>,
        version: Option<u64>,
    ) -> Result<PathBuf> {
        let dir = self.dirpath.clone().unwrap_or_default();
        let namer = Namer {
            cfg: &self.cfg,
            dirpath: &dir,
            cands: metrics,
            exists: &|_| false,
        };
        namer.name(&self.cfg.filename, version)
    }
    fn state_value(&self, book: &Book, pending_deletes: &[PathBuf]) -> Option<Value> {
        Value::serialized(&State {
            monitor: self.cfg.monitor.clone(),
            best_model_score: book.best_model_score,
            best_model_path: book.best_model_path.clone(),
            current_score: book.current_score,
            dirpath: self.dirpath.clone(),
            best_k_models: book.best_k_models.clone(),
            kth_best_model_path: book.kth_best_model_path.clone(),
            kth_value: book.kth_value,
            last_model_path: book.last_model_path.clone(),
            pending_deletes: pending_deletes.to_vec(),
        })
        .ok()
    }

    /// G.1: the monitor and every filename placeholder must be metrics `fit` produces, or `epoch`/`step`:
    /// the rule the macros check at compile time (`fulgur_rules::metrics`).
    fn check_against_registry(&self, state: &TrainerState) -> Result<()> {
        let known = KnownMetrics::of(state);
        if let Some(m) = &self.cfg.monitor {
            let what = format!("`ModelCheckpoint(monitor = \"{m}\")`: `{m}`");
            known.check("monitor", what, m)?;
        }
        for (argument, template) in [
            ("filename", &self.cfg.filename),
            ("name_last", &self.cfg.name_last),
        ] {
            for field in template.fields() {
                let what = format!(
                    "`ModelCheckpoint({argument} = \"{}\")`: placeholder `{field}`",
                    template.as_str()
                );
                known.check(argument, what, field)?;
            }
            template
                .check_kinds(|k| known.get(k))
                .map_err(|e| Error::config(argument, format!("`ModelCheckpoint`: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricSpec;

    const REGISTRY: &[MetricSpec] = &[
        MetricSpec::train("loss").on_epoch(true),
        MetricSpec::validation("val_acc"),
        MetricSpec::test("test_acc"),
    ];

    fn check(builder: ModelCheckpointBuilder) -> std::result::Result<(), String> {
        let state = TrainerState {
            metric_registry: REGISTRY,
            ..TrainerState::default()
        };
        let callback = builder.build().map_err(|e| e.to_string())?;
        callback
            .check_against_registry(&state)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn g1_the_known_metrics_are_the_macros() {
        let b = ModelCheckpoint::builder;
        for ok in [
            "loss",
            "loss_step",
            "loss_epoch",
            "val_acc",
            "epoch",
            "step",
        ] {
            assert_eq!(check(b().monitor(ok)), Ok(()), "{ok}");
        }
        let listing =
            "known metrics: `epoch`, `loss`, `loss_epoch`, `loss_step`, `step`, `val_acc`";
        assert_eq!(
            check(b().monitor("test_acc")),
            Err(format!(
                "`ModelCheckpoint(monitor = \"test_acc\")`: `test_acc` is logged only by \
                 `test_step`, so it is never available during `fit`: use a training or validation metric, {listing}"
            ))
        );
        assert_eq!(
            check(b().monitor("val_ac")),
            Err(format!(
                "`ModelCheckpoint(monitor = \"val_ac\")`: `val_ac` names no metric the \
                 module logs, did you mean `val_acc`? {listing}"
            ))
        );
        assert_eq!(
            check(b().name_last("last-{f1}")),
            Err(format!(
                "`ModelCheckpoint(name_last = \"last-{{f1}}\")`: placeholder `f1` names no \
                 metric the module logs, {listing}"
            ))
        );
    }
}

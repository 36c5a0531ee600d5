//! `ModelCheckpoint`: Lightning's checkpoint callback, with the improvements of section G.
//!
//! The decisions (which files to write, link and delete) live in [`policy`] as pure functions; this
//! module reads the trainer's state at each hook, asks the policy, and performs the actions through the
//! rank-zero gate.

mod config;
mod filename;
mod files;
mod names;
pub(crate) mod policy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciborium::Value;
use serde::{Deserialize, Serialize};

use super::{Callback, CallbackContext, CheckpointPaths};
use crate::metrics::{metric_keys, MetricKind, MetricValue};
use crate::trainer::{TrainerFn, TrainerState, ValCheckInterval};
use crate::{Error, Result};
use fulgur_rules::suggest::did_you_mean;
use names::OwnNames;
use policy::{Action, Book, Decide, Namer};

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
}

/// What a call of [`ModelCheckpoint::run`] saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A top-k candidate, then `last`.
    TopKAndLast,
    /// Only `last`, after a file saved on an error.
    Last,
    /// Only `last`, at the end of `fit`, which must then hold the final state (G.3).
    EndOfFit,
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

    /// Writes `best_k_models` as YAML (`path: score` lines), by default to `dirpath/best_k_models.yaml`.
    pub fn to_yaml(
        &self,
        path: Option<&Path>,
        fs: crate::strategy::RankZeroFs<'_>,
    ) -> Result<PathBuf> {
        let target = match (path, &self.dirpath) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(d)) => d.join("best_k_models.yaml"),
            (None, None) => {
                return Err(Error::Config(
                    "`to_yaml` needs a path before `dirpath` is resolved".into(),
                ))
            }
        };
        let text: String = self
            .book
            .best_k_models
            .iter()
            .map(|(p, s)| format!("{}: {s:?}\n", yaml_key(p)))
            .collect();
        fs.write_file(&target, text.as_bytes())?;
        Ok(target)
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

    /// G.1: the monitor and every filename placeholder must be metrics the module logs, or `epoch`/`step`.
    fn check_against_registry(&self, state: &TrainerState) -> Result<()> {
        let mut known: BTreeMap<String, MetricKind> = BTreeMap::new();
        for spec in state.metric_registry {
            for key in metric_keys(spec) {
                known.insert(key, spec.kind);
            }
        }
        known.insert("epoch".into(), MetricKind::Int);
        known.insert("step".into(), MetricKind::Int);
        let listing = known
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let unknown = |what: String, name: &str| {
            let hint = did_you_mean(name, known.keys().map(String::as_str))
                .map_or(String::new(), |s| format!(", did you mean `{s}`?"));
            Error::Config(format!(
                "{what} names no metric the module logs{hint} known metrics: {listing}"
            ))
        };
        if let Some(m) = &self.cfg.monitor {
            if !known.contains_key(m) {
                return Err(unknown(
                    format!("`ModelCheckpoint(monitor = \"{m}\")`: `{m}`"),
                    m,
                ));
            }
        }
        for template in [&self.cfg.filename, &self.cfg.name_last] {
            for field in template.fields() {
                if !known.contains_key(field) {
                    return Err(unknown(
                        format!(
                            "`ModelCheckpoint(filename = \"{}\")`: placeholder `{field}`",
                            template.as_str()
                        ),
                        field,
                    ));
                }
            }
            template
                .check_kinds(|k| known.get(k).copied())
                .map_err(|e| Error::Config(format!("`ModelCheckpoint`: {e}")))?;
        }
        Ok(())
    }

    fn resolve_dirpath(&self, ctx: &CallbackContext<'_>) -> Result<PathBuf> {
        let s = ctx.state();
        let local = match (&self.cfg.dirpath, &s.log_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(log)) => log.join("checkpoints"),
            (None, None) => s.default_root_dir.join("checkpoints"),
        };
        let local = std::path::absolute(&local).unwrap_or(local);
        let mut bytes = local.to_string_lossy().into_owned().into_bytes();
        ctx.strategy().broadcast(&mut bytes, 0)?;
        Ok(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// `should_skip` (B.7).
    fn should_skip(&self, s: &TrainerState) -> bool {
        s.fn_ != TrainerFn::Fitting
            || s.sanity_checking
            || self.book.last_global_step_saved == s.global_step
    }

    /// `save_on_train_epoch_end` (B.7).
    fn save_on_train_epoch_end(&self, s: &TrainerState) -> bool {
        if let Some(v) = self.cfg.save_on_train_epoch_end {
            return v;
        }
        if s.check_val_every_n_epoch != Some(1) {
            return false;
        }
        if s.num_val_batches == 0 {
            return true;
        }
        s.val_check_interval == Some(ValCheckInterval::Fraction(1.0))
    }

    fn epoch_trigger(&self, s: &TrainerState) -> bool {
        self.cfg.every_n_epochs >= 1 && (s.epoch + 1) % self.cfg.every_n_epochs == 0
    }

    /// Runs the policy for one trigger and performs its actions. When an action fails, the book goes back
    /// to the state recorded in the last file this trigger wrote (or to the state before the trigger), so
    /// the callback never counts a file it did not write nor forgets one it did; an I/O error then stops
    /// `fit`, or is a warning with `keep_training_on_checkpoint_error`.
    fn run(&mut self, ctx: &CallbackContext<'_>, trigger: Trigger) -> Result<()> {
        let before = self.book.clone();
        let mut saved = None;
        let result = self
            .decide(ctx, trigger)
            .and_then(|actions| self.perform(ctx, actions, &mut saved));
        let Err(error) = result else {
            return Ok(());
        };
        // Back to the state the last file written in this trigger records, or to the state before it.
        self.book = saved.unwrap_or(before);
        if error.is_io() && ctx.state().keep_training_on_checkpoint_error {
            if ctx.fs().is_writer() {
                crate::warn(&format!(
                    "checkpoint not saved, training goes on (`keep_training_on_checkpoint_error`): {error}"
                ));
            }
            return Ok(());
        }
        Err(error)
    }

    /// The file this run never deletes nor overwrites: the checkpoint it resumed from, unless a
    /// `"last"`/`"best"` recovery picked one of the callback's own files (B.10).
    fn keep<'s>(&self, s: &'s TrainerState) -> Option<&'s Path> {
        s.resumed_from
            .as_deref()
            .filter(|_| !self.owns_resume_source)
    }

    /// The actions of one trigger, in the order they are performed; the book is updated as they are
    /// decided.
    fn decide(&mut self, ctx: &CallbackContext<'_>, trigger: Trigger) -> Result<Vec<Action>> {
        let Some(dirpath) = self.dirpath.clone() else {
            return Err(Error::Config(
                "`ModelCheckpoint` was used before `setup` resolved its directory".into(),
            ));
        };
        let s = ctx.state();
        let cands = s.monitor_candidates();
        let exists = |p: &Path| exists_on_rank_zero(ctx, p);
        let namer = Namer {
            cfg: &self.cfg,
            dirpath: &dirpath,
            cands: &cands,
            exists: &exists,
        };
        let mut actions = Vec::new();
        let mut messages = Vec::new();
        {
            let keep = self.keep(s);
            let mut d = Decide {
                book: &mut self.book,
                namer: &namer,
                global_step: s.global_step,
                keep,
                end_of_fit: trigger == Trigger::EndOfFit,
            };
            if trigger == Trigger::TopKAndLast && self.cfg.save_top_k != 0 {
                match &self.cfg.monitor {
                    None => actions.extend(d.save_without_monitor()?),
                    Some(monitor) => match cands.get(monitor) {
                        None => {
                            let keys: Vec<&String> = cands.keys().collect();
                            let msg = format!(
                                "`ModelCheckpoint(monitor = \"{monitor}\")` could not find the monitored key in the logged metrics: {keys:?}. HINT: did you log `{monitor}` in the module?"
                            );
                            if s.validation_runs > 0 {
                                return Err(Error::Config(msg));
                            }
                            if !self.warned_missing_monitor {
                                self.warned_missing_monitor = true;
                                crate::warn(&msg);
                            }
                        }
                        Some(v) => {
                            let current = v.as_f64();
                            let mut agree = |b: bool| -> Result<bool> {
                                let mut x = [f64::from(u8::from(b))];
                                ctx.strategy()
                                    .all_reduce(&mut x, crate::strategy::ReduceOp::Min)?;
                                Ok(x[0] > 0.5)
                            };
                            if d.improves(current, &mut agree)? {
                                actions.extend(d.update_best_and_save(current)?);
                                if self.cfg.verbose {
                                    messages.push(format!(
                                        "Epoch {}, global step {}: '{monitor}' reached {current:0.5} (best {:0.5}), saving model to '{}' as top {}",
                                        s.epoch,
                                        s.global_step,
                                        d.book.best_model_score.unwrap_or(current),
                                        d.book.last_checkpoint_saved.as_deref().unwrap_or(Path::new("")).display(),
                                        self.cfg.save_top_k
                                    ));
                                }
                            } else if self.cfg.verbose {
                                messages.push(format!(
                                    "Epoch {}, global step {}: '{monitor}' was not in top {}",
                                    s.epoch, s.global_step, self.cfg.save_top_k
                                ));
                            }
                        }
                    },
                }
            }
            actions.extend(d.save_last()?);
        }
        if ctx.fs().is_writer() {
            for m in messages {
                crate::info(&m);
            }
        }
        Ok(policy::in_safe_order(actions))
    }

    /// Performs `actions` in order; `saved` is the book recorded in the last file written.
    fn perform(
        &self,
        ctx: &CallbackContext<'_>,
        actions: Vec<Action>,
        saved: &mut Option<Book>,
    ) -> Result<()> {
        let key = self.cfg.state_key();
        let own = OwnNames::new(&self.cfg);
        let dir = self.dirpath.clone().unwrap_or_default();
        let deletes: Vec<PathBuf> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        for action in actions {
            match action {
                Action::Save { path, book } => {
                    let started = Instant::now();
                    ctx.save_checkpoint_as(
                        &path,
                        self.cfg.save_weights_only,
                        key.clone(),
                        self.state_value(&book, &deletes),
                    )?;
                    *saved = Some(*book);
                    if self.cfg.verbose && ctx.fs().is_writer() {
                        crate::info(&save_summary(ctx.state(), &path, started.elapsed()));
                    }
                }
                Action::Link { target, link } => {
                    ctx.fs().link(&target, &link)?;
                    ctx.strategy().barrier()?;
                }
                Action::Delete(path) => {
                    files::delete_own(ctx, &dir, &own, &path, false)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether `path` exists, as rank 0 sees it, on every rank.
fn exists_on_rank_zero(ctx: &CallbackContext<'_>, path: &Path) -> bool {
    let here = path.symlink_metadata().is_ok();
    ctx.strategy().broadcast_bool(here).unwrap_or(here)
}

/// The one-line summary of a save printed with `verbose`.
fn save_summary(s: &TrainerState, path: &Path, took: Duration) -> String {
    let size = path
        .metadata()
        .map(|m| format!(", {}", human_bytes(m.len())))
        .unwrap_or_default();
    format!(
        "saved checkpoint {} (epoch {}, step {}{size}, {} ms)",
        path.display(),
        s.epoch,
        s.global_step,
        took.as_millis()
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn yaml_key(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Callback for ModelCheckpoint {
    fn state_key(&self) -> String {
        self.cfg.state_key()
    }

    fn is_checkpoint(&self) -> bool {
        true
    }

    fn setup(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.check_against_registry(ctx.state())?;
        let dir = self.resolve_dirpath(ctx)?;
        self.pending_deletes.clear();
        files::remove_leftover_temporaries(ctx, &dir, &OwnNames::new(&self.cfg));
        if ctx.fs().is_writer() && self.cfg.save_top_k != 0 {
            if let Ok(mut entries) = std::fs::read_dir(&dir) {
                if entries.next().is_some() {
                    crate::warn(&format!(
                        "Checkpoint directory {} exists and is not empty.",
                        dir.display()
                    ));
                }
            }
        }
        self.dirpath = Some(dir);
        Ok(())
    }

    fn on_fit_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.warn_missing_files(ctx);
        Ok(())
    }

    fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.last_time_checked = Some((self.clock)());
        let s = ctx.state();
        self.owns_resume_source = !s.resumed_by_path
            && s.resumed_from
                .as_deref()
                .is_some_and(|p| self.references(p));
        self.finish_pending_deletes(ctx);
        Ok(())
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        let state_skip = self.should_skip(s);
        let steps = self.cfg.every_n_train_steps;
        let step_skip = steps < 1 || s.global_step % steps != 0;
        let now = (self.clock)();
        let mut time_skip = true;
        if let Some(interval) = self.cfg.train_time_interval {
            let local = self
                .last_time_checked
                .is_none_or(|t| now.saturating_sub(t) < interval);
            time_skip = ctx.strategy().broadcast_bool(local)?;
        }
        if step_skip && time_skip {
            return Ok(());
        }
        if !time_skip {
            self.last_time_checked = Some(now);
        }
        if let Some(monitor) = &self.cfg.monitor {
            let missing = !s.monitor_candidates().contains_key(monitor);
            let validation_follows = !self.save_on_train_epoch_end(s)
                && s.is_last_batch
                && s.num_val_batches > 0
                && s.check_val_every_n_epoch
                    .is_none_or(|k| (s.epoch + 1) % k == 0);
            if missing || validation_follows {
                self.defer = true;
                return Ok(());
            }
        }
        if state_skip {
            return Ok(());
        }
        self.run(ctx, Trigger::TopKAndLast)
    }

    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        if !self.should_skip(s) && self.save_on_train_epoch_end(s) && self.epoch_trigger(s) {
            self.run(ctx, Trigger::TopKAndLast)?;
        }
        Ok(())
    }

    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        if self.should_skip(s) || self.save_on_train_epoch_end(s) {
            return Ok(());
        }
        if self.defer {
            self.defer = false;
            return self.run(ctx, Trigger::TopKAndLast);
        }
        if self.epoch_trigger(s) {
            self.run(ctx, Trigger::TopKAndLast)?;
        }
        Ok(())
    }

    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        // G.3: after `fit`, `last` holds the final state.
        if self.cfg.save_last != SaveLast::No
            && s.total_batches > 0
            && self.book.last_file_step != Some(s.global_step)
        {
            self.run(ctx, Trigger::EndOfFit)?;
        }
        Ok(())
    }

    fn on_exception(&mut self, ctx: &mut CallbackContext<'_>, error: &Error) -> Result<()> {
        let s = ctx.state();
        if !self.cfg.save_on_exception
            || s.sanity_checking
            || self.book.last_global_step_saved == s.global_step
        {
            return Ok(());
        }
        let Some(dirpath) = self.dirpath.clone() else {
            return Ok(());
        };
        let cands = s.monitor_candidates();
        let exists = |p: &Path| exists_on_rank_zero(ctx, p);
        let namer = Namer {
            cfg: &self.cfg,
            dirpath: &dirpath,
            cands: &cands,
            exists: &exists,
        };
        // B.14 overwrites whatever has the name, except the file named as `ckpt_path` (B.10).
        let mut path = namer.name(&self.cfg.filename, None)?;
        if Some(path.as_path()) == self.keep(s) {
            path = namer.versioned(&self.cfg.filename, None)?;
        }
        let key = self.cfg.state_key();
        ctx.save_checkpoint_as(
            &path,
            self.cfg.save_weights_only,
            key,
            self.state_value(&self.book, &[]),
        )?;
        self.book.last_global_step_saved = s.global_step;
        self.book.last_checkpoint_saved = Some(path.clone());
        self.run(ctx, Trigger::Last)?;
        if ctx.fs().is_writer() {
            crate::info(&format!(
                "an error was raised with message: {error}; saved checkpoint to {}",
                path.display()
            ));
        }
        Ok(())
    }

    fn state_dict(&self) -> Option<Value> {
        self.state_value(&self.book, &[])
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let st: State = state.deserialized().map_err(|e| {
            Error::Config(format!(
                "the stored state of `{}` does not decode: {e}",
                self.state_key()
            ))
        })?;
        if st.dirpath == self.dirpath {
            self.book.best_model_score = st.best_model_score;
            self.book.kth_best_model_path = st.kth_best_model_path;
            self.book.kth_value = st.kth_value;
            self.book.best_k_models = st.best_k_models;
            self.book.last_model_path = st.last_model_path;
            self.pending_deletes = st.pending_deletes;
        } else {
            crate::warn(&format!(
                "The dirpath has changed from {:?} to {:?}, therefore `best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models` won't be reloaded. Only `best_model_path` will be reloaded.",
                st.dirpath.as_deref().unwrap_or(Path::new("")),
                self.dirpath.as_deref().unwrap_or(Path::new(""))
            ));
        }
        self.book.best_model_path = st.best_model_path;
        Ok(())
    }

    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        let own = OwnNames::new(&self.cfg);
        let mut last: Vec<PathBuf> = self
            .book
            .last_model_path
            .iter()
            .filter(|p| self.dirpath.as_deref().is_some_and(|d| own.contains(p, d)))
            .cloned()
            .collect();
        for p in self.find_last_checkpoints() {
            if !last.contains(&p) {
                last.push(p);
            }
        }
        let others = self
            .checkpoint_files()
            .into_iter()
            .filter(|p| !last.contains(p))
            .collect();
        let mode = self.cfg.mode;
        let mut ranked = self.book.best_k_models.clone();
        // Best first; a stable sort keeps the order of saving among equal scores.
        ranked.sort_by(|a, b| {
            if mode.better(a.1, b.1) {
                std::cmp::Ordering::Less
            } else if mode.better(b.1, a.1) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        let mut best: Vec<PathBuf> = self.book.best_model_path.iter().cloned().collect();
        for (p, _) in ranked {
            if !best.contains(&p) {
                best.push(p);
            }
        }
        Some(CheckpointPaths { best, last, others })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verbose_save_line_names_the_file_the_position_the_size_and_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch=3-step=120.ckpt");
        std::fs::write(&path, vec![0u8; 1_234_567]).unwrap();
        let s = TrainerState {
            epoch: 3,
            global_step: 120,
            ..Default::default()
        };
        assert_eq!(
            save_summary(&s, &path, Duration::from_millis(42)),
            format!(
                "saved checkpoint {} (epoch 3, step 120, 1.2 MB, 42 ms)",
                path.display()
            )
        );
        assert_eq!(
            save_summary(&s, &dir.path().join("gone"), Duration::ZERO),
            format!(
                "saved checkpoint {} (epoch 3, step 120, 0 ms)",
                dir.path().join("gone").display()
            )
        );
        let sizes: Vec<String> = [0, 999, 1000, 52_000, 3_000_000_000, 7_000_000_000_000_000]
            .map(human_bytes)
            .into();
        assert_eq!(
            sizes,
            ["0 B", "999 B", "1.0 KB", "52.0 KB", "3.0 GB", "7000.0 TB"]
        );
    }
}

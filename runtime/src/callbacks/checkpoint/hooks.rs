//! `ModelCheckpoint`'s hooks: when a trigger fires (B.7), what the policy decides for it, and the
//! rollback of the book when an action fails.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::path::{Path, PathBuf};

use ciborium::Value;

use super::files::exists_on_rank_zero;
use super::names::OwnNames;
use super::policy::{self, Action, Book, Decide, Namer};
use super::{files, ModelCheckpoint, SaveLast, State};
use crate::callbacks::{Callback, CallbackContext, CheckpointPaths};
use crate::state::{TrainerFn, TrainerState, ValCheckInterval};
use crate::{Error, Result};

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

impl ModelCheckpoint {
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
            || s.fast_dev_run
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
    ///
    /// With `async_checkpointing`, the trigger before settles first (see `deferred`), and this one's
    /// outcome is settled later.
    fn run(&mut self, ctx: &CallbackContext<'_>, trigger: Trigger) -> Result<()> {
        self.settle(ctx)?;
        let before = self.book.clone();
        let mut saved = None;
        let result = self.decide(ctx, trigger).and_then(|actions| {
            if ctx.writer().is_some() {
                self.submit(ctx, actions, before.clone())
            } else {
                self.perform(ctx, actions, &mut saved)
            }
        });
        let Err(error) = result else {
            return Ok(());
        };
        // Back to the state the last file written in this trigger records, or to the state before it.
        self.recover(ctx, saved.unwrap_or(before), error)
    }

    /// After a failed action: the book goes back to `book`; an I/O error stops `fit`, or is a warning
    /// with `keep_training_on_checkpoint_error`.
    pub(super) fn recover(
        &mut self,
        ctx: &CallbackContext<'_>,
        book: Book,
        error: Error,
    ) -> Result<()> {
        self.book = book;
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
            return Err(Error::config(
                "dirpath",
                "`ModelCheckpoint` was used before `setup` resolved its directory",
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
                                return Err(Error::config("monitor", msg));
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

    /// The step trigger at the end of a training batch (Lightning's `on_train_batch_end`).
    fn train_batch_trigger(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.settle_if_done(ctx)?;
        let s = ctx.state();
        let state_skip = self.should_skip(s);
        let steps = self.cfg.every_n_train_steps;
        let step_skip = steps < 1 || s.global_step % steps != 0;
        if s.manual_optimization {
            // Lightning's branch for manual optimization (B.6): the step trigger alone, time ignored,
            // and no deferral for a validation that follows.
            if step_skip || state_skip {
                return Ok(());
            }
            if let Some(monitor) = &self.cfg.monitor {
                if !s.monitor_candidates().contains_key(monitor) {
                    self.defer = true;
                    return Ok(());
                }
            }
            return self.run(ctx, Trigger::TopKAndLast);
        }
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
        self.train_batch_trigger(ctx)?;
        self.warm_staging(ctx);
        Ok(())
    }

    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.settle_if_done(ctx)?;
        let s = ctx.state();
        if !self.should_skip(s) && self.save_on_train_epoch_end(s) && self.epoch_trigger(s) {
            self.run(ctx, Trigger::TopKAndLast)?;
        }
        Ok(())
    }

    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.settle_if_done(ctx)?;
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
        // The trigger under way settles first, as a synchronous one has by now: the check below reads
        // the book it leaves (a failed save of the final step leaves `last` to write).
        self.settle(ctx)?;
        let s = ctx.state();
        // G.3: after `fit`, `last` holds the final state; not skipped under `fast_dev_run` (S076).
        if self.cfg.save_last != SaveLast::No
            && s.total_batches > 0
            && self.book.last_file_step != Some(s.global_step)
        {
            self.run(ctx, Trigger::EndOfFit)?;
        }
        // `fit` returns with every file written, and with the outcome of the last save.
        self.settle(ctx)
    }

    fn on_exception(&mut self, ctx: &mut CallbackContext<'_>, error: &Error) -> Result<()> {
        // The saves under way finish first, so that the files and the book are as a synchronous run's;
        // their failure is reported, but does not prevent the save on exception.
        if let Err(e) = self.settle(ctx) {
            crate::warn(&format!("a checkpoint save under way failed: {e}"));
        }
        let s = ctx.state();
        if !self.cfg.save_on_exception
            || s.sanity_checking
            || s.fast_dev_run
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
        self.settle(ctx)?;
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
            Error::config(
                "state_key",
                format!(
                    "the stored state of `{}` does not decode: {e}",
                    self.state_key()
                ),
            )
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
}

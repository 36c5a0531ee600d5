//! The callback trait and what a hook sees: below the trainer, the module and the callback set. It
//! names the run's state, the checkpoint type and the strategy, nothing above them.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ciborium::Value;

use crate::checkpoint::{AsyncWriter, Checkpoint};
use crate::metrics::{MetricSpec, MetricValue};
use crate::state::TrainerState;
use crate::strategy::{RankZeroFs, Strategy};
use crate::{Error, Result};

/// A callback. Every hook has an empty default; implement those you need.
///
/// A callback that prints the training loss every `every` steps and counts its prints. Its
/// [`state_dict`](Callback::state_dict) goes into every full checkpoint and comes back through
/// [`load_state_dict`](Callback::load_state_dict) when a run resumes, so the count survives a restart:
///
/// ```
/// use fulgur_runtime::callbacks::{Callback, CallbackContext};
/// use ciborium::Value;
/// use fulgur_runtime::{Error, Result};
///
/// struct PrintLoss {
///     every: u64,
///     printed: u64,
/// }
///
/// impl Callback for PrintLoss {
///     fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
///         let s = ctx.state();
///         if s.global_step % self.every == 0 {
///             if let Some(loss) = s.callback_metrics.get("train_loss") {
///                 println!("step {}: train_loss {:.4}", s.global_step, loss.as_f64());
///                 self.printed += 1;
///             }
///         }
///         Ok(())
///     }
///
///     fn state_dict(&self) -> Option<Value> {
///         Some(Value::from(self.printed))
///     }
///
///     fn load_state_dict(&mut self, state: &Value) -> Result<()> {
///         let printed = state.as_integer().and_then(|n| u64::try_from(n).ok());
///         self.printed = printed.ok_or_else(|| Error::user(format!("`PrintLoss` state: expected a count, found {state:?}")))?;
///         Ok(())
///     }
/// }
///
/// let mut cb = PrintLoss { every: 100, printed: 0 };
/// cb.load_state_dict(&Value::from(3u64))?;
/// assert_eq!(cb.state_dict(), Some(Value::from(3u64)));
/// assert!(cb.load_state_dict(&Value::from("three")).is_err());
/// // Added to a run with `Trainer::builder().callback(PrintLoss { every: 100, printed: 0 })`.
/// # Ok::<(), Error>(())
/// ```
#[allow(unused_variables)]
pub trait Callback: AsAny + Send {
    /// The key its state is stored under in a checkpoint. Two callbacks of one run must differ.
    fn state_key(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }

    /// `true` for checkpoint callbacks: the trainer moves them to the end of the list, runs their
    /// `on_train_epoch_end` after the module's, and uses them to resolve `ckpt_path = "last" | "best"`.
    fn is_checkpoint(&self) -> bool {
        false
    }

    /// `true` for callbacks that decide on the epoch's metrics (Lightning's monitoring callbacks:
    /// checkpoint callbacks and `EarlyStopping`): their `on_train_epoch_end` runs after the module's, so
    /// that what the module logs there is visible to them.
    fn is_monitoring(&self) -> bool {
        self.is_checkpoint()
    }

    /// `true` for progress bars: the trainer adds its default [`ProgressBar`](super::ProgressBar) only when no callback
    /// says `true` here, and refuses one when `enable_progress_bar` is off.
    fn is_progress_bar(&self) -> bool {
        false
    }

    /// The metrics this callback logs with [`CallbackContext::log`], asked for when `fit`, `validate`
    /// or `test` starts, after `configure_optimizers` ([`TrainerState::optimizers`] is set) and before
    /// [`setup`](Self::setup): checkpoint monitors and filename templates may name them, the progress
    /// bar and the loggers show them, and with several processes they are reduced by their
    /// [`reduce`](MetricSpec::reduce) like the module's. A name the module logs or another callback
    /// declares is refused.
    ///
    /// A [`Stage::Train`](crate::metrics::Stage::Train) metric follows `on_step` (its latest value,
    /// in the logger's row of the step) and `on_epoch` (aggregated over the training epoch, as the
    /// module's); a validation-stage one takes the value logged last (log it from
    /// [`on_validation_end`](Self::on_validation_end)). Names are `&'static str`: build one at run time
    /// with [`metrics::intern`](crate::metrics::intern).
    fn metrics(&self, ctx: &CallbackContext<'_>) -> Result<Vec<MetricSpec>> {
        Ok(Vec::new())
    }

    /// Called when `fit`, `validate`, `test` or `predict` starts, before any checkpoint is restored.
    fn setup(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called once in `fit`, after `setup` and the restore of `ckpt_path`, before the sanity check.
    fn on_fit_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called once before the first training batch.
    fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called at the start of each training epoch, before its first batch (also when a resumed run
    /// starts inside the epoch: [`TrainerState::batches_done`] says where).
    fn on_train_epoch_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called before each training batch, before its `training_step`.
    fn on_train_batch_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called after each training batch's optimizer step (or accumulation), before validation.
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called at the end of each training epoch, after validation run at that point.
    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called at the start of each validation run, before its first batch (also during sanity
    /// checking).
    fn on_validation_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called after each validation batch; `batch_idx` counts from 0 within the run.
    fn on_validation_batch_end(
        &mut self,
        ctx: &mut CallbackContext<'_>,
        batch_idx: u64,
    ) -> Result<()> {
        Ok(())
    }

    /// Called at the end of each validation run (also during sanity checking: see
    /// [`TrainerState::sanity_checking`]).
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called once after the last training batch.
    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called when `fit` fails, with the error.
    fn on_exception(&mut self, ctx: &mut CallbackContext<'_>, error: &Error) -> Result<()> {
        Ok(())
    }

    /// The state to store in checkpoints, if any.
    fn state_dict(&self) -> Option<Value> {
        None
    }

    /// Restores the state from a checkpoint written by a run with a callback of the same state key.
    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        Ok(())
    }

    /// For checkpoint callbacks: the files `ckpt_path = "best"` and `"last"` may resolve to.
    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        None
    }

    /// The callback as [`Any`], so that [`Trainer::callback`](crate::trainer::Trainer::callback) can
    /// find it by its type. Provided for every callback; there is no need to write it.
    fn as_any(&self) -> &dyn Any {
        self.as_any_ref()
    }
}

/// Gives every callback [`Callback::as_any`] without an impl of its own. Not meant to be named: call
/// `as_any` on a `dyn Callback`, never `as_any_ref` on a `Box<dyn Callback>`, which would upcast the box.
#[doc(hidden)]
pub trait AsAny: Any {
    /// `self` as [`Any`].
    fn as_any_ref(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any_ref(&self) -> &dyn Any {
        self
    }
}

/// The files a checkpoint callback knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointPaths {
    /// Candidates for "best", best first (the best intact one wins).
    pub best: Vec<PathBuf>,
    /// The callback's `last` files (`last.ckpt`, `last-v1.ckpt`, …).
    pub last: Vec<PathBuf>,
    /// Its other checkpoint files. `ckpt_path = "last"` takes the newest intact full checkpoint among
    /// `last` and these, by the global step inside the files (`last` files win ties).
    pub others: Vec<PathBuf>,
}

/// One tensor of a module, as [`CallbackContext::parameters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    /// Its state-dict name (`net.0.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Whether the optimizer updates it (`false` for batch-norm running statistics).
    pub trainable: bool,
}

impl ParameterInfo {
    /// The number of values it holds.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a hook can see and do: the trainer's state, saving checkpoints, the strategy.
pub struct CallbackContext<'a> {
    pub(crate) state: &'a TrainerState,
    pub(crate) sink: &'a dyn CheckpointSink,
    pub(crate) others: [&'a [Box<dyn Callback>]; 2],
    pub(crate) strategy: &'a dyn Strategy,
}

/// Builds a checkpoint of the attached module and training state (implemented by the trainer).
pub(crate) trait CheckpointSink {
    fn checkpoint(
        &self,
        weights_only: bool,
        callbacks: BTreeMap<String, Value>,
    ) -> Result<Checkpoint>;

    /// The attached module's tensors, in field order; empty when none is attached.
    fn parameters(&self) -> Vec<ParameterInfo>;

    /// The writer thread of `async_checkpointing`; `None` when saves are synchronous.
    fn writer(&self) -> Option<&AsyncWriter> {
        None
    }
}

impl CallbackContext<'_> {
    /// The trainer's counters, flags and metrics.
    pub fn state(&self) -> &TrainerState {
        self.state
    }

    /// Asks the trainer to stop, Lightning's `trainer.should_stop = True`: training ends after the
    /// current batch (or, from an epoch-end hook, after this epoch), once `min_epochs` and `min_steps`
    /// are reached; the end of fit runs as usual.
    pub fn request_stop(&self) {
        self.state.stop_requested.set(true);
    }

    /// Logs `value` under `name`, one of the metrics this callback declared in
    /// [`Callback::metrics`] (Lightning's `pl_module.log` from a callback). The trainer records it when
    /// the hook returns; values logged during the sanity check are dropped, as Lightning drops them.
    /// A name no callback declared is an error, with the declared names.
    pub fn log(&self, name: &str, value: impl Into<MetricValue>) -> Result<()> {
        let s = self.state;
        let start = s.module_metrics.min(s.metric_registry.len());
        let declared = &s.metric_registry[start..];
        let Some(i) = declared.iter().position(|m| m.name == name) else {
            let names = declared.iter().map(|m| m.name);
            let hint = fulgur_rules::suggest::did_you_mean(name, names.clone())
                .map_or(String::new(), |n| format!(", did you mean `{n}`?"));
            let listing: Vec<String> = names.map(|n| format!("`{n}`")).collect();
            let listing = if listing.is_empty() {
                "none".to_string()
            } else {
                listing.join(", ")
            };
            return Err(Error::Metric(format!(
                "a callback logged `{name}`, which no callback declares in `Callback::metrics`{hint} \
                 (declared: {listing})"
            )));
        };
        let kind = declared[i].kind;
        let value = MetricValue::from_f64(value.into().as_f64(), kind);
        s.logged.borrow_mut().push((start + i, value));
        Ok(())
    }

    /// The process group.
    pub fn strategy(&self) -> &dyn Strategy {
        self.strategy
    }

    /// The attached module's tensors (not its scalar fields), in the order of its fields: name,
    /// shape, and whether the optimizer updates it. Empty when no module is attached.
    pub fn parameters(&self) -> Vec<ParameterInfo> {
        self.sink.parameters()
    }

    /// The rank-zero gate through which callbacks write and delete files.
    pub fn fs(&self) -> RankZeroFs<'_> {
        RankZeroFs::new(self.strategy)
    }

    /// The writer thread of `async_checkpointing`; `None` when saves are synchronous.
    pub(crate) fn writer(&self) -> Option<&AsyncWriter> {
        self.sink.writer()
    }

    /// Saves a checkpoint of the current training state to `path` (rank 0 writes; all ranks return).
    /// The file is complete when it returns, also with `async_checkpointing` (it is written after the
    /// saves under way).
    ///
    /// `this` is the calling callback, whose state is stored as it is at this moment: update your
    /// bookkeeping before saving, as Lightning's `ModelCheckpoint` does.
    pub fn save_checkpoint(
        &self,
        path: impl AsRef<Path>,
        weights_only: bool,
        this: &dyn Callback,
    ) -> Result<()> {
        self.save_checkpoint_as(path, weights_only, this.state_key(), this.state_dict())
    }

    /// Like [`save_checkpoint`](Self::save_checkpoint), with the calling callback's state given
    /// explicitly (a state other than its current one, such as the one it will have after this save).
    pub fn save_checkpoint_as(
        &self,
        path: impl AsRef<Path>,
        weights_only: bool,
        state_key: String,
        state: Option<Value>,
    ) -> Result<()> {
        let path = path.as_ref();
        if let Some(writer) = self.writer() {
            writer.flush();
        }
        let written = self
            .build_checkpoint_as(weights_only, state_key, state)
            .and_then(|ckpt| self.fs().write_checkpoint(path, &ckpt));
        self.fs().agree(written, path, "write")
    }

    /// The checkpoint [`save_checkpoint`](Self::save_checkpoint) would write, without writing it, with
    /// its values on the host.
    pub fn build_checkpoint(&self, weights_only: bool, this: &dyn Callback) -> Result<Checkpoint> {
        let mut ckpt =
            self.build_checkpoint_as(weights_only, this.state_key(), this.state_dict())?;
        crate::checkpoint::to_host(&mut ckpt)?;
        Ok(ckpt)
    }

    /// A snapshot of the training state with the calling callback's `state` (see
    /// [`TensorData`](crate::checkpoint::TensorData)): its tensors share the live buffers.
    pub(crate) fn build_checkpoint_as(
        &self,
        weights_only: bool,
        key: String,
        state: Option<Value>,
    ) -> Result<Checkpoint> {
        let mut states = BTreeMap::new();
        if !weights_only {
            for cb in self.others.iter().flat_map(|s| s.iter()) {
                if let Some(s) = cb.state_dict() {
                    states.insert(cb.state_key(), s);
                }
            }
            if let Some(s) = state {
                states.insert(key, s);
            }
        }
        self.sink.checkpoint(weights_only, states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callback written when `as_any` had to be: its own method still compiles and still upcasts.
    struct ByHand;

    impl Callback for ByHand {
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn an_as_any_written_by_hand_still_compiles_and_upcasts() {
        let boxed: Box<dyn Callback> = Box::new(ByHand);
        assert!(boxed.as_any().is::<ByHand>());
    }
}

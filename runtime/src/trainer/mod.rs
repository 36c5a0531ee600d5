//! The [`Trainer`]: Lightning's fit, validate, test and predict loops for a [`LightningModule`].
//!
//! # Order of events
//!
//! `fit` runs the callbacks' `setup`, restores `ckpt_path`, runs `on_fit_start`, the sanity check (a
//! validation run with [`TrainerState::sanity_checking`] set) and `on_train_start`; each epoch then
//! starts with the callbacks' `on_train_epoch_start` (also a resumed epoch, part-way through).
//!
//! In one training batch (B.6):
//! 1. `training_step`, backward, and — when an accumulation window closes — gradient clipping, the
//!    optimizer step and `global_step += 1`;
//! 2. step-interval schedulers step; at the last batch of the epoch, epoch-interval schedulers too;
//! 3. callbacks' `on_train_batch_end`;
//! 4. the module's `on_train_batch_end`;
//! 5. validation, when it is due at this batch.
//!
//! In manual optimization (`LightningModule::MANUAL_OPTIMIZATION`), step 1 is `manual_training_step`,
//! which takes the optimizer steps itself (each adds one to `global_step`), and step 2 is left to it.
//!
//! A validation run: the callbacks' `on_validation_start`; per batch, `validation_step` then the
//! callbacks' `on_validation_batch_end`; the module's `on_validation_epoch_end`; the callbacks'
//! `on_validation_end`.
//!
//! After the last batch of an epoch: epoch metrics are aggregated; plain callbacks'
//! `on_train_epoch_end`; the module's `on_train_epoch_end`; the monitoring callbacks' (`EarlyStopping`,
//! checkpoint callbacks: [`Callback::is_monitoring`]) `on_train_epoch_end`;
//! then `current_epoch += 1`. After the loop: `on_train_end`. On an error: `on_exception`.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

mod config;
mod eval;
mod fit;
mod hooks;
mod parallel;
mod resume;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use ciborium::Value;
use dfdx::tensor::{Cpu, Gradients};

use crate::callbacks::{
    Callback, CallbackSet, CheckpointSink, Defaults, ModelCheckpoint, ParameterInfo, Timer,
};
use crate::checkpoint::{AsyncWriter, Checkpoint, LoopState};
use crate::data::DataLoader;
use crate::device::Backend;
use crate::logger::{CsvLogger, Logger};
use crate::metrics::{EpochAccumulator, MetricValue};
use crate::module::{snapshot_state_dict, LightningModule};
use crate::optim::Optimizers;
use crate::strategy::{GradBuffer, RankZeroFs, SingleProcess, Strategy};
use crate::{Error, Result};

pub use crate::state::{TrainerFn, TrainerState, ValCheckInterval};
pub use config::{Limit, TrainerConfig};

/// Which checkpoint `fit` resumes from, or whose weights `validate`, `test` and `predict` use
/// (Lightning's `ckpt_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CkptPath {
    /// The newest intact "last" checkpoint of the checkpoint callbacks, by the global step stored inside
    /// the files.
    Last,
    /// The best checkpoint of the first checkpoint callback.
    Best,
    /// A file.
    Path(PathBuf),
}

impl From<&str> for CkptPath {
    /// `"last"` and `"best"` select those; anything else is a path.
    fn from(s: &str) -> Self {
        match s {
            "last" => CkptPath::Last,
            "best" => CkptPath::Best,
            path => CkptPath::Path(path.into()),
        }
    }
}

impl From<&Path> for CkptPath {
    fn from(p: &Path) -> Self {
        CkptPath::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for CkptPath {
    fn from(p: PathBuf) -> Self {
        CkptPath::Path(p)
    }
}

/// Builds a [`Trainer`]; settings are checked in [`build`](Self::build).
pub struct TrainerBuilder<M, D: Backend = Cpu> {
    config: TrainerConfig,
    callbacks: Vec<Box<dyn Callback>>,
    logger: Option<Option<Box<dyn Logger>>>,
    strategy: Box<dyn Strategy>,
    seed: Option<u64>,
    _m: PhantomData<fn() -> (M, D)>,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident = $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$field = $conv(value);
            self
        }
    )*};
}

impl<M: LightningModule<D>, D: Backend> TrainerBuilder<M, D> {
    setters! {
        /// Stop after this many epochs (default: 1000 when `max_steps` is not set either).
        max_epochs: u64 => max_epochs = Some;
        /// Stop after this many optimizer steps.
        max_steps: u64 => max_steps = Some;
        /// Train at least this many epochs: a stop requested earlier is postponed until then.
        min_epochs: u64 => min_epochs = Some;
        /// Take at least this many optimizer steps: a stop requested earlier is postponed until then.
        min_steps: u64 => min_steps = Some;
        /// Use this fraction (`f64`) or number (`u64`) of the training batches per epoch.
        limit_train_batches: impl Into<Limit> => limit_train_batches = Into::into;
        /// Use this fraction or number of the validation batches per validation run.
        limit_val_batches: impl Into<Limit> => limit_val_batches = Into::into;
        /// Use this fraction or number of the test batches.
        limit_test_batches: impl Into<Limit> => limit_test_batches = Into::into;
        /// Validate every fraction (`f64`) of an epoch or every N (`u64`) training batches.
        val_check_interval: impl Into<ValCheckInterval> => val_check_interval = Into::into;
        /// Validate every N epochs; `None` counts `val_check_interval` batches across epochs.
        check_val_every_n_epoch: Option<u64> => check_val_every_n_epoch = std::convert::identity;
        /// Validation batches run before training as a sanity check (default 2; 0 to skip).
        num_sanity_val_steps: u64 => num_sanity_val_steps = std::convert::identity;
        /// Sum gradients over N batches per optimizer step (losses are divided by N).
        accumulate_grad_batches: u64 => accumulate_grad_batches = std::convert::identity;
        /// Clip the global L2 norm of the gradients to this value before each optimizer step.
        gradient_clip_val: f64 => gradient_clip_val = Some;
        /// Where logs and checkpoints go when no other path is given (default: the working directory).
        default_root_dir: impl Into<PathBuf> => default_root_dir = Into::into;
        /// Whether checkpoint callbacks are allowed (default `true`).
        enable_checkpointing: bool => enable_checkpointing = std::convert::identity;
        /// Send step metrics to the logger every N training batches (default 50).
        log_every_n_steps: u64 => log_every_n_steps = std::convert::identity;
        /// What a checkpoint callback does when writing or deleting a file fails with an I/O error (disk
        /// full, read-only directory, permission denied). `false` (the default): `fit` stops with that
        /// error. `true`: a warning naming the file and the operation, and training goes on; the callback
        /// forgets the failed save, so nothing already saved is deleted because of it.
        keep_training_on_checkpoint_error: bool => keep_training_on_checkpoint_error = std::convert::identity;
        /// Lightning's `AsyncCheckpointIO` (default `false`): with `true`, a checkpoint callback's save
        /// takes a snapshot of the weights and optimizer state (sharing their buffers: no copy) and
        /// training goes on while a writer thread encodes and writes the file; the `last` link and top-k
        /// deletions follow on that thread, once the file is durable. One save is in flight at most: the
        /// next trigger waits for it. A failed write is reported at the callback's next hook (or at the
        /// end of `fit`), as a synchronous save reports it, `keep_training_on_checkpoint_error`
        /// included; the end of `fit`, an error and `save_on_exception` wait for the writer. Memory:
        /// while a save is under way, each tensor the optimizer updates is copied once (the snapshot
        /// keeps the old buffer), up to one more copy of the state. See the guide's checkpointing
        /// chapter.
        async_checkpointing: bool => async_checkpointing = std::convert::identity;
        /// Whether to show a [`ProgressBar`](crate::callbacks::ProgressBar) (default `true`): a bar on a
        /// terminal, plain lines when standard output is not one. A progress bar given as a callback
        /// replaces the default one.
        enable_progress_bar: bool => enable_progress_bar = std::convert::identity;
        /// Whether to print a [`ModelSummary`](crate::callbacks::ModelSummary) of the module's parameters
        /// when `fit` starts (default `true`). A `ModelSummary` given as a callback replaces the default
        /// one.
        enable_model_summary: bool => enable_model_summary = std::convert::identity;
        /// Stop training once it has lasted this long (Lightning's `max_time`): the trainer adds a
        /// [`Timer`](crate::callbacks::Timer) that checks after every training batch and requests a stop,
        /// so `min_epochs` and `min_steps` still apply and the end of `fit` runs as usual. A `Timer` given
        /// as a callback takes precedence (with an info line). A resumed run counts the time of the run
        /// it resumes.
        max_time: std::time::Duration => max_time = Some;
        /// Lightning's `fast_dev_run`: with `n` above 0 (Lightning's `True` is 1), run `n` training and
        /// `n` validation batches in one epoch, no sanity check, and `n` batches in `validate`, `test` and
        /// `predict`, with logging and checkpointing suppressed (no logger; checkpoint callbacks save
        /// nothing but, with `save_last`, `last` at the end, as Lightning's): a quick check that the
        /// whole loop runs. 0 (the default) turns it off.
        fast_dev_run: u64 => fast_dev_run = std::convert::identity;
    }

    /// The seed of the data order and of `fulgur::nn`'s dropout masks. Without it, the seed of
    /// [`seed_everything`](crate::seed_everything) when one was set before `build`, else 0. A resumed run
    /// keeps the seed stored in its checkpoint.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds a callback.
    pub fn callback(mut self, callback: impl Callback) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Uses this logger instead of the default [`CsvLogger`] under `default_root_dir`.
    pub fn logger(mut self, logger: impl Logger + 'static) -> Self {
        self.logger = Some(Some(Box::new(logger)));
        self
    }

    /// Logs nothing.
    pub fn no_logger(mut self) -> Self {
        self.logger = Some(None);
        self
    }

    /// Uses this process-group strategy instead of [`SingleProcess`].
    pub fn strategy(mut self, strategy: impl Strategy + 'static) -> Self {
        self.strategy = Box::new(strategy);
        self
    }

    /// Checks the settings and builds the trainer.
    pub fn build(mut self) -> Result<Trainer<M, D>> {
        self.config.validate()?;
        self.config.seed = crate::seed::trainer_seed(self.seed);
        let fast_dev_run = self.config.fast_dev_run;
        if fast_dev_run > 0 {
            self.config.apply_fast_dev_run();
            self.logger = Some(None);
            crate::info(&format!(
                "Running in `fast_dev_run` mode: will run the requested loop using {fast_dev_run} \
                 batch(es). Logging and checkpointing is suppressed."
            ));
        }
        if let Some(duration) = self.config.max_time {
            if self.callbacks.iter().any(|c| c.as_any().is::<Timer>()) {
                crate::info(
                    "Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.",
                );
            } else {
                self.callbacks.push(Box::new(Timer::new(duration)));
            }
        }
        let logger = match self.logger {
            Some(choice) => choice,
            None => {
                Some(Box::new(CsvLogger::new(&self.config.default_root_dir)) as Box<dyn Logger>)
            }
        };
        let mut trainer = Trainer {
            state: TrainerState {
                fast_dev_run: fast_dev_run > 0,
                ..TrainerState::default()
            },
            config: self.config,
            callbacks: CallbackSet::new(self.callbacks),
            logger,
            strategy: self.strategy,
            module: None,
            optimizers: None,
            grads: None,
            grad_buffer: GradBuffer::default(),
            train_accum: EpochAccumulator::default(),
            stop_postponed_in: std::cell::Cell::new(None),
            writer: None,
            _d: PhantomData,
        };
        trainer.writer = trainer.config.async_checkpointing.then(AsyncWriter::new);
        trainer.install_callbacks(Vec::new())?;
        Ok(trainer)
    }
}

/// Lightning's `Trainer` for a module `M` on device `D`.
///
/// ```no_run
/// # use fulgur_runtime::trainer::Trainer;
/// # fn demo<M: fulgur_runtime::module::LightningModule<dfdx::tensor::Cpu>>() -> fulgur_runtime::Result<()> {
/// let trainer = Trainer::<M>::builder().max_epochs(10).val_check_interval(0.5).build()?;
/// # let _ = trainer; Ok(()) }
/// ```
pub struct Trainer<M: LightningModule<D>, D: Backend = Cpu> {
    config: TrainerConfig,
    callbacks: CallbackSet,
    logger: Option<Box<dyn Logger>>,
    strategy: Box<dyn Strategy>,
    state: TrainerState,
    module: Option<M>,
    optimizers: Option<Optimizers<M, D>>,
    grads: Option<Gradients<f32, D>>,
    grad_buffer: GradBuffer,
    train_accum: EpochAccumulator,
    /// The epoch in which a postponed stop request was last announced.
    stop_postponed_in: std::cell::Cell<Option<u64>>,
    /// The writer thread of `async_checkpointing`; dropping the trainer waits for it.
    writer: Option<AsyncWriter>,
    _d: PhantomData<D>,
}

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// A builder with Lightning's defaults.
    pub fn builder() -> TrainerBuilder<M, D> {
        TrainerBuilder {
            config: TrainerConfig::default(),
            callbacks: Vec::new(),
            logger: None,
            strategy: Box::new(SingleProcess),
            seed: None,
            _m: PhantomData,
        }
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Changes `max_epochs` of a built trainer (`None` removes the limit; with `max_steps` unset too,
    /// Lightning's default of 1000 epochs applies). A later [`fit`](Self::fit) continues from the
    /// current epoch and step, so raising the limit trains the epochs that remain.
    ///
    /// ```no_run
    /// # use fulgur_runtime::trainer::Trainer;
    /// # fn demo<M: fulgur_runtime::module::LightningModule<dfdx::tensor::Cpu>>(
    /// #     model: M,
    /// #     train: &mut fulgur_runtime::trainer::DynLoader<'_, M::Batch>,
    /// # ) -> fulgur_runtime::Result<()> {
    /// let mut trainer = Trainer::<M>::builder().max_epochs(2).build()?;
    /// trainer.fit(model, train, None, None)?; // epochs 0 and 1
    /// trainer.set_max_epochs(Some(4))?;
    /// let model = trainer.take_module().unwrap();
    /// trainer.fit(model, train, None, None)?; // epochs 2 and 3
    /// # Ok(()) }
    /// ```
    pub fn set_max_epochs(&mut self, max_epochs: Option<u64>) -> Result<()> {
        self.reconfigure(|c| c.max_epochs = max_epochs)
    }

    /// Changes `max_steps` of a built trainer (`None` removes the limit); see
    /// [`set_max_epochs`](Self::set_max_epochs).
    pub fn set_max_steps(&mut self, max_steps: Option<u64>) -> Result<()> {
        self.reconfigure(|c| c.max_steps = max_steps)
    }

    /// Applies `change` to a copy of the settings and keeps it only when it validates.
    fn reconfigure(&mut self, change: impl FnOnce(&mut TrainerConfig)) -> Result<()> {
        let mut config = self.config.clone();
        change(&mut config);
        config.validate()?;
        self.state.max_epochs = config.effective_max_epochs();
        self.state.max_steps = config.max_steps;
        self.config = config;
        Ok(())
    }

    /// Counters, flags and metrics.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// `current_epoch`.
    pub fn current_epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Optimizer steps taken.
    pub fn global_step(&self) -> u64 {
        self.state.global_step
    }

    /// The latest value of every logged metric.
    pub fn callback_metrics(&self) -> &BTreeMap<String, MetricValue> {
        &self.state.callback_metrics
    }

    /// The attached module (after `fit`, `validate`, `test` or `predict`).
    pub fn module(&self) -> Option<&M> {
        self.module.as_ref()
    }

    /// The attached module, mutably.
    pub fn module_mut(&mut self) -> Option<&mut M> {
        self.module.as_mut()
    }

    /// Detaches and returns the module.
    pub fn take_module(&mut self) -> Option<M> {
        self.optimizers = None;
        self.grads = None;
        self.module.take()
    }

    /// The optimizers and schedulers of the running or last `fit` (Lightning's `trainer.optimizers`
    /// and `trainer.lr_scheduler_configs`); `None` before `fit` and after the module is detached.
    pub fn optimizers(&self) -> Option<&Optimizers<M, D>> {
        self.optimizers.as_ref()
    }

    /// The callbacks in the order they run (checkpoint callbacks last).
    pub fn callbacks(&self) -> &[Box<dyn Callback>] {
        self.callbacks.as_slice()
    }

    /// The first callback of type `C`.
    pub fn callback<C: Callback>(&self) -> Option<&C> {
        self.callbacks.first_of::<C>()
    }

    /// The first `ModelCheckpoint` (Lightning's `trainer.checkpoint_callback`).
    pub fn checkpoint_callback(&self) -> Option<&ModelCheckpoint> {
        self.callback::<ModelCheckpoint>()
    }

    /// Every `ModelCheckpoint`, in order (Lightning's `trainer.checkpoint_callbacks`).
    pub fn checkpoint_callbacks(&self) -> Vec<&ModelCheckpoint> {
        self.callbacks.all_of::<ModelCheckpoint>().collect()
    }

    /// The logger's directory (`<root>/lightning_logs/version_N`), when there is a logger.
    pub fn log_dir(&mut self) -> Result<Option<PathBuf>> {
        match &mut self.logger {
            Some(l) => Ok(Some(l.log_dir()?.to_path_buf())),
            None => Ok(None),
        }
    }

    /// Saves a checkpoint of the attached module and the training state (rank 0 writes).
    ///
    /// With `weights_only`, the file holds the weights, hyperparameters and loop counters but no
    /// optimizer, scheduler or callback state, and cannot resume `fit`.
    ///
    /// In a data-parallel run, call it on every rank (as Lightning's `trainer.save_checkpoint`): rank 0
    /// writes, and every rank returns once the file is complete, with rank 0's error if it failed.
    ///
    /// The file is written before it returns, also with `async_checkpointing` (after the saves under
    /// way); its tensors are encoded straight from their buffers, one at a time.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>, weights_only: bool) -> Result<()> {
        let path = path.as_ref();
        let fs = RankZeroFs::new(&*self.strategy);
        if let Some(writer) = &self.writer {
            writer.flush();
        }
        let written = self
            .snapshot(weights_only)
            .and_then(|ckpt| fs.write_checkpoint(path, &ckpt));
        fs.agree(written, path, "write")
    }

    /// The checkpoint [`save_checkpoint`](Self::save_checkpoint) would write, with its values on the
    /// host.
    pub fn build_checkpoint(&self, weights_only: bool) -> Result<Checkpoint> {
        let mut ckpt = self.snapshot(weights_only)?;
        crate::checkpoint::to_host(&mut ckpt)?;
        Ok(ckpt)
    }

    fn snapshot(&self, weights_only: bool) -> Result<Checkpoint> {
        let states = if weights_only {
            BTreeMap::new()
        } else {
            self.callbacks.state_dicts()
        };
        self.sink().checkpoint(weights_only, states)
    }

    fn sink(&self) -> Sink<'_, M, D> {
        Sink {
            module: self.module.as_ref(),
            optimizers: self.optimizers.as_ref(),
            state: &self.state,
            train_accum: &self.train_accum,
            world_size: self.strategy.world_size(),
            writer: self.writer.as_ref(),
        }
    }

    /// Installs the module's callbacks next to the user's, with the defaults the settings ask for (see
    /// [`CallbackSet::install`]).
    fn install_callbacks(&mut self, from_module: Vec<Box<dyn Callback>>) -> Result<()> {
        let defaults = Defaults {
            progress_bar: self.config.enable_progress_bar,
            model_summary: self.config.enable_model_summary,
            checkpointing: self.config.enable_checkpointing,
        };
        self.callbacks.install(from_module, defaults)
    }
}

/// Builds checkpoints from borrowed trainer parts, so callbacks can save while the trainer runs them.
/// A checkpoint it builds is a snapshot: its tensors share the buffers of the module's and the
/// optimizers' (see [`TensorData`](crate::checkpoint::TensorData)).
struct Sink<'a, M: LightningModule<D>, D: Backend> {
    module: Option<&'a M>,
    optimizers: Option<&'a Optimizers<M, D>>,
    state: &'a TrainerState,
    train_accum: &'a EpochAccumulator,
    world_size: usize,
    writer: Option<&'a AsyncWriter>,
}

impl<M: LightningModule<D>, D: Backend> CheckpointSink for Sink<'_, M, D> {
    fn checkpoint(
        &self,
        weights_only: bool,
        callbacks: BTreeMap<String, Value>,
    ) -> Result<Checkpoint> {
        let module = self.module.ok_or_else(|| {
            Error::config(
                "module",
                "saving a checkpoint is only possible if a module is attached to the trainer: call \
                 `Trainer::save_checkpoint` after `fit`, `validate`, `test` or `predict`",
            )
        })?;
        let type_name = std::any::type_name::<M>();
        let mut ckpt = Checkpoint::new(type_name);
        ckpt.epoch = self.state.epoch;
        ckpt.global_step = self.state.global_step;
        ckpt.weights_only = weights_only;
        ckpt.state_dict = snapshot_state_dict(module)?;
        ckpt.loops = LoopState {
            epoch: self.state.epoch,
            batches_done: self.state.batches_done,
            epoch_finished: self.state.epoch_finished,
            global_step: self.state.global_step,
            total_batches: self.state.total_batches,
            seed: self.state.seed,
            metric_state: Value::serialized(self.train_accum).ok(),
            world_size: Some(self.world_size as u64).filter(|&w| w > 1),
        };
        ckpt.hyper_parameters = Some(Value::serialized(module.hparams()).map_err(|e| {
            Error::config(
                "hparams",
                format!(
                    "the hyperparameters of `{type_name}` (`{}`) cannot be serialised: {e}",
                    std::any::type_name::<M::Hparams>()
                ),
            )
        })?);
        if !weights_only {
            if let Some(opts) = self.optimizers {
                ckpt.optimizer = Some(opts.optimizer.state_dict()?);
                ckpt.scheduler = opts.scheduler.as_ref().map(|s| s.state_dict());
                for i in 1..opts.len() {
                    if let Some(optimizer) = opts.optimizer(i) {
                        ckpt.more_optimizers
                            .push(crate::checkpoint::OptimizerEntry {
                                optimizer: optimizer.state_dict()?,
                                scheduler: opts.scheduler(i).map(|s| s.state_dict()),
                            });
                    }
                }
            }
            ckpt.callbacks = callbacks;
        }
        module.on_save_checkpoint(&mut ckpt);
        Ok(ckpt)
    }

    fn parameters(&self) -> Vec<ParameterInfo> {
        self.module
            .map(crate::callbacks::parameters)
            .unwrap_or_default()
    }

    fn writer(&self) -> Option<&AsyncWriter> {
        self.writer
    }
}

/// A data loader of batches `B`, as the loops take it.
pub type DynLoader<'a, B> = dyn DataLoader<Batch = B> + 'a;

//! The fit loop: sanity check, epochs and batches (automatic and manual optimization), validation
//! cadence, resume, stop requests. The evaluation passes are in `eval.rs`.

use std::collections::BTreeMap;

use dfdx::nn::ZeroGrads;
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Backward;

use super::config::limited;
use super::eval::finish_log;
use super::parallel::{agree_on_batches, dropout_seed};
use super::{CkptPath, DynLoader, Trainer, TrainerFn, ValCheckInterval};
use crate::callbacks::Callback;
use crate::device::Backend;
use crate::metrics::{MetricSpec, MetricValue, Stage, StepLog};
use crate::module::LightningModule;
use crate::strategy::RankZeroFs;
use crate::{Error, Result};
use fulgur_rules::metrics::epoch_key;

#[path = "fit/clip.rs"]
mod clip;

pub(super) fn all(_: &dyn Callback) -> bool {
    true
}

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// Trains `module` on `train`, validating on `val`, optionally resuming from `ckpt_path`.
    ///
    /// A trainer that has trained before continues from its current epoch, batch and step (raise the
    /// limits with [`set_max_epochs`](Self::set_max_epochs) or [`set_max_steps`](Self::set_max_steps)),
    /// training `module` with the weights it has; the optimizer and scheduler come afresh from
    /// `configure_optimizers`, as in Lightning. `ckpt_path` restores a checkpoint's position instead.
    ///
    /// The module stays attached to the trainer afterwards ([`module`](Self::module),
    /// [`take_module`](Self::take_module)), also when `fit` fails, so nothing is lost.
    ///
    /// Two epochs with `last.ckpt` kept, then a new process's worth of trainer that continues the run
    /// from that file to four epochs (the module is the hand-written one of [`LightningModule`]'s
    /// example):
    ///
    /// ```
    /// # use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
    /// # use dfdx::optim::SgdConfig;
    /// # use dfdx::prelude::*;
    /// # use fulgur_runtime::data::{TensorBatch, TensorData};
    /// # use fulgur_runtime::metrics::{MetricSpec, StepLog};
    /// # use fulgur_runtime::module::{Built, LightningModule, Loss, ModuleState};
    /// # use fulgur_runtime::optim::{Optimizers, Sgd};
    /// # use fulgur_runtime::{Backend, Result};
    /// # struct LitLinear<D: Backend> { net: Built<Linear<2, 1>, D> }
    /// # impl<D: Backend> TensorCollection<f32, D> for LitLinear<D> {
    /// #     type To<E2: Dtype, D2: Device<E2>> = ();
    /// #     fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(v: &mut V) -> Result<Option<()>, V::Err> {
    /// #         v.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
    /// #     }
    /// # }
    /// # impl<D: Backend> ModuleState<D> for LitLinear<D> {
    /// #     type Hparams = ();
    /// #     fn hparams(&self) -> &() { &() }
    /// #     fn from_hparams((): (), d: &D) -> Result<Self> { Ok(Self { net: d.build_module::<Linear<2, 1>, f32>() }) }
    /// # }
    /// # type Batch<D> = TensorBatch<Rank1<2>, Rank1<1>, D>;
    /// # impl<D: Backend> LightningModule<D> for LitLinear<D> {
    /// #     type Batch = Batch<D>;
    /// #     type Prediction = ();
    /// #     const METRICS: &'static [MetricSpec] = &[MetricSpec::train("train_loss")];
    /// #     fn training_step(&mut self, b: Batch<D>, g: Gradients<f32, D>, log: &mut StepLog) -> Result<Loss<D>> {
    /// #         let loss = mse_loss(self.net.forward_mut(b.x.traced(g)), b.y);
    /// #         log.log("train_loss", loss.as_vec()[0]);
    /// #         Ok(loss)
    /// #     }
    /// #     fn configure_optimizers(&self) -> Optimizers<Self, D> {
    /// #         Optimizers::new(Sgd::new(SgdConfig { lr: 0.1, ..Default::default() }))
    /// #     }
    /// # }
    /// use fulgur_runtime::callbacks::ModelCheckpoint;
    /// use fulgur_runtime::trainer::{CkptPath, Trainer};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let data = TensorData::<Rank1<2>, Rank1<1>>::new(vec![0.5; 2 * 40], vec![1.0; 40])?;
    /// let dev = Cpu::default();
    /// let trainer_until = |epochs| {
    ///     Trainer::builder()
    ///         .max_epochs(epochs)
    ///         .default_root_dir(dir.path())
    ///         .callback(ModelCheckpoint::builder().save_last(true).build()?)
    ///         .enable_progress_bar(false)
    ///         .enable_model_summary(false)
    ///         .build()
    /// };
    ///
    /// let mut trainer = trainer_until(2)?;
    /// trainer.fit(LitLinear::from_hparams((), &dev)?, &mut data.loader(10, true, &dev)?, None, None)?;
    /// assert_eq!(trainer.global_step(), 8);
    ///
    /// // Later, from scratch: a fresh module and trainer continue from `last.ckpt`.
    /// let mut trainer = trainer_until(4)?;
    /// let mut train = data.loader(10, true, &dev)?;
    /// trainer.fit(LitLinear::from_hparams((), &dev)?, &mut train, None, Some(CkptPath::Last))?;
    /// assert_eq!(trainer.global_step(), 16);
    /// # Ok::<(), fulgur_runtime::Error>(())
    /// ```
    pub fn fit(
        &mut self,
        module: M,
        train: &mut DynLoader<'_, M::Batch>,
        val: Option<&mut DynLoader<'_, M::Batch>>,
        ckpt_path: Option<CkptPath>,
    ) -> Result<()> {
        self.attach(module)?;
        self.state.fn_ = TrainerFn::Fitting;
        let result = self.run_fit(train, val, ckpt_path);
        if let Err(error) = &result {
            // Several processes: the others may wait in a collective this one never joins, and an
            // `on_exception` that saves would wait for them; every rank ends now, before the hooks.
            // The saves under way (`async_checkpointing`) finish first: ending the process would
            // interrupt them (one process: `on_exception` settles them).
            if let Some(writer) = &self.writer {
                writer.flush();
            }
            self.strategy.fail(error);
            let hooked = self.call_callbacks(all, |c, ctx| c.on_exception(ctx, error));
            if let Err(e) = hooked {
                crate::warn(&format!("a callback's `on_exception` failed: {e}"));
            }
        }
        self.state.fn_ = TrainerFn::Idle;
        result
    }

    /// Attaches `module` first, so that it stays with the trainer even when its callbacks fail to build.
    pub(super) fn attach(&mut self, module: M) -> Result<()> {
        self.optimizers = None;
        self.grads = None;
        let module = self.module.insert(module);
        let from_module = module.configure_callbacks()?;
        self.install_callbacks(from_module)
    }

    fn run_fit(
        &mut self,
        train: &mut DynLoader<'_, M::Batch>,
        mut val: Option<&mut DynLoader<'_, M::Batch>>,
        ckpt_path: Option<CkptPath>,
    ) -> Result<()> {
        let cfg = self.config.clone();
        let module = self.module.as_ref().ok_or_else(no_module)?;
        let optimizers = module.configure_optimizers();
        check_optimization::<M, D>(&cfg, optimizers.len())?;
        for i in 0..optimizers.len() {
            if let Some(optimizer) = optimizers.optimizer(i) {
                optimizer.check_params(module)?;
            }
        }
        self.optimizers = Some(optimizers);
        // A trainer that has trained before continues where it stopped, as Lightning's does: at its
        // epoch, batch and step, with the data-order seed it ran with (perhaps a checkpoint's). An epoch
        // whose end hooks ran but did not finish (a failing callback) counts as done, as on resume.
        let previous = std::mem::take(&mut self.state);
        let continuing = previous.epoch > 0 || previous.total_batches > 0;
        if previous.epoch_finished {
            self.train_accum.clear();
        }
        self.state = crate::state::TrainerState {
            fn_: TrainerFn::Fitting,
            epoch: previous.epoch + u64::from(previous.epoch_finished),
            batches_done: if previous.epoch_finished {
                0
            } else {
                previous.batches_done
            },
            global_step: previous.global_step,
            total_batches: previous.total_batches,
            seed: if continuing { previous.seed } else { cfg.seed },
            metric_registry: M::METRICS,
            max_epochs: cfg.effective_max_epochs(),
            max_steps: cfg.max_steps,
            min_epochs: cfg.min_epochs,
            min_steps: cfg.min_steps,
            log_every_n_steps: cfg.log_every_n_steps,
            val_check_interval: Some(cfg.val_check_interval),
            check_val_every_n_epoch: cfg.check_val_every_n_epoch,
            default_root_dir: cfg.default_root_dir.clone(),
            keep_training_on_checkpoint_error: cfg.keep_training_on_checkpoint_error,
            fast_dev_run: cfg.fast_dev_run > 0,
            manual_optimization: M::MANUAL_OPTIMIZATION,
            ..Default::default()
        };
        let (rank, world) = (self.strategy.rank(), self.strategy.world_size());
        train.shard(rank, world)?;
        agree_on_batches(&*self.strategy, "training", train.num_batches())?;
        if let Some(v) = val.as_deref_mut() {
            v.shard(rank, world)?;
            agree_on_batches(&*self.strategy, "validation", v.num_batches())?;
        }
        self.state.num_training_batches = limited(
            train.num_batches() as u64,
            cfg.limit_train_batches,
            "limit_train_batches",
        )?;
        if self.state.batches_done > self.state.num_training_batches {
            return Err(Error::config("limit_train_batches", format!(
                "the trainer stopped after batch {} of epoch {}, but the training data now has {} batches per epoch \
                 (after `limit_train_batches`): continue with the data the epoch started with",
                self.state.batches_done, self.state.epoch, self.state.num_training_batches
            )));
        }
        self.state.num_val_batches = match val.as_deref() {
            Some(v) => limited(
                v.num_batches() as u64,
                cfg.limit_val_batches,
                "limit_val_batches",
            )?,
            None => 0,
        };
        self.state.num_sanity_val_batches =
            cfg.num_sanity_val_steps.min(self.state.num_val_batches);
        if let (ValCheckInterval::Batches(b), Some(_)) =
            (cfg.val_check_interval, cfg.check_val_every_n_epoch)
        {
            let n = self.state.num_training_batches;
            if self.state.num_val_batches > 0 && b > n {
                return Err(Error::config("val_check_interval", format!(
                    "`val_check_interval` ({b}) must be less than or equal to the number of the training batches ({n}); \
                     to disable validation set `limit_val_batches` to 0, and to validate based on the total training \
                     batches set `check_val_every_n_epoch` to `None`"
                )));
            }
        }

        if let Some(logger) = &mut self.logger {
            let dir = logger.log_dir()?.to_path_buf();
            self.state.log_dir = Some(dir);
            if let Some(m) = &self.module {
                let hparams = ciborium::Value::serialized(m.hparams()).map_err(|e| {
                    Error::config(
                        "hparams",
                        format!("the hyperparameters cannot be serialised: {e}"),
                    )
                })?;
                logger.log_hyperparams(&hparams, RankZeroFs::new(&*self.strategy))?;
            }
        }
        self.share_log_dir()?;

        self.refresh_optimizer_facts();
        self.declare_metrics()?;
        self.call_callbacks(all, |c, ctx| c.setup(ctx))?;
        let resumed = match self.resolve_shared(ckpt_path)? {
            Some((path, ckpt)) => {
                self.restore(&path, ckpt)?;
                warn_unresumable::<M, D>(&path, self.strategy.is_global_zero());
                Some(path)
            }
            None => {
                self.broadcast_weights()?;
                None
            }
        };
        self.call_callbacks(all, |c, ctx| c.on_fit_start(ctx))?;

        if let Some(v) = val.as_deref_mut() {
            let n = self.state.num_sanity_val_batches;
            if n > 0 {
                self.run_eval(v, n, Stage::Validation, true)?;
            }
        }

        if resumed.is_none() {
            if let Some(opts) = &mut self.optimizers {
                for i in 0..opts.len() {
                    if let Some((optimizer, Some(s))) = opts.get_mut(i) {
                        let lr = s.start(optimizer.lr());
                        optimizer.set_lr(lr);
                    }
                }
            }
        }
        self.refresh_optimizer_facts();
        self.call_callbacks(all, |c, ctx| c.on_train_start(ctx))?;

        while !self.fit_done() {
            self.run_epoch(train, val.as_deref_mut())?;
        }

        self.call_callbacks(all, |c, ctx| c.on_train_end(ctx))?;
        if let Some(logger) = &mut self.logger {
            logger.save(RankZeroFs::new(&*self.strategy))?;
        }
        Ok(())
    }

    fn fit_done(&self) -> bool {
        let steps_done = self
            .state
            .max_steps
            .is_some_and(|m| self.state.global_step >= m);
        let epochs_done = self.state.max_epochs.is_some_and(|m| self.state.epoch >= m);
        steps_done || epochs_done || self.state.num_training_batches == 0 || self.stop_now()
    }

    /// Lightning's rule for `trainer.should_stop`: a requested stop ends training once `min_epochs`
    /// and `min_steps` are reached; before that it is postponed, with an info line.
    fn stop_now(&self) -> bool {
        if !self.state.should_stop() {
            return false;
        }
        if self.state.can_stop_early() {
            return true;
        }
        // Once per epoch, as Lightning's fit loop says it when it checks at an epoch's end.
        let epoch = Some(self.state.epoch);
        if self.strategy.is_global_zero() && self.stop_postponed_in.replace(epoch) != epoch {
            crate::info(&format!(
                "Trainer was signaled to stop but the required `min_epochs={}` or `min_steps={}` has \
                 not been met. Training will continue...",
                self.state.min_epochs.map_or("None".into(), |m| m.to_string()),
                self.state.min_steps.map_or("None".into(), |m| m.to_string()),
            ));
        }
        false
    }

    fn run_epoch(
        &mut self,
        train: &mut DynLoader<'_, M::Batch>,
        mut val: Option<&mut DynLoader<'_, M::Batch>>,
    ) -> Result<()> {
        let n = self.state.num_training_batches;
        let accumulate = self.config.accumulate_grad_batches;
        train.set_epoch(self.state.epoch, self.state.seed);
        self.call_callbacks(all, |c, ctx| c.on_train_epoch_start(ctx))?;
        while self.state.batches_done < n {
            let index = self.state.batches_done;
            let is_last = index + 1 == n;
            self.state.is_last_batch = is_last;
            self.call_callbacks(all, |c, ctx| c.on_train_batch_start(ctx))?;
            let step_row = self.train_batch(train, index as usize, is_last, accumulate)?;
            self.refresh_optimizer_facts();
            self.state.batches_done = index + 1;
            self.state.total_batches += 1;
            if !step_row.is_empty() && self.state.total_batches % self.config.log_every_n_steps == 0
            {
                self.log_row(step_row)?;
            }

            self.call_callbacks(all, |c, ctx| c.on_train_batch_end(ctx))?;
            let mut log = StepLog::new(M::METRICS, Stage::Train, 1)
                .at(self.state.epoch, self.state.global_step);
            self.module
                .as_mut()
                .ok_or_else(no_module)?
                .on_train_batch_end(&mut log)?;
            self.record(finish_log(&self.state, log)?, None)?;

            if self.val_due(index) {
                if let Some(v) = val.as_deref_mut() {
                    let nv = self.state.num_val_batches;
                    self.run_eval(v, nv, Stage::Validation, false)?;
                }
            }
            let steps_done = self
                .state
                .max_steps
                .is_some_and(|m| self.state.global_step >= m);
            if !is_last && (steps_done || self.stop_now()) {
                // Stopped inside the epoch (`max_steps` or a stop request): the epoch-end hooks run (so checkpoint callbacks save the
                // final state, as in Lightning), but the position is kept: a checkpoint resumes here.
                return self.end_epoch(false);
            }
        }
        self.end_epoch(true)
    }

    /// One training batch up to the scheduler step; returns the logger row of its on-step metrics.
    fn train_batch(
        &mut self,
        train: &mut DynLoader<'_, M::Batch>,
        index: usize,
        is_last: bool,
        accumulate: u64,
    ) -> Result<BTreeMap<String, MetricValue>> {
        let batch_size = train.batch_size(index);
        let batch = train.batch(index)?;
        if M::MANUAL_OPTIMIZATION {
            return self.manual_train_batch(batch, batch_size, index);
        }
        let module = self.module.as_mut().ok_or_else(no_module)?;
        let grads = match self.grads.take() {
            Some(g) => g,
            None => module.try_alloc_grads().map_err(crate::device_err)?,
        };
        let mut log = StepLog::new(M::METRICS, Stage::Train, batch_size)
            .at(self.state.epoch, self.state.global_step)
            .batch(index);
        // fulgur::nn's dropout masks are keyed by the seed and the batch's number in the run, both in
        // every checkpoint, so a resumed run draws the masks an uninterrupted one would.
        // Each rank draws its own masks (rank 0 those of a single process).
        let seed = dropout_seed(self.state.seed, self.strategy.rank());
        let masks = crate::nn::DropoutScope::enter(seed, self.state.total_batches);
        let loss = module.training_step(batch, grads, &mut log);
        drop(masks);
        let loss = loss?;
        // A logging mistake fails the step before it changes anything.
        let logged = finish_log(&self.state, log)?;
        let loss = if accumulate > 1 {
            loss * (1.0 / accumulate as f32)
        } else {
            loss
        };
        let mut grads: Gradients<f32, D> = loss.try_backward().map_err(crate::device_err)?;

        let window_closed = (index as u64 + 1) % accumulate == 0 || is_last;
        if window_closed {
            // Data parallelism: the mean gradient of the global batch, before clipping sees it.
            D::average_grads(module, &mut grads, &*self.strategy, &mut self.grad_buffer)?;
            if let Some(max_norm) = self.config.gradient_clip_val {
                clip::clip_grad_norm(module, &mut grads, max_norm)?;
            }
            let opt = self.optimizers.as_mut().ok_or_else(no_module)?;
            opt.optimizer.step(module, &mut grads)?;
            module
                .try_zero_grads(&mut grads)
                .map_err(crate::device_err)?;
            self.state.global_step += 1;
            if let Some(s) = &mut opt.scheduler {
                if s.interval() == crate::optim::Interval::Step || is_last {
                    let lr = s.step();
                    opt.optimizer.set_lr(lr);
                }
            }
        }
        self.grads = Some(grads);
        self.record(logged, Some(batch_size))
    }

    /// One training batch in manual optimization: the module's `manual_training_step` steps the
    /// optimizers and the schedulers itself; every optimizer step counts in `global_step`.
    fn manual_train_batch(
        &mut self,
        batch: M::Batch,
        batch_size: usize,
        index: usize,
    ) -> Result<BTreeMap<String, MetricValue>> {
        let module = self.module.as_mut().ok_or_else(no_module)?;
        let optimizers = self.optimizers.as_mut().ok_or_else(no_module)?;
        let mut log = StepLog::new(M::METRICS, Stage::Train, batch_size)
            .at(self.state.epoch, self.state.global_step)
            .batch(index);
        let mut opt = crate::optim::ManualOptimization::new(
            optimizers,
            &*self.strategy,
            &mut self.grad_buffer,
        );
        let seed = dropout_seed(self.state.seed, self.strategy.rank());
        let masks = crate::nn::DropoutScope::enter(seed, self.state.total_batches);
        let stepped = module.manual_training_step(batch, &mut opt, &mut log);
        drop(masks);
        // The steps taken changed the weights, also when the step then failed.
        self.state.global_step += opt.steps();
        stepped?;
        let logged = finish_log(&self.state, log)?;
        self.record(logged, Some(batch_size))
    }

    fn val_due(&self, index: u64) -> bool {
        let s = &self.state;
        if s.num_val_batches == 0 {
            return false;
        }
        if let Some(k) = s.check_val_every_n_epoch {
            if (s.epoch + 1) % k != 0 {
                return false;
            }
        }
        match self.config.val_check_interval {
            ValCheckInterval::Fraction(f) => {
                let every = ((s.num_training_batches as f64 * f) as u64).max(1);
                (index + 1) % every == 0
            }
            ValCheckInterval::Batches(b) if s.check_val_every_n_epoch.is_none() => {
                s.total_batches % b == 0
            }
            ValCheckInterval::Batches(b) => (index + 1) % b == 0,
        }
    }

    /// The epoch-end sequence; `complete` is false when `max_steps` stopped the epoch early.
    fn end_epoch(&mut self, complete: bool) -> Result<()> {
        self.state.epoch_finished = complete;
        self.publish_epoch_metrics();
        self.call_callbacks(|c| !c.is_monitoring(), |c, ctx| c.on_train_epoch_end(ctx))?;
        let mut log =
            StepLog::new(M::METRICS, Stage::Train, 1).at(self.state.epoch, self.state.global_step);
        self.module
            .as_mut()
            .ok_or_else(no_module)?
            .on_train_epoch_end(&mut log)?;
        self.record(finish_log(&self.state, log)?, None)?;
        let epoch_row = self.publish_epoch_metrics();
        self.call_callbacks(|c| c.is_monitoring(), |c, ctx| c.on_train_epoch_end(ctx))?;
        if !epoch_row.is_empty() {
            self.log_row(epoch_row)?;
        }
        if let Some(logger) = &mut self.logger {
            logger.save(RankZeroFs::new(&*self.strategy))?;
        }
        if complete {
            self.train_accum.clear();
            self.state.epoch += 1;
            self.state.batches_done = 0;
            self.state.epoch_finished = false;
            self.state.is_last_batch = false;
        }
        Ok(())
    }

    /// Moves the training epoch aggregates into `callback_metrics`; returns the logger row.
    fn publish_epoch_metrics(&mut self) -> BTreeMap<String, MetricValue> {
        let registry = self.state.metric_registry;
        let values = self.train_accum.compute(registry, Stage::Train);
        publish_epoch(&mut self.state.callback_metrics, registry, values)
    }

    pub(super) fn log_row(&mut self, mut row: BTreeMap<String, MetricValue>) -> Result<()> {
        if let Some(logger) = &mut self.logger {
            row.insert("epoch".into(), MetricValue::Int(self.state.epoch as i64));
            logger.log_metrics(
                &row,
                self.state.global_step,
                RankZeroFs::new(&*self.strategy),
            )?;
        }
        Ok(())
    }
}

/// Publishes epoch aggregates under Lightning's names; returns the logger row.
pub(super) fn publish_epoch(
    callback_metrics: &mut BTreeMap<String, MetricValue>,
    registry: &[MetricSpec],
    values: BTreeMap<String, MetricValue>,
) -> BTreeMap<String, MetricValue> {
    let mut row = BTreeMap::new();
    for (name, v) in values {
        let both = registry
            .iter()
            .any(|s| s.name == name && s.on_step && s.on_epoch);
        let key = epoch_key(&name, both);
        callback_metrics.insert(name, v);
        callback_metrics.insert(key.clone(), v);
        row.insert(key, v);
    }
    row
}

/// Resuming is bit-exact only if every random draw replays: dfdx's dropout layers draw from the
/// device's generator, which no checkpoint holds. One warning per resume, naming them all.
fn warn_unresumable<M: LightningModule<D>, D: Backend>(path: &std::path::Path, rank_zero: bool) {
    let layers = crate::nn::unresumable_layers::<M, D>();
    if rank_zero && !layers.is_empty() {
        crate::warn(&format!(
            "resuming from `{}` is not bit-exact: the layers {} draw their masks from the device's random \
             generator, which no checkpoint holds; `fulgur::nn::Dropout` and `fulgur::nn::DropoutOneIn` \
             resume exactly",
            path.display(),
            layers.join(", ")
        ));
    }
}

/// Lightning's checks of the optimization mode at fit start: several optimizers need manual
/// optimization, which in turn does not accumulate nor clip gradients for the module.
fn check_optimization<M: LightningModule<D>, D: Backend>(
    cfg: &super::TrainerConfig,
    optimizers: usize,
) -> Result<()> {
    let name = std::any::type_name::<M>();
    if !M::MANUAL_OPTIMIZATION && optimizers > 1 {
        return Err(Error::config(
            "configure_optimizers",
            format!(
                "training with multiple optimizers is only supported with manual optimization: \
                 `configure_optimizers` of `{name}` returns {optimizers} optimizers; set \
                 `#[lightning_module(manual_optimization)]` (by hand: `const MANUAL_OPTIMIZATION: bool = true`) \
                 and step each optimizer in the training step with `opt.step(index, self, &mut grads)`"
            ),
        ));
    }
    if M::MANUAL_OPTIMIZATION && cfg.accumulate_grad_batches > 1 {
        return Err(Error::config(
            "accumulate_grad_batches",
            format!(
                "automatic gradient accumulation is not supported for manual optimization: remove \
                 `accumulate_grad_batches({})` or switch `{name}` to automatic optimization",
                cfg.accumulate_grad_batches
            ),
        ));
    }
    if let (true, Some(v)) = (M::MANUAL_OPTIMIZATION, cfg.gradient_clip_val) {
        return Err(Error::config(
            "gradient_clip_val",
            format!(
                "automatic gradient clipping is not supported for manual optimization: remove \
                 `gradient_clip_val({v})` or switch `{name}` to automatic optimization"
            ),
        ));
    }
    Ok(())
}

pub(super) fn no_module() -> Error {
    Error::config(
        "module",
        "no module is attached to the trainer: pass one to `fit`, `validate`, `test` or `predict`",
    )
}

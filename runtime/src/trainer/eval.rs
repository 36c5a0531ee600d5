//! The evaluation loops: validate, test and predict, and the validation or test pass that `fit` runs too.

use std::collections::BTreeMap;

use super::config::limited;
use super::fit::{all, no_module, publish_epoch};
use super::parallel::{agree_on_batches, sync_logged};
use super::{CkptPath, DynLoader, Trainer, TrainerFn};
use crate::device::Backend;
use crate::metrics::{EpochAccumulator, MetricValue, Stage, StepLog};
use crate::module::LightningModule;
use crate::state::TrainerState;
use crate::Result;
use fulgur_rules::metrics::step_key;

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// Runs one validation pass over `val` (Lightning's `trainer.validate`); returns the epoch-level
    /// validation metrics.
    ///
    /// The weights it validates, by Lightning's rules: `module`'s (which is attached) or the attached
    /// module's; with a `ckpt_path`, those of that checkpoint (`"best"`, `"last"` or a file, resolved as
    /// for [`fit`](Self::fit); a weights-only file will do), loaded into the module first. Without a
    /// `module` and without a `ckpt_path`, after a `fit` whose checkpoint callback has a best file, that
    /// best file's weights, with Lightning's warning; with no best file, the attached module's weights.
    pub fn validate(
        &mut self,
        module: Option<M>,
        val: &mut DynLoader<'_, M::Batch>,
        ckpt_path: Option<CkptPath>,
    ) -> Result<BTreeMap<String, MetricValue>> {
        self.eval(module, val, Stage::Validation, ckpt_path)
    }

    /// Runs one test pass over `test` (Lightning's `trainer.test`); returns the epoch-level test
    /// metrics. `module` and `ckpt_path` choose the weights as for [`validate`](Self::validate).
    pub fn test(
        &mut self,
        module: Option<M>,
        test: &mut DynLoader<'_, M::Batch>,
        ckpt_path: Option<CkptPath>,
    ) -> Result<BTreeMap<String, MetricValue>> {
        self.eval(module, test, Stage::Test, ckpt_path)
    }

    /// Runs `predict_step` over every batch of `loader` (Lightning's `trainer.predict`; with
    /// `fast_dev_run(n)`, over the first `n`). `module` and `ckpt_path` choose the weights as for
    /// [`validate`](Self::validate).
    pub fn predict(
        &mut self,
        module: Option<M>,
        loader: &mut DynLoader<'_, M::Batch>,
        ckpt_path: Option<CkptPath>,
    ) -> Result<Vec<M::Prediction>> {
        let provided = module.is_some();
        if let Some(m) = module {
            self.attach(m)?;
        }
        if self.module.is_none() {
            return Err(no_module());
        }
        self.state.fn_ = TrainerFn::Predicting;
        let result = self.load_eval_weights(provided, ckpt_path).and_then(|()| {
            let module = self.module.as_mut().ok_or_else(no_module)?;
            loader.set_epoch(0, self.state.seed);
            let mut n = loader.num_batches();
            if self.config.fast_dev_run > 0 {
                n = n.min(usize::try_from(self.config.fast_dev_run).unwrap_or(usize::MAX));
            }
            (0..n)
                .map(|i| module.predict_step(loader.batch(i)?))
                .collect()
        });
        if let Err(error) = &result {
            self.strategy.fail(error);
        }
        self.state.fn_ = TrainerFn::Idle;
        result
    }

    pub(super) fn eval(
        &mut self,
        module: Option<M>,
        loader: &mut DynLoader<'_, M::Batch>,
        stage: Stage,
        ckpt_path: Option<CkptPath>,
    ) -> Result<BTreeMap<String, MetricValue>> {
        let provided = module.is_some();
        if let Some(m) = module {
            self.attach(m)?;
        }
        if self.module.is_none() {
            return Err(no_module());
        }
        let (fn_, limit, what) = match stage {
            Stage::Test => (
                TrainerFn::Testing,
                self.config.limit_test_batches,
                "limit_test_batches",
            ),
            _ => (
                TrainerFn::Validating,
                self.config.limit_val_batches,
                "limit_val_batches",
            ),
        };
        self.state.fn_ = fn_;
        self.state.fast_dev_run = self.config.fast_dev_run > 0;
        let result = self
            .load_eval_weights(provided, ckpt_path)
            .and_then(|()| self.declare_metrics())
            .and_then(|()| {
                let (rank, world) = (self.strategy.rank(), self.strategy.world_size());
                loader.shard(rank, world)?;
                agree_on_batches(&*self.strategy, what, loader.num_batches())?;
                limited(loader.num_batches() as u64, limit, what)
            })
            .and_then(|n| {
                if stage == Stage::Validation {
                    self.state.num_val_batches = n;
                }
                self.run_eval(loader, n, stage, false)
            });
        if let Err(error) = &result {
            self.strategy.fail(error);
        }
        self.state.fn_ = TrainerFn::Idle;
        result
    }

    /// One validation or test pass of `n` batches. Sanity runs leave `callback_metrics` untouched.
    pub(super) fn run_eval(
        &mut self,
        loader: &mut DynLoader<'_, M::Batch>,
        n: u64,
        stage: Stage,
        sanity: bool,
    ) -> Result<BTreeMap<String, MetricValue>> {
        self.state.sanity_checking = sanity;
        loader.set_epoch(0, self.state.seed);
        let mut accum = EpochAccumulator::default();
        let mut step_metrics = BTreeMap::new();
        if stage == Stage::Validation {
            self.call_callbacks(all, |c, ctx| c.on_validation_start(ctx))?;
        }
        let take = |strategy: &dyn crate::strategy::Strategy,
                    state: &TrainerState,
                    accum: &mut EpochAccumulator,
                    step_metrics: &mut BTreeMap<String, MetricValue>,
                    log: StepLog,
                    weight: f64|
         -> Result<()> {
            let (values, weight) =
                sync_logged(strategy, M::METRICS, finish_log(state, log)?, weight)?;
            for (i, v) in values {
                let Some(spec) = M::METRICS.get(i) else {
                    continue;
                };
                if spec.on_step {
                    let key = step_key(spec.name, spec.on_epoch);
                    step_metrics.insert(key, v);
                }
                if spec.on_epoch {
                    accum.add(spec.name, v.as_f64(), weight);
                }
            }
            Ok(())
        };
        for i in 0..n as usize {
            let batch_size = loader.batch_size(i);
            let batch = loader.batch(i)?;
            let mut log = StepLog::new(M::METRICS, stage, batch_size)
                .at(self.state.epoch, self.state.global_step)
                .batch(i);
            let module = self.module.as_mut().ok_or_else(no_module)?;
            match stage {
                Stage::Test => module.test_step(batch, &mut log)?,
                _ => module.validation_step(batch, &mut log)?,
            }
            take(
                &*self.strategy,
                &self.state,
                &mut accum,
                &mut step_metrics,
                log,
                batch_size as f64,
            )?;
            if stage == Stage::Validation {
                self.call_callbacks(all, |c, ctx| c.on_validation_batch_end(ctx, i as u64))?;
            }
        }
        let module = self.module.as_mut().ok_or_else(no_module)?;
        if stage == Stage::Validation {
            let mut log =
                StepLog::new(M::METRICS, stage, 1).at(self.state.epoch, self.state.global_step);
            module.on_validation_epoch_end(&mut log)?;
            take(
                &*self.strategy,
                &self.state,
                &mut accum,
                &mut step_metrics,
                log,
                1.0,
            )?;
        }
        let epoch_values = accum.compute(M::METRICS, stage);
        let mut row = BTreeMap::new();
        if !sanity {
            self.state.callback_metrics.extend(step_metrics);
            row = publish_epoch(
                &mut self.state.callback_metrics,
                M::METRICS,
                epoch_values.clone(),
            );
        }
        if stage == Stage::Validation {
            if !sanity && n > 0 && self.state.fn_ == TrainerFn::Fitting {
                self.state.validation_runs += 1;
            }
            self.call_callbacks(all, |c, ctx| c.on_validation_end(ctx))?;
        }
        if !sanity && !row.is_empty() {
            self.log_row(row)?;
        }
        self.state.sanity_checking = false;
        Ok(epoch_values)
    }
}

/// The values a step or hook logged; a stop it requested ([`StepLog::request_stop`]) is recorded in the
/// state, where the fit loop honours it as a callback's.
pub(super) fn finish_log(state: &TrainerState, log: StepLog) -> Result<Vec<(usize, MetricValue)>> {
    if log.stop_requested() {
        state.stop_requested.set(true);
    }
    log.finish()
}

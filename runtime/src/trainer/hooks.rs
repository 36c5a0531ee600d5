//! Running the callbacks' hooks, and what they exchange with the trainer besides: the metrics they
//! declare and log, the optimizers' settings they read.

use std::collections::BTreeMap;

use super::fit::all;
use super::parallel::sync_logged;
use super::Trainer;
use crate::callbacks::{Callback, CallbackContext};
use crate::device::Backend;
use crate::metrics::{intern_registry, MetricSpec, MetricValue, Stage};
use crate::module::LightningModule;
use crate::{Error, Result};
use fulgur_rules::metrics::step_key;

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// Runs `hook` on the callbacks `filter` selects, in order; then records what they logged.
    pub(super) fn call_callbacks(
        &mut self,
        filter: impl Fn(&dyn Callback) -> bool,
        hook: impl FnMut(&mut dyn Callback, &mut CallbackContext<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut callbacks = std::mem::take(&mut self.callbacks);
        let result = callbacks.run(&self.state, &self.sink(), &*self.strategy, filter, hook);
        self.callbacks = callbacks;
        let logged = self.state.logged.take();
        result?;
        if logged.is_empty() || self.state.sanity_checking {
            return Ok(());
        }
        let row = self.record(logged, None)?;
        if !row.is_empty() {
            self.log_row(row)?;
        }
        Ok(())
    }

    /// The run's metric registry: the module's metrics, then those each callback declares
    /// ([`Callback::metrics`]); a name declared twice is refused, naming both declarers.
    pub(super) fn declare_metrics(&mut self) -> Result<()> {
        self.state.metric_registry = M::METRICS;
        self.state.module_metrics = M::METRICS.len();
        let mut declared: Vec<(String, MetricSpec)> = Vec::new();
        self.call_callbacks(all, |c, ctx| {
            let key = c.state_key();
            declared.extend(c.metrics(ctx)?.into_iter().map(|s| (key.clone(), s)));
            Ok(())
        })?;
        if declared.is_empty() {
            return Ok(());
        }
        let mut specs = M::METRICS.to_vec();
        for (i, (key, spec)) in declared.iter().enumerate() {
            let earlier = if M::METRICS.iter().any(|m| m.name == spec.name) {
                Some("the module logs it already".to_string())
            } else {
                declared[..i]
                    .iter()
                    .find(|(_, other)| other.name == spec.name)
                    .map(|(other, _)| format!("the callback `{other}` declares it already"))
            };
            if let Some(why) = earlier {
                return Err(Error::config(
                    "metrics",
                    format!(
                        "the callback `{key}` declares the metric `{}`, but {why}: give it another name",
                        spec.name
                    ),
                ));
            }
            specs.push(*spec);
        }
        self.state.metric_registry = intern_registry(specs);
        Ok(())
    }

    /// Copies every optimizer's settings in force into the state, for callbacks to read.
    pub(super) fn refresh_optimizer_facts(&mut self) {
        if let Some(opts) = &self.optimizers {
            self.state.optimizers = opts.facts();
        }
    }

    /// Applies values logged by the module's training steps and hooks or by callbacks (indices into the
    /// run's registry): `callback_metrics`, epoch accumulation of training metrics (weighted by
    /// `batch_size`; hook values weigh 1). A metric of another stage (a callback's) takes the value
    /// logged. Returns the logger row of the values to log now.
    pub(super) fn record(
        &mut self,
        values: Vec<(usize, MetricValue)>,
        batch_size: Option<usize>,
    ) -> Result<BTreeMap<String, MetricValue>> {
        let registry = self.state.metric_registry;
        let weight = batch_size.unwrap_or(1) as f64;
        let (values, weight) = sync_logged(&*self.strategy, registry, values, weight)?;
        let mut row = BTreeMap::new();
        for (i, v) in values {
            let Some(spec) = registry.get(i) else {
                continue;
            };
            if spec.on_step {
                let key = step_key(spec.name, spec.on_epoch);
                self.state.callback_metrics.insert(spec.name.to_string(), v);
                self.state.callback_metrics.insert(key.clone(), v);
                row.insert(key, v);
            }
            if spec.on_epoch && spec.stage == Stage::Train {
                self.train_accum.add(spec.name, v.as_f64(), weight);
            } else if !spec.on_step && spec.stage != Stage::Train {
                self.state.callback_metrics.insert(spec.name.to_string(), v);
                row.insert(spec.name.to_string(), v);
            }
        }
        Ok(row)
    }
}

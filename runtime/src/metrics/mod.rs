//! Metric declarations (the registry), step-level logging and epoch-level aggregation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

mod value;

pub use value::{MetricKind, MetricValue};

/// The loop a metric is logged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// `training_step` and the training hooks.
    Train,
    /// `validation_step` and the validation hooks.
    Validation,
    /// `test_step`.
    Test,
}

/// How step values are combined into an epoch value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduce {
    /// Batch-size-weighted mean (Lightning's default).
    Mean,
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// One entry of a module's metric registry: Lightning's `self.log(name, …)` options, declared up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// The metric's key in `callback_metrics` and the logs.
    pub name: &'static str,
    /// Where it is logged from.
    pub stage: Stage,
    /// Record every step's value.
    pub on_step: bool,
    /// Aggregate over the epoch.
    pub on_epoch: bool,
    /// The epoch aggregation.
    pub reduce: Reduce,
    /// Show in the progress bar.
    pub prog_bar: bool,
    /// The type of the logged value (f32 by default); filename format specs are checked against it.
    pub kind: MetricKind,
}

impl MetricSpec {
    /// A metric with Lightning's defaults for `stage`: per step in training, per epoch otherwise.
    pub const fn new(name: &'static str, stage: Stage) -> Self {
        let train = matches!(stage, Stage::Train);
        Self {
            name,
            stage,
            on_step: train,
            on_epoch: !train,
            reduce: Reduce::Mean,
            prog_bar: false,
            kind: MetricKind::F32,
        }
    }

    /// A training metric (`on_step`).
    pub const fn train(name: &'static str) -> Self {
        Self::new(name, Stage::Train)
    }

    /// A validation metric (`on_epoch`).
    pub const fn validation(name: &'static str) -> Self {
        Self::new(name, Stage::Validation)
    }

    /// A test metric (`on_epoch`).
    pub const fn test(name: &'static str) -> Self {
        Self::new(name, Stage::Test)
    }

    /// Sets `on_step`.
    pub const fn on_step(mut self, on: bool) -> Self {
        self.on_step = on;
        self
    }

    /// Sets `on_epoch`.
    pub const fn on_epoch(mut self, on: bool) -> Self {
        self.on_epoch = on;
        self
    }

    /// Sets the epoch reduction.
    pub const fn reduce(mut self, reduce: Reduce) -> Self {
        self.reduce = reduce;
        self
    }

    /// Shows the metric in the progress bar.
    pub const fn prog_bar(mut self) -> Self {
        self.prog_bar = true;
        self
    }

    /// Sets the type of the logged value.
    pub const fn kind(mut self, kind: MetricKind) -> Self {
        self.kind = kind;
        self
    }
}

/// The names a metric appears under in `callback_metrics`: its own name, and Lightning's `name_step` /
/// `name_epoch` when it is logged both per step and per epoch (the rule the macros check with,
/// `fulgur_rules::metrics::keys`).
pub fn metric_keys(spec: &MetricSpec) -> Vec<String> {
    fulgur_rules::metrics::keys(spec.name, spec.on_step, spec.on_epoch)
}

/// `name` as a `&'static str`, for a [`MetricSpec`] whose name is built at run time (a callback's
/// `lr-Adam`). Each distinct name is stored once for the life of the process, so declaring the same
/// names at every `fit` costs nothing more.
pub fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// `specs` as a `&'static` slice, stored once per distinct registry (a run's registry: the module's
/// metrics and the callbacks'), like [`intern`].
pub(crate) fn intern_registry(specs: Vec<MetricSpec>) -> &'static [MetricSpec] {
    static REGISTRIES: Mutex<Vec<&'static [MetricSpec]>> = Mutex::new(Vec::new());
    let mut known = REGISTRIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&r) = known.iter().find(|r| ***r == specs[..]) {
        return r;
    }
    let leaked: &'static [MetricSpec] = Box::leak(specs.into_boxed_slice());
    known.push(leaked);
    leaked
}

/// What a step hands to `log`: the values it logs, checked against the module's registry.
#[derive(Debug)]
pub struct StepLog {
    registry: &'static [MetricSpec],
    stage: Stage,
    batch_size: usize,
    batch_idx: usize,
    epoch: u64,
    global_step: u64,
    values: Vec<(usize, MetricValue)>,
    errors: Vec<String>,
    stop: bool,
}

impl StepLog {
    pub(crate) fn new(registry: &'static [MetricSpec], stage: Stage, batch_size: usize) -> Self {
        Self {
            registry,
            stage,
            batch_size,
            batch_idx: 0,
            epoch: 0,
            global_step: 0,
            values: Vec::new(),
            errors: Vec::new(),
            stop: false,
        }
    }

    /// Stamps the log with the trainer's counters.
    pub(crate) fn at(mut self, epoch: u64, global_step: u64) -> Self {
        self.epoch = epoch;
        self.global_step = global_step;
        self
    }

    /// Stamps the log of a step with the index of its batch.
    pub(crate) fn batch(mut self, batch_idx: usize) -> Self {
        self.batch_idx = batch_idx;
        self
    }

    /// The index of the step's batch, from 0 within the training epoch or the validation or test run
    /// (Lightning's `batch_idx`); 0 in the module's hooks. A step declared with a `batch_idx: usize`
    /// parameter receives it.
    pub fn batch_idx(&self) -> usize {
        self.batch_idx
    }

    /// The trainer's `current_epoch` when the step runs (Lightning's `self.current_epoch`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The trainer's `global_step` when the step runs (Lightning's `self.global_step`).
    pub fn global_step(&self) -> u64 {
        self.global_step
    }

    /// Logs `value` under `name`, which must be declared in the module's metric registry for this stage.
    /// The value is stored with the registry's kind for `name`. A mistake is reported by the trainer as
    /// an error right after the step, before the step is applied.
    pub fn log(&mut self, name: &str, value: impl Into<MetricValue>) {
        let value = value.into();
        match self
            .registry
            .iter()
            .position(|s| s.name == name && s.stage == self.stage)
        {
            Some(i) => {
                let kind = self.registry[i].kind;
                self.values
                    .push((i, MetricValue::from_f64(value.as_f64(), kind)))
            }
            None => self
                .errors
                .push(unknown_metric(self.registry, name, self.stage)),
        }
    }

    /// The batch size used to weight this step's values in epoch means.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Asks the trainer to stop training (Lightning's `self.trainer.should_stop = True` in a module):
    /// training ends after the current batch (or, from `on_train_epoch_end`, after this epoch), once
    /// `min_epochs` and `min_steps` are reached; the end of `fit` runs as usual. Outside `fit` it has no
    /// effect.
    pub fn request_stop(&mut self) {
        self.stop = true;
    }

    /// Whether the step or hook called [`request_stop`](Self::request_stop).
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop
    }

    pub(crate) fn finish(self) -> Result<Vec<(usize, MetricValue)>, crate::Error> {
        if let Some(first) = self.errors.into_iter().next() {
            return Err(crate::Error::Metric(first));
        }
        Ok(self.values)
    }
}

fn unknown_metric(registry: &[MetricSpec], name: &str, stage: Stage) -> String {
    let known: Vec<String> = registry
        .iter()
        .filter(|s| s.stage == stage)
        .map(|s| format!("`{}`", s.name))
        .collect();
    if let Some(other) = registry.iter().find(|s| s.name == name) {
        return format!(
            "metric `{name}` is declared for the {:?} stage but was logged from the {stage:?} stage",
            other.stage
        );
    }
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    format!("metric `{name}` is not in the module's metric registry for the {stage:?} stage (declared: {known})")
}

/// Epoch-level accumulation of logged values, per registry index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EpochAccumulator {
    entries: BTreeMap<String, Accum>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Accum {
    weighted_sum: f64,
    weight: f64,
    sum: f64,
    max: f64,
    min: f64,
}

impl EpochAccumulator {
    pub(crate) fn add(&mut self, name: &str, value: f64, weight: f64) {
        let a = self.entries.entry(name.to_string()).or_insert(Accum {
            weighted_sum: 0.0,
            weight: 0.0,
            sum: 0.0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
        });
        a.weighted_sum += value * weight;
        a.weight += weight;
        a.sum += value;
        a.max = a.max.max(value);
        a.min = a.min.min(value);
    }

    /// The epoch value of each accumulated metric of `registry`, in the metric's kind.
    pub(crate) fn compute(
        &self,
        registry: &[MetricSpec],
        stage: Stage,
    ) -> BTreeMap<String, MetricValue> {
        let mut out = BTreeMap::new();
        for spec in registry.iter().filter(|s| s.stage == stage && s.on_epoch) {
            if let Some(a) = self.entries.get(spec.name) {
                let v = match spec.reduce {
                    Reduce::Mean if a.weight > 0.0 => a.weighted_sum / a.weight,
                    Reduce::Mean => f64::NAN,
                    Reduce::Sum => a.sum,
                    Reduce::Max => a.max,
                    Reduce::Min => a.min,
                };
                out.insert(spec.name.to_string(), MetricValue::from_f64(v, spec.kind));
            }
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &[MetricSpec] = &[
        MetricSpec::train("train_loss").on_epoch(true),
        MetricSpec::validation("val_loss"),
        MetricSpec::validation("val_max").reduce(Reduce::Max),
    ];

    #[test]
    fn epoch_mean_is_weighted_by_batch_size() {
        let mut acc = EpochAccumulator::default();
        acc.add("val_loss", 1.0, 32.0);
        acc.add("val_loss", 4.0, 16.0);
        acc.add("val_max", 1.0, 32.0);
        acc.add("val_max", 4.0, 16.0);
        let out = acc.compute(REG, Stage::Validation);
        assert_eq!(
            out["val_loss"],
            MetricValue::F32(((32.0 + 64.0) / 48.0) as f32)
        );
        assert_eq!(out["val_max"], MetricValue::F32(4.0));
        assert!(!out.contains_key("train_loss"));
    }

    #[test]
    fn unknown_and_wrong_stage_metrics_are_errors() {
        let mut log = StepLog::new(REG, Stage::Train, 8);
        log.log("train_loss", 1.0f32);
        assert_eq!(log.finish().unwrap(), vec![(0, MetricValue::F32(1.0))]);
        let mut log = StepLog::new(REG, Stage::Train, 8);
        log.log("val_loss", 1.0);
        let err = log.finish().unwrap_err().to_string();
        assert!(err.contains("declared for the Validation stage"), "{err}");
        let mut log = StepLog::new(REG, Stage::Validation, 8);
        log.log("val_los", 1.0);
        let err = log.finish().unwrap_err().to_string();
        assert_eq!(err, "metric `val_los` is not in the module's metric registry for the Validation stage (declared: `val_loss`, `val_max`)");
    }

    #[test]
    fn defaults_follow_lightning() {
        let t = MetricSpec::train("a");
        assert!(t.on_step && !t.on_epoch);
        let v = MetricSpec::validation("b");
        assert!(!v.on_step && v.on_epoch);
        assert_eq!(
            metric_keys(&MetricSpec::train("x").on_epoch(true)),
            ["x", "x_step", "x_epoch"]
        );
    }
}

//! Callbacks that log (`Callback::metrics`, `CallbackContext::log`), the optimizers' settings in the
//! trainer's state, and Lightning's `LearningRateMonitor`.

use std::path::Path;

use fulgur::callbacks::{LearningRateMonitor, LoggingInterval, ModelCheckpoint};
use fulgur::dfdx::tensor::Cpu;
use fulgur::metrics::{MetricValue, Reduce};
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::mlp::{loaders, Hparams, LitMlp};

/// Training batches per epoch of `loaders()` (1437 samples in batches of 32).
const BATCHES: u64 = 45;

/// Counts training batches: `batches` per step and, summed over the epoch, `batches_epoch`.
struct Counter {
    /// A name to log instead of a declared one.
    log_as: &'static str,
    /// A name to declare instead of `batches`.
    declare_as: &'static str,
}

impl Counter {
    fn new() -> Self {
        Self {
            log_as: "batches",
            declare_as: "batches",
        }
    }
}

impl Callback for Counter {
    fn metrics(&self, _ctx: &CallbackContext<'_>) -> fulgur::Result<Vec<MetricSpec>> {
        Ok(vec![MetricSpec::train(self.declare_as)
            .on_epoch(true)
            .reduce(Reduce::Sum)])
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        ctx.log(self.log_as, 1.0)
    }
}

fn trainer(root: &Path) -> TrainerBuilder<LitMlp<Cpu>, Cpu> {
    Trainer::builder()
        .default_root_dir(root)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .log_every_n_steps(1)
}

fn fit(
    builder: TrainerBuilder<LitMlp<Cpu>, Cpu>,
    hparams: Hparams,
) -> fulgur::Result<Trainer<LitMlp<Cpu>, Cpu>> {
    let (mut train, mut val) = loaders();
    let mut t = builder.build()?;
    t.fit(LitMlp::new(hparams), &mut train, Some(&mut val), None)?;
    Ok(t)
}

fn error_of(fitted: fulgur::Result<Trainer<LitMlp<Cpu>, Cpu>>) -> String {
    match fitted {
        Ok(t) => panic!("`fit` succeeded and trained to step {}", t.global_step()),
        Err(e) => e.to_string(),
    }
}

/// The column `name` of `metrics.csv`, as (step, value) for the rows that have a value.
fn column(root: &Path, name: &str) -> Vec<(u64, f64)> {
    let csv = std::fs::read_to_string(root.join("lightning_logs/version_0/metrics.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (step, col) = (
        header.iter().position(|h| *h == "step").unwrap(),
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column `{name}` in {header:?}")),
    );
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| !r[col].is_empty())
        .map(|r| (r[step].parse().unwrap(), r[col].parse().unwrap()))
        .collect()
}

#[test]
fn a_callback_logs_step_values_and_epoch_aggregates_of_its_declared_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let t = fit(
        trainer(dir.path()).max_epochs(2).callback(Counter::new()),
        Hparams::default(),
    )
    .unwrap();
    let m = t.callback_metrics();
    // Summed over the epoch by the declared reduction; the step value is the latest one.
    assert_eq!(m["batches_epoch"].as_f64(), BATCHES as f64);
    assert_eq!(m["batches_step"].as_f64(), 1.0);
    let steps = column(dir.path(), "batches_step");
    assert_eq!(steps.len() as u64, 2 * BATCHES);
    assert_eq!(steps[0], (1, 1.0));
    assert_eq!(
        column(dir.path(), "batches_epoch"),
        [(BATCHES, BATCHES as f64), (2 * BATCHES, BATCHES as f64)]
    );
}

#[test]
fn a_callback_metric_can_be_monitored_by_a_checkpoint_callback() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = ModelCheckpoint::builder()
        .monitor("batches_epoch")
        .mode("max")
        .build()
        .unwrap();
    let t = fit(
        trainer(dir.path())
            .max_epochs(1)
            .enable_checkpointing(true)
            .callback(Counter::new())
            .callback(ckpt),
        Hparams::default(),
    )
    .unwrap();
    let best = t.checkpoint_callback().unwrap().best_model_score();
    assert_eq!(best, Some(BATCHES as f64));
}

#[test]
fn logging_an_undeclared_name_fails_with_the_declared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let counter = Counter {
        log_as: "batchs",
        ..Counter::new()
    };
    let err = error_of(fit(
        trainer(dir.path()).max_steps(1).callback(counter),
        Hparams::default(),
    ));
    assert_eq!(
        err,
        "a callback logged `batchs`, which no callback declares in `Callback::metrics`, did you mean \
         `batches`? (declared: `batches`)"
    );
}

#[test]
fn a_callback_may_not_declare_a_name_the_module_logs() {
    let dir = tempfile::tempdir().unwrap();
    let counter = Counter {
        declare_as: "train_loss",
        log_as: "train_loss",
    };
    let err = error_of(fit(
        trainer(dir.path()).max_steps(1).callback(counter),
        Hparams::default(),
    ));
    assert!(
        err.contains("declares the metric `train_loss`, but the module logs it already"),
        "{err}"
    );
}

#[test]
fn the_learning_rate_monitor_logs_each_step_rate_of_a_step_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let hparams = Hparams {
        with_scheduler: true, // StepLr(1, 0.5) per step
        ..Hparams::default()
    };
    let t = fit(
        trainer(dir.path())
            .max_steps(5)
            .callback(LearningRateMonitor::new()),
        hparams,
    )
    .unwrap();
    let logged = column(dir.path(), "lr-Adam");
    // Before each batch, the rate that batch's update uses: 1e-2 halved at every step.
    let expected: Vec<(u64, f64)> = (0..5).map(|s| (s, 1e-2 * 0.5f64.powi(s as i32))).collect();
    assert_eq!(logged, expected);
    // In `callback_metrics` too, and the state's facts show the rate in force after the last step.
    assert_eq!(
        t.callback_metrics()["lr-Adam"],
        MetricValue::F64(1e-2 / 16.0)
    );
    assert_eq!(t.state().optimizers[0].groups[0].lr, 1e-2 / 32.0);
}

#[test]
fn the_learning_rate_monitor_logs_momentum_and_weight_decay_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = LearningRateMonitor::new()
        .logging_interval(LoggingInterval::Epoch)
        .log_momentum(true)
        .log_weight_decay(true);
    fit(
        trainer(dir.path()).max_epochs(2).callback(monitor),
        Hparams::default(),
    )
    .unwrap();
    // At the start of each epoch, at the steps taken so far; Adam's momentum is its beta1.
    assert_eq!(column(dir.path(), "lr-Adam"), [(0, 1e-2), (BATCHES, 1e-2)]);
    assert_eq!(
        column(dir.path(), "lr-Adam-momentum"),
        [(0, 0.9), (BATCHES, 0.9)]
    );
    assert_eq!(
        column(dir.path(), "lr-Adam-weight_decay"),
        [(0, 0.0), (BATCHES, 0.0)]
    );
}

#[test]
fn the_learning_rate_monitor_follows_log_every_n_steps() {
    let dir = tempfile::tempdir().unwrap();
    fit(
        trainer(dir.path())
            .max_steps(7)
            .log_every_n_steps(3)
            .callback(LearningRateMonitor::new().logging_interval(LoggingInterval::Step)),
        Hparams::default(),
    )
    .unwrap();
    let steps: Vec<u64> = column(dir.path(), "lr-Adam").iter().map(|r| r.0).collect();
    assert_eq!(steps, [2, 5]);
}

#[test]
fn the_learning_rate_monitor_needs_a_logger() {
    let dir = tempfile::tempdir().unwrap();
    let err = error_of(fit(
        trainer(dir.path())
            .max_steps(1)
            .no_logger()
            .callback(LearningRateMonitor::new()),
        Hparams::default(),
    ));
    assert!(
        err.contains("Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger"),
        "{err}"
    );
}

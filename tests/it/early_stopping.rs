//! `EarlyStopping` through the real trainer, in the scenarios of Lightning's tests: a scripted module's
//! metric follows a given sequence, and each test asserts the epoch and step at which training ends and
//! the callback's counters.

use std::io::Write;
use std::sync::{Arc, Mutex};

use fulgur::callbacks::{EarlyStoppingBuilder, Mode, ModelCheckpoint};
use fulgur::checkpoint::read_checkpoint;
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::scripted::{at, Script, Scripted, Units};

type Builder = TrainerBuilder<Scripted<Cpu>, Cpu>;

struct Run {
    trainer: Trainer<Scripted<Cpu>>,
    dir: tempfile::TempDir,
    result: fulgur::Result<()>,
}

impl Run {
    fn es(&self) -> &EarlyStopping {
        self.trainer
            .callback::<EarlyStopping>()
            .expect("an EarlyStopping")
    }

    /// `(current_epoch, global_step)` after `fit`.
    fn end(&self) -> (u64, u64) {
        (self.trainer.current_epoch(), self.trainer.global_step())
    }

    fn ok(self) -> Self {
        if let Err(e) = &self.result {
            panic!("fit failed: {e}");
        }
        self
    }
}

/// `fit` of the scripted module for at most `epochs` epochs of `batches` batches, one validation batch
/// per validation run, no logger, no sanity check, no checkpointing unless `tweak` turns it on.
fn fit_in(
    dir: tempfile::TempDir,
    epochs: u64,
    batches: usize,
    script: Script,
    ckpt_path: Option<CkptPath>,
    tweak: impl FnOnce(Builder) -> Builder,
) -> Run {
    let builder = Trainer::builder()
        .max_epochs(epochs)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .num_sanity_val_steps(0)
        .default_root_dir(dir.path());
    let mut trainer = tweak(builder).build().unwrap();
    let mut module = Scripted::from_hparams((), &Cpu::default()).unwrap();
    module.script = script;
    let (mut train, mut val) = (Units(batches), Units(1));
    let result = trainer.fit(module, &mut train, Some(&mut val), ckpt_path);
    Run {
        trainer,
        dir,
        result,
    }
}

fn fit(epochs: u64, batches: usize, script: Script, tweak: impl FnOnce(Builder) -> Builder) -> Run {
    fit_in(
        tempfile::tempdir().unwrap(),
        epochs,
        batches,
        script,
        None,
        tweak,
    )
}

/// The validation metric `val` takes `values[epoch]`.
fn val_by_epoch(values: &[f32]) -> Script {
    Script {
        val: Some(("val", values.to_vec())),
        val_by_epoch: true,
        ..Script::default()
    }
}

fn es() -> EarlyStoppingBuilder {
    EarlyStopping::builder().monitor("val")
}

fn with(cb: EarlyStoppingBuilder) -> impl FnOnce(Builder) -> Builder {
    move |b| b.callback(cb.build().unwrap())
}

/// Lightning's `test_early_stopping_patience`: the stop comes at the check that exhausts patience, and
/// the epoch it ends is the last.
#[test]
fn patience_stops_at_the_exact_epoch() {
    for (values, patience, stopped) in [
        (&[6.0, 5.0, 5.0, 5.0, 5.0, 5.0][..], 3, 4),
        (&[6.0, 5.0, 4.0, 4.0, 3.0, 3.0][..], 1, 3),
        (&[6.0, 5.0, 6.0, 5.0, 5.0, 5.0][..], 3, 4),
    ] {
        let mut values = values.to_vec();
        values.resize(10, 5.0);
        let r = fit(10, 2, val_by_epoch(&values), with(es().patience(patience))).ok();
        assert_eq!(r.end(), (stopped + 1, 2 * (stopped + 1)), "{values:?}");
        assert_eq!(r.es().stopped_epoch(), stopped);
        assert_eq!(r.es().wait_count(), patience);
    }
    // Always improving: no stop, `stopped_epoch` stays 0.
    let r = fit(
        4,
        2,
        val_by_epoch(&[4.0, 3.0, 2.0, 1.0]),
        with(es().patience(1)),
    )
    .ok();
    assert_eq!(r.end(), (4, 8));
    assert_eq!((r.es().stopped_epoch(), r.es().best_score()), (0, 1.0));
}

#[test]
fn an_improvement_below_min_delta_does_not_reset_patience_in_either_mode() {
    // Each value improves on the previous by 0.04: by less than min_delta 0.1 on the best until the
    // third, so patience (2) runs out first.
    let down = [1.0, 0.96, 0.92, 0.88, 0.84, 0.8];
    let r = fit(
        6,
        1,
        val_by_epoch(&down),
        with(es().patience(2).min_delta(0.1)),
    )
    .ok();
    assert_eq!(r.end(), (3, 3));
    assert_eq!((r.es().stopped_epoch(), r.es().best_score()), (2, 1.0));
    assert_eq!(r.es().min_delta(), -0.1);
    // Without min_delta each is an improvement.
    let r = fit(6, 1, val_by_epoch(&down), with(es().patience(2))).ok();
    assert_eq!(r.end(), (6, 6));
    assert_eq!(r.es().best_score(), 0.8f32 as f64);

    let up = [1.0, 1.04, 1.08, 1.12, 1.16, 1.2];
    let max = || es().mode(Mode::Max).patience(2);
    let r = fit(6, 1, val_by_epoch(&up), with(max().min_delta(0.1))).ok();
    assert_eq!(r.end(), (3, 3));
    assert_eq!(r.es().min_delta(), 0.1);
    let r = fit(6, 1, val_by_epoch(&up), with(max())).ok();
    assert_eq!(r.end(), (6, 6));
    // A gain just above min_delta (0.15 > 0.1) does reset it.
    let steps = [1.0, 1.15, 1.3, 1.45, 1.6, 1.75];
    let r = fit(6, 1, val_by_epoch(&steps), with(max().min_delta(0.1))).ok();
    assert_eq!((r.end(), r.es().wait_count()), ((6, 6), 0));
}

/// Lightning's `test_early_stopping_patience_train`: a metric the module logs in its own
/// `on_train_epoch_end` is checked at that epoch, because EarlyStopping, like the checkpoint callbacks,
/// runs its epoch-end hook after the module's.
#[test]
fn a_metric_the_module_logs_at_epoch_end_is_checked_at_that_epoch() {
    let script = Script {
        epoch_end: Some(("early_stop_on", vec![5.0, 4.0, 4.0, 4.0, 4.0, 4.0])),
        ..Script::default()
    };
    let cb = EarlyStopping::builder()
        .monitor("early_stop_on")
        .patience(1)
        .check_on_train_epoch_end(true);
    let r = fit(6, 2, script, with(cb)).ok();
    assert_eq!(r.end(), (3, 6));
    assert_eq!(r.es().stopped_epoch(), 2);
}

/// Lightning's `test_early_stopping_thresholds`.
#[test]
fn thresholds_stop_at_the_first_value_past_them() {
    let run = |cb: EarlyStoppingBuilder, values: &[f32]| {
        let r = fit(20, 1, val_by_epoch(values), with(cb)).ok();
        (r.end().0 - 1, r.es().stopped_epoch())
    };
    assert_eq!(
        run(es(), &[8.0, 4.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0]),
        (5, 5)
    );
    assert_eq!(
        run(
            es().stopping_threshold(2.9),
            &[9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 4.0, 3.0, 2.0, 1.0]
        ),
        (8, 8)
    );
    assert_eq!(
        run(
            es().divergence_threshold(15.9),
            &[9.0, 4.0, 2.0, 16.0, 32.0, 64.0]
        ),
        (3, 3)
    );
    // Max mode: the thresholds point the other way.
    let max = || es().mode(Mode::Max).patience(10);
    assert_eq!(
        run(max().stopping_threshold(0.9), &[0.1, 0.5, 0.95, 0.2, 0.2]),
        (2, 2)
    );
    assert_eq!(
        run(max().divergence_threshold(0.2), &[0.5, 0.6, 0.1, 0.7, 0.7]),
        (2, 2)
    );
}

/// Lightning's `test_early_stopping_on_non_finite_monitor`, and the same without `check_finite`.
#[test]
fn a_non_finite_value_stops_with_check_finite_and_counts_as_no_improvement_without() {
    for bad in [f32::INFINITY, f32::NAN] {
        let values = [4.0, 3.0, bad, 2.0, 1.0];
        let r = fit(10, 1, val_by_epoch(&values), with(es())).ok();
        assert_eq!((r.end().0 - 1, r.es().stopped_epoch()), (2, 2), "{bad}");
        assert_eq!(r.es().best_score(), 3.0);

        let r = fit(5, 1, val_by_epoch(&values), with(es().check_finite(false))).ok();
        assert_eq!(r.end(), (5, 5), "{bad}");
        assert_eq!((r.es().stopped_epoch(), r.es().best_score()), (0, 1.0));
    }
    let nans = [4.0, f32::NAN, f32::NAN, f32::NAN, 1.0];
    let r = fit(
        5,
        1,
        val_by_epoch(&nans),
        with(es().check_finite(false).patience(2)),
    )
    .ok();
    assert_eq!((r.end().0 - 1, r.es().stopped_epoch()), (2, 2));
}

#[test]
fn a_stop_before_min_epochs_waits_for_them() {
    let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let r = fit(8, 2, val_by_epoch(&values), |b| {
        with(es().patience(1))(b).min_epochs(4)
    })
    .ok();
    // Asked at epoch 1; epochs 2 and 3 still run (each check asks again) and training ends at min_epochs.
    assert_eq!(r.end(), (4, 8));
    assert_eq!((r.es().stopped_epoch(), r.es().wait_count()), (3, 3));
}

fn state_of(path: &std::path::Path) -> ciborium::Value {
    let ckpt = read_checkpoint(path).unwrap();
    ckpt.callbacks
        .get("EarlyStopping{'monitor': 'val', 'mode': 'min'}")
        .cloned()
        .unwrap_or_else(|| panic!("no EarlyStopping state in {:?}", ckpt.callbacks.keys()))
}

fn entry(state: &ciborium::Value, key: &str) -> ciborium::Value {
    state
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// The best is 4.0 at epoch 1; epochs 2, 3 and 4 do not improve: patience 3 stops at epoch 4.
const PLATEAU: [f32; 8] = [5.0, 4.0, 4.5, 4.2, 4.1, 3.9, 3.8, 3.7];

fn save_last(b: Builder) -> Builder {
    b.enable_checkpointing(true).callback(
        ModelCheckpoint::builder()
            .save_last(true)
            .save_top_k(0)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_resumed_run_continues_its_patience_and_stops_where_an_uninterrupted_one_does() {
    let whole = fit(8, 2, val_by_epoch(&PLATEAU), with(es())).ok();
    assert_eq!(whole.end(), (5, 10));
    assert_eq!(whole.es().stopped_epoch(), 4);

    // Interrupted after epoch 2 (one check without improvement), resumed from `last.ckpt`.
    let first = fit(3, 2, val_by_epoch(&PLATEAU), |b| save_last(with(es())(b))).ok();
    let last = first.dir.path().join("checkpoints/last.ckpt");
    assert_eq!(at(&last), (2, 6));
    let state = state_of(&last);
    assert_eq!(entry(&state, "wait_count"), 1.into());
    assert_eq!(entry(&state, "best_score"), ciborium::Value::Float(4.0));
    assert_eq!(entry(&state, "patience"), 3.into());

    let resumed = fit_in(
        first.dir,
        8,
        2,
        val_by_epoch(&PLATEAU),
        Some(CkptPath::Path(last)),
        with(es()),
    )
    .ok();
    assert_eq!(resumed.end(), whole.end());
    assert_eq!(
        (resumed.es().stopped_epoch(), resumed.es().wait_count()),
        (4, 3)
    );
}

#[test]
fn last_ckpt_holds_the_stopped_epoch_and_resuming_it_runs_one_more_check() {
    let r = fit(8, 2, val_by_epoch(&PLATEAU), |b| save_last(with(es())(b))).ok();
    assert_eq!(r.end(), (5, 10));
    let last = r.dir.path().join("checkpoints/last.ckpt");
    assert_eq!(at(&last), (4, 10));
    let state = state_of(&last);
    assert_eq!(entry(&state, "wait_count"), 3.into());
    assert_eq!(entry(&state, "stopped_epoch"), 4.into());

    // As in Lightning, the stop request itself is not saved: the resumed run trains epoch 5, whose
    // check sees an improvement (3.9 < 4.0), resets patience and goes on to `max_epochs`.
    let resumed = fit_in(
        r.dir,
        8,
        2,
        val_by_epoch(&PLATEAU),
        Some(CkptPath::Path(last.clone())),
        with(es()),
    )
    .ok();
    assert_eq!(resumed.end(), (8, 16));
    assert_eq!(resumed.es().best_score(), 3.7f32 as f64);
    // A run that still does not improve stops after its first epoch.
    let flat = [5.0, 4.0, 4.5, 4.2, 4.1, 4.1, 4.1, 4.1];
    let again = fit_in(
        tempfile::tempdir().unwrap(),
        8,
        2,
        val_by_epoch(&flat),
        Some(CkptPath::Path(last)),
        with(es()),
    )
    .ok();
    assert_eq!(again.end(), (6, 12));
    assert_eq!(
        (again.es().stopped_epoch(), again.es().wait_count()),
        (5, 4)
    );
}

/// Lightning's `test_multiple_early_stopping_callbacks`: training stops when either asks.
#[test]
fn two_callbacks_on_different_metrics_stop_when_either_does() {
    let script = Script {
        val: Some(("val", vec![8.0, 4.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0])),
        val_by_epoch: true,
        tr: Some(("tr", vec![0.0; 8])),
        ..Script::default()
    };
    let tr = || EarlyStopping::builder().monitor("tr").build().unwrap();
    let val = || es().build().unwrap();
    for order in [[tr(), val()], [val(), tr()]] {
        let r = fit(8, 1, script.clone(), |mut b| {
            for cb in order {
                b = b.callback(cb);
            }
            b
        })
        .ok();
        assert_eq!(r.end(), (4, 4));
        let stopped: Vec<(String, u64)> = r
            .trainer
            .callbacks()
            .iter()
            .filter_map(|c| c.as_any().downcast_ref::<EarlyStopping>())
            .map(|c| (c.monitor().to_string(), c.stopped_epoch()))
            .collect();
        assert!(stopped.contains(&("tr".into(), 3)), "{stopped:?}");
        assert!(stopped.contains(&("val".into(), 0)), "{stopped:?}");
    }
}

#[test]
fn two_callbacks_on_one_monitor_and_mode_have_one_state_key_and_are_refused() {
    let err = |b: Builder| match b.build() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("two EarlyStopping with one state key accepted"),
    };
    let b = || {
        Trainer::<Scripted<Cpu>>::builder()
            .no_logger()
            .callback(es().build().unwrap())
    };
    let e = err(b().callback(es().patience(5).build().unwrap()));
    assert!(
        e.contains(
            "two callbacks have the same state key `EarlyStopping{'monitor': 'val', 'mode': 'min'}`"
        ),
        "{e}"
    );
    // Another mode, or a state key of its own, is a different callback.
    b().callback(es().mode(Mode::Max).build().unwrap())
        .build()
        .unwrap();
    b().callback(es().state_key("second").build().unwrap())
        .build()
        .unwrap();
}

/// With `val_check_interval` below 1 the check runs after each validation, and a stop ends training
/// after the batch that validation followed.
#[test]
fn a_check_after_a_validation_inside_the_epoch_stops_after_that_batch() {
    let script = Script {
        val: Some(("val", vec![3.0, 2.0, 2.5, 2.5, 2.5, 2.5])),
        ..Script::default()
    };
    let r = fit(3, 4, script, |b| {
        with(es().patience(1))(b).val_check_interval(0.5)
    })
    .ok();
    assert!(!r.es().check_on_train_epoch_end());
    // Validation after batches 2 and 4 of each epoch: the third run (epoch 1, batch 2) stops.
    assert_eq!(r.end(), (1, 6));
    assert_eq!(r.es().stopped_epoch(), 1);
    assert_eq!(r.trainer.module().unwrap().val_runs, 3);
}

/// Lightning's `test_check_on_train_epoch_end_smart_handling`: when validation does not run exactly once
/// per epoch, the check follows validation.
#[test]
fn the_check_follows_validation_unless_it_runs_once_per_epoch() {
    let script = || Script {
        val: Some(("val", vec![1.0; 10])),
        ..Script::default()
    };
    // Every 3 of 10 batches: checks after batches 3 (improvement) and 6 (stop).
    let r = fit(10, 10, script(), |b| {
        with(es().patience(1))(b).val_check_interval(0.3)
    })
    .ok();
    assert_eq!(r.end(), (0, 6));
    // Every second epoch: checks at epochs 1 and 3. At the train epoch end (not strict: epoch 0 has no
    // value yet), the stale value of epoch 1 stops at epoch 2.
    let r = fit(5, 1, script(), |b| {
        with(es().patience(1))(b).check_val_every_n_epoch(Some(2))
    })
    .ok();
    assert!(!r.es().check_on_train_epoch_end());
    assert_eq!(r.end(), (4, 4));
    let r = fit(5, 1, script(), |b| {
        with(
            es().patience(1)
                .check_on_train_epoch_end(true)
                .strict(false),
        )(b)
        .check_val_every_n_epoch(Some(2))
    })
    .ok();
    assert_eq!(r.end(), (3, 3));
    // Once per epoch: at the train epoch end.
    let r = fit(5, 1, script(), with(es().patience(1))).ok();
    assert!(r.es().check_on_train_epoch_end());
    assert_eq!(r.end(), (2, 2));
}

#[test]
fn a_monitor_that_names_no_metric_fails_fit_before_training_when_strict() {
    let r = fit(3, 1, val_by_epoch(&[1.0; 3]), with(es().monitor("vall")));
    let Err(e) = &r.result else {
        panic!("fit accepted an unknown monitor")
    };
    assert!(matches!(e, fulgur::Error::Config { settings, .. } if settings == &["monitor"]));
    let e = e.to_string();
    assert!(
        e.starts_with(
            "`EarlyStopping(monitor = \"vall\")`: `vall` names no metric the module logs, did you mean `val`? \
             known metrics: "
        ),
        "{e}"
    );
    assert!(e.contains("`val_loss`") && e.contains("`epoch`"), "{e}");
    assert_eq!(r.end(), (0, 0));
}

/// Collects what fulgur prints through `tracing` on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured(f: impl FnOnce()) -> String {
    use tracing_subscriber::util::SubscriberInitExt;
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .finish();
    {
        let _guard = subscriber.set_default();
        f();
    }
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn not_strict_a_missing_monitor_is_a_warning_and_no_check_stops() {
    let log = captured(|| {
        let r = fit(
            3,
            1,
            val_by_epoch(&[1.0; 3]),
            with(es().monitor("vall").strict(false).patience(0)),
        )
        .ok();
        assert_eq!(r.end(), (3, 3));
        assert_eq!(r.es().wait_count(), 0);
    });
    assert!(
        log.contains("WARN")
            && log.contains("`vall` names no metric the module logs, did you mean `val`?"),
        "{log}"
    );
}

#[test]
fn a_registered_metric_missing_at_check_time_fails_when_strict() {
    // `val` is declared but this run never logs it.
    let r = fit(3, 1, Script::default(), with(es()));
    let Err(e) = &r.result else {
        panic!("fit went on without the monitored metric")
    };
    assert_eq!(
        e.to_string(),
        "Early stopping conditioned on metric `val` which is not available. Pass in or modify your \
         `EarlyStopping` callback to use any of the following: ``"
    );
}

#[test]
fn verbose_prints_lightnings_lines() {
    let log = captured(|| {
        fit(8, 1, val_by_epoch(&PLATEAU), with(es().verbose(true))).ok();
    });
    for line in [
        "Metric val improved. New best score: 5.000",
        "Metric val improved by 1.000 >= min_delta = 0.0. New best score: 4.000",
        "Monitored metric val did not improve in the last 3 records. Best score: 4.000. Signaling Trainer to stop.",
    ] {
        assert!(log.contains(line), "{line}\n{log}");
    }
    assert!(!log.contains("[rank:"), "{log}");
}

/// Lightning turns early stopping off under `fast_dev_run`: no check runs, so a metric never logged is
/// no error and nothing is counted.
#[test]
fn fast_dev_run_skips_the_check() {
    let r = fit(5, 3, Script::default(), |b| {
        with(es().patience(0))(b).fast_dev_run(2)
    })
    .ok();
    assert_eq!(r.trainer.global_step(), 2);
    assert_eq!(
        (r.es().wait_count(), r.es().best_score()),
        (0, f64::INFINITY)
    );
}

#[test]
fn not_strict_and_verbose_a_metric_missing_at_check_time_is_one_warning() {
    let log = captured(|| {
        let r = fit(
            3,
            1,
            Script::default(),
            with(es().strict(false).verbose(true)),
        )
        .ok();
        assert_eq!((r.end(), r.es().wait_count()), ((3, 3), 0));
    });
    let warning =
        "Early stopping conditioned on metric `val` which is not available. Pass in or modify \
                   your `EarlyStopping` callback to use any of the following: ``";
    assert_eq!(log.matches(warning).count(), 1, "{log}");
}

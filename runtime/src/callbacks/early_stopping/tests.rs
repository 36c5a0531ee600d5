use super::*;
use crate::metrics::MetricSpec;
use crate::strategy::Strategy;

fn es(b: EarlyStoppingBuilder) -> EarlyStopping {
    b.build().unwrap()
}

fn b() -> EarlyStoppingBuilder {
    EarlyStopping::builder().monitor("val_loss")
}

/// Feeds `values` (f64) one check at a time; returns each decision's stop flag and the wait counts.
fn feed(cb: &mut EarlyStopping, values: &[f64]) -> Vec<(bool, u64)> {
    values
        .iter()
        .map(|&v| {
            let d = cb.evaluate(MetricValue::F64(v));
            (d.should_stop, cb.wait_count())
        })
        .collect()
}

/// The index of the first check that asks to stop.
fn stop_index(cb: &mut EarlyStopping, values: &[f64]) -> Option<usize> {
    feed(cb, values).iter().position(|(stop, _)| *stop)
}

#[test]
fn defaults_are_lightnings() {
    let cb = EarlyStopping::new("val_loss").unwrap();
    assert_eq!(cb.monitor(), "val_loss");
    assert_eq!(cb.mode(), Mode::Min);
    assert_eq!(cb.patience(), 3);
    assert_eq!((cb.wait_count(), cb.stopped_epoch()), (0, 0));
    assert_eq!(cb.best_score(), f64::INFINITY);
    assert_eq!(cb.min_delta(), -0.0);
    assert!(cb.strict() && !cb.verbose());
    assert_eq!(
        cb.state_key(),
        "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
    );
    let max = es(b().mode(Mode::Max).min_delta(0.5));
    assert_eq!(max.best_score(), f64::NEG_INFINITY);
    assert_eq!(
        max.state_key(),
        "EarlyStopping{'monitor': 'val_loss', 'mode': 'max'}"
    );
    assert_eq!(es(b().state_key("mine")).state_key(), "mine");
}

#[test]
fn min_delta_is_stored_negated_in_min_mode() {
    assert_eq!(es(b().min_delta(0.25)).min_delta(), -0.25);
    assert_eq!(es(b().min_delta(0.25).mode(Mode::Max)).min_delta(), 0.25);
}

#[test]
fn bad_settings_name_the_argument() {
    let settings = |builder: EarlyStoppingBuilder| match builder.build() {
        Err(Error::Config { settings, message }) => (settings, message),
        other => panic!("{other:?}"),
    };
    let (s, m) = settings(EarlyStopping::builder());
    assert_eq!(s, ["monitor"]);
    assert!(m.contains("`EarlyStopping` needs a `monitor`"), "{m}");
    assert_eq!(settings(b().monitor("")).0, ["monitor"]);
    let (s, m) = settings(b().min_delta(f64::NAN));
    assert_eq!(s, ["min_delta"]);
    assert!(
        m.contains("`min_delta` must be a finite number, got nan"),
        "{m}"
    );
    assert_eq!(settings(b().min_delta(f64::INFINITY)).0, ["min_delta"]);
    assert_eq!(
        settings(b().stopping_threshold(f64::NAN)).0,
        ["stopping_threshold"]
    );
    assert_eq!(
        settings(b().divergence_threshold(f64::NAN)).0,
        ["divergence_threshold"]
    );
    assert_eq!(settings(b().state_key("")).0, ["state_key"]);
    // Every problem at once.
    let (s, _) = settings(
        EarlyStopping::builder()
            .min_delta(f64::NAN)
            .divergence_threshold(f64::NAN),
    );
    assert_eq!(s, ["monitor", "min_delta", "divergence_threshold"]);
}

/// Lightning's `test_early_stopping_patience`: the epoch (= check) at which training stops.
#[test]
fn patience_counts_checks_without_improvement() {
    for (values, patience, stop) in [
        (&[6.0, 5.0, 5.0, 5.0, 5.0, 5.0][..], 3, Some(4)),
        (&[6.0, 5.0, 4.0, 4.0, 3.0, 3.0][..], 1, Some(3)),
        (&[6.0, 5.0, 6.0, 5.0, 5.0, 5.0][..], 3, Some(4)),
        (&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0][..], 1, None),
    ] {
        let mut cb = es(b().patience(patience));
        assert_eq!(stop_index(&mut cb, values), stop, "{values:?} {patience}");
    }
    let mut cb = es(b().patience(3));
    assert_eq!(
        feed(&mut cb, &[6.0, 5.0, 6.0, 4.0, 7.0]),
        [(false, 0), (false, 0), (false, 1), (false, 0), (false, 1)]
    );
    assert_eq!(cb.best_score(), 4.0);
    let mut cb = es(b().patience(0));
    assert_eq!(feed(&mut cb, &[1.0, 1.0]), [(false, 0), (true, 1)]);
}

#[test]
fn an_improvement_of_at_most_min_delta_is_none() {
    // min: 1.0 → 0.95 improves by 0.05 < 0.1: no reset; 0.85 improves by 0.15 on the best (1.0).
    let mut cb = es(b().min_delta(0.1).patience(5));
    assert_eq!(
        feed(&mut cb, &[1.0, 0.95, 0.9, 0.85]),
        [(false, 0), (false, 1), (false, 2), (false, 0)]
    );
    assert_eq!(cb.best_score(), 0.85);
    // max: the same, upwards.
    let mut cb = es(b().mode(Mode::Max).min_delta(0.1).patience(2));
    assert_eq!(
        feed(&mut cb, &[1.0, 1.05, 1.1]),
        [(false, 0), (false, 1), (true, 2)]
    );
    assert_eq!(cb.best_score(), 1.0);
    // Without min_delta, the smallest strict improvement counts, equality does not.
    let mut cb = es(b().mode(Mode::Max));
    assert_eq!(
        feed(&mut cb, &[1.0, 1.0, 1.0000001]),
        [(false, 0), (false, 1), (false, 0)]
    );
}

/// Lightning's `test_early_stopping_thresholds` and the order of the checks.
#[test]
fn thresholds_stop_at_once() {
    for (stopping, divergence, values, stop) in [
        (
            None,
            None,
            &[8.0, 4.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0][..],
            5,
        ),
        (
            Some(2.9),
            None,
            &[9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 4.0, 3.0, 2.0, 1.0][..],
            8,
        ),
        (None, Some(15.9), &[9.0, 4.0, 2.0, 16.0, 32.0, 64.0][..], 3),
    ] {
        let mut builder = b();
        if let Some(t) = stopping {
            builder = builder.stopping_threshold(t);
        }
        if let Some(t) = divergence {
            builder = builder.divergence_threshold(t);
        }
        let mut cb = es(builder);
        assert_eq!(stop_index(&mut cb, values), Some(stop), "{values:?}");
    }
    // Max mode: reaching above the stopping threshold, falling below the divergence threshold.
    let mut cb = es(b().mode(Mode::Max).stopping_threshold(0.9));
    assert_eq!(stop_index(&mut cb, &[0.5, 0.9, 0.95]), Some(2));
    let mut cb = es(b().mode(Mode::Max).divergence_threshold(0.1));
    assert_eq!(stop_index(&mut cb, &[0.5, 0.1, 0.05]), Some(2));
    // The stopping threshold is checked before the divergence threshold.
    let mut cb = es(b().stopping_threshold(1.0).divergence_threshold(-1.0));
    let d = cb.evaluate(MetricValue::F64(-2.0));
    assert!(d.reason.unwrap().starts_with("Stopping threshold reached"));
}

#[test]
fn non_finite_values_stop_with_check_finite_and_count_as_no_improvement_without() {
    for bad in [f64::NAN, f64::INFINITY] {
        let mut cb = es(b());
        assert_eq!(stop_index(&mut cb, &[4.0, 3.0, bad]), Some(2));
        assert_eq!(cb.best_score(), 3.0);
    }
    let mut cb = es(b().check_finite(false).patience(2));
    assert_eq!(
        feed(&mut cb, &[4.0, f64::NAN, 3.0, f64::NAN, f64::NAN]),
        [(false, 0), (false, 1), (false, 0), (false, 1), (true, 2)]
    );
    assert_eq!(cb.best_score(), 3.0);
    // +inf in max mode is an improvement when finiteness is not checked.
    let mut cb = es(b().mode(Mode::Max).check_finite(false));
    assert!(!cb.evaluate(MetricValue::F64(f64::INFINITY)).should_stop);
    assert_eq!(cb.best_score(), f64::INFINITY);
    // The non-finite check comes before the thresholds.
    let mut cb = es(b().divergence_threshold(10.0));
    let reason = cb.evaluate(MetricValue::F64(f64::INFINITY)).reason.unwrap();
    assert!(reason.contains("is not finite"), "{reason}");
}

#[test]
fn reasons_are_lightnings() {
    let reason = |cb: &mut EarlyStopping, v: MetricValue| cb.evaluate(v).reason;
    let mut cb = es(b().patience(2));
    assert_eq!(
        reason(&mut cb, MetricValue::F64(0.579)),
        Some("Metric val_loss improved. New best score: 0.579".into())
    );
    assert_eq!(
        reason(&mut cb, MetricValue::F64(0.456)),
        Some("Metric val_loss improved by 0.123 >= min_delta = 0.0. New best score: 0.456".into())
    );
    assert_eq!(reason(&mut cb, MetricValue::F64(0.5)), None);
    assert_eq!(
        reason(&mut cb, MetricValue::F64(0.5)),
        Some(
            "Monitored metric val_loss did not improve in the last 2 records. Best score: 0.456. \
             Signaling Trainer to stop."
                .into()
        )
    );
    let mut cb = es(b().min_delta(0.01));
    cb.evaluate(MetricValue::F32(2.0));
    assert_eq!(
        reason(&mut cb, MetricValue::F32(1.5)),
        Some("Metric val_loss improved by 0.500 >= min_delta = 0.01. New best score: 1.500".into())
    );
    assert_eq!(
        reason(&mut cb, MetricValue::F32(f32::NAN)),
        Some(
            "Monitored metric val_loss = nan is not finite. Previous best value was 1.500. \
             Signaling Trainer to stop."
                .into()
        )
    );
    let mut cb = es(b().stopping_threshold(0.5));
    assert_eq!(
        reason(&mut cb, MetricValue::F32(0.1)),
        Some("Stopping threshold reached: val_loss = 0.1 < 0.5. Signaling Trainer to stop.".into())
    );
    let mut cb = es(b().mode(Mode::Max).divergence_threshold(1.0));
    assert_eq!(
        reason(&mut cb, MetricValue::Int(0)),
        Some("Divergence threshold reached: val_loss = 0 > 1.0. Signaling Trainer to stop.".into())
    );
    let mut cb = es(b());
    assert_eq!(
        reason(&mut cb, MetricValue::F64(f64::INFINITY)),
        Some(
            "Monitored metric val_loss = inf is not finite. Previous best value was inf. \
             Signaling Trainer to stop."
                .into()
        )
    );
}

/// Lightning's `test_early_stopping_log_info`.
#[test]
fn log_lines_carry_the_rank_with_several_processes() {
    for (rank_zero_only, world, rank, expected) in [
        (false, 1, 0, Some("bar")),
        (false, 2, 0, Some("[rank: 0] bar")),
        (false, 2, 1, Some("[rank: 1] bar")),
        (true, 1, 0, Some("bar")),
        (true, 2, 0, Some("[rank: 0] bar")),
        (true, 2, 1, None),
    ] {
        assert_eq!(
            log_line("bar", rank, world, rank_zero_only).as_deref(),
            expected
        );
    }
}

#[test]
fn the_state_round_trips_and_a_malformed_one_names_the_key() {
    let mut cb = es(b().patience(4));
    feed(&mut cb, &[3.0, 2.0, 2.5]);
    cb.stopped_epoch = 7;
    let state = cb.state_dict().unwrap();
    let mut other = es(b());
    other.load_state_dict(&state).unwrap();
    assert_eq!(
        (
            other.wait_count(),
            other.stopped_epoch(),
            other.best_score(),
            other.patience()
        ),
        (1, 7, 2.0, 4)
    );
    // The fresh callback's infinite best survives too.
    let mut fresh = es(b().mode(Mode::Max));
    fresh
        .load_state_dict(&es(b()).state_dict().unwrap())
        .unwrap();
    assert_eq!(fresh.best_score(), f64::INFINITY);

    let Value::Map(entries) = state else {
        panic!("{state:?}")
    };
    let without = |key: &str| {
        Value::Map(
            entries
                .iter()
                .filter(|(k, _)| k.as_text() != Some(key))
                .cloned()
                .collect(),
        )
    };
    let replaced = |key: &str, v: Value| {
        Value::Map(
            entries
                .iter()
                .map(|(k, old)| {
                    let v = if k.as_text() == Some(key) {
                        v.clone()
                    } else {
                        old.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    };
    let err = |state: Value| es(b()).load_state_dict(&state).unwrap_err().to_string();
    for key in KEYS {
        let e = err(without(key));
        assert!(e.contains(&format!("the key `{key}` is missing")), "{e}");
        assert!(
            e.contains("`EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}` state"),
            "{e}"
        );
    }
    let e = err(replaced("wait_count", Value::from(-1)));
    assert!(
        e.contains("`wait_count` must be a non-negative integer"),
        "{e}"
    );
    let e = err(replaced("best_score", Value::from("low")));
    assert!(e.contains("`best_score` must be a number"), "{e}");
    let e = err(Value::from(3));
    assert!(e.contains("expected a map with `wait_count`"), "{e}");
}

const REGISTRY: &[MetricSpec] = &[
    MetricSpec::train("loss").on_epoch(true),
    MetricSpec::validation("val_loss"),
    MetricSpec::test("test_acc"),
];

/// Runs `hook` on `cb` with `state`, as the trainer would in a single process.
fn call(
    cb: &mut EarlyStopping,
    state: &TrainerState,
    hook: fn(&mut EarlyStopping, &mut CallbackContext<'_>) -> Result<()>,
) -> Result<()> {
    call_in(&crate::strategy::SingleProcess, cb, state, hook)
}

/// [`call`] on one rank of `strategy`'s group.
fn call_in(
    strategy: &dyn Strategy,
    cb: &mut EarlyStopping,
    state: &TrainerState,
    hook: fn(&mut EarlyStopping, &mut CallbackContext<'_>) -> Result<()>,
) -> Result<()> {
    let mut ctx = CallbackContext {
        state,
        sink: &NoSink,
        others: [&[], &[]],
        strategy,
    };
    hook(cb, &mut ctx)
}

/// Rank 0 of two, whose partner's decision to stop is `partner_stops`: a reduction takes the maximum of
/// both ranks' values; it records the operations it was asked for.
struct Partner {
    partner_stops: bool,
    ops: std::cell::RefCell<Vec<ReduceOp>>,
}

impl Strategy for Partner {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        2
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _data: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_reduce(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        self.ops.borrow_mut().push(op);
        let partner = f64::from(u8::from(self.partner_stops));
        for v in values {
            *v = v.max(partner);
        }
        Ok(())
    }
    fn all_reduce_f32(&self, _values: &mut [f32], _op: ReduceOp) -> Result<()> {
        Ok(())
    }
}

fn fitting(interval: ValCheckInterval, every_n: Option<u64>) -> TrainerState {
    TrainerState {
        fn_: TrainerFn::Fitting,
        metric_registry: REGISTRY,
        val_check_interval: Some(interval),
        check_val_every_n_epoch: every_n,
        ..TrainerState::default()
    }
}

/// `setup` for `fit` with [`REGISTRY`] and the given validation schedule, through the trait.
fn setup(cb: &mut EarlyStopping, interval: ValCheckInterval, every_n: Option<u64>) -> Result<()> {
    call(cb, &fitting(interval, every_n), Callback::setup)
}

struct NoSink;

impl super::super::CheckpointSink for NoSink {
    fn checkpoint(
        &self,
        _: bool,
        _: std::collections::BTreeMap<String, Value>,
    ) -> Result<crate::checkpoint::Checkpoint> {
        Err(Error::user("no checkpoints here"))
    }

    fn parameters(&self) -> Vec<super::super::ParameterInfo> {
        Vec::new()
    }
}

#[test]
fn the_check_runs_at_the_train_epoch_end_only_when_validation_runs_once_per_epoch() {
    let whole = ValCheckInterval::Fraction(1.0);
    for (interval, every_n, expected) in [
        (whole, Some(1), true),
        (ValCheckInterval::Fraction(0.5), Some(1), false),
        (ValCheckInterval::Batches(3), Some(1), false),
        (whole, Some(2), false),
        (whole, None, false),
    ] {
        let mut cb = es(b());
        setup(&mut cb, interval, every_n).unwrap();
        assert_eq!(
            cb.check_on_train_epoch_end(),
            expected,
            "{interval:?} {every_n:?}"
        );
    }
    // A setting given wins.
    let mut cb = es(b().check_on_train_epoch_end(true));
    setup(&mut cb, ValCheckInterval::Fraction(0.5), Some(1)).unwrap();
    assert!(cb.check_on_train_epoch_end());
    let mut cb = es(b().check_on_train_epoch_end(false));
    setup(&mut cb, whole, Some(1)).unwrap();
    assert!(!cb.check_on_train_epoch_end());
}

#[test]
fn a_monitor_no_metric_names_fails_setup_when_strict() {
    let whole = ValCheckInterval::Fraction(1.0);
    let e = setup(&mut es(b().monitor("val_los")), whole, Some(1)).unwrap_err();
    assert!(matches!(&e, Error::Config { settings, .. } if settings == &["monitor"]));
    assert_eq!(
        e.to_string(),
        "`EarlyStopping(monitor = \"val_los\")`: `val_los` names no metric the module logs, did you \
         mean `val_loss`? known metrics: `epoch`, `loss`, `loss_epoch`, `loss_step`, `step`, `val_loss`"
    );
    let e = setup(&mut es(b().monitor("test_acc")), whole, Some(1)).unwrap_err();
    assert!(
        e.to_string().contains("is logged only by `test_step`"),
        "{e}"
    );
    for ok in ["val_loss", "loss_epoch", "epoch", "step"] {
        setup(&mut es(b().monitor(ok)), whole, Some(1)).unwrap();
    }
    // Not strict: a warning, and `fit` goes on.
    setup(
        &mut es(b().monitor("val_los").strict(false)),
        whole,
        Some(1),
    )
    .unwrap();
}

#[test]
fn a_check_requests_the_stop_and_records_the_epoch_only_when_fitting_outside_sanity_check_and_fast_dev_run(
) {
    let mut state = fitting(ValCheckInterval::Fraction(1.0), Some(1));
    state.epoch = 4;
    state
        .callback_metrics
        .insert("val_loss".into(), MetricValue::F32(1.0));
    let mut cb = es(b().patience(1));
    call(&mut cb, &state, Callback::setup).unwrap();
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    assert!(!state.should_stop());
    // The check is at the train epoch end here: validation end, sanity checks and `validate` skip.
    call(&mut cb, &state, Callback::on_validation_end).unwrap();
    state.sanity_checking = true;
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    state.sanity_checking = false;
    state.fn_ = TrainerFn::Validating;
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    state.fn_ = TrainerFn::Fitting;
    state.fast_dev_run = true;
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    state.fast_dev_run = false;
    assert_eq!((cb.wait_count(), state.should_stop()), (0, false));
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    assert_eq!((cb.wait_count(), cb.stopped_epoch()), (1, 4));
    assert!(state.should_stop());
}

#[test]
fn a_metric_missing_at_check_time_fails_when_strict_and_is_skipped_otherwise() {
    let mut state = fitting(ValCheckInterval::Fraction(1.0), Some(1));
    state
        .callback_metrics
        .insert("loss".into(), MetricValue::F32(1.0));
    state
        .callback_metrics
        .insert("loss_step".into(), MetricValue::F32(1.0));
    let mut cb = es(b());
    call(&mut cb, &state, Callback::setup).unwrap();
    let e = call(&mut cb, &state, Callback::on_train_epoch_end).unwrap_err();
    assert!(matches!(&e, Error::Config { settings, .. } if settings == &["monitor"]));
    assert_eq!(
        e.to_string(),
        "Early stopping conditioned on metric `val_loss` which is not available. Pass in or modify your \
         `EarlyStopping` callback to use any of the following: `loss`, `loss_step`"
    );
    let mut cb = es(b().strict(false).verbose(true).patience(0));
    call(&mut cb, &state, Callback::on_train_epoch_end).unwrap();
    assert_eq!((cb.wait_count(), state.should_stop()), (0, false));
}

#[test]
fn with_several_processes_every_rank_stops_when_any_decides_to() {
    let mut state = fitting(ValCheckInterval::Fraction(1.0), Some(1));
    state.epoch = 2;
    state
        .callback_metrics
        .insert("val_loss".into(), MetricValue::F64(1.0));
    // This rank improves; its partner asks to stop: both stop.
    let partner = Partner {
        partner_stops: true,
        ops: Default::default(),
    };
    let mut cb = es(b());
    call_in(&partner, &mut cb, &state, Callback::setup).unwrap();
    call_in(&partner, &mut cb, &state, Callback::on_train_epoch_end).unwrap();
    assert_eq!((cb.wait_count(), cb.best_score()), (0, 1.0));
    assert!(state.should_stop());
    assert_eq!(cb.stopped_epoch(), 2);
    assert_eq!(*partner.ops.borrow(), [ReduceOp::Max]);
    // Neither asks: no stop.
    let quiet = Partner {
        partner_stops: false,
        ops: Default::default(),
    };
    let mut state = fitting(ValCheckInterval::Fraction(1.0), Some(1));
    state
        .callback_metrics
        .insert("val_loss".into(), MetricValue::F64(1.0));
    let mut cb = es(b());
    call_in(&quiet, &mut cb, &state, Callback::on_train_epoch_end).unwrap();
    assert!(!state.should_stop());
    assert_eq!(cb.stopped_epoch(), 0);
}

//! The trainer's loops: hook order (guide: Reference, B.6), validation cadence, counters, metrics, logging
//! and setting validation.

use std::sync::{Arc, Mutex};

use fulgur::dfdx::tensor::Cpu;
use fulgur::metrics::MetricValue;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::{bits, listing, weight_bits, WeightBits};

type Events = Arc<Mutex<Vec<String>>>;

/// Records every hook with the counters it saw.
struct Recorder {
    name: &'static str,
    checkpoint: bool,
    events: Events,
}

impl Recorder {
    fn push(&self, hook: &str, ctx: &CallbackContext<'_>) {
        let s = ctx.state();
        let tag = if s.sanity_checking { " sanity" } else { "" };
        self.events.lock().unwrap().push(format!(
            "{}.{hook}(e{} s{}){tag}",
            self.name, s.epoch, s.global_step
        ));
    }
}

impl Callback for Recorder {
    fn state_key(&self) -> String {
        self.name.into()
    }
    fn is_checkpoint(&self) -> bool {
        self.checkpoint
    }
    fn on_fit_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_fit_start", ctx);
        Ok(())
    }
    fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_start", ctx);
        Ok(())
    }
    fn on_train_epoch_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_epoch_start", ctx);
        Ok(())
    }
    fn on_validation_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_validation_start", ctx);
        Ok(())
    }
    fn on_validation_batch_end(
        &mut self,
        ctx: &mut CallbackContext<'_>,
        batch_idx: u64,
    ) -> fulgur::Result<()> {
        self.push(&format!("on_validation_batch_end[{batch_idx}]"), ctx);
        Ok(())
    }
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_batch_end", ctx);
        Ok(())
    }
    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_epoch_end", ctx);
        Ok(())
    }
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_validation_end", ctx);
        Ok(())
    }
    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_end", ctx);
        Ok(())
    }
}

fn module(events: &Events) -> LitMlp<Cpu> {
    let mut m = LitMlp::new(Hparams::default());
    m.events = Some(events.clone());
    m
}

fn base() -> TrainerBuilder<LitMlp<Cpu>, Cpu> {
    Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .limit_train_batches(4u64)
        .limit_val_batches(2u64)
}

fn run(builder: TrainerBuilder<LitMlp<Cpu>, Cpu>, events: &Events) -> Trainer<LitMlp<Cpu>> {
    let (mut train, mut val) = loaders();
    let mut t = builder.build().unwrap();
    t.fit(module(events), &mut train, Some(&mut val), None)
        .unwrap();
    t
}

fn recorder(name: &'static str, checkpoint: bool, events: &Events) -> Recorder {
    Recorder {
        name,
        checkpoint,
        events: events.clone(),
    }
}

#[test]
fn hooks_run_in_lightnings_order() {
    let events = Events::default();
    // The checkpoint-like callback is given first, yet runs after the plain one.
    let b = base()
        .max_epochs(1)
        .enable_checkpointing(true)
        .num_sanity_val_steps(1)
        .val_check_interval(0.5)
        .callback(recorder("ckpt", true, &events))
        .callback(recorder("plain", false, &events));
    run(b, &events);
    let got = events.lock().unwrap().clone();
    let expected = [
        "plain.on_fit_start(e0 s0)",
        "ckpt.on_fit_start(e0 s0)",
        "plain.on_validation_start(e0 s0) sanity",
        "ckpt.on_validation_start(e0 s0) sanity",
        "validation_step",
        "plain.on_validation_batch_end[0](e0 s0) sanity",
        "ckpt.on_validation_batch_end[0](e0 s0) sanity",
        "plain.on_validation_end(e0 s0) sanity",
        "ckpt.on_validation_end(e0 s0) sanity",
        "plain.on_train_start(e0 s0)",
        "ckpt.on_train_start(e0 s0)",
        "plain.on_train_epoch_start(e0 s0)",
        "ckpt.on_train_epoch_start(e0 s0)",
        "training_step",
        "plain.on_train_batch_end(e0 s1)",
        "ckpt.on_train_batch_end(e0 s1)",
        "module.on_train_batch_end",
        "training_step",
        "plain.on_train_batch_end(e0 s2)",
        "ckpt.on_train_batch_end(e0 s2)",
        "module.on_train_batch_end",
        "plain.on_validation_start(e0 s2)",
        "ckpt.on_validation_start(e0 s2)",
        "validation_step",
        "plain.on_validation_batch_end[0](e0 s2)",
        "ckpt.on_validation_batch_end[0](e0 s2)",
        "validation_step",
        "plain.on_validation_batch_end[1](e0 s2)",
        "ckpt.on_validation_batch_end[1](e0 s2)",
        "plain.on_validation_end(e0 s2)",
        "ckpt.on_validation_end(e0 s2)",
        "training_step",
        "plain.on_train_batch_end(e0 s3)",
        "ckpt.on_train_batch_end(e0 s3)",
        "module.on_train_batch_end",
        "training_step",
        "plain.on_train_batch_end(e0 s4)",
        "ckpt.on_train_batch_end(e0 s4)",
        "module.on_train_batch_end",
        "plain.on_validation_start(e0 s4)",
        "ckpt.on_validation_start(e0 s4)",
        "validation_step",
        "plain.on_validation_batch_end[0](e0 s4)",
        "ckpt.on_validation_batch_end[0](e0 s4)",
        "validation_step",
        "plain.on_validation_batch_end[1](e0 s4)",
        "ckpt.on_validation_batch_end[1](e0 s4)",
        "plain.on_validation_end(e0 s4)",
        "ckpt.on_validation_end(e0 s4)",
        "plain.on_train_epoch_end(e0 s4)",
        "module.on_train_epoch_end",
        "ckpt.on_train_epoch_end(e0 s4)",
        "plain.on_train_end(e1 s4)",
        "ckpt.on_train_end(e1 s4)",
    ];
    assert_eq!(got, expected);
}

fn count(events: &Events, what: &str) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with(what))
        .count()
}

#[test]
fn check_val_every_n_epoch_skips_epochs() {
    let events = Events::default();
    let b = base()
        .max_epochs(4)
        .num_sanity_val_steps(0)
        .check_val_every_n_epoch(Some(2))
        .callback(recorder("r", false, &events));
    run(b, &events);
    let vals: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("r.on_validation_end"))
        .cloned()
        .collect();
    assert_eq!(
        vals,
        ["r.on_validation_end(e1 s8)", "r.on_validation_end(e3 s16)"]
    );
}

#[test]
fn val_check_interval_in_batches_across_epochs() {
    let events = Events::default();
    let b = base()
        .max_epochs(3)
        .num_sanity_val_steps(0)
        .val_check_interval(3u64)
        .check_val_every_n_epoch(None)
        .callback(recorder("r", false, &events));
    run(b, &events);
    // 12 batches in all, validation after batches 3, 6, 9 and 12.
    let vals: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("r.on_validation_end"))
        .cloned()
        .collect();
    assert_eq!(
        vals,
        [
            "r.on_validation_end(e0 s3)",
            "r.on_validation_end(e1 s6)",
            "r.on_validation_end(e2 s9)",
            "r.on_validation_end(e2 s12)"
        ]
    );
}

#[test]
fn val_check_interval_larger_than_the_epoch_is_rejected() {
    let (mut train, mut val) = loaders();
    let mut t = base().val_check_interval(5u64).build().unwrap();
    let err = t
        .fit(
            LitMlp::new(Hparams::default()),
            &mut train,
            Some(&mut val),
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("`val_check_interval` (5) must be less than or equal to the number of the training batches (4)"), "{err}");
}

#[test]
fn accumulation_counts_optimizer_steps_and_max_steps_stops_inside_an_epoch() {
    let events = Events::default();
    // 4 batches per epoch, accumulating 3: windows close after batches 3 and 4 → 2 steps per epoch.
    let t = run(
        base()
            .max_epochs(3)
            .accumulate_grad_batches(3)
            .num_sanity_val_steps(0),
        &events,
    );
    assert_eq!((t.global_step(), t.current_epoch()), (6, 3));
    assert_eq!(count(&events, "training_step"), 12);

    let events = Events::default();
    let t = run(base().max_steps(6).num_sanity_val_steps(0), &events);
    assert_eq!(
        (t.global_step(), t.current_epoch(), t.state().batches_done),
        (6, 1, 2)
    );
    assert_eq!(
        count(&events, "module.on_train_epoch_end"),
        2,
        "the epoch-end hooks also run when max_steps stops an epoch early"
    );
}

#[test]
fn metrics_follow_lightnings_names_and_epoch_means() {
    let events = Events::default();
    let t = run(base().max_epochs(1).num_sanity_val_steps(0), &events);
    let m = t.callback_metrics();
    for key in [
        "train_loss",
        "train_loss_step",
        "train_loss_epoch",
        "val_loss",
        "val_acc",
    ] {
        assert!(m.contains_key(key), "missing `{key}` in {m:?}");
    }
    assert_eq!(
        m["train_loss"], m["train_loss_epoch"],
        "after the epoch, the plain name holds the epoch value"
    );
    let candidates = t.state().monitor_candidates();
    assert_eq!(
        (candidates["epoch"], candidates["step"]),
        (MetricValue::Int(1), MetricValue::Int(4))
    );
    assert!(matches!(m["val_acc"], MetricValue::F32(a) if (0.0..=1.0).contains(&a)));
    // The validation mean over 2 batches of 64 equals the trainer's `validate` result.
    let (_, mut val) = loaders();
    let mut t = t;
    let again = t.validate(None, &mut val, None).unwrap();
    assert_eq!(again["val_loss"], t.callback_metrics()["val_loss"]);
}

#[test]
fn sanity_validation_leaves_no_metrics_behind() {
    let events = Events::default();
    let b = base()
        .max_epochs(1)
        .num_sanity_val_steps(2)
        .callback(recorder("r", false, &events));
    run(b, &events);
    assert_eq!(
        count(&events, "r.on_validation_end"),
        2,
        "once sanity, once at the epoch end"
    );
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.ends_with(" sanity")));
}

#[test]
fn a_metric_missing_from_the_registry_stops_fit_with_its_name() {
    let (mut train, mut val) = loaders();
    let mut m = LitMlp::new(Hparams::default());
    m.extra_metric = Some("train_acc");
    let mut t = base().max_epochs(1).build().unwrap();
    let err = t
        .fit(m, &mut train, Some(&mut val), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "metric `train_acc` is not in the module's metric registry for the Train stage (declared: `train_loss`)"
    );
    assert_eq!(t.global_step(), 0, "the step that logged it is not applied");
}

#[test]
fn builder_rejects_invalid_settings_all_at_once() {
    let err = Trainer::<LitMlp<Cpu>>::builder()
        .limit_train_batches(1.5)
        .val_check_interval(0.0)
        .accumulate_grad_batches(0)
        .check_val_every_n_epoch(Some(0))
        .gradient_clip_val(-1.0)
        .build()
        .err()
        .expect("invalid settings")
        .to_string();
    for part in [
        "`limit_train_batches` must be a fraction in [0.0, 1.0] or a number of batches, got 1.5",
        "`val_check_interval` should be a fraction of the training epoch in (0.0, 1.0] or a number of batches, got 0",
        "`accumulate_grad_batches` must be at least 1, got 0",
        "`check_val_every_n_epoch` must be at least 1",
        "`gradient_clip_val` must be a finite number >= 0, got -1",
    ] {
        assert!(err.contains(part), "missing {part:?} in:\n{err}");
    }
}

#[test]
fn csv_logger_writes_metrics_and_hparams_under_the_next_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lightning_logs/version_3")).unwrap();
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .default_root_dir(dir.path())
        .max_epochs(2)
        .limit_train_batches(4u64)
        .log_every_n_steps(2)
        .build()
        .unwrap();
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    let log_dir = dir.path().join("lightning_logs/version_4");
    assert_eq!(t.log_dir().unwrap(), Some(log_dir.clone()));
    let hparams = std::fs::read_to_string(log_dir.join("hparams.yaml")).unwrap();
    assert_eq!(hparams, "lr: 0.01\ninit_seed: 0\nwith_scheduler: false\n");
    let csv = std::fs::read_to_string(log_dir.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,step,train_loss_epoch,train_loss_step,val_acc,val_loss")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // Per epoch: steps 2 and 4 (every 2 batches), the validation row, the training epoch row.
    assert_eq!(rows.len(), 8, "{csv}");
    let steps: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(steps, ["2", "4", "4", "4", "6", "8", "8", "8"]);
    assert!(rows[0][3].parse::<f64>().is_ok() && rows[0][2].is_empty());
}

#[test]
fn test_and_predict_use_the_attached_module() {
    let events = Events::default();
    let mut t = run(base().max_epochs(1).num_sanity_val_steps(0), &events);
    let (_, mut val) = loaders();
    let metrics = t.test(None, &mut val, None).unwrap();
    assert!(metrics.contains_key("test_acc"));
    let preds = t.predict(None, &mut val, None).unwrap();
    assert_eq!(preds.iter().map(Vec::len).sum::<usize>(), 359);
}

#[test]
fn a_failing_callback_stops_fit_and_every_callback_sees_on_exception() {
    struct Fails;
    impl Callback for Fails {
        fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
            if ctx.state().global_step == 3 {
                return Err(fulgur::Error::user("disk on fire"));
            }
            Ok(())
        }
    }
    struct Sees(Events);
    impl Callback for Sees {
        fn on_exception(
            &mut self,
            ctx: &mut CallbackContext<'_>,
            error: &fulgur::Error,
        ) -> fulgur::Result<()> {
            self.0.lock().unwrap().push(format!(
                "on_exception at step {}: {error}",
                ctx.state().global_step
            ));
            Ok(())
        }
    }
    let events = Events::default();
    let (mut train, mut val) = loaders();
    let mut t = base()
        .max_epochs(2)
        .callback(Fails)
        .callback(Sees(events.clone()))
        .build()
        .unwrap();
    let err = t
        .fit(
            LitMlp::new(Hparams::default()),
            &mut train,
            Some(&mut val),
            None,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    assert_eq!(
        *events.lock().unwrap(),
        ["on_exception at step 3: disk on fire"]
    );
    assert!(
        t.module().is_some(),
        "the module stays attached: nothing is lost"
    );
}

/// Records the module's weights each time training starts.
struct WeightsAtTrainStart(Arc<Mutex<Vec<WeightBits>>>);

impl Callback for WeightsAtTrainStart {
    fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let ckpt = ctx.build_checkpoint(true, self)?;
        self.0.lock().unwrap().push(bits(ckpt.state_dict));
        Ok(())
    }
}

#[test]
fn a_second_fit_with_raised_max_epochs_continues_where_the_first_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("all");
    let events = Events::default();
    let weights = Arc::new(Mutex::new(Vec::new()));
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .limit_train_batches(4u64)
        .limit_val_batches(2u64)
        .num_sanity_val_steps(0)
        .max_epochs(2)
        .callback(recorder("rec", false, &events))
        .callback(WeightsAtTrainStart(weights.clone()))
        .callback(
            fulgur::callbacks::ModelCheckpoint::builder()
                .dirpath(&kept)
                .save_top_k(-1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    t.fit(module(&events), &mut train, Some(&mut val), None)
        .unwrap();
    assert_eq!((t.current_epoch(), t.global_step()), (2, 8));
    let trained = weight_bits(t.module().unwrap());

    // Fitting again without raising the limit trains nothing.
    let module_again = t.take_module().unwrap();
    t.fit(module_again, &mut train, Some(&mut val), None)
        .unwrap();
    assert_eq!((t.current_epoch(), t.global_step()), (2, 8));
    assert_eq!(count(&events, "training_step"), 8);

    t.set_max_epochs(Some(4)).unwrap();
    events.lock().unwrap().clear();
    let module_again = t.take_module().unwrap();
    t.fit(module_again, &mut train, Some(&mut val), None)
        .unwrap();
    assert_eq!((t.current_epoch(), t.global_step()), (4, 16));
    let epoch_starts: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("rec.on_train_epoch_start"))
        .cloned()
        .collect();
    assert_eq!(
        epoch_starts,
        [
            "rec.on_train_epoch_start(e2 s8)",
            "rec.on_train_epoch_start(e3 s12)"
        ]
    );
    assert_eq!(count(&events, "training_step"), 8);
    // The second fit trained the module it was given, with the weights the first fit left.
    let weights = weights.lock().unwrap();
    assert_eq!(weights.len(), 3);
    assert!(
        weights[2] == trained,
        "the second fit started from other weights"
    );
    assert!(weight_bits(t.module().unwrap()) != trained);
    // One file per epoch, no `-v1` copies of the epochs trained before.
    assert_eq!(
        listing(&kept),
        [
            "epoch=0-step=4.ckpt",
            "epoch=1-step=8.ckpt",
            "epoch=2-step=12.ckpt",
            "epoch=3-step=16.ckpt"
        ]
    );
}

#[test]
fn a_second_fit_with_raised_max_steps_continues_inside_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .limit_train_batches(4u64)
        .limit_val_batches(2u64)
        .num_sanity_val_steps(0)
        .max_steps(6)
        .callback(recorder("rec", false, &events))
        .build()
        .unwrap();
    t.fit(module(&events), &mut train, Some(&mut val), None)
        .unwrap();
    assert_eq!((t.current_epoch(), t.global_step()), (1, 6));
    let before = t.config().clone();
    let err = t.set_max_steps(Some(0)).unwrap_err().to_string();
    assert!(err.contains("`max_steps` must be at least 1"), "{err}");
    assert_eq!(*t.config(), before, "a refused setting changes nothing");
    t.set_max_steps(Some(10)).unwrap();
    events.lock().unwrap().clear();
    let module_again = t.take_module().unwrap();
    t.fit(module_again, &mut train, Some(&mut val), None)
        .unwrap();
    // Batches 2 and 3 of epoch 1, then batches 0 and 1 of epoch 2.
    assert_eq!((t.current_epoch(), t.global_step()), (2, 10));
    assert_eq!(count(&events, "training_step"), 4);
    assert_eq!(
        t.state().total_batches,
        10,
        "batches 0 and 1 of epoch 1 are not run twice"
    );
    // The default checkpoint callback of the first fit carries on: one file, the latest.
    assert_eq!(
        listing(&dir.path().join("checkpoints")),
        ["epoch=2-step=10.ckpt"]
    );
}

//! Stop requests (Lightning's `trainer.should_stop`) and `min_epochs` / `min_steps`.

use std::sync::{Arc, Mutex};

use fulgur::callbacks::ModelCheckpoint;
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::scripted::at;

type Events = Arc<Mutex<Vec<String>>>;

/// Requests a stop at the end of the batch that reaches `at_step`, and records the hooks it sees.
struct Stopper {
    at_step: u64,
    events: Events,
}

impl Stopper {
    fn push(&self, hook: &str, ctx: &CallbackContext<'_>) {
        let s = ctx.state();
        self.events
            .lock()
            .unwrap()
            .push(format!("{hook}(e{} s{})", s.epoch, s.global_step));
    }
}

impl Callback for Stopper {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        if ctx.state().global_step == self.at_step {
            ctx.request_stop();
            assert!(ctx.state().should_stop());
            self.push("stop", ctx);
        }
        Ok(())
    }
    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_epoch_end", ctx);
        Ok(())
    }
    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.push("on_train_end", ctx);
        Ok(())
    }
}

fn fit(builder: TrainerBuilder<LitMlp<Cpu>, Cpu>, at_step: u64) -> Vec<String> {
    let events = Events::default();
    let (mut train, mut val) = loaders();
    let mut t = builder
        .callback(Stopper {
            at_step,
            events: events.clone(),
        })
        .build()
        .unwrap();
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    let events = events.lock().unwrap().clone();
    events
}

fn quiet() -> TrainerBuilder<LitMlp<Cpu>, Cpu> {
    Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .num_sanity_val_steps(0)
        .max_epochs(5)
        .limit_train_batches(4u64)
        .limit_val_batches(1u64)
}

#[test]
fn a_callback_stop_ends_fit_after_that_batch_and_the_end_of_fit_runs() {
    let dir = tempfile::tempdir().unwrap();
    let events = fit(
        Trainer::builder()
            .default_root_dir(dir.path())
            .num_sanity_val_steps(0)
            .max_epochs(5)
            .limit_train_batches(4u64)
            .limit_val_batches(1u64)
            .log_every_n_steps(1)
            .callback(ModelCheckpoint::builder().save_last(true).build().unwrap()),
        6,
    );
    assert_eq!(
        events,
        [
            "on_train_epoch_end(e0 s4)",
            "stop(e1 s6)",
            "on_train_epoch_end(e1 s6)",
            "on_train_end(e1 s6)"
        ]
    );
    assert_eq!(
        at(&dir
            .path()
            .join("lightning_logs/version_0/checkpoints/last.ckpt")),
        (1, 6)
    );
    let csv =
        std::fs::read_to_string(dir.path().join("lightning_logs/version_0/metrics.csv")).unwrap();
    let last = csv.lines().last().unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "train_loss_epoch")
        .unwrap();
    let row: Vec<&str> = last.split(',').collect();
    assert_eq!((row[0], row[1]), ("1", "6"), "{csv}");
    assert!(row[col].parse::<f64>().is_ok(), "{csv}");
}

#[test]
fn a_stop_at_the_last_batch_ends_after_that_epoch() {
    let events = fit(quiet(), 4);
    assert_eq!(
        events,
        [
            "stop(e0 s4)",
            "on_train_epoch_end(e0 s4)",
            "on_train_end(e1 s4)"
        ]
    );
}

#[test]
fn a_stop_before_min_epochs_is_postponed_to_them() {
    let events = fit(quiet().min_epochs(3), 2);
    assert_eq!(
        events,
        [
            "stop(e0 s2)",
            "on_train_epoch_end(e0 s4)",
            "on_train_epoch_end(e1 s8)",
            "on_train_epoch_end(e2 s12)",
            "on_train_end(e3 s12)"
        ]
    );
}

#[test]
fn a_stop_before_min_steps_is_postponed_to_them() {
    let events = fit(quiet().min_steps(6), 2);
    assert_eq!(
        events,
        [
            "stop(e0 s2)",
            "on_train_epoch_end(e0 s4)",
            "on_train_epoch_end(e1 s6)",
            "on_train_end(e1 s6)"
        ]
    );
}

#[test]
fn min_above_max_is_refused_naming_both() {
    let Err(e) = Trainer::<LitMlp<Cpu>>::builder()
        .max_epochs(2)
        .min_epochs(3)
        .min_steps(5)
        .max_steps(4)
        .build()
    else {
        panic!("min above max accepted")
    };
    let e = e.to_string();
    assert!(
        e.contains("`min_epochs` (3) must not exceed `max_epochs` (2)"),
        "{e}"
    );
    assert!(
        e.contains("`min_steps` (5) must not exceed `max_steps` (4)"),
        "{e}"
    );
}

//! A run stops in the middle of an epoch; a new trainer resumes it from `last.ckpt` and ends with the
//! same weights, bit for bit, as a run that was never interrupted.
//!
//! ```text
//! cargo run --release --example 08-resume-from-last
//! ```
//!
//! The checkpoint callback saves every 40 steps and keeps `last.ckpt` (`save_last`). A callback
//! stands in for a crash at step 100; the newest file then holds step 80, inside epoch 1.
//! `fit(..., Some(CkptPath::Last))` finds the newest `last` checkpoint by the global step stored in
//! the files, restores the weights, the optimizer, the loop position and the callbacks' states, and
//! continues with batch 36 of epoch 1, in the order the first run would have used. The guide's
//! "Resuming training" chapter explains what is restored.

mod common;

use common::{Config, LitClassifier, PrintMetrics};
use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::read_checkpoint;
use fulgur::module::state_dict;
use fulgur::prelude::*;

/// Fails the run at a given step, as a crash or a preemption would.
struct CrashAt(u64);

impl Callback for CrashAt {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        match ctx.state().global_step {
            step if step == self.0 => Err(fulgur::Error::user(format!("crash at step {step}"))),
            _ => Ok(()),
        }
    }
}

/// The same policy for both runs: the resumed trainer finds the files, and the callback's own state,
/// by it. The directory is explicit because each trainer's logger starts a new `version_N`, so the
/// default `<log_dir>/checkpoints` of the second run would not hold the first run's files.
fn policy(root: &std::path::Path) -> fulgur::Result<ModelCheckpoint> {
    ModelCheckpoint::builder()
        .dirpath(root.join("checkpoints"))
        .every_n_train_steps(40)
        .save_last(true)
        .build()
}

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("08-resume-from-last")?;
    let config = Config::new();
    let (mut train, mut val) = common::digits(&config.device())?;
    // A fresh device seeded alike for each run: every module starts from the same weights.
    let fresh = || LitClassifier::from_hparams(config.clone(), &config.device());

    println!("first run: 5 epochs, crashes at step 100");
    let mut first = Trainer::builder()
        .max_epochs(5)
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .callback(CrashAt(100))
        .callback(policy(&root)?)
        .build()?;
    if let Err(e) = first.fit(fresh()?, &mut train, Some(&mut val), None) {
        println!("  fit failed: {e}");
    }
    common::list_checkpoints(&root.join("checkpoints"))?;
    let last = read_checkpoint(root.join("checkpoints/last.ckpt"))?;
    println!(
        "last.ckpt: epoch {}, {} of its batches done, global_step {}",
        last.loops.epoch, last.loops.batches_done, last.global_step
    );

    // Lightning: Trainer(max_epochs=5, callbacks=[...]).fit(model, ckpt_path="last")
    println!("\nsecond run: a new trainer, resumed from \"last\"");
    let mut resumed = Trainer::builder()
        .max_epochs(5)
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .callback(policy(&root)?)
        .build()?;
    resumed.fit(fresh()?, &mut train, Some(&mut val), Some(CkptPath::Last))?;
    println!(
        "  finished at epoch {}, global_step {}",
        resumed.current_epoch(),
        resumed.global_step()
    );

    println!("\nfor comparison: the same 5 epochs without interruption");
    let mut straight = Trainer::builder()
        .max_epochs(5)
        .default_root_dir(root.join("straight"))
        .no_logger()
        .enable_checkpointing(false)
        .build()?;
    straight.fit(fresh()?, &mut train, Some(&mut val), None)?;

    let (Some(a), Some(b)) = (resumed.module(), straight.module()) else {
        return Err(fulgur::Error::user("fit keeps the module attached"));
    };
    let (a, b) = (state_dict(a)?, state_dict(b)?);
    let same = a
        .iter()
        .filter(|(name, t)| b.get(*name) == Some(*t))
        .count();
    println!(
        "  {same} of {} weight tensors identical bit for bit; val_loss {:.6} and {:.6}",
        a.len(),
        resumed.callback_metrics()["val_loss"].as_f64(),
        straight.callback_metrics()["val_loss"].as_f64(),
    );
    common::list_checkpoints(&root.join("checkpoints"))?;
    Ok(())
}

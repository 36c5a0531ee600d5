//! Save whenever a given time has passed since the last save, whatever the step or epoch.
//!
//! ```text
//! cargo run --release --example 04-time-interval
//! ```
//!
//! `train_time_interval(d)` is checked at the end of every training batch: the first batch that ends
//! at least `d` after the previous time-triggered save (or after training began) saves. On a cluster
//! that preempts jobs, `d` would be tens of minutes; this small network trains a batch in well under a
//! millisecond, so the example uses a fraction of a second. Which steps get saved depends on the speed
//! of the machine. With the macros the same policy reads
//! `#[checkpoint(train_time_interval = "25ms", top_k = -1)]`; here it is built at run time.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Batch, Config, Mlp};
use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::read_checkpoint;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;

#[derive(ModuleState)]
struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
impl<D: Backend> LitClassifier<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        common::adam(self.config.lr)
    }

    #[log(train_loss)]
    fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>) -> Loss<D> {
        common::train_loss(&mut self.net, batch, grads)
    }

    #[log(val_loss, val_acc)]
    fn validation_step(&self, batch: Batch<D>) -> (f32, f32) {
        common::evaluate(&self.net, batch)
    }

    /// Stamps every checkpoint with the time it was taken, in the file's `extra` section.
    fn on_save_checkpoint(&self, checkpoint: &mut Checkpoint) {
        let now = micros_since_epoch(SystemTime::now());
        checkpoint.extra.insert("saved_at_us".into(), now.into());
    }
}

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("04-time-interval")?;
    let interval = Duration::from_millis(25);
    let config = Config::new();
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    // Lightning: ModelCheckpoint(train_time_interval=timedelta(milliseconds=25), save_top_k=-1,
    //                            filename="digits-{epoch:02d}-{step:04d}")
    let timed = ModelCheckpoint::builder()
        .dirpath(root.join("timed"))
        .filename("digits-{epoch:02d}-{step:04d}")
        .train_time_interval(interval)
        .save_top_k(-1)
        .build()?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(20)
        .default_root_dir(&root)
        .callback(timed)
        .build()?;
    let started = SystemTime::now();
    trainer.fit(model, &mut train, Some(&mut val), None)?;
    let took = started.elapsed().unwrap_or_default();
    println!(
        "trained {} steps in {:.2} s, saving once at least {} ms have passed",
        trainer.global_step(),
        took.as_secs_f64(),
        interval.as_millis()
    );

    let Some(dir) = trainer.checkpoint_callback().and_then(|c| c.dirpath()) else {
        return Ok(());
    };
    common::list_checkpoints(dir)?;
    // When each file was taken, from the stamp `on_save_checkpoint` put in it.
    let mut saved = Vec::new();
    for file in common::checkpoint_files(dir)? {
        let ckpt = read_checkpoint(&file)?;
        let at = ckpt
            .extra
            .get("saved_at_us")
            .and_then(|v| v.deserialized::<u64>().ok());
        saved.push((ckpt.global_step, at.unwrap_or_default()));
    }
    saved.sort();
    let mut previous = micros_since_epoch(started);
    for (step, at) in saved {
        let what = if previous == micros_since_epoch(started) {
            "fit began"
        } else {
            "the previous save"
        };
        let gap = at.saturating_sub(previous) as f64 / 1000.0;
        println!("  step {step:>3} saved {gap:>5.1} ms after {what}");
        previous = at;
    }
    Ok(())
}

fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

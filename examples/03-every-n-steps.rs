//! Save every 25 optimizer steps and keep every file.
//!
//! ```text
//! cargo run --release --example 03-every-n-steps
//! ```
//!
//! The policy is built at run time with `ModelCheckpoint::builder()` (here the interval could come from
//! the command line), so the module itself declares no `#[checkpoint]`. `every_n_train_steps(25)` saves
//! at the end of a training batch whenever `global_step % 25 == 0`; `save_top_k(-1)` keeps them all,
//! and with nothing monitored, nothing ranks them. The guide's "Checkpointing" chapter, section "When",
//! lists the triggers.

mod common;

use common::{Config, LitClassifier, PrintMetrics};
use fulgur::callbacks::ModelCheckpoint;
use fulgur::prelude::*;

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("03-every-n-steps")?;
    let every: i64 = 25;
    let config = Config::new();
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    // Lightning: ModelCheckpoint(dirpath=..., filename="digits-{step:04d}",
    //                            every_n_train_steps=25, save_top_k=-1)
    let every_n_steps = ModelCheckpoint::builder()
        .dirpath(root.join("steps"))
        .filename("digits-{step:04d}")
        .every_n_train_steps(every)
        .save_top_k(-1)
        .build()?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(3) // 3 × 45 = 135 steps: saves at steps 25, 50, 75, 100 and 125
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .callback(every_n_steps)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    if let Some(ckpt) = trainer.checkpoint_callback() {
        // Without a monitor, the "best" checkpoint is simply the latest one saved.
        if let Some(path) = ckpt.best_model_path() {
            println!("\nbest_model_path (the latest) {}", path.display());
        }
        if let Some(dir) = ckpt.dirpath() {
            common::list_checkpoints(dir)?;
        }
    }
    Ok(())
}

//! Keep the best three checkpoints by validation loss, named after their epoch and loss.
//!
//! ```text
//! cargo run --release --example 02-top-k-val-loss
//! ```
//!
//! The policy is static, so it is declared on the module with `#[checkpoint]`: the macro checks at
//! compile time that `val_loss` is a metric the module logs, and that `{epoch:02d}` and
//! `{val_loss:.3f}` can format those metrics. After each validation the callback saves a checkpoint
//! only when `val_loss` is strictly lower than the worst of the three kept, and then deletes that
//! worst one. The guide's "Checkpointing" chapter, section "Which", explains the rules.

mod common;

use common::{Batch, Config, Mlp, PrintMetrics};
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
// Lightning: ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=3,
//                            filename="digits-{epoch:02d}-{val_loss:.3f}")
#[checkpoint(
    monitor = "val_loss",
    mode = "min",
    top_k = 3,
    filename = "digits-{epoch:02d}-{val_loss:.3f}"
)]
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
}

fn main() -> fulgur::Result<()> {
    // Logs and checkpoints go under this directory, emptied first (see `fresh_dir`).
    let root = common::fresh_dir("02-top-k-val-loss")?;
    // A high learning rate makes the validation loss noisy, so the newest epoch is not always among the
    // best three.
    let config = Config {
        lr: 2e-2,
        ..Config::new()
    };
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(12)
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    // The module's `#[checkpoint]` is the trainer's first (and only) checkpoint callback.
    let Some(ckpt) = trainer.checkpoint_callback() else {
        return Err(fulgur::Error::user(
            "the module declares a checkpoint callback",
        ));
    };
    println!();
    if let (Some(path), Some(score)) = (ckpt.best_model_path(), ckpt.best_model_score()) {
        println!("best_model_path   {}", path.display());
        println!("best_model_score  {score:.4}");
    }
    if let Some(path) = ckpt.kth_best_model_path() {
        println!(
            "kth_best_model    {} ({:.4})",
            path.display(),
            ckpt.kth_value()
        );
    }
    println!("best_k_models, in the order they were saved:");
    for (path, score) in ckpt.best_k_models() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name}  val_loss {score:.4}");
    }
    // The callback's default directory: `<default_root_dir>/lightning_logs/version_0/checkpoints`.
    if let Some(dir) = ckpt.dirpath() {
        println!();
        common::list_checkpoints(dir)?;
    }
    Ok(())
}

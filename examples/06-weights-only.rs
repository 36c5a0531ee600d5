//! Save only the weights of the best model, then rebuild it from the file alone for inference.
//!
//! ```text
//! cargo run --release --example 06-weights-only
//! ```
//!
//! `save_weights_only = true` leaves out the optimizer state and the callbacks' states: the file holds
//! the weights, the hyperparameters and the loop counters. That is all `load_from_checkpoint` needs to
//! rebuild the module, but not enough to resume `fit`, which refuses such a file with a message that
//! says what is missing. The guide's "Checkpointing" chapter, section "What", has the details.

mod common;

use common::{Batch, Config, Mlp, PrintMetrics};
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
// Lightning: ModelCheckpoint(monitor="val_acc", mode="max", save_weights_only=True,
//                            filename="digits-{epoch:02d}-{val_acc:.3f}")
#[checkpoint(
    monitor = "val_acc",
    mode = "max",
    save_weights_only = true,
    filename = "digits-{epoch:02d}-{val_acc:.3f}"
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
    let root = common::fresh_dir("06-weights-only")?;
    let config = Config::new();
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    let model = LitClassifier::from_hparams(config.clone(), &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(10)
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    let Some(best) = trainer
        .checkpoint_callback()
        .and_then(|c| c.best_model_path())
        .map(|p| p.to_path_buf())
    else {
        return Err(fulgur::Error::user("no checkpoint was saved"));
    };
    // A full checkpoint of the final state, to compare.
    let full = root.join("full.ckpt");
    trainer.save_checkpoint(&full, false)?;
    for path in [&best, &full] {
        let ckpt = read_checkpoint(path)?;
        println!(
            "{}: weights_only {}, {} tensors, optimizer state: {}, callback states: {}, {} bytes",
            path.file_name().unwrap_or_default().to_string_lossy(),
            ckpt.weights_only,
            ckpt.state_dict.len(),
            ckpt.optimizer
                .as_ref()
                .map_or("none".to_string(), |o| o.kind.clone()),
            ckpt.callbacks.len(),
            std::fs::metadata(path).map_or(0, |m| m.len()),
        );
    }

    // Inference: rebuild the module from the file alone (hyperparameters, then weights) and evaluate it.
    let restored = LitClassifier::<Cpu>::load_from_checkpoint(&best, &dev)?;
    let metrics =
        Trainer::builder()
            .no_logger()
            .build()?
            .validate(Some(restored), &mut val, None)?;
    println!(
        "reloaded best model: val_loss {:.4}  val_acc {:.3} (the final model: {:.3})",
        metrics["val_loss"].as_f64(),
        metrics["val_acc"].as_f64(),
        trainer.callback_metrics()["val_acc"].as_f64(),
    );

    // Resuming training needs the optimizer state, which the file does not hold: `fit` refuses it
    // before training anything.
    let mut resumer = Trainer::builder()
        .max_epochs(12)
        .default_root_dir(root.join("resume-attempt"))
        .build()?;
    let model = LitClassifier::from_hparams(config, &dev)?;
    let attempt = resumer.fit(
        model,
        &mut train,
        Some(&mut val),
        Some(best.as_path().into()),
    );
    match attempt {
        Err(e) => println!("resuming from it is refused:\n  {e}"),
        Ok(()) => return Err(fulgur::Error::user("fit resumed from a weights-only file")),
    }

    if let Some(dir) = best.parent() {
        common::list_checkpoints(dir)?;
    }
    Ok(())
}

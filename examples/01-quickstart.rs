//! Quickstart: train a small MLP on the handwritten digits, save a checkpoint, reload it alone.
//!
//! ```text
//! cargo run --release --example 01-quickstart
//! ```
//!
//! The module is declared with fulgur's attributes: `#[derive(ModuleState)]` names its parameters and
//! captures its hyperparameters, `#[lightning_module]` writes the `LightningModule` impl from the
//! annotated methods, and `#[log]` declares the metrics each step returns. The guide's "What the macros
//! generate" chapter shows the code they write, and "Getting started" a module written by hand.

use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use serde::{Deserialize, Serialize};

type Mlp = (Linear<64, 64>, ReLU, Linear<64, 10>);

/// Hyperparameters: stored in every checkpoint, enough to rebuild the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Config {
    lr: f64,
    /// Seeds the device whose random generator initialises the weights.
    seed: u64,
}

/// Parameters `net.0.weight`, `net.0.bias`, `net.2.weight`, `net.2.bias`.
#[derive(ModuleState)]
struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
// The best two checkpoints by validation loss, and `last.ckpt` with the latest state.
#[checkpoint(
    monitor = "val_loss",
    top_k = 2,
    filename = "digits-{epoch:02d}-{val_loss:.3f}",
    save_last = true
)]
impl<D: Backend> LitClassifier<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig {
            lr: self.config.lr,
            ..Default::default()
        })
    }

    #[log(train_loss(prog_bar))]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        cross_entropy_with_logits_loss(logits, batch.y)
    }

    #[log(val_loss, val_acc(prog_bar))]
    fn validation_step(&self, batch: ClassificationBatch<64, 10, D>) -> (f32, f32) {
        self.evaluate(batch)
    }

    /// Loss and accuracy of a batch, without a tape.
    fn evaluate(&self, batch: ClassificationBatch<64, 10, D>) -> (f32, f32) {
        let logits = self.net.forward(batch.x);
        let rows = logits.as_vec();
        let correct = rows
            .chunks(10)
            .zip(&batch.labels)
            .filter(|(row, &label)| row.iter().all(|&v| v <= row[label]))
            .count();
        let loss = cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0];
        (loss, correct as f32 / batch.labels.len() as f32)
    }
}

/// Prints the metrics after each validation run.
struct PrintMetrics;

impl Callback for PrintMetrics {
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        if !s.sanity_checking {
            let m = &s.callback_metrics;
            println!(
                "epoch {:>2}  step {:>4}  train_loss {:.4}  val_loss {:.4}  val_acc {:.3}",
                s.epoch,
                s.global_step,
                m["train_loss"].as_f64(),
                m["val_loss"].as_f64(),
                m["val_acc"].as_f64()
            );
        }
        Ok(())
    }
}

fn main() -> fulgur::Result<()> {
    let root = std::env::temp_dir().join("fulgur-quickstart");
    let config = Config { lr: 3e-3, seed: 0 };
    let dev = Cpu::seed_from_u64(config.seed);
    let digits = fulgur::datasets::digits()?;
    let (train, val) = digits.split(0.2, 0)?;
    println!(
        "digits: {} training and {} validation images of 8x8 pixels",
        train.len(),
        val.len()
    );
    let mut train = train.loader(32, true, &dev)?;
    let mut val = val.loader(128, false, &dev)?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(10)
        .default_root_dir(&root)
        .callback(PrintMetrics)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    let path = root.join("quickstart.ckpt");
    trainer.save_checkpoint(&path, false)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "saved {} ({size} bytes, global_step {})",
        path.display(),
        trainer.global_step()
    );
    if let Some(dir) = trainer.log_dir()? {
        println!("logs in {}", dir.display());
    }
    if let Some(cb) = trainer.checkpoint_callback() {
        for (file, score) in cb.best_k_models() {
            println!("top-k checkpoint {} (val_loss {score:.4})", file.display());
        }
        if let Some(best) = cb.best_model_path() {
            println!("best: {}", best.display());
        }
    }

    // Rebuild the module from the file alone: hyperparameters, then weights.
    let restored = LitClassifier::<Cpu>::load_from_checkpoint(&path, &dev)?;
    let mut evaluator = Trainer::builder().no_logger().build()?;
    let metrics = evaluator.validate(Some(restored), &mut val, None)?;
    println!(
        "reloaded model: val_loss {:.4}  val_acc {:.3}",
        metrics["val_loss"].as_f64(),
        metrics["val_acc"].as_f64()
    );
    Ok(())
}

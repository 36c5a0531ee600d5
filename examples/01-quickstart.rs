//! Quickstart: train a small MLP on the handwritten digits, save a checkpoint, reload it alone.
//!
//! ```text
//! cargo run --release --example 01-quickstart
//! ```
//!
//! The module is written by hand here, implementing the runtime's traits directly; the
//! `#[lightning_module]` macro generates the same impls from annotated methods.

use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
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
    seed: u64,
}

struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    config: Config,
}

// Names the parameters `net.0.weight`, `net.0.bias`, `net.2.weight`, `net.2.bias`.
impl<D: Backend> TensorCollection<f32, D> for LitClassifier<D> {
    type To<E2: Dtype, D2: Device<E2>> = ();

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(visitor: &mut V) -> Result<Option<()>, V::Err> {
        visitor.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
    }
}

impl<D: Backend> LitClassifier<D> {
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

impl<D: Backend> ModuleState<D> for LitClassifier<D> {
    type Hparams = Config;

    fn hparams(&self) -> &Config {
        &self.config
    }

    fn from_hparams(config: Config, _device: &D) -> fulgur::Result<Self> {
        let dev =
            D::try_seeded(config.seed).map_err(|e| fulgur::Error::Device(format!("{e:?}")))?;
        Ok(Self {
            net: dev.build_module::<Mlp, f32>(),
            config,
        })
    }
}

impl<D: Backend> LightningModule<D> for LitClassifier<D> {
    type Batch = ClassificationBatch<64, 10, D>;
    type Prediction = ();

    const METRICS: &'static [MetricSpec] = &[
        MetricSpec::train("train_loss").prog_bar(),
        MetricSpec::validation("val_loss"),
        MetricSpec::validation("val_acc").prog_bar(),
    ];

    fn training_step(
        &mut self,
        batch: Self::Batch,
        grads: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<Loss<D>> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        let loss = cross_entropy_with_logits_loss(logits, batch.y);
        log.log("train_loss", loss.as_vec()[0]);
        Ok(loss)
    }

    fn validation_step(&mut self, batch: Self::Batch, log: &mut StepLog) -> fulgur::Result<()> {
        let (loss, acc) = self.evaluate(batch);
        log.log("val_loss", loss);
        log.log("val_acc", acc);
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        Optimizers::new(Adam::new(AdamConfig {
            lr: self.config.lr,
            ..Default::default()
        }))
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

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn main() -> fulgur::Result<()> {
    let root = std::env::temp_dir().join("fulgur-quickstart");
    let dev = Cpu::default();
    let digits = fulgur::datasets::digits()?;
    let (train, val) = digits.split(0.2, 0)?;
    println!(
        "digits: {} training and {} validation images of 8x8 pixels",
        train.len(),
        val.len()
    );
    let mut train = train.loader(32, true, &dev)?;
    let mut val = val.loader(128, false, &dev)?;

    let model = LitClassifier::from_hparams(Config { lr: 3e-3, seed: 0 }, &dev)?;
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

    // Rebuild the module from the file alone: hyperparameters, then weights.
    let restored = LitClassifier::<Cpu>::load_from_checkpoint(&path, &dev)?;
    let mut evaluator = Trainer::builder().no_logger().build()?;
    let metrics = evaluator.validate(Some(restored), &mut val)?;
    println!(
        "reloaded model: val_loss {:.4}  val_acc {:.3}",
        metrics["val_loss"].as_f64(),
        metrics["val_acc"].as_f64()
    );
    Ok(())
}

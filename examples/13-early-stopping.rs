//! Early stopping on the handwritten digits: training ends when the validation loss stops improving,
//! with the learning rate and the metrics written for TensorBoard.
//!
//! ```text
//! cargo run --release --example 13-early-stopping
//! ```
//!
//! `#[early_stopping]` on the module adds an `EarlyStopping` that watches `val_loss` once per epoch
//! (the compiler checks that the module logs it): a value lower than the best so far by more than
//! `min_delta` resets its count, and after `patience` epochs without such an improvement it asks the
//! trainer to stop. A `StepLr` scheduler halves the learning rate every 4 epochs and a
//! `LearningRateMonitor` logs it as `lr-Adam`, next to the module's metrics, through a
//! `TensorBoardLogger`. `seed_everything` fixes the initial weights and the data order (and `split` has
//! its own seed), so every run stops at the same epoch. The guide's chapter "Callbacks, early stopping
//! and logging" explains the rules.

mod common;

use common::{Batch, Config, Mlp};
use fulgur::callbacks::{EarlyStopping, LearningRateMonitor};
use fulgur::dfdx::prelude::*;
use fulgur::logger::TensorBoardLogger;
use fulgur::optim::{Optimizers, StepLr};
use fulgur::prelude::*;

/// The digits classifier of the quickstart, with a learning-rate schedule and early stopping.
#[derive(ModuleState)]
struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
// Lightning: EarlyStopping(monitor="val_loss", min_delta=0.005, patience=3, verbose=True), checked at
// compile time: a `monitor` that no `#[log]` declares does not build.
#[early_stopping(monitor = "val_loss", min_delta = 0.005, patience = 3, verbose = true)]
impl<D: Backend> LitClassifier<D> {
    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        // PyTorch: StepLR(optimizer, step_size=4, gamma=0.5), stepped once per epoch.
        Optimizers::new(common::adam(self.config.lr)).with_scheduler(StepLr::new(4, 0.5))
    }

    #[log(train_loss(on_epoch))]
    fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>) -> Loss<D> {
        common::train_loss(&mut self.net, batch, grads)
    }

    #[log(val_loss, val_acc)]
    fn validation_step(&self, batch: Batch<D>) -> (f32, f32) {
        common::evaluate(&self.net, batch)
    }
}

/// Prints one line per epoch: the rate it trained with, its mean training loss, and the validation
/// metrics that early stopping looks at.
struct PrintEpoch;

impl Callback for PrintEpoch {
    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        let m = |name: &str| {
            s.callback_metrics
                .get(name)
                .map_or(f64::NAN, |v| v.as_f64())
        };
        println!(
            "epoch {:>2}  lr {:.5}  train_loss {:.4}  val_loss {:.4}  val_acc {:.3}",
            s.epoch,
            m("lr-Adam"),
            m("train_loss_epoch"),
            m("val_loss"),
            m("val_acc")
        );
        Ok(())
    }
}

fn main() -> fulgur::Result<()> {
    // Logs and checkpoints go under this directory, emptied first (see `fresh_dir`).
    let root = common::fresh_dir("13-early-stopping")?;
    let config = Config::new();
    // Lightning's `seed_everything(0)`: the data order (every trainer built afterwards) and, through
    // the device's generator, the initial weights.
    fulgur::seed_everything(config.seed);
    let dev: Cpu = fulgur::seeded_device()?;
    let (mut train, mut val) = common::digits(&dev)?;

    let max_epochs = 50;
    let mut trainer = Trainer::builder()
        .max_epochs(max_epochs)
        .default_root_dir(&root)
        .logger(TensorBoardLogger::new(&root))
        .enable_progress_bar(false)
        .enable_model_summary(false)
        // Before the module's `EarlyStopping`: the epoch's line, then the decision about it.
        .callback(PrintEpoch)
        .callback(LearningRateMonitor::new())
        .build()?;
    let model = LitClassifier::from_hparams(config, &dev)?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    // The callback the attribute added, as `fit` left it.
    let Some(early) = trainer.callback::<EarlyStopping>() else {
        return Err(fulgur::Error::user(
            "the trainer has no `EarlyStopping` callback",
        ));
    };
    if early.stopped_epoch() > 0 {
        println!(
            "stopped at epoch {} of {max_epochs}: {} did not improve by more than {} for {} epochs \
             (patience {}); best {} {:.4}",
            early.stopped_epoch(),
            early.monitor(),
            early.min_delta().abs(),
            early.wait_count(),
            early.patience(),
            early.monitor(),
            early.best_score()
        );
    } else {
        println!("trained all {max_epochs} epochs without stopping early");
    }
    if let Some(dir) = trainer.log_dir()? {
        println!("logs in {}", dir.display());
    }
    println!(
        "view them with: tensorboard --logdir {}",
        root.join("lightning_logs").display()
    );
    Ok(())
}

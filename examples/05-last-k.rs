//! Keep only the three newest checkpoints: a top-k where the "best" is the highest step.
//!
//! ```text
//! cargo run --release --example 05-last-k
//! ```
//!
//! Lightning's recipe for "the last k checkpoints" is a top-k on a value that only grows. fulgur
//! offers the global step as the built-in metric `step` (and the epoch as `epoch`), so the module need
//! not log it: monitor `step` in `max` mode and keep `k`. Every save is then better than the oldest
//! kept one, which it replaces. The policy is static, so it is declared with `#[checkpoint]`.

mod common;

use common::{Batch, Config, Mlp};
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
// Lightning: ModelCheckpoint(monitor="step", mode="max", save_top_k=3, every_n_train_steps=20,
//                            filename="digits-{step:04d}")
#[checkpoint(
    monitor = "step",
    mode = "max",
    top_k = 3,
    every_n_train_steps = 20,
    filename = "digits-{step:04d}"
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

/// Prints the files in the checkpoint directory after each epoch's validation: the window slides.
struct ShowFiles;

impl Callback for ShowFiles {
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        // The module's callback has no `dirpath`, so it writes under the logger's directory.
        let Some(dir) = s.log_dir.as_ref().map(|d| d.join("checkpoints")) else {
            return Ok(());
        };
        if s.sanity_checking || !dir.is_dir() {
            return Ok(());
        }
        let files = common::checkpoint_files(&dir)?;
        let names: Vec<_> = files
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        println!("after step {:>3}: {}", s.global_step, names.join("  "));
        Ok(())
    }
}

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("05-last-k")?;
    let config = Config::new();
    let dev = config.device();
    let (mut train, mut val) = common::digits(&dev)?;

    let model = LitClassifier::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(3) // 135 steps: saves at steps 20, 40, …, 120
        .default_root_dir(&root)
        .callback(ShowFiles)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    let Some(ckpt) = trainer.checkpoint_callback() else {
        return Err(fulgur::Error::user(
            "the module declares a checkpoint callback",
        ));
    };
    println!("\nsix saves, the three newest kept; their scores are their steps:");
    for (path, step) in ckpt.best_k_models() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name}  step {step}");
    }
    if let Some(best) = ckpt.best_model_path() {
        println!("best_model_path, the newest: {}", best.display());
    }
    if let Some(dir) = ckpt.dirpath() {
        common::list_checkpoints(dir)?;
    }
    Ok(())
}

//! Two losses and two optimizers in one module: a small GAN under manual optimization, checkpointed,
//! then resumed from `last.ckpt` for more epochs.
//!
//! ```text
//! cargo run --release --example 12-gan
//! ```
//!
//! The generator turns 4 numbers of noise into one number and learns the data's distribution, a
//! normal with mean 4 and standard deviation 1.25; the discriminator learns to tell the data's samples
//! from the generator's. `#[lightning_module(manual_optimization)]` is Lightning's
//! `automatic_optimization = False`: `training_step` receives the optimizers instead of the gradients
//! and takes two backward passes, the discriminator's loss stepping optimizer 1, then the generator's
//! loss stepping optimizer 0. Each `Adam` moves only the parameters its pattern selects
//! (`generator.*`, `discriminator.*`), and the checkpoints hold both optimizers' states, so the second
//! trainer, resumed from `last.ckpt`, continues where the first one stopped. The program prints the
//! generated samples' mean and standard deviation after each run.

mod common;

use std::time::Instant;

use fulgur::data::TensorLoader;
use fulgur::dfdx::prelude::*;
use fulgur::optim::{Adam, ManualOptimization, Optimizers};
use fulgur::prelude::*;

/// The generator's input: numbers drawn from a standard normal.
const NOISE: usize = 4;
/// The distribution the generator learns.
const TARGET_MEAN: f32 = 4.0;
const TARGET_STD: f32 = 1.25;

type Generator = (Linear<NOISE, 32>, Tanh, Linear<32, 1>);
/// Returns a logit: positive means "a sample of the data".
type Discriminator = (Linear<1, 32>, Tanh, Linear<32, 1>);

/// Noise in `x`, a sample of the data in `y`.
type Batch<D> = TensorBatch<Rank1<NOISE>, Rank1<1>, D>;

/// Hyperparameters: stored in every checkpoint, enough to rebuild the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "fulgur::serde")]
struct Config {
    lr_generator: f64,
    lr_discriminator: f64,
    /// Seeds the device whose random generator initialises the weights and draws the data.
    seed: u64,
}

impl Config {
    fn device(&self) -> Cpu {
        Cpu::seed_from_u64(self.seed)
    }
}

/// Parameters `generator.0.weight`, …, `discriminator.2.bias`: the names the optimizers' patterns and
/// the checkpoints use.
#[derive(ModuleState)]
struct LitGan<D: Backend> {
    generator: Built<Generator, D>,
    discriminator: Built<Discriminator, D>,
    #[hparams]
    config: Config,
}

#[lightning_module(manual_optimization)]
#[checkpoint(
    monitor = "g_loss",
    filename = "gan-{epoch:02d}-{g_loss:.3f}",
    save_last = true
)]
impl<D: Backend> LitGan<D> {
    /// Optimizer 0 moves the generator, optimizer 1 the discriminator (β₁ = 0.5, as GANs usually do).
    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        let adam = |lr| {
            Adam::new(AdamConfig {
                lr,
                betas: [0.5, 0.999],
                ..Default::default()
            })
        };
        Optimizers::new(adam(self.config.lr_generator).params("generator.*"))
            .and(adam(self.config.lr_discriminator).params("discriminator.*"))
    }

    /// Lightning's GAN step: `opt.step` is `manual_backward` plus `optimizer.step()`, and every step
    /// computes its gradients afresh (`alloc_grads`), which is Lightning's `zero_grad`.
    #[log(g_loss(prog_bar, on_epoch), d_loss(prog_bar, on_epoch))]
    fn training_step(
        &mut self,
        batch: Batch<D>,
        opt: &mut ManualOptimization<'_, Self, D>,
    ) -> fulgur::Result<(f32, f32)> {
        let (noise, real) = (batch.x, batch.y);
        let ones = real.device().ones_like(&real);
        let zeros = real.device().zeros_like(&real);

        // The discriminator: the data's samples are real (1), the generator's fake (0). The generated
        // samples carry no tape, so this pass leaves the generator's gradients alone; the second pass
        // adds its gradients to the first one's.
        let fake = self.generator.forward(noise.clone());
        let real_logits = self
            .discriminator
            .forward_mut(real.traced(self.alloc_grads()));
        let real_loss = binary_cross_entropy_with_logits_loss(real_logits, ones.clone());
        let real_value = real_loss.as_vec()[0];
        let fake_logits = self
            .discriminator
            .forward_mut(fake.traced(real_loss.backward()));
        let fake_loss = binary_cross_entropy_with_logits_loss(fake_logits, zeros);
        let d_loss = (real_value + fake_loss.as_vec()[0]) / 2.0;
        let mut grads = fake_loss.backward();
        opt.step(1, self, &mut grads)?;

        // The generator: its samples should pass for real. The pass goes through the discriminator,
        // whose gradients optimizer 0 ignores (it selects `generator.*`).
        let fake = self.generator.forward_mut(noise.traced(self.alloc_grads()));
        let g_loss =
            binary_cross_entropy_with_logits_loss(self.discriminator.forward_mut(fake), ones);
        let g_value = g_loss.as_vec()[0];
        let mut grads = g_loss.backward();
        opt.step(0, self, &mut grads)?;

        Ok((g_value, d_loss))
    }
}

/// 4096 pairs of noise and a sample of the data, in shuffled batches of 64.
fn data(config: &Config) -> fulgur::Result<TensorLoader<Rank1<NOISE>, Rank1<1>, Cpu>> {
    let dev = Cpu::seed_from_u64(config.seed + 1);
    let noise: Tensor<Rank2<4096, NOISE>, f32, _> = dev.sample_normal();
    let real: Tensor<Rank2<4096, 1>, f32, _> = dev.sample_normal();
    let real = real * TARGET_STD + TARGET_MEAN;
    TensorData::<Rank1<NOISE>, Rank1<1>>::new(noise.as_vec(), real.as_vec())?.loader(64, true, &dev)
}

/// The mean and standard deviation of 10 000 generated samples, from noise fixed across calls.
fn generated(gan: &LitGan<Cpu>) -> (f32, f32) {
    let dev = Cpu::seed_from_u64(99);
    let noise: Tensor<Rank2<10_000, NOISE>, f32, _> = dev.sample_normal();
    let samples = gan.generator.forward(noise).as_vec();
    let n = samples.len() as f32;
    let mean = samples.iter().sum::<f32>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / n;
    (mean, var.sqrt())
}

fn report(what: &str, trainer: &Trainer<LitGan<Cpu>>) -> fulgur::Result<()> {
    let gan = trainer
        .module()
        .ok_or_else(|| fulgur::Error::user("fit keeps the module attached"))?;
    let (mean, std) = generated(gan);
    let m = |name: &str| trainer.callback_metrics()[name].as_f64();
    println!(
        "{what}: epoch {}, global_step {} (two optimizer steps per batch), g_loss {:.3}, d_loss {:.3}",
        trainer.current_epoch(),
        trainer.global_step(),
        m("g_loss"),
        m("d_loss"),
    );
    println!(
        "  generated: mean {mean:.2}, std {std:.2}    data: mean {TARGET_MEAN:.2}, std {TARGET_STD:.2}"
    );
    Ok(())
}

fn main() -> fulgur::Result<()> {
    let start = Instant::now();
    let root = common::fresh_dir("12-gan")?;
    let config = Config {
        lr_generator: 2e-3,
        lr_discriminator: 2e-3,
        seed: 0,
    };
    let mut train = data(&config)?;
    // The same trainer settings for both runs: without a logger the checkpoints go to
    // `<root>/checkpoints`, where the second run finds `last.ckpt`.
    let trainer = |max_epochs| {
        Trainer::builder()
            .max_epochs(max_epochs)
            .default_root_dir(&root)
            .no_logger()
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .build()
    };
    let fresh = || LitGan::from_hparams(config.clone(), &config.device());

    let untrained = fresh()?;
    let (mean, std) = generated(&untrained);
    println!("untrained: generated mean {mean:.2}, std {std:.2}");

    let mut first = trainer(15)?;
    first.fit(fresh()?, &mut train, None, None)?;
    report("after 15 epochs", &first)?;
    common::list_checkpoints(&root.join("checkpoints"))?;

    // Lightning: Trainer(max_epochs=30).fit(model, ckpt_path="last"). The weights, both optimizers'
    // states and the loop position come from the file.
    let mut resumed = trainer(30)?;
    resumed.fit(fresh()?, &mut train, None, Some(CkptPath::Last))?;
    report("resumed from last.ckpt, after 30 epochs", &resumed)?;
    common::list_checkpoints(&root.join("checkpoints"))?;
    println!("{:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

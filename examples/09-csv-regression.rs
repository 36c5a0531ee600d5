//! A regression model on a CSV file of your own, with your own data loader.
//!
//! ```text
//! cargo run --release --example 09-csv-regression
//! ```
//!
//! The example first writes the file it trains on: 600 hourly readings of a building's electricity use
//! (`kwh`) with the outdoor temperature, the hour of the day and the share of the building in use.
//! The numbers are synthetic (a nonlinear function of the three columns plus noise), so the example
//! needs no download. Then it does what a user with a real file does:
//!
//! 1. reads the CSV into rows, with an error naming the file, line and column of a bad value;
//! 2. standardises the features with statistics of the training rows only;
//! 3. implements `DataLoader` for those rows: a batch by index, in an order fixed by `(seed, epoch)`,
//!    which is all the trainer needs to resume a run in the middle of an epoch;
//! 4. trains a small MLP with the mean squared error, printing `val_loss` after each epoch, keeping the
//!    best two checkpoints by `val_loss` and `last.ckpt`, which ends on the final epoch even when that
//!    epoch is not among the best;
//! 5. reloads the best checkpoint and validates it through `TensorData`, the runtime's in-memory data
//!    set, which does what the hand-written loader does, so most programs need not write one.
//!
//! The CSV is parsed by hand: four numeric columns without quoting need `str::split` and `str::parse`
//! only. A file with quoted fields, embedded commas or many columns is better read with the `csv` crate.

mod common;

use std::path::Path;

use fulgur::data::{permutation, SplitMix64};
use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use serde::{Deserialize, Serialize};

/// Outdoor temperature, hour of day, occupancy.
const FEATURES: usize = 3;

/// A batch: features of shape `(n, 3)`, targets of shape `(n, 1)`. `TensorBatch` is the batch type of
/// `TensorData`; the hand-written loader below produces it too, so that one module trains on either.
type Batch<D> = TensorBatch<Rank1<FEATURES>, Rank1<1>, D>;

type Mlp = (
    Linear<FEATURES, 32>,
    Tanh,
    Linear<32, 32>,
    Tanh,
    Linear<32, 1>,
);

// ---------------------------------------------------------------------------------------------------
// The data file.

/// The building's electricity use without noise: heating below 18 °C and cooling above it (a
/// parabola), a daily cycle peaking in the afternoon, and a part proportional to occupancy.
fn kwh(temp_c: f64, hour: f64, occupancy: f64) -> f64 {
    let climate = 0.012 * (temp_c - 18.0).powi(2);
    let daily = 1.2 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
    4.0 + climate + daily + 3.0 * occupancy
}

/// Writes `rows` readings to `path` as CSV with a header line; each `kwh` value has Gaussian noise of
/// standard deviation 0.3 added, so no model can reach a validation loss below about 0.09.
fn write_csv(path: &Path, rows: usize, seed: u64) -> fulgur::Result<()> {
    let mut rng = SplitMix64::new(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut text = String::from("temp_c,hour,occupancy,kwh\n");
    for _ in 0..rows {
        let temp_c = -5.0 + 40.0 * uniform();
        let hour = (24.0 * uniform()).floor();
        let occupancy = uniform();
        // Box–Muller: a standard normal from two uniforms.
        let noise =
            (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
        let y = kwh(temp_c, hour, occupancy) + 0.3 * noise;
        text += &format!("{temp_c:.1},{hour},{occupancy:.2},{y:.3}\n");
    }
    let io = |source| fulgur::Error::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    std::fs::write(path, text).map_err(io)
}

// ---------------------------------------------------------------------------------------------------
// Reading it.

/// The rows of the file: the first three columns are features, the last the target.
struct Rows {
    features: Vec<[f32; FEATURES]>,
    targets: Vec<f32>,
}

fn read_csv(path: &Path) -> fulgur::Result<Rows> {
    let text = std::fs::read_to_string(path).map_err(|source| fulgur::Error::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    let mut rows = Rows {
        features: Vec::new(),
        targets: Vec::new(),
    };
    // Line 1 is the header.
    for (n, line) in text.lines().enumerate().skip(1) {
        let at = || format!("`{}` line {}", path.display(), n + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != FEATURES + 1 {
            return Err(fulgur::Error::user(format!(
                "{}: expected {} comma-separated values, found {}",
                at(),
                FEATURES + 1,
                fields.len()
            )));
        }
        let mut values = [0.0f32; FEATURES + 1];
        for (column, (field, value)) in fields.iter().zip(&mut values).enumerate() {
            *value = field.parse().map_err(|_| {
                fulgur::Error::user(format!(
                    "{}, column {}: expected a number, found `{field}`",
                    at(),
                    column + 1
                ))
            })?;
        }
        let [temp_c, hour, occupancy, kwh] = values;
        rows.features.push([temp_c, hour, occupancy]);
        rows.targets.push(kwh);
    }
    Ok(rows)
}

/// Rescales each feature to mean 0 and standard deviation 1, with the statistics of `fit_on` (the
/// training rows): the validation rows must not leak into them.
fn standardise(fit_on: &[[f32; FEATURES]], rows: &mut [[f32; FEATURES]]) {
    let n = fit_on.len().max(1) as f32;
    for c in 0..FEATURES {
        let mean = fit_on.iter().map(|r| r[c]).sum::<f32>() / n;
        let var = fit_on.iter().map(|r| (r[c] - mean).powi(2)).sum::<f32>() / n;
        let std = var.sqrt().max(1e-6);
        for r in rows.iter_mut() {
            r[c] = (r[c] - mean) / std;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The loader.

/// Batches of rows in an order fixed by `(seed, epoch)`.
struct CsvLoader<D: Backend> {
    features: Vec<[f32; FEATURES]>,
    targets: Vec<f32>,
    batch_size: usize,
    shuffle: bool,
    device: D,
    /// The rows of the current epoch, in order.
    order: Vec<usize>,
}

impl<D: Backend> CsvLoader<D> {
    fn new(
        features: Vec<[f32; FEATURES]>,
        targets: Vec<f32>,
        batch_size: usize,
        shuffle: bool,
        device: &D,
    ) -> Self {
        let order = (0..targets.len()).collect();
        Self {
            features,
            targets,
            batch_size,
            shuffle,
            device: device.clone(),
            order,
        }
    }
}

impl<D: Backend> DataLoader for CsvLoader<D> {
    type Batch = Batch<D>;

    fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn set_epoch(&mut self, epoch: u64, seed: u64) {
        // A pure function of (seed, epoch): a resumed run sees the same order from its first batch on.
        self.order = if self.shuffle {
            permutation(self.targets.len(), seed, epoch)
        } else {
            (0..self.targets.len()).collect()
        };
    }

    fn batch(&mut self, index: usize) -> fulgur::Result<Batch<D>> {
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        if start >= end {
            return Err(fulgur::Error::user(format!(
                "batch index {index} is out of range: the loader has {} batches",
                self.num_batches()
            )));
        }
        let rows = &self.order[start..end];
        let x: Vec<f32> = rows.iter().flat_map(|&r| self.features[r]).collect();
        let y: Vec<f32> = rows.iter().map(|&r| self.targets[r]).collect();
        let n = rows.len();
        let device_err = |e: D::Err| fulgur::Error::Device(format!("{e:?}"));
        Ok(TensorBatch {
            x: self
                .device
                .try_tensor_from_vec(x, (n, Const::<FEATURES>))
                .map_err(device_err)?,
            y: self
                .device
                .try_tensor_from_vec(y, (n, Const::<1>))
                .map_err(device_err)?,
        })
    }

    fn batch_size(&self, index: usize) -> usize {
        self.order
            .len()
            .saturating_sub(index * self.batch_size)
            .min(self.batch_size)
    }
}

// ---------------------------------------------------------------------------------------------------
// The module.

/// Hyperparameters: stored in every checkpoint, enough to rebuild the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Config {
    lr: f64,
    seed: u64,
}

#[derive(ModuleState)]
struct LitRegressor<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
// The best two checkpoints by validation loss, and `last.ckpt` with the latest state.
#[checkpoint(
    monitor = "val_loss",
    top_k = 2,
    filename = "kwh-{epoch:02d}-{val_loss:.4f}",
    save_last = true
)]
impl<D: Backend> LitRegressor<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig {
            lr: self.config.lr,
            ..Default::default()
        })
    }

    #[log(train_loss)]
    fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>) -> Loss<D> {
        let prediction = self.net.forward_mut(batch.x.traced(grads));
        mse_loss(prediction, batch.y)
    }

    // The epoch's `val_loss` is the mean of the batches' values weighted by their sizes: the mean
    // squared error over the whole validation set.
    #[log(val_loss)]
    fn validation_step(&self, batch: Batch<D>) -> f32 {
        mse_loss(self.net.forward(batch.x), batch.y).as_vec()[0]
    }
}

/// Prints the validation loss after each validation run (not during the sanity check).
struct PrintValLoss;

impl Callback for PrintValLoss {
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        if !s.sanity_checking {
            let val_loss = s
                .callback_metrics
                .get("val_loss")
                .map_or(f64::NAN, |v| v.as_f64());
            println!(
                "epoch {:>2}  step {:>3}  val_loss {val_loss:.4}",
                s.epoch, s.global_step
            );
        }
        Ok(())
    }
}

fn main() -> fulgur::Result<()> {
    let root = common::fresh_dir("09-csv-regression")?;
    let csv = root.join("building-energy.csv");
    write_csv(&csv, 600, 7)?;
    println!("wrote {}", csv.display());

    // The file is in random order: the first 480 rows train, the last 120 validate.
    let Rows { features, targets } = read_csv(&csv)?;
    let n_train = targets.len() * 4 / 5;
    let (mut train_x, mut val_x) = (features[..n_train].to_vec(), features[n_train..].to_vec());
    let (train_y, val_y) = (targets[..n_train].to_vec(), targets[n_train..].to_vec());
    let fit_on = train_x.clone();
    standardise(&fit_on, &mut train_x);
    standardise(&fit_on, &mut val_x);

    // The scale of the loss: predicting the mean of the training targets everywhere.
    let mean = train_y.iter().sum::<f32>() / train_y.len() as f32;
    let baseline = val_y.iter().map(|y| (y - mean).powi(2)).sum::<f32>() / val_y.len() as f32;
    println!(
        "{} training and {} validation rows; predicting the mean gives val_loss {baseline:.4}, \
         the noise alone 0.09",
        train_y.len(),
        val_y.len()
    );

    let config = Config { lr: 2e-2, seed: 0 };
    let dev = Cpu::seed_from_u64(config.seed);
    let mut train = CsvLoader::new(train_x, train_y, 32, true, &dev);
    let mut val = CsvLoader::new(val_x.clone(), val_y.clone(), 64, false, &dev);

    let model = LitRegressor::from_hparams(config, &dev)?;
    let mut trainer = Trainer::builder()
        .max_epochs(30)
        .default_root_dir(&root)
        .enable_progress_bar(false)
        .callback(PrintValLoss)
        .build()?;
    trainer.fit(model, &mut train, Some(&mut val), None)?;

    let Some(ckpt) = trainer.checkpoint_callback() else {
        return Err(fulgur::Error::user(
            "the module declares a checkpoint callback",
        ));
    };
    let (Some(best), Some(score)) = (ckpt.best_model_path(), ckpt.best_model_score()) else {
        return Err(fulgur::Error::user("the callback kept a best checkpoint"));
    };
    let best = best.to_path_buf();
    println!();
    println!("best_model_path   {}", best.display());
    println!("best_model_score  {score:.4}");
    if let Some(dir) = ckpt.dirpath() {
        common::list_checkpoints(dir)?;
    }

    // The same validation rows as a `TensorData`: no loader to write. Row-major features, one target
    // per row; batches of the same size in the same order give the same loss as the loader above.
    let val_data = TensorData::<Rank1<FEATURES>, Rank1<1>>::new(val_x.concat(), val_y)?;
    let mut val_loader = val_data.loader(64, false, &dev)?;
    let restored = LitRegressor::<Cpu>::load_from_checkpoint(&best, &dev)?;
    let mut evaluator = Trainer::builder()
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()?;
    let metrics = evaluator.validate(Some(restored), &mut val_loader, None)?;
    let reloaded = metrics["val_loss"].as_f64();
    println!("best checkpoint reloaded, validated through TensorData: val_loss {reloaded:.4}");
    if (reloaded - score).abs() > 1e-6 * score.abs().max(1.0) {
        return Err(fulgur::Error::user(format!(
            "the reloaded best checkpoint gives val_loss {reloaded}, the callback recorded {score}"
        )));
    }
    Ok(())
}

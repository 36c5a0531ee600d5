//! What the numbered examples share: the data, the network and its loss and accuracy, a line of metrics
//! per validation, and a listing of a checkpoint directory.
//!
//! The examples whose checkpoint policy is built at run time (`ModelCheckpoint::builder()`) share the
//! module `LitClassifier` below; those with a `#[checkpoint]` policy declare their own module, since the
//! policy is part of that declaration, and call into the step bodies here. This file sits in a folder, so
//! cargo does not take it for an example of its own.
// Each example uses part of this file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fulgur::checkpoint::read_checkpoint;
use fulgur::data::ClassificationLoader;
use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use serde::{Deserialize, Serialize};

/// The network: 64 pixels in, 10 class scores out.
pub type Mlp = (Linear<64, 64>, ReLU, Linear<64, 10>);

/// A batch of 8×8 digit images and their labels.
pub type Batch<D> = ClassificationBatch<64, 10, D>;

/// A loader of digit batches on the CPU.
pub type Loader = ClassificationLoader<64, 10, Cpu>;

/// Hyperparameters: stored in every checkpoint, enough to rebuild the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub lr: f64,
    /// Seeds the device whose random generator initialises the weights.
    pub seed: u64,
}

impl Config {
    /// The settings every example trains with.
    pub fn new() -> Self {
        Config { lr: 3e-3, seed: 0 }
    }

    /// A device seeded by `seed`: two modules built on fresh devices start from the same weights.
    pub fn device(&self) -> Cpu {
        Cpu::seed_from_u64(self.seed)
    }
}

/// The handwritten digits: 1438 training images in shuffled batches of 32 (45 steps per epoch) and 359
/// validation images in batches of 128.
pub fn digits(dev: &Cpu) -> fulgur::Result<(Loader, Loader)> {
    let (train, val) = fulgur::datasets::digits()?.split(0.2, 0)?;
    Ok((train.loader(32, true, dev)?, val.loader(128, false, dev)?))
}

pub fn adam<D: Backend>(lr: f64) -> Adam<D> {
    Adam::new(AdamConfig {
        lr,
        ..Default::default()
    })
}

/// The training loss of a batch, traced into `grads`.
pub fn train_loss<D: Backend>(
    net: &mut Built<Mlp, D>,
    batch: Batch<D>,
    grads: Gradients<f32, D>,
) -> Loss<D> {
    let logits = net.forward_mut(batch.x.traced(grads));
    cross_entropy_with_logits_loss(logits, batch.y)
}

/// Loss and accuracy of a batch, without a tape.
pub fn evaluate<D: Backend>(net: &Built<Mlp, D>, batch: Batch<D>) -> (f32, f32) {
    let logits = net.forward(batch.x);
    let rows = logits.as_vec();
    let correct = rows
        .chunks(10)
        .zip(&batch.labels)
        .filter(|(row, &label)| row.iter().all(|&v| v <= row[label]))
        .count();
    let loss = cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0];
    (loss, correct as f32 / batch.labels.len() as f32)
}

/// An empty directory under the system's temporary directory. What an earlier run of the example left
/// there is deleted first: otherwise the new files would get version suffixes (`-v1`) next to the old
/// ones, and the listings would mix the two runs.
pub fn fresh_dir(name: &str) -> fulgur::Result<PathBuf> {
    let dir = std::env::temp_dir().join("fulgur-examples").join(name);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fulgur::Error::Io {
            path: dir,
            op: "delete",
            source: e,
        }),
        _ => Ok(dir),
    }
}

/// The `.ckpt` files in `dir`, sorted by name.
pub fn checkpoint_files(dir: &Path) -> fulgur::Result<Vec<PathBuf>> {
    let io = |source| fulgur::Error::Io {
        path: dir.to_path_buf(),
        op: "list",
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "ckpt"));
    files.sort();
    Ok(files)
}

/// Prints every checkpoint in `dir`, by name, with what the file says about itself.
pub fn list_checkpoints(dir: &Path) -> fulgur::Result<()> {
    let files = checkpoint_files(dir)?;
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let width = files.iter().map(|p| name(p).len()).max().unwrap_or(0);
    println!("{} ({} files):", dir.display(), files.len());
    for path in files {
        let ckpt = read_checkpoint(&path)?;
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        println!(
            "  {:<width$}  epoch {:>2}  global_step {:>3}  {:<12}  {bytes:>6} bytes",
            name(&path),
            ckpt.epoch,
            ckpt.global_step,
            if ckpt.weights_only {
                "weights only"
            } else {
                "full state"
            },
        );
    }
    Ok(())
}

/// Prints the metrics after each validation run (not during the sanity check).
pub struct PrintMetrics;

impl Callback for PrintMetrics {
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        if !s.sanity_checking {
            let m = |name: &str| {
                s.callback_metrics
                    .get(name)
                    .map_or(f64::NAN, |v| v.as_f64())
            };
            println!(
                "epoch {:>2}  step {:>3}  train_loss {:.4}  val_loss {:.4}  val_acc {:.3}",
                s.epoch,
                s.global_step,
                m("train_loss"),
                m("val_loss"),
                m("val_acc")
            );
        }
        Ok(())
    }
}

/// The digits classifier of the quickstart, without a checkpoint policy of its own.
#[derive(ModuleState)]
pub struct LitClassifier<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    config: Config,
}

#[lightning_module]
impl<D: Backend> LitClassifier<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        adam(self.config.lr)
    }

    #[log(train_loss)]
    fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>) -> Loss<D> {
        train_loss(&mut self.net, batch, grads)
    }

    #[log(val_loss, val_acc)]
    fn validation_step(&self, batch: Batch<D>) -> (f32, f32) {
        evaluate(&self.net, batch)
    }
}

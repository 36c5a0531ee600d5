//! What the crash and disk-full tests share: a module whose checkpoints weigh about a megabyte (so that a
//! save takes milliseconds and a kill often lands inside one), random data, the checkpoint callback of
//! both tests, a probe that reports where `fit` started, and readers of a checkpoint directory.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{is_temporary_file, Checkpoint};
use fulgur::data::{ClassificationLoader, SplitMix64};
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;
use serde::{Deserialize, Serialize};

/// 85 002 parameters: 340 KB of weights, about 1 MB per checkpoint with Adam's two moments.
pub type WideNet = (
    Linear<64, 256>,
    ReLU,
    Linear<256, 256>,
    ReLU,
    Linear<256, 10>,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WideHparams {
    pub init_seed: u64,
}

pub struct Wide<D: Backend> {
    pub net: Built<WideNet, D>,
    pub hparams: WideHparams,
}

impl Wide<Cpu> {
    pub fn new() -> Self {
        Self::from_hparams(WideHparams { init_seed: 0 }, &Cpu::default()).unwrap()
    }
}

impl<D: Backend> TensorCollection<f32, D> for Wide<D> {
    type To<E2: Dtype, D2: Device<E2>> = ();

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(visitor: &mut V) -> Result<Option<()>, V::Err> {
        visitor.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
    }
}

impl<D: Backend> ModuleState<D> for Wide<D> {
    type Hparams = WideHparams;

    fn hparams(&self) -> &WideHparams {
        &self.hparams
    }

    fn from_hparams(hparams: WideHparams, _device: &D) -> fulgur::Result<Self> {
        let dev = D::try_seeded(hparams.init_seed)
            .map_err(|e| fulgur::Error::Device(format!("{e:?}")))?;
        Ok(Self {
            net: dev.build_module::<WideNet, f32>(),
            hparams,
        })
    }
}

impl<D: Backend> LightningModule<D> for Wide<D> {
    type Batch = ClassificationBatch<64, 10, D>;
    type Prediction = ();

    const METRICS: &'static [MetricSpec] = &[MetricSpec::train("train_loss")];

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

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        Optimizers::new(Adam::new(AdamConfig {
            lr: 1e-3,
            ..Default::default()
        }))
    }
}

/// 512 samples of uniform noise with random labels, in batches of 32 (16 per epoch): the training loss
/// goes up and down from step to step, so the top-k changes often.
pub fn loader() -> ClassificationLoader<64, 10, Cpu> {
    let mut rng = SplitMix64::new(3);
    let n = 512;
    let features = (0..n * 64)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect();
    let labels = (0..n).map(|_| rng.below(10) as usize).collect();
    ClassificationData::<64, 10>::new(features, labels)
        .unwrap()
        .loader(32, true, &Cpu::default())
        .unwrap()
}

/// The checkpoint callback of both tests: the best two by training loss, `last.ckpt`, every 2 steps.
pub fn checkpoint_callback(dir: &Path) -> ModelCheckpoint {
    ModelCheckpoint::builder()
        .dirpath(dir)
        .monitor("train_loss")
        .save_top_k(2)
        .save_last(true)
        .every_n_train_steps(2)
        .build()
        .unwrap()
}

/// A quiet trainer for [`Wide`] with [`checkpoint_callback`] in `dir` and a [`Probe`].
pub fn trainer(dir: &Path, probe: Probe) -> TrainerBuilder<Wide<Cpu>> {
    Trainer::builder()
        .default_root_dir(dir)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .seed(11)
        .callback(checkpoint_callback(dir))
        .callback(probe)
}

/// The first line a child prints once training runs: `READY step=<global step> from=<file or ->`.
pub const READY: &str = "READY";

/// Where `fit` started: the global step and the checkpoint it resumed from.
pub type Start = Arc<Mutex<Option<(u64, Option<PathBuf>)>>>;

/// Records where training started, at the first `on_train_epoch_start`: after every callback's
/// `setup` and `on_train_start`, so the leftover temporaries and interrupted deletions are dealt with.
#[derive(Default)]
pub struct Probe {
    pub start: Start,
    /// Also print a [`READY`] line (and flush), for a parent process.
    pub announce: bool,
}

impl Callback for Probe {
    fn on_train_epoch_start(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let mut start = self.start.lock().unwrap();
        if start.is_none() {
            let s = ctx.state();
            *start = Some((s.global_step, s.resumed_from.clone()));
            if self.announce {
                let from = s
                    .resumed_from
                    .as_deref()
                    .map_or("-".into(), |p| p.display().to_string());
                let mut out = std::io::stdout().lock();
                // The test harness has printed `test NAME ... ` without a line break.
                let _ = writeln!(out, "\n{READY} step={} from={from}", s.global_step);
                let _ = out.flush();
            }
        }
        Ok(())
    }
}

/// Parses a [`READY`] line.
pub fn parse_ready(line: &str) -> (u64, Option<PathBuf>) {
    let rest = line
        .strip_prefix(READY)
        .and_then(|r| r.strip_prefix(" step="))
        .unwrap_or_else(|| panic!("not a {READY} line: {line:?}"));
    let (step, from) = rest
        .split_once(" from=")
        .unwrap_or_else(|| panic!("not a {READY} line: {line:?}"));
    let step = step.parse().unwrap();
    (step, (from != "-").then(|| PathBuf::from(from)))
}

/// Checkpoint files: `*.ckpt`, temporaries excluded.
pub fn is_checkpoint_name(name: &str) -> bool {
    name.ends_with(".ckpt") && !is_temporary_file(name)
}

/// `last.ckpt`, `last-v1.ckpt`, …
pub fn is_last_name(name: &str) -> bool {
    is_checkpoint_name(name) && name.starts_with("last")
}

/// The PID in a temporary file's name `.NAME.tmp-PID-N`.
pub fn temporary_pid(name: &str) -> Option<u32> {
    if !is_temporary_file(name) {
        return None;
    }
    let (_, suffix) = name.rsplit_once(".tmp-")?;
    suffix.split_once('-')?.0.parse().ok()
}

/// The part of `ModelCheckpoint`'s stored state these tests read.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredBook {
    pub best_k_models: Vec<(PathBuf, f64)>,
    pub last_model_path: Option<PathBuf>,
    #[serde(default)]
    pub pending_deletes: Vec<PathBuf>,
}

/// The state a `ModelCheckpoint` stored in `ckpt`.
pub fn stored_book(ckpt: &Checkpoint) -> StoredBook {
    let mut states = ckpt
        .callbacks
        .iter()
        .filter(|(k, _)| k.starts_with("ModelCheckpoint"));
    let (key, value) = states
        .next()
        .unwrap_or_else(|| panic!("no ModelCheckpoint state in {:?}", ckpt.callbacks.keys()));
    assert!(states.next().is_none(), "two ModelCheckpoint states");
    value
        .deserialized()
        .unwrap_or_else(|e| panic!("the state under `{key}` does not decode: {e}"))
}

/// The file names of `paths`, each asserted to lie directly in `dir`.
pub fn names_in(dir: &Path, paths: impl IntoIterator<Item = PathBuf>) -> BTreeSet<String> {
    paths
        .into_iter()
        .map(|p| {
            assert_eq!(
                p.parent(),
                Some(dir),
                "{} is not in {}",
                p.display(),
                dir.display()
            );
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

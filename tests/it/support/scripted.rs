//! A tiny module whose logged metrics follow a script, and the harness of the scenario tests
//! (guide: Reference, D): `dirpath = D`, no logger, no sanity validation, `N×B` = N epochs of B
//! batches, one validation batch at the end of every epoch unless a scenario says "no val".

use std::path::{Path, PathBuf};

use fulgur::callbacks::{ModelCheckpoint, ModelCheckpointBuilder};
use fulgur::checkpoint::read_checkpoint;
use fulgur::data::DataLoader;
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use fulgur::dfdx::optim::SgdConfig;
use fulgur::dfdx::prelude::*;
use fulgur::metrics::MetricKind;
use fulgur::optim::Sgd;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

/// What the module logs.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Validation metric name and its value per validation run (or per epoch with `val_by_epoch`).
    pub val: Option<(&'static str, Vec<f32>)>,
    pub val_by_epoch: bool,
    /// Training metric name and its value per epoch, logged at every step.
    pub tr: Option<(&'static str, Vec<f32>)>,
    /// Training metric name and its value per global step (index = steps before this one).
    pub per_step: Option<(&'static str, Vec<f32>)>,
    /// `training_step` fails at this global step (steps already taken).
    pub fail_at_step: Option<u64>,
    /// Training metric name and its value per epoch, logged by the module's `on_train_epoch_end`.
    pub epoch_end: Option<(&'static str, Vec<f32>)>,
}

pub struct Scripted<D: Backend> {
    pub net: Built<Linear<1, 1>, D>,
    pub script: Script,
    pub val_runs: usize,
}

impl<D: Backend> TensorCollection<f32, D> for Scripted<D> {
    type To<E2: Dtype, D2: Device<E2>> = ();

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(visitor: &mut V) -> Result<Option<()>, V::Err> {
        visitor.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
    }
}

impl<D: Backend> ModuleState<D> for Scripted<D> {
    type Hparams = ();

    fn hparams(&self) -> &() {
        &()
    }

    fn from_hparams(_: (), device: &D) -> fulgur::Result<Self> {
        Ok(Self {
            net: device.build_module::<Linear<1, 1>, f32>(),
            script: Script::default(),
            val_runs: 0,
        })
    }
}

impl<D: Backend> LightningModule<D> for Scripted<D> {
    type Batch = Tensor<(usize, Const<1>), f32, D>;
    type Prediction = ();

    const METRICS: &'static [MetricSpec] = &[
        MetricSpec::train("tr"),
        MetricSpec::train("foo"),
        MetricSpec::train("train_score"),
        MetricSpec::train("early_stop_on"),
        MetricSpec::validation("val"),
        MetricSpec::validation("auroc"),
        MetricSpec::validation("val_acc"),
        MetricSpec::validation("val_loss"),
        MetricSpec::validation("val/loss"),
        MetricSpec::validation("val_count").kind(MetricKind::Int),
    ];

    fn training_step(
        &mut self,
        x: Self::Batch,
        grads: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<Loss<D>> {
        if self.script.fail_at_step == Some(log.global_step()) {
            return Err(fulgur::Error::user("scripted failure"));
        }
        let loss = self.net.forward_mut(x.traced(grads)).square().mean();
        if let Some((name, per_epoch)) = &self.script.tr {
            log.log(name, per_epoch[log.epoch() as usize]);
        }
        if let Some((name, per_step)) = &self.script.per_step {
            log.log(name, per_step[log.global_step() as usize]);
        }
        Ok(loss)
    }

    fn validation_step(&self, _x: Self::Batch, log: &mut StepLog) -> fulgur::Result<()> {
        if let Some((name, values)) = &self.script.val {
            let i = if self.script.val_by_epoch {
                log.epoch() as usize
            } else {
                self.val_runs
            };
            log.log(name, values[i]);
        }
        Ok(())
    }

    fn on_validation_epoch_end(&mut self, _log: &mut StepLog) -> fulgur::Result<()> {
        self.val_runs += 1;
        Ok(())
    }

    fn on_train_epoch_end(&mut self, log: &mut StepLog) -> fulgur::Result<()> {
        if let Some((name, per_epoch)) = &self.script.epoch_end {
            log.log(name, per_epoch[log.epoch() as usize]);
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        Optimizers::new(Sgd::new(SgdConfig {
            lr: 0.01,
            ..Default::default()
        }))
    }
}

/// `n` batches of one sample.
pub struct Units(pub usize);

impl DataLoader for Units {
    type Batch = Tensor<(usize, Const<1>), f32, Cpu>;

    fn num_batches(&self) -> usize {
        self.0
    }

    fn set_epoch(&mut self, _epoch: u64, _seed: u64) {}

    fn batch(&mut self, _index: usize) -> fulgur::Result<Self::Batch> {
        Ok(Cpu::default().tensor_from_vec(vec![1.0], (1, Const::<1>)))
    }

    fn batch_size(&self, _index: usize) -> usize {
        1
    }
}

pub struct Run {
    pub trainer: Trainer<Scripted<Cpu>>,
    pub dir: tempfile::TempDir,
    pub result: fulgur::Result<()>,
}

pub fn dir_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("D")
}

/// A scenario: `epochs × batches`, validation when `val`, the callback given, trainer settings tweaked.
pub fn scenario(
    cb: ModelCheckpointBuilder,
    epochs: u64,
    batches: usize,
    val: bool,
    script: Script,
    tweak: impl FnOnce(TrainerBuilder<Scripted<Cpu>, Cpu>) -> TrainerBuilder<Scripted<Cpu>, Cpu>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cb = cb.dirpath(dir_of(&dir)).build().unwrap();
    scenario_with(cb, dir, epochs, batches, val, script, tweak)
}

pub fn scenario_with(
    cb: ModelCheckpoint,
    dir: tempfile::TempDir,
    epochs: u64,
    batches: usize,
    val: bool,
    script: Script,
    tweak: impl FnOnce(TrainerBuilder<Scripted<Cpu>, Cpu>) -> TrainerBuilder<Scripted<Cpu>, Cpu>,
) -> Run {
    let builder = Trainer::builder()
        .max_epochs(epochs)
        .no_logger()
        .num_sanity_val_steps(0)
        .default_root_dir(dir.path())
        .callback(cb);
    let mut trainer = tweak(builder).build().unwrap();
    let mut module = Scripted::from_hparams((), &Cpu::default()).unwrap();
    module.script = script;
    let mut train = Units(batches);
    let mut v = Units(1);
    let val_loader: Option<&mut fulgur::trainer::DynLoader<'_, _>> =
        if val { Some(&mut v) } else { None };
    let result = trainer.fit(module, &mut train, val_loader, None);
    Run {
        trainer,
        dir,
        result,
    }
}

impl Run {
    pub fn d(&self) -> PathBuf {
        dir_of(&self.dir)
    }

    pub fn cb(&self) -> &ModelCheckpoint {
        self.trainer
            .checkpoint_callback()
            .expect("a ModelCheckpoint")
    }

    /// [`tree`] of D.
    pub fn files(&self) -> Vec<String> {
        tree(&self.d())
    }

    /// A path inside D.
    pub fn p(&self, name: &str) -> PathBuf {
        self.d().join(name)
    }

    /// `best_model_path` relative to D.
    pub fn best(&self) -> String {
        rel(&self.d(), self.cb().best_model_path())
    }

    pub fn last(&self) -> String {
        rel(&self.d(), self.cb().last_model_path())
    }
}

pub fn rel(d: &Path, p: Option<&Path>) -> String {
    p.map_or(String::new(), |p| {
        p.strip_prefix(d)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    })
}

/// The sorted listing of `d` and its sub-directories (recursively), symlinks as `X -> Y`; empty when
/// `d` does not exist.
pub fn tree(d: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{name} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if meta.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(d, d, &mut out);
    out.sort();
    out
}

/// `(epoch, global_step)` stored inside a checkpoint.
pub fn at(path: &Path) -> (u64, u64) {
    let c = read_checkpoint(path).unwrap();
    (c.epoch, c.global_step)
}

pub fn val(name: &'static str, values: &[f32]) -> Script {
    Script {
        val: Some((name, values.to_vec())),
        ..Default::default()
    }
}

pub fn mc() -> ModelCheckpointBuilder {
    ModelCheckpoint::builder()
}

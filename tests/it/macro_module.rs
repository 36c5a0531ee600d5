//! A module declared with the macros: `#[derive(ModuleState)]`, `#[lightning_module]`, `#[log]` and two
//! `#[checkpoint]` policies, trained on the digits. The hand-written equivalent is `support::mlp`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fulgur::dfdx::prelude::*;
use fulgur::metrics::MetricKind;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::listing;
use crate::support::mlp::{argmax_rows, loaders};

type Mlp = (Linear<64, 32>, ReLU, Linear<32, 10>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Config {
    lr: f64,
}

/// A nested module state: no hyperparameters, built with its parent.
#[derive(ModuleState)]
struct Head<D: Backend> {
    proj: Built<Linear<10, 10>, D>,
}

#[derive(ModuleState)]
struct LitDigits<Dev: Backend> {
    net: Built<Mlp, Dev>,
    head: Head<Dev>,
    #[hparams]
    config: Config,
    /// Training steps taken by this instance: not a parameter, `0` when rebuilt.
    #[skip]
    steps_seen: usize,
    #[skip]
    epochs_ended: usize,
}

#[lightning_module]
#[checkpoint(
    monitor = "val_loss",
    mode = "min",
    top_k = 2,
    filename = "digits-{epoch:02d}-{val_loss:.2f}"
)]
#[checkpoint(every_n_train_steps = 50, top_k = -1, save_last = true)]
impl<Dev: Backend> LitDigits<Dev> {
    fn configure_optimizers(&self) -> Adam<Dev> {
        Adam::new(AdamConfig {
            lr: self.config.lr,
            ..Default::default()
        })
    }

    #[log(train_loss(prog_bar, on_epoch))]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, Dev>,
        grads: Gradients<f32, Dev>,
    ) -> Loss<Dev> {
        self.steps_seen += 1;
        let logits = self
            .head
            .proj
            .forward_mut(self.net.forward_mut(batch.x.traced(grads)));
        cross_entropy_with_logits_loss(logits, batch.y)
    }

    // The evaluation steps take `&self`: a stray `forward_mut` would not compile.
    #[log(val_loss, val_acc(prog_bar), "val/correct"(reduce = "sum"))]
    fn validation_step(&self, batch: ClassificationBatch<64, 10, Dev>) -> (f32, f32, usize) {
        let n = batch.labels.len();
        let (loss, correct) = self.evaluate(batch);
        (loss, correct as f32 / n as f32, correct)
    }

    #[log(test_acc)]
    fn test_step(&self, batch: ClassificationBatch<64, 10, Dev>) -> fulgur::Result<f32> {
        let n = batch.labels.len();
        let (_, correct) = self.evaluate(batch);
        Ok(correct as f32 / n as f32)
    }

    fn predict_step(&self, batch: ClassificationBatch<64, 10, Dev>) -> Vec<usize> {
        let logits = self.head.proj.forward(self.net.forward(batch.x));
        argmax_rows(&logits.as_vec())
    }

    fn on_train_epoch_end(&mut self, _log: &mut StepLog) {
        self.epochs_ended += 1;
    }

    /// Not a step: an ordinary method of the impl.
    fn evaluate(&self, batch: ClassificationBatch<64, 10, Dev>) -> (f32, usize) {
        let logits = self.head.proj.forward(self.net.forward(batch.x));
        let pred = argmax_rows(&logits.as_vec());
        let correct = pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| p == l)
            .count();
        (
            cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0],
            correct,
        )
    }
}

/// A module on a concrete device: no type parameter, the device named in the fields and `grads`.
#[derive(ModuleState)]
struct CpuOnly {
    net: Built<Linear<64, 10>, Cpu>,
}

// `#[checkpoint]` written above `#[lightning_module]` is handed to it.
#[checkpoint(every_n_epochs = 2, save_last = "link")]
#[lightning_module]
#[checkpoint(train_time_interval = "1h30min", filename = "{step:05d}", verbose)]
impl CpuOnly {
    fn configure_optimizers(&self) -> Optimizers<Self, Cpu> {
        Optimizers::new(Adam::new(AdamConfig::default()))
    }

    #[log(loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, Cpu>,
        grads: Gradients<f32, Cpu>,
    ) -> fulgur::Result<Loss<Cpu>> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        Ok(cross_entropy_with_logits_loss(logits, batch.y))
    }

    /// The module's own callbacks come first, then the `#[checkpoint]` ones.
    fn configure_callbacks(&self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }

    /// Returns nothing: logs nothing.
    fn validation_step(&self, _batch: ClassificationBatch<64, 10, Cpu>) {}
}

/// Records `(epoch, val_loss)` after each validation run of `fit`.
struct ValLosses(Arc<Mutex<Vec<(u64, f32)>>>);

impl Callback for ValLosses {
    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let s = ctx.state();
        if !s.sanity_checking {
            let v = s.callback_metrics["val_loss"].as_f64() as f32;
            self.0.lock().unwrap().push((s.epoch, v));
        }
        Ok(())
    }
}

fn weights<M: ModuleState<Cpu>>(m: &M) -> BTreeMap<String, Vec<f32>> {
    fulgur::module::state_dict(m)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.as_f32().unwrap().to_vec()))
        .collect()
}

fn new_module() -> LitDigits<Cpu> {
    LitDigits::from_hparams(Config { lr: 1e-2 }, &Cpu::default()).unwrap()
}

#[test]
fn two_policies_leave_exactly_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mut train, mut val) = loaders();
    let losses = Arc::new(Mutex::new(Vec::new()));
    let mut trainer = Trainer::builder()
        .max_epochs(3)
        .no_logger()
        .num_sanity_val_steps(0)
        .default_root_dir(dir.path())
        .callback(ValLosses(losses.clone()))
        .build()
        .unwrap();
    trainer
        .fit(new_module(), &mut train, Some(&mut val), None)
        .unwrap();
    assert_eq!(trainer.global_step(), 135, "45 batches of 32 per epoch");

    // Policy 1: the two epochs with the lowest `val_loss`, named from the template.
    let mut by_loss = losses.lock().unwrap().clone();
    assert_eq!(by_loss.len(), 3);
    by_loss.sort_by(|a, b| a.1.total_cmp(&b.1));
    let top: Vec<String> = by_loss[..2]
        .iter()
        .map(|(e, v)| format!("digits-epoch={e:02}-val_loss={v:.2}.ckpt"))
        .collect();
    // Policy 2: every 50 steps, all kept, and `last.ckpt`.
    let mut expected = vec![
        "epoch=1-step=50.ckpt".to_string(),
        "epoch=2-step=100.ckpt".to_string(),
        "last.ckpt".to_string(),
    ];
    expected.extend(top.iter().cloned());
    expected.sort();
    let ckpt_dir = dir.path().join("checkpoints");
    assert_eq!(listing(&ckpt_dir), expected);

    let callbacks = trainer.checkpoint_callbacks();
    assert_eq!(
        callbacks.len(),
        2,
        "the two `#[checkpoint]` policies replace the default one"
    );
    let by_monitor = |m: Option<&str>| {
        callbacks
            .iter()
            .find(|c| c.config().monitor.as_deref() == m)
            .unwrap()
    };
    let best = by_monitor(Some("val_loss"));
    assert_eq!(
        best.best_model_path(),
        Some(ckpt_dir.join(&top[0]).as_path())
    );
    assert_eq!(best.best_model_score(), Some(f64::from(by_loss[0].1)));
    let every = by_monitor(None);
    assert_eq!(
        every.best_model_path(),
        Some(ckpt_dir.join("epoch=2-step=100.ckpt").as_path())
    );
    assert_eq!(
        every.last_model_path(),
        Some(ckpt_dir.join("last.ckpt").as_path())
    );

    // `#[skip]` fields live on the trained instance only; the forwarded hook ran once per epoch.
    let trained = trainer.take_module().unwrap();
    assert_eq!((trained.steps_seen, trained.epochs_ended), (135, 3));

    // `load_from_checkpoint` rebuilds from the file alone: hyperparameters, then every weight.
    let last: PathBuf = ckpt_dir.join("last.ckpt");
    let restored = LitDigits::<Cpu>::load_from_checkpoint(&last, &Cpu::default()).unwrap();
    assert_eq!(restored.config, Config { lr: 1e-2 });
    assert_eq!(weights(&restored), weights(&trained));
    assert_eq!((restored.steps_seen, restored.epochs_ended), (0, 0));
}

#[test]
fn the_registry_lists_every_logged_metric() {
    assert_eq!(
        <LitDigits<Cpu> as LightningModule<Cpu>>::METRICS,
        &[
            MetricSpec::train("train_loss").on_epoch(true).prog_bar(),
            MetricSpec::validation("val_loss"),
            MetricSpec::validation("val_acc").prog_bar(),
            MetricSpec::validation("val/correct")
                .reduce(Reduce::Sum)
                .kind(MetricKind::Int),
            MetricSpec::test("test_acc"),
        ]
    );
    assert_eq!(
        <CpuOnly as LightningModule<Cpu>>::METRICS,
        &[MetricSpec::train("loss")]
    );
}

#[test]
fn fields_are_named_and_built_as_declared() {
    let m = new_module();
    let names: Vec<String> = weights(&m).into_keys().collect();
    assert_eq!(
        names,
        [
            "head.proj.bias",
            "head.proj.weight",
            "net.0.bias",
            "net.0.weight",
            "net.2.bias",
            "net.2.weight"
        ]
    );
    assert_eq!((m.steps_seen, m.epochs_ended), (0, 0));
    assert_eq!(m.hparams(), &Config { lr: 1e-2 });
    // A struct without `#[hparams]` has `()` for hyperparameters.
    let head = Head::<Cpu>::from_hparams((), &Cpu::default()).unwrap();
    assert_eq!(weights(&head).len(), 2);
    let cpu_only = CpuOnly::from_hparams((), &Cpu::default()).unwrap();
    let callbacks = LightningModule::configure_callbacks(&cpu_only).unwrap();
    let ckpt = callbacks[0]
        .as_any()
        .downcast_ref::<fulgur::callbacks::ModelCheckpoint>()
        .unwrap();
    assert_eq!(callbacks.len(), 2);
    assert_eq!(ckpt.config().every_n_epochs, 2);
    assert_eq!(ckpt.config().save_last, fulgur::callbacks::SaveLast::Link);
    let timed = callbacks[1]
        .as_any()
        .downcast_ref::<fulgur::callbacks::ModelCheckpoint>()
        .unwrap()
        .config();
    assert_eq!(
        timed.train_time_interval,
        Some(std::time::Duration::from_secs(5400))
    );
    assert_eq!(timed.filename.as_str(), "{step:05d}");
    assert!(timed.verbose);
    assert_eq!(
        weights(&cpu_only).into_keys().collect::<Vec<_>>(),
        ["net.bias", "net.weight"]
    );
}

#[test]
fn steps_test_and_predict_through_the_trainer() {
    let (_, mut val) = loaders();
    let mut trainer = Trainer::builder().no_logger().build().unwrap();
    let metrics = trainer.test(Some(new_module()), &mut val, None).unwrap();
    let acc = metrics["test_acc"].as_f64();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    let metrics = trainer.validate(None, &mut val, None).unwrap();
    assert_eq!(metrics["val/correct"].kind(), MetricKind::Int);
    let predictions = trainer.predict(None, &mut val, None).unwrap();
    let (_, val_set) = fulgur::datasets::digits().unwrap().split(0.2, 7).unwrap();
    assert_eq!(
        predictions.iter().map(Vec::len).sum::<usize>(),
        val_set.len()
    );
}

/// dfdx's own bound on the device, `Device<f32>`, inline: the impls the macros write add `Backend`.
#[derive(ModuleState)]
struct DfdxBound<D: Device<f32>> {
    net: Built<Linear<64, 10>, D>,
}

#[lightning_module]
impl<D: Device<f32>> DfdxBound<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig::default())
    }

    #[log(loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        cross_entropy_with_logits_loss(self.net.forward_mut(batch.x.traced(grads)), batch.y)
    }
}

/// The same bound in `where` clauses.
#[derive(ModuleState)]
struct DfdxWhere<D>
where
    D: Device<f32>,
{
    net: Built<Linear<64, 10>, D>,
}

#[lightning_module]
impl<D> DfdxWhere<D>
where
    D: Device<f32>,
{
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig::default())
    }

    #[log(loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        cross_entropy_with_logits_loss(self.net.forward_mut(batch.x.traced(grads)), batch.y)
    }
}

/// Trains `model` for 5 batches; returns the trainer's step count and the weights before and after.
fn train_briefly<M>(model: M) -> (u64, bool)
where
    M: LightningModule<Cpu, Batch = ClassificationBatch<64, 10, Cpu>>,
{
    let (mut train, _) = loaders();
    let before = weights(&model);
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .limit_train_batches(5u64)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    trainer.fit(model, &mut train, None, None).unwrap();
    let after = weights(&trainer.take_module().unwrap());
    (trainer.global_step(), before != after)
}

#[test]
fn modules_bounded_by_dfdx_device_train() {
    let dev = Cpu::default();
    assert_eq!(
        train_briefly(DfdxBound::from_hparams((), &dev).unwrap()),
        (5, true)
    );
    assert_eq!(
        train_briefly(DfdxWhere::from_hparams((), &dev).unwrap()),
        (5, true)
    );
}

/// Steps and hooks as Lightning writes them: steps take `batch_idx`, in either place around `grads`,
/// and hooks without a `StepLog` return what they log, which a checkpoint can monitor.
#[derive(ModuleState)]
struct LightningStyle<D: Backend> {
    net: Built<Linear<64, 10>, D>,
    #[skip]
    train_indices: Vec<usize>,
    /// `validation_step` takes `&self`: its bookkeeping goes through a cell.
    #[skip]
    val_indices: std::cell::RefCell<Vec<usize>>,
    #[skip]
    val_runs: u64,
    #[skip]
    epochs_ended: u64,
}

#[lightning_module]
#[checkpoint(monitor = "val_runs", mode = "max", filename = "{epoch}-{val_runs}")]
impl<D: Backend> LightningStyle<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig::default())
    }

    #[log(loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        batch_idx: usize,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        self.train_indices.push(batch_idx);
        cross_entropy_with_logits_loss(self.net.forward_mut(batch.x.traced(grads)), batch.y)
    }

    fn validation_step(&self, _batch: ClassificationBatch<64, 10, D>, batch_idx: usize) {
        self.val_indices.borrow_mut().push(batch_idx);
    }

    #[log(test_index(reduce = "max"))]
    fn test_step(&self, _batch: ClassificationBatch<64, 10, D>, batch_idx: usize) -> usize {
        batch_idx
    }

    #[log(val_runs)]
    fn on_validation_epoch_end(&mut self) -> u64 {
        self.val_runs += 1;
        self.val_runs
    }

    #[log(epochs_ended)]
    fn on_train_epoch_end(&mut self, log: &mut StepLog) -> fulgur::Result<u64> {
        self.epochs_ended = log.epoch() + 1;
        Ok(self.epochs_ended)
    }
}

#[test]
fn steps_receive_the_batch_index_and_hooks_log_what_they_return() {
    assert_eq!(
        <LightningStyle<Cpu> as LightningModule<Cpu>>::METRICS,
        &[
            MetricSpec::train("loss"),
            MetricSpec::test("test_index")
                .reduce(Reduce::Max)
                .kind(MetricKind::Int),
            MetricSpec::validation("val_runs").kind(MetricKind::Int),
            MetricSpec::train("epochs_ended")
                .on_step(false)
                .on_epoch(true)
                .kind(MetricKind::Int),
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut train, mut val) = loaders();
    let mut trainer = Trainer::builder()
        .max_epochs(2)
        .limit_train_batches(3u64)
        .limit_val_batches(2u64)
        .num_sanity_val_steps(0)
        .no_logger()
        .default_root_dir(dir.path())
        .build()
        .unwrap();
    let module = LightningStyle::from_hparams((), &Cpu::default()).unwrap();
    trainer
        .fit(module, &mut train, Some(&mut val), None)
        .unwrap();

    // The hooks' values reach `callback_metrics`, and the checkpoint ranks by one of them.
    let metrics = trainer.callback_metrics();
    assert_eq!(metrics["val_runs"].as_f64(), 2.0);
    assert_eq!(metrics["epochs_ended"].as_f64(), 2.0);
    let ckpt = trainer.checkpoint_callback().unwrap();
    let ckpt_dir = dir.path().join("checkpoints");
    assert_eq!(ckpt.best_model_score(), Some(2.0));
    assert_eq!(
        ckpt.best_model_path(),
        Some(ckpt_dir.join("epoch=1-val_runs=2.ckpt").as_path())
    );
    assert_eq!(listing(&ckpt_dir), ["epoch=1-val_runs=2.ckpt"]);

    // The index of each batch, from 0 in every epoch and every validation run.
    let trained = trainer.take_module().unwrap();
    assert_eq!(trained.train_indices, [0, 1, 2, 0, 1, 2]);
    assert_eq!(*trained.val_indices.borrow(), [0, 1, 0, 1]);
    assert_eq!(trained.epochs_ended, 2);

    let mut trainer = Trainer::builder()
        .limit_test_batches(3u64)
        .no_logger()
        .build()
        .unwrap();
    let tested = trainer.test(Some(trained), &mut val, None).unwrap();
    assert_eq!(tested["test_index"].as_f64(), 2.0);
}

/// A module field is decided by what its type is, not by how it is spelled: an alias of `Built`, a dfdx
/// module type written out, a parameterless layer and a nested `ModuleState` struct.
type Backbone<D> = Built<(Linear<64, 32>, ReLU), D>;

#[derive(ModuleState)]
struct AnySpelling<D: Backend> {
    backbone: Backbone<D>,
    act: ReLU,
    out: fulgur::dfdx::nn::modules::Linear<32, 10, f32, D>,
    head: Head<D>,
}

#[test]
fn aliases_and_dfdx_module_types_are_module_fields() {
    let m = AnySpelling::<Cpu>::from_hparams((), &Cpu::default()).unwrap();
    assert_eq!(
        weights(&m).into_keys().collect::<Vec<_>>(),
        [
            "backbone.0.bias",
            "backbone.0.weight",
            "head.proj.bias",
            "head.proj.weight",
            "out.bias",
            "out.weight"
        ]
    );
    let x: Tensor<Rank1<64>, f32, Cpu> = Cpu::default().zeros();
    let y = m
        .head
        .proj
        .forward(m.out.forward(m.act.forward(m.backbone.forward(x))));
    assert_eq!(y.as_vec().len(), 10);
}

type Regularized = (
    Linear<64, 32>,
    BatchNorm1D<32>,
    ReLU,
    Dropout,
    Linear<32, 10>,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RegConfig {
    dropout: f32,
    momentum: f64,
}

/// `#[module_state(build = …)]`: the user's function builds the module from its hyperparameters.
#[derive(ModuleState)]
#[module_state(build = Self::build)]
struct Configured<D: Backend> {
    net: Built<Regularized, D>,
    #[hparams]
    config: RegConfig,
    #[skip]
    built_by_hook: bool,
}

impl<D: Backend> Configured<D> {
    fn build(config: RegConfig, device: &D) -> fulgur::Result<Self> {
        let mut net = device.build_module::<Regularized, f32>();
        net.1.momentum = config.momentum;
        net.3.p = config.dropout;
        Ok(Self {
            net,
            config,
            built_by_hook: true,
        })
    }
}

#[test]
fn the_build_hook_configures_layers_from_the_hyperparameters() {
    let config = RegConfig {
        dropout: 0.25,
        momentum: 0.01,
    };
    let m = Configured::<Cpu>::from_hparams(config.clone(), &Cpu::default()).unwrap();
    assert!(m.built_by_hook);
    assert_eq!((m.net.3.p, m.net.1.momentum), (0.25, 0.01));
    assert_eq!(m.hparams(), &config);
    // The derive still names the parameters (dfdx's scalars too: a checkpoint keeps `p` and `momentum`).
    assert_eq!(
        fulgur::module::state_dict(&m)
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        [
            "net.0.bias",
            "net.0.weight",
            "net.1.bias",
            "net.1.epsilon",
            "net.1.momentum",
            "net.1.running_mean",
            "net.1.running_var",
            "net.1.scale",
            "net.3.p",
            "net.4.bias",
            "net.4.weight"
        ]
    );
}

/// Two parts, each moved by its own optimizer after its own backward pass, declared with
/// `#[lightning_module(manual_optimization)]` (the hand-written equivalent is `manual::LitPair`).
#[derive(ModuleState)]
struct ManualPair<D: Backend> {
    first: Built<Linear<64, 16>, D>,
    second: Built<Linear<16, 10>, D>,
}

#[lightning_module(manual_optimization)]
#[checkpoint(
    monitor = "second_loss",
    filename = "{epoch}-{second_loss:.3f}",
    save_last = true
)]
impl<D: Backend> ManualPair<D> {
    fn configure_optimizers(&self) -> fulgur::optim::Optimizers<Self, D> {
        fulgur::optim::Optimizers::new(Adam::new(AdamConfig::default()).params("first.*"))
            .and(Adam::new(AdamConfig::default()).params("second.*"))
    }

    /// The batch index may come before or after `opt`, as with `grads`.
    #[log(first_loss(prog_bar), second_loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, D>,
        batch_idx: usize,
        opt: &mut fulgur::optim::ManualOptimization<'_, Self, D>,
    ) -> fulgur::Result<(f32, f32)> {
        let mut losses = [0.0; 2];
        for (i, loss) in losses.iter_mut().enumerate() {
            let x = batch.x.clone().traced(self.alloc_grads());
            let out = self.second.forward_mut(self.first.forward_mut(x));
            let ce = cross_entropy_with_logits_loss(out, batch.y.clone());
            *loss = ce.as_vec()[0] + 0.0 * batch_idx as f32;
            opt.step(i, self, &mut ce.backward())?;
        }
        Ok((losses[0], losses[1]))
    }
}

#[test]
fn manual_optimization_steps_each_optimizer_and_logs_train_metrics() {
    type M = ManualPair<Cpu>;
    const { assert!(<M as LightningModule<Cpu>>::MANUAL_OPTIMIZATION) };
    assert_eq!(
        <M as LightningModule<Cpu>>::METRICS,
        &[
            MetricSpec::train("first_loss").prog_bar(),
            MetricSpec::train("second_loss"),
        ]
    );
    let (mut train, _) = loaders();
    let module = M::from_hparams((), &Cpu::default()).unwrap();
    let before = fulgur::module::state_dict(&module).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .limit_train_batches(3u64)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .default_root_dir(dir.path())
        .build()
        .unwrap();
    trainer.fit(module, &mut train, None, None).unwrap();

    // Two optimizer steps per batch, each counted; both parts moved.
    assert_eq!(trainer.global_step(), 6);
    let after = fulgur::module::state_dict(trainer.module().unwrap()).unwrap();
    for name in ["first.weight", "second.weight"] {
        assert_ne!(before[name], after[name], "`{name}` did not move");
    }
    // The manual step's metrics are train metrics: a checkpoint monitors one of them.
    let second = trainer.callback_metrics()["second_loss"].as_f64();
    let ckpt = trainer.checkpoint_callback().unwrap();
    assert_eq!(ckpt.best_model_score(), Some(second));
    let ckpt_dir = dir.path().join("checkpoints");
    assert_eq!(
        listing(&ckpt_dir),
        [
            format!("epoch=0-second_loss={second:.3}.ckpt"),
            "last.ckpt".to_string()
        ]
    );
}

/// A non-generic manual module: the device comes from `opt`'s type, as from `grads`'s otherwise.
#[derive(ModuleState)]
struct ManualOnCpu {
    net: Built<Linear<64, 10>, Cpu>,
}

#[lightning_module(manual_optimization)]
impl ManualOnCpu {
    fn configure_optimizers(&self) -> Adam<Cpu> {
        Adam::new(AdamConfig::default())
    }

    fn training_step(
        &mut self,
        batch: ClassificationBatch<64, 10, Cpu>,
        opt: &mut fulgur::optim::ManualOptimization<'_, Self, Cpu>,
    ) -> fulgur::Result<()> {
        let logits = self.net.forward_mut(batch.x.traced(self.alloc_grads()));
        opt.step(
            0,
            self,
            &mut cross_entropy_with_logits_loss(logits, batch.y).backward(),
        )
    }
}

#[test]
fn a_manual_module_on_a_concrete_device_trains() {
    const { assert!(<ManualOnCpu as LightningModule<Cpu>>::MANUAL_OPTIMIZATION) };
    let (mut train, _) = loaders();
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .limit_train_batches(2u64)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap();
    let module = ManualOnCpu::from_hparams((), &Cpu::default()).unwrap();
    trainer.fit(module, &mut train, None, None).unwrap();
    assert_eq!(trainer.global_step(), 2);
}

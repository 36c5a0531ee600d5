//! Several optimizers and manual optimization: a module with two parts, each moved by its own optimizer
//! after its own backward pass (a GAN's shape), written by hand as the macros would.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{read_checkpoint, write_checkpoint};
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use fulgur::dfdx::optim::{AdamConfig, Momentum, SgdConfig};
use fulgur::dfdx::prelude::*;
use fulgur::optim::{Adam, ManualOptimization, Sgd, StepLr};
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;
use serde::{Deserialize, Serialize};

use crate::support::{bits, listing, WeightBits};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairHparams {
    /// The optimizers each training batch steps, in order, each after a backward pass of its own.
    steps: Vec<usize>,
    /// Step both schedulers after each batch.
    schedule: bool,
    /// What optimizer 0 updates.
    first_params: String,
    /// `configure_optimizers` returns optimizer 0 only.
    one_optimizer: bool,
    /// Optimizer 1 is Adam rather than SGD.
    second_adam: bool,
}

impl Default for PairHparams {
    fn default() -> Self {
        Self {
            steps: vec![0, 1],
            schedule: true,
            first_params: "a.*".into(),
            one_optimizer: false,
            second_adam: false,
        }
    }
}

/// `b(a(x))`; optimizer 0 (Adam) moves `a`, optimizer 1 (SGD with momentum) moves `b`. `MANUAL` is its
/// `MANUAL_OPTIMIZATION`.
struct LitPair<D: Backend, const MANUAL: bool = true> {
    a: Built<Linear<2, 3>, D>,
    b: Built<Linear<3, 1>, D>,
    hparams: PairHparams,
}

impl<D: Backend, const MANUAL: bool> TensorCollection<f32, D> for LitPair<D, MANUAL> {
    type To<E2: Dtype, D2: Device<E2>> = ();

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(v: &mut V) -> Result<Option<()>, V::Err> {
        v.visit_fields(
            (
                Self::module("a", |s| &s.a, |s| &mut s.a),
                Self::module("b", |s| &s.b, |s| &mut s.b),
            ),
            |_| (),
        )
    }
}

impl<D: Backend, const MANUAL: bool> ModuleState<D> for LitPair<D, MANUAL> {
    type Hparams = PairHparams;

    fn hparams(&self) -> &PairHparams {
        &self.hparams
    }

    fn from_hparams(hparams: PairHparams, _: &D) -> fulgur::Result<Self> {
        let dev = D::try_seeded(7).map_err(|e| fulgur::Error::Device(format!("{e:?}")))?;
        Ok(Self {
            a: dev.build_module::<Linear<2, 3>, f32>(),
            b: dev.build_module::<Linear<3, 1>, f32>(),
            hparams,
        })
    }
}

type Batch<D> = TensorBatch<Rank1<2>, Rank1<1>, D>;

impl<D: Backend, const MANUAL: bool> LightningModule<D> for LitPair<D, MANUAL> {
    type Batch = Batch<D>;
    type Prediction = ();

    const METRICS: &'static [MetricSpec] = &[MetricSpec::train("loss")];
    const MANUAL_OPTIMIZATION: bool = MANUAL;

    fn training_step(
        &mut self,
        batch: Batch<D>,
        grads: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<Loss<D>> {
        let loss = mse_loss(
            self.b
                .forward_mut(self.a.forward_mut(batch.x.traced(grads))),
            batch.y,
        );
        log.log("loss", loss.as_vec()[0]);
        Ok(loss)
    }

    fn manual_training_step(
        &mut self,
        batch: Batch<D>,
        opt: &mut ManualOptimization<'_, Self, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<()> {
        for &i in &self.hparams.steps.clone() {
            let grads = self
                .try_alloc_grads()
                .map_err(|e| fulgur::Error::Device(format!("{e:?}")))?;
            let x = batch.x.clone().traced(grads);
            let loss = mse_loss(self.b.forward_mut(self.a.forward_mut(x)), batch.y.clone());
            log.log("loss", loss.as_vec()[0]);
            let mut grads = loss.backward();
            opt.step(i, self, &mut grads)?;
        }
        if self.hparams.schedule {
            for i in 0..opt.len() {
                opt.scheduler_step(i)?;
            }
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        let first = Optimizers::new(
            Adam::new(AdamConfig {
                lr: 1e-2,
                ..Default::default()
            })
            .params(&self.hparams.first_params),
        )
        .with_scheduler(StepLr::new(2, 0.5));
        if self.hparams.one_optimizer {
            return first;
        }
        let sgd = SgdConfig {
            lr: 5e-2,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay: None,
        };
        if self.hparams.second_adam {
            first.and(Adam::new(AdamConfig::default()).params("b.*"))
        } else {
            first.and(Sgd::new(sgd).params("b.*"))
        }
        .with_scheduler(StepLr::new(3, 0.1))
    }
}

fn pair<const MANUAL: bool>(hparams: PairHparams) -> LitPair<Cpu, MANUAL> {
    LitPair::from_hparams(hparams, &Cpu::default()).unwrap()
}

/// 20 points of `y = x0 - 2 x1` in 5 shuffled batches of 4.
fn loader() -> fulgur::data::TensorLoader<Rank1<2>, Rank1<1>, Cpu> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let (p, q) = ((i % 5) as f32 / 5.0, (i / 5) as f32 / 4.0);
        x.extend([p, q]);
        y.push(p - 2.0 * q);
    }
    TensorData::<Rank1<2>, Rank1<1>>::new(x, y)
        .unwrap()
        .loader(4, true, &Cpu::default())
        .unwrap()
}

fn quiet(dir: &Path) -> TrainerBuilder<LitPair<Cpu>> {
    quiet_as(dir)
}

fn quiet_as<const MANUAL: bool>(dir: &Path) -> TrainerBuilder<LitPair<Cpu, MANUAL>> {
    Trainer::builder()
        .default_root_dir(dir)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .seed(3)
}

fn weights<const MANUAL: bool>(m: &LitPair<Cpu, MANUAL>) -> WeightBits {
    bits(fulgur::module::state_dict(m).unwrap())
}

fn fit<const MANUAL: bool>(
    builder: TrainerBuilder<LitPair<Cpu, MANUAL>>,
    hparams: PairHparams,
    ckpt_path: Option<CkptPath>,
) -> (Trainer<LitPair<Cpu, MANUAL>>, fulgur::Result<()>) {
    let mut trainer = builder.build().unwrap();
    let result = trainer.fit(pair(hparams), &mut loader(), None, ckpt_path);
    (trainer, result)
}

/// The names of the parameters optimizer `i` holds state for, and its step count.
fn state_of(t: &Trainer<LitPair<Cpu>>, i: usize) -> (Vec<String>, u64) {
    let state = t
        .optimizers()
        .unwrap()
        .optimizer(i)
        .unwrap()
        .state_dict()
        .unwrap();
    (state.params.keys().cloned().collect(), state.step)
}

#[test]
fn two_optimizers_each_move_their_own_parameters_and_every_step_counts() {
    let dir = tempfile::tempdir().unwrap();
    let before = weights(&pair::<true>(PairHparams::default()));
    let (t, result) = fit(
        quiet(dir.path()).max_epochs(2),
        PairHparams::default(),
        None,
    );
    result.unwrap();
    assert_eq!(t.global_step(), 2 * 5 * 2, "two optimizer steps per batch");
    assert_eq!(
        state_of(&t, 0),
        (vec!["a.bias".into(), "a.weight".into()], 10)
    );
    assert_eq!(
        state_of(&t, 1),
        (vec!["b.bias".into(), "b.weight".into()], 10)
    );
    let after = weights(t.module().unwrap());
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "every tensor moved"
    );

    // Only optimizer 0 steps: `b` is not touched, and optimizer 1 holds no state.
    let only_first = PairHparams {
        steps: vec![0],
        ..Default::default()
    };
    let (t, result) = fit(quiet(dir.path()).max_epochs(1), only_first, None);
    result.unwrap();
    assert_eq!(t.global_step(), 5);
    let after = weights(t.module().unwrap());
    let moved: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(moved, ["a.bias", "a.weight"]);
    assert_eq!(state_of(&t, 1), (vec![], 0));
}

#[test]
fn max_steps_counts_every_optimizer_step() {
    let dir = tempfile::tempdir().unwrap();
    let (t, result) = fit(quiet(dir.path()).max_steps(6), PairHparams::default(), None);
    result.unwrap();
    assert_eq!(t.global_step(), 6);
    assert_eq!((t.current_epoch(), t.state().batches_done), (0, 3));
}

#[test]
fn schedulers_move_only_when_the_training_step_steps_them() {
    let dir = tempfile::tempdir().unwrap();
    let lrs = |t: &Trainer<LitPair<Cpu>>| {
        let o = t.optimizers().unwrap();
        (o.optimizer(0).unwrap().lr(), o.optimizer(1).unwrap().lr())
    };
    let still = PairHparams {
        schedule: false,
        ..Default::default()
    };
    // Epoch-interval schedulers, two epochs: automatic optimization would have stepped them twice.
    let (t, result) = fit(quiet(dir.path()).max_epochs(2), still, None);
    result.unwrap();
    assert_eq!(lrs(&t), (1e-2, 5e-2));

    // Stepped after each of the 10 batches: 5 halvings of the first, 3 tenths of the second.
    let (t, result) = fit(
        quiet(dir.path()).max_epochs(2),
        PairHparams::default(),
        None,
    );
    result.unwrap();
    let (first, second) = lrs(&t);
    assert_eq!(first, 1e-2 * 0.5f64.powi(5));
    assert!((second - 5e-2 * 0.1f64.powi(3)).abs() < 1e-15, "{second}");
}

#[test]
fn resuming_inside_an_epoch_equals_the_run_that_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, result) = fit(
        quiet(dir.path()).max_epochs(2),
        PairHparams::default(),
        None,
    );
    result.unwrap();

    // Stopped after batch 3 of epoch 1 (step 16), saved, resumed by a fresh trainer and module.
    let (stopped, result) = fit(
        quiet(dir.path()).max_steps(16),
        PairHparams::default(),
        None,
    );
    result.unwrap();
    assert_eq!(
        (stopped.current_epoch(), stopped.state().batches_done),
        (1, 3)
    );
    let path = dir.path().join("inside.ckpt");
    stopped.save_checkpoint(&path, false).unwrap();
    let ckpt = read_checkpoint(&path).unwrap();
    assert_eq!(ckpt.more_optimizers.len(), 1);
    assert_eq!(ckpt.more_optimizers[0].optimizer.kind, "sgd");
    assert_eq!(
        ckpt.more_optimizers[0].scheduler.as_ref().unwrap().kind,
        "step_lr"
    );

    let (resumed, result) = fit(
        quiet(dir.path()).max_epochs(2),
        PairHparams::default(),
        Some(CkptPath::Path(path)),
    );
    result.unwrap();
    assert_eq!(resumed.global_step(), whole.global_step());
    assert_eq!(
        weights(resumed.module().unwrap()),
        weights(whole.module().unwrap())
    );
    let (r, w) = (resumed.optimizers().unwrap(), whole.optimizers().unwrap());
    for i in 0..2 {
        assert_eq!(
            r.optimizer(i).unwrap().state_dict().unwrap(),
            w.optimizer(i).unwrap().state_dict().unwrap(),
            "optimizer {i}"
        );
        assert_eq!(
            r.scheduler(i).unwrap().state_dict(),
            w.scheduler(i).unwrap().state_dict(),
            "scheduler {i}"
        );
    }
}

#[test]
fn a_checkpoint_of_other_optimizers_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (t, result) = fit(quiet(dir.path()).max_steps(4), PairHparams::default(), None);
    result.unwrap();
    let two = dir.path().join("two.ckpt");
    t.save_checkpoint(&two, false).unwrap();

    let one = PairHparams {
        steps: vec![0],
        one_optimizer: true,
        ..Default::default()
    };
    let (t, result) = fit(
        quiet(dir.path()).max_epochs(1),
        one.clone(),
        Some(CkptPath::Path(two.clone())),
    );
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&two.display().to_string()), "{err}");
    assert!(
        err.contains("the checkpoint holds the state of 2 optimizers, but `configure_optimizers` returns 1 optimizer"),
        "{err}"
    );
    assert_eq!(t.global_step(), 0);

    let other_kind = PairHparams {
        second_adam: true,
        ..Default::default()
    };
    let (_, result) = fit(
        quiet(dir.path()).max_epochs(1),
        other_kind,
        Some(CkptPath::Path(two.clone())),
    );
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains(&two.display().to_string())
            && err.contains("the optimizer 1 state does not fit the configured optimizer 1: the checkpoint holds `sgd` optimizer state, but the configured optimizer is `adam`"),
        "{err}"
    );

    // A file of one optimizer (as every file before several existed) resumes a module of one, and is
    // refused by a module of two.
    let (t, result) = fit(quiet(dir.path()).max_steps(2), one.clone(), None);
    result.unwrap();
    let single = dir.path().join("one.ckpt");
    t.save_checkpoint(&single, false).unwrap();
    assert!(read_checkpoint(&single).unwrap().more_optimizers.is_empty());
    let (t, result) = fit(
        quiet(dir.path()).max_steps(4),
        one,
        Some(CkptPath::Path(single.clone())),
    );
    result.unwrap();
    assert_eq!(t.global_step(), 4);
    let (_, result) = fit(
        quiet(dir.path()).max_epochs(1),
        PairHparams::default(),
        Some(CkptPath::Path(single.clone())),
    );
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("the checkpoint holds the state of 1 optimizer, but `configure_optimizers` returns 2 optimizers"),
        "{err}"
    );
}

#[test]
fn several_optimizers_without_manual_optimization_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (t, result) = fit(
        quiet_as::<false>(dir.path()).max_epochs(1),
        PairHparams::default(),
        None,
    );
    let err = result.unwrap_err();
    assert!(
        matches!(&err, fulgur::Error::Config { settings, .. } if settings == &["configure_optimizers"]),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(
            "training with multiple optimizers is only supported with manual optimization: \
             `configure_optimizers` of `"
        ),
        "{err}"
    );
    assert_eq!(t.global_step(), 0);

    // One optimizer trains automatically as ever.
    let one = PairHparams {
        one_optimizer: true,
        ..Default::default()
    };
    let (t, result) = fit(quiet_as::<false>(dir.path()).max_epochs(1), one, None);
    result.unwrap();
    assert_eq!(t.global_step(), 5);
}

#[test]
fn manual_optimization_refuses_accumulation_and_clipping() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(TrainerBuilder<LitPair<Cpu>>, &str, &str); 2] = [
        (
            quiet(dir.path()).accumulate_grad_batches(2),
            "accumulate_grad_batches",
            "automatic gradient accumulation is not supported for manual optimization: remove \
             `accumulate_grad_batches(2)`",
        ),
        (
            quiet(dir.path()).gradient_clip_val(0.5),
            "gradient_clip_val",
            "automatic gradient clipping is not supported for manual optimization: remove \
             `gradient_clip_val(0.5)`",
        ),
    ];
    for (builder, setting, message) in cases {
        let (t, result) = fit(builder.max_epochs(1), PairHparams::default(), None);
        let err = result.unwrap_err();
        assert!(
            matches!(&err, fulgur::Error::Config { settings, .. } if settings == &[setting]),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(message), "{err}");
        assert_eq!(t.global_step(), 0);
    }
}

#[test]
fn a_params_pattern_that_selects_nothing_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let typo = PairHparams {
        first_params: "a.weights".into(),
        ..Default::default()
    };
    let (t, result) = fit(quiet(dir.path()).max_epochs(1), typo, None);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the optimizer's parameter pattern `a.weights` (did you mean `a.weight`?) (`params`) selects no \
         parameter; the module's trainable parameters are `a.bias`, `a.weight`, `b.bias`, `b.weight`"
    );
    assert_eq!(t.global_step(), 0);
}

#[test]
fn model_checkpoint_saves_on_the_step_trigger_only() {
    let dir = tempfile::tempdir().unwrap();
    let (steps_dir, time_dir) = (dir.path().join("steps"), dir.path().join("time"));
    // Every call of the clock is an hour later: the time trigger would fire at every batch.
    let hours = Arc::new(AtomicU64::new(0));
    let clock = move || Duration::from_secs(3600 * hours.fetch_add(1, Ordering::SeqCst));
    let by_time = ModelCheckpoint::builder()
        .dirpath(&time_dir)
        .train_time_interval(Duration::from_secs(60))
        .filename("{step}")
        .save_top_k(-1)
        .build()
        .unwrap()
        .with_clock(clock);
    let by_steps = ModelCheckpoint::builder()
        .dirpath(&steps_dir)
        .every_n_train_steps(4)
        .filename("{step}")
        .save_top_k(-1)
        .build()
        .unwrap();
    let builder = quiet(dir.path())
        .enable_checkpointing(true)
        .callback(by_steps)
        .callback(by_time)
        .max_epochs(1);
    let (_, result) = fit(builder, PairHparams::default(), None);
    result.unwrap();
    // Two steps per batch: steps 2, 4, …, 10; the trigger fires at 4 and 8.
    assert_eq!(listing(&steps_dir), ["step=4.ckpt", "step=8.ckpt"]);
    assert!(
        !time_dir.exists() || listing(&time_dir).is_empty(),
        "{:?}",
        listing(&time_dir)
    );
}

#[test]
fn checkpoints_of_two_optimizers_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (t, result) = fit(quiet(dir.path()).max_steps(4), PairHparams::default(), None);
    result.unwrap();
    let ckpt = t.build_checkpoint(false).unwrap();
    assert_eq!(ckpt.optimizer.as_ref().unwrap().kind, "adam");
    assert_eq!(ckpt.more_optimizers[0].optimizer.kind, "sgd");
    let path = dir.path().join("two.ckpt");
    write_checkpoint(&path, &ckpt).unwrap();
    let back = read_checkpoint(&path).unwrap();
    assert_eq!(back.more_optimizers, ckpt.more_optimizers);
    assert_eq!(
        (back.optimizer, back.scheduler),
        (ckpt.optimizer, ckpt.scheduler)
    );
}

//! The trainer options Lightning users reach for: `max_time` (the `Timer` callback), `fast_dev_run`,
//! `seed_everything`, `ckpt_path` for `validate`/`test`/`predict`, and a stop requested by the module.

use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulgur::callbacks::{CheckpointPaths, ModelCheckpoint, Timer};
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use fulgur::dfdx::optim::SgdConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Sgd;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::child::{test_name, Child};
use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::{bits, listing, weight_bits};

fn quiet() -> TrainerBuilder<LitMlp<Cpu>, Cpu> {
    Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .limit_train_batches(4u64)
        .limit_val_batches(1u64)
}

fn fit(t: &mut Trainer<LitMlp<Cpu>>, ckpt_path: Option<CkptPath>) {
    let (mut train, mut val) = loaders();
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        ckpt_path,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------------
// max_time and Timer

/// A clock that stands still until a [`Tick`] moves it.
fn manual_clock() -> (
    Arc<AtomicU64>,
    impl Fn() -> Duration + Send + Sync + 'static,
) {
    let seconds = Arc::new(AtomicU64::new(0));
    let read = seconds.clone();
    (seconds, move || {
        Duration::from_secs(read.load(Ordering::SeqCst))
    })
}

/// Lets one second pass at the end of every training batch, before the timer (given after it) looks.
struct Tick(Arc<AtomicU64>);

impl Callback for Tick {
    fn on_train_batch_end(&mut self, _: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn the_timer_stops_fit_after_the_batch_that_reaches_the_limit() {
    let (seconds, clock) = manual_clock();
    let mut t = quiet()
        .max_epochs(5)
        .callback(Tick(seconds.clone()))
        .callback(Timer::new(Duration::from_secs(5)).with_clock(clock))
        .build()
        .unwrap();
    fit(&mut t, None);
    assert_eq!((t.current_epoch(), t.global_step()), (1, 5));
    let timer = t.callback::<Timer>().unwrap();
    assert_eq!(timer.time_elapsed(), Duration::from_secs(5));
    assert_eq!(timer.time_remaining(), Some(Duration::ZERO));
}

#[test]
fn the_epoch_interval_stops_at_the_end_of_the_epoch_that_reaches_the_limit() {
    let (seconds, clock) = manual_clock();
    let mut t = quiet()
        .max_epochs(5)
        .callback(Tick(seconds.clone()))
        .callback(
            Timer::new(Duration::from_secs(5))
                .interval(Interval::Epoch)
                .with_clock(clock),
        )
        .build()
        .unwrap();
    fit(&mut t, None);
    assert_eq!((t.current_epoch(), t.global_step()), (2, 8));
}

#[test]
fn a_timer_stop_respects_min_steps() {
    let (seconds, clock) = manual_clock();
    let mut t = quiet()
        .max_epochs(5)
        .min_steps(7)
        .callback(Tick(seconds.clone()))
        .callback(Timer::new(Duration::from_secs(2)).with_clock(clock))
        .build()
        .unwrap();
    fit(&mut t, None);
    assert_eq!(t.global_step(), 7);
}

#[test]
fn a_resumed_run_continues_the_count_of_the_run_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("after-3.ckpt");
    let (seconds, clock) = manual_clock();
    let mut first = quiet()
        .max_steps(3)
        .callback(Tick(seconds))
        .callback(Timer::new(Duration::from_secs(5)).with_clock(clock))
        .build()
        .unwrap();
    fit(&mut first, None);
    assert_eq!(
        first.callback::<Timer>().unwrap().time_elapsed(),
        Duration::from_secs(3)
    );
    first.save_checkpoint(&ckpt, false).unwrap();

    // A new process's clock starts anywhere: only the time spent in training counts.
    let (seconds, clock) = manual_clock();
    seconds.store(1_000, Ordering::SeqCst);
    let mut resumed = quiet()
        .max_steps(20)
        .callback(Tick(seconds))
        .callback(Timer::new(Duration::from_secs(5)).with_clock(clock))
        .build()
        .unwrap();
    fit(&mut resumed, Some(CkptPath::from(ckpt.as_path())));
    assert_eq!(resumed.global_step(), 5, "3 s before the resume, 2 s after");
    assert_eq!(
        resumed.callback::<Timer>().unwrap().time_elapsed(),
        Duration::from_secs(5)
    );
}

#[test]
fn max_time_installs_a_timer_whose_exhausted_limit_stops_fit_before_any_batch() {
    let mut t = quiet()
        .max_epochs(3)
        .max_time(Duration::ZERO)
        .build()
        .unwrap();
    let timer = t.callback::<Timer>().expect("`max_time` adds a `Timer`");
    assert_eq!(timer.duration(), Some(Duration::ZERO));
    fit(&mut t, None);
    assert_eq!((t.current_epoch(), t.global_step()), (0, 0));
}

#[test]
fn a_timer_given_as_a_callback_takes_precedence_over_max_time() {
    let mut t = quiet()
        .max_epochs(1)
        .max_time(Duration::ZERO)
        .callback(Timer::new(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let timers: Vec<_> = t
        .callbacks()
        .iter()
        .filter_map(|c| c.as_any().downcast_ref::<Timer>())
        .collect();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].duration(), Some(Duration::from_secs(3600)));
    fit(&mut t, None);
    assert_eq!(t.global_step(), 4);
}

// ---------------------------------------------------------------------------------------------------
// fast_dev_run

fn counting_module() -> (LitMlp<Cpu>, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut m = LitMlp::new(Hparams::default());
    m.events = Some(events.clone());
    (m, events)
}

fn count(events: &Mutex<Vec<String>>, what: &str) -> usize {
    events.lock().unwrap().iter().filter(|e| *e == what).count()
}

#[test]
fn fast_dev_run_runs_n_batches_of_one_epoch_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::builder()
        .default_root_dir(dir.path())
        .max_epochs(10)
        .enable_progress_bar(false)
        .fast_dev_run(2)
        .build()
        .unwrap();
    assert!(t.state().fast_dev_run);
    let (module, events) = counting_module();
    let (mut train, mut val) = loaders();
    t.fit(module, &mut train, Some(&mut val), None).unwrap();
    assert_eq!((t.current_epoch(), t.global_step()), (1, 2));
    // No sanity check: the two validation batches are those of the epoch's end.
    assert_eq!(count(&events, "training_step"), 2);
    assert_eq!(count(&events, "validation_step"), 2);
    assert_eq!(t.log_dir().unwrap(), None);
    assert_eq!(t.checkpoint_callback().unwrap().best_model_path(), None);
    assert_eq!(listing(dir.path()), Vec::<String>::new());

    events.lock().unwrap().clear();
    t.validate(None, &mut val, None).unwrap();
    assert_eq!(count(&events, "validation_step"), 2);
    let predictions = t.predict(None, &mut val, None).unwrap();
    assert_eq!(predictions.len(), 2);
    let e = t
        .test(None, &mut val, Some(CkptPath::Best))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`test(ckpt_path = \"best\")` with `fast_dev_run`"),
        "{e}"
    );
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
fn s076_fast_dev_run_with_save_last_still_writes_last_at_the_end_as_lightning_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::builder()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .callback(
            ModelCheckpoint::builder()
                .save_last(true)
                .every_n_train_steps(1)
                .build()
                .unwrap(),
        )
        .fast_dev_run(3)
        .build()
        .unwrap();
    fit(&mut t, None);
    assert_eq!(listing(dir.path()), ["checkpoints"]);
    let ckpts = dir.path().join("checkpoints");
    assert_eq!(listing(&ckpts), ["last.ckpt"], "no step or epoch save");
    assert_eq!(
        crate::support::scripted::at(&ckpts.join("last.ckpt")),
        (1, 3)
    );
}

// ---------------------------------------------------------------------------------------------------
// seed_everything

/// Env var that tells [`child_trains_with_the_global_seed`] which seed to set (none: it sets none).
const SEED_VAR: &str = "FULGUR_TEST_SEED_EVERYTHING";

/// In a child process (the seed is process-wide): sets the seed when asked, builds the module's
/// weights on `seeded_device`, fits with a trainer that has no seed of its own, and prints the weights.
#[test]
#[ignore = "run as a child process by seed_everything_makes_a_run_repeatable"]
fn child_trains_with_the_global_seed() {
    if let Ok(seed) = std::env::var(SEED_VAR) {
        assert_eq!(
            fulgur::seed_everything(seed.parse().unwrap()),
            seed.parse::<u64>().unwrap()
        );
    }
    let dev: Cpu = fulgur::seeded_device().unwrap();
    let module = LitMlp {
        net: dev.build_module::<crate::support::mlp::Mlp, f32>(),
        head: dev.build_module::<Linear<10, 10>, f32>(),
        hparams: Hparams::default(),
        events: None,
        extra_metric: None,
    };
    let mut t = quiet().max_epochs(1).build().unwrap();
    let (mut train, _) = loaders();
    t.fit(module, &mut train, None, None).unwrap();
    // The harness prints the test's name on the same line first: start on a line of our own.
    println!("\nSEED {}", t.state().seed);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    weight_bits(t.module().unwrap()).hash(&mut hasher);
    println!("WEIGHTS {:016x}", hasher.finish());
}

/// The child's `SEED` and `WEIGHTS` lines, with `envs`.
fn seeded_run(envs: &[(&str, &str)]) -> (String, String) {
    let envs: Vec<(&str, OsString)> = envs.iter().map(|(k, v)| (*k, v.into())).collect();
    let mut child = Child::spawn(&test_name!(child_trains_with_the_global_seed), &envs, None);
    let status = child.wait_exit(Duration::from_secs(300)).unwrap();
    assert!(status.success(), "{}", child.transcript());
    let out = child.stdout();
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line\n{}", child.transcript()))
            .to_string()
    };
    (line("SEED "), line("WEIGHTS "))
}

#[test]
fn seed_everything_makes_a_run_repeatable() {
    let (seed, a) = seeded_run(&[(SEED_VAR, "7"), ("PL_GLOBAL_SEED", "1")]);
    assert_eq!(seed, "7", "the trainer takes the global seed");
    let (_, b) = seeded_run(&[(SEED_VAR, "7")]);
    assert_eq!(a, b, "the same seed, the same weights after fit");
    let (seed, c) = seeded_run(&[(SEED_VAR, "8")]);
    assert_eq!(seed, "8");
    assert_ne!(a, c, "another seed, other weights");
    // A child process started with the parent's `PL_GLOBAL_SEED` follows it.
    let (seed, d) = seeded_run(&[("PL_GLOBAL_SEED", "7")]);
    assert_eq!((seed.as_str(), &d), ("7", &a));
}

// ---------------------------------------------------------------------------------------------------
// ckpt_path for validate, test and predict

/// A checkpoint callback that only reports fixed paths (a `ModelCheckpoint` whose best file is known).
struct Known(CheckpointPaths);

impl Callback for Known {
    fn is_checkpoint(&self) -> bool {
        true
    }
    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        Some(self.0.clone())
    }
}

/// A checkpoint after `steps` steps at `path`, and its weights.
fn saved_after(steps: u64, path: &Path) -> crate::support::WeightBits {
    let mut t = quiet().max_steps(steps).build().unwrap();
    fit(&mut t, None);
    t.save_checkpoint(path, true).unwrap();
    weight_bits(t.module().unwrap())
}

fn other_module() -> LitMlp<Cpu> {
    LitMlp::new(Hparams {
        init_seed: 5,
        ..Hparams::default()
    })
}

#[test]
fn a_path_loads_that_checkpoints_weights_before_validate_test_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-steps.ckpt");
    let saved = saved_after(2, &path);
    let (_, mut val) = loaders();
    let mut t = quiet().build().unwrap();
    let expected = t
        .validate(Some(LitMlp::new(Hparams::default())), &mut val, None)
        .unwrap();
    assert_ne!(weight_bits(t.module().unwrap()), saved);

    let metrics = t
        .validate(Some(other_module()), &mut val, Some(path.as_path().into()))
        .unwrap();
    assert_eq!(weight_bits(t.module().unwrap()), saved);
    assert_ne!(metrics, expected, "the weights of the file were validated");
    let read = fulgur::checkpoint::read_checkpoint(&path).unwrap();
    assert_eq!(bits(read.state_dict), saved);

    let fresh = t.predict(Some(other_module()), &mut val, None).unwrap();
    let from_file = t
        .predict(Some(other_module()), &mut val, Some(path.as_path().into()))
        .unwrap();
    assert_ne!(fresh, from_file);
    assert_eq!(weight_bits(t.module().unwrap()), saved);
    t.test(Some(other_module()), &mut val, Some(path.as_path().into()))
        .unwrap();
    assert_eq!(weight_bits(t.module().unwrap()), saved);
}

#[test]
fn without_a_module_after_fit_the_best_checkpoint_is_used_with_one_its_own_weights_and_last_the_newest(
) {
    let dir = tempfile::tempdir().unwrap();
    let best = dir.path().join("best.ckpt");
    let saved = saved_after(2, &best);
    let last = dir.path().join("last.ckpt");
    let saved_last = saved_after(3, &last);
    let mut t = Trainer::builder()
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .limit_train_batches(4u64)
        .limit_val_batches(1u64)
        .max_epochs(1)
        .callback(Known(CheckpointPaths {
            best: vec![best.clone()],
            last: vec![last.clone()],
            ..Default::default()
        }))
        .build()
        .unwrap();
    fit(&mut t, None);
    let trained = weight_bits(t.module().unwrap());
    assert_ne!(trained, saved);
    let (_, mut val) = loaders();

    let module = other_module();
    let own = weight_bits(&module);
    t.validate(Some(module), &mut val, None).unwrap();
    assert_eq!(
        weight_bits(t.module().unwrap()),
        own,
        "a module passed keeps its weights"
    );

    t.validate(None, &mut val, None).unwrap();
    assert_eq!(
        weight_bits(t.module().unwrap()),
        saved,
        "the best file's weights"
    );

    t.test(None, &mut val, Some(CkptPath::Last)).unwrap();
    assert_eq!(weight_bits(t.module().unwrap()), saved_last);
}

#[test]
fn without_a_checkpoint_callback_the_attached_module_keeps_its_weights() {
    let mut t = quiet().max_epochs(1).build().unwrap();
    fit(&mut t, None);
    let trained = weight_bits(t.module().unwrap());
    let (_, mut val) = loaders();
    t.test(None, &mut val, None).unwrap();
    assert_eq!(weight_bits(t.module().unwrap()), trained);
}

#[test]
fn best_without_a_checkpoint_callback_and_a_missing_file_are_errors_naming_them() {
    let (_, mut val) = loaders();
    let mut t = quiet().build().unwrap();
    let e = t
        .validate(Some(other_module()), &mut val, Some(CkptPath::Best))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "`validate(ckpt_path = \"best\")` is set but no checkpoint callback is configured"
        ),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.ckpt");
    let e = t
        .predict(None, &mut val, Some(missing.as_path().into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert_eq!(t.state().fn_, fulgur::trainer::TrainerFn::Idle);
}

// ---------------------------------------------------------------------------------------------------
// A stop requested by the module

/// A linear model that asks the trainer to stop from its training step at `stop_at_step`, or from its
/// `on_train_epoch_end` when `stop_at_epoch_end`.
struct LitStop<D: Backend> {
    net: Built<Linear<2, 1>, D>,
    stop_at_step: Option<u64>,
    stop_at_epoch_end: bool,
}

impl<D: Backend> TensorCollection<f32, D> for LitStop<D> {
    type To<E2: Dtype, D2: Device<E2>> = ();
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(v: &mut V) -> Result<Option<()>, V::Err> {
        v.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
    }
}

impl<D: Backend> ModuleState<D> for LitStop<D> {
    type Hparams = ();
    fn hparams(&self) -> &() {
        &()
    }
    fn from_hparams((): (), d: &D) -> fulgur::Result<Self> {
        Ok(Self {
            net: d.build_module::<Linear<2, 1>, f32>(),
            stop_at_step: None,
            stop_at_epoch_end: false,
        })
    }
}

type LinearBatch<D> = TensorBatch<Rank1<2>, Rank1<1>, D>;

impl<D: Backend> LightningModule<D> for LitStop<D> {
    type Batch = LinearBatch<D>;
    type Prediction = ();
    const METRICS: &'static [MetricSpec] = &[];

    fn training_step(
        &mut self,
        b: LinearBatch<D>,
        g: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<Loss<D>> {
        if self.stop_at_step == Some(log.global_step()) {
            log.request_stop();
        }
        Ok(mse_loss(self.net.forward_mut(b.x.traced(g)), b.y))
    }

    fn on_train_epoch_end(&mut self, log: &mut StepLog) -> fulgur::Result<()> {
        if self.stop_at_epoch_end {
            log.request_stop();
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        Optimizers::new(Sgd::new(SgdConfig {
            lr: 0.1,
            ..Default::default()
        }))
    }
}

/// Fits a [`LitStop`] on 4 batches per epoch for at most 5 epochs: (epoch, global step) at the end.
fn fit_stopping(
    stop_at_step: Option<u64>,
    stop_at_epoch_end: bool,
    builder: impl FnOnce(TrainerBuilder<LitStop<Cpu>, Cpu>) -> TrainerBuilder<LitStop<Cpu>, Cpu>,
) -> (u64, u64) {
    let dev = Cpu::default();
    let data = TensorData::<Rank1<2>, Rank1<1>>::new(vec![0.5; 2 * 40], vec![1.0; 40]).unwrap();
    let mut train = data.loader(10, true, &dev).unwrap();
    let mut module = LitStop::from_hparams((), &dev).unwrap();
    module.stop_at_step = stop_at_step;
    module.stop_at_epoch_end = stop_at_epoch_end;
    let mut t = builder(
        Trainer::builder()
            .max_epochs(5)
            .no_logger()
            .enable_checkpointing(false)
            .enable_progress_bar(false)
            .enable_model_summary(false),
    )
    .build()
    .unwrap();
    t.fit(module, &mut train, None, None).unwrap();
    (t.current_epoch(), t.global_step())
}

#[test]
fn a_stop_requested_by_the_training_step_ends_fit_after_that_batch() {
    // The step that runs at global step 5 is the second batch of epoch 1.
    assert_eq!(fit_stopping(Some(5), false, |b| b), (1, 6));
    assert_eq!(fit_stopping(None, false, |b| b), (5, 20));
}

#[test]
fn a_stop_requested_by_the_module_waits_for_min_steps_and_min_epochs() {
    assert_eq!(fit_stopping(Some(1), false, |b| b.min_steps(7)), (1, 7));
    assert_eq!(fit_stopping(Some(1), false, |b| b.min_epochs(2)), (2, 8));
}

#[test]
fn a_stop_requested_at_the_end_of_an_epoch_ends_fit_after_that_epoch() {
    assert_eq!(fit_stopping(None, true, |b| b), (1, 4));
}

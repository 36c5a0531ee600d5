//! The trainer's overhead: `Trainer::fit` against the training loop a dfdx user writes by hand, on the
//! same data, the same network and the same optimizer, in one process; and what building every batch in a
//! fresh `Vec` and tensor (as `ClassificationLoader` does) costs per step.
//!
//! `cargo bench --bench trainer` trains an MLP 784-512-512-10 (669 706 parameters) with Adam (lr 1e-3) on
//! 1024 synthetic samples, 16 shuffled training batches of 64, for 200 steps (12 epochs and a half),
//! first with criterion, then again in the summary: every operation below in turn, round after round
//! (the order rotates each round), medians of the rounds after one untimed round. The untimed round also
//! checks that every operation ends with the same weights, bit for bit: they do the same training.
//!
//! - `fit`: `Trainer::fit` with `max_steps(200)`, the module written with `#[lightning_module]`
//!   (`training_step` returns the cross-entropy loss and logs it as `train_loss`), `fulgur::optim::Adam`
//!   (dfdx's Adam kernel, moments kept by parameter name), no logger, no progress bar, no model summary,
//!   no checkpointing.
//! - `hand loop`: what a dfdx user writes: `dfdx::optim::Adam`, one `Gradients` reused across steps
//!   (`alloc_grads`, `traced`, `backward`, `update`, `zero_grads`), the loss read back each step (as the
//!   module's `train_loss` is). Batches come from the same `ClassificationLoader`, `set_epoch(epoch, 0)`
//!   at every epoch's start as `fit` does: the same batches in the same order, built the same way.
//! - `hand loop, reused batch buffers`: the same loop, but each batch is gathered into one host buffer and
//!   copied into one input tensor and one target tensor kept across steps (`Tensor::copy_from`) instead of
//!   the loader's fresh `Vec`s and tensors; the order is the loader's (`fulgur::data::permutation`). The
//!   difference to `hand loop` is the cost of the loader's allocations within a real step.
//! - `hand loop, fulgur's Adam`: the hand loop stepping `fulgur::optim::Adam` (the optimizer `fit` runs)
//!   instead of dfdx's: the difference to `hand loop` is the optimizer's share of `fit`'s overhead, the
//!   rest is the trainer's.
//! - `fit, validation + top-2 checkpoints`: as `fit`, with 4 validation batches of 64 after every epoch
//!   (`val_loss`, no sanity check) and a `ModelCheckpoint` keeping the best 2 by `val_loss`.
//! - `hand loop, validation + top-2 checkpoints`: the hand loop plus, after every epoch, the same
//!   validation (forward without a tape, mean loss weighted by batch size) and top-2 checkpointing by hand:
//!   a `Checkpoint` with the weights, written with `write_checkpoint` (the same format and crash-safe
//!   protocol, fsyncs included), the file that drops out of the best 2 deleted. dfdx's `Adam` keeps its
//!   moments private, so the file carries a copy of the weights in their place: the same bytes as
//!   `fit`'s checkpoints, which store the moments (`fit`'s also hold the callback and loop state, a few
//!   hundred bytes).
//!
//! The summary then times building one batch alone, the loader's way and into reused buffers, and ends
//! with `fit vs hand loop: X.XXx` (steps per second of `fit` over those of the hand loop; above 1, `fit`
//! is faster), with and without validation and checkpoints: the median over the rounds of the ratio of
//! the two runs of a round, which ran one after the other (steadier than the ratio of the medians when
//! the load of a shared machine drifts).
//!
//! `FULGUR_BENCH_STEPS` sets the steps per run (default 200) and `FULGUR_BENCH_RUNS` the timed rounds of
//! the summary (default 9); a criterion filter that matches nothing (`cargo bench --bench trainer --
//! none`) runs the summary alone. Checkpoints go to a temporary directory under `FULGUR_BENCH_DIR` when
//! it is set (e.g. a tmpfs), else under the system's temporary directory. Without `--bench` (as under
//! `cargo test --benches`) it runs every operation once on batches of 8 for 5 steps and checks the
//! weights agree.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{write_checkpoint, OptimizerState, TensorData as Stored};
use fulgur::data::permutation;
use fulgur::dfdx::nn::ZeroGrads;
use fulgur::dfdx::optim::{Adam as DfdxAdam, AdamConfig, Optimizer as DfdxOptimizer};
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use fulgur::trainer::DynLoader;

const FEATURES: usize = 784;
const CLASSES: usize = 10;
const TRAIN_BATCHES: usize = 16;
const VAL_BATCHES: usize = 4;
const STEPS: u64 = 200;
const RUNS: usize = 9;
const SEED: u64 = 0;
const LR: f64 = 1e-3;

type Mlp = (
    Linear<FEATURES, 512>,
    ReLU,
    Linear<512, 512>,
    ReLU,
    Linear<512, CLASSES>,
);
type Net = Built<Mlp, Cpu>;
type Batch<D> = ClassificationBatch<FEATURES, CLASSES, D>;

#[derive(ModuleState)]
struct Bench<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    hparams: (),
}

#[lightning_module]
impl<D: Backend> Bench<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(adam())
    }

    #[log(train_loss)]
    fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>) -> Loss<D> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        cross_entropy_with_logits_loss(logits, batch.y)
    }

    #[log(val_loss)]
    fn validation_step(&self, batch: Batch<D>) -> f32 {
        cross_entropy_with_logits_loss(self.net.forward(batch.x), batch.y).as_vec()[0]
    }
}

fn adam() -> AdamConfig {
    AdamConfig {
        lr: LR,
        ..Default::default()
    }
}

/// The data and sizes every operation shares.
struct Setup {
    batch: usize,
    steps: u64,
    features: Vec<f32>,
    labels: Vec<usize>,
    train: ClassificationData<FEATURES, CLASSES>,
    val: ClassificationData<FEATURES, CLASSES>,
    dev: Cpu,
    dir: PathBuf,
}

/// Whether a run validates every epoch and keeps the best 2 checkpoints.
#[derive(Clone, Copy, PartialEq)]
enum Extras {
    None,
    ValidateAndCheckpoint,
}

/// How the hand loop makes its batches, and which Adam it steps.
#[derive(Clone, Copy, PartialEq)]
enum Batches {
    Loader,
    Reused,
    /// The loader's batches, and `fulgur::optim::Adam` (moments by parameter name) instead of dfdx's.
    FulgurAdam,
}

/// What one run took (its timed part: wall-clock, and the process's CPU time over every thread) and
/// the weights it ended with.
type Outcome = (Duration, f64, Vec<Vec<f32>>);
type Op<'a> = (&'static str, Box<dyn FnMut() -> Outcome + 'a>);

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let number = |var: &str, default: u64, smoke: u64| match std::env::var(var) {
        Ok(s) if bench_mode => s.parse().unwrap_or_else(|_| {
            eprintln!("{var} must be a number, got `{s}`");
            std::process::exit(2)
        }),
        _ if bench_mode => default,
        _ => smoke,
    };
    let steps = number("FULGUR_BENCH_STEPS", STEPS, 5);
    let runs = number("FULGUR_BENCH_RUNS", RUNS as u64, 1).max(1) as usize;
    let batch = if bench_mode { 64 } else { 8 };
    let dir = match std::env::var_os("FULGUR_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let setup = setup(batch, steps, dir.path());

    let mut ops: Vec<Op> = vec![
        ("fit", Box::new(|| fit(&setup, Extras::None))),
        (
            "hand loop",
            Box::new(|| hand_loop(&setup, Extras::None, Batches::Loader)),
        ),
        (
            "hand loop, reused batch buffers",
            Box::new(|| hand_loop(&setup, Extras::None, Batches::Reused)),
        ),
        (
            "hand loop, fulgur's Adam",
            Box::new(|| hand_loop(&setup, Extras::None, Batches::FulgurAdam)),
        ),
        (
            "fit, validation + top-2 checkpoints",
            Box::new(|| fit(&setup, Extras::ValidateAndCheckpoint)),
        ),
        (
            "hand loop, validation + top-2 checkpoints",
            Box::new(|| hand_loop(&setup, Extras::ValidateAndCheckpoint, Batches::Loader)),
        ),
    ];

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group(format!("{steps} training steps, batch {batch}"));
    group.sampling_mode(SamplingMode::Flat);
    for (label, op) in ops.iter_mut() {
        group.bench_function(*label, |b| b.iter(|| black_box(op())));
    }
    group.finish();
    c.final_summary();

    // The untimed round: every operation trains the same weights, so the comparison is of like with like.
    let first: Vec<Outcome> = ops.iter_mut().map(|(_, op)| op()).collect();
    for ((label, _), (_, _, weights)) in ops.iter().zip(&first).skip(1) {
        assert!(
            *weights == first[0].2,
            "`{label}` ends with other weights than `fit`: the operations do not do the same work"
        );
    }
    let mut times = vec![Vec::with_capacity(runs); ops.len()];
    let mut cpu_times = vec![Vec::with_capacity(runs); ops.len()];
    for round in 0..runs {
        for k in 0..ops.len() {
            let i = (round + k) % ops.len();
            let (wall, cpu, _) = ops[i].1();
            times[i].push(wall.as_secs_f64());
            cpu_times[i].push(cpu);
        }
    }
    let medians: Vec<f64> = times.iter().cloned().map(median).collect();
    let median_of = |label: &str| {
        medians[ops
            .iter()
            .position(|(l, _)| *l == label)
            .expect("an operation")]
    };

    println!(
        "\ntrainer overhead: MLP 784-512-512-10, Adam, batch {batch}, {} training batches, {steps} steps; \
         medians of {runs} alternating rounds after one untimed round ({} rayon threads)",
        setup.train.len() / batch,
        rayon_threads()
    );
    println!(
        "{:<42} {:>9} {:>8} {:>10}   every run, ms",
        "operation", "median ms", "steps/s", "CPU ms"
    );
    for ((((label, _), m), t), c) in ops.iter().zip(&medians).zip(&times).zip(&cpu_times) {
        let all: Vec<String> = t.iter().map(|x| format!("{:.0}", x * 1e3)).collect();
        println!(
            "{label:<42} {:>9.1} {:>8.1} {:>10.1}   {}",
            m * 1e3,
            steps as f64 / m,
            median(c.clone()) * 1e3,
            all.join(" ")
        );
    }

    // Per round, the two runs compared ran one after the other: the median of the per-round ratios
    // is steadier than the ratio of the medians when the machine's load drifts.
    let at = |label: &str| {
        ops.iter()
            .position(|(l, _)| *l == label)
            .expect("an operation")
    };
    let paired = |times: &[Vec<f64>], fit: &str, hand: &str| {
        let (f, h) = (&times[at(fit)], &times[at(hand)]);
        median(h.iter().zip(f).map(|(h, f)| h / f).collect())
    };
    let ratio = |fit: &str, hand: &str| paired(&times, fit, hand);
    let step = median_of("hand loop") / steps as f64;
    let (fresh, reused) = batch_building(&setup, runs);
    let in_loop = 1.0 - ratio("hand loop", "hand loop, reused batch buffers");
    println!(
        "\nbatches: {:.1} µs to build one the loader's way (fresh Vec and tensors), {:.1} µs into reused \
         buffers, timed alone ({:.2}% of a {:.2} ms step); within the loop the loader's way costs {:+.2}% \
         of a step",
        fresh * 1e6,
        reused * 1e6,
        100.0 * (fresh - reused) / step,
        step * 1e3,
        100.0 * in_loop,
    );
    println!(
        "fit vs hand loop, validation + top-2 checkpoints: {:.2}x",
        ratio(
            "fit, validation + top-2 checkpoints",
            "hand loop, validation + top-2 checkpoints"
        )
    );
    // The process's CPU time does not grow when other processes take the cores, as wall-clock time
    // does: on a loaded machine it tells whether `fit` does more work than the hand loop.
    println!(
        "fit vs hand loop in CPU time: {:.2}x (with validation + top-2 checkpoints: {:.2}x)",
        paired(&cpu_times, "fit", "hand loop"),
        paired(
            &cpu_times,
            "fit, validation + top-2 checkpoints",
            "hand loop, validation + top-2 checkpoints"
        )
    );
    println!("fit vs hand loop: {:.2}x", ratio("fit", "hand loop"));
}

fn setup(batch: usize, steps: u64, dir: &Path) -> Setup {
    let samples = batch * (TRAIN_BATCHES + VAL_BATCHES);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let features: Vec<f32> = (0..samples * FEATURES).map(|_| next()).collect();
    let labels: Vec<usize> = (0..samples).map(|i| (i * 7 + i / 3) % CLASSES).collect();
    let n_train = batch * TRAIN_BATCHES;
    let train = ClassificationData::new(
        features[..n_train * FEATURES].to_vec(),
        labels[..n_train].to_vec(),
    )
    .expect("training data");
    let val = ClassificationData::new(
        features[n_train * FEATURES..].to_vec(),
        labels[n_train..].to_vec(),
    )
    .expect("validation data");
    Setup {
        batch,
        steps,
        features: features[..n_train * FEATURES].to_vec(),
        labels: labels[..n_train].to_vec(),
        train,
        val,
        dev: Cpu::default(),
        dir: dir.to_path_buf(),
    }
}

/// The module every run starts from: the same weights each time.
fn module() -> Bench<Cpu> {
    Bench::from_hparams((), &Cpu::seed_from_u64(SEED)).expect("a module")
}

fn fit(s: &Setup, extras: Extras) -> Outcome {
    let run_dir = tempfile::tempdir_in(&s.dir).expect("a run directory");
    let mut builder = Trainer::builder()
        .max_steps(s.steps)
        .seed(SEED)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .default_root_dir(run_dir.path());
    builder = match extras {
        Extras::None => builder.enable_checkpointing(false),
        Extras::ValidateAndCheckpoint => builder.callback(
            ModelCheckpoint::builder()
                .monitor("val_loss")
                .save_top_k(2)
                .build()
                .expect("a checkpoint callback"),
        ),
    };
    let mut trainer = builder.build().expect("a trainer");
    let mut train = s.train.loader(s.batch, true, &s.dev).expect("a loader");
    let mut val = s.val.loader(s.batch, false, &s.dev).expect("a loader");
    let val = match extras {
        Extras::None => None,
        Extras::ValidateAndCheckpoint => Some(&mut val as &mut DynLoader<'_, _>),
    };
    let model = module();
    let start = Clock::start();
    trainer.fit(model, &mut train, val, None).expect("fit");
    let (took, cpu) = start.stop();
    let module = trainer.take_module().expect("the trained module");
    (took, cpu, weights(&module.net))
}

/// The loop a dfdx user writes, doing what `fit` does for this module (see the module's doc).
fn hand_loop(s: &Setup, extras: Extras, batches: Batches) -> Outcome {
    let run_dir = tempfile::tempdir_in(&s.dir).expect("a run directory");
    let mut train = s.train.loader(s.batch, true, &s.dev).expect("a loader");
    let mut val = s.val.loader(s.batch, false, &s.dev).expect("a loader");
    let n = train.num_batches() as u64;
    let mut net = module().net;
    let mut reuse = Reused::new(s);

    let start = Clock::start();
    let mut opt = DfdxAdam::new(&net, adam());
    let mut fulgur_adam = Adam::<Cpu>::new(adam());
    let mut grads = net.alloc_grads();
    let mut best: Vec<(f32, PathBuf)> = Vec::new();
    let mut train_loss = 0.0f32;
    for step in 0..s.steps {
        let (epoch, index) = (step / n, step % n);
        if index == 0 {
            train.set_epoch(epoch, SEED);
            reuse.order = permutation(s.labels.len(), SEED, epoch);
            train_loss = 0.0;
        }
        let (x, y) = match batches {
            Batches::Loader | Batches::FulgurAdam => {
                let b = train.batch(index as usize).expect("a batch");
                (b.x, b.y)
            }
            Batches::Reused => reuse.batch(s, index as usize),
        };
        let logits = net.forward_mut(x.traced(grads));
        let loss = cross_entropy_with_logits_loss(logits, y);
        train_loss += loss.array();
        grads = loss.backward();
        if batches == Batches::FulgurAdam {
            fulgur::optim::Optimizer::<Net, Cpu>::step(&mut fulgur_adam, &mut net, &mut grads)
                .expect("an update");
        } else {
            opt.update(&mut net, &grads).expect("an update");
        }
        net.zero_grads(&mut grads);

        if index + 1 == n && extras == Extras::ValidateAndCheckpoint {
            let val_loss = validate(&net, &mut val);
            let at = step + 1;
            if best.len() < 2 || best.iter().any(|(b, _)| val_loss < *b) {
                let path = run_dir.path().join(format!("epoch={epoch}-step={at}.ckpt"));
                write_checkpoint(&path, &checkpoint(&net, epoch, at)).expect("a checkpoint");
                best.push((val_loss, path));
                best.sort_by(|a, b| a.0.total_cmp(&b.0));
                if best.len() > 2 {
                    let (_, worst) = best.pop().expect("three checkpoints");
                    std::fs::remove_file(worst).expect("delete a checkpoint");
                }
            }
        }
    }
    black_box(train_loss);
    let (took, cpu) = start.stop();
    (took, cpu, weights(&net))
}

/// The mean validation loss, weighted by batch size.
fn validate(net: &Net, val: &mut impl DataLoader<Batch = Batch<Cpu>>) -> f32 {
    val.set_epoch(0, SEED);
    let (mut sum, mut count) = (0.0, 0);
    for i in 0..val.num_batches() {
        let b = val.batch(i).expect("a validation batch");
        let n = b.labels.len();
        sum += cross_entropy_with_logits_loss(net.forward(b.x), b.y).array() * n as f32;
        count += n;
    }
    sum / count as f32
}

/// The hand loop's checkpoint: the weights, and a copy of them where `fit` stores Adam's moments.
fn checkpoint(net: &Net, epoch: u64, step: u64) -> Checkpoint {
    let mut ckpt = Checkpoint::new("bench::HandLoop");
    ckpt.epoch = epoch;
    ckpt.global_step = step;
    let mut moments = std::collections::BTreeMap::new();
    for (name, shape, values) in named_weights(net) {
        let t = Stored::from_f32(shape, values);
        moments.insert(
            name.clone(),
            [("exp_avg", t.clone()), ("exp_avg_sq", t.clone())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        ckpt.state_dict.insert(name, t);
    }
    ckpt.optimizer = Some(OptimizerState {
        kind: "adam".into(),
        step,
        lr: LR,
        config: fulgur::ciborium::Value::Null,
        params: moments,
    });
    ckpt
}

fn named_weights(net: &Net) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (l0, _, l2, _, l4) = net;
    vec![
        (
            "net.0.weight".into(),
            vec![512, FEATURES],
            l0.weight.as_vec(),
        ),
        ("net.0.bias".into(), vec![512], l0.bias.as_vec()),
        ("net.2.weight".into(), vec![512, 512], l2.weight.as_vec()),
        ("net.2.bias".into(), vec![512], l2.bias.as_vec()),
        (
            "net.4.weight".into(),
            vec![CLASSES, 512],
            l4.weight.as_vec(),
        ),
        ("net.4.bias".into(), vec![CLASSES], l4.bias.as_vec()),
    ]
}

fn weights(net: &Net) -> Vec<Vec<f32>> {
    named_weights(net).into_iter().map(|(_, _, w)| w).collect()
}

/// A batch's input and target tensors.
type Tensors = (
    Tensor<(usize, Const<FEATURES>), f32, Cpu>,
    Tensor<(usize, Const<CLASSES>), f32, Cpu>,
);

/// Batches gathered into buffers kept across steps: one host buffer, one input and one target tensor.
struct Reused {
    order: Vec<usize>,
    x_host: Vec<f32>,
    y_host: Vec<f32>,
    x: Tensor<(usize, Const<FEATURES>), f32, Cpu>,
    y: Tensor<(usize, Const<CLASSES>), f32, Cpu>,
}

impl Reused {
    fn new(s: &Setup) -> Self {
        Self {
            order: Vec::new(),
            x_host: vec![0.0; s.batch * FEATURES],
            y_host: vec![0.0; s.batch * CLASSES],
            x: s.dev.zeros_like(&(s.batch, Const)),
            y: s.dev.zeros_like(&(s.batch, Const)),
        }
    }

    /// Batch `index` of the current order; the tensors handed out are views of the kept ones, which the
    /// step has dropped by the time the next batch overwrites them (else `copy_from` would copy).
    fn batch(&mut self, s: &Setup, index: usize) -> Tensors {
        let rows = &self.order[index * s.batch..(index + 1) * s.batch];
        self.y_host.fill(0.0);
        for (r, &i) in rows.iter().enumerate() {
            self.x_host[r * FEATURES..(r + 1) * FEATURES]
                .copy_from_slice(&s.features[i * FEATURES..(i + 1) * FEATURES]);
            self.y_host[r * CLASSES + s.labels[i]] = 1.0;
        }
        self.x.copy_from(&self.x_host);
        self.y.copy_from(&self.y_host);
        (self.x.clone(), self.y.clone())
    }
}

/// Seconds to build one training batch alone: the loader's way, and into reused buffers.
fn batch_building(s: &Setup, runs: usize) -> (f64, f64) {
    let mut loader = s.train.loader(s.batch, true, &s.dev).expect("a loader");
    loader.set_epoch(0, SEED);
    let mut reuse = Reused::new(s);
    reuse.order = permutation(s.labels.len(), SEED, 0);
    let n = loader.num_batches();
    let reps = 20;
    let time = |f: &mut dyn FnMut(usize)| {
        let per_run: Vec<f64> = (0..runs.max(3))
            .map(|_| {
                let start = Instant::now();
                for _ in 0..reps {
                    (0..n).for_each(&mut *f);
                }
                start.elapsed().as_secs_f64() / (reps * n) as f64
            })
            .collect();
        median(per_run)
    };
    let fresh = time(&mut |i| drop(black_box(loader.batch(i).expect("a batch"))));
    let reused = time(&mut |i| drop(black_box(reuse.batch(s, i))));
    (fresh, reused)
}

/// Wall-clock and process CPU time from a start.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    /// The wall-clock time and the CPU seconds of every thread of the process since the start.
    fn stop(&self) -> (Duration, f64) {
        (self.wall.elapsed(), process_cpu_seconds() - self.cpu)
    }
}

/// The CPU time of the process (every thread), in seconds; NaN where it is not known.
fn process_cpu_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut t = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `t` is a valid `struct timespec` (64-bit Linux) for the call to fill.
        if unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0 {
            return t.sec as f64 + t.nsec as f64 * 1e-9;
        }
    }
    f64::NAN
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism().map_or_else(|_| "?".into(), |n| n.to_string())
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

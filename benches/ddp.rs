//! Data-parallel training on Open MPI: training steps per second on 2 ranks against 1, and the share of a
//! step spent averaging the gradients.
//!
//! `cargo bench --features mpi --bench ddp` trains an MLP 784-512-512-10 (669 706 parameters, one
//! gradient bucket of 2.6 MiB) with Adam on synthetic data, batches of 64 per rank, through
//! `Trainer::fit` with `fulgur::strategy::Ddp`. The binary starts itself under
//! `mpirun -n 1` and then `mpirun -n 2` (the children know themselves by the environment variable
//! `FULGUR_BENCH_DDP_CHILD`), so both are measured in the same run, and prints for each: steps per
//! second and samples per second of the timed steps (after warm-up steps), the share of the step spent
//! in `Strategy::all_reduce_f32` (counted by a strategy that wraps `Ddp`), and the share that
//! `GradBuffer::average` (gather to the host, the all-reduce, scatter back) takes, timed alone on the
//! same gradients. Then the ratio of 2 ranks to 1.
//!
//! Two ranks on a machine of two cores (shared with everything else that runs there) cannot double the
//! throughput: the figure is a measurement, not a target. `FULGUR_BENCH_STEPS` sets the timed steps
//! (default 100); without `--bench` (as under `cargo test --benches`) it runs 3 of them.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use fulgur::strategy::{Ddp, GradBuffer, ReduceOp, Strategy};

const CHILD: &str = "FULGUR_BENCH_DDP_CHILD";
const BATCH: usize = 64;
const WARMUP: u64 = 5;

type Mlp = (
    Linear<784, 512>,
    ReLU,
    Linear<512, 512>,
    ReLU,
    Linear<512, 10>,
);

#[derive(Clone, Serialize, Deserialize)]
struct Hparams {
    lr: f64,
}

#[derive(ModuleState)]
struct Bench<D: Backend> {
    net: Built<Mlp, D>,
    #[hparams]
    hparams: Hparams,
}

#[lightning_module]
impl<D: Backend> Bench<D> {
    fn configure_optimizers(&self) -> Adam<D> {
        Adam::new(AdamConfig {
            lr: self.hparams.lr,
            ..Default::default()
        })
    }

    #[log(train_loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<784, 10, D>,
        grads: Gradients<f32, D>,
    ) -> Loss<D> {
        let logits = self.net.forward_mut(batch.x.traced(grads));
        cross_entropy_with_logits_loss(logits, batch.y)
    }
}

/// `Ddp`, with the time spent in `all_reduce_f32` counted.
#[derive(Clone)]
struct Timed {
    ddp: Ddp,
    nanos: Arc<AtomicU64>,
}

impl Strategy for Timed {
    fn rank(&self) -> usize {
        self.ddp.rank()
    }
    fn world_size(&self) -> usize {
        self.ddp.world_size()
    }
    fn barrier(&self) -> fulgur::Result<()> {
        self.ddp.barrier()
    }
    fn broadcast(&self, data: &mut Vec<u8>, root: usize) -> fulgur::Result<()> {
        self.ddp.broadcast(data, root)
    }
    fn all_reduce(&self, values: &mut [f64], op: ReduceOp) -> fulgur::Result<()> {
        self.ddp.all_reduce(values, op)
    }
    fn all_reduce_f32(&self, values: &mut [f32], op: ReduceOp) -> fulgur::Result<()> {
        let start = Instant::now();
        let result = self.ddp.all_reduce_f32(values, op);
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }
    fn fail(&self, error: &fulgur::Error) {
        self.ddp.fail(error)
    }
}

/// What rank 0 of one `mpirun` measured.
struct Figures {
    world: usize,
    steps: u64,
    step: Duration,
    all_reduce: Duration,
    average: Duration,
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let steps: u64 = match std::env::var("FULGUR_BENCH_STEPS") {
        Ok(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("FULGUR_BENCH_STEPS must be a number of steps, got `{s}`");
            std::process::exit(2)
        }),
        Err(_) if bench_mode => 100,
        Err(_) => 3,
    };
    if std::env::var_os(CHILD).is_some() {
        if let Err(e) = child(steps) {
            eprintln!("ddp bench child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut figures = Vec::new();
    for world in [1, 2] {
        match launch(world, steps) {
            Ok(f) => figures.push(f),
            Err(e) => {
                eprintln!("ddp bench: {e}");
                std::process::exit(1);
            }
        }
    }
    report(&figures);
}

/// Runs this binary under `mpirun -n world` and reads rank 0's figures from its output.
fn launch(world: usize, steps: u64) -> Result<Figures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let output = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-x", CHILD, "-n"])
        .arg(world.to_string())
        .arg(&exe)
        .env(CHILD, "1")
        .env("FULGUR_BENCH_STEPS", steps.to_string())
        .output()
        .map_err(|e| format!("cannot run `mpirun` (is Open MPI installed?): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`mpirun -n {world}` failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FIGURES "))
        .ok_or_else(|| format!("`mpirun -n {world}` printed no figures:\n{stdout}"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .map(|w| {
            w.parse()
                .map_err(|_| format!("a bad figure `{w}` in `{line}`"))
        })
        .collect::<Result<_, _>>()?;
    let [w, s, step, all_reduce, average] = nums[..] else {
        return Err(format!("five figures expected, got `{line}`"));
    };
    Ok(Figures {
        world: w as usize,
        steps: s as u64,
        step: Duration::from_secs_f64(step),
        all_reduce: Duration::from_secs_f64(all_reduce),
        average: Duration::from_secs_f64(average),
    })
}

/// One rank: warm-up steps, timed steps, then `GradBuffer::average` alone on this step's gradients.
fn child(steps: u64) -> fulgur::Result<()> {
    let ddp = Ddp::new()?;
    let (rank, world) = (ddp.rank(), ddp.world_size());
    let nanos = Arc::new(AtomicU64::new(0));
    let strategy = Timed {
        ddp: ddp.clone(),
        nanos: nanos.clone(),
    };

    // Enough samples that no epoch ends during the timed steps, the same on every rank.
    let samples = BATCH * world * (WARMUP + steps + 1) as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    let features: Vec<f32> = (0..samples * 784).map(|_| next()).collect();
    let labels: Vec<usize> = (0..samples).map(|i| i % 10).collect();
    let dev = Cpu::seed_from_u64(0);
    let mut train =
        ClassificationData::<784, 10>::new(features, labels)?.loader(BATCH, true, &dev)?;

    let model = Bench::from_hparams(Hparams { lr: 1e-3 }, &dev)?;
    let mut trainer = Trainer::builder()
        .max_steps(WARMUP)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .strategy(strategy.clone())
        .build()?;
    trainer.fit(model, &mut train, None, None)?;

    nanos.store(0, Ordering::Relaxed);
    trainer.set_max_steps(Some(WARMUP + steps))?;
    ddp.barrier()?;
    let start = Instant::now();
    // A second `fit` continues from step WARMUP (with a fresh optimizer, which costs nothing here).
    let model = trainer
        .take_module()
        .ok_or_else(|| fulgur::Error::user("the trainer lost its module"))?;
    trainer.fit(model, &mut train, None, None)?;
    let wall = start.elapsed();
    let all_reduce = Duration::from_nanos(nanos.load(Ordering::Relaxed));

    // `GradBuffer::average` alone, on real gradients of the trained network.
    let mut module = trainer
        .take_module()
        .ok_or_else(|| fulgur::Error::user("the trainer lost its module"))?;
    let x: Tensor<Rank2<BATCH, 784>, f32, Cpu> = dev.sample_normal();
    let grads = module.net.alloc_grads();
    let loss = module.net.forward_mut(x.traced(grads)).square().mean();
    let mut grads = loss.backward();
    let mut buffer = GradBuffer::default();
    let runs = steps.clamp(1, 20);
    ddp.barrier()?;
    let start = Instant::now();
    for _ in 0..runs {
        buffer.average(&mut module.net, &mut grads, &ddp)?;
    }
    let average = start.elapsed() / runs as u32;

    if rank == 0 {
        let step = wall / steps as u32;
        let all_reduce = all_reduce / steps as u32;
        println!(
            "FIGURES {world} {steps} {} {} {}",
            step.as_secs_f64(),
            all_reduce.as_secs_f64(),
            average.as_secs_f64()
        );
    }
    Ok(())
}

fn report(figures: &[Figures]) {
    println!(
        "MLP 784-512-512-10, Adam, batch {BATCH} per rank, {} timed steps after {WARMUP} warm-up steps",
        figures.first().map_or(0, |f| f.steps)
    );
    println!(
        "{:>5} {:>9} {:>11} {:>10} {:>15} {:>20}",
        "ranks", "steps/s", "samples/s", "step", "all_reduce_f32", "GradBuffer::average"
    );
    let share = |part: Duration, whole: Duration| 100.0 * part.as_secs_f64() / whole.as_secs_f64();
    for f in figures {
        let per_s = 1.0 / f.step.as_secs_f64();
        println!(
            "{:>5} {:>9.1} {:>11.0} {:>8.2}ms {:>14.1}% {:>19.1}%",
            f.world,
            per_s,
            per_s * (BATCH * f.world) as f64,
            f.step.as_secs_f64() * 1e3,
            share(f.all_reduce, f.step),
            share(f.average, f.step),
        );
    }
    if let [one, two] = figures {
        let ratio = one.step.as_secs_f64() / two.step.as_secs_f64();
        println!(
            "2 ranks / 1 rank: {ratio:.2}x steps/s, {:.2}x samples/s (the global batch doubles; {} cores here)",
            2.0 * ratio,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
}

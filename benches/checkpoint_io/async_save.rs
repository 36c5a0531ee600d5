//! Saving inside `fit`: the training stall of an asynchronous save against a synchronous one, and the
//! peak extra memory of `Trainer::save_checkpoint`.
//!
//! The model is 8 linear layers of `WIDTH` × `WIDTH` (2048 in bench mode: 33.6M f32 parameters, 16.8 MB
//! per weight matrix) trained with Adam, so its state (weights and the two Adam moments) is 403 MB. A
//! `ModelCheckpoint` saves it every `EVERY` optimizer steps (keeping the newest file).
//!
//! **Stall.** A timing callback stamps the start of every training batch, so that one interval is one
//! step with its hooks. Per round, one `fit` saves synchronously and one with `async_checkpointing`
//! (their order alternates), `SAVES` saves each and one more at the end. The stall of a save is the
//! time of the `EVERY - CLEAN` intervals from the step that saves on, minus as many *clean steps*; a
//! save's clean step is the median of the `CLEAN` intervals just before it and the `CLEAN` just before
//! the next save (when it is written): measured on both sides of the save, as the speed of a shared
//! machine drifts within a run. With async saving the stall counts the snapshot, the staging copy on
//! the writer thread and any copy the optimizer makes of a tensor not yet staged (copy on write), the
//! encode, hash and write at idle priority, the competition of all that with training for cores and
//! memory bandwidth, and any wait for the previous save; with a synchronous save it is the save. The
//! stall is the median async stall over the median sync stall, both over every save of every round;
//! the detail lines split each stall into the saving step, the next step (where the optimizer would
//! copy what the save still holds) and the rest, and give the first async save of a run on its own (it
//! copies into the staging buffers the writer warmed after the first step). `FULGUR_BENCH_DEBUG`
//! prints every step's time.
//!
//! **Cores.** The stall is measured twice: with training in a pool of one core less than the machine
//! has, which leaves the writer a core, as training on a GPU or on a machine with more cores than a
//! step uses does; then with training on every core (dfdx splits its matrix products over rayon's
//! pool, one thread per core), where the writer's work can only take its time from training. The
//! summary line, `async stall`, is the second; the first is the last line of the details. Each block
//! prints its clean step, so that what training gives up for the spare core shows too.
//!
//! **Memory.** After one step of `fit`, `Trainer::save_checkpoint` of the full state, with the peak RSS
//! reset just before (Linux: `5` into `/proc/self/clear_refs`) and read just after (`VmHWM` − the
//! `VmRSS` before). A save encodes each tensor straight from its buffer: the module's weights are
//! copied, one at a time, into one reused host buffer (the largest tensor: 16.8 MB here), the Adam
//! moments are written straight from their buffers on the CPU, and the file goes through a 1 MiB
//! `BufWriter`; the page cache the file lands in is not the process's memory. That bounds the peak to
//! the largest tensor plus a few MB, whatever the size of the state.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fulgur::callbacks::{Callback, CallbackContext, ModelCheckpoint};
use fulgur::dfdx::prelude::*;
use fulgur::optim::Adam;
use fulgur::prelude::*;
use fulgur::trainer::DynLoader;

use super::{median, peak_during};

/// Layers of the model.
const LAYERS: usize = 8;
/// Optimizer steps between two saves.
const EVERY: usize = 12;
/// Saves per run.
const SAVES: usize = 8;
/// The steps before a save that are its clean reference: by then the previous save is written.
const CLEAN: usize = 4;
/// Samples per batch.
const BATCH: usize = 4;

/// One module type per width: dfdx's linear layers have their sizes in their type.
macro_rules! model {
    ($name:ident, $width:expr) => {
        #[derive(ModuleState)]
        pub struct $name<D: Backend> {
            net: Built<
                (
                    (
                        (Linear<$width, $width>, ReLU),
                        (Linear<$width, $width>, ReLU),
                        (Linear<$width, $width>, ReLU),
                        (Linear<$width, $width>, ReLU),
                    ),
                    (
                        (Linear<$width, $width>, ReLU),
                        (Linear<$width, $width>, ReLU),
                        (Linear<$width, $width>, ReLU),
                        Linear<$width, $width>,
                    ),
                ),
                D,
            >,
            #[hparams]
            hparams: (),
        }

        #[lightning_module]
        impl<D: Backend> $name<D> {
            fn configure_optimizers(&self) -> Adam<D> {
                Adam::new(Default::default())
            }

            fn training_step(
                &mut self,
                batch: ClassificationBatch<$width, $width, D>,
                grads: Gradients<f32, D>,
            ) -> Loss<D> {
                let logits = self.net.forward_mut(batch.x.traced(grads));
                cross_entropy_with_logits_loss(logits, batch.y)
            }
        }

        impl Model for $name<Cpu> {
            const WIDTH: usize = $width;
            fn loader(samples: usize, dev: &Cpu) -> Box<DynLoader<'static, Self::Batch>> {
                let features = (0..samples * $width)
                    .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
                    .collect();
                let labels = (0..samples).map(|i| (i * 31) % $width).collect();
                let data = ClassificationData::<$width, $width>::new(features, labels)
                    .expect("training data");
                Box::new(data.loader(BATCH, false, dev).expect("a loader"))
            }
        }
    };
}

model!(Big, 2048);
model!(Small, 64);

/// What the runs need of a model type besides the module.
trait Model: LightningModule<Cpu, Hparams = ()> + 'static {
    /// The width of its layers.
    const WIDTH: usize;
    /// A loader of `samples` samples, in order, in batches of `BATCH`.
    fn loader(samples: usize, dev: &Cpu) -> Box<DynLoader<'static, Self::Batch>>;
}

/// Stamps the start of every training batch.
struct Stamps(Arc<Mutex<Vec<Instant>>>);

impl Callback for Stamps {
    fn on_train_batch_start(&mut self, _: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        self.0.lock().expect("stamps").push(Instant::now());
        Ok(())
    }
}

/// The two figures, as the lines `checkpoint_io` prints: `(stall lines, memory lines)`; the last line
/// of each is the summary line. `big` picks the 403 MB model (bench mode), else a small one (smoke test).
pub fn run(dir: &Path, big: bool, rounds: usize) -> (Vec<String>, Vec<String>) {
    // Memory first, in a process that has not trained yet.
    if big {
        let memory = memory::<Big<Cpu>>(dir);
        (stalls_both_ways::<Big<Cpu>>(dir, rounds), memory)
    } else {
        let memory = memory::<Small<Cpu>>(dir);
        (stalls_both_ways::<Small<Cpu>>(dir, rounds), memory)
    }
}

/// The stall measured twice: in a pool of one core less than the machine has, which leaves a core to
/// the writer, then with training on every core (the default thread pool, which dfdx's matrix products
/// split over). The summary line (the last) is the second's; the first's comes after the details,
/// reworded.
fn stalls_both_ways<M: Model>(dir: &Path, rounds: usize) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spare = cores.saturating_sub(1).max(1);
    let (threads, named) = if spare < cores {
        (
            format!("training on {spare} of {cores} cores, one left to the writer"),
            format!("async stall with a core left to the writer ({spare} of {cores} training): "),
        )
    } else {
        let one = "training on the one core (none to spare)".to_string();
        (one, "async stall on the one core: ".to_string())
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spare)
        .build()
        .expect("a thread pool");
    let mut left = pool.install(|| stall::<M>(dir, rounds, &threads));
    let left_summary = left
        .pop()
        .expect("a summary line")
        .replacen("async stall: ", &named, 1);
    let mut every = stall::<M>(dir, rounds, &format!("training on all {cores} cores"));
    let summary = every.pop().expect("a summary line");
    left.extend(every);
    left.push(left_summary);
    left.push(summary);
    left
}

/// The intervals between the starts of consecutive training batches of one `fit`, in seconds.
fn fit_intervals<M: Model>(dir: &Path, async_saves: bool) -> Vec<f64> {
    // A save after the last counted one ends the run: its clean steps are the last.
    let steps = EVERY * (SAVES + 1) + 1;
    let run_dir = tempfile::tempdir_in(dir).expect("a run directory");
    let stamps = Arc::new(Mutex::new(Vec::with_capacity(steps)));
    let mut trainer = Trainer::builder()
        .max_steps(steps as u64)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .default_root_dir(run_dir.path())
        .async_checkpointing(async_saves)
        .callback(Stamps(Arc::clone(&stamps)))
        .callback(
            ModelCheckpoint::builder()
                .every_n_train_steps(EVERY as i64)
                .save_top_k(1)
                .build()
                .expect("a checkpoint callback"),
        )
        .build()
        .expect("a trainer");
    let dev = Cpu::seed_from_u64(0);
    let module = M::from_hparams((), &dev).expect("a module");
    let mut train = M::loader(steps * BATCH, &dev);
    trainer.fit(module, &mut *train, None, None).expect("fit");
    let stamps = stamps.lock().expect("stamps");
    assert_eq!(stamps.len(), steps, "one stamp per step");
    stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

/// The stall of every save of one run, split in [the saving step, the step after it (where the
/// optimizer would copy the tensors a save still holds), the steps after that up to the next save's
/// clean steps]: those `EVERY - CLEAN` intervals from the saving step on, minus as many clean steps.
/// The clean steps of a save are the `CLEAN` intervals just before it and the `CLEAN` just before the
/// next save (by then the save is written), and a clean step is their median: measured on both
/// sides of the save, as the speed of a shared machine drifts within a run. Saves happen at the end
/// of steps `EVERY`, `2 EVERY`, ... (interval indices `EVERY - 1`, ...); a run has `EVERY` steps
/// after its last save.
fn stalls(intervals: &[f64]) -> Vec<[f64; 3]> {
    (1..=SAVES)
        .map(|k| k * EVERY - 1)
        .filter(|&s| s + EVERY <= intervals.len())
        .map(|s| {
            let next = s + EVERY;
            let clean = median(
                intervals[s - CLEAN..s]
                    .iter()
                    .chain(&intervals[next - CLEAN..next])
                    .copied()
                    .collect(),
            );
            let rest: f64 = intervals[s + 2..next - CLEAN]
                .iter()
                .map(|t| t - clean)
                .sum();
            [intervals[s] - clean, intervals[s + 1] - clean, rest]
        })
        .collect()
}

fn stall<M: Model>(dir: &Path, rounds: usize, threads: &str) -> Vec<String> {
    let (mut sync, mut async_) = (Vec::new(), Vec::new());
    let mut clean_steps = Vec::new();
    // The stall of each run's first async save (into the staging buffers warmed after step 1).
    let mut first = Vec::new();
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut runs = order.map(|a| (a, fit_intervals::<M>(dir, a)));
        runs.sort_by_key(|(a, _)| *a);
        let [(_, s), (_, a)] = runs;
        if std::env::var_os("FULGUR_BENCH_DEBUG").is_some() {
            let ms = |v: &[f64]| {
                v.iter()
                    .map(|t| format!("{:.0}", t * 1e3))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            eprintln!("every step, ms\nsync:  {}\nasync: {}", ms(&s), ms(&a));
        }
        // Each save against the steps just before it: the load of a shared machine drifts.
        clean_steps.extend([
            median(s[1..EVERY - 1].to_vec()),
            median(a[1..EVERY - 1].to_vec()),
        ]);
        let (s, a) = (stalls(&s), stalls(&a));
        first.push(a[0].iter().sum::<f64>());
        sync.extend(s);
        async_.extend(a);
    }
    // Medians of the total and of each part (which need not add up).
    let summary = |v: &[[f64; 3]]| {
        let total = median(v.iter().map(|p| p.iter().sum()).collect());
        let part = |i: usize| median(v.iter().map(|p| p[i]).collect());
        (total, [part(0), part(1), part(2)])
    };
    let line = |what: &str, (total, parts): (f64, [f64; 3])| {
        format!(
            "{what} stall {:>7.1} ms (the saving step {:+.1} ms, the next {:+.1} ms, the {} after {:+.1} ms)",
            total * 1e3,
            parts[0] * 1e3,
            parts[1] * 1e3,
            EVERY - CLEAN - 2,
            parts[2] * 1e3
        )
    };
    let (s, a) = (summary(&sync), summary(&async_));
    let every: Vec<String> = async_
        .iter()
        .map(|p| format!("{:.0}", p.iter().sum::<f64>() * 1e3))
        .collect();
    vec![
        format!(
            "\nsaving inside fit, {threads}: {LAYERS} linear layers of {w}x{w}, Adam, batch {BATCH}, a \
             save every {EVERY} steps, {SAVES} saves per run, {} rounds; a clean step {:.1} ms \
             (median); medians over the saves",
            rounds.max(1),
            median(clean_steps) * 1e3,
            w = M::WIDTH,
        ),
        line("sync save: ", s),
        line("async save:", a),
        format!("  every async save's stall, ms: {}", every.join(" ")),
        format!(
            "  a trainer's first async save (into the staging buffers warmed after the first \
             step): {:.1} ms (median)",
            median(first) * 1e3
        ),
        format!("async stall: {:.1}% of a sync save", 100.0 * a.0 / s.0),
    ]
}

fn memory<M: Model>(dir: &Path) -> Vec<String> {
    let run_dir = tempfile::tempdir_in(dir).expect("a run directory");
    let mut trainer = Trainer::builder()
        .max_steps(1)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .default_root_dir(run_dir.path())
        .build()
        .expect("a trainer");
    let dev = Cpu::seed_from_u64(0);
    let module = M::from_hparams((), &dev).expect("a module");
    let mut train = M::loader(BATCH, &dev);
    trainer.fit(module, &mut *train, None, None).expect("fit");
    let path = run_dir.path().join("state.ckpt");
    let measured = peak_during(|| trainer.save_checkpoint(&path, false).expect("a save"));
    let ckpt = fulgur::checkpoint::read_checkpoint(&path).expect("the saved file");
    let opt = ckpt.optimizer.as_ref().expect("the optimizer state");
    let state: usize = ckpt
        .state_dict
        .values()
        .chain(opt.params.values().flat_map(|s| s.values()))
        .map(|t| t.le_bytes().len())
        .sum();
    let largest = ckpt
        .state_dict
        .values()
        .map(|t| t.le_bytes().len())
        .max()
        .unwrap_or(0);
    match measured {
        Some((before, peak)) => vec![
            format!(
                "\nTrainer::save_checkpoint: RSS {:.1} MB before, peak {:.1} MB during; largest tensor \
                 {:.1} MB",
                before as f64 / 1e6,
                peak as f64 / 1e6,
                largest as f64 / 1e6
            ),
            format!(
                "save peak extra memory: {} MB for a {} MB state",
                (peak.saturating_sub(before) as f64 / 1e6).round(),
                (state as f64 / 1e6).round()
            ),
        ],
        _ => vec![format!(
            "save peak extra memory: n/a (no /proc/self/clear_refs and VmHWM here) for a {} MB state",
            (state as f64 / 1e6).round()
        )],
    }
}

//! `Trainer::fit` with `Ddp` under `mpirun -n 2`: the run equals one process with the same global
//! batch, writes the same files once, resumes bit for bit, decides on reduced metrics, and ends every
//! rank when one fails, leaving a loadable checkpoint directory.
//!
//! Every run trains a tiny classifier (8 → 16 → 4) on 256 synthetic samples: 4 steps per epoch, with a
//! global batch of 64 (32 per rank on two ranks), plus 64 validation samples.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{read_checkpoint, Checkpoint};
use fulgur::data::ClassificationLoader;
use fulgur::dfdx::optim::{Momentum, SgdConfig};
use fulgur::dfdx::prelude::*;
use fulgur::optim::Sgd;
use fulgur::prelude::*;
use fulgur::strategy::{Ddp, Strategy};

use crate::support::{in_child, mpirun, passed, test_name, Run};

const TRAIN: usize = 256;
const VAL: usize = 64;
const GLOBAL_BATCH: usize = 64;
/// Two epochs of four steps.
const STEPS: u64 = 8;

type Net = (Linear<8, 16>, ReLU, Linear<16, 4>);

#[derive(Clone, Serialize, Deserialize)]
struct Hparams {
    lr: f64,
}

/// This process's rank, for the module (set by each child before `fit`).
static RANK: AtomicUsize = AtomicUsize::new(0);

#[derive(ModuleState)]
struct Tiny<D: Backend> {
    net: Built<Net, D>,
    #[hparams]
    hparams: Hparams,
    /// Training steps this process ran (since its `fit` started).
    #[skip]
    steps: usize,
    /// Training epochs this process ended.
    #[skip]
    epochs: usize,
}

#[lightning_module]
impl<D: Backend> Tiny<D> {
    fn configure_optimizers(&self) -> Sgd<D> {
        Sgd::new(SgdConfig {
            lr: self.hparams.lr,
            momentum: Some(Momentum::Classic(0.9)),
            weight_decay: None,
        })
    }

    #[log(train_loss)]
    fn training_step(
        &mut self,
        batch: ClassificationBatch<8, 4, D>,
        grads: Gradients<f32, D>,
    ) -> fulgur::Result<Loss<D>> {
        self.steps += 1;
        sabotage(self.steps)?;
        let logits = self.net.forward_mut(batch.x.traced(grads));
        Ok(cross_entropy_with_logits_loss(logits, batch.y))
    }

    #[log(val_loss)]
    fn validation_step(&self, batch: ClassificationBatch<8, 4, D>) -> f32 {
        let logits = self.net.forward(batch.x);
        cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0]
    }

    /// A value that differs between the ranks: its mean over the two ranks is lowest after epoch 1,
    /// while rank 0's own is lowest after epoch 0 and rank 1's after epoch 2.
    #[log(score)]
    fn on_train_epoch_end(&mut self) -> f32 {
        const SCORES: [[f32; 2]; 3] = [[0.0, 10.0], [1.0, 1.0], [5.0, 0.0]];
        let epoch = self.epochs.min(SCORES.len() - 1);
        self.epochs += 1;
        SCORES[epoch][RANK.load(Ordering::Relaxed) % 2]
    }
}

/// What `DDP_FAIL` asks rank 1 to do at its training step `DDP_AT_STEP`: return an error
/// (`error`) or kill itself (`sigkill`).
fn sabotage(step: usize) -> fulgur::Result<()> {
    let at: Option<usize> = std::env::var("DDP_AT_STEP")
        .ok()
        .and_then(|s| s.parse().ok());
    if RANK.load(Ordering::Relaxed) != 1 || at != Some(step) {
        return Ok(());
    }
    match std::env::var("DDP_FAIL").as_deref() {
        Ok("error") => Err(fulgur::Error::user(format!(
            "rank 1 fails on purpose at step {step}"
        ))),
        Ok("sigkill") => {
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
            panic!("rank 1 is still alive after `kill -9 {pid}`");
        }
        _ => Ok(()),
    }
}

/// Deterministic features, and labels the network can learn (the largest of the first four features).
fn data(n: usize, seed: u64) -> ClassificationData<8, 4> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let features: Vec<f32> = (0..n * 8).map(|_| next()).collect();
    let labels = features
        .chunks(8)
        .map(|row| (0..4).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
        .collect();
    ClassificationData::new(features, labels).unwrap()
}

/// Training and validation loaders of `batch` samples.
fn loaders(
    batch: usize,
) -> (
    ClassificationLoader<8, 4, Cpu>,
    ClassificationLoader<8, 4, Cpu>,
) {
    let dev = Cpu::default();
    (
        data(TRAIN, 1).loader(batch, true, &dev).unwrap(),
        data(VAL, 2).loader(batch, false, &dev).unwrap(),
    )
}

/// A fresh module; `seed` seeds its device, so two seeds give two sets of initial weights.
fn module(seed: u64) -> Tiny<Cpu> {
    Tiny::from_hparams(Hparams { lr: 0.1 }, &Cpu::seed_from_u64(seed)).unwrap()
}

/// The checkpoint policy of the runs that compare with each other: the best two epochs by `val_loss`
/// and `last.ckpt`, in `root/checkpoints`.
fn best_two(root: &Path) -> ModelCheckpoint {
    ModelCheckpoint::builder()
        .dirpath(root.join("checkpoints"))
        .filename("{epoch}-{step}")
        .monitor("val_loss")
        .save_top_k(2)
        .save_last(true)
        .build()
        .unwrap()
}

/// A trainer that stops at `max_steps`, logging under `root`, with `strategy`; it saves
/// asynchronously when `DDP_ASYNC` is set.
fn trainer(
    root: &Path,
    max_steps: u64,
    callback: ModelCheckpoint,
    strategy: impl Strategy + 'static,
) -> Trainer<Tiny<Cpu>> {
    Trainer::builder()
        .async_checkpointing(std::env::var_os("DDP_ASYNC").is_some())
        .max_steps(max_steps)
        .default_root_dir(root)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .callback(callback)
        .strategy(strategy)
        .build()
        .unwrap()
}

/// `Ddp` in a child, which must run under `mpirun`; the rank is handed to the module.
fn ddp() -> Ddp {
    assert!(
        in_child(),
        "a child test runs under `mpirun`, launched by its parent test"
    );
    let ddp = Ddp::new().unwrap();
    RANK.store(ddp.rank(), Ordering::Relaxed);
    ddp
}

/// The directory a parent passes to its child in `DDP_DIR`.
fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("DDP_DIR").expect("`DDP_DIR` is set by the parent"))
}

/// Makes every later write of a non-empty regular file by this process fatal (`SIGXFSZ`), so a rank
/// that writes a checkpoint, a log line or a link target it should leave to rank 0 ends the run.
fn forbid_file_writes() {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=0"])
        .status()
        .expect("run `prlimit` (util-linux)");
    assert!(status.success(), "`prlimit --fsize=0` failed: {status}");
}

/// The file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The run every comparison shares: two ranks, 32 samples each, `STEPS` steps from the weights of seed
/// 0, in `root` (the directory is kept for the rest of the test binary's life).
struct TwoRankRun {
    root: PathBuf,
}

fn two_rank_run() -> &'static TwoRankRun {
    static RUN: OnceLock<(tempfile::TempDir, TwoRankRun)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("two");
        mpirun(2, test_name!(child_trains))
            .env("DDP_DIR", &root)
            .env("DDP_STEPS", STEPS.to_string())
            .timeout(Duration::from_secs(60))
            .run()
            .assert_passed();
        (dir, TwoRankRun { root })
    })
    .1
}

/// One process with the whole global batch: what the two ranks must reproduce.
fn one_rank_run(root: &Path) -> Trainer<Tiny<Cpu>> {
    let (mut train, mut val) = loaders(GLOBAL_BATCH);
    let mut trainer = trainer(root, STEPS, best_two(root), fulgur::strategy::SingleProcess);
    trainer
        .fit(module(0), &mut train, Some(&mut val), None)
        .unwrap();
    trainer
}

#[test]
#[ignore = "child of the tests that compare with a two-rank run, run under mpirun"]
fn child_trains() {
    let ddp = ddp();
    let root = child_dir();
    let steps: u64 = std::env::var("DDP_STEPS").unwrap().parse().unwrap();
    let resume = std::env::var("DDP_RESUME").is_ok();
    // Both ranks build the module with different weights: `fit` starts both from rank 0's.
    let model = module(ddp.rank() as u64);
    let (mut train, mut val) = loaders(GLOBAL_BATCH / ddp.world_size());
    let mut trainer = trainer(&root, steps, best_two(&root), ddp.clone());
    if ddp.rank() == 1 {
        forbid_file_writes();
    }
    let ckpt = resume.then_some(CkptPath::Last);
    trainer
        .fit(model, &mut train, Some(&mut val), ckpt)
        .unwrap();
    assert_eq!(trainer.global_step(), steps);
    passed(&ddp);
}

/// The weights of `ckpt`, by name, as `f32` values.
fn weights(ckpt: &Checkpoint) -> Vec<(String, Vec<f32>)> {
    ckpt.state_dict
        .iter()
        .map(|(name, t)| (name.clone(), t.as_f32().unwrap().into_owned()))
        .collect()
}

#[test]
fn two_ranks_of_32_train_the_weights_of_one_process_of_64() {
    let two = read_checkpoint(two_rank_run().root.join("checkpoints/last.ckpt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = one_rank_run(dir.path());
    assert_eq!(two.global_step, STEPS);
    let one = one.build_checkpoint(false).unwrap();
    let (one, two) = (weights(&one), weights(&two));
    assert_eq!(
        one.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        two.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // Relative to each tensor's largest weight: only the order of the float sums differs.
    let mut worst = (0.0f32, String::new());
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            let rel = (x - y).abs() / scale;
            if rel > worst.0 {
                worst = (rel, name.clone());
            }
        }
    }
    eprintln!(
        "after {STEPS} steps, the largest relative difference between 2 ranks × 32 and 1 × 64 is {:e} \
         (in `{}`)",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-5,
        "the two-rank weights differ from one process's by {:e} relative, in `{}`",
        worst.0,
        worst.1
    );
}

/// Every file below `dir`, as paths relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn two_ranks_write_exactly_the_files_of_one_process_each_once() {
    let two = &two_rank_run().root;
    let dir = tempfile::tempdir().unwrap();
    one_rank_run(dir.path());
    let expected = tree(dir.path());
    assert_eq!(
        names(&dir.path().join("checkpoints")),
        ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    );
    // Rank 1 ran with a file-size limit of zero (`forbid_file_writes`): had it written any of these,
    // or anything else, it would have been killed and the run would have failed.
    assert_eq!(tree(two), expected);
    // The logger's file, appended to at every logging step, holds the lines of one writer.
    let lines = |root: &Path| {
        std::fs::read_to_string(root.join("lightning_logs/version_0/metrics.csv"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(two), lines(dir.path()));
}

/// The weights' and the optimizer's bytes, with the step count.
fn training_state(ckpt: &Checkpoint) -> (u64, Vec<(String, Vec<u8>)>) {
    let mut state: Vec<(String, Vec<u8>)> = ckpt
        .state_dict
        .iter()
        .map(|(name, t)| (name.clone(), t.le_bytes().into_owned()))
        .collect();
    let opt = ckpt.optimizer.as_ref().expect("a full checkpoint");
    for (param, slots) in &opt.params {
        for (slot, t) in slots {
            state.push((format!("{param}/{slot}"), t.le_bytes().into_owned()));
        }
    }
    (opt.step, state)
}

/// With `async_checkpointing`, rank 0's writer thread saves while both ranks train on, and every rank
/// settles each save at the same points: the files are those of the synchronous two-rank run, written
/// once (rank 1 runs with a file-size limit of zero again), and each checkpoint holds the same
/// training state.
#[test]
fn an_async_saving_two_rank_run_writes_the_files_of_a_synchronous_one() {
    let sync = &two_rank_run().root;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("async");
    mpirun(2, test_name!(child_trains))
        .env("DDP_DIR", &root)
        .env("DDP_STEPS", STEPS.to_string())
        .env("DDP_ASYNC", "1")
        .timeout(Duration::from_secs(60))
        .run()
        .assert_passed();
    assert_eq!(tree(&root), tree(sync));
    for name in names(&sync.join("checkpoints")) {
        let read = |root: &Path| read_checkpoint(root.join("checkpoints").join(&name)).unwrap();
        let (a, b) = (read(sync), read(&root));
        assert_eq!((a.epoch, a.global_step), (b.epoch, b.global_step), "{name}");
        assert!(
            training_state(&a) == training_state(&b),
            "`{name}` holds another training state when saved asynchronously"
        );
    }
}

#[test]
fn a_two_rank_run_resumed_from_last_inside_an_epoch_ends_bit_identical() {
    let straight = read_checkpoint(two_rank_run().root.join("checkpoints/last.ckpt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("resumed");
    let last = root.join("checkpoints/last.ckpt");
    // Stopped after step 3 of the epoch's 4: `last.ckpt` is written when `fit` ends.
    mpirun(2, test_name!(child_trains))
        .env("DDP_DIR", &root)
        .env("DDP_STEPS", "3")
        .timeout(Duration::from_secs(60))
        .run()
        .assert_passed();
    let stopped = read_checkpoint(&last).unwrap();
    assert_eq!(
        (stopped.global_step, stopped.loops.batches_done),
        (3, 3),
        "the first run should stop inside epoch 0"
    );
    mpirun(2, test_name!(child_trains))
        .env("DDP_DIR", &root)
        .env("DDP_STEPS", STEPS.to_string())
        .env("DDP_RESUME", "last")
        .timeout(Duration::from_secs(60))
        .run()
        .assert_passed();
    let resumed = read_checkpoint(&last).unwrap();
    assert_eq!(resumed.global_step, STEPS);
    let (straight, resumed) = (training_state(&straight), training_state(&resumed));
    assert_eq!(straight.0, resumed.0, "optimizer steps");
    assert_eq!(straight.1.len(), resumed.1.len());
    for ((name, a), (_, b)) in straight.1.iter().zip(&resumed.1) {
        assert!(
            a == b,
            "`{name}` differs between the uninterrupted run and the resumed one"
        );
    }
}

#[test]
fn a_metric_that_differs_between_ranks_drives_the_same_decision_on_both() {
    let dir = tempfile::tempdir().unwrap();
    mpirun(2, test_name!(child_decides_on_score))
        .env("DDP_DIR", dir.path())
        .timeout(Duration::from_secs(60))
        .run()
        .assert_passed();
    // The mean over the ranks is best after epoch 1 (1.0 against 5.0 and 2.5); rank 0's own value
    // would keep epoch 0, rank 1's epoch 2.
    assert_eq!(
        names(&dir.path().join("checkpoints")),
        ["best-epoch=1.ckpt"]
    );
}

#[test]
#[ignore = "child of `a_metric_that_differs_between_ranks_drives_the_same_decision_on_both`, run under mpirun"]
fn child_decides_on_score() {
    let ddp = ddp();
    let root = child_dir();
    let best = ModelCheckpoint::builder()
        .dirpath(root.join("checkpoints"))
        .filename("best-{epoch}")
        .monitor("score")
        .save_top_k(1)
        .build()
        .unwrap();
    let (mut train, _) = loaders(GLOBAL_BATCH / ddp.world_size());
    let mut trainer = Trainer::builder()
        .max_epochs(3)
        .default_root_dir(&root)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .callback(best)
        .strategy(ddp.clone())
        .build()
        .unwrap();
    if ddp.rank() == 1 {
        forbid_file_writes();
    }
    trainer.fit(module(0), &mut train, None, None).unwrap();
    let rank = ddp.rank();
    let cb = trainer.checkpoint_callback().unwrap();
    assert_eq!(cb.best_model_score(), Some(1.0), "rank {rank}");
    let best = cb.best_model_path().unwrap();
    assert_eq!(
        best.file_name().unwrap().to_string_lossy(),
        "best-epoch=1.ckpt",
        "rank {rank}"
    );
    // The last epoch's mean, on every rank: (5.0 + 0.0) / 2.
    assert_eq!(
        trainer.callback_metrics()["score"].as_f64(),
        2.5,
        "rank {rank}"
    );
    passed(&ddp);
}

/// Every checkpoint in `dir` reads and rebuilds the module; anything else is a hidden temporary; and
/// `last.ckpt` holds the end of epoch 0, saved before the failure.
fn assert_loadable(dir: &Path) {
    let names = names(dir);
    assert!(names.contains(&"last.ckpt".to_string()), "{names:?}");
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".ckpt") {
            read_checkpoint(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            Tiny::<Cpu>::load_from_checkpoint(&path, &Cpu::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            assert!(name.starts_with('.'), "not a checkpoint: {name}");
        }
    }
    let last = read_checkpoint(dir.join("last.ckpt")).unwrap();
    assert_eq!(last.global_step, 4, "{names:?}");
}

#[test]
fn an_error_in_one_ranks_training_step_ends_every_rank_and_the_directory_stays_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let run = mpirun(2, test_name!(child_trains))
        .env("DDP_DIR", dir.path())
        .env("DDP_STEPS", STEPS.to_string())
        .env("DDP_FAIL", "error")
        .env("DDP_AT_STEP", "6")
        .timeout(Duration::from_secs(30))
        .run();
    failed_and_loadable(&run, dir.path(), "[fulgur] rank 1 of 2 failed");
    assert!(
        run.stderr.contains("rank 1 fails on purpose at step 6"),
        "{}",
        run.transcript()
    );
}

#[test]
fn a_sigkill_of_one_rank_mid_training_ends_every_rank_and_the_directory_stays_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let run = mpirun(2, test_name!(child_trains))
        .env("DDP_DIR", dir.path())
        .env("DDP_STEPS", STEPS.to_string())
        .env("DDP_FAIL", "sigkill")
        .env("DDP_AT_STEP", "6")
        .timeout(Duration::from_secs(30))
        .run();
    // mpirun's report of the kill, so that no other way of ending passes for it.
    failed_and_loadable(&run, dir.path(), "signal 9");
}

/// The job ended by itself, non-zero, before any rank passed, with `line` on standard error, and left
/// a loadable checkpoint directory.
fn failed_and_loadable(run: &Run, root: &Path, line: &str) {
    run.assert_ended_every_rank();
    assert!(
        run.stderr.contains(line),
        "no `{line}`\n{}",
        run.transcript()
    );
    assert_loadable(&root.join("checkpoints"));
}

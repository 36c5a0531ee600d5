//! Exact resume (guide: Reference, G.6): training k steps, saving, dropping everything, loading the file
//! in a fresh trainer and training to n gives the weights and optimizer state of n steps straight, bit
//! for bit.

use std::path::{Path, PathBuf};

use fulgur::checkpoint::OptimizerState;
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;

use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::{fit_from, weight_bits, WeightBits};

#[derive(Clone, Copy)]
struct Setup {
    accumulate: u64,
    clip: Option<f64>,
    scheduler: bool,
}

const PLAIN: Setup = Setup {
    accumulate: 1,
    clip: None,
    scheduler: false,
};
const FULL: Setup = Setup {
    accumulate: 2,
    clip: Some(0.5),
    scheduler: true,
};

fn trainer(setup: Setup, max_steps: u64, root: &Path) -> Trainer<LitMlp<Cpu>> {
    let mut b = Trainer::builder()
        .max_steps(max_steps)
        .default_root_dir(root)
        .no_logger()
        .enable_checkpointing(false)
        .seed(1234)
        .accumulate_grad_batches(setup.accumulate)
        .val_check_interval(0.5);
    if let Some(c) = setup.clip {
        b = b.gradient_clip_val(c);
    }
    b.build().unwrap()
}

fn hparams(setup: Setup, init_seed: u64) -> Hparams {
    Hparams {
        lr: 1e-2,
        init_seed,
        with_scheduler: setup.scheduler,
    }
}

type Outcome = (WeightBits, OptimizerState, u64, u64);

fn outcome(t: &Trainer<LitMlp<Cpu>>) -> Outcome {
    let ckpt = t.build_checkpoint(false).unwrap();
    (
        weight_bits(t.module().unwrap()),
        ckpt.optimizer.unwrap(),
        t.global_step(),
        t.current_epoch(),
    )
}

fn straight(setup: Setup, n: u64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (mut train, mut val) = loaders();
    let mut t = trainer(setup, n, dir.path());
    t.fit(
        LitMlp::new(hparams(setup, 0)),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    outcome(&t)
}

fn resumed(setup: Setup, k: u64, n: u64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.ckpt");
    {
        let (mut train, mut val) = loaders();
        let mut t = trainer(setup, k, dir.path());
        t.fit(
            LitMlp::new(hparams(setup, 0)),
            &mut train,
            Some(&mut val),
            None,
        )
        .unwrap();
        assert_eq!(t.global_step(), k);
        t.save_checkpoint(&path, false).unwrap();
    }
    // Fresh objects everywhere; the new module even starts from other weights.
    let (mut train, mut val) = loaders();
    let mut t = trainer(setup, n, dir.path());
    t.fit(
        LitMlp::new(hparams(setup, 99)),
        &mut train,
        Some(&mut val),
        Some(CkptPath::Path(path)),
    )
    .unwrap();
    outcome(&t)
}

fn assert_same(a: &Outcome, b: &Outcome) {
    assert_eq!(a.2, b.2, "global_step");
    assert_eq!(a.3, b.3, "current_epoch");
    assert_eq!(a.0.len(), b.0.len());
    for ((na, wa), (nb, wb)) in a.0.iter().zip(&b.0) {
        assert_eq!(na, nb);
        assert!(wa == wb, "weights of `{na}` differ after resume");
    }
    assert_eq!(a.1, b.1, "optimizer state differs after resume");
}

// The digits train split has 1438 samples: 45 batches of 32 per epoch.

#[test]
fn resume_inside_an_epoch_is_bit_exact() {
    let n = 60;
    let base = straight(PLAIN, n);
    assert_eq!(base.3, 1, "60 steps end inside epoch 1");
    assert_same(&base, &resumed(PLAIN, 20, n));
}

#[test]
fn resume_at_an_epoch_boundary_is_bit_exact() {
    assert_same(&straight(PLAIN, 60), &resumed(PLAIN, 45, 60));
}

#[test]
fn resume_with_accumulation_clipping_and_scheduler_is_bit_exact() {
    // 45 batches, accumulating 2: 23 optimizer steps per epoch (the last batch closes a window).
    let n = 40;
    let base = straight(FULL, n);
    assert_same(&base, &resumed(FULL, 10, n));
    assert_same(&base, &resumed(FULL, 23, n));
}

#[test]
fn the_resumed_run_differs_from_a_fresh_one() {
    // Guards the test itself: without loading, a different init gives different weights.
    let dir = tempfile::tempdir().unwrap();
    let (mut train, mut val) = loaders();
    let mut t = trainer(PLAIN, 60, dir.path());
    t.fit(
        LitMlp::new(hparams(PLAIN, 99)),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    assert_ne!(outcome(&t).0, straight(PLAIN, 60).0);
}

/// Saves from inside the loop, at the end of batch `at_step`, as a checkpoint callback would.
struct SaveAt {
    step: u64,
    path: PathBuf,
}

impl Callback for SaveAt {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        if ctx.state().global_step == self.step {
            ctx.save_checkpoint(&self.path, false, self)?;
        }
        Ok(())
    }
}

#[test]
fn a_checkpoint_saved_by_a_callback_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cb.ckpt");
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_steps(60)
        .no_logger()
        .enable_checkpointing(false)
        .seed(1234)
        .val_check_interval(0.5)
        .callback(SaveAt {
            step: 30,
            path: path.clone(),
        })
        .build()
        .unwrap();
    t.fit(
        LitMlp::new(hparams(PLAIN, 0)),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    let base = outcome(&t);
    assert_eq!(base, straight(PLAIN, 60));

    let ckpt = fulgur::checkpoint::read_checkpoint(&path).unwrap();
    assert_eq!(
        (ckpt.global_step, ckpt.loops.epoch, ckpt.loops.batches_done),
        (30, 0, 30)
    );
    let (mut train, mut val) = loaders();
    let mut t = trainer(PLAIN, 60, dir.path());
    t.fit(
        LitMlp::new(hparams(PLAIN, 5)),
        &mut train,
        Some(&mut val),
        Some(CkptPath::Path(path)),
    )
    .unwrap();
    assert_same(&base, &outcome(&t));
}

/// A checkpoint 3 steps into epoch 0 (5 batches per epoch), then the same file with each counter set
/// to what no run can reach: resuming is an error naming the file and the field, never a panic or a
/// wrapped counter, and nothing is trained.
#[test]
fn impossible_counters_in_a_file_are_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.ckpt");
    let builder = || {
        Trainer::builder()
            .no_logger()
            .enable_checkpointing(false)
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .num_sanity_val_steps(0)
            .limit_train_batches(5u64)
    };
    let (mut train, _) = loaders();
    let mut t = builder().max_steps(3).build().unwrap();
    t.fit(LitMlp::new(Hparams::default()), &mut train, None, None)
        .unwrap();
    let base = t.build_checkpoint(false).unwrap();
    assert_eq!(
        (
            base.loops.epoch,
            base.loops.batches_done,
            base.loops.total_batches
        ),
        (0, 3, 3)
    );

    type Edit = fn(&mut fulgur::checkpoint::Checkpoint);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "global_step at u64::MAX",
            |c| (c.global_step, c.loops.global_step) = (u64::MAX, u64::MAX),
            "`loops.global_step` is 18446744073709551615",
        ),
        (
            "a finished epoch at u64::MAX",
            |c| {
                (c.epoch, c.loops.epoch) = (u64::MAX, u64::MAX);
                c.loops.epoch_finished = true;
            },
            "`loops.epoch` is 18446744073709551615",
        ),
        (
            "total_batches at u64::MAX",
            |c| c.loops.total_batches = u64::MAX,
            "`loops.total_batches` is 18446744073709551615",
        ),
        (
            "more optimizer steps than batches",
            |c| (c.global_step, c.loops.global_step) = (10, 10),
            "`loops.global_step` is 10",
        ),
        (
            "a batch position beyond the epoch",
            |c| (c.loops.batches_done, c.loops.total_batches) = (6, 6),
            "`loops.batches_done` is 6",
        ),
        (
            "the header's step differs from the loop's",
            |c| c.global_step = 7,
            "`global_step` is 7",
        ),
    ];
    for (what, edit, expected) in cases {
        let mut ckpt = base.clone();
        edit(&mut ckpt);
        fulgur::checkpoint::write_checkpoint(&path, &ckpt).unwrap();
        let (t, result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fit_from(builder().max_epochs(3), CkptPath::Path(path.clone()))
        }))
        .unwrap_or_else(|_| panic!("{what}: `fit` panicked"));
        let err = match result {
            Ok(()) => panic!(
                "{what}: `fit` resumed and trained to step {}",
                t.global_step()
            ),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&path.display().to_string()), "{what}: {err}");
        assert!(err.contains(expected), "{what}: says `{expected}`: {err}");
        assert_eq!(t.global_step(), 0, "{what}: nothing is restored or trained");
    }
}

/// A checkpoint of `k` steps, rewritten as if a run of two processes had saved it.
fn saved_by_two_processes(k: u64, dir: &Path) -> PathBuf {
    let path = dir.join(format!("two-{k}.ckpt"));
    let (mut train, mut val) = loaders();
    let mut t = trainer(PLAIN, k, dir);
    t.fit(
        LitMlp::new(hparams(PLAIN, 0)),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    t.save_checkpoint(&path, false).unwrap();
    let mut ckpt = fulgur::checkpoint::read_checkpoint(&path).unwrap();
    assert_eq!(ckpt.loops.world_size, None, "one process records none");
    ckpt.loops.world_size = Some(2);
    fulgur::checkpoint::write_checkpoint(&path, &ckpt).unwrap();
    path
}

#[test]
fn another_world_size_resumes_at_an_epoch_boundary_and_is_refused_inside_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let resume = |path: PathBuf| {
        let (mut train, mut val) = loaders();
        let mut t = trainer(PLAIN, 60, dir.path());
        let result = t.fit(
            LitMlp::new(hparams(PLAIN, 0)),
            &mut train,
            Some(&mut val),
            Some(CkptPath::Path(path)),
        );
        result.map(|()| t.global_step())
    };
    // 45 steps end epoch 0: the rest of the run is shared out afresh, with a warning.
    assert_eq!(resume(saved_by_two_processes(45, dir.path())).unwrap(), 60);
    let err = resume(saved_by_two_processes(20, dir.path())).unwrap_err();
    assert!(
        matches!(&err, fulgur::Error::Config { settings, .. } if settings == &["strategy"]),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(
        err.contains("saved by a run of 2 processes part-way through epoch 0")
            && err.contains("resume it with 2 processes"),
        "{err}"
    );
}

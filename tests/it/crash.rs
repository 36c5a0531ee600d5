//! Crash safety under SIGKILL: a training run is killed at random moments, many times over, each new run
//! resuming from `last` where the previous one died, as a job restarted by a scheduler would. After every
//! kill, every checkpoint file in the directory loads and verifies, the newest one's top-k record matches
//! the files on disk (plus at most the one file being replaced), temporaries are never taken for
//! checkpoints and are cleared by the next run, and the next run resumes at the newest step.
//!
//! The test binary is its own child: `child_trains_forever` (ignored, and a no-op without
//! `FULGUR_CRASH_DIR`) trains until killed. `FULGUR_CRASH_SEED` replays a run's sequence of delays.
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fulgur::checkpoint::{read_checkpoint, read_checkpoint_header};
use fulgur::data::SplitMix64;
use fulgur::prelude::*;

use crate::support::child::{test_name, Child};
use crate::support::listing;
use crate::support::wide::*;

const DIR_ENV: &str = "FULGUR_CRASH_DIR";
const SEED_ENV: &str = "FULGUR_CRASH_SEED";
const PID_REUSE_ENV: &str = "FULGUR_CRASH_PID_REUSE_DIR";
/// `1`: the child saves with `async_checkpointing`.
const ASYNC_ENV: &str = "FULGUR_CRASH_ASYNC";

/// Kills of a training child (after it reported that training runs) to aim for, and the least accepted.
const TARGET_KILLS: u64 = 100;
const MIN_KILLS: u64 = 50;
/// The loop stops starting children after this long, whatever the count.
const BUDGET: Duration = Duration::from_secs(80);
/// How long a child may take to start training (a loaded CI machine builds nothing here, but may be slow).
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

#[test]
#[ignore = "the child process of `sigkill_at_random_moments_never_loses_a_checkpoint`; a no-op alone"]
fn child_trains_forever() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        eprintln!("{DIR_ENV} is not set: nothing to do");
        return;
    };
    let dir = PathBuf::from(dir);
    let resume = listing(&dir).iter().any(|n| is_checkpoint_name(n));
    let probe = Probe {
        announce: true,
        ..Probe::default()
    };
    let async_saving = std::env::var_os(ASYNC_ENV).is_some_and(|v| v == "1");
    let mut t = trainer(&dir, probe)
        .max_epochs(1_000_000)
        .async_checkpointing(async_saving)
        .build()
        .unwrap();
    let result = t.fit(
        Wide::new(),
        &mut loader(),
        None,
        resume.then_some(CkptPath::Last),
    );
    // A failed resume must be seen by the parent as an exit, not mistaken for a kill.
    match result {
        Ok(()) => {
            eprintln!("fit returned before the child was killed");
            std::process::exit(3)
        }
        Err(e) => {
            eprintln!("fit failed: {e}");
            std::process::exit(2)
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Kills of a child that had reported training.
    kills: u64,
    /// Kills at a random moment of a child's start-up (setup, resume, interrupted deletions).
    early_kills: u64,
    /// Kills after which a temporary file of the killed child was in the directory.
    mid_write: u64,
    /// Kills after which a replaced top-k file was still there (killed between a save and its delete).
    before_delete: u64,
    /// Checkpoint files read and verified after kills.
    verified: u64,
    /// Children that resumed and reported the expected step.
    child_resumes: u64,
    /// Resumes run in this process on a copy of the directory.
    parent_resumes: u64,
    /// The highest global step seen.
    max_step: u64,
    /// Top-k files (not `last.ckpt`) some child resumed from, by name: each was rotated out like any
    /// other top-k file afterwards, or the extra-files check below fails.
    resume_sources: BTreeSet<String>,
}

/// The newest checkpoints in the directory: their global step, names and the top-k record they hold.
struct Newest {
    step: u64,
    names: BTreeSet<String>,
    kept: BTreeSet<String>,
    pending: BTreeSet<String>,
}

fn describe(dir: &Path) -> String {
    let mut out = String::new();
    for name in listing(dir) {
        let path = dir.join(&name);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let step = read_checkpoint_header(&path)
            .map(|h| format!("step {}", h.global_step))
            .unwrap_or_else(|e| format!("no header: {e}"));
        out.push_str(&format!("  {name} ({size} bytes, {step})\n"));
    }
    out
}

/// Checks (a) and (b) of the directory after a kill and returns its newest checkpoints.
fn inspect(dir: &Path, tally: &mut Tally) -> Option<Newest> {
    let names = listing(dir);
    let mut saved = Vec::new();
    for name in names.iter().filter(|n| is_checkpoint_name(n)) {
        let path = dir.join(name);
        let header = read_checkpoint_header(&path).unwrap_or_else(|e| {
            panic!(
                "after a kill, the header of `{name}` does not read: {e}\n{}",
                describe(dir)
            )
        });
        let ckpt = read_checkpoint(&path).unwrap_or_else(|e| {
            panic!(
                "after a kill, `{name}` does not load: {e}\n{}",
                describe(dir)
            )
        });
        assert_eq!(header.global_step, ckpt.global_step, "{name}");
        assert!(!ckpt.weights_only, "{name} is weights-only");
        tally.verified += 1;
        saved.push((ckpt.global_step, name.clone(), stored_book(&ckpt)));
    }
    let step = saved.iter().map(|s| s.0).max()?;
    tally.max_step = tally.max_step.max(step);
    let newest: Vec<_> = saved.iter().filter(|s| s.0 == step).collect();
    let book = &newest[0].2;
    let kept = names_in(dir, book.best_k_models.iter().map(|(p, _)| p.clone()));
    let pending = names_in(dir, book.pending_deletes.iter().cloned());
    for (_, name, other) in &newest[1..] {
        let other_kept = names_in(dir, other.best_k_models.iter().map(|(p, _)| p.clone()));
        assert_eq!(
            other_kept,
            kept,
            "`{name}` and `{}` hold the same step but different top-k records\n{}",
            newest[0].1,
            describe(dir)
        );
    }
    assert!(kept.len() <= 2, "top-2 records {kept:?}");
    if let Some(last) = &book.last_model_path {
        assert_eq!(last, &dir.join("last.ckpt"));
    }

    let on_disk: BTreeSet<String> = names
        .iter()
        .filter(|n| is_checkpoint_name(n) && !is_last_name(n))
        .cloned()
        .collect();
    let lost: Vec<_> = kept.difference(&on_disk).collect();
    assert!(
        lost.is_empty(),
        "the newest checkpoint (step {step}) keeps {lost:?} in its top-k, but they are gone\n{}",
        describe(dir)
    );
    let extra: BTreeSet<String> = on_disk.difference(&kept).cloned().collect();
    assert!(
        extra.len() <= 1 && extra.is_subset(&pending),
        "top-k files beyond the newest record ({kept:?}, step {step}) other than the one file it was \
         replacing ({pending:?}): {extra:?}\n{}",
        describe(dir)
    );
    if !extra.is_empty() {
        tally.before_delete += 1;
    }
    let lasts: Vec<_> = names.iter().filter(|n| is_last_name(n)).collect();
    assert!(
        lasts.iter().all(|n| *n == "last.ckpt"),
        "stray `last` files {lasts:?}\n{}",
        describe(dir)
    );
    Some(Newest {
        step,
        names: newest.iter().map(|s| s.1.clone()).collect(),
        kept,
        pending,
    })
}

/// (c), and the clean-up a new run does: the child started at the newest step, from one of the newest
/// files; no temporary file of an earlier process survived its `setup`; the deletions the resumed file
/// recorded as under way are done.
fn check_start(dir: &Path, line: &str, newest: Option<&Newest>, child: &Child) {
    let (step, from) = parse_ready(line);
    match newest {
        None => assert!(
            step == 0 && from.is_none(),
            "no checkpoint yet, but the child started at step {step} from {from:?}"
        ),
        Some(n) => {
            let from = from.unwrap_or_else(|| {
                panic!(
                    "the child did not resume although the newest checkpoint is at step {}\n{}",
                    n.step,
                    child.transcript()
                )
            });
            let from_name = names_in(dir, [from]).into_iter().next().unwrap();
            assert!(
                step == n.step && n.names.contains(&from_name),
                "the child resumed from `{from_name}` at step {step}; the newest checkpoints are {:?} \
                 at step {}\n{}",
                n.names,
                n.step,
                child.transcript()
            );
            for name in n.pending.difference(&n.kept) {
                assert!(
                    !dir.join(name).exists(),
                    "`{name}` was being replaced when the previous run died, and the resumed run did not \
                     delete it\n{}",
                    describe(dir)
                );
            }
        }
    }
    for name in listing(dir) {
        if let Some(pid) = temporary_pid(&name) {
            assert_eq!(
                pid,
                child.pid(),
                "`{name}` of an earlier process survived the new run's setup"
            );
        }
    }
}

/// A fresh run in this process on a copy of the directory, one step past the newest checkpoint.
fn resume_in_parent(dir: &Path, newest: &Newest, tally: &mut Tally, async_saving: bool) {
    let copy = tempfile::Builder::new()
        .prefix("fulgur-crash-copy")
        .tempdir()
        .unwrap();
    for name in listing(dir) {
        fs::copy(dir.join(&name), copy.path().join(&name)).unwrap();
    }
    let probe = Probe::default();
    let start = probe.start.clone();
    let mut t = trainer(copy.path(), probe)
        .max_steps(newest.step + 1)
        .async_checkpointing(async_saving)
        .build()
        .unwrap();
    t.fit(Wide::new(), &mut loader(), None, Some(CkptPath::Last))
        .unwrap_or_else(|e| panic!("resume in a copy failed: {e}\n{}", describe(copy.path())));
    let (step, from) = start.lock().unwrap().take().unwrap();
    let from = from.expect("the copy did not resume");
    let from_name = names_in(copy.path(), [from]).into_iter().next().unwrap();
    assert_eq!(step, newest.step);
    assert!(newest.names.contains(&from_name), "{from_name}");
    assert_eq!(t.global_step(), newest.step + 1);
    let temporaries: Vec<_> = listing(copy.path())
        .into_iter()
        .filter(|n| temporary_pid(n).is_some())
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
    tally.parent_resumes += 1;
}

fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("FULGUR_CRASH_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_a_checkpoint() {
    sigkills(false, TARGET_KILLS, MIN_KILLS, BUDGET);
}

/// The same with `async_checkpointing` (fewer kills: the machinery is the same, the writer thread is
/// what differs): a kill lands while the writer thread writes, or between its save and the deletion
/// or `last` that follow.
#[test]
fn with_async_saving_sigkill_at_random_moments_never_loses_a_checkpoint() {
    sigkills(true, 30, 12, Duration::from_secs(25));
}

/// Kills children until `target` kills or `budget` ran out; at least `min_kills` are wanted.
fn sigkills(async_saving: bool, target: u64, min_kills: u64, budget: Duration) {
    let seed = seed();
    println!(
        "crash test seed {seed} (replay the delays with {SEED_ENV}={seed}), async saving: {async_saving}"
    );
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::Builder::new()
        .prefix("fulgur-crash")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let env = [
        (DIR_ENV, OsString::from(dir)),
        (
            ASYNC_ENV,
            OsString::from(if async_saving { "1" } else { "0" }),
        ),
    ];
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut startup_ms = Vec::new();
    let mut newest = None;
    let mut iteration = 0u64;
    while tally.kills < target && started.elapsed() < budget {
        iteration += 1;
        let spawned = Instant::now();
        let mut child = Child::spawn(&test_name!(child_trains_forever), &env, None);
        // Now and then, kill during start-up: setup, the resume, the interrupted deletions.
        let early = !startup_ms.is_empty() && rng.below(6) == 0;
        let what = if early {
            let typical = startup_ms.iter().sum::<u64>() / startup_ms.len() as u64;
            let delay = rng.below(typical + 1);
            child
                .stays_alive_for(Duration::from_millis(delay))
                .unwrap_or_else(|e| panic!("{e}"));
            tally.early_kills += 1;
            format!("during start-up, after {delay} ms")
        } else {
            let line = child
                .wait_line(READY, STARTUP_LIMIT)
                .unwrap_or_else(|e| panic!("{e}"));
            startup_ms.push(spawned.elapsed().as_millis() as u64);
            check_start(dir, &line, newest.as_ref(), &child);
            if newest.is_some() {
                tally.child_resumes += 1;
            }
            let delay = 30 + rng.below(371);
            child
                .stays_alive_for(Duration::from_millis(delay))
                .unwrap_or_else(|e| panic!("{e}"));
            tally.kills += 1;
            format!("{delay} ms into training")
        };
        child.kill().unwrap_or_else(|e| panic!("{e}"));
        // Early kills may come after the child resumed, too.
        if let Some(line) = child.stdout().lines().find(|l| l.starts_with(READY)) {
            if let (_, Some(from)) = parse_ready(line) {
                let name = names_in(dir, [from]).into_iter().next().unwrap();
                if !is_last_name(&name) {
                    tally.resume_sources.insert(name);
                }
            }
        }
        let mid_write = listing(dir)
            .iter()
            .any(|n| temporary_pid(n) == Some(child.pid()));
        tally.mid_write += u64::from(mid_write);
        newest = inspect(dir, &mut tally);
        println!(
            "kill {iteration:3} {what}: newest step {}, mid-write: {mid_write}, files: {:?}",
            newest.as_ref().map_or(0, |n| n.step),
            listing(dir)
        );
        if iteration % 20 == 5 {
            if let Some(n) = &newest {
                resume_in_parent(dir, n, &mut tally, async_saving);
            }
        }
    }
    let newest = newest.expect("no checkpoint was ever saved");
    resume_in_parent(dir, &newest, &mut tally, async_saving);
    println!(
        "crash test (async saving: {async_saving}): {} kills during training and {} during start-up in {:.1} s; {} landed mid-write, {} \
         between a save and the delete it implies; {} checkpoint files verified; {} resumes by children \
         and {} in this process; reached step {}; {} top-k files (not `last`) resumed from",
        tally.kills,
        tally.early_kills,
        started.elapsed().as_secs_f64(),
        tally.mid_write,
        tally.before_delete,
        tally.verified,
        tally.child_resumes,
        tally.parent_resumes,
        tally.max_step,
        tally.resume_sources.len()
    );
    assert!(
        tally.kills >= min_kills,
        "only {} kills in {budget:?}; at least {min_kills} were wanted",
        tally.kills
    );
    assert!(tally.child_resumes >= min_kills / 2 && tally.parent_resumes >= 2);
}

#[test]
#[ignore = "the child process of `a_leftover_temporary_with_this_pid_does_not_block_saving`; a no-op alone"]
fn child_meets_temporaries_with_its_own_pid() {
    let Some(dir) = std::env::var_os(PID_REUSE_ENV) else {
        eprintln!("{PID_REUSE_ENV} is not set: nothing to do");
        return;
    };
    let dir = PathBuf::from(dir);
    let pid = std::process::id();
    // What an earlier process with the same PID left when it was killed inside its first writes: this
    // process's first write (counter 0) meets them all.
    for counter in 0..3 {
        let name = format!(".manual.ckpt.tmp-{pid}-{counter}");
        fs::write(dir.join(name), b"partial").unwrap();
    }
    let mut ckpt = fulgur::checkpoint::Checkpoint::new("manual");
    ckpt.global_step = 1;
    if let Err(e) = fulgur::checkpoint::write_checkpoint(dir.join("manual.ckpt"), &ckpt) {
        eprintln!("write_checkpoint failed: {e}");
        std::process::exit(2)
    }
    // Then a trainer, whose checkpoint callback deletes the leftovers when it starts.
    let mut t = trainer(&dir, Probe::default())
        .max_steps(4)
        .build()
        .unwrap();
    match t.fit(Wide::new(), &mut loader(), None, None) {
        Ok(()) => println!("FIT_OK step={}", t.global_step()),
        Err(e) => {
            eprintln!("fit failed: {e}");
            std::process::exit(2)
        }
    }
}

/// PIDs are reused: a job restarted in a fresh container runs as PID 1 again, and a run that resumes
/// from the same checkpoint repeats the same saves, so it meets the temporary names its killed
/// predecessor used. Saving must not fail on them, and the next checkpoint callback to start in the
/// directory deletes them (they are not writes under way in this process).
#[test]
fn a_leftover_temporary_with_this_pid_does_not_block_saving() {
    let dir = tempfile::Builder::new()
        .prefix("fulgur-pid-reuse")
        .tempdir()
        .unwrap();
    let mut child = Child::spawn(
        &test_name!(child_meets_temporaries_with_its_own_pid),
        &[(PID_REUSE_ENV, OsString::from(dir.path()))],
        None,
    );
    let status = child
        .wait_exit(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success() && child.stdout().contains("FIT_OK step=4"),
        "{status}\n{}",
        child.transcript()
    );
    let names = listing(dir.path());
    assert!(
        names.iter().any(|n| n == "last.ckpt"),
        "{names:?}\n{}",
        child.transcript()
    );
    let last = read_checkpoint(dir.path().join("last.ckpt")).unwrap();
    assert_eq!(last.global_step, 4);
    assert_eq!(
        read_checkpoint(dir.path().join("manual.ckpt"))
            .unwrap()
            .global_step,
        1
    );
    let leftovers: Vec<_> = names
        .iter()
        .filter(|n| fulgur::checkpoint::is_temporary_file(n))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Trains to `max_steps` in `dir` with a top-2 by step (mode max: every save evicts the oldest file),
/// `last.ckpt` and a save every 2 steps; returns where `fit` started.
fn by_step(dir: &Path, max_steps: u64, resume: bool) -> (u64, Option<PathBuf>) {
    let cb = fulgur::callbacks::ModelCheckpoint::builder()
        .dirpath(dir)
        .monitor("step")
        .mode("max")
        .save_top_k(2)
        .save_last(true)
        .every_n_train_steps(2)
        .build()
        .unwrap();
    let probe = Probe::default();
    let start = probe.start.clone();
    let mut t = Trainer::builder()
        .default_root_dir(dir)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .max_steps(max_steps)
        .callback(cb)
        .callback(probe)
        .build()
        .unwrap();
    t.fit(
        Wide::new(),
        &mut loader(),
        None,
        resume.then_some(CkptPath::Last),
    )
    .unwrap();
    let start = start.lock().unwrap().take().unwrap();
    start
}

/// The directory as a kill leaves it between writing `epoch=0-step=6.ckpt` (which evicts
/// `epoch=0-step=2.ckpt`) and deleting the evicted file, `last.ckpt` still at step 4.
fn killed_between_save_and_delete(dir: &Path) {
    by_step(dir, 4, false);
    let evicted = fs::read(dir.join("epoch=0-step=2.ckpt")).unwrap();
    let last = fs::read(dir.join("last.ckpt")).unwrap();
    by_step(dir, 6, true);
    fs::write(dir.join("epoch=0-step=2.ckpt"), evicted).unwrap();
    fs::write(dir.join("last.ckpt"), last).unwrap();
    assert_eq!(
        listing(dir),
        [
            "epoch=0-step=2.ckpt",
            "epoch=0-step=4.ckpt",
            "epoch=0-step=6.ckpt",
            "last.ckpt"
        ]
    );
}

#[test]
fn a_resumed_run_finishes_the_delete_a_kill_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    killed_between_save_and_delete(dir);
    let (step, from) = by_step(dir, 8, true);
    assert_eq!((step, from), (6, Some(dir.join("epoch=0-step=6.ckpt"))));
    assert_eq!(
        listing(dir),
        ["epoch=0-step=6.ckpt", "epoch=0-step=8.ckpt", "last.ckpt"]
    );
}

/// `last` resolves to a top-k file when the kill came before `last.ckpt` was rewritten. That file is
/// still one of the callback's own top-k files: once evicted it goes, or every such crash leaves a
/// file that no record references and nothing ever deletes.
#[test]
fn the_top_k_file_a_run_resumed_from_is_deleted_once_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    killed_between_save_and_delete(dir);
    let (step, from) = by_step(dir, 10, true);
    assert_eq!((step, from), (6, Some(dir.join("epoch=0-step=6.ckpt"))));
    assert_eq!(
        listing(dir),
        ["epoch=0-step=10.ckpt", "epoch=0-step=8.ckpt", "last.ckpt"]
    );
}

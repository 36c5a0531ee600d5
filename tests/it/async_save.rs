//! Asynchronous checkpoint saving (`TrainerBuilder::async_checkpointing`): a run with it writes the
//! same files as a synchronous run (names and decoded contents: weights, optimizer state, callback
//! state), a file holds the values of the step its snapshot was taken at although training went on while
//! it was written, a write error stops `fit` with the synchronous message (or warns with
//! `keep_training_on_checkpoint_error`) and deletes nothing already saved, `save_on_exception` waits
//! for the save under way, and `fit` returns with every file complete.
//!
//! The crash (SIGKILL) and disk-full tests run with async saving too (`crash.rs`, `disk_full.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{is_temporary_file, read_checkpoint, Checkpoint, TensorData};
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::listing;
use crate::support::wide::*;

/// Tensors by name, bit for bit.
type Bits = Vec<(String, Vec<u32>)>;

/// Every tensor of a state dict, bit for bit.
fn tensor_bits(tensors: &BTreeMap<String, TensorData>) -> Bits {
    tensors
        .iter()
        .map(|(k, t)| {
            let values = t.as_f32().unwrap_or_else(|| panic!("`{k}` is not f32"));
            (k.clone(), values.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// What a checkpoint holds, comparable between two runs in different directories: every tensor bit for
/// bit (weights, then each optimizer slot), the counters, and the callback states with `dir` replaced
/// by `<dir>`.
#[derive(Debug, PartialEq)]
struct Contents {
    global_step: u64,
    epoch: u64,
    weights: Bits,
    optimizer: Vec<(String, Bits)>,
    optimizer_step: Option<u64>,
    loops: String,
    callbacks: String,
}

fn contents(ckpt: &Checkpoint, dir: &Path) -> Contents {
    let optimizer = ckpt.optimizer.as_ref();
    Contents {
        global_step: ckpt.global_step,
        epoch: ckpt.epoch,
        weights: tensor_bits(&ckpt.state_dict),
        optimizer: optimizer
            .map(|o| {
                o.params
                    .iter()
                    .map(|(k, slots)| (k.clone(), tensor_bits(slots)))
                    .collect()
            })
            .unwrap_or_default(),
        optimizer_step: optimizer.map(|o| o.step),
        loops: format!("{:?}", ckpt.loops),
        callbacks: format!("{:?}", ckpt.callbacks).replace(&dir.display().to_string(), "<dir>"),
    }
}

/// Every entry of `dir` by name, checkpoints decoded (anything else: `None`); panics on a temporary
/// file or a checkpoint that does not load.
fn files(dir: &Path) -> BTreeMap<String, Option<Contents>> {
    listing(dir)
        .into_iter()
        .map(|name| {
            assert!(
                !is_temporary_file(&name),
                "`fit` returned with a temporary file in the directory: {name}"
            );
            let path = dir.join(&name);
            if path.is_dir() || !is_checkpoint_name(&name) {
                return (name, None);
            }
            let ckpt =
                read_checkpoint(&path).unwrap_or_else(|e| panic!("`{name}` does not load: {e}"));
            let c = contents(&ckpt, dir);
            (name, Some(c))
        })
        .collect()
}

/// Runs `scenario` (given a fresh directory and whether saving is asynchronous) both ways and checks
/// that it returns the same outcome (the directory's path replaced) and leaves the same files with the
/// same contents. Returns the synchronous run's outcome and files.
fn same_both_ways(
    scenario: impl Fn(&Path, bool) -> fulgur::Result<()>,
) -> (
    std::result::Result<(), String>,
    BTreeMap<String, Option<Contents>>,
) {
    let run = |async_saving: bool| {
        let dir = tempfile::tempdir().unwrap();
        let outcome = scenario(dir.path(), async_saving).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "<dir>")
        });
        (outcome, files(dir.path()))
    };
    let (sync_outcome, sync_files) = run(false);
    let (async_outcome, async_files) = run(true);
    assert_eq!(async_outcome, sync_outcome, "`fit` returned differently");
    assert_eq!(
        async_files.keys().collect::<Vec<_>>(),
        sync_files.keys().collect::<Vec<_>>(),
        "different files"
    );
    for (name, sync) in &sync_files {
        assert!(
            async_files[name] == *sync,
            "`{name}` differs between the sync and the async run"
        );
    }
    (sync_outcome, sync_files)
}

/// [`trainer`] with async saving on or off.
fn wide_trainer(dir: &Path, async_saving: bool) -> TrainerBuilder<Wide<Cpu>> {
    trainer(dir, Probe::default()).async_checkpointing(async_saving)
}

#[test]
fn an_async_run_writes_the_same_files_as_a_sync_run() {
    // Top-2 by training loss, `last.ckpt`, every 2 steps; then a manual save after `fit`.
    let (outcome, found) = same_both_ways(|dir, async_saving| {
        let mut t = wide_trainer(dir, async_saving).max_steps(14).build()?;
        t.fit(Wide::new(), &mut loader(), None, None)?;
        // Complete when `fit` returns: no temporary file, `last` at the final step.
        let names = listing(dir);
        assert!(!names.iter().any(|n| is_temporary_file(n)), "{names:?}");
        let last = read_checkpoint(dir.join("last.ckpt"))?;
        assert_eq!(last.global_step, 14);
        let cb = t.checkpoint_callback().unwrap();
        let kept = names_in(dir, cb.best_k_models().iter().map(|(p, _)| p.clone()));
        let mut topk: Vec<String> = listing(dir);
        topk.retain(|n| !is_last_name(n));
        assert_eq!(kept.into_iter().collect::<Vec<_>>(), topk);
        assert_eq!(cb.last_model_path(), Some(dir.join("last.ckpt").as_path()));
        t.save_checkpoint(dir.join("manual.ckpt"), false)
    });
    outcome.unwrap();
    assert_eq!(found.len(), 4, "{:?}", found.keys());
}

/// Fails `fit` with a user error at the end of training batch `at`.
struct FailAt {
    at: u64,
}

impl Callback for FailAt {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        if ctx.state().global_step == self.at {
            return Err(fulgur::Error::user("boom"));
        }
        Ok(())
    }
}

#[test]
fn save_on_exception_waits_for_the_save_under_way_and_saves() {
    // Saves at steps 2 and 4 (the one of step 4 under way when step 5 fails), then the save on
    // exception at step 5 and `last`.
    let (outcome, found) = same_both_ways(|dir, async_saving| {
        let cb = ModelCheckpoint::builder()
            .dirpath(dir)
            .monitor("train_loss")
            .save_top_k(2)
            .save_last(true)
            .every_n_train_steps(2)
            .save_on_exception(true)
            .build()
            .unwrap();
        let mut t = Trainer::builder()
            .default_root_dir(dir)
            .no_logger()
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .seed(5)
            .async_checkpointing(async_saving)
            .max_steps(10)
            .callback(FailAt { at: 5 })
            .callback(cb)
            .build()?;
        t.fit(Wide::new(), &mut loader(), None, None)
    });
    assert!(outcome.unwrap_err().contains("boom"));
    assert!(
        found.contains_key("epoch=0-step=5.ckpt"),
        "{:?}",
        found.keys()
    );
    let last = found["last.ckpt"].as_ref().unwrap();
    assert_eq!(last.global_step, 5);
}

/// A trainer of [`Wide`] for 4 steps with `cb`.
fn with_callback(
    dir: &Path,
    cb: ModelCheckpoint,
    keep: bool,
    async_saving: bool,
) -> fulgur::Result<Trainer<Wide<Cpu>>> {
    Trainer::builder()
        .default_root_dir(dir)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .keep_training_on_checkpoint_error(keep)
        .async_checkpointing(async_saving)
        .max_steps(4)
        .callback(cb)
        .build()
}

#[test]
fn a_failed_write_stops_fit_with_the_sync_message_or_warns() {
    for keep in [false, true] {
        let (outcome, found) = same_both_ways(|dir, async_saving| {
            let plain = dir.join("plain");
            std::fs::write(&plain, b"")?;
            let cb = ModelCheckpoint::builder()
                .dirpath(plain.join("checkpoints"))
                .monitor("train_loss")
                .save_top_k(2)
                .save_last(true)
                .every_n_train_steps(2)
                .build()?;
            let mut t = with_callback(dir, cb, keep, async_saving)?;
            t.fit(Wide::new(), &mut loader(), None, None)?;
            let cb = t.checkpoint_callback().unwrap();
            assert!(
                cb.best_k_models().is_empty() && cb.last_model_path().is_none(),
                "the callback counts files it could not write: {cb:?}"
            );
            assert_eq!(t.global_step(), 4);
            Ok(())
        });
        if keep {
            outcome.unwrap();
        } else {
            let message = outcome.unwrap_err();
            assert!(
                message.starts_with("cannot create the directory of checkpoint `<dir>/plain/checkpoints/epoch=0-step=2.ckpt`: "),
                "{message}"
            );
        }
        assert_eq!(found.keys().collect::<Vec<_>>(), ["plain"]);
    }
}

/// Every trigger saves its top-1 file (evicting the previous one), then fails to replace `last.ckpt`
/// (a non-empty directory holds the name): the book goes back to the top-k save, so the file it
/// evicted is deleted only once a later save records it.
#[test]
fn a_failed_last_save_after_the_top_k_save_keeps_the_top_k_file() {
    for keep in [false, true] {
        let (outcome, found) = same_both_ways(|dir, async_saving| {
            std::fs::create_dir(dir.join("last.ckpt"))?;
            std::fs::write(dir.join("last.ckpt").join("occupied"), b"")?;
            let cb = ModelCheckpoint::builder()
                .dirpath(dir)
                .monitor("step")
                .mode("max")
                .save_top_k(1)
                .save_last(true)
                .enable_version_counter(false)
                .every_n_train_steps(1)
                .build()?;
            let mut t = with_callback(dir, cb, keep, async_saving)?;
            t.fit(Wide::new(), &mut loader(), None, None)?;
            let cb = t.checkpoint_callback().unwrap();
            for (path, _) in cb.best_k_models() {
                assert!(
                    path.is_file(),
                    "the top-k counts a missing {}",
                    path.display()
                );
            }
            Ok(())
        });
        if keep {
            outcome.unwrap();
        } else {
            let message = outcome.unwrap_err();
            assert!(
                message.starts_with(
                    "cannot rename the temporary file to checkpoint `<dir>/last.ckpt`: "
                ),
                "{message}"
            );
            assert_eq!(
                found.keys().collect::<Vec<_>>(),
                ["epoch=0-step=1.ckpt", "last.ckpt"]
            );
        }
    }
}

/// Records the full state (weights and optimizer state, on the host) at every training step.
struct Recorder {
    states: Arc<Mutex<BTreeMap<u64, Checkpoint>>>,
}

impl Callback for Recorder {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        let ckpt = ctx.build_checkpoint(false, self)?;
        self.states
            .lock()
            .unwrap()
            .insert(ctx.state().global_step, ckpt);
        Ok(())
    }
}

/// Texts that make the checkpoint writer thread sleep when it prints one (see [`slow_writer_after`]).
static SLOW_AFTER: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Standard error, except that the writer thread of `async_checkpointing` sleeps 50 ms after
/// printing a line that contains one of [`SLOW_AFTER`].
struct SlowStderr;

impl Write for SlowStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        let on_writer = std::thread::current().name() == Some("fulgur-checkpoint-writer");
        let text = String::from_utf8_lossy(buf);
        let marked = SLOW_AFTER
            .lock()
            .unwrap()
            .iter()
            .any(|m| text.contains(m.as_str()));
        if on_writer && marked {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Makes the writer thread sleep 50 ms after each `verbose` save line that names `dir`: a process-wide
/// `tracing` subscriber (the lines of other tests go to standard error, as without one).
fn slow_writer_after(dir: &Path) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = tracing_subscriber::fmt()
            .with_writer(|| SlowStderr)
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .finish()
            .try_init();
    });
    SLOW_AFTER.lock().unwrap().push(dir.display().to_string());
}

#[test]
fn a_file_holds_the_values_of_its_step_although_training_went_on() {
    let root = tempfile::tempdir().unwrap();
    let (first, second) = (root.path().join("first"), root.path().join("second"));
    // Two callbacks save every step, all files kept. The writer sleeps after each file of the first, so
    // the second's file of step k is encoded while step k+1 trains and updates every tensor (weights
    // and Adam's moments) in place of the buffers the snapshot holds.
    slow_writer_after(&first);
    // (`mode` only makes the two state keys differ.)
    let every_step = |dir: &Path, verbose: bool| {
        ModelCheckpoint::builder()
            .dirpath(dir)
            .mode(if verbose { "min" } else { "max" })
            .save_top_k(-1)
            .every_n_train_steps(1)
            .verbose(verbose)
            .build()
            .unwrap()
    };
    let states = Arc::default();
    let recorder = Recorder {
        states: Arc::clone(&states),
    };
    const STEPS: u64 = 10;
    let mut t = Trainer::builder()
        .default_root_dir(root.path())
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .seed(5)
        .async_checkpointing(true)
        .max_steps(STEPS)
        .callback(recorder)
        .callback(every_step(&first, true))
        .callback(every_step(&second, false))
        .build()
        .unwrap();
    t.fit(Wide::new(), &mut loader(), None, None).unwrap();
    let states = states.lock().unwrap();
    for dir in [&first, &second] {
        let names = listing(dir);
        assert_eq!(names.len() as u64, STEPS, "{names:?}");
        for name in names {
            let ckpt = read_checkpoint(dir.join(&name)).unwrap();
            let (file, then) = (
                contents(&ckpt, dir),
                contents(&states[&ckpt.global_step], dir),
            );
            assert!(
                file.weights == then.weights,
                "`{name}` does not hold the weights of step {}",
                ckpt.global_step
            );
            assert!(
                file.optimizer == then.optimizer && file.optimizer_step == then.optimizer_step,
                "`{name}` does not hold the optimizer state of step {}",
                ckpt.global_step
            );
            if ckpt.global_step < STEPS {
                assert_ne!(then.weights, contents(&states[&STEPS], dir).weights);
            }
        }
    }
}

/// Panics at the end of training batch `at` (a bug in user code: `fit` unwinds without `on_exception`).
struct PanicAt {
    at: u64,
}

impl Callback for PanicAt {
    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> fulgur::Result<()> {
        if ctx.state().global_step == self.at {
            // Unwinds without the panic hook, whose message and backtrace would take long enough for
            // the writer to finish anyway.
            std::panic::resume_unwind(Box::new("a bug in a callback"));
        }
        Ok(())
    }
}

#[test]
fn dropping_the_trainer_waits_for_the_save_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The save of step 4 is under way (slowed after its top-k file) when step 5 panics.
    slow_writer_after(dir);
    let unwound = std::panic::catch_unwind(|| {
        let cb = ModelCheckpoint::builder()
            .dirpath(dir)
            .monitor("step")
            .mode("max")
            .save_top_k(1)
            .save_last(true)
            .every_n_train_steps(2)
            .verbose(true)
            .build()
            .unwrap();
        let mut t = Trainer::builder()
            .default_root_dir(dir)
            .no_logger()
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .async_checkpointing(true)
            .max_steps(10)
            .callback(PanicAt { at: 5 })
            .callback(cb)
            .build()
            .unwrap();
        let _ = t.fit(Wide::new(), &mut loader(), None, None);
    });
    assert!(unwound.is_err());
    // Step 4's top-k file, its `last`, and the deletion of step 2's file are all done.
    let found = files(dir);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["epoch=0-step=4.ckpt", "last.ckpt"]
    );
    assert_eq!(found["last.ckpt"].as_ref().unwrap().global_step, 4);
}

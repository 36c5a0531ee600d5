//! `fit(ckpt_path = "last" | "best" | path)`: resolution through the checkpoint callbacks
//! (guide: Reference, C.3 and G.7).

use std::path::PathBuf;

use fulgur::callbacks::CheckpointPaths;
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;

use crate::support::fit_error;
use crate::support::mlp::{loaders, Hparams, LitMlp};

/// A checkpoint callback that only reports fixed paths.
struct Known(CheckpointPaths);

impl Callback for Known {
    fn is_checkpoint(&self) -> bool {
        true
    }
    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        Some(self.0.clone())
    }
}

/// Saves a full checkpoint after `steps` steps at `path`.
fn save_after(steps: u64, path: &PathBuf) {
    save_after_as(steps, path, false)
}

/// Saves a checkpoint (full or weights only) after `steps` steps at `path`.
fn save_after_as(steps: u64, path: &PathBuf, weights_only: bool) {
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_steps(steps)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    t.save_checkpoint(path, weights_only).unwrap();
}

fn resume(paths: CheckpointPaths, which: &str) -> fulgur::Result<Trainer<LitMlp<Cpu>>> {
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_steps(12)
        .no_logger()
        .callback(Known(paths))
        .build()?;
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        Some(which.into()),
    )?;
    Ok(t)
}

#[test]
fn last_is_the_newest_intact_file_by_global_step_not_by_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.ckpt"),
        dir.path().join("b.ckpt"),
        dir.path().join("c.ckpt"),
    );
    save_after(10, &a);
    save_after(4, &b); // written later, so newer by modification time, but at an earlier step
    std::fs::write(&c, b"not a checkpoint").unwrap(); // damaged: skipped with a warning
    let paths = CheckpointPaths {
        last: vec![b.clone(), c, a.clone(), dir.path().join("gone.ckpt")],
        ..Default::default()
    };
    let t = resume(paths, "last").unwrap();
    assert_eq!(t.state().resumed_from.as_deref(), Some(a.as_path()));
    assert_eq!(t.global_step(), 12);
}

#[test]
fn last_also_weighs_the_callbacks_other_files_and_prefers_full_checkpoints() {
    // A crash between a new top-k file and the `last` rewrite leaves the top-k file newer than `last`:
    // resuming from it loses nothing and keeps the top-k bookkeeping consistent with the directory.
    let dir = tempfile::tempdir().unwrap();
    let last = dir.path().join("last.ckpt");
    let topk = dir.path().join("epoch=0-step=6.ckpt");
    let weights = dir.path().join("weights.ckpt");
    save_after(4, &last);
    save_after(6, &topk);
    save_after_as(9, &weights, true); // newest, but cannot resume: full checkpoints come first
    let paths = CheckpointPaths {
        last: vec![last],
        others: vec![weights, topk.clone()],
        ..Default::default()
    };
    let t = resume(paths, "last").unwrap();
    assert_eq!(t.state().resumed_from.as_deref(), Some(topk.as_path()));
}

#[test]
fn best_skips_a_damaged_or_missing_file_and_takes_the_next_best_intact_one() {
    let dir = tempfile::tempdir().unwrap();
    let (damaged, gone, good) = (
        dir.path().join("best.ckpt"),
        dir.path().join("gone.ckpt"),
        dir.path().join("second.ckpt"),
    );
    save_after(3, &damaged);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&damaged, bytes).unwrap();
    save_after(2, &good);
    let paths = CheckpointPaths {
        best: vec![damaged.clone(), gone.clone(), good.clone()],
        ..Default::default()
    };
    let t = resume(paths, "best").unwrap();
    assert_eq!(t.state().resumed_from.as_deref(), Some(good.as_path()));

    let err = resume(
        CheckpointPaths {
            best: vec![damaged.clone(), gone],
            ..Default::default()
        },
        "best",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("`fit(ckpt_path = \"best\")`: none of the checkpoint callback's top-k files can be loaded")
            && err.contains(&damaged.display().to_string()),
        "{err}"
    );
}

#[test]
fn last_with_files_that_all_fail_to_load_is_an_error_naming_each_file_and_why() {
    // Training from scratch here would discard them silently; with no file at all it stays a warning.
    let dir = tempfile::tempdir().unwrap();
    let (garbage, flipped) = (dir.path().join("last.ckpt"), dir.path().join("e.ckpt"));
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    save_after(3, &flipped);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&flipped, bytes).unwrap();
    let paths = CheckpointPaths {
        last: vec![garbage.clone(), dir.path().join("gone.ckpt")],
        others: vec![flipped.clone()],
        ..Default::default()
    };
    let err = resume(paths, "last").err().unwrap().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("`fit(ckpt_path = \"last\")`: ") && lines.len() == 3,
        "{err}"
    );
    for (path, why) in [
        (&garbage, "is not a fulgur checkpoint"),
        (&flipped, "is damaged"),
    ] {
        let at = format!("`{}`", path.display());
        assert!(
            lines[1..]
                .iter()
                .any(|l| l.contains(&at) && l.contains(why)),
            "{at} {why}: {err}"
        );
    }
}

#[test]
fn last_with_nothing_saved_starts_from_scratch() {
    let t = resume(CheckpointPaths::default(), "last").unwrap();
    assert_eq!(t.state().resumed_from, None);
    assert_eq!(t.global_step(), 12);
}

#[test]
fn best_uses_the_first_checkpoint_callback() {
    let dir = tempfile::tempdir().unwrap();
    let best = dir.path().join("best.ckpt");
    save_after(3, &best);
    let t = resume(
        CheckpointPaths {
            best: vec![best.clone()],
            ..Default::default()
        },
        "best",
    )
    .unwrap();
    assert_eq!(t.state().resumed_from.as_deref(), Some(best.as_path()));
}

#[test]
fn best_without_a_best_model_or_without_a_checkpoint_callback_is_an_error() {
    let err = resume(CheckpointPaths::default(), "best")
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "`fit(ckpt_path = \"best\")` is set but the checkpoint callback has not saved a best model"
    );

    let (err, _) = fit_error(Trainer::builder().max_steps(2), "best");
    assert_eq!(
        err,
        "`fit(ckpt_path = \"best\")` is set but no checkpoint callback is configured"
    );
}

#[test]
fn a_checkpoint_callback_with_checkpointing_disabled_is_rejected() {
    let err = Trainer::<LitMlp<Cpu>>::builder()
        .enable_checkpointing(false)
        .callback(Known(CheckpointPaths::default()))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "Trainer was configured with `enable_checkpointing = false` but found a checkpoint callback in the callbacks list"
    );
}

#[test]
fn restoring_past_max_epochs_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e2.ckpt");
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_epochs(2)
        .limit_train_batches(3u64)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        None,
    )
    .unwrap();
    t.save_checkpoint(&path, false).unwrap();
    let (err, _) = fit_error(
        Trainer::builder().max_epochs(1).limit_train_batches(3u64),
        CkptPath::Path(path),
    );
    assert_eq!(
        err,
        "you restored a checkpoint with current_epoch=2, but you have set `max_epochs(1)`"
    );
}

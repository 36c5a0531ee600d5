//! `fit(ckpt_path = "last" | "best" | path)`: resolution through the checkpoint callbacks (C.3, G.7).

mod support;

use std::path::PathBuf;

use fulgur::callbacks::CheckpointPaths;
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use support::{loaders, Hparams, LitMlp};

/// A checkpoint callback that only reports fixed paths.
struct Known(CheckpointPaths);

impl Callback for Known {
    fn is_checkpoint(&self) -> bool {
        true
    }
    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        Some(self.0.clone())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Saves a full checkpoint after `steps` steps at `path`.
fn save_after(steps: u64, path: &PathBuf) {
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
    t.save_checkpoint(path, false).unwrap();
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
        best: None,
        last: vec![b.clone(), c, a.clone(), dir.path().join("gone.ckpt")],
    };
    let t = resume(paths, "last").unwrap();
    assert_eq!(t.state().resumed_from.as_deref(), Some(a.as_path()));
    assert_eq!(t.global_step(), 12);
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
            best: Some(best.clone()),
            last: vec![],
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

    let (mut train, _) = loaders();
    let mut t = Trainer::builder()
        .max_steps(2)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let err = t
        .fit(
            LitMlp::new(Hparams::default()),
            &mut train,
            None,
            Some("best".into()),
        )
        .unwrap_err()
        .to_string();
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
    let mut t = Trainer::builder()
        .max_epochs(1)
        .limit_train_batches(3u64)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let err = t
        .fit(
            LitMlp::new(Hparams::default()),
            &mut train,
            Some(&mut val),
            Some(CkptPath::Path(path)),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "you restored a checkpoint with current_epoch=2, but you have set `max_epochs(1)`"
    );
}

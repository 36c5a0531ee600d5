//! `ModelCheckpoint` with `async_checkpointing`: a trigger's actions go to the trainer's writer thread
//! in their safe order (the save first; the `last` link and the deletions once the file is durable),
//! and their outcome is *settled* later: at the callback's next trigger (which waits for it, so one
//! trigger is in flight at most and names are decided on the files as they are), at a hook that finds the
//! writer idle (one process), at the end of `fit` and on an error. Settling does what a synchronous
//! trigger does when an action fails: the book goes back to the last file written, and the error stops
//! `fit` or, with `keep_training_on_checkpoint_error`, is a warning.
//!
//! In a data-parallel run only rank 0 writes, and every rank settles at the same points (the next
//! trigger, the end of `fit`): rank 0 waits for its writer and every rank learns the outcome then.

use std::path::PathBuf;
use std::time::Instant;

use super::files::{delete_own, deletions, save_summary};
use super::names::OwnNames;
use super::policy::{Action, Book};
use super::{ModelCheckpoint, SaveLast};
use crate::callbacks::CallbackContext;
use crate::checkpoint::Staging;
use crate::strategy::{RankZeroFs, SingleProcess};
use crate::Result;

/// A trigger whose actions were submitted to the writer thread and are not settled yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// The writer's group of these actions (on rank 0).
    group: u64,
    /// The book before the trigger.
    before: Book,
    /// The book each save records, by the position of its action.
    saves: Vec<(usize, Book)>,
    /// Each action's file and operation, by position: they name rank 0's failure on the other ranks,
    /// as a synchronous save names it.
    ops: Vec<(PathBuf, &'static str)>,
}

/// The gate of the writer thread: its operations exist on rank 0 only, which is the writer.
fn writer_fs() -> RankZeroFs<'static> {
    RankZeroFs::new(&SingleProcess)
}

impl ModelCheckpoint {
    /// Submits `actions` to the writer thread (rank 0) and records them as pending (every rank), with
    /// `before`, the book before the trigger decided them. Each save is a snapshot taken now; a second
    /// save of the same trigger shares its buffers.
    pub(super) fn submit(
        &mut self,
        ctx: &CallbackContext<'_>,
        actions: Vec<Action>,
        before: Book,
    ) -> Result<()> {
        let Some(writer) = ctx.writer() else {
            return Ok(());
        };
        let is_writer = ctx.fs().is_writer();
        let key = self.cfg.state_key();
        let own = OwnNames::new(&self.cfg);
        let dir = self.dirpath.clone().unwrap_or_default();
        let deletes = deletions(&actions);
        let group = if is_writer { writer.group() } else { 0 };
        let mut pending = Pending {
            group,
            before,
            saves: Vec::new(),
            ops: Vec::new(),
        };
        let (epoch, step) = (ctx.state().epoch, ctx.state().global_step);
        let verbose = self.cfg.verbose;
        for (i, action) in actions.into_iter().enumerate() {
            pending.ops.push(match &action {
                Action::Save { path, .. } => (path.clone(), "write"),
                Action::Link { link, .. } => (link.clone(), "link"),
                Action::Delete(path) => (path.clone(), "delete"),
            });
            match action {
                Action::Save { path, book } => {
                    let state = self.state_value(&book, &deletes);
                    // A snapshot that cannot be taken fails the save on the writer thread, so that it
                    // is settled like a failed write (rank 0's outcome counts, as when saving
                    // synchronously).
                    let snapshot =
                        ctx.build_checkpoint_as(self.cfg.save_weights_only, key.clone(), state);
                    pending.saves.push((i, *book));
                    if is_writer {
                        let staging = writer.staging();
                        writer.submit(
                            group,
                            Box::new(move || {
                                let started = Instant::now();
                                // One save runs at a time: the lock is free.
                                let mut staging = staging.lock().unwrap_or_else(|e| e.into_inner());
                                let mut ckpt = snapshot?;
                                // Urgent, at the writer's priority: the live buffers are free
                                // once the snapshot is staged.
                                staging.stage(&mut ckpt)?;
                                let written = crate::checkpoint::when_idle(|| {
                                    crate::checkpoint::write_checkpoint_in_background(&path, &ckpt)
                                });
                                staging.reclaim(ckpt);
                                written?;
                                if verbose {
                                    let took = started.elapsed();
                                    crate::info(&save_summary(epoch, step, &path, took));
                                }
                                Ok(())
                            }),
                        );
                    }
                }
                Action::Link { target, link } if is_writer => {
                    writer.submit(group, Box::new(move || writer_fs().link(&target, &link)));
                }
                Action::Delete(path) if is_writer => {
                    let (dir, own) = (dir.clone(), own.clone());
                    writer.submit(
                        group,
                        Box::new(move || {
                            delete_own(&writer_fs(), &dir, &own, &path, false).map(drop)
                        }),
                    );
                }
                Action::Link { .. } | Action::Delete(_) => {}
            }
        }
        self.pending = Some(pending);
        Ok(())
    }

    /// Waits for the pending trigger's actions (rank 0) and settles their outcome on every rank; every
    /// rank must call it at the same point. A no-op when nothing is pending.
    pub(super) fn settle(&mut self, ctx: &CallbackContext<'_>) -> Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let failure = match ctx.writer() {
            Some(writer) if ctx.fs().is_writer() => {
                writer.flush();
                writer.finish(pending.group)
            }
            _ => None,
        };
        // Rank 0's position of the failed action (none: `usize::MAX`), then its error, named by that
        // action's file and operation, on every rank.
        let index = agree_on_index(ctx, failure.as_ref().map_or(usize::MAX, |f| f.index))?;
        let Some((path, op)) = pending.ops.get(index) else {
            return Ok(());
        };
        let result = failure.map_or(Ok(()), |f| Err(f.error));
        let Err(error) = ctx.fs().agree(result, path, op) else {
            return Ok(());
        };
        let book = pending
            .saves
            .into_iter()
            .rev()
            .find(|(i, _)| *i < index)
            .map_or(pending.before, |(_, book)| book);
        self.recover(ctx, book, error)
    }

    /// Has the writer prepare its staging buffers for the snapshots this callback saves (see
    /// `AsyncWriter::warm_staging`), once the optimizer has its state (after the first optimizer step)
    /// and before the first save: at the end of a training batch that left nothing pending. Best
    /// effort: a snapshot that cannot be taken now fails the save that takes it, as without warming.
    pub(super) fn warm_staging(&self, ctx: &CallbackContext<'_>) {
        let Some(writer) = ctx.writer() else {
            return;
        };
        let saves = self.cfg.save_top_k != 0 || self.cfg.save_last != SaveLast::No;
        if writer.staging_warmed()
            || self.pending.is_some()
            || !saves
            || ctx.state().global_step < 1
            || !ctx.fs().is_writer()
        {
            return;
        }
        // Sizes only: the snapshot is dropped here, before the next step updates what it holds.
        if let Ok(mut snapshot) =
            ctx.build_checkpoint_as(self.cfg.save_weights_only, self.cfg.state_key(), None)
        {
            writer.warm_staging(Staging::sizes(&mut snapshot));
        }
    }

    /// Settles the pending trigger when the writer has finished its actions, without waiting: in one
    /// process only, where no other rank needs to settle at the same point.
    pub(super) fn settle_if_done(&mut self, ctx: &CallbackContext<'_>) -> Result<()> {
        let Some(pending) = &self.pending else {
            return Ok(());
        };
        let done = ctx.writer().is_some_and(|w| w.is_done(pending.group));
        if done && ctx.strategy().world_size() <= 1 {
            return self.settle(ctx);
        }
        Ok(())
    }
}

/// Rank 0's position of the failed action, on every rank.
fn agree_on_index(ctx: &CallbackContext<'_>, index: usize) -> Result<usize> {
    if ctx.strategy().world_size() <= 1 {
        return Ok(index);
    }
    let mut bytes = (index as u64).to_le_bytes().to_vec();
    ctx.strategy().broadcast(&mut bytes, 0)?;
    let bytes: [u8; 8] = bytes.as_slice().try_into().unwrap_or([0xff; 8]);
    Ok(usize::try_from(u64::from_le_bytes(bytes)).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use ciborium::Value;

    use super::*;
    use crate::callbacks::{CheckpointSink, ParameterInfo};
    use crate::checkpoint::{AsyncWriter, Checkpoint, TensorData};
    use crate::state::TrainerState;
    use crate::strategy::{ReduceOp, Strategy};

    /// Rank 1 of two: each broadcast receives the next of rank 0's messages.
    struct RankOne(Mutex<VecDeque<Vec<u8>>>);

    impl RankOne {
        fn left(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    impl Strategy for RankOne {
        fn rank(&self) -> usize {
            1
        }
        fn world_size(&self) -> usize {
            2
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, data: &mut Vec<u8>, _root: usize) -> Result<()> {
            *data = self
                .0
                .lock()
                .unwrap()
                .pop_front()
                .expect("a broadcast that rank 0 does not make");
            Ok(())
        }
        fn all_reduce(&self, _: &mut [f64], _: ReduceOp) -> Result<()> {
            Ok(())
        }
        fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> Result<()> {
            Ok(())
        }
    }

    struct NoSink;

    impl CheckpointSink for NoSink {
        fn checkpoint(&self, _: bool, _: BTreeMap<String, Value>) -> Result<Checkpoint> {
            Ok(Checkpoint::new("Fake"))
        }
        fn parameters(&self) -> Vec<ParameterInfo> {
            Vec::new()
        }
    }

    /// A callback on rank 1 with a pending trigger of three actions (a save, a link, a deletion) whose
    /// save records `saved`; its book is the one the trigger decided.
    fn pending_on_rank_one() -> (ModelCheckpoint, Book, Book) {
        let mut mc = ModelCheckpoint::builder()
            .dirpath("ckpts")
            .save_last(true)
            .build()
            .unwrap();
        let before = mc.book.clone();
        let mut saved = before.clone();
        saved.best_model_path = Some("ckpts/a.ckpt".into());
        saved.last_global_step_saved = 2;
        let mut decided = saved.clone();
        decided.last_model_path = Some("ckpts/last.ckpt".into());
        mc.book = decided.clone();
        mc.pending = Some(Pending {
            group: 0,
            before,
            saves: vec![(0, saved.clone())],
            ops: vec![
                ("ckpts/a.ckpt".into(), "write"),
                ("ckpts/last.ckpt".into(), "link"),
                ("ckpts/old.ckpt".into(), "delete"),
            ],
        });
        (mc, saved, decided)
    }

    fn settle_on_rank_one(
        mc: &mut ModelCheckpoint,
        keep_training: bool,
        from_zero: Vec<Vec<u8>>,
    ) -> (Result<()>, usize) {
        let state = TrainerState {
            keep_training_on_checkpoint_error: keep_training,
            ..Default::default()
        };
        let strategy = RankOne(Mutex::new(from_zero.into()));
        let ctx = CallbackContext {
            state: &state,
            sink: &NoSink,
            others: [&[], &[]],
            strategy: &strategy,
        };
        let result = mc.settle(&ctx);
        (result, strategy.left())
    }

    /// A trainer with an async writer whose snapshots hold two tensors of `Source`s (3 and 5 values);
    /// it counts the snapshots it builds.
    struct WarmSink {
        writer: AsyncWriter,
        sources: Mutex<Vec<std::sync::Arc<crate::checkpoint::Source>>>,
        built: std::sync::atomic::AtomicUsize,
    }

    impl CheckpointSink for WarmSink {
        fn checkpoint(&self, _: bool, _: BTreeMap<String, Value>) -> Result<Checkpoint> {
            self.built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut ckpt = Checkpoint::new("Fake");
            for (name, n) in [("a", 3), ("b", 5)] {
                let source = crate::checkpoint::Source::new(vec![1.0; n], true);
                self.sources.lock().unwrap().push(source.clone());
                ckpt.state_dict
                    .insert(name.into(), TensorData::snapshot(vec![n], source));
            }
            Ok(ckpt)
        }
        fn parameters(&self) -> Vec<ParameterInfo> {
            Vec::new()
        }
        fn writer(&self) -> Option<&AsyncWriter> {
            Some(&self.writer)
        }
    }

    /// After the first optimizer step, a callback that saves has the writer warm its staging buffers
    /// to the snapshot's sizes, once, reading no values and holding nothing; not before that step,
    /// not while a trigger is pending, not for a callback that never saves.
    #[test]
    fn the_staging_buffers_are_warmed_once_after_the_first_step() {
        let sink = WarmSink {
            writer: AsyncWriter::new(),
            sources: Mutex::default(),
            built: Default::default(),
        };
        let warm = |mc: &ModelCheckpoint, step: u64| {
            let state = TrainerState {
                global_step: step,
                ..Default::default()
            };
            let ctx = CallbackContext {
                state: &state,
                sink: &sink,
                others: [&[], &[]],
                strategy: &SingleProcess,
            };
            mc.warm_staging(&ctx);
            sink.writer.flush();
        };
        let built = || sink.built.load(std::sync::atomic::Ordering::SeqCst);
        let never_saves = ModelCheckpoint::builder().save_top_k(0).build().unwrap();
        warm(&never_saves, 1);
        let (mut pending, _, _) = pending_on_rank_one();
        warm(&pending, 1);
        pending.pending = None;
        warm(&pending, 0);
        assert_eq!((built(), sink.writer.staging_warmed()), (0, false));

        warm(&pending, 1);
        assert_eq!((built(), sink.writer.staging_warmed()), (1, true));
        let staging = sink.writer.staging();
        assert_eq!(staging.lock().unwrap().lens(), [3, 5]);
        for source in sink.sources.lock().unwrap().iter() {
            assert_eq!(source.releases(), 0, "no values read");
            assert_eq!(
                std::sync::Arc::strong_count(source),
                1,
                "the snapshot is gone"
            );
        }
        warm(&pending, 2);
        assert_eq!(built(), 1, "once per writer");
    }

    /// Rank 0's messages when its writer failed at action `index` with `message`.
    fn failed_at(index: u64, message: &str) -> Vec<Vec<u8>> {
        let mut agree = vec![1u8];
        agree.extend_from_slice(message.as_bytes());
        vec![index.to_le_bytes().to_vec(), agree]
    }

    #[test]
    fn other_ranks_settle_with_rank_zeros_failure_named_by_its_action() {
        let (mut mc, saved, _) = pending_on_rank_one();
        let message = "cannot link `ckpts/last.ckpt`: No space left on device";
        let (result, left) = settle_on_rank_one(&mut mc, false, failed_at(1, message));
        let error = result.unwrap_err();
        assert!(error.is_io(), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("cannot link `ckpts/last.ckpt`: on rank 0: {message}")
        );
        assert_eq!(left, 0, "rank 1 made fewer broadcasts than rank 0");
        // Back to the book of the file written before the failure, as on rank 0.
        assert_eq!(mc.book, saved);
        assert!(mc.pending.is_none());
    }

    #[test]
    fn other_ranks_keep_training_with_the_book_of_the_last_file_written() {
        let (mut mc, saved, _) = pending_on_rank_one();
        let (result, left) = settle_on_rank_one(&mut mc, true, failed_at(0, "cannot write"));
        result.unwrap();
        assert_eq!(left, 0);
        // The save itself failed: back to the book before the trigger.
        assert_ne!(mc.book, saved);
        assert_eq!(mc.book.last_global_step_saved, 0);
    }

    #[test]
    fn a_success_costs_other_ranks_one_broadcast_and_keeps_the_decided_book() {
        let (mut mc, _, decided) = pending_on_rank_one();
        let (result, left) =
            settle_on_rank_one(&mut mc, false, vec![u64::MAX.to_le_bytes().to_vec()]);
        result.unwrap();
        assert_eq!(left, 0);
        assert_eq!(mc.book, decided);
        // Nothing pending: no broadcast at all.
        let (result, _) = settle_on_rank_one(&mut mc, false, Vec::new());
        result.unwrap();
    }
}

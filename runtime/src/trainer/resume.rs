//! Resuming: resolving `ckpt_path` (C.3) and restoring the training state from a checkpoint (C.4).
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::path::{Path, PathBuf};

use super::{CkptPath, Trainer, TrainerFn};
use crate::callbacks::ModelCheckpoint;
use crate::checkpoint::{
    file_error_first, read_checkpoint, read_checkpoint_header, read_checkpoint_lazy,
    verify_checkpoint, verify_lazy_tensors, Checkpoint, CheckpointError,
};
use crate::device::Backend;
use crate::metrics::EpochAccumulator;
use crate::module::{load_state_dict, LightningModule};
use crate::{Error, Result};

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// Lightning's `ckpt_path` resolution (C.3), returning the chosen file already read and verified.
    ///
    /// The checkpoint returned holds its large tensors in the file ([`read_checkpoint_lazy`]): the
    /// restore reads them into the module's and the optimizers' buffers. A file named by path is
    /// verified as it is restored (its structure now, each tensor as it is read), so that it is read
    /// once (with several processes, rank 0 verifies it whole first: it sends every tensor); `"best"`
    /// and `"last"` verify every tensor of a candidate first, through one buffer, so that a damaged
    /// file is passed over for the next one as before.
    ///
    /// `"last"` is the newest intact full checkpoint among the checkpoint callbacks' files (their `last`
    /// files and every other checkpoint file where their templates write), by the global step stored
    /// inside the files; `"best"` the best intact file of the first checkpoint callback. Damaged files
    /// are skipped with a warning; when files exist but none can be loaded, that is an error naming each.
    /// Records in the state whether the file was named by path, which checkpoint callbacks never delete.
    pub(super) fn resolve_ckpt_path(
        &mut self,
        p: CkptPath,
    ) -> Result<Option<(PathBuf, Checkpoint)>> {
        self.state.resumed_by_path = matches!(p, CkptPath::Path(_));
        let fn_ = self.fn_name();
        let (what, instead, fallback) = if self.state.fn_ == TrainerFn::Fitting {
            (
                "resume",
                "start from scratch",
                "training starts from scratch",
            )
        } else {
            (
                "load",
                "use the module's current weights",
                "the module's current weights are used",
            )
        };
        match p {
            CkptPath::Path(path) => {
                let ckpt = read_checkpoint_lazy(&path)?;
                if self.strategy.world_size() > 1 {
                    // Rank 0 sends every tensor to the other ranks: a damaged one is the file's
                    // error here, not a failure to encode what is sent.
                    verify_lazy_tensors(&ckpt, &path)?;
                }
                Ok(Some((path, ckpt)))
            }
            CkptPath::Best => {
                let ckpt_callbacks = self.callbacks.checkpoint_paths();
                let Some((first_key, first_paths)) = ckpt_callbacks.first() else {
                    return Err(Error::config(
                        "ckpt_path",
                        format!("`{fn_}(ckpt_path = \"best\")` is set but no checkpoint callback is configured"),
                    ));
                };
                if ckpt_callbacks.len() > 1 {
                    crate::warn(&format!(
                        "`ckpt_path = \"best\"` with {} checkpoint callbacks: using the first, `{}`",
                        ckpt_callbacks.len(),
                        first_key
                    ));
                }
                let ranked = first_paths.best.clone();
                if ranked.is_empty() {
                    if self.state.fast_dev_run {
                        return Err(Error::config("ckpt_path", format!(
                            "you cannot execute `{fn_}(ckpt_path = \"best\")` with `fast_dev_run`, which saves no \
                             checkpoint: pass an exact checkpoint path to `{fn_}(ckpt_path = ...)`"
                        )));
                    }
                    return Err(Error::config(
                        "ckpt_path",
                        format!("`{fn_}(ckpt_path = \"best\")` is set but the checkpoint callback has not saved a best model"),
                    ));
                }
                let mut problems = Vec::new();
                for path in ranked {
                    match verify_checkpoint(&path) {
                        Ok(ckpt) => return Ok(Some((path, ckpt))),
                        Err(e) => {
                            crate::warn(&format!(
                                "`ckpt_path = \"best\"`: skipping a checkpoint that cannot be loaded: {e}"
                            ));
                            problems.push(e.to_string());
                        }
                    }
                }
                Err(Error::config("ckpt_path", format!(
                    "`{fn_}(ckpt_path = \"best\")`: none of the checkpoint callback's top-k files can be loaded:\n  {}",
                    problems.join("\n  ")
                )))
            }
            CkptPath::Last => {
                let mut candidates: Vec<PathBuf> = Vec::new();
                for path in self
                    .callbacks
                    .checkpoint_paths()
                    .into_iter()
                    .flat_map(|(_, p)| p.last.into_iter().chain(p.others))
                {
                    if path.is_file() && !candidates.contains(&path) {
                        candidates.push(path);
                    }
                }
                let found = candidates.len();
                let (newest, problems) = newest_intact(candidates);
                if newest.is_none() && found > 0 {
                    // Training from scratch would silently discard them.
                    return Err(Error::config("ckpt_path", format!(
                        "`{fn_}(ckpt_path = \"last\")`: none of the {found} checkpoint files found can be loaded, \
                         so there is nothing to {what} from; repair or move them, or pass no `ckpt_path` to \
                         {instead}:\n  {}",
                        problems.join("\n  ")
                    )));
                }
                if newest.is_none() {
                    let dirs: Vec<String> = self
                        .callbacks
                        .all_of::<ModelCheckpoint>()
                        .filter_map(|c| c.dirpath())
                        .map(|d| format!("`{}`", d.display()))
                        .collect();
                    let searched = if dirs.is_empty() {
                        String::new()
                    } else {
                        format!(" (searched {})", dirs.join(", "))
                    };
                    crate::warn(&format!(
                        "`{fn_}(ckpt_path = \"last\")` is set, but there is no checkpoint to {what} from{searched}: \
                         {fallback} (hint: a logger's default directory changes with every \
                         `version_N`; give the `ModelCheckpoint` a fixed `dirpath` to find it across runs)"
                    ));
                }
                Ok(newest)
            }
        }
    }

    /// The name of the running entry point, for messages: `fit`, `validate`, `test` or `predict`.
    fn fn_name(&self) -> &'static str {
        match self.state.fn_ {
            TrainerFn::Validating => "validate",
            TrainerFn::Testing => "test",
            TrainerFn::Predicting => "predict",
            TrainerFn::Fitting | TrainerFn::Idle => "fit",
        }
    }

    /// Lightning's choice of weights for `validate`, `test` and `predict` (`_select_ckpt_path`, C.3):
    /// `ckpt_path`'s, loaded into the attached module (its `on_load_checkpoint`, then its weights,
    /// strictly; nothing else is restored); with no `ckpt_path`, a module passed to the call keeps its
    /// weights, and the attached one takes the first checkpoint callback's best file when it has one,
    /// with Lightning's warning, else keeps its weights (where Lightning would fail).
    pub(super) fn load_eval_weights(
        &mut self,
        module_provided: bool,
        ckpt_path: Option<CkptPath>,
    ) -> Result<()> {
        let fn_ = self.fn_name();
        let ckpt_path = match ckpt_path {
            Some(p) => p,
            None if module_provided => return Ok(()),
            None => {
                let has_best = self
                    .callbacks
                    .checkpoint_paths()
                    .first()
                    .is_some_and(|(_, p)| !p.best.is_empty());
                if !has_best {
                    return Ok(());
                }
                crate::warn(&format!(
                    "`.{fn_}(ckpt_path=None)` was called without a model. The best model of the previous \
                     `fit` call will be used. You can pass `.{fn_}(ckpt_path='best')` to use the best model \
                     or `.{fn_}(ckpt_path='last')` to use the last model. If you pass a value, this warning \
                     will be silenced."
                ));
                CkptPath::Best
            }
        };
        // Only `fit` keeps the file it resumed from; choosing weights here changes nothing about it.
        let kept = self.state.resumed_by_path;
        let resolved = self.resolve_shared(Some(ckpt_path));
        self.state.resumed_by_path = kept;
        let Some((path, ckpt)) = resolved? else {
            return Ok(());
        };
        let module = self.module.as_mut().ok_or_else(no_module)?;
        file_error_first(|| module.on_load_checkpoint(&ckpt))?;
        load_state_dict(module, &ckpt.state_dict, true, &path)?;
        crate::info(&format!(
            "Loaded model weights from the checkpoint at {}",
            path.display()
        ));
        Ok(())
    }

    /// Restores module, optimizer, scheduler, loops and callbacks from `path` (C.4).
    pub(super) fn restore(&mut self, path: &Path, ckpt: Checkpoint) -> Result<()> {
        if ckpt.weights_only {
            return Err(CheckpointError::WeightsOnly {
                path: path.into(),
                what: "optimizer",
            }
            .into());
        }
        self.check_world_size(path, &ckpt)?;
        if let Some((field, value, reason)) = impossible_counter(
            &ckpt,
            self.state.num_training_batches,
            M::MANUAL_OPTIMIZATION,
        ) {
            return Err(CheckpointError::ImpossibleCounter {
                path: path.into(),
                field,
                value,
                reason,
            }
            .into());
        }
        let loops = &ckpt.loops;
        // Bounded by `impossible_counter`.
        let epoch = loops.epoch + u64::from(loops.epoch_finished);
        if let Some(max) = self.state.max_epochs {
            if epoch > max {
                return Err(Error::config("max_epochs", format!(
                    "you restored a checkpoint with current_epoch={epoch}, but you have set `max_epochs({max})`"
                )));
            }
        }
        let module = self.module.as_mut().ok_or_else(no_module)?;
        file_error_first(|| module.on_load_checkpoint(&ckpt))?;
        load_state_dict(module, &ckpt.state_dict, true, path)?;
        self.restore_optimizers(&ckpt, path)?;

        if loops.seed != self.state.seed {
            crate::warn(&format!(
                "resuming with the data-order seed stored in the checkpoint ({}) instead of the trainer's ({})",
                loops.seed, self.state.seed
            ));
        }
        self.state.seed = loops.seed;
        self.state.epoch = epoch;
        self.state.batches_done = if loops.epoch_finished {
            0
        } else {
            loops.batches_done
        };
        self.state.global_step = loops.global_step;
        self.state.total_batches = loops.total_batches;
        self.train_accum = match (&loops.metric_state, loops.epoch_finished) {
            (Some(v), false) => v.deserialized().map_err(|e| CheckpointError::Corrupt {
                path: path.into(),
                reason: format!("the loop's metric state does not decode: {e}"),
            })?,
            _ => EpochAccumulator::default(),
        };

        let unmatched = self.callbacks.load_state_dicts(&ckpt.callbacks)?;
        if !unmatched.is_empty() {
            crate::warn(&format!(
                "be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided \
                 during `Trainer` instantiation; please add the following callbacks: {unmatched:?}"
            ));
        }
        self.state.resumed_from = Some(path.to_path_buf());
        Ok(())
    }

    /// A checkpoint of a run with another number of processes resumes at an epoch boundary, with a
    /// warning, and is refused part-way through an epoch: the rest of that epoch was cut into shares
    /// for the old number of ranks, and no cut for the new number sees each remaining sample once.
    fn check_world_size(&self, path: &Path, ckpt: &Checkpoint) -> Result<()> {
        let (saved, now) = (
            ckpt.loops.world_size.unwrap_or(1),
            self.strategy.world_size() as u64,
        );
        if saved == now {
            return Ok(());
        }
        let loops = &ckpt.loops;
        let processes = |n: u64| match n {
            1 => "1 process".to_string(),
            n => format!("{n} processes"),
        };
        if !loops.epoch_finished && loops.batches_done > 0 {
            return Err(Error::config(
                "strategy",
                format!(
                    "`{}` was saved by a run of {} part-way through epoch {} (after its batch {}), and this \
                     run has {}: the rest of that epoch cannot be shared out as the saved run would have; \
                     resume it with {}, or resume from a checkpoint saved at the end of an epoch",
                    path.display(),
                    processes(saved),
                    loops.epoch,
                    loops.batches_done,
                    processes(now),
                    processes(saved),
                ),
            ));
        }
        crate::warn(&format!(
            "`{}` was saved by a run of {} and this run has {}: the global batch is now {now} times the \
                     loader's batch size instead of {saved} times, and the data order differs from the saved run's",
            path.display(),
            processes(saved),
            processes(now),
        ));
        Ok(())
    }

    fn restore_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        let module = self.module.as_ref().ok_or_else(no_module)?;
        let opts = self.optimizers.as_mut().ok_or_else(no_module)?;
        let Some(first) = &ckpt.optimizer else {
            return Err(CheckpointError::WeightsOnly {
                path: path.into(),
                what: "optimizer",
            }
            .into());
        };
        let mismatch = |reason: String| CheckpointError::StateMismatch {
            path: path.into(),
            reason,
        };
        let (stored, configured) = (1 + ckpt.more_optimizers.len(), opts.len());
        if stored != configured {
            let count = |n: usize| match n {
                1 => "1 optimizer".to_string(),
                n => format!("{n} optimizers"),
            };
            return Err(mismatch(format!(
                "the checkpoint holds the state of {}, but `configure_optimizers` returns {}: configure the \
                 optimizers the checkpoint was trained with",
                count(stored),
                count(configured)
            ))
            .into());
        }
        let states = std::iter::once((first, ckpt.scheduler.as_ref())).chain(
            ckpt.more_optimizers
                .iter()
                .map(|e| (&e.optimizer, e.scheduler.as_ref())),
        );
        for (i, (state, scheduler_state)) in states.enumerate() {
            let Some((optimizer, scheduler)) = opts.get_mut(i) else {
                continue;
            };
            // One optimizer keeps the words it always had; several are told apart by index.
            let (optimizer_name, scheduler_name) = if configured == 1 {
                (
                    "optimizer".to_string(),
                    "learning-rate scheduler".to_string(),
                )
            } else {
                (
                    format!("optimizer {i}"),
                    format!("learning-rate scheduler of optimizer {i}"),
                )
            };
            // The state's tensors are read from the file as the optimizer takes them: a damaged one is
            // the file's error, whatever the optimizer made of a tensor it could not read.
            let loaded =
                file_error_first(|| Ok::<_, Error>(optimizer.load_state_dict(module, state)))?;
            loaded.map_err(|e| {
                mismatch(format!(
                    "the {optimizer_name} state does not fit the configured {optimizer_name}: {e}"
                ))
            })?;
            match (scheduler, scheduler_state) {
                (Some(s), Some(state)) => s.load_state_dict(state).map_err(|e| {
                    mismatch(format!(
                        "the {scheduler_name} state does not fit the configured {scheduler_name}: {e}"
                    ))
                })?,
                (Some(_), None) => {
                    return Err(mismatch(format!(
                        "a {scheduler_name} is configured, but the checkpoint holds no scheduler state for it"
                    ))
                    .into())
                }
                (None, Some(s)) => crate::warn(&format!(
                    "the checkpoint holds the state of a `{}` {scheduler_name}, but none is configured now: \
                     it is ignored",
                    s.kind
                )),
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// The largest value a loop counter may have: `epoch` and `step` are signed 64-bit integers where
/// monitors and filename templates read them, and no run counts that far (2<sup>63</sup> batches at one
/// per nanosecond take 292 years), so a counter from a file above it is damage or forgery, and every
/// counter below it can be incremented without overflow.
const MAX_COUNTER: u64 = i64::MAX as u64;

/// The first counter of `ckpt` that no run reaches, as (field, value, why), given the training batches
/// per epoch of this `fit` and whether the module steps its optimizers itself. A counter is impossible
/// when it is above [`MAX_COUNTER`]; when it contradicts the others (batches of the epoch beyond the
/// batches of the run, which include them, or, in automatic optimization, optimizer steps beyond them:
/// a manual step may take several; the header's `epoch` or `global_step` unlike the loop's, which are written equal); or when an
/// unfinished epoch is further along than the epoch is long now (other data or `limit_train_batches`).
fn impossible_counter(
    ckpt: &Checkpoint,
    num_training_batches: u64,
    manual_optimization: bool,
) -> Option<(&'static str, u64, String)> {
    let loops = &ckpt.loops;
    let counters = [
        ("loops.epoch", loops.epoch),
        ("loops.batches_done", loops.batches_done),
        ("loops.global_step", loops.global_step),
        ("loops.total_batches", loops.total_batches),
        ("epoch", ckpt.epoch),
        ("global_step", ckpt.global_step),
    ];
    if let Some((field, value)) = counters.into_iter().find(|(_, v)| *v > MAX_COUNTER) {
        return Some((
            field,
            value,
            format!("more than any run counts (at most 2^63 - 1 = {MAX_COUNTER}): the file is damaged or was not written by fulgur"),
        ));
    }
    let total = loops.total_batches;
    let inconsistent = |field, value, why: &str| {
        Some((
            field,
            value,
            format!("{why}: the file is damaged or was not written by fulgur"),
        ))
    };
    if loops.batches_done > total {
        return inconsistent(
            "loops.batches_done",
            loops.batches_done,
            &format!("more than the {total} batches of the whole run (`loops.total_batches`)"),
        );
    }
    if loops.global_step > total && !manual_optimization {
        return inconsistent(
            "loops.global_step",
            loops.global_step,
            &format!(
                "more optimizer steps than the {total} batches of the whole run (`loops.total_batches`), \
                 and every step takes at least one batch"
            ),
        );
    }
    if ckpt.global_step != loops.global_step {
        return inconsistent(
            "global_step",
            ckpt.global_step,
            &format!("but `loops.global_step` is {}", loops.global_step),
        );
    }
    if ckpt.epoch != loops.epoch {
        return inconsistent(
            "epoch",
            ckpt.epoch,
            &format!("but `loops.epoch` is {}", loops.epoch),
        );
    }
    if !loops.epoch_finished && loops.batches_done > num_training_batches {
        return Some((
            "loops.batches_done",
            loops.batches_done,
            format!(
                "beyond the end of the epoch: the training data has {num_training_batches} batches per \
                 epoch (after `limit_train_batches`); resume with the data and `limit_train_batches` the \
                 checkpoint was trained with"
            ),
        ));
    }
    None
}

/// The newest intact checkpoint among `candidates` (earlier ones win ties): full checkpoints before
/// weights-only ones, then by the global step in their headers; each is read and verified in that order
/// until one passes, so a keep-all directory costs one header read per file and one full read. Also
/// why each file passed over could not be loaded.
fn newest_intact(candidates: Vec<PathBuf>) -> (Option<(PathBuf, Checkpoint)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut skip = |e: CheckpointError| {
        crate::warn(&format!(
            "`ckpt_path = \"last\"`: skipping a checkpoint that cannot be loaded: {e}"
        ));
        problems.push(e.to_string());
    };
    let mut ranked = Vec::new();
    for (i, path) in candidates.into_iter().enumerate() {
        // A file from another writer may keep its scalars after the tensors: then the header read fails
        // and only a full read tells whether the file is damaged.
        let rank = read_checkpoint_header(&path)
            .map(|h| (h.weights_only, h.global_step))
            .or_else(|_| read_checkpoint(&path).map(|c| (c.weights_only, c.global_step)));
        match rank {
            Ok((weights_only, step)) => {
                ranked.push((!weights_only, step, std::cmp::Reverse(i), path))
            }
            Err(e) => skip(e),
        }
    }
    ranked.sort();
    while let Some((_, _, _, path)) = ranked.pop() {
        match verify_checkpoint(&path) {
            Ok(ckpt) => return (Some((path, ckpt)), problems),
            Err(e) => skip(e),
        }
    }
    (None, problems)
}

fn no_module() -> Error {
    super::fit::no_module()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_no_run_reaches_are_named_and_the_bound_itself_is_not() {
        let mut ok = Checkpoint::new("m");
        (ok.epoch, ok.global_step) = (2, 9);
        ok.loops = crate::checkpoint::LoopState {
            epoch: 2,
            batches_done: 3,
            global_step: 9,
            total_batches: 12,
            ..Default::default()
        };
        let found = |edit: fn(&mut Checkpoint), batches_per_epoch| {
            let mut c = ok.clone();
            edit(&mut c);
            impossible_counter(&c, batches_per_epoch, false).map(|(field, value, _)| (field, value))
        };
        assert_eq!(found(|_| {}, 5), None);
        assert_eq!(
            found(|_| {}, 3),
            None,
            "the last batch of the epoch is done"
        );
        assert_eq!(
            found(|c| c.loops.total_batches = u64::MAX, 5),
            Some(("loops.total_batches", u64::MAX))
        );
        assert_eq!(
            found(|c| c.loops.epoch = MAX_COUNTER + 1, 5),
            Some(("loops.epoch", MAX_COUNTER + 1))
        );
        assert_eq!(
            found(
                |c| {
                    (c.epoch, c.global_step) = (MAX_COUNTER, MAX_COUNTER);
                    c.loops.epoch = MAX_COUNTER;
                    c.loops.epoch_finished = true;
                    c.loops.global_step = MAX_COUNTER;
                    c.loops.total_batches = MAX_COUNTER;
                },
                5
            ),
            None,
            "every counter at the bound can still count on"
        );
        assert_eq!(
            found(|c| c.loops.batches_done = 13, 20),
            Some(("loops.batches_done", 13))
        );
        assert_eq!(
            found(|c| (c.global_step, c.loops.global_step) = (13, 13), 5),
            Some(("loops.global_step", 13))
        );
        let mut manual = ok.clone();
        (manual.global_step, manual.loops.global_step) = (13, 13);
        assert_eq!(
            impossible_counter(&manual, 5, true),
            None,
            "manual optimization may step several times per batch"
        );
        assert_eq!(found(|c| c.global_step = 8, 5), Some(("global_step", 8)));
        assert_eq!(found(|c| c.epoch = 1, 5), Some(("epoch", 1)));
        assert_eq!(found(|_| {}, 2), Some(("loops.batches_done", 3)));
        assert_eq!(
            found(|c| c.loops.epoch_finished = true, 2),
            None,
            "a finished epoch's position is not used"
        );
    }

    #[test]
    fn last_passes_over_a_newer_file_whose_large_tensor_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let (older, newer) = (dir.path().join("older.ckpt"), dir.path().join("newer.ckpt"));
        // Large enough to stay in the file until it is verified.
        let values: Vec<f32> = (0..50_000).map(|i| i as f32).collect();
        let mut ckpt = Checkpoint::new("m");
        ckpt.state_dict.insert(
            "big".into(),
            crate::checkpoint::TensorData::from_f32(vec![values.len()], values.clone()),
        );
        ckpt.global_step = 5;
        crate::checkpoint::write_checkpoint(&older, &ckpt).unwrap();
        ckpt.global_step = 9;
        crate::checkpoint::write_checkpoint(&newer, &ckpt).unwrap();
        let mut bytes = std::fs::read(&newer).unwrap();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = bytes.windows(data.len()).position(|w| w == data).unwrap();
        bytes[at + 1000] ^= 2;
        std::fs::write(&newer, bytes).unwrap();

        let (found, problems) = newest_intact(vec![older.clone(), newer.clone()]);
        let (path, ckpt) = found.unwrap();
        assert_eq!((path, ckpt.global_step), (older, 5));
        assert_eq!(
            problems,
            [format!(
                "checkpoint `{}` is damaged: checksum mismatch in tensor `big`",
                newer.display()
            )]
        );
        assert_eq!(ckpt.state_dict["big"].as_f32().unwrap().len(), 50_000);
    }

    #[test]
    fn last_ranks_a_file_without_a_readable_header_by_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (reordered, older, damaged) = (
            dir.path().join("reordered.ckpt"),
            dir.path().join("older.ckpt"),
            dir.path().join("damaged.ckpt"),
        );
        std::fs::write(&reordered, crate::checkpoint::scalars_after_tensors(9)).unwrap();
        let mut ckpt = Checkpoint::new("m");
        ckpt.global_step = 5;
        crate::checkpoint::write_checkpoint(&older, &ckpt).unwrap();
        std::fs::write(&damaged, b"FULGURCK and then nothing sensible").unwrap();
        let (newest, problems) = newest_intact(vec![older, damaged.clone(), reordered.clone()]);
        let (path, ckpt) = newest.unwrap();
        assert_eq!((path, ckpt.global_step), (reordered, 9));
        assert!(
            problems.len() == 1 && problems[0].contains(&damaged.display().to_string()),
            "{problems:?}"
        );
    }
}

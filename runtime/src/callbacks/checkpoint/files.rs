//! `ModelCheckpoint` and its directory: performing the policy's actions (save, link, delete) and
//! `to_yaml`, where its files are (the `"last"` search), the deletions a crash interrupted, the leftovers
//! of interrupted writes, and the one way it deletes a file (G.9): only a name its own templates can
//! produce inside its `dirpath`, only where the real path (symlinks resolved) agrees, and only through
//! the rank-zero gate.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::names::OwnNames;
use super::policy::{Action, Book};
use super::ModelCheckpoint;
use crate::callbacks::CallbackContext;
use crate::strategy::RankZeroFs;
use crate::{Error, Result};

/// The directories under `dir` where `own`'s templates write: `dir` itself and the existing
/// sub-directories the templates name. A symlink is never followed into a directory.
fn own_dirs(dir: &Path, own: &OwnNames) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            // `file_type` does not follow symlinks.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let mut sub = rel.clone();
            sub.push(name);
            let parts: Vec<&str> = sub.iter().map(String::as_str).collect();
            if !own.leads_to(&parts) {
                continue;
            }
            if own.dir(&parts) {
                found.push(entry.path());
            }
            stack.push((entry.path(), sub));
        }
    }
    found.sort();
    found
}

/// The entries of `dirs` that are not directories, sorted.
fn files_in(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok()))
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The checkpoint files where `own`'s templates write under `dir`: names ending in `extension`,
/// temporaries excluded; sorted.
fn checkpoint_files(dir: &Path, own: &OwnNames, extension: &str) -> Vec<PathBuf> {
    files_in(&own_dirs(dir, own))
        .into_iter()
        .filter(|p| {
            let name = file_name(p);
            name.ends_with(extension) && !crate::checkpoint::is_temporary_file(name)
        })
        .collect()
}

/// Deletes the temporary files that interrupted writes left where the callback's templates write under
/// `dir` (rank 0): never a checkpoint, whatever the name they were written for (a manual
/// `save_checkpoint` into `dirpath` too). Writes under way in this process are spared; another process
/// writing into the same directory is not supported (nor is it in Lightning: the version counter would
/// race too).
pub(super) fn remove_leftover_temporaries(ctx: &CallbackContext<'_>, dir: &Path, own: &OwnNames) {
    if !ctx.fs().is_writer() {
        return;
    }
    for path in files_in(&own_dirs(dir, own)) {
        let name = file_name(&path);
        if !crate::checkpoint::is_temporary_file(name) || crate::checkpoint::is_in_flight(&path) {
            continue;
        }
        match delete_own(&ctx.fs(), dir, own, &path, true) {
            Ok(true) => crate::info(&format!(
                "deleted {}, the temporary file of a write that did not finish",
                path.display()
            )),
            Ok(false) => {}
            Err(e) => crate::warn(&format!("could not delete a leftover temporary file: {e}")),
        }
    }
}

/// Deletes `path` through the rank-zero gate when it is one of the callback's own files for real: a name
/// its templates can produce inside `dir` (or, with `temporary`, a leftover temporary file), not a
/// directory, whose parent with symlinks resolved is `dir`'s real path or the real sub-directory the
/// template names. Anything else is left alone with a warning. Returns whether a file was deleted; an
/// error is one of the deletion itself.
pub(super) fn delete_own(
    fs: &RankZeroFs<'_>,
    dir: &Path,
    own: &OwnNames,
    path: &Path,
    temporary: bool,
) -> Result<bool> {
    if !fs.is_writer() {
        return Ok(false);
    }
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(false);
    };
    let refusal = if !temporary && !own.contains(path, dir) {
        Some(format!(
            "it is not a name the callback's `filename` or `name_last` template can produce inside `dirpath` `{}`",
            dir.display()
        ))
    } else if meta.is_dir() {
        Some("it is a directory".to_string())
    } else {
        outside_for_real(path, dir)
    };
    if let Some(why) = refusal {
        crate::warn(&format!(
            "`ModelCheckpoint` left `{}` alone: {why}",
            path.display()
        ));
        return Ok(false);
    }
    fs.remove_file(path)?;
    Ok(true)
}

/// Why `path`, inside `dir` by its text, is not inside it for real: its parent directory, symlinks
/// resolved, is not `dir`'s real path joined with the same sub-directories.
fn outside_for_real(path: &Path, dir: &Path) -> Option<String> {
    let not_inside = || Some(format!("it is not inside `dirpath` `{}`", dir.display()));
    let Some(below) = path.parent().and_then(|p| p.strip_prefix(dir).ok()) else {
        return not_inside();
    };
    if below
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return not_inside();
    }
    let parent = dir.join(below);
    match (dir.canonicalize(), parent.canonicalize()) {
        (Ok(real_dir), Ok(real_parent)) if real_parent == real_dir.join(below) => None,
        (Ok(_), Ok(real_parent)) => Some(format!(
            "its directory is really `{}`, outside `dirpath` (a symbolic link leads there)",
            real_parent.display()
        )),
        (Err(e), _) | (_, Err(e)) => Some(format!("its real directory cannot be resolved: {e}")),
    }
}

impl ModelCheckpoint {
    fn own_names(&self) -> OwnNames {
        OwnNames::new(&self.cfg)
    }

    /// The `last` files where the callback writes them: `last.ckpt`, `last-v1.ckpt`, … (B.13), or
    /// whatever its `name_last` template names.
    pub(super) fn find_last_checkpoints(&self) -> Vec<PathBuf> {
        let Some(dir) = &self.dirpath else {
            return Vec::new();
        };
        let own = self.own_names();
        checkpoint_files(dir, &own, &self.cfg.file_extension)
            .into_iter()
            .filter(|p| own.is_last(p, dir))
            .collect()
    }

    /// Every checkpoint file where the callback's templates write (not in other sub-directories).
    pub(super) fn checkpoint_files(&self) -> Vec<PathBuf> {
        self.dirpath.as_deref().map_or_else(Vec::new, |d| {
            checkpoint_files(d, &self.own_names(), &self.cfg.file_extension)
        })
    }

    /// Whether the book lists `path` as one of the callback's files.
    pub(super) fn references(&self, path: &Path) -> bool {
        let b = &self.book;
        b.best_k_models.iter().any(|(k, _)| k == path)
            || b.best_model_path.as_deref() == Some(path)
            || b.kth_best_model_path.as_deref() == Some(path)
            || b.last_model_path.as_deref() == Some(path)
    }

    /// Finishes the deletions a resumed checkpoint recorded as under way, for the callback's own files
    /// that the restored book does not reference and that are not the resume source.
    pub(super) fn finish_pending_deletes(&mut self, ctx: &CallbackContext<'_>) {
        let pending = std::mem::take(&mut self.pending_deletes);
        let Some(dir) = self.dirpath.clone() else {
            return;
        };
        let own = self.own_names();
        let resumed = ctx.state().resumed_from.as_deref();
        for path in pending {
            if self.references(&path) || resumed == Some(path.as_path()) {
                continue;
            }
            match delete_own(&ctx.fs(), &dir, &own, &path, false) {
                Ok(true) => crate::info(&format!(
                    "deleted {}: the checkpoint this run resumed from had evicted it, and a crash interrupted the deletion",
                    path.display()
                )),
                Ok(false) => {}
                Err(e) => crate::warn(&format!("could not finish an interrupted deletion: {e}")),
            }
        }
    }

    /// Warns about the files the book lists as best or top-k that are gone (deleted by hand, say): they
    /// keep their places until better scores replace them, and `ckpt_path = "best"` skips them.
    pub(super) fn warn_missing_files(&self, ctx: &CallbackContext<'_>) {
        if !ctx.fs().is_writer() {
            return;
        }
        let b = &self.book;
        let mut missing: Vec<String> = Vec::new();
        let mut note = |what: &str, path: &Path| {
            let line = format!("{what} `{}`", path.display());
            if path.symlink_metadata().is_err() && !missing.contains(&line) {
                missing.push(line);
            }
        };
        if let Some(best) = &b.best_model_path {
            note("`best_model_path`", best);
        }
        for (path, _) in &b.best_k_models {
            if b.best_model_path.as_ref() != Some(path) {
                note("the top-k file", path);
            }
        }
        if !missing.is_empty() {
            crate::warn(&format!(
                "`ModelCheckpoint` state names files that no longer exist: {}; they keep their places in the top-k until better scores replace them, and `ckpt_path = \"best\"` skips them",
                missing.join(", ")
            ));
        }
    }

    /// Writes `best_k_models` as YAML (`path: score` lines), by default to `dirpath/best_k_models.yaml`.
    pub fn to_yaml(
        &self,
        path: Option<&Path>,
        fs: crate::strategy::RankZeroFs<'_>,
    ) -> Result<PathBuf> {
        let target = match (path, &self.dirpath) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(d)) => d.join("best_k_models.yaml"),
            (None, None) => {
                return Err(Error::config(
                    "dirpath",
                    "`to_yaml` needs a path before `dirpath` is resolved",
                ))
            }
        };
        let text: String = self
            .book
            .best_k_models
            .iter()
            .map(|(p, s)| format!("{}: {s:?}\n", yaml_key(p)))
            .collect();
        fs.write_file(&target, text.as_bytes())?;
        Ok(target)
    }

    /// Performs `actions` in order; `saved` is the book recorded in the last file written.
    pub(super) fn perform(
        &self,
        ctx: &CallbackContext<'_>,
        actions: Vec<Action>,
        saved: &mut Option<Book>,
    ) -> Result<()> {
        let key = self.cfg.state_key();
        let own = OwnNames::new(&self.cfg);
        let dir = self.dirpath.clone().unwrap_or_default();
        let deletes = deletions(&actions);
        for action in actions {
            match action {
                Action::Save { path, book } => {
                    let started = Instant::now();
                    ctx.save_checkpoint_as(
                        &path,
                        self.cfg.save_weights_only,
                        key.clone(),
                        self.state_value(&book, &deletes),
                    )?;
                    *saved = Some(*book);
                    if self.cfg.verbose && ctx.fs().is_writer() {
                        let s = ctx.state();
                        let took = started.elapsed();
                        crate::info(&save_summary(s.epoch, s.global_step, &path, took));
                    }
                }
                Action::Link { target, link } => {
                    let linked = ctx.fs().link(&target, &link);
                    ctx.fs().agree(linked, &link, "link")?;
                }
                Action::Delete(path) => {
                    let deleted = delete_own(&ctx.fs(), &dir, &own, &path, false).map(drop);
                    ctx.fs().agree(deleted, &path, "delete")?;
                }
            }
        }
        Ok(())
    }
}

/// Whether `path` exists, as rank 0 sees it, on every rank.
pub(super) fn exists_on_rank_zero(ctx: &CallbackContext<'_>, path: &Path) -> bool {
    let here = path.symlink_metadata().is_ok();
    ctx.strategy().broadcast_bool(here).unwrap_or(here)
}

/// The files a trigger's actions delete; a save records them in the state it writes, so that a resume
/// finishes deletions a crash interrupted.
pub(super) fn deletions(actions: &[Action]) -> Vec<PathBuf> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// The one-line summary of a save printed with `verbose`.
pub(super) fn save_summary(epoch: u64, global_step: u64, path: &Path, took: Duration) -> String {
    let size = path
        .metadata()
        .map(|m| format!(", {}", crate::human_bytes(m.len())))
        .unwrap_or_default();
    format!(
        "saved checkpoint {} (epoch {}, step {}{size}, {} ms)",
        path.display(),
        epoch,
        global_step,
        took.as_millis()
    )
}

fn yaml_key(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TrainerState;

    #[test]
    fn only_a_path_whose_real_directory_is_inside_dirpath_may_be_deleted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpts");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert_eq!(outside_for_real(&dir.join("a.ckpt"), &dir), None);
        assert_eq!(outside_for_real(&dir.join("sub/a.ckpt"), &dir), None);
        // Outside by its text, or climbing out: refused, whatever the caller checked before.
        let refused = |p: PathBuf| outside_for_real(&p, &dir).is_some();
        assert!(refused(root.path().join("a.ckpt")));
        assert!(refused(dir.join("sub/../../a.ckpt")));
        assert!(refused(PathBuf::from("a.ckpt")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path(), dir.join("link")).unwrap();
            let why = outside_for_real(&dir.join("link/a.ckpt"), &dir).unwrap();
            assert!(why.contains("symbolic link"), "{why}");
        }
    }

    #[test]
    fn the_verbose_save_line_names_the_file_the_position_the_size_and_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch=3-step=120.ckpt");
        std::fs::write(&path, vec![0u8; 1_234_567]).unwrap();
        let s = TrainerState {
            epoch: 3,
            global_step: 120,
            ..Default::default()
        };
        assert_eq!(
            save_summary(s.epoch, s.global_step, &path, Duration::from_millis(42)),
            format!(
                "saved checkpoint {} (epoch 3, step 120, 1.2 MB, 42 ms)",
                path.display()
            )
        );
        assert_eq!(
            save_summary(
                s.epoch,
                s.global_step,
                &dir.path().join("gone"),
                Duration::ZERO
            ),
            format!(
                "saved checkpoint {} (epoch 3, step 120, 0 ms)",
                dir.path().join("gone").display()
            )
        );
        let sizes: Vec<String> = [0, 999, 1000, 52_000, 3_000_000_000, 7_000_000_000_000_000]
            .map(crate::human_bytes)
            .into();
        assert_eq!(
            sizes,
            ["0 B", "999 B", "1.0 KB", "52.0 KB", "3.0 GB", "7000.0 TB"]
        );
    }
}

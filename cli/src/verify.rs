//! `fulgur verify`: whether checkpoint files are intact, and for a directory which file is best and
//! which is last.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ciborium::Value;
use fulgur_runtime::checkpoint::{is_temporary_file, verify_checkpoint};
use serde_json::json;

use crate::checkpoint_callbacks;

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// `Ok((epoch, global_step))` when every checksum holds and the structure decodes; else the reader's
    /// error, which names the damaged part.
    pub outcome: Result<(u64, u64), String>,
    /// When a `ModelCheckpoint` names it as its best file (directories only): its monitor and score.
    pub best: Option<String>,
    /// Whether a `ModelCheckpoint` names it as its last file (directories only).
    pub last: bool,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Every file checked, in the order given (a directory's sorted by name).
    pub files: Vec<FileReport>,
    /// Temporary files of interrupted writes found in directories (not checkpoints; safe to delete once
    /// no run writes there).
    pub leftovers: Vec<PathBuf>,
    /// Problems that are not a file's: a directory that cannot be listed, a path that does not exist.
    pub errors: Vec<String>,
}

impl Report {
    /// Whether every file is intact and nothing went wrong.
    pub fn all_intact(&self) -> bool {
        self.errors.is_empty() && self.files.iter().all(|f| f.outcome.is_ok())
    }
}

/// Verifies every file in `paths`; a directory stands for the checkpoints (`*.ckpt`) in it.
pub fn verify(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in paths {
        if path.is_dir() {
            verify_dir(path, &mut report);
        } else if path.exists() {
            report.files.push(check(path).0);
        } else {
            report
                .errors
                .push(format!("`{}` does not exist", path.display()));
        }
    }
    report
}

/// Verifies one file; returns its verdict and, when intact, its callback states.
fn check(path: &Path) -> (FileReport, Option<BTreeMap<String, Value>>) {
    let (outcome, callbacks) = match verify_checkpoint(path) {
        Ok(c) => (Ok((c.epoch, c.global_step)), Some(c.callbacks)),
        Err(e) => (Err(e.to_string()), None),
    };
    let report = FileReport {
        path: path.to_path_buf(),
        outcome,
        best: None,
        last: false,
    };
    (report, callbacks)
}

fn verify_dir(dir: &Path, report: &mut Report) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report
                .errors
                .push(format!("cannot list `{}`: {e}", dir.display()));
            return;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut found = Vec::new();
    let mut states = Vec::new();
    for name in names {
        if is_temporary_file(&name) {
            report.leftovers.push(dir.join(&name));
        } else if name.ends_with(".ckpt") {
            let (file, callbacks) = check(&dir.join(&name));
            found.push(file);
            states.push(callbacks);
        }
    }
    if found.is_empty() {
        report.errors.push(format!(
            "`{}` holds no checkpoint (`*.ckpt`)",
            dir.display()
        ));
        return;
    }
    mark_best_and_last(&mut found, &states);
    report.files.extend(found);
}

/// Marks the files the newest intact checkpoint's `ModelCheckpoint` states name as best and last (by
/// file name: the states hold the paths as the run wrote them, perhaps relative to another directory).
fn mark_best_and_last(files: &mut [FileReport], states: &[Option<BTreeMap<String, Value>>]) {
    let newest = files
        .iter()
        .zip(states)
        .filter_map(|(f, s)| Some((f.outcome.as_ref().ok()?.1, &f.path, s.as_ref()?)))
        .max_by_key(|&(step, path, _)| {
            (
                step,
                std::fs::metadata(path).and_then(|m| m.modified()).ok(),
            )
        })
        .map(|(_, _, callbacks)| callbacks.clone());
    let Some(callbacks) = newest else { return };
    let name_of = |p: &str| Path::new(p).file_name().map(|n| n.to_os_string());
    for cb in checkpoint_callbacks(&callbacks) {
        let best = cb.best_model_path.as_deref().and_then(name_of);
        let last = cb.last_model_path.as_deref().and_then(name_of);
        for f in files.iter_mut() {
            let name = f.path.file_name().map(|n| n.to_os_string());
            if name.is_some() && name == best {
                let what = match (&cb.monitor, cb.best_model_score) {
                    (Some(m), Some(s)) => format!("{m} {s:.6}"),
                    _ => "by step".to_string(),
                };
                f.best = Some(what);
            }
            if name.is_some() && name == last {
                f.last = true;
            }
        }
    }
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let width = self
            .files
            .iter()
            .map(|f| f.path.display().to_string().len())
            .max()
            .unwrap_or(0);
        for f in &self.files {
            let path = f.path.display().to_string();
            match &f.outcome {
                Ok((epoch, step)) => {
                    let mut roles = Vec::new();
                    if let Some(b) = &f.best {
                        roles.push(format!("best ({b})"));
                    }
                    if f.last {
                        roles.push("last".to_string());
                    }
                    let _ = writeln!(
                        out,
                        "intact   {path:width$}  epoch {epoch}, step {step}{}",
                        if roles.is_empty() {
                            String::new()
                        } else {
                            format!("  {}", roles.join(", "))
                        }
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "DAMAGED  {path:width$}  {e}");
                }
            }
        }
        for l in &self.leftovers {
            let _ = writeln!(
                out,
                "leftover {}  the temporary file of an interrupted write (not a checkpoint)",
                l.display()
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "error    {e}");
        }
        let damaged = self.files.iter().filter(|f| f.outcome.is_err()).count();
        let _ = writeln!(
            out,
            "{} checkpoint{}: {} intact, {damaged} damaged",
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            self.files.len() - damaged
        );
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "all_intact": self.all_intact(),
            "files": self.files.iter().map(|f| match &f.outcome {
                Ok((epoch, step)) => json!({
                    "path": f.path, "intact": true, "epoch": epoch, "global_step": step,
                    "best": f.best, "last": f.last,
                }),
                Err(e) => json!({"path": f.path, "intact": false, "error": e}),
            }).collect::<Vec<_>>(),
            "leftovers": self.leftovers,
            "errors": self.errors,
        })
    }
}

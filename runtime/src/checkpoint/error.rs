use std::path::PathBuf;

/// Why a checkpoint could not be written, read or applied. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An operating-system call failed.
    #[error("cannot {op} checkpoint `{}`: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done (`create`, `write`, `fsync`, `rename`, `read`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, a FIFO, a socket or a device, not a regular file; found before the
    /// path is opened, so a FIFO never blocks the reader.
    #[error("checkpoint path `{}` is {kind}, not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `a directory`, `a named pipe (FIFO)`, `a socket`, `a block device`, `a character
        /// device` or `a special file`.
        kind: &'static str,
    },
    /// The file is not a fulgur checkpoint at all.
    #[error("`{}` is not a fulgur checkpoint: {reason}", path.display())]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The file's format version is newer than this build reads. A one-bit flip in the version field is
    /// [`Corrupt`](Self::Corrupt) instead: the reader reads on as its own version and checks the
    /// checksums with each version in place.
    #[error("checkpoint `{}` {}", path.display(), newer_version(*found, *supported, *intact))]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
        /// Whether the rest of the file decodes as this build's version with every checksum holding
        /// for the version found: then a newer fulgur wrote it. Otherwise nothing tells a newer file
        /// from a damaged one, and the message says both.
        intact: bool,
    },
    /// The file is damaged: truncated, malformed or with a wrong checksum.
    #[error("checkpoint `{}` is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor or section where known.
        reason: String,
    },
    /// The stored weights do not fit the module (strict loading); lists every problem at once.
    #[error("checkpoint `{}` does not match the module `{module}`:{}", path.display(), mismatch_lines(missing, unexpected, mismatched))]
    StateDictMismatch {
        /// The file.
        path: PathBuf,
        /// The module type being loaded.
        module: String,
        /// Parameters the module has and the file lacks.
        missing: Vec<String>,
        /// Entries the file has and the module lacks.
        unexpected: Vec<String>,
        /// Parameters present in both whose shape or dtype differ: `name: expected …, found …`.
        mismatched: Vec<String>,
    },
    /// A weights-only file was given where the full training state is needed.
    #[error("checkpoint `{}` holds only the module's weights (it was saved with `weights_only = true`), so it cannot resume `fit`: the {what} state is missing; resume from a full checkpoint, or load the weights with `load_from_checkpoint` and start a new `fit`", path.display())]
    WeightsOnly {
        /// The file.
        path: PathBuf,
        /// What is missing (`optimizer`, `learning-rate scheduler`, `callback`).
        what: &'static str,
    },
    /// The optimizer or scheduler state in the file does not fit the one configured now.
    #[error("checkpoint `{}`: {reason}", path.display())]
    StateMismatch {
        /// The file.
        path: PathBuf,
        /// What differs, with the expected and found values.
        reason: String,
    },
    /// A loop counter in the file is one no run can reach: beyond 2<sup>63</sup> − 1, inconsistent with
    /// the other counters, or beyond the epoch length of the training data given now. Found before
    /// anything is restored.
    #[error("checkpoint `{}` cannot resume `fit`: its `{field}` is {value}, {reason}", path.display())]
    ImpossibleCounter {
        /// The file.
        path: PathBuf,
        /// The field, as the file names it (`loops.global_step`, `epoch`, …).
        field: &'static str,
        /// Its value in the file.
        value: u64,
        /// Why no run reaches it, and what to do.
        reason: String,
    },
    /// Hyperparameters could not be encoded or decoded.
    #[error("checkpoint `{}`: hyperparameters {reason}", path.display())]
    Hyperparameters {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn newer_version(found: u32, supported: u32, intact: bool) -> String {
    if intact {
        format!("has format version {found}, but this build of fulgur reads versions up to {supported}; upgrade fulgur to load it")
    } else {
        format!("is damaged or was written by a newer fulgur: its format version reads {found}, but this build of fulgur reads versions up to {supported}; if a newer fulgur wrote it, upgrade fulgur to load it")
    }
}

fn mismatch_lines(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut out = String::new();
    for (title, items) in [
        ("missing keys (in the module, not in the file)", missing),
        (
            "unexpected keys (in the file, not in the module)",
            unexpected,
        ),
        ("shape or dtype mismatches", mismatched),
    ] {
        if !items.is_empty() {
            out.push_str(&format!("\n  {title}: {}", items.join(", ")));
        }
    }
    out
}

//! The runtime's error type.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;

/// Everything that can go wrong in fulgur's runtime. Messages name the setting, file or metric concerned
/// and say what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An invalid setting or argument of the trainer, a callback, a data set or a call, found when it is
    /// built or when `fit` starts. Match on `settings` to react to a particular one:
    ///
    /// ```
    /// # use fulgur_runtime::Error;
    /// fn is_about_monitor(e: &Error) -> bool {
    ///     matches!(e, Error::Config { settings, .. } if settings.contains(&"monitor"))
    /// }
    /// # assert!(!is_about_monitor(&Error::user("x")));
    /// ```
    #[error("{message}")]
    Config {
        /// The settings or arguments at fault, named as the user writes them (`max_steps`, `monitor`,
        /// `filename`, `ckpt_path`, `batch_size`, …): several when one call has several mistakes, all
        /// of which `message` describes.
        settings: Vec<&'static str>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A checkpoint could not be written, read or applied.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A file other than a checkpoint (a log, `hparams.yaml`) could not be written.
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A metric was logged that the module's metric registry does not declare, or with a bad value.
    #[error("{0}")]
    Metric(String),
    /// The device (dfdx) reported an error.
    #[error("device error: {0}")]
    Device(String),
    /// The user's module or data reported an error.
    #[error("{0}")]
    User(String),
    /// An I/O error from user code (a data loader reading its files, a callback writing its own), turned
    /// into an `Error` by `?`. fulgur's own file operations report [`Error::Io`], which names the path;
    /// prefer it, or [`Error::user`] with the path in the message, where you know the path.
    #[error("I/O error: {0}")]
    StdIo(#[from] std::io::Error),
}

impl Error {
    /// Whether an operating-system call failed (disk full, permission denied, …) while writing, reading
    /// or deleting a file.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::StdIo(_) | Error::Checkpoint(CheckpointError::Io { .. })
        )
    }

    /// An error raised by user code (a step, a hook, a data loader).
    pub fn user(msg: impl std::fmt::Display) -> Self {
        Error::User(msg.to_string())
    }

    /// An invalid value of one setting or argument.
    pub fn config(setting: &'static str, message: impl Into<String>) -> Self {
        Error::Config {
            settings: vec![setting],
            message: message.into(),
        }
    }

    /// Every problem of one set of settings, one line each, under `heading`; each setting is named once.
    pub(crate) fn settings(heading: &str, problems: Vec<(&'static str, String)>) -> Self {
        let (mut settings, lines): (Vec<_>, Vec<_>) = problems.into_iter().unzip();
        let mut seen = std::collections::BTreeSet::new();
        settings.retain(|s| seen.insert(*s));
        Error::Config {
            settings,
            message: format!("{heading}:\n  {}", lines.join("\n  ")),
        }
    }
}

impl From<dfdx::tensor::CpuError> for Error {
    fn from(e: dfdx::tensor::CpuError) -> Self {
        Error::Device(format!("{e:?}"))
    }
}

#[cfg(feature = "cuda")]
impl From<dfdx::tensor::CudaError> for Error {
    fn from(e: dfdx::tensor::CudaError) -> Self {
        Error::Device(format!("{e:?}"))
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a dfdx device error (`D::Err`) for generic code: `.map_err(device_err)?`.
pub(crate) fn device_err(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_turns_an_io_error_into_an_io_error() {
        fn read(path: &std::path::Path) -> Result<String> {
            Ok(std::fs::read_to_string(path)?)
        }
        let err = read(std::path::Path::new("/nonexistent/fulgur/data.csv")).unwrap_err();
        assert!(err.is_io(), "{err:?}");
        assert!(matches!(&err, Error::StdIo(e) if e.kind() == std::io::ErrorKind::NotFound));
        assert!(err.to_string().starts_with("I/O error: "), "{err}");
    }
}

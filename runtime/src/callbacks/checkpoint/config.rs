//! `ModelCheckpoint`'s settings: Lightning's constructor parameters, checked and defaulted as in B.1.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::filename::FilenameTemplate;
use crate::callbacks::monitor::python_str_repr;
use crate::{Error, Result};

// Shared with the macros, which read `mode` and `save_last` at compile time.
#[doc(inline)]
pub use fulgur_rules::checkpoint::{Mode, SaveLast};

/// The resolved settings of a [`ModelCheckpoint`](super::ModelCheckpoint).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The directory, when given (absolute); otherwise resolved in `setup`.
    pub dirpath: Option<PathBuf>,
    /// The filename template (default `{epoch}-{step}`).
    pub filename: FilenameTemplate,
    /// The monitored metric.
    pub monitor: Option<String>,
    /// Print a line for each decision.
    pub verbose: bool,
    /// The `last` policy.
    pub save_last: SaveLast,
    /// `k > 0`: the best k; `0`: none; `-1`: all.
    pub save_top_k: i64,
    /// Save a checkpoint when `fit` fails.
    pub save_on_exception: bool,
    /// Save weights only.
    pub save_weights_only: bool,
    /// Direction of "better".
    pub mode: Mode,
    /// `{x}` becomes `x=<value>`.
    pub auto_insert_metric_name: bool,
    /// Step trigger (0: off).
    pub every_n_train_steps: u64,
    /// Time trigger.
    pub train_time_interval: Option<Duration>,
    /// Epoch trigger (0: off).
    pub every_n_epochs: u64,
    /// Which hook performs epoch-based saving; `None`: automatic (B.7).
    pub save_on_train_epoch_end: Option<bool>,
    /// Append `-vN` instead of overwriting an existing file.
    pub enable_version_counter: bool,
    /// Joins the parts of a name (`-`).
    pub join_char: String,
    /// Between a metric's name and value (`=`).
    pub equals_char: String,
    /// The template of the `last` file's name (`last`).
    pub name_last: FilenameTemplate,
    /// The extension (`.ckpt`).
    pub file_extension: String,
    /// The first version suffix (`1`).
    pub starting_version: u64,
}

/// Builds a [`ModelCheckpoint`](super::ModelCheckpoint); [`build`](Self::build) checks the settings with
/// Lightning's rules and messages, reporting every problem at once.
#[derive(Debug, Clone)]
pub struct ModelCheckpointBuilder {
    dirpath: Option<PathBuf>,
    filename: Option<String>,
    monitor: Option<String>,
    verbose: bool,
    save_last: SaveLast,
    save_top_k: i64,
    save_on_exception: bool,
    save_weights_only: bool,
    mode: String,
    auto_insert_metric_name: bool,
    every_n_train_steps: Option<i64>,
    train_time_interval: Option<Duration>,
    every_n_epochs: Option<i64>,
    save_on_train_epoch_end: Option<bool>,
    enable_version_counter: bool,
    join_char: String,
    equals_char: String,
    name_last: String,
    file_extension: String,
    starting_version: u64,
}

impl Default for ModelCheckpointBuilder {
    fn default() -> Self {
        Self {
            dirpath: None,
            filename: None,
            monitor: None,
            verbose: false,
            save_last: SaveLast::No,
            save_top_k: 1,
            save_on_exception: false,
            save_weights_only: false,
            mode: "min".into(),
            auto_insert_metric_name: true,
            every_n_train_steps: None,
            train_time_interval: None,
            every_n_epochs: None,
            save_on_train_epoch_end: None,
            enable_version_counter: true,
            join_char: "-".into(),
            equals_char: "=".into(),
            name_last: "last".into(),
            file_extension: ".ckpt".into(),
            starting_version: 1,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident = $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$field = $conv(value.into());
            self
        }
    )*};
}

impl ModelCheckpointBuilder {
    setters! {
        /// Directory of the files (default: `<log_dir>/checkpoints`, or `<default_root_dir>/checkpoints`
        /// without a logger). `~` is expanded and relative paths are made absolute.
        dirpath: impl Into<PathBuf> => dirpath = Some;
        /// File name template without extension (default `{epoch}-{step}`), in Python's format syntax.
        filename: impl Into<String> => filename = Some;
        /// The metric to rank checkpoints by.
        monitor: impl Into<String> => monitor = Some;
        /// Print each decision.
        verbose: bool => verbose = std::convert::identity;
        /// Keep a `last` checkpoint: `true`, `false` or [`SaveLast::Link`].
        save_last: impl Into<SaveLast> => save_last = std::convert::identity;
        /// Keep the best k (`k > 0`), none (`0`) or all (`-1`). Default 1.
        save_top_k: i64 => save_top_k = std::convert::identity;
        /// Save a checkpoint when `fit` fails.
        save_on_exception: bool => save_on_exception = std::convert::identity;
        /// Save only the weights (such files cannot resume `fit`).
        save_weights_only: bool => save_weights_only = std::convert::identity;
        /// `"min"` (default) or `"max"`.
        mode: impl Into<String> => mode = std::convert::identity;
        /// Whether `{x}` becomes `x=<value>` (default `true`).
        auto_insert_metric_name: bool => auto_insert_metric_name = std::convert::identity;
        /// Save every N optimizer steps (checked at each training batch end).
        every_n_train_steps: i64 => every_n_train_steps = Some;
        /// Save when at least this much time has passed since the last time-triggered save.
        train_time_interval: Duration => train_time_interval = Some;
        /// Save every N epochs (default 1 when no trigger is set).
        every_n_epochs: i64 => every_n_epochs = Some;
        /// Save at the training epoch end (`true`) or the validation end (`false`); default automatic.
        save_on_train_epoch_end: bool => save_on_train_epoch_end = Some;
        /// Append `-vN` to a name that exists already (default `true`).
        enable_version_counter: bool => enable_version_counter = std::convert::identity;
        /// The join character (`-`).
        join_char: impl Into<String> => join_char = std::convert::identity;
        /// The equals character (`=`).
        equals_char: impl Into<String> => equals_char = std::convert::identity;
        /// The template of the last file's name (`last`).
        name_last: impl Into<String> => name_last = std::convert::identity;
        /// The file extension (`.ckpt`).
        file_extension: impl Into<String> => file_extension = std::convert::identity;
        /// The first version number (`1`).
        starting_version: u64 => starting_version = std::convert::identity;
    }

    /// The settings, checked (B.1): every problem is reported in one error.
    pub fn config(self) -> Result<CheckpointConfig> {
        let mut errors = Vec::new();
        let mode = Mode::from_name(&self.mode).unwrap_or_else(|| {
            errors.push((
                "mode",
                format!("`mode` can be min, max but got {}", self.mode),
            ));
            Mode::Min
        });
        let time = self.train_time_interval;
        let (steps, epochs) = fulgur_rules::checkpoint::triggers(
            self.every_n_train_steps,
            self.every_n_epochs,
            time.is_some(),
        );
        if self.save_top_k < -1 {
            errors.push((
                "save_top_k",
                format!(
                    "Invalid value for save_top_k={}. Must be >= -1",
                    self.save_top_k
                ),
            ));
        }
        if steps < 0 {
            errors.push((
                "every_n_train_steps",
                format!("Invalid value for every_n_train_steps={steps}. Must be >= 0"),
            ));
        }
        if epochs < 0 {
            errors.push((
                "every_n_epochs",
                format!("Invalid value for every_n_epochs={epochs}. Must be >= 0"),
            ));
        }
        if u8::from(steps >= 1) + u8::from(epochs >= 1) + u8::from(time.is_some()) > 1 {
            errors.push((
                "train_time_interval",
                format!(
                    "Combination of parameters every_n_train_steps={steps}, every_n_epochs={epochs} and \
                     train_time_interval={} should be mutually exclusive.",
                    time.map_or("None".to_string(), python_timedelta_str)
                ),
            ));
        }
        if self.monitor.is_none() && ![-1, 0, 1].contains(&self.save_top_k) {
            errors.push((
                "save_top_k",
                format!(
                    "ModelCheckpoint(save_top_k={}, monitor=None) is not a valid configuration. No quantity for top_k to track.",
                    self.save_top_k
                ),
            ));
        }
        let dirpath = match self.dirpath.as_deref().map(resolve_dir) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                errors.push(("dirpath", e));
                None
            }
            None => None,
        };
        let filename = match self.filename.as_deref() {
            None | Some("") => {
                FilenameTemplate::parse(&format!("{{epoch}}{}{{step}}", self.join_char))
            }
            Some(t) => FilenameTemplate::parse(t),
        };
        let name_last = FilenameTemplate::parse(&self.name_last);
        let (filename, name_last) = match (filename, name_last) {
            (Ok(f), Ok(l)) => (Some(f), Some(l)),
            (f, l) => {
                errors.extend(f.err().map(|e| ("filename", e.to_string())));
                errors.extend(l.err().map(|e| ("name_last", e.to_string())));
                (None, None)
            }
        };
        match (filename, name_last) {
            (Some(filename), Some(name_last)) if errors.is_empty() => Ok(CheckpointConfig {
                dirpath,
                filename,
                monitor: self.monitor,
                verbose: self.verbose,
                save_last: self.save_last,
                save_top_k: self.save_top_k,
                save_on_exception: self.save_on_exception,
                save_weights_only: self.save_weights_only,
                mode,
                auto_insert_metric_name: self.auto_insert_metric_name,
                every_n_train_steps: steps.max(0) as u64,
                train_time_interval: time,
                every_n_epochs: epochs.max(0) as u64,
                save_on_train_epoch_end: self.save_on_train_epoch_end,
                enable_version_counter: self.enable_version_counter,
                join_char: self.join_char,
                equals_char: self.equals_char,
                name_last,
                file_extension: self.file_extension,
                starting_version: self.starting_version,
            }),
            _ => Err(Error::settings(
                "invalid `ModelCheckpoint` settings",
                errors,
            )),
        }
    }
}

impl CheckpointConfig {
    /// Lightning's state key: `ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', …}` (B.11), so two
    /// callbacks with the same settings collide exactly as they do in Lightning.
    pub fn state_key(&self) -> String {
        format!(
            "ModelCheckpoint{{'monitor': {}, 'mode': '{}', 'every_n_train_steps': {}, 'every_n_epochs': {}, 'train_time_interval': {}}}",
            self.monitor.as_deref().map_or("None".to_string(), python_str_repr),
            self.mode.as_str(),
            self.every_n_train_steps,
            self.every_n_epochs,
            self.train_time_interval.map_or("None".to_string(), python_timedelta_repr),
        )
    }
}

/// `~` expanded, made absolute; remote URLs are refused.
fn resolve_dir(p: &Path) -> std::result::Result<PathBuf, String> {
    let s = p.to_string_lossy();
    if s.contains("://") {
        return Err(format!(
            "`dirpath` must be a local directory, got `{s}`: remote file systems are not supported"
        ));
    }
    let expanded = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest.trim_start_matches('/')),
            None => p.to_path_buf(),
        },
        _ => p.to_path_buf(),
    };
    std::path::absolute(&expanded).map_err(|e| format!("cannot make `dirpath` `{s}` absolute: {e}"))
}

/// Python's `str(timedelta)`: `0:01:00`, `1 day, 0:00:05`, `0:00:00.500000`.
fn python_timedelta_str(d: Duration) -> String {
    let total = d.as_secs();
    let (days, rem) = (total / 86_400, total % 86_400);
    let hms = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let micros = d.subsec_micros();
    let hms = if micros > 0 {
        format!("{hms}.{micros:06}")
    } else {
        hms
    };
    match days {
        0 => hms,
        1 => format!("1 day, {hms}"),
        n => format!("{n} days, {hms}"),
    }
}

/// Python's `repr(timedelta)`: `datetime.timedelta(seconds=3)`, `datetime.timedelta(0)`.
fn python_timedelta_repr(d: Duration) -> String {
    let total = d.as_secs();
    let parts: Vec<String> = [
        ("days", total / 86_400),
        ("seconds", total % 86_400),
        ("microseconds", u64::from(d.subsec_micros())),
    ]
    .into_iter()
    .filter(|(_, v)| *v != 0)
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    if parts.is_empty() {
        "datetime.timedelta(0)".into()
    } else {
        format!("datetime.timedelta({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: ModelCheckpointBuilder) -> String {
        b.config().expect_err("invalid settings").to_string()
    }

    #[test]
    fn s001_s002_s003_negative_values() {
        let b = ModelCheckpointBuilder::default;
        assert!(err(b().save_top_k(-3)).contains("Invalid value for save_top_k=-3. Must be >= -1"));
        assert!(err(b().every_n_epochs(-3))
            .contains("Invalid value for every_n_epochs=-3. Must be >= 0"));
        assert!(err(b().every_n_train_steps(-3))
            .contains("Invalid value for every_n_train_steps=-3. Must be >= 0"));
    }

    #[test]
    fn a_settings_error_names_every_setting_at_fault_so_programs_can_match_on_them() {
        let e = ModelCheckpointBuilder::default()
            .save_top_k(-3)
            .mode("maximum")
            .filename("{epoch")
            .config()
            .unwrap_err();
        let Error::Config { settings, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(settings, &["mode", "save_top_k", "filename"]);
        // Two problems with `save_top_k` (below -1, and more than one file without a monitor).
        assert_eq!(message.lines().count(), 5, "{message}");
        assert!(message.starts_with("invalid `ModelCheckpoint` settings:"));
    }

    #[test]
    fn s004_s005_triggers_are_mutually_exclusive() {
        let b = ModelCheckpointBuilder::default;
        assert!(err(b().every_n_train_steps(1).every_n_epochs(2)).contains(
            "Combination of parameters every_n_train_steps=1, every_n_epochs=2 and train_time_interval=None should be mutually exclusive."
        ));
        assert!(err(b().train_time_interval(Duration::from_secs(60)).every_n_epochs(2)).contains(
            "Combination of parameters every_n_train_steps=0, every_n_epochs=2 and train_time_interval=0:01:00 should be mutually exclusive."
        ));
        assert!(err(b()
            .train_time_interval(Duration::from_secs(60))
            .every_n_train_steps(2))
        .contains("mutually exclusive"));
    }

    #[test]
    fn s006_accepted_trigger_combinations() {
        let b = ModelCheckpointBuilder::default;
        for (cfg, steps, epochs) in [
            (b().every_n_train_steps(0).every_n_epochs(3), 0, 3),
            (b().every_n_train_steps(4).every_n_epochs(0), 4, 0),
            (
                b().every_n_train_steps(0)
                    .every_n_epochs(0)
                    .train_time_interval(Duration::from_secs(60)),
                0,
                0,
            ),
            (b().every_n_train_steps(0).every_n_epochs(0), 0, 0),
        ] {
            let c = cfg.config().unwrap();
            assert_eq!((c.every_n_train_steps, c.every_n_epochs), (steps, epochs));
        }
    }

    #[test]
    fn s007_top_k_needs_a_monitor() {
        let b = ModelCheckpointBuilder::default;
        assert!(err(b().save_top_k(3)).contains(
            "ModelCheckpoint(save_top_k=3, monitor=None) is not a valid configuration. No quantity for top_k to track."
        ));
        for k in [-1, 0, 1] {
            assert!(b().save_top_k(k).config().is_ok());
        }
    }

    #[test]
    fn s008_unknown_mode() {
        assert!(
            err(ModelCheckpointBuilder::default().mode("unknown_option"))
                .contains("`mode` can be min, max but got unknown_option")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = err(ModelCheckpointBuilder::default()
            .mode("up")
            .save_top_k(-2)
            .every_n_epochs(-1)
            .filename("{epoch"));
        assert_eq!(e.lines().count(), 1 + 5, "a header and five problems: {e}");
    }

    #[test]
    fn s009_s010_defaults_and_state_keys() {
        let c = ModelCheckpointBuilder::default()
            .monitor("val_loss")
            .config()
            .unwrap();
        assert_eq!((c.every_n_epochs, c.every_n_train_steps), (1, 0));
        assert_eq!(
            c.state_key(),
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"
        );
        let c = ModelCheckpointBuilder::default()
            .every_n_train_steps(5)
            .config()
            .unwrap();
        assert_eq!((c.every_n_epochs, c.every_n_train_steps), (0, 5));
        let c = ModelCheckpointBuilder::default()
            .train_time_interval(Duration::from_secs(3))
            .config()
            .unwrap();
        assert_eq!((c.every_n_epochs, c.every_n_train_steps), (0, 0));
        assert!(c
            .state_key()
            .ends_with("'train_time_interval': datetime.timedelta(seconds=3)}"));
        assert_eq!(
            python_timedelta_repr(Duration::ZERO),
            "datetime.timedelta(0)"
        );
        assert_eq!(
            python_timedelta_str(Duration::from_millis(86_405_500)),
            "1 day, 0:00:05.500000"
        );
    }

    /// The `#[checkpoint]` table names a builder method for each argument: each must exist and take the
    /// value the macro writes for the argument's kind (`expand::module::builder_value`), so that the
    /// table and the builder cannot drift apart. Derived from the table itself: a new key needs no edit.
    #[test]
    fn every_checkpoint_argument_calls_an_existing_builder_method() {
        macro_rules! generated {
            (Str) => {
                "x"
            };
            (Template) => {
                "{epoch}"
            };
            (Metric) => {
                "epoch"
            };
            (Bool) => {
                true
            };
            (Int) => {
                1
            };
            (Count) => {
                1
            };
            (SaveLast) => {
                SaveLast::Link
            };
            (Mode) => {
                "max"
            };
            (Duration) => {
                ::core::time::Duration::new(1, 0)
            };
        }
        macro_rules! build_each {
            ($($key:ident: $kind:ident => $method:ident, [$($alias:literal),*], $doc:literal;)*) => {{
                let mut called: Vec<&str> = Vec::new();
                $(
                    let built = ModelCheckpointBuilder::default().$method(generated!($kind)).config();
                    assert!(built.is_ok(), "`{}`: {:?}", stringify!($key), built.err());
                    called.push(stringify!($method));
                )*
                called
            }};
        }
        let called = fulgur_rules::checkpoint_args!(build_each);
        let table: Vec<&str> = fulgur_rules::checkpoint::ARGUMENTS
            .iter()
            .map(|a| a.method)
            .collect();
        assert_eq!(called, table);
    }

    #[test]
    fn s011_remote_dirpaths_are_refused() {
        assert!(
            err(ModelCheckpointBuilder::default().dirpath("memory://not-a-filesystem-path"))
                .contains(
                    "`dirpath` must be a local directory, got `memory://not-a-filesystem-path`"
                )
        );
    }

    #[test]
    fn s012_dirpath_normalisation() {
        let cwd = std::env::current_dir().unwrap();
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        let d = |p: &str| {
            ModelCheckpointBuilder::default()
                .dirpath(p)
                .config()
                .unwrap()
                .dirpath
                .unwrap()
        };
        assert_eq!(d("~/checkpoints"), home.join("checkpoints"));
        assert_eq!(d("./~/checkpoints"), cwd.join("~/checkpoints"));
        assert_eq!(d("rel/dir"), cwd.join("rel/dir"));
    }
}

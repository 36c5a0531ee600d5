//! `ModelCheckpoint`'s arguments: the table from which the `#[checkpoint(...)]` macro parses, suggests
//! and writes its builder calls, and the [`Mode`] and [`SaveLast`] values both sides speak.
//!
//! The table is written once, in [`checkpoint_args!`](crate::checkpoint_args), and read three ways: as
//! the constant [`ARGUMENTS`] (the macro's parsing and suggestions), as tokens at compile time (the
//! rendered table in the macro's documentation, and the runtime's test that every builder method
//! exists), so that a key added to the table needs no other list edited.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

/// The `#[checkpoint]` arguments, one per line: `key: ValueKind => builder_method, [aliases], "doc";`,
/// handed to the macro named by the caller (`checkpoint_args!(my_macro)` expands to `my_macro! { … }`),
/// so that code or text can be derived from the table at compile time.
///
/// `key` is what a user writes in `#[checkpoint(key = …)]`, `ValueKind` a variant of [`ValueKind`],
/// `builder_method` the method of the runtime's `ModelCheckpointBuilder` that the macro calls with the
/// value, `aliases` names users bring from Lightning or elsewhere (suggested as the key), and `doc` one
/// sentence or two for the macro's documentation (no `|`: it is a table cell).
#[macro_export]
macro_rules! checkpoint_args {
    ($($callback:tt)+) => {
        $($callback)+! {
            dirpath: Str => dirpath, ["dir", "dir_path", "directory", "path"],
                "The directory of the files, a local path (`~` is expanded, a relative path is made \
                 absolute). Default: `<log_dir>/checkpoints`, or `<default_root_dir>/checkpoints` without a \
                 logger.";
            filename: Template => filename, [],
                "The file name without its extension, in Python's format syntax: `\"{epoch:02d}-{val_loss:.3f}\"`; \
                 each placeholder names a metric. Default `\"{epoch}-{step}\"`.";
            monitor: Metric => monitor, ["monitored", "metric"],
                "The metric that ranks the checkpoints: one a training or validation step logs, or `epoch` or \
                 `step`. Without it, the latest checkpoint is the best.";
            verbose: Bool => verbose, [],
                "Print each decision.";
            save_last: SaveLast => save_last, [],
                "Also keep a `last` checkpoint: a file rewritten at every save (`true`), or a symlink to the \
                 newest checkpoint (`\"link\"`). Default `false`.";
            top_k: Int => save_top_k, ["save_top_k", "k"],
                "How many of the best checkpoints to keep: `k`, none (`0`) or all (`-1`). Default `1`; more than \
                 one needs a `monitor`.";
            save_on_exception: Bool => save_on_exception, [],
                "Save a checkpoint when `fit` fails.";
            save_weights_only: Bool => save_weights_only, [],
                "Save only the weights (such a file cannot resume `fit`).";
            mode: Mode => mode, [],
                "Whether a lower (`\"min\"`, the default) or a higher (`\"max\"`) `monitor` value is better.";
            auto_insert_metric_name: Bool => auto_insert_metric_name, [],
                "Write a placeholder `{epoch}` as `epoch=3` (the default, `true`) or as `3`.";
            every_n_train_steps: Int => every_n_train_steps, ["every_n_steps", "every_n_train_step"],
                "Save every N optimizer steps (`0`: off).";
            train_time_interval: Duration => train_time_interval, ["time_interval", "interval"],
                "Save when this much time has passed since the last such save.";
            every_n_epochs: Int => every_n_epochs, [],
                "Save every N epochs (`0`: off). Default `1` when no other trigger is given; one trigger per \
                 `#[checkpoint]`.";
            save_on_train_epoch_end: Bool => save_on_train_epoch_end, [],
                "Save epoch checkpoints at the end of the training epoch (`true`) or after validation \
                 (`false`). Default: decided by the validation schedule (the guide's Reference, B.7).";
            enable_version_counter: Bool => enable_version_counter, [],
                "Add `-v1`, `-v2`, … to a name that exists already instead of overwriting it. Default `true`.";
            join_char: Str => join_char, [],
                "Joins the parts of a name (default `\"-\"`).";
            equals_char: Str => equals_char, [],
                "Between a metric's name and its value (default `\"=\"`).";
            name_last: Template => name_last, [],
                "The template of the `last` file's name (default `\"last\"`).";
            file_extension: Str => file_extension, [],
                "The file extension (default `\".ckpt\"`).";
            starting_version: Count => starting_version, [],
                "The first number of the version counter (default `1`).";
        }
    };
}

/// What a `#[checkpoint]` argument takes, which decides how the macro reads it, checks it and writes it
/// into the builder call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A string literal.
    Str,
    /// A string literal holding a filename template, whose placeholders name metrics.
    Template,
    /// A string literal naming a metric.
    Metric,
    /// `true` or `false`; the bare key means `true`.
    Bool,
    /// An integer literal, possibly negative.
    Int,
    /// An integer literal, at least 0.
    Count,
    /// A number: a float or an integer literal, possibly negative (`#[early_stopping]`'s thresholds).
    Float,
    /// `true`, `false` or `"link"`: a [`SaveLast`].
    SaveLast,
    /// `"min"` or `"max"`: a [`Mode`].
    Mode,
    /// A duration such as `"30min"` or `"1h30min"`.
    Duration,
}

/// One `#[checkpoint]` argument: a row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argument {
    /// The key, as written in `#[checkpoint(key = …)]`.
    pub key: &'static str,
    /// What the key takes.
    pub kind: ValueKind,
    /// The builder method that receives the value (`ModelCheckpointBuilder`'s, or
    /// `EarlyStoppingBuilder`'s for [`early_stopping::ARGUMENTS`](crate::early_stopping::ARGUMENTS)).
    pub method: &'static str,
    /// Other names users write for this argument.
    pub aliases: &'static [&'static str],
    /// What the argument does.
    pub doc: &'static str,
}

macro_rules! arguments {
    ($($key:ident: $kind:ident => $method:ident, [$($alias:literal),*], $doc:literal;)*) => {
        /// Every argument of the table, in its order.
        pub const ARGUMENTS: &[Argument] = &[$(
            Argument {
                key: stringify!($key),
                kind: ValueKind::$kind,
                method: stringify!($method),
                aliases: &[$($alias),*],
                doc: $doc,
            },
        )*];
    };
}

checkpoint_args!(arguments);

/// The argument named `key`.
pub fn argument(key: &str) -> Option<&'static Argument> {
    ARGUMENTS.iter().find(|a| a.key == key)
}

/// The argument that `name`, no key itself, is another name for (`save_top_k` for `top_k`).
pub fn alias(name: &str) -> Option<&'static Argument> {
    ARGUMENTS.iter().find(|a| a.aliases.contains(&name))
}

/// The keys, in the table's order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    ARGUMENTS.iter().map(|a| a.key)
}

/// Renders the table as a Markdown table (key, value, meaning): `#[doc = checkpoint_args_markdown!()]`.
#[macro_export]
macro_rules! checkpoint_args_markdown {
    () => {
        $crate::checkpoint_args!($crate::__checkpoint_args_markdown)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_args_markdown {
    ($($key:ident: $kind:ident => $method:ident, [$($alias:literal),*], $doc:literal;)*) => {
        concat!(
            "| argument | value | what it does |\n|---|---|---|\n",
            $("| `", stringify!($key), "` | ", $crate::__value_syntax!($kind), " | ", $doc, " |\n",)*
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __value_syntax {
    (Str) => {
        "`\"…\"`"
    };
    (Template) => {
        "`\"…\"` with `{metric}` placeholders"
    };
    (Metric) => {
        "`\"metric\"`"
    };
    (Bool) => {
        "`true` or `false` (alone: `true`)"
    };
    (Int) => {
        "integer"
    };
    (Count) => {
        "integer ≥ 0"
    };
    (Float) => {
        "number"
    };
    (SaveLast) => {
        "`true`, `false` or `\"link\"`"
    };
    (Mode) => {
        "`\"min\"` or `\"max\"`"
    };
    (Duration) => {
        "`\"30min\"`, `\"1h30min\"` (units `ms` `s` `min` `h` `d`)"
    };
}

/// The step and epoch triggers in force (B.1): `every_n_train_steps` and `every_n_epochs` as given, `0`
/// for one not given, and every epoch (`(0, 1)`) when no trigger is given at all, a
/// `train_time_interval` neither. Two callbacks whose monitor, mode and triggers agree share a state
/// key (B.11).
pub fn triggers(
    every_n_train_steps: Option<i64>,
    every_n_epochs: Option<i64>,
    train_time_interval: bool,
) -> (i64, i64) {
    match (every_n_train_steps, every_n_epochs, train_time_interval) {
        (None, None, false) => (0, 1),
        (steps, epochs, _) => (steps.unwrap_or(0), epochs.unwrap_or(0)),
    }
}

/// Which direction of the monitored metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Min, Mode::Max];

    /// The mode written `name` (`"min"`, `"max"`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// `"min"` or `"max"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }

    /// `true` when `a` is strictly better than `b` (NaN is never better).
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Mode::Min => a < b,
            Mode::Max => a > b,
        }
    }

    /// The worst possible score: the initial `kth_value`, and what a NaN becomes.
    pub fn worst(self) -> f64 {
        match self {
            Mode::Min => f64::INFINITY,
            Mode::Max => f64::NEG_INFINITY,
        }
    }
}

/// `save_last`: whether and how a `last` checkpoint is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SaveLast {
    /// No `last` file.
    #[default]
    No,
    /// `last.ckpt` is a real file holding the latest state, rewritten at every trigger (G.3).
    Yes,
    /// `last.ckpt` is a relative symlink to the newest real checkpoint, or a real file when there is none.
    Link,
}

impl From<bool> for SaveLast {
    fn from(b: bool) -> Self {
        if b {
            SaveLast::Yes
        } else {
            SaveLast::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_aliases_are_distinct() {
        let mut names: Vec<&str> = ARGUMENTS
            .iter()
            .flat_map(|a| std::iter::once(a.key).chain(a.aliases.iter().copied()))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name is two arguments' key or alias");
        assert_eq!(argument("top_k").map(|a| a.method), Some("save_top_k"));
        assert_eq!(alias("save_top_k").map(|a| a.key), Some("top_k"));
        assert_eq!(alias("top_k"), None);
        assert_eq!(keys().count(), 20);
    }

    #[test]
    fn the_markdown_table_has_a_row_per_argument() {
        let table: &str = checkpoint_args_markdown!();
        assert_eq!(table.lines().count(), 2 + ARGUMENTS.len());
        assert!(table.contains("| `top_k` | integer | How many"), "{table}");
        for a in ARGUMENTS {
            assert!(!a.doc.contains('|'), "`{}`: a `|` breaks the table", a.key);
        }
    }

    #[test]
    fn every_epoch_when_no_trigger_is_given() {
        assert_eq!(triggers(None, None, false), (0, 1));
        assert_eq!(triggers(None, None, true), (0, 0));
        assert_eq!(triggers(Some(5), None, false), (5, 0));
        assert_eq!(triggers(None, Some(0), false), (0, 0));
    }

    #[test]
    fn modes_by_name() {
        assert_eq!(Mode::from_name("max"), Some(Mode::Max));
        assert_eq!(Mode::from_name("maximum"), None);
        assert!(Mode::Min.better(1.0, 2.0) && !Mode::Min.better(f64::NAN, 2.0));
        assert_eq!(SaveLast::from(true), SaveLast::Yes);
    }
}

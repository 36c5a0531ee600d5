//! `EarlyStopping`'s arguments: the table from which the `#[early_stopping(...)]` macro parses, suggests
//! and writes its builder calls.
//!
//! The table is written once, in [`early_stopping_args!`](crate::early_stopping_args), and read as
//! [`checkpoint_args!`](crate::checkpoint_args) is: as the constant [`ARGUMENTS`] (the macro's parsing
//! and suggestions), and as tokens at compile time (the rendered table in the macro's documentation, and
//! the facade's test that every builder method exists). Its rows are [`Argument`]s of the
//! [`ValueKind`]s `#[checkpoint]` uses, and `mode` is the shared [`Mode`](crate::Mode).

pub use crate::checkpoint::{Argument, ValueKind};

/// The `#[early_stopping]` arguments, one per line, in the form of
/// [`checkpoint_args!`](crate::checkpoint_args): `key: ValueKind => builder_method, [aliases], "doc";`,
/// handed to the macro named by the caller (`early_stopping_args!(my_macro)` expands to
/// `my_macro! { … }`).
///
/// `key` is Lightning's parameter name, `builder_method` the method of the runtime's
/// `EarlyStoppingBuilder` that the macro calls with the value, `aliases` names users bring from other
/// libraries (suggested as the key), and `doc` one sentence or two for the macro's documentation (no
/// `|`: it is a table cell).
#[macro_export]
macro_rules! early_stopping_args {
    ($($callback:tt)+) => {
        $($callback)+! {
            monitor: Metric => monitor, ["monitored", "metric"],
                "The metric to watch (required): one a training or validation step logs, or `epoch` or \
                 `step`.";
            min_delta: Float => min_delta, ["delta", "min_improvement"],
                "How much the metric must improve on the best value to count as an improvement (default \
                 `0.0`). A negative value, which Lightning allows, counts a value up to that much worse as \
                 an improvement.";
            patience: Count => patience, ["n_epochs", "wait"],
                "How many checks without improvement to allow before stopping (default `3`).";
            verbose: Bool => verbose, [],
                "Print each decision.";
            mode: Mode => mode, ["direction"],
                "Whether a lower (`\"min\"`, the default) or a higher (`\"max\"`) `monitor` value is better.";
            strict: Bool => strict, [],
                "Fail when `monitor` is missing from the logged metrics at a check (the default, `true`) \
                 rather than skip the check with a warning.";
            check_finite: Bool => check_finite, [],
                "Stop when the metric becomes NaN or infinite (default `true`).";
            stopping_threshold: Float => stopping_threshold, [],
                "Stop as soon as the metric reaches this value (lower for `\"min\"`, higher for `\"max\"`).";
            divergence_threshold: Float => divergence_threshold, [],
                "Stop as soon as the metric is worse than this value.";
            check_on_train_epoch_end: Bool => check_on_train_epoch_end, [],
                "Check at the end of the training epoch (`true`) or after validation (`false`). Default: \
                 decided by the validation schedule, as for `ModelCheckpoint`.";
            log_rank_zero_only: Bool => log_rank_zero_only, [],
                "With several processes, print the decisions of rank 0 only.";
        }
    };
}

early_stopping_args!(arguments);

/// Renders the table as a Markdown table (key, value, meaning):
/// `#[doc = early_stopping_args_markdown!()]`.
#[macro_export]
macro_rules! early_stopping_args_markdown {
    () => {
        $crate::early_stopping_args!($crate::__checkpoint_args_markdown)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint;

    #[test]
    fn keys_are_lightnings_and_names_are_distinct() {
        let keys: Vec<&str> = ARGUMENTS.iter().map(|a| a.key).collect();
        assert_eq!(
            keys,
            [
                "monitor",
                "min_delta",
                "patience",
                "verbose",
                "mode",
                "strict",
                "check_finite",
                "stopping_threshold",
                "divergence_threshold",
                "check_on_train_epoch_end",
                "log_rank_zero_only",
            ]
        );
        let mut names = std::collections::BTreeSet::new();
        for a in ARGUMENTS {
            for name in a.aliases.iter().chain([&a.key]) {
                assert!(
                    names.insert(*name),
                    "`{name}` is two arguments' key or alias"
                );
            }
        }
        let kind = |key: &str| ARGUMENTS.iter().find(|a| a.key == key).map(|a| a.kind);
        assert_eq!(kind("min_delta"), Some(ValueKind::Float));
        assert_eq!(kind("patience"), Some(ValueKind::Count));
        assert_eq!(kind("mode"), Some(ValueKind::Mode));
        // The monitor reads as the checkpoint's does: one check serves both.
        assert_eq!(
            kind("monitor"),
            checkpoint::argument("monitor").map(|a| a.kind)
        );
    }

    #[test]
    fn the_markdown_table_has_a_row_of_three_cells_per_argument() {
        let table: &str = early_stopping_args_markdown!();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), ARGUMENTS.len(), "{table}");
        for (row, a) in rows.iter().zip(ARGUMENTS) {
            assert!(row.starts_with(&format!("| `{}` | ", a.key)), "{row}");
            // A `|` in a doc would split its cell.
            assert_eq!(row.matches('|').count(), 4, "{row}");
        }
        assert!(table.contains("| `min_delta` | number |"), "{table}");
        assert!(table.contains("| `patience` | integer ≥ 0 |"), "{table}");
    }
}

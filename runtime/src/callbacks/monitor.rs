//! What the callbacks that watch a metric (`ModelCheckpoint`, `EarlyStopping`) share: the check of a
//! metric name against the run's registry (G.1, the rule the macros check at compile time through
//! `fulgur_rules::metrics`), and Python's spelling of a name in a state key.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use crate::metrics::{MetricKind, Stage};
use crate::state::TrainerState;
use crate::{Error, Result};
use fulgur_rules::metrics::{Known, Logged};

/// The metrics `fit` produces (the module's and the callbacks', with their `_step`/`_epoch` keys), plus
/// `epoch` and `step`.
pub(crate) struct KnownMetrics {
    known: Known<MetricKind>,
    listing: String,
}

impl KnownMetrics {
    /// The metrics of `state`'s registry.
    pub(crate) fn of(state: &TrainerState) -> Self {
        let logged = state.metric_registry.iter().map(|spec| Logged {
            name: spec.name,
            on_step: spec.on_step,
            on_epoch: spec.on_epoch,
            test_only: spec.stage == Stage::Test,
            kind: spec.kind,
        });
        let known = Known::new(logged, MetricKind::Int);
        let listing = known.listing();
        Self { known, listing }
    }

    /// The metric's kind, when `name` is known.
    pub(crate) fn get(&self, name: &str) -> Option<MetricKind> {
        self.known.get(name).copied()
    }

    /// `Ok` when `name` is known; else an error about `setting`, whose message starts with `what` (the
    /// setting as the user wrote it and the name at fault) and says why, with a suggestion and the
    /// known metrics.
    pub(crate) fn check(&self, setting: &'static str, what: String, name: &str) -> Result<()> {
        if self.known.contains(name) {
            return Ok(());
        }
        let problem = if self.known.is_test_only(name) {
            " is logged only by `test_step`, so it is never available during `fit`: use a training or \
             validation metric,"
                .to_string()
        } else {
            let hint = self
                .known
                .suggestion(name)
                .map_or(",".to_string(), |s| format!(", did you mean `{s}`?"));
            format!(" names no metric the module logs{hint}")
        };
        Err(Error::config(
            setting,
            format!("{what}{problem} known metrics: {}", self.listing),
        ))
    }
}

/// Python's `repr(str)` for plain names: single quotes, or double quotes when the text has a `'`; the
/// spelling of a name in Lightning's state keys.
pub(crate) fn python_str_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

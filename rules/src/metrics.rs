//! The known metrics: what a `monitor` and a filename placeholder may name (G.1), the same at compile
//! time (the macros, from `#[log]`) and when `fit` starts (the runtime, from the module's registry).
//!
//! A logged metric is known by its name and, when it is logged both per step and per epoch, by
//! Lightning's `name_step` and `name_epoch`; the built-ins `epoch` and `step` always are (B.3). A metric
//! only `test_step` logs is never available during `fit`.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::collections::BTreeMap;

/// The metrics every run provides, integers: the epoch and the global step (B.3).
pub const BUILT_INS: [&str; 2] = ["epoch", "step"];

/// The key of a metric's per-step value: `name_step` when it is also logged per epoch, else `name`.
pub fn step_key(name: &str, on_epoch: bool) -> String {
    if on_epoch {
        format!("{name}_step")
    } else {
        name.to_string()
    }
}

/// The key of a metric's per-epoch value: `name_epoch` when it is also logged per step, else `name`.
pub fn epoch_key(name: &str, on_step: bool) -> String {
    if on_step {
        format!("{name}_epoch")
    } else {
        name.to_string()
    }
}

/// The names a logged metric is known by: its name, then `name_step` and `name_epoch` when it is logged
/// both per step and per epoch.
pub fn keys(name: &str, on_step: bool, on_epoch: bool) -> Vec<String> {
    let mut keys = vec![name.to_string()];
    if on_step && on_epoch {
        keys.push(step_key(name, on_epoch));
        keys.push(epoch_key(name, on_step));
    }
    keys
}

/// A metric a module logs, as the known-metrics rule sees it; `K` is the caller's type of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged<'a, K> {
    /// The name it is logged under.
    pub name: &'a str,
    /// Logged per step.
    pub on_step: bool,
    /// Logged per epoch.
    pub on_epoch: bool,
    /// Logged by `test_step`, which `fit` never runs.
    pub test_only: bool,
    /// The kind of its values.
    pub kind: K,
}

/// The names a `monitor` or a filename placeholder may use, with their kinds, and the names only
/// `test_step` logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known<K> {
    fit: BTreeMap<String, K>,
    test_only: Vec<String>,
}

impl<K: Clone> Known<K> {
    /// The known metrics of a module logging `metrics`; `int` is the kind of the built-ins.
    pub fn new<'a>(metrics: impl IntoIterator<Item = Logged<'a, K>>, int: K) -> Self {
        let mut fit = BTreeMap::new();
        let mut test = Vec::new();
        for m in metrics {
            for key in keys(m.name, m.on_step, m.on_epoch) {
                if m.test_only {
                    test.push(key);
                } else {
                    fit.insert(key, m.kind.clone());
                }
            }
        }
        for name in BUILT_INS {
            fit.insert(name.to_string(), int.clone());
        }
        let test_only = test.into_iter().filter(|k| !fit.contains_key(k)).collect();
        Self { fit, test_only }
    }
}

impl<K> Known<K> {
    /// The kind of `name`, when `fit` produces it.
    pub fn get(&self, name: &str) -> Option<&K> {
        self.fit.get(name)
    }

    /// Whether `fit` produces `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.fit.contains_key(name)
    }

    /// Whether only `test_step` logs `name`.
    pub fn is_test_only(&self, name: &str) -> bool {
        self.test_only.iter().any(|k| k == name)
    }

    /// The names `fit` produces, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fit.keys().map(String::as_str)
    }

    /// The known name `name` most likely stands for ([`did_you_mean`](crate::suggest::did_you_mean)).
    pub fn suggestion(&self, name: &str) -> Option<&str> {
        crate::suggest::did_you_mean(name, self.names())
    }

    /// `` `epoch`, `step`, `val_loss` ``: the names `fit` produces, for messages.
    pub fn listing(&self) -> String {
        self.names()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(name: &str, on_step: bool, on_epoch: bool, test_only: bool) -> Logged<'_, char> {
        Logged {
            name,
            on_step,
            on_epoch,
            test_only,
            kind: 'f',
        }
    }

    #[test]
    fn a_name_its_step_and_epoch_forms_and_the_built_ins() {
        assert_eq!(keys("x", true, true), ["x", "x_step", "x_epoch"]);
        assert_eq!(keys("x", true, false), ["x"]);
        assert_eq!(
            (step_key("x", false), epoch_key("x", true)),
            ("x".into(), "x_epoch".into())
        );
        let known = Known::new(
            [
                logged("loss", true, true, false),
                logged("val_acc", false, true, false),
                logged("test_acc", false, true, true),
                logged("val_acc", false, true, true),
            ],
            'i',
        );
        assert_eq!(
            known.names().collect::<Vec<_>>(),
            [
                "epoch",
                "loss",
                "loss_epoch",
                "loss_step",
                "step",
                "val_acc"
            ]
        );
        assert_eq!(
            (known.get("step"), known.get("loss")),
            (Some(&'i'), Some(&'f'))
        );
        assert!(known.is_test_only("test_acc") && !known.contains("test_acc"));
        assert!(!known.is_test_only("val_acc"), "also logged during fit");
        assert_eq!(known.suggestion("val_ac"), Some("val_acc"));
        assert_eq!(
            known.listing(),
            "`epoch`, `loss`, `loss_epoch`, `loss_step`, `step`, `val_acc`"
        );
    }
}

//! `fulgur diff`: how two checkpoints differ: tensors added, removed and changed (with the largest
//! absolute difference and the relative L2 difference), and metadata.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use fulgur_runtime::checkpoint::{verify_checkpoint, Checkpoint, CheckpointError, TensorData};
use serde_json::json;

use crate::to_json;

/// How one tensor present in both files differs.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Another dtype or shape: `(a, b)` as `f32 [2, 3]`.
    Layout(String, String),
    /// Same layout, other values.
    Values {
        /// The largest `|a − b|` over the elements (NaN when a value is NaN in one file only).
        max_abs: f64,
        /// `‖a − b‖₂ / ‖a‖₂` (infinite when `a` is all zeros and `b` is not).
        rel_l2: f64,
    },
}

/// What [`diff`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Tensors in B only (weights by name; optimizer buffers as `optimizer {i}: {parameter}.{slot}`).
    pub added: Vec<String>,
    /// Tensors in A only.
    pub removed: Vec<String>,
    /// Tensors in both whose bytes differ.
    pub changed: Vec<(String, Change)>,
    /// Tensors in both with identical bytes.
    pub same: usize,
    /// Metadata fields that differ: `(field, a, b)`.
    pub metadata: Vec<(String, String, String)>,
}

impl Report {
    /// Whether the files hold the same tensors and metadata.
    pub fn identical(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.metadata.is_empty()
    }
}

/// Reads and verifies both checkpoints and compares them, one tensor at a time: the memory it needs is
/// two tensors', whatever the files' sizes.
pub fn diff(a: &Path, b: &Path) -> Result<Report, CheckpointError> {
    let (ca, cb) = (verify_checkpoint(a)?, verify_checkpoint(b)?);
    let (ta, tb) = (tensors(&ca), tensors(&cb));
    let mut report = Report {
        added: tb
            .keys()
            .filter(|k| !ta.contains_key(*k))
            .cloned()
            .collect(),
        removed: ta
            .keys()
            .filter(|k| !tb.contains_key(*k))
            .cloned()
            .collect(),
        ..Report::default()
    };
    for (name, x) in &ta {
        let Some(y) = tb.get(name) else { continue };
        let changed = compare(x, y).map_err(|which| CheckpointError::Corrupt {
            path: if which == 0 { a } else { b }.to_path_buf(),
            reason: format!(
                "tensor `{name}` could not be read again: the file changed after it was verified"
            ),
        })?;
        match changed {
            None => report.same += 1,
            Some(change) => report.changed.push((name.clone(), change)),
        }
    }
    report.metadata = metadata(&ca, &cb);
    Ok(report)
}

fn tensors(c: &Checkpoint) -> BTreeMap<String, &TensorData> {
    let mut out: BTreeMap<String, &TensorData> =
        c.state_dict.iter().map(|(k, v)| (k.clone(), v)).collect();
    for (i, o) in c.optimizer_states().enumerate() {
        for (param, slots) in &o.params {
            for (slot, t) in slots {
                out.insert(format!("optimizer {i}: {param}.{slot}"), t);
            }
        }
    }
    out
}

fn layout(t: &TensorData) -> String {
    format!("{} {:?}", t.dtype(), t.shape())
}

/// `None` when the bytes are equal; `Err(0)` or `Err(1)` when the first or second tensor's values
/// cannot be read (its file changed since it was verified).
fn compare(x: &TensorData, y: &TensorData) -> Result<Option<Change>, usize> {
    if x.dtype() != y.dtype() || x.shape() != y.shape() {
        return Ok(Some(Change::Layout(layout(x), layout(y))));
    }
    if x.le_bytes() == y.le_bytes() {
        return Ok(None);
    }
    let values = |t: &TensorData, which: usize| -> Result<Vec<f64>, usize> {
        match (t.as_f32(), t.as_f64()) {
            (Some(v), _) => Ok(v.iter().map(|&f| f64::from(f)).collect()),
            (None, Some(v)) => Ok(v.into_owned()),
            (None, None) => Err(which),
        }
    };
    let (vx, vy) = (values(x, 0)?, values(y, 1)?);
    let (mut max_abs, mut diff2, mut norm2) = (0f64, 0f64, 0f64);
    for (a, b) in vx.iter().zip(&vy) {
        let d = if a.to_bits() == b.to_bits() || a == b {
            0.0
        } else {
            (a - b).abs()
        };
        // NaN in one file only, or infinities of opposite sign: the difference is NaN/inf and shows.
        max_abs = if d.is_nan() || max_abs.is_nan() {
            f64::NAN
        } else {
            max_abs.max(d)
        };
        diff2 += d * d;
        norm2 += a * a;
    }
    let rel_l2 = if norm2 > 0.0 {
        (diff2 / norm2).sqrt()
    } else if diff2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Ok(Some(Change::Values { max_abs, rel_l2 }))
}

/// Reports `x` and `y` under `name` when they differ; two objects field by field (`name.field`), so a
/// callback state shows the entries that changed, not the whole state twice.
fn fields(
    field: &mut impl FnMut(&str, String, String),
    name: &str,
    x: &serde_json::Value,
    y: &serde_json::Value,
) {
    use serde_json::Value as J;
    match (x, y) {
        (J::Object(a), J::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let none = J::Null;
                let (u, v) = (a.get(key).unwrap_or(&none), b.get(key).unwrap_or(&none));
                field(&format!("{name}.{key}"), u.to_string(), v.to_string());
            }
        }
        _ => field(name, x.to_string(), y.to_string()),
    }
}

fn metadata(a: &Checkpoint, b: &Checkpoint) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push((name.to_string(), x, y));
        }
    };
    field("module_type", a.module_type.clone(), b.module_type.clone());
    field(
        "fulgur_version",
        a.fulgur_version.clone(),
        b.fulgur_version.clone(),
    );
    field("epoch", a.epoch.to_string(), b.epoch.to_string());
    field(
        "global_step",
        a.global_step.to_string(),
        b.global_step.to_string(),
    );
    field(
        "weights_only",
        a.weights_only.to_string(),
        b.weights_only.to_string(),
    );
    let loops = |c: &Checkpoint| {
        let l = &c.loops;
        format!(
            "epoch {}, {} batches of it done{}; {} in all, seed {}",
            l.epoch,
            l.batches_done,
            if l.epoch_finished { ", finished" } else { "" },
            l.total_batches,
            l.seed
        )
    };
    field("loops", loops(a), loops(b));
    let json = |v: Option<&ciborium::Value>| v.map_or(serde_json::Value::Null, to_json);
    fields(
        &mut field,
        "hyper_parameters",
        &json(a.hyper_parameters.as_ref()),
        &json(b.hyper_parameters.as_ref()),
    );
    let keys: std::collections::BTreeSet<&String> =
        a.callbacks.keys().chain(b.callbacks.keys()).collect();
    for key in keys {
        fields(
            &mut field,
            &format!("callbacks[{key}]"),
            &json(a.callbacks.get(key)),
            &json(b.callbacks.get(key)),
        );
    }
    let scheduler = |c: &Checkpoint| {
        c.scheduler.as_ref().map_or("none".to_string(), |s| {
            format!("{} {}", s.kind, to_json(&s.state))
        })
    };
    field("scheduler", scheduler(a), scheduler(b));
    let extra = |c: &Checkpoint| {
        to_json(&ciborium::Value::Map(
            c.extra
                .iter()
                .map(|(k, v)| (ciborium::Value::Text(k.clone()), v.clone()))
                .collect(),
        ))
        .to_string()
    };
    field("extra", extra(a), extra(b));
    out
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for name in &self.added {
            let _ = writeln!(out, "+ {name}");
        }
        for name in &self.removed {
            let _ = writeln!(out, "- {name}");
        }
        for (name, change) in &self.changed {
            match change {
                Change::Layout(a, b) => {
                    let _ = writeln!(out, "~ {name}: {a} -> {b}");
                }
                Change::Values { max_abs, rel_l2 } => {
                    let _ = writeln!(
                        out,
                        "~ {name}: max |a-b| {max_abs:.3e}, relative L2 {rel_l2:.3e}"
                    );
                }
            }
        }
        for (field, a, b) in &self.metadata {
            let _ = writeln!(out, "~ {field}: {a} -> {b}");
        }
        let _ = writeln!(
            out,
            "{} added, {} removed, {} changed, {} identical tensors; {} metadata field{} differ{}",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.same,
            self.metadata.len(),
            if self.metadata.len() == 1 { "" } else { "s" },
            if self.metadata.len() == 1 { "s" } else { "" },
        );
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        // Non-finite differences are written as strings, which JSON numbers cannot hold.
        let number = |x: f64| {
            if x.is_finite() {
                json!(x)
            } else {
                json!(x.to_string())
            }
        };
        json!({
            "identical": self.identical(),
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed.iter().map(|(name, c)| match c {
                Change::Layout(a, b) => json!({"name": name, "layout": [a, b]}),
                Change::Values { max_abs, rel_l2 } => json!({
                    "name": name, "max_abs": number(*max_abs), "rel_l2": number(*rel_l2),
                }),
            }).collect::<Vec<_>>(),
            "identical_tensors": self.same,
            "metadata": self.metadata.iter().map(|(f, a, b)| json!({"field": f, "a": a, "b": b})).collect::<Vec<_>>(),
        })
    }
}

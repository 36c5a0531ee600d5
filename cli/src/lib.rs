//! The operations of the `fulgur` command line, as library functions: each builds a report that the
//! binary prints as text or JSON.
//!
//! - [`inspect::inspect`]: what a checkpoint holds;
//! - [`verify::verify`]: whether checkpoints are intact, and which of a directory's is best and last;
//! - [`diff::diff`]: how two checkpoints differ;
//! - [`plot::plot`]: a run's `metrics.csv` as line charts.
//!
//! Moving weights to and from safetensors is `fulgur::interop` (the runtime's), which `fulgur export`
//! and `fulgur import` call.

pub mod diff;
pub mod inspect;
pub mod plot;
pub mod verify;

use ciborium::Value;

/// A stored value (hyperparameters, callback state) as JSON: maps with text keys become objects, bytes
/// become arrays of numbers, non-finite floats become strings (`"NaN"`, `"inf"`, `"-inf"`), other keys
/// are written as their JSON text.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Integer(i) => {
            let i = i128::from(*i);
            i64::try_from(i)
                .map(J::from)
                .or_else(|_| u64::try_from(i).map(J::from))
                .unwrap_or_else(|_| J::String(i.to_string()))
        }
        Value::Float(f) if f.is_finite() => J::from(*f),
        Value::Float(f) if f.is_nan() => J::String("NaN".into()),
        Value::Float(f) => J::String(if *f > 0.0 { "inf" } else { "-inf" }.into()),
        Value::Text(s) => J::String(s.clone()),
        Value::Bool(b) => J::Bool(*b),
        Value::Null => J::Null,
        Value::Bytes(b) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Text(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Tag(_, inner) => to_json(inner),
        _ => J::Null,
    }
}

/// The state a `ModelCheckpoint` stored, as the command line shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointCallbackState {
    /// The callback's state key (`ModelCheckpoint{'monitor': 'val_loss', …}`).
    pub key: String,
    /// Its monitored metric.
    pub monitor: Option<String>,
    /// The score of the file being read, when it was saved by a monitoring callback.
    pub current_score: Option<f64>,
    /// The best score so far and its file.
    pub best_model_score: Option<f64>,
    /// The best file.
    pub best_model_path: Option<String>,
    /// The latest `last` file.
    pub last_model_path: Option<String>,
}

/// The `ModelCheckpoint` states among a checkpoint's callback states.
pub fn checkpoint_callbacks(
    callbacks: &std::collections::BTreeMap<String, Value>,
) -> Vec<CheckpointCallbackState> {
    callbacks
        .iter()
        .filter(|(key, _)| key.starts_with("ModelCheckpoint"))
        .map(|(key, state)| {
            let field = |name: &str| match state {
                Value::Map(m) => m
                    .iter()
                    .find(|(k, _)| k.as_text() == Some(name))
                    .map(|(_, v)| v),
                _ => None,
            };
            let text = |name: &str| field(name).and_then(Value::as_text).map(str::to_string);
            let float = |name: &str| match field(name) {
                Some(Value::Float(f)) => Some(*f),
                Some(Value::Integer(i)) => Some(i128::from(*i) as f64),
                _ => None,
            };
            CheckpointCallbackState {
                key: key.clone(),
                monitor: text("monitor"),
                current_score: float("current_score"),
                best_model_score: float("best_model_score"),
                best_model_path: text("best_model_path"),
                last_model_path: text("last_model_path"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_become_json_without_losing_what_json_cannot_say() {
        let v = Value::Map(vec![
            (Value::Text("lr".into()), Value::Float(0.5)),
            (Value::Integer(3.into()), Value::Float(f64::NAN)),
            (Value::Text("b".into()), Value::Bytes(vec![1, 2])),
            (Value::Text("big".into()), Value::Integer(u64::MAX.into())),
        ]);
        assert_eq!(
            to_json(&v).to_string(),
            r#"{"lr":0.5,"3":"NaN","b":[1,2],"big":18446744073709551615}"#
        );
    }
}

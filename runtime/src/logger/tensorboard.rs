use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ciborium::Value;

use super::event_file::{self as ef, Event, SummaryValue, What};
use super::{yaml, Logger, VersionDir};
use crate::metrics::MetricValue;
use crate::strategy::RankZeroFs;
use crate::Result;

/// Numbers the event files this process creates, as TensorBoard's writer does (the last part of the
/// file name), so two loggers started in the same second never share a file.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Lightning's `TensorBoardLogger`: event files that TensorBoard reads
/// (`<root>/<name>/version_N/events.out.tfevents.<time>.<host>.<pid>.<n>`) with every metric as a scalar
/// by step and the hyperparameters for TensorBoard's HPARAMS tab, and `hparams.yaml` next to them.
/// `N` is one more than the highest existing version (0 for the first run).
///
/// ```
/// use fulgur_runtime::logger::{Logger, TensorBoardLogger};
///
/// let root = std::env::temp_dir().join(format!("fulgur-doc-tensorboard-{}", std::process::id()));
/// let mut logger = TensorBoardLogger::new(&root);
/// assert_eq!(logger.log_dir()?, root.join("lightning_logs/version_0"));
/// // In a run: `Trainer::builder().logger(logger)`; then `tensorboard --logdir <root>/lightning_logs`.
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
///
/// As in Lightning, the hyperparameters come with a placeholder metric `hp_metric` of `-1` at step 0
/// (TensorBoard's HPARAMS tab lists a run only with a metric); [`default_hp_metric(false)`] leaves
/// it out. Nested hyperparameters are flattened with `/` (`optimizer/lr`); numbers and booleans are
/// numbers there, strings are strings, and anything else (a list, `null`) is shown as Python's
/// `str` writes it, as Lightning does. Events are buffered and written on [`Logger::save`] (after
/// hyperparameters at once).
///
/// [`default_hp_metric(false)`]: TensorBoardLogger::default_hp_metric
#[derive(Debug)]
pub struct TensorBoardLogger {
    dir: VersionDir,
    default_hp_metric: bool,
    event_file: Option<PathBuf>,
    created: bool,
    pending: Vec<u8>,
}

impl TensorBoardLogger {
    /// Logs under `<root>/lightning_logs/version_N`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_name(root, "lightning_logs")
    }

    /// Logs under `<root>/<name>/version_N`.
    pub fn with_name(root: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            dir: VersionDir::new(root.into(), name.into()),
            default_hp_metric: true,
            event_file: None,
            created: false,
            pending: Vec::new(),
        }
    }

    /// Uses version `N` instead of the next free one.
    pub fn version(mut self, version: u32) -> Self {
        self.dir.version = Some(version);
        self
    }

    /// Whether the hyperparameters come with Lightning's placeholder metric `hp_metric = -1` (default
    /// `true`). Without it, the event file gets no hyperparameters (as in Lightning) and only
    /// `hparams.yaml` records them.
    pub fn default_hp_metric(mut self, on: bool) -> Self {
        self.default_hp_metric = on;
        self
    }

    /// The event file, once something was logged.
    pub fn event_file(&self) -> Option<&Path> {
        self.event_file.as_deref()
    }

    fn push(&mut self, step: u64, value: SummaryValue) {
        let event = Event {
            wall_time: now().as_secs_f64(),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            what: Some(What::Summary(ef::Summary { value: vec![value] })),
        };
        ef::push_record(&mut self.pending, &event);
    }

    fn push_scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.push(
            step,
            SummaryValue {
                tag: tag.into(),
                simple_value: Some(value as f32),
                metadata: None,
            },
        );
    }

    /// Writes what is buffered: the file (with TensorBoard's version record first) the first time,
    /// appended to afterwards.
    fn flush(&mut self, fs: RankZeroFs<'_>) -> Result<()> {
        if self.created && self.pending.is_empty() {
            return Ok(());
        }
        let path = match &self.event_file {
            Some(p) => p.clone(),
            None => {
                let secs = now().as_secs();
                let host = gethostname::gethostname();
                let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
                let file = format!(
                    "events.out.tfevents.{secs:010}.{}.{}.{n}",
                    host.to_string_lossy(),
                    std::process::id()
                );
                let p = self.log_dir()?.join(file);
                self.event_file = Some(p.clone());
                p
            }
        };
        let records = std::mem::take(&mut self.pending);
        if self.created {
            fs.append_file(&path, &records)
        } else {
            let mut bytes = Vec::with_capacity(records.len() + 64);
            ef::push_record(
                &mut bytes,
                &Event {
                    wall_time: now().as_secs_f64(),
                    step: 0,
                    what: Some(What::FileVersion("brain.Event:2".into())),
                },
            );
            bytes.extend_from_slice(&records);
            fs.write_file(&path, &bytes)?;
            self.created = true;
            Ok(())
        }
    }

    /// The three summaries of TensorBoard's hparams plugin, as PyTorch's `hparams()` builds them for
    /// Lightning: the experiment (hyperparameter and metric names), the session's start (the values)
    /// and its end.
    fn push_hparams(&mut self, hparams: &Value, metrics: &[&str]) {
        let mut flat = BTreeMap::new();
        match hparams {
            Value::Map(_) => flatten("", hparams, &mut flat),
            Value::Null => {}
            other => flatten("hparams", other, &mut flat),
        }
        let mut infos = Vec::new();
        let mut values = std::collections::HashMap::new();
        for (name, value) in flat {
            let (kind, data_type) = match value {
                Param::Number(x) => (ef::Kind::Number(x), ef::DATA_TYPE_FLOAT64),
                Param::Text(s) => (ef::Kind::String(s), ef::DATA_TYPE_STRING),
            };
            infos.push(ef::HParamInfo {
                name: name.clone(),
                r#type: data_type,
            });
            values.insert(name, ef::ProtoValue { kind: Some(kind) });
        }
        let experiment = ef::HParamsData::Experiment(ef::Experiment {
            hparam_infos: infos,
            metric_infos: metrics
                .iter()
                .map(|m| ef::MetricInfo {
                    name: Some(ef::MetricName {
                        group: String::new(),
                        tag: (*m).into(),
                    }),
                })
                .collect(),
        });
        let start = ef::HParamsData::SessionStartInfo(ef::SessionStartInfo { hparams: values });
        let end = ef::HParamsData::SessionEndInfo(ef::SessionEndInfo {
            status: ef::STATUS_SUCCESS,
        });
        for (tag, data) in [
            ("_hparams_/experiment", experiment),
            ("_hparams_/session_start_info", start),
            ("_hparams_/session_end_info", end),
        ] {
            let content = prost::Message::encode_to_vec(&ef::HParamsPluginData {
                version: 0,
                data: Some(data),
            });
            self.push(
                0,
                SummaryValue {
                    tag: tag.into(),
                    simple_value: None,
                    metadata: Some(ef::SummaryMetadata {
                        plugin_data: Some(ef::PluginData {
                            plugin_name: "hparams".into(),
                            content,
                        }),
                    }),
                },
            );
        }
    }
}

/// A hyperparameter as TensorBoard's hparams plugin takes it.
enum Param {
    Number(f64),
    Text(String),
}

/// Nested maps become `outer/inner` names (Lightning's `_flatten_dict`); values that are neither
/// numbers, booleans nor strings become their Python `str` (Lightning's `_sanitize_params`).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Param>) {
    match value {
        Value::Map(entries) if !entries.is_empty() || prefix.is_empty() => {
            for (k, v) in entries {
                let key = match k {
                    Value::Text(t) => t.clone(),
                    other => python_str(other),
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}/{key}")
                };
                flatten(&name, v, out);
            }
        }
        Value::Tag(_, inner) => flatten(prefix, inner, out),
        Value::Integer(i) => {
            out.insert(prefix.into(), Param::Number(i128::from(*i) as f64));
        }
        Value::Float(f) => {
            out.insert(prefix.into(), Param::Number(*f));
        }
        // PyTorch's `hparams()` takes a bool as the int it is in Python.
        Value::Bool(b) => {
            out.insert(prefix.into(), Param::Number(f64::from(u8::from(*b))));
        }
        Value::Text(t) => {
            out.insert(prefix.into(), Param::Text(t.clone()));
        }
        other => {
            out.insert(prefix.into(), Param::Text(python_str(other)));
        }
    }
}

/// Python's `str` of a value (`None`, `True`, `[32, 16]`, `{'a': 1}`, `b'\x00'`).
fn python_str(value: &Value) -> String {
    fn repr(value: &Value, out: &mut String) {
        match value {
            Value::Text(t) => {
                out.push('\'');
                for c in t.chars() {
                    match c {
                        '\'' => out.push_str("\\'"),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
            }
            other => out.push_str(&python_str(other)),
        }
    }
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Float(f) => yaml::python_float_repr(*f),
        Value::Text(t) => t.clone(),
        Value::Bytes(b) => {
            let mut s = String::from("b'");
            for byte in b {
                match byte {
                    b'\'' => s.push_str("\\'"),
                    b'\\' => s.push_str("\\\\"),
                    0x20..=0x7e => s.push(char::from(*byte)),
                    _ => s.push_str(&format!("\\x{byte:02x}")),
                }
            }
            s.push('\'');
            s
        }
        Value::Array(items) => {
            let mut s = String::from("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                repr(item, &mut s);
            }
            s.push(']');
            s
        }
        Value::Map(entries) => {
            let mut s = String::from("{");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                repr(k, &mut s);
                s.push_str(": ");
                repr(v, &mut s);
            }
            s.push('}');
            s
        }
        Value::Tag(_, inner) => python_str(inner),
        _ => "None".into(),
    }
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Logger for TensorBoardLogger {
    fn log_dir(&mut self) -> Result<&Path> {
        self.dir.resolve()
    }

    fn log_hyperparams(&mut self, hparams: &Value, fs: RankZeroFs<'_>) -> Result<()> {
        let path = self.log_dir()?.join("hparams.yaml");
        fs.write_file(&path, yaml::hparams_yaml(hparams, &path)?.as_bytes())?;
        if self.default_hp_metric {
            self.push_scalar("hp_metric", -1.0, 0);
            self.push_hparams(hparams, &["hp_metric"]);
        }
        self.flush(fs)
    }

    fn log_metrics(
        &mut self,
        metrics: &BTreeMap<String, MetricValue>,
        step: u64,
        _fs: RankZeroFs<'_>,
    ) -> Result<()> {
        for (name, value) in metrics {
            self.push_scalar(name, value.as_f64(), step);
        }
        Ok(())
    }

    fn save(&mut self, fs: RankZeroFs<'_>) -> Result<()> {
        self.flush(fs)
    }
}

#[cfg(test)]
mod tests;

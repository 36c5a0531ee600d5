use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ciborium::Value;

use super::{yaml, Logger, VersionDir};
use crate::metrics::MetricValue;
use crate::strategy::RankZeroFs;
use crate::Result;

/// Lightning's `CSVLogger`: `<root>/<name>/version_N/metrics.csv` and `hparams.yaml`, where `N` is one
/// more than the highest existing version (0 for the first run).
#[derive(Debug)]
pub struct CsvLogger {
    dir: VersionDir,
    columns: Vec<String>,
    pending: Vec<BTreeMap<String, MetricValue>>,
    written: Vec<BTreeMap<String, MetricValue>>,
}

impl CsvLogger {
    /// Logs under `<root>/lightning_logs/version_N`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_name(root, "lightning_logs")
    }

    /// Logs under `<root>/<name>/version_N`.
    pub fn with_name(root: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            dir: VersionDir::new(root.into(), name.into()),
            columns: Vec::new(),
            pending: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Uses version `N` instead of the next free one.
    pub fn version(mut self, version: u32) -> Self {
        self.dir.version = Some(version);
        self
    }

    /// The path of `metrics.csv`.
    pub fn metrics_path(&mut self) -> Result<PathBuf> {
        Ok(self.log_dir()?.join("metrics.csv"))
    }

    fn write_rows(&mut self, path: &Path, fs: RankZeroFs<'_>) -> Result<()> {
        let keys: BTreeSet<&String> = self.pending.iter().flat_map(|r| r.keys()).collect();
        let grew = keys.iter().any(|k| !self.columns.contains(k));
        if grew {
            let mut cols: BTreeSet<String> = self.columns.iter().cloned().collect();
            cols.extend(keys.into_iter().cloned());
            self.columns = cols.into_iter().collect();
        }
        let rows = std::mem::take(&mut self.pending);
        if grew || self.written.is_empty() {
            self.written.extend(rows);
            let text = render(&self.columns, &self.written, true);
            fs.write_file(path, text.as_bytes())?;
        } else {
            let text = render(&self.columns, &rows, false);
            fs.append_file(path, text.as_bytes())?;
            self.written.extend(rows);
        }
        Ok(())
    }
}

/// The header (when asked) and the rows as CSV, quoted where a cell needs it (a metric name with `,`,
/// `"` or a line break), as Python's `csv` module writes and reads it.
fn render(columns: &[String], rows: &[BTreeMap<String, MetricValue>], header: bool) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing into memory cannot fail, and every record has as many cells as there are columns.
    if header {
        let _ = out.write_record(columns);
    }
    for row in rows {
        let _ = out.write_record(
            columns
                .iter()
                .map(|c| row.get(c).map(|v| format_value(*v)).unwrap_or_default()),
        );
    }
    let bytes = out.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

fn format_value(v: MetricValue) -> String {
    match v {
        // Python's spelling, as Lightning's CSV files have it.
        MetricValue::Bool(b) => if b { "True" } else { "False" }.to_string(),
        other => other.to_string(),
    }
}

impl Logger for CsvLogger {
    fn log_dir(&mut self) -> Result<&Path> {
        self.dir.resolve()
    }

    fn log_hyperparams(&mut self, hparams: &Value, fs: RankZeroFs<'_>) -> Result<()> {
        let path = self.log_dir()?.join("hparams.yaml");
        fs.write_file(&path, yaml::hparams_yaml(hparams, &path)?.as_bytes())
    }

    fn log_metrics(
        &mut self,
        metrics: &BTreeMap<String, MetricValue>,
        step: u64,
        _fs: RankZeroFs<'_>,
    ) -> Result<()> {
        let mut row = metrics.clone();
        row.insert("step".into(), MetricValue::Int(step as i64));
        self.pending.push(row);
        Ok(())
    }

    fn save(&mut self, fs: RankZeroFs<'_>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.metrics_path()?;
        self.write_rows(&path, fs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::SingleProcess;

    #[test]
    fn versions_count_up_and_columns_grow() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RankZeroFs::new(&SingleProcess);
        let mut a = CsvLogger::new(dir.path());
        assert_eq!(
            a.log_dir().unwrap(),
            dir.path().join("lightning_logs/version_0")
        );
        a.log_hyperparams(
            &Value::serialized(&BTreeMap::from([("lr", 0.5)])).unwrap(),
            fs,
        )
        .unwrap();
        a.log_metrics(
            &BTreeMap::from([("train_loss".to_string(), MetricValue::F32(0.5))]),
            1,
            fs,
        )
        .unwrap();
        a.save(fs).unwrap();
        a.log_metrics(
            &BTreeMap::from([("train_loss".to_string(), MetricValue::F32(0.25))]),
            2,
            fs,
        )
        .unwrap();
        a.save(fs).unwrap();
        let csv = std::fs::read_to_string(a.metrics_path().unwrap()).unwrap();
        assert_eq!(csv, "step,train_loss\n1,0.5\n2,0.25\n");
        a.log_metrics(
            &BTreeMap::from([
                ("epoch".to_string(), MetricValue::Int(0)),
                ("val_loss".to_string(), MetricValue::F32(1.5)),
            ]),
            2,
            fs,
        )
        .unwrap();
        a.save(fs).unwrap();
        let csv = std::fs::read_to_string(a.metrics_path().unwrap()).unwrap();
        assert_eq!(
            csv,
            "epoch,step,train_loss,val_loss\n,1,0.5,\n,2,0.25,\n0,2,,1.5\n"
        );

        let mut b = CsvLogger::new(dir.path());
        // A name with a comma or a quote stays one column (quoted as Python's csv module does).
        b.log_metrics(
            &BTreeMap::from([
                ("val,loss".to_string(), MetricValue::F32(0.5)),
                ("say \"hi\"".to_string(), MetricValue::Bool(true)),
            ]),
            3,
            fs,
        )
        .unwrap();
        b.save(fs).unwrap();
        let csv = std::fs::read_to_string(b.metrics_path().unwrap()).unwrap();
        assert_eq!(csv, "\"say \"\"hi\"\"\",step,\"val,loss\"\nTrue,3,0.5\n");
        assert_eq!(
            b.metrics_path().unwrap(),
            dir.path().join("lightning_logs/version_1/metrics.csv")
        );
    }
}

//! `fulgur inspect`: what a checkpoint holds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fulgur_runtime::checkpoint::{
    verify_checkpoint, Checkpoint, CheckpointError, OptimizerState, TensorData, FORMAT_NAME,
    FORMAT_VERSION,
};
use serde_json::json;

use fulgur_runtime::human_bytes;

use crate::{checkpoint_callbacks, to_json, CheckpointCallbackState};

/// One stored tensor: its name, element type, shape and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRow {
    /// The name (`net.0.weight`; for optimizer state `net.0.weight.exp_avg`).
    pub name: String,
    /// `f32` or `f64`.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Its data, in bytes.
    pub bytes: u64,
}

/// One optimizer's state.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerRow {
    /// The optimizer's kind (`adam`, `sgd`).
    pub kind: String,
    /// Its step count.
    pub step: u64,
    /// Its learning rate at saving.
    pub lr: f64,
    /// Its buffers, named `{parameter}.{slot}`.
    pub tensors: Vec<TensorRow>,
}

/// What [`inspect`] reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub file_bytes: u64,
    /// The checkpoint, tensors included (verified).
    pub checkpoint: Checkpoint,
    /// The module's tensors.
    pub tensors: Vec<TensorRow>,
    /// Every optimizer's state, in order.
    pub optimizers: Vec<OptimizerRow>,
    /// The state of every `ModelCheckpoint` callback.
    pub checkpoint_callbacks: Vec<CheckpointCallbackState>,
}

/// Reads and verifies the checkpoint at `path` and describes it.
pub fn inspect(path: &Path) -> Result<Report, CheckpointError> {
    let checkpoint = verify_checkpoint(path)?;
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let tensors = checkpoint
        .state_dict
        .iter()
        .map(|(name, t)| row(name.clone(), t))
        .collect();
    let optimizers = checkpoint.optimizer_states().map(optimizer_row).collect();
    let checkpoint_callbacks = checkpoint_callbacks(&checkpoint.callbacks);
    Ok(Report {
        path: path.to_path_buf(),
        file_bytes,
        checkpoint,
        tensors,
        optimizers,
        checkpoint_callbacks,
    })
}

fn row(name: String, t: &TensorData) -> TensorRow {
    TensorRow {
        name,
        dtype: t.dtype().to_string(),
        shape: t.shape().to_vec(),
        bytes: t.dtype().byte_len(t.shape()).unwrap_or(usize::MAX) as u64,
    }
}

fn optimizer_row(o: &OptimizerState) -> OptimizerRow {
    OptimizerRow {
        kind: o.kind.clone(),
        step: o.step,
        lr: o.lr,
        tensors: o
            .params
            .iter()
            .flat_map(|(param, slots)| {
                slots
                    .iter()
                    .map(move |(slot, t)| row(format!("{param}.{slot}"), t))
            })
            .collect(),
    }
}

fn total(rows: &[TensorRow]) -> u64 {
    rows.iter().map(|r| r.bytes).sum()
}

fn shape(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn table(out: &mut String, rows: &[TensorRow]) {
    let width = |f: &dyn Fn(&TensorRow) -> usize, title: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(title)
    };
    let (n, s) = (
        width(&|r| r.name.len(), 4),
        width(&|r| shape(&r.shape).len(), 5),
    );
    let _ = writeln!(
        out,
        "  {:n$}  dtype  {:s$}  {:>10}",
        "name", "shape", "bytes"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "  {:n$}  {:5}  {:s$}  {:>10}",
            r.name,
            r.dtype,
            shape(&r.shape),
            r.bytes
        );
    }
}

impl Report {
    /// The report as text, for people.
    pub fn text(&self) -> String {
        let c = &self.checkpoint;
        let l = &c.loops;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "file             {} ({})",
            self.path.display(),
            human_bytes(self.file_bytes)
        );
        let _ = writeln!(
            out,
            "format           {FORMAT_NAME} v{FORMAT_VERSION}, written by fulgur {}",
            c.fulgur_version
        );
        let _ = writeln!(out, "module           {}", c.module_type);
        let _ = writeln!(out, "epoch            {}", c.epoch);
        let _ = writeln!(out, "global step      {}", c.global_step);
        let finished = if l.epoch_finished {
            " (epoch finished: a resume starts the next)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "loop position    epoch {}, {} batches of it done{finished}; {} batches in all, shuffle seed {}",
            l.epoch, l.batches_done, l.total_batches, l.seed
        );
        if let Some(w) = l.world_size {
            let _ = writeln!(out, "world size       {w}");
        }
        let _ = writeln!(
            out,
            "weights only     {}",
            if c.weights_only { "yes" } else { "no" }
        );
        for cb in &self.checkpoint_callbacks {
            if let Some(monitor) = &cb.monitor {
                let score = |s: Option<f64>| s.map_or("none".to_string(), |v| format!("{v:.6}"));
                let _ = writeln!(
                    out,
                    "monitored        {monitor} = {} (best {} in {})",
                    score(cb.current_score),
                    score(cb.best_model_score),
                    cb.best_model_path.as_deref().unwrap_or("none")
                );
            }
        }
        match &c.hyper_parameters {
            Some(h) => {
                let _ = writeln!(out, "hyperparameters  {}", to_json(h));
            }
            None => {
                let _ = writeln!(out, "hyperparameters  none");
            }
        }
        if c.callbacks.is_empty() {
            let _ = writeln!(out, "callbacks        none");
        } else {
            let _ = writeln!(out, "callbacks");
            for (key, state) in &c.callbacks {
                let _ = writeln!(out, "  {key}");
                match to_json(state) {
                    serde_json::Value::Object(fields) => {
                        for (field, value) in fields {
                            let _ = writeln!(out, "    {field}: {value}");
                        }
                    }
                    other => {
                        let _ = writeln!(out, "    {other}");
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "tensors          {} ({})",
            self.tensors.len(),
            human_bytes(total(&self.tensors))
        );
        table(&mut out, &self.tensors);
        if self.optimizers.is_empty() {
            let _ = writeln!(out, "optimizer        none");
        }
        for (i, o) in self.optimizers.iter().enumerate() {
            let _ = writeln!(
                out,
                "optimizer {i}      {} (step {}, lr {}): {} tensors ({})",
                o.kind,
                o.step,
                o.lr,
                o.tensors.len(),
                human_bytes(total(&o.tensors))
            );
            table(&mut out, &o.tensors);
        }
        if let Some(s) = &c.scheduler {
            let _ = writeln!(out, "scheduler        {} {}", s.kind, to_json(&s.state));
        }
        out
    }

    /// The report as JSON, for programs.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.checkpoint;
        let rows = |rows: &[TensorRow]| {
            rows.iter()
                .map(|r| json!({"name": r.name, "dtype": r.dtype, "shape": r.shape, "bytes": r.bytes}))
                .collect::<Vec<_>>()
        };
        json!({
            "path": self.path,
            "file_bytes": self.file_bytes,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "fulgur_version": c.fulgur_version,
            "module_type": c.module_type,
            "epoch": c.epoch,
            "global_step": c.global_step,
            "weights_only": c.weights_only,
            "loops": {
                "epoch": c.loops.epoch,
                "batches_done": c.loops.batches_done,
                "epoch_finished": c.loops.epoch_finished,
                "global_step": c.loops.global_step,
                "total_batches": c.loops.total_batches,
                "seed": c.loops.seed,
                "world_size": c.loops.world_size,
            },
            "monitored": self.checkpoint_callbacks.iter().filter(|cb| cb.monitor.is_some()).map(|cb| json!({
                "callback": cb.key,
                "monitor": cb.monitor,
                "current_score": cb.current_score,
                "best_model_score": cb.best_model_score,
                "best_model_path": cb.best_model_path,
            })).collect::<Vec<_>>(),
            "hyper_parameters": c.hyper_parameters.as_ref().map(to_json),
            "callbacks": c.callbacks.iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<serde_json::Map<_, _>>(),
            "tensors": rows(&self.tensors),
            "optimizers": self.optimizers.iter().map(|o| json!({
                "kind": o.kind,
                "step": o.step,
                "lr": o.lr,
                "tensors": rows(&o.tensors),
            })).collect::<Vec<_>>(),
            "scheduler": c.scheduler.as_ref().map(|s| json!({"kind": s.kind, "state": to_json(&s.state)})),
        })
    }
}

//! The checkpoint as data: everything a run needs to continue, and the file format that holds it.
//!
//! # File format, version 1
//!
//! ```text
//! offset   size  content
//! 0        8     magic b"FULGURCK"
//! 8        n     payload: one CBOR data item (RFC 8949), the map described below
//! 8 + n    8     xxh3-64 (seed 0) of the payload's structure bytes, little-endian
//! 16 + n   8     n, little-endian
//! 24 + n   8     magic b"FULGURCK" again
//! ```
//!
//! The *structure bytes* are every payload byte except the contents of the tensors' `data` byte strings
//! (their CBOR heads are included). Each tensor carries its own xxh3-64 of its `data`, so every byte of
//! the file is covered by exactly one checksum and hashing costs one pass over the data.
//!
//! The payload is a map with text keys. `format` and `format_version` are its first two entries, in that
//! order, in every version, and `format_version` is one byte: a reader never loads a newer file. It
//! reads such a file on as its own version only to tell a damaged version field from a newer file: when
//! the checksums hold only with its own version in place of the one read, the file is damaged; when they
//! hold as read, a newer fulgur wrote it; otherwise it may be either, and the error says so. The other
//! entries are written in the order below and may be read in any order.
//!
//! | key                | CBOR                            | [`Checkpoint`] field                   |
//! |--------------------|---------------------------------|----------------------------------------|
//! | `format`           | text `"fulgur-checkpoint"`      | ([`FORMAT_NAME`])                      |
//! | `format_version`   | uint, `1`                       | ([`FORMAT_VERSION`])                   |
//! | `fulgur_version`   | text                            | `fulgur_version`                       |
//! | `module_type`      | text                            | `module_type`                          |
//! | `epoch`            | uint                            | `epoch`                                |
//! | `global_step`      | uint                            | `global_step`                          |
//! | `weights_only`     | bool                            | `weights_only`                         |
//! | `state_dict`       | map: text → *tensor*            | `state_dict`                           |
//! | `optimizer`        | *optimizer*, absent when `None` | `optimizer`                            |
//! | `scheduler`        | map `{kind: text, state: any}`, absent when `None` | `scheduler`         |
//! | `more_optimizers`  | array of *optimizer entry*, absent when empty | `more_optimizers`        |
//! | `loops`            | *loops*                         | `loops`                                |
//! | `callbacks`        | map: text → any                 | `callbacks`                            |
//! | `hyper_parameters` | any, absent when `None`         | `hyper_parameters`                     |
//! | `extra`            | map: text → any                 | `extra`                                |
//!
//! - *tensor*: map `{dtype: "f32" | "f64", shape: [uint…], data: bytes, xxh3: uint}`; `data` is a byte
//!   string of `dtype.size() × Π shape` little-endian values, `xxh3` its xxh3-64. `xxh3` follows `data`
//!   so that both sides hash while streaming.
//! - *optimizer*: map `{kind: text, step: uint, lr: float, config: any,
//!   params: map: parameter name → map: slot name → tensor}`.
//! - *optimizer entry*: map `{optimizer: optimizer, scheduler: {kind: text, state: any}}`, `scheduler`
//!   absent when `None`: the second and later optimizers of a module with several (manual
//!   optimization), in the order `configure_optimizers` gives them, each with its scheduler; the first
//!   is `optimizer` and `scheduler`, so a file of one optimizer has no `more_optimizers` and reads as
//!   before (Lightning's lists `optimizer_states` and `lr_schedulers`).
//! - *loops*: map `{epoch, batches_done, epoch_finished, global_step, total_batches, seed}` (uints and a
//!   bool) plus `metric_state: any`, absent when `None`, and `world_size: uint` (above 1), absent for
//!   one process.
//!
//! "any" is an arbitrary CBOR item ([`ciborium::Value`]). Optional fields are absent rather than `null`
//! so that `Some(Value::Null)` survives the round trip. Lengths in the structure are definite.
//!
//! A reader refuses unknown or repeated keys, missing required keys, a `data` whose length does not fit
//! `dtype` and `shape`, and any checksum mismatch: a file that cannot be understood entirely is not
//! loaded, so a resumed run never silently drops state. No length read from the file is trusted beyond
//! the bytes that remain in it, so a reader never allocates more bytes than the file holds (the decoded
//! tree of an "any" item takes a small constant factor more than its encoding).

use std::collections::BTreeMap;

use ciborium::Value;
use serde::{Deserialize, Serialize};

use super::TensorData;

/// The format name written at the head of every checkpoint.
pub const FORMAT_NAME: &str = "fulgur-checkpoint";
/// The format version this build writes; it reads this version and every older one.
pub const FORMAT_VERSION: u32 = 1;

/// A whole checkpoint: the module's weights and, unless it is weights-only, the training state.
///
/// Lightning's checkpoint dictionary, typed: `state_dict`, `optimizer_states`, `lr_schedulers`, `loops`,
/// `callbacks`, `hyper_parameters`, `epoch`, `global_step`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The fulgur version that wrote the file.
    pub fulgur_version: String,
    /// `current_epoch` when the checkpoint was taken.
    pub epoch: u64,
    /// Optimizer steps taken so far.
    pub global_step: u64,
    /// `true` when only the weights (and hyperparameters and loop counters) were saved.
    pub weights_only: bool,
    /// Parameters by name (`net.0.weight`, …).
    pub state_dict: BTreeMap<String, TensorData>,
    /// Optimizer state by parameter name; `None` in a weights-only file.
    pub optimizer: Option<OptimizerState>,
    /// Learning-rate scheduler state (of the first optimizer); `None` when there is none or in a
    /// weights-only file.
    pub scheduler: Option<SchedulerState>,
    /// The state of the second and later optimizers and their schedulers, in the order
    /// `configure_optimizers` returns them; empty with one optimizer and in a weights-only file.
    pub more_optimizers: Vec<OptimizerEntry>,
    /// Where the loops were, so that `fit` continues exactly there.
    pub loops: LoopState,
    /// Callback states keyed by each callback's state key; empty in a weights-only file.
    pub callbacks: BTreeMap<String, Value>,
    /// The module's hyperparameters, from which `load_from_checkpoint` rebuilds it.
    pub hyper_parameters: Option<Value>,
    /// The Rust type name of the module that wrote the file, for messages.
    pub module_type: String,
    /// Entries added by `on_save_checkpoint` hooks.
    pub extra: BTreeMap<String, Value>,
}

impl Checkpoint {
    /// An empty checkpoint stamped with this build's version.
    pub fn new(module_type: impl Into<String>) -> Self {
        Self {
            fulgur_version: env!("CARGO_PKG_VERSION").to_string(),
            epoch: 0,
            global_step: 0,
            weights_only: false,
            state_dict: BTreeMap::new(),
            optimizer: None,
            scheduler: None,
            more_optimizers: Vec::new(),
            loops: LoopState::default(),
            callbacks: BTreeMap::new(),
            hyper_parameters: None,
            module_type: module_type.into(),
            extra: BTreeMap::new(),
        }
    }

    /// The state of every optimizer, in the order `configure_optimizers` returns them: [`optimizer`]
    /// then [`more_optimizers`]; none in a weights-only file.
    ///
    /// [`optimizer`]: Checkpoint::optimizer
    /// [`more_optimizers`]: Checkpoint::more_optimizers
    pub fn optimizer_states(&self) -> impl Iterator<Item = &OptimizerState> {
        let more = self.more_optimizers.iter().map(|e| &e.optimizer);
        self.optimizer.iter().chain(more)
    }
}

/// An optimizer's state, keyed by parameter name so that it survives any change of tensor identity.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Which optimizer wrote it (`"sgd"`, `"adam"`, `"adamw"`).
    pub kind: String,
    /// Number of updates applied (Adam's `t`).
    pub step: u64,
    /// The learning rate in force.
    pub lr: f64,
    /// The optimizer's configuration (betas, momentum, weight decay, …).
    pub config: Value,
    /// Per parameter name, per state slot (`exp_avg`, `exp_avg_sq`, `momentum_buffer`): a tensor.
    pub params: BTreeMap<String, BTreeMap<String, TensorData>>,
}

/// An optimizer's state with its scheduler's, as [`Checkpoint::more_optimizers`] holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerEntry {
    /// The optimizer's state.
    pub optimizer: OptimizerState,
    /// Its learning-rate scheduler's state; `None` when it has none.
    pub scheduler: Option<SchedulerState>,
}

/// A learning-rate scheduler's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerState {
    /// Which scheduler wrote it.
    pub kind: String,
    /// Its state, as the scheduler serialised it.
    pub state: Value,
}

/// The trainer's position and counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The epoch being run (0-based).
    pub epoch: u64,
    /// Training batches of `epoch` already processed.
    pub batches_done: u64,
    /// `true` once every batch and the epoch-end hooks of `epoch` have run: resume starts at `epoch + 1`.
    pub epoch_finished: bool,
    /// Optimizer steps taken (also `Checkpoint::global_step`).
    pub global_step: u64,
    /// Training batches processed over the whole run.
    pub total_batches: u64,
    /// The seed that drives shuffling (batch order is a function of seed and epoch).
    pub seed: u64,
    /// Epoch-level metric accumulators of the interrupted epoch, so epoch means continue exactly.
    pub metric_state: Option<Value>,
    /// The number of processes of a data-parallel run that wrote it; `None` for one process. The data
    /// order of an epoch depends on it (each rank sees its share), so a resume checks it.
    pub world_size: Option<u64>,
}

//! The vocabulary the encoder and the decoder share: the frame around the payload, the payload's keys,
//! the CBOR major types framed by hand, and the serde shapes of the entries `ciborium` handles.

use serde::{Deserialize, Deserializer, Serialize};

/// The first and the last 8 bytes of every checkpoint file.
pub(super) const MAGIC: [u8; 8] = *b"FULGURCK";
/// The trailer after the payload: structure checksum, payload length, magic.
pub(super) const TRAILER_LEN: u64 = 24;

/// The payload's keys: the entries of the table in the format's documentation, and those of a tensor
/// and of the optimizer state.
pub(super) mod key {
    pub const FORMAT: &str = "format";
    pub const FORMAT_VERSION: &str = "format_version";
    pub const FULGUR_VERSION: &str = "fulgur_version";
    pub const MODULE_TYPE: &str = "module_type";
    pub const EPOCH: &str = "epoch";
    pub const GLOBAL_STEP: &str = "global_step";
    pub const WEIGHTS_ONLY: &str = "weights_only";
    pub const STATE_DICT: &str = "state_dict";
    pub const OPTIMIZER: &str = "optimizer";
    pub const SCHEDULER: &str = "scheduler";
    pub const MORE_OPTIMIZERS: &str = "more_optimizers";
    pub const LOOPS: &str = "loops";
    pub const CALLBACKS: &str = "callbacks";
    pub const HYPER_PARAMETERS: &str = "hyper_parameters";
    pub const EXTRA: &str = "extra";

    pub const DTYPE: &str = "dtype";
    pub const SHAPE: &str = "shape";
    pub const DATA: &str = "data";
    pub const XXH3: &str = "xxh3";

    pub const KIND: &str = "kind";
    pub const STEP: &str = "step";
    pub const LR: &str = "lr";
    pub const CONFIG: &str = "config";
    pub const PARAMS: &str = "params";

    pub const ENTRY_OPTIMIZER: &str = "optimizer";
    pub const ENTRY_SCHEDULER: &str = "scheduler";
}

/// CBOR major types of the items the encoder and the decoder frame themselves (RFC 8949 §3.1).
pub(super) mod major {
    pub const UINT: u8 = 0;
    pub const BYTES: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const ARRAY: u8 = 4;
    pub const MAP: u8 = 5;
    pub const SIMPLE: u8 = 7;
}

/// The CBOR simple values `false` and `true`.
pub(super) const FALSE: u64 = 20;
pub(super) const TRUE: u64 = 21;

/// The `scheduler` entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchedulerRepr<S, V> {
    pub(super) kind: S,
    pub(super) state: V,
}

/// The `loops` entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "V: Deserialize<'de>"))]
pub(super) struct LoopsRepr<V> {
    pub(super) epoch: u64,
    pub(super) batches_done: u64,
    pub(super) epoch_finished: bool,
    pub(super) global_step: u64,
    pub(super) total_batches: u64,
    pub(super) seed: u64,
    #[serde(
        default = "none",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(super) metric_state: Option<V>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) world_size: Option<u64>,
}

fn none<V>() -> Option<V> {
    None
}

/// A present field is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>, V: Deserialize<'de>>(d: D) -> Result<Option<V>, D::Error> {
    V::deserialize(d).map(Some)
}

//! The checkpoint file: its contents and format ([`Checkpoint`]), its encoding (CBOR with checksums),
//! its decoding and verification, and crash-safe writing.

mod async_writer;
mod decode;
mod encode;
mod error;
#[cfg(test)]
mod fixtures;
mod format;
mod hash;
mod snapshot;
mod staging;
mod tensor;
mod verify;
mod wire;
mod write;

pub(crate) use async_writer::{when_idle, AsyncWriter};
pub use decode::{decode_checkpoint, read_checkpoint, read_checkpoint_header, CheckpointHeader};
pub(crate) use decode::{
    file_error_first, read_checkpoint_lazy, take_read_error, unreadable, verify_lazy_tensors,
};
pub use encode::encode_checkpoint;
pub use error::CheckpointError;
#[cfg(test)]
pub(crate) use fixtures::{scalars_after_tensors, Source};
pub use format::{
    Checkpoint, LoopState, OptimizerEntry, OptimizerState, SchedulerState, FORMAT_NAME,
    FORMAT_VERSION,
};
pub(crate) use snapshot::to_host;
pub(crate) use staging::Staging;
pub use tensor::{DType, TensorData, TensorSizeError};
pub(crate) use tensor::{Held, HostSource};
pub use verify::verify_checkpoint;
pub(crate) use write::{
    is_in_flight, replace_atomically, temporary_name, write_checkpoint_in_background,
};
pub use write::{is_temporary_file, write_checkpoint};

//! The checkpoint file: its contents, its encoding (CBOR with checksums) and crash-safe writing.

mod error;
mod format;
mod io;
mod tensor;

pub use error::CheckpointError;
pub use format::{
    Checkpoint, LoopState, OptimizerState, SchedulerState, FORMAT_NAME, FORMAT_VERSION,
};
#[cfg(test)]
pub(crate) use io::scalars_after_tensors;
pub use io::{
    decode_checkpoint, encode_checkpoint, is_temporary_file, read_checkpoint,
    read_checkpoint_header, write_checkpoint, CheckpointHeader,
};
pub(crate) use io::{is_in_flight, temporary_name};
pub use tensor::{DType, TensorData, TensorSizeError};

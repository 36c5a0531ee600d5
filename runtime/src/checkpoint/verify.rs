//! Verifying a checkpoint without holding its tensor data, for tools that look at large files.

use std::path::Path;

use super::{read_checkpoint_lazy, verify_lazy_tensors, Checkpoint, CheckpointError};

/// Reads and verifies the checkpoint at `path` as [`read_checkpoint`](super::read_checkpoint) does (the
/// same checks, the same errors naming the damaged part), but without keeping the data of its large
/// tensors: each is read through one buffer (the size of the largest tensor) to check its checksum and
/// stays in the file, to be read again when its values are asked for
/// ([`TensorData::as_f32`](super::TensorData::as_f32), [`le_bytes`](super::TensorData::le_bytes)). So
/// the memory it needs is the largest tensor's, whatever the file's size; `fulgur inspect` and
/// `fulgur verify` read files this way.
///
/// The file stays open while the returned checkpoint lives; a value read after the file was changed
/// is checked against its checksum again (`as_f32` is `None` when it no longer matches).
pub fn verify_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
    let path = path.as_ref();
    let ckpt = read_checkpoint_lazy(path)?;
    verify_lazy_tensors(&ckpt, path)?;
    Ok(ckpt)
}

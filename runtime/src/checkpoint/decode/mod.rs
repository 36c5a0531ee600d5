//! Decoding and verifying a checkpoint, whole or only its header: the entry points and the opening of
//! files here, the bounded CBOR reader in `source`, the payload's entries in `payload`.

mod lazy;
#[cfg(test)]
mod lazy_tests;
mod payload;
mod source;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::wire::{MAGIC, TRAILER_LEN};
use super::{Checkpoint, CheckpointError};
use lazy::LazyFile;
pub(crate) use lazy::{file_error_first, take_read_error, unreadable};
use source::{LazyMode, Source};

/// The reader's buffer is small because `Read::read_to_end` starts with small reads that a large buffer
/// would copy through (measured: a 1 MiB buffer costs 10% on a 16 MB load, 64 KiB nothing).
const READ_BUFFER: usize = 64 << 10;

/// Reads and verifies the checkpoint at `path`.
///
/// Errors: [`CheckpointError::Io`] when the file cannot be opened or read, [`CheckpointError::NotAFile`]
/// when `path` is a directory, a FIFO, a socket or a device (checked before opening it, so a FIFO never
/// blocks), [`CheckpointError::NotACheckpoint`] when it does not start with the checkpoint magic,
/// [`CheckpointError::UnsupportedVersion`] when a newer fulgur wrote it, and [`CheckpointError::Corrupt`]
/// naming the damaged part (truncation, malformed CBOR, a checksum mismatch in a tensor or the header).
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
    let path = path.as_ref();
    let (file, len) = open_regular(path)?;
    decode_checkpoint(BufReader::with_capacity(READ_BUFFER, file), len, path)
}

/// Opens `path` for reading, refusing anything but a regular file (symbolic links followed) before
/// `open` is called: opening a FIFO with no writer blocks forever, a device may never end. Returns the
/// file and its length.
fn open_regular(path: &Path) -> Result<(File, u64), CheckpointError> {
    let io = |op| {
        move |source| CheckpointError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    check_regular(path, &fs::metadata(path).map_err(io("open"))?)?;
    let file = File::open(path).map_err(io("open"))?;
    let metadata = file.metadata().map_err(io("read the size of"))?;
    // The path may have been replaced between the two looks; what was opened counts.
    check_regular(path, &metadata)?;
    Ok((file, metadata.len()))
}

fn check_regular(path: &Path, metadata: &fs::Metadata) -> Result<(), CheckpointError> {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    Err(CheckpointError::NotAFile {
        path: path.to_path_buf(),
        kind: file_kind(file_type),
    })
}

/// What a file that is not a regular file is, for messages.
fn file_kind(file_type: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// The scalar fields at the front of a checkpoint file, read without the tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The fulgur version that wrote the file.
    pub fulgur_version: String,
    /// The module's type name.
    pub module_type: String,
    /// The epoch at saving.
    pub epoch: u64,
    /// The global step at saving.
    pub global_step: u64,
    /// Whether the file holds the weights only.
    pub weights_only: bool,
}

/// Reads the header of the checkpoint at `path` (magic, format version, epoch, global step,
/// weights-only flag) without reading the tensors: a few hundred bytes, whatever the file's size.
///
/// The header is **not verified** — its checksum covers the whole structure, which is only known once
/// the file is read — so use it to choose among files (as `ckpt_path = "last"` does, newest first) and
/// [`read_checkpoint`] to load one. Errors are those of [`read_checkpoint`] for the bytes it reads.
pub fn read_checkpoint_header(path: impl AsRef<Path>) -> Result<CheckpointHeader, CheckpointError> {
    let path = path.as_ref();
    let (file, len) = open_regular(path)?;
    let mut src = open_payload(BufReader::with_capacity(8 * 1024, file), len, path)?;
    src.header()
}

/// Decodes and verifies a checkpoint of `len` bytes (the whole file, magic and trailer included) from
/// `reader`, which should be buffered; `path_for_errors` only names the source in errors. Reads exactly
/// `len` bytes. [`read_checkpoint`] is this on a file.
pub fn decode_checkpoint<R: Read>(
    reader: R,
    len: u64,
    path_for_errors: &Path,
) -> Result<Checkpoint, CheckpointError> {
    open_payload(reader, len, path_for_errors)?.whole_checkpoint()
}

/// Reads and verifies the structure of the checkpoint at `path` (everything but the bytes of its large
/// f32 tensors, which it steps over) and returns it with those tensors left in the file: each is read,
/// and its checksum checked, when its values are asked for ([`TensorData::as_f32`], or in place through
/// its source, which is how loads fill a module's existing buffers through one reused buffer). Tensors
/// never asked for (the optimizer state, for a weights-only load) are never read.
///
/// Errors are those of [`read_checkpoint`] for the structure, the header and the trailer, found before
/// this returns. A damaged or unreadable tensor is found when it is read: its `as_f32` is `None`, an
/// encode of it fails, and [`take_read_error`] returns the [`CheckpointError`] that `read_checkpoint`
/// would have returned (same message), which the loads return.
///
/// [`TensorData::as_f32`]: crate::checkpoint::TensorData::as_f32
pub(crate) fn read_checkpoint_lazy(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let (file, len) = open_regular(path)?;
    let later = file.try_clone().map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        op: "open",
        source,
    })?;
    let mut src = open_payload(BufReader::with_capacity(READ_BUFFER, file), len, path)?;
    src.lazy = Some(LazyMode {
        skip: |reader, n| {
            let n = i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            reader.seek_relative(n)
        },
        file: Arc::new(LazyFile::new(later, path)),
    });
    src.whole_checkpoint()
}

/// Reads every tensor of `ckpt` still in its file and checks its checksum, through one buffer (the
/// largest tensor's size), without keeping the values: after this, a lazily read checkpoint is as
/// verified as [`read_checkpoint`]'s.
pub(crate) fn verify_lazy_tensors(ckpt: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    let mut buf = Vec::new();
    let optimizer_tensors = ckpt
        .optimizer_states()
        .flat_map(|o| o.params.values().flat_map(|slots| slots.values()));
    take_read_error();
    for tensor in ckpt.state_dict.values().chain(optimizer_tensors) {
        if let Some(source) = tensor.source() {
            buf.resize(tensor.numel(), 0.0);
            source
                .copy_to_host(&mut buf)
                .map_err(|reason| unreadable(path, reason))?;
        }
    }
    Ok(())
}

/// Checks the magic and the length, and returns the reader of the payload.
fn open_payload<R: Read>(
    mut reader: R,
    len: u64,
    path: &Path,
) -> Result<Source<'_, R>, CheckpointError> {
    let not_a_checkpoint = |reason| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    if len < MAGIC.len() as u64 {
        return Err(not_a_checkpoint(format!("it is only {len} bytes long")));
    }
    let mut magic = [0; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => not_a_checkpoint("it ends before its 8th byte".into()),
        _ => CheckpointError::Io {
            path: path.to_path_buf(),
            op: "read",
            source: e,
        },
    })?;
    if magic != MAGIC {
        let found = magic.escape_ascii();
        return Err(not_a_checkpoint(format!(
            "it starts with b\"{found}\" instead of b\"FULGURCK\""
        )));
    }
    let payload_len = len
        .checked_sub(MAGIC.len() as u64 + TRAILER_LEN)
        .filter(|&n| n > 0)
        .ok_or_else(|| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("it is truncated: only {len} bytes long"),
        })?;
    Ok(Source {
        inner: reader,
        remaining: payload_len,
        pos: MAGIC.len() as u64,
        hasher: Xxh3::new(),
        path,
        newer: None,
        lazy: None,
    })
}

//! Tensors that stay in the file until their values are asked for: a lazy read records where each large
//! f32 tensor lies and steps over its bytes; reading it later goes straight into the caller's buffer
//! (a module's parameter, through one reused buffer), hashing the bytes as they arrive.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{CheckpointError, HostSource, TensorData};

/// Bytes are read and hashed in pieces of this size, so that the hash reads what the copy just brought
/// into cache.
const PIECE: usize = 256 << 10;

/// The open checkpoint file that lazy tensors read from. It is the file the structure was read from
/// (the same open file, not the path again), so a file replaced meanwhile does not mix two versions.
pub(crate) struct LazyFile {
    file: Mutex<File>,
    path: PathBuf,
}

thread_local! {
    /// The first error of a lazy tensor read on this thread since [`take_read_error`] was last called:
    /// [`HostSource::copy_to_host`] can only return a message, and loads want the typed error.
    static READ_ERROR: RefCell<Option<CheckpointError>> = const { RefCell::new(None) };
}

/// Takes the first error of a lazy tensor read on this thread since the last call, if any. Loads call
/// it before they start (to forget an old one) and after (to return the file's error, typed, rather
/// than what a consumer made of a tensor it could not read).
pub(crate) fn take_read_error() -> Option<CheckpointError> {
    READ_ERROR.with(|e| e.borrow_mut().take())
}

/// The error of a tensor that could not be read from `path`, whose reader gave `reason`: the file's
/// own error as the reader recorded it (see [`take_read_error`]), else `reason` as damage.
pub(crate) fn unreadable(path: &Path, reason: String) -> CheckpointError {
    take_read_error().unwrap_or_else(|| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Runs `f`, which may read tensors of a lazily read checkpoint, and returns its result, unless one of
/// them could not be read (damaged, or the file cut since it was opened): then that is the error, the
/// file's own, rather than what `f` made of a tensor it could not read.
pub(crate) fn file_error_first<T, E: From<CheckpointError>>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    take_read_error();
    let out = f();
    match take_read_error() {
        Some(e) => Err(e.into()),
        None => out,
    }
}

fn record(error: CheckpointError) -> String {
    let reason = match &error {
        CheckpointError::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    READ_ERROR.with(|e| {
        let mut slot = e.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    });
    reason
}

impl LazyFile {
    pub(super) fn new(file: File, path: &Path) -> Self {
        Self {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        }
    }

    /// A tensor of `shape` whose `len` bytes start at `offset` and hash to `xxh3`.
    pub(super) fn tensor(
        self: Arc<Self>,
        shape: Vec<usize>,
        offset: u64,
        len: usize,
        xxh3: u64,
        what: &str,
    ) -> TensorData {
        let source = FileTensor {
            file: self,
            offset,
            len,
            xxh3,
            what: what.to_string(),
        };
        TensorData::snapshot(shape, Arc::new(source))
    }

    fn corrupt(&self, reason: String) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

/// An f32 tensor's place in the file.
struct FileTensor {
    file: Arc<LazyFile>,
    offset: u64,
    len: usize,
    xxh3: u64,
    /// `tensor `name`` or `optimizer state `name`.`slot``, for messages.
    what: String,
}

impl HostSource for FileTensor {
    /// Reads the tensor into `dst`, hashing it piece by piece; a checksum mismatch, a file that ends
    /// early or a read error is an error naming the tensor (and, through [`take_read_error`], the
    /// file). `dst` holds a mix of read bytes after an error.
    fn copy_to_host(&self, dst: &mut [f32]) -> Result<(), String> {
        self.read_into(dst).map_err(record)
    }
}

impl FileTensor {
    fn read_into(&self, dst: &mut [f32]) -> Result<(), CheckpointError> {
        let lazy = &self.file;
        if std::mem::size_of_val(dst) != self.len {
            return Err(lazy.corrupt(format!(
                "{} holds {} bytes, but {} were asked for",
                self.what,
                self.len,
                std::mem::size_of_val(dst)
            )));
        }
        let io_error = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => lazy.corrupt(format!(
                "it is truncated: it ends inside {} (the file was shortened after it was opened)",
                self.what
            )),
            _ => CheckpointError::Io {
                path: lazy.path.clone(),
                op: "read",
                source: e,
            },
        };
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
        let mut hasher = Xxh3::new();
        {
            // A poisoned lock only means another read panicked; the file itself is fine.
            let mut file = lazy.file.lock().unwrap_or_else(|p| p.into_inner());
            file.seek(SeekFrom::Start(self.offset)).map_err(io_error)?;
            for piece in bytes.chunks_mut(PIECE) {
                file.read_exact(piece).map_err(io_error)?;
                hasher.update(piece);
            }
        }
        if hasher.digest() != self.xxh3 {
            return Err(lazy.corrupt(format!("checksum mismatch in {}", self.what)));
        }
        if cfg!(target_endian = "big") {
            dst.iter_mut()
                .for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
        }
        Ok(())
    }
}

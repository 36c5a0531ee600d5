//! Encoding a [`Checkpoint`] as CBOR with checksums, and writing it crash-safely.
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
//! - *loops*: map `{epoch, batches_done, epoch_finished, global_step, total_batches, seed}` (uints and a
//!   bool) plus `metric_state: any`, absent when `None`.
//!
//! "any" is an arbitrary CBOR item ([`ciborium::Value`]). Optional fields are absent rather than `null`
//! so that `Some(Value::Null)` survives the round trip. Lengths in the structure are definite.
//!
//! A reader refuses unknown or repeated keys, missing required keys, a `data` whose length does not fit
//! `dtype` and `shape`, and any checksum mismatch: a file that cannot be understood entirely is not
//! loaded, so a resumed run never silently drops state. No length read from the file is trusted beyond
//! the bytes that remain in it, so a reader never allocates more bytes than the file holds (the decoded
//! tree of an "any" item takes a small constant factor more than its encoding).
//!
//! # Cost
//!
//! The structure is framed by hand (CBOR heads are a few bytes) and its "any" items go through
//! `ciborium`, but tensor bytes never do: they are written straight from the tensor's buffer and read
//! straight into the buffer that becomes the loaded tensor, one copy each way, as raw file I/O does.
//! Hashing is the only extra pass, and it is hidden: tensors of a few MiB or more are hashed on a second
//! thread while their bytes are copied (when the machine has a second core), smaller ones piece by piece
//! while the piece is in cache. Hashing tensor bytes twice (per tensor and again for the trailer) would
//! cost a second pass, about 10% of a save on the machine this was measured on, hence the trailer
//! covers the structure only.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;

use ciborium::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::{
    Checkpoint, CheckpointError, DType, LoopState, OptimizerState, SchedulerState, TensorData,
    TensorSizeError, FORMAT_NAME, FORMAT_VERSION,
};

const MAGIC: [u8; 8] = *b"FULGURCK";
const TRAILER_LEN: u64 = 24;

/// The file buffers serve the structure and small tensors; larger tensor data passes them by. The
/// reader's is small because `Read::read_to_end` starts with small reads that a large buffer would
/// copy through (measured: a 1 MiB buffer costs 10% on a 16 MB load, 64 KiB nothing).
const WRITE_BUFFER: usize = 1 << 20;
const READ_BUFFER: usize = 64 << 10;
/// Tensor data is hashed and copied in pieces of this size, so that the copy reads what the hash just
/// brought into cache; it is at least either buffer, so that both pass it through.
const DATA_CHUNK: usize = 4 << 20;
/// Tensors from these sizes on are hashed on a second thread, when there is a second core. Reading needs
/// larger ones to gain: it must then read into zeroed memory, which costs for smaller allocations.
const PARALLEL_WRITE_HASH_MIN: usize = 1 << 20;
const PARALLEL_READ_HASH_MIN: usize = 2 * DATA_CHUNK;

mod key {
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
}

/// CBOR major types of the items this module frames itself (RFC 8949 §3.1).
mod major {
    pub const UINT: u8 = 0;
    pub const BYTES: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const ARRAY: u8 = 4;
    pub const MAP: u8 = 5;
    pub const SIMPLE: u8 = 7;
}

const FALSE: u64 = 20;
const TRUE: u64 = 21;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerRepr<S, V> {
    kind: S,
    state: V,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "V: Deserialize<'de>"))]
struct LoopsRepr<V> {
    epoch: u64,
    batches_done: u64,
    epoch_finished: bool,
    global_step: u64,
    total_batches: u64,
    seed: u64,
    #[serde(
        default = "none",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    metric_state: Option<V>,
}

fn none<V>() -> Option<V> {
    None
}

/// A present field is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>, V: Deserialize<'de>>(d: D) -> Result<Option<V>, D::Error> {
    V::deserialize(d).map(Some)
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/// Writes `ckpt` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync of
/// the directory. Parent directories are created.
///
/// The temporary file is named `.{file name}.tmp-{pid}-{counter}` (see [`is_temporary_file`]) and is
/// removed on every error, so `path` holds either its previous content or the whole new checkpoint.
/// Errors are [`CheckpointError::Io`] naming `path` and the operation that failed; when only the final
/// fsync of the directory fails, the new file is already in place but may not survive a power loss.
pub fn write_checkpoint(path: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |op| {
        move |source| CheckpointError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let name = path.file_name().ok_or_else(|| {
        io("name")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path does not end in a file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    let (tmp, file) = create_temporary(dir, name).map_err(io("create a temporary file for"))?;
    let written = encode_checkpoint(BufWriter::with_capacity(WRITE_BUFFER, &file), ckpt, path)
        .and_then(|()| file.sync_all().map_err(io("fsync")));
    drop(file);
    if let Err(e) = written
        .and_then(|()| fs::rename(&tmp.path, path).map_err(io("rename the temporary file to")))
    {
        let _ = fs::remove_file(&tmp.path);
        return Err(e);
    }
    drop(tmp);
    sync_dir(dir).map_err(io("fsync the directory of"))
}

/// The temporary files this process is writing; [`is_in_flight`] tells them from leftovers.
fn in_flight() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    static IN_FLIGHT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `path` is the temporary file of a [`write_checkpoint`] under way in this process. Every other
/// temporary file (see [`is_temporary_file`]) is a leftover of an interrupted write, also one that a
/// crashed process with this process's id left behind.
pub(crate) fn is_in_flight(path: &Path) -> bool {
    in_flight().contains(path)
}

/// A temporary file registered as in flight until dropped.
struct Temporary {
    path: PathBuf,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        in_flight().remove(&self.path);
    }
}

/// Creates a new temporary file for `name` in `dir`. A name taken already (a leftover of a crashed
/// process that had this process's id) is skipped, not an error.
fn create_temporary(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(Temporary, File)> {
    let mut attempts = 0;
    loop {
        let path = dir.join(temporary_name(name));
        in_flight().insert(path.clone());
        let tmp = Temporary { path };
        match File::options().write(true).create_new(true).open(&tmp.path) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn temporary_name(name: &std::ffi::OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    tmp
}

/// Whether `name` (a file name, not a path) is a temporary file left by an interrupted
/// [`write_checkpoint`]: `.{file name}.tmp-{pid}-{counter}`. Such files are never checkpoints and may be
/// deleted once no writer is running.
///
/// ```
/// use fulgur_runtime::checkpoint::is_temporary_file;
///
/// assert!(is_temporary_file(".epoch=3-step=120.ckpt.tmp-4242-0"));
/// assert!(!is_temporary_file("epoch=3-step=120.ckpt"));
/// ```
pub fn is_temporary_file(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp-"))
        .and_then(|(original, suffix)| Some((original, suffix.split_once('-')?)))
        .is_some_and(|(original, (pid, counter))| {
            !original.is_empty() && digits(pid) && digits(counter)
        })
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Encodes `ckpt` into `writer` (magic, payload, trailer) and flushes it; `path_for_errors` only names
/// the destination in errors. [`write_checkpoint`] is this plus crash safety.
pub fn encode_checkpoint<W: Write>(
    writer: W,
    ckpt: &Checkpoint,
    path_for_errors: &Path,
) -> Result<(), CheckpointError> {
    encode(writer, ckpt, FORMAT_VERSION, path_for_errors)
}

fn encode<W: Write>(
    writer: W,
    ckpt: &Checkpoint,
    version: u32,
    path: &Path,
) -> Result<(), CheckpointError> {
    let mut sink = Sink {
        inner: writer,
        len: 0,
        hasher: Xxh3::new(),
    };
    sink.inner
        .write_all(&MAGIC)
        .and_then(|()| sink.checkpoint(ckpt, version))
        .and_then(|()| {
            let mut trailer = [0; TRAILER_LEN as usize];
            trailer[..8].copy_from_slice(&sink.hasher.digest().to_le_bytes());
            trailer[8..16].copy_from_slice(&sink.len.to_le_bytes());
            trailer[16..].copy_from_slice(&MAGIC);
            sink.inner.write_all(&trailer)
        })
        .and_then(|()| sink.inner.flush())
        .map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            op: "write",
            source,
        })
}

/// The payload's writer: counts its bytes and hashes the structure bytes.
struct Sink<W> {
    inner: W,
    len: u64,
    hasher: Xxh3,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Sink<W> {
    fn head(&mut self, major: u8, arg: u64) -> io::Result<()> {
        let mut buf = [0; 9];
        let len = match arg {
            0..=23 => {
                buf[0] = major << 5 | arg as u8;
                1
            }
            24..=0xff => {
                buf[0] = major << 5 | 24;
                buf[1] = arg as u8;
                2
            }
            0x100..=0xffff => {
                buf[0] = major << 5 | 25;
                buf[1..3].copy_from_slice(&(arg as u16).to_be_bytes());
                3
            }
            0x1_0000..=0xffff_ffff => {
                buf[0] = major << 5 | 26;
                buf[1..5].copy_from_slice(&(arg as u32).to_be_bytes());
                5
            }
            _ => {
                buf[0] = major << 5 | 27;
                buf[1..9].copy_from_slice(&arg.to_be_bytes());
                9
            }
        };
        self.write_all(&buf[..len])
    }

    fn text(&mut self, s: &str) -> io::Result<()> {
        self.head(major::TEXT, s.len() as u64)?;
        self.write_all(s.as_bytes())
    }

    fn map(&mut self, len: usize) -> io::Result<()> {
        self.head(major::MAP, len as u64)
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        ciborium::into_writer(value, &mut *self).map_err(|e| match e {
            ciborium::ser::Error::Io(e) => e,
            ciborium::ser::Error::Value(msg) => io::Error::new(io::ErrorKind::InvalidData, msg),
        })
    }

    fn checkpoint(&mut self, c: &Checkpoint, version: u32) -> io::Result<()> {
        let optional = [
            c.optimizer.is_some(),
            c.scheduler.is_some(),
            c.hyper_parameters.is_some(),
        ];
        self.map(11 + optional.iter().filter(|&&x| x).count())?;
        self.text(key::FORMAT)?;
        self.text(FORMAT_NAME)?;
        self.text(key::FORMAT_VERSION)?;
        self.head(major::UINT, version.into())?;
        self.text(key::FULGUR_VERSION)?;
        self.text(&c.fulgur_version)?;
        self.text(key::MODULE_TYPE)?;
        self.text(&c.module_type)?;
        self.text(key::EPOCH)?;
        self.head(major::UINT, c.epoch)?;
        self.text(key::GLOBAL_STEP)?;
        self.head(major::UINT, c.global_step)?;
        self.text(key::WEIGHTS_ONLY)?;
        self.head(major::SIMPLE, if c.weights_only { TRUE } else { FALSE })?;
        self.text(key::STATE_DICT)?;
        self.map(c.state_dict.len())?;
        for (name, tensor) in &c.state_dict {
            self.text(name)?;
            self.tensor(tensor)?;
        }
        if let Some(opt) = &c.optimizer {
            self.text(key::OPTIMIZER)?;
            self.optimizer(opt)?;
        }
        if let Some(s) = &c.scheduler {
            self.text(key::SCHEDULER)?;
            self.value(&SchedulerRepr {
                kind: &s.kind,
                state: &s.state,
            })?;
        }
        self.text(key::LOOPS)?;
        let l = &c.loops;
        self.value(&LoopsRepr {
            epoch: l.epoch,
            batches_done: l.batches_done,
            epoch_finished: l.epoch_finished,
            global_step: l.global_step,
            total_batches: l.total_batches,
            seed: l.seed,
            metric_state: l.metric_state.as_ref(),
        })?;
        self.text(key::CALLBACKS)?;
        self.value(&c.callbacks)?;
        if let Some(h) = &c.hyper_parameters {
            self.text(key::HYPER_PARAMETERS)?;
            self.value(h)?;
        }
        self.text(key::EXTRA)?;
        self.value(&c.extra)
    }

    fn optimizer(&mut self, o: &OptimizerState) -> io::Result<()> {
        self.map(5)?;
        self.text(key::KIND)?;
        self.text(&o.kind)?;
        self.text(key::STEP)?;
        self.head(major::UINT, o.step)?;
        self.text(key::LR)?;
        self.value(&o.lr)?;
        self.text(key::CONFIG)?;
        self.value(&o.config)?;
        self.text(key::PARAMS)?;
        self.map(o.params.len())?;
        for (name, slots) in &o.params {
            self.text(name)?;
            self.map(slots.len())?;
            for (slot, tensor) in slots {
                self.text(slot)?;
                self.tensor(tensor)?;
            }
        }
        Ok(())
    }

    fn tensor(&mut self, t: &TensorData) -> io::Result<()> {
        self.map(4)?;
        self.text(key::DTYPE)?;
        self.text(dtype_name(t.dtype()))?;
        self.text(key::SHAPE)?;
        self.head(major::ARRAY, t.shape().len() as u64)?;
        for &dim in t.shape() {
            self.head(major::UINT, dim as u64)?;
        }
        self.text(key::DATA)?;
        let bytes = t.le_bytes();
        self.head(major::BYTES, bytes.len() as u64)?;
        let digest = write_hashed(&mut self.inner, &bytes)?;
        self.len += bytes.len() as u64;
        self.text(key::XXH3)?;
        self.head(major::UINT, digest)
    }
}

/// Writes tensor bytes and returns their xxh3-64. Large tensors are hashed on a second thread while the
/// bytes are copied, small ones piece by piece just before each piece is copied (while it is in cache):
/// either way hashing costs next to nothing on top of the copy.
fn write_hashed(writer: &mut impl Write, bytes: &[u8]) -> io::Result<u64> {
    if hash_in_parallel(bytes.len(), PARALLEL_WRITE_HASH_MIN) {
        let written = thread::scope(|s| {
            let hasher = thread::Builder::new()
                .spawn_scoped(s, || xxh3_64(bytes))
                .ok()?;
            let written = writer.write_all(bytes);
            Some(written.map(|()| joined(hasher)))
        });
        if let Some(written) = written {
            return written;
        }
    }
    let mut hasher = Xxh3::new();
    for chunk in bytes.chunks(DATA_CHUNK) {
        hasher.update(chunk);
        writer.write_all(chunk)?;
    }
    Ok(hasher.digest())
}

/// Reads `len` bytes of tensor data into a new buffer and returns them with their xxh3-64.
///
/// A large tensor goes into zeroed memory (fresh pages from the OS: zeroing is free) piece by piece while
/// a second thread hashes the pieces already read. A smaller one goes into uninitialised capacity
/// (zeroing recycled heap memory would cost about as much as the read) and is hashed right after, while
/// it is still in cache.
fn read_hashed<R: Read>(reader: &mut R, len: usize) -> io::Result<(Vec<u8>, u64)> {
    if hash_in_parallel(len, PARALLEL_READ_HASH_MIN) {
        let mut buf = vec![0; len];
        if let Some(read) = read_hashing_on_a_thread(reader, &mut buf) {
            return read.map(|digest| (buf, digest));
        }
    }
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let digest = xxh3_64(&buf);
    Ok((buf, digest))
}

/// `None` when no thread could be started, before anything was read.
fn read_hashing_on_a_thread(reader: &mut impl Read, buf: &mut [u8]) -> Option<io::Result<u64>> {
    thread::scope(|s| {
        let (sender, receiver) = mpsc::channel::<&[u8]>();
        let hasher = thread::Builder::new()
            .spawn_scoped(s, move || {
                let mut hasher = Xxh3::new();
                receiver.iter().for_each(|piece| hasher.update(piece));
                hasher.digest()
            })
            .ok()?;
        let read = buf.chunks_mut(DATA_CHUNK).try_for_each(|piece| {
            reader.read_exact(piece)?;
            // A send fails only when the hasher panicked; `joined` passes that panic on.
            let _ = sender.send(piece);
            Ok(())
        });
        drop(sender);
        let digest = joined(hasher);
        Some(read.map(|()| digest))
    })
}

fn hash_in_parallel(len: usize, min: usize) -> bool {
    static MULTICORE: OnceLock<bool> = OnceLock::new();
    len >= min
        && *MULTICORE.get_or_init(|| thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

fn joined<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

/// Reads and verifies the checkpoint at `path`.
///
/// Errors: [`CheckpointError::Io`] when the file cannot be opened or read, [`CheckpointError::NotAFile`]
/// when `path` is a directory, a FIFO, a socket or a device (checked before opening it, so a FIFO never
/// blocks), [`CheckpointError::NotACheckpoint`] when it does not start with the checkpoint magic,
/// [`CheckpointError::UnsupportedVersion`] when a newer fulgur wrote it, and [`CheckpointError::Corrupt`]
/// naming the damaged part (truncation, malformed CBOR, a checksum mismatch in a tensor or the header).
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
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
pub fn read_checkpoint_header(path: &Path) -> Result<CheckpointHeader, CheckpointError> {
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
    let mut src = open_payload(reader, len, path_for_errors)?;
    let payload_len = src.remaining;
    let ckpt = src.checkpoint();
    if let Some((found, alternative)) = src.newer.take() {
        return Err(src.newer_version(found, alternative, ckpt, payload_len));
    }
    let ckpt = ckpt?;
    src.trailer(payload_len)?;
    Ok(ckpt)
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
    })
}

/// The payload's reader: never reads past the payload, tracks the file offset for messages and hashes the
/// structure bytes.
struct Source<'p, R> {
    inner: R,
    remaining: u64,
    pos: u64,
    hasher: Xxh3,
    path: &'p Path,
    /// Set when `format_version` is newer than this build's and the payload is read on as this build's
    /// version: the version read and the hash the structure would have with this build's version in
    /// its place.
    newer: Option<(u64, Xxh3)>,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?.min(max);
        self.hasher.update(&buf[..n]);
        if let Some((_, alternative)) = &mut self.newer {
            alternative.update(&buf[..n]);
        }
        self.consumed(n);
        Ok(n)
    }
}

/// Accumulates the payload's entries; each is set once.
#[derive(Default)]
struct Entries {
    fulgur_version: Option<String>,
    module_type: Option<String>,
    epoch: Option<u64>,
    global_step: Option<u64>,
    weights_only: Option<bool>,
    state_dict: Option<BTreeMap<String, TensorData>>,
    optimizer: Option<OptimizerState>,
    scheduler: Option<SchedulerState>,
    loops: Option<LoopState>,
    callbacks: Option<BTreeMap<String, Value>>,
    hyper_parameters: Option<Value>,
    extra: Option<BTreeMap<String, Value>>,
}

impl<R: Read> Source<'_, R> {
    fn consumed(&mut self, n: usize) {
        self.remaining = self.remaining.saturating_sub(n as u64);
        self.pos += n as u64;
    }

    fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn read_error(&self, e: io::Error, what: &str) -> CheckpointError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                self.corrupt(format!("it is truncated: it ends inside {what}"))
            }
            _ => CheckpointError::Io {
                path: self.path.to_path_buf(),
                op: "read",
                source: e,
            },
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), CheckpointError> {
        self.read_exact(buf).map_err(|e| self.read_error(e, what))
    }

    /// A CBOR head: `(major type, argument)`.
    fn head(&mut self, what: &str) -> Result<(u8, u64), CheckpointError> {
        let at = self.pos;
        let mut initial = [0];
        self.fill(&mut initial, what)?;
        let (major, info) = (initial[0] >> 5, initial[0] & 0x1f);
        let width = match info {
            0..=23 => return Ok((major, info.into())),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Err(self.corrupt(format!("{what} at byte {at} has an indefinite length"))),
            _ => return Err(self.corrupt(format!("malformed CBOR at byte {at} in {what}"))),
        };
        let mut arg = [0; 8];
        self.fill(&mut arg[8 - width..], what)?;
        Ok((major, u64::from_be_bytes(arg)))
    }

    fn expect(&mut self, expected: u8, what: &str) -> Result<u64, CheckpointError> {
        let at = self.pos;
        let (found, arg) = self.head(what)?;
        if found != expected {
            return Err(self.corrupt(format!(
                "expected {} for {what} at byte {at}, found {}",
                major_name(expected),
                major_name(found)
            )));
        }
        Ok(arg)
    }

    /// The length of a string about to be read, checked against what is left of the payload.
    fn length(&self, claimed: u64, what: &str) -> Result<usize, CheckpointError> {
        match usize::try_from(claimed) {
            Ok(len) if claimed <= self.remaining => Ok(len),
            _ => Err(self.corrupt(format!(
                "{what} claims {claimed} bytes, but only {} remain in the payload (truncated?)",
                self.remaining
            ))),
        }
    }

    fn uint(&mut self, what: &str) -> Result<u64, CheckpointError> {
        self.expect(major::UINT, what)
    }

    fn bool(&mut self, what: &str) -> Result<bool, CheckpointError> {
        match self.expect(major::SIMPLE, what)? {
            TRUE => Ok(true),
            FALSE => Ok(false),
            _ => Err(self.corrupt(format!("{what} is not a bool"))),
        }
    }

    fn text(&mut self, what: &str) -> Result<String, CheckpointError> {
        let claimed = self.expect(major::TEXT, what)?;
        let mut buf = vec![0; self.length(claimed, what)?];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| self.corrupt(format!("{what} is not valid UTF-8")))
    }

    fn map_len(&mut self, what: &str) -> Result<u64, CheckpointError> {
        self.expect(major::MAP, what)
    }

    /// Any serde value through ciborium; it grows strings as it reads them, so hostile lengths are bounded
    /// by `remaining` too.
    fn value<T: DeserializeOwned>(&mut self, what: &str) -> Result<T, CheckpointError> {
        let at = self.pos;
        let result = ciborium::from_reader(&mut *self);
        result.map_err(|e| match e {
            ciborium::de::Error::Io(e) => self.read_error(e, what),
            ciborium::de::Error::Syntax(offset) => self.corrupt(format!(
                "malformed CBOR at byte {} in {what}",
                at + offset as u64
            )),
            ciborium::de::Error::Semantic(_, msg) => {
                self.corrupt(format!("{what} is malformed: {msg}"))
            }
            ciborium::de::Error::RecursionLimitExceeded => {
                self.corrupt(format!("{what} is nested too deeply"))
            }
        })
    }

    /// A map key, refused when repeated.
    fn key(&mut self, seen: &mut BTreeSet<String>, what: &str) -> Result<String, CheckpointError> {
        let key = self.text(&format!("a key of {what}"))?;
        if !seen.insert(key.clone()) {
            return Err(self.corrupt(format!("{what} has the key `{key}` twice")));
        }
        Ok(key)
    }

    /// The payload's map header, `format` and `format_version`, checked; returns the number of entries.
    ///
    /// A newer version is refused at once for a header read; a full read goes on as this build's version
    /// (see [`decode_checkpoint`]) so that a damaged version field can be told from a newer file.
    fn preamble(&mut self, header_only: bool) -> Result<u64, CheckpointError> {
        let entries = self.map_len("the payload")?;
        let not_a_checkpoint = |reason| CheckpointError::NotACheckpoint {
            path: self.path.to_path_buf(),
            reason,
        };
        if self.text("the first key")? != key::FORMAT {
            return Err(self.corrupt("the payload does not start with `format`"));
        }
        let name = self.text("`format`")?;
        if name != FORMAT_NAME {
            return Err(not_a_checkpoint(format!(
                "its format is `{name}`, not `{FORMAT_NAME}`"
            )));
        }
        if self.text("the second key")? != key::FORMAT_VERSION {
            return Err(self.corrupt("the payload's second key is not `format_version`"));
        }
        let before = self.hasher.clone();
        let version = self.uint("`format_version`")?;
        if version > FORMAT_VERSION.into() {
            if header_only {
                return Err(self.unsupported(version, false));
            }
            // Writers encode the version in one byte (a CBOR integer below 24).
            const _: () = assert!(FORMAT_VERSION < 24);
            let mut alternative = before;
            alternative.update(&[FORMAT_VERSION as u8]);
            self.newer = Some((version, alternative));
        }
        if version == 0 {
            return Err(self.corrupt("its `format_version` reads 0, a version that does not exist"));
        }
        Ok(entries)
    }

    fn unsupported(&self, found: u64, intact: bool) -> CheckpointError {
        CheckpointError::UnsupportedVersion {
            path: self.path.to_path_buf(),
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
            intact,
        }
    }

    /// The error for a file whose `format_version` (`found`) is newer than this build's, once the rest
    /// was read as this build's version (`decoded`): damage when the checksums hold only with this
    /// build's version in place of the one read, a newer file when they hold as read, and either when
    /// the rest does not decode.
    fn newer_version(
        &mut self,
        found: u64,
        alternative: Xxh3,
        decoded: Result<Checkpoint, CheckpointError>,
        payload_len: u64,
    ) -> CheckpointError {
        let stored = match decoded.and_then(|_| self.stored_digest(payload_len)) {
            Ok(stored) => stored,
            Err(e @ CheckpointError::Io { .. }) => return e,
            Err(_) => return self.unsupported(found, false),
        };
        if stored == self.hasher.digest() {
            self.unsupported(found, true)
        } else if stored == alternative.digest() {
            self.corrupt(format!(
                "its `format_version` reads {found}, but the file's checksums hold for version \
                 {FORMAT_VERSION}: the version field is damaged"
            ))
        } else {
            self.unsupported(found, false)
        }
    }

    /// The scalar entries written before the tensors, up to the first other entry.
    fn header(&mut self) -> Result<CheckpointHeader, CheckpointError> {
        let e = self.entries(true)?;
        let missing =
            |key: &str| self.corrupt(format!("the payload has no `{key}` before the tensors"));
        Ok(CheckpointHeader {
            fulgur_version: e
                .fulgur_version
                .ok_or_else(|| missing(key::FULGUR_VERSION))?,
            module_type: e.module_type.ok_or_else(|| missing(key::MODULE_TYPE))?,
            epoch: e.epoch.ok_or_else(|| missing(key::EPOCH))?,
            global_step: e.global_step.ok_or_else(|| missing(key::GLOBAL_STEP))?,
            weights_only: e.weights_only.ok_or_else(|| missing(key::WEIGHTS_ONLY))?,
        })
    }

    /// The payload's entries; with `header_only`, only the scalars before the first other entry.
    fn entries(&mut self, header_only: bool) -> Result<Entries, CheckpointError> {
        let entries = self.preamble(header_only)?;
        let mut e = Entries::default();
        let mut seen = BTreeSet::from([key::FORMAT.to_string(), key::FORMAT_VERSION.to_string()]);
        for _ in 2..entries {
            let key = self.key(&mut seen, "the payload")?;
            let what = format!("`{key}`");
            match key.as_str() {
                key::FULGUR_VERSION => e.fulgur_version = Some(self.text(&what)?),
                key::MODULE_TYPE => e.module_type = Some(self.text(&what)?),
                key::EPOCH => e.epoch = Some(self.uint(&what)?),
                key::GLOBAL_STEP => e.global_step = Some(self.uint(&what)?),
                key::WEIGHTS_ONLY => e.weights_only = Some(self.bool(&what)?),
                _ if header_only => break,
                key::STATE_DICT => e.state_dict = Some(self.state_dict()?),
                key::OPTIMIZER => e.optimizer = Some(self.optimizer()?),
                key::SCHEDULER => {
                    let s: SchedulerRepr<String, Value> = self.value(&what)?;
                    e.scheduler = Some(SchedulerState {
                        kind: s.kind,
                        state: s.state,
                    });
                }
                key::LOOPS => {
                    let l: LoopsRepr<Value> = self.value(&what)?;
                    e.loops = Some(LoopState {
                        epoch: l.epoch,
                        batches_done: l.batches_done,
                        epoch_finished: l.epoch_finished,
                        global_step: l.global_step,
                        total_batches: l.total_batches,
                        seed: l.seed,
                        metric_state: l.metric_state,
                    });
                }
                key::CALLBACKS => e.callbacks = Some(self.value(&what)?),
                key::HYPER_PARAMETERS => e.hyper_parameters = Some(self.value(&what)?),
                key::EXTRA => e.extra = Some(self.value(&what)?),
                _ => return Err(self.corrupt(format!("the payload has an unknown key {what}"))),
            }
        }
        Ok(e)
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, CheckpointError> {
        let e = self.entries(false)?;
        let missing = |key: &str| self.corrupt(format!("the payload has no `{key}`"));
        Ok(Checkpoint {
            fulgur_version: e
                .fulgur_version
                .ok_or_else(|| missing(key::FULGUR_VERSION))?,
            epoch: e.epoch.ok_or_else(|| missing(key::EPOCH))?,
            global_step: e.global_step.ok_or_else(|| missing(key::GLOBAL_STEP))?,
            weights_only: e.weights_only.ok_or_else(|| missing(key::WEIGHTS_ONLY))?,
            state_dict: e.state_dict.ok_or_else(|| missing(key::STATE_DICT))?,
            optimizer: e.optimizer,
            scheduler: e.scheduler,
            loops: e.loops.ok_or_else(|| missing(key::LOOPS))?,
            callbacks: e.callbacks.ok_or_else(|| missing(key::CALLBACKS))?,
            hyper_parameters: e.hyper_parameters,
            module_type: e.module_type.ok_or_else(|| missing(key::MODULE_TYPE))?,
            extra: e.extra.ok_or_else(|| missing(key::EXTRA))?,
        })
    }

    fn state_dict(&mut self) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
        let what = "`state_dict`";
        let mut tensors = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            let name = self.key(&mut seen, what)?;
            let tensor = self.tensor(&format!("tensor `{name}`"))?;
            tensors.insert(name, tensor);
        }
        Ok(tensors)
    }

    fn optimizer(&mut self) -> Result<OptimizerState, CheckpointError> {
        let what = "`optimizer`";
        let (mut kind, mut step, mut lr, mut config, mut params) = (None, None, None, None, None);
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            match self.key(&mut seen, what)?.as_str() {
                key::KIND => kind = Some(self.text("the optimizer's `kind`")?),
                key::STEP => step = Some(self.uint("the optimizer's `step`")?),
                key::LR => lr = Some(self.value("the optimizer's `lr`")?),
                key::CONFIG => config = Some(self.value("the optimizer's `config`")?),
                key::PARAMS => params = Some(self.optimizer_params()?),
                other => return Err(self.corrupt(format!("{what} has an unknown key `{other}`"))),
            }
        }
        let missing = |key: &str| self.corrupt(format!("{what} has no `{key}`"));
        Ok(OptimizerState {
            kind: kind.ok_or_else(|| missing(key::KIND))?,
            step: step.ok_or_else(|| missing(key::STEP))?,
            lr: lr.ok_or_else(|| missing(key::LR))?,
            config: config.ok_or_else(|| missing(key::CONFIG))?,
            params: params.ok_or_else(|| missing(key::PARAMS))?,
        })
    }

    fn optimizer_params(
        &mut self,
    ) -> Result<BTreeMap<String, BTreeMap<String, TensorData>>, CheckpointError> {
        let what = "the optimizer's `params`";
        let mut params = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            let name = self.key(&mut seen, what)?;
            let slots_what = format!("the optimizer state of `{name}`");
            let mut slots = BTreeMap::new();
            let mut seen_slots = BTreeSet::new();
            for _ in 0..self.map_len(&slots_what)? {
                let slot = self.key(&mut seen_slots, &slots_what)?;
                let tensor = self.tensor(&format!("optimizer state `{name}`.`{slot}`"))?;
                slots.insert(slot, tensor);
            }
            params.insert(name, slots);
        }
        Ok(params)
    }

    fn tensor(&mut self, what: &str) -> Result<TensorData, CheckpointError> {
        let (mut dtype, mut shape, mut data, mut stored) = (None, None::<Vec<usize>>, None, None);
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            match self.key(&mut seen, what)?.as_str() {
                key::DTYPE => {
                    let name = self.text(&format!("the dtype of {what}"))?;
                    dtype = Some(match name.as_str() {
                        "f32" => DType::F32,
                        "f64" => DType::F64,
                        _ => {
                            return Err(
                                self.corrupt(format!("{what} has the unknown dtype `{name}`"))
                            )
                        }
                    });
                }
                key::SHAPE => {
                    let shape_what = format!("the shape of {what}");
                    let rank = self.expect(major::ARRAY, &shape_what)?;
                    let mut dims = Vec::new();
                    for _ in 0..rank {
                        let dim = self.uint(&shape_what)?;
                        dims.push(usize::try_from(dim).map_err(|_| {
                            self.corrupt(format!(
                                "{what} has a dimension of {dim}, too large for this machine"
                            ))
                        })?);
                    }
                    shape = Some(dims);
                }
                key::DATA => {
                    let claimed = self.expect(major::BYTES, what)?;
                    let len = self.length(claimed, what)?;
                    if let (Some(dtype), Some(shape)) = (dtype, &shape) {
                        check_size(dtype, shape, len)
                            .map_err(|e| self.corrupt(format!("{what} {e}")))?;
                    }
                    data = Some(self.data(len, what)?);
                }
                key::XXH3 => stored = Some(self.uint(&format!("the checksum of {what}"))?),
                other => return Err(self.corrupt(format!("{what} has an unknown key `{other}`"))),
            }
        }
        let missing = |key: &str| self.corrupt(format!("{what} has no `{key}`"));
        let dtype = dtype.ok_or_else(|| missing(key::DTYPE))?;
        let shape = shape.ok_or_else(|| missing(key::SHAPE))?;
        let (bytes, computed) = data.ok_or_else(|| missing(key::DATA))?;
        let stored = stored.ok_or_else(|| missing(key::XXH3))?;
        let tensor = TensorData::from_le_bytes(dtype, shape, bytes)
            .map_err(|e| self.corrupt(format!("{what} {e}")))?;
        if computed != stored {
            return Err(self.corrupt(format!("checksum mismatch in {what}")));
        }
        Ok(tensor)
    }

    /// Tensor bytes go straight from the reader into their final buffer; they are not part of the structure
    /// hash.
    fn data(&mut self, len: usize, what: &str) -> Result<(Vec<u8>, u64), CheckpointError> {
        let data = read_hashed(&mut self.inner, len).map_err(|e| self.read_error(e, what))?;
        self.consumed(len);
        Ok(data)
    }

    fn trailer(mut self, payload_len: u64) -> Result<(), CheckpointError> {
        if self.stored_digest(payload_len)? != self.hasher.digest() {
            return Err(
                self.corrupt("checksum mismatch in the header (the payload outside tensor data)")
            );
        }
        Ok(())
    }

    /// Reads and checks the trailer; returns the structure checksum it stores.
    fn stored_digest(&mut self, payload_len: u64) -> Result<u64, CheckpointError> {
        if self.remaining != 0 {
            return Err(self.corrupt(format!(
                "the payload ends at byte {}, but the trailer starts at byte {}",
                self.pos,
                self.pos + self.remaining
            )));
        }
        let mut trailer = [0; TRAILER_LEN as usize];
        self.inner
            .read_exact(&mut trailer)
            .map_err(|e| self.read_error(e, "the trailer"))?;
        let field = |range: std::ops::Range<usize>| {
            let mut le = [0; 8];
            le.copy_from_slice(&trailer[range]);
            u64::from_le_bytes(le)
        };
        if trailer[16..] != MAGIC {
            return Err(self.corrupt("its trailer is damaged (it does not end with b\"FULGURCK\")"));
        }
        if field(8..16) != payload_len {
            return Err(self.corrupt(format!(
                "its trailer gives a payload of {} bytes, but the payload holds {payload_len}",
                field(8..16)
            )));
        }
        Ok(field(0..8))
    }
}

fn check_size(dtype: DType, shape: &[usize], len: usize) -> Result<(), TensorSizeError> {
    match dtype.byte_len(shape) {
        Some(expected) if expected == len => Ok(()),
        expected => Err(TensorSizeError {
            dtype,
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            found: len,
        }),
    }
}

fn major_name(major: u8) -> &'static str {
    match major {
        0 => "an unsigned integer",
        1 => "a negative integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        5 => "a map",
        6 => "a tag",
        _ => "a simple value or float",
    }
}

/// The encoding of a checkpoint with no tensors whose `state_dict` entry comes right after
/// `format_version`, before the scalars: a valid file (entries may come in any order) that
/// [`read_checkpoint_header`] cannot rank. For tests of the readers that must still accept it.
#[cfg(test)]
pub(crate) fn scalars_after_tensors(global_step: u64) -> Vec<u8> {
    let mut ckpt = Checkpoint::new("reordered");
    ckpt.global_step = global_step;
    let mut bytes = Vec::new();
    encode_checkpoint(&mut bytes, &ckpt, Path::new("mem")).unwrap();
    let entry = [
        &[0x60 | key::STATE_DICT.len() as u8][..],
        key::STATE_DICT.as_bytes(),
        &[0xa0],
    ]
    .concat();
    let at = bytes.windows(entry.len()).position(|w| w == entry).unwrap();
    bytes.drain(at..at + entry.len());
    let version = [
        &[0x60 | key::FORMAT_VERSION.len() as u8][..],
        key::FORMAT_VERSION.as_bytes(),
        &[1],
    ]
    .concat();
    let after = bytes
        .windows(version.len())
        .position(|w| w == version)
        .unwrap()
        + version.len();
    bytes.splice(after..after, entry);
    // No tensor data: the structure checksum covers the whole payload.
    let end = bytes.len() - TRAILER_LEN as usize;
    let digest = xxh3_64(&bytes[MAGIC.len()..end]);
    bytes[end..end + 8].copy_from_slice(&digest.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "memory.ckpt";

    fn full_checkpoint() -> Checkpoint {
        let mut c = Checkpoint::new("my_crate::Net");
        c.epoch = 3;
        c.global_step = 1234;
        let nan_payload = f32::from_bits(0x7fc0_1234);
        let special = vec![
            1.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            nan_payload,
            f32::from_bits(1),
        ];
        c.state_dict.insert(
            "net.0.weight".into(),
            TensorData::from_f32(vec![2, 3], special),
        );
        c.state_dict.insert(
            "net.0.bias".into(),
            TensorData::from_f32(vec![2], vec![0.5, -0.25]),
        );
        c.state_dict.insert(
            "net.1.momentum".into(),
            TensorData::from_f64(vec![], vec![0.1]),
        );
        c.state_dict.insert(
            "net.2.empty".into(),
            TensorData::from_f32(vec![0, 4], vec![]),
        );
        let mut slots = BTreeMap::new();
        slots.insert(
            "exp_avg".into(),
            TensorData::from_f32(vec![2, 3], vec![0.125; 6]),
        );
        slots.insert(
            "exp_avg_sq".into(),
            TensorData::from_f64(vec![2, 3], vec![f64::MIN_POSITIVE; 6]),
        );
        c.optimizer = Some(OptimizerState {
            kind: "adam".into(),
            step: 1234,
            lr: 1e-3,
            config: Value::Map(vec![
                (
                    Value::Text("betas".into()),
                    Value::Array(vec![Value::Float(0.9), Value::Float(0.999)]),
                ),
                (Value::Text("eps".into()), Value::Float(1e-8)),
            ]),
            params: BTreeMap::from([("net.0.weight".to_string(), slots)]),
        });
        c.scheduler = Some(SchedulerState {
            kind: "step_lr".into(),
            state: Value::Integer(7.into()),
        });
        c.loops = LoopState {
            epoch: 3,
            batches_done: 17,
            epoch_finished: false,
            global_step: 1234,
            total_batches: 80,
            seed: u64::MAX,
            metric_state: Some(Value::Map(vec![(
                Value::Text("loss".into()),
                Value::Float(2.5),
            )])),
        };
        c.callbacks.insert(
            "ModelCheckpoint{monitor=val_loss}".into(),
            Value::Map(vec![
                (
                    Value::Text("best_model_path".into()),
                    Value::Text("ckpts/epoch=2.ckpt".into()),
                ),
                (Value::Text("best_model_score".into()), Value::Float(0.25)),
                (Value::Text("k".into()), Value::Integer((-3).into())),
                (Value::Text("raw".into()), Value::Bytes(vec![0, 1, 255])),
                (
                    Value::Text("tagged".into()),
                    Value::Tag(
                        42,
                        Box::new(Value::Array(vec![Value::Bool(true), Value::Null])),
                    ),
                ),
            ]),
        );
        c.hyper_parameters = Some(Value::Map(vec![(
            Value::Text("hidden".into()),
            Value::Integer(64.into()),
        )]));
        c.extra
            .insert("note".into(), Value::Text("from on_save_checkpoint".into()));
        c
    }

    /// Tensors compared by dtype, shape and bytes (a read tensor holds bytes, a built one holds values).
    fn normalized(c: &Checkpoint) -> Checkpoint {
        let norm = |t: &TensorData| {
            TensorData::from_le_bytes(t.dtype(), t.shape().to_vec(), t.le_bytes().into_owned())
                .unwrap()
        };
        let mut c = c.clone();
        c.state_dict.values_mut().for_each(|t| *t = norm(t));
        if let Some(o) = &mut c.optimizer {
            o.params
                .values_mut()
                .flat_map(|s| s.values_mut())
                .for_each(|t| *t = norm(t));
        }
        c
    }

    fn encoded(c: &Checkpoint) -> Vec<u8> {
        let mut out = Vec::new();
        encode_checkpoint(&mut out, c, Path::new(PATH)).unwrap();
        out
    }

    fn decoded(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        decode_checkpoint(bytes, bytes.len() as u64, Path::new(PATH))
    }

    fn position(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    fn corrupt_reason(result: Result<Checkpoint, CheckpointError>) -> String {
        match result {
            Err(CheckpointError::Corrupt { path, reason }) => {
                assert_eq!(path, Path::new(PATH));
                reason
            }
            other => panic!("expected a Corrupt error, got {other:?}"),
        }
    }

    #[test]
    fn every_field_round_trips_bit_exact_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/epoch=3.ckpt");
        let ckpt = full_checkpoint();
        write_checkpoint(&path, &ckpt).unwrap();
        let back = read_checkpoint(&path).unwrap();
        assert_eq!(normalized(&back), normalized(&ckpt));
        let bits: Vec<u32> = back.state_dict["net.0.weight"]
            .as_f32()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(
            bits,
            [
                0x3f80_0000,
                0x8000_0000,
                0x7f80_0000,
                0xff80_0000,
                0x7fc0_1234,
                1
            ]
        );
        assert_eq!(
            back.state_dict["net.1.momentum"].as_f64().unwrap()[..],
            [0.1]
        );
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["epoch=3.ckpt"], "no temporary file is left behind");
    }

    #[test]
    fn a_file_with_its_scalars_after_the_tensors_loads_but_has_no_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ckpt");
        fs::write(&path, scalars_after_tensors(7)).unwrap();
        assert_eq!(read_checkpoint(&path).unwrap().global_step, 7);
        let err = read_checkpoint_header(&path).unwrap_err().to_string();
        assert!(err.contains("before the tensors"), "{err}");
    }

    #[test]
    fn the_header_reads_without_the_tensors_and_errors_like_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ckpt");
        let ckpt = full_checkpoint();
        write_checkpoint(&path, &ckpt).unwrap();
        let h = read_checkpoint_header(&path).unwrap();
        assert_eq!(
            (h.epoch, h.global_step, h.weights_only, &h.module_type[..]),
            (ckpt.epoch, ckpt.global_step, false, &ckpt.module_type[..])
        );
        // Cut right after the header: the tensors are not needed.
        let bytes = fs::read(&path).unwrap();
        // (The trailer length is subtracted from the file size, so keep that many bytes more.)
        let cut = position(&bytes, key::STATE_DICT.as_bytes())
            + key::STATE_DICT.len()
            + TRAILER_LEN as usize;
        fs::write(&path, &bytes[..cut]).unwrap();
        assert_eq!(read_checkpoint_header(&path).unwrap(), h);
        assert!(read_checkpoint(&path).is_err());
        fs::write(&path, b"FULGURCK").unwrap();
        assert!(matches!(
            read_checkpoint_header(&path),
            Err(CheckpointError::Corrupt { .. })
        ));
        fs::write(&path, b"PK\x03\x04 a zip file").unwrap();
        assert!(matches!(
            read_checkpoint_header(&path),
            Err(CheckpointError::NotACheckpoint { .. })
        ));
    }

    #[test]
    fn weights_only_round_trips_and_keeps_present_nulls() {
        let mut ckpt = Checkpoint::new("Net");
        ckpt.weights_only = true;
        ckpt.state_dict.insert(
            "w".into(),
            TensorData::from_f32(vec![3], vec![1.0, 2.0, 3.0]),
        );
        let back = decoded(&encoded(&ckpt)).unwrap();
        assert_eq!(normalized(&back), normalized(&ckpt));
        assert!(
            back.optimizer.is_none() && back.scheduler.is_none() && back.hyper_parameters.is_none()
        );

        ckpt.hyper_parameters = Some(Value::Null);
        ckpt.loops.metric_state = Some(Value::Null);
        let back = decoded(&encoded(&ckpt)).unwrap();
        assert_eq!(back.hyper_parameters, Some(Value::Null));
        assert_eq!(back.loops.metric_state, Some(Value::Null));
    }

    #[test]
    fn tensor_data_is_one_cbor_byte_string() {
        let values: Vec<f32> = (0..100).map(|i| i as f32 * 1.5).collect();
        let mut ckpt = Checkpoint::new("Net");
        ckpt.state_dict
            .insert("w".into(), TensorData::from_f32(vec![100], values.clone()));
        let file = encoded(&ckpt);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = position(&file, &raw);
        assert_eq!(
            file[at - 3..at],
            [0x59, 0x01, 0x90],
            "a byte string head of 400 bytes precedes the data"
        );
        assert_eq!(file[..8], MAGIC);
        assert_eq!(file[file.len() - 8..], MAGIC);
        let payload_len =
            u64::from_le_bytes(file[file.len() - 16..file.len() - 8].try_into().unwrap());
        assert_eq!(payload_len, file.len() as u64 - 32);
    }

    #[test]
    fn damaged_tensor_data_names_the_tensor() {
        let ckpt = full_checkpoint();
        let mut file = encoded(&ckpt);
        let weight = ckpt.state_dict["net.0.weight"].le_bytes().into_owned();
        let at = position(&file, &weight);
        file[at + 5] ^= 0x10;
        let reason = corrupt_reason(decoded(&file));
        assert_eq!(reason, "checksum mismatch in tensor `net.0.weight`");
        let message = decoded(&file).unwrap_err().to_string();
        assert_eq!(
            message,
            "checkpoint `memory.ckpt` is damaged: checksum mismatch in tensor `net.0.weight`"
        );
    }

    #[test]
    fn damaged_optimizer_state_names_parameter_and_slot() {
        let ckpt = full_checkpoint();
        let mut file = encoded(&ckpt);
        let exp_avg = ckpt.optimizer.as_ref().unwrap().params["net.0.weight"]["exp_avg"]
            .le_bytes()
            .into_owned();
        let at = position(&file, &exp_avg);
        file[at] ^= 1;
        assert_eq!(
            corrupt_reason(decoded(&file)),
            "checksum mismatch in optimizer state `net.0.weight`.`exp_avg`"
        );
    }

    #[test]
    fn damaged_header_is_caught_by_the_trailer_checksum() {
        let mut file = encoded(&full_checkpoint());
        let at = position(&file, b"my_crate::Net");
        file[at] = b'M';
        assert_eq!(
            corrupt_reason(decoded(&file)),
            "checksum mismatch in the header (the payload outside tensor data)"
        );
    }

    #[test]
    fn foreign_and_empty_files_are_not_checkpoints() {
        for (bytes, expected) in [
            (&b""[..], "it is only 0 bytes long"),
            (
                b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
                "it starts with b\"PK\\x03\\x04\\x14\\x00\\x00\\x00\" instead of b\"FULGURCK\"",
            ),
        ] {
            match decoded(bytes) {
                Err(CheckpointError::NotACheckpoint { reason, .. }) => assert_eq!(reason, expected),
                other => panic!("expected NotACheckpoint, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_and_extended_files_are_damaged() {
        let ckpt = full_checkpoint();
        let file = encoded(&ckpt);
        let short = corrupt_reason(decoded(&file[..file.len() - 1]));
        assert_eq!(short, "it is truncated: it ends inside `extra`");

        let weight = ckpt.state_dict["net.0.weight"].le_bytes().into_owned();
        // The trailer is expected in the last 24 bytes, so the payload seems to end 24 bytes before the cut.
        let cut = corrupt_reason(decoded(&file[..position(&file, &weight) + 10 + 24]));
        assert_eq!(
            cut,
            "tensor `net.0.weight` claims 24 bytes, but only 10 remain in the payload (truncated?)"
        );

        let mut long = file.clone();
        long.extend([0; 5]);
        let end = file.len() - 24;
        assert_eq!(
            corrupt_reason(decoded(&long)),
            format!(
                "the payload ends at byte {end}, but the trailer starts at byte {}",
                end + 5
            )
        );
    }

    #[test]
    fn tensor_bytes_that_do_not_fit_dtype_and_shape_are_damaged() {
        let ckpt = full_checkpoint();
        let mut file = encoded(&ckpt);
        let at = position(&file, b"\x65shape\x82\x02\x03");
        file[at + 8] = 2;
        assert_eq!(
            corrupt_reason(decoded(&file)),
            "tensor `net.0.weight` holds 24 bytes, but a f32 tensor of shape [2, 2] needs 16"
        );
    }

    /// A payload prefix with valid `format` and `format_version`, then whatever `rest` writes, then junk
    /// and a trailer.
    fn crafted(rest: impl FnOnce(&mut Sink<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut sink = Sink {
            inner: MAGIC.to_vec(),
            len: 0,
            hasher: Xxh3::new(),
        };
        sink.map(11).unwrap();
        sink.text(key::FORMAT).unwrap();
        sink.text(FORMAT_NAME).unwrap();
        sink.text(key::FORMAT_VERSION).unwrap();
        sink.head(major::UINT, 1).unwrap();
        rest(&mut sink).unwrap();
        let mut file = sink.inner;
        file.extend([0; 64]);
        file.extend([0; TRAILER_LEN as usize - 8]);
        file.extend(MAGIC);
        file
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let huge_tensor = crafted(|s| {
            s.text(key::STATE_DICT)?;
            s.map(1)?;
            s.text("w")?;
            s.map(4)?;
            s.text(key::DATA)?;
            s.head(major::BYTES, 1 << 60)
        });
        assert_eq!(
            corrupt_reason(decoded(&huge_tensor)),
            "tensor `w` claims 1152921504606846976 bytes, but only 64 remain in the payload (truncated?)"
        );

        let huge_text = crafted(|s| {
            s.text(key::MODULE_TYPE)?;
            s.head(major::TEXT, u64::MAX)
        });
        assert!(corrupt_reason(decoded(&huge_text))
            .starts_with("`module_type` claims 18446744073709551615 bytes"));

        let huge_map = crafted(|s| {
            s.text(key::STATE_DICT)?;
            s.head(major::MAP, u64::MAX)
        });
        assert!(corrupt_reason(decoded(&huge_map))
            .starts_with("expected a text string for a key of `state_dict`"));

        let huge_value = crafted(|s| {
            s.text(key::CALLBACKS)?;
            s.map(1)?;
            s.text("cb")?;
            s.head(major::BYTES, 1 << 60)
        });
        assert_eq!(
            corrupt_reason(decoded(&huge_value)),
            "it is truncated: it ends inside `callbacks`"
        );

        let huge_array = crafted(|s| {
            s.text(key::EXTRA)?;
            s.map(1)?;
            s.text("x")?;
            s.head(major::ARRAY, u64::MAX)
        });
        assert_eq!(
            corrupt_reason(decoded(&huge_array)),
            "it is truncated: it ends inside `extra`"
        );
    }

    #[test]
    fn newer_format_version_is_refused() {
        let mut file = Vec::new();
        encode(
            &mut file,
            &full_checkpoint(),
            FORMAT_VERSION + 1,
            Path::new(PATH),
        )
        .unwrap();
        let err = decoded(&file).unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    intact: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade fulgur"));
        assert!(!err.to_string().contains("damaged"), "{err}");

        // The same version read from a version-1 file whose checksums hold only for version 1.
        let mut flipped = encoded(&full_checkpoint());
        let at = position(&flipped, key::FORMAT_VERSION.as_bytes()) + key::FORMAT_VERSION.len();
        assert_eq!(u32::from(flipped[at]), FORMAT_VERSION);
        flipped[at] = 2;
        assert_eq!(
            corrupt_reason(decoded(&flipped)),
            "its `format_version` reads 2, but the file's checksums hold for version 1: the version \
             field is damaged"
        );
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_an_error() {
        let file = encoded(&full_checkpoint());
        let check = |damaged: &[u8], what: &str| match decoded(damaged) {
            Err(
                CheckpointError::Corrupt { .. }
                | CheckpointError::NotACheckpoint { .. }
                | CheckpointError::UnsupportedVersion { .. },
            ) => {}
            other => panic!("{what}: expected an error, got {other:?}"),
        };
        for at in 0..file.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut damaged = file.clone();
                damaged[at] ^= mask;
                check(&damaged, &format!("byte {at} ^ {mask:#x}"));
            }
        }
        for len in 0..file.len() {
            check(&file[..len], &format!("truncated to {len} bytes"));
        }
    }

    #[test]
    fn large_tensors_hash_on_a_second_thread_with_the_same_result() {
        let len = PARALLEL_READ_HASH_MIN + 12345;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let mut out = Vec::new();
        let written = write_hashed(&mut out, &bytes).unwrap();
        assert_eq!(written, xxh3_64(&bytes));
        assert!(out == bytes);
        for len in [len, 1000] {
            let (back, read) = read_hashed(&mut &out[..], len).unwrap();
            assert_eq!(read, xxh3_64(&bytes[..len]));
            assert!(back == bytes[..len]);
            let short = read_hashed(&mut &out[..len - 1], len).unwrap_err();
            assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        }

        let mut ckpt = Checkpoint::new("Net");
        let values: Vec<f32> = (0..len / 4).map(|i| i as f32).collect();
        ckpt.state_dict
            .insert("big".into(), TensorData::from_f32(vec![len / 4], values));
        let mut file = encoded(&ckpt);
        assert_eq!(normalized(&decoded(&file).unwrap()), normalized(&ckpt));
        let middle = file.len() / 2;
        file[middle] ^= 4;
        assert_eq!(
            corrupt_reason(decoded(&file)),
            "checksum mismatch in tensor `big`"
        );
    }

    #[test]
    fn temporary_names_are_recognised_and_never_end_like_the_checkpoint() {
        let tmp = temporary_name("epoch=1.ckpt".as_ref())
            .into_string()
            .unwrap();
        assert!(
            tmp.starts_with(".epoch=1.ckpt.tmp-") && is_temporary_file(&tmp),
            "{tmp}"
        );
        assert!(!tmp.ends_with(".ckpt"));
        assert_ne!(
            tmp,
            temporary_name("epoch=1.ckpt".as_ref())
                .into_string()
                .unwrap()
        );
        for name in [
            "epoch=1.ckpt",
            ".hidden",
            ".a.tmp-1",
            ".a.tmp-x-1",
            ".a.tmp-1-",
            "..tmp-1-2",
            "a.tmp-1-2",
        ] {
            assert!(!is_temporary_file(name), "{name}");
        }
    }

    fn io_op(result: Result<(), CheckpointError>, expected_path: &Path) -> &'static str {
        match result {
            Err(CheckpointError::Io { path, op, .. }) => {
                assert_eq!(path, expected_path);
                op
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
    }

    #[test]
    fn failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.ckpt");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"keeps the directory non-empty").unwrap();
        assert_eq!(
            io_op(write_checkpoint(&path, &full_checkpoint()), &path),
            "rename the temporary file to"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken.ckpt"]);
    }

    #[test]
    fn unwritable_locations_name_path_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        let below_file = file.join("sub/x.ckpt");
        assert_eq!(
            io_op(
                write_checkpoint(&below_file, &full_checkpoint()),
                &below_file
            ),
            "create the directory of"
        );
        let err = write_checkpoint(&below_file, &full_checkpoint())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "cannot create the directory of checkpoint `{}`: ",
                below_file.display()
            )),
            "{err}"
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let locked = dir.path().join("locked");
            fs::create_dir(&locked).unwrap();
            fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
            if File::create(locked.join("probe")).is_ok() {
                eprintln!(
                    "permissions are not enforced (running as root?): skipping the read-only case"
                );
                return;
            }
            let path = locked.join("x.ckpt");
            assert_eq!(
                io_op(write_checkpoint(&path, &full_checkpoint()), &path),
                "create a temporary file for"
            );
        }
    }

    #[test]
    fn missing_file_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        match read_checkpoint(&path) {
            Err(CheckpointError::Io {
                op: "open",
                path: p,
                ..
            }) => assert_eq!(p, path),
            other => panic!("expected Io open, got {other:?}"),
        }
        let mut ckpt = full_checkpoint();
        write_checkpoint(&path, &ckpt).unwrap();
        ckpt.epoch = 4;
        write_checkpoint(&path, &ckpt).unwrap();
        assert_eq!(read_checkpoint(&path).unwrap().epoch, 4);
    }
}

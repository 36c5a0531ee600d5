//! Hashing tensor data while it is copied, so that checksums cost next to nothing.
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

use std::io::{self, Read, Write};
use std::sync::{mpsc, OnceLock};
use std::thread;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Tensor data is hashed and copied in pieces of this size, so that the copy reads what the hash just
/// brought into cache; it is at least either file buffer (the writer's and the reader's), so that both
/// pass it through.
const DATA_CHUNK: usize = 4 << 20;
/// Tensors from these sizes on are hashed on a second thread, when there is a second core. Reading needs
/// larger ones to gain: it must then read into zeroed memory, which costs for smaller allocations.
const PARALLEL_WRITE_HASH_MIN: usize = 1 << 20;
const PARALLEL_READ_HASH_MIN: usize = 2 * DATA_CHUNK;

/// Writes tensor bytes and returns their xxh3-64. Large tensors are hashed on a second thread while the
/// bytes are copied, small ones piece by piece just before each piece is copied (while it is in cache):
/// either way hashing costs next to nothing on top of the copy.
pub(super) fn write_hashed(writer: &mut impl Write, bytes: &[u8]) -> io::Result<u64> {
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
pub(super) fn read_hashed<R: Read>(reader: &mut R, len: usize) -> io::Result<(Vec<u8>, u64)> {
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

thread_local! {
    /// Set on threads that must not start hashing threads (the asynchronous writer's).
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread hash tensor data itself, piece by piece, instead of on a second thread: for a
/// thread that works while training runs, where a second thread would take a core from training.
pub(crate) fn hash_on_this_thread_only() {
    ONE_THREAD.with(|t| t.set(true));
}

fn hash_in_parallel(len: usize, min: usize) -> bool {
    static MULTICORE: OnceLock<bool> = OnceLock::new();
    len >= min
        && !ONE_THREAD.with(|t| t.get())
        && *MULTICORE.get_or_init(|| thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

fn joined<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::fixtures::*;
    use crate::checkpoint::{Checkpoint, TensorData};

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
}

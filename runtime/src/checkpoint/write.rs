//! Writing a checkpoint crash-safely: a temporary file in the same directory, fsync, rename, fsync of the
//! directory; the registry of the temporary files under way, and their names.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{encode_checkpoint, Checkpoint, CheckpointError};

/// The file buffer serves the structure and small tensors; larger tensor data passes it by.
const WRITE_BUFFER: usize = 1 << 20;

/// Writes `ckpt` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync of
/// the directory. Parent directories are created.
///
/// The temporary file is named `.{file name}.tmp-{pid}-{counter}` (see [`is_temporary_file`]) and is
/// removed on every error, so `path` holds either its previous content or the whole new checkpoint.
/// Errors are [`CheckpointError::Io`] naming `path` and the operation that failed; when only the final
/// fsync of the directory fails, the new file is already in place but may not survive a power loss.
pub fn write_checkpoint(path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    replace_atomically(path.as_ref(), |file, _| {
        encode_checkpoint(
            BufWriter::with_capacity(WRITE_BUFFER, file),
            ckpt,
            path.as_ref(),
        )
    })
}

/// [`write_checkpoint`] for a thread that writes while training runs (the asynchronous writer): on
/// Linux the file is written with direct I/O where the file system supports it, so that the bytes go
/// from the encoder's buffer to the disk without a copy into the page cache, which would take memory
/// bandwidth and cache from training and leave dirty pages to flush. Elsewhere, and where direct I/O is
/// refused, it is [`write_checkpoint`]. The file and its crash safety are the same.
pub(crate) fn write_checkpoint_in_background(
    path: &Path,
    ckpt: &Checkpoint,
) -> Result<(), CheckpointError> {
    #[cfg(target_os = "linux")]
    {
        replace_atomically(path, |file, _| match direct::DirectWriter::new(file) {
            Some(writer) => encode_checkpoint(writer, ckpt, path),
            None => encode_checkpoint(BufWriter::with_capacity(WRITE_BUFFER, file), ckpt, path),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        write_checkpoint(path, ckpt)
    }
}

/// Replaces `path` crash-safely with what `fill` writes: a temporary file in the same directory (created
/// first; `fill` gets it open for writing, and its path for writers that open files themselves), fsync,
/// rename, fsync of the directory. Parent directories are created. The temporary file is removed on every
/// error, so `path` holds either its previous content or the whole new file. Errors other than `fill`'s
/// are [`CheckpointError::Io`] naming `path` and the operation that failed.
pub(crate) fn replace_atomically(
    path: &Path,
    fill: impl FnOnce(&File, &Path) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
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
    let written = fill(&file, &tmp.path).and_then(|()| file.sync_all().map_err(io("fsync")));
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

#[cfg(target_os = "linux")]
mod direct {
    //! Direct I/O (`O_DIRECT`): writes of whole, aligned blocks from an aligned buffer, which the disk
    //! reads where they lie. The tail that does not fill a block is written through the page cache
    //! after direct I/O is switched off for the file.

    use std::fs::File;
    use std::io::{self, Write};
    use std::os::fd::AsRawFd;

    /// The alignment of buffers, lengths and offsets: 4 KiB covers the logical block sizes of common
    /// disks (512 B or 4 KiB).
    const BLOCK: usize = 4096;
    /// The buffer: large writes keep the disk busy with few system calls.
    const BUFFER_BLOCKS: usize = 2048;

    #[derive(Clone, Copy)]
    #[repr(C, align(4096))]
    struct Block([u8; BLOCK]);

    /// A buffered `Write` for a file opened for writing at offset 0: direct I/O while the file system
    /// accepts it, the page cache then and for the tail; [`flush`](Write::flush) writes everything.
    pub(super) struct DirectWriter<'f> {
        file: &'f File,
        buf: Vec<Block>,
        len: usize,
        direct: bool,
    }

    impl<'f> DirectWriter<'f> {
        /// A writer in direct mode, or `None` when the file system refuses direct I/O.
        pub(super) fn new(file: &'f File) -> Option<Self> {
            set_direct(file, true).ok()?;
            Some(Self {
                file,
                buf: vec![Block([0; BLOCK]); BUFFER_BLOCKS],
                len: 0,
                direct: true,
            })
        }

        fn bytes(&mut self) -> &mut [u8] {
            let len = self.buf.len() * BLOCK;
            // SAFETY: `Block` is `BLOCK` plain bytes with no padding (`repr(C)`, one array), so the
            // blocks are `len` initialised bytes; the slice borrows `self.buf` mutably.
            unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), len) }
        }

        /// Writes the first `n` bytes of the buffer (a multiple of `BLOCK` while direct) and moves
        /// the rest to its start. When the file system refuses a direct write (a short write left
        /// an unaligned rest, say), what is left goes through the page cache, as every later write.
        fn write_out(&mut self, n: usize) -> io::Result<()> {
            let file = self.file;
            let mut done = 0;
            while done < n {
                match (&mut &*file).write(&self.bytes()[done..n]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.direct => {
                        self.direct = false;
                        set_direct(file, false)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            let len = self.len;
            self.bytes().copy_within(n..len, 0);
            self.len = len - n;
            Ok(())
        }
    }

    #[cfg(test)]
    impl DirectWriter<'_> {
        pub(super) fn write_out_for_test(&mut self, n: usize) -> io::Result<()> {
            self.write_out(n)
        }

        pub(super) fn is_direct_for_test(&self) -> bool {
            self.direct
        }
    }

    impl Write for DirectWriter<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let capacity = self.buf.len() * BLOCK;
            if self.len == capacity {
                self.write_out(capacity)?;
            }
            let n = data.len().min(capacity - self.len);
            let len = self.len;
            self.bytes()[len..len + n].copy_from_slice(&data[..n]);
            self.len += n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.len == 0 {
                return Ok(());
            }
            let aligned = self.len / BLOCK * BLOCK;
            if aligned > 0 {
                self.write_out(aligned)?;
            }
            if self.len > 0 {
                if self.direct {
                    self.direct = false;
                    set_direct(self.file, false)?;
                }
                let n = self.len;
                self.write_out(n)?;
            }
            Ok(())
        }
    }

    /// Turns direct I/O on or off for `file`.
    fn set_direct(file: &File, on: bool) -> io::Result<()> {
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is open for the life of `file`; F_GETFL/F_SETFL read and change only its
        // status flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::fixtures::*;
    use crate::checkpoint::{read_checkpoint, TensorData};

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

    /// The background writer (direct I/O where the file system takes it) writes the file the
    /// buffered writer does, for files smaller than a block, of whole blocks and with a tail, and
    /// larger than its buffer.
    #[test]
    fn background_writes_make_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1000, 1024 - 30, 3 << 20] {
            let mut ckpt = full_checkpoint();
            ckpt.state_dict.insert(
                "big".into(),
                TensorData::from_f32(vec![n], (0..n).map(|i| i as f32).collect()),
            );
            let (plain, background) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
            write_checkpoint(&plain, &ckpt).unwrap();
            write_checkpoint_in_background(&background, &ckpt).unwrap();
            assert!(
                fs::read(&plain).unwrap() == fs::read(&background).unwrap(),
                "{n} values"
            );
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "no temporary file is left behind: {names:?}"
        );
    }

    /// The bytes a direct writer on a new file leaves after `write` and a flush; `None` (the test is
    /// skipped) where the file system refuses direct I/O.
    #[cfg(target_os = "linux")]
    fn written_directly(write: impl FnOnce(&mut direct::DirectWriter<'_>)) -> Option<Vec<u8>> {
        use std::io::Write;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("direct.bin");
        let file = File::create(&path).unwrap();
        let Some(mut writer) = direct::DirectWriter::new(&file) else {
            eprintln!(
                "skipped: the file system of {} refuses direct I/O",
                path.display()
            );
            return None;
        };
        write(&mut writer);
        writer.flush().unwrap();
        drop(writer);
        drop(file);
        Some(fs::read(&path).unwrap())
    }

    /// A direct write the file system refuses (`EINVAL`) in the middle of a file (here: a length that
    /// is no multiple of the block size, which direct I/O rejects) goes through the page cache at the
    /// same offset, and so does every later write: the file holds every byte in order.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache_mid_file() {
        use std::io::Write;

        let bytes: Vec<u8> = (0..40_000usize).map(|i| (i * 13 % 241) as u8).collect();
        let written = written_directly(|writer| {
            writer.write_all(&bytes[..20_000]).unwrap();
            // 8192 bytes go direct; then 3001 bytes, refused as direct I/O, through the page cache.
            writer.write_out_for_test(8192).unwrap();
            assert!(writer.is_direct_for_test(), "an aligned write stays direct");
            writer.write_out_for_test(3001).unwrap();
            assert!(
                !writer.is_direct_for_test(),
                "the refused write switched it off"
            );
            writer.write_all(&bytes[20_000..]).unwrap();
        });
        assert!(written.is_none_or(|w| w == bytes));
    }

    /// Pieces of every size, through the buffer and past it, land in order; the tail that does not
    /// fill a block is written when the writer is flushed.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_direct_writer_writes_every_byte_in_order() {
        use std::io::Write;

        let bytes: Vec<u8> = (0..(17usize << 20) + 4321)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let written = written_directly(|writer| {
            let mut at = 0;
            for size in [1, 4095, 4096, 3 << 20, 9 << 20, 7].into_iter().cycle() {
                if at == bytes.len() {
                    break;
                }
                let end = (at + size).min(bytes.len());
                writer.write_all(&bytes[at..end]).unwrap();
                at = end;
            }
        });
        assert!(written.is_none_or(|w| w == bytes));
    }
}

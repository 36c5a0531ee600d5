//! What the fuzz targets check, shared by both: a decode never panics, an error names the file, memory
//! stays proportional to the input, and whatever decodes re-encodes into a file that decodes again to the
//! same bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use ciborium::Value;
use fulgur_runtime::checkpoint::{
    decode_checkpoint, encode_checkpoint, read_checkpoint_header, Checkpoint, CheckpointError,
};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// The name every error must carry.
pub const PATH: &str = "fuzz-input";

const MAGIC: &[u8; 8] = b"FULGURCK";
const TRAILER_LEN: usize = 24;

/// Memory a decode may use whatever the input: ciborium's 4 KiB scratch buffer, small vectors' first
/// capacity, the error message.
const SLACK: usize = 64 << 10;
/// The format promises to allocate no more than the file holds, except that an "any" item becomes a
/// `ciborium::Value` tree: one encoded byte can be one `Value` (an empty array, a small integer), a
/// one-element array is a vector of capacity 4, and vectors grow by doubling. The largest single
/// allocation is a vector of `Value`s or of pairs of them; all live memory together is a few of those.
const LARGEST_PER_BYTE: usize = 4 * size_of::<Value>();
const PEAK_PER_BYTE: usize = 8 * size_of::<Value>();

/// Decodes `file` and checks everything the format promises about it; panics (a fuzzer finding) when a
/// promise is broken.
pub fn check_decode(file: &[u8]) {
    let (decoded, usage) = measured(|| decode(file));
    assert!(
        usage.largest <= SLACK + LARGEST_PER_BYTE * file.len(),
        "decoding {} bytes made an allocation of {} bytes",
        file.len(),
        usage.largest
    );
    assert!(
        usage.peak <= SLACK + PEAK_PER_BYTE * file.len(),
        "decoding {} bytes held {} bytes at once",
        file.len(),
        usage.peak
    );
    match decoded {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(PATH),
                "the error does not name the file: {message}"
            );
        }
        Ok(ckpt) => {
            let encoded = encode(&ckpt);
            let again = decode(&encoded).unwrap_or_else(|e| {
                panic!("a checkpoint that decoded re-encodes into a file that does not: {e}")
            });
            assert!(
                encode(&again) == encoded,
                "a decoded checkpoint re-encodes differently after one more round trip"
            );
        }
    }
}

/// Reads the header of `file` (written to a temporary file, as the header reader takes a path) and
/// checks that it never panics, names the file in errors, stays within the memory budget and, when the
/// whole file decodes, agrees with it. A valid file whose scalars come after a tensor has no header: the
/// header reader stops at the first tensor (the writer puts the scalars first).
pub fn check_header(file: &[u8]) {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        // A file per execution: in memory where there is a tmpfs.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("fulgur-fuzz-header-{}.ckpt", std::process::id()))
    });
    std::fs::write(path, file).expect("the fuzzer's temporary file cannot be written");
    let (header, usage) = measured(|| read_checkpoint_header(path));
    assert!(
        usage.largest <= SLACK + LARGEST_PER_BYTE * file.len()
            && usage.peak <= SLACK + PEAK_PER_BYTE * file.len(),
        "reading the header of {} bytes made an allocation of {} bytes and held {} at once",
        file.len(),
        usage.largest,
        usage.peak
    );
    match (header, decode(file)) {
        (Err(e), decoded) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error does not name the file: {message}"
            );
            assert!(
                decoded.is_err() || message.contains("before the tensors"),
                "the file decodes but its header does not: {message}"
            );
        }
        (Ok(h), Ok(c)) => assert_eq!(
            (
                h.fulgur_version,
                h.module_type,
                h.epoch,
                h.global_step,
                h.weights_only
            ),
            (
                c.fulgur_version,
                c.module_type,
                c.epoch,
                c.global_step,
                c.weights_only
            ),
            "the header disagrees with the decoded file"
        ),
        (Ok(_), Err(_)) => {}
    }
}

/// Decodes a whole file held in memory, as `read_checkpoint` does a file on disk.
pub fn decode(file: &[u8]) -> Result<Checkpoint, CheckpointError> {
    decode_checkpoint(file, file.len() as u64, Path::new(PATH))
}

fn encode(ckpt: &Checkpoint) -> Vec<u8> {
    let mut file = Vec::new();
    encode_checkpoint(&mut file, ckpt, Path::new(PATH))
        .unwrap_or_else(|e| panic!("a checkpoint that decoded does not encode: {e}"));
    file
}

/// The payload of a well-framed checkpoint file: what follows the magic and precedes the trailer.
pub fn payload(file: &[u8]) -> Option<&[u8]> {
    file.get(MAGIC.len()..file.len().checked_sub(TRAILER_LEN)?)
}

/// Frames `payload` into a checkpoint file: the magic, the payload with every tensor checksum that
/// follows its tensor's data set to the data's xxh3, and a trailer with the right length and structure
/// checksum. A payload malformed part way keeps the fixes made before the damage.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(MAGIC.len() + payload.len() + TRAILER_LEN);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(payload);
    let mut walker = Walker {
        buf: &mut file[MAGIC.len()..],
        pos: 0,
        data: Vec::new(),
    };
    let _ = walker.payload();
    let data = walker.data;

    let payload = &file[MAGIC.len()..];
    let mut hasher = Xxh3::new();
    let mut at = 0;
    for range in data {
        hasher.update(&payload[at..range.start]);
        at = range.end;
    }
    hasher.update(&payload[at..]);
    let digest = hasher.digest();
    let len = payload.len() as u64;
    file.extend_from_slice(&digest.to_le_bytes());
    file.extend_from_slice(&len.to_le_bytes());
    file.extend_from_slice(MAGIC);
    file
}

/// A lenient walk over a payload that finds the tensors where the reader looks for them.
struct Walker<'a> {
    buf: &'a mut [u8],
    pos: usize,
    /// The tensors' `data` contents, which the structure checksum skips.
    data: Vec<Range<usize>>,
}

const BYTES: u8 = 2;
const TEXT: u8 = 3;
const MAP: u8 = 5;
const INDEFINITE: u8 = 31;
const BREAK: u8 = 0xff;

impl Walker<'_> {
    fn take(&mut self, len: u64) -> Option<Range<usize>> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
            .filter(|&end| end <= self.buf.len())?;
        let range = self.pos..end;
        self.pos = end;
        Some(range)
    }

    /// `(major type, additional information, argument)`.
    fn head(&mut self) -> Option<(u8, u8, u64)> {
        let at = self.take(1)?;
        let initial = self.buf[at.start];
        let (major, info) = (initial >> 5, initial & 0x1f);
        let width = match info {
            0..=23 => return Some((major, info, info.into())),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            INDEFINITE => return Some((major, info, 0)),
            _ => return None,
        };
        let range = self.take(width)?;
        let arg = self.buf[range]
            .iter()
            .fold(0, |acc, &b| acc << 8 | u64::from(b));
        Some((major, info, arg))
    }

    fn definite(&mut self, major: u8) -> Option<u64> {
        match self.head()? {
            (m, info, arg) if m == major && info != INDEFINITE => Some(arg),
            _ => None,
        }
    }

    fn text(&mut self) -> Option<String> {
        let len = self.definite(TEXT)?;
        let range = self.take(len)?;
        Some(String::from_utf8_lossy(&self.buf[range]).into_owned())
    }

    /// Skips one data item of any kind; every head read consumes a byte, so hostile counts end at the
    /// end of the buffer.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > 300 {
            return None;
        }
        let (major, info, arg) = self.head()?;
        if info == INDEFINITE {
            if !(2..=5).contains(&major) {
                return None;
            }
            while self.buf.get(self.pos) != Some(&BREAK) {
                self.skip(depth + 1)?;
            }
            self.pos += 1;
            return Some(());
        }
        match major {
            BYTES | TEXT => self.take(arg).map(drop),
            4 => (0..arg).try_for_each(|_| self.skip(depth + 1)),
            MAP => (0..arg).try_for_each(|_| {
                self.skip(depth + 1)?;
                self.skip(depth + 1)
            }),
            6 => self.skip(depth + 1),
            _ => Some(()),
        }
    }

    fn payload(&mut self) -> Option<()> {
        for _ in 0..self.definite(MAP)? {
            match self.text()?.as_str() {
                "state_dict" => {
                    for _ in 0..self.definite(MAP)? {
                        self.skip(0)?;
                        self.tensor()?;
                    }
                }
                "optimizer" => {
                    for _ in 0..self.definite(MAP)? {
                        if self.text()? != "params" {
                            self.skip(0)?;
                            continue;
                        }
                        for _ in 0..self.definite(MAP)? {
                            self.skip(0)?;
                            for _ in 0..self.definite(MAP)? {
                                self.skip(0)?;
                                self.tensor()?;
                            }
                        }
                    }
                }
                _ => self.skip(0)?,
            }
        }
        Some(())
    }

    fn tensor(&mut self) -> Option<()> {
        let mut data = None;
        for _ in 0..self.definite(MAP)? {
            match self.text()?.as_str() {
                "data" => {
                    let len = self.definite(BYTES)?;
                    let range = self.take(len)?;
                    self.data.push(range.clone());
                    data = Some(range);
                }
                "xxh3" => {
                    let (_, info, _) = self.head()?;
                    // Only an 8-byte argument can hold any digest without moving what follows.
                    if let (27, Some(range)) = (info, &data) {
                        let digest = xxh3_64(&self.buf[range.clone()]);
                        self.buf[self.pos - 8..self.pos].copy_from_slice(&digest.to_be_bytes());
                    }
                }
                _ => self.skip(0)?,
            }
        }
        Some(())
    }
}

/// Memory used while running `f`: the most held at once and the largest single request, in bytes.
struct Usage {
    peak: usize,
    largest: usize,
}

fn measured<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    LARGEST.store(0, Relaxed);
    let out = f();
    let usage = Usage {
        peak: PEAK.load(Relaxed) - base,
        largest: LARGEST.load(Relaxed),
    };
    (out, usage)
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting. A `realloc` is counted as holding the old and the new block at once.
struct Counting;

#[global_allocator]
static COUNTING: Counting = Counting;

impl Counting {
    fn record(&self, freed: usize, requested: usize) {
        let live = LIVE.fetch_add(requested, Relaxed) + requested;
        PEAK.fetch_max(live, Relaxed);
        LIVE.fetch_sub(freed, Relaxed);
        LARGEST.fetch_max(requested, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters have no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            self.record(0, layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            self.record(0, layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            self.record(layout.size(), new_size);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

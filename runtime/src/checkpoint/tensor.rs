//! One stored tensor: element type, shape and little-endian bytes.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float (dfdx scalar fields such as a batch-norm momentum).
    F64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }

    /// Bytes of a tensor of this type and `shape`, or `None` when that overflows `usize`.
    pub fn byte_len(self, shape: &[usize]) -> Option<usize> {
        shape
            .iter()
            .try_fold(self.size(), |acc, &d| acc.checked_mul(d))
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// A tensor as stored in a checkpoint.
///
/// Values built on the host stay in their native buffer until they are written; values read from a file
/// stay in the bytes the reader produced and are reinterpreted in place when the buffer is aligned. A
/// tensor the trainer saves is a *snapshot*: it shares the device buffer of the live tensor (dfdx's
/// storage is reference counted and copied on write), and its values reach the host only when the
/// encoder copies them, one tensor at a time, into one reused buffer.
#[derive(Clone)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    /// Little-endian bytes, as read from a file.
    Bytes(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// f32 values in one of the asynchronous writer's staging buffers, which it takes back once the
    /// file is written.
    Staged(Vec<f32>),
    /// f32 values still in a device buffer shared with the live tensor.
    Snapshot(Arc<dyn HostSource>),
}

/// f32 values that stay where they are (a device buffer) until a save copies them to the host.
///
/// Holding one keeps the buffer alive: an optimizer step that updates the live tensor meanwhile copies
/// it first (`Arc::make_mut`), so the snapshot keeps the values it was taken with.
///
/// The trainer's snapshots are read once: whoever copies the values (the encoder of a synchronous
/// save, the staging of an asynchronous one) [releases](HostSource::release) each one as soon as it has
/// them, so that from then on an update of the live tensor no longer copies it. (An update of a tensor
/// still held copies it: fresh memory the size of that tensor, page-faulted as it is filled, on the
/// training thread; the asynchronous writer stages everything within milliseconds to avoid that.)
pub(crate) trait HostSource: Send + Sync {
    /// Copies the values into `dst`, whose length is the tensor's element count.
    fn copy_to_host(&self, dst: &mut [f32]) -> Result<(), String>;

    /// Calls `write` with the values where they lie when they are host memory already (a CPU buffer),
    /// so that a save writes them without a copy, and returns its result; `None` when the values must
    /// be copied with [`copy_to_host`](HostSource::copy_to_host).
    fn write_in_place(
        &self,
        write: &mut dyn FnMut(&[f32]) -> std::io::Result<u64>,
    ) -> Option<std::io::Result<u64>> {
        let _ = write;
        None
    }

    /// Lets go of the buffer: the encoder has the values. Later reads of this source fail (a
    /// snapshot is written once); sources that are not snapshots keep their values.
    fn release(&self) {}
}

/// What a snapshot source holds until a save releases it: a clone of a live buffer (the tensor's, or
/// an optimizer's), shared with the tensor being trained.
pub(crate) struct Held<T>(Mutex<Option<T>>);

impl<T> Held<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Mutex::new(Some(value)))
    }

    /// `f` of the held value, or the error of a snapshot read after its release.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, String> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let value = held.as_ref().ok_or_else(|| {
            "this snapshot was written and released already: a snapshot is written once".to_string()
        })?;
        Ok(f(value))
    }

    /// Lets go of the value (see [`HostSource::release`]).
    pub(crate) fn release(&self) {
        // Dropped outside the lock: the last holder of a buffer frees it.
        let value = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(value);
    }
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = match &self.storage {
            Storage::Bytes(_) => "bytes",
            Storage::F32(_) | Storage::F64(_) | Storage::Staged(..) => "host",
            Storage::Snapshot(_) => "snapshot",
        };
        f.debug_struct("TensorData")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("storage", &held)
            .finish_non_exhaustive()
    }
}

/// Why stored bytes do not make a tensor of the declared type and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("holds {found} bytes, but a {dtype} tensor of shape {shape:?} needs {expected}")]
pub struct TensorSizeError {
    /// Declared element type.
    pub dtype: DType,
    /// Declared shape.
    pub shape: Vec<usize>,
    /// Byte length implied by type and shape.
    pub expected: usize,
    /// Byte length found.
    pub found: usize,
}

/// Equal when type, shape and bytes are equal, however each side holds its values (a tensor read from a
/// file equals the one that was written). NaNs with equal bits are equal.
impl PartialEq for TensorData {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype
            && self.shape == other.shape
            && self.le_bytes() == other.le_bytes()
    }
}

impl TensorData {
    /// An f32 tensor from host values; `values.len()` must be the product of `shape`.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Self {
            dtype: DType::F32,
            shape,
            storage: Storage::F32(values),
        }
    }

    /// An f64 tensor from host values; `values.len()` must be the product of `shape`.
    pub fn from_f64(shape: Vec<usize>, values: Vec<f64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Self {
            dtype: DType::F64,
            shape,
            storage: Storage::F64(values),
        }
    }

    /// An f32 tensor whose values stay in `source` until they are needed.
    pub(crate) fn snapshot(shape: Vec<usize>, source: Arc<dyn HostSource>) -> Self {
        Self {
            dtype: DType::F32,
            shape,
            storage: Storage::Snapshot(source),
        }
    }

    /// An f32 tensor in a staging buffer (see `staging.rs`), which [`take_staged`](Self::take_staged)
    /// gives back.
    pub(crate) fn staged(shape: Vec<usize>, values: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Self {
            dtype: DType::F32,
            shape,
            storage: Storage::Staged(values),
        }
    }

    /// The staging buffer of a tensor made by [`staged`](Self::staged), leaving it empty; `None` for
    /// other tensors.
    pub(crate) fn take_staged(&mut self) -> Option<Vec<f32>> {
        match &mut self.storage {
            Storage::Staged(v) => Some(std::mem::take(v)),
            _ => None,
        }
    }

    /// The source of a snapshot, which the encoder copies from; `None` for values on the host.
    pub(crate) fn source(&self) -> Option<&dyn HostSource> {
        match &self.storage {
            Storage::Snapshot(s) => Some(&**s),
            _ => None,
        }
    }

    /// The same tensor with its values on the host (a snapshot is copied; other tensors are cloned).
    /// Errors are the device's, for the caller to name.
    pub(crate) fn to_host(&self) -> Result<Self, String> {
        match &self.storage {
            Storage::Snapshot(s) => {
                let mut values = vec![0.0; self.numel()];
                s.copy_to_host(&mut values)?;
                Ok(Self::from_f32(self.shape.clone(), values))
            }
            _ => Ok(self.clone()),
        }
    }

    /// A tensor from little-endian bytes, checking that their length fits `dtype` and `shape`.
    pub fn from_le_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<Self, TensorSizeError> {
        let expected = dtype.byte_len(&shape).unwrap_or(usize::MAX);
        if expected != bytes.len() {
            return Err(TensorSizeError {
                dtype,
                shape,
                expected,
                found: bytes.len(),
            });
        }
        Ok(Self {
            dtype,
            shape,
            storage: Storage::Bytes(bytes),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The little-endian bytes as they are written to a file. A snapshot whose device fails to copy
    /// it gives no bytes (the trainer's public paths hand out host copies, made with error handling).
    pub fn le_bytes(&self) -> Cow<'_, [u8]> {
        match &self.storage {
            Storage::Snapshot(_) => match self.to_host() {
                Ok(host) => Cow::Owned(host.le_bytes().into_owned()),
                Err(_) => Cow::Owned(Vec::new()),
            },
            Storage::Bytes(b) => Cow::Borrowed(b),
            Storage::F32(v) | Storage::Staged(v) if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(v))
            }
            Storage::F64(v) if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(v))
            }
            Storage::F32(v) | Storage::Staged(v) => {
                Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            Storage::F64(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }

    /// The values as f32, or `None` when the tensor holds another type.
    pub fn as_f32(&self) -> Option<Cow<'_, [f32]>> {
        match (&self.storage, self.dtype) {
            (Storage::F32(v) | Storage::Staged(v), _) => Some(Cow::Borrowed(v)),
            (Storage::Snapshot(_), _) => match self.to_host().ok()?.storage {
                Storage::F32(v) => Some(Cow::Owned(v)),
                _ => None,
            },
            (Storage::Bytes(b), DType::F32) => Some(decode(b, f32::from_le_bytes)),
            _ => None,
        }
    }

    /// The values as f64, or `None` when the tensor holds another type.
    pub fn as_f64(&self) -> Option<Cow<'_, [f64]>> {
        match (&self.storage, self.dtype) {
            (Storage::F64(v), _) => Some(Cow::Borrowed(v)),
            (Storage::Bytes(b), DType::F64) => Some(decode(b, f64::from_le_bytes)),
            _ => None,
        }
    }
}

fn decode<'a, T: bytemuck::Pod, const N: usize>(
    bytes: &'a [u8],
    from_le: fn([u8; N]) -> T,
) -> Cow<'a, [T]> {
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice(bytes) {
            return Cow::Borrowed(values);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(N)
            .map(|c| from_le(c.try_into().unwrap_or([0; N])))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trips_through_bytes() {
        let t = TensorData::from_f32(vec![2, 2], vec![1.0, -2.5, f32::MIN_POSITIVE, f32::NAN]);
        let bytes = t.le_bytes().into_owned();
        let back = TensorData::from_le_bytes(DType::F32, vec![2, 2], bytes).unwrap();
        assert_eq!(back, t, "equal by value whatever the storage");
        assert_ne!(
            back,
            TensorData::from_f32(vec![4], t.as_f32().unwrap().into_owned()),
            "shape counts"
        );
        let (a, b) = (t.as_f32().unwrap(), back.as_f32().unwrap());
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(back.as_f64().is_none());
    }

    #[test]
    fn wrong_byte_length_is_rejected() {
        let err = TensorData::from_le_bytes(DType::F32, vec![3], vec![0; 8]).unwrap_err();
        assert_eq!(err.expected, 12);
        assert_eq!(err.found, 8);
        let huge = TensorData::from_le_bytes(DType::F64, vec![usize::MAX, 2], vec![]).unwrap_err();
        assert_eq!(huge.expected, usize::MAX);
    }
}

//! One stored tensor: element type, shape and little-endian bytes.

use std::borrow::Cow;

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
/// Values built on the host stay in their native buffer until they are written, so saving copies each
/// tensor once (device to host); values read from a file stay in the bytes the reader produced and are
/// reinterpreted in place when the buffer is aligned.
#[derive(Debug, Clone)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
}

#[derive(Debug, Clone, PartialEq)]
enum Storage {
    /// Little-endian bytes, as read from a file.
    Bytes(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
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

    /// The little-endian bytes as they are written to a file.
    pub fn le_bytes(&self) -> Cow<'_, [u8]> {
        match &self.storage {
            Storage::Bytes(b) => Cow::Borrowed(b),
            Storage::F32(v) if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(v))
            }
            Storage::F64(v) if cfg!(target_endian = "little") => {
                Cow::Borrowed(bytemuck::cast_slice(v))
            }
            Storage::F32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Storage::F64(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }

    /// The values as f32, or `None` when the tensor holds another type.
    pub fn as_f32(&self) -> Option<Cow<'_, [f32]>> {
        match (&self.storage, self.dtype) {
            (Storage::F32(v), _) => Some(Cow::Borrowed(v)),
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

//! Logged values keep their type, so that a filename prints an f32 metric as the f32 it is.

use serde::{Deserialize, Serialize};

/// The type a metric is logged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKind {
    /// 32-bit float (the default: what a dfdx loss is).
    F32,
    /// 64-bit float.
    F64,
    /// Integer (`epoch`, `step`, counts).
    Int,
    /// Boolean.
    Bool,
}

impl MetricKind {
    /// `true` for the float kinds.
    pub fn is_float(self) -> bool {
        matches!(self, MetricKind::F32 | MetricKind::F64)
    }
}

/// A logged value with its type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MetricValue {
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl MetricValue {
    /// The value as f64 (booleans are 0 or 1), for comparisons and means.
    pub fn as_f64(self) -> f64 {
        match self {
            MetricValue::F32(v) => f64::from(v),
            MetricValue::F64(v) => v,
            MetricValue::Int(v) => v as f64,
            MetricValue::Bool(v) => f64::from(u8::from(v)),
        }
    }

    /// Its kind.
    pub fn kind(self) -> MetricKind {
        match self {
            MetricValue::F32(_) => MetricKind::F32,
            MetricValue::F64(_) => MetricKind::F64,
            MetricValue::Int(_) => MetricKind::Int,
            MetricValue::Bool(_) => MetricKind::Bool,
        }
    }

    /// `v` converted to `kind` (an epoch mean of f32 values is an f32; of integers, a float).
    pub fn from_f64(v: f64, kind: MetricKind) -> Self {
        match kind {
            MetricKind::F32 => MetricValue::F32(v as f32),
            MetricKind::F64 => MetricValue::F64(v),
            MetricKind::Int if v.fract() == 0.0 && v.abs() < 9.0e15 => MetricValue::Int(v as i64),
            MetricKind::Int => MetricValue::F64(v),
            MetricKind::Bool => MetricValue::Bool(v != 0.0),
        }
    }
}

impl From<f32> for MetricValue {
    fn from(v: f32) -> Self {
        MetricValue::F32(v)
    }
}

impl From<f64> for MetricValue {
    fn from(v: f64) -> Self {
        MetricValue::F64(v)
    }
}

impl From<bool> for MetricValue {
    fn from(v: bool) -> Self {
        MetricValue::Bool(v)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for MetricValue {
            fn from(v: $t) -> Self {
                MetricValue::Int(v as i64)
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl std::fmt::Display for MetricValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricValue::F32(v) => write!(f, "{v}"),
            MetricValue::F64(v) => write!(f, "{v}"),
            MetricValue::Int(v) => write!(f, "{v}"),
            MetricValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

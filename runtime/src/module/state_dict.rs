//! Module weights by name: dfdx's `TensorCollection` walked with `ViewTensorName`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorName,
    ViewTensorRef,
};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use num_traits::NumCast;

use crate::checkpoint::{CheckpointError, DType, Held, HostSource, TensorData};
use crate::device::Backend;
use crate::Result;

/// The module's tensors (and dfdx scalar fields, as f64) by name, copied to the host.
pub fn state_dict<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
) -> Result<BTreeMap<String, TensorData>> {
    collect(module, false)
}

/// The module's tensors as [`state_dict`] names them, as snapshots: each shares its buffer with the
/// live tensor (no copy now; an update of the live tensor copies it first) and reaches the host only
/// when a save encodes it. Scalar fields are copied.
pub(crate) fn snapshot_state_dict<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
) -> Result<BTreeMap<String, TensorData>> {
    collect(module, true)
}

fn collect<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
    snapshot: bool,
) -> Result<BTreeMap<String, TensorData>> {
    let mut out = Collect {
        out: BTreeMap::new(),
        snapshot,
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut out,
    })
    .map_err(crate::device_err)?;
    Ok(out.out)
}

/// The name, dtype and shape of every entry [`state_dict`] would produce, without copying data.
pub fn param_shapes<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
) -> BTreeMap<String, (DType, Vec<usize>)> {
    let mut out = Shapes(BTreeMap::new());
    // Shapes never touches data, so the walk cannot fail.
    let _ = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut out,
    });
    out.0
}

/// Loads `entries` into `module`, each tensor into the module's existing buffer. With `strict`, every
/// missing, unexpected and mismatched key is reported in one error naming `path`; without it, only
/// matching entries are loaded. Nothing is changed unless the names, dtypes and shapes fit; entries of a
/// checkpoint read lazily (by the trainer's loads) are read from their file as they are loaded, and a
/// damaged one stops the load part-way (see [`load_weights`](super::load_weights)).
pub fn load_state_dict<M: TensorCollection<f32, D>, D: Backend>(
    module: &mut M,
    entries: &BTreeMap<String, TensorData>,
    strict: bool,
    path: &Path,
) -> Result<()> {
    let expected = param_shapes::<M, D>(module);
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    for (name, (dtype, shape)) in &expected {
        match entries.get(name) {
            None => missing.push(format!("`{name}`")),
            Some(t) if t.dtype() != *dtype || t.shape() != shape.as_slice() => {
                mismatched.push(format!(
                    "`{name}`: expected {dtype} {shape:?}, found {} {:?}",
                    t.dtype(),
                    t.shape()
                ))
            }
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = entries
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(|k| format!("`{k}`"))
        .collect();
    if !mismatched.is_empty() || (strict && !(missing.is_empty() && unexpected.is_empty())) {
        return Err(CheckpointError::StateDictMismatch {
            path: path.to_path_buf(),
            module: std::any::type_name::<M>().to_string(),
            missing,
            unexpected,
            mismatched,
        }
        .into());
    }
    super::load::apply(module, entries, path)
}

fn dims<S: Shape>(shape: &S) -> Vec<usize> {
    shape.concrete().into_iter().collect()
}

struct Collect {
    out: BTreeMap<String, TensorData>,
    snapshot: bool,
}

/// A clone of a tensor: its buffer, shared until a save has its values and releases it.
struct Snapshot<S: Shape, D: Backend>(Held<Tensor<S, f32, D>>);

// SAFETY: a tensor of a `SharedAcrossThreads` device (a `Backend`) may be used and dropped on any thread.
unsafe impl<S: Shape, D: Backend> Send for Snapshot<S, D> {}
unsafe impl<S: Shape, D: Backend> Sync for Snapshot<S, D> {}

impl<S: Shape, D: Backend> HostSource for Snapshot<S, D> {
    fn copy_to_host(&self, dst: &mut [f32]) -> std::result::Result<(), String> {
        self.0.with(|t| {
            if t.shape().num_elements() != dst.len() {
                return Err(format!(
                    "a snapshot holds {} values, its destination {}",
                    t.shape().num_elements(),
                    dst.len()
                ));
            }
            t.copy_into(dst);
            Ok(())
        })?
    }

    fn release(&self) {
        self.0.release();
    }
}

impl<D: Backend> TensorVisitor<f32, D> for Collect {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (t, name): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        let data = if self.snapshot {
            TensorData::snapshot(dims(t.shape()), Arc::new(Snapshot(Held::new(t.clone()))))
        } else {
            TensorData::from_f32(dims(t.shape()), t.as_vec())
        };
        self.out.insert(name, data);
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&N, String),
    ) -> Result<Option<N>, Self::Err> {
        self.out.insert(
            name,
            TensorData::from_f64(Vec::new(), vec![n.to_f64().unwrap_or(f64::NAN)]),
        );
        Ok(None)
    }
}

struct Shapes(BTreeMap<String, (DType, Vec<usize>)>);

impl<D: Backend> TensorVisitor<f32, D> for Shapes {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (t, name): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        self.0.insert(name, (DType::F32, dims(t.shape())));
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (_, name): (&N, String),
    ) -> Result<Option<N>, Self::Err> {
        self.0.insert(name, (DType::F64, Vec::new()));
        Ok(None)
    }
}

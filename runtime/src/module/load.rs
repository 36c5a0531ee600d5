//! Loading weights into an existing module in place: each stored tensor goes from the file into the
//! module's own buffer through one reused buffer, verified as it is read, and a load that needs only
//! the weights never reads the rest of the file.
//!
//! # State after a failed load
//!
//! Names, dtypes and shapes are checked against the module before any value is written (the file's
//! structure, header and trailer checksums are verified before that, when the file is opened), so a
//! mismatched file leaves the module as it was. Tensor bytes are verified as they are read: a damaged
//! tensor (checksum mismatch) or a file cut or unreadable since it was opened is found when that tensor
//! is reached, and then the tensors before it, in the module's field order, already hold the file's
//! values, the damaged one holds either, and the rest are unchanged. The error names the file and the
//! tensor; load the module again (or rebuild it) before using it.

use std::collections::BTreeMap;
use std::path::Path;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName,
};
use dfdx::shapes::Shape;
use dfdx::tensor::Tensor;
use num_traits::NumCast;

use super::state_dict::load_state_dict;
use super::LightningModule;
use crate::checkpoint::{
    file_error_first, read_checkpoint_lazy, take_read_error, unreadable, CheckpointError,
    TensorData,
};
use crate::device::Backend;
use crate::{Error, Result};

/// Loads the weights stored in the checkpoint at `path` into `module`, in place, as
/// [`load_state_dict`] does with the entries of [`read_checkpoint`](crate::checkpoint::read_checkpoint)
/// (the same checks, the same errors, `strict` alike), but without reading the file whole: the
/// optimizer state and every other tensor the module does not take are stepped over (not read), and
/// each weight goes from the file into the module's existing buffer through one buffer of the largest
/// tensor's size, its checksum checked as it streams. Extra memory: that buffer, not the file.
///
/// Errors: those of `read_checkpoint` for the file (naming it and the damaged part), and
/// [`CheckpointError::StateDictMismatch`] when the weights do not fit the module, found before anything
/// is written.
///
/// # State after a failed load
///
/// A file that does not fit the module leaves it as it was. A tensor whose bytes are damaged (checksum
/// mismatch), or a file cut or unreadable since it was opened, is found when that tensor is reached:
/// the tensors before it (in the module's field order) then hold the file's values and the rest their
/// own. The error names the file and the tensor; load the module again before using it.
pub fn load_weights<M: TensorCollection<f32, D>, D: Backend>(
    module: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<()> {
    let path = path.as_ref();
    let ckpt = read_checkpoint_lazy(path)?;
    load_state_dict(module, &ckpt.state_dict, strict, path)
}

/// Rebuilds a module from the hyperparameters and weights stored in a checkpoint, reading only what it
/// needs: the structure and the weights, not the optimizer state.
pub(crate) fn load_from_checkpoint<M: LightningModule<D>, D: Backend>(
    path: &Path,
    device: &D,
) -> Result<M> {
    let ckpt = read_checkpoint_lazy(path)?;
    let hparams_error = |reason: String| CheckpointError::Hyperparameters {
        path: path.to_path_buf(),
        reason,
    };
    let value = match &ckpt.hyper_parameters {
        Some(v) => v.clone(),
        None => ciborium::Value::Null,
    };
    let hparams: M::Hparams = value.deserialized().map_err(|e| {
        hparams_error(format!(
            "do not decode as `{}` ({e}); the file was written by `{}`",
            std::any::type_name::<M::Hparams>(),
            ckpt.module_type
        ))
    })?;
    let mut module = M::from_hparams(hparams, device)?;
    file_error_first(|| module.on_load_checkpoint(&ckpt))?;
    load_state_dict(&mut module, &ckpt.state_dict, true, path)?;
    Ok(module)
}

/// Copies checked `entries` into `module`, each tensor into its existing buffer; keys absent from the
/// map are left as they are. Tensors still in their file are read through one reused buffer.
pub(crate) fn apply<M: TensorCollection<f32, D>, D: Backend>(
    module: &mut M,
    entries: &BTreeMap<String, TensorData>,
    path: &Path,
) -> Result<()> {
    take_read_error();
    let mut apply = Apply {
        entries,
        buf: Vec::new(),
        path,
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut apply,
    })?;
    Ok(())
}

struct Apply<'a> {
    entries: &'a BTreeMap<String, TensorData>,
    /// The one host buffer tensors are read into, grown to the largest.
    buf: Vec<f32>,
    path: &'a Path,
}

impl<D: Backend> TensorVisitor<f32, D> for Apply<'_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = Error;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (t, name): (&mut Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>> {
        let Some(entry) = self.entries.get(&name) else {
            return Ok(None);
        };
        match entry.source() {
            Some(source) => {
                let n = entry.numel();
                if self.buf.len() < n {
                    self.buf.resize(n, 0.0);
                }
                if let Err(reason) = source.copy_to_host(&mut self.buf[..n]) {
                    return Err(unreadable(self.path, reason).into());
                }
                t.copy_from(&self.buf[..n]);
            }
            None => match entry.as_f32() {
                Some(values) => t.copy_from(&values),
                None => {
                    return Err(unreadable(
                        self.path,
                        format!("tensor `{name}` does not hold f32 values"),
                    )
                    .into())
                }
            },
        }
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&mut N, String),
    ) -> Result<Option<N>> {
        if let Some(v) = self
            .entries
            .get(&name)
            .and_then(TensorData::as_f64)
            .and_then(|v| v.first().copied())
        {
            if let Some(x) = N::from(v) {
                *n = x;
            }
        }
        Ok(None)
    }
}

//! Weights in and out of fulgur checkpoints through [safetensors](https://huggingface.co/docs/safetensors),
//! the format PyTorch, Hugging Face and most other frameworks read and write.
//!
//! **Names and layouts.** A tensor keeps its name from the checkpoint's state dict: the module's field
//! path, dot-separated, with tuple elements numbered from 0 (`net.0.weight`, `net.2.bias`). That is the
//! name PyTorch gives the same parameter of the same structure (`nn.Sequential` numbers its children the
//! same way, activation layers included), so `model.load_state_dict(safetensors.torch.load_file(path))`
//! loads an export into the PyTorch twin of the module. Layouts agree too: dfdx's `Linear<I, O>` keeps
//! its weight as `[O, I]` (it computes `x · Wᵀ + b`), exactly as `torch.nn.Linear(I, O).weight`, and its
//! bias as `[O]`; convolution weights are `[out, in, kh, kw]` in both.
//!
//! **Metadata.** An export records where its weights come from, as safetensors metadata (strings):
//! `format` = `pt` (what `transformers` expects), `fulgur.module_type`, `fulgur.epoch`,
//! `fulgur.global_step`, the hyperparameters as JSON (`fulgur.hparams`, for people and Python) and as
//! hexadecimal CBOR (`fulgur.hparams.cbor`, lossless, what [`import_safetensors`] reads first).
//!
//! **Optimizer state** is left out unless asked for ([`ExportOptions::optimizer_prefix`]): then each
//! optimizer's buffers are stored as `{prefix}{i}.{parameter}.{slot}` (optimizer `i` counted from 0,
//! slots as fulgur names them: `exp_avg`, `exp_avg_sq`, `momentum_buffer`), with `fulgur.optimizer_prefix`
//! in the metadata so that an import leaves them out of the weights.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ciborium::Value;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::checkpoint::{
    read_checkpoint, replace_atomically, write_checkpoint, Checkpoint, CheckpointError, DType,
    OptimizerState, TensorData,
};

/// Metadata keys an export writes (see the [module documentation](self)).
pub mod meta {
    /// The producer's module type.
    pub const MODULE_TYPE: &str = "fulgur.module_type";
    /// The epoch of the checkpoint exported.
    pub const EPOCH: &str = "fulgur.epoch";
    /// Its global step.
    pub const GLOBAL_STEP: &str = "fulgur.global_step";
    /// The hyperparameters as JSON.
    pub const HPARAMS_JSON: &str = "fulgur.hparams";
    /// The hyperparameters as hexadecimal CBOR: lossless (bytes, integer keys, non-finite floats).
    pub const HPARAMS_CBOR: &str = "fulgur.hparams.cbor";
    /// The prefix of the optimizer tensors, when the export holds them.
    pub const OPTIMIZER_PREFIX: &str = "fulgur.optimizer_prefix";
}

/// Why an export or an import failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InteropError {
    /// Reading or writing the fulgur checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An operating-system call on a safetensors or hyperparameter file failed.
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`open`, `read`, `write`).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file, or one that cannot be written.
    #[error("`{}` is not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's element type has no fulgur counterpart.
    #[error("`{}`: tensor `{tensor}` is {dtype}; fulgur stores floating-point weights only (F32 and F64 as they are, F16 and BF16 widened to F32)", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its safetensors dtype.
        dtype: String,
    },
    /// Hyperparameters could not be read, converted or written.
    #[error("hyperparameters of `{}`: {reason}", path.display())]
    Hyperparameters {
        /// The file they come from or go to.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Two tensors would get one name.
    #[error("`{}`: two tensors would be named `{name}`; choose another optimizer prefix", path.display())]
    NameClash {
        /// The checkpoint exported.
        path: PathBuf,
        /// The name.
        name: String,
    },
}

/// What [`export_safetensors`] includes beyond the weights.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Also export the optimizer state, under this prefix (for example `"optimizer."`); `None`: weights only.
    pub optimizer_prefix: Option<String>,
}

/// What an export or an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// Tensors written.
    pub tensors: usize,
    /// Their data, in bytes (as stored in the output).
    pub bytes: u64,
    /// Tensors widened from F16/BF16 to F32 (imports only).
    pub widened: Vec<String>,
}

/// Writes the weights of the fulgur checkpoint `ckpt` (and with
/// [`optimizer_prefix`](ExportOptions::optimizer_prefix) its optimizer state) to the safetensors file
/// `to`, crash-safely (a temporary file, fsync, rename), with the metadata described in the
/// [module documentation](self). The checkpoint is read and verified first.
///
/// ```no_run
/// use fulgur_runtime::interop::{export_safetensors, ExportOptions};
///
/// let written = export_safetensors("best.ckpt", "model.safetensors", &ExportOptions::default())?;
/// println!("{} tensors, {} bytes", written.tensors, written.bytes);
/// # Ok::<(), fulgur_runtime::interop::InteropError>(())
/// ```
pub fn export_safetensors(
    ckpt: impl AsRef<Path>,
    to: impl AsRef<Path>,
    options: &ExportOptions,
) -> Result<Transferred, InteropError> {
    let (from, to) = (ckpt.as_ref(), to.as_ref());
    let ckpt = read_checkpoint(from)?;
    let mut tensors: BTreeMap<String, &TensorData> = ckpt
        .state_dict
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .collect();
    if let Some(prefix) = &options.optimizer_prefix {
        for (i, state) in ckpt.optimizer_states().enumerate() {
            for (name, tensor) in optimizer_tensors(state) {
                let name = format!("{prefix}{i}.{name}");
                if tensors.insert(name.clone(), tensor).is_some() {
                    return Err(InteropError::NameClash {
                        path: from.to_path_buf(),
                        name,
                    });
                }
            }
        }
    }
    let metadata = export_metadata(&ckpt, from, options)?;
    let bytes: Vec<(String, std::borrow::Cow<'_, [u8]>, &TensorData)> = tensors
        .into_iter()
        .map(|(name, t)| (name, t.le_bytes(), t))
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, t)| {
            let dtype = match t.dtype() {
                DType::F32 => Dtype::F32,
                DType::F64 => Dtype::F64,
            };
            TensorView::new(dtype, t.shape().to_vec(), data)
                .map(|view| (name.as_str(), view))
                .map_err(|e| InteropError::Safetensors {
                    path: to.to_path_buf(),
                    reason: format!("tensor `{name}`: {e:?}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let written = Transferred {
        tensors: views.len(),
        bytes: bytes.iter().map(|(_, d, _)| d.len() as u64).sum(),
        widened: Vec::new(),
    };
    let mut failure = None;
    let replaced = replace_atomically(to, |_, tmp| {
        // The crate opens the file itself (by path) and streams each tensor's bytes through a buffer.
        safetensors::serialize_to_file(views, &Some(metadata), tmp).map_err(|e| {
            failure = Some(e.to_string());
            CheckpointError::Io {
                path: to.to_path_buf(),
                op: "write",
                source: std::io::Error::other("safetensors serialization failed"),
            }
        })
    });
    match (replaced, failure) {
        (Ok(()), _) => Ok(written),
        (Err(_), Some(reason)) => Err(InteropError::Safetensors {
            path: to.to_path_buf(),
            reason,
        }),
        (Err(CheckpointError::Io { path, op, source }), None) => {
            Err(InteropError::Io { path, op, source })
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// The tensors of one optimizer, named `{parameter}.{slot}`.
fn optimizer_tensors(state: &OptimizerState) -> impl Iterator<Item = (String, &TensorData)> {
    state.params.iter().flat_map(|(param, slots)| {
        slots
            .iter()
            .map(move |(slot, t)| (format!("{param}.{slot}"), t))
    })
}

fn export_metadata(
    ckpt: &Checkpoint,
    from: &Path,
    options: &ExportOptions,
) -> Result<HashMap<String, String>, InteropError> {
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (meta::MODULE_TYPE.to_string(), ckpt.module_type.clone()),
        (meta::EPOCH.to_string(), ckpt.epoch.to_string()),
        (meta::GLOBAL_STEP.to_string(), ckpt.global_step.to_string()),
    ]);
    if let Some(prefix) = &options.optimizer_prefix {
        metadata.insert(meta::OPTIMIZER_PREFIX.to_string(), prefix.clone());
    }
    if let Some(hparams) = &ckpt.hyper_parameters {
        let mut cbor = Vec::new();
        ciborium::into_writer(hparams, &mut cbor).map_err(|e| InteropError::Hyperparameters {
            path: from.to_path_buf(),
            reason: format!("cannot be encoded: {e}"),
        })?;
        metadata.insert(meta::HPARAMS_CBOR.to_string(), hex(&cbor));
        // JSON cannot hold everything CBOR can (bytes, non-string keys, NaN): then only the CBOR goes.
        if let Ok(json) = hparams.deserialized::<serde_json::Value>() {
            metadata.insert(meta::HPARAMS_JSON.to_string(), json.to_string());
        }
    }
    Ok(metadata)
}

/// Writes a weights-only fulgur checkpoint `into` from the safetensors file `from`, which
/// [`load_from_checkpoint`](crate::module::LightningModule::load_from_checkpoint) then accepts: every tensor becomes a state-dict
/// entry of the same name (F16 and BF16 widened to F32), except the optimizer tensors of a fulgur
/// export. The hyperparameters are `hparams` when given (read them from JSON or YAML with
/// [`read_hparams`]), else those an export stored in the metadata, else none (a module whose
/// hyperparameters are `()` loads without).
pub fn import_safetensors(
    from: impl AsRef<Path>,
    into: impl AsRef<Path>,
    hparams: Option<Value>,
) -> Result<Transferred, InteropError> {
    let (from, into) = (from.as_ref(), into.as_ref());
    let io = |op| {
        move |source| InteropError::Io {
            path: from.to_path_buf(),
            op,
            source,
        }
    };
    let mut bytes = Vec::new();
    File::open(from)
        .map_err(io("open"))?
        .read_to_end(&mut bytes)
        .map_err(io("read"))?;
    let bad = |reason: String| InteropError::Safetensors {
        path: from.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let skip = metadata.get(meta::OPTIMIZER_PREFIX);
    let mut ckpt = Checkpoint::new(
        metadata
            .get(meta::MODULE_TYPE)
            .cloned()
            .unwrap_or_else(|| format!("imported from {}", from.display())),
    );
    ckpt.weights_only = true;
    let number = |key: &str| metadata.get(key).and_then(|v| v.parse::<u64>().ok());
    ckpt.epoch = number(meta::EPOCH).unwrap_or(0);
    ckpt.global_step = number(meta::GLOBAL_STEP).unwrap_or(0);
    ckpt.hyper_parameters = match hparams {
        Some(h) => Some(h),
        None => stored_hparams(&metadata, from)?,
    };
    let mut written = Transferred {
        tensors: 0,
        bytes: 0,
        widened: Vec::new(),
    };
    for (name, view) in st.tensors() {
        if skip.is_some_and(|prefix| name.starts_with(prefix.as_str())) {
            continue;
        }
        let shape = view.shape().to_vec();
        let data = view.data();
        let tensor = match view.dtype() {
            Dtype::F32 => TensorData::from_le_bytes(DType::F32, shape, data.to_vec()),
            Dtype::F64 => TensorData::from_le_bytes(DType::F64, shape, data.to_vec()),
            Dtype::F16 | Dtype::BF16 => {
                written.widened.push(name.clone());
                let widen = if view.dtype() == Dtype::F16 {
                    f16_to_f32
                } else {
                    bf16_to_f32
                };
                let values = data
                    .chunks_exact(2)
                    .map(|b| widen(u16::from_le_bytes([b[0], b[1]])))
                    .collect();
                Ok(TensorData::from_f32(shape, values))
            }
            other => {
                return Err(InteropError::UnsupportedDtype {
                    path: from.to_path_buf(),
                    tensor: name,
                    dtype: format!("{other:?}"),
                })
            }
        }
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        written.tensors += 1;
        written.bytes += tensor.le_bytes().len() as u64;
        ckpt.state_dict.insert(name, tensor);
    }
    written.widened.sort();
    write_checkpoint(into, &ckpt)?;
    Ok(written)
}

/// The hyperparameters an export stored: the CBOR copy when present (lossless), else the JSON one.
fn stored_hparams(
    metadata: &HashMap<String, String>,
    from: &Path,
) -> Result<Option<Value>, InteropError> {
    let bad = |key: &str, reason: String| InteropError::Hyperparameters {
        path: from.to_path_buf(),
        reason: format!("metadata `{key}` {reason}"),
    };
    if let Some(text) = metadata.get(meta::HPARAMS_CBOR) {
        let bytes =
            unhex(text).ok_or_else(|| bad(meta::HPARAMS_CBOR, "is not hexadecimal".into()))?;
        return ciborium::from_reader(bytes.as_slice())
            .map(Some)
            .map_err(|e| bad(meta::HPARAMS_CBOR, format!("is not CBOR: {e}")));
    }
    match metadata.get(meta::HPARAMS_JSON) {
        Some(text) => serde_json::from_str::<Value>(text)
            .map(Some)
            .map_err(|e| bad(meta::HPARAMS_JSON, format!("is not JSON: {e}"))),
        None => Ok(None),
    }
}

/// Reads hyperparameters from a JSON (`.json`) or YAML (`.yaml`, `.yml`) file, for
/// [`import_safetensors`].
pub fn read_hparams(path: impl AsRef<Path>) -> Result<Value, InteropError> {
    let path = path.as_ref();
    let bad = |reason: String| InteropError::Hyperparameters {
        path: path.to_path_buf(),
        reason,
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file = File::open(path).map_err(|source| InteropError::Io {
        path: path.to_path_buf(),
        op: "open",
        source,
    })?;
    let reader = BufReader::new(file);
    match extension.as_deref() {
        Some("json") => {
            serde_json::from_reader(reader).map_err(|e| bad(format!("are not valid JSON: {e}")))
        }
        Some("yaml" | "yml") => {
            serde_norway::from_reader(reader).map_err(|e| bad(format!("are not valid YAML: {e}")))
        }
        _ => Err(bad(
            "must be a `.json`, `.yaml` or `.yml` file (the extension tells the format)".into(),
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// IEEE 754 half precision to single precision, exactly (every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise the mantissa.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | (0xff << 23) | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 to single precision: bfloat16 is the upper half of an f32.
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests;

//! Encoding a [`Checkpoint`] in the format documented next to it (`format.rs`): the structure framed by
//! hand, "any" items through `ciborium`, tensor bytes straight from their buffers.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use super::hash::write_hashed;
use super::wire::{key, major, LoopsRepr, SchedulerRepr, FALSE, MAGIC, TRAILER_LEN, TRUE};
use super::{
    Checkpoint, CheckpointError, DType, HostSource, OptimizerState, SchedulerState, TensorData,
    FORMAT_NAME, FORMAT_VERSION,
};

/// Encodes `ckpt` into `writer` (magic, payload, trailer) and flushes it; `path_for_errors` only names
/// the destination in errors. [`write_checkpoint`](super::write_checkpoint) is this plus crash safety.
pub fn encode_checkpoint<W: Write>(
    writer: W,
    ckpt: &Checkpoint,
    path_for_errors: &Path,
) -> Result<(), CheckpointError> {
    encode(writer, ckpt, FORMAT_VERSION, path_for_errors)
}

pub(super) fn encode<W: Write>(
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
    let written = sink
        .inner
        .write_all(&MAGIC)
        .and_then(|()| sink.checkpoint(ckpt, version))
        .and_then(|()| {
            let mut trailer = [0; TRAILER_LEN as usize];
            trailer[..8].copy_from_slice(&sink.hasher.digest().to_le_bytes());
            trailer[8..16].copy_from_slice(&sink.len.to_le_bytes());
            trailer[16..].copy_from_slice(&MAGIC);
            sink.inner.write_all(&trailer)
        })
        .and_then(|()| sink.inner.flush());
    SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    written.map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    })
}

/// The payload's writer: counts its bytes and hashes the structure bytes.
pub(super) struct Sink<W> {
    pub(super) inner: W,
    pub(super) len: u64,
    pub(super) hasher: Xxh3,
}

thread_local! {
    /// The one host buffer that snapshots are copied into, tensor by tensor, so that a save's extra
    /// memory is its largest tensor, not the whole state; emptied when an encode ends.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
    pub(super) fn head(&mut self, major: u8, arg: u64) -> io::Result<()> {
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

    pub(super) fn text(&mut self, s: &str) -> io::Result<()> {
        self.head(major::TEXT, s.len() as u64)?;
        self.write_all(s.as_bytes())
    }

    pub(super) fn map(&mut self, len: usize) -> io::Result<()> {
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
            !c.more_optimizers.is_empty(),
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
            self.scheduler(s)?;
        }
        if !c.more_optimizers.is_empty() {
            self.text(key::MORE_OPTIMIZERS)?;
            self.head(major::ARRAY, c.more_optimizers.len() as u64)?;
            for entry in &c.more_optimizers {
                self.map(1 + usize::from(entry.scheduler.is_some()))?;
                self.text(key::ENTRY_OPTIMIZER)?;
                self.optimizer(&entry.optimizer)?;
                if let Some(s) = &entry.scheduler {
                    self.text(key::ENTRY_SCHEDULER)?;
                    self.scheduler(s)?;
                }
            }
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
            world_size: l.world_size.filter(|&w| w > 1),
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

    fn scheduler(&mut self, s: &SchedulerState) -> io::Result<()> {
        self.value(&SchedulerRepr {
            kind: &s.kind,
            state: &s.state,
        })
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
        let digest = match t.source() {
            Some(source) => self.snapshot(source, t.numel())?,
            None => self.data(&t.le_bytes())?,
        };
        self.text(key::XXH3)?;
        self.head(major::UINT, digest)
    }
}

impl<W: Write> Sink<W> {
    /// The `data` of a snapshot of `n` f32 values; returns their xxh3-64. Host values (CPU buffers)
    /// are written where they lie when the byte order allows; others are copied into the thread's one
    /// scratch buffer (as large as the largest such tensor), released, then written, so that the live
    /// tensor is free to be updated in place while its bytes go out.
    fn snapshot(&mut self, source: &dyn HostSource, n: usize) -> io::Result<u64> {
        if cfg!(target_endian = "little") {
            let mut write = |values: &[f32]| {
                if values.len() != n {
                    return Err(io::Error::other(format!(
                        "a snapshot holds {} values, its shape {n}",
                        values.len()
                    )));
                }
                self.data(bytemuck::cast_slice(values))
            };
            if let Some(digest) = source.write_in_place(&mut write) {
                // Written (or failed): the live tensor need not be copied on its next update any more.
                source.release();
                return digest;
            }
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < n {
                scratch.resize(n, 0.0);
            }
            let values = &mut scratch[..n];
            let copied = source.copy_to_host(values);
            source.release();
            copied.map_err(|e| io::Error::other(format!("copying a tensor to the host: {e}")))?;
            if cfg!(target_endian = "big") {
                values
                    .iter_mut()
                    .for_each(|v| *v = f32::from_bits(v.to_bits().to_le()));
            }
            self.data(bytemuck::cast_slice(values))
        })
    }

    /// A tensor's `data` byte string; returns its xxh3-64, hashing the bytes as they are written.
    fn data(&mut self, bytes: &[u8]) -> io::Result<u64> {
        self.head(major::BYTES, bytes.len() as u64)?;
        let digest = write_hashed(&mut self.inner, bytes)?;
        self.len += bytes.len() as u64;
        Ok(digest)
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
    }
}

#[cfg(test)]
mod tests {
    use ciborium::Value;

    use super::*;
    use crate::checkpoint::fixtures::*;

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

    /// [`full_checkpoint`] with two more optimizers: an SGD with a scheduler, an Adam without one.
    fn three_optimizers() -> Checkpoint {
        let mut c = full_checkpoint();
        let first = c.optimizer.clone().unwrap();
        let sgd = OptimizerState {
            kind: "sgd".into(),
            step: 9,
            lr: 0.5,
            config: Value::Null,
            params: [(
                "net.0.bias".to_string(),
                [(
                    "momentum_buffer".to_string(),
                    TensorData::from_f32(vec![2], vec![1.5, -2.0]),
                )]
                .into(),
            )]
            .into(),
        };
        c.more_optimizers = vec![
            crate::checkpoint::OptimizerEntry {
                optimizer: sgd,
                scheduler: Some(crate::checkpoint::SchedulerState {
                    kind: "cosine_annealing_lr".into(),
                    state: Value::Integer(3.into()),
                }),
            },
            crate::checkpoint::OptimizerEntry {
                optimizer: first,
                scheduler: None,
            },
        ];
        c
    }

    #[test]
    fn several_optimizers_round_trip_and_one_is_written_as_before() {
        let c = three_optimizers();
        let back = decoded(&encoded(&c)).unwrap();
        assert_eq!(normalized(&back), normalized(&c));
        assert_eq!(back.more_optimizers.len(), 2);

        // One optimizer: no `more_optimizers` entry, the payload's map as long as ever (11 + 3 optional).
        let one = encoded(&full_checkpoint());
        assert!(!one.windows(15).any(|w| w == b"more_optimizers"));
        assert_eq!(one[8], 0xa0 | 14, "a map of 14 entries");
        assert!(decoded(&one).unwrap().more_optimizers.is_empty());
        assert_eq!(encoded(&c)[8], 0xa0 | 15);
    }

    #[test]
    fn damage_in_a_later_optimizer_names_its_entry() {
        let c = three_optimizers();
        let mut file = encoded(&c);
        let at = position(&file, &1.5f32.to_le_bytes());
        file[at] ^= 1;
        let reason = corrupt_reason(decoded(&file));
        assert_eq!(
            reason,
            "checksum mismatch in optimizer state `net.0.bias`.`momentum_buffer`"
        );

        // An entry without its optimizer, and an empty list, are refused.
        let bytes = encoded(&c);
        let key = position(&bytes, b"more_optimizers");
        let mut renamed = bytes.clone();
        let inner = key + position(&bytes[key..], b"optimizer\xa5".as_slice());
        renamed[inner..inner + 9].copy_from_slice(b"optimizes");
        let reason = corrupt_reason(decoded(&renamed));
        assert!(
            reason
                .contains("`more_optimizers` entry 0 (optimizer 1) has an unknown key `optimizes`"),
            "{reason}"
        );
    }

    /// Snapshots encode to the bytes of the same values on the host, whether written where they lie or
    /// through the scratch buffer, and each is released once written (so the live tensor is no longer
    /// copied on its next update): a second encode of the same snapshot fails.
    #[test]
    fn snapshots_encode_as_host_tensors_and_are_released_once_written() {
        let a: Vec<f32> = (0..3000).map(|i| i as f32 * 0.25).collect();
        let b: Vec<f32> = (0..70).map(|i| -(i as f32)).collect();
        let mut host = Checkpoint::new("Net");
        host.state_dict
            .insert("a".into(), TensorData::from_f32(vec![30, 100], a.clone()));
        host.state_dict
            .insert("b".into(), TensorData::from_f32(vec![70], b.clone()));
        let (in_place, copied) = (Source::new(a, true), Source::new(b, false));
        let mut snap = Checkpoint::new("Net");
        snap.state_dict.insert(
            "a".into(),
            TensorData::snapshot(vec![30, 100], in_place.clone()),
        );
        snap.state_dict
            .insert("b".into(), TensorData::snapshot(vec![70], copied.clone()));

        assert_eq!(encoded(&snap), encoded(&host));
        assert_eq!((in_place.releases(), copied.releases()), (1, 1));
        let again = encode_checkpoint(Vec::new(), &snap, Path::new("x.ckpt"));
        let reason = again.unwrap_err().to_string();
        assert!(reason.contains("released"), "{reason}");
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
}

//! Checkpoints and helpers the unit tests of the encoder, the decoder and the writer share.

use std::collections::BTreeMap;
use std::path::Path;

use ciborium::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::wire::{key, MAGIC, TRAILER_LEN};
use super::{
    decode_checkpoint, encode_checkpoint, Checkpoint, CheckpointError, LoopState, OptimizerState,
    SchedulerState, TensorData,
};

pub(super) const PATH: &str = "memory.ckpt";

pub(super) fn full_checkpoint() -> Checkpoint {
    let mut c = Checkpoint::new("my_crate::Net");
    c.epoch = 3;
    c.global_step = 1234;
    let nan_payload = f32::from_bits(0x7fc0_1234);
    let special = vec![
        1.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        nan_payload,
        f32::from_bits(1),
    ];
    c.state_dict.insert(
        "net.0.weight".into(),
        TensorData::from_f32(vec![2, 3], special),
    );
    c.state_dict.insert(
        "net.0.bias".into(),
        TensorData::from_f32(vec![2], vec![0.5, -0.25]),
    );
    c.state_dict.insert(
        "net.1.momentum".into(),
        TensorData::from_f64(vec![], vec![0.1]),
    );
    c.state_dict.insert(
        "net.2.empty".into(),
        TensorData::from_f32(vec![0, 4], vec![]),
    );
    let mut slots = BTreeMap::new();
    slots.insert(
        "exp_avg".into(),
        TensorData::from_f32(vec![2, 3], vec![0.125; 6]),
    );
    slots.insert(
        "exp_avg_sq".into(),
        TensorData::from_f64(vec![2, 3], vec![f64::MIN_POSITIVE; 6]),
    );
    c.optimizer = Some(OptimizerState {
        kind: "adam".into(),
        step: 1234,
        lr: 1e-3,
        config: Value::Map(vec![
            (
                Value::Text("betas".into()),
                Value::Array(vec![Value::Float(0.9), Value::Float(0.999)]),
            ),
            (Value::Text("eps".into()), Value::Float(1e-8)),
        ]),
        params: BTreeMap::from([("net.0.weight".to_string(), slots)]),
    });
    c.scheduler = Some(SchedulerState {
        kind: "step_lr".into(),
        state: Value::Integer(7.into()),
    });
    c.loops = LoopState {
        epoch: 3,
        batches_done: 17,
        epoch_finished: false,
        global_step: 1234,
        total_batches: 80,
        seed: u64::MAX,
        metric_state: Some(Value::Map(vec![(
            Value::Text("loss".into()),
            Value::Float(2.5),
        )])),
        world_size: Some(4),
    };
    c.callbacks.insert(
        "ModelCheckpoint{monitor=val_loss}".into(),
        Value::Map(vec![
            (
                Value::Text("best_model_path".into()),
                Value::Text("ckpts/epoch=2.ckpt".into()),
            ),
            (Value::Text("best_model_score".into()), Value::Float(0.25)),
            (Value::Text("k".into()), Value::Integer((-3).into())),
            (Value::Text("raw".into()), Value::Bytes(vec![0, 1, 255])),
            (
                Value::Text("tagged".into()),
                Value::Tag(
                    42,
                    Box::new(Value::Array(vec![Value::Bool(true), Value::Null])),
                ),
            ),
        ]),
    );
    c.hyper_parameters = Some(Value::Map(vec![(
        Value::Text("hidden".into()),
        Value::Integer(64.into()),
    )]));
    c.extra
        .insert("note".into(), Value::Text("from on_save_checkpoint".into()));
    c
}

/// Tensors compared by dtype, shape and bytes (a read tensor holds bytes, a built one holds values).
pub(super) fn normalized(c: &Checkpoint) -> Checkpoint {
    let norm = |t: &TensorData| {
        TensorData::from_le_bytes(t.dtype(), t.shape().to_vec(), t.le_bytes().into_owned()).unwrap()
    };
    let mut c = c.clone();
    c.state_dict.values_mut().for_each(|t| *t = norm(t));
    let more = c.more_optimizers.iter_mut().map(|e| &mut e.optimizer);
    for o in c.optimizer.iter_mut().chain(more) {
        o.params
            .values_mut()
            .flat_map(|s| s.values_mut())
            .for_each(|t| *t = norm(t));
    }
    c
}

pub(super) fn encoded(c: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::new();
    encode_checkpoint(&mut out, c, Path::new(PATH)).unwrap();
    out
}

pub(super) fn decoded(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    decode_checkpoint(bytes, bytes.len() as u64, Path::new(PATH))
}

pub(super) fn position(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

pub(super) fn corrupt_reason(result: Result<Checkpoint, CheckpointError>) -> String {
    match result {
        Err(CheckpointError::Corrupt { path, reason }) => {
            assert_eq!(path, Path::new(PATH));
            reason
        }
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

/// The encoding of a checkpoint with no tensors whose `state_dict` entry comes right after
/// `format_version`, before the scalars: a valid file (entries may come in any order) that
/// [`read_checkpoint_header`] cannot rank. For tests of the readers that must still accept it.
pub(crate) fn scalars_after_tensors(global_step: u64) -> Vec<u8> {
    let mut ckpt = Checkpoint::new("reordered");
    ckpt.global_step = global_step;
    let mut bytes = Vec::new();
    encode_checkpoint(&mut bytes, &ckpt, Path::new("mem")).unwrap();
    let entry = [
        &[0x60 | key::STATE_DICT.len() as u8][..],
        key::STATE_DICT.as_bytes(),
        &[0xa0],
    ]
    .concat();
    let at = bytes.windows(entry.len()).position(|w| w == entry).unwrap();
    bytes.drain(at..at + entry.len());
    let version = [
        &[0x60 | key::FORMAT_VERSION.len() as u8][..],
        key::FORMAT_VERSION.as_bytes(),
        &[1],
    ]
    .concat();
    let after = bytes
        .windows(version.len())
        .position(|w| w == version)
        .unwrap()
        + version.len();
    bytes.splice(after..after, entry);
    // No tensor data: the structure checksum covers the whole payload.
    let end = bytes.len() - TRAILER_LEN as usize;
    let digest = xxh3_64(&bytes[MAGIC.len()..end]);
    bytes[end..end + 8].copy_from_slice(&digest.to_le_bytes());
    bytes
}

/// A snapshot source over host values, written in place or through the scratch buffer.
pub(crate) struct Source {
    values: std::sync::Mutex<Option<Vec<f32>>>,
    in_place: bool,
    released: std::sync::atomic::AtomicUsize,
}

impl Source {
    pub(crate) fn new(values: Vec<f32>, in_place: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            values: std::sync::Mutex::new(Some(values)),
            in_place,
            released: Default::default(),
        })
    }

    pub(crate) fn releases(&self) -> usize {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl super::HostSource for Source {
    fn copy_to_host(&self, dst: &mut [f32]) -> Result<(), String> {
        let values = self.values.lock().unwrap();
        dst.copy_from_slice(values.as_ref().ok_or("released")?);
        Ok(())
    }

    fn write_in_place(
        &self,
        write: &mut dyn FnMut(&[f32]) -> std::io::Result<u64>,
    ) -> Option<std::io::Result<u64>> {
        let values = self.values.lock().unwrap();
        match values.as_ref() {
            Some(v) if self.in_place => Some(write(v)),
            None if self.in_place => Some(Err(std::io::Error::other("released"))),
            _ => None,
        }
    }

    fn release(&self) {
        self.values.lock().unwrap().take();
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

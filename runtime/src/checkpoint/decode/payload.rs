//! The payload's entries: the preamble and its version check, the header, the whole checkpoint, its
//! tensors with their checksums, and the trailer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use ciborium::Value;
use xxhash_rust::xxh3::Xxh3;

use super::source::Source;
use super::CheckpointHeader;
use crate::checkpoint::wire::{key, major, LoopsRepr, SchedulerRepr, MAGIC, TRAILER_LEN};
use crate::checkpoint::{
    Checkpoint, CheckpointError, DType, LoopState, OptimizerEntry, OptimizerState, SchedulerState,
    TensorData, TensorSizeError, FORMAT_NAME, FORMAT_VERSION,
};

/// In a lazy read, f32 tensors of more bytes than this are read when their values are asked for; smaller
/// ones are read at once (they are in the reader's buffer anyway).
const LAZY_MIN: usize = 64 << 10;

/// A tensor's `data`: read and hashed, or (in a lazy read) where it lies in the file.
enum Data {
    Read(Vec<u8>, u64),
    Later { offset: u64, len: usize },
}

/// Accumulates the payload's entries; each is set once.
#[derive(Default)]
struct Entries {
    fulgur_version: Option<String>,
    module_type: Option<String>,
    epoch: Option<u64>,
    global_step: Option<u64>,
    weights_only: Option<bool>,
    state_dict: Option<BTreeMap<String, TensorData>>,
    optimizer: Option<OptimizerState>,
    scheduler: Option<SchedulerState>,
    more_optimizers: Option<Vec<OptimizerEntry>>,
    loops: Option<LoopState>,
    callbacks: Option<BTreeMap<String, Value>>,
    hyper_parameters: Option<Value>,
    extra: Option<BTreeMap<String, Value>>,
}

impl<R: Read> Source<'_, R> {
    /// The payload's map header, `format` and `format_version`, checked; returns the number of entries.
    ///
    /// A newer version is refused at once for a header read; a full read goes on as this build's version
    /// (see [`decode_checkpoint`](super::decode_checkpoint)) so that a damaged version field can be told
    /// from a newer file.
    fn preamble(&mut self, header_only: bool) -> Result<u64, CheckpointError> {
        let entries = self.map_len("the payload")?;
        let not_a_checkpoint = |reason| CheckpointError::NotACheckpoint {
            path: self.path.to_path_buf(),
            reason,
        };
        if self.text("the first key")? != key::FORMAT {
            return Err(self.corrupt("the payload does not start with `format`"));
        }
        let name = self.text("`format`")?;
        if name != FORMAT_NAME {
            return Err(not_a_checkpoint(format!(
                "its format is `{name}`, not `{FORMAT_NAME}`"
            )));
        }
        if self.text("the second key")? != key::FORMAT_VERSION {
            return Err(self.corrupt("the payload's second key is not `format_version`"));
        }
        let before = self.hasher.clone();
        let version = self.uint("`format_version`")?;
        if version > FORMAT_VERSION.into() {
            if header_only {
                return Err(self.unsupported(version, false));
            }
            // Writers encode the version in one byte (a CBOR integer below 24).
            const _: () = assert!(FORMAT_VERSION < 24);
            let mut alternative = before;
            alternative.update(&[FORMAT_VERSION as u8]);
            self.newer = Some((version, alternative));
        }
        if version == 0 {
            return Err(self.corrupt("its `format_version` reads 0, a version that does not exist"));
        }
        Ok(entries)
    }

    fn unsupported(&self, found: u64, intact: bool) -> CheckpointError {
        CheckpointError::UnsupportedVersion {
            path: self.path.to_path_buf(),
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
            intact,
        }
    }

    /// The error for a file whose `format_version` (`found`) is newer than this build's, once the rest
    /// was read as this build's version (`decoded`): damage when the checksums hold only with this
    /// build's version in place of the one read, a newer file when they hold as read, and either when
    /// the rest does not decode.
    pub(super) fn newer_version(
        &mut self,
        found: u64,
        alternative: Xxh3,
        decoded: Result<Checkpoint, CheckpointError>,
        payload_len: u64,
    ) -> CheckpointError {
        let stored = match decoded.and_then(|_| self.stored_digest(payload_len)) {
            Ok(stored) => stored,
            Err(e @ CheckpointError::Io { .. }) => return e,
            Err(_) => return self.unsupported(found, false),
        };
        if stored == self.hasher.digest() {
            self.unsupported(found, true)
        } else if stored == alternative.digest() {
            self.corrupt(format!(
                "its `format_version` reads {found}, but the file's checksums hold for version \
                 {FORMAT_VERSION}: the version field is damaged"
            ))
        } else {
            self.unsupported(found, false)
        }
    }

    /// The scalar entries written before the tensors, up to the first other entry.
    pub(super) fn header(&mut self) -> Result<CheckpointHeader, CheckpointError> {
        let e = self.entries(true)?;
        let missing =
            |key: &str| self.corrupt(format!("the payload has no `{key}` before the tensors"));
        Ok(CheckpointHeader {
            fulgur_version: e
                .fulgur_version
                .ok_or_else(|| missing(key::FULGUR_VERSION))?,
            module_type: e.module_type.ok_or_else(|| missing(key::MODULE_TYPE))?,
            epoch: e.epoch.ok_or_else(|| missing(key::EPOCH))?,
            global_step: e.global_step.ok_or_else(|| missing(key::GLOBAL_STEP))?,
            weights_only: e.weights_only.ok_or_else(|| missing(key::WEIGHTS_ONLY))?,
        })
    }

    /// The payload's entries; with `header_only`, only the scalars before the first other entry.
    fn entries(&mut self, header_only: bool) -> Result<Entries, CheckpointError> {
        let entries = self.preamble(header_only)?;
        let mut e = Entries::default();
        let mut seen = BTreeSet::from([key::FORMAT.to_string(), key::FORMAT_VERSION.to_string()]);
        for _ in 2..entries {
            let key = self.key(&mut seen, "the payload")?;
            let what = format!("`{key}`");
            match key.as_str() {
                key::FULGUR_VERSION => e.fulgur_version = Some(self.text(&what)?),
                key::MODULE_TYPE => e.module_type = Some(self.text(&what)?),
                key::EPOCH => e.epoch = Some(self.uint(&what)?),
                key::GLOBAL_STEP => e.global_step = Some(self.uint(&what)?),
                key::WEIGHTS_ONLY => e.weights_only = Some(self.bool(&what)?),
                _ if header_only => break,
                key::STATE_DICT => e.state_dict = Some(self.state_dict()?),
                key::OPTIMIZER => e.optimizer = Some(self.optimizer()?),
                key::SCHEDULER => e.scheduler = Some(self.scheduler(&what)?),
                key::MORE_OPTIMIZERS => e.more_optimizers = Some(self.more_optimizers()?),
                key::LOOPS => {
                    let l: LoopsRepr<Value> = self.value(&what)?;
                    if l.world_size == Some(0) {
                        return Err(self.corrupt("the loops' `world_size` is 0"));
                    }
                    e.loops = Some(LoopState {
                        epoch: l.epoch,
                        batches_done: l.batches_done,
                        epoch_finished: l.epoch_finished,
                        global_step: l.global_step,
                        total_batches: l.total_batches,
                        seed: l.seed,
                        metric_state: l.metric_state,
                        world_size: l.world_size,
                    });
                }
                key::CALLBACKS => e.callbacks = Some(self.value(&what)?),
                key::HYPER_PARAMETERS => e.hyper_parameters = Some(self.value(&what)?),
                key::EXTRA => e.extra = Some(self.value(&what)?),
                _ => return Err(self.corrupt(format!("the payload has an unknown key {what}"))),
            }
        }
        Ok(e)
    }

    /// The whole payload, then the trailer's checksum: the checkpoint, or the first error (a file of a
    /// newer format is named as such, with what it holds).
    pub(super) fn whole_checkpoint(mut self) -> Result<Checkpoint, CheckpointError> {
        let payload_len = self.remaining;
        let ckpt = self.checkpoint();
        if let Some((found, alternative)) = self.newer.take() {
            return Err(self.newer_version(found, alternative, ckpt, payload_len));
        }
        let ckpt = ckpt?;
        self.trailer(payload_len)?;
        Ok(ckpt)
    }

    pub(super) fn checkpoint(&mut self) -> Result<Checkpoint, CheckpointError> {
        let e = self.entries(false)?;
        let missing = |key: &str| self.corrupt(format!("the payload has no `{key}`"));
        Ok(Checkpoint {
            fulgur_version: e
                .fulgur_version
                .ok_or_else(|| missing(key::FULGUR_VERSION))?,
            epoch: e.epoch.ok_or_else(|| missing(key::EPOCH))?,
            global_step: e.global_step.ok_or_else(|| missing(key::GLOBAL_STEP))?,
            weights_only: e.weights_only.ok_or_else(|| missing(key::WEIGHTS_ONLY))?,
            state_dict: e.state_dict.ok_or_else(|| missing(key::STATE_DICT))?,
            optimizer: e.optimizer,
            scheduler: e.scheduler,
            more_optimizers: e.more_optimizers.unwrap_or_default(),
            loops: e.loops.ok_or_else(|| missing(key::LOOPS))?,
            callbacks: e.callbacks.ok_or_else(|| missing(key::CALLBACKS))?,
            hyper_parameters: e.hyper_parameters,
            module_type: e.module_type.ok_or_else(|| missing(key::MODULE_TYPE))?,
            extra: e.extra.ok_or_else(|| missing(key::EXTRA))?,
        })
    }

    fn state_dict(&mut self) -> Result<BTreeMap<String, TensorData>, CheckpointError> {
        let what = "`state_dict`";
        let mut tensors = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            let name = self.key(&mut seen, what)?;
            let tensor = self.tensor(&format!("tensor `{name}`"))?;
            tensors.insert(name, tensor);
        }
        Ok(tensors)
    }

    fn scheduler(&mut self, what: &str) -> Result<SchedulerState, CheckpointError> {
        let s: SchedulerRepr<String, Value> = self.value(what)?;
        Ok(SchedulerState {
            kind: s.kind,
            state: s.state,
        })
    }

    fn more_optimizers(&mut self) -> Result<Vec<OptimizerEntry>, CheckpointError> {
        let what = "`more_optimizers`";
        let len = self.expect(major::ARRAY, what)?;
        if len == 0 {
            // Writers leave the entry out instead.
            return Err(self.corrupt(format!("{what} is empty")));
        }
        let mut entries = Vec::new();
        for i in 0..len {
            // `i + 1`: the optimizer's index in `configure_optimizers`.
            let entry_what = format!("{what} entry {i} (optimizer {})", i + 1);
            let (mut optimizer, mut scheduler) = (None, None);
            let mut seen = BTreeSet::new();
            for _ in 0..self.map_len(&entry_what)? {
                match self.key(&mut seen, &entry_what)?.as_str() {
                    key::ENTRY_OPTIMIZER => optimizer = Some(self.optimizer()?),
                    key::ENTRY_SCHEDULER => {
                        scheduler = Some(self.scheduler(&format!("the scheduler of {entry_what}"))?)
                    }
                    other => {
                        return Err(
                            self.corrupt(format!("{entry_what} has an unknown key `{other}`"))
                        )
                    }
                }
            }
            let optimizer = optimizer.ok_or_else(|| {
                self.corrupt(format!("{entry_what} has no `{}`", key::ENTRY_OPTIMIZER))
            })?;
            entries.push(OptimizerEntry {
                optimizer,
                scheduler,
            });
        }
        Ok(entries)
    }

    fn optimizer(&mut self) -> Result<OptimizerState, CheckpointError> {
        let what = "`optimizer`";
        let (mut kind, mut step, mut lr, mut config, mut params) = (None, None, None, None, None);
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            match self.key(&mut seen, what)?.as_str() {
                key::KIND => kind = Some(self.text("the optimizer's `kind`")?),
                key::STEP => step = Some(self.uint("the optimizer's `step`")?),
                key::LR => lr = Some(self.value("the optimizer's `lr`")?),
                key::CONFIG => config = Some(self.value("the optimizer's `config`")?),
                key::PARAMS => params = Some(self.optimizer_params()?),
                other => return Err(self.corrupt(format!("{what} has an unknown key `{other}`"))),
            }
        }
        let missing = |key: &str| self.corrupt(format!("{what} has no `{key}`"));
        Ok(OptimizerState {
            kind: kind.ok_or_else(|| missing(key::KIND))?,
            step: step.ok_or_else(|| missing(key::STEP))?,
            lr: lr.ok_or_else(|| missing(key::LR))?,
            config: config.ok_or_else(|| missing(key::CONFIG))?,
            params: params.ok_or_else(|| missing(key::PARAMS))?,
        })
    }

    fn optimizer_params(
        &mut self,
    ) -> Result<BTreeMap<String, BTreeMap<String, TensorData>>, CheckpointError> {
        let what = "the optimizer's `params`";
        let mut params = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            let name = self.key(&mut seen, what)?;
            let slots_what = format!("the optimizer state of `{name}`");
            let mut slots = BTreeMap::new();
            let mut seen_slots = BTreeSet::new();
            for _ in 0..self.map_len(&slots_what)? {
                let slot = self.key(&mut seen_slots, &slots_what)?;
                let tensor = self.tensor(&format!("optimizer state `{name}`.`{slot}`"))?;
                slots.insert(slot, tensor);
            }
            params.insert(name, slots);
        }
        Ok(params)
    }

    fn tensor(&mut self, what: &str) -> Result<TensorData, CheckpointError> {
        let (mut dtype, mut shape, mut data, mut stored) = (None, None::<Vec<usize>>, None, None);
        let mut seen = BTreeSet::new();
        for _ in 0..self.map_len(what)? {
            match self.key(&mut seen, what)?.as_str() {
                key::DTYPE => {
                    let name = self.text(&format!("the dtype of {what}"))?;
                    dtype = Some(match name.as_str() {
                        "f32" => DType::F32,
                        "f64" => DType::F64,
                        _ => {
                            return Err(
                                self.corrupt(format!("{what} has the unknown dtype `{name}`"))
                            )
                        }
                    });
                }
                key::SHAPE => {
                    let shape_what = format!("the shape of {what}");
                    let rank = self.expect(major::ARRAY, &shape_what)?;
                    let mut dims = Vec::new();
                    for _ in 0..rank {
                        let dim = self.uint(&shape_what)?;
                        dims.push(usize::try_from(dim).map_err(|_| {
                            self.corrupt(format!(
                                "{what} has a dimension of {dim}, too large for this machine"
                            ))
                        })?);
                    }
                    shape = Some(dims);
                }
                key::DATA => {
                    let claimed = self.expect(major::BYTES, what)?;
                    let len = self.length(claimed, what)?;
                    if let (Some(dtype), Some(shape)) = (dtype, &shape) {
                        check_size(dtype, shape, len)
                            .map_err(|e| self.corrupt(format!("{what} {e}")))?;
                    }
                    let skip = match &self.lazy {
                        Some(lazy) if dtype == Some(DType::F32) && len > LAZY_MIN => {
                            Some(lazy.skip)
                        }
                        _ => None,
                    };
                    data = Some(match skip {
                        Some(skip) => Data::Later {
                            offset: self.skip_data(skip, len, what)?,
                            len,
                        },
                        None => {
                            let (bytes, digest) = self.data(len, what)?;
                            Data::Read(bytes, digest)
                        }
                    });
                }
                key::XXH3 => stored = Some(self.uint(&format!("the checksum of {what}"))?),
                other => return Err(self.corrupt(format!("{what} has an unknown key `{other}`"))),
            }
        }
        let missing = |key: &str| self.corrupt(format!("{what} has no `{key}`"));
        let dtype = dtype.ok_or_else(|| missing(key::DTYPE))?;
        let shape = shape.ok_or_else(|| missing(key::SHAPE))?;
        let data = data.ok_or_else(|| missing(key::DATA))?;
        let stored = stored.ok_or_else(|| missing(key::XXH3))?;
        let (bytes, computed) = match data {
            Data::Read(bytes, computed) => (bytes, computed),
            Data::Later { offset, len } => {
                check_size(dtype, &shape, len).map_err(|e| self.corrupt(format!("{what} {e}")))?;
                let file = match &self.lazy {
                    Some(lazy) => std::sync::Arc::clone(&lazy.file),
                    None => return Err(self.corrupt(format!("{what} was not read"))),
                };
                return Ok(file.tensor(shape, offset, len, stored, what));
            }
        };
        let tensor = TensorData::from_le_bytes(dtype, shape, bytes)
            .map_err(|e| self.corrupt(format!("{what} {e}")))?;
        if computed != stored {
            return Err(self.corrupt(format!("checksum mismatch in {what}")));
        }
        Ok(tensor)
    }

    pub(super) fn trailer(mut self, payload_len: u64) -> Result<(), CheckpointError> {
        if self.stored_digest(payload_len)? != self.hasher.digest() {
            return Err(
                self.corrupt("checksum mismatch in the header (the payload outside tensor data)")
            );
        }
        Ok(())
    }

    /// Reads and checks the trailer; returns the structure checksum it stores.
    fn stored_digest(&mut self, payload_len: u64) -> Result<u64, CheckpointError> {
        if self.remaining != 0 {
            return Err(self.corrupt(format!(
                "the payload ends at byte {}, but the trailer starts at byte {}",
                self.pos,
                self.pos + self.remaining
            )));
        }
        let mut trailer = [0; TRAILER_LEN as usize];
        self.inner
            .read_exact(&mut trailer)
            .map_err(|e| self.read_error(e, "the trailer"))?;
        let field = |range: std::ops::Range<usize>| {
            let mut le = [0; 8];
            le.copy_from_slice(&trailer[range]);
            u64::from_le_bytes(le)
        };
        if trailer[16..] != MAGIC {
            return Err(self.corrupt("its trailer is damaged (it does not end with b\"FULGURCK\")"));
        }
        if field(8..16) != payload_len {
            return Err(self.corrupt(format!(
                "its trailer gives a payload of {} bytes, but the payload holds {payload_len}",
                field(8..16)
            )));
        }
        Ok(field(0..8))
    }
}

fn check_size(dtype: DType, shape: &[usize], len: usize) -> Result<(), TensorSizeError> {
    match dtype.byte_len(shape) {
        Some(expected) if expected == len => Ok(()),
        expected => Err(TensorSizeError {
            dtype,
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            found: len,
        }),
    }
}

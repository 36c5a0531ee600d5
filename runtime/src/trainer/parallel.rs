//! What the loops do differently on several processes (data parallelism); nothing here changes a run of
//! one process, where every function returns its input.
//!
//! Every rank runs the same loops and takes the same decisions, so the ranks meet in the same
//! collectives in the same order: rank 0's weights (or the checkpoint rank 0 resumes from) reach
//! every rank before the first step; every logged value is reduced across ranks as it is logged (a
//! sample-weighted mean), so `callback_metrics`, epoch aggregates and every callback's decision are the
//! same everywhere, and so is the checkpointed accumulator; the data is cut into equal shares.

use std::path::{Path, PathBuf};

use super::{CkptPath, Trainer};
use crate::checkpoint::{decode_checkpoint, encode_checkpoint, Checkpoint, TensorData};
use crate::device::Backend;
use crate::metrics::{MetricSpec, MetricValue, Reduce};
use crate::module::{load_state_dict, state_dict, LightningModule};
use crate::strategy::{ReduceOp, Strategy};
use crate::{Error, Result};

impl<M: LightningModule<D>, D: Backend> Trainer<M, D> {
    /// Resolves and reads `ckpt_path` on rank 0 and hands every other rank the same checkpoint, bytes
    /// and all, so that every rank restores the same state even where the ranks do not share a file
    /// system.
    pub(super) fn resolve_shared(
        &mut self,
        ckpt_path: Option<CkptPath>,
    ) -> Result<Option<(PathBuf, Checkpoint)>> {
        let Some(p) = ckpt_path else {
            return Ok(None);
        };
        if self.strategy.world_size() <= 1 {
            return self.resolve_ckpt_path(p);
        }
        self.state.resumed_by_path = matches!(p, CkptPath::Path(_));
        let mut bytes = Vec::new();
        if self.strategy.is_global_zero() {
            if let Some((path, ckpt)) = self.resolve_ckpt_path(p)? {
                let path_bytes = path.to_string_lossy().into_owned().into_bytes();
                bytes.extend_from_slice(&(path_bytes.len() as u64).to_le_bytes());
                bytes.extend_from_slice(&path_bytes);
                encode_checkpoint(&mut bytes, &ckpt, &path)?;
            }
        }
        self.strategy.broadcast(&mut bytes, 0)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let (path, ckpt) = split_shared(&bytes)?;
        Ok(Some((path, ckpt)))
    }

    /// Gives every rank rank 0's weights (every tensor of the module, buffers included), so that all
    /// start identical whatever their devices' seeds: each rank lays its own tensors end to end, in name
    /// order, and rank 0's bytes replace them.
    pub(super) fn broadcast_weights(&mut self) -> Result<()> {
        if self.strategy.world_size() <= 1 {
            return Ok(());
        }
        let module = self.module.as_mut().ok_or_else(super::fit::no_module)?;
        let own = state_dict(module)?;
        let mut bytes: Vec<u8> = own
            .values()
            .flat_map(|t| t.le_bytes().into_owned())
            .collect();
        let own_len = bytes.len();
        self.strategy.broadcast(&mut bytes, 0)?;
        if self.strategy.is_global_zero() {
            return Ok(());
        }
        if bytes.len() != own_len {
            return Err(Error::config(
                "strategy",
                format!(
                    "rank 0's module `{}` has {} bytes of weights and rank {}'s has {own_len}: every rank \
                     must build the same module",
                    std::any::type_name::<M>(),
                    bytes.len(),
                    self.strategy.rank()
                ),
            ));
        }
        let mut received = std::collections::BTreeMap::new();
        let mut rest = bytes.as_slice();
        for (name, t) in own {
            let (mine, tail) = rest.split_at(t.le_bytes().len());
            rest = tail;
            let tensor = TensorData::from_le_bytes(t.dtype(), t.shape().to_vec(), mine.to_vec())
                .map_err(|e| Error::user(format!("rank 0's tensor `{name}`: {e}")))?;
            received.insert(name, tensor);
        }
        load_state_dict(module, &received, true, Path::new("<rank 0's weights>"))
    }

    /// Rank 0's logger directory on every rank: each rank's logger picks the next free `version_N`
    /// by looking at the disk, and rank 0 may have created one before another rank looks.
    pub(super) fn share_log_dir(&mut self) -> Result<()> {
        if self.strategy.world_size() <= 1 {
            return Ok(());
        }
        let Some(dir) = &self.state.log_dir else {
            return Ok(());
        };
        let mut bytes = dir.to_string_lossy().into_owned().into_bytes();
        self.strategy.broadcast(&mut bytes, 0)?;
        self.state.log_dir = Some(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(())
    }
}

/// `(path, checkpoint)` from the bytes [`Trainer::resolve_shared`] broadcasts: the path's length, the
/// path, the encoded checkpoint.
fn split_shared(bytes: &[u8]) -> Result<(PathBuf, Checkpoint)> {
    let bad = || Error::user("the checkpoint broadcast by rank 0 arrived damaged");
    let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad())?;
    if len > rest.len() {
        return Err(bad());
    }
    let (path, encoded) = rest.split_at(len);
    let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
    let ckpt = decode_checkpoint(encoded, encoded.len() as u64, &path)?;
    Ok((path, ckpt))
}

/// The seed of rank `rank`'s dropout masks: the run's seed on rank 0, so a single process draws what it
/// always drew, and another seed on every other rank, so that ranks do not drop the same units of
/// their different samples.
pub(super) fn dropout_seed(seed: u64, rank: usize) -> u64 {
    seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Fails on every rank alike when the ranks' loaders disagree on the number of batches: a rank with
/// fewer would leave the others waiting in a collective it never joins.
pub(super) fn agree_on_batches(strategy: &dyn Strategy, loader: &str, n: usize) -> Result<()> {
    if strategy.world_size() <= 1 {
        return Ok(());
    }
    let mut range = [n as f64, -(n as f64)];
    strategy.all_reduce(&mut range, ReduceOp::Max)?;
    let (most, fewest) = (range[0], -range[1]);
    if most != fewest {
        return Err(Error::config(
            "strategy",
            format!(
                "the {loader} loaders of the {} ranks hand out between {fewest} and {most} batches per \
                 epoch; every rank must have the same number (`DataLoader::shard` gives each rank an \
                 equal share)",
                strategy.world_size()
            ),
        ));
    }
    Ok(())
}

/// The values one step logged, each reduced over the ranks with the metric's own `reduce` (as
/// Lightning's `sync_dist` does with `reduce_fx`): `"mean"` by the ranks' `weight`s (their batch
/// sizes), `"sum"`, `"max"`, `"min"`; and the ranks' total weight. A value logged on some ranks only is
/// reduced over those. Unchanged in a single process.
pub(super) fn sync_logged(
    strategy: &dyn Strategy,
    registry: &[MetricSpec],
    values: Vec<(usize, MetricValue)>,
    weight: f64,
) -> Result<(Vec<(usize, MetricValue)>, f64)> {
    if strategy.world_size() <= 1 {
        return Ok((values, weight));
    }
    // Summed, per registry entry: the value (× weight for a mean), the weight, the ranks that logged
    // it; then the total weight. Maxima of the values of `max` entries and of the negated values of
    // `min` entries, in a second collective when there are any.
    let n = registry.len();
    let mut sums = vec![0.0; 3 * n + 1];
    let extremes = registry
        .iter()
        .any(|s| matches!(s.reduce, Reduce::Max | Reduce::Min));
    let mut maxima = vec![f64::NEG_INFINITY; if extremes { n } else { 0 }];
    for (i, v) in &values {
        let (Some(spec), v) = (registry.get(*i), v.as_f64()) else {
            continue;
        };
        match spec.reduce {
            Reduce::Mean => sums[3 * i] = v * weight,
            Reduce::Sum => sums[3 * i] = v,
            Reduce::Max => maxima[*i] = v,
            Reduce::Min => maxima[*i] = -v,
        }
        sums[3 * i + 1] = weight;
        sums[3 * i + 2] = 1.0;
    }
    sums[3 * n] = weight;
    strategy.all_reduce(&mut sums, ReduceOp::Sum)?;
    if extremes {
        strategy.all_reduce(&mut maxima, ReduceOp::Max)?;
    }
    let synced = registry
        .iter()
        .enumerate()
        .filter(|&(i, _)| sums[3 * i + 2] > 0.0)
        .map(|(i, spec)| {
            let v = match spec.reduce {
                Reduce::Mean => sums[3 * i] / sums[3 * i + 1],
                Reduce::Sum => sums[3 * i],
                Reduce::Max => maxima[i],
                Reduce::Min => -maxima[i],
            };
            (i, MetricValue::from_f64(v, spec.kind))
        })
        .collect();
    Ok((synced, sums[3 * n]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricKind;

    const REG: &[MetricSpec] = &[
        MetricSpec::train("loss"),
        MetricSpec::train("only_there"),
        MetricSpec::train("count").kind(MetricKind::Int),
        MetricSpec::train("correct").reduce(Reduce::Sum),
        MetricSpec::train("worst").reduce(Reduce::Max),
        MetricSpec::train("best").reduce(Reduce::Min),
    ];

    #[test]
    fn logged_values_are_reduced_over_the_ranks_with_their_own_reduction() {
        // Here, 3 samples: loss 1.0, count 4, correct 2, worst 0.5, best 0.25. There, 1 sample: loss
        // 3.0, only_there 7.0, count 6, correct 1, worst 0.75, best 0.5; as rank 1 would send them:
        // per entry (value, or value × weight for a mean), weight, 1; then the total weight; then the
        // maxima (values of `max` entries, negated values of `min` entries).
        let mut theirs = vec![
            3.0, 1.0, 1.0, // loss
            7.0, 1.0, 1.0, // only_there
            6.0, 1.0, 1.0, // count
            1.0, 1.0, 1.0, // correct
            0.0, 1.0, 1.0, // worst
            0.0, 1.0, 1.0, // best
            1.0, // weight
        ];
        theirs.extend([f64::NEG_INFINITY; 4]);
        theirs.extend([0.75, -0.5]);
        // The second collective (the maxima) reads from the end of `theirs`.
        let there = Partner { theirs };
        let here = vec![
            (0, MetricValue::F32(1.0)),
            (2, MetricValue::Int(4)),
            (3, MetricValue::F32(2.0)),
            (4, MetricValue::F32(0.5)),
            (5, MetricValue::F32(0.25)),
        ];
        let (synced, weight) = sync_logged(&there, REG, here, 3.0).unwrap();
        assert_eq!(weight, 4.0);
        assert_eq!(
            synced,
            [
                (0, MetricValue::F32(1.5)),
                (1, MetricValue::F32(7.0)),
                (2, MetricValue::F64(4.5)),
                (3, MetricValue::F32(3.0)),
                (4, MetricValue::F32(0.75)),
                (5, MetricValue::F32(0.25)),
            ]
        );
    }

    /// Rank 0 of two, whose partner sent `theirs`: a sum takes the partner's values from the start of
    /// `theirs`, a maximum from its end (so one `theirs` serves both collectives of one call).
    struct Partner {
        theirs: Vec<f64>,
    }

    impl Strategy for Partner {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, _: &mut Vec<u8>, _: usize) -> Result<()> {
            Ok(())
        }
        fn all_reduce(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
            let theirs = match op {
                ReduceOp::Sum => &self.theirs[..values.len()],
                _ => &self.theirs[self.theirs.len() - values.len()..],
            };
            for (v, t) in values.iter_mut().zip(theirs) {
                *v = match op {
                    ReduceOp::Sum => *v + t,
                    ReduceOp::Max => v.max(*t),
                    _ => unreachable!("not used here"),
                };
            }
            Ok(())
        }
        fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_rank_draws_its_own_dropout_masks_and_rank_zero_those_of_one_process() {
        assert_eq!(dropout_seed(42, 0), 42);
        let seeds: std::collections::BTreeSet<u64> = (0..64).map(|r| dropout_seed(42, r)).collect();
        assert_eq!(seeds.len(), 64);
    }

    #[test]
    fn one_process_keeps_its_values() {
        let values = vec![(0, MetricValue::F32(2.0))];
        let single = crate::strategy::SingleProcess;
        assert_eq!(
            sync_logged(&single, REG, values.clone(), 5.0).unwrap(),
            (values, 5.0)
        );
    }

    #[test]
    fn loaders_of_unequal_length_are_refused_on_every_rank() {
        let longer = Partner {
            theirs: vec![12.0, -12.0],
        };
        let err = agree_on_batches(&longer, "training", 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 10 and 12 batches"), "{err}");
        let same = Partner {
            theirs: vec![10.0, -10.0],
        };
        agree_on_batches(&same, "training", 10).unwrap();
    }

    #[test]
    fn a_damaged_broadcast_checkpoint_is_an_error() {
        assert!(split_shared(&[1, 2]).is_err());
        let mut bytes = 100u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"short");
        assert!(split_shared(&bytes).is_err());
        let mut good = Vec::new();
        let path = Path::new("a.ckpt");
        good.extend_from_slice(&6u64.to_le_bytes());
        good.extend_from_slice(b"a.ckpt");
        encode_checkpoint(&mut good, &Checkpoint::new("m"), path).unwrap();
        let (p, c) = split_shared(&good).unwrap();
        assert_eq!((p.as_path(), c.module_type.as_str()), (path, "m"));
    }
}

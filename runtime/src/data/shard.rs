//! One rank's share of an epoch (data parallelism), by Lightning's `DistributedSampler` rule.

use super::{batch_rows, permutation};
use crate::{Error, Result};

/// Which share of every epoch a rank takes: rank `rank` of `world_size`, by the rule of PyTorch's
/// `DistributedSampler` (with `drop_last=False`), which Lightning installs for data-parallel runs.
///
/// The epoch's order of all `n` samples is padded to `ceil(n / world_size) * world_size` positions by
/// repeating samples from its start (wrapping round again when `n < world_size`), and rank `r` takes
/// positions `r`, `r + world_size`, `r + 2 * world_size`, …. Every rank therefore gets
/// `ceil(n / world_size)` samples, the same count on every rank; when `world_size` does not divide `n`,
/// the first `ceil(n / world_size) * world_size - n` samples of the epoch's order are seen twice in
/// that epoch, by different ranks (more often when `n < world_size`), and count as often in epoch
/// means. With `n == 0`, every share is empty.
///
/// The share is a pure function of the epoch's order and `(rank, world_size)`, so a loader whose order
/// depends only on `(seed, epoch)` stays resumable in the middle of an epoch. [`Shard::default`] is
/// the whole epoch (rank 0 of 1).
///
/// ```
/// use fulgur_runtime::data::Shard;
///
/// // 5 samples over 2 ranks: the order is padded with its first sample, rank 1 gets it again.
/// let order = ['a', 'b', 'c', 'd', 'e'];
/// assert_eq!(Shard::new(0, 2)?.select(&order), ['a', 'c', 'e']);
/// assert_eq!(Shard::new(1, 2)?.select(&order), ['b', 'd', 'a']);
/// assert_eq!(Shard::new(1, 2)?.num_samples(order.len()), 3);
/// assert!(Shard::new(2, 2).is_err());
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    rank: usize,
    world_size: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            rank: 0,
            world_size: 1,
        }
    }
}

impl Shard {
    /// Rank `rank`'s share out of `world_size` ranks; a configuration error naming `strategy` when
    /// `world_size` is 0 or `rank` is not below it.
    pub fn new(rank: usize, world_size: usize) -> Result<Self> {
        if world_size == 0 {
            return Err(Error::config(
                "strategy",
                format!(
                    "cannot shard the data for rank {rank} of a world size of 0: the `strategy` \
                     must report at least one process"
                ),
            ));
        }
        if rank >= world_size {
            return Err(Error::config(
                "strategy",
                format!(
                    "cannot shard the data for rank {rank} of a world size of {world_size}: the \
                     `strategy` must report a rank in 0..{world_size}"
                ),
            ));
        }
        Ok(Self { rank, world_size })
    }

    /// This rank.
    pub fn rank(self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(self) -> usize {
        self.world_size
    }

    /// The samples of this share of an epoch of `n` samples: `ceil(n / world_size)`, on every rank.
    pub fn num_samples(self, n: usize) -> usize {
        n.div_ceil(self.world_size)
    }

    /// The positions in an epoch's order of `n` samples that this share takes, in order: `rank`,
    /// `rank + world_size`, …, each taken modulo `n` (the padding repeats the order from its start).
    pub fn positions(self, n: usize) -> impl Iterator<Item = usize> {
        let Self { rank, world_size } = self;
        (0..self.num_samples(n)).map(move |k| (rank + k * world_size) % n)
    }

    /// This share of an epoch's `order`: the items at [`positions`](Self::positions).
    pub fn select<T: Clone>(self, order: &[T]) -> Vec<T> {
        self.positions(order.len())
            .map(|p| order[p].clone())
            .collect()
    }
}

/// The order of the built-in loaders: this rank's share of an epoch of `n` samples, shuffled by
/// `(seed, epoch)` or in data order, cut into batches.
#[derive(Debug, Clone)]
pub(super) struct EpochOrder {
    n: usize,
    shuffle: bool,
    shard: Shard,
    /// `(epoch, seed)` of the last `set_epoch`; before one, the data order.
    epoch: Option<(u64, u64)>,
    /// Sample positions (`0..n`) of this rank's share, in the order they are handed out.
    share: Vec<usize>,
}

impl EpochOrder {
    pub(super) fn new(n: usize, shuffle: bool) -> Self {
        let mut order = Self {
            n,
            shuffle,
            shard: Shard::default(),
            epoch: None,
            share: Vec::new(),
        };
        order.refresh();
        order
    }

    pub(super) fn set_epoch(&mut self, epoch: u64, seed: u64) {
        self.epoch = Some((epoch, seed));
        self.refresh();
    }

    /// Replaces the previous share, for the current epoch and every later one.
    pub(super) fn shard(&mut self, rank: usize, world_size: usize) -> Result<()> {
        self.shard = Shard::new(rank, world_size)?;
        self.refresh();
        Ok(())
    }

    fn refresh(&mut self) {
        self.share = match self.epoch {
            Some((epoch, seed)) if self.shuffle => {
                self.shard.select(&permutation(self.n, seed, epoch))
            }
            _ => self.shard.positions(self.n).collect(),
        };
    }

    pub(super) fn num_batches(&self, batch_size: usize) -> usize {
        self.share.len().div_ceil(batch_size)
    }

    pub(super) fn batch_size(&self, batch_size: usize, index: usize) -> usize {
        let start = index.saturating_mul(batch_size);
        self.share.len().saturating_sub(start).min(batch_size)
    }

    /// The sample positions of batch `index`; the last batch holds what is left.
    pub(super) fn rows(&self, batch_size: usize, index: usize) -> Result<&[usize]> {
        batch_rows(&self.share, batch_size, index)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Every rank's whole share of epoch `(7, 3)`, shuffled, in batches of `batch_size`.
    fn shares(n: usize, world: usize, batch_size: usize) -> Vec<Vec<Vec<usize>>> {
        (0..world)
            .map(|rank| {
                let mut order = EpochOrder::new(n, true);
                order.shard(rank, world).unwrap();
                order.set_epoch(7, 3);
                (0..order.num_batches(batch_size))
                    .map(|i| order.rows(batch_size, i).unwrap().to_vec())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ranks_are_disjoint_and_cover_every_sample_only_the_padding_twice() {
        // 10 samples over 4 ranks: padded to 12, so the epoch's first 2 samples are seen twice.
        let ranks = shares(10, 4, 2);
        let mut count = BTreeMap::new();
        for sample in ranks.iter().flatten().flatten() {
            *count.entry(*sample).or_insert(0) += 1;
        }
        assert_eq!(
            count.keys().copied().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        let epoch = permutation(10, 3, 7);
        let twice: Vec<usize> = count
            .iter()
            .filter(|(_, &c)| c == 2)
            .map(|(&s, _)| s)
            .collect();
        let mut padded = epoch[..2].to_vec();
        padded.sort_unstable();
        assert_eq!(
            twice, padded,
            "only the padding repeats, from the start of the epoch"
        );
        assert!(count.values().all(|&c| c <= 2));
        // With a world size that divides n, the shares are disjoint.
        let ranks = shares(12, 4, 2);
        let mut all: Vec<usize> = ranks.into_iter().flatten().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn every_rank_has_the_same_batches_and_samples() {
        for (n, world, batch_size, batches) in
            [(10, 4, 2, 2), (10, 3, 3, 2), (7, 2, 4, 1), (5, 8, 1, 1)]
        {
            for (rank, share) in shares(n, world, batch_size).iter().enumerate() {
                assert_eq!(share.len(), batches, "n {n}, rank {rank} of {world}");
                let samples: usize = share.iter().map(Vec::len).sum();
                assert_eq!(samples, n.div_ceil(world), "n {n}, rank {rank} of {world}");
            }
        }
        // 10 samples over 3 ranks in batches of 3: 4 samples each, the last batch holds 1.
        let mut order = EpochOrder::new(10, false);
        order.shard(2, 3).unwrap();
        assert_eq!(order.num_batches(3), 2);
        assert_eq!((order.batch_size(3, 0), order.batch_size(3, 1)), (3, 1));
        assert_eq!(order.batch_size(3, 2), 0);
    }

    #[test]
    fn the_ranks_batch_k_together_is_batch_k_of_one_process_with_the_global_batch() {
        let (world, b, n) = (3, 2, 18);
        let ranks = shares(n, world, b);
        let mut one = EpochOrder::new(n, true);
        one.set_epoch(7, 3);
        for k in 0..one.num_batches(world * b) {
            let mut union: Vec<usize> = ranks.iter().flat_map(|r| r[k].clone()).collect();
            let mut global = one.rows(world * b, k).unwrap().to_vec();
            union.sort_unstable();
            global.sort_unstable();
            assert_eq!(union, global, "batch {k}");
        }
        assert_eq!(ranks[0].len(), one.num_batches(world * b));
    }

    #[test]
    fn a_fresh_share_resumes_at_any_batch() {
        let whole = shares(23, 3, 2);
        for (rank, batches) in whole.iter().enumerate() {
            for (i, batch) in batches.iter().enumerate() {
                let mut fresh = EpochOrder::new(23, true);
                fresh.set_epoch(7, 3);
                fresh.shard(rank, 3).unwrap();
                assert_eq!(fresh.rows(2, i).unwrap(), batch, "rank {rank}, batch {i}");
            }
        }
    }

    #[test]
    fn fewer_samples_than_ranks_wrap_round_the_epoch() {
        // 2 samples over 5 ranks: the padded order is s0 s1 s0 s1 s0.
        let ranks = shares(2, 5, 4);
        let epoch = permutation(2, 3, 7);
        let firsts: Vec<usize> = ranks.iter().map(|r| r[0][0]).collect();
        assert_eq!(firsts, [epoch[0], epoch[1], epoch[0], epoch[1], epoch[0]]);
        assert!(ranks.iter().all(|r| r.len() == 1 && r[0].len() == 1));
        // No samples: no batches on any rank.
        assert!(shares(0, 3, 2).iter().all(Vec::is_empty));
        let mut empty = EpochOrder::new(0, false);
        empty.shard(1, 3).unwrap();
        assert_eq!((empty.num_batches(2), empty.batch_size(2, 0)), (0, 0));
        assert!(empty.rows(2, 0).is_err());
    }

    #[test]
    fn one_rank_is_the_whole_epoch_in_order() {
        let mut order = EpochOrder::new(9, true);
        order.shard(0, 1).unwrap();
        order.set_epoch(7, 3);
        let all: Vec<usize> = (0..3)
            .flat_map(|i| order.rows(4, i).unwrap().to_vec())
            .collect();
        assert_eq!(all, permutation(9, 3, 7));
        assert_eq!(Shard::default().select(&[4, 5, 6]), [4, 5, 6]);
    }

    #[test]
    fn resharding_replaces_the_previous_share() {
        let mut order = EpochOrder::new(6, false);
        order.shard(1, 2).unwrap();
        assert_eq!(order.rows(8, 0).unwrap(), [1, 3, 5]);
        order.shard(0, 3).unwrap();
        assert_eq!(order.rows(8, 0).unwrap(), [0, 3]);
        order.shard(0, 1).unwrap();
        assert_eq!(order.rows(8, 0).unwrap(), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_bad_rank_or_world_size_is_a_strategy_error() {
        for (rank, world, says) in [
            (
                0,
                0,
                "rank 0 of a world size of 0: the `strategy` must report at least one process",
            ),
            (
                2,
                2,
                "rank 2 of a world size of 2: the `strategy` must report a rank in 0..2",
            ),
            (7, 3, "rank 7 of a world size of 3"),
        ] {
            let err = EpochOrder::new(4, true).shard(rank, world).unwrap_err();
            assert!(
                matches!(&err, Error::Config { settings, .. } if settings == &["strategy"]),
                "{err:?}"
            );
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}

//! Data loading with deterministic, resumable batch order.
//!
//! A loader hands out batches by index within an epoch, and the order of an epoch is a pure function of
//! `(seed, epoch)`. That is what lets a checkpoint taken in the middle of an epoch resume at the next
//! batch and see exactly the batches the uninterrupted run would have seen.

mod classification;
mod rng;
mod shard;
mod tensor_data;

pub use classification::{ClassificationBatch, ClassificationData, ClassificationLoader};
pub use rng::{permutation, SplitMix64};
pub use shard::Shard;
pub use tensor_data::{SampleShape, TensorBatch, TensorData, TensorLoader};

use crate::{Error, Result};

/// A source of batches for one loop.
///
/// Most runs need no loader of their own: [`ClassificationData`] and [`TensorData`] are in-memory data
/// sets with one. Write one for data they do not fit: files read on demand, a generated stream. The
/// rule that makes resuming exact is that the order of an epoch depends only on `(seed, epoch)`;
/// [`permutation`] gives such an order. For data-parallel runs, [`shard`](Self::shard) hands each rank
/// its share of that order, which [`Shard`] computes:
///
/// ```
/// use fulgur_runtime::data::{permutation, DataLoader, Shard};
/// use fulgur_runtime::{Error, Result};
///
/// /// Pairs `(x, x²)`, in batches of `size`, shuffled per epoch.
/// struct Squares {
///     xs: Vec<f32>,
///     size: usize,
///     shard: Shard,
///     order: Vec<usize>,
/// }
///
/// impl Squares {
///     fn new(n: usize, size: usize) -> Self {
///         let xs = (0..n).map(|i| i as f32).collect();
///         Squares { xs, size, shard: Shard::default(), order: vec![] }
///     }
/// }
///
/// impl DataLoader for Squares {
///     type Batch = Vec<(f32, f32)>;
///
///     fn num_batches(&self) -> usize {
///         self.shard.num_samples(self.xs.len()).div_ceil(self.size)
///     }
///
///     fn set_epoch(&mut self, epoch: u64, seed: u64) {
///         self.order = self.shard.select(&permutation(self.xs.len(), seed, epoch));
///     }
///
///     fn batch(&mut self, index: usize) -> Result<Self::Batch> {
///         let rows = self.order.chunks(self.size).nth(index).ok_or_else(|| {
///             Error::user(format!("batch {index} of {} does not exist", self.num_batches()))
///         })?;
///         Ok(rows.iter().map(|&i| (self.xs[i], self.xs[i] * self.xs[i])).collect())
///     }
///
///     fn batch_size(&self, index: usize) -> usize {
///         let n = self.shard.num_samples(self.xs.len());
///         n.saturating_sub(index * self.size).min(self.size)
///     }
///
///     // The trainer calls it before the first `set_epoch`, which applies the share.
///     fn shard(&mut self, rank: usize, world_size: usize) -> Result<()> {
///         self.shard = Shard::new(rank, world_size)?;
///         Ok(())
///     }
/// }
///
/// let mut loader = Squares::new(10, 4);
/// loader.set_epoch(3, 7);
/// let first = loader.batch(0)?;
/// assert_eq!((loader.num_batches(), loader.batch_size(2)), (3, 2));
/// // A loader rebuilt after a crash sees the same batch at the same position.
/// let mut again = Squares::new(10, 4);
/// again.set_epoch(3, 7);
/// assert_eq!(again.batch(0)?, first);
/// assert!(loader.batch(3).is_err());
///
/// // Two ranks: 5 samples each, in batches of 4 and 1, together the whole epoch.
/// let mut ranks = [Squares::new(10, 4), Squares::new(10, 4)];
/// let mut seen = Vec::new();
/// for (rank, loader) in ranks.iter_mut().enumerate() {
///     loader.shard(rank, 2)?;
///     loader.set_epoch(3, 7);
///     assert_eq!((loader.num_batches(), loader.batch_size(0), loader.batch_size(1)), (2, 4, 1));
///     seen.extend(loader.batch(0)?.into_iter().chain(loader.batch(1)?).map(|(x, _)| x as usize));
/// }
/// seen.sort_unstable();
/// assert_eq!(seen, (0..10).collect::<Vec<_>>());
/// # Ok::<(), Error>(())
/// ```
pub trait DataLoader {
    /// What one batch is.
    type Batch;

    /// Batches per epoch.
    fn num_batches(&self) -> usize;

    /// Prepares the order of `epoch`; the order must depend only on `(seed, epoch)`.
    fn set_epoch(&mut self, epoch: u64, seed: u64);

    /// The batch at `index` (`0..num_batches()`) of the current epoch.
    fn batch(&mut self, index: usize) -> Result<Self::Batch>;

    /// The number of samples in batch `index`, which weights its values in epoch means.
    fn batch_size(&self, index: usize) -> usize;

    /// Data parallelism: from now on hand out only rank `rank`'s share of every epoch, out of
    /// `world_size` ranks, replacing any share set before; the trainer calls it on its training,
    /// validation and test loaders before the first `set_epoch` of a run, and then requires every rank to
    /// report the same [`num_batches`](Self::num_batches).
    ///
    /// The built-in loaders follow Lightning's rule (PyTorch's `DistributedSampler` with
    /// `drop_last=False`), which [`Shard`] implements for loaders of your own: the epoch's order of all
    /// `n` samples, the same function of `(seed, epoch)` as in one process, is padded to
    /// `ceil(n / world_size) * world_size` by repeating samples from its start (wrapping round again when
    /// `n < world_size`), and rank `r` takes positions `r`, `r + world_size`, `r + 2 * world_size`, ….
    /// Every rank then has `ceil(n / world_size)` samples and `ceil(ceil(n / world_size) / batch_size)`
    /// batches, the last holding what is left. When `world_size` does not divide `n`, the first
    /// `ceil(n / world_size) * world_size - n` samples of the epoch's order are seen twice that epoch (by
    /// different ranks; more often when `n < world_size`) and count as often in epoch means, validation
    /// metrics included. The share is a pure function of
    /// `(seed, epoch, rank, world_size)`, so a run resumes in the middle of an epoch exactly, as in one
    /// process. `world_size` 1 changes nothing.
    ///
    /// A `world_size` of 0, or a `rank` not below it, is a configuration error naming `strategy`. The
    /// default accepts a single process and refuses more, since a loader that ignores its share would
    /// feed every rank the whole epoch.
    fn shard(&mut self, rank: usize, world_size: usize) -> Result<()> {
        Shard::new(rank, world_size)?;
        if world_size == 1 {
            return Ok(());
        }
        Err(Error::config(
            "strategy",
            format!(
                "the data loader `{}` cannot hand rank {rank} of {world_size} its share of the data: \
                 implement `DataLoader::shard` for it",
                std::any::type_name::<Self>()
            ),
        ))
    }
}

/// The sample indices of `(train, val)`: `val_fraction` of `indices`, chosen by a shuffle with `seed`.
fn split_indices(
    indices: &[usize],
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..=1.0).contains(&val_fraction) {
        return Err(Error::config(
            "val_fraction",
            format!("`val_fraction` must be in [0, 1], got {val_fraction}"),
        ));
    }
    let order = permutation(indices.len(), seed, 0);
    let n_val = (indices.len() as f64 * val_fraction).round() as usize;
    let pick = |range: &[usize]| range.iter().map(|&i| indices[i]).collect();
    Ok((pick(&order[n_val..]), pick(&order[..n_val])))
}

/// The positions in the epoch's `order` that batch `index` holds; the last batch holds what is left.
fn batch_rows(order: &[usize], batch_size: usize, index: usize) -> Result<&[usize]> {
    let start = index.saturating_mul(batch_size);
    order
        .get(start..start.saturating_add(batch_size).min(order.len()))
        .filter(|rows| !rows.is_empty())
        .ok_or_else(|| {
            Error::config(
                "index",
                format!(
                    "batch index {index} is out of range: the loader has {} batches",
                    order.len().div_ceil(batch_size)
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader that keeps the default `shard`.
    struct Plain;

    impl DataLoader for Plain {
        type Batch = ();

        fn num_batches(&self) -> usize {
            1
        }

        fn set_epoch(&mut self, _epoch: u64, _seed: u64) {}

        fn batch(&mut self, _index: usize) -> Result<()> {
            Ok(())
        }

        fn batch_size(&self, _index: usize) -> usize {
            1
        }
    }

    #[test]
    fn the_default_shard_accepts_one_process_and_refuses_more_or_bad_arguments() {
        Plain.shard(0, 1).unwrap();
        for (rank, world, says) in [
            (
                0,
                2,
                "cannot hand rank 0 of 2 its share of the data: implement `DataLoader::shard`",
            ),
            (0, 0, "world size of 0"),
            (1, 1, "rank 1 of a world size of 1"),
        ] {
            let err = Plain.shard(rank, world).unwrap_err();
            assert!(
                matches!(&err, Error::Config { settings, .. } if settings == &["strategy"]),
                "{err:?}"
            );
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}

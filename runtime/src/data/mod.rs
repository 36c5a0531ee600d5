//! Data loading with deterministic, resumable batch order.
//!
//! A loader hands out batches by index within an epoch, and the order of an epoch is a pure function of
//! `(seed, epoch)`. That is what lets a checkpoint taken in the middle of an epoch resume at the next
//! batch and see exactly the batches the uninterrupted run would have seen.

mod classification;
mod rng;
mod tensor_data;

pub use classification::{ClassificationBatch, ClassificationData, ClassificationLoader};
pub use rng::{permutation, SplitMix64};
pub use tensor_data::{SampleShape, TensorBatch, TensorData, TensorLoader};

use crate::{Error, Result};

/// A source of batches for one loop.
///
/// Most runs need no loader of their own: [`ClassificationData`] and [`TensorData`] are in-memory data
/// sets with one. Write one for data they do not fit: files read on demand, a generated stream. The
/// rule that makes resuming exact is that the order of an epoch depends only on `(seed, epoch)`;
/// [`permutation`] gives such an order:
///
/// ```
/// use fulgur_runtime::data::{permutation, DataLoader};
/// use fulgur_runtime::{Error, Result};
///
/// /// Pairs `(x, x²)`, in batches of `size`, shuffled per epoch.
/// struct Squares {
///     xs: Vec<f32>,
///     size: usize,
///     order: Vec<usize>,
/// }
///
/// impl DataLoader for Squares {
///     type Batch = Vec<(f32, f32)>;
///
///     fn num_batches(&self) -> usize {
///         self.xs.len().div_ceil(self.size)
///     }
///
///     fn set_epoch(&mut self, epoch: u64, seed: u64) {
///         self.order = permutation(self.xs.len(), seed, epoch);
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
///         self.size.min(self.xs.len() - index * self.size)
///     }
/// }
///
/// let mut loader = Squares { xs: (0..10).map(|i| i as f32).collect(), size: 4, order: vec![] };
/// loader.set_epoch(3, 7);
/// let first = loader.batch(0)?;
/// assert_eq!((loader.num_batches(), loader.batch_size(2)), (3, 2));
/// // A loader rebuilt after a crash sees the same batch at the same position.
/// let mut again = Squares { xs: (0..10).map(|i| i as f32).collect(), size: 4, order: vec![] };
/// again.set_epoch(3, 7);
/// assert_eq!(again.batch(0)?, first);
/// assert!(loader.batch(3).is_err());
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
    /// `world_size` ranks; the trainer calls it before the first `set_epoch` of a run. Every rank must
    /// then report the same [`num_batches`](Self::num_batches). The default accepts a single process and
    /// refuses more, since a loader that ignores its share would feed every rank the whole epoch.
    fn shard(&mut self, rank: usize, world_size: usize) -> Result<()> {
        if world_size <= 1 {
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

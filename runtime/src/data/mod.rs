//! Data loading with deterministic, resumable batch order.
//!
//! A loader hands out batches by index within an epoch, and the order of an epoch is a pure function of
//! `(seed, epoch)`. That is what lets a checkpoint taken in the middle of an epoch resume at the next
//! batch and see exactly the batches the uninterrupted run would have seen.

mod classification;
mod rng;

pub use classification::{ClassificationBatch, ClassificationData, ClassificationLoader};
pub use rng::{permutation, SplitMix64};

use crate::Result;

/// A source of batches for one loop.
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
}

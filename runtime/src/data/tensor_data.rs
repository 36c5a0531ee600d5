use std::marker::PhantomData;
use std::sync::Arc;

use dfdx::shapes::{Const, ConstShape, Shape};
use dfdx::tensor::Tensor;

use super::shard::EpochOrder;
use super::{split_indices, DataLoader};
use crate::device::Backend;
use crate::{Error, Result};

/// The shape of one sample (`Rank0`, `Rank1<3>`, `Rank3<1, 28, 28>`, …) and the shape of a batch of
/// them: the same dimensions behind a leading batch dimension of run-time length.
///
/// Implemented for dfdx's constant shapes of rank 0 to 5, so that a batch has rank 1 to 6.
pub trait SampleShape: ConstShape {
    /// `(usize, …Self)`: `n` samples of this shape.
    type Batched: Shape;

    /// The shape of a batch of `n` samples.
    fn batched(n: usize) -> Self::Batched;
}

impl SampleShape for () {
    type Batched = (usize,);

    fn batched(n: usize) -> Self::Batched {
        (n,)
    }
}

macro_rules! sample_shape {
    ($($dim:ident),+) => {
        impl<$(const $dim: usize),+> SampleShape for ($(Const<$dim>,)+) {
            type Batched = (usize, $(Const<$dim>,)+);

            fn batched(n: usize) -> Self::Batched {
                (n, $(Const::<$dim>,)+)
            }
        }
    };
}

sample_shape!(A);
sample_shape!(A, B);
sample_shape!(A, B, C);
sample_shape!(A, B, C, E);
sample_shape!(A, B, C, E, F);

/// An in-memory data set of feature tensors of shape `X` and target tensors of shape `Y`, one pair per
/// sample: regression targets, several outputs, images, sequences.
///
/// Like [`ClassificationData`](super::ClassificationData), it splits by seed and hands out batches in an
/// order fixed by `(seed, epoch)`, so a run that uses it resumes in the middle of an epoch exactly.
///
/// ```
/// use fulgur_runtime::data::{DataLoader, TensorData};
/// use dfdx::shapes::{HasShape, Rank1};
/// use dfdx::tensor::Cpu;
///
/// // Four samples of two features, each with one target.
/// let features = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
/// let targets = vec![1.0, 5.0, 9.0, 13.0];
/// let data = TensorData::<Rank1<2>, Rank1<1>>::new(features, targets)?;
///
/// let mut loader = data.loader(3, false, &Cpu::default())?;
/// assert_eq!(loader.num_batches(), 2);
/// let last = loader.batch(1)?; // the partial batch: one sample
/// assert_eq!(last.x.shape().0, 1);
/// assert_eq!(last.x.as_vec(), [6.0, 7.0]);
/// assert_eq!(last.y.as_vec(), [13.0]);
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct TensorData<X: SampleShape, Y: SampleShape> {
    features: Arc<Vec<f32>>,
    targets: Arc<Vec<f32>>,
    indices: Vec<usize>,
    shapes: PhantomData<fn() -> (X, Y)>,
}

// By hand: a derive would ask `X: Clone` and `Y: Clone`, which the data does not need.
impl<X: SampleShape, Y: SampleShape> Clone for TensorData<X, Y> {
    fn clone(&self) -> Self {
        Self {
            features: self.features.clone(),
            targets: self.targets.clone(),
            indices: self.indices.clone(),
            shapes: PhantomData,
        }
    }
}

impl<X: SampleShape, Y: SampleShape> TensorData<X, Y> {
    /// A data set from row-major features (`X::NUMEL` values per sample) and targets (`Y::NUMEL` values
    /// per sample); the number of samples is that of the targets.
    pub fn new(features: Vec<f32>, targets: Vec<f32>) -> Result<Self> {
        if X::NUMEL == 0 || Y::NUMEL == 0 {
            return Err(Error::config(
                "shape",
                format!(
                    "tensor data: a sample needs at least one feature and one target value, \
                 the shapes hold {} and {}",
                    X::NUMEL,
                    Y::NUMEL
                ),
            ));
        }
        if targets.len() % Y::NUMEL != 0 {
            return Err(Error::config(
                "targets",
                format!(
                    "tensor data: {} target values are not a whole number of samples of {} values",
                    targets.len(),
                    Y::NUMEL
                ),
            ));
        }
        let n = targets.len() / Y::NUMEL;
        if features.len() != n * X::NUMEL {
            return Err(Error::config("features", format!(
                "tensor data: {n} samples of targets need {} feature values ({} per sample), found {}",
                n * X::NUMEL,
                X::NUMEL,
                features.len()
            )));
        }
        Ok(Self {
            features: Arc::new(features),
            targets: Arc::new(targets),
            indices: (0..n).collect(),
            shapes: PhantomData,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Splits into `(train, val)` with `val_fraction` of the samples, chosen by a shuffle with `seed`.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let (train, val) = split_indices(&self.indices, val_fraction, seed)?;
        let pick = |indices| Self {
            features: self.features.clone(),
            targets: self.targets.clone(),
            indices,
            shapes: PhantomData,
        };
        Ok((pick(train), pick(val)))
    }

    /// A loader of batches of `batch_size` samples on `device`, reshuffled every epoch when `shuffle`.
    /// The last batch of an epoch holds the samples left over, and may be smaller.
    pub fn loader<D: Backend>(
        &self,
        batch_size: usize,
        shuffle: bool,
        device: &D,
    ) -> Result<TensorLoader<X, Y, D>> {
        if batch_size == 0 {
            return Err(Error::config(
                "batch_size",
                "`batch_size` must be at least 1",
            ));
        }
        Ok(TensorLoader {
            data: self.clone(),
            batch_size,
            device: device.clone(),
            order: EpochOrder::new(self.len(), shuffle),
        })
    }
}

/// A batch of [`TensorData`]: `n` feature tensors and `n` target tensors, stacked.
#[derive(Debug, Clone)]
pub struct TensorBatch<X: SampleShape, Y: SampleShape, D: Backend> {
    /// Features, shape `(n, …X)`.
    pub x: Tensor<X::Batched, f32, D>,
    /// Targets, shape `(n, …Y)`.
    pub y: Tensor<Y::Batched, f32, D>,
}

/// Batches of a [`TensorData`] in an order fixed by `(seed, epoch)`.
///
/// In a data-parallel run, [`DataLoader::shard`] makes it hand out one rank's share of every epoch, by
/// Lightning's `DistributedSampler` rule ([`Shard`](super::Shard)): every rank gets `ceil(n / world_size)`
/// samples, strided through the epoch's order, which is padded by repeating its first samples; those
/// count twice in epoch means.
#[derive(Debug, Clone)]
pub struct TensorLoader<X: SampleShape, Y: SampleShape, D: Backend> {
    data: TensorData<X, Y>,
    batch_size: usize,
    device: D,
    order: EpochOrder,
}

impl<X: SampleShape, Y: SampleShape, D: Backend> DataLoader for TensorLoader<X, Y, D> {
    type Batch = TensorBatch<X, Y, D>;

    fn num_batches(&self) -> usize {
        self.order.num_batches(self.batch_size)
    }

    fn set_epoch(&mut self, epoch: u64, seed: u64) {
        self.order.set_epoch(epoch, seed);
    }

    fn batch(&mut self, index: usize) -> Result<Self::Batch> {
        let rows = self.order.rows(self.batch_size, index)?;
        let n = rows.len();
        let (fx, fy) = (X::NUMEL, Y::NUMEL);
        let mut x = Vec::with_capacity(n * fx);
        let mut y = Vec::with_capacity(n * fy);
        for &i in rows {
            let sample = self.data.indices[i];
            x.extend_from_slice(&self.data.features[sample * fx..(sample + 1) * fx]);
            y.extend_from_slice(&self.data.targets[sample * fy..(sample + 1) * fy]);
        }
        let x = self
            .device
            .try_tensor_from_vec(x, X::batched(n))
            .map_err(crate::device_err)?;
        let y = self
            .device
            .try_tensor_from_vec(y, Y::batched(n))
            .map_err(crate::device_err)?;
        Ok(TensorBatch { x, y })
    }

    fn batch_size(&self, index: usize) -> usize {
        self.order.batch_size(self.batch_size, index)
    }

    fn shard(&mut self, rank: usize, world_size: usize) -> Result<()> {
        self.order.shard(rank, world_size)
    }
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::HasShape;
    use dfdx::shapes::{Rank0, Rank1, Rank2};
    use dfdx::tensor::Cpu;

    use super::*;

    /// Ten samples; sample `i` has features `[i, 100 + i]` and the target `-i`, so every value names
    /// the sample it came from.
    fn data() -> TensorData<Rank1<2>, Rank0> {
        let features = (0..10).flat_map(|i| [i as f32, 100.0 + i as f32]).collect();
        let targets = (0..10).map(|i| -(i as f32)).collect();
        TensorData::new(features, targets).unwrap()
    }

    /// The samples of batch `index`, read back from its features, after checking that its targets
    /// belong to the same samples.
    fn samples(loader: &mut TensorLoader<Rank1<2>, Rank0, Cpu>, index: usize) -> Vec<usize> {
        let b = loader.batch(index).unwrap();
        let (x, y) = (b.x.as_vec(), b.y.as_vec());
        assert_eq!(b.x.shape().0, y.len());
        x.chunks(2)
            .zip(&y)
            .map(|(row, &t)| {
                assert_eq!(
                    row[1],
                    100.0 + row[0],
                    "features of one sample stay together"
                );
                assert_eq!(t, -row[0], "the target travels with its features");
                row[0] as usize
            })
            .collect()
    }

    #[test]
    fn batches_cover_every_sample_once_and_the_last_is_partial() {
        let mut loader = data().loader(4, true, &Cpu::default()).unwrap();
        assert_eq!(loader.num_batches(), 3);
        loader.set_epoch(1, 42);
        let sizes: Vec<usize> = (0..3).map(|i| loader.batch_size(i)).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut seen = Vec::new();
        for i in 0..3 {
            let batch = samples(&mut loader, i);
            assert_eq!(batch.len(), loader.batch_size(i));
            seen.extend(batch);
        }
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let err = loader.batch(3).unwrap_err().to_string();
        assert!(err.contains("batch index 3 is out of range"), "{err}");
    }

    #[test]
    fn one_past_the_last_batch_is_an_error_not_an_empty_batch() {
        // 10 samples in batches of 5: batch 2 would start exactly at the end of the epoch.
        let mut loader = data().loader(5, false, &Cpu::default()).unwrap();
        assert_eq!(loader.num_batches(), 2);
        assert_eq!(loader.batch_size(2), 0);
        let err = loader.batch(2).unwrap_err().to_string();
        assert!(
            err.contains("batch index 2 is out of range: the loader has 2 batches"),
            "{err}"
        );
    }

    #[test]
    fn without_shuffle_the_order_is_the_data_order() {
        let mut loader = data().loader(3, false, &Cpu::default()).unwrap();
        loader.set_epoch(5, 9);
        let all: Vec<usize> = (0..4).flat_map(|i| samples(&mut loader, i)).collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(samples(&mut loader, 3), [9]);
    }

    #[test]
    fn the_order_is_a_function_of_seed_and_epoch() {
        let dev = Cpu::default();
        let order = |epoch, seed| {
            let mut loader = data().loader(10, true, &dev).unwrap();
            loader.set_epoch(epoch, seed);
            samples(&mut loader, 0)
        };
        assert_eq!(order(2, 7), order(2, 7));
        assert_ne!(order(2, 7), order(3, 7));
        assert_ne!(order(2, 7), order(2, 8));
    }

    #[test]
    fn a_fresh_loader_resumes_at_any_batch_of_an_epoch() {
        let dev = Cpu::default();
        let mut first = data().loader(3, true, &dev).unwrap();
        first.set_epoch(4, 11);
        let whole: Vec<Vec<usize>> = (0..4).map(|i| samples(&mut first, i)).collect();

        // A resumed run builds a new loader, sets the same epoch and seed, and asks for batch 2 on.
        let mut resumed = data().loader(3, true, &dev).unwrap();
        resumed.set_epoch(4, 11);
        let rest: Vec<Vec<usize>> = (2..4).map(|i| samples(&mut resumed, i)).collect();
        assert_eq!(rest, whole[2..]);
    }

    #[test]
    fn sharded_ranks_split_the_epoch_with_equal_batch_counts() {
        // 10 samples over 3 ranks in batches of 3: 4 samples each (batches of 3 and 1), 12 in all, so the
        // first 2 samples of the epoch's order are seen twice.
        let dev = Cpu::default();
        let mut whole = data().loader(10, true, &dev).unwrap();
        whole.set_epoch(2, 5);
        let epoch = samples(&mut whole, 0);
        let mut seen = Vec::new();
        for rank in 0..3 {
            let mut loader = data().loader(3, true, &dev).unwrap();
            loader.shard(rank, 3).unwrap();
            loader.set_epoch(2, 5);
            assert_eq!(loader.num_batches(), 2, "rank {rank}");
            assert_eq!((loader.batch_size(0), loader.batch_size(1)), (3, 1));
            let share: Vec<usize> = (0..2).flat_map(|i| samples(&mut loader, i)).collect();
            let strided: Vec<usize> = (0..4).map(|k| epoch[(rank + 3 * k) % 10]).collect();
            assert_eq!(share, strided, "rank {rank} takes every third position");
            seen.extend(share);
        }
        seen.sort_unstable();
        let mut expected: Vec<usize> = epoch.iter().chain(&epoch[..2]).copied().collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_ranks_batch_k_together_is_batch_k_of_one_loader_with_the_global_batch() {
        // 12 samples, 2 ranks of batch 3: together, batch k is batch k of one loader of batch 6.
        let features = (0..12).flat_map(|i| [i as f32, 100.0 + i as f32]).collect();
        let targets = (0..12).map(|i| -(i as f32)).collect();
        let data = TensorData::<Rank1<2>, Rank0>::new(features, targets).unwrap();
        let dev = Cpu::default();
        let mut one = data.loader(6, true, &dev).unwrap();
        one.set_epoch(1, 9);
        let mut ranks: Vec<_> = (0..2)
            .map(|rank| {
                let mut loader = data.loader(3, true, &dev).unwrap();
                loader.shard(rank, 2).unwrap();
                loader.set_epoch(1, 9);
                loader
            })
            .collect();
        assert!(ranks.iter().all(|r| r.num_batches() == one.num_batches()));
        for k in 0..one.num_batches() {
            let mut union: Vec<usize> = ranks.iter_mut().flat_map(|r| samples(r, k)).collect();
            let mut global = samples(&mut one, k);
            union.sort_unstable();
            global.sort_unstable();
            assert_eq!(union, global, "batch {k}");
        }
    }

    #[test]
    fn a_fresh_sharded_loader_resumes_at_any_batch() {
        let dev = Cpu::default();
        let mut first = data().loader(2, true, &dev).unwrap();
        first.shard(1, 2).unwrap();
        first.set_epoch(4, 11);
        let whole: Vec<Vec<usize>> = (0..3).map(|i| samples(&mut first, i)).collect();
        let mut resumed = data().loader(2, true, &dev).unwrap();
        resumed.shard(1, 2).unwrap();
        resumed.set_epoch(4, 11);
        assert_eq!(samples(&mut resumed, 2), whole[2]);
        // Resharding replaces the share: back to one process, the whole epoch.
        first.shard(0, 1).unwrap();
        assert_eq!(first.num_batches(), 5);
        let err = first.shard(2, 2).unwrap_err();
        assert!(
            err.to_string().contains("rank 2 of a world size of 2"),
            "{err}"
        );
    }

    #[test]
    fn batches_have_the_sample_shape_behind_the_batch_dimension() {
        let features = (0..12).map(|v| v as f32).collect();
        let targets = (0..6).map(|v| v as f32).collect();
        let data = TensorData::<Rank2<2, 3>, Rank1<3>>::new(features, targets).unwrap();
        assert_eq!(data.len(), 2);
        let mut loader = data.loader(2, false, &Cpu::default()).unwrap();
        let b: TensorBatch<Rank2<2, 3>, Rank1<3>, Cpu> = loader.batch(0).unwrap();
        assert_eq!(*b.x.shape(), (2, Const::<2>, Const::<3>));
        assert_eq!(*b.y.shape(), (2, Const::<3>));
        assert_eq!(b.x.as_vec(), (0..12).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(b.y.as_vec(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn split_is_disjoint_complete_and_batches_its_own_samples() {
        let (train, val) = data().split(0.3, 1).unwrap();
        assert_eq!((train.len(), val.len()), (7, 3));
        let dev = Cpu::default();
        let mut all: Vec<usize> = [train, val]
            .iter()
            .flat_map(|part| {
                let mut loader = part.loader(16, false, &dev).unwrap();
                samples(&mut loader, 0)
            })
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn bad_input_is_rejected_with_a_message() {
        let err = TensorData::<Rank1<3>, Rank1<2>>::new(vec![0.0; 6], vec![0.0; 5])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("5 target values are not a whole number of samples of 2 values"),
            "{err}"
        );
        let err = TensorData::<Rank1<3>, Rank0>::new(vec![0.0; 5], vec![0.0; 2])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 samples of targets need 6 feature values (3 per sample), found 5"),
            "{err}"
        );
        let err = TensorData::<Rank1<0>, Rank0>::new(vec![], vec![0.0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least one feature and one target value"),
            "{err}"
        );
        let err = data()
            .loader(0, true, &Cpu::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`batch_size` must be at least 1"), "{err}");
        let err = data().split(1.5, 0).unwrap_err().to_string();
        assert!(
            err.contains("`val_fraction` must be in [0, 1], got 1.5"),
            "{err}"
        );
    }
}

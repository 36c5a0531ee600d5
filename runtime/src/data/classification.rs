use std::sync::Arc;

use dfdx::shapes::Const;
use dfdx::tensor::Tensor;

use super::shard::EpochOrder;
use super::{split_indices, DataLoader};
use crate::device::Backend;
use crate::{Error, Result};

/// An in-memory classification data set: `F` features and one of `C` classes per sample.
#[derive(Debug, Clone)]
pub struct ClassificationData<const F: usize, const C: usize> {
    features: Arc<Vec<f32>>,
    labels: Arc<Vec<usize>>,
    indices: Vec<usize>,
}

impl<const F: usize, const C: usize> ClassificationData<F, C> {
    /// A data set from row-major features (`n * F` values) and `n` labels below `C`.
    pub fn new(features: Vec<f32>, labels: Vec<usize>) -> Result<Self> {
        if features.len() != labels.len() * F {
            return Err(Error::config(
                "features",
                format!(
                "classification data: {} labels need {} feature values ({} per sample), found {}",
                labels.len(),
                labels.len() * F,
                F,
                features.len()
            ),
            ));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= C) {
            return Err(Error::config(
                "labels",
                format!(
                    "classification data: label {l} of sample {i} is out of range for {C} classes"
                ),
            ));
        }
        let indices = (0..labels.len()).collect();
        Ok(Self {
            features: Arc::new(features),
            labels: Arc::new(labels),
            indices,
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
            labels: self.labels.clone(),
            indices,
        };
        Ok((pick(train), pick(val)))
    }

    /// A loader of batches of `batch_size` samples on `device`, reshuffled every epoch when `shuffle`.
    pub fn loader<D: Backend>(
        &self,
        batch_size: usize,
        shuffle: bool,
        device: &D,
    ) -> Result<ClassificationLoader<F, C, D>> {
        if batch_size == 0 {
            return Err(Error::config(
                "batch_size",
                "`batch_size` must be at least 1",
            ));
        }
        Ok(ClassificationLoader {
            data: self.clone(),
            batch_size,
            device: device.clone(),
            order: EpochOrder::new(self.len(), shuffle),
        })
    }
}

/// A batch of [`ClassificationData`].
#[derive(Debug, Clone)]
pub struct ClassificationBatch<const F: usize, const C: usize, D: Backend> {
    /// Features, one row per sample.
    pub x: Tensor<(usize, Const<F>), f32, D>,
    /// One-hot targets.
    pub y: Tensor<(usize, Const<C>), f32, D>,
    /// The class of each sample.
    pub labels: Vec<usize>,
}

/// Batches of a [`ClassificationData`] in an order fixed by `(seed, epoch)`.
///
/// In a data-parallel run, [`DataLoader::shard`] makes it hand out one rank's share of every epoch, by
/// Lightning's `DistributedSampler` rule ([`Shard`](super::Shard)): every rank gets `ceil(n / world_size)`
/// samples, strided through the epoch's order, which is padded by repeating its first samples; those
/// count twice in epoch means.
#[derive(Debug, Clone)]
pub struct ClassificationLoader<const F: usize, const C: usize, D: Backend> {
    data: ClassificationData<F, C>,
    batch_size: usize,
    device: D,
    order: EpochOrder,
}

impl<const F: usize, const C: usize, D: Backend> DataLoader for ClassificationLoader<F, C, D> {
    type Batch = ClassificationBatch<F, C, D>;

    fn num_batches(&self) -> usize {
        self.order.num_batches(self.batch_size)
    }

    fn set_epoch(&mut self, epoch: u64, seed: u64) {
        self.order.set_epoch(epoch, seed);
    }

    fn batch(&mut self, index: usize) -> Result<Self::Batch> {
        let rows = self.order.rows(self.batch_size, index)?;
        let n = rows.len();
        let mut x = Vec::with_capacity(n * F);
        let mut y = vec![0.0f32; n * C];
        let mut labels = Vec::with_capacity(n);
        for (r, &i) in rows.iter().enumerate() {
            let sample = self.data.indices[i];
            x.extend_from_slice(&self.data.features[sample * F..(sample + 1) * F]);
            let label = self.data.labels[sample];
            y[r * C + label] = 1.0;
            labels.push(label);
        }
        let x = self
            .device
            .try_tensor_from_vec(x, (n, Const::<F>))
            .map_err(crate::device_err)?;
        let y = self
            .device
            .try_tensor_from_vec(y, (n, Const::<C>))
            .map_err(crate::device_err)?;
        Ok(ClassificationBatch { x, y, labels })
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
    use dfdx::tensor::Cpu;

    use super::*;

    fn data() -> ClassificationData<2, 3> {
        let features = (0..20).map(|i| i as f32).collect();
        ClassificationData::new(features, vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 0]).unwrap()
    }

    #[test]
    fn batches_cover_every_sample_once_per_epoch() {
        let dev = Cpu::default();
        let mut loader = data().loader(4, true, &dev).unwrap();
        assert_eq!(loader.num_batches(), 3);
        loader.set_epoch(1, 42);
        let mut seen: Vec<usize> = Vec::new();
        for i in 0..3 {
            let b = loader.batch(i).unwrap();
            assert_eq!(b.labels.len(), loader.batch_size(i));
            let xs = b.x.as_vec();
            seen.extend(xs.chunks(2).map(|r| r[0] as usize / 2));
            let ys = b.y.as_vec();
            for (r, &l) in b.labels.iter().enumerate() {
                assert_eq!(ys[r * 3 + l], 1.0);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(loader.batch(3).is_err());
    }

    #[test]
    fn sharded_ranks_have_equal_batch_counts_and_cover_every_sample() {
        // 10 samples over 4 ranks in batches of 2: 3 samples each (batches of 2 and 1).
        let dev = Cpu::default();
        let mut seen = Vec::new();
        for rank in 0..4 {
            let mut loader = data().loader(2, false, &dev).unwrap();
            loader.shard(rank, 4).unwrap();
            loader.set_epoch(0, 1);
            assert_eq!(loader.num_batches(), 2, "rank {rank}");
            assert_eq!((loader.batch_size(0), loader.batch_size(1)), (2, 1));
            for i in 0..2 {
                let xs = loader.batch(i).unwrap().x.as_vec();
                seen.extend(xs.chunks(2).map(|r| r[0] as usize / 2));
            }
            assert!(loader.batch(2).is_err());
        }
        seen.sort_unstable();
        // Padded to 12 from the start of the (unshuffled) order: samples 0 and 1 twice.
        assert_eq!(seen, [0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let err = data()
            .loader(2, false, &dev)
            .unwrap()
            .shard(0, 0)
            .unwrap_err();
        assert!(err.to_string().contains("world size of 0"), "{err}");
    }

    #[test]
    fn one_past_the_last_batch_is_an_error_not_an_empty_batch() {
        let mut loader = data().loader(5, false, &Cpu::default()).unwrap();
        let err = loader.batch(2).unwrap_err().to_string();
        assert!(
            err.contains("batch index 2 is out of range: the loader has 2 batches"),
            "{err}"
        );
    }

    #[test]
    fn bad_input_is_rejected_with_a_message() {
        let err = ClassificationData::<2, 3>::new(vec![0.0; 3], vec![0, 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("need 4 feature values"), "{err}");
        let err = ClassificationData::<1, 3>::new(vec![0.0; 2], vec![0, 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 3 of sample 1"), "{err}");
    }

    #[test]
    fn split_is_disjoint_and_complete() {
        let (train, val) = data().split(0.3, 1).unwrap();
        assert_eq!((train.len(), val.len()), (7, 3));
        let mut all: Vec<usize> = train.indices.iter().chain(&val.indices).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}

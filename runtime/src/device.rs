//! The dfdx devices fulgur trains on, and the few host transfers the runtime needs beyond dfdx's API.

use dfdx::tensor_ops::Device;

/// A device whose handles and tensor buffers may be used and dropped on another thread than the one
/// that made them: a checkpoint snapshot (its tensors share the live buffers) travels to the writer
/// thread of `async_checkpointing`.
///
/// # Safety
///
/// Implement it only for such a device. `Cpu` is `Send + Sync`. dfdx's `Cuda` is neither only because
/// it holds a raw CUDA stream handle (`CudaStream`), which the CUDA driver lets any thread use once the
/// context is bound (cudarc binds it on each call, and declares `CudaDevice`, which holds a stream
/// too, `Send + Sync`).
pub unsafe trait SharedAcrossThreads {}

// SAFETY: `Cpu` is `Send + Sync`.
unsafe impl SharedAcrossThreads for dfdx::tensor::Cpu {}

// SAFETY: see the trait: the stream handle is the only part that is not `Send + Sync`.
#[cfg(feature = "cuda")]
unsafe impl SharedAcrossThreads for dfdx::tensor::Cuda {}

/// A dfdx device fulgur can train on: [`dfdx::tensor::Cpu`], and `Cuda` with the `cuda` feature.
/// [`fulgur::nn`](crate::nn)'s layers run on every one ([`WindowDevice`](crate::nn::WindowDevice)).
///
/// dfdx keeps optimizer buffers as raw device vectors (`Storage::Vec`) that it offers no public way to
/// fill from the host. Restoring optimizer state from a checkpoint needs exactly that, so each device
/// implements these two transfers; everything else goes through dfdx's public API.
pub trait Backend:
    Device<f32>
    + dfdx::nn::DeviceBuildExt
    + crate::nn::WindowDevice<f32>
    + Clone
    + SharedAcrossThreads
    + 'static
{
    /// A short name for messages and checkpoint metadata (`"cpu"`, `"cuda"`).
    const NAME: &'static str;

    /// Copies a device vector to the host.
    fn vec_to_host(
        &self,
        v: &<Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<Vec<f32>, <Self as dfdx::tensor::HasErr>::Err>;

    /// Overwrites a device vector with host values; `src.len()` equals the vector's length.
    fn host_to_vec(
        &self,
        src: &[f32],
        dst: &mut <Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<(), <Self as dfdx::tensor::HasErr>::Err>;

    /// A new device (the first one, for CUDA) whose random generator starts from `seed`, so that
    /// weight initialisation is reproducible.
    fn try_seeded(seed: u64) -> Result<Self, <Self as dfdx::tensor::HasErr>::Err>;

    /// Replaces every gradient of `module` by its mean over the ranks of `strategy` (data parallelism);
    /// the trainer calls it after backward, before clipping and the optimizer step. The default moves
    /// the gradients through `buffer` on the host, in large buckets, with
    /// [`Strategy::all_reduce_f32`](crate::strategy::Strategy::all_reduce_f32).
    fn average_grads<M: dfdx::nn::tensor_collection::TensorCollection<f32, Self>>(
        module: &mut M,
        grads: &mut dfdx::tensor::Gradients<f32, Self>,
        strategy: &dyn crate::strategy::Strategy,
        buffer: &mut crate::strategy::GradBuffer,
    ) -> crate::Result<()> {
        buffer.average(module, grads, strategy)
    }
}

impl Backend for dfdx::tensor::Cpu {
    const NAME: &'static str = "cpu";

    fn vec_to_host(
        &self,
        v: &<Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<Vec<f32>, <Self as dfdx::tensor::HasErr>::Err> {
        Ok(v.to_vec())
    }

    fn host_to_vec(
        &self,
        src: &[f32],
        dst: &mut <Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<(), <Self as dfdx::tensor::HasErr>::Err> {
        dst.copy_from_slice(src);
        Ok(())
    }

    fn try_seeded(seed: u64) -> Result<Self, <Self as dfdx::tensor::HasErr>::Err> {
        Ok(Self::seed_from_u64(seed))
    }
}

#[cfg(feature = "cuda")]
impl Backend for dfdx::tensor::Cuda {
    const NAME: &'static str = "cuda";

    fn vec_to_host(
        &self,
        v: &<Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<Vec<f32>, <Self as dfdx::tensor::HasErr>::Err> {
        let dev = (**v).device();
        Ok(dev.dtoh_sync_copy(&**v)?)
    }

    fn host_to_vec(
        &self,
        src: &[f32],
        dst: &mut <Self as dfdx::tensor::Storage<f32>>::Vec,
    ) -> Result<(), <Self as dfdx::tensor::HasErr>::Err> {
        let dev = (**dst).device();
        Ok(dev.htod_sync_copy_into(src, &mut **dst)?)
    }

    fn try_seeded(seed: u64) -> Result<Self, <Self as dfdx::tensor::HasErr>::Err> {
        Self::try_seed_from_u64(seed)
    }

    /// Over NCCL, on the device, when the strategy has a communicator (`Ddp::with_nccl`, features
    /// `cuda` and `mpi`); else through the host.
    fn average_grads<M: dfdx::nn::tensor_collection::TensorCollection<f32, Self>>(
        module: &mut M,
        grads: &mut dfdx::tensor::Gradients<f32, Self>,
        strategy: &dyn crate::strategy::Strategy,
        buffer: &mut crate::strategy::GradBuffer,
    ) -> crate::Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(nccl) = strategy.nccl() {
            return nccl.average(module, grads);
        }
        buffer.average(module, grads, strategy)
    }
}

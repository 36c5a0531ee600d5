//! Gradient averaging on the GPU over NCCL, one GPU per rank (`Ddp::with_nccl`).
//!
//! The same buckets as the host path ([`GradBuffer::BUCKET_LEN`] values, the module's parameter order),
//! but they never leave the device: each bucket is gathered from the gradients by device-to-device
//! copies, averaged by one NCCL all-reduce, and scattered back. Copies and collectives are queued on the
//! device's one stream, so they run in order without a host synchronisation. Only two buckets of memory
//! are used, whatever the size of the model.

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaDevice, CudaSlice, DeviceSlice};
use cudarc::nccl::{Comm, Id, ReduceOp};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cuda, Gradients, Storage, Tensor};

use super::{Ddp, GradBuffer, Strategy};
use crate::optim::named::{visit_params_mut, ParamVisitor};
use crate::{Error, Result};

/// Bytes of an NCCL unique id.
const ID_LEN: usize = 128;

/// An NCCL communicator over the ranks of a [`Ddp`], one GPU each, and the two bucket buffers the
/// gradients travel in. Built by [`Ddp::with_nccl`].
pub struct NcclGrads {
    state: Mutex<State>,
    world: usize,
}

struct State {
    comm: Comm,
    /// Send and receive buffers of a full bucket, and of the last, shorter one: an NCCL call reduces
    /// a whole buffer, so each length has its own.
    full: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    tail: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time, which the mutex
// guarantees; its device is bound to the calling thread before every use.
unsafe impl Send for NcclGrads {}
unsafe impl Sync for NcclGrads {}

impl std::fmt::Debug for NcclGrads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclGrads")
            .field("world", &self.world)
            .finish()
    }
}

fn nccl_err(what: &str) -> impl Fn(cudarc::nccl::result::NcclError) -> Error + '_ {
    move |e| Error::Device(format!("NCCL could not {what}: {:?}", e.0))
}

fn driver_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("CUDA could not {what}: {e:?}"))
}

impl Ddp {
    /// Averages gradients over NCCL on `device`, one GPU per rank, instead of through the host: rank 0
    /// creates the NCCL id, MPI carries it to the other ranks, and each rank joins the NCCL
    /// communicator with its GPU. Collective: every rank calls it with its own device, usually
    /// `Cuda::try_build(ddp.local_rank(), seed)`. Needs NCCL 2.10 or later (its `ncclAvg`).
    ///
    /// The other ranks would wait for a failing rank forever inside NCCL, so an error here ends every
    /// rank ([`Strategy::fail`]) with more than one rank; with one, it is returned.
    pub fn with_nccl(self, device: &Cuda) -> Result<Self> {
        match self.nccl_comm(device) {
            Ok(comm) => {
                let world = self.world_size();
                Ok(self.set_nccl(NcclGrads {
                    state: Mutex::new(State {
                        comm,
                        full: None,
                        tail: None,
                    }),
                    world,
                }))
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn nccl_comm(&self, device: &Cuda) -> Result<Comm> {
        let probe = Storage::<f32>::try_alloc_len(device, 1)?;
        let dev: Arc<CudaDevice> = probe.device();
        // Rank 0 sends the id, or nothing when it could not make one, so no rank waits for it.
        let mut id = Vec::new();
        let made = if self.rank() == 0 {
            let made = Id::new().map_err(nccl_err("create a unique id"));
            if let Ok(made) = &made {
                id = made.internal().iter().map(|&c| c as u8).collect();
            }
            Some(made)
        } else {
            None
        };
        self.broadcast(&mut id, 0)?;
        if let Some(Err(e)) = made {
            return Err(e);
        }
        let internal: [std::ffi::c_char; ID_LEN] =
            std::array::from_fn(|i| id.get(i).copied().unwrap_or(0) as _);
        if id.len() != ID_LEN {
            return Err(Error::Device(format!(
                "rank 0 could not create an NCCL id (it sent {} bytes, not {ID_LEN})",
                id.len()
            )));
        }
        Comm::from_rank(dev, self.rank(), self.world_size(), Id::uninit(internal))
            .map_err(nccl_err("join the communicator of the ranks"))
    }
}

impl NcclGrads {
    /// Replaces every gradient of `module` by its mean over the ranks, on the device.
    pub(crate) fn average<M: TensorCollection<f32, Cuda>>(
        &self,
        module: &mut M,
        grads: &mut Gradients<f32, Cuda>,
    ) -> Result<()> {
        if self.world <= 1 {
            return Ok(());
        }
        let mut count = Count(0);
        visit_params_mut(module, &mut count)?;
        let total = count.0;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { comm, full, tail } = &mut *state;
        let dev = comm.device();
        dev.bind_to_thread()
            .map_err(driver_err("bind the device"))?;
        let mut lo = 0;
        while lo < total {
            let len = GradBuffer::BUCKET_LEN.min(total - lo);
            let slot = if len == GradBuffer::BUCKET_LEN {
                &mut *full
            } else {
                &mut *tail
            };
            if slot.as_ref().is_none_or(|(send, _)| send.len() != len) {
                let alloc = || {
                    dev.alloc_zeros::<f32>(len)
                        .map_err(driver_err("allocate a gradient bucket"))
                };
                *slot = Some((alloc()?, alloc()?));
            }
            let Some((send, recv)) = slot.as_mut() else {
                unreachable!("the bucket was allocated above")
            };
            visit_params_mut(module, &mut Bucket::gather(&dev, &mut *grads, lo, send))?;
            comm.all_reduce(send, recv, &ReduceOp::Avg)
                .map_err(nccl_err("average a gradient bucket"))?;
            visit_params_mut(module, &mut Bucket::scatter(&dev, &mut *grads, lo, recv))?;
            lo += len;
        }
        Ok(())
    }
}

/// Counts the gradient values of a module.
struct Count(usize);

impl ParamVisitor<Cuda> for Count {
    fn visit<S: Shape>(&mut self, _name: String, param: &mut Tensor<S, f32, Cuda>) -> Result<()> {
        self.0 += param.shape().num_elements();
        Ok(())
    }
}

/// Copies the part of every gradient that falls in the bucket starting at flat offset `lo` into the
/// bucket (`gather`), or back.
struct Bucket<'a> {
    dev: &'a Arc<CudaDevice>,
    grads: &'a mut Gradients<f32, Cuda>,
    buf: &'a mut CudaSlice<f32>,
    lo: usize,
    offset: usize,
    gather: bool,
}

impl<'a> Bucket<'a> {
    fn gather(
        dev: &'a Arc<CudaDevice>,
        grads: &'a mut Gradients<f32, Cuda>,
        lo: usize,
        buf: &'a mut CudaSlice<f32>,
    ) -> Self {
        Self {
            dev,
            grads,
            buf,
            lo,
            offset: 0,
            gather: true,
        }
    }

    fn scatter(
        dev: &'a Arc<CudaDevice>,
        grads: &'a mut Gradients<f32, Cuda>,
        lo: usize,
        buf: &'a mut CudaSlice<f32>,
    ) -> Self {
        Self {
            dev,
            grads,
            buf,
            lo,
            offset: 0,
            gather: false,
        }
    }
}

impl ParamVisitor<Cuda> for Bucket<'_> {
    fn visit<S: Shape>(&mut self, _name: String, param: &mut Tensor<S, f32, Cuda>) -> Result<()> {
        let len = param.shape().num_elements();
        let (start, end) = (self.offset, self.offset + len);
        self.offset = end;
        let hi = self.lo + self.buf.len();
        let (from, to) = (start.max(self.lo), end.min(hi));
        if from >= to {
            return Ok(());
        }
        let g: &mut CudaSlice<f32> = self
            .grads
            .get_or_alloc_mut(param)
            .map_err(crate::device_err)?;
        let (in_grad, in_buf) = (from - start..to - start, from - self.lo..to - self.lo);
        let copied = if self.gather {
            self.dev
                .dtod_copy(&g.slice(in_grad), &mut self.buf.slice_mut(in_buf))
        } else {
            self.dev
                .dtod_copy(&self.buf.slice(in_buf), &mut g.slice_mut(in_grad))
        };
        copied.map_err(driver_err("copy a gradient"))
    }
}

/// These need an NVIDIA GPU (and NCCL): `scripts/gpu-check.sh` runs them.
#[cfg(test)]
mod tests {
    use dfdx::nn::{builders::Linear, DeviceBuildExt, ZeroGrads};

    use super::*;
    use crate::Backend;

    /// Every gradient value of `module`, in the order of the flat buffer.
    struct Read<'a> {
        grads: &'a mut Gradients<f32, Cuda>,
        flat: Vec<f32>,
        fill_from: Option<f32>,
    }

    impl ParamVisitor<Cuda> for Read<'_> {
        fn visit<S: Shape>(&mut self, _: String, param: &mut Tensor<S, f32, Cuda>) -> Result<()> {
            let dev = param.device().clone();
            let g = self.grads.get_or_alloc_mut(param)?;
            if let Some(start) = &mut self.fill_from {
                let values: Vec<f32> = (0..g.len()).map(|i| *start + i as f32).collect();
                *start += values.len() as f32;
                dev.host_to_vec(&values, g)?;
            }
            self.flat.extend(dev.vec_to_host(g)?);
            Ok(())
        }
    }

    fn read(
        m: &mut impl TensorCollection<f32, Cuda>,
        grads: &mut Gradients<f32, Cuda>,
    ) -> Vec<f32> {
        let mut r = Read {
            grads,
            flat: Vec::new(),
            fill_from: None,
        };
        visit_params_mut(m, &mut r).unwrap();
        r.flat
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU: run by scripts/gpu-check.sh"]
    fn buckets_gather_and_scatter_values_across_parameter_boundaries() {
        let dev = Cuda::seed_from_u64(0);
        let cuda = Storage::<f32>::try_alloc_len(&dev, 1).unwrap().device();
        // Weight 2x3 then bias 2: eight values, in buckets of 5 and 3 that split the weight.
        let mut m = dev.build_module::<Linear<3, 2>, f32>();
        let mut grads = m.alloc_grads();
        let mut fill = Read {
            grads: &mut grads,
            flat: Vec::new(),
            fill_from: Some(0.0),
        };
        visit_params_mut(&mut m, &mut fill).unwrap();
        let flat: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(fill.flat, flat);
        for (lo, len) in [(0, 5), (5, 3)] {
            let mut buf = cuda.alloc_zeros::<f32>(len).unwrap();
            visit_params_mut(&mut m, &mut Bucket::gather(&cuda, &mut grads, lo, &mut buf)).unwrap();
            let got = cuda.dtoh_sync_copy(&buf).unwrap();
            assert_eq!(got, flat[lo..lo + len], "bucket at {lo}");
            let doubled: Vec<f32> = got.iter().map(|v| v * 2.0).collect();
            cuda.htod_sync_copy_into(&doubled, &mut buf).unwrap();
            visit_params_mut(
                &mut m,
                &mut Bucket::scatter(&cuda, &mut grads, lo, &mut buf),
            )
            .unwrap();
        }
        let doubled: Vec<f32> = flat.iter().map(|v| v * 2.0).collect();
        assert_eq!(read(&mut m, &mut grads), doubled);
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU and NCCL: run by scripts/gpu-check.sh"]
    fn nccl_averages_over_one_rank() {
        let dev = Cuda::seed_from_u64(0);
        let cuda = Storage::<f32>::try_alloc_len(&dev, 1).unwrap().device();
        let comm = Comm::from_rank(cuda.clone(), 0, 1, Id::new().unwrap()).unwrap();
        let send = cuda.htod_sync_copy(&[1.0f32, -2.0, 3.5]).unwrap();
        let mut recv = cuda.alloc_zeros::<f32>(3).unwrap();
        comm.all_reduce(&send, &mut recv, &ReduceOp::Avg).unwrap();
        assert_eq!(cuda.dtoh_sync_copy(&recv).unwrap(), [1.0, -2.0, 3.5]);
    }
}

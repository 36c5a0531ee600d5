//! Gradient averaging across ranks in large contiguous buckets (the host path).
//!
//! One collective per tensor would pay the collective's latency hundreds of times a step. Instead every
//! gradient is copied into one flat host buffer, in the module's parameter order (the same on every
//! rank), and the buffer is summed over the ranks in buckets of [`GradBuffer::BUCKET_LEN`] values, as
//! PyTorch's DDP does with its 25 MiB buckets; the sums are divided by the world size and copied back.

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::HasShape;
use dfdx::shapes::Shape;
use dfdx::tensor::{Gradients, Tensor};

use super::{ReduceOp, Strategy};
use crate::device::Backend;
use crate::optim::named::{visit_params_mut, ParamVisitor};
use crate::Result;

/// The reusable flat buffer gradients travel in; kept by the trainer between steps, so a step
/// allocates nothing.
#[derive(Debug, Default)]
pub struct GradBuffer {
    flat: Vec<f32>,
}

impl GradBuffer {
    /// Values per collective: 25 MiB of `f32`, PyTorch DDP's default `bucket_cap_mb`.
    pub const BUCKET_LEN: usize = 25 * 1024 * 1024 / std::mem::size_of::<f32>();

    /// Replaces every gradient of `module` by its mean over the ranks of `strategy`. Does nothing in a
    /// single process.
    pub fn average<M, D>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<f32, D>,
        strategy: &dyn Strategy,
    ) -> Result<()>
    where
        M: TensorCollection<f32, D>,
        D: Backend,
    {
        let world = strategy.world_size();
        if world <= 1 {
            return Ok(());
        }
        self.flat.clear();
        visit_params_mut(
            module,
            &mut Pass {
                grads: &mut *grads,
                flat: &mut self.flat,
                offset: 0,
                gather: true,
            },
        )?;
        for bucket in self.flat.chunks_mut(Self::BUCKET_LEN) {
            strategy.all_reduce_f32(bucket, ReduceOp::Sum)?;
        }
        let scale = 1.0 / world as f32;
        self.flat.iter_mut().for_each(|g| *g *= scale);
        visit_params_mut(
            module,
            &mut Pass {
                grads,
                flat: &mut self.flat,
                offset: 0,
                gather: false,
            },
        )
    }
}

/// Gathers every gradient into `flat` (`gather`), or scatters `flat` back into the gradients.
struct Pass<'a, D: Backend> {
    grads: &'a mut Gradients<f32, D>,
    flat: &'a mut Vec<f32>,
    offset: usize,
    gather: bool,
}

impl<D: Backend> ParamVisitor<D> for Pass<'_, D> {
    fn visit<S: Shape>(&mut self, name: String, param: &mut Tensor<S, f32, D>) -> Result<()> {
        let dev = param.device().clone();
        let g = self
            .grads
            .get_or_alloc_mut(param)
            .map_err(crate::device_err)?;
        if self.gather {
            let host = dev.vec_to_host(g).map_err(crate::device_err)?;
            self.flat.extend_from_slice(&host);
        } else {
            let len = param.shape().num_elements();
            let part = self
                .flat
                .get(self.offset..self.offset + len)
                .ok_or_else(|| {
                    crate::Error::user(format!(
                        "parameter `{name}` has {len} gradient values past the {} gathered: the module's \
                         parameters changed between gathering and scattering",
                        self.flat.len()
                    ))
                })?;
            dev.host_to_vec(part, g).map_err(crate::device_err)?;
            self.offset += len;
        }
        Ok(())
    }
}

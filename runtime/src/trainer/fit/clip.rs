//! Gradient clipping by global L2 norm (Lightning's default `gradient_clip_algorithm = "norm"`).

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorRef,
};
use dfdx::shapes::Shape;
use dfdx::tensor::{Gradients, Tensor};

use crate::device::Backend;
use crate::Result;

/// Scales all gradients by `max_norm / (norm + 1e-6)` when their global L2 norm exceeds `max_norm`.
/// Returns the norm before clipping.
pub(crate) fn clip_grad_norm<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
    grads: &mut Gradients<f32, D>,
    max_norm: f64,
) -> Result<f64> {
    let mut sum = SquaredNorm {
        grads,
        sum: 0.0,
        scale: None,
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: module,
        f: &mut sum,
    })
    .map_err(crate::device_err)?;
    let norm = sum.sum.sqrt();
    if norm > max_norm {
        sum.scale = Some((max_norm / (norm + 1e-6)) as f32);
        M::iter_tensors(&mut RecursiveWalker {
            m: module,
            f: &mut sum,
        })
        .map_err(crate::device_err)?;
    }
    Ok(norm)
}

/// First pass: accumulates the squared norm. Second pass (with `scale`): scales every gradient.
struct SquaredNorm<'a, D: Backend> {
    grads: &'a mut Gradients<f32, D>,
    sum: f64,
    scale: Option<f32>,
}

impl<D: Backend> TensorVisitor<f32, D> for SquaredNorm<'_, D> {
    type Viewer = ViewTensorRef;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        t: &Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let dev = t.device().clone();
        let g = self.grads.get_or_alloc_mut(t)?;
        let mut host = dev.vec_to_host(g)?;
        match self.scale {
            None => {
                self.sum += host
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
            }
            Some(s) => {
                host.iter_mut().for_each(|x| *x *= s);
                dev.host_to_vec(&host, g)?;
            }
        }
        Ok(None)
    }
}

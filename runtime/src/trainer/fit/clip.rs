//! Gradient clipping by global L2 norm (Lightning's default `gradient_clip_algorithm = "norm"`).

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::Shape;
use dfdx::tensor::{Gradients, Tensor};

use crate::device::Backend;
use crate::optim::named::{visit_params_mut, ParamVisitor};
use crate::Result;

/// Scales all gradients by `max_norm / (norm + 1e-6)` when their global L2 norm exceeds `max_norm`.
/// Returns the norm before clipping.
pub(crate) fn clip_grad_norm<M: TensorCollection<f32, D>, D: Backend>(
    module: &mut M,
    grads: &mut Gradients<f32, D>,
    max_norm: f64,
) -> Result<f64> {
    let mut pass = GradPass {
        grads,
        sum: 0.0,
        scale: None,
    };
    visit_params_mut(module, &mut pass)?;
    let norm = pass.sum.sqrt();
    if norm > max_norm {
        pass.scale = Some((max_norm / (norm + 1e-6)) as f32);
        visit_params_mut(module, &mut pass)?;
    }
    Ok(norm)
}

/// First pass: accumulates the squared norm. Second pass (with `scale`): scales every gradient.
struct GradPass<'a, D: Backend> {
    grads: &'a mut Gradients<f32, D>,
    sum: f64,
    scale: Option<f32>,
}

impl<D: Backend> ParamVisitor<D> for GradPass<'_, D> {
    fn visit<S: Shape>(&mut self, _name: String, param: &mut Tensor<S, f32, D>) -> Result<()> {
        let dev = param.device().clone();
        let g = self
            .grads
            .get_or_alloc_mut(param)
            .map_err(crate::device_err)?;
        let mut host = dev.vec_to_host(g).map_err(crate::device_err)?;
        match self.scale {
            None => {
                self.sum += host
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
            }
            Some(s) => {
                host.iter_mut().for_each(|x| *x *= s);
                dev.host_to_vec(&host, g).map_err(crate::device_err)?;
            }
        }
        Ok(())
    }
}

//! Manual optimization: the training step steps the optimizers itself (Lightning's
//! `automatic_optimization = False`, `self.optimizers()`, `manual_backward`, `opt.step()`).

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::Gradients;

use super::{LrScheduler, Optimizer, Optimizers};
use crate::device::Backend;
use crate::strategy::{GradBuffer, Strategy};
use crate::{Error, Result};

/// The optimizers of a module in manual optimization, as its
/// [`manual_training_step`](crate::module::LightningModule::manual_training_step) sees them: Lightning's
/// `self.optimizers()` and `self.lr_schedulers()`, addressed by their index in
/// [`configure_optimizers`](crate::module::LightningModule::configure_optimizers).
///
/// [`step`](Self::step) is Lightning's `manual_backward` plus `opt.step()`: the gradients are averaged
/// over the processes of a data-parallel run, then optimizer `index` updates the parameters it
/// selects, and the trainer's `global_step` counts one step (in manual optimization Lightning counts
/// every optimizer's step). Schedulers move only when [`scheduler_step`](Self::scheduler_step) is
/// called. Zeroing the gradients is the step's business: compute each loss's gradients afresh
/// (`self.alloc_grads()`) or zero them (`self.zero_grads(&mut grads)`) before the next backward pass.
///
/// In a data-parallel run every process must call [`step`](Self::step) equally often, in the same
/// order: each call averages the gradients across the processes.
///
/// Outside a trainer (in a unit test of a step, say), [`new`](Self::new) builds one over optimizers of
/// your own:
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::optim::{ManualOptimization, Optimizers, Sgd};
/// use fulgur_runtime::strategy::{GradBuffer, SingleProcess};
///
/// let dev = Cpu::default();
/// let mut w = dev.tensor([1.0f32, 2.0]);
/// let mut optimizers = Optimizers::new(Sgd::new(SgdConfig { lr: 0.5, momentum: None, weight_decay: None }));
/// let mut buffer = GradBuffer::default();
/// let mut opt = ManualOptimization::new(&mut optimizers, &SingleProcess, &mut buffer);
///
/// // d(sum(w))/dw = 1 for each element.
/// let mut grads = w.trace(w.alloc_grads()).sum().backward();
/// opt.step(0, &mut w, &mut grads)?;
/// assert_eq!(w.as_vec(), [0.5, 1.5]);
/// assert_eq!(opt.steps(), 1);
/// assert!(opt.step(1, &mut w, &mut grads).is_err()); // there is one optimizer
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
pub struct ManualOptimization<'a, M, D: Backend> {
    optimizers: &'a mut Optimizers<M, D>,
    strategy: &'a dyn Strategy,
    grad_buffer: &'a mut GradBuffer,
    steps: u64,
}

impl<'a, M: TensorCollection<f32, D>, D: Backend> ManualOptimization<'a, M, D> {
    /// The optimizers of one training step; gradients are averaged over the processes of `strategy`
    /// through `grad_buffer` before each optimizer step. The trainer builds one per training batch,
    /// after it has started every scheduler ([`LrScheduler::start`]) when `fit` began; outside a
    /// trainer, start them yourself before [`scheduler_step`](Self::scheduler_step).
    pub fn new(
        optimizers: &'a mut Optimizers<M, D>,
        strategy: &'a dyn Strategy,
        grad_buffer: &'a mut GradBuffer,
    ) -> Self {
        Self {
            optimizers,
            strategy,
            grad_buffer,
            steps: 0,
        }
    }

    /// The number of optimizers.
    pub fn len(&self) -> usize {
        self.optimizers.len()
    }

    /// Always `false`: there is at least one optimizer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Averages `grads` over the processes of the run (nothing to do in one process), then applies
    /// one update of optimizer `index` to `module`; counts one optimizer step.
    pub fn step(
        &mut self,
        index: usize,
        module: &mut M,
        grads: &mut Gradients<f32, D>,
    ) -> Result<()> {
        let len = self.len();
        let (optimizer, _) = self
            .optimizers
            .get_mut(index)
            .ok_or_else(|| out_of_range(index, len))?;
        D::average_grads(module, grads, self.strategy, self.grad_buffer)?;
        optimizer.step(module, grads)?;
        self.steps += 1;
        Ok(())
    }

    /// The learning rate in force of optimizer `index`.
    pub fn lr(&self, index: usize) -> Result<f64> {
        Ok(self.optimizer(index)?.lr())
    }

    /// Optimizer `index` (its state, its learning rate).
    pub fn optimizer(&self, index: usize) -> Result<&dyn Optimizer<M, D>> {
        self.optimizers
            .optimizer(index)
            .ok_or_else(|| out_of_range(index, self.len()))
    }

    /// The learning-rate scheduler of optimizer `index`, if it has one.
    pub fn scheduler(&self, index: usize) -> Result<Option<&dyn LrScheduler>> {
        self.optimizer(index)?;
        Ok(self.optimizers.scheduler(index))
    }

    /// Advances the scheduler of optimizer `index` one interval and sets the optimizer's learning rate
    /// (Lightning's `sch.step()`: in manual optimization only the training step moves schedulers).
    /// An error when that optimizer has no scheduler.
    pub fn scheduler_step(&mut self, index: usize) -> Result<()> {
        let len = self.len();
        match self.optimizers.get_mut(index) {
            None => Err(out_of_range(index, len)),
            Some((_, None)) => Err(Error::config(
                "configure_optimizers",
                format!(
                    "`scheduler_step({index})`: optimizer {index} has no learning-rate scheduler; give it \
                     one in `configure_optimizers` with `.with_scheduler(..)` right after it"
                ),
            )),
            Some((optimizer, Some(scheduler))) => {
                let lr = scheduler.step();
                optimizer.set_lr(lr);
                Ok(())
            }
        }
    }

    /// Optimizer steps taken through this value.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

fn out_of_range(index: usize, len: usize) -> Error {
    Error::config(
        "configure_optimizers",
        format!(
            "there is no optimizer {index}: `configure_optimizers` returns {len} optimizer{} (indices 0 to {})",
            if len == 1 { "" } else { "s" },
            len - 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::optim::{Sgd, StepLr};
    use crate::strategy::SingleProcess;

    fn sgd(lr: f64) -> Sgd<Cpu> {
        Sgd::new(SgdConfig {
            lr,
            momentum: None,
            weight_decay: None,
        })
    }

    #[test]
    fn each_index_steps_its_own_optimizer_and_a_missing_one_is_an_error() {
        type P = Tensor<Rank1<2>, f32, Cpu>;
        let dev = Cpu::default();
        let mut p: P = dev.tensor([1.0, 1.0]);
        let mut optimizers: Optimizers<P, Cpu> = Optimizers::new(sgd(0.5))
            .and(sgd(0.25))
            .with_scheduler(StepLr::new(1, 0.1));
        // What `fit` does when it starts.
        if let Some((o, Some(s))) = optimizers.get_mut(1) {
            let lr = s.start(o.lr());
            o.set_lr(lr);
        }
        let mut buffer = GradBuffer::default();
        let mut opt = ManualOptimization::new(&mut optimizers, &SingleProcess, &mut buffer);
        assert_eq!(opt.len(), 2);

        let mut grads = p.trace(p.alloc_grads()).sum().backward();
        opt.step(1, &mut p, &mut grads).unwrap();
        assert_eq!(p.as_vec(), [0.75, 0.75]);
        opt.step(0, &mut p, &mut grads).unwrap();
        assert_eq!(p.as_vec(), [0.25, 0.25]);
        assert_eq!(opt.steps(), 2);

        assert_eq!(opt.lr(1).unwrap(), 0.25);
        opt.scheduler_step(1).unwrap();
        assert!((opt.lr(1).unwrap() - 0.025).abs() < 1e-12);
        assert_eq!(opt.lr(0).unwrap(), 0.5);

        let err = opt.step(2, &mut p, &mut grads).unwrap_err();
        assert_eq!(
            err.to_string(),
            "there is no optimizer 2: `configure_optimizers` returns 2 optimizers (indices 0 to 1)"
        );
        assert_eq!(opt.steps(), 2, "a refused step is not counted");
        assert!(opt.lr(5).is_err() && opt.scheduler(5).is_err());
        assert!(opt
            .scheduler_step(7)
            .unwrap_err()
            .to_string()
            .starts_with("there is no optimizer 7"));
        let err = opt.scheduler_step(0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`scheduler_step(0)`: optimizer 0 has no learning-rate scheduler"),
            "{err}"
        );
    }
}

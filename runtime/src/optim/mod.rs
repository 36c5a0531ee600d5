//! Optimizers and learning-rate schedulers whose state is saved and restored by parameter name.
//!
//! dfdx 0.13 keeps its optimizers' moments private, so a checkpoint could not hold them. fulgur's
//! optimizers call dfdx's public update kernels (`SgdConfig::try_update`, `AdamConfig::try_update`) and
//! keep the state themselves, keyed by the parameter names of the module's `TensorCollection`.

use dfdx::tensor::Gradients;

use crate::checkpoint::{OptimizerState, SchedulerState};
use crate::device::Backend;
use crate::Result;

/// The optimizer of a module `M` on device `D`.
pub trait Optimizer<M, D: Backend> {
    /// Applies one update to every trainable parameter of `module` from `grads`.
    fn step(&mut self, module: &mut M, grads: &mut Gradients<f32, D>) -> Result<()>;

    /// The learning rate in force.
    fn lr(&self) -> f64;

    /// Sets the learning rate (schedulers call this).
    fn set_lr(&mut self, lr: f64);

    /// The state to store in a checkpoint, keyed by parameter name.
    fn state_dict(&self) -> Result<OptimizerState>;

    /// Restores state saved by [`Optimizer::state_dict`], checking it against `module`'s parameters.
    fn load_state_dict(&mut self, module: &M, state: &OptimizerState) -> Result<(), StateError>;

    /// Checks the configuration against `module` when `fit` starts, before any state is restored: fails
    /// when it names what the module lacks (a [`ParamGroup`] whose pattern selects no parameter). The
    /// default accepts every module.
    fn check_params(&self, module: &M) -> Result<()> {
        let _ = module;
        Ok(())
    }
}

/// When a scheduler steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// After every optimizer step.
    Step,
    /// After every training epoch (Lightning's default).
    Epoch,
}

/// A learning-rate scheduler whose state can be checkpointed.
pub trait LrScheduler: Send {
    /// When it steps.
    fn interval(&self) -> Interval;

    /// Called once when training starts with the optimizer's learning rate; returns the rate for the
    /// first update.
    fn start(&mut self, base_lr: f64) -> f64;

    /// Advances one interval and returns the new learning rate.
    fn step(&mut self) -> f64;

    /// The state to store in a checkpoint.
    fn state_dict(&self) -> SchedulerState;

    /// Restores state saved by [`LrScheduler::state_dict`].
    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<(), StateError>;
}

/// Why stored optimizer or scheduler state does not fit the one configured now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// What `configure_optimizers` returns: an optimizer and an optional scheduler.
pub struct Optimizers<M, D: Backend> {
    /// The optimizer.
    pub optimizer: Box<dyn Optimizer<M, D>>,
    /// The learning-rate scheduler, if any.
    pub scheduler: Option<Box<dyn LrScheduler>>,
}

impl<M, D: Backend> Optimizers<M, D> {
    /// An optimizer with no scheduler.
    pub fn new(optimizer: impl Optimizer<M, D> + 'static) -> Self {
        Self {
            optimizer: Box::new(optimizer),
            scheduler: None,
        }
    }

    /// Adds a learning-rate scheduler.
    pub fn with_scheduler(mut self, scheduler: impl LrScheduler + 'static) -> Self {
        self.scheduler = Some(Box::new(scheduler));
        self
    }
}

mod adam;
mod group;
pub(crate) mod named;
mod scheduler;
mod sgd;

pub use adam::Adam;
pub use dfdx::optim::{AdamConfig, Momentum, SgdConfig, WeightDecay};
pub use group::ParamGroup;
pub use scheduler::{CosineAnnealingLr, LinearWarmup, StepLr};
pub use sgd::Sgd;

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

    /// Its name and settings in force per parameter group, for callbacks (Lightning's
    /// `LearningRateMonitor` reads them). The default knows only the learning rate, under the type's name.
    fn facts(&self) -> OptimizerFacts {
        let name = std::any::type_name::<Self>();
        let short = name.split('<').next().unwrap_or(name);
        OptimizerFacts::lr_only(short.rsplit("::").next().unwrap_or(short), self.lr())
    }

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

/// What `configure_optimizers` returns: one optimizer or several, each with an optional scheduler.
///
/// Lightning's `configure_optimizers` returning a list of optimizers and schedulers. Several optimizers
/// need manual optimization ([`LightningModule::MANUAL_OPTIMIZATION`](crate::module::LightningModule::MANUAL_OPTIMIZATION)):
/// `fit` refuses them otherwise, as Lightning does. Give each its own parameters with
/// [`Adam::params`] or [`Sgd::params`], or both move every parameter.
///
/// ```
/// use dfdx::optim::{AdamConfig, SgdConfig};
/// use fulgur_runtime::optim::{Adam, Optimizers, Sgd, StepLr};
///
/// # struct Gan;
/// # impl dfdx::nn::tensor_collection::TensorCollection<f32, dfdx::tensor::Cpu> for Gan {
/// #     type To<E2: dfdx::shapes::Dtype, D2: dfdx::tensor_ops::Device<E2>> = ();
/// #     fn iter_tensors<V: dfdx::nn::tensor_collection::ModuleVisitor<Self, f32, dfdx::tensor::Cpu>>(
/// #         _: &mut V,
/// #     ) -> Result<Option<()>, V::Err> { Ok(Some(())) }
/// # }
/// type Dev = dfdx::tensor::Cpu;
/// let opts: Optimizers<Gan, Dev> = Optimizers::new(Adam::new(AdamConfig::default()).params("generator.*"))
///     .with_scheduler(StepLr::new(10, 0.5)) // the generator's
///     .and(Sgd::new(SgdConfig::default()).params("discriminator.*"));
/// assert_eq!(opts.len(), 2);
/// assert!(opts.scheduler(0).is_some() && opts.scheduler(1).is_none());
/// ```
pub struct Optimizers<M, D: Backend> {
    /// The first optimizer.
    pub optimizer: Box<dyn Optimizer<M, D>>,
    /// The first optimizer's learning-rate scheduler, if any.
    pub scheduler: Option<Box<dyn LrScheduler>>,
    more: Vec<Slot<M, D>>,
}

/// An optimizer and its scheduler, mutably.
pub(crate) type SlotMut<'a, M, D> = (
    &'a mut (dyn Optimizer<M, D> + 'static),
    Option<&'a mut (dyn LrScheduler + 'static)>,
);

/// An optimizer after the first, with its scheduler.
struct Slot<M, D: Backend> {
    optimizer: Box<dyn Optimizer<M, D>>,
    scheduler: Option<Box<dyn LrScheduler>>,
}

impl<M, D: Backend> Optimizers<M, D> {
    /// An optimizer with no scheduler.
    pub fn new(optimizer: impl Optimizer<M, D> + 'static) -> Self {
        Self {
            optimizer: Box::new(optimizer),
            scheduler: None,
            more: Vec::new(),
        }
    }

    /// Adds a learning-rate scheduler to the optimizer added last.
    pub fn with_scheduler(mut self, scheduler: impl LrScheduler + 'static) -> Self {
        let scheduler = Some(Box::new(scheduler) as Box<dyn LrScheduler>);
        match self.more.last_mut() {
            Some(slot) => slot.scheduler = scheduler,
            None => self.scheduler = scheduler,
        }
        self
    }

    /// Adds another optimizer (index [`len`](Self::len) before the call); a following
    /// [`with_scheduler`](Self::with_scheduler) gives it its scheduler.
    #[allow(clippy::should_implement_trait)]
    pub fn and(mut self, optimizer: impl Optimizer<M, D> + 'static) -> Self {
        self.more.push(Slot {
            optimizer: Box::new(optimizer),
            scheduler: None,
        });
        self
    }

    /// The number of optimizers (at least 1).
    pub fn len(&self) -> usize {
        1 + self.more.len()
    }

    /// Always `false`: there is at least one optimizer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Optimizer `index`, in the order they were added.
    pub fn optimizer(&self, index: usize) -> Option<&dyn Optimizer<M, D>> {
        match index {
            0 => Some(&*self.optimizer),
            i => self.more.get(i - 1).map(|s| &*s.optimizer),
        }
    }

    /// Every optimizer's [`facts`](Optimizer::facts), in order.
    pub fn facts(&self) -> Vec<OptimizerFacts> {
        (0..self.len())
            .filter_map(|i| {
                let mut facts = self.optimizer(i)?.facts();
                facts.scheduler = self.scheduler(i).map(|s| s.interval());
                Some(facts)
            })
            .collect()
    }

    /// The learning-rate scheduler of optimizer `index`, if it has one.
    pub fn scheduler(&self, index: usize) -> Option<&dyn LrScheduler> {
        match index {
            0 => self.scheduler.as_deref(),
            i => self.more.get(i - 1).and_then(|s| s.scheduler.as_deref()),
        }
    }

    /// Optimizer `index` and its scheduler, mutably.
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<SlotMut<'_, M, D>> {
        match index {
            0 => Some((&mut *self.optimizer, self.scheduler.as_deref_mut())),
            i => self
                .more
                .get_mut(i - 1)
                .map(|s| (&mut *s.optimizer, s.scheduler.as_deref_mut())),
        }
    }
}

mod adam;
mod facts;
mod group;
mod manual;
pub(crate) mod named;
mod scheduler;
mod select;
mod sgd;

pub use adam::Adam;
pub use dfdx::optim::{AdamConfig, Momentum, SgdConfig, WeightDecay};
pub use facts::{GroupFacts, OptimizerFacts};
pub use group::ParamGroup;
pub use manual::ManualOptimization;
pub use scheduler::{CosineAnnealingLr, LinearWarmup, StepLr};
pub use sgd::Sgd;

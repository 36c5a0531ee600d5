//! The module trait: what a model must provide for the trainer to fit, validate, test and checkpoint it.

mod load;
#[doc(hidden)]
pub mod macro_support;
mod state_dict;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::Rank0;
use dfdx::tensor::{Gradients, OwnedTape, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::callbacks::Callback;
use crate::checkpoint::Checkpoint;
use crate::device::Backend;
use crate::metrics::{MetricSpec, StepLog};
use crate::optim::{ManualOptimization, Optimizers};
use crate::Result;

pub use load::load_weights;
pub(crate) use state_dict::snapshot_state_dict;
pub use state_dict::{load_state_dict, param_shapes, state_dict};

/// The loss a training step returns: a scalar that still carries its gradient tape.
pub type Loss<D> = Tensor<Rank0, f32, D, OwnedTape<f32, D>>;

/// A module's state: its parameters (named by dfdx's [`TensorCollection`]: `net.0.weight`, …) and the
/// hyperparameters it is built from. Checkpoints store both; `load_from_checkpoint` rebuilds the module
/// from the hyperparameters alone, then loads the weights.
///
/// `#[derive(ModuleState)]` writes this impl (and the `TensorCollection` one) from the struct's fields.
pub trait ModuleState<D: Backend>: TensorCollection<f32, D> + Sized + 'static {
    /// The hyperparameters stored in every checkpoint. Use `()` when there are none.
    type Hparams: Serialize + DeserializeOwned;

    /// The hyperparameters this instance was built from.
    fn hparams(&self) -> &Self::Hparams;

    /// Builds a fresh module (new weights) from hyperparameters on `device`.
    fn from_hparams(hparams: Self::Hparams, device: &D) -> Result<Self>;
}

/// A dfdx module type `M` built on device `D` with f32 parameters: the type of a module field.
pub type Built<M, D> = <M as dfdx::nn::BuildOnDevice<D, f32>>::Built;

/// A model the [`Trainer`](crate::trainer::Trainer) can train: Lightning's `LightningModule`.
///
/// Checkpoints store its parameters, and the optimizer state, under the names of its [`ModuleState`].
/// The `#[lightning_module]` macro writes this impl from annotated methods; everything it generates can
/// also be written by hand.
///
/// A linear regression written by hand (the macros write the same from a few attributes), trained by
/// [`Trainer::fit`](crate::trainer::Trainer::fit) on an in-memory data set:
///
/// ```
/// use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
/// use dfdx::optim::SgdConfig;
/// use dfdx::prelude::*;
/// use fulgur_runtime::data::{TensorBatch, TensorData};
/// use fulgur_runtime::metrics::{MetricSpec, StepLog};
/// use fulgur_runtime::module::{Built, LightningModule, Loss, ModuleState};
/// use fulgur_runtime::optim::{Optimizers, Sgd};
/// use fulgur_runtime::trainer::Trainer;
/// use fulgur_runtime::{Backend, Result};
///
/// struct LitLinear<D: Backend> {
///     net: Built<Linear<2, 1>, D>,
/// }
///
/// // Names the parameters `net.weight`, `net.bias` (what `#[derive(ModuleState)]` writes).
/// impl<D: Backend> TensorCollection<f32, D> for LitLinear<D> {
///     type To<E2: Dtype, D2: Device<E2>> = ();
///
///     fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(v: &mut V) -> Result<Option<()>, V::Err> {
///         v.visit_fields(Self::module("net", |s| &s.net, |s| &mut s.net), |_| ())
///     }
/// }
///
/// impl<D: Backend> ModuleState<D> for LitLinear<D> {
///     type Hparams = ();
///
///     fn hparams(&self) -> &() {
///         &()
///     }
///
///     fn from_hparams((): (), device: &D) -> Result<Self> {
///         Ok(Self { net: device.build_module::<Linear<2, 1>, f32>() })
///     }
/// }
///
/// type Batch<D> = TensorBatch<Rank1<2>, Rank1<1>, D>;
///
/// impl<D: Backend> LightningModule<D> for LitLinear<D> {
///     type Batch = Batch<D>;
///     type Prediction = ();
///
///     // The registry: logging any other name is an error, and checkpoint monitors are checked
///     // against it before the first batch.
///     const METRICS: &'static [MetricSpec] =
///         &[MetricSpec::train("train_loss"), MetricSpec::validation("val_loss")];
///
///     fn training_step(&mut self, batch: Batch<D>, grads: Gradients<f32, D>, log: &mut StepLog)
///         -> Result<Loss<D>>
///     {
///         let loss = mse_loss(self.net.forward_mut(batch.x.traced(grads)), batch.y);
///         log.log("train_loss", loss.as_vec()[0]);
///         Ok(loss)
///     }
///
///     fn validation_step(&self, batch: Batch<D>, log: &mut StepLog) -> Result<()> {
///         log.log("val_loss", mse_loss(self.net.forward(batch.x), batch.y).as_vec()[0]);
///         Ok(())
///     }
///
///     fn configure_optimizers(&self) -> Optimizers<Self, D> {
///         Optimizers::new(Sgd::new(SgdConfig { lr: 0.1, ..Default::default() }))
///     }
/// }
///
/// // y = 2a - b on 100 points.
/// let (mut x, mut y) = (Vec::new(), Vec::new());
/// for i in 0..100 {
///     let (a, b) = ((i % 10) as f32 / 10.0, (i / 10) as f32 / 10.0);
///     x.extend([a, b]);
///     y.push(2.0 * a - b);
/// }
/// let (train, val) = TensorData::<Rank1<2>, Rank1<1>>::new(x, y)?.split(0.2, 0)?;
/// let dev = Cpu::default();
/// let (mut train, mut val) = (train.loader(10, true, &dev)?, val.loader(20, false, &dev)?);
///
/// let mut trainer = Trainer::builder()
///     .max_epochs(30)
///     .no_logger()
///     .enable_checkpointing(false)
///     .enable_progress_bar(false)
///     .enable_model_summary(false)
///     .build()?;
/// trainer.fit(LitLinear::from_hparams((), &dev)?, &mut train, Some(&mut val), None)?;
/// assert_eq!(trainer.global_step(), 30 * 8);
/// assert!(trainer.callback_metrics()["val_loss"].as_f64() < 1e-3);
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
pub trait LightningModule<D: Backend>: ModuleState<D> {
    /// What a data loader yields for one step.
    type Batch;
    /// What `predict_step` returns for one batch.
    type Prediction;

    /// Every metric the module logs, with its stage and aggregation. Logging a name that is not here is
    /// an error, and checkpoint callbacks are checked against it before the first batch.
    const METRICS: &'static [MetricSpec] = &[];

    /// One training step: the forward pass on a batch traced into `grads`, returning the loss.
    ///
    /// Trace the input with `x.traced(grads)` so that the returned loss carries the tape.
    fn training_step(
        &mut self,
        batch: Self::Batch,
        grads: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> Result<Loss<D>>;

    /// Whether the training step steps the optimizers itself (Lightning's
    /// `automatic_optimization = False`): the trainer then calls
    /// [`manual_training_step`](Self::manual_training_step) instead of
    /// [`training_step`](Self::training_step), takes no backward pass and no optimizer step of its own,
    /// moves no scheduler, and counts every optimizer step in `global_step`. Several optimizers need it.
    /// `accumulate_grad_batches` and `gradient_clip_val` are refused with it, as in Lightning.
    const MANUAL_OPTIMIZATION: bool = false;

    /// One training step in manual optimization (called only when
    /// [`MANUAL_OPTIMIZATION`](Self::MANUAL_OPTIMIZATION) is `true`): the forward passes, their
    /// gradients, and [`opt.step(index, self, &mut grads)`](ManualOptimization::step) for each optimizer
    /// to update, as many times as the step needs.
    fn manual_training_step(
        &mut self,
        batch: Self::Batch,
        opt: &mut ManualOptimization<'_, Self, D>,
        log: &mut StepLog,
    ) -> Result<()> {
        let _ = (batch, opt, log);
        Err(crate::Error::config(
            "manual_training_step",
            format!(
                "`{}` sets `MANUAL_OPTIMIZATION` but does not implement `manual_training_step`, which \
                 the trainer calls for each training batch in manual optimization",
                std::any::type_name::<Self>()
            ),
        ))
    }

    /// One validation step. The default does nothing: validation then only runs the hooks.
    ///
    /// It takes `&self`: evaluation must not change the module, and a `forward_mut` here (which would
    /// update batch-norm running statistics from validation data) does not compile.
    fn validation_step(&self, batch: Self::Batch, log: &mut StepLog) -> Result<()> {
        let _ = (batch, log);
        Ok(())
    }

    /// One test step. It takes `&self`, as [`validation_step`](Self::validation_step) does.
    fn test_step(&self, batch: Self::Batch, log: &mut StepLog) -> Result<()> {
        let _ = (batch, log);
        Err(crate::Error::config(
            "test_step",
            format!(
                "`Trainer::test` needs `test_step`, which `{}` does not implement",
                std::any::type_name::<Self>()
            ),
        ))
    }

    /// One prediction step. It takes `&self`, as [`validation_step`](Self::validation_step) does.
    fn predict_step(&self, batch: Self::Batch) -> Result<Self::Prediction> {
        let _ = batch;
        Err(crate::Error::config(
            "predict_step",
            format!(
                "`Trainer::predict` needs `predict_step`, which `{}` does not implement",
                std::any::type_name::<Self>()
            ),
        ))
    }

    /// The optimizer and optional learning-rate scheduler.
    fn configure_optimizers(&self) -> Optimizers<Self, D>;

    /// Callbacks the module brings along (the `#[checkpoint]` attributes end up here).
    fn configure_callbacks(&self) -> Result<Vec<Box<dyn Callback>>> {
        Ok(Vec::new())
    }

    /// Called after the checkpoint is built and before it is written; may add entries to `extra`.
    fn on_save_checkpoint(&self, checkpoint: &mut Checkpoint) {
        let _ = checkpoint;
    }

    /// Called with a loaded checkpoint before its weights are applied.
    fn on_load_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }

    /// Called after each training batch, after the callbacks' `on_train_batch_end`.
    fn on_train_batch_end(&mut self, log: &mut StepLog) -> Result<()> {
        let _ = log;
        Ok(())
    }

    /// Called at the end of each training epoch, between the plain and the monitoring callbacks, so
    /// that what it logs is visible to checkpoint callbacks.
    fn on_train_epoch_end(&mut self, log: &mut StepLog) -> Result<()> {
        let _ = log;
        Ok(())
    }

    /// Called at the end of each validation run, before the callbacks' `on_validation_end`.
    fn on_validation_epoch_end(&mut self, log: &mut StepLog) -> Result<()> {
        let _ = log;
        Ok(())
    }

    /// Rebuilds a module from a checkpoint file: its hyperparameters, then its weights (strictly).
    fn load_from_checkpoint(path: impl AsRef<std::path::Path>, device: &D) -> Result<Self> {
        load::load_from_checkpoint(path.as_ref(), device)
    }
}

//! fulgur: PyTorch Lightning's way of training and checkpointing, for [dfdx], checked at compile time.
//!
//! A module says what a training step, a validation step and the optimizer are; a [`Trainer`](trainer::Trainer) runs
//! Lightning's loops, calls the callbacks in Lightning's order, aggregates the logged metrics and saves
//! checkpoints that hold the whole training state, so that a run resumes bit for bit. What Lightning
//! finds out at run time (a monitored metric that is never logged, a misspelled filename placeholder)
//! is a compile error here.
//!
//! # A first module
//!
//! [`macro@ModuleState`] names the parameters and captures the hyperparameters,
//! [`macro@lightning_module`] writes the [`LightningModule`](module::LightningModule) impl from the
//! annotated methods, [`macro@log`] declares the metrics a step returns and [`macro@checkpoint`] a
//! checkpoint policy, checked against those metrics:
//!
//! ```
//! use fulgur::dfdx::optim::AdamConfig;
//! use fulgur::dfdx::prelude::*;
//! use fulgur::optim::Adam;
//! use fulgur::prelude::*;
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! #[serde(crate = "fulgur::serde")] // fulgur re-exports serde: no dependency of your own needed
//! struct Config {
//!     lr: f64,
//!     seed: u64,
//! }
//!
//! #[derive(ModuleState)]
//! struct LitClassifier<D: Backend> {
//!     net: Built<(Linear<64, 32>, ReLU, Linear<32, 10>), D>,
//!     #[hparams]
//!     config: Config,
//! }
//!
//! #[lightning_module]
//! #[checkpoint(monitor = "val_loss", top_k = 2, filename = "{epoch}-{val_loss:.3f}")]
//! impl<D: Backend> LitClassifier<D> {
//!     fn configure_optimizers(&self) -> Adam<D> {
//!         Adam::new(AdamConfig { lr: self.config.lr, ..Default::default() })
//!     }
//!
//!     #[log(train_loss)]
//!     fn training_step(&mut self, batch: ClassificationBatch<64, 10, D>, grads: Gradients<f32, D>) -> Loss<D> {
//!         let logits = self.net.forward_mut(batch.x.traced(grads));
//!         cross_entropy_with_logits_loss(logits, batch.y)
//!     }
//!
//!     #[log(val_loss)]
//!     fn validation_step(&self, batch: ClassificationBatch<64, 10, D>) -> f32 {
//!         cross_entropy_with_logits_loss(self.net.forward(batch.x), batch.y).as_vec()[0]
//!     }
//! }
//!
//! # fn main() -> fulgur::Result<()> {
//! let dev = Cpu::default();
//! let (train, val) = fulgur::datasets::digits()?.split(0.2, 0)?;
//! let (mut train, mut val) = (train.loader(64, true, &dev)?, val.loader(256, false, &dev)?);
//!
//! let root = std::env::temp_dir().join("fulgur-front-page");
//! # let _ = std::fs::remove_dir_all(&root);
//! let model = LitClassifier::from_hparams(Config { lr: 1e-2, seed: 0 }, &dev)?;
//! let mut trainer = Trainer::builder()
//!     .max_epochs(2)
//!     .default_root_dir(&root)
//!     .enable_progress_bar(false)
//!     .build()?;
//! trainer.fit(model, &mut train, Some(&mut val), None)?;
//!
//! // The best file rebuilds the module alone: hyperparameters, then weights.
//! let best = trainer.checkpoint_callback().and_then(|c| c.best_model_path()).unwrap().to_owned();
//! let restored = LitClassifier::<Cpu>::load_from_checkpoint(&best, &dev)?;
//! # let _ = restored;
//! # Ok(())
//! # }
//! ```
//!
//! Misspell the monitor (`monitor = "val_los"`) and the build fails at the string, with a did-you-mean.
//!
//! # Where to go next
//!
//! - The guide (the repository's `book/`, an mdBook whose code compiles as doctests of this crate):
//!   "Getting started", "The module DSL" and "What the macros generate", "The trainer",
//!   "Checkpointing", "Logging", "Resuming training", "Distributed training", "The checkpoint file",
//!   "Coming from Lightning" and the "Reference" of every rule the code cites.
//! - The examples (`cargo run --release --example 01-quickstart`), one small program per task.
//! - [`prelude`]: what a module definition and a training script import; [`trainer`],
//!   [`callbacks`], [`mod@checkpoint`], [`optim`], [`data`], [`logger`], [`metrics`] and [`strategy`]:
//!   the runtime, one module per subsystem; [`dfdx`]: the deep-learning crate underneath, re-exported.
#![warn(missing_docs)]

/// CBOR values: the type of a checkpoint's `hyper_parameters`, `extra` and callback states.
pub use ciborium;
pub use dfdx;
pub use fulgur_macros::{checkpoint, early_stopping, lightning_module, log, ModuleState};
pub use fulgur_runtime::{
    callbacks, checkpoint, data, device, global_seed, interop, logger, metrics, module, nn, optim,
    seed_everything, seeded_device, strategy, trainer, Backend, Error, Result,
};
/// serde, re-exported so that a crate needs no serde dependency of its own for its hyperparameters:
/// `#[derive(Serialize, Deserialize)]` (both in the [`prelude`]) with `#[serde(crate = "fulgur::serde")]`.
pub use serde;

#[cfg(feature = "datasets")]
pub mod datasets;

/// What a module definition and a training script need.
pub mod prelude {
    pub use fulgur_macros::{checkpoint, early_stopping, lightning_module, log, ModuleState};
    pub use fulgur_runtime::callbacks::{
        Callback, CallbackContext, EarlyStopping, LearningRateMonitor, LoggingInterval,
    };
    pub use fulgur_runtime::checkpoint::Checkpoint;
    pub use fulgur_runtime::data::{
        ClassificationBatch, ClassificationData, DataLoader, TensorBatch, TensorData,
    };
    pub use fulgur_runtime::device::Backend;
    pub use fulgur_runtime::logger::{CsvLogger, TensorBoardLogger};
    pub use fulgur_runtime::metrics::{MetricSpec, Reduce, Stage, StepLog};
    pub use fulgur_runtime::module::{Built, LightningModule, Loss, ModuleState};
    pub use fulgur_runtime::optim::{
        Interval, LrScheduler, ManualOptimization, Optimizer, Optimizers,
    };
    pub use fulgur_runtime::trainer::{CkptPath, Trainer};
    pub use fulgur_runtime::{Error, Result};
    /// For hyperparameter structs; add `#[serde(crate = "fulgur::serde")]` when the crate does not
    /// depend on serde itself.
    pub use serde::{Deserialize, Serialize};
}

/// Paths the macros' generated code names. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use dfdx;
    pub use fulgur_runtime;
}

/// The guide's chapters, so that their Rust code compiles (and runs) as doctests of this crate.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../book/src/introduction.md")]
    mod introduction {}
    #[doc = include_str!("../book/src/getting-started.md")]
    mod getting_started {}
    #[doc = include_str!("../book/src/dsl.md")]
    mod dsl {}
    #[doc = include_str!("../book/src/trainer.md")]
    mod trainer {}
    #[doc = include_str!("../book/src/resuming.md")]
    mod resuming {}
    #[doc = include_str!("../book/src/distributed.md")]
    mod distributed {}
    #[doc = include_str!("../book/src/checkpoint-file.md")]
    mod checkpoint_file {}
    #[doc = include_str!("../book/src/checkpointing.md")]
    mod checkpointing {}
    #[doc = include_str!("../book/src/logging.md")]
    mod logging {}
    #[doc = include_str!("../book/src/callbacks.md")]
    mod callbacks {}
    #[doc = include_str!("../book/src/coming-from-lightning.md")]
    mod coming_from_lightning {}
    #[doc = include_str!("../book/src/reference.md")]
    mod reference {}
    #[doc = include_str!("../book/src/macros-generated.md")]
    mod macros_generated {}
    #[doc = include_str!("../book/src/models.md")]
    mod models {}
    #[doc = include_str!("../book/src/tool.md")]
    mod tool {}
}

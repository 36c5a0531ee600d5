//! fulgur: PyTorch Lightning's way of training and checkpointing, for dfdx, checked at compile time.
//!
//! This facade re-exports the runtime ([`trainer`], [`callbacks`], [`checkpoint`], [`optim`], …), the
//! macros, and `dfdx` itself; `use fulgur::prelude::*;` brings what a module and a training script need.
#![warn(missing_docs)]

/// CBOR values: the type of a checkpoint's `hyper_parameters`, `extra` and callback states.
pub use ciborium;
pub use dfdx;
/// The module DSL (see the guide's "The module DSL" chapter). `#[log]` and `#[checkpoint]` are read by
/// `#[lightning_module]`; used anywhere else they report where they belong.
pub use fulgur_macros::{checkpoint, lightning_module, log, ModuleState};
pub use fulgur_runtime::{
    callbacks, checkpoint, data, device, logger, metrics, module, optim, strategy, trainer,
    Backend, Error, Result,
};

#[cfg(feature = "datasets")]
pub mod datasets;

/// What a module definition and a training script need.
pub mod prelude {
    pub use fulgur_macros::{checkpoint, lightning_module, log, ModuleState};
    pub use fulgur_runtime::callbacks::{Callback, CallbackContext};
    pub use fulgur_runtime::checkpoint::Checkpoint;
    pub use fulgur_runtime::data::{
        ClassificationBatch, ClassificationData, DataLoader, TensorBatch, TensorData,
    };
    pub use fulgur_runtime::device::Backend;
    pub use fulgur_runtime::logger::CsvLogger;
    pub use fulgur_runtime::metrics::{MetricSpec, Reduce, Stage, StepLog};
    pub use fulgur_runtime::module::{Built, LightningModule, Loss, ModuleState};
    pub use fulgur_runtime::optim::{Interval, LrScheduler, Optimizer, Optimizers};
    pub use fulgur_runtime::trainer::{CkptPath, Trainer};
    pub use fulgur_runtime::{Error, Result};
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
    #[doc = include_str!("../book/src/checkpoint-file.md")]
    mod checkpoint_file {}
    #[doc = include_str!("../book/src/checkpointing.md")]
    mod checkpointing {}
    #[doc = include_str!("../book/src/coming-from-lightning.md")]
    mod coming_from_lightning {}
    #[doc = include_str!("../book/src/macros-generated.md")]
    mod macros_generated {}
}

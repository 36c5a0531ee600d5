//! Callbacks: code that runs at fixed points of the loops, in Lightning's order (see
//! [`Trainer`](crate::trainer::Trainer) for the order of hooks in a batch and an epoch).
//!
//! The trait and what a hook sees are in `base`; `set` holds a run's callbacks (the defaults installed,
//! checkpoint callbacks last) and runs their hooks; one file per callback.

mod base;
mod checkpoint;
mod early_stopping;
mod lr_monitor;
mod monitor;
mod output;
mod progress;
mod set;
mod summary;
mod timer;

#[doc(hidden)]
pub use base::AsAny;
pub(crate) use base::CheckpointSink;
pub use base::{Callback, CallbackContext, CheckpointPaths, ParameterInfo};
pub use checkpoint::{
    CheckpointConfig, FilenameTemplate, Mode, ModelCheckpoint, ModelCheckpointBuilder, SaveLast,
    TemplateError,
};
pub use early_stopping::{Decision, EarlyStopping, EarlyStoppingBuilder};
pub use lr_monitor::{LearningRateMonitor, LoggingInterval};
pub use progress::{ProgressBar, ProgressMode};
pub(crate) use set::{CallbackSet, Defaults};
pub(crate) use summary::parameters;
pub use summary::ModelSummary;
pub use timer::Timer;

//! The runtime of fulgur: a Lightning-style [`Trainer`](trainer::Trainer) for dfdx modules, callbacks,
//! a crash-safe checkpoint format, optimizers with savable state, metrics and loggers.
//!
//! Users normally depend on the `fulgur` facade crate, which re-exports this crate and the macros.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
mod error;
pub mod optim;

pub use device::Backend;
pub use error::{Error, Result};
pub(crate) use error::device_err;

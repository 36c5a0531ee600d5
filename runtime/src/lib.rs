//! The runtime of fulgur: a Lightning-style [`Trainer`](trainer::Trainer) for dfdx modules, callbacks,
//! a crash-safe checkpoint format, optimizers with savable state, metrics and loggers.
//!
//! Users normally depend on the `fulgur` facade crate, which re-exports this crate and the macros.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
mod error;
pub mod optim;
mod state;

pub use device::Backend;
pub(crate) use error::device_err;
pub use error::{Error, Result};

pub mod callbacks;
pub mod data;
pub mod logger;
pub mod metrics;
pub mod module;
pub mod nn;
pub mod strategy;
pub mod trainer;

/// Prints a warning on standard error (rank-zero filtering is the caller's concern).
pub(crate) fn warn(message: &str) {
    eprintln!("[fulgur] warning: {message}");
}

/// Prints an informational line on standard error.
pub(crate) fn info(message: &str) {
    eprintln!("[fulgur] {message}");
}

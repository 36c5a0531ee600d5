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

/// `false` in the processes of a data-parallel run other than rank 0, which print no warnings and no
/// information: every rank takes the same decisions and would print the same lines.
static PRINTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether this process prints warnings and information: only rank 0 of a strategy does (set when a
/// trainer is built with the strategy).
pub(crate) fn set_prints(rank_zero: bool) {
    PRINTS.store(rank_zero, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a warning on standard error (on rank 0 only).
pub(crate) fn warn(message: &str) {
    if PRINTS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("[fulgur] warning: {message}");
    }
}

/// Prints an informational line on standard error (on rank 0 only).
pub(crate) fn info(message: &str) {
    if PRINTS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("[fulgur] {message}");
    }
}

//! The runtime of fulgur: a Lightning-style [`Trainer`](trainer::Trainer) for dfdx modules, callbacks,
//! a crash-safe checkpoint format, optimizers with savable state, metrics and loggers.
//!
//! Users normally depend on the `fulgur` facade crate, which re-exports this crate and the macros.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
mod error;
pub mod optim;
mod seed;
mod state;

pub use device::Backend;
pub(crate) use error::device_err;
pub use error::{Error, Result};
pub use seed::{global_seed, seed_everything, seeded_device, SEED_ENV};

pub mod callbacks;
pub mod data;
pub mod interop;
pub mod logger;
pub mod metrics;
pub mod module;
pub mod nn;
pub mod strategy;
pub mod trainer;

/// A byte count as fulgur's messages write it, in powers of 1000: `999 B`, `52.0 KB`, `1.2 MB` (a save's
/// `verbose` line, the `fulgur` tool's tables).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `false` in the processes of a data-parallel run other than rank 0, which print no warnings and no
/// information: every rank takes the same decisions and would print the same lines.
static PRINTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether this process prints warnings and information: only rank 0 of a data-parallel run does (set
/// by `Ddp::new`).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn set_prints(rank_zero: bool) {
    PRINTS.store(rank_zero, std::sync::atomic::Ordering::Relaxed);
}

/// A warning (on rank 0 only): a `tracing` event at `WARN` level with target `fulgur`, which a
/// subscriber the program installs may show, filter or drop. With no subscriber installed (none global
/// and none scoped to this thread, or only `tracing`'s `NoSubscriber`), printed on standard error as
/// `[fulgur] warning: <message>`.
pub(crate) fn warn(message: &str) {
    if PRINTS.load(std::sync::atomic::Ordering::Relaxed) {
        if has_subscriber() {
            tracing::warn!(target: "fulgur", "{message}");
        } else {
            eprintln!("[fulgur] warning: {message}");
        }
    }
}

/// An informational line (on rank 0 only): a `tracing` event at `INFO` level with target `fulgur`;
/// with no subscriber installed, printed on standard error as `[fulgur] <message>`.
pub(crate) fn info(message: &str) {
    if PRINTS.load(std::sync::atomic::Ordering::Relaxed) {
        info_on_this_rank(message);
    }
}

/// An informational line like [`info`], printed by whichever rank calls it: for a caller that decides
/// itself which ranks speak (`EarlyStopping`'s `log_rank_zero_only`, with its `[rank: R]` prefix).
pub(crate) fn info_on_this_rank(message: &str) {
    if has_subscriber() {
        tracing::info!(target: "fulgur", "{message}");
    } else {
        eprintln!("[fulgur] {message}");
    }
}

/// Whether the program installed a `tracing` subscriber that this thread's events reach. Not
/// `tracing::dispatcher::has_been_set`, which stays `true` once any thread has set a scoped default.
fn has_subscriber() -> bool {
    !tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
}

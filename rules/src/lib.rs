//! What fulgur's macros and its runtime must decide identically, so that a compile-time message and a
//! run-time one never disagree. A proc-macro crate cannot depend on the runtime, so both depend on this
//! small crate instead, and each rule has its one owner here:
//!
//! - [`checkpoint`]: the `#[checkpoint]` arguments (key, value, builder method), [`Mode`] and
//!   [`SaveLast`];
//! - [`early_stopping`]: the `#[early_stopping]` arguments, read as the checkpoint's are;
//! - [`metrics`]: the names a `monitor` or a filename placeholder may use;
//! - [`template`]: parsing and checking checkpoint filename templates, and [`number`]: printing their
//!   numbers as Python does;
//! - [`suggest`]: a known name for a misspelled one.

#![warn(missing_docs)]

// `#[macro_use]`: `early_stopping` builds its `ARGUMENTS` with the macro that builds the checkpoint's.
#[macro_use]
pub mod checkpoint;
pub mod early_stopping;
pub mod metrics;
pub mod number;
pub mod suggest;
pub mod template;

pub use checkpoint::{Mode, SaveLast};

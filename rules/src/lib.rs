//! What fulgur's macros and its runtime must decide identically, so that a compile-time message and a
//! run-time one never disagree: parsing and checking checkpoint filename templates ([`template`]) and
//! suggesting a known name for a misspelled one ([`suggest`]). A proc-macro crate cannot depend on the
//! runtime, so both depend on this small crate instead.

pub mod suggest;
pub mod template;

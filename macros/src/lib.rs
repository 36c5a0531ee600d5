//! Procedural macros of fulgur. Use them through the `fulgur` crate.

//! fulgur: PyTorch Lightning's way of training and checkpointing, for dfdx, checked at compile time.
#![warn(missing_docs)]

pub use fulgur_runtime::*;

//! Data-parallel tests: this binary runs itself under `mpirun` (see `support`).

mod support;

mod strategy;
mod training;

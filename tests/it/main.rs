//! The facade's integration tests, one module per subject, in one test binary: dfdx and fulgur are
//! linked once rather than once per file. What the modules share is in `support`.
//!
//! Some tests run this binary again as a child process, naming an ignored test by its path below the
//! crate root (`crash::child_trains_forever`); see `support::child`.

mod support;

mod async_save;
mod callback_metrics;
mod checkpoint_loading;
mod ckpt_path;
mod corruption;
#[cfg(unix)]
mod crash;
mod disk_full;
mod dropout;
mod early_stopping;
mod in_place_load;
mod macro_early_stopping;
mod macro_module;
mod manual;
mod model_checkpoint;
mod progress;
mod resume;
mod stopping;
mod trainer_loop;
mod trainer_options;

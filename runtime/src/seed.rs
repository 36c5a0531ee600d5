//! Lightning's `seed_everything`: one seed, set once, for the data order, the dropout masks and the
//! initial weights.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::device::Backend;
use crate::Result;

/// The environment variable that carries the seed to child processes, under Lightning's name.
pub const SEED_ENV: &str = "PL_GLOBAL_SEED";

static SEED_SET: AtomicBool = AtomicBool::new(false);
static SEED: AtomicU64 = AtomicU64::new(0);

/// Sets the seed of everything that draws random numbers in this process (Lightning's
/// `seed_everything`) and returns it: trainers built afterwards without their own
/// [`seed`](crate::trainer::TrainerBuilder::seed) take it for the data order and the dropout masks, and
/// [`seeded_device`] builds a device whose generator starts from it, for the initial weights. The seed
/// also goes into the environment variable `PL_GLOBAL_SEED`, so that child processes started afterwards
/// (the other ranks of a data-parallel run) use it too. Says `Seed set to <seed>`, as Lightning does.
///
/// ```
/// use fulgur_runtime::{seed_everything, seeded_device};
/// use dfdx::prelude::*;
///
/// seed_everything(42);
/// let a = seeded_device::<Cpu>()?.build_module::<Linear<2, 2>, f32>();
/// let b = seeded_device::<Cpu>()?.build_module::<Linear<2, 2>, f32>();
/// assert_eq!(a.weight.as_vec(), b.weight.as_vec()); // the same seed, the same initial weights
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
pub fn seed_everything(seed: u64) -> u64 {
    SEED.store(seed, Ordering::SeqCst);
    SEED_SET.store(true, Ordering::SeqCst);
    std::env::set_var(SEED_ENV, seed.to_string());
    crate::info(&format!("Seed set to {seed}"));
    seed
}

/// The seed [`seed_everything`] set in this process or, failing that, the one a parent process passed
/// in `PL_GLOBAL_SEED`; `None` when neither is set (a value that is not a number is ignored, with a
/// warning).
pub fn global_seed() -> Option<u64> {
    if SEED_SET.load(Ordering::SeqCst) {
        return Some(SEED.load(Ordering::SeqCst));
    }
    let value = std::env::var(SEED_ENV).ok()?;
    match value.trim().parse() {
        Ok(seed) => Some(seed),
        Err(_) => {
            crate::warn(&format!(
                "`{SEED_ENV}` is set to `{value}`, which is not a seed (a number from 0 to {}): it is \
                 ignored",
                u64::MAX
            ));
            None
        }
    }
}

/// A device whose random generator starts from the [`global_seed`] (0 when none is set), for
/// reproducible weight initialisation: after `seed_everything(s)`, modules built on
/// `seeded_device::<D>()?` start with the same weights in every run with seed `s`.
pub fn seeded_device<D: Backend>() -> Result<D> {
    D::try_seeded(global_seed().unwrap_or(0)).map_err(crate::device_err)
}

/// The seed a trainer uses for the data order and the dropout masks: its own when it was given one,
/// else the global seed, else 0.
pub(crate) fn trainer_seed(explicit: Option<u64>) -> u64 {
    explicit.or_else(global_seed).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trainers_own_seed_wins_over_the_global_one() {
        assert_eq!(trainer_seed(Some(7)), 7);
    }
}

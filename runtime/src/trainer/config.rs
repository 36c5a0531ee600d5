use std::path::PathBuf;
use std::time::Duration;

use super::ValCheckInterval;
use crate::{Error, Result};

/// How many batches of a loader a loop uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A fraction of the loader's batches, in `[0, 1]`.
    Fraction(f64),
    /// At most this many batches.
    Batches(u64),
}

impl From<f64> for Limit {
    fn from(f: f64) -> Self {
        Limit::Fraction(f)
    }
}

impl From<u64> for Limit {
    fn from(n: u64) -> Self {
        Limit::Batches(n)
    }
}

impl From<f64> for ValCheckInterval {
    fn from(f: f64) -> Self {
        ValCheckInterval::Fraction(f)
    }
}

impl From<u64> for ValCheckInterval {
    fn from(n: u64) -> Self {
        ValCheckInterval::Batches(n)
    }
}

/// The trainer's settings; see [`TrainerBuilder`](super::TrainerBuilder) for each one's meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    pub(crate) max_epochs: Option<u64>,
    pub(crate) max_steps: Option<u64>,
    pub(crate) min_epochs: Option<u64>,
    pub(crate) min_steps: Option<u64>,
    pub(crate) limit_train_batches: Limit,
    pub(crate) limit_val_batches: Limit,
    pub(crate) limit_test_batches: Limit,
    pub(crate) val_check_interval: ValCheckInterval,
    pub(crate) check_val_every_n_epoch: Option<u64>,
    pub(crate) num_sanity_val_steps: u64,
    pub(crate) accumulate_grad_batches: u64,
    pub(crate) gradient_clip_val: Option<f64>,
    pub(crate) default_root_dir: PathBuf,
    pub(crate) seed: u64,
    pub(crate) enable_checkpointing: bool,
    pub(crate) log_every_n_steps: u64,
    pub(crate) keep_training_on_checkpoint_error: bool,
    pub(crate) async_checkpointing: bool,
    pub(crate) enable_progress_bar: bool,
    pub(crate) enable_model_summary: bool,
    pub(crate) max_time: Option<Duration>,
    pub(crate) fast_dev_run: u64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            max_epochs: None,
            max_steps: None,
            min_epochs: None,
            min_steps: None,
            limit_train_batches: Limit::Fraction(1.0),
            limit_val_batches: Limit::Fraction(1.0),
            limit_test_batches: Limit::Fraction(1.0),
            val_check_interval: ValCheckInterval::Fraction(1.0),
            check_val_every_n_epoch: Some(1),
            num_sanity_val_steps: 2,
            accumulate_grad_batches: 1,
            gradient_clip_val: None,
            default_root_dir: PathBuf::from("."),
            seed: 0,
            enable_checkpointing: true,
            log_every_n_steps: 50,
            keep_training_on_checkpoint_error: false,
            async_checkpointing: false,
            enable_progress_bar: true,
            enable_model_summary: true,
            max_time: None,
            fast_dev_run: 0,
        }
    }
}

impl TrainerConfig {
    /// Lightning's `fast_dev_run = n` (`_init_debugging_flags`): n training, validation, test and predict
    /// batches, one epoch of at most n steps, validation at its end, no sanity check. Applied after
    /// [`validate`](Self::validate), so that the user's own limits are still checked, and overriding
    /// them as Lightning does.
    pub(crate) fn apply_fast_dev_run(&mut self) {
        let n = self.fast_dev_run;
        if n == 0 {
            return;
        }
        self.limit_train_batches = Limit::Batches(n);
        self.limit_val_batches = Limit::Batches(n);
        self.limit_test_batches = Limit::Batches(n);
        self.max_steps = Some(n);
        self.max_epochs = Some(1);
        self.num_sanity_val_steps = 0;
        self.val_check_interval = ValCheckInterval::Fraction(1.0);
        self.check_val_every_n_epoch = Some(1);
    }

    /// Lightning's rule: with neither limit set, train for 1000 epochs.
    pub(crate) fn effective_max_epochs(&self) -> Option<u64> {
        match (self.max_epochs, self.max_steps) {
            (None, None) => Some(1000),
            (e, _) => e,
        }
    }

    /// Every setting error, one per line.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        for (name, limit) in [
            ("limit_train_batches", self.limit_train_batches),
            ("limit_val_batches", self.limit_val_batches),
            ("limit_test_batches", self.limit_test_batches),
        ] {
            if let Limit::Fraction(f) = limit {
                if !(0.0..=1.0).contains(&f) {
                    errors.push((
                        name,
                        format!(
                        "`{name}` must be a fraction in [0.0, 1.0] or a number of batches, got {f}"
                    ),
                    ));
                }
            }
        }
        match self.val_check_interval {
            ValCheckInterval::Fraction(f) if !(f > 0.0 && f <= 1.0) => errors.push(("val_check_interval", format!(
                "`val_check_interval` should be a fraction of the training epoch in (0.0, 1.0] or a number of batches, got {f}"
            ))),
            ValCheckInterval::Batches(0) => {
                errors.push(("val_check_interval", "`val_check_interval` must be at least 1 batch, got 0".to_string()))
            }
            _ => {}
        }
        if self.check_val_every_n_epoch == Some(0) {
            errors.push(("check_val_every_n_epoch", "`check_val_every_n_epoch` must be at least 1 (or `None` to count batches across epochs), got 0".into()));
        }
        if self.accumulate_grad_batches == 0 {
            errors.push((
                "accumulate_grad_batches",
                "`accumulate_grad_batches` must be at least 1, got 0".into(),
            ));
        }
        if let Some(v) = self.gradient_clip_val {
            if !(v.is_finite() && v >= 0.0) {
                errors.push((
                    "gradient_clip_val",
                    format!("`gradient_clip_val` must be a finite number >= 0, got {v}"),
                ));
            }
        }
        if self.log_every_n_steps == 0 {
            errors.push((
                "log_every_n_steps",
                "`log_every_n_steps` must be at least 1, got 0".into(),
            ));
        }
        if self.max_steps == Some(0) {
            errors.push((
                "max_steps",
                "`max_steps` must be at least 1 (leave it unset for no limit), got 0".into(),
            ));
        }
        for (name, min, max_name, max) in [
            ("min_epochs", self.min_epochs, "max_epochs", self.max_epochs),
            ("min_steps", self.min_steps, "max_steps", self.max_steps),
        ] {
            if let (Some(min), Some(max)) = (min, max) {
                if min > max {
                    errors.push((
                        name,
                        format!("`{name}` ({min}) must not exceed `{max_name}` ({max})"),
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::settings("invalid `Trainer` settings", errors))
        }
    }
}

/// The number of batches a loop uses of a loader with `available` batches; `what` names the setting.
pub(crate) fn limited(available: u64, limit: Limit, what: &'static str) -> Result<u64> {
    match limit {
        Limit::Batches(n) => Ok(n.min(available)),
        Limit::Fraction(f) => {
            let n = (available as f64 * f) as u64;
            if f > 0.0 && n == 0 && available > 0 {
                return Err(Error::config(what, format!(
                    "you requested to use {f} of the batches with `{what}`, but {f} * {available} < 1: \
                     increase the fraction or pass a number of batches"
                )));
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrong_setting_is_named_in_the_error() {
        let cfg = TrainerConfig {
            max_steps: Some(0),
            accumulate_grad_batches: 0,
            limit_val_batches: Limit::Fraction(1.5),
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err();
        let Error::Config { settings, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            settings,
            &["limit_val_batches", "accumulate_grad_batches", "max_steps"]
        );
        assert!(
            message.contains("`max_steps` must be at least 1"),
            "{message}"
        );
        assert!(TrainerConfig::default().validate().is_ok());
        let Err(Error::Config { settings, .. }) =
            limited(10, Limit::Fraction(0.01), "limit_train_batches")
        else {
            panic!("a fraction of 10 batches below one batch is refused")
        };
        assert_eq!(settings, ["limit_train_batches"]);
    }

    #[test]
    fn fast_dev_run_overrides_the_loop_settings_as_lightning_does() {
        let mut cfg = TrainerConfig {
            max_epochs: Some(50),
            limit_val_batches: Limit::Fraction(0.5),
            num_sanity_val_steps: 2,
            val_check_interval: ValCheckInterval::Batches(3),
            check_val_every_n_epoch: None,
            ..Default::default()
        };
        let before = cfg.clone();
        cfg.apply_fast_dev_run();
        assert_eq!(cfg, before, "0 is off");
        cfg.fast_dev_run = 3;
        cfg.apply_fast_dev_run();
        assert_eq!(
            (
                cfg.limit_train_batches,
                cfg.limit_val_batches,
                cfg.limit_test_batches
            ),
            (Limit::Batches(3), Limit::Batches(3), Limit::Batches(3))
        );
        assert_eq!((cfg.max_epochs, cfg.max_steps), (Some(1), Some(3)));
        assert_eq!(cfg.num_sanity_val_steps, 0);
        assert_eq!(cfg.val_check_interval, ValCheckInterval::Fraction(1.0));
        assert_eq!(cfg.check_val_every_n_epoch, Some(1));
    }
}

//! Lightning's `LearningRateMonitor`: logs every optimizer's learning rate (and, if asked, momentum and
//! weight decay) per parameter group, under Lightning's names (`lr-Adam`, `lr-Adam/pg2`, `lr-SGD-1`).

use std::collections::BTreeMap;

use super::{Callback, CallbackContext};
use crate::metrics::{intern, MetricKind, MetricSpec};
use crate::optim::{Interval, OptimizerFacts};
use crate::state::TrainerState;
use crate::{Error, Result};

/// When [`LearningRateMonitor`] logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoggingInterval {
    /// Lightning's `None`: each optimizer at its scheduler's interval (before the batch for a
    /// step-interval scheduler, at the start of the epoch for an epoch-interval one); an optimizer
    /// without a scheduler at both.
    #[default]
    Scheduler,
    /// Before every training batch, on the trainer's `log_every_n_steps` cadence.
    Step,
    /// At the start of every training epoch.
    Epoch,
}

/// Logs the learning rate of every optimizer and parameter group as training goes (Lightning's
/// `LearningRateMonitor`), through the trainer's logger and into `callback_metrics`, so that a
/// checkpoint filename or a callback can use them too.
///
/// Names follow Lightning: `lr-Adam` for an optimizer with one parameter group; `lr-Adam/pg1`,
/// `lr-Adam/pg2`, … with [parameter groups](crate::optim::ParamGroup) (the first is the parameters no
/// group matches); a second optimizer of the same kind is `lr-Adam-1`. With
/// [`log_momentum`](Self::log_momentum), `<name>-momentum` holds SGD's momentum or Adam's `beta1`
/// (0 for an optimizer without either, with a warning); with
/// [`log_weight_decay`](Self::log_weight_decay), `<name>-weight_decay`.
///
/// `fit` fails at `on_train_start` without a logger, as Lightning's does.
///
/// ```
/// use fulgur_runtime::callbacks::{LearningRateMonitor, LoggingInterval};
///
/// let monitor = LearningRateMonitor::new()
///     .logging_interval(LoggingInterval::Step)
///     .log_momentum(true);
/// // Added to a run with `Trainer::builder().callback(monitor)`.
/// # let _ = monitor;
/// ```
#[derive(Debug, Clone, Default)]
pub struct LearningRateMonitor {
    interval: LoggingInterval,
    log_momentum: bool,
    log_weight_decay: bool,
    warned_momentum: bool,
}

impl LearningRateMonitor {
    /// Logs at each scheduler's interval, learning rates only.
    pub fn new() -> Self {
        Self::default()
    }

    /// When to log (Lightning's `logging_interval`).
    pub fn logging_interval(mut self, interval: LoggingInterval) -> Self {
        self.interval = interval;
        self
    }

    /// Also log the momentum (SGD) or `beta1` (Adam) of each group.
    pub fn log_momentum(mut self, on: bool) -> Self {
        self.log_momentum = on;
        self
    }

    /// Also log the weight decay of each group.
    pub fn log_weight_decay(mut self, on: bool) -> Self {
        self.log_weight_decay = on;
        self
    }

    /// Logs the optimizers that are due at `at` (`None`: every one).
    fn log_due(&self, ctx: &CallbackContext<'_>, at: Option<Interval>) -> Result<()> {
        for (facts, names) in ctx.state().optimizers.iter().zip(names(ctx.state())) {
            let due = match (at, facts.scheduler) {
                (None, _) | (_, None) => true,
                (Some(at), Some(s)) => at == s,
            };
            if !due {
                continue;
            }
            for (group, name) in facts.groups.iter().zip(names) {
                ctx.log(&name, group.lr)?;
                if self.log_momentum {
                    let m = group.betas.map(|b| b.0).or(group.momentum).unwrap_or(0.0);
                    ctx.log(&format!("{name}-momentum"), m)?;
                }
                if self.log_weight_decay {
                    ctx.log(&format!("{name}-weight_decay"), group.weight_decay)?;
                }
            }
        }
        Ok(())
    }
}

/// Lightning's names of every optimizer's groups, in order: `lr-<Kind>` with `-<n>` for the n-th
/// repeat of a kind, `/pg<i>` per group when there are several.
fn names(s: &TrainerState) -> Vec<Vec<String>> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    s.optimizers
        .iter()
        .map(|o: &OptimizerFacts| {
            let count = seen.entry(&o.name).or_default();
            let base = match *count {
                0 => format!("lr-{}", o.name),
                n => format!("lr-{}-{n}", o.name),
            };
            *count += 1;
            match o.groups.len() {
                1 => vec![base],
                n => (1..=n).map(|i| format!("{base}/pg{i}")).collect(),
            }
        })
        .collect()
}

impl Callback for LearningRateMonitor {
    fn metrics(&self, ctx: &CallbackContext<'_>) -> Result<Vec<MetricSpec>> {
        let mut specs = Vec::new();
        let spec = |name: String| MetricSpec::train(intern(&name)).kind(MetricKind::F64);
        for name in names(ctx.state()).into_iter().flatten() {
            if self.log_momentum {
                specs.push(spec(format!("{name}-momentum")));
            }
            if self.log_weight_decay {
                specs.push(spec(format!("{name}-weight_decay")));
            }
            specs.push(spec(name));
        }
        Ok(specs)
    }

    fn on_train_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        if s.log_dir.is_none() {
            return Err(Error::config(
                "logger",
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger: remove \
                 `no_logger()` or the callback",
            ));
        }
        let without = s.optimizers.iter().any(|o| {
            o.groups
                .iter()
                .any(|g| g.momentum.is_none() && g.betas.is_none())
        });
        if self.log_momentum && without && !self.warned_momentum && ctx.strategy().is_global_zero()
        {
            self.warned_momentum = true;
            crate::warn(
                "You have set log_momentum=True, but some optimizers do not have momentum. This will \
                 log a value 0 for the momentum.",
            );
        }
        Ok(())
    }

    fn on_train_batch_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        // Lightning's `should_update_logs`: on the `log_every_n_steps` cadence, or when stopping.
        let due = (s.global_step + 1) % s.log_every_n_steps.max(1) == 0 || s.should_stop();
        match self.interval {
            LoggingInterval::Epoch => Ok(()),
            _ if !due => Ok(()),
            LoggingInterval::Step => self.log_due(ctx, None),
            LoggingInterval::Scheduler => self.log_due(ctx, Some(Interval::Step)),
        }
    }

    fn on_train_epoch_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        match self.interval {
            LoggingInterval::Step => Ok(()),
            LoggingInterval::Epoch => self.log_due(ctx, None),
            LoggingInterval::Scheduler => self.log_due(ctx, Some(Interval::Epoch)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::GroupFacts;

    fn optimizer(name: &str, groups: usize) -> OptimizerFacts {
        let group = GroupFacts {
            lr: 0.1,
            momentum: None,
            betas: None,
            weight_decay: 0.0,
        };
        OptimizerFacts {
            name: name.into(),
            groups: vec![group; groups],
            scheduler: None,
        }
    }

    #[test]
    fn names_follow_lightning() {
        let s = TrainerState {
            optimizers: vec![
                optimizer("Adam", 1),
                optimizer("SGD", 2),
                optimizer("Adam", 3),
                optimizer("Adam", 1),
            ],
            ..Default::default()
        };
        assert_eq!(
            names(&s),
            [
                vec!["lr-Adam"],
                vec!["lr-SGD/pg1", "lr-SGD/pg2"],
                vec!["lr-Adam-1/pg1", "lr-Adam-1/pg2", "lr-Adam-1/pg3"],
                vec!["lr-Adam-2"],
            ]
        );
    }
}

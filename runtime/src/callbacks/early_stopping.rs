//! `EarlyStopping`: Lightning's callback that stops training when a monitored metric stops improving.
//!
//! The decision of one check ([`EarlyStopping::evaluate`]) is a pure function of the callback's state and
//! the metric's value; the hooks decide when a check runs, agree on the decision across processes and
//! ask the trainer to stop.

use ciborium::Value;

use super::base::{Callback, CallbackContext};
use super::monitor::{python_str_repr, KnownMetrics};
use crate::metrics::MetricValue;
use crate::state::{TrainerFn, TrainerState, ValCheckInterval};
use crate::strategy::ReduceOp;
use crate::{Error, Result};
use fulgur_rules::checkpoint::Mode;
use fulgur_rules::number::{format as py_format, Number};
use fulgur_rules::template::Spec;

#[cfg(test)]
mod tests;

/// Stops training when a monitored metric has stopped improving: Lightning's `EarlyStopping`.
///
/// A check runs once per validation (by default at the end of each training epoch when validation
/// runs once per epoch, else at the end of each validation). A value better than the best so far by
/// more than `min_delta` resets the count of checks without improvement; when that count reaches
/// `patience`, the callback asks the trainer to stop (which it does once `min_epochs`/`min_steps` are
/// reached). A non-finite value, a value past `stopping_threshold` or worse than
/// `divergence_threshold` stops at once.
///
/// ```
/// use fulgur_runtime::callbacks::{EarlyStopping, Mode};
///
/// let early = EarlyStopping::builder()
///     .monitor("val_acc")
///     .mode(Mode::Max)
///     .patience(5)
///     .min_delta(0.001)
///     .build()?;
/// assert_eq!(early.state_key_string(), "EarlyStopping{'monitor': 'val_acc', 'mode': 'max'}");
/// assert_eq!(early.best_score(), f64::NEG_INFINITY);
/// // Added to a run with `Trainer::builder().callback(early)`.
/// # Ok::<(), fulgur_runtime::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: String,
    /// Signed as Lightning stores it: negative in min mode.
    min_delta: f64,
    patience: u64,
    verbose: bool,
    mode: Mode,
    strict: bool,
    check_finite: bool,
    stopping_threshold: Option<f64>,
    divergence_threshold: Option<f64>,
    /// As given; `None`: decided in `setup` (see [`check_on_train_epoch_end`](Self::check_on_train_epoch_end)).
    check_on_train_epoch_end: Option<bool>,
    /// The decision of the last `setup`.
    on_train_epoch_end: bool,
    log_rank_zero_only: bool,
    state_key: Option<String>,
    wait_count: u64,
    stopped_epoch: u64,
    best_score: f64,
    /// Whether this `fit` warned that the metric is missing (Python shows a warning once per place).
    warned_missing: bool,
}

/// Builds an [`EarlyStopping`] with Lightning's defaults; [`build`](Self::build) checks the settings and
/// reports every problem at once.
#[derive(Debug, Clone)]
pub struct EarlyStoppingBuilder {
    monitor: Option<String>,
    min_delta: f64,
    patience: u64,
    verbose: bool,
    mode: Mode,
    strict: bool,
    check_finite: bool,
    stopping_threshold: Option<f64>,
    divergence_threshold: Option<f64>,
    check_on_train_epoch_end: Option<bool>,
    log_rank_zero_only: bool,
    state_key: Option<String>,
}

impl Default for EarlyStoppingBuilder {
    fn default() -> Self {
        Self {
            monitor: None,
            min_delta: 0.0,
            patience: 3,
            verbose: false,
            mode: Mode::Min,
            strict: true,
            check_finite: true,
            stopping_threshold: None,
            divergence_threshold: None,
            check_on_train_epoch_end: None,
            log_rank_zero_only: false,
            state_key: None,
        }
    }
}

impl EarlyStoppingBuilder {
    /// The metric to watch (required): one the module or a callback logs during `fit`.
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = Some(monitor.into());
        self
    }

    /// The smallest change that counts as an improvement (default `0.0`): a change of at most
    /// `min_delta` counts as none. Must be finite.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta;
        self
    }

    /// How many checks without improvement stop training (default 3). It counts checks, not epochs:
    /// with `check_val_every_n_epoch = 10` and `patience = 3`, at least 40 epochs run.
    pub fn patience(mut self, patience: u64) -> Self {
        self.patience = patience;
        self
    }

    /// Print a line at each improvement and at the stop (default `false`).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Whether a lower ([`Mode::Min`], the default) or a higher ([`Mode::Max`]) value is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether a monitor that names no metric fails `fit` (default `true`), or is skipped with a
    /// warning.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Stop as soon as the metric is NaN or infinite (default `true`).
    pub fn check_finite(mut self, check_finite: bool) -> Self {
        self.check_finite = check_finite;
        self
    }

    /// Stop as soon as the metric is better than this value.
    pub fn stopping_threshold(mut self, threshold: f64) -> Self {
        self.stopping_threshold = Some(threshold);
        self
    }

    /// Stop as soon as the metric is worse than this value.
    pub fn divergence_threshold(mut self, threshold: f64) -> Self {
        self.divergence_threshold = Some(threshold);
        self
    }

    /// Check at the end of the training epoch (`true`) or at the end of validation (`false`). Default:
    /// at the end of the training epoch when validation runs once at the end of every epoch
    /// (`val_check_interval` 1.0 and `check_val_every_n_epoch` 1), else after validation.
    pub fn check_on_train_epoch_end(mut self, on_train_epoch_end: bool) -> Self {
        self.check_on_train_epoch_end = Some(on_train_epoch_end);
        self
    }

    /// With several processes, print the lines of rank 0 only (default `false`: each rank's, prefixed
    /// with `[rank: R]`).
    pub fn log_rank_zero_only(mut self, rank_zero_only: bool) -> Self {
        self.log_rank_zero_only = rank_zero_only;
        self
    }

    /// The key of its state in checkpoints, instead of Lightning's
    /// `EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}`.
    pub fn state_key(mut self, key: impl Into<String>) -> Self {
        self.state_key = Some(key.into());
        self
    }

    /// Checks the settings and builds the callback.
    pub fn build(self) -> Result<EarlyStopping> {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        match self.monitor.as_deref() {
            None => problems.push((
                "monitor",
                "`EarlyStopping` needs a `monitor`: the metric to watch, such as `val_loss`".into(),
            )),
            Some(m) if m.trim().is_empty() => problems.push((
                "monitor",
                format!("`monitor` must name a metric, got {}", python_str_repr(m)),
            )),
            Some(_) => {}
        }
        if !self.min_delta.is_finite() {
            problems.push((
                "min_delta",
                format!(
                    "`min_delta` must be a finite number, got {}",
                    python_float(self.min_delta)
                ),
            ));
        }
        for (name, threshold) in [
            ("stopping_threshold", self.stopping_threshold),
            ("divergence_threshold", self.divergence_threshold),
        ] {
            if threshold.is_some_and(f64::is_nan) {
                problems.push((name, format!("`{name}` must be a number, got nan")));
            }
        }
        if self.state_key.as_deref().is_some_and(str::is_empty) {
            problems.push((
                "state_key",
                "`state_key` must not be empty: it names the callback's state in checkpoints"
                    .into(),
            ));
        }
        let monitor = match self.monitor {
            Some(m) if problems.is_empty() => m,
            _ => {
                return Err(Error::settings(
                    "invalid `EarlyStopping` settings",
                    problems,
                ))
            }
        };
        let min_delta = match self.mode {
            Mode::Max => self.min_delta,
            Mode::Min => -self.min_delta,
        };
        Ok(EarlyStopping {
            monitor,
            min_delta,
            patience: self.patience,
            verbose: self.verbose,
            mode: self.mode,
            strict: self.strict,
            check_finite: self.check_finite,
            stopping_threshold: self.stopping_threshold,
            divergence_threshold: self.divergence_threshold,
            check_on_train_epoch_end: self.check_on_train_epoch_end,
            on_train_epoch_end: self.check_on_train_epoch_end.unwrap_or(true),
            log_rank_zero_only: self.log_rank_zero_only,
            state_key: self.state_key,
            wait_count: 0,
            stopped_epoch: 0,
            best_score: self.mode.worst(),
            warned_missing: false,
        })
    }
}

/// The outcome of one check: whether it asks to stop, and Lightning's line about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether training should stop.
    pub should_stop: bool,
    /// What happened, as Lightning words it (`None` when a check without improvement leaves patience).
    pub reason: Option<String>,
}

impl EarlyStopping {
    /// A builder with Lightning's defaults.
    pub fn builder() -> EarlyStoppingBuilder {
        EarlyStoppingBuilder::default()
    }

    /// Watches `monitor` with Lightning's defaults (min mode, patience 3).
    pub fn new(monitor: impl Into<String>) -> Result<EarlyStopping> {
        Self::builder().monitor(monitor).build()
    }

    /// The monitored metric.
    pub fn monitor(&self) -> &str {
        &self.monitor
    }

    /// Which direction is better.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The checks without improvement that stop training (restored from a checkpoint on resume).
    pub fn patience(&self) -> u64 {
        self.patience
    }

    /// `min_delta` as Lightning stores it: negated in min mode, so that `current - min_delta` is
    /// compared with the best score in both modes.
    pub fn min_delta(&self) -> f64 {
        self.min_delta
    }

    /// Checks without improvement since the last one.
    pub fn wait_count(&self) -> u64 {
        self.wait_count
    }

    /// The epoch at which the callback asked to stop; 0 while it has not.
    pub fn stopped_epoch(&self) -> u64 {
        self.stopped_epoch
    }

    /// The best value so far: `+inf` (min) or `-inf` (max) before the first check.
    pub fn best_score(&self) -> f64 {
        self.best_score
    }

    /// Whether a missing monitor fails `fit`.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Whether it prints its decisions.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Where the check runs: at the end of the training epoch (`true`) or of validation (`false`); the
    /// setting given, else the decision of the last `fit`'s setup (`true` before any).
    pub fn check_on_train_epoch_end(&self) -> bool {
        self.on_train_epoch_end
    }

    /// The key of its state in checkpoints (the [`Callback::state_key`]).
    pub fn state_key_string(&self) -> String {
        match &self.state_key {
            Some(k) => k.clone(),
            None => format!(
                "EarlyStopping{{'monitor': {}, 'mode': '{}'}}",
                python_str_repr(&self.monitor),
                self.mode.as_str()
            ),
        }
    }

    /// One check with the monitored metric at `current`, in Lightning's order: non-finite (with
    /// `check_finite`), `stopping_threshold`, `divergence_threshold`, improvement, patience. Updates
    /// the best score and the count of checks without improvement.
    pub fn evaluate(&mut self, current: MetricValue) -> Decision {
        let value = current.as_f64();
        let (m, better) = (&self.monitor, |a: f64, b: f64| self.mode.better(a, b));
        let order = match self.mode {
            Mode::Min => "<",
            Mode::Max => ">",
        };
        let stop = |reason: String| Decision {
            should_stop: true,
            reason: Some(reason),
        };
        if self.check_finite && !value.is_finite() {
            return stop(format!(
                "Monitored metric {m} = {} is not finite. Previous best value was {}. Signaling Trainer to stop.",
                shown(current),
                fixed3(self.best_score)
            ));
        }
        if let Some(t) = self.stopping_threshold.filter(|&t| better(value, t)) {
            return stop(format!(
                "Stopping threshold reached: {m} = {} {order} {}. Signaling Trainer to stop.",
                shown(current),
                python_float(t)
            ));
        }
        if let Some(t) = self.divergence_threshold.filter(|&t| better(-value, -t)) {
            return stop(format!(
                "Divergence threshold reached: {m} = {} {order} {}. Signaling Trainer to stop.",
                shown(current),
                python_float(t)
            ));
        }
        if better(value - self.min_delta, self.best_score) {
            let reason = if self.best_score.is_finite() {
                format!(
                    "Metric {m} improved by {} >= min_delta = {}. New best score: {}",
                    fixed3((self.best_score - value).abs()),
                    python_float(self.min_delta.abs()),
                    fixed3(value)
                )
            } else {
                format!("Metric {m} improved. New best score: {}", fixed3(value))
            };
            self.best_score = value;
            self.wait_count = 0;
            return Decision {
                should_stop: false,
                reason: Some(reason),
            };
        }
        self.wait_count += 1;
        if self.wait_count >= self.patience {
            return stop(format!(
                "Monitored metric {m} did not improve in the last {} records. Best score: {}. Signaling Trainer to stop.",
                self.wait_count,
                fixed3(self.best_score)
            ));
        }
        Decision {
            should_stop: false,
            reason: None,
        }
    }

    /// Lightning's `_should_skip_check`, plus `fast_dev_run`, under which Lightning's check returns
    /// before it looks at the metric.
    fn should_skip(&self, s: &TrainerState) -> bool {
        s.fn_ != TrainerFn::Fitting || s.sanity_checking || s.fast_dev_run
    }

    /// Lightning's `_run_early_stopping_check`.
    fn run_check(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        let Some(&current) = s.callback_metrics.get(&self.monitor) else {
            let available: Vec<&str> = s.callback_metrics.keys().map(String::as_str).collect();
            let message = format!(
                "Early stopping conditioned on metric `{}` which is not available. Pass in or modify your \
                 `EarlyStopping` callback to use any of the following: `{}`",
                self.monitor,
                available.join("`, `")
            );
            if self.strict {
                return Err(Error::config("monitor", message));
            }
            if self.verbose && !std::mem::replace(&mut self.warned_missing, true) {
                crate::warn(&message);
            }
            return Ok(());
        };
        let decision = self.evaluate(current);
        // Every process stops if any decides to.
        let mut flag = [f64::from(u8::from(decision.should_stop))];
        ctx.strategy().all_reduce(&mut flag, ReduceOp::Max)?;
        let should_stop = flag[0] > 0.0;
        if should_stop {
            self.stopped_epoch = s.epoch;
            ctx.request_stop();
        }
        if let (Some(reason), true) = (&decision.reason, self.verbose) {
            let strategy = ctx.strategy();
            if let Some(line) = log_line(
                reason,
                strategy.rank(),
                strategy.world_size(),
                self.log_rank_zero_only,
            ) {
                // `log_line` decided which ranks speak; rank 0's gate for the others does not apply.
                crate::info_on_this_rank(&line);
            }
        }
        Ok(())
    }
}

/// Lightning's `_log_info`: the line to print on `rank` of `world_size` processes, if any.
fn log_line(message: &str, rank: usize, world_size: usize, rank_zero_only: bool) -> Option<String> {
    if world_size <= 1 {
        return Some(message.to_string());
    }
    (!rank_zero_only || rank == 0).then(|| format!("[rank: {rank}] {message}"))
}

/// The value as Python prints it, in its own type (`0.5`, `nan`, `inf`, `3`).
fn shown(v: MetricValue) -> String {
    let n = match v {
        MetricValue::F32(v) => Number::F32(v),
        MetricValue::F64(v) => Number::F64(v),
        MetricValue::Int(v) => Number::Int(v),
        MetricValue::Bool(v) => Number::Bool(v),
    };
    python(n, None)
}

/// Python's `str(float)`.
fn python_float(v: f64) -> String {
    python(Number::F64(v), None)
}

/// Python's `f"{v:.3f}"`.
fn fixed3(v: f64) -> String {
    python(Number::F64(v), Some(".3f"))
}

fn python(n: Number, spec: Option<&str>) -> String {
    Spec::parse("value", spec)
        .and_then(|spec| py_format(n, &spec))
        .unwrap_or_else(|_| format!("{n:?}"))
}

/// The keys of the persisted state (Lightning's `state_dict`).
const KEYS: [&str; 4] = ["wait_count", "stopped_epoch", "best_score", "patience"];

impl Callback for EarlyStopping {
    /// Lightning's monitoring callback: its epoch-end check runs after the module's
    /// `on_train_epoch_end`, so a metric the module logs there counts at this epoch.
    fn is_monitoring(&self) -> bool {
        true
    }

    fn state_key(&self) -> String {
        self.state_key_string()
    }

    fn setup(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        self.warned_missing = false;
        self.on_train_epoch_end = self.check_on_train_epoch_end.unwrap_or_else(|| {
            // Validation several times per epoch, or not every epoch: check after validation.
            s.val_check_interval == Some(ValCheckInterval::Fraction(1.0))
                && s.check_val_every_n_epoch == Some(1)
        });
        if s.fn_ == TrainerFn::Fitting {
            let m = &self.monitor;
            let what = format!("`EarlyStopping(monitor = \"{m}\")`: `{m}`");
            if let Err(e) = KnownMetrics::of(s).check("monitor", what, &self.monitor) {
                if self.strict {
                    return Err(e);
                }
                crate::warn(&format!(
                    "{e} (`strict = false`: early stopping skips its checks while the metric is missing)"
                ));
            }
        }
        Ok(())
    }

    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if !self.on_train_epoch_end || self.should_skip(ctx.state()) {
            return Ok(());
        }
        self.run_check(ctx)
    }

    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if self.on_train_epoch_end || self.should_skip(ctx.state()) {
            return Ok(());
        }
        self.run_check(ctx)
    }

    fn state_dict(&self) -> Option<Value> {
        Some(Value::Map(vec![
            (KEYS[0].into(), self.wait_count.into()),
            (KEYS[1].into(), self.stopped_epoch.into()),
            (KEYS[2].into(), Value::Float(self.best_score)),
            (KEYS[3].into(), self.patience.into()),
        ]))
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let key = self.state_key_string();
        let bad = |what: String| Error::user(format!("`{key}` state in the checkpoint: {what}"));
        let Value::Map(entries) = state else {
            return Err(bad(format!(
                "expected a map with `wait_count`, `stopped_epoch`, `best_score` and `patience`, found {state:?}"
            )));
        };
        let get = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v)
                .ok_or_else(|| bad(format!("the key `{name}` is missing")))
        };
        let count = |name: &str| {
            let v = get(name)?;
            v.as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "`{name}` must be a non-negative integer, found {v:?}"
                    ))
                })
        };
        let wait_count = count(KEYS[0])?;
        let stopped_epoch = count(KEYS[1])?;
        let best = get(KEYS[2])?;
        let best_score = match best {
            Value::Float(f) => *f,
            Value::Integer(i) => i128::from(*i) as f64,
            _ => {
                return Err(bad(format!(
                    "`best_score` must be a number, found {best:?}"
                )))
            }
        };
        let patience = count(KEYS[3])?;
        (
            self.wait_count,
            self.stopped_epoch,
            self.best_score,
            self.patience,
        ) = (wait_count, stopped_epoch, best_score, patience);
        Ok(())
    }
}

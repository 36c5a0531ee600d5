//! Lightning's `Timer`: measures the time spent training and validating, and stops `fit` once the
//! training time reaches a limit (what `TrainerBuilder::max_time` installs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ciborium::Value;

use super::{Callback, CallbackContext};
use crate::optim::Interval;
use crate::{Error, Result};

/// A monotonic clock: the time since a fixed origin; replaceable so that a test decides when time passes.
type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Lightning's `Timer` callback: tracks the time spent in training and validation, and asks the trainer
/// to stop ([`CallbackContext::request_stop`]) once the training time reaches `duration`, checked after
/// every training batch ([`Interval::Step`], the default) or every training epoch ([`Interval::Epoch`]),
/// and once when `fit` starts (a resumed run may have no time left). The stop is a request: `min_epochs`
/// and `min_steps` still apply, and the end of `fit` runs as usual (final checkpoints, logger flush).
///
/// Its state, the time elapsed per stage, goes into every full checkpoint, so a resumed run continues
/// counting from where the saved one stood. A trainer that fits again continues counting too. With
/// several processes, rank 0's clock decides for all.
///
/// [`TrainerBuilder::max_time`](crate::trainer::TrainerBuilder::max_time) adds one with the step
/// interval unless a `Timer` is given as a callback.
///
/// ```
/// use std::time::Duration;
/// use fulgur_runtime::callbacks::Timer;
/// use fulgur_runtime::optim::Interval;
///
/// // Stop at the end of the first epoch that ends after 12 hours of training.
/// let timer = Timer::new(Duration::from_secs(12 * 3600)).interval(Interval::Epoch);
/// assert_eq!(timer.time_elapsed(), Duration::ZERO);
/// assert_eq!(timer.time_remaining(), Some(Duration::from_secs(12 * 3600)));
/// ```
pub struct Timer {
    duration: Option<Duration>,
    interval: Interval,
    verbose: bool,
    clock: Clock,
    train: Span,
    validation: Span,
    /// Training time of earlier runs: a resumed checkpoint's, and earlier `fit`s of this trainer.
    offset: Duration,
    announced: bool,
}

/// When a stage last started and ended, by the clock.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: Option<Duration>,
    end: Option<Duration>,
}

impl Span {
    fn elapsed(&self, now: Duration) -> Duration {
        match self.start {
            None => Duration::ZERO,
            Some(start) => self.end.unwrap_or(now).saturating_sub(start),
        }
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("duration", &self.duration)
            .field("interval", &self.interval)
            .field("verbose", &self.verbose)
            .field("time_elapsed", &self.time_elapsed())
            .finish()
    }
}

impl Default for Timer {
    /// A timer without a limit: it only measures.
    fn default() -> Self {
        let origin = Instant::now();
        Self {
            duration: None,
            interval: Interval::Step,
            verbose: true,
            clock: Arc::new(move || origin.elapsed()),
            train: Span::default(),
            validation: Span::default(),
            offset: Duration::ZERO,
            announced: false,
        }
    }
}

impl Timer {
    /// A timer that stops training once it has lasted `duration` (Lightning's `Timer(duration=...)`).
    pub fn new(duration: Duration) -> Self {
        Self {
            duration: Some(duration),
            ..Self::default()
        }
    }

    /// When the limit is checked: after every training batch ([`Interval::Step`], the default) or at the
    /// end of every training epoch ([`Interval::Epoch`]).
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }

    /// Whether to say "Time limit reached. …" when it stops training (default `true`).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Replaces the clock, a function returning the time since any fixed origin (tests and simulations).
    pub fn with_clock(mut self, clock: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limit, if any.
    pub fn duration(&self) -> Option<Duration> {
        self.duration
    }

    /// The training time so far, including that of the run a checkpoint resumed and of earlier `fit`s
    /// of the trainer (Lightning's `time_elapsed("train")`).
    pub fn time_elapsed(&self) -> Duration {
        self.offset + self.train.elapsed((self.clock)())
    }

    /// The time spent in validation runs (sanity checks included) of the current or last `fit`
    /// (Lightning's `time_elapsed("validate")`).
    pub fn validation_time_elapsed(&self) -> Duration {
        self.validation.elapsed((self.clock)())
    }

    /// The training time left before the limit (zero once it is reached); `None` without a limit.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.duration.map(|d| d.saturating_sub(self.time_elapsed()))
    }

    /// Requests a stop when the limit is reached, by rank 0's clock.
    fn check_time_remaining(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let Some(duration) = self.duration else {
            return Ok(());
        };
        let elapsed = self.time_elapsed();
        let stop = ctx.strategy().broadcast_bool(elapsed >= duration)?;
        if stop {
            ctx.request_stop();
            if self.verbose && !self.announced {
                self.announced = true;
                crate::info(&format!(
                    "Time limit reached. Elapsed time is {}. Signaling Trainer to stop.",
                    timedelta(elapsed)
                ));
            }
        }
        Ok(())
    }
}

impl Callback for Timer {
    fn state_key(&self) -> String {
        "Timer".into()
    }

    fn on_fit_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        // After the restore: a resumed run may have no time left.
        self.announced = false;
        self.check_time_remaining(ctx)
    }

    fn on_train_start(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
        let now = (self.clock)();
        // A trainer that fits again goes on counting, as it goes on with its epochs and steps.
        self.offset += self.train.elapsed(now);
        self.train = Span {
            start: Some(now),
            end: None,
        };
        Ok(())
    }

    fn on_train_end(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
        self.train.end = Some((self.clock)());
        Ok(())
    }

    fn on_validation_start(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
        self.validation = Span {
            start: Some((self.clock)()),
            end: None,
        };
        Ok(())
    }

    fn on_validation_end(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
        self.validation.end = Some((self.clock)());
        Ok(())
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if self.interval == Interval::Step {
            self.check_time_remaining(ctx)?;
        }
        Ok(())
    }

    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if self.interval == Interval::Epoch {
            self.check_time_remaining(ctx)?;
        }
        Ok(())
    }

    /// `{"time_elapsed": {"train": seconds, "validate": seconds}}`, as Lightning stores it.
    fn state_dict(&self) -> Option<Value> {
        let stages = vec![
            (
                Value::from("train"),
                Value::Float(self.time_elapsed().as_secs_f64()),
            ),
            (
                Value::from("validate"),
                Value::Float(self.validation_time_elapsed().as_secs_f64()),
            ),
        ];
        Some(Value::Map(vec![(
            Value::from("time_elapsed"),
            Value::Map(stages),
        )]))
    }

    /// Continues counting from the stored training time; a missing entry counts as none, as in
    /// Lightning.
    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let bad = |what: &str| {
            Error::user(format!(
                "the `Timer` state in the checkpoint is not valid: {what} (expected \
                 {{\"time_elapsed\": {{\"train\": seconds, …}}}}, found {state:?})"
            ))
        };
        let Value::Map(entries) = state else {
            return Err(bad("not a map"));
        };
        let stages = match entry(entries, "time_elapsed") {
            None => return self.restart_at(Duration::ZERO),
            Some(Value::Map(stages)) => stages,
            Some(_) => return Err(bad("`time_elapsed` is not a map")),
        };
        let seconds = match entry(stages, "train") {
            None => 0.0,
            Some(Value::Float(s)) => *s,
            Some(Value::Integer(i)) => i128::from(*i) as f64,
            Some(_) => return Err(bad("`time_elapsed.train` is not a number")),
        };
        let offset = Duration::try_from_secs_f64(seconds)
            .map_err(|_| bad("`time_elapsed.train` is not a number of seconds >= 0"))?;
        self.restart_at(offset)
    }
}

impl Timer {
    fn restart_at(&mut self, offset: Duration) -> Result<()> {
        self.offset = offset;
        self.train = Span::default();
        Ok(())
    }
}

fn entry<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// Whole seconds as Python prints a `timedelta`: `0:00:05`, `1:02:03`, `2 days, 0:00:00`.
fn timedelta(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        d => format!("{d} days, {clock}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn manual_clock() -> (
        Arc<AtomicU64>,
        impl Fn() -> Duration + Send + Sync + 'static,
    ) {
        let now = Arc::new(AtomicU64::new(0));
        let read = now.clone();
        (now, move || {
            Duration::from_secs(read.load(Ordering::SeqCst))
        })
    }

    #[test]
    fn elapsed_time_is_printed_as_python_prints_a_timedelta() {
        assert_eq!(timedelta(Duration::from_millis(5_900)), "0:00:05");
        assert_eq!(timedelta(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(
            timedelta(Duration::from_secs(86_400 + 61)),
            "1 day, 0:01:01"
        );
        assert_eq!(
            timedelta(Duration::from_secs(2 * 86_400)),
            "2 days, 0:00:00"
        );
    }

    #[test]
    fn the_training_time_survives_a_state_round_trip_and_keeps_counting() {
        let (now, clock) = manual_clock();
        let mut timer = Timer::new(Duration::from_secs(10)).with_clock(clock);
        now.store(100, Ordering::SeqCst);
        timer.train.start = Some(Duration::from_secs(100));
        now.store(104, Ordering::SeqCst);
        assert_eq!(timer.time_elapsed(), Duration::from_secs(4));
        assert_eq!(timer.time_remaining(), Some(Duration::from_secs(6)));
        let state = timer.state_dict().unwrap();

        let (later, clock) = manual_clock();
        let mut resumed = Timer::new(Duration::from_secs(10)).with_clock(clock);
        resumed.load_state_dict(&state).unwrap();
        assert_eq!(resumed.time_elapsed(), Duration::from_secs(4));
        later.store(50, Ordering::SeqCst);
        resumed.train.start = Some(Duration::from_secs(50));
        later.store(53, Ordering::SeqCst);
        assert_eq!(resumed.time_elapsed(), Duration::from_secs(7));
        assert_eq!(resumed.time_remaining(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_state_that_is_not_a_timers_is_refused_and_a_missing_entry_counts_as_none() {
        let mut timer = Timer::new(Duration::from_secs(1));
        let e = timer.load_state_dict(&Value::from(3)).unwrap_err();
        assert!(e.to_string().contains("the `Timer` state"), "{e}");
        let negative = Value::Map(vec![(
            Value::from("time_elapsed"),
            Value::Map(vec![(Value::from("train"), Value::Float(-1.0))]),
        )]);
        assert!(timer.load_state_dict(&negative).is_err());
        timer.load_state_dict(&Value::Map(vec![])).unwrap();
        assert_eq!(timer.time_elapsed(), Duration::ZERO);
    }
}

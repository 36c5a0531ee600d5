//! Learning-rate schedulers in closed form: the rate is a function of the base rate and a counter, so a
//! resumed run gets exactly the rates it would have had without the interruption.

use ciborium::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Interval, LrScheduler, StateError};
use crate::checkpoint::SchedulerState;

/// Where a scheduler is: the rate it started from and how many intervals have passed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Progress {
    base_lr: f64,
    count: u64,
    /// Set by `load_state_dict`, so that the `start` of the resumed `fit` keeps the restored position.
    restored: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            base_lr: 0.0,
            count: 0,
            restored: false,
        }
    }

    fn start(&mut self, base_lr: f64) {
        if !std::mem::take(&mut self.restored) {
            self.base_lr = base_lr;
            self.count = 0;
        }
    }

    fn step(&mut self) -> u64 {
        self.count = self.count.saturating_add(1);
        self.count
    }

    fn restore(&mut self, base_lr: f64, count: u64) {
        *self = Self {
            base_lr,
            count,
            restored: true,
        };
    }
}

/// Multiplies the rate by `gamma` every `step_size` intervals (PyTorch's `StepLR`):
/// `lr = base_lr * gamma^floor(n / step_size)`. Steps once per epoch unless told otherwise.
///
/// ```
/// use fulgur_runtime::optim::{Interval, LrScheduler, StepLr};
///
/// let mut sched = StepLr::new(2, 0.1);
/// assert_eq!(LrScheduler::interval(&sched), Interval::Epoch);
/// assert_eq!(sched.start(1.0), 1.0);
/// assert_eq!(sched.step(), 1.0);
/// assert_eq!(sched.step(), 0.1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    step_size: u64,
    gamma: f64,
    interval: Interval,
    progress: Progress,
}

impl StepLr {
    /// Decays by `gamma` every `step_size` intervals; a `step_size` of 0 counts as 1.
    pub fn new(step_size: u64, gamma: f64) -> Self {
        Self {
            step_size: step_size.max(1),
            gamma,
            interval: Interval::Epoch,
            progress: Progress::new(),
        }
    }

    /// Steps every optimizer step or every epoch (the default).
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }

    /// The rate in force.
    pub fn lr(&self) -> f64 {
        self.lr_at(self.progress.count)
    }

    fn lr_at(&self, n: u64) -> f64 {
        self.progress.base_lr * self.gamma.powf((n / self.step_size) as f64)
    }
}

#[derive(Serialize, Deserialize)]
struct StepLrRecord {
    base_lr: f64,
    count: u64,
    step_size: u64,
    gamma: f64,
    interval: IntervalRecord,
}

impl LrScheduler for StepLr {
    fn interval(&self) -> Interval {
        self.interval
    }

    fn start(&mut self, base_lr: f64) -> f64 {
        self.progress.start(base_lr);
        self.lr()
    }

    fn step(&mut self) -> f64 {
        let n = self.progress.step();
        self.lr_at(n)
    }

    fn state_dict(&self) -> SchedulerState {
        encode(
            "step_lr",
            &StepLrRecord {
                base_lr: self.progress.base_lr,
                count: self.progress.count,
                step_size: self.step_size,
                gamma: self.gamma,
                interval: self.interval.into(),
            },
        )
    }

    /// Restores the position and, as PyTorch does, the stored `step_size`, `gamma` and interval.
    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<(), StateError> {
        let rec: StepLrRecord = decode(state, "step_lr")?;
        if rec.step_size == 0 {
            return Err(StateError(
                "the stored `step_lr` state has `step_size` 0; it must be at least 1".to_string(),
            ));
        }
        self.step_size = rec.step_size;
        self.gamma = rec.gamma;
        self.interval = rec.interval.into();
        self.progress.restore(rec.base_lr, rec.count);
        Ok(())
    }
}

/// Anneals the rate from its base to `eta_min` along half a cosine over `t_max` intervals (PyTorch's
/// `CosineAnnealingLR`, closed form): `lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * n / t_max)) / 2`.
/// Past `t_max` the cosine continues, as in PyTorch. Steps once per epoch unless told otherwise.
///
/// ```
/// use fulgur_runtime::optim::{CosineAnnealingLr, LrScheduler};
///
/// let mut sched = CosineAnnealingLr::new(2, 0.0);
/// assert_eq!(sched.start(1.0), 1.0);
/// assert!((sched.step() - 0.5).abs() < 1e-12);
/// assert_eq!(sched.step(), 0.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    t_max: u64,
    eta_min: f64,
    interval: Interval,
    progress: Progress,
}

impl CosineAnnealingLr {
    /// Anneals to `eta_min` over `t_max` intervals; a `t_max` of 0 counts as 1.
    pub fn new(t_max: u64, eta_min: f64) -> Self {
        Self {
            t_max: t_max.max(1),
            eta_min,
            interval: Interval::Epoch,
            progress: Progress::new(),
        }
    }

    /// Steps every optimizer step or every epoch (the default).
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }

    /// The rate in force.
    pub fn lr(&self) -> f64 {
        self.lr_at(self.progress.count)
    }

    fn lr_at(&self, n: u64) -> f64 {
        let cos = (std::f64::consts::PI * n as f64 / self.t_max as f64).cos();
        self.eta_min + (self.progress.base_lr - self.eta_min) * (1.0 + cos) / 2.0
    }
}

#[derive(Serialize, Deserialize)]
struct CosineRecord {
    base_lr: f64,
    count: u64,
    t_max: u64,
    eta_min: f64,
    interval: IntervalRecord,
}

impl LrScheduler for CosineAnnealingLr {
    fn interval(&self) -> Interval {
        self.interval
    }

    fn start(&mut self, base_lr: f64) -> f64 {
        self.progress.start(base_lr);
        self.lr()
    }

    fn step(&mut self) -> f64 {
        let n = self.progress.step();
        self.lr_at(n)
    }

    fn state_dict(&self) -> SchedulerState {
        encode(
            "cosine_annealing_lr",
            &CosineRecord {
                base_lr: self.progress.base_lr,
                count: self.progress.count,
                t_max: self.t_max,
                eta_min: self.eta_min,
                interval: self.interval.into(),
            },
        )
    }

    /// Restores the position and, as PyTorch does, the stored `t_max`, `eta_min` and interval.
    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<(), StateError> {
        let rec: CosineRecord = decode(state, "cosine_annealing_lr")?;
        if rec.t_max == 0 {
            return Err(StateError(
                "the stored `cosine_annealing_lr` state has `t_max` 0; it must be at least 1"
                    .to_string(),
            ));
        }
        self.t_max = rec.t_max;
        self.eta_min = rec.eta_min;
        self.interval = rec.interval.into();
        self.progress.restore(rec.base_lr, rec.count);
        Ok(())
    }
}

/// Raises the rate linearly from `start_factor * base_lr` to `base_lr` over `warmup_steps` intervals, then
/// holds it (PyTorch's `LinearLR` with `end_factor = 1`):
/// `lr = base_lr * (start_factor + (1 - start_factor) * min(n, warmup_steps) / warmup_steps)`.
/// Steps every optimizer step unless told otherwise.
///
/// ```
/// use fulgur_runtime::optim::{Interval, LinearWarmup, LrScheduler};
///
/// let mut sched = LinearWarmup::new(4, 0.2);
/// assert_eq!(LrScheduler::interval(&sched), Interval::Step);
/// assert!((sched.start(1.0) - 0.2).abs() < 1e-12);
/// assert!((sched.step() - 0.4).abs() < 1e-12);
/// for _ in 0..10 {
///     sched.step();
/// }
/// assert_eq!(sched.lr(), 1.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWarmup {
    warmup_steps: u64,
    start_factor: f64,
    interval: Interval,
    progress: Progress,
}

impl LinearWarmup {
    /// Warms up over `warmup_steps` intervals from `start_factor` (in `[0, 1]`) times the base rate; with
    /// `warmup_steps` 0 the base rate holds from the start.
    pub fn new(warmup_steps: u64, start_factor: f64) -> Self {
        Self {
            warmup_steps,
            start_factor,
            interval: Interval::Step,
            progress: Progress::new(),
        }
    }

    /// Steps every optimizer step (the default) or every epoch.
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }

    /// The rate in force.
    pub fn lr(&self) -> f64 {
        self.lr_at(self.progress.count)
    }

    fn lr_at(&self, n: u64) -> f64 {
        if self.warmup_steps == 0 || n >= self.warmup_steps {
            return self.progress.base_lr;
        }
        let frac = n as f64 / self.warmup_steps as f64;
        self.progress.base_lr * (self.start_factor + (1.0 - self.start_factor) * frac)
    }
}

#[derive(Serialize, Deserialize)]
struct WarmupRecord {
    base_lr: f64,
    count: u64,
    warmup_steps: u64,
    start_factor: f64,
    interval: IntervalRecord,
}

impl LrScheduler for LinearWarmup {
    fn interval(&self) -> Interval {
        self.interval
    }

    fn start(&mut self, base_lr: f64) -> f64 {
        self.progress.start(base_lr);
        self.lr()
    }

    fn step(&mut self) -> f64 {
        let n = self.progress.step();
        self.lr_at(n)
    }

    fn state_dict(&self) -> SchedulerState {
        encode(
            "linear_warmup",
            &WarmupRecord {
                base_lr: self.progress.base_lr,
                count: self.progress.count,
                warmup_steps: self.warmup_steps,
                start_factor: self.start_factor,
                interval: self.interval.into(),
            },
        )
    }

    /// Restores the position and, as PyTorch does, the stored `warmup_steps`, `start_factor` and interval.
    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<(), StateError> {
        let rec: WarmupRecord = decode(state, "linear_warmup")?;
        self.warmup_steps = rec.warmup_steps;
        self.start_factor = rec.start_factor;
        self.interval = rec.interval.into();
        self.progress.restore(rec.base_lr, rec.count);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IntervalRecord {
    Step,
    Epoch,
}

impl From<Interval> for IntervalRecord {
    fn from(i: Interval) -> Self {
        match i {
            Interval::Step => Self::Step,
            Interval::Epoch => Self::Epoch,
        }
    }
}

impl From<IntervalRecord> for Interval {
    fn from(i: IntervalRecord) -> Self {
        match i {
            IntervalRecord::Step => Self::Step,
            IntervalRecord::Epoch => Self::Epoch,
        }
    }
}

fn encode(kind: &str, record: &impl Serialize) -> SchedulerState {
    // Records are plain structs of numbers and unit variants, which CBOR values always represent.
    let state = Value::serialized(record).unwrap_or(Value::Null);
    SchedulerState {
        kind: kind.to_string(),
        state,
    }
}

fn decode<T: DeserializeOwned>(state: &SchedulerState, kind: &str) -> Result<T, StateError> {
    if state.kind != kind {
        return Err(StateError(format!(
            "the checkpoint holds `{}` scheduler state, but the configured scheduler is `{kind}`; configure the \
             scheduler the checkpoint was trained with",
            state.kind
        )));
    }
    state.state.deserialized().map_err(|e| {
        StateError(format!(
            "the stored `{kind}` scheduler state is malformed: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut impl LrScheduler, base_lr: f64, steps: usize) -> Vec<f64> {
        let mut lrs = vec![s.start(base_lr)];
        lrs.extend((0..steps).map(|_| s.step()));
        lrs
    }

    fn assert_close(found: &[f64], expected: &[f64]) {
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for (f, e) in found.iter().zip(expected) {
            assert!(
                (f - e).abs() < 1e-12,
                "found {found:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn step_lr_decays_every_step_size_intervals() {
        let mut s = StepLr::new(3, 0.5);
        assert_close(
            &run(&mut s, 0.1, 7),
            &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025],
        );
    }

    #[test]
    fn cosine_annealing_matches_pytorch() {
        // PyTorch's closed form for CosineAnnealingLR(opt(lr=0.1), T_max=10, eta_min=0.001).
        let mut s = CosineAnnealingLr::new(10, 0.001);
        let lrs = run(&mut s, 0.1, 10);
        assert_close(
            &[lrs[0], lrs[1], lrs[5], lrs[9], lrs[10]],
            &[
                0.1,
                0.09757729755661011,
                0.0505,
                0.0034227024433899004,
                0.001,
            ],
        );
    }

    #[test]
    fn linear_warmup_rises_then_holds() {
        let mut s = LinearWarmup::new(4, 0.25);
        assert_close(
            &run(&mut s, 0.2, 6),
            &[0.05, 0.0875, 0.125, 0.1625, 0.2, 0.2, 0.2],
        );
        let mut none = LinearWarmup::new(0, 0.25);
        assert_close(&run(&mut none, 0.2, 2), &[0.2, 0.2, 0.2]);
    }

    #[test]
    fn intervals_default_like_lightning_and_can_be_chosen() {
        assert_eq!(LrScheduler::interval(&StepLr::new(1, 0.1)), Interval::Epoch);
        assert_eq!(
            LrScheduler::interval(&CosineAnnealingLr::new(1, 0.0)),
            Interval::Epoch
        );
        assert_eq!(
            LrScheduler::interval(&LinearWarmup::new(1, 0.1)),
            Interval::Step
        );
        assert_eq!(
            LrScheduler::interval(&StepLr::new(1, 0.1).interval(Interval::Step)),
            Interval::Step
        );
        assert_eq!(
            LrScheduler::interval(&LinearWarmup::new(1, 0.1).interval(Interval::Epoch)),
            Interval::Epoch
        );
    }

    #[test]
    fn zero_periods_count_as_one() {
        assert_close(&run(&mut StepLr::new(0, 0.5), 1.0, 2), &[1.0, 0.5, 0.25]);
        assert_close(
            &run(&mut CosineAnnealingLr::new(0, 0.0), 1.0, 1),
            &[1.0, 0.0],
        );
    }

    /// Runs `steps` intervals, saves, restores into `fresh` (configured differently), and checks that the
    /// restored scheduler continues with exactly the rates of the original.
    fn check_resume(mut original: impl LrScheduler, mut fresh: impl LrScheduler, base_lr: f64) {
        run(&mut original, base_lr, 5);
        let state = original.state_dict();
        fresh.load_state_dict(&state).unwrap();
        assert_eq!(fresh.interval(), original.interval());
        // The resumed `fit` calls `start` with the optimizer's restored rate, which must not reset it.
        let resumed_lr = fresh.start(0.123);
        let expected: Vec<f64> = (0..6).map(|_| original.step()).collect();
        let found: Vec<f64> = (0..6).map(|_| fresh.step()).collect();
        assert_eq!(found, expected);
        assert_eq!(fresh.state_dict(), original.state_dict());
        assert!(resumed_lr.is_finite());
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        check_resume(
            StepLr::new(2, 0.5),
            StepLr::new(7, 0.9).interval(Interval::Step),
            0.1,
        );
        check_resume(
            CosineAnnealingLr::new(8, 1e-4),
            CosineAnnealingLr::new(3, 0.0),
            0.1,
        );
        check_resume(
            LinearWarmup::new(9, 0.1).interval(Interval::Epoch),
            LinearWarmup::new(2, 0.5),
            0.1,
        );
    }

    #[test]
    fn start_after_restore_returns_the_restored_rate_then_a_new_fit_starts_over() {
        let mut s = StepLr::new(1, 0.5);
        run(&mut s, 1.0, 2);
        let mut restored = StepLr::new(1, 0.5);
        restored.load_state_dict(&s.state_dict()).unwrap();
        assert_eq!(restored.start(0.25), 0.25);
        assert_eq!(restored.start(1.0), 1.0);
    }

    #[test]
    fn foreign_or_malformed_state_is_refused() {
        let state = StepLr::new(2, 0.5).state_dict();
        let err = CosineAnnealingLr::new(2, 0.0)
            .load_state_dict(&state)
            .unwrap_err();
        assert_eq!(
            err.0,
            "the checkpoint holds `step_lr` scheduler state, but the configured scheduler is \
             `cosine_annealing_lr`; configure the scheduler the checkpoint was trained with"
        );

        let mut zero = state.clone();
        if let Value::Map(entries) = &mut zero.state {
            for (k, v) in entries.iter_mut() {
                if k.as_text() == Some("step_size") {
                    *v = Value::Integer(0.into());
                }
            }
        }
        let err = StepLr::new(2, 0.5).load_state_dict(&zero).unwrap_err();
        assert_eq!(
            err.0,
            "the stored `step_lr` state has `step_size` 0; it must be at least 1"
        );

        let garbage = SchedulerState {
            kind: "linear_warmup".into(),
            state: Value::Bool(true),
        };
        let err = LinearWarmup::new(2, 0.5)
            .load_state_dict(&garbage)
            .unwrap_err();
        assert!(
            err.0
                .starts_with("the stored `linear_warmup` scheduler state is malformed: "),
            "{}",
            err.0
        );
    }
}

//! Lightning's progress bar: an indicatif bar per epoch on a terminal, short plain lines elsewhere.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressDrawTarget, ProgressState, ProgressStyle};

use super::output::{Output, Term};
use super::{Callback, CallbackContext};
use crate::metrics::{MetricValue, Stage};
use crate::state::TrainerState;
use crate::{Error, Result};

/// How often the bar's metrics are formatted again; indicatif itself redraws at most 20 times a second.
const MESSAGE_EVERY: Duration = Duration::from_millis(100);

/// How a [`ProgressBar`] shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when standard output is a terminal; plain lines when it is not (a pipe, a file, CI,
    /// `TERM=dumb`) or when the progress bar writes to a [`writer`](ProgressBar::writer).
    #[default]
    Auto,
    /// A bar redrawn in place, with ANSI escape codes.
    Bar,
    /// Plain lines: at each tenth of an epoch (at most one per
    /// [`plain_interval`](ProgressBar::plain_interval)) and at the end of each epoch.
    Plain,
    /// Nothing.
    Off,
}

/// Shows the progress of `fit` on rank 0, like Lightning's `TQDMProgressBar`: the epoch, the batch,
/// elapsed and remaining time, throughput, and the metrics declared with `prog_bar`.
///
/// On a terminal, one bar per epoch, left on screen when the epoch ends; validation runs inside the
/// epoch show their progress after it, and the sanity check and `Trainer::validate` get a bar of their
/// own that is cleared when they end:
///
/// ```text
/// Epoch 3/9 ██████████▌              45/120 [00:02<00:03, 21.3 it/s, train_loss=0.431, val_acc=0.91]
/// ```
///
/// Epochs count from 0 up to `max_epochs - 1`, as `current_epoch` and checkpoint names do. When
/// standard output is not a terminal, the same text as plain lines, one at the end of each epoch and,
/// in long epochs, at tenths of it:
///
/// ```text
/// Epoch 0/9  45/45 [00:00<00:00, 412.5 it/s, train_loss=0.412, val_acc=0.93]
/// ```
///
/// Everything goes to standard output through `print!` (so that the test harness captures it, and it
/// stays in order with the program's own `println!`), or to a [`writer`](Self::writer). Write errors
/// are ignored: a closed pipe never fails or aborts `fit`.
///
/// The trainer adds a `ProgressBar::new()` unless `enable_progress_bar(false)` is set or a callback
/// whose [`is_progress_bar`](Callback::is_progress_bar) is `true` is given, which replaces it:
///
/// ```
/// # use fulgur_runtime::callbacks::{ProgressBar, ProgressMode};
/// let bar = ProgressBar::new().mode(ProgressMode::Plain).refresh_rate(10);
/// # let _ = bar;
/// ```
pub struct ProgressBar {
    mode: ProgressMode,
    refresh_rate: u64,
    plain_interval: Duration,
    out: Output,
    live: Live,
}

/// What is on screen now.
#[derive(Default)]
enum Live {
    #[default]
    Idle,
    /// The bar of a training epoch; `validating` is the progress of a validation run inside it.
    Epoch {
        bar: indicatif::ProgressBar,
        last_message: Instant,
        validating: Option<(u64, u64)>,
    },
    /// The bar of a sanity check or of `Trainer::validate`, cleared when it ends.
    Eval(indicatif::ProgressBar),
    /// Plain lines for a training epoch.
    Lines {
        start: Instant,
        start_pos: u64,
        last_line: Instant,
        tenth: u64,
    },
}

impl fmt::Debug for ProgressBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressBar")
            .field("mode", &self.mode)
            .field("refresh_rate", &self.refresh_rate)
            .field("plain_interval", &self.plain_interval)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressBar {
    /// [`ProgressMode::Auto`] on standard output, redrawn after every batch, plain lines at most every
    /// 30 seconds within an epoch.
    pub fn new() -> Self {
        Self {
            mode: ProgressMode::Auto,
            refresh_rate: 1,
            plain_interval: Duration::from_secs(30),
            out: Output::Stdout,
            live: Live::Idle,
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: ProgressMode) -> Self {
        self.mode = mode;
        self
    }

    /// Moves the bar every `n` batches (Lightning's `refresh_rate`, default 1); 0 turns it off. The
    /// screen is redrawn at most 20 times a second whatever the rate.
    pub fn refresh_rate(mut self, n: u64) -> Self {
        self.refresh_rate = n;
        self
    }

    /// The least time between two plain lines inside an epoch (default 30 s); the line at the end of
    /// an epoch is always printed. `Duration::ZERO` prints one at every tenth of the epoch.
    pub fn plain_interval(mut self, interval: Duration) -> Self {
        self.plain_interval = interval;
        self
    }

    /// Writes to `w` instead of standard output (write errors are ignored). In
    /// [`ProgressMode::Auto`], a writer gets plain lines.
    pub fn writer(mut self, w: impl Write + Send + 'static) -> Self {
        self.out = Output::writer(w);
        self
    }

    /// The mode in force for this hook: `Auto` resolved, and `Off` on ranks other than 0.
    fn resolve(&self, ctx: &CallbackContext<'_>) -> ProgressMode {
        if self.refresh_rate == 0 || !ctx.strategy().is_global_zero() {
            return ProgressMode::Off;
        }
        match self.mode {
            ProgressMode::Auto if self.out.is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            mode => mode,
        }
    }

    fn new_bar(&self, len: u64, prefix: String) -> indicatif::ProgressBar {
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(Term(self.out.clone())), 20);
        indicatif::ProgressBar::with_draw_target(Some(len), target)
            .with_style(bar_style(len))
            .with_prefix(prefix)
    }

    /// Takes down what is on screen: `abandon` leaves a bar as it is, otherwise it is cleared.
    fn close(&mut self, abandon: bool) {
        match std::mem::take(&mut self.live) {
            Live::Epoch { bar, .. } | Live::Eval(bar) if abandon => bar.abandon(),
            Live::Epoch { bar, .. } | Live::Eval(bar) => bar.finish_and_clear(),
            Live::Idle | Live::Lines { .. } => {}
        }
    }

    fn print_line(&self, line: &str) {
        self.out.write(line);
        self.out.write("\n");
        self.out.flush();
    }
}

impl Callback for ProgressBar {
    fn is_progress_bar(&self) -> bool {
        true
    }

    fn on_train_epoch_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.close(false);
        let s = ctx.state();
        let now = Instant::now();
        match self.resolve(ctx) {
            ProgressMode::Bar => {
                let bar = self.new_bar(s.num_training_batches, epoch_label(s));
                bar.set_position(s.batches_done);
                bar.reset_eta();
                bar.set_message(message(&prog_bar_metrics(s), None));
                self.live = Live::Epoch {
                    bar,
                    last_message: now,
                    validating: None,
                };
            }
            ProgressMode::Plain => {
                self.live = Live::Lines {
                    start: now,
                    start_pos: s.batches_done,
                    last_line: now,
                    tenth: tenth(s.batches_done, s.num_training_batches),
                };
            }
            ProgressMode::Auto | ProgressMode::Off => {}
        }
        Ok(())
    }

    fn on_train_batch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        let (pos, n) = (s.batches_done, s.num_training_batches);
        let mut line = None;
        match &mut self.live {
            Live::Epoch {
                bar, last_message, ..
            } => {
                if pos % self.refresh_rate == 0 || s.is_last_batch {
                    bar.set_position(pos);
                    if last_message.elapsed() >= MESSAGE_EVERY {
                        *last_message = Instant::now();
                        bar.set_message(message(&prog_bar_metrics(s), None));
                    }
                }
            }
            Live::Lines {
                start,
                start_pos,
                last_line,
                tenth: seen,
            } => {
                let now_tenth = tenth(pos, n);
                if now_tenth > *seen && pos < n {
                    *seen = now_tenth;
                    if last_line.elapsed() >= self.plain_interval {
                        *last_line = Instant::now();
                        line = Some(plain_line(s, *start, *start_pos));
                    }
                }
            }
            Live::Idle | Live::Eval(_) => {}
        }
        if let Some(line) = line {
            self.print_line(&line);
        }
        Ok(())
    }

    fn on_validation_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        let total = if s.sanity_checking {
            s.num_sanity_val_batches
        } else {
            s.num_val_batches
        };
        match &mut self.live {
            Live::Epoch {
                bar, validating, ..
            } => {
                *validating = Some((0, total));
                bar.set_message(message(&prog_bar_metrics(s), *validating));
            }
            Live::Lines { .. } => {}
            Live::Idle | Live::Eval(_) => {
                self.close(false);
                if self.resolve(ctx) == ProgressMode::Bar {
                    let label = if s.sanity_checking {
                        "Sanity Checking"
                    } else {
                        "Validation"
                    };
                    self.live = Live::Eval(self.new_bar(total, label.into()));
                }
            }
        }
        Ok(())
    }

    fn on_validation_batch_end(
        &mut self,
        ctx: &mut CallbackContext<'_>,
        batch_idx: u64,
    ) -> Result<()> {
        match &mut self.live {
            Live::Eval(bar) => bar.set_position(batch_idx + 1),
            Live::Epoch {
                bar,
                last_message,
                validating: Some(progress),
            } => {
                progress.0 = batch_idx + 1;
                if last_message.elapsed() >= MESSAGE_EVERY {
                    *last_message = Instant::now();
                    bar.set_message(message(&prog_bar_metrics(ctx.state()), Some(*progress)));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_validation_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        match &mut self.live {
            Live::Eval(_) => self.close(false),
            Live::Epoch {
                bar,
                last_message,
                validating,
            } => {
                *validating = None;
                *last_message = Instant::now();
                bar.set_message(message(&prog_bar_metrics(ctx.state()), None));
            }
            Live::Idle | Live::Lines { .. } => {}
        }
        Ok(())
    }

    fn on_train_epoch_end(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let s = ctx.state();
        match std::mem::take(&mut self.live) {
            Live::Epoch { bar, .. } => {
                bar.set_position(s.batches_done);
                bar.set_message(message(&prog_bar_metrics(s), None));
                bar.finish();
            }
            Live::Lines {
                start, start_pos, ..
            } => self.print_line(&plain_line(s, start, start_pos)),
            other => self.live = other,
        }
        Ok(())
    }

    fn on_train_end(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
        self.close(false);
        Ok(())
    }

    fn on_exception(&mut self, _: &mut CallbackContext<'_>, _: &Error) -> Result<()> {
        // The bar stays where training stopped, and the error is printed below it.
        self.close(true);
        Ok(())
    }
}

/// `Epoch 3/9`, or `Epoch 3` without `max_epochs`.
fn epoch_label(s: &TrainerState) -> String {
    match s.max_epochs {
        Some(m) if m > 0 => format!("Epoch {}/{}", s.epoch, m - 1),
        _ => format!("Epoch {}", s.epoch),
    }
}

/// Which tenth of an epoch of `n` batches `pos` batches reach.
fn tenth(pos: u64, n: u64) -> u64 {
    (pos * 10).checked_div(n).unwrap_or(0)
}

/// The metrics declared with `prog_bar` that have a value, in declaration order.
fn prog_bar_metrics(s: &TrainerState) -> Vec<(&'static str, String)> {
    s.metric_registry
        .iter()
        .filter(|m| m.prog_bar && m.stage != Stage::Test)
        .filter_map(|m| Some((m.name, format_num(*s.callback_metrics.get(m.name)?))))
        .collect()
}

fn plain_line(s: &TrainerState, start: Instant, start_pos: u64) -> String {
    let elapsed = start.elapsed();
    let done = s.batches_done.saturating_sub(start_pos);
    let rate = (done > 0 && !elapsed.is_zero()).then(|| done as f64 / elapsed.as_secs_f64());
    status_line(
        &epoch_label(s),
        s.batches_done,
        s.num_training_batches,
        elapsed,
        rate,
        &prog_bar_metrics(s),
    )
}

/// A plain progress line: `Epoch 3/9   45/120 [00:02<00:03, 21.3 it/s, train_loss=0.431]`.
fn status_line(
    label: &str,
    pos: u64,
    total: u64,
    elapsed: Duration,
    rate: Option<f64>,
    metrics: &[(&str, String)],
) -> String {
    let width = total.to_string().len();
    let eta =
        rate.and_then(|r| Duration::try_from_secs_f64(total.saturating_sub(pos) as f64 / r).ok());
    format!(
        "{label}  {pos:>width$}/{total} [{}{}",
        times(elapsed, eta, rate),
        message(metrics, None)
    )
}

/// tqdm's `00:02<00:03, 21.3 it/s`; `?` where nothing is known yet.
fn times(elapsed: Duration, eta: Option<Duration>, rate: Option<f64>) -> String {
    let eta = eta.map_or_else(|| "?".to_string(), clock);
    let rate = match rate {
        Some(r) if r >= 1.0 => format!("{r:.1} it/s"),
        Some(r) if r > 0.0 => format!("{:.2} s/it", 1.0 / r),
        _ => "? it/s".to_string(),
    };
    format!("{}<{eta}, {rate}", clock(elapsed))
}

/// `mm:ss`, or `h:mm:ss` from an hour on.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// What follows the times: `, name=value` per metric, the closing bracket, and the progress of a
/// validation run inside the epoch.
fn message(metrics: &[(&str, String)], validating: Option<(u64, u64)>) -> String {
    let mut out: String = metrics
        .iter()
        .map(|(name, value)| format!(", {name}={value}"))
        .collect();
    out.push(']');
    if let Some((done, total)) = validating {
        out.push_str(&format!(" Validation {done}/{total}"));
    }
    out
}

/// tqdm's `format_num`: three significant digits (`0.431`, `1.23e-5`) unless the plain value is
/// shorter (`0.91`, `1234.5`).
fn format_num(v: MetricValue) -> String {
    let (x, plain) = match v {
        MetricValue::Int(i) => return i.to_string(),
        MetricValue::Bool(b) => return b.to_string(),
        MetricValue::F32(x) => (f64::from(x), x.to_string()),
        MetricValue::F64(x) => (x, x.to_string()),
    };
    if x == 0.0 || !x.is_finite() {
        return plain;
    }
    let sci = format!("{x:.2e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let short = if !(-4..3).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{}", trim_zeros(mantissa), exp.abs())
    } else {
        let decimals = (2 - exp).max(0) as usize;
        trim_zeros(&format!("{x:.decimals$}")).to_string()
    };
    if short.len() < plain.len() {
        short
    } else {
        plain
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn bar_style(len: u64) -> ProgressStyle {
    let width = len.to_string().len();
    let template = format!("{{prefix}} {{bar:25}} {{pos:>{width}}}/{{len}} [{{times}}{{msg}}");
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("times", |s: &ProgressState, w: &mut dyn fmt::Write| {
            let rate = s.per_sec();
            let known = rate.is_finite() && rate > 0.0;
            let eta = known.then(|| s.eta());
            let _ = w.write_str(&times(s.elapsed(), eta, known.then_some(rate)));
        })
        .progress_chars("█▉▊▋▌▍▎▏ ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_tqdms() {
        let cases = [
            (MetricValue::F32(0.431_234), "0.431"),
            (MetricValue::F32(0.91), "0.91"),
            (MetricValue::F64(1234.5), "1234.5"),
            (MetricValue::F64(123_456.78), "1.23e+5"),
            (MetricValue::F32(1.234_5e-5), "1.23e-5"),
            (MetricValue::F64(2.0), "2"),
            (MetricValue::F64(9.996), "10"),
            (MetricValue::F32(-0.5), "-0.5"),
            (MetricValue::F64(0.0), "0"),
            (MetricValue::Int(42), "42"),
            (MetricValue::Bool(true), "true"),
        ];
        for (v, text) in cases {
            assert_eq!(format_num(v), text, "{v:?}");
        }
    }

    #[test]
    fn status_lines_show_position_times_rate_and_metrics() {
        let metrics = [
            ("train_loss", "0.431".to_string()),
            ("val_acc", "0.91".to_string()),
        ];
        assert_eq!(
            status_line(
                "Epoch 3/9",
                45,
                120,
                Duration::from_millis(2_100),
                Some(21.3),
                &metrics
            ),
            "Epoch 3/9   45/120 [00:02<00:03, 21.3 it/s, train_loss=0.431, val_acc=0.91]"
        );
        assert_eq!(
            status_line("Epoch 0", 0, 8, Duration::ZERO, None, &[]),
            "Epoch 0  0/8 [00:00<?, ? it/s]"
        );
        assert_eq!(
            status_line(
                "Epoch 12/99",
                3,
                4,
                Duration::from_secs(3_725),
                Some(0.25),
                &[]
            ),
            "Epoch 12/99  3/4 [1:02:05<00:04, 4.00 s/it]"
        );
    }

    #[test]
    fn validation_inside_an_epoch_follows_the_metrics() {
        assert_eq!(
            message(&[("train_loss", "0.5".into())], Some((2, 5))),
            ", train_loss=0.5] Validation 2/5"
        );
    }

    #[test]
    fn tenths_of_an_epoch() {
        let hits: Vec<u64> = (1..=45)
            .filter(|&p| tenth(p, 45) > tenth(p - 1, 45))
            .collect();
        assert_eq!(hits, [5, 9, 14, 18, 23, 27, 32, 36, 41, 45]);
        assert_eq!(tenth(3, 4), 7);
    }
}

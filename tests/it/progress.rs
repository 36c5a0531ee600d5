//! Progress and output: the progress bar's plain lines and bar, the model summary, and how the trainer
//! installs both by default.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulgur::callbacks::{ModelSummary, ProgressBar, ProgressMode};
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use fulgur::strategy::{ReduceOp, Strategy};
use fulgur::trainer::TrainerBuilder;

use crate::support::mlp::{loaders, Hparams, LitMlp};

/// A writer whose bytes the test reads afterwards.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Two epochs of 4 training batches, validation of 2 batches at each epoch end, one sanity batch.
fn base() -> TrainerBuilder<LitMlp<Cpu>, Cpu> {
    Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .max_epochs(2)
        .limit_train_batches(4u64)
        .limit_val_batches(2u64)
        .num_sanity_val_steps(1)
}

fn fit(builder: TrainerBuilder<LitMlp<Cpu>, Cpu>) -> fulgur::Result<Trainer<LitMlp<Cpu>>> {
    let (mut train, mut val) = loaders();
    let mut t = builder.build()?;
    t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        None,
    )?;
    Ok(t)
}

fn plain(buf: &Buffer) -> ProgressBar {
    ProgressBar::new()
        .mode(ProgressMode::Plain)
        .plain_interval(Duration::ZERO)
        .writer(buf.clone())
}

/// A line with its times and values replaced: `Epoch 0/1  1/4 [T, train_loss=V]`. Panics when the
/// times do not read `mm:ss<mm:ss, R it/s`.
fn mask(line: &str) -> String {
    let (head, rest) = line.split_once('[').expect("a `[`");
    let (times, rest) = rest.split_once(" it/s").expect("a rate in it/s");
    let (elapsed, eta_rate) = times.split_once('<').expect("elapsed<eta");
    let (eta, rate) = eta_rate.split_once(", ").expect("eta, rate");
    for clock in [elapsed, eta] {
        let ok = clock.len() == 5 && clock.as_bytes()[2] == b':' || clock == "?";
        assert!(ok, "not a clock: {clock:?} in {line:?}");
    }
    assert!(rate == "?" || rate.parse::<f64>().is_ok(), "{line:?}");
    let metrics: String = rest
        .trim_end_matches(']')
        .split(", ")
        .filter(|m| !m.is_empty())
        .map(|m| {
            let (name, value) = m.split_once('=').expect("name=value");
            assert!(value.parse::<f64>().is_ok(), "{line:?}");
            format!(", {name}=V")
        })
        .collect();
    format!("{head}[T{metrics}]")
}

#[test]
fn plain_lines_at_tenths_and_epoch_ends_show_only_prog_bar_metrics() {
    let buf = Buffer::default();
    fit(base().callback(plain(&buf))).unwrap();
    let text = buf.text();
    let lines: Vec<String> = text.lines().map(mask).collect();
    // `train_loss` and `val_acc` are declared with `prog_bar`, `val_loss` is not. The sanity check
    // leaves no metrics, so `val_acc` first shows at the end of epoch 0, after its validation.
    assert_eq!(
        lines,
        [
            "Epoch 0/1  1/4 [T, train_loss=V]",
            "Epoch 0/1  2/4 [T, train_loss=V]",
            "Epoch 0/1  3/4 [T, train_loss=V]",
            "Epoch 0/1  4/4 [T, train_loss=V, val_acc=V]",
            "Epoch 1/1  1/4 [T, train_loss=V, val_acc=V]",
            "Epoch 1/1  2/4 [T, train_loss=V, val_acc=V]",
            "Epoch 1/1  3/4 [T, train_loss=V, val_acc=V]",
            "Epoch 1/1  4/4 [T, train_loss=V, val_acc=V]",
        ],
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no escape codes in plain lines");
}

#[test]
fn the_last_line_of_an_epoch_holds_its_final_metrics() {
    let buf = Buffer::default();
    let t = fit(base().callback(plain(&buf))).unwrap();
    let text = buf.text();
    let last = text.lines().last().unwrap();
    let m = t.callback_metrics();
    let expected = format!(
        "train_loss={}, val_acc={}]",
        short(m["train_loss"].as_f64()),
        short(m["val_acc"].as_f64())
    );
    assert!(last.ends_with(&expected), "{last:?} vs {expected:?}");
}

/// Three significant digits, as the progress bar prints values below 100 that have long decimals.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = 2 - v.abs().log10().floor() as i32;
    let s = format!("{v:.*}", digits.max(0) as usize);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[test]
fn by_default_plain_lines_come_only_at_epoch_ends() {
    let buf = Buffer::default();
    fit(base().callback(ProgressBar::new().writer(buf.clone()))).unwrap();
    let lines: Vec<String> = buf.text().lines().map(mask).collect();
    assert_eq!(
        lines,
        [
            "Epoch 0/1  4/4 [T, train_loss=V, val_acc=V]",
            "Epoch 1/1  4/4 [T, train_loss=V, val_acc=V]",
        ]
    );
}

#[test]
fn max_steps_alone_shows_the_epoch_without_a_total_and_where_it_stopped() {
    let buf = Buffer::default();
    let builder = Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .limit_train_batches(4u64)
        .num_sanity_val_steps(0)
        .max_steps(6)
        .callback(ProgressBar::new().writer(buf.clone()));
    let (mut train, _) = loaders();
    let mut t = builder.build().unwrap();
    t.fit(LitMlp::new(Hparams::default()), &mut train, None, None)
        .unwrap();
    let lines: Vec<String> = buf.text().lines().map(mask).collect();
    assert_eq!(
        lines,
        [
            "Epoch 0  4/4 [T, train_loss=V]",
            "Epoch 1  2/4 [T, train_loss=V]"
        ]
    );
}

#[test]
fn the_bar_mode_draws_each_epoch_in_place_and_leaves_it() {
    let buf = Buffer::default();
    let bar = ProgressBar::new()
        .mode(ProgressMode::Bar)
        .writer(buf.clone());
    fit(base().callback(bar)).unwrap();
    let text = buf.text();
    assert!(text.contains("\r\x1b[2K"), "redrawn in place: {text:?}");
    for part in [
        "Epoch 0/1 ",
        "Epoch 1/1 ",
        " 4/4 [",
        " it/s, train_loss=",
        ", val_acc=",
    ] {
        assert!(text.contains(part), "missing {part:?} in {text:?}");
    }
    assert!(!text.contains("val_loss"), "{text:?}");
}

#[test]
fn write_errors_never_fail_fit() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    for mode in [ProgressMode::Plain, ProgressMode::Bar] {
        let bar = ProgressBar::new()
            .mode(mode)
            .plain_interval(Duration::ZERO)
            .writer(Broken);
        let t = fit(base()
            .callback(bar)
            .callback(ModelSummary::new().writer(Broken)))
        .unwrap();
        assert_eq!(t.global_step(), 8);
    }
}

#[test]
fn off_and_a_zero_refresh_rate_print_nothing() {
    let buf = Buffer::default();
    fit(base().callback(plain(&buf).mode(ProgressMode::Off))).unwrap();
    fit(base().callback(plain(&buf).refresh_rate(0))).unwrap();
    assert_eq!(buf.text(), "");
}

/// Rank 1 of a pretend two-process group; collectives are identities.
struct RankOne;

impl Strategy for RankOne {
    fn rank(&self) -> usize {
        1
    }
    fn world_size(&self) -> usize {
        2
    }
    fn barrier(&self) -> fulgur::Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut Vec<u8>, _: usize) -> fulgur::Result<()> {
        Ok(())
    }
    fn all_reduce(&self, _: &mut [f64], _: ReduceOp) -> fulgur::Result<()> {
        Ok(())
    }
    fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> fulgur::Result<()> {
        Ok(())
    }
}

#[test]
fn only_rank_zero_prints() {
    let buf = Buffer::default();
    fit(base()
        .strategy(RankOne)
        .callback(plain(&buf))
        .callback(ModelSummary::new().writer(buf.clone())))
    .unwrap();
    assert_eq!(buf.text(), "");
}

#[test]
fn the_model_summary_is_printed_once_when_fit_starts() {
    let buf = Buffer::default();
    fit(base().callback(ModelSummary::new().writer(buf.clone()))).unwrap();
    assert_eq!(
        buf.text(),
        "  | Name | Params
-----------------
0 | net  | 2.4 K
1 | head | 110
-----------------
2.5 K     Trainable params
0         Non-trainable params
2.5 K     Total params
0.010     Total estimated model params size (MB)
"
    );

    let buf = Buffer::default();
    fit(base().callback(ModelSummary::new().max_depth(2).writer(buf.clone()))).unwrap();
    let text = buf.text();
    let rows: Vec<&str> = text.lines().take(6).collect();
    assert_eq!(
        rows,
        [
            "  | Name  | Params",
            "------------------",
            "0 | net   | 2.4 K",
            "1 | net.0 | 2.1 K",
            "2 | net.2 | 330",
            "3 | head  | 110",
        ]
    );
}

#[test]
fn the_summary_comes_before_the_first_progress_line() {
    let buf = Buffer::default();
    fit(base()
        .callback(plain(&buf))
        .callback(ModelSummary::new().writer(buf.clone())))
    .unwrap();
    let text = buf.text();
    assert!(text.starts_with("  | Name | Params\n"), "{text}");
    assert!(text.contains("(MB)\nEpoch 0/1  1/4 ["), "{text}");
}

#[test]
fn the_trainer_adds_a_progress_bar_and_a_model_summary_unless_told_otherwise() {
    let t = base().build().unwrap();
    assert!(t.callback::<ProgressBar>().is_some());
    assert!(t.callback::<ModelSummary>().is_some());

    let t = base()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap();
    assert!(t.callback::<ProgressBar>().is_none());
    assert!(t.callback::<ModelSummary>().is_none());

    // A given progress bar or summary replaces the default one, also after `fit` reinstalls callbacks.
    let buf = Buffer::default();
    let t = fit(base()
        .callback(plain(&buf))
        .callback(ModelSummary::new().writer(buf.clone())))
    .unwrap();
    let bars = t.callbacks().iter().filter(|c| c.is_progress_bar()).count();
    let summaries = t
        .callbacks()
        .iter()
        .filter(|c| c.as_any().is::<ModelSummary>())
        .count();
    assert_eq!((bars, summaries), (1, 1));
    assert!(format!("{:?}", t.callback::<ProgressBar>().unwrap()).contains("Plain"));
}

#[test]
fn a_progress_bar_with_enable_progress_bar_off_is_an_error() {
    let err = base()
        .enable_progress_bar(false)
        .callback(ProgressBar::new())
        .build()
        .err()
        .expect("a progress bar although the setting is off")
        .to_string();
    assert!(
        err.contains("`enable_progress_bar = false` but found a progress bar callback"),
        "{err}"
    );
}

#[test]
fn a_custom_progress_bar_replaces_the_default_one() {
    struct Dots(Arc<Mutex<u32>>);
    impl Callback for Dots {
        fn is_progress_bar(&self) -> bool {
            true
        }
        fn on_train_batch_end(&mut self, _: &mut CallbackContext<'_>) -> fulgur::Result<()> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }
    let count = Arc::new(Mutex::new(0));
    let t = fit(base().callback(Dots(count.clone()))).unwrap();
    assert!(t.callback::<ProgressBar>().is_none());
    assert_eq!(*count.lock().unwrap(), 8);
}

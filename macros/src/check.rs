//! The rules between the parts of a `#[lightning_module]` impl: everything Lightning reports after an
//! epoch of training (or never), reported here at compile time.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use crate::ast::{path_parts, Metric, Module, Source, Stage, StepKind};
use crate::attr::{Arg, CallbackAttr};
use crate::ctxt::Ctxt;
use fulgur_rules::checkpoint::{self, Mode, ValueKind};
use fulgur_rules::metrics::{Known, Logged};
use fulgur_rules::suggest::did_you_mean;
use fulgur_rules::template::{self, Kind, Piece};

pub fn check_module(cx: &Ctxt, module: &Module) {
    check_required_methods(cx, module);
    check_training_returns_loss(cx, module);
    check_log_arity(cx, module);
    let metrics = module.metrics();
    check_metrics_unique(cx, &metrics);
    check_metrics_recorded(cx, &metrics);
    let known = known_metrics(&metrics);
    for ckpt in &module.checkpoints {
        check_top_k(cx, ckpt);
        check_non_negative(cx, ckpt);
        check_one_trigger(cx, ckpt);
        check_dirpath(cx, ckpt);
        for metric in ckpt.strings_of(ValueKind::Metric) {
            check_monitor(cx, &metric, &known);
        }
        for template in ckpt.strings_of(ValueKind::Template) {
            check_template(cx, &template, &known);
        }
    }
    check_distinct_state_keys(cx, &module.checkpoints);
    for stopping in &module.early_stoppings {
        check_monitor_given(cx, stopping, &known);
        for metric in stopping.strings_of(ValueKind::Metric) {
            check_monitor(cx, &metric, &known);
        }
    }
    check_distinct_early_stopping_keys(cx, &module.early_stoppings);
}

/// The runtime cannot train a module without a step and an optimizer.
fn check_required_methods(cx: &Ctxt, module: &Module) {
    let names: Vec<String> = module
        .method_names
        .iter()
        .map(ToString::to_string)
        .collect();
    let missing = |required: &str, signature: &str, others: &[&str]| {
        let candidates = names
            .iter()
            .map(String::as_str)
            .filter(|n| !others.contains(n));
        let msg = match did_you_mean(required, candidates) {
            Some(close) => format!("`#[lightning_module]` needs a `{required}` method, did you mean to name `{close}` so?"),
            None => format!("`#[lightning_module]` needs a `{required}` method: `{signature}`"),
        };
        cx.error_spanned_by(&module.self_ty, msg);
    };
    let steps = StepKind::ALL.map(StepKind::name);
    if module.step(StepKind::Training).is_none() {
        missing(
            "training_step",
            &StepKind::Training.signature(module.manual),
            &steps,
        );
    }
    if module.optimizers.is_none() {
        missing(
            "configure_optimizers",
            "fn configure_optimizers(&self) -> Adam<D>",
            &["configure_callbacks"],
        );
    }
}

/// The trainer backpropagates the value `training_step` returns: it must return the loss. In manual
/// optimization the step backpropagates and steps itself: a returned `Loss` would be logged, not
/// optimized, which is what a step written for automatic optimization would expect.
fn check_training_returns_loss(cx: &Ctxt, module: &Module) {
    let Some(step) = module.step(StepKind::Training) else {
        return;
    };
    if module.manual {
        let is_loss = |ty: &&syn::Type| path_parts(ty).is_some_and(|(i, _)| i == "Loss");
        if let Some(loss) = step.ret.values.iter().find(is_loss) {
            cx.error_spanned_by(
                loss,
                "with `manual_optimization`, `training_step` returns the values its `#[log]` names, not a \
                 `Loss<D>` for the trainer to backpropagate: step the optimizers in the step \
                 (`opt.step(index, self, &mut grads)`) and return the loss's value (`loss.as_vec()[0]`)",
            );
        }
        return;
    }
    if step.ret.inner.is_none() {
        cx.error_spanned_by(
            &step.ret.tokens,
            "`training_step` returns nothing, expected the loss (`-> Loss<D>`) for the optimizer",
        );
    }
}

/// `#[log]` names the returned values one to one; a value nobody names would be silently dropped.
fn check_log_arity(cx: &Ctxt, module: &Module) {
    for logger in module.loggers() {
        // A training step returns its loss, which needs no name; a manual one returns metrics only.
        let training = logger.source == Source::Step(StepKind::Training) && !module.manual;
        let no_loss = training && logger.ret.inner.is_none();
        if logger.log_broken || no_loss {
            continue;
        }
        let name = logger.source.name();
        let n = logger.ret.values.len();
        match logger.log {
            None if n == 0 || (n == 1 && training) => {}
            None => cx.error_spanned_by(
                &logger.ret.tokens,
                format!(
                    "`{name}` returns {} that no `#[log]` names, add `#[log(name, …)]` with one name per value",
                    count(n, "value", "values")
                ),
            ),
            Some(log) if log.metrics.len() > n => cx.error_at(
                log.metrics[n].name_span,
                format!(
                    "`#[log]` names {} but `{name}` returns {}",
                    count(log.metrics.len(), "metric", "metrics"),
                    count(n, "value", "values")
                ),
            ),
            Some(log) if log.metrics.len() < n => cx.error_spanned_by(
                &logger.ret.tokens,
                format!(
                    "`{name}` returns {} but `#[log]` names {}",
                    count(n, "value", "values"),
                    count(log.metrics.len(), "metric", "metrics")
                ),
            ),
            Some(_) => {}
        }
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One name is one metric across the module: the registry, `callback_metrics` and the monitors know a
/// metric by its name alone, so two stages logging one name would write one key, and a monitor would
/// read whichever came last.
fn check_metrics_unique(cx: &Ctxt, metrics: &[Metric]) {
    let mut noted: Vec<usize> = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let Some(first) = metrics[..i].iter().position(|o| o.name == m.name) else {
            continue;
        };
        let first_source = metrics[first].source;
        if first_source == m.source {
            cx.error_at(
                m.span,
                format!("metric `{}` is named twice in this `#[log]`", m.name),
            );
            continue;
        }
        cx.error_at(
            m.span,
            format!(
                "metric `{}` is already logged by `{}`: one name is one metric in the whole module, rename one of them",
                m.name,
                first_source.name()
            ),
        );
        if !noted.contains(&first) {
            noted.push(first);
            cx.error_at(
                metrics[first].span,
                format!(
                    "metric `{}` is logged by `{}` and again by `{}`",
                    m.name,
                    first_source.name(),
                    m.source.name()
                ),
            );
        }
    }
}

/// A metric logged neither per step nor per epoch never reaches the logs or the callbacks.
fn check_metrics_recorded(cx: &Ctxt, metrics: &[Metric]) {
    for m in metrics.iter().filter(|m| !m.on_step && !m.on_epoch) {
        cx.error_at(
            m.span,
            format!(
                "metric `{}` is logged neither `on_step` nor `on_epoch`, so it is never recorded",
                m.name
            ),
        );
    }
}

/// What `monitor` and filename placeholders may name, with each metric's kind where the macro knows it
/// (the rule the runtime checks a `ModelCheckpoint` with when `fit` starts).
fn known_metrics(metrics: &[Metric]) -> Known<Option<Kind>> {
    let logged = metrics.iter().map(|m| Logged {
        name: &m.name,
        on_step: m.on_step,
        on_epoch: m.on_epoch,
        test_only: m.stage == Stage::Test,
        kind: m.kind(),
    });
    Known::new(logged, Some(Kind::Int))
}

fn unknown_metric(name: &str, place: &str, known: &Known<Option<Kind>>) -> String {
    let listing = known.listing();
    if known.is_test_only(name) {
        return format!(
            "metric `{name}` in {place} is logged only by `test_step`, so it is never available during `fit`: \
             use a training or validation metric, known metrics: {listing}"
        );
    }
    let hint = known
        .suggestion(name)
        .map_or(",".to_string(), |s| format!(", did you mean `{s}`?"));
    format!("unknown metric `{name}` in {place}{hint} known metrics: {listing}")
}

/// Lightning raises "could not find the monitored key" only after a validation run (S059), or never;
/// a metric of `test_step` alone is never there during `fit`.
fn check_monitor(cx: &Ctxt, monitor: &Arg<String>, known: &Known<Option<Kind>>) {
    if !known.contains(&monitor.value) {
        cx.error_spanned_by(
            &monitor.tokens,
            unknown_metric(&monitor.value, &format!("`{}`", monitor.key), known),
        );
    }
}

/// Lightning formats a missing placeholder as 0 and a bad format spec fails at the first save (G.1, G.2).
fn check_template(cx: &Ctxt, arg: &Arg<String>, known: &Known<Option<Kind>>) {
    let pieces = match template::parse(&arg.value) {
        Ok(pieces) => pieces,
        Err(reason) => {
            cx.error_spanned_by(
                &arg.tokens,
                format!("invalid `{}` template: {reason}", arg.key),
            );
            return;
        }
    };
    let mut reported: Vec<&str> = Vec::new();
    for field in pieces.iter().filter_map(Piece::as_field) {
        match known.get(&field.name) {
            None if !reported.contains(&field.name.as_str()) => {
                reported.push(&field.name);
                cx.error_spanned_by(
                    &arg.tokens,
                    unknown_metric(
                        &field.name,
                        &format!("`{}` placeholder `{{{}}}`", arg.key, field.name),
                        known,
                    ),
                );
            }
            Some(Some(kind)) => {
                if let Err(reason) = field.check_kind(*kind) {
                    cx.error_spanned_by(
                        &arg.tokens,
                        format!("invalid `{}` template: {reason}", arg.key),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Lightning: "Invalid value for save_top_k" and "No quantity for top_k to track" (B.1).
fn check_top_k(cx: &Ctxt, ckpt: &CallbackAttr) {
    let Some(k) = ckpt.int("top_k") else { return };
    if k.value < -1 {
        cx.error_spanned_by(
            &k.tokens,
            format!(
                "`top_k` must be -1 (keep all), 0 (none) or a number of files, found `{}`",
                k.value
            ),
        );
    } else if ckpt.string("monitor").is_none() && ![-1, 0, 1].contains(&k.value) {
        cx.error_spanned_by(
            &k.tokens,
            format!(
                "`top_k = {}` needs a `monitor`: without a monitored metric there is nothing to rank by, \
                 use `top_k = -1` to keep every checkpoint",
                k.value
            ),
        );
    }
}

/// The counting triggers: every N steps, every N epochs.
const COUNTED_TRIGGERS: [&str; 2] = ["every_n_train_steps", "every_n_epochs"];

/// Lightning: "Invalid value for every_n_train_steps / every_n_epochs" (B.1).
fn check_non_negative(cx: &Ctxt, ckpt: &CallbackAttr) {
    for arg in COUNTED_TRIGGERS.into_iter().filter_map(|k| ckpt.int(k)) {
        if arg.value < 0 {
            cx.error_spanned_by(
                &arg.tokens,
                format!(
                    "`{}` must be >= 0 (0 turns the trigger off), found `{}`",
                    arg.key, arg.value
                ),
            );
        }
    }
}

/// Lightning: "Combination of parameters … should be mutually exclusive" (B.1).
fn check_one_trigger(cx: &Ctxt, ckpt: &CallbackAttr) {
    let mut on: Vec<(usize, syn::Ident)> = COUNTED_TRIGGERS
        .into_iter()
        .filter_map(|k| ckpt.int(k))
        .filter(|arg| arg.value >= 1)
        .map(|arg| (arg.order, arg.key))
        .collect();
    if let Some(t) = ckpt.duration("train_time_interval") {
        on.push((t.order, t.key));
    }
    on.sort_by_key(|(order, _)| *order);
    if let [(_, first), rest @ ..] = on.as_slice() {
        for (_, key) in rest {
            cx.error_spanned_by(
                key,
                format!(
                    "`{key}` cannot be combined with `{first}`: a `#[checkpoint]` saves on one trigger, \
                     add another `#[checkpoint]` for a second one"
                ),
            );
        }
    }
}

/// The runtime refuses remote directories (`s3://…`).
fn check_dirpath(cx: &Ctxt, ckpt: &CallbackAttr) {
    if let Some(d) = ckpt.string("dirpath") {
        if d.value.contains("://") {
            cx.error_spanned_by(
                &d.tokens,
                format!("`dirpath` must be a local directory, found `{}`: remote file systems are not supported", d.value),
            );
        }
    }
}

/// Two callbacks with Lightning's same state key would overwrite each other's saved state (B.11).
fn check_distinct_state_keys(cx: &Ctxt, ckpts: &[CallbackAttr]) {
    let key = |c: &CallbackAttr| {
        let steps = c.int("every_n_train_steps").map(|a| a.value);
        let epochs = c.int("every_n_epochs").map(|a| a.value);
        let time = c.duration("train_time_interval").map(|a| a.value);
        let (steps, epochs) = checkpoint::triggers(steps, epochs, time.is_some());
        let mode = c.mode("mode").map_or(Mode::Min, |m| m.value);
        (
            c.string("monitor").map(|m| m.value),
            mode,
            steps,
            epochs,
            time,
        )
    };
    for (i, c) in ckpts.iter().enumerate() {
        if ckpts[..i].iter().any(|o| key(o) == key(c)) {
            cx.error_at(
                c.span,
                "this `#[checkpoint]` has the same `monitor`, `mode` and trigger as an earlier one, so both \
                 would save their state under one key: change one of them",
            );
        }
    }
}

/// Lightning's `EarlyStopping` has no default metric to watch: `monitor` is a required argument.
fn check_monitor_given(cx: &Ctxt, stopping: &CallbackAttr, known: &Known<Option<Kind>>) {
    if !stopping.written("monitor") {
        cx.error_at(
            stopping.span,
            format!(
                "`#[early_stopping]` needs a `monitor`, the metric it watches: \
                 `#[early_stopping(monitor = \"…\")]`, known metrics: {}",
                known.listing()
            ),
        );
    }
}

/// Two `EarlyStopping`s with Lightning's same state key, `EarlyStopping{'monitor': …, 'mode': …}`, would
/// overwrite each other's saved state.
fn check_distinct_early_stopping_keys(cx: &Ctxt, stoppings: &[CallbackAttr]) {
    let key = |s: &CallbackAttr| {
        let monitor = s.string("monitor")?.value;
        let mode = match s.mode("mode") {
            Some(m) => m.value,
            // A rejected mode is reported already: no guess at the key.
            None if s.written("mode") => return None,
            None => Mode::Min,
        };
        Some((monitor, mode))
    };
    for (i, s) in stoppings.iter().enumerate() {
        let Some(k) = key(s) else { continue };
        if stoppings[..i].iter().any(|o| key(o).as_ref() == Some(&k)) {
            cx.error_at(
                s.span,
                "this `#[early_stopping]` has the same `monitor` and `mode` as an earlier one, so both \
                 would save their state under one key: change one of them",
            );
        }
    }
}

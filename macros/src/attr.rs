//! Syntax of the helper attributes: `#[log(...)]`, `#[checkpoint(...)]`, `#[hparams]` and `#[skip]` into
//! typed values that keep their tokens' spans. Errors in a single argument (unknown, duplicate, wrong
//! type) are reported here; rules that relate several arguments live in `check.rs`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{token, Attribute, Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Meta, Token, UnOp};

use crate::ctxt::Ctxt;
use crate::duration::{self, Duration};
use fulgur_rules::suggest::did_you_mean;

use crate::suggest::hint;

/// A value with the tokens of the literal that gave it, and the key it was given for.
#[derive(Debug, Clone)]
pub struct Arg<T> {
    pub key: Ident,
    pub value: T,
    /// The value's tokens (the key's, for a bare flag), to point at.
    pub tokens: TokenStream,
    /// Position among the attribute's arguments, to point at the later of two conflicting ones.
    pub order: usize,
}

/// `true` when an attribute's last path segment is `name` (`#[log]`, `#[fulgur::log]`).
pub fn is(attr: &Attribute, name: &str) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == name)
}

/// The span of an attribute's path: what to point at for a misplaced attribute.
pub fn path_span(attr: &Attribute) -> Span {
    attr.path().span()
}

// ---------------------------------------------------------------------------------------------------
// #[log(name, name(prog_bar, on_epoch, reduce = "max"), "val/loss"(on_step = false))]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
}

#[derive(Debug, Clone)]
pub struct LogAttr {
    pub metrics: Vec<LogMetric>,
    /// `false` when a name was rejected: the names no longer line up with the values.
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub struct LogMetric {
    pub name: String,
    /// The name's token: an identifier or a string literal.
    pub name_span: Span,
    pub prog_bar: bool,
    pub on_step: Option<bool>,
    pub on_epoch: Option<bool>,
    pub reduce: Option<Reduce>,
}

const LOG_OPTIONS: &[&str] = &["prog_bar", "on_step", "on_epoch", "reduce"];

enum MetricName {
    Ident(Ident),
    Str(LitStr),
}

struct RawMetric {
    name: MetricName,
    options: Option<Punctuated<Meta, Token![,]>>,
}

impl Parse for RawMetric {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = if input.peek(LitStr) {
            MetricName::Str(input.parse()?)
        } else if input.peek(Ident::peek_any) {
            MetricName::Ident(input.call(Ident::parse_any)?)
        } else {
            return Err(input.error(
                "expected a metric name: an identifier such as `val_loss` or a string literal such as `\"val/loss\"`",
            ));
        };
        let options = if input.peek(token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            Some(content.parse_terminated(Meta::parse, Token![,])?)
        } else {
            None
        };
        Ok(RawMetric { name, options })
    }
}

pub fn parse_log(cx: &Ctxt, attr: &Attribute) -> Option<LogAttr> {
    let span = path_span(attr);
    let raw = match &attr.meta {
        Meta::Path(_) => Punctuated::new(),
        Meta::List(_) => {
            match attr.parse_args_with(Punctuated::<RawMetric, Token![,]>::parse_terminated) {
                Ok(raw) => raw,
                Err(e) => {
                    cx.syn_error(e);
                    return None;
                }
            }
        }
        Meta::NameValue(nv) => {
            cx.error_spanned_by(
                nv.eq_token,
                "expected `#[log(name, …)]` with the names of the returned values",
            );
            return None;
        }
    };
    if raw.is_empty() {
        cx.error_at(
            span,
            "`#[log]` needs the names of the values the step returns, such as `#[log(val_loss, val_acc)]`",
        );
        return None;
    }
    let mut metrics: Vec<LogMetric> = Vec::new();
    let mut complete = true;
    for raw in raw {
        let (name, name_span) = match &raw.name {
            MetricName::Ident(i) => (i.unraw().to_string(), i.span()),
            MetricName::Str(s) => (s.value(), s.span()),
        };
        if name.is_empty() {
            cx.error_at(name_span, "empty metric name in `#[log]`");
            complete = false;
            continue;
        }
        if raw.options.is_none()
            && matches!(raw.name, MetricName::Ident(_))
            && LOG_OPTIONS.contains(&name.as_str())
        {
            let owner = metrics.last().map_or("name", |m| m.name.as_str());
            cx.error_at(
                name_span,
                format!(
                    "`{name}` is an option of one metric, write it in parentheses after the metric's name: `{owner}({name})`"
                ),
            );
            complete = false;
            continue;
        }
        let mut metric = LogMetric {
            name,
            name_span,
            prog_bar: false,
            on_step: None,
            on_epoch: None,
            reduce: None,
        };
        let mut seen: Vec<String> = Vec::new();
        for option in raw.options.iter().flatten() {
            let Some(key) = option.path().get_ident() else {
                cx.error_spanned_by(
                    option.path(),
                    format!(
                        "unknown `#[log]` option `{}`{}",
                        option.path().to_token_stream(),
                        hint("", LOG_OPTIONS)
                    ),
                );
                continue;
            };
            let key_name = key.unraw().to_string();
            if !LOG_OPTIONS.contains(&key_name.as_str()) {
                cx.error_spanned_by(
                    key,
                    format!(
                        "unknown `#[log]` option `{key_name}`{}",
                        hint(&key_name, LOG_OPTIONS)
                    ),
                );
                continue;
            }
            if seen.contains(&key_name) {
                cx.error_spanned_by(
                    key,
                    format!(
                        "duplicate `#[log]` option `{key_name}` for metric `{}`",
                        metric.name
                    ),
                );
                continue;
            }
            seen.push(key_name.clone());
            let what = "#[log]";
            match key_name.as_str() {
                "prog_bar" => {
                    if let Some(v) = bool_value(cx, what, key, option) {
                        metric.prog_bar = v;
                    }
                }
                "on_step" => metric.on_step = bool_value(cx, what, key, option),
                "on_epoch" => metric.on_epoch = bool_value(cx, what, key, option),
                _ => {
                    if let Some((s, lit)) = str_value(cx, what, key, option) {
                        metric.reduce = match s.as_str() {
                            "mean" => Some(Reduce::Mean),
                            "sum" => Some(Reduce::Sum),
                            "max" => Some(Reduce::Max),
                            "min" => Some(Reduce::Min),
                            other => {
                                let choices = ["mean", "sum", "max", "min"];
                                let hint = did_you_mean(other, choices)
                                    .map_or(String::new(), |s| {
                                        format!(", did you mean `\"{s}\"`?")
                                    });
                                cx.error_spanned_by(
                                    lit,
                                    format!("`reduce` must be `\"mean\"`, `\"sum\"`, `\"max\"` or `\"min\"`, found `\"{other}\"`{hint}"),
                                );
                                None
                            }
                        };
                    }
                }
            }
        }
        metrics.push(metric);
    }
    Some(LogAttr { metrics, complete })
}

// ---------------------------------------------------------------------------------------------------
// #[checkpoint(monitor = "val_loss", mode = "min", top_k = 2, filename = "…", every_n_epochs = 1, …)]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveLast {
    Yes,
    No,
    Link,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

#[derive(Debug, Clone)]
pub struct CheckpointAttr {
    /// The `checkpoint` path.
    pub span: Span,
    pub dirpath: Option<Arg<String>>,
    pub filename: Option<Arg<String>>,
    pub monitor: Option<Arg<String>>,
    pub verbose: Option<Arg<bool>>,
    pub save_last: Option<Arg<SaveLast>>,
    pub top_k: Option<Arg<i64>>,
    pub save_on_exception: Option<Arg<bool>>,
    pub save_weights_only: Option<Arg<bool>>,
    pub mode: Option<Arg<Mode>>,
    pub auto_insert_metric_name: Option<Arg<bool>>,
    pub every_n_train_steps: Option<Arg<i64>>,
    pub train_time_interval: Option<Arg<Duration>>,
    pub every_n_epochs: Option<Arg<i64>>,
    pub save_on_train_epoch_end: Option<Arg<bool>>,
    pub enable_version_counter: Option<Arg<bool>>,
    pub join_char: Option<Arg<String>>,
    pub equals_char: Option<Arg<String>>,
    pub name_last: Option<Arg<String>>,
    pub file_extension: Option<Arg<String>>,
    pub starting_version: Option<Arg<u64>>,
}

pub const CHECKPOINT_ARGS: &[&str] = &[
    "dirpath",
    "filename",
    "monitor",
    "verbose",
    "save_last",
    "top_k",
    "save_on_exception",
    "save_weights_only",
    "mode",
    "auto_insert_metric_name",
    "every_n_train_steps",
    "train_time_interval",
    "every_n_epochs",
    "save_on_train_epoch_end",
    "enable_version_counter",
    "join_char",
    "equals_char",
    "name_last",
    "file_extension",
    "starting_version",
];

/// Names users bring from Lightning or elsewhere, and the argument they mean.
fn checkpoint_alias(key: &str) -> Option<&'static str> {
    Some(match key {
        "save_top_k" | "k" => "top_k",
        "every_n_steps" | "every_n_train_step" => "every_n_train_steps",
        "dir" | "dir_path" | "directory" | "path" => "dirpath",
        "time_interval" | "interval" => "train_time_interval",
        "monitored" | "metric" => "monitor",
        _ => return None,
    })
}

pub fn parse_checkpoint(cx: &Ctxt, attr: &Attribute) -> Option<CheckpointAttr> {
    let args = match &attr.meta {
        Meta::Path(_) => Punctuated::new(),
        Meta::List(_) => {
            match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
                Ok(args) => args,
                Err(e) => {
                    cx.syn_error(e);
                    return None;
                }
            }
        }
        Meta::NameValue(nv) => {
            cx.error_spanned_by(nv.eq_token, "expected `#[checkpoint(argument = value, …)]`");
            return None;
        }
    };
    let mut out = CheckpointAttr {
        span: path_span(attr),
        dirpath: None,
        filename: None,
        monitor: None,
        verbose: None,
        save_last: None,
        top_k: None,
        save_on_exception: None,
        save_weights_only: None,
        mode: None,
        auto_insert_metric_name: None,
        every_n_train_steps: None,
        train_time_interval: None,
        every_n_epochs: None,
        save_on_train_epoch_end: None,
        enable_version_counter: None,
        join_char: None,
        equals_char: None,
        name_last: None,
        file_extension: None,
        starting_version: None,
    };
    let mut seen: Vec<String> = Vec::new();
    let what = "#[checkpoint]";
    for (order, meta) in args.iter().enumerate() {
        let Some(key) = meta.path().get_ident() else {
            cx.error_spanned_by(
                meta.path(),
                format!(
                    "unknown `#[checkpoint]` argument `{}`",
                    meta.path().to_token_stream()
                ),
            );
            continue;
        };
        let name = key.unraw().to_string();
        if !CHECKPOINT_ARGS.contains(&name.as_str()) {
            let msg = match checkpoint_alias(&name) {
                Some(s) => {
                    format!("unknown `#[checkpoint]` argument `{name}`, did you mean `{s}`?")
                }
                None => format!(
                    "unknown `#[checkpoint]` argument `{name}`{}",
                    hint(&name, CHECKPOINT_ARGS)
                ),
            };
            cx.error_spanned_by(key, msg);
            continue;
        }
        if seen.contains(&name) {
            cx.error_spanned_by(key, format!("duplicate `#[checkpoint]` argument `{name}`"));
            continue;
        }
        seen.push(name.clone());
        let string = || str_value(cx, what, key, meta).map(|(s, lit)| new_arg(key, order, s, lit));
        let boolean = || {
            let tokens = value_tokens(meta);
            bool_value(cx, what, key, meta).map(|b| new_arg(key, order, b, tokens))
        };
        let integer =
            || int_value(cx, what, key, meta).map(|(v, tokens)| new_arg(key, order, v, tokens));
        match name.as_str() {
            "dirpath" => out.dirpath = string(),
            "filename" => out.filename = string(),
            "monitor" => out.monitor = string(),
            "join_char" => out.join_char = string(),
            "equals_char" => out.equals_char = string(),
            "name_last" => out.name_last = string(),
            "file_extension" => out.file_extension = string(),
            "verbose" => out.verbose = boolean(),
            "save_on_exception" => out.save_on_exception = boolean(),
            "save_weights_only" => out.save_weights_only = boolean(),
            "auto_insert_metric_name" => out.auto_insert_metric_name = boolean(),
            "save_on_train_epoch_end" => out.save_on_train_epoch_end = boolean(),
            "enable_version_counter" => out.enable_version_counter = boolean(),
            "top_k" => out.top_k = integer(),
            "every_n_train_steps" => out.every_n_train_steps = integer(),
            "every_n_epochs" => out.every_n_epochs = integer(),
            "starting_version" => {
                out.starting_version = integer().and_then(|a| match u64::try_from(a.value) {
                    Ok(v) => Some(Arg {
                        key: a.key,
                        value: v,
                        tokens: a.tokens,
                        order: a.order,
                    }),
                    Err(_) => {
                        cx.error_spanned_by(
                            &a.tokens,
                            format!("`starting_version` must be >= 0, found `{}`", a.value),
                        );
                        None
                    }
                })
            }
            "save_last" => {
                out.save_last =
                    save_last_value(cx, key, meta).map(|(v, tokens)| new_arg(key, order, v, tokens))
            }
            "mode" => {
                out.mode = str_value(cx, what, key, meta).and_then(|(s, lit)| match s.as_str() {
                    "min" => Some(new_arg(key, order, Mode::Min, lit)),
                    "max" => Some(new_arg(key, order, Mode::Max, lit)),
                    other => {
                        let hint = did_you_mean(other, ["min", "max"])
                            .map_or(String::new(), |s| format!(", did you mean `\"{s}\"`?"));
                        cx.error_spanned_by(
                            lit,
                            format!(
                                "`mode` must be `\"min\"` or `\"max\"`, found `\"{other}\"`{hint}"
                            ),
                        );
                        None
                    }
                })
            }
            _ => {
                out.train_time_interval =
                    str_value(cx, what, key, meta).and_then(|(s, lit)| match duration::parse(&s) {
                        Ok(d) => Some(new_arg(key, order, d, lit)),
                        Err(e) => {
                            cx.error_spanned_by(lit, format!("invalid `train_time_interval`: {e}"));
                            None
                        }
                    })
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------------
// Values

fn new_arg<T>(key: &Ident, order: usize, value: T, tokens: impl ToTokens) -> Arg<T> {
    Arg {
        key: key.clone(),
        value,
        tokens: tokens.to_token_stream(),
        order,
    }
}

fn value_tokens(meta: &Meta) -> TokenStream {
    match meta {
        Meta::NameValue(nv) => nv.value.to_token_stream(),
        other => other.path().to_token_stream(),
    }
}

/// The literal of `key = <literal>`, looking through the invisible groups `macro_rules!` adds.
fn literal(meta: &Meta) -> Option<&Expr> {
    match meta {
        Meta::NameValue(nv) => {
            let mut e = &nv.value;
            while let Expr::Group(g) = e {
                e = &g.expr;
            }
            Some(e)
        }
        _ => None,
    }
}

fn shown(tokens: impl ToTokens) -> String {
    let s = tokens.to_token_stream().to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A value of the wrong type or shape: says what `key` expects and what it found.
fn ill_typed(cx: &Ctxt, what: &str, key: &Ident, meta: &Meta, expects: &str, example: &str) {
    match meta {
        Meta::NameValue(nv) => cx.error_spanned_by(
            &nv.value,
            format!(
                "`{what}` argument `{key}` expects {expects}, found `{}`",
                shown(&nv.value)
            ),
        ),
        Meta::Path(_) => cx.error_spanned_by(
            key,
            format!("`{what}` argument `{key}` needs a value: `{key} = {example}`"),
        ),
        Meta::List(list) => cx.error_at(
            list.delimiter.span().join(),
            format!("`{what}` argument `{key}` takes a value with `=`: `{key} = {example}`"),
        ),
    }
}

fn str_value<'m>(
    cx: &Ctxt,
    what: &str,
    key: &Ident,
    meta: &'m Meta,
) -> Option<(String, &'m LitStr)> {
    match literal(meta) {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        })) => Some((s.value(), s)),
        _ => {
            ill_typed(cx, what, key, meta, "a string literal", "\"…\"");
            None
        }
    }
}

/// `key = true | false`, or a bare `key` meaning `true`.
fn bool_value(cx: &Ctxt, what: &str, key: &Ident, meta: &Meta) -> Option<bool> {
    match (meta, literal(meta)) {
        (Meta::Path(_), _) => Some(true),
        (
            _,
            Some(Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            })),
        ) => Some(b.value()),
        _ => {
            ill_typed(cx, what, key, meta, "`true` or `false`", "true");
            None
        }
    }
}

fn int_value(cx: &Ctxt, what: &str, key: &Ident, meta: &Meta) -> Option<(i64, TokenStream)> {
    let (negative, lit, expr) = match literal(meta) {
        Some(
            e @ Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }),
        ) => (false, i, e),
        Some(
            e @ Expr::Unary(ExprUnary {
                op: UnOp::Neg(_),
                expr,
                ..
            }),
        ) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => (true, i, e),
            _ => {
                ill_typed(cx, what, key, meta, "an integer literal", "1");
                return None;
            }
        },
        _ => {
            ill_typed(cx, what, key, meta, "an integer literal", "1");
            return None;
        }
    };
    match lit.base10_parse::<i64>() {
        Ok(v) => Some((if negative { -v } else { v }, expr.to_token_stream())),
        Err(_) => {
            cx.error_spanned_by(expr, format!("`{what}` argument `{key}` is out of range"));
            None
        }
    }
}

/// `save_last = true | false | "link"`.
fn save_last_value(cx: &Ctxt, key: &Ident, meta: &Meta) -> Option<(SaveLast, TokenStream)> {
    match (meta, literal(meta)) {
        (Meta::Path(p), _) => Some((SaveLast::Yes, p.to_token_stream())),
        (
            _,
            Some(Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            })),
        ) => Some((
            if b.value() {
                SaveLast::Yes
            } else {
                SaveLast::No
            },
            b.to_token_stream(),
        )),
        (
            _,
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            })),
        ) if s.value() == "link" => Some((SaveLast::Link, s.to_token_stream())),
        (
            _,
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            })),
        ) => {
            cx.error_spanned_by(
                s,
                format!(
                    "`save_last` must be `true`, `false` or `\"link\"`, found `\"{}\"`",
                    s.value()
                ),
            );
            None
        }
        _ => {
            ill_typed(
                cx,
                "#[checkpoint]",
                key,
                meta,
                "`true`, `false` or `\"link\"`",
                "true",
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// #[hparams], #[skip]: flags on fields of `#[derive(ModuleState)]`.

/// Checks that a field flag has no arguments.
pub fn parse_flag(cx: &Ctxt, attr: &Attribute, name: &str) {
    if !matches!(attr.meta, Meta::Path(_)) {
        let span = match &attr.meta {
            Meta::List(l) => l.delimiter.span().join(),
            Meta::NameValue(nv) => nv.eq_token.spans[0],
            Meta::Path(p) => p.span(),
        };
        cx.error_at(span, format!("`#[{name}]` takes no arguments"));
    }
}

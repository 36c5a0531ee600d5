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
use fulgur_rules::checkpoint::{self, Argument, Mode, SaveLast, ValueKind};
use fulgur_rules::suggest::did_you_mean;

use crate::suggest::{alternatives, hint};

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

/// A `#[checkpoint]` argument's value, of the kind its row of the shared table gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `Str`, `Template` and `Metric`.
    Str(String),
    Bool(bool),
    Int(i64),
    Count(u64),
    SaveLast(SaveLast),
    Mode(Mode),
    Duration(Duration),
}

#[derive(Debug, Clone)]
pub struct CheckpointAttr {
    /// The `checkpoint` path.
    pub span: Span,
    /// The arguments given, each at most once, in the order written, with their rows of the table.
    pub args: Vec<(&'static Argument, Arg<Value>)>,
}

impl CheckpointAttr {
    /// The argument `key` when it is given, its value taken out by `value`.
    fn get<T>(&self, key: &str, value: impl Fn(&Value) -> Option<T>) -> Option<Arg<T>> {
        debug_assert!(
            checkpoint::argument(key).is_some(),
            "`{key}` is no `#[checkpoint]` argument"
        );
        let (_, arg) = self.args.iter().find(|(row, _)| row.key == key)?;
        Some(Arg {
            key: arg.key.clone(),
            value: value(&arg.value)?,
            tokens: arg.tokens.clone(),
            order: arg.order,
        })
    }

    pub fn string(&self, key: &str) -> Option<Arg<String>> {
        self.get(key, |v| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub fn int(&self, key: &str) -> Option<Arg<i64>> {
        self.get(key, |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
    }

    pub fn duration(&self, key: &str) -> Option<Arg<Duration>> {
        self.get(key, |v| match v {
            Value::Duration(d) => Some(*d),
            _ => None,
        })
    }

    pub fn mode(&self, key: &str) -> Option<Arg<Mode>> {
        self.get(key, |v| match v {
            Value::Mode(m) => Some(*m),
            _ => None,
        })
    }

    /// The given arguments of `kind`, with their string values (`Template`, `Metric`).
    pub fn strings_of(&self, kind: ValueKind) -> impl Iterator<Item = Arg<String>> + '_ {
        self.args
            .iter()
            .filter(move |(row, _)| row.kind == kind)
            .filter_map(|(row, _)| self.string(row.key))
    }
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
        args: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
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
        let Some(argument) = checkpoint::argument(&name) else {
            let hint = match checkpoint::alias(&name) {
                Some(meant) => format!(", did you mean `{}`?", meant.key),
                None => hint(&name, &checkpoint::keys().collect::<Vec<_>>()),
            };
            cx.error_spanned_by(
                key,
                format!("unknown `#[checkpoint]` argument `{name}`{hint}"),
            );
            continue;
        };
        if seen.contains(&argument.key) {
            cx.error_spanned_by(key, format!("duplicate `#[checkpoint]` argument `{name}`"));
            continue;
        }
        seen.push(argument.key);
        if let Some((value, tokens)) = checkpoint_value(cx, argument.kind, key, meta) {
            out.args
                .push((argument, new_arg(key, order, value, tokens)));
        }
    }
    Some(out)
}

/// The value of `key = …` read as the table's `kind` says, with the tokens to point at.
fn checkpoint_value(
    cx: &Ctxt,
    kind: ValueKind,
    key: &Ident,
    meta: &Meta,
) -> Option<(Value, TokenStream)> {
    let what = "#[checkpoint]";
    let string = || str_value(cx, what, key, meta).map(|(s, lit)| (s, lit.to_token_stream()));
    match kind {
        ValueKind::Str | ValueKind::Template | ValueKind::Metric => {
            string().map(|(s, tokens)| (Value::Str(s), tokens))
        }
        ValueKind::Bool => {
            bool_value(cx, what, key, meta).map(|b| (Value::Bool(b), value_tokens(meta)))
        }
        ValueKind::Int => int_value(cx, what, key, meta).map(|(v, tokens)| (Value::Int(v), tokens)),
        // `key = 3`, at least 0.
        ValueKind::Count => {
            int_value(cx, what, key, meta).and_then(|(v, tokens)| match u64::try_from(v) {
                Ok(n) => Some((Value::Count(n), tokens)),
                Err(_) => {
                    cx.error_spanned_by(&tokens, format!("`{key}` must be >= 0, found `{v}`"));
                    None
                }
            })
        }
        ValueKind::SaveLast => {
            save_last_value(cx, key, meta).map(|(v, tokens)| (Value::SaveLast(v), tokens))
        }
        // `mode = "min" | "max"`.
        ValueKind::Mode => string().and_then(|(s, tokens)| match Mode::from_name(&s) {
            Some(m) => Some((Value::Mode(m), tokens)),
            None => {
                let names = Mode::ALL.map(Mode::as_str);
                let hint = did_you_mean(&s, names)
                    .map_or(String::new(), |s| format!(", did you mean `\"{s}\"`?"));
                let quoted = names.map(|n| format!("\"{n}\""));
                let expected = alternatives(quoted.iter().map(String::as_str));
                cx.error_spanned_by(
                    &tokens,
                    format!("`{key}` must be {expected}, found `\"{s}\"`{hint}"),
                );
                None
            }
        }),
        // `train_time_interval = "1h30min"`.
        ValueKind::Duration => string().and_then(|(s, tokens)| match duration::parse(&s) {
            Ok(d) => Some((Value::Duration(d), tokens)),
            Err(e) => {
                cx.error_spanned_by(&tokens, format!("invalid `{key}`: {e}"));
                None
            }
        }),
    }
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

// ---------------------------------------------------------------------------------------------------
// #[module_state(build = path)]: on the struct of `#[derive(ModuleState)]`.

/// The function that builds the module from its hyperparameters, replacing the generated body of
/// `from_hparams`.
pub fn parse_module_state(cx: &Ctxt, attr: &Attribute) -> Option<syn::ExprPath> {
    let list = match &attr.meta {
        Meta::List(l) => l,
        other => {
            cx.error_spanned_by(
                other,
                "`#[module_state]` takes an argument: `#[module_state(build = path::to_fn)]`",
            );
            return None;
        }
    };
    let metas = match list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
        Ok(m) => m,
        Err(e) => {
            cx.syn_error(e);
            return None;
        }
    };
    if metas.is_empty() {
        cx.error_spanned_by(
            attr,
            "`#[module_state]` takes an argument: `#[module_state(build = path::to_fn)]`",
        );
    }
    let mut build: Option<syn::ExprPath> = None;
    for meta in &metas {
        let Some(key) = meta.path().get_ident() else {
            cx.error_spanned_by(meta.path(), "expected `build = path::to_fn`");
            continue;
        };
        if key != "build" {
            cx.error_spanned_by(
                key,
                format!(
                    "unknown `#[module_state]` argument `{key}`, expected `build = path::to_fn`"
                ),
            );
            continue;
        }
        let value = match meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Path(p) => Some(p.clone()),
                other => {
                    cx.error_spanned_by(
                        other,
                        format!(
                            "`build` expects the path of a function `fn(Hparams, &D) -> Result<Self>`, found `{}`",
                            shown(other)
                        ),
                    );
                    None
                }
            },
            _ => {
                cx.error_spanned_by(
                    meta,
                    "`build` expects a value: `#[module_state(build = path::to_fn)]`",
                );
                None
            }
        };
        if build.is_some() {
            cx.error_spanned_by(key, "duplicate `#[module_state]` argument `build`");
        } else {
            build = value;
        }
    }
    build
}

// ---------------------------------------------------------------------------------------------------
// #[lightning_module(manual_optimization)]

/// The arguments of `#[lightning_module]`.
#[derive(Default)]
pub struct ModuleArgs {
    /// `manual_optimization`: the training step steps the optimizers itself (Lightning's
    /// `automatic_optimization = False`); the flag's token, for messages.
    pub manual_optimization: Option<Ident>,
}

const MODULE_ARGS: &[&str] = &["manual_optimization"];

pub fn parse_lightning_module(cx: &Ctxt, args: TokenStream) -> ModuleArgs {
    let mut out = ModuleArgs::default();
    if args.is_empty() {
        return out;
    }
    let parser = Punctuated::<Meta, Token![,]>::parse_terminated;
    let metas = match syn::parse::Parser::parse2(parser, args) {
        Ok(metas) => metas,
        Err(e) => {
            cx.syn_error(e);
            return out;
        }
    };
    for meta in &metas {
        let Some(key) = meta.path().get_ident() else {
            cx.error_spanned_by(
                meta.path(),
                "expected `manual_optimization`, the only `#[lightning_module]` argument",
            );
            continue;
        };
        // A misspelled or ill-written flag still says what the user means: the module is modelled
        // as manual, so that its `training_step` is not reported as well.
        if key != "manual_optimization" {
            match did_you_mean(&key.to_string(), MODULE_ARGS.iter().copied()) {
                Some(s) => cx.error_spanned_by(
                    key,
                    format!("unknown `#[lightning_module]` argument `{key}`, did you mean `{s}`?"),
                ),
                None => {
                    cx.error_spanned_by(
                        key,
                        format!(
                            "unknown `#[lightning_module]` argument `{key}`, expected `manual_optimization`: \
                             checkpoint policies go in `#[checkpoint(…)]` attributes"
                        ),
                    );
                    continue;
                }
            }
        }
        let no_value =
            "`manual_optimization` takes no value: `#[lightning_module(manual_optimization)]`";
        match meta {
            Meta::Path(_) => {}
            Meta::List(l) => cx.error_at(l.delimiter.span().join(), no_value),
            Meta::NameValue(nv) => cx.error_spanned_by(&nv.value, no_value),
        }
        if out.manual_optimization.is_some() {
            cx.error_spanned_by(
                key,
                "duplicate `#[lightning_module]` argument `manual_optimization`",
            );
        } else {
            out.manual_optimization = Some(key.clone());
        }
    }
    out
}

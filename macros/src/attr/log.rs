//! `#[log(name, name(prog_bar, on_epoch, reduce = "max"), "val/loss"(on_step = false))]`: the names of
//! the values a step returns, with their options.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{token, Attribute, Ident, LitStr, Meta, Token};

use super::value::{bool_value, str_value};
use super::{list, path_span};
use crate::ctxt::Ctxt;
use crate::suggest::hint;
use fulgur_rules::suggest::did_you_mean;

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
    let raw: Punctuated<RawMetric, Token![,]> = list(
        cx,
        attr,
        "expected `#[log(name, …)]` with the names of the returned values",
    )?;
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

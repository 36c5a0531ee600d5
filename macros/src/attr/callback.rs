//! The callback attributes, each read from its table in `fulgur_rules`:
//! `#[checkpoint(monitor = "val_loss", mode = "min", top_k = 2, filename = "…", every_n_epochs = 1, …)]`
//! and `#[early_stopping(monitor = "val_loss", patience = 3, min_delta = 0.001, …)]`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Ident, Lit, Meta, Token};

use super::value::{
    bool_value, float_value, ill_typed, int_value, literal, new_arg, str_value, value_tokens,
};
use super::{is, list, path_span, Arg};
use crate::ctxt::Ctxt;
use crate::duration::{self, Duration};
use crate::suggest::{alternatives, hint};
use fulgur_rules::checkpoint::{self, Argument, Mode, SaveLast, ValueKind};
use fulgur_rules::early_stopping;
use fulgur_rules::suggest::did_you_mean;

/// A callback declared by an attribute on the `#[lightning_module]` impl: one callback per attribute,
/// built with the builder method each argument's row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// `#[checkpoint]`: a `ModelCheckpoint`.
    Checkpoint,
    /// `#[early_stopping]`: an `EarlyStopping`.
    EarlyStopping,
}

impl Callback {
    pub const ALL: [Callback; 2] = [Callback::Checkpoint, Callback::EarlyStopping];

    /// The attribute's name, as the user writes it.
    pub fn name(self) -> &'static str {
        match self {
            Callback::Checkpoint => "checkpoint",
            Callback::EarlyStopping => "early_stopping",
        }
    }

    /// The runtime's callback type, in `fulgur::callbacks`.
    pub fn type_name(self) -> &'static str {
        match self {
            Callback::Checkpoint => "ModelCheckpoint",
            Callback::EarlyStopping => "EarlyStopping",
        }
    }

    /// The attribute's arguments: its shared table.
    pub fn arguments(self) -> &'static [Argument] {
        match self {
            Callback::Checkpoint => checkpoint::ARGUMENTS,
            Callback::EarlyStopping => early_stopping::ARGUMENTS,
        }
    }

    /// The callback `attr` declares, if it is one of these attributes.
    pub fn of(attr: &Attribute) -> Option<Self> {
        Self::ALL.into_iter().find(|c| is(attr, c.name()))
    }

    /// The argument named `key`.
    fn argument(self, key: &str) -> Option<&'static Argument> {
        self.arguments().iter().find(|a| a.key == key)
    }

    /// The argument that `name`, no key itself, is another name for (`save_top_k` for `top_k`).
    fn alias(self, name: &str) -> Option<&'static Argument> {
        self.arguments().iter().find(|a| a.aliases.contains(&name))
    }
}

/// A callback attribute's argument value, of the kind its row of the shared table gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `Str`, `Template` and `Metric`.
    Str(String),
    Bool(bool),
    Int(i64),
    Count(u64),
    Float(f64),
    SaveLast(SaveLast),
    Mode(Mode),
    Duration(Duration),
}

#[derive(Debug, Clone)]
pub struct CallbackAttr {
    pub callback: Callback,
    /// The attribute's path (`checkpoint`).
    pub span: Span,
    /// The arguments given, each at most once, in the order written, with their rows of the table.
    pub args: Vec<(&'static Argument, Arg<Value>)>,
    /// The keys written, including those whose value was rejected (already reported).
    pub written: Vec<&'static str>,
}

impl CallbackAttr {
    /// The argument `key` when it is given, its value taken out by `value`.
    fn get<T>(&self, key: &str, value: impl Fn(&Value) -> Option<T>) -> Option<Arg<T>> {
        debug_assert!(
            self.callback.argument(key).is_some(),
            "`{key}` is no `#[{}]` argument",
            self.callback.name()
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

    /// `true` when `key` is written, even with a value that was rejected.
    pub fn written(&self, key: &str) -> bool {
        self.written.contains(&key)
    }

    /// The given arguments of `kind`, with their string values (`Template`, `Metric`).
    pub fn strings_of(&self, kind: ValueKind) -> impl Iterator<Item = Arg<String>> + '_ {
        self.args
            .iter()
            .filter(move |(row, _)| row.kind == kind)
            .filter_map(|(row, _)| self.string(row.key))
    }
}

/// Reads a callback attribute: `#[checkpoint(key = value, …)]`, `#[early_stopping(key = value, …)]`.
pub fn parse_callback(cx: &Ctxt, callback: Callback, attr: &Attribute) -> Option<CallbackAttr> {
    let what = format!("#[{}]", callback.name());
    let expected = format!("expected `#[{}(argument = value, …)]`", callback.name());
    let args: Punctuated<Meta, Token![,]> = list(cx, attr, &expected)?;
    let mut out = CallbackAttr {
        callback,
        span: path_span(attr),
        args: Vec::new(),
        written: Vec::new(),
    };
    for (order, meta) in args.iter().enumerate() {
        let Some(key) = meta.path().get_ident() else {
            cx.error_spanned_by(
                meta.path(),
                format!(
                    "unknown `{what}` argument `{}`",
                    meta.path().to_token_stream()
                ),
            );
            continue;
        };
        let name = key.unraw().to_string();
        let Some(argument) = callback.argument(&name) else {
            let hint = match callback.alias(&name) {
                Some(meant) => format!(", did you mean `{}`?", meant.key),
                None => {
                    let keys: Vec<&str> = callback.arguments().iter().map(|a| a.key).collect();
                    hint(&name, &keys)
                }
            };
            cx.error_spanned_by(key, format!("unknown `{what}` argument `{name}`{hint}"));
            continue;
        };
        if out.written.contains(&argument.key) {
            cx.error_spanned_by(key, format!("duplicate `{what}` argument `{name}`"));
            continue;
        }
        out.written.push(argument.key);
        if let Some((value, tokens)) = read_value(cx, &what, argument.kind, key, meta) {
            out.args
                .push((argument, new_arg(key, order, value, tokens)));
        }
    }
    Some(out)
}

/// The value of `key = …` read as the table's `kind` says, with the tokens to point at.
fn read_value(
    cx: &Ctxt,
    what: &str,
    kind: ValueKind,
    key: &Ident,
    meta: &Meta,
) -> Option<(Value, TokenStream)> {
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
        ValueKind::Float => {
            float_value(cx, what, key, meta).map(|(v, tokens)| (Value::Float(v), tokens))
        }
        ValueKind::SaveLast => {
            save_last_value(cx, what, key, meta).map(|(v, tokens)| (Value::SaveLast(v), tokens))
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

/// `save_last = true | false | "link"`.
fn save_last_value(
    cx: &Ctxt,
    what: &str,
    key: &Ident,
    meta: &Meta,
) -> Option<(SaveLast, TokenStream)> {
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
            ill_typed(cx, what, key, meta, "`true`, `false` or `\"link\"`", "true");
            None
        }
    }
}

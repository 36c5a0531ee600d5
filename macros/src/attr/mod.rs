//! Syntax of the helper attributes: `#[log(...)]`, `#[checkpoint(...)]`, `#[early_stopping(...)]`,
//! `#[hparams]` and `#[skip]` into typed values that keep their tokens' spans. Errors in a single argument
//! (unknown, duplicate, wrong type) are reported here; rules that relate several arguments live in
//! `check.rs`.
//!
//! `log.rs` reads `#[log]`; `callback.rs` the callback attributes, from their shared tables; `value.rs`
//! the literals both read.

mod callback;
mod log;
mod value;

pub use callback::{parse_callback, Callback, CallbackAttr, Value};
pub use log::{parse_log, LogAttr, Reduce};

use proc_macro2::{Span, TokenStream};
use syn::parse::Parse;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Attribute, Expr, Ident, Meta, Token};

use crate::ctxt::Ctxt;
use fulgur_rules::suggest::did_you_mean;

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

/// `true` for the helper attributes `#[lightning_module]` consumes: `#[log]` and the callbacks'.
pub fn is_helper(attr: &Attribute) -> bool {
    is(attr, "log") || Callback::of(attr).is_some()
}

/// The span of an attribute's path: what to point at for a misplaced attribute.
pub fn path_span(attr: &Attribute) -> Span {
    attr.path().span()
}

/// The comma-separated items of `#[name(item, …)]`, none for a bare `#[name]`; `#[name = …]` is an
/// error that says what was `expected`.
fn list<T: Parse>(cx: &Ctxt, attr: &Attribute, expected: &str) -> Option<Punctuated<T, Token![,]>> {
    match &attr.meta {
        Meta::Path(_) => Some(Punctuated::new()),
        Meta::List(_) => match attr.parse_args_with(Punctuated::<T, Token![,]>::parse_terminated) {
            Ok(items) => Some(items),
            Err(e) => {
                cx.syn_error(e);
                None
            }
        },
        Meta::NameValue(nv) => {
            cx.error_spanned_by(nv.eq_token, expected);
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
                            value::shown(other)
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

//! The literal values of attribute arguments: each reader reports a value of the wrong type or shape,
//! pointing at it, and returns `None`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Meta, UnOp};

use super::Arg;
use crate::ctxt::Ctxt;

pub(super) fn new_arg<T>(key: &Ident, order: usize, value: T, tokens: impl ToTokens) -> Arg<T> {
    Arg {
        key: key.clone(),
        value,
        tokens: tokens.to_token_stream(),
        order,
    }
}

pub(super) fn value_tokens(meta: &Meta) -> TokenStream {
    match meta {
        Meta::NameValue(nv) => nv.value.to_token_stream(),
        other => other.path().to_token_stream(),
    }
}

/// The literal of `key = <literal>`, looking through the invisible groups `macro_rules!` adds.
pub(super) fn literal(meta: &Meta) -> Option<&Expr> {
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

pub(super) fn shown(tokens: impl ToTokens) -> String {
    let s = tokens.to_token_stream().to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A value of the wrong type or shape: says what `key` expects and what it found.
pub(super) fn ill_typed(
    cx: &Ctxt,
    what: &str,
    key: &Ident,
    meta: &Meta,
    expects: &str,
    example: &str,
) {
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

pub(super) fn str_value<'m>(
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
pub(super) fn bool_value(cx: &Ctxt, what: &str, key: &Ident, meta: &Meta) -> Option<bool> {
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

/// `<literal>` or `-<literal>`: whether it is negated, the literal, and the whole expression.
fn signed(meta: &Meta) -> Option<(bool, &Lit, &Expr)> {
    let e = literal(meta)?;
    match e {
        Expr::Lit(ExprLit { lit, .. }) => Some((false, lit, e)),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit { lit, .. }) => Some((true, lit, e)),
            _ => None,
        },
        _ => None,
    }
}

/// `key = 3` or `key = -1`.
pub(super) fn int_value(
    cx: &Ctxt,
    what: &str,
    key: &Ident,
    meta: &Meta,
) -> Option<(i64, TokenStream)> {
    let Some((negative, Lit::Int(lit), expr)) = signed(meta) else {
        ill_typed(cx, what, key, meta, "an integer literal", "1");
        return None;
    };
    match lit.base10_parse::<i64>() {
        Ok(v) => Some((if negative { -v } else { v }, expr.to_token_stream())),
        Err(_) => {
            cx.error_spanned_by(expr, format!("`{what}` argument `{key}` is out of range"));
            None
        }
    }
}

/// `key = 0.01`, `key = -1e-3` or `key = 2`: a float or an integer literal.
pub(super) fn float_value(
    cx: &Ctxt,
    what: &str,
    key: &Ident,
    meta: &Meta,
) -> Option<(f64, TokenStream)> {
    let (negative, parsed, expr) = match signed(meta) {
        Some((negative, Lit::Float(f), expr)) => (negative, f.base10_parse::<f64>(), expr),
        Some((negative, Lit::Int(i), expr)) => (negative, i.base10_parse::<f64>(), expr),
        _ => {
            ill_typed(cx, what, key, meta, "a number", "0.01");
            return None;
        }
    };
    match parsed {
        Ok(v) if v.is_finite() => Some((if negative { -v } else { v }, expr.to_token_stream())),
        _ => {
            cx.error_spanned_by(expr, format!("`{what}` argument `{key}` is out of range"));
            None
        }
    }
}

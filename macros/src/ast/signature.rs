//! The signatures of the methods of a `#[lightning_module]` impl: receivers, parameters, return types.

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ImplItemFn, ReceiverKind, ReturnType, Type};

use super::module::{Returned, StepArg, StepKind};
use super::path_parts;
use crate::ctxt::Ctxt;

/// The receiver a method takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Receiver {
    Mut,
    Ref,
    /// `&self`, for the evaluation steps: they must not change the module.
    Eval,
}

/// Checks the receiver and returns the other parameters.
pub(super) fn params<'f>(
    cx: &Ctxt,
    f: &'f ImplItemFn,
    signature: &str,
    receiver: Receiver,
) -> Vec<&'f syn::PatType> {
    let name = &f.sig.ident;
    if !f.sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &f.sig.generics,
            format!("`{name}` cannot be generic, the runtime calls `{signature}`"),
        );
    }
    if let Some(a) = &f.sig.asyncness {
        cx.error_spanned_by(
            a,
            format!("`{name}` cannot be `async`, the runtime calls `{signature}`"),
        );
    }
    let expected = match receiver {
        Receiver::Mut => "`&mut self`",
        Receiver::Ref | Receiver::Eval => "`&self`",
    };
    match f.sig.receiver() {
        None => cx.error_spanned_by(
            name,
            format!("`{name}` needs a {expected} receiver, the runtime calls `{signature}`"),
        ),
        Some(r) => match &r.kind {
            ReceiverKind::Reference(_, _, Some(_)) if receiver == Receiver::Ref => cx
                .error_spanned_by(
                    r,
                    format!(
                    "`{name}` takes `&self`, found `&mut self`: the runtime calls `{signature}`"
                ),
                ),
            // Evaluation runs the module as it is: a `forward_mut` there would update batch-norm
            // running statistics (and draw dropout masks) from validation data.
            ReceiverKind::Reference(_, _, Some(_)) if receiver == Receiver::Eval => cx
                .error_spanned_by(
                    r,
                    format!(
                    "`{name}` takes `&self`, found `&mut self`: evaluation must not change the module \
                     (a `forward_mut` would update batch-norm running statistics), call `forward`; \
                     the runtime calls `{signature}`"
                ),
                ),
            ReceiverKind::Reference(..) => {}
            _ => cx.error_spanned_by(
                r,
                format!(
                    "`{name}` takes {expected}, found `{}`: the runtime calls `{signature}`",
                    quote::quote!(#r)
                ),
            ),
        },
    }
    f.sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Reports a wrong parameter count; returns the first parameter's type (the batch of a step).
pub(super) fn check_count(
    cx: &Ctxt,
    f: &ImplItemFn,
    params: Vec<&syn::PatType>,
    expected: usize,
    signature: &str,
) -> Option<Type> {
    let name = &f.sig.ident;
    let plural = |n: usize| if n == 1 { "parameter" } else { "parameters" };
    if params.len() > expected {
        cx.error_spanned_by(
            params[expected],
            format!(
                "`{name}` takes {expected} {} besides `self`, found {}: the runtime calls `{signature}`",
                plural(expected),
                params.len()
            ),
        );
    } else if params.len() < expected {
        cx.error_at(
            f.sig.paren_token.span.join(),
            format!(
                "`{name}` takes {expected} {} besides `self`, found {}: the runtime calls `{signature}`",
                plural(expected),
                params.len()
            ),
        );
    }
    params.first().map(|p| (*p.ty).clone())
}

/// `usize` as written: the type of `batch_idx`.
fn is_usize(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("usize"))
}

/// `ManualOptimization<…>` or a reference to it, as written.
fn is_manual_optimization(ty: &Type) -> bool {
    let ty = match ty {
        Type::Reference(r) => &*r.elem,
        other => other,
    };
    path_parts(ty).is_some_and(|(i, _)| i == "ManualOptimization")
}

/// The parameters of a training, validation or test step: the batch first, then `training_step`'s
/// `grads` (its `opt` in manual optimization), and an optional `batch_idx: usize` (Lightning's), told
/// from `grads` by its type. Returns them in order with the batch and `grads` types.
pub(super) fn step_args(
    cx: &Ctxt,
    f: &ImplItemFn,
    kind: StepKind,
    params: &[&syn::PatType],
    manual: bool,
) -> (Vec<StepArg>, Option<Type>, Option<Type>) {
    let name = &f.sig.ident;
    let signature = kind.signature(manual);
    let required = if kind == StepKind::Training { 2 } else { 1 };
    let takes = format!(
        "takes {required} {} besides `self` and optionally `batch_idx: usize`",
        if required == 1 {
            "parameter"
        } else {
            "parameters"
        }
    );
    let batch = params.first().map(|p| (*p.ty).clone());
    let mut args = vec![StepArg::Batch];
    let mut grads = None;
    if params.len() < required {
        cx.error_at(
            f.sig.paren_token.span.join(),
            format!(
                "`{name}` {takes}, found {}: the runtime calls `{signature}`",
                params.len()
            ),
        );
        return (args, batch, grads);
    }
    if params.len() > required + 1 {
        cx.error_spanned_by(
            params[required + 1],
            format!(
                "`{name}` {takes}, found {}: the runtime calls `{signature}`",
                params.len()
            ),
        );
        return (args, batch, grads);
    }
    let mut idx_seen = false;
    for p in &params[1..] {
        let is_idx = is_usize(&p.ty) && !idx_seen && params.len() == required + 1;
        if is_idx {
            idx_seen = true;
            args.push(StepArg::BatchIdx);
        } else if kind == StepKind::Training && grads.is_none() && !is_usize(&p.ty) {
            check_training_second(cx, &p.ty, manual);
            grads = Some((*p.ty).clone());
            args.push(if manual { StepArg::Opt } else { StepArg::Grads });
        } else {
            let what = match &*p.pat {
                syn::Pat::Ident(i) => format!("`{}`", i.ident),
                _ => "this parameter".to_string(),
            };
            let problem = if kind == StepKind::Training && grads.is_none() && manual {
                format!("{what} and no `opt: &mut ManualOptimization<'_, Self, D>`")
            } else if kind == StepKind::Training && grads.is_none() {
                format!("{what} and no `grads: Gradients<f32, D>`")
            } else {
                format!("{} and {what} is no `usize`", params.len())
            };
            cx.error_spanned_by(
                p,
                format!("`{name}` {takes}, found {problem}: the runtime calls `{signature}`"),
            );
            return (args, batch, grads);
        }
    }
    (args, batch, grads)
}

/// `training_step`'s parameter after the batch is what the trainer hands it: the gradients to trace the
/// forward pass into, or in manual optimization the optimizers, which the step steps itself.
fn check_training_second(cx: &Ctxt, ty: &Type, manual: bool) {
    let is_gradients = path_parts(ty).is_some_and(|(i, _)| i == "Gradients");
    if manual && is_gradients {
        cx.error_spanned_by(
            ty,
            "with `manual_optimization`, `training_step` takes `opt: &mut ManualOptimization<'_, Self, D>`, \
             not the gradients: compute each loss's gradients in the step (`self.alloc_grads()`) and \
             apply them with `opt.step(index, self, &mut grads)`",
        );
    } else if manual && !matches!(ty, Type::Reference(r) if r.mutability.is_some()) {
        if is_manual_optimization(ty) {
            cx.error_spanned_by(
                ty,
                "`training_step` takes the optimizers by mutable reference: \
                 `opt: &mut ManualOptimization<'_, Self, D>`",
            );
        }
    } else if !manual && is_manual_optimization(ty) {
        cx.error_spanned_by(
            ty,
            "`training_step` takes a `ManualOptimization`, which needs \
             `#[lightning_module(manual_optimization)]`: without it the trainer steps the optimizer \
             itself and hands the step `grads: Gradients<f32, D>`",
        );
    }
}

pub(super) fn returned(output: &ReturnType, ident: &Ident) -> Returned {
    let ReturnType::Type(_, ty) = output else {
        return Returned {
            fallible: false,
            inner: None,
            values: Vec::new(),
            tokens: ident.to_token_stream(),
            span: ident.span(),
        };
    };
    let mut inner: &Type = ty;
    let mut fallible = false;
    if let Some((i, args)) = path_parts(ty) {
        if i == "Result" && !args.is_empty() {
            fallible = true;
            inner = args[0];
        }
    }
    while let Type::Paren(p) = inner {
        inner = &p.elem;
    }
    let (inner, values) = match inner {
        Type::Tuple(t) if t.elems.is_empty() => (None, Vec::new()),
        Type::Tuple(t) => (Some(inner.clone()), t.elems.iter().cloned().collect()),
        other => (Some(other.clone()), vec![other.clone()]),
    };
    Returned {
        fallible,
        inner,
        values,
        tokens: ty.to_token_stream(),
        span: ty.span(),
    }
}

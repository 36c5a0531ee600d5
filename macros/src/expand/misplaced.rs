//! `#[log]`, `#[checkpoint]` and `#[early_stopping]` outside a `#[lightning_module]` impl. Inside one they are consumed by
//! `#[lightning_module]` and never expand; reaching these macros means they are misplaced, or written
//! above `#[lightning_module]`, which only needs reordering.
//!
//! A misplaced attribute is one mistake, so it gives one error: on an impl block without
//! `#[lightning_module]`, the other helper attributes of the block are removed with it (each would
//! report the same mistake), and a module's block gets the stub impls of a failed `#[lightning_module]`,
//! so that the code using the module does not add "`LightningModule` is not implemented" errors.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{FnArg, ImplItem, Item, ItemImpl};

use crate::ast::Module;
use crate::attr::{self, Callback};
use crate::ctxt::Ctxt;
use crate::fallback;

pub fn helper(name: &str, args: TokenStream, input: TokenStream) -> TokenStream {
    let item = syn::parse2::<Item>(input.clone()).ok();
    if let Some(Item::Impl(mut imp)) = item.clone() {
        if let Some(pos) = imp
            .attrs
            .iter()
            .position(|a| attr::is(a, "lightning_module"))
        {
            // Written above `#[lightning_module]`: hand the attribute to it, keeping the source order.
            let lightning = imp.attrs.remove(pos);
            let ident = quote::format_ident!("{}", name);
            let helper: syn::Attribute = if args.is_empty() {
                syn::parse_quote!(#[#ident])
            } else {
                syn::parse_quote!(#[#ident(#args)])
            };
            imp.attrs.insert(0, helper);
            imp.attrs.insert(0, lightning);
            return imp.into_token_stream();
        }
        return on_impl(name, imp);
    }
    let what = match &item {
        Some(Item::Struct(_)) => "a struct",
        Some(Item::Enum(_)) => "an enum",
        Some(Item::Fn(f)) if matches!(f.sig.inputs.first(), Some(FnArg::Receiver(_))) => {
            return error_after(
                input,
                format!(
                    "`#[{name}]` on a method of an impl block without `#[lightning_module]`: add \
                     `#[lightning_module]` above the `impl`"
                ),
            );
        }
        Some(Item::Fn(_)) => "a function outside a `#[lightning_module]` impl",
        Some(Item::Trait(_)) => "a trait",
        _ => "an item outside a `#[lightning_module]` impl",
    };
    error_after(input, where_it_goes(name, what))
}

fn where_it_goes(name: &str, what: &str) -> String {
    match name {
        "log" => format!(
            "`#[log]` on {what}: it goes on a step method of the `impl` block annotated with `#[lightning_module]`"
        ),
        _ => format!(
            "`#[{name}]` on {what}: it goes on the `impl` block annotated with `#[lightning_module]`"
        ),
    }
}

fn error_after(input: TokenStream, msg: String) -> TokenStream {
    let error = syn::Error::new(Span::call_site(), msg).to_compile_error();
    quote!(#input #error)
}

/// An impl block without `#[lightning_module]`.
fn on_impl(name: &str, mut imp: ItemImpl) -> TokenStream {
    imp.attrs.retain(|a| !attr::is_helper(a));
    for item in &mut imp.items {
        if let ImplItem::Fn(f) = item {
            f.attrs.retain(|a| !attr::is_helper(a));
        }
    }
    if imp.trait_.is_some() {
        let callback = Callback::ALL.into_iter().find(|c| c.name() == name);
        let msg = match callback {
            Some(c) => format!(
                "`#[{name}]` on a trait impl: it goes on the module's inherent impl annotated with \
                 `#[lightning_module]`; a hand-written `LightningModule` returns its `{}`s from \
                 `configure_callbacks`",
                c.type_name()
            ),
            None => "`#[log]` on a trait impl: it goes on a step method of the module's inherent impl \
                     annotated with `#[lightning_module]`; a hand-written `LightningModule` declares its \
                     metrics in `METRICS`"
                .to_string(),
        };
        return error_after(imp.into_token_stream(), msg);
    }
    let error = syn::Error::new(
        Span::call_site(),
        format!(
            "`#[{name}]` on an impl block without `#[lightning_module]`: add `#[lightning_module]` \
             above the `impl`"
        ),
    )
    .to_compile_error();
    let is_module = imp
        .items
        .iter()
        .any(|i| matches!(i, ImplItem::Fn(f) if f.sig.ident == "training_step"));
    if !is_module {
        return quote!(#imp #error);
    }
    // The stub impls of a failed `#[lightning_module]`; the module's own mistakes are reported once the
    // attribute is there.
    let cx = Ctxt::new();
    let module = Module::from_ast(&cx, &mut imp, false);
    let _ = cx.check();
    fallback::module(&imp, module.as_ref(), error)
}

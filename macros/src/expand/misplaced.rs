//! `#[log]` and `#[checkpoint]` outside a `#[lightning_module]` impl. Inside one they are consumed by
//! `#[lightning_module]` and never expand; reaching these macros means they are misplaced, or written
//! above `#[lightning_module]`, which only needs reordering.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::Item;

use crate::attr;

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
    }
    let what = match &item {
        Some(Item::Struct(_)) => "a struct",
        Some(Item::Enum(_)) => "an enum",
        Some(Item::Fn(_)) => "a function outside a `#[lightning_module]` impl",
        Some(Item::Impl(_)) => "an impl block without `#[lightning_module]`",
        Some(Item::Trait(_)) => "a trait",
        _ => "an item outside a `#[lightning_module]` impl",
    };
    let msg = match name {
        "checkpoint" => format!(
            "`#[checkpoint]` on {what}: it goes on the `impl` block annotated with `#[lightning_module]`"
        ),
        _ => format!(
            "`#[log]` on {what}: it goes on a step method of the `impl` block annotated with `#[lightning_module]`"
        ),
    };
    let error = syn::Error::new(Span::call_site(), msg).to_compile_error();
    quote!(#input #error)
}

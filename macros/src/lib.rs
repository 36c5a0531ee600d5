//! Procedural macros of fulgur: `#[derive(ModuleState)]`, `#[lightning_module]` with its helper
//! attributes `#[log]` and `#[checkpoint]`. Use them through the `fulgur` crate, whose guide describes
//! the attributes and the compile-time errors.

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod fallback;
mod suggest;

use proc_macro::TokenStream;

/// Names a module's parameters (dfdx's `TensorCollection`) and captures its hyperparameters
/// (`ModuleState`). Fields are `Built<M, D>` dfdx modules, nested structs deriving `ModuleState`, one
/// `#[hparams]` field and `#[skip]` fields.
#[proc_macro_derive(ModuleState, attributes(hparams, skip))]
pub fn derive_module_state(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::state::derive(&input).into()
}

/// Writes the `LightningModule` impl of a module from its inherent impl: steps annotated with `#[log]`,
/// `configure_optimizers`, hooks, and one `ModelCheckpoint` per `#[checkpoint(...)]`.
#[proc_macro_attribute]
pub fn lightning_module(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::module::lightning_module(args.into(), input.into()).into()
}

/// Declares the metrics a step returns. Only valid on a step inside a `#[lightning_module]` impl.
#[proc_macro_attribute]
pub fn log(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced::helper("log", args.into(), input.into()).into()
}

/// Declares a `ModelCheckpoint` policy. Only valid on a `#[lightning_module]` impl.
#[proc_macro_attribute]
pub fn checkpoint(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced::helper("checkpoint", args.into(), input.into()).into()
}

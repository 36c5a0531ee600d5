//! What is emitted on error: the user's item unchanged (helper attributes removed), the errors, and
//! cheap stub impls, so that the rest of the crate still type-checks and the user sees our errors
//! rather than a cascade of "trait not implemented" ones.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::{DeriveInput, GenericParam, Item, ItemImpl};

use crate::ast::{Device, Module, State, StepKind};
use crate::expand;

/// The keyword or name to point at for an item in the wrong place.
pub fn item_span(item: &Item) -> Span {
    match item {
        Item::Struct(i) => i.ident.span(),
        Item::Enum(i) => i.ident.span(),
        Item::Fn(i) => i.sig.ident.span(),
        Item::Trait(i) => i.ident.span(),
        Item::Mod(i) => i.ident.span(),
        Item::Type(i) => i.ident.span(),
        Item::Impl(i) => i.self_ty.span(),
        other => other.span(),
    }
}

/// The device of an item we could not model: its only type parameter, if it has exactly one.
fn guess_device(generics: &syn::Generics) -> Option<Device> {
    let mut types = generics.params.iter().filter_map(|p| match p {
        GenericParam::Type(t) => Some(t.ident.clone()),
        _ => None,
    });
    match (types.next(), types.next()) {
        (Some(d), None) => Some(Device::Param(d)),
        _ => None,
    }
}

pub fn state(input: &DeriveInput, state: Option<&State>, errors: TokenStream) -> TokenStream {
    let device = state
        .map(|s| s.device.clone())
        .or_else(|| guess_device(&input.generics));
    let Some(device) = device else {
        return errors;
    };
    if input.generics.lifetimes().next().is_some() {
        return errors;
    }
    let (rt, dfdx) = (expand::rt(), expand::dfdx());
    let dev = device.ty();
    let name = &input.ident;
    let generics = expand::with_backend(&input.generics, &device);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let hparams = state
        .and_then(State::hparams)
        .map_or_else(|| quote!(()), |f| f.ty.to_token_stream());
    quote! {
        #errors
        const _: () = {
            impl #impl_generics #dfdx::nn::tensor_collection::TensorCollection<f32, #dev>
                for #name #ty_generics #where_clause
            {
                type To<__E2: #dfdx::shapes::Dtype, __D2: #dfdx::tensor_ops::Device<__E2>> = ();

                fn iter_tensors<__V: #dfdx::nn::tensor_collection::ModuleVisitor<Self, f32, #dev>>(
                    _: &mut __V,
                ) -> ::core::result::Result<::core::option::Option<()>, __V::Err> {
                    ::core::unimplemented!()
                }
            }

            impl #impl_generics #rt::module::ModuleState<#dev> for #name #ty_generics #where_clause {
                type Hparams = #hparams;

                fn hparams(&self) -> &Self::Hparams {
                    ::core::unimplemented!()
                }

                fn from_hparams(_: Self::Hparams, _: &#dev) -> #rt::Result<Self> {
                    ::core::unimplemented!()
                }
            }
        };
    }
}

pub fn module(item: &ItemImpl, module: Option<&Module>, errors: TokenStream) -> TokenStream {
    let device = module
        .and_then(|m| m.device.clone())
        .or_else(|| guess_device(&item.generics));
    let (Some(module), Some(device)) = (module, device) else {
        return quote!(#item #errors);
    };
    if item.generics.lifetimes().next().is_some() {
        return quote!(#item #errors);
    }
    let (rt, dfdx) = (expand::rt(), expand::dfdx());
    let dev = device.ty();
    let mut item = item.clone();
    expand::bound_device(&mut item.generics, &device);
    let self_ty = &module.self_ty;
    let generics = expand::with_backend(&module.generics, &device);
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let batch = module
        .step(StepKind::Training)
        .and_then(|s| s.batch.as_ref())
        .map_or_else(|| quote!(()), ToTokens::to_token_stream);
    let prediction = module
        .step(StepKind::Predict)
        .and_then(|s| s.ret.inner.as_ref())
        .map_or_else(|| quote!(()), ToTokens::to_token_stream);
    quote! {
        #item
        #errors
        const _: () = {
            impl #impl_generics #rt::module::LightningModule<#dev> for #self_ty #where_clause {
                type Batch = #batch;
                type Prediction = #prediction;

                fn training_step(
                    &mut self,
                    _: Self::Batch,
                    _: #dfdx::tensor::Gradients<f32, #dev>,
                    _: &mut #rt::metrics::StepLog,
                ) -> #rt::Result<#rt::module::Loss<#dev>> {
                    ::core::unimplemented!()
                }

                fn configure_optimizers(&self) -> #rt::optim::Optimizers<Self, #dev> {
                    ::core::unimplemented!()
                }
            }
        };
    }
}

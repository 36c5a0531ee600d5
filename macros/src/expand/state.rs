//! `#[derive(ModuleState)]`: dfdx's `TensorCollection` naming the module fields, and `ModuleState`
//! (hyperparameters and how to build the module from them).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use super::{dfdx, rt, support, with_backend};
use crate::ast::{Role, State};
use crate::ctxt::Ctxt;
use crate::fallback;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let state = State::from_ast(&cx, input);
    match (cx.check(), state) {
        (Ok(()), Some(state)) => expand(&state),
        (Err(errors), state) => fallback::state(input, state.as_ref(), errors),
        (Ok(()), None) => unreachable!("a struct that cannot be modelled reports why"),
    }
}

fn expand(state: &State) -> TokenStream {
    let (rt, dfdx, support) = (rt(), dfdx(), support());
    let name = &state.input.ident;
    let device = state.device.ty();
    let generics = with_backend(&state.input.generics, &state.device);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    // Each module field is visited and built through `ModuleField`, spanned on its type: one obligation
    // per field, so a type that is no `f32` module gets one message, at the field.
    let visits = state
        .fields
        .iter()
        .filter(|f| matches!(f.role, Role::Module))
        .map(|f| {
            let (ident, key, ty) = (f.ident, f.ident.to_string(), f.ty);
            quote_spanned! {ty.span()=>
                __all &= <#ty as #support::ModuleField<#device, _>>::visit_field::<Self, __V, _, _>(
                    __visitor,
                    #key,
                    |__s| &__s.#ident,
                    |__s| &mut __s.#ident,
                )?;
            }
        });
    let (hparams_ty, hparams_ref) = match state.hparams() {
        Some(f) => {
            let (ty, ident) = (f.ty, f.ident);
            (quote_spanned!(ty.span()=> #ty), quote!(&self.#ident))
        }
        None => (quote!(()), quote!(&())),
    };
    let inits = state.fields.iter().map(|f| {
        let (ident, ty) = (f.ident, f.ty);
        let value = match &f.role {
            Role::Module => {
                quote_spanned!(ty.span()=> <#ty as #support::ModuleField<#device, _>>::build_field(__device)?)
            }
            Role::Hparams => quote!(__hparams),
            Role::Skip => quote_spanned!(ty.span()=> <#ty as ::core::default::Default>::default()),
        };
        quote!(#ident: #value)
    });

    let from_hparams = match &state.build {
        // The user's function builds the module; its signature is checked at its path.
        Some(path) => quote_spanned! {path.span()=>
            #path(__hparams, __device).map_err(::core::convert::Into::<#rt::Error>::into)
        },
        None => quote!(::core::result::Result::Ok(Self { #(#inits,)* })),
    };

    quote! {
        const _: () = {
            impl #impl_generics #dfdx::nn::tensor_collection::TensorCollection<f32, #device>
                for #name #ty_generics #where_clause
            {
                type To<__E2: #dfdx::shapes::Dtype, __D2: #dfdx::tensor_ops::Device<__E2>> = ();

                fn iter_tensors<__V: #dfdx::nn::tensor_collection::ModuleVisitor<Self, f32, #device>>(
                    __visitor: &mut __V,
                ) -> ::core::result::Result<::core::option::Option<()>, __V::Err> {
                    #[allow(unused_mut)]
                    let mut __all = true;
                    #(#visits)*
                    ::core::result::Result::Ok(if __all { ::core::option::Option::Some(()) } else { ::core::option::Option::None })
                }
            }

            impl #impl_generics #rt::module::ModuleState<#device> for #name #ty_generics #where_clause {
                type Hparams = #hparams_ty;

                fn hparams(&self) -> &Self::Hparams {
                    #hparams_ref
                }

                // `useless_conversion`: the error of a `build` function that already returns fulgur's.
                #[allow(unused_variables, clippy::useless_conversion)]
                fn from_hparams(__hparams: Self::Hparams, __device: &#device) -> #rt::Result<Self> {
                    #from_hparams
                }
            }
        };
    }
}

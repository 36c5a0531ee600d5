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

    let visited: Vec<TokenStream> = state
        .fields
        .iter()
        .filter(|f| matches!(f.role, Role::Module(_) | Role::Nested))
        .map(|f| {
            let (ident, key, ty) = (f.ident, f.ident.to_string(), f.ty);
            quote_spanned!(ty.span()=> Self::module(#key, |__s| &__s.#ident, |__s| &mut __s.#ident))
        })
        .collect();
    let visited = fields_tuple(&visited);

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
            Role::Module(m) => {
                quote_spanned!(m.span()=> #support::build_module::<#m, #device>(__device)?)
            }
            Role::Nested => {
                quote_spanned!(ty.span()=> <#ty as #support::NestedState<#device>>::build_nested(__device)?)
            }
            Role::Hparams => quote!(__hparams),
            Role::Skip => quote_spanned!(ty.span()=> <#ty as ::core::default::Default>::default()),
        };
        quote!(#ident: #value)
    });

    quote! {
        const _: () = {
            impl #impl_generics #dfdx::nn::tensor_collection::TensorCollection<f32, #device>
                for #name #ty_generics #where_clause
            {
                type To<__E2: #dfdx::shapes::Dtype, __D2: #dfdx::tensor_ops::Device<__E2>> = ();

                fn iter_tensors<__V: #dfdx::nn::tensor_collection::ModuleVisitor<Self, f32, #device>>(
                    __visitor: &mut __V,
                ) -> ::core::result::Result<::core::option::Option<()>, __V::Err> {
                    __visitor.visit_fields(#visited, |_| ())
                }
            }

            impl #impl_generics #rt::module::ModuleState<#device> for #name #ty_generics #where_clause {
                type Hparams = #hparams_ty;

                fn hparams(&self) -> &Self::Hparams {
                    #hparams_ref
                }

                #[allow(unused_variables)]
                fn from_hparams(__hparams: Self::Hparams, __device: &#device) -> #rt::Result<Self> {
                    ::core::result::Result::Ok(Self { #(#inits,)* })
                }
            }
        };
    }
}

/// dfdx takes the fields as one `ModuleFields`: a single field, or tuples of at most six (nested beyond).
fn fields_tuple(fields: &[TokenStream]) -> TokenStream {
    match fields.len() {
        0 => quote!(()),
        1 => fields[0].clone(),
        2..=6 => quote!((#(#fields),*)),
        _ => {
            let chunks: Vec<TokenStream> = fields.chunks(6).map(fields_tuple).collect();
            fields_tuple(&chunks)
        }
    }
}

//! Code generation: one file per macro. Every path is absolute through the facade
//! (`::fulgur::__private::…`), locals are `__`-prefixed, and free items sit in `const _: () = { … };`.

pub mod misplaced;
pub mod module;
pub mod state;

use proc_macro2::TokenStream;
use quote::quote;

/// `::fulgur::__private::fulgur_runtime`.
pub(crate) fn rt() -> TokenStream {
    quote!(::fulgur::__private::fulgur_runtime)
}

/// `::fulgur::__private::dfdx`.
pub(crate) fn dfdx() -> TokenStream {
    quote!(::fulgur::__private::dfdx)
}

/// The helpers of `fulgur_runtime::module::macro_support`.
pub(crate) fn support() -> TokenStream {
    quote!(::fulgur::__private::fulgur_runtime::module::macro_support)
}

/// `generics` with `D: Backend` added for a device parameter (the generated impls).
pub(crate) fn with_backend(generics: &syn::Generics, device: &crate::ast::Device) -> syn::Generics {
    let mut g = generics.clone();
    if let crate::ast::Device::Param(d) = device {
        let rt = rt();
        g.make_where_clause()
            .predicates
            .push(syn::parse_quote!(#d: #rt::Backend));
    }
    g
}

/// Adds `D: Backend` to the user's own impl when no bound named `Backend` is on `D` already: its methods
/// name the runtime's types (`Adam<D>`, `ClassificationBatch<…, D>`), which need it, and dfdx's own
/// idiom bounds a device by `Device<f32>` only.
pub(crate) fn bound_device(generics: &mut syn::Generics, device: &crate::ast::Device) {
    let crate::ast::Device::Param(d) = device else {
        return;
    };
    let is_backend = |b: &syn::TypeParamBound| {
        matches!(b, syn::TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Backend"))
    };
    let inline = generics
        .type_params()
        .any(|p| &p.ident == d && p.bounds.iter().any(is_backend));
    let in_where = generics
        .where_clause
        .iter()
        .flat_map(|w| &w.predicates)
        .any(|p| {
            matches!(p, syn::WherePredicate::Type(t)
            if matches!(&t.bounded_ty, syn::Type::Path(tp) if tp.path.is_ident(d))
                && t.bounds.iter().any(is_backend))
        });
    if !inline && !in_where {
        let rt = rt();
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(#d: #rt::Backend));
    }
}

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

/// `generics` with `D: Backend` added for a device parameter.
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

//! The error collector (serde's `Ctxt`): every stage reports into it, and one gate before expansion turns
//! the errors into `compile_error!`s, so that a user with three mistakes sees three errors in one build.

use std::cell::RefCell;
use std::fmt::Display;
use std::thread;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

#[derive(Default)]
pub struct Ctxt {
    /// `None` once checked: dropping an unchecked context is a bug in the macro.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    /// An error spanned on the tokens of `obj`.
    pub fn error_spanned_by(&self, obj: impl ToTokens, msg: impl Display) {
        self.syn_error(syn::Error::new_spanned(obj.into_token_stream(), msg));
    }

    /// An error at `span`.
    pub fn error_at(&self, span: Span, msg: impl Display) {
        self.syn_error(syn::Error::new(span, msg));
    }

    pub fn syn_error(&self, err: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("error reported after the gate")
            .push(err);
    }

    /// The gate: `Err` with every error reported, in the order of the source (rustc prints them in the
    /// order they are emitted, and a reader fixes a file from the top).
    pub fn check(self) -> Result<(), TokenStream> {
        let mut errors = self.errors.borrow_mut().take().expect("checked twice");
        if errors.is_empty() {
            return Ok(());
        }
        // Stable: errors at one position keep the order of the checks (so does every error where the
        // compiler cannot tell positions, which reads them all as line 0).
        errors.sort_by_key(|e| {
            let start = e.span().start();
            (start.line, start.column)
        });
        Err(errors.iter().map(syn::Error::to_compile_error).collect())
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !thread::panicking() && self.errors.borrow().is_some() {
            panic!("forgot to check for errors");
        }
    }
}

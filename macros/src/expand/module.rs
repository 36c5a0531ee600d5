//! `#[lightning_module]`: the user's impl (helper attributes removed) and the `LightningModule` impl
//! that calls its methods, logs what the steps return and builds the `#[checkpoint]` and
//! `#[early_stopping]` callbacks.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Item, ItemImpl};

use super::{bound_device, dfdx, rt, support, with_backend};
use crate::ast::{HookKind, Metric, Module, Returned, Stage, Step, StepArg, StepKind};
use crate::attr::{self, Callback, CallbackAttr, LogAttr, Reduce, Value};
use crate::check;
use crate::ctxt::Ctxt;
use crate::fallback;
use fulgur_rules::checkpoint::{Mode, SaveLast};
use fulgur_rules::template::Kind;

pub fn lightning_module(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#input #e);
        }
    };
    let cx = Ctxt::new();
    let args = attr::parse_lightning_module(&cx, args);
    let manual = args.manual_optimization.is_some();
    let mut item = match item {
        Item::Impl(item) => item,
        other => {
            cx.error_at(
                fallback::item_span(&other),
                "`#[lightning_module]` goes on the module's inherent impl block (`impl<D: Backend> Name<D> { … }`)",
            );
            let errors = cx.check().err().unwrap_or_default();
            return quote!(#other #errors);
        }
    };
    let module = Module::from_ast(&cx, &mut item, manual);
    if let Some(module) = &module {
        check::check_module(&cx, module);
    }
    match (cx.check(), module) {
        (Ok(()), Some(module)) => expand(&item, &module),
        (Err(errors), module) => fallback::module(&item, module.as_ref(), errors),
        (Ok(()), None) => unreachable!("an impl that cannot be modelled reports why"),
    }
}

fn expand(item: &ItemImpl, module: &Module) -> TokenStream {
    let rt = rt();
    let Some(device) = &module.device else {
        unreachable!("the device is known once the checks pass")
    };
    let dev = device.ty();
    let self_ty = &module.self_ty;
    let generics = with_backend(&module.generics, device);
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let mut item = item.clone();
    bound_device(&mut item.generics, device);

    let training = module.step(StepKind::Training).expect("checked");
    let batch = training.batch.as_ref().expect("checked");
    let prediction = module
        .step(StepKind::Predict)
        .and_then(|s| s.ret.inner.as_ref())
        .map_or_else(|| quote!(()), ToTokens::to_token_stream);
    let metrics = module.metrics();
    let specs = metrics.iter().map(metric_spec);
    let steps = module.steps.iter().map(|s| step(module, s, &dev));
    let optimizers = configure_optimizers(module, &dev);
    let callbacks = configure_callbacks(module);
    let hooks = module.hooks.iter().map(|h| hook(module, h.kind));

    quote! {
        #item

        const _: () = {
            impl #impl_generics #rt::module::LightningModule<#dev> for #self_ty #where_clause {
                type Batch = #batch;
                type Prediction = #prediction;

                const METRICS: &'static [#rt::metrics::MetricSpec] = &[#(#specs),*];

                #(#steps)*
                #optimizers
                #callbacks
                #(#hooks)*
            }
        };
    }
}

/// `MetricSpec::validation("val_acc").prog_bar()`: only what differs from the stage's defaults.
fn metric_spec(m: &Metric) -> TokenStream {
    let rt = rt();
    let name = &m.name;
    let ctor = match m.stage {
        Stage::Train => quote!(train),
        Stage::Validation => quote!(validation),
        Stage::Test => quote!(test),
    };
    let train = m.stage == Stage::Train;
    let mut spec = quote!(#rt::metrics::MetricSpec::#ctor(#name));
    if m.on_step != train {
        let v = m.on_step;
        spec.extend(quote!(.on_step(#v)));
    }
    if m.on_epoch == train {
        let v = m.on_epoch;
        spec.extend(quote!(.on_epoch(#v)));
    }
    let reduce = match m.reduce {
        Reduce::Mean => None,
        Reduce::Sum => Some(quote!(Sum)),
        Reduce::Max => Some(quote!(Max)),
        Reduce::Min => Some(quote!(Min)),
    };
    if let Some(r) = reduce {
        spec.extend(quote!(.reduce(#rt::metrics::Reduce::#r)));
    }
    if m.prog_bar {
        spec.extend(quote!(.prog_bar()));
    }
    let kind = match (m.kind(), &m.ty) {
        (Some(Kind::F32), _) => None,
        (Some(Kind::F64), _) => Some(quote!(#rt::metrics::MetricKind::F64)),
        (Some(Kind::Int), _) => Some(quote!(#rt::metrics::MetricKind::Int)),
        (Some(Kind::Bool), _) => Some(quote!(#rt::metrics::MetricKind::Bool)),
        (None, Some(ty)) => {
            let support = support();
            Some(quote_spanned!(ty.span()=> <#ty as #support::ScalarMetric>::KIND))
        }
        (None, None) => None,
    };
    if let Some(k) = kind {
        spec.extend(quote!(.kind(#k)));
    }
    spec
}

/// The trait's step: calls the inherent method by path, logs the returned values, returns the loss.
fn step(module: &Module, step: &Step, dev: &syn::Type) -> TokenStream {
    let rt = rt();
    let self_ty = &module.self_ty;
    let ident = &step.ident;
    let question = step.ret.fallible.then(|| quote!(?));
    // Spanned on the user's parameter type, so that a batch type differing from `training_step`'s is
    // reported there.
    let batch = step
        .batch
        .as_ref()
        .map_or_else(|| quote!(__batch), |ty| quote_spanned!(ty.span()=> __batch));
    if step.kind == StepKind::Predict {
        return quote! {
            fn predict_step(&self, __batch: Self::Batch) -> #rt::Result<Self::Prediction> {
                ::core::result::Result::Ok(<#self_ty>::#ident(self, #batch)#question)
            }
        };
    }
    let args = step.args.iter().map(|a| match a {
        StepArg::Batch => batch.clone(),
        StepArg::Grads => quote!(__grads),
        StepArg::Opt => quote!(__opt),
        StepArg::BatchIdx => quote!(__log.batch_idx()),
    });
    let call = quote!(<#self_ty>::#ident(self, #(#args),*)#question);
    let (bind, values, logs) = logged(call, &step.ret, step.log.as_ref());
    let log_param = if logs.is_empty() && !step.args.contains(&StepArg::BatchIdx) {
        quote!(_)
    } else {
        quote!(__log)
    };
    match step.kind {
        StepKind::Training if module.manual => {
            let dfdx = dfdx();
            quote! {
                const MANUAL_OPTIMIZATION: bool = true;

                fn training_step(
                    &mut self,
                    _: Self::Batch,
                    _: #dfdx::tensor::Gradients<f32, #dev>,
                    _: &mut #rt::metrics::StepLog,
                ) -> #rt::Result<#rt::module::Loss<#dev>> {
                    ::core::result::Result::Err(#rt::Error::config(
                        "training_step",
                        "this module is a `#[lightning_module(manual_optimization)]`: the trainer calls \
                         `manual_training_step`, which calls its `training_step` with the optimizers",
                    ))
                }

                fn manual_training_step(
                    &mut self,
                    __batch: Self::Batch,
                    __opt: &mut #rt::optim::ManualOptimization<'_, Self, #dev>,
                    #log_param: &mut #rt::metrics::StepLog,
                ) -> #rt::Result<()> {
                    #bind
                    #(#logs)*
                    ::core::result::Result::Ok(())
                }
            }
        }
        StepKind::Training => {
            let dfdx = dfdx();
            let loss = &values[0];
            quote! {
                fn training_step(
                    &mut self,
                    __batch: Self::Batch,
                    __grads: #dfdx::tensor::Gradients<f32, #dev>,
                    #log_param: &mut #rt::metrics::StepLog,
                ) -> #rt::Result<#rt::module::Loss<#dev>> {
                    #bind
                    #(#logs)*
                    ::core::result::Result::Ok(#loss)
                }
            }
        }
        kind => {
            let method = quote::format_ident!("{}", kind.name());
            quote! {
                fn #method(&self, __batch: Self::Batch, #log_param: &mut #rt::metrics::StepLog) -> #rt::Result<()> {
                    #bind
                    #(#logs)*
                    ::core::result::Result::Ok(())
                }
            }
        }
    }
}

/// `let (__v0, __v1) = call;` and one `__log.log(name, value)` per name of `log`, spanned on the
/// returned type so that a value that is no metric is reported there; with the bound locals.
fn logged(
    call: TokenStream,
    ret: &Returned,
    log: Option<&LogAttr>,
) -> (TokenStream, Vec<syn::Ident>, Vec<TokenStream>) {
    let support = support();
    let values: Vec<syn::Ident> = (0..ret.values.len())
        .map(|i| quote::format_ident!("__v{}", i))
        .collect();
    let bind = match values.as_slice() {
        [] => quote!(let () = #call;),
        [one] => quote!(let #one = #call;),
        many => quote!(let (#(#many),*) = #call;),
    };
    let names = log.into_iter().flat_map(|l| &l.metrics);
    let logs = names
        .zip(values.iter().zip(&ret.values))
        .map(|(m, (v, ty))| {
            let name = &m.name;
            quote_spanned!(ty.span()=> __log.log(#name, <#ty as #support::ScalarMetric>::to_metric(&#v));)
        })
        .collect();
    (bind, values, logs)
}

/// Wraps an optimizer into `Optimizers`, or passes `Optimizers` through.
fn configure_optimizers(module: &Module, dev: &syn::Type) -> TokenStream {
    let rt = rt();
    let self_ty = &module.self_ty;
    let Some(opt) = &module.optimizers else {
        unreachable!("checked")
    };
    let ident = &opt.ident;
    let call = quote!(<#self_ty>::#ident(self));
    let body = if opt.is_optimizers {
        call
    } else {
        quote_spanned!(opt.ret_span=> #rt::optim::Optimizers::new(#call))
    };
    quote! {
        fn configure_optimizers(&self) -> #rt::optim::Optimizers<Self, #dev> {
            #body
        }
    }
}

/// One callback per callback attribute, after the user's own callbacks: the `EarlyStopping`s, then the
/// `ModelCheckpoint`s (which the trainer runs last in any case, as Lightning does).
fn configure_callbacks(module: &Module) -> Option<TokenStream> {
    let (rt, support) = (rt(), support());
    let declared: Vec<&CallbackAttr> = module
        .early_stoppings
        .iter()
        .chain(&module.checkpoints)
        .collect();
    if declared.is_empty() && module.user_callbacks.is_none() {
        return None;
    }
    let self_ty = &module.self_ty;
    let start = match &module.user_callbacks {
        Some(ident) => quote!(#support::IntoCallbacks::into_callbacks(<#self_ty>::#ident(self))?),
        None => quote!(::std::vec::Vec::new()),
    };
    let pushes = declared.into_iter().map(|c| {
        let builder = callback_builder(c);
        quote!(__callbacks.push(::std::boxed::Box::new(#builder.build()?));)
    });
    Some(quote! {
        fn configure_callbacks(
            &self,
        ) -> #rt::Result<::std::vec::Vec<::std::boxed::Box<dyn #rt::callbacks::Callback>>> {
            let mut __callbacks: ::std::vec::Vec<::std::boxed::Box<dyn #rt::callbacks::Callback>> = #start;
            #(#pushes)*
            ::core::result::Result::Ok(__callbacks)
        }
    })
}

/// `ModelCheckpoint::builder().monitor("val_loss").save_top_k(2)…`: for each argument given, in the
/// table's order, the builder method its row names.
fn callback_builder(c: &CallbackAttr) -> TokenStream {
    let rt = rt();
    let ty = quote::format_ident!("{}", c.callback.type_name());
    let mut b = quote!(#rt::callbacks::#ty::builder());
    for row in c.callback.arguments() {
        if let Some((_, arg)) = c.args.iter().find(|(given, _)| given.key == row.key) {
            let method = quote::format_ident!("{}", row.method);
            let value = builder_value(c.callback, &arg.value);
            b.extend(quote!(.#method(#value)));
        }
    }
    b
}

/// A value as the builder method takes it (the tests `every_checkpoint_argument_calls_an_existing_
/// builder_method` of the runtime and `every_early_stopping_argument_calls_an_existing_builder_method`
/// of the facade pass each kind's form).
fn builder_value(callback: Callback, value: &Value) -> TokenStream {
    let rt = rt();
    match value {
        Value::Str(s) => quote!(#s),
        Value::Bool(b) => quote!(#b),
        Value::Int(i) => proc_macro2::Literal::i64_unsuffixed(*i).into_token_stream(),
        Value::Count(n) => proc_macro2::Literal::u64_unsuffixed(*n).into_token_stream(),
        Value::Float(x) => {
            let abs = proc_macro2::Literal::f64_unsuffixed(x.abs());
            if x.is_sign_negative() {
                quote!(-#abs)
            } else {
                quote!(#abs)
            }
        }
        Value::SaveLast(SaveLast::Yes) => quote!(true),
        Value::SaveLast(SaveLast::No) => quote!(false),
        Value::SaveLast(SaveLast::Link) => quote!(#rt::callbacks::SaveLast::Link),
        // `ModelCheckpoint` checks its mode when built, as Lightning does; `EarlyStopping` takes the
        // shared `Mode`.
        Value::Mode(m) => match callback {
            Callback::Checkpoint => {
                let m = m.as_str();
                quote!(#m)
            }
            Callback::EarlyStopping => match m {
                Mode::Min => quote!(#rt::callbacks::Mode::Min),
                Mode::Max => quote!(#rt::callbacks::Mode::Max),
            },
        },
        Value::Duration(d) => {
            let (secs, nanos) = (d.secs, d.nanos);
            quote!(::core::time::Duration::new(#secs, #nanos))
        }
    }
}

/// A hook the impl defines under its trait name, forwarded to the trait.
fn hook(module: &Module, kind: HookKind) -> TokenStream {
    let (rt, support) = (rt(), support());
    let self_ty = &module.self_ty;
    let hook = module
        .hooks
        .iter()
        .find(|h| h.kind == kind)
        .expect("present");
    let ident = &hook.ident;
    let into_result = quote_spanned!(hook.ret.span=> #support::HookResult::into_result);
    match kind {
        HookKind::SaveCheckpoint => quote! {
            fn on_save_checkpoint(&self, __checkpoint: &mut #rt::checkpoint::Checkpoint) {
                <#self_ty>::#ident(self, __checkpoint)
            }
        },
        HookKind::LoadCheckpoint => quote! {
            fn on_load_checkpoint(&mut self, __checkpoint: &#rt::checkpoint::Checkpoint) -> #rt::Result<()> {
                #into_result(<#self_ty>::#ident(self, __checkpoint))
            }
        },
        HookKind::TrainBatchEnd | HookKind::TrainEpochEnd | HookKind::ValidationEpochEnd => {
            let method = quote::format_ident!("{}", kind.name());
            let arg = hook.takes_log.then(|| quote!(, __log));
            let call = quote!(<#self_ty>::#ident(self #arg));
            if hook.log.is_none() {
                let log_param = if hook.takes_log {
                    quote!(__log)
                } else {
                    quote!(_)
                };
                return quote! {
                    fn #method(&mut self, #log_param: &mut #rt::metrics::StepLog) -> #rt::Result<()> {
                        #into_result(#call)
                    }
                };
            }
            let question = hook.ret.fallible.then(|| quote!(?));
            let (bind, _, logs) = logged(quote!(#call #question), &hook.ret, hook.log.as_ref());
            quote! {
                fn #method(&mut self, __log: &mut #rt::metrics::StepLog) -> #rt::Result<()> {
                    #bind
                    #(#logs)*
                    ::core::result::Result::Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulgur_rules::checkpoint::ValueKind;

    /// What the test writes for a value of `kind`, and what the expansion passes to the builder.
    fn written_and_generated(callback: Callback, kind: ValueKind) -> (TokenStream, TokenStream) {
        let rt = rt();
        match kind {
            ValueKind::Str => (quote!("x"), quote!("x")),
            ValueKind::Template => (quote!("{epoch}"), quote!("{epoch}")),
            ValueKind::Metric => (quote!("epoch"), quote!("epoch")),
            ValueKind::Bool => (quote!(true), quote!(true)),
            ValueKind::Int => (quote!(-1), quote!(-1)),
            ValueKind::Count => (quote!(1), quote!(1)),
            ValueKind::Float => (quote!(-1e-3), quote!(-0.001)),
            ValueKind::SaveLast => (quote!("link"), quote!(#rt::callbacks::SaveLast::Link)),
            ValueKind::Mode if callback == Callback::Checkpoint => (quote!("max"), quote!("max")),
            ValueKind::Mode => (quote!("max"), quote!(#rt::callbacks::Mode::Max)),
            ValueKind::Duration => (
                quote!("1s"),
                quote!(::core::time::Duration::new(1u64, 0u32)),
            ),
        }
    }

    /// Every row of the callback's shared table is read by its attribute and becomes a call of its
    /// builder method, with the value in the form the builder tests pass; a key added to the table needs
    /// no edit here.
    fn every_argument_is_parsed_and_calls_its_builder_method(callback: Callback) {
        let name = quote::format_ident!("{}", callback.name());
        for row in callback.arguments() {
            let (written, generated) = written_and_generated(callback, row.kind);
            let key = quote::format_ident!("{}", row.key);
            let attr: syn::Attribute = syn::parse_quote!(#[#name(#key = #written)]);
            let cx = Ctxt::new();
            let parsed = crate::attr::parse_callback(&cx, callback, &attr);
            if let Err(errors) = cx.check() {
                panic!("`{}`: {errors}", row.key);
            }
            let built = callback_builder(&parsed.expect("parsed")).to_string();
            let ty = quote::format_ident!("{}", callback.type_name());
            let builder = quote!(callbacks::#ty::builder()).to_string();
            assert!(built.contains(&builder), "`{}`: {built}", row.key);
            let method = quote::format_ident!("{}", row.method);
            let call = quote!(.#method(#generated)).to_string();
            assert!(built.ends_with(&call), "`{}`: {built}", row.key);
        }
    }

    #[test]
    fn every_checkpoint_argument_is_parsed_and_calls_its_builder_method() {
        every_argument_is_parsed_and_calls_its_builder_method(Callback::Checkpoint);
    }

    #[test]
    fn every_early_stopping_argument_is_parsed_and_calls_its_builder_method() {
        every_argument_is_parsed_and_calls_its_builder_method(Callback::EarlyStopping);
    }

    /// The brief's example, whole: integers and floats in the forms the builder takes, the mode as the
    /// shared enum.
    #[test]
    fn an_early_stopping_becomes_its_builder_calls_in_the_tables_order() {
        let attr: syn::Attribute = syn::parse_quote!(
            #[early_stopping(mode = "max", patience = 3, min_delta = 0.001, monitor = "val_acc", stopping_threshold = 1)]
        );
        let cx = Ctxt::new();
        let parsed = crate::attr::parse_callback(&cx, Callback::EarlyStopping, &attr);
        assert!(cx.check().is_ok());
        let rt = rt();
        let expected = quote!(
            #rt::callbacks::EarlyStopping::builder()
                .monitor("val_acc")
                .min_delta(0.001)
                .patience(3)
                .mode(#rt::callbacks::Mode::Max)
                .stopping_threshold(1.0)
        );
        assert_eq!(
            callback_builder(&parsed.expect("parsed")).to_string(),
            expected.to_string()
        );
    }
}

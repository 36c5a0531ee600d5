//! The impl block of `#[lightning_module]`: its steps, hooks, optimizers, callbacks and the metrics its
//! `#[log]` attributes declare.

use proc_macro2::{Span, TokenStream};
use syn::{Generics, Ident, ImplItem, ImplItemFn, ItemImpl, Type};

use super::signature::{check_count, params, returned, step_args, Receiver};
use super::{device_param, path_parts, Device};
use crate::attr::{self, Callback, CallbackAttr, LogAttr, Reduce};
use crate::ctxt::Ctxt;
use fulgur_rules::suggest::did_you_mean;
use fulgur_rules::template::Kind;

// ---------------------------------------------------------------------------------------------------
// #[lightning_module]

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StepKind {
    Training,
    Validation,
    Test,
    Predict,
}

impl StepKind {
    pub const ALL: [StepKind; 4] = [
        StepKind::Training,
        StepKind::Validation,
        StepKind::Test,
        StepKind::Predict,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Training => "training_step",
            StepKind::Validation => "validation_step",
            StepKind::Test => "test_step",
            StepKind::Predict => "predict_step",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The signature the runtime calls, for messages; `manual`: under
    /// `#[lightning_module(manual_optimization)]`.
    pub fn signature(self, manual: bool) -> String {
        match self {
            StepKind::Training if manual => {
                "fn training_step(&mut self, batch: B, opt: &mut ManualOptimization<'_, Self, D>)"
                    .into()
            }
            StepKind::Training => {
                "fn training_step(&mut self, batch: B, grads: Gradients<f32, D>) -> Loss<D>".into()
            }
            StepKind::Validation | StepKind::Test | StepKind::Predict => {
                format!("fn {}(&self, batch: B)", self.name())
            }
        }
    }

    /// Lightning's stage of the metrics a step logs.
    pub fn stage(self) -> Option<Stage> {
        match self {
            StepKind::Training => Some(Stage::Train),
            StepKind::Validation => Some(Stage::Validation),
            StepKind::Test => Some(Stage::Test),
            StepKind::Predict => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Train,
    Validation,
    Test,
}

/// Hooks forwarded to the trait when the impl defines them, with the shape the runtime calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    SaveCheckpoint,
    LoadCheckpoint,
    TrainBatchEnd,
    TrainEpochEnd,
    ValidationEpochEnd,
}

impl HookKind {
    pub const ALL: [HookKind; 5] = [
        HookKind::SaveCheckpoint,
        HookKind::LoadCheckpoint,
        HookKind::TrainBatchEnd,
        HookKind::TrainEpochEnd,
        HookKind::ValidationEpochEnd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookKind::SaveCheckpoint => "on_save_checkpoint",
            HookKind::LoadCheckpoint => "on_load_checkpoint",
            HookKind::TrainBatchEnd => "on_train_batch_end",
            HookKind::TrainEpochEnd => "on_train_epoch_end",
            HookKind::ValidationEpochEnd => "on_validation_epoch_end",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            HookKind::SaveCheckpoint => "fn on_save_checkpoint(&self, checkpoint: &mut Checkpoint)",
            HookKind::LoadCheckpoint => {
                "fn on_load_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()>"
            }
            HookKind::TrainBatchEnd => "fn on_train_batch_end(&mut self, log: &mut StepLog)",
            HookKind::TrainEpochEnd => "fn on_train_epoch_end(&mut self, log: &mut StepLog)",
            HookKind::ValidationEpochEnd => {
                "fn on_validation_epoch_end(&mut self, log: &mut StepLog)"
            }
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The stage of the `StepLog` the trainer hands the hook, for the hooks that may log.
    pub fn stage(self) -> Option<Stage> {
        match self {
            HookKind::TrainBatchEnd | HookKind::TrainEpochEnd => Some(Stage::Train),
            HookKind::ValidationEpochEnd => Some(Stage::Validation),
            HookKind::SaveCheckpoint | HookKind::LoadCheckpoint => None,
        }
    }
}

/// A method whose returned values `#[log]` names: a step, or a hook the trainer hands a `StepLog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Step(StepKind),
    Hook(HookKind),
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Step(k) => k.name(),
            Source::Hook(k) => k.name(),
        }
    }

    pub fn stage(self) -> Option<Stage> {
        match self {
            Source::Step(k) => k.stage(),
            Source::Hook(k) => k.stage(),
        }
    }

    /// Lightning's defaults of `self.log` in this method: `(on_step, on_epoch)`.
    fn defaults(self) -> (bool, bool) {
        match self {
            Source::Step(StepKind::Training) | Source::Hook(HookKind::TrainBatchEnd) => {
                (true, false)
            }
            _ => (false, true),
        }
    }
}

/// Every method `#[log]` may go on, for messages.
pub const LOGGING_METHODS: [&str; 6] = [
    "training_step",
    "validation_step",
    "test_step",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_validation_epoch_end",
];

/// A step's parameters besides `self`, in the order written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepArg {
    Batch,
    /// `grads: Gradients<f32, D>` of `training_step`.
    Grads,
    /// `opt: &mut ManualOptimization<'_, Self, D>` of `training_step` in manual optimization.
    Opt,
    /// `batch_idx: usize`, Lightning's index of the batch.
    BatchIdx,
}

/// What a method returns, seen through `Result<…>`.
#[derive(Clone)]
pub struct Returned {
    /// `Result<T>` or `Result<T, E>`: the call is followed by `?`.
    pub fallible: bool,
    /// The type inside `Result`, or the written type; `None` for `-> ()` or no return type.
    pub inner: Option<Type>,
    /// The values a step logs: the elements of a tuple, or the single value.
    pub values: Vec<Type>,
    /// The return type as written (or the function name when there is none), for messages.
    pub tokens: TokenStream,
    /// Its span, for generated code that should be reported there.
    pub span: Span,
}

pub struct Step {
    pub kind: StepKind,
    pub ident: Ident,
    pub batch: Option<Type>,
    /// `training_step`'s `grads` type (its `opt` type in manual optimization), which names the device
    /// of a non-generic module.
    pub grads: Option<Type>,
    /// The parameters, in the order the method takes them.
    pub args: Vec<StepArg>,
    pub ret: Returned,
    pub log: Option<LogAttr>,
    /// A `#[log]` was written but could not be read whole (already reported).
    pub log_broken: bool,
    /// Position among the impl's methods.
    pub order: usize,
}

pub struct Hook {
    pub kind: HookKind,
    pub ident: Ident,
    pub ret: Returned,
    /// The method takes the `StepLog` (hooks that may log can leave it out, as Lightning's do).
    pub takes_log: bool,
    pub log: Option<LogAttr>,
    pub log_broken: bool,
    pub order: usize,
}

/// A method that may log, seen alike whether it is a step or a hook.
pub struct Logger<'m> {
    pub source: Source,
    pub ret: &'m Returned,
    pub log: Option<&'m LogAttr>,
    pub log_broken: bool,
}

pub struct Optimizers {
    pub ident: Ident,
    /// The return type is the runtime's `Optimizers` (not an optimizer to wrap).
    pub is_optimizers: bool,
    pub ret_span: Span,
}

pub struct Module {
    pub self_ty: Type,
    /// `#[lightning_module(manual_optimization)]`.
    pub manual: bool,
    pub generics: Generics,
    pub device: Option<Device>,
    pub steps: Vec<Step>,
    pub hooks: Vec<Hook>,
    pub optimizers: Option<Optimizers>,
    pub user_callbacks: Option<Ident>,
    /// The `#[checkpoint]`s, in the order written.
    pub checkpoints: Vec<CallbackAttr>,
    /// The `#[early_stopping]`s, in the order written.
    pub early_stoppings: Vec<CallbackAttr>,
    pub method_names: Vec<Ident>,
}

/// A metric a `#[log]` declares, with the type of the value that provides it.
pub struct Metric {
    pub name: String,
    pub span: Span,
    pub source: Source,
    pub stage: Stage,
    pub on_step: bool,
    pub on_epoch: bool,
    pub reduce: Reduce,
    pub prog_bar: bool,
    /// The returned type, when the names match the returned values.
    pub ty: Option<Type>,
}

impl Metric {
    /// The kind, when the written type shows it.
    pub fn kind(&self) -> Option<Kind> {
        self.ty.as_ref().and_then(kind_of)
    }
}

/// `f32` → F32, `u64` → Int, `bool` → Bool, `Loss<D>` → F32; `None` for anything else (an alias).
pub fn kind_of(ty: &Type) -> Option<Kind> {
    let (ident, _) = path_parts(ty)?;
    Some(match ident.to_string().as_str() {
        "f32" | "Loss" | "Tensor" => Kind::F32,
        "f64" => Kind::F64,
        "bool" => Kind::Bool,
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            Kind::Int
        }
        _ => return None,
    })
}

impl Module {
    /// Removes the helper attributes from `item` and models it. `None` when it is no module impl.
    pub fn from_ast(cx: &Ctxt, item: &mut ItemImpl, manual: bool) -> Option<Self> {
        let mut callbacks = Vec::new();
        let mut impl_logs = Vec::new();
        item.attrs.retain(|a| {
            if let Some(callback) = Callback::of(a) {
                callbacks.extend(attr::parse_callback(cx, callback, a));
                false
            } else if attr::is(a, "log") {
                impl_logs.push(attr::path_span(a));
                false
            } else {
                true
            }
        });
        for span in impl_logs {
            cx.error_at(
                span,
                "`#[log]` goes on a step method, not on the `impl` block",
            );
        }
        if let Some((path, _)) = &item.trait_ {
            // The attribute is the mistake: its methods' `#[log]`s must not report themselves as well.
            for impl_item in &mut item.items {
                if let ImplItem::Fn(f) = impl_item {
                    f.attrs.retain(|a| !attr::is_helper(a));
                }
            }
            cx.error_spanned_by(
                path,
                "`#[lightning_module]` goes on the module's inherent impl (`impl<D: Backend> Name<D> { … }`), \
                 it writes the `LightningModule` impl itself",
            );
            return None;
        }
        let param = device_param(cx, &item.generics, "a `#[lightning_module]` impl");
        let (checkpoints, early_stoppings) = callbacks
            .into_iter()
            .partition(|c: &CallbackAttr| c.callback == Callback::Checkpoint);
        let mut module = Module {
            self_ty: (*item.self_ty).clone(),
            manual,
            generics: item.generics.clone(),
            device: None,
            steps: Vec::new(),
            hooks: Vec::new(),
            optimizers: None,
            user_callbacks: None,
            checkpoints,
            early_stoppings,
            method_names: Vec::new(),
        };
        for impl_item in &mut item.items {
            let ImplItem::Fn(f) = impl_item else { continue };
            let mut logs = Vec::new();
            f.attrs.retain(|a| {
                if attr::is(a, "log") {
                    logs.push(a.clone());
                    false
                } else if let Some(callback) = Callback::of(a) {
                    cx.error_at(
                        attr::path_span(a),
                        format!(
                            "`#[{}]` goes on the `impl` block, not on a method",
                            callback.name()
                        ),
                    );
                    false
                } else {
                    true
                }
            });
            module.method_names.push(f.sig.ident.clone());
            module.method(cx, f, logs);
        }
        module.device = match param {
            Ok(Some(ident)) => Some(Device::Param(ident)),
            Ok(None) => module.concrete_device(cx, item),
            Err(()) => None,
        };
        Some(module)
    }

    fn method(&mut self, cx: &Ctxt, f: &ImplItemFn, logs: Vec<syn::Attribute>) {
        let name = f.sig.ident.to_string();
        let order = self.method_names.len();
        let mut log: Option<LogAttr> = None;
        for a in &logs {
            let parsed = attr::parse_log(cx, a);
            if log.is_some() {
                cx.error_at(
                    attr::path_span(a),
                    format!(
                        "duplicate `#[log]` on `{name}`, name all its metrics in one `#[log(…)]`"
                    ),
                );
            } else {
                log = parsed;
            }
        }
        let log_broken = !logs.is_empty() && log.as_ref().is_none_or(|l| !l.complete);
        let step = StepKind::from_name(&name);
        let hook = HookKind::from_name(&name);
        let logs_nothing =
            matches!(step, Some(StepKind::Predict)) || hook.is_some_and(|h| h.stage().is_none());
        if let (Some(a), true) = (
            logs.first(),
            (step.is_none() && hook.is_none()) || logs_nothing,
        ) {
            let allowed = crate::suggest::alternatives(LOGGING_METHODS);
            let msg = if logs_nothing {
                format!("`#[log]` on `{name}`, which logs nothing: `#[log]` goes on {allowed}")
            } else if let Some(s) = did_you_mean(&name, LOGGING_METHODS) {
                format!("`#[log]` on `{name}`, which is not a step, did you mean `{s}`?")
            } else {
                format!("`#[log]` on `{name}`, which is not a step: `#[log]` goes on {allowed}")
            };
            cx.error_at(attr::path_span(a), msg);
            log = None;
        }
        if let Some(kind) = step {
            let receiver = match kind {
                StepKind::Training => Receiver::Mut,
                StepKind::Validation | StepKind::Test | StepKind::Predict => Receiver::Eval,
            };
            let signature = kind.signature(self.manual);
            let params = params(cx, f, &signature, receiver);
            let (args, batch, grads) = if kind == StepKind::Predict {
                let batch = check_count(cx, f, params, 1, &signature);
                (vec![StepArg::Batch], batch, None)
            } else {
                step_args(cx, f, kind, &params, self.manual)
            };
            self.steps.push(Step {
                kind,
                ident: f.sig.ident.clone(),
                batch,
                grads,
                args,
                ret: returned(&f.sig.output, &f.sig.ident),
                log,
                log_broken,
                order,
            });
        } else if let Some(kind) = hook {
            let receiver = if kind == HookKind::SaveCheckpoint {
                Receiver::Ref
            } else {
                Receiver::Mut
            };
            let params = params(cx, f, kind.signature(), receiver);
            let takes_log = if kind.stage().is_none() {
                check_count(cx, f, params, 1, kind.signature());
                true
            } else if params.len() > 1 {
                // Lightning's hooks take no log: the parameter may be left out.
                cx.error_spanned_by(
                    params[1],
                    format!(
                        "`{name}` takes at most 1 parameter besides `self`, the `log: &mut StepLog` it may \
                         leave out, found {}: the runtime calls `{}`",
                        params.len(),
                        kind.signature()
                    ),
                );
                true
            } else {
                params.len() == 1
            };
            self.hooks.push(Hook {
                kind,
                ident: f.sig.ident.clone(),
                ret: returned(&f.sig.output, &f.sig.ident),
                takes_log,
                log,
                log_broken,
                order,
            });
        } else if name == "configure_optimizers" {
            let sig = "fn configure_optimizers(&self) -> Adam<D>";
            let params = params(cx, f, sig, Receiver::Ref);
            check_count(cx, f, params, 0, sig);
            let ret = returned(&f.sig.output, &f.sig.ident);
            if ret.inner.is_none() {
                cx.error_spanned_by(
                    &f.sig.ident,
                    "`configure_optimizers` returns nothing, expected an optimizer (`Adam<D>`, `Sgd<D>`) or `Optimizers<Self, D>`",
                );
            }
            if ret.fallible {
                cx.error_spanned_by(
                    &ret.tokens,
                    "`configure_optimizers` cannot fail: return the optimizer or `Optimizers<Self, D>` itself",
                );
            }
            self.optimizers = Some(Optimizers {
                ident: f.sig.ident.clone(),
                is_optimizers: ret
                    .inner
                    .as_ref()
                    .and_then(path_parts)
                    .is_some_and(|(i, _)| i == "Optimizers"),
                ret_span: ret.span,
            });
        } else if name == "configure_callbacks" {
            let sig = "fn configure_callbacks(&self) -> Vec<Box<dyn Callback>>";
            let params = params(cx, f, sig, Receiver::Ref);
            check_count(cx, f, params, 0, sig);
            self.user_callbacks = Some(f.sig.ident.clone());
        }
    }

    /// A non-generic impl: the device from `training_step`'s `Gradients<f32, D>` (its
    /// `&mut ManualOptimization<'_, Self, D>` in manual optimization).
    fn concrete_device(&self, cx: &Ctxt, item: &ItemImpl) -> Option<Device> {
        let training = self.step(StepKind::Training);
        let grads = training.and_then(|s| s.grads.as_ref());
        let named = grads.map(|ty| match ty {
            Type::Reference(r) => &*r.elem,
            other => other,
        });
        match named.and_then(path_parts) {
            Some((i, args))
                if (i == "Gradients" || i == "ManualOptimization") && args.len() == 2 =>
            {
                Some(Device::Concrete(Box::new(args[1].clone())))
            }
            // A missing `training_step` or `grads` parameter is reported on its own.
            _ if grads.is_none() => None,
            _ => {
                cx.error_spanned_by(
                    &item.self_ty,
                    if self.manual {
                        "cannot tell the device of this module: make the impl generic over it \
                         (`impl<D: Backend> Name<D>`) or name it in `training_step`'s \
                         `opt: &mut ManualOptimization<'_, Self, Cpu>`"
                    } else {
                        "cannot tell the device of this module: make the impl generic over it \
                         (`impl<D: Backend> Name<D>`) or name it in `training_step`'s `grads: Gradients<f32, Cpu>`"
                    },
                );
                None
            }
        }
    }

    pub fn step(&self, kind: StepKind) -> Option<&Step> {
        self.steps.iter().find(|s| s.kind == kind)
    }

    /// The steps and hooks that may log, in the order of the impl.
    pub fn loggers(&self) -> Vec<Logger<'_>> {
        let steps = self
            .steps
            .iter()
            .filter(|s| s.kind.stage().is_some())
            .map(|s| (s.order, Source::Step(s.kind), &s.ret, &s.log, s.log_broken));
        let hooks = self
            .hooks
            .iter()
            .filter(|h| h.kind.stage().is_some())
            .map(|h| (h.order, Source::Hook(h.kind), &h.ret, &h.log, h.log_broken));
        let mut all: Vec<_> = steps.chain(hooks).collect();
        all.sort_by_key(|(order, ..)| *order);
        all.into_iter()
            .map(|(_, source, ret, log, log_broken)| Logger {
                source,
                ret,
                log: log.as_ref(),
                log_broken,
            })
            .collect()
    }

    /// Every metric the `#[log]` attributes declare, in the order of the methods and the names.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for logger in self.loggers() {
            let (Some(log), Some(stage)) = (logger.log, logger.source.stage()) else {
                continue;
            };
            let matched = log.metrics.len() == logger.ret.values.len();
            let (on_step, on_epoch) = logger.source.defaults();
            for (i, m) in log.metrics.iter().enumerate() {
                out.push(Metric {
                    name: m.name.clone(),
                    span: m.name_span,
                    source: logger.source,
                    stage,
                    on_step: m.on_step.unwrap_or(on_step),
                    on_epoch: m.on_epoch.unwrap_or(on_epoch),
                    reduce: m.reduce.unwrap_or(Reduce::Mean),
                    prog_bar: m.prog_bar,
                    ty: matched.then(|| logger.ret.values[i].clone()),
                });
            }
        }
        out
    }
}

//! Procedural macros of fulgur: `#[derive(ModuleState)]`, `#[lightning_module]` with its helper
//! attributes `#[log]`, `#[checkpoint]` and `#[early_stopping]`. Use them through the `fulgur` crate, which re-exports them;
//! its guide ("The module DSL", "What the macros generate") describes them at length.

mod ast;
mod attr;
mod check;
mod ctxt;
mod duration;
mod expand;
mod fallback;
mod suggest;

use proc_macro::TokenStream;

/// Derives `ModuleState` (the hyperparameters, and building the module from them) and dfdx's
/// `TensorCollection` (the names of the parameters in a checkpoint) for a module struct.
///
/// The struct has named fields and one type parameter, the device (any name, bounded by fulgur's
/// `Backend` or by dfdx's `Device<f32>`), or no type parameter when its fields name a concrete device
/// (`Built<Mlp, Cpu>`). Each field is one of:
///
/// | field | in the checkpoint | built by `from_hparams` as |
/// |---|---|---|
/// | `name: T`, a dfdx module with `f32` parameters (`Built<M, D>`, an alias, `modules::Linear<I, O, f32, D>`) | its parameters, as `name.…` | a fresh `T`, as `device.build_module::<M, f32>()` |
/// | `name: Inner<D>`, a struct that also derives `ModuleState` | its parameters, as `name.…` | `Inner::from_hparams(Default::default(), device)` |
/// | `#[hparams] name: H`, at most one | the hyperparameters | the `H` given to `from_hparams` |
/// | `#[skip] name: T` | nothing | `T::default()` |
///
/// A field is a module by what its type is, checked by `rustc` at the field: a type that is neither a
/// dfdx module of `f32` parameters nor a `ModuleState` is an error there (fulgur trains `f32`
/// parameters). `H` implements `Serialize` and `DeserializeOwned`; without an `#[hparams]` field the
/// hyperparameters are `()`. `#[hparams]` and `#[skip]` take no arguments.
///
/// `#[module_state(build = path)]` on the struct names a function `fn(H, &D) -> Result<Self>` that
/// builds the module instead (to configure layers from the hyperparameters: a dropout probability, a
/// batch-norm momentum); the derive still writes the parameter names and `hparams()`.
///
/// ```ignore
/// use fulgur::dfdx::prelude::*;
/// use fulgur::prelude::*;
///
/// #[derive(Clone, Serialize, Deserialize)]
/// #[serde(crate = "fulgur::serde")]
/// struct Config {
///     lr: f64,
/// }
///
/// #[derive(ModuleState)]
/// struct LitDigits<D: Backend> {
///     net: Built<(Linear<64, 32>, ReLU, Linear<32, 10>), D>,
///     #[hparams]
///     config: Config,
///     /// Not a parameter: `0` in a module rebuilt from a checkpoint.
///     #[skip]
///     steps_seen: usize,
/// }
///
/// let model = LitDigits::from_hparams(Config { lr: 1e-3 }, &Cpu::default())?;
/// ```
#[proc_macro_derive(ModuleState, attributes(hparams, skip, module_state))]
pub fn derive_module_state(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::state::derive(&input).into()
}

/// Writes the `LightningModule` impl of a module from its inherent impl block, whose methods it
/// recognizes by name. Its one argument, `#[lightning_module(manual_optimization)]`, is Lightning's
/// manual optimization: `training_step` receives the optimizers and steps them itself.
///
/// **It reads** the impl (`impl<D: Backend> Lit<D>`, or `impl<D: Device<f32>> Lit<D>`, to which it adds
/// `where D: Backend`; or a non-generic impl whose `training_step` names the device in
/// `Gradients<f32, Cpu>`), the `#[log(...)]` on its methods and the `#[checkpoint(...)]` and
/// `#[early_stopping(...)]` attributes written above or below it. **It writes** the impl back with those helper attributes removed, your
/// methods unchanged, and a `LightningModule<D>` impl that calls them by path: `Batch` is
/// `training_step`'s batch type, `Prediction` what `predict_step` returns (`()` without it), `METRICS`
/// the metrics the `#[log]`s declare, and `configure_callbacks` builds one `EarlyStopping` per
/// `#[early_stopping]` and one `ModelCheckpoint` per `#[checkpoint]`, after your own callbacks. The checks between these parts (a monitor or a filename
/// placeholder that names no logged metric, a step without its loss, …) are compile errors.
///
/// | method | signature | becomes |
/// |---|---|---|
/// | `training_step` (required) | `(&mut self, batch: B, grads: Gradients<f32, D>) -> Loss<D>`, optionally with `batch_idx: usize` before or after `grads` | `training_step`; `B` is the module's `Batch` |
/// | `training_step` with `manual_optimization` | `(&mut self, batch: B, opt: &mut ManualOptimization<'_, Self, D>) -> values`, optionally with `batch_idx: usize` before or after `opt` | `manual_training_step` and `MANUAL_OPTIMIZATION = true` |
/// | `validation_step`, `test_step` | `(&self, batch: B) -> values`, optionally with `batch_idx: usize` after `batch` | the trait's steps |
/// | `predict_step` | `(&self, batch: B) -> P` | `predict_step`; `P` is the module's `Prediction` |
/// | `configure_optimizers` (required) | `(&self) -> O` | `Optimizers::new(O)`, or `O` itself when it is `Optimizers<Self, D>` |
/// | `configure_callbacks` | `(&self) -> Vec<Box<dyn Callback>>` (or a `Result` of it) | your callbacks, then the `#[early_stopping]` and `#[checkpoint]` ones |
/// | `on_train_batch_end`, `on_train_epoch_end`, `on_validation_epoch_end` | `(&mut self)` or `(&mut self, log: &mut StepLog)`, returning `()`, `Result<()>` or, with `#[log]`, values | the hooks |
/// | `on_save_checkpoint` / `on_load_checkpoint` | `(&self, checkpoint: &mut Checkpoint)` / `(&mut self, checkpoint: &Checkpoint)` | the hooks |
///
/// Any method may return `Result<T>` instead of `T`: the error is propagated. A training step returns the
/// loss, or a tuple whose first element is the loss; with `manual_optimization` it returns what its
/// `#[log]` names (training metrics), as `validation_step` does, and steps each optimizer with
/// `opt.step(index, self, &mut grads)`. Evaluation steps take `&self`: they must not change the module. A step's `batch_idx` counts the batches from 0 in each
/// training epoch and each validation or test run. Other methods are left alone.
///
/// ```ignore
/// #[lightning_module]
/// #[checkpoint(monitor = "val_loss", top_k = 2, filename = "digits-{epoch:02d}-{val_loss:.2f}")]
/// impl<D: Backend> LitDigits<D> {
///     fn configure_optimizers(&self) -> Adam<D> {
///         Adam::new(AdamConfig { lr: self.config.lr, ..Default::default() })
///     }
///
///     #[log(train_loss(prog_bar, on_epoch))]
///     fn training_step(
///         &mut self,
///         batch: ClassificationBatch<64, 10, D>,
///         grads: Gradients<f32, D>,
///     ) -> Loss<D> {
///         self.steps_seen += 1;
///         let logits = self.net.forward_mut(batch.x.traced(grads));
///         cross_entropy_with_logits_loss(logits, batch.y)
///     }
///
///     #[log(val_loss)]
///     fn validation_step(&self, batch: ClassificationBatch<64, 10, D>, batch_idx: usize) -> f32 {
///         let logits = self.net.forward(batch.x);
///         if batch_idx == 0 {
///             println!("first logits: {:?}", &logits.as_vec()[..10]);
///         }
///         cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0]
///     }
///
///     #[log(epochs_ended)]
///     fn on_train_epoch_end(&mut self, log: &mut StepLog) -> u64 {
///         log.epoch() + 1
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn lightning_module(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::module::lightning_module(args.into(), input.into()).into()
}

/// Names the metrics a step or a hook returns, in order: one name for a single value, one per element
/// of a tuple. Only valid on a method of a `#[lightning_module]` impl, which consumes it.
///
/// ```text
/// #[log(name, name(option, …), "name/with/slashes"(option, …), …)]
/// ```
///
/// It goes on `training_step`, `validation_step` and `test_step`, and on the hooks
/// `on_train_batch_end`, `on_train_epoch_end` and `on_validation_epoch_end`, whose metrics belong to the
/// training or validation stage. A name is an identifier (`val_loss`) or a string literal
/// (`"val/loss"`); one name is one metric in the whole module. Options go in parentheses after it:
///
/// | option | meaning | default |
/// |---|---|---|
/// | `prog_bar`, `prog_bar = false` | show in the progress bar | off |
/// | `on_step`, `on_step = false` | record every step's value | on in `training_step` and `on_train_batch_end` |
/// | `on_epoch`, `on_epoch = false` | aggregate over the epoch | on everywhere else |
/// | `reduce = "mean"`, `"sum"`, `"max"` or `"min"` | the epoch aggregation | `"mean"`, weighted by batch size |
///
/// A metric's kind follows the returned type (`f32` and `Loss<D>`: f32, `f64`, integers, `bool`);
/// filename templates are checked against it (`{epoch:02d}` needs an integer). A metric logged both
/// `on_step` and `on_epoch` is also known as `name_step` and `name_epoch`.
///
/// ```ignore
/// #[log(train_loss(prog_bar, on_epoch))]
/// fn training_step(&mut self, batch: B, grads: Gradients<f32, D>) -> Loss<D> {
///     // …
/// #   todo!()
/// }
///
/// #[log(val_loss, val_acc(prog_bar), "val/correct"(reduce = "sum"))]
/// fn validation_step(&self, batch: B) -> (f32, f32, usize) {
///     // …
/// #   todo!()
/// }
/// ```
#[proc_macro_attribute]
pub fn log(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced::helper("log", args.into(), input.into()).into()
}

/// Declares a `ModelCheckpoint` on a `#[lightning_module]` impl (written above or below it, which
/// consumes it): `#[checkpoint(argument = value, …)]`, one callback per attribute, built with
/// `ModelCheckpoint::builder()` and the builder method each argument names. Values are literals, checked
/// at compile time: a `monitor` or a filename placeholder must name a metric that `fit` logs (or `epoch`,
/// `step`), a template must be able to print its metric's kind, and the triggers exclude each other.
///
#[doc = fulgur_rules::checkpoint_args_markdown!()]
///
/// An unknown argument gets a suggestion, also from Lightning's names (`save_top_k` → `top_k`).
///
/// ```ignore
/// #[lightning_module]
/// #[checkpoint(monitor = "val_loss", mode = "min", top_k = 2, filename = "digits-{epoch:02d}-{val_loss:.2f}")]
/// #[checkpoint(every_n_train_steps = 50, top_k = -1, save_last = true)]
/// impl<D: Backend> LitDigits<D> {
///     // …
/// }
/// ```
#[proc_macro_attribute]
pub fn checkpoint(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced::helper("checkpoint", args.into(), input.into()).into()
}

/// Declares an `EarlyStopping` on a `#[lightning_module]` impl (written above or below it, which
/// consumes it): `#[early_stopping(argument = value, …)]`, one callback per attribute, built with
/// `EarlyStopping::builder()` and the builder method each argument names, after your own callbacks.
/// Values are literals, checked at compile time: `monitor` is required and must name a metric that
/// `fit` logs (or `epoch`, `step`), `mode` is `"min"` or `"max"`, `patience` is at least 0, and two
/// `#[early_stopping]`s cannot watch the same metric in the same mode (they would share one state key).
///
#[doc = fulgur_rules::early_stopping_args_markdown!()]
///
/// An unknown argument gets a suggestion, also from other libraries' names (`delta` → `min_delta`).
///
/// ```ignore
/// #[lightning_module]
/// #[early_stopping(monitor = "val_loss", patience = 3, min_delta = 0.001)]
/// impl<D: Backend> LitDigits<D> {
///     // …
/// }
/// ```
#[proc_macro_attribute]
pub fn early_stopping(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::misplaced::helper("early_stopping", args.into(), input.into()).into()
}

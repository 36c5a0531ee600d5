//! `#[early_stopping(...)]`: the callbacks it declares reach the trainer with their settings and stop
//! training when the monitored metric stops improving; every row of its table calls a builder method
//! that exists.

use fulgur::callbacks::{EarlyStopping, Mode};
use fulgur::dfdx::prelude::*;
use fulgur::optim::Sgd;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::scripted::Units;

type X<D> = Tensor<(usize, Const<1>), f32, D>;

/// The validation loss of each epoch: it improves until epoch 1, then not for two epochs.
const VAL_LOSS: [f32; 8] = [1.0, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1];

#[derive(ModuleState)]
struct LitPlateau<D: Backend> {
    net: Built<Linear<1, 1>, D>,
    #[skip]
    val_runs: usize,
}

#[lightning_module]
#[early_stopping(monitor = "val_loss", patience = 2)]
impl<D: Backend> LitPlateau<D> {
    fn configure_optimizers(&self) -> Sgd<D> {
        Sgd::new(Default::default())
    }

    #[log(train_loss)]
    fn training_step(&mut self, x: X<D>, grads: Gradients<f32, D>) -> Loss<D> {
        self.net.forward_mut(x.traced(grads)).square().mean()
    }

    #[log(val_loss)]
    fn validation_step(&self, _x: X<D>) -> f32 {
        VAL_LOSS[self.val_runs]
    }

    fn on_validation_epoch_end(&mut self) {
        self.val_runs += 1;
    }
}

/// The validation accuracy of each epoch: it rises, but by less than `min_delta` from epoch 2 on.
const VAL_ACC: [f32; 8] = [0.5, 0.7, 0.72, 0.73, 0.9, 0.95, 0.96, 0.97];

#[derive(ModuleState)]
struct LitAccuracy<D: Backend> {
    net: Built<Linear<1, 1>, D>,
    #[skip]
    val_runs: usize,
}

// Written above `#[lightning_module]`, the first attribute is handed to it, in the order written.
#[early_stopping(monitor = "val_acc", mode = "max", min_delta = 0.05, patience = 1)]
#[lightning_module]
#[early_stopping(monitor = "val_acc", patience = 100, check_finite = false)]
impl<D: Backend> LitAccuracy<D> {
    fn configure_optimizers(&self) -> Sgd<D> {
        Sgd::new(Default::default())
    }

    #[log(train_loss)]
    fn training_step(&mut self, x: X<D>, grads: Gradients<f32, D>) -> Loss<D> {
        self.net.forward_mut(x.traced(grads)).square().mean()
    }

    #[log(val_acc)]
    fn validation_step(&self, _x: X<D>) -> f32 {
        VAL_ACC[self.val_runs]
    }

    fn on_validation_epoch_end(&mut self) {
        self.val_runs += 1;
    }

    fn configure_callbacks(&self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }
}

fn quiet<M: LightningModule<Cpu>>() -> TrainerBuilder<M, Cpu> {
    Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .num_sanity_val_steps(0)
        .max_epochs(8)
}

#[test]
fn training_stops_when_the_monitored_metric_stops_improving_for_patience_checks() {
    let mut trainer = quiet::<LitPlateau<Cpu>>().build().unwrap();
    let model = LitPlateau::from_hparams((), &Cpu::default()).unwrap();
    trainer
        .fit(model, &mut Units(2), Some(&mut Units(1)), None)
        .unwrap();
    // Best at epoch 1 (0.5); epochs 2 and 3 do not improve: the stop comes at the end of epoch 3.
    assert_eq!(trainer.current_epoch(), 4);
    let early = trainer
        .callback::<EarlyStopping>()
        .expect("the `#[early_stopping]` callback is in the run");
    assert_eq!(early.monitor(), "val_loss");
    assert_eq!(early.patience(), 2);
    assert_eq!(early.mode(), Mode::Min);
    assert_eq!(early.min_delta(), 0.0);
    assert_eq!(early.stopped_epoch(), 3);
    assert_eq!(early.wait_count(), 2);
    assert_eq!(early.best_score(), 0.5);
    assert_eq!(
        early.state_key_string(),
        "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
    );
}

#[test]
fn mode_and_min_delta_reach_the_callback_and_two_callbacks_watch_one_metric_in_two_modes() {
    let mut trainer = quiet::<LitAccuracy<Cpu>>().build().unwrap();
    let model = LitAccuracy::from_hparams((), &Cpu::default()).unwrap();
    trainer
        .fit(model, &mut Units(2), Some(&mut Units(1)), None)
        .unwrap();
    // Max mode: 0.72 is not 0.05 better than 0.7 (epoch 2), patience 1: the stop comes at the end of
    // epoch 2, before 0.9. (The second callback, in min mode, sees no improvement either, but has the
    // patience to wait.)
    assert_eq!(trainer.current_epoch(), 3);
    let early = trainer.callback::<EarlyStopping>().expect("present");
    assert_eq!(early.monitor(), "val_acc");
    assert_eq!((early.mode(), early.patience()), (Mode::Max, 1));
    // Stored as Lightning stores it: positive in max mode.
    assert_eq!(early.min_delta(), 0.05);
    assert_eq!(early.best_score(), f64::from(0.7f32));
    assert_eq!((early.stopped_epoch(), early.wait_count()), (2, 1));
}

/// The `#[early_stopping]` table names a builder method for each argument: each must exist and take the
/// value the macro writes for the argument's kind (`expand::module::builder_value` of the macro crate),
/// so that the table and the builder cannot drift apart. Derived from the table itself: a new key needs
/// no edit, and a key whose kind has no form here fails to compile.
#[test]
fn every_early_stopping_argument_calls_an_existing_builder_method() {
    macro_rules! generated {
        (Metric) => {
            "val_loss"
        };
        (Bool) => {
            true
        };
        (Count) => {
            1
        };
        (Float) => {
            -0.001
        };
        (Mode) => {
            ::fulgur::__private::fulgur_runtime::callbacks::Mode::Max
        };
    }
    macro_rules! build_each {
        ($($key:ident: $kind:ident => $method:ident, [$($alias:literal),*], $doc:literal;)*) => {{
            let mut called: Vec<&str> = Vec::new();
            $(
                let built = EarlyStopping::builder()
                    .monitor("val_loss")
                    .$method(generated!($kind))
                    .build();
                assert!(built.is_ok(), "`{}`: {:?}", stringify!($key), built.err());
                called.push(stringify!($method));
            )*
            called
        }};
    }
    let called = fulgur_rules::early_stopping_args!(build_each);
    let table: Vec<&str> = fulgur_rules::early_stopping::ARGUMENTS
        .iter()
        .map(|a| a.method)
        .collect();
    assert_eq!(called, table);
}

//! A module written by hand, without the macros: what `#[lightning_module]` generates.

use std::sync::{Arc, Mutex};

use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use fulgur::dfdx::optim::AdamConfig;
use fulgur::dfdx::prelude::*;
use fulgur::optim::{Adam, StepLr};
use fulgur::prelude::*;
use serde::{Deserialize, Serialize};

pub type Mlp = (Linear<64, 32>, ReLU, Linear<32, 10>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hparams {
    pub lr: f64,
    pub init_seed: u64,
    pub with_scheduler: bool,
}

impl Default for Hparams {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            init_seed: 0,
            with_scheduler: false,
        }
    }
}

/// Two dfdx modules side by side, named `net` and `head`, to show the naming of composite modules.
pub struct LitMlp<D: Backend> {
    pub net: Built<Mlp, D>,
    pub head: Built<Linear<10, 10>, D>,
    pub hparams: Hparams,
    /// Hook calls, for order tests.
    pub events: Option<Arc<Mutex<Vec<String>>>>,
    /// A metric name the training step also logs, to test registry errors.
    pub extra_metric: Option<&'static str>,
}

impl<D: Backend> TensorCollection<f32, D> for LitMlp<D> {
    type To<E2: Dtype, D2: Device<E2>> = ();

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(visitor: &mut V) -> Result<Option<()>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("net", |s| &s.net, |s| &mut s.net),
                Self::module("head", |s| &s.head, |s| &mut s.head),
            ),
            |_| (),
        )
    }
}

impl<D: Backend> LitMlp<D> {
    fn event(&self, e: impl Into<String>) {
        if let Some(ev) = &self.events {
            ev.lock().unwrap().push(e.into());
        }
    }
}

impl LitMlp<Cpu> {
    pub fn new(hparams: Hparams) -> Self {
        Self::from_hparams(hparams, &Cpu::default()).unwrap()
    }
}

impl<D: Backend> ModuleState<D> for LitMlp<D> {
    type Hparams = Hparams;

    fn hparams(&self) -> &Hparams {
        &self.hparams
    }

    fn from_hparams(hparams: Hparams, device: &D) -> fulgur::Result<Self> {
        // Same weights for the same seed, whatever device object the caller passes.
        let _ = device;
        let dev = D::try_seeded(hparams.init_seed)
            .map_err(|e| fulgur::Error::Device(format!("{e:?}")))?;
        let net = dev.build_module::<Mlp, f32>();
        let head = dev.build_module::<Linear<10, 10>, f32>();
        Ok(Self {
            net,
            head,
            hparams,
            events: None,
            extra_metric: None,
        })
    }
}

impl<D: Backend> LightningModule<D> for LitMlp<D> {
    type Batch = ClassificationBatch<64, 10, D>;
    type Prediction = Vec<usize>;

    const METRICS: &'static [MetricSpec] = &[
        MetricSpec::train("train_loss").on_epoch(true).prog_bar(),
        MetricSpec::validation("val_loss"),
        MetricSpec::validation("val_acc").prog_bar(),
        MetricSpec::test("test_acc"),
    ];

    fn training_step(
        &mut self,
        batch: Self::Batch,
        grads: Gradients<f32, D>,
        log: &mut StepLog,
    ) -> fulgur::Result<Loss<D>> {
        let logits = self
            .head
            .forward_mut(self.net.forward_mut(batch.x.traced(grads)));
        let loss = cross_entropy_with_logits_loss(logits, batch.y);
        log.log("train_loss", loss.as_vec()[0]);
        if let Some(name) = self.extra_metric {
            log.log(name, 1.0);
        }
        self.event("training_step");
        Ok(loss)
    }

    fn validation_step(&self, batch: Self::Batch, log: &mut StepLog) -> fulgur::Result<()> {
        let (loss, acc) = self.evaluate(batch);
        log.log("val_loss", loss);
        log.log("val_acc", acc);
        self.event("validation_step");
        Ok(())
    }

    fn test_step(&self, batch: Self::Batch, log: &mut StepLog) -> fulgur::Result<()> {
        let (_, acc) = self.evaluate(batch);
        log.log("test_acc", acc);
        Ok(())
    }

    fn predict_step(&self, batch: Self::Batch) -> fulgur::Result<Vec<usize>> {
        let logits = self.head.forward(self.net.forward(batch.x));
        Ok(argmax_rows(&logits.as_vec()))
    }

    fn configure_optimizers(&self) -> Optimizers<Self, D> {
        let adam = Adam::new(AdamConfig {
            lr: self.hparams.lr,
            ..Default::default()
        });
        let opts = Optimizers::new(adam);
        if self.hparams.with_scheduler {
            opts.with_scheduler(StepLr::new(1, 0.5).interval(Interval::Step))
        } else {
            opts
        }
    }

    fn on_train_batch_end(&mut self, _log: &mut StepLog) -> fulgur::Result<()> {
        self.event("module.on_train_batch_end");
        Ok(())
    }

    fn on_train_epoch_end(&mut self, _log: &mut StepLog) -> fulgur::Result<()> {
        self.event("module.on_train_epoch_end");
        Ok(())
    }
}

impl<D: Backend> LitMlp<D> {
    fn evaluate(&self, batch: ClassificationBatch<64, 10, D>) -> (f32, f32) {
        let logits = self.head.forward(self.net.forward(batch.x));
        let pred = argmax_rows(&logits.as_vec());
        let correct = pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| p == l)
            .count();
        let loss = cross_entropy_with_logits_loss(logits, batch.y).as_vec()[0];
        (loss, correct as f32 / batch.labels.len() as f32)
    }
}

pub fn argmax_rows(values: &[f32]) -> Vec<usize> {
    values
        .chunks(10)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > r[best] { i } else { best })
        })
        .collect()
}

/// The digits set split into train/val loaders of batch size 32.
pub fn loaders() -> (
    fulgur::data::ClassificationLoader<64, 10, Cpu>,
    fulgur::data::ClassificationLoader<64, 10, Cpu>,
) {
    let data = fulgur::datasets::digits().unwrap();
    let (train, val) = data.split(0.2, 7).unwrap();
    let dev = Cpu::default();
    (
        train.loader(32, true, &dev).unwrap(),
        val.loader(64, false, &dev).unwrap(),
    )
}

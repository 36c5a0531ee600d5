//! In-place loads against `std::fs::read` of the same file, and the peak memory of
//! `load_from_checkpoint` (issue 15, goal 3). Included by `benches/checkpoint_io.rs`.
//!
//! A module of 8 tensors and 400K, 10M or 100M f32 parameters (the closest to `params`), trained one
//! Adam step so that its checkpoint holds the weights and both moments (about 3× the weights), is
//! saved with `Trainer::save_checkpoint`, full and weights-only. Then, files in the page cache, medians
//! of `runs` after a warm-up, in one process, alternating:
//!
//! Before each timed operation the allocator's free memory is given back to the system (glibc's
//! `malloc_trim`), so that no operation reuses pages the previous one freed.
//!
//! - a resume: `fit` with `ckpt_path` on a fresh trainer and an existing module (built and touched
//!   before the clock starts) whose run is already complete, so `fit` restores the weights into the
//!   module's buffers and the Adam moments into new optimizer buffers and trains nothing; against
//!   `std::fs::read` of the full file;
//! - `load_weights` of the weights-only file into an existing module, against `std::fs::read` of that
//!   file: the load that reads straight into existing buffers and nothing else.
//!
//! The summary line is the resume's ratio, the detail lines give both. Peak extra memory of
//! `load_from_checkpoint` on the full file is measured from `VmHWM` (Linux; `n/a` elsewhere) after
//! resetting it through `/proc/self/clear_refs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fulgur::data::ClassificationLoader;
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use fulgur::dfdx::prelude::*;
use fulgur::module::load_weights;
use fulgur::optim::Adam;
use fulgur::prelude::*;

use super::{median, peak_during, trim};

/// Tensors per module: the loads' one read buffer is the largest tensor, so a module of 100M
/// parameters is cut into tensors of 50 MB.
const TENSORS: usize = 8;

/// A flat module of [`TENSORS`] vectors of `$n` values, `w0`…`w7`, its memory touched when built.
macro_rules! flat {
    ($name:ident, $n:expr) => {
        pub struct $name<D: Backend> {
            w: [Tensor<Rank1<$n>, f32, D>; TENSORS],
            hparams: (),
        }

        impl<D: Backend> TensorCollection<f32, D> for $name<D> {
            type To<E2: Dtype, D2: Device<E2>> = ();

            fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
                visitor: &mut V,
            ) -> Result<Option<()>, V::Err> {
                macro_rules! field {
                    ($i:literal) => {
                        Self::tensor(
                            concat!("w", $i),
                            |s| &s.w[$i],
                            |s| &mut s.w[$i],
                            TensorOptions::reset_to_zeros(),
                        )
                    };
                }
                visitor.visit_fields(
                    (
                        (field!(0), field!(1), field!(2), field!(3)),
                        (field!(4), field!(5), field!(6), field!(7)),
                    ),
                    |_| (),
                )
            }
        }

        impl<D: Backend> ModuleState<D> for $name<D> {
            type Hparams = ();

            fn hparams(&self) -> &() {
                &self.hparams
            }

            fn from_hparams(_: (), device: &D) -> fulgur::Result<Self> {
                let w = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| {
                    let mut t: Tensor<Rank1<$n>, f32, D> = device.zeros();
                    t.copy_from(&vec![0.5 + i as f32; $n]);
                    t
                });
                Ok(Self { w, hparams: () })
            }
        }

        impl<D: Backend> LightningModule<D> for $name<D> {
            type Batch = ClassificationBatch<1, 1, D>;
            type Prediction = ();

            fn training_step(
                &mut self,
                _batch: Self::Batch,
                grads: Gradients<f32, D>,
                _log: &mut StepLog,
            ) -> fulgur::Result<Loss<D>> {
                Ok(self.w[0].clone().traced(grads).square().mean())
            }

            fn configure_optimizers(&self) -> Optimizers<Self, D> {
                Optimizers::new(Adam::new(Default::default()))
            }
        }
    };
}

flat!(Small, 50_000);
flat!(Medium, 1_250_000);
flat!(Large, 12_500_000);

fn loader(dev: &Cpu) -> ClassificationLoader<1, 1, Cpu> {
    ClassificationData::<1, 1>::new(vec![0.0], vec![0])
        .expect("one sample")
        .loader(1, false, dev)
        .expect("a loader")
}

fn trainer<M: LightningModule<Cpu>>(dir: &Path) -> Trainer<M> {
    Trainer::builder()
        .max_steps(1)
        .default_root_dir(dir)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .build()
        .expect("a trainer")
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The module of the three closest to `params` parameters.
pub fn run(dir: &Path, params: usize, runs: usize) -> Vec<String> {
    if params >= 30_000_000 {
        measure::<Large<Cpu>>(dir, runs)
    } else if params >= 3_000_000 {
        measure::<Medium<Cpu>>(dir, runs)
    } else {
        measure::<Small<Cpu>>(dir, runs)
    }
}

fn measure<M>(dir: &Path, runs: usize) -> Vec<String>
where
    M: LightningModule<Cpu, Hparams = (), Batch = ClassificationBatch<1, 1, Cpu>>,
{
    let dir = tempfile::tempdir_in(dir).expect("a directory");
    let dir = dir.path();
    let dev = Cpu::default();
    let (full, weights): (PathBuf, PathBuf) = (dir.join("full.ckpt"), dir.join("weights.ckpt"));
    {
        let mut t = trainer::<M>(dir);
        let module = M::from_hparams((), &dev).expect("a module");
        t.fit(module, &mut loader(&dev), None, None)
            .expect("one step");
        t.save_checkpoint(&full, false).expect("a full checkpoint");
        t.save_checkpoint(&weights, true)
            .expect("a weights-only checkpoint");
    }
    let size = |p: &Path| std::fs::metadata(p).expect("a checkpoint").len();
    let (full_len, weights_len) = (size(&full), size(&weights));

    let time = |f: &mut dyn FnMut()| {
        trim();
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let mut module = M::from_hparams((), &dev).expect("a module");
    let (mut read_full, mut resume, mut read_weights, mut in_place) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs.max(1) {
        let r = time(&mut || drop(std::hint::black_box(std::fs::read(&full).expect("read"))));
        // The module exists before the clock starts, as it does when `fit` is given one.
        let target = M::from_hparams((), &dev).expect("a module");
        let mut t = trainer::<M>(dir);
        let mut data = loader(&dev);
        let mut target = Some(target);
        let s = time(&mut || {
            let target = target.take().expect("one module per resume");
            t.fit(target, &mut data, None, Some(CkptPath::Path(full.clone())))
                .expect("a resume")
        });
        assert_eq!(t.global_step(), 1, "the resume trained nothing");
        drop(t);
        let w = time(&mut || drop(std::hint::black_box(std::fs::read(&weights).expect("read"))));
        let l = time(&mut || load_weights(&mut module, &weights, true).expect("a load"));
        if run > 0 {
            read_full.push(r);
            resume.push(s);
            read_weights.push(w);
            in_place.push(l);
        }
    }
    let (read_full, resume, read_weights, in_place) = (
        median(read_full),
        median(resume),
        median(read_weights),
        median(in_place),
    );
    let rate = |bytes: u64, s: f64| mb(bytes) / 1e3 / s;
    let mut lines = vec![
        format!(
            "in-place load: {TENSORS} tensors, {:.0} MB of weights; full checkpoint {:.0} MB, weights-only {:.0} MB",
            mb(weights_len),
            mb(full_len),
            mb(weights_len)
        ),
        format!(
            "  resume (fit, ckpt_path)      {:8.1} ms  {:5.2} GB/s   std::fs::read {:8.1} ms  {:5.2} GB/s   {:.2}x",
            resume * 1e3,
            rate(full_len, resume),
            read_full * 1e3,
            rate(full_len, read_full),
            read_full / resume
        ),
        format!(
            "  load_weights into a module   {:8.1} ms  {:5.2} GB/s   std::fs::read {:8.1} ms  {:5.2} GB/s   {:.2}x",
            in_place * 1e3,
            rate(weights_len, in_place),
            read_weights * 1e3,
            rate(weights_len, read_weights),
            read_weights / in_place
        ),
    ];
    let memory = peak_during(|| {
        drop(std::hint::black_box(
            M::load_from_checkpoint(&full, &dev).expect("load_from_checkpoint"),
        ))
    })
    .map(|(before, peak)| peak.saturating_sub(before));
    lines.push(format!(
        "in-place load: {:.2}x std::fs::read",
        read_full / resume
    ));
    lines.push(match memory {
        Some(extra) => format!(
            "load_from_checkpoint peak extra memory: {:.0} MB for {:.0} MB of weights",
            mb(extra),
            mb(weights_len)
        ),
        None => format!(
            "load_from_checkpoint peak extra memory: n/a for {:.0} MB of weights",
            mb(weights_len)
        ),
    });
    lines
}

//! What the test modules share: three modules written by hand (what the macros generate), the harness
//! that runs this binary again as a child process, and readers of what a run leaves behind.

pub mod child;
pub mod mlp;
pub mod scripted;
pub mod wide;

use std::path::Path;

use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use mlp::{loaders, Hparams, LitMlp};

/// Every parameter by name, bit for bit.
pub type WeightBits = Vec<(String, Vec<u32>)>;

/// Every parameter of the module, bit for bit.
pub fn weight_bits<D: Backend>(m: &LitMlp<D>) -> WeightBits {
    bits(fulgur::module::state_dict(m).unwrap())
}

/// The parameters of a state dict, bit for bit.
pub fn bits(
    state_dict: impl IntoIterator<Item = (String, fulgur::checkpoint::TensorData)>,
) -> WeightBits {
    state_dict
        .into_iter()
        .map(|(k, t)| (k, t.as_f32().unwrap().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// The names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A trainer from `builder`, without logger and without checkpointing, fits a fresh [`LitMlp`] (default
/// hyperparameters) on the digits from `ckpt_path`: the trainer, and what `fit` returned.
pub fn fit_from(
    builder: TrainerBuilder<LitMlp<Cpu>, Cpu>,
    ckpt_path: impl Into<CkptPath>,
) -> (Trainer<LitMlp<Cpu>>, fulgur::Result<()>) {
    let (mut train, mut val) = loaders();
    let mut t = builder
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let result = t.fit(
        LitMlp::new(Hparams::default()),
        &mut train,
        Some(&mut val),
        Some(ckpt_path.into()),
    );
    (t, result)
}

/// [`fit_from`] where `fit` must fail: its error message, and the trainer (whose counters say what was
/// restored or trained before the error).
pub fn fit_error(
    builder: TrainerBuilder<LitMlp<Cpu>, Cpu>,
    ckpt_path: impl Into<CkptPath>,
) -> (String, Trainer<LitMlp<Cpu>>) {
    let ckpt_path = ckpt_path.into();
    let what = format!("`fit` from {ckpt_path:?}");
    match fit_from(builder, ckpt_path) {
        (t, Ok(())) => panic!("{what} succeeded and trained to step {}", t.global_step()),
        (t, Err(e)) => (e.to_string(), t),
    }
}

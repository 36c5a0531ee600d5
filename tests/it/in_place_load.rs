//! Loads that read straight into existing buffers, and loads that skip what they do not need.
//!
//! [`Wide`]'s `net.2.weight` (256 × 256) and its Adam moments are large enough to stay in the file until
//! they are loaded; its first layer's weight (64 × 256, 64 KiB) and the biases are read with the
//! structure.

use std::path::{Path, PathBuf};

use fulgur::checkpoint::{read_checkpoint, write_checkpoint, CheckpointError, TensorData};
use fulgur::dfdx::tensor::Cpu;
use fulgur::module::{load_state_dict, load_weights, state_dict};
use fulgur::prelude::*;
use fulgur::trainer::TrainerBuilder;

use crate::support::bits;
use crate::support::wide::{loader, Wide, WideHparams};

fn builder(max_steps: u64, dir: &Path) -> TrainerBuilder<Wide<Cpu>> {
    Trainer::builder()
        .default_root_dir(dir)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .num_sanity_val_steps(0)
        .seed(11)
        .max_steps(max_steps)
}

fn wide(init_seed: u64) -> Wide<Cpu> {
    Wide::from_hparams(WideHparams { init_seed }, &Cpu::default()).unwrap()
}

/// A run of `steps` steps from `ckpt_path` (or from scratch, from weights of seed 0), on a module that
/// starts from weights of `init_seed`.
fn run(
    steps: u64,
    dir: &Path,
    init_seed: u64,
    ckpt_path: Option<PathBuf>,
) -> (Trainer<Wide<Cpu>>, fulgur::Result<()>) {
    let mut t = builder(steps, dir).build().unwrap();
    let result = t.fit(
        wide(init_seed),
        &mut loader(),
        None,
        ckpt_path.map(CkptPath::Path),
    );
    (t, result)
}

/// A full checkpoint after 5 steps.
fn saved(dir: &Path) -> PathBuf {
    let (t, result) = run(5, dir, 0, None);
    result.unwrap();
    let path = dir.join("five.ckpt");
    t.save_checkpoint(&path, false).unwrap();
    path
}

/// Every tensor of a checkpoint (weights and optimizer state), bit for bit.
fn tensor_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let c = read_checkpoint(path).unwrap();
    let opt = c.optimizer.unwrap();
    let slots = opt.params.into_iter().flat_map(|(name, slots)| {
        slots
            .into_iter()
            .map(move |(slot, t)| (format!("{name}.{slot}"), t))
    });
    bits(c.state_dict.into_iter().chain(slots))
}

fn weights(m: &Wide<Cpu>) -> Vec<(String, Vec<u32>)> {
    bits(state_dict(m).unwrap())
}

/// The offset of `t`'s bytes in the file at `path`.
fn offset_of(path: &Path, t: &TensorData) -> usize {
    let file = std::fs::read(path).unwrap();
    let data = t.le_bytes();
    file.windows(data.len())
        .position(|w| w == &data[..])
        .unwrap()
}

/// `path` with one bit flipped in the middle of the bytes of `t` (as stored in the file).
fn flip_in(path: &Path, t: &TensorData) {
    let at = offset_of(path, t) + t.le_bytes().len() / 2;
    let mut file = std::fs::read(path).unwrap();
    file[at] ^= 0x08;
    std::fs::write(path, file).unwrap();
}

fn damaged(path: &Path, what: &str) -> String {
    format!(
        "checkpoint `{}` is damaged: checksum mismatch in {what}",
        path.display()
    )
}

#[test]
fn a_resume_restores_weights_and_optimizer_state_bit_for_bit_and_trains_on_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());

    // Resumed and saved again at once (no step taken): every tensor as it was stored.
    let (t, result) = run(5, dir.path(), 7, Some(path.clone()));
    result.unwrap();
    assert_eq!(t.global_step(), 5);
    let again = dir.path().join("again.ckpt");
    t.save_checkpoint(&again, false).unwrap();
    assert_eq!(tensor_bits(&again), tensor_bits(&path));

    // Resumed and trained on: the straight run's weights and moments.
    let (resumed, result) = run(9, dir.path(), 7, Some(path));
    result.unwrap();
    let (straight, result) = run(9, dir.path(), 0, None);
    result.unwrap();
    let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
    resumed.save_checkpoint(&a, false).unwrap();
    straight.save_checkpoint(&b, false).unwrap();
    assert_eq!(tensor_bits(&a), tensor_bits(&b));
}

#[test]
fn load_weights_equals_load_state_dict_of_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let ckpt = read_checkpoint(&path).unwrap();

    let mut whole = wide(3);
    load_state_dict(&mut whole, &ckpt.state_dict, true, &path).unwrap();
    let mut in_place = wide(3);
    load_weights(&mut in_place, &path, true).unwrap();
    assert_eq!(weights(&in_place), weights(&whole));
    assert_eq!(weights(&in_place), bits(ckpt.state_dict));
    assert_ne!(
        weights(&wide(3)),
        weights(&in_place),
        "the load changed something"
    );

    let loaded = Wide::<Cpu>::load_from_checkpoint(&path, &Cpu::default()).unwrap();
    assert_eq!(weights(&loaded), weights(&whole));
}

#[test]
fn a_damaged_weight_is_an_error_naming_file_and_tensor_for_every_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let ckpt = read_checkpoint(&path).unwrap();
    flip_in(&path, &ckpt.state_dict["net.2.weight"]);
    let expected = damaged(&path, "tensor `net.2.weight`");

    let err = load_weights(&mut wide(3), &path, true).unwrap_err();
    assert!(
        matches!(
            err,
            fulgur::Error::Checkpoint(CheckpointError::Corrupt { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), expected);
    let err = Wide::<Cpu>::load_from_checkpoint(&path, &Cpu::default())
        .err()
        .unwrap();
    assert_eq!(err.to_string(), expected);
    let (t, result) = run(9, dir.path(), 7, Some(path.clone()));
    assert_eq!(result.unwrap_err().to_string(), expected);
    assert_eq!(t.global_step(), 0, "nothing was trained");
    // The whole read says the same.
    assert_eq!(read_checkpoint(&path).unwrap_err().to_string(), expected);
}

#[test]
fn weights_only_loads_skip_the_optimizer_state_and_a_resume_reads_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let ckpt = read_checkpoint(&path).unwrap();
    let moments = &ckpt.optimizer.as_ref().unwrap().params["net.2.weight"];
    flip_in(&path, &moments["exp_avg_sq"]);

    // Loads of the weights do not read the damaged moment.
    let mut m = wide(3);
    load_weights(&mut m, &path, true).unwrap();
    assert_eq!(weights(&m), bits(ckpt.state_dict.clone()));
    let loaded = Wide::<Cpu>::load_from_checkpoint(&path, &Cpu::default()).unwrap();
    assert_eq!(weights(&loaded), weights(&m));
    // So does `validate` with a `ckpt_path`, which loads the weights into the module it is given.
    let mut t = builder(9, dir.path()).build().unwrap();
    t.validate(
        Some(wide(3)),
        &mut loader(),
        Some(CkptPath::Path(path.clone())),
    )
    .unwrap();
    assert_eq!(weights(t.module().unwrap()), weights(&m));

    // A resume needs it, reads it and finds the damage.
    let (t, result) = run(9, dir.path(), 7, Some(path.clone()));
    assert_eq!(
        result.unwrap_err().to_string(),
        damaged(&path, "optimizer state `net.2.weight`.`exp_avg_sq`")
    );
    assert_eq!(t.global_step(), 0);
}

#[test]
fn a_truncated_file_is_refused_before_anything_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let ckpt = read_checkpoint(&path).unwrap();
    let t = &ckpt.state_dict["net.2.weight"];
    let cut = offset_of(&path, t) + t.le_bytes().len() / 2;
    let file = std::fs::read(&path).unwrap();
    std::fs::write(&path, &file[..cut]).unwrap();

    let mut m = wide(3);
    let before = weights(&m);
    let err = load_weights(&mut m, &path, true).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("checkpoint `{}` is damaged:", path.display()))
            && err.contains("tensor `net.2.weight`")
            && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(weights(&m), before, "the module is unchanged");
    let err = Wide::<Cpu>::load_from_checkpoint(&path, &Cpu::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_wrong_shape_or_a_missing_key_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let mut ckpt = read_checkpoint(&path).unwrap();
    ckpt.state_dict.insert(
        "net.2.weight".into(),
        TensorData::from_f32(vec![128, 512], vec![0.5; 128 * 512]),
    );
    ckpt.state_dict.remove("net.4.bias");
    write_checkpoint(&path, &ckpt).unwrap();

    let mut m = wide(3);
    let before = weights(&m);
    let err = load_weights(&mut m, &path, true).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            fulgur::Error::Checkpoint(CheckpointError::StateDictMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("`net.2.weight`: expected f32 [256, 256], found f32 [128, 512]"),
        "{message}"
    );
    assert!(message.contains("missing keys (in the module, not in the file): `net.4.bias`"));
    assert_eq!(weights(&m), before, "the module is unchanged");

    // Not strict: the shape mismatch still refuses, with nothing written.
    assert!(load_weights(&mut m, &path, false).is_err());
    assert_eq!(weights(&m), before);
}

//! Writes the seed corpora: `corpus/load/*.ckpt` (whole files), `corpus/load_framed/*.cbor` (their
//! payloads) and `corpus/load_header/*.ckpt` (the small files). Run from `fuzz/` with
//! `cargo run --release --example write_seeds`.

#[path = "../../tests/it/support/mlp.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use ciborium::Value;
use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{
    encode_checkpoint, read_checkpoint, Checkpoint, LoopState, OptimizerState, SchedulerState,
    TensorData,
};
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;
use support::{loaders, Hparams, LitMlp};

fn main() {
    let dir = tempfile_dir();
    let trained = trained(&dir);
    let seeds = [
        ("empty", Checkpoint::new("Empty")),
        ("every-field", every_field()),
        ("trainer-weights-only", trained_file(&trained, &dir, true)),
        ("trainer", trained_file(&trained, &dir, false)),
    ];
    for (name, ckpt) in seeds {
        let mut file = Vec::new();
        encode_checkpoint(&mut file, &ckpt, Path::new(name)).unwrap();
        let payload = fulgur_fuzz::payload(&file).unwrap();
        // The framing the `load_framed` target adds must give back the file itself.
        assert!(
            fulgur_fuzz::frame(payload) == file,
            "{name}: framing differs"
        );
        fulgur_fuzz::check_decode(&file);
        std::fs::write(format!("corpus/load/{name}.ckpt"), &file).unwrap();
        std::fs::write(format!("corpus/load_framed/{name}.cbor"), payload).unwrap();
        // The header reader stops at the first tensor: the small files cover it.
        if file.len() < 4096 {
            std::fs::write(format!("corpus/load_header/{name}.ckpt"), &file).unwrap();
        }
        println!("{name}: {} bytes", file.len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fulgur-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A few steps of the integration tests' module, stopped inside the first epoch, with a scheduler and a
/// `ModelCheckpoint`: weights, Adam state, scheduler state, epoch accumulators, callback state and
/// hyperparameters.
fn trained(dir: &Path) -> Trainer<LitMlp<Cpu>> {
    let (mut train, mut val) = loaders();
    let mut t = Trainer::builder()
        .max_steps(4)
        .default_root_dir(dir)
        .no_logger()
        .num_sanity_val_steps(0)
        .callback(
            ModelCheckpoint::builder()
                .monitor("train_loss")
                .every_n_train_steps(2)
                .save_top_k(2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let hp = Hparams {
        lr: 3e-3,
        init_seed: 5,
        with_scheduler: true,
    };
    t.fit(LitMlp::new(hp), &mut train, Some(&mut val), None)
        .unwrap();
    t
}

fn trained_file(t: &Trainer<LitMlp<Cpu>>, dir: &Path, weights_only: bool) -> Checkpoint {
    let path = dir.join("seed.ckpt");
    t.save_checkpoint(&path, weights_only).unwrap();
    read_checkpoint(&path).unwrap()
}

/// Every field, with small tensors of both dtypes and ranks 0 to 3, and "any" items of every CBOR kind.
fn every_field() -> Checkpoint {
    let any = Value::Map(vec![
        (Value::Text("int".into()), Value::Integer((-3).into())),
        (Value::Text("float".into()), Value::Float(0.25)),
        (Value::Text("bytes".into()), Value::Bytes(vec![1, 2, 3])),
        (
            Value::Text("array".into()),
            Value::Array(vec![Value::Bool(true), Value::Null]),
        ),
        (
            Value::Text("tag".into()),
            Value::Tag(1, Box::new(Value::Integer(0.into()))),
        ),
    ]);
    let mut c = Checkpoint::new("EveryField");
    c.epoch = 2;
    c.global_step = 7;
    c.state_dict = BTreeMap::from([
        (
            "a.weight".into(),
            TensorData::from_f32(vec![2, 3], vec![1.0, -2.0, 0.5, 0.0, f32::MIN, 3.0]),
        ),
        ("a.bias".into(), TensorData::from_f32(vec![0], vec![])),
        ("b.scale".into(), TensorData::from_f64(vec![], vec![0.1])),
        (
            "c.cube".into(),
            TensorData::from_f64(vec![1, 2, 1], vec![f64::MAX, -0.0]),
        ),
    ]);
    c.optimizer = Some(OptimizerState {
        kind: "adam".into(),
        step: 7,
        lr: 1e-3,
        config: any.clone(),
        params: BTreeMap::from([(
            "a.weight".into(),
            BTreeMap::from([
                (
                    "exp_avg".into(),
                    TensorData::from_f32(vec![2, 3], vec![0.0; 6]),
                ),
                (
                    "exp_avg_sq".into(),
                    TensorData::from_f32(vec![2, 3], vec![1.0; 6]),
                ),
            ]),
        )]),
    });
    c.scheduler = Some(SchedulerState {
        kind: "step_lr".into(),
        state: any.clone(),
    });
    c.loops = LoopState {
        epoch: 2,
        batches_done: 3,
        epoch_finished: false,
        global_step: 7,
        total_batches: 93,
        seed: 42,
        metric_state: Some(any.clone()),
    };
    c.callbacks = BTreeMap::from([("ModelCheckpoint{}".into(), any.clone())]);
    c.hyper_parameters = Some(any.clone());
    c.extra = BTreeMap::from([("note".into(), Value::Text("seed".into()))]);
    c
}

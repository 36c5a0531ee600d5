use std::collections::BTreeMap;

use super::*;
use crate::checkpoint::OptimizerEntry;

fn checkpoint() -> Checkpoint {
    let mut c = Checkpoint::new("my_crate::Net");
    c.epoch = 3;
    c.global_step = 120;
    let special = vec![
        1.5,
        -0.0,
        f32::INFINITY,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(1),
        -2.0,
    ];
    c.state_dict.insert(
        "net.0.weight".into(),
        TensorData::from_f32(vec![2, 3], special),
    );
    c.state_dict.insert(
        "net.0.bias".into(),
        TensorData::from_f32(vec![2], vec![0.5, -0.25]),
    );
    c.state_dict
        .insert("scale".into(), TensorData::from_f64(vec![], vec![0.1]));
    let slots = |v: f32| {
        BTreeMap::from([
            (
                "exp_avg".to_string(),
                TensorData::from_f32(vec![2], vec![v; 2]),
            ),
            (
                "exp_avg_sq".to_string(),
                TensorData::from_f32(vec![2], vec![v * 2.0; 2]),
            ),
        ])
    };
    let optimizer = |v| OptimizerState {
        kind: "adam".into(),
        step: 120,
        lr: 1e-3,
        config: Value::Null,
        params: BTreeMap::from([("net.0.bias".to_string(), slots(v))]),
    };
    c.optimizer = Some(optimizer(0.25));
    c.more_optimizers.push(OptimizerEntry {
        optimizer: optimizer(4.0),
        scheduler: None,
    });
    c.hyper_parameters = Some(Value::Map(vec![
        (Value::Text("lr".into()), Value::Float(1e-3)),
        (Value::Text("hidden".into()), Value::Integer(64.into())),
        (Value::Text("name".into()), Value::Text("2024-01-01".into())),
    ]));
    c
}

fn written(dir: &Path, c: &Checkpoint) -> PathBuf {
    let path = dir.join("model.ckpt");
    write_checkpoint(&path, c).unwrap();
    path
}

fn values(t: &TensorData) -> Vec<u8> {
    t.le_bytes().into_owned()
}

#[test]
fn an_export_holds_the_weights_bit_exact_with_their_names_shapes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let c = checkpoint();
    let out = dir.path().join("w.safetensors");
    let done =
        export_safetensors(written(dir.path(), &c), &out, &ExportOptions::default()).unwrap();
    assert_eq!(done.tensors, 3);
    assert_eq!(done.bytes, 6 * 4 + 2 * 4 + 8);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        ["net.0.bias", "net.0.weight", "scale"],
        "no optimizer state by default"
    );
    let w = st.tensor("net.0.weight").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[2, 3][..]));
    assert_eq!(
        w.data(),
        values(&c.state_dict["net.0.weight"]),
        "NaN payloads and -0.0 kept"
    );
    assert_eq!(st.tensor("scale").unwrap().dtype(), Dtype::F64);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["format"], "pt");
    assert_eq!(meta[meta::MODULE_TYPE], "my_crate::Net");
    assert_eq!(meta[meta::EPOCH], "3");
    assert_eq!(meta[meta::GLOBAL_STEP], "120");
    let json: serde_json::Value = serde_json::from_str(&meta[meta::HPARAMS_JSON]).unwrap();
    assert_eq!(json["hidden"], 64);
    assert_eq!(json["name"], "2024-01-01");
    assert!(!meta.contains_key(meta::OPTIMIZER_PREFIX));
}

#[test]
fn the_optimizer_state_goes_under_its_prefix_numbered_per_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let options = ExportOptions {
        optimizer_prefix: Some("optimizer.".into()),
    };
    let done = export_safetensors(written(dir.path(), &checkpoint()), &out, &options).unwrap();
    assert_eq!(done.tensors, 3 + 2 * 2);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let first = st.tensor("optimizer.0.net.0.bias.exp_avg").unwrap();
    assert_eq!(first.data(), 0.25f32.to_le_bytes().repeat(2));
    let second = st.tensor("optimizer.1.net.0.bias.exp_avg_sq").unwrap();
    assert_eq!(second.data(), 8.0f32.to_le_bytes().repeat(2));

    // An import leaves them out of the weights.
    let back = dir.path().join("back.ckpt");
    let imported = import_safetensors(&out, &back, None).unwrap();
    assert_eq!(imported.tensors, 3);
    let ckpt = read_checkpoint(&back).unwrap();
    assert_eq!(ckpt.state_dict.len(), 3);
}

#[test]
fn a_prefix_that_makes_an_optimizer_tensor_collide_with_a_weight_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = checkpoint();
    c.state_dict.insert(
        "o.0.net.0.bias.exp_avg".into(),
        TensorData::from_f32(vec![1], vec![0.0]),
    );
    let options = ExportOptions {
        optimizer_prefix: Some("o.".into()),
    };
    let out = dir.path().join("w.safetensors");
    let err = export_safetensors(written(dir.path(), &c), &out, &options).unwrap_err();
    assert!(
        matches!(&err, InteropError::NameClash { name, .. } if name == "o.0.net.0.bias.exp_avg"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn export_then_import_gives_the_same_weights_and_hyperparameters() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = checkpoint();
    // Bytes and an integer key do not fit JSON: the CBOR copy carries them.
    if let Some(Value::Map(m)) = &mut c.hyper_parameters {
        m.push((Value::Text("blob".into()), Value::Bytes(vec![0, 1, 255])));
        m.push((Value::Integer(7.into()), Value::Bool(true)));
    }
    let out = dir.path().join("w.safetensors");
    export_safetensors(written(dir.path(), &c), &out, &ExportOptions::default()).unwrap();
    let back = dir.path().join("back.ckpt");
    import_safetensors(&out, &back, None).unwrap();
    let ckpt = read_checkpoint(&back).unwrap();
    assert!(ckpt.weights_only);
    assert_eq!(ckpt.module_type, "my_crate::Net");
    assert_eq!((ckpt.epoch, ckpt.global_step), (3, 120));
    assert_eq!(ckpt.hyper_parameters, c.hyper_parameters);
    assert_eq!(
        ckpt.state_dict.keys().collect::<Vec<_>>(),
        c.state_dict.keys().collect::<Vec<_>>()
    );
    for (name, t) in &c.state_dict {
        let got = &ckpt.state_dict[name];
        assert_eq!((got.dtype(), got.shape()), (t.dtype(), t.shape()), "{name}");
        assert_eq!(values(got), values(t), "{name}");
    }
}

/// A safetensors file as PyTorch writes it, without fulgur's metadata.
fn foreign(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn half_precision_tensors_are_widened_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("half.safetensors");
    // f16: 1.0, -2.5, the smallest subnormal 2^-24, the largest 65504, +inf; bf16: 1.0, -3.0, 2^-133.
    let f16: Vec<u8> = [0x3c00u16, 0xc100, 0x0001, 0x7bff, 0x7c00]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x3f80u16, 0xc040, 0x0001]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    foreign(
        &st,
        &[
            ("a", Dtype::F16, vec![5], f16),
            ("b", Dtype::BF16, vec![3], bf16),
        ],
    );
    let back = dir.path().join("back.ckpt");
    let done = import_safetensors(&st, &back, Some(Value::Null)).unwrap();
    assert_eq!(done.widened, ["a", "b"]);
    let ckpt = read_checkpoint(&back).unwrap();
    assert!(ckpt.module_type.starts_with("imported from"));
    let a = ckpt.state_dict["a"].as_f32().unwrap().into_owned();
    assert_eq!(a, [1.0, -2.5, 2f32.powi(-24), 65504.0, f32::INFINITY]);
    let b = ckpt.state_dict["b"].as_f32().unwrap().into_owned();
    assert_eq!(b, [1.0, -3.0, f32::from_bits(1 << 16)]);
}

#[test]
fn every_subnormal_f16_widens_to_its_value() {
    for m in 1u16..0x400 {
        assert_eq!(f16_to_f32(m), f32::from(m) * 2f32.powi(-24), "{m:#x}");
        assert_eq!(f16_to_f32(0x8000 | m), -f32::from(m) * 2f32.powi(-24));
    }
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
}

#[test]
fn an_integer_tensor_is_refused_naming_it_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("ints.safetensors");
    foreign(
        &st,
        &[
            ("w", Dtype::F32, vec![1], 1f32.to_le_bytes().to_vec()),
            ("steps", Dtype::I64, vec![1], 5i64.to_le_bytes().to_vec()),
        ],
    );
    let back = dir.path().join("back.ckpt");
    let err = import_safetensors(&st, &back, None).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("`steps`") && message.contains("I64"),
        "{message}"
    );
    assert!(message.contains("ints.safetensors"), "{message}");
    assert!(!back.exists());
}

#[test]
fn a_file_that_is_not_safetensors_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("back.ckpt");
    for (name, content) in [
        ("empty.safetensors", Vec::new()),
        (
            "text.safetensors",
            b"hello, world, this is no header".to_vec(),
        ),
        ("huge.safetensors", u64::MAX.to_le_bytes().to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = import_safetensors(&path, &back, None).unwrap_err();
        assert!(
            matches!(err, InteropError::Safetensors { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let missing = import_safetensors(dir.path().join("nope.safetensors"), &back, None).unwrap_err();
    assert!(
        matches!(missing, InteropError::Io { op: "open", .. }),
        "{missing}"
    );
    let truncated = dir.path().join("cut.safetensors");
    foreign(&truncated, &[("w", Dtype::F32, vec![4], vec![0; 16])]);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = import_safetensors(&truncated, &back, None).unwrap_err();
    assert!(matches!(err, InteropError::Safetensors { .. }), "{err}");
}

#[test]
fn hyperparameters_come_from_json_or_yaml_files_and_other_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("h.json");
    std::fs::write(&json, r#"{"lr": 0.01, "hidden": 32}"#).unwrap();
    let yaml = dir.path().join("h.yaml");
    std::fs::write(&yaml, "lr: 0.01\nhidden: 32\n").unwrap();
    let from_json = read_hparams(&json).unwrap();
    let from_yaml = read_hparams(&yaml).unwrap();
    let get = |v: &Value, key: &str| match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    for v in [&from_json, &from_yaml] {
        assert_eq!(get(v, "lr"), Some(Value::Float(0.01)));
        assert_eq!(get(v, "hidden"), Some(Value::Integer(32.into())));
    }
    let toml = dir.path().join("h.toml");
    std::fs::write(&toml, "lr = 0.01").unwrap();
    let err = read_hparams(&toml).unwrap_err().to_string();
    assert!(err.contains("h.toml") && err.contains(".json"), "{err}");
    std::fs::write(&json, "{not json").unwrap();
    let err = read_hparams(&json).unwrap_err().to_string();
    assert!(err.contains("h.json") && err.contains("JSON"), "{err}");

    // Given hyperparameters win over the stored ones.
    let st = dir.path().join("w.safetensors");
    export_safetensors(
        written(dir.path(), &checkpoint()),
        &st,
        &ExportOptions::default(),
    )
    .unwrap();
    let back = dir.path().join("back.ckpt");
    import_safetensors(&st, &back, Some(from_yaml.clone())).unwrap();
    assert_eq!(
        read_checkpoint(&back).unwrap().hyper_parameters,
        Some(from_yaml)
    );
}

#[test]
fn hex_round_trips_and_rejects_odd_or_foreign_text() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    assert_eq!(unhex("abc"), None);
    assert_eq!(unhex("zz"), None);
    assert_eq!(unhex("é0"), None);
}

use std::process::Command;

use super::*;

/// Strings that PyYAML (YAML 1.1) reads as something else when they are written plain.
const TRICKY: [&str; 16] = [
    "2024-01-01",
    "0x1F",
    "1_000",
    "yes",
    "No",
    "on",
    "null",
    "~",
    "1e3",
    "",
    "1:20",
    "=",
    "<<",
    "0o17",
    ".5",
    "2001-12-14t21:59:43.10-05:00",
];

fn tricky_hparams() -> Value {
    let mut entries: Vec<(Value, Value)> = TRICKY
        .iter()
        .enumerate()
        .map(|(i, s)| (Value::Text(format!("s{i}")), Value::Text((*s).into())))
        .collect();
    entries.extend([
        (
            Value::Text("yes".into()),
            Value::Text("key that reads as a bool".into()),
        ),
        (Value::Text("lr".into()), Value::Float(1e-5)),
        (Value::Text("big".into()), Value::Float(1e16)),
        (Value::Text("half".into()), Value::Float(0.5)),
        (Value::Text("inf".into()), Value::Float(f64::INFINITY)),
        (Value::Text("n".into()), Value::Integer(1000.into())),
        (Value::Text("flag".into()), Value::Bool(true)),
        (Value::Text("none".into()), Value::Null),
        (
            Value::Text("bytes".into()),
            Value::Bytes((0u8..=60).collect()),
        ),
        (
            Value::Text("text".into()),
            Value::Text("it's \"quoted\"\nand é".into()),
        ),
        (
            Value::Text("nested".into()),
            Value::Map(vec![(
                Value::Text("list".into()),
                Value::Array(vec![Value::Integer(32.into()), Value::Text("yes".into())]),
            )]),
        ),
    ]);
    Value::Map(entries)
}

#[test]
fn nested_hparams_render_as_block_yaml() {
    #[derive(serde::Serialize)]
    struct H {
        lr: f64,
        hidden: Vec<u32>,
        name: String,
        tricky: String,
        opt: Inner,
    }
    #[derive(serde::Serialize)]
    struct Inner {
        nesterov: bool,
    }
    let v = Value::serialized(&H {
        lr: 0.001,
        hidden: vec![32, 16],
        name: "mlp".into(),
        tricky: "true".into(),
        opt: Inner { nesterov: true },
    })
    .unwrap();
    assert_eq!(
        to_yaml(&v).unwrap(),
        "lr: 0.001\nhidden:\n- 32\n- 16\nname: mlp\ntricky: 'true'\nopt:\n  nesterov: true\n"
    );
    assert_eq!(to_yaml(&Value::Null).unwrap(), "{}\n");
    assert_eq!(to_yaml(&Value::Float(2.0)).unwrap(), "hparams: 2.0\n");
}

/// Quoted exactly where PyYAML's resolvers would read another type; floats with the dot PyYAML's
/// float pattern needs; bytes as PyYAML's `!!binary`.
#[test]
fn strings_that_yaml_1_1_reads_otherwise_are_quoted() {
    let text = to_yaml(&tricky_hparams()).unwrap();
    for (i, s) in TRICKY.iter().enumerate() {
        assert!(
            text.contains(&format!("s{i}: '{s}'\n")),
            "{s:?} not quoted in:\n{text}"
        );
    }
    assert!(text.contains("'yes': key that reads as a bool\n"), "{text}");
    assert!(text.contains("lr: 1.0e-05\n"), "{text}");
    assert!(text.contains("big: 1.0e+16\n"), "{text}");
    assert!(text.contains("inf: .inf\n"), "{text}");
    assert!(text.contains("bytes: !!binary |\n  AAECAwQF"), "{text}");
    assert!(text.contains("- 32\n  - 'yes'\n"), "{text}");
}

/// A YAML parser in Rust reads every value back (YAML 1.2, so this checks the syntax and the
/// escapes; the PyYAML test checks YAML 1.1's types).
#[test]
fn hparams_read_back_in_rust() {
    use serde_norway::Value as Y;
    let text = to_yaml(&tricky_hparams()).unwrap();
    let doc: Y = serde_norway::from_str(&text).unwrap();
    for (i, s) in TRICKY.iter().enumerate() {
        assert_eq!(
            doc[format!("s{i}").as_str()],
            Y::String((*s).into()),
            "{s:?}"
        );
    }
    assert_eq!(doc["text"], Y::String("it's \"quoted\"\nand é".into()));
    assert_eq!(doc["lr"].as_f64(), Some(1e-5));
    assert_eq!(doc["n"].as_u64(), Some(1000));
    assert_eq!(doc["flag"].as_bool(), Some(true));
    assert!(doc["none"].is_null());
    assert_eq!(doc["nested"]["list"][1], Y::String("yes".into()));
    // serde_norway drops the standard `!!binary` tag and keeps the text: Python's
    // `base64.encodebytes(bytes(range(61)))`.
    assert_eq!(
        doc["bytes"],
        Y::String(
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\nOTo7PA==\n"
                .into()
        )
    );
}

#[test]
fn python_float_repr_matches_python() {
    for (f, repr) in [
        (0.001, "0.001"),
        (1e-5, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (100.0, "100.0"),
        (-2.5e300, "-2.5e+300"),
    ] {
        assert_eq!(python_float_repr(f), repr);
    }
}

/// PyYAML (Lightning's reader) loads every string as the same string, the floats as floats and the
/// bytes as bytes. Skipped, with a notice, where `python3` with PyYAML is missing.
#[test]
fn pyyaml_reads_the_same_values() {
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_yaml {
        eprintln!("skipped: `python3 -c \"import yaml\"` fails (PyYAML missing)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hparams.yaml");
    let fs = crate::strategy::RankZeroFs::new(&crate::strategy::SingleProcess);
    fs.write_file(&path, to_yaml(&tricky_hparams()).unwrap().as_bytes())
        .unwrap();
    // One line per key: its type and its value (strings and bytes in hex, to compare exactly).
    let script = r#"
import sys, yaml
with open(sys.argv[1]) as f:
    full = yaml.full_load(f)
with open(sys.argv[1]) as f:
    safe = yaml.safe_load(f)
assert full == safe, (full, safe)
for k, v in full.items():
    shown = v.encode().hex() if isinstance(v, str) else v.hex() if isinstance(v, bytes) else repr(v)
    print(f"{k} {type(v).__name__} {shown}")
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let loaded: std::collections::BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.trim_end()))
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for (i, s) in TRICKY.iter().enumerate() {
        let expected = format!("str {}", hex(s.as_bytes()));
        assert_eq!(
            loaded[format!("s{i}").as_str()],
            expected.trim_end(),
            "{s:?}"
        );
    }
    assert_eq!(loaded.len(), TRICKY.len() + 11, "{stdout}");
    let text = "it's \"quoted\"\nand é";
    assert_eq!(loaded["text"], format!("str {}", hex(text.as_bytes())));
    assert_eq!(
        loaded["yes"],
        format!("str {}", hex(b"key that reads as a bool"))
    );
    assert_eq!(loaded["lr"], "float 1e-05");
    assert_eq!(loaded["big"], "float 1e+16");
    assert_eq!(loaded["half"], "float 0.5");
    assert_eq!(loaded["inf"], "float inf");
    assert_eq!(loaded["n"], "int 1000");
    assert_eq!(loaded["flag"], "bool True");
    assert_eq!(loaded["none"], "NoneType None");
    assert_eq!(
        loaded["bytes"],
        format!("bytes {}", hex(&(0u8..=60).collect::<Vec<_>>()))
    );
    assert_eq!(loaded["nested"], "dict {'list': [32, 'yes']}");
}

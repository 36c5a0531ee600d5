//! A minimal YAML emitter for hyperparameters (maps, sequences and scalars of a CBOR value).

use ciborium::Value;

/// `value` as a YAML document; a non-map value is written under the key `hparams`.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Map(entries) if !entries.is_empty() => write_map(entries, 0, &mut out),
        Value::Null => out.push_str("{}\n"),
        other => write_map(
            &[(Value::Text("hparams".into()), other.clone())],
            0,
            &mut out,
        ),
    }
    out
}

fn write_map(entries: &[(Value, Value)], indent: usize, out: &mut String) {
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(k));
        out.push(':');
        write_value(v, indent, out);
    }
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            for item in a {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                write_value(item, indent + 2, out);
            }
        }
        Value::Tag(_, inner) => write_value(inner, indent, out),
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Float(f) if f.is_nan() => ".nan".into(),
        Value::Float(f) if f.is_infinite() => if *f > 0.0 { ".inf" } else { "-.inf" }.into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Text(t) => quote(t),
        Value::Bytes(b) => format!(
            "!!binary {}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        Value::Map(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        Value::Tag(_, inner) => scalar(inner),
        _ => "null".into(),
    }
}

/// Plain when YAML would read it back as the same string, double-quoted otherwise.
fn quote(t: &str) -> String {
    let plain = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./ ".contains(c))
        && !t.starts_with(['-', ' ', '.'])
        && !t.ends_with(' ')
        && t.parse::<f64>().is_err()
        && !matches!(
            t.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "null" | "on" | "off" | "~"
        );
    if plain {
        t.to_string()
    } else {
        let escaped: String = t
            .chars()
            .flat_map(|c| match c {
                '"' => vec!['\\', '"'],
                '\\' => vec!['\\', '\\'],
                '\n' => vec!['\\', 'n'],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            to_yaml(&v),
            "lr: 0.001\nhidden:\n- 32\n- 16\nname: mlp\ntricky: \"true\"\nopt:\n  nesterov: true\n"
        );
        assert_eq!(to_yaml(&Value::Null), "{}\n");
    }
}

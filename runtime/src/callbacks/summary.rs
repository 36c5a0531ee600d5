//! Lightning's `ModelSummary`: a table of the module's parameter counts at the start of `fit`.

use std::io::Write;

use dfdx::nn::tensor_collection::TensorCollection;

use super::output::Output;
use super::{Callback, CallbackContext, ParameterInfo};
use crate::device::Backend;
use crate::Result;

/// Prints a table of the module's parameters when `fit` starts, on rank 0, like Lightning's
/// `ModelSummary`: one row per field of the module (per submodule down to
/// [`max_depth`](Self::max_depth)), then the trainable, non-trainable and total counts and the size of
/// the f32 weights.
///
/// The trainer adds one writing to standard output unless `enable_model_summary(false)` is set or a
/// `ModelSummary` is given as a callback.
///
/// ```text
///   | Name | Params
/// -----------------
/// 0 | net  | 2.4 K
/// 1 | head | 110
/// -----------------
/// 2.5 K     Trainable params
/// 0         Non-trainable params
/// 2.5 K     Total params
/// 0.010     Total estimated model params size (MB)
/// ```
#[derive(Debug, Clone)]
pub struct ModelSummary {
    max_depth: usize,
    out: Output,
}

impl Default for ModelSummary {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelSummary {
    /// One row per top-level field, written to standard output.
    pub fn new() -> Self {
        Self {
            max_depth: 1,
            out: Output::Stdout,
        }
    }

    /// Rows down to this depth of the parameter names (`net` is depth 1, `net.0` depth 2); 0 prints
    /// nothing, `usize::MAX` every submodule that holds a tensor.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Writes to `w` instead of standard output (write errors are ignored).
    pub fn writer(mut self, w: impl Write + Send + 'static) -> Self {
        self.out = Output::writer(w);
        self
    }

    /// The table for `params`, ending with a newline.
    pub fn render(&self, params: &[ParameterInfo]) -> String {
        render(params, self.max_depth)
    }
}

impl Callback for ModelSummary {
    fn on_fit_start(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if self.max_depth > 0 && ctx.strategy().is_global_zero() {
            self.out.write(&self.render(&ctx.parameters()));
            self.out.flush();
        }
        Ok(())
    }
}

fn render(params: &[ParameterInfo], max_depth: usize) -> String {
    // Rows in the order their first tensor is met, which puts a module before its submodules.
    let mut rows: Vec<(String, usize)> = Vec::new();
    for p in params {
        let segments: Vec<&str> = p.name.split('.').collect();
        let module = &segments[..segments.len() - 1];
        let keys: Vec<String> = if module.is_empty() {
            vec![p.name.clone()]
        } else {
            (1..=module.len().min(max_depth))
                .map(|k| module[..k].join("."))
                .collect()
        };
        for key in keys {
            match rows.iter_mut().find(|(name, _)| *name == key) {
                Some((_, n)) => *n += p.numel(),
                None => rows.push((key, p.numel())),
            }
        }
    }
    let total: usize = params.iter().map(ParameterInfo::numel).sum();
    let trainable: usize = params
        .iter()
        .filter(|p| p.trainable)
        .map(ParameterInfo::numel)
        .sum();

    let index: Vec<String> = (0..rows.len()).map(|i| i.to_string()).collect();
    let counts: Vec<String> = rows.iter().map(|(_, n)| human_count(*n)).collect();
    let width = |header: &str, cells: &mut dyn Iterator<Item = &str>| {
        cells.map(str::len).chain([header.len()]).max().unwrap_or(0)
    };
    let w_index = width(" ", &mut index.iter().map(String::as_str));
    let w_name = width("Name", &mut rows.iter().map(|(n, _)| n.as_str()));
    let w_params = width("Params", &mut counts.iter().map(String::as_str));
    let line = |a: &str, b: &str, c: &str| {
        let text = format!("{a:<w_index$} | {b:<w_name$} | {c:<w_params$}");
        text.trim_end().to_string()
    };
    let header = line(" ", "Name", "Params");
    let rule = "-".repeat(w_index + w_name + w_params + 6);
    let mut out = vec![header, rule.clone()];
    for (i, (name, _)) in rows.iter().enumerate() {
        out.push(line(&index[i], name, &counts[i]));
    }
    out.push(rule);
    let size = format!("{:.3}", total as f64 * 4.0 / 1e6);
    let (whole, fraction) = size.split_once('.').unwrap_or((&size, "000"));
    let size = format!("{}.{fraction}", thousands(whole.parse().unwrap_or(0)));
    for (value, what) in [
        (human_count(trainable), "Trainable params"),
        (human_count(total - trainable), "Non-trainable params"),
        (human_count(total), "Total params"),
        (size, "Total estimated model params size (MB)"),
    ] {
        out.push(format!("{value:<10}{what}"));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Lightning's `get_human_readable_count`: `110`, `2.4 K`, `123 K`, `1.2 M`.
fn human_count(n: usize) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "B", "T"];
    let digits = if n == 0 { 1 } else { n.ilog10() as usize + 1 };
    let index = digits.div_ceil(3).min(UNITS.len()) - 1;
    if index == 0 {
        return n.to_string();
    }
    let scaled = n as f64 / 1000f64.powi(index as i32);
    if scaled >= 100.0 {
        format!("{} {}", thousands(scaled as u64), UNITS[index])
    } else {
        format!("{scaled:.1} {}", UNITS[index])
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The tensors of `module` in field order (dfdx scalar fields are not parameters and are left out).
pub(crate) fn parameters<M: TensorCollection<f32, D>, D: Backend>(
    module: &M,
) -> Vec<ParameterInfo> {
    let mut out = Vec::new();
    crate::optim::named::for_each_tensor(module, |name, shape, _: &D, trainable| {
        out.push(ParameterInfo {
            name,
            shape,
            trainable,
        })
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, shape: &[usize], trainable: bool) -> ParameterInfo {
        ParameterInfo {
            name: name.into(),
            shape: shape.to_vec(),
            trainable,
        }
    }

    /// The shape of the tests' `LitMlp`: `net` = (Linear<64, 32>, ReLU, Linear<32, 10>), `head` =
    /// Linear<10, 10>.
    fn lit_mlp() -> Vec<ParameterInfo> {
        vec![
            p("net.0.weight", &[32, 64], true),
            p("net.0.bias", &[32], true),
            p("net.2.weight", &[10, 32], true),
            p("net.2.bias", &[10], true),
            p("head.weight", &[10, 10], true),
            p("head.bias", &[10], true),
        ]
    }

    #[test]
    fn one_row_per_top_level_field_in_field_order() {
        assert_eq!(
            render(&lit_mlp(), 1),
            "  | Name | Params
-----------------
0 | net  | 2.4 K
1 | head | 110
-----------------
2.5 K     Trainable params
0         Non-trainable params
2.5 K     Total params
0.010     Total estimated model params size (MB)
"
        );
    }

    #[test]
    fn deeper_rows_follow_their_parent_and_frozen_tensors_are_non_trainable() {
        let mut params = lit_mlp();
        params.push(p("norm.running_mean", &[10], false));
        params.push(p("norm.running_var", &[10], false));
        params.push(p("temperature", &[1], true));
        assert_eq!(
            render(&params, 2),
            "  | Name        | Params
------------------------
0 | net         | 2.4 K
1 | net.0       | 2.1 K
2 | net.2       | 330
3 | head        | 110
4 | norm        | 20
5 | temperature | 1
------------------------
2.5 K     Trainable params
20        Non-trainable params
2.5 K     Total params
0.010     Total estimated model params size (MB)
"
        );
    }

    #[test]
    fn counts_read_like_lightnings() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1.0 K"),
            (2_410, "2.4 K"),
            (99_949, "99.9 K"),
            (123_456, "123 K"),
            (1_500_000, "1.5 M"),
            (7_000_000_000, "7.0 B"),
            (1_234_000_000_000_000, "1,234 T"),
        ];
        for (n, text) in cases {
            assert_eq!(human_count(n), text, "{n}");
        }
    }

    #[test]
    fn the_size_is_four_bytes_per_value_in_megabytes() {
        let text = render(&[p("w", &[1_000, 1_000], true)], 1);
        assert!(
            text.ends_with("4.000     Total estimated model params size (MB)\n"),
            "{text}"
        );
        let text = render(&[p("w", &[300_000_000], true)], 1);
        assert!(text.contains("1,200.000 Total estimated"), "{text}");
    }
}

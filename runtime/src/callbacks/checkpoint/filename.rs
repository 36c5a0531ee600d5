//! Checkpoint file names from templates such as `{epoch}-{val_loss:.2f}`.
//!
//! The syntax is Python's `str.format`, as in Lightning's `ModelCheckpoint(filename=...)`, so templates
//! copied from Lightning configs work unchanged. Where fulgur differs (reference, section G.2):
//!
//! - `{{` and `}}` are literal braces, and a malformed template is an error when it is parsed;
//! - a value with no format spec prints as the shortest string that round-trips its own type: an f32
//!   0.1 is `0.1`, not `0.10000000149011612`;
//! - a field with no value is an error, never `0`;
//! - a `/` in a metric name becomes `_` when the name is inserted (`val/loss=0.5`) so that it makes no
//!   sub-directory; a `/` written in the template's text still does.
//!
//! Everything here is pure: the directory, join character, version suffix and extension are the caller's.

use fulgur_rules::template::{self, Field, Kind, Piece, Spec};

use crate::metrics::{MetricKind, MetricValue};

/// A parsed checkpoint filename template: literal text and `{name}` / `{name:spec}` fields.
///
/// `{epoch:03d}-{val_loss:.2f}` renders as `epoch=003-val_loss=0.12` with metric names inserted, or as
/// `003-0.12` without. Field names may hold any character but `:`, `{` and `}` (`val/loss`, `mAP@0.50`);
/// the spec is Python's format-spec mini-language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilenameTemplate {
    source: String,
    pieces: Vec<Piece>,
}

/// Why a template cannot be parsed, cannot format a metric's kind, or cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The braces or a format spec are malformed ([`FilenameTemplate::parse`]).
    #[error("invalid checkpoint filename `{template}`: {reason}")]
    Malformed {
        /// The template as written.
        template: String,
        /// What is wrong, where, and what was expected.
        reason: String,
    },
    /// A field's format spec cannot format the kind of its metric (`d` on a float metric).
    #[error("invalid checkpoint filename `{template}`: {reason}")]
    KindMismatch {
        /// The template as written.
        template: String,
        /// The metric name of the field.
        field: String,
        /// The kind of that metric.
        kind: MetricKind,
        /// What is wrong, and what to write instead where there is an obvious fix.
        reason: String,
    },
    /// No value was given for a field when rendering.
    #[error("cannot render checkpoint filename `{template}`: no value for `{field}`")]
    MissingValue {
        /// The template as written.
        template: String,
        /// The metric name that has no value.
        field: String,
    },
    /// A value that its spec cannot print (format code `c` with a value that is not a character).
    #[error("cannot render checkpoint filename `{template}`: {reason}")]
    BadValue {
        /// The template as written.
        template: String,
        /// The metric name of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl FilenameTemplate {
    /// Parses `template`, checking its braces and every format spec.
    ///
    /// `{{` and `}}` are literal braces. An unclosed `{`, a single `}`, an empty name (`{}`, `{:03d}`)
    /// or an invalid spec (`{epoch:03q}`) is an error whose message names the template and the position
    /// (in characters, from 0).
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let malformed = |reason: String| TemplateError::Malformed {
            template: template.to_string(),
            reason,
        };
        let pieces = template::parse(template).map_err(malformed)?;
        Ok(Self {
            source: template.to_string(),
            pieces,
        })
    }

    /// The distinct field names, in order of first appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Field(field) = piece {
                if !names.contains(&field.name.as_str()) {
                    names.push(&field.name);
                }
            }
        }
        names
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Checks every field's spec against the kind of its metric, so that a template that cannot format
    /// its metrics fails when the callback is built rather than at its first save.
    ///
    /// `kind_of` returns `None` for a name it does not know; such a field is skipped (reporting unknown
    /// names, with suggestions, is the caller's job). Rejected as in Python: an integer format code
    /// (`b c d o x X`) on a float metric, and a precision or `z` without a float format code on an integer
    /// or boolean metric.
    pub fn check_kinds(
        &self,
        kind_of: impl Fn(&str) -> Option<MetricKind>,
    ) -> Result<(), TemplateError> {
        for field in self.fields_iter() {
            if let Some(kind) = kind_of(&field.name) {
                self.check_field(field, kind)?;
            }
        }
        Ok(())
    }

    /// Renders the file name (without directory, version or extension).
    ///
    /// With `auto_insert_metric_name`, each field becomes `name{equals}value` (`epoch=3`), a `/` in the
    /// name becoming `_`; otherwise just the value. `value_of` is asked for the metric's real name
    /// (`val/loss`). A field with no value, or a value its spec cannot format, is an error.
    pub fn render(
        &self,
        value_of: impl Fn(&str) -> Option<MetricValue>,
        auto_insert_metric_name: bool,
        equals: &str,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            let field = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Piece::Field(field) => field,
            };
            let value = value_of(&field.name).ok_or_else(|| TemplateError::MissingValue {
                template: self.source.clone(),
                field: field.name.clone(),
            })?;
            self.check_field(field, value.kind())?;
            if auto_insert_metric_name {
                out.push_str(&field.name.replace('/', "_"));
                out.push_str(equals);
            }
            let text =
                format_value(value, &field.spec).map_err(|problem| TemplateError::BadValue {
                    template: self.source.clone(),
                    field: field.name.clone(),
                    reason: format!("`{}` {problem}", field.written()),
                })?;
            out.push_str(&text);
        }
        Ok(out)
    }

    fn fields_iter(&self) -> impl Iterator<Item = &Field> {
        self.pieces.iter().filter_map(Piece::as_field)
    }

    fn check_field(&self, field: &Field, kind: MetricKind) -> Result<(), TemplateError> {
        field
            .check_kind(format_kind(kind))
            .map_err(|reason| TemplateError::KindMismatch {
                template: self.source.clone(),
                field: field.name.clone(),
                kind,
                reason,
            })
    }
}

/// The shared checks' name for a metric kind.
fn format_kind(kind: MetricKind) -> Kind {
    match kind {
        MetricKind::F32 => Kind::F32,
        MetricKind::F64 => Kind::F64,
        MetricKind::Int => Kind::Int,
        MetricKind::Bool => Kind::Bool,
    }
}

/// Formats `value` as Python's `format(value, spec)`, except that a float with neither a format code nor
/// a precision prints the shortest string that round-trips its own type (G.2). The spec has been checked
/// against the value's kind; the error says why a value cannot be printed.
fn format_value(value: MetricValue, spec: &Spec) -> Result<String, String> {
    match value {
        MetricValue::Bool(b) if !spec.given => Ok(if b { "True" } else { "False" }.to_string()),
        MetricValue::Bool(b) => format_int(i64::from(b), spec),
        MetricValue::Int(v) if !spec.given => Ok(v.to_string()),
        MetricValue::Int(v) => format_int(v, spec),
        MetricValue::F32(v) => Ok(format_float(Float::F32(v), spec)),
        MetricValue::F64(v) => Ok(format_float(Float::F64(v), spec)),
    }
}

fn format_int(v: i64, spec: &Spec) -> Result<String, String> {
    let code = spec.code.unwrap_or('d');
    if "eEfFgG%".contains(code) {
        // Python converts to float for a float code, rounding to nearest as `as` does.
        return Ok(format_float(Float::F64(v as f64), spec));
    }
    if code == 'c' {
        let ch = u32::try_from(v)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("needs a Unicode scalar value for format code `c`, got {v}"))?;
        return Ok(fill_number(
            false,
            "",
            "",
            false,
            &ch.to_string(),
            spec,
            None,
        ));
    }
    let magnitude = v.unsigned_abs();
    let (prefix, digits) = match code {
        'b' => ("0b", format!("{magnitude:b}")),
        'o' => ("0o", format!("{magnitude:o}")),
        'x' => ("0x", format!("{magnitude:x}")),
        'X' => ("0X", format!("{magnitude:X}")),
        _ => ("", magnitude.to_string()),
    };
    let prefix = if spec.alternate { prefix } else { "" };
    Ok(fill_number(
        v < 0,
        prefix,
        &digits,
        false,
        "",
        spec,
        spec.group(Some(code)),
    ))
}

#[derive(Clone, Copy)]
enum Float {
    F32(f32),
    F64(f64),
}

/// How Python's `format_float_short` lays digits out.
#[derive(Clone, Copy)]
enum Layout {
    /// `e`: this many significant digits.
    Exponent(usize),
    /// `f`: this many digits after the point.
    Fixed(usize),
    /// `g`: this many significant digits; `add_dot_0` for no format code with a precision.
    General { digits: usize, add_dot_0: bool },
    /// `repr`: shortest digits.
    Repr,
}

fn format_float(value: Float, spec: &Spec) -> String {
    let x = match value {
        Float::F32(v) => f64::from(v),
        Float::F64(v) => v,
    };
    let code = spec.code;
    let percent = code == Some('%');
    let x = if percent { x * 100.0 } else { x };
    let precision = spec.precision.unwrap_or(6);
    let (mut body, negative) = if x.is_nan() {
        ("nan".to_string(), false)
    } else if x.is_infinite() {
        ("inf".to_string(), x < 0.0)
    } else {
        let a = x.abs();
        let (layout, (digits, decpt)) = match code {
            None if spec.precision.is_none() => (Layout::Repr, shortest_digits(value)),
            None => {
                let digits = precision.max(1);
                (
                    Layout::General {
                        digits,
                        add_dot_0: true,
                    },
                    significant_digits(a, digits),
                )
            }
            Some('e' | 'E') => (
                Layout::Exponent(precision + 1),
                significant_digits(a, precision + 1),
            ),
            Some('f' | 'F' | '%') => (Layout::Fixed(precision), fixed_digits(a, precision)),
            _ => {
                let digits = precision.max(1);
                (
                    Layout::General {
                        digits,
                        add_dot_0: false,
                    },
                    significant_digits(a, digits),
                )
            }
        };
        let zero = digits.bytes().all(|d| d == b'0');
        let negative = x.is_sign_negative() && !(spec.no_neg_zero && zero);
        (lay_out(&digits, decpt, layout, spec.alternate), negative)
    };
    if matches!(code, Some('E' | 'F' | 'G')) {
        body.make_ascii_uppercase();
    }
    if percent {
        body.push('%');
    }
    let digits_end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (digits, rest) = body.split_at(digits_end);
    let (has_decimal, remainder) = match rest.strip_prefix('.') {
        Some(remainder) => (true, remainder),
        None => (false, rest),
    };
    fill_number(
        negative,
        "",
        digits,
        has_decimal,
        remainder,
        spec,
        spec.group(code),
    )
}

/// Digits (at least one, no trailing zeros but for zero itself) and decimal-point position of `s`,
/// a string from Rust's `{:e}` or `{:.*e}`: `1.2500e-3` gives (`125`, -2). Rust's exact-precision
/// formatting is correctly rounded from the exact binary value, ties to even, as Python's `dtoa` is
/// (tests `rust_exact_formatting_rounds_like_python` pin this).
fn split_exponent(s: &str) -> (String, i64) {
    let (mantissa, exponent) = s.split_once('e').unwrap_or((s, "0"));
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    trim_trailing_zeros(&mut digits);
    (digits, exponent + 1)
}

fn trim_trailing_zeros(digits: &mut String) {
    let keep = digits.trim_end_matches('0').len().max(1);
    digits.truncate(keep);
}

/// `a` (finite, non-negative) rounded to `n` significant digits.
fn significant_digits(a: f64, n: usize) -> (String, i64) {
    split_exponent(&format!("{:.*e}", n - 1, a))
}

/// `a` (finite, non-negative) rounded to `p` digits after the point.
fn fixed_digits(a: f64, p: usize) -> (String, i64) {
    let s = format!("{a:.p$}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut decpt = int.len() as i64;
    let all = format!("{int}{frac}");
    let trimmed = all.trim_start_matches('0');
    decpt -= (all.len() - trimmed.len()) as i64;
    let mut digits = trimmed.to_string();
    if digits.is_empty() {
        return ("0".to_string(), 1);
    }
    trim_trailing_zeros(&mut digits);
    (digits, decpt)
}

/// The shortest digits that round-trip the value's own type (an f32 as an f32), the closest such
/// digits, ties to even as Python's `repr`. Rust's shortest form has the right length but breaks a tie
/// between two closest candidates upwards (f64 1125899906842624.25 gives `…4.3`, Python `…4.2`), so
/// the value is re-rounded at that length: the closest digits of a length round-trip if any do.
fn shortest_digits(value: Float) -> (String, i64) {
    let (shortest, exact, round_trips) = match value {
        Float::F32(v) => {
            let a = v.abs();
            let shortest = format!("{a:e}");
            let exact = format!("{a:.*e}", split_exponent(&shortest).0.len() - 1);
            let round_trips = exact.parse::<f32>() == Ok(a);
            (shortest, exact, round_trips)
        }
        Float::F64(v) => {
            let a = v.abs();
            let shortest = format!("{a:e}");
            let exact = format!("{a:.*e}", split_exponent(&shortest).0.len() - 1);
            let round_trips = exact.parse::<f64>() == Ok(a);
            (shortest, exact, round_trips)
        }
    };
    split_exponent(if round_trips { &exact } else { &shortest })
}

/// A port of the layout half of CPython's `format_float_short` (Python/pystrtod.c): `digits` are the
/// significant digits (no trailing zeros), the value is `0.digits × 10^decpt`.
fn lay_out(digits: &str, decpt: i64, layout: Layout, alternate: bool) -> String {
    let digits_len = digits.len() as i64;
    let mut decpt = decpt;
    let mut end = digits_len;
    let mut use_exp = false;
    let mut add_dot_0 = false;
    match layout {
        Layout::Exponent(n) => {
            use_exp = true;
            end = n as i64;
        }
        Layout::Fixed(p) => end = decpt + p as i64,
        Layout::General {
            digits: p,
            add_dot_0: dot,
        } => {
            let p = p as i64;
            add_dot_0 = dot;
            if decpt <= -4 || decpt > if dot { p - 1 } else { p } {
                use_exp = true;
            }
            if alternate {
                end = p;
            }
        }
        Layout::Repr => {
            add_dot_0 = true;
            use_exp = decpt <= -4 || decpt > 16;
        }
    }
    let mut exp = 0;
    if use_exp {
        exp = decpt - 1;
        decpt = 1;
    }
    let start = if decpt <= 0 { decpt - 1 } else { 0 };
    end = if !use_exp && add_dot_0 {
        end.max(decpt + 1)
    } else {
        end.max(decpt)
    };
    let zeros = |n: i64| "0".repeat(n.max(0) as usize);
    let mut out = String::new();
    if decpt <= 0 {
        out += &zeros(decpt - start);
        out.push('.');
        out += &zeros(-decpt);
    } else {
        out += &zeros(-start);
    }
    if 0 < decpt && decpt <= digits_len {
        let (int, frac) = digits.split_at(decpt as usize);
        out += int;
        out.push('.');
        out += frac;
    } else {
        out += digits;
    }
    if digits_len < decpt {
        out += &zeros(decpt - digits_len);
        out.push('.');
        out += &zeros(end - decpt);
    } else {
        out += &zeros(end - digits_len);
    }
    if out.ends_with('.') && !alternate {
        out.pop();
    }
    if use_exp {
        let sign = if exp < 0 { '-' } else { '+' };
        out += &format!("e{sign}{:02}", exp.abs());
    }
    out
}

/// A port of CPython's `calc_number_widths` and `fill_number` (Objects/stringlib/formatter_unicode.c):
/// `[lpad][sign][prefix][spad][grouped digits][.][remainder][rpad]`.
fn fill_number(
    negative: bool,
    prefix: &str,
    digits: &str,
    has_decimal: bool,
    remainder: &str,
    spec: &Spec,
    group: Option<(char, usize)>,
) -> String {
    let sign = match (negative, spec.sign) {
        (true, _) => "-",
        (false, Some('+')) => "+",
        (false, Some(' ')) => " ",
        (false, _) => "",
    };
    let width = spec.width.map_or(-1, |w| w as i64);
    let non_digits =
        (sign.len() + prefix.len() + usize::from(has_decimal) + remainder.chars().count()) as i64;
    // Zero padding is part of the number: it is grouped like the digits (`{:08,}` gives `0,001,234`).
    let min_width = if spec.fill == '0' && spec.align == '=' {
        width - non_digits
    } else {
        0
    };
    let grouped = if digits.is_empty() {
        String::new()
    } else {
        group_digits(digits, min_width, group)
    };
    let padding = (width - non_digits - grouped.chars().count() as i64).max(0) as usize;
    let (left, middle, right) = match spec.align {
        '<' => (0, 0, padding),
        '^' => (padding / 2, 0, padding - padding / 2),
        '=' => (0, padding, 0),
        _ => (padding, 0, 0),
    };
    let fill = |n: usize| spec.fill.to_string().repeat(n);
    let mut out = fill(left);
    out += sign;
    out += prefix;
    out += &fill(middle);
    out += &grouped;
    if has_decimal {
        out.push('.');
    }
    out += remainder;
    out += &fill(right);
    out
}

/// A port of CPython's `_PyUnicode_InsertThousandsGrouping` for a fixed group size: groups `digits`
/// from the right, padding with zeros up to `min_width` characters (separators included).
fn group_digits(digits: &str, min_width: i64, group: Option<(char, usize)>) -> String {
    let n = digits.len() as i64;
    let Some((sep, size)) = group else {
        return "0".repeat((min_width - n).max(0) as usize) + digits;
    };
    let size = size as i64;
    let mut remaining = n;
    let mut min_width = min_width.max(0);
    let mut end = digits.len();
    let mut groups = Vec::new();
    loop {
        let len = size.min(remaining.max(min_width).max(1));
        let n_zeros = (len - remaining).max(0);
        let n_chars = remaining.min(len).max(0);
        let start = end - n_chars as usize;
        groups.push("0".repeat(n_zeros as usize) + &digits[start..end]);
        end = start;
        remaining -= n_chars;
        min_width -= len;
        if remaining <= 0 && min_width <= 0 {
            break;
        }
        min_width -= 1;
    }
    groups.reverse();
    groups.join(&sep.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use MetricValue::{Bool, Int, F32, F64};

    fn template(source: &str) -> FilenameTemplate {
        match FilenameTemplate::parse(source) {
            Ok(template) => template,
            Err(e) => panic!("{e}"),
        }
    }

    fn render_with(
        source: &str,
        values: &[(&str, MetricValue)],
        auto_insert: bool,
        equals: &str,
    ) -> String {
        let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        match template(source).render(lookup, auto_insert, equals) {
            Ok(name) => name,
            Err(e) => panic!("{e}"),
        }
    }

    fn render(source: &str, values: &[(&str, MetricValue)]) -> String {
        render_with(source, values, true, "=")
    }

    fn render_error(source: &str, values: &[(&str, MetricValue)]) -> String {
        let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        match template(source).render(lookup, true, "=") {
            Ok(name) => panic!("`{source}` rendered as `{name}`"),
            Err(e) => e.to_string(),
        }
    }

    fn parse_error(source: &str) -> String {
        match FilenameTemplate::parse(source) {
            Ok(_) => panic!("`{source}` parsed"),
            Err(e) => e.to_string(),
        }
    }

    /// `format(value, spec)` of one value, without the name.
    fn fmt(spec: &str, value: MetricValue) -> String {
        render_with(&format!("{{v:{spec}}}"), &[("v", value)], false, "=")
    }

    #[test]
    fn s017_int_spec_and_unspecified_float() {
        let values = [("epoch", Int(3)), ("acc", F64(0.03))];
        assert_eq!(render("{epoch:03d}-{acc}", &values), "epoch=003-acc=0.03");
        // G.2: the same metric logged as f32 prints its own shortest form too.
        assert_eq!(
            render(
                "{epoch:03d}-{acc}",
                &[("epoch", Int(3)), ("acc", F32(0.03))]
            ),
            "epoch=003-acc=0.03"
        );
    }

    #[test]
    fn s018_field_whose_name_extends_another() {
        let values = [("epoch", Int(3)), ("epoch_test", Int(3))];
        assert_eq!(
            render("{epoch:03d}-{epoch_test:03d}", &values),
            "epoch=003-epoch_test=003"
        );
    }

    #[test]
    fn s019_s020_custom_equals() {
        // The join character (`@` in S019) and the prefix are the caller's.
        let values = [("epoch", Int(3)), ("acc", F64(0.03))];
        assert_eq!(
            render_with("{epoch},{acc:.5f}", &values, true, "="),
            "epoch=3,acc=0.03000"
        );
        assert_eq!(
            render_with("{epoch:03d}-{acc}", &values, true, ":"),
            "epoch:003-acc:0.03"
        );
    }

    #[test]
    fn s023_slash_in_a_metric_name_becomes_underscore() {
        // G.2 changes S023: Lightning gives `epoch=4_val/loss=0.03000`, a sub-directory `epoch=4_val`.
        let values = [("epoch", Int(4)), ("val/loss", F64(0.03))];
        assert_eq!(
            render("{epoch}_{val/loss:.5f}", &values),
            "epoch=4_val_loss=0.03000"
        );
        // A `/` written in the template is kept: it makes a sub-directory.
        assert_eq!(
            render("{epoch}/{val/loss:.2f}", &values),
            "epoch=4/val_loss=0.03"
        );
    }

    #[test]
    fn s024_auto_insert_off() {
        let values = [
            ("epoch", Int(3)),
            ("val/acc", F64(0.03)),
            ("val/mAP@0.50", F64(0.2)),
        ];
        assert_eq!(
            render_with("epoch={epoch:03d}-val_acc={val/acc}", &values, false, "="),
            "epoch=003-val_acc=0.03"
        );
        assert_eq!(
            render_with("mAP@0.50={val/mAP@0.50:.4f}", &values, false, "="),
            "mAP@0.50=0.2000"
        );
    }

    #[test]
    fn s025_missing_value_is_an_error() {
        // G.1: never `missing=0` as in Lightning.
        for source in ["{missing:d}", "{missing:.2f}", "{missing}"] {
            assert_eq!(
                render_error(source, &[]),
                format!("cannot render checkpoint filename `{source}`: no value for `missing`")
            );
        }
        assert_eq!(
            render_error("{epoch}-{val_loss:.2f}", &[("epoch", Int(1))]),
            "cannot render checkpoint filename `{epoch}-{val_loss:.2f}`: no value for `val_loss`"
        );
    }

    #[test]
    fn s026_unspecified_format_is_the_shortest_round_trip_of_the_own_type() {
        // G.2: Lightning prints f32 0.1 as `0.10000000149011612` and f32 1e-5 as `9.999999747378752e-06`.
        assert_eq!(render("{val}", &[("val", F32(0.1))]), "val=0.1");
        assert_eq!(render("{val}", &[("val", F32(1e-5))]), "val=1e-05");
        // f32 123456789 is stored as 123456792, whose shortest f32 form is 1.2345679e8: `123456790.0`
        // (Lightning prints the stored value through f64: `123456792.0`).
        assert_eq!(
            render("{val}", &[("val", F32(123_456_789.0))]),
            "val=123456790.0"
        );
        assert_eq!(render("{val}", &[("val", F64(3.0))]), "val=3.0");
        assert_eq!(render("{val}", &[("val", Bool(true))]), "val=True");
        assert_eq!(render("{val}", &[("val", Bool(false))]), "val=False");
        assert_eq!(render("{val}", &[("val", Int(7))]), "val=7");
        assert_eq!(render("{val}", &[("val", Int(-7))]), "val=-7");
        assert_eq!(render("{val}", &[("val", F64(0.03))]), "val=0.03");
    }

    #[test]
    fn s026_unspecified_float_layout_is_python_repr() {
        let cases: [(MetricValue, &str); 22] = [
            (F64(0.1), "0.1"),
            (F64(0.1 + 0.2), "0.30000000000000004"),
            (F32(0.1 + 0.2), "0.3"),
            (F64(f64::from(0.1f32)), "0.10000000149011612"),
            (F64(1e-4), "0.0001"),
            (F64(1e-5), "1e-05"),
            (F64(1.5e-7), "1.5e-07"),
            (F64(1e15), "1000000000000000.0"),
            (F64(9_999_999_999_999_998.0), "9999999999999998.0"),
            (F64(1e16), "1e+16"),
            (F64(1.5e16), "1.5e+16"),
            (F64(1e100), "1e+100"),
            (F64(5e-324), "5e-324"),
            (F64(f64::MAX), "1.7976931348623157e+308"),
            (F32(f32::MAX), "3.4028235e+38"),
            (F32(1e-45), "1e-45"),
            (F32(16_777_216.0), "16777216.0"),
            (F64(-0.0), "-0.0"),
            (F64(-2.5), "-2.5"),
            (F32(f32::NAN), "nan"),
            (F64(f64::INFINITY), "inf"),
            (F32(f32::NEG_INFINITY), "-inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                render_with("{v}", &[("v", value)], false, "="),
                expected,
                "{value:?}"
            );
        }
        // Of two closest shortest forms, the even one, as Python's repr (Rust's `{:e}` rounds up):
        // 2^50 + 0.25 lies halfway between `…4.2` and `…4.3`, f32 37.9765625 between `…562` and `…563`.
        let two_50 = 2f64.powi(50);
        let shortest = |value| render_with("{v}", &[("v", value)], false, "=");
        assert_eq!(shortest(F64(two_50 + 0.25)), "1125899906842624.2");
        assert_eq!(shortest(F64(two_50 + 0.75)), "1125899906842624.8");
        assert_eq!(shortest(F32(-4861.0 / 128.0)), "-37.976562");
        // A spec without code or precision keeps the shortest form and pads it.
        assert_eq!(fmt(">8", F32(0.1)), "     0.1");
        assert_eq!(fmt("+", F32(0.1)), "+0.1");
        assert_eq!(fmt(",", F64(1234567.0)), "1,234,567.0");
        assert_eq!(fmt("#", F64(1e16)), "1.e+16");
        assert_eq!(fmt("", F32(0.25)), "0.25");
    }

    #[test]
    fn s027_rounding_and_specials() {
        assert_eq!(fmt(".2f", F64(0.125)), "0.12");
        assert_eq!(fmt(".2f", F64(0.375)), "0.38");
        assert_eq!(fmt(".2f", F64(f64::NAN)), "nan");
        assert_eq!(fmt(".2f", F64(f64::INFINITY)), "inf");
        assert_eq!(fmt(".1f", F64(3.25)), "3.2");
        assert_eq!(fmt(">8.2f", F64(0.5)), "    0.50");
        assert_eq!(fmt(".3e", F64(0.1)), "1.000e-01");
        assert_eq!(fmt("05d", Int(42)), "00042");
        // With a spec an f32 is formatted from its exact value, as Python formats it widened to f64.
        assert_eq!(fmt(".2f", F32(0.125)), "0.12");
        assert_eq!(fmt(".17g", F32(0.1)), "0.10000000149011612");
    }

    #[test]
    fn rust_exact_formatting_rounds_like_python() {
        // Ties on the exact binary value round half to even; near-ties follow the binary value.
        let cases: [(&str, f64, &str); 16] = [
            (".0f", 0.5, "0"),
            (".0f", 1.5, "2"),
            (".0f", 2.5, "2"),
            (".0f", 3.5, "4"),
            (".1f", 0.25, "0.2"),
            (".1f", 0.35, "0.3"), // 0.35 is 0.34999999999999997779...
            (".1f", 0.45, "0.5"), // 0.45 is 0.45000000000000001110...
            (".2f", 1.005, "1.00"),
            (".2f", 2.675, "2.67"),
            (".3f", 1.0005, "1.000"),
            (".1e", 1.25, "1.2e+00"),
            (".1e", 1.35, "1.4e+00"),
            (".0e", 2.5, "2e+00"),
            (".0e", 25.0, "2e+01"),
            (".1e", 9.96, "1.0e+01"),
            (".2f", 1e22, "10000000000000000000000.00"),
        ];
        for (spec, value, expected) in cases {
            assert_eq!(fmt(spec, F64(value)), expected, "{spec} {value}");
        }
        assert_eq!(
            fmt(".60f", F64(0.1)),
            "0.100000000000000005551115123125782702118158340454101562500000"
        );
        assert_eq!(fmt(".3f", F64(1e300)).len(), 305);
    }

    #[test]
    fn s028_integer_code_on_a_float_is_rejected_at_check_time() {
        let t = template("{epoch}-{val_loss:d}");
        let kind_of = |name: &str| match name {
            "epoch" => Some(MetricKind::Int),
            "val_loss" => Some(MetricKind::F32),
            _ => None,
        };
        let expected = "invalid checkpoint filename `{epoch}-{val_loss:d}`: format code `d` in `{val_loss:d}` \
                        needs an integer, but `val_loss` is a float metric, use `{val_loss:.0f}` to print it \
                        without decimals";
        assert_eq!(
            t.check_kinds(kind_of).map_err(|e| e.to_string()),
            Err(expected.to_string())
        );
        // The same at render time, never a panic.
        let values = [("epoch", Int(1)), ("val_loss", F64(0.5))];
        assert_eq!(render_error("{epoch}-{val_loss:d}", &values), expected);
        assert_eq!(
            render_error("{val_loss:#x}", &values),
            "invalid checkpoint filename `{val_loss:#x}`: format code `x` in `{val_loss:#x}` needs an integer, \
             but `val_loss` is a float metric"
        );
    }

    #[test]
    fn check_kinds_follows_python() {
        let kinds = |name: &str| match name {
            "step" => Some(MetricKind::Int),
            "ok" => Some(MetricKind::Bool),
            "loss" => Some(MetricKind::F64),
            _ => None,
        };
        let check = |source: &str| {
            template(source)
                .check_kinds(kinds)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check("{step:05d}-{step:.2f}-{step:,}-{step:_x}-{ok}-{ok:d}-{loss:.3e}-{loss:,.2f}"),
            Ok(())
        );
        assert_eq!(check("{unknown:d}"), Ok(()));
        assert_eq!(
            check("{step:.2}"),
            Err("invalid checkpoint filename `{step:.2}`: precision `.2` in `{step:.2}` needs a float, but \
                 `step` is an integer metric, use a float format code such as `{step:.2f}`"
                .to_string())
        );
        assert_eq!(
            check("{step:.3n}"),
            Err("invalid checkpoint filename `{step:.3n}`: precision `.3` in `{step:.3n}` needs a float, but \
                 `step` is an integer metric, use a float format code such as `{step:.3f}`"
                .to_string())
        );
        assert_eq!(check("{step:n}-{loss:.3n}"), Ok(()));
        assert_eq!(
            check("{ok:z}"),
            Err("invalid checkpoint filename `{ok:z}`: `z` in `{ok:z}` needs a float, but `ok` is a boolean \
                 metric"
                .to_string())
        );
        assert_eq!(
            check("{loss:c}"),
            Err("invalid checkpoint filename `{loss:c}`: format code `c` in `{loss:c}` needs an integer, but \
                 `loss` is a float metric"
                .to_string())
        );
    }

    #[test]
    fn s029_repeated_field_expands_everywhere() {
        assert_eq!(
            render("{epoch}{epoch}", &[("epoch", Int(1))]),
            "epoch=1epoch=1"
        );
        assert_eq!(template("{epoch}{step}{epoch}").fields(), ["epoch", "step"]);
    }

    #[test]
    fn s030_doubled_braces_are_literal() {
        // Lightning raises `unexpected '{' in field name`; fulgur follows `str.format`.
        assert_eq!(render("x{{y}}", &[]), "x{y}");
        assert_eq!(template("x{{y}}").fields(), Vec::<&str>::new());
        assert_eq!(render("{{{epoch}}}", &[("epoch", Int(2))]), "{epoch=2}");
        assert_eq!(template("x{{y}}").as_str(), "x{{y}}");
    }

    #[test]
    fn s031_docstring_examples() {
        assert_eq!(render("{epoch}", &[("epoch", Int(0))]), "epoch=0");
        assert_eq!(render("{epoch:03d}", &[("epoch", Int(5))]), "epoch=005");
        let values = [
            ("epoch", Int(2)),
            ("val_loss", F64(0.123456)),
            ("step", Int(0)),
        ];
        assert_eq!(
            render("{epoch}-{val_loss:.2f}", &values),
            "epoch=2-val_loss=0.12"
        );
        assert_eq!(render("{epoch:d}", &values), "epoch=2");
        assert_eq!(
            render_with(
                "epoch={epoch}-validation_loss={val_loss:.2f}",
                &values,
                false,
                "="
            ),
            "epoch=2-validation_loss=0.12"
        );
        assert_eq!(render("{step}", &values), "step=0");
    }

    #[test]
    fn malformed_templates_name_the_template_and_what_was_expected() {
        let cases = [
            ("{epoch", "unclosed `{` at position 0, expected `}` (or `{{` for a literal brace)"),
            ("ab{epoch:03d", "unclosed `{` at position 2, expected `}` (or `{{` for a literal brace)"),
            ("epoch}", "single `}` at position 5, expected `}}` for a literal brace"),
            (
                "{a{b}",
                "unexpected `{` at position 2 in the field opened at position 0, expected `}` (or `{{` for a \
                 literal brace)",
            ),
            ("{x:{w}}", "unexpected `{` at position 3 in a format spec, nested fields are not supported"),
            ("x-{}", "empty field name at position 2, expected a metric name such as `{epoch}`"),
            ("{:03d}", "empty field name at position 0, expected a metric name such as `{epoch}`"),
            (
                "{epoch:03q}",
                "unknown format code `q` in `{epoch:03q}`, expected `b`, `c`, `d`, `e`, `E`, `f`, `F`, `g`, \
                 `G`, `n`, `o`, `x`, `X` or `%`",
            ),
            ("{epoch:s}", "unknown format code `s` in `{epoch:s}`, expected `b`, `c`, `d`, `e`, `E`, `f`, `F`, `g`, `G`, `n`, `o`, `x`, `X` or `%`"),
            (
                "{x:abc}",
                "invalid format spec `abc` in `{x:abc}`, expected \
                 `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`",
            ),
            ("{x:.f}", "missing precision after `.` in `{x:.f}`, expected digits such as `.2`"),
            ("{x:,_d}", "both `,` and `_` in `{x:,_d}`, expected at most one grouping option"),
            ("{x:_,d}", "both `,` and `_` in `{x:_,d}`, expected at most one grouping option"),
            ("{x:,n}", "grouping `,` cannot be used with format code `n` in `{x:,n}`"),
            ("{x:,x}", "grouping `,` cannot be used with format code `x` in `{x:,x}`"),
            ("{x:_c}", "grouping `_` cannot be used with format code `c` in `{x:_c}`"),
            ("{x:.2d}", "precision `.2` cannot be used with format code `d` in `{x:.2d}`"),
            ("{x:zd}", "`z` cannot be used with format code `d` in `{x:zd}`"),
            ("{x:+c}", "sign `+` cannot be used with format code `c` in `{x:+c}`"),
            ("{x:#c}", "`#` cannot be used with format code `c` in `{x:#c}`"),
            ("{x:300}", "width `300` in `{x:300}` is too large, expected at most 255"),
            ("{x:.99999999999999999999f}", "precision `99999999999999999999` in `{x:.99999999999999999999f}` is too large, expected at most 255"),
        ];
        for (source, reason) in cases {
            assert_eq!(
                parse_error(source),
                format!("invalid checkpoint filename `{source}`: {reason}")
            );
        }
    }

    #[test]
    fn names_may_hold_any_character_but_colon_and_braces() {
        let t = template("{val/loss}-{mAP@0.50:.3f}-{a b!r}");
        assert_eq!(t.fields(), ["val/loss", "mAP@0.50", "a b!r"]);
        let values = [
            ("val/loss", F32(0.5)),
            ("mAP@0.50", F64(0.25)),
            ("a b!r", Int(1)),
        ];
        assert_eq!(
            t.render(|n| values.iter().find(|v| v.0 == n).map(|v| v.1), true, "="),
            Ok("val_loss=0.5-mAP@0.50=0.250-a b!r=1".to_string())
        );
    }

    #[test]
    fn integer_specs() {
        let cases: [(&str, i64, &str); 24] = [
            ("d", -42, "-42"),
            ("+d", 42, "+42"),
            (" d", 42, " 42"),
            ("<5", 42, "42   "),
            ("^6", 42, "  42  "),
            ("*^7", 42, "**42***"),
            ("=+6", 42, "+   42"),
            ("<05", 42, "42000"),
            ("x>5", 42, "xxx42"),
            ("06d", -42, "-00042"),
            (",", 1234567, "1,234,567"),
            ("_d", -1234567, "-1_234_567"),
            ("08,", 1234, "0,001,234"),
            ("09,", 1234, "0,001,234"),
            ("010,", -1234, "-0,001,234"),
            ("b", 10, "1010"),
            ("#b", 10, "0b1010"),
            ("#o", 8, "0o10"),
            ("#x", 255, "0xff"),
            ("#X", 255, "0XFF"),
            ("_b", 255, "1111_1111"),
            ("#012_x", 48879, "0x0_0000_beef"),
            ("n", 1234567, "1234567"),
            ("05c", 65, "0000A"),
        ];
        for (spec, value, expected) in cases {
            assert_eq!(fmt(spec, Int(value)), expected, "{spec} {value}");
        }
        assert_eq!(fmt("d", Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(fmt(".2f", Int(3)), "3.00");
        assert_eq!(fmt("e", Int(12345)), "1.234500e+04");
        assert_eq!(fmt("%", Int(1)), "100.000000%");
        assert_eq!(fmt("g", Int(i64::MAX)), "9.22337e+18");
        assert_eq!(
            render_error("{x:c}", &[("x", Int(-1))]),
            "cannot render checkpoint filename `{x:c}`: `{x:c}` needs a Unicode scalar value for format code \
             `c`, got -1"
        );
    }

    #[test]
    fn bool_with_a_spec_is_an_integer() {
        assert_eq!(fmt("d", Bool(true)), "1");
        assert_eq!(fmt(">3", Bool(false)), "  0");
        assert_eq!(fmt("-", Bool(true)), "1");
        assert_eq!(fmt(".1f", Bool(true)), "1.0");
        assert_eq!(fmt("", Bool(true)), "True");
    }

    #[test]
    fn float_specs() {
        let cases: [(&str, f64, &str); 44] = [
            ("f", 1.5, "1.500000"),
            (".0f", 1.5, "2"),
            ("#.0f", 1.5, "2."),
            ("F", f64::INFINITY, "INF"),
            ("F", f64::NAN, "NAN"),
            (".2f", f64::NEG_INFINITY, "-inf"),
            ("+.1f", f64::NAN, "+nan"),
            ("010", f64::INFINITY, "0000000inf"),
            ("+.2f", 0.5, "+0.50"),
            (" .2f", -0.5, "-0.50"),
            ("=+8.2f", 0.5, "+   0.50"),
            ("08.2f", -0.5, "-0000.50"),
            ("*<8.2f", 0.5, "0.50****"),
            (",.2f", 1234567.891, "1,234,567.89"),
            ("_.1f", 1234567.0, "1_234_567.0"),
            ("012,.2f", 1234.5, "0,001,234.50"),
            (".2f", -0.001, "-0.00"),
            ("z.2f", -0.001, "0.00"),
            ("z.1f", -0.0, "0.0"),
            ("z.1f", -0.5, "-0.5"),
            ("e", 0.0, "0.000000e+00"),
            (".0e", 12345.0, "1e+04"),
            ("#.0e", 12345.0, "1.e+04"),
            (".2E", 1e-100, "1.00E-100"),
            ("E", f64::NEG_INFINITY, "-INF"),
            ("g", 0.0001, "0.0001"),
            ("g", 0.00001, "1e-05"),
            ("g", 123456.0, "123456"),
            ("g", 1234567.0, "1.23457e+06"),
            ("#g", 1.0, "1.00000"),
            (".3g", 100.0, "100"),
            ("#.3g", 100.0, "100."),
            (".0g", 0.15, "0.1"),
            ("G", 1e-10, "1E-10"),
            ("n", 1234567.0, "1.23457e+06"),
            (".3", 123.0, "1.23e+02"),
            (".3", 12.0, "12.0"),
            (".3", 1.5, "1.5"),
            (".3", 1e20, "1e+20"),
            ("%", 0.5, "50.000000%"),
            (".1%", 0.125, "12.5%"),
            (".0%", f64::INFINITY, "inf%"),
            ("+%", f64::NAN, "+nan%"),
            ("12,.3e", 1234.5, "   1.234e+03"),
        ];
        for (spec, value, expected) in cases {
            assert_eq!(fmt(spec, F64(value)), expected, "{spec} {value}");
        }
    }
}

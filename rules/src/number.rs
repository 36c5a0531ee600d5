//! Numbers as Python's `format(value, spec)` prints them, for the fields of checkpoint filename
//! templates (`{epoch:02d}`, `{val_loss:.3f}`): ports of CPython's float layout, padding and digit
//! grouping, so that a template copied from Lightning names its files as Lightning does (G.2).
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use crate::template::{Kind, Spec};

/// A value a template field prints: a metric's value, in its own type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
}

impl Number {
    /// The kind a spec is checked against ([`Field::check_kind`](crate::template::Field::check_kind)).
    pub fn kind(self) -> Kind {
        match self {
            Number::F32(_) => Kind::F32,
            Number::F64(_) => Kind::F64,
            Number::Int(_) => Kind::Int,
            Number::Bool(_) => Kind::Bool,
        }
    }
}

/// Formats `value` as Python's `format(value, spec)`, except that a float with neither a format code nor
/// a precision prints the shortest string that round-trips its own type (G.2). The spec must have been
/// checked against the value's kind ([`Field::check_kind`](crate::template::Field::check_kind)); the
/// error says why a value cannot be printed (format code `c` with no character's number).
pub fn format(value: Number, spec: &Spec) -> Result<String, String> {
    match value {
        Number::Bool(b) if !spec.given => Ok(if b { "True" } else { "False" }.to_string()),
        Number::Bool(b) => format_int(i64::from(b), spec),
        Number::Int(v) if !spec.given => Ok(v.to_string()),
        Number::Int(v) => format_int(v, spec),
        Number::F32(v) => Ok(format_float(Float::F32(v), spec)),
        Number::F64(v) => Ok(format_float(Float::F64(v), spec)),
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

    use Number::{Bool, Int, F32, F64};

    /// `format(value, spec)`, the spec checked as a template field's is.
    fn fmt(spec: &str, value: Number) -> String {
        let field = match crate::template::parse(&format!("{{v:{spec}}}")) {
            Ok(pieces) => pieces[0].as_field().cloned().expect("a field"),
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = field.check_kind(value.kind()) {
            panic!("{e}");
        }
        match format(value, &field.spec) {
            Ok(text) => text,
            Err(e) => panic!("{e}"),
        }
    }

    /// `format(value)`: no spec at all.
    fn shortest(value: Number) -> String {
        match Spec::parse("v", None).map(|spec| format(value, &spec)) {
            Ok(Ok(text)) => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn s026_unspecified_float_layout_is_python_repr() {
        let cases: [(Number, &str); 22] = [
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
            assert_eq!(shortest(value), expected, "{value:?}");
        }
        // Of two closest shortest forms, the even one, as Python's repr (Rust's `{:e}` rounds up):
        // 2^50 + 0.25 lies halfway between `…4.2` and `…4.3`, f32 37.9765625 between `…562` and `…563`.
        let two_50 = 2f64.powi(50);
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
        let c = Spec::parse("x", Some("c")).expect("a valid spec");
        assert_eq!(
            format(Int(-1), &c),
            Err("needs a Unicode scalar value for format code `c`, got -1".to_string())
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

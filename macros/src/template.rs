//! Checkpoint filename templates, checked at compile time with the runtime's rules
//! (`FilenameTemplate::parse` and `check_kinds`): Python's `str.format` fields, `{{`/`}}` literal braces,
//! and format specs that can print the kind of their metric.

/// The type a metric is logged with, when the macro can tell it from the written type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F32,
    F64,
    Int,
    Bool,
}

impl Kind {
    fn is_float(self) -> bool {
        matches!(self, Kind::F32 | Kind::F64)
    }

    fn words(self) -> &'static str {
        match self {
            Kind::F32 | Kind::F64 => "a float",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean",
        }
    }
}

/// A `{name}` or `{name:spec}` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    spec_source: Option<String>,
    spec: Spec,
}

impl Field {
    fn written(&self) -> String {
        written(&self.name, self.spec_source.as_deref())
    }

    /// Checks the spec against the metric's kind: Python rejects an integer format code on a float,
    /// and a precision or `z` without a float code on an integer or a boolean.
    pub fn check_kind(&self, kind: Kind) -> Result<(), String> {
        let spec = &self.spec;
        if !spec.given {
            return Ok(());
        }
        let (name, shown) = (&self.name, self.written());
        if kind.is_float() {
            return match spec.code {
                Some(code @ ('b' | 'c' | 'd' | 'o' | 'x' | 'X')) => {
                    let mut reason = format!(
                        "format code `{code}` in `{shown}` needs an integer, but `{name}` is a float metric"
                    );
                    if code == 'd' && spec.precision.is_none() {
                        let source = self.spec_source.as_deref().unwrap_or("");
                        let fixed = format!("{}.0f", &source[..source.len() - 1]);
                        reason += &format!(
                            ", use `{}` to print it without decimals",
                            written(name, Some(&fixed))
                        );
                    }
                    Err(reason)
                }
                _ => Ok(()),
            };
        }
        if !matches!(spec.code, None | Some('n')) {
            return Ok(());
        }
        let what = kind.words();
        if let Some(precision) = spec.precision {
            let source = self.spec_source.as_deref().unwrap_or("");
            let source = if spec.code == Some('n') {
                &source[..source.len() - 1]
            } else {
                source
            };
            Err(format!(
                "precision `.{precision}` in `{shown}` needs a float, but `{name}` is {what} metric, use a \
                 float format code such as `{}`",
                written(name, Some(&format!("{source}f")))
            ))
        } else if spec.no_neg_zero {
            Err(format!(
                "`z` in `{shown}` needs a float, but `{name}` is {what} metric"
            ))
        } else {
            Ok(())
        }
    }
}

fn written(name: &str, spec: Option<&str>) -> String {
    match spec {
        Some(spec) => format!("{{{name}:{spec}}}"),
        None => format!("{{{name}}}"),
    }
}

/// The fields of `template`, or why its braces or a format spec are malformed (the reason only: the
/// caller names the argument).
pub fn parse(template: &str) -> Result<Vec<Field>, String> {
    let chars: Vec<char> = template.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => i += 2,
            '{' => {
                let open = i;
                let unclosed = || {
                    format!("unclosed `{{` at position {open}, expected `}}` (or `{{{{` for a literal brace)")
                };
                i += 1;
                let mut name = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(unclosed()),
                        Some(':' | '}') => break,
                        Some('{') => {
                            return Err(format!(
                                "unexpected `{{` at position {i} in the field opened at position {open}, \
                                 expected `}}` (or `{{{{` for a literal brace)"
                            ))
                        }
                        Some(&c) => name.push(c),
                    }
                    i += 1;
                }
                let mut spec_source = None;
                if chars[i] == ':' {
                    i += 1;
                    let mut spec = String::new();
                    loop {
                        match chars.get(i) {
                            None => return Err(unclosed()),
                            Some('}') => break,
                            Some('{') => {
                                return Err(format!(
                                    "unexpected `{{` at position {i} in a format spec, nested fields are not supported"
                                ))
                            }
                            Some(&c) => spec.push(c),
                        }
                        i += 1;
                    }
                    spec_source = Some(spec);
                }
                i += 1;
                if name.is_empty() {
                    return Err(format!(
                        "empty field name at position {open}, expected a metric name such as `{{epoch}}`"
                    ));
                }
                let spec = Spec::parse(&name, spec_source.as_deref())?;
                fields.push(Field {
                    name,
                    spec_source,
                    spec,
                });
            }
            '}' if chars.get(i + 1) == Some(&'}') => i += 2,
            '}' => {
                return Err(format!(
                    "single `}}` at position {i}, expected `}}}}` for a literal brace"
                ))
            }
            _ => i += 1,
        }
    }
    Ok(fields)
}

const MAX_NUMBER: usize = 255;
const INTEGER_CODES: &str = "bcdoxX";
const EXPECTED_CODES: &str =
    "`b`, `c`, `d`, `e`, `E`, `f`, `F`, `g`, `G`, `n`, `o`, `x`, `X` or `%`";

/// `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`, the parts the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    given: bool,
    no_neg_zero: bool,
    precision: Option<usize>,
    code: Option<char>,
}

impl Spec {
    fn parse(name: &str, written_spec: Option<&str>) -> Result<Self, String> {
        let shown = written(name, written_spec);
        let source = written_spec.unwrap_or("");
        let c: Vec<char> = source.chars().collect();
        let is_align = |ch: char| matches!(ch, '<' | '>' | '=' | '^');
        let mut spec = Spec {
            given: !c.is_empty(),
            no_neg_zero: false,
            precision: None,
            code: None,
        };
        let mut i = 0;
        let mut fill_given = false;
        if c.len() >= 2 && is_align(c[1]) {
            fill_given = true;
            i = 2;
        } else if !c.is_empty() && is_align(c[0]) {
            i = 1;
        }
        let mut sign = None;
        if let Some(&s @ ('+' | '-' | ' ')) = c.get(i) {
            sign = Some(s);
            i += 1;
        }
        if c.get(i) == Some(&'z') {
            spec.no_neg_zero = true;
            i += 1;
        }
        let mut alternate = false;
        if c.get(i) == Some(&'#') {
            alternate = true;
            i += 1;
        }
        if !fill_given && c.get(i) == Some(&'0') {
            i += 1;
        }
        let number = |i: &mut usize, what: &str| -> Result<Option<usize>, String> {
            let start = *i;
            while c.get(*i).is_some_and(char::is_ascii_digit) {
                *i += 1;
            }
            if *i == start {
                return Ok(None);
            }
            let digits: String = c[start..*i].iter().collect();
            match digits.parse::<usize>() {
                Ok(n) if n <= MAX_NUMBER => Ok(Some(n)),
                _ => Err(format!(
                    "{what} `{digits}` in `{shown}` is too large, expected at most {MAX_NUMBER}"
                )),
            }
        };
        number(&mut i, "width")?;
        let both =
            || format!("both `,` and `_` in `{shown}`, expected at most one grouping option");
        let mut grouping = None;
        if c.get(i) == Some(&',') {
            grouping = Some(',');
            i += 1;
        }
        if c.get(i) == Some(&'_') {
            if grouping.is_some() {
                return Err(both());
            }
            grouping = Some('_');
            i += 1;
        }
        if c.get(i) == Some(&',') && grouping == Some('_') {
            return Err(both());
        }
        if c.get(i) == Some(&'.') {
            i += 1;
            spec.precision = number(&mut i, "precision")?;
            if spec.precision.is_none() {
                return Err(format!(
                    "missing precision after `.` in `{shown}`, expected digits such as `.2`"
                ));
            }
        }
        match c.len() - i {
            0 => {}
            1 => spec.code = Some(c[i]),
            _ => {
                return Err(format!(
                    "invalid format spec `{source}` in `{shown}`, expected \
                     `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`"
                ))
            }
        }
        let Some(code) = spec.code else {
            return Ok(spec);
        };
        if !"bcdoxXneEfFgG%".contains(code) {
            return Err(format!(
                "unknown format code `{code}` in `{shown}`, expected {EXPECTED_CODES}"
            ));
        }
        if let Some(g) = grouping {
            let allowed = "deEfFgG%".contains(code) || (g == '_' && "boxX".contains(code));
            if !allowed {
                return Err(format!(
                    "grouping `{g}` cannot be used with format code `{code}` in `{shown}`"
                ));
            }
        }
        if INTEGER_CODES.contains(code) {
            if let Some(precision) = spec.precision {
                return Err(format!(
                    "precision `.{precision}` cannot be used with format code `{code}` in `{shown}`"
                ));
            }
            if spec.no_neg_zero {
                return Err(format!(
                    "`z` cannot be used with format code `{code}` in `{shown}`"
                ));
            }
        }
        if code == 'c' {
            if let Some(s) = sign {
                return Err(format!(
                    "sign `{s}` cannot be used with format code `c` in `{shown}`"
                ));
            }
            if alternate {
                return Err(format!(
                    "`#` cannot be used with format code `c` in `{shown}`"
                ));
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &str) -> Vec<String> {
        parse(t).unwrap().into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn fields_and_literal_braces() {
        assert_eq!(
            names("digits-{epoch:02d}-{val_loss:.2f}"),
            ["epoch", "val_loss"]
        );
        assert_eq!(names("{{x}}-{val/loss}"), ["val/loss"]);
        assert_eq!(names("plain"), Vec::<String>::new());
    }

    #[test]
    fn malformed_templates() {
        assert!(parse("{epoch")
            .unwrap_err()
            .starts_with("unclosed `{` at position 0"));
        assert!(parse("a}")
            .unwrap_err()
            .starts_with("single `}` at position 1"));
        assert!(parse("{}")
            .unwrap_err()
            .starts_with("empty field name at position 0"));
        assert!(parse("{:02d}").unwrap_err().starts_with("empty field name"));
        assert!(parse("{a{b}")
            .unwrap_err()
            .starts_with("unexpected `{` at position 2"));
        assert!(parse("{x:03q}")
            .unwrap_err()
            .starts_with("unknown format code `q`"));
        assert!(parse("{x:.d}")
            .unwrap_err()
            .starts_with("missing precision"));
        assert!(parse("{x:.2d}")
            .unwrap_err()
            .starts_with("precision `.2` cannot be used"));
        assert!(parse("{x:,_f}")
            .unwrap_err()
            .starts_with("both `,` and `_`"));
        assert!(parse("{x:,x}")
            .unwrap_err()
            .starts_with("grouping `,` cannot"));
        assert!(parse("{x:+c}").unwrap_err().starts_with("sign `+` cannot"));
        assert!(parse("{x:>8.2f}").is_ok());
    }

    #[test]
    fn specs_against_kinds() {
        let f = |t: &str| parse(t).unwrap().remove(0);
        assert_eq!(
            f("{val_loss:02d}").check_kind(Kind::F32).unwrap_err(),
            "format code `d` in `{val_loss:02d}` needs an integer, but `val_loss` is a float metric, \
             use `{val_loss:02.0f}` to print it without decimals"
        );
        assert!(f("{val_loss:02d}").check_kind(Kind::Int).is_ok());
        assert!(f("{epoch:.2}")
            .check_kind(Kind::Int)
            .unwrap_err()
            .contains("use a float format code such as `{epoch:.2f}`"));
        assert!(f("{epoch:z}").check_kind(Kind::Bool).is_err());
        assert!(f("{x:.3e}").check_kind(Kind::F64).is_ok());
        assert!(f("{x}").check_kind(Kind::Bool).is_ok());
    }
}

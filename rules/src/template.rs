//! Checkpoint filename templates: Python's `str.format` fields (`{epoch:03d}-{val_loss:.2f}`), `{{`/`}}`
//! literal braces, and format specs checked against the kind of the metric they print. Rendering values
//! is the runtime's; this is what the macros check at compile time with the same rules and messages.

/// The type of the metric a field prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Integer.
    Int,
    /// Boolean.
    Bool,
}

impl Kind {
    /// `true` for the float kinds.
    pub fn is_float(self) -> bool {
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

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text, with `{{` and `}}` already turned into single braces.
    Text(String),
    /// A field.
    Field(Field),
}

impl Piece {
    /// The field, if this piece is one.
    pub fn as_field(&self) -> Option<&Field> {
        match self {
            Piece::Field(field) => Some(field),
            Piece::Text(_) => None,
        }
    }
}

/// A `{name}` or `{name:spec}` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The metric name.
    pub name: String,
    /// The spec as written, `None` without a `:`.
    pub spec_source: Option<String>,
    /// The parsed spec.
    pub spec: Spec,
}

impl Field {
    /// The field as the user wrote it, for messages.
    pub fn written(&self) -> String {
        written(&self.name, self.spec_source.as_deref())
    }

    /// Checks the spec against the kind of the field's metric, as Python does: an integer format code
    /// (`b c d o x X`) on a float is rejected, and so is a precision or `z` without a float format code
    /// on an integer or a boolean. The error is the reason, with what to write instead where there is an
    /// obvious fix.
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
        // Without a float format code an integer is formatted as one (`d`), which takes neither.
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

/// `{name}` or `{name:spec}`, as written.
pub fn written(name: &str, spec: Option<&str>) -> String {
    match spec {
        Some(spec) => format!("{{{name}:{spec}}}"),
        None => format!("{{{name}}}"),
    }
}

/// Parses `template` into text and fields, checking its braces and every format spec.
///
/// `{{` and `}}` are literal braces. An unclosed `{`, a single `}`, an empty name (`{}`, `{:03d}`) or an
/// invalid spec (`{epoch:03q}`) is an error: the reason, with the position in characters from 0 (the
/// caller names the template).
pub fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = template.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                text.push('{');
                i += 2;
            }
            '{' => {
                let open = i;
                let unclosed = || {
                    format!(
                        "unclosed `{{` at position {open}, expected `}}` (or `{{{{` for a literal brace)"
                    )
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
                                    "unexpected `{{` at position {i} in a format spec, nested fields are \
                                     not supported"
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
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(Field {
                    name,
                    spec_source,
                    spec,
                }));
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                text.push('}');
                i += 2;
            }
            '}' => {
                return Err(format!(
                    "single `}}` at position {i}, expected `}}}}` for a literal brace"
                ))
            }
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Longest width or precision accepted: a file name has at most 255 bytes on common file systems, and a
/// bound keeps a typo such as `{x:.1000000f}` from allocating without limit.
const MAX_NUMBER: usize = 255;

/// The format codes that print integers only.
const INTEGER_CODES: &str = "bcdoxX";
const EXPECTED_CODES: &str =
    "`b`, `c`, `d`, `e`, `E`, `f`, `F`, `g`, `G`, `n`, `o`, `x`, `X` or `%`";

/// A parsed format spec: `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `false` for an empty spec (`{x}`, `{x:}`), which prints a bool as `True` and a float in full.
    pub given: bool,
    /// The fill character (`' '` by default, `0` with the `0` flag).
    pub fill: char,
    /// `<`, `>`, `=` or `^`.
    pub align: char,
    /// `+`, `-` or `' '`.
    pub sign: Option<char>,
    /// `z`: negative zero prints as zero.
    pub no_neg_zero: bool,
    /// `#`.
    pub alternate: bool,
    /// The minimum width.
    pub width: Option<usize>,
    /// `,` or `_`.
    pub grouping: Option<char>,
    /// The digits after `.`.
    pub precision: Option<usize>,
    /// The format code (`d`, `f`, `e`, …).
    pub code: Option<char>,
}

impl Spec {
    /// Python's `parse_internal_render_format_spec` plus its checks that need no value: errors in the
    /// spec itself, whatever the metric.
    pub fn parse(name: &str, written_spec: Option<&str>) -> Result<Self, String> {
        let shown = written(name, written_spec);
        let source = written_spec.unwrap_or("");
        let c: Vec<char> = source.chars().collect();
        let is_align = |ch: char| matches!(ch, '<' | '>' | '=' | '^');
        let mut spec = Spec {
            given: !c.is_empty(),
            fill: ' ',
            align: '>',
            sign: None,
            no_neg_zero: false,
            alternate: false,
            width: None,
            grouping: None,
            precision: None,
            code: None,
        };
        let mut i = 0;
        let mut fill_given = false;
        let mut align_given = false;
        if c.len() >= 2 && is_align(c[1]) {
            (spec.fill, spec.align) = (c[0], c[1]);
            (fill_given, align_given) = (true, true);
            i = 2;
        } else if !c.is_empty() && is_align(c[0]) {
            spec.align = c[0];
            align_given = true;
            i = 1;
        }
        if let Some(&sign @ ('+' | '-' | ' ')) = c.get(i) {
            spec.sign = Some(sign);
            i += 1;
        }
        if c.get(i) == Some(&'z') {
            spec.no_neg_zero = true;
            i += 1;
        }
        if c.get(i) == Some(&'#') {
            spec.alternate = true;
            i += 1;
        }
        if !fill_given && c.get(i) == Some(&'0') {
            spec.fill = '0';
            if !align_given {
                spec.align = '=';
            }
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
        spec.width = number(&mut i, "width")?;
        let both =
            || format!("both `,` and `_` in `{shown}`, expected at most one grouping option");
        if c.get(i) == Some(&',') {
            spec.grouping = Some(',');
            i += 1;
        }
        if c.get(i) == Some(&'_') {
            if spec.grouping.is_some() {
                return Err(both());
            }
            spec.grouping = Some('_');
            i += 1;
        }
        if c.get(i) == Some(&',') && spec.grouping == Some('_') {
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
        if let Some(grouping) = spec.grouping {
            let allowed = "deEfFgG%".contains(code) || (grouping == '_' && "boxX".contains(code));
            if !allowed {
                return Err(format!(
                    "grouping `{grouping}` cannot be used with format code `{code}` in `{shown}`"
                ));
            }
        }
        // These hold for every metric: a float cannot take an integer code at all (`n` is both).
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
            if let Some(sign) = spec.sign {
                return Err(format!(
                    "sign `{sign}` cannot be used with format code `c` in `{shown}`"
                ));
            }
            if spec.alternate {
                return Err(format!(
                    "`#` cannot be used with format code `c` in `{shown}`"
                ));
            }
        }
        Ok(spec)
    }

    /// Separator and group size for the integer digits.
    pub fn group(&self, code: Option<char>) -> Option<(char, usize)> {
        self.grouping.map(|sep| {
            let size = if sep == '_' && matches!(code, Some('b' | 'o' | 'x' | 'X')) {
                4
            } else {
                3
            };
            (sep, size)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &str) -> Vec<String> {
        let pieces = parse(t).unwrap();
        pieces
            .iter()
            .filter_map(Piece::as_field)
            .map(|f| f.name.clone())
            .collect()
    }

    #[test]
    fn fields_and_literal_braces() {
        assert_eq!(
            names("digits-{epoch:02d}-{val_loss:.2f}"),
            ["epoch", "val_loss"]
        );
        assert_eq!(names("{{x}}-{val/loss}"), ["val/loss"]);
        assert_eq!(
            parse("{{x}}-{y}").unwrap()[0],
            Piece::Text("{x}-".into()),
            "doubled braces are literal text"
        );
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
        let f = |t: &str| parse(t).unwrap()[0].as_field().unwrap().clone();
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

//! Checkpoint file names from templates such as `{epoch}-{val_loss:.2f}`.
//!
//! The syntax is Python's `str.format`, as in Lightning's `ModelCheckpoint(filename=...)`, so templates
//! copied from Lightning configs work unchanged. Where fulgur differs (G.2):
//!
//! - `{{` and `}}` are literal braces, and a malformed template is an error when it is parsed;
//! - a value with no format spec prints as the shortest string that round-trips its own type: an f32
//!   0.1 is `0.1`, not `0.10000000149011612`;
//! - a field with no value is an error, never `0`;
//! - a `/` in a metric name becomes `_` when the name is inserted (`val/loss=0.5`) so that it makes no
//!   sub-directory; a `/` written in the template's text still does.
//!
//! Parsing and checking templates, and printing numbers as Python does, are the shared crate's
//! (`fulgur_rules::template`, `fulgur_rules::number`), so that the macros report what the runtime would.
//! Everything here is pure: the directory, join character, version suffix and extension are the caller's.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use fulgur_rules::number::{self, Number};
use fulgur_rules::template::{self, Field, Kind, Piece};

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
            let text = number::format(as_number(value), &field.spec).map_err(|problem| {
                TemplateError::BadValue {
                    template: self.source.clone(),
                    field: field.name.clone(),
                    reason: format!("`{}` {problem}", field.written()),
                }
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

/// A metric's value as the shared number formatting takes it.
fn as_number(value: MetricValue) -> Number {
    match value {
        MetricValue::F32(v) => Number::F32(v),
        MetricValue::F64(v) => Number::F64(v),
        MetricValue::Int(v) => Number::Int(v),
        MetricValue::Bool(v) => Number::Bool(v),
    }
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
    fn a_value_its_spec_cannot_print_names_the_template_and_the_field() {
        assert_eq!(
            render_error("{x:c}", &[("x", Int(-1))]),
            "cannot render checkpoint filename `{x:c}`: `{x:c}` needs a Unicode scalar value for format code \
             `c`, got -1"
        );
        assert_eq!(render("{x:c}", &[("x", Int(65))]), "x=A");
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
}

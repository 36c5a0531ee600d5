//! `hparams.yaml` as PyYAML writes it for Lightning (`yaml.dump`), so that PyYAML, and so Lightning's
//! `load_hparams_from_yaml`, reads back the same values.
//!
//! The text comes from libyaml's emitter (indentation, quoting styles, escapes, line folding), the
//! library PyYAML itself wraps, driven with the decisions PyYAML's representer takes. Not through
//! serde_norway's serializer: it follows YAML 1.2, so it writes `2024-01-01`, `1_000`, `yes`, `on`,
//! `1:20` and `=` unquoted, which PyYAML (YAML 1.1) reads as a date, numbers, booleans and a value
//! tag; it rejects byte strings, and its tags are always local (`!binary`), which PyYAML refuses.

use std::ffi::c_void;
use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::OnceLock;

use ciborium::Value;
use regex_lite::Regex;
use unsafe_libyaml_norway as unsafe_yaml;

/// `hparams.yaml`'s text, an error naming `path` if it cannot be made.
pub(crate) fn hparams_yaml(hparams: &Value, path: &std::path::Path) -> crate::Result<String> {
    to_yaml(hparams).map_err(|source| crate::Error::Io {
        path: path.into(),
        op: "write",
        source,
    })
}

/// `value` as a YAML document; a non-map value is written under the key `hparams`.
pub(crate) fn to_yaml(value: &Value) -> io::Result<String> {
    let mut emitter = Emitter::new()?;
    emitter.emit(Event::StreamStart)?;
    emitter.emit(Event::DocumentStart)?;
    match value {
        Value::Map(_) => emitter.value(value)?,
        Value::Null => emitter.value(&Value::Map(Vec::new()))?,
        other => emitter.value(&Value::Map(vec![(
            Value::Text("hparams".into()),
            other.clone(),
        )]))?,
    }
    emitter.emit(Event::DocumentEnd)?;
    emitter.emit(Event::StreamEnd)?;
    emitter.finish()
}

/// Python's `repr` of a float (`0.001`, `1e-05`, `1e+16`, `inf`, `nan`): Rust's shortest round-trip
/// digits, which switch to an exponent at the same magnitudes as Python's, in Python's spelling.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// A float as PyYAML's `represent_float` writes it: a mantissa with a dot (`1.0e-05`), which its
/// float pattern needs, and `.inf`, `-.inf`, `.nan`.
fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let s = python_float_repr(f);
    if !s.contains('.') && s.contains('e') {
        s.replacen('e', ".0e", 1)
    } else {
        s
    }
}

/// Whether PyYAML reads `s`, written plain, as the string `s`: not when one of its YAML 1.1 implicit
/// resolvers (`yaml/resolver.py`: bool, float, int, merge, null, timestamp, value) matches. Strings
/// that YAML 1.2's core schema reads as numbers (`1e3`, `0o17`, which PyYAML takes as strings) are
/// quoted too, so that a YAML 1.2 reader gets strings as well.
fn plain_reads_as_str(s: &str) -> bool {
    static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
            r"^(?:<<)$",
            r"^(?:~|null|Null|NULL|)$",
            r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
            r"^(?:=)$",
            r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$",
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    });
    !patterns.iter().any(|p| p.is_match(s))
}

/// Base64 in lines of 76 characters, each ending in a line break: Python's `base64.encodebytes`, as
/// PyYAML's `represent_binary` writes bytes.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for line in bytes.chunks(57) {
        for chunk in line.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out.push('\n');
    }
    out
}

enum Event<'a> {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    MappingStart,
    MappingEnd,
    SequenceStart,
    SequenceEnd,
    /// A scalar: its text, whether PyYAML reads it plain as itself, and the tag it needs otherwise.
    Scalar {
        text: &'a str,
        plain: bool,
        tag: Option<&'static [u8]>,
        literal: bool,
    },
}

/// libyaml's emitter writing into memory.
struct Emitter {
    /// Boxed: libyaml keeps pointers into the emitter, so it must not move once initialised.
    sys: Box<MaybeUninit<unsafe_yaml::yaml_emitter_t>>,
    /// Boxed: the emitter holds a pointer to it (its output handler's data), so it must not move with
    /// the `Emitter`.
    #[allow(clippy::box_collection)]
    out: Box<Vec<u8>>,
}

unsafe fn write_handler(data: *mut c_void, buffer: *mut u8, size: u64) -> i32 {
    // SAFETY: `data` is the `Vec<u8>` boxed in the `Emitter` that owns this libyaml emitter, and libyaml
    // passes a buffer of `size` initialised bytes.
    let out = unsafe { &mut *data.cast::<Vec<u8>>() };
    let bytes = unsafe { std::slice::from_raw_parts(buffer, size as usize) };
    out.extend_from_slice(bytes);
    1
}

impl Emitter {
    fn new() -> io::Result<Self> {
        let mut sys = Box::new(MaybeUninit::<unsafe_yaml::yaml_emitter_t>::uninit());
        let mut out = Box::new(Vec::new());
        // SAFETY: `yaml_emitter_initialize` fills the whole struct; the output's data pointer stays
        // valid as long as the box it points into, which the same `Emitter` owns.
        unsafe {
            let e = sys.as_mut_ptr();
            if unsafe_yaml::yaml_emitter_initialize(e).fail {
                return Err(io::Error::other("cannot initialise the YAML emitter"));
            }
            unsafe_yaml::yaml_emitter_set_output(e, write_handler, ptr::from_mut(&mut *out).cast());
        }
        Ok(Self { sys, out })
    }

    fn emit(&mut self, event: Event<'_>) -> io::Result<()> {
        let mut ev = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        let e = ev.as_mut_ptr();
        // SAFETY: every initialiser gets a valid event pointer and either null or NUL-terminated
        // tags and a value pointer with its length; libyaml copies them, and `yaml_emitter_emit` takes
        // the initialised event over.
        let ok = unsafe {
            let init = match event {
                Event::StreamStart => unsafe_yaml::yaml_stream_start_event_initialize(
                    e,
                    unsafe_yaml::YAML_UTF8_ENCODING,
                ),
                Event::StreamEnd => unsafe_yaml::yaml_stream_end_event_initialize(e),
                Event::DocumentStart => unsafe_yaml::yaml_document_start_event_initialize(
                    e,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    true,
                ),
                Event::DocumentEnd => unsafe_yaml::yaml_document_end_event_initialize(e, true),
                Event::MappingStart => unsafe_yaml::yaml_mapping_start_event_initialize(
                    e,
                    ptr::null(),
                    ptr::null(),
                    true,
                    unsafe_yaml::YAML_BLOCK_MAPPING_STYLE,
                ),
                Event::MappingEnd => unsafe_yaml::yaml_mapping_end_event_initialize(e),
                Event::SequenceStart => unsafe_yaml::yaml_sequence_start_event_initialize(
                    e,
                    ptr::null(),
                    ptr::null(),
                    true,
                    unsafe_yaml::YAML_BLOCK_SEQUENCE_STYLE,
                ),
                Event::SequenceEnd => unsafe_yaml::yaml_sequence_end_event_initialize(e),
                Event::Scalar {
                    text,
                    plain,
                    tag,
                    literal,
                } => {
                    let len = i32::try_from(text.len())
                        .map_err(|_| io::Error::other("a hyperparameter over 2 GiB"))?;
                    // As PyYAML's serializer: with a tag, both implicit flags off (the tag is
                    // written); without, quoted always reads as a string and plain only when no
                    // implicit type matches, so libyaml quotes exactly those.
                    let (tag_ptr, plain_implicit, quoted_implicit) = match tag {
                        Some(t) => (t.as_ptr(), false, false),
                        None => (ptr::null(), plain, true),
                    };
                    let style = if literal {
                        unsafe_yaml::YAML_LITERAL_SCALAR_STYLE
                    } else {
                        unsafe_yaml::YAML_ANY_SCALAR_STYLE
                    };
                    unsafe_yaml::yaml_scalar_event_initialize(
                        e,
                        ptr::null(),
                        tag_ptr,
                        text.as_ptr(),
                        len,
                        plain_implicit,
                        quoted_implicit,
                        style,
                    )
                }
            };
            !init.fail && !unsafe_yaml::yaml_emitter_emit(self.sys.as_mut_ptr(), e).fail
        };
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("the YAML emitter refused an event"))
        }
    }

    fn scalar(&mut self, text: &str, plain: bool) -> io::Result<()> {
        self.emit(Event::Scalar {
            text,
            plain,
            tag: None,
            literal: false,
        })
    }

    /// One value, as PyYAML's `SafeRepresenter` writes it.
    fn value(&mut self, value: &Value) -> io::Result<()> {
        match value {
            Value::Map(entries) => {
                self.emit(Event::MappingStart)?;
                for (k, v) in entries {
                    self.value(k)?;
                    self.value(v)?;
                }
                self.emit(Event::MappingEnd)
            }
            Value::Array(items) => {
                self.emit(Event::SequenceStart)?;
                for item in items {
                    self.value(item)?;
                }
                self.emit(Event::SequenceEnd)
            }
            Value::Tag(_, inner) => self.value(inner),
            Value::Null => self.scalar("null", true),
            Value::Bool(b) => self.scalar(if *b { "true" } else { "false" }, true),
            Value::Integer(i) => self.scalar(&i128::from(*i).to_string(), true),
            Value::Float(f) => self.scalar(&yaml_float(*f), true),
            Value::Text(t) => self.scalar(t, plain_reads_as_str(t)),
            Value::Bytes(b) => self.emit(Event::Scalar {
                text: &base64_lines(b),
                plain: false,
                tag: Some(b"tag:yaml.org,2002:binary\0"),
                literal: true,
            }),
            _ => self.scalar("null", true),
        }
    }

    fn finish(mut self) -> io::Result<String> {
        // SAFETY: the emitter was initialised in `new`.
        if unsafe { unsafe_yaml::yaml_emitter_flush(self.sys.as_mut_ptr()).fail } {
            return Err(io::Error::other("cannot flush the YAML emitter"));
        }
        let bytes = std::mem::take(&mut *self.out);
        String::from_utf8(bytes).map_err(io::Error::other)
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` (an `Emitter` exists only then), deleted once, here.
        unsafe { unsafe_yaml::yaml_emitter_delete(self.sys.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests;

//! The payload's reader: CBOR items read within the payload's bounds, hashing the structure bytes and
//! naming the file offset in messages.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;

use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::hash::read_hashed;
use crate::checkpoint::wire::{major, FALSE, TRUE};
use crate::checkpoint::CheckpointError;

/// The payload's reader: never reads past the payload, tracks the file offset for messages and hashes the
/// structure bytes.
pub(super) struct Source<'p, R> {
    pub(super) inner: R,
    pub(super) remaining: u64,
    pub(super) pos: u64,
    pub(super) hasher: Xxh3,
    pub(super) path: &'p Path,
    /// Set when `format_version` is newer than this build's and the payload is read on as this build's
    /// version: the version read and the hash the structure would have with this build's version in
    /// its place.
    pub(super) newer: Option<(u64, Xxh3)>,
    /// Set for a lazy read ([`read_checkpoint_lazy`](super::read_checkpoint_lazy)): how to step over
    /// tensor bytes without reading them, and the file the tensors are read from later.
    pub(super) lazy: Option<LazyMode<R>>,
}

/// What a lazy read needs: large f32 tensors are stepped over, and read (and verified) from `file`
/// only when their values are asked for.
pub(super) struct LazyMode<R> {
    pub(super) skip: fn(&mut R, u64) -> io::Result<()>,
    pub(super) file: std::sync::Arc<super::lazy::LazyFile>,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?.min(max);
        self.hasher.update(&buf[..n]);
        if let Some((_, alternative)) = &mut self.newer {
            alternative.update(&buf[..n]);
        }
        self.consumed(n);
        Ok(n)
    }
}

impl<R: Read> Source<'_, R> {
    pub(super) fn consumed(&mut self, n: usize) {
        self.remaining = self.remaining.saturating_sub(n as u64);
        self.pos += n as u64;
    }

    pub(super) fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(super) fn read_error(&self, e: io::Error, what: &str) -> CheckpointError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                self.corrupt(format!("it is truncated: it ends inside {what}"))
            }
            _ => CheckpointError::Io {
                path: self.path.to_path_buf(),
                op: "read",
                source: e,
            },
        }
    }

    pub(super) fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), CheckpointError> {
        self.read_exact(buf).map_err(|e| self.read_error(e, what))
    }

    /// A CBOR head: `(major type, argument)`.
    pub(super) fn head(&mut self, what: &str) -> Result<(u8, u64), CheckpointError> {
        let at = self.pos;
        let mut initial = [0];
        self.fill(&mut initial, what)?;
        let (major, info) = (initial[0] >> 5, initial[0] & 0x1f);
        let width = match info {
            0..=23 => return Ok((major, info.into())),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Err(self.corrupt(format!("{what} at byte {at} has an indefinite length"))),
            _ => return Err(self.corrupt(format!("malformed CBOR at byte {at} in {what}"))),
        };
        let mut arg = [0; 8];
        self.fill(&mut arg[8 - width..], what)?;
        Ok((major, u64::from_be_bytes(arg)))
    }

    pub(super) fn expect(&mut self, expected: u8, what: &str) -> Result<u64, CheckpointError> {
        let at = self.pos;
        let (found, arg) = self.head(what)?;
        if found != expected {
            return Err(self.corrupt(format!(
                "expected {} for {what} at byte {at}, found {}",
                major_name(expected),
                major_name(found)
            )));
        }
        Ok(arg)
    }

    /// The length of a string about to be read, checked against what is left of the payload.
    pub(super) fn length(&self, claimed: u64, what: &str) -> Result<usize, CheckpointError> {
        match usize::try_from(claimed) {
            Ok(len) if claimed <= self.remaining => Ok(len),
            _ => Err(self.corrupt(format!(
                "{what} claims {claimed} bytes, but only {} remain in the payload (truncated?)",
                self.remaining
            ))),
        }
    }

    pub(super) fn uint(&mut self, what: &str) -> Result<u64, CheckpointError> {
        self.expect(major::UINT, what)
    }

    pub(super) fn bool(&mut self, what: &str) -> Result<bool, CheckpointError> {
        match self.expect(major::SIMPLE, what)? {
            TRUE => Ok(true),
            FALSE => Ok(false),
            _ => Err(self.corrupt(format!("{what} is not a bool"))),
        }
    }

    pub(super) fn text(&mut self, what: &str) -> Result<String, CheckpointError> {
        let claimed = self.expect(major::TEXT, what)?;
        let mut buf = vec![0; self.length(claimed, what)?];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| self.corrupt(format!("{what} is not valid UTF-8")))
    }

    pub(super) fn map_len(&mut self, what: &str) -> Result<u64, CheckpointError> {
        self.expect(major::MAP, what)
    }

    /// Any serde value through ciborium; it grows strings as it reads them, so hostile lengths are bounded
    /// by `remaining` too.
    pub(super) fn value<T: DeserializeOwned>(&mut self, what: &str) -> Result<T, CheckpointError> {
        let at = self.pos;
        let result = ciborium::from_reader(&mut *self);
        result.map_err(|e| match e {
            ciborium::de::Error::Io(e) => self.read_error(e, what),
            ciborium::de::Error::Syntax(offset) => self.corrupt(format!(
                "malformed CBOR at byte {} in {what}",
                at + offset as u64
            )),
            ciborium::de::Error::Semantic(_, msg) => {
                self.corrupt(format!("{what} is malformed: {msg}"))
            }
            ciborium::de::Error::RecursionLimitExceeded => {
                self.corrupt(format!("{what} is nested too deeply"))
            }
        })
    }

    /// A map key, refused when repeated.
    pub(super) fn key(
        &mut self,
        seen: &mut BTreeSet<String>,
        what: &str,
    ) -> Result<String, CheckpointError> {
        let key = self.text(&format!("a key of {what}"))?;
        if !seen.insert(key.clone()) {
            return Err(self.corrupt(format!("{what} has the key `{key}` twice")));
        }
        Ok(key)
    }

    /// Tensor bytes go straight from the reader into their final buffer; they are not part of the structure
    /// hash.
    pub(super) fn data(
        &mut self,
        len: usize,
        what: &str,
    ) -> Result<(Vec<u8>, u64), CheckpointError> {
        let data = read_hashed(&mut self.inner, len).map_err(|e| self.read_error(e, what))?;
        self.consumed(len);
        Ok(data)
    }

    /// Steps over `len` bytes of tensor data in a lazy read; returns their file offset. The bytes are
    /// neither read nor hashed here: they are verified when they are read.
    pub(super) fn skip_data(
        &mut self,
        skip: fn(&mut R, u64) -> io::Result<()>,
        len: usize,
        what: &str,
    ) -> Result<u64, CheckpointError> {
        let at = self.pos;
        skip(&mut self.inner, len as u64).map_err(|e| self.read_error(e, what))?;
        self.consumed(len);
        Ok(at)
    }
}

fn major_name(major: u8) -> &'static str {
    match major {
        0 => "an unsigned integer",
        1 => "a negative integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        5 => "a map",
        6 => "a tag",
        _ => "a simple value or float",
    }
}

//! A checkpoint written by the trainer, damaged the ways a crash, a failing disk or a wrong path damage
//! files: every flipped bit, every truncation, foreign and newer files, empty files, directories and
//! missing files are refused with an error that names the file, never a panic, and the intact file still
//! loads bit for bit afterwards.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fulgur::callbacks::ModelCheckpoint;
use fulgur::checkpoint::{read_checkpoint, Checkpoint, CheckpointError, FORMAT_VERSION};
use fulgur::dfdx::tensor::Cpu;
use fulgur::prelude::*;

use crate::support::mlp::{loaders, Hparams, LitMlp};
use crate::support::{fit_error, weight_bits, WeightBits};

/// What the trainer saved, kept in memory; each test writes its own copy.
struct Saved {
    bytes: Vec<u8>,
    ckpt: Checkpoint,
    weights: WeightBits,
}

/// Four steps with Adam, a step scheduler and a `ModelCheckpoint` monitoring the training loss,
/// stopped inside the first epoch: the file holds weights, optimizer and scheduler state, the epoch's
/// metric accumulators, callback state and hyperparameters.
fn saved() -> &'static Saved {
    static SAVED: OnceLock<Saved> = OnceLock::new();
    SAVED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (mut train, mut val) = loaders();
        let mut t = Trainer::builder()
            .max_steps(4)
            .default_root_dir(dir.path())
            .no_logger()
            .num_sanity_val_steps(0)
            .callback(
                ModelCheckpoint::builder()
                    .monitor("train_loss")
                    .every_n_train_steps(2)
                    .save_top_k(2)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let hparams = Hparams {
            lr: 3e-3,
            init_seed: 5,
            with_scheduler: true,
        };
        t.fit(LitMlp::new(hparams), &mut train, Some(&mut val), None)
            .unwrap();
        let path = dir.path().join("trained.ckpt");
        t.save_checkpoint(&path, false).unwrap();
        let ckpt = read_checkpoint(&path).unwrap();
        assert_eq!((ckpt.global_step, ckpt.weights_only), (4, false));
        assert_eq!(ckpt.state_dict.len(), 6);
        assert_eq!(ckpt.optimizer.as_ref().unwrap().params.len(), 6);
        assert!(ckpt.scheduler.is_some());
        assert!(ckpt.loops.metric_state.is_some() && !ckpt.loops.epoch_finished);
        assert!(!ckpt.callbacks.is_empty());
        assert!(ckpt.hyper_parameters.is_some());
        Saved {
            bytes: fs::read(&path).unwrap(),
            ckpt,
            weights: weight_bits(t.module().unwrap()),
        }
    })
}

/// A copy of the saved file in a fresh directory.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch=0-step=4.ckpt");
    fs::write(&path, &saved().bytes).unwrap();
    (dir, path)
}

/// `Ok(())` when reading `path` fails with a damage error that names it; otherwise what happened.
fn refused(path: &Path) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| read_checkpoint(path))) {
        Err(_) => Err("panicked".into()),
        Ok(Ok(_)) => Err("loaded".into()),
        Ok(Err(e)) => {
            let named = e.to_string().contains(&path.display().to_string());
            let damage = matches!(
                e,
                CheckpointError::Corrupt { .. }
                    | CheckpointError::NotACheckpoint { .. }
                    | CheckpointError::UnsupportedVersion { .. }
            );
            match (named, damage) {
                (true, true) => Ok(()),
                (false, _) => Err(format!("error does not name the file: {e}")),
                (true, false) => Err(format!("not reported as damage: {e}")),
            }
        }
    }
}

/// Fails listing every variant that was not refused.
fn assert_all_refused(failures: Vec<String>, tried: usize) {
    assert!(
        failures.is_empty(),
        "{} of {tried} damaged files were not refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn write_at(file: &mut File, at: usize, bytes: &[u8]) {
    file.seek(SeekFrom::Start(at as u64)).unwrap();
    file.write_all(bytes).unwrap();
}

fn position(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

fn load_error(path: &Path) -> String {
    match LitMlp::load_from_checkpoint(path, &Cpu::default()) {
        Ok(_) => panic!("`{}` loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_flipped_bit_is_refused_naming_the_file() {
    let (_dir, path) = copy();
    let original = &saved().bytes;
    let data = tensor_data(saved());
    let mut file = File::options().write(true).open(&path).unwrap();
    let mut failures = Vec::new();
    let mut tried = 0;
    for at in 0..original.len() {
        // One bit at every byte, a different one at each offset; the whole byte where a byte is
        // structure (a CBOR head, a key, a checksum, the magic), not tensor data.
        let structure = !data.iter().any(|d| d.contains(&at));
        let masks: &[u8] = if structure {
            &[1 << (at % 8), 0xff]
        } else {
            &[1 << (at % 8)]
        };
        for &mask in masks {
            write_at(&mut file, at, &[original[at] ^ mask]);
            if let Err(what) = refused(&path) {
                failures.push(format!("byte {at} ^ {mask:#04x}: {what}"));
            }
            tried += 1;
        }
        write_at(&mut file, at, &original[at..=at]);
    }
    assert_all_refused(failures, tried);
    assert!(fs::read(&path).unwrap() == *original);
}

/// Where each tensor's bytes lie in the file: weights and optimizer state, in file order.
fn tensor_data(saved: &Saved) -> Vec<Range<usize>> {
    let optimizer = saved.ckpt.optimizer.as_ref().unwrap();
    let tensors = saved
        .ckpt
        .state_dict
        .values()
        .chain(optimizer.params.values().flat_map(|slots| slots.values()));
    let mut ranges: Vec<Range<usize>> = tensors
        .map(|t| {
            let bytes = t.le_bytes();
            let start = position(&saved.bytes, &bytes);
            start..start + bytes.len()
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    assert_eq!(ranges.len(), 18, "6 parameters, each with two Adam slots");
    assert!(ranges.windows(2).all(|w| w[0].end < w[1].start));
    ranges
}

#[test]
fn every_truncation_and_extension_is_refused_naming_the_file() {
    let (_dir, path) = copy();
    let original = &saved().bytes;
    let file = File::options().write(true).open(&path).unwrap();
    let mut failures = Vec::new();
    for len in (0..original.len()).rev() {
        file.set_len(len as u64).unwrap();
        if let Err(what) = refused(&path) {
            failures.push(format!("truncated to {len} bytes: {what}"));
        }
    }
    let extensions: [&[u8]; 4] = [&[0], b"FULGURCK", &[0; 24], original];
    for tail in extensions {
        let mut longer = original.clone();
        longer.extend_from_slice(tail);
        fs::write(&path, &longer).unwrap();
        if let Err(what) = refused(&path) {
            failures.push(format!("extended by {} bytes: {what}", tail.len()));
        }
    }
    assert_all_refused(failures, original.len() + extensions.len());
}

#[test]
fn damaged_files_do_not_load_and_the_intact_one_still_does_bit_for_bit() {
    let (_dir, path) = copy();
    let original = &saved().bytes;
    let ckpt = &saved().ckpt;
    let weight = ckpt.state_dict["net.0.weight"].le_bytes();
    let exp_avg = ckpt.optimizer.as_ref().unwrap().params["head.bias"]["exp_avg"].le_bytes();
    let in_weight = position(original, &weight) + weight.len() / 2;
    let in_exp_avg = position(original, &exp_avg) + 3;
    let in_header = position(original, b"module_type") + 20;
    let len = original.len();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "weights",
            flipped(original, in_weight),
            "tensor `net.0.weight`",
        ),
        (
            "optimizer state",
            flipped(original, in_exp_avg),
            "optimizer state `head.bias`.`exp_avg`",
        ),
        (
            "header",
            flipped(original, in_header),
            "checksum mismatch in the header",
        ),
        (
            "trailer",
            flipped(original, len - 12),
            "its trailer gives a payload of",
        ),
        ("half", original[..len / 2].to_vec(), "truncated"),
        ("last byte", original[..len - 1].to_vec(), "it is truncated"),
        // What some file systems leave of a file whose data never reached the disk.
        ("zeros", vec![0; len], "is not a fulgur checkpoint"),
    ];
    for (what, bytes, expected) in cases {
        fs::write(&path, bytes).unwrap();
        let err = load_error(&path);
        assert!(
            err.contains(&path.display().to_string()),
            "{what}: names the file: {err}"
        );
        assert!(err.contains(expected), "{what}: says `{expected}`: {err}");
    }

    // Resuming `fit` from the last of them (zeros) fails before training anything.
    let (err, t) = fit_error(
        Trainer::builder().max_steps(8),
        CkptPath::Path(path.clone()),
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(t.global_step(), 0);

    fs::write(&path, original).unwrap();
    assert!(read_checkpoint(&path).unwrap() == *ckpt);
    let loaded = LitMlp::load_from_checkpoint(&path, &Cpu::default()).unwrap();
    assert_eq!(weight_bits(&loaded), saved().weights);
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x10;
    out
}

/// Where the value of `format_version` lies: the payload's second key, a one-byte CBOR integer up to 23.
fn version_offset(bytes: &[u8]) -> usize {
    let at = position(bytes, b"\x6eformat_version") + 15;
    assert_eq!(u32::from(bytes[at]), FORMAT_VERSION);
    at
}

#[test]
fn a_flipped_bit_in_the_format_version_is_damage_not_a_newer_file() {
    let (_dir, path) = copy();
    let original = &saved().bytes;
    let at = version_offset(original);
    for bit in 0..8 {
        let mut bytes = original.clone();
        bytes[at] ^= 1 << bit;
        fs::write(&path, &bytes).unwrap();
        let err = read_checkpoint(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "bit {bit}: {message}"
        );
        assert!(
            message.contains(&path.display().to_string()),
            "bit {bit}: {message}"
        );
        assert!(message.contains("`format_version`"), "bit {bit}: {message}");
        assert!(!message.contains("upgrade"), "bit {bit}: {message}");
        assert!(!message.contains("newer"), "bit {bit}: {message}");
        let loading = load_error(&path);
        assert!(loading.contains("is damaged"), "bit {bit}: {loading}");
    }
    // Where the flip yields a version number, the message says which one and which version fits.
    let mut bytes = original.clone();
    bytes[at] ^= 0b10;
    fs::write(&path, &bytes).unwrap();
    let message = read_checkpoint(&path).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "`format_version` reads 3, but the file's checksums hold for version {FORMAT_VERSION}"
        )),
        "{message}"
    );
}

#[test]
fn a_newer_format_version_is_refused_naming_the_file_and_the_upgrade() {
    let (_dir, path) = copy();
    let mut bytes = saved().bytes.clone();
    let at = version_offset(&bytes);
    let newer = FORMAT_VERSION + 1;
    assert!(newer <= 23);
    bytes[at] = newer as u8;
    // A newer version with an entry this build does not know: nothing tells it from a damaged file, so
    // the message says both.
    let extra = position(&bytes, b"\x65extra");
    bytes[extra + 1..extra + 6].copy_from_slice(b"newer");
    fs::write(&path, &bytes).unwrap();
    match read_checkpoint(&path) {
        Err(CheckpointError::UnsupportedVersion {
            path: named,
            found,
            supported,
            intact,
        }) => assert_eq!(
            (named, found, supported, intact),
            (path.clone(), newer, FORMAT_VERSION, false)
        ),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let err = load_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("is damaged or was written by a newer fulgur"),
        "{err}"
    );
    assert!(err.contains("upgrade fulgur"), "{err}");
}

#[test]
fn foreign_empty_missing_and_directory_paths_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A PyTorch Lightning `.ckpt` is a zip archive.
    let mut zip = saved().bytes.clone();
    zip[..8].copy_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
    let zip_path = dir.path().join("lightning.ckpt");
    fs::write(&zip_path, zip).unwrap();
    let empty = dir.path().join("empty.ckpt");
    fs::write(&empty, b"").unwrap();
    let directory = dir.path().join("a-directory.ckpt");
    fs::create_dir(&directory).unwrap();
    let missing = dir.path().join("missing.ckpt");

    for (path, expected) in [
        (&zip_path, "is not a fulgur checkpoint"),
        (&empty, "is not a fulgur checkpoint"),
        (&directory, "is a directory, not a regular file"),
        (&missing, "cannot open checkpoint"),
    ] {
        let named = path.display().to_string();
        let read = match catch_unwind(|| read_checkpoint(path)) {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("`{named}` was read"),
            Err(_) => panic!("reading `{named}` panicked"),
        };
        for err in [read, load_error(path)] {
            assert!(err.contains(&named), "names the path: {err}");
            assert!(err.contains(expected), "says `{expected}`: {err}");
        }
    }
    match read_checkpoint(&missing) {
        Err(CheckpointError::Io { op, source, .. }) => {
            assert_eq!((op, source.kind()), ("open", std::io::ErrorKind::NotFound))
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

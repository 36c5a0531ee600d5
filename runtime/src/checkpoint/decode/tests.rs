//! Decoding what the encoder wrote, and refusing every kind of damage with a message that names it.

use std::fs;
use std::io;
use std::path::Path;

use super::*;
use crate::checkpoint::encode::{encode, Sink};
use crate::checkpoint::fixtures::*;
use crate::checkpoint::wire::{key, major, MAGIC, TRAILER_LEN};
use crate::checkpoint::{write_checkpoint, FORMAT_NAME, FORMAT_VERSION};

#[test]
fn a_file_with_its_scalars_after_the_tensors_loads_but_has_no_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ckpt");
    fs::write(&path, scalars_after_tensors(7)).unwrap();
    assert_eq!(read_checkpoint(&path).unwrap().global_step, 7);
    let err = read_checkpoint_header(&path).unwrap_err().to_string();
    assert!(err.contains("before the tensors"), "{err}");
}

#[test]
fn the_header_reads_without_the_tensors_and_errors_like_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ckpt");
    let ckpt = full_checkpoint();
    write_checkpoint(&path, &ckpt).unwrap();
    let h = read_checkpoint_header(&path).unwrap();
    assert_eq!(
        (h.epoch, h.global_step, h.weights_only, &h.module_type[..]),
        (ckpt.epoch, ckpt.global_step, false, &ckpt.module_type[..])
    );
    // Cut right after the header: the tensors are not needed.
    let bytes = fs::read(&path).unwrap();
    // (The trailer length is subtracted from the file size, so keep that many bytes more.)
    let cut =
        position(&bytes, key::STATE_DICT.as_bytes()) + key::STATE_DICT.len() + TRAILER_LEN as usize;
    fs::write(&path, &bytes[..cut]).unwrap();
    assert_eq!(read_checkpoint_header(&path).unwrap(), h);
    assert!(read_checkpoint(&path).is_err());
    fs::write(&path, b"FULGURCK").unwrap();
    assert!(matches!(
        read_checkpoint_header(&path),
        Err(CheckpointError::Corrupt { .. })
    ));
    fs::write(&path, b"PK\x03\x04 a zip file").unwrap();
    assert!(matches!(
        read_checkpoint_header(&path),
        Err(CheckpointError::NotACheckpoint { .. })
    ));
}

#[test]
fn damaged_tensor_data_names_the_tensor() {
    let ckpt = full_checkpoint();
    let mut file = encoded(&ckpt);
    let weight = ckpt.state_dict["net.0.weight"].le_bytes().into_owned();
    let at = position(&file, &weight);
    file[at + 5] ^= 0x10;
    let reason = corrupt_reason(decoded(&file));
    assert_eq!(reason, "checksum mismatch in tensor `net.0.weight`");
    let message = decoded(&file).unwrap_err().to_string();
    assert_eq!(
        message,
        "checkpoint `memory.ckpt` is damaged: checksum mismatch in tensor `net.0.weight`"
    );
}

#[test]
fn damaged_optimizer_state_names_parameter_and_slot() {
    let ckpt = full_checkpoint();
    let mut file = encoded(&ckpt);
    let exp_avg = ckpt.optimizer.as_ref().unwrap().params["net.0.weight"]["exp_avg"]
        .le_bytes()
        .into_owned();
    let at = position(&file, &exp_avg);
    file[at] ^= 1;
    assert_eq!(
        corrupt_reason(decoded(&file)),
        "checksum mismatch in optimizer state `net.0.weight`.`exp_avg`"
    );
}

#[test]
fn damaged_header_is_caught_by_the_trailer_checksum() {
    let mut file = encoded(&full_checkpoint());
    let at = position(&file, b"my_crate::Net");
    file[at] = b'M';
    assert_eq!(
        corrupt_reason(decoded(&file)),
        "checksum mismatch in the header (the payload outside tensor data)"
    );
}

#[test]
fn foreign_and_empty_files_are_not_checkpoints() {
    for (bytes, expected) in [
        (&b""[..], "it is only 0 bytes long"),
        (
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            "it starts with b\"PK\\x03\\x04\\x14\\x00\\x00\\x00\" instead of b\"FULGURCK\"",
        ),
    ] {
        match decoded(bytes) {
            Err(CheckpointError::NotACheckpoint { reason, .. }) => assert_eq!(reason, expected),
            other => panic!("expected NotACheckpoint, got {other:?}"),
        }
    }
}

#[test]
fn truncated_and_extended_files_are_damaged() {
    let ckpt = full_checkpoint();
    let file = encoded(&ckpt);
    let short = corrupt_reason(decoded(&file[..file.len() - 1]));
    assert_eq!(short, "it is truncated: it ends inside `extra`");

    let weight = ckpt.state_dict["net.0.weight"].le_bytes().into_owned();
    // The trailer is expected in the last 24 bytes, so the payload seems to end 24 bytes before the cut.
    let cut = corrupt_reason(decoded(&file[..position(&file, &weight) + 10 + 24]));
    assert_eq!(
        cut,
        "tensor `net.0.weight` claims 24 bytes, but only 10 remain in the payload (truncated?)"
    );

    let mut long = file.clone();
    long.extend([0; 5]);
    let end = file.len() - 24;
    assert_eq!(
        corrupt_reason(decoded(&long)),
        format!(
            "the payload ends at byte {end}, but the trailer starts at byte {}",
            end + 5
        )
    );
}

#[test]
fn tensor_bytes_that_do_not_fit_dtype_and_shape_are_damaged() {
    let ckpt = full_checkpoint();
    let mut file = encoded(&ckpt);
    let at = position(&file, b"\x65shape\x82\x02\x03");
    file[at + 8] = 2;
    assert_eq!(
        corrupt_reason(decoded(&file)),
        "tensor `net.0.weight` holds 24 bytes, but a f32 tensor of shape [2, 2] needs 16"
    );
}

/// A payload prefix with valid `format` and `format_version`, then whatever `rest` writes, then junk
/// and a trailer.
fn crafted(rest: impl FnOnce(&mut Sink<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut sink = Sink {
        inner: MAGIC.to_vec(),
        len: 0,
        hasher: Xxh3::new(),
    };
    sink.map(11).unwrap();
    sink.text(key::FORMAT).unwrap();
    sink.text(FORMAT_NAME).unwrap();
    sink.text(key::FORMAT_VERSION).unwrap();
    sink.head(major::UINT, 1).unwrap();
    rest(&mut sink).unwrap();
    let mut file = sink.inner;
    file.extend([0; 64]);
    file.extend([0; TRAILER_LEN as usize - 8]);
    file.extend(MAGIC);
    file
}

#[test]
fn hostile_lengths_are_refused_before_allocating() {
    let huge_tensor = crafted(|s| {
        s.text(key::STATE_DICT)?;
        s.map(1)?;
        s.text("w")?;
        s.map(4)?;
        s.text(key::DATA)?;
        s.head(major::BYTES, 1 << 60)
    });
    assert_eq!(
        corrupt_reason(decoded(&huge_tensor)),
        "tensor `w` claims 1152921504606846976 bytes, but only 64 remain in the payload (truncated?)"
    );

    let huge_text = crafted(|s| {
        s.text(key::MODULE_TYPE)?;
        s.head(major::TEXT, u64::MAX)
    });
    assert!(corrupt_reason(decoded(&huge_text))
        .starts_with("`module_type` claims 18446744073709551615 bytes"));

    let huge_map = crafted(|s| {
        s.text(key::STATE_DICT)?;
        s.head(major::MAP, u64::MAX)
    });
    assert!(corrupt_reason(decoded(&huge_map))
        .starts_with("expected a text string for a key of `state_dict`"));

    let huge_value = crafted(|s| {
        s.text(key::CALLBACKS)?;
        s.map(1)?;
        s.text("cb")?;
        s.head(major::BYTES, 1 << 60)
    });
    assert_eq!(
        corrupt_reason(decoded(&huge_value)),
        "it is truncated: it ends inside `callbacks`"
    );

    let huge_array = crafted(|s| {
        s.text(key::EXTRA)?;
        s.map(1)?;
        s.text("x")?;
        s.head(major::ARRAY, u64::MAX)
    });
    assert_eq!(
        corrupt_reason(decoded(&huge_array)),
        "it is truncated: it ends inside `extra`"
    );
}

#[test]
fn newer_format_version_is_refused() {
    let mut file = Vec::new();
    encode(
        &mut file,
        &full_checkpoint(),
        FORMAT_VERSION + 1,
        Path::new(PATH),
    )
    .unwrap();
    let err = decoded(&file).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::UnsupportedVersion {
                found: 2,
                supported: 1,
                intact: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade fulgur"));
    assert!(!err.to_string().contains("damaged"), "{err}");

    // The same version read from a version-1 file whose checksums hold only for version 1.
    let mut flipped = encoded(&full_checkpoint());
    let at = position(&flipped, key::FORMAT_VERSION.as_bytes()) + key::FORMAT_VERSION.len();
    assert_eq!(u32::from(flipped[at]), FORMAT_VERSION);
    flipped[at] = 2;
    assert_eq!(
        corrupt_reason(decoded(&flipped)),
        "its `format_version` reads 2, but the file's checksums hold for version 1: the version \
         field is damaged"
    );
}

#[test]
fn every_flipped_byte_and_every_truncation_is_an_error() {
    let file = encoded(&full_checkpoint());
    let check = |damaged: &[u8], what: &str| match decoded(damaged) {
        Err(
            CheckpointError::Corrupt { .. }
            | CheckpointError::NotACheckpoint { .. }
            | CheckpointError::UnsupportedVersion { .. },
        ) => {}
        other => panic!("{what}: expected an error, got {other:?}"),
    };
    for at in 0..file.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut damaged = file.clone();
            damaged[at] ^= mask;
            check(&damaged, &format!("byte {at} ^ {mask:#x}"));
        }
    }
    for len in 0..file.len() {
        check(&file[..len], &format!("truncated to {len} bytes"));
    }
}

//! Lazy reads: the same checkpoint and the same errors as a whole read, large tensors read only when
//! asked for and verified then.

use std::fs;
use std::path::Path;

use super::*;
use crate::checkpoint::fixtures::*;
use crate::checkpoint::{write_checkpoint, TensorData};

/// Elements of the large tensors: above the lazy threshold (64 KiB).
const BIG: usize = 20_000;

/// [`full_checkpoint`] with a large weight and a large optimizer slot, which a lazy read leaves in the
/// file; the small ones it reads at once.
fn with_large_tensors() -> Checkpoint {
    let mut c = full_checkpoint();
    let values = |k: f32| (0..BIG).map(|i| i as f32 * k).collect::<Vec<_>>();
    c.state_dict.insert(
        "net.3.weight".into(),
        TensorData::from_f32(vec![BIG / 4, 4], values(0.5)),
    );
    let slots = [
        (
            "exp_avg".to_string(),
            TensorData::from_f32(vec![BIG], values(-1.5)),
        ),
        (
            "exp_avg_sq".to_string(),
            TensorData::from_f32(vec![BIG], values(2.5)),
        ),
    ];
    c.optimizer
        .as_mut()
        .unwrap()
        .params
        .insert("net.3.weight".into(), slots.into());
    c
}

fn written(dir: &Path, c: &Checkpoint) -> std::path::PathBuf {
    let path = dir.join("lazy.ckpt");
    write_checkpoint(&path, c).unwrap();
    path
}

/// A lazy read with every tensor then read: what a whole read returns, or its error.
fn lazy_whole(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let c = read_checkpoint_lazy(path)?;
    verify_lazy_tensors(&c, path)?;
    Ok(c)
}

#[test]
fn a_lazy_read_leaves_large_f32_tensors_in_the_file_and_equals_a_whole_read() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = with_large_tensors();
    let path = written(dir.path(), &ckpt);
    let lazy = read_checkpoint_lazy(&path).unwrap();
    assert!(lazy.state_dict["net.3.weight"].source().is_some());
    let slots = &lazy.optimizer.as_ref().unwrap().params["net.3.weight"];
    assert!(slots["exp_avg"].source().is_some());
    assert!(
        lazy.state_dict["net.0.weight"].source().is_none(),
        "small tensors are read at once"
    );
    assert_eq!(
        normalized(&lazy),
        normalized(&read_checkpoint(&path).unwrap())
    );
    assert_eq!(normalized(&lazy), normalized(&ckpt));

    // The tensors are read from the file that was opened, not from whatever has its name now.
    let mut other = ckpt.clone();
    other.state_dict.insert(
        "net.3.weight".into(),
        TensorData::from_f32(vec![BIG / 4, 4], vec![7.0; BIG]),
    );
    write_checkpoint(&path, &other).unwrap();
    assert_eq!(
        lazy.state_dict["net.3.weight"],
        ckpt.state_dict["net.3.weight"]
    );
}

#[test]
fn a_damaged_large_tensor_is_found_when_it_is_read_with_the_whole_read_s_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = with_large_tensors();
    let path = written(dir.path(), &ckpt);
    let bytes = fs::read(&path).unwrap();
    for (tensor, what) in [
        (&ckpt.state_dict["net.3.weight"], "tensor `net.3.weight`"),
        (
            &ckpt.optimizer.as_ref().unwrap().params["net.3.weight"]["exp_avg_sq"],
            "optimizer state `net.3.weight`.`exp_avg_sq`",
        ),
    ] {
        let at = position(&bytes, &tensor.le_bytes());
        let mut damaged = bytes.clone();
        damaged[at + 4 * BIG - 1] ^= 0x40;
        fs::write(&path, &damaged).unwrap();
        let expected = format!(
            "checkpoint `{}` is damaged: checksum mismatch in {what}",
            path.display()
        );
        assert_eq!(read_checkpoint(&path).unwrap_err().to_string(), expected);
        // Opening finds nothing: the tensor is not read.
        let lazy = read_checkpoint_lazy(&path).unwrap();
        take_read_error();
        assert_eq!(lazy_whole(&path).unwrap_err().to_string(), expected);
        assert!(take_read_error().is_none(), "a verify takes its error");
        let stored = match what.strip_prefix("tensor `") {
            Some(_) => &lazy.state_dict["net.3.weight"],
            None => &lazy.optimizer.as_ref().unwrap().params["net.3.weight"]["exp_avg_sq"],
        };
        assert!(stored.as_f32().is_none(), "a damaged tensor has no values");
        assert_eq!(take_read_error().unwrap().to_string(), expected);
    }
}

/// Every flipped structure byte, a flipped byte at each end of each large tensor and every truncation
/// around them: the lazy read (every tensor then read) fails exactly as the whole read does.
#[test]
fn every_damage_gives_the_whole_read_s_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = with_large_tensors();
    let path = written(dir.path(), &ckpt);
    let bytes = fs::read(&path).unwrap();
    let large: Vec<usize> = [
        ckpt.state_dict["net.3.weight"].le_bytes().into_owned(),
        ckpt.optimizer.as_ref().unwrap().params["net.3.weight"]["exp_avg"]
            .le_bytes()
            .into_owned(),
        ckpt.optimizer.as_ref().unwrap().params["net.3.weight"]["exp_avg_sq"]
            .le_bytes()
            .into_owned(),
    ]
    .iter()
    .map(|data| position(&bytes, data))
    .collect();
    let inside = |at: usize| large.iter().any(|&s| (s..s + 4 * BIG).contains(&at));
    let mut positions: Vec<usize> = (0..bytes.len()).filter(|&at| !inside(at)).collect();
    for &s in &large {
        positions.extend([s, s + 4 * BIG / 2, s + 4 * BIG - 1]);
    }
    let after_large = |at: usize| {
        large
            .iter()
            .any(|&s| (s + 4 * BIG..s + 4 * BIG + 16).contains(&at))
    };
    let check = |damaged: &[u8], at: usize, what: &str| {
        fs::write(&path, damaged).unwrap();
        let whole = read_checkpoint(&path).map(|c| normalized(&c));
        let lazy = lazy_whole(&path).map(|c| normalized(&c));
        match (whole, lazy) {
            (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
            // Damage in the `xxh3` entry right after a large tensor's bytes: the whole read finds the
            // tensor's checksum wrong before it reads on; the lazy read finds the structure checksum
            // (or the structure) wrong before it reads the tensor. Both name the file.
            (
                Err(CheckpointError::Corrupt { path: a, .. }),
                Err(CheckpointError::Corrupt { path: b, .. }),
            ) if after_large(at) => assert_eq!(a, b, "{what}"),
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
            (a, b) => panic!("{what}: whole read {a:?}, lazy read {b:?}"),
        }
    };
    for &at in &positions {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        check(&damaged, at, &format!("byte {at} ^ 1"));
    }
    for &s in &large {
        for len in [s - 1, s, s + 1, s + 4 * BIG - 1, s + 4 * BIG] {
            check(
                &bytes[..len],
                s + 4 * BIG,
                &format!("truncated to {len} bytes"),
            );
        }
    }
}

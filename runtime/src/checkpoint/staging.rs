//! The asynchronous writer's staging buffers: before it encodes a snapshot, the writer copies every
//! tensor the snapshot holds into host buffers it keeps from one save to the next, and lets go of the
//! live buffer at once.
//!
//! Without them, a snapshot holds the live buffers until each tensor is written: the disk sets the pace,
//! and the next optimizer step, which updates every tensor, copies each one still held (dfdx's
//! `Arc::make_mut`; the optimizer's moments alike) into fresh memory, which page-faults as it fills, on
//! the training thread. Copying into warm buffers runs at memory speed, a few tens of milliseconds for
//! hundreds of megabytes, on the writer thread, while the training thread computes the next step's
//! forward and backward passes, which only read the weights; by the time the optimizer writes, the
//! buffers are free. The cost is memory: the staging buffers are the size of the state, kept while the
//! trainer lives, so that they stay warm.

use super::{Checkpoint, TensorData};
use crate::{Error, Result};

/// Host buffers for the tensors of one snapshot, reused from one save to the next.
#[derive(Default)]
pub(crate) struct Staging {
    /// One buffer per tensor, in the order [`Staging::stage`] visits them.
    bufs: Vec<Vec<f32>>,
}

impl Staging {
    /// Copies every snapshot tensor of `ckpt` into a staging buffer and releases its source; tensors
    /// on the host already stay as they are. The tensors go in the order in which an optimizer step
    /// updates them, roughly: each parameter, then its optimizer slots, parameter by parameter, so that
    /// the first tensors the next step writes are the first released. Give the buffers back with
    /// [`Staging::reclaim`] once `ckpt` is written.
    pub(crate) fn stage(&mut self, ckpt: &mut Checkpoint) -> Result<()> {
        let mut next = 0;
        let mut result = Ok(());
        for_each_tensor(ckpt, |t| {
            if result.is_ok() && t.source().is_some() {
                if next == self.bufs.len() {
                    self.bufs.push(Vec::new());
                }
                result = stage_one(t, &mut self.bufs[next]);
                next += 1;
            }
        });
        result
    }

    /// The element counts of the buffers [`Staging::stage`] would fill for `ckpt`, in its order:
    /// what [`Staging::reserve`] needs to prepare them before the first save.
    pub(crate) fn sizes(ckpt: &mut Checkpoint) -> Vec<usize> {
        let mut sizes = Vec::new();
        for_each_tensor(ckpt, |t| {
            if t.source().is_some() {
                sizes.push(t.numel());
            }
        });
        sizes
    }

    /// Makes the buffers of a snapshot of `sizes` (see [`Staging::sizes`]) ready: allocated and
    /// written once, so that their memory is faulted in before a save needs it. Without it the first
    /// save stages into fresh memory, which on some machines takes as long as the write (a quarter of
    /// a second per 400 MB), while the next optimizer step copies what is not staged yet. Buffers
    /// already large enough stay as they are.
    pub(crate) fn reserve(&mut self, sizes: &[usize]) {
        if self.bufs.len() < sizes.len() {
            self.bufs.resize_with(sizes.len(), Vec::new);
        }
        for (buf, &n) in self.bufs.iter_mut().zip(sizes) {
            if buf.len() < n {
                buf.resize(n, 0.0);
            }
        }
    }

    /// Takes back the buffers [`Staging::stage`] put into `ckpt`, in the same order.
    pub(crate) fn reclaim(&mut self, mut ckpt: Checkpoint) {
        let mut next = 0;
        for_each_tensor(&mut ckpt, |t| {
            if let Some(values) = t.take_staged() {
                if let Some(slot) = self.bufs.get_mut(next) {
                    *slot = values;
                }
                next += 1;
            }
        });
    }

    /// The length of each buffer.
    #[cfg(test)]
    pub(crate) fn lens(&self) -> Vec<usize> {
        self.bufs.iter().map(Vec::len).collect()
    }

    /// Bytes the buffers hold.
    #[cfg(test)]
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.bufs.iter().map(|b| b.capacity() * 4).sum()
    }
}

/// Copies a snapshot tensor into `buf` (resized to it), releases the snapshot, and replaces the tensor
/// by a host tensor holding `buf`. A host buffer (a CPU optimizer buffer) is copied with non-temporal
/// stores; any other source as its device copies it (dfdx copies a tensor in one call). Nothing is
/// hashed here: the encoder hashes the staged values as it writes them, at idle priority, while each
/// piece is in cache for its write; staging only has to be done before the next optimizer step.
fn stage_one(t: &mut TensorData, buf: &mut Vec<f32>) -> Result<()> {
    let Some(source) = t.source() else {
        return Ok(());
    };
    let mut values = std::mem::take(buf);
    values.resize(t.numel(), 0.0);
    let copied = match source.write_in_place(&mut |src| copy_checked(src, &mut values).map(|()| 0))
    {
        Some(copied) => copied.map(drop).map_err(|e| e.to_string()),
        None => source.copy_to_host(&mut values),
    };
    source.release();
    match copied {
        Ok(()) => {
            *t = TensorData::staged(t.shape().to_vec(), values);
            Ok(())
        }
        Err(e) => {
            *buf = values;
            Err(Error::Device(format!(
                "copying a tensor to the host for a save: {e}"
            )))
        }
    }
}

/// Copies `src` into `dst`, which must be of its length, with [`copy_streaming`].
fn copy_checked(src: &[f32], dst: &mut [f32]) -> std::io::Result<()> {
    if src.len() != dst.len() {
        return Err(std::io::Error::other(format!(
            "a snapshot holds {} values, its shape {}",
            src.len(),
            dst.len()
        )));
    }
    copy_streaming(src, dst);
    store_fence();
    Ok(())
}

/// Copies `src` into `dst` (of its length) with non-temporal stores where the CPU has them (x86-64):
/// the copy goes to memory without first reading each destination line into the caches, and without
/// evicting the training thread's data from them. On a machine whose training step is bound by memory
/// bandwidth, that is what a copy running beside it costs: a third less traffic than `copy_from_slice`,
/// and none of its cache pollution. Call [`store_fence`] before another thread reads `dst`.
fn copy_streaming(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        // Scalar copies up to the first 16-byte aligned destination, then 16 values per round.
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let (src, dst) = (&src[head..], &mut dst[head..]);
        let body = dst.len() / 16 * 16;
        for (d, s) in dst[..body]
            .chunks_exact_mut(16)
            .zip(src[..body].chunks_exact(16))
        {
            // SAFETY: `d` and `s` hold 16 values each, so every 4-value access lies inside them; `d`
            // starts 16-byte aligned (`head`, then whole rounds of 64 bytes), as `_mm_stream_ps`
            // requires; SSE is part of x86-64.
            unsafe {
                let (d, s) = (d.as_mut_ptr(), s.as_ptr());
                for k in (0..16).step_by(4) {
                    _mm_stream_ps(d.add(k), _mm_loadu_ps(s.add(k)));
                }
            }
        }
        dst[body..].copy_from_slice(&src[body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders the non-temporal stores of [`copy_streaming`] before any later store (x86-64's `sfence`), so
/// that a thread the buffers are handed to sees them.
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no operands and no preconditions; SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Visits the tensors of `ckpt`: each parameter followed by its slots in the first optimizer, then the
/// slots of parameters the module does not hold, then the later optimizers'.
fn for_each_tensor(ckpt: &mut Checkpoint, mut f: impl FnMut(&mut TensorData)) {
    let mut optimizer = ckpt.optimizer.as_mut().map(|o| &mut o.params);
    for (name, t) in &mut ckpt.state_dict {
        f(t);
        if let Some(slots) = optimizer.as_mut().and_then(|p| p.get_mut(name)) {
            slots.values_mut().for_each(&mut f);
        }
    }
    if let Some(params) = optimizer {
        for (name, slots) in params.iter_mut() {
            if !ckpt.state_dict.contains_key(name) {
                slots.values_mut().for_each(&mut f);
            }
        }
    }
    for entry in &mut ckpt.more_optimizers {
        entry
            .optimizer
            .params
            .values_mut()
            .flat_map(|slots| slots.values_mut())
            .for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::fixtures::Source;
    use crate::checkpoint::{encode_checkpoint, HostSource, OptimizerState};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| seed + i as f32 * 0.5).collect()
    }

    /// `w` and `b` with Adam's two slots each, every tensor of its own length: snapshots over
    /// [`Source`]s, or host tensors of the same values.
    fn checkpoint(snapshot: bool) -> (Checkpoint, Vec<std::sync::Arc<Source>>) {
        let mut sources = Vec::new();
        let mut tensor = |n: usize, seed: f32| {
            if snapshot {
                // Even lengths lie in host memory (written in place), odd ones are copied out.
                let source = Source::new(values(n, seed), n % 2 == 0);
                sources.push(source.clone());
                TensorData::snapshot(vec![n], source)
            } else {
                TensorData::from_f32(vec![n], values(n, seed))
            }
        };
        let mut ckpt = Checkpoint::new("Net");
        let mut optimizer = OptimizerState {
            kind: "adam".into(),
            step: 1,
            lr: 1e-3,
            config: ciborium::Value::Null,
            params: Default::default(),
        };
        for (name, n) in [("b", 10), ("w", 1000)] {
            ckpt.state_dict.insert(name.into(), tensor(n, 1.0));
            let slots = [("exp_avg", n + 1), ("exp_avg_sq", n + 2)]
                .into_iter()
                .map(|(slot, n)| (slot.to_string(), tensor(n, 2.0)))
                .collect();
            optimizer.params.insert(name.into(), slots);
        }
        ckpt.optimizer = Some(optimizer);
        ckpt.state_dict
            .insert("scale".into(), TensorData::from_f64(vec![], vec![0.5]));
        (ckpt, sources)
    }

    fn encoded(ckpt: &Checkpoint) -> Vec<u8> {
        let mut out = Vec::new();
        encode_checkpoint(&mut out, ckpt, Path::new("x.ckpt")).unwrap();
        out
    }

    /// Where the values of each staged tensor lie.
    fn staged_pointers(ckpt: &mut Checkpoint) -> Vec<usize> {
        let mut out = Vec::new();
        for_each_tensor(ckpt, |t| {
            if let Some(v) = t.take_staged() {
                out.push(v.as_ptr() as usize);
                *t = TensorData::staged(t.shape().to_vec(), v);
            }
        });
        out
    }

    /// Staging releases every snapshot before anything is written, and the staged checkpoint encodes
    /// to the file the host values make.
    #[test]
    fn staged_snapshots_are_released_at_once_and_encode_as_their_values() {
        let (mut snap, sources) = checkpoint(true);
        let mut staging = Staging::default();
        staging.stage(&mut snap).unwrap();
        assert!(sources.iter().all(|s| s.releases() == 1));
        assert_eq!(encoded(&snap), encoded(&checkpoint(false).0));
    }

    /// The streaming copy copies every value whatever the alignment of its destination and its length
    /// (a scalar head, rounds of 16, a scalar tail), and nothing outside the destination.
    #[test]
    fn the_streaming_copy_copies_every_value_at_any_alignment() {
        let src = values(1000, 3.0);
        let mut backing = vec![0.0f32; 1100];
        for offset in 0..4 {
            for len in [0, 1, 3, 15, 16, 17, 63, 64, 65, 999] {
                backing.iter_mut().for_each(|v| *v = -1.0);
                let dst = &mut backing[offset..offset + len];
                copy_checked(&src[..len], dst).unwrap();
                assert_eq!(dst, &src[..len], "offset {offset}, length {len}");
                assert!(backing[offset + len..].iter().all(|&v| v == -1.0));
            }
        }
    }

    /// Each parameter comes with its optimizer slots, in the order an optimizer step updates them.
    #[test]
    fn tensors_are_visited_parameter_by_parameter_with_their_slots() {
        let (mut ckpt, _) = checkpoint(false);
        let mut lengths = Vec::new();
        for_each_tensor(&mut ckpt, |t| lengths.push(t.numel()));
        assert_eq!(lengths, [10, 11, 12, 1, 1000, 1001, 1002]);
    }

    /// The buffers go back to the staging area and serve the next save: no new allocation.
    #[test]
    fn the_next_save_reuses_the_buffers() {
        let mut staging = Staging::default();
        let (mut first, _) = checkpoint(true);
        staging.stage(&mut first).unwrap();
        let pointers = staged_pointers(&mut first);
        assert_eq!(pointers.len(), 6);
        staging.reclaim(first);
        assert_eq!(
            staging.capacity_bytes(),
            4 * (10 + 11 + 12 + 1000 + 1001 + 1002)
        );

        let (mut second, _) = checkpoint(true);
        staging.stage(&mut second).unwrap();
        assert_eq!(staged_pointers(&mut second), pointers);
        assert_eq!(encoded(&second), encoded(&checkpoint(false).0));
    }

    /// Reserved buffers are the ones the first save stages into: sized by the snapshot, already
    /// filled, no new allocation at the save.
    #[test]
    fn reserved_buffers_serve_the_first_save() {
        let (mut snap, sources) = checkpoint(true);
        let sizes = Staging::sizes(&mut snap);
        assert_eq!(sizes, [10, 11, 12, 1000, 1001, 1002]);
        assert!(
            sources.iter().all(|s| s.releases() == 0),
            "sizes reads no values"
        );
        let mut staging = Staging::default();
        staging.reserve(&sizes);
        assert_eq!(staging.lens(), sizes);
        let reserved: Vec<usize> = staging.bufs.iter().map(|b| b.as_ptr() as usize).collect();
        staging.stage(&mut snap).unwrap();
        assert_eq!(staged_pointers(&mut snap), reserved);
        assert_eq!(encoded(&snap), encoded(&checkpoint(false).0));
        // A smaller snapshot later keeps the larger buffers.
        staging.reclaim(snap);
        staging.reserve(&[5]);
        assert_eq!(staging.lens(), sizes);
    }

    /// A snapshot that cannot be copied fails the save with the device's reason; the staging area
    /// keeps its buffers.
    #[test]
    fn a_source_that_fails_fails_the_stage() {
        let (mut snap, sources) = checkpoint(true);
        sources[3].release();
        let mut staging = Staging::default();
        let err = staging.stage(&mut snap).unwrap_err().to_string();
        assert!(
            err.contains("copying a tensor to the host for a save: released"),
            "{err}"
        );
        assert_eq!(staging.bufs.len(), 4);
    }
}

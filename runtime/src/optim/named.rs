//! A module's trainable tensors by name, and per-parameter optimizer buffers keyed by those names.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
    ViewTensorRef,
};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Storage, Tensor};

use super::StateError;
use crate::checkpoint::{DType, Held, OptimizerState, TensorData};
use crate::device::Backend;
use crate::{device_err, Error, Result};

/// A device vector of `f32`.
pub(crate) type DeviceVec<D> = <D as Storage<f32>>::Vec;

/// Something done to each trainable parameter of a module, given its name (`0.weight`, `net.2.bias`).
pub(crate) trait ParamVisitor<D: Backend> {
    /// Visits one trainable parameter.
    fn visit<S: Shape>(&mut self, name: String, param: &mut Tensor<S, f32, D>) -> Result<()>;
}

/// Calls `visitor` on every trainable parameter of `module`, in the module's field order; tensors whose
/// `TensorOptions::do_gradient_update` is off (batch-norm running statistics) are skipped.
pub(crate) fn visit_params_mut<M, D, V>(module: &mut M, visitor: &mut V) -> Result<()>
where
    M: TensorCollection<f32, D>,
    D: Backend,
    V: ParamVisitor<D>,
{
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut MutWalker(visitor),
    })?;
    Ok(())
}

struct MutWalker<'a, V>(&'a mut V);

impl<D: Backend, V: ParamVisitor<D>> TensorVisitor<f32, D> for MutWalker<'_, V> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = Error;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (param, name): (&mut Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>> {
        if opts.do_gradient_update {
            self.0.visit(name, param)?;
        }
        Ok(None)
    }
}

/// A trainable parameter as seen without mutating the module.
pub(crate) struct ParamInfo<D> {
    pub(crate) shape: Vec<usize>,
    pub(crate) device: D,
}

/// The trainable parameters of `module` by name.
pub(crate) fn trainable_params<M, D>(module: &M) -> BTreeMap<String, ParamInfo<D>>
where
    M: TensorCollection<f32, D>,
    D: Backend,
{
    let mut out = BTreeMap::new();
    for_each_tensor(module, |name, shape, device: &D, trainable| {
        if trainable {
            let device = device.clone();
            out.insert(name, ParamInfo { shape, device });
        }
    });
    out
}

/// Calls `f(name, shape, device, trainable)` for every tensor of `module`, in field order, without
/// changing it.
pub(crate) fn for_each_tensor<M, D>(module: &M, f: impl FnMut(String, Vec<usize>, &D, bool))
where
    M: TensorCollection<f32, D>,
    D: Backend,
{
    let mut each = Each(f);
    match M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut each,
    }) {
        Ok(_) => {}
        Err(never) => match never {},
    }
}

struct Each<F>(F);

impl<D: Backend, F: FnMut(String, Vec<usize>, &D, bool)> TensorVisitor<f32, D> for Each<F> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = Infallible;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (t, name): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Infallible> {
        let shape = t.shape().concrete().into_iter().collect();
        (self.0)(name, shape, t.device(), opts.do_gradient_update);
        Ok(None)
    }
}

/// An optimizer's per-parameter buffers (`N` of them, named by `slots`), zero until first written.
#[derive(Debug, Clone)]
pub(crate) struct SlotState<D: Backend, const N: usize> {
    slots: [&'static str; N],
    params: BTreeMap<String, Slots<D, N>>,
}

#[derive(Debug, Clone)]
struct Slots<D: Backend, const N: usize> {
    shape: Vec<usize>,
    device: D,
    /// Shared with the snapshots of a save under way: a step copies a buffer only while one holds it.
    bufs: [Arc<DeviceVec<D>>; N],
}

impl<D: Backend, const N: usize> SlotState<D, N> {
    /// No buffers yet; `slots` are the names under which they are saved (PyTorch's, e.g. `exp_avg`).
    pub(crate) fn new(slots: [&'static str; N]) -> Self {
        Self {
            slots,
            params: BTreeMap::new(),
        }
    }

    /// The buffers of parameter `name`, allocated as zeros on its first use; a buffer a snapshot still
    /// holds is copied first.
    pub(crate) fn get_or_alloc<S: Shape>(
        &mut self,
        name: String,
        param: &Tensor<S, f32, D>,
    ) -> Result<[&mut DeviceVec<D>; N]> {
        let numel = param.shape().num_elements();
        match self.params.entry(name) {
            std::collections::btree_map::Entry::Occupied(e) => {
                let found: usize = e.get().shape.iter().product();
                if found != numel {
                    // The kernels walk both buffers in lockstep; a size mismatch must never reach them.
                    return Err(Error::config("optimizer", format!(
                        "the optimizer holds state for parameter `{}` with {found} elements, but the module's \
                         parameter has {numel}; an optimizer must not be shared between different modules",
                        e.key()
                    )));
                }
                Ok(e.into_mut().bufs.each_mut().map(Arc::make_mut))
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                let device = param.device().clone();
                let mut bufs = Vec::with_capacity(N);
                for _ in 0..N {
                    bufs.push(Storage::<f32>::try_alloc_len(&device, numel).map_err(device_err)?);
                }
                let bufs = <[DeviceVec<D>; N]>::try_from(bufs).map_err(|_| {
                    Error::Device("optimizer buffer allocation lost a buffer".to_string())
                })?;
                let shape = param.shape().concrete().into();
                Ok(e.insert(Slots {
                    shape,
                    device,
                    bufs: bufs.map(Arc::new),
                })
                .bufs
                .each_mut()
                .map(Arc::make_mut))
            }
        }
    }

    /// Every buffer, keyed by parameter name and then slot name, as a snapshot (see [`TensorData`]):
    /// shared now, copied to the host only when a save encodes it or its values are read.
    pub(crate) fn to_host(&self) -> Result<BTreeMap<String, BTreeMap<String, TensorData>>> {
        let mut out = BTreeMap::new();
        for (name, p) in &self.params {
            let mut slots = BTreeMap::new();
            for (slot, buf) in self.slots.iter().zip(&p.bufs) {
                let source = BufSnapshot {
                    device: p.device.clone(),
                    buf: Held::new(Arc::clone(buf)),
                };
                slots.insert(
                    slot.to_string(),
                    TensorData::snapshot(p.shape.clone(), Arc::new(source)),
                );
            }
            out.insert(name.clone(), slots);
        }
        Ok(out)
    }

    /// Builds the buffers stored in `state` for `module`, after checking that every stored name is a
    /// trainable parameter of `module` holding exactly this state's slots with the parameter's element count.
    /// Every problem, including the caller's `problems` (with the configuration, say), is reported in one
    /// error. Parameters absent from `state` start from zero.
    pub(crate) fn from_host<M: TensorCollection<f32, D>>(
        slots: [&'static str; N],
        module: &M,
        state: &OptimizerState,
        mut problems: Vec<String>,
    ) -> Result<Self, StateError> {
        let params = trainable_params::<M, D>(module);
        let mut unknown = false;
        for (name, stored) in &state.params {
            let Some(info) = params.get(name) else {
                problems.push(format!(
                    "`{name}` is not a trainable parameter of the module"
                ));
                unknown = true;
                continue;
            };
            let expected: usize = info.shape.iter().product();
            for slot in slots {
                match stored.get(slot) {
                    None => problems.push(format!("`{name}` lacks `{slot}`")),
                    Some(t) if t.dtype() != DType::F32 => {
                        problems.push(format!("`{name}.{slot}`: expected f32, found {}", t.dtype()))
                    }
                    Some(t) if t.numel() != expected => problems.push(format!(
                        "`{name}.{slot}`: expected {expected} elements (shape {:?}), found {} (shape {:?})",
                        info.shape,
                        t.numel(),
                        t.shape()
                    )),
                    Some(_) => {}
                }
            }
            for slot in stored.keys().filter(|k| !slots.contains(&k.as_str())) {
                problems.push(format!(
                    "`{name}.{slot}` is not a state slot of `{}`",
                    state.kind
                ));
            }
        }
        if !problems.is_empty() {
            let mut msg = format!(
                "the `{}` optimizer state does not fit the module ({} problem{}): {}",
                state.kind,
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("; ")
            );
            if unknown {
                let names: Vec<&str> = params.keys().map(String::as_str).collect();
                msg.push_str(&format!(
                    "; the module's trainable parameters are {}",
                    list(&names)
                ));
            }
            return Err(StateError(msg));
        }

        // Every buffer first, then their values: each is read straight from the file into its buffer
        // (on the CPU; elsewhere through one host buffer). A new buffer is fresh memory, which
        // page-faults as it is first written, so on Linux a second thread faults the buffers in from
        // the last one back while this one reads from the first on, until they meet.
        let mut fills: Vec<(&String, &'static str, &TensorData, DeviceVec<D>)> = Vec::new();
        for (name, stored) in &state.params {
            // Checked above.
            let Some(info) = params.get(name) else {
                continue;
            };
            for slot in slots {
                let Some(t) = stored.get(slot) else {
                    continue;
                };
                let v = Storage::<f32>::try_alloc_len(&info.device, t.numel()).map_err(|e| {
                    StateError(format!(
                        "cannot restore the state of `{name}` on the device: {e:?}"
                    ))
                })?;
                fills.push((name, slot, t, v));
            }
        }
        // The memory each fill reads into (none where the values go through the host buffer).
        let regions: Vec<(usize, usize)> = fills
            .iter_mut()
            .map(|(_, _, t, v)| match (t.source(), cpu_values_mut::<D>(v)) {
                (Some(_), Some(dst)) => (dst.as_mut_ptr() as usize, std::mem::size_of_val(dst)),
                _ => (0, 0),
            })
            .collect();
        let reading = AtomicUsize::new(0);
        let mut scratch: Vec<f32> = Vec::new();
        let filled = std::thread::scope(|s| {
            if cfg!(target_os = "linux") && regions.iter().filter(|(_, len)| *len > 0).count() > 1 {
                let _ = std::thread::Builder::new()
                    .spawn_scoped(s, || prefault_backwards(&regions, &reading));
            }
            let mut each = fills.iter_mut().enumerate();
            let result = each.try_for_each(|(i, (name, slot, t, v))| {
                reading.store(i, Ordering::Release);
                let device = &params[name.as_str()].device;
                let failed = |e: String| {
                    StateError(format!(
                        "cannot restore the state of `{name}` on the device: {e}"
                    ))
                };
                let n = t.numel();
                match (t.source(), cpu_values_mut::<D>(v)) {
                    (Some(source), Some(dst)) => source.copy_to_host(dst).map_err(failed),
                    (Some(source), None) => {
                        if scratch.len() < n {
                            scratch.resize(n, 0.0);
                        }
                        source.copy_to_host(&mut scratch[..n]).map_err(failed)?;
                        device
                            .host_to_vec(&scratch[..n], v)
                            .map_err(|e| failed(format!("{e:?}")))
                    }
                    (None, _) => {
                        let host = t
                            .as_f32()
                            .ok_or_else(|| failed(format!("`{slot}` is not f32")))?;
                        device
                            .host_to_vec(&host, v)
                            .map_err(|e| failed(format!("{e:?}")))
                    }
                }
            });
            // Stops the other thread.
            reading.store(usize::MAX, Ordering::Release);
            result
        });
        filled?;

        let mut out = Self::new(slots);
        let mut fills = fills.into_iter().peekable();
        while let Some((name, _, _, first)) = fills.next() {
            let mut device_bufs = vec![first];
            while let Some((_, _, _, v)) = fills.next_if(|(next, ..)| *next == name) {
                device_bufs.push(v);
            }
            let info = &params[name.as_str()];
            let bufs = <[DeviceVec<D>; N]>::try_from(device_bufs)
                .map_err(|_| StateError(format!("cannot restore the state of `{name}`")))?;
            out.params.insert(
                name.clone(),
                Slots {
                    shape: info.shape.clone(),
                    device: info.device.clone(),
                    bufs: bufs.map(Arc::new),
                },
            );
        }
        Ok(out)
    }
}

/// An optimizer buffer held for a save, until the save has its values and releases it.
struct BufSnapshot<D: Backend> {
    device: D,
    buf: Held<Arc<DeviceVec<D>>>,
}

// SAFETY: the buffers and handle of a `SharedAcrossThreads` device (a `Backend`) may be used and
// dropped on any thread.
unsafe impl<D: Backend> Send for BufSnapshot<D> {}
unsafe impl<D: Backend> Sync for BufSnapshot<D> {}

impl<D: Backend> crate::checkpoint::HostSource for BufSnapshot<D> {
    fn copy_to_host(&self, dst: &mut [f32]) -> std::result::Result<(), String> {
        let copy = |host: &[f32], dst: &mut [f32]| {
            if host.len() != dst.len() {
                return Err(format!(
                    "an optimizer buffer holds {} values, its parameter {}",
                    host.len(),
                    dst.len()
                ));
            }
            dst.copy_from_slice(host);
            Ok(())
        };
        self.buf.with(|buf| match cpu_values::<D>(buf) {
            Some(host) => copy(host, dst),
            None => {
                let host = self.device.vec_to_host(buf).map_err(|e| format!("{e:?}"))?;
                copy(&host, dst)
            }
        })?
    }

    /// A CPU buffer is written where it lies: no host copy, no scratch buffer.
    fn write_in_place(
        &self,
        write: &mut dyn FnMut(&[f32]) -> std::io::Result<u64>,
    ) -> Option<std::io::Result<u64>> {
        self.buf
            .with(|buf| cpu_values::<D>(buf).map(write))
            .unwrap_or_else(|released| Some(Err(std::io::Error::other(released))))
    }

    fn release(&self) {
        self.buf.release();
    }
}

/// The values of a CPU buffer, mutably; `None` on other devices.
fn cpu_values_mut<D: Backend>(buf: &mut DeviceVec<D>) -> Option<&mut [f32]> {
    let any: &mut dyn std::any::Any = buf;
    any.downcast_mut::<DeviceVec<dfdx::tensor::Cpu>>()
        .map(|v| v.as_mut_slice())
}

/// Faults in the memory of `regions` (address, length in bytes; empty ones are skipped), from the last
/// region back, while another thread writes them from the first on and stores in `reading` the index
/// of the region it is at: this stops at that region. Linux only (`MADV_POPULATE_WRITE`, which faults
/// pages in without changing their contents); elsewhere, or on a kernel without it, it does nothing.
fn prefault_backwards(regions: &[(usize, usize)], reading: &AtomicUsize) {
    #[cfg(target_os = "linux")]
    {
        const STEP: usize = 2 << 20;
        // SAFETY: `sysconf` has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        for (index, &(addr, len)) in regions.iter().enumerate().rev() {
            let start = (addr + page - 1) & !(page - 1);
            let end = (addr + len) & !(page - 1);
            let mut at = start;
            while at < end {
                let reader = reading.load(Ordering::Acquire);
                if reader >= index {
                    return;
                }
                let n = STEP.min(end - at);
                // SAFETY: `[at, at + n)` lies inside a live allocation of the caller, which outlives
                // this thread (a scoped thread). MADV_POPULATE_WRITE only faults in pages that are not
                // present, as writable zero pages where none was written: no value the other thread
                // wrote or will write changes.
                let r =
                    unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
                if r != 0 {
                    return;
                }
                at += n;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (regions, reading);
}

/// The values of a buffer of the CPU device (host memory already); `None` on other devices.
fn cpu_values<D: Backend>(buf: &DeviceVec<D>) -> Option<&[f32]> {
    let any: &dyn std::any::Any = buf;
    any.downcast_ref::<DeviceVec<dfdx::tensor::Cpu>>()
        .map(|v| v.as_slice())
}

/// `` `a`, `b`, `c` ``, or `none` for an empty list.
pub(crate) fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the optimizer tests.

    use std::collections::BTreeMap;

    use dfdx::prelude::*;

    use dfdx::losses::mse_loss;

    use crate::checkpoint::{DType, OptimizerState, TensorData};
    use crate::optim::Optimizer;

    /// A small model for the optimizer tests.
    pub(crate) type Mlp = (Linear<3, 5>, ReLU, Linear<5, 2>);
    /// An input batch and its targets.
    pub(crate) type Batch = (Tensor<Rank2<4, 3>, f32, Cpu>, Tensor<Rank2<4, 2>, f32, Cpu>);

    /// `n` random batches.
    pub(crate) fn batches(dev: &Cpu, n: usize) -> Vec<Batch> {
        (0..n)
            .map(|_| (dev.sample_normal(), dev.sample_normal()))
            .collect()
    }

    /// One optimizer step per batch on the mean squared error.
    pub(crate) fn train<M, O>(model: &mut M, opt: &mut O, data: &[Batch])
    where
        M: TensorCollection<f32, Cpu>
            + ModuleMut<
                Tensor<Rank2<4, 3>, f32, Cpu, OwnedTape<f32, Cpu>>,
                Output = Tensor<Rank2<4, 2>, f32, Cpu, OwnedTape<f32, Cpu>>,
            >,
        O: Optimizer<M, Cpu>,
    {
        let mut grads = model.alloc_grads();
        for (x, y) in data {
            let loss = mse_loss(model.forward_mut(x.trace(grads)), y.clone());
            grads = loss.backward();
            opt.step(model, &mut grads).unwrap();
            model.zero_grads(&mut grads);
        }
    }

    /// The gradients of `sum(p * c)`, which are `c`.
    pub(crate) fn linear_grads<const N: usize>(
        p: &Tensor<Rank1<N>, f32, Cpu>,
        c: [f32; N],
    ) -> Gradients<f32, Cpu> {
        let dev = p.device().clone();
        let grads = p.alloc_grads();
        (p.trace(grads) * dev.tensor(c)).sum().backward()
    }

    /// `state` as a file read would return it: every tensor held as little-endian bytes.
    pub(crate) fn through_bytes(state: &OptimizerState) -> OptimizerState {
        let mut out = state.clone();
        for slots in out.params.values_mut() {
            for t in slots.values_mut() {
                *t = TensorData::from_le_bytes(
                    DType::F32,
                    t.shape().to_vec(),
                    t.le_bytes().into_owned(),
                )
                .expect("bytes of an f32 tensor");
            }
        }
        out
    }

    /// Every tensor of `m` (trainable or not) as bit patterns, by name.
    /// Which tensors of `after` differ from `before` (both from [`bits`]).
    pub(crate) fn moved(
        before: &BTreeMap<String, Vec<u32>>,
        after: &BTreeMap<String, Vec<u32>>,
    ) -> Vec<String> {
        after
            .iter()
            .filter(|(k, v)| before[*k] != **v)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn bits<M: TensorCollection<f32, Cpu>>(m: &M) -> BTreeMap<String, Vec<u32>> {
        struct Bits(BTreeMap<String, Vec<u32>>);
        impl TensorVisitor<f32, Cpu> for Bits {
            type Viewer = (ViewTensorRef, ViewTensorName);
            type Err = std::convert::Infallible;
            type E2 = f32;
            type D2 = Cpu;
            fn visit<S: Shape>(
                &mut self,
                _: TensorOptions<S, f32, Cpu>,
                (t, name): (&Tensor<S, f32, Cpu>, String),
            ) -> Result<Option<Tensor<S, f32, Cpu>>, Self::Err> {
                self.0
                    .insert(name, t.as_vec().iter().map(|x| x.to_bits()).collect());
                Ok(None)
            }
        }
        let mut out = Bits(BTreeMap::new());
        let _ = M::iter_tensors(&mut RecursiveWalker {
            m: (m, String::new()),
            f: &mut out,
        });
        out.0
    }

    pub(crate) fn assert_close(found: &[f32], expected: &[f32]) {
        assert_eq!(found.len(), expected.len());
        for (f, e) in found.iter().zip(expected) {
            assert!(
                (f - e).abs() < 1e-5,
                "found {found:?}, expected {expected:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::trainable_params;

    #[test]
    fn parameters_are_named_by_field_path_and_running_statistics_are_skipped() {
        let dev = Cpu::default();
        type Model = (Linear<2, 3>, BatchNorm1D<3>, ReLU, (Linear<3, 1>, Tanh));
        let m = dev.build_module::<Model, f32>();
        let params = trainable_params::<_, Cpu>(&m);
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "0.bias",
                "0.weight",
                "1.bias",
                "1.scale",
                "3.0.bias",
                "3.0.weight"
            ]
        );
        assert_eq!(params["0.weight"].shape, [3, 2]);
        assert_eq!(params["3.0.bias"].shape, [1]);
    }

    /// A save of the optimizer state writes each CPU buffer where it lies and releases it: until then
    /// the snapshot shares the buffers (an update would copy them), afterwards the next update uses
    /// them in place again; the file holds the values the snapshot was taken with.
    #[test]
    fn a_written_snapshot_releases_the_optimizer_buffers() {
        use std::path::Path;
        use std::sync::Arc;

        use super::SlotState;
        use crate::checkpoint::{decode_checkpoint, encode_checkpoint, Checkpoint, OptimizerState};

        let dev = Cpu::default();
        let p = dev.tensor([1.0f32, 2.0, 3.0]);
        let mut state = SlotState::<Cpu, 2>::new(["exp_avg", "exp_avg_sq"]);
        state.get_or_alloc("w".into(), &p).unwrap()[0].copy_from_slice(&[0.5, 0.25, 0.125]);
        let shared = |s: &SlotState<Cpu, 2>| {
            let bufs = &s.params["w"].bufs;
            bufs.iter().filter(|b| Arc::strong_count(b) > 1).count()
        };
        let mut ckpt = Checkpoint::new("m");
        ckpt.optimizer = Some(OptimizerState {
            kind: "adam".into(),
            step: 1,
            lr: 0.1,
            config: ciborium::Value::Null,
            params: state.to_host().unwrap(),
        });
        assert_eq!(shared(&state), 2, "a snapshot shares both buffers");

        let mut bytes = Vec::new();
        encode_checkpoint(&mut bytes, &ckpt, Path::new("m.ckpt")).unwrap();
        assert_eq!(shared(&state), 0, "released once written");
        let back = decode_checkpoint(&bytes[..], bytes.len() as u64, Path::new("m.ckpt")).unwrap();
        let slots = &back.optimizer.unwrap().params["w"];
        assert_eq!(*slots["exp_avg"].as_f32().unwrap(), [0.5, 0.25, 0.125]);
        assert_eq!(*slots["exp_avg_sq"].as_f32().unwrap(), [0.0; 3]);
    }

    /// The second thread of a restore faults in the regions after the one the reader is at, from the
    /// last back, stops at the reader, and changes no value.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefaulting_stops_at_the_reader_and_keeps_every_value() {
        use std::sync::atomic::AtomicUsize;

        const REGION: usize = 4 << 20;
        // SAFETY: an anonymous private mapping of three regions, unmapped at the end; nothing else
        // refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * REGION,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let addr = base as usize;
        let regions: Vec<(usize, usize)> = (0..3).map(|i| (addr + i * REGION, REGION)).collect();
        let resident = |i: usize| {
            let mut pages = vec![0u8; REGION / 4096];
            // SAFETY: `pages` has one byte per page of region `i`, which is mapped.
            let r = unsafe {
                libc::mincore(
                    (addr + i * REGION) as *mut libc::c_void,
                    REGION,
                    pages.as_mut_ptr().cast(),
                )
            };
            assert_eq!(r, 0);
            pages.iter().filter(|p| *p & 1 == 1).count() * 4096
        };
        // SAFETY: the first page of region 2 is mapped and writable; nothing else refers to it.
        unsafe { ((addr + 2 * REGION) as *mut u32).write(0xdead_beef) };
        // SAFETY: the first page of region 2, present already: populating it changes nothing.
        let supported = unsafe {
            libc::madvise(
                (addr + 2 * REGION) as *mut _,
                4096,
                libc::MADV_POPULATE_WRITE,
            )
        } == 0;
        if !supported {
            eprintln!("skipped: this kernel has no MADV_POPULATE_WRITE (Linux 5.14)");
            // SAFETY: the mapping made above, unmapped once.
            unsafe { libc::munmap(base, 3 * REGION) };
            return;
        }

        super::prefault_backwards(&regions, &AtomicUsize::new(3));
        assert_eq!(
            (resident(0), resident(1)),
            (0, 0),
            "nothing past the reader"
        );
        super::prefault_backwards(&regions, &AtomicUsize::new(0));
        assert_eq!(
            (resident(0), resident(1), resident(2)),
            (0, REGION, REGION),
            "the reader's region is its own"
        );
        // SAFETY: as above; the value written before is read back.
        let kept = unsafe { ((addr + 2 * REGION) as *const u32).read() };
        assert_eq!(kept, 0xdead_beef);
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(base, 3 * REGION) };
    }
}

//! The one operation the image layers need from a device: gathering the pixels of sliding windows
//! (im2col), with its backward pass (col2im). The CPU has its own loops; other devices compose dfdx's
//! gather.

// dfdx's tensor types spell out their shape, tape and device; their signatures trip clippy's threshold.
#![allow(clippy::type_complexity)]

use dfdx::shapes::{Dim, Dtype, HasShape, Shape};
use dfdx::tensor::{Cpu, CpuError, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use dfdx::tensor_ops::{Device, ReshapeTo};

#[cfg(feature = "cuda")]
use super::window::{gather_channels_first, gather_channels_last, reads_padding};

/// A dfdx device that [`fulgur::nn`](crate::nn)'s image layers run on: [`Cpu`], and `Cuda` with the
/// `cuda` feature. Every [`Backend`](crate::Backend) is one; name it only in the bounds of code generic
/// over dfdx's `Device` (`D: Device<f32> + WindowDevice<f32>`).
///
/// Both methods gather, for every window position `m`, the pixel `indices[m]` of each channel of each
/// image (`indices[m]` is a flat `row × width + column`, or `height × width` for the padding pixel,
/// whose value is `pad`), and record on the tape the backward pass that adds each gradient back to its
/// pixel. dfdx's own gather does the same for any device, but computes every element's position through
/// the tensor's strides; on the CPU that is most of a convolution's time, so the CPU has plain loops.
pub trait WindowDevice<E: Dtype>: Device<E> {
    /// `(B, C, H, W)` to `(B, M, C)`, channels last: the layout of the convolutions' im2col matrix.
    fn try_windows_channels_last<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, usize, C), E, Self, T>, Self::Err>;

    /// `(B, C, H, W)` to `(B, C, M)`, channels first: the layout of the pools.
    fn try_windows_channels_first<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, C, usize), E, Self, T>, Self::Err>;
}

impl<E: Dtype> WindowDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    fn try_windows_channels_last<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, usize, C), E, Self, T>, CpuError> {
        let (b, c, _, _) = *x.shape();
        let shape = (b, indices.len(), c);
        windows_cpu(x, indices, pad, Layout::ChannelsLast, shape)
    }

    fn try_windows_channels_first<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, C, usize), E, Self, T>, CpuError> {
        let (b, c, _, _) = *x.shape();
        let shape = (b, c, indices.len());
        windows_cpu(x, indices, pad, Layout::ChannelsFirst, shape)
    }
}

#[cfg(feature = "cuda")]
impl<E: Dtype> WindowDevice<E> for dfdx::tensor::Cuda
where
    dfdx::tensor::Cuda: Device<E>,
{
    fn try_windows_channels_last<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, usize, C), E, Self, T>, Self::Err> {
        let hw = x.shape().2.size() * x.shape().3.size();
        let pad = reads_padding(&indices, hw).then_some(pad);
        gather_channels_last(x, indices, pad)
    }

    fn try_windows_channels_first<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<E, Self>>(
        x: Tensor<(B, C, H, W), E, Self, T>,
        indices: Vec<usize>,
        pad: E,
    ) -> Result<Tensor<(B, C, usize), E, Self, T>, Self::Err> {
        let hw = x.shape().2.size() * x.shape().3.size();
        let pad = reads_padding(&indices, hw).then_some(pad);
        gather_channels_first(x, indices, pad)
    }
}

#[derive(Clone, Copy)]
enum Layout {
    ChannelsLast,
    ChannelsFirst,
}

/// im2col on the host: `out`, filled with the padding value by the caller, gets for every image of
/// `pixels` (`(B, C, H·W)`), the pixel `indices[m]` of each channel; the padding index `H·W` is skipped.
fn im2col<E: Copy>(
    pixels: &[E],
    (c, hw): (usize, usize),
    indices: &[usize],
    layout: Layout,
    out: &mut [E],
) {
    let len = indices.len();
    for (image, out) in pixels
        .chunks_exact(c * hw)
        .zip(out.chunks_exact_mut(c * len))
    {
        match layout {
            Layout::ChannelsLast => {
                for (row, &i) in out.chunks_exact_mut(c).zip(indices) {
                    if i < hw {
                        for (o, plane) in row.iter_mut().zip(image.chunks_exact(hw)) {
                            *o = plane[i];
                        }
                    }
                }
            }
            Layout::ChannelsFirst => {
                for (row, plane) in out.chunks_exact_mut(len).zip(image.chunks_exact(hw)) {
                    for (o, &i) in row.iter_mut().zip(indices) {
                        if let Some(&v) = plane.get(i) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// col2im, im2col's adjoint: adds every gradient of `grad_out` to the pixel of `grad_in` it was read from.
fn col2im<E: Copy + std::ops::AddAssign>(
    grad_out: &[E],
    (c, hw): (usize, usize),
    indices: &[usize],
    layout: Layout,
    grad_in: &mut [E],
) {
    let len = indices.len();
    for (image, grad_out) in grad_in
        .chunks_exact_mut(c * hw)
        .zip(grad_out.chunks_exact(c * len))
    {
        match layout {
            Layout::ChannelsLast => {
                for (row, &i) in grad_out.chunks_exact(c).zip(indices) {
                    if i < hw {
                        for (&g, plane) in row.iter().zip(image.chunks_exact_mut(hw)) {
                            plane[i] += g;
                        }
                    }
                }
            }
            Layout::ChannelsFirst => {
                for (row, plane) in grad_out.chunks_exact(len).zip(image.chunks_exact_mut(hw)) {
                    for (&g, &i) in row.iter().zip(indices) {
                        if let Some(p) = plane.get_mut(i) {
                            *p += g;
                        }
                    }
                }
            }
        }
    }
}

fn windows_cpu<B: Dim, C: Dim, H: Dim, W: Dim, E: Dtype, T: Tape<E, Cpu>, S: Shape>(
    x: Tensor<(B, C, H, W), E, Cpu, T>,
    indices: Vec<usize>,
    pad: E,
    layout: Layout,
    shape: S,
) -> Result<Tensor<S, E, Cpu, T>, CpuError> {
    let (b, c, h, w) = *x.shape();
    let (b, c, hw) = (b.size(), c.size(), h.size() * w.size());
    // Contiguous, so that the input's gradient buffer is laid out as (B, C, H·W) (a no-op when it is).
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let mut out = vec![pad; b * c * indices.len()];
    // dfdx's `as_vec` panics on an empty tensor (a batch of none).
    if !out.is_empty() {
        im2col(&x.as_vec(), (c, hw), &indices, layout, &mut out);
    }
    let out = x.device().try_tensor_from_vec(out, shape)?;
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        // dfdx lends one gradient buffer at a time: the output's is moved out, read, and put back.
        let grad_out = std::mem::take(&mut **grads.get_or_alloc_mut(&out_ghost)?);
        col2im(
            &grad_out,
            (c, hw),
            &indices,
            layout,
            grads.get_or_alloc_mut(&x_ghost)?,
        );
        **grads.get_or_alloc_mut(&out_ghost)? = grad_out;
        Ok(())
    });
    Ok(out.put_tape(tape))
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::WindowDevice;
    use crate::nn::reference::{assert_close, random};
    use crate::nn::window::{gather_channels_first, gather_channels_last, Window};

    /// The CPU loops against dfdx's gather (what other devices run): outputs and input gradients, with
    /// and without padding, on a strided (permuted) input.
    #[test]
    fn cpu_windows_match_dfdx_gather() {
        let dev = Cpu::default();
        for (win, (h, w)) in [
            (
                Window {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                    dilation: 1,
                },
                (7, 6),
            ),
            (
                Window {
                    kernel: 2,
                    stride: 1,
                    padding: 0,
                    dilation: 2,
                },
                (5, 5),
            ),
        ] {
            let (oh, ow) = (win.out_len(h).unwrap(), win.out_len(w).unwrap());
            let idx = win.indices((h, w), (oh, ow));
            let x_host = random(2 * 3 * h * w, 1);
            // Stored as (B, H, W, C) and permuted: the kernels must read through the strides.
            let x = dev
                .tensor_from_vec(x_host, (2, h, w, Const::<3>))
                .permute::<_, Axes4<0, 3, 1, 2>>();
            let dy = random(2 * 3 * idx.len(), 2);

            let ours = Cpu::try_windows_channels_last(x.leaky_trace(), idx.clone(), -2.0).unwrap();
            let dfdx = gather_channels_last(x.leaky_trace(), idx.clone(), Some(-2.0)).unwrap();
            assert_close("channels last", &ours.as_vec(), &dfdx.as_vec(), 0.0);
            let dy_t = dev.tensor_from_vec(dy.clone(), *ours.shape());
            let g_ours = (ours * dy_t.clone()).sum::<Rank0, _>().backward();
            let g_dfdx = (dfdx * dy_t).sum::<Rank0, _>().backward();
            assert_close(
                "channels last gradient",
                &g_ours.get(&x).as_vec(),
                &g_dfdx.get(&x).as_vec(),
                1e-12,
            );

            let ours = Cpu::try_windows_channels_first(x.leaky_trace(), idx.clone(), 0.5).unwrap();
            let dfdx = gather_channels_first(x.leaky_trace(), idx, Some(0.5)).unwrap();
            assert_close("channels first", &ours.as_vec(), &dfdx.as_vec(), 0.0);
            let dy_t = dev.tensor_from_vec(dy, *ours.shape());
            let g_ours = (ours * dy_t.clone()).sum::<Rank0, _>().backward();
            let g_dfdx = (dfdx * dy_t).sum::<Rank0, _>().backward();
            assert_close(
                "channels first gradient",
                &g_ours.get(&x).as_vec(),
                &g_dfdx.get(&x).as_vec(),
                1e-12,
            );
        }
    }
}

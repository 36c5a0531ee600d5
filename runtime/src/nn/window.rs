//! Sliding windows over images, shared by the convolutions and the pools: the output size, the index map
//! from (output position, kernel offset) to input pixel, and the gather that applies it with dfdx's
//! operations (on devices other than the CPU).
//!
//! Every layer reduces to "gather the pixels each window reads, then contract or reduce them", and dfdx's
//! tape records the backward pass: a gather's gradient is the scatter-add of col2im, a matmul's is two
//! matmuls. Padding is one extra pixel per image (zero, or minus infinity for max pooling) that every
//! out-of-bounds read points at.

// dfdx's tensor types spell out their shape, tape and device; their signatures trip clippy's threshold.
#![allow(clippy::type_complexity)]

use dfdx::shapes::{Dim, Dtype, HasShape, Shape};
use dfdx::tensor::{PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};
#[cfg(any(test, feature = "cuda"))]
use dfdx::{
    shapes::{Axes2, Axes3, Axis},
    tensor_ops::{BroadcastTo, GatherTo, PermuteTo, TryConcatAlong},
};

use super::WindowDevice;

/// A batch of images whose height and width are run-time sizes: what the image layers return.
pub(crate) type Images<B, C, E, D, T> = Tensor<(B, C, usize, usize), E, D, T>;

/// The geometry of a square window sliding over both spatial axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl Window {
    /// The positions one window covers along an axis, from its first pixel to its last.
    fn span(self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// How many windows fit along an axis of `len` pixels (padded on both sides); `None` when the padded
    /// axis is shorter than one window.
    pub fn out_len(self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        (len + 2 * self.padding)
            .checked_sub(self.span())
            .map(|d| d / self.stride + 1)
    }

    /// The length of a transposed convolution's output along an axis of `len` pixels:
    /// `(len - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1`; `None` when nothing is left.
    pub fn transposed_len(self, len: usize) -> Option<usize> {
        let full = len.checked_sub(1)? * self.stride + self.span();
        full.checked_sub(2 * self.padding).filter(|&n| n > 0)
    }

    /// For every output position (row-major) and kernel offset (row-major), the flat index of the input
    /// pixel the window reads, or `h * w` (the padding pixel) where it reads padding.
    pub fn indices(self, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<usize> {
        let read = |out: usize, k: usize, len: usize| {
            (out * self.stride + k * self.dilation)
                .checked_sub(self.padding)
                .filter(|&i| i < len)
        };
        self.map((oh, ow), h * w, |y, x, ki, kj| {
            Some(read(y, ki, h)? * w + read(x, kj, w)?)
        })
    }

    /// The index map of a transposed convolution: output pixel `o` receives input pixel `i` through
    /// kernel offset `k` when `o = i * stride - padding + k * dilation`.
    pub fn transposed_indices(
        self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> Vec<usize> {
        let read = |out: usize, k: usize, len: usize| {
            (out + self.padding)
                .checked_sub(k * self.dilation)
                .filter(|&i| i % self.stride == 0)
                .map(|i| i / self.stride)
                .filter(|&i| i < len)
        };
        self.map((oh, ow), h * w, |y, x, ki, kj| {
            Some(read(y, ki, h)? * w + read(x, kj, w)?)
        })
    }

    fn map(
        self,
        (oh, ow): (usize, usize),
        pad: usize,
        read: impl Fn(usize, usize, usize, usize) -> Option<usize>,
    ) -> Vec<usize> {
        let k = self.kernel;
        let mut out = Vec::with_capacity(oh * ow * k * k);
        for y in 0..oh {
            for x in 0..ow {
                for ki in 0..k {
                    for kj in 0..k {
                        out.push(read(y, x, ki, kj).unwrap_or(pad));
                    }
                }
            }
        }
        out
    }
}

/// The pixels every window reads, channels last: `(B, C, H, W)` to `(B, M, C)` with `M = indices.len()`,
/// through dfdx's gather (what [`WindowDevice`](super::WindowDevice) runs on devices other than the CPU).
/// `pad` is the value of the padding pixel, `None` when no index points at it.
#[cfg(any(test, feature = "cuda"))]
pub(crate) fn gather_channels_last<B: Dim, C: Dim, H: Dim, W: Dim, E, D, T>(
    x: Tensor<(B, C, H, W), E, D, T>,
    indices: Vec<usize>,
    pad: Option<E>,
) -> Result<Tensor<(B, usize, C), E, D, T>, D::Err>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, c, h, w) = *x.shape();
    let dev = x.device().clone();
    // A view: the gather reads through the strides, so no copy is made here.
    let x = x
        .try_reshape_like(&(b, c, h.size() * w.size()))?
        .try_permute::<_, Axes3<0, 2, 1>>()?;
    let m = indices.len();
    let idx = dev
        .try_tensor_from_vec(indices, (m,))?
        .try_broadcast_like::<_, Axis<0>>(&(b, m))?;
    match pad {
        None => x.try_gather(idx),
        Some(v) => {
            let fill = dev.try_tensor_from_vec(vec![v; b.size() * c.size()], (b, 1, c))?;
            (x, fill).try_concat_along(Axis::<1>)?.try_gather(idx)
        }
    }
}

/// The pixels every window reads, channels first: `(B, C, H, W)` to `(B, C, M)` with
/// `M = indices.len()`. `pad` as in [`gather_channels_last`].
#[cfg(any(test, feature = "cuda"))]
pub(crate) fn gather_channels_first<B: Dim, C: Dim, H: Dim, W: Dim, E, D, T>(
    x: Tensor<(B, C, H, W), E, D, T>,
    indices: Vec<usize>,
    pad: Option<E>,
) -> Result<Tensor<(B, C, usize), E, D, T>, D::Err>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, c, h, w) = *x.shape();
    let dev = x.device().clone();
    let x = x.try_reshape_like(&(b, c, h.size() * w.size()))?;
    let m = indices.len();
    let idx = dev
        .try_tensor_from_vec(indices, (m,))?
        .try_broadcast_like::<_, Axes2<0, 1>>(&(b, c, m))?;
    match pad {
        None => x.try_gather(idx),
        Some(v) => {
            let fill = dev.try_tensor_from_vec(vec![v; b.size() * c.size()], (b, c, 1))?;
            (x, fill).try_concat_along(Axis::<2>)?.try_gather(idx)
        }
    }
}

/// A pooling layer: `reduce` turns the windows `(B, C, OH·OW, K·K)` into `(B, C, OH·OW)`. The padding
/// pixel holds `pad`; with `needs_pixel`, a window that reads padding only is an error.
pub(crate) fn pool2d<B: Dim, C: Dim, H: Dim, W: Dim, E, D, T>(
    x: Tensor<(B, C, H, W), E, D, T>,
    win: Window,
    (pad, needs_pixel): (E, bool),
    name: &str,
    reduce: impl FnOnce(
        Tensor<(B, C, usize, usize), E, D, T>,
    ) -> Result<Tensor<(B, C, usize), E, D, T>, D::Err>,
) -> Result<Images<B, C, E, D, T>, D::Err>
where
    E: Dtype,
    D: WindowDevice<E>,
    T: Tape<E, D>,
{
    let (b, c, h, w) = *x.shape();
    let (h, w) = (h.size(), w.size());
    let (Some(oh), Some(ow)) = (win.out_len(h), win.out_len(w)) else {
        let span = win.span();
        let message = format!(
            "`{name}`: a {h}×{w} input is smaller than the {span}×{span} window (padding {} on each side)",
            win.padding
        );
        return Err(shape_error(x.device(), &message));
    };
    let idx = win.indices((h, w), (oh, ow));
    let kk = win.kernel * win.kernel;
    if needs_pixel && idx.chunks(kk).any(|taps| taps.iter().all(|&i| i == h * w)) {
        let message = format!(
            "`{name}`: on a {h}×{w} input some windows read padding only; use less padding"
        );
        return Err(shape_error(x.device(), &message));
    }
    if b.size() * c.size() == 0 {
        return empty_output(x, (b, c, oh, ow));
    }
    let windows =
        D::try_windows_channels_first(x, idx, pad)?.try_reshape_like(&(b, c, oh * ow, kk))?;
    reduce(windows)?.try_reshape_like(&(b, c, oh, ow))
}

/// What a layer returns for an empty batch: zeros of `shape` on the input's tape. dfdx's copying
/// kernels read the first element of every tensor, so an empty tensor must not reach them.
pub(crate) fn empty_output<S0: Shape, S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S0, E, D, T>,
    shape: S,
) -> Result<Tensor<S, E, D, T>, D::Err> {
    let (x, tape) = x.split_tape();
    Ok(x.device().try_zeros_like(&shape)?.put_tape(tape))
}

/// Whether any index points at the padding pixel `pad`.
#[cfg(feature = "cuda")]
pub(crate) fn reads_padding(indices: &[usize], pad: usize) -> bool {
    indices.contains(&pad)
}

/// The error a layer returns for an input its geometry cannot take, after printing `message` (the layer
/// and what it expected) on standard error.
///
/// A layer must return its device's error type to compose with dfdx's layers in tuples, and dfdx offers
/// no public constructor for it; its own size check (a vector whose length does not fit the shape) yields
/// `WrongNumElements`, the variant dfdx uses for sizes that do not fit, on the CPU and on CUDA alike.
pub(crate) fn shape_error<E: Dtype, D: Device<E>>(dev: &D, message: &str) -> D::Err {
    eprintln!("[fulgur] error: {message}");
    match dev.try_tensor_from_vec::<(usize,)>(Vec::<usize>::new(), (1,)) {
        Err(e) => e,
        Ok(_) => unreachable!("dfdx rejects a vector shorter than its shape"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Window {
        Window {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    #[test]
    fn output_lengths_follow_pytorch() {
        // torch.nn.Conv2d's formula: floor((len + 2p - d(k-1) - 1) / s) + 1.
        assert_eq!(win(3, 1, 0, 1).out_len(8), Some(6));
        assert_eq!(win(3, 1, 1, 1).out_len(8), Some(8));
        assert_eq!(win(3, 2, 1, 1).out_len(7), Some(4));
        assert_eq!(win(3, 1, 0, 2).out_len(7), Some(3));
        assert_eq!(win(2, 2, 0, 1).out_len(5), Some(2));
        assert_eq!(win(5, 1, 0, 1).out_len(4), None);
        assert_eq!(win(1, 1, 0, 1).out_len(0), None);
        // torch.nn.ConvTranspose2d's: (len - 1) s - 2p + d(k-1) + 1.
        assert_eq!(win(3, 2, 1, 1).transposed_len(4), Some(7));
        assert_eq!(win(4, 2, 1, 1).transposed_len(4), Some(8));
        assert_eq!(win(1, 1, 1, 1).transposed_len(1), None);
    }

    #[test]
    fn indices_point_padding_at_the_extra_pixel() {
        // A 2x2 image, 2x2 kernel, padding 1: the first window reads one real pixel (0) in its corner.
        let idx = win(2, 1, 1, 1).indices((2, 2), (3, 3));
        assert_eq!(&idx[..4], &[4, 4, 4, 0]);
        assert_eq!(&idx[16..20], &[0, 1, 2, 3]);
        // Stride 2 with dilation 2 on a 5x5 image: the window of output (1, 1) starts at pixel (2, 2).
        let idx = win(2, 2, 0, 2).indices((5, 5), (2, 2));
        assert_eq!(&idx[12..16], &[12, 14, 22, 24]);
    }

    #[test]
    fn transposed_indices_invert_the_stride() {
        // 1-pixel-high image of width 2, kernel 1x3, stride 2: out x = 2 i + k.
        let w = win(3, 2, 0, 1);
        let idx = w.transposed_indices((1, 2), (3, 5));
        let pad = 2;
        // Row 0 of the output reads input row 0 only through ki = 0.
        let row0: Vec<_> = (0..5).map(|x| idx[x * 9..x * 9 + 3].to_vec()).collect();
        assert_eq!(row0[0], vec![0, pad, pad]);
        assert_eq!(row0[2], vec![1, pad, 0]);
        assert_eq!(row0[4], vec![pad, pad, 1]);
    }
}

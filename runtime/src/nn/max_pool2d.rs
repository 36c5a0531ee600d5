//! `MaxPool2D`: the largest value of each window.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Axis, Dim, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, MaxTo, ReshapeTo};
use num_traits::Float;

use super::window::{pool_windows, Window};

/// Max pooling over `KERNEL`×`KERNEL` windows moved `STRIDE` pixels at a time (by default the kernel
/// size, as in PyTorch, so `MaxPool2D<2>` halves the height and width), over the image padded with
/// `PADDING` pixels that never win, the taps `DILATION` pixels apart. PyTorch's `nn.MaxPool2d`.
///
/// Takes `(batch, channels, height, width)` or `(channels, height, width)`, any channel count; the
/// output's height and width are `usize`. The padding must be at most half the kernel, as in PyTorch.
/// Where several taps of a window hold the maximum, dfdx's `max` gives each of them the gradient.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::MaxPool2D;
///
/// let dev = Cpu::default();
/// let x = dev.tensor([[[1.0f32, 2.0, 5.0], [3.0, 4.0, 0.0], [7.0, 0.0, 9.0]]]);
/// // 3×3 → 2×2 windows of stride 1.
/// let y = MaxPool2D::<2, 1>::default().forward(x);
/// assert_eq!(y.as_vec(), [4.0, 5.0, 7.0, 9.0]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxPool2D<
    const KERNEL: usize,
    const STRIDE: usize = KERNEL,
    const PADDING: usize = 0,
    const DILATION: usize = 1,
>;

impl<const K: usize, const S: usize, const P: usize, const L: usize> ZeroSizedModule
    for MaxPool2D<K, S, P, L>
{
}

impl<const K: usize, const S: usize, const P: usize, const L: usize> NonMutableModule
    for MaxPool2D<K, S, P, L>
{
}

impl<const K: usize, const S: usize, const P: usize, const L: usize> MaxPool2D<K, S, P, L> {
    const WINDOW: Window = {
        assert!(K > 0, "`MaxPool2D`: the kernel size must be at least 1");
        assert!(S > 0, "`MaxPool2D`: the stride must be at least 1");
        assert!(L > 0, "`MaxPool2D`: the dilation must be at least 1");
        assert!(
            P <= K / 2,
            "`MaxPool2D`: the padding must be at most half the kernel size"
        );
        Window {
            kernel: K,
            stride: S,
            padding: P,
            dilation: L,
        }
    };

    fn batched<B: Dim, C: Dim, H: Dim, W: Dim, E, D, T>(
        x: Tensor<(B, C, H, W), E, D, T>,
    ) -> Result<Tensor<(B, C, usize, usize), E, D, T>, D::Err>
    where
        E: Dtype + Float,
        D: Device<E>,
        T: Tape<E, D>,
    {
        let (b, c, _, _) = *x.shape();
        let name = format!("MaxPool2D<{K}, {S}, {P}, {L}>");
        let (windows, (oh, ow)) = pool_windows(x, Self::WINDOW, E::neg_infinity(), true, &name)?;
        windows
            .try_max::<_, Axis<3>>()?
            .try_reshape_like(&(b, c, oh, ow))
    }
}

impl<const K: usize, const S: usize, const P: usize, const L: usize, B, C, H, W, E, D, T>
    Module<Tensor<(B, C, H, W), E, D, T>> for MaxPool2D<K, S, P, L>
where
    B: Dim,
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, C, usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        Self::batched(x)
    }
}

impl<const K: usize, const S: usize, const P: usize, const L: usize, C, H, W, E, D, T>
    Module<Tensor<(C, H, W), E, D, T>> for MaxPool2D<K, S, P, L>
where
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(C, usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(C, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        let (c, h, w) = *x.shape();
        let y = Self::batched(x.try_reshape_like(&(1, c, h, w))?)?;
        let (_, c, oh, ow) = *y.shape();
        y.try_reshape_like(&(c, oh, ow))
    }
}

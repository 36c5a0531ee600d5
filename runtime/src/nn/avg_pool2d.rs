//! `AvgPool2D`: the mean of each window.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Axis, Dim, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, MeanTo, ReshapeTo};

use super::window::{pool_windows, Window};

/// Average pooling over `KERNEL`×`KERNEL` windows moved `STRIDE` pixels at a time (by default the
/// kernel size, as in PyTorch, so `AvgPool2D<2>` halves the height and width), over the image padded
/// with `PADDING` zeros, the taps `DILATION` pixels apart. PyTorch's `nn.AvgPool2d` with its default
/// `count_include_pad=True`: every window is divided by `KERNEL²`, padding included.
///
/// Takes `(batch, channels, height, width)` or `(channels, height, width)`, any channel count; the
/// output's height and width are `usize`. The padding must be at most half the kernel, as in PyTorch.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::AvgPool2D;
///
/// let dev = Cpu::default();
/// let x = dev.tensor([[[1.0f32, 2.0, 5.0, 0.0], [3.0, 4.0, 0.0, 3.0]]]);
/// // 2×4 → 1×2 windows of 2×2.
/// let y = AvgPool2D::<2>::default().forward(x);
/// assert_eq!(y.as_vec(), [2.5, 2.0]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AvgPool2D<
    const KERNEL: usize,
    const STRIDE: usize = KERNEL,
    const PADDING: usize = 0,
    const DILATION: usize = 1,
>;

impl<const K: usize, const S: usize, const P: usize, const L: usize> ZeroSizedModule
    for AvgPool2D<K, S, P, L>
{
}

impl<const K: usize, const S: usize, const P: usize, const L: usize> NonMutableModule
    for AvgPool2D<K, S, P, L>
{
}

impl<const K: usize, const S: usize, const P: usize, const L: usize> AvgPool2D<K, S, P, L> {
    const WINDOW: Window = {
        assert!(K > 0, "`AvgPool2D`: the kernel size must be at least 1");
        assert!(S > 0, "`AvgPool2D`: the stride must be at least 1");
        assert!(L > 0, "`AvgPool2D`: the dilation must be at least 1");
        assert!(
            P <= K / 2,
            "`AvgPool2D`: the padding must be at most half the kernel size"
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
        E: Dtype,
        D: Device<E>,
        T: Tape<E, D>,
    {
        let (b, c, _, _) = *x.shape();
        let name = format!("AvgPool2D<{K}, {S}, {P}, {L}>");
        let (windows, (oh, ow)) = pool_windows(x, Self::WINDOW, E::default(), false, &name)?;
        windows
            .try_mean::<_, Axis<3>>()?
            .try_reshape_like(&(b, c, oh, ow))
    }
}

impl<const K: usize, const S: usize, const P: usize, const L: usize, B, C, H, W, E, D, T>
    Module<Tensor<(B, C, H, W), E, D, T>> for AvgPool2D<K, S, P, L>
where
    B: Dim,
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype,
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
    Module<Tensor<(C, H, W), E, D, T>> for AvgPool2D<K, S, P, L>
where
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype,
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

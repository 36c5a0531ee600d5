//! `AvgPool2D`: the mean of each window.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Axis, Dim, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{MeanTo, ReshapeTo};

use super::window::{pool2d, Images, Window};
use super::WindowDevice;

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
    ) -> Result<Images<B, C, E, D, T>, D::Err>
    where
        E: Dtype,
        D: WindowDevice<E>,
        T: Tape<E, D>,
    {
        let name = format!("AvgPool2D<{K}, {S}, {P}, {L}>");
        pool2d(x, Self::WINDOW, (E::default(), false), &name, |windows| {
            windows.try_mean::<_, Axis<3>>()
        })
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
    D: WindowDevice<E>,
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
    D: WindowDevice<E>,
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

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::AvgPool2D;
    use crate::nn::reference::{self, assert_close, dot, finite_differences, random, Pool};

    /// `AvgPool2D<K, S, P, L>` on `batch` images of `c` channels and `h`×`w`: output and input
    /// gradient against direct pooling (padding counted) and against finite differences.
    fn check<const K: usize, const S: usize, const P: usize, const L: usize>(
        batch: usize,
        c: usize,
        (h, w): (usize, usize),
    ) {
        let dev = Cpu::default();
        let pool = AvgPool2D::<K, S, P, L>;
        let (xd, g) = ([batch, c, h, w], (S, P, L));
        let x_host = random(xd.iter().product(), 5);
        let x = dev.tensor_from_vec(x_host.clone(), (batch, c, h, w));

        let y = pool.forward(x.leaky_trace());
        let (want, yd) = reference::pool2d(&x_host, xd, K, g, Pool::Avg);
        assert_eq!(*y.shape(), (batch, c, yd[2], yd[3]));
        assert_close("output", &y.as_vec(), &want, 1e-12);

        let dy = random(want.len(), 6);
        let dy_t = dev.tensor_from_vec(dy.clone(), *y.shape());
        let grads = (y * dy_t).sum::<Rank0, _>().backward();
        let tape_dx = grads.get(&x).as_vec();
        let dx = reference::pool2d_backward(&x_host, xd, K, g, Pool::Avg, &dy);
        assert_close("input gradient", &tape_dx, &dx, 1e-12);
        let fd_dx = finite_differences(&x_host, |xv| {
            let y = pool.forward(dev.tensor_from_vec(xv.to_vec(), (batch, c, h, w)));
            dot(&y.as_vec(), &dy)
        });
        assert_close(
            "input gradient (finite differences)",
            &tape_dx,
            &fd_dx,
            1e-6,
        );
    }

    #[test]
    fn avg_pool2d_odd_sizes_match_direct_pooling() {
        check::<2, 2, 0, 1>(2, 3, (7, 5));
        check::<3, 3, 0, 1>(1, 2, (7, 8));
    }

    #[test]
    fn avg_pool2d_stride_padding_and_dilation_match_direct_pooling_on_a_batch_of_one() {
        // With padding, border windows are divided by the whole kernel area (PyTorch's default).
        check::<3, 2, 1, 1>(1, 2, (7, 6));
        check::<2, 1, 1, 1>(1, 1, (4, 5));
        check::<2, 1, 0, 2>(1, 3, (5, 6));
    }

    #[test]
    fn avg_pool2d_stride_defaults_to_the_kernel() {
        let dev = Cpu::default();
        let x: Tensor<Rank4<2, 3, 9, 8>, f32, _> = dev.sample_normal();
        let y = AvgPool2D::<3>.forward(x);
        assert_eq!(y.shape(), &(Const::<2>, Const::<3>, 3, 2));
    }
}

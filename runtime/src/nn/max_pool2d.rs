//! `MaxPool2D`: the largest value of each window.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Axis, Dim, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{MaxTo, ReshapeTo};
use num_traits::Float;

use super::window::{pool2d, Images, Window};
use super::WindowDevice;

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
///
/// A kernel, stride or dilation of 0, or a padding above half the kernel, fails the build (in
/// `cargo build`; `cargo check` does not evaluate it):
///
/// ```compile_fail,E0080
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::MaxPool2D;
///
/// let x: Tensor<Rank3<1, 4, 4>, f32, _> = Cpu::default().zeros();
/// MaxPool2D::<2, 2, 2>::default().forward(x);
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
    ) -> Result<Images<B, C, E, D, T>, D::Err>
    where
        E: Dtype + Float,
        D: WindowDevice<E>,
        T: Tape<E, D>,
    {
        let name = format!("MaxPool2D<{K}, {S}, {P}, {L}>");
        pool2d(
            x,
            Self::WINDOW,
            (E::neg_infinity(), true),
            &name,
            |windows| windows.try_max::<_, Axis<3>>(),
        )
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
    Module<Tensor<(C, H, W), E, D, T>> for MaxPool2D<K, S, P, L>
where
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype + Float,
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

    use super::MaxPool2D;
    use crate::nn::reference::{self, assert_close, dot, finite_differences, random, Pool};

    /// `MaxPool2D<K, S, P, L>` on `batch` images of `c` channels and `h`×`w`: output and input
    /// gradient against direct pooling and against finite differences (the random values have no ties).
    fn check<const K: usize, const S: usize, const P: usize, const L: usize>(
        batch: usize,
        c: usize,
        (h, w): (usize, usize),
    ) {
        let dev = Cpu::default();
        let pool = MaxPool2D::<K, S, P, L>;
        let (xd, g) = ([batch, c, h, w], (S, P, L));
        let x_host = random(xd.iter().product(), 3);
        let x = dev.tensor_from_vec(x_host.clone(), (batch, c, h, w));

        let y = pool.forward(x.leaky_trace());
        let (want, yd) = reference::pool2d(&x_host, xd, K, g, Pool::Max);
        assert_eq!(*y.shape(), (batch, c, yd[2], yd[3]));
        assert_close("output", &y.as_vec(), &want, 0.0);

        let dy = random(want.len(), 4);
        let dy_t = dev.tensor_from_vec(dy.clone(), *y.shape());
        let grads = (y * dy_t).sum::<Rank0, _>().backward();
        let tape_dx = grads.get(&x).as_vec();
        let dx = reference::pool2d_backward(&x_host, xd, K, g, Pool::Max, &dy);
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
    fn max_pool2d_odd_sizes_match_direct_pooling() {
        // The stride defaults to the kernel; the last odd row and column are dropped.
        check::<2, 2, 0, 1>(2, 3, (7, 5));
        check::<3, 3, 0, 1>(1, 2, (7, 8));
    }

    #[test]
    fn max_pool2d_stride_padding_and_dilation_match_direct_pooling_on_a_batch_of_one() {
        check::<3, 2, 1, 1>(1, 2, (7, 6));
        check::<2, 1, 1, 1>(1, 1, (4, 5));
        check::<2, 1, 0, 2>(1, 3, (5, 6));
        check::<3, 2, 1, 2>(2, 1, (9, 7));
    }

    #[test]
    fn max_pool2d_stride_defaults_to_the_kernel() {
        let dev = Cpu::default();
        let x: Tensor<Rank4<2, 3, 8, 8>, f32, _> = dev.sample_normal();
        let y = MaxPool2D::<2>.forward(x);
        assert_eq!(y.shape(), &(Const::<2>, Const::<3>, 4, 4));
    }

    #[test]
    fn max_pool2d_takes_single_images() {
        let dev = Cpu::default();
        let x: Tensor<Rank3<3, 6, 5>, f32, _> = dev.sample_normal();
        let single = MaxPool2D::<2>.forward(x.clone());
        let batched = MaxPool2D::<2>.forward(x.reshape::<Rank4<1, 3, 6, 5>>());
        assert_eq!(single.shape(), &(Const::<3>, 3, 2));
        assert_eq!(single.as_vec(), batched.as_vec());
    }

    #[test]
    fn max_pool2d_window_of_padding_only_is_an_error() {
        // Kernel 2 with dilation 3 on 2 rows, padded by 1: the only window reads rows -1 and 2.
        let dev = Cpu::default();
        let x: Tensor<(usize, usize, usize, usize), f32, _> = dev.ones_like(&(1, 1, 2, 2));
        assert!(MaxPool2D::<2, 1, 1, 3>.try_forward(x).is_err());
        let x: Tensor<(usize, usize, usize, usize), f32, _> = dev.ones_like(&(1, 1, 1, 1));
        assert!(MaxPool2D::<2>.try_forward(x).is_err());
    }
}

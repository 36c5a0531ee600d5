//! `ConvTranspose2D`: the transpose (gradient) of a convolution, to upsample; a gather and one matmul.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::{BuildModule, BuildOnDevice, Module, NonMutableModule};
use dfdx::shapes::{Axes3, Axes4, Const, Dim, Dtype, HasShape, Rank1, Rank4};
use dfdx::tensor::{Storage, Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, Device, PermuteTo, ReshapeTo, TryAdd, TryMatMul};
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::conv2d::fan_in_bound;
use super::window::{empty_output, shape_error, Images, Window};
use super::WindowDevice;

pub mod builder {
    /// A 2-D transposed convolution with a bias: each input pixel spreads its `IN` channels over a
    /// `KERNEL`×`KERNEL` patch of `OUT` channels, the patches `STRIDE` pixels apart, their taps
    /// `DILATION` apart, and `PADDING` rows and columns cut from each border. PyTorch's
    /// `nn.ConvTranspose2d(IN, OUT, KERNEL, STRIDE, PADDING, dilation=DILATION)` (without
    /// `output_padding`): an input of height `h` gives `(h - 1)·STRIDE - 2·PADDING +
    /// DILATION·(KERNEL - 1) + 1` rows.
    ///
    /// The module it builds, [`modules::ConvTranspose2D`](crate::nn::modules::ConvTranspose2D), has the
    /// parameters `weight` (`IN × OUT × KERNEL × KERNEL`, PyTorch's layout) and `bias` (`OUT`), drawn
    /// from `U(-1/√fan_in, 1/√fan_in)` with PyTorch's `fan_in = OUT × KERNEL²`. Shapes as for
    /// [`Conv2D`](crate::nn::Conv2D).
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use fulgur_runtime::nn::ConvTranspose2D;
    ///
    /// let dev = Cpu::default();
    /// let up = dev.build_module::<ConvTranspose2D<4, 2, 4, 2, 1>, f32>();
    /// let x: Tensor<(usize, Const<4>, usize, usize), f32, _> = dev.sample_normal_like(&(3, Const, 5, 7));
    /// // Kernel 4, stride 2, padding 1 doubles the height and width.
    /// assert_eq!(up.forward(x).shape(), &(3, Const::<2>, 10, 14));
    /// ```
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ConvTranspose2D<
        const IN: usize,
        const OUT: usize,
        const KERNEL: usize,
        const STRIDE: usize = 1,
        const PADDING: usize = 0,
        const DILATION: usize = 1,
    >;
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
    > BuildOnDevice<D, E> for builder::ConvTranspose2D<I, O, K, S, P, L>
where
    E: Dtype,
    D: Device<E>,
    ConvTranspose2D<I, O, K, S, P, L, E, D>: BuildModule<D, E>,
{
    type Built = ConvTranspose2D<I, O, K, S, P, L, E, D>;
}

/// A built [`ConvTranspose2D`](builder::ConvTranspose2D): its weight and bias on a device.
#[derive(Debug, Clone)]
pub struct ConvTranspose2D<
    const IN: usize,
    const OUT: usize,
    const KERNEL: usize,
    const STRIDE: usize,
    const PADDING: usize,
    const DILATION: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// The kernels, `IN × OUT × KERNEL × KERNEL` (PyTorch's layout).
    pub weight: Tensor<Rank4<IN, OUT, KERNEL, KERNEL>, E, D>,
    /// One bias per output channel.
    pub bias: Tensor<Rank1<OUT>, E, D>,
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
    > NonMutableModule for ConvTranspose2D<I, O, K, S, P, L, E, D>
where
    E: Dtype,
    D: Storage<E>,
{
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
    > TensorCollection<E, D> for ConvTranspose2D<I, O, K, S, P, L, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = ConvTranspose2D<I, O, K, S, P, L, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_with(|t| {
                        let b = fan_in_bound::<E>(O * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_with(|t| {
                        let b = fan_in_bound::<E>(O * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
            ),
            |(weight, bias)| ConvTranspose2D { weight, bias },
        )
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
    > ConvTranspose2D<I, O, K, S, P, L, E, D>
where
    E: Dtype,
    D: WindowDevice<E>,
{
    const WINDOW: Window = {
        assert!(
            K > 0,
            "`ConvTranspose2D`: the kernel size must be at least 1"
        );
        assert!(S > 0, "`ConvTranspose2D`: the stride must be at least 1");
        assert!(L > 0, "`ConvTranspose2D`: the dilation must be at least 1");
        Window {
            kernel: K,
            stride: S,
            padding: P,
            dilation: L,
        }
    };

    fn batched<B: Dim, H: Dim, W: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, Const<I>, H, W), E, D, T>,
    ) -> Result<Images<B, Const<O>, E, D, T>, D::Err> {
        let win = Self::WINDOW;
        let (b, _, h, w) = *x.shape();
        let (h, w) = (h.size(), w.size());
        let (Some(oh), Some(ow)) = (win.transposed_len(h), win.transposed_len(w)) else {
            return Err(shape_error(
                x.device(),
                &format!(
                    "`ConvTranspose2D<{I}, {O}, {K}, {S}, {P}, {L}>`: a {h}×{w} input leaves no \
                     output once {P} rows and columns are cut from each border"
                ),
            ));
        };
        // Output pixel by output pixel, the input pixels (and kernel taps) that reach it: most
        // (kernel tap, output pixel) pairs meet no input pixel when the stride is above 1, and read
        // the zero padding pixel.
        if b.size() == 0 {
            return empty_output(x, (b, Const::<O>, oh, ow));
        }
        let idx = win.transposed_indices((h, w), (oh, ow));
        let cols = D::try_windows_channels_last(x, idx, E::default())?
            .try_reshape_like(&(b.size() * oh * ow, K * K * I))?;
        // (I, O, K, K) → (K, K, I, O) → (K·K·I, O), the columns' order.
        let weight = self
            .weight
            .retaped::<T>()
            .try_permute::<_, Axes4<2, 3, 0, 1>>()?
            .try_reshape_like(&(K * K * I, Const::<O>))?;
        let out = cols
            .try_matmul(weight)?
            .try_reshape_like(&(b, oh * ow, Const::<O>))?
            .try_permute::<_, Axes3<0, 2, 1>>()?
            .try_reshape_like(&(b, Const::<O>, oh, ow))?;
        let bias = self
            .bias
            .retaped::<T>()
            .try_broadcast_like::<_, Axes3<0, 2, 3>>(&(b, Const::<O>, oh, ow))?;
        out.try_add(bias)
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
        B,
        H,
        W,
        T,
    > Module<Tensor<(B, Const<I>, H, W), E, D, T>> for ConvTranspose2D<I, O, K, S, P, L, E, D>
where
    E: Dtype,
    D: WindowDevice<E>,
    B: Dim,
    H: Dim,
    W: Dim,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, Const<O>, usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<I>, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        self.batched(x)
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        E,
        D,
        H,
        W,
        T,
    > Module<Tensor<(Const<I>, H, W), E, D, T>> for ConvTranspose2D<I, O, K, S, P, L, E, D>
where
    E: Dtype,
    D: WindowDevice<E>,
    H: Dim,
    W: Dim,
    T: Tape<E, D>,
{
    type Output = Tensor<(Const<O>, usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(Const<I>, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        let (c, h, w) = *x.shape();
        let y = self.batched(x.try_reshape_like(&(Const::<1>, c, h, w))?)?;
        let (_, o, oh, ow) = *y.shape();
        y.try_reshape_like(&(o, oh, ow))
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::builder;
    use crate::nn::reference::{self, assert_close, dot, finite_differences, random};

    /// A `ConvTranspose2D<I, O, K, S, P, L>` on `batch` images of `h`×`w`: output against the direct
    /// scatter; the gradients its tape gives for the input, the weight and the bias against finite
    /// differences of the layer's own forward pass.
    fn check<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
    >(
        batch: usize,
        (h, w): (usize, usize),
    ) {
        let dev = Cpu::seed_from_u64(11);
        let conv = dev.build_module::<builder::ConvTranspose2D<I, O, K, S, P, L>, f64>();
        let (weight, bias) = (conv.weight.as_vec(), conv.bias.as_vec());
        let xd = [batch, I, h, w];
        let x_host = random(xd.iter().product(), 8);
        let shape = (batch, Const::<I>, h, w);
        let x = dev.tensor_from_vec(x_host.clone(), shape);

        let y = conv.forward(x.leaky_trace());
        let (want, yd) =
            reference::conv_transpose2d(&x_host, xd, &weight, (O, K), &bias, (S, P, L));
        assert_eq!(*y.shape(), (batch, Const::<O>, yd[2], yd[3]));
        assert_close("output", &y.as_vec(), &want, 1e-12);

        let dy = random(want.len(), 9);
        let dy_t = dev.tensor_from_vec(dy.clone(), *y.shape());
        let grads = (y * dy_t).sum::<Rank0, _>().backward();
        let loss = |conv: &super::ConvTranspose2D<I, O, K, S, P, L, f64, Cpu>, x: &[f64]| {
            dot(
                &conv
                    .forward(dev.tensor_from_vec(x.to_vec(), shape))
                    .as_vec(),
                &dy,
            )
        };
        let fd_dx = finite_differences(&x_host, |x| loss(&conv, x));
        let fd_dw = finite_differences(&weight, |wv| {
            let mut c = conv.clone();
            c.weight.copy_from(wv);
            loss(&c, &x_host)
        });
        let fd_db = finite_differences(&bias, |bv| {
            let mut c = conv.clone();
            c.bias.copy_from(bv);
            loss(&c, &x_host)
        });
        assert_close("input gradient", &grads.get(&x).as_vec(), &fd_dx, 1e-6);
        assert_close(
            "weight gradient",
            &grads.get(&conv.weight).as_vec(),
            &fd_dw,
            1e-6,
        );
        assert_close(
            "bias gradient",
            &grads.get(&conv.bias).as_vec(),
            &fd_db,
            1e-6,
        );
    }

    #[test]
    fn conv_transpose2d_odd_sizes_match_direct_scatter() {
        check::<3, 2, 3, 1, 0, 1>(2, (5, 4));
        check::<2, 3, 1, 1, 0, 1>(1, (3, 3));
    }

    #[test]
    fn conv_transpose2d_stride_and_padding_match_direct_scatter_on_a_batch_of_one() {
        check::<2, 3, 3, 2, 1, 1>(1, (4, 5));
        check::<3, 2, 4, 2, 1, 1>(1, (3, 3));
        // A stride larger than the kernel leaves rows and columns that only the bias reaches.
        check::<1, 2, 2, 3, 0, 1>(2, (3, 2));
    }

    #[test]
    fn conv_transpose2d_dilation_matches_direct_scatter() {
        check::<2, 2, 3, 1, 1, 2>(1, (5, 4));
        check::<1, 1, 2, 2, 1, 3>(2, (3, 4));
    }

    #[test]
    fn conv_transpose2d_is_the_adjoint_of_conv2d() {
        // <conv(x), y> = <x, conv_transpose(y)> with shared kernels and no bias.
        let dev = Cpu::seed_from_u64(5);
        let mut conv = dev.build_module::<crate::nn::Conv2D<2, 3, 3, 2, 1>, f64>();
        let mut up = dev.build_module::<builder::ConvTranspose2D<3, 2, 3, 2, 1>, f64>();
        up.weight.copy_from(&conv.weight.as_vec());
        conv.bias.fill_with_zeros();
        up.bias.fill_with_zeros();
        let x: Tensor<Rank4<1, 2, 7, 7>, f64, _> = dev.sample_normal();
        let y: Tensor<Rank4<1, 3, 4, 4>, f64, _> = dev.sample_normal();
        let lhs = dot(&conv.forward(x.clone()).as_vec(), &y.as_vec());
        let rhs = dot(&x.as_vec(), &up.forward(y).as_vec());
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} != {rhs}");
    }

    #[test]
    fn conv_transpose2d_output_cut_away_by_padding_is_an_error() {
        let dev = Cpu::default();
        let up = dev.build_module::<builder::ConvTranspose2D<1, 1, 1, 1, 1>, f32>();
        let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.zeros_like(&(1, Const, 2, 2));
        assert!(up.try_forward(x).is_err());
    }
}

//! `Conv2D`: a 2-D convolution with a bias, as im2col (a gather) and one matmul.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::{BuildModule, BuildOnDevice, Module, NonMutableModule};
use dfdx::shapes::{Axes3, Axes4, Const, Dim, Dtype, HasShape, Rank1, Rank4};
use dfdx::tensor::{Storage, Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, Device, PermuteTo, ReshapeTo, TryAdd, TryMatMul};
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::window::{empty_output, shape_error, Images, Window};
use super::WindowDevice;

pub mod builder {
    /// A 2-D convolution with a bias: `IN` channels to `OUT` channels through a `KERNEL`×`KERNEL`
    /// window moved `STRIDE` pixels at a time over the image padded with `PADDING` zeros on each side,
    /// its taps `DILATION` pixels apart. PyTorch's `nn.Conv2d(IN, OUT, KERNEL, STRIDE, PADDING,
    /// DILATION)`.
    ///
    /// The module it builds, [`modules::Conv2D`](crate::nn::modules::Conv2D), has the parameters
    /// `weight` (`OUT × IN × KERNEL × KERNEL`) and `bias` (`OUT`), both drawn from
    /// `U(-1/√fan_in, 1/√fan_in)` with `fan_in = IN × KERNEL²`, as PyTorch does.
    ///
    /// Batches of images are `(batch, IN, height, width)` and a single image `(IN, height, width)`;
    /// height and width may be `usize` or `Const`. The output's height and width are `usize`, since
    /// stable Rust cannot compute them in a type: follow the image layers with
    /// [`Flatten`](crate::nn::Flatten) to get back to a `Const` width for `Linear`.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use fulgur_runtime::nn::{Conv2D, Flatten, MaxPool2D};
    ///
    /// // 8×8 → conv 3×3 → 6×6 → pool 2×2 → 3×3, with 4 channels: 36 features.
    /// type Net = (Conv2D<1, 4, 3>, ReLU, MaxPool2D<2>, Flatten<36>, Linear<36, 10>);
    /// let dev = Cpu::default();
    /// let net = dev.build_module::<Net, f32>();
    /// let x: Tensor<(usize, Const<1>, Const<8>, Const<8>), f32, _> =
    ///     dev.sample_normal_like(&(5, Const, Const, Const));
    /// let y = net.forward(x);
    /// assert_eq!(y.shape(), &(5, Const::<10>));
    /// ```
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Conv2D<
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
    > BuildOnDevice<D, E> for builder::Conv2D<I, O, K, S, P, L>
where
    E: Dtype,
    D: Device<E>,
    Conv2D<I, O, K, S, P, L, E, D>: BuildModule<D, E>,
{
    type Built = Conv2D<I, O, K, S, P, L, E, D>;
}

/// A built [`Conv2D`](builder::Conv2D): its weight and bias on a device.
#[derive(Debug, Clone)]
pub struct Conv2D<
    const IN: usize,
    const OUT: usize,
    const KERNEL: usize,
    const STRIDE: usize,
    const PADDING: usize,
    const DILATION: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// The kernels, `OUT × IN × KERNEL × KERNEL` (PyTorch's layout).
    pub weight: Tensor<Rank4<OUT, IN, KERNEL, KERNEL>, E, D>,
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
    > NonMutableModule for Conv2D<I, O, K, S, P, L, E, D>
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
    > TensorCollection<E, D> for Conv2D<I, O, K, S, P, L, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2D<I, O, K, S, P, L, E2, D2>;

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
                        let b = fan_in_bound::<E>(I * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_with(|t| {
                        let b = fan_in_bound::<E>(I * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
            ),
            |(weight, bias)| Conv2D { weight, bias },
        )
    }
}

/// PyTorch's bound for weights and biases: `1/√fan_in`.
pub(crate) fn fan_in_bound<E: Float>(fan_in: usize) -> E {
    E::one() / E::from(fan_in.max(1)).unwrap_or_else(E::one).sqrt()
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
    > Conv2D<I, O, K, S, P, L, E, D>
where
    E: Dtype,
    D: WindowDevice<E>,
{
    const WINDOW: Window = {
        assert!(K > 0, "`Conv2D`: the kernel size must be at least 1");
        assert!(S > 0, "`Conv2D`: the stride must be at least 1");
        assert!(L > 0, "`Conv2D`: the dilation must be at least 1");
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
        let (Some(oh), Some(ow)) = (win.out_len(h), win.out_len(w)) else {
            return Err(shape_error(
                x.device(),
                &format!(
                    "`Conv2D<{I}, {O}, {K}, {S}, {P}, {L}>`: a {h}×{w} input is smaller than \
                     the {span}×{span} window (padding {P} on each side)",
                    span = L * (K - 1) + 1
                ),
            ));
        };
        if b.size() == 0 {
            return empty_output(x, (b, Const::<O>, oh, ow));
        }
        let idx = win.indices((h, w), (oh, ow));
        // (B, OH·OW·K·K, I) → (B·OH·OW, K·K·I): one row per output pixel, its window's taps in columns.
        let cols = D::try_windows_channels_last(x, idx, E::default())?
            .try_reshape_like(&(b.size() * oh * ow, K * K * I))?;
        // The weight in the same column order: (O, I, K, K) → (K, K, I, O) → (K·K·I, O).
        let weight = self
            .weight
            .retaped::<T>()
            .try_permute::<_, Axes4<2, 3, 1, 0>>()?
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
    > Module<Tensor<(B, Const<I>, H, W), E, D, T>> for Conv2D<I, O, K, S, P, L, E, D>
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
    > Module<Tensor<(Const<I>, H, W), E, D, T>> for Conv2D<I, O, K, S, P, L, E, D>
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

    /// A `Conv2D<I, O, K, S, P, L>` on `batch` images of `h`×`w`: its output and the gradients its tape
    /// gives for the input, the weight and the bias, against the direct convolution and its hand-written
    /// backward pass, and against finite differences of the layer's own forward pass.
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
        let dev = Cpu::seed_from_u64(7);
        let conv = dev.build_module::<builder::Conv2D<I, O, K, S, P, L>, f64>();
        let (weight, bias) = (conv.weight.as_vec(), conv.bias.as_vec());
        let (xd, g) = ([batch, I, h, w], (S, P, L));
        let x_host = random(xd.iter().product(), 1);
        let shape = (batch, Const::<I>, h, w);
        let x = dev.tensor_from_vec(x_host.clone(), shape);

        let y = conv.forward(x.leaky_trace());
        let (want, yd) = reference::conv2d(&x_host, xd, &weight, (O, K), &bias, g);
        assert_eq!(*y.shape(), (batch, Const::<O>, yd[2], yd[3]));
        assert_close("output", &y.as_vec(), &want, 1e-12);

        let dy = random(want.len(), 2);
        let dy_t = dev.tensor_from_vec(dy.clone(), *y.shape());
        let grads = (y * dy_t).sum::<Rank0, _>().backward();
        let (dx, dw, db) = reference::conv2d_backward(&x_host, xd, &weight, (O, K), g, &dy);
        let (tape_dx, tape_dw, tape_db) = (
            grads.get(&x).as_vec(),
            grads.get(&conv.weight).as_vec(),
            grads.get(&conv.bias).as_vec(),
        );
        assert_close("input gradient", &tape_dx, &dx, 1e-12);
        assert_close("weight gradient", &tape_dw, &dw, 1e-12);
        assert_close("bias gradient", &tape_db, &db, 1e-12);

        let loss = |conv: &super::Conv2D<I, O, K, S, P, L, f64, Cpu>, x: &[f64]| {
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
        assert_close(
            "input gradient (finite differences)",
            &tape_dx,
            &fd_dx,
            1e-6,
        );
        assert_close(
            "weight gradient (finite differences)",
            &tape_dw,
            &fd_dw,
            1e-6,
        );
        assert_close("bias gradient (finite differences)", &tape_db, &fd_db, 1e-6);
    }

    #[test]
    fn conv2d_odd_sizes_match_direct_convolution() {
        check::<3, 4, 3, 1, 0, 1>(2, (7, 6));
        check::<2, 3, 1, 1, 0, 1>(3, (3, 5));
    }

    #[test]
    fn conv2d_stride_and_padding_match_direct_convolution_on_a_batch_of_one() {
        check::<2, 3, 3, 2, 1, 1>(1, (7, 9));
        check::<3, 2, 5, 1, 2, 1>(1, (5, 5));
        // A stride larger than the kernel skips pixels.
        check::<1, 2, 2, 3, 0, 1>(2, (8, 7));
    }

    #[test]
    fn conv2d_dilation_matches_direct_convolution() {
        check::<2, 2, 2, 3, 2, 2>(2, (9, 8));
        check::<1, 3, 3, 1, 1, 2>(1, (6, 7));
    }

    #[test]
    fn conv2d_takes_const_sizes_and_single_images() {
        let dev = Cpu::seed_from_u64(0);
        let conv = dev.build_module::<builder::Conv2D<2, 3, 3, 1, 1>, f64>();
        let x: Tensor<Rank4<1, 2, 5, 4>, f64, _> = dev.sample_normal();
        let batched = conv.forward(x.clone()).as_vec();
        assert_eq!(
            conv.forward(x.clone().reshape::<Rank3<2, 5, 4>>()).as_vec(),
            batched
        );
        let dynamic = x.clone().reshape_like(&(1, Const::<2>, 5, 4));
        assert_eq!(conv.forward(dynamic).as_vec(), batched);
        let single: Tensor<(Const<3>, usize, usize), f64, _> =
            conv.forward(x.reshape::<Rank3<2, 5, 4>>());
        assert_eq!(single.shape(), &(Const::<3>, 5, 4));
    }

    #[test]
    fn conv2d_input_smaller_than_its_window_is_an_error() {
        let dev = Cpu::default();
        let conv = dev.build_module::<builder::Conv2D<1, 1, 5>, f32>();
        let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.zeros_like(&(2, Const, 4, 9));
        assert!(conv.try_forward(x).is_err());
    }

    #[test]
    fn conv2d_parameters_are_named_and_initialised_like_pytorch() {
        let dev = Cpu::seed_from_u64(3);
        let conv = dev.build_module::<builder::Conv2D<2, 4, 3>, f32>();
        let names: Vec<String> = crate::module::state_dict::<_, Cpu>(&conv)
            .expect("on the cpu")
            .into_iter()
            .map(|(name, t)| format!("{name} {:?}", t.shape()))
            .collect();
        assert_eq!(names, ["bias [4]", "weight [4, 2, 3, 3]"]);
        // U(-1/√18, 1/√18), and not all zero.
        let bound = 1.0 / 18f32.sqrt();
        let values = [conv.weight.as_vec(), conv.bias.as_vec()].concat();
        assert!(values.iter().all(|v| v.abs() <= bound));
        assert!(values.iter().any(|v| v.abs() > bound / 2.0));
    }
}

//! `Flatten`: images to feature vectors, for the `Linear` layers after the convolutions.

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Const, Dim, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

use super::window::{empty_output, shape_error};

/// Flattens `(batch, channels, height, width)` to `(batch, FEATURES)` and `(channels, height, width)`
/// to `(FEATURES,)`, in PyTorch's order (channel, then row, then column).
///
/// `FEATURES` is written in the type so that a dfdx `Linear<FEATURES, _>` can follow: the image layers'
/// heights and widths are run-time sizes on stable Rust (computing them in a type needs the unstable
/// `generic_const_exprs`, which is why dfdx's own `Flatten2D` is nightly-only). A forward pass whose
/// `channels × height × width` differs from `FEATURES` returns dfdx's `WrongNumElements` error and
/// prints on standard error the size it found, so the first batch tells what to write.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::Flatten;
///
/// let dev = Cpu::default();
/// let x: Tensor<(usize, usize, usize, usize), f32, _> = dev.zeros_like(&(4, 3, 2, 2));
/// let y = Flatten::<12>::default().forward(x);
/// assert_eq!(y.shape(), &(4, Const::<12>));
///
/// // 3 × 2 × 2 is not 10: an error, not a panic.
/// let x: Tensor<(usize, usize, usize, usize), f32, _> = dev.zeros_like(&(4, 3, 2, 2));
/// assert!(Flatten::<10>::default().try_forward(x).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten<const FEATURES: usize>;

impl<const N: usize> ZeroSizedModule for Flatten<N> {}

impl<const N: usize> NonMutableModule for Flatten<N> {}

fn check<const N: usize, E: Dtype, D: Device<E>>(
    dev: &D,
    (c, h, w): (usize, usize, usize),
) -> Result<(), D::Err> {
    let found = c * h * w;
    if found == N {
        return Ok(());
    }
    let message = format!(
        "`Flatten<{N}>`: the input has {c}×{h}×{w} = {found} features per sample, not {N}; \
         write `Flatten<{found}>` and a `Linear<{found}, _>` after it"
    );
    Err(shape_error(dev, &message))
}

impl<const N: usize, B, C, H, W, E, D, T> Module<Tensor<(B, C, H, W), E, D, T>> for Flatten<N>
where
    B: Dim,
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, Const<N>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, c, h, w) = *x.shape();
        check::<N, E, D>(x.device(), (c.size(), h.size(), w.size()))?;
        if b.size() == 0 {
            return empty_output(x, (b, Const::<N>));
        }
        x.try_reshape_like(&(b, Const::<N>))
    }
}

impl<const N: usize, C, H, W, E, D, T> Module<Tensor<(C, H, W), E, D, T>> for Flatten<N>
where
    C: Dim,
    H: Dim,
    W: Dim,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(Const<N>,), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(C, H, W), E, D, T>) -> Result<Self::Output, D::Err> {
        let (c, h, w) = *x.shape();
        check::<N, E, D>(x.device(), (c.size(), h.size(), w.size()))?;
        x.try_reshape_like(&(Const::<N>,))
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::Flatten;

    #[test]
    fn flatten_orders_channel_then_row_then_column_and_passes_gradients() {
        let dev = Cpu::default();
        let x = dev.tensor([[[[1.0f32, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]]);
        let x = x.reshape_like(&(1, 2, 2, 2));
        let y = Flatten::<8>.forward(x.leaky_trace());
        assert_eq!(y.shape(), &(1, Const::<8>));
        assert_eq!(y.as_vec(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let w = dev.tensor_from_vec((1..=8).map(|v| v as f32).collect(), (1, Const::<8>));
        let grads = (y * w).sum::<Rank0, _>().backward();
        assert_eq!(
            grads.get(&x).as_vec(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
    }

    #[test]
    fn flatten_takes_single_images() {
        let dev = Cpu::default();
        let x: Tensor<Rank3<2, 3, 4>, f32, _> = dev.sample_normal();
        let y = Flatten::<24>.forward(x.clone());
        assert_eq!(y.as_vec(), x.as_vec());
        assert_eq!(y.shape(), &(Const::<24>,));
    }

    #[test]
    fn flatten_of_the_wrong_size_is_an_error_not_a_panic() {
        let dev = Cpu::default();
        let x: Tensor<(usize, Const<3>, usize, usize), f32, _> = dev.zeros_like(&(4, Const, 2, 2));
        assert!(Flatten::<10>.try_forward(x.clone()).is_err());
        let x: Tensor<Rank3<3, 2, 2>, f32, _> = dev.zeros();
        assert!(Flatten::<13>.try_forward(x).is_err());
    }
}

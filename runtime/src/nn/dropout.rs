//! `Dropout` and `DropoutOneIn` whose masks are a function of the run, not of the device's RNG, so that
//! a run killed and resumed from a checkpoint is bit-identical to one that never stopped.
//!
//! dfdx's own dropout draws from the device's generator, whose state no checkpoint holds. Here the mask
//! of one call is drawn from SplitMix64 (fixed on every platform) keyed by three numbers the checkpoint
//! does hold or that replay identically: the trainer's seed, the number of training batches before this
//! one in the whole run, and the call's position among the dropout calls of the step. The trainer sets
//! the first two around each `training_step` through a [`DropoutScope`].

use std::any::type_name;
use std::cell::Cell;
use std::marker::PhantomData;

use dfdx::nn::tensor_collection::{
    ModuleFields, ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions,
};
use dfdx::nn::{BuildOnDevice, Module, ModuleMut, ZeroSizedModule};
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{Merge, NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{Device, TryMul};
use num_traits::NumCast;

use super::window::shape_error;
use crate::data::SplitMix64;

thread_local! {
    static SCOPE: Cell<Option<Key>> = const { Cell::new(None) };
    // Calls outside any scope: a per-thread counter, so successive masks differ.
    static LOOSE_CALLS: Cell<u64> = const { Cell::new(0) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    seed: u64,
    batch: u64,
    next_position: u64,
}

/// While alive, the dropout layers of [`nn`](super) on this thread draw their masks for batch `batch`
/// of a run seeded `seed`: the `n`-th dropout call (from 0) gets the mask [`keep_mask`]`(seed, batch,
/// n, p, len)`.
///
/// The [`Trainer`](crate::trainer::Trainer) enters one around each `training_step`, with its seed and
/// the number of training batches before this one in the whole run (both saved in every checkpoint), so
/// a resumed run replays the masks of an uninterrupted one. A hand-written loop can do the same. Outside
/// any scope the masks come from a per-thread sequence that starts afresh in every process, which is
/// random enough for training but not reproduced on resume.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::{Dropout, DropoutScope};
///
/// let dev = Cpu::default();
/// let mut drop = Dropout { p: 0.5 };
/// let x: Tensor<Rank1<64>, f32, _> = dev.ones();
/// let mut masks = Vec::new();
/// for _ in 0..2 {
///     let _scope = DropoutScope::enter(7, 3);
///     masks.push(drop.forward_mut(x.leaky_trace()).as_vec());
/// }
/// assert_eq!(masks[0], masks[1]); // same seed, same batch, same position
/// ```
#[derive(Debug)]
#[must_use = "the scope ends when this value is dropped"]
pub struct DropoutScope {
    previous: Option<Key>,
    // The scope lives in a thread-local: it must end on the thread that entered it.
    _not_send: PhantomData<*const ()>,
}

impl DropoutScope {
    /// Starts batch `batch` of a run seeded `seed` on this thread; the previous scope, if any, comes
    /// back when this one is dropped.
    pub fn enter(seed: u64, batch: u64) -> Self {
        let key = Key {
            seed,
            batch,
            next_position: 0,
        };
        Self {
            previous: SCOPE.with(|s| s.replace(Some(key))),
            _not_send: PhantomData,
        }
    }
}

impl Drop for DropoutScope {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.previous));
    }
}

/// `(seed, batch, position)` of the next dropout call on this thread.
fn next_call() -> (u64, u64, u64) {
    SCOPE.with(|s| match s.get() {
        Some(mut key) => {
            let position = key.next_position;
            key.next_position += 1;
            s.set(Some(key));
            (key.seed, key.batch, position)
        }
        None => LOOSE_CALLS.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            (0, u64::MAX, n)
        }),
    })
}

/// Which of `len` elements the dropout call at `position` of batch `batch`, in a run seeded `seed`,
/// keeps (`true`) at probability `p` of dropping. A pure function: the same arguments give the same
/// mask on every platform and in every process.
///
/// Each element is dropped when 53 random bits from SplitMix64, read as a fraction of one, fall below
/// `p`: `p = 0` keeps all, `p = 1` drops all.
pub fn keep_mask(seed: u64, batch: u64, position: u64, p: f64, len: usize) -> Vec<bool> {
    // Each SplitMix64 output is a bijection of its state, so distinct keys give distinct streams.
    let mut h = SplitMix64::new(seed).next_u64();
    h = SplitMix64::new(h ^ batch).next_u64();
    h = SplitMix64::new(h ^ position).next_u64();
    let mut rng = SplitMix64::new(h);
    let threshold = (p.clamp(0.0, 1.0) * (1u64 << 53) as f64) as u64;
    (0..len)
        .map(|_| rng.next_u64() >> 11 >= threshold)
        .collect()
}

/// Multiplies `x` by the next mask: kept elements scaled by `1 / (1 - p)`, dropped ones zero.
fn drop_out<S, E, D, T>(x: Tensor<S, E, D, T>, p: f64) -> Result<Tensor<S, E, D, T>, D::Err>
where
    S: Shape,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<NoneTape>,
{
    if !(0.0..=1.0).contains(&p) {
        let message = format!("`fulgur::nn::Dropout`: `p` is {p}, expected a probability in 0..=1");
        return Err(shape_error::<E, D>(x.device(), &message));
    }
    // Identity, and no call position used: p = 0 is the same as no layer.
    if p == 0.0 {
        return Ok(x);
    }
    let (seed, batch, position) = next_call();
    let shape = *x.shape();
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let (Some(kept), Some(zero)) = (E::from_f64(scale), E::from_f64(0.0)) else {
        let message = format!(
            "`fulgur::nn::Dropout`: the scale {scale} does not fit `{}`",
            type_name::<E>()
        );
        return Err(shape_error::<E, D>(x.device(), &message));
    };
    let values = keep_mask(seed, batch, position, p, shape.num_elements())
        .into_iter()
        .map(|keep| if keep { kept } else { zero })
        .collect();
    let mask = x.device().try_tensor_from_vec(values, shape)?;
    x.try_mul(mask)
}

/// Dropout with probability `1 / N`, whose masks resume exactly (see [`Dropout`]); dfdx's
/// `DropoutOneIn` with the same API.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::DropoutOneIn;
///
/// let dev = Cpu::default();
/// let mut drop: DropoutOneIn<2> = dev.build_module::<DropoutOneIn<2>, f32>();
/// let x: Tensor<Rank1<8>, f32, _> = dev.ones();
/// let y = drop.forward_mut(x.leaky_trace()).as_vec();
/// assert!(y.iter().all(|v| *v == 0.0 || *v == 2.0));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DropoutOneIn<const N: usize>;

impl<const N: usize> ZeroSizedModule for DropoutOneIn<N> {}

impl<const N: usize, S: Shape, E: Dtype, D: Device<E>> Module<Tensor<S, E, D, NoneTape>>
    for DropoutOneIn<N>
{
    type Output = Tensor<S, E, D, NoneTape>;
    type Error = D::Err;

    /// The identity: evaluation does not drop.
    fn try_forward(&self, input: Tensor<S, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
        Ok(input)
    }
}

impl<const N: usize, S: Shape, E: Dtype, D: Device<E>> ModuleMut<Tensor<S, E, D, OwnedTape<E, D>>>
    for DropoutOneIn<N>
{
    type Output = Tensor<S, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    /// Drops with probability `1 / N`, scaling what it keeps by `N / (N - 1)`.
    fn try_forward_mut(
        &mut self,
        input: Tensor<S, E, D, OwnedTape<E, D>>,
    ) -> Result<Self::Output, D::Err> {
        drop_out(input, 1.0 / N as f64)
    }
}

/// Dropout whose masks resume exactly: dfdx's `Dropout` (same field `p`, default 0.5, the identity in
/// `forward`, drops in `forward_mut` on a traced input), with masks from [`keep_mask`] keyed by the
/// trainer's seed, the batch's number in the run and the layer's position among the step's dropout
/// calls (see [`DropoutScope`]).
///
/// A run with these layers, killed and resumed from a checkpoint, is bit-identical to one that never
/// stopped; with dfdx's `Dropout` it is not, and `fit` warns when resuming such a module.
///
/// ```
/// use dfdx::prelude::*;
/// use fulgur_runtime::nn::Dropout;
///
/// type Mlp = (Linear<4, 8>, ReLU, Dropout, Linear<8, 2>);
/// let dev = Cpu::default();
/// let mut net = dev.build_module::<Mlp, f32>();
/// net.2.p = 0.25;
/// let x: Tensor<Rank2<3, 4>, f32, _> = dev.sample_normal();
/// // Evaluation: no dropout, the same output twice.
/// assert_eq!(net.forward(x.clone()).as_vec(), net.forward(x.clone()).as_vec());
/// // Training: a traced input; some hidden units are dropped, gradients flow through the others.
/// let grads = net.alloc_grads();
/// let loss = net.forward_mut(x.traced(grads)).square().mean::<(), _>();
/// let grads = loss.backward();
/// assert!(grads.get(&net.0.weight).as_vec().iter().any(|g| *g != 0.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// The probability of dropping each element.
    pub p: f32,
}

impl Default for Dropout {
    /// `p = 0.5`, as dfdx's.
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl<E: Dtype, D: Device<E>> BuildOnDevice<D, E> for Dropout {
    type Built = Dropout;
}

impl<E: Dtype, D: Device<E>> TensorCollection<E, D> for Dropout {
    type To<E2: Dtype, D2: Device<E2>> = Dropout;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            <Self as TensorCollection<E, D>>::scalar(
                "p",
                |s| &s.p,
                |s| &mut s.p,
                ScalarOptions::from_default(0.5),
            ),
            |p| Dropout { p },
        )
    }
}

impl<S: Shape, E: Dtype, D: Device<E>> Module<Tensor<S, E, D, NoneTape>> for Dropout {
    type Output = Tensor<S, E, D, NoneTape>;
    type Error = D::Err;

    /// The identity: evaluation does not drop.
    fn try_forward(&self, input: Tensor<S, E, D, NoneTape>) -> Result<Self::Output, D::Err> {
        Ok(input)
    }
}

impl<S: Shape, E: Dtype, D: Device<E>> ModuleMut<Tensor<S, E, D, OwnedTape<E, D>>> for Dropout {
    type Output = Tensor<S, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    /// Drops each element with probability `p`, scaling what it keeps by `1 / (1 - p)`.
    fn try_forward_mut(
        &mut self,
        input: Tensor<S, E, D, OwnedTape<E, D>>,
    ) -> Result<Self::Output, D::Err> {
        drop_out(input, <f64 as From<f32>>::from(self.p))
    }
}

/// The layers of `M` whose randomness no checkpoint holds, so that resuming a run that uses them is not
/// bit-exact: each as `path (type)`, e.g. ``net.2 (`dfdx::nn::dropout::Dropout`)``.
///
/// Found by walking `M`'s [`TensorCollection`] and reading each field's type name: today dfdx 0.13's
/// `Dropout` and `DropoutOneIn<N>` (defined in `dfdx::nn::dropout`), the only dfdx layers that draw
/// random numbers in a forward pass. A direct call of the `dropout` tensor operation in a step is not a
/// field and is not found.
pub fn unresumable_layers<M: TensorCollection<f32, D>, D: Device<f32>>() -> Vec<String> {
    let mut walker = TypeWalker {
        path: Vec::new(),
        found: Vec::new(),
    };
    let _ = M::iter_tensors(&mut walker);
    walker.found
}

const UNRESUMABLE: &[&str] = &["dfdx::nn::dropout::"];

struct TypeWalker {
    path: Vec<String>,
    found: Vec<String>,
}

impl<T: TensorCollection<E, D>, E: Dtype, D: Device<E>> ModuleVisitor<T, E, D> for TypeWalker {
    type Err = ();
    type E2 = E;
    type D2 = D;

    fn visit_module<Field, GetRef, GetMut>(
        &mut self,
        name: &str,
        _: GetRef,
        _: GetMut,
    ) -> Result<Option<Field::To<E, D>>, ()>
    where
        GetRef: FnMut(&T) -> &Field,
        GetMut: FnMut(&mut T) -> &mut Field,
        Field: TensorCollection<E, D>,
    {
        self.path.push(name.to_string());
        // A prefix, not a substring: a tuple's name contains its layers' names.
        let ty = type_name::<Field>();
        if UNRESUMABLE.iter().any(|p| ty.starts_with(p)) {
            let path = self.path.join(".");
            let ty = ty.split('<').next().unwrap_or(ty);
            self.found.push(format!("{path} (`{ty}`)"));
        }
        let _ = Field::iter_tensors(self);
        self.path.pop();
        Ok(None)
    }

    fn visit_tensor<S: Shape, GetRef, GetMut>(
        &mut self,
        _: &str,
        _: GetRef,
        _: GetMut,
        _: TensorOptions<S, E, D>,
    ) -> Result<Option<Tensor<S, E, D>>, ()>
    where
        GetRef: FnMut(&T) -> &Tensor<S, E, D>,
        GetMut: FnMut(&mut T) -> &mut Tensor<S, E, D>,
    {
        Ok(None)
    }

    fn visit_scalar<N, GetRef, GetMut>(
        &mut self,
        _: &str,
        _: GetRef,
        _: GetMut,
        _: ScalarOptions<N>,
    ) -> Result<Option<N>, ()>
    where
        N: NumCast,
        GetRef: FnMut(&T) -> &N,
        GetMut: FnMut(&mut T) -> &mut N,
    {
        Ok(None)
    }

    fn visit_fields<M: ModuleFields<T, E, D>>(
        &mut self,
        fields: M,
        _: impl FnOnce(M::Output<E, D>) -> T::To<E, D>,
    ) -> Result<Option<T::To<E, D>>, ()> {
        fields.visit_fields(self)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    // Named imports win over the prelude's glob, which has dfdx's `Dropout` and `DropoutOneIn`.
    use super::{keep_mask, unresumable_layers, Dropout, DropoutOneIn, DropoutScope};

    fn masked(drop: &mut Dropout, len: usize) -> Vec<f32> {
        let dev = Cpu::default();
        let x: Tensor<(usize,), f32, _> = dev.ones_like(&(len,));
        drop.forward_mut(x.leaky_trace()).as_vec()
    }

    #[test]
    fn the_mask_depends_only_on_seed_batch_and_position() {
        let mask = |seed, batch, position| keep_mask(seed, batch, position, 0.5, 256);
        let base = mask(1, 2, 3);
        assert_eq!(base, mask(1, 2, 3));
        assert_ne!(base, mask(9, 2, 3), "seed");
        assert_ne!(base, mask(1, 9, 3), "batch");
        assert_ne!(base, mask(1, 2, 9), "position");

        // Through the layers: whichever layer objects make the calls, and whatever calls came before
        // outside a scope, the same scope gives the same masks, position by position.
        let run = || {
            let _scope = DropoutScope::enter(1, 2);
            let (mut a, mut b) = (Dropout { p: 0.5 }, Dropout { p: 0.5 });
            [
                masked(&mut a, 256),
                masked(&mut b, 256),
                masked(&mut a, 256),
            ]
        };
        let first = run();
        let loose = masked(&mut Dropout::default(), 256);
        assert_ne!(
            loose,
            masked(&mut Dropout::default(), 256),
            "unscoped calls vary"
        );
        assert_eq!(first, run());
        for (position, m) in first.iter().enumerate() {
            let expected: Vec<f32> = keep_mask(1, 2, position as u64, 0.5, 256)
                .into_iter()
                .map(|k| if k { 2.0 } else { 0.0 })
                .collect();
            assert_eq!(m, &expected, "position {position}");
        }
        assert_ne!(first[0], first[1]);
    }

    #[test]
    fn scopes_nest_and_restore() {
        let outer = DropoutScope::enter(1, 0);
        let a = masked(&mut Dropout::default(), 128);
        {
            let _inner = DropoutScope::enter(1, 1);
            masked(&mut Dropout::default(), 128);
        }
        // Position 1 of batch 0, not 0 again and not batch 1.
        let b = masked(&mut Dropout::default(), 128);
        drop(outer);
        let expected: Vec<f32> = keep_mask(1, 0, 1, 0.5, 128)
            .into_iter()
            .map(|k| if k { 2.0 } else { 0.0 })
            .collect();
        assert_eq!(b, expected);
        assert_ne!(a, b);
    }

    #[test]
    fn zero_is_the_identity_and_evaluation_never_drops() {
        let dev = Cpu::default();
        let x: Tensor<Rank2<4, 8>, f32, _> = dev.sample_normal();
        let _scope = DropoutScope::enter(3, 4);
        let mut zero = Dropout { p: 0.0 };
        assert_eq!(zero.forward_mut(x.leaky_trace()).as_vec(), x.as_vec());
        let half = Dropout { p: 0.5 };
        assert_eq!(half.forward(x.clone()).as_vec(), x.as_vec());
        let one_in = DropoutOneIn::<2>;
        assert_eq!(one_in.forward(x.clone()).as_vec(), x.as_vec());
        // p = 0 used no position: the next layer gets position 0.
        let y = masked(&mut Dropout { p: 0.5 }, 64);
        assert_eq!(
            y.iter().map(|v| *v != 0.0).collect::<Vec<_>>(),
            keep_mask(3, 4, 0, 0.5, 64)
        );
    }

    #[test]
    fn the_fraction_dropped_is_p_and_kept_values_are_scaled() {
        let _scope = DropoutScope::enter(11, 0);
        let n = 100_000;
        for p in [0.1f32, 0.25, 0.5, 0.9] {
            let y = masked(&mut Dropout { p }, n);
            let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
            // Binomial standard deviation is at most 0.0016 here; 0.01 is over six of them.
            assert!(
                (dropped - f64::from(p)).abs() < 0.01,
                "p = {p}: {dropped} dropped"
            );
            let scale = 1.0 / (1.0 - p);
            assert!(y.iter().all(|v| *v == 0.0 || *v == scale), "p = {p}");
        }
        let all = masked(&mut Dropout { p: 1.0 }, 64);
        assert!(all.iter().all(|v| *v == 0.0));

        let dev = Cpu::default();
        let x: Tensor<Rank1<30_000>, f32, _> = dev.ones();
        let y = DropoutOneIn::<4>.forward_mut(x.leaky_trace()).as_vec();
        let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / 30_000.0;
        assert!((dropped - 0.25).abs() < 0.015, "{dropped}");
        assert!(y.iter().all(|v| *v == 0.0 || *v == 4.0 / 3.0));
    }

    #[test]
    fn gradients_flow_through_the_kept_elements_only() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<64>, f32, _> = dev.ones();
        let _scope = DropoutScope::enter(5, 5);
        let y = Dropout { p: 0.5 }.forward_mut(x.leaky_trace());
        let kept = y.as_vec();
        let g = y.sum().backward();
        assert_eq!(g.get(&x).as_vec(), kept);
    }

    #[test]
    fn a_probability_outside_zero_to_one_is_an_error() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<4>, f32, _> = dev.ones();
        for p in [-0.1f32, 1.5, f32::NAN] {
            assert!(
                Dropout { p }.try_forward_mut(x.leaky_trace()).is_err(),
                "{p}"
            );
        }
    }

    #[test]
    fn dfdx_dropout_layers_are_found_by_path_and_fulgur_ones_are_not() {
        type Net = (
            (Linear<2, 4>, dfdx::nn::builders::Dropout),
            (
                Dropout,
                ReLU,
                dfdx::nn::builders::DropoutOneIn<3>,
                DropoutOneIn<2>,
            ),
            Linear<4, 1>,
        );
        let found = unresumable_layers::<Built<Net, Cpu>, Cpu>();
        assert_eq!(
            found,
            [
                "0.1 (`dfdx::nn::dropout::Dropout`)",
                "1.2 (`dfdx::nn::dropout::DropoutOneIn`)",
            ]
        );
        type Clean = (Linear<2, 4>, Dropout, DropoutOneIn<2>, Linear<4, 1>);
        assert!(unresumable_layers::<Built<Clean, Cpu>, Cpu>().is_empty());
    }

    type Built<M, D> = <M as dfdx::nn::BuildOnDevice<D, f32>>::Built;
}

//! `fulgur::nn`'s convolutions against a naive direct convolution, forward and backward, alone and in a
//! LeNet-sized network.
//!
//! `cargo bench --bench conv` measures, on batches of 64 images of 28×28 and with criterion, a training
//! step's forward and backward pass (no optimizer update) through LeNet-5: conv 1→6 5×5 (padding 2),
//! ReLU, max pool 2, conv 6→16 5×5, ReLU, max pool 2, then 400 → 120 → 84 → 10. Once with
//! `fulgur::nn::Conv2D` (im2col loops that collect every window's pixels, then one matmul; the backward
//! pass on dfdx's tape), once with a naive direct convolution (seven nested loops forward, the same
//! loops backward, plugged into dfdx's tape by hand: what a user writes without `fulgur::nn`); every
//! other layer is the same. Then each convolution alone, forward and backward. It ends with medians
//! of runs timed here, back to back, and the ratios naive / fulgur.
//!
//! Without `--bench` (as under `cargo test --benches`) it runs everything once on a batch of 2 and
//! checks that both convolutions give the same outputs and gradients. `FULGUR_BENCH_RUNS` sets the
//! number of timed runs per operation in the summary (default 20); a criterion filter that matches
//! nothing (`cargo bench --bench conv -- none`) runs the summary alone, and `FULGUR_BENCH_ONLY=conv1`
//! keeps in it only the operations whose label contains `conv1` (to profile one of them).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fulgur::dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use fulgur::dfdx::nn::{BuildOnDevice, Module, NonMutableModule, ZeroGrads};
use fulgur::dfdx::prelude::*;
use fulgur::nn::{Conv2D, Flatten, MaxPool2D};

const BATCH: usize = 64;
const RUNS: usize = 20;

/// LeNet-5 on 28×28 images, with the convolutions `C1` and `C2`.
type LeNet<C1, C2> = (
    (C1, ReLU, MaxPool2D<2>),
    (C2, ReLU, MaxPool2D<2>),
    (
        Flatten<400>,
        Linear<400, 120>,
        ReLU,
        Linear<120, 84>,
        ReLU,
        Linear<84, 10>,
    ),
);
type Ours = LeNet<Conv2D<1, 6, 5, 1, 2>, Conv2D<6, 16, 5>>;
type Naive = LeNet<NaiveConv<1, 6, 5, 2>, NaiveConv<6, 16, 5, 0>>;

type Images<const C: usize> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu>;

/// A labelled operation of the benchmark.
type Op<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let batch = if bench_mode { BATCH } else { 2 };
    let dev = Cpu::seed_from_u64(0);
    let mut ours = dev.build_module::<Ours, f32>();
    let mut naive = dev.build_module::<Naive, f32>();
    copy_weights(&ours, &mut naive);

    let images: Images<1> = dev.sample_normal_like(&(batch, Const, 28, 28));
    let labels: Vec<usize> = (0..batch).map(|i| i * 7 % 10).collect();
    let mut one_hot = vec![0.0f32; batch * 10];
    for (row, label) in labels.iter().enumerate() {
        one_hot[row * 10 + label] = 1.0;
    }
    let targets = dev.tensor_from_vec(one_hot, (batch, Const::<10>));
    // The second convolution's input: what the first block outputs.
    let pooled: Images<6> = dev.sample_normal_like(&(batch, Const, 14, 14));

    if !bench_mode {
        check_same(&ours, &naive, &images, &targets);
    }

    let (mut grads_ours, mut grads_naive) = (None, None);
    let (conv1, naive1) = (ours.0 .0.clone(), naive.0 .0.clone());
    let (conv2, naive2) = (ours.1 .0.clone(), naive.1 .0.clone());
    let mut ops: Vec<Op> = vec![
        (
            "lenet fulgur::nn",
            Box::new(|| step(&mut ours, &mut grads_ours, &images, &targets)),
        ),
        (
            "lenet naive direct conv",
            Box::new(|| step(&mut naive, &mut grads_naive, &images, &targets)),
        ),
        ("conv1 fulgur::nn", Box::new(|| conv_step(&conv1, &images))),
        (
            "conv1 naive direct conv",
            Box::new(|| conv_step(&naive1, &images)),
        ),
        ("conv2 fulgur::nn", Box::new(|| conv_step(&conv2, &pooled))),
        (
            "conv2 naive direct conv",
            Box::new(|| conv_step(&naive2, &pooled)),
        ),
    ];

    if let Ok(only) = std::env::var("FULGUR_BENCH_ONLY") {
        ops.retain(|(label, _)| label.contains(only.as_str()));
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group(format!("forward+backward, batch {batch}"));
    for (label, op) in ops.iter_mut() {
        group.bench_function(*label, |b| b.iter(&mut *op));
    }
    group.finish();
    c.final_summary();

    let runs = match std::env::var("FULGUR_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        Some(runs) if bench_mode => runs,
        _ if bench_mode => RUNS,
        _ => 1,
    };
    let medians: Vec<f64> = ops
        .iter_mut()
        .map(|(_, op)| {
            op();
            let mut times: Vec<f64> = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    op();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        })
        .collect();
    println!(
        "\nforward + backward, batch of {batch}, f32 on the CPU ({} rayon threads); medians of {runs} runs",
        rayon_threads()
    );
    for ((label, _), m) in ops.iter().zip(&medians) {
        println!("{label:<26} {:>9.3} ms", m * 1e3);
    }
    let median_of = |label: String| {
        let i = ops.iter().position(|(l, _)| *l == label)?;
        Some(medians[i])
    };
    println!("\nnaive / fulgur::nn (above 1: fulgur::nn is faster)");
    for (op, what) in [
        ("lenet", "LeNet-5"),
        ("conv1", "conv1 1→6, 5×5, 28×28"),
        ("conv2", "conv2 6→16, 5×5, 14×14"),
    ] {
        let fulgur = median_of(format!("{op} fulgur::nn"));
        let naive = median_of(format!("{op} naive direct conv"));
        if let (Some(fulgur), Some(naive)) = (fulgur, naive) {
            println!("{what:<26} {:>9.2}×", naive / fulgur);
        }
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism().map_or_else(|_| "?".into(), |n| n.to_string())
    })
}

/// One training step without the update: forward with the tape, cross-entropy, backward.
fn step<M>(
    net: &mut M,
    grads: &mut Option<Gradients<f32, Cpu>>,
    images: &Images<1>,
    targets: &Tensor<(usize, Const<10>), f32, Cpu>,
) where
    M: ZeroGrads<f32, Cpu>
        + ModuleMut<
            Tensor<(usize, Const<1>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<10>), f32, Cpu, OwnedTape<f32, Cpu>>,
        >,
    <M as ModuleMut<Tensor<(usize, Const<1>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>>>::Error:
        std::fmt::Debug,
{
    let g = grads.take().unwrap_or_else(|| net.alloc_grads());
    let logits = net.forward_mut(images.clone().traced(g));
    let loss = cross_entropy_with_logits_loss(logits, targets.clone());
    let mut g = loss.backward();
    black_box(&g);
    net.zero_grads(&mut g);
    *grads = Some(g);
}

/// One convolution forward with a tape and backward from the sum of its outputs.
fn conv_step<M, const C: usize, const O: usize>(conv: &M, x: &Images<C>)
where
    M: Module<
        Tensor<(usize, Const<C>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
        Output = Tensor<(usize, Const<O>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
    >,
    M::Error: std::fmt::Debug,
{
    let y = conv.forward(x.leaky_trace());
    black_box(y.sum::<Rank0, _>().backward());
}

/// Both networks compute the same thing: outputs and every gradient agree.
fn check_same(
    ours: &<Ours as BuildOnDevice<Cpu, f32>>::Built,
    naive: &<Naive as BuildOnDevice<Cpu, f32>>::Built,
    images: &Images<1>,
    targets: &Tensor<(usize, Const<10>), f32, Cpu>,
) {
    let close = |what: &str, a: Vec<f32>, b: Vec<f32>| {
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-4,
            "{what}: naive and fulgur::nn differ by {worst}"
        );
    };
    let a = ours.forward(images.leaky_trace());
    let b = naive.forward(images.leaky_trace());
    close("logits", a.as_vec(), b.as_vec());
    let ga = cross_entropy_with_logits_loss(a, targets.clone()).backward();
    let gb = cross_entropy_with_logits_loss(b, targets.clone()).backward();
    close(
        "input gradient",
        ga.get(images).as_vec(),
        gb.get(images).as_vec(),
    );
    close(
        "conv1 weight gradient",
        ga.get(&ours.0 .0.weight).as_vec(),
        gb.get(&naive.0 .0.weight).as_vec(),
    );
    close(
        "conv2 bias gradient",
        ga.get(&ours.1 .0.bias).as_vec(),
        gb.get(&naive.1 .0.bias).as_vec(),
    );
    close(
        "linear weight gradient",
        ga.get(&ours.2 .1.weight).as_vec(),
        gb.get(&naive.2 .1.weight).as_vec(),
    );
}

fn copy_weights(
    ours: &<Ours as BuildOnDevice<Cpu, f32>>::Built,
    naive: &mut <Naive as BuildOnDevice<Cpu, f32>>::Built,
) {
    naive.0 .0.weight.copy_from(&ours.0 .0.weight.as_vec());
    naive.0 .0.bias.copy_from(&ours.0 .0.bias.as_vec());
    naive.1 .0.weight.copy_from(&ours.1 .0.weight.as_vec());
    naive.1 .0.bias.copy_from(&ours.1 .0.bias.as_vec());
    naive.2 = ours.2.clone();
}

/// The baseline: a stride-1 convolution with `P` zero padding, as direct loops over host vectors,
/// forward and backward, recorded on dfdx's tape by hand.
#[derive(Debug, Clone, Copy, Default)]
struct NaiveConv<const I: usize, const O: usize, const K: usize, const P: usize>;

#[derive(Debug, Clone)]
struct NaiveConvModule<const I: usize, const O: usize, const K: usize, const P: usize, E, D>
where
    E: Dtype,
    D: Storage<E>,
{
    weight: Tensor<Rank4<O, I, K, K>, E, D>,
    bias: Tensor<Rank1<O>, E, D>,
}

impl<const I: usize, const O: usize, const K: usize, const P: usize> BuildOnDevice<Cpu, f32>
    for NaiveConv<I, O, K, P>
{
    type Built = NaiveConvModule<I, O, K, P, f32, Cpu>;
}

impl<const I: usize, const O: usize, const K: usize, const P: usize, E: Dtype, D: Storage<E>>
    NonMutableModule for NaiveConvModule<I, O, K, P, E, D>
{
}

impl<const I: usize, const O: usize, const K: usize, const P: usize, E: Dtype, D: Device<E>>
    TensorCollection<E, D> for NaiveConvModule<I, O, K, P, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = NaiveConvModule<I, O, K, P, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_to_zeros(),
                ),
            ),
            |(weight, bias)| NaiveConvModule { weight, bias },
        )
    }
}

/// `(batch, channels, height, width)` offsets.
fn at(c: usize, h: usize, w: usize, (n, ch, y, x): (usize, usize, usize, usize)) -> usize {
    ((n * c + ch) * h + y) * w + x
}

impl<const I: usize, const O: usize, const K: usize, const P: usize>
    NaiveConvModule<I, O, K, P, f32, Cpu>
{
    /// The input pixel under output `(oy, ox)` and kernel tap `(ki, kj)`, if not padding.
    fn tap(oy: usize, ki: usize, len: usize) -> Option<usize> {
        (oy + ki).checked_sub(P).filter(|&i| i < len)
    }

    fn forward(&self, x: &[f32], (b, h, w): (usize, usize, usize)) -> Vec<f32> {
        let (oh, ow) = (h + 2 * P - K + 1, w + 2 * P - K + 1);
        let (wt, bias) = (self.weight.as_vec(), self.bias.as_vec());
        let mut y = vec![0.0; b * O * oh * ow];
        for n in 0..b {
            for o in 0..O {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = bias[o];
                        for i in 0..I {
                            for ki in 0..K {
                                let Some(iy) = Self::tap(oy, ki, h) else {
                                    continue;
                                };
                                for kj in 0..K {
                                    let Some(ix) = Self::tap(ox, kj, w) else {
                                        continue;
                                    };
                                    sum += x[at(I, h, w, (n, i, iy, ix))]
                                        * wt[((o * I + i) * K + ki) * K + kj];
                                }
                            }
                        }
                        y[at(O, oh, ow, (n, o, oy, ox))] = sum;
                    }
                }
            }
        }
        y
    }

    fn backward(
        x: &[f32],
        wt: &[f32],
        dy: &[f32],
        (b, h, w): (usize, usize, usize),
        (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (oh, ow) = (h + 2 * P - K + 1, w + 2 * P - K + 1);
        for n in 0..b {
            for o in 0..O {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let d = dy[at(O, oh, ow, (n, o, oy, ox))];
                        db[o] += d;
                        for i in 0..I {
                            for ki in 0..K {
                                let Some(iy) = Self::tap(oy, ki, h) else {
                                    continue;
                                };
                                for kj in 0..K {
                                    let Some(ix) = Self::tap(ox, kj, w) else {
                                        continue;
                                    };
                                    let wi = ((o * I + i) * K + ki) * K + kj;
                                    let xi = at(I, h, w, (n, i, iy, ix));
                                    dx[xi] += d * wt[wi];
                                    dw[wi] += d * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<const I: usize, const O: usize, const K: usize, const P: usize, T: Tape<f32, Cpu>>
    Module<Tensor<(usize, Const<I>, usize, usize), f32, Cpu, T>>
    for NaiveConvModule<I, O, K, P, f32, Cpu>
{
    type Output = Tensor<(usize, Const<O>, usize, usize), f32, Cpu, T>;
    type Error = <Cpu as HasErr>::Err;

    fn try_forward(
        &self,
        x: Tensor<(usize, Const<I>, usize, usize), f32, Cpu, T>,
    ) -> Result<Self::Output, Self::Error> {
        let (b, _, h, w) = *x.shape();
        let (x, mut tape) = x.split_tape();
        let xs = x.as_vec();
        let y = self.forward(&xs, (b, h, w));
        let shape = (b, Const::<O>, h + 2 * P - K + 1, w + 2 * P - K + 1);
        let y = x.device().try_tensor_from_vec(y, shape)?;
        let (x_ghost, w_ghost, b_ghost, y_ghost) =
            (x.ghost(), self.weight.ghost(), self.bias.ghost(), y.ghost());
        let wt = self.weight.as_vec();
        tape.add_backward_op(move |grads| {
            let dy = grads.get(&y_ghost).as_vec();
            let mut dx = vec![0.0; xs.len()];
            let mut dw = vec![0.0; wt.len()];
            let mut db = vec![0.0; O];
            Self::backward(&xs, &wt, &dy, (b, h, w), (&mut dx, &mut dw, &mut db));
            let add =
                |g: &mut Vec<f32>, d: Vec<f32>| g.iter_mut().zip(d).for_each(|(g, d)| *g += d);
            add(grads.get_or_alloc_mut(&x_ghost)?, dx);
            add(grads.get_or_alloc_mut(&w_ghost)?, dw);
            add(grads.get_or_alloc_mut(&b_ghost)?, db);
            Ok(())
        });
        Ok(y.put_tape(tape))
    }
}

//! What the layers are checked against: direct loops written from the textbook formulas (sharing no
//! code with the layers), central finite differences, and deterministic test data.

/// `(batch, channels, height, width)`.
pub type Dims = [usize; 4];

/// Stride, padding and dilation.
pub type Geometry = (usize, usize, usize);

/// `n` values in `[-1, 1)`, the same for the same seed (SplitMix64).
pub fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn at([_, c, h, w]: Dims, n: usize, ch: usize, y: usize, x: usize) -> usize {
    ((n * c + ch) * h + y) * w + x
}

/// The input row read by output row `o` through kernel tap `k`, if inside the image.
fn tap(o: usize, k: usize, (s, p, l): Geometry, len: usize) -> Option<usize> {
    let i = (o * s + k * l) as isize - p as isize;
    (0..len as isize).contains(&i).then_some(i as usize)
}

fn out_len(len: usize, k: usize, (s, p, l): Geometry) -> usize {
    (len + 2 * p - l * (k - 1) - 1) / s + 1
}

/// `torch.nn.functional.conv2d` with a bias, as a direct sum; the weight is `(out, in, k, k)`.
pub fn conv2d(
    x: &[f64],
    xd: Dims,
    weight: &[f64],
    (o, k): (usize, usize),
    bias: &[f64],
    g: Geometry,
) -> (Vec<f64>, Dims) {
    let [b, c, h, w] = xd;
    let yd = [b, o, out_len(h, k, g), out_len(w, k, g)];
    let mut y = vec![0.0; yd.iter().product()];
    for n in 0..b {
        for oc in 0..o {
            for oy in 0..yd[2] {
                for ox in 0..yd[3] {
                    let mut sum = bias[oc];
                    for ic in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                if let (Some(iy), Some(ix)) = (tap(oy, ki, g, h), tap(ox, kj, g, w))
                                {
                                    sum += x[at(xd, n, ic, iy, ix)]
                                        * weight[((oc * c + ic) * k + ki) * k + kj];
                                }
                            }
                        }
                    }
                    y[at(yd, n, oc, oy, ox)] = sum;
                }
            }
        }
    }
    (y, yd)
}

/// The gradients of `sum(conv2d(x) * dy)` with respect to the input, the weight and the bias.
pub fn conv2d_backward(
    x: &[f64],
    xd: Dims,
    weight: &[f64],
    (o, k): (usize, usize),
    g: Geometry,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [b, c, h, w] = xd;
    let yd = [b, o, out_len(h, k, g), out_len(w, k, g)];
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; weight.len()], vec![0.0; o]);
    for n in 0..b {
        for oc in 0..o {
            for oy in 0..yd[2] {
                for ox in 0..yd[3] {
                    let d = dy[at(yd, n, oc, oy, ox)];
                    db[oc] += d;
                    for ic in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                if let (Some(iy), Some(ix)) = (tap(oy, ki, g, h), tap(ox, kj, g, w))
                                {
                                    let wi = ((oc * c + ic) * k + ki) * k + kj;
                                    let xi = at(xd, n, ic, iy, ix);
                                    dx[xi] += d * weight[wi];
                                    dw[wi] += d * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// `torch.nn.functional.conv_transpose2d` with a bias, as a scatter: every input pixel adds its
/// weighted kernel to the output; the weight is `(in, out, k, k)`.
pub fn conv_transpose2d(
    x: &[f64],
    xd: Dims,
    weight: &[f64],
    (o, k): (usize, usize),
    bias: &[f64],
    (s, p, l): Geometry,
) -> (Vec<f64>, Dims) {
    let [b, c, h, w] = xd;
    let len = |n: usize| (n - 1) * s + l * (k - 1) + 1 - 2 * p;
    let yd = [b, o, len(h), len(w)];
    let mut y = vec![0.0; yd.iter().product()];
    for n in 0..b {
        for oc in 0..o {
            for oy in 0..yd[2] {
                for ox in 0..yd[3] {
                    y[at(yd, n, oc, oy, ox)] = bias[oc];
                }
            }
        }
        for ic in 0..c {
            for iy in 0..h {
                for ix in 0..w {
                    for oc in 0..o {
                        for ki in 0..k {
                            for kj in 0..k {
                                let oy = (iy * s + ki * l) as isize - p as isize;
                                let ox = (ix * s + kj * l) as isize - p as isize;
                                if (0..yd[2] as isize).contains(&oy)
                                    && (0..yd[3] as isize).contains(&ox)
                                {
                                    y[at(yd, n, oc, oy as usize, ox as usize)] += x
                                        [at(xd, n, ic, iy, ix)]
                                        * weight[((ic * o + oc) * k + ki) * k + kj];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (y, yd)
}

/// Max or average pooling (average counting the padding, PyTorch's default).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Max,
    Avg,
}

/// Pools `x` over `k`×`k` windows; also returns, for every output value, the input index of its
/// maximum (max pooling) so that the backward pass can route the gradient.
fn pool2d_with_argmax(
    x: &[f64],
    xd: Dims,
    k: usize,
    g: Geometry,
    kind: Pool,
) -> (Vec<f64>, Dims, Vec<Vec<usize>>) {
    let [b, c, h, w] = xd;
    let yd = [b, c, out_len(h, k, g), out_len(w, k, g)];
    let mut y = vec![0.0; yd.iter().product()];
    let mut sources = vec![Vec::new(); y.len()];
    for n in 0..b {
        for ch in 0..c {
            for oy in 0..yd[2] {
                for ox in 0..yd[3] {
                    let reads: Vec<usize> = (0..k * k)
                        .filter_map(|t| {
                            Some(at(xd, n, ch, tap(oy, t / k, g, h)?, tap(ox, t % k, g, w)?))
                        })
                        .collect();
                    let yi = at(yd, n, ch, oy, ox);
                    match kind {
                        Pool::Max => {
                            let best = reads
                                .iter()
                                .copied()
                                .max_by(|&a, &b| x[a].total_cmp(&x[b]))
                                .expect("every window reads a pixel");
                            y[yi] = x[best];
                            sources[yi] = vec![best];
                        }
                        Pool::Avg => {
                            y[yi] = reads.iter().map(|&i| x[i]).sum::<f64>() / (k * k) as f64;
                            sources[yi] = reads;
                        }
                    }
                }
            }
        }
    }
    (y, yd, sources)
}

/// `torch.nn.functional.max_pool2d` / `avg_pool2d` (with `count_include_pad=True`).
pub fn pool2d(x: &[f64], xd: Dims, k: usize, g: Geometry, kind: Pool) -> (Vec<f64>, Dims) {
    let (y, yd, _) = pool2d_with_argmax(x, xd, k, g, kind);
    (y, yd)
}

/// The gradient of `sum(pool2d(x) * dy)` with respect to `x`.
pub fn pool2d_backward(
    x: &[f64],
    xd: Dims,
    k: usize,
    g: Geometry,
    kind: Pool,
    dy: &[f64],
) -> Vec<f64> {
    let (_, _, sources) = pool2d_with_argmax(x, xd, k, g, kind);
    let mut dx = vec![0.0; x.len()];
    for (d, reads) in dy.iter().zip(&sources) {
        for &i in reads {
            dx[i] += match kind {
                Pool::Max => *d,
                Pool::Avg => d / (k * k) as f64,
            };
        }
    }
    dx
}

/// Central finite differences of `f` at `x`, one coordinate at a time.
pub fn finite_differences(x: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let eps = 1e-6;
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + eps;
            let up = f(&probe);
            probe[i] = x[i] - eps;
            let down = f(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// Asserts that `got` and `want` agree to `tol` (absolute, or relative to the larger magnitude).
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = g.abs().max(w.abs()).max(1.0);
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, expected {w}"
        );
    }
}

/// `sum(y * dy)`: the scalar whose gradients the tests compare.
pub fn dot(y: &[f64], dy: &[f64]) -> f64 {
    y.iter().zip(dy).map(|(a, b)| a * b).sum()
}

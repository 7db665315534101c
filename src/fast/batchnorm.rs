//! Batch norm + ReLU around the fused blocks: the batch statistics of the forward pass (f32 per
//! image, f64 across the batch, in image order, so results do not depend on how work is split
//! over threads), the folded scale and shift, and the backward pass's reductions and input
//! gradient.

use multiversion::multiversion;
use rayon::prelude::*;

/// Batch statistics and the inputs the backward pass needs, from a training forward pass.
#[derive(Debug, Clone)]
pub(crate) struct BnSaved {
    /// Pre-normalisation activations.
    pub z: Vec<f32>,
    pub mean: Vec<f32>,
    /// Biased batch variance, as burn's BatchNorm computes and tracks it.
    pub var: Vec<f32>,
    pub eps: f32,
    /// The per-channel `y = relu(z·scale + shift)` of the forward pass: backward recomputes the
    /// ReLU mask from `z` with the same two roundings instead of reading the output back.
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl BnSaved {
    pub fn inv_std(&self) -> Vec<f32> {
        self.var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect()
    }
}

/// Lane count of the explicit reductions below: 16 independent partial sums let the compiler
/// keep them in vector registers (an in-order `sum()` cannot be vectorised).
const LANES: usize = 16;

type Lanes = [f32; LANES];

#[inline(always)]
fn lanes(v: &[f32]) -> &Lanes {
    v.try_into().expect("chunk of LANES")
}

/// `(Σ z, Σ z²)`.
#[inline(always)]
fn sum_and_squares(z: &[f32]) -> (f32, f32) {
    let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
    let chunks = z.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        let c = lanes(c);
        for l in 0..LANES {
            s[l] += c[l];
            q[l] += c[l] * c[l];
        }
    }
    let (mut ts, mut tq) = (0f32, 0f32);
    for v in rest {
        ts += v;
        tq += v * v;
    }
    (s.iter().sum::<f32>() + ts, q.iter().sum::<f32>() + tq)
}

/// `Σ v`.
#[inline(always)]
fn lane_sum(v: &[f32]) -> f32 {
    let mut s = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        let c = lanes(c);
        for l in 0..LANES {
            s[l] += c[l];
        }
    }
    s.iter().sum::<f32>() + rest
}

/// With `g = dy` where the ReLU passed (`y > 0`) and 0 elsewhere: `(Σ g·(z - m), Σ g)`.
#[inline(always)]
fn relu_grad_sums(z: &[f32], dy: &[f32], m: f32, (s, t): (f32, f32)) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2::relu_grad_sums(z, dy, m, (s, t)) };
    }
    let (mut sg, mut sb) = (0f32, 0f32);
    for (z, d) in z.iter().zip(dy) {
        let g = if z * s + t > 0.0 { *d } else { 0.0 };
        sb += g;
        sg += g * (z - m);
    }
    (sg, sb)
}

/// The compiler does not vectorise this masked two-sum reduction on its own (checked with
/// `perf annotate`: scalar loads and spills), and it is a tenth of a training step.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let mut a = [0f32; 8];
        // SAFETY: `a` holds 8 floats.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
        a.iter().sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn relu_grad_sums(z: &[f32], dy: &[f32], m: f32, (s, t): (f32, f32)) -> (f32, f32) {
        let n = z.len().min(dy.len());
        let (mut sg, mut sb) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (zero, mv) = (_mm256_setzero_ps(), _mm256_set1_ps(m));
        let (sv, tv) = (_mm256_set1_ps(s), _mm256_set1_ps(t));
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, the length of both slices.
            let (zv, dv) = unsafe {
                (
                    _mm256_loadu_ps(z.as_ptr().add(i)),
                    _mm256_loadu_ps(dy.as_ptr().add(i)),
                )
            };
            // Multiply, then add: the forward pass's two roundings (no fused multiply-add).
            let yv = _mm256_add_ps(_mm256_mul_ps(zv, sv), tv);
            let g = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(yv, zero), dv);
            sb = _mm256_add_ps(sb, g);
            sg = _mm256_fmadd_ps(g, _mm256_sub_ps(zv, mv), sg);
            i += 8;
        }
        let (mut tg, mut tb) = (hsum(sg), hsum(sb));
        for j in i..n {
            let g = if z[j] * s + t > 0.0 { dy[j] } else { 0.0 };
            tb += g;
            tg += g * (z[j] - m);
        }
        (tg, tb)
    }
}

/// Per-channel `(sum, sum of squares)` of `z[c, p]` added to `acc[2c], acc[2c+1]`. Within one
/// image the sums are f32 (a few hundred terms); across the batch they are f64.
#[inline(always)]
pub(crate) fn channel_sums(z: &[f32], c: usize, p: usize, acc: &mut [f64]) {
    for ch in 0..c {
        let zc = &z[ch * p..][..p];
        let (s, q) = sum_and_squares(zc);
        acc[2 * ch] += f64::from(s);
        acc[2 * ch + 1] += f64::from(q);
    }
}

/// Mean and biased variance per channel from per-image sums, added in image order.
fn mean_var(sums: &[f64], c: usize, count: usize) -> (Vec<f32>, Vec<f32>) {
    let mut tot = vec![0f64; 2 * c];
    for img in sums.chunks(2 * c) {
        for (t, s) in tot.iter_mut().zip(img) {
            *t += s;
        }
    }
    let m = count as f64;
    (0..c)
        .map(|ch| {
            let mean = tot[2 * ch] / m;
            let var = (tot[2 * ch + 1] / m - mean * mean).max(0.0);
            (mean as f32, var as f32)
        })
        .unzip()
}

/// `y = relu(z * scale[c] + shift[c])` over `[n, c, p]`.
fn scale_shift_relu(z: &[f32], c: usize, p: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; z.len()];
    y.par_chunks_mut(c * p)
        .zip(z.par_chunks(c * p))
        .for_each(|(yi, zi)| scale_shift_relu_img(yi, zi, c, p, scale, shift));
    y
}

#[multiversion(targets = "simd")]
fn scale_shift_relu_img(
    yi: &mut [f32],
    zi: &[f32],
    c: usize,
    p: usize,
    scale: &[f32],
    shift: &[f32],
) {
    for ch in 0..c {
        let (s, t) = (scale[ch], shift[ch]);
        for (o, v) in yi[ch * p..][..p].iter_mut().zip(&zi[ch * p..][..p]) {
            *o = (v * s + t).max(0.0);
        }
    }
}

#[multiversion(targets = "simd")]
pub(crate) fn scale_shift_relu_inplace(
    yi: &mut [f32],
    c: usize,
    p: usize,
    scale: &[f32],
    shift: &[f32],
) {
    for ch in 0..c {
        let (s, t) = (scale[ch], shift[ch]);
        yi[ch * p..][..p]
            .iter_mut()
            .for_each(|v| *v = (*v * s + t).max(0.0));
    }
}

#[multiversion(targets = "simd")]
pub(crate) fn bias_and_sums(
    zi: &mut [f32],
    bias: &[f32],
    c: usize,
    p: usize,
    acc: Option<&mut [f64]>,
) {
    for ch in 0..c {
        let b = bias[ch];
        zi[ch * p..][..p].iter_mut().for_each(|v| *v += b);
    }
    if let Some(acc) = acc {
        channel_sums(zi, c, p, acc);
    }
}

/// Inference-time batch norm folded into a scale and shift per channel.
pub(crate) fn bn_fold(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    gamma
        .iter()
        .zip(beta)
        .zip(mean.iter().zip(var))
        .map(|((g, b), (m, v))| {
            let s = g / (v + eps).sqrt();
            (s, b - m * s)
        })
        .unzip()
}

/// Batch norm with the batch's statistics (from per-image `sums`) and ReLU over `z[n, c, p]`:
/// the output, and what the backward pass keeps.
pub(crate) fn bn_relu_train(
    z: Vec<f32>,
    sums: &[f64],
    c: usize,
    p: usize,
    (gamma, beta, eps): (&[f32], &[f32], f32),
) -> (Vec<f32>, BnSaved) {
    let (mean, var) = mean_var(sums, c, z.len() / c);
    let (scale, shift) = bn_fold(gamma, beta, &mean, &var, eps);
    let y = scale_shift_relu(&z, c, p, &scale, &shift);
    let saved = BnSaved {
        z,
        mean,
        var,
        eps,
        scale,
        shift,
    };
    (y, saved)
}

/// `(dgamma, dbeta)` of batch norm + ReLU: per image and channel in f32, then in f64 in image
/// order.
pub(crate) fn bn_param_grads(
    s: &BnSaved,
    dy: &[f32],
    c: usize,
    p: usize,
    inv_std: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut part = vec![0f64; (dy.len() / (c * p)) * 2 * c];
    part.par_chunks_mut(2 * c)
        .zip(s.z.par_chunks(c * p).zip(dy.par_chunks(c * p)))
        .for_each(|(acc, (zi, di))| bn_grads_img(acc, zi, di, s, inv_std, c, p));
    let mut tot = vec![0f64; 2 * c];
    for img in part.chunks(2 * c) {
        for (t, v) in tot.iter_mut().zip(img) {
            *t += v;
        }
    }
    (0..c)
        .map(|ch| (tot[2 * ch] as f32, tot[2 * ch + 1] as f32))
        .unzip()
}

#[multiversion(targets = "simd")]
fn bn_grads_img(
    acc: &mut [f64],
    zi: &[f32],
    di: &[f32],
    s: &BnSaved,
    inv_std: &[f32],
    c: usize,
    p: usize,
) {
    for ch in 0..c {
        let (m, is) = (s.mean[ch], inv_std[ch]);
        let r = ch * p..(ch + 1) * p;
        let (zc, dc) = (&zi[r.clone()], &di[r]);
        let (sg, sb) = relu_grad_sums(zc, dc, m, (s.scale[ch], s.shift[ch]));
        acc[2 * ch] = f64::from(sg * is);
        acc[2 * ch + 1] = f64::from(sb);
    }
}

/// Gradient through ReLU and training batch norm into `dz` for one image (`[c, p]`), and the
/// bias gradient's sums added to `db`.
#[multiversion(targets = "simd")]
pub(crate) fn bn_dz_img(
    dz: &mut [f32],
    (zi, di): (&[f32], &[f32]),
    s: &BnSaved,
    inv_std: &[f32],
    coef: &[(f32, f32, f32)],
    (c, p): (usize, usize),
    db: &mut [f32],
) {
    for ch in 0..c {
        let (k, mb, mg) = coef[ch];
        let (m, is) = (s.mean[ch], inv_std[ch]);
        let (sc, sh) = (s.scale[ch], s.shift[ch]);
        let r = ch * p..(ch + 1) * p;
        let (o, zc, dc) = (&mut dz[r.clone()], &zi[r.clone()], &di[r]);
        // dz = k*g - k*mb - (k*is*mg)*(z - m), as a multiply-add per element.
        let (a, b) = (k * is * mg, k * mb - k * is * mg * m);
        for ((o, z), d) in o.iter_mut().zip(zc).zip(dc) {
            let g = if z * sc + sh > 0.0 { *d } else { 0.0 };
            *o = k * g - b - a * z;
        }
        db[ch] += lane_sum(o);
    }
}

/// A block's layer parameters as the fused kernels read them: its weights and bias.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layer<'a> {
    /// The weights, in the layer's layout (`[cout, cin, 3, 3]` or `[in, out]`).
    pub(crate) w: &'a [f32],
    /// The bias, one per output channel.
    pub(crate) bias: &'a [f32],
}

/// A batch norm's affine parameters and epsilon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Norm<'a> {
    /// Scale per channel.
    pub(crate) gamma: &'a [f32],
    /// Shift per channel.
    pub(crate) beta: &'a [f32],
    /// Added to the variance.
    pub(crate) eps: f32,
}

/// What a block's backward pass gets from the forward pass and from the layers after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream<'a> {
    /// What the forward pass kept.
    pub(crate) saved: &'a BnSaved,
    /// The gradient of the block's output.
    pub(crate) dy: &'a [f32],
}

/// Whether a backward pass computes its input's gradient (the first layer's is not needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputGrad {
    /// Compute `dx`.
    Needed,
    /// Leave it out.
    Skipped,
}

/// Per-channel coefficients of the batch-norm input gradient:
/// `dz = gamma*inv_std * (g - dbeta/M - xhat * dgamma/M)`.
pub(crate) fn bn_coefs(
    gamma: &[f32],
    inv_std: &[f32],
    dgamma: &[f32],
    dbeta: &[f32],
    count: usize,
) -> Vec<(f32, f32, f32)> {
    let m = count as f32;
    (0..gamma.len())
        .map(|c| (gamma[c] * inv_std[c], dbeta[c] / m, dgamma[c] / m))
        .collect()
}

/// Gradients of a fused block (conv 3x3 or dense → batch norm → ReLU) with respect to its input
/// (when asked for), weight, bias, gamma and beta.
#[derive(Debug)]
pub(crate) struct BlockGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

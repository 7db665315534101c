//! The fused CPU kernels on plain `f32` slices (NCHW, row-major), forward and backward.
//!
//! Written by hand because no crate offers fused conv + batch-norm + ReLU training kernels for
//! the CPU; the arithmetic-heavy part, matrix multiplication, is the `gemm` crate's.
//!
//! Threads: work is split over images in a fixed number of chunks ([`CHUNKS`]) whose partial
//! sums are added in chunk order, so results are bit-identical whatever the number of threads.

//!
//! SIMD: the per-image element-wise loops are `#[multiversion]` functions, compiled for AVX-512,
//! AVX2+FMA, ... and chosen at run time (the default build targets plain x86-64, where they would
//! stay scalar).

use gemm::Parallelism;
use multiversion::multiversion;
use rayon::prelude::*;
use std::cell::RefCell;

/// Fixed number of work chunks for reductions over the batch (see the module doc).
const CHUNKS: usize = 16;

/// `dst[m,n] (+)= lhs[m,k] · rhs[k,n]`, all row-major; `lhs_t`/`rhs_t` say the operand is stored
/// transposed (`[k,m]`, `[n,k]`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    accumulate: bool,
    parallel: bool,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    tune_gemm();
    let (lrs, lcs) = if lhs_t { (1, m) } else { (k, 1) };
    let (rrs, rcs) = if rhs_t { (1, k) } else { (n, 1) };
    let par = if parallel && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm touches inside the three slices, and
    // `dst` does not alias the inputs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// gemm copies ("packs") an operand it reads column-contiguously once the other side is wider
/// than 8 (16 threaded) microkernel tiles of 6 columns: our convolutions' 64 output channels
/// crossed that line, so each image's im2col matrix was copied a second time (9% of a training
/// step in `perf`). Measured at batch 128: threshold 8 → 3,140–3,260 images/s, 16 to 256 →
/// 3,330–3,390. The setting is process-wide; it only moves that packing line.
fn tune_gemm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(32);
        gemm::set_lhs_packing_threshold_multi_thread(64);
    });
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` floats (contents unspecified), reused
/// across calls so the hot loop does not fault in fresh pages every batch.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Shape of a valid 3x3 convolution, stride 1, over `n` images of `cin x h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3x3 {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
}

impl Conv3x3 {
    pub fn oh(&self) -> usize {
        self.h - 2
    }
    pub fn ow(&self) -> usize {
        self.w - 2
    }
    /// Output pixels per channel.
    pub fn p(&self) -> usize {
        self.oh() * self.ow()
    }
    /// Patch length (the matrix multiply's inner dimension).
    pub fn k(&self) -> usize {
        self.cin * 9
    }
    pub fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.cout * self.p()
    }

    /// `col[k, p]`: row `ci*9 + ky*3 + kx` holds the input shifted by `(ky, kx)`.
    pub(super) fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (ow, p) = (self.ow(), self.p());
        for ci in 0..self.cin {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut col[(ci * 9 + ky * 3 + kx) * p..][..p];
                    for oy in 0..self.oh() {
                        let src = &x[ci * self.h * self.w + (oy + ky) * self.w + kx..][..ow];
                        row[oy * ow..][..ow].copy_from_slice(src);
                    }
                }
            }
        }
    }
}

/// Adds `col[k, p]` back onto the image positions it was gathered from.
#[multiversion(targets = "simd")]
fn col2im(g: Conv3x3, col: &[f32], dx: &mut [f32]) {
    let (ow, p) = (g.ow(), g.p());
    dx.fill(0.0);
    for ci in 0..g.cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &col[(ci * 9 + ky * 3 + kx) * p..][..p];
                for oy in 0..g.oh() {
                    let dst = &mut dx[ci * g.h * g.w + (oy + ky) * g.w + kx..][..ow];
                    for (d, s) in dst.iter_mut().zip(&row[oy * ow..][..ow]) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Batch statistics and the inputs the backward pass needs, from a training forward pass.
#[derive(Debug, Clone)]
pub struct BnSaved {
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
fn channel_sums(z: &[f32], c: usize, p: usize, acc: &mut [f64]) {
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
fn scale_shift_relu_inplace(yi: &mut [f32], c: usize, p: usize, scale: &[f32], shift: &[f32]) {
    for ch in 0..c {
        let (s, t) = (scale[ch], shift[ch]);
        yi[ch * p..][..p]
            .iter_mut()
            .for_each(|v| *v = (*v * s + t).max(0.0));
    }
}

#[multiversion(targets = "simd")]
fn bias_and_sums(zi: &mut [f32], bias: &[f32], c: usize, p: usize, acc: Option<&mut [f64]>) {
    for ch in 0..c {
        let b = bias[ch];
        zi[ch * p..][..p].iter_mut().for_each(|v| *v += b);
    }
    if let Some(acc) = acc {
        channel_sums(zi, c, p, acc);
    }
}

/// Inference-time batch norm folded into a scale and shift per channel.
pub fn bn_fold(
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

/// Convolution `z = conv(x, w) + bias` per image, with per-image channel sums when `sums` is given.
fn conv_forward(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    sums: Option<&mut [f64]>,
) -> Vec<f32> {
    let (p, k, c) = (g.p(), g.k(), g.cout);
    let mut z = vec![0f32; g.n * g.out_len()];
    let plan = super::winograd::Plan::new(g, w);
    let body = |zi: &mut [f32], xi: &[f32], acc: Option<&mut [f64]>| {
        match &plan {
            Some(plan) => plan.conv_image(xi, zi),
            None => with_scratch(k * p, |col| {
                g.im2col(xi, col);
                matmul(zi, (c, p, k), w, false, col, false, false, false);
            }),
        }
        bias_and_sums(zi, bias, c, p, acc);
    };
    let zs = z.par_chunks_mut(g.out_len()).zip(x.par_chunks(g.in_len()));
    match sums {
        Some(sums) => zs
            .zip(sums.par_chunks_mut(2 * c))
            .for_each(|((zi, xi), acc)| body(zi, xi, Some(acc))),
        None => zs.for_each(|(zi, xi)| body(zi, xi, None)),
    }
    z
}

/// Training forward of conv 3x3 → batch norm (batch statistics) → ReLU: the output, and what
/// the backward pass needs.
pub fn conv_bn_relu_train(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, BnSaved) {
    let c = g.cout;
    let mut sums = vec![0f64; g.n * 2 * c];
    let z = conv_forward(g, x, w, bias, Some(&mut sums));
    bn_relu_train(z, &sums, c, g.p(), (gamma, beta, eps))
}

/// Batch norm with the batch's statistics (from per-image `sums`) and ReLU over `z[n, c, p]`:
/// the output, and what the backward pass keeps.
fn bn_relu_train(
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

/// Inference forward of conv 3x3 → batch norm (running statistics, folded) → ReLU.
pub fn conv_bn_relu_infer(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let z = conv_forward(g, x, w, bias, None);
    let mut y = z;
    let (c, p) = (g.cout, g.p());
    y.par_chunks_mut(c * p)
        .for_each(|yi| scale_shift_relu_inplace(yi, c, p, scale, shift));
    y
}

/// `(dgamma, dbeta)` of batch norm + ReLU: per image and channel in f32, then in f64 in image
/// order.
fn bn_param_grads(
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

#[allow(clippy::too_many_arguments)]
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
#[allow(clippy::too_many_arguments)]
#[multiversion(targets = "simd")]
fn bn_dz_img(
    dz: &mut [f32],
    zi: &[f32],
    di: &[f32],
    s: &BnSaved,
    inv_std: &[f32],
    coef: &[(f32, f32, f32)],
    c: usize,
    p: usize,
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

/// Per-channel coefficients of the batch-norm input gradient:
/// `dz = gamma*inv_std * (g - dbeta/M - xhat * dgamma/M)`.
fn bn_coefs(
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
pub struct BlockGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Backward of [`conv_bn_relu_train`]; `dx` only when `need_dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_relu_backward(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    gamma: &[f32],
    s: &BnSaved,
    dy: &[f32],
    need_dx: bool,
) -> BlockGrads {
    let (c, p, k) = (g.cout, g.p(), g.k());
    let inv_std = s.inv_std();
    let (dgamma, dbeta) = bn_param_grads(s, dy, c, p, &inv_std);
    let coef = bn_coefs(gamma, &inv_std, &dgamma, &dbeta, g.n * p);
    let mut dx = if need_dx {
        vec![0f32; g.n * g.in_len()]
    } else {
        Vec::new()
    };
    let per = g.n.div_ceil(CHUNKS).max(1);
    let chunks = g.n.div_ceil(per);
    let mut dx_chunks: Vec<&mut [f32]> = if need_dx {
        dx.chunks_mut(per * g.in_len()).collect()
    } else {
        (0..chunks).map(|_| <&mut [f32]>::default()).collect()
    };
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx_chunks
        .par_iter_mut()
        .enumerate()
        .map(|(ci, dxc)| {
            let mut dw = vec![0f32; c * k];
            let mut db = vec![0f32; c];
            with_scratch(c * p + k * p, |buf| {
                let (dz, col) = buf.split_at_mut(c * p);
                for i in ci * per..((ci + 1) * per).min(g.n) {
                    let o = i * g.out_len();
                    let (zi, di) = (&s.z[o..][..c * p], &dy[o..][..c * p]);
                    bn_dz_img(dz, zi, di, s, &inv_std, &coef, c, p, &mut db);
                    let xi = &x[i * g.in_len()..][..g.in_len()];
                    g.im2col(xi, col);
                    matmul(&mut dw, (c, k, p), dz, false, col, true, true, false);
                    if need_dx {
                        matmul(col, (k, p, c), w, true, dz, false, false, false);
                        let j = i - ci * per;
                        col2im(g, col, &mut dxc[j * g.in_len()..][..g.in_len()]);
                    }
                }
            });
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; c * k], vec![0f32; c]);
    for (pw, pb) in &parts {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    BlockGrads {
        dx: need_dx.then_some(dx),
        dw,
        db,
        dgamma,
        dbeta,
    }
}

/// Shape of a dense layer over `n` rows: `[n, inp] · [inp, out]` (burn's `Linear` weight layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
}

fn dense_forward(d: Dense, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut z = vec![0f32; d.n * d.out];
    for row in z.chunks_mut(d.out) {
        row.copy_from_slice(bias);
    }
    matmul(&mut z, (d.n, d.out, d.inp), x, false, w, false, true, true);
    z
}

/// Training forward of dense → batch norm (batch statistics) → ReLU.
pub fn dense_bn_relu_train(
    d: Dense,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, BnSaved) {
    let z = dense_forward(d, x, w, bias);
    // A dense output is the `p = 1` case of the convolution layout `[n, c, p]`.
    let mut sums = vec![0f64; d.n * 2 * d.out];
    for (zi, acc) in z.chunks(d.out).zip(sums.chunks_mut(2 * d.out)) {
        channel_sums(zi, d.out, 1, acc);
    }
    bn_relu_train(z, &sums, d.out, 1, (gamma, beta, eps))
}

/// Inference forward of dense → batch norm (folded running statistics) → ReLU.
pub fn dense_bn_relu_infer(
    d: Dense,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let mut y = dense_forward(d, x, w, bias);
    for row in y.chunks_mut(d.out) {
        for ((v, s), t) in row.iter_mut().zip(scale).zip(shift) {
            *v = (*v * s + t).max(0.0);
        }
    }
    y
}

/// Backward of [`dense_bn_relu_train`].
#[allow(clippy::too_many_arguments)]
pub fn dense_bn_relu_backward(
    d: Dense,
    x: &[f32],
    w: &[f32],
    gamma: &[f32],
    s: &BnSaved,
    dy: &[f32],
    need_dx: bool,
) -> BlockGrads {
    let c = d.out;
    let inv_std = s.inv_std();
    let (dgamma, dbeta) = bn_param_grads(s, dy, c, 1, &inv_std);
    let coef = bn_coefs(gamma, &inv_std, &dgamma, &dbeta, d.n);
    // A dense output is the `p = 1` case of the convolution layout, one row per image.
    let (mut dz, mut db) = (vec![0f32; d.n * c], vec![0f32; c]);
    for i in 0..d.n {
        let r = i * c..(i + 1) * c;
        let (zi, di) = (&s.z[r.clone()], &dy[r.clone()]);
        bn_dz_img(&mut dz[r], zi, di, s, &inv_std, &coef, c, 1, &mut db);
    }
    let mut dw = vec![0f32; d.inp * c];
    matmul(&mut dw, (d.inp, c, d.n), x, true, &dz, false, false, true);
    let dx = need_dx.then(|| {
        let mut dx = vec![0f32; d.n * d.inp];
        matmul(&mut dx, (d.n, d.inp, c), &dz, false, w, true, false, true);
        dx
    });
    BlockGrads {
        dx,
        dw,
        db,
        dgamma,
        dbeta,
    }
}

/// 2x2 max pooling, stride 2, over `[planes, h, w]` (`h`, `w` even). Returns the output and, per
/// output, which of the four inputs won (0..4, the first on ties).
pub fn max_pool2(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0f32; planes * oh * ow];
    let mut arg = vec![0u8; planes * oh * ow];
    y.par_chunks_mut(oh * ow)
        .zip(arg.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(h * w))
        .for_each(|((yp, ap), xp)| pool_plane(xp, h, w, yp, Some(ap)));
    (y, arg)
}

/// 2x2 max pooling of one `h x w` plane into `y`, recording the winners in `arg` when given
/// (the first of equal values wins, as in burn).
#[multiversion(targets = "simd")]
fn pool_plane(xp: &[f32], h: usize, w: usize, y: &mut [f32], arg: Option<&mut [u8]>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut none = [0u8; 0];
    let (arg, record) = match arg {
        Some(a) => (a, true),
        None => (&mut none[..], false),
    };
    for oy in 0..oh {
        let (r0, r1) = (
            &xp[2 * oy * w..][..2 * ow],
            &xp[(2 * oy + 1) * w..][..2 * ow],
        );
        let yr = &mut y[oy * ow..][..ow];
        for ox in 0..ow {
            let (a, b, c, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
            let (top, ti) = if b > a { (b, 1u8) } else { (a, 0u8) };
            let (bot, bi) = if d > c { (d, 3u8) } else { (c, 2u8) };
            let (v, i) = if bot > top { (bot, bi) } else { (top, ti) };
            yr[ox] = v;
            if record {
                arg[oy * ow + ox] = i;
            }
        }
    }
}

/// Inference of conv 3x3 (bias folded into `shift`) → `relu(·scale + shift)` → 2x2 max pool, one
/// image at a time: the unpooled activations stay in a per-thread scratch buffer instead of a
/// batch-sized tensor.
pub fn conv_bn_relu_pool_infer(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let (c, p, k) = (g.cout, g.p(), g.k());
    let (oh, ow) = (g.oh(), g.ow());
    let pooled = (oh / 2) * (ow / 2);
    let mut out = vec![0f32; g.n * c * pooled];
    out.par_chunks_mut(c * pooled)
        .zip(x.par_chunks(g.in_len()))
        .for_each(|(oi, xi)| {
            with_scratch(k * p + c * p, |buf| {
                let (col, z) = buf.split_at_mut(k * p);
                g.im2col(xi, col);
                matmul(z, (c, p, k), w, false, col, false, false, false);
                scale_shift_relu_inplace(z, c, p, scale, shift);
                for ch in 0..c {
                    pool_plane(
                        &z[ch * p..][..p],
                        oh,
                        ow,
                        &mut oi[ch * pooled..][..pooled],
                        None,
                    );
                }
            })
        });
    out
}

/// Backward of [`max_pool2`]: each output gradient goes to the input that won.
pub fn max_pool2_backward(dy: &[f32], arg: &[u8], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0f32; planes * h * w];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow).zip(arg.par_chunks(oh * ow)))
        .for_each(|(dp, (gp, ap))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let a = usize::from(ap[oy * ow + ox]);
                    let (yy, xx) = (2 * oy + a / 2, 2 * ox + a % 2);
                    dp[yy * w + xx] = gp[oy * ow + ox];
                }
            }
        });
    dx
}

/// Dropout multipliers for `n` values: `1/keep` with probability `keep`, else 0. Chunks of the
/// mask come from independent ChaCha8 streams of `seed`, so it is generated in parallel and is
/// the same whatever the number of threads.
pub fn dropout_mask(n: usize, keep: f32, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    const CHUNK: usize = 8192;
    let threshold = (f64::from(keep) * 4_294_967_296.0) as u64;
    let scale = 1.0 / keep;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, part)| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64);
            // Drawn in bulk (the same words as one `next_u32` per value), then a branch-free
            // select: the per-value draw and branch were 4% of a batch-128 step.
            let mut words = [0u32; 1024];
            for part in part.chunks_mut(words.len()) {
                let words = &mut words[..part.len()];
                rng.fill(words);
                keep_or_drop(part, words, threshold, scale);
            }
        });
    mask
}

#[multiversion(targets = "simd")]
fn keep_or_drop(out: &mut [f32], words: &[u32], threshold: u64, scale: f32) {
    for (v, &r) in out.iter_mut().zip(words) {
        *v = if u64::from(r) < threshold { scale } else { 0.0 };
    }
}

/// The constants of one Adam step, as burn's `Adam` derives them from the step count.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    /// `sqrt(1 - beta_2^t) / (1 - beta_1^t)`.
    pub factor: f32,
    /// `epsilon * sqrt(1 - beta_2^t)`.
    pub eps: f32,
}

impl AdamStep {
    /// Step `time` (1-based), with the same f32 arithmetic as burn-optim 0.22's `Adam`.
    pub fn new(lr: f64, beta_1: f32, beta_2: f32, epsilon: f32, time: usize) -> Self {
        let t = time as i32;
        let bc2 = (1.0 - beta_2.powi(t)).sqrt();
        AdamStep {
            lr: lr as f32,
            beta_1,
            beta_2,
            factor: bc2 / (1.0 - beta_1.powi(t)),
            eps: epsilon * bc2,
        }
    }
}

/// One Adam step in place: moments `m`, `v` and parameters `p` from gradient `g`.
///
/// Each element goes through burn's `Adam` operations in burn's order (`m·β1 + g·(1-β1)`, ...,
/// `p - (m·f / (√v + ε'))·lr`), so the result is bit for bit what burn's dozen whole-tensor
/// passes give, in one pass: at batch 32 burn's step was a fifth of the training time.
pub fn adam_step(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|((p, m), (v, g))| adam_chunk(p, m, v, g, s));
}

#[multiversion(targets = "simd")]
fn adam_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
    let (c1, c2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m = *m * s.beta_1 + g * c1;
        *v = *v * s.beta_2 + g * g * c2;
        *p -= (*m * s.factor / (v.sqrt() + s.eps)) * s.lr;
    }
}

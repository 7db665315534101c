//! The fused convolution block, conv 3x3 → batch norm → ReLU (forward for training and
//! inference, backward), and evaluation's two blocks → 2x2 max pool in one pass per image. This
//! file is the one place that decides between Winograd and im2col ([`winograd_plan`]).

use super::batchnorm::{
    BlockGrads, BnSaved, bias_and_sums, bn_coefs, bn_dz_img, bn_fold, bn_param_grads,
    bn_relu_train, scale_shift_relu_inplace,
};
use super::bf16::{im2col_paired, matmul_bf16_words};
use super::direct::{conv_bn_relu_hwc, taps_channel_last};
use super::gemm::with_scratch;
use super::im2col::{Conv3x3, col2im};
use super::multiply::{Operand, Threads, Write, in_bf16, matmul_in};
use super::pool::pool_plane;
use super::transpose::transpose;
use super::winograd::Plan;
use crate::device::Precision;
use rayon::prelude::*;

/// Fixed number of work chunks for the backward pass's weight-gradient sums: partial sums are
/// added in chunk order, so the result does not depend on which thread ran which chunk.
const CHUNKS: usize = 16;

thread_local! {
    /// The weight gradient's bf16 im2col words, kept per thread like `with_scratch`'s floats
    /// (a fresh zeroed buffer per chunk was 10 MB of `memset` per batch of 128).
    static WORDS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a convolution's output is for: the decision between Winograd and im2col depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Every output pixel (training): Winograd's 2x2 blocks must cover the output exactly.
    Full,
    /// Only 2x2 max-pooled pixels (evaluation): an odd last row or column is dropped by the
    /// pooling anyway.
    Pooled,
}

/// The one place that chooses the convolution algorithm: Winograd F(2x2, 3x3) when its channels
/// fill whole vectors and at least 8 images share the filter transform (for fewer, the transform
/// and 16 small multiplies per image cost more than they save: latency at batch 1 was 0.20 ms
/// against 0.16 ms with im2col); im2col otherwise. Both precisions: in bf16, once the transforms
/// ran in AVX-512 and wrote bf16 directly, conv2's training forward at batch 128 (2 threads)
/// took 4.8 ms against im2col's 6.7 ms, and inference 2.8 ms against 5.4 ms.
fn winograd_plan(g: Conv3x3, w: &[f32], output: Output, prec: Precision) -> Option<Plan> {
    winograd_fits(g, output).then(|| Plan::new(g, w, prec))
}

/// [`winograd_plan`]'s decision, without transforming the filters.
fn winograd_fits(g: Conv3x3, output: Output) -> bool {
    let covered = match output {
        Output::Full => g.oh().is_multiple_of(2) && g.ow().is_multiple_of(2),
        Output::Pooled => true,
    };
    Plan::supports(g) && covered && g.n >= 8
}

/// The input gradient of convolution `g` as a convolution of its own, for Winograd: the output
/// gradient padded by 2 on every side, convolved with the filters turned 180° and their input
/// and output channels swapped (`dx[ci] = Σ_co full_conv(dz[co], w[co][ci])`). In bf16 only
/// (f32 keeps its bits: im2col and col2im), where [`winograd_plan`] would take the forward
/// convolution: its 16 products are half the multiply-adds of `wᵀ · dz`, and col2im goes (6% of
/// a bf16 training step). Returns the plan and the padded convolution's shape.
fn input_grad_plan(g: Conv3x3, w: &[f32], prec: Precision) -> Option<(Plan, Conv3x3)> {
    let gp = input_grad_shape(g);
    let wanted = prec == Precision::Bf16 && in_bf16(prec, (g.k(), g.p(), g.cout));
    (wanted && winograd_fits(gp, Output::Full))
        .then(|| (Plan::new(gp, &flipped_filters(w, g.cin, g.cout), prec), gp))
}

/// The shape of [`input_grad_plan`]'s convolution: `cout` channels padded by 2 to `h + 2` by
/// `w + 2`, giving `cin` channels of `h` by `w` (Winograd covers them when those are even).
fn input_grad_shape(g: Conv3x3) -> Conv3x3 {
    Conv3x3 {
        n: g.n,
        cin: g.cout,
        h: g.h + 2,
        w: g.w + 2,
        cout: g.cin,
    }
}

/// `w[co][ci]` turned 180° as `f[ci][co]`: the filters of [`input_grad_plan`]'s convolution.
fn flipped_filters(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut f = vec![0f32; cin * cout * 9];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..9 {
                f[(ci * cout + co) * 9 + t] = w[(co * cin + ci) * 9 + 8 - t];
            }
        }
    }
    f
}

/// One image's input gradient `dxi` (`[cin, h, w]`) from its output gradient `dz`
/// (`[cout, oh, ow]`) by [`input_grad_plan`]'s convolution; `scratch` of
/// [`input_grad_scratch_len`] floats.
fn input_grad_image(plan: &Plan, gp: Conv3x3, dz: &[f32], scratch: &mut [f32], dxi: &mut [f32]) {
    let (c, oh, ow) = (gp.cin, gp.h - 4, gp.w - 4);
    let (padded, rest) = scratch.split_at_mut(gp.in_len());
    let (t, rest) = rest.split_at_mut(c * oh * ow);
    transpose(dz, c, oh * ow, t);
    // Channel-last with a border of 2 zero pixels.
    let row = gp.w * c;
    padded[..2 * row].fill(0.0);
    padded[(gp.h - 2) * row..].fill(0.0);
    for y in 0..oh {
        let r = &mut padded[(y + 2) * row..][..row];
        r[..2 * c].fill(0.0);
        r[2 * c..(2 + ow) * c].copy_from_slice(&t[y * ow * c..][..ow * c]);
        r[(2 + ow) * c..].fill(0.0);
    }
    plan.conv_hwc(padded, rest, dxi);
}

/// Scratch floats of [`input_grad_image`].
fn input_grad_scratch_len(plan: &Plan, gp: Conv3x3) -> usize {
    gp.in_len() + gp.cin * (gp.h - 4) * (gp.w - 4) + plan.conv_scratch_len()
}

/// Convolution `z = conv(x, w) + bias` per image, with per-image channel sums when `sums` is given.
fn conv_forward(
    prec: Precision,
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    sums: Option<&mut [f64]>,
) -> Vec<f32> {
    let (p, k, c) = (g.p(), g.k(), g.cout);
    let mut z = vec![0f32; g.n * g.out_len()];
    let plan = winograd_plan(g, w, Output::Full, prec);
    let body = |zi: &mut [f32], xi: &[f32], acc: Option<&mut [f64]>| {
        match &plan {
            Some(plan) => plan.conv_image(xi, zi),
            None => with_scratch(k * p, |col| {
                g.im2col(xi, col);
                matmul_in(
                    prec,
                    zi,
                    (c, p, k),
                    Operand::rows(w),
                    Operand::rows(col),
                    Write::Overwrite,
                    Threads::Caller,
                );
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bn_relu_train(
    prec: Precision,
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
    let z = conv_forward(prec, g, x, w, bias, Some(&mut sums));
    bn_relu_train(z, &sums, c, g.p(), (gamma, beta, eps))
}

/// Inference forward of conv 3x3 → batch norm (running statistics, folded) → ReLU.
pub(crate) fn conv_bn_relu_infer(
    prec: Precision,
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let z = conv_forward(prec, g, x, w, bias, None);
    let mut y = z;
    let (c, p) = (g.cout, g.p());
    y.par_chunks_mut(c * p)
        .for_each(|yi| scale_shift_relu_inplace(yi, c, p, scale, shift));
    y
}

/// How the backward pass multiplies each image's weight gradient: chosen once per pass, by the
/// precision and the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeightGrad {
    /// `dw[c,k] += dz · colᵀ`, in f32.
    Direct,
    /// The transposed product `dwᵀ[k,c] += col · dzᵀ` (in bf16 where the shape pays): bf16
    /// pairs run along the pixels, which `col` holds contiguously, and the one operand to
    /// transpose while packing is `dz` (64 rows) instead of `col` (288). Summed as `[k, c]`,
    /// turned to the weights' `[c, k]` at the end.
    Transposed,
    /// [`WeightGrad::Transposed`] in bf16 with `col` written straight from the image as bf16
    /// pair words (the words packing an f32 copy would give): no f32 im2col matrix. Needs an
    /// even output width.
    TransposedWords,
}

impl WeightGrad {
    fn choose(prec: Precision, g: Conv3x3) -> WeightGrad {
        match prec {
            Precision::Fp32 => WeightGrad::Direct,
            Precision::Bf16
                if in_bf16(prec, (g.k(), g.cout, g.p())) && g.ow().is_multiple_of(2) =>
            {
                WeightGrad::TransposedWords
            }
            Precision::Bf16 => WeightGrad::Transposed,
        }
    }

    /// The bf16 words an image's im2col matrix needs (none but for `TransposedWords`).
    fn words_len(self, g: Conv3x3) -> usize {
        match self {
            WeightGrad::TransposedWords => g.k() * g.p() / 2,
            _ => 0,
        }
    }

    /// Adds the weight gradient of image `xi` with output gradient `dz` to `dw`; `col` and
    /// `words` are scratch.
    fn accumulate(
        self,
        g: Conv3x3,
        xi: &[f32],
        dz: &[f32],
        col: &mut [f32],
        words: &mut [u32],
        dw: &mut [f32],
    ) {
        let (c, p, k) = (g.cout, g.p(), g.k());
        if self == WeightGrad::TransposedWords && im2col_paired(g, xi, words) {
            let dz = Operand::transposed(dz);
            matmul_bf16_words(dw, (k, c, p), words, dz, Write::Accumulate, Threads::Caller);
            return;
        }
        g.im2col(xi, col);
        let (prec, shape, lhs, rhs) = match self {
            WeightGrad::Direct => (
                Precision::Fp32,
                (c, k, p),
                Operand::rows(dz),
                Operand::transposed(col),
            ),
            WeightGrad::Transposed | WeightGrad::TransposedWords => (
                Precision::Bf16,
                (k, c, p),
                Operand::rows(col),
                Operand::transposed(dz),
            ),
        };
        matmul_in(
            prec,
            dw,
            shape,
            lhs,
            rhs,
            Write::Accumulate,
            Threads::Caller,
        );
    }

    /// The summed gradient in the weights' layout `[c, k]`.
    fn finish(self, dw: &mut [f32], g: Conv3x3) {
        if self != WeightGrad::Direct {
            let t = dw.to_vec();
            transpose(&t, g.k(), g.cout, dw);
        }
    }
}

/// Backward of [`conv_bn_relu_train`]; `dx` only when `need_dx`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bn_relu_backward(
    prec: Precision,
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
    let wg = WeightGrad::choose(prec, g);
    let dx_plan = if need_dx {
        input_grad_plan(g, w, prec)
    } else {
        None
    };
    let dx_len = dx_plan
        .as_ref()
        .map_or(0, |(plan, gp)| input_grad_scratch_len(plan, *gp));
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx_chunks
        .par_iter_mut()
        .enumerate()
        .map(|(ci, dxc)| {
            let mut dw = vec![0f32; c * k];
            let mut db = vec![0f32; c];
            with_scratch(c * p + (k * p).max(dx_len), |buf| {
                let mut words = WORDS.with(|w| std::mem::take(&mut *w.borrow_mut()));
                words.resize(wg.words_len(g), 0);
                let (dz, col) = buf.split_at_mut(c * p);
                for i in ci * per..((ci + 1) * per).min(g.n) {
                    let o = i * g.out_len();
                    let (zi, di) = (&s.z[o..][..c * p], &dy[o..][..c * p]);
                    bn_dz_img(dz, zi, di, s, &inv_std, &coef, c, p, &mut db);
                    let xi = &x[i * g.in_len()..][..g.in_len()];
                    wg.accumulate(g, xi, dz, col, &mut words, &mut dw);
                    if need_dx {
                        let j = i - ci * per;
                        let dxi = &mut dxc[j * g.in_len()..][..g.in_len()];
                        match &dx_plan {
                            Some((plan, gp)) => input_grad_image(plan, *gp, dz, col, dxi),
                            None => {
                                matmul_in(
                                    prec,
                                    col,
                                    (k, p, c),
                                    Operand::transposed(w),
                                    Operand::rows(dz),
                                    Write::Overwrite,
                                    Threads::Caller,
                                );
                                col2im(g, col, dxi);
                            }
                        }
                    }
                }
                WORDS.with(|w| *w.borrow_mut() = words);
            });
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; c * k], vec![0f32; c]);
    for (pw, pb) in &parts {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    wg.finish(&mut dw, g);
    BlockGrads {
        dx: need_dx.then_some(dx),
        dw,
        db,
        dgamma,
        dbeta,
    }
}

/// Inference of conv 3x3 (bias folded into `shift`) → `relu(·scale + shift)` → 2x2 max pool
/// (floor), per image: no batch-sized unpooled tensor. Returns `[n, cout, oh/2, ow/2]`.
pub(crate) fn conv_bn_relu_pool_infer(
    prec: Precision,
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    match winograd_plan(g, w, Output::Pooled, prec) {
        Some(plan) => plan.conv_bn_relu_pool(x, scale, shift),
        None => im2col_pool_infer(prec, g, x, w, scale, shift),
    }
}

/// An evaluation conv block with its bias and batch norm (running statistics) folded into one
/// scale and shift per output channel: `relu(conv3x3(x, w)·scale + shift)`.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// `[cout, cin, 3, 3]`.
    pub w: Vec<f32>,
    /// Output channels.
    pub cout: usize,
    /// Per output channel: `gamma / sqrt(var + eps)`.
    pub scale: Vec<f32>,
    /// Per output channel: `(bias - mean)·scale + beta`.
    pub shift: Vec<f32>,
}

impl FoldedConv {
    /// Folds `relu(batch_norm(conv3x3(x, w) + bias))` with running statistics `(mean, var)`:
    /// `relu((z + b)·s + t) = relu(z·s + (b·s + t))`.
    pub fn new(
        w: Vec<f32>,
        bias: &[f32],
        (gamma, beta): (&[f32], &[f32]),
        (mean, var): (&[f32], &[f32]),
        eps: f32,
    ) -> FoldedConv {
        let (scale, shift) = bn_fold(gamma, beta, mean, var, eps);
        let shift = (bias.iter().zip(&scale).zip(&shift))
            .map(|((b, s), t)| b * s + t)
            .collect();
        FoldedConv {
            w,
            cout: bias.len(),
            scale,
            shift,
        }
    }
}

/// Inference of two conv blocks and a 2x2 max pool, `pool(second(first(x)))`, for `x` of shape
/// `g1` (whose `cout` is `first.cout`): `[n, second.cout, (h - 4) / 2, (w - 4) / 2]`.
///
/// Where the second block takes Winograd, one image at a time: the first block computed
/// directly into a per-thread channel-last buffer ([`conv_bn_relu_hwc`]), which the second's
/// transforms read as it is. No batch-sized activation is written between the blocks (at batch
/// 1000 that was 86 MB zeroed, written, rescaled in place and transposed). Otherwise (fewer than
/// 8 images) block by block.
pub(crate) fn two_blocks_pool_infer(
    prec: Precision,
    g1: Conv3x3,
    x: &[f32],
    first: &FoldedConv,
    second: &FoldedConv,
) -> Vec<f32> {
    let g2 = Conv3x3 {
        n: g1.n,
        cin: g1.cout,
        h: g1.oh(),
        w: g1.ow(),
        cout: second.cout,
    };
    let Some(plan) = winograd_plan(g2, &second.w, Output::Pooled, prec) else {
        let zeros = vec![0f32; g1.cout];
        let y = conv_bn_relu_infer(prec, g1, x, &first.w, &zeros, &first.scale, &first.shift);
        return conv_bn_relu_pool_infer(prec, g2, &y, &second.w, &second.scale, &second.shift);
    };
    let taps = taps_channel_last(&first.w, g1.cin, g1.cout);
    let (hwc_len, pooled) = (g1.out_len(), (g2.oh() / 2) * (g2.ow() / 2));
    let mut out = vec![0f32; g1.n * g2.cout * pooled];
    out.par_chunks_mut(g2.cout * pooled)
        .zip(x.par_chunks(g1.in_len()))
        .for_each(|(oi, xi)| {
            with_scratch(hwc_len + plan.pool_scratch_len(), |buf| {
                let (hwc, rest) = buf.split_at_mut(hwc_len);
                conv_bn_relu_hwc(g1, xi, &taps, &first.scale, &first.shift, hwc);
                plan.pool_hwc(hwc, &second.scale, &second.shift, rest, oi);
            })
        });
    out
}

/// [`conv_bn_relu_pool_infer`] by im2col: the unpooled activations of one image stay in a
/// per-thread scratch buffer.
fn im2col_pool_infer(
    prec: Precision,
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
                matmul_in(
                    prec,
                    z,
                    (c, p, k),
                    Operand::rows(w),
                    Operand::rows(col),
                    Write::Overwrite,
                    Threads::Caller,
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::gemm::matmul;
    use crate::fast::tests::{assert_close, noise};
    const F32: Precision = Precision::Fp32;

    fn shape(n: usize, cin: usize, side: usize, cout: usize) -> Conv3x3 {
        Conv3x3 {
            n,
            cin,
            h: side,
            w: side,
            cout,
        }
    }

    #[test]
    fn winograd_is_chosen_only_where_it_pays_and_covers_the_output() {
        let w = noise(64 * 32 * 9, 1);
        let conv2 = shape(8, 32, 26, 64);
        assert!(winograd_plan(conv2, &w, Output::Full, F32).is_some());
        assert!(winograd_plan(conv2, &w, Output::Pooled, F32).is_some());
        // Fewer than 8 images: im2col.
        assert!(winograd_plan(shape(7, 32, 26, 64), &w, Output::Pooled, F32).is_none());
        // Odd outputs: the pooled path floors them, a full output needs im2col.
        let odd = shape(8, 8, 9, 8);
        assert!(winograd_plan(odd, &w, Output::Full, F32).is_none());
        assert!(winograd_plan(odd, &w, Output::Pooled, F32).is_some());
        // conv1 has one input channel: not a whole vector.
        assert!(winograd_plan(shape(64, 1, 28, 32), &w, Output::Full, F32).is_none());
    }

    #[test]
    fn winograd_convolution_matches_im2col() {
        for (n, cin, side, cout) in [(8, 32, 26, 64), (9, 8, 10, 16)] {
            let g = shape(n, cin, side, cout);
            let w = noise(cout * cin * 9, 7);
            let plan = Plan::new(g, &w, F32);
            let x = noise(g.in_len(), 8);
            let mut fast = vec![0f32; g.out_len()];
            plan.conv_image(&x, &mut fast);
            let mut col = vec![0f32; g.k() * g.p()];
            g.im2col(&x, &mut col);
            let mut direct = vec![0f32; g.out_len()];
            matmul(
                &mut direct,
                (cout, g.p(), g.k()),
                Operand::rows(&w),
                Operand::rows(&col),
                Write::Overwrite,
                Threads::Caller,
            );
            assert_close(&format!("{n}x{cin}x{side}x{cout}"), fast, direct, 1e-5);
        }
    }

    #[test]
    fn winograd_pooling_matches_the_im2col_kernel_on_even_and_odd_sizes() {
        for (n, cin, side, cout) in [
            (3, 16, 8, 16),
            (2, 32, 26, 64),
            (1, 16, 9, 32),
            (2, 32, 11, 16),
        ] {
            let g = shape(n, cin, side, cout);
            assert!(Plan::supports(g));
            let x = noise(g.n * g.in_len(), 1);
            let w = noise(cout * cin * 9, 2);
            let (s, t) = (noise(cout, 4), noise(cout, 5));
            let fast = Plan::new(g, &w, F32).conv_bn_relu_pool(&x, &s, &t);
            let direct = im2col_pool_infer(F32, g, &x, &w, &s, &t);
            assert_close(&format!("{n}x{cin}x{side}x{cout}"), fast, direct, 1e-5);
        }
    }

    /// The input gradient as a convolution of the padded output gradient with the turned
    /// filters ([`input_grad_image`], here with f32 products) against `wᵀ · dz` and col2im.
    #[test]
    fn input_gradient_by_winograd_matches_col2im() {
        for (n, cin, side, cout) in [(8, 32, 26, 64), (8, 16, 10, 8)] {
            let g = shape(n, cin, side, cout);
            let gp = input_grad_shape(g);
            assert!(winograd_fits(gp, Output::Full));
            let w = noise(cout * g.k(), 3);
            let plan = Plan::new(gp, &flipped_filters(&w, cin, cout), F32);
            let dz = noise(g.out_len(), 4);
            let mut scratch = vec![f32::NAN; input_grad_scratch_len(&plan, gp)];
            let mut fast = vec![f32::NAN; g.in_len()];
            input_grad_image(&plan, gp, &dz, &mut scratch, &mut fast);
            let mut col = vec![0f32; g.k() * g.p()];
            matmul(
                &mut col,
                (g.k(), g.p(), cout),
                Operand::transposed(&w),
                Operand::rows(&dz),
                Write::Overwrite,
                Threads::Caller,
            );
            let mut direct = vec![0f32; g.in_len()];
            col2im(g, &col, &mut direct);
            assert_close(&format!("{cin}x{side}x{cout}"), fast, direct, 1e-4);
        }
    }

    /// bf16 against f32 with the same forward state (so the same ReLU mask): the convolution's
    /// output, weight and input gradients each within 2·2^-8 of the f32 ones as a whole (each
    /// product's operands are rounded to 8 significant bits; errors of random sign average out
    /// to about 2^-8 of the result's scale).
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn bf16_conv_forward_and_backward_are_within_bf16_rounding_of_f32() {
        use crate::fast::tests::relative_error;
        assert!(
            crate::device::cpu_has_bf16(),
            "built for AVX512_BF16, run without it"
        );
        const BF16: Precision = Precision::Bf16;
        for (n, cin, side, cout) in [(8, 32, 26, 64), (3, 32, 12, 64)] {
            let g = shape(n, cin, side, cout);
            let (x, w) = (noise(n * g.in_len(), 1), noise(cout * g.k(), 2));
            let (b, gamma, beta) = (noise(cout, 3), noise(cout, 4), noise(cout, 5));
            let (y32, saved) = conv_bn_relu_train(F32, g, &x, &w, &b, &gamma, &beta, 1e-5);
            let (y16, _) = conv_bn_relu_train(BF16, g, &x, &w, &b, &gamma, &beta, 1e-5);
            let tol = 2.0 / 256.0;
            let what = format!("{n}x{cin}x{side}x{cout}");
            let e = relative_error(&y16, &y32);
            assert!(e <= tol && e > 0.0, "{what} forward: {e}");
            let dy = noise(y32.len(), 6);
            let r32 = conv_bn_relu_backward(F32, g, &x, &w, &gamma, &saved, &dy, true);
            let r16 = conv_bn_relu_backward(BF16, g, &x, &w, &gamma, &saved, &dy, true);
            let e = relative_error(&r16.dw, &r32.dw);
            assert!(e <= tol && e > 0.0, "{what} dw: {e}");
            let (dx16, dx32) = (r16.dx.expect("dx"), r32.dx.expect("dx"));
            let e = relative_error(&dx16, &dx32);
            assert!(e <= tol && e > 0.0, "{what} dx: {e}");
            // Inference (Winograd's products in bf16) likewise.
            let (s, t) = (noise(cout, 7), noise(cout, 8));
            let p32 = conv_bn_relu_pool_infer(F32, g, &x, &w, &s, &t);
            let p16 = conv_bn_relu_pool_infer(BF16, g, &x, &w, &s, &t);
            let e = relative_error(&p16, &p32);
            assert!(e <= tol && e > 0.0, "{what} pooled inference: {e}");
        }
    }
}

/// Speed of conv2's training forward and backward at batch 128 in both precisions, and of the
/// bf16 forward without Winograd: `cargo test --release --lib conv_speed -- --ignored
/// --nocapture` (a measurement, not a check).
#[cfg(test)]
mod speed {
    use super::*;
    use crate::fast::tests::noise;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn conv_speed() {
        let g = Conv3x3 {
            n: 128,
            cin: 32,
            h: 26,
            w: 26,
            cout: 64,
        };
        let (x, w) = (noise(g.n * g.in_len(), 1), noise(g.cout * g.k(), 2));
        let (b, gamma, beta) = (noise(64, 3), noise(64, 4), noise(64, 5));
        let dy = noise(g.n * g.out_len(), 6);
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0 * 1e3
        };
        for prec in [Precision::Fp32, Precision::Bf16] {
            let fwd = time(&mut || {
                conv_bn_relu_train(prec, g, &x, &w, &b, &gamma, &beta, 1e-5);
            });
            let direct = time(&mut || {
                let mut z = vec![0f32; g.n * g.out_len()];
                z.par_chunks_mut(g.out_len())
                    .zip(x.par_chunks(g.in_len()))
                    .for_each(|(zi, xi)| {
                        with_scratch(g.k() * g.p(), |col| {
                            g.im2col(xi, col);
                            matmul_in(
                                prec,
                                zi,
                                (64, g.p(), g.k()),
                                Operand::rows(&w),
                                Operand::rows(col),
                                Write::Overwrite,
                                Threads::Caller,
                            );
                        })
                    });
            });
            let (_, saved) = conv_bn_relu_train(prec, g, &x, &w, &b, &gamma, &beta, 1e-5);
            let bwd = time(&mut || {
                conv_bn_relu_backward(prec, g, &x, &w, &gamma, &saved, &dy, true);
            });
            let (s, t) = (noise(64, 7), noise(64, 8));
            let pool = time(&mut || {
                conv_bn_relu_pool_infer(prec, g, &x, &w, &s, &t);
            });
            let pool_direct = time(&mut || {
                im2col_pool_infer(prec, g, &x, &w, &s, &t);
            });
            println!(
                "{prec}: forward {fwd:.1} ms (im2col multiply alone {direct:.1}), backward {bwd:.1} ms, \
                 inference {pool:.1} ms (im2col {pool_direct:.1})"
            );
        }
    }
}

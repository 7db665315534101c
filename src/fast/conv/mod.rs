//! The fused convolution block, conv 3x3 → batch norm → ReLU (forward for training and
//! inference, backward), and evaluation's two blocks → 2x2 max pool in one pass per image. This
//! module is the one place that decides between Winograd and im2col ([`winograd_plan`]).

use super::batchnorm::{
    BlockGrads, BnSaved, InputGrad, Layer, Norm, Upstream, bias_and_sums, bn_coefs, bn_dz_img,
    bn_fold, bn_param_grads, bn_relu_train, scale_shift_relu_inplace,
};
use super::bf16::matmul_bf16_words;
use super::direct::{ConvBnReluHwc, taps_channel_last};
use super::gemm::with_scratch;
use super::geometry::Conv3x3;
use super::im2col::{col2im, im2col_paired};
use super::lanes::run;
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

mod backward;
#[cfg(test)]
mod tests;

pub(crate) use backward::conv_bn_relu_backward;

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
pub(crate) fn conv_bn_relu_train(
    prec: Precision,
    g: Conv3x3,
    x: &[f32],
    layer: Layer,
    norm: Norm,
) -> (Vec<f32>, BnSaved) {
    let c = g.cout;
    let mut sums = vec![0f64; g.n * 2 * c];
    let z = conv_forward(prec, g, x, layer.w, layer.bias, Some(&mut sums));
    bn_relu_train(z, &sums, c, g.p(), (norm.gamma, norm.beta, norm.eps))
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
/// directly into a per-thread channel-last buffer ([`ConvBnReluHwc`]), which the second's
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
                run(ConvBnReluHwc {
                    g: g1,
                    x: xi,
                    taps: &taps,
                    scale: &first.scale,
                    shift: &first.shift,
                    hwc,
                });
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

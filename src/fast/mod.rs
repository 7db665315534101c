//! The fused CPU path: conv 3x3 + batch norm + ReLU, dense + batch norm + ReLU and 2x2 max
//! pooling as custom burn operations (burn's backend-extension API), each with its own backward
//! pass, on the `flex` CPU backend; and Adam in one pass per parameter.
//!
//! Why: burn-flex runs these layers as a dozen separate ops each, with a layout copy, an
//! allocation and a rayon dispatch per op, and its autodiff keeps every intermediate; matrix
//! multiplies were only a third of a training step. Here each block is one op that does the
//! matrix multiply with `gemm` and the rest in the same pass over the data. Burn still owns the
//! modules, parameters, optimiser, checkpoints, loss and other backends: the model takes this
//! path only on the CPU device (see [`enabled`]).
//!
//! The kernels work on plain `f32` slices (NCHW, row-major), one file per idea: `gemm` (matrix
//! multiply and scratch buffers), `im2col`, `conv` (which also decides between im2col and
//! `winograd`), `direct` (evaluation's first convolution, straight into Winograd's layout),
//! `batchnorm`, `dense`, `pool`, `dropout`, `adam`; `transpose` serves Winograd.
//! They are written by hand because no crate offers fused conv + batch-norm + ReLU training
//! kernels for the CPU; the arithmetic-heavy part, matrix multiplication, is the `gemm` crate's
//! in f32, and `bf16`'s (hand-written: no crate multiplies in bf16 on the CPU) for
//! `--precision bf16`, chosen per multiply by `multiply::matmul_in`.
//!
//! Reproducibility: batch reductions are summed per image, then across images in image order (or
//! in a fixed number of chunks in chunk order), so a run gives the same bits for the same seed and
//! thread count (what the tests check); nothing in them depends on the thread count, but runs with
//! different counts are not compared by any test.
//!
//! SIMD: the element-wise loops are `#[multiversion]` functions, compiled for AVX-512,
//! AVX2+FMA, ... and chosen at run time (the default build targets plain x86-64, where they would
//! stay scalar).

mod adam;
mod autodiff;
mod batchnorm;
mod bf16;
mod conv;
mod dense;
mod direct;
mod dropout;
mod fused_adam;
mod gemm;
mod geometry;
mod im2col;
mod lanes;
mod multiply;
mod operand;
mod ops;
mod pool;
mod transpose;
mod winograd;

pub use crate::device::Precision;
pub use conv::FoldedConv;
pub use fused_adam::FusedAdam;
pub use ops::{BatchStats, BnMode, BnReluLayer, FastOps};

use burn::prelude::*;

/// Set to any value to run the model on burn's reference ops instead (A/B benchmarks, debugging).
pub const REFERENCE_ENV: &str = crate::device::REFERENCE_OPS_ENV;

/// Whether the fused ops serve tensors on `device`: only burn's `flex` CPU backend has them.
pub fn enabled(device: &Device) -> bool {
    *device == Device::flex() && std::env::var_os(REFERENCE_ENV).is_none()
}

/// One fused block's parameters as tensors, how its batch norm normalises and the arithmetic of
/// its multiply: the model's side of [`BnReluLayer`].
#[derive(Debug, Clone)]
pub struct BnRelu<const D: usize> {
    /// `[cout, cin, 3, 3]` for a convolution, `[in, out]` for a dense layer.
    pub weight: Tensor<D>,
    /// One per output channel.
    pub bias: Tensor<1>,
    /// Batch norm's scale.
    pub gamma: Tensor<1>,
    /// Batch norm's shift.
    pub beta: Tensor<1>,
    /// The batch's statistics (training) or the running ones (evaluation).
    pub norm: BnMode,
    /// The multiply's arithmetic.
    pub precision: Precision,
}

impl<const D: usize> BnRelu<D> {
    fn into_dispatch(self) -> BnReluLayer<burn::backend::Dispatch> {
        BnReluLayer {
            weight: self.weight.into_dispatch(),
            bias: self.bias.into_dispatch(),
            gamma: self.gamma.into_dispatch(),
            beta: self.beta.into_dispatch(),
            norm: self.norm,
            precision: self.precision,
        }
    }
}

/// `relu(batch_norm(conv3x3(x, w) + b))` for `x: [n, cin, h, w]`, `w: [cout, cin, 3, 3]`.
pub fn conv_bn_relu(x: Tensor<4>, layer: BnRelu<4>) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FastOps>::conv_bn_relu(
        x.into_dispatch(),
        layer.into_dispatch(),
    ))
}

/// `relu(batch_norm(x · w + b))` for `x: [n, in]`, `w: [in, out]`.
pub fn dense_bn_relu(x: Tensor<2>, layer: BnRelu<2>) -> Tensor<2> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FastOps>::dense_bn_relu(
        x.into_dispatch(),
        layer.into_dispatch(),
    ))
}

/// Evaluation-mode `max_pool2(second(first(x)))` for two conv blocks with their bias and
/// running statistics folded ([`FoldedConv::new`]), fused per image (no batch-sized activation
/// between the blocks, nor an unpooled one).
pub fn conv_blocks_pool_eval(
    x: Tensor<4>,
    first: FoldedConv,
    second: FoldedConv,
    prec: Precision,
) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FastOps>::conv_blocks_pool_eval(
        x.into_dispatch(),
        first,
        second,
        prec,
    ))
}

/// 2x2 max pooling with stride 2 over `[n, c, h, w]` (even `h`, `w`).
pub fn max_pool2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as FastOps>::max_pool2(
        x.into_dispatch(),
    ))
}

/// Dropout as burn's `Dropout` module applies it (only when training on an autodiff device),
/// with the mask from `dropout::dropout_mask`: burn-flex draws one f32 through a generic
/// sampler per element, a tenth of a fused training step. The mask's seed comes from the
/// device's RNG, so seeding the device still fixes every mask.
pub fn dropout<const D: usize>(drop: &burn::nn::Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !drop.training.is_enabled() || !device.is_autodiff() || drop.prob == 0.0 {
        return x;
    }
    // Two 31-bit draws (burn's Int is i32 on flex).
    let range = burn::tensor::Distribution::Uniform(0.0, f64::from(i32::MAX));
    let words = Tensor::<1, Int>::random([2], range, &device);
    let seed = words
        .into_data()
        .iter::<i64>()
        .fold(0u64, |acc, w| (acc << 31) ^ w as u64);
    dropout_seeded(x, drop.prob, seed)
}

/// `x` with dropout at `prob` from the mask of `seed`, in any mode and on any device: the
/// samples of MC dropout at evaluation time (`suggest --strategy bald`), reproducible by seed.
pub fn dropout_seeded<const D: usize>(x: Tensor<D>, prob: f64, seed: u64) -> Tensor<D> {
    if prob <= 0.0 {
        return x;
    }
    let dims = x.dims();
    let mask = dropout::dropout_mask(dims.iter().product(), (1.0 - prob) as f32, seed);
    let device = x.device();
    x * Tensor::<D>::from_data(TensorData::new(mask, dims), &device)
}

/// `dst[m,n] = a[m,k] · b[n,k]ᵀ` in f32 on every thread, `m = a.len() / k`, `n = b.len() / k`:
/// the dot products of every row of `a` with every row of `b` (the audit's image similarities).
pub fn multiply_by_transpose(dst: &mut [f32], a: &[f32], b: &[f32], k: usize) {
    let (m, n) = (a.len() / k.max(1), b.len() / k.max(1));
    gemm::matmul(
        dst,
        (m, n, k),
        operand::Operand::rows(a),
        operand::Operand::transposed(b),
        operand::Write::Overwrite,
        operand::Threads::All,
    );
}

/// `dst = a · b` for `n`×`n` row-major matrices in `prec`, on every thread, through the multiply
/// the kernels use: the product `bench` times for this machine's peak.
pub fn multiply_square(prec: Precision, n: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    multiply::matmul_in(
        prec,
        dst,
        (n, n, n),
        operand::Operand::rows(a),
        operand::Operand::rows(b),
        operand::Write::Overwrite,
        operand::Threads::All,
    );
}

#[cfg(test)]
mod tests;

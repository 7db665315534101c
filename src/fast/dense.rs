//! The fused dense block, dense → batch norm → ReLU: a dense output is the one-pixel case of the
//! convolution layout `[n, c, p]`, so it shares the batch-norm kernels.

use super::batchnorm::{
    BlockGrads, BnSaved, bn_coefs, bn_dz_img, bn_param_grads, bn_relu_train, channel_sums,
};
use super::gemm::matmul;

/// Shape of a dense layer over `n` rows: `[n, inp] · [inp, out]` (burn's `Linear` weight layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dense {
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
pub(crate) fn dense_bn_relu_train(
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
pub(crate) fn dense_bn_relu_infer(
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
pub(crate) fn dense_bn_relu_backward(
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

//! The fused dense block, dense → batch norm → ReLU: a dense output is the one-pixel case of the
//! convolution layout `[n, c, p]`, so it shares the batch-norm kernels.

use super::batchnorm::{
    BlockGrads, BnSaved, InputGrad, Layer, Norm, Upstream, bn_coefs, bn_dz_img, bn_param_grads,
    bn_relu_train, channel_sums,
};
use super::multiply::{Operand, Threads, Write, matmul_in};
use crate::device::Precision;

/// Shape of a dense layer over `n` rows: `[n, inp] · [inp, out]` (burn's `Linear` weight layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dense {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
}

fn dense_forward(prec: Precision, d: Dense, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut z = vec![0f32; d.n * d.out];
    for row in z.chunks_mut(d.out) {
        row.copy_from_slice(bias);
    }
    matmul_in(
        prec,
        &mut z,
        (d.n, d.out, d.inp),
        Operand::rows(x),
        Operand::rows(w),
        Write::Accumulate,
        Threads::All,
    );
    z
}

/// Training forward of dense → batch norm (batch statistics) → ReLU.
pub(crate) fn dense_bn_relu_train(
    prec: Precision,
    d: Dense,
    x: &[f32],
    layer: Layer,
    norm: Norm,
) -> (Vec<f32>, BnSaved) {
    let z = dense_forward(prec, d, x, layer.w, layer.bias);
    let (gamma, beta, eps) = (norm.gamma, norm.beta, norm.eps);
    // A dense output is the `p = 1` case of the convolution layout `[n, c, p]`.
    let mut sums = vec![0f64; d.n * 2 * d.out];
    for (zi, acc) in z.chunks(d.out).zip(sums.chunks_mut(2 * d.out)) {
        channel_sums(zi, d.out, 1, acc);
    }
    bn_relu_train(z, &sums, d.out, 1, (gamma, beta, eps))
}

/// Inference forward of dense → batch norm (folded running statistics) → ReLU.
pub(crate) fn dense_bn_relu_infer(
    prec: Precision,
    d: Dense,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    let mut y = dense_forward(prec, d, x, w, bias);
    for row in y.chunks_mut(d.out) {
        for ((v, s), t) in row.iter_mut().zip(scale).zip(shift) {
            *v = (*v * s + t).max(0.0);
        }
    }
    y
}

/// Backward of [`dense_bn_relu_train`].
pub(crate) fn dense_bn_relu_backward(
    prec: Precision,
    d: Dense,
    x: &[f32],
    (w, gamma): (&[f32], &[f32]),
    up: Upstream,
    dx: InputGrad,
) -> BlockGrads {
    let (s, dy, need_dx) = (up.saved, up.dy, dx == InputGrad::Needed);
    let c = d.out;
    let inv_std = s.inv_std();
    let (dgamma, dbeta) = bn_param_grads(s, dy, c, 1, &inv_std);
    let coef = bn_coefs(gamma, &inv_std, &dgamma, &dbeta, d.n);
    // A dense output is the `p = 1` case of the convolution layout, one row per image.
    let (mut dz, mut db) = (vec![0f32; d.n * c], vec![0f32; c]);
    for i in 0..d.n {
        let r = i * c..(i + 1) * c;
        let (zi, di) = (&s.z[r.clone()], &dy[r.clone()]);
        bn_dz_img(&mut dz[r], (zi, di), s, &inv_std, &coef, (c, 1), &mut db);
    }
    let mut dw = vec![0f32; d.inp * c];
    matmul_in(
        prec,
        &mut dw,
        (d.inp, c, d.n),
        Operand::transposed(x),
        Operand::rows(&dz),
        Write::Overwrite,
        Threads::All,
    );
    let dx = need_dx.then(|| {
        let mut dx = vec![0f32; d.n * d.inp];
        matmul_in(
            prec,
            &mut dx,
            (d.n, d.inp, c),
            Operand::rows(&dz),
            Operand::transposed(w),
            Write::Overwrite,
            Threads::All,
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::tests::{noise, relative_error};

    /// As for the convolution (`conv.rs`): the same forward state, f32 against bf16, within
    /// 2·2^-8 as a whole, at the network's sizes (9216 → 128, batch 32).
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn bf16_dense_forward_and_backward_are_within_bf16_rounding_of_f32() {
        assert!(
            crate::device::cpu_has_bf16(),
            "built for AVX512_BF16, run without it"
        );
        let (f32p, bf16p) = (Precision::Fp32, Precision::Bf16);
        let d = Dense {
            n: 32,
            inp: 9216,
            out: 128,
        };
        let (x, w) = (noise(d.n * d.inp, 1), noise(d.inp * d.out, 2));
        let (b, gamma, beta) = (noise(d.out, 3), noise(d.out, 4), noise(d.out, 5));
        let (y32, saved) = dense_bn_relu_train(
            f32p,
            d,
            &x,
            Layer { w: &w, bias: &b },
            Norm {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-5,
            },
        );
        let (y16, _) = dense_bn_relu_train(
            bf16p,
            d,
            &x,
            Layer { w: &w, bias: &b },
            Norm {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-5,
            },
        );
        let tol = 2.0 / 256.0;
        let e = relative_error(&y16, &y32);
        assert!(e <= tol && e > 0.0, "forward: {e}");
        let dy = noise(y32.len(), 6);
        let r32 = dense_bn_relu_backward(
            f32p,
            d,
            &x,
            (&w, &gamma),
            Upstream {
                saved: &saved,
                dy: &dy,
            },
            InputGrad::Needed,
        );
        let r16 = dense_bn_relu_backward(
            bf16p,
            d,
            &x,
            (&w, &gamma),
            Upstream {
                saved: &saved,
                dy: &dy,
            },
            InputGrad::Needed,
        );
        let e = relative_error(&r16.dw, &r32.dw);
        assert!(e <= tol && e > 0.0, "dw: {e}");
        let e = relative_error(&r16.dx.expect("dx"), &r32.dx.expect("dx"));
        assert!(e <= tol && e > 0.0, "dx: {e}");
    }
}

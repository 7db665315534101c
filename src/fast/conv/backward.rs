//! The backward pass of the convolution block: batch norm's gradients, the weight gradient by
//! im2col (its product chosen once per pass, [`WeightGrad`]) and the input gradient by col2im or,
//! in bf16, by Winograd.

use super::*;

/// The input gradient of convolution `g` as a convolution of its own, for Winograd: the output
/// gradient padded by 2 on every side, convolved with the filters turned 180° and their input
/// and output channels swapped (`dx[ci] = Σ_co full_conv(dz[co], w[co][ci])`). In bf16 only
/// (f32 keeps its bits: im2col and col2im), where [`winograd_plan`] would take the forward
/// convolution: its 16 products are half the multiply-adds of `wᵀ · dz`, and col2im goes (6% of
/// a bf16 training step). Returns the plan and the padded convolution's shape.
pub(super) fn input_grad_plan(g: Conv3x3, w: &[f32], prec: Precision) -> Option<(Plan, Conv3x3)> {
    let gp = input_grad_shape(g);
    let wanted = prec == Precision::Bf16 && in_bf16(prec, (g.k(), g.p(), g.cout));
    (wanted && winograd_fits(gp, Output::Full))
        .then(|| (Plan::new(gp, &flipped_filters(w, g.cin, g.cout), prec), gp))
}

/// The shape of [`input_grad_plan`]'s convolution: `cout` channels padded by 2 to `h + 2` by
/// `w + 2`, giving `cin` channels of `h` by `w` (Winograd covers them when those are even).
pub(super) fn input_grad_shape(g: Conv3x3) -> Conv3x3 {
    Conv3x3 {
        n: g.n,
        cin: g.cout,
        h: g.h + 2,
        w: g.w + 2,
        cout: g.cin,
    }
}

/// `w[co][ci]` turned 180° as `f[ci][co]`: the filters of [`input_grad_plan`]'s convolution.
pub(super) fn flipped_filters(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
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
pub(super) fn input_grad_image(
    plan: &Plan,
    gp: Conv3x3,
    dz: &[f32],
    scratch: &mut [f32],
    dxi: &mut [f32],
) {
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
pub(super) fn input_grad_scratch_len(plan: &Plan, gp: Conv3x3) -> usize {
    gp.in_len() + gp.cin * (gp.h - 4) * (gp.w - 4) + plan.conv_scratch_len()
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

/// Backward of [`conv_bn_relu_train`]; `dx` only when [`InputGrad::Needed`].
pub(crate) fn conv_bn_relu_backward(
    prec: Precision,
    g: Conv3x3,
    x: &[f32],
    (w, gamma): (&[f32], &[f32]),
    up: Upstream,
    dx: InputGrad,
) -> BlockGrads {
    let (s, dy, need_dx) = (up.saved, up.dy, dx == InputGrad::Needed);
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
                    bn_dz_img(dz, (zi, di), s, &inv_std, &coef, (c, p), &mut db);
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

//! Evaluation's first convolution computed directly into the channel-last layout that the
//! Winograd transforms of the next convolution read, with batch norm and ReLU applied before the
//! one store.
//!
//! Why: conv1 has one input channel, so its patches are 9 values long: as an im2col multiply it
//! ran in the `gemm` crate's f32 kernels far below their speed, then needed a batch-norm pass
//! and a transpose for Winograd. Directly, each output pixel is 9 broadcast multiplies and adds
//! per 16 channels.

use super::geometry::Conv3x3;
use multiversion::multiversion;

/// The weights `[cout][cin][3][3]` as `[cin * 9][cout]`: one tap's channels contiguous.
pub(crate) fn taps_channel_last(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    assert!(w.len() >= cout * cin * 9);
    let mut t = vec![0f32; cin * 9 * cout];
    for co in 0..cout {
        for k in 0..cin * 9 {
            t[k * cout + co] = w[co * cin * 9 + k];
        }
    }
    t
}

/// `hwc[(oy * ow + ox) * cout + c] = relu(conv(x, w)[c, oy, ox] · scale[c] + shift[c])` for one
/// image `x` (`[cin, h, w]`), with `taps` from [`taps_channel_last`]; each sum runs over
/// (input channel, row, column) in that order, one fused multiply-add per tap.
pub(crate) fn conv_bn_relu_hwc(
    g: Conv3x3,
    x: &[f32],
    taps: &[f32],
    scale: &[f32],
    shift: &[f32],
    hwc: &mut [f32],
) {
    assert!(x.len() >= g.in_len() && taps.len() >= g.k() * g.cout);
    assert!(scale.len() >= g.cout && shift.len() >= g.cout && hwc.len() >= g.out_len());
    #[cfg(target_arch = "x86_64")]
    if g.cin == 1
        && g.cout.is_multiple_of(16)
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX-512F and FMA are present (checked above); the bounds are asserted above.
        return unsafe { avx512::conv_bn_relu_hwc(g, x, taps, scale, shift, hwc) };
    }
    conv_bn_relu_hwc_portable(g, x, taps, scale, shift, hwc)
}

#[multiversion(targets = "simd")]
fn conv_bn_relu_hwc_portable(
    g: Conv3x3,
    x: &[f32],
    taps: &[f32],
    scale: &[f32],
    shift: &[f32],
    hwc: &mut [f32],
) {
    let (c, ow) = (g.cout, g.ow());
    for oy in 0..g.oh() {
        for ox in 0..ow {
            let out = &mut hwc[(oy * ow + ox) * c..][..c];
            out.fill(0.0);
            for ci in 0..g.cin {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let xv = x[ci * g.h * g.w + (oy + ky) * g.w + ox + kx];
                        let t = &taps[(ci * 9 + ky * 3 + kx) * c..][..c];
                        out.iter_mut()
                            .zip(t)
                            .for_each(|(o, w)| *o = xv.mul_add(*w, *o));
                    }
                }
            }
            for ((o, s), b) in out.iter_mut().zip(scale).zip(shift) {
                *o = (*o * s + b).max(0.0);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Conv3x3;
    use std::arch::x86_64::*;

    /// See [`super::conv_bn_relu_hwc_portable`] (the same operations in the same order), for
    /// one input channel (conv1; wider inputs take the portable version); `cout` a multiple of
    /// 16, bounds asserted by the caller. Why by hand: vectorised along the channels, one
    /// broadcast pixel per tap and the taps held in registers, which the compiler does not find.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn conv_bn_relu_hwc(
        g: Conv3x3,
        x: &[f32],
        taps: &[f32],
        scale: &[f32],
        shift: &[f32],
        hwc: &mut [f32],
    ) {
        let (c, ow) = (g.cout, g.ow());
        let zero = _mm512_setzero_ps();
        // A block's 9 tap vectors stay in registers over all pixels.
        for cb in (0..c).step_by(16) {
            // SAFETY: tap k's channels cb..cb + 16 are inside `taps`, pixel
            // (oy + ky, ox + kx) inside `x`, the store inside `hwc` (lengths asserted by
            // the caller).
            unsafe {
                let t: [__m512; 9] =
                    std::array::from_fn(|k| _mm512_loadu_ps(taps.as_ptr().add(k * c + cb)));
                let s = _mm512_loadu_ps(scale.as_ptr().add(cb));
                let b = _mm512_loadu_ps(shift.as_ptr().add(cb));
                for oy in 0..g.oh() {
                    for ox in 0..ow {
                        let xp = x.as_ptr().add(oy * g.w + ox);
                        let mut acc = zero;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let xv = _mm512_set1_ps(*xp.add(ky * g.w + kx));
                                acc = _mm512_fmadd_ps(xv, t[ky * 3 + kx], acc);
                            }
                        }
                        let y = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(acc, s), b), zero);
                        _mm512_storeu_ps(hwc.as_mut_ptr().add((oy * ow + ox) * c + cb), y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::tests::noise;

    /// Against the definition (a plain sum over the patch), and the AVX-512 path against the
    /// portable one bit for bit.
    #[test]
    fn direct_conv_matches_the_definition_and_the_portable_bits() {
        for (cin, side, cout) in [(1, 28, 32), (2, 7, 16), (1, 5, 8)] {
            let g = Conv3x3 {
                n: 1,
                cin,
                h: side,
                w: side,
                cout,
            };
            let (x, w) = (noise(g.in_len(), 1), noise(cout * g.k(), 2));
            let (s, t) = (noise(cout, 3), noise(cout, 4));
            let taps = taps_channel_last(&w, cin, cout);
            let mut fast = vec![0f32; g.out_len()];
            conv_bn_relu_hwc(g, &x, &taps, &s, &t, &mut fast);
            let mut portable = vec![0f32; g.out_len()];
            conv_bn_relu_hwc_portable(g, &x, &taps, &s, &t, &mut portable);
            assert_eq!(fast, portable, "{cin}x{side}x{cout}");
            let (oh, ow) = (g.oh(), g.ow());
            for (px, o) in fast.chunks(cout).enumerate() {
                let (oy, ox) = (px / ow, px % ow);
                assert!(oy < oh);
                for co in 0..cout {
                    let mut z = 0f64;
                    for ci in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                z += f64::from(x[ci * side * side + (oy + ky) * side + ox + kx])
                                    * f64::from(w[((co * cin + ci) * 3 + ky) * 3 + kx]);
                            }
                        }
                    }
                    let want = (z * f64::from(s[co]) + f64::from(t[co])).max(0.0);
                    assert!(
                        (f64::from(o[co]) - want).abs() < 1e-4,
                        "{cin}x{side}x{cout} {px},{co}"
                    );
                }
            }
        }
    }
}

//! Evaluation's first convolution computed directly into the channel-last layout that the
//! Winograd transforms of the next convolution read, with batch norm and ReLU applied before the
//! one store.
//!
//! Why: conv1 has one input channel, so its patches are 9 values long: as an im2col multiply it
//! ran in the `gemm` crate's f32 kernels far below their speed, then needed a batch-norm pass
//! and a transpose for Winograd. Directly, each output pixel is 9 broadcast multiplies and adds
//! per vector of channels.

use super::geometry::Conv3x3;
use super::lanes::{Kernel, ld, st};
use pulp::Simd;

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
/// (input channel, row, column) in that order, one fused multiply-add per tap, then a multiply
/// and an add (not fused). Vectorised along the output channels, one broadcast pixel per tap.
pub(crate) struct ConvBnReluHwc<'a> {
    pub g: Conv3x3,
    pub x: &'a [f32],
    pub taps: &'a [f32],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub hwc: &'a mut [f32],
}

impl Kernel for ConvBnReluHwc<'_> {
    fn channels(&self) -> usize {
        self.g.cout
    }

    #[inline(always)]
    fn apply<S: Simd>(self, s: S) {
        let ConvBnReluHwc {
            g,
            x,
            taps,
            scale,
            shift,
            hwc,
        } = self;
        let (c, ow) = (g.cout, g.ow());
        assert!(c.is_multiple_of(S::F32_LANES));
        assert!(x.len() >= g.in_len() && taps.len() >= g.k() * c);
        assert!(scale.len() >= c && shift.len() >= c && hwc.len() >= g.out_len());
        let zero = s.splat_f32s(0.0);
        // A block of channels over all pixels: for one input channel its 9 tap vectors stay
        // in registers (the compiler hoists their loads).
        for cb in (0..c).step_by(S::F32_LANES) {
            // SAFETY: tap k's channels cb.. + lanes are inside `taps`, pixel
            // (ci, oy + ky, ox + kx) inside `x`, the store inside `hwc` (asserted above).
            unsafe {
                let sc = ld::<S>(scale.as_ptr().add(cb));
                let sh = ld::<S>(shift.as_ptr().add(cb));
                for oy in 0..g.oh() {
                    for ox in 0..ow {
                        let mut acc = zero;
                        for ci in 0..g.cin {
                            let xp = x.as_ptr().add(ci * g.h * g.w + oy * g.w + ox);
                            for k in 0..9 {
                                let xv = s.splat_f32s(*xp.add(k / 3 * g.w + k % 3));
                                let t = ld::<S>(taps.as_ptr().add((ci * 9 + k) * c + cb));
                                acc = s.mul_add_f32s(xv, t, acc);
                            }
                        }
                        let y = s.max_f32s(s.add_f32s(s.mul_f32s(acc, sc), sh), zero);
                        st::<S>(hwc.as_mut_ptr().add((oy * ow + ox) * c + cb), y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::lanes::run;
    use crate::fast::tests::noise;
    use pulp::Scalar;

    /// Against the definition (a plain sum over the patch), and the CPU's widest vectors against
    /// one lane at a time bit for bit.
    #[test]
    fn direct_conv_matches_the_definition_and_the_one_lane_bits() {
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
            let kernel = |hwc| ConvBnReluHwc {
                g,
                x: &x,
                taps: &taps,
                scale: &s,
                shift: &t,
                hwc,
            };
            let (mut fast, mut one) = (vec![0f32; g.out_len()], vec![0f32; g.out_len()]);
            run(kernel(&mut fast));
            kernel(&mut one).apply(Scalar::new());
            assert_eq!(fast, one, "{cin}x{side}x{cout}");
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

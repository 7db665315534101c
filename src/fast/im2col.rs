//! A valid 3x3 convolution's im2col / col2im copies: a convolution becomes one matrix multiply
//! per image over a `[cin*9, pixels]` matrix of shifted copies of the input.

use super::bf16::{available, im2col_paired_512};
use super::geometry::Conv3x3;
use multiversion::multiversion;

impl Conv3x3 {
    /// `col[k, p]`: row `ci*9 + ky*3 + kx` holds the input shifted by `(ky, kx)`.
    pub(crate) fn im2col(&self, x: &[f32], col: &mut [f32]) {
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

/// Adds `col[k, p]` onto the image positions it was gathered from, in `dx` as the caller gives
/// it (zeroed: the backward pass allocates it so, and a second zeroing was 1% of a step).
#[multiversion(targets = "simd")]
pub(crate) fn col2im(g: Conv3x3, col: &[f32], dx: &mut [f32]) {
    let (ow, p) = (g.ow(), g.p());
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
/// The im2col matrix of one image (`[cin * 9][pixels]`, see [`Conv3x3::im2col`]) written
/// straight as bf16 pair words, `pixels / 2` per row: the words the bf16 multiply's row packing makes of it,
/// without the f32 copy in between (for conv2, a 663 KB write and read per image in the weight
/// gradient). Needs an even output width, so that no pair straddles two output rows, and
/// AVX512_BF16; returns `false`, writing nothing, otherwise.
pub(crate) fn im2col_paired(g: Conv3x3, x: &[f32], out: &mut [u32]) -> bool {
    if !available() || !g.ow().is_multiple_of(2) {
        return false;
    }
    assert!(x.len() >= g.in_len() && out.len() >= g.k() * g.p() / 2);
    // SAFETY: the CPU has AVX512F/BW/BF16 (checked above); the lengths are asserted above.
    unsafe { im2col_paired_512(g, x, out) };
    true
}

#[cfg(test)]
mod tests {
    use super::Conv3x3;

    /// Every column entry is the input pixel it names, for this network's rows (conv2: 24 floats,
    /// conv1: 26) and other widths (11, 5).
    #[test]
    fn im2col_copies_each_shifted_pixel() {
        for (cin, side) in [(2, 26), (1, 28), (3, 13), (2, 7)] {
            let g = Conv3x3 {
                n: 1,
                cin,
                h: side,
                w: side,
                cout: 1,
            };
            let x: Vec<f32> = (0..g.in_len()).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut col = vec![f32::NAN; g.k() * g.p()];
            g.im2col(&x, &mut col);
            for ci in 0..cin {
                for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                    for (oy, ox) in (0..g.oh()).flat_map(|y| (0..g.ow()).map(move |x| (y, x))) {
                        let got = col[(ci * 9 + ky * 3 + kx) * g.p() + oy * g.ow() + ox];
                        let want = x[ci * side * side + (oy + ky) * side + ox + kx];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{cin}x{side} at {ci},{ky},{kx},{oy},{ox}"
                        );
                    }
                }
            }
        }
    }
}

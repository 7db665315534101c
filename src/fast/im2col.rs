//! The geometry of a valid 3x3 convolution and its im2col / col2im copies: a convolution becomes
//! one matrix multiply per image over a `[cin*9, pixels]` matrix of shifted copies of the input.

use multiversion::multiversion;

/// Shape of a valid 3x3 convolution, stride 1, over `n` images of `cin x h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conv3x3 {
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
    pub(crate) fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let (ow, p) = (self.ow(), self.p());
        #[cfg(target_arch = "x86_64")]
        if ow >= 8 && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present (checked here); the function checks its own bounds.
            unsafe { avx_rows::im2col(*self, x, col) };
            return;
        }
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
pub(crate) fn col2im(g: Conv3x3, col: &[f32], dx: &mut [f32]) {
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

/// im2col's copies with AVX moves. Each copy is one output row (24 floats for conv2), and
/// `copy_from_slice` (or a loop, which the compiler turns back into one) called `memcpy` for each:
/// ~7,000 calls per image, 3.6% of a bf16 training step.
#[cfg(target_arch = "x86_64")]
mod avx_rows {
    use super::Conv3x3;
    use std::arch::x86_64::*;

    /// [`Conv3x3::im2col`] for rows of at least 8 floats: 8 at a time, the last 8 overlapping the
    /// ones before where the row is not a multiple of 8 (the same values, so the same result).
    ///
    /// # Safety
    /// AVX must be available.
    #[target_feature(enable = "avx")]
    pub unsafe fn im2col(g: Conv3x3, x: &[f32], col: &mut [f32]) {
        let (ow, p) = (g.ow(), g.p());
        assert!(ow >= 8);
        for ci in 0..g.cin {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut col[(ci * 9 + ky * 3 + kx) * p..][..p];
                    for oy in 0..g.oh() {
                        let src = &x[ci * g.h * g.w + (oy + ky) * g.w + kx..][..ow];
                        let dst = &mut row[oy * ow..][..ow];
                        let mut at = 0;
                        loop {
                            let a = at.min(ow - 8);
                            // SAFETY: a + 8 <= ow, the length of both slices.
                            unsafe {
                                let v = _mm256_loadu_ps(src.as_ptr().add(a));
                                _mm256_storeu_ps(dst.as_mut_ptr().add(a), v);
                            }
                            if a == ow - 8 {
                                break;
                            }
                            at += 8;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Conv3x3;

    /// Every column entry is the input pixel it names, for rows that are a multiple of 8 floats
    /// (conv2: 24), rows that are not (conv1: 26; 11) and rows shorter than a vector (5).
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

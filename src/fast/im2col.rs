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

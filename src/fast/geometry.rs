//! The geometry of a valid 3x3 convolution, stride 1: shared by the f32 kernels (im2col, Winograd,
//! the direct first convolution) and the bf16 packers, so that none of them imports another for it.

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
}

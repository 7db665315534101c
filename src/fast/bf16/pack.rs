//! Packing operands into bf16 pair words: the left operand by rows (pairs along `k`), the
//! right one into 32-column panels of `[pair][column]` words.

use super::{NR, grow, pair, simd};
use std::cell::RefCell;

/// The right operand as given: `[k][n]`, or `[n][k]` when `t`.
pub(super) struct Rhs<'a> {
    pub(super) src: &'a [f32],
    pub(super) t: bool,
    pub(super) k: usize,
    pub(super) n: usize,
}

impl Rhs<'_> {
    pub(super) fn kp(&self) -> usize {
        self.k.div_ceil(2)
    }

    pub(super) fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `q` (columns `32q..32q+32`, zero past `n`) as `[pair][32]` words in `out`.
    pub(super) fn pack_panel(&self, q: usize, out: &mut [u32]) {
        let (k, n, kp) = (self.k, self.n, self.kp());
        let (j0, nc) = (q * NR, NR.min(self.n - q * NR));
        let out = &mut out[..kp * NR];
        if self.t {
            // Stored [n][k]: each stored row's pairs are one column's words, transposed here
            // through a small buffer that stays in L1.
            PANEL_T.with(|t| {
                let mut t = t.borrow_mut();
                let t = grow(&mut t, NR * kp);
                pack_rows_paired(&self.src[j0 * k..], nc, k, t);
                let done = simd::transpose_words(t, nc, kp, out, NR);
                for p in 0..kp {
                    let row = &mut out[p * NR..][..NR];
                    for j in done..nc {
                        row[j] = t[j * kp + p];
                    }
                    row[nc..].fill(0);
                }
            });
        } else {
            pack_rows_interleaved(&self.src[j0..], k, (n, nc), NR, out);
        }
    }
}

thread_local! {
    /// One right-operand panel packed just before use (for operands too wide to pack whole).
    pub(super) static PANEL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PANEL_T: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of `src[rows][k]` as words of consecutive pairs, `kp` words per row (odd `k`: zero
/// partner).
pub(super) fn pack_rows_paired(src: &[f32], rows: usize, k: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (r, o) in out[..rows * kp].chunks_exact_mut(kp).enumerate() {
        let row = &src[r * k..][..k];
        let whole = k / 2;
        let done = simd::pack_paired(&row[..2 * whole], &mut o[..whole]);
        for p in done..whole {
            o[p] = pair(row[2 * p], row[2 * p + 1]);
        }
        if k % 2 == 1 {
            o[whole] = pair(row[k - 1], 0.0);
        }
    }
}

/// Rows of `src` (`k` of them, `row_stride` apart, the first `width` values of each) as words
/// `out[p * out_stride + j] = (row 2p [j], row 2p+1 [j])`; columns from `width` to `out_stride`
/// are zero, as is the partner of an odd last row.
pub(super) fn pack_rows_interleaved(
    src: &[f32],
    k: usize,
    (row_stride, width): (usize, usize),
    out_stride: usize,
    out: &mut [u32],
) {
    let kp = k.div_ceil(2);
    for p in 0..kp {
        let o = &mut out[p * out_stride..][..out_stride];
        let lo = &src[2 * p * row_stride..][..width];
        if 2 * p + 1 < k {
            let hi = &src[(2 * p + 1) * row_stride..][..width];
            let done = simd::pack_interleaved(lo, hi, o);
            for j in done..width {
                o[j] = pair(lo[j], hi[j]);
            }
        } else {
            for j in 0..width {
                o[j] = pair(lo[j], 0.0);
            }
        }
        o[width..].fill(0);
    }
}

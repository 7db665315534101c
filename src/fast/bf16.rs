//! Matrix multiplication with bf16 operands and f32 accumulation (`vdpbf16ps`, AVX512_BF16), for
//! `--precision bf16`: the same `dst (+)= lhs · rhs` on f32 slices as [`super::gemm::matmul`],
//! with both operands rounded to bf16 (round to nearest even) as they are packed.
//!
//! Why by hand: no Rust crate multiplies in bf16 on the CPU (the `gemm` crate's f16 path widens
//! to f32 before multiplying; oneDNN needs a C++ toolchain and is not a Rust crate), and a bf16
//! dot-product instruction does twice the multiply-adds of an f32 FMA per cycle.
//!
//! `vdpbf16ps` adds to each f32 lane the products of one *pair* of bf16 values along the inner
//! dimension `k`, so both operands are packed with pairs of consecutive `k` values in one 32-bit
//! word: the left operand as words `a(row, pair)` at any row/pair stride (it is broadcast one word
//! at a time), the right one as `[pair][column]` words, columns padded to whole 32-column panels
//! (loaded 16 columns to a vector). An odd `k` gets a zero partner.
//!
//! Reproducibility: every output element is the sum over `k` in a fixed order (pairs in order,
//! in blocks of [`KC`] pairs in order), whatever the thread count or the row split, so a run gives
//! the same bits on the same CPU. [`matmul_reference`] is the scalar definition the tests compare
//! against (bf16-rounded operands, f32 sums).

use super::gemm::nothing_to_multiply;
use super::im2col::Conv3x3;
use super::multiply::{Operand, Threads, Write};
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows of the output tile the kernel keeps in registers (8 x 32 f32 = 16 zmm accumulators).
const MR: usize = 8;
/// Columns of the output tile: two 16-lane vectors.
const NR: usize = 32;
/// Pairs of `k` per block: a block of the right operand's panel (192 x 32 words = 24 KiB) stays in
/// the L1 cache while every row tile passes over it.
const KC: usize = 192;
/// A conservative L2 size (per core: 1 MiB on Zen 4/5, 2 MiB on Sapphire Rapids).
const L2_BYTES: usize = 512 * 1024;

/// Whether this CPU has the bf16 dot-product instructions (checked once).
pub(crate) fn available() -> bool {
    crate::device::cpu_has_bf16()
}

/// `x` rounded to bf16 (round to nearest, ties to even), as its 16 bits; NaN stays NaN.
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[cfg(test)]
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded through bf16.
#[cfg(test)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

/// A packed left operand: word `(r, p)` at `r * rs + p * ps`.
struct PackedA<'a> {
    words: &'a [u32],
    rs: usize,
    ps: usize,
}

thread_local! {
    static PACK: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn grow(v: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if v.len() < len {
        v.resize(len, 0);
    }
    &mut v[..len]
}

/// `dst[m,n] (+)= lhs[m,k] · rhs[k,n]` in bf16 with f32 sums, each operand in its own layout;
/// [`Threads::All`] splits the output rows over rayon's threads. Callers check [`available`]
/// first (the precision is resolved once per run).
pub(crate) fn matmul_bf16(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    write: Write,
    threads: Threads,
) {
    assert!(
        available(),
        "bf16 matrix multiply on a CPU without AVX512_BF16"
    );
    if nothing_to_multiply(dst, (m, n, k), lhs.data, rhs.data, write) {
        return;
    }
    let (lhs_t, lhs) = (lhs.is_transposed(), lhs.data);
    let kp = k.div_ceil(2);
    // The buffers leave the thread-local for the call: a parallel multiply's thread may pick up
    // another multiply while it waits (rayon work-stealing), which then finds them empty and
    // allocates its own instead of meeting a borrowed cell.
    let (mut abuf, mut bbuf) = PACK.with(|bufs| std::mem::take(&mut *bufs.borrow_mut()));
    {
        let a = grow(&mut abuf, m * kp);
        let a = if lhs_t {
            // Stored [k][m]: interleaving rows 2p and 2p+1 gives the words pair-major.
            pack_rows_interleaved(lhs, k, (m, m), m, a);
            PackedA {
                words: a,
                rs: 1,
                ps: m,
            }
        } else {
            pack_rows_paired(lhs, m, k, a);
            PackedA {
                words: a,
                rs: kp,
                ps: 1,
            }
        };
        let b = Rhs {
            src: rhs.data,
            t: rhs.is_transposed(),
            k,
            n,
        };
        multiply(dst, m, &a, &b, &mut bbuf, write, threads);
    }
    PACK.with(|bufs| *bufs.borrow_mut() = (abuf, bbuf));
}

/// [`matmul_bf16`] with the left operand (`[m][k]`, not transposed) already packed as `m` rows
/// of `k.div_ceil(2)` pair words, as [`im2col_paired`] writes them.
pub(crate) fn matmul_bf16_words(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[u32],
    rhs: Operand,
    write: Write,
    threads: Threads,
) {
    assert!(
        available(),
        "bf16 matrix multiply on a CPU without AVX512_BF16"
    );
    let kp = k.div_ceil(2);
    assert!(dst.len() >= m * n && a.len() >= m * kp && rhs.data.len() >= k * n);
    if k == 0 && write == Write::Overwrite {
        dst[..m * n].fill(0.0);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The right operand's buffer leaves the thread-local for the call, as in `matmul_bf16`.
    let mut bbuf = PACK.with(|bufs| std::mem::take(&mut bufs.borrow_mut().1));
    let a = PackedA {
        words: a,
        rs: kp,
        ps: 1,
    };
    let b = Rhs {
        src: rhs.data,
        t: rhs.is_transposed(),
        k,
        n,
    };
    multiply(dst, m, &a, &b, &mut bbuf, write, threads);
    PACK.with(|bufs| bufs.borrow_mut().1 = bbuf);
}

/// The im2col matrix of one image (`[cin * 9][pixels]`, see [`Conv3x3::im2col`]) written
/// straight as bf16 pair words, `pixels / 2` per row: the words `pack_rows_paired` makes of it,
/// without the f32 copy in between (for conv2, a 663 KB write and read per image in the weight
/// gradient). Needs an even output width, so that no pair straddles two output rows, and
/// AVX512_BF16; returns `false`, writing nothing, otherwise.
pub(crate) fn im2col_paired(g: Conv3x3, x: &[f32], out: &mut [u32]) -> bool {
    if !available() || !g.ow().is_multiple_of(2) {
        return false;
    }
    assert!(x.len() >= g.in_len() && out.len() >= g.k() * g.p() / 2);
    // SAFETY: the CPU has AVX512F/BW/BF16 (checked above); the lengths are asserted above.
    unsafe { simd::im2col_paired_512(g, x, out) };
    true
}

/// A right operand `[k][n]` packed once as bf16 panels, for a product repeated with many left
/// operands (Winograd's transformed filters, multiplied once per image): packing them per image
/// cost more than the rounding of the images' own values.
pub(crate) struct PackedRhs {
    words: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedRhs {
    /// Packs `rhs[k][n]` (rounded to bf16).
    pub(crate) fn new(rhs: &[f32], k: usize, n: usize) -> PackedRhs {
        assert!(rhs.len() >= k * n);
        let b = Rhs {
            src: rhs,
            t: false,
            k,
            n,
        };
        let mut words = vec![0u32; b.panels() * b.kp() * NR];
        for (q, out) in words.chunks_exact_mut(b.kp() * NR).enumerate() {
            b.pack_panel(q, out);
        }
        PackedRhs { words, k, n }
    }
}

/// `dst[m,n] = a · b` on the calling thread, `a` already packed as `m` rows of `k.div_ceil(2)`
/// pair words (what `pack_rows_paired` writes): the kernel calls of [`matmul_bf16`] for a right
/// operand that fits in L2, in the same order, so the same bits.
pub(crate) fn matmul_packed(dst: &mut [f32], m: usize, a: &[u32], b: &PackedRhs) {
    assert!(
        available(),
        "bf16 matrix multiply on a CPU without AVX512_BF16"
    );
    let (n, kp) = (b.n, b.k.div_ceil(2));
    assert!(dst.len() >= m * n && a.len() >= m * kp);
    if b.k == 0 {
        dst[..m * n].fill(0.0);
    }
    if m == 0 || n == 0 || b.k == 0 {
        return;
    }
    for kb in (0..kp).step_by(KC) {
        for r0 in (0..m).step_by(MR) {
            for (q, panel) in b.words.chunks_exact(kp * NR).enumerate() {
                let (mr, nc, kc) = (MR.min(m - r0), NR.min(n - q * NR), KC.min(kp - kb));
                simd::kernel(
                    mr,
                    kc,
                    &a[r0 * kp + kb..],
                    kp,
                    1,
                    &panel[kb * NR..],
                    NR,
                    &mut dst[r0 * n + q * NR..],
                    n,
                    nc,
                    kb > 0,
                );
            }
        }
    }
}

/// The right operand as given: `[k][n]`, or `[n][k]` when `t`.
struct Rhs<'a> {
    src: &'a [f32],
    t: bool,
    k: usize,
    n: usize,
}

impl Rhs<'_> {
    fn kp(&self) -> usize {
        self.k.div_ceil(2)
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `q` (columns `32q..32q+32`, zero past `n`) as `[pair][32]` words in `out`.
    fn pack_panel(&self, q: usize, out: &mut [u32]) {
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
    static PANEL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PANEL_T: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of `src[rows][k]` as words of consecutive pairs, `kp` words per row (odd `k`: zero
/// partner).
fn pack_rows_paired(src: &[f32], rows: usize, k: usize, out: &mut [u32]) {
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
fn pack_rows_interleaved(
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

/// The blocked product: `m` rows of the packed left operand times the right one, packed here in
/// 32-column panels.
///
/// Two loop orders, by the size of a `k` block of the whole right operand: when it fits in L2
/// (every shape of this network but one) all panels are packed once, and for each `k` block each
/// row tile stays in L1 while the panels stream past; otherwise (the dense layer's input
/// gradient: 9216 columns, 2.4 MiB) each panel is packed just before use into a buffer that
/// stays in cache, and all row tiles pass over it. Either way each output element is summed over
/// the `k` blocks in order.
fn multiply(
    dst: &mut [f32],
    m: usize,
    a: &PackedA<'_>,
    b: &Rhs<'_>,
    bbuf: &mut Vec<u32>,
    write: Write,
    threads: Threads,
) {
    let accumulate = write == Write::Accumulate;
    let (n, kp, panels) = (b.n, b.kp(), b.panels());
    let whole = KC.min(kp) * panels * NR * 4 <= L2_BYTES;
    if whole {
        let packed = grow(bbuf, panels * kp * NR);
        for (q, out) in packed.chunks_exact_mut(kp * NR).enumerate() {
            b.pack_panel(q, out);
        }
    }
    let packed: &[u32] = if whole {
        &bbuf[..panels * kp * NR]
    } else {
        &[]
    };
    // One kernel call: rows `r0..` of `rows` (row `first_row + r0` of the operand), panel `q`
    // from `panel` (its `kp` pairs), pairs `kb..kb + kc`.
    let one =
        |rows: &mut [f32], first_row: usize, r0: usize, q: usize, panel: &[u32], kb: usize| {
            let m_here = rows.len() / n;
            let (mr, nc, kc) = (MR.min(m_here - r0), NR.min(n - q * NR), KC.min(kp - kb));
            let aw = &a.words[(first_row + r0) * a.rs + kb * a.ps..];
            let bw = &panel[kb * NR..];
            let c = &mut rows[r0 * n + q * NR..];
            simd::kernel(
                mr,
                kc,
                aw,
                a.rs,
                a.ps,
                bw,
                NR,
                c,
                n,
                nc,
                accumulate || kb > 0,
            );
        };
    let tiles = |first_row: usize, rows: &mut [f32]| {
        let m_here = rows.len() / n;
        if whole {
            for kb in (0..kp).step_by(KC) {
                for r0 in (0..m_here).step_by(MR) {
                    for (q, panel) in packed.chunks_exact(kp * NR).enumerate() {
                        one(rows, first_row, r0, q, panel, kb);
                    }
                }
            }
        } else {
            PANEL.with(|buf| {
                let mut buf = buf.borrow_mut();
                let panel = grow(&mut buf, kp * NR);
                for q in 0..panels {
                    b.pack_panel(q, panel);
                    for kb in (0..kp).step_by(KC) {
                        for r0 in (0..m_here).step_by(MR) {
                            one(rows, first_row, r0, q, panel, kb);
                        }
                    }
                }
            })
        }
    };
    let pool = rayon::current_num_threads();
    if threads == Threads::All && pool > 1 && m > MR {
        // Whole row tiles per task; each output element is still summed in the same order.
        let per = m.div_ceil(MR).div_ceil(pool) * MR;
        dst[..m * n]
            .par_chunks_mut(per * n)
            .enumerate()
            .for_each(|(i, rows)| tiles(i * per, rows));
    } else {
        tiles(0, &mut dst[..m * n]);
    }
}

/// The definition: operands rounded to bf16, products and sums in f32, pairs in order (the
/// hardware adds each pair's two products before the running sum; the difference is within
/// f32 rounding, which the tests allow for).
#[cfg(test)]
pub(crate) fn matmul_reference(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    accumulate: bool,
) {
    let at = |i: usize, p: usize| {
        round_bf16(if lhs_t {
            lhs[p * m + i]
        } else {
            lhs[i * k + p]
        })
    };
    let bt = |p: usize, j: usize| {
        round_bf16(if rhs_t {
            rhs[j * k + p]
        } else {
            rhs[p * n + j]
        })
    };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                s += at(i, p) * bt(p, j);
            }
            let d = &mut dst[i * n + j];
            *d = if accumulate { *d + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Pairs of `src` (even length) as words; returns how many words were written (the rest is
    /// left to the scalar loop): 32 values per step.
    pub(super) fn pack_paired(src: &[f32], out: &mut [u32]) -> usize {
        if !super::available() {
            return 0;
        }
        // SAFETY: the CPU has AVX512F/BW/BF16 (checked above); every access is bounds-checked
        // by the slice lengths in `pack_paired_512`.
        unsafe { pack_paired_512(src, out) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_paired_512(src: &[f32], out: &mut [u32]) -> usize {
        let steps = (src.len() / 32).min(out.len() / 16);
        for s in 0..steps {
            let v = &src[32 * s..][..32];
            let o = &mut out[16 * s..][..16];
            // SAFETY: `v` holds 32 floats and `o` 16 words (unaligned loads and stores).
            unsafe {
                let lo = _mm512_loadu_ps(v.as_ptr());
                let hi = _mm512_loadu_ps(v.as_ptr().add(16));
                // Lower 16 halves from `lo`, upper from `hi`: the values in order.
                let h = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(
                    o.as_mut_ptr().cast(),
                    std::mem::transmute::<__m512bh, __m512i>(h),
                );
            }
        }
        steps * 16
    }

    /// [`super::im2col_paired`]'s copy: each output row's `ow` values (even) of each shifted
    /// input row converted 32 at a time, the rest with masked loads and a masked store (the
    /// words `pack_paired_512` writes for the same values).
    ///
    /// # Safety
    /// AVX512F/BW/BF16; `x` holds the image (`g.in_len()`), `out` `g.k() * g.p() / 2` words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn im2col_paired_512(g: super::Conv3x3, x: &[f32], out: &mut [u32]) {
        let (ow, half) = (g.ow(), g.p() / 2);
        let whole = ow / 32;
        let rest = ow % 32;
        let lo_mask = ((1u32 << rest.min(16)) - 1) as u16;
        let hi_mask = ((1u32 << rest.saturating_sub(16)) - 1) as u16;
        let word_mask = ((1u32 << (rest / 2)) - 1) as u16;
        for ci in 0..g.cin {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = (ci * 9 + ky * 3 + kx) * half;
                    for oy in 0..g.oh() {
                        // SAFETY: the source row `ow` values from pixel (oy + ky, kx) of channel
                        // ci lie inside the image; the `ow / 2` words at `row + oy * ow / 2`
                        // inside `out`; masked-off lanes are neither read nor written.
                        unsafe {
                            let src = x.as_ptr().add(ci * g.h * g.w + (oy + ky) * g.w + kx);
                            let dst = out.as_mut_ptr().add(row + oy * ow / 2);
                            for b in 0..whole {
                                let lo = _mm512_loadu_ps(src.add(32 * b));
                                let hi = _mm512_loadu_ps(src.add(32 * b + 16));
                                let h = _mm512_cvtne2ps_pbh(hi, lo);
                                _mm512_storeu_si512(
                                    dst.add(16 * b).cast(),
                                    std::mem::transmute::<__m512bh, __m512i>(h),
                                );
                            }
                            if rest > 0 {
                                let (src, dst) = (src.add(32 * whole), dst.add(16 * whole));
                                let lo = _mm512_maskz_loadu_ps(lo_mask, src);
                                let hi = _mm512_maskz_loadu_ps(hi_mask, src.add(16.min(rest)));
                                let h = _mm512_cvtne2ps_pbh(hi, lo);
                                _mm512_mask_storeu_epi32(
                                    dst.cast(),
                                    word_mask,
                                    std::mem::transmute::<__m512bh, __m512i>(h),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Words `(lo[j], hi[j])` for the first multiple of 16 columns; returns how many.
    pub(super) fn pack_interleaved(lo: &[f32], hi: &[f32], out: &mut [u32]) -> usize {
        if !super::available() {
            return 0;
        }
        // SAFETY: as in `pack_paired`.
        unsafe { pack_interleaved_512(lo, hi, out) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_interleaved_512(lo: &[f32], hi: &[f32], out: &mut [u32]) -> usize {
        let steps = lo.len().min(hi.len()).min(out.len()) / 16;
        // Halves 0..16 are `lo`'s, 16..32 `hi`'s; word j takes lo[j] then hi[j].
        let idx: [i16; 32] = std::array::from_fn(|i| ((i / 2) + 16 * (i % 2)) as i16);
        // SAFETY: `idx` is 32 halves (64 bytes).
        let idx = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
        for s in 0..steps {
            let (l, h) = (&lo[16 * s..][..16], &hi[16 * s..][..16]);
            let o = &mut out[16 * s..][..16];
            // SAFETY: 16 floats in each of `l` and `h`, 16 words in `o`.
            unsafe {
                let v =
                    _mm512_cvtne2ps_pbh(_mm512_loadu_ps(h.as_ptr()), _mm512_loadu_ps(l.as_ptr()));
                let v = std::mem::transmute::<__m512bh, __m512i>(v);
                let w = _mm512_permutexvar_epi16(idx, v);
                _mm512_storeu_si512(o.as_mut_ptr().cast(), w);
            }
        }
        steps * 16
    }

    /// `b[p * ldb + j] = t[j * kp + p]` for the first multiple of 16 of the `n` columns (16
    /// columns' words gathered per store); returns how many columns.
    pub(super) fn transpose_words(
        t: &[u32],
        n: usize,
        kp: usize,
        b: &mut [u32],
        ldb: usize,
    ) -> usize {
        if !super::available() {
            return 0;
        }
        // SAFETY: as in `pack_paired`.
        unsafe { transpose_words_512(t, n, kp, b, ldb) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn transpose_words_512(t: &[u32], n: usize, kp: usize, b: &mut [u32], ldb: usize) -> usize {
        let blocks = n / 16;
        assert!(t.len() >= n * kp && b.len() >= kp.saturating_sub(1) * ldb + blocks * 16);
        let offsets: [i32; 16] = std::array::from_fn(|i| (i * kp) as i32);
        // SAFETY: 16 i32 offsets; every gathered index `(j0 + i) * kp + p` is below `n * kp` and
        // every store of 16 words ends by `p * ldb + blocks * 16`, both asserted above.
        unsafe {
            let offsets = _mm512_loadu_si512(offsets.as_ptr().cast());
            for jb in 0..blocks {
                let base = t.as_ptr().add(jb * 16 * kp);
                for p in 0..kp {
                    let v = _mm512_i32gather_epi32::<4>(offsets, base.add(p).cast());
                    _mm512_storeu_si512(b.as_mut_ptr().add(p * ldb + jb * 16).cast(), v);
                }
            }
        }
        blocks * 16
    }

    /// `c[r][j] (+)= Σ_p a(r, p) · b[p][j]` for `mr ≤ 8` rows and the first `nc ≤ 32` of 32
    /// columns, over `kc` pairs: `a` holds words `(r, p)` at `r * rs + p * ps`, `b` 32 words at
    /// each `p * ldb`, `c` rows at stride `ldc`. The bounds are checked here (a few compares
    /// per tile of at least 16·`kc` multiply instructions); the CPU's bf16 support by
    /// `matmul_bf16`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kernel(
        mr: usize,
        kc: usize,
        a: &[u32],
        rs: usize,
        ps: usize,
        b: &[u32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        nc: usize,
        accumulate: bool,
    ) {
        assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nc) && kc > 0);
        assert!(a.len() > (mr - 1) * rs + (kc - 1) * ps);
        assert!(b.len() >= (kc - 1) * ldb + NR);
        assert!(c.len() >= (mr - 1) * ldc + nc);
        assert!(super::available());
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        // SAFETY: the CPU has the instructions and every offset `tile` reads or writes is
        // within the slices (asserted above).
        unsafe {
            match mr {
                8 => tile::<8>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                7 => tile::<7>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                6 => tile::<6>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                5 => tile::<5>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                4 => tile::<4>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                3 => tile::<3>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                2 => tile::<2>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
                _ => tile::<1>(kc, a, rs, ps, b, ldb, c, ldc, nc, accumulate),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const R: usize>(
        kc: usize,
        a: *const u32,
        rs: usize,
        ps: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        nc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY (whole body): the caller's contract bounds every pointer offset below.
        unsafe {
            for p in 0..kc {
                let bp = b.add(p * ldb);
                let b0 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.cast()));
                let b1 =
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(16).cast()));
                let ap = a.add(p * ps);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_epi32(*ap.add(r * rs) as i32);
                    let w = std::mem::transmute::<__m512i, __m512bh>(w);
                    acc[0] = _mm512_dpbf16_ps(acc[0], w, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], w, b1);
                }
            }
            let m0: __mmask16 = if nc >= 16 {
                0xFFFF
            } else {
                (1u32 << nc) as u16 - 1
            };
            let m1: __mmask16 = if nc >= 32 {
                0xFFFF
            } else if nc > 16 {
                (1u32 << (nc - 16)) as u16 - 1
            } else {
                0
            };
            for (r, acc) in acc.iter().enumerate() {
                let row = c.add(r * ldc);
                for (h, mask) in [(0usize, m0), (1, m1)] {
                    if mask == 0 {
                        continue;
                    }
                    let dst = row.add(16 * h);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), acc[h])
                    } else {
                        acc[h]
                    };
                    _mm512_mask_storeu_ps(dst, mask, v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub(super) fn pack_paired(_: &[f32], _: &mut [u32]) -> usize {
        0
    }
    pub(super) unsafe fn im2col_paired_512(_: super::Conv3x3, _: &[f32], _: &mut [u32]) {
        unreachable!("im2col_paired checks `available()`, which is false off x86-64")
    }
    pub(super) fn pack_interleaved(_: &[f32], _: &[f32], _: &mut [u32]) -> usize {
        0
    }
    pub(super) fn transpose_words(_: &[u32], _: usize, _: usize, _: &mut [u32], _: usize) -> usize {
        0
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kernel(
        _: usize,
        _: usize,
        _: &[u32],
        _: usize,
        _: usize,
        _: &[u32],
        _: usize,
        _: &mut [f32],
        _: usize,
        _: usize,
        _: bool,
    ) {
        unreachable!("matmul_bf16 checks `available()`, which is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::gemm::matmul;
    use crate::fast::multiply::Layout;
    use crate::fast::tests::noise;

    /// im2col straight to bf16 words gives the words of packing the f32 im2col matrix, for
    /// output widths below, at and above one 32-value step (24, 32, 40) and an odd one refused.
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn im2col_paired_gives_the_packed_im2col_words() {
        assert!(available(), "built for AVX512_BF16, run without it");
        for (cin, side) in [(32, 26), (2, 34), (3, 42)] {
            let g = Conv3x3 {
                n: 1,
                cin,
                h: side,
                w: side,
                cout: 1,
            };
            let x = noise(g.in_len(), 5);
            let mut col = vec![0f32; g.k() * g.p()];
            g.im2col(&x, &mut col);
            let mut packed = vec![0u32; g.k() * g.p() / 2];
            pack_rows_paired(&col, g.k(), g.p(), &mut packed);
            let mut direct = vec![u32::MAX; g.k() * g.p() / 2];
            assert!(im2col_paired(g, &x, &mut direct));
            assert_eq!(direct, packed, "{cin}x{side}");
        }
        let odd = Conv3x3 {
            n: 1,
            cin: 1,
            h: 9,
            w: 9,
            cout: 1,
        };
        assert!(!im2col_paired(odd, &noise(81, 1), &mut [0; 7 * 7 * 9]));
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        // Every value lands within half a unit of bf16's 8-bit significand: 2^-8 relative.
        for v in noise(10_000, 3) {
            assert!((round_bf16(v) - v).abs() <= v.abs() * 2f32.powi(-8));
        }
    }

    /// The kernel against the scalar definition for every layout, odd sizes, partial tiles,
    /// more than one `k` block, accumulation, serial and parallel.
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn bf16_matmul_matches_the_scalar_definition() {
        assert!(available(), "built for AVX512_BF16, run without it");
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 2),
            (9, 33, 17),
            (64, 576, 288),
            (17, 40, 2 * KC + 5),
            (130, 128, 64),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for (lt, rt, acc, par) in [
                (false, false, false, false),
                (true, false, true, true),
                (false, true, false, true),
                (true, true, true, false),
            ] {
                let lhs = noise(m * k, 10 + si as u32);
                let rhs = noise(k * n, 20 + si as u32);
                let init = noise(m * n, 30 + si as u32);
                let (mut fast, mut slow) = (init.clone(), init.clone());
                matmul_bf16(
                    &mut fast,
                    (m, n, k),
                    Operand {
                        data: &lhs,
                        layout: Layout::transposed_if(lt),
                    },
                    Operand {
                        data: &rhs,
                        layout: Layout::transposed_if(rt),
                    },
                    Write::accumulate_if(acc),
                    Threads::all_if(par),
                );
                matmul_reference(&mut slow, (m, n, k), &lhs, lt, &rhs, rt, acc);
                // Same bf16 operands; only the f32 summation order may differ: k roundings of
                // at most 2^-24 of a partial sum bounded by k (|values| < 1), on either side.
                let tol = 2.0 * (k * k) as f32 * 2f32.powi(-24) + 1e-6;
                let worst = fast
                    .iter()
                    .zip(&slow)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= tol, "{m}x{n}x{k} lt={lt} rt={rt}: off by {worst}");
            }
        }
    }

    /// bf16 against f32: each operand's relative rounding error is at most 2^-8, so a product's
    /// about 2^-7; a sum of `k` products of values below 1 could be off by `k`·2^-7 at worst, but
    /// errors of random sign add up like √k: for these values (|product| ≈ 1/3 on average) the
    /// error stays near √k·2^-8, which is checked with a margin of 4.
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn bf16_matmul_is_within_bf16_rounding_of_f32() {
        assert!(available(), "built for AVX512_BF16, run without it");
        let (m, n, k) = (64, 576, 288);
        let (lhs, rhs) = (noise(m * k, 1), noise(k * n, 2));
        let (mut lo, mut hi) = (vec![0f32; m * n], vec![0f32; m * n]);
        matmul_bf16(
            &mut lo,
            (m, n, k),
            Operand::rows(&lhs),
            Operand::rows(&rhs),
            Write::Overwrite,
            Threads::Caller,
        );
        matmul(
            &mut hi,
            (m, n, k),
            Operand::rows(&lhs),
            Operand::rows(&rhs),
            Write::Overwrite,
            Threads::Caller,
        );
        let worst = lo
            .iter()
            .zip(&hi)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let bound = 4.0 * (k as f32).sqrt() * 2f32.powi(-8);
        assert!(worst <= bound, "off by {worst}, bound {bound}");
        assert!(
            worst > 0.0,
            "bf16 gave exactly the f32 result: not rounding?"
        );
    }

    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn bf16_matmul_gives_the_same_bits_serial_and_parallel() {
        assert!(available(), "built for AVX512_BF16, run without it");
        let (m, n, k) = (128, 128, 9216 / 4);
        let (lhs, rhs) = (noise(m * k, 4), noise(k * n, 5));
        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
        matmul_bf16(
            &mut a,
            (m, n, k),
            Operand::rows(&lhs),
            Operand::rows(&rhs),
            Write::Overwrite,
            Threads::Caller,
        );
        matmul_bf16(
            &mut b,
            (m, n, k),
            Operand::rows(&lhs),
            Operand::rows(&rhs),
            Write::Overwrite,
            Threads::All,
        );
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Single-thread speed of both precisions on the network's shapes: `cargo test --release --lib
/// bf16_speed -- --ignored --nocapture` (a measurement, not a check).
#[cfg(test)]
mod speed {
    use super::*;
    use crate::fast::gemm::matmul;
    use crate::fast::multiply::Layout;
    use crate::fast::tests::noise;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn bf16_speed() {
        for (what, (m, n, k), lt, rt) in [
            ("conv2 forward", (64, 576, 288), false, false),
            ("conv2 dW", (64, 288, 576), false, true),
            ("conv2 dX", (288, 576, 64), true, false),
            ("dense forward b128", (128, 128, 9216), false, false),
            ("dense dW b128", (9216, 128, 128), true, false),
            ("dense dX b128", (128, 9216, 128), false, true),
            ("winograd product", (144, 64, 32), false, false),
        ] {
            let (lhs, rhs) = (noise(m * k, 1), noise(k * n, 2));
            let mut dst = vec![0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let reps = (2e9 / flop).ceil() as usize;
            let mut time = |f: &mut dyn FnMut(&mut [f32])| {
                f(&mut dst);
                let t = Instant::now();
                for _ in 0..reps {
                    f(&mut dst);
                }
                flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let f32_rate = time(&mut |d| {
                matmul(
                    d,
                    (m, n, k),
                    Operand {
                        data: &lhs,
                        layout: Layout::transposed_if(lt),
                    },
                    Operand {
                        data: &rhs,
                        layout: Layout::transposed_if(rt),
                    },
                    Write::Overwrite,
                    Threads::Caller,
                )
            });
            let bf16_rate = time(&mut |d| {
                matmul_bf16(
                    d,
                    (m, n, k),
                    Operand {
                        data: &lhs,
                        layout: Layout::transposed_if(lt),
                    },
                    Operand {
                        data: &rhs,
                        layout: Layout::transposed_if(rt),
                    },
                    Write::Overwrite,
                    Threads::Caller,
                )
            });
            println!(
                "{what:20} f32 {f32_rate:6.1} GFLOP/s  bf16 {bf16_rate:6.1} GFLOP/s  x{:.2}",
                bf16_rate / f32_rate
            );
        }
    }
}

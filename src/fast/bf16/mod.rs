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
use super::geometry::Conv3x3;
use crate::fast::operand::{Operand, Threads, Write};
use pack::{PANEL, Rhs, pack_rows_interleaved, pack_rows_paired};
use rayon::prelude::*;
use std::cell::RefCell;

mod pack;
pub(crate) use simd::im2col_paired_512;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(not(target_arch = "x86_64"))]
#[path = "simd_other.rs"]
mod simd;
#[cfg(test)]
mod tests;

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

/// One call of the kernel: `c[r][j] (+)= Σ_p a(r, p) · b[p][j]` for `mr ≤ 8` rows and the
/// first `nc ≤ 32` of 32 columns, over `kc` pairs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tile<'a> {
    /// The left operand's words: `(r, p)` at `r * rs + p * ps`.
    pub(super) a: &'a [u32],
    pub(super) rs: usize,
    pub(super) ps: usize,
    /// The right operand's panel: 32 words at each `p * ldb`.
    pub(super) b: &'a [u32],
    pub(super) ldb: usize,
    pub(super) mr: usize,
    pub(super) nc: usize,
    pub(super) kc: usize,
    /// Add to `c`'s values instead of overwriting them.
    pub(super) add: bool,
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
/// of `k.div_ceil(2)` pair words, as [`super::im2col::im2col_paired`] writes them.
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
                let tile = Tile {
                    a: &a[r0 * kp + kb..],
                    rs: kp,
                    ps: 1,
                    b: &panel[kb * NR..],
                    ldb: NR,
                    mr,
                    nc,
                    kc,
                    add: kb > 0,
                };
                simd::kernel(tile, &mut dst[r0 * n + q * NR..], n);
            }
        }
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
            let tile = Tile {
                a: aw,
                rs: a.rs,
                ps: a.ps,
                b: bw,
                ldb: NR,
                mr,
                nc,
                kc,
                add: accumulate || kb > 0,
            };
            simd::kernel(tile, c, n);
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

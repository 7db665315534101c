//! The AVX512_BF16 instructions: packing to pair words 32 values at a time, and the kernel that
//! multiplies one tile with `vdpbf16ps`.

use super::{MR, NR, Tile};
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

/// [`crate::fast::im2col::im2col_paired`]'s copy: each output row's `ow` values (even) of each shifted
/// input row converted 32 at a time, the rest with masked loads and a masked store (the
/// words `pack_paired_512` writes for the same values).
///
/// # Safety
/// AVX512F/BW/BF16; `x` holds the image (`g.in_len()`), `out` `g.k() * g.p() / 2` words.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn im2col_paired_512(g: super::Conv3x3, x: &[f32], out: &mut [u32]) {
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
            let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(h.as_ptr()), _mm512_loadu_ps(l.as_ptr()));
            let v = std::mem::transmute::<__m512bh, __m512i>(v);
            let w = _mm512_permutexvar_epi16(idx, v);
            _mm512_storeu_si512(o.as_mut_ptr().cast(), w);
        }
    }
    steps * 16
}

/// `b[p * ldb + j] = t[j * kp + p]` for the first multiple of 16 of the `n` columns (16
/// columns' words gathered per store); returns how many columns.
pub(super) fn transpose_words(t: &[u32], n: usize, kp: usize, b: &mut [u32], ldb: usize) -> usize {
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

/// Multiplies one [`Tile`] into `c` (rows at stride `ldc`). The bounds are checked here (a few
/// compares per tile of at least 16·`kc` multiply instructions); the CPU's bf16 support by
/// `matmul_bf16`.
pub(super) fn kernel(t: Tile, c: &mut [f32], ldc: usize) {
    let Tile {
        a,
        rs,
        ps,
        b,
        ldb,
        mr,
        nc,
        kc,
        add: _,
    } = t;
    assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nc) && kc > 0);
    assert!(a.len() > (mr - 1) * rs + (kc - 1) * ps);
    assert!(b.len() >= (kc - 1) * ldb + NR);
    assert!(c.len() >= (mr - 1) * ldc + nc);
    assert!(super::available());
    let c = c.as_mut_ptr();
    // SAFETY: the CPU has the instructions and every offset `tile` reads or writes is within
    // the slices (asserted above).
    unsafe {
        match mr {
            8 => tile::<8>(t, c, ldc),
            7 => tile::<7>(t, c, ldc),
            6 => tile::<6>(t, c, ldc),
            5 => tile::<5>(t, c, ldc),
            4 => tile::<4>(t, c, ldc),
            3 => tile::<3>(t, c, ldc),
            2 => tile::<2>(t, c, ldc),
            _ => tile::<1>(t, c, ldc),
        }
    }
}

/// # Safety
/// AVX512F/BW/BF16, and `t`'s bounds as [`kernel`] checks them.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile<const R: usize>(t: Tile, c: *mut f32, ldc: usize) {
    let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
    let (rs, ps, ldb, nc, kc, accumulate) = (t.rs, t.ps, t.ldb, t.nc, t.kc, t.add);
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

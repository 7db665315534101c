//! bf16's input transform over 16 channels per AVX-512 register, writing the bf16 pair words
//! the AVX512_BF16 multiply reads (`pulp` has no bf16 conversion): the operations of
//! [`super::transforms::InputTransform`] in its order, so the f32 values rounded are the same.

use std::arch::x86_64::*;

/// Channels per register.
pub(super) const L: usize = 16;

/// `Bᵀ d B` of one 4x4 input tile for channels `cb..cb + 16`: `[i][j]` is position
/// `i * 4 + j`; the tile's top-left pixel is `at` (channel-last rows of `w` pixels).
///
/// # Safety
/// AVX-512F; the 4x4 pixels from `at`, channels `cb..cb + 16`, must be inside the image.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_transform(at: *const f32, w: usize, cin: usize) -> [[__m512; 4]; 4] {
    // SAFETY: the caller's bounds.
    unsafe {
        let ld = |i: usize, j: usize| _mm512_loadu_ps(at.add((i * w + j) * cin));
        let mut r = [[_mm512_setzero_ps(); 4]; 4];
        for (j, rj) in r.iter_mut().enumerate() {
            let (d0, d1, d2, d3) = (ld(0, j), ld(1, j), ld(2, j), ld(3, j));
            *rj = [
                _mm512_sub_ps(d0, d2),
                _mm512_add_ps(d1, d2),
                _mm512_sub_ps(d2, d1),
                _mm512_sub_ps(d1, d3),
            ];
        }
        std::array::from_fn(|i| {
            [
                _mm512_sub_ps(r[0][i], r[2][i]),
                _mm512_add_ps(r[1][i], r[2][i]),
                _mm512_sub_ps(r[2][i], r[1][i]),
                _mm512_sub_ps(r[1][i], r[3][i]),
            ]
        })
    }
}

/// The input transform of the `nt` blocks from `t0` ([`super::transforms::InputTransform`]'s
/// operations in its order), writing each value as bf16 (round to
/// nearest even, as the bf16 multiply packs), two channels to a word:
/// `v[((ξ * nt + b) * cin + c) / 2]` holds channels `c` and `c + 1` (`c` even) of block
/// `t0 + b`, the rows of pair words the bf16 kernel reads.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) fn input_transform_bf16(
    hwc: &[f32],
    w: usize,
    cin: usize,
    tw: usize,
    (t0, nt): (usize, usize),
    v: &mut [u32],
) {
    assert!(cin.is_multiple_of(L) && tw > 0 && nt > 0);
    let last_row = (t0 + nt - 1) / tw;
    assert!(hwc.len() >= ((2 * last_row + 3) * w + 2 * tw + 2) * cin);
    assert!(v.len() >= 16 * nt * cin / 2);
    let (src, dst) = (hwc.as_ptr(), v.as_mut_ptr());
    for b in 0..nt {
        let (ty, tx) = ((t0 + b) / tw, (t0 + b) % tw);
        for cb in (0..cin).step_by(L) {
            // SAFETY: the tile's pixels (rows up to `last_row`) are inside the image; each
            // store of 8 words ends by (((i * 4 + j) * nt + b) * cin + cb + 16) / 2 <=
            // 16 * nt * cin / 2.
            unsafe {
                let at = src.add(((2 * ty) * w + 2 * tx) * cin + cb);
                for (i, row) in tile_transform(at, w, cin).into_iter().enumerate() {
                    for (j, o) in row.into_iter().enumerate() {
                        let h = _mm512_cvtneps_pbh(o);
                        let at = dst.add((((i * 4 + j) * nt + b) * cin + cb) / 2);
                        _mm256_storeu_si256(at.cast(), std::mem::transmute::<__m256bh, __m256i>(h));
                    }
                }
            }
        }
    }
}

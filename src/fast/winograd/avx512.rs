//! The three transforms over 16 channels per AVX-512 register, with the portable versions'
//! operations in the same order (so the same bits). Why by hand: compiled from the portable
//! 8-lane arrays, the transforms called the arrays' element closures as out-of-line SSE
//! functions, and took ~45% of a bf16 inference (perf), more than the multiplies.

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

/// See [`super::input_transform_portable`]; `cin` a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) fn input_transform(
    hwc: &[f32],
    w: usize,
    cin: usize,
    th: usize,
    tw: usize,
    v: &mut [f32],
) {
    let tiles = th * tw;
    assert!(cin.is_multiple_of(L) && th > 0 && tw > 0);
    assert!(hwc.len() >= ((2 * th + 1) * w + 2 * tw + 2) * cin);
    assert!(v.len() >= 16 * tiles * cin);
    let (src, dst) = (hwc.as_ptr(), v.as_mut_ptr());
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            for cb in (0..cin).step_by(L) {
                // SAFETY: the tile's pixels (2ty + i, 2tx + j), i, j < 4, are inside the
                // image (asserted above), channels cb..cb + 16 < cin; every store at
                // ((i * 4 + j) * tiles + t) * cin + cb + 16 <= 16 * tiles * cin.
                unsafe {
                    let at = src.add(((2 * ty) * w + 2 * tx) * cin + cb);
                    for (i, row) in tile_transform(at, w, cin).into_iter().enumerate() {
                        for (j, o) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(dst.add(((i * 4 + j) * tiles + t) * cin + cb), o);
                        }
                    }
                }
            }
        }
    }
}

/// [`input_transform`] of the `nt` blocks from `t0`, writing each value as bf16 (round to
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
            // SAFETY: the loads as in `input_transform` (tile rows up to `last_row`); each
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

/// Block `t`'s 2x2 outputs for channels `cb..cb + 16`: `Aᵀ m A`, as `[[y00, y01], [y10, y11]]`.
///
/// # Safety
/// AVX-512F; `m` must hold `16 * tiles * cout` floats, `t < tiles`, `cb + 16 <= cout`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block(m: *const f32, tiles: usize, cout: usize, t: usize, cb: usize) -> [[__m512; 2]; 2] {
    // SAFETY: the caller's bounds.
    unsafe {
        let mut a = [[_mm512_setzero_ps(); 2]; 4];
        for (r, ar) in a.iter_mut().enumerate() {
            let row = |c: usize| _mm512_loadu_ps(m.add(((4 * r + c) * tiles + t) * cout + cb));
            let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
            *ar = [
                _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
                _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
            ];
        }
        [
            [
                _mm512_add_ps(_mm512_add_ps(a[0][0], a[1][0]), a[2][0]),
                _mm512_add_ps(_mm512_add_ps(a[0][1], a[1][1]), a[2][1]),
            ],
            [
                _mm512_sub_ps(_mm512_sub_ps(a[1][0], a[2][0]), a[3][0]),
                _mm512_sub_ps(_mm512_sub_ps(a[1][1], a[2][1]), a[3][1]),
            ],
        ]
    }
}

/// See [`super::output_pool_portable`]; `cout` a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) fn output_pool(
    m: &[f32],
    tiles: usize,
    cout: usize,
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
) {
    assert!(cout.is_multiple_of(L));
    assert!(m.len() >= 16 * tiles * cout && out.len() >= tiles * cout);
    assert!(scale.len() >= cout && shift.len() >= cout);
    let zero = _mm512_setzero_ps();
    for t in 0..tiles {
        for cb in (0..cout).step_by(L) {
            // SAFETY: the bounds asserted above.
            unsafe {
                let y = block(m.as_ptr(), tiles, cout, t, cb);
                let (s, b) = (
                    _mm512_loadu_ps(scale.as_ptr().add(cb)),
                    _mm512_loadu_ps(shift.as_ptr().add(cb)),
                );
                // relu(y·s + b) (a multiply, then an add: no fused rounding); `max(v, 0)`
                // gives 0 for a NaN, as `f32::max` does.
                let act = |y| _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(y, s), b), zero);
                // `max(b, a)` is `b > a ? b : a`: the portable pick, in its order.
                let pick = |a, b| _mm512_max_ps(b, a);
                let v = pick(
                    pick(act(y[0][0]), act(y[0][1])),
                    pick(act(y[1][0]), act(y[1][1])),
                );
                _mm512_storeu_ps(out.as_mut_ptr().add(t * cout + cb), v);
            }
        }
    }
}

/// See [`super::output_full_portable`], for the `nt` blocks from `t0` (`m` holds theirs:
/// `[16][nt][cout]`); `cout` a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) fn output_full(
    m: &[f32],
    (t0, nt): (usize, usize),
    tw: usize,
    cout: usize,
    out: &mut [f32],
) {
    let ow = 2 * tw;
    assert!(cout.is_multiple_of(L) && tw > 0);
    let last_row = (t0 + nt).div_ceil(tw);
    assert!(m.len() >= 16 * nt * cout && out.len() >= 2 * last_row * ow * cout);
    for b in 0..nt {
        let (ty, tx) = ((t0 + b) / tw, (t0 + b) % tw);
        for cb in (0..cout).step_by(L) {
            // SAFETY: the bounds asserted above; pixel (2ty + i, 2tx + j) is in the first
            // 2 * last_row rows.
            unsafe {
                let y = block(m.as_ptr(), nt, cout, b, cb);
                for (i, yr) in y.iter().enumerate() {
                    for (j, v) in yr.iter().enumerate() {
                        let px = (2 * ty + i) * ow + 2 * tx + j;
                        _mm512_storeu_ps(out.as_mut_ptr().add(px * cout + cb), *v);
                    }
                }
            }
        }
    }
}

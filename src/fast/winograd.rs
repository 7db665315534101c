//! Conv 3x3 by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016): the forward
//! convolution of training, and evaluation's conv → batch norm (folded) → ReLU → 2x2 max pool.
//! When it is used is decided in `conv.rs`; the backward passes stay im2col.
//!
//! Why: conv2's matrix multiply already runs near the CPU's peak; F(2x2, 3x3) needs 2.25x fewer
//! multiplications. Each 4x4 input tile gives a 2x2 output block — exactly one pooling window —
//! so in evaluation the output transform, batch norm, ReLU and pooling run together and no
//! unpooled activation is stored; evaluation hands in the input channel-last, as the first
//! block writes it ([`Plan::pool_hwc`]). No crate offers a CPU Winograd convolution over plain
//! slices; the transforms are a few dozen additions each, over 16-channel AVX-512 registers
//! (`avx512`), with portable 8-channel versions elsewhere. In bf16 the products' operands are
//! packed once (filters) or written as bf16 by the input transform.

use super::bf16::{self, PackedRhs};
use super::gemm::with_scratch;
use super::im2col::Conv3x3;
use super::multiply::{Operand, Threads, Write, matmul_in};
use super::transpose::transpose;
use crate::device::Precision;
use multiversion::multiversion;
use rayon::prelude::*;
use std::cell::RefCell;

/// Channels per vector: the transforms work on 8 channels at once (one AVX2 register).
const L: usize = 8;
type Lanes = [f32; L];

#[inline(always)]
fn load(s: &[f32]) -> Lanes {
    let mut a = [0f32; L];
    a.copy_from_slice(&s[..L]);
    a
}

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|i| a[i] + b[i])
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|i| a[i] - b[i])
}

/// Filters in the transformed domain, `u[ξ][ci][co] = (G g Gᵀ)[ξ]` for each of the 16 positions,
/// with G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
fn filter_transform(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &w[(co * cin + ci) * 9..][..9];
            let t: [[f32; 3]; 4] = std::array::from_fn(|r| {
                std::array::from_fn(|c| {
                    let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
                    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d][r]
                })
            });
            for (r, &[a, b, d]) in t.iter().enumerate() {
                let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (c, v) in row.into_iter().enumerate() {
                    u[((r * 4 + c) * cin + ci) * cout + co] = v;
                }
            }
        }
    }
    u
}

/// `v[ξ][t][ci] = (Bᵀ d B)[ξ]` for the 4x4 input tile `d` of every output block `t` (row-major
/// over `th x tw`), with Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. `hwc`
/// is the image with channels innermost.
#[multiversion(targets = "simd")]
fn input_transform_portable(
    hwc: &[f32],
    w: usize,
    cin: usize,
    th: usize,
    tw: usize,
    v: &mut [f32],
) {
    let tiles = th * tw;
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            for cb in (0..cin).step_by(L) {
                let d: [[Lanes; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| {
                        load(&hwc[((2 * ty + i) * w + 2 * tx + j) * cin + cb..])
                    })
                });
                // Bᵀ d: combine rows.
                let r: [[Lanes; 4]; 4] = std::array::from_fn(|j| {
                    [
                        sub(d[0][j], d[2][j]),
                        add(d[1][j], d[2][j]),
                        sub(d[2][j], d[1][j]),
                        sub(d[1][j], d[3][j]),
                    ]
                });
                // (Bᵀ d) B: combine columns; r[j][i] is row i, column j.
                for i in 0..4 {
                    let out = [
                        sub(r[0][i], r[2][i]),
                        add(r[1][i], r[2][i]),
                        sub(r[2][i], r[1][i]),
                        sub(r[1][i], r[3][i]),
                    ];
                    for (j, o) in out.into_iter().enumerate() {
                        v[((i * 4 + j) * tiles + t) * cin + cb..][..L].copy_from_slice(&o);
                    }
                }
            }
        }
    }
}

/// For every block `t`: `Aᵀ m A` (Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]) gives its 2x2 outputs,
/// then `relu(y·scale + shift)` and their maximum go to `out[t][co]`.
#[multiversion(targets = "simd")]
fn output_pool_portable(
    m: &[f32],
    tiles: usize,
    cout: usize,
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
) {
    for t in 0..tiles {
        for cb in (0..cout).step_by(L) {
            // y = Aᵀ m A: first each row of m times A, then the rows combined.
            let a: [[Lanes; 2]; 4] = std::array::from_fn(|r| {
                let row = |c: usize| load(&m[((4 * r + c) * tiles + t) * cout + cb..]);
                let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
                [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
            });
            let y00 = add(add(a[0][0], a[1][0]), a[2][0]);
            let y01 = add(add(a[0][1], a[1][1]), a[2][1]);
            let y10 = sub(sub(a[1][0], a[2][0]), a[3][0]);
            let y11 = sub(sub(a[1][1], a[2][1]), a[3][1]);
            let (s, b) = (load(&scale[cb..]), load(&shift[cb..]));
            let act =
                |y: Lanes| -> Lanes { std::array::from_fn(|l| (y[l] * s[l] + b[l]).max(0.0)) };
            // The pooling order of `super::pool::max_pool2`: top pair, bottom pair, then the two.
            let pick = |a: Lanes, b: Lanes| -> Lanes {
                std::array::from_fn(|l| if b[l] > a[l] { b[l] } else { a[l] })
            };
            let v = pick(pick(act(y00), act(y01)), pick(act(y10), act(y11)));
            out[t * cout + cb..][..L].copy_from_slice(&v);
        }
    }
}

/// For every block `t`: `Aᵀ m A` into `out[pixel][co]` (pixel-major over the `2th x 2tw` output).
#[multiversion(targets = "simd")]
fn output_full_portable(m: &[f32], th: usize, tw: usize, cout: usize, out: &mut [f32]) {
    let (tiles, ow) = (th * tw, 2 * tw);
    for t in 0..tiles {
        let (ty, tx) = (t / tw, t % tw);
        for cb in (0..cout).step_by(L) {
            let a: [[Lanes; 2]; 4] = std::array::from_fn(|r| {
                let row = |c: usize| load(&m[((4 * r + c) * tiles + t) * cout + cb..]);
                let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
                [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
            });
            let y = [
                [
                    add(add(a[0][0], a[1][0]), a[2][0]),
                    add(add(a[0][1], a[1][1]), a[2][1]),
                ],
                [
                    sub(sub(a[1][0], a[2][0]), a[3][0]),
                    sub(sub(a[1][1], a[2][1]), a[3][1]),
                ],
            ];
            for (i, yr) in y.iter().enumerate() {
                for (j, v) in yr.iter().enumerate() {
                    let px = (2 * ty + i) * ow + 2 * tx + j;
                    out[px * cout + cb..][..L].copy_from_slice(v);
                }
            }
        }
    }
}

/// Whether the 16-lane transforms of [`avx512`] serve `channels` (checked once per call; a
/// whole-vector multiple of 16 on a CPU with AVX-512).
fn wide(channels: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        channels.is_multiple_of(avx512::L) && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = channels;
        false
    }
}

/// [`input_transform_portable`], 16 channels per instruction where [`wide`] allows.
fn input_transform(hwc: &[f32], w: usize, cin: usize, th: usize, tw: usize, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide(cin) {
        // SAFETY: AVX-512F is present (checked by `wide`); the function asserts its bounds.
        return unsafe { avx512::input_transform(hwc, w, cin, th, tw, v) };
    }
    input_transform_portable(hwc, w, cin, th, tw, v)
}

/// [`output_pool_portable`], 16 channels per instruction where [`wide`] allows.
fn output_pool(
    m: &[f32],
    tiles: usize,
    cout: usize,
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if wide(cout) {
        // SAFETY: as in `input_transform`.
        return unsafe { avx512::output_pool(m, tiles, cout, scale, shift, out) };
    }
    output_pool_portable(m, tiles, cout, scale, shift, out)
}

/// [`output_full_portable`] for the `nt` blocks from `t0` whose products `m` holds, 16 channels
/// per instruction where [`wide`] allows; the portable version takes only all blocks at once.
fn output_full_blocks(
    m: &[f32],
    (t0, nt): (usize, usize),
    tw: usize,
    cout: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if wide(cout) {
        // SAFETY: as in `input_transform`.
        return unsafe { avx512::output_full(m, (t0, nt), tw, cout, out) };
    }
    assert!(
        t0 == 0 && nt.is_multiple_of(tw),
        "runs of blocks need AVX-512"
    );
    output_full_portable(m, nt / tw, tw, cout, out)
}

/// The three transforms over 16 channels per AVX-512 register, with the portable versions'
/// operations in the same order (so the same bits). Why by hand: compiled from the portable
/// 8-lane arrays, the transforms called the arrays' element closures as out-of-line SSE
/// functions, and took ~45% of a bf16 inference (perf), more than the multiplies.
#[cfg(target_arch = "x86_64")]
mod avx512 {
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
                            _mm256_storeu_si256(
                                at.cast(),
                                std::mem::transmute::<__m256bh, __m256i>(h),
                            );
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
    unsafe fn block(
        m: *const f32,
        tiles: usize,
        cout: usize,
        t: usize,
        cb: usize,
    ) -> [[__m512; 2]; 2] {
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
}

/// The filters of one convolution, transformed once for all its images.
pub(crate) struct Plan {
    g: Conv3x3,
    /// The arithmetic of the 16 products (the transforms stay f32).
    prec: Precision,
    u: Vec<f32>,
    /// bf16 only, where the CPU has AVX512_BF16 and `cin` fills whole 16-channel vectors: the
    /// 16 transformed filters packed once, and the input transform writes bf16 pairs directly
    /// (the same words and kernel calls as packing both per image, so the same bits).
    packed: Vec<PackedRhs>,
    /// Output blocks per side: `oh / 2` by `ow / 2` (an odd last row or column is not covered).
    th: usize,
    tw: usize,
}

/// Output blocks per run of the bf16 path ([`Plan::products_hwc`]): their transformed input
/// (16 KB of words for 32 channels), 16 products (64 KB for 64 channels) and outputs stay in
/// cache from one step to the next; for a whole image at once the products were 590 KB.
const BLOCK: usize = 16;

thread_local! {
    /// A run of blocks' transformed input as bf16 pair words (the bf16 path of [`Plan::products_hwc`]).
    static WORDS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl Plan {
    /// Whether the transforms can serve this shape: channels in whole vectors, at least one
    /// 2x2 output block.
    pub(crate) fn supports(g: Conv3x3) -> bool {
        g.cin.is_multiple_of(L) && g.cout.is_multiple_of(L) && g.oh() >= 2 && g.ow() >= 2
    }

    /// Transforms the filters `w` of a convolution [`Plan::supports`].
    pub(crate) fn new(g: Conv3x3, w: &[f32], prec: Precision) -> Plan {
        let u = filter_transform(w, g.cin, g.cout);
        let direct = prec == Precision::Bf16 && bf16::available() && wide(g.cin) && wide(g.cout);
        let packed = if direct {
            u.chunks_exact(g.cin * g.cout)
                .map(|ux| PackedRhs::new(ux, g.cin, g.cout))
                .collect()
        } else {
            Vec::new()
        };
        Plan {
            g,
            prec,
            u,
            packed,
            th: g.oh() / 2,
            tw: g.ow() / 2,
        }
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Floats of f32 scratch for the transformed input and the 16 products (bf16: no
    /// transformed input, which is written as bf16 words, and the products of one block).
    fn products_len(&self) -> usize {
        let (cin, cout, tiles) = (self.g.cin, self.g.cout, self.tiles());
        if self.packed.is_empty() {
            16 * tiles * (cin + cout)
        } else {
            16 * BLOCK.min(tiles) * cout
        }
    }

    /// One image's 16 products from its channel-last pixels `hwc`, handed to
    /// `finish(t0, nt, m)` for consecutive runs of output blocks: `m[ξ][b][co]` for the `nt`
    /// blocks from `t0`. In f32 one run of all blocks; in bf16 [`BLOCK`] at a time, each run
    /// transformed, multiplied and finished while it is in cache (the same sums as for the
    /// whole image at once). `buf`: [`Plan::products_len`] floats.
    fn products_hwc(
        &self,
        hwc: &[f32],
        buf: &mut [f32],
        mut finish: impl FnMut(usize, usize, &[f32]),
    ) {
        let Plan {
            g,
            prec,
            ref u,
            ref packed,
            th,
            tw,
        } = *self;
        let (cin, cout, tiles) = (g.cin, g.cout, th * tw);
        if !packed.is_empty() {
            WORDS.with(|words| {
                let mut words = words.borrow_mut();
                let half = 16 * BLOCK * cin / 2;
                if words.len() < half {
                    words.resize(half, 0);
                }
                for t0 in (0..tiles).step_by(BLOCK) {
                    let nt = BLOCK.min(tiles - t0);
                    let (v, m) = (&mut words[..16 * nt * cin / 2], &mut buf[..16 * nt * cout]);
                    // SAFETY: `packed` is only built where the CPU has AVX-512 with AVX512_BF16
                    // and both channel counts are multiples of 16; the function asserts its
                    // bounds.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx512::input_transform_bf16(hwc, g.w, cin, tw, (t0, nt), v)
                    };
                    for (x, ux) in packed.iter().enumerate() {
                        let a = &v[x * nt * cin / 2..][..nt * cin / 2];
                        bf16::matmul_packed(&mut m[x * nt * cout..][..nt * cout], nt, a, ux);
                    }
                    finish(t0, nt, m);
                }
            });
            return;
        }
        let (v, rest) = buf.split_at_mut(16 * tiles * cin);
        let m = &mut rest[..16 * tiles * cout];
        input_transform(hwc, g.w, cin, th, tw, v);
        multiply(prec, v, u, tiles, cin, cout, m);
        finish(0, tiles, m)
    }

    /// Floats of scratch [`Plan::pool_hwc`] needs.
    pub(crate) fn pool_scratch_len(&self) -> usize {
        self.products_len() + self.tiles() * self.g.cout
    }

    /// One image's `relu(conv·scale + shift)` max-pooled 2x2 (floor) into `oi`
    /// (`[cout, oh/2, ow/2]`), from its channel-last pixels `hwc`; `scratch` of
    /// [`Plan::pool_scratch_len`] floats.
    pub(crate) fn pool_hwc(
        &self,
        hwc: &[f32],
        scale: &[f32],
        shift: &[f32],
        scratch: &mut [f32],
        oi: &mut [f32],
    ) {
        let (tiles, cout) = (self.tiles(), self.g.cout);
        let (pbuf, pooled) = scratch.split_at_mut(self.products_len());
        self.products_hwc(hwc, pbuf, |t0, nt, m| {
            let out = &mut pooled[t0 * cout..][..nt * cout];
            output_pool(m, nt, cout, scale, shift, out);
        });
        // The blocks are the pooled pixels, in order.
        transpose(pooled, tiles, cout, oi);
    }

    /// `relu(conv·scale + shift)` max-pooled 2x2 (floor) for all images `x`, with the conv bias
    /// folded into `shift`: `[n, cout, oh/2, ow/2]`.
    pub(crate) fn conv_bn_relu_pool(&self, x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
        let (g, tiles) = (self.g, self.tiles());
        let cout = g.cout;
        let mut out = vec![0f32; g.n * cout * tiles];
        let hw = g.h * g.w;
        out.par_chunks_mut(cout * tiles)
            .zip(x.par_chunks(g.in_len()))
            .for_each(|(oi, xi)| {
                with_scratch(hw * g.cin + self.pool_scratch_len(), |buf| {
                    let (hwc, rest) = buf.split_at_mut(hw * g.cin);
                    transpose(xi, g.cin, hw, hwc);
                    self.pool_hwc(hwc, scale, shift, rest, oi);
                })
            });
        out
    }

    /// `z[co][pixel]` of one image (no bias).
    pub(crate) fn conv_image(&self, xi: &[f32], zi: &mut [f32]) {
        let (g, hw) = (self.g, self.g.h * self.g.w);
        with_scratch(hw * g.cin + self.conv_scratch_len(), |buf| {
            let (hwc, rest) = buf.split_at_mut(hw * g.cin);
            transpose(xi, g.cin, hw, hwc);
            self.conv_hwc(hwc, rest, zi);
        })
    }

    /// Floats of scratch [`Plan::conv_hwc`] needs.
    pub(crate) fn conv_scratch_len(&self) -> usize {
        self.products_len() + self.g.p() * self.g.cout
    }

    /// `z[co][pixel]` of one image (no bias) from its channel-last pixels `hwc`; `scratch` of
    /// [`Plan::conv_scratch_len`] floats.
    pub(crate) fn conv_hwc(&self, hwc: &[f32], scratch: &mut [f32], zi: &mut [f32]) {
        let (p, cout, tw) = (self.g.p(), self.g.cout, self.tw);
        let (pbuf, zt) = scratch.split_at_mut(self.products_len());
        let zt = &mut zt[..p * cout];
        self.products_hwc(hwc, pbuf, |t0, nt, m| {
            output_full_blocks(m, (t0, nt), tw, cout, zt)
        });
        transpose(zt, p, cout, zi);
    }
}

/// The 16 products `m[ξ] = v[ξ] · u[ξ]`, `[tiles x cin] · [cin x cout]`.
fn multiply(
    prec: Precision,
    v: &[f32],
    u: &[f32],
    tiles: usize,
    cin: usize,
    cout: usize,
    m: &mut [f32],
) {
    for x in 0..16 {
        matmul_in(
            prec,
            &mut m[x * tiles * cout..][..tiles * cout],
            (tiles, cout, cin),
            Operand::rows(&v[x * tiles * cin..][..tiles * cin]),
            Operand::rows(&u[x * cin * cout..][..cin * cout]),
            Write::Overwrite,
            Threads::Caller,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::tests::noise;

    /// The AVX-512 transforms give the portable ones' bits (same operations in the same order),
    /// on conv2's shape and on a small one with two vectors of channels.
    #[test]
    #[cfg_attr(not(warmstart_avx512), ignore = "this CPU has no AVX-512")]
    fn the_wide_transforms_give_the_portable_bits() {
        assert!(wide(16), "built for AVX-512, run without it");
        for (cin, cout, side) in [(32, 64, 26), (16, 32, 9)] {
            let (th, tw) = ((side - 2) / 2, (side - 2) / 2);
            let tiles = th * tw;
            let hwc = noise(side * side * cin, 1);
            let (mut a, mut b) = (vec![0f32; 16 * tiles * cin], vec![0f32; 16 * tiles * cin]);
            input_transform(&hwc, side, cin, th, tw, &mut a);
            input_transform_portable(&hwc, side, cin, th, tw, &mut b);
            assert_eq!(a, b, "input transform, {cin} channels");
            let mut m = noise(16 * tiles * cout, 2);
            // Some exact zeros and negatives so that ReLU and the pooling's ties are exercised.
            m.iter_mut().step_by(7).for_each(|x| *x = 0.0);
            let (s, t) = (noise(cout, 3), noise(cout, 4));
            let (mut a, mut b) = (vec![0f32; tiles * cout], vec![0f32; tiles * cout]);
            output_pool(&m, tiles, cout, &s, &t, &mut a);
            output_pool_portable(&m, tiles, cout, &s, &t, &mut b);
            assert_eq!(a, b, "pooled output, {cout} channels");
            let (mut a, mut b) = (vec![0f32; 4 * tiles * cout], vec![0f32; 4 * tiles * cout]);
            output_full_blocks(&m, (0, tiles), tw, cout, &mut a);
            output_full_portable(&m, th, tw, cout, &mut b);
            assert_eq!(a, b, "full output, {cout} channels");
        }
    }

    /// bf16 with the transformed filters packed once and the input transformed straight to bf16
    /// gives the bits of packing both per image through `matmul_bf16` (at least 16 blocks, so
    /// that the per-image path multiplies in bf16 too).
    #[test]
    #[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
    fn prepacked_bf16_products_give_the_per_image_packing_bits() {
        assert!(
            crate::device::cpu_has_bf16() && wide(16),
            "built for AVX512_BF16, run without it"
        );
        for (n, cin, side, cout) in [(2, 32, 26, 64), (3, 16, 12, 48)] {
            let g = Conv3x3 {
                n,
                cin,
                h: side,
                w: side,
                cout,
            };
            let (x, w) = (noise(n * g.in_len(), 1), noise(cout * cin * 9, 2));
            let (s, t) = (noise(cout, 3), noise(cout, 4));
            let direct = Plan::new(g, &w, Precision::Bf16);
            assert!(!direct.packed.is_empty());
            let mut per_image = Plan::new(g, &w, Precision::Bf16);
            per_image.packed.clear();
            assert_eq!(
                direct.conv_bn_relu_pool(&x, &s, &t),
                per_image.conv_bn_relu_pool(&x, &s, &t),
                "{n}x{cin}x{side}x{cout}"
            );
        }
    }
}

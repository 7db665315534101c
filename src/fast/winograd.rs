//! Evaluation-mode conv 3x3 → batch norm (folded) → ReLU → 2x2 max pool by Winograd's minimal
//! filtering F(2x2, 3x3) (Lavin & Gray, 2016).
//!
//! Why: inference is mostly the conv2 matrix multiply, which already runs near the CPU's peak;
//! F(2x2, 3x3) needs 2.25x fewer multiplications. Each 4x4 input tile gives a 2x2 output block —
//! exactly one pooling window — so the output transform, batch norm, ReLU and pooling run
//! together and no unpooled activation is stored. Training keeps the im2col convolution (its
//! backward pass and bit-exact reproducibility are built on it). No crate offers a CPU Winograd
//! convolution over plain slices; the transforms are a few dozen additions each, written over
//! 8-channel arrays so that they compile to vector instructions.

use super::kernels::{self, Conv3x3, matmul, with_scratch};
use multiversion::multiversion;
use rayon::prelude::*;

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

/// Whether the Winograd path serves this shape (else the im2col kernel does).
fn applies(g: Conv3x3) -> bool {
    g.cin.is_multiple_of(L) && g.cout.is_multiple_of(L) && g.oh() >= 2 && g.ow() >= 2
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
fn input_transform(hwc: &[f32], w: usize, cin: usize, th: usize, tw: usize, v: &mut [f32]) {
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
fn output_pool(
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
            // The pooling order of `kernels::max_pool2`: top pair, bottom pair, then the two.
            let pick = |a: Lanes, b: Lanes| -> Lanes {
                std::array::from_fn(|l| if b[l] > a[l] { b[l] } else { a[l] })
            };
            let v = pick(pick(act(y00), act(y01)), pick(act(y10), act(y11)));
            out[t * cout + cb..][..L].copy_from_slice(&v);
        }
    }
}

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix, in 8x8 blocks (a strided copy one value
/// at a time touches a new cache line per value).
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 8;
    let (rw, cw) = (rows / B * B, cols / B * B);
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    let avx = false;
    for rb in (0..rw).step_by(B) {
        for cb in (0..cw).step_by(B) {
            let (s0, d0) = (rb * cols + cb, cb * rows + rb);
            #[cfg(target_arch = "x86_64")]
            if avx {
                // SAFETY: AVX is present (checked above); the 8x8 block lies inside both
                // slices (rb + 8 <= rows, cb + 8 <= cols, lengths asserted above).
                unsafe { avx_block::transpose8(&src[s0..], cols, &mut dst[d0..], rows) };
                continue;
            }
            for r in 0..B {
                for c in 0..B {
                    dst[d0 + c * rows + r] = src[s0 + r * cols + c];
                }
            }
        }
    }
    let _ = avx;
    for r in 0..rows {
        let cs = if r < rw { cw } else { 0 };
        for c in cs..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// The 8x8 register transpose (unpack, shuffle, swap 128-bit halves): the compiler turned the
/// portable block copy into one scalar move per value.
#[cfg(target_arch = "x86_64")]
mod avx_block {
    use std::arch::x86_64::*;

    /// Transposes the 8x8 block at `src` (row stride `ss`) into `dst` (row stride `ds`).
    ///
    /// # Safety
    /// AVX must be available; `src[7 * ss + 8]` and `dst[7 * ds + 8]` must be in bounds.
    #[target_feature(enable = "avx")]
    pub unsafe fn transpose8(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
        assert!(src.len() >= 7 * ss + 8 && dst.len() >= 7 * ds + 8);
        // SAFETY: the assert keeps every 8-float load and store inside the slices.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.as_ptr().add(i * ss)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (i, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dst.as_mut_ptr().add(i * ds), v);
            }
        }
    }
}

/// For every block `t`: `Aᵀ m A` into `out[pixel][co]` (pixel-major over the `2th x 2tw` output).
#[multiversion(targets = "simd")]
fn output_full(m: &[f32], th: usize, tw: usize, cout: usize, out: &mut [f32]) {
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

/// The filters of one convolution, transformed once for all its images.
pub struct Plan {
    g: Conv3x3,
    u: Vec<f32>,
    /// Output blocks per side: `oh / 2` by `ow / 2` (an odd last row or column is not covered).
    th: usize,
    tw: usize,
}

impl Plan {
    fn of(g: Conv3x3, w: &[f32]) -> Plan {
        Plan {
            g,
            u: filter_transform(w, g.cin, g.cout),
            th: g.oh() / 2,
            tw: g.ow() / 2,
        }
    }

    /// A Winograd plan for `g` when it pays: channels in whole vectors, even output sides (so the
    /// 2x2 blocks cover the output exactly) and at least 8 images to share the filter transform.
    pub fn new(g: Conv3x3, w: &[f32]) -> Option<Plan> {
        let even = g.oh().is_multiple_of(2) && g.ow().is_multiple_of(2);
        (applies(g) && even && g.n >= 8).then(|| Plan::of(g, w))
    }

    /// One image's 16 products `m[ξ]` (`[blocks x cout]` each), handed to `finish` with `extra`
    /// more floats of scratch.
    fn products<R>(
        &self,
        xi: &[f32],
        extra: usize,
        finish: impl FnOnce(&[f32], &mut [f32]) -> R,
    ) -> R {
        let Plan { g, ref u, th, tw } = *self;
        let (cin, cout, hw, tiles) = (g.cin, g.cout, g.h * g.w, th * tw);
        let (nv, nm) = (16 * tiles * cin, 16 * tiles * cout);
        with_scratch(hw * cin + nv + nm + extra, |buf| {
            let (hwc, rest) = buf.split_at_mut(hw * cin);
            let (v, rest) = rest.split_at_mut(nv);
            let (m, extra) = rest.split_at_mut(nm);
            transpose(xi, cin, hw, hwc);
            input_transform(hwc, g.w, cin, th, tw, v);
            multiply(v, u, tiles, cin, cout, m);
            finish(m, extra)
        })
    }

    /// `z[co][pixel]` of one image (no bias).
    pub fn conv_image(&self, xi: &[f32], zi: &mut [f32]) {
        let (p, cout) = (self.g.p(), self.g.cout);
        self.products(xi, p * cout, |m, zt| {
            output_full(m, self.th, self.tw, cout, zt);
            transpose(zt, p, cout, zi);
        });
    }
}

/// The 16 products `m[ξ] = v[ξ] · u[ξ]`, `[tiles x cin] · [cin x cout]`.
fn multiply(v: &[f32], u: &[f32], tiles: usize, cin: usize, cout: usize, m: &mut [f32]) {
    for x in 0..16 {
        matmul(
            &mut m[x * tiles * cout..][..tiles * cout],
            (tiles, cout, cin),
            &v[x * tiles * cin..][..tiles * cin],
            false,
            &u[x * cin * cout..][..cin * cout],
            false,
            false,
            false,
        );
    }
}

/// Inference of conv 3x3 (bias folded into `shift`) → `relu(·scale + shift)` → 2x2 max pool
/// (floor), per image. Returns `[n, cout, oh/2, ow/2]`. Fewer than 8 images, or channels that
/// are not multiples of 8, go to the im2col kernel.
pub fn conv_bn_relu_pool_infer(
    g: Conv3x3,
    x: &[f32],
    w: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Vec<f32> {
    // A single image or a few: the filter transform and 16 small multiplies per image cost
    // more than they save (latency at batch 1: 0.20 ms against 0.16 ms with im2col).
    if !applies(g) || g.n < 8 {
        return kernels::conv_bn_relu_pool_infer(g, x, w, scale, shift);
    }
    winograd(g, x, w, scale, shift)
}

fn winograd(g: Conv3x3, x: &[f32], w: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let plan = Plan::of(g, w);
    let (cout, tiles) = (g.cout, plan.th * plan.tw);
    let mut out = vec![0f32; g.n * cout * tiles];
    out.par_chunks_mut(cout * tiles)
        .zip(x.par_chunks(g.in_len()))
        .for_each(|(oi, xi)| {
            plan.products(xi, tiles * cout, |m, pooled| {
                output_pool(m, tiles, cout, scale, shift, pooled);
                // The blocks are the pooled pixels, in order.
                transpose(pooled, tiles, cout, oi);
            })
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn transpose_handles_whole_blocks_and_ragged_edges() {
        for (rows, cols) in [(8, 8), (16, 24), (13, 21), (3, 5), (144, 64)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn winograd_convolution_matches_im2col() {
        for (n, cin, side, cout) in [(8, 32, 26, 64), (9, 8, 10, 16)] {
            let g = Conv3x3 {
                n,
                cin,
                h: side,
                w: side,
                cout,
            };
            let w = noise(cout * cin * 9, 7);
            let plan = Plan::new(g, &w).expect("a shape the Winograd path serves");
            let x = noise(g.in_len(), 8);
            let mut fast = vec![0f32; g.out_len()];
            plan.conv_image(&x, &mut fast);
            let mut col = vec![0f32; g.k() * g.p()];
            g.im2col(&x, &mut col);
            let mut direct = vec![0f32; g.out_len()];
            matmul(
                &mut direct,
                (cout, g.p(), g.k()),
                &w,
                false,
                &col,
                false,
                false,
                false,
            );
            let what = format!("{n}x{cin}x{side}x{cout}");
            crate::fast::tests::assert_close(&what, fast, direct, 1e-5);
        }
        let odd = Conv3x3 {
            n: 8,
            cin: 8,
            h: 9,
            w: 9,
            cout: 8,
        };
        assert!(
            Plan::new(odd, &noise(8 * 8 * 9, 1)).is_none(),
            "odd outputs use im2col"
        );
    }

    #[test]
    fn winograd_matches_the_im2col_kernel_on_even_and_odd_sizes() {
        for (n, cin, side, cout) in [
            (3, 16, 8, 16),
            (2, 32, 26, 64),
            (1, 16, 9, 32),
            (2, 32, 11, 16),
        ] {
            let g = Conv3x3 {
                n,
                cin,
                h: side,
                w: side,
                cout,
            };
            assert!(applies(g));
            let x = noise(g.n * g.in_len(), 1);
            let w = noise(cout * cin * 9, 2);
            let (s, t) = (noise(cout, 4), noise(cout, 5));
            let fast = winograd(g, &x, &w, &s, &t);
            let direct = kernels::conv_bn_relu_pool_infer(g, &x, &w, &s, &t);
            let what = format!("{n}x{cin}x{side}x{cout}");
            crate::fast::tests::assert_close(&what, fast, direct, 1e-5);
        }
    }
}

//! The Winograd transforms F(2x2, 3x3) over 8 channels at a time in plain Rust: the definition
//! the AVX-512 versions ([`super::avx512`]) must match bit for bit, and what runs on other CPUs.

use multiversion::multiversion;

/// Channels per vector: the transforms work on 8 channels at once (one AVX2 register).
pub(super) const L: usize = 8;
pub(super) type Lanes = [f32; L];

#[inline(always)]
pub(super) fn load(s: &[f32]) -> Lanes {
    let mut a = [0f32; L];
    a.copy_from_slice(&s[..L]);
    a
}

#[inline(always)]
pub(super) fn add(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|i| a[i] + b[i])
}

#[inline(always)]
pub(super) fn sub(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|i| a[i] - b[i])
}

/// Filters in the transformed domain, `u[ξ][ci][co] = (G g Gᵀ)[ξ]` for each of the 16 positions,
/// with G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
pub(super) fn filter_transform(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
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
pub(super) fn input_transform_portable(
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
pub(super) fn output_pool_portable(
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
pub(super) fn output_full_portable(m: &[f32], th: usize, tw: usize, cout: usize, out: &mut [f32]) {
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

//! The Winograd transforms F(2x2, 3x3), written once over the vector width with `pulp`: 16
//! channels per instruction on AVX-512, 8 on AVX2, 4 on NEON, one elsewhere. The operations
//! are lane by lane and in the same order at every width, so every width gives the same bits
//! (the one-lane instance is the definition the tests hold the others to).
//!
//! Why `pulp`: an AVX-512 copy beside an 8-lane array version served only AVX-512 CPUs well;
//! compiled for AVX2 the arrays became stack copies and `memcpy` calls (the full output
//! transform took 4.5 ms of conv2's 21 ms forward at batch 128, two threads).

use crate::fast::lanes::{Kernel, ld, st};
use pulp::Simd;

/// The channel counts the transforms serve: multiples of 8 (the same shapes at every width;
/// where the CPU's vector is wider than a count divides, one lane at a time).
pub(super) const L: usize = 8;

/// Filters in the transformed domain, `u[ξ][ci][co] = (G g Gᵀ)[ξ]` for each of the 16 positions,
/// with G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]] (once per batch: scalar).
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

/// `v[ξ][b][ci] = (Bᵀ d B)[ξ]` for the 4x4 input tile `d` of each of the `nt` output blocks
/// from `t0` (row-major over rows of `tw` blocks), with
/// Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. `hwc` is the image with
/// channels innermost, `w` pixels a row.
pub(super) struct InputTransform<'a> {
    pub hwc: &'a [f32],
    pub w: usize,
    pub cin: usize,
    pub tw: usize,
    pub blocks: (usize, usize),
    pub v: &'a mut [f32],
}

impl Kernel for InputTransform<'_> {
    fn channels(&self) -> usize {
        self.cin
    }

    #[inline(always)]
    fn apply<S: Simd>(self, s: S) {
        let InputTransform {
            hwc,
            w,
            cin,
            tw,
            blocks: (t0, nt),
            v,
        } = self;
        assert!(cin.is_multiple_of(S::F32_LANES) && tw > 0);
        let rows = (t0 + nt).div_ceil(tw);
        assert!(nt == 0 || hwc.len() >= ((2 * rows + 1) * w + 2 * tw + 2) * cin);
        assert!(v.len() >= 16 * nt * cin);
        let (src, dst) = (hwc.as_ptr(), v.as_mut_ptr());
        for b in 0..nt {
            let (ty, tx) = ((t0 + b) / tw, (t0 + b) % tw);
            for cb in (0..cin).step_by(S::F32_LANES) {
                // SAFETY: the tile's pixels (2ty + i, 2tx + j), i, j < 4, are inside the image
                // (asserted above) and channels cb.. + lanes <= cin; each store ends by
                // ((i * 4 + j) * nt + b) * cin + cb + lanes <= 16 * nt * cin.
                unsafe {
                    let px = src.add((2 * ty * w + 2 * tx) * cin + cb);
                    // Row i of Bᵀ d for each column j (the rows combined), then that row's
                    // columns combined: (Bᵀ d) B a row at a time, 8 vectors live (AVX2 has 16
                    // registers; all 16 of Bᵀ d at once spilled).
                    for i in 0..4 {
                        let mut r = [s.splat_f32s(0.0); 4];
                        for (j, rj) in r.iter_mut().enumerate() {
                            let d = |i: usize| px.add((i * w + j) * cin);
                            *rj = match i {
                                0 => s.sub_f32s(ld::<S>(d(0)), ld::<S>(d(2))),
                                1 => s.add_f32s(ld::<S>(d(1)), ld::<S>(d(2))),
                                2 => s.sub_f32s(ld::<S>(d(2)), ld::<S>(d(1))),
                                _ => s.sub_f32s(ld::<S>(d(1)), ld::<S>(d(3))),
                            };
                        }
                        let out = [
                            s.sub_f32s(r[0], r[2]),
                            s.add_f32s(r[1], r[2]),
                            s.sub_f32s(r[2], r[1]),
                            s.sub_f32s(r[1], r[3]),
                        ];
                        for (j, o) in out.into_iter().enumerate() {
                            st::<S>(dst.add(((i * 4 + j) * nt + b) * cin + cb), o);
                        }
                    }
                }
            }
        }
    }
}

/// Block `b`'s 2x2 outputs `Aᵀ m A` (Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]) for the channels
/// from `cb`, `m` holding `[16][nt][cout]`: first each row of m times A, then the rows combined.
///
/// # Safety
/// `m` must hold `16 * nt * cout` floats, `b < nt`, `cb + lanes <= cout`.
#[inline(always)]
unsafe fn block<S: Simd>(
    s: S,
    m: *const f32,
    nt: usize,
    cout: usize,
    b: usize,
    cb: usize,
) -> [S::f32s; 4] {
    let mut a = [[s.splat_f32s(0.0); 2]; 4];
    for (r, ar) in a.iter_mut().enumerate() {
        // SAFETY: the caller's bounds: positions 4r + c < 16, block b, channels from cb.
        let (m0, m1, m2, m3) = unsafe {
            let row = m.add((4 * r * nt + b) * cout + cb);
            let step = nt * cout;
            (
                ld::<S>(row),
                ld::<S>(row.add(step)),
                ld::<S>(row.add(2 * step)),
                ld::<S>(row.add(3 * step)),
            )
        };
        *ar = [
            s.add_f32s(s.add_f32s(m0, m1), m2),
            s.sub_f32s(s.sub_f32s(m1, m2), m3),
        ];
    }
    [
        s.add_f32s(s.add_f32s(a[0][0], a[1][0]), a[2][0]),
        s.add_f32s(s.add_f32s(a[0][1], a[1][1]), a[2][1]),
        s.sub_f32s(s.sub_f32s(a[1][0], a[2][0]), a[3][0]),
        s.sub_f32s(s.sub_f32s(a[1][1], a[2][1]), a[3][1]),
    ]
}

/// For each of the `nt` blocks whose products `m` holds (`[16][nt][cout]`): its 2x2 outputs,
/// `relu(y·scale + shift)` (a multiply, then an add: no fused rounding) and their maximum into
/// `out[b][co]` — the order of `super::super::pool::max_pool2`: top pair, bottom pair, then
/// the two.
pub(super) struct OutputPool<'a> {
    pub m: &'a [f32],
    pub nt: usize,
    pub cout: usize,
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub out: &'a mut [f32],
}

impl Kernel for OutputPool<'_> {
    fn channels(&self) -> usize {
        self.cout
    }

    #[inline(always)]
    fn apply<S: Simd>(self, s: S) {
        let OutputPool {
            m,
            nt,
            cout,
            scale,
            shift,
            out,
        } = self;
        assert!(cout.is_multiple_of(S::F32_LANES));
        assert!(m.len() >= 16 * nt * cout && out.len() >= nt * cout);
        assert!(scale.len() >= cout && shift.len() >= cout);
        let zero = s.splat_f32s(0.0);
        for b in 0..nt {
            for cb in (0..cout).step_by(S::F32_LANES) {
                // SAFETY: the bounds asserted above.
                let (y, sc, sh) = unsafe {
                    (
                        block(s, m.as_ptr(), nt, cout, b, cb),
                        ld::<S>(scale.as_ptr().add(cb)),
                        ld::<S>(shift.as_ptr().add(cb)),
                    )
                };
                // `max(v, 0)` gives 0 for a NaN (as `f32::max` does).
                let mut act = y;
                for v in &mut act {
                    *v = s.max_f32s(s.add_f32s(s.mul_f32s(*v, sc), sh), zero);
                }
                // `max(b, a)` is `b > a ? b : a`, as the pooling picks.
                let top = s.max_f32s(act[1], act[0]);
                let bottom = s.max_f32s(act[3], act[2]);
                let v = s.max_f32s(bottom, top);
                // SAFETY: b * cout + cb + lanes <= nt * cout (asserted above).
                unsafe { st::<S>(out.as_mut_ptr().add(b * cout + cb), v) };
            }
        }
    }
}

/// For each of the `nt` blocks from `t0` whose products `m` holds (`[16][nt][cout]`): its 2x2
/// outputs into `out[pixel][co]` (pixel-major over rows of `2 tw` pixels).
pub(super) struct OutputFull<'a> {
    pub m: &'a [f32],
    pub blocks: (usize, usize),
    pub tw: usize,
    pub cout: usize,
    pub out: &'a mut [f32],
}

impl Kernel for OutputFull<'_> {
    fn channels(&self) -> usize {
        self.cout
    }

    #[inline(always)]
    fn apply<S: Simd>(self, s: S) {
        let OutputFull {
            m,
            blocks: (t0, nt),
            tw,
            cout,
            out,
        } = self;
        let ow = 2 * tw;
        assert!(cout.is_multiple_of(S::F32_LANES) && tw > 0);
        let rows = (t0 + nt).div_ceil(tw);
        assert!(m.len() >= 16 * nt * cout && out.len() >= 2 * rows * ow * cout);
        for b in 0..nt {
            let (ty, tx) = ((t0 + b) / tw, (t0 + b) % tw);
            for cb in (0..cout).step_by(S::F32_LANES) {
                // SAFETY: the bounds asserted above; pixel (2ty + i, 2tx + j) is in the first
                // 2 * rows rows.
                unsafe {
                    let y = block(s, m.as_ptr(), nt, cout, b, cb);
                    for (k, v) in y.into_iter().enumerate() {
                        let px = (2 * ty + k / 2) * ow + 2 * tx + k % 2;
                        st::<S>(out.as_mut_ptr().add(px * cout + cb), v);
                    }
                }
            }
        }
    }
}

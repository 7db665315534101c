//! Conv 3x3 by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016): the forward
//! convolution of training, evaluation's conv → batch norm (folded) → ReLU → 2x2 max pool, and
//! in bf16 the input gradient of training (a convolution of the padded output gradient with the
//! turned filters). When it is used is decided in `conv.rs`; the weight gradient, and f32's input
//! gradient, stay im2col.
//!
//! Why: conv2's matrix multiply already runs near the CPU's peak; F(2x2, 3x3) needs 2.25x fewer
//! multiplications. Each 4x4 input tile gives a 2x2 output block — exactly one pooling window —
//! so in evaluation the output transform, batch norm, ReLU and pooling run together and no
//! unpooled activation is stored; evaluation hands in the input channel-last, as the first
//! block writes it ([`Plan::pool_hwc`]). No crate offers a CPU Winograd convolution over plain
//! slices; the transforms are a few dozen additions each, written once over the CPU's vector
//! width (`transforms`). In bf16 the products' operands are packed once (filters) or written as
//! bf16 by the input transform (`avx512`, where the CPU has AVX512_BF16).

use super::bf16::{self, PackedRhs};
use super::gemm::with_scratch;
use super::geometry::Conv3x3;
use super::multiply::{Operand, Threads, Write, matmul_in};
use super::transpose::transpose;
use crate::device::Precision;
use rayon::prelude::*;
use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;
mod transforms;

use super::lanes::run;
use transforms::{InputTransform, L, OutputFull, OutputPool, filter_transform};

/// Whether the bf16 input transform of [`avx512`] serves `channels`: a whole-vector multiple of
/// 16 on a CPU with AVX-512.
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
        run(InputTransform {
            hwc,
            w: g.w,
            cin,
            tw,
            blocks: (0, tiles),
            v,
        });
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
            run(OutputPool {
                m,
                nt,
                cout,
                scale,
                shift,
                out,
            });
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
            run(OutputFull {
                m,
                blocks: (t0, nt),
                tw,
                cout,
                out: zt,
            })
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

//! The transforms against their portable definitions, and bf16's prepacked products against
//! per-image packing.

use super::portable::*;
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

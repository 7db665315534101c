//! The transforms at the CPU's vector width against one lane at a time, and bf16's prepacked products against
//! per-image packing.

use super::transforms::*;
use super::*;
use crate::fast::lanes::{Kernel, run};
use crate::fast::tests::noise;
use pulp::Scalar;

/// The transforms with this CPU's widest vectors give the one-lane bits (same operations in
/// the same order), on conv2's shape, on a small one, and on 8 channels (fewer than AVX-512's
/// lanes: one lane at a time there); the full output in runs of blocks as in whole images.
#[test]
fn the_widest_transforms_give_the_one_lane_bits() {
    let one = Scalar::new();
    for (cin, cout, side) in [(32, 64, 26), (16, 32, 9), (8, 8, 6)] {
        let (th, tw) = ((side - 2) / 2, (side - 2) / 2);
        let tiles = th * tw;
        let hwc = noise(side * side * cin, 1);
        let (mut a, mut b) = (vec![0f32; 16 * tiles * cin], vec![0f32; 16 * tiles * cin]);
        let input = |v| InputTransform {
            hwc: &hwc,
            w: side,
            cin,
            tw,
            blocks: (0, tiles),
            v,
        };
        run(input(&mut a));
        input(&mut b).apply(one);
        assert_eq!(a, b, "input transform, {cin} channels");
        let mut m = noise(16 * tiles * cout, 2);
        // Some exact zeros and negatives so that ReLU and the pooling's ties are exercised.
        m.iter_mut().step_by(7).for_each(|x| *x = 0.0);
        let (s, t) = (noise(cout, 3), noise(cout, 4));
        let (mut a, mut b) = (vec![0f32; tiles * cout], vec![0f32; tiles * cout]);
        let pool = |out| OutputPool {
            m: &m,
            nt: tiles,
            cout,
            scale: &s,
            shift: &t,
            out,
        };
        run(pool(&mut a));
        pool(&mut b).apply(one);
        assert_eq!(a, b, "pooled output, {cout} channels");
        let (mut a, mut b) = (vec![0f32; 4 * tiles * cout], vec![0f32; 4 * tiles * cout]);
        run(OutputFull {
            m: &m,
            blocks: (0, tiles),
            tw,
            cout,
            out: &mut a,
        });
        // Runs of 5 blocks (crossing rows), each with its own products.
        for t0 in (0..tiles).step_by(5) {
            let nt = 5.min(tiles - t0);
            let run_m: Vec<f32> = (0..16)
                .flat_map(|x| m[(x * tiles + t0) * cout..][..nt * cout].to_vec())
                .collect();
            let part = OutputFull {
                m: &run_m,
                blocks: (t0, nt),
                tw,
                cout,
                out: &mut b,
            };
            part.apply(one);
        }
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

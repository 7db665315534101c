//! The bf16 multiply against its scalar definition and f32, and (ignored by default) its speed.

use super::*;
use crate::fast::gemm::matmul;
use crate::fast::im2col::im2col_paired;
use crate::fast::operand::Layout;
use crate::fast::tests::noise;

/// im2col straight to bf16 words gives the words of packing the f32 im2col matrix, for
/// output widths below, at and above one 32-value step (24, 32, 40) and an odd one refused.
#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn im2col_paired_gives_the_packed_im2col_words() {
    assert!(available(), "built for AVX512_BF16, run without it");
    for (cin, side) in [(32, 26), (2, 34), (3, 42)] {
        let g = Conv3x3 {
            n: 1,
            cin,
            h: side,
            w: side,
            cout: 1,
        };
        let x = noise(g.in_len(), 5);
        let mut col = vec![0f32; g.k() * g.p()];
        g.im2col(&x, &mut col);
        let mut packed = vec![0u32; g.k() * g.p() / 2];
        pack_rows_paired(&col, g.k(), g.p(), &mut packed);
        let mut direct = vec![u32::MAX; g.k() * g.p() / 2];
        assert!(im2col_paired(g, &x, &mut direct));
        assert_eq!(direct, packed, "{cin}x{side}");
    }
    let odd = Conv3x3 {
        n: 1,
        cin: 1,
        h: 9,
        w: 9,
        cout: 1,
    };
    assert!(!im2col_paired(odd, &noise(81, 1), &mut [0; 7 * 7 * 9]));
}

#[test]
fn rounding_is_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3F80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
    assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
    assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
    assert_eq!(round_bf16(-2.5), -2.5);
    assert!(round_bf16(f32::NAN).is_nan());
    assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
    // Every value lands within half a unit of bf16's 8-bit significand: 2^-8 relative.
    for v in noise(10_000, 3) {
        assert!((round_bf16(v) - v).abs() <= v.abs() * 2f32.powi(-8));
    }
}

/// The kernel against the scalar definition for every layout, odd sizes, partial tiles,
/// more than one `k` block, accumulation, serial and parallel.
#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn bf16_matmul_matches_the_scalar_definition() {
    assert!(available(), "built for AVX512_BF16, run without it");
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (8, 32, 2),
        (9, 33, 17),
        (64, 576, 288),
        (17, 40, 2 * KC + 5),
        (130, 128, 64),
    ];
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        for (lt, rt, acc, par) in [
            (false, false, false, false),
            (true, false, true, true),
            (false, true, false, true),
            (true, true, true, false),
        ] {
            let lhs = noise(m * k, 10 + si as u32);
            let rhs = noise(k * n, 20 + si as u32);
            let init = noise(m * n, 30 + si as u32);
            let (mut fast, mut slow) = (init.clone(), init.clone());
            matmul_bf16(
                &mut fast,
                (m, n, k),
                Operand {
                    data: &lhs,
                    layout: Layout::transposed_if(lt),
                },
                Operand {
                    data: &rhs,
                    layout: Layout::transposed_if(rt),
                },
                Write::accumulate_if(acc),
                Threads::all_if(par),
            );
            matmul_reference(&mut slow, (m, n, k), &lhs, lt, &rhs, rt, acc);
            // Same bf16 operands; only the f32 summation order may differ: k roundings of
            // at most 2^-24 of a partial sum bounded by k (|values| < 1), on either side.
            let tol = 2.0 * (k * k) as f32 * 2f32.powi(-24) + 1e-6;
            let worst = fast
                .iter()
                .zip(&slow)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tol, "{m}x{n}x{k} lt={lt} rt={rt}: off by {worst}");
        }
    }
}

/// bf16 against f32: each operand's relative rounding error is at most 2^-8, so a product's
/// about 2^-7; a sum of `k` products of values below 1 could be off by `k`·2^-7 at worst, but
/// errors of random sign add up like √k: for these values (|product| ≈ 1/3 on average) the
/// error stays near √k·2^-8, which is checked with a margin of 4.
#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn bf16_matmul_is_within_bf16_rounding_of_f32() {
    assert!(available(), "built for AVX512_BF16, run without it");
    let (m, n, k) = (64, 576, 288);
    let (lhs, rhs) = (noise(m * k, 1), noise(k * n, 2));
    let (mut lo, mut hi) = (vec![0f32; m * n], vec![0f32; m * n]);
    matmul_bf16(
        &mut lo,
        (m, n, k),
        Operand::rows(&lhs),
        Operand::rows(&rhs),
        Write::Overwrite,
        Threads::Caller,
    );
    matmul(
        &mut hi,
        (m, n, k),
        Operand::rows(&lhs),
        Operand::rows(&rhs),
        Write::Overwrite,
        Threads::Caller,
    );
    let worst = lo
        .iter()
        .zip(&hi)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let bound = 4.0 * (k as f32).sqrt() * 2f32.powi(-8);
    assert!(worst <= bound, "off by {worst}, bound {bound}");
    assert!(
        worst > 0.0,
        "bf16 gave exactly the f32 result: not rounding?"
    );
}

#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn bf16_matmul_gives_the_same_bits_serial_and_parallel() {
    assert!(available(), "built for AVX512_BF16, run without it");
    let (m, n, k) = (128, 128, 9216 / 4);
    let (lhs, rhs) = (noise(m * k, 4), noise(k * n, 5));
    let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
    matmul_bf16(
        &mut a,
        (m, n, k),
        Operand::rows(&lhs),
        Operand::rows(&rhs),
        Write::Overwrite,
        Threads::Caller,
    );
    matmul_bf16(
        &mut b,
        (m, n, k),
        Operand::rows(&lhs),
        Operand::rows(&rhs),
        Write::Overwrite,
        Threads::All,
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Single-thread speed of both precisions on the network's shapes: `cargo test --release --lib
/// bf16_speed -- --ignored --nocapture` (a measurement, not a check).
mod speed {
    use super::*;
    use crate::fast::gemm::matmul;
    use crate::fast::operand::Layout;
    use crate::fast::tests::noise;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn bf16_speed() {
        for (what, (m, n, k), lt, rt) in [
            ("conv2 forward", (64, 576, 288), false, false),
            ("conv2 dW", (64, 288, 576), false, true),
            ("conv2 dX", (288, 576, 64), true, false),
            ("dense forward b128", (128, 128, 9216), false, false),
            ("dense dW b128", (9216, 128, 128), true, false),
            ("dense dX b128", (128, 9216, 128), false, true),
            ("winograd product", (144, 64, 32), false, false),
        ] {
            let (lhs, rhs) = (noise(m * k, 1), noise(k * n, 2));
            let mut dst = vec![0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let reps = (2e9 / flop).ceil() as usize;
            let mut time = |f: &mut dyn FnMut(&mut [f32])| {
                f(&mut dst);
                let t = Instant::now();
                for _ in 0..reps {
                    f(&mut dst);
                }
                flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let f32_rate = time(&mut |d| {
                matmul(
                    d,
                    (m, n, k),
                    Operand {
                        data: &lhs,
                        layout: Layout::transposed_if(lt),
                    },
                    Operand {
                        data: &rhs,
                        layout: Layout::transposed_if(rt),
                    },
                    Write::Overwrite,
                    Threads::Caller,
                )
            });
            let bf16_rate = time(&mut |d| {
                matmul_bf16(
                    d,
                    (m, n, k),
                    Operand {
                        data: &lhs,
                        layout: Layout::transposed_if(lt),
                    },
                    Operand {
                        data: &rhs,
                        layout: Layout::transposed_if(rt),
                    },
                    Write::Overwrite,
                    Threads::Caller,
                )
            });
            println!(
                "{what:20} f32 {f32_rate:6.1} GFLOP/s  bf16 {bf16_rate:6.1} GFLOP/s  x{:.2}",
                bf16_rate / f32_rate
            );
        }
    }
}

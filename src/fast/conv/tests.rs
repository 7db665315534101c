//! The convolution block against its definitions, and (ignored by default) the algorithms' speed.

use super::backward::*;
use super::*;
use crate::fast::gemm::matmul;
use crate::fast::tests::{assert_close, noise};
const F32: Precision = Precision::Fp32;

fn shape(n: usize, cin: usize, side: usize, cout: usize) -> Conv3x3 {
    Conv3x3 {
        n,
        cin,
        h: side,
        w: side,
        cout,
    }
}

#[test]
fn winograd_is_chosen_only_where_it_pays_and_covers_the_output() {
    let w = noise(64 * 32 * 9, 1);
    let conv2 = shape(8, 32, 26, 64);
    assert!(winograd_plan(conv2, &w, Output::Full, F32).is_some());
    assert!(winograd_plan(conv2, &w, Output::Pooled, F32).is_some());
    // Fewer than 8 images: im2col.
    assert!(winograd_plan(shape(7, 32, 26, 64), &w, Output::Pooled, F32).is_none());
    // Odd outputs: the pooled path floors them, a full output needs im2col.
    let odd = shape(8, 8, 9, 8);
    assert!(winograd_plan(odd, &w, Output::Full, F32).is_none());
    assert!(winograd_plan(odd, &w, Output::Pooled, F32).is_some());
    // conv1 has one input channel: not a whole vector.
    assert!(winograd_plan(shape(64, 1, 28, 32), &w, Output::Full, F32).is_none());
}

#[test]
fn winograd_convolution_matches_im2col() {
    for (n, cin, side, cout) in [(8, 32, 26, 64), (9, 8, 10, 16)] {
        let g = shape(n, cin, side, cout);
        let w = noise(cout * cin * 9, 7);
        let plan = Plan::new(g, &w, F32);
        let x = noise(g.in_len(), 8);
        let mut fast = vec![0f32; g.out_len()];
        plan.conv_image(&x, &mut fast);
        let mut col = vec![0f32; g.k() * g.p()];
        g.im2col(&x, &mut col);
        let mut direct = vec![0f32; g.out_len()];
        matmul(
            &mut direct,
            (cout, g.p(), g.k()),
            Operand::rows(&w),
            Operand::rows(&col),
            Write::Overwrite,
            Threads::Caller,
        );
        assert_close(&format!("{n}x{cin}x{side}x{cout}"), fast, direct, 1e-5);
    }
}

#[test]
fn winograd_pooling_matches_the_im2col_kernel_on_even_and_odd_sizes() {
    for (n, cin, side, cout) in [
        (3, 16, 8, 16),
        (2, 32, 26, 64),
        (1, 16, 9, 32),
        (2, 32, 11, 16),
    ] {
        let g = shape(n, cin, side, cout);
        assert!(Plan::supports(g));
        let x = noise(g.n * g.in_len(), 1);
        let w = noise(cout * cin * 9, 2);
        let (s, t) = (noise(cout, 4), noise(cout, 5));
        let fast = Plan::new(g, &w, F32).conv_bn_relu_pool(&x, &s, &t);
        let direct = im2col_pool_infer(F32, g, &x, &w, &s, &t);
        assert_close(&format!("{n}x{cin}x{side}x{cout}"), fast, direct, 1e-5);
    }
}

/// The input gradient as a convolution of the padded output gradient with the turned
/// filters ([`input_grad_image`], here with f32 products) against `wᵀ · dz` and col2im.
#[test]
fn input_gradient_by_winograd_matches_col2im() {
    for (n, cin, side, cout) in [(8, 32, 26, 64), (8, 16, 10, 8)] {
        let g = shape(n, cin, side, cout);
        let gp = input_grad_shape(g);
        assert!(winograd_fits(gp, Output::Full));
        let w = noise(cout * g.k(), 3);
        let plan = Plan::new(gp, &flipped_filters(&w, cin, cout), F32);
        let dz = noise(g.out_len(), 4);
        let mut scratch = vec![f32::NAN; input_grad_scratch_len(&plan, gp)];
        let mut fast = vec![f32::NAN; g.in_len()];
        input_grad_image(&plan, gp, &dz, &mut scratch, &mut fast);
        let mut col = vec![0f32; g.k() * g.p()];
        matmul(
            &mut col,
            (g.k(), g.p(), cout),
            Operand::transposed(&w),
            Operand::rows(&dz),
            Write::Overwrite,
            Threads::Caller,
        );
        let mut direct = vec![0f32; g.in_len()];
        col2im(g, &col, &mut direct);
        assert_close(&format!("{cin}x{side}x{cout}"), fast, direct, 1e-4);
    }
}

/// bf16 against f32 with the same forward state (so the same ReLU mask): the convolution's
/// output, weight and input gradients each within 2·2^-8 of the f32 ones as a whole (each
/// product's operands are rounded to 8 significant bits; errors of random sign average out
/// to about 2^-8 of the result's scale).
#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn bf16_conv_forward_and_backward_are_within_bf16_rounding_of_f32() {
    use crate::fast::tests::relative_error;
    assert!(
        crate::device::cpu_has_bf16(),
        "built for AVX512_BF16, run without it"
    );
    const BF16: Precision = Precision::Bf16;
    for (n, cin, side, cout) in [(8, 32, 26, 64), (3, 32, 12, 64)] {
        let g = shape(n, cin, side, cout);
        let (x, w) = (noise(n * g.in_len(), 1), noise(cout * g.k(), 2));
        let (b, gamma, beta) = (noise(cout, 3), noise(cout, 4), noise(cout, 5));
        let (y32, saved) = conv_bn_relu_train(
            F32,
            g,
            &x,
            Layer { w: &w, bias: &b },
            Norm {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-5,
            },
        );
        let (y16, _) = conv_bn_relu_train(
            BF16,
            g,
            &x,
            Layer { w: &w, bias: &b },
            Norm {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-5,
            },
        );
        let tol = 2.0 / 256.0;
        let what = format!("{n}x{cin}x{side}x{cout}");
        let e = relative_error(&y16, &y32);
        assert!(e <= tol && e > 0.0, "{what} forward: {e}");
        let dy = noise(y32.len(), 6);
        let r32 = conv_bn_relu_backward(
            F32,
            g,
            &x,
            (&w, &gamma),
            Upstream {
                saved: &saved,
                dy: &dy,
            },
            InputGrad::Needed,
        );
        let r16 = conv_bn_relu_backward(
            BF16,
            g,
            &x,
            (&w, &gamma),
            Upstream {
                saved: &saved,
                dy: &dy,
            },
            InputGrad::Needed,
        );
        let e = relative_error(&r16.dw, &r32.dw);
        assert!(e <= tol && e > 0.0, "{what} dw: {e}");
        let (dx16, dx32) = (r16.dx.expect("dx"), r32.dx.expect("dx"));
        let e = relative_error(&dx16, &dx32);
        assert!(e <= tol && e > 0.0, "{what} dx: {e}");
        // Inference (Winograd's products in bf16) likewise.
        let (s, t) = (noise(cout, 7), noise(cout, 8));
        let p32 = conv_bn_relu_pool_infer(F32, g, &x, &w, &s, &t);
        let p16 = conv_bn_relu_pool_infer(BF16, g, &x, &w, &s, &t);
        let e = relative_error(&p16, &p32);
        assert!(e <= tol && e > 0.0, "{what} pooled inference: {e}");
    }
}

/// Speed of conv2's training forward and backward at batch 128 in both precisions, and of the
/// bf16 forward without Winograd, the fastest of 10 runs each: `cargo test --release --lib conv_speed -- --ignored
/// --nocapture` (a measurement, not a check).
mod speed {
    use super::*;
    use crate::fast::tests::noise;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn conv_speed() {
        let g = Conv3x3 {
            n: 128,
            cin: 32,
            h: 26,
            w: 26,
            cout: 64,
        };
        let (x, w) = (noise(g.n * g.in_len(), 1), noise(g.cout * g.k(), 2));
        let (b, gamma, beta) = (noise(64, 3), noise(64, 4), noise(64, 5));
        let dy = noise(g.n * g.out_len(), 6);
        let time = |f: &mut dyn FnMut()| {
            f();
            (0..10)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        for prec in [Precision::Fp32, Precision::Bf16] {
            let fwd = time(&mut || {
                conv_bn_relu_train(
                    prec,
                    g,
                    &x,
                    Layer { w: &w, bias: &b },
                    Norm {
                        gamma: &gamma,
                        beta: &beta,
                        eps: 1e-5,
                    },
                );
            });
            let direct = time(&mut || {
                let mut z = vec![0f32; g.n * g.out_len()];
                z.par_chunks_mut(g.out_len())
                    .zip(x.par_chunks(g.in_len()))
                    .for_each(|(zi, xi)| {
                        with_scratch(g.k() * g.p(), |col| {
                            g.im2col(xi, col);
                            matmul_in(
                                prec,
                                zi,
                                (64, g.p(), g.k()),
                                Operand::rows(&w),
                                Operand::rows(col),
                                Write::Overwrite,
                                Threads::Caller,
                            );
                        })
                    });
            });
            let (_, saved) = conv_bn_relu_train(
                prec,
                g,
                &x,
                Layer { w: &w, bias: &b },
                Norm {
                    gamma: &gamma,
                    beta: &beta,
                    eps: 1e-5,
                },
            );
            let backward = |dx| {
                let up = Upstream {
                    saved: &saved,
                    dy: &dy,
                };
                conv_bn_relu_backward(prec, g, &x, (&w, &gamma), up, dx);
            };
            let bwd = time(&mut || backward(InputGrad::Needed));
            let bwd_w = time(&mut || backward(InputGrad::Skipped));
            let (s, t) = (noise(64, 7), noise(64, 8));
            let pool = time(&mut || {
                conv_bn_relu_pool_infer(prec, g, &x, &w, &s, &t);
            });
            let pool_direct = time(&mut || {
                im2col_pool_infer(prec, g, &x, &w, &s, &t);
            });
            println!(
                "{prec}: forward {fwd:.1} ms (im2col multiply alone {direct:.1}), backward {bwd:.1} ms (without the input gradient {bwd_w:.1}), \
                 inference {pool:.1} ms (im2col {pool_direct:.1})"
            );
        }
    }
}

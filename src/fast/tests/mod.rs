//! The fused ops against burn's reference layers: outputs and gradients on random inputs of
//! several shapes, odd batch sizes included; the optimizer and freezing in `optimizer.rs`.

use super::*;
use crate::model::{ArchConfig, Net};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, LinearConfig, PaddingConfig2d};
use burn::tensor::Distribution;
use burn::tensor::activation::relu;

fn device() -> Device {
    let d = Device::flex().autodiff();
    d.seed(7);
    d
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Largest difference relative to the reference's scale.
pub(crate) fn assert_close(what: &str, fast: Vec<f32>, reference: Vec<f32>, tol: f32) {
    assert_eq!(fast.len(), reference.len(), "{what}: lengths differ");
    // The floor keeps gradients that are zero in exact arithmetic (a bias before batch norm) from
    // turning rounding noise into a failure.
    let scale = reference.iter().fold(1e-2f32, |m, v| m.max(v.abs()));
    let worst = fast
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol * scale,
        "{what}: max difference {worst} exceeds {tol} x scale {scale}"
    );
}

/// For bf16 (`tol` above 1e-3): the error as a whole, `‖fast − reference‖ / ‖reference‖`, within
/// `tol`. A gradient through batch norm subtracts nearly equal terms, so single elements can lose
/// more relative precision than the vector as a whole; f32 keeps the element-wise check.
pub(crate) fn assert_close_in(what: &str, fast: Vec<f32>, reference: Vec<f32>, tol: f32) {
    if tol <= 1e-3 {
        return assert_close(what, fast, reference, tol);
    }
    assert_eq!(fast.len(), reference.len(), "{what}: lengths differ");
    let norm = |v: &mut dyn Iterator<Item = f32>| {
        v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
    };
    let diff = norm(&mut fast.iter().zip(&reference).map(|(a, b)| a - b));
    // The floor: as in `assert_close`, for gradients that are zero in exact arithmetic.
    let scale = norm(&mut reference.iter().copied()).max(1e-2 * (reference.len() as f64).sqrt());
    assert!(
        diff <= f64::from(tol) * scale,
        "{what}: relative error {} exceeds {tol}",
        diff / scale
    );
}

/// `‖a − b‖ / ‖b‖`.
pub(crate) fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut n) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += f64::from(x - y).powi(2);
        n += f64::from(*y).powi(2);
    }
    (d / n).sqrt()
}

/// Deterministic values in [-1, 1) (xorshift), for kernel tests on plain slices.
pub(crate) fn noise(n: usize, seed: u32) -> Vec<f32> {
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

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// The precisions this CPU runs, each with its tolerances (forward, gradients) against burn's
/// f32 layers. f32: rounding only, element-wise. bf16 (checked as a whole, see
/// [`assert_close_in`]): each operand of a multiply is rounded to 8 significant bits (relative
/// error ≤ 2^-8), and errors of random sign keep a sum within about 2^-8 of its scale, so the
/// forward pass gets 4·2^-8. A gradient also flips the ReLU mask wherever the forward error moves
/// a pre-activation across zero: a fraction of about 2^-8 of the units, each changing its
/// gradient by a whole value, so an error near √(2^-8) = 1/16 of the gradient's norm (measured
/// up to 0.066 on the smallest layers here, where the few flips fluctuate most); the tolerance is
/// twice that. (The backward kernels alone, with the same forward state, are held to 2^-8
/// scale in `conv.rs` and `dense.rs`.)
pub(crate) fn precisions() -> Vec<(Precision, f32, f32)> {
    let mut p = vec![(Precision::Fp32, 1e-4, 1e-3)];
    if crate::device::cpu_has_bf16() {
        p.push((Precision::Bf16, 4.0 / 256.0, 1.0 / 8.0));
    } else {
        eprintln!("bf16 not checked: this CPU has no AVX512_BF16");
    }
    p
}

#[test]
fn conv_bn_relu_matches_burn_forward_and_backward() {
    let device = device();
    for (prec, tol, gtol) in precisions() {
        for (n, cin, side, cout) in [
            (1, 1, 5, 3),
            (3, 2, 7, 4),
            (5, 32, 9, 8),
            (2, 1, 28, 32),
            (8, 32, 12, 64),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Valid)
                .init(&device);
            let mut bn = BatchNormConfig::new(cout).init(&device);
            bn.gamma = bn.gamma.map(|g| {
                (g + random([cout], &device).mul_scalar(0.3))
                    .detach()
                    .require_grad()
            });
            bn.beta = bn.beta.map(|b| {
                (b + random([cout], &device).mul_scalar(0.3))
                    .detach()
                    .require_grad()
            });
            let x = random([n, cin, side, side], &device).require_grad();
            let probe = random([n, cout, side - 2, side - 2], &device);

            let reference = relu(bn.forward(conv.forward(x.clone())));
            let sink = BatchStats::default();
            let mode = BnMode::Train {
                eps: bn.epsilon as f32,
                sink: sink.clone(),
            };
            let bias = conv.bias.as_ref().map(|b| b.val()).expect("bias");
            let layer = BnRelu {
                weight: conv.weight.val(),
                bias,
                gamma: bn.gamma.val(),
                beta: bn.beta.val(),
                norm: mode,
                precision: prec,
            };
            let fast = conv_bn_relu(x.clone(), layer);
            let what = format!("{prec} conv n={n} cin={cin} side={side} cout={cout}");
            assert_close_in(&what, values(fast.clone()), values(reference.clone()), tol);
            let (mean, _) = sink.take().expect("batch statistics reported");
            // burn's running mean after one step from zero is momentum x batch mean.
            let running = values(bn.running_mean.value_sync());
            let expected: Vec<f32> = mean.iter().map(|m| m * bn.momentum as f32).collect();
            assert_close_in(&format!("{what} mean"), expected, running, tol);

            let gf = (fast * probe.clone()).sum().backward();
            let gr = (reference * probe).sum().backward();
            let grad = |t: &Tensor<4>, g| values(t.grad(g).expect("gradient"));
            assert_close_in(&format!("{what} dx"), grad(&x, &gf), grad(&x, &gr), gtol);
            let w = conv.weight.val();
            assert_close_in(&format!("{what} dw"), grad(&w, &gf), grad(&w, &gr), gtol);
            for (name, p) in [("gamma", bn.gamma.val()), ("beta", bn.beta.val())] {
                let (a, b) = (p.grad(&gf).expect("grad"), p.grad(&gr).expect("grad"));
                assert_close_in(&format!("{what} d{name}"), values(a), values(b), gtol);
            }
        }
    }
}

#[test]
fn dense_bn_relu_matches_burn_forward_and_backward() {
    let device = device();
    for (prec, tol, gtol) in precisions() {
        for (n, inp, out) in [(2, 3, 4), (7, 50, 9), (33, 300, 128)] {
            let fc = LinearConfig::new(inp, out).init(&device);
            let bn = BatchNormConfig::new(out).init(&device);
            let x = random([n, inp], &device).require_grad();
            let probe = random([n, out], &device);
            let reference = relu(bn.forward(fc.forward(x.clone())));
            let mode = BnMode::Train {
                eps: bn.epsilon as f32,
                sink: BatchStats::default(),
            };
            let bias = fc.bias.as_ref().map(|b| b.val()).expect("bias");
            let layer = BnRelu {
                weight: fc.weight.val(),
                bias: bias.clone(),
                gamma: bn.gamma.val(),
                beta: bn.beta.val(),
                norm: mode,
                precision: prec,
            };
            let fast = dense_bn_relu(x.clone(), layer);
            let what = format!("{prec} dense n={n} in={inp} out={out}");
            assert_close_in(&what, values(fast.clone()), values(reference.clone()), tol);
            let gf = (fast * probe.clone()).sum().backward();
            let gr = (reference * probe).sum().backward();
            assert_close_in(
                &format!("{what} dx"),
                values(x.grad(&gf).expect("grad")),
                values(x.grad(&gr).expect("grad")),
                gtol,
            );
            let w = fc.weight.val();
            assert_close_in(
                &format!("{what} dw"),
                values(w.grad(&gf).expect("grad")),
                values(w.grad(&gr).expect("grad")),
                gtol,
            );
            assert_close_in(
                &format!("{what} dgamma"),
                values(bn.gamma.val().grad(&gf).expect("grad")),
                values(bn.gamma.val().grad(&gr).expect("grad")),
                gtol,
            );
        }
    }
}

#[test]
fn max_pool_matches_burn_forward_and_backward() {
    let device = device();
    let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2])
        .with_strides([2, 2])
        .init();
    for shape in [[1, 1, 2, 2], [3, 5, 6, 4], [7, 64, 24, 24]] {
        let x = random(shape, &device).require_grad();
        let [n, c, h, w] = shape;
        let probe = random([n, c, h / 2, w / 2], &device);
        let (fast, reference) = (max_pool2(x.clone()), pool.forward(x.clone()));
        assert_eq!(
            values(fast.clone()),
            values(reference.clone()),
            "pool {shape:?}"
        );
        let gf = (fast * probe.clone()).sum().backward();
        let gr = (reference * probe).sum().backward();
        assert_eq!(
            values(x.grad(&gf).expect("grad")),
            values(x.grad(&gr).expect("grad")),
            "pool grad {shape:?}"
        );
    }
}

/// The whole network on both paths: logits, every parameter gradient, the running statistics,
/// and evaluation-mode outputs afterwards. Dropout is off: the two paths draw their masks
/// differently (burn's module per element, the fused path from ChaCha8 streams; see the mask
/// test below), and both seed from the device's global RNG, which tests running in parallel also
/// draw from.
#[test]
fn net_fast_path_matches_reference_in_training_and_evaluation() {
    for (prec, tol, gtol) in precisions() {
        let device = device();
        let mut net: Net = ArchConfig::standard(5).init(&device).train();
        net.drop1.prob = 0.0;
        net.drop2.prob = 0.0;
        // 20 images: every multiply of conv2 and the dense layer is large enough for bf16.
        let x = random([20, 1, 28, 28], &device).abs();
        let probe = random([20, 5], &device);

        let (fast_net, ref_net) = (net.clone().with_precision(prec), net.clone());
        let fast = fast_net.forward(x.clone());
        let reference = ref_net.forward_reference(x.clone());
        assert_close_in(
            &format!("{prec} logits"),
            values(fast.clone()),
            values(reference.clone()),
            tol.max(1e-3),
        );

        let gf = burn::optim::GradientsParams::from_grads(
            (fast * probe.clone()).sum().backward(),
            &fast_net,
        );
        let gr = burn::optim::GradientsParams::from_grads(
            (reference * probe).sum().backward(),
            &ref_net,
        );
        let ids = |n: &Net| {
            let mut v = Vec::new();
            n.visit(&mut IdCollector(&mut v));
            v
        };
        let grad = |g: &burn::optim::GradientsParams, id, rank| match rank {
            1 => g.get::<1>(id).map(values),
            2 => g.get::<2>(id).map(values),
            _ => g.get::<4>(id).map(values),
        };
        let pre_bn: Vec<_> = [
            &fast_net.conv1.bias,
            &fast_net.conv2.bias,
            &fast_net.fc1.bias,
        ]
        .iter()
        .filter_map(|b| b.as_ref().map(|b| b.id))
        .collect();
        let mut compared = 0;
        for (id, rank, name) in ids(&fast_net) {
            match (grad(&gf, id, rank), grad(&gr, id, rank)) {
                // A bias right before batch norm has no gradient in exact arithmetic: both paths
                // compute rounding noise, bf16's near its own 2^-8 scale, so only its size is
                // checked.
                (Some(a), Some(_)) if prec == Precision::Bf16 && pre_bn.contains(&id) => {
                    assert!(
                        a.iter().all(|v| v.abs() < 1e-2),
                        "{name}: a bias before batch norm got a real gradient in bf16"
                    );
                }
                // Three layers of flipped ReLU masks compound: measured up to 0.14 for bn2's
                // shift with bf16 (each element a sum over a channel's pixels, where a flip
                // weighs as much as any other term), so twice the single-layer tolerance.
                (Some(a), Some(b)) => {
                    let t = if prec == Precision::Bf16 {
                        2.0 * gtol
                    } else {
                        2e-3
                    };
                    assert_close_in(&format!("{prec} gradient of {name}"), a, b, t)
                }
                (None, None) => continue, // running statistics
                (a, b) => panic!(
                    "{name}: fast has gradient {}, reference {}",
                    a.is_some(),
                    b.is_some()
                ),
            }
            compared += 1;
        }
        assert_eq!(compared, 14, "conv/bn/fc weights, biases, gammas and betas");
        for (name, a, b) in [
            ("bn1", &fast_net.bn1, &ref_net.bn1),
            ("bn2", &fast_net.bn2, &ref_net.bn2),
            ("bn3", &fast_net.bn3, &ref_net.bn3),
        ] {
            assert_close_in(
                &format!("{prec} {name} running mean"),
                values(a.running_mean.value_sync()),
                values(b.running_mean.value_sync()),
                tol,
            );
            assert_close_in(
                &format!("{prec} {name} running var"),
                values(a.running_var.value_sync()),
                values(b.running_var.value_sync()),
                tol,
            );
        }
        let (fe, re) = (fast_net.valid(), ref_net.valid());
        assert_eq!(fe.precision, prec, "valid() keeps the precision");
        let xi = x.inner();
        let fast_eval = values(fe.forward(xi.clone()));
        assert_close_in(
            &format!("{prec} evaluation logits"),
            fast_eval.clone(),
            values(re.forward_reference(xi.clone())),
            tol.max(1e-3),
        );
        // Fewer than 8 images take the blocks one at a time (no Winograd) instead of fused.
        let few = xi.clone().narrow(0, 0, 3);
        assert_close_in(
            &format!("{prec} evaluation logits of 3 images"),
            values(fe.forward(few.clone())),
            values(re.forward_reference(few)),
            tol.max(1e-3),
        );
        if prec == Precision::Bf16 {
            let f32_eval = values(fe.with_precision(Precision::Fp32).forward(xi));
            assert_ne!(
                fast_eval, f32_eval,
                "bf16 evaluation computed exactly as f32"
            );
        }
    }
}

struct IdCollector<'a>(&'a mut Vec<(burn::module::ParamId, usize, String)>);

impl burn::module::ModuleVisitor for IdCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let name = format!("parameter {} {:?}", self.0.len(), param.val().dims());
        self.0.push((param.id, D, name));
    }
}

#[test]
fn dropout_mask_is_one_chacha_word_per_value_and_keeps_the_right_share() {
    use rand::{RngCore, SeedableRng};
    let (n, keep, seed) = (20_000, 0.75f32, 99);
    let mask = dropout::dropout_mask(n, keep, seed);
    // Value i of chunk c is word i of ChaCha8 stream c: the same mask as drawing one word at a
    // time, whatever the chunking inside.
    for (c, part) in mask.chunks(8192).enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(c as u64);
        for (i, &v) in part.iter().enumerate() {
            let kept = f64::from(rng.next_u32()) < f64::from(keep) * 4_294_967_296.0;
            assert_eq!(
                v,
                if kept { 1.0 / keep } else { 0.0 },
                "chunk {c} value {i}"
            );
        }
    }
    let share = mask.iter().filter(|&&v| v > 0.0).count() as f64 / n as f64;
    assert!((share - 0.75).abs() < 0.015, "kept share {share}");
}

mod optimizer;

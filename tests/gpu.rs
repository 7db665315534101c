//! The GPU path (`--features gpu`, `--device gpu`) against the CPU path, on whatever adapter
//! wgpu finds: a GPU, or a software Vulkan driver such as Mesa's lavapipe, which CI installs.
//!
//! Built without the `gpu` feature, or where no Vulkan driver is installed, these tests are
//! reported as ignored (see build.rs); `WARMSTART_REQUIRE_GPU=1` makes them run, and fail where
//! no adapter is found.

mod common;

use burn::module::Module;
use burn::prelude::*;
use common::*;
use warmstart::data::Images;
use warmstart::device::{self, DeviceKind};
use warmstart::model::{ArchConfig, Net, images_tensor};
use warmstart::record::AdamSettings;
use warmstart::train::{forward_backward, precise_bn::precise_bn, step, training_parts};

fn gpu() -> Device {
    device::make(DeviceKind::Gpu, 7).unwrap_or_else(|e| panic!("no GPU device: {e}"))
}

fn cpu() -> Device {
    device::make(DeviceKind::Cpu, 7).unwrap()
}

/// The first `n` bundled MNIST images of `set` ("train" or "t10k").
fn mnist(set: &str, n: usize) -> Images {
    let dir = warmstart::bundled::dir("mnist");
    warmstart::data::idx::read_pair(
        &dir.join(format!("{set}-images-idx3-ubyte.gz")),
        &dir.join(format!("{set}-labels-idx1-ubyte.gz")),
    )
    .unwrap()
    .truncate(n)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// The largest difference between `a` and `b`, relative to `b`'s largest magnitude.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Every tensor of two networks (weights and batch-norm statistics), by name.
fn tensors(net: &Net) -> Vec<(&'static str, Vec<f32>)> {
    let bn = |b: &burn::nn::BatchNorm| {
        [
            host(b.gamma.val()),
            host(b.beta.val()),
            host(b.running_mean.value()),
            host(b.running_var.value()),
        ]
    };
    let [g1, b1, m1, v1] = bn(&net.bn1);
    let [g2, b2, m2, v2] = bn(&net.bn2);
    let [g3, b3, m3, v3] = bn(&net.bn3);
    vec![
        ("conv1.weight", host(net.conv1.weight.val())),
        ("conv2.weight", host(net.conv2.weight.val())),
        ("fc1.weight", host(net.fc1.weight.val())),
        ("fc2.weight", host(net.fc2.weight.val())),
        ("bn1.gamma", g1),
        ("bn1.beta", b1),
        ("bn1.running_mean", m1),
        ("bn1.running_var", v1),
        ("bn2.gamma", g2),
        ("bn2.beta", b2),
        ("bn2.running_mean", m2),
        ("bn2.running_var", v2),
        ("bn3.gamma", g3),
        ("bn3.beta", b3),
        ("bn3.running_mean", m3),
        ("bn3.running_var", v3),
    ]
}

fn assert_close(what: &str, a: &Net, b: &Net, tol: f32) {
    let diffs: Vec<(&str, f32)> = tensors(a)
        .into_iter()
        .zip(tensors(b))
        .map(|((name, x), (_, y))| (name, rel_diff(&x, &y)))
        .collect();
    for (name, d) in diffs {
        assert!(
            d < tol,
            "{what}: {name} differs by {d} (relative) between the devices"
        );
    }
}

#[test]
#[cfg_attr(
    not(warmstart_gpu),
    ignore = "needs the gpu feature and a Vulkan driver"
)]
fn dropout_keeps_the_share_it_should_on_the_gpu() {
    for dev in [cpu(), gpu()] {
        let ad = dev.clone().autodiff();
        let drop = burn::nn::DropoutConfig::new(0.25).init();
        let y = drop.forward(Tensor::<2>::ones([256, 256], &ad));
        let kept = host(y.clone().greater_elem(0.0).float())
            .iter()
            .sum::<f32>()
            / 65536.0;
        let mean = host(y.mean())[0];
        assert!(
            (kept - 0.75).abs() < 0.02,
            "{dev:?}: dropout 0.25 kept {kept} of the values"
        );
        assert!(
            (mean - 1.0).abs() < 0.03,
            "{dev:?}: mean after dropout {mean}"
        );
    }
}

#[test]
#[cfg_attr(
    not(warmstart_gpu),
    ignore = "needs the gpu feature and a Vulkan driver"
)]
fn batch_norm_agrees_on_both_devices_past_the_long_rows() {
    // conv1's output at batch 128: each channel's statistics reduce 128·26·26 = 86,528 values,
    // past the ~65,000 where the GPU's reductions along one contiguous row go wrong.
    let dims = [128, 32, 26, 26];
    let n: usize = dims.iter().product();
    let mut state = 12345u32;
    let mut noise = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1 << 24) as f32 - 0.5
    };
    let input: Vec<f32> = (0..n).map(|i| 3.0 * noise() + (i % 7) as f32).collect();
    let probe: Vec<f32> = (0..n).map(|_| noise()).collect();
    let run = |dev: &Device| {
        let ad = dev.clone().autodiff();
        let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), dims), &ad);
        let bn = burn::nn::BatchNormConfig::new(32).init(&ad);
        let x = tensor(&input).require_grad();
        let y = warmstart::model::batch_norm(&bn, x.clone());
        let g = (y.clone() * tensor(&probe)).sum().backward();
        let grad = |t: Tensor<4>| host(t.grad(&g).expect("a gradient"));
        let grad1 = |t: Tensor<1>| host(t.grad(&g).expect("a gradient"));
        vec![
            ("output", host(y)),
            ("d input", grad(x)),
            ("d gamma", grad1(bn.gamma.val())),
            ("d beta", grad1(bn.beta.val())),
            ("running mean", host(bn.running_mean.value())),
            ("running var", host(bn.running_var.value())),
        ]
    };
    let (on_gpu, on_cpu) = (run(&gpu()), run(&cpu()));
    for ((name, g), (_, c)) in on_gpu.iter().zip(&on_cpu) {
        let d = rel_diff(g, c);
        assert!(d < 1e-4, "batch norm's {name} differs by {d} (relative)");
    }
}

#[test]
#[cfg_attr(
    not(warmstart_gpu),
    ignore = "needs the gpu feature and a Vulkan driver"
)]
fn the_same_weights_predict_normalise_and_learn_alike_on_both_devices() {
    let (cpu, gpu) = (cpu(), gpu());
    let mut net = ArchConfig::standard(10).init(&cpu);
    // Dropout draws from each device's own generator: without it both compute the same thing.
    (net.drop1.prob, net.drop2.prob) = (0.0, 0.0);
    // Small batches (and a short last one, of a size the GPU's kernel tuning files with 16's)
    // keep first-run tuning short on a software adapter; batch 128's long rows are the batch-norm
    // test's.
    const B: usize = 16;
    let images = mnist("train", 2 * B + 12);
    let batch = |k: usize| warmstart::batch::plain(&images, k * B..((k + 1) * B).min(images.len()));

    // Inference: the same probabilities.
    let probs = |dev: &Device| {
        let net = net.clone().fork(dev).valid();
        host(net.probabilities(images_tensor(batch(0).images, dev)))
    };
    let d = rel_diff(&probs(&gpu), &probs(&cpu));
    assert!(d < 1e-4, "probabilities differ by {d}");

    // Training: PreciseBN's statistics, the first step's gradients, then the losses of three
    // Adam steps, from the same start. (Weights after Adam steps are not compared: Adam's first
    // steps move every weight by about ±lr, and a gradient that is zero up to rounding can take
    // either sign on either device.)
    let adam = AdamSettings {
        lr: 1e-3,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
        weight_decay: 0.0,
    };
    let train = |dev: &Device| {
        let ad = dev.clone().autodiff();
        let (model, mut optim, loss) = training_parts(net.clone(), &adam, None, &ad);
        let stats = precise_bn(model.clone(), &images, B, &ad).valid();
        let mut model = model;
        let (mut losses, mut first) = (vec![], vec![]);
        for k in 0..3 {
            let (grads, l, _) = forward_backward(&model, &loss, batch(k), &ad);
            if k == 0 {
                first = gradients(&model, &grads);
            }
            losses.push(l);
            model = step(model, &mut optim, grads, 1e-3, None);
        }
        (stats, first, losses)
    };
    let (stats_c, grads_c, losses_c) = train(&cpu);
    let (stats_g, grads_g, losses_g) = train(&gpu);
    assert_close("PreciseBN", &stats_g, &stats_c, 1e-3);
    for ((name, g), (_, c)) in grads_g.iter().zip(&grads_c) {
        let d = rel_diff(g, c);
        assert!(d < 1e-3, "the gradient of {name} differs by {d} (relative)");
    }
    for (g, c) in losses_g.iter().zip(&losses_c) {
        assert!(
            (g - c).abs() < 1e-3 * c.abs(),
            "losses {losses_g:?} on the GPU, {losses_c:?} on the CPU"
        );
    }
}

/// The gradient of every weight, by name. Not the biases of the layers batch norm follows: their
/// gradient is zero but for rounding, which differs between devices.
fn gradients(net: &Net, grads: &burn::optim::GradientsParams) -> Vec<(&'static str, Vec<f32>)> {
    let g4 = |p: &burn::module::Param<Tensor<4>>| host(grads.get::<4>(p.id).expect("a gradient"));
    let g2 = |p: &burn::module::Param<Tensor<2>>| host(grads.get::<2>(p.id).expect("a gradient"));
    let g1 = |p: &burn::module::Param<Tensor<1>>| host(grads.get::<1>(p.id).expect("a gradient"));
    vec![
        ("conv1.weight", g4(&net.conv1.weight)),
        ("conv2.weight", g4(&net.conv2.weight)),
        ("fc1.weight", g2(&net.fc1.weight)),
        ("fc2.weight", g2(&net.fc2.weight)),
        ("fc2.bias", g1(net.fc2.bias.as_ref().unwrap())),
        ("bn1.gamma", g1(&net.bn1.gamma)),
        ("bn1.beta", g1(&net.bn1.beta)),
        ("bn2.gamma", g1(&net.bn2.gamma)),
        ("bn2.beta", g1(&net.bn2.beta)),
        ("bn3.gamma", g1(&net.bn3.gamma)),
        ("bn3.beta", g1(&net.bn3.beta)),
    ]
}

#[test]
#[cfg_attr(
    not(warmstart_gpu),
    ignore = "needs the gpu feature and a Vulkan driver"
)]
fn the_gpu_trains_evaluates_predicts_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("gpu");
    let out = bin()
        .args([
            "pretrain", "--device", "gpu", "--limit", "55", "--epochs", "1",
        ])
        // 45 training images in batches of 16, 10 validation, 16 test, 16 to predict: shapes the
        // GPU's kernel tuning files together, which keeps it short on a software adapter.
        .args(["--batch-size", "16", "--test-limit", "16", "--out", s(&run)])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("GPU: "),
        "the adapter is not named: {stdout}{stderr}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("best.json")).unwrap()).unwrap();
    assert_eq!(record["training"]["device"], "gpu", "{record}");

    // The GPU-trained checkpoint evaluates alike on both devices.
    let acc = |device: &str| {
        let ev = ok(&[
            "eval",
            "--model",
            s(&run),
            "--limit",
            "16",
            "--device",
            device,
        ]);
        figure_after(&ev, "Accuracy on test")
    };
    let (on_gpu, on_cpu) = (acc("gpu"), acc("cpu"));
    assert!(
        (on_gpu - on_cpu).abs() <= 0.01,
        "eval: {on_gpu} on the GPU, {on_cpu} on the CPU"
    );

    // predict: the same probabilities, to the four decimals printed, on both devices.
    let test = mnist("t10k", 16);
    let mut files = vec![];
    for i in 0..16 {
        let path = tmp.path().join(format!("digit{i}.png"));
        let px: Vec<u8> = test.image(i).iter().map(|p| 255 - p).collect();
        image::GrayImage::from_raw(28, 28, px)
            .unwrap()
            .save(&path)
            .unwrap();
        files.push(path);
    }
    let predict = |device: &str| {
        let mut args = vec![
            "predict",
            "--model",
            s(&run),
            "--top",
            "10",
            "--device",
            device,
        ];
        args.extend(files.iter().map(|f| s(f)));
        probabilities(&ok(&args))
    };
    let (p_gpu, p_cpu) = (predict("gpu"), predict("cpu"));
    assert_eq!(p_gpu.len(), 160, "16 images, ten classes each");
    for ((label, g), (_, c)) in p_gpu.iter().zip(&p_cpu) {
        assert!(
            (g - c).abs() <= 2e-4,
            "{label}: {g} on the GPU, {c} on the CPU"
        );
    }

    // export reads the GPU-trained checkpoint as any other.
    let onnx = tmp.path().join("gpu.onnx");
    ok(&["export", "--model", s(&run), "--out", s(&onnx)]);
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1_000_000);
}

/// `(file: class, probability)` for every `class (p)` that `predict` printed, in order.
fn probabilities(out: &str) -> Vec<(String, f64)> {
    let mut found = vec![];
    for line in out.lines() {
        let Some((file, rest)) = line.split_once(": ") else {
            continue;
        };
        for item in rest.split(", ") {
            if let Some((class, p)) = item.split_once(" (") {
                let p = p.trim_end_matches(')').parse().expect("a probability");
                found.push((format!("{file}: {class}"), p));
            }
        }
    }
    found
}

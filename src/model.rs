//! The seed CNN: Conv2d(32, 3x3) → BN → ReLU → Conv2d(64, 3x3) → BN → ReLU → MaxPool 2x2 →
//! Dropout 0.25 → Flatten → Dense 128 → BN → ReLU → Dropout 0.5 → Dense(classes).
//!
//! The layer names (`conv1`, `bn1`, ..., `fc2`) are the tensor names in checkpoints, and transfer
//! matches on them. Everything outside this file sees only [`Net::forward`], which on the CPU runs
//! the fused ops of [`crate::fast`] and elsewhere burn's layers ([`Net::forward_reference`]).

use crate::data::SIDE;
use crate::fast::{self, BatchStats, BnMode, FoldedConv, Precision};
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};
use serde::{Deserialize, Serialize};

/// Name and version of the architecture, stored in checkpoints and checked when loading.
pub const ARCHITECTURE: &str = "warmstart-seed-cnn-v1";

/// Sizes of the seed CNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// Filters of the first convolution.
    pub conv1: usize,
    /// Filters of the second convolution.
    pub conv2: usize,
    /// Units of the hidden dense layer.
    pub dense: usize,
    /// Outputs of the classifier head.
    pub classes: usize,
}

impl ArchConfig {
    /// The homework's network (32 and 64 filters, 128 dense units) for `classes` classes: the
    /// only sizes warmstart trains and loads.
    pub fn standard(classes: usize) -> Self {
        ArchConfig {
            conv1: 32,
            conv2: 64,
            dense: 128,
            classes,
        }
    }

    /// Features after the convolutions and the pooling: two valid 3x3 convolutions, then 2x2 pooling.
    pub fn flat_features(&self) -> usize {
        let side = (SIDE - 4) / 2;
        self.conv2 * side * side
    }

    /// A freshly initialised network of these sizes (from the device's seeded RNG).
    pub fn init(&self, device: &Device) -> Net {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Valid)
                .init(device)
        };
        Net {
            conv1: conv(1, self.conv1),
            bn1: BatchNormConfig::new(self.conv1).init(device),
            conv2: conv(self.conv1, self.conv2),
            bn2: BatchNormConfig::new(self.conv2).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            drop1: DropoutConfig::new(0.25).init(),
            fc1: LinearConfig::new(self.flat_features(), self.dense).init(device),
            bn3: BatchNormConfig::new(self.dense).init(device),
            drop2: DropoutConfig::new(0.5).init(),
            fc2: self.head(device),
            precision: Precision::Fp32,
        }
    }

    /// A freshly initialised classifier head.
    pub fn head(&self, device: &Device) -> Linear {
        LinearConfig::new(self.dense, self.classes).init(device)
    }
}

#[derive(Module, Debug)]
/// The network. Field names are the tensor names in checkpoints.
pub struct Net {
    /// Conv 3x3, 1 → 32 channels.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// Conv 3x3, 32 → 64 channels.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// 2x2 max pooling.
    pub pool: MaxPool2d,
    /// Dropout 0.25 after pooling.
    pub drop1: Dropout,
    /// Dense 9216 → 128.
    pub fc1: Linear,
    /// Batch norm after `fc1`.
    pub bn3: BatchNorm,
    /// Dropout 0.5 before the head.
    pub drop2: Dropout,
    /// The classifier head, 128 → classes.
    pub fc2: Linear,
    /// The arithmetic of the fused CPU path's multiplies. Not a weight (checkpoints stay f32 and
    /// do not store it): whoever runs the network sets it from the run's resolved `--precision`
    /// ([`Net::with_precision`]); a freshly built or loaded network computes in f32.
    #[module(skip)]
    pub precision: Precision,
}

impl Net {
    /// The parameter ids of the four blocks from the input to the head (conv1 + bn1, conv2 +
    /// bn2, fc1 + bn3, fc2), with each parameter's rank, for per-block learning rates.
    pub fn block_params(&self) -> [Vec<(burn::module::ParamId, usize)>; 4] {
        let conv = |c: &Conv2d, bn: &BatchNorm| {
            let mut v = vec![(c.weight.id, 4), (bn.gamma.id, 1), (bn.beta.id, 1)];
            v.extend(c.bias.as_ref().map(|b| (b.id, 1)));
            v
        };
        let dense = |l: &Linear| {
            let mut v = vec![(l.weight.id, 2)];
            v.extend(l.bias.as_ref().map(|b| (b.id, 1)));
            v
        };
        let mut fc1 = dense(&self.fc1);
        fc1.extend([(self.bn3.gamma.id, 1), (self.bn3.beta.id, 1)]);
        [
            conv(&self.conv1, &self.bn1),
            conv(&self.conv2, &self.bn2),
            fc1,
            dense(&self.fc2),
        ]
    }

    /// The same network computing in `precision` (the fused CPU path; burn's layers stay f32).
    pub fn with_precision(self, precision: Precision) -> Self {
        Net { precision, ..self }
    }

    /// The network with gradients for everything but the classifier head turned off (`false`)
    /// or on again (`true`). Batch norm and dropout keep their training behaviour either way.
    pub fn body_trainable(self, trainable: bool) -> Self {
        Net {
            conv1: self.conv1.set_require_grad(trainable),
            bn1: self.bn1.set_require_grad(trainable),
            conv2: self.conv2.set_require_grad(trainable),
            bn2: self.bn2.set_require_grad(trainable),
            fc1: self.fc1.set_require_grad(trainable),
            bn3: self.bn3.set_require_grad(trainable),
            ..self
        }
    }

    /// Logits `[batch, classes]` for images `[batch, 1, 28, 28]` scaled to `[0, 1]`.
    ///
    /// On the CPU this runs the fused ops of [`crate::fast`]; elsewhere, burn's own layers.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let device = x.device();
        let bn_training = [&self.bn1, &self.bn2, &self.bn3]
            .iter()
            .all(|bn| bn.training.is_enabled());
        match (fast::enabled(&device), device.is_autodiff()) {
            (true, false) => self.forward_fast(x, false),
            // The fused batch norm differentiates only through batch statistics.
            (true, true) if bn_training => self.forward_fast(x, true),
            _ => self.forward_reference(x),
        }
    }

    /// The forward pass on burn's reference layers (the definition the fused path must match).
    pub fn forward_reference(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.body_reference(x);
        self.fc2.forward(self.drop2.forward(x))
    }

    /// Everything before the head's dropout, on burn's layers: the penultimate features.
    fn body_reference(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
        let x = relu(batch_norm(&self.bn2, self.conv2.forward(x)));
        let x = self.drop1.forward(self.pool.forward(x));
        let x: Tensor<2> = x.flatten(1, 3);
        relu(batch_norm(&self.bn3, self.fc1.forward(x)))
    }

    /// The penultimate features `[batch, 128]` (fc1's block, after ReLU) and the logits, in
    /// evaluation mode: how `suggest` tells kinds of image apart.
    pub fn features_and_logits(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let features = self.hidden_eval(self.pooled_eval(x));
        let logits = self.fc2.forward(features.clone());
        (features, logits)
    }

    /// In evaluation mode, the convolution blocks and max pooling, flattened `[batch, 9216]`:
    /// everything before the first dropout (fused where the device allows).
    fn pooled_eval(&self, x: Tensor<4>) -> Tensor<2> {
        if fast::enabled(&x.device()) && !x.device().is_autodiff() {
            let (first, second) = (
                folded(&self.conv1, &self.bn1),
                folded(&self.conv2, &self.bn2),
            );
            fast::conv_blocks_pool_eval(x, first, second, self.precision)
        } else {
            let x = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
            let x = relu(batch_norm(&self.bn2, self.conv2.forward(x)));
            self.pool.forward(x)
        }
        .flatten(1, 3)
    }

    /// In evaluation mode, fc1's block `[batch, 128]` from the pooled features.
    fn hidden_eval(&self, x: Tensor<2>) -> Tensor<2> {
        if fast::enabled(&x.device()) && !x.device().is_autodiff() {
            dense_block(&self.fc1, &self.bn3, x, false, self.precision)
        } else {
            relu(batch_norm(&self.bn3, self.fc1.forward(x)))
        }
    }

    fn forward_fast(&self, x: Tensor<4>, train: bool) -> Tensor<2> {
        let x = self.body_fast(x, train);
        self.fc2.forward(fast::dropout(&self.drop2, x))
    }

    /// Everything before the head's dropout, on the fused path.
    fn body_fast(&self, x: Tensor<4>, train: bool) -> Tensor<2> {
        let prec = self.precision;
        let x = if train {
            let x = conv_block_train(&self.conv1, &self.bn1, x, prec);
            let x = conv_block_train(&self.conv2, &self.bn2, x, prec);
            fast::dropout(&self.drop1, fast::max_pool2(x))
        } else {
            let (first, second) = (
                folded(&self.conv1, &self.bn1),
                folded(&self.conv2, &self.bn2),
            );
            fast::conv_blocks_pool_eval(x, first, second, prec)
        };
        let x: Tensor<2> = x.flatten(1, 3);
        dense_block(&self.fc1, &self.bn3, x, train, prec)
    }

    /// Class probabilities `[batch, classes]` of `samples` passes with both dropout layers on
    /// and batch norm in evaluation mode (MC dropout): where the passes disagree, the model does
    /// not know (`suggest --strategy bald`). The convolutions, before any dropout, run once; pass
    /// `s` draws its masks from `seed + s`.
    pub fn dropout_samples(&self, x: Tensor<4>, samples: usize, seed: u64) -> Vec<Tensor<2>> {
        let pooled = self.pooled_eval(x);
        (0..samples as u64)
            .map(|s| {
                let seed = seed.wrapping_add(s).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let x = fast::dropout_seeded(pooled.clone(), self.drop1.prob, seed);
                let x = fast::dropout_seeded(self.hidden_eval(x), self.drop2.prob, seed ^ 1);
                softmax(self.fc2.forward(x), 1)
            })
            .collect()
    }

    /// Class probabilities `[batch, classes]`.
    pub fn probabilities(&self, x: Tensor<4>) -> Tensor<2> {
        softmax(self.forward(x), 1)
    }

    /// Number of classes the head predicts.
    pub fn classes(&self) -> usize {
        self.fc2.weight.dims()[1]
    }
}

/// `bn.forward(x)` as burn's `BatchNorm` computes it, with the training-mode batch statistics
/// reduced one axis at a time.
///
/// Why: burn's `batch_norm_train` reduces each channel's N·H·W values as one contiguous row, and
/// on the `wgpu` backend (cubecl 0.11) a row longer than about 65,000 values sums wrong: at
/// batch 128, conv1's 86,528 values a channel gave batch statistics off by up to 97% on Mesa's
/// lavapipe, and GPU-trained models evaluated 20 points below CPU-trained ones. One axis at a
/// time, no row is longer than the batch or an image side, forward or backward. Public for the
/// device tests, which check it at those sizes.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    let device = x.device();
    let channels = bn.gamma.dims()[0];
    let mut per_channel = [1; D];
    per_channel[1] = channels;
    let axes_mean = |t: Tensor<D>| {
        (0..D)
            .rev()
            .filter(|&d| d != 1)
            .fold(t, |t, d| t.mean_dim(d))
    };
    // Broadcasts are explicit `expand`s: the gradient of an implicit broadcast is reduced over
    // all its axes at once (the same long rows again), an `expand`'s one axis at a time.
    let dims = x.dims();
    let spread = |t: Tensor<D>| t.expand(dims);
    let mean = axes_mean(x.clone());
    let centered = x - spread(mean.clone());
    let var = axes_mean(centered.clone() * centered.clone());
    let y = centered / spread(var.clone().add_scalar(bn.epsilon).sqrt())
        * spread(bn.gamma.val().reshape(per_channel))
        + spread(bn.beta.val().reshape(per_channel));
    let m = bn.momentum;
    for (state, batch) in [(&bn.running_mean, mean), (&bn.running_var, var)] {
        let old = state.value_sync().to_device(&device);
        let batch = batch.reshape([channels]).detach();
        state.update(old.mul_scalar(1.0 - m).add(batch.mul_scalar(m)).detach());
    }
    y
}

/// A conv block's training forward (batch statistics, which update the running ones).
fn conv_block_train(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, prec: Precision) -> Tensor<4> {
    let device = x.device();
    let (mode, stats) = bn_mode(bn, true);
    let w = conv.weight.val();
    let b = bias_or_zeros(conv.bias.as_ref(), w.dims()[0], &device);
    let y = fast::conv_bn_relu(x, block(w, b, bn, mode, prec));
    update_running(bn, stats, &device);
    y
}

/// A conv block for evaluation: bias and running statistics folded into the weights' scale and
/// shift.
fn folded(conv: &Conv2d, bn: &BatchNorm) -> FoldedConv {
    let w = conv.weight.val();
    let cout = w.dims()[0];
    let bias = conv
        .bias
        .as_ref()
        .map(|b| host(b.val()))
        .unwrap_or_else(|| vec![0.0; cout]);
    let (gamma, beta) = (host(bn.gamma.val()), host(bn.beta.val()));
    let (mean, var) = (host(bn.running_mean.value()), host(bn.running_var.value()));
    FoldedConv::new(
        host(w),
        &bias,
        (&gamma, &beta),
        (&mean, &var),
        bn.epsilon as f32,
    )
}

fn dense_block(
    fc: &Linear,
    bn: &BatchNorm,
    x: Tensor<2>,
    train: bool,
    prec: Precision,
) -> Tensor<2> {
    let device = x.device();
    let (mode, stats) = bn_mode(bn, train);
    let w = fc.weight.val();
    let b = bias_or_zeros(fc.bias.as_ref(), w.dims()[1], &device);
    let y = fast::dense_bn_relu(x, block(w, b, bn, mode, prec));
    update_running(bn, stats, &device);
    y
}

/// A fused block's description from its layer's weights and bias and its batch norm.
fn block<const D: usize>(
    weight: Tensor<D>,
    bias: Tensor<1>,
    bn: &BatchNorm,
    norm: BnMode,
    precision: Precision,
) -> fast::BnRelu<D> {
    fast::BnRelu {
        weight,
        bias,
        gamma: bn.gamma.val(),
        beta: bn.beta.val(),
        norm,
        precision,
    }
}

fn bias_or_zeros(bias: Option<&Param<Tensor<1>>>, len: usize, device: &Device) -> Tensor<1> {
    bias.map(|b| b.val())
        .unwrap_or_else(|| Tensor::zeros([len], device))
}

/// The tensor's values on the host (a plain copy for f32 data; `iter` converts value by value).
fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let data = t.into_data();
    data.try_to_vec::<f32>()
        .unwrap_or_else(|_| data.iter::<f32>().collect())
}

fn bn_mode(bn: &BatchNorm, train: bool) -> (BnMode, Option<BatchStats>) {
    let eps = bn.epsilon as f32;
    if train {
        let sink = BatchStats::default();
        (
            BnMode::Train {
                eps,
                sink: sink.clone(),
            },
            Some(sink),
        )
    } else {
        let (mean, var) = (host(bn.running_mean.value()), host(bn.running_var.value()));
        (BnMode::Eval { eps, mean, var }, None)
    }
}

/// The running averages, updated from a training batch as burn's `BatchNorm` does.
fn update_running(bn: &BatchNorm, stats: Option<BatchStats>, device: &Device) {
    let Some((mean, var)) = stats.and_then(|s| s.take()) else {
        return;
    };
    let m = bn.momentum;
    for (state, batch) in [(&bn.running_mean, mean), (&bn.running_var, var)] {
        let n = batch.len();
        let batch = Tensor::<1>::from_data(TensorData::new(batch, [n]), device);
        let old = state.value_sync().to_device(device);
        state.update(old.mul_scalar(1.0 - m).add(batch.mul_scalar(m)).detach());
    }
}

/// Puts host pixels (`n * 784` values) on `device` as `[n, 1, 28, 28]`.
pub fn images_tensor(pixels: Vec<f32>, device: &Device) -> Tensor<4> {
    let n = pixels.len() / (SIDE * SIDE);
    Tensor::from_data(TensorData::new(pixels, [n, 1, SIDE, SIDE]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes() {
        let device = Device::flex();
        let net = ArchConfig::standard(7).init(&device);
        let x = images_tensor(vec![0.5; 3 * 784], &device);
        assert_eq!(net.forward(x.clone()).dims(), [3, 7]);
        let p = net.valid().probabilities(x).into_data();
        let v: Vec<f32> = p.iter::<f32>().collect();
        for row in v.chunks(7) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(net.classes(), 7);
        assert_eq!(ArchConfig::standard(10).flat_features(), 9216);
    }

    #[test]
    fn dropout_samples_are_the_forward_pass_with_masks() {
        let device = Device::flex();
        let mut net = ArchConfig::standard(5).init(&device).valid();
        let x = images_tensor(
            (0..2 * 784).map(|i| (i % 13) as f32 / 13.0).collect(),
            &device,
        );
        let v = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        let sampled = net.dropout_samples(x.clone(), 3, 7);
        // Masks differ between passes, and the same seed gives the same passes.
        assert_ne!(v(sampled[0].clone()), v(sampled[1].clone()));
        assert_eq!(
            v(sampled[2].clone()),
            v(net.dropout_samples(x.clone(), 3, 7)[2].clone())
        );
        // Without dropout, every pass is the model's own evaluation.
        (net.drop1.prob, net.drop2.prob) = (0.0, 0.0);
        let plain = v(net.probabilities(x.clone()));
        for pass in net.dropout_samples(x, 2, 7) {
            for (a, b) in v(pass).iter().zip(&plain) {
                assert!((a - b).abs() < 1e-6, "{a} against {b}");
            }
        }
    }
}

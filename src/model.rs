//! The seed CNN: Conv2d(32, 3x3) → BN → ReLU → Conv2d(64, 3x3) → BN → ReLU → MaxPool 2x2 →
//! Dropout 0.25 → Flatten → Dense 128 → BN → ReLU → Dropout 0.5 → Dense(classes).
//!
//! The layer names (`conv1`, `bn1`, ..., `fc2`) are the tensor names in checkpoints, and transfer
//! matches on them. Everything outside this file sees only [`Net::forward`], so the CPU hot path can
//! be replaced by fused kernels without touching training, data or the CLI.

use crate::data::SIDE;
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
    pub conv1: usize,
    pub conv2: usize,
    pub dense: usize,
    pub classes: usize,
}

impl ArchConfig {
    pub fn seed(classes: usize) -> Self {
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
        }
    }

    /// A freshly initialised classifier head.
    pub fn head(&self, device: &Device) -> Linear {
        LinearConfig::new(self.dense, self.classes).init(device)
    }
}

#[derive(Module, Debug)]
pub struct Net {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub pool: MaxPool2d,
    pub drop1: Dropout,
    pub fc1: Linear,
    pub bn3: BatchNorm,
    pub drop2: Dropout,
    pub fc2: Linear,
}

impl Net {
    /// Logits `[batch, classes]` for images `[batch, 1, 28, 28]` scaled to `[0, 1]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.bn1.forward(self.conv1.forward(x)));
        let x = relu(self.bn2.forward(self.conv2.forward(x)));
        let x = self.drop1.forward(self.pool.forward(x));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.bn3.forward(self.fc1.forward(x)));
        self.fc2.forward(self.drop2.forward(x))
    }

    /// Class probabilities `[batch, classes]`.
    pub fn probabilities(&self, x: Tensor<4>) -> Tensor<2> {
        softmax(self.forward(x), 1)
    }

    pub fn classes(&self) -> usize {
        self.fc2.weight.dims()[1]
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
        let net = ArchConfig::seed(7).init(&device);
        let x = images_tensor(vec![0.5; 3 * 784], &device);
        assert_eq!(net.forward(x.clone()).dims(), [3, 7]);
        let p = net.valid().probabilities(x).into_data();
        let v: Vec<f32> = p.iter::<f32>().collect();
        for row in v.chunks(7) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(net.classes(), 7);
        assert_eq!(ArchConfig::seed(10).flat_features(), 9216);
    }
}

//! Throughput and latency of the seed CNN on this machine, measured through the same code paths as
//! training and evaluation (batch preparation, augmentation, forward, backward, Adam step).
//! Benchmarks report; they never assert times.

use crate::augment::AugmentConfig;
use crate::batch::{epoch_batches, plain};
use crate::cancel;
use crate::data::Images;
use crate::device::Precision;
use crate::error::{Error, Result};
use crate::eval::probabilities;
use crate::model::ArchConfig;
use crate::train::{forward_backward, training_parts};
use burn::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Timed training batches at batch 128 (after `warmup`).
    pub batches_b128: usize,
    /// Timed training batches at batch 32 with augmentation.
    pub batches_b32: usize,
    /// Untimed batches before each training measurement.
    pub warmup: usize,
    /// Inference repeats at batch 1000 (the median is reported).
    pub infer_repeats: usize,
    /// Single-image predictions timed for the latency figure.
    pub latency_repeats: usize,
    /// The arithmetic of the network's multiplies.
    pub precision: Precision,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batches_b128: 30,
            batches_b32: 100,
            warmup: 5,
            infer_repeats: 5,
            latency_repeats: 100,
            precision: Precision::Fp32,
        }
    }
}

/// The images a benchmark runs on: the bundled MNIST test set (10,000 images), the same on
/// every machine so that figures compare.
pub fn images() -> Result<Images> {
    let dir = crate::bundled::dir("mnist");
    crate::data::idx::read_pair(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
}

/// Measured figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Training images per second at batch 128, no augmentation.
    pub train_b128: f64,
    /// Training images per second at batch 32 with augmentation.
    pub train_b32_aug: f64,
    /// Inference images per second at batch 1000.
    pub infer_b1000: f64,
    /// Milliseconds to predict one image.
    pub latency_b1_ms: f64,
    /// Peak resident memory of the process, MiB (where the OS tells).
    pub peak_rss_mib: Option<f64>,
}

impl BenchResult {
    /// The machine-readable lines: `train_b128: 812.4 images/s`, ... fp32's keep their names
    /// (scripts read them); bf16's get a `_bf16` suffix (`train_b128_bf16: ...`).
    pub fn lines(&self, precision: Precision) -> String {
        let rss = self
            .peak_rss_mib
            .map_or("unknown".to_string(), |m| format!("{m:.1} MiB"));
        let sfx = match precision {
            Precision::Fp32 => "",
            Precision::Bf16 => "_bf16",
        };
        format!(
            "train_b128{sfx}: {:.1} images/s\ntrain_b32_aug{sfx}: {:.1} images/s\n\
             infer_b1000{sfx}: {:.1} images/s\nlatency_b1{sfx}: {:.3} ms\npeak_rss{sfx}: {rss}\n",
            self.train_b128, self.train_b32_aug, self.infer_b1000, self.latency_b1_ms
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Trains `timed` batches (after `warmup`) from an endless shuffled stream; returns images/s.
fn train_throughput(
    images: &Arc<Images>,
    batch: usize,
    augment: AugmentConfig,
    warmup: usize,
    timed: usize,
    precision: Precision,
    device: &Device,
) -> Result<f64> {
    let ad = device.clone().autodiff();
    let net = ArchConfig::standard(10).init(device);
    let (model, mut optim, loss_fn) =
        training_parts(net, &crate::record::AdamSettings::with_lr(1e-3), None, &ad);
    let mut model = model.with_precision(precision);
    let mut stream =
        (0..).flat_map(|epoch| epoch_batches(images.clone(), batch, augment, 1, epoch));
    let mut t0 = Instant::now();
    let mut seen = 0;
    for i in 0..warmup + timed {
        cancel::check("benchmarking")?;
        if i == warmup {
            t0 = Instant::now();
            seen = 0;
        }
        let b = stream.next().expect("an endless stream");
        seen += b.len();
        let (grads, _, _) = forward_backward(&model, &loss_fn, b, &ad);
        model = optim.step(1e-3, model, grads);
    }
    Ok(seen as f64 / t0.elapsed().as_secs_f64())
}

/// Peak resident memory of this process, from `/proc/self/status` (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs all measurements on `images` (at least 1000 are needed for the batch-1000 inference).
pub fn run(
    images: &Images,
    cfg: &BenchConfig,
    device: &Device,
    log: impl Fn(&str),
) -> Result<BenchResult> {
    if cfg.batches_b128 == 0 || cfg.batches_b32 == 0 {
        return Err(Error::invalid(
            "--batches-b128 and --batches-b32 must be at least 1: a speed needs timed batches",
        ));
    }
    let images = Arc::new(images.clone());
    log("training, batch 128, no augmentation...");
    let train_b128 = train_throughput(
        &images,
        128,
        AugmentConfig::NONE,
        cfg.warmup,
        cfg.batches_b128,
        cfg.precision,
        device,
    )?;
    log(&format!("  {train_b128:.1} images/s"));
    log("training, batch 32, augmentation rotation=10,shift=0.1,zoom=0.1...");
    let train_b32_aug = train_throughput(
        &images,
        32,
        AugmentConfig::STANDARD,
        cfg.warmup,
        cfg.batches_b32,
        cfg.precision,
        device,
    )?;
    log(&format!("  {train_b32_aug:.1} images/s"));

    let model = ArchConfig::standard(10)
        .init(device)
        .valid()
        .with_precision(cfg.precision);
    let n = images.len().min(1000);
    log(&format!("inference, batch {n}..."));
    let batch = plain(&images, 0..n);
    let _ = probabilities(&model, batch.images.clone(), device);
    let infer: Vec<f64> = (0..cfg.infer_repeats.max(1))
        .map(|_| {
            cancel::check("benchmarking")?;
            let t = Instant::now();
            let _ = probabilities(&model, batch.images.clone(), device);
            Ok(n as f64 / t.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    let infer_b1000 = median(infer);
    log(&format!("  {infer_b1000:.1} images/s"));
    log("latency, one image...");
    let one = plain(&images, 0..1);
    let lat: Vec<f64> = (0..cfg.latency_repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = probabilities(&model, one.images.clone(), device);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let latency_b1_ms = median(lat);
    Ok(BenchResult {
        train_b128,
        train_b32_aug,
        infer_b1000,
        latency_b1_ms,
        peak_rss_mib: peak_rss_mib(),
    })
}

//! Throughput and latency of the seed CNN on this machine, measured through the same code paths as
//! training and evaluation (batch preparation, augmentation, forward, backward, Adam step).
//! Benchmarks report; they never assert times.

use crate::augment::AugmentConfig;
use crate::batch::{PoolDraw, epoch_steps, plain};
use crate::cancel;
use crate::data::Images;
use crate::device::Precision;
use crate::error::{Error, Result};
use crate::eval::probabilities;
use crate::model::ArchConfig;
use crate::train::{semi, train_step, training_parts};
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
    /// Labelled images per second in semi-supervised steps at batch 32 with augmentation, each
    /// with its [`SEMI_RATIO`] pool images per labelled one.
    pub semi_b32: f64,
    /// Milliseconds to predict one image.
    pub latency_b1_ms: f64,
    /// This machine's multiply peak in the run's arithmetic, GFLOP/s ([`peak_gflops`]).
    pub peak_gflops: f64,
    /// Peak resident memory of the process, MiB (where the OS tells).
    pub peak_rss_mib: Option<f64>,
}

impl BenchResult {
    /// The machine-readable lines: `train_b128: 812.4 images/s = 58.1 GFLOP/s = 55% of peak`,
    /// ... fp32's keep their names (scripts read the first figure of a line); bf16's get a
    /// `_bf16` suffix (`train_b128_bf16: ...`).
    pub fn lines(&self, precision: Precision) -> String {
        let rss = self
            .peak_rss_mib
            .map_or("unknown".to_string(), |m| format!("{m:.1} MiB"));
        let sfx = match precision {
            Precision::Fp32 => "",
            Precision::Bf16 => "_bf16",
        };
        let f = Flops::of(&ArchConfig::standard(10));
        let of_peak = |images_per_s: f64, flops: f64| {
            let g = images_per_s * flops / 1e9;
            format!(
                "= {g:.1} GFLOP/s = {:.0}% of peak",
                100.0 * g / self.peak_gflops
            )
        };
        format!(
            "peak{sfx}: {:.1} GFLOP/s ({PEAK_SIDE}x{PEAK_SIDE} matrix product, {precision})\n\
             train_b128{sfx}: {:.1} images/s {}\n\
             train_b32_aug{sfx}: {:.1} images/s {}\n\
             semi_b32{sfx}: {:.1} labelled images/s, {SEMI_RATIO} pool images each {}\n\
             infer_b1000{sfx}: {:.1} images/s {}\n\
             latency_b1{sfx}: {:.3} ms\npeak_rss{sfx}: {rss}\n",
            self.peak_gflops,
            self.train_b128,
            of_peak(self.train_b128, f.train),
            self.train_b32_aug,
            of_peak(self.train_b32_aug, f.train),
            self.semi_b32,
            of_peak(self.semi_b32, f.semi(SEMI_RATIO)),
            self.infer_b1000,
            of_peak(self.infer_b1000, f.infer),
            self.latency_b1_ms
        )
    }
}

/// Pool images per labelled image in the semi-supervised step measured (the default ratio).
pub const SEMI_RATIO: usize = crate::unlabeled::DEFAULT_RATIO;

/// The side of the square matrix product that measures the peak.
pub const PEAK_SIDE: usize = 2048;

/// Floating-point operations of one image through the network as the direct computation counts
/// them (a multiply-add is 2): the same for every algorithm that computes it (Winograd does
/// fewer), so throughputs turn into GFLOP/s that compare across builds and machines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flops {
    /// One forward pass.
    pub infer: f64,
    /// A training step's share: the forward pass, then each layer's weight gradient and its
    /// input gradient (none for the first convolution, whose input is the image).
    pub train: f64,
}

impl Flops {
    /// The counts of `arch` on 28x28 images: conv 3x3 to 26x26, conv 3x3 to 24x24, 2x2 pooling,
    /// dense, head (pooling, batch norm and activations are left out: a few per value).
    pub fn of(arch: &ArchConfig) -> Flops {
        let conv1 = 26.0 * 26.0 * arch.conv1 as f64 * 9.0;
        let conv2 = 24.0 * 24.0 * arch.conv2 as f64 * 9.0 * arch.conv1 as f64;
        let dense = 12.0 * 12.0 * arch.conv2 as f64 * arch.dense as f64;
        let head = arch.dense as f64 * arch.classes as f64;
        let forward = 2.0 * (conv1 + conv2 + dense + head);
        Flops {
            infer: forward,
            train: 3.0 * forward - 2.0 * conv1,
        }
    }

    /// A semi-supervised step's per labelled image: its training, and for each of `ratio` pool
    /// images a forward pass of the weak view and the training of the strong one.
    pub fn semi(&self, ratio: usize) -> f64 {
        self.train + ratio as f64 * (self.infer + self.train)
    }
}

/// This machine's multiply peak in `precision`, GFLOP/s: the fastest of the products of two
/// [`PEAK_SIDE`]-square matrices on every thread, through the multiply the kernels use, repeated
/// for two seconds (at least five times): on a shared machine single products vary by a third.
pub fn peak_gflops(precision: Precision) -> f64 {
    let n = PEAK_SIDE;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    crate::fast::multiply_square(precision, n, &a, &b, &mut c);
    let start = Instant::now();
    let mut best = f64::MAX;
    let mut tries = 0;
    while tries < 5 || start.elapsed().as_secs_f64() < 2.0 {
        let t = Instant::now();
        crate::fast::multiply_square(precision, n, &a, &b, &mut c);
        best = best.min(t.elapsed().as_secs_f64());
        tries += 1;
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What a training measurement trains: batches of `batch` images with `augment`, each with
/// [`SEMI_RATIO`] pool images per labelled one (drawn from the same images, FixMatch's weak and
/// strong views, pseudo-labels at the default threshold) when `with_pool`.
#[derive(Debug, Clone, Copy)]
struct Steps {
    batch: usize,
    augment: AugmentConfig,
    with_pool: bool,
}

/// Trains `timed` steps (after `warmup`) from an endless shuffled stream; returns labelled
/// images/s.
fn train_throughput(
    images: &Arc<Images>,
    steps: Steps,
    (warmup, timed): (usize, usize),
    precision: Precision,
    device: &Device,
) -> Result<f64> {
    let ad = device.clone().autodiff();
    let net = ArchConfig::standard(10).init(device);
    let (model, mut optim, loss_fn) =
        training_parts(net, &crate::record::AdamSettings::with_lr(1e-3), None, &ad);
    let mut model = model.with_precision(precision);
    let source = std::path::PathBuf::from("bench");
    let draw = if steps.with_pool {
        let pool = crate::data::pool::Pool::new(images.pixels().to_vec(), None, source.clone())?;
        Some(PoolDraw {
            pool: Arc::new(pool),
            ratio: SEMI_RATIO,
        })
    } else {
        None
    };
    let u = crate::unlabeled::PoolOptions {
        unlabeled: Some(source),
        ..Default::default()
    }
    .resolve(1)?
    .ok_or_else(|| Error::invalid("the benchmark's pool settings did not resolve"))?;
    let shares = semi::class_shares(images, 10);
    let thresholds = vec![u.threshold; 10];
    let how = semi::Pseudo {
        unlabeled: &u,
        shares: &shares,
        thresholds: &thresholds,
    };
    let mut stream = (0..).flat_map(|epoch| {
        let (batch, augment) = (steps.batch, steps.augment);
        epoch_steps(images.clone(), batch, augment, 1, epoch, draw.clone())
    });
    let mut t0 = Instant::now();
    let mut seen = 0;
    for i in 0..warmup + timed {
        cancel::check("benchmarking")?;
        if i == warmup {
            t0 = Instant::now();
            seen = 0;
        }
        let step = stream.next().expect("an endless stream");
        seen += step.labelled.len();
        let grads = train_step(&model, &loss_fn, step, Some(&how), device, &ad).0;
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
    let rounds = |timed| (cfg.warmup, timed);
    let train_b128 = train_throughput(
        &images,
        Steps {
            batch: 128,
            augment: AugmentConfig::NONE,
            with_pool: false,
        },
        rounds(cfg.batches_b128),
        cfg.precision,
        device,
    )?;
    log(&format!("  {train_b128:.1} images/s"));
    log("training, batch 32, augmentation rotation=10,shift=0.1,zoom=0.1...");
    let b32 = Steps {
        batch: 32,
        augment: AugmentConfig::STANDARD,
        with_pool: false,
    };
    let train_b32_aug =
        train_throughput(&images, b32, rounds(cfg.batches_b32), cfg.precision, device)?;
    log(&format!("  {train_b32_aug:.1} images/s"));
    log(&format!(
        "semi-supervised steps, batch 32 + {} pool images, augmentation...",
        32 * SEMI_RATIO
    ));
    let pooled = Steps {
        with_pool: true,
        ..b32
    };
    let semi_b32 = train_throughput(
        &images,
        pooled,
        rounds(cfg.batches_b32),
        cfg.precision,
        device,
    )?;
    log(&format!("  {semi_b32:.1} labelled images/s"));

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
    log(&format!(
        "this machine's peak, a {PEAK_SIDE}x{PEAK_SIDE} matrix product..."
    ));
    let peak_gflops = peak_gflops(cfg.precision);
    Ok(BenchResult {
        train_b128,
        train_b32_aug,
        semi_b32,
        infer_b1000,
        latency_b1_ms,
        peak_gflops,
        peak_rss_mib: peak_rss_mib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed CNN's counts by hand: conv1 26·26·32·9, conv2 24·24·64·9·32, fc1 9216·128, the
    /// head 128·10 multiply-adds; training is three passes but conv1's input gradient.
    #[test]
    fn the_seed_cnn_counts_as_the_direct_computation() {
        let f = Flops::of(&ArchConfig::standard(10));
        let macs = 194_688.0 + 10_616_832.0 + 1_179_648.0 + 1_280.0;
        assert_eq!(f.infer, 2.0 * macs);
        assert_eq!(f.train, 3.0 * 2.0 * macs - 2.0 * 194_688.0);
        assert!((f.train / 1e6 - 71.57).abs() < 0.01, "{}", f.train);
        assert_eq!(f.semi(2), f.train + 2.0 * (f.infer + f.train));
    }

    #[test]
    fn lines_give_each_throughput_as_a_share_of_the_peak() {
        let f = Flops::of(&ArchConfig::standard(10));
        let r = BenchResult {
            train_b128: 1e9 / f.train,
            train_b32_aug: 0.5e9 / f.train,
            semi_b32: 1e9 / f.semi(SEMI_RATIO),
            infer_b1000: 2e9 / f.infer,
            latency_b1_ms: 1.0,
            peak_gflops: 4.0,
            peak_rss_mib: None,
        };
        let text = r.lines(Precision::Fp32);
        assert!(text.starts_with("peak: 4.0 GFLOP/s"), "{text}");
        assert!(
            text.contains("train_b128: ")
                && text.contains(" images/s = 1.0 GFLOP/s = 25% of peak\n"),
            "{text}"
        );
        assert!(text.contains("train_b32_aug: ") && text.contains("= 0.5 GFLOP/s = 12% of peak"));
        assert!(text.contains("semi_b32: ") && text.contains("2 pool images each = 1.0 GFLOP/s"));
        assert!(text.contains("= 2.0 GFLOP/s = 50% of peak"), "{text}");
        assert!(r.lines(Precision::Bf16).contains("train_b128_bf16: "));
    }
}

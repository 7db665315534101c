//! Batches: a seeded shuffle per epoch, augmentation and conversion to `f32`, prepared in a
//! background thread so the next batch is ready while the current one trains.

use crate::augment::{Affine, AugmentConfig, strong};
use crate::data::pool::Pool;
use crate::data::{Images, PIXELS};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// A batch on the host: `len` images of 28x28 pixels in `[0, 1]`, and their class indices.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `len * 784` pixel values in `[0, 1]`.
    pub images: Vec<f32>,
    /// Class index of each image.
    pub labels: Vec<i64>,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Scales bytes to `[0, 1]`; the one normalisation the model expects (recorded in checkpoints).
pub fn to_unit(px: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(px) {
        *o = f32::from(p) / 255.0;
    }
}

/// Images `range` of a set, unshuffled and unaugmented (for evaluation).
pub fn plain(images: &Images, range: std::ops::Range<usize>) -> Batch {
    let mut out = vec![0.0; range.len() * PIXELS];
    to_unit(
        &images.pixels()[range.start * PIXELS..range.end * PIXELS],
        &mut out,
    );
    Batch {
        images: out,
        labels: images.labels()[range]
            .iter()
            .map(|&l| i64::from(l))
            .collect(),
    }
}

/// The RNG of one epoch: a pure function of the run seed and the epoch, so that a resumed run
/// draws exactly what an uninterrupted one would.
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(epoch as u64 + 1);
    r
}

/// Builds one batch from `indices`, augmenting each image with fresh parameters.
pub fn make_batch(
    images: &Images,
    indices: &[usize],
    augment: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Batch {
    let mut out = vec![0.0; indices.len() * PIXELS];
    for (k, &i) in indices.iter().enumerate() {
        let dst = &mut out[k * PIXELS..(k + 1) * PIXELS];
        if augment.is_none() {
            to_unit(images.image(i), dst);
        } else {
            let a: Affine = augment.sample(rng);
            a.apply(images.image(i), dst);
        }
    }
    Batch {
        images: out,
        labels: indices
            .iter()
            .map(|&i| i64::from(images.label(i)))
            .collect(),
    }
}

/// The shuffled training batches of one epoch, produced by a background thread two batches ahead.
/// The last batch may be smaller.
pub fn epoch_batches(
    images: Arc<Images>,
    batch_size: usize,
    augment: AugmentConfig,
    seed: u64,
    epoch: usize,
) -> Receiver<Batch> {
    spawn_epoch(images, batch_size, augment, seed, epoch, None, |s| {
        s.labelled
    })
}

/// A step of semi-supervised training: a labelled batch and, with a pool, its unlabelled part.
#[derive(Debug, Clone)]
pub struct Step {
    /// The labelled batch.
    pub labelled: Batch,
    /// Pool images drawn for this step, as weak and strong views.
    pub pool: Option<PoolBatch>,
}

/// Pool images of one step: each as a weak view (the run's augmentation) and a strong view
/// ([`strong`]), both scaled to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct PoolBatch {
    /// `len * 784` values: the weak views, whose predictions give the pseudo-labels.
    pub weak: Vec<f32>,
    /// `len * 784` values: the strong views, which learn the pseudo-labels.
    pub strong: Vec<f32>,
    /// The labels that came with the pool, for these images, if any: never trained on.
    pub known: Option<Vec<u32>>,
}

impl PoolBatch {
    /// Pool images in the batch.
    pub fn len(&self) -> usize {
        self.weak.len() / PIXELS
    }

    /// Whether it holds no image.
    pub fn is_empty(&self) -> bool {
        self.weak.is_empty()
    }
}

/// How a pool joins the batches: `ratio` pool images per labelled image.
#[derive(Debug, Clone)]
pub struct PoolDraw {
    /// The images.
    pub pool: Arc<Pool>,
    /// Pool images per labelled image in a step.
    pub ratio: usize,
}

/// [`epoch_batches`] with a pool: each labelled batch of `n` images comes with `ratio * n` pool
/// images drawn at random (with replacement). The labelled batches are those of
/// [`epoch_batches`] (the pool has RNGs of its own, one per image), so adding a pool changes
/// nothing else, and a resumed epoch draws the same pool images.
pub fn epoch_steps(
    images: Arc<Images>,
    batch_size: usize,
    augment: AugmentConfig,
    seed: u64,
    epoch: usize,
    pool: Option<PoolDraw>,
) -> Receiver<Step> {
    spawn_epoch(images, batch_size, augment, seed, epoch, pool, |s| s)
}

fn spawn_epoch<T: Send + 'static>(
    images: Arc<Images>,
    batch_size: usize,
    augment: AugmentConfig,
    seed: u64,
    epoch: usize,
    pool: Option<PoolDraw>,
    wrap: fn(Step) -> T,
) -> Receiver<T> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        let mut rng = epoch_rng(seed, epoch);
        let mut order: Vec<usize> = (0..images.len()).collect();
        order.shuffle(&mut rng);
        for (b, chunk) in order.chunks(batch_size.max(1)).enumerate() {
            let labelled = make_batch(&images, chunk, &augment, &mut rng);
            let pool = pool
                .as_ref()
                .map(|p| pool_batch(p, chunk.len() * p.ratio, &augment, seed, epoch, b));
            if tx.send(wrap(Step { labelled, pool })).is_err() {
                return; // The trainer stopped early.
            }
        }
    });
    rx
}

/// The seed of one pool image's draws, a pure function of where it is used.
fn pool_seed(seed: u64, epoch: usize, batch: usize, k: usize) -> u64 {
    let mut h = seed ^ 0x5851_f42d_4c95_7f2d;
    for v in [epoch as u64, batch as u64, k as u64] {
        h = (h ^ v).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 29;
    }
    h
}

fn pool_batch(
    draw: &PoolDraw,
    n: usize,
    augment: &AugmentConfig,
    seed: u64,
    epoch: usize,
    batch: usize,
) -> PoolBatch {
    let mut weak = vec![0.0; n * PIXELS];
    let mut strong_views = vec![0.0; n * PIXELS];
    let mut known = draw
        .pool
        .known_labels
        .as_ref()
        .map(|_| Vec::with_capacity(n));
    for k in 0..n {
        let mut rng = ChaCha8Rng::seed_from_u64(pool_seed(seed, epoch, batch, k));
        let i = rng.random_range(0..draw.pool.len());
        let src = draw.pool.image(i);
        let w = &mut weak[k * PIXELS..(k + 1) * PIXELS];
        if augment.is_none() {
            to_unit(src, w);
        } else {
            augment.sample(&mut rng).apply(src, w);
        }
        strong::apply(
            src,
            &mut rng,
            &mut strong_views[k * PIXELS..(k + 1) * PIXELS],
        );
        if let (Some(out), Some(l)) = (known.as_mut(), draw.pool.known_labels.as_ref()) {
            out.push(l[i]);
        }
    }
    PoolBatch {
        weak,
        strong: strong_views,
        known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Arc<Images> {
        let mut px = vec![0u8; n * PIXELS];
        for i in 0..n {
            px[i * PIXELS] = i as u8;
        }
        Arc::new(Images::new(px, (0..n as u32).map(|i| i % 3).collect()).unwrap())
    }

    #[test]
    fn every_image_once_per_epoch_and_seeded() {
        let s = set(10);
        let collect = |seed, epoch| -> Vec<Batch> {
            epoch_batches(s.clone(), 4, AugmentConfig::NONE, seed, epoch)
                .iter()
                .collect()
        };
        let b = collect(1, 0);
        assert_eq!(b.iter().map(Batch::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut firsts: Vec<u32> = b
            .iter()
            .flat_map(|b| {
                b.images
                    .chunks(PIXELS)
                    .map(|im| (im[0] * 255.0).round() as u32)
            })
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..10).collect::<Vec<_>>());
        let again = collect(1, 0);
        assert_eq!(b[0].images, again[0].images);
        let other = collect(1, 1);
        assert_ne!(
            b.iter().map(|b| b.labels.clone()).collect::<Vec<_>>(),
            other.iter().map(|b| b.labels.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn plain_batch_scales_to_unit() {
        let s = set(3);
        let b = plain(&s, 1..3);
        assert_eq!(b.len(), 2);
        assert!((b.images[0] - 1.0 / 255.0).abs() < 1e-7);
        assert_eq!(b.labels, vec![1, 2]);
    }
}

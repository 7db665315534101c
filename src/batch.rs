//! Batches: a seeded shuffle per epoch, augmentation and conversion to `f32`, prepared in a
//! background thread so the next batch is ready while the current one trains.

use crate::augment::{Affine, AugmentConfig};
use crate::data::{Images, PIXELS};
use rand::SeedableRng;
use rand::seq::SliceRandom;
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
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        let mut rng = epoch_rng(seed, epoch);
        let mut order: Vec<usize> = (0..images.len()).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch_size.max(1)) {
            let b = make_batch(&images, chunk, &augment, &mut rng);
            if tx.send(b).is_err() {
                return; // The trainer stopped early.
            }
        }
    });
    rx
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

//! One step of semi-supervised training (FixMatch, Sohn et al. 2020): the labelled batch's
//! cross-entropy, plus, for each pool image whose weak view the model predicts with confidence
//! at least its class's threshold ([`class_thresholds`]), the cross-entropy of its strong view
//! against that prediction (the pseudo-label). The pseudo-labels come from the network as it is
//! at this step, in evaluation mode (running batch-norm statistics, no dropout), and carry no
//! gradient; with [`Align::Classes`] their probabilities are first rebalanced to the labelled
//! class shares.
//!
//! Labels that came with the pool only count how often the pseudo-labels are right: they never
//! reach the loss.

use super::labelled_loss;
use crate::batch::{Batch, PoolBatch};
use crate::data::Images;
use crate::eval::{argmax, probabilities};
use crate::history::PoolEpoch;
use crate::model::{Net, images_tensor};
use crate::unlabeled::{Align, ThresholdRule, UnlabeledRecord};
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// What the pool did in an epoch so far (saved with the resume state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolCounts {
    /// Pool images seen.
    pub seen: usize,
    /// Of them, with a pseudo-label (confidence at least the threshold).
    pub confident: usize,
    /// Pseudo-labels given per class.
    pub per_class: Vec<usize>,
    /// Confident images whose pool label is known.
    pub known: usize,
    /// Of them, pseudo-labelled correctly.
    pub correct: usize,
}

impl PoolCounts {
    fn add(&mut self, other: &PoolCounts) {
        self.seen += other.seen;
        self.confident += other.confident;
        self.known += other.known;
        self.correct += other.correct;
        if self.per_class.len() < other.per_class.len() {
            self.per_class.resize(other.per_class.len(), 0);
        }
        for (a, b) in self.per_class.iter_mut().zip(&other.per_class) {
            *a += b;
        }
    }

    /// Adds one step's counts.
    pub fn accumulate(&mut self, step: &PoolCounts) {
        self.add(step);
    }
}

/// How a run turns pool predictions into pseudo-labels: its settings, the labelled set's
/// class shares (the target of [`Align::Classes`]) and this epoch's thresholds.
pub struct Pseudo<'a> {
    /// The run's pool settings.
    pub unlabeled: &'a UnlabeledRecord,
    /// Each class's share of the labelled set.
    pub shares: &'a [f32],
    /// Each class's confidence threshold this epoch ([`class_thresholds`]).
    pub thresholds: &'a [f32],
}

/// Each class's confidence threshold for an epoch, from the pool figures of the epoch before
/// (`None` for the first). With [`ThresholdRule::PerClass`] the class with the most pseudo-labels
/// keeps `--threshold` and the others get `τ·β/(2−β)`, β their share over the largest share
/// (FlexMatch's convex mapping). Counting the previous epoch's draws, not each pool image's
/// latest prediction as FlexMatch does, needs no per-image state, so a resumed run's thresholds
/// come from its history and match an uninterrupted run's.
pub fn class_thresholds(u: &UnlabeledRecord, last: Option<&PoolEpoch>, classes: usize) -> Vec<f32> {
    let fixed = vec![u.threshold; classes];
    let shares = match (u.thresholds, last) {
        (ThresholdRule::PerClass, Some(p)) if p.shares.len() == classes => &p.shares,
        _ => return fixed,
    };
    let most = shares.iter().copied().fold(0.0, f64::max);
    if most <= 0.0 {
        return fixed;
    }
    shares
        .iter()
        .map(|&s| {
            let beta = s / most;
            u.threshold * (beta / (2.0 - beta)) as f32
        })
        .collect()
}

/// The labelled set's class shares, the target of [`Align::Classes`].
pub fn class_shares(labelled: &Images, classes: usize) -> Vec<f32> {
    let total = labelled.len().max(1) as f32;
    labelled
        .class_counts(classes)
        .into_iter()
        .map(|c| c as f32 / total)
        .collect()
}

/// Distribution alignment over one batch: each class's probabilities scaled by its labelled
/// share over the batch's mean probability of it, then each row renormalised. The batch mean
/// (hundreds of images) stands in for the running mean ReMixMatch keeps, so no state crosses
/// steps and a resumed run aligns exactly as an uninterrupted one.
fn align(probs: &mut [f32], shares: &[f32]) {
    let classes = shares.len();
    let n = probs.len() / classes.max(1);
    if n == 0 {
        return;
    }
    let mut mean = vec![0f64; classes];
    for row in probs.chunks(classes) {
        for (m, &p) in mean.iter_mut().zip(row) {
            *m += f64::from(p);
        }
    }
    let scale: Vec<f32> = mean
        .iter()
        .zip(shares)
        .map(|(&m, &s)| (f64::from(s) / (m / n as f64).max(1e-6)) as f32)
        .collect();
    for row in probs.chunks_mut(classes) {
        let mut sum = 0f32;
        for (p, &k) in row.iter_mut().zip(&scale) {
            *p *= k;
            sum += *p;
        }
        if sum > 0.0 {
            row.iter_mut().for_each(|p| *p /= sum);
        }
    }
}

/// The pseudo-labels of a pool batch: class and whether it is confident enough, per image.
fn pseudo_labels(
    model: &Net,
    weak: Vec<f32>,
    known: Option<&[u32]>,
    how: &Pseudo,
    device: &Device,
) -> (Vec<i64>, Vec<f32>, PoolCounts) {
    let n = weak.len() / crate::data::PIXELS;
    let mut probs = probabilities(&model.valid(), weak, device);
    let classes = probs.len() / n.max(1);
    if how.unlabeled.align == Align::Classes && how.shares.len() == classes {
        align(&mut probs, how.shares);
    }
    let threshold = |c: usize| {
        how.thresholds
            .get(c)
            .copied()
            .unwrap_or(how.unlabeled.threshold)
    };
    let mut counts = PoolCounts {
        seen: n,
        per_class: vec![0; classes],
        ..Default::default()
    };
    let (mut labels, mut mask) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, p) in probs.chunks(classes).enumerate() {
        let c = argmax(p);
        let sure = p[c] >= threshold(c);
        labels.push(c as i64);
        mask.push(if sure { 1.0 } else { 0.0 });
        if sure {
            counts.confident += 1;
            counts.per_class[c] += 1;
            if let Some(known) = known {
                counts.known += 1;
                counts.correct += usize::from(known[k] as usize == c);
            }
        }
    }
    (labels, mask, counts)
}

/// One FixMatch step's gradients, the labelled batch's mean loss and correct predictions, and
/// the pool's counts. `model` is in training mode on the autodiff device `ad`; `device` is the
/// plain device the pseudo-labels are computed on.
pub fn forward_backward(
    model: &Net,
    loss_fn: &CrossEntropyLoss,
    batch: Batch,
    pool: PoolBatch,
    how: &Pseudo,
    device: &Device,
    ad: &Device,
) -> (GradientsParams, f64, usize, PoolCounts) {
    let m = pool.len();
    let PoolBatch {
        weak,
        strong,
        known,
    } = pool;
    // The weak views are only predicted: moved into that prediction, not copied.
    let (pseudo, mask, counts) = pseudo_labels(model, weak, known.as_deref(), how, device);
    let n = batch.len();
    let mut pixels = batch.images;
    pixels.extend_from_slice(&strong);
    // One forward pass over both, so batch norm normalises them together (as FixMatch does).
    let logits = model.forward(images_tensor(pixels, ad));
    let (loss_l, hits) = labelled_loss(loss_fn, logits.clone().narrow(0, 0, n), batch.labels, ad);
    let loss = if counts.confident > 0 {
        let unlabelled = logits.narrow(0, n, m);
        let idx = Tensor::<2, Int>::from_data(TensorData::new(pseudo, [m, 1]), ad);
        let w = Tensor::<2>::from_data(TensorData::new(mask, [m, 1]), ad);
        let picked = log_softmax(unlabelled, 1).gather(1, idx);
        let loss_u = (picked * w).sum().neg().div_scalar(m as f32);
        loss_l.clone() + loss_u.mul_scalar(how.unlabeled.weight)
    } else {
        loss_l.clone()
    };
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (grads, f64::from(loss_l.into_scalar::<f32>()), hits, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: &[u32]) -> Images {
        Images::new(vec![0; labels.len() * crate::data::PIXELS], labels.to_vec()).unwrap()
    }

    #[test]
    fn alignment_lifts_a_class_the_batch_rarely_predicts() {
        // Two classes, equally labelled; the batch leans 3:1 to class 0.
        let mut probs = vec![0.9, 0.1, 0.8, 0.2, 0.6, 0.4, 0.7, 0.3];
        align(&mut probs, &class_shares(&labelled(&[0, 1]), 2));
        let (mean0, mean1): (f32, f32) = probs
            .chunks(2)
            .fold((0.0, 0.0), |(a, b), r| (a + r[0] / 4.0, b + r[1] / 4.0));
        assert!(mean1 > 0.4 && mean0 < 0.6, "means {mean0} {mean1}");
        for r in probs.chunks(2) {
            assert!((r[0] + r[1] - 1.0).abs() < 1e-6);
        }
        // The third image, 0.6/0.4 before, now goes to class 1.
        assert!(probs[5] > probs[4]);
    }

    #[test]
    fn class_shares_count_labels_and_ignore_out_of_range_ones() {
        assert_eq!(class_shares(&labelled(&[0, 0, 1, 7]), 2), vec![0.5, 0.25]);
    }

    fn pool(thresholds: ThresholdRule) -> UnlabeledRecord {
        UnlabeledRecord {
            path: "pool".into(),
            threshold: 0.9,
            ratio: 2,
            weight: 1.0,
            count: None,
            fingerprint: None,
            align: Align::None,
            thresholds,
            after: 0,
        }
    }

    #[test]
    fn per_class_thresholds_fall_for_the_classes_pseudo_labelled_least() {
        let last = PoolEpoch {
            confident: 0.5,
            pseudo_acc: None,
            shares: vec![0.6, 0.3, 0.1, 0.0],
        };
        let t = class_thresholds(&pool(ThresholdRule::PerClass), Some(&last), 4);
        assert_eq!(t[0], 0.9);
        // β = 0.5: 0.9 · 0.5 / 1.5; β = 1/6: 0.9 · (1/6) / (11/6).
        assert!((t[1] - 0.3).abs() < 1e-6, "{t:?}");
        assert!((t[2] - 0.9 / 11.0).abs() < 1e-6, "{t:?}");
        assert_eq!(t[3], 0.0);
        // The first epoch, an epoch without pseudo-labels, and fixed thresholds: --threshold.
        assert_eq!(
            class_thresholds(&pool(ThresholdRule::PerClass), None, 4),
            vec![0.9; 4]
        );
        let none = PoolEpoch {
            shares: vec![0.0; 4],
            ..last.clone()
        };
        assert_eq!(
            class_thresholds(&pool(ThresholdRule::PerClass), Some(&none), 4),
            vec![0.9; 4]
        );
        assert_eq!(
            class_thresholds(&pool(ThresholdRule::Fixed), Some(&last), 4),
            vec![0.9; 4]
        );
    }
}

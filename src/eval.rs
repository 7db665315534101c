//! Evaluation: predictions, loss and accuracy on a set, the confusion matrix and per-class
//! precision, recall and F1.

use crate::augment::AugmentConfig;
use crate::batch::{make_batch, plain};
use crate::cancel;
use crate::data::Images;
use crate::error::Result;
use crate::model::{Net, images_tensor};
use burn::prelude::*;
use rand::SeedableRng;
use serde::Serialize;

/// Batch size for evaluation: large batches amortise per-call overhead.
pub const EVAL_BATCH: usize = 1000;

/// Predictions of a model on a set.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// Class probabilities, `classes` per image.
    pub probs: Vec<f32>,
    /// Number of classes (probabilities per image).
    pub classes: usize,
    /// The true class of each image.
    pub labels: Vec<u32>,
}

impl Predictions {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no prediction.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The class probabilities of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }

    /// The most likely class of image `i` (the first on ties).
    pub fn predicted(&self, i: usize) -> u32 {
        argmax(self.row(i)) as u32
    }

    /// Images whose most likely class is the true one.
    pub fn correct(&self) -> usize {
        (0..self.len())
            .filter(|&i| self.predicted(i) == self.labels[i])
            .count()
    }

    /// The share of images predicted right (0 for no image).
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.len().max(1) as f64
    }

    /// Mean cross-entropy of the true class.
    pub fn loss(&self) -> f64 {
        let s: f64 = (0..self.len())
            .map(|i| -f64::from(self.row(i)[self.labels[i] as usize].max(1e-12)).ln())
            .sum();
        s / self.len().max(1) as f64
    }
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Images one forward pass on burn's layers (the GPU path) takes at once. Why: at batch 1000,
/// conv2's output alone is 147 MB, past what a GPU may hold in one buffer (wgpu's default binding
/// limit is 128 MiB; lavapipe failed to allocate it), and `eval` and `bench` pass 1000 images.
const LAYERS_CHUNK: usize = 256;

/// Class probabilities for host pixels (`n * 784` values in `[0, 1]`); `model` must be in
/// evaluation mode (`Module::valid`) and `device` without autodiff.
pub fn probabilities(model: &Net, pixels: Vec<f32>, device: &Device) -> Vec<f32> {
    let forward = |pixels: Vec<f32>| {
        model
            .probabilities(images_tensor(pixels, device))
            .into_data()
            .iter::<f32>()
            .collect::<Vec<f32>>()
    };
    let chunk = LAYERS_CHUNK * crate::data::PIXELS;
    if crate::fast::enabled(device) || pixels.len() <= chunk {
        return forward(pixels);
    }
    pixels
        .chunks(chunk)
        .flat_map(|c| forward(c.to_vec()))
        .collect()
}

/// Class probabilities of one prepared image (28x28 bytes, light on dark), as `predict` and
/// `serve` need them.
pub fn image_probabilities(model: &Net, px: &[u8], device: &Device) -> Vec<f32> {
    let mut pixels = vec![0.0; px.len()];
    crate::batch::to_unit(px, &mut pixels);
    probabilities(model, pixels, device)
}

/// Runs the model over a whole set in batches. Not cancellable: the training loop validates with
/// it between its own safe points.
pub fn predict_set(model: &Net, images: &Images, device: &Device) -> Predictions {
    predict_batches(model, images, device, false).expect("only a cancellation can fail")
}

/// [`predict_set`] that stops with [`Error::Cancelled`](crate::Error::Cancelled) between batches
/// after Ctrl-C (for `eval` on large sets).
pub fn predict_set_cancellable(
    model: &Net,
    images: &Images,
    device: &Device,
) -> Result<Predictions> {
    predict_batches(model, images, device, true)
}

fn predict_batches(
    model: &Net,
    images: &Images,
    device: &Device,
    cancellable: bool,
) -> Result<Predictions> {
    let mut probs = Vec::with_capacity(images.len() * model.classes());
    let mut start = 0;
    while start < images.len() {
        if cancellable {
            cancel::check("predicting")?;
        }
        let end = (start + EVAL_BATCH).min(images.len());
        probs.extend(probabilities(
            model,
            plain(images, start..end).images,
            device,
        ));
        start = end;
    }
    Ok(Predictions {
        probs,
        classes: model.classes(),
        labels: images.labels().to_vec(),
    })
}

/// Test-time augmentation: turns `base` (the model's predictions on `images`, from
/// [`predict_set`]) into the mean of the probabilities of the original and of `n` augmented copies
/// (drawn with `augment` from a seeded RNG).
pub fn with_tta(
    mut base: Predictions,
    model: &Net,
    images: &Images,
    device: &Device,
    augment: &AugmentConfig,
    n: usize,
    seed: u64,
) -> Result<Predictions> {
    if n == 0 {
        return Ok(base);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let k = base.classes;
    let mut start = 0;
    while start < images.len() {
        let end = (start + EVAL_BATCH).min(images.len());
        let idx: Vec<usize> = (start..end).collect();
        for _ in 0..n {
            cancel::check("predicting augmented copies")?;
            let b = make_batch(images, &idx, augment, &mut rng);
            let probs = probabilities(model, b.images, device);
            for (dst, src) in base.probs[start * k..end * k].iter_mut().zip(&probs) {
                *dst += src;
            }
        }
        start = end;
    }
    let scale = 1.0 / (n as f32 + 1.0);
    for p in &mut base.probs {
        *p *= scale;
    }
    Ok(base)
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    /// The class name.
    pub class: String,
    /// Of the images predicted as this class, the share that are.
    pub precision: f64,
    /// Of the images of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Images of this class.
    pub support: usize,
}

/// A confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    /// Counts the predictions `p` by true and predicted class.
    pub fn new(p: &Predictions, classes: &[String]) -> Self {
        let k = classes.len();
        let mut counts = vec![vec![0; k]; k];
        for i in 0..p.len() {
            counts[p.labels[i] as usize][p.predicted(i) as usize] += 1;
        }
        Confusion {
            classes: classes.to_vec(),
            counts,
        }
    }

    /// Precision, recall and F1 of every class.
    pub fn scores(&self) -> Vec<ClassScore> {
        let k = self.classes.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let support: usize = self.counts[c].iter().sum();
                let predicted: usize = (0..k).map(|t| self.counts[t][c]).sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScore {
                    class: self.classes[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// A plain-text table: per-class scores, then the matrix.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        // Widths in characters (class names may be any script), over the labels as printed.
        let width = |it: &mut dyn Iterator<Item = String>| it.map(|l| l.chars().count()).max();
        let w = width(&mut self.classes.iter().cloned()).unwrap_or(5).max(5);
        let mut s = String::new();
        let _ = writeln!(s, "{:>w$}  precision  recall  f1-score  support", "class");
        for sc in self.scores() {
            let _ = writeln!(
                s,
                "{:>w$}  {:>9.4}  {:>6.4}  {:>8.4}  {:>7}",
                sc.class, sc.precision, sc.recall, sc.f1, sc.support
            );
        }
        let _ = writeln!(
            s,
            "\nconfusion matrix (rows: true class, columns: predicted)"
        );
        let cw = self
            .counts
            .iter()
            .flatten()
            .map(|n| n.to_string().len())
            .chain([self.classes.len().saturating_sub(1).to_string().len()])
            .max()
            .unwrap_or(1)
            .max(3);
        let rows: Vec<String> = (0..self.classes.len())
            .map(|i| format!("{i} {}", self.classes[i]))
            .collect();
        let w = width(&mut rows.iter().cloned()).unwrap_or(1);
        let _ = write!(s, "{:>w$} ", "");
        for j in 0..self.classes.len() {
            let _ = write!(s, " {:>cw$}", j);
        }
        let _ = writeln!(s);
        for (i, row) in self.counts.iter().enumerate() {
            let _ = write!(s, "{:>w$} ", rows[i]);
            for n in row {
                let _ = write!(s, " {n:>cw$}");
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preds() -> Predictions {
        // Three images of class 0 (one predicted 1), one of class 1 (predicted 1).
        Predictions {
            probs: vec![0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6],
            classes: 2,
            labels: vec![0, 0, 0, 1],
        }
    }

    #[test]
    fn accuracy_loss_and_scores() {
        let p = preds();
        assert_eq!(p.correct(), 3);
        assert!((p.accuracy() - 0.75).abs() < 1e-12);
        let expect = -(0.9f64.ln() + 0.8f64.ln() + 0.3f64.ln() + 0.6f64.ln()) / 4.0;
        assert!((p.loss() - expect).abs() < 1e-6);
        let c = Confusion::new(&p, &["a".into(), "b".into()]);
        assert_eq!(c.counts, vec![vec![2, 1], vec![0, 1]]);
        let s = c.scores();
        assert!((s[0].precision - 1.0).abs() < 1e-12);
        assert!((s[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[1].precision - 0.5).abs() < 1e-12);
        assert!((s[1].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!(c.render().contains("confusion matrix"));
    }

    #[test]
    fn the_text_confusion_matrix_lines_up_whatever_the_class_names() {
        let names: Vec<String> = ["T-shirt/top", "Ankle boot", "Ümlaut"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = Predictions {
            probs: vec![0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8],
            classes: 3,
            labels: vec![0, 1, 2],
        };
        let text = Confusion::new(&p, &names).render();
        let matrix: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("confusion matrix"))
            .skip(1)
            .collect();
        assert_eq!(matrix.len(), 4, "{text}");
        let widths: Vec<usize> = matrix.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{widths:?}\n{text}");
        assert!(
            matrix[1].trim_start().starts_with("0 T-shirt/top"),
            "{text}"
        );
    }
}

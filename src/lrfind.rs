//! `warmstart lr-find`: fastai's learning-rate finder. Train from the run's starting weights with
//! a learning rate growing exponentially from 1e-7 to 10 over 100 batches, smooth the loss
//! (exponential moving average, β = 0.98, bias-corrected), stop once it exceeds 4 times the best,
//! and suggest the rate in the middle of the longest stretch where the loss falls (fastai's
//! "valley"). The weights it trains are thrown away: no checkpoint is written or changed.
//!
//! It trains as the run would — the batch size, augmentation, Adam's weight decay, label
//! smoothing, discriminative rates and precision of the run's record — but for the rate, which it
//! sweeps; [`USED`] names the flags it honours, and [`check_flags`] refuses the others.

use crate::batch::epoch_batches;
use crate::cancel;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Net;
use crate::options::TrainOptions;
use crate::record::RunRecord;
use crate::train::{forward_backward, step, training_parts};
use burn::prelude::*;
use std::sync::Arc;

/// The rate of the first batch.
pub const START_LR: f64 = 1e-7;
/// The rate of the last batch.
pub const END_LR: f64 = 10.0;
/// Batches over which the rate grows from [`START_LR`] to [`END_LR`].
pub const STEPS: usize = 100;
/// Smoothing of the loss.
const BETA: f64 = 0.98;
/// Stop once the smoothed loss exceeds this many times the best.
const DIVERGED: f64 = 4.0;

/// The training flags the finder honours; the others set the schedule, length or outputs of a
/// run, which a sweep of 100 batches does not have.
pub const USED: [&str; 14] = [
    "--data",
    "--out",
    "--batch-size",
    "--seed",
    "--limit",
    "--val-split",
    "--augment",
    "--init",
    "--new-head",
    "--invert",
    "--fit",
    "--lr-ratio",
    "--weight-decay",
    "--label-smoothing",
];

/// Refuses the flags of `options` that the finder would ignore, naming them.
pub fn check_flags(options: &TrainOptions) -> Result<()> {
    let unused: Vec<String> = options
        .given()
        .into_iter()
        .filter(|f| !USED.contains(&f.as_str()))
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "lr-find does not use {}: it sweeps the rate from {START_LR:e} to {END_LR:e} over up to \
         {STEPS} batches (it takes {})",
        unused.join(", "),
        USED.join(", ")
    )))
}

/// What the finder measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFind {
    /// The rate of each batch trained.
    pub lrs: Vec<f64>,
    /// The smoothed loss after each batch.
    pub losses: Vec<f64>,
    /// The suggested rate (fastai's valley).
    pub suggestion: f64,
}

/// The rate of batch `i` of [`STEPS`]: exponential from [`START_LR`] to [`END_LR`].
pub fn rate(i: usize) -> f64 {
    START_LR * (END_LR / START_LR).powf(i as f64 / (STEPS - 1) as f64)
}

/// fastai's valley (`fastai.callback.schedule.valley`): the longest decreasing subsequence of the
/// losses, from `start` to `end`, and the rate at `start + ⌊s⌋ + ⌊s/2⌋` with `s = (end − start)/3`,
/// i.e. about half-way down the steepest long fall. Written as fastai writes it, `start` included.
pub fn valley(lrs: &[f64], losses: &[f64]) -> f64 {
    let n = losses.len();
    if n == 0 {
        return f64::NAN;
    }
    let mut lds = vec![1usize; n];
    let (mut max_start, mut max_end) = (0usize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                max_start = max_end.saturating_sub(lds[max_end]);
            }
        }
    }
    let sections = (max_end - max_start) as f64 / 3.0;
    let idx = max_start + sections as usize + (sections / 2.0) as usize;
    lrs[idx.min(n - 1)]
}

/// Runs the finder on `data` from `model` with the run's batch size and augmentation.
pub fn run(model: Net, data: &Dataset, run: &RunRecord, device: &Device) -> Result<LrFind> {
    let ad = device.clone().autodiff();
    let (mut model, mut optim, loss_fn) =
        training_parts(model, &run.optimizer, run.label_smoothing, &ad);
    let train = Arc::new(data.train.clone());
    let mut stream = (0..).flat_map(|epoch| {
        epoch_batches(train.clone(), run.batch_size, run.augment, run.seed, epoch)
    });
    let (mut avg, mut best) = (0.0, f64::INFINITY);
    let (mut lrs, mut losses) = (Vec::new(), Vec::new());
    for i in 0..STEPS {
        cancel::check("finding a learning rate")?;
        let batch = stream
            .next()
            .ok_or_else(|| Error::invalid("no training batches"))?;
        let (grads, loss, _) = forward_backward(&model, &loss_fn, batch, &ad);
        if !loss.is_finite() {
            break;
        }
        let lr = rate(i);
        model = step(model, &mut optim, grads, lr, run.lr_ratio);
        avg = BETA * avg + (1.0 - BETA) * loss;
        let smooth = avg / (1.0 - BETA.powi(i as i32 + 1));
        lrs.push(lr);
        losses.push(smooth);
        best = best.min(smooth);
        if smooth > DIVERGED * best {
            break;
        }
    }
    if lrs.len() < 2 {
        return Err(Error::Numerical(
            "the loss was not finite from the first batches: no rate to suggest".into(),
        ));
    }
    let suggestion = valley(&lrs, &losses);
    Ok(LrFind {
        lrs,
        losses,
        suggestion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_finder_cannot_use_are_refused_by_name() {
        let ok = TrainOptions {
            weight_decay: Some(0.01),
            label_smoothing: Some(0.1),
            lr_ratio: Some(0.5),
            batch_size: Some(16),
            ..Default::default()
        };
        check_flags(&ok).unwrap();
        let bad = TrainOptions {
            lr: Some(0.1),
            epochs: Some(3),
            ..ok
        };
        let e = check_flags(&bad).unwrap_err().to_string();
        assert!(e.contains("does not use --epochs, --lr:"), "{e}");
    }

    #[test]
    fn rates_span_the_range() {
        assert!((rate(0) - START_LR).abs() < 1e-20);
        assert!((rate(STEPS - 1) - END_LR).abs() < 1e-9);
        assert!((rate(STEPS / 2) / rate(STEPS / 2 - 1) - rate(1) / rate(0)).abs() < 1e-9);
    }

    #[test]
    fn the_valley_is_inside_the_longest_fall() {
        let lrs: Vec<f64> = (0..10).map(|i| i as f64).collect();
        // Falls from index 2 to 8, then rises.
        let losses = [3.0, 3.1, 3.0, 2.5, 2.0, 1.5, 1.0, 0.8, 0.7, 5.0];
        // fastai's code on the same losses: start 0, end 8, sections 8/3: index 0 + 2 + 1 = 3.
        assert_eq!(valley(&lrs, &losses), 3.0);
    }
}

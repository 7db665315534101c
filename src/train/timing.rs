//! Timing a run before it trains, for `--time`: a fresh network of the run's shape takes a few
//! steps of the run's own batches (with their pool images, when the run has a pool) under a
//! throwaway optimizer, and predicts the validation set once. The run's network is not used: its
//! batch-norm statistics are shared with its copies, and the run must train the bits that a run
//! of its record trains; the device's generator is seeded again as the run seeded it.

use super::{semi, train_step, training_parts};
use crate::batch::{PoolDraw, epoch_steps};
use crate::budget::Timing;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::predict_set;
use crate::model::ArchConfig;
use crate::record::RunRecord;
use burn::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Steps taken before the timed ones (allocations, the batch thread, caches).
const WARMUP_STEPS: usize = 2;
/// Steps timed.
const TIMED_STEPS: usize = 6;
/// Synced checkpoint-sized writes an epoch is charged: the last checkpoint and the resume state
/// (the best one is written only when it changes; the operating system absorbs part of it).
const SAVES_PER_EPOCH: usize = 2;
/// Seconds allowed for writing the report, figures and checkpoints after the last epoch.
pub const REPORT_SECONDS: f64 = 5.0;

/// How long `run`'s epochs and its end take on this machine, with `spent` seconds gone already.
pub fn measure(data: &Dataset, run: &RunRecord, device: &Device, spent: f64) -> Result<Timing> {
    let started = Instant::now();
    let ad = device.clone().autodiff();
    let net = ArchConfig::standard(data.classes.len()).init(device);
    let (model, mut optim, loss_fn) = training_parts(net, &run.optimizer, run.label_smoothing, &ad);
    let mut model = model.with_precision(run.precision);
    let draw = match (&run.unlabeled, &data.pool) {
        (Some(u), Some(p)) => Some(PoolDraw {
            pool: p.clone(),
            ratio: u.ratio,
        }),
        _ => None,
    };
    let shares = semi::class_shares(&data.train, data.classes.len());
    let thresholds = run.unlabeled.as_ref().map_or_else(Vec::new, |u| {
        semi::class_thresholds(u, None, data.classes.len())
    });
    let train = Arc::new(data.train.clone());
    let mut steps = (0..).flat_map(|epoch| {
        epoch_steps(
            train.clone(),
            run.batch_size,
            run.augment_at(0),
            run.seed,
            epoch,
            draw.clone(),
        )
    });
    let mut t0 = Instant::now();
    for i in 0..WARMUP_STEPS + TIMED_STEPS {
        if i == WARMUP_STEPS {
            t0 = Instant::now();
        }
        crate::cancel::check("timing the run")?;
        let step = steps
            .next()
            .ok_or_else(|| Error::invalid("no training batch to time"))?;
        let how = run.unlabeled.as_ref().map(|u| semi::Pseudo {
            unlabeled: u,
            shares: &shares,
            thresholds: &thresholds,
        });
        let grads = train_step(&model, &loss_fn, step, how.as_ref(), device, &ad).0;
        model = optim.step(run.optimizer.lr, model, grads);
    }
    let step = t0.elapsed().as_secs_f64() / TIMED_STEPS as f64;
    // The fresh network drew from the device's generator, from which the run's own network may
    // not have drawn yet (burn initialises parameters when first used): put it back where the
    // run seeded it, so the run trains the bits of a run without `--time`.
    device.seed(run.seed);
    let valid = model.valid();
    let t = Instant::now();
    let _ = predict_set(&valid, &data.val, device);
    let image = t.elapsed().as_secs_f64() / data.val.len().max(1) as f64;
    // Each epoch writes checkpoints and its resume state, synced.
    let bytes = crate::checkpoint::to_bytes(&valid)?;
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let t = Instant::now();
    for i in 0..SAVES_PER_EPOCH {
        crate::fsutil::write_atomic(&scratch.path().join(format!("{i}.bin")), &bytes)?;
    }
    let saves = t.elapsed().as_secs_f64();
    let batches = data.train.len().div_ceil(run.batch_size.max(1));
    let precise_bn = if run.precise_bn { data.train.len() } else { 0 };
    let test = data.test.as_ref().map_or(0, |t| t.len());
    Ok(Timing {
        spent: spent + started.elapsed().as_secs_f64(),
        epoch: batches as f64 * step + image * (data.val.len() + precise_bn) as f64 + saves,
        finish: image * test as f64 + REPORT_SECONDS,
    })
}

/// Sets the epochs that `--time` chose from the run's timing ([`crate::budget::epochs_within`]),
/// checking and deriving from them what `--epochs` would (the clean last epochs, `--freeze-epochs`,
/// `--unlabeled-after`); returns the line that tells the user.
pub fn fit_to_budget(
    plan: &mut crate::plan::TrainPlan,
    stage: crate::record::Stage,
    req: &crate::options::TrainRequest,
    timing: Timing,
) -> Result<String> {
    let Some(budget) = plan.record.time else {
        return Ok(String::new());
    };
    let epochs = crate::budget::epochs_within(budget, timing).map_err(Error::Invalid)?;
    let mut fixed = req.clone();
    fixed.options.time = None;
    fixed.options.epochs = Some(epochs);
    let again = crate::plan::resolve(stage, &fixed)
        .map_err(|e| Error::invalid(format!("--time {budget} gives {epochs} epoch(s): {e}")))?
        .record;
    plan.record.epochs = again.epochs;
    plan.record.clean_epochs = again.clean_epochs;
    Ok(format!(
        "Time budget {budget}: an epoch takes about {:.1} s here ({:.0} s gone to loading and \
         timing, about {:.0} s for the test set and report): training {epochs} epoch(s)",
        timing.epoch, timing.spent, timing.finish
    ))
}

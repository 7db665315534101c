//! Timing a run before it trains, for `--time`: a fresh network of the run's shape takes steps of
//! the run's own batches (with their pool images, when the run has a pool) under a throwaway
//! optimizer for a few seconds, predicts the validation set once, and ends an epoch as the run
//! does — its checkpoints, resume state, history and figures, written into a scratch folder
//! beside the run's. The run's network is not used: its batch-norm statistics are shared with its
//! copies, and the run must train the bits that a run of its record trains; the device's generator
//! is seeded again as the run seeded it.

use super::state::LoopState;
use super::{semi, train_step, training_parts};
use crate::batch::{PoolDraw, epoch_steps};
use crate::budget::Timing;
use crate::checkpoint::{Meta, Metrics};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::predict_set;
use crate::history::{EpochRecord, History, PoolEpoch};
use crate::model::ArchConfig;
use crate::record::RunRecord;
use burn::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Steps taken before the timed ones (allocations, the batch thread, caches).
const WARMUP_STEPS: usize = 2;
/// Steps timed at least, and for at least [`TIMED_SECONDS`], in two halves: six steps alone on a
/// shared machine were off by a third either way.
const TIMED_STEPS: usize = 6;
/// Seconds of steps timed at least (unless [`MAX_TIMED_STEPS`] come first).
const TIMED_SECONDS: f64 = 2.0;
/// Steps timed at most.
const MAX_TIMED_STEPS: usize = 400;
/// Epochs in the history the timed epoch end writes and draws.
const HISTORY_EPOCHS: usize = 100;
/// Seconds allowed for writing the report, figures and checkpoints after the last epoch.
pub const REPORT_SECONDS: f64 = 5.0;

/// How long `run`'s epochs and its end take on this machine, with `spent` seconds gone already;
/// `figures` draws what else follows each epoch, given a history and the folder to draw into.
pub fn measure(
    data: &Dataset,
    run: &RunRecord,
    device: &Device,
    spent: f64,
    figures: &mut dyn FnMut(&History, &Path) -> Result<()>,
) -> Result<Timing> {
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
    let mut one_step = || -> Result<()> {
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
        model = optim.step(run.optimizer.lr, model.clone(), grads);
        Ok(())
    };
    for _ in 0..WARMUP_STEPS {
        one_step()?;
    }
    // Two windows, and the slower one counts: the first may still draw batches the batch thread
    // prepared ahead, and a shared machine's speed moves between seconds.
    let mut step = 0f64;
    for _ in 0..2 {
        let (t0, mut n) = (Instant::now(), 0);
        while n < MAX_TIMED_STEPS / 2
            && (n < TIMED_STEPS / 2 || t0.elapsed().as_secs_f64() < TIMED_SECONDS / 2.0)
        {
            one_step()?;
            n += 1;
        }
        step = step.max(t0.elapsed().as_secs_f64() / n.max(1) as f64);
    }
    // The fresh network drew from the device's generator, from which the run's own network may
    // not have drawn yet (burn initialises parameters when first used): put it back where the
    // run seeded it, so the run trains the bits of a run without `--time`.
    device.seed(run.seed);
    let valid = model.valid();
    let t = Instant::now();
    let _ = predict_set(&valid, &data.val, device);
    let image = t.elapsed().as_secs_f64() / data.val.len().max(1) as f64;
    // Each epoch ends by writing its checkpoints, resume state, history and figures, synced, on
    // the run's own disk: a scratch folder inside the run's, removed when timed.
    remove_stale_scratch(&run.out);
    let scratch = tempfile::Builder::new()
        .prefix(SCRATCH_PREFIX)
        .tempdir_in(&run.out)
        .map_err(|e| Error::io(&run.out, e))?;
    let record = RunRecord {
        out: scratch.path().to_path_buf(),
        ..run.clone()
    };
    let history = example_history(data.classes.len(), run.unlabeled.is_some());
    let mut st = LoopState::start(record, data.classes.clone(), history);
    st.best_acc = st.history.0.last().map(|r| r.val_acc);
    let meta = Meta::new(data.classes.clone(), st.record.clone(), Metrics::default());
    let dir = scratch.path();
    let save = |name: &str| crate::checkpoint::save(&valid, &meta, &dir.join(name));
    // Once untimed: the first writes allocate and warm what later ones reuse.
    save("last.safetensors")?;
    super::save_state(&st, &model, &valid, &optim)?;
    let t = Instant::now();
    save("best.safetensors")?;
    crate::fsutil::write_atomic(&dir.join("history.csv"), st.history.to_csv().as_bytes())?;
    figures(&st.history, dir)?;
    let every = t.elapsed().as_secs_f64();
    let t = Instant::now();
    save("last.safetensors")?;
    super::save_state(&st, &model, &valid, &optim)?;
    let saves = t.elapsed().as_secs_f64();
    let batches = data.train.len().div_ceil(run.batch_size.max(1));
    let precise_bn = if run.precise_bn { data.train.len() } else { 0 };
    let test = data.test.as_ref().map_or(0, |t| t.len());
    drop(scratch);
    // The epoch's own work; the last checkpoint and resume state are written once a `SAVE_EVERY`.
    let work = batches as f64 * step + image * (data.val.len() + precise_bn) as f64;
    Ok(Timing {
        spent: spent + started.elapsed().as_secs_f64(),
        epoch: work + every + saves * (work / super::SAVE_EVERY.as_secs_f64()).min(1.0),
        finish: image * test as f64 + REPORT_SECONDS,
    })
}

/// What the timing's scratch folders are called: `OUT/.timingXXXXXX`.
const SCRATCH_PREFIX: &str = ".timing";

/// Removes the scratch folders a timing killed outright (`kill -9`) left in run folder `out`,
/// which the caller holds locked, so no other run is timing there. Best effort: a folder that
/// cannot be removed is left as it was.
fn remove_stale_scratch(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir());
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A plausible history of [`HISTORY_EPOCHS`] epochs for the timed epoch end to write and draw.
fn example_history(classes: usize, pool: bool) -> History {
    History(
        (1..=HISTORY_EPOCHS)
            .map(|e| {
                let f = e as f64 / HISTORY_EPOCHS as f64;
                EpochRecord {
                    epoch: e,
                    seconds: 1.0,
                    loss: 2.0 - f,
                    acc: 0.5 + 0.4 * f,
                    val_loss: 2.1 - f,
                    val_acc: 0.5 + 0.3 * f,
                    pool: pool.then(|| PoolEpoch {
                        confident: f,
                        pseudo_acc: Some(0.9),
                        shares: vec![1.0 / classes.max(1) as f64; classes],
                    }),
                }
            })
            .collect(),
    )
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

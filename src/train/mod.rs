//! The training loop: Adam, the history as CSV, the best-val and last checkpoints kept in the run
//! directory, and a resumable state saved at every epoch end and on interrupt. It reports its
//! epochs and batches as [`Event`]s; how they are shown, and whatever else should follow an epoch
//! (plots), is the caller's [`Observer`].
//!
//! Randomness needs no saved state: batch order and augmentation are drawn from an RNG that is a
//! pure function of (seed, epoch), and dropout is reseeded from (seed, epoch, batch) before every
//! batch — so a resumed run draws exactly what an uninterrupted one would.

pub mod init;
pub mod optim;
pub mod precise_bn;
pub mod resume;
pub mod rundir;
pub mod semi;
pub mod state;
pub mod timing;

use crate::batch::{Batch, PoolDraw, Step, epoch_steps};
use crate::cancel;
use crate::checkpoint::{self, Meta, Metrics};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::predict_set;
use crate::fsutil::{create_dir, write_atomic};
use crate::history::{EpochRecord, History, PoolEpoch};
use crate::model::{ArchConfig, Net, images_tensor};
use crate::progress::{Event, Progress};
use crate::record::{AdamSettings, Keep, RunRecord};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use optim::new_optimizer;
pub use optim::step;
use precise_bn::precise_bn;
use state::LoopState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What training leaves behind.
pub struct Outcome {
    /// Every epoch's figures.
    pub history: History,
    /// Why training stopped before its last epoch (early stopping), if it did.
    pub stopped: Option<String>,
    /// Weights of the best validation epoch.
    pub best_path: PathBuf,
}

/// What the training loop tells its caller.
pub trait Observer {
    /// Where the loop reports its epochs and batches.
    fn progress(&mut self) -> &mut dyn Progress;
    /// After every epoch, with the history so far (the epoch's figures are its last entry) and
    /// the run's total epochs; an error stops training.
    fn epoch_end(&mut self, history: &History, epochs: usize) -> Result<()>;
}

/// The best-validation checkpoint of run directory `out`.
pub fn best_path(out: &Path) -> PathBuf {
    out.join("best.safetensors")
}
/// How often, at most, an epoch end writes the last checkpoint and the resume state (besides the
/// first epoch and the last): what a crash or `kill -9` can lose.
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The last-epoch checkpoint of run directory `out`.
pub fn last_path(out: &Path) -> PathBuf {
    out.join("last.safetensors")
}

/// The dropout seed of one batch: reseeding per batch makes a resumed run draw what an
/// uninterrupted one would, with no RNG state to save.
fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [epoch as u64, batch as u64] {
        h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h
}

/// Trains `model` on `data` from scratch as `record` says; `device` must not have autodiff (it
/// is added here).
pub fn fit(
    model: Net,
    data: &Dataset,
    record: &RunRecord,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    if record.epochs == 0 || record.batch_size == 0 {
        return Err(Error::invalid(
            "--epochs and --batch-size must be at least 1",
        ));
    }
    create_dir(&record.out)?;
    // A new run in a directory that holds an older run's resume state must not be confused with it.
    resume::remove(&record.out)?;
    let state = LoopState::start(record.clone(), data.classes.clone(), History::default());
    let optim = new_optimizer(&record.optimizer);
    run_loop(model, optim, state, data, device, observer)
}

/// Continues a run from a saved state (its record's `out` and `epochs` may have been changed by
/// the caller, e.g. to extend the run).
pub fn resume(
    saved: resume::Saved,
    data: &Dataset,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let resume::Saved {
        state,
        model,
        weights,
        optim,
    } = saved;
    let file = state.record.out.join(resume::FILE);
    if data.classes != state.classes {
        return Err(Error::format(
            &state.record.data.path,
            format!(
                "the data's classes {:?} differ from the interrupted run's {:?}",
                data.classes, state.classes
            ),
        ));
    }
    let ad = device.clone().autodiff();
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model))
        .map_err(|e| Error::format(&file, format!("cannot read the saved model: {e}")))?;
    let mut net = ArchConfig::standard(state.classes.len())
        .init(&ad)
        .try_load_record(record)
        .map_err(|e| Error::format(&file, format!("cannot load the saved model: {e}")))?;
    checkpoint::apply_bytes(&mut net, weights)
        .map_err(|e| Error::format(&file, format!("cannot load the saved weights: {e}")))?;
    let optim = new_optimizer(&state.record.optimizer)
        .from_bytes(Bytes::from_bytes_vec(optim))
        .map_err(|e| Error::format(&file, format!("cannot read the saved optimizer state: {e}")))?;
    run_loop(net, optim, state, data, device, observer)
}

/// `valid` is `model.valid()`, which the caller usually has already.
fn save_state(st: &LoopState, model: &Net, valid: &Net, optim: &ModuleOptimizer) -> Result<()> {
    let ser = |e: String| Error::invalid(format!("cannot serialise the training state: {e}"));
    let model = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| ser(e.to_string()))?;
    let optim = optim.into_bytes().map_err(|e| ser(e.to_string()))?;
    resume::save(
        &st.record.out,
        &resume::Saved {
            state: st.clone(),
            model: model.to_vec(),
            weights: checkpoint::to_bytes(valid)?,
            optim: optim.to_vec(),
        },
    )
}

/// One batch's forward and backward pass: the gradients, the mean loss and the number of correct
/// predictions. `model` must be in training mode on the autodiff device `ad`.
pub fn forward_backward(
    model: &Net,
    loss_fn: &CrossEntropyLoss,
    batch: Batch,
    ad: &Device,
) -> (GradientsParams, f64, usize) {
    let logits = model.forward(images_tensor(batch.images, ad));
    let (loss, hits) = labelled_loss(loss_fn, logits, batch.labels, ad);
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (grads, f64::from(loss.into_scalar::<f32>()), hits)
}

/// One training step: FixMatch's when the step has pool images and the run a pool (`how`; its
/// pool counts are returned), the labelled batch's otherwise. The training loop, `--time`'s
/// timing and `bench` take their steps here.
pub fn train_step(
    model: &Net,
    loss_fn: &CrossEntropyLoss,
    step: Step,
    how: Option<&semi::Pseudo>,
    device: &Device,
    ad: &Device,
) -> (GradientsParams, f64, usize, Option<semi::PoolCounts>) {
    match (step.pool, how) {
        (Some(p), Some(how)) => {
            let (g, l, h, counts) =
                semi::forward_backward(model, loss_fn, step.labelled, p, how, device, ad);
            (g, l, h, Some(counts))
        }
        _ => {
            let (g, l, h) = forward_backward(model, loss_fn, step.labelled, ad);
            (g, l, h, None)
        }
    }
}

/// The loss of `logits` against `labels`, and how many of them the logits predict.
pub(crate) fn labelled_loss(
    loss_fn: &CrossEntropyLoss,
    logits: Tensor<2>,
    labels: Vec<i64>,
    ad: &Device,
) -> (Tensor<1>, usize) {
    let n = labels.len();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), ad);
    let loss = loss_fn.forward(logits.clone(), y.clone());
    let hits = logits
        .argmax(1)
        .reshape([n])
        .equal(y)
        .int()
        .sum()
        .into_scalar::<i64>();
    (loss, hits as usize)
}

/// A training model, its Adam optimizer `adam` (the learning rate is given at each step) and
/// its loss with label smoothing `smoothing`, as the training loop sets them up.
pub fn training_parts(
    model: Net,
    adam: &AdamSettings,
    smoothing: Option<f32>,
    ad: &Device,
) -> (Net, ModuleOptimizer, CrossEntropyLoss) {
    (
        model.fork(ad).train(),
        new_optimizer(adam),
        loss(smoothing, ad),
    )
}

/// Cross-entropy, with label smoothing `alpha` when given.
fn loss(alpha: Option<f32>, ad: &Device) -> CrossEntropyLoss {
    CrossEntropyLossConfig::new().with_smoothing(alpha).init(ad)
}

/// An epoch's pool figures from its counts.
fn pool_epoch(c: &semi::PoolCounts) -> PoolEpoch {
    PoolEpoch {
        confident: c.confident as f64 / c.seen.max(1) as f64,
        pseudo_acc: (c.known > 0).then(|| c.correct as f64 / c.known as f64),
        shares: c
            .per_class
            .iter()
            .map(|&k| k as f64 / c.confident.max(1) as f64)
            .collect(),
    }
}

/// Early stopping: the reason to stop after the last epoch of `history`, when the validation
/// accuracy has not improved for `patience` epochs.
pub fn stop_reason(history: &History, patience: Option<usize>) -> Option<String> {
    let (p, best, last) = (patience?, history.best()?, history.0.last()?);
    (last.epoch - best.epoch >= p).then(|| {
        format!(
            "stopped early after epoch {}: the validation accuracy has not improved for {p} \
             epoch(s) since epoch {} ({:.4})",
            last.epoch, best.epoch, best.val_acc
        )
    })
}

fn run_loop(
    model: Net,
    mut optim: ModuleOptimizer,
    mut st: LoopState,
    data: &Dataset,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let run = st.record.clone();
    if run.precision == crate::device::Precision::Bf16 {
        // A run set up (or resumed) on another machine may ask for what this CPU lacks.
        crate::device::check_bf16(run.device)
            .map_err(|e| Error::invalid(format!("the run computes in bf16: {e}")))?;
    }
    create_dir(&run.out)?;
    let ad = device.clone().autodiff();
    let mut model = model.fork(&ad).train().with_precision(run.precision);
    let loss_fn = loss(run.label_smoothing, &ad);
    let train = Arc::new(data.train.clone());
    let n_batches = train.len().div_ceil(run.batch_size);
    let pool = match (&run.unlabeled, &data.pool) {
        (Some(u), Some(p)) => Some(PoolDraw {
            pool: p.clone(),
            ratio: u.ratio,
        }),
        (Some(u), None) => {
            return Err(Error::invalid(format!(
                "the run learns from {} but it was not loaded",
                u.path.display()
            )));
        }
        _ => None,
    };
    let shares = semi::class_shares(&data.train, data.classes.len());
    let (best_p, last_p) = (best_path(&run.out), last_path(&run.out));

    let total_steps = run.epochs * n_batches;
    let mut saved_at = None;
    while st.epoch < run.epochs && st.stopped.is_none() {
        let start = Instant::now();
        // Only the head trains in the first `freeze_epochs` epochs (decided per epoch, so a
        // resumed run freezes exactly as an uninterrupted one).
        if run.freeze_epochs > 0 {
            model = model.body_trainable(st.epoch >= run.freeze_epochs);
        }
        observer.progress().event(Event::EpochStarted {
            epoch: st.epoch,
            epochs: run.epochs,
            batches: n_batches,
            done: st.batch,
        });
        let thresholds = run.unlabeled.as_ref().map_or_else(Vec::new, |u| {
            let last = st.history.0.last().and_then(|r| r.pool.as_ref());
            semi::class_thresholds(u, last, data.classes.len())
        });
        let steps = epoch_steps(
            train.clone(),
            run.batch_size,
            run.augment_at(st.epoch),
            run.seed,
            st.epoch,
            // Labels alone in the epochs before the pool joins (`--unlabeled-after`).
            pool.clone().filter(|_| {
                run.unlabeled
                    .as_ref()
                    .is_some_and(|u| u.trains_in(st.epoch))
            }),
        );
        // A resumed epoch regenerates the same stream and skips what was already trained.
        for (b, batch) in steps.into_iter().enumerate().skip(st.batch) {
            ad.seed(batch_seed(run.seed, st.epoch, b));
            let n = batch.labelled.len();
            let how = run.unlabeled.as_ref().map(|u| semi::Pseudo {
                unlabeled: u,
                shares: &shares,
                thresholds: &thresholds,
            });
            let (grads, l, hits, counts) =
                train_step(&model, &loss_fn, batch, how.as_ref(), device, &ad);
            if let Some(c) = counts {
                st.pool.accumulate(&c);
            }
            if !l.is_finite() {
                observer.progress().event(Event::BatchesEnded);
                let last = if last_p.is_file() {
                    format!("the last good checkpoint is {}", last_p.display())
                } else {
                    "no checkpoint was saved before it".to_string()
                };
                return Err(Error::Numerical(format!(
                    "the training loss became {l} in epoch {}, batch {}; training stopped: \
                     {last} (try a lower --lr)",
                    st.epoch + 1,
                    b + 1,
                )));
            }
            let lr = run
                .schedule
                .lr(run.optimizer.lr, st.epoch * n_batches + b, total_steps);
            model = step(model, &mut optim, grads, lr, run.lr_ratio);
            st.loss_sum += l * n as f64;
            st.correct += hits;
            st.seen += n;
            st.batch = b + 1;
            observer.progress().event(Event::BatchTrained {
                loss: st.loss_sum / st.seen as f64,
                acc: st.correct as f64 / st.seen as f64,
            });
            if cancel::stop_requested() {
                observer.progress().event(Event::BatchesEnded);
                st.seconds += start.elapsed().as_secs_f64();
                save_state(&st, &model, &model.valid(), &optim)?;
                return Err(Error::Interrupted {
                    command: run.stage.command(),
                    dir: run.out.clone(),
                    epoch: st.epoch + 1,
                    batch: st.batch,
                });
            }
        }
        observer.progress().event(Event::BatchesEnded);
        if run.precise_bn {
            ad.seed(batch_seed(run.seed, st.epoch, usize::MAX));
            model = precise_bn(model, &train, run.batch_size, &ad);
        }
        let valid = model.valid();
        let vp = predict_set(&valid, &data.val, device);
        let rec = EpochRecord {
            epoch: st.epoch + 1,
            seconds: st.seconds + start.elapsed().as_secs_f64(),
            loss: st.loss_sum / st.seen.max(1) as f64,
            acc: st.correct as f64 / st.seen.max(1) as f64,
            val_loss: vp.loss(),
            val_acc: vp.accuracy(),
            pool: pool
                .as_ref()
                .map(|_| pool_epoch(&std::mem::take(&mut st.pool))),
        };
        // A finite loss does not make finite weights (a huge --lr can leave batch-norm statistics
        // NaN): never save a checkpoint that cannot predict.
        if let Some(name) = checkpoint::non_finite_tensor(&valid) {
            let last = if last_p.is_file() {
                format!("the last good checkpoint is {}", last_p.display())
            } else {
                "no checkpoint was saved before it".to_string()
            };
            return Err(Error::Numerical(format!(
                "after epoch {} the model's {name} holds NaN or infinite values; training \
                 stopped: {last} (try a lower --lr)",
                rec.epoch
            )));
        }
        st.history.0.push(rec.clone());
        let meta = Meta::new(
            data.classes.clone(),
            run.clone(),
            Metrics {
                epoch: rec.epoch,
                loss: rec.loss,
                acc: rec.acc,
                val_loss: rec.val_loss,
                val_acc: rec.val_acc,
                test_acc: None,
            },
        );
        let better = st.best_acc.is_none_or(|b| rec.val_acc > b) && rec.val_acc > f64::NEG_INFINITY;
        if better {
            st.best_acc = Some(rec.val_acc);
        }
        let stopped = stop_reason(&st.history, run.patience);
        let finished = rec.epoch == run.epochs || stopped.is_some();
        // The kept model: the best epoch's so far, every epoch's in turn when the last is kept,
        // and under `auto` the last one's too if it is the one kept once training ends.
        let keep_this = match run.keep {
            Keep::Best => better,
            Keep::Last => true,
            Keep::Auto => {
                better
                    || (finished && st.history.kept(Keep::Auto).map(|k| k.epoch) == Some(rec.epoch))
            }
        };
        if keep_this {
            checkpoint::save(&valid, &meta, &best_p)?;
        }
        // The last checkpoint and resume state (~19 MB, synced; a fifth of a small epoch) after
        // the first and last epochs and once a `SAVE_EVERY`; older states resume to the same bits.
        let save = finished || saved_at.is_none_or(|t: Instant| t.elapsed() >= SAVE_EVERY);
        if save {
            checkpoint::save(&valid, &meta, &last_p)?;
        }
        write_atomic(&run.out.join("history.csv"), st.history.to_csv().as_bytes())?;
        observer.progress().event(Event::Epoch {
            record: &rec,
            epochs: run.epochs,
        });
        observer.epoch_end(&st.history, run.epochs)?;
        st.stopped = stopped;
        st.epoch += 1;
        st.batch = 0;
        st.loss_sum = 0.0;
        st.correct = 0;
        st.seen = 0;
        st.seconds = 0.0;
        if save {
            save_state(&st, &model, &valid, &optim)?;
            saved_at = Some(Instant::now());
        }
    }
    Ok(Outcome {
        history: st.history,
        stopped: st.stopped,
        best_path: best_p,
    })
}

#[cfg(test)]
mod tests {
    use super::optim::step_by_block;
    use super::*;

    fn history(val_accs: &[f64]) -> History {
        History(
            val_accs
                .iter()
                .enumerate()
                .map(|(i, &val_acc)| EpochRecord {
                    epoch: i + 1,
                    seconds: 1.0,
                    loss: 0.5,
                    acc: 0.8,
                    val_loss: 0.4,
                    val_acc,
                    pool: None,
                })
                .collect(),
        )
    }

    /// Weights of a 1-step-trained copy of `net` (dropout off), for comparing optimizer steps.
    fn stepped(
        net: &Net,
        ad: &Device,
        step: impl FnOnce(Net, GradientsParams) -> Net,
    ) -> Vec<Vec<f32>> {
        let loss_fn = loss(None, ad);
        let batch = Batch {
            images: (0..4 * 784).map(|i| (i % 97) as f32 / 97.0).collect(),
            labels: vec![0, 1, 2, 3],
        };
        let (grads, _, _) = forward_backward(net, &loss_fn, batch, ad);
        let m = step(net.clone(), grads);
        let w = |t: Tensor<4>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        let v = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        vec![
            w(m.conv1.weight.val()),
            w(m.conv2.weight.val()),
            v(m.fc1.weight.val()),
            v(m.fc2.weight.val()),
        ]
    }

    #[test]
    fn block_rates_are_one_step_at_four_rates() {
        let ad = Device::flex().autodiff();
        ad.seed(3);
        let mut net = ArchConfig::standard(4).init(&ad).train();
        net.drop1.prob = 0.0;
        net.drop2.prob = 0.0;
        let lr = 1e-3;
        let single = |lr: f64| {
            move |m: Net, g: GradientsParams| {
                new_optimizer(&AdamSettings::with_lr(lr)).step(lr, m, g)
            }
        };
        let by_block = |ratio: f64| {
            move |m: Net, g: GradientsParams| {
                step_by_block(
                    m,
                    &mut new_optimizer(&AdamSettings::with_lr(lr)),
                    g,
                    lr,
                    ratio,
                )
            }
        };
        // Ratio 1: exactly one step at one rate.
        assert_eq!(
            stepped(&net, &ad, by_block(1.0)),
            stepped(&net, &ad, single(lr))
        );
        // Ratio 0.5: the head as at lr, fc1 as at lr/2, conv2 at lr/4, conv1 at lr/8.
        let split = stepped(&net, &ad, by_block(0.5));
        for (block, depth) in [(3, 0), (2, 1), (1, 2), (0, 3)] {
            let alone = stepped(&net, &ad, single(lr * 0.5f64.powi(depth)));
            assert_eq!(split[block], alone[block], "block {block}");
        }
        assert_ne!(split[0], stepped(&net, &ad, single(lr))[0]);
    }

    #[test]
    fn early_stopping_stops_after_patience_epochs_without_a_better_one() {
        let accs = [0.5, 0.6, 0.6, 0.58, 0.7, 0.69, 0.65, 0.7];
        // The epoch each patience stops at: the first whose gap to the best epoch reaches it.
        for (patience, stops_after) in [(1, Some(3)), (2, Some(4)), (3, Some(8)), (4, None)] {
            let stop = (1..=accs.len())
                .find(|&n| stop_reason(&history(&accs[..n]), Some(patience)).is_some());
            assert_eq!(stop, stops_after, "patience {patience}");
        }
        let why = stop_reason(&history(&accs[..4]), Some(2)).unwrap();
        assert!(
            why.contains("after epoch 4") && why.contains("since epoch 2"),
            "{why}"
        );
        assert_eq!(stop_reason(&history(&accs), None), None);
    }
}

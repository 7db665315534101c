//! The training loop: Adam, one Keras-style line per epoch, the history as CSV, and the best-val
//! and last checkpoints kept in the output directory.

use crate::augment::AugmentConfig;
use crate::batch::Batch;
use crate::batch::epoch_batches;
use crate::checkpoint::{self, Meta, Metrics};
use crate::data::{Dataset, LoadOptions};
use crate::error::{Error, Result};
use crate::eval::predict_set;
use crate::fsutil::{create_dir, write_atomic};
use crate::model::ArchConfig;
use crate::model::{Net, images_tensor};
use crate::report;
use crate::resume::{self, LoopState};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Where checkpoints, the history and the plots go.
    pub out: PathBuf,
    /// The dataset and how it was loaded, so that a resumed run sees the same data.
    pub data: PathBuf,
    pub load: LoadOptions,
    /// The command-line arguments of the run, recorded in checkpoints.
    pub args: serde_json::Value,
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub seconds: f64,
    pub loss: f64,
    pub acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

impl EpochRecord {
    /// The Keras-style line: `Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: ...`.
    pub fn keras_line(&self, epochs: usize) -> String {
        format!(
            "Epoch {}/{} - {:.0}s - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4}",
            self.epoch, epochs, self.seconds, self.loss, self.acc, self.val_loss, self.val_acc
        )
    }
}

/// The per-epoch history of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History(pub Vec<EpochRecord>);

impl History {
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch,seconds,loss,acc,val_loss,val_acc\n");
        for r in &self.0 {
            s.push_str(&format!(
                "{},{:.3},{:.6},{:.6},{:.6},{:.6}\n",
                r.epoch, r.seconds, r.loss, r.acc, r.val_loss, r.val_acc
            ));
        }
        s
    }

    /// The epoch with the best validation accuracy (the earliest among equals).
    pub fn best(&self) -> Option<&EpochRecord> {
        self.0
            .iter()
            .fold(None, |b: Option<&EpochRecord>, r| match b {
                Some(b) if b.val_acc >= r.val_acc => Some(b),
                _ => Some(r),
            })
    }
}

/// What training leaves behind.
pub struct Outcome {
    /// The model of the last epoch, in evaluation mode.
    pub last: Net,
    pub history: History,
    /// Weights of the best validation epoch.
    pub best_path: PathBuf,
    pub last_path: PathBuf,
}

/// Paths of a run directory's files.
pub fn best_path(out: &Path) -> PathBuf {
    out.join("best.safetensors")
}
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

/// Trains `model` on `data` from scratch; `device` must not have autodiff (it is added here).
pub fn fit(model: Net, data: &Dataset, opts: &TrainOptions, device: &Device) -> Result<Outcome> {
    if opts.epochs == 0 || opts.batch_size == 0 {
        return Err(Error::invalid(
            "--epochs and --batch-size must be at least 1",
        ));
    }
    create_dir(&opts.out)?;
    // A new run in a directory that holds an older run's resume state must not be confused with it.
    let stale = resume::path(&opts.out);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
    }
    let state = LoopState {
        options: opts.clone(),
        classes: data.classes.clone(),
        epoch: 0,
        batch: 0,
        loss_sum: 0.0,
        correct: 0,
        seen: 0,
        seconds: 0.0,
        history: History::default(),
        best_acc: f64::NEG_INFINITY,
    };
    run_loop(model, new_optimizer(), state, data, device)
}

/// Adam with Keras's epsilon; burn's `Adam` arithmetic, fused into one pass on the CPU.
fn new_optimizer() -> ModuleOptimizer {
    ModuleOptimizer::from(crate::fast::FusedAdam::new(0.9, 0.999, 1e-7))
}

/// Continues a run from a saved state (its options, including `out` and `epochs`, may have been
/// changed by the caller, e.g. to extend the run).
pub fn resume(saved: resume::Saved, data: &Dataset, device: &Device) -> Result<Outcome> {
    let resume::Saved {
        state,
        model,
        weights,
        optim,
    } = saved;
    let file = resume::path(&state.options.out);
    if data.classes != state.classes {
        return Err(Error::format(
            &state.options.data,
            format!(
                "the data's classes {:?} differ from the interrupted run's {:?}",
                data.classes, state.classes
            ),
        ));
    }
    let ad = device.clone().autodiff();
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model))
        .map_err(|e| Error::format(&file, format!("cannot read the saved model: {e}")))?;
    let mut net = ArchConfig::seed(state.classes.len())
        .init(&ad)
        .try_load_record(record)
        .map_err(|e| Error::format(&file, format!("cannot load the saved model: {e}")))?;
    checkpoint::apply_bytes(&mut net, weights)
        .map_err(|e| Error::format(&file, format!("cannot load the saved weights: {e}")))?;
    let optim = new_optimizer()
        .from_bytes(Bytes::from_bytes_vec(optim))
        .map_err(|e| Error::format(&file, format!("cannot read the saved optimizer state: {e}")))?;
    println!(
        "Resuming {} at epoch {}/{}, batch {}",
        state.options.out.display(),
        state.epoch + 1,
        state.options.epochs,
        state.batch
    );
    run_loop(net, optim, state, data, device)
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
        &st.options.out,
        &resume::Saved {
            state: st.clone(),
            model: model.to_vec(),
            weights: checkpoint::to_bytes(valid)?,
            optim: optim.to_vec(),
        },
    )
}

fn progress_bar(show: bool, batches: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(batches as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(format!("Epoch {}/{}", epoch + 1, epochs));
    b
}

/// One batch's forward and backward pass: the gradients, the mean loss and the number of correct
/// predictions. `model` must be in training mode on the autodiff device `ad`.
pub fn forward_backward(
    model: &Net,
    loss_fn: &CrossEntropyLoss,
    batch: Batch,
    ad: &Device,
) -> (GradientsParams, f64, usize) {
    let n = batch.len();
    let x = images_tensor(batch.images, ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [n]), ad);
    let logits = model.forward(x);
    let loss = loss_fn.forward(logits.clone(), y.clone());
    let hits = logits
        .argmax(1)
        .reshape([n])
        .equal(y)
        .int()
        .sum()
        .into_scalar::<i64>();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (grads, f64::from(loss.into_scalar::<f32>()), hits as usize)
}

/// A training model, its Adam optimizer and loss, as the training loop sets them up.
pub fn training_parts(model: Net, ad: &Device) -> (Net, ModuleOptimizer, CrossEntropyLoss) {
    (
        model.fork(ad).train(),
        new_optimizer(),
        CrossEntropyLossConfig::new().init(ad),
    )
}

fn run_loop(
    model: Net,
    mut optim: ModuleOptimizer,
    mut st: LoopState,
    data: &Dataset,
    device: &Device,
) -> Result<Outcome> {
    let opts = st.options.clone();
    create_dir(&opts.out)?;
    let ad = device.clone().autodiff();
    let mut model = model.fork(&ad).train();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let train = Arc::new(data.train.clone());
    let n_batches = train.len().div_ceil(opts.batch_size);
    let (best_p, last_p) = (best_path(&opts.out), last_path(&opts.out));
    let show_bar = std::io::stderr().is_terminal();

    while st.epoch < opts.epochs {
        let start = Instant::now();
        let bar = progress_bar(show_bar, n_batches, st.epoch, opts.epochs);
        bar.set_position(st.batch as u64);
        let batches = epoch_batches(
            train.clone(),
            opts.batch_size,
            opts.augment,
            opts.seed,
            st.epoch,
        );
        // A resumed epoch regenerates the same stream and skips what was already trained.
        for (b, batch) in batches.into_iter().enumerate().skip(st.batch) {
            ad.seed(batch_seed(opts.seed, st.epoch, b));
            let n = batch.len();
            let (grads, l, hits) = forward_backward(&model, &loss_fn, batch, &ad);
            if !l.is_finite() {
                bar.finish_and_clear();
                return Err(Error::Numerical(format!(
                    "the training loss became {l} in epoch {}, batch {}; training stopped. \
                     The last good checkpoint is {} (try a lower --lr)",
                    st.epoch + 1,
                    b + 1,
                    last_p.display()
                )));
            }
            model = optim.step(opts.lr, model, grads);
            st.loss_sum += l * n as f64;
            st.correct += hits;
            st.seen += n;
            st.batch = b + 1;
            bar.inc(1);
            bar.set_message(format!(
                "loss: {:.4} - acc: {:.4}",
                st.loss_sum / st.seen as f64,
                st.correct as f64 / st.seen as f64
            ));
            if resume::stop_requested() {
                bar.finish_and_clear();
                st.seconds += start.elapsed().as_secs_f64();
                save_state(&st, &model, &model.valid(), &optim)?;
                return Err(Error::Interrupted {
                    dir: opts.out.clone(),
                    epoch: st.epoch + 1,
                    batch: st.batch,
                });
            }
        }
        bar.finish_and_clear();
        let valid = model.valid();
        let vp = predict_set(&valid, &data.val, device);
        let rec = EpochRecord {
            epoch: st.epoch + 1,
            seconds: st.seconds + start.elapsed().as_secs_f64(),
            loss: st.loss_sum / st.seen.max(1) as f64,
            acc: st.correct as f64 / st.seen.max(1) as f64,
            val_loss: vp.loss(),
            val_acc: vp.accuracy(),
        };
        println!("{}", rec.keras_line(opts.epochs));
        st.history.0.push(rec);
        let meta = Meta::new(
            data.classes.clone(),
            opts.load.invert,
            serde_json::json!({ "options": opts, "data": data.source }),
            Metrics {
                epoch: rec.epoch,
                loss: rec.loss,
                acc: rec.acc,
                val_loss: rec.val_loss,
                val_acc: rec.val_acc,
                test_acc: None,
            },
        );
        if rec.val_acc > st.best_acc {
            st.best_acc = rec.val_acc;
            checkpoint::save(&valid, &meta, &best_p)?;
        }
        checkpoint::save(&valid, &meta, &last_p)?;
        write_atomic(
            &opts.out.join("history.csv"),
            st.history.to_csv().as_bytes(),
        )?;
        report::plot::curves(&st.history, &opts.out.join("curves.png"))?;
        st.epoch += 1;
        st.batch = 0;
        st.loss_sum = 0.0;
        st.correct = 0;
        st.seen = 0;
        st.seconds = 0.0;
        save_state(&st, &model, &valid, &optim)?;
    }
    Ok(Outcome {
        last: model.valid(),
        history: st.history,
        best_path: best_p,
        last_path: last_p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            seconds: 1.0,
            loss: 0.5,
            acc: 0.8,
            val_loss: 0.4,
            val_acc,
        }
    }

    #[test]
    fn keras_line_format() {
        let r = EpochRecord {
            epoch: 3,
            seconds: 10.2,
            loss: 0.10541,
            acc: 0.98512,
            val_loss: 0.0976,
            val_acc: 0.9829,
        };
        assert_eq!(
            r.keras_line(15),
            "Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: 0.0976 - val_acc: 0.9829"
        );
    }

    #[test]
    fn best_is_earliest_highest() {
        let h = History(vec![rec(1, 0.5), rec(2, 0.7), rec(3, 0.7), rec(4, 0.6)]);
        assert_eq!(h.best().unwrap().epoch, 2);
        assert!(
            h.to_csv()
                .starts_with("epoch,seconds,loss,acc,val_loss,val_acc\n1,")
        );
    }
}

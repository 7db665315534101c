//! The training loop: Adam, one Keras-style line per epoch, the history as CSV, and the best-val
//! and last checkpoints kept in the output directory.

use crate::augment::AugmentConfig;
use crate::checkpoint::{self, Meta, Metrics};
use crate::data::batch::epoch_batches;
use crate::data::{Dataset, Invert};
use crate::error::{Error, Result};
use crate::eval::predict_set;
use crate::fsutil::{create_dir, write_atomic};
use crate::model::{Net, images_tensor};
use crate::report;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How to train.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Where checkpoints, the history and the plots go.
    pub out: PathBuf,
    /// The invert mode the data were loaded with (recorded in checkpoints for `predict`).
    pub invert: Invert,
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
#[derive(Debug, Clone, Default, PartialEq)]
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

/// Trains `model` on `data`; `device` must not have autodiff (it is added here).
pub fn fit(model: Net, data: &Dataset, opts: &TrainOptions, device: &Device) -> Result<Outcome> {
    if opts.epochs == 0 || opts.batch_size == 0 {
        return Err(Error::invalid(
            "--epochs and --batch-size must be at least 1",
        ));
    }
    create_dir(&opts.out)?;
    let ad = device.clone().autodiff();
    let mut model = model.fork(&ad).train();
    let mut optim = AdamConfig::new().with_epsilon(1e-7).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let train = Arc::new(data.train.clone());
    let n_batches = train.len().div_ceil(opts.batch_size);
    let mut history = History::default();
    let mut best_acc = f64::NEG_INFINITY;
    let (best_p, last_p) = (best_path(&opts.out), last_path(&opts.out));
    let show_bar = std::io::stderr().is_terminal();

    for epoch in 0..opts.epochs {
        let start = Instant::now();
        let bar = if show_bar {
            let b = indicatif::ProgressBar::new(n_batches as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("Epoch {}/{}", epoch + 1, opts.epochs));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for batch in epoch_batches(
            train.clone(),
            opts.batch_size,
            opts.augment,
            opts.seed,
            epoch,
        ) {
            let n = batch.len();
            let x = images_tensor(batch.images, &ad);
            let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [n]), &ad);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y.clone());
            let hits: i64 = logits
                .argmax(1)
                .reshape([n])
                .equal(y)
                .int()
                .sum()
                .into_scalar::<i64>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let l = f64::from(loss.into_scalar::<f32>());
            if !l.is_finite() {
                bar.finish_and_clear();
                return Err(Error::Numerical(format!(
                    "the training loss became {l} in epoch {}; stopped. The last good checkpoint is {} \
                     (try a lower learning rate)",
                    epoch + 1,
                    last_p.display()
                )));
            }
            model = optim.step(opts.lr, model, grads);
            loss_sum += l * n as f64;
            correct += hits as usize;
            seen += n;
            bar.inc(1);
            bar.set_message(format!(
                "loss: {:.4} - acc: {:.4}",
                loss_sum / seen as f64,
                correct as f64 / seen as f64
            ));
        }
        bar.finish_and_clear();
        let valid = model.valid();
        let vp = predict_set(&valid, &data.val, device);
        let rec = EpochRecord {
            epoch: epoch + 1,
            seconds: start.elapsed().as_secs_f64(),
            loss: loss_sum / seen.max(1) as f64,
            acc: correct as f64 / seen.max(1) as f64,
            val_loss: vp.loss(),
            val_acc: vp.accuracy(),
        };
        println!("{}", rec.keras_line(opts.epochs));
        history.0.push(rec);
        let meta = Meta::new(
            data.classes.clone(),
            opts.invert,
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
        if rec.val_acc > best_acc {
            best_acc = rec.val_acc;
            checkpoint::save(&valid, &meta, &best_p)?;
        }
        checkpoint::save(&valid, &meta, &last_p)?;
        write_atomic(&opts.out.join("history.csv"), history.to_csv().as_bytes())?;
    }
    report::plot::curves(&history, &opts.out.join("curves.png"))?;
    Ok(Outcome {
        last: model.valid(),
        history,
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

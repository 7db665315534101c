//! The outputs of an evaluation and of a finished training run, written into a run directory.

use super::figures::{
    augment_preview_png, confusion_png, mistakes_png, one_per_class, top_mistakes,
};
use super::html::{self, Figure, Report};
use crate::augment::AugmentConfig;
use crate::data::{Dataset, Images};
use crate::error::{Error, Result};
use crate::eval::{Confusion, Predictions};
use crate::fsutil::{create_dir, write_atomic};
use crate::history::History;
use crate::record::RunRecord;
use std::path::{Path, PathBuf};

/// How many mistakes the gallery shows.
pub const MISTAKES: usize = 24;

/// Files written by [`write_eval`].
#[derive(Debug, Clone)]
pub struct EvalFiles {
    /// The confusion matrix.
    pub confusion_png: PathBuf,
    /// The most confident mistakes.
    pub mistakes_png: PathBuf,
    /// Per-class scores as CSV.
    pub per_class_csv: PathBuf,
    /// Per-class scores, confusion matrix and mistakes as JSON.
    pub per_class_json: PathBuf,
}

/// Writes the confusion matrix (PNG), per-class scores (CSV and JSON) and the gallery of the most
/// confident mistakes for predictions `p` on `images`.
pub fn write_eval(
    dir: &Path,
    p: &Predictions,
    images: &Images,
    classes: &[String],
    set_name: &str,
) -> Result<(Confusion, EvalFiles)> {
    create_dir(dir)?;
    let c = Confusion::new(p, classes);
    let files = EvalFiles {
        confusion_png: dir.join("confusion.png"),
        mistakes_png: dir.join("mistakes.png"),
        per_class_csv: dir.join("per_class.csv"),
        per_class_json: dir.join("per_class.json"),
    };
    confusion_png(
        &c,
        &format!(
            "Confusion matrix, {set_name} (accuracy {:.4})",
            p.accuracy()
        ),
        &files.confusion_png,
    )?;
    let scores = c.scores();
    // The csv crate quotes what needs quoting: class names come from users' folder names and
    // files, commas, quotes and newlines included.
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::invalid(format!("cannot write per-class scores: {e}"));
    w.write_record(["class", "precision", "recall", "f1", "support"])
        .map_err(bad)?;
    for s in &scores {
        w.write_record([
            s.class.clone(),
            format!("{:.6}", s.precision),
            format!("{:.6}", s.recall),
            format!("{:.6}", s.f1),
            s.support.to_string(),
        ])
        .map_err(bad)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::invalid(format!("cannot write per-class scores: {e}")))?;
    write_atomic(&files.per_class_csv, &bytes)?;
    let mistakes = top_mistakes(p, classes, MISTAKES);
    let json = serde_json::json!({
        "set": set_name,
        "accuracy": p.accuracy(),
        "correct": p.correct(),
        "total": p.len(),
        "loss": p.loss(),
        "classes": scores,
        "confusion": c.counts,
        "most_confident_mistakes": mistakes,
    });
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&files.per_class_json, &bytes)?;
    mistakes_png(
        images,
        &mistakes,
        &format!("Most confident mistakes, {set_name}"),
        &files.mistakes_png,
    )?;
    Ok((c, files))
}

/// A finished run as [`write_run_report`] shows it.
pub struct FinishedRun<'a> {
    /// The data it trained on.
    pub data: &'a Dataset,
    /// Its record.
    pub run: &'a RunRecord,
    /// Every epoch's figures.
    pub history: &'a History,
    /// Why it stopped early, if it did.
    pub stopped: Option<&'a str>,
    /// The kept checkpoint's predictions on the test set (or the validation set without one).
    pub scored: &'a Predictions,
    /// The kept checkpoint's architecture, as its sidecar names it.
    pub architecture: String,
}

/// Writes a finished run's evaluation files, augmentation preview and `report.html` into its
/// directory; returns the report's path.
pub fn write_run_report(f: &FinishedRun) -> Result<PathBuf> {
    let (data, run, history, stopped, p) = (f.data, f.run, f.history, f.stopped, f.scored);
    let out = &run.out;
    let (set, set_name) = match &data.test {
        Some(t) => (t, "test set"),
        None => (&data.val, "validation set"),
    };
    let (_, files) = write_eval(out, p, set, &data.classes, set_name)?;
    let preview_cfg = if run.augment.is_none() {
        AugmentConfig::STANDARD
    } else {
        run.augment
    };
    let preview = out.join("augment_preview.png");
    let rows = one_per_class(&data.train, data.classes.len(), 8);
    augment_preview_png(&data.train, &rows, &preview_cfg, 8, run.seed, &preview)?;

    let best_rec = history.best();
    let mut metrics = Vec::new();
    if data.test.is_some() {
        metrics.push((
            "Test accuracy (kept checkpoint)".to_string(),
            format!("{:.4} ({}/{})", p.accuracy(), p.correct(), p.len()),
        ));
    }
    if let Some(b) = best_rec {
        metrics.push((
            "Best validation accuracy".into(),
            format!("{:.4} (epoch {})", b.val_acc, b.epoch),
        ));
    }
    if let Some(l) = history.0.last() {
        metrics.push((
            "Last epoch".into(),
            format!(
                "{}: loss {:.4}, acc {:.4}, val_loss {:.4}, val_acc {:.4}",
                l.epoch, l.loss, l.acc, l.val_loss, l.val_acc
            ),
        ));
        if let Some(why) = stopped {
            metrics.push(("Early stopping".into(), why.to_string()));
        }
        let secs: f64 = history.0.iter().map(|r| r.seconds).sum();
        metrics.push((
            "Training time".into(),
            format!("{secs:.0} s over {} epochs", history.0.len()),
        ));
    }
    let config = vec![
        ("Data".to_string(), data.source.display().to_string()),
        ("Images".into(), data.sizes()),
        ("Classes".into(), data.classes.join(", ")),
        ("Initial weights".into(), run.init.to_string()),
        ("Epochs".into(), run.epochs.to_string()),
        ("Batch size".into(), run.batch_size.to_string()),
        (
            "Optimizer".into(),
            format!(
                "Adam, lr {}{}, {} schedule{}",
                run.optimizer.lr,
                if run.optimizer.weight_decay > 0.0 {
                    format!(", weight decay {}", run.optimizer.weight_decay)
                } else {
                    String::new()
                },
                run.schedule.describe(),
                run.lr_ratio.map_or(String::new(), |r| format!(
                    ", rates x{r} per block towards the input"
                )) + &run
                    .label_smoothing
                    .map_or(String::new(), |a| format!(", label smoothing {a}"))
            ),
        ),
        (
            "Batch-norm statistics".into(),
            if run.precise_bn {
                "recomputed after every epoch (PreciseBN)".into()
            } else {
                "momentum averages".to_string()
            },
        ),
        (
            "Frozen body".into(),
            match run.freeze_epochs {
                0 => "no".into(),
                n => format!("the first {n} epoch(s) train only the classifier head"),
            },
        ),
        (
            "Early stopping".into(),
            run.patience.map_or("off".into(), |p| {
                format!("after {p} epoch(s) without a better validation accuracy")
            }),
        ),
        ("Augmentation".into(), run.augment_description()),
        (
            "Unlabelled pool".into(),
            run.unlabeled.as_ref().map_or("none".into(), |u| {
                format!(
                    "{} ({} images): {}",
                    u.path.display(),
                    u.count.map_or("?".into(), |c| c.to_string()),
                    u.describe()
                )
            }),
        ),
        ("Seed".into(), run.seed.to_string()),
        (
            "Computed on".into(),
            format!(
                "{:?}, {} multiplies, {} threads",
                run.device,
                run.precision,
                run.threads.map_or("?".into(), |t| t.to_string())
            ),
        ),
        (
            "Model".into(),
            format!("{} ({} classes)", f.architecture, data.classes.len()),
        ),
    ];
    let mut figures = vec![Figure {
        title: "Training curves".into(),
        caption: if run.unlabeled.is_some() {
            "Accuracy and cross-entropy loss per epoch, on the labelled training batches (as augmented) and on the validation set; then the share of unlabelled pool images that got a pseudo-label, and, when the pool came with labels, how many of those pseudo-labels were right.".into()
        } else {
            "Accuracy and cross-entropy loss per epoch, on the training batches (as augmented) and on the validation set.".into()
        },
        png: out.join("curves.png"),
    }];
    figures.push(Figure {
        title: format!("Confusion matrix ({set_name})"),
        caption: "Rows are the true classes, columns the predicted ones. Left: counts; right: each row divided by its total, so the diagonal is each class's recall.".into(),
        png: files.confusion_png.clone(),
    });
    figures.push(Figure {
        title: format!("Most confident mistakes ({set_name})"),
        caption: "The misclassified images the model was surest about: true class, predicted class and the probability it gave.".into(),
        png: files.mistakes_png.clone(),
    });
    figures.push(Figure {
        title: "Augmentation preview".into(),
        caption: if run.augment.is_none() {
            format!("Augmentation was off in this run; this shows what {preview_cfg} would do to one training image per class.")
        } else {
            "One training image per class: the original, then fresh random augmentations with the parameters drawn for each.".into()
        },
        png: preview,
    });
    let report = out.join("report.html");
    html::write(
        &report,
        &Report {
            title: format!("warmstart report: {}", out.display()),
            metrics,
            config,
            scores: Confusion::new(p, &data.classes).scores(),
            scored_on: set_name.into(),
            figures,
        },
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PIXELS;

    #[test]
    fn per_class_csv_keeps_any_class_name_intact() {
        let names: Vec<String> = ["plain", "a, b", "say \"hi\"", "two\nlines"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let k = names.len();
        let images = Images::new(vec![0; k * PIXELS], (0..k as u32).collect()).unwrap();
        let p = Predictions {
            probs: (0..k * k)
                .map(|i| if i % (k + 1) == 0 { 0.9 } else { 0.1 / 3.0 })
                .collect(),
            classes: k,
            labels: (0..k as u32).collect(),
        };
        let d = tempfile::tempdir().unwrap();
        let (_, files) = write_eval(d.path(), &p, &images, &names, "test set").unwrap();
        let mut r = csv::Reader::from_path(&files.per_class_csv).unwrap();
        let read: Vec<String> = r.records().map(|rec| rec.unwrap()[0].to_string()).collect();
        assert_eq!(read, names);
    }
}

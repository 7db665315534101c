//! `warmstart audit`: which labels of a dataset are likely wrong, which images are duplicated
//! (within the labelled images, and leaked into the test set) and which look like nothing else.
//!
//! Every labelled image (training and validation parts together) is predicted by a model that
//! never saw it: stratified K-fold cross-validation with the training recipe ([`folds`]). Those
//! out-of-fold probabilities go through confident learning ([`confident`]); the pixels alone give
//! the duplicates and outliers ([`similar`]). The results are written as CSV files and one
//! self-contained page ([`page`]); nothing is written until every fold has trained.

pub mod confident;
pub mod folds;
pub mod page;
pub mod similar;
mod write;

use crate::checkpoint;
use crate::data::Dataset;
use crate::data::labelled::{self, Labelled};
use crate::device;
use crate::error::{Error, Result};
use crate::eval::predict_set_cancellable;
use crate::fsutil;
use crate::history::History;
use crate::options::TrainRequest;
use crate::plan;
use crate::progress::{Event, Progress, WarningsOnly};
use crate::record::Stage;
use crate::train;
use crate::unlabeled::PoolOptions;
use std::path::PathBuf;

pub use confident::{Findings, Issue};
pub use similar::{Pair, Similarity};

/// Folds when `--folds` is not given.
pub const DEFAULT_FOLDS: usize = 5;
/// Epochs of each fold's training when `--epochs` is not given: the training recipe's schedule,
/// shortened so that an audit takes minutes. With 10, the Fashion-MNIST folds' models were
/// weaker and found fewer flipped labels (docs/labelling.md).
pub const DEFAULT_EPOCHS: usize = 30;
/// Where the audit writes when `--out` is not given.
pub const DEFAULT_OUT: &str = "runs/audit";

/// The training flags an audit honours; any other is refused by name (so a flag added to the
/// training options is refused until an audit is made to use it). It checks every labelled
/// image, the folds are its validation, each fold keeps its last epoch and trains on the labels
/// alone.
pub const USED: [&str; 21] = [
    "--data",
    "--out",
    "--epochs",
    "--batch-size",
    "--lr",
    "--seed",
    "--augment",
    "--init",
    "--new-head",
    "--invert",
    "--fit",
    "--schedule",
    "--warmup",
    "--patience",
    "--freeze-epochs",
    "--clean-epochs",
    "--lr-ratio",
    "--precise-bn",
    "--weight-decay",
    "--label-smoothing",
    "--overwrite",
];

/// Why an audit refuses `flag`.
fn why_refused(flag: &str) -> &'static str {
    match flag {
        "--limit" | "--test-limit" => "it checks every labelled image",
        "--val-split" => "each fold is the validation set of the others",
        "--keep" => "each fold's model is its last epoch",
        f if PoolOptions::flags().iter().any(|p| p == f) => {
            "its folds train on the labelled images only"
        }
        _ => "its folds do not use it",
    }
}

/// `warmstart audit`: the training flags its folds train with, and how many folds.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuditRequest {
    /// The data, where the audit writes (`--out`, default runs/audit), and how each fold trains
    /// (the `train` recipe, with 30 epochs unless `--epochs` is given).
    #[command(flatten)]
    pub train: TrainRequest,
    /// Folds of the cross-validation: each image is predicted by a model trained on the other
    /// folds [default: 5].
    #[arg(long)]
    pub folds: Option<usize>,
}

/// What an audit found.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The audited images and where they came from.
    pub data: Labelled,
    /// Out-of-fold probabilities, `classes` per image.
    pub probs: Vec<f32>,
    /// The fold of each image.
    pub folds: Vec<usize>,
    /// Likely wrong labels and the per-class estimates.
    pub findings: Findings,
    /// Duplicates and outliers.
    pub similarity: Similarity,
    /// Where it wrote its files.
    pub out: PathBuf,
}

impl Audit {
    /// The share of images whose likeliest out-of-fold class is their given label.
    pub fn agreement(&self) -> f64 {
        let c = self.data.classes.len();
        let labels = self.data.images.labels();
        let agree = (0..labels.len())
            .filter(|&i| crate::eval::argmax(&self.probs[i * c..(i + 1) * c]) as u32 == labels[i])
            .count();
        agree as f64 / labels.len().max(1) as f64
    }
}

/// Refuses the flags an audit cannot use, naming them and why.
fn check_flags(req: &AuditRequest) -> Result<usize> {
    let given = req.train.options.given();
    let refused: Vec<String> = given
        .iter()
        .filter(|f| !USED.contains(&f.as_str()))
        .map(|f| format!("{f} ({})", why_refused(f)))
        .collect();
    if !refused.is_empty() {
        return Err(Error::invalid(format!(
            "audit does not take {}",
            refused.join(", ")
        )));
    }
    let folds = req.folds.unwrap_or(DEFAULT_FOLDS);
    if folds < 2 {
        return Err(Error::invalid(format!(
            "--folds must be at least 2 (each image is predicted by a model trained on the other folds), not {folds}"
        )));
    }
    Ok(folds)
}

/// The files an audit writes into its directory.
pub const FILES: [&str; 6] = [
    "label_issues.csv",
    "classes.csv",
    "duplicates.csv",
    "outliers.csv",
    "out_of_fold.csv",
    "audit.html",
];

/// Refuses an output directory that holds a training run or an earlier audit, unless
/// `overwrite`.
fn check_out(out: &std::path::Path, overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    train::rundir::check_out_dir(out, Stage::Train, false)?;
    let found: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if !found.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds an earlier audit ({}): pass --overwrite to replace it, or choose another --out",
            out.display(),
            found.join(", ")
        )));
    }
    Ok(())
}

/// What a fold's training does after each epoch: nothing beyond reporting.
struct FoldObserver<'a>(WarningsOnly<'a>);

impl train::Observer for FoldObserver<'_> {
    fn progress(&mut self) -> &mut dyn Progress {
        &mut self.0
    }
    fn epoch_end(&mut self, _: &History, _: usize) -> Result<()> {
        Ok(())
    }
}

fn info(progress: &mut dyn Progress, text: impl std::fmt::Display) {
    progress.event(Event::Info(text.to_string()));
}

/// Audits the labelled images of the request's data: trains the folds, finds likely wrong
/// labels, duplicates and outliers, and writes them into the output directory.
pub fn run(req: &AuditRequest, progress: &mut dyn Progress) -> Result<Audit> {
    let k = check_flags(req)?;
    let mut request = req.train.clone();
    let o = &mut request.options;
    o.epochs = Some(o.epochs.unwrap_or(DEFAULT_EPOCHS));
    o.out = Some(o.out.take().unwrap_or_else(|| PathBuf::from(DEFAULT_OUT)));
    let plan = plan::resolve(Stage::Train, &request)?;
    if let Some(note) = &plan.start_note {
        info(progress, note);
    }
    let out = plan.record.out.clone();
    let _lock = fsutil::lock_dir(&out)?;
    check_out(&out, request.options.overwrite)?;
    let record = &plan.record;
    let mut data = labelled::load(&record.data.path, record.data.invert, record.data.fit)?;
    for w in std::mem::take(&mut data.warnings) {
        progress.event(Event::Warning(w));
    }
    let classes = data.classes.len();
    if k > data.images.len() {
        return Err(Error::invalid(format!(
            "--folds {k} is more than the {} labelled images of {}: each fold must hold at least \
             one image",
            data.images.len(),
            record.data.path.display()
        )));
    }
    let counts = data.images.class_counts(classes);
    if let Some(c) = (0..classes).find(|&c| counts[c] < k) {
        progress.event(Event::Warning(format!(
            "class {:?} has {} image(s), fewer than the {k} folds: some folds' models never see it, \
             so its labels look doubtful",
            data.classes[c], counts[c]
        )));
    }
    info(
        progress,
        format_args!(
            "Audit: {} — {} labelled images, {classes} classes; {k}-fold cross-validation, each \
             fold {} epochs from {} -> {}",
            record.data.path.display(),
            data.images.len(),
            record.epochs,
            record.init,
            out.display()
        ),
    );
    let dev = device::make(record.device, record.seed)?;
    let folds = folds::assign(data.images.labels(), classes, k, record.seed);
    let mut probs = vec![0f32; data.images.len() * classes];
    progress.event(Event::RunsStarted {
        total: k,
        what: "audit",
    });
    for fold in 0..k {
        let (train_idx, held) = folds::split(&folds, fold);
        let fold_data = Dataset {
            classes: data.classes.clone(),
            train: data.images.select(&train_idx),
            val: data.images.select(&held),
            test: None,
            source: record.data.path.clone(),
            val_was_split: false,
            warnings: Vec::new(),
            pool: None,
        };
        let mut fold_plan = plan.clone();
        fold_plan.record.out = out.join("folds").join(format!("fold-{}", fold + 1));
        let (model, _) = train::init::initial_model(&mut fold_plan, &fold_data, &dev)?;
        let mut observer = FoldObserver(WarningsOnly(progress));
        let outcome = train::fit(model, &fold_data, &fold_plan.record, &dev, &mut observer)?;
        train::resume::remove(&fold_plan.record.out)?;
        let (model, _) = checkpoint::load(&train::last_path(&fold_plan.record.out), &dev)?;
        let model = model.with_precision(record.precision);
        let p = predict_set_cancellable(&model, &fold_data.val, &dev)?;
        // The fold's model has done its work: only its history stays (about 10 MB less a fold).
        for f in [
            "best.safetensors",
            "best.json",
            "last.safetensors",
            "last.json",
        ] {
            fsutil::remove_if_exists(&fold_plan.record.out.join(f))?;
        }
        for (r, &i) in held.iter().enumerate() {
            probs[i * classes..(i + 1) * classes].copy_from_slice(p.row(r));
        }
        let seconds: f64 = outcome.history.0.iter().map(|e| e.seconds).sum();
        progress.event(Event::RunDone(format!(
            "fold {}/{k}: trained on {}, predicted {} (their given labels: {:.4} agree) in {seconds:.0} s",
            fold + 1,
            train_idx.len(),
            held.len(),
            p.accuracy()
        )));
    }
    let findings = confident::find(&probs, data.images.labels(), classes);
    let similarity = similar::analyse(&data.images, data.test.as_ref());
    let audit = Audit {
        data,
        probs,
        folds,
        findings,
        similarity,
        out,
    };
    write::all(&audit)?;
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TrainOptions;

    /// Every flag an audit honours is a training flag (a renamed one cannot quietly drop out),
    /// and every pool flag, a future one included, is refused with the reason.
    #[test]
    fn the_allow_list_names_training_flags_and_refuses_the_pool() {
        let all: Vec<String> = <TrainOptions as clap::Args>::augment_args(clap::Command::new("o"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        for f in USED {
            assert!(all.iter().any(|a| a == f), "{f} is not a training flag");
        }
        for f in PoolOptions::flags() {
            assert!(!USED.contains(&f.as_str()), "{f}");
            assert_eq!(
                why_refused(&f),
                "its folds train on the labelled images only"
            );
        }
        let req = AuditRequest {
            train: TrainRequest {
                options: TrainOptions {
                    limit: Some(5),
                    pool: PoolOptions {
                        unlabeled_after: Some(2),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
            folds: None,
        };
        let e = check_flags(&req).unwrap_err().to_string();
        assert!(
            e.contains("--limit (it checks every labelled image)")
                && e.contains("--unlabeled-after (its folds train on the labelled images only)"),
            "{e}"
        );
    }
}

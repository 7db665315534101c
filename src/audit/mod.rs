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
pub mod held_out;
pub mod page;
pub mod similar;
mod write;

use crate::checkpoint;
use crate::cluster::{Job, Task};
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
    /// Train only fold K (1 to --folds) and keep its out-of-fold predictions in
    /// OUT/folds/fold-K/, writing no results: what each task of `--on slurm` and each line of
    /// `--on list` runs. The same command without it reads the finished folds back.
    #[arg(long, value_name = "K")]
    pub fold: Option<usize>,
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

/// An audit ready to train its folds: the resolved plan, the images and their folds.
struct Prepared {
    k: usize,
    plan: plan::TrainPlan,
    request: TrainRequest,
    data: Labelled,
    folds: Vec<usize>,
    out: PathBuf,
}

impl Prepared {
    /// Checks the flags and the output directory, loads the images and deals them into folds.
    fn new(req: &AuditRequest, progress: &mut dyn Progress) -> Result<Self> {
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
        check_out(&out, request.options.overwrite)?;
        let record = &plan.record;
        let mut data = labelled::load(&record.data.path, record.data.invert, record.data.fit)?;
        for w in std::mem::take(&mut data.warnings) {
            progress.event(Event::Warning(w));
        }
        if k > data.images.len() {
            return Err(Error::invalid(format!(
                "--folds {k} is more than the {} labelled images of {}: each fold must hold at                  least one image",
                data.images.len(),
                record.data.path.display()
            )));
        }
        if let Some(f) = req.fold
            && !(1..=k).contains(&f)
        {
            return Err(Error::invalid(format!(
                "--fold {f} is not a fold of this audit: give 1 to {k} (--folds {k})"
            )));
        }
        let folds = folds::assign(data.images.labels(), data.classes.len(), k, record.seed);
        Ok(Prepared {
            k,
            plan,
            request,
            data,
            folds,
            out,
        })
    }

    fn fold_dir(&self, fold: usize) -> PathBuf {
        self.out.join("folds").join(format!("fold-{}", fold + 1))
    }

    /// Fold `fold`'s data: the other folds train, it is the validation set.
    fn fold_data(&self, fold: usize) -> (Dataset, Vec<usize>) {
        let (train_idx, held) = folds::split(&self.folds, fold);
        let d = Dataset {
            classes: self.data.classes.clone(),
            train: self.data.images.select(&train_idx),
            val: self.data.images.select(&held),
            test: None,
            source: self.plan.record.data.path.clone(),
            val_was_split: false,
            warnings: Vec::new(),
            pool: None,
        };
        (d, held)
    }

    /// What fold `fold`'s file must say to be read back (its predictions left empty).
    fn wanted(&self, d: &Dataset) -> held_out::HeldOut {
        held_out::HeldOut {
            settings: crate::compare::settings(&self.request),
            folds: self.k,
            fingerprint: crate::record::Fingerprint::of(d),
            probs: vec![0.0; d.val.len() * d.classes.len()],
            seconds: 0.0,
        }
    }

    /// Fold `fold`'s out-of-fold predictions: read back when its folder holds them, trained
    /// (from the run's seed, as a lone fold would be) and kept otherwise.
    fn fold(
        &self,
        fold: usize,
        dev: &burn::prelude::Device,
        progress: &mut dyn Progress,
    ) -> Result<held_out::HeldOut> {
        let (fold_data, held) = self.fold_data(fold);
        let dir = self.fold_dir(fold);
        let _lock = fsutil::lock_dir(&dir)?;
        let want = self.wanted(&fold_data);
        let overwrite = self.request.options.overwrite;
        if let Some(h) = held_out::read(&dir, &want, overwrite)? {
            return Ok(h);
        }
        let record = &self.plan.record;
        let mut fold_plan = self.plan.clone();
        fold_plan.record.out = dir.clone();
        // Every fold starts from the run's seed, so a fold trained alone (a Slurm task) has the
        // bits of the same fold trained after the others.
        dev.seed(record.seed);
        let (model, _) = train::init::initial_model(&mut fold_plan, &fold_data, dev)?;
        let mut observer = FoldObserver(WarningsOnly(progress));
        let outcome = train::fit(model, &fold_data, &fold_plan.record, dev, &mut observer)?;
        train::resume::remove(&dir)?;
        let (model, _) = checkpoint::load(&train::last_path(&dir), dev)?;
        let model = model.with_precision(record.precision);
        let p = predict_set_cancellable(&model, &fold_data.val, dev)?;
        // The fold's model has done its work: only its history and predictions stay (about 10
        // MB less a fold).
        for f in [
            "best.safetensors",
            "best.json",
            "last.safetensors",
            "last.json",
        ] {
            fsutil::remove_if_exists(&dir.join(f))?;
        }
        let classes = self.data.classes.len();
        let mut probs = Vec::with_capacity(held.len() * classes);
        for r in 0..held.len() {
            probs.extend_from_slice(p.row(r));
        }
        let h = held_out::HeldOut {
            probs,
            seconds: outcome.history.0.iter().map(|e| e.seconds).sum(),
            ..want
        };
        held_out::write(&dir, &h)?;
        Ok(h)
    }

    /// `fold 2/5: trained on 29, predicted 7 (their given labels: 0.8571 agree) in 3 s`.
    fn line(&self, fold: usize, h: &held_out::HeldOut) -> String {
        let (train_idx, held) = folds::split(&self.folds, fold);
        let c = self.data.classes.len();
        let labels = self.data.images.labels();
        let agree = held
            .iter()
            .enumerate()
            .filter(|&(r, &i)| {
                crate::eval::argmax(&h.probs[r * c..(r + 1) * c]) as u32 == labels[i]
            })
            .count();
        format!(
            "fold {}/{}: trained on {}, predicted {} (their given labels: {:.4} agree) in {:.0} s",
            fold + 1,
            self.k,
            train_idx.len(),
            held.len(),
            agree as f64 / held.len().max(1) as f64,
            h.seconds
        )
    }
}

/// Audits the labelled images of the request's data: trains the folds (or reads back those
/// trained before), finds likely wrong labels, duplicates and outliers, and writes them into the
/// output directory. With `--fold K`, trains that fold alone and returns `None`.
pub fn run(req: &AuditRequest, progress: &mut dyn Progress) -> Result<Option<Audit>> {
    let p = Prepared::new(req, progress)?;
    let record = &p.plan.record;
    let dev = device::make(record.device, record.seed)?;
    if let Some(f) = req.fold {
        let h = p.fold(f - 1, &dev, progress)?;
        progress.event(Event::RunDone(p.line(f - 1, &h)));
        return Ok(None);
    }
    let _lock = fsutil::lock_dir(&p.out)?;
    let (k, classes) = (p.k, p.data.classes.len());
    let counts = p.data.images.class_counts(classes);
    if let Some(c) = (0..classes).find(|&c| counts[c] < k) {
        progress.event(Event::Warning(format!(
            "class {:?} has {} image(s), fewer than the {k} folds: some folds' models never see it, \
             so its labels look doubtful",
            p.data.classes[c], counts[c]
        )));
    }
    info(
        progress,
        format_args!(
            "Audit: {} — {} labelled images, {classes} classes; {k}-fold cross-validation, each \
             fold {} epochs from {} -> {}",
            record.data.path.display(),
            p.data.images.len(),
            record.epochs,
            record.init,
            p.out.display()
        ),
    );
    let mut probs = vec![0f32; p.data.images.len() * classes];
    progress.event(Event::RunsStarted {
        total: k,
        what: "audit",
    });
    for fold in 0..k {
        let h = p.fold(fold, &dev, progress)?;
        let (_, held) = folds::split(&p.folds, fold);
        for (r, &i) in held.iter().enumerate() {
            probs[i * classes..(i + 1) * classes]
                .copy_from_slice(&h.probs[r * classes..(r + 1) * classes]);
        }
        progress.event(Event::RunDone(p.line(fold, &h)));
    }
    let findings = confident::find(&probs, p.data.images.labels(), classes);
    let similarity = similar::analyse(&p.data.images, p.data.test.as_ref());
    let audit = Audit {
        data: p.data,
        probs,
        folds: p.folds,
        findings,
        similarity,
        out: p.out,
    };
    write::all(&audit)?;
    Ok(Some(audit))
}

/// The folds not trained yet, for another engine (`--on slurm`, `--on list`).
pub fn job(req: &AuditRequest, progress: &mut dyn Progress) -> Result<Job> {
    if req.fold.is_some() {
        return Err(Error::invalid(
            "--fold trains one fold here: give it without --on",
        ));
    }
    let p = Prepared::new(req, progress)?;
    let mut tasks = Vec::new();
    for fold in 0..p.k {
        let (d, _) = p.fold_data(fold);
        let want = p.wanted(&d);
        if held_out::read(&p.fold_dir(fold), &want, p.request.options.overwrite)?.is_some() {
            continue;
        }
        tasks.push(Task {
            name: format!("fold {}", fold + 1),
            select: vec!["--fold".into(), (fold + 1).to_string()],
            images: (d.train.len() * p.plan.record.epochs) as u64,
            budget_s: None,
        });
    }
    Ok(Job {
        what: "audit",
        out: p.out,
        tasks,
        resident_images: (p.data.images.len() + p.data.test.as_ref().map_or(0, |t| t.len())) as u64,
    })
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
            fold: None,
        };
        let e = check_flags(&req).unwrap_err().to_string();
        assert!(
            e.contains("--limit (it checks every labelled image)")
                && e.contains("--unlabeled-after (its folds train on the labelled images only)"),
            "{e}"
        );
    }
}

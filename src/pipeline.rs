//! The commands that train and evaluate, end to end: resolve the request ([`crate::plan`]), load
//! the data, build or restore the network, train, report. The binary parses arguments into the
//! requests and calls these.

use crate::augment::AugmentConfig;
use crate::bundled;
use crate::checkpoint;
use crate::data::{self, Dataset, LoadOptions, Split};
use crate::device;
use crate::error::{Error, Result};
use crate::eval::{Confusion, Predictions, predict_set_cancellable, with_tta};
use crate::fsutil;
use crate::history::History;
use crate::options::{InitRequest, RuntimeArgs, TrainOptions, TrainRequest};
use crate::plan;
use crate::record::{RunRecord, Stage};
use crate::report;
use crate::report::run::{finish_run, write_eval};
use crate::train;
use burn::prelude::Device;
use std::path::{Path, PathBuf};

/// What a finished training stage leaves for the caller.
pub struct StageResult {
    /// The run directory.
    pub out: PathBuf,
    /// The data it trained on.
    pub data: Dataset,
    /// The best checkpoint's predictions on the test set, when the data has one.
    pub test: Option<Predictions>,
    /// Every epoch's figures.
    pub history: History,
}

/// Loads a dataset and prints what it holds.
pub fn load_data(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let d = data::load(path, opts)?;
    println!(
        "Data: {} — {} classes, {}",
        path.display(),
        d.classes.len(),
        d.sizes()
    );
    Ok(d)
}

/// How much a training stage prints on standard output (warnings always go to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// The data, the initial weights, a progress bar and a Keras-style line per epoch, the
    /// results and the files written.
    Full,
    /// Nothing: the caller reports (as `compare` does, one line per run).
    Quiet,
}

/// What a training stage shows after each epoch: the Keras-style line, and `curves.png` redrawn.
struct StageObserver {
    curves: PathBuf,
    verbosity: Verbosity,
}

impl train::Observer for StageObserver {
    fn batch_bar(&self) -> bool {
        self.verbosity == Verbosity::Full
    }

    fn epoch_end(&mut self, history: &History, epochs: usize) -> Result<()> {
        if let (Verbosity::Full, Some(last)) = (self.verbosity, history.0.last()) {
            println!("{}", last.keras_line(epochs));
        }
        report::plot::curves(history, &self.curves)
    }
}

impl Verbosity {
    fn observer(self, out: &Path) -> StageObserver {
        StageObserver {
            curves: out.join("curves.png"),
            verbosity: self,
        }
    }

    fn say(self, text: impl std::fmt::Display) {
        if self == Verbosity::Full {
            println!("{text}");
        }
    }

    fn load(self, path: &Path, opts: &LoadOptions) -> Result<Dataset> {
        match self {
            Verbosity::Full => load_data(path, opts),
            Verbosity::Quiet => data::load(path, opts),
        }
    }
}

/// The files a training run writes into its directory (besides `eval-*/` folders).
pub const RUN_FILES: [&str; 14] = [
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "last.json",
    "history.csv",
    "curves.png",
    "confusion.png",
    "mistakes.png",
    "augment_preview.png",
    "per_class.csv",
    "per_class.json",
    "report.html",
    train::resume::FILE,
    // Written by `compare` when a run finishes: a new run in the directory is not that run.
    "result.json",
];

/// What a run directory already holds: an interrupted run (its resume state) or another run's
/// files. A new run may only start in it with `--overwrite`.
fn check_out_dir(dir: &Path, stage: Stage, overwrite: bool) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = RUN_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        found.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("eval-"))
        }));
    }
    if found.is_empty() || overwrite {
        return Ok(found);
    }
    let command = stage.command();
    if dir.join(train::resume::FILE).exists() {
        return Err(Error::invalid(format!(
            "{} holds an interrupted run: continue it with `warmstart {command} --resume {}`, or \
             pass --overwrite to discard it and start a new run there",
            dir.display(),
            dir.display()
        )));
    }
    let names: Vec<String> = found
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(Error::invalid(format!(
        "{} holds another run's results ({}): pass --overwrite to replace them, or choose another --out",
        dir.display(),
        names.join(", ")
    )))
}

/// Removes an older run's files before a new run writes its own, so none is left beside them.
fn clear(found: &[PathBuf]) -> Result<()> {
    for p in found {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        r.map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

/// `pretrain` or `train`: a new run, or with `resume` the interrupted run in that directory. The
/// run directory is locked while the run writes into it; a new run refuses a directory holding
/// another run's files unless `req.overwrite`; a finished run drops its resume state.
pub fn train_stage(
    stage: Stage,
    req: &TrainRequest,
    resume: Option<&Path>,
    verbosity: Verbosity,
) -> Result<StageResult> {
    if let Some(dir) = resume {
        // Before locking, which would create a mistyped directory.
        train::resume::check_exists(dir)?;
        let _lock = fsutil::lock_dir(dir)?;
        let res = resume_stage(dir, req, verbosity)?;
        remove_resume_state(dir)?;
        return Ok(res);
    }
    let mut plan = plan::resolve(stage, req)?;
    let _lock = fsutil::lock_dir(&plan.record.out)?;
    let old = check_out_dir(&plan.record.out, stage, req.options.overwrite)?;
    let dev = device::make(plan.record.device, plan.record.seed)?;
    let data = verbosity.load(&plan.record.data.path, &plan.record.load_options())?;
    let (model, init) = train::init::initial_model(&mut plan, &data, &dev)?;
    // Only now: `--init` may have read a checkpoint from the directory being overwritten.
    clear(&old)?;
    verbosity.say(init);
    let run = plan.record;
    verbosity.say(format_args!(
        "Training {} epochs, batch {}, Adam lr {} ({} schedule), augmentation {}, seed {}, {} \
         multiplies -> {}",
        run.epochs,
        run.batch_size,
        run.optimizer.lr,
        run.schedule.describe(),
        run.augment_description(),
        run.seed,
        run.precision,
        run.out.display()
    ));
    let outcome = train::fit(model, &data, &run, &dev, &mut verbosity.observer(&run.out))?;
    let res = finish_stage(outcome, data, &run, &dev, verbosity)?;
    remove_resume_state(&run.out)?;
    Ok(res)
}

/// A finished run has nothing to resume: its resume state (~19 MB) goes.
fn remove_resume_state(dir: &Path) -> Result<()> {
    let p = train::resume::path(dir);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
        _ => Ok(()),
    }
}

fn resume_stage(dir: &Path, req: &TrainRequest, verbosity: Verbosity) -> Result<StageResult> {
    let mut saved = train::resume::load(dir)?;
    let done = saved.state.epoch;
    let ignored = plan::resume(&mut saved.state.record, dir, done, req)?;
    if !ignored.is_empty() {
        eprintln!(
            "warning: --resume continues the run as it was set up; ignoring {} (only --epochs \
             and runtime flags such as --threads apply)",
            ignored.join(", ")
        );
    }
    let run = saved.state.record.clone();
    let dev = device::make(req.runtime.device, run.seed)?;
    let data = verbosity.load(&run.data.path, &run.load_options())?;
    plan::check_fingerprint(&run, &data)?;
    verbosity.say(format_args!(
        "Resuming {} at epoch {}/{}, batch {}",
        run.out.display(),
        saved.state.epoch + 1,
        run.epochs,
        saved.state.batch
    ));
    let outcome = train::resume(saved, &data, &dev, &mut verbosity.observer(&run.out))?;
    finish_stage(outcome, data, &run, &dev, verbosity)
}

/// Reports the best epoch and the test accuracy of the best checkpoint, and writes the report.
fn finish_stage(
    outcome: train::Outcome,
    data: Dataset,
    run: &RunRecord,
    dev: &Device,
    verbosity: Verbosity,
) -> Result<StageResult> {
    if let Some(best) = outcome.history.best() {
        verbosity.say(format_args!(
            "Best validation accuracy {:.4} at epoch {} -> {}",
            best.val_acc,
            best.epoch,
            outcome.best_path.display()
        ));
    }
    if let Some(why) = &outcome.stopped {
        verbosity.say(format_args!("{}{}", why[..1].to_uppercase(), &why[1..]));
    }
    let summary = finish_run(
        &data,
        run,
        &outcome.history,
        outcome.stopped.as_deref(),
        &outcome.best_path,
        dev,
    )?;
    match &summary.test {
        Some(p) => verbosity.say(format_args!(
            "Test accuracy: {:.4} ({}/{})",
            p.accuracy(),
            p.correct(),
            p.len()
        )),
        None => verbosity.say(format_args!(
            "No test set in {}: no test accuracy (the report scores the validation set).",
            data.source.display()
        )),
    }
    verbosity.say(format_args!(
        "Wrote {}: checkpoints, history.csv, curves.png, confusion.png, mistakes.png, \
         augment_preview.png, per_class.csv/json and report.html ({})",
        run.out.display(),
        summary.report.display()
    ));
    Ok(StageResult {
        out: run.out.clone(),
        data,
        test: summary.test,
        history: outcome.history,
    })
}

/// `warmstart run`: the whole homework on the bundled data; `None` takes each stage's default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunRequest {
    /// Output directory: pretrain/ and fashion-1k/ go inside.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Pretraining epochs on MNIST [default: 15, as `pretrain`].
    #[arg(long)]
    pub pretrain_epochs: Option<usize>,
    /// Training epochs on fashion-1k [default: 100, as `train`].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Random seed: validation split, shuffling, augmentation, initial weights and dropout
    /// [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N training images of each stage (for quick tries).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Pretrain again even if OUT/pretrain holds a checkpoint.
    #[arg(long)]
    pub fresh: bool,
    /// Where and how it computes.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Pretrains on the bundled MNIST (reusing `out/pretrain` unless `fresh`), trains fashion-1k from
/// it, and prints the test confusion matrix.
pub fn run(req: &RunRequest) -> Result<()> {
    for name in ["mnist", "fashion-1k"] {
        let dir = bundled::dir(name);
        bundled::verify(&dir).map_err(|e| {
            Error::invalid(format!(
                "bundled dataset {} is not intact: {e}",
                dir.display()
            ))
        })?;
    }
    let pre_out = req.out.join("pretrain");
    let stage = |data: &str, out: PathBuf, epochs| TrainRequest {
        options: TrainOptions {
            data: Some(bundled::dir(data)),
            out: Some(out),
            epochs,
            seed: req.seed,
            limit: req.limit,
            test_limit: req.test_limit,
            // `run` owns these directories: running it again replaces what it wrote before.
            overwrite: true,
            ..Default::default()
        },
        runtime: req.runtime,
    };
    let best = train::best_path(&pre_out);
    if !req.fresh && best.is_file() && checkpoint::read_meta(&best).is_ok() {
        println!(
            "== Stage 1: reusing the pretrained checkpoint {} (pass --fresh to pretrain again)",
            best.display()
        );
    } else {
        println!("== Stage 1: pretraining on MNIST");
        let pre = stage("mnist", pre_out.clone(), req.pretrain_epochs);
        train_stage(Stage::Pretrain, &pre, None, Verbosity::Full)?;
    }
    println!("\n== Stage 2: training fashion-1k from the pretrained weights");
    let mut t = stage("fashion-1k", req.out.join("fashion-1k"), req.epochs);
    t.options.init = Some(InitRequest::From(pre_out));
    let res = train_stage(Stage::Train, &t, None, Verbosity::Full)?;
    if let Some(p) = &res.test {
        let c = Confusion::new(p, &res.data.classes);
        println!(
            "\n== Evaluation of {} on the test set\n{}",
            res.out.display(),
            c.render()
        );
    }
    println!(
        "Open {} in a browser for the curves, confusion matrix, mistakes and augmentation preview.",
        res.out.join("report.html").display()
    );
    Ok(())
}

/// `warmstart eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalRequest {
    /// Checkpoint: a .safetensors file or a run directory (uses its best.safetensors).
    #[arg(long, default_value = "runs/train")]
    pub model: PathBuf,
    /// Dataset to evaluate on [default: the data the checkpoint was trained on].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which part of the dataset.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where to write confusion.png, mistakes.png and per_class.{csv,json} [default: eval-SPLIT/ beside the model].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Test-time augmentation: also average the predictions over the original and N augmented copies.
    #[arg(long, default_value_t = 0)]
    pub tta: usize,
    /// Augmentation for --tta [default: the one the model was trained with, or rotation=10,shift=0.1,zoom=0.1].
    #[arg(long)]
    pub augment: Option<AugmentConfig>,
    /// Where and how it computes.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Scores a checkpoint on a part of a dataset, prints accuracy, loss and the confusion matrix,
/// and writes the evaluation files.
pub fn eval(req: &EvalRequest) -> Result<()> {
    if req.limit == Some(0) {
        return Err(Error::invalid(
            "--limit must be at least 1 (leave it out to score every image)",
        ));
    }
    let plan = plan::eval(&req.model, req.data.as_deref())?;
    let record = &plan.meta.training;
    let seed = record.seed;
    let dev = device::make(req.runtime.device, seed)?;
    let precision = device::resolve_precision(req.runtime.precision, req.runtime.device)?;
    let (model, meta) = checkpoint::load(&plan.weights, &dev)?;
    let model = model.with_precision(precision);
    let d = load_data(&plan.data, &plan.load)?;
    if plan.own_data && plan::check_fingerprint(record, &d).is_err() {
        eprintln!(
            "warning: the data under {} is not what the checkpoint was trained on (its \
             fingerprint changed); the scores are on the data as it is now",
            plan.data.display()
        );
    }
    if let Some(w) = plan::check_classes(&plan.data, &d.classes, &plan.weights, &meta)? {
        eprintln!("warning: {w}");
    }
    let set = d
        .part(req.split)
        .cloned()
        .ok_or_else(|| Error::format(&plan.data, "has no test set; use --split val"))?;
    let set = match req.limit {
        Some(n) => set.truncate(n),
        None => set,
    };
    let split = req.split.name();
    let p = predict_set_cancellable(&model, &set, &dev)?;
    println!(
        "Model: {} ({} classes)",
        plan.weights.display(),
        meta.classes.len()
    );
    println!(
        "Accuracy on {split} ({}): {:.4} ({}/{})",
        plan.data.display(),
        p.accuracy(),
        p.correct(),
        p.len()
    );
    println!("Loss: {:.4}", p.loss());
    let p = if req.tta > 0 {
        let aug = req.augment.unwrap_or(if record.augment.is_none() {
            AugmentConfig::STANDARD
        } else {
            record.augment
        });
        let t = with_tta(p.clone(), &model, &set, &dev, &aug, req.tta, seed)?;
        println!(
            "Accuracy with test-time augmentation (original + {} copies, {aug}): {:.4} ({}/{}), loss {:.4}",
            req.tta,
            t.accuracy(),
            t.correct(),
            t.len(),
            t.loss()
        );
        t
    } else {
        p
    };
    println!();
    // Beside the checkpoint, but apart from the training run's own report files.
    let out = req.out.clone().unwrap_or_else(|| {
        plan.weights
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(format!("eval-{split}"))
    });
    let tta = if req.tta > 0 {
        format!(", TTA {}", req.tta)
    } else {
        String::new()
    };
    let (c, files) = write_eval(&out, &p, &set, &meta.classes, &format!("{split} set{tta}"))?;
    print!("{}", c.render());
    println!(
        "\nWrote {}, {}, {} and {}",
        files.confusion_png.display(),
        files.mistakes_png.display(),
        files.per_class_csv.display(),
        files.per_class_json.display()
    );
    Ok(())
}

/// `warmstart lr-find`: the learning-rate finder on the data and starting weights a `train` with
/// the same flags would use. Writes `lr_find.png` and `lr_find.csv` into `req.out` (default
/// `runs/lr-find`) and returns the suggested rate; writes no checkpoint.
pub fn lr_find(stage: Stage, req: &TrainRequest) -> Result<f64> {
    crate::lrfind::check_flags(&req.options)?;
    let mut req = req.clone();
    req.options.out = Some(
        req.options
            .out
            .unwrap_or_else(|| PathBuf::from("runs/lr-find")),
    );
    let mut plan = plan::resolve(stage, &req)?;
    let dev = device::make(plan.record.device, plan.record.seed)?;
    let data = load_data(&plan.record.data.path, &plan.record.load_options())?;
    let (model, init) = train::init::initial_model(&mut plan, &data, &dev)?;
    let model = model.with_precision(plan.record.precision);
    println!("{init}");
    let run = plan.record;
    println!(
        "Learning-rate finder: batch {}, augmentation {}, rates {:.0e} to {:.0e} over up to {} batches",
        run.batch_size,
        run.augment,
        crate::lrfind::START_LR,
        crate::lrfind::END_LR,
        crate::lrfind::STEPS
    );
    let found = crate::lrfind::run(model, &data, &run, &dev)?;
    fsutil::create_dir(&run.out)?;
    let png = run.out.join("lr_find.png");
    report::plot::lr_find(&found.lrs, &found.losses, found.suggestion, &png)?;
    let mut csv = String::from("lr,smoothed_loss\n");
    for (lr, l) in found.lrs.iter().zip(&found.losses) {
        csv.push_str(&format!("{lr:e},{l:.6}\n"));
    }
    fsutil::write_atomic(&run.out.join("lr_find.csv"), csv.as_bytes())?;
    println!(
        "Suggested learning rate: {:.2e} (the valley of the loss over {} batches)\nWrote {} and lr_find.csv",
        found.suggestion,
        found.lrs.len(),
        png.display()
    );
    Ok(found.suggestion)
}

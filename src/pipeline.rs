//! The commands that train and evaluate, end to end: resolve the request ([`crate::plan`]), load
//! the data, build or restore the network, train, report. The binary parses arguments into the
//! requests, calls these and shows what they report ([`Progress`]) and return.

use crate::augment::AugmentConfig;
use crate::bundled;
use crate::checkpoint;
use crate::data::{self, Dataset, LoadOptions, Split};
use crate::device::{self, DeviceKind};
use crate::error::{Error, Result};
use crate::eval::{Confusion, Predictions, predict_set_cancellable, with_tta};
use crate::fsutil;
use crate::history::History;
use crate::options::{InitRequest, RuntimeArgs, TrainOptions, TrainRequest};
use crate::plan;
use crate::progress::{Event, Progress};
use crate::record::{RunRecord, Stage};
use crate::report;
use crate::report::run::{EvalFiles, FinishedRun, write_eval, write_run_report};
use crate::train;
use burn::prelude::Device;
use std::path::{Path, PathBuf};

/// What a finished training stage leaves for the caller.
pub struct StageResult {
    /// The run directory.
    pub out: PathBuf,
    /// The data it trained on.
    pub data: Dataset,
    /// The kept checkpoint's predictions on the test set, when the data has one.
    pub test: Option<Predictions>,
    /// Every epoch's figures.
    pub history: History,
}

/// Loads a dataset and reports what it holds (and any file it skipped).
pub fn load_data(path: &Path, opts: &LoadOptions, progress: &mut dyn Progress) -> Result<Dataset> {
    let mut d = data::load(path, opts)?;
    for w in std::mem::take(&mut d.warnings) {
        progress.event(Event::Warning(w));
    }
    progress.event(Event::Info(format!(
        "Data: {} — {} classes, {}",
        path.display(),
        d.classes.len(),
        d.sizes()
    )));
    Ok(d)
}

/// What a training stage does after each epoch besides reporting it: `curves.png` redrawn.
struct StageObserver<'a> {
    curves: PathBuf,
    progress: &'a mut dyn Progress,
}

impl train::Observer for StageObserver<'_> {
    fn progress(&mut self) -> &mut dyn Progress {
        self.progress
    }

    fn epoch_end(&mut self, history: &History, _epochs: usize) -> Result<()> {
        report::plot::curves(history, &self.curves)
    }
}

fn info(progress: &mut dyn Progress, text: impl std::fmt::Display) {
    progress.event(Event::Info(text.to_string()));
}

/// The device for `kind` (seeded), with the GPU adapter it runs on reported.
fn device_reported(kind: DeviceKind, seed: u64, progress: &mut dyn Progress) -> Result<Device> {
    let dev = device::make(kind, seed)?;
    if let Some(adapter) = device::describe(kind)? {
        info(progress, format_args!("GPU: {adapter}"));
    }
    Ok(dev)
}

/// What a new run starts from: its device, its data (reported) and its initial network, with
/// what was loaded into it.
fn start(
    plan: &mut plan::TrainPlan,
    progress: &mut dyn Progress,
) -> Result<(Device, Dataset, crate::model::Net, String)> {
    let dev = device_reported(plan.record.device, plan.record.seed, progress)?;
    let mut data = load_data(
        &plan.record.data.path,
        &plan.record.load_options(),
        progress,
    )?;
    if let Some(u) = &mut plan.record.unlabeled {
        let (pool, fingerprint, count) = load_pool(u, &plan.record.data, &data, progress)?;
        u.count = Some(count);
        u.fingerprint = Some(fingerprint);
        data.pool = Some(std::sync::Arc::new(pool));
    }
    let (model, init) = train::init::initial_model(plan, &data, &dev)?;
    Ok((dev, data, model, init))
}

/// The unlabelled pool of a run, prepared as its labelled data is, copies of `labelled`'s images
/// left out (reported); with the fingerprint and size of the pool as read, which a run records.
fn load_pool(
    u: &crate::record::UnlabeledRecord,
    data: &crate::record::DataRecord,
    labelled: &Dataset,
    progress: &mut dyn Progress,
) -> Result<(data::pool::Pool, String, usize)> {
    let mut pool = data::pool::load(&u.path, data.invert, data.fit)?;
    let read = (pool.fingerprint(), pool.len());
    pool.leave_out_copies_of(labelled)?;
    for w in std::mem::take(&mut pool.warnings) {
        progress.event(Event::Warning(w));
    }
    let known = if pool.known_labels.is_some() {
        " (its labels are not trained on; they measure the pseudo-labels)"
    } else {
        ""
    };
    info(
        progress,
        format_args!(
            "Unlabeled: {} — {} images{known}; {}",
            u.path.display(),
            pool.len(),
            u.describe()
        ),
    );
    Ok((pool, read.0, read.1))
}

/// `pretrain` or `train`: a new run, or with `resume` the interrupted run in that directory. The
/// run directory is locked while the run writes into it; a new run refuses a directory holding
/// another run's files unless `req.overwrite`; a finished run drops its resume state.
pub fn train_stage(
    stage: Stage,
    req: &TrainRequest,
    resume: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<StageResult> {
    if let Some(dir) = resume {
        // Before locking, which would create a mistyped directory.
        train::resume::check_exists(dir)?;
        let _lock = fsutil::lock_dir(dir)?;
        let res = resume_stage(dir, req, progress)?;
        train::resume::remove(dir)?;
        return Ok(res);
    }
    let started = std::time::Instant::now();
    let mut plan = plan::resolve(stage, req)?;
    if let Some(note) = &plan.start_note {
        info(progress, note);
    }
    let _lock = fsutil::lock_dir(&plan.record.out)?;
    let old = train::rundir::check_out_dir(&plan.record.out, stage, req.options.overwrite)?;
    let (dev, data, model, init) = start(&mut plan, progress)?;
    // Only now: `--init` may have read a checkpoint from the directory being overwritten.
    train::rundir::clear(&old)?;
    info(progress, init);
    if plan.record.time.is_some() {
        let spent = started.elapsed().as_secs_f64();
        let mut draw = |h: &History, dir: &Path| report::plot::curves(h, &dir.join("curves.png"));
        let timing = train::timing::measure(&data, &plan.record, &dev, spent, &mut draw)?;
        info(
            progress,
            train::timing::fit_to_budget(&mut plan, stage, req, timing)?,
        );
    }
    let run = plan.record;
    info(progress, run.training_line());
    let mut observer = StageObserver {
        curves: run.out.join("curves.png"),
        progress,
    };
    let outcome = train::fit(model, &data, &run, &dev, &mut observer)?;
    let res = finish_stage(outcome, data, &run, &dev, observer.progress)?;
    train::resume::remove(&run.out)?;
    Ok(res)
}

fn resume_stage(
    dir: &Path,
    req: &TrainRequest,
    progress: &mut dyn Progress,
) -> Result<StageResult> {
    let mut saved = train::resume::load(dir)?;
    let done = saved.state.epoch;
    let ignored = plan::resume(&mut saved.state.record, dir, done, req)?;
    if !ignored.is_empty() {
        progress.event(Event::Warning(format!(
            "--resume continues the run as it was set up; ignoring {} (only --epochs, runtime \
             flags such as --threads, and --data or --unlabeled for moved folders apply)",
            ignored.join(", ")
        )));
    }
    let run = saved.state.record.clone();
    let dev = device_reported(req.runtime.device, run.seed, progress)?;
    let mut data = load_data(&run.data.path, &run.load_options(), progress)?;
    run.check_fingerprint(&data)?;
    if let Some(u) = &run.unlabeled {
        let (pool, fingerprint, count) = load_pool(u, &run.data, &data, progress)?;
        if u.fingerprint.as_deref() != Some(fingerprint.as_str()) {
            return Err(Error::format(
                &u.path,
                format!(
                    "the unlabelled pool changed since the run started ({} images then, {count} now): a resumed run must see the same images",
                    u.count.unwrap_or(0),
                ),
            ));
        }
        data.pool = Some(std::sync::Arc::new(pool));
    }
    info(
        progress,
        format_args!(
            "Resuming {} at epoch {}/{}, batch {}",
            run.out.display(),
            saved.state.epoch + 1,
            run.epochs,
            saved.state.batch
        ),
    );
    let mut observer = StageObserver {
        curves: run.out.join("curves.png"),
        progress,
    };
    let outcome = train::resume(saved, &data, &dev, &mut observer)?;
    finish_stage(outcome, data, &run, &dev, observer.progress)
}

/// Evaluates the kept checkpoint (`best.safetensors`) on the test set (or the validation set when
/// there is none), records the test accuracy in its sidecar, writes the report, and reports the
/// results.
fn finish_stage(
    outcome: train::Outcome,
    data: Dataset,
    run: &RunRecord,
    dev: &Device,
    progress: &mut dyn Progress,
) -> Result<StageResult> {
    if let (Some(best), Some(k)) = (outcome.history.best(), outcome.history.kept(run.keep)) {
        let kept = if k.epoch == best.epoch {
            format!(
                "Best validation accuracy {:.4} at epoch {}",
                best.val_acc, best.epoch
            )
        } else {
            format!(
                "Kept epoch {} (validation accuracy {:.4}, loss {:.4}; the best accuracy was {:.4} at epoch {}, loss {:.4})",
                k.epoch, k.val_acc, k.val_loss, best.val_acc, best.epoch, best.val_loss
            )
        };
        info(
            progress,
            format_args!("{kept} -> {}", outcome.best_path.display()),
        );
    }
    if let Some(why) = &outcome.stopped {
        info(
            progress,
            format_args!("{}{}", why[..1].to_uppercase(), &why[1..]),
        );
    }
    let (model, meta) = checkpoint::load(&outcome.best_path, dev)?;
    let model = model.with_precision(run.precision);
    let scored = predict_set_cancellable(&model, data.test.as_ref().unwrap_or(&data.val), dev)?;
    if data.test.is_some() {
        checkpoint::update_meta(&outcome.best_path, |m| {
            m.metrics.test_acc = Some(scored.accuracy())
        })?;
    }
    let report = write_run_report(&FinishedRun {
        data: &data,
        run,
        history: &outcome.history,
        stopped: outcome.stopped.as_deref(),
        scored: &scored,
        architecture: meta.architecture.clone(),
    })?;
    let test = data.test.as_ref().map(|_| scored);
    match &test {
        Some(p) => info(
            progress,
            format_args!(
                "Test accuracy: {:.4} ({}/{})",
                p.accuracy(),
                p.correct(),
                p.len()
            ),
        ),
        None => info(
            progress,
            format_args!(
                "No test set in {}: no test accuracy (the report scores the validation set).",
                data.source.display()
            ),
        ),
    }
    info(
        progress,
        format_args!(
            "Wrote {}: checkpoints, history.csv, curves.png, confusion.png, mistakes.png, \
         augment_preview.png, per_class.csv/json and report.html ({})",
            run.out.display(),
            report.display()
        ),
    );
    Ok(StageResult {
        out: run.out.clone(),
        data,
        test,
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
pub fn run(req: &RunRequest, progress: &mut dyn Progress) -> Result<()> {
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
        info(
            progress,
            format_args!(
                "== Stage 1: reusing the pretrained checkpoint {} (pass --fresh to pretrain again)",
                best.display()
            ),
        );
    } else {
        info(progress, "== Stage 1: pretraining on MNIST");
        let pre = stage("mnist", pre_out.clone(), req.pretrain_epochs);
        train_stage(Stage::Pretrain, &pre, None, progress)?;
    }
    info(
        progress,
        "\n== Stage 2: training fashion-1k from the pretrained weights",
    );
    let mut t = stage("fashion-1k", req.out.join("fashion-1k"), req.epochs);
    t.options.init = Some(InitRequest::From(pre_out));
    let res = train_stage(Stage::Train, &t, None, progress)?;
    if let Some(p) = &res.test {
        let c = Confusion::new(p, &res.data.classes);
        info(
            progress,
            format_args!(
                "\n== Evaluation of {} on the test set\n{}",
                res.out.display(),
                c.render()
            ),
        );
    }
    info(
        progress,
        format_args!(
            "Open {} in a browser for the curves, confusion matrix, mistakes and augmentation preview.",
            res.out.join("report.html").display()
        ),
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

/// What `eval` found.
pub struct Evaluation {
    /// The checkpoint's weights file.
    pub weights: PathBuf,
    /// Its classes.
    pub classes: Vec<String>,
    /// The dataset scored.
    pub data: PathBuf,
    /// Which part of it: `test`, `val` or `train`.
    pub split: &'static str,
    /// The predictions on the original images.
    pub plain: Predictions,
    /// With test-time augmentation: the copies, their augmentation and the averaged predictions.
    pub tta: Option<(usize, AugmentConfig, Predictions)>,
    /// The confusion matrix of the final predictions (with TTA when asked for).
    pub confusion: Confusion,
    /// The files written.
    pub files: EvalFiles,
    /// The unlabelled pool the model was trained with, if any.
    pub pool: Option<crate::record::UnlabeledRecord>,
}

/// Scores a checkpoint on a part of a dataset and writes the evaluation files.
pub fn eval(req: &EvalRequest, progress: &mut dyn Progress) -> Result<Evaluation> {
    if req.limit == Some(0) {
        return Err(Error::invalid(
            "--limit must be at least 1 (leave it out to score every image)",
        ));
    }
    let plan = plan::eval(&req.model, req.data.as_deref())?;
    let record = &plan.meta.training;
    let seed = record.seed;
    let dev = device_reported(req.runtime.device, seed, progress)?;
    let precision = device::resolve_precision(req.runtime.precision, req.runtime.device)?;
    let (model, meta) = checkpoint::load(&plan.weights, &dev)?;
    let model = model.with_precision(precision);
    let d = load_data(&plan.data, &plan.load, progress)?;
    if plan.own_data && record.check_fingerprint(&d).is_err() {
        progress.event(Event::Warning(format!(
            "the data under {} is not what the checkpoint was trained on (its fingerprint \
             changed); the scores are on the data as it is now",
            plan.data.display()
        )));
    }
    if let Some(w) = plan::check_classes(&plan.data, &d.classes, &plan.weights, &meta)? {
        progress.event(Event::Warning(w));
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
    let plain = predict_set_cancellable(&model, &set, &dev)?;
    let tta = if req.tta > 0 {
        let aug = req.augment.unwrap_or(if record.augment.is_none() {
            AugmentConfig::STANDARD
        } else {
            record.augment
        });
        let t = with_tta(plain.clone(), &model, &set, &dev, &aug, req.tta, seed)?;
        Some((req.tta, aug, t))
    } else {
        None
    };
    // Beside the checkpoint, but apart from the training run's own report files.
    let out = req.out.clone().unwrap_or_else(|| {
        plan.weights
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(format!("eval-{split}"))
    });
    let (scored, name) = match &tta {
        Some((n, _, t)) => (t, format!("{split} set, TTA {n}")),
        None => (&plain, format!("{split} set")),
    };
    let (confusion, files) = write_eval(&out, scored, &set, &meta.classes, &name)?;
    Ok(Evaluation {
        pool: record.unlabeled.clone(),
        weights: plan.weights,
        classes: meta.classes,
        data: plan.data,
        split,
        plain,
        tta,
        confusion,
        files,
    })
}

/// `warmstart lr-find`: the learning-rate finder on the data and starting weights a `train` with
/// the same flags would use. Writes `lr_find.png` and `lr_find.csv` into `req.out` (default
/// `runs/lr-find`) and returns the suggested rate; writes no checkpoint.
pub fn lr_find(stage: Stage, req: &TrainRequest, progress: &mut dyn Progress) -> Result<f64> {
    crate::lrfind::check_flags(&req.options)?;
    let mut req = req.clone();
    req.options.out = Some(
        req.options
            .out
            .unwrap_or_else(|| PathBuf::from("runs/lr-find")),
    );
    let mut plan = plan::resolve(stage, &req)?;
    let (dev, data, model, init) = start(&mut plan, progress)?;
    let model = model.with_precision(plan.record.precision);
    info(progress, init);
    let run = plan.record;
    info(
        progress,
        format_args!(
            "Learning-rate finder: batch {}, augmentation {}, rates {:.0e} to {:.0e} over up to {} batches",
            run.batch_size,
            run.augment,
            crate::lrfind::START_LR,
            crate::lrfind::END_LR,
            crate::lrfind::STEPS
        ),
    );
    let batches = data.train.len().div_ceil(run.batch_size);
    if batches < crate::lrfind::STEPS / 10 {
        progress.event(Event::Warning(format!(
            "only {} training images ({batches} batch(es) of {}): the finder sees them again \
             and again, so its suggestion says little about a real run",
            data.train.len(),
            run.batch_size
        )));
    }
    let found = crate::lrfind::run(model, &data, &run, &dev)?;
    fsutil::create_dir(&run.out)?;
    let png = run.out.join("lr_find.png");
    report::plot::lr_find(&found.lrs, &found.losses, found.suggestion, &png)?;
    let mut csv = String::from("lr,smoothed_loss\n");
    for (lr, l) in found.lrs.iter().zip(&found.losses) {
        csv.push_str(&format!("{lr:e},{l:.6}\n"));
    }
    fsutil::write_atomic(&run.out.join("lr_find.csv"), csv.as_bytes())?;
    info(
        progress,
        format_args!(
            "Suggested learning rate: {:.2e} (the valley of the loss over {} batches)\nWrote {} and lr_find.csv",
            found.suggestion,
            found.lrs.len(),
            png.display()
        ),
    );
    Ok(found.suggestion)
}

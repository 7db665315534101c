//! The one resolve step. A request (what the user typed, `None` where they typed nothing) plus
//! the stage's defaults become a [`RunRecord`]; the rules that also need the data or a checkpoint
//! — matching classes, what `--resume` may change, which images `eval` scores — are here as
//! well. Loading weights is not: the training loop's `init` does that with the plan's decisions.

use crate::augment::AugmentConfig;
use crate::bundled;
use crate::checkpoint::{self, Meta};
use crate::data::{Fit, Invert, LoadOptions};
use crate::device::PrecisionRequest;
use crate::error::{Error, Result};
pub use crate::options::{InitRequest, TrainOptions, TrainRequest};
use crate::record::{AdamSettings, DataRecord, InitRecord, Keep, RECORD_VERSION, RunRecord, Stage};
use crate::schedule::ScheduleName;
use std::path::{Path, PathBuf};

/// The seed unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 42;
/// The validation fraction unless `--val-split` says otherwise.
pub const DEFAULT_VAL_SPLIT: f64 = 0.1;
/// Which epoch's weights a run keeps (docs/accuracy.md, "Which checkpoint to keep").
pub const DEFAULT_KEEP: Keep = Keep::Auto;
/// The settings a stage uses where the request leaves them open.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDefaults {
    /// The dataset.
    pub data: PathBuf,
    /// The run directory.
    pub out: PathBuf,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Initial weights.
    pub init: InitRequest,
    /// How image files are fitted into 28x28, and so how new images are prepared for the model:
    /// MNIST's rule for pretraining (MNIST's digits were centred by mass), the box for training
    /// (the bundled Fashion-MNIST and most photographed sets were boxed).
    pub fit: Fit,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: ScheduleName,
    /// PreciseBN after each epoch.
    pub precise_bn: bool,
    /// The share of the epochs, at the end, that train without augmentation (rounded down).
    pub clean_share: f64,
}

/// The defaults of `stage`, chosen by the study in docs/accuracy.md (on fashion-1k and two other
/// scarce sets, three seeds each): pretraining on the bundled MNIST from random weights with
/// augmentation, a one-cycle schedule peaking at 3e-3 and PreciseBN; training the bundled
/// fashion-1k from `runs/pretrain` with augmentation, a cosine schedule from 2e-3 over 100 epochs
/// and PreciseBN. Both end with the last fifth of their epochs on the images as they are (3 of
/// 15, 20 of 100; study 7).
pub fn defaults(stage: Stage) -> StageDefaults {
    match stage {
        Stage::Pretrain => StageDefaults {
            data: bundled::dir("mnist"),
            out: PathBuf::from("runs/pretrain"),
            epochs: 15,
            batch_size: 128,
            augment: AugmentConfig::STANDARD,
            init: InitRequest::Random,
            fit: Fit::Mnist,
            lr: 0.003,
            schedule: ScheduleName::Onecycle,
            precise_bn: true,
            clean_share: 0.2,
        },
        Stage::Train => StageDefaults {
            data: bundled::dir("fashion-1k"),
            out: PathBuf::from("runs/train"),
            epochs: 100,
            batch_size: 32,
            augment: AugmentConfig::STANDARD,
            init: InitRequest::From(PathBuf::from("runs/pretrain")),
            fit: Fit::Box,
            lr: 0.002,
            schedule: ScheduleName::Cosine,
            precise_bn: true,
            clean_share: 0.2,
        },
    }
}

/// A run resolved except for what needs its data: the fingerprint and the head decision
/// (the training loop's `init::initial_model` fills them in).
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// The run as resolved so far.
    pub record: RunRecord,
    /// `--init` was left to the stage's default (so a missing default gets a hint).
    pub init_defaulted: bool,
    /// `--new-head` was given.
    pub new_head_flag: bool,
    /// What the user should know before the run starts (the bundled start, when the stage's
    /// default checkpoint does not exist yet).
    pub start_note: Option<String>,
}

/// The stage's default start, or, where that is a checkpoint directory that does not exist yet
/// (no `warmstart pretrain` has run here), the bundled MNIST pretraining, with a note saying so:
/// a first `train` starts at once instead of after a pretraining.
fn default_start(init: InitRequest) -> Result<(InitRequest, Option<String>)> {
    match &init {
        InitRequest::From(p) => Ok(match bundled_instead_of(p)? {
            Some((b, note)) => (InitRequest::From(b), Some(note)),
            None => (init, None),
        }),
        InitRequest::Random => Ok((init, None)),
    }
}

/// The bundled pretraining and a note saying so, where `default` (the default pretraining's
/// folder, `runs/pretrain`) does not exist yet and this copy of warmstart bundles one; `None`
/// otherwise. `train` and the commands built on it start from it; `suggest --model
/// runs/pretrain` scores with it.
pub fn bundled_instead_of(default: &Path) -> Result<Option<(PathBuf, String)>> {
    if default.exists() {
        return Ok(None);
    }
    let Some(bundled) = bundled::pretrained()? else {
        return Ok(None);
    };
    let meta = checkpoint::read_meta(&checkpoint::resolve(&bundled)?)?;
    let acc = meta.metrics.test_acc.map_or_else(String::new, |a| {
        format!(", {:.2}% on MNIST's test images", a * 100.0)
    });
    let note = format!(
        "Starting from the bundled MNIST pretraining ({}{acc}): {} does not exist yet; \
         `warmstart pretrain` makes it, and runs start from it from then on",
        bundled.display(),
        default.display()
    );
    Ok(Some((bundled, note)))
}

/// An absolute form of `p` (relative to the working directory now), so the record means the
/// same files wherever it is read from.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// Resolves a training request of `stage`: defaults filled in, numbers checked, paths absolute.
pub fn resolve(stage: Stage, request: &TrainRequest) -> Result<TrainPlan> {
    let (req, rt) = (&request.options, &request.runtime);
    let d = defaults(stage);
    let lr = req.lr.unwrap_or(d.lr);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(Error::invalid("--lr must be a positive number"));
    }
    let val_split = req.val_split.unwrap_or(DEFAULT_VAL_SPLIT);
    if !(val_split > 0.0 && val_split < 1.0) {
        return Err(Error::invalid(format!(
            "--val-split must be between 0 and 1 (exclusive), not {val_split}"
        )));
    }
    let (epochs, batch_size) = (
        req.epochs.unwrap_or(d.epochs),
        req.batch_size.unwrap_or(d.batch_size),
    );
    if epochs == 0 {
        return Err(Error::invalid("--epochs must be at least 1"));
    }
    if req.time.is_some() && req.epochs.is_some() {
        return Err(Error::invalid(
            "--time and --epochs both set how long the run trains: give one of them",
        ));
    }
    if batch_size < 2 {
        return Err(Error::invalid(
            "--batch-size must be at least 2: batch norm normalises each batch by its own mean \
             and variance, which one image does not have",
        ));
    }
    if req.limit == Some(0) || req.test_limit == Some(0) {
        return Err(Error::invalid(
            "--limit and --test-limit must be at least 1 (leave them out to use every image)",
        ));
    }
    let schedule = crate::schedule::named(req.schedule.unwrap_or(d.schedule), req.warmup)
        .map_err(Error::Invalid)?;
    let weight_decay = req.weight_decay.unwrap_or(0.0);
    if !(0.0..1.0).contains(&weight_decay) {
        return Err(Error::invalid(format!(
            "--weight-decay must be at least 0 and below 1, not {weight_decay}"
        )));
    }
    if let Some(f) = req.freeze_epochs
        && f >= epochs
    {
        return Err(Error::invalid(format!(
            "--freeze-epochs {f} leaves no epoch to train the whole network (--epochs {epochs})"
        )));
    }
    if let Some(c) = req.clean_epochs
        && c > epochs
    {
        return Err(Error::invalid(format!(
            "--clean-epochs {c} is more than --epochs {epochs}"
        )));
    }
    let augment = req.augment.unwrap_or(d.augment);
    // Without augmentation every epoch is clean: nothing to record.
    let clean_epochs = if augment.is_none() {
        0
    } else {
        req.clean_epochs
            .unwrap_or((epochs as f64 * d.clean_share).floor() as usize)
    };
    if let Some(r) = req.lr_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(Error::invalid(format!(
            "--lr-ratio must be above 0 and at most 1 (earlier layers train slower), not {r}"
        )));
    }
    if req.patience == Some(0) {
        return Err(Error::invalid("--patience must be at least 1 epoch"));
    }
    if let Some(a) = req.label_smoothing
        && !(0.0..1.0).contains(&a)
    {
        return Err(Error::invalid(format!(
            "--label-smoothing must be at least 0 and below 1, not {a}"
        )));
    }
    let unlabeled = req.pool.resolve(epochs)?;
    let (init, start_note) = match &req.init {
        Some(i) => (i.clone(), None),
        None => default_start(d.init)?,
    };
    let init = match init {
        InitRequest::Random => InitRecord::Random,
        InitRequest::From(p) => InitRecord::Checkpoint {
            path: absolute(&p)?,
            new_head: req.new_head,
        },
    };
    let record = RunRecord {
        version: RECORD_VERSION,
        stage,
        data: DataRecord {
            path: absolute(req.data.as_ref().unwrap_or(&d.data))?,
            val_split,
            limit: req.limit,
            test_limit: req.test_limit,
            invert: req.invert.unwrap_or(Invert::Auto),
            fit: req.fit.unwrap_or(d.fit),
            fingerprint: None,
        },
        epochs,
        batch_size,
        optimizer: AdamSettings {
            weight_decay,
            ..AdamSettings::with_lr(lr)
        },
        schedule,
        patience: req.patience,
        label_smoothing: req.label_smoothing.filter(|&a| a > 0.0),
        freeze_epochs: req.freeze_epochs.unwrap_or(0),
        precise_bn: req.precise_bn.unwrap_or(d.precise_bn),
        lr_ratio: req.lr_ratio.filter(|&r| r != 1.0),
        augment,
        clean_epochs,
        init,
        precision: crate::device::resolve_precision(rt.precision, rt.device)?,
        device: rt.device,
        threads: Some(rayon::current_num_threads()),
        seed: req.seed.unwrap_or(DEFAULT_SEED),
        out: absolute(req.out.as_ref().unwrap_or(&d.out))?,
        unlabeled,
        keep: req.keep.unwrap_or(DEFAULT_KEEP),
        time: req.time,
    };
    Ok(TrainPlan {
        record,
        init_defaulted: req.init.is_none(),
        new_head_flag: req.new_head,
        start_note,
    })
}

/// Applies to a saved run's record what `--resume DIR` may change: the run directory (the run
/// lives where the user says it is now, even if it was moved), `--epochs`, and `--data` (the
/// data where it is now, if it moved; the caller checks its fingerprint). Returns the flags of
/// `req` that a resume ignores, for a warning.
///
/// `done` is the number of epochs the run has finished: `--epochs` may not go below it.
pub fn resume(
    record: &mut RunRecord,
    dir: &Path,
    done: usize,
    req: &TrainRequest,
) -> Result<Vec<String>> {
    record.out = absolute(dir)?;
    if let Some(e) = req.options.epochs {
        if e == 0 || e < done {
            return Err(Error::invalid(format!(
                "--epochs {e}: the run in {} has already trained {done} epochs; give at least \
                 that many",
                dir.display()
            )));
        }
        record.epochs = e;
    }
    // A data folder that moved: the run continues on it where it is now, once its fingerprint
    // (checked when it is loaded) shows it holds the same images.
    if let Some(d) = &req.options.data {
        record.data.path = absolute(d)?;
    }
    // Likewise a pool that moved, checked by its fingerprint.
    if let Some(p) = &req.options.pool.unlabeled {
        let u = record.unlabeled.as_mut().ok_or_else(|| {
            Error::invalid(
                "--unlabeled: this run trains without a pool, and a resumed run cannot add one",
            )
        })?;
        u.path = absolute(p)?;
    }
    let gone = |what: &str, path: &Path, flag: &str| {
        Error::invalid(format!(
            "the run's {what} {} is not there any more: if it moved, add {flag} NEW_PATH to \
             --resume (the images there must be the ones the run started with)",
            path.display()
        ))
    };
    if !record.data.path.exists() {
        return Err(gone("data", &record.data.path, "--data"));
    }
    if let Some(u) = &record.unlabeled
        && !u.path.exists()
    {
        return Err(gone("unlabelled pool", &u.path, "--unlabeled"));
    }
    // Everything else was fixed when the run started; the run's arithmetic is part of its setup
    // too.
    let mut ignored: Vec<String> = req
        .options
        .given()
        .into_iter()
        .filter(|f| !["--epochs", "--data", "--unlabeled"].contains(&f.as_str()))
        .collect();
    if req.runtime.precision != PrecisionRequest::Auto {
        ignored.push("--precision".into());
    }
    Ok(ignored)
}

/// What `eval` scores, resolved from the checkpoint's record.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    /// The checkpoint's weights file.
    pub weights: PathBuf,
    /// Its sidecar (with the training run's record).
    pub meta: Meta,
    /// The dataset: `--data`, or the one the checkpoint was trained on.
    pub data: PathBuf,
    /// How to load it: the training run's split (validation fraction, seed) and inversion, and its
    /// limits when it is the training run's own data, so `--split val` scores exactly the images
    /// the run validated on.
    pub load: LoadOptions,
    /// Whether `data` is the data the checkpoint was trained on.
    pub own_data: bool,
}

/// Resolves `eval --model MODEL [--data DATA]`.
pub fn eval(model: &Path, data: Option<&Path>) -> Result<EvalPlan> {
    let weights = checkpoint::resolve(model)?;
    let meta = checkpoint::read_meta(&weights)?;
    let record = &meta.training;
    let data = match data {
        Some(d) => absolute(d)?,
        None => record.data.path.clone(),
    };
    let own_data = data == record.data.path;
    let mut load = record.load_options();
    if !own_data {
        load.limit = None;
        load.test_limit = None;
    }
    Ok(EvalPlan {
        weights,
        meta,
        data,
        load,
        own_data,
    })
}

/// Checks that data with `classes` (from `data_path`) can be scored by a checkpoint: the same
/// class names, or numbered classes of the same count (IDX and CSV files without `classes.txt`),
/// which are taken to be the checkpoint's; returns a warning in that case.
pub fn check_classes(
    data_path: &Path,
    classes: &[String],
    weights: &Path,
    meta: &Meta,
) -> Result<Option<String>> {
    if classes.len() != meta.classes.len() {
        return Err(Error::invalid(format!(
            "{} has {} classes but the checkpoint {} was trained on {}",
            data_path.display(),
            classes.len(),
            weights.display(),
            meta.classes.len()
        )));
    }
    if classes == meta.classes {
        return Ok(None);
    }
    let numbered = classes.iter().enumerate().all(|(i, c)| *c == i.to_string());
    if !numbered {
        return Err(Error::invalid(format!(
            "the classes of {} ({}) are not the checkpoint's ({})",
            data_path.display(),
            classes.join(", "),
            meta.classes.join(", ")
        )));
    }
    Ok(Some(format!(
        "{} names its classes by number; assuming they are the checkpoint's {}",
        data_path.display(),
        meta.classes.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(options: TrainOptions) -> TrainRequest {
        TrainRequest {
            options,
            ..Default::default()
        }
    }

    #[test]
    fn stage_defaults_fill_what_the_request_leaves_open() {
        let p = resolve(Stage::Pretrain, &TrainRequest::default()).unwrap();
        let r = &p.record;
        assert_eq!((r.epochs, r.batch_size, r.seed), (15, 128, DEFAULT_SEED));
        assert_eq!(r.augment, AugmentConfig::STANDARD);
        assert_eq!(r.init, InitRecord::Random);
        assert_eq!(r.optimizer.lr, 0.003);
        assert!(r.precise_bn && matches!(r.schedule, crate::schedule::Schedule::OneCycle { .. }));
        assert_eq!(r.data.fit, Fit::Mnist);
        let off = opts(TrainOptions {
            precise_bn: Some(false),
            schedule: Some(ScheduleName::Constant),
            ..Default::default()
        });
        let r = resolve(Stage::Pretrain, &off).unwrap().record;
        assert!(!r.precise_bn && r.schedule == crate::schedule::Schedule::Constant);
        assert!(r.data.path.is_absolute() && r.out.is_absolute());
        let req = opts(TrainOptions {
            epochs: Some(3),
            lr: Some(0.01),
            init: Some(InitRequest::From("some/ckpt".into())),
            ..Default::default()
        });
        let t = resolve(Stage::Train, &req).unwrap().record;
        assert_eq!((t.epochs, t.batch_size), (3, 32));
        assert!(t.precise_bn && matches!(t.schedule, crate::schedule::Schedule::Cosine { .. }));
        assert_eq!(t.data.fit, Fit::Box);
        assert_eq!(
            resolve(Stage::Train, &TrainRequest::default())
                .unwrap()
                .record
                .epochs,
            100
        );
        assert_eq!(t.optimizer.lr, 0.01);
        assert_eq!(t.augment, AugmentConfig::STANDARD);
        match t.init {
            InitRecord::Checkpoint { path, new_head } => {
                assert!(path.is_absolute() && path.ends_with("some/ckpt"));
                assert!(!new_head);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clean_epochs_default_to_the_last_fifth() {
        let clean = |stage, req: TrainRequest| resolve(stage, &req).map(|p| p.record.clean_epochs);
        assert_eq!(clean(Stage::Pretrain, TrainRequest::default()).unwrap(), 3);
        for (epochs, want) in [(1, 0), (4, 0), (5, 1), (10, 2), (100, 20)] {
            let req = opts(TrainOptions {
                epochs: Some(epochs),
                ..Default::default()
            });
            assert_eq!(
                clean(Stage::Pretrain, req).unwrap(),
                want,
                "{epochs} epochs"
            );
        }
        assert_eq!(clean(Stage::Train, TrainRequest::default()).unwrap(), 20);
        let given = opts(TrainOptions {
            clean_epochs: Some(7),
            ..Default::default()
        });
        assert_eq!(clean(Stage::Train, given.clone()).unwrap(), 7);
        // Nothing to leave out without augmentation.
        let none = opts(TrainOptions {
            augment: Some(AugmentConfig::NONE),
            ..given.options
        });
        assert_eq!(clean(Stage::Pretrain, none).unwrap(), 0);
        let too_many = opts(TrainOptions {
            epochs: Some(4),
            clean_epochs: Some(5),
            ..Default::default()
        });
        let err = clean(Stage::Train, too_many).unwrap_err().to_string();
        assert!(
            err.contains("--clean-epochs 5") && err.contains("--epochs 4"),
            "{err}"
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        for req in [
            opts(TrainOptions {
                lr: Some(0.0),
                ..Default::default()
            }),
            opts(TrainOptions {
                lr: Some(f64::NAN),
                ..Default::default()
            }),
            opts(TrainOptions {
                val_split: Some(1.0),
                ..Default::default()
            }),
            opts(TrainOptions {
                epochs: Some(0),
                ..Default::default()
            }),
            opts(TrainOptions {
                batch_size: Some(1),
                ..Default::default()
            }),
            opts(TrainOptions {
                limit: Some(0),
                ..Default::default()
            }),
            opts(TrainOptions {
                test_limit: Some(0),
                ..Default::default()
            }),
        ] {
            assert!(resolve(Stage::Train, &req).is_err(), "{req:?}");
        }
    }

    #[test]
    fn resume_changes_only_the_directory_and_epochs_and_names_what_it_ignores() {
        let mut r = resolve(Stage::Train, &TrainRequest::default())
            .unwrap()
            .record;
        let before = r.clone();
        let elsewhere = tempfile::tempdir().unwrap();
        let gone = opts(TrainOptions {
            data: Some(elsewhere.path().join("gone")),
            ..Default::default()
        });
        let e = resume(&mut r.clone(), Path::new("moved/run"), 4, &gone).unwrap_err();
        assert!(e.to_string().contains("add --data NEW_PATH"), "{e}");
        let req = opts(TrainOptions {
            epochs: Some(50),
            lr: Some(0.5),
            data: Some(elsewhere.path().to_path_buf()),
            ..Default::default()
        });
        let ignored = resume(&mut r, Path::new("moved/run"), 4, &req).unwrap();
        assert_eq!(ignored, vec!["--lr"]);
        assert!(
            r.data.path.ends_with(elsewhere.path().file_name().unwrap())
                && r.data.path.is_absolute()
        );
        assert_eq!(r.epochs, 50);
        assert!(r.out.ends_with("moved/run") && r.out.is_absolute());
        assert_eq!(r.optimizer, before.optimizer);
        assert_eq!(r.data.fingerprint, before.data.fingerprint);
        let fewer = opts(TrainOptions {
            epochs: Some(3),
            ..Default::default()
        });
        let e = resume(&mut r, Path::new("moved/run"), 4, &fewer).unwrap_err();
        assert!(e.to_string().contains("already trained 4 epochs"), "{e}");
    }
}

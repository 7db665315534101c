//! The run record: everything a training run was given and resolved to, in one typed, versioned
//! value. The resolve step (`plan`) makes it once; the training loop, the checkpoint
//! sidecars, the resume state and the reports carry it; `eval`, `predict` and `--resume` read it
//! back typed (never by string keys), so what was recorded is what is used.

use crate::augment::AugmentConfig;
use crate::data::{Dataset, Fit, Images, Invert, LoadOptions};
use crate::device::DeviceKind;
pub use crate::device::Precision;
pub use crate::schedule::Schedule;
pub use crate::unlabeled::UnlabeledRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The layout version of [`RunRecord`]; sidecars without one are read as the layout before it.
pub const RECORD_VERSION: u32 = 1;

/// Which epoch's weights a run keeps as its model (`best.safetensors`, what `--model RUN` loads).
/// The default of new runs is [`Keep::Auto`]; `Default` is what records written before it meant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    // The margin is `history::AUTO_MARGIN`, beside the rule.
    /// The last epoch, unless the best-accuracy epoch's validation loss is lower by a quarter or
    /// more: accuracy on a small validation set moves in coarse, noisy steps (2 points an image
    /// at 50), so its best epoch is often a lucky one.
    Auto,
    /// The epoch with the best validation accuracy (the earliest among equals).
    #[default]
    Best,
    /// The last epoch trained.
    Last,
}

/// Which of the two stages a run is: they differ only in their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// From random weights, on the bundled MNIST by default.
    Pretrain,
    /// From pretrained weights, with augmentation, on the bundled fashion-1k by default.
    Train,
}

impl Stage {
    /// The command that runs (and resumes) a stage: `pretrain` or `train`.
    pub fn command(self) -> &'static str {
        match self {
            Stage::Pretrain => "pretrain",
            Stage::Train => "train",
        }
    }
}

/// The dataset of a run and how it was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Absolute, so a run resumed or evaluated from another directory finds the same data.
    pub path: PathBuf,
    /// Fraction of the training set held out when the source has no validation set.
    pub val_split: f64,
    /// Only the first N training images.
    pub limit: Option<usize>,
    /// Only the first N test images.
    pub test_limit: Option<usize>,
    /// How image files were inverted to light-on-dark.
    pub invert: Invert,
    /// How image files were fitted into 28x28 (and how new images are prepared for the model);
    /// `box` in records written before the choice existed.
    #[serde(default)]
    pub fit: Fit,
    /// What was loaded; `None` in records written before fingerprints existed.
    pub fingerprint: Option<Fingerprint>,
}

/// The sizes of what was loaded and a hash of it, to tell when the data under a path changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Training images.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Test images, when there is a test set.
    pub test: Option<usize>,
    /// SHA-256 of every split's pixels and labels, in order.
    pub sha256: String,
}

impl Fingerprint {
    /// The fingerprint of a loaded dataset (after its limits and split).
    pub fn of(d: &Dataset) -> Self {
        let mut h = Sha256::new();
        let mut add = |tag: &[u8], s: &Images| {
            h.update(tag);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.pixels());
            for l in s.labels() {
                h.update(l.to_le_bytes());
            }
        };
        add(b"train", &d.train);
        add(b"val", &d.val);
        if let Some(t) = &d.test {
            add(b"test", t);
        }
        for c in &d.classes {
            h.update((c.len() as u64).to_le_bytes());
            h.update(c.as_bytes());
        }
        Fingerprint {
            train: d.train.len(),
            val: d.val.len(),
            test: d.test.as_ref().map(Images::len),
            sha256: format!("{:x}", h.finalize()),
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} train / {} validation", self.train, self.val)?;
        if let Some(t) = self.test {
            write!(f, " / {t} test")?;
        }
        write!(
            f,
            " images, sha256 {}",
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

/// Adam's settings (burn's `Adam`, with Keras' epsilon).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the root of the second moment (Keras' 1e-7).
    pub epsilon: f32,
    /// Decoupled weight decay (AdamW); 0: none.
    #[serde(default)]
    pub weight_decay: f32,
}

impl AdamSettings {
    /// Adam with learning rate `lr` and the betas and epsilon every warmstart run uses.
    pub fn with_lr(lr: f64) -> Self {
        AdamSettings {
            lr,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
        }
    }
}

/// Where the initial weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum InitRecord {
    /// Fresh weights from the seeded RNG.
    Random,
    /// Every same-named, same-shaped tensor of a checkpoint, except the classifier head when
    /// `new_head` (the resolved decision, not only the flag).
    Checkpoint {
        /// The checkpoint (absolute).
        path: PathBuf,
        /// Whether the classifier head was freshly initialised.
        new_head: bool,
    },
}

impl std::fmt::Display for InitRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitRecord::Random => write!(f, "random"),
            InitRecord::Checkpoint { path, new_head } => write!(
                f,
                "{}{}",
                path.display(),
                if *new_head {
                    " (new classifier head)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Everything a run was given and resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_VERSION`] when written.
    pub version: u32,
    /// Pretraining or training (they differ in their defaults).
    pub stage: Stage,
    /// The dataset and how it was loaded.
    pub data: DataRecord,
    /// Epochs to train (a resumed run may extend them).
    pub epochs: usize,
    /// Images per training batch.
    pub batch_size: usize,
    /// The optimiser.
    pub optimizer: AdamSettings,
    /// The learning-rate schedule (its peak is the optimiser's `lr`).
    pub schedule: Schedule,
    /// Stop when the validation accuracy has not improved for this many epochs (`epochs` is then
    /// the most); `None`: train every epoch.
    #[serde(default)]
    pub patience: Option<usize>,
    /// Label smoothing of the cross-entropy loss, in [0, 1); `None`: none.
    #[serde(default)]
    pub label_smoothing: Option<f32>,
    /// Epochs at the start that train only the classifier head (`fc2`); the rest of the network
    /// gets no gradient then, while its batch norms keep normalising with batch statistics and
    /// updating their running averages (fastai's `fine_tune`). 0: none.
    #[serde(default)]
    pub freeze_epochs: usize,
    /// Discriminative learning rates: each block nearer the input trains at this fraction of the
    /// rate of the block after it (the head at `lr`, `fc1` at `lr·r`, `conv2` at `lr·r²`, `conv1`
    /// at `lr·r³`, each with its batch norm); `None`: one rate for all.
    #[serde(default)]
    pub lr_ratio: Option<f64>,
    /// Recompute the batch-norm running statistics after every epoch as a plain average over up
    /// to 200 training batches (PreciseBN), instead of keeping the momentum averages, which lag
    /// the weights in short runs.
    #[serde(default)]
    pub precise_bn: bool,
    /// Augmentation of the training images.
    pub augment: AugmentConfig,
    /// The last epochs (of `epochs`) that train on the images as they are, without `augment`:
    /// the augmented epochs teach invariance, the clean ones fit the images the model will be
    /// given. 0: every epoch augmented (and records written before it existed).
    #[serde(default)]
    pub clean_epochs: usize,
    /// Where the initial weights came from.
    pub init: InitRecord,
    /// Arithmetic precision.
    pub precision: Precision,
    /// Where it computed.
    pub device: DeviceKind,
    /// CPU threads the run computed with (results are bit-identical for the same count); `None`
    /// in records written before it was recorded.
    pub threads: Option<usize>,
    /// Seeds the split, the shuffles, the augmentation, the initial weights and dropout.
    pub seed: u64,
    /// The run directory: checkpoints, history, plots and the report.
    pub out: PathBuf,
    /// The unlabelled pool and how it is learned from (`--unlabeled`); `None`: labels only.
    #[serde(default)]
    pub unlabeled: Option<UnlabeledRecord>,
    /// Which epoch's weights the run keeps as its model.
    #[serde(default)]
    pub keep: Keep,
    /// The `--time` budget that chose `epochs`; `None` when `--epochs` (or its default) did.
    #[serde(default)]
    pub time: Option<crate::budget::TimeBudget>,
}

impl RunRecord {
    /// What the run trains, as its console says before the first epoch.
    pub fn training_line(&self) -> String {
        format!(
            "Training {} epochs, batch {}, Adam lr {} ({} schedule), augmentation {}, seed {}, {} \
             multiplies -> {}",
            self.epochs,
            self.batch_size,
            self.optimizer.lr,
            self.schedule.describe(),
            self.augment_description(),
            self.seed,
            self.precision,
            self.out.display()
        )
    }

    /// The augmentation as the console and the report name it, with the clean epochs.
    pub fn augment_description(&self) -> String {
        match self.clean_epochs {
            0 => self.augment.to_string(),
            n if n >= self.epochs => "none (every epoch clean)".into(),
            n => format!("{} (none in the last {n} epoch(s))", self.augment),
        }
    }

    /// The augmentation of epoch `epoch` (from 0): none in the last [`RunRecord::clean_epochs`].
    /// Decided per epoch, so a resumed run augments exactly as an uninterrupted one.
    pub fn augment_at(&self, epoch: usize) -> AugmentConfig {
        if epoch + self.clean_epochs >= self.epochs {
            AugmentConfig::NONE
        } else {
            self.augment
        }
    }

    /// How to load the run's data again exactly as it was loaded for training.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            val_split: self.data.val_split,
            seed: self.seed,
            invert: self.data.invert,
            fit: self.data.fit,
            limit: self.data.limit,
            test_limit: self.data.test_limit,
        }
    }

    /// Reads a record in any layout this version of warmstart has written: the current one, or
    /// the untyped layout before [`RECORD_VERSION`] 1 (a sidecar's `{"options": ..., "data": ...}`
    /// or a resume state's options object).
    pub fn from_json(value: serde_json::Value) -> std::result::Result<Self, String> {
        if value.get("version").is_some() {
            let r: RunRecord = serde_json::from_value(value).map_err(|e| e.to_string())?;
            if r.version != RECORD_VERSION {
                return Err(format!(
                    "run record version {} is not one this warmstart reads ({RECORD_VERSION})",
                    r.version
                ));
            }
            return Ok(r);
        }
        let options = match value.get("options") {
            Some(o) => o.clone(),
            None => value,
        };
        let legacy: legacy::Options = serde_json::from_value(options).map_err(|e| e.to_string())?;
        Ok(legacy.into())
    }
}

impl RunRecord {
    /// Checks that freshly loaded data is what the record's fingerprint says was loaded.
    pub fn check_fingerprint(&self, data: &Dataset) -> crate::error::Result<()> {
        match &self.data.fingerprint {
            Some(was) => {
                let now = Fingerprint::of(data);
                if *was == now {
                    Ok(())
                } else {
                    Err(crate::error::Error::format(
                        &self.data.path,
                        format!(
                            "the data changed since the run started: it was {was}, it is {now}"
                        ),
                    ))
                }
            }
            None => Ok(()),
        }
    }
}

/// Serde adapter for fields holding a [`RunRecord`] in any layout ([`RunRecord::from_json`]).
pub fn any_layout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RunRecord, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    RunRecord::from_json(v).map_err(serde::de::Error::custom)
}

/// The layout of warmstart 0.1 before the typed record: `TrainOptions` with the command-line
/// arguments as free JSON.
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    pub struct Options {
        epochs: usize,
        batch_size: usize,
        lr: f64,
        seed: u64,
        augment: AugmentConfig,
        out: PathBuf,
        data: PathBuf,
        load: LoadOptions,
        #[serde(default)]
        args: Args,
    }

    #[derive(Deserialize, Default)]
    struct Args {
        command: Option<String>,
        init: Option<String>,
        #[serde(default)]
        new_head: bool,
        device: Option<DeviceKind>,
        threads: Option<usize>,
    }

    impl From<Options> for RunRecord {
        fn from(o: Options) -> Self {
            let init = match o.args.init.as_deref() {
                None | Some("random") => InitRecord::Random,
                Some(p) => InitRecord::Checkpoint {
                    path: PathBuf::from(p),
                    new_head: o.args.new_head,
                },
            };
            RunRecord {
                version: RECORD_VERSION,
                stage: if o.args.command.as_deref() == Some("pretrain") {
                    Stage::Pretrain
                } else {
                    Stage::Train
                },
                data: DataRecord {
                    path: o.data,
                    val_split: o.load.val_split,
                    limit: o.load.limit,
                    test_limit: o.load.test_limit,
                    invert: o.load.invert,
                    fit: Fit::Box,
                    fingerprint: None,
                },
                epochs: o.epochs,
                batch_size: o.batch_size,
                optimizer: AdamSettings::with_lr(o.lr),
                schedule: Schedule::Constant,
                patience: None,
                label_smoothing: None,
                freeze_epochs: 0,
                lr_ratio: None,
                precise_bn: false,
                augment: o.augment,
                clean_epochs: 0,
                init,
                precision: Precision::Fp32,
                device: o.args.device.unwrap_or(DeviceKind::Cpu),
                threads: o.args.threads,
                seed: o.seed,
                out: o.out,
                unlabeled: None,
                time: None,
                keep: Keep::Best,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint;
    use std::path::Path;

    /// A sidecar written by warmstart 0.1 before the typed record (`warmstart run
    /// --pretrain-epochs 1 --epochs 3 --limit 5000`, stage 2).
    const LEGACY_SIDECAR: &str = include_str!("../tests/fixtures/sidecar-0.1-layout.json");

    #[test]
    fn a_sidecar_of_the_untyped_layout_still_loads() {
        let meta = checkpoint::parse_meta(Path::new("best.json"), LEGACY_SIDECAR.as_bytes())
            .expect("the 0.1 layout parses");
        let r = &meta.training;
        assert_eq!(r.version, RECORD_VERSION);
        assert_eq!(r.stage, Stage::Train);
        assert_eq!((r.epochs, r.batch_size, r.seed), (3, 32, 42));
        assert_eq!(r.optimizer, AdamSettings::with_lr(0.001));
        assert_eq!(r.augment, AugmentConfig::STANDARD);
        assert_eq!(r.data.path, Path::new("data/fashion-1k"));
        assert_eq!((r.data.val_split, r.data.limit), (0.1, Some(5000)));
        assert_eq!(r.data.fingerprint, None);
        assert_eq!(r.threads, None);
        assert_eq!(
            r.init,
            InitRecord::Checkpoint {
                path: "/tmp/before/pretrain".into(),
                new_head: false
            }
        );
        assert_eq!(r.load_options().limit, Some(5000));
    }

    #[test]
    fn the_last_clean_epochs_are_not_augmented() {
        let mut r = checkpoint::parse_meta(Path::new("best.json"), LEGACY_SIDECAR.as_bytes())
            .unwrap()
            .training;
        // A record from before clean epochs augments every epoch.
        assert_eq!(r.clean_epochs, 0);
        assert_eq!(r.augment_description(), "rotation=10,shift=0.1,zoom=0.1");
        (r.epochs, r.clean_epochs) = (5, 2);
        let per_epoch: Vec<bool> = (0..5).map(|e| r.augment_at(e).is_none()).collect();
        assert_eq!(per_epoch, [false, false, false, true, true]);
        assert_eq!(
            r.augment_description(),
            "rotation=10,shift=0.1,zoom=0.1 (none in the last 2 epoch(s))"
        );
        // A resumed run extended to 8 epochs keeps its 2 clean ones at the new end.
        r.epochs = 8;
        assert!(!r.augment_at(4).is_none() && r.augment_at(6).is_none());
    }

    #[test]
    fn the_current_layout_round_trips_and_other_versions_are_refused() {
        let meta =
            checkpoint::parse_meta(Path::new("best.json"), LEGACY_SIDECAR.as_bytes()).unwrap();
        let json = serde_json::to_value(&meta.training).unwrap();
        assert_eq!(json["version"], RECORD_VERSION);
        assert_eq!(RunRecord::from_json(json.clone()).unwrap(), meta.training);
        let mut future = json;
        future["version"] = 2.into();
        let e = RunRecord::from_json(future).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = RunRecord::from_json(serde_json::json!({"version": 1, "epochs": 3})).unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }

    /// A pool run's sidecar written by warmstart 0.5 before `--unlabeled-after` existed (the
    /// compare run of `compare-settings-0.5-pool.json`): it reads back as it trained.
    #[test]
    fn a_pool_sidecar_of_0_5_reads_back_as_it_trained() {
        let text = include_str!("../tests/fixtures/sidecar-0.5-pool.json");
        let meta = checkpoint::parse_meta(Path::new("best.json"), text.as_bytes()).unwrap();
        let u = meta.training.unlabeled.expect("the pool's record");
        assert_eq!((u.threshold, u.ratio, u.weight, u.after), (0.9, 1, 1.0, 0));
        assert_eq!(u.align, crate::unlabeled::Align::None);
        assert_eq!(u.thresholds, crate::unlabeled::ThresholdRule::Fixed);
        assert_eq!(u.count, Some(20000));
        assert!(u.describe().contains("1 pool images per labelled one"));
    }
}

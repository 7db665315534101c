//! The options of the commands that train, each defined once. [`TrainOptions`] is at the same
//! time the clap arguments of `pretrain`, `train`, `lr-find` and of every `compare` variant, and
//! the serde value that `compare` saves and `--resume` inspects: what a flag means, its default
//! and its checks live in the resolve step (`plan`), never in a second list here.
//!
//! `None` (or `false`) always means "not given": the stage's default applies. Serialising skips
//! what was not given, so the JSON of a request is exactly the flags the user typed; merging two
//! requests and naming the given flags are derived from it ([`TrainOptions::over`],
//! [`TrainOptions::given`]) and need no edit when an option is added.

use crate::augment::AugmentConfig;
use crate::budget::TimeBudget;
use crate::data::{Fit, Invert};
use crate::device::{DeviceKind, PrecisionRequest};
use crate::flags::finite;
use crate::record::Keep;
use crate::schedule::ScheduleName;
use crate::unlabeled::PoolOptions;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `--init` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum InitRequest {
    /// Fresh weights from the seeded RNG.
    Random,
    /// A checkpoint file or a run directory.
    From(PathBuf),
}

impl std::str::FromStr for InitRequest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "" => Err("expected a checkpoint path or `random`".into()),
            "random" => Ok(InitRequest::Random),
            p => Ok(InitRequest::From(PathBuf::from(p))),
        }
    }
}

/// As typed: `random` or the path.
impl Serialize for InitRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            InitRequest::Random => s.serialize_str("random"),
            InitRequest::From(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for InitRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where and with what arithmetic a command computes; every command that runs the model takes
/// these flags. They change how fast a run goes, not what it trains (but for `--precision`, which
/// a run records).
#[derive(Args, Debug, Clone, Copy, Default, PartialEq)]
pub struct RuntimeArgs {
    /// Where to compute: `cpu` (burn's flex backend) or `gpu` (wgpu; needs `--features gpu`).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Arithmetic of the matrix multiplies: `bf16` (bf16 operands, f32 sums; weights, batch
    /// norm, loss and Adam stay f32), `fp32`, or `auto` (bf16 where the CPU has AVX512_BF16,
    /// fp32 elsewhere).
    #[arg(long, value_enum, default_value_t = PrecisionRequest::Auto)]
    pub precision: PrecisionRequest,
}

/// Every flag of a training run; defaults differ between `pretrain` and `train` and are filled
/// in by the resolve step (`plan::resolve`).
#[derive(Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// Dataset: a directory of IDX files, a CSV file (or a directory with train.csv), or an image
    /// folder (`<class>/*` or `{train,val,test}/<class>/*`). Default: bundled MNIST for
    /// `pretrain`, bundled fashion-1k for `train`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Output directory for checkpoints, history and plots [default: runs/pretrain or runs/train].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Epochs [default: 15 for pretrain, 100 for train].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Train for about this long instead of a number of epochs, e.g. `10m`, `90s`, `1h30m`: the
    /// run times its own steps first, then trains as many epochs as end the whole command within
    /// it (said on its first lines, and recorded, so `--resume` continues the same run).
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeBudget>,
    /// Batch size [default: 128 for pretrain, 32 for train].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Adam's (peak) learning rate [default: 0.003 for pretrain, 0.002 for train].
    #[arg(long, value_parser = finite::<f64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Random seed: validation split, shuffling, augmentation, initial weights and dropout
    /// [default: 42].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Use only the first N training images (for quick tries).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Evaluate only the first N test images at the end.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Fraction held out for validation when the data has no validation set (stratified, seeded)
    /// [default: 0.1].
    #[arg(long, value_parser = finite::<f64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_split: Option<f64>,
    /// Augmentation, e.g. `rotation=10,shift=0.1,zoom=0.1`, or `none` [default:
    /// rotation=10,shift=0.1,zoom=0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentConfig>,
    /// Initial weights: a checkpoint (file or run directory) or `random` [default: random for
    /// pretrain, runs/pretrain for train].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRequest>,
    /// Re-initialise the classifier head even when the checkpoint's class names match the data's
    /// (when they differ, as MNIST digits and garments do, the head is always new).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub new_head: bool,
    /// Invert image-folder images to light-on-dark: by border brightness (auto), always or never
    /// [default: auto].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invert: Option<Invert>,
    /// How image-folder images are fitted into 28x28, recorded as how new images are prepared
    /// for the model: `box` (longer side to 28, centred) or `mnist` (cropped to the ink, longer
    /// side to 20, centre of mass at the centre) [default: mnist for pretrain, box for train].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// Learning-rate schedule; `--lr` is its peak [default: onecycle for pretrain, cosine for
    /// train].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleName>,
    /// Fraction of the steps spent warming up (onecycle and cosine) [default: 0.25 for onecycle,
    /// 0.05 for cosine].
    #[arg(long, value_parser = finite::<f64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<f64>,
    /// Stop when the validation accuracy has not improved for N epochs (--epochs is then the
    /// most).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// Train only the classifier head for the first N epochs, then the whole network (batch norm
    /// keeps training statistics meanwhile) [default: 0].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_epochs: Option<usize>,
    /// Train the last N epochs on the images as they are, without augmentation (the augmented
    /// epochs teach invariance; the clean ones fit the images the model will be given)
    /// [default: the last fifth of --epochs: 3 of 15 for pretrain, 20 of 100 for train].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_epochs: Option<usize>,
    /// Discriminative rates: each block nearer the input trains at this fraction of the next
    /// one's rate (head at --lr, fc1 at lr·r, conv2 at lr·r², conv1 at lr·r³), e.g. 0.3
    /// [default: 1, one rate].
    #[arg(long, value_name = "R", value_parser = finite::<f64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_ratio: Option<f64>,
    /// Recompute batch-norm statistics after each epoch as a plain average over the training
    /// batches (PreciseBN), instead of the momentum averages that lag in short runs; `--precise-bn
    /// false` turns it off [default: on].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precise_bn: Option<bool>,
    /// Decoupled weight decay (AdamW), e.g. 0.01 [default: none].
    #[arg(long, value_parser = finite::<f32>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Label smoothing of the loss, e.g. 0.1 [default: none].
    #[arg(long, value_parser = finite::<f32>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f32>,
    /// The unlabelled pool and how it is learned from (`--unlabeled` and its settings).
    #[command(flatten)]
    #[serde(flatten)]
    pub pool: PoolOptions,
    /// Which epoch's weights the run keeps as its model (best.safetensors): the best validation
    /// accuracy's (best), the last epoch's (last), or the last unless the best one's validation
    /// loss is a quarter or more lower (auto, steadier when the validation set is small)
    /// [default: auto].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<Keep>,
    /// Start a new run even where --out holds another run's files or an interrupted run (they
    /// are removed first).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub overwrite: bool,
}

/// One training run as asked for: its options and where it computes.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct TrainRequest {
    /// What it trains, and how.
    #[command(flatten)]
    pub options: TrainOptions,
    /// Where it computes.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The flags of `pretrain`, `train` and `lr-find` (and of each `compare` variant): the training
/// request and `--resume`.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct TrainArgs {
    /// The run as asked for.
    #[command(flatten)]
    pub request: TrainRequest,
    /// Continue the interrupted run in DIR (its options and data are reused; `--epochs` may extend it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The JSON object of `o`: only the given options, by field name.
fn object(o: &TrainOptions) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(o) {
        Ok(serde_json::Value::Object(m)) => m,
        // A struct of plain fields always serialises to an object.
        _ => serde_json::Map::new(),
    }
}

/// The flag of the option saved under `key`: `--batch-size` for `batch_size`, `--threshold-rule`
/// for `thresholds` (saved under the flag's former name); other keys as `--key-name`.
pub fn flag(key: &str) -> String {
    <TrainOptions as clap::Args>::augment_args(clap::Command::new("options"))
        .get_arguments()
        .find(|a| a.get_id() == key)
        .and_then(|a| a.get_long())
        .map_or_else(
            || format!("--{}", key.replace('_', "-")),
            |l| format!("--{l}"),
        )
}

impl TrainOptions {
    /// The flags that were given, as typed (`--batch-size`), in definition order.
    pub fn given(&self) -> Vec<String> {
        let m = object(self);
        // `object` may sort its keys: keep the order of the definition (clap's ids).
        <Self as clap::Args>::augment_args(clap::Command::new("options"))
            .get_arguments()
            .filter(|a| m.contains_key(a.get_id().as_str()))
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    /// These options over `base`: each option given here wins, the others are `base`'s.
    pub fn over(&self, base: &TrainOptions) -> TrainOptions {
        let mut m = object(base);
        m.extend(object(self));
        serde_json::from_value(serde_json::Value::Object(m))
            .expect("options merged from two valid values deserialise")
    }

    /// The given options as a JSON value (what `compare` saves to tell a changed command).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(object(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_options_serialise_and_round_trip() {
        let o = TrainOptions {
            epochs: Some(5),
            init: Some(InitRequest::Random),
            augment: Some(AugmentConfig::NONE),
            new_head: true,
            schedule: Some(ScheduleName::Cosine),
            ..Default::default()
        };
        let v = o.to_json();
        assert_eq!(v["epochs"], 5);
        assert_eq!(v["init"], "random");
        assert_eq!(v["schedule"], "cosine");
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
        let back: TrainOptions = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
        assert_eq!(TrainOptions::default().to_json(), serde_json::json!({}));
        assert_eq!(
            o.given(),
            [
                "--epochs",
                "--augment",
                "--init",
                "--new-head",
                "--schedule"
            ]
        );
    }

    #[test]
    fn given_options_win_over_the_base() {
        let common = TrainOptions {
            epochs: Some(5),
            lr: Some(0.01),
            ..Default::default()
        };
        let v = TrainOptions {
            lr: Some(0.003),
            init: Some(InitRequest::From("a/b".into())),
            ..Default::default()
        };
        let m = v.over(&common);
        assert_eq!((m.epochs, m.lr), (Some(5), Some(0.003)));
        assert_eq!(m.init, Some(InitRequest::From("a/b".into())));
    }

    #[test]
    fn every_field_is_a_flag_and_serialises_under_its_name() {
        // A field added to the struct without `skip_serializing_if` would make every saved
        // comparison look changed: each given field must appear, each missing one must not.
        let ids: Vec<String> = <TrainOptions as clap::Args>::augment_args(clap::Command::new("o"))
            .get_arguments()
            .map(|a| a.get_id().as_str().to_string())
            .collect();
        let all = serde_json::to_value(TrainOptions::default()).unwrap();
        assert_eq!(all, serde_json::json!({}));
        let words: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let value = match id.as_str() {
                    "augment" => Some("none"),
                    "init" => Some("random"),
                    "invert" => Some("yes"),
                    "fit" => Some("box"),
                    "schedule" => Some("cosine"),
                    "keep" => Some("last"),
                    "align" => Some("none"),
                    "thresholds" => Some("per-class"),
                    "precise_bn" => Some("false"),
                    "time" => Some("10m"),
                    "new_head" | "overwrite" => None,
                    "data" | "out" | "unlabeled" => Some("x"),
                    "val_split" | "warmup" | "lr" | "lr_ratio" | "weight_decay"
                    | "label_smoothing" | "threshold" | "unlabeled_weight" => Some("0.5"),
                    _ => Some("3"),
                };
                std::iter::once(flag(id)).chain(value.map(String::from))
            })
            .collect();
        let cmd = <TrainOptions as clap::Args>::augment_args(clap::Command::new("o"));
        let m = cmd.try_get_matches_from(std::iter::once("o".to_string()).chain(words));
        let o = <TrainOptions as clap::FromArgMatches>::from_arg_matches(&m.unwrap()).unwrap();
        let given = o.to_json();
        for id in &ids {
            assert!(
                given.get(id).is_some(),
                "{id} does not serialise under its name"
            );
        }
        assert_eq!(o.given().len(), ids.len());
    }
}

//! The unlabelled pool's settings as one unit: its flags ([`PoolOptions`], flattened into every
//! command that trains), their defaults (the constants below, which `--help` shows), their checks,
//! the part of the run record they resolve to ([`UnlabeledRecord`]) and the one description of it
//! that the console, the report and `eval` print.
//!
//! Adding a pool option touches three places: its field in [`PoolOptions`] (flag, help with its
//! default), its field in [`UnlabeledRecord`] set by [`PoolOptions::resolve`] (with a serde
//! default that reads older records as they ran), and its use. The "needs `--unlabeled`" guard,
//! `audit`'s refusal and `compare`'s saved settings follow from the field.

use crate::error::{Error, Result};
use crate::flags::finite;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::path::PathBuf;

/// FixMatch's confidence threshold for pseudo-labels (Sohn et al. 2020).
pub const DEFAULT_THRESHOLD: f32 = 0.95;
/// Unlabelled images per labelled one in a step (FixMatch's μ, 7 in the paper): at 2 a run takes
/// half the time, its pool gain is the same on the study sets, and hard picked labels keep more of
/// their lead (docs/labelling.md, "How many pool images a step").
pub const DEFAULT_RATIO: usize = 2;
/// Weight of the unlabelled loss against the labelled one (FixMatch's published default).
pub const DEFAULT_WEIGHT: f32 = 1.0;
/// How pseudo-labels are balanced between classes (docs/accuracy.md).
pub const DEFAULT_ALIGN: Align = Align::Classes;
/// One threshold for every class, or one per class: per class, the pool gained on every study
/// set and labels picked by `suggest` kept their lead (docs/labelling.md, "Per-class thresholds").
pub const DEFAULT_THRESHOLD_RULE: ThresholdRule = ThresholdRule::PerClass;
/// Epochs on the labels alone before the pool joins: none.
pub const DEFAULT_AFTER: usize = 0;

/// `text [default: value]`, so the help shows the constant the run uses.
fn help(text: &str, default: impl Display) -> String {
    format!("{text} [default: {default}]")
}

/// The flags of the unlabelled pool. `None` means "not given"; serialising skips what was not
/// given, so the JSON that `compare` saves keeps the shape it had when these flags were part of
/// the training options.
#[derive(Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolOptions {
    /// Unlabelled images to learn from as well (semi-supervised, FixMatch): an image folder (any
    /// nesting), an IDX images file or a directory of IDX files, or a CSV file. Labels that come
    /// with them are never trained on.
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlabeled: Option<PathBuf>,
    /// The confidence a pool image's prediction needs to be learned as its label.
    #[arg(long, value_parser = finite::<f32>, help = help(
        "With --unlabeled: the confidence an unlabelled image's prediction needs to be learned \
         as its label", DEFAULT_THRESHOLD))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Pool images per labelled image in a step.
    #[arg(long, value_name = "N", help = help(
        "With --unlabeled: unlabelled images per labelled image in each step", DEFAULT_RATIO))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlabeled_ratio: Option<usize>,
    /// The pool's loss weight against the labels'.
    #[arg(long, value_name = "W", value_parser = finite::<f32>, help = help(
        "With --unlabeled: the weight of the unlabelled images' loss against the labelled \
         images' loss", DEFAULT_WEIGHT))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlabeled_weight: Option<f32>,
    /// Whether the pseudo-labels' class balance is corrected.
    #[arg(long, value_enum, help = help(
        "With --unlabeled: correct the pseudo-labels' class balance (classes) or not (none)",
        DEFAULT_ALIGN.name()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align: Option<Align>,
    /// Which rule sets each class's threshold. Saved as `thresholds`, the flag's former name
    /// (still accepted), so comparisons saved with it read back unchanged.
    #[arg(id = "thresholds", long = "threshold-rule", alias = "thresholds", value_enum,
        value_name = "RULE", help = help(
        "With --unlabeled: the rule for each class's threshold: --threshold for every class \
         (fixed), or lower ones for the classes pseudo-labelled least in the previous epoch \
         (per-class, FlexMatch)", DEFAULT_THRESHOLD_RULE.name()))]
    #[serde(rename = "thresholds", skip_serializing_if = "Option::is_none")]
    pub threshold_rule: Option<ThresholdRule>,
    /// Epochs trained on the labels alone before the pool joins.
    #[arg(long, value_name = "N", help = help(
        "With --unlabeled: train the first N epochs on the labels alone, then with the pool \
         (its pseudo-labels start from a model that already knows the classes)", DEFAULT_AFTER))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlabeled_after: Option<usize>,
}

impl PoolOptions {
    /// Every flag of the group, as typed (`--unlabeled-ratio`), in definition order.
    pub fn flags() -> Vec<String> {
        <Self as clap::Args>::augment_args(clap::Command::new("pool"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    /// The given flags that set how the pool is used (all but `--unlabeled` itself).
    fn settings_given(&self) -> Vec<String> {
        let given = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        <Self as clap::Args>::augment_args(clap::Command::new("pool"))
            .get_arguments()
            .filter(|a| a.get_id() != "unlabeled" && given.contains_key(a.get_id().as_str()))
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    /// The record's pool part: `None` without `--unlabeled` (then no other pool flag may be
    /// given), else the flags with their defaults, checked. `epochs` is the run's length, which
    /// `--unlabeled-after` must leave room in. The path is made absolute, so the record means the
    /// same files wherever it is read from.
    pub fn resolve(&self, epochs: usize) -> Result<Option<UnlabeledRecord>> {
        let Some(path) = &self.unlabeled else {
            let given = self.settings_given();
            return match given.as_slice() {
                [] => Ok(None),
                [one] => Err(Error::invalid(format!(
                    "{one} sets how unlabelled images are used: give it with --unlabeled PATH"
                ))),
                many => Err(Error::invalid(format!(
                    "{} set how unlabelled images are used: give them with --unlabeled PATH",
                    many.join(", ")
                ))),
            };
        };
        let threshold = self.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(Error::invalid(format!(
                "--threshold must be above 0 and at most 1, not {threshold}"
            )));
        }
        let ratio = self.unlabeled_ratio.unwrap_or(DEFAULT_RATIO);
        if ratio == 0 {
            return Err(Error::invalid("--unlabeled-ratio must be at least 1"));
        }
        let weight = self.unlabeled_weight.unwrap_or(DEFAULT_WEIGHT);
        if weight <= 0.0 {
            return Err(Error::invalid(format!(
                "--unlabeled-weight must be above 0, not {weight}"
            )));
        }
        let after = self.unlabeled_after.unwrap_or(DEFAULT_AFTER);
        if after >= epochs {
            return Err(Error::invalid(format!(
                "--unlabeled-after {after} leaves no epoch for the pool (--epochs {epochs})"
            )));
        }
        Ok(Some(UnlabeledRecord {
            path: std::path::absolute(path).map_err(|e| Error::io(path, e))?,
            threshold,
            ratio,
            weight,
            count: None,
            fingerprint: None,
            align: self.align.unwrap_or(DEFAULT_ALIGN),
            thresholds: self.threshold_rule.unwrap_or(DEFAULT_THRESHOLD_RULE),
            after,
        }))
    }
}

/// Semi-supervised training (FixMatch): each step's labelled batch comes with `ratio` times as
/// many pool images; a weakly augmented view of each (the run's augmentation) is predicted, and
/// where the prediction's confidence reaches `threshold` (or, with [`ThresholdRule::PerClass`],
/// its class's share of it) its class is learned, with weight `weight`, from a strongly
/// augmented view ([`crate::augment::strong`]).
///
/// Fields added after the first pooled runs carry a serde default that gives what those runs
/// did, which is not always what a new run defaults to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnlabeledRecord {
    /// The pool (absolute).
    pub path: PathBuf,
    /// Confidence a pseudo-label needs.
    pub threshold: f32,
    /// Pool images per labelled image in a step.
    pub ratio: usize,
    /// Weight of the unlabelled loss against the labelled one.
    pub weight: f32,
    /// Images in the pool, once loaded.
    pub count: Option<usize>,
    /// SHA-256 of the pool's images, once loaded (a resumed run must see the same pool).
    pub fingerprint: Option<String>,
    /// How the pseudo-labels' class balance is corrected.
    #[serde(default = "legacy::align")]
    pub align: Align,
    /// The rule for each class's threshold (saved under its first name).
    #[serde(default = "legacy::threshold_rule")]
    pub thresholds: ThresholdRule,
    /// Epochs on the labels alone before the pool joins.
    #[serde(default = "legacy::after")]
    pub after: usize,
}

/// What runs recorded before a setting existed did.
mod legacy {
    use super::{Align, ThresholdRule};

    /// No correction of the pseudo-labels' balance.
    pub fn align() -> Align {
        Align::None
    }
    /// One threshold for every class.
    pub fn threshold_rule() -> ThresholdRule {
        ThresholdRule::Fixed
    }
    /// The pool from the first epoch.
    pub fn after() -> usize {
        0
    }
}

impl UnlabeledRecord {
    /// The threshold as the console and the report say it.
    pub fn threshold_description(&self) -> String {
        match self.thresholds {
            ThresholdRule::Fixed => format!("{}", self.threshold),
            ThresholdRule::PerClass => format!(
                "{} for the class pseudo-labelled most, lower for the others (per class)",
                self.threshold
            ),
        }
    }

    /// How the pool is learned from, in words: the one description the console, the report and
    /// `eval` give.
    pub fn describe(&self) -> String {
        let start = match self.after {
            0 => String::new(),
            n => format!(", from epoch {} (the first {n} on the labels alone)", n + 1),
        };
        format!(
            "FixMatch, pseudo-labels {} at confidence ≥ {}, {} pool images per labelled one, \
             loss weight {}{start}",
            self.align.describe(),
            self.threshold_description(),
            self.ratio,
            self.weight,
        )
    }

    /// Whether epoch `epoch` (from 0) learns from the pool.
    pub fn trains_in(&self, epoch: usize) -> bool {
        epoch >= self.after
    }
}

/// Whether every class's pseudo-labels need the same confidence. At one fixed threshold the
/// classes a network learns slowly are hardly ever pseudo-labelled, so the pool teaches it to
/// call their images something else; per-class thresholds (FlexMatch, Zhang et al. 2021) fall
/// for those classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// `--threshold` for every class (FixMatch).
    Fixed,
    /// Class c's threshold is `--threshold` × M(β_c), β_c its pseudo-labels in the previous
    /// epoch over the most any class got, M(x) = x / (2 − x) (FlexMatch's convex mapping); the
    /// first epoch, and one after an epoch without pseudo-labels, use `--threshold`.
    PerClass,
}

impl ThresholdRule {
    /// As typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ThresholdRule::Fixed => "fixed",
            ThresholdRule::PerClass => "per-class",
        }
    }
}

/// Distribution alignment of pseudo-labels (ReMixMatch, Berthelot et al. 2020): a network
/// trained on few labels predicts its easy classes far more often than its hard ones, so at a
/// fixed threshold the hard classes are hardly ever pseudo-labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// The network's probabilities as they are.
    None,
    /// Each pool batch's probabilities rescaled, class by class, by the labelled set's class
    /// share over the batch's mean probability, then renormalised: every class is predicted
    /// about as often as it is labelled.
    Classes,
}

impl Align {
    /// How the console and the report say it.
    pub fn describe(self) -> &'static str {
        match self {
            Align::None => "as predicted",
            Align::Classes => "aligned to the labelled class shares",
        }
    }

    /// As typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Align::None => "none",
            Align::Classes => "classes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    fn parse(words: &[&str]) -> std::result::Result<PoolOptions, clap::Error> {
        let cmd = <PoolOptions as clap::Args>::augment_args(clap::Command::new("p"));
        let m = cmd.try_get_matches_from(std::iter::once("p").chain(words.iter().copied()))?;
        <PoolOptions as clap::FromArgMatches>::from_arg_matches(&m)
    }

    /// The help's defaults are the constants the run uses, and the names clap accepts.
    #[test]
    fn help_defaults_are_the_constants() {
        let cmd = <PoolOptions as clap::Args>::augment_args(clap::Command::new("p"));
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        assert!(help("threshold").ends_with(&format!("[default: {DEFAULT_THRESHOLD}]")));
        assert!(help("unlabeled_ratio").ends_with(&format!("[default: {DEFAULT_RATIO}]")));
        assert!(help("unlabeled_weight").ends_with(&format!("[default: {DEFAULT_WEIGHT}]")));
        assert!(help("unlabeled_after").ends_with(&format!("[default: {DEFAULT_AFTER}]")));
        for (id, name) in [
            ("align", DEFAULT_ALIGN.name()),
            ("thresholds", DEFAULT_THRESHOLD_RULE.name()),
        ] {
            assert!(help(id).ends_with(&format!("[default: {name}]")), "{id}");
        }
        for v in Align::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.name());
        }
        for v in ThresholdRule::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.name());
        }
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let o = parse(&["--unlabeled", "pool"]).unwrap();
        let u = o.resolve(10).unwrap().unwrap();
        assert!(u.path.is_absolute() && u.path.ends_with("pool"));
        assert_eq!(
            (
                u.threshold,
                u.ratio,
                u.weight,
                u.align,
                u.thresholds,
                u.after
            ),
            (
                DEFAULT_THRESHOLD,
                DEFAULT_RATIO,
                DEFAULT_WEIGHT,
                DEFAULT_ALIGN,
                DEFAULT_THRESHOLD_RULE,
                DEFAULT_AFTER
            )
        );
        assert_eq!(PoolOptions::default().resolve(10).unwrap(), None);
    }

    /// The old spelling `--thresholds` still parses, and the saved JSON keeps its key.
    #[test]
    fn the_threshold_rule_keeps_its_old_spelling_and_key() {
        for flag in ["--threshold-rule", "--thresholds"] {
            let o = parse(&["--unlabeled", "p", flag, "fixed"]).unwrap();
            assert_eq!(o.threshold_rule, Some(ThresholdRule::Fixed));
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"unlabeled": "p", "thresholds": "fixed"})
            );
            assert_eq!(serde_json::from_value::<PoolOptions>(json).unwrap(), o);
        }
        assert!(PoolOptions::flags().contains(&"--threshold-rule".to_string()));
    }

    /// Every pool flag but `--unlabeled` needs the pool, named in the error; the checks of each.
    #[test]
    fn settings_without_a_pool_and_bad_values_are_refused() {
        let flags = PoolOptions::flags();
        assert_eq!(flags[0], "--unlabeled");
        for (words, wants) in [
            (&["--threshold", "0.5"][..], "--threshold sets how"),
            (
                &["--unlabeled-after", "2"][..],
                "--unlabeled-after sets how",
            ),
            (
                &["--align", "none", "--threshold-rule", "fixed"][..],
                "--align, --threshold-rule set how",
            ),
            (
                &["--unlabeled", "p", "--threshold", "1.5"][..],
                "--threshold must be",
            ),
            (
                &["--unlabeled", "p", "--unlabeled-ratio", "0"][..],
                "at least 1",
            ),
            (
                &["--unlabeled", "p", "--unlabeled-weight", "0"][..],
                "above 0",
            ),
            (
                &["--unlabeled", "p", "--unlabeled-after", "10"][..],
                "--unlabeled-after 10 leaves no epoch for the pool (--epochs 10)",
            ),
        ] {
            let e = parse(words).unwrap().resolve(10).unwrap_err().to_string();
            assert!(e.contains(wants), "{words:?}: {e}");
        }
        // Each flag but the path alone is refused without the pool: a new flag is covered too.
        for f in &flags[1..] {
            let value = match f.as_str() {
                "--align" => "none",
                "--threshold-rule" => "fixed",
                "--threshold" | "--unlabeled-weight" => "0.5",
                _ => "1",
            };
            let e = parse(&[f, value]).unwrap().resolve(10).unwrap_err();
            assert!(e.to_string().contains(f.as_str()), "{f}: {e}");
        }
    }

    /// A pool record written before a setting existed reads back as that run trained: one
    /// threshold, no alignment, the pool from the first epoch, whatever new runs default to.
    #[test]
    fn an_old_pool_record_reads_as_it_ran() {
        let u: UnlabeledRecord = serde_json::from_value(serde_json::json!({
            "path": "/pool", "threshold": 0.95, "ratio": 7, "weight": 1.0,
            "count": 20000, "fingerprint": null
        }))
        .unwrap();
        assert_eq!(
            (u.align, u.thresholds, u.after),
            (Align::None, ThresholdRule::Fixed, 0)
        );
        assert_eq!(u.threshold_description(), "0.95");
        assert!(u.trains_in(0));
        let later = UnlabeledRecord {
            thresholds: ThresholdRule::PerClass,
            after: 3,
            ..u
        };
        let json = serde_json::to_value(&later).unwrap();
        assert_eq!(
            (&json["thresholds"], &json["after"]),
            (&"per-class".into(), &3.into())
        );
        assert!(!later.trains_in(2) && later.trains_in(3));
        assert!(
            later.describe().contains("from epoch 4"),
            "{}",
            later.describe()
        );
    }
}

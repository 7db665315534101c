//! `warmstart compare`: the same training under several variants (by default pretrained or random
//! start × augmentation or none) and several seeds, every run a normal run directory
//! (`OUT/<variant>/seed-<s>/`), then each variant's accuracy with its spread and its paired
//! difference from the first variant, the baseline, with a 95% confidence interval.
//!
//! A comparison can be interrupted and re-run with the same command: finished runs are read back
//! (`result.json`), an interrupted one is resumed from its `resume.ckpt`, and since training is
//! bit-reproducible the numbers are those of an uninterrupted comparison.

mod figure;
mod page;
pub mod stats;

use crate::augment::AugmentConfig;
use crate::device::PrecisionRequest;
use crate::error::{Error, Result};
use crate::fsutil::{create_dir, write_atomic};
use crate::pipeline::{self, Verbosity};
use crate::plan::{InitRequest, TrainRequest};
use crate::record::Stage;
use crate::train;
use serde::{Deserialize, Serialize};
use stats::{Difference, VariantSummary, mean_sd_ci};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// One way of training: a name (a directory name) and the flags that differ from the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Its name, also its directory under the comparison's output.
    pub name: String,
    /// The flags as the user typed them (shown in the reports).
    pub flags: String,
    /// Those flags, parsed.
    pub request: TrainRequest,
}

/// The default grid: {pretrained (the default `--init`), random} × {the default augmentation,
/// none}; `pretrained+aug` (the defaults) is the baseline.
pub fn default_variants() -> Vec<Variant> {
    let v = |name: &str, flags: &str, random: bool, no_aug: bool| Variant {
        name: name.into(),
        flags: flags.into(),
        request: TrainRequest {
            init: random.then_some(InitRequest::Random),
            augment: no_aug.then_some(AugmentConfig::NONE),
            ..Default::default()
        },
    };
    vec![
        v("pretrained+aug", "", false, false),
        v("pretrained", "--augment none", false, true),
        v("random+aug", "--init random", true, false),
        v("random", "--init random --augment none", true, true),
    ]
}

/// Checks that a variant name can be a directory name on any system and is not a path.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "variant name {name:?} cannot be a directory name: use 1 to 64 letters, digits, '_', \
             '-', '+' or '.', not starting with '-'"
        )))
    }
}

/// Parses `--seeds`: a comma-separated list (`1,2,3`), or a count N meaning seeds 1 to N.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let bad = || {
        Error::invalid(format!(
            "--seeds {s:?}: give a comma-separated list of seeds (1,2,3) or a count (5 for seeds 1 to 5)"
        ))
    };
    let seeds: Vec<u64> = if s.contains(',') {
        s.split(',')
            .map(|x| x.trim().parse().map_err(|_| bad()))
            .collect::<Result<_>>()?
    } else {
        let n: u64 = s.trim().parse().map_err(|_| bad())?;
        if n == 0 || n > 1000 {
            return Err(bad());
        }
        (1..=n).collect()
    };
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        return Err(Error::invalid(format!("--seeds {s:?} repeats a seed")));
    }
    Ok(seeds)
}

/// A comparison to run.
#[derive(Debug, Clone)]
pub struct CompareRequest {
    /// Flags that apply to every variant (a variant's own flags take precedence).
    pub common: TrainRequest,
    /// The variants; the first is the baseline.
    pub variants: Vec<Variant>,
    /// The seeds every variant runs with.
    pub seeds: Vec<u64>,
    /// Where the runs and the results go.
    pub out: PathBuf,
}

/// The result of one (variant, seed) run, kept in its directory as `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The variant's name.
    pub variant: String,
    /// The seed.
    pub seed: u64,
    /// The run's settings (the merged request), to tell a re-run with other flags.
    pub settings: String,
    /// Accuracy of the best checkpoint on the test set (or the validation set without one).
    pub accuracy: f64,
    /// Images it got right.
    pub correct: usize,
    /// Images scored.
    pub total: usize,
    /// `test` or `validation`: which set `accuracy` is on.
    pub scored_on: String,
    /// Epoch of the best validation accuracy.
    pub best_epoch: usize,
    /// Training seconds, over all epochs.
    pub seconds: f64,
    /// The run directory, relative to the comparison's output.
    pub dir: PathBuf,
}

/// Everything a comparison produced.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The variants' names, baseline first.
    pub variants: Vec<String>,
    /// The variants' flags, in the same order.
    pub flags: Vec<String>,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Every run, variant by variant, seed by seed.
    pub runs: Vec<RunResult>,
    /// Each variant's accuracy over the seeds.
    pub summary: Vec<VariantSummary>,
    /// Each variant but the baseline against the baseline.
    pub differences: Vec<Difference>,
}

/// The request of one variant: its own flags over the common ones.
fn merged(common: &TrainRequest, v: &TrainRequest) -> TrainRequest {
    TrainRequest {
        data: v.data.clone().or_else(|| common.data.clone()),
        out: None,
        epochs: v.epochs.or(common.epochs),
        batch_size: v.batch_size.or(common.batch_size),
        lr: v.lr.or(common.lr),
        seed: None,
        limit: v.limit.or(common.limit),
        test_limit: v.test_limit.or(common.test_limit),
        val_split: v.val_split.or(common.val_split),
        augment: v.augment.or(common.augment),
        init: v.init.clone().or_else(|| common.init.clone()),
        new_head: v.new_head || common.new_head,
        invert: v.invert.or(common.invert),
        fit: v.fit.or(common.fit),
        device: common.device,
        // Per variant, so that a comparison can set fp32 against bf16 (`auto` is the default).
        precision: if v.precision == PrecisionRequest::Auto {
            common.precision
        } else {
            v.precision
        },
        // A comparison owns its run directories (their settings are checked before a run).
        overwrite: true,
        schedule: v.schedule.or(common.schedule),
        warmup: v.warmup.or(common.warmup),
        patience: v.patience.or(common.patience),
        label_smoothing: v.label_smoothing.or(common.label_smoothing),
        weight_decay: v.weight_decay.or(common.weight_decay),
        freeze_epochs: v.freeze_epochs.or(common.freeze_epochs),
        clean_epochs: v.clean_epochs.or(common.clean_epochs),
        precise_bn: v.precise_bn.or(common.precise_bn),
        lr_ratio: v.lr_ratio.or(common.lr_ratio),
    }
}

const RESULT: &str = "result.json";

/// Runs (or reads back, or resumes) every (variant, seed) and writes `compare.csv`,
/// `compare.json`, `compare.png` and `compare.html` into the output directory.
pub fn run(req: &CompareRequest) -> Result<Comparison> {
    if req.variants.is_empty() || req.seeds.is_empty() {
        return Err(Error::invalid(
            "a comparison needs at least one variant and one seed",
        ));
    }
    for (i, v) in req.variants.iter().enumerate() {
        check_name(&v.name)?;
        if req.variants[..i].iter().any(|w| w.name == v.name) {
            return Err(Error::invalid(format!(
                "variant name {:?} is used twice",
                v.name
            )));
        }
    }
    create_dir(&req.out)?;
    let total = req.variants.len() * req.seeds.len();
    println!(
        "Comparing {} variants x {} seeds ({total} runs) in {}",
        req.variants.len(),
        req.seeds.len(),
        req.out.display()
    );
    let bar = progress(total);
    let mut runs = Vec::with_capacity(total);
    for v in &req.variants {
        let base = merged(&req.common, &v.request);
        for &seed in &req.seeds {
            let dir = PathBuf::from(&v.name).join(format!("seed-{seed}"));
            let r = one_run(req, v, &base, seed, &dir)?;
            let line = format!(
                "[{}/{total}] {} seed {}: {} accuracy {:.4} ({}/{}), best epoch {}, {:.0} s",
                runs.len() + 1,
                r.variant,
                r.seed,
                r.scored_on,
                r.accuracy,
                r.correct,
                r.total,
                r.best_epoch,
                r.seconds
            );
            match &bar {
                Some(b) => {
                    b.println(line);
                    b.inc(1);
                }
                None => println!("{line}"),
            }
            runs.push(r);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let c = summarise(req, runs);
    write_outputs(&req.out, &c)?;
    Ok(c)
}

/// A bar over the runs when standard error is a terminal.
fn progress(total: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("compare [{bar:30}] {pos}/{len} runs ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(b)
}

/// One (variant, seed): read back when finished, resumed when interrupted, trained otherwise.
fn one_run(
    req: &CompareRequest,
    v: &Variant,
    base: &TrainRequest,
    seed: u64,
    rel: &Path,
) -> Result<RunResult> {
    let dir = req.out.join(rel);
    let mut r = base.clone();
    r.seed = Some(seed);
    r.out = Some(dir.clone());
    let settings = format!(
        "{:?}",
        TrainRequest {
            out: None,
            ..r.clone()
        }
    );
    let result_path = dir.join(RESULT);
    let settings_path = dir.join("compare-settings.txt");
    if let Ok(text) = std::fs::read(&settings_path)
        && text != settings.as_bytes()
    {
        return Err(Error::format(
            &settings_path,
            "this run was started with other settings; re-run the same compare command, or use \
             another --out",
        ));
    }
    if result_path.is_file() {
        let text = std::fs::read(&result_path).map_err(|e| Error::io(&result_path, e))?;
        let done: RunResult = serde_json::from_slice(&text)
            .map_err(|e| Error::format(&result_path, format!("unreadable run result: {e}")))?;
        if done.settings == settings {
            return Ok(done);
        }
    }
    create_dir(&dir)?;
    write_atomic(&settings_path, settings.as_bytes())?;
    let resume = train::resume::path(&dir).is_file().then_some(dir.as_path());
    let res =
        pipeline::train_stage(Stage::Train, &r, resume, Verbosity::Quiet).inspect_err(|e| {
            if e.is_interruption() {
                eprintln!("(to continue the whole comparison, run the same compare command again)");
            }
        })?;
    let best = res.history.best().ok_or_else(|| {
        Error::invalid(format!(
            "{}: the run finished without an epoch",
            dir.display()
        ))
    })?;
    let (accuracy, correct, total, scored_on) = match &res.test {
        Some(p) => (p.accuracy(), p.correct(), p.len(), "test"),
        None => {
            let n = res.data.val.len();
            let correct = (best.val_acc * n as f64).round() as usize;
            (best.val_acc, correct, n, "validation")
        }
    };
    let result = RunResult {
        variant: v.name.clone(),
        seed,
        settings,
        accuracy,
        correct,
        total,
        scored_on: scored_on.into(),
        best_epoch: best.epoch,
        seconds: res.history.0.iter().map(|e| e.seconds).sum(),
        dir: rel.to_path_buf(),
    };
    let json = serde_json::to_vec_pretty(&result).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&result_path, &json)?;
    Ok(result)
}

/// The per-variant summaries and the paired differences from the baseline.
fn summarise(req: &CompareRequest, runs: Vec<RunResult>) -> Comparison {
    let of =
        |name: &str| -> Vec<&RunResult> { runs.iter().filter(|r| r.variant == name).collect() };
    let acc = |rs: &[&RunResult]| -> Vec<f64> { rs.iter().map(|r| r.accuracy).collect() };
    let baseline = of(&req.variants[0].name);
    let summary = req
        .variants
        .iter()
        .map(|v| {
            let rs = of(&v.name);
            let xs = acc(&rs);
            let (mean, sd, ci) = mean_sd_ci(&xs);
            let n = rs.len().max(1) as f64;
            VariantSummary {
                name: v.name.clone(),
                runs: rs.len(),
                mean,
                sd,
                ci,
                min: xs.iter().copied().fold(f64::INFINITY, f64::min),
                max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean_best_epoch: rs.iter().map(|r| r.best_epoch as f64).sum::<f64>() / n,
                mean_seconds: rs.iter().map(|r| r.seconds).sum::<f64>() / n,
            }
        })
        .collect();
    let differences = req.variants[1..]
        .iter()
        .map(|v| Difference::paired(&v.name, &acc(&of(&v.name)), &acc(&baseline)))
        .collect();
    Comparison {
        variants: req.variants.iter().map(|v| v.name.clone()).collect(),
        flags: req.variants.iter().map(|v| v.flags.clone()).collect(),
        seeds: req.seeds.clone(),
        runs,
        summary,
        differences,
    }
}

/// `+1.23 points [−0.40, +2.86]` for a difference of accuracies, or without an interval.
pub fn points(d: &Difference) -> String {
    let p = |x: f64| format!("{:+.2}", 100.0 * x);
    match d.ci {
        Some(h) => format!(
            "{} points, 95% CI [{}, {}]{}",
            p(d.mean),
            p(d.mean - h),
            p(d.mean + h),
            if d.significant() == Some(true) {
                ""
            } else {
                " (not significant)"
            }
        ),
        None => format!("{} points (one seed: no interval)", p(d.mean)),
    }
}

/// The table, as printed.
pub fn table(c: &Comparison) -> String {
    let w = c.variants.iter().map(String::len).max().unwrap_or(7).max(7);
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let mut s = format!(
        "{:<w$}  {:>16}  {:>15}  {:>10}  {:>8}\n",
        "variant", "accuracy", "min-max", "best epoch", "seconds"
    );
    for v in &c.summary {
        let acc = match v.sd {
            Some(sd) => format!("{} ± {:.2}", pct(v.mean), 100.0 * sd),
            None => pct(v.mean),
        };
        s.push_str(&format!(
            "{:<w$}  {:>16}  {:>15}  {:>10.1}  {:>8.1}\n",
            v.name,
            acc,
            format!("{}-{}", pct(v.min), pct(v.max)),
            v.mean_best_epoch,
            v.mean_seconds
        ));
    }
    if !c.differences.is_empty() {
        s.push_str(&format!(
            "\nagainst the baseline {} (same seeds):\n",
            c.variants[0]
        ));
        for d in &c.differences {
            s.push_str(&format!("{:<w$}  {}\n", d.name, points(d)));
        }
    }
    if c.seeds.len() < 2 {
        s.push_str(
            "\n(one seed: no standard deviations or intervals; pass --seeds 3 or more to see \
             whether a difference is more than seed-to-seed noise)\n",
        );
    }
    s
}

fn write_outputs(out: &Path, c: &Comparison) -> Result<()> {
    let mut csv =
        String::from("variant,seed,accuracy,correct,total,scored_on,best_epoch,seconds,run\n");
    for r in &c.runs {
        csv.push_str(&format!(
            "{},{},{:.6},{},{},{},{},{:.3},{}\n",
            r.variant,
            r.seed,
            r.accuracy,
            r.correct,
            r.total,
            r.scored_on,
            r.best_epoch,
            r.seconds,
            r.dir.display()
        ));
    }
    write_atomic(&out.join("compare.csv"), csv.as_bytes())?;
    let json = serde_json::to_vec_pretty(c).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&out.join("compare.json"), &json)?;
    let png = out.join("compare.png");
    figure::draw(c, &png)?;
    page::write(&out.join("compare.html"), c, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_a_list_or_a_count() {
        assert_eq!(parse_seeds("1,2,3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_seeds("5").unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(parse_seeds("7, 9").unwrap(), vec![7, 9]);
        for bad in ["", "0", "a", "1,,2", "1,1", "-3"] {
            assert!(parse_seeds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn variant_names_must_be_directory_names() {
        for ok in ["lr3", "pretrained+aug", "a.b_c-d"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "-x", "a b", "ü", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    fn result(variant: &str, seed: u64, accuracy: f64) -> RunResult {
        RunResult {
            variant: variant.into(),
            seed,
            settings: String::new(),
            accuracy,
            correct: 0,
            total: 0,
            scored_on: "test".into(),
            best_epoch: 3,
            seconds: 1.0,
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn one_seed_gives_a_table_without_intervals_that_says_why() {
        let req = CompareRequest {
            common: TrainRequest::default(),
            variants: default_variants()[..2].to_vec(),
            seeds: vec![4],
            out: PathBuf::new(),
        };
        let c = summarise(
            &req,
            vec![
                result("pretrained+aug", 4, 0.8),
                result("pretrained", 4, 0.83),
            ],
        );
        let t = table(&c);
        assert!(t.contains("80.00%") && !t.contains('±'), "{t}");
        assert!(t.contains("+3.00 points (one seed: no interval)"), "{t}");
        assert!(
            t.contains("one seed: no standard deviations or intervals"),
            "{t}"
        );
    }

    #[test]
    fn a_variant_overrides_the_common_flags() {
        let common = TrainRequest {
            epochs: Some(5),
            lr: Some(0.01),
            ..Default::default()
        };
        let v = TrainRequest {
            lr: Some(0.003),
            init: Some(InitRequest::Random),
            ..Default::default()
        };
        let m = merged(&common, &v);
        assert_eq!((m.epochs, m.lr), (Some(5), Some(0.003)));
        assert_eq!(m.init, Some(InitRequest::Random));
        let names: Vec<String> = default_variants().into_iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            ["pretrained+aug", "pretrained", "random+aug", "random"]
        );
    }
}

//! `warmstart compare`: the same training under several variants (by default pretrained or random
//! start × augmentation or none) and several seeds, every run a normal run directory
//! (`OUT/<variant>/seed-<s>/`), then each variant's accuracy with its spread and its paired
//! difference from the first variant, the baseline, with a 95% confidence interval.
//!
//! A comparison can be interrupted and re-run with the same command: finished runs are read back
//! (`result.json`), an interrupted one is resumed from its `resume.ckpt`, and since training is
//! bit-reproducible the numbers are those of an uninterrupted comparison.

mod figure;
mod legacy;
mod page;
mod runs;
pub mod stats;
#[cfg(test)]
mod tests;
mod time;
pub mod variant;

use crate::augment::AugmentConfig;
use crate::cluster::{Job, Task};
use crate::device::PrecisionRequest;
use crate::error::{Error, Result};
use crate::fsutil::{create_dir, write_atomic};
use crate::options::{InitRequest, RuntimeArgs, TrainOptions, TrainRequest};
use crate::progress::{Event, Progress};
pub use runs::settings;
use runs::{Cell, DataFingerprints, one_run, read_back};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stats::{Difference, VariantSummary, mean_sd_ci};
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
            options: TrainOptions {
                init: random.then_some(InitRequest::Random),
                augment: no_aug.then_some(AugmentConfig::NONE),
                ..Default::default()
            },
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

/// Seeds when `--seeds` is not given.
pub const DEFAULT_SEEDS: &str = "1,2,3";
/// The comparison's directory when `--out` is not given.
pub const DEFAULT_OUT: &str = "runs/compare";

impl CompareRequest {
    /// A comparison as the user asked for it: `variants` (the default grid when there are none)
    /// over `seeds` (`--seeds`; [`DEFAULT_SEEDS`] when not given), into `common`'s `--out`
    /// ([`DEFAULT_OUT`] when not given), every variant's flags over `common`'s.
    pub fn new(common: TrainRequest, variants: Vec<Variant>, seeds: Option<&str>) -> Result<Self> {
        if common.options.seed.is_some() {
            return Err(Error::invalid(
                "compare takes --seeds (a list such as 1,2,3, or a count), not --seed",
            ));
        }
        let variants = if variants.is_empty() {
            default_variants()
        } else {
            variants
        };
        let seeds = parse_seeds(seeds.unwrap_or(DEFAULT_SEEDS))?;
        let out = common
            .options
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));
        Ok(CompareRequest {
            common,
            variants,
            seeds,
            out,
        })
    }
}

/// The result of one (variant, seed) run, kept in its directory as `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The variant's name.
    pub variant: String,
    /// The seed.
    pub seed: u64,
    /// The run's settings ([`settings`]), to tell a re-run with other flags.
    pub settings: Value,
    /// Accuracy of the kept checkpoint on the test set (or the validation set without one).
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

/// The request of one variant: its own flags over the common ones (the comparison sets each
/// run's `--seed` and `--out`).
fn merged(common: &TrainRequest, v: &TrainRequest) -> TrainRequest {
    let mut options = v.options.over(&common.options);
    options.out = None;
    options.seed = None;
    // A comparison owns its run directories (their settings are checked before a run).
    options.overwrite = true;
    TrainRequest {
        options,
        runtime: RuntimeArgs {
            // Per variant, so that a comparison can set fp32 against bf16 (`auto` is the default).
            precision: if v.runtime.precision == PrecisionRequest::Auto {
                common.runtime.precision
            } else {
                v.runtime.precision
            },
            ..common.runtime
        },
    }
}

/// Checks the variants' names, creates the output directory and says where the default start
/// comes from (once, first).
fn prepare(req: &CompareRequest, progress: &mut dyn Progress) -> Result<()> {
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
    // Variants that start from the default pretraining start from the bundled one where there
    // is none yet: said once, first.
    let notes = req.variants.iter().map(|v| {
        crate::plan::resolve(
            crate::record::Stage::Train,
            &merged(&req.common, &v.request),
        )
        .map(|p| p.start_note)
    });
    if let Some(note) = notes
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .next()
    {
        progress.event(Event::Info(note));
    }
    Ok(())
}

/// Every (variant, seed) of the comparison, variant by variant.
fn cells(req: &CompareRequest) -> Vec<Cell<'_>> {
    req.variants
        .iter()
        .flat_map(|v| {
            let base = merged(&req.common, &v.request);
            req.seeds
                .iter()
                .map(move |&seed| Cell::new(req, v, &base, seed))
        })
        .collect()
}

/// Runs (or reads back, or resumes) every (variant, seed) and writes `compare.csv`,
/// `compare.json`, `compare.png`, `compare-time.png` and `compare.html` into the output directory.
pub fn run(req: &CompareRequest, progress: &mut dyn Progress) -> Result<Comparison> {
    prepare(req, progress)?;
    let total = req.variants.len() * req.seeds.len();
    progress.event(Event::Info(format!(
        "Comparing {} variants x {} seeds ({total} runs) in {}",
        req.variants.len(),
        req.seeds.len(),
        req.out.display()
    )));
    progress.event(Event::RunsStarted {
        total,
        what: "compare",
    });
    let mut runs = Vec::with_capacity(total);
    let mut data = DataFingerprints::default();
    for cell in cells(req) {
        let r = one_run(req, &cell, &mut data, progress)?;
        progress.event(Event::RunDone(format!(
            "[{}/{total}] {}",
            runs.len() + 1,
            run_line(&r)
        )));
        runs.push(r);
    }
    let c = summarise(req, runs);
    write_outputs(&req.out, &c)?;
    Ok(c)
}

/// `pretrained seed 2: test accuracy 0.8550 (855/1000), best epoch 41, 97 s`.
pub fn run_line(r: &RunResult) -> String {
    format!(
        "{} seed {}: {} accuracy {:.4} ({}/{}), best epoch {}, {:.0} s",
        r.variant, r.seed, r.scored_on, r.accuracy, r.correct, r.total, r.best_epoch, r.seconds
    )
}

/// Runs (or reads back, or resumes) the one run `name` (`VARIANT/seed-S`, as its directory) of
/// the comparison, and writes no table: what each task of `--on slurm` and each line of
/// `--on list` does.
pub fn run_cell(
    req: &CompareRequest,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    prepare(req, progress)?;
    let all = cells(req);
    let cell = all.iter().find(|c| c.name() == name).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(Cell::name).collect();
        Error::invalid(format!(
            "--cell {name:?} is not a run of this comparison; its runs are {}",
            names.join(", ")
        ))
    })?;
    one_run(req, cell, &mut DataFingerprints::default(), progress)
}

/// The runs not finished yet, for another engine (`--on slurm`, `--on list`); refuses, as the
/// local loop would, a run trained with other settings or on other data.
pub fn job(req: &CompareRequest, progress: &mut dyn Progress) -> Result<Job> {
    prepare(req, progress)?;
    let mut data = DataFingerprints::default();
    let mut tasks = Vec::new();
    let mut resident = 0;
    for cell in cells(req) {
        let r = &cell.request;
        let plan = crate::plan::resolve(crate::record::Stage::Train, r)?;
        let f = data.of(r)?;
        let pool = data.pool_size(r)?;
        resident = resident.max((f.train + f.val + f.test.unwrap_or(0) + pool) as u64);
        if read_back(req, &cell, &mut data)?.is_some() {
            continue;
        }
        // A pool step trains on the labelled batch and two views of `ratio` times as many
        // pool images.
        let per_epoch = plan
            .record
            .unlabeled
            .as_ref()
            .map_or(1.0, |u| 1.0 + 2.0 * u.ratio as f64);
        tasks.push(Task {
            name: cell.name(),
            select: vec!["--cell".into(), cell.name()],
            images: (f.train as f64 * per_epoch * plan.record.epochs as f64) as u64,
            budget_s: plan.record.time.map(|t| t.seconds()),
        });
    }
    Ok(Job {
        what: "compare",
        out: req.out.clone(),
        tasks,
        resident_images: resident,
    })
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
    let time_png = out.join("compare-time.png");
    time::draw(c, &time_png)?;
    page::write(&out.join("compare.html"), c, &png, &time_png)
}

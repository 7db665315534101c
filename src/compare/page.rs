//! `compare.html`: one self-contained page with the table, the figure and links to every run's
//! own report, rendered from `templates/compare.html`.

use super::{Comparison, points};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use askama::Template;
use base64::Engine;
use std::path::Path;

/// One row of the summary table, formatted.
struct Row<'a> {
    name: &'a str,
    flags: &'a str,
    accuracy: String,
    range: String,
    best_epoch: String,
    seconds: String,
    difference: String,
}

/// One run, with the link to its report.
struct Run<'a> {
    variant: &'a str,
    seed: u64,
    accuracy: String,
    report: String,
}

#[derive(Template)]
#[template(path = "compare.html")]
struct Page<'a> {
    title: String,
    baseline: &'a str,
    scored_on: String,
    rows: Vec<Row<'a>>,
    runs: Vec<Run<'a>>,
    png: String,
    time_png: String,
    one_seed: bool,
    version: &'static str,
}

/// Writes the page into `path`, embedding the figures at `png` (accuracy by variant) and
/// `time_png` (accuracy against minutes).
pub fn write(path: &Path, c: &Comparison, png: &Path, time_png: &Path) -> Result<()> {
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let rows = c
        .summary
        .iter()
        .enumerate()
        .map(|(i, s)| Row {
            name: &s.name,
            flags: &c.flags[i],
            accuracy: match s.sd {
                Some(sd) => format!("{} ± {:.2}", pct(s.mean), 100.0 * sd),
                None => pct(s.mean),
            },
            range: format!("{} – {}", pct(s.min), pct(s.max)),
            best_epoch: format!("{:.1}", s.mean_best_epoch),
            seconds: format!("{:.1}", s.mean_seconds),
            difference: match i {
                0 => "baseline".into(),
                _ => points(&c.differences[i - 1]),
            },
        })
        .collect();
    let runs = c
        .runs
        .iter()
        .map(|r| Run {
            variant: &r.variant,
            seed: r.seed,
            accuracy: format!("{} ({}/{})", pct(r.accuracy), r.correct, r.total),
            report: format!("{}/report.html", r.dir.display()),
        })
        .collect();
    let mut sets: Vec<&str> = c.runs.iter().map(|r| r.scored_on.as_str()).collect();
    sets.sort_unstable();
    sets.dedup();
    let embed = |p: &Path| {
        std::fs::read(p)
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .map_err(|e| Error::io(p, e))
    };
    let page = Page {
        title: format!(
            "warmstart compare: {} variants x {} seeds",
            c.variants.len(),
            c.seeds.len()
        ),
        baseline: &c.variants[0],
        scored_on: sets.join(" or "),
        rows,
        runs,
        png: embed(png)?,
        time_png: embed(time_png)?,
        one_seed: c.seeds.len() < 2,
        version: env!("CARGO_PKG_VERSION"),
    };
    let html = page
        .render()
        .map_err(|e| Error::invalid(format!("cannot render the comparison page: {e}")))?;
    write_atomic(path, html.as_bytes())
}

//! `audit.html`: one self-contained page (each image a PNG data URI, drawn enlarged) with the
//! likely wrong labels, the per-class estimates, the duplicates and the outliers, rendered from
//! `templates/audit.html` by askama, which escapes every value (file and class names come from
//! users).

use super::Audit;
use crate::data::Images;
use crate::data::prepare::png_bytes;
use crate::error::{Error, Result};
use askama::Template;
use base64::Engine;

/// Most likely-wrong labels shown (the CSV lists all).
const SHOWN_ISSUES: usize = 200;
/// Most duplicate pairs shown.
const SHOWN_PAIRS: usize = 100;
/// Most outliers shown.
const SHOWN_OUTLIERS: usize = 60;

/// One image on the page.
struct Tile {
    png: String,
    name: String,
    caption: String,
    detail: String,
}

/// Two images on the page.
struct TwoTiles {
    a: Tile,
    b: Tile,
    kind: String,
}

struct ClassRow<'a> {
    class: &'a str,
    images: usize,
    wrong: String,
    flagged: usize,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct Page<'a> {
    summary: Vec<(String, String)>,
    classes: Vec<ClassRow<'a>>,
    issues: Vec<Tile>,
    issues_total: usize,
    pairs: Vec<TwoTiles>,
    pairs_total: usize,
    outliers: Vec<Tile>,
    outliers_total: usize,
    version: &'static str,
}

/// The 28x28 image `i` of `set` as a base64 PNG.
fn png(set: &Images, i: usize) -> Result<String> {
    Ok(base64::engine::general_purpose::STANDARD.encode(png_bytes(set.image(i))?))
}

fn pct(p: f32) -> String {
    format!("{:.0}%", 100.0 * p)
}

/// Renders the page.
pub fn render(a: &Audit) -> Result<String> {
    let classes = &a.data.classes;
    let c = classes.len();
    let images = &a.data.images;
    let f = &a.findings;
    let s = &a.similarity;
    let root = &a.data.source;
    let name = |i: usize| a.data.origins[i].relative_to(root);
    let issues = f
        .issues
        .iter()
        .take(SHOWN_ISSUES)
        .map(|x| {
            let p = &a.probs[x.image * c..(x.image + 1) * c];
            Ok(Tile {
                png: png(images, x.image)?,
                name: name(x.image),
                caption: format!(
                    "{} → {}",
                    classes[x.given as usize], classes[x.suggested as usize]
                ),
                detail: format!(
                    "given {} · suggested {}",
                    pct(p[x.given as usize]),
                    pct(p[x.suggested as usize])
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let label = |i: usize| classes[images.label(i) as usize].clone();
    let mut pairs = Vec::new();
    let test = a.data.test.as_ref();
    for (p, across) in s
        .within
        .iter()
        .map(|p| (p, false))
        .chain(s.across.iter().map(|p| (p, true)))
        .take(SHOWN_PAIRS)
    {
        let b = match (across, test) {
            (true, Some(t)) => Tile {
                png: png(t, p.b)?,
                name: a.data.test_origins[p.b].relative_to(root),
                caption: format!("test: {}", classes[t.label(p.b) as usize]),
                detail: String::new(),
            },
            _ => Tile {
                png: png(images, p.b)?,
                name: name(p.b),
                caption: label(p.b),
                detail: String::new(),
            },
        };
        pairs.push(TwoTiles {
            a: Tile {
                png: png(images, p.a)?,
                name: name(p.a),
                caption: label(p.a),
                detail: String::new(),
            },
            b,
            kind: format!(
                "{} {}, correlation {:.3}",
                if p.exact { "exact copy" } else { "near copy" },
                if across {
                    "in the test set"
                } else {
                    "among the labelled images"
                },
                p.correlation
            ),
        });
    }
    let outliers = s
        .outliers
        .iter()
        .take(SHOWN_OUTLIERS)
        .map(|&i| {
            Ok(Tile {
                png: png(images, i)?,
                name: name(i),
                caption: label(i),
                detail: format!("typicality {:.2}", s.typicality[i]),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let wrong: f64 = f.estimated_wrong.iter().sum();
    let summary = vec![
        (
            "Data".to_string(),
            format!("{} labelled images, {c} classes", images.len()),
        ),
        (
            "Cross-validation".to_string(),
            format!(
                "{} folds; out-of-fold predictions agree with {:.1}% of the given labels",
                a.folds.iter().max().map_or(0, |m| m + 1),
                100.0 * a.agreement()
            ),
        ),
        (
            "Wrong labels".to_string(),
            format!(
                "about {wrong:.0} estimated ({:.1}%); {} flagged",
                100.0 * wrong / images.len().max(1) as f64,
                f.issues.len()
            ),
        ),
        (
            "Duplicates".to_string(),
            format!(
                "{} pairs among the labelled images, {} with the test set",
                s.within.len(),
                s.across.len()
            ),
        ),
        ("Outliers".to_string(), s.outliers.len().to_string()),
    ];
    let class_rows = (0..c)
        .map(|k| ClassRow {
            class: &classes[k],
            images: f.counts[k],
            wrong: format!("{:.1}", f.estimated_wrong[k]),
            flagged: f.issues.iter().filter(|x| x.given as usize == k).count(),
        })
        .collect();
    Page {
        summary,
        classes: class_rows,
        issues,
        issues_total: f.issues.len(),
        pairs,
        pairs_total: s.within.len() + s.across.len(),
        outliers,
        outliers_total: s.outliers.len(),
        version: env!("CARGO_PKG_VERSION"),
    }
    .render()
    .map_err(|e| Error::invalid(format!("cannot render the audit page: {e}")))
}

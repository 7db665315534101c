//! The audit's files: CSV tables a script can act on (each image named by its file, and its
//! position when the file holds many) and the page. Each is written whole or not at all.

use super::{Audit, page};
use crate::data::labelled::Origin;
use crate::error::Result;
use crate::fsutil::{create_dir, csv_bytes, write_atomic};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `file`, `index` columns of an image.
fn place(o: &Origin) -> [String; 2] {
    [
        o.file().display().to_string(),
        o.index().map_or(String::new(), |i| i.to_string()),
    ]
}

fn probability(p: f32) -> String {
    format!("{p:.4}")
}

/// Writes every file of `audit` into its directory.
pub fn all(a: &Audit) -> Result<()> {
    create_dir(&a.out)?;
    let classes = &a.data.classes;
    let c = classes.len();
    let origins = &a.data.origins;
    let issues = csv_bytes(
        &strings(&[
            "rank",
            "file",
            "index",
            "given",
            "suggested",
            "given_probability",
            "suggested_probability",
        ]),
        a.findings.issues.iter().enumerate().map(|(r, x)| {
            let p = &a.probs[x.image * c..(x.image + 1) * c];
            let [file, index] = place(&origins[x.image]);
            vec![
                (r + 1).to_string(),
                file,
                index,
                classes[x.given as usize].clone(),
                classes[x.suggested as usize].clone(),
                probability(p[x.given as usize]),
                probability(p[x.suggested as usize]),
            ]
        }),
    )?;
    let per_class = csv_bytes(
        &strings(&["class", "images", "estimated_wrong", "threshold", "flagged"]),
        (0..c).map(|k| {
            let flagged = a
                .findings
                .issues
                .iter()
                .filter(|x| x.given as usize == k)
                .count();
            vec![
                classes[k].clone(),
                a.findings.counts[k].to_string(),
                format!("{:.1}", a.findings.estimated_wrong[k]),
                probability(a.findings.thresholds[k]),
                flagged.to_string(),
            ]
        }),
    )?;
    let test_origins = &a.data.test_origins;
    let s = &a.similarity;
    let pair_rows = |pairs: &[super::Pair], between: &'static str, other: &[Origin]| {
        pairs
            .iter()
            .map(|p| {
                let [fa, ia] = place(&origins[p.a]);
                let [fb, ib] = place(&other[p.b]);
                vec![
                    if p.exact { "exact" } else { "near" }.to_string(),
                    between.to_string(),
                    fa,
                    ia,
                    fb,
                    ib,
                    probability(p.correlation),
                ]
            })
            .collect::<Vec<_>>()
    };
    let mut dup_rows = pair_rows(&s.within, "labelled", origins);
    dup_rows.extend(pair_rows(&s.across, "labelled-test", test_origins));
    let duplicates = csv_bytes(
        &strings(&[
            "kind",
            "between",
            "file",
            "index",
            "other_file",
            "other_index",
            "correlation",
        ]),
        dup_rows.into_iter(),
    )?;
    let labels = a.data.images.labels();
    let outliers = csv_bytes(
        &strings(&["rank", "file", "index", "given", "typicality"]),
        s.outliers.iter().enumerate().map(|(r, &i)| {
            let [file, index] = place(&origins[i]);
            vec![
                (r + 1).to_string(),
                file,
                index,
                classes[labels[i] as usize].clone(),
                probability(s.typicality[i]),
            ]
        }),
    )?;
    let mut oof_header = strings(&["file", "index", "given", "fold", "label_quality"]);
    oof_header.extend(classes.iter().map(|k| format!("p_{k}")));
    let oof = csv_bytes(
        &oof_header,
        (0..labels.len()).map(|i| {
            let p = &a.probs[i * c..(i + 1) * c];
            let [file, index] = place(&origins[i]);
            let mut row = vec![
                file,
                index,
                classes[labels[i] as usize].clone(),
                (a.folds[i] + 1).to_string(),
                probability(p[labels[i] as usize]),
            ];
            row.extend(p.iter().map(|&v| probability(v)));
            row
        }),
    )?;
    let html = page::render(a)?;
    for (name, bytes) in [
        ("label_issues.csv", issues),
        ("classes.csv", per_class),
        ("duplicates.csv", duplicates),
        ("outliers.csv", outliers),
        ("out_of_fold.csv", oof),
        ("audit.html", html.into_bytes()),
    ] {
        write_atomic(&a.out.join(name), &bytes)?;
    }
    Ok(())
}

//! `report.html`: one self-contained page (images embedded as data URIs) with a run's
//! configuration, curves, metrics, confusion matrix, mistakes and augmentation preview, rendered
//! from `templates/report.html` by askama, which escapes every value (class names come from users'
//! folder names).

use crate::error::{Error, Result};
use crate::eval::ClassScore;
use crate::fsutil::write_atomic;
use askama::Template;
use base64::Engine;
use std::path::{Path, PathBuf};

/// A figure of the report.
pub struct Figure {
    /// Heading (the page title for [`Report`]).
    pub title: String,
    /// What the figure shows.
    pub caption: String,
    /// The PNG file, embedded into the page.
    pub png: PathBuf,
}

/// Everything the page shows.
pub struct Report {
    /// Heading (the page title for [`Report`]).
    pub title: String,
    /// Headline figures, as (name, value) rows.
    pub metrics: Vec<(String, String)>,
    /// The run's configuration, as (name, value) rows.
    pub config: Vec<(String, String)>,
    /// Per-class precision, recall and F1.
    pub scores: Vec<ClassScore>,
    /// Which set the scores, confusion matrix and mistakes are about.
    pub scored_on: String,
    /// Figures, in page order.
    pub figures: Vec<Figure>,
}

/// A figure with its PNG read and encoded for a data URI.
struct Embedded<'a> {
    title: &'a str,
    caption: &'a str,
    base64: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Report,
    figures: Vec<Embedded<'a>>,
    version: &'static str,
}

/// Renders the page.
pub fn render(r: &Report) -> Result<String> {
    let figures = r
        .figures
        .iter()
        .map(|f| {
            let bytes = std::fs::read(&f.png).map_err(|e| Error::io(&f.png, e))?;
            Ok(Embedded {
                title: &f.title,
                caption: &f.caption,
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let page = Page {
        r,
        figures,
        version: env!("CARGO_PKG_VERSION"),
    };
    page.render()
        .map_err(|e| Error::invalid(format!("cannot render the report: {e}")))
}

/// Renders the page into `path`, atomically.
pub fn write(path: &Path, r: &Report) -> Result<()> {
    write_atomic(path, render(r)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_images_and_escapes_names() {
        let d = tempfile::tempdir().unwrap();
        let png = d.path().join("x.png");
        image::GrayImage::from_pixel(2, 2, image::Luma([9]))
            .save(&png)
            .unwrap();
        let r = Report {
            title: "run <1>".into(),
            metrics: vec![("Test accuracy".into(), "0.9".into())],
            config: vec![("epochs".into(), "3".into())],
            scores: vec![ClassScore {
                class: "<script>".into(),
                precision: 1.0,
                recall: 0.5,
                f1: 2.0 / 3.0,
                support: 2,
            }],
            scored_on: "test set".into(),
            figures: vec![Figure {
                title: "Curves".into(),
                caption: "c".into(),
                png: png.clone(),
            }],
        };
        let html = render(&r).unwrap();
        // askama writes `<` and `>` as numeric references.
        assert!(html.contains("<title>run &#60;1&#62;</title>"), "{html}");
        assert!(html.contains("<td>&#60;script&#62;</td>"), "{html}");
        assert!(!html.contains("<script>\""), "{html}");
        assert!(html.contains("<td class=\"num\">0.6667</td>"), "{html}");
        assert!(
            html.contains("<tr><th>epochs</th><td>3</td></tr>"),
            "{html}"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&png).unwrap());
        assert!(html.contains(&format!("src=\"data:image/png;base64,{b64}\"")));
        assert!(!html.contains("src=\"x.png\""));
    }
}

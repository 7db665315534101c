//! `report.html`: one self-contained page (images embedded as data URIs) with a run's
//! configuration, curves, metrics, confusion matrix, mistakes and augmentation preview.

use crate::error::{Error, Result};
use crate::eval::ClassScore;
use crate::fsutil::write_atomic;
use base64::Engine;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A figure of the report.
pub struct Figure {
    pub title: String,
    pub caption: String,
    pub png: PathBuf,
}

/// Everything the page shows.
pub struct Report {
    pub title: String,
    /// Headline figures, as (name, value) rows.
    pub metrics: Vec<(String, String)>,
    /// The run's configuration, as (name, value) rows.
    pub config: Vec<(String, String)>,
    pub scores: Vec<ClassScore>,
    /// Which set the scores, confusion matrix and mistakes are about.
    pub scored_on: String,
    pub figures: Vec<Figure>,
}

/// Escapes text for HTML (class names come from users' folder names).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    s.push_str("</table>\n");
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1300px;\
margin:2em auto;padding:0 1em;color:#222}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}\
table.kv th{color:#555;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}\
.grid{display:flex;flex-wrap:wrap;gap:2em}";

/// Renders the page.
pub fn render(r: &Report) -> Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(&r.title)
    );
    let _ = write!(
        s,
        "<div class=\"grid\"><section><h2>Results</h2>\n{}</section>\n<section><h2>Configuration</h2>\n{}</section></div>\n",
        table(&r.metrics),
        table(&r.config)
    );
    for f in &r.figures {
        let bytes = std::fs::read(&f.png).map_err(|e| Error::io(&f.png, e))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = write!(
            s,
            "<h2>{}</h2>\n<figure><img alt=\"{}\" src=\"data:image/png;base64,{b64}\">\
             <figcaption>{}</figcaption></figure>\n",
            escape(&f.title),
            escape(&f.title),
            escape(&f.caption)
        );
    }
    if !r.scores.is_empty() {
        let _ = write!(
            s,
            "<h2>Per-class scores ({})</h2>\n<table>\n<tr><th>class</th><th>precision</th><th>recall</th>\
             <th>F1</th><th>support</th></tr>\n",
            escape(&r.scored_on)
        );
        for c in &r.scores {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td>\
                 <td class=\"num\">{:.4}</td><td class=\"num\">{}</td></tr>",
                escape(&c.class),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }
        s.push_str("</table>\n");
    }
    // Lets automated checks (and curious readers) see that every embedded image decoded.
    s.push_str(
        "<script>window.addEventListener('load',function(){var im=document.images,ok=0;\
         for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}\
         document.body.setAttribute('data-images-total',im.length);\
         document.body.setAttribute('data-images-loaded',ok);});</script>\n",
    );
    let _ = write!(
        s,
        "<p><small>Written by warmstart {}.</small></p>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(s)
}

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
        assert!(html.contains("<title>run &lt;1&gt;</title>"));
        assert!(html.contains("&lt;script&gt;"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&png).unwrap());
        assert!(html.contains(&format!("src=\"data:image/png;base64,{b64}\"")));
        assert!(!html.contains("src=\"x.png\""));
    }
}

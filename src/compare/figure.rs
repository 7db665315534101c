//! `compare.png`: one column per variant, every seed's accuracy a dot, the mean a bar and its 95%
//! interval a whisker.

use super::Comparison;
use crate::error::Result;
use crate::report::plot::{draw_err, render_png};
use plotters::prelude::*;
use std::path::Path;

/// Colour of the seeds' dots.
pub const DOT: RGBColor = RGBColor(31, 119, 180);
/// Colour of the mean and its interval.
pub const MEAN: RGBColor = RGBColor(214, 39, 40);

/// Draws the comparison into `path`.
pub fn draw(c: &Comparison, path: &Path) -> Result<()> {
    let k = c.variants.len();
    let pct: Vec<Vec<f64>> = c
        .variants
        .iter()
        .map(|v| {
            c.runs
                .iter()
                .filter(|r| &r.variant == v)
                .map(|r| 100.0 * r.accuracy)
                .collect()
        })
        .collect();
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for (s, xs) in c.summary.iter().zip(&pct) {
        let h = 100.0 * s.ci.unwrap_or(0.0);
        for y in xs
            .iter()
            .copied()
            .chain([100.0 * s.mean - h, 100.0 * s.mean + h])
        {
            if y.is_finite() {
                lo = lo.min(y);
                hi = hi.max(y);
            }
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 100.0);
    }
    let pad = ((hi - lo) * 0.15).max(0.2);
    let (lo, hi) = ((lo - pad).max(0.0), (hi + pad).min(100.0));
    let width = (200 + 160 * k as u32).max(520);
    render_png(path, (width, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Accuracy over {} seed(s), mean and 95% interval",
                    c.seeds.len()
                ),
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..k as f64 - 0.5, lo..hi)
            .map_err(draw_err)?;
        let names = c.variants.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(k + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("accuracy (%)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;
        for (i, (s, xs)) in c.summary.iter().zip(&pct).enumerate() {
            let x = i as f64;
            // Seeds spread a little sideways so equal accuracies stay visible.
            let n = xs.len().max(1) as f64;
            chart
                .draw_series(xs.iter().enumerate().map(|(j, &y)| {
                    let dx = 0.25 * ((j as f64 + 0.5) / n - 0.5);
                    Circle::new((x + dx, y), 5, DOT.filled())
                }))
                .map_err(draw_err)?;
            let m = 100.0 * s.mean;
            chart
                .draw_series([PathElement::new(
                    vec![(x - 0.22, m), (x + 0.22, m)],
                    MEAN.stroke_width(3),
                )])
                .map_err(draw_err)?;
            if let Some(h) = s.ci {
                let (a, b) = ((m - 100.0 * h).max(lo), (m + 100.0 * h).min(hi));
                let lines = [
                    vec![(x, a), (x, b)],
                    vec![(x - 0.08, a), (x + 0.08, a)],
                    vec![(x - 0.08, b), (x + 0.08, b)],
                ];
                chart
                    .draw_series(
                        lines
                            .into_iter()
                            .map(|l| PathElement::new(l, MEAN.stroke_width(2))),
                    )
                    .map_err(draw_err)?;
            }
        }
        Ok(())
    })
}

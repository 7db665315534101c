//! `compare-time.png`: accuracy against training minutes, one colour per variant: each seed a
//! dot, the variant's mean a ringed marker at its mean time, named. Users think in minutes: a
//! variant that gains half a point for three times the minutes (the unlabelled pool, more
//! epochs) shows where it lies against one that is cheaper, and `--time` variants line up
//! along their budgets.

use super::Comparison;
use crate::error::Result;
use crate::report::plot::{draw_err, render_png};
use plotters::prelude::*;
use std::path::Path;

/// The variants' colours, in order (then again from the first).
pub const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One variant's runs as (minutes, accuracy %) points, and their mean.
struct Points {
    name: String,
    runs: Vec<(f64, f64)>,
    mean: (f64, f64),
}

fn points(c: &Comparison) -> Vec<Points> {
    c.variants
        .iter()
        .map(|v| {
            let runs: Vec<(f64, f64)> = c
                .runs
                .iter()
                .filter(|r| &r.variant == v)
                .map(|r| (r.seconds / 60.0, 100.0 * r.accuracy))
                .collect();
            let n = runs.len().max(1) as f64;
            let mean = (
                runs.iter().map(|p| p.0).sum::<f64>() / n,
                runs.iter().map(|p| p.1).sum::<f64>() / n,
            );
            Points {
                name: v.clone(),
                runs,
                mean,
            }
        })
        .collect()
}

/// The range of `xs` with a margin, within `[floor, ceil]`.
fn span(xs: impl Iterator<Item = f64>, floor: f64, ceil: f64, least: f64) -> (f64, f64) {
    let (lo, hi) = xs
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (floor, ceil);
    }
    let pad = ((hi - lo) * 0.15).max(least);
    ((lo - pad).max(floor), (hi + pad).min(ceil))
}

/// Draws accuracy against training minutes into `path`.
pub fn draw(c: &Comparison, path: &Path) -> Result<()> {
    let variants = points(c);
    let all = || variants.iter().flat_map(|v| v.runs.iter().copied());
    let (x0, x1) = span(all().map(|p| p.0), 0.0, f64::INFINITY, 0.05);
    let (y0, y1) = span(all().map(|p| p.1), 0.0, 100.0, 0.2);
    render_png(path, (720, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Accuracy against training time", ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("training time (minutes)")
            .y_desc("accuracy (%)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;
        for (i, v) in variants.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(
                    v.runs
                        .iter()
                        .map(|&p| Circle::new(p, 4, colour.mix(0.6).filled())),
                )
                .map_err(draw_err)?;
            chart
                .draw_series([
                    Circle::new(v.mean, 8, colour.stroke_width(3)),
                    Circle::new(v.mean, 3, colour.filled()),
                ])
                .map_err(draw_err)?
                .label(v.name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_has_a_margin_and_stays_within_its_bounds() {
        let (lo, hi) = span([2.0, 4.0].into_iter(), 0.0, f64::INFINITY, 0.05);
        assert!(
            (lo - 1.7).abs() < 1e-9 && (hi - 4.3).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(span([99.9].into_iter(), 0.0, 100.0, 0.2), (99.7, 100.0));
        assert_eq!(span(std::iter::empty(), 0.0, 100.0, 0.2), (0.0, 100.0));
    }
}

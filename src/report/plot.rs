//! Training curves: accuracy and loss per epoch, train against validation.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::history::{EpochRecord, History};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The bundled font (DejaVu Sans), so charts render the same on any machine without system fonts.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse, so this cannot fail at run time.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, FONT);
    });
}

/// A plotting failure as the library's error.
pub fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("cannot draw chart: {e}"))
}

/// A drawing area in pixel coordinates.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws into an RGB buffer of `w x h` and writes it as PNG atomically.
pub fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    render_png_then(path, size, draw, |_| {})
}

/// Like [`render_png`], then lets `post` paint raster content (such as images) onto the result.
pub fn render_png_then(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
    post: impl FnOnce(&mut image::RgbImage),
) -> Result<()> {
    register_font();
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    let mut img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::invalid("chart buffer has the wrong size"))?;
    post(&mut img);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("cannot encode PNG: {e}")))?;
    write_atomic(path, &png)
}

/// One panel: a train and a validation series over epochs.
/// One named line of a panel.
type Series<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

fn panel(area: &Area<'_>, title: &str, y_label: &str, series: &[Series<'_>]) -> Result<()> {
    let epochs = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1) as f64;
    let ys = series
        .iter()
        .flat_map(|s| s.1.iter())
        .map(|p| p.1)
        .filter(|v| v.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..epochs + 0.5, (lo - pad)..(hi + pad))
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels(epochs.min(15.0) as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(draw_err)?;
    for &(name, data, color) in series {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// Writes the accuracy and loss curves of a run side by side.
pub fn curves(history: &History, path: &Path) -> Result<()> {
    let pts = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        history.0.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    // A semi-supervised run adds a third panel: the unlabelled pool.
    let pool = |f: fn(&crate::history::PoolEpoch) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .0
            .iter()
            .filter_map(|r| Some((r.epoch as f64, f(r.pool.as_ref()?)?)))
            .collect()
    };
    let confident = pool(|p| Some(p.confident));
    let pseudo_acc = pool(|p| p.pseudo_acc);
    let width = if confident.is_empty() { 1200 } else { 1800 };
    render_png(path, (width, 480), |root| {
        let panels = root.split_evenly((1, width as usize / 600));
        panel(
            &panels[0],
            "Accuracy",
            "accuracy",
            &[
                ("train", &pts(|r| r.acc), BLUE),
                ("validation", &pts(|r| r.val_acc), RED),
            ],
        )?;
        panel(
            &panels[1],
            "Loss",
            "cross-entropy loss",
            &[
                ("train", &pts(|r| r.loss), BLUE),
                ("validation", &pts(|r| r.val_loss), RED),
            ],
        )?;
        if let Some(third) = panels.get(2) {
            let mut series: Vec<Series<'_>> = vec![("confident share", &confident, GREEN)];
            if !pseudo_acc.is_empty() {
                series.push(("pseudo-label accuracy", &pseudo_acc, MAGENTA));
            }
            panel(third, "Unlabelled pool", "fraction", &series)?;
        }
        Ok(())
    })
}

/// Writes the learning-rate finder's curve: smoothed loss against the rate (log scale), with the
/// suggested rate marked.
pub fn lr_find(lrs: &[f64], losses: &[f64], suggestion: f64, path: &Path) -> Result<()> {
    let (lo, hi) = (
        lrs.first().copied().unwrap_or(1e-7),
        lrs.last().copied().unwrap_or(10.0),
    );
    let finite = losses.iter().copied().filter(|v| v.is_finite());
    let (ymin, ymax) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (ymin, ymax) = if ymin.is_finite() {
        (ymin, ymax)
    } else {
        (0.0, 1.0)
    };
    let pad = ((ymax - ymin) * 0.08).max(1e-3);
    render_png(path, (900, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Learning-rate finder: suggestion {suggestion:.2e}"),
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (lo..hi.max(lo * 10.0)).log_scale(),
                (ymin - pad)..(ymax + pad),
            )
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("learning rate (log scale)")
            .y_desc("smoothed training loss")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(
                lrs.iter().copied().zip(losses.iter().copied()),
                BLUE.stroke_width(2),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series([PathElement::new(
                vec![(suggestion, ymin - pad), (suggestion, ymax + pad)],
                RED.stroke_width(2),
            )])
            .map_err(draw_err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use EpochRecord;

    #[test]
    fn curves_png_has_drawn_content() {
        let h = History(
            (1..=5)
                .map(|e| EpochRecord {
                    epoch: e,
                    seconds: 1.0,
                    loss: 1.0 / e as f64,
                    acc: 1.0 - 0.5 / e as f64,
                    val_loss: 1.2 / e as f64,
                    val_acc: 1.0 - 0.6 / e as f64,
                    pool: None,
                })
                .collect(),
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("curves.png");
        curves(&h, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1200, 480));
        let red = img
            .pixels()
            .filter(|p| p.0[0] > 200 && p.0[1] < 60 && p.0[2] < 60)
            .count();
        let blue = img
            .pixels()
            .filter(|p| p.0[2] > 200 && p.0[0] < 60 && p.0[1] < 60)
            .count();
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(red > 200 && blue > 200, "red {red} blue {blue}");
        assert!(dark > 500, "no text or axes drawn: {dark}");
    }
}

//! Pictures of a model's behaviour: the confusion matrix, the gallery of the most confidently wrong
//! images, and the augmentation preview. Drawn in pixel space with `plotters`; the 28x28 images are
//! painted onto the result scaled up with nearest-neighbour sampling so their pixels stay visible.

use super::plot::{Area, draw_err, render_png, render_png_then};
use crate::augment::{Affine, AugmentConfig};
use crate::data::{Images, PIXELS, SIDE};
use crate::error::{Error, Result};
use crate::eval::{Confusion, Predictions};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rand::SeedableRng;
use std::path::Path;

fn text(
    area: &Area<'_>,
    s: &str,
    (x, y): (i32, i32),
    size: u32,
    h: HPos,
    color: RGBColor,
) -> Result<()> {
    let style = TextStyle::from(("sans-serif", size).into_font())
        .color(&color)
        .pos(Pos::new(h, VPos::Center));
    area.draw(&Text::new(s.to_string(), (x, y), style))
        .map_err(draw_err)
}

/// Shortens a label to at most `n` characters.
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// White to dark blue.
fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    RGBColor(
        (255.0 - 230.0 * v) as u8,
        (255.0 - 180.0 * v) as u8,
        (255.0 - 100.0 * v) as u8,
    )
}

/// Writes the confusion matrix as two heat maps side by side: counts, and each row divided by its
/// total (so a class's recall is its diagonal cell). Class names label both axes.
pub fn confusion_png(c: &Confusion, title: &str, path: &Path) -> Result<()> {
    let k = c.classes.len();
    // The grid stays about 768 pixels wide whatever the class count (at most 1,000: a cell of
    // two pixels), so the file stays small; names and counts are drawn only where they fit.
    let cell: i32 = if k <= 12 { 64 } else { (768 / k as i32).max(2) };
    let font = (cell as u32 / 5).clamp(8, 13);
    let label_chars = 14;
    let left = 130;
    let top = 90;
    let grid = cell * k as i32;
    let panel_w = left + grid + 30;
    let w = (2 * panel_w + 20) as u32;
    let h = (top + grid + 80) as u32;
    let totals: Vec<usize> = c.counts.iter().map(|r| r.iter().sum()).collect();
    let max = c.counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    render_png(path, (w, h), |root| {
        text(root, title, (w as i32 / 2, 22), 22, HPos::Center, BLACK)?;
        for (p, normalised) in [(0, false), (1, true)] {
            let x0 = 10 + p * panel_w + left;
            let sub = if normalised {
                "row-normalised (recall on the diagonal)"
            } else {
                "counts"
            };
            text(root, sub, (x0 + grid / 2, 52), 16, HPos::Center, BLACK)?;
            for (i, row) in c.counts.iter().enumerate() {
                for (j, &n) in row.iter().enumerate() {
                    let v = if normalised {
                        n as f64 / totals[i].max(1) as f64
                    } else {
                        n as f64 / max as f64
                    };
                    let (x, y) = (x0 + j as i32 * cell, top + i as i32 * cell);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + cell, y + cell)],
                        heat(v).filled(),
                    ))
                    .map_err(draw_err)?;
                    if cell >= 6 {
                        root.draw(&Rectangle::new(
                            [(x, y), (x + cell, y + cell)],
                            RGBColor(220, 220, 220),
                        ))
                        .map_err(draw_err)?;
                    }
                    if cell >= 28 {
                        let s = if normalised {
                            format!("{:.2}", v)
                        } else {
                            n.to_string()
                        };
                        let color = if v > 0.55 { WHITE } else { BLACK };
                        text(
                            root,
                            &s,
                            (x + cell / 2, y + cell / 2),
                            font + 1,
                            HPos::Center,
                            color,
                        )?;
                    }
                }
            }
            for (i, name) in c.classes.iter().enumerate() {
                if cell < 10 {
                    break;
                }
                let y = top + i as i32 * cell + cell / 2;
                text(
                    root,
                    &fit(name, label_chars),
                    (x0 - 6, y),
                    font + 1,
                    HPos::Right,
                    BLACK,
                )?;
                // Column labels alternate between two heights so long names do not collide.
                let x = x0 + i as i32 * cell + cell / 2;
                let yl = top + grid + 14 + if i % 2 == 1 && cell < 80 { 16 } else { 0 };
                text(
                    root,
                    &fit(name, label_chars),
                    (x, yl),
                    font,
                    HPos::Center,
                    BLACK,
                )?;
            }
            text(
                root,
                "predicted class",
                (x0 + grid / 2, top + grid + 56),
                15,
                HPos::Center,
                BLACK,
            )?;
            let style = TextStyle::from(("sans-serif", 15).into_font())
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new(
                "true class",
                (x0 - left + 14, top + grid / 2),
                style,
            ))
            .map_err(draw_err)?;
        }
        Ok(())
    })
}

/// Paints a 28x28 light-on-dark image at (x, y), scaled by `scale`.
fn blit(img: &mut image::RgbImage, px: &[u8], x: u32, y: u32, scale: u32) {
    for sy in 0..SIDE as u32 * scale {
        for sx in 0..SIDE as u32 * scale {
            let v = px[(sy / scale) as usize * SIDE + (sx / scale) as usize];
            if x + sx < img.width() && y + sy < img.height() {
                img.put_pixel(x + sx, y + sy, image::Rgb([v, v, v]));
            }
        }
    }
}

/// One of the most confidently wrong predictions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mistake {
    /// Index of the image in its set.
    pub index: usize,
    /// Its true class.
    pub true_class: String,
    /// The class the model predicted.
    pub predicted: String,
    /// The probability the model gave the predicted class.
    pub probability: f32,
}

/// The `n` wrong predictions with the highest predicted probability, most confident first.
pub fn top_mistakes(p: &Predictions, classes: &[String], n: usize) -> Vec<Mistake> {
    let mut wrong: Vec<(usize, f32)> = (0..p.len())
        .filter(|&i| p.predicted(i) != p.labels[i])
        .map(|i| (i, p.row(i)[p.predicted(i) as usize]))
        .collect();
    wrong.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    wrong
        .into_iter()
        .take(n)
        .map(|(i, prob)| Mistake {
            index: i,
            true_class: classes[p.labels[i] as usize].clone(),
            predicted: classes[p.predicted(i) as usize].clone(),
            probability: prob,
        })
        .collect()
}

/// Writes a gallery of mistakes: each image with its true class, the predicted class and the
/// probability the model gave it.
pub fn mistakes_png(images: &Images, mistakes: &[Mistake], title: &str, path: &Path) -> Result<()> {
    let cols = 6u32;
    let (cw, ch) = (170u32, 150u32);
    let scale = 3u32;
    let rows = (mistakes.len() as u32).div_ceil(cols).max(1);
    let (w, h) = (cols * cw + 20, rows * ch + 60);
    let place = |k: usize| (10 + (k as u32 % cols) * cw, 50 + (k as u32 / cols) * ch);
    render_png_then(
        path,
        (w, h),
        |root| {
            text(root, title, (w as i32 / 2, 22), 20, HPos::Center, BLACK)?;
            if mistakes.is_empty() {
                text(
                    root,
                    "no mistakes",
                    (w as i32 / 2, 90),
                    16,
                    HPos::Center,
                    BLACK,
                )?;
            }
            for (k, m) in mistakes.iter().enumerate() {
                let (x, y) = place(k);
                let cx = (x + cw / 2) as i32;
                let ty = (y + SIDE as u32 * scale + 14) as i32;
                text(
                    root,
                    &format!("true: {}", fit(&m.true_class, 18)),
                    (cx, ty),
                    12,
                    HPos::Center,
                    RGBColor(0, 110, 0),
                )?;
                text(
                    root,
                    &format!("pred: {} ({:.2})", fit(&m.predicted, 14), m.probability),
                    (cx, ty + 16),
                    12,
                    HPos::Center,
                    RGBColor(190, 0, 0),
                )?;
            }
            Ok(())
        },
        |img| {
            for (k, m) in mistakes.iter().enumerate() {
                let (x, y) = place(k);
                blit(
                    img,
                    images.image(m.index),
                    x + (cw - SIDE as u32 * scale) / 2,
                    y,
                    scale,
                );
            }
        },
    )
}

/// Most rows and columns of an augmentation preview (a 100 x 40 grid is already 13,000 pixels
/// tall; far larger overflows the image size plotters can draw).
pub const PREVIEW_MAX: (usize, usize) = (100, 40);

/// Checks the size and file name of an augmentation preview before any work is done.
pub fn check_preview(rows: usize, cols: usize, path: &Path) -> Result<()> {
    if !(1..=PREVIEW_MAX.0).contains(&rows) || !(1..=PREVIEW_MAX.1).contains(&cols) {
        return Err(Error::invalid(format!(
            "an augmentation preview has 1 to {} rows and 1 to {} columns, not {rows} x {cols}",
            PREVIEW_MAX.0, PREVIEW_MAX.1
        )));
    }
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        return Err(Error::format(
            path,
            "the preview is written as PNG: give a file name ending in .png",
        ));
    }
    Ok(())
}

/// Checks where a preview of the images in `data` may be written: never inside `data` (a
/// preview filed among the images would be trained on as one of them, or replace one), and not
/// over an existing file unless `overwrite`.
pub fn check_preview_out(path: &Path, data: &Path, overwrite: bool) -> Result<()> {
    if crate::fsutil::within(path, data) {
        return Err(Error::invalid(format!(
            "--out {} is inside the data {}: a preview there would be read as a training image; \
             write it elsewhere",
            path.display(),
            data.display()
        )));
    }
    crate::fsutil::check_output(path, overwrite, &[])
}

/// Writes the augmentation preview: one row per image in `indices`, the original first, then
/// `cols` fresh augmentations, each labelled with the parameters drawn for it. `path` must end
/// in `.png`.
pub fn augment_preview_png(
    images: &Images,
    indices: &[usize],
    cfg: &AugmentConfig,
    cols: usize,
    seed: u64,
    path: &Path,
) -> Result<Vec<Vec<Affine>>> {
    check_preview(indices.len(), cols, path)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let params: Vec<Vec<Affine>> = indices
        .iter()
        .map(|_| (0..cols).map(|_| cfg.sample(&mut rng)).collect())
        .collect();
    let scale = 3u32;
    let (cw, ch) = (130u32, 134u32);
    let (w, h) = (
        (cols as u32 + 1) * cw + 20,
        indices.len().max(1) as u32 * ch + 60,
    );
    let place = |r: usize, c: usize| (10 + c as u32 * cw, 50 + r as u32 * ch);
    render_png_then(
        path,
        (w, h),
        |root| {
            text(
                root,
                &format!("Augmentation preview: {cfg}"),
                (w as i32 / 2, 22),
                18,
                HPos::Center,
                BLACK,
            )?;
            for (r, row) in params.iter().enumerate() {
                let (x, y) = place(r, 0);
                let ty = (y + SIDE as u32 * scale + 12) as i32;
                text(
                    root,
                    "original",
                    ((x + cw / 2) as i32, ty),
                    12,
                    HPos::Center,
                    BLACK,
                )?;
                for (c, a) in row.iter().enumerate() {
                    let (x, _) = place(r, c + 1);
                    let cx = (x + cw / 2) as i32;
                    let lines = [
                        format!("rot {:+.1}°", a.angle_deg),
                        format!("shift {:+.1},{:+.1}", a.dx, a.dy),
                        format!("zoom {:.2},{:.2}", a.zoom_x, a.zoom_y),
                    ];
                    for (k, line) in lines.iter().enumerate() {
                        text(
                            root,
                            line,
                            (cx, ty + 13 * k as i32),
                            11,
                            HPos::Center,
                            BLACK,
                        )?;
                    }
                }
            }
            Ok(())
        },
        |img| {
            let mut out = vec![0f32; PIXELS];
            for (r, &i) in indices.iter().enumerate() {
                let off = (cw - SIDE as u32 * scale) / 2;
                let (x, y) = place(r, 0);
                blit(img, images.image(i), x + off, y, scale);
                for (c, a) in params[r].iter().enumerate() {
                    a.apply(images.image(i), &mut out);
                    let px: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
                    let (x, y) = place(r, c + 1);
                    blit(img, &px, x + off, y, scale);
                }
            }
        },
    )?;
    Ok(params)
}

/// One image of each class (the first in file order), for previews.
pub fn one_per_class(images: &Images, classes: usize, max: usize) -> Vec<usize> {
    let mut seen = vec![false; classes];
    let mut out = Vec::new();
    for i in 0..images.len() {
        let c = images.label(i) as usize;
        if c < classes && !seen[c] {
            seen[c] = true;
            out.push(i);
            if out.len() == max {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Images {
        let mut px = vec![0u8; 4 * PIXELS];
        for i in 0..4 {
            for p in 0..PIXELS {
                if (p % SIDE) > 10 && (p % SIDE) < 18 {
                    px[i * PIXELS + p] = 200;
                }
            }
        }
        Images::new(px, vec![0, 1, 1, 0]).unwrap()
    }

    fn preds() -> Predictions {
        Predictions {
            probs: vec![0.9, 0.1, 0.2, 0.8, 0.7, 0.3, 0.45, 0.55],
            classes: 2,
            labels: vec![0, 1, 1, 0],
        }
    }

    #[test]
    fn mistakes_are_ordered_by_confidence() {
        let names = vec!["a".to_string(), "b".to_string()];
        let m = top_mistakes(&preds(), &names, 10);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (
                m[0].index,
                m[0].true_class.as_str(),
                m[0].predicted.as_str()
            ),
            (2, "b", "a")
        );
        assert!((m[0].probability - 0.7).abs() < 1e-6);
        assert_eq!(m[1].index, 3);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.png");
        mistakes_png(&set(), &m, "Most confident mistakes", &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // Both mistakes' stripes (7x28 pixels) are painted at 3x scale (a few anti-aliased text
        // pixels may share the grey).
        let bright = img.pixels().filter(|p| p.0 == [200, 200, 200]).count();
        assert!(
            (2 * 7 * 28 * 9..2 * 7 * 28 * 9 + 40).contains(&bright),
            "{bright}"
        );
    }

    #[test]
    fn a_thousand_class_confusion_matrix_stays_small() {
        let k = 1000;
        let names: Vec<String> = (0..k).map(|i| format!("class {i}")).collect();
        let p = Predictions {
            probs: (0..k * k)
                .map(|i| if i % (k + 1) == 0 { 1.0 } else { 0.0 })
                .collect(),
            classes: k,
            labels: (0..k as u32).collect(),
        };
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.png");
        confusion_png(&Confusion::new(&p, &names), "many", &path).unwrap();
        let (w, h) = image::image_dimensions(&path).unwrap();
        assert!(w < 5000 && h < 3000, "{w}x{h}");
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes < 1 << 20, "{bytes} bytes");
    }

    #[test]
    fn confusion_png_draws_both_panels() {
        let names: Vec<String> = ["T-shirt/top", "Trouser"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = Confusion::new(&preds(), &names);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.png");
        confusion_png(&c, "Confusion matrix", &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The largest count cell is fully dark blue in the counts panel.
        let dark = img.pixels().filter(|p| p.0 == [25, 75, 155]).count();
        assert!(dark > 64 * 64 / 2, "{dark}");
    }

    #[test]
    fn preview_has_a_row_per_image_and_fresh_parameters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.png");
        let params =
            augment_preview_png(&set(), &[0, 1], &AugmentConfig::STANDARD, 5, 1, &p).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].len(), 5);
        assert_ne!(params[0][0], params[0][1]);
        let img = image::open(&p).unwrap();
        assert_eq!(img.width(), 6 * 130 + 20);
        assert_eq!(img.height(), 2 * 134 + 60);
        assert_eq!(one_per_class(&set(), 2, 10), vec![0, 1]);
    }
}

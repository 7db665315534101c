//! One image file as the model's input: decoded in any format the `image` crate reads, any size
//! and channel count, and prepared as a 28x28 light-on-dark image. Training data, `predict`,
//! `serve` and `export`'s metadata all use this one rule ([`prepare`]):
//! 1. decode with memory limits (a decompression bomb is refused, not decoded), shrink an image
//!    over [`PRESHRINK`] pixels a side and only then turn it upright (EXIF orientation), so the
//!    full-size image is held once; every decode in the process shares one memory budget,
//!    reserving what its format's decoder allocates (`cost.rs`, `memory.rs`);
//! 2. composite any alpha channel over white, then convert to 8-bit luminance;
//! 3. invert when the image is dark-on-light (`--invert yes`, or `auto` when the mean of its border
//!    pixels is above mid-grey), so that strokes are light on a dark background as in MNIST;
//! 4. fit it into 28x28 by one of two rules ([`Fit`]):
//!    - `box`: resize so the longer side is 28 pixels, keeping the aspect ratio (Catmull-Rom
//!      filter), and centre the box on a black canvas — how Fashion-MNIST was made;
//!    - `mnist`: crop to the ink, resize so the longer side is 20 pixels (aspect kept), and place
//!      it so that its centre of mass is the canvas' centre — how MNIST's digits were made, and
//!      what a digit drawn small, high or in a corner needs to look like MNIST.

pub use super::decode::{MAX_COST, MAX_SIDE, PRESHRINK, decode, decode_bytes};
use super::{PIXELS, SIDE};
use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage};
use std::path::Path;

/// Whether to invert images to light-on-dark.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Invert {
    /// Invert an image when its border is mostly light.
    Auto,
    /// Always invert (dark strokes on a light background).
    Yes,
    /// Never invert (already light on dark).
    No,
}

/// How an image is fitted into 28x28 (see the module documentation).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Longer side to 28 pixels, centred (Fashion-MNIST's preparation).
    #[default]
    Box,
    /// Cropped to the ink, longer side to 20 pixels, centre of mass at the centre (MNIST's).
    Mnist,
}

impl Fit {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Fit::Box => "box",
            Fit::Mnist => "mnist",
        }
    }
}

/// A prepared 28x28 image (light on dark) as PNG bytes: what the audit page, `suggest`'s copies
/// and the labelling page show.
pub fn png_bytes(px: &[u8]) -> Result<Vec<u8>> {
    let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, px.to_vec())
        .ok_or_else(|| Error::invalid("an image that is not 28x28"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("cannot encode an image as PNG: {e}")))?;
    Ok(png)
}

/// Reads an image file and converts it to a 28x28 light-on-dark image by the rule above.
pub fn load_image(path: &Path, invert: Invert, fit: Fit) -> Result<[u8; PIXELS]> {
    Ok(prepare(&decode(path)?, invert, fit))
}

/// Below this spread between its lightest and darkest pixel, a prepared image is blank: nothing
/// drawn (a white or black page, a flat colour), so any class the model gave it would be a guess.
pub const BLANK_SPREAD: u8 = 32;

/// Whether a prepared image is blank ([`BLANK_SPREAD`]).
pub fn is_blank(px: &[u8; PIXELS]) -> bool {
    let (lo, hi) = px
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    hi.saturating_sub(lo) < BLANK_SPREAD
}

/// Converts any decoded image to 28x28 light-on-dark bytes by the rule above.
pub fn prepare(img: &DynamicImage, invert: Invert, fit: Fit) -> [u8; PIXELS] {
    let shrunk;
    let img = if img.width().max(img.height()) > PRESHRINK {
        shrunk = img.thumbnail(PRESHRINK, PRESHRINK);
        &shrunk
    } else {
        img
    };
    let rgba = img.to_rgba32f();
    let (w, h) = rgba.dimensions();
    let mut gray = GrayImage::new(w, h);
    for (x, y, p) in rgba.enumerate_pixels() {
        let [r, g, b, a] = p.0;
        let lum = 0.299 * r + 0.587 * g + 0.114 * b;
        let v = lum * a + (1.0 - a);
        gray.put_pixel(
            x,
            y,
            image::Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]),
        );
    }
    let flip = match invert {
        Invert::Yes => true,
        Invert::No => false,
        Invert::Auto => border_mean(&gray) > 127.5,
    };
    if flip {
        image::imageops::invert(&mut gray);
    }
    match fit {
        Fit::Box => fit_box(gray),
        Fit::Mnist => fit_mnist(gray),
    }
}

/// `img` resized so its longer side is `side` pixels, keeping the aspect ratio (Catmull-Rom).
fn longer_side_to(img: GrayImage, side: u32) -> GrayImage {
    let (w, h) = img.dimensions();
    let scale = side as f32 / w.max(h) as f32;
    let nw = ((w as f32 * scale).round() as u32).clamp(1, side);
    let nh = ((h as f32 * scale).round() as u32).clamp(1, side);
    if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, image::imageops::FilterType::CatmullRom)
    }
}

fn fit_box(gray: GrayImage) -> [u8; PIXELS] {
    let side = SIDE as u32;
    let small = longer_side_to(gray, side);
    let (nw, nh) = small.dimensions();
    let mut out = [0u8; PIXELS];
    let (ox, oy) = ((side - nw) / 2, (side - nh) / 2);
    for (x, y, p) in small.enumerate_pixels() {
        out[((y + oy) * side + x + ox) as usize] = p.0[0];
    }
    out
}

/// Side of the box MNIST fitted its digits into.
const MNIST_BOX: u32 = 20;

/// Pixels at or below this fraction of the brightest one are background when cropping to the
/// ink, so a photograph's faint paper texture does not widen the crop.
const INK_FRACTION: f32 = 0.1;

fn fit_mnist(gray: GrayImage) -> [u8; PIXELS] {
    let mut out = [0u8; PIXELS];
    let peak = gray.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if peak == 0 {
        return out; // no ink: an empty canvas stays empty
    }
    let cut = (f32::from(peak) * INK_FRACTION) as u8;
    let (w, h) = gray.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in gray.enumerate_pixels() {
        if p.0[0] > cut {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let ink = image::imageops::crop_imm(&gray, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let small = longer_side_to(ink, MNIST_BOX);
    let (nw, nh) = small.dimensions();
    // Centre of mass in pixel-centre coordinates, moved to the canvas' centre (14, 14) by a
    // whole-pixel shift, kept inside the canvas.
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in small.enumerate_pixels() {
        let v = f64::from(p.0[0]);
        mass += v;
        mx += v * (f64::from(x) + 0.5);
        my += v * (f64::from(y) + 0.5);
    }
    let side = SIDE as u32;
    let centre = f64::from(side) / 2.0;
    let offset = |m: f64, len: u32| -> u32 {
        let o = if mass > 0.0 {
            (centre - m / mass).round()
        } else {
            f64::from((side - len) / 2)
        };
        o.clamp(0.0, f64::from(side - len)) as u32
    };
    let (ox, oy) = (offset(mx, nw), offset(my, nh));
    for (x, y, p) in small.enumerate_pixels() {
        out[((y + oy) * side + x + ox) as usize] = p.0[0];
    }
    out
}

fn border_mean(g: &GrayImage) -> f64 {
    let (w, h) = g.dimensions();
    let mut sum = 0u64;
    let mut n = 0u64;
    for (x, y, p) in g.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            sum += u64::from(p.0[0]);
            n += 1;
        }
    }
    sum as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    #[test]
    fn dark_on_light_is_inverted_and_aspect_kept() {
        // A 56x28 white image with a black 8x8 square in the middle.
        let mut img = RgbaImage::from_pixel(56, 28, Rgba([255, 255, 255, 255]));
        for y in 10..18 {
            for x in 24..32 {
                img.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        let out = prepare(&DynamicImage::ImageRgba8(img), Invert::Auto, Fit::Box);
        // Scaled to 28x14, centred vertically: rows 0..7 and 21..28 are padding (black).
        assert_eq!(out[0], 0);
        assert_eq!(out[27 * 28 + 27], 0);
        // The square is now bright; the former white background is dark.
        assert!(out[14 * 28 + 14] > 200, "{}", out[14 * 28 + 14]);
        assert!(out[10 * 28 + 2] < 30);
    }

    /// Bounding box `(x0, y0, x1, y1)` of the pixels above `cut` and the centre of mass.
    fn ink_geometry(px: &[u8; PIXELS], cut: u8) -> ((usize, usize, usize, usize), (f64, f64)) {
        let (mut b, mut m, mut mx, mut my) = ((SIDE, SIDE, 0, 0), 0.0, 0.0, 0.0);
        for (i, &v) in px.iter().enumerate() {
            let (x, y) = (i % SIDE, i / SIDE);
            if v > cut {
                b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
            }
            m += f64::from(v);
            mx += f64::from(v) * (x as f64 + 0.5);
            my += f64::from(v) * (y as f64 + 0.5);
        }
        (b, (mx / m, my / m))
    }

    #[test]
    fn mnist_fit_boxes_the_ink_in_20_pixels_centred_by_mass() {
        // A dark "L" drawn small in the top-left corner of a white 300x200 page.
        let mut page = image::GrayImage::from_pixel(300, 200, image::Luma([255]));
        for y in 10..70 {
            for x in 20..28 {
                page.put_pixel(x, y, image::Luma([0]));
            }
        }
        for x in 20..50 {
            for y in 62..70 {
                page.put_pixel(x, y, image::Luma([0]));
            }
        }
        let img = DynamicImage::ImageLuma8(page);
        let px = prepare(&img, Invert::Auto, Fit::Mnist);
        let ((x0, y0, x1, y1), (cx, cy)) = ink_geometry(&px, 64);
        assert_eq!(y1 - y0 + 1, 20, "the longer side (60 px tall) becomes 20");
        assert!(
            (9..=11).contains(&(x1 - x0 + 1)),
            "30 px wide becomes 10: {x0}..{x1}"
        );
        assert!(
            (cx - 14.0).abs() <= 0.75 && (cy - 14.0).abs() <= 0.75,
            "{cx}, {cy}"
        );
        // The box fit keeps it small and where the page's aspect puts it.
        let boxed = prepare(&img, Invert::Auto, Fit::Box);
        let ((_, by0, _, by1), _) = ink_geometry(&boxed, 64);
        assert!(by1 - by0 + 1 < 10, "{by0}..{by1}");
        // No ink at all: an empty image, not a crash.
        let blank =
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(50, 50, image::Luma([255])));
        assert!(
            prepare(&blank, Invert::Auto, Fit::Mnist)
                .iter()
                .all(|&v| v == 0)
        );
    }

    #[test]
    fn transparent_background_counts_as_white() {
        let img = RgbaImage::from_pixel(28, 28, Rgba([0, 0, 0, 0]));
        let out = prepare(&DynamicImage::ImageRgba8(img), Invert::Auto, Fit::Box);
        assert!(out.iter().all(|&p| p == 0));
        let out = prepare(
            &DynamicImage::ImageRgba8(RgbaImage::from_pixel(28, 28, Rgba([0, 0, 0, 0]))),
            Invert::No,
            Fit::Box,
        );
        assert!(out.iter().all(|&p| p == 255));
    }

    /// A PNG of a vertical bar with an eXIf chunk saying "rotate 90° clockwise to display"
    /// (EXIF orientation 6), as a phone would store a photo taken sideways.
    fn sideways_png(path: &Path, side: u32) {
        let mut img = GrayImage::from_pixel(side, side, image::Luma([0]));
        for y in 0..side {
            for x in side * 3 / 7..side * 4 / 7 {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // Big-endian TIFF header, one IFD entry: tag 0x0112 (orientation), SHORT, 1, value 6.
        let exif: Vec<u8> = [
            &b"MM\0\x2a\0\0\0\x08"[..],
            &[0, 1],
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat();
        let mut chunk = (exif.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(b"eXIf");
        chunk.extend_from_slice(&exif);
        let mut crc = flate2::Crc::new();
        crc.update(&chunk[4..]);
        chunk.extend_from_slice(&crc.sum().to_be_bytes());
        // After the signature (8 bytes) and the IHDR chunk (25 bytes).
        png.splice(33..33, chunk);
        std::fs::write(path, png).unwrap();
    }

    #[test]
    fn exif_orientation_is_applied() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("photo.png");
        // Small, and over PRESHRINK (shrunk first, then turned).
        for side in [28, 2 * PRESHRINK + 100] {
            sideways_png(&p, side);
            let px = load_image(&p, Invert::No, Fit::Box).unwrap();
            // The vertical bar is shown turned: a horizontal bar across the middle rows.
            let row = |y: usize| {
                px[y * 28..(y + 1) * 28]
                    .iter()
                    .map(|&v| u32::from(v))
                    .sum::<u32>()
            };
            let col = |x: usize| (0..28).map(|y| u32::from(px[y * 28 + x])).sum::<u32>();
            assert!(row(14) > 20 * 200, "{side}: row 14: {}", row(14));
            assert!(col(14) < 8 * 255, "{side}: column 14: {}", col(14));
        }
    }

    #[test]
    fn a_decode_over_the_memory_limit_is_refused_from_its_header() {
        // 16,384 x 16,384 in 16-bit grey: 512 MiB decoded, over the limit, refused unread.
        let mut b = png_declaring(MAX_SIDE, MAX_SIDE);
        b[24] = 16; // bit depth
        let mut crc = flate2::Crc::new();
        crc.update(&b[12..29]);
        b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let e = decode_bytes(Path::new("bomb.png"), &b)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.png")
                && e.contains("a 16384x16384 PNG needs 517 MiB, over the limit of 320 MiB"),
            "{e}"
        );
    }

    #[test]
    fn float_tiff_converts() {
        use tiff::encoder::{TiffEncoder, colortype::Gray32Float};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sensor.tif");
        // A bright square on a dark background, values in [0, 1].
        let (w, h) = (40u32, 40u32);
        let v: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if (10..30).contains(&x) && (10..30).contains(&y) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mut f = std::fs::File::create(&p).unwrap();
        TiffEncoder::new(&mut f)
            .unwrap()
            .write_image::<Gray32Float>(w, h, &v)
            .unwrap();
        let px = load_image(&p, Invert::No, Fit::Box).unwrap();
        assert_eq!(px[14 * 28 + 14], 255, "centre of the square");
        assert_eq!(px[28 + 1], 0, "background");
    }

    #[test]
    fn sixteen_bit_images_convert() {
        let img =
            image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(28, 28, image::Luma([65535u16]));
        let out = prepare(&DynamicImage::ImageLuma16(img), Invert::No, Fit::Box);
        assert!(out.iter().all(|&p| p == 255));
    }

    #[test]
    fn palette_png_decodes() {
        // An indexed-colour PNG: 2-entry palette (white, black), a black square on white.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pal.png");
        let f = std::fs::File::create(&p).unwrap();
        let mut enc = png::Encoder::new(f, 28, 28);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 255, 255, 0, 0, 0]);
        let mut w = enc.write_header().unwrap();
        let mut data = vec![0u8; 28 * 28];
        for y in 10..18 {
            for x in 10..18 {
                data[y * 28 + x] = 1;
            }
        }
        w.write_image_data(&data).unwrap();
        drop(w);
        let out = load_image(&p, Invert::Auto, Fit::Box).unwrap();
        assert_eq!(out[14 * 28 + 14], 255);
        assert_eq!(out[0], 0);
    }

    #[test]
    fn truncated_jpeg_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("photo.jpg");
        GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * y) % 256) as u8]))
            .save(&p)
            .unwrap();
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 3]).unwrap();
        let e = load_image(&p, Invert::No, Fit::Box)
            .unwrap_err()
            .to_string();
        assert!(e.contains("photo.jpg"), "{e}");
    }

    /// A 1x1 PNG whose header is rewritten to declare `w x h` pixels, with a valid header CRC
    /// (so a decoder that checks it refuses for the size, not the checksum).
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut b = Vec::new();
        GrayImage::from_pixel(1, 1, image::Luma([0]))
            .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
            .unwrap();
        // IHDR: length at 8..12, type at 12..16, width 16..20, height 20..24, CRC 29..33 over
        // the type and the 13 data bytes.
        assert_eq!(&b[12..16], b"IHDR");
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&b[12..29]);
        b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        b
    }

    #[test]
    fn sides_over_the_limit_are_refused_before_decoding() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.png");
        for (w, h) in [(MAX_SIDE + 1, 1), (1, MAX_SIDE + 1), (100_000, 100_000)] {
            std::fs::write(&p, png_declaring(w, h)).unwrap();
            let e = load_image(&p, Invert::No, Fit::Box)
                .unwrap_err()
                .to_string();
            assert!(e.contains("big.png") && e.contains("limit"), "{w}x{h}: {e}");
            assert!(!e.to_lowercase().contains("crc"), "{w}x{h}: {e}");
        }
        // At the limit the size is accepted (the 1x1 pixel data then does not fill it).
        std::fs::write(&p, png_declaring(MAX_SIDE, 1)).unwrap();
        let e = load_image(&p, Invert::No, Fit::Box)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("limit"), "{e}");
    }
}

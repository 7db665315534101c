//! Step 1 of preparing an image (the rest is `prepare.rs`): decoding any format the `image` crate reads
//! (and 32-bit float grayscale TIFF) within one memory budget for the whole process
//! (`memory.rs`): each decode first reserves what it will allocate, read from the header
//! (`cost.rs`), and an image that needs more than [`MAX_COST`] is refused before decoding. The
//! decoded image is shrunk to at most [`PRESHRINK`] pixels a side and only then turned upright by
//! its EXIF orientation, so the full-size image is held once.

pub use super::cost::PRESHRINK;
use super::cost::{self, Need};
use super::memory::{DECODE_BUDGET, Reservation};
use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits};
use std::path::Path;
use std::time::Duration;

/// Largest image side accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Most memory one decode may need ([`cost::need`]): the whole budget, so any accepted image can
/// be decoded, alone if need be. A 16,384-pixel square of 8-bit grey (256 MiB) fits as a PNG;
/// a lossless RGB WebP up to about 130 MiB decoded (6,800 pixels a side).
pub const MAX_COST: u64 = DECODE_BUDGET;

/// Decodes an image file with limits that stop decompression bombs.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, &bytes)
}

/// Decodes image bytes (as [`decode`] does a file), waiting as long as it takes for the memory;
/// `path` is only used in errors.
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let held = reserve(path, bytes, None)?
        .ok_or_else(|| Error::invalid("the decode memory could not be reserved".to_string()))?;
    decode_reserved(path, bytes, &held)
}

/// The memory decoding `bytes` needs, taken from the process's budget: within `wait` (`Ok(None)`
/// when it passed: the caller says it is busy), or as long as it takes. An image that needs more
/// than [`MAX_COST`] is an error naming `path`, without waiting.
pub fn reserve(path: &Path, bytes: &[u8], wait: Option<Duration>) -> Result<Option<Reservation>> {
    Ok(Reservation::take(memory_needed(path, bytes)?, wait))
}

/// The memory decoding `bytes` needs ([`cost::need`]), or an error naming `path` when the image
/// is over [`MAX_SIDE`] or needs more than [`MAX_COST`]; read from the header alone.
pub fn memory_needed(path: &Path, bytes: &[u8]) -> Result<u64> {
    Ok(match cost::need(bytes) {
        Some(Need { side, what, .. }) if side > MAX_SIDE => {
            return Err(Error::format(
                path,
                format!(
                    "the image is too large: a {what}, over the limit of {MAX_SIDE} pixels a \
                     side (shrink it first)"
                ),
            ));
        }
        Some(Need { bytes: n, what, .. }) if n > MAX_COST => {
            return Err(Error::format(
                path,
                format!(
                    "the image is too large to decode: a {what} needs {} MiB, over the limit of \
                     {} MiB (shrink it first)",
                    n.div_ceil(1 << 20),
                    MAX_COST >> 20
                ),
            ));
        }
        Some(need) => need.bytes,
        // No header the image crate reads: a float TIFF (which checks its own size against what
        // it holds) gets the whole budget; anything else fails at its header, allocating nothing.
        None if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") => MAX_COST,
        None => cost::FIXED,
    })
}

/// Decodes `bytes` with `held`, a reservation from [`reserve`] for these bytes: the decoders may
/// allocate no more than it holds.
pub fn decode_reserved(path: &Path, bytes: &[u8], held: &Reservation) -> Result<DynamicImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err(Error::format(
            path,
            "truncated JPEG: no end-of-image marker after the image data",
        ));
    }
    let tiff = reader.format() == Some(image::ImageFormat::Tiff);
    match decode_reader(path, reader, held.bytes()) {
        Err(e) if tiff => decode_float_tiff(bytes, held.bytes()).unwrap_or(Err(e)),
        other => other,
    }
}

/// A 32-bit float grayscale TIFF (scientific and sensor images), which the `image` crate does not
/// decode: read with the `tiff` crate (within its default 256 MiB buffer limit and our side
/// limit; the floats and the bytes made from them within `allowed`). Values in [0, 1] map to
/// 0..255; any other range is stretched from its minimum to its maximum. `None` when the file is
/// not such a TIFF, so the caller's error stands.
fn decode_float_tiff(bytes: &[u8], allowed: u64) -> Option<Result<DynamicImage>> {
    use tiff::decoder::{Decoder, DecodingResult};
    let mut d = Decoder::new(std::io::Cursor::new(bytes)).ok()?;
    if d.colortype().ok()? != tiff::ColorType::Gray(32) {
        return None;
    }
    let (w, h) = d.dimensions().ok()?;
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) * 5 > allowed {
        return None;
    }
    let DecodingResult::F32(v) = d.read_image().ok()? else {
        return None;
    };
    let finite = || v.iter().copied().filter(|x| x.is_finite());
    let lo = finite().fold(f32::INFINITY, f32::min);
    let hi = finite().fold(f32::NEG_INFINITY, f32::max);
    let (lo, hi) = if lo >= 0.0 && hi <= 1.0 {
        (0.0, 1.0)
    } else {
        (lo, hi)
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let px: Vec<u8> = v
        .iter()
        .map(|x| {
            let t = if x.is_finite() { (x - lo) / span } else { 0.0 };
            (t.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    GrayImage::from_raw(w, h, px).map(|g| Ok(preshrink(DynamicImage::ImageLuma8(g))))
}

/// Whether a JPEG's last scan is followed by an end-of-image marker. JPEG decoders fill a cut-off
/// scan with grey instead of failing, so truncation has to be detected here. Inside scan data a
/// 0xFF byte is always followed by 0x00 or a restart marker, so 0xFFD9 only occurs as the marker.
fn jpeg_complete(b: &[u8]) -> bool {
    let last = |m: u8| b.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, _) => true, // No scan at all: let the decoder report what is wrong.
        _ => false,
    }
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    mut reader: ImageReader<R>,
    allowed: u64,
) -> Result<DynamicImage> {
    if reader.format().is_none() {
        return Err(Error::format(path, "not an image in a known format"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // What the image crate and the decoders count of their own allocations stays within the
    // reservation, whatever the header claimed.
    limits.max_alloc = Some(allowed);
    reader.limits(limits);
    let cannot = |e: image::ImageError| Error::format(path, format!("cannot decode image: {e}"));
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    // A phone photo is stored sideways with an EXIF tag saying how to turn it.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(cannot)?;
    // Shrink before turning: rotating the full-size image would copy it.
    let mut img = preshrink(img);
    img.apply_orientation(orientation);
    Ok(img)
}

/// `img` shrunk so its longer side is at most [`PRESHRINK`], by area averaging
/// (`thumbnail`), which writes only the small image (a filtered resize keeps a full-width
/// float copy: 256 MB for a 16,384-pixel-wide image).
fn preshrink(img: DynamicImage) -> DynamicImage {
    if img.width().max(img.height()) > PRESHRINK {
        img.thumbnail(PRESHRINK, PRESHRINK)
    } else {
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit is on what each format's decoder allocates, said in the refusal: a 16,384-pixel
    /// square of grey decodes as a PNG (256 MiB, read into place), while the same pixels as a
    /// TIFF (read whole into the decoder's buffer, then copied: 7/3 of it) are refused from the
    /// header, before any of it is allocated.
    #[test]
    fn the_limit_counts_what_each_decoder_allocates() {
        let side = 16_384u32;
        let img = DynamicImage::ImageLuma8(GrayImage::new(side, side));
        let encoded = |format| {
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).expect("encodes");
            bytes.into_inner()
        };
        let png = decode_bytes(Path::new("big.png"), &encoded(image::ImageFormat::Png));
        assert!(png.is_ok(), "{:?}", png.err());
        let tiff = decode_bytes(Path::new("big.tif"), &encoded(image::ImageFormat::Tiff))
            .expect_err("the TIFF needs more than the limit")
            .to_string();
        assert!(
            tiff.contains("big.tif")
                && tiff.contains("a 16384x16384 TIFF needs 600 MiB, over the limit of 320 MiB"),
            "{tiff}"
        );
    }
}

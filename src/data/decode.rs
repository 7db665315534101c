//! Step 1 of preparing an image (the rest is `prepare.rs`): decoding any format the `image` crate reads
//! (and 32-bit float grayscale TIFF), within memory limits that refuse decompression bombs before
//! decoding, shrunk to at most [`PRESHRINK`] pixels a side and only then turned upright by its EXIF
//! orientation, so the full-size image is held once.

use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits};
use std::path::Path;

/// Largest image side accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoded image accepted, in bytes (a 16,384-pixel square of 8-bit grey, an 8,192-pixel
/// square of 8-bit RGBA). With the image held once, this bounds a decode's memory.
pub const MAX_ALLOC: u64 = 256 << 20;
/// What a decoder may allocate beside the decoded image (a TIFF strip, a PNG row buffer), so that
/// the limit on the image itself is [`MAX_ALLOC`] in every format.
const WORKING_ALLOC: u64 = 32 << 20;

/// Decodes an image file with limits that stop decompression bombs.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, &bytes)
}

/// Decodes image bytes (as [`decode`] does a file); `path` is only used in errors.
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
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
    match decode_reader(path, reader) {
        Err(e) if tiff => decode_float_tiff(bytes).unwrap_or(Err(e)),
        other => other,
    }
}

/// A 32-bit float grayscale TIFF (scientific and sensor images), which the `image` crate does not
/// decode: read with the `tiff` crate (within its default 256 MiB buffer limit and our side
/// limit). Values in [0, 1] map to 0..255; any other range is stretched from its minimum to its
/// maximum. `None` when the file is not such a TIFF, so the caller's error stands.
fn decode_float_tiff(bytes: &[u8]) -> Option<Result<DynamicImage>> {
    use tiff::decoder::{Decoder, DecodingResult};
    let mut d = Decoder::new(std::io::Cursor::new(bytes)).ok()?;
    if d.colortype().ok()? != tiff::ColorType::Gray(32) {
        return None;
    }
    let (w, h) = d.dimensions().ok()?;
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) * 4 > MAX_ALLOC {
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
) -> Result<DynamicImage> {
    if reader.format().is_none() {
        return Err(Error::format(path, "not an image in a known format"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC + WORKING_ALLOC);
    reader.limits(limits);
    let cannot = |e: image::ImageError| Error::format(path, format!("cannot decode image: {e}"));
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    // A phone photo is stored sideways with an EXIF tag saying how to turn it.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    if decoder.total_bytes() > MAX_ALLOC {
        return Err(Error::format(
            path,
            format!(
                "the image is too large: {} MiB decoded, over the limit of {} MiB (shrink it first)",
                decoder.total_bytes().div_ceil(1 << 20),
                MAX_ALLOC >> 20
            ),
        ));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(cannot)?;
    // Shrink before turning: rotating the full-size image would copy it.
    let mut img = preshrink(img);
    img.apply_orientation(orientation);
    Ok(img)
}

/// Memory a decode of these bytes needs, read from the image's header without decoding: its
/// decoded size, or [`MAX_ALLOC`] when the header cannot say (the decode will be refused or
/// bounded by it). The server reserves this much before decoding an upload.
pub fn decoded_bytes(bytes: &[u8]) -> u64 {
    let Ok(reader) = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format() else {
        return MAX_ALLOC;
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    let mut reader = reader;
    reader.limits(limits);
    match reader.into_decoder() {
        Ok(d) => d.total_bytes().min(MAX_ALLOC),
        Err(_) => MAX_ALLOC,
    }
}

/// Images with a side above this are shrunk to it when decoded (keeping the aspect ratio), so
/// neither the orientation nor the conversion to floats below holds a large image again: a
/// 16,000-pixel square took 4.5 GB. The result is 28 pixels a side anyway.
pub const PRESHRINK: u32 = 1024;

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

    /// A TIFF of exactly the decoded-size limit is accepted as a PNG of that size is: the limit
    /// is one number for every format, whatever working buffers a decoder needs beside it.
    #[test]
    fn the_size_limit_is_the_same_for_tiff_and_png() {
        let side = 16_384u32;
        assert_eq!(u64::from(side) * u64::from(side), MAX_ALLOC);
        let img = DynamicImage::ImageLuma8(GrayImage::new(side, side));
        for format in [image::ImageFormat::Tiff, image::ImageFormat::Png] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).unwrap();
            let got = decode_bytes(Path::new("big"), bytes.get_ref());
            assert!(got.is_ok(), "{format:?}: {:?}", got.err());
        }
    }
}

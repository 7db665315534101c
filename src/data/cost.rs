//! What decoding an image allocates, read from its header before decoding a pixel: the decoded
//! image times what its format's decoder holds beside it, plus the shrunk copies made after it
//! (`decode.rs`: the preview-size thumbnail and the EXIF turn) and a fixed allowance for
//! tables and row buffers. A budget that counted only the decoded size let a lossless WebP take
//! 2.4 times it. The factors are the decoders' own buffers, measured for every format the `image`
//! crate writes (`tests/decode_memory.rs` checks each at several sizes) and read from the decoders'
//! sources for what it does not write (progressive JPEG, lossy and animated WebP).

use image::{ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// Images with a side above this are shrunk to it when decoded (`decode.rs`) (keeping the aspect ratio), so
/// neither the orientation nor the conversion to floats below holds a large image again: a
/// 16,000-pixel square took 4.5 GB. The result is 28 pixels a side anyway.
pub const PRESHRINK: u32 = 1024;

/// Beside every decode: compression tables, row and strip buffers (a 28-pixel PNG peaks at
/// 29 KiB, a GIF at 42 KiB).
pub const FIXED: u64 = 256 << 10;

/// What a decode needs, from the image's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Bytes the whole decode may allocate at its peak.
    pub bytes: u64,
    /// What the image is, for messages: `"8000x6000 progressive JPEG"`.
    pub what: String,
    /// Its larger side in pixels (over `decode::MAX_SIDE` is refused by that rule first).
    pub side: u32,
}

/// The memory a decode of `bytes` needs; `None` when the header cannot be read (the decode
/// then fails on it, or is the float TIFF `decode.rs` reads itself, which checks its own size).
pub fn need(bytes: &[u8]) -> Option<Need> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let format = reader.format()?;
    // Only the header is read: no limit, so that an image over them is described and refused.
    reader.limits(Limits::no_limits());
    let decoder = reader.into_decoder().ok()?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let total = image::ImageDecoder::total_bytes(&decoder);
    let (kind, times) = beside(format, bytes);
    // At most two shrunk copies live at once: the thumbnail of a large image and its turned
    // copy, or for a small image the image and its turned copy.
    let pixels = u64::from(w) * u64::from(h);
    let shrunk = if w.max(h) > PRESHRINK {
        (u128::from(total) * u128::from(PRESHRINK) * u128::from(PRESHRINK))
            .div_ceil(u128::from(pixels.max(1))) as u64
    } else {
        total
    };
    let decoding = (total as f64 * times).ceil() as u64; // saturates for absurd headers
    Some(Need {
        bytes: decoding
            .saturating_add(2 * shrunk.min(total))
            .saturating_add(FIXED),
        what: format!("{w}x{h} {kind}"),
        side: w.max(h),
    })
}

/// The format's name for messages, and the decoder's peak as a multiple of the decoded image
/// (output buffer included).
fn beside(format: ImageFormat, bytes: &[u8]) -> (&'static str, f64) {
    match format {
        // Rows are decoded straight into the output (measured 1.0 plus the fixed part).
        ImageFormat::Png => ("PNG", 1.0),
        ImageFormat::Bmp => ("BMP", 1.0),
        ImageFormat::Pnm => ("PNM", 1.0),
        // The frame's colour indices (1 byte a pixel) and its RGBA buffer when the frame is
        // smaller than the screen, beside the RGBA output: measured 1.25 for a full frame.
        ImageFormat::Gif => ("GIF", 2.25),
        // The whole image is read into the decoder's buffer, then copied (2.0 measured) or
        // converted from CMYK (4 bytes a pixel into 3).
        ImageFormat::Tiff => ("TIFF", 7.0 / 3.0),
        ImageFormat::Jpeg if progressive_jpeg(bytes) => {
            // Every coefficient is kept as 16 bits until the last scan: 2 bytes a pixel per
            // component (4 for CMYK) beside an output of 3 (or 1 for grey).
            ("progressive JPEG", 4.0)
        }
        // Measured 1.42 (colour) and 1.56 (grey); room for CMYK's conversion.
        ImageFormat::Jpeg => ("JPEG", 2.0),
        ImageFormat::WebP => webp(bytes),
        _ => ("image", 3.0),
    }
}

/// A WebP's decoder keeps: lossless without alpha, a 4-byte ARGB frame beside the 3-byte output
/// (7/3, measured 2.33); lossy, its YUV planes (1.5 bytes a pixel) and with alpha the alpha
/// plane decoded as a lossless frame (4 + 2 bytes); an animation's first frame, the frame and
/// a canvas beside the output.
fn webp(bytes: &[u8]) -> (&'static str, f64) {
    let Ok(mut d) = image_webp::WebPDecoder::new(Cursor::new(bytes)) else {
        return ("WebP", 5.0);
    };
    match (d.is_animated(), d.is_lossy(), d.has_alpha()) {
        (true, _, _) => ("animated WebP", 5.0),
        (false, true, true) => ("lossy WebP", 3.0),
        (false, true, false) => ("lossy WebP", 1.5),
        (false, false, true) => ("lossless WebP", 1.0),
        (false, false, false) => ("lossless WebP", 7.0 / 3.0),
    }
}

/// Whether a JPEG's frame is progressive (SOF2, SOF6, SOF10, SOF14), read from its markers up
/// to the frame header.
fn progressive_jpeg(b: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= b.len() {
        if b[at] != 0xFF {
            return false;
        }
        let marker = b[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
        }
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        at += 2 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header alone says the size and kind; a lossless WebP without alpha needs 7/3 of its
    /// decoded size where a PNG of the same pixels needs 1.
    #[test]
    fn need_is_read_from_the_header_per_format() {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(300, 200));
        let need_of = |format| {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).expect("encodes");
            need(out.get_ref()).expect("a readable header")
        };
        let total = 300 * 200 * 3;
        let png = need_of(ImageFormat::Png);
        assert_eq!(png.bytes, total + 2 * total + FIXED);
        assert_eq!(png.what, "300x200 PNG");
        let webp = need_of(ImageFormat::WebP);
        assert_eq!(webp.bytes, total * 7 / 3 + 2 * total + FIXED);
        assert_eq!(webp.what, "300x200 lossless WebP");
        assert_eq!(need(b"not an image"), None);
    }

    #[test]
    fn progressive_jpegs_are_told_from_baseline_ones() {
        // SOI, an APP0 segment of 4 bytes, then the frame marker.
        let jpeg = |sof: u8| vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, sof, 0, 8];
        assert!(progressive_jpeg(&jpeg(0xC2)));
        assert!(!progressive_jpeg(&jpeg(0xC0)));
        assert!(!progressive_jpeg(&[0xFF, 0xD8, 0xFF]));
    }
}

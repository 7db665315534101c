//! What a decode really allocates, counted by this test binary's allocator, never exceeds what
//! `cost::need` reserves for it from the image's header, for every format the `image` crate
//! writes, at sizes below, at and above the preview size (where the shrunk copy is made). A
//! budget that trusted the decoded size alone let a lossless WebP take 2.4 times it.

use image::{DynamicImage, ImageFormat};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use warmstart::data::{cost, decode};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = NOW.fetch_add(by, SeqCst) + by;
    PEAK.fetch_max(now, SeqCst);
}

// SAFETY: every call is passed on to the system allocator unchanged; the counters only add up
// the sizes it was asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, size) };
        if !q.is_null() {
            // The old block is alive until the new one is filled.
            grew(size);
            NOW.fetch_sub(l.size(), SeqCst);
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Deterministic noise, so that compressed formats stay large.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Bytes the decode of `bytes` allocated at its peak, beyond what was held before it.
fn peak_of_decode(name: &str, bytes: &[u8]) -> usize {
    let before = NOW.load(SeqCst);
    PEAK.store(before, SeqCst);
    let img = decode::decode_bytes(Path::new(name), bytes);
    assert!(img.is_ok(), "{name}: {:?}", img.err());
    drop(img);
    PEAK.load(SeqCst) - before
}

/// One test (the allocator counts the whole process, so nothing may run beside it).
#[test]
fn every_decode_stays_within_what_its_header_reserved() {
    let mut rows = Vec::new();
    for side in [28u32, 300, 1100, 2048] {
        let px = (side * side) as usize;
        let images: [(&str, DynamicImage); 3] = [
            (
                "grey",
                image::GrayImage::from_raw(side, side, noise(px, 1))
                    .expect("sized")
                    .into(),
            ),
            (
                "rgb",
                image::RgbImage::from_raw(side, side, noise(px * 3, 2))
                    .expect("sized")
                    .into(),
            ),
            (
                "rgba",
                image::RgbaImage::from_raw(side, side, noise(px * 4, 3))
                    .expect("sized")
                    .into(),
            ),
        ];
        for format in [
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Tiff,
            ImageFormat::Gif,
            ImageFormat::Jpeg,
            ImageFormat::Bmp,
            ImageFormat::Pnm,
        ] {
            for (colour, img) in &images {
                let mut out = std::io::Cursor::new(Vec::new());
                // Some pairs have no encoder (grey GIF, RGBA JPEG): nothing to decode.
                if img.write_to(&mut out, format).is_err() {
                    continue;
                }
                let bytes = out.into_inner();
                let name = format!("{side}px {colour} {format:?}");
                let need = cost::need(&bytes).expect("a header the image crate reads");
                let peak = peak_of_decode(&name, &bytes);
                rows.push(format!(
                    "{name:24} reserved {:>10}  peak {peak:>10}  {:.2}",
                    need.bytes,
                    peak as f64 / need.bytes as f64
                ));
                assert!(
                    peak as u64 <= need.bytes,
                    "{name}: the decode took {peak} bytes, {} were reserved",
                    need.bytes
                );
            }
        }
    }
    assert!(rows.len() >= 4 * 15, "{} cases", rows.len());
    println!("{}", rows.join("\n"));
}

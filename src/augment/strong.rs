//! The strong augmentation of semi-supervised training (FixMatch's "strong view"): RandAugment
//! for grayscale. Two operations drawn at random from [`OPS`], each at a random magnitude in
//! `[0, 1]` (FixMatch's RandAugment variant), then Cutout: a square of up to half the image's
//! side, blanked. No colour operations: the images are one channel.
//!
//! Geometric operations fill with black, the background of light-on-dark images.

use crate::data::{PIXELS, SIDE};
use rand::Rng;

/// The operations RandAugment draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Unchanged.
    Identity,
    /// Darkest pixel to 0, lightest to 255.
    AutoContrast,
    /// Histogram equalization.
    Equalize,
    /// Rotation by up to 30 degrees either way.
    Rotate,
    /// Pixels above a threshold inverted.
    Solarize,
    /// Fewer bits a pixel (down to 4).
    Posterize,
    /// Contrast scaled by 0.1 to 1.9.
    Contrast,
    /// Brightness scaled by 0.1 to 1.9.
    Brightness,
    /// Sharpened or blurred.
    Sharpness,
    /// Horizontal shear by up to 0.3.
    ShearX,
    /// Vertical shear by up to 0.3.
    ShearY,
    /// Horizontal shift by up to 30% of the side.
    TranslateX,
    /// Vertical shift by up to 30% of the side.
    TranslateY,
}

/// Every operation, drawn uniformly.
pub const OPS: [Op; 13] = [
    Op::Identity,
    Op::AutoContrast,
    Op::Equalize,
    Op::Rotate,
    Op::Solarize,
    Op::Posterize,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];

/// Operations applied to each image before Cutout.
pub const OPS_PER_IMAGE: usize = 2;

/// Largest Cutout square, as a fraction of the side.
pub const CUTOUT: f32 = 0.5;

/// Writes a strongly augmented copy of the 28x28 byte image `src` to `out`, scaled to `[0, 1]`.
pub fn apply(src: &[u8], rng: &mut impl Rng, out: &mut [f32]) {
    let mut img: Vec<f32> = src[..PIXELS].iter().map(|&p| f32::from(p)).collect();
    for _ in 0..OPS_PER_IMAGE {
        let op = OPS[rng.random_range(0..OPS.len())];
        let m: f32 = rng.random();
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        img = op_apply(op, &img, m, sign);
    }
    cutout(&mut img, rng);
    for (o, v) in out[..PIXELS].iter_mut().zip(&img) {
        *o = v.clamp(0.0, 255.0) / 255.0;
    }
}

/// One operation at magnitude `m` in `[0, 1]`, in direction `sign` where it has one.
pub fn op_apply(op: Op, img: &[f32], m: f32, sign: f32) -> Vec<f32> {
    let blend = |other: &[f32], factor: f32| -> Vec<f32> {
        // PIL's ImageEnhance: other + factor * (img - other), clipped.
        img.iter()
            .zip(other)
            .map(|(&a, &b)| (b + factor * (a - b)).clamp(0.0, 255.0))
            .collect()
    };
    let factor = 1.0 + sign * 0.9 * m;
    match op {
        Op::Identity => img.to_vec(),
        Op::AutoContrast => {
            let (lo, hi) = img
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            if hi - lo < 1.0 {
                img.to_vec()
            } else {
                img.iter().map(|&v| (v - lo) * 255.0 / (hi - lo)).collect()
            }
        }
        Op::Equalize => equalize(img),
        Op::Rotate => warp(img, rotation(sign * 30.0 * m), (0.0, 0.0)),
        Op::Solarize => {
            let t = 256.0 * (1.0 - m);
            img.iter()
                .map(|&v| if v >= t { 255.0 - v } else { v })
                .collect()
        }
        Op::Posterize => {
            let bits = 8 - (m * 4.0).round() as u32;
            let mask = !((1u32 << (8 - bits)) - 1) & 0xff;
            img.iter()
                .map(|&v| f32::from((v.round().clamp(0.0, 255.0) as u32 & mask) as u8))
                .collect()
        }
        Op::Contrast => {
            let mean = img.iter().sum::<f32>() / img.len() as f32;
            blend(&vec![mean; img.len()], factor)
        }
        Op::Brightness => blend(&vec![0.0; img.len()], factor),
        Op::Sharpness => blend(&smooth(img), factor),
        Op::ShearX => warp(img, [[1.0, sign * 0.3 * m], [0.0, 1.0]], (0.0, 0.0)),
        Op::ShearY => warp(img, [[1.0, 0.0], [sign * 0.3 * m, 1.0]], (0.0, 0.0)),
        Op::TranslateX => warp(img, IDENTITY, (sign * 0.3 * m * SIDE as f32, 0.0)),
        Op::TranslateY => warp(img, IDENTITY, (0.0, sign * 0.3 * m * SIDE as f32)),
    }
}

const IDENTITY: [[f32; 2]; 2] = [[1.0, 0.0], [0.0, 1.0]];

/// The matrix turning content counter-clockwise (on screen) by `deg` degrees.
fn rotation(deg: f32) -> [[f32; 2]; 2] {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, s], [-s, c]]
}

/// Moves content at `p` (about the centre) to `a·p + t`; samples bilinearly, black outside.
fn warp(img: &[f32], a: [[f32; 2]; 2], t: (f32, f32)) -> Vec<f32> {
    let n = SIDE;
    let c = (n as f32 - 1.0) / 2.0;
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    if det.abs() < 1e-6 {
        return img.to_vec();
    }
    let inv = [
        [a[1][1] / det, -a[0][1] / det],
        [-a[1][0] / det, a[0][0] / det],
    ];
    let at = |x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= n as isize || y >= n as isize {
            0.0
        } else {
            img[y as usize * n + x as usize]
        }
    };
    let mut out = vec![0.0; n * n];
    for oy in 0..n {
        for ox in 0..n {
            let (px, py) = (ox as f32 - c - t.0, oy as f32 - c - t.1);
            let sx = inv[0][0] * px + inv[0][1] * py + c;
            let sy = inv[1][0] * px + inv[1][1] * py + c;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
            let bot = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
            out[oy * n + ox] = top * (1.0 - fy) + bot * fy;
        }
    }
    out
}

/// Histogram equalization (PIL's `ImageOps.equalize`).
fn equalize(img: &[f32]) -> Vec<f32> {
    let px: Vec<u8> = img
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let mut hist = [0usize; 256];
    for &p in &px {
        hist[p as usize] += 1;
    }
    let nonzero: Vec<usize> = hist.iter().copied().filter(|&h| h > 0).collect();
    let last = nonzero.last().copied().unwrap_or(0);
    let step = (px.len() - last) / 255;
    if step == 0 {
        return img.to_vec();
    }
    let mut lut = [0f32; 256];
    let mut acc = step / 2;
    for (i, &h) in hist.iter().enumerate() {
        lut[i] = (acc / step).min(255) as f32;
        acc += h;
    }
    px.iter().map(|&p| lut[p as usize]).collect()
}

/// PIL's SMOOTH filter (3x3, centre 5, others 1, over 13), the edges kept.
fn smooth(img: &[f32]) -> Vec<f32> {
    let n = SIDE;
    let mut out = img.to_vec();
    for y in 1..n - 1 {
        for x in 1..n - 1 {
            let mut s = 4.0 * img[y * n + x];
            for dy in 0..3 {
                for dx in 0..3 {
                    s += img[(y + dy - 1) * n + x + dx - 1];
                }
            }
            out[y * n + x] = s / 13.0;
        }
    }
    out
}

/// Blanks a square of random side up to [`CUTOUT`] of the image, centred anywhere.
fn cutout(img: &mut [f32], rng: &mut impl Rng) {
    let n = SIDE as i32;
    let side = rng.random_range(1..=(CUTOUT * SIDE as f32) as i32);
    let (cx, cy) = (rng.random_range(0..n), rng.random_range(0..n));
    let (x0, y0) = ((cx - side / 2).max(0), (cy - side / 2).max(0));
    let (x1, y1) = ((cx - side / 2 + side).min(n), (cy - side / 2 + side).min(n));
    for y in y0..y1 {
        for x in x0..x1 {
            img[(y * n + x) as usize] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn bar() -> Vec<f32> {
        (0..PIXELS)
            .map(|i| {
                if (12..16).contains(&(i % SIDE)) {
                    200.0
                } else {
                    10.0
                }
            })
            .collect()
    }

    #[test]
    fn each_operation_keeps_the_range_and_zero_magnitude_changes_little() {
        let img = bar();
        for op in OPS {
            for m in [0.0, 0.5, 1.0] {
                let out = op_apply(op, &img, m, 1.0);
                assert_eq!(out.len(), PIXELS);
                assert!(out.iter().all(|v| (0.0..=255.0).contains(v)), "{op:?} {m}");
            }
            // At magnitude 0 the geometric and enhancement operations are the identity.
            if !matches!(op, Op::AutoContrast | Op::Equalize | Op::Solarize) {
                let out = op_apply(op, &img, 0.0, 1.0);
                let diff: f32 = out.iter().zip(&img).map(|(a, b)| (a - b).abs()).sum();
                assert!(diff < 1.0, "{op:?}: {diff}");
            }
        }
    }

    #[test]
    fn operations_do_what_they_say() {
        let img = bar();
        // Solarize at full magnitude inverts every pixel.
        let s = op_apply(Op::Solarize, &img, 1.0, 1.0);
        assert_eq!(s[0], 245.0);
        // A shift right by 0.3 x 28 (8.4 pixels) moves the bar's columns.
        let t = op_apply(Op::TranslateX, &img, 1.0, 1.0);
        let col = |im: &[f32], x: usize| (0..SIDE).map(|y| im[y * SIDE + x]).sum::<f32>();
        assert!(col(&t, 21) > col(&t, 13), "{} {}", col(&t, 21), col(&t, 13));
        // AutoContrast stretches 10..200 to 0..255.
        let a = op_apply(Op::AutoContrast, &img, 0.3, 1.0);
        assert_eq!(a[0], 0.0);
        assert_eq!(a[12], 255.0);
        // Posterize at full magnitude keeps 4 bits.
        let p = op_apply(Op::Posterize, &img, 1.0, 1.0);
        assert!(p.iter().all(|&v| (v as u32).is_multiple_of(16)));
    }

    #[test]
    fn strong_views_are_seeded_and_differ_from_the_image() {
        let src: Vec<u8> = bar().iter().map(|&v| v as u8).collect();
        let view = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut out = vec![0.0; PIXELS];
            apply(&src, &mut rng, &mut out);
            out
        };
        assert_eq!(view(3), view(3));
        assert_ne!(view(3), view(4));
        let plain: Vec<f32> = src.iter().map(|&v| f32::from(v) / 255.0).collect();
        // Cutout alone blanks at least one pixel of the bar or background.
        assert!((0..20).any(|s| view(s) != plain));
    }
}

//! On-the-fly random augmentation with the meaning of Keras' `ImageDataGenerator`
//! (`rotation_range`, `width_shift_range`/`height_shift_range`, `zoom_range`, `fill_mode="nearest"`,
//! bilinear interpolation): rotation by up to ±degrees, shift by up to a fraction of the width and
//! height, and an independent zoom factor per axis in `[1-z, 1+z]`; and, with torchvision's
//! meaning, a horizontal flip (`RandomHorizontalFlip(p)`) and random erasing (`RandomErasing(p)`,
//! a rectangle of 2–33% of the image with aspect ratio 0.3–3.3 set to 0).
//!
//! It runs on the CPU on bytes, in the batch-preparation thread, so it stays off the training
//! critical path. Parameters are drawn per image per epoch from a seeded RNG.

pub mod strong;

use crate::data::SIDE;
use crate::error::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ranges for random augmentation; all zero means none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Maximum rotation, in degrees either way.
    pub rotation: f32,
    /// Maximum shift, as a fraction of the image side, either way.
    pub shift: f32,
    /// Maximum zoom: each axis is scaled by a factor in `[1-zoom, 1+zoom]`.
    pub zoom: f32,
    /// Probability of mirroring an image left to right (a mirrored digit is another glyph: for
    /// garments, silhouettes and other left-right symmetric classes only).
    #[serde(default)]
    pub flip: f32,
    /// Probability of blanking a random rectangle of an image (random erasing).
    #[serde(default)]
    pub erase: f32,
}

impl AugmentConfig {
    /// The homework's augmentation, `train`'s default: `rotation=10,shift=0.1,zoom=0.1`.
    pub const STANDARD: AugmentConfig = AugmentConfig {
        rotation: 10.0,
        shift: 0.1,
        zoom: 0.1,
        flip: 0.0,
        erase: 0.0,
    };
    /// No augmentation (`--augment none`).
    pub const NONE: AugmentConfig = AugmentConfig {
        rotation: 0.0,
        shift: 0.0,
        zoom: 0.0,
        flip: 0.0,
        erase: 0.0,
    };

    /// Whether this is [`AugmentConfig::NONE`].
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// Draws the parameters for one image.
    pub fn sample(&self, rng: &mut impl Rng) -> Affine {
        let mut sym = |r: f32| {
            if r > 0.0 {
                rng.random_range(-r..=r)
            } else {
                0.0
            }
        };
        let angle = sym(self.rotation);
        let side = SIDE as f32;
        let dx = sym(self.shift) * side;
        let dy = sym(self.shift) * side;
        let zx = 1.0 + sym(self.zoom);
        let zy = 1.0 + sym(self.zoom);
        // Drawn only when asked for, so the other draws (and older runs) stay as they were.
        let flip = self.flip > 0.0 && rng.random::<f32>() < self.flip;
        let erase = (self.erase > 0.0 && rng.random::<f32>() < self.erase)
            .then(|| erase_rect(rng))
            .flatten();
        Affine {
            angle_deg: angle,
            dx,
            dy,
            zoom_x: zx,
            zoom_y: zy,
            flip,
            erase,
        }
    }
}

/// A random-erasing rectangle `(x, y, w, h)` as torchvision draws it: area 2–33% of the image,
/// aspect ratio log-uniform in 0.3–3.3, ten tries to fit; `None` if none fits.
fn erase_rect(rng: &mut impl Rng) -> Option<(usize, usize, usize, usize)> {
    let side = SIDE as f32;
    for _ in 0..10 {
        let area = side * side * rng.random_range(0.02f32..0.33);
        let ratio = rng.random_range(0.3f32.ln()..3.3f32.ln()).exp();
        let h = (area * ratio).sqrt().round() as usize;
        let w = (area / ratio).sqrt().round() as usize;
        if (1..SIDE).contains(&h) && (1..SIDE).contains(&w) {
            let y = rng.random_range(0..=SIDE - h);
            let x = rng.random_range(0..=SIDE - w);
            return Some((x, y, w, h));
        }
    }
    None
}

impl std::fmt::Display for AugmentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_none() {
            return write!(f, "none");
        }
        write!(
            f,
            "rotation={},shift={},zoom={}",
            self.rotation, self.shift, self.zoom
        )?;
        if self.flip > 0.0 {
            write!(f, ",flip={}", self.flip)?;
        }
        if self.erase > 0.0 {
            write!(f, ",erase={}", self.erase)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for AugmentConfig {
    type Err = Error;

    /// Parses `none` or a comma-separated list of `rotation=DEG`, `shift=FRAC`, `zoom=FRAC`
    /// (keys left out are zero).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "none" || s.is_empty() {
            return Ok(Self::NONE);
        }
        let mut c = Self::NONE;
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "--augment: {part:?} is not key=value (e.g. rotation=10,shift=0.1,zoom=0.1)"
                ))
            })?;
            let v: f32 = v
                .trim()
                .parse()
                .map_err(|_| Error::invalid(format!("--augment: {v:?} is not a number")))?;
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(format!(
                    "--augment: {k} must be a non-negative number, got {v}"
                )));
            }
            match k.trim() {
                "rotation" if v <= 180.0 => c.rotation = v,
                "shift" if v < 1.0 => c.shift = v,
                "zoom" if v < 1.0 => c.zoom = v,
                "flip" if v <= 1.0 => c.flip = v,
                "erase" if v <= 1.0 => c.erase = v,
                "rotation" | "shift" | "zoom" | "flip" | "erase" => {
                    return Err(Error::invalid(format!(
                        "--augment: {k}={v} is out of range (rotation ≤ 180, shift and zoom < 1, \
                         flip and erase ≤ 1)"
                    )));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "--augment: unknown key {other:?} (expected rotation, shift, zoom, flip \
                         or erase)"
                    )));
                }
            }
        }
        Ok(c)
    }
}

/// One concrete transformation of an image's content, about the image centre: scale each axis by
/// `zoom_x`/`zoom_y`, rotate counter-clockwise (as seen on screen) by `angle_deg`, then move by
/// (`dx`, `dy`) pixels (right and down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Affine {
    /// Rotation, degrees counter-clockwise.
    pub angle_deg: f32,
    /// Horizontal shift, pixels.
    pub dx: f32,
    /// Vertical shift, pixels.
    pub dy: f32,
    /// Horizontal zoom factor (above 1 enlarges).
    pub zoom_x: f32,
    /// Vertical zoom factor (above 1 enlarges).
    pub zoom_y: f32,
    /// Mirror the result left to right.
    pub flip: bool,
    /// Blank this rectangle of the result, `(x, y, width, height)` in pixels.
    pub erase: Option<(usize, usize, usize, usize)>,
}

impl Affine {
    /// The transform that leaves an image unchanged.
    pub const IDENTITY: Affine = Affine {
        angle_deg: 0.0,
        dx: 0.0,
        dy: 0.0,
        zoom_x: 1.0,
        zoom_y: 1.0,
        flip: false,
        erase: None,
    };

    /// Where the content at (`x`, `y`) lands (x right, y down, pixel centres at integers).
    pub fn forward(&self, x: f32, y: f32) -> (f32, f32) {
        let c = (SIDE as f32 - 1.0) / 2.0;
        let (s, co) = self.angle_deg.to_radians().sin_cos();
        let (u, v) = ((x - c) * self.zoom_x, (y - c) * self.zoom_y);
        (c + co * u + s * v + self.dx, c - s * u + co * v + self.dy)
    }

    /// Applies the transformation to a 28x28 byte image, writing pixels scaled to `[0, 1]`.
    /// Each output pixel samples the source bilinearly at the inverse-mapped point; points outside
    /// the source take the nearest edge pixel (Keras' `fill_mode="nearest"`).
    pub fn apply(&self, src: &[u8], out: &mut [f32]) {
        let n = SIDE;
        let c = (n as f32 - 1.0) / 2.0;
        let (s, co) = self.angle_deg.to_radians().sin_cos();
        let (izx, izy) = (1.0 / self.zoom_x, 1.0 / self.zoom_y);
        let max = (n - 1) as f32;
        for oy in 0..n {
            for ox in 0..n {
                let (px, py) = (ox as f32 - c - self.dx, oy as f32 - c - self.dy);
                // Inverse rotation, then inverse zoom.
                let u = (co * px - s * py) * izx;
                let v = (s * px + co * py) * izy;
                let sx = (u + c).clamp(0.0, max);
                let sy = (v + c).clamp(0.0, max);
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                let p = |x: usize, y: usize| f32::from(src[y * n + x]);
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bot = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                out[oy * n + ox] = (top * (1.0 - fy) + bot * fy) / 255.0;
            }
        }
        if self.flip {
            out[..n * n].chunks_mut(n).for_each(<[f32]>::reverse);
        }
        if let Some((x, y, w, h)) = self.erase {
            for row in out[..n * n].chunks_mut(n).skip(y).take(h) {
                row[x..x + w].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PIXELS;
    use rand::SeedableRng;

    fn blob(cx: usize, cy: usize) -> Vec<u8> {
        let mut img = vec![0u8; PIXELS];
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                img[y * SIDE + x] = 200;
            }
        }
        img
    }

    fn centre_of_mass(img: &[f32]) -> (f32, f32) {
        let (mut sx, mut sy, mut m) = (0.0, 0.0, 0.0);
        for (i, &v) in img.iter().enumerate() {
            sx += v * (i % SIDE) as f32;
            sy += v * (i / SIDE) as f32;
            m += v;
        }
        (sx / m, sy / m)
    }

    fn apply(a: Affine, img: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; PIXELS];
        a.apply(img, &mut out);
        out
    }

    #[test]
    fn identity_keeps_image() {
        let img = blob(10, 12);
        let out = apply(Affine::IDENTITY, &img);
        for (a, b) in img.iter().zip(&out) {
            assert!((f32::from(*a) / 255.0 - b).abs() < 1e-6);
        }
    }

    #[test]
    fn shift_moves_centre_of_mass() {
        let img = blob(12, 14);
        let out = apply(
            Affine {
                dx: 2.0,
                dy: -3.0,
                ..Affine::IDENTITY
            },
            &img,
        );
        let (x, y) = centre_of_mass(&out);
        assert!(
            (x - 14.0).abs() < 1e-3 && (y - 11.0).abs() < 1e-3,
            "{x},{y}"
        );
    }

    #[test]
    fn zoom_scales_distance_from_centre() {
        // A blob 4 px right of the centre (13.5) lands 8 px right of it at zoom 2.
        let img = blob(17, 13);
        let zoomed = apply(
            Affine {
                zoom_x: 2.0,
                zoom_y: 2.0,
                ..Affine::IDENTITY
            },
            &img,
        );
        let (x0, _) = centre_of_mass(&apply(Affine::IDENTITY, &img));
        let (x, _) = centre_of_mass(&zoomed);
        assert!(((x - 13.5) / (x0 - 13.5) - 2.0).abs() < 0.05, "{x0} -> {x}");
        let (fx, fy) = Affine {
            zoom_x: 0.5,
            zoom_y: 0.5,
            ..Affine::IDENTITY
        }
        .forward(21.5, 13.5);
        assert!((fx - 17.5).abs() < 1e-5 && (fy - 13.5).abs() < 1e-5);
    }

    #[test]
    fn rotation_moves_a_known_point() {
        // 90° counter-clockwise: a point right of the centre goes above it.
        let a = Affine {
            angle_deg: 90.0,
            ..Affine::IDENTITY
        };
        let (x, y) = a.forward(19.5, 13.5);
        assert!((x - 13.5).abs() < 1e-4 && (y - 7.5).abs() < 1e-4, "{x},{y}");
        // And the image agrees with the point mapping (blob centred at x=20, y=13.5 ± 0.5).
        let out = apply(a, &blob(20, 14));
        let (cx, cy) = centre_of_mass(&out);
        let (ex, ey) = a.forward(20.0, 14.0);
        assert!(
            (cx - ex).abs() < 0.05 && (cy - ey).abs() < 0.05,
            "{cx},{cy} vs {ex},{ey}"
        );
    }

    #[test]
    fn sampling_stays_in_range_and_is_seeded() {
        let cfg = AugmentConfig::STANDARD;
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let a = cfg.sample(&mut r1);
            assert_eq!(a, cfg.sample(&mut r2));
            assert!(a.angle_deg.abs() <= 10.0);
            assert!(a.dx.abs() <= 2.8 + 1e-5 && a.dy.abs() <= 2.8 + 1e-5);
            assert!((0.9..=1.1).contains(&a.zoom_x) && (0.9..=1.1).contains(&a.zoom_y));
        }
    }

    #[test]
    fn flip_mirrors_and_erase_blanks_a_rectangle() {
        let img = blob(6, 14);
        let mut a = Affine::IDENTITY;
        a.flip = true;
        let (cx, cy) = centre_of_mass(&apply(a, &img));
        assert!(
            (cx - 21.0).abs() < 0.01 && (cy - 14.0).abs() < 0.01,
            "{cx},{cy}"
        );
        let full = [255u8; PIXELS];
        a.flip = false;
        a.erase = Some((3, 4, 5, 6));
        let out = apply(a, &full);
        let zeros = out.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, 30);
        assert_eq!(out[4 * SIDE + 3], 0.0);
        assert_eq!(out[4 * SIDE + 8], 1.0);
        // Drawn rectangles cover 2-33% of the image and fit inside it.
        let cfg: AugmentConfig = "erase=1".parse().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let (x, y, w, h) = cfg.sample(&mut rng).erase.expect("erase=1 always erases");
            assert!(x + w <= SIDE && y + h <= SIDE);
            let share = (w * h) as f32 / PIXELS as f32;
            assert!((0.01..0.36).contains(&share), "{share}");
        }
    }

    #[test]
    fn flip_and_erase_left_off_draw_nothing_more() {
        // The same draws as before those keys existed: the first five are the affine ones.
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut b = a.clone();
        let s = AugmentConfig::STANDARD.sample(&mut a);
        let mut sym = |r: f32| b.random_range(-r..=r);
        assert_eq!(s.angle_deg, sym(10.0));
        let _ = (sym(0.1), sym(0.1), sym(0.1), sym(0.1));
        assert_eq!(a.random::<u64>(), b.random::<u64>());
        assert!(!s.flip && s.erase.is_none());
    }

    #[test]
    fn parses_flags() {
        let c: AugmentConfig = "rotation=10,shift=0.1,zoom=0.1".parse().unwrap();
        assert_eq!(c, AugmentConfig::STANDARD);
        assert_eq!(
            "none".parse::<AugmentConfig>().unwrap(),
            AugmentConfig::NONE
        );
        assert_eq!(
            "zoom=0.2".parse::<AugmentConfig>().unwrap(),
            AugmentConfig {
                zoom: 0.2,
                ..AugmentConfig::NONE
            }
        );
        assert!("spin=3".parse::<AugmentConfig>().is_err());
        assert!("shift=2".parse::<AugmentConfig>().is_err());
        assert!("rotation".parse::<AugmentConfig>().is_err());
    }
}

//! Duplicates and outliers, from the correlation of images' pixels: each image centred and scaled
//! to unit length, so that the dot product of two is their correlation (1 for the same picture,
//! whatever its brightness and contrast). Exact duplicates have the same bytes; near duplicates
//! correlate at [`NEAR`] or more. An image's typicality is the mean correlation with its
//! [`NEIGHBOURS`] most similar others; an outlier's is far below the rest (under the first
//! quartile by three interquartile ranges: Tukey's "far out"), an image that looks like nothing
//! else in the set.

use crate::data::{Images, PIXELS};
use crate::fast::multiply_by_transpose;

/// Correlation from which two different images count as near duplicates: a re-saved, dimmed or
/// slightly retouched copy of a 28x28 image stays above it. Lower, plain silhouettes pass it: on
/// fashion-1k and its test set, 0.98 listed 80 pairs, nearly all two different trousers; 0.995
/// lists one, the same shirt twice (docs/labelling.md).
pub const NEAR: f32 = 0.995;
/// Neighbours whose mean correlation is an image's typicality.
pub const NEIGHBOURS: usize = 5;
/// Rows compared at a time (bounds the memory of the similarity matrix).
const BLOCK: usize = 256;

/// Two similar images.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The first image (a training image).
    pub a: usize,
    /// The second image (another training image, or a test image).
    pub b: usize,
    /// Their correlation.
    pub correlation: f32,
    /// The same bytes.
    pub exact: bool,
}

/// Duplicates and outliers of a set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Similarity {
    /// Duplicate pairs within the set (`a < b`), most similar first.
    pub within: Vec<Pair>,
    /// Pairs of a training image and a test image, most similar first.
    pub across: Vec<Pair>,
    /// Each image's typicality.
    pub typicality: Vec<f32>,
    /// Outliers, least typical first.
    pub outliers: Vec<usize>,
}

/// Each image centred on its mean and scaled to unit length (a blank image stays all zeros).
fn normalised(images: &Images) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.len() * PIXELS);
    for i in 0..images.len() {
        let px = images.image(i);
        let mean = px.iter().map(|&v| v as f32).sum::<f32>() / PIXELS as f32;
        let start = out.len();
        out.extend(px.iter().map(|&v| v as f32 - mean));
        let norm = out[start..].iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 1e-3 {
            out[start..].iter_mut().for_each(|v| *v /= norm);
        } else {
            out[start..].iter_mut().for_each(|v| *v = 0.0);
        }
    }
    out
}

/// Calls `visit(i, row)` with each image `i` of `a` and its correlations with every image of `b`.
fn correlations(a: &[f32], b: &[f32], mut visit: impl FnMut(usize, &[f32])) {
    let n = b.len() / PIXELS;
    let mut dst = vec![0f32; BLOCK * n];
    for (blk, rows) in a.chunks(BLOCK * PIXELS).enumerate() {
        let m = rows.len() / PIXELS;
        multiply_by_transpose(&mut dst[..m * n], rows, b, PIXELS);
        for r in 0..m {
            visit(blk * BLOCK + r, &dst[r * n..(r + 1) * n]);
        }
    }
}

fn pair(a: usize, b: usize, correlation: f32, same_bytes: bool) -> Pair {
    Pair {
        a,
        b,
        correlation,
        exact: same_bytes,
    }
}

fn most_similar_first(pairs: &mut [Pair]) {
    pairs.sort_by(|x, y| {
        (y.exact, y.correlation)
            .partial_cmp(&(x.exact, x.correlation))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
}

/// Duplicates within `train` and between `train` and `test`, and `train`'s outliers.
pub fn analyse(train: &Images, test: Option<&Images>) -> Similarity {
    let a = normalised(train);
    let n = train.len();
    let mut within = Vec::new();
    let mut typicality = vec![0f32; n];
    correlations(&a, &a, |i, row| {
        let mut best = [f32::NEG_INFINITY; NEIGHBOURS];
        for (j, &c) in row.iter().enumerate() {
            if j == i {
                continue;
            }
            let same = train.image(i) == train.image(j);
            if (c >= NEAR || same) && i < j {
                within.push(pair(i, j, c, same));
            }
            // A copy says nothing about how typical the picture is.
            if !same && c > best[NEIGHBOURS - 1] {
                best[NEIGHBOURS - 1] = c;
                best.sort_by(|x, y| y.total_cmp(x));
            }
        }
        let found: Vec<f32> = best.into_iter().filter(|v| v.is_finite()).collect();
        typicality[i] = if found.is_empty() {
            0.0
        } else {
            found.iter().sum::<f32>() / found.len() as f32
        };
    });
    let mut across = Vec::new();
    if let Some(test) = test.filter(|t| !t.is_empty()) {
        let b = normalised(test);
        correlations(&a, &b, |i, row| {
            for (j, &c) in row.iter().enumerate() {
                let same = train.image(i) == test.image(j);
                if c >= NEAR || same {
                    across.push(pair(i, j, c, same));
                }
            }
        });
    }
    most_similar_first(&mut within);
    most_similar_first(&mut across);
    let outliers = far_out(&typicality);
    Similarity {
        within,
        across,
        typicality,
        outliers,
    }
}

/// The values under the first quartile by three interquartile ranges, lowest first.
fn far_out(values: &[f32]) -> Vec<usize> {
    if values.len() < 4 {
        return Vec::new();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
    let (q1, q3) = (q(0.25), q(0.75));
    let fence = q1 - 3.0 * (q3 - q1);
    let mut out: Vec<usize> = (0..values.len()).filter(|&i| values[i] < fence).collect();
    out.sort_by(|&x, &y| values[x].total_cmp(&values[y]).then(x.cmp(&y)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob at (x, y) of radius r: a family of similar but distinct images.
    fn blob(x: f32, y: f32, r: f32) -> Vec<u8> {
        (0..PIXELS)
            .map(|p| {
                let (px, py) = ((p % 28) as f32, (p / 28) as f32);
                let d = ((px - x).powi(2) + (py - y).powi(2)).sqrt();
                (255.0 * (1.0 - (d / r).min(1.0))) as u8
            })
            .collect()
    }

    fn set(images: &[Vec<u8>]) -> Images {
        Images::new(images.concat(), vec![0; images.len()]).unwrap()
    }

    #[test]
    fn copies_near_copies_leaks_and_an_outlier_are_found() {
        let mut train: Vec<Vec<u8>> = (0..40)
            .map(|i| blob(8.0 + (i % 8) as f32 * 1.5, 8.0 + (i / 8) as f32 * 2.5, 6.0))
            .collect();
        train.push(train[3].clone()); // 40: exact copy of 3
        let dimmer: Vec<u8> = train[7].iter().map(|&v| v / 2 + 3).collect();
        train.push(dimmer); // 41: the same picture, dimmer
        let checker: Vec<u8> = (0..PIXELS)
            .map(|p| {
                if (p % 28 / 2 + p / 28 / 2) % 2 == 0 {
                    255
                } else {
                    0
                }
            })
            .collect();
        train.push(checker); // 42: like nothing else
        let test = vec![blob(20.0, 20.0, 3.0), train[11].clone()];
        let s = analyse(&set(&train), Some(&set(&test)));
        let within: Vec<(usize, usize, bool)> =
            s.within.iter().map(|p| (p.a, p.b, p.exact)).collect();
        assert!(within.contains(&(3, 40, true)), "{within:?}");
        assert!(within.contains(&(7, 41, false)), "{within:?}");
        assert!(s.within.iter().all(|p| p.exact || p.correlation >= NEAR));
        assert!(s.within[0].exact);
        let across: Vec<(usize, usize, bool)> =
            s.across.iter().map(|p| (p.a, p.b, p.exact)).collect();
        assert_eq!(across, [(11, 1, true)]);
        // The checkerboard first; the grid's corner blobs, with fewer close neighbours, may follow.
        assert_eq!(s.outliers[0], 42, "{:?}", s.outliers);
        assert!(s.outliers.len() <= 4, "{:?}", s.outliers);
    }
}

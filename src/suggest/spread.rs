//! Spreading a batch of picks over the kinds of image in the pool, in the space of the model's
//! penultimate features (each scaled to unit length): a batch of the twenty most uncertain
//! images is often twenty copies of one confusing kind. Seeded k-means (k-means++ start, Lloyd's
//! steps) finds the groups; both batch strategies pick one image per group.

use crate::fast::multiply_by_transpose;
use rand::{Rng, SeedableRng};

/// Lloyd's steps after the k-means++ start (the assignment barely moves after a few).
const STEPS: usize = 10;
/// Neighbours whose mean distance measures how typical an image is in its group (TypiClust).
const TYPICAL_NEIGHBOURS: usize = 20;

/// Points: `n` rows of `dim` values.
pub struct Points<'a> {
    /// The values, row after row.
    pub data: &'a [f32],
    /// Values a row.
    pub dim: usize,
}

impl Points<'_> {
    fn len(&self) -> usize {
        self.data.len() / self.dim
    }
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Each row scaled to unit length (a zero row stays zero).
pub fn unit_rows(data: &mut [f32], dim: usize) {
    for r in data.chunks_mut(dim) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Squared distances from every point to every centre: `points.len() x centres` values.
fn distances(p: &Points, centres: &[f32]) -> Vec<f32> {
    let (n, k) = (p.len(), centres.len() / p.dim);
    let mut dots = vec![0f32; n * k];
    multiply_by_transpose(&mut dots, p.data, centres, p.dim);
    let norms: Vec<f32> = centres
        .chunks(p.dim)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect();
    for i in 0..n {
        let xi: f32 = p.row(i).iter().map(|v| v * v).sum();
        for j in 0..k {
            let d = &mut dots[i * k + j];
            *d = (xi - 2.0 * *d + norms[j]).max(0.0);
        }
    }
    dots
}

/// The group (0..`k`) of each point: k-means seeded by `seed`.
pub fn kmeans(p: &Points, k: usize, seed: u64) -> Vec<usize> {
    let n = p.len();
    let k = k.min(n);
    if k <= 1 {
        return vec![0; n];
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6b6d_6561);
    // k-means++: each next centre drawn with probability proportional to its squared distance
    // from the nearest centre so far.
    let mut centres: Vec<f32> = p.row(rng.random_range(0..n)).to_vec();
    let mut nearest: Vec<f32> = distances(p, &centres);
    while centres.len() / p.dim < k {
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut t = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                t -= d as f64;
                if t <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let row = p.row(next).to_vec();
        let d = distances(p, &row);
        nearest.iter_mut().zip(d).for_each(|(a, b)| *a = a.min(b));
        centres.extend(row);
    }
    let mut group = vec![0usize; n];
    for _ in 0..STEPS {
        let d = distances(p, &centres);
        let mut changed = false;
        for (i, g) in group.iter_mut().enumerate() {
            let row = &d[i * k..(i + 1) * k];
            let best = (0..k)
                .min_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            changed |= *g != best;
            *g = best;
        }
        let mut sums = vec![0f32; k * p.dim];
        let mut counts = vec![0usize; k];
        for (i, &g) in group.iter().enumerate() {
            counts[g] += 1;
            sums[g * p.dim..(g + 1) * p.dim]
                .iter_mut()
                .zip(p.row(i))
                .for_each(|(s, v)| *s += v);
        }
        for g in 0..k {
            if counts[g] > 0 {
                let c = &mut centres[g * p.dim..(g + 1) * p.dim];
                c.iter_mut()
                    .zip(&sums[g * p.dim..(g + 1) * p.dim])
                    .for_each(|(c, s)| *c = s / counts[g] as f32);
            }
        }
        if !changed {
            break;
        }
    }
    group
}

/// Within each group, the member with the highest `score` (ties: the lower index); groups
/// ordered by that score, highest first.
pub fn best_of_each(group: &[usize], score: &[f32]) -> Vec<usize> {
    let k = group.iter().max().map_or(0, |m| m + 1);
    let mut best: Vec<Option<usize>> = vec![None; k];
    for (i, &g) in group.iter().enumerate() {
        if best[g].is_none_or(|b| score[i] > score[b]) {
            best[g] = Some(i);
        }
    }
    let mut picks: Vec<usize> = best.into_iter().flatten().collect();
    picks.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    picks
}

/// How typical each point is within its group: the inverse of its mean distance to its nearest
/// `TYPICAL_NEIGHBOURS` fellow members (a lone member scores 0).
pub fn typicality(p: &Points, group: &[usize]) -> Vec<f32> {
    let k = group.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &g) in group.iter().enumerate() {
        members[g].push(i);
    }
    let mut out = vec![0f32; p.len()];
    for m in members.iter().filter(|m| m.len() > 1) {
        let rows: Vec<f32> = m.iter().flat_map(|&i| p.row(i).to_vec()).collect();
        let sub = Points {
            data: &rows,
            dim: p.dim,
        };
        let d = distances(&sub, &rows);
        let size = m.len();
        let neighbours = TYPICAL_NEIGHBOURS.min(size - 1);
        for (a, &i) in m.iter().enumerate() {
            let mut row: Vec<f32> = (0..size)
                .filter(|&b| b != a)
                .map(|b| d[a * size + b].sqrt())
                .collect();
            row.sort_by(f32::total_cmp);
            let mean = row[..neighbours].iter().sum::<f32>() / neighbours as f32;
            out[i] = 1.0 / (mean + 1e-6);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight blobs of 2-D points, 10 each, around (0,0), (10,0), (0,10).
    fn blobs() -> Vec<f32> {
        let mut v = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)] {
            for i in 0..10 {
                let a = i as f32 * 0.6;
                v.extend([
                    cx + a.cos() * 0.3 * (i % 3) as f32,
                    cy + a.sin() * 0.3 * (i % 3) as f32,
                ]);
            }
        }
        v
    }

    #[test]
    fn kmeans_finds_the_blobs_and_one_pick_per_blob() {
        let data = blobs();
        let p = Points {
            data: &data,
            dim: 2,
        };
        let g = kmeans(&p, 3, 7);
        for b in 0..3 {
            let first = g[b * 10];
            assert!(g[b * 10..b * 10 + 10].iter().all(|&x| x == first), "{g:?}");
        }
        assert_eq!(g, kmeans(&p, 3, 7));
        // The most uncertain images all sit in the first blob; one pick per blob spreads them.
        let score: Vec<f32> = (0..30)
            .map(|i| {
                if i < 10 {
                    0.9 + i as f32 * 0.001
                } else {
                    0.1 + i as f32 * 0.001
                }
            })
            .collect();
        let picks = best_of_each(&g, &score);
        assert_eq!(picks.len(), 3);
        assert_eq!(picks[0], 9);
        let blobs_hit: std::collections::HashSet<usize> = picks.iter().map(|&i| i / 10).collect();
        assert_eq!(blobs_hit.len(), 3);
    }

    #[test]
    fn the_centre_of_a_group_is_its_most_typical_member() {
        let mut data = vec![0.0, 0.0];
        for i in 0..8 {
            let a = i as f32 * std::f32::consts::PI / 4.0;
            data.extend([a.cos(), a.sin()]);
        }
        data.extend([5.0, 5.0]);
        let p = Points {
            data: &data,
            dim: 2,
        };
        let t = typicality(&p, &[0; 10]);
        let most = (0..10).max_by(|&a, &b| t[a].total_cmp(&t[b])).unwrap();
        assert_eq!(most, 0);
        let least = (0..10).min_by(|&a, &b| t[a].total_cmp(&t[b])).unwrap();
        assert_eq!(least, 9);
    }
}

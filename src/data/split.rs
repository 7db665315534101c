//! Stratified, seeded train/validation split.

use super::Images;
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The indices of `n` images taken evenly across the classes (round-robin, each class in file
/// order; a class that runs out leaves its turns to the others), in file order: `--limit` on a
/// folder sorted by class would otherwise take every image from the first classes.
pub fn evenly(images: &Images, classes: usize, n: usize) -> Vec<usize> {
    let mut by_class: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); classes];
    for (i, &l) in images.labels().iter().enumerate() {
        if let Some(c) = by_class.get_mut(l as usize) {
            c.push_back(i);
        }
    }
    let mut out = Vec::with_capacity(n.min(images.len()));
    while out.len() < n && by_class.iter().any(|c| !c.is_empty()) {
        for c in &mut by_class {
            if out.len() == n {
                break;
            }
            if let Some(i) = c.pop_front() {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Holds out `fraction` of each class (rounded, at least one image of every class that has two or
/// more) for validation. The same seed always picks the same images; both parts keep file order.
pub fn stratified(
    images: &Images,
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<(Images, Images)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(format!(
            "--val-split must be between 0 and 1 (exclusive), got {fraction}"
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in images.labels().iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5b11);
    let mut val = Vec::new();
    for idx in &mut by_class {
        let n = idx.len();
        if n < 2 {
            continue;
        }
        let k = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        idx.shuffle(&mut rng);
        val.extend_from_slice(&idx[..k]);
    }
    val.sort_unstable();
    let mut is_val = vec![false; images.len()];
    for &i in &val {
        is_val[i] = true;
    }
    let train: Vec<usize> = (0..images.len()).filter(|&i| !is_val[i]).collect();
    Ok((images.select(&train), images.select(&val)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_takes_round_robin_across_classes() {
        let labels = [0u32, 0, 0, 0, 1, 1, 2];
        let set = Images::new(
            vec![0; labels.len() * super::super::PIXELS],
            labels.to_vec(),
        )
        .unwrap();
        assert_eq!(evenly(&set, 3, 3), vec![0, 4, 6]);
        // Class 2 runs out: its turns go to the others.
        assert_eq!(evenly(&set, 3, 5), vec![0, 1, 4, 5, 6]);
        assert_eq!(evenly(&set, 3, 100).len(), 7);
    }
    use crate::data::PIXELS;

    fn set(labels: &[u32]) -> Images {
        // Each image's first pixel is its index, so picks can be traced.
        let mut px = vec![0u8; labels.len() * PIXELS];
        for i in 0..labels.len() {
            px[i * PIXELS] = i as u8;
        }
        Images::new(px, labels.to_vec()).unwrap()
    }

    #[test]
    fn keeps_class_proportions_and_is_seeded() {
        let labels: Vec<u32> = (0..200).map(|i| if i < 150 { 0 } else { 1 }).collect();
        let s = set(&labels);
        let (t, v) = stratified(&s, 2, 0.1, 7).unwrap();
        assert_eq!(v.class_counts(2), vec![15, 5]);
        assert_eq!(t.class_counts(2), vec![135, 45]);
        let (_, v2) = stratified(&s, 2, 0.1, 7).unwrap();
        assert_eq!(v, v2);
        let (_, v3) = stratified(&s, 2, 0.1, 8).unwrap();
        assert_ne!(v, v3);
    }

    #[test]
    fn rejects_bad_fraction() {
        assert!(stratified(&set(&[0, 1]), 2, 1.0, 0).is_err());
        assert!(stratified(&set(&[0, 1]), 2, 0.0, 0).is_err());
    }
}

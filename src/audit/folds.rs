//! Stratified, seeded K-fold assignment: every image is held out exactly once, and each class is
//! spread as evenly over the folds as its count allows, so every fold's model sees every class.

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The fold (0..`folds`) of each image, from its label: each class's images shuffled (seeded)
/// and dealt round-robin, the deal of each class starting where the last one stopped so that
/// fold sizes differ by at most one.
pub fn assign(labels: &[u32], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(c) = by_class.get_mut(l as usize) {
            c.push(i);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xa0d1_7f01);
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for members in &mut by_class {
        members.shuffle(&mut rng);
        for &i in members.iter() {
            fold[i] = next;
            next = (next + 1) % folds.max(1);
        }
    }
    fold
}

/// The images in fold `k` and those outside it, each in index order.
pub fn split(fold: &[usize], k: usize) -> (Vec<usize>, Vec<usize>) {
    (0..fold.len()).partition(|&i| fold[i] != k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_balanced_and_seeded() {
        let labels: Vec<u32> = (0..103).map(|i| (i % 3) as u32).collect();
        let f = assign(&labels, 3, 5, 1);
        assert_eq!(f, assign(&labels, 3, 5, 1));
        assert_ne!(f, assign(&labels, 3, 5, 2));
        let sizes: Vec<usize> = (0..5)
            .map(|k| f.iter().filter(|&&x| x == k).count())
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        for c in 0..3u32 {
            for k in 0..5 {
                let n = (0..103).filter(|&i| labels[i] == c && f[i] == k).count();
                assert!((6..=8).contains(&n), "class {c} fold {k}: {n}");
            }
        }
        let (train, held) = split(&f, 2);
        assert_eq!(train.len() + held.len(), 103);
        assert!(held.iter().all(|&i| f[i] == 2) && train.iter().all(|&i| f[i] != 2));
    }
}

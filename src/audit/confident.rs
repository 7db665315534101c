//! Confident learning (Northcutt, Jiang and Chuang, 2021): from out-of-fold probabilities, which
//! given labels are likely wrong and how many each class holds.
//!
//! A class's threshold is the mean probability the models give it on the images labelled with
//! it; an image *confidently* belongs to the classes whose probability reaches their threshold
//! (the likeliest of them if several). Counting images by (given, confident) class gives the
//! confident joint, which, calibrated to the class counts, estimates how many images of each
//! class carry each wrong label. For each (given, other) pair, the images labelled `given` with
//! the largest margin p(other) − p(given), as many as estimated, are flagged ("prune by noise
//! rate"), never one whose likeliest class is its given label; they are ranked by the
//! probability of their given label (self-confidence), lowest first.

use crate::eval::argmax;

/// An image whose given label looks wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Its index among the audited images.
    pub image: usize,
    /// Its given label.
    pub given: u32,
    /// The class the models put first.
    pub suggested: u32,
    /// The out-of-fold probability of its given label: the lower, the likelier it is wrong.
    pub quality: f32,
}

/// What confident learning found.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    /// Likely wrong labels, likeliest first.
    pub issues: Vec<Issue>,
    /// Per class: images given that label.
    pub counts: Vec<usize>,
    /// Per class: the estimated number of them whose label is wrong (the calibrated confident
    /// joint's off-diagonal row sum).
    pub estimated_wrong: Vec<f64>,
    /// Each class's threshold.
    pub thresholds: Vec<f32>,
}

/// Finds likely label errors among images labelled `labels`, with out-of-fold probabilities
/// `probs` (`labels.len()` rows of `classes`).
pub fn find(probs: &[f32], labels: &[u32], classes: usize) -> Findings {
    let n = labels.len();
    debug_assert_eq!(probs.len(), n * classes);
    let row = |i: usize| &probs[i * classes..(i + 1) * classes];
    let mut counts = vec![0usize; classes];
    let mut sums = vec![0f64; classes];
    for (i, &l) in labels.iter().enumerate() {
        counts[l as usize] += 1;
        sums[l as usize] += row(i)[l as usize] as f64;
    }
    let thresholds: Vec<f32> = (0..classes)
        .map(|c| {
            if counts[c] == 0 {
                f32::INFINITY
            } else {
                (sums[c] / counts[c] as f64) as f32
            }
        })
        .collect();
    // The confident joint: images by (given, confident) class.
    let mut joint = vec![vec![0f64; classes]; classes];
    for (i, &l) in labels.iter().enumerate() {
        let p = row(i);
        let confident = (0..classes)
            .filter(|&j| p[j] >= thresholds[j])
            .max_by(|&a, &b| p[a].total_cmp(&p[b]));
        if let Some(j) = confident {
            joint[l as usize][j] += 1.0;
        }
    }
    // Calibrated: each row sums to its class count, the whole to the number of images.
    for (c, r) in joint.iter_mut().enumerate() {
        let s: f64 = r.iter().sum();
        if s > 0.0 {
            r.iter_mut().for_each(|v| *v *= counts[c] as f64 / s);
        }
    }
    let total: f64 = joint.iter().flatten().sum();
    if total > 0.0 {
        let scale = n as f64 / total;
        joint.iter_mut().flatten().for_each(|v| *v *= scale);
    }
    let estimated_wrong: Vec<f64> = (0..classes)
        .map(|c| (0..classes).filter(|&j| j != c).map(|j| joint[c][j]).sum())
        .collect();
    // Prune by noise rate.
    let mut flagged = vec![false; n];
    for (given, estimates) in joint.iter().enumerate() {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] as usize == given).collect();
        for (other, &estimate) in estimates.iter().enumerate() {
            let take = estimate.round() as usize;
            if other == given || take == 0 {
                continue;
            }
            let mut by_margin: Vec<(f32, usize)> = members
                .iter()
                .map(|&i| (row(i)[other] - row(i)[given], i))
                .collect();
            by_margin.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, i) in by_margin.iter().take(take) {
                flagged[i] = true;
            }
        }
    }
    let mut issues: Vec<Issue> = (0..n)
        .filter(|&i| flagged[i])
        .filter_map(|i| {
            let suggested = argmax(row(i)) as u32;
            (suggested != labels[i]).then(|| Issue {
                image: i,
                given: labels[i],
                suggested,
                quality: row(i)[labels[i] as usize],
            })
        })
        .collect();
    issues.sort_by(|a, b| a.quality.total_cmp(&b.quality).then(a.image.cmp(&b.image)));
    Findings {
        issues,
        counts,
        estimated_wrong,
        thresholds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes, 30 images each, models fairly sure of the true class; `flips` images carry
    /// a wrong given label.
    fn case(flips: &[(usize, u32)]) -> (Vec<f32>, Vec<u32>) {
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for i in 0..90 {
            let truth = (i / 30) as u32;
            let sure = 0.7 + 0.01 * (i % 25) as f32;
            let mut p = vec![(1.0 - sure) / 2.0; 3];
            p[truth as usize] = sure;
            probs.extend(p);
            labels.push(truth);
        }
        // A flipped image is one the models are sure of (confident learning counts only those).
        for &(i, wrong) in flips {
            labels[i] = wrong;
            let truth = i / 30;
            for (c, p) in probs[i * 3..(i + 1) * 3].iter_mut().enumerate() {
                *p = if c == truth { 0.9 } else { 0.05 };
            }
        }
        (probs, labels)
    }

    #[test]
    fn flipped_labels_are_found_and_ranked_with_their_true_class() {
        let flips = [(3, 1), (40, 2), (41, 0), (75, 0)];
        let (probs, labels) = case(&flips);
        let f = find(&probs, &labels, 3);
        let mut found: Vec<usize> = f.issues.iter().map(|x| x.image).collect();
        found.sort();
        assert_eq!(found, [3, 40, 41, 75]);
        for x in &f.issues {
            assert_eq!(x.suggested, (x.image / 30) as u32);
            assert_eq!(x.given, labels[x.image]);
        }
        assert!(f.issues.windows(2).all(|w| w[0].quality <= w[1].quality));
        let wrong: f64 = f.estimated_wrong.iter().sum();
        // Calibration scales the confident counts up to the class sizes: the estimate of the
        // four flips is rough, but it is not zero and not the whole class.
        assert!((2.0..=8.0).contains(&wrong), "{:?}", f.estimated_wrong);
    }

    #[test]
    fn clean_labels_give_no_issues() {
        let (probs, labels) = case(&[]);
        let f = find(&probs, &labels, 3);
        assert!(f.issues.is_empty(), "{:?}", f.issues);
        assert_eq!(f.counts, [30, 30, 30]);
        assert!(f.estimated_wrong.iter().all(|&w| w < 0.5));
    }
}

//! How much a model's answer for an image says it would learn from its label: the uncertainty
//! scores of active learning, each higher for an image more worth labelling.

/// Which images to label first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The smallest gap between the two likeliest classes (the model hesitates between two).
    Margin,
    /// The most spread probabilities (the model hesitates among many).
    Entropy,
    /// The lowest top probability.
    LeastConfidence,
    /// The most disagreement between passes with dropout on (BALD with MC dropout: the
    /// information a label would give about the weights), rather than a single pass's doubt.
    Bald,
    /// Any images, drawn at random (the baseline every strategy must beat).
    Random,
    /// The most typical image of each group of similar images, uncertainty aside (TypiClust: for
    /// a first round, when the model has seen only a handful of labels a class).
    Typical,
}

impl Strategy {
    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Margin => "margin",
            Strategy::Entropy => "entropy",
            Strategy::LeastConfidence => "least-confidence",
            Strategy::Bald => "bald",
            Strategy::Random => "random",
            Strategy::Typical => "typical",
        }
    }
}

/// The score of one image's probabilities under `strategy`: higher is more worth labelling
/// (`Bald` is scored from dropout passes by [`bald`]; `Random` and `Typical` rank by other means
/// and score 0).
pub fn score(strategy: Strategy, p: &[f32]) -> f32 {
    match strategy {
        Strategy::Margin => {
            let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in p {
                if v > first {
                    second = first;
                    first = v;
                } else if v > second {
                    second = v;
                }
            }
            1.0 - (first - second.max(0.0))
        }
        Strategy::Entropy => entropy(p),
        Strategy::LeastConfidence => 1.0 - p.iter().copied().fold(0.0, f32::max),
        Strategy::Bald | Strategy::Random | Strategy::Typical => 0.0,
    }
}

/// The entropy of probabilities `p` (natural log).
fn entropy(p: &[f32]) -> f32 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f32>()
}

/// Passes with dropout on, the input of [`bald`].
pub const DROPOUT_PASSES: usize = 20;

/// BALD scores of `n` images from `passes[t][i·classes + c]`: the entropy of the mean prediction
/// minus the mean entropy of the passes. High when the passes are each sure but disagree; zero
/// when they agree, however unsure they agree to be.
pub fn bald(passes: &[Vec<f32>], classes: usize) -> Vec<f32> {
    let t = passes.len().max(1) as f32;
    let n = passes.first().map_or(0, |p| p.len() / classes.max(1));
    let mut mean = vec![0f32; classes];
    (0..n)
        .map(|i| {
            let rows = || {
                passes
                    .iter()
                    .map(move |p| &p[i * classes..(i + 1) * classes])
            };
            for (c, m) in mean.iter_mut().enumerate() {
                *m = rows().map(|r| r[c]).sum::<f32>() / t;
            }
            let each = rows().map(entropy).sum::<f32>() / t;
            (entropy(&mean) - each).max(0.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_score_prefers_the_answer_it_should() {
        let sure = [0.97, 0.01, 0.01, 0.01];
        let two_way = [0.48, 0.47, 0.03, 0.02];
        let spread = [0.4, 0.2, 0.2, 0.2];
        let s = |st, p: &[f32]| score(st, p);
        // Margin: a tie of two beats a spread answer whose top stands out more.
        assert!(s(Strategy::Margin, &two_way) > s(Strategy::Margin, &spread));
        assert!(s(Strategy::Margin, &spread) > s(Strategy::Margin, &sure));
        // Entropy: the spread answer is the most uncertain.
        assert!(s(Strategy::Entropy, &spread) > s(Strategy::Entropy, &two_way));
        assert!(s(Strategy::Entropy, &two_way) > s(Strategy::Entropy, &sure));
        assert!(s(Strategy::LeastConfidence, &spread) > s(Strategy::LeastConfidence, &two_way));
        assert!((s(Strategy::Margin, &two_way) - 0.99).abs() < 1e-6);
    }

    #[test]
    fn bald_scores_disagreement_not_doubt() {
        // Image 0: every pass unsure the same way; image 1: each pass sure, of another class.
        let passes = vec![vec![0.5, 0.5, 0.9, 0.1], vec![0.5, 0.5, 0.1, 0.9]];
        let b = bald(&passes, 2);
        assert!(b[0].abs() < 1e-6, "agreeing passes score {}", b[0]);
        // H(0.5, 0.5) − H(0.9, 0.1) = 0.693 − 0.325.
        assert!((b[1] - 0.3681).abs() < 1e-3, "{}", b[1]);
        // The mean predictions are the same (0.5, 0.5): margin cannot tell the two apart.
        assert_eq!(score(Strategy::Margin, &[0.5, 0.5]), 1.0);
    }
}

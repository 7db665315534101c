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
            Strategy::Random => "random",
            Strategy::Typical => "typical",
        }
    }
}

/// The score of one image's probabilities under `strategy`: higher is more worth labelling
/// (`Random` and `Typical` rank by other means and score 0).
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
        Strategy::Entropy => -p
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| v * v.ln())
            .sum::<f32>(),
        Strategy::LeastConfidence => 1.0 - p.iter().copied().fold(0.0, f32::max),
        Strategy::Random | Strategy::Typical => 0.0,
    }
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
}

//! The statistics of a comparison: each variant's accuracy over the seeds, and each variant's
//! paired difference from the baseline (same seeds) with a 95% confidence interval from Student's
//! t distribution.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Confidence level of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// Mean, sample standard deviation and the half-width of the 95% interval of the mean of `xs`;
/// the deviation and interval are `None` for fewer than two values.
pub fn mean_sd_ci(xs: &[f64]) -> (f64, Option<f64>, Option<f64>) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, None, None);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let t = t_quantile(n - 1);
    (mean, Some(sd), Some(t * sd / (n as f64).sqrt()))
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom (`df` ≥ 1).
fn t_quantile(df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64)
        .map(|t| t.inverse_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0))
        .unwrap_or(f64::NAN)
}

/// One variant's accuracy over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantSummary {
    /// The variant's name.
    pub name: String,
    /// Runs (seeds) summarised.
    pub runs: usize,
    /// Mean accuracy.
    pub mean: f64,
    /// Sample standard deviation (`None` for one seed).
    pub sd: Option<f64>,
    /// Half-width of the 95% interval of the mean (`None` for one seed).
    pub ci: Option<f64>,
    /// Lowest accuracy.
    pub min: f64,
    /// Highest accuracy.
    pub max: f64,
    /// Mean epoch of the best validation accuracy.
    pub mean_best_epoch: f64,
    /// Mean training seconds.
    pub mean_seconds: f64,
}

/// A variant's paired difference from the baseline over the seeds both ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The variant's name.
    pub name: String,
    /// Seeds paired.
    pub pairs: usize,
    /// Mean of (variant − baseline) accuracy.
    pub mean: f64,
    /// Half-width of the 95% interval (`None` for one pair).
    pub ci: Option<f64>,
}

impl Difference {
    /// The paired difference of `variant` from `baseline`, seed by seed (equal lengths, same
    /// seed order).
    pub fn paired(name: &str, variant: &[f64], baseline: &[f64]) -> Self {
        let d: Vec<f64> = variant.iter().zip(baseline).map(|(v, b)| v - b).collect();
        let (mean, _, ci) = mean_sd_ci(&d);
        Difference {
            name: name.to_string(),
            pairs: d.len(),
            mean,
            ci,
        }
    }

    /// Whether the interval excludes 0 (`None` without an interval).
    pub fn significant(&self) -> Option<bool> {
        self.ci.map(|h| self.mean - h > 0.0 || self.mean + h < 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_match_a_reference_computation() {
        // scipy.stats 1.x: t.ppf(0.975, 2) = 4.302652729749462, t.ppf(0.975, 4) = 2.7764451051977934.
        assert!((t_quantile(2) - 4.302652729749462).abs() < 1e-9);
        assert!((t_quantile(4) - 2.7764451051977934).abs() < 1e-9);
        let (mean, sd, ci) = mean_sd_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(mean, 2.0);
        assert!((sd.unwrap() - 1.0).abs() < 1e-12);
        // 4.302652729749462 * 1 / sqrt(3)
        assert!((ci.unwrap() - 2.4841377117503303).abs() < 1e-9);
        // Five seeds (the reference figures from scipy.stats and Python's statistics module).
        let (m, sd, ci) = mean_sd_ci(&[0.81, 0.82, 0.83, 0.84, 0.82]);
        assert!((m - 0.824).abs() < 1e-12);
        assert!((sd.unwrap() - 0.011401754250991).abs() < 1e-12);
        assert!((ci.unwrap() - 0.01415714776982269).abs() < 1e-9);
    }

    #[test]
    fn paired_differences_and_significance() {
        let base = [0.80, 0.82, 0.81];
        let better = [0.83, 0.84, 0.84];
        let d = Difference::paired("b", &better, &base);
        assert_eq!(d.pairs, 3);
        assert!((d.mean - 0.0266666666667).abs() < 1e-9);
        // Differences 0.03, 0.02, 0.03: sd 0.0057735, half-width 4.3026527 * 0.0057735 / sqrt(3).
        assert!((d.ci.unwrap() - 0.014342175765831395).abs() < 1e-9);
        assert_eq!(d.significant(), Some(true));
        let noisy = Difference::paired("n", &[0.81, 0.80, 0.83], &base);
        assert_eq!(noisy.significant(), Some(false));
        let one = Difference::paired("one", &[0.9], &[0.8]);
        assert_eq!((one.ci, one.significant()), (None, None));
        let (m, sd, ci) = mean_sd_ci(&[0.5]);
        assert_eq!((m, sd, ci), (0.5, None, None));
    }
}

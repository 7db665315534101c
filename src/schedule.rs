//! Learning-rate schedules: the rate of every training step as a pure function of the step, so a
//! resumed run uses exactly the rates an uninterrupted one would.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over a run; `lr` (the `--lr` flag) is its peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// fastai's one-cycle policy: over the first `warmup` fraction of the steps the rate rises
    /// from `lr / 25` to `lr` along a half cosine, then falls along a half cosine to `lr / 1e5`.
    OneCycle {
        /// Fraction of the steps spent rising (fastai's `pct_start`).
        warmup: f64,
    },
    /// A linear warm-up from 0 over the first `warmup` fraction of the steps, then a half cosine
    /// from `lr` down to 0.
    Cosine {
        /// Fraction of the steps spent warming up.
        warmup: f64,
    },
}

/// One-cycle's start: the peak divided by this (fastai's `div`).
pub const ONECYCLE_DIV: f64 = 25.0;
/// One-cycle's end: the peak divided by this (fastai's `div_final`).
pub const ONECYCLE_FINAL_DIV: f64 = 1e5;
/// Warm-up fraction of `--schedule onecycle` unless `--warmup` says otherwise (fastai's default).
pub const ONECYCLE_WARMUP: f64 = 0.25;
/// Warm-up fraction of `--schedule cosine` unless `--warmup` says otherwise.
pub const COSINE_WARMUP: f64 = 0.05;

/// `a` at `t = 0` to `b` at `t = 1` along a half cosine.
fn cos_between(a: f64, b: f64, t: f64) -> f64 {
    b + (a - b) * 0.5 * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
}

impl Schedule {
    /// The rate of step `step` (0-based) of `total`, for peak rate `lr`.
    pub fn lr(&self, lr: f64, step: usize, total: usize) -> f64 {
        let total = total.max(1) as f64;
        let t = step as f64 / total;
        match *self {
            Schedule::Constant => lr,
            Schedule::OneCycle { warmup } => {
                let w = warmup.clamp(0.0, 1.0);
                if t < w {
                    cos_between(lr / ONECYCLE_DIV, lr, t / w)
                } else {
                    cos_between(lr, lr / ONECYCLE_FINAL_DIV, (t - w) / (1.0 - w).max(1e-12))
                }
            }
            Schedule::Cosine { warmup } => {
                let w = warmup.clamp(0.0, 1.0);
                if t < w {
                    // Step 0 trains at a small rate, not 0 (a wasted step).
                    lr * (step as f64 + 1.0) / (w * total).max(1.0)
                } else {
                    cos_between(lr, 0.0, (t - w) / (1.0 - w).max(1e-12))
                }
            }
        }
    }

    /// `constant`, `onecycle (warm-up 25%)`, ...
    pub fn describe(&self) -> String {
        match self {
            Schedule::Constant => "constant".into(),
            Schedule::OneCycle { warmup } => format!("one-cycle (warm-up {:.0}%)", 100.0 * warmup),
            Schedule::Cosine { warmup } => format!("cosine (warm-up {:.0}%)", 100.0 * warmup),
        }
    }
}

/// The schedule a user names (`constant`, `onecycle`, `cosine`) with an optional warm-up fraction.
pub fn named(name: ScheduleName, warmup: Option<f64>) -> Result<Schedule, String> {
    if let Some(w) = warmup
        && !(0.0..1.0).contains(&w)
    {
        return Err(format!("--warmup must be at least 0 and below 1, not {w}"));
    }
    Ok(match name {
        ScheduleName::Constant => {
            if warmup.is_some() {
                return Err("--warmup needs --schedule onecycle or cosine".into());
            }
            Schedule::Constant
        }
        ScheduleName::Onecycle => Schedule::OneCycle {
            warmup: warmup.unwrap_or(ONECYCLE_WARMUP),
        },
        ScheduleName::Cosine => Schedule::Cosine {
            warmup: warmup.unwrap_or(COSINE_WARMUP),
        },
    })
}

/// The schedules `--schedule` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleName {
    /// The same rate throughout.
    Constant,
    /// fastai's one-cycle policy.
    Onecycle,
    /// Linear warm-up, then cosine decay to 0.
    Cosine,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    #[test]
    fn rates_at_chosen_steps() {
        let c = Schedule::Constant;
        assert_eq!(c.lr(0.01, 0, 100), 0.01);
        assert_eq!(c.lr(0.01, 99, 100), 0.01);

        let one = Schedule::OneCycle { warmup: 0.25 };
        assert!(close(one.lr(0.01, 0, 100), 0.01 / 25.0));
        // Half-way up the warm-up: the mean of start and peak.
        assert!(close(one.lr(0.01, 125, 1000), (0.01 + 0.01 / 25.0) / 2.0));
        assert!(
            close(one.lr(0.01, 250, 1000), 0.01),
            "the peak at the end of the warm-up"
        );
        // Half-way down: the mean of peak and end.
        assert!(close(one.lr(0.01, 625, 1000), (0.01 + 0.01 / 1e5) / 2.0));
        assert!(
            one.lr(0.01, 999, 1000) < 0.01 / 1e4,
            "{}",
            one.lr(0.01, 999, 1000)
        );

        let cos = Schedule::Cosine { warmup: 0.1 };
        assert!(close(cos.lr(0.01, 0, 1000), 0.01 / 100.0));
        assert!(close(cos.lr(0.01, 49, 1000), 0.005));
        assert!(close(cos.lr(0.01, 100, 1000), 0.01));
        assert!(close(cos.lr(0.01, 550, 1000), 0.005));
        assert!(cos.lr(0.01, 999, 1000) < 1e-6);
    }

    #[test]
    fn names_and_warmups() {
        assert_eq!(
            named(ScheduleName::Onecycle, None).unwrap(),
            Schedule::OneCycle { warmup: 0.25 }
        );
        assert_eq!(
            named(ScheduleName::Cosine, Some(0.2)).unwrap(),
            Schedule::Cosine { warmup: 0.2 }
        );
        assert!(named(ScheduleName::Constant, Some(0.2)).is_err());
        assert!(named(ScheduleName::Cosine, Some(1.0)).is_err());
        // The record's layout: `"constant"` as before, and a tagged object with its warm-up.
        assert_eq!(
            serde_json::to_string(&Schedule::Constant).unwrap(),
            "\"constant\""
        );
        assert_eq!(
            serde_json::to_string(&Schedule::OneCycle { warmup: 0.3 }).unwrap(),
            "{\"onecycle\":{\"warmup\":0.3}}"
        );
    }
}

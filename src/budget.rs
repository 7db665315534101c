//! `--time DURATION`: a run given minutes instead of epochs. The run times its own steps before
//! training, then chooses the epochs that end the whole command within the budget; the chosen
//! epochs go into the run record, so `--resume` and a run of the record train the same bits.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A wall-clock budget in whole seconds, written as `90s`, `10m`, `1h30m` or a bare number of
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeBudget(pub u64);

impl TimeBudget {
    /// Seconds.
    pub fn seconds(self) -> f64 {
        self.0 as f64
    }
}

impl FromStr for TimeBudget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let bad = || format!("{s:?} is not a duration: write e.g. 90s, 10m or 1h30m");
        if text.is_empty() {
            return Err(bad());
        }
        if let Ok(n) = text.parse::<u64>() {
            return positive(n).ok_or_else(bad);
        }
        let (mut total, mut number, mut seen_unit) = (0u64, String::new(), false);
        for c in text.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            let n: u64 = number.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            number.clear();
            seen_unit = true;
        }
        if !number.is_empty() || !seen_unit {
            return Err(bad());
        }
        positive(total).ok_or_else(bad)
    }
}

fn positive(n: u64) -> Option<TimeBudget> {
    (n > 0).then_some(TimeBudget(n))
}

/// As it is parsed: `1h30m`, `10m`, `45s`.
impl fmt::Display for TimeBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
        f.write_str(&out)
    }
}

impl Serialize for TimeBudget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a run's timing says, in seconds: what has gone already, one training epoch (its steps,
/// its validation and, with PreciseBN, its statistics pass), and what follows the last epoch
/// (scoring the test set, writing the report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Since the command started: loading, the start, the timing itself.
    pub spent: f64,
    /// One epoch.
    pub epoch: f64,
    /// After the last epoch.
    pub finish: f64,
}

/// The share of the budget kept back for what the timing cannot see (a busy machine, the
/// checkpoints written each epoch).
pub const MARGIN: f64 = 0.1;

/// The most epochs that end the command within `budget`, or why none does.
pub fn epochs_within(budget: TimeBudget, t: Timing) -> Result<usize, String> {
    let left = budget.seconds() * (1.0 - MARGIN) - t.spent - t.finish;
    let epochs = if t.epoch > 0.0 {
        (left / t.epoch).floor()
    } else {
        0.0
    };
    if epochs >= 1.0 {
        return Ok(epochs as usize);
    }
    let needed = ((t.spent + t.finish + t.epoch) / (1.0 - MARGIN)).ceil() as u64;
    Err(format!(
        "--time {budget} is too short for one epoch here: {:.0} s went to loading and timing, an \
         epoch takes about {:.1} s and the test set and report about {:.0} s; give at least {}",
        t.spent,
        t.epoch,
        t.finish,
        TimeBudget(needed.max(1))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_as_written() {
        for (text, secs, shown) in [
            ("90s", 90, "1m30s"),
            ("10m", 600, "10m"),
            ("1h30m", 5400, "1h30m"),
            ("2h", 7200, "2h"),
            ("45", 45, "45s"),
            (" 5m ", 300, "5m"),
        ] {
            let b: TimeBudget = text.parse().unwrap();
            assert_eq!(b, TimeBudget(secs), "{text}");
            assert_eq!(b.to_string(), shown);
            assert_eq!(shown.parse::<TimeBudget>().unwrap(), b);
        }
        for bad in [
            "",
            "0",
            "0m",
            "10x",
            "m",
            "1.5m",
            "-3m",
            "5m3",
            "99999999999999999999h",
        ] {
            let e = bad.parse::<TimeBudget>().unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        let json = serde_json::to_value(TimeBudget(600)).unwrap();
        assert_eq!(json, "10m");
        assert_eq!(
            serde_json::from_value::<TimeBudget>(json).unwrap(),
            TimeBudget(600)
        );
    }

    #[test]
    fn the_epochs_fill_the_budget_less_its_margin() {
        let t = Timing {
            spent: 10.0,
            epoch: 2.0,
            finish: 5.0,
        };
        // 600 s · 0.9 = 540; less 15 = 525; 262 epochs of 2 s.
        assert_eq!(epochs_within(TimeBudget(600), t), Ok(262));
        let e = epochs_within(TimeBudget(18), t).unwrap_err();
        assert!(
            e.contains("--time 18s is too short") && e.contains("give at least 19s"),
            "{e}"
        );
        assert_eq!(epochs_within(TimeBudget(19), t), Ok(1));
    }
}

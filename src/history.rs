//! The per-epoch history of a training run: what the Keras-style lines print, `history.csv`
//! holds and the curves plot.

use crate::record::Keep;
use serde::{Deserialize, Serialize};

/// Under [`Keep::Auto`], how far below the last epoch's validation loss the best-accuracy epoch's
/// must be for it to be kept instead: the best of a hundred noisy validation scores is partly
/// luck, while a run that has drifted away from a better model (a pretrained network that already
/// fits the data, as on digits) shows it as a loss well below the end's (docs/accuracy.md,
/// "Which checkpoint to keep").
pub const AUTO_MARGIN: f64 = 0.25;

/// What the unlabelled pool did in an epoch (semi-supervised runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolEpoch {
    /// Fraction of the pool images drawn whose prediction reached the threshold (they were
    /// learned with their pseudo-label).
    pub confident: f64,
    /// Fraction of those pseudo-labels that were right, when the pool came with labels.
    pub pseudo_acc: Option<f64>,
    /// Share of the pseudo-labels given to each class.
    pub shares: Vec<f64>,
}

impl PoolEpoch {
    /// ` - pool: 0.62 confident, pseudo_acc 0.9100, classes 6-14%`.
    fn line(&self) -> String {
        let acc = self
            .pseudo_acc
            .map_or_else(String::new, |a| format!(", pseudo_acc: {a:.4}"));
        let (lo, hi) = self
            .shares
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let classes = if self.shares.is_empty() || lo > hi {
            String::new()
        } else {
            format!(", classes {:.0}-{:.0}%", lo * 100.0, hi * 100.0)
        };
        format!(" - pool: {:.2} confident{acc}{classes}", self.confident)
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Wall time of the epoch, seconds.
    pub seconds: f64,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Training accuracy over the epoch (on augmented batches).
    pub acc: f64,
    /// Validation loss after the epoch.
    pub val_loss: f64,
    /// Validation accuracy after the epoch.
    pub val_acc: f64,
    /// The unlabelled pool's figures, in a semi-supervised run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolEpoch>,
}

impl EpochRecord {
    /// The Keras-style line: `Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: ...`.
    pub fn keras_line(&self, epochs: usize) -> String {
        format!(
            "Epoch {}/{} - {:.0}s - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4}{}",
            self.epoch,
            epochs,
            self.seconds,
            self.loss,
            self.acc,
            self.val_loss,
            self.val_acc,
            self.pool.as_ref().map_or_else(String::new, PoolEpoch::line)
        )
    }
}

/// The per-epoch history of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History(pub Vec<EpochRecord>);

impl History {
    /// `history.csv`: a header, then one row per epoch.
    /// A semi-supervised run adds `pool_confident`, `pseudo_acc` (empty when the pool has no
    /// labels) and `pseudo_share_<class index>` for each class.
    pub fn to_csv(&self) -> String {
        let classes = self
            .0
            .iter()
            .filter_map(|r| r.pool.as_ref().map(|p| p.shares.len()))
            .max();
        let mut s = String::from("epoch,seconds,loss,acc,val_loss,val_acc");
        if let Some(c) = classes {
            s.push_str(",pool_confident,pseudo_acc");
            for i in 0..c {
                s.push_str(&format!(",pseudo_share_{i}"));
            }
        }
        s.push('\n');
        for r in &self.0 {
            s.push_str(&format!(
                "{},{:.3},{:.6},{:.6},{:.6},{:.6}",
                r.epoch, r.seconds, r.loss, r.acc, r.val_loss, r.val_acc
            ));
            if let Some(c) = classes {
                match &r.pool {
                    Some(p) => {
                        s.push_str(&format!(",{:.6},", p.confident));
                        if let Some(a) = p.pseudo_acc {
                            s.push_str(&format!("{a:.6}"));
                        }
                        for i in 0..c {
                            s.push_str(&format!(",{:.6}", p.shares.get(i).unwrap_or(&0.0)));
                        }
                    }
                    None => s.push_str(&",".repeat(c + 2)),
                }
            }
            s.push('\n');
        }
        s
    }

    /// The epoch whose weights a finished run keeps under `keep`.
    pub fn kept(&self, keep: Keep) -> Option<&EpochRecord> {
        let (best, last) = (self.best()?, self.0.last()?);
        Some(match keep {
            Keep::Best => best,
            Keep::Last => last,
            Keep::Auto if best.val_loss < last.val_loss * (1.0 - AUTO_MARGIN) => best,
            Keep::Auto => last,
        })
    }

    /// The epoch with the best validation accuracy (the earliest among equals).
    pub fn best(&self) -> Option<&EpochRecord> {
        self.0
            .iter()
            .fold(None, |b: Option<&EpochRecord>, r| match b {
                Some(b) if b.val_acc >= r.val_acc => Some(b),
                _ => Some(r),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            seconds: 1.0,
            loss: 0.5,
            acc: 0.8,
            val_loss: 0.4,
            val_acc,
            pool: None,
        }
    }

    #[test]
    fn keras_line_format() {
        let r = EpochRecord {
            epoch: 3,
            seconds: 10.2,
            loss: 0.10541,
            acc: 0.98512,
            val_loss: 0.0976,
            val_acc: 0.9829,
            pool: None,
        };
        assert_eq!(
            r.keras_line(15),
            "Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: 0.0976 - val_acc: 0.9829"
        );
    }

    #[test]
    fn pool_figures_join_the_line_and_the_csv() {
        let mut r = rec(2, 0.9);
        r.pool = Some(PoolEpoch {
            confident: 0.625,
            pseudo_acc: Some(0.91),
            shares: vec![0.25, 0.75],
        });
        assert!(
            r.keras_line(5)
                .ends_with(" - pool: 0.62 confident, pseudo_acc: 0.9100, classes 25-75%"),
            "{}",
            r.keras_line(5)
        );
        let csv = History(vec![rec(1, 0.5), r]).to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",pool_confident,pseudo_acc,pseudo_share_0,pseudo_share_1"));
        assert!(lines[1].ends_with(",,,,"), "{}", lines[1]);
        assert!(
            lines[2].ends_with(",0.625000,0.910000,0.250000,0.750000"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn best_is_earliest_highest() {
        let h = History(vec![rec(1, 0.5), rec(2, 0.7), rec(3, 0.7), rec(4, 0.6)]);
        assert_eq!(h.best().unwrap().epoch, 2);
        assert!(
            h.to_csv()
                .starts_with("epoch,seconds,loss,acc,val_loss,val_acc\n1,")
        );
    }

    #[test]
    fn auto_keeps_the_last_epoch_unless_the_best_ones_loss_is_clearly_lower() {
        let with_loss = |epoch, acc, loss| EpochRecord {
            val_loss: loss,
            ..rec(epoch, acc)
        };
        let mut h = History(vec![with_loss(1, 0.9, 0.30), with_loss(2, 0.8, 0.25)]);
        assert_eq!(h.kept(Keep::Auto).unwrap().epoch, 2);
        assert_eq!(h.kept(Keep::Best).unwrap().epoch, 1);
        // Lower, but by less than the margin: a lucky epoch, the last is kept.
        h.0[1].val_loss = 0.35;
        assert_eq!(h.kept(Keep::Auto).unwrap().epoch, 2);
        // Far lower: the run drifted away from its best epoch.
        h.0[1].val_loss = 0.30 / (1.0 - AUTO_MARGIN) + 0.01;
        assert_eq!(h.kept(Keep::Auto).unwrap().epoch, 1);
        assert_eq!(h.kept(Keep::Last).unwrap().epoch, 2);
        assert_eq!(History(vec![]).kept(Keep::Auto), None);
    }
}

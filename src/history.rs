//! The per-epoch history of a training run: what the Keras-style lines print, `history.csv`
//! holds and the curves plot.

use serde::{Deserialize, Serialize};

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
}

impl EpochRecord {
    /// The Keras-style line: `Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: ...`.
    pub fn keras_line(&self, epochs: usize) -> String {
        format!(
            "Epoch {}/{} - {:.0}s - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4}",
            self.epoch, epochs, self.seconds, self.loss, self.acc, self.val_loss, self.val_acc
        )
    }
}

/// The per-epoch history of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History(pub Vec<EpochRecord>);

impl History {
    /// `history.csv`: a header, then one row per epoch.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch,seconds,loss,acc,val_loss,val_acc\n");
        for r in &self.0 {
            s.push_str(&format!(
                "{},{:.3},{:.6},{:.6},{:.6},{:.6}\n",
                r.epoch, r.seconds, r.loss, r.acc, r.val_loss, r.val_acc
            ));
        }
        s
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
        };
        assert_eq!(
            r.keras_line(15),
            "Epoch 3/15 - 10s - loss: 0.1054 - acc: 0.9851 - val_loss: 0.0976 - val_acc: 0.9829"
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
}

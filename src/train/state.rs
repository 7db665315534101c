//! Where the training loop stands: what a resume file saves besides the model and optimizer.

use crate::history::History;
use crate::record::RunRecord;
use serde::{Deserialize, Serialize};

/// Where the training loop stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The run's resolved settings (`options` in resume files written before the typed record).
    #[serde(alias = "options", deserialize_with = "crate::record::any_layout")]
    pub record: RunRecord,
    /// The class names of the data, checked on resume.
    pub classes: Vec<String>,
    /// The epoch in progress (0-based) and the batches of it already trained.
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batch: usize,
    /// Running sums of the epoch in progress.
    pub loss_sum: f64,
    /// Correct predictions so far in the epoch.
    pub correct: usize,
    /// Images trained on so far in the epoch.
    pub seen: usize,
    /// Seconds spent on the epoch before an interruption.
    pub seconds: f64,
    /// The finished epochs.
    pub history: History,
    /// The best validation accuracy so far (of the best checkpoint); `None` before the first
    /// epoch ends (a state saved by Ctrl-C in the first epoch).
    #[serde(default)]
    pub best_acc: Option<f64>,
    /// Why the run stopped before its last epoch (early stopping), once it has.
    #[serde(default)]
    pub stopped: Option<String>,
    /// What the unlabelled pool did so far in the epoch (semi-supervised runs).
    #[serde(default)]
    pub pool: super::semi::PoolCounts,
}

impl LoopState {
    /// The start of a run of `record` on data with `classes`, with `history` behind it.
    pub fn start(record: RunRecord, classes: Vec<String>, history: History) -> Self {
        LoopState {
            record,
            classes,
            epoch: 0,
            batch: 0,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            seconds: 0.0,
            history,
            best_acc: None,
            stopped: None,
            pool: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state saved before any epoch ended has no best accuracy; it must read back (0.1.0 wrote
    /// `null` for it and then refused to read it).
    #[test]
    fn a_state_from_the_first_epoch_reads_back() {
        let record = crate::plan::resolve(crate::record::Stage::Pretrain, &Default::default())
            .unwrap()
            .record;
        let st = LoopState {
            record,
            classes: vec!["a".into(), "b".into()],
            epoch: 0,
            batch: 3,
            loss_sum: 1.5,
            correct: 40,
            seen: 96,
            seconds: 0.2,
            history: History::default(),
            best_acc: None,
            stopped: None,
            pool: Default::default(),
        };
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["best_acc"], serde_json::Value::Null);
        let back: LoopState = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, st);
        let mut later = json;
        later["best_acc"] = 0.75.into();
        let back: LoopState = serde_json::from_value(later).unwrap();
        assert_eq!(back.best_acc, Some(0.75));
    }
}

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
    /// The best validation accuracy so far (of the best checkpoint).
    pub best_acc: f64,
    /// Why the run stopped before its last epoch (early stopping), once it has.
    #[serde(default)]
    pub stopped: Option<String>,
}

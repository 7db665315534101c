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
    pub classes: Vec<String>,
    /// The epoch in progress (0-based) and the batches of it already trained.
    pub epoch: usize,
    pub batch: usize,
    /// Running sums of the epoch in progress.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
    pub history: History,
    pub best_acc: f64,
}

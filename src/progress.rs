//! What a command reports while it runs. The library says what happened; its caller (the binary)
//! decides how to show it — lines on standard output, warnings on standard error, progress bars on
//! a terminal, or nothing at all, as for the runs inside a comparison.

use crate::history::EpochRecord;

/// Something that happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// A line of information: what was loaded, how a run is set up, its results, what was written.
    Info(String),
    /// Something the user should know that does not stop the command.
    Warning(String),
    /// An epoch of training starts: `batches` batches, of which `done` are already trained (a
    /// resumed epoch).
    EpochStarted {
        /// The epoch, from 0.
        epoch: usize,
        /// The run's epochs.
        epochs: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Batches already trained.
        done: usize,
    },
    /// One more batch trained; the epoch's running loss and accuracy.
    BatchTrained {
        /// Mean loss over the epoch's batches so far.
        loss: f64,
        /// Accuracy over the epoch's batches so far.
        acc: f64,
    },
    /// The epoch's batches are over (done, or training stopped among them).
    BatchesEnded,
    /// An epoch ended, validated and saved.
    Epoch {
        /// The epoch's figures.
        record: &'a EpochRecord,
        /// The run's epochs.
        epochs: usize,
    },
    /// A command of several training runs (a comparison, an audit's folds) starts them.
    RunsStarted {
        /// Runs in the command.
        total: usize,
        /// The command, for the progress bar.
        what: &'static str,
    },
    /// One of those runs is done (trained, resumed or read back), with its line.
    RunDone(String),
}

/// Where a command's events go.
pub trait Progress {
    /// Reports `event`.
    fn event(&mut self, event: Event<'_>);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&mut self, _: Event<'_>) {}
}

/// Only the warnings of another [`Progress`]: what a run inside a comparison reports.
pub struct WarningsOnly<'a>(pub &'a mut dyn Progress);

impl Progress for WarningsOnly<'_> {
    fn event(&mut self, event: Event<'_>) {
        if let Event::Warning(_) = event {
            self.0.event(event);
        }
    }
}

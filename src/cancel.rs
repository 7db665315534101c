//! Cancellation: Ctrl-C and SIGTERM set one process-wide flag that long-running work polls, so it
//! can stop at a safe point (the training loop saves a resumable state first).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks running work to stop at its next safe point (called from the signal handler).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop has been asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Cancelled)` once a stop has been asked for: long loops call it between steps, naming what
/// they were doing (`"loading data"`), and stop before writing anything.
pub fn check(doing: &'static str) -> Result<()> {
    if stop_requested() {
        Err(Error::Cancelled(doing))
    } else {
        Ok(())
    }
}

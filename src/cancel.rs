//! Cancellation: Ctrl-C and SIGTERM set one process-wide flag that long-running work polls, so it
//! can stop at a safe point (the training loop saves a resumable state first).

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

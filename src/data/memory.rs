//! One memory budget for every image decode in the process: data loading, `predict`, `suggest`,
//! `audit`, `serve` and `label` all reserve what a decode will allocate ([`super::decode::cost`])
//! before decoding, so however many decodes run at once (loader threads, concurrent uploads)
//! their memory together stays within [`DECODE_BUDGET`]. Waiters are served in arrival order, so a
//! large image is not starved by a stream of small ones.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Memory for decoding images at once, in bytes. It holds the largest image a decode accepts
/// ([`super::decode::MAX_COST`]), so every decode can run, one at a time at worst.
pub const DECODE_BUDGET: u64 = 320 << 20;

struct State {
    free: u64,
    /// Tickets of the waiting reservations, oldest first.
    queue: VecDeque<u64>,
    next: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    free: DECODE_BUDGET,
    queue: VecDeque::new(),
    next: 0,
});
static FREED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    // The state is a counter and a queue, consistent after every statement: a panic elsewhere
    // while holding the lock leaves nothing half-done.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decode memory held until dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
}

impl Reservation {
    /// Takes `bytes` (at most [`DECODE_BUDGET`]) from the budget, waiting for earlier
    /// reservations to be let through and for the memory to be free: for good when `wait` is
    /// `None`, else `None` once `wait` has passed.
    pub fn take(bytes: u64, wait: Option<Duration>) -> Option<Reservation> {
        let bytes = bytes.min(DECODE_BUDGET);
        let deadline = wait.map(|w| Instant::now() + w);
        let mut s = state();
        let ticket = s.next;
        s.next += 1;
        s.queue.push_back(ticket);
        loop {
            if s.queue.front() == Some(&ticket) && s.free >= bytes {
                s.queue.pop_front();
                s.free -= bytes;
                // The next in line may fit in what is left.
                FREED.notify_all();
                return Some(Reservation { bytes });
            }
            s = match deadline {
                None => FREED.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        s.queue.retain(|t| *t != ticket);
                        FREED.notify_all();
                        return None;
                    }
                    FREED
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        state().free += self.bytes;
        FREED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget is never overdrawn, a waiter that times out takes nothing and leaves the queue,
    /// and a large reservation waiting first is served before smaller ones that came after it.
    #[test]
    fn reservations_wait_their_turn_and_never_overdraw() {
        let big = DECODE_BUDGET - (1 << 20);
        let held = Reservation::take(big, None).expect("the budget is free");
        assert!(Reservation::take(2 << 20, Some(Duration::from_millis(50))).is_none());
        let waiter = std::thread::spawn(move || Reservation::take(DECODE_BUDGET, None).is_some());
        std::thread::sleep(Duration::from_millis(100));
        // 1 MiB is free, but the full-budget waiter came first.
        assert!(Reservation::take(1 << 10, Some(Duration::from_millis(100))).is_none());
        drop(held);
        assert!(waiter.join().expect("the waiter ran"));
    }
}

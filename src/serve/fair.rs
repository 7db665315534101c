//! Who gives way when every connection slot is taken. The open connection that has gone longest
//! without a request under way (stalled in its headers, or idle between requests) is closed to
//! make room for the next one, once it has had `limits::GIVE_WAY_AFTER` to start its request. Without
//! this, a few hundred clients that send their headers slowly and reconnect as soon as they are
//! cut held every slot for the 10 s head timeout in turn, and a real request waited in the
//! kernel's queue behind them for 20–27 s; now the slots turn over every second, and a real
//! request has a second to send its headers, which it does at once. A request under way is never
//! cut.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The open connections, and which of them may be closed.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

struct Conn {
    /// Requests under way on it.
    busy: usize,
    /// Since when it has had none (accepted, or its last answer finished).
    idle_since: Instant,
    /// Asks its task to close it; taken when asked, so it is asked once.
    close: Option<oneshot::Sender<()>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain counters and a map: consistent after every statement.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection: its handle, and what resolves (`Ok`) when it is to close.
    pub fn open(self: &Arc<Self>) -> (Handle, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(
            id,
            Conn {
                busy: 0,
                idle_since: Instant::now(),
                close: Some(tx),
            },
        );
        (
            Handle {
                id,
                connections: Arc::clone(self),
            },
            rx,
        )
    }

    /// Asks the connection idle the longest to close, if it has been idle for `after`.
    pub fn make_room(&self, after: Duration) -> Room {
        let mut inner = self.lock();
        let Some(oldest) = inner
            .open
            .values_mut()
            .filter(|c| c.busy == 0 && c.close.is_some())
            .min_by_key(|c| c.idle_since)
        else {
            return Room::Busy;
        };
        let idle = oldest.idle_since.elapsed();
        if idle < after {
            return Room::After(after - idle);
        }
        if let Some(close) = oldest.close.take() {
            let _ = close.send(());
        }
        Room::Made
    }
}

/// What [`Connections::make_room`] did.
#[derive(Debug, PartialEq)]
pub enum Room {
    /// A connection was asked to close: its slot is free as soon as its task ends.
    Made,
    /// The longest-idle connection may be closed after this long.
    After(Duration),
    /// Every connection has a request under way (or was already asked to close).
    Busy,
}

/// One open connection; dropping it removes the connection from [`Connections`].
pub struct Handle {
    id: u64,
    connections: Arc<Connections>,
}

impl Handle {
    /// Marks a request under way until the returned value is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(c) = self.connections.lock().open.get_mut(&self.id) {
            c.busy += 1;
        }
        Busy {
            id: self.id,
            connections: Arc::clone(&self.connections),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.connections.lock().open.remove(&self.id);
    }
}

/// A request under way on a connection.
pub struct Busy {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = self.connections.lock().open.get_mut(&self.id) {
            c.busy = c.busy.saturating_sub(1);
            if c.busy == 0 {
                c.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest-idle connection is asked first, once it has been idle long enough; one with a
    /// request under way never; each only once.
    #[test]
    fn the_longest_idle_connection_gives_way() {
        let conns = Arc::new(Connections::default());
        let (first, mut first_rx) = conns.open();
        let (second, mut second_rx) = conns.open();
        let (_third, mut third_rx) = conns.open();
        // The first is answering a request; the second finishes one after the third was opened.
        let _answering = first.busy();
        drop(second.busy());
        assert!(matches!(
            conns.make_room(Duration::from_secs(60)),
            Room::After(d) if d > Duration::from_secs(59)
        ));
        assert!(third_rx.try_recv().is_err(), "too young to be closed");
        assert_eq!(conns.make_room(Duration::ZERO), Room::Made);
        assert!(
            third_rx.try_recv().is_ok(),
            "the third has been idle longest"
        );
        assert_eq!(conns.make_room(Duration::ZERO), Room::Made);
        assert!(second_rx.try_recv().is_ok());
        assert_eq!(
            conns.make_room(Duration::ZERO),
            Room::Busy,
            "only a busy one is left"
        );
        assert!(first_rx.try_recv().is_err());
        drop(second);
        assert_eq!(conns.lock().open.len(), 2);
    }
}

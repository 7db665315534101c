//! Every bound the server keeps, in one place. Together they cap its memory by design: at most
//! [`MAX_CONNECTIONS`] connections, each holding at most [`MAX_HEADER_BYTES`] of headers and
//! [`MAX_BODY`] of body and all of them [`BODY_BUDGET`], plus the process's decode budget
//! ([`crate::data::memory::DECODE_BUDGET`], reserved from each image's header for what its
//! decoder allocates) — about 64 x 16 KiB + 256 MiB + 320 MiB, under 1 GB with the networks and
//! threads, whatever the clients send. A client that sends too slowly is cut off; one that
//! arrives when the server is full waits in the kernel's queue until the connection idle the
//! longest gives way to it.

use std::time::Duration;

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// Largest request head (request line and headers), in bytes: a longer one gets 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// When every connection is taken, how long one without a request under way keeps its slot
/// before it is closed for a new connection (`fair.rs`): time enough to send a request's head.
pub const GIVE_WAY_AFTER: Duration = Duration::from_secs(1);

/// Most header fields in a request: more get 431.
pub const MAX_HEADERS: usize = 64;

/// Time for a request's head to arrive, and for an idle kept-alive connection to send its next
/// request, before the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for a request's body to arrive (408 after it).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body (an image file), in bytes: a larger one gets 413, refused from its
/// `Content-Length` without reading it, or as soon as it passes the limit.
pub const MAX_BODY: usize = 8 << 20;

/// Memory for request bodies at once (each reserves its declared length before it is read, the
/// limit when it declares none): 32 of the largest, so that bodies and decodes together stay
/// under 1 GB.
pub const BODY_BUDGET: usize = 256 << 20;

/// How long a prediction waits for decode memory and a free network before it gets 503.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// After Ctrl-C or SIGTERM: time given to answers under way before every connection is closed.
pub const GRACE: Duration = Duration::from_millis(500);

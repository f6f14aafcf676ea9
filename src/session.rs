//! The seam between the drivers and the HTTP core: `Service` (one per worker) and `Session`
//! (one per connection). Sans-IO: no sockets, no clock reads; time comes in as `now`.
//!
//! # The driver's loop, for every backend
//! ```text
//! accept        → Session::new(peer, now)
//! bytes arrive  → session.feed(&mut svc, bytes, now)        (copy; the slice may be reused)
//! peer EOF      → session.feed_eof(now)
//! then, until next_output() is None:
//!     match session.next_output() {
//!         Output::Bytes(b)            → send b (any prefix may go)      → session.consume(&mut svc, n, now)
//!         Output::File{fd,offset,len} → splice/sendfile from fd at offset → session.consume(&mut svc, n, now)
//!     }
//! session.should_close()  → close the socket (after output is drained)
//! session.wants_read()    → false: stop reading until it turns true again (backpressure)
//! session.deadline()      → close the connection when `now >= deadline`
//! shutdown requested      → session.start_shutdown(); close those for which should_close() holds
//! ```
//!
//! # Buffer contract (what makes io_uring sends sound)
//! The memory behind `Output::Bytes` and the fd behind `Output::File` stay valid, at the same
//! address and unchanged, until `consume` has covered them or the `Session` is dropped,
//! whatever else is called on the session meanwhile (`feed` included). Moving the `Session`
//! value itself does not move that memory (it lives on the heap).

use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Instant, SystemTime};

use crate::config::Config;

/// Per-worker HTTP state: config, root directory, open-file cache, cached Date, access log.
pub struct Service {
    _private: (),
}

impl Service {
    /// `root` is an `O_PATH | O_DIRECTORY` fd of the served folder (opened by the worker).
    pub fn new(config: &Config, root: OwnedFd) -> Service {
        let _ = (config, root);
        todo!("core: Service::new")
    }

    /// Tell the service the wall-clock time; call at least once a second (refreshes the cached
    /// Date header and access-log timestamp).
    pub fn set_time(&mut self, wall: SystemTime) {
        let _ = wall;
        todo!("core: Service::set_time")
    }

    /// Access-log bytes waiting to be written (combined format, one line per response).
    /// The driver writes them to the log file when it likes (at least once a second) and clears
    /// the buffer. Always empty when the access log is off.
    pub fn access_log(&mut self) -> &mut Vec<u8> {
        todo!("core: Service::access_log")
    }
}

/// One piece of output to write to the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Bytes to send. A driver may send any prefix and report it with `consume`.
    Bytes(&'a [u8]),
    /// `len` bytes of the file `fd` starting at `offset` (splice or sendfile).
    File { fd: RawFd, offset: u64, len: u64 },
}

/// One HTTP/1.1 connection: request parsing, pipelining, keep-alive, timeouts, responses.
pub struct Session {
    _private: (),
}

impl Session {
    pub fn new(peer: SocketAddr, now: Instant) -> Session {
        let _ = (peer, now);
        todo!("core: Session::new")
    }

    /// Bytes received from the peer. Parses and answers as many complete requests as the
    /// pipeline limit allows; responses are queued as output.
    pub fn feed(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        let _ = (svc, data, now);
        todo!("core: Session::feed")
    }

    /// The peer closed its sending side (recv returned 0): answer what is complete, then close.
    pub fn feed_eof(&mut self, now: Instant) {
        let _ = now;
        todo!("core: Session::feed_eof")
    }

    /// The next piece of output, or None when nothing is queued. Calling it again without
    /// `consume` returns the same piece.
    pub fn next_output(&mut self) -> Option<Output<'_>> {
        todo!("core: Session::next_output")
    }

    /// `n` bytes of the piece last returned by `next_output` were written. May answer further
    /// pipelined requests that were waiting, so call `next_output` again afterwards.
    pub fn consume(&mut self, svc: &mut Service, n: usize, now: Instant) {
        let _ = (svc, n, now);
        todo!("core: Session::consume")
    }

    /// True once the connection should be closed: all output written and no more to come
    /// (error, `Connection: close`, HTTP/1.0 without keep-alive, EOF, shutdown, or idle).
    pub fn should_close(&self) -> bool {
        todo!("core: Session::should_close")
    }

    /// False while the server wants no more bytes from this peer (too much queued output,
    /// closing after an error). The driver stops reading until it turns true.
    pub fn wants_read(&self) -> bool {
        todo!("core: Session::wants_read")
    }

    /// When this connection times out in its current phase (header read, keep-alive idle,
    /// send stall). The driver closes it when `now >= deadline`.
    pub fn deadline(&self) -> Option<Instant> {
        todo!("core: Session::deadline")
    }

    /// Graceful shutdown: answer nothing new; finish what is in flight, then `should_close`.
    pub fn start_shutdown(&mut self) {
        todo!("core: Session::start_shutdown")
    }
}

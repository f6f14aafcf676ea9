//! I/O drivers: each runs one worker's event loop over the shared sans-IO `session`.
//!
//! Every driver exposes `pub fn run(ctx: WorkerCtx) -> Result<(), DriverError>` and returns
//! once shutdown has been requested through `ctx.shutdown` and its connections are closed (or
//! `config.timeouts.shutdown` has passed).

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Backend, Config};
use crate::handler::Roots;
use crate::session::Service;

pub mod app;
mod cgi_proc;
pub mod epoll;
mod epoll_gw;
pub mod pool;
#[cfg(feature = "tokio-uring")]
pub mod tokio_uring;
pub mod uring;

/// What an EAGAIN from a splice of an upstream socket into a connection's pipe means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpliceEagain {
    /// The pipe was empty: the socket has nothing; wait for it to be readable.
    SocketDry,
    /// The pipe holds bytes and is out of slots (a socket fills one per segment) while the
    /// socket still has bytes: ringd, not the upstream, holds the body back (the session is
    /// told, so the upstream's read timer does not run); the client's drain brings the
    /// driver back.
    PipeFull,
    /// The pipe holds bytes and the socket none (or FIONREAD failed): the client's drain
    /// brings the driver back, and the next splice tells.
    Drain,
}

/// Tells why splicing upstream socket `sock` into a pipe holding `in_pipe` bytes answered
/// EAGAIN (the uring and epoll drivers' shared rule).
pub(crate) fn splice_eagain(sock: std::os::fd::BorrowedFd<'_>, in_pipe: usize) -> SpliceEagain {
    if in_pipe == 0 {
        SpliceEagain::SocketDry
    } else if crate::sys::fionread(sock).is_ok_and(|b| b > 0) {
        SpliceEagain::PipeFull
    } else {
        SpliceEagain::Drain
    }
}

/// What one worker thread is handed. Owned by that thread alone.
pub struct WorkerCtx {
    /// Worker index, 0-based.
    pub id: usize,
    /// This worker's copy of the configuration.
    pub config: Config,
    /// Bound, listening, non-blocking socket with SO_REUSEPORT (one per worker). It has
    /// TCP_NODELAY and TCP_NOTSENT_LOWAT set, which accepted sockets inherit.
    pub listener: TcpListener,
    /// `O_PATH | O_DIRECTORY` fds of the served roots (`config.sites.roots`, in order).
    pub roots: Roots,
    /// Where the main thread posts a reloaded config (SIGHUP).
    pub reload: Arc<Reload>,
    /// eventfd that becomes readable when graceful shutdown is requested.
    pub shutdown: OwnedFd,
}

/// Run one worker on the backend its config names; returns after graceful shutdown.
pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    match ctx.config.backend {
        Backend::Uring => uring::run(ctx),
        Backend::Epoll => epoll::run(ctx),
        #[cfg(feature = "tokio-uring")]
        Backend::TokioUring => tokio_uring::run(ctx),
        #[cfg(not(feature = "tokio-uring"))]
        Backend::TokioUring => Err(tokio_uring_missing()),
    }
}

#[cfg(not(feature = "tokio-uring"))]
fn tokio_uring_missing() -> DriverError {
    DriverError::Unavailable {
        backend: "tokio-uring",
        why: "this ringd was built without the `tokio-uring` cargo feature \
              (rebuild with --features tokio-uring, or use --backend uring or epoll)"
            .to_string(),
    }
}

/// Check, before any worker starts, that `backend` can run with this build and kernel, so
/// the user gets one clear error instead of one per worker.
pub fn check_available(backend: Backend) -> Result<(), DriverError> {
    match backend {
        Backend::Uring => uring::check_available(),
        Backend::Epoll => Ok(()),
        #[cfg(feature = "tokio-uring")]
        Backend::TokioUring => uring::check_available().map_err(|e| DriverError::Unavailable {
            backend: "tokio-uring",
            why: e.to_string(),
        }),
        #[cfg(not(feature = "tokio-uring"))]
        Backend::TokioUring => Err(tokio_uring_missing()),
    }
}

/// Why a driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "io_uring is unavailable: {0} (set the sysctl kernel.io_uring_disabled=0, \
         or use --backend epoll)"
    )]
    UringSetup(std::io::Error),
    #[error("{backend} backend is not available: {why}")]
    Unavailable { backend: &'static str, why: String },
    #[error("I/O error in the event loop: {0}")]
    Io(#[from] std::io::Error),
}

/// How often every driver runs its housekeeping tick: set the wall clock on the `Service`,
/// close connections past their `Session::deadline()`, flush the access log.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Gives freed heap back to the kernel after a crowd of connections has gone (a flood of slow
/// clients leaves the allocator holding its high-water mark otherwise: ~6 KiB per connection
/// that was open, kept as RSS long after). Checked on every tick: once the worker's live
/// connections fall below a quarter of the peak since the last trim, and that peak was at
/// least [`Trim::MIN_PEAK`], `malloc_trim(0)` returns what the allocator no longer uses.
/// glibc only (other allocators return memory on their own terms).
#[derive(Debug, Default)]
pub struct Trim {
    peak: usize,
}

impl Trim {
    /// Below this peak the memory at stake is too small to bother.
    pub const MIN_PEAK: usize = 1024;

    /// Called on every tick with the worker's live connection count; true when it trimmed.
    pub fn tick(&mut self, live: usize) -> bool {
        self.peak = self.peak.max(live);
        if self.peak >= Self::MIN_PEAK && live < self.peak / 4 {
            self.peak = live;
            trim();
            return true;
        }
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own arenas (under their locks) and
    // returns unused pages with madvise; it touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod trim_tests {
    #[test]
    fn trims_once_after_a_crowd_leaves() {
        let mut t = super::Trim::default();
        // A small worker never trims.
        assert!(!(0..100).any(|n| t.tick(n % 600)));
        // A flood of 8,000 that drains: a trim when it falls under 2,000, another when the
        // rest goes (each trim needs a fall to a quarter of the peak since the last one).
        assert!(!t.tick(8_000));
        assert!(!t.tick(2_500));
        assert!(t.tick(1_900));
        assert!(!t.tick(1_000));
        assert!(t.tick(10));
        assert!(!t.tick(900));
        assert!(!t.tick(5_000));
        assert!(t.tick(100));
    }
}

/// The per-worker access-log file: `Service::access_log()` bytes are appended to it on every
/// tick (and at exit). Each worker opens the file itself with `O_APPEND`, so whole-buffer
/// writes from different workers never interleave inside a line.
pub struct AccessLog {
    file: Option<std::fs::File>,
    /// Set after the first write error, so a full disk is reported once, not every tick.
    failed: bool,
}

impl AccessLog {
    /// Open `config.access_log` for appending (created if missing); no file when it is off.
    pub fn open(config: &Config) -> Result<AccessLog, DriverError> {
        let file = match &config.access_log {
            None => None,
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)?,
            ),
        };
        Ok(AccessLog {
            file,
            failed: false,
        })
    }

    /// Write out and clear whatever the service has buffered. A write error is reported once
    /// on stderr and the lines are dropped: logging must never stop the server.
    pub fn flush(&mut self, buf: &mut Vec<u8>) {
        use std::io::Write;
        if buf.is_empty() {
            return;
        }
        if let Some(file) = &mut self.file {
            if let Err(e) = file.write_all(buf) {
                if !self.failed {
                    eprintln!("ringd: access log write failed: {e} (further lines are dropped)");
                    self.failed = true;
                }
            }
        }
        buf.clear();
    }
}

/// Whether a driver's `Instant` deadline has passed.
pub fn expired(deadline: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

/// A reloaded config, posted by the main thread and taken by each worker at its next tick,
/// between loop passes: a safe point, where no request is half-answered.
#[derive(Default)]
pub struct Reload {
    generation: AtomicU64,
    next: Mutex<Option<(Config, Roots)>>,
}

impl Reload {
    /// Posts a new config (with its roots opened) for every worker.
    pub fn publish(&self, config: Config, roots: Roots) {
        if let Ok(mut slot) = self.next.lock() {
            *slot = Some((config, roots));
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Applies a config posted since generation `seen` to `svc`; true when one was.
    pub fn apply(&self, seen: &mut u64, svc: &mut Service) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return false;
        }
        *seen = g;
        let next = match self.next.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => None,
        };
        match next {
            Some((config, roots)) => {
                svc.reload(&config, roots);
                true
            }
            None => false,
        }
    }
}

//! The tokio-uring driver's per-worker resources lent to connections: owned write buffers
//! (tokio-uring's writes need owned memory) and the bounded pool of splice pipes.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::sync::Notify;

/// Write buffers the worker keeps for reuse, and the largest capacity it keeps.
const WRITE_BUFS_KEPT: usize = 256;
const WRITE_BUF_MAX_KEPT: usize = 256 * 1024;

/// Owned buffers lent to one write each (the copy of an `Output::Bytes`), so that buffer
/// memory follows the writes in flight rather than the connections open.
#[derive(Default)]
pub(super) struct WriteBufs {
    free: RefCell<Vec<Vec<u8>>>,
}

impl WriteBufs {
    pub(super) fn take(&self) -> Vec<u8> {
        self.free.borrow_mut().pop().unwrap_or_default()
    }

    pub(super) fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() <= WRITE_BUF_MAX_KEPT && free.len() < WRITE_BUFS_KEPT {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A pipe used to splice file bodies: `held` bytes are in it and not yet sent.
pub(super) struct Pipe {
    pub(super) r: OwnedFd,
    pub(super) w: OwnedFd,
    pub(super) capacity: usize,
    pub(super) held: usize,
}

impl Pipe {
    pub(super) fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the two-element array, which outlives the call.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a pipe fd we own; F_SETPIPE_SZ / F_GETPIPE_SZ touch no user memory.
        // Growing the pipe may fail (fs.pipe-user-pages-soft); the default size then serves.
        let capacity = unsafe {
            let set = libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want);
            if set > 0 {
                set
            } else {
                libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
            }
        };
        Ok(Pipe {
            r,
            w,
            capacity: usize::try_from(capacity).unwrap_or(0).max(4096),
            held: 0,
        })
    }
}

/// The worker's bounded set of splice pipes; a connection that finds none free waits.
pub(super) struct PipePool {
    free: RefCell<Vec<Pipe>>,
    /// Pipes in existence (free or lent).
    created: Cell<usize>,
    max: usize,
    size: usize,
    returned: Notify,
    failure_logged: Cell<bool>,
}

impl PipePool {
    pub(super) fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            free: RefCell::new(Vec::new()),
            created: Cell::new(0),
            max,
            size,
            returned: Notify::new(),
            failure_logged: Cell::new(false),
        }
    }

    pub(super) async fn acquire(&self) -> io::Result<Pipe> {
        loop {
            if let Some(p) = self.free.borrow_mut().pop() {
                return Ok(p);
            }
            if self.created.get() < self.max {
                match Pipe::new(self.size) {
                    Ok(p) => {
                        self.created.set(self.created.get() + 1);
                        return Ok(p);
                    }
                    // None exists, so none will come back to wait for: the caller copies.
                    Err(e) if self.created.get() == 0 => return Err(e),
                    // Some are lent out: wait for one of them (the failure is logged once).
                    Err(e) => self.log_failure(&e),
                }
            }
            self.returned.notified().await;
        }
    }

    /// Takes a pipe back; one that still holds data is closed instead (its bytes belong to a
    /// response that will never finish).
    pub(super) fn release(&self, pipe: Pipe) {
        if pipe.held == 0 {
            self.free.borrow_mut().push(pipe);
        } else {
            drop(pipe);
            self.created.set(self.created.get() - 1);
        }
        self.returned.notify_one();
    }

    pub(super) fn log_failure(&self, e: &io::Error) {
        if !self.failure_logged.replace(true) {
            eprintln!(
                "ringd: cannot create a splice pipe: {e}; file bodies wait for a pooled pipe, \
                 or go through a copy buffer while none exists (logged once)"
            );
        }
    }
}

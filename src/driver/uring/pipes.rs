//! The per-worker splice pipe pool: at most `config.pipe_pool` pipes, created lazily, each
//! sized with F_SETPIPE_SZ (falling back to the default size when the kernel refuses). A
//! pipe goes back to the pool only when empty; one that still holds data is closed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::sys;

/// One splice pipe.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let (r, w) = sys::pipe()?;
        // The per-user pipe page budget (fs.pipe-user-pages-soft) may refuse a large pipe:
        // keep the default size then.
        let cap = match sys::set_pipe_size(w.as_fd(), size) {
            Ok(cap) => cap,
            Err(_) => sys::pipe_size(w.as_fd())?,
        };
        Ok(Pipe { r, w, cap })
    }

    /// Read end.
    pub fn r(&self) -> RawFd {
        self.r.as_raw_fd()
    }

    /// Write end.
    pub fn w(&self) -> RawFd {
        self.w.as_raw_fd()
    }

    /// Whether the pipe holds no data (FIONREAD); false when that cannot be told.
    pub fn is_empty(&self) -> bool {
        sys::fionread(self.r.as_fd()).is_ok_and(|n| n == 0)
    }

    /// Capacity in bytes: the most one splice into it should ask for.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// A bounded pool of empty pipes.
pub struct PipePool {
    free: Vec<Pipe>,
    /// Pipes in existence (free or lent out).
    created: usize,
    max: usize,
    size: usize,
    /// Set once creating a pipe failed, so the failure is logged once.
    warned: bool,
}

impl PipePool {
    pub fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            created: 0,
            max: max.max(1),
            size,
            warned: false,
        }
    }

    /// An empty pipe, or None when all are lent out (the caller waits for `put`).
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.created >= self.max {
            return None;
        }
        match Pipe::new(self.size) {
            Ok(p) => {
                self.created += 1;
                Some(p)
            }
            Err(e) => {
                if !self.warned {
                    eprintln!(
                        "ringd: cannot create a splice pipe: {e}; file bodies wait for a \
                         pooled pipe, or go through a copy buffer while none exists (logged once)"
                    );
                    self.warned = true;
                }
                None
            }
        }
    }

    /// Return a pipe. `empty` says whether every byte spliced into it was spliced out; a
    /// pipe that still holds data is closed instead of pooled.
    pub fn put(&mut self, pipe: Pipe, empty: bool) {
        if empty {
            self.free.push(pipe);
        } else {
            drop(pipe);
            self.created -= 1;
        }
    }

    /// Whether no pipe exists (free or lent out): after a failed `take`, nothing will come
    /// free to wait for.
    pub fn none_exist(&self) -> bool {
        self.created == 0
    }

    /// Whether a `take` could succeed now without waiting.
    #[cfg(test)]
    pub fn available(&self) -> bool {
        !self.free.is_empty() || self.created < self.max
    }

    /// Pipes in existence.
    #[cfg(test)]
    pub fn created(&self) -> usize {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_bounded_and_reuses() {
        let mut pool = PipePool::new(2, 64 * 1024);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(a.cap() >= 4096);
        assert!(pool.take().is_none(), "bounded at 2");
        assert!(!pool.available());
        let a_fd = a.r();
        pool.put(a, true);
        assert!(pool.available());
        let c = pool.take().unwrap();
        assert_eq!(c.r(), a_fd, "an empty pipe is reused");
        pool.put(b, false);
        assert_eq!(
            pool.created(),
            1,
            "a pipe with data in it is closed, not pooled"
        );
        let d = pool.take().unwrap();
        assert_ne!(d.r(), c.r());
        assert_eq!(pool.created(), 2);
    }

    #[test]
    fn pipe_with_data_is_closed_not_reused() {
        let mut pool = PipePool::new(1, 4096);
        let p = pool.take().unwrap();
        let buf = [7u8; 100];
        // SAFETY: buf is valid for 100 bytes during the call.
        let n = unsafe { libc::write(p.w(), buf.as_ptr().cast(), buf.len()) };
        assert_eq!(n, 100);
        assert!(!p.is_empty(), "FIONREAD sees the data");
        pool.put(p, false);
        let q = pool.take().unwrap();
        assert!(q.is_empty());
        let mut out = [0u8; 8];
        // SAFETY: out is valid for 8 bytes during the call.
        let n = unsafe { libc::read(q.r(), out.as_mut_ptr().cast(), out.len()) };
        assert_eq!(n, -1, "the new pipe is empty (EAGAIN)");
    }
}

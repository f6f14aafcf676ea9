//! The output side of a connection: an ordered queue of byte buffers and file ranges that
//! upholds the session buffer contract (memory handed to the driver never moves or changes
//! until `consume` covers it) and coalesces pipelined responses into one send.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::session::Output;

use super::head::ConnHeader;

/// A response is appended to the last queued buffer while that buffer is shorter than this
/// (and not yet handed to the driver); otherwise a new buffer is started.
pub const COALESCE_MAX: usize = 64 * 1024;
/// Capacity of a freshly allocated output buffer.
pub const NEW_BUF_CAP: usize = 8 * 1024;
/// Buffers larger than this are freed instead of being returned to the pool.
pub const POOL_BUF_MAX_CAP: usize = 256 * 1024;
/// Most spare buffers a worker keeps.
pub const POOL_MAX: usize = 256;

/// Spare byte buffers shared by all connections of a worker.
#[derive(Debug, Default)]
pub struct BufPool {
    bufs: Vec<Vec<u8>>,
}

impl BufPool {
    /// An empty buffer (reused when one is spare).
    pub fn take(&mut self) -> Vec<u8> {
        self.bufs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(NEW_BUF_CAP))
    }

    /// Returns a buffer for reuse.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_BUF_MAX_CAP || self.bufs.len() >= POOL_MAX {
            return;
        }
        buf.clear();
        self.bufs.push(buf);
    }
}

#[derive(Debug)]
enum Piece {
    Bytes {
        buf: Vec<u8>,
        pos: usize,
    },
    File {
        fd: Arc<OwnedFd>,
        off: u64,
        len: u64,
    },
    /// Bytes the driver holds in the connection's splice pipe (a proxied body moving
    /// upstream → pipe → client): they grow as it splices more in.
    Pipe {
        len: u64,
    },
}

#[derive(Debug)]
struct Slot {
    piece: Piece,
    /// Responses that end within this piece.
    responses: u32,
}

/// Queued output of one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    slots: VecDeque<Slot>,
    /// The front piece has been returned by `next` (so its buffer must not change).
    handed: bool,
    /// Responses queued and not yet completely consumed.
    responses: usize,
    /// In the back buffer: offset and length of the last response's Connection header
    /// (possibly empty), while that response is the last thing queued.
    conn_at: Option<(usize, usize)>,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Responses queued and not completely written.
    pub fn responses(&self) -> usize {
        self.responses
    }

    /// Bytes of output queued and not yet written (file ranges included).
    pub fn queued_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match &s.piece {
                Piece::Bytes { buf, pos } => buf.len() - pos,
                Piece::File { len, .. } | Piece::Pipe { len } => *len as usize,
            })
            .sum()
    }

    /// The buffer to append the next bytes of output to: the last queued buffer when it may
    /// still grow (not handed out, not too long), else a new one from `pool`.
    pub fn bytes(&mut self, pool: &mut BufPool) -> &mut Vec<u8> {
        let only_handed = self.handed && self.slots.len() == 1;
        let reuse = matches!(
            self.slots.back(),
            Some(Slot { piece: Piece::Bytes { buf, .. }, .. })
                if !only_handed && buf.len() < COALESCE_MAX
        );
        if !reuse {
            self.conn_at = None;
            let buf = pool.take();
            self.slots.push_back(Slot {
                piece: Piece::Bytes { buf, pos: 0 },
                responses: 0,
            });
        }
        match self.slots.back_mut() {
            Some(Slot {
                piece: Piece::Bytes { buf, .. },
                ..
            }) => buf,
            // The branch above guarantees the back slot is a byte buffer.
            _ => unreachable!("back slot is a byte buffer"),
        }
    }

    /// Queues `len` bytes of `fd` from `off`.
    pub fn file(&mut self, fd: &Arc<OwnedFd>, off: u64, len: u64) {
        if len > 0 {
            self.conn_at = None;
            let piece = Piece::File {
                fd: Arc::clone(fd),
                off,
                len,
            };
            self.slots.push_back(Slot {
                piece,
                responses: 0,
            });
        }
    }

    /// `n` more bytes of the response being written wait in the driver's splice pipe
    /// (appended to the last piece when that is a pipe piece in the same response).
    pub fn pipe(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.conn_at = None;
        if let Some(Slot {
            piece: Piece::Pipe { len },
            responses: 0,
        }) = self.slots.back_mut()
        {
            *len += n;
            return;
        }
        self.slots.push_back(Slot {
            piece: Piece::Pipe { len: n },
            responses: 0,
        });
    }

    /// Whether bytes spliced into the pipe now would go out next: nothing is queued, or the
    /// front piece is the pipe's (what is queued before them must be written first).
    pub fn pipe_next(&self) -> bool {
        match self.slots.front() {
            None => true,
            Some(s) => matches!(s.piece, Piece::Pipe { .. }) && self.slots.len() == 1,
        }
    }

    /// Marks the end of one response (everything queued so far belongs to it or earlier ones).
    pub fn end_response(&mut self) {
        if let Some(s) = self.slots.back_mut() {
            s.responses += 1;
            self.responses += 1;
        }
    }

    /// Records that the Connection header of the response being written sits at `at` (and is
    /// `len` bytes, 0 when absent) in the buffer last returned by `bytes`.
    pub fn mark_conn(&mut self, at: usize, len: usize) {
        self.conn_at = Some((at, len));
    }

    /// Makes the last queued response say `Connection: close`, when it is still the last
    /// thing queued and its bytes have not been handed out. Returns whether it did.
    pub fn close_last(&mut self) -> bool {
        let only_handed = self.handed && self.slots.len() == 1;
        let Some((at, len)) = self.conn_at.take() else {
            return false;
        };
        match self.slots.back_mut() {
            Some(Slot {
                piece: Piece::Bytes { buf, .. },
                ..
            }) if !only_handed && at + len <= buf.len() => {
                buf.splice(at..at + len, ConnHeader::Close.line().iter().copied());
                true
            }
            _ => false,
        }
    }

    /// The next piece of output; the same piece again until `consume` covers it.
    pub fn peek(&mut self) -> Option<Output<'_>> {
        let s = self.slots.front()?;
        self.handed = true;
        Some(match &s.piece {
            Piece::Bytes { buf, pos } => Output::Bytes(&buf[*pos..]),
            Piece::File { fd, off, len } => Output::File {
                fd: fd.as_raw_fd(),
                offset: *off,
                len: *len,
            },
            Piece::Pipe { len } => Output::Pipe { len: *len },
        })
    }

    /// `n` bytes of the front piece were written. Returns how many responses completed.
    pub fn consume(&mut self, n: usize, pool: &mut BufPool) -> u32 {
        let Some(front) = self.slots.front_mut() else {
            return 0;
        };
        let finished = match &mut front.piece {
            Piece::Bytes { buf, pos } => {
                debug_assert!(*pos + n <= buf.len(), "consume past the piece");
                *pos = (*pos + n).min(buf.len());
                *pos == buf.len()
            }
            Piece::File { off, len, .. } => {
                let n = (n as u64).min(*len);
                *off += n;
                *len -= n;
                *len == 0
            }
            Piece::Pipe { len } => {
                *len -= (n as u64).min(*len);
                *len == 0
            }
        };
        if !finished {
            return 0;
        }
        self.handed = false;
        let Some(slot) = self.slots.pop_front() else {
            return 0;
        };
        if self.slots.is_empty() {
            self.conn_at = None;
        }
        if let Piece::Bytes { buf, .. } = slot.piece {
            pool.give(buf);
        }
        self.responses -= slot.responses as usize;
        slot.responses
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self, pool: &mut BufPool) {
        for slot in self.slots.drain(..) {
            if let Piece::Bytes { buf, .. } = slot.piece {
                pool.give(buf);
            }
        }
        self.handed = false;
        self.responses = 0;
        self.conn_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(o: Option<Output<'_>>) -> Vec<u8> {
        match o {
            Some(Output::Bytes(b)) => b.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn coalesces_until_handed_out() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        q.bytes(&mut pool).extend_from_slice(b"one");
        q.end_response();
        q.bytes(&mut pool).extend_from_slice(b"two");
        q.end_response();
        assert_eq!(q.responses(), 2);
        let first = match q.peek() {
            Some(Output::Bytes(b)) => b.as_ptr(),
            other => panic!("{other:?}"),
        };
        // Handed out: the next response goes to a new buffer, the first stays put.
        q.bytes(&mut pool).extend_from_slice(b"three");
        q.end_response();
        let again = match q.peek() {
            Some(Output::Bytes(b)) => {
                assert_eq!(b, b"onetwo");
                b.as_ptr()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(first, again);
        assert_eq!(q.consume(2, &mut pool), 0);
        assert_eq!(text(q.peek()), b"etwo");
        assert_eq!(q.consume(4, &mut pool), 2);
        assert_eq!(text(q.peek()), b"three");
        assert_eq!(q.consume(5, &mut pool), 1);
        assert!(q.is_empty() && q.peek().is_none());
        assert_eq!(q.responses(), 0);
    }

    #[test]
    fn files_between_bytes() {
        let mut pool = BufPool::default();
        let mut q = OutQueue::default();
        let fd = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        q.bytes(&mut pool).extend_from_slice(b"head");
        q.file(&fd, 10, 100);
        q.end_response();
        q.bytes(&mut pool).extend_from_slice(b"next");
        q.end_response();
        assert_eq!(text(q.peek()), b"head");
        q.consume(4, &mut pool);
        assert_eq!(
            q.peek(),
            Some(Output::File {
                fd: fd.as_raw_fd(),
                offset: 10,
                len: 100
            })
        );
        assert_eq!(q.consume(60, &mut pool), 0);
        assert_eq!(
            q.peek(),
            Some(Output::File {
                fd: fd.as_raw_fd(),
                offset: 70,
                len: 40
            })
        );
        assert_eq!(q.consume(40, &mut pool), 1);
        assert_eq!(text(q.peek()), b"next");
    }
}

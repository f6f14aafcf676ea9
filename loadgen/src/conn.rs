//! One client connection's state, with no I/O: its socket's lifecycle, the requests in flight
//! (with their intended and actual send times), and the two send buffers (one owned by the
//! kernel while a send is in flight, one staging the next batch).

use std::os::fd::RawFd;

use crate::parse::ResponseParser;

/// A request handed to a connection and not yet answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// When the schedule wanted it sent (ns since the clock's base).
    pub intended: u64,
    /// When it went to the kernel; 0 while it is still staged.
    pub sent: u64,
    /// Index into the run's request set.
    pub req: u32,
    /// Last request of the batch it was sent in (for per-batch latency).
    pub batch_last: bool,
}

/// Fixed-capacity FIFO of in-flight requests (capacity = pipeline depth); never allocates after
/// construction.
#[derive(Debug)]
pub struct InflightRing {
    buf: Box<[Inflight]>,
    head: usize,
    len: usize,
}

impl InflightRing {
    /// A ring holding at most `cap` requests.
    pub fn new(cap: usize) -> Self {
        InflightRing {
            buf: vec![Inflight::default(); cap.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Number of requests held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity (the pipeline depth).
    #[inline]
    pub fn cap(&self) -> usize {
        self.buf.len()
    }

    /// True when full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Append; returns false (and drops nothing) when full.
    #[inline]
    pub fn push(&mut self, e: Inflight) -> bool {
        if self.is_full() {
            return false;
        }
        let i = (self.head + self.len) % self.buf.len();
        self.buf[i] = e;
        self.len += 1;
        true
    }

    /// The oldest request.
    #[inline]
    pub fn front(&self) -> Option<&Inflight> {
        (self.len > 0).then(|| &self.buf[self.head])
    }

    /// Remove the oldest request.
    #[inline]
    pub fn pop(&mut self) -> Option<Inflight> {
        if self.len == 0 {
            return None;
        }
        let e = self.buf[self.head];
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(e)
    }

    /// Mutable access to the `i`-th oldest request.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> &mut Inflight {
        debug_assert!(i < self.len);
        let n = self.buf.len();
        &mut self.buf[(self.head + i) % n]
    }

    /// The `i`-th oldest request.
    #[inline]
    pub fn get(&self, i: usize) -> &Inflight {
        debug_assert!(i < self.len);
        &self.buf[(self.head + i) % self.buf.len()]
    }

    /// Keep only the requests for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Inflight) -> bool) {
        let n = self.len;
        let mut kept = 0;
        for i in 0..n {
            let e = *self.get(i);
            if keep(&e) {
                *self.get_mut(kept) = e;
                kept += 1;
            }
        }
        self.len = kept;
    }
}

/// Where a connection's socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// No socket (before the first connect, or after the run).
    Idle,
    /// A connect is in flight.
    Connecting,
    /// Connected; requests may be sent.
    Open,
    /// Connecting failed; try again at this time (ns).
    Retry {
        /// When to reconnect.
        at: u64,
    },
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    /// Lifecycle state.
    pub state: ConnState,
    /// The socket, or -1.
    pub fd: RawFd,
    /// Bumped on every new socket; completions carrying an older one are stale.
    pub gen: u32,
    /// Response parser.
    pub parser: ResponseParser,
    /// Requests handed to this connection and not yet answered, oldest first.
    pub inflight: InflightRing,
    /// How many requests at the back of `inflight` are staged and not yet sent.
    pub staged: usize,
    /// Bytes of the staged requests.
    pub stage: Vec<u8>,
    /// Bytes the kernel is sending (valid while `send_busy`).
    pub out: Vec<u8>,
    /// How much of `out` has been sent.
    pub out_off: usize,
    /// A send is in flight (whatever the generation: the kernel still reads `out`).
    pub send_busy: bool,
    /// When the current connect began (ns).
    pub connect_start: u64,
    /// Listed in the engine's ready queue.
    pub in_ready: bool,
    /// Listed in the engine's flush list.
    pub in_dirty: bool,
    /// Consecutive failed connects (for back-off).
    pub connect_failures: u32,
    /// Slow reader: earliest time of the next receive (ns).
    pub read_at: u64,
    /// `https://`: the TLS state of the current socket.
    pub tls: Option<Box<rustls::ClientConnection>>,
    /// Decrypted bytes of the last receive (reused).
    pub plain: Vec<u8>,
}

impl Conn {
    /// A connection with room for `pipeline` requests of at most `max_req` bytes each.
    pub fn new(pipeline: usize, max_req: usize, no_body: bool) -> Conn {
        let cap = pipeline.max(1) * max_req.max(1);
        Conn {
            state: ConnState::Idle,
            fd: -1,
            gen: 0,
            parser: ResponseParser::new(no_body),
            inflight: InflightRing::new(pipeline),
            staged: 0,
            stage: Vec::with_capacity(cap),
            out: Vec::with_capacity(cap),
            out_off: 0,
            send_busy: false,
            connect_start: 0,
            in_ready: false,
            in_dirty: false,
            connect_failures: 0,
            read_at: 0,
            tls: None,
            plain: Vec::new(),
        }
    }

    /// Room for another request.
    #[inline]
    pub fn has_room(&self) -> bool {
        !self.inflight.is_full()
    }

    /// Open and able to take requests.
    #[inline]
    pub fn accepts(&self) -> bool {
        self.state == ConnState::Open && self.has_room()
    }

    /// Stage a request: record it in flight (unsent) and append its bytes.
    #[inline]
    pub fn stage_request(&mut self, intended: u64, req: u32, bytes: &[u8]) -> bool {
        if !self.inflight.push(Inflight {
            intended,
            sent: 0,
            req,
            batch_last: false,
        }) {
            return false;
        }
        self.stage.extend_from_slice(bytes);
        self.staged += 1;
        true
    }

    /// Move the staged bytes into the send buffer, stamping the staged requests with `now` as
    /// their send time. Returns how many requests went out, or 0 when nothing could be sent
    /// (nothing staged, or a send still in flight).
    pub fn take_batch(&mut self, now: u64) -> usize {
        if self.send_busy || self.stage.is_empty() {
            return 0;
        }
        std::mem::swap(&mut self.out, &mut self.stage);
        self.stage.clear();
        self.out_off = 0;
        let n = self.staged;
        let len = self.inflight.len();
        for i in len - n..len {
            let e = self.inflight.get_mut(i);
            e.sent = now;
            e.batch_last = i == len - 1;
        }
        self.staged = 0;
        self.send_busy = true;
        n
    }

    /// As [`Conn::take_batch`] over TLS: the staged requests are encrypted into the send
    /// buffer (with any handshake bytes rustls has queued). Before the handshake finishes
    /// rustls holds them back, and the send buffer may stay empty (`send_busy` false).
    pub fn take_batch_tls(&mut self, now: u64) -> usize {
        if self.send_busy || self.stage.is_empty() {
            return 0;
        }
        let Some(t) = self.tls.as_mut() else {
            return 0;
        };
        if std::io::Write::write_all(&mut t.writer(), &self.stage).is_err() {
            return 0;
        }
        self.stage.clear();
        self.out.clear();
        self.out_off = 0;
        while t.wants_write() {
            if t.write_tls(&mut self.out).is_err() {
                break;
            }
        }
        let n = self.staged;
        let len = self.inflight.len();
        for i in len - n..len {
            let e = self.inflight.get_mut(i);
            e.sent = now;
            e.batch_last = i == len - 1;
        }
        self.staged = 0;
        self.send_busy = !self.out.is_empty();
        n
    }

    /// TLS bytes rustls wants sent (handshake, alerts), moved into the send buffer; false
    /// when there are none or a send is in flight.
    pub fn take_tls_output(&mut self) -> bool {
        if self.send_busy {
            return false;
        }
        let Some(t) = self.tls.as_mut() else {
            return false;
        };
        if !t.wants_write() {
            return false;
        }
        self.out.clear();
        self.out_off = 0;
        while t.wants_write() {
            if t.write_tls(&mut self.out).is_err() {
                break;
            }
        }
        self.send_busy = !self.out.is_empty();
        self.send_busy
    }

    /// Forget the socket's per-connection state and re-stage every kept request for the next
    /// connection (the caller has already removed the ones that failed).
    pub fn restage(&mut self, reqs: &[Vec<u8>]) {
        self.parser.reset();
        self.stage.clear();
        for i in 0..self.inflight.len() {
            let e = self.inflight.get_mut(i);
            e.sent = 0;
            e.batch_last = false;
            let req = e.req as usize;
            self.stage.extend_from_slice(&reqs[req]);
        }
        self.staged = self.inflight.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_fifo_and_bounded() {
        let mut r = InflightRing::new(3);
        for i in 0..3 {
            assert!(r.push(Inflight {
                req: i,
                ..Default::default()
            }));
        }
        assert!(!r.push(Inflight::default()));
        assert_eq!(r.pop().unwrap().req, 0);
        assert!(r.push(Inflight {
            req: 9,
            ..Default::default()
        }));
        r.retain(|e| e.req != 2);
        let order: Vec<u32> = std::iter::from_fn(|| r.pop()).map(|e| e.req).collect();
        assert_eq!(order, [1, 9]);
    }

    #[test]
    fn batches_stamp_send_times_and_restage_keeps_order() {
        let reqs = vec![b"A".to_vec(), b"BB".to_vec()];
        let mut c = Conn::new(4, 2, false);
        c.stage_request(10, 0, &reqs[0]);
        c.stage_request(11, 1, &reqs[1]);
        assert_eq!(c.take_batch(20), 2);
        assert_eq!(c.out, b"ABB");
        assert_eq!(c.take_batch(21), 0, "send in flight");
        c.stage_request(12, 0, &reqs[0]);
        assert_eq!(c.inflight.get(1).sent, 20);
        assert!(c.inflight.get(1).batch_last);
        assert!(!c.inflight.get(0).batch_last);
        assert_eq!(c.inflight.get(2).sent, 0);
        c.send_busy = false;
        c.restage(&reqs);
        assert_eq!(c.stage, b"ABBA");
        assert_eq!(c.staged, 3);
        assert_eq!(c.inflight.get(0).intended, 10);
    }
}

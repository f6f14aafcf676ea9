//! Connections in the uring driver: the connection slab, and how a connection's completions
//! (recv, send, splice, poll, cancel) move its `Session` along, arm its next op, and close it
//! once every op it had in flight has completed.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use io_uring::{cqueue, opcode, types};

use super::gw::Gw;
use super::pipes::Pipe;
use super::token::{Op, Token};
use super::{Driver, LINGER};
use crate::session::{Output, Session};
use crate::sys;

/// Size of a connection's copy buffer (file bodies sent without a splice pipe).
const COPY_BUF: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests, writing responses.
    Open,
    /// All output written and the write side shut: reading (and discarding) what the peer
    /// still sends, so that closing does not turn into a RST that destroys the response.
    Lingering(Instant),
    /// Waiting for its in-flight ops to complete (they were cancelled); then freed.
    Closing,
}

/// One accepted connection.
pub struct Conn {
    pub fd: OwnedFd,
    pub session: Session,
    pub phase: Phase,
    /// Tokens in flight for this connection; it is freed only when this is 0.
    pub ops: u32,
    /// user_data of the armed multishot recv.
    pub recv: Option<u64>,
    /// An AsyncCancel for `recv` is in flight.
    pub recv_cancel: bool,
    /// The one write-side op in flight (Send, SpliceIn, ReadFile, SendBuf or PollOut).
    pub write: Option<Op>,
    /// Splice pipe lent from the pool while a file or proxied body is being sent.
    pub pipe: Option<Pipe>,
    /// Bytes spliced into `pipe` and not yet out to the socket.
    pub in_pipe: usize,
    /// Queued in `Driver::pipe_waiters` for a free pipe.
    pub waiting_pipe: bool,
    /// Copy buffer for file bodies when no splice pipe exists and none can be made (the
    /// per-user pipe budget or the fd limit is exhausted); empty until first needed.
    pub copy: Vec<u8>,
    /// Bytes of `copy` read from the file and not yet sent, starting at `copy_off`.
    pub in_copy: usize,
    pub copy_off: usize,
    /// The peer closed its side (recv returned 0).
    pub eof: bool,
    /// Registered in `Driver::open_waiters`: its session is parked on an open job.
    pub waiting_open: bool,
    /// The upstream sockets of its proxied request (`gw.rs`).
    pub gw: Gw,
    /// Splice pipe for client bytes bound for the upstream (a tunnel's, a streamed request
    /// body's), lent from the pool.
    pub up_pipe: Option<Pipe>,
    /// Bytes spliced into `up_pipe` and not yet out to the upstream.
    pub up_in_pipe: usize,
    /// A PollInUp (client readable, for the next splice into `up_pipe`) is in flight.
    pub polling_in_up: bool,
    /// The last splice into `up_pipe` answered EAGAIN with data in it (out of slots): wait for the
    /// upstream to drain it before splicing again.
    pub up_eagain: bool,
    /// The CGI script of its exchange (`cgi.rs`).
    pub cgi: Option<crate::driver::cgi_proc::CgiProc>,
    /// user_data of the poll in flight on each of the script's pipes (stdin, stdout, stderr).
    pub cgi_polls: [Option<u64>; 3],
    /// The WSGI call of its exchange (`apps.rs`).
    pub app: Option<crate::driver::app::AppCall>,
}

impl Conn {
    /// A freshly accepted connection: open, nothing in flight.
    pub fn new(fd: OwnedFd, session: Session) -> Conn {
        Conn {
            fd,
            session,
            phase: Phase::Open,
            ops: 0,
            recv: None,
            recv_cancel: false,
            write: None,
            pipe: None,
            in_pipe: 0,
            waiting_pipe: false,
            copy: Vec::new(),
            in_copy: 0,
            copy_off: 0,
            eof: false,
            waiting_open: false,
            gw: Gw::default(),
            up_pipe: None,
            up_in_pipe: 0,
            polling_in_up: false,
            up_eagain: false,
            cgi: None,
            cgi_polls: [None; 3],
            app: None,
        }
    }
}

struct Slot {
    gen: u32,
    conn: Option<Conn>,
}

/// Slab of connections; a connection's id is (index, generation).
#[derive(Default)]
pub struct Conns {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Conns {
    pub fn insert(&mut self, conn: Conn) -> (u32, u32) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, conn: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.conn = Some(conn);
        self.live += 1;
        (idx, slot.gen)
    }

    /// The connection at `idx` if it is still the one of generation `gen`.
    pub fn get_mut(&mut self, idx: u32, gen: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(idx as usize)
            .filter(|s| s.gen == gen)
            .and_then(|s| s.conn.as_mut())
    }

    /// The connection at `idx`, whatever its generation, with that generation.
    pub fn get_any(&mut self, idx: u32) -> Option<(u32, &mut Conn)> {
        let s = self.slots.get_mut(idx as usize)?;
        let gen = s.gen;
        s.conn.as_mut().map(|c| (gen, c))
    }

    pub fn remove(&mut self, idx: u32) -> Option<Conn> {
        let slot = self.slots.get_mut(idx as usize)?;
        let c = slot.conn.take()?;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(idx);
        self.live -= 1;
        Some(c)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Upper bound (exclusive) of connection indexes, for sweeps.
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }
}

fn errno(res: i32) -> i32 {
    -res
}

impl Driver {
    /// Set up a freshly accepted socket as a connection and start reading from it.
    pub(super) fn add_conn(&mut self, fd: OwnedFd) {
        // Multishot accept gives no peer address, and only the access log, the proxy's
        // forwarding fields and CGI's and WSGI's REMOTE_ADDR use it: skip the getpeername (a
        // syscall per connection) otherwise.
        let peer = if self.needs_peer {
            match sys::peer_addr(std::os::fd::AsFd::as_fd(&fd)) {
                Ok(p) => p,
                // The peer is already gone (ENOTCONN) or the socket is odd: just close it.
                Err(_) => return,
            }
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let mut session = Session::new(peer, self.now);
        if self.draining.is_some() {
            // Taken from the backlog during the drain: its first request is still answered.
            session.start_shutdown(self.now);
        }
        let conn = Conn::new(fd, session);
        let (idx, gen) = self.conns.insert(conn);
        if let Some(c) = self.conns.get_mut(idx, gen) {
            c.session
                .set_wake_tag(u64::from(idx) << 32 | u64::from(gen));
        }
        self.drive(idx, gen);
    }

    /// A completion for a connection op. `more`: a multishot op that stays armed.
    pub(super) fn on_conn_op(&mut self, tok: Token, res: i32, flags: u32, more: bool) {
        let (idx, gen) = (tok.conn, tok.conn_gen);
        let Some(c) = self.conns.get_mut(idx, gen) else {
            // Cannot happen (a connection outlives its ops), but never leak a buffer.
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.recycle(bid);
            }
            return;
        };
        if !more {
            c.ops -= 1;
        }
        match tok.op {
            Op::Recv => self.on_recv(idx, gen, res, flags, more),
            Op::Send => self.on_send(idx, gen, res),
            Op::SpliceIn => self.on_splice_in(idx, gen, res),
            Op::PollOut => self.on_poll_out(idx, gen, res),
            // Readable (or failed, which the retried splice then reports): drive() splices.
            Op::PollInUp => {
                if let Some(c) = self.conns.get_mut(idx, gen) {
                    c.polling_in_up = false;
                }
            }
            Op::ReadFile => self.on_read_file(idx, gen, res),
            Op::SendBuf => self.on_send_buf(idx, gen, res),
            Op::Cancel => {
                // Cancel-by-fd needs Linux 5.19; without it, shutting the socket down
                // makes its pending recv/poll complete instead.
                if res == -libc::EINVAL {
                    if let Some(c) = self.conns.get_mut(idx, gen) {
                        let _ = sys::shutdown_both(&c.fd);
                    }
                }
            }
            // A script's pipe was closed: its poll is cancelled, nothing more to do.
            Op::CgiCancel => {}
            Op::Accept
            | Op::Tick
            | Op::Shutdown
            | Op::Open
            | Op::ReadBody
            | Op::Up(..)
            | Op::CgiPoll(_)
            | Op::AppWake => {
                unreachable!("not a connection op")
            }
        }
        if tok.op == Op::Recv && more && res as usize == super::RECV_BUF_SIZE {
            // A full buffer: the rest of this read likely sits in the same batch of
            // completions (a request larger than one provided buffer arrives as several).
            // Drive once it is all fed, at the end of this pass, so that the session sees the
            // request whole: a WSGI app then gets its body in one piece instead of waking for
            // each buffer (wsgi-echo, a 10 KiB POST: 0.86x epoll's req/s before, 1.02x after).
            self.ready.push((idx, gen));
            return;
        }
        self.drive(idx, gen);
    }

    fn on_recv(&mut self, idx: u32, gen: u32, res: i32, flags: u32, more: bool) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if !more {
            c.recv = None;
            c.recv_cancel = false;
        }
        let bid = cqueue::buffer_select(flags);
        if res > 0 {
            if let Some(bid) = bid {
                if c.phase == Phase::Open {
                    let data = self.bufs.get(bid, res as usize);
                    c.session.feed(&mut self.svc, data, now);
                }
                // Fed (copied) or discarded (lingering/closing): the buffer goes back.
                self.bufs.recycle(bid);
            }
            return;
        }
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        if res == 0 {
            c.eof = true;
            match c.phase {
                Phase::Open => c.session.feed_eof(now),
                Phase::Lingering(_) => self.close(idx, gen),
                Phase::Closing => {}
            }
            return;
        }
        match errno(res) {
            // Out of provided buffers, or our own cancel: drive() re-arms when wanted.
            libc::ENOBUFS | libc::ECANCELED | libc::EAGAIN | libc::EINTR => {}
            // On kTLS, a record that is not data (close_notify): the peer is done.
            e if crate::tls::ktls::recv_error_is_eof(e) => {
                c.eof = true;
                match c.phase {
                    Phase::Open => c.session.feed_eof(now),
                    Phase::Lingering(_) => self.close(idx, gen),
                    Phase::Closing => {}
                }
            }
            // ECONNRESET and friends: the connection is dead.
            _ => self.close(idx, gen),
        }
    }

    fn on_send(&mut self, idx: u32, gen: u32, res: i32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.write = None;
        if c.phase != Phase::Open {
            return;
        }
        if res > 0 {
            c.session.consume(&mut self.svc, res as usize, now);
        } else if errno(res) == libc::EAGAIN {
            self.poll_out(idx, gen);
        } else {
            self.close(idx, gen);
        }
    }

    fn on_splice_in(&mut self, idx: u32, gen: u32, res: i32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.write = None;
        // Count what entered the pipe whatever the phase: a closing connection must not
        // hand a pipe with data in it back to the pool.
        if res > 0 {
            c.in_pipe += res as usize;
        }
        if c.phase != Phase::Open {
            return;
        }
        if res <= 0 {
            // 0: the file is shorter than the response promised (truncated while being
            // served); an error: unreadable. Either way the body cannot be completed.
            self.close(idx, gen);
        }
        // Else drive() drains the pipe.
    }

    /// Splice client socket → the upstream-bound pipe (at most its room, `want`) with a direct
    /// non-blocking splice(2), as `drain_pipe` does the other way; a client with nothing to
    /// read gets a `PollAdd(POLLIN)` and is driven again when readable.
    fn splice_up(&mut self, idx: u32, gen: u32, want: u64) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.up_pipe.is_none() {
            c.up_pipe = self.pipes.take();
            if c.up_pipe.is_none() {
                // None free: the client's bytes are received and copied instead.
                c.session.client_no_splice();
                return;
            }
        }
        let pipe = c.up_pipe.as_ref().expect("just ensured");
        let room = pipe.cap().saturating_sub(c.up_in_pipe);
        if room == 0 {
            return;
        }
        let n = (room as u64).min(want) as usize;
        let sock = c.fd.as_raw_fd();
        match sys::splice(sock, pipe.w(), n) {
            Ok(0) => {
                c.eof = true;
                c.session.feed_eof(now);
            }
            Ok(k) => {
                c.up_in_pipe += k;
                c.up_eagain = false;
                c.session.client_spliced(k, now);
                self.later.push((idx, gen));
            }
            Err(e) => match e.raw_os_error() {
                // With data in the pipe, EAGAIN may mean it is out of slots: wait for the
                // upstream to drain it (which clears `up_eagain`) before splicing again.
                Some(libc::EAGAIN) if c.up_in_pipe > 0 => c.up_eagain = true,
                Some(libc::EAGAIN) => {
                    let poll = opcode::PollAdd::new(types::Fd(sock), libc::POLLIN as u32).build();
                    let tok = Token {
                        op: Op::PollInUp,
                        conn: idx,
                        conn_gen: gen,
                    };
                    // SAFETY: no buffer; the socket belongs to the connection, which is freed
                    // only after this op completes (ops += 1).
                    unsafe { self.sq.push(poll, tok) };
                    c.ops += 1;
                    c.polling_in_up = true;
                }
                Some(libc::EINTR) => self.later.push((idx, gen)),
                _ => self.close(idx, gen),
            },
        }
    }

    fn on_read_file(&mut self, idx: u32, gen: u32, res: i32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.write = None;
        if c.phase != Phase::Open {
            return;
        }
        if res > 0 {
            c.in_copy = res as usize;
            c.copy_off = 0;
        } else {
            // 0: the file is shorter than the response promised; an error: unreadable.
            self.close(idx, gen);
        }
    }

    fn on_send_buf(&mut self, idx: u32, gen: u32, res: i32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.write = None;
        if c.phase != Phase::Open {
            return;
        }
        if res > 0 {
            let sent = (res as usize).min(c.in_copy);
            c.in_copy -= sent;
            c.copy_off += sent;
            c.session.consume(&mut self.svc, sent, now);
        } else if errno(res) == libc::EAGAIN {
            self.poll_out(idx, gen);
        } else {
            self.close(idx, gen);
        }
    }

    fn on_poll_out(&mut self, idx: u32, gen: u32, res: i32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.write = None;
        if c.phase == Phase::Open && res < 0 {
            self.close(idx, gen);
        }
        // Writable: drive() retries the pending output.
    }

    /// Wait for the socket to become writable (after -EAGAIN).
    fn poll_out(&mut self, idx: u32, gen: u32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let entry = opcode::PollAdd::new(types::Fd(c.fd.as_raw_fd()), libc::POLLOUT as u32).build();
        let tok = Token {
            op: Op::PollOut,
            conn: idx,
            conn_gen: gen,
        };
        // SAFETY: no buffer; the socket fd is owned by the connection, which is freed only
        // after this op has completed (ops > 0 below).
        unsafe { self.sq.push(entry, tok) };
        c.ops += 1;
        c.write = Some(Op::PollOut);
    }

    /// Move the connection along: submit its next write, close it when done, start or stop
    /// reading as the session wants.
    pub(super) fn drive(&mut self, idx: u32, gen: u32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        match c.phase {
            Phase::Closing => {
                if c.ops == 0 {
                    self.finalize(idx);
                }
                return;
            }
            Phase::Lingering(_) => {
                if c.recv.is_none() && !c.eof {
                    self.arm_recv(idx, gen);
                }
                return;
            }
            Phase::Open => {}
        }
        // After the handshake, the record layer moves to the kernel where the listener runs
        // kTLS, once the multishot recv is gone (`wants_read` is false meanwhile, so it is
        // cancelled below): no completion may carry ciphertext after the switch.
        if c.recv.is_none() && c.write.is_none() {
            if let Some(sw) = c.session.take_ktls() {
                if crate::tls::ktls::enable(c.fd.as_raw_fd(), &sw).is_err() {
                    self.close(idx, gen);
                    return;
                }
            }
        }
        if c.session.collapsed() {
            c.session.collapse_poll(&mut self.svc, self.now);
        }
        // The proxied request or CGI script, if any: connect or spawn, send, read (output may
        // follow).
        self.drive_gw(idx, gen);
        self.drive_cgi(idx, gen);
        self.drive_app(idx, gen);
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if !c.waiting_open && c.session.parked().is_some() {
            self.note_parked(idx, gen);
        }
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.write.is_none() && !c.waiting_pipe {
            self.pump_write(idx, gen);
        }
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.phase != Phase::Open {
            return;
        }
        let idle = c.write.is_none() && !c.waiting_pipe && c.in_pipe == 0 && c.in_copy == 0;
        if idle && c.session.next_output().is_none() && c.session.should_close() {
            self.close_graceful(idx, gen);
            return;
        }
        // Client bytes bound for the upstream go by splice where the session lets them, once
        // the multishot recv is gone (no byte is both received and spliced).
        match (c.eof, c.session.client_splice_want()) {
            (false, Some(want)) => {
                let blocked = c.up_eagain && c.up_in_pipe > 0;
                if c.recv.is_none() && !c.polling_in_up && !blocked {
                    self.splice_up(idx, gen, want);
                }
            }
            _ => {
                if c.up_in_pipe == 0 && !c.polling_in_up {
                    if let Some(p) = c.up_pipe.take() {
                        self.pipes.put(p, true);
                        self.wake_pipe_waiter();
                    }
                }
            }
        }
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let want = !c.eof && c.session.wants_read() && !c.polling_in_up;
        if want && c.recv.is_none() {
            self.arm_recv(idx, gen);
        } else if !want && !c.recv_cancel {
            if let Some(ud) = c.recv {
                let tok = Token {
                    op: Op::Cancel,
                    conn: idx,
                    conn_gen: gen,
                };
                // SAFETY: AsyncCancel carries no buffer; the user_data names a live token.
                unsafe { self.sq.push(opcode::AsyncCancel::new(ud).build(), tok) };
                c.ops += 1;
                c.recv_cancel = true;
            }
        }
    }

    /// Submit the next write-side op for the session's next output, if any.
    fn pump_write(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let sock = c.fd.as_raw_fd();
        let tok = |op| Token {
            op,
            conn: idx,
            conn_gen: gen,
        };
        if c.in_pipe > 0 {
            // Drain the pipe before refilling it.
            self.drain_pipe(idx, gen);
            return;
        }
        if c.in_copy > 0 {
            // Send the rest of the copy buffer before reading more.
            let buf = &c.copy[c.copy_off..c.copy_off + c.in_copy];
            let entry = opcode::Send::new(types::Fd(sock), buf.as_ptr(), buf.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            // SAFETY: `copy` is not touched (resized, read into, dropped) while this op is in
            // flight: it is written only by ReadFile, which is issued only when `in_copy` is
            // 0, and the connection (with its buffer) is freed only after ops == 0.
            unsafe { self.sq.push(entry, tok(Op::SendBuf)) };
            c.ops += 1;
            c.write = Some(Op::SendBuf);
            return;
        }
        // Bound the empty-output skipping so a misbehaving session cannot spin the loop.
        for _ in 0..super::MAX_EMPTY_OUTPUTS {
            match c.session.next_output() {
                None => {
                    if let Some(p) = c.pipe.take() {
                        self.pipes.put(p, true);
                        self.wake_pipe_waiter();
                    }
                    return;
                }
                Some(Output::Bytes([])) => {
                    c.session.consume(&mut self.svc, 0, now);
                }
                Some(Output::Bytes(b)) => {
                    let len = b.len().min(u32::MAX as usize) as u32;
                    let entry = opcode::Send::new(types::Fd(sock), b.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build();
                    // SAFETY: the session's buffer contract keeps these bytes valid and
                    // unmoved until `consume` covers them or the Session is dropped; we call
                    // consume only from this op's completion, and drop the Session only after
                    // all the connection's ops (this one included) have completed.
                    unsafe { self.sq.push(entry, tok(Op::Send)) };
                    c.ops += 1;
                    c.write = Some(Op::Send);
                    return;
                }
                // A proxied body's bytes go out from the pipe (above) as the upstream's
                // splices fill it; nothing to send until then.
                Some(Output::Pipe { .. }) => return,
                Some(Output::File { len: 0, .. }) => {
                    c.session.consume(&mut self.svc, 0, now);
                }
                Some(Output::File { fd, offset, len }) => {
                    if c.pipe.is_none() {
                        match self.pipes.take() {
                            Some(p) => c.pipe = Some(p),
                            // No pipe exists and none can be made: none will come free to
                            // wait for, so copy through memory until one can be made.
                            None if self.pipes.none_exist() => {
                                if c.copy.is_empty() {
                                    c.copy = vec![0; COPY_BUF];
                                }
                                let n = len.min(COPY_BUF as u64) as u32;
                                let entry =
                                    opcode::Read::new(types::Fd(fd), c.copy.as_mut_ptr(), n)
                                        .offset(offset)
                                        .build();
                                // SAFETY: `copy` holds at least `n` bytes and is not touched
                                // until this op completes (no SendBuf is in flight: in_copy
                                // is 0); the file fd stays open until `consume` covers this
                                // output, and the connection is freed only at ops == 0.
                                unsafe { self.sq.push(entry, tok(Op::ReadFile)) };
                                c.ops += 1;
                                c.write = Some(Op::ReadFile);
                                return;
                            }
                            None => {
                                c.waiting_pipe = true;
                                self.pipe_waiters.push_back((idx, gen));
                                return;
                            }
                        }
                    }
                    let pipe = c.pipe.as_ref().expect("just ensured");
                    let n = len.min(pipe.cap() as u64);
                    // Pages already in the page cache go file → pipe here and now, with a
                    // direct splice(2) that cannot wait for the disk; any others in an io-wq
                    // thread (io_uring always runs a splice there), so that a cold file never
                    // blocks the worker.
                    if self.cachestat {
                        match sys::cached(fd, offset, n) {
                            Ok(true) => match sys::splice_file(fd, offset, pipe.w(), n as usize) {
                                Ok(k) if k > 0 => {
                                    c.in_pipe += k;
                                    self.drain_pipe(idx, gen);
                                    return;
                                }
                                // 0: the file is shorter than the response promised
                                // (truncated while being served); an error: unreadable.
                                _ => {
                                    self.close(idx, gen);
                                    return;
                                }
                            },
                            Ok(false) => {}
                            Err(e) => self.cachestat = e.raw_os_error() != Some(libc::ENOSYS),
                        }
                    }
                    let fill = opcode::Splice::new(
                        types::Fd(fd),
                        offset as i64,
                        types::Fd(pipe.w()),
                        -1,
                        n as u32,
                    )
                    .build();
                    // SAFETY: no memory buffer. The file fd stays open until `consume`
                    // covers this output (buffer contract), which happens only after the
                    // spliced bytes left the pipe; the pipe is held by the connection until
                    // this op completes (ops += 1).
                    unsafe { self.sq.push(fill, tok(Op::SpliceIn)) };
                    c.ops += 1;
                    c.write = Some(Op::SpliceIn);
                    return;
                }
            }
        }
    }

    /// Splice what the connection's pipe holds on to its socket, with a direct non-blocking
    /// splice(2) (the socket is O_NONBLOCK): as an io_uring op the kernel would run it in an
    /// io-wq thread, which cost twice the worker's own CPU in proxy-large. Bytes moved: the
    /// connection is driven again on the next pass; a full socket: wait for POLLOUT.
    fn drain_pipe(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let pipe = c.pipe.as_ref().expect("data in a pipe we hold");
        match sys::splice(pipe.r(), c.fd.as_raw_fd(), c.in_pipe) {
            Ok(n) if n > 0 => {
                let n = n.min(c.in_pipe);
                c.in_pipe -= n;
                c.session.consume(&mut self.svc, n, now);
                self.later.push((idx, gen));
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => self.poll_out(idx, gen),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => self.later.push((idx, gen)),
            // 0 from a pipe that holds bytes, or a dead socket: the body cannot go on.
            _ => self.close(idx, gen),
        }
    }

    /// Arm the multishot recv on the connection's socket.
    fn arm_recv(&mut self, idx: u32, gen: u32) {
        let bgid = self.bufs.bgid();
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        let entry = opcode::RecvMulti::new(types::Fd(c.fd.as_raw_fd()), bgid).build();
        let tok = Token {
            op: Op::Recv,
            conn: idx,
            conn_gen: gen,
        };
        // SAFETY: the kernel writes only into provided buffers of the registered ring, which
        // lives until the driver exits after all ops completed; the socket is held by the
        // connection until this op's final completion.
        let ud = unsafe { self.sq.push(entry, tok) };
        c.ops += 1;
        c.recv = Some(ud);
        c.recv_cancel = false;
    }

    /// All output is written and the session is done. Close right away when the peer has
    /// closed too, or when no input waits unread (as nginx does: the FIN follows the queued
    /// response, and the peer's own FIN later costs nobody a wakeup). Otherwise the close
    /// would answer with RST, which can destroy a response the peer has not read yet: shut
    /// the write side and linger, reading and discarding until the peer's EOF or [`LINGER`].
    fn close_graceful(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.eof
            || !sys::has_unread_input(std::os::fd::AsFd::as_fd(&c.fd))
            || sys::shutdown_write(&c.fd).is_err()
        {
            self.close(idx, gen);
            return;
        }
        c.phase = Phase::Lingering(now + LINGER);
        if c.recv.is_none() {
            self.arm_recv(idx, gen);
        }
    }

    /// Close now: cancel whatever is in flight on the socket; free it once all completed.
    pub(super) fn close(&mut self, idx: u32, gen: u32) {
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        self.gw_close(idx, gen);
        self.cgi_close(idx, gen);
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        if let Some(a) = c.app.take() {
            // The app thread stops producing and calls the response's close().
            a.cancel();
        }
        c.phase = Phase::Closing;
        c.waiting_pipe = false;
        if c.ops == 0 {
            self.finalize(idx);
            return;
        }
        let tok = Token {
            op: Op::Cancel,
            conn: idx,
            conn_gen: gen,
        };
        if c.ops == 1 && !c.recv_cancel {
            if let Some(ud) = c.recv {
                // Only the multishot recv is in flight (an idle or half-sent request: the
                // common case when timeouts shed a slowloris crowd): cancel it by its
                // user_data, a hash lookup in the kernel. A cancel by fd walks every armed
                // poll of the ring, so thousands of closes among thousands of connections
                // cost quadratic kernel time on this worker's CPU.
                // SAFETY: AsyncCancel carries no buffer; `ud` names the live recv token, and
                // the fd stays open until it completes (freed only at ops == 0).
                unsafe { self.sq.push(opcode::AsyncCancel::new(ud).build(), tok) };
                c.recv_cancel = true;
                c.ops += 1;
                return;
            }
        }
        let cancel = types::CancelBuilder::fd(types::Fd(c.fd.as_raw_fd())).all();
        // SAFETY: AsyncCancel2 carries no buffer; the fd stays open until this cancel and
        // every op it targets have completed (the connection is freed only at ops == 0).
        unsafe { self.sq.push(opcode::AsyncCancel2::new(cancel).build(), tok) };
        c.ops += 1;
    }

    /// Free a connection whose ops have all completed: return its pipe (or close it if it
    /// still holds data), drop the session, close the socket.
    fn finalize(&mut self, idx: u32) {
        let Some(c) = self.conns.remove(idx) else {
            return;
        };
        debug_assert_eq!(c.ops, 0);
        if let Some(p) = c.pipe {
            // Double-check with FIONREAD: on this (rare, abnormal) path a pipe that is not
            // provably empty is closed rather than reused.
            let empty = c.in_pipe == 0 && p.is_empty();
            self.pipes.put(p, empty);
            self.wake_pipe_waiter();
        }
        if let Some(p) = c.up_pipe {
            let empty = c.up_in_pipe == 0 && p.is_empty();
            self.pipes.put(p, empty);
            self.wake_pipe_waiter();
        }
        // The rest of `c` (session, socket) is dropped at the end of this function, before
        // the accept below is submitted: the socket closes.
        if std::mem::take(&mut self.accept_fd_short) {
            // An fd comes free: accept again now rather than after the backoff.
            self.accept_retry_at = None;
        }
        self.maybe_arm_accept();
    }

    /// A pipe came free: let the first still-waiting connection have it.
    fn wake_pipe_waiter(&mut self) {
        while let Some((idx, gen)) = self.pipe_waiters.pop_front() {
            if let Some(c) = self.conns.get_mut(idx, gen) {
                if c.waiting_pipe {
                    c.waiting_pipe = false;
                    self.ready.push((idx, gen));
                    return;
                }
            }
        }
    }

    /// Housekeeping: close connections past their deadline or linger time.
    pub(super) fn sweep(&mut self) {
        let now = self.now;
        for idx in 0..self.conns.capacity() {
            let Some((gen, c)) = self.conns.get_any(idx) else {
                continue;
            };
            let expired = match c.phase {
                Phase::Open => super::super::expired(c.session.deadline(), now),
                Phase::Lingering(until) => now >= until,
                Phase::Closing => false,
            };
            if !expired {
                continue;
            }
            // An upstream timeout answers 504 and the connection lives on.
            if c.phase == Phase::Open && !c.session.expire(&mut self.svc, now) {
                self.ready.push((idx, gen));
            } else {
                self.close(idx, gen);
            }
        }
    }

    /// Graceful shutdown: every open session stops taking new requests.
    pub(super) fn shutdown_sessions(&mut self, now: Instant) {
        for idx in 0..self.conns.capacity() {
            let Some((gen, c)) = self.conns.get_any(idx) else {
                continue;
            };
            match c.phase {
                Phase::Open => {
                    c.session.start_shutdown(now);
                    self.ready.push((idx, gen));
                }
                Phase::Lingering(_) | Phase::Closing => {}
            }
        }
    }

    /// Shutdown deadline passed: close everything still open.
    pub(super) fn close_all(&mut self) {
        for idx in 0..self.conns.capacity() {
            if let Some((gen, _)) = self.conns.get_any(idx) {
                self.close(idx, gen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let fd = crate::sys::eventfd().unwrap();
        Conn::new(
            fd,
            Session::new("127.0.0.1:1".parse().unwrap(), Instant::now()),
        )
    }

    #[test]
    fn conn_slab_generations_guard_stale_ids() {
        let mut conns = Conns::default();
        let (a, ga) = conns.insert(conn());
        let (b, gb) = conns.insert(conn());
        assert_ne!(a, b);
        assert_eq!(conns.len(), 2);
        assert!(conns.get_mut(a, ga).is_some());
        assert!(conns.remove(a).is_some());
        assert!(conns.remove(a).is_none(), "double free is refused");
        assert!(
            conns.get_mut(a, ga).is_none(),
            "a freed id no longer resolves"
        );
        let (c, gc) = conns.insert(conn());
        assert_eq!(c, a, "slot reused");
        assert_ne!(gc, ga, "with a new generation");
        assert!(conns.get_mut(a, ga).is_none(), "the old id stays stale");
        assert!(conns.get_mut(c, gc).is_some());
        assert_eq!(conns.get_any(b).map(|(g, _)| g), Some(gb));
        assert_eq!(conns.len(), 2);
        assert_eq!(conns.capacity(), 2);
    }
}

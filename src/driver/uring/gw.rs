//! The uring driver's side of the gateway seam: a connection's upstream socket is one more
//! thing its ops act on. Connect is a non-blocking `connect(2)` and, while in progress, a
//! `PollAdd(POLLOUT)`; the request goes out with `Send` from a buffer the upstream owns (a
//! copy of `to_send()`), the response comes in with `Recv` into another buffer it owns,
//! re-armed while `gw_wants_read()`. A finished exchange's socket goes to the worker's
//! [`Pool`] when reusable and idle, else it is retired.
//!
//! A body (or tunnel) the session lets go by splice (`gw_splice_want()`) comes in with a
//! direct non-blocking splice(2) from the socket into the connection's pipe (lent from the
//! worker's pool) instead, at most what the pipe has room for, and a `PollAdd(POLLIN)` when
//! the socket has nothing; the connection's write side splices the pipe on to the client the
//! same way as `Output::Pipe`, and each side's progress drives the other. Direct, because the
//! kernel runs every io_uring splice in an io-wq thread: in proxy-large those threads used
//! 70% of ringd's CPU.
//!
//! Every upstream op counts in the connection's `ops` (so the connection, which owns the
//! upstream and its buffers, outlives it) and in the upstream's own `ops`. Its token carries
//! the connection's index and generation and the upstream's serial: a completion for a socket
//! that was replaced by a retry, or retired, finds it in `Gw::retired` (kept there, cancelled,
//! until its last op completes, then closed) and never reaches the session.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use io_uring::{opcode, types};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::conn::Phase;
use super::ring::Sq;
use super::token::{Op, Token, UpOp};
use super::Driver;
use crate::config::upstreams::Addr;
use crate::driver::{splice_eagain, SpliceEagain};
use crate::gateway::proxy::Failure;

/// Size of each upstream's receive buffer.
pub const UP_BUF_SIZE: usize = 16 * 1024;
/// Most steps (finish, connect) taken in one drive before yielding.
const MAX_STEPS: usize = 16;

/// One upstream socket and the buffers its ops use.
pub struct Up {
    fd: OwnedFd,
    key: (usize, usize),
    /// The exchange's attempt this socket serves.
    attempt: u32,
    serial: u32,
    /// The non-blocking connect has not completed yet.
    connecting: bool,
    /// The connect failed: never pooled.
    dead: bool,
    /// This upstream's ops in flight.
    ops: u32,
    /// A Send (or the PollOut after its -EAGAIN) is in flight: `sbuf` must not change.
    sending: bool,
    /// A Recv (or the PollIn after its -EAGAIN) is in flight: `rbuf` is the kernel's.
    recving: bool,
    sbuf: Vec<u8>,
    rbuf: Box<[u8]>,
}

/// Buffers of finished upstream exchanges, kept for the next ones: a new 16 KiB zeroed read
/// buffer (and a growing send buffer) per proxied request cost about 3% of the proxy's CPU in
/// a profile of proxy-small (malloc, memset, free and heap consolidation).
#[derive(Default)]
pub struct UpBufs(Vec<(Box<[u8]>, Vec<u8>)>);

/// At most this many buffer pairs are kept per worker (16 KiB and up each).
const UP_BUFS_KEPT: usize = 64;
/// A send buffer grown beyond this (a large request body) is not kept.
const SBUF_KEEP_MAX: usize = 64 * 1024;

impl UpBufs {
    fn take(&mut self) -> (Box<[u8]>, Vec<u8>) {
        self.0
            .pop()
            .unwrap_or_else(|| (vec![0; UP_BUF_SIZE].into_boxed_slice(), Vec::new()))
    }

    /// Keeps the buffers of an upstream that has no op in flight (nothing of them is the
    /// kernel's).
    fn give(&mut self, rbuf: Box<[u8]>, mut sbuf: Vec<u8>) {
        if self.0.len() < UP_BUFS_KEPT && sbuf.capacity() <= SBUF_KEEP_MAX {
            sbuf.clear();
            self.0.push((rbuf, sbuf));
        }
    }
}

impl Up {
    fn new(
        fd: OwnedFd,
        key: (usize, usize),
        attempt: u32,
        serial: u32,
        connecting: bool,
        (rbuf, sbuf): (Box<[u8]>, Vec<u8>),
    ) -> Up {
        Up {
            fd,
            key,
            attempt,
            serial,
            connecting,
            dead: false,
            ops: 0,
            sending: false,
            recving: false,
            sbuf,
            rbuf,
        }
    }
}

/// A connection's upstream sockets: the current one, and retired ones whose ops are still
/// completing.
#[derive(Default)]
pub struct Gw {
    up: Option<Up>,
    retired: Vec<Up>,
    serial: u32,
}

/// A non-blocking, close-on-exec socket connecting to `addr`; true while in progress.
fn connect(addr: &Addr) -> io::Result<(OwnedFd, bool)> {
    let (domain, sa) = match addr {
        Addr::Tcp(a) => (Domain::for_address(*a), SockAddr::from(*a)),
        Addr::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
    };
    let s = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)?;
    if matches!(addr, Addr::Tcp(_)) {
        let _ = s.set_tcp_nodelay(true);
    }
    match s.connect(&sa) {
        Ok(()) => Ok((s.into(), false)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((s.into(), true)),
        Err(e) => Err(e),
    }
}

fn token(idx: u32, gen: u32, op: UpOp, serial: u32) -> Token {
    Token {
        op: Op::Up(op, serial),
        conn: idx,
        conn_gen: gen,
    }
}

/// Retires `u`: closed at once when nothing is in flight on it; otherwise every op on it is
/// cancelled and it waits in `gw.retired` until the last completes.
fn retire(sq: &mut Sq, conn_ops: &mut u32, gw: &mut Gw, mut u: Up, idx: u32, gen: u32) {
    if u.ops == 0 {
        return; // dropped: the socket closes
    }
    let cancel = types::CancelBuilder::fd(types::Fd(u.fd.as_raw_fd())).all();
    // SAFETY: AsyncCancel2 carries no buffer; the fd stays open (the Up lives in `retired`)
    // until this cancel and every op it targets have completed.
    unsafe {
        sq.push(
            opcode::AsyncCancel2::new(cancel).build(),
            token(idx, gen, UpOp::Cancel, u.serial),
        )
    };
    u.ops += 1;
    *conn_ops += 1;
    gw.retired.push(u);
}

/// Waits for `u`'s socket to be ready after an EAGAIN: a PollAdd for POLLIN (`op` PollIn,
/// which keeps `recving` set until it completes) or POLLOUT (`op` PollOut, `sending`).
fn poll_up(sq: &mut Sq, conn_ops: &mut u32, u: &mut Up, idx: u32, gen: u32, op: UpOp) {
    let events = if op == UpOp::PollIn {
        u.recving = true;
        libc::POLLIN
    } else {
        u.sending = true;
        libc::POLLOUT
    };
    let entry = opcode::PollAdd::new(types::Fd(u.fd.as_raw_fd()), events as u32).build();
    // SAFETY: no buffer; the socket belongs to the Up, which the connection keeps (current or
    // retired) until this op has completed.
    unsafe { sq.push(entry, token(idx, gen, op, u.serial)) };
    u.ops += 1;
    *conn_ops += 1;
}

impl Driver {
    /// Moves the proxied request of connection (idx, gen) along, if it has one: pool or
    /// retire a finished exchange's socket and release it, connect (pooled or new) for a new
    /// attempt, send what is left of the request, read while the client keeps up.
    pub(super) fn drive_gw(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        for _ in 0..MAX_STEPS {
            let Some(c) = self.conns.get_mut(idx, gen) else {
                return;
            };
            let Some(x) = c.session.gateway() else {
                if let Some(u) = c.gw.up.take() {
                    retire(&mut self.sq, &mut c.ops, &mut c.gw, u, idx, gen);
                }
                return;
            };
            if x.cgi.is_some() || x.is_app() {
                // A CGI script or a WSGI app, not an upstream: `cgi.rs` or `apps.rs` drives
                // it (and puts it down when it is finished).
                return;
            }
            // Finished: pool or retire the socket, then let the session go on.
            if let Some(reusable) = x.finished() {
                if let Some(u) = c.gw.up.take() {
                    let keep = self
                        .svc
                        .upstreams()
                        .spec(u.key.0)
                        .map_or(0, |s| s.keepalive);
                    if reusable && u.ops == 0 && !u.connecting && !u.dead {
                        // The socket goes to the pool; its buffers serve the next exchange.
                        let Up {
                            fd,
                            key,
                            rbuf,
                            sbuf,
                            ..
                        } = u;
                        self.pool.put(key, fd, keep, now);
                        self.up_bufs.give(rbuf, sbuf);
                    } else {
                        retire(&mut self.sq, &mut c.ops, &mut c.gw, u, idx, gen);
                    }
                }
                c.session.gw_release(&mut self.svc, now);
                continue;
            }
            // A (new) server to connect to, unless this attempt has its socket already.
            let attempt = x.attempt;
            let have = c.gw.up.as_ref().is_some_and(|u| u.attempt == attempt);
            if let (Some(key), false) = (x.connect_to(), have) {
                let fresh = x.fresh_only;
                let always_peek = !x.start.idempotent;
                if let Some(old) = c.gw.up.take() {
                    retire(&mut self.sq, &mut c.ops, &mut c.gw, old, idx, gen);
                }
                let target = self
                    .svc
                    .upstreams()
                    .spec(key.0)
                    .and_then(|s| Some((s.servers.get(key.1)?.addr.clone(), s.idle_timeout)));
                let Some((addr, idle)) = target else {
                    c.session.gw_error(&mut self.svc, Failure::Connect, now);
                    continue;
                };
                c.gw.serial = c.gw.serial.wrapping_add(1);
                let serial = c.gw.serial;
                let pooled = if fresh {
                    None
                } else {
                    self.pool.take(key, idle, now, always_peek)
                };
                let up = match pooled {
                    Some(fd) => {
                        if let Some(x) = c.session.gateway() {
                            x.connected(now, true);
                        }
                        Up::new(fd, key, attempt, serial, false, self.up_bufs.take())
                    }
                    None => match connect(&addr) {
                        Ok((fd, false)) => {
                            if let Some(x) = c.session.gateway() {
                                x.connected(now, false);
                            }
                            Up::new(fd, key, attempt, serial, false, self.up_bufs.take())
                        }
                        Ok((fd, true)) => {
                            let mut u =
                                Up::new(fd, key, attempt, serial, true, self.up_bufs.take());
                            let entry = opcode::PollAdd::new(
                                types::Fd(u.fd.as_raw_fd()),
                                libc::POLLOUT as u32,
                            )
                            .build();
                            // SAFETY: no buffer; the socket is owned by the Up, which the
                            // connection keeps (current or retired) until this op completes.
                            unsafe { self.sq.push(entry, token(idx, gen, UpOp::Connect, serial)) };
                            u.ops += 1;
                            c.ops += 1;
                            u
                        }
                        Err(_) => {
                            c.session.gw_error(&mut self.svc, Failure::Connect, now);
                            continue;
                        }
                    },
                };
                c.gw.up = Some(up);
                continue;
            }
            let Some(u) = c.gw.up.as_mut() else {
                return;
            };
            if u.connecting {
                return;
            }
            // Send what is left of the request.
            if !u.sending {
                let pending = c.session.gateway().map_or(&[][..], |x| x.to_send());
                if !pending.is_empty() {
                    u.sbuf.clear();
                    u.sbuf.extend_from_slice(pending);
                    let len = u.sbuf.len().min(u32::MAX as usize) as u32;
                    let entry =
                        opcode::Send::new(types::Fd(u.fd.as_raw_fd()), u.sbuf.as_ptr(), len)
                            .flags(libc::MSG_NOSIGNAL)
                            .build();
                    // SAFETY: `sbuf` belongs to the Up and is not touched while `sending`,
                    // which stays set until this op's completion; the Up (and so `sbuf` and
                    // the socket) lives in the connection, current or retired, until its
                    // last op has completed.
                    unsafe { self.sq.push(entry, token(idx, gen, UpOp::Send, u.serial)) };
                    u.sending = true;
                    u.ops += 1;
                    c.ops += 1;
                }
            }
            // Client bytes spliced into the upstream-bound pipe follow what `to_send` held.
            let next = c.session.gateway().is_some_and(|x| x.pipe_up_next());
            if let (false, true, Some(pipe)) = (u.sending, next && c.up_in_pipe > 0, &c.up_pipe) {
                // Direct, as the response's splice below.
                match crate::sys::splice(pipe.r(), u.fd.as_raw_fd(), c.up_in_pipe) {
                    Ok(k) if k > 0 => {
                        let k = k.min(c.up_in_pipe);
                        c.up_in_pipe -= k;
                        c.up_eagain = false;
                        c.session.gw_spliced_up(k, now);
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        poll_up(&mut self.sq, &mut c.ops, u, idx, gen, UpOp::PollOut);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    _ => {
                        c.session.gw_error(&mut self.svc, Failure::Connect, now);
                        continue;
                    }
                }
            }
            // A tunnel whose client closed its side: pass the half-close on.
            if let Some(x) = c.session.gateway().filter(|x| x.tunnel_shutdown_due()) {
                if !u.sending {
                    x.tunnel_shut();
                    let _ = SockRef::from(&u.fd).shutdown(std::net::Shutdown::Write);
                }
            }
            // Splice the body on while the pipe has room (the client drains it).
            if let (false, Some(want)) = (u.recving, c.session.gw_splice_want()) {
                if c.pipe.is_none() {
                    c.pipe = self.pipes.take();
                    if c.pipe.is_none() {
                        // None free: this body is copied instead.
                        c.session.gw_no_splice();
                        continue;
                    }
                }
                let pipe = c.pipe.as_ref().expect("just ensured");
                let room = pipe.cap().saturating_sub(c.in_pipe);
                if room == 0 {
                    c.session.gw_pipe_full();
                    return; // the client's drain drives us again
                }
                // A direct non-blocking splice(2) (the socket is O_NONBLOCK): as an io_uring
                // op the kernel would run it in an io-wq thread, which cost twice the
                // worker's own CPU in proxy-large.
                let n = (room as u64).min(want) as usize;
                match crate::sys::splice(u.fd.as_raw_fd(), pipe.w(), n) {
                    Ok(0) => c.session.gw_eof(&mut self.svc, now),
                    Ok(k) => {
                        c.in_pipe += k;
                        c.session.gw_spliced(&mut self.svc, k, now);
                    }
                    Err(e) => match e.raw_os_error() {
                        // Nothing to read, or (with data in the pipe) the pipe is out of
                        // slots, which the client's drain frees and then drives us again.
                        Some(libc::EAGAIN) => {
                            match splice_eagain(u.fd.as_fd(), c.in_pipe) {
                                SpliceEagain::SocketDry => {
                                    poll_up(&mut self.sq, &mut c.ops, u, idx, gen, UpOp::PollIn)
                                }
                                SpliceEagain::PipeFull => c.session.gw_pipe_full(),
                                SpliceEagain::Drain => {}
                            }
                            return;
                        }
                        Some(libc::EINTR) => {}
                        _ => c.session.gw_error(&mut self.svc, Failure::Cut, now),
                    },
                }
                continue;
            }
            // Read the response while the client keeps up.
            if !u.recving && c.session.gw_wants_read() {
                let len = u.rbuf.len() as u32;
                let entry =
                    opcode::Recv::new(types::Fd(u.fd.as_raw_fd()), u.rbuf.as_mut_ptr(), len)
                        .build();
                // SAFETY: `rbuf` is read only after this op's completion (`recving` stays set
                // until then); the Up owning it and the socket lives in the connection,
                // current or retired, until its last op has completed.
                unsafe { self.sq.push(entry, token(idx, gen, UpOp::Recv, u.serial)) };
                u.recving = true;
                u.ops += 1;
                c.ops += 1;
            }
            return;
        }
        // Steps left over: come back at the end of this pass.
        self.ready.push((idx, gen));
    }

    /// A completion of an upstream op (`serial`: which of the connection's upstreams).
    pub(super) fn on_up_op(&mut self, tok: Token, op: UpOp, serial: u32, res: i32) {
        let (idx, gen) = (tok.conn, tok.conn_gen);
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return; // cannot happen: a connection outlives its ops
        };
        c.ops -= 1;
        let current = c.gw.up.as_ref().is_some_and(|u| u.serial == serial);
        if !current {
            // A retired socket: forget the op; close the socket after its last one.
            if let Some(pos) = c.gw.retired.iter().position(|u| u.serial == serial) {
                c.gw.retired[pos].ops -= 1;
                if c.gw.retired[pos].ops == 0 {
                    c.gw.retired.swap_remove(pos);
                }
            }
            self.drive(idx, gen);
            return;
        }
        let open = c.phase == Phase::Open;
        let u = c.gw.up.as_mut().expect("current");
        u.ops -= 1;
        let session = &mut c.session;
        let svc = &mut self.svc;
        let mut poll = None;
        match op {
            UpOp::Connect => {
                u.connecting = false;
                let err = res < 0
                    || !matches!(SockRef::from(&u.fd).take_error(), Ok(None))
                    || SockRef::from(&u.fd).peer_addr().is_err();
                if err {
                    u.dead = true;
                    if open {
                        session.gw_error(svc, Failure::Connect, now);
                    }
                } else if let Some(x) = session.gateway() {
                    x.connected(now, false);
                }
            }
            UpOp::Send => {
                u.sending = false;
                if res >= 0 {
                    if let Some(x) = session.gateway() {
                        x.sent(res as usize, now);
                    }
                } else if res == -libc::EAGAIN {
                    poll = Some(UpOp::PollOut);
                } else if res != -libc::ECANCELED && res != -libc::EINTR && open {
                    session.gw_error(svc, Failure::Connect, now);
                }
            }
            UpOp::Recv => {
                u.recving = false;
                if res > 0 {
                    if open {
                        session.gw_feed(svc, &u.rbuf[..res as usize], now);
                    }
                } else if res == 0 {
                    if open {
                        session.gw_eof(svc, now);
                    }
                } else if res == -libc::EAGAIN {
                    poll = Some(UpOp::PollIn);
                } else if res != -libc::ECANCELED && res != -libc::EINTR && open {
                    let f = if session.gateway().is_some_and(|x| x.responded) {
                        Failure::Cut
                    } else {
                        Failure::Connect
                    };
                    session.gw_error(svc, f, now);
                }
            }
            // Ready (or failed, which the retried op then reports): drive() retries.
            UpOp::PollIn => u.recving = false,
            UpOp::PollOut => u.sending = false,
            UpOp::Cancel => {}
        }
        if let (Some(op), true) = (poll, open) {
            poll_up(&mut self.sq, &mut c.ops, u, idx, gen, op);
        }
        self.drive(idx, gen);
    }

    /// The connection is closing: release the exchange in flight (if any) and retire its
    /// upstream socket, cancelling whatever is in flight on it.
    pub(super) fn gw_close(&mut self, idx: u32, gen: u32) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(idx, gen) else {
            return;
        };
        c.session.gw_abandon(&mut self.svc, now);
        if let Some(u) = c.gw.up.take() {
            retire(&mut self.sq, &mut c.ops, &mut c.gw, u, idx, gen);
        }
    }
}

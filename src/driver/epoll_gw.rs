//! The epoll driver's side of the gateway seam: one upstream socket per proxied request,
//! connected non-blocking (or taken from the worker's pool), registered with the worker's
//! `Poll` under the client connection's token with [`UP_BIT`] set, and driven edge-triggered
//! like client sockets (readiness remembered until `EAGAIN`). A pooled socket stays
//! registered while it idles, and its next exchange re-points it (one EPOLL_CTL_MOD, not a
//! DEL and an ADD per request).
//!
//! A body the session lets go by splice (`Session::gw_splice_want`) moves upstream socket →
//! the connection's pipe ([`Spl`], lent from the worker's pool) with splice(2); the client's
//! side sends the pipe's bytes on as `Output::Pipe`. The pipe's capacity bounds what is read
//! ahead of the client.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::pool::Pool;
use super::uring::pipes::{Pipe, PipePool};
use super::SpliceEagain;
use crate::config::upstreams::Addr;
use crate::gateway::proxy::Failure;
use crate::session::{Service, Session};

/// Set in the token of a connection's upstream socket (the client's is the plain index).
pub const UP_BIT: usize = 1 << (usize::BITS - 2);

/// An upstream socket: TCP or a unix-domain socket.
pub enum UpSock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl UpSock {
    fn connect(addr: &Addr) -> io::Result<UpSock> {
        Ok(match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                let _ = s.set_nodelay(true);
                UpSock::Tcp(s)
            }
            Addr::Unix(p) => UpSock::Unix(UnixStream::connect(p)?),
        })
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            UpSock::Tcp(s) => (&*s).read(buf),
            UpSock::Unix(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            UpSock::Tcp(s) => (&*s).write(buf),
            UpSock::Unix(s) => (&*s).write(buf),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            UpSock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            UpSock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// After a writable edge on a connecting socket: connected, or the connect error.
    fn connect_result(&self) -> io::Result<bool> {
        let (err, peer) = match self {
            UpSock::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            UpSock::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = err {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for UpSock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            UpSock::Tcp(s) => s.as_fd(),
            UpSock::Unix(s) => s.as_fd(),
        }
    }
}

impl Source for UpSock {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            UpSock::Tcp(s) => s.register(r, t, i),
            UpSock::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            UpSock::Tcp(s) => s.reregister(r, t, i),
            UpSock::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            UpSock::Tcp(s) => s.deregister(r),
            UpSock::Unix(s) => s.deregister(r),
        }
    }
}

/// A connection's upstream socket and its remembered readiness.
pub struct Up {
    sock: UpSock,
    key: (usize, usize),
    /// The exchange's attempt this socket serves.
    attempt: u32,
    pub readable: bool,
    pub writable: bool,
    connecting: bool,
}

/// A connection's splice pipe, while a proxied body passes through it.
#[derive(Default)]
pub struct Spl {
    pub pipe: Option<Pipe>,
    /// Bytes spliced into `pipe` and not yet out to the client (the session's pipe piece).
    pub in_pipe: usize,
}

impl Spl {
    /// Returns the pipe to the pool once it is empty (taken again for the next splice).
    pub fn release_empty(&mut self, pipes: &mut PipePool) {
        if self.in_pipe == 0 {
            if let Some(p) = self.pipe.take() {
                pipes.put(p, true);
            }
        }
    }

    /// The connection is closing: a pipe that still holds data is closed, not pooled.
    pub fn release(&mut self, pipes: &mut PipePool) {
        if let Some(p) = self.pipe.take() {
            pipes.put(p, self.in_pipe == 0);
        }
        self.in_pipe = 0;
    }
}

/// What driving an upstream needs from the worker.
pub struct Gate<'a> {
    pub registry: &'a Registry,
    pub pool: &'a mut Pool<UpSock>,
    pub pipes: &'a mut PipePool,
    /// The client connection's token (its upstream registers with `UP_BIT` added).
    pub token: usize,
}

/// Drives the proxied request of `session`, if any: connect, send, read, finish. Returns
/// whether anything happened (output for the client may be queued). Spends `budget`.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    up: &mut Option<Up>,
    (sp, sp_up): (&mut Spl, &mut Spl),
    session: &mut Session,
    svc: &mut Service,
    gate: &mut Gate<'_>,
    buf: &mut [u8],
    now: Instant,
    budget: &mut usize,
) -> bool {
    let mut progress = false;
    loop {
        let Some(x) = session.gateway() else {
            return progress;
        };
        if x.cgi.is_some() || x.is_app() {
            // A CGI script or a WSGI app, not an upstream: `cgi_proc` or `app` drives it (and
            // puts it down when it is finished: a call released here would never be
            // cancelled, and its app thread would block once it had queued FLOW_BYTES).
            return progress;
        }
        // Finished: pool or close the socket, then let the session go on.
        if let Some(reusable) = x.finished() {
            if let Some(mut u) = up.take() {
                let keep = svc.upstreams().spec(u.key.0).map_or(0, |s| s.keepalive);
                if reusable && !u.connecting {
                    // Pooled still registered (no epoll_ctl per request: the next exchange
                    // re-points it with one MOD); an event while it idles reaches its old
                    // token as a spurious readiness, which costs one EAGAIN at most.
                    gate.pool.put(u.key, u.sock, keep, now);
                } else {
                    let _ = gate.registry.deregister(&mut u.sock);
                }
            }
            session.gw_release(svc, now);
            return true;
        }
        // A (new) server to connect to, unless this attempt has its socket already.
        let attempt = x.attempt;
        let have = up.as_ref().is_some_and(|u| u.attempt == attempt);
        if let (Some(key), false) = (x.connect_to(), have) {
            if let Some(mut old) = up.take() {
                let _ = gate.registry.deregister(&mut old.sock);
            }
            let Some(spec) = svc.upstreams().spec(key.0) else {
                session.gw_error(svc, Failure::Connect, now);
                continue;
            };
            let fresh = x.fresh_only;
            let always_peek = !x.start.idempotent;
            let pooled = if fresh {
                None
            } else {
                gate.pool.take(key, spec.idle_timeout, now, always_peek)
            };
            let (sock, connecting) = match pooled {
                // Registered since its first exchange (see above).
                Some(s) => (s, false),
                None => {
                    let addr = spec.servers[key.1].addr.clone();
                    match UpSock::connect(&addr) {
                        Ok(s) => (s, true),
                        Err(_) => {
                            session.gw_error(svc, Failure::Connect, now);
                            progress = true;
                            continue;
                        }
                    }
                }
            };
            let mut u = Up {
                sock,
                key,
                attempt,
                readable: false,
                writable: false,
                connecting,
            };
            let (token, interest) = (
                Token(gate.token | UP_BIT),
                Interest::READABLE | Interest::WRITABLE,
            );
            let registered = if connecting {
                gate.registry.register(&mut u.sock, token, interest)
            } else {
                gate.registry.reregister(&mut u.sock, token, interest)
            };
            if registered.is_err() {
                session.gw_error(svc, Failure::Connect, now);
                continue;
            }
            if !connecting {
                // A pooled socket is writable at once; its registration reports that too.
                u.writable = true;
                if let Some(x) = session.gateway() {
                    x.connected(now, true);
                }
            }
            *up = Some(u);
            progress = true;
            continue;
        }
        let Some(u) = up.as_mut() else {
            return progress;
        };
        if u.connecting {
            if !u.writable {
                return progress;
            }
            match u.sock.connect_result() {
                Ok(true) => {
                    u.connecting = false;
                    if let Some(x) = session.gateway() {
                        x.connected(now, false);
                    }
                    progress = true;
                }
                Ok(false) => {
                    u.writable = false;
                    return progress;
                }
                Err(_) => {
                    session.gw_error(svc, Failure::Connect, now);
                    progress = true;
                    continue;
                }
            }
        }
        if *budget == 0 {
            return progress;
        }
        // Send what is left of the request.
        let pending = session.gateway().map_or(0, |x| x.to_send().len());
        if pending > 0 && u.writable {
            *budget -= 1;
            let res = {
                let x = session.gateway().expect("checked above");
                u.sock.write(x.to_send())
            };
            match res {
                Ok(n) => {
                    if n < pending {
                        u.writable = false;
                    }
                    if let Some(x) = session.gateway() {
                        x.sent(n, now);
                    }
                    progress = true;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    session.gw_error(svc, Failure::Connect, now);
                    progress = true;
                    continue;
                }
            }
        }
        // Client bytes spliced into the upstream-bound pipe follow what `to_send` held.
        let next = session.gateway().is_some_and(|x| x.pipe_up_next());
        if let (true, true, Some(pipe)) = (sp_up.in_pipe > 0 && next, u.writable, &sp_up.pipe) {
            *budget -= 1;
            match crate::sys::splice(pipe.r(), u.sock.as_fd().as_raw_fd(), sp_up.in_pipe) {
                Ok(k) => {
                    sp_up.in_pipe -= k;
                    session.gw_spliced_up(k, now);
                    progress = true;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    session.gw_error(svc, Failure::Connect, now);
                    progress = true;
                    continue;
                }
            }
        }
        // A tunnel whose client closed its side: pass the half-close on.
        if let Some(x) = session.gateway().filter(|x| x.tunnel_shutdown_due()) {
            x.tunnel_shut();
            let _ = u.sock.shutdown_write();
        }
        // Splice the body on while the pipe has room (the client drains it).
        if let (true, Some(want)) = (u.readable, session.gw_splice_want()) {
            if sp.pipe.is_none() {
                sp.pipe = gate.pipes.take();
                if sp.pipe.is_none() {
                    // None free: this body is copied instead.
                    session.gw_no_splice();
                    continue;
                }
            }
            let pipe = sp.pipe.as_ref().expect("just ensured");
            let room = pipe.cap().saturating_sub(sp.in_pipe);
            if room == 0 {
                session.gw_pipe_full();
                return progress;
            }
            *budget -= 1;
            let n = (room as u64).min(want) as usize;
            match crate::sys::splice(u.sock.as_fd().as_raw_fd(), pipe.w(), n) {
                Ok(0) => {
                    u.readable = false;
                    session.gw_eof(svc, now);
                }
                Ok(k) => {
                    sp.in_pipe += k;
                    session.gw_spliced(svc, k, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // With data in the pipe, `readable` stays set: the pipe may be what is
                    // full, and the client's drain brings us back.
                    match super::splice_eagain(u.sock.as_fd(), sp.in_pipe) {
                        SpliceEagain::SocketDry => u.readable = false,
                        SpliceEagain::PipeFull => session.gw_pipe_full(),
                        SpliceEagain::Drain => {}
                    }
                    return progress;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => session.gw_error(svc, Failure::Cut, now),
            }
            return true;
        }
        // Read the response while the client keeps up.
        if u.readable && session.gw_wants_read() {
            *budget -= 1;
            match u.sock.read(buf) {
                Ok(0) => {
                    u.readable = false;
                    session.gw_eof(svc, now);
                }
                // A short read does not clear `readable` here: an upstream's last bytes often
                // come with its FIN, whose edge is then spent, and a close-delimited body ends
                // only at the read that returns 0.
                Ok(n) => session.gw_feed(svc, &buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.readable = false;
                    return progress;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let f = if session.gateway().is_some_and(|x| x.responded) {
                        Failure::Cut
                    } else {
                        Failure::Connect
                    };
                    session.gw_error(svc, f, now);
                }
            }
            return true;
        }
        return progress;
    }
}

//! The tokio-uring driver's side of the gateway seam. The connection task drives its proxied
//! request itself, one step per turn of its loop (after the client's output is drained):
//! release a finished exchange (pooling its socket when reusable), connect for a new attempt
//! (a pooled socket from the worker's [`Pool`], or tokio-uring's `connect`), write what is
//! left of the request, or read one buffer of the response while `gw_wants_read()`. Each wait
//! runs under the session's deadline; when it passes, `Session::expire` turns an upstream
//! timeout into a 504 and the connection lives on.
//!
//! tokio-uring's ops own their buffers and keep the fd alive until their completion even when
//! the waiting future is dropped (a timeout). A socket with such an abandoned op is never
//! pooled: it is shut down, which completes the op, and then closed.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use io_uring_06::{opcode, types};

use tokio_uring::net::{TcpStream, UnixStream};

use super::{with_deadline, Conn, Worker};
use crate::config::upstreams::Addr;
use crate::gateway::proxy::Failure;

/// Size of the buffer each upstream read fills.
const UP_READ_SIZE: usize = 16 * 1024;

/// An upstream socket: TCP or a unix-domain socket.
pub enum UpStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl UpStream {
    async fn connect(addr: &Addr) -> io::Result<UpStream> {
        Ok(match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect(*a).await?;
                let _ = s.set_nodelay(true);
                UpStream::Tcp(s)
            }
            Addr::Unix(p) => UpStream::Unix(UnixStream::connect(p).await?),
        })
    }

    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            UpStream::Tcp(s) => s.read(buf).await,
            UpStream::Unix(s) => s.read(buf).await,
        }
    }

    async fn write(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            UpStream::Tcp(s) => s.write(buf).submit().await,
            UpStream::Unix(s) => s.write(buf).submit().await,
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            UpStream::Tcp(s) => s.shutdown(Shutdown::Write),
            UpStream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn shutdown(&self) {
        let _ = match self {
            UpStream::Tcp(s) => s.shutdown(Shutdown::Both),
            UpStream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl AsFd for UpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        let fd = match self {
            UpStream::Tcp(s) => s.as_raw_fd(),
            UpStream::Unix(s) => s.as_raw_fd(),
        };
        // SAFETY: the fd belongs to the stream and stays open at least as long as the stream,
        // which the returned borrow cannot outlive.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

/// The connection's upstream socket for the current attempt.
pub struct Up {
    stream: UpStream,
    key: (usize, usize),
    attempt: u32,
    /// No op was abandoned in flight on it (only such a socket may be pooled).
    clean: bool,
    rbuf: Vec<u8>,
    /// A tunnel's two readiness waits (client, upstream), kept across turns so that neither
    /// is ever submitted twice; each is made anew only after its socket was read.
    polls: Option<(Option<Ready>, Option<Ready>)>,
}

/// A pending POLLIN on a socket: true when it became readable (or broke).
type Ready = Pin<Box<dyn Future<Output = bool>>>;

/// Waits for `fd` to be readable. The op holds `keep` until it completes.
fn readable(keep: Rc<Conn>, fd: RawFd) -> Ready {
    let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u16 as u32).build();
    // SAFETY: a poll names no memory, only the fd. The client fd belongs to `keep`, which the
    // op holds until completion; an upstream fd belongs to the `Up`, which is shut down
    // (completing the poll) before it closes, and a poll that still outlived it could only
    // report a spurious readiness that nothing reads (the future is gone with the `Up`).
    let op = unsafe { super::submit(keep, sqe) };
    Box::pin(async move { op.await.0.is_ok() })
}

impl Up {
    /// An exchange's socket, reading into a buffer lent from the worker (`up_read_bufs`).
    fn new(w: &Worker, stream: UpStream, key: (usize, usize), attempt: u32) -> Up {
        let mut rbuf = w.up_read_bufs.take();
        rbuf.reserve(UP_READ_SIZE);
        Up {
            stream,
            key,
            attempt,
            clean: true,
            rbuf,
            polls: None,
        }
    }

    /// Closes the socket; an op abandoned on it is completed first by the shutdown.
    pub fn close(self) {
        if !self.clean || self.polls.is_some() {
            self.stream.shutdown();
        }
    }
}

/// What one step did.
pub enum Step {
    /// Something happened: go round the connection loop again (output may be queued).
    Again,
    /// Nothing to do for the upstream now.
    Idle,
    /// A deadline that is not the upstream's passed: close the connection.
    Close,
}

/// A wait ran past the session's deadline.
fn expire(w: &Worker, conn: &Conn) -> Step {
    let mut svc = w.svc.borrow_mut();
    if conn.session.borrow_mut().expire(&mut svc, Instant::now()) {
        Step::Close
    } else {
        Step::Again
    }
}

fn fail(w: &Worker, conn: &Conn, f: Failure) {
    let mut svc = w.svc.borrow_mut();
    conn.session
        .borrow_mut()
        .gw_error(&mut svc, f, Instant::now());
}

/// One step of the connection's proxied request, if it has one.
pub async fn step(w: &Worker, conn: &Rc<Conn>, up: &mut Option<Up>) -> Step {
    let now = Instant::now();
    let (finished, connect, attempt, fresh, always_peek, pending, deadline, tunnel) = {
        let mut s = conn.session.borrow_mut();
        let deadline = s.deadline();
        let Some(x) = s.gateway() else {
            if let Some(u) = up.take() {
                u.close();
            }
            return Step::Idle;
        };
        let pending = (!x.to_send().is_empty()).then(|| x.to_send().to_vec());
        (
            x.finished(),
            x.connect_to(),
            x.attempt,
            x.fresh_only,
            !x.start.idempotent,
            pending,
            deadline,
            x.duplex(),
        )
    };
    // Finished: pool or close the socket, then let the session go on.
    if let Some(reusable) = finished {
        if let Some(mut u) = up.take() {
            w.up_read_bufs.put(std::mem::take(&mut u.rbuf));
            let keep = w
                .svc
                .borrow()
                .upstreams()
                .spec(u.key.0)
                .map_or(0, |s| s.keepalive);
            if reusable && u.clean {
                w.pool.borrow_mut().put(u.key, u.stream, keep, now);
            } else {
                u.close();
            }
        }
        let mut svc = w.svc.borrow_mut();
        conn.session.borrow_mut().gw_release(&mut svc, now);
        return Step::Again;
    }
    // A (new) server to connect to, unless this attempt has its socket already.
    let have = up.as_ref().is_some_and(|u| u.attempt == attempt);
    if let (Some(key), false) = (connect, have) {
        if let Some(old) = up.take() {
            old.close();
        }
        let target = w
            .svc
            .borrow()
            .upstreams()
            .spec(key.0)
            .and_then(|s| Some((s.servers.get(key.1)?.addr.clone(), s.idle_timeout)));
        let Some((addr, idle)) = target else {
            fail(w, conn, Failure::Connect);
            return Step::Again;
        };
        let pooled = if fresh {
            None
        } else {
            w.pool.borrow_mut().take(key, idle, now, always_peek)
        };
        if let Some(s) = pooled {
            if let Some(x) = conn.session.borrow_mut().gateway() {
                x.connected(now, true);
            }
            *up = Some(Up::new(w, s, key, attempt));
            return Step::Again;
        }
        return match with_deadline(deadline, UpStream::connect(&addr)).await {
            Some(Ok(s)) => {
                if let Some(x) = conn.session.borrow_mut().gateway() {
                    x.connected(Instant::now(), false);
                }
                *up = Some(Up::new(w, s, key, attempt));
                Step::Again
            }
            Some(Err(_)) => {
                fail(w, conn, Failure::Connect);
                Step::Again
            }
            None => expire(w, conn),
        };
    }
    let Some(u) = up.as_mut() else {
        return Step::Idle;
    };
    // Write what is left of the request.
    if let Some(buf) = pending {
        return match with_deadline(deadline, u.stream.write(buf)).await {
            Some((Ok(n), _)) => {
                if let Some(x) = conn.session.borrow_mut().gateway() {
                    x.sent(n, Instant::now());
                }
                Step::Again
            }
            Some((Err(e), _)) if e.raw_os_error() == Some(libc::EINTR) => Step::Again,
            Some((Err(_), _)) => {
                fail(w, conn, Failure::Connect);
                Step::Again
            }
            None => {
                u.clean = false;
                expire(w, conn)
            }
        };
    }
    // A tunnel whose client closed its side: pass the half-close on.
    if tunnel {
        if let Some(x) = conn
            .session
            .borrow_mut()
            .gateway()
            .filter(|x| x.tunnel_shutdown_due())
        {
            x.tunnel_shut();
            u.stream.shutdown_write();
        }
    }
    // A tunnel, or a request body still streaming in: wait until the client or the upstream
    // has bytes; the connection loop reads the client, this step the upstream.
    if tunnel && conn.session.borrow().wants_read() && conn.session.borrow().gw_wants_read() {
        let cfd = conn.stream.as_raw_fd();
        let ufd = u.stream.as_fd().as_raw_fd();
        let (c, p) = u.polls.get_or_insert((None, None));
        let c = c.get_or_insert_with(|| readable(conn.clone(), cfd));
        let p = p.get_or_insert_with(|| readable(conn.clone(), ufd));
        let r = with_deadline(deadline, super::race(c.as_mut(), p.as_mut())).await;
        let (c, p) = u.polls.as_mut().expect("set above");
        match r {
            None => return expire(w, conn),
            Some(super::Either::Left(_)) => {
                *c = None;
                return Step::Idle;
            }
            Some(super::Either::Right(_)) => *p = None,
        }
    }
    // Read the response while the client keeps up.
    if !conn.session.borrow().gw_wants_read() {
        return Step::Idle;
    }
    let mut buf = std::mem::take(&mut u.rbuf);
    buf.clear();
    let res = match with_deadline(deadline, u.stream.read(buf)).await {
        Some((res, buf)) => {
            u.rbuf = buf;
            res
        }
        None => {
            // The buffer stays with the abandoned read.
            u.clean = false;
            return expire(w, conn);
        }
    };
    let now = Instant::now();
    let mut svc = w.svc.borrow_mut();
    let mut session = conn.session.borrow_mut();
    match res {
        Ok(0) => session.gw_eof(&mut svc, now),
        Ok(n) => session.gw_feed(&mut svc, &u.rbuf[..n], now),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
        Err(_) => {
            let f = if session.gateway().is_some_and(|x| x.responded) {
                Failure::Cut
            } else {
                Failure::Connect
            };
            session.gw_error(&mut svc, f, now);
        }
    }
    Step::Again
}

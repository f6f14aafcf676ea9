//! The tokio-uring driver: one tokio-uring runtime per pinned worker, a task per connection.
//!
//! This is a comparison driver: it runs the same [`Session`] code as the uring and epoll drivers
//! through tokio-uring 0.5, to measure what a general-purpose io_uring runtime costs against our
//! own completion loop. tokio-uring has no splice, multishot or provided buffers, and runs its
//! ring under tokio's epoll loop; what it lacks we submit through its public custom-op entry
//! point, [`UnsubmittedOneshot`], with an io-uring 0.6 SQE.
//!
//! # Shape
//! - `run` builds one tokio-uring runtime on the (already pinned) worker thread and blocks on
//!   the accept loop. `Service` is per worker, shared by the connection tasks as
//!   `Rc<RefCell<Service>>` inside [`Worker`]: single thread, no locks, and never borrowed across
//!   an `.await`.
//! - One spawned task per connection owns its [`Conn`] (socket + `Session`). It alternates:
//!   drain the session's output, then read (owned-buffer `read`) and `feed`. Reading waits while
//!   output is pending, which is what HTTP/1.1 ordering needs anyway.
//! - `Output::Bytes` is copied into an owned `Vec` lent from the worker's [`WriteBufs`] for the
//!   one write, and sent with tokio-uring's `write` (owned buffer; a partial write is consumed
//!   and the rest copied and sent again). The copy is the price of tokio-uring's owned-buffer
//!   API: the session's memory cannot be handed to it without tying the session's lifetime to
//!   the op.
//! - `Output::File` goes file → pipe → socket with two `IORING_OP_SPLICE` custom ops, through a
//!   bounded per-worker [`PipePool`] (`config.pipe_pool` pipes of `config.pipe_size`). A pipe is
//!   filled only when empty, drained to the socket, and only returned to the pool empty.
//! - Sockets are made non-blocking so that a splice to a stalled reader can never pin an io-wq
//!   worker thread in a blocking send. (On 6.18 the kernel mostly arms its internal poll and
//!   retries by itself: a slow-reader test saw a handful of `EAGAIN`s and idle io-wq workers.)
//!   Any `EAGAIN` that does come back waits for readiness with a custom `IORING_OP_POLL_ADD`
//!   and retries. Reads and writes on these sockets are still poll-armed by the kernel, so
//!   tokio-uring's own ops work unchanged.
//!
//! # Keeping kernel memory alive
//! tokio-uring's own ops hold their buffer and a reference to the fd until the completion,
//! even when the awaiting future is dropped. Our custom ops do the same by handing the runtime
//! an `Rc<Conn>` (which owns the socket and the `Session`, hence the file fd of the body being
//! sent) plus the pipe, as the op's stored data: the runtime keeps that data until the CQE
//! arrives (or cancels and waits for it when the runtime is dropped).
//!
//! # Timeouts and shutdown
//! Every await that can stall (read, write, readiness poll, waiting for a pipe) runs under
//! `tokio::time::timeout_at(session.deadline())`; the splices themselves cannot stall (the
//! socket is non-blocking, the pipe is empty before a fill). A timed-out or abandoned op is
//! left to finish in the background: the task then shuts the socket down, which completes any
//! pending op on it, so the fd is closed once its last op is done. Shutdown is an eventfd
//! watched by a `POLL_ADD` (never read, so every worker sees it); it sets a flag and wakes the
//! connection tasks (`Notify`), which call `start_shutdown` and close when the session says so.
//! The worker returns when the last connection task is done or `timeouts.shutdown` passed;
//! dropping the runtime then cancels whatever is left.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use io_uring_06::{cqueue, opcode, squeue, types};
use tokio::sync::Notify;
use tokio_uring::net::{TcpListener, TcpStream};
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

mod bufs;
mod gw;

use super::pool::Pool;
use super::{AccessLog, DriverError, WorkerCtx, TICK};
use crate::config::Config;
use crate::session::{Output, Service, Session};
use bufs::{Pipe, PipePool, WriteBufs};

/// Submission queue entries of each worker's ring (the completion queue gets twice as many).
const RING_ENTRIES: u32 = 1024;
/// Per-connection read buffer (allocated once per connection, reused for every read; an idle
/// keep-alive connection holds it in its pending read, as tokio-uring has no buffer rings).
const READ_BUF_SIZE: usize = 8 * 1024;
/// How long accepting pauses after EMFILE/ENFILE (or another resource error) on accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest lingering close (waiting for the peer's EOF after our FIN).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering before the socket is simply closed.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Runs one worker: returns after shutdown once every connection is closed or the shutdown
/// timeout has passed.
pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let mut builder = tokio_uring::builder();
    builder.entries(RING_ENTRIES);
    // Completions must not interrupt the worker with an IPI while it runs user code (10% of
    // its CPU under proxy load went to reschedule IPIs): with COOP_TASKRUN the kernel runs
    // their task work at the worker's next syscall, which the runtime makes every turn
    // (epoll_wait). A sleeping worker is still woken. A kernel without them (before 5.19/6.0)
    // gets the plain ring.
    let mut urb = io_uring_06::IoUring::builder();
    urb.setup_coop_taskrun().setup_single_issuer();
    builder.uring_builder(&urb);
    let rt = match tokio_uring::Runtime::new(&builder) {
        Ok(rt) => rt,
        Err(_) => {
            builder.uring_builder(&io_uring_06::IoUring::builder());
            tokio_uring::Runtime::new(&builder).map_err(DriverError::UringSetup)?
        }
    };
    rt.block_on(serve(ctx))
}

/// Per-worker state shared by the accept loop, the ticker and the connection tasks.
struct Worker {
    id: usize,
    config: Config,
    svc: RefCell<Service>,
    access_log: RefCell<AccessLog>,
    shutting_down: Cell<bool>,
    /// Woken (notify_waiters) when shutdown begins.
    shutdown: Notify,
    /// Connection tasks alive.
    live: Cell<usize>,
    /// A connection task ended (connection limit backpressure, shutdown drain).
    conn_done: Notify,
    pipes: PipePool,
    write_bufs: WriteBufs,
    /// Upstream read buffers, lent to each exchange's `Up` and given back when it ends (a
    /// pooled connection's next exchange reads into a kept buffer, not a new 16 KiB one).
    up_read_bufs: WriteBufs,
    /// Reloaded configs from the main thread, and the last generation applied.
    reload: std::sync::Arc<super::Reload>,
    reload_seen: Cell<u64>,
    /// Idle upstream connections, this worker's own.
    pool: RefCell<Pool<gw::UpStream>>,
    /// Woken (notify_waiters) when a collapsed cache fetch ends: waiting sessions look.
    cache_wake: Notify,
}

impl Worker {
    /// Wakes the connection tasks waiting for a cache fetch, if one ended.
    fn wake_collapsed(&self) {
        let mut svc = self.svc.borrow_mut();
        if svc.has_woken() {
            svc.take_woken();
            self.cache_wake.notify_waiters();
        }
    }
}

impl Worker {
    fn flush_access_log(&self) {
        let mut svc = self.svc.borrow_mut();
        self.access_log.borrow_mut().flush(svc.access_log());
    }
}

async fn serve(ctx: WorkerCtx) -> Result<(), DriverError> {
    let WorkerCtx {
        id,
        config,
        listener,
        roots,
        shutdown,
        reload,
    } = ctx;

    let access_log = AccessLog::open(&config)?;
    let mut svc = Service::new(&config, roots);
    svc.set_time(SystemTime::now());
    let pipes = PipePool::new(config.pipe_pool.max(1), config.pipe_size);
    let w = Rc::new(Worker {
        id,
        config,
        svc: RefCell::new(svc),
        access_log: RefCell::new(access_log),
        shutting_down: Cell::new(false),
        shutdown: Notify::new(),
        live: Cell::new(0),
        conn_done: Notify::new(),
        pipes,
        write_bufs: WriteBufs::default(),
        up_read_bufs: WriteBufs::default(),
        reload,
        reload_seen: Cell::new(0),
        pool: RefCell::new(Pool::default()),
        cache_wake: Notify::new(),
    });

    // A blocking listener: io_uring waits for connections by polling it internally.
    listener.set_nonblocking(false)?;
    let listener = Rc::new(TcpListener::from_std(listener));

    let watcher = tokio_uring::spawn(watch_shutdown(w.clone(), Rc::new(shutdown)));
    let ticker = tokio_uring::spawn(tick(w.clone()));

    accept_loop(&w, &listener).await;
    take_backlog(&w, listener.as_raw_fd());

    // Out of the SO_REUSEPORT group now; this also completes an accept still in flight.
    // SAFETY: shutdown(2) on a socket fd we own (the listener is alive in `listener`); it
    // touches no memory.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    drop(listener);

    let deadline = tokio::time::Instant::now() + w.config.timeouts.shutdown;
    while w.live.get() > 0 {
        let done = w.conn_done.notified();
        if w.live.get() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            break;
        }
    }
    watcher.abort();
    ticker.abort();
    w.flush_access_log();
    Ok(())
}

/// Accepts connections until shutdown, pausing at the per-worker connection limit and for a
/// moment after EMFILE/ENFILE.
async fn accept_loop(w: &Rc<Worker>, listener: &Rc<TcpListener>) {
    let max_conns = w.config.limits.max_conns_per_worker.max(1);
    let mut error_logged = false;
    loop {
        let stop = w.shutdown.notified();
        if w.shutting_down.get() {
            return;
        }
        if w.live.get() >= max_conns {
            // Backpressure: connections wait in the kernel's backlog.
            let done = w.conn_done.notified();
            if let Either::Right(()) = race(done, stop).await {
                return;
            }
            continue;
        }
        match race(listener.accept(), stop).await {
            Either::Right(()) => return,
            Either::Left(Ok((stream, peer))) => {
                w.live.set(w.live.get() + 1);
                tokio_uring::spawn(conn_task(w.clone(), stream, peer));
            }
            Either::Left(Err(e)) => {
                if w.shutting_down.get() {
                    return;
                }
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {}
                    _ => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: keep serving, retry shortly.
                        if !error_logged {
                            error_logged = true;
                            eprintln!(
                                "ringd: worker {}: accept failed: {e}; still serving open \
                                 connections, retrying (logged once)",
                                w.id
                            );
                        }
                        let stop = w.shutdown.notified();
                        if let Either::Right(()) =
                            race(tokio::time::sleep(ACCEPT_BACKOFF), stop).await
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Graceful shutdown: connections the kernel completed but nobody accepted yet would be reset
/// when the listener closes, under requests their clients may have sent already. Take them in
/// (up to the connection limit); their tasks see the shutdown at once and answer one request
/// with `Connection: close` (the session's drain grace).
fn take_backlog(w: &Rc<Worker>, listener_fd: RawFd) {
    // SAFETY: `listener_fd` is the open listener, owned by the caller's `TcpListener`, which
    // outlives this borrow; ManuallyDrop keeps this second handle from closing it.
    let l = std::mem::ManuallyDrop::new(unsafe {
        <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(listener_fd)
    });
    // The accept op abandoned by `accept_loop` may still be armed on it: non-blocking, so
    // that it completes rather than waits, and so that this loop ends at an empty queue.
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let max_conns = w.config.limits.max_conns_per_worker.max(1);
    while w.live.get() < max_conns {
        match l.accept() {
            Ok((s, peer)) => {
                w.live.set(w.live.get() + 1);
                tokio_uring::spawn(conn_task(w.clone(), TcpStream::from_std(s), peer));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Waits for the shutdown eventfd to become readable (without reading it: every worker must
/// see it), then starts the graceful shutdown.
async fn watch_shutdown(w: Rc<Worker>, fd: Rc<OwnedFd>) {
    loop {
        let sqe = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLIN as u32).build();
        // SAFETY: the only resource the SQE names is the eventfd, owned by `fd`, which the op
        // keeps alive until its completion.
        let (res, _fd) = unsafe { submit(fd.clone(), sqe) }.await;
        match res {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                eprintln!(
                    "ringd: worker {}: waiting for the shutdown signal failed: {e}; shutting down",
                    w.id
                );
                break;
            }
        }
    }
    w.shutting_down.set(true);
    w.shutdown.notify_waiters();
}

/// Gives the service the wall-clock time and flushes the access log every [`TICK`].
async fn tick(w: Rc<Worker>) {
    let mut trim = super::Trim::default();
    loop {
        tokio::time::sleep(TICK).await;
        w.svc.borrow_mut().set_time(SystemTime::now());
        let mut seen = w.reload_seen.get();
        if w.reload.apply(&mut seen, &mut w.svc.borrow_mut()) {
            // Server numbers may mean other servers now.
            w.pool.borrow_mut().clear();
        }
        w.pool
            .borrow_mut()
            .sweep_upstreams(Instant::now(), w.svc.borrow().upstreams());
        w.reload_seen.set(seen);
        w.flush_access_log();
        let _ = trim.tick(w.live.get());
    }
}

/// A connection: the socket and its session. Shared (`Rc`) between the task and the custom
/// ops in flight, which keep it alive until their completions.
struct Conn {
    stream: TcpStream,
    session: RefCell<Session>,
}

/// What the task owns besides the connection.
struct ConnIo {
    fd: RawFd,
    rbuf: Vec<u8>,
    pipe: Option<Pipe>,
    /// The peer sent EOF.
    eof: bool,
    /// `start_shutdown` has been called.
    shutdown_seen: bool,
    /// The upstream socket of the proxied request in flight (`gw.rs`).
    up: Option<gw::Up>,
}

/// How the connection loop ended.
enum End {
    /// Close now.
    Close,
    /// Send FIN and wait (bounded) for the peer's before closing.
    Linger,
}

/// Decrements the worker's live count however the task ends (finished or dropped).
struct LiveGuard(Rc<Worker>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get() - 1);
        self.0.conn_done.notify_one();
    }
}

async fn conn_task(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _live = LiveGuard(w.clone());
    let fd = stream.as_raw_fd();
    if set_nonblocking(fd).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let conn = Rc::new(Conn {
        stream,
        session: RefCell::new(Session::new(peer, Instant::now())),
    });
    let mut io = ConnIo {
        fd,
        rbuf: Vec::with_capacity(READ_BUF_SIZE),
        pipe: None,
        eof: false,
        shutdown_seen: false,
        up: None,
    };
    if let End::Linger = conn_loop(&w, &conn, &mut io).await {
        linger(&conn, &mut io).await;
    }
    if let Some(pipe) = io.pipe.take() {
        w.pipes.release(pipe);
    }
    // A proxied request still in flight: the client is gone.
    conn.session
        .borrow_mut()
        .gw_abandon(&mut w.svc.borrow_mut(), Instant::now());
    w.wake_collapsed();
    if let Some(up) = io.up.take() {
        up.close();
    }
    // Completes any op still in flight on the socket (a timed-out read, write or poll), so the
    // last reference to the fd goes and it is closed.
    let _ = conn.stream.shutdown(Shutdown::Both);
}

/// Drives one connection until the session is done with it or it fails or times out.
async fn conn_loop(w: &Rc<Worker>, conn: &Rc<Conn>, io: &mut ConnIo) -> End {
    loop {
        if w.shutting_down.get() && !io.shutdown_seen {
            io.shutdown_seen = true;
            conn.session.borrow_mut().start_shutdown(Instant::now());
        }

        w.wake_collapsed();
        if conn.session.borrow().collapsed() {
            let mut svc = w.svc.borrow_mut();
            conn.session
                .borrow_mut()
                .collapse_poll(&mut svc, Instant::now());
        }

        // After the handshake, the record layer moves to the kernel where the listener
        // runs kTLS (no read is in flight between loop passes).
        let sw = conn.session.borrow_mut().take_ktls();
        if let Some(sw) = sw {
            if crate::tls::ktls::enable(io.fd, &sw).is_err() {
                return End::Close;
            }
        }

        // Output first.
        let piece = {
            let mut session = conn.session.borrow_mut();
            match session.next_output() {
                None => None,
                Some(Output::Bytes(b)) => {
                    let mut buf = w.write_bufs.take();
                    buf.extend_from_slice(b);
                    Some(Err(buf))
                }
                Some(Output::File { fd, offset, len }) => Some(Ok((fd, offset, len))),
                // Never queued: this driver does not splice proxied bodies (it never calls
                // `Service::set_can_splice`).
                Some(Output::Pipe { .. }) => return End::Close,
            }
        };
        match piece {
            Some(Err(buf)) => {
                if let Err(end) = write_bytes(w, conn, io, buf).await {
                    return end;
                }
                continue;
            }
            Some(Ok((file, offset, len))) => {
                if let Err(end) = send_file(w, conn, io, file, offset, len).await {
                    return end;
                }
                continue;
            }
            None => {}
        }
        if let Some(pipe) = io.pipe.take() {
            w.pipes.release(pipe);
        }

        // The proxied request, if any: connect, write, read (output may follow).
        match gw::step(w, conn, &mut io.up).await {
            gw::Step::Again => continue,
            gw::Step::Close => return End::Close,
            gw::Step::Idle => {}
        }

        let (should_close, wants_read, deadline) = {
            let session = conn.session.borrow();
            (
                session.should_close(),
                session.wants_read(),
                session.deadline(),
            )
        };
        if should_close {
            return if io.eof { End::Close } else { End::Linger };
        }
        if !wants_read && conn.session.borrow().ktls_due() {
            // The switch to kernel TLS is made at the top of the loop.
            continue;
        }
        if !wants_read || io.eof {
            // Nothing to send, nothing to read, yet the session is not done: it can only be
            // waiting for its own deadline, or for another request's cache fetch.
            let collapsed = conn.session.borrow().collapsed();
            if let (Some(d), true) = (deadline, collapsed) {
                let wake = w.cache_wake.notified();
                let stop = w.shutdown.notified();
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(d));
                let _ = race(race(sleep, wake), stop).await;
                continue;
            }
            if let Some(d) = deadline {
                let stop = w.shutdown.notified();
                if !io.shutdown_seen && w.shutting_down.get() {
                    continue;
                }
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(d));
                if let Either::Right(()) = race(sleep, stop).await {
                    continue;
                }
            }
            return End::Close;
        }

        // Read, unless shutdown or the deadline comes first.
        io.rbuf.clear();
        let buf = std::mem::take(&mut io.rbuf);
        let stop = w.shutdown.notified();
        if !io.shutdown_seen && w.shutting_down.get() {
            io.rbuf = buf;
            continue;
        }
        let mut read = pin!(conn.stream.read(buf));
        let got = match race(with_deadline(deadline, read.as_mut()), stop).await {
            Either::Left(got) => got,
            Either::Right(()) => {
                // Shutdown: the session drains (a request that arrives within its grace is
                // still answered, with `Connection: close`), so the read stays armed, until
                // the session's new deadline.
                io.shutdown_seen = true;
                conn.session.borrow_mut().start_shutdown(Instant::now());
                let deadline = conn.session.borrow().deadline();
                with_deadline(deadline, read.as_mut()).await
            }
        };
        let res = match got {
            Some((res, buf)) => {
                io.rbuf = buf;
                res
            }
            None => return End::Close, // deadline passed
        };
        let now = Instant::now();
        match res {
            Ok(0) => {
                io.eof = true;
                conn.session.borrow_mut().feed_eof(now);
            }
            Ok(n) => {
                let mut svc = w.svc.borrow_mut();
                conn.session.borrow_mut().feed(&mut svc, &io.rbuf[..n], now);
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if !wait_ready(conn, io.fd, libc::POLLIN, deadline).await {
                    return End::Close;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            // On kTLS, a record that is not data (close_notify): the peer is done.
            Err(e)
                if e.raw_os_error()
                    .is_some_and(crate::tls::ktls::recv_error_is_eof) =>
            {
                io.eof = true;
                conn.session.borrow_mut().feed_eof(now);
            }
            Err(_) => return End::Close,
        }
    }
}

/// Sends (a prefix of) `buf`, a copy of the session's current `Output::Bytes`, and consumes
/// what went out.
async fn write_bytes(
    w: &Worker,
    conn: &Rc<Conn>,
    io: &mut ConnIo,
    buf: Vec<u8>,
) -> Result<(), End> {
    // Not the upstream's read timer: this task reads no upstream while it waits here.
    let deadline = conn.session.borrow().send_deadline();
    let (res, buf) = match with_deadline(deadline, conn.stream.write(buf).submit()).await {
        Some(r) => r,
        None => return Err(End::Close), // send stall: the buffer stays with the abandoned op
    };
    w.write_bufs.put(buf);
    match res {
        Ok(0) => Err(End::Close),
        Ok(n) => {
            let mut svc = w.svc.borrow_mut();
            conn.session
                .borrow_mut()
                .consume(&mut svc, n, Instant::now());
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            if wait_ready(conn, io.fd, libc::POLLOUT, deadline).await {
                Ok(())
            } else {
                Err(End::Close)
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
        Err(_) => Err(End::Close),
    }
}

/// Sends part of the session's current `Output::File` through a write buffer (read with
/// pread): the fallback when no splice pipe can be had.
async fn copy_file(
    w: &Worker,
    conn: &Rc<Conn>,
    io: &mut ConnIo,
    file: RawFd,
    offset: u64,
    len: u64,
) -> Result<(), End> {
    const COPY_MAX: usize = 64 * 1024;
    let want = len.min(COPY_MAX as u64) as usize;
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Err(End::Close);
    };
    let mut buf = w.write_bufs.take();
    buf.resize(want, 0);
    // SAFETY: `buf` holds `want` writable bytes for the whole call; `file` is the session's
    // open file, kept open until `consume` covers this output.
    let n = unsafe { libc::pread(file, buf.as_mut_ptr().cast(), want, off) };
    if n <= 0 {
        // 0: the file is shorter than the response promised; an error: unreadable.
        w.write_bufs.put(buf);
        return Err(End::Close);
    }
    buf.truncate(n as usize);
    write_bytes(w, conn, io, buf).await
}

/// Moves part of the session's current `Output::File` (file `file`, `len` bytes at `offset`)
/// to the socket: fills the connection's pipe from the file if it is empty, then splices the
/// pipe into the socket once and consumes what went out.
async fn send_file(
    w: &Worker,
    conn: &Rc<Conn>,
    io: &mut ConnIo,
    file: RawFd,
    offset: u64,
    len: u64,
) -> Result<(), End> {
    let deadline = conn.session.borrow().deadline();
    let mut pipe = match io.pipe.take() {
        Some(p) => p,
        None => match with_deadline(deadline, w.pipes.acquire()).await {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                // No pipe exists and none can be made (pipe budget, fd limit): copy this
                // piece through memory instead of cutting the response.
                w.pipes.log_failure(&e);
                return copy_file(w, conn, io, file, offset, len).await;
            }
            None => return Err(End::Close),
        },
    };

    if pipe.held == 0 {
        let Ok(off_in) = i64::try_from(offset) else {
            w.pipes.release(pipe);
            return Err(End::Close);
        };
        let want = len.min(pipe.capacity as u64) as u32;
        let sqe = opcode::Splice::new(
            types::Fd(file),
            off_in,
            types::Fd(pipe.w.as_raw_fd()),
            -1,
            want,
        )
        .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
        .build();
        // SAFETY: the SQE names the file fd, which the session keeps open until this piece is
        // consumed (buffer contract) and the session lives in the `Conn` the op holds, and the
        // pipe's write end, which the op holds too. No user memory is involved.
        let (res, (_conn, p)) = unsafe { submit((conn.clone(), pipe), sqe) }.await;
        pipe = p;
        match res {
            // The file ended before the promised length: nothing honest can follow.
            Ok(0) => {
                w.pipes.release(pipe);
                return Err(End::Close);
            }
            Ok(n) => pipe.held = n as usize,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {
                io.pipe = Some(pipe);
                return Ok(());
            }
            Err(_) => {
                w.pipes.release(pipe);
                return Err(End::Close);
            }
        }
    }

    let sqe = opcode::Splice::new(
        types::Fd(pipe.r.as_raw_fd()),
        -1,
        types::Fd(io.fd),
        -1,
        pipe.held as u32,
    )
    .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
    .build();
    // SAFETY: the SQE names the pipe's read end (held by the op) and the socket (owned by the
    // `Conn` the op holds). No user memory is involved.
    let (res, (_conn, p)) = unsafe { submit((conn.clone(), pipe), sqe) }.await;
    pipe = p;
    match res {
        Ok(0) => {
            w.pipes.release(pipe);
            Err(End::Close)
        }
        Ok(n) => {
            let n = n as usize;
            pipe.held -= n;
            io.pipe = Some(pipe);
            let mut svc = w.svc.borrow_mut();
            conn.session
                .borrow_mut()
                .consume(&mut svc, n, Instant::now());
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            io.pipe = Some(pipe);
            if wait_ready(conn, io.fd, libc::POLLOUT, deadline).await {
                Ok(())
            } else {
                Err(End::Close)
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
            io.pipe = Some(pipe);
            Ok(())
        }
        Err(_) => {
            w.pipes.release(pipe);
            Err(End::Close)
        }
    }
}

/// Lingering close: send our FIN, read and discard until the peer's EOF, [`LINGER`] or the
/// byte cap.
/// Only when input is waiting unread: closing then would make the kernel send RST, which can
/// destroy the tail of a response still in flight. Otherwise the close (and FIN) follows at once.
async fn linger(conn: &Rc<Conn>, io: &mut ConnIo) {
    // SAFETY: `io.fd` is the raw fd of `conn.stream`, which `conn` keeps open for this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(io.fd) };
    if !crate::sys::has_unread_input(fd) || conn.stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0;
    loop {
        io.rbuf.clear();
        let buf = std::mem::take(&mut io.rbuf);
        let Some((res, buf)) = with_deadline(Some(deadline), conn.stream.read(buf)).await else {
            return;
        };
        io.rbuf = buf;
        match res {
            Ok(0) => return,
            Ok(n) => {
                discarded += n;
                if discarded > LINGER_MAX_BYTES {
                    return;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if !wait_ready(conn, io.fd, libc::POLLIN, Some(deadline)).await {
                    return;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Waits until the socket is ready for `events` (POLLIN/POLLOUT) or the deadline passes;
/// false on timeout or error.
async fn wait_ready(
    conn: &Rc<Conn>,
    fd: RawFd,
    events: libc::c_short,
    deadline: Option<Instant>,
) -> bool {
    let sqe = opcode::PollAdd::new(types::Fd(fd), events as u16 as u32).build();
    // SAFETY: the SQE names only the socket, owned by the `Conn` the op holds until completion.
    let op = unsafe { submit(conn.clone(), sqe) };
    matches!(with_deadline(deadline, op).await, Some((Ok(_), _)))
}

/// A custom op whose stored data the runtime keeps until the kernel completes it; the output is
/// the raw result and the data back.
struct Keep<D>(PhantomData<D>);

impl<D> OneshotOutputTransform for Keep<D> {
    type Output = (io::Result<u32>, D);
    type StoredData = D;

    fn transform_oneshot_output(self, data: D, cqe: cqueue::Entry) -> Self::Output {
        let r = cqe.result();
        let res = if r >= 0 {
            Ok(r as u32)
        } else {
            Err(io::Error::from_raw_os_error(-r))
        };
        (res, data)
    }
}

/// Submits `sqe` on this thread's tokio-uring ring, with `data` kept alive until it completes
/// (also when the returned future is dropped first).
///
/// # Safety
/// Every fd and every byte of memory `sqe` names must be owned by `data` (directly or through
/// an `Rc`), so that it outlives the kernel's use.
unsafe fn submit<D: Unpin + 'static>(
    data: D,
    sqe: squeue::Entry,
) -> impl Future<Output = (io::Result<u32>, D)> {
    UnsubmittedOneshot::new(data, Keep(PhantomData), sqe).submit()
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a socket fd the caller owns; F_GETFL/F_SETFL touch no user memory.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `f` until `deadline` (None: no limit); None when the deadline passed first.
async fn with_deadline<F: Future>(deadline: Option<Instant>, f: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), f)
            .await
            .ok(),
        None => Some(f.await),
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures, `a` first; the first to finish wins and the other is dropped.
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

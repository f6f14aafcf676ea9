//! The epoll driver: a per-core mio readiness loop with sendfile(2) for file bodies.
//!
//! One `mio::Poll` per worker thread drives that worker's listener, its shutdown eventfd and
//! every connection it accepted. The HTTP work happens in [`Session`]; this file only moves bytes.
//!
//! # Edge-triggered, and why
//! mio registers every source with `EPOLLET`, and we lean on that rather than fight it: each
//! socket is registered once for both readable and writable interest and never touched with
//! `epoll_ctl` again (level-triggered would need an `EPOLL_CTL_MOD` every time a connection
//! stops or starts wanting to write, or it would spin on an always-writable socket). The price is
//! that readiness must be remembered: each connection keeps `readable`/`writable` flags that are
//! set by events and cleared only when a syscall says `EAGAIN` (or a short read/write proves the
//! kernel buffer ran dry/full, which saves the extra `EAGAIN` round trip, as tokio does; but
//! once `EPOLLRDHUP` was seen a short read proves nothing, as the FIN's edge is spent). Work
//! deferred while a flag is still set — backpressure from `Session::wants_read`, or the
//! per-pass budget — is picked up again without waiting for a new edge.
//!
//! Accepted sockets get `TCP_NODELAY`: a response is written whole (one buffer, or a head and
//! then the sendfile body), so Nagle could only delay its last segment.
//!
//! # Per pass
//! A connection is driven until it would block, with at most [`IO_BUDGET`] syscalls per pass so
//! one fast pipelining client cannot starve the others; a connection that used up its budget is
//! queued and revisited after the next zero-timeout poll.
//!
//! # Housekeeping
//! Every [`TICK`] the loop gives the service the wall-clock time (cached `Date`), flushes the
//! access log, and sweeps all connections for expired deadlines (`Session::deadline`).
//!
//! # Closing
//! When the session says `should_close` while input the session will never read is waiting in
//! the socket (a peek says so), we shut down our sending side and read (and discard) until EOF
//! for at most [`LINGER`]: closing a socket with unread input makes the kernel send RST, which
//! can destroy a response still in flight (the "lingering close" nginx and Apache do). Otherwise
//! the socket is closed at once, and the FIN follows the queued response.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::app::{self, AppCall, Notify};
use super::cgi_proc::{self, CgiProc, Procs};
use super::epoll_gw::{self, Gate, Spl, Up, UpSock, UP_BIT};
use super::pool::Pool;
use super::uring::pipes::PipePool;
use super::{expired, AccessLog, DriverError, WorkerCtx, TICK};
use crate::session::{Output, Service, Session};

/// Token of the listening socket.
const LISTENER: Token = Token(usize::MAX);
/// Token of the shutdown eventfd.
const SHUTDOWN: Token = Token(usize::MAX - 1);
/// Token of the WSGI app threads' waker (an eventfd).
const APP_WAKE: Token = Token(usize::MAX - 2);

/// Readiness events taken from the kernel per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;
/// The per-worker read buffer (reused for every connection and every read).
const READ_BUF_SIZE: usize = 64 * 1024;
/// Most read/write/sendfile syscalls for one connection in one pass before it yields.
const IO_BUDGET: usize = 32;
/// Most connections accepted in one pass before the loop serves the ready ones.
const ACCEPT_BUDGET: usize = 256;
/// Largest count asked of one sendfile(2) call: 256 KiB, the size of the uring driver's
/// splice pipes; and a connection that sent one such chunk yields to the others for the rest
/// of the pass, as each uring connection has one splice in flight at a time. Asking for a
/// whole large body at once, and going on until EAGAIN, measured 2-3x slower with 64
/// connections under the default 16 KiB TCP_NOTSENT_LOWAT and BBR (10 MiB files, loadgen -c 64
/// on this 2-core VM: 3.2-5.3 GiB/s with a p99 near 1 s, bimodal from run to run; with cubic
/// it was a steady 6.2 GiB/s). Capped, 8.5-9.3 GiB/s, but a run could still start in the
/// slow mode (3.8 GiB/s); capped and yielding, 9.0-10.1 GiB/s in 8 rounds of 8.
const SENDFILE_MAX: u64 = 256 * 1024;
/// At most this many accept passes take in the backlog when a graceful shutdown begins.
const BACKLOG_PASSES: usize = 64;

/// How long accepting pauses after EMFILE/ENFILE (or another resource error) on accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest lingering close (waiting for the peer's EOF after our FIN).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering before the socket is simply closed.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// One accepted connection.
struct Conn {
    sock: TcpStream,
    session: Session,
    /// Readiness not yet used up (edge seen, no `EAGAIN` since).
    readable: bool,
    writable: bool,
    /// The peer sent EOF (read returned 0).
    eof: bool,
    /// An event said the peer shut down its side (EPOLLRDHUP): reads go on until they return 0.
    peer_fin: bool,
    /// Lingering close: our FIN is sent, discarding input until EOF or this instant.
    linger_until: Option<Instant>,
    /// Bytes discarded while lingering.
    lingered: usize,
    /// The upstream socket of the proxied request in flight.
    up: Option<Up>,
    /// The splice pipe of a proxied body going upstream → pipe → client.
    splice: Spl,
    /// The splice pipe of client bytes going client → pipe → upstream (a tunnel's, a
    /// streamed request body's).
    splice_up: Spl,
    /// The CGI script of the request in flight.
    cgi: Option<CgiProc>,
    /// The WSGI call of the request in flight.
    app: Option<AppCall>,
}

/// What a pass over one connection decided.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Wait for the next readiness event.
    Wait,
    /// Budget used up with work left: revisit after the next (zero-timeout) poll.
    Again,
    /// Close the connection now.
    Close,
}

/// A slab of connections addressed by mio token (Vec + free list).
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    fn new() -> Slab {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// The index the next `insert` will use.
    fn vacant(&mut self) -> usize {
        match self.free.last() {
            Some(&i) => i,
            None => {
                self.slots.push(None);
                self.free.push(self.slots.len() - 1);
                self.slots.len() - 1
            }
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        let i = self.vacant();
        self.free.pop();
        self.slots[i] = Some(conn);
        self.len += 1;
        i
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(conn)
    }
}

/// Everything one worker's loop owns.
struct Worker {
    id: usize,
    poll: Poll,
    /// Reloaded configs from the main thread, and the last generation applied.
    reload: std::sync::Arc<super::Reload>,
    reload_seen: u64,
    /// None once shutdown has begun (dropped: no longer accepting, out of the reuseport group).
    listener: Option<TcpListener>,
    /// Whether the listener is registered with `poll` right now.
    listening: bool,
    /// A listener edge has not been drained to `EAGAIN` yet.
    accept_ready: bool,
    /// Accepting is paused until then (EMFILE backoff).
    accept_resume_at: Option<Instant>,
    /// The pause is for want of fds (EMFILE/ENFILE): a closing connection ends it at once.
    accept_fd_short: bool,
    accept_error_logged: bool,
    max_conns: usize,
    conns: Slab,
    svc: Service,
    buf: Vec<u8>,
    /// Connections that used up their budget and must be driven again.
    again: Vec<usize>,
    access_log: AccessLog,
    /// When shutdown began, the instant by which the worker exits regardless.
    shutdown_deadline: Option<Instant>,
    trim: super::Trim,
    /// Idle upstream connections, this worker's own.
    pool: Pool<UpSock>,
    /// Splice pipes for proxied bodies, this worker's own.
    pipes: PipePool,
    /// CGI scripts alive and being reaped.
    procs: Procs,
    cgi_max: usize,
    /// Where the app threads say which calls have news (with `ringd-wsgi` only).
    notify: Option<std::sync::Arc<Notify>>,
    app_serial: u64,
    app_ready: Vec<(usize, u64)>,
}

/// Runs one worker: returns after shutdown once every connection is closed or the shutdown
/// timeout has passed.
pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let WorkerCtx {
        id,
        config,
        listener,
        roots,
        shutdown,
        reload,
    } = ctx;

    let poll = Poll::new()?;
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let shutdown_fd = shutdown.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&shutdown_fd), SHUTDOWN, Interest::READABLE)?;

    let access_log = AccessLog::open(&config)?;
    let notify = match app::installed() {
        Some(_) => Some(std::sync::Arc::new(Notify::new(mio::Waker::new(
            poll.registry(),
            APP_WAKE,
        )?))),
        None => None,
    };

    let mut svc = Service::new(&config, roots);
    svc.set_time(SystemTime::now());
    svc.set_can_splice(true);
    svc.set_can_splice_up(true);

    let mut w = Worker {
        id,
        poll,
        listener: Some(listener),
        listening: true,
        accept_ready: true,
        accept_resume_at: None,
        accept_fd_short: false,
        accept_error_logged: false,
        max_conns: config.limits.max_conns_per_worker.max(1),
        conns: Slab::new(),
        svc,
        buf: vec![0; READ_BUF_SIZE],
        again: Vec::new(),
        access_log,
        shutdown_deadline: None,
        trim: super::Trim::default(),
        reload,
        reload_seen: 0,
        pool: Pool::default(),
        pipes: PipePool::new(config.pipe_pool, config.pipe_size),
        procs: Procs::default(),
        cgi_max: config.cgi_max_procs.max(1),
        notify,
        app_serial: 0,
        app_ready: Vec::new(),
    };
    let shutdown_timeout = config.timeouts.shutdown;
    let result = w.event_loop(shutdown_timeout);
    w.flush_access_log();
    // `shutdown` (the eventfd) stays open until here, so its registration stays valid.
    drop(shutdown);
    result
}

impl Worker {
    fn event_loop(&mut self, shutdown_timeout: Duration) -> Result<(), DriverError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut now = Instant::now();
        let mut next_tick = now + TICK;
        let mut again = Vec::new();
        loop {
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.len == 0 || now >= deadline {
                    return Ok(());
                }
            }

            let timeout = if !self.again.is_empty() || self.can_accept_now() {
                Duration::ZERO
            } else {
                let mut wake = next_tick;
                if let Some(t) = self.accept_resume_at {
                    wake = wake.min(t);
                }
                if let Some(t) = self.shutdown_deadline {
                    wake = wake.min(t);
                }
                wake.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            now = Instant::now();

            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_ready = true,
                    SHUTDOWN => self.begin_shutdown(now, shutdown_timeout),
                    APP_WAKE => self.app_news(now),
                    Token(t) if t & UP_BIT != 0 => {
                        let i = t & !UP_BIT;
                        let Some(conn) = self.conns.get_mut(i) else {
                            continue; // stale: the connection closed in this batch
                        };
                        // A CGI script's pipes are tried without readiness flags.
                        if let Some(up) = conn.up.as_mut() {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                up.readable = true;
                            }
                            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                                up.writable = true;
                            }
                        }
                        self.drive(i, now);
                    }
                    Token(i) => {
                        let Some(conn) = self.conns.get_mut(i) else {
                            continue; // stale event for a connection closed in this batch
                        };
                        if ev.is_read_closed() {
                            conn.peer_fin = true;
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            conn.readable = true;
                        }
                        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                            conn.writable = true;
                        }
                        self.drive(i, now);
                    }
                }
            }

            // Connections that ran out of budget last pass (deduplicated by the drive itself:
            // a second pass over a connection with nothing ready is a no-op).
            std::mem::swap(&mut again, &mut self.again);
            for i in again.drain(..) {
                self.drive(i, now);
            }

            if self.can_accept_now() {
                self.accept(now);
            }

            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }

            // Sessions whose collapsed cache fetch ended (tag: slot).
            loop {
                let woken = self.svc.take_woken();
                if woken.is_empty() {
                    break;
                }
                for t in woken {
                    self.drive(t as usize, now);
                }
            }
        }
    }

    /// Whether a listener edge is pending and accepting is allowed right now.
    fn can_accept_now(&self) -> bool {
        self.accept_ready
            && self.listening
            && self.accept_resume_at.is_none()
            && self.conns.len < self.max_conns
    }

    /// Accepts until `EAGAIN`, the connection limit, or the per-pass budget.
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            if self.conns.len >= self.max_conns {
                // Backpressure: leave further connections in the kernel's backlog and stop
                // listening for them until one closes.
                self.pause_listening();
                return;
            }
            let accepted = match self.listener.as_ref() {
                Some(listener) => listener.accept(),
                None => return,
            };
            match accepted {
                Ok((mut sock, peer)) => {
                    // Responses are written whole (head + body or one buffer): no Nagle delay.
                    let _ = sock.set_nodelay(true);
                    let i = self.conns.vacant();
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.log_accept_error(&e);
                        continue;
                    }
                    // The registration reports the socket's current readiness as a first event.
                    self.conns.insert(Conn {
                        sock,
                        session: {
                            let mut s = Session::new(peer, now);
                            s.set_wake_tag(i as u64);
                            if self.shutdown_deadline.is_some() {
                                // Taken from the backlog by the drain: its first request
                                // is answered, with `Connection: close`.
                                s.start_shutdown(now);
                            }
                            s
                        },
                        readable: false,
                        writable: false,
                        eof: false,
                        peer_fin: false,
                        linger_until: None,
                        lingered: 0,
                        up: None,
                        splice: Spl::default(),
                        splice_up: Spl::default(),
                        cgi: None,
                        app: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {}
                    _ => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: keep serving the connections we
                        // have, and retry accepting shortly.
                        self.log_accept_error(&e);
                        self.pause_listening();
                        self.accept_resume_at = Some(now + ACCEPT_BACKOFF);
                        self.accept_fd_short =
                            matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                        return;
                    }
                },
            }
        }
    }

    fn log_accept_error(&mut self, e: &io::Error) {
        if !self.accept_error_logged {
            self.accept_error_logged = true;
            eprintln!(
                "ringd: worker {}: accept failed: {e}; still serving open connections, \
                 retrying (logged once)",
                self.id
            );
        }
    }

    /// Stops listener events (connection limit or accept backoff).
    fn pause_listening(&mut self) {
        if let (true, Some(l)) = (self.listening, self.listener.as_mut()) {
            let _ = self.poll.registry().deregister(l);
            self.listening = false;
        }
    }

    /// Resumes listener events once accepting is allowed again.
    fn resume_listening(&mut self) {
        if self.listening || self.accept_resume_at.is_some() || self.conns.len >= self.max_conns {
            return;
        }
        if let Some(l) = self.listener.as_mut() {
            if self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .is_ok()
            {
                self.listening = true;
                // Connections may have queued meanwhile without a new edge reaching us.
                self.accept_ready = true;
            }
        }
    }

    /// Graceful shutdown: stop accepting, tell every session, close the idle ones.
    fn begin_shutdown(&mut self, now: Instant, timeout: Duration) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + timeout);
        self.pause_listening();
        // Connections the kernel completed but nobody accepted yet would be reset when the
        // listener closes, under requests their clients may have sent already: take them in
        // (up to the connection limit; the loop below starts them draining, so each answers
        // one request with `Connection: close`).
        for _ in 0..BACKLOG_PASSES {
            self.accept_ready = true;
            self.accept(now);
            if !self.accept_ready || self.conns.len >= self.max_conns {
                break;
            }
        }
        // Dropping the listener takes it out of the SO_REUSEPORT group at once.
        self.listener = None;
        self.accept_ready = false;
        for i in 0..self.conns.slots.len() {
            // Answer the requests that already arrived first (their readiness may sit later in
            // this batch of events): after start_shutdown they would be dropped unread, and
            // their clients would see the connection close under a request they had sent.
            let Some(conn) = self.conns.get_mut(i) else {
                continue;
            };
            conn.readable = true;
            self.drive(i, now);
            if let Some(conn) = self.conns.get_mut(i) {
                conn.session.start_shutdown(now);
                self.drive(i, now);
            }
        }
    }

    /// Time for the service, access-log flush, deadline sweep, accept backoff expiry.
    fn tick(&mut self, now: Instant) {
        self.svc.set_time(SystemTime::now());
        if self.reload.apply(&mut self.reload_seen, &mut self.svc) {
            // Server numbers may mean other servers now.
            self.pool.clear();
        }
        self.pool.sweep_upstreams(now, self.svc.upstreams());
        self.flush_access_log();
        let _ = self.trim.tick(self.conns.len);
        for i in 0..self.conns.slots.len() {
            let Some(conn) = self.conns.get_mut(i) else {
                continue;
            };
            let deadline = match conn.linger_until {
                Some(t) => Some(t),
                None => conn.session.deadline(),
            };
            if expired(deadline, now) {
                // An upstream timeout answers 504 and the connection lives on.
                if conn.linger_until.is_none() && !conn.session.expire(&mut self.svc, now) {
                    self.drive(i, now);
                } else {
                    self.close(i);
                }
            }
        }
        if self.accept_resume_at.is_some_and(|t| now >= t) {
            self.accept_resume_at = None;
            self.resume_listening();
        }
        self.procs.reap(now);
    }

    /// The app threads have news for some calls: drive their connections.
    fn app_news(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.app_ready);
        if let Some(n) = &self.notify {
            n.drain(&mut ready);
        }
        for &(i, serial) in &ready {
            let ours = self
                .conns
                .get_mut(i)
                .and_then(|c| c.app.as_ref())
                .is_some_and(|a| a.serial == serial);
            if ours {
                self.drive(i, now);
            }
        }
        ready.clear();
        self.app_ready = ready;
    }

    fn flush_access_log(&mut self) {
        self.access_log.flush(self.svc.access_log());
    }

    /// Drives connection `i` and applies the outcome.
    fn drive(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.session.collapsed() {
            conn.session.collapse_poll(&mut self.svc, now);
        }
        let mut gate = Gate {
            registry: self.poll.registry(),
            pool: &mut self.pool,
            pipes: &mut self.pipes,
            token: i,
        };
        let mut watch = cgi_proc::EpollWatch {
            registry: self.poll.registry(),
            token: i,
        };
        let mut cx = cgi_proc::Ctx {
            watch: &mut watch,
            procs: &mut self.procs,
            max: self.cgi_max,
        };
        let mut ax = app::Ctx {
            notify: self.notify.as_ref(),
            token: i,
            serial: &mut self.app_serial,
        };
        match drive_conn(
            conn,
            &mut self.svc,
            &mut gate,
            &mut cx,
            &mut ax,
            &mut self.buf,
            now,
        ) {
            Step::Wait => {}
            Step::Again => self.again.push(i),
            Step::Close => self.close(i),
        }
    }

    fn close(&mut self, i: usize) {
        // Dropping the socket closes it, which also removes it from the epoll set.
        if let Some(mut conn) = self.conns.remove(i) {
            let now = Instant::now();
            conn.session.gw_abandon(&mut self.svc, now);
            conn.splice.release(&mut self.pipes);
            conn.splice_up.release(&mut self.pipes);
            if let Some(p) = conn.cgi.take() {
                // The client is gone: the script is put down (SIGTERM, then SIGKILL).
                let mut watch = cgi_proc::EpollWatch {
                    registry: self.poll.registry(),
                    token: i,
                };
                self.procs.retire(p, &mut watch, true, now);
            }
            if let Some(a) = conn.app.take() {
                // The app thread stops producing and calls the response's close().
                a.cancel();
            }
            if std::mem::take(&mut self.accept_fd_short) {
                // This connection's fd is free (closed at the end of this block, before the
                // next accept): no need to sit out the rest of the backoff.
                self.accept_resume_at = None;
            }
            self.resume_listening();
        }
    }
}

/// Hands the connection's record layer to the kernel when the session has a kTLS switch due:
/// Ok(true) when it made one, Ok(false) when none was due, Err when it failed (the connection
/// must close; `ktls::enable` logged why).
fn switch_ktls(conn: &mut Conn) -> Result<bool, ()> {
    match conn.session.take_ktls() {
        Some(sw) => crate::tls::ktls::enable(conn.sock.as_raw_fd(), &sw)
            .map(|_| true)
            .map_err(|_| ()),
        None => Ok(false),
    }
}

/// One pass over a connection: write what the session has, read what the peer sent, until the
/// socket would block, the session holds back, or the budget is spent.
fn drive_conn(
    conn: &mut Conn,
    svc: &mut Service,
    gate: &mut Gate<'_>,
    cx: &mut cgi_proc::Ctx<'_>,
    ax: &mut app::Ctx<'_>,
    buf: &mut [u8],
    now: Instant,
) -> Step {
    if conn.linger_until.is_some() {
        return linger(conn, buf);
    }
    let mut budget = IO_BUDGET;
    loop {
        // After the handshake, the record layer moves to the kernel where the listener
        // runs kTLS (no read is in flight: reads happen only below).
        if switch_ktls(conn).is_err() {
            return Step::Close;
        }
        // Output first: it frees the session to answer further pipelined requests.
        while conn.writable {
            let Some(out) = conn.session.next_output() else {
                break;
            };
            if budget == 0 {
                return Step::Again;
            }
            budget -= 1;
            let is_file = matches!(out, Output::File { .. });
            // `full`: whether a short count proves the socket buffer is full.
            let (full, res) = match out {
                Output::Bytes(b) => {
                    let asked = b.len();
                    let res = (&conn.sock).write(b);
                    (res.as_ref().is_ok_and(|&n| n < asked), res)
                }
                // Never clear `writable` on a short sendfile: only EAGAIN proves the socket is
                // full (sendfile can stop short for file-side reasons).
                Output::File { fd, offset, len } => (
                    false,
                    send_file(conn.sock.as_raw_fd(), fd, offset, len, buf),
                ),
                // A proxied body's bytes in the pipe: never clear `writable` on a short
                // splice either (only EAGAIN proves the socket full).
                Output::Pipe { len } => match &conn.splice.pipe {
                    Some(p) if conn.splice.in_pipe > 0 => {
                        let n = (len as usize).min(conn.splice.in_pipe);
                        let res = crate::sys::splice(p.r(), conn.sock.as_raw_fd(), n);
                        if let Ok(k) = res {
                            conn.splice.in_pipe -= k;
                        }
                        (false, res)
                    }
                    // Cannot happen (the piece counts what the pipe holds): nothing honest
                    // can follow.
                    _ => return Step::Close,
                },
            };
            match res {
                // A zero-byte write of a non-empty piece: the file shrank under a response
                // whose length is already promised. Nothing honest can follow.
                Ok(0) => return Step::Close,
                Ok(n) => {
                    if full {
                        conn.writable = false;
                    }
                    conn.session.consume(svc, n, now);
                    if is_file {
                        // One sendfile chunk per connection per pass: see SENDFILE_MAX.
                        return Step::Again;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }

        if conn.session.should_close() {
            return start_linger(conn, buf, now);
        }

        // The proxied request or CGI script, if any: connect or spawn, send, read (output
        // may follow).
        conn.splice.release_empty(gate.pipes);
        conn.splice_up.release_empty(gate.pipes);
        let s = &mut conn.session;
        let sp = (&mut conn.splice, &mut conn.splice_up);
        let up = epoll_gw::drive(&mut conn.up, sp, s, svc, gate, buf, now, &mut budget);
        let cgi = cgi_proc::drive(&mut conn.cgi, s, svc, cx, buf, now, &mut budget);
        let app = app::drive(&mut conn.app, s, svc, ax, now);
        // A spent budget comes back next pass whether or not the gateway moved: it may have
        // stopped at the budget with its upstream flagged readable, whose edge is spent, and
        // waiting for a new edge would stall the response until the read timer fires.
        if budget == 0 {
            return Step::Again;
        }
        if up || cgi || app {
            continue;
        }

        // Client bytes bound for the upstream go by splice where the session lets them.
        if let (true, false, Some(want)) =
            (conn.readable, conn.eof, conn.session.client_splice_want())
        {
            if conn.splice_up.pipe.is_none() {
                conn.splice_up.pipe = gate.pipes.take();
                if conn.splice_up.pipe.is_none() {
                    // None free: they are read and copied instead.
                    conn.session.client_no_splice();
                    continue;
                }
            }
            let pipe = conn.splice_up.pipe.as_ref().expect("just ensured");
            let room = pipe.cap().saturating_sub(conn.splice_up.in_pipe);
            if room == 0 {
                // The upstream's drain brings us back.
                return Step::Wait;
            }
            if budget == 0 {
                return Step::Again;
            }
            budget -= 1;
            let n = (room as u64).min(want) as usize;
            match crate::sys::splice(conn.sock.as_raw_fd(), pipe.w(), n) {
                Ok(0) => {
                    conn.eof = true;
                    conn.readable = false;
                    conn.session.feed_eof(now);
                }
                Ok(k) => {
                    conn.splice_up.in_pipe += k;
                    conn.session.client_spliced(k, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // With data in the pipe, EAGAIN may mean it is out of slots.
                    if conn.splice_up.in_pipe == 0 {
                        conn.readable = false;
                    }
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
            continue;
        }
        // A switch that came due while writing (the handshake's last flight went out above):
        // the session wants no reads until it is made, and no edge may come to wake us.
        match switch_ktls(conn) {
            Err(()) => return Step::Close,
            Ok(true) => continue,
            Ok(false) => {}
        }
        if !conn.readable || conn.eof || !conn.session.wants_read() {
            return Step::Wait;
        }
        if budget == 0 {
            return Step::Again;
        }
        budget -= 1;
        match (&conn.sock).read(buf) {
            Ok(0) => {
                conn.eof = true;
                conn.readable = false;
                conn.session.feed_eof(now);
            }
            Ok(n) => {
                if n < buf.len() && !conn.peer_fin {
                    // The receive queue is drained; the next arrival raises a new edge. (Not
                    // so for a FIN that came with the data: it raised its edge already, and
                    // only the next read returns it.)
                    conn.readable = false;
                }
                conn.session.feed(svc, &buf[..n], now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // On kTLS, a record that is not data (close_notify): the peer is done.
            Err(e)
                if e.raw_os_error()
                    .is_some_and(crate::tls::ktls::recv_error_is_eof) =>
            {
                conn.eof = true;
                conn.readable = false;
                conn.session.feed_eof(now);
            }
            Err(_) => return Step::Close,
        }
    }
}

/// The session is done with this connection. Close at once unless input is waiting unread
/// (then the kernel would answer our close with RST, which can destroy the tail of a response
/// still in flight): in that case send our FIN and read until theirs, bounded by [`LINGER`].
fn start_linger(conn: &mut Conn, buf: &mut [u8], now: Instant) -> Step {
    if conn.eof || !crate::sys::has_unread_input(std::os::fd::AsFd::as_fd(&conn.sock)) {
        return Step::Close;
    }
    if conn.sock.shutdown(Shutdown::Write).is_err() {
        return Step::Close;
    }
    conn.readable = true;
    conn.linger_until = Some(now + LINGER);
    linger(conn, buf)
}

/// Reads and discards until EOF (then close), `EAGAIN` (then wait) or the byte cap (close).
fn linger(conn: &mut Conn, buf: &mut [u8]) -> Step {
    for _ in 0..IO_BUDGET {
        if !conn.readable {
            return Step::Wait;
        }
        match (&conn.sock).read(buf) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                conn.lingered += n;
                if conn.lingered > LINGER_MAX_BYTES {
                    return Step::Close;
                }
                if n < buf.len() && !conn.peer_fin {
                    conn.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    Step::Again
}

/// sendfile(2) of `len` bytes of `file` at `offset` to the non-blocking socket `sock`; when
/// sendfile cannot get its internal pipe (ENOMEM: the per-user pipe budget is spent before
/// this thread ever had one), a copy through `buf` instead (pread, then one write).
fn send_file(sock: RawFd, file: RawFd, offset: u64, len: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let count = len.min(SENDFILE_MAX) as usize;
    // SAFETY: `file` stays open until this piece is consumed (the session's buffer contract),
    // `sock` is owned by the connection for the duration of the call, and `off` is a local the
    // kernel only writes during the call. sendfile touches no other user memory.
    let n = unsafe { libc::sendfile(sock, file, &mut off, count) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOMEM) || buf.is_empty() {
        return Err(e);
    }
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("ringd: sendfile failed: {e}; copying file bodies through memory (logged once)");
    }
    let want = count.min(buf.len());
    // SAFETY: `buf` has `want` writable bytes; `file` is open (as above).
    let got = unsafe { libc::pread(file, buf.as_mut_ptr().cast(), want, offset as libc::off_t) };
    if got <= 0 {
        // 0 (the file shrank) ends the response as a zero-byte sendfile would.
        return if got == 0 {
            Ok(0)
        } else {
            Err(io::Error::last_os_error())
        };
    }
    // SAFETY: the first `got` bytes of `buf` were just written by pread; `sock` is open.
    let n = unsafe { libc::send(sock, buf.as_ptr().cast(), got as usize, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

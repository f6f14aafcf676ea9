//! The io_uring driver: a per-core completion loop (multishot accept, multishot recv into a
//! provided-buffer ring, send, splice through a bounded pipe pool, timeouts, and OpenAt2 and
//! Read for the files the handler needs: see `open.rs`).
//!
//! One `Driver` per worker thread owns the ring, the connections, the buffers and the pipes;
//! nothing is shared. Each pass: flush the backlog, submit and wait for at least one
//! completion, handle at most `MAX_CQES_PER_PASS` completions, then drive the connections
//! woken meanwhile, and start the open jobs of requests parked on files. A `Timeout` op ticks every `TICK` for the clock, deadlines and the access
//! log.

mod apps;
mod cgi;
mod conn;
mod gw;
mod open;
pub(crate) mod pipes;
pub mod ring;
mod token;

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use io_uring::{cqueue, opcode, types};

use super::pool::Pool;
use super::{AccessLog, DriverError, WorkerCtx, TICK};
use crate::config::Config;
use crate::session::Service;
use conn::Conns;
use pipes::PipePool;
use ring::{BufRing, Sq};
use token::{Op, Token};

/// Most completions handled in one loop pass (the rest wait for the next pass).
pub const MAX_CQES_PER_PASS: usize = 1024;
/// Most zero-length outputs skipped in one go before yielding (guards against spinning).
pub const MAX_EMPTY_OUTPUTS: usize = 64;
/// `--busy-poll`: ring checks between two reads of the clock.
const BUSY_POLL_SPINS: usize = 64;
/// Provided recv buffers per worker (a power of two).
pub const RECV_BUFS: u16 = 512;
/// Size of each provided recv buffer.
pub const RECV_BUF_SIZE: usize = 8192;
/// Buffer group id of the recv buffer ring.
const RECV_BGID: u16 = 0;
/// How long a closing connection keeps reading (and discarding) after its response, so the
/// close does not reset a response the peer has not read yet.
pub const LINGER: Duration = Duration::from_secs(1);
/// After an accept failed for lack of fds or memory, wait this long before accepting again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// After the shutdown deadline closed every connection, how long to wait for their cancelled
/// ops to complete before exiting anyway.
pub const FORCE_GRACE: Duration = Duration::from_secs(1);
/// At exit, how long to wait for the last ops (timer, shutdown poll) to be cancelled.
pub const EXIT_DRAIN: Duration = Duration::from_secs(1);

/// Check that io_uring works here with every opcode and feature the driver needs.
pub fn check_available() -> Result<(), DriverError> {
    let (ring, _) = ring::build(8, 16, false).map_err(DriverError::UringSetup)?;
    let missing = ring::missing_required(&ring)?;
    if !missing.is_empty() {
        return Err(DriverError::Unavailable {
            backend: "uring",
            why: format!(
                "the kernel lacks io_uring operations: {} (use --backend epoll)",
                missing.join(", ")
            ),
        });
    }
    let br = BufRing::new(&ring, 0, 2, 64).map_err(|e| DriverError::Unavailable {
        backend: "uring",
        why: format!("provided-buffer rings (Linux 5.19+) are unavailable: {e}"),
    })?;
    br.unregister(&ring);
    Ok(())
}

/// Run one worker's io_uring loop until graceful shutdown completes.
pub fn run(ctx: WorkerCtx) -> Result<(), DriverError> {
    let mut d = Driver::new(ctx)?;
    let res = d.run_loop();
    d.finish();
    res
}

pub(crate) struct Driver {
    /// Reloaded configs from the main thread, and the last generation applied.
    reload: std::sync::Arc<super::Reload>,
    reload_seen: u64,
    sq: Sq,
    bufs: BufRing,
    conns: Conns,
    pipes: PipePool,
    /// Connections waiting for a free pipe, first come first served (stale ids skipped).
    pipe_waiters: VecDeque<(u32, u32)>,
    /// Connections to drive at the end of this pass.
    ready: Vec<(u32, u32)>,
    /// Connections whose direct splice moved bytes: driven again on the next pass (after the
    /// completions that came meanwhile), so that one fast body cannot hold the worker until
    /// a socket runs dry.
    later: Vec<(u32, u32)>,
    /// cachestat(2) works here (Linux 6.5): cached file pages are spliced in the worker.
    cachestat: bool,
    svc: Service,
    log: AccessLog,
    listener: Option<TcpListener>,
    /// Sockets accepted while at the connection limit, waiting for a free slot.
    parked: VecDeque<OwnedFd>,
    /// user_data of the armed multishot accept.
    accept: Option<u64>,
    accept_cancel: bool,
    /// Accepting paused (EMFILE and the like) until then.
    accept_retry_at: Option<Instant>,
    /// The pause is for want of fds (EMFILE/ENFILE): a closing connection ends it at once.
    pub(super) accept_fd_short: bool,
    /// SIGTERM/SIGINT arrived in the batch being handled: drain once it is done.
    drain_pending: bool,
    emfile_logged: bool,
    accept_err_logged: bool,
    warned_unknown: bool,
    shutdown_fd: OwnedFd,
    shutdown_poll: Option<u64>,
    tick: Option<u64>,
    /// Read by the kernel when the Timeout is submitted.
    tick_ts: Box<types::Timespec>,
    /// Set when graceful shutdown began: the deadline for connections to finish.
    draining: Option<Instant>,
    /// In `finish`: no more re-arming of anything.
    exiting: bool,
    config: Config,
    now: Instant,
    cqes: Vec<(u64, i32, u32)>,
    /// Open jobs in flight (see `open.rs`).
    jobs: open::Jobs,
    /// Connections whose session is parked on the open job for a URL path.
    open_waiters: HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    /// Idle upstream connections, this worker's own (no op is ever in flight on them).
    pool: Pool<OwnedFd>,
    /// Buffers of finished upstream exchanges, for the next ones.
    up_bufs: gw::UpBufs,
    /// CGI scripts alive and being reaped, the most alive at once, and the buffer their
    /// stdout and stderr are read into (allocated by the first script).
    procs: super::cgi_proc::Procs,
    cgi_max: usize,
    cgi_buf: Vec<u8>,
    /// Something needs each connection's peer address (access log, proxy, CGI): see
    /// `add_conn`.
    needs_peer: bool,
    /// The WSGI app plumbing, in a process that hosts an app queue (`ringd-wsgi`).
    apps: Option<apps::Apps>,
    trim: super::Trim,
}

impl Driver {
    fn new(ctx: WorkerCtx) -> Result<Driver, DriverError> {
        let (ring, _flags) = ring::build(
            ring::SQ_ENTRIES,
            ring::CQ_ENTRIES,
            !ctx.config.busy_poll.is_zero(),
        )
        .map_err(DriverError::UringSetup)?;
        // Older kernels lack the cap; splices then just use the default io-wq limits.
        let _ = ring::cap_iowq(&ring);
        // Likewise optional (Linux 5.14+): without it io-wq may run on any allowed CPU.
        let _ = ring::pin_iowq_to_current(&ring);
        let bufs = BufRing::new(&ring, RECV_BGID, RECV_BUFS, RECV_BUF_SIZE)?;
        let log = AccessLog::open(&ctx.config)?;
        let cgi_max = ctx.config.cgi_max_procs.max(1);
        let mut svc = Service::new(&ctx.config, ctx.roots);
        svc.set_time(SystemTime::now());
        svc.set_can_splice(true);
        svc.set_can_splice_up(true);
        // Open files through the ring where the kernel can (OpenAt2 and Read, Linux 5.6+);
        // otherwise the handler opens them synchronously.
        let have = ring::probe(&ring).unwrap_or_default();
        let can = |name: &str| {
            ring::OPCODES
                .iter()
                .zip(&have)
                .any(|((n, _, _), ok)| *n == name && *ok)
        };
        svc.files().set_async_open(can("OpenAt2") && can("Read"));
        Ok(Driver {
            sq: Sq::new(ring),
            bufs,
            conns: Conns::default(),
            pipes: PipePool::new(ctx.config.pipe_pool, ctx.config.pipe_size),
            pipe_waiters: VecDeque::new(),
            ready: Vec::new(),
            later: Vec::new(),
            cachestat: true,
            svc,
            log,
            listener: Some(ctx.listener),
            parked: VecDeque::new(),
            accept: None,
            accept_cancel: false,
            accept_retry_at: None,
            accept_fd_short: false,
            drain_pending: false,
            emfile_logged: false,
            accept_err_logged: false,
            warned_unknown: false,
            shutdown_fd: ctx.shutdown,
            reload: ctx.reload,
            reload_seen: 0,
            shutdown_poll: None,
            tick: None,
            tick_ts: Box::new(types::Timespec::from(TICK)),
            draining: None,
            exiting: false,
            config: ctx.config,
            now: Instant::now(),
            cqes: Vec::with_capacity(MAX_CQES_PER_PASS),
            jobs: open::Jobs::default(),
            open_waiters: HashMap::new(),
            pool: Pool::default(),
            up_bufs: gw::UpBufs::default(),
            procs: super::cgi_proc::Procs::default(),
            cgi_max,
            cgi_buf: Vec::new(),
            needs_peer: false,
            apps: apps::Apps::new().map_err(DriverError::UringSetup)?,
            trim: super::Trim::default(),
        })
    }

    /// Whether the access log, a proxy route, a CGI route (in the config now in force) or a
    /// WSGI app (REMOTE_ADDR) needs connections' peer addresses.
    fn peer_needed(&self) -> bool {
        let sites = &self.svc.config().sites;
        self.config.access_log.is_some()
            || !sites.upstreams.is_empty()
            || sites.has_cgi()
            || self.apps.is_some()
    }

    fn run_loop(&mut self) -> Result<(), DriverError> {
        self.needs_peer = self.peer_needed();
        self.arm_tick();
        self.arm_shutdown_poll();
        self.arm_app_poll();
        self.maybe_arm_accept();
        loop {
            self.sq.flush_backlog()?;
            let want = if !self.later.is_empty() {
                // Work left from the last pass: collect completions without sleeping.
                0
            } else if self.config.busy_poll.is_zero() {
                1
            } else {
                self.poll_before_sleep()
            };
            match self.sq.ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    // EBUSY: the CQ is overflowing; reap first. EINTR/ETIME: just go on.
                    Some(libc::EBUSY) | Some(libc::EINTR) | Some(libc::ETIME) => {}
                    _ => return Err(e.into()),
                },
            }
            self.reap();
            self.ready.append(&mut self.later);
            loop {
                for (idx, gen) in std::mem::take(&mut self.ready) {
                    self.drive(idx, gen);
                }
                // Requests parked on files to open: start their jobs (a path refused
                // without opening anything resumes its requests at once).
                self.start_open_jobs();
                // Sessions whose collapsed cache fetch ended (tag: slot << 32 | generation).
                for t in self.svc.take_woken() {
                    self.ready.push(((t >> 32) as u32, t as u32));
                }
                if self.ready.is_empty() {
                    break;
                }
            }
            if let Some(deadline) = self.draining {
                if self.conns.len() == 0 && self.accept.is_none() {
                    return Ok(());
                }
                if self.now >= deadline + FORCE_GRACE {
                    eprintln!(
                        "ringd: {} connection(s) still closing after the shutdown timeout",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// `--busy-poll`: before sleeping in the kernel, submit what is queued and poll the CQ
    /// and the IORING_SQ_TASKRUN flag for up to `config.busy_poll`. Returns how many
    /// completions the following enter waits for: 0 when work showed up (the enter then only
    /// runs the pending task work), 1 when the poll ran out (sleep as usual).
    fn poll_before_sleep(&mut self) -> usize {
        let ring = &mut self.sq.ring;
        if !ring.completion().is_empty() || ring.submission().taskrun() {
            return 0;
        }
        if !ring.submission().is_empty() {
            match ring.submit() {
                Ok(_) => {}
                // EBUSY (CQ overflow) and EINTR: the waiting enter below sorts them out.
                Err(_) => return 1,
            }
        }
        let start = Instant::now();
        loop {
            for _ in 0..BUSY_POLL_SPINS {
                if !ring.completion().is_empty() || ring.submission().taskrun() {
                    return 0;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= self.config.busy_poll {
                return 1;
            }
        }
    }

    /// Take up to MAX_CQES_PER_PASS completions off the ring (stamping `now` first) and
    /// handle each.
    fn reap(&mut self) {
        self.now = Instant::now();
        self.cqes.clear();
        for cqe in self.sq.ring.completion().take(MAX_CQES_PER_PASS) {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        for i in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[i];
            self.complete(ud, res, flags);
        }
        if std::mem::take(&mut self.drain_pending) {
            self.begin_drain();
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(tok) = self.sq.tokens.get(ud) else {
            // Every submission has a token, so this is a driver bug; say so once, go on.
            if !self.warned_unknown {
                eprintln!("ringd: internal: completion for unknown user_data {ud:#x} ignored");
                self.warned_unknown = true;
            }
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            self.sq.tokens.remove(ud);
        }
        match tok.op {
            Op::Tick => {
                self.tick = None;
                if res != -libc::ECANCELED {
                    self.on_tick();
                }
            }
            Op::Shutdown => {
                self.shutdown_poll = None;
                if res >= 0 {
                    // After the rest of this batch: requests whose recv completions sit later
                    // in it are read and answered first, not dropped by the drain.
                    self.drain_pending = true;
                } else if res != -libc::ECANCELED && !self.exiting {
                    self.arm_shutdown_poll();
                }
            }
            Op::Accept => self.on_accept(res, more),
            Op::Open | Op::ReadBody => self.on_job_op(tok.op, tok.conn, tok.conn_gen, res),
            Op::Cancel if tok.conn == u32::MAX => {}
            Op::Up(op, serial) => self.on_up_op(tok, op, serial, res),
            Op::CgiPoll(pipe) => self.on_cgi_poll(tok, ud, pipe),
            Op::AppWake => self.on_app_wake(res, more),
            _ => self.on_conn_op(tok, res, flags, more),
        }
    }

    fn on_tick(&mut self) {
        if self.exiting {
            return;
        }
        self.svc.set_time(SystemTime::now());
        if self.reload.apply(&mut self.reload_seen, &mut self.svc) {
            // Server numbers may mean other servers now.
            self.pool.clear();
            self.needs_peer = self.peer_needed();
        }
        self.pool.sweep_upstreams(self.now, self.svc.upstreams());
        self.log.flush(self.svc.access_log());
        self.sweep();
        self.procs.reap(self.now);
        let _ = self.trim.tick(self.conns.len());
        if let Some(deadline) = self.draining {
            if self.now >= deadline {
                self.close_all();
            }
        }
        self.maybe_arm_accept();
        self.arm_tick();
    }

    fn arm_tick(&mut self) {
        if self.tick.is_some() {
            return;
        }
        let entry = opcode::Timeout::new(&*self.tick_ts).build();
        // SAFETY: the timespec is boxed in the driver and outlives the ring's use of it (the
        // kernel copies it at submission; the box lives until the driver is dropped).
        self.tick = Some(unsafe { self.sq.push(entry, Token::global(Op::Tick)) });
    }

    fn arm_shutdown_poll(&mut self) {
        let entry =
            opcode::PollAdd::new(types::Fd(self.shutdown_fd.as_raw_fd()), libc::POLLIN as u32)
                .build();
        // SAFETY: no buffer; the eventfd is owned by the driver, which outlives the op.
        self.shutdown_poll = Some(unsafe { self.sq.push(entry, Token::global(Op::Shutdown)) });
    }

    /// Arm the multishot accept unless shutting down, at the connection limit, already armed,
    /// or paused after EMFILE.
    fn maybe_arm_accept(&mut self) {
        if self.draining.is_some() {
            return;
        }
        while self.conns.len() < self.config.limits.max_conns_per_worker {
            let Some(fd) = self.parked.pop_front() else {
                break;
            };
            self.add_conn(fd);
        }
        if self.accept.is_some() {
            return;
        }
        if self.conns.len() >= self.config.limits.max_conns_per_worker {
            return;
        }
        if let Some(at) = self.accept_retry_at {
            if self.now < at {
                return;
            }
            self.accept_retry_at = None;
        }
        let Some(listener) = &self.listener else {
            return;
        };
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build();
        // SAFETY: no buffer (no peer address is requested); the listener is dropped only
        // once this op has completed (`accept` is None).
        self.accept = Some(unsafe { self.sq.push(entry, Token::global(Op::Accept)) });
        self.accept_cancel = false;
    }

    fn cancel_accept(&mut self) {
        if let (Some(ud), false) = (self.accept, self.accept_cancel) {
            // SAFETY: AsyncCancel carries no buffer; `ud` names the live accept token.
            unsafe {
                self.sq.push(
                    opcode::AsyncCancel::new(ud).build(),
                    Token::global(Op::Cancel),
                )
            };
            self.accept_cancel = true;
        }
    }

    fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept = None;
            self.accept_cancel = false;
        }
        if res >= 0 {
            // SAFETY: a successful accept completion hands us a new fd nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if self.draining.is_some() {
                // Accepted before the cancel took effect: its client may have sent a
                // request already. Answer it (with `Connection: close`) rather than reset it.
                if self.conns.len() < self.config.limits.max_conns_per_worker {
                    self.add_conn(fd);
                }
            } else if self.conns.len() >= self.config.limits.max_conns_per_worker {
                // Accepted by the multishot before our cancel took effect: park it unread
                // (as if still in the backlog) until a connection closes.
                self.parked.push_back(fd);
            } else {
                self.add_conn(fd);
            }
        } else {
            match -res {
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    if !self.emfile_logged {
                        eprintln!(
                            "ringd: accept failed: {} (still serving open connections; \
                             raise the fd limit or --max-conns)",
                            std::io::Error::from_raw_os_error(-res)
                        );
                        self.emfile_logged = true;
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                    self.accept_fd_short = matches!(-res, libc::EMFILE | libc::ENFILE);
                    self.cancel_accept();
                }
                // Ours, or the peer left before we took it: keep accepting.
                libc::ECANCELED | libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {}
                // Anything else (EPERM from a firewall hook, EPROTO…): keep serving, retry
                // after a pause so a persistent error cannot spin the loop.
                e => {
                    if !self.accept_err_logged {
                        eprintln!(
                            "ringd: accept failed: {} (retrying)",
                            std::io::Error::from_raw_os_error(e)
                        );
                        self.accept_err_logged = true;
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                    self.cancel_accept();
                }
            }
        }
        if self.conns.len() >= self.config.limits.max_conns_per_worker {
            self.cancel_accept();
        }
        if self.draining.is_some() {
            if self.accept.is_none() {
                self.close_listener();
            }
        } else {
            self.maybe_arm_accept();
        }
    }

    /// Graceful shutdown requested: stop accepting, let every session finish.
    fn begin_drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(self.now + self.config.timeouts.shutdown);
        self.cancel_accept();
        self.shutdown_sessions(self.now);
        if self.accept.is_none() {
            self.close_listener();
        }
        self.parked.clear();
    }

    /// Draining, and no accept op is in flight on the listener: close it. Connections the
    /// kernel completed but nobody accepted yet would be reset then, under requests their
    /// clients may have sent already: take them in first (up to the connection limit), each
    /// to answer one request with `Connection: close` (`add_conn` starts them draining).
    fn close_listener(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        if l.set_nonblocking(true).is_err() {
            return;
        }
        let mut taken = Vec::new();
        while self.conns.len() + taken.len() < self.config.limits.max_conns_per_worker {
            match l.accept() {
                // As the multishot accept's SOCK_NONBLOCK would have made it.
                Ok((s, _)) if s.set_nonblocking(true).is_ok() => taken.push(OwnedFd::from(s)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        drop(l);
        for fd in taken {
            self.add_conn(fd);
        }
    }

    /// After the loop: flush the log, cancel the timer and shutdown poll, and wait (bounded)
    /// for every op to complete so no buffer is freed under the kernel. If some op does not
    /// complete, the buffers and connections are leaked instead (the process is exiting).
    fn finish(mut self) {
        self.log.flush(self.svc.access_log());
        // Nothing new from here on: no accept, no tick re-arming, sessions closed.
        self.draining.get_or_insert(self.now);
        self.exiting = true;
        self.close_all();
        let app_poll = self.apps.as_ref().and_then(|a| a.armed());
        for ud in [self.tick, self.shutdown_poll, self.accept, app_poll]
            .into_iter()
            .flatten()
        {
            // SAFETY: AsyncCancel carries no buffer; `ud` names a live token.
            unsafe {
                self.sq.push(
                    opcode::AsyncCancel::new(ud).build(),
                    Token::global(Op::Cancel),
                )
            };
        }
        let until = Instant::now() + EXIT_DRAIN;
        let wait = types::Timespec::from(Duration::from_millis(50));
        while self.sq.tokens.live() > 0 && Instant::now() < until {
            if self.sq.flush_backlog().is_err() {
                break;
            }
            let args = types::SubmitArgs::new().timespec(&wait);
            match self.sq.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(_) => break,
            }
            self.reap();
        }
        if self.sq.tokens.live() > 0 {
            eprintln!(
                "ringd: {} io_uring operation(s) still in flight at exit; leaking their buffers",
                self.sq.tokens.live()
            );
            // Some op still references our memory: never free it under the kernel.
            std::mem::forget(self);
            return;
        }
        self.bufs.unregister(&self.sq.ring);
    }
}

//! The seam between the drivers and the HTTP core: `Service` (one per worker) and `Session`
//! (one per connection). Sans-IO: no sockets, no clock reads; time comes in as `now`.
//!
//! # The driver's loop, for every backend
//! ```text
//! accept        → Session::new(peer, now)
//! bytes arrive  → session.feed(&mut svc, bytes, now)        (copy; the slice may be reused)
//! peer EOF      → session.feed_eof(now)
//! then, until next_output() is None:
//!     match session.next_output() {
//!         Output::Bytes(b)            → send b (any prefix may go)      → session.consume(&mut svc, n, now)
//!         Output::File{fd,offset,len} → splice/sendfile from fd at offset → session.consume(&mut svc, n, now)
//!     }
//! session.should_close()  → close the socket (after output is drained)
//! session.wants_read()    → false: stop reading until it turns true again (backpressure)
//! session.deadline()      → close the connection when `now >= deadline`
//! shutdown requested      → session.start_shutdown(); close those for which should_close() holds
//! ```
//!
//! With asynchronous opening (`svc.files().set_async_open(true)`, the uring driver), a request
//! whose file must be opened or revalidated is not answered: `session.parked()` names its URL
//! path and nothing behind it is parsed (a request with a body parks once its body is read).
//! The driver runs the open job (`Files::take_wanted`, `open_plan`, `opened`, `finish`), then
//! calls `session.resume(&mut svc, now)`.
//!
//! # Buffer contract (what makes io_uring sends sound)
//! The memory behind `Output::Bytes` and the fd behind `Output::File` stay valid, at the same
//! address and unchanged, until `consume` has covered them or the `Session` is dropped,
//! whatever else is called on the session meanwhile (`feed` included). Moving the `Session`
//! value itself does not move that memory (it lives on the heap).

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::handler::{Files, Reply, Roots};
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::framing::{BodyReader, Framing};
use crate::proto::head::{self, ConnHeader, DATE_LEN, LOG_DATE_LEN};
use crate::proto::log;
use crate::proto::parse::{self, Parsed, Request};
use crate::proto::ProtoError;
use crate::router::{self, Router};

/// Per-worker HTTP state: config, compiled routes, roots and open-file cache, cached Date,
/// access log.
pub struct Service {
    config: Config,
    router: Router,
    files: Files,
    knobs: Knobs,
    pool: BufPool,
    secs: Option<u64>,
    date: [u8; DATE_LEN],
    log_date: [u8; LOG_DATE_LEN],
    log_on: bool,
    log: Vec<u8>,
}

impl Service {
    /// `roots` are `O_PATH | O_DIRECTORY` fds of `config.sites.roots`, in order (opened by
    /// the worker).
    pub fn new(config: &Config, roots: Roots) -> Service {
        let knobs = Knobs::from(config);
        THREAD_KNOBS.with(|k| k.set(Some(knobs)));
        let mut svc = Service {
            config: config.clone(),
            router: Router::new(config.sites.clone()),
            files: Files::new(config, roots),
            knobs,
            pool: BufPool::default(),
            secs: None,
            date: [0; DATE_LEN],
            log_date: [0; LOG_DATE_LEN],
            log_on: config.access_log.is_some(),
            log: Vec::new(),
        };
        svc.set_time(SystemTime::UNIX_EPOCH);
        svc
    }

    /// Tell the service the wall-clock time; call at least once a second (refreshes the cached
    /// Date header and access-log timestamp).
    /// The static-file handler (the uring driver runs its open jobs).
    pub fn files(&mut self) -> &mut Files {
        &mut self.files
    }

    pub fn set_time(&mut self, wall: SystemTime) {
        let secs = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.secs != Some(secs) {
            self.secs = Some(secs);
            head::fmt_http_date(secs, &mut self.date);
            head::fmt_log_date(secs, &mut self.log_date);
        }
    }

    /// Access-log bytes waiting to be written (combined format, one line per response).
    /// The driver writes them to the log file when it likes (at least once a second) and clears
    /// the buffer. Always empty when the access log is off.
    pub fn access_log(&mut self) -> &mut Vec<u8> {
        &mut self.log
    }

    /// The configuration this service runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A reload (SIGHUP): answer every request parsed from now on with `config` and its
    /// `roots`. Called by the driver between loop passes, where no request is half-answered;
    /// keep-alive connections carry on. Settings that need a restart (listen address,
    /// workers, backend, access log, pipe pool) are read once at start and stay as they were.
    pub fn reload(&mut self, config: &Config, roots: Roots) {
        let mut config = config.clone();
        config.listen = self.config.listen;
        config.workers = self.config.workers;
        config.backend = self.config.backend;
        config.pipe_pool = self.config.pipe_pool;
        config.pipe_size = self.config.pipe_size;
        config.access_log = self.config.access_log.clone();
        self.knobs = Knobs::from(&config);
        THREAD_KNOBS.with(|k| k.set(Some(self.knobs)));
        self.router = Router::new(config.sites.clone());
        self.files.reload(&config, roots);
        self.log_on = config.access_log.is_some();
        self.config = config;
    }
}

/// The config values a session needs without a `Service` at hand (`deadline`, `wants_read`).
#[derive(Clone, Copy, Debug)]
struct Knobs {
    header_read: Duration,
    keepalive: Duration,
    send_stall: Duration,
    depth: usize,
    /// Unparsed input above this (while blocked) stops reading.
    max_unparsed: usize,
    max_body: u64,
    max_trailer: usize,
}

impl From<&Config> for Knobs {
    fn from(c: &Config) -> Knobs {
        Knobs {
            header_read: c.timeouts.header_read,
            keepalive: c.timeouts.keepalive,
            send_stall: c.timeouts.send_stall,
            depth: c.limits.max_pipeline_depth.max(1),
            max_unparsed: c.limits.max_request_line + c.limits.max_header_bytes + 4,
            max_body: c.limits.max_body,
            max_trailer: c.limits.max_header_bytes,
        }
    }
}

thread_local! {
    /// The knobs of the last `Service` created on this thread (the worker's), so that
    /// `Session::new`, which is given no `Service`, starts with the configured header
    /// timeout. Every `feed`/`consume` refreshes the session's copy from its `Service`.
    static THREAD_KNOBS: Cell<Option<Knobs>> = const { Cell::new(None) };
}

/// One piece of output to write to the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Bytes to send. A driver may send any prefix and report it with `consume`.
    Bytes(&'a [u8]),
    /// `len` bytes of the file `fd` starting at `offset` (splice or sendfile).
    File { fd: RawFd, offset: u64, len: u64 },
}

/// One HTTP/1.1 connection: request parsing, pipelining, keep-alive, timeouts, responses.
pub struct Session {
    peer: SocketAddr,
    knobs: Knobs,
    /// Received bytes; `inp[in_pos..]` is not yet answered.
    inp: Vec<u8>,
    in_pos: usize,
    out: OutQueue,
    /// Discarding the body of the request whose head sits at `in_pos` (its length first).
    body: Option<(usize, BodyReader)>,
    /// Answer nothing more (an error, or `Connection: close`, was answered).
    closing: bool,
    /// The request at `in_pos` waits for the driver to open this URL path (asynchronous
    /// opening); nothing more is parsed until [`Session::resume`].
    parked: Option<Box<[u8]>>,
    eof: bool,
    shutdown: bool,
    /// When the request being received began (accept, or its first byte); None when idle.
    req_start: Option<Instant>,
    /// When the output queue last became empty.
    idle_since: Instant,
    /// Last time output was queued onto an empty queue or `consume` made progress.
    progress_at: Instant,
}

impl Session {
    /// `peer` only feeds the access log; a driver may pass `0.0.0.0:0` when the log is off.
    pub fn new(peer: SocketAddr, now: Instant) -> Session {
        let knobs = THREAD_KNOBS
            .with(Cell::get)
            .unwrap_or_else(|| Knobs::from(&Config::default()));
        Session {
            peer,
            knobs,
            inp: Vec::new(),
            in_pos: 0,
            out: OutQueue::default(),
            body: None,
            closing: false,
            parked: None,
            eof: false,
            shutdown: false,
            req_start: Some(now),
            idle_since: now,
            progress_at: now,
        }
    }

    /// Bytes received from the peer. Parses and answers as many complete requests as the
    /// pipeline limit allows; responses are queued as output.
    pub fn feed(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        self.knobs = svc.knobs;
        if data.is_empty() || self.closing || self.eof || self.shutdown {
            return;
        }
        if self.inp.capacity() == 0 {
            self.inp = svc.pool.take();
        } else if self.in_pos > 0 {
            self.inp.drain(..self.in_pos);
            self.in_pos = 0;
        }
        if self.req_start.is_none() {
            self.req_start = Some(now);
        }
        self.inp.extend_from_slice(data);
        if self.parked.is_none() {
            self.process(svc, now);
        }
    }

    /// The URL path this session's next request waits on, when it is parked.
    pub fn parked(&self) -> Option<&[u8]> {
        self.parked.as_deref()
    }

    /// The open job this session was parked on is finished: answer on.
    pub fn resume(&mut self, svc: &mut Service, now: Instant) {
        self.knobs = svc.knobs;
        if self.parked.take().is_some() {
            self.process(svc, now);
        }
    }

    /// The peer closed its sending side (recv returned 0): answer what is complete, then close.
    pub fn feed_eof(&mut self, now: Instant) {
        let _ = now;
        self.eof = true;
    }

    /// The next piece of output, or None when nothing is queued. Calling it again without
    /// `consume` returns the same piece.
    pub fn next_output(&mut self) -> Option<Output<'_>> {
        self.out.peek()
    }

    /// `n` bytes of the piece last returned by `next_output` were written. May answer further
    /// pipelined requests that were waiting, so call `next_output` again afterwards.
    pub fn consume(&mut self, svc: &mut Service, n: usize, now: Instant) {
        self.knobs = svc.knobs;
        let was_blocked = self.out.responses() >= self.knobs.depth;
        let done = self.out.consume(n, &mut svc.pool);
        if n > 0 {
            self.progress_at = now;
        }
        if self.out.is_empty() {
            self.idle_since = now;
        }
        if done > 0 && self.in_pos < self.inp.len() && self.parked.is_none() {
            if was_blocked {
                self.req_start = Some(now);
            }
            self.process(svc, now);
        }
    }

    /// True once the connection should be closed: all output written and no more to come
    /// (error, `Connection: close`, HTTP/1.0 without keep-alive, EOF, shutdown, or idle).
    pub fn should_close(&self) -> bool {
        self.out.is_empty() && self.parked.is_none() && (self.closing || self.eof || self.shutdown)
    }

    /// False while the server wants no more bytes from this peer (too much queued output,
    /// closing after an error). The driver stops reading until it turns true.
    pub fn wants_read(&self) -> bool {
        !(self.closing || self.eof || self.shutdown)
            && self.out.responses() < self.knobs.depth
            && self.inp.len() - self.in_pos <= self.knobs.max_unparsed
    }

    /// When this connection times out in its current phase (header read, keep-alive idle,
    /// send stall). The driver closes it when `now >= deadline`.
    pub fn deadline(&self) -> Option<Instant> {
        let k = &self.knobs;
        let mut d = None;
        if !self.out.is_empty() {
            d = Some(self.progress_at + k.send_stall);
        }
        if self.closing || self.eof || self.shutdown {
            return d;
        }
        let waiting = self.out.responses() < k.depth;
        let own = match self.req_start {
            Some(t) if waiting => Some(t + k.header_read),
            Some(_) => None,
            None if self.out.is_empty() => Some(self.idle_since + k.keepalive),
            None => None,
        };
        match (d, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Graceful shutdown: answer nothing new; finish what is in flight, then `should_close`.
    pub fn start_shutdown(&mut self) {
        if self.shutdown {
            return;
        }
        self.shutdown = true;
        self.in_pos = self.inp.len();
        self.parked = None;
        self.body = None;
        // Tell the peer on the last queued response, if it has not been handed out yet.
        if !self.closing {
            self.out.close_last();
        }
    }

    /// Answers complete requests from the input until it runs dry, the pipeline is full, or
    /// the connection stops answering.
    fn process(&mut self, svc: &mut Service, now: Instant) {
        loop {
            if self.closing || self.shutdown || self.out.responses() >= self.knobs.depth {
                break;
            }
            if let Some((head_len, reader)) = &mut self.body {
                let start = self.in_pos + *head_len;
                match reader.feed(&self.inp[start..]) {
                    Ok(n) => {
                        self.inp.drain(start..start + n);
                        if n > 0 {
                            self.req_start = Some(now);
                        }
                        if !reader.done() {
                            break;
                        }
                    }
                    Err(e) => {
                        self.fail(svc, e, now);
                        break;
                    }
                }
            } else {
                self.in_pos += parse::leading_empty_lines(&self.inp[self.in_pos..]);
            }
            if self.in_pos == self.inp.len() {
                break;
            }
            let parsed = parse::parse(&self.inp[self.in_pos..], &svc.config.limits);
            let req = match parsed {
                Ok(Parsed::Partial) => break,
                Ok(Parsed::Complete(req)) => req,
                Err(e) => {
                    self.fail(svc, e, now);
                    break;
                }
            };
            let head_len = req.head_len;
            // `Expect: 100-continue` with a body: the client may be waiting for a 100 before it
            // sends the body. No response of a static-file server depends on the body, so the
            // final status goes out at once without reading it (RFC 9110 §10.1.1 allows a final
            // status instead of 100), and the connection closes after it (`Connection: close`):
            // whether the client then sends the body or not, its framing on the wire is
            // ambiguous, so nothing after it can be trusted. The limits come first: a body over
            // `max_body` is still a 413.
            let mut skip_body = false;
            if req.framing != Framing::None && self.body.is_none() {
                match BodyReader::new(req.framing, self.knobs.max_body, self.knobs.max_trailer) {
                    Ok(_) if req.expect_continue => skip_body = true,
                    Ok(r) => {
                        self.body = Some((head_len, r));
                        continue;
                    }
                    Err(e) => {
                        self.fail(svc, e, now);
                        break;
                    }
                }
            }
            // A request may wait for its files (park), also one whose body was read: its head
            // is still at `in_pos` and `self.body` stays set (done), so on `resume` the head is
            // parsed again and the body neither expected nor read a second time.
            let keep = match answer(svc, &mut self.out, self.peer, &req, skip_body, now) {
                Ok(keep) => keep,
                Err(key) => {
                    self.parked = Some(key);
                    break;
                }
            };
            if self.out.responses() == 1 {
                self.progress_at = now;
            }
            self.body = None;
            self.in_pos += head_len;
            if skip_body {
                // Whatever arrived after the head (body or not) is never parsed.
                self.in_pos = self.inp.len();
            }
            self.closing |= !keep;
            self.req_start = (self.in_pos < self.inp.len()).then_some(now);
        }
        if self.in_pos == self.inp.len() && self.body.is_none() && self.inp.capacity() > 0 {
            svc.pool.give(std::mem::take(&mut self.inp));
            self.in_pos = 0;
        }
    }

    /// Answers a protocol error with its status and `Connection: close`; nothing after it on
    /// this connection is answered. The answer to a request whose method token is `HEAD` has
    /// no body (RFC 9110 §9.3.2), even when the rest of the request was malformed.
    fn fail(&mut self, svc: &mut Service, e: ProtoError, now: Instant) {
        let status = e.status();
        // The failed request's head starts at `in_pos` (a body error leaves it there too).
        let head_only = parse::is_head(&self.inp[self.in_pos..]);
        let buf = self.out.bytes(&mut svc.pool);
        let (body_bytes, _) = head::simple(
            buf,
            status,
            &svc.date,
            &svc.config.server_name,
            b"",
            ConnHeader::Close,
            head_only,
        );
        self.out.end_response();
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
        if svc.log_on {
            let entry = log::Entry {
                peer: self.peer.ip(),
                date: &svc.log_date,
                request: None,
                status,
                body_bytes,
                referer: None,
                user_agent: None,
                site: None,
            };
            log::write(&mut svc.log, &entry);
        }
        self.closing = true;
        self.body = None;
        self.in_pos = self.inp.len();
    }
}

/// Answers one complete request (with `Connection: close` when `close`, or when the request
/// asks for it); returns whether the connection stays open after it, or the key of the open
/// job it waits on (nothing queued).
fn answer(
    svc: &mut Service,
    out: &mut OutQueue,
    peer: SocketAddr,
    req: &Request<'_>,
    close: bool,
    now: Instant,
) -> Result<bool, Box<[u8]>> {
    let conn = if close || !req.keep_alive {
        ConnHeader::Close
    } else if req.keep_alive_10 {
        ConnHeader::KeepAlive
    } else {
        ConnHeader::None
    };
    let mut reply = Reply {
        out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn,
        edit: None,
    };
    let a = svc
        .router
        .answer(&mut svc.files, req, &mut reply, now)
        .map_err(|router::Park(key)| key)?;
    if svc.log_on {
        let sites = svc.router.sites();
        let host = req.fields.host.and_then(|h| std::str::from_utf8(h).ok());
        let site = (!sites.implicit).then(|| {
            let s = sites.sites.get(usize::from(a.site));
            // The Host asked for (the site's first name when there was none).
            let name = host.or(s.map(|s| s.name.as_str())).unwrap_or("-");
            let route = s
                .and_then(|s| s.routes.get(usize::from(a.route)))
                .map_or("-", |r| r.label.as_str());
            (name, route)
        });
        let entry = log::Entry {
            peer: peer.ip(),
            date: &svc.log_date,
            request: Some((req.method_str, req.target, req.minor)),
            status: a.sent.status,
            body_bytes: a.sent.body_bytes,
            referer: req.fields.referer,
            user_agent: req.fields.user_agent,
            site,
        };
        log::write(&mut svc.log, &entry);
    }
    Ok(conn != ConnHeader::Close)
}

#[cfg(test)]
#[path = "proto/session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "proto/session_error_tests.rs"]
mod error_tests;

#[cfg(test)]
#[path = "proto/session_park_tests.rs"]
mod park_tests;

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
use crate::gateway::proxy::{self, Exchange, Failure};
use crate::gateway::Upstreams;
use crate::handler::{Files, Reply, Roots, Sent};
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::framing::{BodyReader, Framing};
use crate::proto::head::{self, ConnHeader, DATE_LEN, LOG_DATE_LEN};
use crate::proto::log;
use crate::proto::parse::{self, Parsed, Request};
use crate::proto::ProtoError;
use crate::router::{Router, Wait};

/// Per-worker HTTP state: config, compiled routes, roots and open-file cache, cached Date,
/// access log.
pub struct Service {
    config: Config,
    router: Router,
    files: Files,
    /// Upstream groups' balancing and health state, this worker's own.
    upstreams: Upstreams,
    /// Cached proxied and CGI responses, this worker's own.
    cache: crate::cache::Cache,
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
            upstreams: Upstreams::new(&config.sites.upstreams, seed()),
            cache: crate::cache::Cache::new(
                config.sites.cache_max_bytes,
                config.sites.cache_max_entry,
            ),
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

    /// The upstream groups and their state (the driver's pools read their settings).
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The response cache (hit ratio and bytes: `hits`, `misses`, `bytes()`).
    pub fn cache(&self) -> &crate::cache::Cache {
        &self.cache
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
        self.upstreams = Upstreams::new(&config.sites.upstreams, seed());
        self.cache =
            crate::cache::Cache::new(config.sites.cache_max_bytes, config.sites.cache_max_entry);
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
    /// The listener runs TLS: a new connection's first bytes pick TLS or plain HTTP.
    tls: bool,
    /// Some site has `redirect_http`: plain requests are checked for it.
    redirect_http: bool,
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
            tls: c.tls.is_some(),
            redirect_http: c.sites.sites.iter().any(|s| s.redirect_http),
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
    /// The proxied request in flight, if any: nothing behind it is parsed until it is done.
    gw: Option<Box<Gw>>,
    /// The body of the request being read, kept for a proxy to forward.
    body_data: Vec<u8>,
    /// A `100 Continue` went out for the request at `in_pos` (its body is being read).
    continued: bool,
    /// When the request being received began (accept, or its first byte); None when idle.
    req_start: Option<Instant>,
    /// When the output queue last became empty.
    idle_since: Instant,
    /// Last time output was queued onto an empty queue or `consume` made progress.
    progress_at: Instant,
    /// TLS listener, nothing received yet: the first bytes pick TLS or plain HTTP.
    sniff: bool,
    /// The TLS record layer, on a TLS connection (`tls/session_tls.rs`).
    tls: Option<Box<tls_io::TlsConn>>,
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
            gw: None,
            body_data: Vec::new(),
            continued: false,
            eof: false,
            shutdown: false,
            req_start: Some(now),
            idle_since: now,
            progress_at: now,
            sniff: knobs.tls,
            tls: None,
        }
    }

    /// Bytes received from the peer. Parses and answers as many complete requests as the
    /// pipeline limit allows; responses are queued as output.
    pub fn feed(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        self.knobs = svc.knobs;
        if self.sniff || self.tls.is_some() {
            return self.feed_tls(svc, data, now);
        }
        self.feed_plain(svc, data, now);
    }

    fn feed_plain(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
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
        if self.tls.is_some() {
            return self.next_output_tls();
        }
        self.out.peek()
    }

    /// `n` bytes of the piece last returned by `next_output` were written. May answer further
    /// pipelined requests that were waiting, so call `next_output` again afterwards.
    pub fn consume(&mut self, svc: &mut Service, n: usize, now: Instant) {
        self.knobs = svc.knobs;
        if self.tls.is_some() {
            return self.consume_tls(svc, n, now);
        }
        self.consume_plain(svc, n, now);
    }

    fn consume_plain(&mut self, svc: &mut Service, n: usize, now: Instant) {
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
        if let Some(t) = &self.tls {
            if !t.drained() {
                return false;
            }
            if t.failed {
                return true;
            }
        }
        self.out.is_empty()
            && self.parked.is_none()
            && self.gw.is_none()
            && (self.closing || self.eof || self.shutdown)
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
        if let Some(t) = self.gw.as_ref().and_then(|g| g.x.deadline) {
            d = Some(d.map_or(t, |d| d.min(t)));
        }
        if self.closing || self.eof || self.shutdown || self.gw.is_some() {
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
        if let Some(g) = &mut self.gw {
            if !g.x.responded {
                g.x.conn = ConnHeader::Close;
            }
        }
        // Tell the peer on the last queued response, if it has not been handed out yet.
        if !self.closing {
            self.out.close_last();
        }
    }

    /// The proxied request in flight (the driver connects, sends and reads for it).
    pub fn gateway(&mut self) -> Option<&mut Exchange> {
        self.gw.as_mut().map(|g| &mut g.x)
    }

    /// Whether the driver should read from the upstream now (the client keeps up).
    pub fn gw_wants_read(&self) -> bool {
        self.gw
            .as_ref()
            .is_some_and(|g| g.x.wants_read(self.out.queued_bytes()))
    }

    fn gw_ctx(svc: &mut Service) -> proxy::Ctx<'_> {
        proxy::Ctx {
            pool: &mut svc.pool,
            date: &svc.date,
            server: &svc.config.server_name,
        }
    }

    /// Bytes from the upstream.
    pub fn gw_feed(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        let before = self.out.is_empty();
        let res = g.x.feed(data, &mut self.out, &mut ctx, now);
        if before && !self.out.is_empty() {
            self.progress_at = now;
        }
        if let Err(f) = res {
            self.gw_error(svc, f, now);
        }
    }

    /// The upstream closed its side.
    pub fn gw_eof(&mut self, svc: &mut Service, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        if let Err(f) = g.x.eof(&mut self.out, &mut ctx) {
            self.gw_error(svc, f, now);
        }
    }

    /// The upstream connection failed (`Failure::Connect`: refused, reset, closed before any
    /// response byte; `Timeout`; `Bad`; `Cut`). Retries on another server where the retry rule
    /// allows; otherwise answers 502/503/504, or cuts a response already begun.
    pub fn gw_error(&mut self, svc: &mut Service, f: Failure, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        if g.x.finished().is_some() {
            return;
        }
        let group = g.x.start.group;
        if f == Failure::Connect && g.x.retry_stale(now) {
            // Not the server's fault: an idle pooled connection it had closed.
            return;
        }
        if let Some(s) = g.x.server {
            svc.upstreams.done(group, s, false, now);
        }
        if matches!(f, Failure::Connect | Failure::Timeout) && g.x.may_retry() {
            let key = g.x.start.key;
            let tried = g.x.tried.clone();
            if let Some(s) = svc.upstreams.pick(group, key, &tried, now) {
                g.x.retry(s, now);
                return;
            }
        }
        // Counted as failed above: release leaves the balancer alone.
        g.x.server = None;
        // stale-if-error: a stale cached copy answers instead of the error page.
        if !g.x.responded {
            if let Some(ci) = &g.x.start.cache {
                let head = &ci.req_head;
                if let Some(e) = svc.cache.get(&ci.key, &|n| field_value(head, n)) {
                    if e.usable_on_error(now) {
                        let (status, n) = crate::cache::render(
                            e,
                            "STALE",
                            now,
                            g.x.start.head_request,
                            g.x.conn,
                            &mut self.out,
                            &mut svc.pool,
                        );
                        g.x.answered(status, n);
                        return;
                    }
                }
            }
        }
        let mut ctx = Self::gw_ctx(svc);
        g.x.fail(f, &mut self.out, &mut ctx);
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
    }

    /// A deadline passed (`deadline()`): a proxied request's connect or read timeout turns
    /// into 504 and the connection lives on (returns false); otherwise the connection is to
    /// be closed (returns true).
    pub fn expire(&mut self, svc: &mut Service, now: Instant) -> bool {
        let gw_due = self
            .gw
            .as_ref()
            .and_then(|g| g.x.deadline)
            .is_some_and(|t| now >= t);
        if gw_due {
            self.gw_error(svc, Failure::Timeout, now);
            return false;
        }
        true
    }

    /// No CGI process may start now (the worker's limit): 503.
    pub fn gw_busy(&mut self, svc: &mut Service, now: Instant) {
        let Some(g) = self.gw.as_mut() else { return };
        let mut ctx = Self::gw_ctx(svc);
        g.x.unavailable(&mut self.out, &mut ctx);
        if self.out.responses() == 1 {
            self.progress_at = now;
        }
    }

    /// The connection is closing with a proxied request still in flight (the client went
    /// away): release its server in the balancer's count.
    pub fn gw_abandon(&mut self, svc: &mut Service, now: Instant) {
        if let Some(g) = self.gw.take() {
            if let (Some(s), None) = (g.x.server, g.x.failure) {
                svc.upstreams.done(g.x.start.group, s, true, now);
            }
        }
    }

    /// The driver has pooled or closed the upstream connection of a finished exchange: log
    /// it, count it for the balancer, and go on with the requests behind it.
    pub fn gw_release(&mut self, svc: &mut Service, now: Instant) {
        let Some(mut g) = self.gw.take() else { return };
        if g.x.finished().is_none() {
            self.gw = Some(g);
            return;
        }
        if let (Some(s), None) = (g.x.server, g.x.failure) {
            svc.upstreams.done(g.x.start.group, s, true, now);
        }
        if let (Some(st), Some(ci), None) = (g.x.store.take(), &g.x.start.cache, g.x.failure) {
            let vary = st
                .vary
                .iter()
                .map(|n| (n.clone(), field_value(&ci.req_head, n)))
                .collect();
            let e = crate::cache::Entry::new(
                st.status,
                st.reason,
                st.fields,
                st.body,
                vary,
                now,
                st.fresh_for,
                ci.policy,
            );
            svc.cache.insert(ci.key.clone(), e);
        }
        if let Some(line) = &g.log {
            let up = match (
                g.x.server.or(g.x.tried.last().copied()),
                svc.upstreams.spec(g.x.start.group),
            ) {
                (Some(s), Some(spec)) => spec.servers.get(s).map(|a| a.addr.to_string()),
                _ => None,
            };
            let ms = now.saturating_duration_since(g.began).as_secs_f64() * 1000.0;
            let detail = format!(
                "upstream={} upstream_status={} upstream_ms={ms:.1}{}",
                up.as_deref().unwrap_or("-"),
                g.x.status,
                match g.x.failure {
                    Some(f) => format!(" upstream_error={f:?}"),
                    None => String::new(),
                }
            );
            let sent = Sent {
                status: g.x.status,
                body_bytes: g.x.body_bytes,
            };
            line.write(svc, self.peer, sent, Some(detail));
        }
        self.closing |= !g.keep || g.x.closes_client() || self.shutdown;
        self.req_start = (self.in_pos < self.inp.len()).then_some(now);
        if !self.closing && self.parked.is_none() {
            self.process(svc, now);
        }
    }

    /// Answers complete requests from the input until it runs dry, the pipeline is full, or
    /// the connection stops answering.
    fn process(&mut self, svc: &mut Service, now: Instant) {
        loop {
            if self.closing
                || self.shutdown
                || self.gw.is_some()
                || self.out.responses() >= self.knobs.depth
            {
                break;
            }
            if let Some((head_len, reader)) = &mut self.body {
                let start = self.in_pos + *head_len;
                match reader.feed_into(&self.inp[start..], Some(&mut self.body_data)) {
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
                    Ok(_) if req.expect_continue && !self.continued => skip_body = true,
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
            let to_https = if self.knobs.redirect_http && self.tls.is_none() {
                tls_io::redirect_http(svc, &mut self.out, self.peer, &req, skip_body)
            } else {
                None
            };
            let answered = match to_https {
                Some(keep) => Ok(keep),
                None => answer(svc, &mut self.out, self.peer, &req, skip_body, now),
            };
            let keep = match answered {
                Ok(keep) => keep,
                Err(Wait::Park(key)) => {
                    self.parked = Some(key);
                    break;
                }
                Err(Wait::Proxy(..) | Wait::Cgi(..)) if skip_body => {
                    // `Expect: 100-continue` on a proxied request: the upstream needs the
                    // body, so ask the client for it (an interim response, not counted as
                    // one), read it, then route the request again.
                    self.out
                        .bytes(&mut svc.pool)
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.continued = true;
                    match BodyReader::new(req.framing, self.knobs.max_body, self.knobs.max_trailer)
                    {
                        Ok(r) => self.body = Some((head_len, r)),
                        Err(e) => {
                            self.fail(svc, e, now);
                            break;
                        }
                    }
                    continue;
                }
                Err(Wait::Cgi(both, site, route)) => {
                    self.continued = false;
                    let (start, mut spawn) = *both;
                    if !self.body_data.is_empty() {
                        let n = self.body_data.len().to_string().into_bytes();
                        spawn.env.push(("CONTENT_LENGTH".into(), n));
                    }
                    let conn = conn_header(&req, skip_body);
                    let mut x = Exchange::new_cgi(start, spawn, &self.body_data, conn);
                    x.set_max_entry(svc.cache.max_entry);
                    x.server = None;
                    let log = svc.log_on.then(|| LogLine::new(&req, site, route));
                    self.gw = Some(Box::new(Gw {
                        x,
                        keep: conn != ConnHeader::Close,
                        began: now,
                        log,
                    }));
                    self.body = None;
                    self.body_data.clear();
                    self.in_pos += req.head_len;
                    break;
                }
                Err(Wait::Proxy(start, site, route)) => {
                    self.continued = false;
                    let at = (site, route);
                    let g = new_gateway(
                        svc,
                        &mut self.out,
                        &self.body_data,
                        &req,
                        *start,
                        at,
                        skip_body,
                        now,
                    );
                    if self.out.responses() == 1 {
                        self.progress_at = now;
                    }
                    self.gw = Some(g);
                    self.body = None;
                    self.body_data.clear();
                    self.in_pos += req.head_len;
                    if skip_body {
                        self.in_pos = self.inp.len();
                    }
                    break;
                }
            };
            self.body_data.clear();
            self.continued = false;
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

/// The Connection header a response to `req` carries.
fn conn_header(req: &Request<'_>, close: bool) -> ConnHeader {
    if close || !req.keep_alive {
        ConnHeader::Close
    } else if req.keep_alive_10 {
        ConnHeader::KeepAlive
    } else {
        ConnHeader::None
    }
}

/// Answers one complete request (with `Connection: close` when `close`, or when the request
/// asks for it); returns whether the connection stays open after it, or what it waits on
/// (an open job, an upstream), with nothing queued.
fn answer(
    svc: &mut Service,
    out: &mut OutQueue,
    peer: SocketAddr,
    req: &Request<'_>,
    close: bool,
    now: Instant,
) -> Result<bool, Wait> {
    let conn = conn_header(req, close);
    let mut reply = Reply {
        out: &mut *out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn,
        edit: None,
    };
    let res = svc
        .router
        .answer(&mut svc.files, req, peer, &mut reply, now);
    drop(reply);
    let a = match res {
        Ok(a) => a,
        Err(Wait::Proxy(start, site, route)) => match cache_hit(svc, out, &start, req, conn, now) {
            Some(sent) => crate::router::Answered { sent, site, route },
            None => return Err(Wait::Proxy(start, site, route)),
        },
        Err(Wait::Cgi(both, site, route)) => match cache_hit(svc, out, &both.0, req, conn, now) {
            Some(sent) => crate::router::Answered { sent, site, route },
            None => return Err(Wait::Cgi(both, site, route)),
        },
        Err(w) => return Err(w),
    };
    if svc.log_on {
        let line = LogLine::new(req, a.site, a.route);
        line.write(svc, peer, a.sent, None);
    }
    Ok(conn != ConnHeader::Close)
}

/// A fresh cached response for a proxied or CGI request on a caching route, rendered into
/// `out` (`X-Cache: HIT`); None when there is none.
fn cache_hit(
    svc: &mut Service,
    out: &mut OutQueue,
    start: &proxy::Start,
    req: &Request<'_>,
    conn: ConnHeader,
    now: Instant,
) -> Option<Sent> {
    let ci = start.cache.as_ref()?;
    let raw = req.raw;
    let hit = match svc.cache.get(&ci.key, &|n| field_value(raw, n)) {
        Some(e) if e.fresh(now) => e,
        _ => {
            svc.cache.misses += 1;
            return None;
        }
    };
    let (status, n) = crate::cache::render(
        hit,
        "HIT",
        now,
        start.head_request,
        conn,
        out,
        &mut svc.pool,
    );
    svc.cache.hits += 1;
    Some(Sent {
        status,
        body_bytes: n,
    })
}

/// A request field's value in a raw head (repeated fields joined with ", "), by name.
fn field_value(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Request::new(&mut fields);
    let _ = r.parse(raw);
    let mut v: Option<Vec<u8>> = None;
    for f in r
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
    {
        match &mut v {
            Some(x) => {
                x.extend_from_slice(b", ");
                x.extend_from_slice(f.value);
            }
            None => v = Some(f.value.to_vec()),
        }
    }
    v
}

/// What the access log needs of a request, owned (a proxied request is logged when its
/// exchange ends, after its head has left the input buffer).
struct LogLine {
    method: String,
    target: String,
    minor: u8,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
    host: Option<String>,
    site: u16,
    route: u16,
}

impl LogLine {
    fn new(req: &Request<'_>, site: u16, route: u16) -> LogLine {
        LogLine {
            method: req.method_str.to_string(),
            target: req.target.to_string(),
            minor: req.minor,
            referer: req.fields.referer.map(<[u8]>::to_vec),
            user_agent: req.fields.user_agent.map(<[u8]>::to_vec),
            host: req
                .fields
                .host
                .and_then(|h| std::str::from_utf8(h).ok())
                .map(str::to_string),
            site,
            route,
        }
    }

    /// Appends the line; `upstream` adds the server, its status and the time taken.
    fn write(&self, svc: &mut Service, peer: SocketAddr, sent: Sent, upstream: Option<String>) {
        let sites = svc.router.sites().clone();
        let site = (!sites.implicit || upstream.is_some()).then(|| {
            let s = sites.sites.get(usize::from(self.site));
            // The Host asked for (the site's first name when there was none).
            let name = self
                .host
                .as_deref()
                .or(s.map(|s| s.name.as_str()))
                .unwrap_or("-");
            let route = s
                .and_then(|s| s.routes.get(usize::from(self.route)))
                .map_or("-", |r| r.label.as_str());
            (name, route)
        });
        let entry = log::Entry {
            peer: peer.ip(),
            date: &svc.log_date,
            request: Some((&self.method, &self.target, self.minor)),
            status: sent.status,
            body_bytes: sent.body_bytes,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
            site,
        };
        log::write(&mut svc.log, &entry);
        if let Some(u) = upstream {
            // ` upstream=ADDR status time` goes before the newline.
            svc.log.pop();
            svc.log.extend_from_slice(b" ");
            svc.log.extend_from_slice(u.as_bytes());
            svc.log.push(b'\n');
        }
    }
}

/// A proxied request in flight: its exchange, whether the client connection stays open after
/// it, when it began, and its log line.
pub struct Gw {
    pub x: Exchange,
    keep: bool,
    began: Instant,
    log: Option<LogLine>,
}

/// Starts the exchange of a proxied request: picks a server (or answers 503).
#[allow(clippy::too_many_arguments)]
fn new_gateway(
    svc: &mut Service,
    out: &mut OutQueue,
    body: &[u8],
    req: &Request<'_>,
    start: proxy::Start,
    (site, route): (u16, u16),
    close: bool,
    now: Instant,
) -> Box<Gw> {
    let conn = conn_header(req, close);
    let keep = conn != ConnHeader::Close;
    let mut x = Exchange::new(start, body, conn);
    x.set_max_entry(svc.cache.max_entry);
    let (group, key) = (x.start.group, x.start.key);
    match svc.upstreams.pick(group, key, &[], now) {
        Some(s) => x.retry(s, now),
        None => {
            let mut ctx = Session::gw_ctx(svc);
            x.unavailable(out, &mut ctx);
        }
    }
    let log = svc.log_on.then(|| LogLine::new(req, site, route));
    Box::new(Gw {
        x,
        keep,
        began: now,
        log,
    })
}

/// A seed for a worker's balancer (random_two): different per worker and per start.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::gateway::mix(t ^ u64::from(std::process::id()) ^ (&t as *const u64 as u64))
}

#[path = "tls/session_tls.rs"]
mod tls_io;

#[cfg(test)]
#[path = "tls/session_tls_tests.rs"]
mod tls_tests;

#[cfg(test)]
#[path = "proto/session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "proto/session_error_tests.rs"]
mod error_tests;

#[cfg(test)]
#[path = "proto/session_park_tests.rs"]
mod park_tests;

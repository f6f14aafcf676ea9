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
//! shutdown requested      → session.start_shutdown(now); close those for which should_close() holds
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
    /// The driver can splice proxied bodies (`set_can_splice`).
    can_splice: bool,
    /// ... and the client → upstream direction (`set_can_splice_up`).
    can_splice_up: bool,
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
            can_splice: false,
            can_splice_up: false,
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

    /// The driver moves `Output::Pipe` pieces and answers `Session::gw_splice_want`: proxied
    /// bodies of at least `proxy_splice_min` bytes go upstream → pipe → client.
    pub fn set_can_splice(&mut self, can: bool) {
        self.can_splice = can;
    }

    /// The driver also answers `Session::client_splice_want`: a tunnel's client bytes and
    /// streamed Content-Length request bodies go client → pipe → upstream.
    pub fn set_can_splice_up(&mut self, can: bool) {
        self.can_splice_up = can;
    }

    /// Smallest proxied body spliced (0: none).
    fn splice_min(&self) -> u64 {
        if self.can_splice {
            self.config.proxy_splice_min
        } else {
            0
        }
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

    /// Wake tags (`Session::set_wake_tag`) of sessions whose collapsed cache fetch ended:
    /// the driver drives each again (`Session::collapse_poll` answers it). Take them after
    /// every loop pass.
    pub fn take_woken(&mut self) -> Vec<u64> {
        self.cache.take_woken()
    }

    /// Whether `take_woken` has anything.
    pub fn has_woken(&self) -> bool {
        self.cache.has_woken()
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
        self.cache
            .reconfigure(config.sites.cache_max_bytes, config.sites.cache_max_entry);
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
    /// The listener hands TLS connections to kernel TLS after the handshake.
    ktls: bool,
    /// Some site has `redirect_http`: plain requests are checked for it.
    redirect_http: bool,
    /// Some site answers ACME HTTP-01: plain requests are checked for a challenge first.
    acme_http: bool,
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
            ktls: c.tls.as_ref().is_some_and(|t| t.ktls),
            redirect_http: c.sites.sites.iter().any(|s| s.redirect_http),
            acme_http: c.tls.as_ref().is_some_and(|t| t.answers_http01()),
        }
    }
}

thread_local! {
    /// The knobs of the last `Service` created on this thread (the worker's), so that
    /// `Session::new`, which is given no `Service`, starts with the configured header
    /// timeout. Every `feed`/`consume` refreshes the session's copy from its `Service`.
    static THREAD_KNOBS: Cell<Option<Knobs>> = const { Cell::new(None) };
}

/// Client bytes a tunnel or a streamed body holds for its upstream beyond which reading the
/// client pauses.
const TUNNEL_BACKLOG: usize = 64 * 1024;

/// Most bytes of a body its WSGI app left unread that are read and dropped after the response
/// so the connection can serve on; a longer rest closes the connection instead.
const DRAIN_MAX: usize = 1 << 20;

/// One piece of output to write to the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Bytes to send. A driver may send any prefix and report it with `consume`.
    Bytes(&'a [u8]),
    /// `len` bytes of the file `fd` starting at `offset` (splice or sendfile).
    File { fd: RawFd, offset: u64, len: u64 },
    /// `len` bytes that the driver spliced into the connection's pipe from the upstream
    /// (`Session::gw_spliced`): send them from the pipe (splice) and `consume` them.
    Pipe { len: u64 },
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
    /// Graceful shutdown, the grace: until then a request that arrives is still answered,
    /// with `Connection: close` (`start_shutdown`).
    drain_until: Option<Instant>,
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
    /// CGI local redirects followed for the request being answered.
    local_redirects: u8,
    /// Streaming the body of the proxied request in flight to its upstream as it arrives
    /// (`buffer_requests = false`); nothing behind it is parsed until it ends.
    stream: Option<BodyReader>,
    /// The WSGI app in flight was asked `Expect: 100-continue` and its 100 is not sent yet:
    /// it goes out when the app first reads `wsgi.input` (as gunicorn does).
    cont_owed: bool,
    /// With `stream` and no `gw`: the app answered before reading all of its body; the rest
    /// is read and dropped (this many bytes so far) so that the connection serves on.
    drained: usize,
    /// The driver's name for this connection, handed back by `Service::take_woken`.
    wake_tag: u64,
    /// The request at `in_pos` waits for another request's fetch of this cache key (since
    /// then): nothing is parsed until `collapse_poll` finds it resolved.
    collapsed: Option<(String, Instant)>,
    /// TLS listener, nothing received yet: the first bytes pick TLS or plain HTTP.
    sniff: bool,
    /// The TLS record layer, on a TLS connection (`tls/session_tls.rs`).
    tls: Option<Box<tls_io::TlsConn>>,
    /// The connection is HTTPS (its records in rustls, or in the kernel after `take_ktls`).
    secure: bool,
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
            drain_until: None,
            req_start: Some(now),
            idle_since: now,
            progress_at: now,
            local_redirects: 0,
            stream: None,
            cont_owed: false,
            drained: 0,
            wake_tag: 0,
            collapsed: None,
            sniff: knobs.tls,
            tls: None,
            secure: false,
        }
    }

    /// The driver's name for this connection (its slot and generation, say): a session that
    /// waits for another's cache fetch is woken through `Service::take_woken` with it.
    pub fn set_wake_tag(&mut self, tag: u64) {
        self.wake_tag = tag;
    }

    /// Answers on if this session waited for a cache fetch that has ended (or waited too
    /// long). Call when `Service::take_woken` names it; harmless otherwise.
    pub fn collapse_poll(&mut self, svc: &mut Service, now: Instant) {
        let Some((key, since)) = &self.collapsed else {
            return;
        };
        if svc.cache.is_pending(key, now) && now < *since + crate::cache::COLLAPSE_WAIT {
            return;
        }
        self.collapsed = None;
        self.process(svc, now);
    }

    /// Whether this session waits for another request's cache fetch.
    pub fn collapsed(&self) -> bool {
        self.collapsed.is_some()
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
        if let Some(g) = self.gw.as_mut().filter(|g| g.x.tunneling()) {
            g.x.tunnel_in(data, now);
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
        if self.stream.is_some() {
            self.stream_body(svc, now);
            return;
        }
        if self.parked.is_none() {
            self.process(svc, now);
        }
    }

    /// Hands the body bytes received so far to the streaming exchange (decoded; the exchange
    /// re-frames them); at the body's end, the requests behind it wait for the exchange.
    fn stream_body(&mut self, svc: &mut Service, now: Instant) {
        let Some(r) = self.stream.as_mut() else {
            return;
        };
        let mut dec = std::mem::take(&mut self.body_data);
        dec.clear();
        let res = r.feed_into(&self.inp[self.in_pos..], Some(&mut dec));
        match res {
            Ok(n) => {
                self.inp.drain(self.in_pos..self.in_pos + n);
                let done = r.done();
                if let Some(g) = &mut self.gw {
                    g.x.body_in(&dec);
                    if done {
                        g.x.body_end();
                    }
                } else {
                    // The rest of a body its app did not read: dropped, within a bound.
                    self.drained += dec.len();
                    if self.drained > DRAIN_MAX && !done {
                        self.stream = None;
                        self.closing = true;
                        self.in_pos = self.inp.len();
                        self.out.close_last();
                        dec.clear();
                        self.body_data = dec;
                        return;
                    }
                }
                if done {
                    self.stream = None;
                    self.req_start = None;
                    if self.gw.is_none() {
                        // Drained: the requests behind it are answered now.
                        dec.clear();
                        self.body_data = dec;
                        self.req_start = (self.in_pos < self.inp.len()).then_some(now);
                        if !self.closing && self.parked.is_none() {
                            self.process(svc, now);
                        }
                        return;
                    }
                }
            }
            Err(e) => {
                // A broken or oversized body: the exchange is abandoned (its upstream
                // connection closed; a response already begun is cut), the client gets the
                // error when nothing was answered yet, and the connection closes.
                self.stream = None;
                let answered = match &mut self.gw {
                    Some(g) => {
                        g.x.abort_body();
                        g.x.responded
                    }
                    // Draining the body of an app that has answered already.
                    None => true,
                };
                if answered {
                    self.closing = true;
                    self.in_pos = self.inp.len();
                } else {
                    self.fail(svc, e, now);
                }
            }
        }
        dec.clear();
        self.body_data = dec;
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
        if let Some(g) = &mut self.gw {
            g.x.tunnel_client_eof();
            if self.stream.take().is_some() {
                // The client left in the middle of its body.
                g.x.abort_body();
            }
        }
    }

    /// The next piece of output, or None when nothing is queued. Calling it again without
    /// `consume` returns the same piece.
    pub fn next_output(&mut self) -> Option<Output<'_>> {
        if self.tls.is_some() {
            return self.next_output_tls();
        }
        if self.gw_holds_head() {
            return None;
        }
        self.out.peek()
    }

    /// A proxied response's head waits for its first body bytes ([`Exchange::holds_head`]).
    pub(crate) fn gw_holds_head(&self) -> bool {
        self.gw
            .as_ref()
            .is_some_and(|g| g.sink.is_none() && g.x.holds_head())
    }

    /// After a gateway call: a head it let go starts the client's send-stall clock now (the
    /// wait for the body was the upstream's, timed by its read timer).
    fn gw_let_go(&mut self, held: bool, now: Instant) {
        if held && !self.gw_holds_head() {
            self.progress_at = now;
        }
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
            if let Some(g) = self.gw.as_mut() {
                g.x.client_progress(now);
            }
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
            && self.collapsed.is_none()
            && (self.closing || self.eof || self.shutdown)
    }

    /// False while the server wants no more bytes from this peer (too much queued output,
    /// closing after an error). The driver stops reading until it turns true.
    pub fn wants_read(&self) -> bool {
        if self.ktls_due() {
            // No read in flight while the record layer moves to the kernel.
            return false;
        }
        if let Some(g) = self.gw.as_ref().filter(|g| g.x.tunneling()) {
            // A tunnel reads the client while the upstream keeps up (unless the driver
            // splices its bytes instead).
            return !(self.eof || self.shutdown)
                && g.x.backlog() < TUNNEL_BACKLOG
                && !g.x.pipe_up_pending()
                && self.client_splice_want().is_none();
        }
        if let (Some(g), Some(_)) = (&self.gw, &self.stream) {
            // A streamed body: read while the upstream keeps up, and not before what went by
            // splice (a body's tail below `proxy_splice_min` is read) has all gone out.
            return !(self.closing || self.eof)
                && g.x.backlog() < TUNNEL_BACKLOG
                && !g.x.pipe_up_pending()
                && self.client_splice_want().is_none();
        }
        !(self.closing || self.eof || self.shutdown)
            && self.collapsed.is_none()
            && self.out.responses() < self.knobs.depth
            && self.inp.len() - self.in_pos <= self.knobs.max_unparsed
    }

    /// When this connection times out in its current phase (header read, keep-alive idle,
    /// send stall). The driver closes it when `now >= deadline`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline_of(true)
    }

    /// The deadline of a wait for the client to take output: [`Session::deadline`] without
    /// the upstream's read timer, which a driver that cannot read the upstream while it
    /// writes to the client (tokio-uring: one task per connection) must not apply to a slow
    /// client.
    pub fn send_deadline(&self) -> Option<Instant> {
        self.deadline_of(false)
    }

    fn deadline_of(&self, upstream: bool) -> Option<Instant> {
        let k = &self.knobs;
        let mut d = None;
        if !self.out.is_empty() && !self.gw_holds_head() {
            d = Some(self.progress_at + k.send_stall);
        }
        // The upstream's read timer, unless the client is what holds the upstream back.
        if let Some(t) = self
            .gw
            .as_ref()
            .filter(|_| upstream && !self.gw_held_back())
            .and_then(|g| g.x.deadline)
        {
            d = Some(d.map_or(t, |d| d.min(t)));
        }
        if let Some((_, since)) = &self.collapsed {
            let t = *since + crate::cache::COLLAPSE_WAIT;
            d = Some(d.map_or(t, |d| d.min(t)));
        }
        if self.closing
            || self.eof
            || self.shutdown
            || self.gw.is_some()
            || self.collapsed.is_some()
        {
            return d;
        }
        let waiting = self.out.responses() < k.depth;
        let own = match self.req_start {
            Some(t) if waiting => Some(t + k.header_read),
            Some(_) => None,
            None if self.out.is_empty() => {
                let idle = self.idle_since + k.keepalive;
                Some(self.drain_until.map_or(idle, |t| t.min(idle)))
            }
            None => None,
        };
        match (d, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Graceful shutdown. What is in flight finishes, and its last response says
    /// `Connection: close`. A connection with nothing in flight is not closed at once: for
    /// [`DRAIN_GRACE`] a request that arrives is still answered (with `Connection: close`),
    /// since its client may have sent it before it could see any close of ours; closing
    /// under it would lose a request the client had every reason to think delivered
    /// (RFC 9112 §9.6 asks for a graceful close). After the grace, an idle connection
    /// closes on its idle deadline ([`Session::deadline`]), as a keep-alive timeout does.
    pub fn start_shutdown(&mut self, now: Instant) {
        if self.shutdown || self.drain_until.is_some() {
            return;
        }
        if self.closing || self.eof {
            // Nothing more will be read anyway: finish what is queued, then close.
            self.shutdown = true;
            self.in_pos = self.inp.len();
            self.parked = None;
            self.collapsed = None;
            self.body = None;
            return;
        }
        self.drain_until = Some(now + DRAIN_GRACE);
        match self.gw.as_mut() {
            Some(g) => {
                // A proxied or app response not begun yet says close; its end closes.
                if !g.x.responded {
                    g.x.conn = ConnHeader::Close;
                    g.keep = false;
                }
            }
            None => {
                // The last queued response says close, if it has not been handed out yet:
                // then nothing after it is read. (Parked, collapsed and body-reading
                // requests are parsed again before they are answered: see `process`.)
                if self.out.close_last() {
                    self.closing = true;
                }
            }
        }
    }

    /// Answers complete requests from the input until it runs dry, the pipeline is full, or
    /// the connection stops answering.
    fn process(&mut self, svc: &mut Service, now: Instant) {
        loop {
            if self.closing
                || self.shutdown
                || self.gw.is_some()
                || self.stream.is_some()
                || self.collapsed.is_some()
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
                Ok(Parsed::Complete(mut req)) => {
                    // Draining: answered, and with `Connection: close`.
                    req.keep_alive &= self.drain_until.is_none();
                    req.secure = self.secure;
                    req
                }
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
            // Plain requests that `plain_first` may answer (or refuse, on an HTTPS-only port
            // that hears ACME HTTP-01) are never streamed to an upstream first.
            let plain_redirect = (self.knobs.redirect_http || self.knobs.acme_http) && !self.secure;
            if req.framing != Framing::None
                && self.body.is_none()
                && !plain_redirect
                && svc.router.streams_body(&req)
            {
                match BodyReader::new(req.framing, self.knobs.max_body, self.knobs.max_trailer) {
                    Ok(r) => {
                        let ans = answer(svc, &mut self.out, self.peer, &req, false, false, now);
                        if let Err(Wait::Wsgi(both, site, route)) = ans {
                            // A WSGI app: called now; `wsgi.input` gets the body as it
                            // arrives, and a 100 goes out when the app first reads it.
                            self.continued = false;
                            self.gw = Some(app_stream(svc, &req, *both, (site, route), now));
                            self.cont_owed = req.expect_continue;
                            self.in_pos += head_len;
                            self.stream = Some(r);
                            self.stream_body(svc, now);
                        } else if let Err(Wait::Proxy(start, site, route)) = ans {
                            if req.expect_continue {
                                self.out
                                    .bytes(&mut svc.pool)
                                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                            let stream = Some(req.framing);
                            let at = (site, route);
                            let g = new_gateway(
                                svc,
                                &mut self.out,
                                &[],
                                &req,
                                *start,
                                at,
                                false,
                                stream,
                                now,
                            );
                            if self.out.responses() == 1 {
                                self.progress_at = now;
                            }
                            self.gw = Some(g);
                            self.no_splice_on_tls();
                            self.in_pos += head_len;
                            self.stream = Some(r);
                            self.stream_body(svc, now);
                        } else {
                            // Not proxied after all (cannot happen for a route `streams_body`
                            // named): whatever was answered, the body is never read.
                            self.closing = true;
                            self.in_pos = self.inp.len();
                        }
                        break;
                    }
                    Err(e) => {
                        self.fail(svc, e, now);
                        break;
                    }
                }
            }
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
            let to_https = if (self.knobs.redirect_http || self.knobs.acme_http) && !self.secure {
                tls_io::plain_first(svc, &mut self.out, self.peer, &req, skip_body)
            } else {
                None
            };
            // Only a request without a body may wait for another's cache fetch (it is
            // parsed again when woken).
            let collapse = !skip_body && self.body.is_none();
            let ans = match to_https {
                Some(keep) => Ok(Ans::Done(keep)),
                None => answer(
                    svc,
                    &mut self.out,
                    self.peer,
                    &req,
                    skip_body,
                    collapse,
                    now,
                ),
            };
            let (keep, refresh) = match ans {
                Ok(Ans::Done(keep)) => (keep, None),
                Ok(Ans::Refresh(keep, w)) => (keep, Some(w)),
                Ok(Ans::Collapse(key)) => {
                    svc.cache.wait_for(&key, self.wake_tag);
                    self.collapsed = Some((key, now));
                    break;
                }
                Err(Wait::Park(key)) => {
                    self.parked = Some(key);
                    break;
                }
                Err(Wait::Proxy(..) | Wait::Cgi(..) | Wait::Wsgi(..)) if skip_body => {
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
                        req_head: Some(req.raw.into()),
                        sink: None,
                    }));
                    self.body = None;
                    self.body_data.clear();
                    self.in_pos += req.head_len;
                    break;
                }
                Err(Wait::Wsgi(both, site, route)) => {
                    // A WSGI app: its call goes to the app threads with the body read whole.
                    self.continued = false;
                    let (start, mut call) = *both;
                    call.body = std::mem::take(&mut self.body_data);
                    if req.framing != Framing::Chunked {
                        let n = call.body.len().to_string().into_bytes();
                        call.environ.push(("CONTENT_LENGTH", n));
                    }
                    let conn = conn_header(&req, skip_body);
                    let mut x = Exchange::new_wsgi(start, call, conn);
                    x.set_max_entry(svc.cache.max_entry);
                    let log = svc.log_on.then(|| LogLine::new(&req, site, route));
                    self.gw = Some(Box::new(Gw {
                        x,
                        keep: conn != ConnHeader::Close,
                        began: now,
                        log,
                        req_head: None,
                        sink: None,
                    }));
                    self.body = None;
                    self.in_pos += req.head_len;
                    break;
                }
                Err(Wait::Proxy(start, site, route)) => {
                    self.continued = false;
                    let at = (site, route);
                    let mut g = new_gateway(
                        svc,
                        &mut self.out,
                        &self.body_data,
                        &req,
                        *start,
                        at,
                        skip_body,
                        None,
                        now,
                    );
                    if self.out.responses() == 1 {
                        self.progress_at = now;
                    }
                    if self.tls.is_some() || self.sniff {
                        // A TLS connection's bytes pass through rustls: never spliced.
                        g.x.set_splice_min(0);
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
            self.local_redirects = 0;
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
            if let Some(w) = refresh {
                // stale-while-revalidate: the stale copy went out; refresh it now, behind
                // the client's back (requests behind this one wait for it).
                self.gw = background(svc, w, now);
            }
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

/// Most CGI local redirects followed for one request; past it, a 500.
const MAX_LOCAL_REDIRECTS: u8 = 10;

/// The request a CGI local redirect to `path` stands for: GET (HEAD for a HEAD) `path` with
/// the original's fields, less the body's (the body was the script's).
fn redirected_request(head: &[u8], path: &str) -> Vec<u8> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Request::new(&mut fields);
    let _ = r.parse(head);
    let minor = r.version.unwrap_or(1);
    let mut out = Vec::with_capacity(head.len() + path.len());
    out.extend_from_slice(if r.method == Some("HEAD") {
        b"HEAD "
    } else {
        b"GET "
    });
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for f in r.headers.iter() {
        let skip = [
            "content-length",
            "transfer-encoding",
            "expect",
            "content-type",
        ];
        if skip.iter().any(|n| f.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
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

/// How long a connection idle at a graceful shutdown still answers one more request.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What `answer` did with a request it did not hand to a waiting state.
enum Ans {
    /// Answered; whether the connection stays open.
    Done(bool),
    /// Answered from a stale copy (stale-while-revalidate); this gateway request refreshes
    /// it in the background.
    Refresh(bool, Wait),
    /// Another request of this worker is fetching this cache key: wait for it.
    Collapse(String),
}

/// Answers one complete request (with `Connection: close` when `close`, or when the request
/// asks for it); returns whether the connection stays open after it, or what it waits on
/// (an open job, an upstream), with nothing queued. `collapse`: it may wait for another
/// request's fetch of its cache key.
fn answer(
    svc: &mut Service,
    out: &mut OutQueue,
    peer: SocketAddr,
    req: &Request<'_>,
    close: bool,
    collapse: bool,
    now: Instant,
) -> Result<Ans, Wait> {
    let conn = conn_header(req, close);
    if let Some(sent) = cache_status(svc, out, peer, req, conn) {
        if svc.log_on {
            let line = LogLine::new(req, 0, 0);
            line.write(svc, peer, sent, None);
        }
        return Ok(Ans::Done(conn != ConnHeader::Close));
    }
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
    let mut tag = None;
    let mut refresh = None;
    let a = match res {
        Ok(a) => a,
        // Proxied, CGI and WSGI responses alike: the cache answers first when it can.
        Err(mut w) => {
            let Some((start, site, route)) = w.gateway_mut() else {
                return Err(w);
            };
            match cached(svc, out, start, peer, req, conn, collapse, now) {
                Cached::Go => return Err(w),
                Cached::Wait(key) => return Ok(Ans::Collapse(key)),
                Cached::Sent(sent, t, again) => {
                    tag = Some(t);
                    if again {
                        refresh = Some(w);
                    }
                    crate::router::Answered { sent, site, route }
                }
            }
        }
    };
    if svc.log_on {
        let line = LogLine::new(req, a.site, a.route);
        line.write(svc, peer, a.sent, tag.map(|t| format!("cache={t}")));
    }
    let keep = conn != ConnHeader::Close;
    Ok(match refresh {
        Some(w) => Ans::Refresh(keep, w),
        None => Ans::Done(keep),
    })
}

/// What the cache did with a proxied or CGI request.
enum Cached {
    /// Go to the origin (the start is adjusted: conditional fields, leader, stale_ok).
    Go,
    /// Wait for another request's fetch of this key.
    Wait(String),
    /// Answered (PURGE, or from the cache with this X-Cache tag); `true`: refresh the entry
    /// in the background with the start (stale-while-revalidate).
    Sent(Sent, &'static str, bool),
}

/// The response cache in front of a proxied or CGI request on a caching route: answers a
/// fresh entry (`HIT`) or one within stale-while-revalidate (`STALE`, and a background
/// refresh), a PURGE, or sends the request on (revalidating a stale entry, collapsing
/// concurrent misses).
#[allow(clippy::too_many_arguments)]
fn cached(
    svc: &mut Service,
    out: &mut OutQueue,
    start: &mut proxy::Start,
    peer: SocketAddr,
    req: &Request<'_>,
    conn: ConnHeader,
    collapse: bool,
    now: Instant,
) -> Cached {
    use crate::cache::Lookup;
    use std::sync::atomic::Ordering::Relaxed;
    let head_request = start.head_request;
    let Some(ci) = start.cache.as_deref_mut() else {
        start.build_head(req, peer.ip(), &svc.config.sites.trusted_proxies);
        return Cached::Go;
    };
    if ci.purge {
        let ok = svc
            .config
            .sites
            .cache_purge_from
            .iter()
            .any(|c| c.contains(peer.ip()));
        if ok {
            crate::cache::purge_all(&ci.key);
        }
        let mut reply = Reply {
            out,
            pool: &mut svc.pool,
            date: &svc.date,
            conn,
            edit: None,
        };
        let (status, body): (u16, &[u8]) = if ok {
            (200, b"purged\n")
        } else {
            (
                403,
                b"403 Forbidden: PURGE is allowed from [cache] purge_from only\n",
            )
        };
        let sent = reply.text(
            &svc.config.server_name,
            status,
            b"Content-Type: text/plain; charset=utf-8\r\n",
            body,
            false,
        );
        return Cached::Sent(sent, "BYPASS", false);
    }
    if !ci.get && !head_request {
        svc.cache.stats.bypass.fetch_add(1, Relaxed);
        start.build_head(req, peer.ip(), &svc.config.sites.trusted_proxies);
        return Cached::Go;
    }
    let raw = req.raw;
    let field = |n: &str| field_value(raw, n);
    let look = svc.cache.lookup(&ci.key, &field, ci.get, collapse, now);
    let (tag, refresh) = match look {
        Lookup::Wait => return Cached::Wait(ci.key.clone()),
        Lookup::Fetch { validators, leader } => {
            svc.cache.misses += 1;
            svc.cache.stats.misses.fetch_add(1, Relaxed);
            svc.cache.stats.origin_fetches.fetch_add(1, Relaxed);
            ci.leader = leader;
            ci.stale_ok = svc
                .cache
                .get(&ci.key, &field)
                .is_some_and(|e| e.usable_on_error(now));
            start.build_head(req, peer.ip(), &svc.config.sites.trusted_proxies);
            if let Some(v) = validators {
                start.head = crate::cache::conditional_head(&start.head, &v);
                if let Some(ci) = start.cache.as_deref_mut() {
                    ci.revalidating = true;
                }
            }
            return Cached::Go;
        }
        Lookup::Hit => ("HIT", None),
        Lookup::StaleRevalidate { refresh } => ("STALE", refresh),
    };
    let Some(e) = svc.cache.get(&ci.key, &field) else {
        start.build_head(req, peer.ip(), &svc.config.sites.trusted_proxies);
        return Cached::Go;
    };
    let asked = asked(req);
    let (status, n) =
        crate::cache::render_asked(e, tag, now, &asked, head_request, conn, out, &mut svc.pool);
    let st = &svc.cache.stats;
    if tag == "HIT" {
        svc.cache.hits += 1;
        st.hits.fetch_add(1, Relaxed);
    } else {
        st.stale.fetch_add(1, Relaxed);
    }
    let sent = Sent {
        status,
        body_bytes: n,
    };
    match refresh {
        Some(validators) => {
            ci.revalidating = validators.is_some();
            start.build_head(req, peer.ip(), &svc.config.sites.trusted_proxies);
            if let Some(v) = validators {
                start.head = crate::cache::conditional_head(&start.head, &v);
            }
            svc.cache.stats.origin_fetches.fetch_add(1, Relaxed);
            Cached::Sent(sent, tag, true)
        }
        None => Cached::Sent(sent, tag, false),
    }
}

/// The conditional and range fields of a request, for an answer from the cache.
fn asked<'a>(req: &'a Request<'a>) -> crate::handler::conditional::Asked<'a> {
    let f = &req.fields;
    crate::handler::conditional::Asked {
        conds: crate::handler::conditional::Conditions {
            if_match: f.if_match.as_deref(),
            if_none_match: f.if_none_match.as_deref(),
            if_modified_since: f.if_modified_since,
            if_unmodified_since: f.if_unmodified_since,
        },
        range: f
            .range
            .filter(|_| req.method == crate::proto::parse::Method::Get),
        if_range: f.if_range,
    }
}

/// Renders `e` for the request whose raw head is `head` (its conditions and range).
#[allow(clippy::too_many_arguments)]
fn render_for_head(
    e: &crate::cache::Entry,
    tag: &str,
    now: Instant,
    head: &[u8],
    limits: &crate::config::Limits,
    head_only: bool,
    conn: ConnHeader,
    out: &mut OutQueue,
    pool: &mut BufPool,
) -> (u16, u64) {
    match parse::parse(head, limits) {
        Ok(Parsed::Complete(req)) => {
            let a = asked(&req);
            crate::cache::render_asked(e, tag, now, &a, head_only, conn, out, pool)
        }
        _ => crate::cache::render(e, tag, now, head_only, conn, out, pool),
    }
}

/// `[cache] status_path`: every worker's cache counters as JSON, to `purge_from` peers
/// (others get the path routed as usual).
fn cache_status(
    svc: &mut Service,
    out: &mut OutQueue,
    peer: SocketAddr,
    req: &Request<'_>,
    conn: ConnHeader,
) -> Option<Sent> {
    let path = svc.config.sites.cache_status_path.as_deref()?;
    let target = req.target.split('?').next().unwrap_or("");
    if target != path
        || !matches!(
            req.method,
            crate::proto::parse::Method::Get | crate::proto::parse::Method::Head
        )
    {
        return None;
    }
    let sites = &svc.config.sites;
    if !sites.cache_purge_from.iter().any(|c| c.contains(peer.ip())) {
        return None;
    }
    let body = crate::cache::status_json();
    let mut reply = Reply {
        out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn,
        edit: None,
    };
    Some(reply.text(
        &svc.config.server_name,
        200,
        b"Content-Type: application/json\r\nCache-Control: no-store\r\n",
        body.as_bytes(),
        req.method == crate::proto::parse::Method::Head,
    ))
}

/// A background refresh of a cache entry (stale-while-revalidate): the gateway request
/// `w`, its response captured for the cache and discarded (`Gw::sink`). None when no
/// server is available (the entry stays stale; a later request tries again).
fn background(svc: &mut Service, w: Wait, now: Instant) -> Option<Box<Gw>> {
    let mut x = match w {
        Wait::Proxy(start, ..) => {
            let mut x = Exchange::new(*start, b"", ConnHeader::None);
            let (group, key) = (x.start.group, x.start.key);
            let s = svc.upstreams.pick(group, key, &[], now)?;
            x.retry(s, now);
            x
        }
        Wait::Cgi(both, ..) => {
            let (start, spawn) = *both;
            let mut x = Exchange::new_cgi(start, spawn, b"", ConnHeader::None);
            x.server = None;
            x
        }
        Wait::Wsgi(both, ..) => {
            let (start, call) = *both;
            Exchange::new_wsgi(start, call, ConnHeader::None)
        }
        Wait::Park(_) => return None,
    };
    x.set_max_entry(svc.cache.max_entry);
    Some(Box::new(Gw {
        x,
        keep: true,
        began: now,
        log: None,
        req_head: None,
        sink: Some(OutQueue::default()),
    }))
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
    /// A CGI request's own head, for a local redirect's new request.
    req_head: Option<Box<[u8]>>,
    /// A background refresh: the response goes here (and is dropped), not to the client.
    sink: Option<OutQueue>,
}

/// The WSGI call for `req` with its body to follow as it arrives (`Session::stream`).
fn app_stream(
    svc: &mut Service,
    req: &Request<'_>,
    (start, mut call): (proxy::Start, crate::gateway::wsgi::Call),
    (site, route): (u16, u16),
    now: Instant,
) -> Box<Gw> {
    if let Framing::Length(n) = req.framing {
        call.environ
            .push(("CONTENT_LENGTH", n.to_string().into_bytes()));
    }
    call.streamed = true;
    let conn = conn_header(req, false);
    let mut x = Exchange::new_wsgi_stream(start, call, conn);
    x.set_max_entry(svc.cache.max_entry);
    let log = svc.log_on.then(|| LogLine::new(req, site, route));
    Box::new(Gw {
        x,
        keep: conn != ConnHeader::Close,
        began: now,
        log,
        req_head: None,
        sink: None,
    })
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
    stream: Option<Framing>,
    now: Instant,
) -> Box<Gw> {
    let conn = conn_header(req, close);
    let keep = conn != ConnHeader::Close;
    let mut x = match stream {
        Some(f) => Exchange::new_stream(start, f, conn),
        None => Exchange::new(start, body, conn),
    };
    x.set_max_entry(svc.cache.max_entry);
    x.set_splice_min(svc.splice_min());
    x.set_splice_up(svc.can_splice_up);
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
        req_head: None,
        sink: None,
    })
}

/// A seed for a worker's balancer (random_two): different per worker and per start.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::gateway::mix(t ^ u64::from(std::process::id()) ^ (&t as *const u64 as u64))
}

#[path = "proto/session_gw.rs"]
mod gw;

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

#[cfg(test)]
#[path = "proto/session_app_tests.rs"]
mod app_tests;

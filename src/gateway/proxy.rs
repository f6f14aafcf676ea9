//! One proxied request as a sans-IO state machine: the request rebuilt for the upstream
//! (hop-by-hop fields removed, body re-framed with Content-Length, Via and X-Forwarded-* /
//! Forwarded set), the upstream's response head parsed strictly, and its body re-framed for
//! the client (Content-Length kept; chunked or close-delimited bodies go to HTTP/1.1 clients
//! chunked and to HTTP/1.0 clients close-delimited). No sockets, no clock reads.
//!
//! # The driver's side (`Session::gateway`)
//! ```text
//! exchange.connect_to()   → Some((group, server)): take a pooled connection or connect,
//!                           then exchange.connected(reused, now)
//! exchange.to_send()      → bytes for the upstream → exchange.sent(n)
//! exchange.wants_read()   → read from the upstream → session.gw_feed / gw_eof / gw_error
//! exchange.finished()     → Some(reusable): pool or close the upstream connection, then
//!                           session.gw_release(...)
//! ```
//! Retry rule: a failure before any response byte came back is retried on another server
//! when the request is idempotent or none of it was sent; never after a response byte.
//!
//! # Tunnels (`Connection: Upgrade`, e.g. WebSocket)
//! An HTTP/1.1 request that asks to upgrade is forwarded with its `Upgrade` field and
//! `Connection: upgrade`. Only when the upstream answers `101` does the exchange become a
//! two-way tunnel: the 101 goes to the client, then the session hands the client's bytes to
//! [`Exchange::tunnel_in`] (sent as `to_send()`), upstream bytes reach the client unchanged,
//! and either side's EOF (once what it sent is delivered), or `read_timeout` without a byte
//! either way, ends it and closes both connections. Any other answer is an ordinary response.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::sites::HeaderEdit;
use crate::config::upstreams::Cidr;
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::framing::{self, BodyReader, Framing};
use crate::proto::head::{self, ConnHeader, DATE_LEN};
use crate::proto::parse::{Request, MAX_HEADERS_CAP};

/// Largest upstream response head accepted; larger → 502.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields in an upstream response head.
pub const MAX_RESPONSE_FIELDS: usize = 128;

/// Request fields never forwarded: hop-by-hop (RFC 9110 §7.6.1) and the framing ringd
/// rewrites itself, plus `Expect` (the body is read before forwarding).
const HOP_REQUEST: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "content-length",
    "expect",
    "via",
];
/// Response fields never passed back: hop-by-hop, framing, and the ones ringd sets itself.
const HOP_RESPONSE: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "content-length",
    "date",
];

/// What a proxied request needs from routing.
#[derive(Debug)]
pub struct Start {
    pub group: usize,
    /// The request head to send, without its blank line and without framing fields.
    pub head: Vec<u8>,
    /// GET, HEAD, OPTIONS, TRACE, PUT, DELETE: may be sent twice (RFC 9110 §9.2.2).
    pub idempotent: bool,
    pub head_request: bool,
    /// The client speaks HTTP/1.0.
    pub client_10: bool,
    /// The method carries a body by definition (POST, PUT, PATCH): send Content-Length: 0
    /// even when empty.
    pub body_method: bool,
    /// Input of the hash policy.
    pub key: u64,
    /// How long to connect, and between two reads.
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Response bytes queued for the client beyond which reading from the upstream pauses.
    pub buffer: usize,
    /// Further servers to try after a failure.
    pub retries: u32,
    /// The route caches its responses: where and how.
    pub cache: Option<Box<CacheIntent>>,
    /// The route compresses (`compress = [...]`): its responses vary on Accept-Encoding, and
    /// this request gets `compress` when it is Some.
    pub compress_route: bool,
    pub compress: Option<crate::handler::encoding::Coding>,
    /// The request asks to upgrade (its head carries `Upgrade` and `Connection: upgrade`):
    /// a 101 answer turns the exchange into a tunnel.
    pub upgrade: bool,
    /// A request the cache may answer: `head` is empty until `build_head` (a hit never
    /// builds it).
    pub deferred_head: Option<Box<DeferredHead>>,
}

/// What building a deferred upstream request head needs besides the request.
#[derive(Debug)]
pub struct DeferredHead {
    pub path_query: String,
    pub host: Vec<u8>,
    pub edit: Option<HeaderEdit>,
}

impl Start {
    /// Builds the upstream request head if it was deferred (the request goes upstream).
    pub fn build_head(&mut self, req: &Request<'_>, peer: IpAddr, trusted: &[Cidr]) {
        if let Some(d) = self.deferred_head.take() {
            self.head = request_head(
                req,
                &[&d.path_query],
                &d.host,
                peer,
                trusted,
                d.edit.as_ref(),
            )
            .0;
        }
    }
}

/// A cacheable request's key and policy, and what storing needs of it.
#[derive(Debug)]
pub struct CacheIntent {
    pub key: String,
    pub policy: crate::cache::Policy,
    /// The request carried Authorization.
    pub authorized: bool,
    /// GET (HEAD and others are served from the cache but never fill it).
    pub get: bool,
    /// The request head, for the values of the fields a response varies on.
    pub req_head: Vec<u8>,
    /// The request revalidates a stale stored response: a 304 refreshes it
    /// (`Exchange::from_cache`) instead of reaching the client.
    pub revalidating: bool,
    /// A stale stored response may answer a 502/503/504 from the upstream (stale-if-error).
    pub stale_ok: bool,
    /// A `PURGE` request for this key.
    pub purge: bool,
    /// Other misses of this key wait for this request's fetch (request collapsing).
    pub leader: bool,
}

/// An upstream answer that the cache turns into the client's response.
#[derive(Debug)]
pub enum FromCache {
    /// 304 to a revalidation: these end-to-end fields refresh the stored head, fresh again
    /// for this long (None: as before).
    Refresh {
        fields: Vec<u8>,
        fresh_for: Option<Duration>,
    },
    /// A 502/503/504: the stale stored response answers instead.
    Stale,
}

/// A response being captured for the cache.
#[derive(Debug)]
pub struct Store {
    pub status: u16,
    pub reason: String,
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    pub vary: Vec<String>,
    pub fresh_for: Duration,
}

/// What went wrong with the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connect refused or failed, or reset/closed before any response byte.
    Connect,
    /// Connect or read timeout.
    Timeout,
    /// The response broke HTTP's framing rules.
    Bad(&'static str),
    /// The response ended early (after its head was sent to the client).
    Cut,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the driver to connect to `server`.
    Connect,
    /// Connected: sending the request, and reading the response head.
    Exchange,
    /// Relaying the body.
    Body,
    /// After a 101: bytes flow both ways unchanged.
    Tunnel,
    /// Finished; `reusable` says whether the upstream connection may serve another request.
    Done { reusable: bool },
}

#[derive(Debug)]
enum UpBody {
    None,
    Length(u64),
    Chunked(BodyReader),
    UntilClose,
}

/// One proxied request.
#[derive(Debug)]
pub struct Exchange {
    pub start: Start,
    /// The full request to send (head, framing, blank line, body).
    req: Vec<u8>,
    pub sent: usize,
    state: State,
    pub server: Option<usize>,
    /// Servers tried already.
    pub tried: Tried,
    head: Vec<u8>,
    body: UpBody,
    /// The client gets the body chunked (re-framed), or until close.
    client_chunked: bool,
    client_close: bool,
    /// Any byte of the response queued for the client.
    pub responded: bool,
    /// When the current phase's timeout runs out.
    pub deadline: Option<Instant>,
    /// The status relayed (for the log), and body bytes relayed.
    pub status: u16,
    pub body_bytes: u64,
    /// The upstream says it will close, or answered HTTP/1.0: do not pool.
    upstream_close: bool,
    pub conn: ConnHeader,
    decoded: Vec<u8>,
    /// The failure that ended it, if one did.
    pub failure: Option<Failure>,
    /// It failed after the client's response had begun: the client connection must close
    /// without a proper end (no last chunk, a short Content-Length body).
    cut: bool,
    /// The client's head waits in the output queue for the first body bytes (see
    /// [`Exchange::holds_head`]).
    hold_head: bool,
    /// Counts attempts (server choices): a driver connects anew when it changes.
    pub attempt: u32,
    /// The current attempt uses a pooled connection.
    pub reused: bool,
    /// The next connection must be a new one (a pooled one just failed under this request).
    pub fresh_only: bool,
    /// A CGI script instead of an upstream server: the driver spawns it, writes the body to
    /// its stdin, and feeds its stdout here (a CGI header block, then the body to EOF).
    pub cgi: Option<Box<super::cgi::Spawn>>,
    /// A WSGI app instead of an upstream server: the driver queues `call` to the app threads
    /// and feeds back what the app sends (an HTTP/1.1 head built from its status and header
    /// list, then the body, then EOF).
    app: bool,
    call: Option<Box<super::wsgi::Call>>,
    /// The response being captured for the cache, while it may still be stored.
    pub store: Option<Box<Store>>,
    /// Largest body captured.
    max_entry: usize,
    /// Compressing the body on the way to the client.
    encoder: Option<super::compress::Encoder>,
    /// The exchange became a tunnel (the client connection closes when it ends).
    tunneled: bool,
    /// The client closed its side of the tunnel: once `to_send` is delivered, the driver
    /// closes the upstream's sending side (`tunnel_shutdown_due`) and the tunnel carries the
    /// upstream's bytes until its EOF.
    client_eof: bool,
    /// The upstream's sending side was shut down after the client's EOF.
    up_shut: bool,
    /// A CGI script answered with a local redirect to this path: the session answers the
    /// request again for it (RFC 3875 §6.2.2); nothing of the script's output was sent.
    pub local_redirect: Option<String>,
    /// The request body is streamed (`buffer_requests = false`): the session hands it over
    /// with `body_in` as it arrives, re-framed by `chunked` (else it has a Content-Length).
    streaming: Option<StreamBody>,
    /// The upstream's answer is for the cache to turn into the client's response (nothing
    /// of it was queued): set with the head, taken by the session.
    pub from_cache: Option<FromCache>,
    /// `X-Cache` of the response relayed (MISS or BYPASS), for the access log.
    pub cache_tag: Option<&'static str>,
    /// Content-Length bodies at least this large (and tunnels) may be spliced; 0: never
    /// (the driver cannot, or the client connection is TLS). Set by the session.
    splice_min: u64,
    /// The body (or the tunnel's upstream → client direction) moves upstream → pipe →
    /// client by splice: the driver asks `splice_want` instead of reading, and reports with
    /// `spliced`.
    splicing: bool,
    /// The driver's pipe took no more upstream bytes (no room, or out of slots) although the
    /// upstream has some: the client holds the upstream back, whatever the bytes in the pipe
    /// against `buffer_responses`. Cleared when bytes move on (`spliced`, `client_progress`).
    pipe_full: bool,
    /// Bytes that went through the pipe (for the access log: proof that splice ran).
    pub spliced_bytes: u64,
    /// Client bytes (a tunnel's, or a streamed Content-Length body's) the driver spliced into
    /// its upstream-bound pipe and has not written to the upstream yet: they follow `req`.
    up_in_pipe: u64,
    /// Client bytes that went to the upstream through a pipe.
    pub spliced_up: u64,
    /// The driver can splice client → upstream too (set by the session).
    splice_up: bool,
}

/// A request body being streamed to the upstream.
#[derive(Debug)]
struct StreamBody {
    chunked: bool,
    /// The whole body has been handed over.
    complete: bool,
    /// Some of it was sent and dropped: the request can no longer be sent again.
    drained: bool,
}

/// Whether the request may ask to upgrade (an `Upgrade` field is present): a cheap scan of the
/// raw head, so that caching can be ruled out without parsing it; `request_head` decides
/// exactly.
pub fn may_upgrade(req: &Request<'_>) -> bool {
    req.minor == 1
        && req
            .raw
            .windows(9)
            .any(|w| w[0] == b'\n' && w[1..].eq_ignore_ascii_case(b"upgrade:"))
}

/// Builds the head of the request to forward: request line with `path_query`, the client's
/// fields minus hop-by-hop ones, Host, X-Forwarded-For/-Proto/-Host, Forwarded and Via (the
/// incoming forwarding fields kept and extended only when `peer` is in `trusted`), then the
/// route's header edit. Also says whether the request asks to upgrade the connection
/// (HTTP/1.1, an `Upgrade` field, `upgrade` among the Connection options): then the head keeps
/// the `Upgrade` field and says `Connection: upgrade`, and a 101 answer opens a tunnel.
pub fn request_head(
    req: &Request<'_>,
    path_query: &[&str],
    host: &[u8],
    peer: IpAddr,
    trusted: &[Cidr],
    edit: Option<&HeaderEdit>,
) -> (Vec<u8>, bool) {
    // One allocation per request, the head itself: every list below borrows from the request
    // and stays empty (no allocation) in the common case, a peer that is not a trusted proxy.
    let trust = trusted.iter().any(|c| c.contains(peer));
    let edit_len = edit.map_or(0, |e| {
        e.set.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
    });
    // Room for the forwarding fields and, after them, the framing Exchange::new adds.
    let mut h = Vec::with_capacity(req.raw.len() + 2 * host.len() + edit_len + 256);
    h.extend_from_slice(req.method_str.as_bytes());
    h.push(b' ');
    for piece in path_query {
        h.extend_from_slice(piece.as_bytes());
    }
    h.extend_from_slice(b" HTTP/1.1\r\n");
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut parsed = httparse::Request::new(&mut []);
    let _ = parsed.parse_with_uninit_headers(req.raw, &mut slots);
    let fields: &[httparse::Header<'_>] = parsed.headers;
    // Field names the Connection field lists are hop-by-hop too.
    let listed = Listed::of(fields);
    // Values of the fields ringd extends (from trusted peers) or passes on, in order.
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut fwd: Vec<&[u8]> = Vec::new();
    let mut via: Vec<&[u8]> = Vec::new();
    let mut upgrade: Vec<&[u8]> = Vec::new();
    let mut xfp: Option<&[u8]> = None;
    let mut xfh: Option<&[u8]> = None;
    for f in fields {
        let name = f.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if hop(&HOP_REQUEST, &listed, name) || is("host") {
            if is("via") && trust {
                via.push(f.value);
            }
            if is("upgrade") {
                upgrade.push(f.value);
            }
            continue;
        }
        // Forwarding fields: kept and extended only from trusted peers, set below.
        if is("x-forwarded-for") || is("forwarded") {
            if trust {
                let list = if is("forwarded") { &mut fwd } else { &mut xff };
                list.push(f.value);
            }
            continue;
        }
        if is("x-forwarded-proto") || is("x-forwarded-host") {
            if trust {
                let slot = if is("x-forwarded-proto") {
                    &mut xfp
                } else {
                    &mut xfh
                };
                *slot = Some(f.value);
            }
            continue;
        }
        if edit.is_some_and(|e| {
            e.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
                || e.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        }) {
            continue;
        }
        head::header(&mut h, name, f.value);
    }
    head::header(&mut h, "Host", host);
    // `name: v1, v2, ..., ` with the caller writing the last element and the CRLF.
    let open = |h: &mut Vec<u8>, name: &str, earlier: &[&[u8]]| {
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b": ");
        for v in earlier {
            h.extend_from_slice(v);
            h.extend_from_slice(b", ");
        }
    };
    open(&mut h, "X-Forwarded-For", &xff);
    put_ip(&mut h, peer);
    h.extend_from_slice(b"\r\n");
    let proto: &[u8] = if req.secure { b"https" } else { b"http" };
    head::header(&mut h, "X-Forwarded-Proto", xfp.unwrap_or(proto));
    head::header(&mut h, "X-Forwarded-Host", xfh.unwrap_or(host));
    open(&mut h, "Forwarded", &fwd);
    h.extend_from_slice(b"for=");
    if peer.is_ipv6() {
        h.extend_from_slice(b"\"[");
        put_ip(&mut h, peer);
        h.extend_from_slice(b"]\"");
    } else {
        put_ip(&mut h, peer);
    }
    h.extend_from_slice(b";proto=");
    h.extend_from_slice(proto);
    if !host.is_empty() && host.iter().all(|&b| b.is_ascii_graphic() && b != b'"') {
        h.extend_from_slice(b";host=\"");
        h.extend_from_slice(host);
        h.push(b'"');
    }
    h.extend_from_slice(b"\r\n");
    open(&mut h, "Via", &via);
    h.extend_from_slice(if req.minor == 0 {
        b"1.0 ringd\r\n"
    } else {
        b"1.1 ringd\r\n"
    });
    if let Some(e) = edit {
        for (n, v) in &e.set {
            head::header(&mut h, n, v.as_bytes());
        }
    }
    let tunnel = req.minor == 1 && upgrade.iter().any(|v| !v.is_empty()) && listed.names("upgrade");
    if let (true, Some((last, earlier))) = (tunnel, upgrade.split_last()) {
        open(&mut h, "Upgrade", earlier);
        h.extend_from_slice(last);
        h.extend_from_slice(b"\r\nConnection: upgrade\r\n");
    }
    (h, tunnel)
}

/// The servers an exchange was sent to, in order: the first four inline (a request that is not
/// retried allocates nothing for it).
#[derive(Clone, Debug, Default)]
pub struct Tried {
    first: [usize; 4],
    n: usize,
    /// All of them, once there are more than four.
    more: Vec<usize>,
}

impl Tried {
    pub fn push(&mut self, server: usize) {
        if self.n < self.first.len() {
            self.first[self.n] = server;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.first);
            }
            self.more.push(server);
        }
        self.n += 1;
    }

    pub fn as_slice(&self) -> &[usize] {
        if self.more.is_empty() {
            &self.first[..self.n]
        } else {
            &self.more
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn last(&self) -> Option<usize> {
        self.as_slice().last().copied()
    }
}

/// Writes an address as text (`127.0.0.1`, `::1`) without allocating; IPv4 by hand (the
/// formatter's machinery showed in profiles of the proxy).
fn put_ip(h: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    h.push(b'.');
                }
                head::put_u64(h, u64::from(o));
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write as _;
            let _ = write!(h, "{ip}");
        }
    }
}

impl Exchange {
    /// An exchange for `start` with the request `body` (already read whole).
    pub fn new(mut start: Start, body: &[u8], conn: ConnHeader) -> Exchange {
        // The head becomes the request (request_head left room for the framing): no copy.
        let mut req = std::mem::take(&mut start.head);
        req.reserve(body.len() + 32);
        if !body.is_empty() || start.body_method {
            head::header_u64(&mut req, "Content-Length", body.len() as u64);
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        Exchange::with_req(start, req, conn)
    }

    /// An exchange that sends `req` (head, framing and what there is of the body).
    fn with_req(start: Start, req: Vec<u8>, conn: ConnHeader) -> Exchange {
        Exchange {
            start,
            req,
            sent: 0,
            state: State::Connect,
            server: None,
            tried: Tried::default(),
            head: Vec::new(),
            body: UpBody::None,
            client_chunked: false,
            client_close: false,
            responded: false,
            deadline: None,
            status: 0,
            body_bytes: 0,
            upstream_close: false,
            conn,
            decoded: Vec::new(),
            failure: None,
            cut: false,
            hold_head: false,
            attempt: 0,
            reused: false,
            fresh_only: false,
            cgi: None,
            app: false,
            call: None,
            store: None,
            max_entry: 0,
            encoder: None,
            tunneled: false,
            client_eof: false,
            up_shut: false,
            local_redirect: None,
            streaming: None,
            from_cache: None,
            cache_tag: None,
            splice_min: 0,
            splicing: false,
            pipe_full: false,
            spliced_bytes: 0,
            up_in_pipe: 0,
            spliced_up: 0,
            splice_up: false,
        }
    }

    /// Whether the driver can splice the client → upstream direction too.
    pub fn set_splice_up(&mut self, can: bool) {
        self.splice_up = can;
    }

    /// Whether client bytes may go client socket → pipe → upstream now (a tunnel, or a
    /// streamed Content-Length body of `left` bytes still to come, at least `splice_min`):
    /// the session asks for the rest with `left`.
    pub fn splice_up_ok(&self, left: Option<u64>) -> bool {
        if !self.splice_up || self.splice_min == 0 || self.cgi.is_some() || self.app {
            return false;
        }
        match (&self.state, &self.streaming) {
            (State::Tunnel, _) => !self.client_eof,
            (State::Exchange | State::Body, Some(sb)) => {
                !sb.chunked && !sb.complete && left.is_some_and(|n| n >= self.splice_min)
            }
            _ => false,
        }
    }

    /// `n` client bytes went into the driver's upstream-bound pipe.
    pub fn spliced_up_in(&mut self, n: u64, now: Instant) {
        self.up_in_pipe += n;
        if let Some(sb) = &mut self.streaming {
            // Sent around `req`: the request can no longer be sent again.
            sb.drained = true;
        }
        if self.state == State::Tunnel {
            self.deadline = Some(now + self.start.read_timeout);
        }
    }

    /// Whether client bytes wait in the driver's upstream-bound pipe. The session reads no
    /// more from the client meanwhile: bytes it read would join `req`, which goes out before
    /// the pipe, ahead of bytes the client sent earlier.
    pub fn pipe_up_pending(&self) -> bool {
        self.up_in_pipe > 0
    }

    /// Whether the driver may write its upstream-bound pipe's bytes now (what `req` holds
    /// goes first).
    pub fn pipe_up_next(&self) -> bool {
        self.to_send().is_empty()
    }

    /// `n` bytes of the upstream-bound pipe reached the upstream.
    pub fn spliced_up_out(&mut self, n: u64, now: Instant) {
        let n = n.min(self.up_in_pipe);
        self.up_in_pipe -= n;
        self.spliced_up += n;
        if self.state == State::Tunnel || self.up_in_pipe == 0 && self.cgi.is_none() {
            self.deadline = Some(now + self.start.read_timeout);
        }
    }

    /// Lets Content-Length bodies of at least `min` bytes, and tunnels, be spliced (0: never).
    pub fn set_splice_min(&mut self, min: u64) {
        self.splice_min = min;
    }

    /// How many bytes the driver may splice from the upstream into the client's pipe now
    /// (what is left of a spliced body; unbounded for a tunnel), or None when the body is
    /// read and copied as usual.
    pub fn splice_want(&self) -> Option<u64> {
        if !self.splicing {
            return None;
        }
        match (&self.state, &self.body) {
            (State::Body, UpBody::Length(rem)) if *rem > 0 => Some(*rem),
            (State::Tunnel, _) => Some(u64::MAX),
            _ => None,
        }
    }

    /// The driver cannot splice after all (no pipe free): the body is read and copied.
    pub fn no_splice(&mut self) {
        self.splicing = false;
    }

    /// `n` body bytes went from the upstream into the client's pipe; they are queued as a
    /// pipe piece behind what is queued already.
    pub fn spliced(&mut self, n: u64, out: &mut OutQueue, ctx: &mut Ctx<'_>, now: Instant) {
        if n == 0 || self.splice_want().is_none() {
            return;
        }
        self.deadline = Some(now + self.start.read_timeout);
        self.pipe_full = false;
        self.spliced_bytes += n;
        self.body_bytes += n;
        out.pipe(n);
        if let UpBody::Length(rem) = &mut self.body {
            if self.state == State::Body {
                *rem -= n.min(*rem);
                if *rem == 0 {
                    self.finish(out, ctx);
                }
            }
        }
    }

    /// Whether a body of `len` bytes may go by splice: it reaches the client unchanged (not
    /// compressed, not re-framed, not captured for the cache) from an upstream socket.
    fn may_splice(&mut self, len: u64) -> bool {
        if self.splice_min == 0 || len < self.splice_min || self.cgi.is_some() || self.app {
            return false;
        }
        if self.store.is_some() && len > self.max_entry as u64 {
            // Too large to store: it would stream through uncached anyway.
            self.store = None;
        }
        self.encoder.is_none() && self.store.is_none() && !self.client_chunked && !self.client_close
    }

    /// An exchange for `start` whose request body (framed as `framing`) follows with
    /// [`Exchange::body_in`] as it arrives, instead of being read whole first.
    pub fn new_stream(mut start: Start, framing: Framing, conn: ConnHeader) -> Exchange {
        let mut req = std::mem::take(&mut start.head);
        let chunked = match framing {
            Framing::Length(n) => {
                head::header_u64(&mut req, "Content-Length", n);
                false
            }
            _ => {
                req.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                true
            }
        };
        req.extend_from_slice(b"\r\n");
        let mut x = Exchange::with_req(start, req, conn);
        x.streaming = Some(StreamBody {
            chunked,
            complete: false,
            drained: false,
        });
        x
    }

    /// Request body bytes (decoded) for a streaming exchange.
    pub fn body_in(&mut self, data: &[u8]) {
        let Some(sb) = &mut self.streaming else {
            return;
        };
        if data.is_empty() || sb.complete || matches!(self.state, State::Done { .. }) {
            return;
        }
        debug_assert_eq!(self.up_in_pipe, 0, "body bytes would overtake the pipe's");
        if self.sent > 0 && !matches!(self.state, State::Connect) {
            self.req.drain(..self.sent);
            self.sent = 0;
            sb.drained = true;
        }
        if sb.chunked {
            head::put_hex(&mut self.req, data.len() as u64);
            self.req.extend_from_slice(b"\r\n");
            self.req.extend_from_slice(data);
            self.req.extend_from_slice(b"\r\n");
        } else {
            self.req.extend_from_slice(data);
        }
    }

    /// The streamed request body is complete.
    pub fn body_end(&mut self) {
        if let Some(sb) = &mut self.streaming {
            if !sb.complete && sb.chunked {
                self.req.extend_from_slice(b"0\r\n\r\n");
            }
            sb.complete = true;
        }
    }

    /// The client's body broke off (bad framing, too large, the client left): the upstream
    /// connection cannot be used again, and a response already begun is cut.
    pub fn abort_body(&mut self) {
        if matches!(self.state, State::Done { .. }) {
            return;
        }
        if self.responded {
            self.cut = true;
        } else {
            self.failure = Some(Failure::Bad("the client's body broke off"));
        }
        self.deadline = None;
        self.state = State::Done { reusable: false };
    }

    /// Both directions are live at once: a tunnel, or a streamed request body still coming
    /// in while the response may already flow (a driver must read the client and the
    /// upstream concurrently).
    pub fn duplex(&self) -> bool {
        self.state == State::Tunnel
            || self.streaming.as_ref().is_some_and(|sb| !sb.complete)
                && !matches!(self.state, State::Done { .. })
    }

    /// Capture bodies up to `n` bytes for the cache.
    pub fn set_max_entry(&mut self, n: usize) {
        self.max_entry = n;
    }

    /// An exchange that runs `spawn` (a CGI script) with the request `body` on its stdin.
    pub fn new_cgi(
        start: Start,
        spawn: super::cgi::Spawn,
        body: &[u8],
        conn: ConnHeader,
    ) -> Exchange {
        let mut x = Exchange::new(start, b"", conn);
        x.req = body.to_vec();
        x.cgi = Some(Box::new(spawn));
        x
    }

    /// An exchange that runs `call` on a WSGI app (its body is in the call).
    pub fn new_wsgi(start: Start, call: super::wsgi::Call, conn: ConnHeader) -> Exchange {
        let mut x = Exchange::new(start, b"", conn);
        x.app = true;
        x.call = Some(Box::new(call));
        x
    }

    /// An exchange that runs `call` on a WSGI app while its request body (decoded) follows
    /// with [`Exchange::body_in`]; the driver hands it to the app as `to_send()` and says
    /// `sent`. An app may answer before it read the body: that ends nothing (the session
    /// reads the rest and drops it).
    pub fn new_wsgi_stream(start: Start, call: super::wsgi::Call, conn: ConnHeader) -> Exchange {
        let mut x = Exchange::new_wsgi(start, call, conn);
        x.req.clear();
        x.streaming = Some(StreamBody {
            chunked: false,
            complete: false,
            drained: false,
        });
        x
    }

    /// Whether the request body is streamed to the source as it arrives.
    pub fn streams_body(&self) -> bool {
        self.streaming.is_some()
    }

    /// Whether the streamed request body has been handed over whole (its end included).
    pub fn body_complete(&self) -> bool {
        self.streaming.as_ref().is_some_and(|sb| sb.complete)
    }

    /// Whether the source is a WSGI app.
    pub fn is_app(&self) -> bool {
        self.app
    }

    /// The app call to queue, once (then the driver calls `spawned`).
    pub fn take_call(&mut self) -> Option<Box<super::wsgi::Call>> {
        match self.state {
            State::Connect => self.call.take(),
            _ => None,
        }
    }

    /// The script to spawn, while it is not running yet.
    pub fn spawn_spec(&self) -> Option<&super::cgi::Spawn> {
        match self.state {
            State::Connect => self.cgi.as_deref(),
            _ => None,
        }
    }

    /// The script was spawned (then `to_send` is its stdin, and the driver closes stdin once
    /// it is all written).
    pub fn spawned(&mut self, now: Instant) {
        if self.state == State::Connect {
            self.state = State::Exchange;
            self.sent = 0;
            self.head.clear();
            let t = self
                .cgi
                .as_ref()
                .map_or(self.start.read_timeout, |c| c.timeout);
            self.deadline = Some(now + t);
        }
    }

    /// The server to connect to, once chosen (`Session` picks it) and while not connected;
    /// a driver that already holds a socket for this `attempt` just waits for it.
    pub fn connect_to(&self) -> Option<(usize, usize)> {
        if self.cgi.is_some() || self.app {
            return None;
        }
        match (&self.state, self.server) {
            (State::Connect, Some(s)) => Some((self.start.group, s)),
            _ => None,
        }
    }

    /// The driver has a connection to the chosen server (`reused`: from its pool).
    pub fn connected(&mut self, now: Instant, reused: bool) {
        self.reused = reused;
        if self.state == State::Connect {
            self.state = State::Exchange;
            self.sent = 0;
            self.head.clear();
            self.deadline = Some(now + self.start.read_timeout);
        }
    }

    /// Bytes of the request still to send.
    pub fn to_send(&self) -> &[u8] {
        match self.state {
            State::Exchange | State::Tunnel => &self.req[self.sent..],
            // A streamed body may still be going out while the response comes back.
            State::Body if self.streaming.is_some() => &self.req[self.sent..],
            _ => &[],
        }
    }

    /// `n` request bytes were written to the upstream.
    pub fn sent(&mut self, n: usize, now: Instant) {
        self.sent = (self.sent + n).min(self.req.len());
        if self.state == State::Tunnel {
            self.deadline = Some(now + self.start.read_timeout);
            if self.sent == self.req.len() {
                self.req.clear();
                self.sent = 0;
            }
            return;
        }
        if self.sent == self.req.len() && self.cgi.is_none() {
            self.deadline = Some(now + self.start.read_timeout);
        }
    }

    /// Whether the exchange was a tunnel (it answered 101).
    pub fn was_tunnel(&self) -> bool {
        self.tunneled
    }

    /// Whether the response head queued for the client should wait for the first body bytes:
    /// a Content-Length response whose head came alone (gunicorn writes head and body with two
    /// sends) goes to the client as one segment instead of two, as nginx's `postpone_output`
    /// does. Only a head that is alone in the queue, never with compression or splicing; the
    /// wait ends with the first body byte, the end of the body, or any failure (the exchange
    /// is then done and the head goes out as before, cut or not).
    pub fn holds_head(&self) -> bool {
        self.hold_head && self.state == State::Body && self.body_bytes == 0 && !self.splicing
    }

    /// Whether the exchange is a tunnel now (after a 101).
    pub fn tunneling(&self) -> bool {
        self.state == State::Tunnel
    }

    /// Client bytes held for the upstream and not written yet (a tunnel's, or a streamed
    /// request body's).
    pub fn backlog(&self) -> usize {
        self.req.len() - self.sent + self.up_in_pipe as usize
    }

    /// Bytes from the client of a tunnel, for the upstream.
    pub fn tunnel_in(&mut self, data: &[u8], now: Instant) {
        if self.state != State::Tunnel {
            return;
        }
        debug_assert_eq!(self.up_in_pipe, 0, "tunnel bytes would overtake the pipe's");
        if self.sent > 0 {
            self.req.drain(..self.sent);
            self.sent = 0;
        }
        self.req.extend_from_slice(data);
        self.deadline = Some(now + self.start.read_timeout);
    }

    /// The client closed its sending side of the tunnel (a half-close, passed on).
    pub fn tunnel_client_eof(&mut self) {
        if self.state == State::Tunnel {
            self.client_eof = true;
        }
    }

    /// The driver should shut the upstream's sending side now (then `tunnel_shut`): the
    /// client closed its side and all it sent is delivered.
    pub fn tunnel_shutdown_due(&self) -> bool {
        self.state == State::Tunnel
            && self.client_eof
            && !self.up_shut
            && self.sent == self.req.len()
            && self.up_in_pipe == 0
    }

    /// The upstream's sending side is shut down.
    pub fn tunnel_shut(&mut self) {
        self.up_shut = true;
    }

    /// Ends a tunnel (a timeout or a broken socket on either side).
    pub fn end_tunnel(&mut self) {
        if self.state == State::Tunnel {
            self.state = State::Done { reusable: false };
            self.deadline = None;
        }
    }

    /// Whether the driver should read from the upstream (false when the client is behind by
    /// more than the response buffer, or nothing is expected).
    pub fn wants_read(&self, queued: usize) -> bool {
        matches!(self.state, State::Exchange | State::Body | State::Tunnel)
            && queued < self.start.buffer
            && self.splice_want().is_none()
    }

    /// Whether the upstream is left unread because the client is behind by the whole response
    /// buffer (`queued` bytes). The read timer does not run then: `read_timeout` is the time
    /// between two reads from the upstream while ringd wants to read, as nginx's
    /// `proxy_read_timeout` is; a slow client is the send-stall timer's business.
    pub fn held_back(&self, queued: usize) -> bool {
        matches!(self.state, State::Body | State::Tunnel)
            && (queued >= self.start.buffer || self.pipe_full)
    }

    /// The driver's splice pipe is full (no room, or out of slots) while the upstream has
    /// bytes for it: the client, not the upstream, is what ringd waits for. A pipe smaller
    /// than `buffer_responses` (or one whose slots run out first) would otherwise leave the
    /// read timer running against a client that merely pauses.
    pub fn pipe_full(&mut self) {
        self.pipe_full = true;
    }

    /// The client took response bytes: the read timer starts again now, so that time spent
    /// waiting for a slow client (a full response buffer or splice pipe, or a driver that
    /// cannot read the upstream while it writes to the client) never counts against the
    /// upstream, which gets a whole `read_timeout` once ringd reads from it again.
    pub fn client_progress(&mut self, now: Instant) {
        self.pipe_full = false;
        if matches!(self.state, State::Body | State::Tunnel) && self.deadline.is_some() {
            self.deadline = Some(now + self.start.read_timeout);
        }
    }

    /// Finished: Some(whether the upstream connection may be pooled).
    pub fn finished(&self) -> Option<bool> {
        match self.state {
            State::Done { reusable } => Some(reusable),
            _ => None,
        }
    }

    /// Whether a failure now may go to another server (the retry rule).
    pub fn may_retry(&self) -> bool {
        !self.responded
            && self.head.is_empty()
            && (self.start.idempotent || self.sent == 0)
            && !self.streaming.as_ref().is_some_and(|sb| sb.drained)
            && (self.tried.len() as u32) <= self.start.retries
    }

    /// A pooled connection failed before any response byte: the upstream most likely closed
    /// it while idle, racing this request. Once per request, the same server again on a new
    /// connection (the request cannot have been processed: nothing came back).
    pub fn retry_stale(&mut self, now: Instant) -> bool {
        if !self.reused || self.fresh_only || self.responded || !self.head.is_empty() {
            return false;
        }
        // A request that must not be sent twice is never retried once any of it went out:
        // the upstream may have crashed while processing it, not merely closed an idle
        // connection (its drivers always peek a pooled connection for it instead).
        if !self.start.idempotent && self.sent > 0 {
            return false;
        }
        if self.streaming.as_ref().is_some_and(|sb| sb.drained) {
            return false;
        }
        let Some(s) = self.server else { return false };
        self.fresh_only = true;
        self.attempt += 1;
        self.state = State::Connect;
        self.sent = 0;
        self.deadline = Some(now + self.start.connect_timeout);
        self.server = Some(s);
        true
    }

    /// Start over on a new server (chosen by the caller): nothing of the response arrived.
    pub fn retry(&mut self, server: usize, now: Instant) {
        self.attempt += 1;
        self.server = Some(server);
        self.tried.push(server);
        self.state = State::Connect;
        self.sent = 0;
        self.head.clear();
        self.deadline = Some(now + self.start.connect_timeout);
    }

    /// Ends the exchange after a failure: a 502/504 page when nothing was sent to the client
    /// yet, else the response is cut (the caller closes the client connection).
    pub fn fail(&mut self, why: Failure, out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        self.failure = Some(why);
        self.store = None;
        self.state = State::Done { reusable: false };
        self.deadline = None;
        if self.responded {
            self.cut = true;
            return;
        }
        let cgi = self.cgi.is_some();
        let app = self.app;
        let (status, msg): (u16, &[u8]) = match why {
            Failure::Timeout if app => (
                504,
                b"504 Gateway Timeout: the app did not answer in time\n",
            ),
            Failure::Connect if app => (
                502,
                b"502 Bad Gateway: no WSGI app runs in this server (use ringd-wsgi)\n",
            ),
            _ if app => (
                500,
                b"500 Internal Server Error: the app failed (see the error log)\n",
            ),
            Failure::Timeout if cgi => (
                504,
                b"504 Gateway Timeout: the CGI script ran past its timeout\n",
            ),
            Failure::Bad(_) if cgi => (
                502,
                b"502 Bad Gateway: the CGI script's output was malformed or missing\n",
            ),
            Failure::Connect if cgi => (502, b"502 Bad Gateway: the CGI script could not start\n"),
            Failure::Timeout => (
                504,
                b"504 Gateway Timeout: the upstream did not answer in time\n",
            ),
            Failure::Connect => (
                502,
                b"502 Bad Gateway: the upstream refused or dropped the connection\n",
            ),
            Failure::Bad(_) => (
                502,
                b"502 Bad Gateway: the upstream's response was malformed\n",
            ),
            Failure::Cut => (
                502,
                b"502 Bad Gateway: the upstream's response ended early\n",
            ),
        };
        self.status = status;
        self.error_page(status, msg, out, ctx);
    }

    /// Answered from elsewhere (a stale cached copy on an upstream error): done, nothing to
    /// pool, no failure to report.
    pub fn answered(&mut self, status: u16, body_bytes: u64) {
        self.state = State::Done { reusable: false };
        self.deadline = None;
        self.status = status;
        self.body_bytes = body_bytes;
        self.responded = true;
        self.store = None;
    }

    /// No server to send to (all down or tried): 503.
    pub fn unavailable(&mut self, out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        self.state = State::Done { reusable: false };
        self.failure = Some(Failure::Connect);
        self.status = 503;
        let msg: &[u8] = if self.app {
            b"503 Service Unavailable: every app thread is busy and the queue is full\n"
        } else if self.cgi.is_some() {
            b"503 Service Unavailable: too many CGI processes are running\n"
        } else {
            b"503 Service Unavailable: no upstream server is available\n"
        };
        self.error_page(503, msg, out, ctx);
    }

    fn error_page(&mut self, status: u16, msg: &[u8], out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        let buf = out.bytes(ctx.pool);
        head::start(buf, status, ctx.date, ctx.server);
        buf.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        let len = if self.start.head_request {
            0
        } else {
            msg.len()
        };
        head::header_u64(buf, "Content-Length", msg.len() as u64);
        let at = buf.len();
        buf.extend_from_slice(self.conn.line());
        buf.extend_from_slice(b"\r\n");
        if len > 0 {
            buf.extend_from_slice(msg);
        }
        out.mark_conn(at, self.conn.line().len());
        out.end_response();
        self.responded = true;
        self.body_bytes = len as u64;
    }

    /// Bytes from the upstream. Relays what it can into `out`; Err means the upstream broke
    /// the protocol (the caller fails the exchange).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut OutQueue,
        ctx: &mut Ctx<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        // Between two reads for an upstream; a CGI script's timeout runs from its start.
        if self.cgi.is_none() {
            self.deadline = Some(now + self.start.read_timeout);
        }
        while !data.is_empty() {
            match self.state {
                State::Exchange => {
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    let end = if self.cgi.is_some() {
                        super::cgi::head_end(&self.head)
                    } else {
                        find_head_end(&self.head)
                    };
                    if end.unwrap_or(self.head.len()) > MAX_RESPONSE_HEAD {
                        return Err(Failure::Bad("response head too large"));
                    }
                    let Some(end) = end else {
                        return Ok(());
                    };
                    let used = end - before;
                    data = &data[used..];
                    let head = std::mem::take(&mut self.head);
                    if self.cgi.is_some() {
                        if let Some(path) = super::cgi::local_redirect(&head[..end]) {
                            self.local_redirect = Some(path);
                            self.deadline = None;
                            self.state = State::Done { reusable: false };
                            return Ok(());
                        }
                    }
                    let again = if self.cgi.is_some() {
                        let http = super::cgi::to_http_head(&head[..end]).map_err(Failure::Bad)?;
                        self.on_head(&http, out, ctx)?
                    } else {
                        self.on_head(&head[..end], out, ctx)?
                    };
                    if again {
                        // An interim (1xx) response: the final one follows.
                        self.head.clear();
                        continue;
                    }
                    if self.state == State::Tunnel {
                        // Switched protocols: what follows the 101 is tunnel data.
                        continue;
                    }
                    self.head = head;
                    self.head.truncate(end);
                    if matches!(self.body, UpBody::None) {
                        self.finish(out, ctx);
                        return Ok(());
                    }
                    self.state = State::Body;
                    if let UpBody::Length(n) = self.body {
                        // What came with the head is copied; the rest may be spliced.
                        self.splicing = self.may_splice(n);
                    }
                }
                State::Body => {
                    let n = self.relay(data, out, ctx)?;
                    data = &data[n..];
                    if matches!(self.state, State::Done { .. }) {
                        if !data.is_empty() {
                            // Bytes past the end of the response: the connection is not
                            // reusable (HTTP/1.1 has no unsolicited responses).
                            self.state = State::Done { reusable: false };
                        }
                        return Ok(());
                    }
                }
                State::Tunnel => {
                    self.body_bytes += data.len() as u64;
                    out.bytes(ctx.pool).extend_from_slice(data);
                    return Ok(());
                }
                State::Connect | State::Done { .. } => return Ok(()),
            }
        }
        Ok(())
    }

    /// The upstream closed its side.
    pub fn eof(&mut self, out: &mut OutQueue, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        match (&self.state, &self.body) {
            (State::Tunnel, _) => {
                self.end_tunnel();
                Ok(())
            }
            (State::Body, UpBody::UntilClose) => {
                self.upstream_close = true;
                self.finish(out, ctx);
                Ok(())
            }
            (State::Exchange, _) if self.cgi.is_some() => {
                Err(Failure::Bad("the CGI script ended before its header"))
            }
            (State::Exchange, _) if self.head.is_empty() => Err(Failure::Connect),
            (State::Done { .. }, _) => Ok(()),
            _ => Err(Failure::Cut),
        }
    }

    /// Parses a response head; queues the client's head. Ok(true) for an interim response.
    fn on_head(
        &mut self,
        raw: &[u8],
        out: &mut OutQueue,
        ctx: &mut Ctx<'_>,
    ) -> Result<bool, Failure> {
        // 32 slots first (1 KiB to clear, not 4 per response: httparse's Response has no
        // uninit parse); a head with more fields is parsed again with all of them.
        let mut few = [httparse::EMPTY_HEADER; 32];
        let mut all;
        let mut r = httparse::Response::new(&mut few);
        let mut parsed = r.parse(raw);
        if matches!(parsed, Err(httparse::Error::TooManyHeaders)) {
            all = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
            r = httparse::Response::new(&mut all);
            parsed = r.parse(raw);
        }
        match parsed {
            Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
            Ok(_) => return Err(Failure::Bad("incomplete response head")),
            Err(_) => return Err(Failure::Bad("malformed response head")),
        }
        let status = r.code.unwrap_or(0);
        let minor = r.version.unwrap_or(1);
        if !(100..=999).contains(&status) {
            return Err(Failure::Bad("bad status code"));
        }
        let mut cl: Option<u64> = None;
        let mut te_chunked = false;
        let mut te_seen = false;
        let mut close = minor == 0;
        let mut ka_10 = false;
        for f in r.headers.iter() {
            if f.name.eq_ignore_ascii_case("content-length") {
                let v = framing::parse_decimal(framing::trim(f.value))
                    .ok_or(Failure::Bad("invalid Content-Length"))?;
                if cl.is_some_and(|c| c != v) {
                    return Err(Failure::Bad("two different Content-Lengths"));
                }
                cl = Some(v);
            } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
                te_seen = true;
                let mut last = None;
                for t in framing::list(f.value) {
                    last = Some(t);
                }
                te_chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if f.name.eq_ignore_ascii_case("connection") {
                for t in framing::list(f.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        ka_10 = true;
                    }
                }
            }
        }
        if minor == 0 && ka_10 && !close {
            close = false;
        }
        if te_seen && cl.is_some() {
            return Err(Failure::Bad("Content-Length with Transfer-Encoding"));
        }
        if te_seen && !te_chunked {
            return Err(Failure::Bad("a transfer coding other than chunked"));
        }
        if (100..200).contains(&status) {
            if status == 101 {
                if !self.start.upgrade || self.cgi.is_some() {
                    return Err(Failure::Bad("101 without an Upgrade request"));
                }
                let Some(proto) = r
                    .headers
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case("upgrade"))
                    .map(|f| f.value)
                else {
                    return Err(Failure::Bad("101 without an Upgrade field"));
                };
                let buf = out.bytes(ctx.pool);
                buf.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
                copy_fields(buf, r.headers);
                head::header(buf, "Upgrade", proto);
                buf.extend_from_slice(b"Connection: upgrade\r\n\r\n");
                out.end_response();
                self.status = 101;
                self.responded = true;
                self.tunneled = true;
                self.upstream_close = true;
                self.state = State::Tunnel;
                self.splicing = self.splice_min > 0 && self.cgi.is_none();
                return Ok(false);
            }
            // Interim responses go to HTTP/1.1 clients only (RFC 9110 §15.2), never 100
            // (ringd read the body itself, so the client is not waiting for one).
            if status != 100 && !self.start.client_10 {
                let buf = out.bytes(ctx.pool);
                buf.extend_from_slice(b"HTTP/1.1 ");
                head::put_u64(buf, u64::from(status));
                buf.push(b' ');
                buf.extend_from_slice(r.reason.unwrap_or("").as_bytes());
                buf.extend_from_slice(b"\r\n");
                copy_fields(buf, r.headers);
                buf.extend_from_slice(b"\r\n");
            }
            return Ok(true);
        }
        self.upstream_close = close;
        self.status = status;
        if let Some(fc) = self.cache_answer(status, &r, ctx) {
            // Nothing of this response goes to the client (the body of a 5xx is left unread).
            self.from_cache = Some(fc);
            self.body = UpBody::None;
            self.upstream_close |= status != 304;
            return Ok(false);
        }
        let bodyless = self.start.head_request || status == 204 || status == 304;
        self.body = if bodyless {
            UpBody::None
        } else if te_chunked {
            UpBody::Chunked(
                BodyReader::new(Framing::Chunked, u64::MAX, 64 * 1024)
                    .map_err(|_| Failure::Bad("chunked"))?,
            )
        } else if let Some(n) = cl {
            if n == 0 {
                UpBody::None
            } else {
                UpBody::Length(n)
            }
        } else {
            UpBody::UntilClose
        };
        // The cache: may this response be stored (and is the route caching at all)?
        let fresh_for = self.start.cache.as_ref().and_then(|ci| {
            if !ci.get || self.start.head_request {
                return None;
            }
            let mut f = crate::cache::ResponseFacts {
                status,
                ..Default::default()
            };
            for h in r.headers.iter() {
                let n = h.name;
                if n.eq_ignore_ascii_case("cache-control") {
                    f.cache_control.push(h.value);
                } else if n.eq_ignore_ascii_case("expires") {
                    f.expires = Some(h.value);
                } else if n.eq_ignore_ascii_case("date") {
                    f.date = Some(h.value);
                } else if n.eq_ignore_ascii_case("set-cookie") {
                    f.set_cookie = true;
                } else if n.eq_ignore_ascii_case("vary") {
                    f.vary.push(h.value);
                } else if n.eq_ignore_ascii_case("etag") || n.eq_ignore_ascii_case("last-modified")
                {
                    f.validator = true;
                }
            }
            match crate::cache::storable(&f, ci.authorized, &ci.policy) {
                crate::cache::Storable::Fresh(d) => Some(d),
                crate::cache::Storable::No(_) => None,
            }
        });
        let vary: Vec<String> = r
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("vary"))
            .flat_map(|h| {
                framing::list(h.value).map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
            })
            .collect();
        let x_cache: Option<&'static str> = self.start.cache.as_ref().map(|ci| {
            if ci.get || self.start.head_request {
                "MISS"
            } else {
                "BYPASS"
            }
        });
        self.cache_tag = x_cache;
        // On-the-fly compression: a route that compresses, a client that accepts the coding,
        // a compressible type not already encoded, a body worth it, not a range or HEAD.
        let field = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let vary_ae = self.start.compress_route
            && field("content-type").is_some_and(super::compress::compressible);
        if let (Some(c), true) = (self.start.compress, vary_ae) {
            let worth = cl.is_none_or(|n| n >= super::compress::MIN_SIZE);
            let plain = field("content-encoding").is_none() && field("content-range").is_none();
            if worth && plain && !self.start.head_request && !matches!(status, 204 | 206 | 304) {
                self.encoder = super::compress::Encoder::new(c).ok();
            }
        }
        let coding = self.encoder.as_ref().and(self.start.compress);
        let mut vary = vary;
        if vary_ae && !vary.iter().any(|v| v == "accept-encoding") {
            vary.push("accept-encoding".into());
        }
        // The client's framing.
        let alone = out.is_empty();
        let buf = out.bytes(ctx.pool);
        buf.extend_from_slice(b"HTTP/1.1 ");
        head::put_u64(buf, u64::from(status));
        buf.push(b' ');
        let reason = r
            .reason
            .filter(|s| !s.is_empty())
            .unwrap_or(head::reason(status));
        buf.extend_from_slice(reason.as_bytes());
        buf.extend_from_slice(b"\r\n");
        let fields_at = buf.len();
        // The origin's Date stays (RFC 9110 §6.6.1: it says when the response was generated,
        // which a cache's Age and freshness build on); ringd adds its own only when there is
        // none.
        buf.extend_from_slice(b"Date: ");
        match field("date").filter(|v| !v.is_empty()) {
            Some(v) => buf.extend_from_slice(v),
            None => buf.extend_from_slice(ctx.date),
        }
        buf.extend_from_slice(b"\r\n");
        let listed = Listed::of(r.headers);
        for f in r.headers.iter() {
            if hop(&HOP_RESPONSE, &listed, f.name) {
                continue;
            }
            if vary_ae && f.name.eq_ignore_ascii_case("vary") {
                continue; // rewritten below with Accept-Encoding
            }
            buf.extend_from_slice(f.name.as_bytes());
            buf.extend_from_slice(b": ");
            let etag = f.name.eq_ignore_ascii_case("etag");
            if coding.is_some() && etag && !f.value.starts_with(b"W/") {
                // Another representation: the strong validator cannot carry over.
                buf.extend_from_slice(b"W/");
            }
            buf.extend_from_slice(f.value);
            buf.extend_from_slice(b"\r\n");
        }
        if vary_ae {
            let mut v = r
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("vary"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            if !v.to_ascii_lowercase().contains("accept-encoding") {
                if !v.is_empty() {
                    v.push_str(", ");
                }
                v.push_str("Accept-Encoding");
            }
            head::header(buf, "Vary", v.as_bytes());
        }
        if let Some(c) = coding {
            head::header(buf, "Content-Encoding", c.token().as_bytes());
        }
        if !r
            .headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case("server"))
        {
            head::header(buf, "Server", ctx.server.as_bytes());
        }
        if let (Some(d), false) = (fresh_for, self.max_entry == 0) {
            self.store = Some(Box::new(Store {
                status,
                reason: reason.to_string(),
                fields: buf[fields_at..].to_vec(),
                body: Vec::new(),
                vary,
                fresh_for: d,
            }));
        }
        if let Some(tag) = x_cache {
            head::header(buf, "X-Cache", tag.as_bytes());
        }
        match (&self.body, cl) {
            // Compressed: the length is not known in advance.
            (UpBody::Length(_) | UpBody::Chunked(_) | UpBody::UntilClose, _)
                if coding.is_some() && self.start.client_10 =>
            {
                self.client_close = true
            }
            (UpBody::Length(_) | UpBody::Chunked(_) | UpBody::UntilClose, _)
                if coding.is_some() =>
            {
                self.client_chunked = true;
                buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
            (UpBody::Length(_), Some(n)) => head::header_u64(buf, "Content-Length", n),
            (UpBody::None, _) if status == 204 || status == 304 => {}
            (UpBody::None, Some(n)) => head::header_u64(buf, "Content-Length", n),
            (UpBody::None, None) if self.start.head_request && !te_chunked => {}
            (UpBody::None, None) if self.start.head_request => {
                if !self.start.client_10 {
                    buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
            }
            (UpBody::None, None) => head::header_u64(buf, "Content-Length", 0),
            _ if self.start.client_10 => self.client_close = true,
            _ => {
                self.client_chunked = true;
                buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        if self.client_close {
            self.conn = ConnHeader::Close;
        }
        let at = buf.len();
        buf.extend_from_slice(self.conn.line());
        buf.extend_from_slice(b"\r\n");
        out.mark_conn(at, self.conn.line().len());
        self.responded = true;
        self.hold_head = alone && coding.is_none() && matches!(self.body, UpBody::Length(_));
        Ok(false)
    }

    /// Whether the cache answers instead of this response: a 304 to its revalidation (the
    /// fields that refresh the stored head), or a 502/503/504 while a stale copy may answer.
    fn cache_answer(
        &self,
        status: u16,
        r: &httparse::Response<'_, '_>,
        ctx: &Ctx<'_>,
    ) -> Option<FromCache> {
        let ci = self.start.cache.as_ref()?;
        if matches!(status, 502..=504) && ci.stale_ok {
            return Some(FromCache::Stale);
        }
        if status != 304 || !ci.revalidating {
            return None;
        }
        let mut fields = Vec::new();
        fields.extend_from_slice(b"Date: ");
        fields.extend_from_slice(ctx.date);
        fields.extend_from_slice(b"\r\n");
        let mut f = crate::cache::ResponseFacts {
            status: 200,
            validator: true,
            ..Default::default()
        };
        for h in r.headers.iter() {
            let n = h.name;
            if hop(&HOP_RESPONSE, &Listed::of(&[]), n) {
                continue;
            }
            if n.eq_ignore_ascii_case("cache-control") {
                f.cache_control.push(h.value);
            } else if n.eq_ignore_ascii_case("expires") {
                f.expires = Some(h.value);
            }
            fields.extend_from_slice(n.as_bytes());
            fields.extend_from_slice(b": ");
            fields.extend_from_slice(h.value);
            fields.extend_from_slice(b"\r\n");
        }
        let fresh_for = match crate::cache::storable(&f, ci.authorized, &ci.policy) {
            crate::cache::Storable::Fresh(d) => Some(d),
            crate::cache::Storable::No(_) => None,
        };
        Some(FromCache::Refresh { fields, fresh_for })
    }

    /// Relays body bytes; returns how many of `data` belonged to the body.
    fn relay(
        &mut self,
        data: &[u8],
        out: &mut OutQueue,
        ctx: &mut Ctx<'_>,
    ) -> Result<usize, Failure> {
        let mut dec = std::mem::take(&mut self.decoded);
        dec.clear();
        let (used, done, decoded) = match &mut self.body {
            UpBody::Length(rem) => {
                let n = (*rem).min(data.len() as u64) as usize;
                *rem -= n as u64;
                (n, *rem == 0, false)
            }
            UpBody::UntilClose => (data.len(), false, false),
            UpBody::Chunked(r) => {
                let n = r
                    .feed_into(data, Some(&mut dec))
                    .map_err(|_| Failure::Bad("invalid chunked body"))?;
                (n, r.done(), true)
            }
            UpBody::None => (0, true, false),
        };
        if decoded {
            self.put(&dec, out, ctx);
        } else {
            self.put(&data[..used], out, ctx);
        }
        self.decoded = dec;
        if done {
            self.finish(out, ctx);
        }
        Ok(used)
    }

    /// Body bytes that are `len` bytes of the file `fd` from `off` (a WSGI app's
    /// `wsgi.file_wrapper`): queued as a file piece, so the driver sends them with
    /// sendfile/splice, unless they must pass through memory (compressing, or captured for the
    /// cache), then read here.
    pub fn feed_file(
        &mut self,
        fd: &std::sync::Arc<std::os::fd::OwnedFd>,
        off: u64,
        len: u64,
        out: &mut OutQueue,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Failure> {
        if self.state != State::Body {
            return Ok(());
        }
        let n = match self.body {
            UpBody::Length(rem) => rem.min(len),
            UpBody::UntilClose => len,
            _ => return Err(Failure::Bad("a file body in an unexpected framing")),
        };
        if self.encoder.is_some() || self.store.is_some() {
            let mut buf = vec![0u8; n as usize];
            let f = std::fs::File::from(fd.try_clone().map_err(|_| Failure::Cut)?);
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off)
                .map_err(|_| Failure::Cut)?;
            self.relay(&buf, out, ctx)?;
            return Ok(());
        }
        self.body_bytes += n;
        if self.client_chunked && n > 0 {
            let buf = out.bytes(ctx.pool);
            head::put_hex(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        out.file(fd, off, n);
        if self.client_chunked && n > 0 {
            out.bytes(ctx.pool).extend_from_slice(b"\r\n");
        }
        if let UpBody::Length(rem) = &mut self.body {
            *rem -= n;
            if *rem == 0 {
                self.finish(out, ctx);
            }
        }
        Ok(())
    }

    fn put(&mut self, data: &[u8], out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        if data.is_empty() {
            return;
        }
        if let Some(e) = &mut self.encoder {
            match e.write(data) {
                Ok(z) => self.emit(&z, out, ctx),
                Err(_) => self.encoder = None,
            }
            return;
        }
        self.emit(data, out, ctx);
    }

    /// Queues body bytes (as sent: compressed when compressing) for the client, framed, and
    /// captures them for the cache.
    fn emit(&mut self, data: &[u8], out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        if data.is_empty() {
            return;
        }
        if let Some(st) = &mut self.store {
            if st.body.len() + data.len() > self.max_entry {
                // Larger than an entry may be: it streams through uncached.
                self.store = None;
            } else {
                st.body.extend_from_slice(data);
            }
        }
        self.body_bytes += data.len() as u64;
        let buf = out.bytes(ctx.pool);
        if self.client_chunked {
            head::put_hex(buf, data.len() as u64);
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(data);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(data);
        }
    }

    fn finish(&mut self, out: &mut OutQueue, ctx: &mut Ctx<'_>) {
        if self.from_cache.is_some() {
            // The session answers from the cache; nothing was queued here.
            self.deadline = None;
            self.state = State::Done {
                reusable: !self.upstream_close,
            };
            return;
        }
        if let Some(e) = self.encoder.take() {
            match e.finish() {
                Ok(rest) => self.emit(&rest, out, ctx),
                // Cannot end the compressed stream: the response is cut.
                Err(_) => {
                    self.cut = true;
                    self.state = State::Done { reusable: false };
                    return;
                }
            }
        }
        if self.client_chunked {
            out.bytes(ctx.pool).extend_from_slice(b"0\r\n\r\n");
        }
        out.end_response();
        self.deadline = None;
        // A response that came back before the streamed body was all sent leaves both
        // connections out of step: neither is used again.
        // (Not so for an app: the session reads what is left of the body and drops it.)
        let unsent = !self.app
            && self.streaming.as_ref().is_some_and(|sb| {
                !sb.complete || self.sent < self.req.len() || self.up_in_pipe > 0
            });
        if unsent {
            self.client_close = true;
        }
        self.state = State::Done {
            reusable: !self.upstream_close && !unsent,
        };
    }

    /// The client connection must close after this response (close-delimited to HTTP/1.0,
    /// or a response cut short).
    pub fn closes_client(&self) -> bool {
        self.client_close || self.cut || self.tunneled
    }
}

/// Whether field `name` is hop-by-hop: in `fixed`, or named by a Connection field (`listed`).
/// Compared without allocating: this runs for every field of every proxied message.
fn hop(fixed: &[&str], listed: &Listed<'_>, name: &str) -> bool {
    fixed.iter().any(|h| h.eq_ignore_ascii_case(name)) || listed.names(name)
}

/// The field names a message's Connection fields list (`Connection: keep-alive, X-Foo`): the
/// first eight on the stack (no allocation per message), past that looked up in the fields.
struct Listed<'a> {
    few: [&'a [u8]; 8],
    n: usize,
    fields: Option<&'a [httparse::Header<'a>]>,
}

impl<'a> Listed<'a> {
    fn of(fields: &'a [httparse::Header<'a>]) -> Listed<'a> {
        let mut l = Listed {
            few: [&[]; 8],
            n: 0,
            fields: None,
        };
        for t in Self::tokens(fields) {
            if l.n == l.few.len() {
                l.fields = Some(fields);
                break;
            }
            l.few[l.n] = t;
            l.n += 1;
        }
        l
    }

    /// Whether a Connection field lists `name` (case-insensitive).
    fn names(&self, name: &str) -> bool {
        let name = name.as_bytes();
        match self.fields {
            None => self.few[..self.n]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name)),
            Some(fields) => Self::tokens(fields).any(|t| t.eq_ignore_ascii_case(name)),
        }
    }

    /// Every name the Connection fields among `fields` list, in order.
    fn tokens(fields: &'a [httparse::Header<'a>]) -> impl Iterator<Item = &'a [u8]> {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .flat_map(|f| framing::list(f.value))
    }
}

/// What rendering needs from the worker.
pub struct Ctx<'a> {
    pub pool: &'a mut BufPool,
    pub date: &'a [u8; DATE_LEN],
    pub server: &'a str,
}

/// Copies a response's end-to-end fields: hop-by-hop ones (fixed, and those its Connection
/// field names) stay behind.
fn copy_fields(buf: &mut Vec<u8>, fields: &[httparse::Header<'_>]) {
    let listed = Listed::of(fields);
    for f in fields
        .iter()
        .filter(|f| !hop(&HOP_RESPONSE, &listed, f.name))
    {
        buf.extend_from_slice(f.name.as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(f.value);
        buf.extend_from_slice(b"\r\n");
    }
}

/// The end of a head (index after its blank line).
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::proto::parse::{parse, Parsed};
    use crate::session::Output;

    fn req_head(raw: &[u8], peer: &str, trusted: &[Cidr]) -> String {
        let Ok(Parsed::Complete(r)) = parse(raw, &Limits::default()) else {
            panic!("parse")
        };
        let (h, _) = request_head(
            &r,
            &[r.path_query],
            r.fields.host.unwrap_or(b""),
            peer.parse().unwrap(),
            trusted,
            None,
        );
        String::from_utf8(h).unwrap()
    }

    #[test]
    fn addresses_are_written_as_std_formats_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.100.9.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut h = Vec::new();
            put_ip(&mut h, ip);
            assert_eq!(h, ip.to_string().into_bytes());
        }
    }

    #[test]
    fn hop_by_hop_fields_are_removed_and_forwarding_fields_set() {
        let h = req_head(
            b"GET /a?b HTTP/1.1\r\nHost: x.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: x\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\n\r\n",
            "10.0.0.9",
            &[],
        );
        assert!(h.starts_with("GET /a?b HTTP/1.1\r\n"), "{h}");
        for gone in [
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Upgrade",
            "Proxy-Connection",
            "6.6.6.6",
            "Connection:",
        ] {
            assert!(!h.contains(gone), "{gone} forwarded:\n{h}");
        }
        assert!(h.contains("Accept: */*\r\n"), "{h}");
        assert!(h.contains("Host: x.test\r\n"), "{h}");
        assert!(h.contains("X-Forwarded-For: 10.0.0.9\r\n"), "{h}");
        assert!(h.contains("X-Forwarded-Proto: http\r\n"), "{h}");
        assert!(
            h.contains("Forwarded: for=10.0.0.9;proto=http;host=\"x.test\"\r\n"),
            "{h}"
        );
        assert!(h.contains("Via: 1.1 ringd\r\n"), "{h}");
    }

    #[test]
    fn trusted_peers_extend_the_chain() {
        let t = [Cidr::parse("10.0.0.0/8").unwrap()];
        let h = req_head(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\r\n",
            "10.0.0.9",
            &t,
        );
        assert!(h.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"), "{h}");
        assert!(h.contains("X-Forwarded-Proto: https\r\n"), "{h}");
    }

    /// A request that came over HTTPS (rustls or kernel TLS) says so upstream, whoever
    /// the peer is; a trusted peer's own X-Forwarded-Proto still wins.
    #[test]
    fn https_requests_forward_proto_https() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n";
        let Ok(Parsed::Complete(r)) = parse(raw, &Limits::default()) else {
            panic!("parse")
        };
        let r = Request { secure: true, ..r };
        let head = |trusted: &[Cidr]| {
            let (h, _) = request_head(&r, &["/"], b"x", "10.0.0.9".parse().unwrap(), trusted, None);
            String::from_utf8(h).unwrap()
        };
        let h = head(&[]);
        assert!(h.contains("X-Forwarded-Proto: https\r\n"), "{h}");
        assert!(h.contains(";proto=https;"), "{h}");
        let h = head(&[Cidr::parse("10.0.0.0/8").unwrap()]);
        assert!(h.contains("X-Forwarded-Proto: http\r\n"), "{h}");
        assert!(h.contains(";proto=https;"), "{h}");
    }

    fn start(head_request: bool, client_10: bool) -> Start {
        Start {
            group: 0,
            head: b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(),
            idempotent: true,
            head_request,
            client_10,
            body_method: false,
            key: 0,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            buffer: 1 << 20,
            retries: 1,
            cache: None,
            compress_route: false,
            compress: None,
            upgrade: false,
            deferred_head: None,
        }
    }

    /// Runs `upstream` bytes (in pieces of `step`) through an exchange; returns what the
    /// client gets, and whether the upstream connection may be pooled.
    fn run(
        s: Start,
        upstream: &[u8],
        step: usize,
        eof: bool,
    ) -> (String, Option<bool>, Result<(), Failure>) {
        let mut x = Exchange::new(s, b"", ConnHeader::None);
        x.server = Some(0);
        let now = Instant::now();
        x.connected(now, false);
        let mut out = OutQueue::default();
        let mut pool = BufPool::default();
        let date = [b'D'; DATE_LEN];
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        let mut res = Ok(());
        for piece in upstream.chunks(step) {
            res = x.feed(piece, &mut out, &mut ctx, now);
            if res.is_err() {
                break;
            }
        }
        if eof && res.is_ok() {
            res = x.eof(&mut out, &mut ctx);
        }
        let mut got = Vec::new();
        while let Some(Output::Bytes(b)) = out.peek() {
            got.extend_from_slice(b);
            let n = b.len();
            out.consume(n, &mut pool);
        }
        (
            String::from_utf8_lossy(&got).into_owned(),
            x.finished(),
            res,
        )
    }

    #[test]
    fn response_heads_with_many_fields_pass_up_to_the_limit() {
        // Past 32 fields the head is parsed again with room for MAX_RESPONSE_FIELDS.
        for n in [31, 32, 33, 100, MAX_RESPONSE_FIELDS - 1] {
            let mut up = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
            for i in 0..n {
                up.push_str(&format!("X-F{i}: v{i}\r\n"));
            }
            up.push_str("\r\nok");
            let (got, pooled, res) = run(start(false, false), up.as_bytes(), 4096, false);
            assert!(res.is_ok(), "{n} fields: {res:?}");
            assert_eq!(pooled, Some(true), "{n} fields");
            assert!(
                got.contains(&format!("X-F{}: v{}\r\n", n - 1, n - 1)),
                "{n} fields"
            );
            assert!(got.ends_with("\r\n\r\nok"), "{n} fields");
        }
        let mut up = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
        for i in 0..MAX_RESPONSE_FIELDS {
            up.push_str(&format!("X-F{i}: v{i}\r\n"));
        }
        up.push_str("\r\nok");
        let (_, _, res) = run(start(false, false), up.as_bytes(), 4096, false);
        assert!(matches!(res, Err(Failure::Bad(_))), "{res:?}");
    }

    #[test]
    fn content_length_bodies_pass_through_and_pool() {
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: gunicorn\r\nConnection: keep-alive\r\nDate: x\r\n\r\nhello";
        for step in [1, 3, 1000] {
            let (c, fin, res) = run(start(false, false), up, step, false);
            assert_eq!(res, Ok(()));
            // The origin's Date stays (ringd dates only an undated response).
            assert!(c.starts_with("HTTP/1.1 200 OK\r\nDate: x\r\n"), "{c}");
            assert!(c.contains("Content-Length: 5\r\n"), "{c}");
            assert!(c.contains("Server: gunicorn\r\n"), "{c}");
            assert!(!c.contains("Connection: keep-alive"), "{c}");
            assert!(c.ends_with("\r\n\r\nhello"), "{c}");
            assert_eq!(fin, Some(true));
        }
    }

    #[test]
    fn chunked_and_close_delimited_are_rechunked_for_11_and_closed_for_10() {
        let up = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n";
        for step in [1, 2, 1000] {
            let (c, fin, _) = run(start(false, false), up, step, false);
            assert!(c.contains("Transfer-Encoding: chunked\r\n"), "{c}");
            let body = &c[c.find("\r\n\r\n").unwrap() + 4..];
            assert_eq!(dechunk(body), Some("abcde".to_string()), "{c}");
            assert!(!c.contains("T: 1"), "the trailer is not passed on: {c}");
            assert_eq!(fin, Some(true));
        }
        let up = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        let (c, fin, res) = run(start(false, false), up, 4, true);
        assert_eq!(res, Ok(()));
        let body = &c[c.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(dechunk(body), Some("until close".to_string()), "{c}");
        assert_eq!(fin, Some(false), "an HTTP/1.0 upstream is never pooled");
        let (c, _, _) = run(start(false, true), up, 4, true);
        assert!(c.contains("Connection: close\r\n"), "{c}");
        assert!(c.ends_with("\r\n\r\nuntil close"), "{c}");
    }

    /// A strict decoder of a whole chunked body; None when it is malformed or unterminated.
    fn dechunk(mut s: &str) -> Option<String> {
        let mut out = String::new();
        loop {
            let (size, rest) = s.split_once("\r\n")?;
            let n = usize::from_str_radix(size, 16).ok()?;
            if n == 0 {
                return (rest == "\r\n").then_some(out);
            }
            out.push_str(rest.get(..n)?);
            s = rest.get(n..)?.strip_prefix("\r\n")?;
        }
    }

    #[test]
    fn bodyless_statuses_and_head_ignore_framing() {
        let up = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"a\"\r\n\r\n";
        let (c, fin, _) = run(start(false, false), up, 100, false);
        assert!(!c.contains("Content-Length"), "{c}");
        assert_eq!(fin, Some(true));
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        let (c, fin, _) = run(start(true, false), up, 100, false);
        assert!(c.contains("Content-Length: 100\r\n"), "{c}");
        assert_eq!(fin, Some(true));
    }

    #[test]
    fn the_origins_date_stays() {
        let up =
            b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 1\r\n\r\nx";
        let (c, _, _) = run(start(false, false), up, 7, false);
        assert!(
            c.contains("\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n"),
            "{c}"
        );
        assert_eq!(c.matches("Date:").count(), 1, "{c}");
        // Without one, ringd dates the response itself.
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let (c, _, _) = run(start(false, false), up, 7, false);
        assert_eq!(c.matches("Date: ").count(), 1, "{c}");
    }

    #[test]
    fn interim_responses_go_to_11_clients_only() {
        let up = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let (c, _, _) = run(start(false, false), up, 7, false);
        assert!(
            c.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK"),
            "{c}"
        );
        assert!(!c.contains("100 Continue"), "{c}");
        let (c, _, _) = run(start(false, true), up, 7, false);
        assert!(c.starts_with("HTTP/1.1 200 OK"), "{c}");
        // An interim response loses its hop-by-hop fields like a final one (found by the
        // gateway fuzz target: a 1xx passed Transfer-Encoding and Connection through).
        let up = b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let (c, _, _) = run(start(false, false), up, 7, false);
        assert!(
            c.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK"),
            "{c}"
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        for (up, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..], "two CL"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "CL+TE"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
            (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", "obs-fold"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "negative CL"),
            (b"garbage\r\n\r\n", "garbage"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "gzip TE"),
        ] {
            let (_, _, res) = run(start(false, false), up, 5, false);
            assert!(matches!(res, Err(Failure::Bad(_))), "{why}: {res:?}");
        }
        let huge = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 70_000]].concat();
        let (_, _, res) = run(start(false, false), &huge, 4096, false);
        assert!(
            matches!(res, Err(Failure::Bad(_))),
            "oversize head: {res:?}"
        );
    }

    #[test]
    fn a_cut_body_is_an_error_never_a_clean_end() {
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let (c, fin, res) = run(start(false, false), up, 100, true);
        assert_eq!(res, Err(Failure::Cut));
        assert_eq!(fin, None);
        assert!(c.ends_with("abc"), "{c}");
        let up = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        let (c, _, res) = run(start(false, false), up, 100, true);
        assert_eq!(res, Err(Failure::Cut));
        assert!(
            !c.contains("0\r\n\r\n"),
            "a cut chunked body got a last chunk: {c}"
        );
    }

    /// An exchange with splicing allowed from `min` bytes, fed `upstream` (head and the body
    /// bytes that came with it).
    fn splice_x(s: Start, min: u64, upstream: &[u8]) -> (Exchange, OutQueue, BufPool) {
        let mut x = Exchange::new(s, b"", ConnHeader::None);
        x.set_splice_min(min);
        x.server = Some(0);
        let now = Instant::now();
        x.connected(now, false);
        let mut out = OutQueue::default();
        let mut pool = BufPool::default();
        let date = [b'D'; DATE_LEN];
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        x.feed(upstream, &mut out, &mut ctx, now).unwrap();
        (x, out, pool)
    }

    #[test]
    fn a_content_length_body_goes_by_splice_after_the_bytes_that_came_with_the_head() {
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc";
        let (mut x, mut out, mut pool) = splice_x(start(false, false), 65536, up);
        assert_eq!(x.splice_want(), Some(99_997));
        assert!(!x.wants_read(0), "the driver splices instead of reading");
        // The head and the 3 bytes go first; only then may the pipe's bytes follow.
        assert!(!out.pipe_next());
        let Some(Output::Bytes(b)) = out.peek() else {
            panic!("head first")
        };
        assert!(b.ends_with(b"Content-Length: 100000\r\n\r\nabc"));
        let n = b.len();
        out.consume(n, &mut pool);
        assert!(out.pipe_next());
        let date = [b'D'; DATE_LEN];
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        let now = Instant::now();
        x.spliced(60_000, &mut out, &mut ctx, now);
        x.spliced(30_000, &mut out, &mut ctx, now);
        assert!(matches!(out.peek(), Some(Output::Pipe { len: 90_000 })));
        assert_eq!(x.splice_want(), Some(9_997));
        x.spliced(9_997, &mut out, &mut ctx, now);
        assert_eq!(
            x.finished(),
            Some(true),
            "complete: the upstream may be pooled"
        );
        assert_eq!(x.spliced_bytes, 99_997);
        assert_eq!(out.responses(), 1);
        assert_eq!(
            out.consume(99_997, &mut pool),
            1,
            "the response ends with the pipe"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_body_cut_short_while_splicing_is_an_error() {
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let (mut x, mut out, mut pool) = splice_x(start(false, false), 1, up);
        let date = [b'D'; DATE_LEN];
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        x.spliced(5_000, &mut out, &mut ctx, Instant::now());
        assert_eq!(x.eof(&mut out, &mut ctx), Err(Failure::Cut));
    }

    #[test]
    fn bodies_that_change_on_the_way_are_copied() {
        // Below the threshold, chunked (re-framed), close-delimited to HTTP/1.0, HEAD.
        let cases: [(Start, &[u8]); 4] = [
            (
                start(false, false),
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            ),
            (
                start(false, false),
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (start(false, true), b"HTTP/1.1 200 OK\r\n\r\n"),
            (
                start(true, false),
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
            ),
        ];
        for (s, up) in cases {
            let (x, _, _) = splice_x(s, 65536, up);
            assert_eq!(x.splice_want(), None, "{}", String::from_utf8_lossy(up));
        }
        // Compressed on the way.
        let mut s = start(false, false);
        s.compress_route = true;
        s.compress = Some(crate::handler::encoding::Coding::Gzip);
        let up = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n";
        let (x, _, _) = splice_x(s, 1, up);
        assert_eq!(x.splice_want(), None);
        // Splicing off.
        let up = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let (x, _, _) = splice_x(start(false, false), 0, up);
        assert_eq!(x.splice_want(), None);
        assert!(x.wants_read(0));
    }
}

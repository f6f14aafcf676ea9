//! The TLS record layer of a `Session` (a child module of `session`, so it reaches the
//! session's fields): ciphertext from the driver is decrypted into the session's input, and
//! the session's queued output (bytes, and file ranges read with `pread`) is encrypted into
//! one ciphertext buffer that `next_output` hands to the driver. Drivers move ciphertext only
//! and never know whether a connection is TLS.
//!
//! The first bytes of a connection on a TLS listener decide: a TLS handshake record (0x16)
//! starts TLS; anything else is plain HTTP, answered normally where the listener also serves
//! plain sites, else with 400 (nginx's "The plain HTTP request was sent to HTTPS port").
//! Where a site answers ACME HTTP-01, plain requests on an HTTPS-only port are parsed: the
//! challenge is answered, `redirect_http` applies, and everything else gets that 400
//! (`plain_first`). A connection that negotiated ALPN `acme-tls/1` (TLS-ALPN-01) carries no
//! HTTP: its first plaintext closes it.
//!
//! Kernel TLS (`tls/ktls.rs`): where the listener runs it, once the handshake is over, every
//! handshake and ticket byte rustls made has been sent, no flight is half-sent and rustls
//! holds no partial record of the client's, the session stops handing out output and
//! `take_ktls` gives the driver the keys for `ktls::enable`; from then on the session is a
//! plain one (`tls` is None) that still knows it is HTTPS (`secure`), and file bodies go by
//! sendfile/splice again. No close_notify is sent on a kTLS connection's close (optional for
//! HTTP/1.1, whose responses are framed).
//!
//! Buffer contract: `cipher[pos..]` is what `next_output` last handed out; it is never
//! changed before `consume` has covered it all. Only then is the plaintext that produced it
//! consumed from the output queue (`taken`), which may answer pipelined requests.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::time::Instant;

use super::{Output, Service, Session};
use crate::proto::head::{self, ConnHeader};
use crate::tls::CHUNK;

/// The first byte of a TLS handshake record (a ClientHello).
const HANDSHAKE: u8 = 0x16;

/// Ciphertext buffer capacity an idle connection keeps (a small response's flight fits).
const IDLE_KEEP: usize = 16 * 1024;

/// What nginx answers a plain request on an HTTPS port with, near enough.
const PLAIN_ON_TLS: &[u8] = b"400 Bad Request: the plain HTTP request was sent to an HTTPS port\n";

/// One connection's TLS state.
pub(super) struct TlsConn {
    conn: rustls::ServerConnection,
    /// Ciphertext handed (or to be handed) to the driver; `cipher[pos..]` is unsent.
    cipher: Vec<u8>,
    pos: usize,
    /// Bytes of the output queue's front piece encrypted into `cipher`, consumed from the
    /// queue once `cipher` has been sent.
    taken: usize,
    /// File bytes read for encryption.
    file_buf: Vec<u8>,
    /// close_notify queued.
    notified: bool,
    /// A TLS error, or a file that could not be read: send what is queued, then close.
    pub(super) failed: bool,
    /// The listener runs kernel TLS and this connection may still switch to it (cleared
    /// when its cipher suite or ALPN rules it out).
    ktls: bool,
    /// Where the client's ciphertext stands between records.
    edge: RecordEdge,
}

/// Follows TLS record headers through the ciphertext fed to rustls, to know when rustls
/// holds no partial record (the kernel must take the stream at a record boundary).
#[derive(Default)]
struct RecordEdge {
    head: [u8; 5],
    /// Header bytes seen of the record being read.
    have: usize,
    /// Body bytes still to come of the record being read.
    left: usize,
}

impl RecordEdge {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let k = self.left.min(data.len());
                self.left -= k;
                data = &data[k..];
                continue;
            }
            let k = (5 - self.have).min(data.len());
            self.head[self.have..self.have + k].copy_from_slice(&data[..k]);
            self.have += k;
            data = &data[k..];
            if self.have == 5 {
                self.have = 0;
                self.left = usize::from(u16::from_be_bytes([self.head[3], self.head[4]]));
            }
        }
    }

    fn at_edge(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

impl TlsConn {
    /// Whether everything this connection has to say has been handed out and sent.
    /// After a failure only what was already handed out counts (the alert, if rustls made
    /// one, is in it: `next_output` flushes it the first time it is called after the error).
    pub(super) fn drained(&self) -> bool {
        self.pos >= self.cipher.len() && (self.failed || !self.conn.wants_write())
    }
}

impl Session {
    /// `feed` on a listener with TLS: the first bytes pick TLS or plain HTTP, then records
    /// are decrypted into the session's input.
    pub(super) fn feed_tls(&mut self, svc: &mut Service, data: &[u8], now: Instant) {
        if self.sniff {
            self.sniff = false;
            let Some(setup) = svc.config.tls.clone() else {
                return self.feed_plain(svc, data, now);
            };
            if data.first() != Some(&HANDSHAKE) {
                // An HTTPS-only port still hears ACME HTTP-01 (`plain_first` says 400 to the
                // rest).
                if setup.only && !setup.answers_http01() {
                    return self.plain_on_tls(svc, now);
                }
                return self.feed_plain(svc, data, now);
            }
            match rustls::ServerConnection::new(setup.config.clone()) {
                Ok(conn) => {
                    self.tls = Some(Box::new(TlsConn {
                        conn,
                        cipher: Vec::new(),
                        pos: 0,
                        taken: 0,
                        file_buf: Vec::new(),
                        notified: false,
                        failed: false,
                        ktls: self.knobs.ktls,
                        edge: RecordEdge::default(),
                    }));
                    self.secure = true;
                }
                Err(_) => {
                    self.closing = true;
                    return;
                }
            }
        }
        let Some(t) = self.tls.as_mut() else {
            return self.feed_plain(svc, data, now);
        };
        if data.is_empty() || self.closing || self.eof || self.shutdown || t.failed {
            return;
        }
        if self.inp.capacity() == 0 {
            self.inp = svc.pool.take();
        } else if self.in_pos > 0 {
            self.inp.drain(..self.in_pos);
            self.in_pos = 0;
        }
        let before = self.inp.len();
        let mut rest = data;
        while !rest.is_empty() {
            let was = rest;
            match t.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(n) => t.edge.advance(&was[..n]),
                Err(_) => {
                    t.failed = true;
                    break;
                }
            }
            match t.conn.process_new_packets() {
                Ok(state) => {
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let at = self.inp.len();
                        self.inp.resize(at + n, 0);
                        let got = t.conn.reader().read(&mut self.inp[at..]).unwrap_or(0);
                        self.inp.truncate(at + got);
                    }
                    if state.peer_has_closed() {
                        self.eof = true;
                    }
                    // A TLS-ALPN-01 validation ends with its handshake (RFC 8737 §3): nothing
                    // on such a connection is HTTP.
                    if n > 0 && t.conn.alpn_protocol() == Some(crate::tls::acme::ALPN_ACME) {
                        t.failed = true;
                        self.closing = true;
                        self.inp.truncate(before);
                        break;
                    }
                }
                Err(_) => {
                    // rustls has queued the alert; send it, then close.
                    t.failed = true;
                    self.closing = true;
                    break;
                }
            }
        }
        if t.ktls && !t.conn.is_handshaking() {
            // Decided once, before any extraction: a suite the kernel cannot run (or a
            // TLS-ALPN-01 validation) stays in user space.
            let suite = t.conn.negotiated_cipher_suite().map(|s| s.suite());
            t.ktls = suite.is_some_and(crate::tls::ktls::offloadable)
                && t.conn.alpn_protocol() != Some(crate::tls::acme::ALPN_ACME);
        }
        if self.inp.len() > before {
            if self.req_start.is_none() {
                self.req_start = Some(now);
            }
            if self.parked.is_none() {
                self.process(svc, now);
            }
        }
    }

    /// A plain HTTP request on a port that serves only HTTPS: 400, then close.
    fn plain_on_tls(&mut self, svc: &mut Service, now: Instant) {
        let buf = self.out.bytes(&mut svc.pool);
        head::start(buf, 400, &svc.date, &svc.config.server_name);
        buf.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        head::header_u64(buf, "Content-Length", PLAIN_ON_TLS.len() as u64);
        buf.extend_from_slice(ConnHeader::Close.line());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(PLAIN_ON_TLS);
        self.out.end_response();
        self.progress_at = now;
        self.closing = true;
    }

    /// `next_output` on a TLS connection: the unsent rest of the last flight of records, or
    /// a new flight made from the front piece of the output queue (at most [`CHUNK`] bytes of
    /// it), handshake messages, alerts and close_notify included.
    pub(super) fn next_output_tls(&mut self) -> Option<Output<'_>> {
        let hold = self.gw_holds_head();
        let t = self.tls.as_mut()?;
        if t.pos >= t.cipher.len() {
            t.cipher.clear();
            t.pos = 0;
            if t.ktls && t.taken == 0 && !t.failed && !t.conn.is_handshaking() {
                // The switch to kernel TLS comes before any response: send the handshake's
                // last flight and tickets alone, then hand out nothing until `take_ktls`.
                while t.conn.wants_write() {
                    if t.conn.write_tls(&mut t.cipher).is_err() {
                        break;
                    }
                }
            }
        }
        if t.pos < t.cipher.len() {
            let t = self.tls.as_ref()?;
            return Some(Output::Bytes(&t.cipher[t.pos..]));
        }
        if self.ktls_due() {
            return None;
        }
        let t = self.tls.as_mut()?;
        let mut empty_piece = false;
        if t.taken == 0 && !t.failed && !t.conn.is_handshaking() {
            match if hold { None } else { self.out.peek() } {
                Some(Output::Bytes(b)) => {
                    let n = b.len().min(CHUNK);
                    empty_piece = n == 0;
                    t.taken = t.conn.writer().write(&b[..n]).unwrap_or(0);
                }
                Some(Output::File { fd, offset, len }) => {
                    let n = (len as usize).min(CHUNK);
                    empty_piece = n == 0;
                    if n > 0 {
                        match pread(fd, &mut t.file_buf, n, offset) {
                            Some(got) => {
                                t.taken = t.conn.writer().write(&t.file_buf[..got]).unwrap_or(0)
                            }
                            // The file shrank under a promised length: nothing honest follows.
                            None => t.failed = true,
                        }
                    }
                }
                // Never queued on a TLS connection (its bytes pass through rustls).
                Some(Output::Pipe { .. }) => t.failed = true,
                None => {
                    let done = self.closing || self.eof || self.shutdown;
                    if done && !t.notified && self.parked.is_none() && self.gw.is_none() {
                        t.notified = true;
                        t.conn.send_close_notify();
                    }
                }
            }
        }
        while t.conn.wants_write() {
            if t.conn.write_tls(&mut t.cipher).is_err() {
                break;
            }
        }
        if t.cipher.is_empty() && !empty_piece {
            return None;
        }
        // An empty front piece is handed out as such: `consume(0)` retires it.
        Some(Output::Bytes(&t.cipher))
    }

    /// `consume` on a TLS connection: `n` bytes of ciphertext went out; once the whole flight
    /// has, the plaintext it carried leaves the output queue.
    pub(super) fn consume_tls(&mut self, svc: &mut Service, n: usize, now: Instant) {
        let Some(t) = self.tls.as_mut() else { return };
        t.pos = (t.pos + n).min(t.cipher.len());
        if n > 0 {
            self.progress_at = now;
        }
        if t.pos < t.cipher.len() {
            return;
        }
        let taken = std::mem::take(&mut t.taken);
        self.consume_plain(svc, taken, now);
        // A large response is over: give its buffers back, so that idle keep-alive
        // connections do not each hold a flight's worth of memory.
        if self.out.is_empty() {
            if let Some(t) = self.tls.as_mut() {
                if t.cipher.capacity() > IDLE_KEEP {
                    t.cipher = Vec::new();
                    t.pos = 0;
                }
                if !t.file_buf.is_empty() {
                    t.file_buf = Vec::new();
                }
            }
        }
    }
}

impl Session {
    /// Whether the switch to kernel TLS is due: the handshake is over, every byte rustls
    /// made has been sent (no flight half-sent, nothing of a response encrypted and
    /// unsent), and rustls holds no partial record of the client's. While it is, the
    /// session hands out no output and wants no reads: the driver calls `take_ktls`.
    pub fn ktls_due(&self) -> bool {
        let Some(t) = &self.tls else { return false };
        t.ktls
            && !t.failed
            && !t.notified
            && !self.eof
            && !self.shutdown
            && !t.conn.is_handshaking()
            && t.pos >= t.cipher.len()
            && t.taken == 0
            && !t.conn.wants_write()
            && t.edge.at_edge()
    }

    /// The switch to kernel TLS, once it is due (see [`Session::ktls_due`]): the record
    /// layer's keys and sequence numbers, for `ktls::enable` on this connection's socket,
    /// which the driver calls at once (a failure there closes the connection: the keys have
    /// left rustls). From then on the session is a plain HTTP one that still knows it is
    /// HTTPS. Drivers call this before `next_output`, with no read in flight on the socket
    /// (a uring multishot recv is cancelled first: `wants_read` is false while it is due).
    pub fn take_ktls(&mut self) -> Option<crate::tls::ktls::Switch> {
        if !self.ktls_due() {
            return None;
        }
        let version = self.tls.as_ref()?.conn.protocol_version()?;
        let t = self.tls.take()?;
        Some(crate::tls::ktls::Switch {
            version,
            secrets: t.conn.dangerous_extract_secrets(),
        })
    }

    /// Whether this connection runs TLS in the kernel now.
    pub fn ktls_on(&self) -> bool {
        self.secure && self.tls.is_none()
    }
}

/// Reads up to `n` bytes of `fd` at `offset` into `buf`; None on an error or end of file.
fn pread(fd: RawFd, buf: &mut Vec<u8>, n: usize, offset: u64) -> Option<usize> {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    // SAFETY: `buf` holds at least `n` initialised bytes and is borrowed mutably for the
    // call; the fd is kept open by the output queue's piece until it is consumed.
    let got = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), n, offset as libc::off_t) };
    (got > 0).then_some(got as usize)
}

/// A plain request on a listener with `redirect_http` sites or ACME HTTP-01: an ACME
/// challenge is answered first (before any route, and before the redirect), then
/// `redirect_http`; on an HTTPS-only port anything else gets 400 and the connection closes.
/// None: answer it normally. Some(keep-alive) when answered.
pub(super) fn plain_first(
    svc: &mut Service,
    out: &mut crate::proto::conn::OutQueue,
    peer: std::net::SocketAddr,
    req: &crate::proto::parse::Request<'_>,
    close: bool,
) -> Option<bool> {
    if let Some(keep) = acme_http01(svc, out, peer, req, close) {
        return Some(keep);
    }
    if let Some(keep) = redirect_http(svc, out, peer, req, close) {
        return Some(keep);
    }
    if !svc.config.tls.as_ref().is_some_and(|t| t.only) {
        return None;
    }
    let mut reply = crate::handler::Reply {
        out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn: ConnHeader::Close,
        edit: None,
    };
    let head_only = req.method == crate::proto::parse::Method::Head;
    let sent = reply.text(
        &svc.config.server_name,
        400,
        b"Content-Type: text/plain; charset=utf-8\r\n",
        PLAIN_ON_TLS,
        head_only,
    );
    if svc.log_on {
        super::LogLine::new(req, crate::router::NONE, crate::router::NONE)
            .write(svc, peer, sent, None);
    }
    Some(false)
}

/// `GET /.well-known/acme-challenge/<token>` for a token the ACME thread is being validated
/// with, for the host it was issued for: 200 with the key authorization (RFC 8555 §8.3).
fn acme_http01(
    svc: &mut Service,
    out: &mut crate::proto::conn::OutQueue,
    peer: std::net::SocketAddr,
    req: &crate::proto::parse::Request<'_>,
    close: bool,
) -> Option<bool> {
    use crate::proto::parse::Method;
    let token = req
        .path_query
        .strip_prefix(crate::tls::acme::HTTP01_PREFIX)?;
    if !matches!(req.method, Method::Get | Method::Head) {
        return None;
    }
    let host = std::str::from_utf8(req.fields.host?).ok()?;
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let ka = svc.config.tls.as_ref()?.challenges().http(token, host)?;
    let conn = super::conn_header(req, close);
    let mut reply = crate::handler::Reply {
        out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn,
        edit: None,
    };
    let sent = reply.text(
        &svc.config.server_name,
        200,
        b"Content-Type: application/octet-stream\r\n",
        ka.as_bytes(),
        req.method == Method::Head,
    );
    if svc.log_on {
        let site = svc
            .router
            .site_for(Some(host.as_bytes()))
            .unwrap_or(crate::router::NONE);
        super::LogLine::new(req, site, crate::router::NONE).write(svc, peer, sent, None);
    }
    Some(conn != ConnHeader::Close)
}

/// A plain HTTP request for a site with `redirect_http`: 308 to the same host and target
/// over https (the same port: one listener carries both). None: not such a site (or a Host
/// that cannot go into a URL), answer it normally. Some(keep-alive) when answered.
fn redirect_http(
    svc: &mut Service,
    out: &mut crate::proto::conn::OutQueue,
    peer: std::net::SocketAddr,
    req: &crate::proto::parse::Request<'_>,
    close: bool,
) -> Option<bool> {
    let host = req.fields.host?;
    let site = svc.router.site_for(Some(host))?;
    if !svc
        .router
        .sites()
        .sites
        .get(usize::from(site))?
        .redirect_http
    {
        return None;
    }
    let ok = |b: &u8| b.is_ascii_alphanumeric() || b"-.:[]_".contains(b);
    if host.is_empty() || !host.iter().all(ok) {
        return None;
    }
    let mut extra = Vec::with_capacity(host.len() + req.path_query.len() + 20);
    extra.extend_from_slice(b"Location: https://");
    extra.extend_from_slice(host);
    extra.extend_from_slice(req.path_query.as_bytes());
    extra.extend_from_slice(b"\r\n");
    let conn = super::conn_header(req, close);
    let mut reply = crate::handler::Reply {
        out,
        pool: &mut svc.pool,
        date: &svc.date,
        conn,
        edit: None,
    };
    let head_only = req.method == crate::proto::parse::Method::Head;
    let sent = reply.simple(&svc.config.server_name, 308, &extra, head_only);
    if svc.log_on {
        super::LogLine::new(req, site, crate::router::NONE).write(svc, peer, sent, None);
    }
    Some(conn != ConnHeader::Close)
}

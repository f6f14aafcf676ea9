//! Request-head parsing: httparse for the syntax, then the checks RFC 9112 asks of a server
//! (limits, version, target form, Host, framing) and extraction of the fields the handler uses.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use crate::config::Limits;

use super::framing::{self, Framing};
use super::ProtoError;

/// Most header fields httparse is given room for, whatever `limits.max_headers` says.
pub const MAX_HEADERS_CAP: usize = 256;

/// The request method, as far as a static-file server cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A registered method that static files do not allow (→ 405).
    Other,
    /// A syntactically valid token the server does not know (→ 501).
    Unknown,
}

/// The header fields the server acts on. List-valued fields that arrive on several lines are
/// joined with ", " (the only case that allocates).
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub host: Option<&'a [u8]>,
    pub if_match: Option<Cow<'a, [u8]>>,
    pub if_none_match: Option<Cow<'a, [u8]>>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
    pub accept_encoding: Option<Cow<'a, [u8]>>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `Accept` (first line only; directory listings choose HTML or JSON by it).
    pub accept: Option<&'a [u8]>,
}

/// A complete, validated request head.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    pub method_str: &'a str,
    /// The request-target as sent (for the access log).
    pub target: &'a str,
    /// The origin-form path and query (`/a/b?x`), also for an absolute-form target.
    pub path_query: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// The head as received (request line, fields, blank line), for a proxy to rebuild.
    pub raw: &'a [u8],
    pub framing: Framing,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// HTTP/1.0 asked for keep-alive (echo `Connection: keep-alive`).
    pub keep_alive_10: bool,
    /// An HTTP/1.1 request with `Expect: 100-continue` (ignored in HTTP/1.0, RFC 9110
    /// §10.1.1). Expectations other than 100-continue fail the parse with 417.
    pub expect_continue: bool,
    pub fields: Fields<'a>,
    /// It came over HTTPS (TLS in rustls, or kernel TLS after the handshake): set by the
    /// session, never by the parser (false here). X-Forwarded-Proto, Forwarded's proto,
    /// CGI's HTTPS and wsgi.url_scheme follow it.
    pub secure: bool,
}

impl Request<'_> {
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        match self.path_query.find('?') {
            Some(i) => &self.path_query[..i],
            None => self.path_query,
        }
    }

    /// The query part including its `?`, or "".
    pub fn query(&self) -> &str {
        match self.path_query.find('?') {
            Some(i) => &self.path_query[i..],
            None => "",
        }
    }
}

/// Outcome of a parse attempt.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // boxing would allocate per request
pub enum Parsed<'a> {
    /// More bytes are needed (and the limits are not yet crossed).
    Partial,
    Complete(Request<'a>),
}

/// Number of leading empty lines (`CRLF`) before a request, which RFC 9112 §2.2 lets a server
/// ignore. A lone trailing CR is left in place until its LF arrives.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.len() >= i + 2 && buf[i] == b'\r' && buf[i + 1] == b'\n' {
        i += 2;
    }
    i
}

/// Whether the request starting at `buf` has the method `HEAD` (its method token is complete),
/// whatever follows: the answer to it has no body, errors included (RFC 9110 §9.3.2).
pub fn is_head(buf: &[u8]) -> bool {
    buf.starts_with(b"HEAD ")
}

/// Parses one request head at the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ProtoError> {
    // Request line limit (414), checked before httparse so a huge line fails early.
    let line_scan = &buf[..buf.len().min(limits.max_request_line + 2)];
    let line_len = match memchr_lf(line_scan) {
        Some(i) => {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(ProtoError::BadRequest("request line not ended by CRLF"));
            }
            if i - 1 > limits.max_request_line {
                return Err(ProtoError::RequestLineTooLong);
            }
            i + 1
        }
        None if buf.len() > limits.max_request_line + 1 => {
            return Err(ProtoError::RequestLineTooLong)
        }
        None => 0,
    };

    let mut slots = [const { MaybeUninit::<httparse::Header<'a>>::uninit() }; MAX_HEADERS_CAP];
    let nslots = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut slots[..nslots]);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_request_line + limits.max_header_bytes + 4 {
                return Err(ProtoError::HeadersTooLarge);
            }
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ProtoError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            let line = if line_len > 0 { &buf[..line_len] } else { buf };
            return Err(version_error(line));
        }
        Err(_) => return Err(ProtoError::BadRequest("malformed request head")),
    };
    if head_len - line_len > limits.max_header_bytes + 2 {
        return Err(ProtoError::HeadersTooLarge);
    }
    // httparse accepts a bare LF as a line end; RFC 9112 lets us refuse it, and we do (a
    // front end that treats it differently could otherwise be smuggled past). Every header
    // line starts right after an LF: the byte before that LF must be CR. The request line's
    // end was checked above; the blank line is checked here.
    if !buf[..head_len].ends_with(b"\r\n\r\n") {
        return Err(ProtoError::BadRequest("bare LF in header section"));
    }
    let base = buf.as_ptr() as usize;
    for h in req.headers.iter() {
        let at = (h.name.as_ptr() as usize).wrapping_sub(base);
        if at != line_len && (at < 2 || at > head_len || buf[at - 2] != b'\r') {
            return Err(ProtoError::BadRequest("bare LF in header section"));
        }
    }

    let method_str = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let minor = req.version.unwrap_or(1);
    let method = classify_method(method_str);
    let path_query = origin_form(target, method)?;

    let mut fields = Fields::default();
    let mut host_count = 0u32;
    let mut cl: Option<&[u8]> = None;
    let mut cl_count = 0u32;
    let mut te: Option<Cow<'a, [u8]>> = None;
    let mut expect_continue = false;
    let mut expect_other = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        // httparse admits only HTAB, SP, VCHAR and obs-text in values (no NUL, CR or LF).
        let v = h.value;
        let n = h.name.as_bytes();
        match n.len() {
            4 if n.eq_ignore_ascii_case(b"host") => {
                host_count += 1;
                fields.host = Some(v);
            }
            5 if n.eq_ignore_ascii_case(b"range") => fields.range = Some(v),
            7 if n.eq_ignore_ascii_case(b"referer") => fields.referer = Some(v),
            8 if n.eq_ignore_ascii_case(b"if-match") => join(&mut fields.if_match, v),
            8 if n.eq_ignore_ascii_case(b"if-range") => fields.if_range = Some(v),
            10 if n.eq_ignore_ascii_case(b"connection") => {
                for tok in framing::list(v) {
                    if tok.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            10 if n.eq_ignore_ascii_case(b"user-agent") => fields.user_agent = Some(v),
            6 if n.eq_ignore_ascii_case(b"accept") => {
                fields.accept.get_or_insert(v);
            }
            6 if n.eq_ignore_ascii_case(b"expect") => {
                // Expect = #expectation; only 100-continue is defined (RFC 9110 §10.1.1).
                for tok in framing::list(v) {
                    if tok.eq_ignore_ascii_case(b"100-continue") {
                        expect_continue = true;
                    } else {
                        expect_other = true;
                    }
                }
            }
            13 if n.eq_ignore_ascii_case(b"if-none-match") => join(&mut fields.if_none_match, v),
            14 if n.eq_ignore_ascii_case(b"content-length") => {
                cl_count += 1;
                cl = Some(v);
            }
            15 if n.eq_ignore_ascii_case(b"accept-encoding") => {
                join(&mut fields.accept_encoding, v)
            }
            17 if n.eq_ignore_ascii_case(b"if-modified-since") => {
                fields.if_modified_since = Some(v)
            }
            17 if n.eq_ignore_ascii_case(b"transfer-encoding") => join(&mut te, v),
            19 if n.eq_ignore_ascii_case(b"if-unmodified-since") => {
                fields.if_unmodified_since = Some(v)
            }
            _ => {}
        }
    }

    if host_count > 1 {
        return Err(ProtoError::BadRequest("more than one Host"));
    }
    if minor == 1 && host_count == 0 {
        return Err(ProtoError::BadRequest("HTTP/1.1 request without Host"));
    }
    if let Some(h) = fields.host {
        if h.iter().any(|b| b" \t/\\@?#".contains(b)) {
            return Err(ProtoError::BadRequest("invalid Host"));
        }
    }
    let framing = framing::request_framing(minor, te.as_deref(), cl, cl_count)?;
    // After the syntax and framing checks: a malformed request is a 400 whatever it expects.
    if expect_other {
        return Err(ProtoError::ExpectationFailed);
    }
    let keep_alive = !conn_close && (minor == 1 || conn_keep_alive);

    Ok(Parsed::Complete(Request {
        method,
        method_str,
        target,
        path_query,
        minor,
        head_len,
        raw: &buf[..head_len],
        framing,
        keep_alive,
        keep_alive_10: keep_alive && minor == 0,
        expect_continue: expect_continue && minor == 1,
        fields,
        secure: false,
    }))
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Appends another line of a list-valued field.
fn join<'a>(slot: &mut Option<Cow<'a, [u8]>>, v: &'a [u8]) {
    match slot {
        None => *slot = Some(Cow::Borrowed(v)),
        Some(prev) => {
            let mut joined = prev.to_vec();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v);
            *slot = Some(Cow::Owned(joined));
        }
    }
}

/// For a request line httparse refused at its version: 505 when the line is exactly
/// `method SP target SP HTTP/x.y` with a version other than 1.0 or 1.1, 400 for anything else
/// (more than three parts, whitespace in the target, a malformed version). `line` is the
/// request line with its CRLF, or what has arrived of it when httparse failed earlier.
fn version_error(line: &[u8]) -> ProtoError {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ProtoError::BadRequest("malformed request line");
    };
    let ok = !method.is_empty()
        && !target.is_empty()
        && version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if ok {
        ProtoError::VersionNotSupported
    } else {
        ProtoError::BadRequest("malformed HTTP version")
    }
}

fn classify_method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => Method::Other,
        _ => Method::Unknown,
    }
}

/// Validates the request-target (RFC 9112 §3.2) and returns its origin-form part.
fn origin_form(target: &str, method: Method) -> Result<&str, ProtoError> {
    let bytes = target.as_bytes();
    if bytes.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
        return Err(ProtoError::BadRequest("invalid byte in request-target"));
    }
    // A fragment is not part of a request-target; clients should not send one. Drop it.
    let target = match target.find('#') {
        Some(i) => &target[..i],
        None => target,
    };
    if target.starts_with('/') {
        return Ok(target);
    }
    let lower_scheme = |s: &str| {
        target.len() >= s.len() && target.as_bytes()[..s.len()].eq_ignore_ascii_case(s.as_bytes())
    };
    for scheme in ["http://", "https://"] {
        if lower_scheme(scheme) {
            let rest = &target[scheme.len()..];
            let path = match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
                _ => "/",
            };
            if rest.is_empty() || rest.starts_with('/') {
                return Err(ProtoError::BadRequest("absolute-form without authority"));
            }
            // RFC 9110 §4.2.4: userinfo in an http(s) target is to be treated as an error
            // (it is used to obscure the authority).
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            if rest[..authority_end].contains('@') {
                return Err(ProtoError::BadRequest("userinfo in request-target"));
            }
            return Ok(path);
        }
    }
    match method {
        // asterisk-form (OPTIONS) and authority-form (CONNECT) are answered 405 anyway.
        Method::Other | Method::Unknown => Ok("*"),
        _ => Err(ProtoError::BadRequest("invalid request-target")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn ok(raw: &[u8]) -> Request<'_> {
        match parse(raw, &lim()) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!(
                "{:?} for {:?}",
                other,
                String::from_utf8_lossy(&raw[..raw.len().min(80)])
            ),
        }
    }

    fn err(raw: &[u8]) -> u16 {
        match parse(raw, &lim()) {
            Err(e) => e.status(),
            other => panic!(
                "{:?} for {:?}",
                other.is_ok(),
                String::from_utf8_lossy(&raw[..raw.len().min(80)])
            ),
        }
    }

    #[test]
    fn simple_get() {
        let r = ok(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\nrest");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), "?x=1");
        assert_eq!(r.head_len, 49);
        assert!(r.keep_alive);
        assert_eq!(r.fields.user_agent, Some(&b"t"[..]));
        assert_eq!(r.framing, Framing::None);
    }

    #[test]
    fn partial_until_blank_line() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: h\r\n", &lim()),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(parse(b"GE", &lim()), Ok(Parsed::Partial)));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        let r = ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive && r.keep_alive_10);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn limits_map_to_statuses() {
        let mut long = b"GET /".to_vec();
        long.resize(9000, b'a');
        assert_eq!(err(&long), 414);
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(err(&long), 414);
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.resize(30_000, b'a');
        assert_eq!(err(&big), 431);
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..120 {
            many.extend_from_slice(format!("X{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), 431);
    }

    #[test]
    fn versions() {
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(err(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(err(b"GET / HTTZ/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(err(b"GET / ICE/1.0\r\n\r\n"), 400);
        // Refused before the line's end arrived: judged on what is there.
        assert_eq!(err(b"GET / HTTP/2.0"), 505);
    }

    #[test]
    fn malformed_request_line_is_400_not_505() {
        for line in [
            &b"GET /foo bar/ HTTP/1.1"[..],
            b"GET /a b HTTP/2.0",
            b"GET / HTTP/1.1 HTTP/1.1",
            b"GET / HTTP/1.1 ",
            b"GET /  HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1x",
            b"GET / HTTP/10.1",
            b"GET /foo\tbar HTTP/1.1",
        ] {
            let mut raw = line.to_vec();
            raw.extend_from_slice(b"\r\nHost: h\r\n\r\n");
            assert_eq!(err(&raw), 400, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(err(b"GET /foo HTTP/3.0\r\nHost: h\r\n\r\n"), 505);
    }

    #[test]
    fn methods() {
        assert_eq!(
            ok(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Head
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other
        );
        assert_eq!(
            ok(b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Unknown
        );
        assert_eq!(err(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn smuggling_defences() {
        for raw in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nFoo: bar\r\n baz\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nFoo: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nFoo: a\nBar: b\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nFoo: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedchunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        ] {
            assert_eq!(err(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn framing_accepted() {
        let r = ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.framing, Framing::Chunked);
        let r = ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,Chunked ,\r\n\r\n");
        assert_eq!(r.framing, Framing::Chunked);
        let r = ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(12));
    }

    #[test]
    fn targets() {
        let r = ok(b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path_query, "/x?y");
        let r = ok(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path_query, "/");
        let r = ok(b"GET /f?p=1#frag HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path_query, "/f?p=1");
        assert_eq!(
            ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other
        );
        assert_eq!(err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(err(b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(err(b"GET http://u:p@h?x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        let r = ok(b"GET http://h/a@b?c@d HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path_query, "/a@b?c@d");
    }

    #[test]
    fn expect_100_continue_recognised_other_expectations_417() {
        let r = ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n");
        assert!(r.expect_continue);
        assert!(!ok(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n").expect_continue);
        // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
        assert!(!ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(!ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: \r\n\r\n").expect_continue);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"),
            417
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, x=y\r\n\r\n"),
            417
        );
        assert_eq!(err(b"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n"), 417);
        // A malformed request is a 400 whatever it expects.
        assert_eq!(err(b"GET / HTTP/1.1\r\nExpect: foo\r\n\r\n"), 400);
    }

    #[test]
    fn repeated_list_fields_join() {
        let r = ok(
            b"GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n",
        );
        assert_eq!(
            r.fields.if_none_match.as_deref(),
            Some(&b"\"a\", \"b\""[..])
        );
    }

    #[test]
    fn leading_crlf_skipped() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"\r"), 0);
    }
}

//! Fuzz target: differential test of ringd's request parser and body framing against
//! `httparse` (the head, and a chunked decoder built on `httparse::parse_chunk_size` and
//! `httparse::parse_headers`). Both must agree on accept/reject and on where each message ends,
//! except where ringd is stricter on purpose; each such exception is a predicate below,
//! computed from httparse's view of the input, and listed with its RFC clause in
//! docs/fuzzing.md. A ringd rejection must be explained by the exception its reason names; a
//! request ringd accepts must trip no exception (ringd must be as strict as it claims).
//!
//! Input: the raw bytes of one request (head and body). Limits are set out of reach, so
//! only syntax and framing decide.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringd::config::Limits;
use ringd::proto::framing::{BodyReader, Framing};
use ringd::proto::parse::{parse, Parsed};
use ringd::proto::ProtoError;

const SLOTS: usize = ringd::proto::parse::MAX_HEADERS_CAP;

fn limits() -> Limits {
    Limits {
        max_request_line: 1 << 20,
        max_header_bytes: 1 << 20,
        max_headers: SLOTS,
        max_body: u64::MAX,
        ..Limits::default()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |e| e + 1);
    &v[s..e]
}

fn members(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// What httparse saw of a complete head, and the exceptions it trips.
struct View<'a> {
    head: &'a [u8],
    minor: u8,
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
}

impl View<'_> {
    fn all(&self, name: &str) -> impl Iterator<Item = &[u8]> + '_ {
        let name = name.to_owned();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| *v)
    }

    /// E1, RFC 9112 §2.2: a line ended by a bare LF (httparse accepts it; ringd may not).
    fn bare_lf(&self) -> bool {
        bare_lf(self.head)
    }

    /// E2, RFC 9112 §3.2: HTTP/1.1 without Host, more than one Host, or an invalid one.
    fn host_bad(&self) -> bool {
        let hosts: Vec<&[u8]> = self.all("host").collect();
        (self.minor == 1 && hosts.is_empty())
            || hosts.len() > 1
            || hosts
                .iter()
                .any(|h| h.iter().any(|b| b" \t/\\@?#".contains(b)))
    }

    /// E3, RFC 9112 §3.2 / RFC 3986: a request-target that is not ASCII VCHAR, or not
    /// origin-form / absolute-form (with an authority) for GET and HEAD.
    fn target_bad(&self) -> bool {
        let t = self.target.as_bytes();
        if t.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
            return true;
        }
        let t = &t[..t.iter().position(|&b| b == b'#').unwrap_or(t.len())];
        if t.starts_with(b"/") {
            return false;
        }
        for scheme in [&b"http://"[..], b"https://"] {
            if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let rest = &t[scheme.len()..];
                // RFC 9110 §4.2.4: userinfo in the authority is treated as an error.
                let auth = &rest[..rest
                    .iter()
                    .position(|&b| b == b'/' || b == b'?')
                    .unwrap_or(rest.len())];
                return rest.is_empty() || rest.starts_with(b"/") || auth.contains(&b'@');
            }
        }
        matches!(self.method, "GET" | "HEAD")
    }

    /// E4, RFC 9112 §6.1, §6.3, RFC 9110 §8.6: framing refused — Transfer-Encoding with
    /// Content-Length, in HTTP/1.0, not ending in exactly one final `chunked`, or with a
    /// non-token coding; Content-Length repeated, or not one plain decimal number.
    /// Returns the framing when acceptable.
    fn framing(&self) -> Result<Framing, ()> {
        let te: Vec<&[u8]> = self.all("transfer-encoding").collect();
        let cl: Vec<&[u8]> = self.all("content-length").collect();
        if !te.is_empty() {
            if !cl.is_empty() || self.minor == 0 {
                return Err(());
            }
            let codings: Vec<&[u8]> = te.iter().flat_map(|v| members(v)).collect();
            if codings.iter().any(|c| !c.iter().all(|&b| is_tchar(b))) {
                return Err(());
            }
            // ringd decodes no coding but chunked: exactly one, `chunked` (RFC 9112 §6.1).
            let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
            let ok = codings.len() == 1 && codings.last().is_some_and(chunked);
            return if ok { Ok(Framing::Chunked) } else { Err(()) };
        }
        match cl.as_slice() {
            [] => Ok(Framing::None),
            [v] => {
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(());
                }
                let n: u64 = std::str::from_utf8(v)
                    .expect("digits")
                    .parse()
                    .map_err(|_| ())?;
                Ok(if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                })
            }
            _ => Err(()),
        }
    }

    /// E5, RFC 9110 §10.1.1: an expectation other than 100-continue (ringd answers 417).
    fn expect_other(&self) -> bool {
        self.all("expect")
            .flat_map(members)
            .any(|m| !m.eq_ignore_ascii_case(b"100-continue"))
    }
}

/// A line of `head` ends with LF not preceded by CR.
fn bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Where a chunked body ends by httparse's reading: Ok(Some(end)), Ok(None) for more bytes
/// needed, Err for invalid.
fn httparse_chunked(body: &[u8]) -> Result<Option<usize>, ()> {
    let mut pos = 0;
    loop {
        let (n, size) = match httparse::parse_chunk_size(&body[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        pos += n;
        if size == 0 {
            let mut slots = vec![httparse::EMPTY_HEADER; 4096];
            return match httparse::parse_headers(&body[pos..], &mut slots) {
                Ok(httparse::Status::Complete((m, _))) => Ok(Some(pos + m)),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(()),
            };
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| pos.checked_add(s)) else {
            return Ok(None);
        };
        if end >= body.len() || body.len() - end < 2 {
            // Not all there yet; but a wrong byte after the data is already an error.
            if end < body.len() && body[end] != b'\r' {
                return Err(());
            }
            return Ok(None);
        }
        if &body[end..end + 2] != b"\r\n" {
            return Err(());
        }
        pos = end + 2;
    }
}

/// The pieces of a chunked body as httparse splits it: complete size lines (without their
/// CRLF), the incomplete size line the body ends in (if it ends in one), and the trailer
/// section (from after the last-chunk line to the end).
struct ChunkLines<'a> {
    lines: Vec<&'a [u8]>,
    partial: Option<&'a [u8]>,
    trailers: &'a [u8],
}

fn chunk_lines(body: &[u8]) -> ChunkLines<'_> {
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        match httparse::parse_chunk_size(&body[pos..]) {
            Ok(httparse::Status::Complete((n, size))) => {
                lines.push(&body[pos..pos + n - 2]);
                pos += n;
                if size == 0 {
                    return ChunkLines {
                        lines,
                        partial: None,
                        trailers: &body[pos..],
                    };
                }
                pos = match usize::try_from(size)
                    .ok()
                    .and_then(|s| pos.checked_add(s)?.checked_add(2))
                {
                    Some(p) if p <= body.len() => p,
                    _ => break,
                };
            }
            Ok(httparse::Status::Partial) => {
                let rest = &body[pos..];
                // Ending in CR: the line is over (the grammar must accept it whole).
                if let Some(line) = rest.strip_suffix(b"\r") {
                    lines.push(line);
                    return ChunkLines {
                        lines,
                        partial: None,
                        trailers: &[],
                    };
                }
                return ChunkLines {
                    lines,
                    partial: Some(rest),
                    trailers: &[],
                };
            }
            Err(_) => {
                // httparse refused this line: treat it (to its first LF) as a complete line.
                let rest = &body[pos..];
                let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                lines.push(&rest[..end]);
                break;
            }
        }
    }
    ChunkLines {
        lines,
        partial: None,
        trailers: &[],
    }
}

/// States of the strict chunk-size-line grammar (E6, RFC 9112 §7.1 / §7.1.1):
/// `1*HEXDIG *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, at most 16
/// hex digits (ringd's bound; httparse has the same).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sz {
    Size(u8),
    SizeWs,
    PreName,
    Name,
    AfterName,
    PreValue,
    Token,
    Quoted,
    QuotedEsc,
    Closed,
    AfterValue,
}

/// The grammar state after `line`, or None once it cannot be a valid size line.
fn size_line_state(line: &[u8]) -> Option<Sz> {
    let mut st = Sz::Size(0);
    for &b in line {
        let ws = b == b' ' || b == b'\t';
        let qd = b == b'\t' || (b >= 0x20 && b != 0x7f);
        st = match st {
            Sz::Size(d) if b.is_ascii_hexdigit() && d < 16 => Sz::Size(d + 1),
            Sz::Size(d) if d > 0 && ws => Sz::SizeWs,
            Sz::Size(d) if d > 0 && b == b';' => Sz::PreName,
            Sz::SizeWs if ws => Sz::SizeWs,
            Sz::SizeWs if b == b';' => Sz::PreName,
            Sz::PreName if ws => Sz::PreName,
            Sz::PreName | Sz::Name if is_tchar(b) => Sz::Name,
            Sz::Name | Sz::AfterName if ws => Sz::AfterName,
            Sz::Name | Sz::AfterName if b == b'=' => Sz::PreValue,
            Sz::PreValue if ws => Sz::PreValue,
            Sz::PreValue if b == b'"' => Sz::Quoted,
            Sz::PreValue | Sz::Token if is_tchar(b) => Sz::Token,
            Sz::Quoted if b == b'"' => Sz::Closed,
            Sz::Quoted if b == b'\\' => Sz::QuotedEsc,
            Sz::Quoted | Sz::QuotedEsc if qd => Sz::Quoted,
            Sz::Token | Sz::Closed | Sz::AfterValue if ws => Sz::AfterValue,
            Sz::Name | Sz::AfterName | Sz::Token | Sz::Closed | Sz::AfterValue if b == b';' => {
                Sz::PreName
            }
            _ => return None,
        };
    }
    Some(st)
}

/// A complete size line that breaks the strict grammar.
fn size_line_bad(line: &[u8]) -> bool {
    !matches!(
        size_line_state(line),
        Some(Sz::Size(1..) | Sz::Name | Sz::Token | Sz::Closed)
    )
}

/// E9, RFC 9112 §7.1.2 with §5 and RFC 9110 §5.1, §5.5: ringd holds trailer field lines to the
/// header section's syntax: a token name right before the colon, no line without a colon, and
/// a value of visible characters, SP and HTAB only. True when some trailer line (complete or
/// still arriving) breaks it.
fn trailer_syntax_bad(trailers: &[u8]) -> bool {
    let mut i = 0;
    while i < trailers.len() {
        if trailers[i..].starts_with(b"\r\n") || &trailers[i..] == b"\r" {
            return false; // the end of the trailer section (or its start)
        }
        let (mut colon, mut name) = (false, 0usize);
        loop {
            let Some(&b) = trailers.get(i) else {
                return false; // a line still arriving, nothing wrong in it yet
            };
            if b == b'\r' || b == b'\n' {
                if b == b'\n' || !colon {
                    return true;
                }
                i += 2;
                break;
            }
            if !colon {
                if b == b':' {
                    if name == 0 {
                        return true;
                    }
                    colon = true;
                } else if !is_tchar(b) {
                    return true;
                } else {
                    name += 1;
                }
            } else if !(b == b'\t' || (0x20..0x7f).contains(&b)) {
                return true;
            }
            i += 1;
        }
    }
    false
}

/// E7, RFC 9112 §5.2 / §2.2: a trailer line folded (starting with SP/HTAB), holding a NUL or
/// a bare LF.
fn trailer_bad(trailers: &[u8]) -> bool {
    let mut at_line_start = true;
    for (i, &b) in trailers.iter().enumerate() {
        if at_line_start && (b == b' ' || b == b'\t') {
            return true;
        }
        if b == 0 || (b == b'\n' && (i == 0 || trailers[i - 1] != b'\r')) {
            return true;
        }
        if b == b'\r' && trailers.get(i + 1).is_some_and(|&c| c != b'\n') {
            return true;
        }
        at_line_start = b == b'\n';
        if at_line_start && i >= 3 && &trailers[i - 3..=i] == b"\r\n\r\n" {
            break;
        }
        if i == 1 && &trailers[..2] == b"\r\n" {
            break;
        }
    }
    false
}

/// Where ringd's BodyReader ends a chunked body: Ok(Some(end)), Ok(None), Err(reason).
fn ringd_chunked(body: &[u8]) -> Result<Option<usize>, ProtoError> {
    let mut r = BodyReader::new(Framing::Chunked, u64::MAX, 1 << 20)?;
    let n = r.feed(body)?;
    Ok(r.done().then_some(n))
}

fuzz_target!(|data: &[u8]| {
    // The session strips the empty lines (CRLF) RFC 9112 §2.2 lets a server skip before a
    // request line, then parses; `parse` is only ever given what follows them.
    let data = &data[ringd::proto::parse::leading_empty_lines(data)..];
    let lim = limits();
    let mut slots = vec![httparse::EMPTY_HEADER; SLOTS];
    let mut hreq = httparse::Request::new(&mut slots);
    let h = hreq.parse(data);
    let r = parse(data, &lim);
    let n = match (h, r) {
        (Err(_), Ok(Parsed::Complete(req))) => {
            panic!("ringd accepts what httparse refuses: {req:?}")
        }
        (Err(_), Ok(Parsed::Partial)) => {
            // ringd must refuse once httparse has; only the request line check runs first.
            panic!("httparse refuses, ringd waits for more")
        }
        (Err(_), Err(_)) => return,
        (Ok(httparse::Status::Partial), Ok(Parsed::Partial)) => return,
        (Ok(httparse::Status::Partial), Ok(Parsed::Complete(_))) => {
            panic!("ringd complete where httparse is partial")
        }
        (Ok(httparse::Status::Partial), Err(e)) => {
            // E1 on the request line: ringd checks its CRLF before httparse sees the line.
            assert_eq!(
                e,
                ProtoError::BadRequest("request line not ended by CRLF"),
                "ringd refuses a partial head httparse would wait on"
            );
            let lf = data.iter().position(|&b| b == b'\n').expect("an LF");
            assert!(lf == 0 || data[lf - 1] != b'\r');
            return;
        }
        (Ok(httparse::Status::Complete(n)), r) => (n, r),
    };
    let (n, r) = n;
    let view = View {
        head: &data[..n],
        minor: hreq.version.expect("complete"),
        method: hreq.method.expect("complete"),
        target: hreq.path.expect("complete"),
        headers: hreq.headers.iter().map(|h| (h.name, h.value)).collect(),
    };
    let framing = view.framing();
    let req = match r {
        Ok(Parsed::Partial) => panic!("ringd partial where httparse is complete at {n}"),
        Err(e) => {
            let why = match e {
                ProtoError::BadRequest(
                    "request line not ended by CRLF" | "bare LF in header section",
                ) => view.bare_lf(),
                ProtoError::BadRequest(
                    "more than one Host" | "HTTP/1.1 request without Host" | "invalid Host",
                ) => view.host_bad(),
                ProtoError::BadRequest(
                    "invalid byte in request-target"
                    | "absolute-form without authority"
                    | "userinfo in request-target"
                    | "invalid request-target",
                ) => view.target_bad(),
                ProtoError::BadRequest(
                    "Transfer-Encoding with Content-Length"
                    | "Transfer-Encoding in HTTP/1.0"
                    | "chunked is not the final coding"
                    | "invalid transfer coding"
                    | "Transfer-Encoding without final chunked"
                    | "transfer coding other than chunked"
                    | "duplicate Content-Length"
                    | "invalid Content-Length",
                ) => framing.is_err(),
                ProtoError::ExpectationFailed => view.expect_other(),
                _ => false,
            };
            assert!(why, "ringd refuses with {e:?} and no exception explains it");
            return;
        }
        Ok(Parsed::Complete(req)) => req,
    };
    // Accepted: the same message end and reading, and no exception tripped.
    assert_eq!(req.head_len, n, "heads end at different bytes");
    assert_eq!(req.method_str, view.method);
    assert_eq!(req.target, view.target);
    assert_eq!(req.minor, view.minor);
    assert!(!view.bare_lf(), "ringd accepted a bare LF");
    assert!(!view.host_bad(), "ringd accepted a bad Host");
    assert!(!view.target_bad(), "ringd accepted a bad target");
    assert!(
        !view.expect_other(),
        "ringd accepted an unknown expectation"
    );
    assert_eq!(Ok(req.framing), framing, "framing differs");

    let body = &data[n..];
    match req.framing {
        Framing::None | Framing::Length(_) => {} // the end is n (+ the length) for both
        Framing::Chunked => {
            let ours = ringd_chunked(body);
            let theirs = httparse_chunked(body);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(_), Err(())) => {}
                // ringd finished where httparse had not: only when httparse waits on the trailer
                // section, which ringd reads line by line (E8: ringd's trailers are lenient).
                (Ok(Some(_)), Err(())) | (Ok(Some(_)), Ok(None)) | (Ok(None), Err(())) => {
                    let cl = chunk_lines(body);
                    assert!(
                        !cl.trailers.is_empty(),
                        "ringd {ours:?} vs httparse {theirs:?}: not in the trailers"
                    );
                    // The trailers ringd took must be plain lines (nothing it should refuse).
                    assert!(
                        !trailer_bad(cl.trailers),
                        "ringd accepted a bad trailer line"
                    );
                }
                (Err(e), _) => {
                    // E6/E7: ringd refused where httparse reads on; a size line or a trailer
                    // line must break the strict grammar.
                    let cl = chunk_lines(body);
                    let why = cl.lines.iter().any(|l| size_line_bad(l))
                        || cl.partial.is_some_and(|p| size_line_state(p).is_none())
                        || trailer_bad(cl.trailers)
                        || trailer_syntax_bad(cl.trailers);
                    assert!(
                        why,
                        "ringd refuses the chunked body ({e:?}) and httparse reads {theirs:?}; \
                         no exception explains it"
                    );
                }
                (a, b) => panic!("chunked body: ringd {a:?} vs httparse {b:?}"),
            }
        }
    }
});

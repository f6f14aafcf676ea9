//! Sans-IO HTTP/1.1 response parser: status line, headers, and every body framing a server may
//! use (Content-Length, chunked with extensions and trailers, close-delimited), fed in place.
//!
//! The parser owns no socket and copies nothing on the common path: a response head that arrives
//! whole in one receive buffer is parsed where it lies, and body bytes are only counted. Only a
//! head split across two receives is gathered into a small spill buffer that is reused for the
//! life of the connection, so steady-state parsing allocates nothing.

use thiserror::Error;

/// Largest response head (status line + headers) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest trailer section of a chunked body accepted, in bytes.
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Why a response could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The status line is not `HTTP/1.x NNN ...`.
    #[error("malformed status line")]
    StatusLine,
    /// A header line has no colon or contains a bare CR.
    #[error("malformed header line")]
    Header,
    /// The head exceeded [`MAX_HEAD`] bytes.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// Content-Length is not a decimal number, or two different values were sent.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A chunk-size line is not hexadecimal, or overflows 64 bits.
    #[error("invalid chunk size")]
    ChunkSize,
    /// Chunk data was not followed by CRLF.
    #[error("missing CRLF after chunk data")]
    ChunkEnd,
    /// The trailer section exceeded [`MAX_TRAILERS`] bytes.
    #[error("chunked trailers larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
    /// The connection closed in the middle of a response.
    #[error("connection closed mid-response")]
    Truncated,
    /// A 101 Switching Protocols response, which a load generator cannot follow.
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
}

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Decoded body length in bytes (chunk framing excluded).
    pub body_len: u64,
}

/// The framing of the response body being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the status line and headers.
    Head,
    /// A Content-Length body with this many bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// A body delimited by the server closing the connection.
    UntilClose,
}

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size (`digits` so far, `value` accumulated).
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension (or whitespace) up to the CR of the size line.
    Ext { value: u64 },
    /// Saw the CR of the size line, expecting LF.
    SizeLf { value: u64 },
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// Inside the trailer section; `line` bytes into the current line, `total` so far.
    Trailer { line: usize, total: usize },
    /// Saw CR in the trailer section (`line` bytes were on the line before it).
    TrailerLf { line: usize, total: usize },
}

/// What one call to [`ResponseParser::feed`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed. Less than the input only when a response completed.
    pub consumed: usize,
    /// The response that completed, if one did.
    pub done: Option<Response>,
}

/// Fields of a parsed head that decide framing and keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Content-Length, if present.
    pub content_length: Option<u64>,
    /// Transfer-Encoding ends in `chunked`.
    pub chunked: bool,
    /// `Connection: close` was sent.
    pub conn_close: bool,
    /// `Connection: keep-alive` was sent.
    pub conn_keepalive: bool,
}

/// Incremental response parser for one connection.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    /// Spill buffer for a head split across receives (capacity reused).
    spill: Vec<u8>,
    /// Responses carry no body (the requests were HEAD).
    no_body: bool,
    status: u16,
    close: bool,
    body_len: u64,
}

impl ResponseParser {
    /// A parser for responses to requests of which none (or all, with `no_body`) are HEAD.
    pub fn new(no_body: bool) -> Self {
        ResponseParser {
            state: State::Head,
            spill: Vec::with_capacity(512),
            no_body,
            status: 0,
            close: false,
            body_len: 0,
        }
    }

    /// Whether the next response answers a HEAD (set before its first byte, for request mixes).
    #[inline]
    pub fn set_no_body(&mut self, no_body: bool) {
        self.no_body = no_body;
    }

    /// True when no byte of the next response has been seen yet.
    #[inline]
    pub fn at_start(&self) -> bool {
        self.state == State::Head && self.spill.is_empty()
    }

    /// Forget any partial response (the connection is being replaced).
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.spill.clear();
    }

    /// Feed bytes. Returns how many were consumed and the response that completed, if any; call
    /// again with the rest of the input when a response completed before the input ran out.
    #[inline]
    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, ParseError> {
        let mut off = 0;
        loop {
            match self.state {
                State::Head => {
                    let (used, head) = self.feed_head(&data[off..])?;
                    off += used;
                    let Some(head) = head else {
                        return Ok(Fed {
                            consumed: off,
                            done: None,
                        });
                    };
                    if let Some(done) = self.start_body(head)? {
                        return Ok(Fed {
                            consumed: off,
                            done: Some(done),
                        });
                    }
                }
                State::Length(left) => {
                    let avail = (data.len() - off) as u64;
                    if avail < left {
                        self.state = State::Length(left - avail);
                        self.body_len += avail;
                        return Ok(Fed {
                            consumed: data.len(),
                            done: None,
                        });
                    }
                    off += left as usize;
                    self.body_len += left;
                    return Ok(Fed {
                        consumed: off,
                        done: Some(self.finish()),
                    });
                }
                State::Chunked(_) => {
                    let (used, done) = self.feed_chunked(&data[off..])?;
                    off += used;
                    return Ok(Fed {
                        consumed: off,
                        done: if done { Some(self.finish()) } else { None },
                    });
                }
                State::UntilClose => {
                    self.body_len += (data.len() - off) as u64;
                    return Ok(Fed {
                        consumed: data.len(),
                        done: None,
                    });
                }
            }
        }
    }

    /// The connection reached end of file. A close-delimited body completes here; a clean close
    /// between responses yields `None`; anything else is a truncated response.
    pub fn eof(&mut self) -> Result<Option<Response>, ParseError> {
        match self.state {
            State::UntilClose => Ok(Some(self.finish())),
            State::Head if self.spill.is_empty() => Ok(None),
            _ => {
                self.reset();
                Err(ParseError::Truncated)
            }
        }
    }

    fn finish(&mut self) -> Response {
        self.state = State::Head;
        Response {
            status: self.status,
            close: self.close,
            body_len: self.body_len,
        }
    }

    /// Accumulate/parse the head. Returns bytes consumed and the head once complete.
    #[inline]
    fn feed_head(&mut self, data: &[u8]) -> Result<(usize, Option<Head>), ParseError> {
        if self.spill.is_empty() {
            if let Some((head, end)) = try_parse_head(data)? {
                return Ok((end, Some(head)));
            }
            if data.len() > MAX_HEAD {
                return Err(ParseError::HeadTooLarge);
            }
            self.spill.extend_from_slice(data);
            return Ok((data.len(), None));
        }
        let old = self.spill.len();
        let take = data.len().min(MAX_HEAD + 4 - old.min(MAX_HEAD));
        self.spill.extend_from_slice(&data[..take]);
        match find_head_end(&self.spill, old.saturating_sub(3)) {
            Some(end) => {
                let head = parse_head(&self.spill[..end]);
                self.spill.clear();
                Ok((end - old, Some(head?)))
            }
            None if self.spill.len() > MAX_HEAD => Err(ParseError::HeadTooLarge),
            None => Ok((take, None)),
        }
    }

    /// Decide the body framing for a parsed head; returns the response when it has no body.
    fn start_body(&mut self, head: Head) -> Result<Option<Response>, ParseError> {
        self.status = head.status;
        self.body_len = 0;
        self.close = head.conn_close || (head.minor == 0 && !head.conn_keepalive);
        if head.status == 101 {
            return Err(ParseError::Upgrade);
        }
        if (100..200).contains(&head.status) {
            // Interim response: the final one follows.
            self.state = State::Head;
            return Ok(None);
        }
        if self.no_body || head.status == 204 || head.status == 304 {
            return Ok(Some(self.finish()));
        }
        if head.chunked {
            self.state = State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            });
            return Ok(None);
        }
        match head.content_length {
            Some(0) => Ok(Some(self.finish())),
            Some(n) => {
                self.state = State::Length(n);
                Ok(None)
            }
            None => {
                self.close = true;
                self.state = State::UntilClose;
                Ok(None)
            }
        }
    }

    /// Run the chunked-body state machine over `data`. Returns bytes consumed and whether the
    /// body (trailers included) completed.
    fn feed_chunked(&mut self, data: &[u8]) -> Result<(usize, bool), ParseError> {
        let State::Chunked(mut st) = self.state else {
            unreachable!("feed_chunked outside a chunked body")
        };
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            st = match st {
                Chunk::Size { value, digits } => match hex_val(b) {
                    Some(v) => {
                        if digits >= 16 {
                            return Err(ParseError::ChunkSize);
                        }
                        Chunk::Size {
                            value: (value << 4) | v as u64,
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(ParseError::ChunkSize),
                    None => match b {
                        b'\r' => Chunk::SizeLf { value },
                        b'\n' => self.after_size_line(value),
                        b';' | b' ' | b'\t' => Chunk::Ext { value },
                        _ => return Err(ParseError::ChunkSize),
                    },
                },
                Chunk::Ext { value } => match b {
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => self.after_size_line(value),
                    _ => Chunk::Ext { value },
                },
                Chunk::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ParseError::ChunkSize);
                    }
                    self.after_size_line(value)
                }
                Chunk::Data(left) => {
                    let avail = (data.len() - i) as u64;
                    let n = left.min(avail);
                    self.body_len += n;
                    i += n as usize;
                    st = if n == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - n)
                    };
                    continue;
                }
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(ParseError::ChunkEnd),
                },
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(ParseError::ChunkEnd);
                    }
                    Chunk::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                Chunk::Trailer { line, total } => {
                    if total >= MAX_TRAILERS {
                        return Err(ParseError::TrailersTooLarge);
                    }
                    match b {
                        b'\r' => Chunk::TrailerLf { line, total },
                        b'\n' if line == 0 => {
                            self.state = State::Head;
                            return Ok((i + 1, true));
                        }
                        b'\n' => Chunk::Trailer {
                            line: 0,
                            total: total + 1,
                        },
                        _ => Chunk::Trailer {
                            line: line + 1,
                            total: total + 1,
                        },
                    }
                }
                Chunk::TrailerLf { line, total } => {
                    if b != b'\n' {
                        return Err(ParseError::Header);
                    }
                    if line == 0 {
                        self.state = State::Head;
                        return Ok((i + 1, true));
                    }
                    Chunk::Trailer {
                        line: 0,
                        total: total + 2,
                    }
                }
            };
            i += 1;
        }
        self.state = State::Chunked(st);
        Ok((data.len(), false))
    }

    fn after_size_line(&self, value: u64) -> Chunk {
        if value == 0 {
            Chunk::Trailer { line: 0, total: 0 }
        } else {
            Chunk::Data(value)
        }
    }
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Index just past the blank line that ends a head (`\r\n\r\n`, or a bare `\n\n`), searching
/// from `from`.
#[inline]
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[pos..]) {
        let nl = pos + i;
        // The byte after this LF starts a line; the head ends if that line is empty.
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') => match buf.get(nl + 2) {
                Some(b'\n') => return Some(nl + 3),
                Some(_) => {}
                None => return None,
            },
            Some(_) => {}
            None => return None,
        }
        pos = nl + 1;
    }
    None
}

/// Parse a complete head (status line, headers, final blank line).
pub fn parse_head(buf: &[u8]) -> Result<Head, ParseError> {
    match try_parse_head(buf)? {
        Some((head, _)) => Ok(head),
        None => Err(ParseError::Header),
    }
}

/// Parse a head from the start of `buf` in one pass. Returns the head and its length (blank
/// line included), or `None` when `buf` ends before the blank line.
#[inline]
pub fn try_parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ParseError> {
    let mut lines = memchr::memchr_iter(b'\n', buf);
    let Some(nl) = lines.next() else {
        return Ok(None);
    };
    let mut head = parse_status_line(strip_cr(&buf[..nl]))?;
    let mut start = nl + 1;
    for nl in lines {
        let line = strip_cr(&buf[start..nl]);
        start = nl + 1;
        if line.is_empty() {
            return Ok(Some((head, start)));
        }
        // Names are short: a plain scan to the colon beats a SIMD search here.
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Header)?;
        let name = &line[..colon];
        // Only three names matter; reject the rest by length and first letter cheaply.
        match (name.len(), name[0] | 0x20) {
            (14, b'c') if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_decimal(trim(&line[colon + 1..])).ok_or(ParseError::ContentLength)?;
                if head.content_length.is_some_and(|old| old != n) {
                    return Err(ParseError::ContentLength);
                }
                head.content_length = Some(n);
            }
            (17, b't') if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // Chunked only if it is the final coding.
                let value = trim(&line[colon + 1..]);
                let last = value.rsplit(|&b| b == b',').next().map(trim);
                head.chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            }
            (10, b'c') if name.eq_ignore_ascii_case(b"connection") => {
                for tok in line[colon + 1..].split(|&b| b == b',').map(trim) {
                    if tok.eq_ignore_ascii_case(b"close") {
                        head.conn_close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        head.conn_keepalive = true;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// Parse `HTTP/1.x SSS[ reason]`.
#[inline]
fn parse_status_line(line: &[u8]) -> Result<Head, ParseError> {
    if line.len() < 12
        || &line[..7] != b"HTTP/1."
        || line[8] != b' '
        || (line.len() > 12 && line[12] != b' ')
    {
        return Err(ParseError::StatusLine);
    }
    let minor = match line[7] {
        b'0' => 0,
        b'1' => 1,
        _ => return Err(ParseError::StatusLine),
    };
    let mut status: u16 = 0;
    for &d in &line[9..12] {
        if !d.is_ascii_digit() {
            return Err(ParseError::StatusLine);
        }
        status = status * 10 + (d - b'0') as u16;
    }
    if status < 100 {
        return Err(ParseError::StatusLine);
    }
    Ok(Head {
        status,
        minor,
        content_length: None,
        chunked: false,
        conn_close: false,
        conn_keepalive: false,
    })
}

#[inline]
fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[inline]
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (d - b'0') as u64;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` split at every possible pair of points; every split must give `want`.
    fn parse_all(input: &[u8], no_body: bool) -> Result<Vec<Response>, ParseError> {
        let mut p = ResponseParser::new(no_body);
        let mut out = Vec::new();
        let mut data = input;
        while !data.is_empty() {
            let fed = p.feed(data)?;
            data = &data[fed.consumed..];
            out.extend(fed.done);
        }
        if let Some(r) = p.eof()? {
            out.push(r);
        }
        Ok(out)
    }

    fn parse_split(input: &[u8], chunks: &[usize]) -> Result<Vec<Response>, ParseError> {
        let mut p = ResponseParser::new(false);
        let mut out = Vec::new();
        let mut start = 0;
        for &end in chunks.iter().chain(std::iter::once(&input.len())) {
            let mut data = &input[start..end];
            start = end;
            loop {
                let fed = p.feed(data)?;
                data = &data[fed.consumed..];
                out.extend(fed.done);
                if data.is_empty() {
                    break;
                }
            }
        }
        if let Some(r) = p.eof()? {
            out.push(r);
        }
        Ok(out)
    }

    fn every_split(input: &[u8]) -> Vec<Response> {
        let whole = parse_all(input, false).unwrap();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let got = parse_split(input, &[a, b]).unwrap();
                assert_eq!(got, whole, "split at {a},{b}");
            }
        }
        whole
    }

    #[test]
    fn content_length_keepalive_pipelined() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n");
        let got = every_split(&two);
        assert_eq!(
            got,
            vec![
                Response {
                    status: 200,
                    close: false,
                    body_len: 5
                },
                Response {
                    status: 404,
                    close: false,
                    body_len: 0
                }
            ]
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;name=val\r\nhello\r\nA \r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\n\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
        let got = every_split(input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body_len, 15);
        assert!(!got[0].close);
        assert_eq!(got[1].body_len, 0);
        assert!(got[1].close);
    }

    #[test]
    fn close_delimited_body_completes_at_eof() {
        let input = b"HTTP/1.1 200 OK\r\nServer: t\r\n\r\nsome body bytes";
        let got = every_split(input);
        assert_eq!(
            got,
            vec![Response {
                status: 200,
                close: true,
                body_len: 15
            }]
        );
    }

    #[test]
    fn http10_closes_unless_keepalive() {
        let r = parse_all(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false).unwrap();
        assert!(r[0].close);
        let r = parse_all(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
            false,
        )
        .unwrap();
        assert!(!r[0].close);
    }

    #[test]
    fn interim_and_bodyless_statuses() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        let got = every_split(input);
        assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [204, 304]);
        // HEAD responses carry Content-Length but no body.
        let got = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body_len, 0);
    }

    #[test]
    fn bare_lf_heads_parse() {
        let got = parse_all(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false).unwrap();
        assert_eq!(got[0].body_len, 2);
    }

    #[test]
    fn malformed_input_is_rejected() {
        for bad in [
            &b"HTTX/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(
                parse_all(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn truncated_responses_error_at_eof() {
        let mut p = ResponseParser::new(false);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(p.eof(), Err(ParseError::Truncated));
        let mut p = ResponseParser::new(false);
        assert_eq!(p.eof(), Ok(None));
    }

    #[test]
    fn oversized_head_is_rejected() {
        let mut p = ResponseParser::new(false);
        p.feed(b"HTTP/1.1 200 OK\r\n").unwrap();
        let filler = vec![b'a'; 4096];
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = p.feed(&filler) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(ParseError::HeadTooLarge));
    }
}

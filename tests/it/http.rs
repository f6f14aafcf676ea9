//! A minimal HTTP/1.1 client for the tests: raw TcpStream, our own strict response parser
//! (status line, headers, Content-Length / chunked / until-close bodies).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Largest response head the parser accepts.
const MAX_HEAD: usize = 64 * 1024;

/// One parsed response.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as received (status line and fields), for messages.
    pub head: String,
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated header (all its lines) contains `token`, case-insensitively.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The server announced it will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.has_token("connection", "close")
            || (self.version == "HTTP/1.0" && !self.has_token("connection", "keep-alive"))
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.body.len().min(200);
        write!(
            f,
            "{}[{} body bytes: {:?}{}]",
            self.head,
            self.body.len(),
            String::from_utf8_lossy(&self.body[..shown]),
            if shown < self.body.len() { "…" } else { "" }
        )
    }
}

/// Why no response could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed cleanly before the first byte of a response.
    Closed,
    /// Nothing (more) arrived within the read timeout; `partial` bytes of a response had come.
    Timeout { partial: usize },
    /// The peer closed or reset in the middle of a response.
    Truncated { got: usize, what: String },
    /// The bytes are not an HTTP/1.x response.
    Malformed(String),
    /// A reset or another socket error before any byte of a response.
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => write!(f, "closed before a response"),
            ReadError::Timeout { partial } => {
                write!(f, "timed out with {partial} bytes of a response")
            }
            ReadError::Truncated { got, what } => {
                write!(f, "truncated response ({what}, {got} bytes buffered)")
            }
            ReadError::Malformed(m) => write!(f, "malformed response: {m}"),
            ReadError::Io(e) => write!(f, "socket error before a response: {e}"),
        }
    }
}

/// A client connection with a read buffer.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// When set: read at most this many bytes at a time and sleep after each read.
    pub throttle: Option<(usize, Duration)>,
    eof: bool,
    /// The last response read announced the close of the connection (`Connection: close`).
    closing: bool,
    peer: Option<std::net::SocketAddr>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        Client {
            peer: stream.peer_addr().ok(),
            stream,
            buf: Vec::new(),
            throttle: None,
            eof: false,
            closing: false,
        }
    }

    pub fn set_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Send without panicking (the server may already have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Bytes received but not yet parsed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Read more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = vec![0u8; self.throttle.map(|t| t.0).unwrap_or(64 * 1024)];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    if let Some((_, pause)) = self.throttle {
                        thread::sleep(pause);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_err(&mut self, what: &str) -> Result<(), ReadError> {
        let start = self.buf.len();
        match self.fill() {
            Ok(0) if start == 0 && what == "head" => Err(ReadError::Closed),
            Ok(0) => Err(ReadError::Truncated {
                got: start,
                what: format!("EOF in {what}"),
            }),
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadError::Timeout { partial: start })
            }
            Err(e) if start == 0 && what == "head" => Err(ReadError::Io(e)),
            Err(e) => Err(ReadError::Truncated {
                got: start,
                what: format!("{e} in {what}"),
            }),
        }
    }

    /// Read one response. `head_request`: it answers a HEAD (no body whatever the headers say).
    pub fn read_response(&mut self, head_request: bool) -> Result<Response, ReadError> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Malformed(format!(
                    "no end of head in {} bytes",
                    self.buf.len()
                )));
            }
            if !self.buf.is_empty() && !b"HTTP/".starts_with(&self.buf[..self.buf.len().min(5)]) {
                return Err(ReadError::Malformed(format!(
                    "not a response: {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(80)])
                )));
            }
            self.fill_err("head")?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let code = parts.next().unwrap_or("");
        if !(version == "HTTP/1.1" || version == "HTTP/1.0") || code.len() != 3 {
            return Err(ReadError::Malformed(format!(
                "bad status line {status_line:?}"
            )));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| ReadError::Malformed(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Err(ReadError::Malformed(format!("bad header line {line:?}")));
            };
            if k.is_empty() || k.contains(' ') {
                return Err(ReadError::Malformed(format!("bad header name {line:?}")));
            }
            headers.push((k.to_string(), v.trim().to_string()));
        }
        self.buf.drain(..head_end + 4);
        let mut resp = Response {
            version,
            status,
            headers,
            body: Vec::new(),
            head: head + "\r\n\r\n",
        };
        if head_request || status / 100 == 1 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let te = resp.header_all("transfer-encoding").join(",");
        if te
            .rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
        {
            resp.body = self.read_chunked()?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| ReadError::Malformed(format!("bad Content-Length {cl:?}")))?;
            if resp.header_all("content-length").len() > 1 {
                return Err(ReadError::Malformed("several Content-Length fields".into()));
            }
            while self.buf.len() < n {
                self.fill_err("body")?;
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            // Body delimited by close (RFC 9112 §6.3 rule 8).
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ReadError::Truncated {
                            got: self.buf.len(),
                            what: format!("{e} in close-delimited body"),
                        })
                    }
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line("chunk size")?;
            let size_txt = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_txt, 16)
                .map_err(|_| ReadError::Malformed(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailer section, then the empty line.
                while !self.read_line("trailer")?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                self.fill_err("chunk")?;
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
            }
            self.buf.drain(..size + 2);
        }
    }

    fn read_line(&mut self, what: &str) -> Result<String, ReadError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill_err(what)?;
        }
    }

    /// Wait up to `limit` for the peer to close. Ok(extra bytes received meanwhile) at EOF or
    /// reset; Err(bytes) if the connection is still open at the deadline.
    pub fn wait_close(&mut self, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::mem::take(&mut self.buf));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(std::mem::take(&mut self.buf))
                }
                Err(_) => return Ok(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Send `req` and read its response (panics on a read error, with the request shown).
    /// When the previous response announced a close, a new connection to the same peer is
    /// opened first: a server may close after any response it marks so (RFC 9112 §9.6).
    pub fn exchange(&mut self, req: &[u8]) -> Response {
        if self.closing {
            let addr = self.peer.expect("peer address");
            let fresh = TcpStream::connect(addr).expect("reconnect");
            fresh
                .set_read_timeout(self.stream.read_timeout().unwrap())
                .unwrap();
            fresh
                .set_write_timeout(self.stream.write_timeout().unwrap())
                .unwrap();
            let throttle = self.throttle;
            *self = Client::new(fresh);
            self.throttle = throttle;
        }
        self.send(req);
        let head = req.starts_with(b"HEAD ");
        let r = self.read_response(head).unwrap_or_else(|e| {
            panic!(
                "no response to {:?}: {e}",
                String::from_utf8_lossy(&req[..req.len().min(300)])
            )
        });
        self.closing = r.closes();
        r
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Build an HTTP/1.1 request with `Host: localhost` and the given extra header lines.
pub fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// GET `target` on a fresh connection to `port`.
pub fn get(srv: &crate::harness::Server, target: &str, headers: &[(&str, &str)]) -> Response {
    Client::new(srv.connect()).exchange(&req("GET", target, headers))
}

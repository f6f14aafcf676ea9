//! Helpers shared by ringd's fuzz targets: a tiny deterministic PRNG that turns a few input
//! bytes into split points and clock steps, the on-disk fixture (a temp dir of files and the
//! `Config`s the session target runs with), a strict HTTP/1.1 response-stream parser, and the
//! "oracle" that says which responses a request stream must get when it arrives in one piece.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ringd::config::{Config, Limits};
use ringd::handler::Roots;
use ringd::proto::framing::{BodyReader, Framing};
use ringd::proto::parse::{self, Method, Parsed};

/// xorshift64*: deterministic, seeded from input bytes, good enough to pick split points.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A piece size in `1..=max`, biased towards small ones (1 byte splits matter most).
    pub fn piece(&mut self, max: usize) -> usize {
        let max = max.max(1) as u64;
        let r = match self.below(4) {
            0 => 1 + self.below(4),
            1 => 1 + self.below(64),
            2 => 1 + self.below(4096),
            _ => max,
        };
        r.min(max) as usize
    }
}

/// Splits `data` into a control prefix of `n` bytes (zero-padded) and the rest.
pub fn split_control<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut ctl = [0u8; N];
    let n = data.len().min(N);
    ctl[..n].copy_from_slice(&data[..n]);
    (ctl, &data[n..])
}

/// Limits small enough that fuzzed inputs cross every one of them.
pub fn tiny_limits() -> Limits {
    Limits {
        max_request_line: 64,
        max_header_bytes: 256,
        max_headers: 6,
        max_body: 300,
        max_conns_per_worker: 16,
        max_pipeline_depth: 2,
    }
}

/// The files every session iteration serves, created once per process.
pub struct Fixture {
    pub dir: PathBuf,
    /// Index 0: default limits, one implicit site. 1: tiny limits, pipeline depth 2, small
    /// in-memory file limit (so bodies go out as `Output::File`). 2: the sites/routes config
    /// file in the fixture (redirect, respond, headers, browse, try_files, errors).
    pub configs: Vec<(Config, Roots)>,
}

const SITES_TOML: &str = r#"
[[sites]]
hosts = ["_"]
root = "www"
index = ["index.html"]
browse = true
errors = { 404 = "/404.html" }
headers = { set = { "X-Site" = "default" } }

[[sites.routes]]
path = "/old/*"
redirect = { to = "/new/{*}", status = 301 }

[[sites.routes]]
path = "/teapot"
methods = ["GET", "HEAD"]
respond = { status = 418, body = "short and stout\n", headers = { "X-Tea" = "1" } }

[[sites.routes]]
regex = "^/r/([a-z]+)$"
rewrite = "/{1}.txt"

[[sites.routes]]
path = "/spa/*"
try_files = ["{path}", "/index.html"]

[[sites]]
hosts = ["example.com", "*.example.org"]
root = "www/sub"
redirect = { to = "https://example.net{path}{query}" }
"#;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write fixture file");
}

impl Fixture {
    /// The process-wide fixture (a temp dir named after the pid; left behind on exit, ~100 KB).
    pub fn get() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(Fixture::create)
    }

    fn create() -> Fixture {
        let dir = std::env::temp_dir().join(format!("ringd-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let www = dir.join("www");
        write(&www, "index.html", b"<h1>home</h1>\n");
        write(&www, "a.txt", b"hello world\n");
        write(&www, "a.txt.gz", b"\x1f\x8b gzip sidecar");
        write(&www, "a.txt.br", b"brotli sidecar");
        write(&www, "404.html", b"not here\n");
        write(&www, ".hidden", b"secret\n");
        write(&www, "sub/index.html", b"sub\n");
        write(&www, "sub/b.json", b"{\"b\":1}\n");
        write(&www, "list/x.txt", b"x\n");
        write(&www, "list/y z.txt", b"y\n");
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        write(&www, "big.bin", &big);
        write(&dir, "ringd.toml", SITES_TOML.as_bytes());

        let root_fd = |p: &Path| ringd::sys::open_dir_path(p).expect("open fixture root");
        let single = |c: &mut Config| {
            c.root = www.clone();
            c.sites = Arc::new(ringd::config::Sites::single(www.clone()));
        };
        let mut configs = Vec::new();

        let mut a = Config::default();
        single(&mut a);
        configs.push((a, Arc::from(vec![root_fd(&www)])));

        let mut b = Config::default();
        single(&mut b);
        b.limits = tiny_limits();
        b.cache.small_file_max = 16;
        b.timeouts.header_read = Duration::from_millis(500);
        b.timeouts.keepalive = Duration::from_secs(2);
        b.timeouts.send_stall = Duration::from_secs(1);
        configs.push((b, Arc::from(vec![root_fd(&www)])));

        let loaded = ringd::config::load_file(&dir.join("ringd.toml"))
            .unwrap_or_else(|e| panic!("fixture config: {e}"));
        let mut c = Config::default();
        c.root = loaded.sites.roots[0].clone();
        let roots: Vec<_> = loaded.sites.roots.iter().map(|p| root_fd(p)).collect();
        c.sites = Arc::new(loaded.sites);
        configs.push((c, Arc::from(roots)));
        Fixture { dir, configs }
    }
}

/// One response the oracle expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The request's method token is HEAD (so the response has no body).
    pub head_only: bool,
    /// Some(status) for a protocol error (ringd's `ProtoError::status`).
    pub error: Option<u16>,
    /// The response must carry `Connection: close` and be the last one.
    pub close: bool,
}

/// The responses a session must produce for `stream` arriving in one piece, followed by EOF:
/// the same loop as `Session::process`, without splits, clock or backpressure.
pub fn oracle(stream: &[u8], limits: &Limits) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut pos = 0;
    let max_trailer = limits.max_header_bytes;
    loop {
        pos += parse::leading_empty_lines(&stream[pos..]);
        if pos == stream.len() {
            break;
        }
        let at = &stream[pos..];
        let head_only = parse::is_head(at);
        let err = |e: ringd::proto::ProtoError| Expected {
            head_only,
            error: Some(e.status()),
            close: true,
        };
        let req = match parse::parse(at, limits) {
            Ok(Parsed::Partial) => break,
            Err(e) => {
                out.push(err(e));
                break;
            }
            Ok(Parsed::Complete(r)) => r,
        };
        let mut body_len = 0;
        let mut skip_rest = false;
        if req.framing != Framing::None {
            match BodyReader::new(req.framing, limits.max_body, max_trailer) {
                Err(e) => {
                    out.push(err(e));
                    break;
                }
                Ok(_) if req.expect_continue => skip_rest = true,
                Ok(mut r) => match r.feed(&at[req.head_len..]) {
                    Err(e) => {
                        out.push(err(e));
                        break;
                    }
                    Ok(_) if !r.done() => break,
                    Ok(n) => body_len = n,
                },
            }
        }
        let close = skip_rest || !req.keep_alive;
        out.push(Expected {
            head_only: req.method == Method::Head,
            error: None,
            close,
        });
        if close {
            break;
        }
        pos += req.head_len + body_len;
    }
    out
}

/// One response parsed from a server's output stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub close: bool,
    pub keep_alive: bool,
    pub content_length: Option<u64>,
    /// Bytes of head plus body.
    pub len: usize,
}

/// Parses `out` as consecutive HTTP/1.1 responses, strictly: status line
/// `HTTP/1.1 DDD reason CRLF`, field lines `token ":" OWS value CRLF` with no CR, LF or NUL in
/// the value, exactly one Content-Length on every response that has a body (no
/// Transfer-Encoding: ringd never chunks), and that many body bytes, none for a response to
/// HEAD (`head_only(i)`) or a 1xx/204/304. Nothing may follow a `Connection: close` response.
/// Returns the responses and whether the stream ended inside one (allowed only when
/// `allow_tail`, for a connection the driver closed on a timeout).
pub fn parse_responses(
    out: &[u8],
    head_only: impl Fn(usize) -> bool,
    allow_tail: bool,
) -> Result<(Vec<Response>, bool), String> {
    let mut rs: Vec<Response> = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        if let Some(prev) = rs.last() {
            if prev.close {
                return Err(format!(
                    "{} bytes after a Connection: close response",
                    out.len() - pos
                ));
            }
        }
        let rest = &out[pos..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return if allow_tail {
                Ok((rs, true))
            } else {
                Err(format!(
                    "incomplete response head: {:?}",
                    String::from_utf8_lossy(&rest[..rest.len().min(200)])
                ))
            };
        };
        let head = &rest[..head_end + 2];
        let mut lines = head.split(|&b| b == b'\n');
        let status_line = lines.next().unwrap_or(b"");
        let status_line = status_line
            .strip_suffix(b"\r")
            .ok_or("status line without CR")?;
        if status_line.len() < 13
            || !status_line.starts_with(b"HTTP/1.1 ")
            || !status_line[9..12].iter().all(u8::is_ascii_digit)
            || status_line[12] != b' '
            || status_line[13..]
                .iter()
                .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
        {
            return Err(format!(
                "bad status line {:?}",
                String::from_utf8_lossy(status_line)
            ));
        }
        let status = (status_line[9] - b'0') as u16 * 100
            + (status_line[10] - b'0') as u16 * 10
            + (status_line[11] - b'0') as u16;
        if !(100..=599).contains(&status) {
            return Err(format!("status {status} out of range"));
        }
        let mut cl: Option<u64> = None;
        let (mut close, mut keep_alive) = (false, false);
        for line in lines {
            if line.is_empty() {
                continue; // the split after the final CRLF
            }
            let line = line.strip_suffix(b"\r").ok_or("field line without CR")?;
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| format!("field line without colon: {line:?}"))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| ringd::proto::framing::is_tchar(b)) {
                return Err(format!(
                    "bad field name {:?}",
                    String::from_utf8_lossy(name)
                ));
            }
            if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
                return Err("CR, LF or NUL in a field value".into());
            }
            let value = ringd::proto::framing::trim(value);
            if name.eq_ignore_ascii_case(b"content-length") {
                if cl.is_some() {
                    return Err("two Content-Length fields".into());
                }
                cl = Some(
                    ringd::proto::framing::parse_decimal(value)
                        .ok_or("invalid Content-Length value")?,
                );
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err("Transfer-Encoding in a response".into());
            } else if name.eq_ignore_ascii_case(b"connection") {
                for t in ringd::proto::framing::list(value) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let no_body = head_only(rs.len()) || status < 200 || status == 204 || status == 304;
        let body = if no_body {
            0
        } else {
            cl.ok_or_else(|| format!("{status} response without Content-Length"))?
        };
        let total = head_end + 4 + body as usize;
        if total > rest.len() {
            return if allow_tail {
                Ok((rs, true))
            } else {
                Err(format!(
                    "body of {body} bytes cut short at {}",
                    rest.len() - head_end - 4
                ))
            };
        }
        rs.push(Response {
            status,
            close,
            keep_alive,
            content_length: cl,
            len: total,
        });
        pos += total;
    }
    Ok((rs, false))
}

/// First index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_counts_pipelined_requests() {
        let l = Limits::default();
        let s = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost";
        let e = oracle(s, &l);
        assert_eq!(e.len(), 2);
        assert!(e[1].head_only);
        let e = oracle(
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            &l,
        );
        assert_eq!(
            e,
            vec![Expected {
                head_only: false,
                error: Some(400),
                close: true
            }]
        );
    }

    #[test]
    fn response_parser_is_strict() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (rs, tail) = parse_responses(ok, |_| false, false).unwrap();
        assert_eq!(rs.len(), 2);
        assert!(!tail && rs[1].close);
        let mut after_close = ok.to_vec();
        after_close.extend_from_slice(b"x");
        assert!(parse_responses(&after_close, |_| false, false).is_err());
        assert!(parse_responses(b"HTTP/1.1 200 OK\r\n\r\n", |_| false, false).is_err());
        assert!(parse_responses(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            |_| true,
            false
        )
        .is_ok());
    }
}

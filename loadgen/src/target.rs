//! Targets and requests: parsing `http://host:port/path` and `unix:/socket:/path` URLs, the
//! weighted URL mix of `--urls`, and pre-encoding every request once so the hot path only copies.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use thiserror::Error;

use crate::schedule::Rng;

/// Why a target or request could not be built.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// Host and port.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A line of the `--urls` file is wrong.
    #[error("{file}:{line}: {why}")]
    UrlsFile {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The `--urls` file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of the `--requests` file is wrong.
    #[error("{file}:{line}: {why}")]
    RequestsFile {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A header given with `-H` is not `Name: value`.
    #[error("invalid header {0:?}: expected \"Name: value\"")]
    Header(String),
    /// The request method is not a token.
    #[error("invalid method {0:?}")]
    Method(String),
}

/// Where connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix stream socket path.
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A parsed target URL.
#[derive(Clone, Debug)]
pub struct Url {
    /// The URL as given.
    pub text: String,
    /// Where to connect.
    pub addr: Addr,
    /// The `Host` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `https://`: the server name to verify the certificate against (and send as SNI).
    pub tls: Option<String>,
}

impl Url {
    /// Parse `http://host[:port][/path]` or `unix:/socket/path[:/url-path]`, resolving the host.
    pub fn parse(text: &str) -> Result<Url, TargetError> {
        let bad = |why| TargetError::InvalidUrl {
            url: text.to_string(),
            why,
        };
        if let Some(rest) = text.strip_prefix("unix:") {
            let (sock, path) = match rest.rfind(":/") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, "/"),
            };
            if sock.is_empty() {
                return Err(bad(
                    "missing socket path (expected unix:/path/to.sock:/url)",
                ));
            }
            check_path(path).map_err(bad)?;
            return Ok(Url {
                text: text.to_string(),
                addr: Addr::Unix(PathBuf::from(sock)),
                host: "localhost".to_string(),
                path: path.to_string(),
                tls: None,
            });
        }
        let (rest, tls, default_port) = match text.strip_prefix("https://") {
            Some(r) => (r, true, "443"),
            None => (
                text.strip_prefix("http://").ok_or_else(|| {
                    bad("expected http(s)://host[:port]/path or unix:/socket:/path")
                })?,
                false,
                "80",
            ),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        if authority.contains('@') {
            return Err(bad("user info in URLs is not supported"));
        }
        check_path(&path).map_err(bad)?;
        // Split host and port, allowing [v6]:port.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ]")),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (authority, default_port),
            }
        };
        let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let query = if authority.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut addrs: Vec<SocketAddr> = query
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                host: query.clone(),
                source,
            })?
            .collect();
        // Prefer IPv4 (what `localhost` servers usually listen on).
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs.first().ok_or_else(|| TargetError::Resolve {
            host: query.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        })?;
        Ok(Url {
            text: text.to_string(),
            addr: Addr::Tcp(addr),
            host: authority.to_string(),
            path,
            tls: tls.then(|| host.to_string()),
        })
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("path contains spaces or control characters (percent-encode them)");
    }
    Ok(())
}

/// What every request of a run carries besides its URL.
#[derive(Clone, Debug, Default)]
pub struct RequestSpec {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Extra headers, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Request body, sent with a Content-Length.
    pub body: Option<Vec<u8>>,
    /// Send `Connection: close` (a new connection per request).
    pub close: bool,
}

impl RequestSpec {
    /// Parse `-H "Name: value"` arguments.
    pub fn parse_header(h: &str) -> Result<(String, String), TargetError> {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| TargetError::Header(h.to_string()))?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_tchar) || value.contains(['\r', '\n']) {
            return Err(TargetError::Header(h.to_string()));
        }
        Ok((name.to_string(), value.trim().to_string()))
    }

    /// Check the method is an HTTP token.
    pub fn check_method(m: &str) -> Result<(), TargetError> {
        if m.is_empty() || !m.bytes().all(is_tchar) {
            return Err(TargetError::Method(m.to_string()));
        }
        Ok(())
    }

    /// True when responses carry no body (HEAD).
    pub fn no_body(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// Encode one request for `url`.
    pub fn encode(&self, url: &Url) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + url.path.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(url.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(url.host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The requests of a run, pre-encoded, with their weights.
#[derive(Clone, Debug)]
pub struct RequestSet {
    /// Where every request goes.
    pub addr: Addr,
    /// Encoded requests.
    pub reqs: Vec<Vec<u8>>,
    /// The URL of each request (for reports).
    pub urls: Vec<String>,
    /// Cumulative weights, same length as `reqs`.
    cum: Vec<u64>,
    /// Responses carry no body (every request is HEAD).
    pub no_body: bool,
    /// Per request: it is a HEAD (only consulted when `mixed_head`).
    pub head: Vec<bool>,
    /// Some requests are HEAD and some are not: the parser is told per response.
    pub mixed_head: bool,
    /// Over TLS (`https://`), verifying this server name.
    pub tls: Option<String>,
}

/// One entry of a `--requests` file in its JSON form.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    #[serde(default)]
    method: Option<String>,
    /// A path (relative to the target) or an absolute URL of the same server.
    #[serde(alias = "url")]
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_file: Option<String>,
    #[serde(default = "one")]
    weight: u64,
}

fn one() -> u64 {
    1
}

impl RequestSet {
    /// A run of one URL.
    pub fn single(url: &Url, spec: &RequestSpec) -> RequestSet {
        RequestSet {
            addr: url.addr.clone(),
            reqs: vec![spec.encode(url)],
            urls: vec![url.text.clone()],
            cum: vec![1],
            no_body: spec.no_body(),
            head: vec![spec.no_body()],
            mixed_head: false,
            tls: url.tls.clone(),
        }
    }

    /// A weighted request mix read from a `--requests` file: per line either
    /// `[WEIGHT] METHOD PATH` or a JSON object `{"method", "path" (or "url"), "headers",
    /// "body" or "body_file", "weight"}`; `#` comments and blank lines are ignored. Each entry
    /// starts from `spec` (the `-H` headers, `--body`, `-m`) and overrides it. Paths are relative
    /// to `base`; absolute URLs must name the same address.
    pub fn from_requests_file(
        file: &str,
        base: &Url,
        spec: &RequestSpec,
    ) -> Result<RequestSet, TargetError> {
        let text = std::fs::read_to_string(file).map_err(|source| TargetError::Read {
            file: file.to_string(),
            source,
        })?;
        let err = |line: usize, why: String| TargetError::RequestsFile {
            file: file.to_string(),
            line,
            why,
        };
        let mut set = RequestSet {
            addr: base.addr.clone(),
            reqs: Vec::new(),
            urls: Vec::new(),
            cum: Vec::new(),
            no_body: false,
            head: Vec::new(),
            mixed_head: false,
            tls: base.tls.clone(),
        };
        let mut total = 0u64;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry: RequestLine = if line.starts_with('{') {
                serde_json::from_str(line).map_err(|e| err(n, e.to_string()))?
            } else {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let (weight, method, path) = match parts.as_slice() {
                    [m, p] => (1, *m, *p),
                    [w, m, p] => (
                        w.parse::<u64>()
                            .map_err(|_| err(n, format!("weight {w:?} is not an integer")))?,
                        *m,
                        *p,
                    ),
                    _ => {
                        return Err(err(
                            n,
                            "expected `[WEIGHT] METHOD PATH` or a JSON object".into(),
                        ))
                    }
                };
                RequestLine {
                    method: Some(method.to_string()),
                    path: path.to_string(),
                    headers: Default::default(),
                    body: None,
                    body_file: None,
                    weight,
                }
            };
            if entry.weight == 0 {
                continue;
            }
            let mut s = spec.clone();
            if let Some(m) = entry.method {
                RequestSpec::check_method(&m).map_err(|e| err(n, e.to_string()))?;
                s.method = m;
            }
            for (k, v) in &entry.headers {
                let (k, v) = RequestSpec::parse_header(&format!("{k}: {v}"))
                    .map_err(|e| err(n, e.to_string()))?;
                s.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
                s.headers.push((k, v));
            }
            match (entry.body, entry.body_file) {
                (Some(_), Some(_)) => {
                    return Err(err(n, "give body or body_file, not both".into()))
                }
                (Some(b), None) => s.body = Some(b.into_bytes()),
                (None, Some(f)) => {
                    s.body = Some(std::fs::read(&f).map_err(|e| err(n, format!("{f}: {e}")))?)
                }
                (None, None) => {}
            }
            let url = if entry.path.starts_with('/') {
                check_path(&entry.path).map_err(|w| err(n, w.to_string()))?;
                Url {
                    text: format!("{}{}", origin(base), entry.path),
                    path: entry.path.clone(),
                    ..base.clone()
                }
            } else {
                let u = Url::parse(&entry.path).map_err(|e| err(n, e.to_string()))?;
                if u.addr != base.addr {
                    return Err(err(
                        n,
                        format!("{} is not the same server as {}", u.addr, base.addr),
                    ));
                }
                u
            };
            total += entry.weight;
            set.reqs.push(s.encode(&url));
            let host = s
                .headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case("host"))
                .map(|(_, v)| format!(" (Host: {v})"))
                .unwrap_or_default();
            set.urls.push(format!("{} {}{host}", s.method, url.text));
            set.head.push(s.no_body());
            set.cum.push(total);
        }
        if set.reqs.is_empty() {
            return Err(err(0, "no requests with a non-zero weight".into()));
        }
        set.no_body = set.head.iter().all(|&h| h);
        set.mixed_head = !set.no_body && set.head.iter().any(|&h| h);
        Ok(set)
    }

    /// A weighted mix read from a `--urls` file: one `URL` or `WEIGHT URL` per line, `#`
    /// comments and blank lines ignored. Paths (`/x`) are relative to `base`; absolute URLs must
    /// name the same address as the first one.
    pub fn from_file(
        file: &str,
        base: Option<&Url>,
        spec: &RequestSpec,
    ) -> Result<RequestSet, TargetError> {
        let text = std::fs::read_to_string(file).map_err(|source| TargetError::Read {
            file: file.to_string(),
            source,
        })?;
        let err = |line: usize, why: String| TargetError::UrlsFile {
            file: file.to_string(),
            line,
            why,
        };
        let mut base = base.cloned();
        let mut set = RequestSet {
            addr: Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            reqs: Vec::new(),
            urls: Vec::new(),
            cum: Vec::new(),
            no_body: spec.no_body(),
            head: Vec::new(),
            mixed_head: false,
            tls: None,
        };
        let mut total = 0u64;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (weight, url_text) = match (parts.next(), parts.next(), parts.next()) {
                (Some(u), None, None) => (1u64, u),
                (Some(w), Some(u), None) => (
                    w.parse::<u64>()
                        .map_err(|_| err(i + 1, format!("weight {w:?} is not an integer")))?,
                    u,
                ),
                _ => return Err(err(i + 1, "expected `URL` or `WEIGHT URL`".into())),
            };
            if weight == 0 {
                continue;
            }
            let url = if url_text.starts_with('/') {
                let b = base
                    .as_ref()
                    .ok_or_else(|| err(i + 1, "a bare path needs a target URL before it".into()))?;
                check_path(url_text).map_err(|w| err(i + 1, w.to_string()))?;
                Url {
                    text: format!("{}{}", origin(b), url_text),
                    path: url_text.to_string(),
                    ..b.clone()
                }
            } else {
                let u = Url::parse(url_text).map_err(|e| err(i + 1, e.to_string()))?;
                if let Some(b) = &base {
                    if b.addr != u.addr {
                        return Err(err(
                            i + 1,
                            format!("{} is not the same server as {}", u.addr, b.addr),
                        ));
                    }
                }
                u
            };
            if base.is_none() {
                base = Some(url.clone());
            }
            total += weight;
            set.reqs.push(spec.encode(&url));
            set.urls.push(url.text.clone());
            set.head.push(spec.no_body());
            set.cum.push(total);
        }
        let base = base.ok_or_else(|| err(0, "no URLs in file".into()))?;
        if set.reqs.is_empty() {
            return Err(err(0, "no URLs with a non-zero weight".into()));
        }
        set.addr = base.addr;
        set.tls = base.tls;
        Ok(set)
    }

    /// Pick a request index by weight.
    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> u32 {
        if self.reqs.len() == 1 {
            return 0;
        }
        let total = *self.cum.last().expect("non-empty");
        let x = rng.below(total);
        self.cum.partition_point(|&c| c <= x) as u32
    }

    /// Longest encoded request.
    pub fn max_len(&self) -> usize {
        self.reqs.iter().map(Vec::len).max().unwrap_or(0)
    }
}

fn origin(u: &Url) -> String {
    match &u.addr {
        Addr::Unix(p) => format!("unix:{}:", p.display()),
        Addr::Tcp(_) if u.tls.is_some() => format!("https://{}", u.host),
        Addr::Tcp(_) => format!("http://{}", u.host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_unix_urls() {
        let u = Url::parse("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(u.addr, Addr::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(u.path, "/a/b?c=d");
        assert_eq!(u.host, "127.0.0.1:8080");
        let u = Url::parse("http://127.0.0.1").unwrap();
        assert_eq!(u.path, "/");
        assert_eq!(u.addr, Addr::Tcp("127.0.0.1:80".parse().unwrap()));
        let u = Url::parse("https://127.0.0.1/x").unwrap();
        assert_eq!(u.addr, Addr::Tcp("127.0.0.1:443".parse().unwrap()));
        assert_eq!(u.tls.as_deref(), Some("127.0.0.1"));
        let u = Url::parse("http://[::1]:81?x").unwrap();
        assert_eq!(u.addr, Addr::Tcp("[::1]:81".parse().unwrap()));
        assert_eq!(u.path, "/?x");
        let u = Url::parse("unix:/tmp/s.sock:/index.html").unwrap();
        assert_eq!(u.addr, Addr::Unix("/tmp/s.sock".into()));
        assert_eq!(u.path, "/index.html");
        let u = Url::parse("unix:/tmp/s.sock").unwrap();
        assert_eq!(u.path, "/");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ftp://x/",
            "https://x/",
            "http://",
            "http://:80/",
            "http://h:99999/",
            "http://h:80/a b",
            "unix::/x",
            "127.0.0.1:80",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_requests() {
        let u = Url::parse("http://127.0.0.1:1/x").unwrap();
        let spec = RequestSpec {
            method: "POST".into(),
            headers: vec![("X-A".into(), "1".into())],
            body: Some(b"hi".to_vec()),
            close: true,
        };
        assert_eq!(
            spec.encode(&u),
            b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\nConnection: close\r\n\
              Content-Length: 2\r\n\r\nhi"
        );
        assert!(RequestSpec::parse_header("Bad Name: x").is_err());
        assert!(RequestSpec::parse_header("Good: x").is_ok());
    }

    #[test]
    fn request_files_take_lines_and_json() {
        let f = std::env::temp_dir().join(format!("loadgen-reqs-{}", std::process::id()));
        std::fs::write(
            &f,
            "# mix\n3 GET /a\nHEAD /b\n\
             {\"method\":\"POST\",\"path\":\"/c\",\"headers\":{\"Host\":\"site.test\"},\
             \"body\":\"hi\",\"weight\":2}\n0 GET /never\n",
        )
        .unwrap();
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        let spec = RequestSpec {
            method: "GET".into(),
            headers: vec![("X-All".into(), "1".into())],
            ..Default::default()
        };
        let set = RequestSet::from_requests_file(f.to_str().unwrap(), &base, &spec).unwrap();
        assert_eq!(set.reqs.len(), 3);
        assert_eq!(set.head, vec![false, true, false]);
        assert!(set.mixed_head && !set.no_body);
        assert_eq!(
            set.reqs[2],
            b"POST /c HTTP/1.1\r\nX-All: 1\r\nHost: site.test\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert!(set.urls[2].contains("Host: site.test"));
        std::fs::write(&f, "GET /a extra words\n").unwrap();
        assert!(RequestSet::from_requests_file(f.to_str().unwrap(), &base, &spec).is_err());
        std::fs::write(&f, "{\"path\":\"/a\",\"nope\":1}\n").unwrap();
        let e = RequestSet::from_requests_file(f.to_str().unwrap(), &base, &spec).unwrap_err();
        assert!(e.to_string().contains(":1:"), "{e}");
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn weighted_mix_follows_weights() {
        let dir = std::env::temp_dir().join(format!("loadgen-urls-{}", std::process::id()));
        std::fs::write(&dir, "# mix\n3 http://127.0.0.1:9/a\n/b\n\n0 /never\n").unwrap();
        let spec = RequestSpec {
            method: "GET".into(),
            ..Default::default()
        };
        let set = RequestSet::from_file(dir.to_str().unwrap(), None, &spec).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(set.reqs.len(), 2);
        assert_eq!(set.urls[1], "http://127.0.0.1:9/b");
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[set.pick(&mut rng) as usize] += 1;
        }
        let share = counts[0] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{counts:?}");
    }
}

//! WSGI (PEP 3333), the sans-IO half: the request handed to a Python app (its CGI-style
//! environ variables and body), and an app's status + header list turned into an HTTP/1.1
//! response head that the exchange (`proxy.rs`) re-frames for the client like any other
//! source (Content-Length enforced, chunked when absent, HEAD suppressed, cache, compression).
//!
//! The app itself runs in the `ringd-wsgi` Python package (`python/`), on Python threads that
//! take calls from the worker through `driver::app`'s bounded queue.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::parse::Request;

/// One request for an app.
#[derive(Debug)]
pub struct Call {
    /// The app's `module:callable`, as the route names it.
    pub app: Arc<str>,
    /// The CGI-style environ keys (values are bytes, read as latin-1 by the app side).
    pub environ: Vec<(&'static str, Vec<u8>)>,
    /// `HTTP_*` keys from the request's fields (one per name, repeated fields joined).
    pub http: Vec<(String, Vec<u8>)>,
    /// The request body when it was read whole before the call (a GET's, say).
    pub body: Vec<u8>,
    /// The body follows as it arrives (`driver::app` hands it to `wsgi.input`) instead.
    pub streamed: bool,
}

/// Builds the call for `req` on a route whose prefix is `script_name` (`""` for `/*`).
/// `path` is the request path after rewrites (percent-encoded), `query` its query without `?`.
#[allow(clippy::too_many_arguments)]
pub fn call(
    app: Arc<str>,
    req: &Request<'_>,
    script_name: &str,
    path: &str,
    query: &str,
    peer: SocketAddr,
    local_port: u16,
    host: &str,
) -> Call {
    let mut e: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(16);
    e.push(("REQUEST_METHOD", req.method_str.as_bytes().to_vec()));
    // PATH_INFO: the path after SCRIPT_NAME, percent-decoded to bytes (the app reads them as
    // latin-1, as PEP 3333 says). A malformed escape stays as it came.
    let rest = path.get(script_name.len()..).unwrap_or(path);
    let info = percent_decode(rest.as_bytes());
    e.push(("SCRIPT_NAME", script_name.as_bytes().to_vec()));
    e.push(("PATH_INFO", info));
    e.push(("QUERY_STRING", query.as_bytes().to_vec()));
    e.push(("REQUEST_URI", req.path_query.as_bytes().to_vec()));
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = if name.is_empty() { "localhost" } else { name };
    e.push(("SERVER_NAME", name.as_bytes().to_vec()));
    e.push(("SERVER_PORT", local_port.to_string().into_bytes()));
    e.push((
        "SERVER_PROTOCOL",
        if req.minor == 0 {
            b"HTTP/1.0".to_vec()
        } else {
            b"HTTP/1.1".to_vec()
        },
    ));
    if req.secure {
        // wsgi.url_scheme follows it (`python/src/app.rs`).
        e.push(("HTTPS", b"on".to_vec()));
    }
    e.push(("REMOTE_ADDR", peer.ip().to_string().into_bytes()));
    e.push(("REMOTE_PORT", peer.port().to_string().into_bytes()));
    let mut http: Vec<(String, Vec<u8>)> = Vec::with_capacity(8);
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut fields);
    let _ = parsed.parse(req.raw);
    for f in parsed.headers.iter() {
        let n = f.name;
        if n.eq_ignore_ascii_case("content-type") {
            e.push(("CONTENT_TYPE", f.value.to_vec()));
            continue;
        }
        // The body is read by ringd: its framing is ringd's business (CONTENT_LENGTH is set
        // from what was read). `_` in a name would make `X_Y` and `X-Y` one key: dropped,
        // as gunicorn does, so a proxy's `X-Forwarded-For` cannot be spoofed as `X_Forwarded_For`.
        if n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("transfer-encoding")
            || n.eq_ignore_ascii_case("expect")
            || n.contains('_')
        {
            continue;
        }
        let mut key = String::with_capacity(5 + n.len());
        key.push_str("HTTP_");
        key.extend(n.chars().map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        }));
        if let Some((_, v)) = http.iter_mut().find(|(k, _)| *k == key) {
            let sep: &[u8] = if key == "HTTP_COOKIE" { b"; " } else { b", " };
            v.extend_from_slice(sep);
            v.extend_from_slice(f.value);
        } else {
            http.push((key, f.value.to_vec()));
        }
    }
    Call {
        app,
        environ: e,
        http,
        body: Vec::new(),
        streamed: false,
    }
}

/// `%XX` escapes decoded; anything else (a malformed escape too) kept as it is.
fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Response fields an app may not send (PEP 3333: hop-by-hop fields are the server's).
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An app's `status` and `headers` (as given to `start_response`) as an HTTP/1.1 head, or
/// why they are not acceptable (the app side answers 500 and logs it).
pub fn head<'a>(
    status: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, String> {
    let code = status.get(..3).unwrap_or("");
    let ok_code = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && !code.starts_with('0')
        && !code.starts_with('1');
    if !ok_code || (status.len() > 3 && status.as_bytes()[3] != b' ') {
        return Err(format!("status {status:?} is not \"NNN Reason\""));
    }
    if status.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(format!("status {status:?} holds a control character"));
    }
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"HTTP/1.1 ");
    h.extend_from_slice(status.as_bytes());
    h.extend_from_slice(b"\r\n");
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    for (n, v) in headers {
        if n.is_empty() || !n.bytes().all(tchar) {
            return Err(format!("header name {n:?} is not a token"));
        }
        if HOP.iter().any(|hop| n.eq_ignore_ascii_case(hop)) {
            return Err(format!(
                "hop-by-hop header {n:?} (the server frames the response)"
            ));
        }
        if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(format!("header {n} has a control character in its value"));
        }
        h.extend_from_slice(n.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::proto::parse::{parse, Parsed};

    #[test]
    fn heads_are_checked_and_encoded() {
        let h = head("200 OK", [("Content-Type", "text/plain"), ("X-A", "1")]).unwrap();
        assert_eq!(
            h,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n"
        );
        assert!(head("200", []).is_ok());
        assert!(head("OK", []).is_err());
        assert!(head("100 Continue", []).is_err());
        assert!(head("200OK", []).is_err());
        assert!(head("200 OK\r\nX: y", []).is_err());
        assert!(head("200 OK", [("Connection", "close")]).is_err());
        assert!(head("200 OK", [("Transfer-Encoding", "chunked")]).is_err());
        assert!(head("200 OK", [("Bad Name", "x")]).is_err());
        assert!(head("200 OK", [("X", "a\nb")]).is_err());
    }

    #[test]
    fn environ_follows_pep_3333() {
        let raw = b"POST /app/a%20b/%C3%A9?x=%201&y HTTP/1.1\r\nHost: example.test:8000\r\n\
            Content-Type: text/plain\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\
            X_Spoof: yes\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n";
        let Ok(Parsed::Complete(req)) = parse(raw, &Limits::default()) else {
            panic!("parse");
        };
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let c = call(
            "m:app".into(),
            &req,
            "/app",
            "/app/a%20b/%C3%A9",
            "x=%201&y",
            peer,
            8000,
            "example.test:8000",
        );
        let get = |k: &str| {
            c.environ
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| c.http.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        assert_eq!(get("REQUEST_METHOD").unwrap(), b"POST");
        assert_eq!(get("SCRIPT_NAME").unwrap(), b"/app");
        assert_eq!(get("PATH_INFO").unwrap(), b"/a b/\xc3\xa9");
        assert_eq!(get("QUERY_STRING").unwrap(), b"x=%201&y");
        assert_eq!(get("SERVER_NAME").unwrap(), b"example.test");
        assert_eq!(get("SERVER_PORT").unwrap(), b"8000");
        assert_eq!(get("REMOTE_ADDR").unwrap(), b"10.0.0.1");
        assert_eq!(get("REMOTE_PORT").unwrap(), b"5555");
        assert_eq!(get("HTTPS"), None, "plain HTTP");
        let Ok(Parsed::Complete(again)) = parse(raw, &Limits::default()) else {
            panic!("parse");
        };
        let secure = crate::proto::parse::Request {
            secure: true,
            ..again
        };
        let c2 = call(
            "m:app".into(),
            &secure,
            "/app",
            "/app/x",
            "",
            peer,
            8000,
            "e",
        );
        assert!(
            c2.environ.iter().any(|(k, v)| *k == "HTTPS" && v == b"on"),
            "HTTPS=on over TLS (wsgi.url_scheme follows it)"
        );
        assert_eq!(get("CONTENT_TYPE").unwrap(), b"text/plain");
        assert_eq!(get("HTTP_X_A").unwrap(), b"1, 2");
        assert_eq!(get("HTTP_COOKIE").unwrap(), b"a=1; b=2");
        assert!(get("HTTP_CONTENT_TYPE").is_none());
        assert!(get("HTTP_CONTENT_LENGTH").is_none());
        assert!(get("HTTP_X_SPOOF").is_none(), "names with _ are dropped");
    }
}

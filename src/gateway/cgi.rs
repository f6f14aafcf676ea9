//! CGI (RFC 3875): which script a request names, the meta-variables it runs with, and its
//! header block turned into an HTTP response head. The driver spawns the process and moves
//! the bytes; the exchange (`proxy.rs`) relays the body like any other source.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::handler::resolve;
use crate::proto::parse::Request;

/// Largest CGI header block; larger → 502.
pub const MAX_CGI_HEAD: usize = 64 * 1024;

/// A script to run for one request.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub program: PathBuf,
    /// The script's folder (its working directory).
    pub cwd: PathBuf,
    /// Every meta-variable, and PATH.
    pub env: Vec<(String, Vec<u8>)>,
    /// From spawn to the end of its output.
    pub timeout: Duration,
    /// For the error log.
    pub name: String,
}

/// Why a request names no runnable script.
#[derive(Debug, PartialEq, Eq)]
pub enum NoScript {
    /// Nothing there, or a path that may not be served (404).
    NotFound,
    /// There, but not an executable regular file (403).
    Forbidden,
    /// A malformed path (400).
    Bad,
}

impl NoScript {
    pub fn status(&self) -> u16 {
        match self {
            NoScript::NotFound => 404,
            NoScript::Forbidden => 403,
            NoScript::Bad => 400,
        }
    }
}

/// Finds the script for `rest` (the URL path after the route's prefix, percent-encoded,
/// starting with `/` or empty) in `dir`: the longest leading run of segments that names a
/// regular executable file; what follows is PATH_INFO. Paths are decoded and refused (never
/// repaired) like static files: no `..`, no encoded `/`, no dotfiles, no symlinks out.
pub fn find_script(dir: &Path, rest: &str) -> Result<(PathBuf, String, String), NoScript> {
    let rest = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let mut decoded = Vec::new();
    resolve::decode(&rest, false, &mut decoded).map_err(|e| match e {
        resolve::PathError::Bad => NoScript::Bad,
        resolve::PathError::Hidden => NoScript::NotFound,
    })?;
    let decoded = String::from_utf8(decoded).map_err(|_| NoScript::NotFound)?;
    let segs: Vec<&str> = decoded.split('/').collect();
    let mut path = dir.to_path_buf();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() {
            return Err(NoScript::NotFound);
        }
        path.push(seg);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| NoScript::NotFound)?;
        if meta.file_type().is_symlink() {
            // Only a link that stays inside the folder.
            let real = std::fs::canonicalize(&path).map_err(|_| NoScript::NotFound)?;
            if !real.starts_with(dir) {
                return Err(NoScript::NotFound);
            }
        }
        let meta = std::fs::metadata(&path).map_err(|_| NoScript::NotFound)?;
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(NoScript::Forbidden);
        }
        let script = format!("/{}", segs[..=i].join("/"));
        let info = if i + 1 < segs.len() {
            format!("/{}", segs[i + 1..].join("/"))
        } else {
            String::new()
        };
        return Ok((path, script, info));
    }
    Err(NoScript::Forbidden)
}

/// The RFC 3875 meta-variables for `req`, run as `script_name` (URL path of the script) with
/// `path_info`; `root` is the site's root (PATH_TRANSLATED, DOCUMENT_ROOT) if it has one.
#[allow(clippy::too_many_arguments)]
pub fn env(
    req: &Request<'_>,
    body_len: usize,
    script_name: &str,
    path_info: &str,
    script: &Path,
    root: Option<&Path>,
    peer: SocketAddr,
    local_port: u16,
    host: &str,
    server: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut e: Vec<(String, Vec<u8>)> = Vec::with_capacity(32);
    let mut put = |k: &str, v: &[u8]| e.push((k.to_string(), v.to_vec()));
    put("GATEWAY_INTERFACE", b"CGI/1.1");
    put("SERVER_SOFTWARE", server.as_bytes());
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    put("SERVER_NAME", name.as_bytes());
    put("SERVER_PORT", local_port.to_string().as_bytes());
    put(
        "SERVER_PROTOCOL",
        if req.minor == 0 {
            b"HTTP/1.0"
        } else {
            b"HTTP/1.1"
        },
    );
    put("REQUEST_METHOD", req.method_str.as_bytes());
    put("REQUEST_URI", req.path_query.as_bytes());
    if req.secure {
        // As Apache and nginx's fastcgi_params set it for HTTPS requests.
        put("HTTPS", b"on");
    }
    put("SCRIPT_NAME", script_name.as_bytes());
    put("SCRIPT_FILENAME", script.as_os_str().as_encoded_bytes());
    put("PATH_INFO", path_info.as_bytes());
    if let (Some(root), false) = (root, path_info.is_empty()) {
        let t = root.join(path_info.trim_start_matches('/'));
        put("PATH_TRANSLATED", t.as_os_str().as_encoded_bytes());
    }
    if let Some(root) = root {
        put("DOCUMENT_ROOT", root.as_os_str().as_encoded_bytes());
    }
    put(
        "QUERY_STRING",
        req.query().trim_start_matches('?').as_bytes(),
    );
    put("REMOTE_ADDR", peer.ip().to_string().as_bytes());
    put("REMOTE_PORT", peer.port().to_string().as_bytes());
    put("AUTH_TYPE", b"");
    put("PATH", b"/usr/local/bin:/usr/bin:/bin");
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut fields);
    let _ = parsed.parse(req.raw);
    let mut ctype = None;
    for f in parsed.headers.iter() {
        let lower = f.name.to_ascii_lowercase();
        match lower.as_str() {
            "content-type" => ctype = Some(f.value.to_vec()),
            // httpoxy: a client must never set the script's HTTP_PROXY. Authorization stays
            // with the server (RFC 3875 §4.1.18), as do the framing fields.
            "proxy" | "authorization" | "content-length" | "transfer-encoding" | "connection" => {}
            _ => {
                let key = format!("HTTP_{}", lower.to_ascii_uppercase().replace('-', "_"));
                if let Some((_, v)) = e.iter_mut().find(|(k, _)| *k == key) {
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(f.value);
                } else {
                    e.push((key, f.value.to_vec()));
                }
            }
        }
    }
    if let Some(ct) = ctype {
        e.push(("CONTENT_TYPE".into(), ct));
    }
    if body_len > 0 {
        e.push(("CONTENT_LENGTH".into(), body_len.to_string().into_bytes()));
    }
    e
}

/// The end of a CGI header block (just past its blank line; lines may end in LF or CRLF).
pub fn head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(j) = b[i..].iter().position(|&c| c == b'\n') {
        let nl = i + j;
        // The line just ended is empty (or a lone CR): the block ends here.
        let start = i;
        if nl == start || (nl == start + 1 && b[start] == b'\r') {
            return Some(nl + 1);
        }
        i = nl + 1;
    }
    None
}

/// The target of a local redirect (RFC 3875 §6.2.2): a header block whose only field is a
/// `Location` holding a path (`/…`, optionally `?query`). The server answers the request as if
/// it had asked for that path (with GET), not the script. A path with bytes that could not
/// stand in a request line (controls, spaces, non-ASCII) is not one.
pub fn local_redirect(block: &[u8]) -> Option<String> {
    let mut found = None;
    for line in block.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&c| c == b':')?;
        if found.is_some() || !line[..colon].eq_ignore_ascii_case(b"location") {
            return None;
        }
        let v = line[colon + 1..].trim_ascii();
        if !v.starts_with(b"/") || v.starts_with(b"//") || !v.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        found = Some(String::from_utf8_lossy(v).into_owned());
    }
    found
}

/// A CGI header block as an HTTP/1.1 response head (status line, fields, blank line), or why
/// it cannot be one. `Status` sets the status; a `Location` without it means 302 (a client
/// redirect; a local redirect, see [`local_redirect`], never gets here); a document without
/// `Content-Type` is refused.
pub fn to_http_head(block: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut status: Option<(u16, String)> = None;
    let mut location = false;
    let mut ctype = false;
    let mut out_fields = Vec::new();
    for line in block.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Err("a CGI header line without a colon");
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(tchar) {
            return Err("a malformed CGI header name");
        }
        if value.iter().any(|&c| c == 0 || c == b'\r') {
            return Err("a CGI header value with a control character");
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"status") {
            let text = std::str::from_utf8(value).map_err(|_| "a malformed Status")?;
            let (code, reason) = text.split_once(' ').unwrap_or((text, ""));
            let code: u16 = code
                .parse()
                .ok()
                .filter(|c| (200..=999).contains(c))
                .ok_or("a malformed Status")?;
            status = Some((code, reason.trim().to_string()));
            continue;
        }
        location |= name.eq_ignore_ascii_case(b"location");
        ctype |= name.eq_ignore_ascii_case(b"content-type");
        out_fields.extend_from_slice(name);
        out_fields.extend_from_slice(b": ");
        out_fields.extend_from_slice(value);
        out_fields.extend_from_slice(b"\r\n");
    }
    let (code, reason) = match status {
        Some(s) => s,
        None if location => (302, "Found".to_string()),
        None => (200, "OK".to_string()),
    };
    if !ctype && !location && !matches!(code, 204 | 304) && code < 300 {
        return Err("the CGI script sent no Content-Type");
    }
    let mut h = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
    h.extend_from_slice(&out_fields);
    h.extend_from_slice(b"\r\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_redirects_are_a_lone_path_location() {
        assert_eq!(
            local_redirect(b"Location: /a/b?c=d\n\n").as_deref(),
            Some("/a/b?c=d")
        );
        assert_eq!(
            local_redirect(b"Location:/x\r\n\r\n").as_deref(),
            Some("/x")
        );
        assert_eq!(local_redirect(b"Location: https://x.test/\n\n"), None);
        assert_eq!(local_redirect(b"Location: //evil.test/\n\n"), None);
        assert_eq!(local_redirect(b"Location: /a b\n\n"), None);
        assert_eq!(local_redirect(b"Location: /a\nStatus: 301 Moved\n\n"), None);
        assert_eq!(
            local_redirect(b"Content-Type: text/plain\nLocation: /a\n\n"),
            None
        );
        assert_eq!(local_redirect(b"Content-Type: text/plain\n\n"), None);
    }

    #[test]
    fn header_blocks_become_http_heads() {
        let h = to_http_head(b"Content-Type: text/plain\nX-A: 1\n\n").unwrap();
        assert_eq!(
            h,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n"
        );
        let h = to_http_head(b"Status: 404 Nope\r\nContent-Type: text/html\r\n\r\n").unwrap();
        assert!(h.starts_with(b"HTTP/1.1 404 Nope\r\n"));
        let h = to_http_head(b"Location: https://x.test/\n\n").unwrap();
        assert!(h.starts_with(b"HTTP/1.1 302 Found\r\nLocation: https://x.test/\r\n"));
        assert!(to_http_head(b"X-A: 1\n\n").is_err(), "no Content-Type");
        assert!(to_http_head(b"no colon\n\n").is_err());
        assert!(to_http_head(b"Status: abc\nContent-Type: a\n\n").is_err());
        assert!(to_http_head(b"Status: 100 Continue\nContent-Type: a\n\n").is_err());
        assert_eq!(head_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(head_end(b"A: b\r\n"), None);
    }

    #[test]
    fn scripts_are_found_beneath_their_folder_only() {
        let d = std::env::temp_dir().join(format!("ringd-cgi-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let s = d.join("sub/run.sh");
        std::fs::write(&s, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("plain.txt"), b"x").unwrap();
        let (p, name, info) = find_script(&d, "/sub/run.sh/extra/path").unwrap();
        assert_eq!(
            (p, name.as_str(), info.as_str()),
            (s.clone(), "/sub/run.sh", "/extra/path")
        );
        assert_eq!(find_script(&d, "/plain.txt"), Err(NoScript::Forbidden));
        assert_eq!(find_script(&d, "/nope"), Err(NoScript::NotFound));
        assert_eq!(find_script(&d, "/../etc/passwd"), Err(NoScript::Bad));
        assert_eq!(find_script(&d, "/sub%2frun.sh"), Err(NoScript::NotFound));
        assert_eq!(find_script(&d, "/sub"), Err(NoScript::Forbidden));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

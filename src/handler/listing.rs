//! Directory listings (`browse = true`): a folder without an index file answered as escaped
//! HTML, or JSON when the client asks for `application/json`. Names are read beneath the root
//! (openat2, RESOLVE_BENEATH), dotfiles and (unless followed) symlinks are never listed, and a
//! folder is read only up to `MAX_ENTRIES` names so a huge one cannot stall the worker.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::UNIX_EPOCH;

use crate::proto::head;
use crate::proto::parse::{Method, Request};

use super::{fs, resolve, Files, Reply, Sent};

/// Most names a listing reads and shows; a larger folder is listed in part, and says so.
pub const MAX_ENTRIES: usize = 5000;

/// One name in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub dir: bool,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

/// Answers a listing of URL folder `path` (ending in `/`) beneath root `root`, or None when
/// it is not a folder that may be listed (the caller answers 404).
pub fn respond(
    files: &Files,
    root: usize,
    path: &str,
    req: &Request<'_>,
    reply: &mut Reply<'_>,
) -> Option<Sent> {
    let cfg = files.config();
    let mut rel = Vec::new();
    resolve::decode(path, cfg.serve_dotfiles, &mut rel).ok()?;
    let (entries, truncated) = read(files, root, &rel)?;
    let json = wants_json(req);
    let mut body = Vec::with_capacity(256 + entries.len() * 96);
    if json {
        render_json(path, &entries, truncated, &mut body);
    } else {
        render_html(path, &entries, truncated, &mut body);
    }
    let ct: &[u8] = if json {
        b"Content-Type: application/json\r\nCache-Control: no-cache\r\nVary: Accept\r\n"
    } else {
        b"Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\nVary: Accept\r\n"
    };
    Some(reply.text(
        files.server_name(),
        200,
        ct,
        &body,
        req.method == Method::Head,
    ))
}

/// Whether the request's Accept prefers JSON.
fn wants_json(req: &Request<'_>) -> bool {
    req.fields.accept.is_some_and(|a| {
        a.windows(16)
            .any(|w| w.eq_ignore_ascii_case(b"application/json"))
    })
}

/// Reads folder `rel` (decoded, relative to the root) beneath root `root`: its visible entries,
/// sorted folders first then by name, and whether the folder had more than `MAX_ENTRIES`.
fn read(files: &Files, root: usize, rel: &[u8]) -> Option<(Vec<Entry>, bool)> {
    let cfg = files.config();
    let root_fd = files.root(root)?;
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    let c = if rel.is_empty() {
        CString::new(".").ok()?
    } else {
        CString::new(rel).ok()?
    };
    let dir = fs::open_beneath(root_fd, &c, cfg.follow_symlinks).ok()?;
    // Reading through /proc/self/fd keeps the confinement of the openat2 above: the folder is
    // the one that was opened beneath the root, whatever its path says now.
    let rd = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    let mut out = Vec::new();
    let mut truncated = false;
    for e in rd {
        let Ok(e) = e else { continue };
        let name = e.file_name().as_bytes().to_vec();
        if name.first() == Some(&b'.') && !cfg.serve_dotfiles {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        let meta = if ft.is_symlink() {
            if !cfg.follow_symlinks {
                continue;
            }
            match std::fs::metadata(e.path()) {
                Ok(m) => m,
                Err(_) => continue,
            }
        } else {
            match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            }
        };
        if !(meta.is_dir() || meta.is_file()) {
            continue;
        }
        if out.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(Entry {
            name,
            dir: meta.is_dir(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime,
        });
    }
    out.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    Some((out, truncated))
}

/// HTML-escapes `s` (lossy UTF-8) into `out`.
fn html_escape(out: &mut Vec<u8>, s: &[u8]) {
    for ch in String::from_utf8_lossy(s).chars() {
        match ch {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\'' => out.extend_from_slice(b"&#39;"),
            c if c.is_control() => out.extend_from_slice(b"&#xFFFD;"),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// Percent-encodes a name for use in a URL path segment.
fn url_escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(b"0123456789ABCDEF"[usize::from(b >> 4)]);
            out.push(b"0123456789ABCDEF"[usize::from(b & 15)]);
        }
    }
}

fn date(out: &mut Vec<u8>, secs: u64) {
    let mut d = [0u8; head::DATE_LEN];
    head::fmt_http_date(secs, &mut d);
    out.extend_from_slice(&d);
}

/// The HTML page: title, parent link (except at the root), a table of names, sizes, dates.
pub fn render_html(path: &str, entries: &[Entry], truncated: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    html_escape(out, path.as_bytes());
    out.extend_from_slice(b"</title></head>\n<body>\n<h1>Index of ");
    html_escape(out, path.as_bytes());
    out.extend_from_slice(
        b"</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n",
    );
    if path != "/" {
        out.extend_from_slice(b"<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        out.extend_from_slice(b"<tr><td><a href=\"./");
        let mut url = Vec::new();
        url_escape(&mut url, &e.name);
        html_escape(out, &url);
        if e.dir {
            out.push(b'/');
        }
        out.extend_from_slice(b"\">");
        html_escape(out, &e.name);
        if e.dir {
            out.push(b'/');
        }
        out.extend_from_slice(b"</a></td><td>");
        if !e.dir {
            head::put_u64(out, e.size);
        }
        out.extend_from_slice(b"</td><td>");
        date(out, e.mtime);
        out.extend_from_slice(b"</td></tr>\n");
    }
    out.extend_from_slice(b"</table>\n");
    if truncated {
        out.extend_from_slice(b"<p>Only the first ");
        head::put_u64(out, MAX_ENTRIES as u64);
        out.extend_from_slice(b" entries are listed.</p>\n");
    }
    out.extend_from_slice(b"</body></html>\n");
}

/// The JSON form: `{"path": ..., "truncated": bool, "entries": [{name, dir, size, mtime}]}`.
pub fn render_json(path: &str, entries: &[Entry], truncated: bool, out: &mut Vec<u8>) {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": String::from_utf8_lossy(&e.name),
                "dir": e.dir,
                "size": e.size,
                "mtime": e.mtime,
            })
        })
        .collect();
    let v = serde_json::json!({ "path": path, "truncated": truncated, "entries": list });
    let _ = serde_json::to_writer(&mut *out, &v);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped() {
        let e = vec![Entry {
            name: b"<script>alert(\"x\")</script>&.txt".to_vec(),
            dir: false,
            size: 5,
            mtime: 0,
        }];
        let mut out = Vec::new();
        render_html("/a<b>/", &e, false, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("<script>"), "{s}");
        assert!(
            s.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;.txt"),
            "{s}"
        );
        assert!(s.contains("Index of /a&lt;b&gt;/"), "{s}");
        assert!(
            s.contains("href=\"./%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E%26.txt\""),
            "{s}"
        );
        let mut j = Vec::new();
        render_json("/", &e, true, &mut j);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(
            v["entries"][0]["name"],
            "<script>alert(\"x\")</script>&.txt"
        );
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn parent_link_except_at_root() {
        let mut out = Vec::new();
        render_html("/", &[], false, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("../"));
        out.clear();
        render_html("/d/", &[], false, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("href=\"../\""));
    }
}

//! Combined-format access log lines, appended to the worker's log buffer.

use std::io::Write;
use std::net::IpAddr;

use super::head::{put_u64, LOG_DATE_LEN};

/// One access-log entry.
pub struct Entry<'a> {
    pub peer: IpAddr,
    pub date: &'a [u8; LOG_DATE_LEN],
    /// `METHOD target HTTP/x.y`, or None when the request line could not be parsed.
    pub request: Option<(&'a str, &'a str, u8)>,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// With a config file: the site (the Host asked for) and the route (`#N pattern`, or
    /// `-` when the site's own static files or answer served it), two more quoted fields.
    pub site: Option<(&'a str, &'a str)>,
}

/// Appends `ip - - [date] "request" status bytes "referer" "user-agent"\n`.
pub fn write(log: &mut Vec<u8>, e: &Entry<'_>) {
    let _ = write!(log, "{}", e.peer);
    log.extend_from_slice(b" - - [");
    log.extend_from_slice(e.date);
    log.extend_from_slice(b"] \"");
    match e.request {
        Some((method, target, minor)) => {
            escape(log, method.as_bytes());
            log.push(b' ');
            escape(log, target.as_bytes());
            log.extend_from_slice(if minor == 0 {
                b" HTTP/1.0"
            } else {
                b" HTTP/1.1"
            });
        }
        None => log.push(b'-'),
    }
    log.extend_from_slice(b"\" ");
    put_u64(log, u64::from(e.status));
    log.push(b' ');
    put_u64(log, e.body_bytes);
    log.extend_from_slice(b" \"");
    escape(log, e.referer.unwrap_or(b"-"));
    log.extend_from_slice(b"\" \"");
    escape(log, e.user_agent.unwrap_or(b"-"));
    log.push(b'"');
    if let Some((site, route)) = e.site {
        log.extend_from_slice(b" \"");
        escape(log, site.as_bytes());
        log.extend_from_slice(b"\" \"");
        escape(log, route.as_bytes());
        log.push(b'"');
    }
    log.push(b'\n');
}

/// Copies `v`, writing `"`, `\` and bytes outside printable ASCII as `\xHH` (as nginx does).
fn escape(log: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            log.push(b);
        } else {
            log.extend_from_slice(b"\\x");
            log.push(b"0123456789ABCDEF"[usize::from(b >> 4)]);
            log.push(b"0123456789ABCDEF"[usize::from(b & 15)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let mut log = Vec::new();
        write(
            &mut log,
            &Entry {
                peer: "127.0.0.1".parse().unwrap(),
                date: b"06/Nov/1994:08:49:37 +0000",
                request: Some(("GET", "/a\"b", 1)),
                status: 200,
                body_bytes: 1000,
                referer: None,
                user_agent: Some(b"curl/8"),
                site: None,
            },
        );
        assert_eq!(
            String::from_utf8(log).unwrap(),
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a\\x22b HTTP/1.1\" 200 1000 \"-\" \"curl/8\"\n"
        );
    }
}

//! Fuzz target: the gateway's response side (`ringd::gateway::proxy::Exchange`), fed an
//! arbitrary upstream response (mode 0), an arbitrary CGI script output (mode 1: the CGI
//! header parser, local redirects) or an upgrade's answer (mode 2: 101 → tunnel), split at
//! arbitrary points, optionally followed by the upstream's EOF.
//!
//! Asserts, beyond "no panic", what the client may receive:
//! - a finished exchange's output is zero or more interim (1xx) responses (never to an
//!   HTTP/1.0 client) and then exactly one final response, strictly framed: a Content-Length
//!   body of exactly that length, or a well-formed chunked body ending in its last chunk, or
//!   (HTTP/1.0 only) a close-delimited body after `Connection: close`; nothing after it;
//! - HEAD, 204 and 304 answers carry no body;
//! - a failure before any response byte is exactly one 502/503/504 error page;
//! - a response cut short (failure after its head) never ends with a last chunk and never
//!   delivers as many body bytes as its Content-Length promised;
//! - a tunnel starts with a 101 head (after any interim 1xx) without framing fields;
//! - no field value carries CR, LF or NUL (an injection from the upstream's head).

#![no_main]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringd::gateway::cgi::Spawn;
use ringd::gateway::proxy::{Ctx, Exchange, Start};
use ringd::proto::conn::{BufPool, OutQueue};
use ringd::proto::head::{ConnHeader, DATE_LEN};
use ringd::session::Output;
use ringd_fuzz::{find, split_control, Rng};

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = split_control::<4>(data);
    let mode = ctl[0] % 3;
    let head_request = ctl[1] & 1 != 0;
    let client_10 = ctl[1] & 2 != 0 && mode != 2;
    let eof = ctl[1] & 4 != 0;
    let mut rng = Rng::new(u64::from(ctl[2]) | u64::from(ctl[3]) << 8);
    let now = Instant::now();
    let start = Start {
        group: 0,
        head: b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec(),
        idempotent: true,
        head_request,
        client_10,
        body_method: false,
        key: 0,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        buffer: 1 << 20,
        retries: 0,
        cache: None,
        compress_route: false,
        compress: None,
        upgrade: mode == 2,
        deferred_head: None,
    };
    let mut x = if mode == 1 {
        let spawn = Spawn {
            program: PathBuf::from("/nonexistent"),
            cwd: PathBuf::from("/"),
            env: Vec::new(),
            timeout: Duration::from_secs(1),
            name: "fuzz".into(),
        };
        let mut x = Exchange::new_cgi(start, spawn, b"", ConnHeader::None);
        x.spawned(now);
        x
    } else {
        let mut x = Exchange::new(start, b"", ConnHeader::None);
        x.server = Some(0);
        x.connected(now, false);
        x
    };
    let mut pool = BufPool::default();
    let date = [b'D'; DATE_LEN];
    let mut out = OutQueue::default();
    let mut client = Vec::new();
    let mut failed = false;
    let mut pos = 0;
    while pos < rest.len() && x.finished().is_none() {
        let n = rng.piece(64).min(rest.len() - pos);
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        if let Err(f) = x.feed(&rest[pos..pos + n], &mut out, &mut ctx, now) {
            x.fail(f, &mut out, &mut ctx);
            failed = true;
        }
        pos += n;
        drain(&mut out, &mut pool, &mut client);
    }
    if eof && x.finished().is_none() && !failed {
        let mut ctx = Ctx {
            pool: &mut pool,
            date: &date,
            server: "ringd",
        };
        if let Err(f) = x.eof(&mut out, &mut ctx) {
            x.fail(f, &mut out, &mut ctx);
            failed = true;
        }
    }
    drain(&mut out, &mut pool, &mut client);

    if x.local_redirect.is_some() {
        assert!(client.is_empty(), "a local redirect sent bytes to the client");
        return;
    }
    if x.was_tunnel() {
        // Interim responses (100, 102, 103) may come before the 101; each is a whole head.
        let mut at = 0;
        while !client[at..].starts_with(b"HTTP/1.1 101 ") {
            assert!(
                client[at..].starts_with(b"HTTP/1.1 1"),
                "tunnel without a 101 head: {:?}",
                String::from_utf8_lossy(&client[at..client.len().min(at + 200)])
            );
            at += find(&client[at..], b"\r\n\r\n").expect("an interim head is whole") + 4;
        }
        let client = &client[at..];
        let end = find(client, b"\r\n\r\n").expect("the 101 head is whole") + 4;
        let head = String::from_utf8_lossy(&client[..end]).to_ascii_lowercase();
        assert!(
            !head.contains("\r\ncontent-length:") && !head.contains("\r\ntransfer-encoding:"),
            "framing fields on a 101: {head:?}"
        );
        return;
    }
    let cut = failed && x.responded && x.closes_client();
    if failed && !cut {
        // Nothing was sent before the failure: one error page, well framed.
        let rs = responses(&client, head_request, client_10, false);
        let finals: Vec<_> = rs.iter().filter(|r| r.0 >= 200).collect();
        assert_eq!(finals.len(), 1, "one error page after a failure: {rs:?}");
        assert!(
            matches!(finals[0].0, 502..=504),
            "an upstream failure answered {}",
            finals[0].0
        );
        return;
    }
    match x.finished() {
        Some(_) if !cut => {
            let rs = responses(&client, head_request, client_10, false);
            let finals = rs.iter().filter(|r| r.0 >= 200).count();
            assert_eq!(finals, 1, "not exactly one final response: {rs:?}");
            assert!(rs.last().is_some_and(|r| r.0 >= 200), "interim after final");
            if client_10 {
                assert!(rs.iter().all(|r| r.0 >= 200), "1xx to an HTTP/1.0 client");
            }
        }
        // In flight, or cut: whatever went out must be a well-formed prefix that never claims
        // to be complete.
        _ => {
            let rs = responses(&client, head_request, client_10, true);
            if cut {
                assert!(
                    rs.iter().all(|r| r.0 < 200 || !r.1),
                    "a cut response looks complete: {rs:?}"
                );
            }
        }
    }
});

/// Moves everything queued into `client`.
fn drain(out: &mut OutQueue, pool: &mut BufPool, client: &mut Vec<u8>) {
    while let Some(o) = out.peek() {
        let n = match o {
            Output::Bytes(b) => {
                client.extend_from_slice(b);
                b.len()
            }
            Output::File { .. } => panic!("a file piece in a gateway response"),
            // Splicing is off here (no `set_splice_min`): bytes only.
            Output::Pipe { .. } => panic!("a pipe piece without splicing"),
        };
        out.consume(n, pool);
    }
}

/// Parses the client's bytes as responses: (status, complete). Panics on any framing or
/// syntax error; `partial` allows the last one to be incomplete (then `complete` is false).
fn responses(b: &[u8], head_request: bool, client_10: bool, partial: bool) -> Vec<(u16, bool)> {
    let mut rs = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let rest = &b[pos..];
        let Some(he) = find(rest, b"\r\n\r\n") else {
            assert!(partial, "incomplete head: {:?}", String::from_utf8_lossy(rest));
            rs.push((0, false));
            return rs;
        };
        let head = &rest[..he + 2];
        assert!(head.starts_with(b"HTTP/1.1 "), "bad status line");
        let status: u16 = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a 3-digit status");
        let (mut cl, mut chunked, mut close) = (None, false, false);
        for line in head.split(|&c| c == b'\n').skip(1) {
            if line.is_empty() {
                continue;
            }
            let line = line.strip_suffix(b"\r").expect("CRLF line ends");
            assert!(
                !line.iter().any(|&c| c == b'\r' || c == 0),
                "CR or NUL in a field line"
            );
            let colon = line.iter().position(|&c| c == b':').expect("a colon");
            let (n, v) = (&line[..colon], line[colon + 1..].trim_ascii());
            assert!(
                n.iter().all(|&c| ringd::proto::framing::is_tchar(c)),
                "bad field name {:?}",
                String::from_utf8_lossy(n)
            );
            if n.eq_ignore_ascii_case(b"content-length") {
                assert!(cl.is_none(), "two Content-Lengths");
                cl = Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                        .expect("a decimal Content-Length"),
                );
            } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
                assert!(v.eq_ignore_ascii_case(b"chunked"), "a coding other than chunked");
                chunked = true;
            } else if n.eq_ignore_ascii_case(b"connection") {
                close |= v
                    .split(|&c| c == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        assert!(!(cl.is_some() && chunked), "Content-Length with chunked");
        pos += he + 4;
        if status < 200 {
            rs.push((status, true));
            continue;
        }
        let body = &b[pos..];
        if head_request || status == 204 || status == 304 {
            rs.push((status, true));
            continue;
        }
        if chunked {
            assert!(!client_10, "chunked to an HTTP/1.0 client");
            match chunked_len(body) {
                Some(n) => {
                    rs.push((status, true));
                    pos += n;
                }
                None => {
                    assert!(partial, "an unfinished chunked body");
                    rs.push((status, false));
                    return rs;
                }
            }
        } else if let Some(n) = cl {
            if body.len() < n {
                assert!(partial, "a body shorter than its Content-Length");
                rs.push((status, false));
                return rs;
            }
            rs.push((status, true));
            pos += n;
        } else {
            // Close-delimited: only to HTTP/1.0, saying so; the rest is the body.
            assert!(client_10 && close, "a body with no framing");
            rs.push((status, !partial));
            return rs;
        }
    }
    rs
}

/// The length of a complete, well-formed chunked body at the start of `b` (ringd sends no
/// extensions and no trailers); None when it is not finished. Panics on bad syntax.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = find(&b[pos..], b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[pos..pos + nl]).ok()?, 16)
            .expect("a hex chunk size");
        pos += nl + 2;
        if size == 0 {
            if b.len() < pos + 2 {
                return None;
            }
            assert_eq!(&b[pos..pos + 2], b"\r\n", "no trailers after the last chunk");
            return Some(pos + 2);
        }
        if b.len() < pos + size + 2 {
            return None;
        }
        assert_eq!(&b[pos + size..pos + size + 2], b"\r\n", "chunk data without CRLF");
        pos += size + 2;
    }
}

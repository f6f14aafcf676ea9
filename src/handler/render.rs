//! Rendering a decided outcome into output: full 200 from the pre-encoded head, 304, 206
//! (single range or multipart/byteranges), 416. Deciding happens in `mod.rs`.

use crate::proto::head::{self, DATE_LEN};

use super::filecache::Rep;
use super::{Reply, Sent};

/// A full `200` of `rep` from its pre-encoded head: copy, stamp the Date, add the connection
/// header, then the body (copied when cached in memory, else a file range).
pub fn full(rep: &Rep, reply: &mut Reply<'_>, head_only: bool) -> Sent {
    whole(rep, 200, reply, head_only)
}

/// The whole of `rep` (a site's error page) as the body of a response with `status`: its
/// pre-encoded head with the status line replaced; no conditionals or ranges apply.
pub fn full_as(rep: &Rep, status: u16, reply: &mut Reply<'_>, head_only: bool) -> Sent {
    whole(rep, status, reply, head_only)
}

/// `rep` whole with `status` (its own 200 line kept as it is for 200). Route header edits
/// apply to successes and redirects, never to errors.
fn whole(rep: &Rep, status: u16, reply: &mut Reply<'_>, head_only: bool) -> Sent {
    let buf = reply.out.bytes(reply.pool);
    let start = buf.len();
    let at = if status == 200 {
        buf.extend_from_slice(&rep.head);
        start + rep.date_at
    } else {
        let line_end = rep.head.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        buf.extend_from_slice(b"HTTP/1.1 ");
        head::put_u64(buf, u64::from(status));
        buf.push(b' ');
        buf.extend_from_slice(head::reason(status).as_bytes());
        let line = buf.len() - start;
        buf.extend_from_slice(&rep.head[line_end..]);
        start + line + (rep.date_at - line_end)
    };
    buf[at..at + DATE_LEN].copy_from_slice(reply.date);
    if let (Some(e), true) = (&reply.edit, status < 400) {
        head::apply_edit(buf, start, e);
    }
    let conn_at = buf.len();
    buf.extend_from_slice(reply.conn.line());
    buf.extend_from_slice(b"\r\n");
    if !head_only {
        if let Some(body) = &rep.body {
            buf.extend_from_slice(body);
        }
    }
    reply.out.mark_conn(conn_at, reply.conn.line().len());
    if let (false, Some(fd)) = (head_only, &rep.fd) {
        reply.out.file(fd, 0, rep.size());
    }
    reply.out.end_response();
    Sent {
        status,
        body_bytes: if head_only { 0 } else { rep.size() },
    }
}

/// `304 Not Modified`: Date, Server, ETag and Vary only (RFC 9110 §15.4.5); no body.
pub fn not_modified(rep: &Rep, vary: bool, server: &str, reply: &mut Reply<'_>) -> Sent {
    let buf = reply.out.bytes(reply.pool);
    let start = buf.len();
    head::start(buf, 304, reply.date, server);
    head::header(buf, "ETag", &rep.etag);
    if vary {
        buf.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    if let Some(e) = &reply.edit {
        head::apply_edit(buf, start, e);
    }
    finish_head(reply);
    reply.out.end_response();
    Sent {
        status: 304,
        body_bytes: 0,
    }
}

/// `416 Range Not Satisfiable` with `Content-Range: bytes */len`.
pub fn unsatisfiable(rep: &Rep, server: &str, reply: &mut Reply<'_>) -> Sent {
    let mut extra = Vec::with_capacity(48);
    extra.extend_from_slice(b"Content-Range: bytes */");
    head::put_u64(&mut extra, rep.size());
    extra.extend_from_slice(b"\r\n");
    reply.simple(server, 416, &extra, false)
}

/// `206` with one range `[a, b]` (inclusive).
pub fn partial(
    rep: &Rep,
    ct: &[u8],
    vary: bool,
    server: &str,
    a: u64,
    b: u64,
    reply: &mut Reply<'_>,
) -> Sent {
    let n = b - a + 1;
    let buf = reply.out.bytes(reply.pool);
    let start = buf.len();
    head::start(buf, 206, reply.date, server);
    head::header(buf, "Content-Type", ct);
    head::header_u64(buf, "Content-Length", n);
    buf.extend_from_slice(b"Content-Range: bytes ");
    content_range(buf, a, b, rep.size());
    buf.extend_from_slice(b"\r\n");
    validators(buf, rep, vary);
    if let Some(e) = &reply.edit {
        head::apply_edit(buf, start, e);
    }
    finish_head(reply);
    body_range(rep, a, n, reply);
    reply.out.end_response();
    Sent {
        status: 206,
        body_bytes: n,
    }
}

/// `206 multipart/byteranges` with `ranges` (inclusive, non-overlapping) in request order.
pub fn multipart(
    rep: &Rep,
    ct: &[u8],
    vary: bool,
    server: &str,
    ranges: &[(u64, u64)],
    boundary_seq: u64,
    reply: &mut Reply<'_>,
) -> Sent {
    let mut boundary = Vec::with_capacity(32);
    boundary.extend_from_slice(b"ringd-");
    head::put_hex(&mut boundary, boundary_seq | 1 << 63);
    // Part headers first, so the total length is known before the head is written.
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(ranges.len());
    let mut total = 0u64;
    for &(a, b) in ranges {
        let mut p = Vec::with_capacity(128);
        p.extend_from_slice(b"\r\n--");
        p.extend_from_slice(&boundary);
        p.extend_from_slice(b"\r\nContent-Type: ");
        p.extend_from_slice(ct);
        p.extend_from_slice(b"\r\nContent-Range: bytes ");
        content_range(&mut p, a, b, rep.size());
        p.extend_from_slice(b"\r\n\r\n");
        total += p.len() as u64 + (b - a + 1);
        parts.push(p);
    }
    let mut closing = Vec::with_capacity(boundary.len() + 8);
    closing.extend_from_slice(b"\r\n--");
    closing.extend_from_slice(&boundary);
    closing.extend_from_slice(b"--\r\n");
    total += closing.len() as u64;

    let buf = reply.out.bytes(reply.pool);
    let start = buf.len();
    head::start(buf, 206, reply.date, server);
    buf.extend_from_slice(b"Content-Type: multipart/byteranges; boundary=");
    buf.extend_from_slice(&boundary);
    buf.extend_from_slice(b"\r\n");
    head::header_u64(buf, "Content-Length", total);
    validators(buf, rep, vary);
    if let Some(e) = &reply.edit {
        head::apply_edit(buf, start, e);
    }
    finish_head(reply);
    for (p, &(a, b)) in parts.iter().zip(ranges) {
        reply.out.bytes(reply.pool).extend_from_slice(p);
        body_range(rep, a, b - a + 1, reply);
    }
    reply.out.bytes(reply.pool).extend_from_slice(&closing);
    reply.out.end_response();
    Sent {
        status: 206,
        body_bytes: total,
    }
}

fn content_range(buf: &mut Vec<u8>, a: u64, b: u64, len: u64) {
    head::put_u64(buf, a);
    buf.push(b'-');
    head::put_u64(buf, b);
    buf.push(b'/');
    head::put_u64(buf, len);
}

/// Last-Modified, ETag, Accept-Ranges, Content-Encoding, Vary.
fn validators(buf: &mut Vec<u8>, rep: &Rep, vary: bool) {
    head::header(buf, "Last-Modified", &rep.last_modified);
    head::header(buf, "ETag", &rep.etag);
    buf.extend_from_slice(b"Accept-Ranges: bytes\r\n");
    if let Some(c) = rep.coding {
        head::header(buf, "Content-Encoding", c.token().as_bytes());
    }
    if vary {
        buf.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
}

/// Connection header and the blank line, remembering where the former went.
fn finish_head(reply: &mut Reply<'_>) {
    let buf = reply.out.bytes(reply.pool);
    let at = buf.len();
    buf.extend_from_slice(reply.conn.line());
    buf.extend_from_slice(b"\r\n");
    reply.out.mark_conn(at, reply.conn.line().len());
}

/// `n` body bytes from offset `a`: copied from memory or queued as a file range.
fn body_range(rep: &Rep, a: u64, n: u64, reply: &mut Reply<'_>) {
    if let Some(body) = &rep.body {
        let (a, n) = (a as usize, n as usize);
        reply
            .out
            .bytes(reply.pool)
            .extend_from_slice(&body[a..a + n]);
    } else if let Some(fd) = &rep.fd {
        reply.out.file(fd, a, n);
    }
}

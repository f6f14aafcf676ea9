//! Response head encoding: status lines, cached dates, numbers, and small error responses.
//!
//! Everything writes into a caller-supplied `Vec<u8>` (reused across requests), so encoding a
//! head allocates nothing once the buffer has grown.

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub const DATE_LEN: usize = 29;
/// Length of a combined-log timestamp (`06/Nov/1994:08:49:37 +0000`).
pub const LOG_DATE_LEN: usize = 26;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Civil date and time (UTC) of a Unix timestamp: (year, month 1-12, day, h, m, s, weekday 0=Thu).
fn civil(secs: u64) -> (u64, usize, u64, u64, u64, u64, usize) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil inverse, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (
        y,
        m as usize,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        (days % 7) as usize,
    )
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

fn four(out: &mut [u8], v: u64) {
    two(&mut out[..2], v / 100);
    two(&mut out[2..4], v % 100);
}

/// Formats `secs` since the epoch as an IMF-fixdate (the HTTP `Date` format).
pub fn fmt_http_date(secs: u64, out: &mut [u8; DATE_LEN]) {
    let (y, m, d, hh, mm, ss, wd) = civil(secs);
    out.copy_from_slice(b"Thu, 01 Jan 1970 00:00:00 GMT");
    out[0..3].copy_from_slice(DAYS[wd]);
    two(&mut out[5..7], d);
    out[8..11].copy_from_slice(MONTHS[m - 1]);
    four(&mut out[12..16], y);
    two(&mut out[17..19], hh);
    two(&mut out[20..22], mm);
    two(&mut out[23..25], ss);
}

/// Formats `secs` since the epoch as a combined-log timestamp, `dd/Mon/yyyy:HH:MM:SS +0000`.
pub fn fmt_log_date(secs: u64, out: &mut [u8; LOG_DATE_LEN]) {
    let (y, m, d, hh, mm, ss, _) = civil(secs);
    out.copy_from_slice(b"01/Jan/1970:00:00:00 +0000");
    two(&mut out[0..2], d);
    out[3..6].copy_from_slice(MONTHS[m - 1]);
    four(&mut out[7..11], y);
    two(&mut out[12..14], hh);
    two(&mut out[15..17], mm);
    two(&mut out[18..20], ss);
}

/// Appends the decimal form of `n`.
pub fn put_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends the lowercase hex form of `n`.
pub fn put_hex(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// The reason phrase for the status codes this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What the `Connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnHeader {
    /// HTTP/1.1 persistent connection: no header needed.
    None,
    /// HTTP/1.0 client asked for keep-alive: echo it.
    KeepAlive,
    /// The connection closes after this response.
    Close,
}

impl ConnHeader {
    /// The header line (with CRLF), or nothing.
    pub fn line(self) -> &'static [u8] {
        match self {
            ConnHeader::None => b"",
            ConnHeader::KeepAlive => b"Connection: keep-alive\r\n",
            ConnHeader::Close => b"Connection: close\r\n",
        }
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\nDate: <date>\r\nServer: <server>\r\n`.
/// Returns the offset of the date value within `buf`.
pub fn start(buf: &mut Vec<u8>, status: u16, date: &[u8; DATE_LEN], server: &str) -> usize {
    buf.extend_from_slice(b"HTTP/1.1 ");
    put_u64(buf, u64::from(status));
    buf.push(b' ');
    buf.extend_from_slice(reason(status).as_bytes());
    buf.extend_from_slice(b"\r\nDate: ");
    let at = buf.len();
    buf.extend_from_slice(date);
    buf.extend_from_slice(b"\r\nServer: ");
    buf.extend_from_slice(server.as_bytes());
    buf.extend_from_slice(b"\r\n");
    at
}

/// Appends `name: value\r\n`.
pub fn header(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Appends `name: <n>\r\n`.
pub fn header_u64(buf: &mut Vec<u8>, name: &str, n: u64) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    put_u64(buf, n);
    buf.extend_from_slice(b"\r\n");
}

/// Appends a complete small plain-text response for `status` (head and, unless `head_only`,
/// body), with `extra` header lines (each ending in CRLF) before the connection header.
/// Returns the body length (what the access log reports) and the offset of the connection
/// header in `buf`.
pub fn simple(
    buf: &mut Vec<u8>,
    status: u16,
    date: &[u8; DATE_LEN],
    server: &str,
    extra: &[u8],
    conn: ConnHeader,
    head_only: bool,
) -> (u64, usize) {
    start(buf, status, date, server);
    let reason = reason(status);
    // "404 Not Found\n"
    let body_len = 3 + 1 + reason.len() + 1;
    buf.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    header_u64(buf, "Content-Length", body_len as u64);
    buf.extend_from_slice(extra);
    let conn_at = buf.len();
    buf.extend_from_slice(conn.line());
    buf.extend_from_slice(b"\r\n");
    if head_only {
        return (0, conn_at);
    }
    put_u64(buf, u64::from(status));
    buf.push(b' ');
    buf.extend_from_slice(reason.as_bytes());
    buf.push(b'\n');
    (body_len as u64, conn_at)
}

/// Applies a route's header changes to the head that starts at `start` in `buf` (status line
/// and field lines so far, no blank line yet): fields named in `edit.remove` or `edit.set` are
/// dropped, then each `set` field is appended.
pub fn apply_edit(buf: &mut Vec<u8>, start: usize, edit: &crate::config::sites::HeaderEdit) {
    let Some(first) = buf[start..].windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let fields_at = start + first + 2;
    let old = buf.split_off(fields_at);
    for line in old.split_inclusive(|&b| b == b'\n') {
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map_or(&line[..0], |i| &line[..i]);
        let named = |n: &String| n.as_bytes().eq_ignore_ascii_case(name);
        if edit.remove.iter().any(named) || edit.set.iter().any(|(n, _)| named(n)) {
            continue;
        }
        buf.extend_from_slice(line);
    }
    for (n, v) in &edit.set {
        buf.extend_from_slice(n.as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(v.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_match_httpdate() {
        for secs in [0u64, 784_111_777, 951_782_400, 1_700_000_000, 4_102_444_799] {
            let mut out = [0u8; DATE_LEN];
            fmt_http_date(secs, &mut out);
            let want = httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            );
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }

    #[test]
    fn log_date_format() {
        let mut out = [0u8; LOG_DATE_LEN];
        fmt_log_date(784_111_777, &mut out);
        assert_eq!(&out, b"06/Nov/1994:08:49:37 +0000");
    }

    #[test]
    fn numbers() {
        let mut b = Vec::new();
        put_u64(&mut b, 0);
        b.push(b' ');
        put_u64(&mut b, 18_446_744_073_709_551_615);
        b.push(b' ');
        put_hex(&mut b, 0xdead_beef);
        assert_eq!(b, b"0 18446744073709551615 deadbeef");
    }

    #[test]
    fn simple_response_has_matching_length() {
        let mut b = Vec::new();
        let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
        let (n, _) = simple(&mut b, 404, &date, "t", b"", ConnHeader::Close, false);
        let text = std::str::from_utf8(&b).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994"));
        assert!(text.contains("Content-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n"));
        assert_eq!(n, 14);
    }
}

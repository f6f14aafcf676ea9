//! Session-level tests: drive `feed` / `next_output` / `consume` over real files in a temp dir
//! with a simulated clock.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::handler::testdir::TempDir;

pub(crate) struct Harness {
    pub svc: Service,
    #[allow(dead_code)] // keeps the directory alive; some tests write into it
    pub dir: TempDir,
    pub s: Session,
    pub now: Instant,
}

impl Harness {
    pub fn new(tag: &str, cfg: Config) -> Harness {
        let dir = TempDir::new(tag);
        dir.write("index.html", b"<h1>home</h1>\n");
        dir.write("a.txt", b"hello world\n");
        dir.write(
            "big.bin",
            &(0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        );
        let roots: crate::handler::Roots = std::sync::Arc::from(vec![dir.root_fd()]);
        let mut svc = Service::new(&cfg, roots);
        svc.set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777));
        let now = Instant::now();
        let s = Session::new("127.0.0.1:5555".parse().unwrap(), now);
        Harness { svc, dir, s, now }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.s.feed(&mut self.svc, data, self.now);
    }

    /// Writes out everything queued (files read back with pread), `chunk` bytes at a time.
    pub fn drain_by(&mut self, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let n = match self.s.next_output() {
                None => break,
                Some(Output::Pipe { .. }) => panic!("no driver pipe in these tests"),
                Some(Output::Bytes(b)) => {
                    let n = b.len().min(chunk);
                    got.extend_from_slice(&b[..n]);
                    n
                }
                Some(Output::File { fd, offset, len }) => {
                    let n = (len as usize).min(chunk);
                    let mut buf = vec![0u8; n];
                    // SAFETY: the session keeps `fd` open until consume covers it.
                    let f = unsafe { BorrowedFd::borrow_raw(fd) };
                    let r = unsafe {
                        libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), n, offset as i64)
                    };
                    assert_eq!(r, n as isize);
                    got.extend_from_slice(&buf);
                    n
                }
            };
            self.s.consume(&mut self.svc, n, self.now);
        }
        got
    }

    pub fn drain(&mut self) -> Vec<u8> {
        self.drain_by(usize::MAX)
    }

    pub fn roundtrip(&mut self, req: &[u8]) -> String {
        self.feed(req);
        String::from_utf8_lossy(&self.drain()).into_owned()
    }
}

use std::os::fd::AsRawFd;

pub(crate) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// Splits a stream of responses into (status, head, body) using Content-Length.
pub(crate) fn responses(mut raw: &[u8], head_req: &[bool]) -> Vec<(u16, String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut i = 0;
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end")
            + 4;
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |n| n.trim().parse().unwrap());
        let is_head = head_req.get(i).copied().unwrap_or(false);
        let blen = if is_head || status == 304 { 0 } else { len };
        v.push((status, head, raw[end..end + blen].to_vec()));
        raw = &raw[end + blen..];
        i += 1;
    }
    v
}

#[test]
fn get_small_file() {
    let mut h = Harness::new("s-get", Config::default());
    let r = h.roundtrip(&get("/a.txt"));
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        "{r}"
    );
    for want in [
        "Server: ringd/",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Length: 12\r\n",
        "Last-Modified: ",
        "ETag: \"",
        "Accept-Ranges: bytes\r\n",
    ] {
        assert!(r.contains(want), "{want} missing in {r}");
    }
    assert!(r.ends_with("\r\n\r\nhello world\n"));
    assert!(!h.s.should_close() && h.s.wants_read());
}

#[test]
fn date_is_patched_into_cached_head() {
    let mut h = Harness::new("s-date", Config::default());
    h.roundtrip(&get("/a.txt"));
    h.svc
        .set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_778));
    let r = h.roundtrip(&get("/a.txt"));
    assert!(r.contains("Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n"), "{r}");
}

#[test]
fn head_and_index_and_404_and_405() {
    let mut h = Harness::new("s-misc", Config::default());
    let r = h.roundtrip(b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        r.contains("Content-Length: 12\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let r = h.roundtrip(&get("/"));
    assert!(
        r.contains("text/html") && r.ends_with("<h1>home</h1>\n"),
        "{r}"
    );
    let r = h.roundtrip(&get("/nope"));
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.ends_with("404 Not Found\n"));
    let r = h.roundtrip(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD\r\n"),
        "{r}"
    );
    assert!(!h.s.should_close());
    let r = h.roundtrip(&get("/a.txt"));
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
}

#[test]
fn large_file_is_a_file_range() {
    let mut h = Harness::new("s-big", Config::default());
    h.feed(&get("/big.bin"));
    assert!(matches!(h.s.next_output(), Some(Output::Bytes(_))));
    let all = h.drain_by(7000);
    let rs = responses(&all, &[]);
    assert_eq!(rs.len(), 1);
    let want: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(rs[0].2, want);
}

#[test]
fn http10_keep_alive_echoed_and_close() {
    let mut h = Harness::new("s-10", Config::default());
    let r = h.roundtrip(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
    assert!(!h.s.should_close());
    let r = h.roundtrip(b"GET /a.txt HTTP/1.0\r\n\r\n");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(h.s.should_close() && !h.s.wants_read());
}

#[test]
fn pipelined_small_responses_coalesce_in_order() {
    let mut h = Harness::new("s-pipe", Config::default());
    let mut reqs = Vec::new();
    for _ in 0..4 {
        reqs.extend_from_slice(&get("/a.txt"));
        reqs.extend_from_slice(&get("/nope"));
    }
    h.feed(&reqs);
    let first = match h.s.next_output() {
        Some(Output::Bytes(b)) => b.len(),
        other => panic!("{other:?}"),
    };
    let all = h.drain();
    assert_eq!(first, all.len(), "all eight responses in one buffer");
    let rs = responses(&all, &[]);
    let statuses: Vec<u16> = rs.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 404, 200, 404, 200, 404, 200, 404]);
}

#[test]
fn handed_out_buffer_never_changes() {
    let mut h = Harness::new("s-contract", Config::default());
    h.feed(&get("/a.txt"));
    let (ptr, len, copy) = match h.s.next_output() {
        Some(Output::Bytes(b)) => (b.as_ptr(), b.len(), b.to_vec()),
        other => panic!("{other:?}"),
    };
    h.s.consume(&mut h.svc, 10, h.now);
    // More requests arrive while the first is in flight.
    for _ in 0..20 {
        h.feed(&get("/a.txt"));
    }
    // SAFETY: the contract under test: the bytes stay valid until consume covers them.
    let still = unsafe { std::slice::from_raw_parts(ptr, len) };
    assert_eq!(still, &copy[..]);
    match h.s.next_output() {
        Some(Output::Bytes(b)) => assert_eq!(b.as_ptr(), ptr.wrapping_add(10)),
        other => panic!("{other:?}"),
    }
    let rest = h.drain();
    assert_eq!(responses(&rest[len - 10..], &[]).len(), 20);
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[test]
fn conditional_requests() {
    let mut h = Harness::new("s-cond", Config::default());
    let r = h.roundtrip(&get("/a.txt"));
    let etag = header(&r, "ETag").unwrap().to_string();
    let lm = header(&r, "Last-Modified").unwrap().to_string();
    let ask = |h: &mut Harness, extra: &str| {
        let req = format!("GET /a.txt HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        h.roundtrip(req.as_bytes())
    };
    let r = ask(&mut h, &format!("If-None-Match: W/{etag}, \"x\"\r\n"));
    assert!(r.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{r}");
    assert_eq!(header(&r, "ETag"), Some(etag.as_str()));
    assert!(header(&r, "Content-Length").is_none() && header(&r, "Content-Type").is_none());
    assert!(header(&r, "Date").is_some() && r.ends_with("\r\n\r\n"));
    let r = ask(&mut h, &format!("If-Modified-Since: {lm}\r\n"));
    assert!(r.starts_with("HTTP/1.1 304 "), "{r}");
    let r = ask(&mut h, "If-Match: \"nope\"\r\n");
    assert!(r.starts_with("HTTP/1.1 412 "), "{r}");
    let r = ask(
        &mut h,
        "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 412 "), "{r}");
    let r = ask(&mut h, &format!("If-Match: {etag}\r\n"));
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.ends_with("hello world\n"),
        "{r}"
    );
    assert!(!h.s.should_close());
}

#[test]
fn ranges() {
    let mut h = Harness::new("s-range", Config::default());
    let etag = header(&h.roundtrip(&get("/a.txt")), "ETag")
        .unwrap()
        .to_string();
    let ask = |h: &mut Harness, path: &str, extra: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        h.roundtrip(req.as_bytes())
    };
    let r = ask(&mut h, "/a.txt", "Range: bytes=0-4\r\n");
    assert!(r.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{r}");
    assert_eq!(header(&r, "Content-Range"), Some("bytes 0-4/12"));
    assert_eq!(header(&r, "Content-Length"), Some("5"));
    assert!(r.ends_with("\r\n\r\nhello"));
    let r = ask(&mut h, "/a.txt", "Range: bytes=-6\r\n");
    assert!(r.ends_with("\r\n\r\nworld\n"), "{r}");
    let r = ask(&mut h, "/a.txt", "Range: bytes=12-\r\n");
    assert!(r.starts_with("HTTP/1.1 416 "), "{r}");
    assert_eq!(header(&r, "Content-Range"), Some("bytes */12"));
    // If-Range: a matching tag honours the range, anything else serves the whole file.
    let r = ask(
        &mut h,
        "/a.txt",
        &format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n"),
    );
    assert!(
        r.starts_with("HTTP/1.1 206 ") && r.ends_with("\r\n\r\nh"),
        "{r}"
    );
    let r = ask(
        &mut h,
        "/a.txt",
        "Range: bytes=0-0\r\nIf-Range: \"old\"\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.ends_with("hello world\n"),
        "{r}"
    );
    // HEAD ignores Range.
    let r = h.roundtrip(b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    // Large file: the range is a file piece at the right offset.
    h.feed(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=100000-100009\r\n\r\n");
    let all = h.drain();
    let rs = responses(&all, &[]);
    let want: Vec<u8> = (100_000..100_010u32).map(|i| (i % 251) as u8).collect();
    assert_eq!((rs[0].0, &rs[0].2), (206, &want));
}

#[test]
fn multipart_ranges() {
    let mut h = Harness::new("s-multi", Config::default());
    for path in ["/a.txt", "/big.bin"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1, 6-8\r\n\r\n");
        h.feed(req.as_bytes());
        let all = h.drain();
        let rs = responses(&all, &[]);
        assert_eq!(rs.len(), 1);
        let (status, head, body) = &rs[0];
        assert_eq!(*status, 206);
        let ct = header(head, "Content-Type").unwrap();
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        let text = String::from_utf8_lossy(body);
        assert_eq!(
            text.matches(&format!("--{boundary}\r\n")).count(),
            2,
            "{text}"
        );
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        let total = if path == "/a.txt" { 12 } else { 200_000 };
        assert!(text.contains(&format!("Content-Range: bytes 0-1/{total}\r\n\r\n")));
        assert!(text.contains(&format!("Content-Range: bytes 6-8/{total}\r\n\r\n")));
        if path == "/a.txt" {
            assert!(text.contains("\r\n\r\nhe\r\n--") && text.contains("\r\n\r\nwor\r\n--"));
        }
    }
    // Overlapping ranges: the whole file.
    let r = h.roundtrip(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-5,3-8\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
}

#[test]
fn precompressed_sidecars() {
    let mut h = Harness::new("s-enc", Config::default());
    h.dir.write("app.js", &[b'x'; 300]);
    h.dir.write("app.js.gz", b"GZ");
    h.dir.write("app.js.br", b"BR");
    let r = h.roundtrip(b"GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br\r\n\r\n");
    assert_eq!(header(&r, "Content-Encoding"), Some("br"), "{r}");
    assert_eq!(header(&r, "Vary"), Some("Accept-Encoding"));
    assert!(r.ends_with("\r\n\r\nBR"));
    let r =
        h.roundtrip(b"GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br;q=0\r\n\r\n");
    assert_eq!(header(&r, "Content-Encoding"), Some("gzip"), "{r}");
    let r = h.roundtrip(&get("/app.js"));
    assert!(header(&r, "Content-Encoding").is_none());
    assert_eq!(header(&r, "Vary"), Some("Accept-Encoding"), "{r}");
    assert_eq!(
        header(&r, "Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(r.ends_with(&"x".repeat(300)));
}

#[test]
fn redirects_dotfiles_and_escapes() {
    let mut h = Harness::new("s-paths", Config::default());
    h.dir.write("docs/index.html", b"docs");
    h.dir.write(".secret", b"no");
    h.dir.write("sub/.env", b"no");
    std::os::unix::fs::symlink("/etc/passwd", h.dir.path().join("link")).unwrap();
    let r = h.roundtrip(&get("/docs?x=1"));
    assert!(r.starts_with("HTTP/1.1 301 "), "{r}");
    assert_eq!(header(&r, "Location"), Some("/docs/?x=1"));
    assert!(h.roundtrip(&get("/docs/")).ends_with("\r\n\r\ndocs"));
    for (path, status) in [
        ("/.secret", 404),
        ("/sub/.env", 404),
        ("/%2e%2e/etc/passwd", 400),
        ("/sub/..%2f..%2fetc/passwd", 404),
        ("/link", 404),
        ("/a.txt%00", 400),
        ("/a.txt/", 404),
    ] {
        let r = h.roundtrip(&get(path));
        assert!(r.starts_with(&format!("HTTP/1.1 {status} ")), "{path}: {r}");
    }
    let mut cfg = Config {
        serve_dotfiles: true,
        ..Default::default()
    };
    cfg.follow_symlinks = true;
    let mut h2 = Harness::new("s-paths2", cfg);
    h2.dir.write(".well", b"ok");
    std::os::unix::fs::symlink("a.txt", h2.dir.path().join("alias")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", h2.dir.path().join("out")).unwrap();
    assert!(h2.roundtrip(&get("/.well")).ends_with("\r\n\r\nok"));
    assert!(h2.roundtrip(&get("/alias")).ends_with("hello world\n"));
    assert!(h2.roundtrip(&get("/out")).starts_with("HTTP/1.1 404 "));
}

#[test]
fn cache_revalidates_after_valid_window() {
    let mut h = Harness::new("s-reval", Config::default());
    assert!(h.roundtrip(&get("/a.txt")).ends_with("hello world\n"));
    h.dir.write("a.txt", b"changed!");
    // Within the window the cached copy is served without touching the disk.
    assert!(h.roundtrip(&get("/a.txt")).ends_with("hello world\n"));
    h.now += Duration::from_millis(1500);
    assert!(h.roundtrip(&get("/a.txt")).ends_with("\r\n\r\nchanged!"));
    std::fs::remove_file(h.dir.path().join("a.txt")).unwrap();
    h.now += Duration::from_millis(1500);
    assert!(h.roundtrip(&get("/a.txt")).starts_with("HTTP/1.1 404 "));
}

#[test]
fn bodies_are_read_and_discarded() {
    let mut h = Harness::new("s-body", Config::default());
    let mut input =
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    input.extend_from_slice(b"5;x=y\r\nGET /\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n");
    input.extend_from_slice(&get("/a.txt"));
    input.extend_from_slice(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nGET ");
    input.extend_from_slice(&get("/nope"));
    // Byte by byte: framing must hold across every split.
    for b in &input {
        h.feed(std::slice::from_ref(b));
    }
    let all = h.drain();
    let statuses: Vec<u16> = responses(&all, &[]).iter().map(|r| r.0).collect();
    assert_eq!(statuses, [405, 200, 200, 404]);
    assert!(!h.s.should_close());

    let mut h = Harness::new("s-body413", Config::default());
    let r = h.roundtrip(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 413 ") && h.s.should_close(), "{r}");
    let mut cfg = Config::default();
    cfg.limits.max_body = 4;
    let mut h = Harness::new("s-body413c", cfg);
    let r = h.roundtrip(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413 ") && h.s.should_close(), "{r}");
}

#[test]
fn pipelining_16_mixed_requests() {
    let mut h = Harness::new("s-pipe16", Config::default());
    let kinds: [(&[u8], u16, bool); 8] = [
        (b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200, false),
        (b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200, true),
        (b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", 200, false),
        (b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, false),
        (
            b"GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=1-2\r\n\r\n",
            206,
            false,
        ),
        (b"DELETE /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 405, false),
        (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", 200, false),
        (
            b"GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n",
            304,
            false,
        ),
    ];
    let mut input = Vec::new();
    let mut want = Vec::new();
    let mut heads = Vec::new();
    for i in 0..16 {
        let (req, status, head) = kinds[(i * 5) % 8];
        input.extend_from_slice(req);
        want.push(status);
        heads.push(head);
    }
    // Arrives in odd-sized pieces; written out in odd-sized pieces.
    for piece in input.chunks(37) {
        h.feed(piece);
    }
    let all = h.drain_by(1000);
    let rs = responses(&all, &heads);
    assert_eq!(rs.iter().map(|r| r.0).collect::<Vec<_>>(), want);
    for r in &rs {
        if r.0 == 200 && header(&r.1, "Content-Length") == Some("200000") && !r.2.is_empty() {
            assert_eq!(r.2.len(), 200_000);
        }
    }
}

#[test]
fn pipeline_depth_backpressure() {
    let mut cfg = Config::default();
    cfg.limits.max_pipeline_depth = 4;
    let mut h = Harness::new("s-depth", cfg);
    let mut input = Vec::new();
    for _ in 0..10 {
        input.extend_from_slice(&get("/a.txt"));
    }
    h.feed(&input);
    assert!(!h.s.wants_read());
    let all = h.drain_by(50);
    assert_eq!(responses(&all, &[]).len(), 10);
    assert!(h.s.wants_read());
}

#[test]
fn timeouts_through_deadline() {
    let cfg = Config::default();
    let t = cfg.timeouts.clone();
    let mut h = Harness::new("s-time", cfg);
    let start = h.now;
    // Fresh connection: header timeout from accept.
    assert_eq!(h.s.deadline(), Some(start + t.header_read));
    // A partial request: header timeout from its first byte.
    h.now += Duration::from_secs(1);
    h.feed(b"GET /a.txt HTTP/1.1\r\n");
    h.now += Duration::from_secs(3);
    h.feed(b"Host: t\r\n");
    assert_eq!(h.s.deadline(), Some(start + t.header_read));
    h.feed(b"\r\n");
    // Output pending: send stall, refreshed by progress.
    assert_eq!(h.s.deadline(), Some(h.now + t.send_stall));
    h.now += Duration::from_secs(2);
    h.s.consume(&mut h.svc, 5, h.now);
    assert_eq!(h.s.deadline(), Some(h.now + t.send_stall));
    h.drain();
    // Idle keep-alive.
    assert_eq!(h.s.deadline(), Some(h.now + t.keepalive));
    // Next request: header timeout from its first byte.
    h.now += Duration::from_secs(5);
    h.feed(b"GET");
    assert_eq!(h.s.deadline(), Some(h.now + t.header_read));
    // Closed after an error: no timeout of our own once drained; the driver closes.
    h.feed(b" / HTTP/9.9\r\n\r\n");
    h.drain();
    assert!(h.s.should_close());
    assert_eq!(h.s.deadline(), None);
}

#[test]
fn eof_answers_complete_then_closes() {
    let mut h = Harness::new("s-eof", Config::default());
    let mut input = get("/a.txt");
    input.extend_from_slice(b"GET /a.t");
    h.feed(&input);
    h.s.feed_eof(h.now);
    assert!(!h.s.should_close() && !h.s.wants_read());
    assert_eq!(responses(&h.drain(), &[]).len(), 1);
    assert!(h.s.should_close());
}

#[test]
fn shutdown_finishes_in_flight_with_close() {
    let mut h = Harness::new("s-shut", Config::default());
    let mut input = get("/a.txt");
    input.extend_from_slice(&get("/a.txt"));
    h.feed(&input);
    h.s.start_shutdown(h.now);
    assert!(!h.s.should_close() && !h.s.wants_read());
    h.feed(&get("/a.txt"));
    let all = h.drain();
    let rs = responses(&all, &[]);
    assert_eq!(rs.len(), 2);
    assert_eq!(header(&rs[0].1, "Connection"), None);
    assert_eq!(header(&rs[1].1, "Connection"), Some("close"));
    assert!(h.s.should_close());
    // Idle connection: for the grace, a request that arrives (its client may have sent it
    // before any close of ours could reach it) is still answered, with `Connection: close`.
    let mut h = Harness::new("s-shut2", Config::default());
    h.roundtrip(&get("/a.txt"));
    h.s.start_shutdown(h.now);
    assert!(!h.s.should_close() && h.s.wants_read());
    assert_eq!(h.s.deadline(), Some(h.now + crate::session::DRAIN_GRACE));
    h.now += Duration::from_millis(300);
    let r = h.roundtrip(&get("/a.txt"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
    assert!(h.s.should_close());
    // Idle through the grace: its deadline is the grace's end (the driver closes it then).
    let mut h = Harness::new("s-shut3", Config::default());
    h.roundtrip(&get("/a.txt"));
    h.s.start_shutdown(h.now);
    assert_eq!(h.s.deadline(), Some(h.now + crate::session::DRAIN_GRACE));
    // A request half in at the shutdown: answered when it completes, with close.
    let mut h = Harness::new("s-shut4", Config::default());
    h.feed(b"GET /a.txt HTTP/1.1\r\nHo");
    h.s.start_shutdown(h.now);
    let r = h.roundtrip(b"st: t\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\r\nConnection: close\r\n"),
        "{r}"
    );
    assert!(h.s.should_close());
}

#[test]
fn access_log_lines() {
    let cfg = Config {
        access_log: Some("/dev/null".into()),
        ..Default::default()
    };
    let mut h = Harness::new("s-log", cfg);
    h.roundtrip(
        b"GET /a.txt?q=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r/\r\nUser-Agent: ua \"x\"\r\n\r\n",
    );
    h.roundtrip(b"HEAD /nope HTTP/1.0\r\n\r\n");
    let log = String::from_utf8(std::mem::take(h.svc.access_log())).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a.txt?q=1 HTTP/1.1\" 200 12 \"http://r/\" \"ua \\x22x\\x22\"",
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"HEAD /nope HTTP/1.0\" 404 0 \"-\" \"-\"",
        ]
    );
    let mut h = Harness::new("s-nolog", Config::default());
    h.roundtrip(&get("/a.txt"));
    assert!(h.svc.access_log().is_empty());
}

/// Counts heap allocations made by the current thread (the test binary's allocator).
struct Counting;

thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: `p` came from System.alloc with layout `l`.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: `p` came from System with layout `l`.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn cached_small_file_path_does_not_allocate() {
    let mut h = Harness::new("s-noalloc", Config::default());
    h.dir.write("k.bin", &[b'k'; 1000]);
    let one = get("/k.bin");
    let batch = one.repeat(16);
    // Warm up: cache entry, buffer pool, queue capacity.
    for _ in 0..3 {
        h.feed(&batch);
        h.drain_by(usize::MAX);
    }
    let before = ALLOCS.with(|c| c.get());
    for _ in 0..50 {
        h.s.feed(&mut h.svc, &one, h.now);
        while let Some(o) = h.s.next_output() {
            let n = match o {
                Output::Bytes(b) => b.len(),
                Output::File { len, .. } | Output::Pipe { len } => len as usize,
            };
            h.s.consume(&mut h.svc, n, h.now);
        }
        h.s.feed(&mut h.svc, &batch, h.now);
        while let Some(o) = h.s.next_output() {
            let n = match o {
                Output::Bytes(b) => b.len(),
                Output::File { len, .. } | Output::Pipe { len } => len as usize,
            };
            h.s.consume(&mut h.svc, n, h.now);
        }
    }
    assert_eq!(ALLOCS.with(|c| c.get()) - before, 0);
    // The counter does count: a cold file (cache miss) allocates its entry.
    h.dir.write("cold.bin", b"c");
    let before = ALLOCS.with(|c| c.get());
    h.roundtrip(&get("/cold.bin"));
    assert!(ALLOCS.with(|c| c.get()) > before);
}

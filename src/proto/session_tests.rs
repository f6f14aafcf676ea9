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
        let mut svc = Service::new(&cfg, dir.root_fd());
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

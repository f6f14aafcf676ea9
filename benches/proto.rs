//! Criterion benches for the HTTP core: parse + head encode per request, the connection
//! state machine (Session) over 16 pipelined requests for a small cached file, and what a
//! file-cache miss or revalidation costs next to a hit (`cache_miss`).

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringd::config::{Config, Limits};
use ringd::proto::head;
use ringd::proto::parse::{parse, Parsed};
use ringd::session::{Output, Service, Session};

/// What wrk sends.
const REQ: &[u8] = b"GET /file.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
/// A browser-like request.
const BROWSER: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://example.com/\r\nConnection: keep-alive\r\nSec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\nIf-None-Match: \"5f3a-3e8\"\r\n\r\n";

fn parse_and_encode(c: &mut Criterion) {
    let limits = Limits::default();
    let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
    let mut g = c.benchmark_group("parse+head");
    for (name, req) in [("wrk", REQ), ("browser", BROWSER)] {
        let mut out = Vec::with_capacity(512);
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                let Ok(Parsed::Complete(r)) = parse(black_box(req), &limits) else {
                    panic!("parse failed")
                };
                out.clear();
                head::start(&mut out, 200, &date, "ringd/0.1.0");
                head::header(&mut out, "Content-Type", b"application/octet-stream");
                head::header_u64(&mut out, "Content-Length", 1000);
                head::header(&mut out, "Last-Modified", &date);
                head::header(&mut out, "ETag", b"\"5f3a-3e8\"");
                out.extend_from_slice(b"Accept-Ranges: bytes\r\n\r\n");
                black_box((r.head_len, out.len()))
            })
        });
    }
    g.finish();
}

/// A uniquely named temp dir holding one 1000-byte file; removed on drop.
struct Root(std::path::PathBuf);

impl Root {
    fn new() -> Root {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ringd-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("file.bin"), vec![b'x'; 1000]).unwrap();
        Root(p)
    }

    fn fd(&self) -> ringd::handler::Roots {
        let fd: OwnedFd = ringd::sys::open_dir_path(&self.0).unwrap();
        std::sync::Arc::from(vec![fd])
    }

    /// Adds another 1000-byte file.
    fn add(&self, name: &str) {
        std::fs::write(self.0.join(name), vec![b'y'; 1000]).unwrap();
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn session_pipelined(c: &mut Criterion) {
    let root = Root::new();
    let mut svc = Service::new(&Config::default(), root.fd());
    svc.set_time(SystemTime::now());
    let batch: Vec<u8> = REQ.repeat(16);
    let now = Instant::now();
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(16));
    g.bench_function("16 pipelined GET 1000 B cached", |b| {
        let mut s = Session::new("127.0.0.1:9".parse().unwrap(), now);
        let mut sent = 0usize;
        b.iter(|| {
            s.feed(&mut svc, black_box(&batch), now);
            while let Some(o) = s.next_output() {
                let n = match o {
                    Output::Bytes(b) => b.len(),
                    Output::File { len, .. } | Output::Pipe { len } => len as usize,
                };
                sent += n;
                s.consume(&mut svc, n, now);
            }
        });
        assert!(sent > 0 && !s.should_close());
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("1 GET 1000 B cached", |b| {
        let mut s = Session::new("127.0.0.1:9".parse().unwrap(), now);
        b.iter(|| {
            s.feed(&mut svc, black_box(REQ), now);
            while let Some(o) = s.next_output() {
                let n = match o {
                    Output::Bytes(b) => b.len(),
                    Output::File { len, .. } | Output::Pipe { len } => len as usize,
                };
                s.consume(&mut svc, n, now);
            }
        });
    });
    g.finish();
}

/// Feeds `req` and writes out everything queued; returns the bytes "sent".
fn exchange(s: &mut Session, svc: &mut Service, req: &[u8], now: Instant) -> usize {
    s.feed(svc, black_box(req), now);
    let mut sent = 0;
    while let Some(o) = s.next_output() {
        let n = match o {
            Output::Bytes(b) => b.len(),
            Output::File { len, .. } | Output::Pipe { len } => len as usize,
        };
        sent += n;
        s.consume(svc, n, now);
    }
    sent
}

/// What the synchronous file work of a cache miss costs against a hit, for a 1000-byte file
/// whose pages are in the page cache: a hit (entry fresh), a revalidation (entry older than
/// `cache.valid`: openat2 of the file and its three sidecar names, fstat, close), a full miss
/// (the same, plus pread of the body and building the entry), and the bare syscalls.
fn cache_miss(c: &mut Criterion) {
    let root = Root::new();
    root.add("other.bin");
    let now = Instant::now();
    let mut g = c.benchmark_group("cache_miss");
    g.throughput(Throughput::Elements(1));

    let mut svc = Service::new(&Config::default(), root.fd());
    svc.set_time(SystemTime::now());
    let mut s = Session::new("127.0.0.1:9".parse().unwrap(), now);
    assert_eq!(
        exchange(&mut s, &mut svc, REQ, now),
        exchange(&mut s, &mut svc, REQ, now)
    );
    g.bench_function("hit: GET 1000 B", |b| {
        b.iter(|| exchange(&mut s, &mut svc, REQ, now))
    });

    // cache.valid = 0: every request finds its entry stale and revalidates it.
    let mut cfg = Config::default();
    cfg.cache.valid = Duration::ZERO;
    let mut svc = Service::new(&cfg, root.fd());
    svc.set_time(SystemTime::now());
    let mut s = Session::new("127.0.0.1:9".parse().unwrap(), now);
    exchange(&mut s, &mut svc, REQ, now);
    g.bench_function("revalidate: GET 1000 B", |b| {
        b.iter(|| exchange(&mut s, &mut svc, REQ, now))
    });

    // One cache slot and two files requested in turn: every request is a full miss.
    let mut cfg = Config::default();
    cfg.cache.max_entries = 1;
    let mut svc = Service::new(&cfg, root.fd());
    svc.set_time(SystemTime::now());
    let mut s = Session::new("127.0.0.1:9".parse().unwrap(), now);
    let other: &[u8] = b"GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
    g.throughput(Throughput::Elements(2));
    g.bench_function("miss: 2 GETs 1000 B (per element = 1 miss)", |b| {
        b.iter(|| exchange(&mut s, &mut svc, REQ, now) + exchange(&mut s, &mut svc, other, now))
    });

    // The bare syscalls of a miss on the identity file alone.
    use ringd::handler::fs;
    use std::os::fd::AsFd;
    let dir = root.fd();
    let path = c"file.bin";
    g.throughput(Throughput::Elements(1));
    g.bench_function("syscalls: openat2+fstat+pread+close 1000 B", |b| {
        b.iter(|| {
            let fd = fs::open_beneath(dir[0].as_fd(), black_box(path), false).unwrap();
            let meta = fs::fstat(fd.as_fd()).unwrap();
            fs::read_all(fd.as_fd(), meta.size as usize).unwrap().len()
        })
    });
    g.bench_function("syscalls: openat2 ENOENT (one sidecar probe)", |b| {
        b.iter(|| fs::open_beneath(dir[0].as_fd(), black_box(c"file.bin.br"), false).is_err())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = parse_and_encode, session_pipelined, cache_miss
}
criterion_main!(benches);

//! Criterion benches for the HTTP core: parse + head encode per request, and the connection
//! state machine (Session) over 16 pipelined requests for a small cached file.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
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
        let p = std::env::temp_dir().join(format!("ringd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("file.bin"), vec![b'x'; 1000]).unwrap();
        Root(p)
    }

    fn fd(&self) -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&self.0)
            .unwrap()
            .into()
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
                    Output::File { len, .. } => len as usize,
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
                    Output::File { len, .. } => len as usize,
                };
                s.consume(&mut svc, n, now);
            }
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = parse_and_encode, session_pipelined
}
criterion_main!(benches);

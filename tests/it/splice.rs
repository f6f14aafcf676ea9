//! Zero-copy proxy bodies (issue 12): Content-Length bodies from an upstream, and a tunnel's
//! bytes, go upstream → pipe → client by splice on uring and epoll (tokio-uring copies). The
//! access log's `spliced=N` says how many bytes went through the pipe, which proves splice
//! ran (or did not) without a mock. Upstreams are real sockets on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{random_bytes, Server, ServerBuilder, TempDir};
use crate::http::{find, req, Client};
use crate::proxy::{ok, Action, Upstream};

const MIB: usize = 1024 * 1024;

/// Whether `backend` splices proxied bodies.
fn splices(backend: &str) -> bool {
    backend != "tokio-uring"
}

/// Whether `backend` splices the client → upstream direction too.
fn splices_up(backend: &str) -> bool {
    backend != "tokio-uring"
}

fn start(backend: &str, d: &TempDir, up: std::net::SocketAddr, extra: &[&str]) -> Server {
    start_conf(backend, d, up, "", extra)
}

fn start_conf(
    backend: &str,
    d: &TempDir,
    up: std::net::SocketAddr,
    keys: &str,
    extra: &[&str],
) -> Server {
    let rt = if keys.contains("read_timeout") {
        ""
    } else {
        "read_timeout = \"10s\""
    };
    let conf = format!(
        r#"
[upstreams.app]
servers = ["{up}"]
{rt}
max_fails = 0
{keys}

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/*"
  proxy = {{ upstream = "app" }}
"#
    );
    d.write("s.toml", conf.as_bytes());
    d.write("www/.keep", b"");
    let log = d.path().join("access.log");
    let mut args = vec!["--access-log", log.to_str().unwrap()];
    let mut workers = 2;
    let mut it = extra.iter();
    while let Some(&a) = it.next() {
        match a {
            "--workers" => workers = it.next().unwrap().parse().unwrap(),
            _ => args.push(a),
        }
    }
    ServerBuilder::new(backend, d.path())
        .config(&d.path().join("s.toml"))
        .workers(workers)
        .args(&args)
        .start()
}

/// Stops `srv` (flushing its access log) and returns the log's lines.
fn log_lines(mut srv: Server, d: &TempDir) -> Vec<String> {
    let (status, _) = srv.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit: {status:?}\n{}", srv.diagnostics());
    std::fs::read_to_string(d.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `spliced=N` of the log line for `target` (0 when absent).
fn spliced(lines: &[String], target: &str) -> u64 {
    field(lines, "GET", target, "spliced=")
}

/// The number after `key` in the log line for `method target` (0 when absent).
fn field(lines: &[String], method: &str, target: &str, key: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("\"{method} {target} HTTP/1.1\"")))
        .unwrap_or_else(|| panic!("no log line for {target}: {lines:#?}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map_or(0, |n| n.parse().unwrap())
}

/// A 10 MiB and a 3-byte body, byte-exact on one keep-alive connection; the large one
/// spliced where the backend can, the small one copied; with `--proxy-splice-min 0` nothing
/// is spliced.
pub fn bodies_large_and_small(backend: &str) {
    let big = Arc::new(random_bytes(10 * MIB, 12));
    let b = big.clone();
    let up = Upstream::spawn(move |r, _| {
        if r.starts_with(b"GET /big") {
            Action::Reply(ok(&b))
        } else {
            Action::Reply(ok(b"abc"))
        }
    });
    for (extra, on) in [(&[][..], true), (&["--proxy-splice-min", "0"][..], false)] {
        let d = TempDir::new("splice-bodies");
        let srv = start(backend, &d, up.addr, extra);
        let mut c = Client::new(srv.connect());
        for _ in 0..2 {
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.exchange(&req("GET", "/big", &[]))
            }));
            let r = got.unwrap_or_else(|e| {
                // Say which run failed, and what the server logged.
                thread::sleep(Duration::from_millis(1500));
                let log = std::fs::read_to_string(d.path().join("access.log")).unwrap_or_default();
                panic!(
                    "{:?} (splice {on}); log:\n{log}\n{}",
                    e.downcast_ref::<String>(),
                    srv.diagnostics()
                )
            });
            assert_eq!(r.status, 200, "{}", srv.diagnostics());
            assert_eq!(r.header("content-length"), Some("10485760"));
            assert!(
                r.body == *big,
                "10 MiB body differs ({} bytes)",
                r.body.len()
            );
            let r = c.exchange(&req("GET", "/small", &[]));
            assert_eq!((r.status, &r.body[..]), (200, &b"abc"[..]));
        }
        drop(c);
        let lines = log_lines(srv, &d);
        let n = spliced(&lines, "/big");
        if on && splices(backend) {
            assert!(
                n > 9 * MIB as u64 && n <= 10 * MIB as u64,
                "spliced={n}: {lines:#?}"
            );
        } else {
            assert_eq!(n, 0, "{lines:#?}");
        }
        assert_eq!(spliced(&lines, "/small"), 0, "{lines:#?}");
    }
    // Splicing every body, however small: a 3-byte body still arrives whole.
    let d = TempDir::new("splice-tiny");
    let srv = start(backend, &d, up.addr, &["--proxy-splice-min", "1"]);
    let mut c = Client::new(srv.connect());
    for _ in 0..3 {
        let r = c.exchange(&req("GET", "/small", &[]));
        assert_eq!((r.status, &r.body[..]), (200, &b"abc"[..]));
    }
}

/// An upstream whose 4 MiB body stops after 1 MiB and closes: the client gets the head and
/// at most what arrived, then its connection closes (never a complete-looking response).
pub fn body_cut_short(backend: &str) {
    let part = random_bytes(MIB, 5);
    let mut reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    reply.extend_from_slice(&part);
    let up = Upstream::spawn(move |_, _| Action::ReplyClose(reply.clone()));
    let d = TempDir::new("splice-cut");
    let srv = start(backend, &d, up.addr, &[]);
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&req("GET", "/cut", &[])).unwrap();
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "no close after a cut body");
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {} bytes", got.len()),
        }
    }
    let head = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let body = &got[head..];
    assert!(body.len() <= MIB, "{} body bytes", body.len());
    assert_eq!(
        body,
        &part[..body.len()],
        "the bytes that came are the upstream's"
    );
    drop(s);
    let lines = log_lines(srv, &d);
    assert!(
        lines.iter().any(|l| l.contains("upstream_error=Cut")),
        "{lines:#?}"
    );
}

/// Resident memory of `pid`, bytes.
fn rss(pid: i32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A client that stops reading a 64 MiB body: the upstream is held back (it cannot write
/// much more than the kernel's socket buffers and the pipe hold) and ringd's memory stays
/// flat; once the client reads again, the body arrives whole.
pub fn slow_reader_backpressure(backend: &str) {
    const LEN: usize = 64 * MIB;
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (w, st) = (written.clone(), stop.clone());
    let upstream = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(64 * 1024);
        let mut head = [0u8; 4096];
        let mut n = 0;
        while find(&head[..n], b"\r\n\r\n").is_none() {
            n += s.read(&mut head[n..]).unwrap();
        }
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes())
            .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = LEN;
        while left > 0 && !st.load(Ordering::Relaxed) {
            let k = left.min(chunk.len());
            if s.write_all(&chunk[..k]).is_err() {
                return;
            }
            left -= k;
            w.fetch_add(k, Ordering::Relaxed);
        }
    });
    let d = TempDir::new("splice-slow");
    let srv = start(backend, &d, addr, &[]);
    let s = srv.connect();
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(64 * 1024);
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&req("GET", "/slow", &[])).unwrap();
    let mut tmp = vec![0u8; 65536];
    let mut got = Vec::new();
    while got.len() < MIB {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&tmp[..n]);
    }
    let read = got.len();
    let base = rss(srv.pid());
    thread::sleep(Duration::from_millis(1500));
    let ahead = written.load(Ordering::Relaxed).saturating_sub(read);
    let grew = rss(srv.pid()).saturating_sub(base);
    // Loopback socket buffers (the upstream's send side, ringd's receive and send sides, the
    // client's receive side) hold a few MiB; without backpressure the upstream would be done.
    assert!(
        ahead < 24 * MIB,
        "the upstream wrote {ahead} bytes ahead of a stalled client"
    );
    assert!(grew < 16 * MIB, "ringd grew by {grew} bytes");
    eprintln!("slow reader ({backend}): upstream {ahead} bytes ahead, ringd RSS +{grew} bytes");
    // Reading again: the rest arrives.
    let head = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert!(got[head..].iter().all(|&b| b == b'x'));
    let mut body = got.len() - head;
    while body < LEN {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "EOF after {body} of {LEN}");
        assert!(tmp[..n].iter().all(|&b| b == b'x'));
        body += n;
    }
    assert_eq!(body, LEN);
    stop.store(true, Ordering::Relaxed);
    let _ = upstream.join();
    drop(s);
    let lines = log_lines(srv, &d);
    let n = spliced(&lines, "/slow");
    assert_eq!(n > 0, splices(backend), "spliced={n}: {lines:#?}");
}

/// A tunnel (after 101) carrying 2 MB each way at once: the upstream echoes every byte; the
/// upstream → client direction goes by splice where the backend can.
pub fn tunnel_two_megabytes_each_way(backend: &str) {
    const LEN: usize = 2_000_000;
    let stop = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let st = stop.clone();
    let upstream = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 65536];
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&tmp[..n]);
        }
        let rest = buf[find(&buf, b"\r\n\r\n").unwrap() + 4..].to_vec();
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        s.write_all(&rest).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while !st.load(Ordering::Relaxed) {
            match s.read(&mut tmp) {
                Ok(0) => return,
                Ok(n) => {
                    if s.write_all(&tmp[..n]).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    });
    let d = TempDir::new("splice-tunnel");
    let srv = start(backend, &d, addr, &[]);
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /t HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut tmp = vec![0u8; 65536];
    while find(&got, b"\r\n\r\n").is_none() {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "EOF before the 101");
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    got.drain(..find(&got, b"\r\n\r\n").unwrap() + 4);
    let data = Arc::new(random_bytes(LEN, 77));
    let (mut w, dd) = (s.try_clone().unwrap(), data.clone());
    let writer = thread::spawn(move || {
        for c in dd.chunks(100_000) {
            w.write_all(c).unwrap();
        }
    });
    while got.len() < LEN {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "EOF after {} of {LEN} echoed bytes", got.len());
        got.extend_from_slice(&tmp[..n]);
    }
    writer.join().unwrap();
    assert!(got == *data, "the echo differs");
    drop(s);
    stop.store(true, Ordering::Relaxed);
    let _ = upstream.join();
    // The tunnel ends (the client left) and is logged.
    thread::sleep(Duration::from_millis(200));
    let lines = log_lines(srv, &d);
    let n = spliced(&lines, "/t");
    if splices(backend) {
        assert!(n > LEN as u64 / 2, "spliced={n}: {lines:#?}");
    } else {
        assert_eq!(n, 0, "{lines:#?}");
    }
    let n = field(&lines, "GET", "/t", "spliced_up=");
    if splices_up(backend) {
        assert!(n > LEN as u64 / 2, "spliced_up={n}: {lines:#?}");
    } else {
        assert_eq!(n, 0, "{lines:#?}");
    }
}

/// A 10 MiB request body streamed to the upstream (`buffer_requests = false`) arrives whole,
/// client → pipe → upstream where the backend splices that direction; a 3-byte one too.
pub fn request_bodies_streamed(backend: &str) {
    let up = Upstream::spawn(|r, _| {
        let head = find(r, b"\r\n\r\n").unwrap() + 4;
        let body = &r[head..];
        let sum = body.iter().fold(0u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Action::Reply(ok(format!("{} {sum:x}", body.len()).as_bytes()))
    });
    let d = TempDir::new("splice-up");
    let srv = start_conf(
        backend,
        &d,
        up.addr,
        "buffer_requests = false",
        &["--max-body", "16MiB"],
    );
    let big = random_bytes(10 * MIB, 9);
    let sum = big.iter().fold(0u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut c = Client::new(srv.connect());
    let mut post = format!(
        "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    post.extend_from_slice(&big);
    let r = c.exchange(&post);
    assert_eq!(r.status, 200, "{}", srv.diagnostics());
    assert_eq!(r.body_str(), format!("{} {sum:x}", big.len()));
    let r = c.exchange(b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 200);
    assert!(r.body_str().starts_with("3 "), "{}", r.body_str());
    drop(c);
    let lines = log_lines(srv, &d);
    let n = field(&lines, "POST", "/big", "spliced_up=");
    if splices_up(backend) {
        assert!(n > 9 * MIB as u64, "spliced_up={n}: {lines:#?}");
    } else {
        assert_eq!(n, 0, "{lines:#?}");
    }
    assert_eq!(field(&lines, "POST", "/small", "spliced_up="), 0);
}

/// With one pipe per worker (`--pipe-pool 1`), two 10 MiB bodies at once: one splices, the
/// other finds no pipe free and is copied; both arrive whole.
pub fn no_pipe_free_falls_back_to_copying(backend: &str) {
    let big = Arc::new(random_bytes(10 * MIB, 3));
    let b = big.clone();
    let up = Upstream::spawn(move |_, _| Action::Reply(ok(&b)));
    let d = TempDir::new("splice-pool");
    let srv = start(
        backend,
        &d,
        up.addr,
        &["--pipe-pool", "1", "--workers", "1"],
    );
    let addr = srv.addr();
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let addr = addr.clone();
            let big = big.clone();
            thread::spawn(move || {
                let mut c = Client::new(std::net::TcpStream::connect(&addr).unwrap());
                c.set_timeout(Duration::from_secs(20));
                c.throttle = Some((256 * 1024, Duration::from_millis(5)));
                let r = c.exchange(&req("GET", &format!("/p{i}"), &[]));
                assert_eq!(r.status, 200);
                assert!(r.body == *big, "body {i} differs ({} bytes)", r.body.len());
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let lines = log_lines(srv, &d);
    let n: Vec<u64> = ["/p0", "/p1"].iter().map(|t| spliced(&lines, t)).collect();
    if splices(backend) {
        assert!(n.iter().any(|&n| n > 0), "neither spliced: {lines:#?}");
    }
}

/// An HTTPS client's 10 MiB proxied body goes through rustls, never the pipe: it arrives
/// whole and the log says nothing was spliced.
pub fn tls_clients_are_never_spliced(backend: &str) {
    use crate::tls::{client_config, connect, read_resp, Pki};
    let big = Arc::new(random_bytes(10 * MIB, 21));
    let b = big.clone();
    let up = Upstream::spawn(move |_, _| Action::Reply(ok(&b)));
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"]);
    let d = TempDir::new("splice-tls");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let srv = start(
        backend,
        &d,
        up.addr,
        &["--tls-cert", cert, "--tls-key", key],
    );
    let cfg = client_config(&pki.ca, &[&rustls::version::TLS13]);
    let mut s = connect(&srv.addr(), &cfg, "localhost").unwrap();
    s.write_all(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_resp(&mut s, &mut buf).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == *big, "body differs ({} bytes)", r.body.len());
    drop(s);
    let lines = log_lines(srv, &d);
    assert_eq!(spliced(&lines, "/tls"), 0, "{lines:#?}");
}

/// `read_timeout` is the time between two reads from the upstream while ringd wants to read
/// (nginx's `proxy_read_timeout`), not a limit on a slow client: a client that pauses for
/// longer than it, while the upstream has long sent the whole body, gets the whole body, by
/// splice and by copy (with a response buffer smaller than the body, so the copy path holds
/// the upstream back). Before the fix the paused response was cut after `read_timeout`.
pub fn slow_client_is_no_upstream_timeout(backend: &str) {
    const LEN: usize = 2 * MIB;
    // The second splice run uses a 4 KiB pipe, below the 64 KiB response buffer: ringd is then
    // held back by a full pipe, not by its buffer (seen once in a full suite run with the
    // default 256 KiB pipe, whose slots ran out with less than 64 KiB in it).
    for (splice, small_pipe) in [(true, false), (true, true), (false, false)] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let upstream = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = [0u8; 4096];
            let mut n = 0;
            while find(&head[..n], b"\r\n\r\n").is_none() {
                n += s.read(&mut head[n..]).unwrap();
            }
            let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
            resp.extend(std::iter::repeat_n(b'y', LEN));
            let _ = s.write_all(&resp);
            // Keep the connection open (an upstream that is done, not one that went away).
            let _ = s.read(&mut head);
        });
        let d = TempDir::new("slow-client-timeout");
        let extra: &[&str] = match (splice, small_pipe) {
            (true, false) => &[],
            (true, true) => &["--pipe-size", "4K"],
            (false, _) => &["--proxy-splice-min", "0"],
        };
        let srv = start_conf(
            backend,
            &d,
            addr,
            "read_timeout = \"1s\"\nbuffer_responses = \"64KiB\"",
            extra,
        );
        let s = srv.connect();
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(64 * 1024);
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&req("GET", "/paused", &[])).unwrap();
        let mut tmp = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        let mut pauses = 0;
        let head_len = loop {
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "EOF in the head");
            got.extend_from_slice(&tmp[..n]);
            if let Some(h) = find(&got, b"\r\n\r\n") {
                break h + 4;
            }
        };
        let started = Instant::now();
        while got.len() - head_len < LEN {
            // Three pauses of 1.5 s each (longer than read_timeout) along the way.
            if pauses < 3 && got.len() - head_len >= (pauses + 1) * LEN / 4 {
                thread::sleep(Duration::from_millis(1500));
                pauses += 1;
            }
            let n = s.read(&mut tmp).unwrap();
            assert!(
                n > 0,
                "{backend} splice={splice} small_pipe={small_pipe}: cut after {} of {LEN} body bytes ({:?}, {pauses} pauses)",
                got.len() - head_len,
                started.elapsed()
            );
            got.extend_from_slice(&tmp[..n]);
        }
        assert_eq!(got.len() - head_len, LEN);
        assert!(got[head_len..].iter().all(|&b| b == b'y'));
        assert_eq!(pauses, 3);
        drop(s);
        let lines = log_lines(srv, &d);
        assert_eq!(
            spliced(&lines, "/paused") > 0,
            splice && splices(backend),
            "{lines:#?}"
        );
        let _ = upstream.join();
    }
}

/// CPU time (ns, /proc/PID/task/TID/schedstat) of each of `pid`'s io-wq threads, by TID;
/// None when the kernel keeps no schedstat.
fn iowq_runtime(pid: i32) -> Option<std::collections::HashMap<String, u64>> {
    let mut out = std::collections::HashMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if !comm.starts_with("iou-wrk") {
            continue;
        }
        let ns = std::fs::read_to_string(t.join("schedstat")).ok()?;
        let ns = ns.split_whitespace().next()?.parse().ok()?;
        out.insert(t.file_name().unwrap().to_string_lossy().into_owned(), ns);
    }
    Some(out)
}

/// On uring, every splice runs in the worker thread: a direct non-blocking splice(2) after a
/// readiness completion. As an io_uring op the kernel would always run it in an io-wq thread
/// (`iou-wrk-*`), which cost 70% of ringd's CPU in proxy-large. While a 10 MiB file from the
/// page cache and a 10 MiB proxied body each way go through, ringd's io-wq threads (if any)
/// use next to no CPU: the old io-wq splices took several milliseconds for this here.
pub fn uring_splices_in_the_worker() {
    let big = Arc::new(random_bytes(10 * MIB, 21));
    let b = big.clone();
    let up = Upstream::spawn(move |r, _| {
        if r.starts_with(b"POST") {
            let head = find(r, b"\r\n\r\n").unwrap() + 4;
            Action::Reply(ok(format!("{}", r.len() - head).as_bytes()))
        } else {
            Action::Reply(ok(&b))
        }
    });
    let d = TempDir::new("splice-worker");
    d.write("www/f.bin", &big);
    let up_addr = up.addr.to_string();
    let srv = ServerBuilder::new("uring", &d.path().join("www"))
        .workers(1)
        .args(&["--proxy", &up_addr, "--max-body", "16MiB"])
        .start();
    let mut c = Client::new(srv.connect());
    // The file twice: the first fetch may open it through io-wq (a cold dentry); the check
    // is on what follows.
    let r = c.exchange(&req("GET", "/f.bin", &[]));
    assert!(r.status == 200 && r.body == *big, "{}", srv.diagnostics());
    let Some(before) = iowq_runtime(srv.pid()) else {
        eprintln!("skipped: no /proc/PID/task/TID/schedstat on this kernel");
        return;
    };
    let r = c.exchange(&req("GET", "/f.bin", &[]));
    assert!(r.status == 200 && r.body == *big, "{}", srv.diagnostics());
    let r = c.exchange(&req("GET", "/proxied", &[]));
    assert!(r.status == 200 && r.body == *big, "{}", srv.diagnostics());
    let mut post = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    post.extend_from_slice(&big);
    let r = c.exchange(&post);
    assert_eq!((r.status, r.body_str()), (200, format!("{}", big.len())));
    let after = iowq_runtime(srv.pid()).unwrap();
    let used: u64 = after
        .iter()
        .map(|(tid, ns)| ns - before.get(tid).copied().unwrap_or(0))
        .sum();
    // An idle io-wq thread's timeout wakeups cost microseconds.
    assert!(
        used < 1_000_000,
        "io-wq threads used {used} ns (before {before:?}, after {after:?})"
    );
    // Pages not in the page cache are spliced in an io-wq thread (a direct splice would wait
    // for the disk in the worker): the file, evicted, still arrives whole.
    let f = std::fs::File::open(d.path().join("www/f.bin")).unwrap();
    f.sync_all().unwrap(); // DONTNEED drops clean pages only
                           // SAFETY: fadvise on an open fd has no memory effects.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    let r = c.exchange(&req("GET", "/f.bin", &[]));
    assert!(r.status == 200 && r.body == *big, "{}", srv.diagnostics());
    // ... and io-wq did that work (tmpfs keeps its pages, so there it never goes cold).
    let cold = iowq_runtime(srv.pid()).unwrap();
    let used_cold: u64 = cold
        .iter()
        .map(|(tid, ns)| ns - after.get(tid).copied().unwrap_or(0))
        .sum();
    // SAFETY: statfs is plain integers, for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs into `st`, a live local; `f` is open.
    let tmpfs = unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(&f), &mut st) } == 0
        && st.f_type == libc::TMPFS_MAGIC;
    assert!(
        tmpfs || used_cold > 0,
        "the cold file never went through io-wq"
    );
}

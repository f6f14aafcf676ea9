//! `Connection: Upgrade` through the proxy (issue 12): a request that asks to upgrade is
//! forwarded with its `Upgrade` field, and only an upstream's 101 turns the connection into a
//! two-way tunnel. The upstream here is a real socket server on loopback that speaks just
//! enough of a WebSocket-like protocol: on `Upgrade: websocket` it answers 101 plus a greeting
//! in the same write, then echoes every byte upper-cased and closes on `quit`; any other
//! request gets an ordinary 200 on a keep-alive connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::harness::{Server, ServerBuilder, TempDir};
use crate::http::{find, Client};

/// A test server on 127.0.0.1 running `handler` on a thread per connection; stops (and
/// joins) on drop.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn spawn(handler: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> TestServer {
        TestServer::spawn_on(TcpListener::bind("127.0.0.1:0").unwrap(), handler)
    }

    fn spawn_on(
        l: TcpListener,
        handler: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> TestServer {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let st = stop.clone();
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (h, st) = (handler.clone(), st.clone());
                        workers.push(thread::spawn(move || h(s, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One read into `buf` (a 50 ms read timeout is set on `s`): false at EOF or on an error.
fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The WebSocket-like upstream: every request head received, in order.
struct WsUpstream {
    server: TestServer,
    heads: Arc<Mutex<Vec<String>>>,
}

impl WsUpstream {
    fn spawn() -> WsUpstream {
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let h = heads.clone();
        let server = TestServer::spawn(move |s, stop| ws_serve(s, &h, stop));
        WsUpstream { server, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn ws_serve(mut s: TcpStream, heads: &Mutex<Vec<String>>, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = Vec::new();
    let mut tunnel = false;
    while !stop.load(Ordering::Relaxed) {
        if tunnel {
            if !buf.is_empty() {
                let data = std::mem::take(&mut buf);
                let quit = find(&data, b"quit").is_some();
                if s.write_all(&data.to_ascii_uppercase()).is_err() || quit {
                    return;
                }
            }
        } else if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            heads.lock().unwrap().push(head.clone());
            let lower = head.to_ascii_lowercase();
            if lower.contains("\r\nupgrade: websocket\r\n") {
                tunnel = true;
                let reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhi!";
                if s.write_all(reply).is_err() {
                    return;
                }
            } else if s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nno upgrade\n")
                .is_err()
            {
                return;
            }
            continue;
        }
        if !read_more(&mut s, &mut buf) {
            return;
        }
    }
}

/// ringd on `backend` with the config `conf` (written as `name` in `d`) and a `www/` root.
fn start_with(backend: &str, d: &TempDir, name: &str, conf: &str, args: &[&str]) -> Server {
    d.write(name, conf.as_bytes());
    d.write("www/index.html", b"static\n");
    ServerBuilder::new(backend, d.path())
        .config(&d.path().join(name))
        .args(args)
        .start()
}

fn start(backend: &str, d: &TempDir, up: &WsUpstream) -> Server {
    let conf = format!(
        r#"
[upstreams.ws]
servers = ["{}"]
read_timeout = "2s"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/ws/*"
  proxy = {{ upstream = "ws" }}
"#,
        up.server.addr
    );
    start_with(backend, d, "t.toml", &conf, &[])
}

const UPGRADE: &[u8] = b"GET /ws/chat HTTP/1.1\r\nHost: t.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads from `s` until `want` has arrived (or panics after a few seconds).
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) {
    let end = Instant::now() + Duration::from_secs(5);
    let mut tmp = [0u8; 65536];
    while find(got, want).is_none() {
        assert!(
            Instant::now() < end,
            "timed out waiting for {:?}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got[got.len().saturating_sub(200)..])
        );
        match s.read(&mut tmp) {
            Ok(0) => panic!(
                "EOF waiting for {:?}; got {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(got)
            ),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until EOF; true when it came within `limit`.
fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut tmp = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut tmp) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

pub fn websocket_tunnel(backend: &str) {
    let up = WsUpstream::spawn();
    let d = TempDir::new("tunnel");
    let srv = start(backend, &d, &up);

    // 1. The upgrade, with bytes the client sent before the 101 (they belong to the tunnel).
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut first = UPGRADE.to_vec();
    first.extend_from_slice(b"early");
    s.write_all(&first).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"EARLY");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101 "),
        "{backend}: expected a 101, got {text:?}"
    );
    let head_end = find(&got, b"\r\n\r\n").unwrap() + 4;
    let head = text[..head_end].to_ascii_lowercase();
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-accept: "), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(&got[head_end..], b"hi!EARLY", "{backend}: tunnel bytes");
    // The upstream saw the upgrade asked for, end-to-end fields kept, hop-by-hop ones not.
    let uh = up.heads()[0].to_ascii_lowercase();
    assert!(uh.contains("\r\nupgrade: websocket\r\n"), "{uh}");
    assert!(uh.contains("\r\nconnection: upgrade\r\n"), "{uh}");
    assert!(!uh.contains("keep-alive"), "{uh}");
    assert!(uh.contains("\r\nsec-websocket-key: "), "{uh}");

    // 2. Both ways, many times, then a large transfer each way at once (backpressure).
    for i in 0..20 {
        let msg = format!("ping{i};");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = Vec::new();
        read_until(&mut s, &mut got, msg.to_ascii_uppercase().as_bytes());
    }
    let big: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let big2 = big.clone();
    let writer = thread::spawn(move || w.write_all(&big2).is_ok());
    let mut echoed = Vec::with_capacity(big.len());
    let end = Instant::now() + Duration::from_secs(20);
    let mut tmp = [0u8; 65536];
    while echoed.len() < big.len() && Instant::now() < end {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => echoed.extend_from_slice(&tmp[..n]),
            Err(_) => {}
        }
    }
    assert!(
        writer.join().unwrap(),
        "{backend}: writing 2 MB into the tunnel"
    );
    assert_eq!(echoed.len(), big.len(), "{backend}: 2 MB echoed");
    assert!(
        echoed == big.to_ascii_uppercase(),
        "{backend}: tunnel bytes changed"
    );

    // 3. The upstream closes: the client connection closes too.
    s.write_all(b"quit").unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"QUIT");
    assert!(
        closes_within(&mut s, Duration::from_secs(3)),
        "{backend}: upstream closed, client still open"
    );

    // 4. The client closes its side: ringd closes both.
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"hi!");
    s.write_all(b"bye").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_until(&mut s, &mut got, b"BYE");
    assert!(
        closes_within(&mut s, Duration::from_secs(3)),
        "{backend}: client half-closed, tunnel still open"
    );

    // 5. An idle tunnel ends after read_timeout (2 s here).
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"hi!");
    let t0 = Instant::now();
    assert!(
        closes_within(&mut s, Duration::from_secs(6)),
        "{backend}: idle tunnel never closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "closed too early"
    );

    // 6. An upgrade the upstream declines is an ordinary response, and the connection
    //    serves further requests.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(
        b"GET /ws/x HTTP/1.1\r\nHost: t.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{backend}");
    assert_eq!(r.body_str(), "no upgrade\n");
    let r = c.exchange(b"GET /index.html HTTP/1.1\r\nHost: t.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "static\n");

    // 7. HTTP/1.0 cannot upgrade: the upstream sees no Upgrade field.
    let n = up.heads().len();
    let mut c = Client::new(srv.connect());
    let r = c.exchange(
        b"GET /ws/y HTTP/1.0\r\nHost: t.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{backend}");
    let uh = up.heads()[n].to_ascii_lowercase();
    assert!(!uh.contains("upgrade"), "{uh}");

    // 8. A static route ignores Upgrade.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(
        b"GET /index.html HTTP/1.1\r\nHost: t.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "static\n");
}

/// Every complete request an upstream received: (head, raw body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An upstream for streamed bodies: notes each request head the moment it arrives (before the
/// body), reads a Content-Length or chunked body, and answers with the body's raw length.
struct BodyUpstream {
    server: TestServer,
    heads_seen: Arc<std::sync::atomic::AtomicUsize>,
    /// (head, raw body) of every complete request.
    reqs: Received,
}

impl BodyUpstream {
    fn spawn() -> BodyUpstream {
        let heads_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reqs: Received = Arc::default();
        let (h, r) = (heads_seen.clone(), reqs.clone());
        let server = TestServer::spawn(move |s, stop| body_serve(s, &h, &r, stop, Duration::ZERO));
        BodyUpstream {
            server,
            heads_seen,
            reqs,
        }
    }

    /// One that reads slowly: a 16 KiB receive buffer (so TCP's window stays small), a pause
    /// after each request head before it reads the body, and 1 ms after every read.
    fn spawn_slow(pause: Duration) -> BodyUpstream {
        let heads_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reqs: Received = Arc::default();
        let (h, r) = (heads_seen.clone(), reqs.clone());
        let l = crate::harness::small_rcvbuf_listener(16 * 1024);
        let server = TestServer::spawn_on(l, move |s, stop| body_serve(s, &h, &r, stop, pause));
        BodyUpstream {
            server,
            heads_seen,
            reqs,
        }
    }
}

fn body_serve(
    mut s: TcpStream,
    seen: &std::sync::atomic::AtomicUsize,
    reqs: &Mutex<Vec<(String, Vec<u8>)>>,
    stop: &AtomicBool,
    pause: Duration,
) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = Vec::new();
    let mut head: Option<(String, usize)> = None;
    while !stop.load(Ordering::Relaxed) {
        if head.is_none() {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let h = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                buf.drain(..end + 4);
                seen.fetch_add(1, Ordering::SeqCst);
                head = Some((h, 0));
                thread::sleep(pause);
            }
        }
        if let Some((h, _)) = &head {
            let lower = h.to_ascii_lowercase();
            let end = if let Some(i) = lower.find("\r\ncontent-length: ") {
                let v = &lower[i + 18..];
                let n: usize = v[..v.find("\r\n").unwrap()].trim().parse().unwrap();
                (buf.len() >= n).then_some(n)
            } else if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
                find(&buf, b"\r\n0\r\n\r\n")
                    .map(|i| i + 7)
                    .or_else(|| buf.starts_with(b"0\r\n\r\n").then_some(5))
            } else {
                Some(0)
            };
            if let Some(n) = end {
                let body: Vec<u8> = buf.drain(..n).collect();
                let len = body.len().to_string();
                reqs.lock().unwrap().push((h.clone(), body));
                head = None;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{len}",
                    len.len()
                );
                if s.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        }
        if !read_more(&mut s, &mut buf) {
            return;
        }
        if !pause.is_zero() {
            // The slow one: a reader that never quite keeps up.
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `buffer_requests = false`: a request body goes to the upstream as it arrives (the upstream
/// sees the head before the client has sent the body), re-framed (Content-Length kept, chunked
/// bodies re-chunked), with `Expect: 100-continue` answered by ringd; a body that breaks off
/// is a 400 and closes both connections; the connection serves on after a streamed request.
pub fn streamed_request_bodies(backend: &str) {
    let up = BodyUpstream::spawn();
    let d = TempDir::new("stream-body");
    let conf = format!(
        r#"
[upstreams.app]
servers = ["{}"]
buffer_requests = false
read_timeout = "3s"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"
  [[sites.routes]]
  path = "/up/*"
  proxy = {{ upstream = "app" }}
"#,
        up.server.addr
    );
    let srv = start_with(backend, &d, "b.toml", &conf, &["--max-body", "8MiB"]);

    // 1. Content-Length: the upstream has the head while half the body is still unsent.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let head = format!(
        "POST /up/a HTTP/1.1\r\nHost: t.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..1000]).unwrap();
    let t0 = Instant::now();
    while up.heads_seen.load(Ordering::SeqCst) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{backend}: the upstream never saw the head while the body was unfinished (buffered?)"
        );
        thread::sleep(Duration::from_millis(10));
    }
    s.write_all(&body[1000..]).unwrap();
    let mut c = Client::new(s);
    c.set_timeout(Duration::from_secs(10));
    let r = c
        .read_response(false)
        .expect("response to the streamed POST");
    assert_eq!((r.status, r.body_str()), (200, body.len().to_string()));
    {
        let reqs = up.reqs.lock().unwrap();
        let (h, b) = &reqs[0];
        assert!(
            h.to_ascii_lowercase()
                .contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{h}"
        );
        assert!(b == &body, "{backend}: body changed on the way");
    }
    // The same connection goes on.
    let r = c.exchange(b"GET /index.html HTTP/1.1\r\nHost: t.test\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "static\n"));

    // 2. Chunked, with Expect: 100-continue: ringd says 100, the upstream gets it re-chunked.
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(b"POST /up/b HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"HTTP/1.1 100 Continue\r\n\r\n");
    let mut sent = Vec::new();
    for i in 0..50 {
        let piece = format!("piece-{i:03};").repeat(100);
        sent.extend_from_slice(piece.as_bytes());
        s.write_all(format!("{:x};ext=1\r\n{piece}\r\n", piece.len()).as_bytes())
            .unwrap();
    }
    s.write_all(b"0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let mut c = Client::new(s);
    c.set_timeout(Duration::from_secs(10));
    let r = c
        .read_response(false)
        .expect("response to the chunked POST");
    assert_eq!(r.status, 200, "{backend}");
    {
        let reqs = up.reqs.lock().unwrap();
        let (h, raw) = reqs.last().unwrap();
        let lower = h.to_ascii_lowercase();
        assert!(lower.contains("\r\ntransfer-encoding: chunked\r\n"), "{h}");
        assert!(!lower.contains("expect"), "{h}");
        // Decode what the upstream received.
        let mut decoded = Vec::new();
        let mut rest = &raw[..];
        loop {
            let nl = find(rest, b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16)
                .expect("a plain hex chunk size");
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
        assert!(decoded == sent, "{backend}: chunked body changed");
    }

    // 3. A body that breaks off (a bad chunk size) is a 400, and the connection closes.
    let before = up.reqs.lock().unwrap().len();
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(
        b"POST /up/c HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"\r\n\r\n");
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{backend}: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closes_within(&mut s, Duration::from_secs(3)), "{backend}");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.reqs.lock().unwrap().len(),
        before,
        "{backend}: the upstream took a broken body as a request"
    );
}

/// A streamed Content-Length body that goes by splice (client → pipe → upstream) to an
/// upstream slower than the client: the body outgrows ringd's socket buffer toward it (4 MiB
/// at most), so the pipe still holds bytes when the rest of the body falls below
/// `proxy_splice_min` and is read instead. Those bytes go after the pipe's, never before: they
/// went before, on uring and epoll, until the session stopped reading while the pipe held
/// bytes (seen once in CI as a changed body in `streamed_request_bodies`).
pub fn streamed_body_to_slow_upstream(backend: &str) {
    let up = BodyUpstream::spawn_slow(Duration::from_millis(300));
    let d = TempDir::new("stream-slow");
    let conf = format!(
        r#"
[upstreams.app]
servers = ["{}"]
buffer_requests = false
read_timeout = "10s"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"
  [[sites.routes]]
  path = "/up/*"
  proxy = {{ upstream = "app" }}
"#,
        up.server.addr
    );
    let srv = start_with(backend, &d, "s.toml", &conf, &["--max-body", "32MiB"]);
    // The body's tail (below the 64 KiB splice minimum) comes a moment after the rest.
    for (round, tail) in [40_000usize, 1_000, 63_000, 20_000].into_iter().enumerate() {
        let len = 9_000_000 + 77_777 * round;
        let body: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let s = srv.connect();
        let mut w = s.try_clone().unwrap();
        let head =
            format!("POST /up/{round} HTTP/1.1\r\nHost: t.test\r\nContent-Length: {len}\r\n\r\n");
        let sent = body.clone();
        let writer = thread::spawn(move || {
            w.write_all(head.as_bytes())?;
            w.write_all(&sent[..len - tail])?;
            thread::sleep(Duration::from_millis(2));
            w.write_all(&sent[len - tail..])
        });
        let mut c = Client::new(s);
        c.set_timeout(Duration::from_secs(20));
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("{backend} round {round}: {e:?}\n{}", srv.diagnostics()));
        writer.join().unwrap().unwrap();
        assert_eq!(
            (r.status, r.body_str()),
            (200, len.to_string()),
            "{backend}"
        );
        let reqs = up.reqs.lock().unwrap();
        let (_, got) = reqs.last().unwrap();
        if got != &body {
            let at = got.iter().zip(&body).position(|(a, b)| a != b);
            panic!(
                "{backend} round {round}: the body changed on the way (lengths {} and {len}, first \
                 difference at {at:?})",
                got.len()
            );
        }
    }
}

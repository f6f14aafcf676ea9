//! The reverse proxy (issue 12) against real upstreams: scripted misbehaving servers on
//! loopback (each a thread with its own listener, recording every byte it received), and a real
//! gunicorn where one is installed. Every case runs on every backend.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::harness::{Server, ServerBuilder, Skip, TempDir};
use crate::http::{find, Client};

/// What a scripted upstream does with one request (its raw bytes) on a connection: the bytes
/// to answer, and whether to close the connection afterwards.
type Script = dyn Fn(&[u8], usize) -> Action + Send + Sync;

pub enum Action {
    /// Write these bytes; keep the connection for more requests.
    Reply(Vec<u8>),
    /// Write these bytes, then close.
    ReplyClose(Vec<u8>),
    /// Write these bytes, then reset the connection (SO_LINGER 0).
    ReplyReset(Vec<u8>),
    /// Say nothing until the test ends.
    Hang,
    /// Write the pieces with a pause before each.
    Slow(Vec<Vec<u8>>, Duration),
}

/// A scripted upstream on 127.0.0.1; stops (and joins) on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Every request received, raw (head and body), in arrival order.
    pub requests: Arc<Mutex<Vec<Vec<u8>>>>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn spawn(script: impl Fn(&[u8], usize) -> Action + Send + Sync + 'static) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (r, c, st) = (requests.clone(), connections.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let (r, st, script) = (r.clone(), st.clone(), script.clone());
                        workers.push(thread::spawn(move || serve(s, &r, &st, &*script)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Upstream {
            addr,
            requests,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The end of one request in `buf` (head, plus a Content-Length or chunked body), if complete.
fn request_end(buf: &[u8]) -> Option<usize> {
    let head = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if let Some(i) = text.find("\r\ncontent-length:") {
        let v = &text[i + 17..];
        let n: usize = v[..v.find("\r\n")?].trim().parse().ok()?;
        return (buf.len() >= head + n).then_some(head + n);
    }
    if text.contains("\r\ntransfer-encoding: chunked") {
        return find(&buf[head..], b"0\r\n\r\n").map(|i| head + i + 5);
    }
    Some(head)
}

fn serve(mut s: TcpStream, reqs: &Mutex<Vec<Vec<u8>>>, stop: &AtomicBool, script: &Script) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut n_on_conn = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(end) = request_end(&buf) {
            let req: Vec<u8> = buf.drain(..end).collect();
            reqs.lock().unwrap().push(req.clone());
            n_on_conn += 1;
            match script(&req, n_on_conn) {
                Action::Reply(b) => {
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
                Action::ReplyClose(b) => {
                    let _ = s.write_all(&b);
                    return;
                }
                Action::ReplyReset(b) => {
                    let _ = s.write_all(&b);
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    return;
                }
                Action::Hang => {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
                Action::Slow(pieces, pause) => {
                    for p in pieces {
                        thread::sleep(pause);
                        if s.write_all(&p).is_err() {
                            return;
                        }
                    }
                }
            }
            continue;
        }
        match s.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A 200 with `body` and Content-Length.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: yes\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// An upstream that answers each request with the request's own bytes as the body.
fn echo() -> Upstream {
    Upstream::spawn(|req, _| Action::Reply(ok(req)))
}

/// ringd on `backend` with `config` (a TOML body; `{UP}` is replaced by `ups[0]`, `{UP2}`
/// by `ups[1]`).
fn start(backend: &str, dir: &TempDir, config: &str, ups: &[&Upstream]) -> Server {
    let mut text = config.to_string();
    for (i, u) in ups.iter().enumerate() {
        let key = if i == 0 {
            "{UP}".to_string()
        } else {
            format!("{{UP{}}}", i + 1)
        };
        text = text.replace(&key, &u.addr.to_string());
    }
    dir.write("p.toml", text.as_bytes());
    dir.write("www/static.txt", b"static file\n");
    ServerBuilder::new(backend, dir.path())
        .config(&dir.path().join("p.toml"))
        .args(&[
            "--access-log",
            dir.path().join("access.log").to_str().unwrap(),
        ])
        .start()
}

const BASIC: &str = r#"
trusted_proxies = ["10.0.0.0/8"]

[upstreams.app]
servers = ["{UP}"]
read_timeout = "1s"
connect_timeout = "1s"
max_fails = 0          # the misbehaving cases must not take the one server out

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/api/*"
  proxy = { upstream = "app", strip_prefix = "/api", headers = { set = { "X-Env" = "prod" }, remove = ["Cookie"] } }

  [[sites.routes]]
  path = "/app/*"
  proxy = { upstream = "app" }
"#;

/// Request rebuilding: hop-by-hop fields gone, forwarding fields set, bodies re-framed, the
/// route's prefix stripped and headers applied; static files still served beside the proxy.
pub fn forwarding_rules(backend: &str) {
    let up = echo();
    let d = TempDir::new("proxy-rules");
    let srv = start(backend, &d, BASIC, &[&up]);
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(5));
    let r = c.exchange(b"GET /static.txt HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.body_str(), "static file\n");
    let r = c.exchange(
        b"GET /api/users?id=7 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nCookie: secret\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.header("x-up"),
        Some("yes"),
        "the upstream's fields come back"
    );
    let seen = r.body_str();
    assert!(seen.starts_with("GET /users?id=7 HTTP/1.1\r\n"), "{seen}");
    for gone in [
        "X-Hop",
        "Keep-Alive",
        "TE:",
        "Upgrade",
        "Proxy-Connection",
        "6.6.6.6",
        "Cookie",
        "Connection:",
    ] {
        assert!(!seen.contains(gone), "{gone} reached the upstream:\n{seen}");
    }
    for kept in [
        "Host: a.test:8080\r\n",
        "Accept: text/plain\r\n",
        "X-Forwarded-For: 127.0.0.1\r\n",
        "X-Forwarded-Proto: http\r\n",
        "X-Forwarded-Host: a.test:8080\r\n",
        "Forwarded: for=127.0.0.1;proto=http;host=\"a.test:8080\"\r\n",
        "Via: 1.1 ringd\r\n",
        "X-Env: prod\r\n",
    ] {
        assert!(seen.contains(kept), "{kept:?} missing:\n{seen}");
    }
    // A chunked request body goes upstream with a Content-Length.
    let r = c.exchange(
        b"POST /app/form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let seen = r.body_str();
    assert!(seen.contains("Content-Length: 11\r\n"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("transfer-encoding"),
        "{seen}"
    );
    assert!(seen.ends_with("\r\n\r\nhello world"), "{seen}");
    // Expect: 100-continue: ringd asks for the body, then forwards it.
    c.send(b"POST /app/e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.read_response(false).expect("100 Continue");
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.read_response(false).expect("final response");
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("\r\n\r\ndata"), "{}", r.body_str());
    assert!(!r.body_str().contains("Expect"), "{}", r.body_str());
    // One upstream connection served every request (pooled, most recently used first).
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        1,
        "upstream connections"
    );
    // The access log names the upstream.
    drop(c);
    drop(srv);
    let log = std::fs::read_to_string(d.path().join("access.log")).unwrap_or_default();
    let want = format!("upstream={} upstream_status=200", up.addr);
    assert!(log.contains(&want), "{log}");
}

/// Response framing: chunked and close-delimited upstream bodies to HTTP/1.1 (chunked) and
/// HTTP/1.0 (close-delimited) clients; HEAD, 204, 304 without bodies; interim responses.
pub fn response_framing(backend: &str) {
    let up = Upstream::spawn(|req, _| {
        let path = String::from_utf8_lossy(req)
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        match path.as_str() {
            "/app/chunked" => Action::Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nchun\r\n3;e=1\r\nked\r\n0\r\nX-T: 1\r\n\r\n".to_vec()),
            "/app/close" => Action::ReplyClose(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end".to_vec()),
            "/app/204" => Action::Reply(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec()),
            "/app/304" => Action::Reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec()),
            "/app/hints" => Action::Reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
            _ => Action::Reply(ok(b"hello")),
        }
    });
    let d = TempDir::new("proxy-framing");
    let srv = start(backend, &d, BASIC, &[&up]);
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /app/chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "chunked");
    assert!(r.has_token("transfer-encoding", "chunked"), "{}", r.head);
    let r = c.exchange(b"GET /app/close HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "until the end");
    assert!(
        r.has_token("transfer-encoding", "chunked"),
        "close-delimited → chunked: {}",
        r.head
    );
    assert!(!r.closes(), "the client connection stays open: {}", r.head);
    let r = c.exchange(b"GET /app/204 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none(), "{}", r.head);
    let r = c.exchange(b"GET /app/304 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 304);
    let r = c.exchange(b"HEAD /app/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("5"));
    c.send(b"GET /app/hints HTTP/1.1\r\nHost: a\r\n\r\n");
    let hint = c.read_response(false).unwrap();
    assert_eq!(hint.status, 103, "{}", hint.head);
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "ok"),
        "100 is never relayed"
    );
    // The connection kept working through all of them.
    let r = c.exchange(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "hello");
    // HTTP/1.0: close-delimited, no chunks; no interim responses.
    let mut c = Client::new(srv.connect());
    c.send(b"GET /app/chunked HTTP/1.0\r\n\r\n");
    let mut all = Vec::new();
    let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.stream.read_to_end(&mut all);
    let all = String::from_utf8_lossy(&all);
    assert!(all.ends_with("\r\n\r\nchunked"), "{all}");
    assert!(
        !all.to_ascii_lowercase().contains("transfer-encoding"),
        "{all}"
    );
    let mut c = Client::new(srv.connect());
    c.send(b"GET /app/hints HTTP/1.0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "HTTP/1.0 clients get no 1xx: {}", r.head);
}

/// Misbehaving upstreams: garbage, bad framing, resets mid-body, silence, slowness, refused
/// connections, idle connections closed under the pool. Each gets the right status or an
/// aborted response, and the next request is served.
pub fn misbehaving_upstreams(backend: &str) {
    let up = Upstream::spawn(|req, _| {
        let path = String::from_utf8_lossy(req)
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        match path.as_str() {
            "/app/garbage" => Action::ReplyClose(b"this is not http\r\n\r\n".to_vec()),
            "/app/two-cl" => Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec()),
            "/app/cl-te" => Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
            "/app/bad-chunk" => Action::Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
            "/app/folded" => Action::Reply(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n".to_vec()),
            "/app/huge-head" => {
                let mut v = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
                v.extend(std::iter::repeat_n(b'a', 80_000));
                v.extend_from_slice(b"\r\n\r\n");
                Action::ReplyClose(v)
            }
            "/app/reset-mid-body" => Action::ReplyReset(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial".to_vec()),
            "/app/cut-chunked" => Action::ReplyClose(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec()),
            "/app/hang" => Action::Hang,
            "/app/slow" => Action::Slow(vec![b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(), b"ngth: 4\r\n\r\nsl".to_vec(), b"ow".to_vec()], Duration::from_millis(200)),
            // Answers without `Connection: close`, then closes: ringd pools the connection.
            "/app/once" => Action::ReplyClose(ok(b"first")),
            _ => Action::Reply(ok(b"fine")),
        }
    });
    let d = TempDir::new("proxy-bad");
    let srv = start(backend, &d, BASIC, &[&up]);
    let get = |path: &str| {
        let mut c = Client::new(srv.connect());
        c.set_timeout(Duration::from_secs(5));
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        (c.read_response(false), c)
    };
    for (path, status) in [
        ("/app/garbage", 502),
        ("/app/two-cl", 502),
        ("/app/cl-te", 502),
        ("/app/folded", 502),
        ("/app/huge-head", 502),
    ] {
        let (r, _) = get(path);
        let r = r.unwrap_or_else(|e| panic!("{path}: {e}"));
        let shown: String = r.head.chars().take(300).collect();
        assert_eq!(r.status, status, "{path}: {shown}");
        assert!(
            r.body_str().contains("Bad Gateway"),
            "{path}: {}",
            r.body_str()
        );
    }
    // A body cut short: the client's response is aborted, never completed.
    for path in ["/app/reset-mid-body", "/app/cut-chunked", "/app/bad-chunk"] {
        let (r, mut c) = get(path);
        match r {
            Ok(r) if r.status == 200 => {
                panic!("{path}: a cut body arrived whole: {:?}", r.body_str())
            }
            Ok(r) if r.status == 502 && path == "/app/bad-chunk" => {}
            Ok(r) => panic!("{path}: {}", r.head),
            Err(_) => {
                assert!(
                    c.wait_close(Duration::from_secs(3)).is_ok(),
                    "{path}: left open"
                );
            }
        }
    }
    // Silence past read_timeout (1 s): 504, and the connection lives on.
    let t = Instant::now();
    let (r, mut c) = get("/app/hang");
    let r = r.unwrap();
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let r = c.exchange(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "fine");
    // Slow but within the timeout between reads: fine.
    let (r, _) = get("/app/slow");
    assert_eq!(r.unwrap().body_str(), "slow");
    // The upstream closes a connection that would go back to the pool: the next request on
    // it is detected (or retried on a new connection) and served.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /app/once HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "first");
    thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let r = c.exchange(b"GET /app/after HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.body_str(), "fine");
    }
}

/// Connect refused, retries and balancing: a dead server is skipped (idempotent or unsent
/// requests only), a POST is never sent twice, all servers dead → 502 then 503.
pub fn retries_and_balancing(backend: &str) {
    let a = Upstream::spawn(|_, _| Action::Reply(ok(b"A")));
    let b = Upstream::spawn(|_, _| Action::Reply(ok(b"B")));
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = TempDir::new("proxy-retry");
    let conf = format!(
        r#"
[upstreams.rr]
servers = ["{{UP}}", "{{UP2}} weight=2"]
[upstreams.withdead]
servers = ["{dead}", "{{UP}}"]
max_fails = 1
fail_timeout = "30s"
[upstreams.alldead]
servers = ["{dead}"]
max_fails = 1
[upstreams.hang]
servers = ["{{UP3}}", "{{UP}}"]
read_timeout = "500ms"
[[sites]]
hosts = ["_"]
  [[sites.routes]]
  path = "/rr"
  proxy = {{ upstream = "rr" }}
  [[sites.routes]]
  path = "/withdead"
  proxy = {{ upstream = "withdead" }}
  [[sites.routes]]
  path = "/alldead"
  proxy = {{ upstream = "alldead" }}
  [[sites.routes]]
  path = "/hang"
  proxy = {{ upstream = "hang" }}
"#
    );
    let hang = Upstream::spawn(|_, _| Action::Hang);
    let srv = start(backend, &d, &conf, &[&a, &b, &hang]);
    let mut c = Client::new(srv.connect());
    let mut got = String::new();
    for _ in 0..6 {
        got.push_str(
            &c.exchange(b"GET /rr HTTP/1.1\r\nHost: x\r\n\r\n")
                .body_str(),
        );
    }
    // Smooth weighted round robin (weight 1:2), per worker: over 6 requests on one connection
    // (one worker), exactly 2 A and 4 B.
    assert_eq!(got.matches('A').count(), 2, "{got}");
    assert_eq!(got.matches('B').count(), 4, "{got}");
    // The dead server is tried first (round robin), fails to connect, and the request goes on
    // to the live one; the dead one is then out (max_fails = 1).
    for _ in 0..3 {
        let r = c.exchange(b"POST /withdead HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(r.body_str(), "A", "{}", r.head);
    }
    // Every server refused: 502, then (out for fail_timeout) 503.
    let r = c.exchange(b"GET /alldead HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 502, "{}", r.head);
    let r = c.exchange(b"GET /alldead HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 503, "{}", r.head);
    // A POST that reached a server that then said nothing is not sent again: 504.
    let before = a.count();
    let r = c.exchange(b"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(r.status, 504, "{}", r.head);
    assert_eq!(a.count(), before, "the POST was sent twice");
    assert_eq!(hang.count(), 1);
    // A GET in the same spot is retried on the other server (the hung one is tried first
    // again: it has not failed max_fails = 3 times yet).
    let r = c.exchange(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "A"), "{}", r.head);
}

/// The core's smuggling vectors, sent through the proxy: the parser refuses them before any
/// byte reaches the upstream, and a body that looks like a request goes up as one request.
pub fn smuggling_never_reaches_upstream(backend: &str) {
    let up = echo();
    let d = TempDir::new("proxy-smuggle");
    let srv = start(backend, &d, BASIC, &[&up]);
    for bad in [
        &b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"GET /app/x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"POST /app/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = Client::new(srv.connect());
        let _ = c.try_send(bad);
        let r = c.read_response(false).expect("an answer");
        assert!(r.status >= 400, "{}: {}", String::from_utf8_lossy(bad), r.head);
        let _ = c.wait_close(Duration::from_secs(2));
    }
    assert_eq!(up.count(), 0, "a refused request reached the upstream");
    let mut c = Client::new(srv.connect());
    let r = c.exchange(
        b"POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /app/hidden HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1, "a body was read as a second request");
}

/// A proxying config leaves `auto` with the backend it picks without one (proxying used to
/// force epoll), and that backend forwards.
pub fn auto_keeps_its_choice() {
    let up = echo();
    let d = TempDir::new("proxy-auto");
    d.write("www/x", b"x");
    let www = d.path().join("www");
    let name = |srv: &Server| {
        let diag = srv.diagnostics();
        let line = diag
            .lines()
            .find(|l| l.contains("ringd: serving"))
            .unwrap_or_else(|| panic!("no serving line\n{diag}"))
            .to_string();
        line.rsplit(", ")
            .next()
            .unwrap_or("")
            .trim_end_matches(')')
            .to_string()
    };
    let plain = ServerBuilder::new("auto", &www).start();
    let proxying = ServerBuilder::new("auto", &www)
        .args(&["--proxy", &up.addr.to_string()])
        .start();
    assert_eq!(name(&proxying), name(&plain));
    let mut c = Client::new(proxying.connect());
    let r = c.exchange(b"GET /app HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(up.count(), 1);
}

/// The classic stack: ringd in front of a real gunicorn (sync worker) serving a WSGI app, with
/// static files beside it (`--proxy`, nginx's `try_files $uri @app`).
pub fn gunicorn_stack(backend: &str) {
    let Some(gunicorn) = find_gunicorn() else {
        let why = "gunicorn not found (set RINGD_GUNICORN, or run scripts/ci-smoke.sh once to make .venv/)";
        if std::env::var_os("RINGD_REQUIRE_GUNICORN").is_some_and(|v| v != "0") {
            panic!("RINGD_REQUIRE_GUNICORN is set but {why}");
        }
        std::panic::panic_any(Skip(why.into()));
    };
    let d = TempDir::new("proxy-gunicorn");
    d.write(
        "app.py",
        b"def application(environ, start_response):\n    body = ('hello from gunicorn ' + environ['PATH_INFO'] + ' ' + environ.get('HTTP_X_FORWARDED_FOR', '-')).encode()\n    if environ['REQUEST_METHOD'] == 'POST':\n        body += b' ' + environ['wsgi.input'].read()\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    return [body]\n",
    );
    d.write("www/style.css", b"body{}\n");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut g = GunicornProc(
        Command::new(&gunicorn)
            .args([
                "--workers",
                "2",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--chdir",
            ])
            .arg(d.path())
            .arg("app:application")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gunicorn"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gunicorn did not start");
        assert!(g.0.try_wait().unwrap().is_none(), "gunicorn exited");
        thread::sleep(Duration::from_millis(100));
    }
    let srv = ServerBuilder::new(backend, &d.path().join("www"))
        .args(&["--proxy", &format!("127.0.0.1:{port}")])
        .start();
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "body{}\n", "static file served by ringd");
    for i in 0..20 {
        let r = c.exchange(format!("GET /page/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(
            r.body_str(),
            format!("hello from gunicorn /page/{i} 127.0.0.1")
        );
    }
    let r = c.exchange(b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nname=ring");
    assert_eq!(
        r.body_str(),
        "hello from gunicorn /form 127.0.0.1 name=ring"
    );
    drop(g.0.kill());
}

struct GunicornProc(Child);

impl Drop for GunicornProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gunicorn: `RINGD_GUNICORN`, the repository's `.venv/` (made by the scripts), or PATH.
fn find_gunicorn() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGD_GUNICORN") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/gunicorn");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("gunicorn"))
            .find(|p| p.is_file())
    })
}

/// Issue 12's upstream example, verbatim but for the addresses: it loads, and its active
/// health check takes a server that answers /healthz with 500 out of rotation (logged once),
/// then back in when it recovers.
pub fn active_health_checks(backend: &str) {
    use std::sync::atomic::AtomicU16;
    let health_a = Arc::new(AtomicU16::new(200));
    let ha = health_a.clone();
    let a = Upstream::spawn(move |req, _| {
        if req.starts_with(b"GET /healthz ") {
            let st = ha.load(Ordering::Relaxed);
            Action::ReplyClose(format!("HTTP/1.1 {st} X\r\nContent-Length: 0\r\n\r\n").into_bytes())
        } else {
            Action::Reply(ok(b"A"))
        }
    });
    let b = Upstream::spawn(|req, _| {
        if req.starts_with(b"GET /healthz ") {
            Action::ReplyClose(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Action::Reply(ok(b"B"))
        }
    });
    let d = TempDir::new("proxy-health");
    let conf = r#"
[upstreams.app]
servers = ["{UP}", "{UP2} weight=2"]
balance = "least_conn"        # round_robin (weighted, default) | least_conn | random_two | hash
hash_key = "{remote_ip}"      # for balance = "hash": a consistent hash (rendezvous or ketama) of this
keepalive = 32                # idle connections kept per worker per server
idle_timeout = "30s"          # below the upstream's own keep-alive timeout: never reuse a dying connection
connect_timeout = "2s"
read_timeout = "60s"          # between two reads from the upstream → 504
max_fails = 3                 # passive health: this many failures within fail_timeout
fail_timeout = "10s"          #   take the server out for fail_timeout
health = { path = "/healthz", interval = "200ms", expect = 200 }   # active checks (optional)
retries = 1                   # see the retry rule below
buffer_requests = true        # read the whole request body before choosing a server
buffer_responses = "1MiB"     # read the response ahead of a slow client up to this, per request

[[sites]]
hosts = ["_"]
root = "www"

[[sites.routes]]
path = "/api/*"
proxy = { upstream = "app", strip_prefix = "/api", headers = { set = { "X-Env" = "prod" } } }
"#;
    let srv = start(backend, &d, conf, &[&a, &b]);
    let mut c = Client::new(srv.connect());
    let mut seen = |n: usize| -> String {
        (0..n)
            .map(|_| {
                c.exchange(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
                    .body_str()
            })
            .collect()
    };
    let both = seen(12);
    assert!(both.contains('A') && both.contains('B'), "{both}");
    health_a.store(500, Ordering::Relaxed);
    thread::sleep(Duration::from_millis(700));
    let only_b = seen(10);
    assert_eq!(
        only_b,
        "B".repeat(10),
        "a failing server still got requests"
    );
    let err = srv.wait_stderr(&format!("upstream app: {} is down", a.addr));
    assert!(
        err.contains(&format!("upstream app: {} is down", a.addr)),
        "{err}"
    );
    health_a.store(200, Ordering::Relaxed);
    thread::sleep(Duration::from_millis(700));
    let again = seen(12);
    assert!(
        again.contains('A'),
        "the recovered server got nothing: {again}"
    );
    let up = format!("{} is up", a.addr);
    assert!(srv.wait_stderr(&up).contains(&up));
}

/// The response cache in front of a proxy route (issue 14, first slice): RFC 9111's store
/// rules one by one against an origin that counts its requests, Vary variants, micro-caching
/// with `default_ttl`, `stale_if_error`, and eviction under a small `max_bytes`.
pub fn response_cache(backend: &str) {
    let up = Upstream::spawn(|req, _| {
        let text = String::from_utf8_lossy(req).into_owned();
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let n = path.len();
        let resp = |extra: &str, body: &str| {
            Action::Reply(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        };
        match path.as_str() {
            p if p.starts_with("/c/maxage") => {
                resp("Cache-Control: max-age=60\r\n", &format!("fresh {n}"))
            }
            "/c/nostore" => resp("Cache-Control: no-store\r\n", "nostore"),
            "/c/private" => resp("Cache-Control: private, max-age=60\r\n", "private"),
            "/c/cookie" => resp("Cache-Control: max-age=60\r\nSet-Cookie: a=b\r\n", "cookie"),
            "/c/plain" => resp("", "micro"),
            "/c/vary" => {
                let gz = text.to_ascii_lowercase().contains("accept-encoding: gzip");
                resp(
                    "Cache-Control: max-age=60\r\nVary: Accept-Encoding\r\n",
                    if gz { "gz" } else { "id" },
                )
            }
            "/c/big" => resp("Cache-Control: max-age=60\r\n", &"b".repeat(3000)),
            _ => resp("Cache-Control: max-age=60\r\n", "other"),
        }
    });
    let d = TempDir::new("proxy-cache");
    let conf = r#"
[cache]
max_bytes = "16KiB"
max_entry = "2KiB"

[upstreams.app]
servers = ["{UP}"]
connect_timeout = "500ms"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/c/*"
  proxy = { upstream = "app" }
  cache = { default_ttl = "1s", stale_if_error = "2s" }   # stale_while_revalidate: tests/it/cache.rs
"#;
    let srv = start(backend, &d, conf, &[&up]);
    let mut c = Client::new(srv.connect());
    let mut get = |path: &str, extra: &str| {
        c.exchange(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n").as_bytes())
    };
    let r = get("/c/maxage", "");
    assert_eq!(r.header("x-cache"), Some("MISS"), "{}", r.head);
    let before = up.count();
    let r2 = get("/c/maxage", "");
    assert_eq!(r2.header("x-cache"), Some("HIT"), "{}", r2.head);
    assert_eq!(r2.body, r.body);
    assert!(r2.header("age").is_some(), "{}", r2.head);
    assert_eq!(
        r2.header("date"),
        r.header("date"),
        "Date stays the origin's"
    );
    assert_eq!(up.count(), before, "a hit reached the origin");
    // Never stored: no-store, private, Set-Cookie, a request with Authorization.
    for (path, extra) in [
        ("/c/nostore", ""),
        ("/c/private", ""),
        ("/c/cookie", ""),
        ("/c/maxage?auth", "Authorization: Basic eDp5\r\n"),
    ] {
        get(path, extra);
        let n = up.count();
        let r = get(path, extra);
        assert_eq!(
            up.count(),
            n + 1,
            "{path} was served from the cache: {}",
            r.head
        );
        assert_eq!(r.header("x-cache"), Some("MISS"));
    }
    // A POST is never served from, or stored in, the cache.
    let n = up.count();
    let r = get("/c/maxage", "");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let mut c2 = Client::new(srv.connect());
    let r = c2.exchange(b"POST /c/maxage HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(up.count(), n + 1, "{}", r.head);
    // Vary: one entry per Accept-Encoding value.
    assert_eq!(get("/c/vary", "Accept-Encoding: gzip\r\n").body_str(), "gz");
    assert_eq!(get("/c/vary", "").body_str(), "id");
    let r = get("/c/vary", "Accept-Encoding: gzip\r\n");
    assert_eq!(
        (r.body_str().as_str(), r.header("x-cache")),
        ("gz", Some("HIT"))
    );
    let r = get("/c/vary", "");
    assert_eq!(
        (r.body_str().as_str(), r.header("x-cache")),
        ("id", Some("HIT"))
    );
    // Larger than max_entry: streams through, never stored.
    get("/c/big", "");
    let r = get("/c/big", "");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(r.body.len(), 3000);
    // Micro-caching: no freshness of its own → default_ttl (1 s).
    get("/c/plain", "");
    assert_eq!(get("/c/plain", "").header("x-cache"), Some("HIT"));
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get("/c/plain", "").header("x-cache"),
        Some("MISS"),
        "outlived default_ttl"
    );
    // Eviction: many entries in 16 KiB; the oldest go, the cache keeps working.
    for i in 0..150 {
        get(&format!("/c/maxage/{i:04}"), "");
    }
    let r = get("/c/maxage/0149", "");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let r = get("/c/maxage/0000", "");
    assert_eq!(
        r.header("x-cache"),
        Some("MISS"),
        "the least recently used was kept"
    );
    // stale_if_error: the origin goes away; a stale copy answers within the window.
    get("/c/plain", "");
    drop(up);
    thread::sleep(Duration::from_millis(1100)); // stale now (default_ttl 1 s)
    let r = get("/c/plain", "");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("STALE")),
        "{}",
        r.head
    );
    assert_eq!(r.body_str(), "micro");
    thread::sleep(Duration::from_millis(2100)); // past stale_if_error (2 s)
    let r = get("/c/plain", "");
    assert_eq!(r.status, 502, "{}", r.head);
}

/// On-the-fly compression on a proxy route (`compress = ["zstd", "br", "gzip"]`) with the
/// cache in front: each coding decodes to the origin's bytes, `Vary: Accept-Encoding` is set,
/// small, already-encoded and non-text bodies pass as they are, and a compressed variant is
/// cached as its own entry (a hit costs no origin request).
pub fn compression(backend: &str) {
    use std::io::Read as _;
    let page: String = (0..400)
        .map(|i| format!("<p>paragraph {i} of the page</p>\n"))
        .collect();
    let page2 = page.clone();
    let up = Upstream::spawn(move |req, _| {
        let text = String::from_utf8_lossy(req).into_owned();
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let resp = |ct: &str, extra: &str, body: &[u8]| {
            let mut v = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nCache-Control: max-age=60\r\nETag: \"v1\"\r\n{extra}\r\n",
                body.len()
            )
            .into_bytes();
            v.extend_from_slice(body);
            Action::Reply(v)
        };
        match path.as_str() {
            "/z/small" => resp("text/plain", "", b"tiny"),
            "/z/png" => resp("image/png", "", &[0u8; 5000]),
            "/z/encoded" => resp("text/html", "Content-Encoding: gzip\r\n", &[1u8; 5000]),
            _ => resp("text/html; charset=utf-8", "", page2.as_bytes()),
        }
    });
    let d = TempDir::new("proxy-compress");
    let conf = r#"
[upstreams.app]
servers = ["{UP}"]

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/z/*"
  proxy = { upstream = "app" }
  cache = { default_ttl = "1s" }
  compress = ["zstd", "br", "gzip"]   # for text types above 1 KiB, when the client accepts one
"#;
    let srv = start(backend, &d, conf, &[&up]);
    let mut c = Client::new(srv.connect());
    let mut get = |path: &str, ae: &str| {
        let h = if ae.is_empty() {
            String::new()
        } else {
            format!("Accept-Encoding: {ae}\r\n")
        };
        c.exchange(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{h}\r\n").as_bytes())
    };
    for (ae, coding) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
    ] {
        let r = get("/z/page", ae);
        assert_eq!(
            r.header("content-encoding"),
            Some(coding),
            "{ae}: {}",
            r.head
        );
        assert!(r.has_token("vary", "accept-encoding"), "{}", r.head);
        assert_eq!(
            r.header("etag"),
            Some("W/\"v1\""),
            "a strong ETag on another representation"
        );
        assert!(
            r.body.len() < page.len() / 4,
            "{coding}: {} bytes",
            r.body.len()
        );
        let mut plain = Vec::new();
        match coding {
            "gzip" => {
                flate2::read::GzDecoder::new(&r.body[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            "zstd" => plain = zstd::stream::decode_all(&r.body[..]).unwrap(),
            _ => {
                brotli::Decompressor::new(&r.body[..], 4096)
                    .read_to_end(&mut plain)
                    .unwrap();
            }
        }
        assert_eq!(plain, page.as_bytes(), "{coding} did not round-trip");
    }
    // Each variant is its own cache entry: hits cost no origin request.
    let n = up.count();
    let r = get("/z/page", "gzip, br");
    assert_eq!(
        (r.header("x-cache"), r.header("content-encoding")),
        (Some("HIT"), Some("br"))
    );
    let r = get("/z/page", "");
    assert_eq!(r.header("content-encoding"), None, "{}", r.head);
    assert_eq!(r.body, page.as_bytes());
    assert!(r.has_token("vary", "accept-encoding"));
    let r = get("/z/page", "");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(up.count(), n + 1, "only the identity variant was fetched");
    // Left alone: a small body, a non-text type, a body the origin encoded itself.
    for path in ["/z/small", "/z/png"] {
        let r = get(path, "gzip");
        assert_eq!(r.header("content-encoding"), None, "{path}: {}", r.head);
    }
    let r = get("/z/encoded", "zstd, gzip");
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "the origin's own coding"
    );
    assert_eq!(r.body, vec![1u8; 5000], "an encoded body was encoded again");
    let r = c.exchange(b"HEAD /z/page HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_eq!(r.header("content-encoding"), None, "{}", r.head);
}

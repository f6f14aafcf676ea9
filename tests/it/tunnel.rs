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

struct WsUpstream {
    addr: SocketAddr,
    /// Every request head received.
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WsUpstream {
    fn spawn() -> WsUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (heads.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (h, st) = (h.clone(), st.clone());
                        workers.push(thread::spawn(move || ws_serve(s, &h, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        WsUpstream {
            addr,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ws_serve(mut s: TcpStream, heads: &Mutex<Vec<String>>, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
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
        up.addr
    );
    d.write("t.toml", conf.as_bytes());
    d.write("www/index.html", b"static\n");
    ServerBuilder::new(backend, d.path())
        .config(&d.path().join("t.toml"))
        .start()
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

//! Bytes through the proxy under random timing: every request body reaches the upstream and
//! every response body reaches the client byte for byte, whatever the sizes (around the
//! splice minimum, and past the socket buffers), the framing (Content-Length or chunked on
//! either side), streamed or buffered request bodies, and the pace of each side (writes in
//! uneven pieces with pauses, an upstream with a small receive buffer that reads unevenly, a
//! client that reads slowly). The order bug of `tunnel::streamed_body_to_slow_upstream`
//! needed one such timing; this walks many. Each run draws a seed (or takes
//! `RINGD_TEST_SEED`) and names it in any failure, so a failure can be replayed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::harness::{ServerBuilder, TempDir};
use crate::http::{find, Client};

/// xorshift64*: small, seedable, good enough to pick sizes and pauses.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// `len` bytes that depend on `seed` (and on the position, so a shift shows).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A body size: empty, small, around the 64 KiB splice minimum, past it, or past the socket
/// buffers (rarely: they cost time).
fn size(r: &mut Rng) -> usize {
    match r.range(0, 15) {
        0 => 0,
        1..=4 => r.range(1, 3000),
        5..=8 => r.range(60_000, 70_000),
        9..=13 => r.range(70_000, 700_000),
        _ => r.range(3_000_000, 6_000_000),
    }
}

/// Writes `data` in uneven pieces, with a short pause now and then.
fn write_uneven(w: &mut impl Write, data: &[u8], r: &mut Rng) -> std::io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let n = r.range(1, 200_000).min(data.len() - at);
        w.write_all(&data[at..at + n])?;
        at += n;
        if r.one_in(6) {
            thread::sleep(Duration::from_micros(r.range(100, 3000) as u64));
        }
    }
    Ok(())
}

/// `body` chunked in uneven chunks, with the last chunk.
fn chunked(body: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    while at < body.len() {
        let n = r.range(1, 100_000).min(body.len() - at);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A chunked body decoded as it arrives: `feed` takes what the socket gave and returns true
/// at the last chunk (trailers are not used here).
#[derive(Default)]
struct Dechunk {
    buf: Vec<u8>,
    /// Data bytes left in the current chunk (then its CRLF).
    left: usize,
    in_data: bool,
    out: Vec<u8>,
}

impl Dechunk {
    fn feed(&mut self, data: &[u8]) -> Result<bool, String> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let done = loop {
            if self.in_data {
                if self.left > 0 {
                    let n = self.left.min(self.buf.len() - pos);
                    self.out.extend_from_slice(&self.buf[pos..pos + n]);
                    pos += n;
                    self.left -= n;
                    if self.left > 0 {
                        break false;
                    }
                }
                if self.buf.len() - pos < 2 {
                    break false;
                }
                if &self.buf[pos..pos + 2] != b"\r\n" {
                    return Err("a chunk not followed by CRLF".into());
                }
                pos += 2;
                self.in_data = false;
            }
            let Some(nl) = find(&self.buf[pos..], b"\r\n") else {
                break false;
            };
            let line = std::str::from_utf8(&self.buf[pos..pos + nl]).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            pos += nl + 2;
            if n == 0 {
                // The last chunk, then the (empty) trailer section.
                if self.buf.len() - pos >= 2 && &self.buf[pos..pos + 2] == b"\r\n" {
                    pos += 2;
                    break true;
                }
                pos -= nl + 2;
                break false;
            }
            self.left = n;
            self.in_data = true;
        };
        self.buf.drain(..pos);
        Ok(done)
    }
}

/// The upstream: answers every request with `X-Got: <length>-<fnv hex>` of the body it
/// received (decoded), and a body of `X-Resp-Len` bytes of `pattern(X-Seed)`, chunked when
/// `X-Resp-Chunked: 1`, written unevenly. Its listener has a 16 KiB receive buffer and it
/// reads in uneven sizes with pauses, so ringd's side of it fills.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn spawn() -> Upstream {
        let l = crate::harness::small_rcvbuf_listener(16 * 1024);
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let st = st.clone();
                        conns.push(thread::spawn(move || serve(s, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Upstream {
            addr,
            stop,
            thread: Some(thread),
        }
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

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One upstream connection, request after request, until ringd closes it or the test ends.
fn serve(mut s: TcpStream, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 256 * 1024];
    let mut r = Rng::new(s.peer_addr().map_or(7, |a| a.port() as u64));
    // Reads at most a random size; false at EOF, on an error, or when the test ends.
    let mut more = |s: &mut TcpStream, buf: &mut Vec<u8>, r: &mut Rng| loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let want = r.range(1, tmp.len());
        match s.read(&mut tmp[..want]) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                if r.one_in(8) {
                    thread::sleep(Duration::from_micros(r.range(100, 3000) as u64));
                }
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    };
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !more(&mut s, &mut buf, &mut r) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let num = |n: &str| field(&head, n).and_then(|v| v.parse::<u64>().ok());
        let body = if field(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut d = Dechunk::default();
            let mut done = d.feed(&std::mem::take(&mut buf)).unwrap();
            while !done {
                let mut got = Vec::new();
                if !more(&mut s, &mut got, &mut r) {
                    return;
                }
                done = d.feed(&got).unwrap();
            }
            buf = std::mem::take(&mut d.buf);
            d.out
        } else {
            let n = num("content-length").unwrap_or(0) as usize;
            while buf.len() < n {
                if !more(&mut s, &mut buf, &mut r) {
                    return;
                }
            }
            buf.drain(..n).collect()
        };
        let seed = num("x-seed").unwrap_or(0);
        let rlen = num("x-resp-len").unwrap_or(0) as usize;
        let rbody = pattern(seed ^ 0x5555, rlen);
        let got = format!("{}-{:x}", body.len(), fnv(&body));
        let mut out = if field(&head, "x-resp-chunked") == Some("1") {
            let mut h =
                format!("HTTP/1.1 200 OK\r\nX-Got: {got}\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            h.extend_from_slice(&chunked(&rbody, &mut r));
            h
        } else {
            let mut h =
                format!("HTTP/1.1 200 OK\r\nX-Got: {got}\r\nContent-Length: {rlen}\r\n\r\n")
                    .into_bytes();
            h.extend_from_slice(&rbody);
            h
        };
        if write_uneven(&mut s, &out, &mut r).is_err() {
            return;
        }
        out.clear();
    }
}

/// Random requests through two proxy routes (`/s/` streams request bodies, `/b/` buffers
/// them) for a few seconds; every byte checked both ways.
pub fn proxied_bodies_survive_random_timing(backend: &str) {
    let seed = std::env::var("RINGD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let up = Upstream::spawn();
    let d = TempDir::new("integrity");
    d.write("www/index.html", b"static\n");
    let conf = format!(
        r#"
[upstreams.stream]
servers = ["{a}"]
buffer_requests = false
read_timeout = "20s"
max_fails = 0

[upstreams.buf]
servers = ["{a}"]
read_timeout = "20s"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"
  [[sites.routes]]
  path = "/s/*"
  proxy = {{ upstream = "stream" }}
  [[sites.routes]]
  path = "/b/*"
  proxy = {{ upstream = "buf" }}
"#,
        a = up.addr
    );
    d.write("i.toml", conf.as_bytes());
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("i.toml"))
        .args(&["--max-body", "16MiB"])
        .start();
    let mut r = Rng::new(seed);
    let t0 = Instant::now();
    let mut client: Option<Client> = None;
    let mut done = 0;
    // At least 12 exchanges, then until 4 s have passed (at most 150).
    while done < 12 || (t0.elapsed() < Duration::from_secs(4) && done < 150) {
        let what = format!("{backend}, seed {seed} (RINGD_TEST_SEED), exchange {done}");
        let route = if r.one_in(2) { "s" } else { "b" };
        let req_len = size(&mut r);
        let resp_len = size(&mut r);
        let req_chunked = r.one_in(4);
        let resp_chunked = r.one_in(2);
        let body_seed = r.next() >> 1;
        let body = pattern(body_seed, req_len);
        let framing = if req_chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {req_len}")
        };
        let mut wire = format!(
            "POST /{route}/{done} HTTP/1.1\r\nHost: t.test\r\n{framing}\r\nX-Seed: {body_seed}\r\n\
             X-Resp-Len: {resp_len}\r\nX-Resp-Chunked: {}\r\n\r\n",
            u8::from(resp_chunked)
        )
        .into_bytes();
        if req_chunked {
            wire.extend_from_slice(&chunked(&body, &mut r));
        } else {
            wire.extend_from_slice(&body);
        }
        if client.is_none() || r.one_in(3) {
            let c = Client::new(srv.connect());
            c.set_timeout(Duration::from_secs(20));
            client = Some(c);
        }
        let c = client.as_mut().unwrap();
        // A slow reader now and then (not for the largest bodies: they would take long).
        c.throttle =
            (resp_len < 1_000_000 && r.one_in(4)).then_some((16 * 1024, Duration::from_millis(1)));
        let mut w = c.stream.try_clone().unwrap();
        let mut wr = Rng::new(r.next());
        let writer = thread::spawn(move || write_uneven(&mut w, &wire, &mut wr));
        let resp = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", srv.diagnostics()));
        writer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{what}: writing the request: {e}"));
        assert_eq!(resp.status, 200, "{what}: {}", resp.head);
        assert_eq!(
            resp.header("x-got"),
            Some(format!("{}-{:x}", req_len, fnv(&body)).as_str()),
            "{what}: the upstream got another request body ({req_len} bytes, {})",
            if req_chunked {
                "chunked"
            } else {
                "Content-Length"
            }
        );
        let want = pattern(body_seed ^ 0x5555, resp_len);
        if resp.body != want {
            let at = resp.body.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "{what}: the response body changed ({} bytes for {resp_len}, first difference \
                 at {at:?}, {})",
                resp.body.len(),
                if resp_chunked {
                    "chunked"
                } else {
                    "Content-Length"
                }
            );
        }
        if resp.closes() {
            client = None;
        }
        done += 1;
    }
    eprintln!(
        "{backend}: {done} exchanges in {:.1?}, seed {seed}",
        t0.elapsed()
    );
}

//! Test servers (std threads on real loopback sockets) with counters of what they sent, and
//! helpers that run the real `loadgen` binary and read its JSON result.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server frames its responses.
#[derive(Clone, Debug)]
pub enum Mode {
    /// `Content-Length` bodies, keep-alive.
    Length(Vec<u8>),
    /// `Transfer-Encoding: chunked` with extensions and a trailer, keep-alive.
    Chunked(Vec<Vec<u8>>),
    /// No length: the body ends when the server closes the connection.
    CloseDelimited(Vec<u8>),
    /// Read requests, never answer.
    Silent,
    /// `Content-Length` bodies, but every connection is closed (with `Connection: close`) after
    /// this many responses, whatever is still pipelined behind them.
    CloseEvery(Vec<u8>, u64),
    /// Content-Length bodies; every response due inside the window
    /// `[start + at, start + at + len)` waits until the window ends (the whole server stalls).
    Stall {
        /// Body.
        body: Vec<u8>,
        /// When the stall begins, after the server starts.
        at: Duration,
        /// How long it lasts.
        len: Duration,
    },
}

/// What the server did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered (or read, for `Silent`).
    pub requests: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// Connections accepted.
    pub accepts: AtomicU64,
    /// Most requests found in one read (pipelining).
    pub max_batch: AtomicU64,
    /// Requests per path.
    pub paths: Mutex<HashMap<String, u64>>,
    /// Requests per Host header.
    pub hosts: Mutex<HashMap<String, u64>>,
    /// Request body bytes read.
    pub body_bytes_in: AtomicU64,
}

/// A running test server; stops accepting when dropped.
pub struct TestServer {
    /// Its address (TCP servers).
    pub addr: Option<SocketAddr>,
    /// Its socket path (unix servers).
    pub path: Option<PathBuf>,
    /// Counters.
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        match (&self.addr, &self.path) {
            (Some(a), _) => format!("http://{a}{path}"),
            (None, Some(p)) => format!("unix:{}:{path}", p.display()),
            _ => unreachable!(),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Bytes written so far.
    pub fn bytes_out(&self) -> u64 {
        self.stats.bytes_out.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Start a TCP server on 127.0.0.1, port 0.
pub fn serve(mode: Mode) -> TestServer {
    serve_at(mode, "127.0.0.1:0")
}

/// Start a TCP server on `addr` (an address of this machine, e.g. one the test created).
pub fn serve_at(mode: Mode, addr: &str) -> TestServer {
    let listener = TcpListener::bind(addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    start(mode, Some(addr), None, move || match listener.accept() {
        Ok((s, _)) => {
            s.set_nonblocking(false).ok();
            s.set_nodelay(true).ok();
            Some(Box::new(s) as Box<dyn ConnBox>)
        }
        Err(_) => None,
    })
}

/// Start a unix-socket server at `path`.
pub fn serve_unix(mode: Mode, path: &Path) -> TestServer {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).expect("bind unix");
    listener.set_nonblocking(true).expect("nonblocking");
    start(
        mode,
        None,
        Some(path.to_path_buf()),
        move || match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok();
                Some(Box::new(s) as Box<dyn ConnBox>)
            }
            Err(_) => None,
        },
    )
}

/// A boxed connection with a read timeout setter.
pub trait ConnBox: Read + Write + Send {
    fn set_timeout(&self, d: Duration);
}
impl ConnBox for TcpStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).ok();
    }
}
impl ConnBox for UnixStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).ok();
    }
}

fn start(
    mode: Mode,
    addr: Option<SocketAddr>,
    path: Option<PathBuf>,
    mut accept: impl FnMut() -> Option<Box<dyn ConnBox>> + Send + 'static,
) -> TestServer {
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (st, sp) = (Arc::clone(&stats), Arc::clone(&stop));
    let acceptor = std::thread::spawn(move || {
        while !sp.load(Ordering::SeqCst) {
            match accept() {
                Some(conn) => {
                    st.accepts.fetch_add(1, Ordering::SeqCst);
                    let (st, mode) = (Arc::clone(&st), mode.clone());
                    std::thread::spawn(move || handle(conn, mode, st, started));
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    TestServer {
        addr,
        path,
        stats,
        stop,
        acceptor: Some(acceptor),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn respond(mode: &Mode, served: u64, close: bool, started: Instant, out: &mut Vec<u8>) -> bool {
    let close = close || matches!(mode, Mode::CloseEvery(_, n) if served + 1 >= *n);
    let conn_hdr = if close { "Connection: close\r\n" } else { "" };
    match mode {
        Mode::CloseEvery(body, _) => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
            close
        }
        Mode::Length(body) => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
            close
        }
        Mode::Stall { body, at, len } => {
            let s = started + *at;
            let e = s + *len;
            let now = Instant::now();
            if now >= s && now < e {
                std::thread::sleep(e - now);
            }
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
            close
        }
        Mode::Chunked(chunks) => {
            out.extend_from_slice(
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn_hdr}\r\n")
                    .as_bytes(),
            );
            for (i, c) in chunks.iter().enumerate() {
                out.extend_from_slice(format!("{:x};n={i}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Checksum: 1\r\n\r\n");
            close
        }
        Mode::CloseDelimited(body) => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: t\r\n\r\n");
            out.extend_from_slice(body);
            true
        }
        Mode::Silent => false,
    }
}

fn handle(mut conn: Box<dyn ConnBox>, mode: Mode, st: Arc<Stats>, started: Instant) {
    conn.set_timeout(Duration::from_secs(10));
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut tmp = [0u8; 16 * 1024];
    let mut served = 0u64;
    loop {
        let n = match conn.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut batch = 0u64;
        let mut close = false;
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            // A request body (Content-Length) is read and dropped with its request.
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + body_len {
                break;
            }
            buf.drain(..end + 4 + body_len);
            st.body_bytes_in
                .fetch_add(body_len as u64, Ordering::SeqCst);
            if let Some(host) = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("host")
                    .then(|| v.trim().to_string())
            }) {
                *st.hosts.lock().unwrap().entry(host).or_default() += 1;
            }
            let is_head = head.starts_with("HEAD ");
            batch += 1;
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            *st.paths.lock().unwrap().entry(path).or_default() += 1;
            st.requests.fetch_add(1, Ordering::SeqCst);
            let wants_close = head.to_ascii_lowercase().contains("connection: close");
            let mark = out.len();
            let last = respond(&mode, served, wants_close, started, &mut out);
            if is_head {
                // HEAD: the same head, no body.
                if let Some(e) = find(&out[mark..], b"\r\n\r\n") {
                    out.truncate(mark + e + 4);
                }
            }
            served += 1;
            if last {
                close = true;
                break;
            }
        }
        st.max_batch.fetch_max(batch, Ordering::SeqCst);
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            st.bytes_out.fetch_add(out.len() as u64, Ordering::SeqCst);
        }
        if close {
            return;
        }
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Run the loadgen binary with `args` (quiet, JSON to a temp file); returns its output and the
/// parsed JSON result (when it wrote one).
pub fn loadgen(name: &str, args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let dir = temp_dir(name);
    let json = dir.join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("-q")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run loadgen");
    let v = std::fs::read_to_string(&json)
        .ok()
        .map(|s| serde_json::from_str(&s).expect("valid JSON"));
    let _ = std::fs::remove_dir_all(&dir);
    (out, v)
}

/// Run loadgen expecting success; returns the JSON result.
pub fn loadgen_ok(name: &str, args: &[&str]) -> serde_json::Value {
    let (out, v) = loadgen(name, args);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    v.expect("JSON result written")
}

/// `v[key]` as u64.
pub fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not an integer: {x}"))
}

/// `v[key]` as f64.
pub fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {x}"))
}

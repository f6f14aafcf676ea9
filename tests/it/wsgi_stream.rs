//! WSGI `wsgi.input` streamed (PEP 3333): the app is called once the request head is in and
//! reads the body as it arrives; ringd reads the client only a bounded amount ahead of the
//! app; a body the app leaves unread is drained so keep-alive stays correct; a client that
//! breaks off mid-body makes the app's read raise, and `close()` is still called. Real
//! `ringd-wsgi`, real sockets (see `wsgi.rs` for how it is found).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::TempDir;
use crate::http::{req, Client};
use crate::wsgi::{serve, skip_or_fail, venv_bin};

const APP: &str = include_str!("../apps/stream.py");

fn stream_app(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    d.write("stream.py", APP.as_bytes());
    d
}

/// The lines of marker file `p` (empty while it does not exist).
fn marks(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits up to 10 s until marker file `p` holds `what`.
fn wait_mark(p: &Path, what: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if marks(p).contains(what) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn sha256_hex(b: &[u8]) -> String {
    let out = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .expect("python for sha256");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An upload far larger than the old whole-body buffer (1 MiB) goes to the app as it arrives:
/// the app has its first bytes while the client still holds the rest; ringd then reads the
/// client only a bounded amount ahead of an app that does not read (the client's writes stall);
/// the body arrives whole once it reads on; the connection serves on.
pub fn upload_streams_with_backpressure() {
    let d = stream_app("wsgi-stream-up");
    let srv = serve(d.path(), &["stream:app", "--max-body", "64M"]);
    let body: Arc<Vec<u8>> = Arc::new((0..40_000_000u32).map(|i| (i % 251) as u8).collect());
    let want = sha256_hex(&body);
    let mark = d.path().join("mark-1");
    let go = d.path().join("go-1");
    let mut s = srv.connect();
    let head = format!(
        "POST /first HTTP/1.1\r\nHost: h\r\nX-Mark: {}\r\nX-Wait: {}\r\nContent-Length: {}\r\n\r\n",
        mark.display(),
        go.display(),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..1000]).unwrap();
    assert!(
        wait_mark(&mark, "first 1000"),
        "the app never saw the first bytes while the body was unfinished (buffered?)\n{}",
        srv.diagnostics()
    );
    // The app holds the rest unread: the client's writes stall well before 40 MB are out.
    let written = Arc::new(AtomicUsize::new(1000));
    let mut w = s.try_clone().unwrap();
    let (b2, wr) = (body.clone(), written.clone());
    let writer = thread::spawn(move || {
        for piece in b2[1000..].chunks(64 * 1024) {
            if w.write_all(piece).is_err() {
                return;
            }
            wr.fetch_add(piece.len(), Ordering::SeqCst);
        }
    });
    // Until the writes stop advancing.
    let mut last = 0;
    let t0 = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::SeqCst);
        if now == last || t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        last = now;
    }
    // What the kernel's socket buffers hold (a few MB on loopback) plus ringd's bounded
    // read-ahead; nowhere near the whole body.
    let stalled = written.load(Ordering::SeqCst);
    assert!(
        stalled < 16_000_000,
        "the client wrote {stalled} of {} bytes to an app that reads nothing (no backpressure)",
        body.len()
    );
    std::fs::write(&go, b"").unwrap();
    writer.join().unwrap();
    let mut c = Client::new(s);
    c.set_timeout(Duration::from_secs(30));
    let r = c
        .read_response(false)
        .expect("response to the streamed POST");
    assert_eq!(
        (r.status, r.body_str()),
        (200, format!("{} {want}", body.len())),
        "{}",
        srv.diagnostics()
    );
    assert!(!r.closes());
    let r = c.exchange(&req("GET", "/ignore", &[]));
    assert_eq!((r.status, r.body_str().as_str()), (200, "ignored"));
    eprintln!(
        "wsgi stream: the client got {stalled} bytes out while the app read nothing (of {})",
        body.len()
    );
}

/// An app that answers without reading its body (all of it, part of it; Content-Length or
/// chunked; pipelined behind it or not): the rest is drained and the connection serves on.
/// With `Expect: 100-continue` and an app that never reads, no 100 goes out and the
/// connection closes after the response (the client may or may not send the body).
pub fn unread_bodies_keep_alive() {
    let d = stream_app("wsgi-stream-unread");
    let srv = serve(d.path(), &["stream:app", "--max-body", "8M"]);
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(10));
    let big = vec![b'x'; 300_000];
    for path in ["/ignore", "/some"] {
        let mut m = format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .into_bytes();
        m.extend_from_slice(&big);
        // The next request rides behind the body in the same writes.
        m.extend_from_slice(
            b"POST /some HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n0123456789ab",
        );
        c.send(&m);
        let r = c.read_response(false).expect("first response");
        let want = if path == "/ignore" {
            "ignored"
        } else {
            "xxxxxxxxxx"
        };
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, want),
            "{}",
            srv.diagnostics()
        );
        assert!(!r.closes(), "{}", r.head);
        let r = c.read_response(false).expect("pipelined response");
        assert_eq!((r.status, r.body_str().as_str()), (200, "0123456789"));
    }
    // Chunked, unread.
    let mut m = b"POST /ignore HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..50 {
        m.extend_from_slice(b"1000\r\n");
        m.extend_from_slice(&[b'y'; 4096]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"0\r\n\r\n");
    let r = c.exchange(&m);
    assert_eq!((r.status, r.body_str().as_str()), (200, "ignored"));
    let r = c.exchange(
        b"POST /lines HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na\nb\n\r\n1\r\nc\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.body_str().as_str()), (200, "a|b|c"));

    // A GET's body is still read whole before the call (a cache may answer a GET).
    let r = c.exchange(b"GET /some HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\nabcdefghijkl");
    assert_eq!((r.status, r.body_str().as_str()), (200, "abcdefghij"));

    // A rest longer than ringd drains (1 MiB): the response, then the connection closes.
    let mut s = srv.connect();
    let n = 3_000_000;
    s.write_all(
        format!("POST /ignore HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let _ = w.write_all(&vec![b'w'; n]);
    });
    let got = crate::wsgi::read_to_close(&mut s, Duration::from_secs(10));
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("ignored"),
        "{got}\n{}",
        srv.diagnostics()
    );
    drop(s);
    writer.join().unwrap();

    // Expect: 100-continue to an app that never reads: the final status, no 100, close.
    let mut s = srv.connect();
    s.write_all(
        b"POST /ignore HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let got = crate::wsgi::read_to_close(&mut s, Duration::from_secs(5));
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(!got.contains("100 Continue"), "{got}");
    assert!(got.ends_with("ignored"), "{got}");
}

/// A client that breaks off mid-body: the app's read raises `OSError`, its result's
/// `close()` is still called, and the worker serves on.
pub fn client_breaks_off_mid_body() {
    let d = stream_app("wsgi-stream-abort");
    let srv = serve(d.path(), &["stream:app"]);
    let mark = d.path().join("mark-abort");
    let mut s = srv.connect();
    let head = format!(
        "POST /iterate HTTP/1.1\r\nHost: h\r\nX-Mark: {}\r\nContent-Length: 100000\r\n\r\n",
        mark.display()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'z'; 5000]).unwrap();
    thread::sleep(Duration::from_millis(200));
    drop(s);
    assert!(
        wait_mark(&mark, "raised OSError"),
        "the app's read did not raise: {:?}\n{}",
        marks(&mark),
        srv.diagnostics()
    );
    assert!(wait_mark(&mark, "closed"), "close() was not called");
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"POST /iterate HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "3"),
        "{}",
        srv.diagnostics()
    );
}

/// A chunked upload through Flask (`request.stream`), streamed: the view has the first
/// chunk while the client still holds the rest.
pub fn flask_chunked_upload_streams() {
    let d = TempDir::new("wsgi-stream-flask");
    d.write(
        "fl.py",
        b"from flask import Flask, request\n\
app = Flask(__name__)\n\
@app.route('/up', methods=['POST'])\n\
def up():\n    first = request.stream.read(4)\n    open(request.headers['X-Mark'], 'w').write('first ' + first.decode())\n    rest = request.stream.read()\n    return f'{len(first) + len(rest)} bytes, ends {rest[-3:].decode()}'\n",
    );
    if Command::new(venv_bin("python"))
        .args(["-c", "import flask"])
        .status()
        .map_or(true, |s| !s.success())
    {
        skip_or_fail("flask is not installed in .venv (scripts/test-peers.sh installs it)");
    }
    let srv = serve(d.path(), &["fl:app"]);
    let mark = d.path().join("mark-flask");
    let mut s = srv.connect();
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: h\r\nX-Mark: {}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        mark.display()
    );
    s.write_all(head.as_bytes()).unwrap();
    assert!(
        wait_mark(&mark, "first abcd"),
        "Flask never saw the first chunk while the body was unfinished\n{}",
        srv.diagnostics()
    );
    let mut rest = Vec::new();
    for _ in 0..10 {
        rest.extend_from_slice(b"3e8\r\n");
        rest.extend_from_slice(&[b'q'; 997]);
        rest.extend_from_slice(b"xyz\r\n");
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&rest).unwrap();
    let mut c = Client::new(s);
    c.set_timeout(Duration::from_secs(10));
    let r = c.read_response(false).expect("flask's response");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "10004 bytes, ends xyz"),
        "{}",
        srv.diagnostics()
    );
    let mut buf = [0u8; 1];
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        c.stream.read(&mut buf).is_err(),
        "nothing more after the response"
    );
}

/// Open descriptors of process `pid`.
fn fd_count(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Apps that "leak" an open file (return a file object, an iterable holding one, or a
/// `wsgi.file_wrapper` over one, and keep a reference so only `close()` releases it): ringd
/// calls `close()` every time, also when the client leaves mid-response, and the worker's
/// descriptor count comes back to where it was after hundreds of requests.
pub fn leaked_files_are_closed() {
    let d = stream_app("wsgi-leak");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = d.write("data.bin", &data);
    let small = d.write("small.txt", b"a small file\n");
    let srv = serve(d.path(), &["stream:app", "--threads", "2"]);
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(10));
    let pid = c.exchange(&req("GET", "/pid", &[])).body_str();
    assert!(pid.parse::<u32>().is_ok(), "{pid}\n{}", srv.diagnostics());
    let small_s = small.display().to_string();
    let file_s = file.display().to_string();
    // Warm up every path once (imports, first-use allocations), then count.
    for kind in ["file", "holder", "wrapper"] {
        let r = c.exchange(&req(
            "GET",
            &format!("/leak/{kind}"),
            &[("X-File", &small_s)],
        ));
        assert_eq!(r.body, b"a small file\n", "{kind}: {}", srv.diagnostics());
    }
    let before = fd_count(&pid);
    for i in 0..300 {
        let kind = ["file", "holder", "wrapper"][i % 3];
        let r = c.exchange(&req(
            "GET",
            &format!("/leak/{kind}"),
            &[("X-File", &small_s)],
        ));
        assert_eq!((r.status, r.body.len()), (200, 13), "{kind}");
    }
    // Clients that leave mid-response, a large file still going out.
    for i in 0..30 {
        let kind = ["file", "holder", "wrapper"][i % 3];
        let mut s = srv.connect();
        s.write_all(&req(
            "GET",
            &format!("/leak/{kind}"),
            &[("X-File", &file_s)],
        ))
        .unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
    }
    // Let the worker notice the departures and the app threads finish.
    let t0 = Instant::now();
    let mut after = fd_count(&pid);
    while after > before && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
        after = fd_count(&pid);
    }
    assert!(
        after <= before,
        "the worker holds {after} descriptors, {before} before 330 leaky responses\n{}",
        srv.diagnostics()
    );
    let r = c.exchange(&req("GET", "/leak/wrapper", &[("X-File", &file_s)]));
    assert!(r.body == data, "{}", srv.diagnostics());
}

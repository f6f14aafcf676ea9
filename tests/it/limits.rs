//! Connection-level behaviour: pipelining, 1,000 concurrent connections, header and keep-alive
//! timeouts, HTTP/1.0 and `Connection: close`, and the limit/error statuses (400, 413, 414,
//! 431, 505) with nothing answered after an error.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{raise_nofile, Server, ServerBuilder, Skip};
use crate::http::{get, req, Client, Response};
use crate::static_files::{expect, site, DIR_INDEX, ROOT_INDEX, SMALL};

/// One pipelined request: its bytes, the status and (if given) the body it must get.
type Step<'a> = (Vec<u8>, u16, Option<&'a [u8]>);

/// Case 3: 16 mixed requests in one write, answered in order.
pub fn pipelining(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let first = get(&srv, "/small.txt", &[]);
    let etag = first.header("etag").expect("ETag").to_string();
    let lm = first.header("last-modified").expect("LM").to_string();

    let chunked = b"POST /small.txt HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec();
    let with_body =
        b"POST /small.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    #[rustfmt::skip]
    let plan: Vec<Step> = vec![
        (req("GET", "/small.txt", &[]), 200, Some(SMALL)),
        (req("HEAD", "/small.txt", &[]), 200, Some(b"")),
        (req("GET", "/nope.txt", &[]), 404, None),
        (req("GET", "/small.txt", &[("Range", "bytes=0-4")]), 206, Some(b"01234")),
        (req("GET", "/small.txt", &[("If-None-Match", &etag)]), 304, Some(b"")),
        (with_body, 405, None),
        (chunked, 405, None),
        (req("GET", "/dir", &[]), 301, None),
        (req("GET", "/dir/", &[]), 200, Some(DIR_INDEX)),
        (req("GET", "/medium.bin", &[]), 200, Some(&site.medium)),
        (req("GET", "/small.txt", &[("If-Modified-Since", &lm)]), 304, Some(b"")),
        (req("GET", "/small.txt", &[("Range", "bytes=-3")]), 206, Some(b"xyz")),
        (req("HEAD", "/nope.txt", &[]), 404, Some(b"")),
        (req("GET", "/small.txt", &[("Range", "bytes=99-")]), 416, None),
        (req("GET", "/.secret", &[]), 404, None),
        (req("GET", "/index.html", &[]), 200, Some(ROOT_INDEX)),
    ];
    assert_eq!(plan.len(), 16);
    let mut all = Vec::new();
    for (r, _, _) in &plan {
        all.extend_from_slice(r);
    }
    let mut c = Client::new(srv.connect());
    c.send(&all);
    for (i, (request, status, body)) in plan.iter().enumerate() {
        let head = request.starts_with(b"HEAD");
        let r = c.read_response(head).unwrap_or_else(|e| {
            panic!(
                "pipelined response #{i} missing: {e}\n{}",
                srv.diagnostics()
            )
        });
        let what = format!(
            "pipelined #{i} {:?}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
        expect(&srv, &what, &r, *status, *body);
    }
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "after the pipeline", &r, 200, Some(SMALL));
}

/// Case 4: 1,000 connections open at once, then one request on each, all answered.
pub fn thousand_connections(backend: &str) {
    const N: usize = 1000;
    let limit = raise_nofile(4 * N as u64);
    if limit < 2 * N as u64 + 100 {
        // The test process and the server each need N descriptors (the server inherits ours).
        std::panic::panic_any(Skip(format!(
            "RLIMIT_NOFILE is {limit} here, 1,000 connections need about {}",
            2 * N + 100
        )));
    }
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut conns: Vec<Client> = (0..N)
        .map(|i| {
            let s = std::net::TcpStream::connect(srv.addr())
                .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", srv.diagnostics()));
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            Client::new(s)
        })
        .collect();
    // Every connection is open (none was closed by the server meanwhile).
    let request = req("GET", "/small.txt", &[]);
    for (i, c) in conns.iter_mut().enumerate() {
        c.try_send(&request)
            .unwrap_or_else(|e| panic!("send on connection {i}: {e}"));
    }
    let mut failed = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        match c.read_response(false) {
            Ok(r) if r.status == 200 && r.body == SMALL => {}
            Ok(r) => failed.push(format!("#{i}: {r:?}")),
            Err(e) => failed.push(format!("#{i}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {N} connections not answered correctly; first: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        srv.diagnostics()
    );
}

/// Case 6: a half-sent request is closed by `--header-timeout 1s` within ~3 s (also when its
/// bytes trickle in), so is a connection that never sends a byte (once the deferred accept
/// hands it over), an idle keep-alive connection by `--keepalive-timeout 1s`, and other
/// clients are served normally meanwhile.
pub fn header_timeout(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--header-timeout", "1s", "--keepalive-timeout", "1s"])
        .start();
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    thread::scope(|s| {
        // A steady client: alternately fresh and reused connections.
        let steady = s.spawn(|| {
            let mut keep = Client::new(srv.connect());
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = if n % 2 == 0 {
                    keep.exchange(&req("GET", "/small.txt", &[]))
                } else {
                    get(&srv, "/small.txt", &[])
                };
                expect(&srv, "steady client", &r, 200, Some(SMALL));
                assert!(
                    t0.elapsed() < Duration::from_secs(1),
                    "slow: {:?}",
                    t0.elapsed()
                );
                served.fetch_add(1, Ordering::Relaxed);
                n += 1;
                thread::sleep(Duration::from_millis(100));
            }
        });

        let half = s.spawn(|| {
            let mut c = Client::new(srv.connect());
            let t0 = Instant::now();
            c.send(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\n");
            let closed = c.wait_close(Duration::from_secs(6));
            (t0.elapsed(), closed)
        });
        let trickle = s.spawn(|| {
            let stream = srv.connect();
            let mut reader = stream.try_clone().unwrap();
            let t0 = Instant::now();
            let writer = thread::spawn(move || {
                let mut w = stream;
                for b in b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                    if w.write_all(&[*b]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(150));
                }
            });
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            reader.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
            let end = loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break t0.elapsed(),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            };
            let _ = writer.join();
            (end, got)
        });
        // Connects and never sends a byte: with TCP_DEFER_ACCEPT (1 s by default) the kernel
        // hands it over after about a second anyway, then the header timeout closes it.
        let silent = s.spawn(|| {
            let mut c = Client::new(srv.connect());
            let t0 = Instant::now();
            let closed = c.wait_close(Duration::from_secs(8));
            (t0.elapsed(), closed)
        });
        let idle = s.spawn(|| {
            let mut c = Client::new(srv.connect());
            let r = c.exchange(&req("GET", "/small.txt", &[]));
            let t0 = Instant::now();
            let closed = c.wait_close(Duration::from_secs(6));
            (r, t0.elapsed(), closed)
        });

        let (t, closed) = half.join().unwrap();
        let leftover = closed.unwrap_or_else(|b| {
            panic!(
                "half-sent request still open after {t:?}; got {b:?}\n{}",
                srv.diagnostics()
            )
        });
        check_timeout_bytes("half-sent request", &leftover);
        assert!(
            t >= Duration::from_millis(800) && t <= Duration::from_secs(3),
            "half-sent request closed after {t:?} (want ~1 s)"
        );
        let (t, got) = trickle.join().unwrap();
        check_timeout_bytes("trickled request", &got);
        assert!(
            t <= Duration::from_millis(3500),
            "trickled header (1 byte / 150 ms) kept the connection open {t:?}"
        );
        let (t, closed) = silent.join().unwrap();
        let leftover = closed.unwrap_or_else(|b| {
            panic!(
                "connection that sent nothing still open after {t:?}; got {b:?}\n{}",
                srv.diagnostics()
            )
        });
        check_timeout_bytes("silent connection", &leftover);
        assert!(
            t >= Duration::from_millis(800) && t <= Duration::from_secs(5),
            "silent connection closed after {t:?} (want the deferred accept, ~1-2 s, + 1 s)"
        );
        let (r, t, closed) = idle.join().unwrap();
        expect(&srv, "idle client's request", &r, 200, Some(SMALL));
        assert!(
            closed.is_ok(),
            "idle keep-alive connection not closed after {t:?}"
        );
        assert!(
            t >= Duration::from_millis(800) && t <= Duration::from_secs(3),
            "idle keep-alive connection closed after {t:?} (want ~1 s)"
        );
        stop.store(true, Ordering::Relaxed);
        steady.join().unwrap();
    });
    assert!(
        served.load(Ordering::Relaxed) >= 8,
        "steady client served only {} times",
        served.load(Ordering::Relaxed)
    );
}

/// A timed-out connection may carry a 408 before the close, nothing else.
fn check_timeout_bytes(what: &str, bytes: &[u8]) {
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.0 408"),
            "{what}: unexpected bytes before the close: {text:?}"
        );
    }
}

/// Case 8d: HTTP/1.0 and 1.1 keep-alive rules, `Connection: close`, split writes.
pub fn connection_management(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let close_wait = Duration::from_secs(3);

    // HTTP/1.0 closes by default.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /small.txt HTTP/1.0\r\n\r\n");
    expect(&srv, "HTTP/1.0", &r, 200, Some(SMALL));
    assert!(!r.has_token("connection", "keep-alive"), "{r:?}");
    assert!(
        c.wait_close(close_wait).is_ok(),
        "HTTP/1.0 connection left open"
    );

    // HTTP/1.0 with Connection: keep-alive stays open and says so.
    let mut c = Client::new(srv.connect());
    let ka = b"GET /small.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    for i in 0..2 {
        let r = c.exchange(ka);
        expect(
            &srv,
            &format!("HTTP/1.0 keep-alive #{i}"),
            &r,
            200,
            Some(SMALL),
        );
        assert!(r.has_token("connection", "keep-alive"), "{r:?}");
    }
    let r = c.exchange(b"GET /small.txt HTTP/1.0\r\n\r\n");
    expect(&srv, "HTTP/1.0 last", &r, 200, Some(SMALL));
    assert!(
        c.wait_close(close_wait).is_ok(),
        "HTTP/1.0 connection left open"
    );

    // HTTP/1.1 keeps alive; Connection: close is honoured, and what follows is not answered.
    let mut c = Client::new(srv.connect());
    for i in 0..3 {
        let r = c.exchange(&req("GET", "/small.txt", &[]));
        expect(&srv, &format!("keep-alive #{i}"), &r, 200, Some(SMALL));
        assert!(!r.closes(), "{r:?}");
    }
    let mut two = req("GET", "/small.txt", &[("Connection", "close")]);
    two.extend(req("GET", "/index.html", &[]));
    c.send(&two);
    let r = c
        .read_response(false)
        .expect("response to Connection: close");
    expect(&srv, "Connection: close", &r, 200, Some(SMALL));
    assert!(r.has_token("connection", "close"), "{r:?}");
    let rest = c.wait_close(close_wait);
    assert!(
        matches!(&rest, Ok(b) if b.is_empty()),
        "after Connection: close: {rest:?}"
    );

    // A request written one byte at a time, then one split between head and body.
    let mut c = Client::new(srv.connect());
    for b in req("GET", "/small.txt", &[("X-Split", "yes")]) {
        c.send(&[b]);
        thread::sleep(Duration::from_millis(2));
    }
    let r = c.read_response(false).expect("byte-by-byte request");
    expect(&srv, "byte-by-byte", &r, 200, Some(SMALL));
    c.send(b"POST /small.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello");
    thread::sleep(Duration::from_millis(50));
    c.send(b"world");
    let r = c.read_response(false).expect("split body");
    expect(&srv, "split body", &r, 405, None);
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "after split body", &r, 200, Some(SMALL));

    // Absolute-form targets must be accepted (RFC 9112 §3.2.2).
    let r = c.exchange(b"GET http://localhost/small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect(&srv, "absolute-form", &r, 200, Some(SMALL));
}

/// One bad request with a valid one pipelined behind it: exactly one answer with `status`
/// (one of `statuses`), then the connection closes.
fn reject(srv: &Server, what: &str, bad: &[u8], statuses: &[u16]) -> Response {
    let mut c = Client::new(srv.connect());
    let mut bytes = bad.to_vec();
    bytes.extend(req("GET", "/small.txt", &[]));
    let _ = c.try_send(&bytes);
    let r = c
        .read_response(bad.starts_with(b"HEAD"))
        .unwrap_or_else(|e| panic!("{what}: no answer ({e})\n{}", srv.diagnostics()));
    assert!(
        statuses.contains(&r.status),
        "{what}: status {} (want {statuses:?})\n{r:?}\n{}",
        r.status,
        srv.diagnostics()
    );
    // RFC 9110 §6.6.1: an origin server with a clock sends Date in every 4xx.
    assert!(
        r.status >= 500 || r.header("date").is_some(),
        "{what}: {} without Date\n{r:?}",
        r.status
    );
    let head = bad.starts_with(b"HEAD");
    match c.wait_close(Duration::from_secs(3)) {
        Ok(rest) if head && !rest.is_empty() => panic!(
            "{what}: the {} answer to a HEAD carried a body (RFC 9110 §9.3.2): {:?}",
            r.status,
            String::from_utf8_lossy(&rest)
        ),
        Ok(rest) => assert!(
            rest.is_empty(),
            "{what}: answered the request after the error: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(rest) => panic!(
            "{what}: connection left open after {} (and sent {:?})",
            r.status,
            String::from_utf8_lossy(&rest)
        ),
    }
    r
}

/// Case 8f: limits and malformed requests get their status, then the connection closes.
pub fn request_errors(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--max-body", "1024"])
        .start();
    let long_target = format!("/{}", "a".repeat(10 * 1024));
    reject(
        &srv,
        "request line over 8 KiB",
        &req("GET", &long_target, &[]),
        &[414],
    );
    let big_value = "v".repeat(20 * 1024);
    reject(
        &srv,
        "header section over 16 KiB",
        &req("GET", "/small.txt", &[("X-Big", &big_value)]),
        &[431],
    );
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    reject(
        &srv,
        "150 header fields",
        &req("GET", "/small.txt", &many),
        &[431],
    );
    reject(
        &srv,
        "HTTP/2.0 request line",
        b"GET /small.txt HTTP/2.0\r\nHost: localhost\r\n\r\n",
        &[505],
    );
    reject(
        &srv,
        "missing Host on HTTP/1.1",
        b"GET /small.txt HTTP/1.1\r\n\r\n",
        &[400],
    );
    reject(
        &srv,
        "two Host fields",
        b"GET /small.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        &[400],
    );
    let framing: [(&str, &[u8]); 7] = [
        ("Content-Length and Transfer-Encoding", b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two different Content-Length", b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("invalid Content-Length", b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc"),
        ("obs-fold", b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n"),
        ("NUL in a field value", b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
        ("space before colon", b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n"),
        ("bare CR in a field value", b"GET /small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
    ];
    for (what, bad) in framing {
        reject(&srv, what, bad, &[400]);
    }
    reject(
        &srv,
        "Transfer-Encoding: gzip",
        b"POST /small.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        &[400, 501], // RFC 9112 §6.3: chunked not final → 400; §6.1: unknown coding → 501
    );
    reject(
        &srv,
        "Transfer-Encoding: chunked, gzip",
        b"POST /small.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        &[400], // RFC 9112 §6.3: chunked not final → 400 and close
    );
    reject(
        &srv,
        "malformed method",
        b"G@T /small.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[400, 501],
    );
    reject(
        &srv,
        "body over --max-body (Content-Length)",
        b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",
        &[413],
    );
    let mut chunked =
        b"POST /small.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"3e8\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 1000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    reject(&srv, "chunked body over --max-body", &chunked, &[413]);

    // Just under the limits: served.
    let mut c = Client::new(srv.connect());
    let deep = format!("/small.txt?{}", "q".repeat(7 * 1024));
    let r = c.exchange(&req("GET", &deep, &[]));
    expect(&srv, "7 KiB request line", &r, 200, Some(SMALL));
    let value = "v".repeat(12 * 1024);
    let r = c.exchange(&req("GET", "/small.txt", &[("X-Big", &value)]));
    expect(&srv, "12 KiB header section", &r, 200, Some(SMALL));
    let r = c.exchange(&req("GET", "/small.txt", &many[..90]));
    expect(&srv, "90 header fields", &r, 200, Some(SMALL));

    // Within the limit: the body is read and discarded and the connection goes on.
    let mut c = Client::new(srv.connect());
    let mut ok = b"POST /small.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
    ok.extend(std::iter::repeat_n(b'y', 1000));
    let r = c.exchange(&ok);
    expect(&srv, "body within --max-body", &r, 405, None);
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "after a discarded body", &r, 200, Some(SMALL));
    // Unknown (but well-formed) methods: 405 or 501, never served.
    for m in ["FOO", "get", "BREW"] {
        let r = c.exchange(&req(m, "/small.txt", &[]));
        assert!(matches!(r.status, 405 | 501), "{m}: {r:?}");
        if r.closes() {
            c = Client::new(srv.connect());
        }
    }
    // An error answer to HEAD has no body either (RFC 9110 §9.3.2).
    reject(
        &srv,
        "HEAD without Host",
        b"HEAD /small.txt HTTP/1.1\r\n\r\n",
        &[400],
    );
}

/// RFC 9110 §10.1.1: `Expect: 100-continue` gets 100 (Continue) or the final status at once,
/// without the client having sent the body.
pub fn expect_continue(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(3));
    c.send(b"POST /small.txt HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("Expect: 100-continue left unanswered: {e}"));
    if r.status == 100 {
        c.send(b"hello");
        let r = c.read_response(false).expect("final response after 100");
        expect(&srv, "after 100 Continue", &r, 405, None);
    } else {
        expect(&srv, "Expect: 100-continue", &r, 405, None);
    }
}

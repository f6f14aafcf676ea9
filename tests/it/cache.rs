//! The response cache (issue 14) against a real origin that counts its requests and sets the
//! caching fields under test (the scripted upstream of `proxy.rs`: one thread per
//! connection, so concurrent requests really are concurrent). Every case runs on every
//! backend: revalidation, conditional and range answers from entries, stale-while-revalidate,
//! stale-if-error on a 503, request collapsing, purge in every worker, the status report and
//! the access log's `cache=` field.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{run_ringd, Server, ServerBuilder, TempDir};
use crate::http::Client;
use crate::proxy::{Action, Upstream};

/// ringd on `backend` with `workers` workers and a config whose `{UP}` is `up`.
fn start(backend: &str, dir: &TempDir, conf: &str, up: &Upstream, workers: usize) -> Server {
    dir.write(
        "c.toml",
        conf.replace("{UP}", &up.addr.to_string()).as_bytes(),
    );
    dir.write("www/x.txt", b"x\n");
    ServerBuilder::new(backend, dir.path())
        .config(&dir.path().join("c.toml"))
        .workers(workers)
        .args(&[
            "--access-log",
            dir.path().join("access.log").to_str().unwrap(),
        ])
        .start()
}

const CONF: &str = r#"
[cache]
max_bytes = "1MiB"
purge_from = ["127.0.0.1"]
status_path = "/.ringd/cache"

[upstreams.app]
servers = ["{UP}"]
connect_timeout = "500ms"
read_timeout = "2s"
max_fails = 0

[[sites]]
hosts = ["_"]
root = "www"

  [[sites.routes]]
  path = "/swr/*"
  proxy = { upstream = "app" }
  cache = { stale_while_revalidate = "10s" }

  [[sites.routes]]
  path = "/cookie/*"
  proxy = { upstream = "app" }
  cache = { store_set_cookie = true }

  [[sites.routes]]
  path = "/*"
  proxy = { upstream = "app" }
  cache = { stale_if_error = "2s" }
"#;

fn response(status: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn path_of(req: &[u8]) -> String {
    String::from_utf8_lossy(req)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn field(req: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(req);
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn get(c: &mut Client, path: &str, extra: &str) -> crate::http::Response {
    c.exchange(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n").as_bytes())
}

/// A stale entry is revalidated with If-None-Match: a 304 refreshes it (REVALIDATED), a new
/// ETag replaces it; clients' conditional and range requests are answered from the entry
/// (304, 412, 206, 416, If-Range); no-cache is stored but revalidated on every use; Vary: *
/// is never served from the cache; Set-Cookie responses only where the route says so.
pub fn revalidation_conditionals_and_ranges(backend: &str) {
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    let up = Upstream::spawn(move |req, _| {
        let ver = v.load(Ordering::SeqCst);
        let etag = format!("\"v{ver}\"");
        let p = path_of(req);
        let body = format!("body version {ver} of {p}");
        let cc = if p.starts_with("/nocache") {
            "no-cache"
        } else {
            "max-age=1"
        };
        if field(req, "if-none-match").as_deref() == Some(etag.as_str()) {
            return Action::Reply(response(
                "304 Not Modified",
                &format!("ETag: {etag}\r\nCache-Control: {cc}\r\nX-Refreshed: {ver}\r\n"),
                "",
            ));
        }
        let extra = match p.as_str() {
            "/varystar" => "Cache-Control: max-age=60\r\nVary: *\r\n".to_string(),
            "/cookie/a" => "Cache-Control: max-age=60\r\nSet-Cookie: s=1\r\n".to_string(),
            _ => format!(
                "ETag: {etag}\r\nCache-Control: {cc}\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\n"
            ),
        };
        Action::Reply(response("200 OK", &extra, &body))
    });
    let d = TempDir::new("cache-reval");
    let srv = start(backend, &d, CONF, &up, 1);
    let mut c = Client::new(srv.connect());
    let full = "body version 1 of /r";
    let r = get(&mut c, "/r", "");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("MISS")),
        "{}",
        r.head
    );
    assert_eq!(r.body_str(), full);
    let r = get(&mut c, "/r", "");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(up.count(), 1);

    // Clients' conditional and range requests, answered from the entry.
    let r = get(&mut c, "/r", "If-None-Match: \"v1\"\r\n");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (304, Some("HIT")),
        "{}",
        r.head
    );
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = get(
        &mut c,
        "/r",
        "If-Modified-Since: Tue, 01 Dec 2026 10:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 304, "{}", r.head);
    let r = get(&mut c, "/r", "If-Match: \"other\"\r\n");
    assert_eq!(r.status, 412, "{}", r.head);
    let r = get(&mut c, "/r", "Range: bytes=0-3\r\n");
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body_str(), "body");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-3/{}", full.len()).as_str())
    );
    let r = get(&mut c, "/r", "Range: bytes=5000-\r\n");
    assert_eq!(r.status, 416, "{}", r.head);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", full.len()).as_str())
    );
    let r = get(&mut c, "/r", "Range: bytes=0-3\r\nIf-Range: \"old\"\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, full));
    let r = get(&mut c, "/r", "Range: bytes=0-3\r\nIf-Range: \"v1\"\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(
        up.count(),
        1,
        "conditional and range requests reached the origin"
    );

    // Stale: revalidated with the entry's validators; the 304 refreshes the stored head.
    thread::sleep(Duration::from_millis(1100));
    let r = get(&mut c, "/r", "Range: bytes=0-3\r\n");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (206, Some("REVALIDATED")),
        "{}",
        r.head
    );
    assert_eq!(r.body_str(), "body");
    assert_eq!(
        r.header("x-refreshed"),
        Some("1"),
        "the 304's fields refresh the head"
    );
    let sent = up.requests.lock().unwrap().last().unwrap().clone();
    assert_eq!(field(&sent, "if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(
        field(&sent, "if-modified-since").as_deref(),
        Some("Tue, 01 Dec 2026 10:00:00 GMT")
    );
    assert_eq!(
        field(&sent, "range"),
        None,
        "the client's Range went to the origin"
    );
    assert_eq!(get(&mut c, "/r", "").header("x-cache"), Some("HIT"));
    assert_eq!(up.count(), 2);

    // A new version: the origin's 200 replaces the entry.
    version.store(2, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1100));
    let r = get(&mut c, "/r", "");
    assert_eq!(r.header("x-cache"), Some("MISS"), "{}", r.head);
    assert_eq!(r.body_str(), "body version 2 of /r");
    let r = get(&mut c, "/r", "");
    assert_eq!(
        (r.header("x-cache"), r.body_str().as_str()),
        (Some("HIT"), "body version 2 of /r")
    );

    // no-cache: stored, yet every use is revalidated.
    let n = up.count();
    assert_eq!(get(&mut c, "/nocache", "").header("x-cache"), Some("MISS"));
    let r = get(&mut c, "/nocache", "");
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{}", r.head);
    assert_eq!(r.body_str(), "body version 2 of /nocache");
    assert_eq!(up.count(), n + 2);

    // Vary: * is never served from the cache; Set-Cookie only with store_set_cookie.
    let n = up.count();
    get(&mut c, "/varystar", "");
    assert_eq!(get(&mut c, "/varystar", "").header("x-cache"), Some("MISS"));
    assert_eq!(up.count(), n + 2);
    get(&mut c, "/cookie/a", "");
    let r = get(&mut c, "/cookie/a", "");
    assert_eq!(r.header("x-cache"), Some("HIT"), "{}", r.head);
    assert_eq!(r.header("set-cookie"), Some("s=1"));

    // A POST on a caching route passes by.
    let r = c.exchange(b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(r.header("x-cache"), Some("BYPASS"), "{}", r.head);
}

/// stale-while-revalidate: a stale copy answers at once and is refreshed in the background;
/// stale-if-error also covers an origin's 503, and ends with its window.
pub fn stale_while_revalidate_and_if_error(backend: &str) {
    let n = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicUsize::new(0));
    let (n2, fail2) = (n.clone(), fail.clone());
    let up = Upstream::spawn(move |req, _| {
        let k = n2.fetch_add(1, Ordering::SeqCst) + 1;
        if fail2.load(Ordering::SeqCst) == 1 {
            return Action::Reply(response("503 Service Unavailable", "", "down"));
        }
        let body = format!("fetch {k} of {}", path_of(req));
        let r = response("200 OK", "Cache-Control: max-age=1\r\n", &body);
        if k > 1 && path_of(req).starts_with("/swr") {
            // A slow refresh: the client must not wait for it.
            Action::Slow(vec![r], Duration::from_millis(400))
        } else {
            Action::Reply(r)
        }
    });
    let d = TempDir::new("cache-swr");
    let srv = start(backend, &d, CONF, &up, 1);
    let mut c = Client::new(srv.connect());
    assert_eq!(get(&mut c, "/swr/a", "").body_str(), "fetch 1 of /swr/a");
    thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    let r = get(&mut c, "/swr/a", "");
    let took = t.elapsed();
    assert_eq!(
        (r.header("x-cache"), r.body_str().as_str()),
        (Some("STALE"), "fetch 1 of /swr/a"),
        "{}",
        r.head
    );
    assert!(
        took < Duration::from_millis(300),
        "the stale answer waited {took:?}"
    );
    thread::sleep(Duration::from_millis(700));
    let mut c2 = Client::new(srv.connect());
    let r = get(&mut c2, "/swr/a", "");
    assert_eq!(
        (r.header("x-cache"), r.body_str().as_str()),
        (Some("HIT"), "fetch 2 of /swr/a"),
        "the background refresh did not land: {}",
        r.head
    );
    assert_eq!(up.count(), 2);

    // stale-if-error on a 503 from the origin, then the 503 itself after the window.
    let mut c3 = Client::new(srv.connect());
    assert_eq!(get(&mut c3, "/e", "").header("x-cache"), Some("MISS"));
    fail.store(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1100));
    let r = get(&mut c3, "/e", "");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("STALE")),
        "{}",
        r.head
    );
    thread::sleep(Duration::from_millis(2100));
    let r = get(&mut c3, "/e", "");
    assert_eq!(r.status, 503, "{}", r.head);
}

/// Request collapsing: 100 concurrent misses for one key wait for one origin fetch per
/// worker; all get the same body.
pub fn collapsing(backend: &str) {
    let up = Upstream::spawn(|req, _| {
        let r = response(
            "200 OK",
            "Cache-Control: max-age=60\r\n",
            &format!("one answer for {}", path_of(req)),
        );
        Action::Slow(vec![r], Duration::from_millis(300))
    });
    let d = TempDir::new("cache-collapse");
    let workers = 2;
    let srv = start(backend, &d, CONF, &up, workers);
    let addr: SocketAddr = srv.addr().parse().unwrap();
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                let mut c = Client::new(s);
                c.set_timeout(Duration::from_secs(20));
                b.wait();
                let r = get(&mut c, "/k", "");
                (
                    r.status,
                    r.body_str(),
                    r.header("x-cache").map(str::to_string),
                )
            })
        })
        .collect();
    let mut misses = 0;
    for t in threads {
        let (status, body, tag) = t.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "one answer for /k"));
        misses += usize::from(tag.as_deref() == Some("MISS"));
    }
    let fetched = up.count();
    assert!(
        (1..=workers).contains(&fetched),
        "{fetched} origin requests for 100 concurrent misses on {workers} workers"
    );
    assert_eq!(misses, fetched);
}

/// PURGE from a purge_from peer (and `ringd purge URL`) drops an entry in every worker; other
/// peers get 403; the status path reports each worker's counters; the access log says
/// `cache=HIT` / `cache=MISS`.
pub fn purge_status_and_log(backend: &str) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::spawn(move |_, _| {
        let k = n2.fetch_add(1, Ordering::SeqCst);
        let gen = if k < 2 { "old" } else { "new" };
        Action::Reply(response("200 OK", "Cache-Control: max-age=60\r\n", gen))
    });
    let d = TempDir::new("cache-purge");
    let srv = start(backend, &d, CONF, &up, 2);
    // Fill both workers (SO_REUSEPORT spreads connections; more than enough of them).
    // Sequential first requests so each worker fetches at most once.
    for _ in 0..24 {
        let mut c = Client::new(srv.connect());
        let r = get(&mut c, "/p", "");
        assert_eq!(r.body_str(), "old", "{}", r.head);
    }
    let fetched = up.count();
    assert!((1..=2).contains(&fetched));
    // A peer outside purge_from: 403 (connect from 127.0.0.2).
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let addr: SocketAddr = srv.addr().parse().unwrap();
    s.connect(&addr.into()).unwrap();
    let mut other = Client::new(s.into());
    let r = other.exchange(b"PURGE /p HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 403, "{}", r.head);
    let r = get(&mut other, "/.ringd/cache", "");
    assert!(
        !r.body_str().contains("hit_ratio"),
        "the status report went to a stranger"
    );
    // Make the origin's answer "new" from now on, then purge with the subcommand.
    n.store(2, Ordering::SeqCst);
    let (st, out, err) = run_ringd(
        &["purge", "http://h/p", "--to", &srv.addr()],
        Duration::from_secs(10),
    );
    assert!(st.success(), "ringd purge: {out} {err}");
    assert!(out.contains("200"), "{out}");
    for _ in 0..24 {
        let mut c = Client::new(srv.connect());
        let r = get(&mut c, "/p", "");
        assert_eq!(
            r.body_str(),
            "new",
            "a worker kept the purged entry: {}",
            r.head
        );
    }
    // PURGE over HTTP from an allowed peer.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"PURGE /p HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(get(&mut c, "/p", "").header("x-cache"), Some("MISS"));
    // The status report: one object per worker, hits counted.
    let r = get(&mut c, "/.ringd/cache", "");
    assert_eq!(r.status, 200, "{}", r.head);
    let body = r.body_str();
    assert_eq!(body.matches("\"worker\"").count(), 2, "{body}");
    assert!(body.contains("\"hit_ratio\""), "{body}");
    assert!(!body.contains("\"hits\": 0, \"misses\": 0"), "{body}");
    // Bad [cache] keys are config errors with their place.
    let bad = d.write(
        "bad.toml",
        b"[cache]\npurge_from = [\"nonsense\"]\nstatus_path = \"x\"\n[[sites]]\nhosts = [\"_\"]\n",
    );
    let (st, _, err) = run_ringd(&["check", bad.to_str().unwrap()], Duration::from_secs(10));
    assert!(!st.success());
    assert!(
        err.contains("bad.toml:2:") && err.contains("purge_from"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:3:") && err.contains("status_path"),
        "{err}"
    );
    // The access log (flushed at least once a second).
    thread::sleep(Duration::from_millis(1300));
    let log = std::fs::read_to_string(d.path().join("access.log")).unwrap_or_default();
    assert!(log.contains("cache=HIT"), "{log}");
    assert!(log.contains("cache=MISS"), "{log}");
}

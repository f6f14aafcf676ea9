//! Process lifecycle and CLI: SIGTERM under load, the access log, start-up errors (port in
//! use, missing root) and `ringd doctor`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{run_ringd, unavailable_reason, ServerBuilder, Skip, TempDir};
use crate::http::{req, Client, ReadError};
use crate::static_files::{expect, site, ROOT_INDEX, SMALL};

/// Case 7: SIGTERM while 20 keep-alive clients fetch files: the server exits 0 within the
/// shutdown timeout, and every response that started arrived whole.
pub fn sigterm_under_load(backend: &str) {
    let site = site(false);
    let mut srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--shutdown-timeout", "5s"])
        .start();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let addr = srv.addr();
    let exit = thread::scope(|s| {
        for t in 0..20 {
            let (stop, done, failures, addr, site) = (&stop, &done, &failures, &addr, &site);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut n = 0usize;
                'conns: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else {
                        break; // refused: the server stopped listening
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut c = Client::new(stream);
                    loop {
                        let (path, body): (&str, &[u8]) = if (t + n).is_multiple_of(2) {
                            ("/medium.bin", &site.medium)
                        } else {
                            ("/small.txt", SMALL)
                        };
                        n += 1;
                        if c.try_send(&req("GET", path, &[])).is_err() {
                            continue 'conns;
                        }
                        match c.read_response(false) {
                            Ok(r) if r.status == 200 && r.body == body => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) if r.status == 503 && r.closes() => continue 'conns,
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("client {t}: wrong answer for {path}: {r:?}")),
                            // Closed before a response began: the keep-alive race, allowed.
                            Err(ReadError::Closed) | Err(ReadError::Io(_)) => continue 'conns,
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("client {t}: broken response to {path}: {e}"));
                                continue 'conns;
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break 'conns;
                        }
                    }
                }
            });
        }
        // Let the load build up, then ask the server to stop.
        let t0 = Instant::now();
        while done.load(Ordering::Relaxed) < 40 && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(200));
        let before = done.load(Ordering::Relaxed);
        let exit = srv.terminate(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        (before, exit)
    });
    let (before, (status, took)) = exit;
    let failures = failures.into_inner().unwrap();
    assert!(before >= 40, "only {before} responses before SIGTERM");
    assert!(
        failures.is_empty(),
        "{} broken responses during shutdown:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        srv.diagnostics()
    );
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?} (took {took:?})\n{}",
        srv.diagnostics()
    );
    assert!(
        took <= Duration::from_secs(6),
        "exit took {took:?} (shutdown timeout 5 s)"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still accepting after exit"
    );
}

/// The drain's grace: a request sent on an idle keep-alive connection just after SIGTERM (its
/// client could not have seen any close yet) is answered, with `Connection: close`, never cut;
/// a connection that stays idle is closed at the grace's end, well before the shutdown
/// timeout, and the server exits 0.
pub fn sigterm_drain_grace(backend: &str) {
    let site = site(false);
    let mut srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--shutdown-timeout", "8s"])
        .start();
    let mut busy = Client::new(srv.connect());
    let mut idle = Client::new(srv.connect());
    for c in [&mut busy, &mut idle] {
        c.try_send(&req("GET", "/small.txt", &[])).unwrap();
        let r = c.read_response(false).unwrap();
        assert!(r.status == 200 && !r.closes(), "{r:?}");
    }
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    busy.try_send(&req("GET", "/small.txt", &[]))
        .unwrap_or_else(|e| panic!("send after SIGTERM: {e}\n{}", srv.diagnostics()));
    match busy.read_response(false) {
        Ok(r) => {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body, SMALL);
            assert!(r.closes(), "a drained connection says close: {r:?}");
        }
        Err(e) => panic!(
            "a request sent 300 ms after SIGTERM on an idle keep-alive connection was cut: {e}\n{}",
            srv.diagnostics()
        ),
    }
    assert!(
        matches!(busy.read_response(false), Err(ReadError::Closed)),
        "closed after the response that said close"
    );
    match idle.read_response(false) {
        Err(ReadError::Closed) => {}
        other => panic!("the idle connection: {other:?}"),
    }
    let closed_after = t0.elapsed();
    assert!(
        closed_after < Duration::from_secs(4),
        "an idle connection outlived the grace: closed {closed_after:?} after SIGTERM"
    );
    let st = srv
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", srv.diagnostics()));
    assert!(st.success(), "exit {st:?}\n{}", srv.diagnostics());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "exit took {:?}: the drain waited for the shutdown timeout",
        t0.elapsed()
    );
}

/// The drain takes in the backlog: connections the kernel completed while the server was
/// stopped (SIGSTOP), each with a request already sent, are answered after SIGTERM, not reset
/// with the listener, and closed within the drain's grace. (Whether the answer says
/// `Connection: close` depends on whether the backend saw the accept or the SIGTERM first.)
pub fn sigterm_backlog_answered(backend: &str) {
    let site = site(false);
    let mut srv = ServerBuilder::new(backend, site.dir.path())
        .workers(1)
        .args(&["--shutdown-timeout", "8s"])
        .start();
    // Serving first (a SIGTERM during start-up is another matter).
    let mut first = Client::new(srv.connect());
    first.try_send(&req("GET", "/small.txt", &[])).unwrap();
    assert_eq!(first.read_response(false).unwrap().status, 200);
    drop(first);
    srv.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(100));
    let mut clients: Vec<Client> = (0..6).map(|_| Client::new(srv.connect())).collect();
    for c in &mut clients {
        c.try_send(&req("GET", "/small.txt", &[])).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    srv.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(50));
    srv.signal(libc::SIGCONT);
    for (i, c) in clients.iter_mut().enumerate() {
        match c.read_response(false) {
            Ok(r) => {
                assert_eq!(r.status, 200, "client {i}: {r:?}");
                assert_eq!(r.body, SMALL);
            }
            Err(e) => panic!(
                "client {i}: a request waiting in the backlog at SIGTERM was cut: {e}\n{}",
                srv.diagnostics()
            ),
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        match c.read_response(false) {
            Err(ReadError::Closed) => {}
            other => panic!("client {i}: after its answer, not closed: {other:?}"),
        }
    }
    let st = srv
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", srv.diagnostics()));
    assert!(st.success(), "exit {st:?}\n{}", srv.diagnostics());
}

/// Case 9: `--access-log PATH` writes combined-format lines, all flushed by a SIGTERM exit.
pub fn access_log(backend: &str) {
    let site = site(false);
    let logs = TempDir::new("log");
    let path = logs.path().join("access.log");
    let mut srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--access-log", &path.display().to_string()])
        .start();
    let mut c = Client::new(srv.connect());
    let r = c.exchange(&req(
        "GET",
        "/small.txt",
        &[
            ("User-Agent", "it-agent/1.0"),
            ("Referer", "http://ref.example/x"),
        ],
    ));
    expect(&srv, "GET", &r, 200, Some(SMALL));
    let r = c.exchange(&req("GET", "/missing.txt", &[]));
    expect(&srv, "404", &r, 404, None);
    let r = c.exchange(&req("HEAD", "/small.txt", &[]));
    expect(&srv, "HEAD", &r, 200, Some(b""));
    let r = c.exchange(&req("GET", "/index.html", &[]));
    expect(&srv, "index", &r, 200, Some(ROOT_INDEX));
    drop(c);
    let (status, _) = srv.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit: {status:?}\n{}", srv.diagnostics());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("access log {}: {e}\n{}", path.display(), srv.diagnostics()));
    let lines: Vec<Combined> = text
        .lines()
        .map(|l| parse_combined(l).unwrap_or_else(|e| panic!("not combined format ({e}): {l:?}")))
        .collect();
    assert_eq!(lines.len(), 4, "log lines:\n{text}");
    let find = |req: &str, status: u16| {
        lines
            .iter()
            .find(|l| l.request == req && l.status == status)
            .unwrap_or_else(|| panic!("no line for {req:?} {status}:\n{text}"))
    };
    let l = find("GET /small.txt HTTP/1.1", 200);
    assert_eq!(l.bytes, "36", "{text}");
    assert_eq!(l.referer, "http://ref.example/x", "{text}");
    assert_eq!(l.agent, "it-agent/1.0", "{text}");
    assert_eq!(l.host, "127.0.0.1", "{text}");
    find("GET /missing.txt HTTP/1.1", 404);
    let l = find("HEAD /small.txt HTTP/1.1", 200);
    assert!(l.bytes == "-" || l.bytes == "0", "HEAD bytes {:?}", l.bytes);
    let l = find("GET /index.html HTTP/1.1", 200);
    assert_eq!(l.bytes, ROOT_INDEX.len().to_string(), "{text}");
}

struct Combined {
    host: String,
    request: String,
    status: u16,
    bytes: String,
    referer: String,
    agent: String,
}

/// `host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status bytes "referer" "agent"`.
fn parse_combined(line: &str) -> Result<Combined, String> {
    let (host, rest) = line.split_once(' ').ok_or("no host")?;
    let (_ident, rest) = rest.split_once(' ').ok_or("no ident")?;
    let (_user, rest) = rest.split_once(' ').ok_or("no user")?;
    let rest = rest.strip_prefix('[').ok_or("no [time")?;
    let (time, rest) = rest.split_once("] ").ok_or("no time]")?;
    let t = time.as_bytes();
    let shape_ok = t.len() == 26
        && t[2] == b'/'
        && t[6] == b'/'
        && t[11] == b':'
        && t[14] == b':'
        && t[17] == b':'
        && t[20] == b' '
        && (t[21] == b'+' || t[21] == b'-')
        && t[3..6].iter().all(u8::is_ascii_alphabetic);
    if !shape_ok {
        return Err(format!("time {time:?}"));
    }
    let (request, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(' ').ok_or("no space after request")?;
    let (status, rest) = rest.split_once(' ').ok_or("no status")?;
    let (bytes, rest) = rest.split_once(' ').ok_or("no bytes")?;
    let (referer, rest) = quoted(rest)?;
    let (agent, rest) = quoted(rest.strip_prefix(' ').ok_or("no space after referer")?)?;
    if !rest.is_empty() {
        return Err(format!("trailing {rest:?}"));
    }
    if !(bytes == "-" || bytes.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("bytes {bytes:?}"));
    }
    Ok(Combined {
        host: host.to_string(),
        request,
        status: status.parse().map_err(|_| format!("status {status:?}"))?,
        bytes: bytes.to_string(),
        referer,
        agent,
    })
}

/// A `"…"` field (with `\"` escapes) at the start of `s`, and what follows it.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s
        .strip_prefix('"')
        .ok_or_else(|| format!("no quote at {s:?}"))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '"' => return Ok((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    Err(format!("unterminated quote in {s:?}"))
}

/// Case 10a: a port already in use is a one-line error naming the address, non-zero exit.
pub fn port_in_use(backend: &str) {
    let site = site(false);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().unwrap().to_string();
    let root = site.dir.path().display().to_string();
    let (status, _out, err) = run_ringd(
        &[
            "--listen",
            &addr,
            "--workers",
            "2",
            "--backend",
            backend,
            &root,
        ],
        Duration::from_secs(10),
    );
    if let Some(why) = unavailable_reason(&err).filter(|_| !err.contains(&addr)) {
        std::panic::panic_any(Skip(why));
    }
    assert!(
        !status.success(),
        "port in use but exit {status:?}; stderr {err:?}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].contains(&addr),
        "want one line naming {addr}, got stderr {err:?}"
    );
    drop(holder);
}

/// Case 10b: a missing root (or a root that is a file) is a clear one-line error.
pub fn missing_root() {
    let dir = TempDir::new("cli");
    let missing = dir.path().join("no-such-folder");
    let file = dir.write("a-file.txt", b"x");
    for root in [missing, file] {
        let shown = root.display().to_string();
        let (status, _out, err) = run_ringd(
            &["--listen", "127.0.0.1:0", &shown],
            Duration::from_secs(10),
        );
        assert!(!status.success(), "root {shown}: exit {status:?}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].contains(&shown),
            "root {shown}: want one line naming the folder, got {err:?}"
        );
    }
}

/// Case 10c: `ringd doctor` exits 0, mentions io_uring, the backends and the limits.
pub fn doctor() {
    let (status, out, err) = run_ringd(&["doctor"], Duration::from_secs(20));
    assert!(status.success(), "doctor: {status:?}\n{out}\n{err}");
    let text = format!("{out}\n{err}").to_ascii_lowercase();
    for word in [
        "io_uring",
        "epoll",
        "tokio-uring",
        "nofile",
        "memlock",
        "somaxconn",
        "pipe-max-size",
    ] {
        assert!(
            text.contains(word),
            "doctor does not mention {word}:\n{out}\n{err}"
        );
    }
}

/// `--busy-poll` (uring only). With it the uring worker answers keep-alive and pipelined
/// requests as usual, and once traffic stops it polls only for the configured time and then
/// sleeps: over a second of silence its CPU time stays far below the second a poll loop that
/// never gives up would burn. Other backends refuse the flag with a one-line error.
pub fn busy_poll(backend: &str) {
    let site = site(false);
    if backend != "uring" {
        let root = site.dir.path().display().to_string();
        let (status, _out, err) = run_ringd(
            &[
                "--listen",
                "127.0.0.1:0",
                "--backend",
                backend,
                "--busy-poll",
                "50us",
                &root,
            ],
            Duration::from_secs(10),
        );
        assert!(!status.success(), "{backend} took --busy-poll: {status:?}");
        assert!(
            err.trim().lines().count() == 1 && err.contains("--busy-poll"),
            "want one line about --busy-poll, got {err:?}"
        );
        return;
    }
    let srv = ServerBuilder::new(backend, site.dir.path())
        .args(&["--busy-poll", "200us"])
        .start();
    let mut c = Client::new(srv.connect());
    for i in 0..200 {
        let r = c.exchange(&req("GET", "/small.txt", &[]));
        expect(
            &srv,
            &format!("keep-alive request {i}"),
            &r,
            200,
            Some(SMALL),
        );
    }
    let batch: Vec<u8> = (0..16)
        .flat_map(|_| req("GET", "/small.txt", &[]))
        .collect();
    c.send(&batch);
    for i in 0..16 {
        let r = c.read_response(false).expect("pipelined response");
        expect(
            &srv,
            &format!("pipelined request {i}"),
            &r,
            200,
            Some(SMALL),
        );
    }
    // Idle: an open keep-alive connection, no requests.
    thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(srv.pid());
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(srv.pid()) - before;
    let hz = clock_ticks_per_second();
    assert!(
        used * 4 < hz,
        "an idle --busy-poll worker used {used} of {hz} CPU ticks in one second\n{}",
        srv.diagnostics()
    );
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "request after the idle second", &r, 200, Some(SMALL));
}

/// utime + stime of every thread of `pid` so far, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<i64>().unwrap() + f[12].parse::<i64>().unwrap()
}

fn clock_ticks_per_second() -> i64 {
    // SAFETY: sysconf reads a constant; it touches no memory of ours.
    i64::from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as i32)
}

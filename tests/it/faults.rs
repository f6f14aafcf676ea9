//! Faults from issue 16's fault runs (`scripts/faults.sh`), each a regression test named after
//! what it guards: file bodies still go out when no splice pipe can be made (the per-user
//! pipe budget exhausted), a CGI script that cannot start is answered (503 when the server
//! is short of a resource, 502 otherwise) and logged once rather than once per request, and
//! a SIGHUP of an unchanged CGI config reports no `backend` change.
//!
//! The pipe budget tests lower `fs.pipe-user-pages-hard` to one page (restored on drop) and
//! run ringd without CAP_SYS_RESOURCE/CAP_SYS_ADMIN (`setpriv`), so that the limit applies to
//! it and to nothing else that runs as root. They need root and a writable sysctl, and print
//! `SKIP` without them; `RINGD_REQUIRE_ROOT_FAULTS=1` (CI) makes that a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{random_bytes, Server, ServerBuilder, Skip, TempDir};
use crate::http::get;

const PIPE_HARD: &str = "/proc/sys/fs/pipe-user-pages-hard";

/// The sysctl is machine-wide: one test at a time lowers it.
static PIPE_BUDGET: Mutex<()> = Mutex::new(());

/// `fs.pipe-user-pages-hard` lowered to one page until dropped (then restored).
struct PipeBudgetSpent {
    saved: String,
}

impl PipeBudgetSpent {
    fn spend() -> PipeBudgetSpent {
        let saved = std::fs::read_to_string(PIPE_HARD).expect("read the sysctl");
        std::fs::write(PIPE_HARD, "1").expect("lower the sysctl");
        PipeBudgetSpent { saved }
    }
}

impl Drop for PipeBudgetSpent {
    fn drop(&mut self) {
        let _ = std::fs::write(PIPE_HARD, self.saved.trim());
    }
}

/// Why the pipe budget cannot be spent here, if it cannot.
fn pipe_budget_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (to lower fs.pipe-user-pages-hard)".into());
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .open(PIPE_HARD)
        .is_err()
    {
        return Some(format!("{PIPE_HARD} is not writable"));
    }
    if setpriv().is_none() {
        return Some("no setpriv (util-linux) to drop CAP_SYS_RESOURCE".into());
    }
    None
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn skip_or_fail(why: String) -> ! {
    if std::env::var_os("RINGD_REQUIRE_ROOT_FAULTS").is_some_and(|v| v != "0") {
        panic!("RINGD_REQUIRE_ROOT_FAULTS is set but {why}");
    }
    std::panic::panic_any(Skip(why));
}

/// ringd (one worker, `builder`'s flags) run through setpriv without the two capabilities
/// that exempt a process from the pipe budget.
fn start_unprivileged(builder: ServerBuilder, cwd: &Path) -> Server {
    let ringd = env!("CARGO_BIN_EXE_ringd").to_string();
    let mut args: Vec<String> = [
        "--bounding-set",
        "-sys_resource,-sys_admin",
        "--inh-caps",
        "-sys_resource,-sys_admin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(ringd);
    args.extend(builder.workers(1).command_line());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerBuilder::program(&setpriv().expect("checked"), &args, cwd).start()
}

/// With the pipe budget spent before the first file body (so no splice pipe exists or can be
/// made), files of every size still arrive whole and at once: the uring drivers copy through
/// memory instead of waiting for a pipe that will never come free (which stalled the body
/// until the send timeout) or closing the connection after the head.
pub fn no_splice_pipe_still_sends_file_bodies(backend: &str) {
    if let Some(why) = pipe_budget_unavailable() {
        skip_or_fail(why);
    }
    let d = TempDir::new("nopipe");
    let files = [
        ("medium.bin", random_bytes(100 * 1024, 1)),
        ("big.bin", random_bytes(3 * 1024 * 1024 + 17, 2)),
    ];
    for (name, data) in &files {
        d.write(&format!("www/{name}"), data);
    }
    let _one_at_a_time = PIPE_BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    let srv = start_unprivileged(
        ServerBuilder::new(backend, &d.path().join("www")).args(&["--send-timeout", "30s"]),
        d.path(),
    );
    let spent = PipeBudgetSpent::spend();
    for (name, data) in &files {
        let t0 = Instant::now();
        let r = get(&srv, &format!("/{name}"), &[]);
        assert_eq!(r.status, 200, "{name}\n{}", srv.diagnostics());
        assert!(
            r.body == *data,
            "{name}: body differs ({} bytes)",
            r.body.len()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{name} took {:?} without pipes",
            t0.elapsed()
        );
    }
    // A range of the big file, on a keep-alive connection that then serves another.
    let mut c = crate::http::Client::new(srv.connect());
    let r = c.exchange(&crate::http::req(
        "GET",
        "/big.bin",
        &[("Range", "bytes=100-200099")],
    ));
    assert_eq!(r.status, 206);
    assert!(r.body == files[1].1[100..200_100], "range body differs");
    let r = c.exchange(&crate::http::req("GET", "/medium.bin", &[]));
    assert!(r.status == 200 && r.body == files[0].1);
    drop(spent);
    let err = srv.stderr_text();
    assert!(
        err.matches("splice pipe").count() <= 1,
        "the pipe failure is logged at most once:\n{err}"
    );
}

fn cgi_site(script_text: &str) -> TempDir {
    let d = TempDir::new("cgifail");
    d.write("www/index.html", b"static\n");
    let p = d.write("cgi/s.sh", script_text.as_bytes());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn cgi_flag(d: &TempDir) -> String {
    format!("/cgi-bin={}", d.path().join("cgi").display())
}

/// A script whose interpreter does not exist fails every request with 502, and ringd says
/// so in one line, not one per request.
pub fn cgi_that_cannot_start_is_logged_once() {
    let d = cgi_site("#!/nonexistent/interpreter\nexit 0\n");
    let flag = cgi_flag(&d);
    let srv = ServerBuilder::new("epoll", &d.path().join("www"))
        .args(&["--cgi", &flag])
        .start();
    for _ in 0..20 {
        assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).status, 502);
    }
    assert_eq!(get(&srv, "/index.html", &[]).status, 200);
    let err = srv.stderr_text();
    assert_eq!(
        err.matches("cannot start").count(),
        1,
        "one line for 20 failed starts:\n{err}"
    );
}

/// With the pipe budget spent, a CGI request (its stdio needs pipes) gets 503, not 502: the
/// server is short of a resource, the script is fine. Logged once; static files still served.
pub fn cgi_without_pipes_answers_503_logged_once() {
    if let Some(why) = pipe_budget_unavailable() {
        skip_or_fail(why);
    }
    let d = cgi_site("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n");
    let flag = cgi_flag(&d);
    let _one_at_a_time = PIPE_BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    let srv = start_unprivileged(
        ServerBuilder::new("epoll", &d.path().join("www")).args(&["--cgi", &flag]),
        d.path(),
    );
    assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).body_str(), "hi\n");
    let spent = PipeBudgetSpent::spend();
    for _ in 0..10 {
        assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).status, 503);
    }
    assert_eq!(get(&srv, "/index.html", &[]).status, 200);
    drop(spent);
    assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).body_str(), "hi\n");
    let err = srv.stderr_text();
    assert_eq!(
        err.matches("cannot start").count(),
        1,
        "one line for 10 failed starts:\n{err}"
    );
}

/// A SIGHUP that re-reads an unchanged config with CGI routes (`--backend auto`, which once
/// had to pick epoll for them) reloads it without claiming the backend changed.
pub fn reload_with_cgi_reports_no_backend_change() {
    let d = cgi_site("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n");
    let cfg = d.write(
        "ringd.toml",
        format!(
            "[[sites]]\nhosts = [\"_\"]\nroot = \"{}\"\n\n  [[sites.routes]]\n  path = \"/cgi-bin/*\"\n  cgi = {{ dir = \"{}\" }}\n",
            d.path().join("www").display(),
            d.path().join("cgi").display()
        )
        .as_bytes(),
    );
    let srv = ServerBuilder::new("auto", d.path()).config(&cfg).start();
    assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).body_str(), "hi\n");
    srv.signal(libc::SIGHUP);
    let t0 = Instant::now();
    while !srv.stderr_text().contains("reloaded") && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    let err = srv.stderr_text();
    assert!(err.contains("reloaded"), "no reload line:\n{err}");
    assert!(
        !err.contains("changed"),
        "a spurious change was reported:\n{err}"
    );
    assert_eq!(get(&srv, "/cgi-bin/s.sh", &[]).body_str(), "hi\n");
}

/// ringd under `ulimit -n 64` and a flood of 300 connections past it: the connections it
/// has keep being served, "accept failed" is logged once, and once the flood closes (its
/// connections still queued in the backlog, dead) a new client is answered within a second
/// or two: a closing connection re-arms accepting at once instead of after the backoff.
pub fn emfile_flood_keeps_serving_and_accepts_again(backend: &str) {
    let d = TempDir::new("emfile");
    d.write("www/a.txt", b"hello\n");
    let ringd = env!("CARGO_BIN_EXE_ringd").to_string();
    let mut args = vec![
        "-c".to_string(),
        "ulimit -n 64 && exec \"$@\"".to_string(),
        "ulimit-64".to_string(),
        ringd,
    ];
    args.extend(
        ServerBuilder::new(backend, &d.path().join("www"))
            .workers(1)
            .command_line(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = ServerBuilder::program(Path::new("/bin/bash"), &args, d.path()).start();
    let mut kept = crate::http::Client::new(srv.connect());
    assert_eq!(
        kept.exchange(&crate::http::req("GET", "/a.txt", &[]))
            .status,
        200
    );
    let flood: Vec<_> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(srv.addr()).ok())
        .collect();
    assert!(flood.len() > 100, "only {} flood connections", flood.len());
    // Until ringd has run into its limit (it says so).
    let t0 = Instant::now();
    while !srv.stderr_text().contains("accept failed") && t0.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        let r = kept.exchange(&crate::http::req("GET", "/a.txt", &[]));
        assert_eq!(r.status, 200, "the kept connection is served at the limit");
    }
    drop(flood);
    let t0 = Instant::now();
    let mut c = crate::http::Client::new(srv.connect());
    let r = c.exchange(&crate::http::req("GET", "/a.txt", &[]));
    assert_eq!(r.status, 200);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a new client waited {:?} after the flood closed",
        t0.elapsed()
    );
    let err = srv.stderr_text();
    assert_eq!(
        err.matches("accept failed").count(),
        1,
        "logged once:\n{}",
        srv.diagnostics()
    );
}

/// An upstream that fails every request for a while (reset with no answer), over several
/// `fail_timeout` windows, then answers again: passive health logs the server going out once
/// and coming back once, not once per window, while clients get 502/503 and then 200s again.
pub fn lost_upstream_logged_once_out_and_once_back(backend: &str) {
    use crate::proxy::{ok, Action, Upstream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let up = Upstream::spawn(move |_, _| {
        if flag.load(Ordering::Relaxed) {
            Action::ReplyReset(Vec::new())
        } else {
            Action::Reply(ok(b"up\n"))
        }
    });
    let d = TempDir::new("passive");
    d.write("www/a.txt", b"static\n");
    let cfg = d.write(
        "p.toml",
        format!(
            "[upstreams.app]\nservers = [\"{}\"]\nmax_fails = 2\nfail_timeout = \"200ms\"\nretries = 0\n\n[[sites]]\nhosts = [\"_\"]\nroot = \"{}\"\n\n  [[sites.routes]]\n  path = \"/api/*\"\n  proxy = {{ upstream = \"app\" }}\n",
            up.addr,
            d.path().join("www").display()
        )
        .as_bytes(),
    );
    let srv = ServerBuilder::new(backend, d.path())
        .workers(1)
        .config(&cfg)
        .start();
    assert_eq!(get(&srv, "/api/x", &[]).body_str(), "up\n");
    down.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut statuses = std::collections::BTreeSet::new();
    while t0.elapsed() < Duration::from_millis(1200) {
        statuses.insert(get(&srv, "/api/x", &[]).status);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        statuses.iter().all(|s| *s == 502 || *s == 503),
        "{statuses:?}"
    );
    down.store(false, Ordering::Relaxed);
    let t0 = Instant::now();
    loop {
        let r = get(&srv, "/api/x", &[]);
        if r.status == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "never back: {}",
            r.status
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&srv, "/a.txt", &[]).status, 200);
    // stderr is read by a pipe thread: give the last line a moment to come through.
    let t0 = Instant::now();
    while !srv.stderr_text().contains("answers again") && t0.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(20));
    }
    let err = srv.stderr_text();
    assert_eq!(err.matches("taken out").count(), 1, "{err}");
    assert_eq!(err.matches("answers again").count(), 1, "{err}");
}

//! CGI (RFC 3875) against real scripts in shell and Python: meta-variables, PATH_INFO, bodies,
//! Status and Location, stderr to the error log, and scripts that misbehave (no header, a
//! huge header, endless output to a client that stopped reading, too many at once, too slow,
//! a client that goes away). Nothing may be left running or unreaped.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Server, ServerBuilder, TempDir};
use crate::http::Client;

fn script(d: &TempDir, name: &str, text: &str) {
    let p = d.write(&format!("cgi/{name}"), text.as_bytes());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn setup(backend: &str, extra: &[&str], workers: usize) -> (TempDir, Server) {
    let d = TempDir::new("cgi");
    d.write("www/index.html", b"static\n");
    script(
        &d,
        "env.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv | sort\n",
    );
    script(
        &d,
        "echo.py",
        "#!/usr/bin/env python3\nimport os, sys\nbody = sys.stdin.buffer.read()\nsys.stdout.write('Status: 201 Made\\nContent-Type: text/plain\\nX-Len: %d\\n\\n' % len(body))\nsys.stdout.flush()\nsys.stdout.buffer.write(body)\nprint('python says hi', file=sys.stderr)\n",
    );
    script(
        &d,
        "redirect.sh",
        "#!/bin/sh\nprintf 'Location: https://example.test/elsewhere\\n\\n'\n",
    );
    script(
        &d,
        "local.sh",
        "#!/bin/sh\nprintf 'Location: /index.html\\n\\n'\n",
    );
    script(
        &d,
        "local2.sh",
        "#!/bin/sh\nprintf 'Location: /cgi-bin/env.sh?via=local2\\n\\n'\n",
    );
    script(
        &d,
        "loop.sh",
        "#!/bin/sh\nprintf 'Location: /cgi-bin/loop.sh\\n\\n'\n",
    );
    script(&d, "noheader.sh", "#!/bin/sh\nexit 0\n");
    script(
        &d,
        "nocontenttype.sh",
        "#!/bin/sh\nprintf 'X-A: 1\\n\\nbody'\n",
    );
    script(
        &d,
        "hugeheader.sh",
        "#!/bin/sh\nprintf 'X-A: '\nhead -c 100000 /dev/zero | tr '\\0' a\nprintf '\\n\\n'\n",
    );
    script(&d, "endless.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho $$ > ../endless.pid\nwhile :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done\n");
    script(&d, "slow.sh", "#!/bin/sh\nsleep 30\n");
    script(
        &d,
        "sleep1.sh",
        "#!/bin/sh\nsleep 1\nprintf 'Content-Type: text/plain\\n\\ndone'\n",
    );
    script(
        &d,
        "hold.sh",
        "#!/bin/sh\ntouch ../started.$$\nsleep 3\nprintf 'Content-Type: text/plain\\n\\ndone'\n",
    );
    let mut args = vec![
        "--cgi".to_string(),
        format!("/cgi-bin={}", d.path().join("cgi").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = ServerBuilder::new(backend, &d.path().join("www"))
        .workers(workers)
        .args(&argv)
        .start();
    (d, srv)
}

/// Meta-variables, PATH_INFO, query, bodies both ways, Status, Location, stderr.
pub fn scripts_run_per_rfc_3875(backend: &str) {
    let (_d, srv) = setup(backend, &[], 2);
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(10));
    let r = c.exchange(
        b"GET /cgi-bin/env.sh/extra/path?a=1&b=2 HTTP/1.1\r\nHost: site.test:8080\r\nProxy: http://evil:1\r\nAuthorization: Basic x\r\nX-Custom: v\r\nUser-Agent: t\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let env = r.body_str();
    for want in [
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "SERVER_NAME=site.test",
        &format!("SERVER_PORT={}", srv.addr().rsplit(':').next().unwrap()),
        "REQUEST_METHOD=GET",
        "SCRIPT_NAME=/cgi-bin/env.sh",
        "PATH_INFO=/extra/path",
        "QUERY_STRING=a=1&b=2",
        "REMOTE_ADDR=127.0.0.1",
        "HTTP_X_CUSTOM=v",
        "HTTP_USER_AGENT=t",
        "HTTP_HOST=site.test:8080",
        "PATH_TRANSLATED=",
    ] {
        assert!(env.contains(want), "{want} missing:\n{env}");
    }
    assert!(!env.contains("HTTP_PROXY"), "httpoxy: {env}");
    assert!(!env.contains("HTTP_AUTHORIZATION"), "{env}");
    assert!(!env.contains("CONTENT_LENGTH"), "{env}");
    // A chunked upload reaches stdin whole, with CONTENT_LENGTH; Status is honoured.
    let r = c.exchange(
        b"POST /cgi-bin/echo.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (201, "hello world"),
        "{}",
        r.head
    );
    assert_eq!(r.header("x-len"), Some("11"));
    // A body far larger than a pipe, both ways: the script's stdin fills (ringd waits for it
    // to be writable) before the script reads it, and its stdout fills before ringd reads.
    let big = crate::harness::random_bytes(900 * 1024, 13);
    let mut req = format!(
        "POST /cgi-bin/echo.py HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let r = c.exchange(&req);
    assert_eq!(r.status, 201, "{}", r.head);
    assert_eq!(r.header("x-len"), Some("921600"));
    assert!(
        r.body == big,
        "the echoed body differs ({} bytes back)",
        r.body.len()
    );
    let r = c.exchange(b"GET /cgi-bin/redirect.sh HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://example.test/elsewhere"));
    // A lone path Location is a local redirect (RFC 3875 §6.2.2): ringd answers the new path
    // itself, as a GET (a static file here; another script next), never a 302.
    let r =
        c.exchange(b"POST /cgi-bin/local.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "static\n"),
        "{}",
        r.head
    );
    assert_eq!(r.header("location"), None);
    let r = c.exchange(b"GET /cgi-bin/local2.sh HTTP/1.1\r\nHost: a\r\nX-Mark: m1\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    let env = r.body_str();
    assert!(env.contains("QUERY_STRING=via=local2"), "{env}");
    assert!(env.contains("REQUEST_METHOD=GET"), "{env}");
    assert!(env.contains("HTTP_X_MARK=m1"), "{env}");
    // A redirect loop ends in a 500, and the connection goes on serving.
    let r = c.exchange(b"GET /cgi-bin/loop.sh HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 500, "{}", r.head);
    let r = c.exchange(b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    // Broken output: 502 (here, under the default process limit, so that scripts still being
    // put down never turn one into a 503).
    for path in [
        "/cgi-bin/noheader.sh",
        "/cgi-bin/nocontenttype.sh",
        "/cgi-bin/hugeheader.sh",
    ] {
        let r = c.exchange(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(r.status, 502, "{path}: {}", r.head);
    }
    // Static files beside the scripts, and names that are not scripts.
    let r = c.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "static\n");
    for (path, status) in [
        ("/cgi-bin/nope.sh", 404),
        ("/cgi-bin/../www/index.html", 400),
        ("/cgi-bin/", 404),
    ] {
        let r = c.exchange(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(r.status, status, "{path}: {}", r.head);
    }
    drop(c);
    let err = srv.wait_stderr("python says hi");
    assert!(
        err.contains("ringd: cgi /cgi-bin/echo.py: python says hi"),
        "{err}"
    );
}

/// Beyond the per-worker limit → 503; a client that stops reading an endless script and
/// leaves gets it killed; nothing is left over.
pub fn misbehaving_scripts(backend: &str) {
    let (d, srv) = setup(backend, &["--cgi-max-procs", "2"], 1);
    let get = |path: &str| {
        let mut c = Client::new(srv.connect());
        c.set_timeout(Duration::from_secs(40));
        c.exchange(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
    };
    // The limit: two slow scripts run (both have started), a third request gets 503.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Client::new(srv.connect());
        c.send(b"GET /cgi-bin/hold.sh HTTP/1.1\r\nHost: a\r\n\r\n");
        held.push(c);
    }
    let started = || {
        std::fs::read_dir(d.path())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("started."))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while started() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two held scripts did not start"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let r = get("/cgi-bin/sleep1.sh");
    assert_eq!(r.status, 503, "{}", r.head);
    for mut c in held {
        c.set_timeout(Duration::from_secs(10));
        let r = c.read_response(false).unwrap();
        assert_eq!(r.body_str(), "done");
    }
    // A client that stops reading an endless script, then leaves: the script is killed.
    let pidfile = d.path().join("endless.pid");
    {
        let mut c = Client::new(srv.connect());
        c.send(b"GET /cgi-bin/endless.sh HTTP/1.1\r\nHost: a\r\n\r\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(300));
        let _ = c.stream.flush();
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the endless script ran")
        .trim()
        .parse()
        .unwrap();
    let gone = |pid: i32| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // A reaped process has no /proc entry (a zombie still has one).
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(gone(pid), "the endless script outlived its client");
    // No zombie children of ringd.
    thread::sleep(Duration::from_millis(1500));
    let zombies = children_in_state(srv.pid(), 'Z');
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    drop(srv);
}

/// A script past its timeout: 504, and its process group is killed.
pub fn timeout_kills_the_script(backend: &str) {
    let d = TempDir::new("cgi-timeout");
    d.write("www/x", b"x");
    script(
        &d,
        "slow.sh",
        "#!/bin/sh\necho $$ > \"$(dirname \"$0\")/../slow.pid\"\nsleep 30 &\nwait\n",
    );
    d.write(
        "c.toml",
        b"[[sites]]\nhosts = [\"_\"]\nroot = \"www\"\n[[sites.routes]]\npath = \"/cgi-bin/*\"\ncgi = { dir = \"cgi\", timeout = \"1s\" }\n",
    );
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("c.toml"))
        .start();
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(10));
    let t = Instant::now();
    let r = c.exchange(b"GET /cgi-bin/slow.sh HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let pid: i32 = std::fs::read_to_string(d.path().join("slow.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the timed-out script is still there"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Its child (the `sleep` in the same process group) too.
    thread::sleep(Duration::from_millis(200));
    let left = children_in_state(srv.pid(), 'S');
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// The PIDs of `parent`'s children whose /proc state is `state`.
fn children_in_state(parent: i32, state: char) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let st = f.next().and_then(|s| s.chars().next());
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == parent && st == Some(state) {
            out.push(pid);
        }
    }
    out
}

/// tokio-uring spawns no scripts: a CGI config on it is refused at start, saying so (never
/// served with CGI routes that would hang).
pub fn tokio_uring_refuses_cgi() {
    let d = TempDir::new("cgi-tokio");
    d.write("www/x", b"x");
    script(
        &d,
        "s.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi'\n",
    );
    let flag = format!("/cgi-bin={}", d.path().join("cgi").display());
    let root = d.path().join("www");
    let (status, _, err) = crate::harness::run_ringd(
        &[
            root.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "tokio-uring",
            "--cgi",
            &flag,
        ],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("CGI") && err.contains("--backend uring or epoll"),
        "{err}"
    );
}

//! Sites from a config file (issue 11): the issue's example config verbatim, route by route;
//! Host matching; error pages; listings; `ringd check`; and a reload under constant load.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{run_ringd, ServerBuilder, TempDir};
use crate::http::{Client, Response};

/// The config file of issue 11, verbatim.
pub const EXAMPLE: &str = r#"listen = ["127.0.0.1:8080"]        # top-level keys mirror the flags (workers, backend, limits, timeouts...)
workers = 1
access_log = "access.log"          # relative paths are relative to this file's folder

[[sites]]
hosts = ["example.test", "www.example.test"]   # matched against Host, port ignored, case-insensitive
root = "example"                               # static files (every rule of today's static handler)
index = ["index.html", "index.htm"]
errors = { 404 = "/404.html" }                 # error pages served from the site, with the error's status

  [[sites.routes]]                             # routes are tried in file order; first match wins
  path = "/old/*"                              # prefix glob; `*` captures the rest as {*}
  redirect = { to = "/new/{*}", status = 301 } # query string kept unless `to` has its own

  [[sites.routes]]
  path = "/assets/*"                           # a route with modifiers but no handler applies
  headers = { set = { "Cache-Control" = "public, max-age=31536000, immutable" }, remove = ["X-Powered-By"] }
                                               # and matching continues with the next route

  [[sites.routes]]
  regex = '^/user/(\d+)$'                      # regex routes capture {1}, {2}, or {name}
  rewrite = "/profile.html?id={1}"             # internal rewrite, then matching restarts (max 10 times)

  [[sites.routes]]
  path = "/app/*"
  try_files = ["{path}", "{path}/index.html", "/app/index.html"]   # single-page-app fallback

  [[sites.routes]]
  path = "/teapot"                             # exact path when there is no `*`
  methods = ["GET", "HEAD"]
  respond = { status = 418, body = "short and stout\n", headers = { "Content-Type" = "text/plain" } }

[[sites]]
hosts = ["*.files.test"]                       # one leading label wildcard
root = "files"
browse = true                                  # directory listings: HTML, or JSON with Accept: application/json

[[sites]]
hosts = ["_"]                                  # the default site: any Host no other site matches
respond = { status = 421, body = "unknown host\n" }
"#;

/// A folder with the example's sites and its config file.
fn example_dir() -> TempDir {
    let d = TempDir::new("sites");
    d.write("example/index.html", b"<h1>example home</h1>\n");
    d.write("example/404.html", b"<p>custom not found</p>\n");
    d.write("example/profile.html", b"<p>profile page</p>\n");
    d.write("example/assets/app.css", b"body{}\n");
    d.write("example/app/index.html", b"<p>single page app</p>\n");
    d.write("example/app/main.js", b"console.log(1)\n");
    d.write("example/app/docs/index.html", b"<p>app docs</p>\n");
    d.write("example/htm/index.htm", b"<p>htm index</p>\n");
    d.write("files/a.txt", b"aaa\n");
    d.write("files/sub/b.txt", b"bbb\n");
    d.write("files/.hidden", b"secret\n");
    d.write("files/<img src=x onerror=alert(1)>.txt", b"x\n");
    d.write("files/quote\".txt", b"q\n");
    d.write("ringd.toml", EXAMPLE.as_bytes());
    d
}

fn get_host(c: &mut Client, host: &str, target: &str, extra: &[(&str, &str)]) -> Response {
    let mut s = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in extra {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    c.exchange(s.as_bytes())
}

fn check(r: &Response, status: u16, body_has: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}\n{}", r.head, r.body_str());
    assert!(
        r.body_str().contains(body_has),
        "{what}: body {:?} lacks {body_has:?}",
        r.body_str()
    );
}

/// Every route of the example, Host matching, error pages and listings, on one connection
/// (keep-alive across sites and routes).
pub fn example_routes(backend: &str) {
    let d = example_dir();
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("ringd.toml"))
        .start();
    let mut c = Client::new(srv.connect());
    c.set_timeout(Duration::from_secs(5));
    let ex = "example.test";

    let r = get_host(&mut c, ex, "/", &[]);
    check(&r, 200, "example home", "index of the exact host");
    let r = get_host(&mut c, "WWW.Example.TEST:8080", "/", &[]);
    check(
        &r,
        200,
        "example home",
        "second host, any case, with a port",
    );
    // Absolute-form target: its authority wins over Host (RFC 9112 §3.2.2).
    let r =
        c.exchange(b"GET http://example.test/profile.html HTTP/1.1\r\nHost: other.test\r\n\r\n");
    check(&r, 200, "profile page", "absolute-form target");

    // /old/* → 301 /new/{*}, query kept.
    let r = get_host(&mut c, ex, "/old/a/b.html?x=1&y=2", &[]);
    assert_eq!(r.status, 301, "{}", r.head);
    assert_eq!(r.header("location"), Some("/new/a/b.html?x=1&y=2"));
    let r = get_host(&mut c, ex, "/old/", &[]);
    assert_eq!(r.header("location"), Some("/new/"));

    // /assets/*: headers set, matching continues (static file served).
    let r = get_host(&mut c, ex, "/assets/app.css", &[]);
    check(&r, 200, "body{}", "modifier route then static");
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.header("x-powered-by").is_none());
    // Not on errors (as nginx's add_header): the custom 404 page, with its status.
    let r = get_host(&mut c, ex, "/assets/none.css", &[]);
    check(&r, 404, "custom not found", "error page");
    assert!(r.header("cache-control").is_none(), "{}", r.head);

    // Regex + rewrite: /user/42 → /profile.html?id=42, served internally.
    let r = get_host(&mut c, ex, "/user/42", &[]);
    check(&r, 200, "profile page", "regex rewrite");
    let r = get_host(&mut c, ex, "/user/4x", &[]);
    check(&r, 404, "custom not found", "regex does not match");

    // try_files: a file, a folder's index, then the SPA fallback.
    let r = get_host(&mut c, ex, "/app/main.js", &[]);
    check(&r, 200, "console.log", "try_files: the file");
    let r = get_host(&mut c, ex, "/app/docs", &[]);
    check(&r, 200, "app docs", "try_files: {path}/index.html");
    let r = get_host(&mut c, ex, "/app/some/deep/link", &[]);
    check(&r, 200, "single page app", "try_files: fallback");

    // respond, with methods.
    let r = get_host(&mut c, ex, "/teapot", &[]);
    check(&r, 418, "short and stout", "respond");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = c.exchange(b"HEAD /teapot HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_eq!(r.status, 418);
    assert!(r.body.is_empty());
    let r = c.exchange(b"POST /teapot HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405, "POST skips the GET/HEAD route: {}", r.head);

    // index = ["index.html", "index.htm"].
    let r = get_host(&mut c, ex, "/htm/", &[]);
    check(&r, 200, "htm index", "second index name");

    // Wildcard site with listings.
    let r = get_host(&mut c, "x.files.test", "/a.txt", &[]);
    check(&r, 200, "aaa", "wildcard host");
    let r = get_host(&mut c, "deep.x.files.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    let html = r.body_str();
    assert!(html.contains("href=\"./a.txt\""), "{html}");
    assert!(html.contains("href=\"./sub/\""), "{html}");
    assert!(!html.contains(".hidden"), "dotfile listed: {html}");
    assert!(!html.contains("<img"), "unescaped name: {html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{html}"
    );
    assert!(html.contains("quote&quot;.txt"), "{html}");
    let r = get_host(
        &mut c,
        "x.files.test",
        "/sub/",
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.body_str();
    assert!(b.contains("\"name\":\"b.txt\""), "{b}");
    assert!(b.contains("\"path\":\"/sub/\""), "{b}");
    let r = get_host(&mut c, "x.files.test", "/../", &[]);
    assert_eq!(r.status, 400, "escape attempt: {}", r.head);
    let r = get_host(&mut c, "files.test", "/a.txt", &[]);
    check(&r, 421, "unknown host", "a wildcard needs one more label");

    // The `_` site answers everything else.
    let r = get_host(&mut c, "nobody.test", "/", &[]);
    check(&r, 421, "unknown host", "default site");
    let r = c.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    check(&r, 421, "unknown host", "no Host (HTTP/1.0)");

    // The access log names the Host and the route.
    drop(c);
    drop(srv);
    let log = std::fs::read_to_string(d.path().join("access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("/old/a/b.html") && l.ends_with("\"example.test\" \"#1 /old/*\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("/user/42") && l.ends_with("\"#3 ^/user/(\\x5Cd+)$\"")),
        "{log}"
    );
}

/// Without a `_` site an unknown Host gets 421; site-level redirect and respond.
pub fn unknown_host_and_site_handlers(backend: &str) {
    let d = TempDir::new("sites2");
    d.write("a/x.txt", b"x\n");
    d.write(
        "s.toml",
        br#"
[[sites]]
hosts = ["a.test"]
root = "a"
headers = { set = { "X-Site" = "a" } }

[[sites]]
hosts = ["old.test"]
redirect = { to = "https://a.test{path}", status = 308 }
"#,
    );
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("s.toml"))
        .start();
    let mut c = Client::new(srv.connect());
    let r = get_host(&mut c, "a.test", "/x.txt", &[]);
    check(&r, 200, "x", "site");
    assert_eq!(r.header("x-site"), Some("a"));
    let r = get_host(&mut c, "old.test", "/p/q?z=1", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://a.test/p/q?z=1"));
    let r = get_host(&mut c, "b.test", "/x.txt", &[]);
    assert_eq!(r.status, 421, "{}", r.head);
    // A CRLF can never reach a Location through a placeholder: the parser refuses it first.
    let r = c.exchange(b"GET /p%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: old.test\r\n\r\n");
    assert_eq!(r.status, 308);
    assert!(r.header("set-cookie").is_none());
}

/// `ringd check` and serving refuse a broken file with `file:line:col` errors; a good one
/// gets a summary.
pub fn check_subcommand() {
    let d = example_dir();
    let ok = d.path().join("ringd.toml");
    let (st, out, err) = run_ringd(&["check", ok.to_str().unwrap()], Duration::from_secs(10));
    assert!(st.success(), "{err}");
    assert!(out.contains("ok: 3 sites, 5 routes"), "{out}");

    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "workers = 1\n\n[[sites]]\nhosts = [\"a.test\"]\nrooot = \"example\"\n",
    )
    .unwrap();
    let (st, _, err) = run_ringd(&["check", bad.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "{err}");
    let want = format!(
        "{}:5:1: unknown key `rooot` (did you mean `root`?)",
        bad.display()
    );
    assert!(err.contains(&want), "{err}");

    std::fs::write(
        &bad,
        "[[sites]]\nhosts = [\"a.test\"]\nroot = \"example\"\n[[sites.routes]]\npath = \"/x\"\nredirect = { to = \"/y/{nope}\" }\n[[sites.routes]]\nregex = '(('\n",
    )
    .unwrap();
    let (st, _, err) = run_ringd(&["check", bad.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains(":6:"), "placeholder error line: {err}");
    assert!(err.contains("unknown placeholder `{nope}`"), "{err}");
    assert!(err.contains(":8:9: `regex`"), "both errors reported: {err}");

    // Serving the bad file refuses to start with the same messages.
    let (st, _, err2) = run_ringd(
        &["--listen", "127.0.0.1:0", "--config", bad.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(1));
    assert!(err2.contains("unknown placeholder `{nope}`"), "{err2}");

    // The repository's own example config is valid.
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/ringd.toml");
    let (st, out, err) = run_ringd(&["check", repo], Duration::from_secs(10));
    assert!(st.success(), "ringd.toml: {err}");
    assert!(out.contains("ok: 1 site, 3 routes"), "{out}");

    // A top-level value from the file is named with its place.
    std::fs::write(&bad, "workers = 0\n[[sites]]\nhosts = [\"_\"]\n").unwrap();
    let (st, _, err) = run_ringd(&["check", bad.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("bad.toml:1:11: `workers`"), "{err}");
}

/// One load connection: requests sent, the bodies it got in order, when it first saw "new".
type ConnLog = (usize, Vec<String>, Option<Instant>);

/// Constant-rate keep-alive clients across a SIGHUP that changes a route: no error, no
/// reset, every connection kept, and the new behaviour soon after the reload. An invalid file
/// afterwards changes nothing and says why.
pub fn reload_under_load(backend: &str) {
    let d = TempDir::new("reload");
    d.write("www/x.txt", b"x\n");
    let conf = |body: &str| {
        format!(
            "[[sites]]\nhosts = [\"_\"]\nroot = \"www\"\n[[sites.routes]]\npath = \"/r\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
        )
    };
    d.write("r.toml", conf("old").as_bytes());
    let pid_file = d.path().join("ringd.pid");
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("r.toml"))
        .args(&["--pid-file", pid_file.to_str().unwrap()])
        .start();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        srv.pid().to_string()
    );
    let stop = AtomicBool::new(false);
    let reloaded_at: Mutex<Option<Instant>> = Mutex::new(None);
    // Per connection: (sent, answers seen in order, first "new" time).
    let results: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
    const CONNS: usize = 4;
    // 4 connections × one request every 4 ms: 1,000 requests a second in all.
    const PERIOD: Duration = Duration::from_millis(4);
    thread::scope(|s| {
        for _ in 0..CONNS {
            let results = results.clone();
            let stop = &stop;
            let srv = &srv;
            s.spawn(move || {
                let mut c = Client::new(srv.connect());
                c.set_timeout(Duration::from_secs(5));
                let start = Instant::now();
                let mut seen = Vec::new();
                let mut first_new = None;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let due = start + PERIOD * n as u32;
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(w);
                    }
                    c.send(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
                    let r = c
                        .read_response(false)
                        .unwrap_or_else(|e| panic!("request {n} failed across the reload: {e}"));
                    assert_eq!(r.status, 200, "{}", r.head);
                    assert!(!r.closes(), "the reload closed a keep-alive connection");
                    let b = r.body_str();
                    if b == "new" && first_new.is_none() {
                        first_new = Some(Instant::now());
                    }
                    seen.push(b);
                    n += 1;
                }
                results.lock().unwrap().push((n, seen, first_new));
            });
        }
        thread::sleep(Duration::from_millis(800));
        d.write("r.toml", conf("new").as_bytes());
        // `ringd reload --pid-file` sends the SIGHUP.
        let (st, out, err) = run_ringd(
            &["reload", "--pid-file", pid_file.to_str().unwrap()],
            Duration::from_secs(5),
        );
        assert!(st.success(), "{out}{err}");
        *reloaded_at.lock().unwrap() = Some(Instant::now());
        thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
    });
    let at = reloaded_at.lock().unwrap().unwrap();
    for (n, seen, first_new) in results.lock().unwrap().iter() {
        assert!(*n > 100, "only {n} requests");
        let switch = seen
            .iter()
            .position(|b| b == "new")
            .expect("never saw the new route");
        assert!(
            seen[..switch].iter().all(|b| b == "old") && seen[switch..].iter().all(|b| b == "new"),
            "answers mixed old and new after the switch: {seen:?}"
        );
        let lag = first_new.unwrap().saturating_duration_since(at);
        assert!(lag < Duration::from_secs(1), "new route after {lag:?}");
    }
    let err = srv.wait_stderr("reloaded");
    assert!(err.contains("reloaded"), "{err}");

    // The same across a reload with loadgen at a constant rate: the route's status changes
    // from 200 to 201 mid-run; every request is answered, no connection is reopened.
    let loadgen = Path::new(env!("CARGO_BIN_EXE_ringd")).with_file_name("loadgen");
    if loadgen.is_file() {
        let json = d.path().join("lg.json");
        let url = format!("http://127.0.0.1:{}/r", srv.port);
        let mut lg = std::process::Command::new(&loadgen)
            .args([
                url.as_str(),
                "-R",
                "400",
                "-c",
                "4",
                "-d",
                "3s",
                "-q",
                "--no-pin",
            ])
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn loadgen");
        thread::sleep(Duration::from_millis(1200));
        let twice = conf("new").replace("status = 200", "status = 201");
        d.write("r.toml", twice.as_bytes());
        srv.signal(libc::SIGHUP);
        let st = lg.wait().expect("loadgen");
        assert!(st.success(), "loadgen failed: {st}");
        let out = std::fs::read_to_string(&json).expect("loadgen's json");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["errors_total"], 0,
            "errors across the reload: {}",
            v["errors"]
        );
        assert_eq!(
            v["connects"], 4,
            "connections were reopened: {}",
            v["connects"]
        );
        let old = v["status"]["200"].as_u64().unwrap_or(0);
        let new = v["status"]["201"].as_u64().unwrap_or(0);
        assert!(
            old > 100 && new > 100,
            "200s {old}, 201s {new}: the reload did not show"
        );
        assert_eq!(v["requests"].as_u64(), Some(old + new), "{}", v["status"]);
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP loadgen: {} not built (cargo test --workspace builds it); reload checked \
             with the in-test clients only",
            loadgen.display()
        );
    }

    // An invalid file: nothing changes, one line per error.
    d.write(
        "r.toml",
        b"[[sites]]\nhosts = [\"_\"]\nroot = \"www\"\nbogus = 1\n",
    );
    srv.signal(libc::SIGHUP);
    let err = srv.wait_stderr("nothing changed");
    assert!(err.contains("r.toml:4:1: unknown key `bogus`"), "{err}");
    thread::sleep(Duration::from_millis(400));
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "new", "an invalid reload changed the config");
}

//! WSGI (PEP 3333): the real `ringd-wsgi` from the repo's `.venv/` (`scripts/test-peers.sh`
//! installs it with `pip install ./python`, with Flask and Django) serving real apps over real
//! sockets. Without it each test prints a `SKIP` line; `RINGD_REQUIRE_WSGI=1` (CI) makes that a
//! failure. `RINGD_WSGI=/path/to/ringd-wsgi` picks another install.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Server, ServerBuilder, Skip, TempDir};
use crate::http::{get, req, Client};

const APP: &str = include_str!("../apps/pep3333.py");

/// The installed `ringd-wsgi` (and the venv's python beside it), or a skip.
pub(crate) fn wsgi_bin() -> PathBuf {
    let bin = std::env::var_os("RINGD_WSGI").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/ringd-wsgi"),
        PathBuf::from,
    );
    if bin.is_file() {
        return bin;
    }
    let why = format!(
        "{} not found (run scripts/test-peers.sh, which pip-installs ./python into .venv/)",
        bin.display()
    );
    if std::env::var_os("RINGD_REQUIRE_WSGI").is_some_and(|v| v != "0") {
        panic!("RINGD_REQUIRE_WSGI is set but {why}");
    }
    std::panic::panic_any(Skip(why));
}

/// The venv's own python (for django-admin and friends).
pub(crate) fn venv_bin(name: &str) -> PathBuf {
    wsgi_bin().with_file_name(name)
}

thread_local! {
    /// The `--backend` this test thread's ringd-wsgi servers get (None: the default, auto).
    static BACKEND: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every ringd-wsgi it starts on `backend`.
pub fn on_backend(backend: &'static str, f: fn()) {
    BACKEND.with(|b| b.set(Some(backend)));
    f();
}

/// Starts `ringd-wsgi ARGS` in `dir` on a free port (on the thread's `on_backend`, if any).
pub(crate) fn serve(dir: &Path, args: &[&str]) -> Server {
    let bin = wsgi_bin();
    let mut all = vec!["--bind", "127.0.0.1:0"];
    if let Some(b) = BACKEND.with(|b| b.get()) {
        all.extend_from_slice(&["--backend", b]);
    }
    all.extend_from_slice(args);
    let srv = ServerBuilder::program(&bin, &all, dir).start();
    // The loop it serves on is the one asked for (its "serving" line ends with the name).
    if let Some(b) = BACKEND.with(|b| b.get()) {
        let diag = srv.diagnostics();
        assert!(
            diag.lines()
                .any(|l| l.starts_with("ringd-wsgi: serving") && l.ends_with(&format!(", {b})"))),
            "ringd-wsgi does not say it serves on {b}:\n{diag}"
        );
    }
    srv
}

fn pep_app(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    d.write("pep3333.py", APP.as_bytes());
    d
}

/// Raw bytes until the server closes (or `limit`).
pub(crate) fn read_to_close(c: &mut std::net::TcpStream, limit: Duration) -> Vec<u8> {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

/// Reads until a response head is complete, the peer closes, or 5 s pass.
fn read_to_close_or_head(s: &mut std::net::TcpStream) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Waits until `path` exists (a result's close() ran), up to 5 s.
pub(crate) fn wait_file(path: &Path) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The lesson's 14-byte hello app, GET, HEAD and keep-alive; the mode said at start.
pub fn hello_app() {
    let d = TempDir::new("wsgi-hello");
    d.write(
        "hello.py",
        b"def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'Hello, World!\\n']\n",
    );
    let srv = serve(d.path(), &["hello:app", "--workers", "2"]);
    // The start says which interpreter runs and so which mode: processes with a GIL, threads
    // on a free-threaded build whose GIL is off.
    let ft = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('Py_GIL_DISABLED') == 1)",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "True")
        .unwrap_or(false);
    let want = if ft {
        "free-threaded"
    } else {
        "with the GIL: mode processes"
    };
    let t0 = Instant::now();
    while !srv.diagnostics().contains(want) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(srv.diagnostics().contains(want), "{}", srv.diagnostics());
    let mut c = Client::new(srv.connect());
    for _ in 0..3 {
        let r = c.exchange(&req("GET", "/", &[]));
        assert_eq!(r.status, 200, "{}", srv.diagnostics());
        assert_eq!(r.body, b"Hello, World!\n");
        assert_eq!(r.header("content-length"), Some("14"));
        assert!(!r.closes());
    }
    let r = c.exchange(&req("HEAD", "/x", &[]));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("14"));
}

/// Every required environ key, with PEP 3333's types and decodings.
pub fn environ_keys() {
    let d = pep_app("wsgi-environ");
    let srv = serve(d.path(), &["pep3333:app", "--threads", "2"]);
    let mut c = Client::new(srv.connect());
    let body = "a=1";
    let r = c.exchange(
        format!(
            "POST /environ/caf%C3%A9%20x?q=%20a&b HTTP/1.1\r\nHost: example.test:8080\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             X-Thing: 1\r\nX-Thing: 2\r\nX_Spoof: evil\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body_str(), srv.diagnostics());
    let e = r.body_str();
    let has = |k: &str, v: &str| {
        let pair = format!("\"{k}\": {v}");
        assert!(e.contains(&pair), "environ lacks {pair}: {e}");
    };
    has("REQUEST_METHOD", "\"POST\"");
    has("SCRIPT_NAME", "\"\"");
    // Percent-decoded bytes read as latin-1: é (C3 A9) is two characters.
    has("PATH_INFO", "\"/environ/caf\\u00c3\\u00a9 x\"");
    has("QUERY_STRING", "\"q=%20a&b\"");
    has("CONTENT_TYPE", "\"application/x-www-form-urlencoded\"");
    has("CONTENT_LENGTH", "\"3\"");
    has("SERVER_NAME", "\"example.test\"");
    has("SERVER_PROTOCOL", "\"HTTP/1.1\"");
    has("REMOTE_ADDR", "\"127.0.0.1\"");
    has("HTTP_HOST", "\"example.test:8080\"");
    has("HTTP_X_THING", "\"1, 2\"");
    has("wsgi.url_scheme", "\"http\"");
    has("wsgi.version", "[1, 0]");
    has("wsgi.multithread", "true");
    has("wsgi.multiprocess", "false");
    has("wsgi.run_once", "false");
    has("wsgi.input_terminated", "true");
    has("input_read", "\"a=1\"");
    // The port ringd listens on (gunicorn's too), the real one with `--bind :0`.
    has(
        "SERVER_PORT",
        &format!("\"{}\"", srv.addr().rsplit(':').next().unwrap()),
    );
    assert!(e.contains("\"REMOTE_PORT\": \""), "{e}");
    for absent in [
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
        "HTTP_X_SPOOF",
        "X_SPOOF",
    ] {
        assert!(!e.contains(&format!("\"{absent}\"")), "{absent} in {e}");
    }
    // A chunked body: decoded, no CONTENT_LENGTH (wsgi.input_terminated says read to EOF).
    let r = c.exchange(
        b"POST /environ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let e = r.body_str();
    assert!(e.contains("\"input_read\": \"abcde\""), "{e}");
    assert!(!e.contains("CONTENT_LENGTH"), "{e}");
}

/// `wsgi.input`: read(), read(n), readline(n), iteration; and `Expect: 100-continue`.
pub fn input_and_continue() {
    let d = pep_app("wsgi-input");
    let srv = serve(d.path(), &["pep3333:app"]);
    let mut c = Client::new(srv.connect());
    let body = "one\ntwo\nthree";
    let post = |c: &mut Client, q: &str| {
        c.exchange(
            format!(
                "POST /echo?{q} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .body_str()
    };
    assert_eq!(post(&mut c, ""), body);
    assert_eq!(post(&mut c, "lines"), "one\n|two\n|three");
    assert_eq!(post(&mut c, "readline"), "one|\n|two\nthree");
    assert_eq!(post(&mut c, "chunks"), "one\n,two\n,thre,e");
    // 100-continue: the interim response first, then the body is read and echoed.
    let mut s = srv.connect();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").unwrap();
    let mut c2 = Client::new(s);
    let r = c2.read_response(false).expect("final response");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
}

/// `wsgiref.validate` wrapped around an app: no assertion fires (it would be a 500).
pub fn validator_passes() {
    let d = pep_app("wsgi-validate");
    let srv = serve(d.path(), &["pep3333:app"]);
    let mut c = Client::new(srv.connect());
    for _ in 0..2 {
        let r = c.exchange(b"POST /validated HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody");
        assert_eq!(r.status, 200, "{}", srv.diagnostics());
        assert_eq!(r.body_str(), "validated:body");
    }
    let r = c.exchange(&req("GET", "/validated", &[]));
    assert_eq!(r.body_str(), "validated:");
    assert!(
        !srv.stderr_text().contains("Traceback"),
        "{}",
        srv.diagnostics()
    );
}

/// start_response late and with exc_info, write(), Content-Length enforced both ways,
/// chunked without it, HEAD, file_wrapper, hop-by-hop headers refused.
pub fn response_rules() {
    let d = pep_app("wsgi-response");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    d.write("data.bin", &data);
    let srv = serve(d.path(), &["pep3333:app", "--threads", "2"]);
    let r = get(&srv, "/late", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "late start"));
    let r = get(&srv, "/write", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "written and returned")
    );
    let r = get(&srv, "/exc_info_before", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (503, "replaced"));
    // Chunked when the app sets no Content-Length; close() called.
    let r = get(&srv, "/chunked", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body_str(), "one two");
    assert!(wait_file(&d.path().join("chunked.closed")));
    // HEAD: no body, whatever the app yields.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(&req("HEAD", "/chunked", &[]));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = c.exchange(&req("GET", "/hello", &[]));
    assert_eq!(
        r.body, b"Hello, World!\n",
        "the connection lives on after HEAD"
    );
    // Never more than the app's Content-Length.
    let r = get(&srv, "/cl_long", &[]);
    assert_eq!(
        (r.header("content-length"), r.body_str().as_str()),
        (Some("5"), "abcde")
    );
    // More, without end: the response ends at its Content-Length, and the app is stopped
    // there (its close() runs) rather than left blocked behind the bytes nobody reads.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(&req("GET", "/cl_long_endless", &[]));
    assert_eq!(
        (r.header("content-length"), r.body_str().as_str()),
        (Some("5"), "yyyyy")
    );
    assert!(
        wait_file(&d.path().join("cl_long_endless.closed")),
        "the app went on past its Content-Length (close() not called)"
    );
    let r = c.exchange(&req("GET", "/hello", &[]));
    assert_eq!(r.body, b"Hello, World!\n", "the connection lives on");
    // Fewer: the connection closes after what the app sent.
    let mut s = srv.connect();
    s.write_all(&req("GET", "/cl_short", &[])).unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Content-Length: 10"), "{text}");
    assert!(text.ends_with("\r\n\r\nabcde"), "{text:?}");
    assert!(wait_file(&d.path().join("cl_short.closed")));
    // exc_info once the head is out: re-raised, the response cut (no last chunk).
    let mut s = srv.connect();
    s.write_all(&req("GET", "/exc_info_after", &[])).unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("part one;"), "{text}");
    assert!(
        !text.contains("0\r\n\r\n") && !text.contains("never"),
        "{text:?}"
    );
    // A file through wsgi.file_wrapper (sent by the worker from the file: its size is the
    // Content-Length); from where the app left its offset, up to the app's Content-Length.
    let r = get(&srv, "/file", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(r.body == data, "file body differs ({} bytes)", r.body.len());
    let r = get(&srv, "/file_offset", &[]);
    assert_eq!(r.header("content-length"), Some("5000"));
    assert!(
        r.body == data[1000..6000],
        "file body differs ({} bytes)",
        r.body.len()
    );
    let r = Client::new(srv.connect()).exchange(&req("HEAD", "/file", &[]));
    assert!(r.body.is_empty() && r.header("content-length") == Some("300000"));
    // Hop-by-hop header from the app, or a body without start_response: 500.
    assert_eq!(get(&srv, "/hop", &[]).status, 500);
    assert_eq!(get(&srv, "/no_start_response", &[]).status, 500);
}

/// Apps that raise: 500 with the traceback in the error log only, close() always called;
/// a client that leaves stops an endless response (and close() runs).
pub fn misbehaving_apps() {
    let d = pep_app("wsgi-raise");
    let srv = serve(d.path(), &["pep3333:app", "--threads", "2"]);
    for (path, secret) in [
        ("/raise_before", "secret-before"),
        ("/raise_after_sr", "secret-after"),
        ("/gen_raises_first", "secret-in-iteration"),
    ] {
        let r = get(&srv, path, &[]);
        assert_eq!(r.status, 500, "{path}");
        assert!(
            !r.body_str().contains(secret),
            "{path}: traceback leaked to the client"
        );
        let err = srv.wait_stderr(secret);
        assert!(
            err.contains(secret) && err.contains("Traceback"),
            "{path}: {err}"
        );
    }
    assert!(wait_file(&d.path().join("gen_raises_first.closed")));
    // A generator that raises after its first chunk: the response is cut.
    let mut s = srv.connect();
    s.write_all(&req("GET", "/gen_raises", &[])).unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("first ") && !text.contains("0\r\n\r\n"),
        "{text:?}"
    );
    assert!(wait_file(&d.path().join("gen_raises.closed")));
    // Client gone mid-response: the app is stopped and its close() called.
    let mut s = srv.connect();
    s.write_all(&req("GET", "/endless", &[])).unwrap();
    let mut buf = vec![0u8; 65536];
    let _ = s.read(&mut buf).unwrap();
    drop(s);
    assert!(
        wait_file(&d.path().join("endless.closed")),
        "close() not called after the client left\n{}",
        srv.diagnostics()
    );
    // The server still answers.
    assert_eq!(get(&srv, "/hello", &[]).status, 200);
}

/// A request past --timeout: its worker is replaced, the next request is served.
pub fn timeout_replaces_worker() {
    let d = pep_app("wsgi-timeout");
    let srv = serve(d.path(), &["pep3333:app", "--timeout", "1s"]);
    let mut s = srv.connect();
    s.write_all(&req("GET", "/forever", &[])).unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10));
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 5"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        srv.wait_stderr("past --timeout").contains("past --timeout"),
        "{}",
        srv.diagnostics()
    );
    let t0 = Instant::now();
    loop {
        let ok = std::net::TcpStream::connect(srv.addr())
            .ok()
            .and_then(|mut s| {
                s.write_all(&req("GET", "/hello", &[])).ok()?;
                let got = read_to_close_or_head(&mut s);
                Some(got.starts_with(b"HTTP/1.1 200"))
            });
        if ok == Some(true) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no new worker\n{}",
            srv.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Flask app, unchanged: routing, a chunked upload, a streamed response.
pub fn flask_app() {
    let d = TempDir::new("wsgi-flask");
    d.write(
        "flaskapp.py",
        b"from flask import Flask, Response, request\n\
app = Flask(__name__)\n\
@app.route('/')\n\
def index():\n    return 'flask says hi'\n\
@app.route('/upload', methods=['POST'])\n\
def upload():\n    data = request.get_data()\n    return f'{len(data)} bytes, last {data[-3:].decode()}'\n\
@app.route('/stream')\n\
def stream():\n    def gen():\n        for i in range(5):\n            yield f'part{i};'\n    return Response(gen(), mimetype='text/plain')\n",
    );
    if Command::new(venv_bin("python"))
        .args(["-c", "import flask"])
        .status()
        .map_or(true, |s| !s.success())
    {
        skip_or_fail("flask is not installed in .venv (scripts/test-peers.sh installs it)");
    }
    let srv = serve(d.path(), &["flaskapp:app", "--threads", "4"]);
    let r = get(&srv, "/", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "flask says hi"),
        "{}",
        srv.diagnostics()
    );
    let mut c = Client::new(srv.connect());
    let mut up = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10 {
        up.extend_from_slice(b"3e8\r\n");
        up.extend_from_slice(&[b'a'; 997]);
        up.extend_from_slice(b"xyz\r\n");
    }
    up.extend_from_slice(b"0\r\n\r\n");
    let r = c.exchange(&up);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "10000 bytes, last xyz")
    );
    let r = c.exchange(&req("GET", "/stream", &[]));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body_str(), "part0;part1;part2;part3;part4;");
    assert_eq!(c.exchange(&req("GET", "/missing", &[])).status, 404);
}

/// A Django project as `django-admin startproject` makes it, its generated wsgi.py unchanged.
pub fn django_project() {
    let d = TempDir::new("wsgi-django");
    let admin = venv_bin("django-admin");
    if !admin.is_file() {
        skip_or_fail("django is not installed in .venv (scripts/test-peers.sh installs it)");
    }
    let st = Command::new(&admin)
        .args(["startproject", "mysite"])
        .current_dir(d.path())
        .status()
        .expect("django-admin");
    assert!(st.success());
    let proj = d.path().join("mysite");
    // One view and the host, as a user would add them (wsgi.py is not touched).
    let settings = proj.join("mysite/settings.py");
    let mut s = std::fs::read_to_string(&settings).unwrap();
    s.push_str("\nALLOWED_HOSTS = ['localhost', '127.0.0.1']\nDEBUG = False\n");
    std::fs::write(&settings, s).unwrap();
    let urls = proj.join("mysite/urls.py");
    let mut u = std::fs::read_to_string(&urls).unwrap();
    u.push_str("\nfrom django.http import HttpResponse\nurlpatterns.append(path('hi/', lambda r: HttpResponse('django says hi ' + r.GET.get('n', ''))))\n");
    std::fs::write(&urls, u).unwrap();
    let proj_s = proj.display().to_string();
    let srv = serve(
        d.path(),
        &[
            "mysite.wsgi:application",
            "--chdir",
            &proj_s,
            "--workers",
            "2",
        ],
    );
    let r = get(&srv, "/hi/?n=7", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "django says hi 7"),
        "{}",
        srv.diagnostics()
    );
    assert_eq!(get(&srv, "/nope/", &[]).status, 404);
}

pub(crate) fn skip_or_fail(why: &str) -> ! {
    if std::env::var_os("RINGD_REQUIRE_WSGI").is_some_and(|v| v != "0") {
        panic!("RINGD_REQUIRE_WSGI is set but {why}");
    }
    std::panic::panic_any(Skip(why.into()));
}

/// `wsgi = { app }` routes: the plain ringd refuses them with file:line and the command to
/// use; `ringd-wsgi --config` serves them beside static files.
pub fn config_route() {
    let d = pep_app("wsgi-config");
    d.write("www/style.css", b"body{}\n");
    let conf = d.write(
        "ringd.toml",
        b"[[sites]]\nhosts = [\"_\"]\nroot = \"www\"\n\n[[sites.routes]]\npath = \"/app/*\"\nwsgi = { app = \"pep3333:app\" }\n\n\
          [[sites.routes]]\npath = \"/z/*\"\nwsgi = { app = \"pep3333:app\" }\ncompress = [\"gzip\"]\n",
    );
    let (st, _out, err) = crate::harness::run_ringd(
        &["--config", &conf.display().to_string()],
        Duration::from_secs(10),
    );
    assert!(!st.success());
    assert!(err.contains("ringd.toml:7:"), "{err}");
    assert!(err.contains("ringd-wsgi --config"), "{err}");
    let srv = serve(d.path(), &["--config", &conf.display().to_string()]);
    let r = get(&srv, "/style.css", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "body{}\n"),
        "{}",
        srv.diagnostics()
    );
    let r = get(&srv, "/app/hello", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!\n"));
    let r = get(&srv, "/app/environ", &[]);
    assert!(
        r.body_str().contains("\"SCRIPT_NAME\": \"/app\""),
        "{}",
        r.body_str()
    );
    assert!(
        r.body_str().contains("\"PATH_INFO\": \"/environ\""),
        "{}",
        r.body_str()
    );
    // The proxy's on-the-fly compression works on app responses too.
    let r = get(&srv, "/z/big", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{}", r.head);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, b"all work and no play ".repeat(200));
}

/// `--max-requests` replaces a worker after that many requests; SIGHUP restarts the workers,
/// which import the app code anew (no request refused meanwhile).
pub fn reload_and_max_requests() {
    let d = TempDir::new("wsgi-reload");
    let app = |v: &str| {
        format!(
            "import os\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'{v} ' + str(os.getpid()).encode()]\n"
        )
    };
    d.write("rl.py", app("one").as_bytes());
    let srv = serve(d.path(), &["rl:app", "--max-requests", "3"]);
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = get(&srv, "/", &[]);
        assert_eq!(r.status, 200, "{}", srv.diagnostics());
        let b = r.body_str();
        assert!(b.starts_with("one "), "{b}");
        pids.insert(b[4..].to_string());
    }
    assert!(
        pids.len() >= 2,
        "one worker served 8 requests: {pids:?}\n{}",
        srv.diagnostics()
    );
    // A longer file: Python's bytecode cache (mtime + size) sees the change.
    d.write("rl.py", app("second-version").as_bytes());
    srv.signal(libc::SIGHUP);
    let t0 = Instant::now();
    loop {
        let r = get(&srv, "/", &[]);
        assert_eq!(r.status, 200, "{}", srv.diagnostics());
        if r.body_str().starts_with("second-version ") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload\n{}",
            srv.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

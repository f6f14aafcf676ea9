//! Regression tests from the security review (`docs/security.md`), each named after what it
//! guards. Every case talks to the real server over a real socket.

use crate::harness::{ServerBuilder, TempDir};
use crate::http::Client;

const REDIRECTS: &str = r#"
[[sites]]
hosts = ["_"]
root = "www"
  [[sites.routes]]
  path = "/old/*"
  redirect = { to = "/new/{*}" }
  [[sites.routes]]
  path = "/home/*"
  redirect = { to = "/{*}" }
  [[sites.routes]]
  regex = '^/r/(.*)$'
  redirect = { to = "/{1}" }
  [[sites.routes]]
  path = "/p/*"
  redirect = { to = "{path}" }
"#;

fn location(c: &mut Client, target: &str) -> (u16, String) {
    let r = c.exchange(format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
    (r.status, r.header("location").unwrap_or("").to_string())
}

/// A redirect template that names a local path never turns into a scheme-relative URL
/// (`//evil.test`) because the request's part of it began with slashes or backslashes.
pub fn redirect_placeholders_never_open_redirect(backend: &str) {
    let d = TempDir::new("sec-redirect");
    d.write("s.toml", REDIRECTS.as_bytes());
    d.write("www/index.html", b"hi\n");
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("s.toml"))
        .start();
    let mut c = Client::new(srv.connect());
    for (target, want) in [
        ("/home//evil.test/x", "/evil.test/x"),
        ("/home///evil.test", "/evil.test"),
        ("/home/%2f%2fevil.test", "/%2f%2fevil.test"),
        ("/r//evil.test/", "/evil.test/"),
        ("/home/ok/path?q=1", "/ok/path?q=1"),
        ("/old//x", "/new//x"),
    ] {
        let (status, loc) = location(&mut c, target);
        assert_eq!(status, 302, "{backend} {target}");
        assert_eq!(loc, want, "{backend} {target}");
        assert!(!loc.starts_with("//") && !loc.starts_with("/\\"), "{loc}");
    }
}

/// Placeholders carry the request's bytes still percent-encoded: an encoded CR LF can never
/// end the Location line and start a header of the attacker's choosing.
pub fn redirect_placeholders_never_inject_headers(backend: &str) {
    let d = TempDir::new("sec-inject");
    d.write("s.toml", REDIRECTS.as_bytes());
    d.write("www/index.html", b"hi\n");
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("s.toml"))
        .start();
    let mut c = Client::new(srv.connect());
    for target in [
        "/old/%0d%0aSet-Cookie:%20x=1",
        "/p/x%0d%0aX-Injected:%201",
        "/old/a?%0d%0aSet-Cookie:%20y=2",
    ] {
        let r = c.exchange(format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
        assert_eq!(r.status, 302, "{backend} {target}");
        assert!(r.header("set-cookie").is_none(), "{}", r.head);
        assert!(r.header("x-injected").is_none(), "{}", r.head);
        assert!(
            r.header("location").unwrap().contains("%0d%0a"),
            "{}",
            r.head
        );
    }
}

/// A Host that could change what a URL built from it points at (a path, userinfo, a query, a
/// space) is a 400, as is a second Host: `{host}` and site selection only ever see a name.
pub fn host_header_abuse_is_refused(backend: &str) {
    let d = TempDir::new("sec-host");
    d.write("www/index.html", b"hi\n");
    let srv = ServerBuilder::new(backend, &d.path().join("www")).start();
    for host in [
        "evil.test/x",
        "a@evil.test",
        "a.test?x",
        "a.test#x",
        "a b",
        "a\\b",
    ] {
        let mut c = Client::new(srv.connect());
        let r = c.exchange(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{backend} Host: {host}");
    }
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n");
    assert_eq!(r.status, 400, "{backend}: two Hosts");
}

const REWRITES: &str = r#"
[[sites]]
hosts = ["_"]
root = "www"
  [[sites.routes]]
  path = "/rw/*"
  rewrite = "/{*}"
  [[sites.routes]]
  path = "/tf/*"
  try_files = ["/{*}", "{path}.txt", "/missing.html"]
  [[sites.routes]]
  path = "/ls/*"
  browse = true
"#;

/// Paths built from request bytes by `rewrite` and `try_files` (and listings) are confined to
/// the root like any request path: encoded dot-segments, encoded slashes and NUL never reach a
/// file outside it.
pub fn rewrites_and_try_files_stay_in_root(backend: &str) {
    let d = TempDir::new("sec-rewrite");
    d.write("s.toml", REWRITES.as_bytes());
    d.write("www/index.html", b"hi\n");
    d.write("www/ls/inner.txt", b"inner\n");
    d.write("secret.txt", b"SECRET\n");
    let srv = ServerBuilder::new(backend, d.path())
        .config(&d.path().join("s.toml"))
        .start();
    for target in [
        "/rw/..%2fsecret.txt",
        "/rw/%2e%2e/secret.txt",
        "/rw/%2e%2e%2fsecret.txt",
        "/rw/.%2e/.%2e/secret.txt",
        "/tf/..%2fsecret.txt",
        "/tf/%2e%2e%2fsecret",
        "/tf/x%00/../../secret.txt",
        "/ls/..%2f..%2f",
        "/ls/%2e%2e/",
    ] {
        let mut c = Client::new(srv.connect());
        let r = c.exchange(format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
        assert!(
            !r.body_str().contains("SECRET") && !r.body_str().contains("secret.txt"),
            "{backend} {target}: {} {}",
            r.status,
            r.body_str()
        );
        assert!(r.status >= 400, "{backend} {target}: {}", r.status);
    }
    // Controls: the same routes do serve what is inside the root.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(b"GET /rw/index.html HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "hi\n"));
    let r = c.exchange(b"GET /ls/ HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body_str().contains("inner.txt"));
}

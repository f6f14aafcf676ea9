//! Static-file serving: the shared test site, large files (byte-exact, slow readers, HEAD),
//! methods, directories, response headers and precompressed sidecars.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::{fixed_mtime, random_bytes, Server, ServerBuilder, TempDir};
use crate::http::{get, req, Client, Response};

/// `small.txt`: 36 bytes, handy for ranges.
pub const SMALL: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
pub const ROOT_INDEX: &[u8] = b"<!doctype html><h1>root index</h1>\n";
pub const DIR_INDEX: &[u8] = b"<!doctype html><h1>dir index</h1>\n";
/// Above the default small-file threshold (64 KiB): served by splice/sendfile.
pub const MEDIUM_LEN: usize = 300 * 1024;
pub const BIG_LEN: usize = 3 * 1024 * 1024;

/// The site most tests serve.
pub struct Site {
    pub dir: TempDir,
    pub medium: Vec<u8>,
    pub big: Vec<u8>,
    pub page: Vec<u8>,
    pub page_gz: Vec<u8>,
}

/// Build the test site; `big` adds the 3 MiB `big.bin`.
pub fn site(big: bool) -> Site {
    let dir = TempDir::new("site");
    dir.write("index.html", ROOT_INDEX);
    dir.write("small.txt", SMALL);
    dir.write("style.css", b"body { color: black }\n");
    dir.write("sp ace.txt", b"space\n");
    dir.write("dir/index.html", DIR_INDEX);
    dir.write("noindex/a.txt", b"a\n");
    dir.write(".secret", b"DOTFILE-MARKER\n");
    let medium = random_bytes(MEDIUM_LEN, 7);
    dir.write("medium.bin", &medium);
    let page: Vec<u8> = (0..4000).map(|i| b"<p>ringd</p>\n"[i % 13]).collect();
    dir.write("page.html", &page);
    let mut page_gz = vec![0x1f, 0x8b, 0x08, 0x00];
    page_gz.extend(random_bytes(116, 11));
    dir.write("page.html.gz", &page_gz);
    // A sidecar larger than its file must never be chosen.
    dir.write("tiny.txt", b"tiny\n");
    dir.write("tiny.txt.gz", &random_bytes(64, 13));
    let big = if big {
        let b = random_bytes(BIG_LEN, 3);
        dir.write("big.bin", &b);
        b
    } else {
        Vec::new()
    };
    Site {
        dir,
        medium,
        big,
        page,
        page_gz,
    }
}

/// Assert status and exact body, with the server's diagnostics on failure.
#[track_caller]
pub fn expect(srv: &Server, what: &str, r: &Response, status: u16, body: Option<&[u8]>) {
    assert_eq!(
        r.status,
        status,
        "{what}: status {} (want {status})\n{r:?}\n{}",
        r.status,
        srv.diagnostics()
    );
    if let Some(b) = body {
        assert!(
            r.body == b,
            "{what}: body differs ({} bytes, want {}; first difference at {:?})\n{r:?}",
            r.body.len(),
            b.len(),
            r.body.iter().zip(b).position(|(x, y)| x != y)
        );
    }
}

/// Case 2a: a 3 MiB file byte-exact (twice on one connection) and HEAD.
pub fn big_file(backend: &str) {
    let site = site(true);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());
    for round in 0..2 {
        let r = c.exchange(&req("GET", "/big.bin", &[]));
        expect(&srv, &format!("GET big #{round}"), &r, 200, Some(&site.big));
        assert_eq!(r.header("content-length"), Some("3145728"), "{r:?}");
    }
    let r = c.exchange(&req("HEAD", "/big.bin", &[]));
    expect(&srv, "HEAD big", &r, 200, Some(b""));
    assert_eq!(r.header("content-length"), Some("3145728"), "{r:?}");
    // Had the HEAD carried a body, this would parse garbage.
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "GET after HEAD", &r, 200, Some(SMALL));
}

/// `Connection: close` on a 3 MiB response that is still in the socket buffers when the server
/// is done writing: the server closes at once (no input waits unread, so no linger), and the
/// kernel must still deliver every byte and then a FIN, never a reset. Also with `--notsent-lowat
/// 0` (the kernel's setting), which lets the server queue far more before it closes.
pub fn close_after_big_response(backend: &str) {
    use std::io::Read;
    let site = site(true);
    for lowat in ["16K", "0"] {
        let srv = ServerBuilder::new(backend, site.dir.path())
            .args(&["--notsent-lowat", lowat])
            .start();
        let mut s = srv.connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut s, &req("GET", "/big.bin", &[("Connection", "close")]))
            .unwrap();
        // Let the server write what fits and finish (or block) before anything is read.
        thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        let res = s.read_to_end(&mut got);
        assert!(
            res.is_ok(),
            "lowat {lowat}: read ended with {res:?} after {} bytes\n{}",
            got.len(),
            srv.diagnostics()
        );
        let head_end = crate::http::find(&got, b"\r\n\r\n").expect("no response head") + 4;
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "lowat {lowat}: {head}");
        assert!(head.contains("connection: close"), "lowat {lowat}: {head}");
        assert!(
            got[head_end..] == site.big[..],
            "lowat {lowat}: body of {} bytes differs from the 3 MiB file",
            got.len() - head_end
        );
    }
}

/// Case 2b: two concurrent slow readers (64 KiB, then 20 ms) both get the 3 MiB file intact,
/// and a third client is served promptly meanwhile.
pub fn slow_readers(backend: &str) {
    let site = site(true);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let srv = &srv;
                s.spawn(move || {
                    let mut c = Client::new(srv.connect());
                    c.throttle = Some((64 * 1024, Duration::from_millis(20)));
                    let r = c.exchange(&req("GET", "/big.bin", &[]));
                    (i, r)
                })
            })
            .collect();
        // The slow readers need about a second; meanwhile other clients (on both workers,
        // by SO_REUSEPORT hashing) must not wait for them.
        thread::sleep(Duration::from_millis(200));
        for i in 0..4 {
            let t0 = Instant::now();
            let r = get(&srv, "/small.txt", &[]);
            expect(
                &srv,
                "fast client beside slow readers",
                &r,
                200,
                Some(SMALL),
            );
            assert!(
                t0.elapsed() < Duration::from_millis(700),
                "small GET #{i} took {:?} while slow readers were active",
                t0.elapsed()
            );
        }
        for h in readers {
            let (i, r) = h.join().expect("slow reader panicked");
            expect(&srv, &format!("slow reader {i}"), &r, 200, Some(&site.big));
        }
    });
}

/// Case 8a: methods, directories, index files, and the headers every response carries.
pub fn methods_dirs_headers(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());

    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "GET small", &r, 200, Some(SMALL));
    check_common_headers(&r, "text/plain; charset=utf-8", SMALL.len());
    let etag = r.header("etag").unwrap().to_string();

    let h = c.exchange(&req("HEAD", "/small.txt", &[]));
    expect(&srv, "HEAD small", &h, 200, Some(b""));
    check_common_headers(&h, "text/plain; charset=utf-8", SMALL.len());
    assert_eq!(h.header("etag"), Some(etag.as_str()), "HEAD ETag differs");

    let r = c.exchange(&req("GET", "/", &[]));
    expect(&srv, "GET /", &r, 200, Some(ROOT_INDEX));
    check_common_headers(&r, "text/html; charset=utf-8", ROOT_INDEX.len());
    let r = c.exchange(&req("GET", "/index.html", &[]));
    expect(&srv, "GET /index.html", &r, 200, Some(ROOT_INDEX));
    let r = c.exchange(&req("GET", "/dir/", &[]));
    expect(&srv, "GET /dir/", &r, 200, Some(DIR_INDEX));
    let r = c.exchange(&req("GET", "/style.css", &[]));
    expect(&srv, "GET css", &r, 200, None);
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/css") && ct.contains("charset=utf-8"),
        "css Content-Type {ct:?}"
    );
    let r = c.exchange(&req("GET", "/medium.bin", &[]));
    expect(&srv, "GET medium", &r, 200, Some(&site.medium));
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{r:?}"
    );
    let r = c.exchange(&req("GET", "/small.txt?v=1&x=%2e%2e", &[]));
    expect(&srv, "GET with query", &r, 200, Some(SMALL));
    let r = c.exchange(&req("GET", "/sp%20ace.txt", &[]));
    expect(&srv, "percent-encoded name", &r, 200, Some(b"space\n"));
    let r = c.exchange(&req("GET", "/%73mall.txt", &[]));
    expect(&srv, "percent-encoded unreserved", &r, 200, Some(SMALL));

    let r = c.exchange(&req("GET", "/dir", &[]));
    expect(&srv, "dir without slash", &r, 301, None);
    let loc = r.header("location").unwrap_or("");
    assert!(loc.ends_with("/dir/"), "301 Location {loc:?}");
    let r = c.exchange(&req("GET", "/noindex/", &[]));
    expect(&srv, "dir without index", &r, 404, None);
    let r = c.exchange(&req("GET", "/missing.txt", &[]));
    expect(&srv, "missing file", &r, 404, None);
    assert!(r.header("date").is_some(), "404 without Date: {r:?}");

    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = c.exchange(&req(m, "/small.txt", &[("Content-Length", "0")]));
        expect(&srv, &format!("{m} on a file"), &r, 405, None);
        let mut allow: Vec<String> = r
            .header_all("allow")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_uppercase())
            .collect();
        allow.sort();
        assert_eq!(allow, ["GET", "HEAD"], "{m}: Allow header in {r:?}");
    }
    // The connection survived all of that.
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "final GET", &r, 200, Some(SMALL));
}

/// Date, Server, Content-Type, Content-Length, ETag, Last-Modified, Accept-Ranges.
#[track_caller]
pub fn check_common_headers(r: &Response, content_type: &str, len: usize) {
    let date = r.header("date").unwrap_or_else(|| panic!("no Date: {r:?}"));
    let date = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    let skew = date
        .duration_since(SystemTime::now())
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap();
    assert!(skew < Duration::from_secs(5), "Date off by {skew:?}");
    assert!(
        r.header("server").is_some_and(|s| !s.is_empty()),
        "no Server: {r:?}"
    );
    assert_eq!(r.header("content-type"), Some(content_type), "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some(len.to_string().as_str()),
        "{r:?}"
    );
    let etag = r.header("etag").unwrap_or_else(|| panic!("no ETag: {r:?}"));
    let opaque = etag.strip_prefix("W/").unwrap_or(etag);
    assert!(
        opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"'),
        "ETag {etag:?} is not an entity-tag (RFC 9110 §8.8.3)"
    );
    assert_eq!(
        r.header("last-modified"),
        Some(httpdate::fmt_http_date(fixed_mtime()).as_str()),
        "{r:?}"
    );
    assert!(r.has_token("accept-ranges", "bytes"), "{r:?}");
}

/// Case 8e: `.gz` sidecars with Content-Encoding and Vary, only when asked for and smaller.
pub fn precompressed(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());

    let gz = c.exchange(&req("GET", "/page.html", &[("Accept-Encoding", "gzip")]));
    expect(&srv, "gzip asked", &gz, 200, Some(&site.page_gz));
    assert_eq!(gz.header("content-encoding"), Some("gzip"), "{gz:?}");
    assert!(gz.has_token("vary", "accept-encoding"), "no Vary: {gz:?}");
    assert_eq!(
        gz.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{gz:?}"
    );

    for ae in ["deflate, gzip;q=1.0, br;q=0.1", "GZIP"] {
        let r = c.exchange(&req("GET", "/page.html", &[("Accept-Encoding", ae)]));
        expect(&srv, &format!("AE {ae}"), &r, 200, Some(&site.page_gz));
    }
    let h = c.exchange(&req("HEAD", "/page.html", &[("Accept-Encoding", "gzip")]));
    expect(&srv, "HEAD gzip", &h, 200, Some(b""));
    assert_eq!(
        h.header("content-length"),
        Some(site.page_gz.len().to_string().as_str())
    );

    let plain = c.exchange(&req("GET", "/page.html", &[]));
    expect(&srv, "no Accept-Encoding", &plain, 200, Some(&site.page));
    assert_eq!(plain.header("content-encoding"), None, "{plain:?}");
    for ae in ["gzip;q=0", "identity", "br", "deflate"] {
        let r = c.exchange(&req("GET", "/page.html", &[("Accept-Encoding", ae)]));
        expect(&srv, &format!("AE {ae}"), &r, 200, Some(&site.page));
        assert_eq!(r.header("content-encoding"), None, "AE {ae}: {r:?}");
    }
    // Two representations cannot share a strong validator (RFC 9110 §8.8.1).
    let (e1, e2) = (gz.header("etag").unwrap(), plain.header("etag").unwrap());
    if !e1.starts_with("W/") && !e2.starts_with("W/") {
        assert_ne!(e1, e2, "gzip and plain variants share the strong ETag {e1}");
    }
    let r = c.exchange(&req("GET", "/tiny.txt", &[("Accept-Encoding", "gzip")]));
    expect(&srv, "larger sidecar ignored", &r, 200, Some(b"tiny\n"));
    assert_eq!(r.header("content-encoding"), None, "{r:?}");
    let r = c.exchange(&req("GET", "/page.html.gz", &[]));
    expect(
        &srv,
        "sidecar by its own name",
        &r,
        200,
        Some(&site.page_gz),
    );
}

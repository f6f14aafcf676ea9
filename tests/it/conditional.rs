//! Range requests (single, suffix, unsatisfiable, multipart, If-Range) and conditional
//! requests in RFC 9110 §13.2.2 order (If-Match, If-Unmodified-Since, If-None-Match,
//! If-Modified-Since).

use std::time::Duration;

use crate::harness::{fixed_mtime, ServerBuilder};
use crate::http::{find, req, Client, Response};
use crate::static_files::{expect, site, BIG_LEN, MEDIUM_LEN, SMALL};

/// Case 8b: ranges on a small (in-memory) file and on a spliced/sendfile'd one.
pub fn ranges(backend: &str) {
    let site = site(true);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());
    let mut range = |spec: &str| c.exchange(&req("GET", "/small.txt", &[("Range", spec)]));

    for (spec, first, last) in [
        ("bytes=2-5", 2, 5),
        ("bytes=30-", 30, 35),
        ("bytes=-3", 33, 35),
        ("bytes=0-1000", 0, 35),
        ("bytes=0-0", 0, 0),
        ("bytes=35-35", 35, 35),
    ] {
        let r = range(spec);
        expect(&srv, spec, &r, 206, Some(&SMALL[first..=last]));
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/36").as_str()),
            "{spec}: {r:?}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((last - first + 1).to_string().as_str()),
            "{spec}: {r:?}"
        );
    }
    for spec in ["bytes=36-", "bytes=100-200"] {
        let r = range(spec);
        expect(&srv, spec, &r, 416, None);
        assert_eq!(
            r.header("content-range"),
            Some("bytes */36"),
            "{spec}: {r:?}"
        );
    }
    // An invalid range set may be ignored (200) or refused (416): RFC 9110 §14.2, §15.5.17.
    for spec in ["bytes=5-2", "bytes=abc", "bytes=-"] {
        let r = range(spec);
        assert!(matches!(r.status, 200 | 416), "{spec}: {r:?}");
        if r.status == 200 {
            assert_eq!(r.body, SMALL, "{spec}");
        }
    }
    // A unit the server does not know is ignored (RFC 9110 §14.2).
    let r = range("items=0-5");
    expect(&srv, "unknown range unit", &r, 200, Some(SMALL));

    // Two disjoint ranges → multipart/byteranges (RFC 9110 §14.6).
    let r = range("bytes=0-1,4-5");
    expect(&srv, "multi-range", &r, 206, None);
    let parts = multipart(&r);
    assert_eq!(
        parts,
        vec![
            ("bytes 0-1/36".to_string(), b"01".to_vec()),
            ("bytes 4-5/36".to_string(), b"45".to_vec())
        ],
        "multipart parts of {r:?}"
    );

    // Ranges of the large file (splice/sendfile with an offset).
    let mut medium = |spec: &str| c.exchange(&req("GET", "/medium.bin", &[("Range", spec)]));
    let r = medium("bytes=100000-199999");
    expect(
        &srv,
        "medium range",
        &r,
        206,
        Some(&site.medium[100_000..200_000]),
    );
    let r = medium("bytes=-1000");
    expect(
        &srv,
        "medium suffix",
        &r,
        206,
        Some(&site.medium[MEDIUM_LEN - 1000..]),
    );
    let r = medium(&format!("bytes={}-", MEDIUM_LEN - 1));
    expect(
        &srv,
        "medium last byte",
        &r,
        206,
        Some(&site.medium[MEDIUM_LEN - 1..]),
    );

    let mut big = |spec: &str| c.exchange(&req("GET", "/big.bin", &[("Range", spec)]));
    let r = big("bytes=1000000-2000000");
    expect(
        &srv,
        "big range",
        &r,
        206,
        Some(&site.big[1_000_000..=2_000_000]),
    );
    let r = big("bytes=-70000");
    expect(
        &srv,
        "big suffix",
        &r,
        206,
        Some(&site.big[BIG_LEN - 70000..]),
    );

    // If-Range: a matching validator keeps the range, anything else gets the whole file.
    let full = c.exchange(&req("GET", "/small.txt", &[]));
    let etag = full.header("etag").unwrap().to_string();
    let lm = full.header("last-modified").unwrap().to_string();
    let mut if_range = |v: &str| {
        c.exchange(&req(
            "GET",
            "/small.txt",
            &[("Range", "bytes=2-5"), ("If-Range", v)],
        ))
    };
    if !etag.starts_with("W/") {
        let r = if_range(&etag);
        expect(&srv, "If-Range matching ETag", &r, 206, Some(b"2345"));
    }
    let r = if_range("\"not-the-etag\"");
    expect(&srv, "If-Range other ETag", &r, 200, Some(SMALL));
    let r = if_range(&lm);
    expect(&srv, "If-Range = Last-Modified", &r, 206, Some(b"2345"));
    let older = httpdate::fmt_http_date(fixed_mtime() - Duration::from_secs(3600));
    let r = if_range(&older);
    expect(&srv, "If-Range older date", &r, 200, Some(SMALL));
    // HEAD with a range: headers of the 206, no body.
    let r = c.exchange(&req("HEAD", "/small.txt", &[("Range", "bytes=2-5")]));
    assert!(matches!(r.status, 200 | 206), "HEAD with Range: {r:?}");
    let r = c.exchange(&req("GET", "/small.txt", &[]));
    expect(&srv, "GET after ranges", &r, 200, Some(SMALL));
}

/// The (Content-Range, data) of each part of a multipart/byteranges body.
fn multipart(r: &Response) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("multipart/byteranges"),
        "Content-Type {ct:?} in {r:?}"
    );
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {ct:?}"))
        .trim_matches('"')
        .to_string();
    let delim = format!("--{boundary}");
    let body = &r.body;
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes()).expect("no first boundary") + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break; // close-delimiter
        }
        let head_end = pos + find(&body[pos..], b"\r\n\r\n").expect("part head") + 4;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let cr = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-range"))
            })
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("part without Content-Range: {head:?}"));
        let next = head_end
            + find(&body[head_end..], format!("\r\n{delim}").as_bytes()).expect("next boundary");
        parts.push((cr, body[head_end..next].to_vec()));
        pos = next + 2 + delim.len();
    }
    parts
}

/// Case 8c: conditional requests.
pub fn conditionals(backend: &str) {
    let site = site(false);
    let srv = ServerBuilder::new(backend, site.dir.path()).start();
    let mut c = Client::new(srv.connect());
    let full = c.exchange(&req("GET", "/small.txt", &[]));
    let etag = full.header("etag").expect("ETag").to_string();
    let lm = full
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    let strong = !etag.starts_with("W/");
    let opaque = etag.trim_start_matches("W/").to_string();
    let weak = format!("W/{opaque}");
    let past = "Sat, 01 Jan 2000 00:00:00 GMT";
    let future = httpdate::fmt_http_date(fixed_mtime() + Duration::from_secs(86400));

    let mut ask = |method: &str, headers: &[(&str, &str)]| {
        let r = c.exchange(&req(method, "/small.txt", headers));
        (r, format!("{method} {headers:?}"))
    };
    let not_modified = |r: &Response, what: &str| {
        expect(&srv, what, r, 304, Some(b""));
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{what}: 304 ETag");
        assert!(r.header("date").is_some(), "{what}: 304 without Date");
        // A 304 may repeat the Content-Length the 200 would have had, nothing else (§8.6).
        if let Some(cl) = r.header("content-length") {
            assert_eq!(cl, "36", "{what}: 304 with Content-Length {cl}");
        }
    };

    // If-None-Match: weak comparison, lists, "*" (RFC 9110 §13.1.2).
    for inm in [
        etag.as_str(),
        weak.as_str(),
        &format!("\"x\", {etag}"),
        &format!("\"x\",{opaque} , \"y\""),
        "*",
    ] {
        let (r, what) = ask("GET", &[("If-None-Match", inm)]);
        not_modified(&r, &what);
    }
    let (r, what) = ask("HEAD", &[("If-None-Match", &etag)]);
    not_modified(&r, &what);
    let (r, what) = ask("GET", &[("If-None-Match", "\"nomatch\"")]);
    expect(&srv, &what, &r, 200, Some(SMALL));
    // If-None-Match present: If-Modified-Since is ignored (§13.2.2 step 4).
    let (r, what) = ask(
        "GET",
        &[("If-None-Match", "\"nomatch\""), ("If-Modified-Since", &lm)],
    );
    expect(&srv, &what, &r, 200, Some(SMALL));

    // If-Modified-Since.
    for ims in [lm.as_str(), future.as_str()] {
        let (r, what) = ask("GET", &[("If-Modified-Since", ims)]);
        not_modified(&r, &what);
    }
    for ims in [past, "not a date"] {
        let (r, what) = ask("GET", &[("If-Modified-Since", ims)]);
        expect(&srv, &what, &r, 200, Some(SMALL));
    }

    // If-Match (strong comparison) and If-Unmodified-Since.
    let (r, what) = ask("GET", &[("If-Match", "\"nomatch\"")]);
    expect(&srv, &what, &r, 412, None);
    let (r, what) = ask("GET", &[("If-Match", "*")]);
    expect(&srv, &what, &r, 200, Some(SMALL));
    let (r, what) = ask("GET", &[("If-Match", &etag)]);
    expect(&srv, &what, &r, if strong { 200 } else { 412 }, None);
    let (r, what) = ask("GET", &[("If-Match", &weak)]);
    expect(&srv, &what, &r, 412, None);
    let (r, what) = ask("GET", &[("If-Unmodified-Since", past)]);
    expect(&srv, &what, &r, 412, None);
    let (r, what) = ask("GET", &[("If-Unmodified-Since", &future)]);
    expect(&srv, &what, &r, 200, Some(SMALL));
    // If-Match is evaluated first: a failing If-Match wins over a matching If-None-Match.
    let (r, what) = ask(
        "GET",
        &[("If-Match", "\"nomatch\""), ("If-None-Match", &etag)],
    );
    expect(&srv, &what, &r, 412, None);
    // A failed precondition beats a Range.
    let (r, what) = ask(
        "GET",
        &[("If-Match", "\"nomatch\""), ("Range", "bytes=0-1")],
    );
    expect(&srv, &what, &r, 412, None);
    // 304 wins over Range too.
    let (r, what) = ask("GET", &[("If-None-Match", &etag), ("Range", "bytes=0-1")]);
    not_modified(&r, &what);

    // The connection is intact after all the bodiless answers.
    let (r, what) = ask("GET", &[]);
    expect(&srv, &what, &r, 200, Some(SMALL));
}

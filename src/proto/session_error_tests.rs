//! Session-level tests of protocol errors and expectations: what is answered (status, no body
//! for HEAD, `Connection: close`) and that nothing after an error is answered.

use super::tests::{get, header, responses, Harness};
use super::*;

#[test]
fn error_closes_and_nothing_after_is_answered() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/3.0\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
    ] {
        let mut h = Harness::new("s-err", Config::default());
        let mut input = get("/a.txt");
        input.extend_from_slice(bad);
        input.extend_from_slice(&get("/a.txt"));
        h.feed(&input);
        h.feed(&get("/a.txt"));
        let all = h.drain();
        let rs = responses(&all, &[]);
        assert_eq!(rs.len(), 2, "{}", String::from_utf8_lossy(&all));
        assert_eq!(rs[0].0, 200);
        assert!(rs[1].0 >= 400);
        assert_eq!(header(&rs[1].1, "Connection"), Some("close"));
        assert!(h.s.should_close() && !h.s.wants_read());
    }
}

#[test]
fn head_error_answers_have_no_body() {
    let mut long = b"HEAD /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    let cases: [(&[u8], u16); 6] = [
        (b"HEAD /a.txt HTTP/1.1\r\n\r\n", 400),
        (b"HEAD /a.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (&long, 414),
        (
            b"HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n",
            413,
        ),
        (
            b"HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404),
    ];
    for (bad, status) in cases {
        let mut h = Harness::new("s-headerr", Config::default());
        let r = h.roundtrip(bad);
        let what = String::from_utf8_lossy(&bad[..bad.len().min(60)]);
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what:?}: {r}"
        );
        // Content-Length as a GET would get it, and nothing after the blank line.
        assert!(r.contains("Content-Length: "), "{what:?}: {r}");
        assert!(
            r.ends_with("\r\n\r\n"),
            "{what:?}: body after the head: {r}"
        );
    }
    // The access log counts no body bytes for them.
    let cfg = Config {
        access_log: Some("/dev/null".into()),
        ..Default::default()
    };
    let mut h = Harness::new("s-headerr-log", cfg);
    h.roundtrip(b"HEAD /a.txt HTTP/1.1\r\n\r\n");
    let line = String::from_utf8_lossy(h.svc.access_log()).into_owned();
    assert!(line.contains("\" 400 0 "), "{line}");
}

#[test]
fn request_limits() {
    let mut h = Harness::new("s-limits", Config::default());
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    h.feed(&long);
    assert!(String::from_utf8_lossy(&h.drain()).starts_with("HTTP/1.1 414 "));
    assert!(h.s.should_close());
    let mut h = Harness::new("s-limits2", Config::default());
    let mut big = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..200 {
        big.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(100)).as_bytes());
    }
    h.feed(&big);
    assert!(String::from_utf8_lossy(&h.drain()).starts_with("HTTP/1.1 431 "));
}

#[test]
fn bad_chunk_extension_answers_400_and_closes() {
    let mut h = Harness::new("s-chunkext", Config::default());
    let mut input =
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-encoding: chunked\r\n\r\n2;\r\naa\r\n0\r\n\r\n"
            .to_vec();
    input.extend_from_slice(&get("/a.txt"));
    let r = h.roundtrip(&input);
    let rs = responses(r.as_bytes(), &[]);
    assert_eq!(rs.len(), 1, "{r}");
    assert_eq!(rs[0].0, 400, "{r}");
    assert_eq!(header(&rs[0].1, "Connection"), Some("close"));
    assert!(h.s.should_close());
}

#[test]
fn expect_100_continue_gets_the_final_status_at_once_then_close() {
    // The body is not sent (the client waits for 100): the 405 must come anyway.
    let mut h = Harness::new("s-expect", Config::default());
    let r = h.roundtrip(
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let rs = responses(r.as_bytes(), &[]);
    assert_eq!(rs.len(), 1, "{r}");
    assert_eq!(rs[0].0, 405, "{r}");
    assert_eq!(header(&rs[0].1, "Connection"), Some("close"), "{r}");
    assert!(h.s.should_close() && !h.s.wants_read());
    // The body arriving after that is never parsed as a request.
    h.feed(b"GET /");
    assert!(h.drain().is_empty());

    // GET with a body: served at once, then close; bytes behind the head are not parsed.
    let mut h = Harness::new("s-expect-get", Config::default());
    let mut input =
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
            .to_vec();
    input.extend_from_slice(&get("/a.txt"));
    let r = h.roundtrip(&input);
    let rs = responses(r.as_bytes(), &[]);
    assert_eq!(rs.len(), 1, "{r}");
    assert_eq!((rs[0].0, &rs[0].2[..]), (200, &b"hello world\n"[..]));
    assert_eq!(header(&rs[0].1, "Connection"), Some("close"));

    // Over max_body: 413 first (the canonical use of Expect).
    let mut h = Harness::new("s-expect-413", Config::default());
    let r = h.roundtrip(
        b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 9000000\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413 ") && h.s.should_close(), "{r}");

    // No body: nothing to wait for; an ordinary exchange on a kept connection.
    let mut h = Harness::new("s-expect-nobody", Config::default());
    let r = h.roundtrip(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 ") && !r.contains("Connection:"),
        "{r}"
    );
    assert!(!h.s.should_close());

    // HTTP/1.0 ignores the expectation: the body is read and the connection goes on.
    let mut h = Harness::new("s-expect-10", Config::default());
    let mut input = b"POST /a.txt HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    input.extend_from_slice(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = h.roundtrip(&input);
    let statuses: Vec<u16> = responses(r.as_bytes(), &[]).iter().map(|r| r.0).collect();
    assert_eq!(statuses, [405, 200], "{r}");
    assert!(!h.s.should_close());

    // Another expectation: 417 and close (no body for HEAD).
    let mut h = Harness::new("s-expect-417", Config::default());
    let r = h.roundtrip(b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 417 Expectation Failed\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    assert!(h.s.should_close());
}

//! Session-level tests of a WSGI app's streamed request body, sans-IO: the driver's part
//! (`driver::app::drive`) played by hand through the exchange (`take_call`, `to_send`/`sent`,
//! `gw_feed`/`gw_eof`, `gw_release`), with a simulated clock.

use std::sync::Arc;
use std::time::Duration;

use super::tests::Harness;
use super::*;
use crate::config::sites::Sites;

/// One site whose every path goes to a WSGI app (30 s timeout), bodies up to 8 MiB.
fn app_config() -> Config {
    let mut sites = Sites::single(std::env::temp_dir());
    sites.add_wsgi("/", "m:app", Duration::from_secs(30));
    let mut cfg = Config {
        sites: Arc::new(sites),
        ..Config::default()
    };
    cfg.limits.max_body = 8 << 20;
    cfg
}

fn app_harness(tag: &str) -> Harness {
    Harness::new(tag, app_config())
}

/// What the app "reads": every byte handed over so far.
fn hand_over(h: &mut Harness) -> Vec<u8> {
    let now = h.now;
    let x = h.s.gateway().expect("an app call in flight");
    let got = x.to_send().to_vec();
    x.sent(got.len(), now);
    got
}

fn answer(h: &mut Harness, body: &str) {
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let now = h.now;
    h.s.gw_feed(&mut h.svc, resp.as_bytes(), now);
    h.s.gw_eof(&mut h.svc, now);
    assert!(h.s.gateway().and_then(|x| x.finished()).is_some());
    h.s.gw_release(&mut h.svc, now);
}

#[test]
fn app_is_called_at_the_head_and_reads_the_body_as_it_comes() {
    let mut h = app_harness("app-stream");
    h.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    let now = h.now;
    let x = h.s.gateway().expect("called once the head is in");
    assert!(x.is_app() && x.streams_body());
    let call = x.take_call().expect("the call");
    assert!(call.streamed);
    assert!(call
        .environ
        .iter()
        .any(|(k, v)| *k == "CONTENT_LENGTH" && v == b"10"));
    x.spawned(now);
    assert_eq!(hand_over(&mut h), b"abc");
    assert!(!h.s.gateway().unwrap().body_complete());
    h.feed(b"defghij");
    assert_eq!(hand_over(&mut h), b"defghij");
    assert!(h.s.gateway().unwrap().body_complete());
    answer(&mut h, "10");
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\n10"),
        "{out}"
    );
    assert!(!out.contains("close"), "{out}");
    // Keep-alive: the next request is answered (here: called).
    h.feed(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz");
    assert!(h.s.gateway().is_some_and(|x| x.is_app()));
}

#[test]
fn reading_the_client_pauses_while_the_app_does_not_read() {
    let mut h = app_harness("app-backlog");
    h.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n");
    let now = h.now;
    let x = h.s.gateway().unwrap();
    x.take_call();
    x.spawned(now);
    let mut fed = 0;
    while h.s.wants_read() && fed < 1_000_000 {
        h.feed(&[b'q'; 8192]);
        fed += 8192;
    }
    assert!(
        fed < 200_000,
        "read {fed} bytes for an app that reads nothing"
    );
    hand_over(&mut h);
    assert!(
        h.s.wants_read(),
        "reads on once the app has taken the bytes"
    );
}

#[test]
fn unread_body_is_drained_then_the_next_request_is_answered() {
    let mut h = app_harness("app-drain");
    h.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    let now = h.now;
    let x = h.s.gateway().unwrap();
    let call = x.take_call().unwrap();
    assert!(!call.environ.iter().any(|(k, _)| *k == "CONTENT_LENGTH"));
    x.spawned(now);
    answer(&mut h, "early");
    assert!(h.s.gateway().is_none());
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(out.ends_with("early") && !out.contains("close"), "{out}");
    // The rest of the body, and a pipelined request behind it, in one read.
    h.feed(b"6\r\n world\r\n0\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    let x =
        h.s.gateway()
            .expect("the GET behind the drained body is answered");
    let call = x.take_call().unwrap();
    assert!(call
        .environ
        .iter()
        .any(|(k, v)| *k == "PATH_INFO" && v == b"/a.txt"));
}

#[test]
fn continue_goes_out_when_the_app_reads_and_never_after_the_response() {
    let mut h = app_harness("app-continue");
    h.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    let now = h.now;
    assert!(h.drain().is_empty(), "no 100 before the app reads");
    h.s.gateway().unwrap().take_call();
    h.s.gateway().unwrap().spawned(now);
    assert!(h.s.gw_wants_body(&mut h.svc, now));
    assert_eq!(h.drain(), b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(!h.s.gw_wants_body(&mut h.svc, now), "one 100 only");
    h.feed(b"abc");
    assert_eq!(hand_over(&mut h), b"abc");
    answer(&mut h, "ok");
    assert!(String::from_utf8(h.drain()).unwrap().ends_with("ok"));

    // An app that answers without reading: no 100, and the connection closes (the client
    // may or may not send the body now).
    h.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    h.s.gateway().unwrap().take_call();
    h.s.gateway().unwrap().spawned(now);
    answer(&mut h, "no");
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(
        !out.contains("100 Continue") && out.ends_with("no"),
        "{out}"
    );
    assert!(h.s.should_close());
}

/// The app's GET, answered up to `head` (the call made, nothing fed yet).
fn called(h: &mut Harness) {
    h.feed(b"GET /page HTTP/1.1\r\nHost: h\r\n\r\n");
    let now = h.now;
    let x = h.s.gateway().expect("an app call");
    x.take_call().expect("the call");
    x.spawned(now);
}

#[test]
fn a_head_that_comes_alone_waits_for_its_first_body_bytes() {
    let mut h = app_harness("app-hold");
    called(&mut h);
    let now = h.now;
    h.s.gw_feed(
        &mut h.svc,
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
        now,
    );
    assert!(h.s.next_output().is_none(), "the head waits for the body");
    assert!(h.s.gw_wants_read(), "and the body is read meanwhile");
    h.s.gw_feed(&mut h.svc, b"hello", now);
    // Head and the first body bytes go out as one piece (one write, one segment).
    let Some(Output::Bytes(b)) = h.s.next_output() else {
        panic!("head and body due");
    };
    let one = String::from_utf8(b.to_vec()).unwrap();
    assert!(
        one.starts_with("HTTP/1.1 200 OK\r\n") && one.ends_with("\r\n\r\nhello"),
        "{one}"
    );
    h.s.gw_feed(&mut h.svc, b" world", now);
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(out.ends_with("\r\n\r\nhello world"), "{out}");
    // A chunked response is not held: it may be a stream whose first event is far off.
    h.s.gw_release(&mut h.svc, now);
    called(&mut h);
    h.s.gw_feed(
        &mut h.svc,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        now,
    );
    assert!(h.s.next_output().is_some(), "a chunked head goes at once");
}

#[test]
fn a_held_head_goes_out_when_the_upstream_fails_and_the_response_is_cut() {
    let mut h = app_harness("app-hold-cut");
    called(&mut h);
    let now = h.now;
    h.s.gw_feed(
        &mut h.svc,
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
        now,
    );
    assert!(h.s.next_output().is_none());
    h.s.gw_eof(&mut h.svc, now);
    assert!(h.s.gateway().and_then(|x| x.finished()).is_some());
    h.s.gw_release(&mut h.svc, now);
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("Content-Length: 11"),
        "the head as before: {out}"
    );
    assert!(h.s.should_close(), "a cut response closes the connection");
}

#[test]
fn waiting_for_the_body_is_not_a_client_send_stall() {
    let mut cfg = app_config();
    cfg.timeouts.send_stall = Duration::from_secs(5);
    let mut h = Harness::new("app-hold-stall", cfg);
    called(&mut h);
    let start = h.now;
    h.s.gw_feed(
        &mut h.svc,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        start,
    );
    let d = h.s.deadline().expect("the app's read timer");
    assert!(
        d > start + Duration::from_secs(5),
        "only the app's timer runs while the head waits: {:?}",
        d - start
    );
    // The body comes after longer than the send stall: the client's clock starts now.
    h.now = start + Duration::from_secs(20);
    let now = h.now;
    h.s.gw_feed(&mut h.svc, b"ok", now);
    let d = h.s.deadline().expect("the send stall");
    assert!(d >= now + Duration::from_secs(5), "{:?}", d - now);
    let out = String::from_utf8(h.drain()).unwrap();
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
}

//! Session-level tests of asynchronous opening: a request whose file must be opened parks
//! (`Session::parked`), the test runs the open job the way the uring driver does (synchronous
//! opens standing in for io_uring's OpenAt2 and Read), and `resume` answers it.

use std::os::fd::BorrowedFd;

use super::tests::{get, Harness};
use super::*;

/// Runs every open job the handler asked for the way the uring driver does, but with
/// synchronous calls: open each planned path, read the bodies the cache keeps, finish.
fn run_open_jobs(h: &mut Harness) -> Vec<Box<[u8]>> {
    use crate::handler::{fs, AfterOpen};
    let mut done = Vec::new();
    while let Some(key) = h.svc.files().take_wanted() {
        let files = h.svc.files();
        if let Some(plan) = files.open_plan(&key) {
            // SAFETY: the root fd stays open for the whole test (the Service owns it).
            let root = unsafe { BorrowedFd::borrow_raw(files.root_fd(&key)) };
            let opened = plan
                .paths
                .clone()
                .map(|p| fs::open_beneath(root, &p, false));
            match files.opened(&key, plan, opened, h.now) {
                AfterOpen::Done => {}
                AfterOpen::Read(probe, reads) => {
                    let mut bodies: [Option<Vec<u8>>; 4] = Default::default();
                    for (i, fd, n) in reads {
                        // SAFETY: `probe` owns `fd` until `finish` takes it.
                        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                        bodies[i] = Some(fs::read_all(fd, n).unwrap());
                    }
                    files.finish(
                        &key,
                        Ok(crate::handler::filecache::Found::File(probe)),
                        bodies,
                        h.now,
                    );
                }
            }
        }
        done.push(key);
    }
    done
}

#[test]
fn async_open_parks_requests_until_their_job_is_done() {
    let mut h = Harness::new("park", Config::default());
    h.svc.files().set_async_open(true);
    // A miss parks; the pipelined request behind it waits too, in order.
    let mut two = get("/a.txt");
    two.extend(get("/index.html"));
    h.feed(&two);
    assert!(
        h.s.next_output().is_none(),
        "answered before its file was opened"
    );
    assert_eq!(h.s.parked(), Some(&b"\0\0/a.txt"[..]));
    assert!(!h.s.should_close());
    // EOF while parked: the request is still answered.
    h.s.feed_eof(h.now);
    assert!(!h.s.should_close());
    assert_eq!(run_open_jobs(&mut h), vec![Box::from(&b"\0\0/a.txt"[..])]);
    h.s.resume(&mut h.svc, h.now);
    // /index.html is not cached yet: the session parks again on it.
    assert_eq!(h.s.parked(), Some(&b"\0\0/index.html"[..]));
    let first = String::from_utf8(h.drain_by(usize::MAX)).unwrap();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.ends_with("hello world\n"), "{first}");
    run_open_jobs(&mut h);
    h.s.resume(&mut h.svc, h.now);
    let second = String::from_utf8(h.drain_by(usize::MAX)).unwrap();
    assert!(second.ends_with("<h1>home</h1>\n"), "{second}");
    assert!(h.s.should_close());
    // Now cached: a new session is answered at once, without parking.
    h.s = Session::new("127.0.0.1:5556".parse().unwrap(), h.now);
    let r = h.roundtrip(&get("/a.txt"));
    assert!(r.ends_with("hello world\n"), "{r}");
}

#[test]
fn async_open_errors_and_redirects_reach_every_waiter() {
    let mut h = Harness::new("park-err", Config::default());
    h.dir.write("sub/x.txt", b"x");
    h.svc.files().set_async_open(true);
    let mut a = Session::new("127.0.0.1:1".parse().unwrap(), h.now);
    let mut b = Session::new("127.0.0.1:2".parse().unwrap(), h.now);
    a.feed(&mut h.svc, &get("/missing.txt"), h.now);
    b.feed(&mut h.svc, &get("/missing.txt"), h.now);
    // One job for both.
    assert_eq!(run_open_jobs(&mut h).len(), 1);
    for s in [&mut a, &mut b] {
        s.resume(&mut h.svc, h.now);
        let Some(Output::Bytes(out)) = s.next_output() else {
            panic!("no answer after the job")
        };
        assert!(
            out.starts_with(b"HTTP/1.1 404 "),
            "{}",
            String::from_utf8_lossy(out)
        );
    }
    h.svc.files().forget_outcome(b"/missing.txt");
    // A directory without its slash: 301, through the same path.
    let mut c = Session::new("127.0.0.1:3".parse().unwrap(), h.now);
    c.feed(&mut h.svc, &get("/sub"), h.now);
    run_open_jobs(&mut h);
    c.resume(&mut h.svc, h.now);
    let Some(Output::Bytes(out)) = c.next_output() else {
        panic!("no redirect")
    };
    assert!(
        out.starts_with(b"HTTP/1.1 301 "),
        "{}",
        String::from_utf8_lossy(out)
    );
    // Refused before opening anything (an encoded separator): answered without a job.
    let mut d = Session::new("127.0.0.1:4".parse().unwrap(), h.now);
    d.feed(&mut h.svc, &get("/a%2Fb"), h.now);
    run_open_jobs(&mut h);
    d.resume(&mut h.svc, h.now);
    let Some(Output::Bytes(out)) = d.next_output() else {
        panic!("no answer to a refused path")
    };
    assert!(
        out.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(out)
    );
}

/// A request with a body parks like any other once its body is read: on resume its head is
/// parsed again (the body is gone from the input by then, and not expected a second time), it
/// is answered, and the requests pipelined behind it are framed correctly. Content-Length,
/// chunked, and `Expect: 100-continue` (answered without its body, then close).
#[test]
fn async_open_parks_requests_with_bodies() {
    let cl =
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1".to_vec();
    let chunked =
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\n\r\n"
            .to_vec();
    for (name, first, want) in [
        ("content-length", cl, "HTTP/1.1 200 OK"),
        ("chunked", chunked, "HTTP/1.1 200 OK"),
    ] {
        let mut h = Harness::new("park-body", Config::default());
        h.svc.files().set_async_open(true);
        // The body arrives in two pieces, the second with the next request behind it.
        let split = first.len() - 5;
        h.feed(&first[..split]);
        assert!(
            h.s.parked().is_none(),
            "{name}: parked before its body was read"
        );
        let mut rest = first[split..].to_vec();
        rest.extend(get("/index.html"));
        h.feed(&rest);
        assert_eq!(h.s.parked(), Some(&b"\0\0/a.txt"[..]), "{name}");
        assert!(h.s.next_output().is_none(), "{name}: answered while parked");
        run_open_jobs(&mut h);
        h.s.resume(&mut h.svc, h.now);
        // /index.html is not cached yet: parks on it in turn.
        assert_eq!(h.s.parked(), Some(&b"\0\0/index.html"[..]), "{name}");
        let out = String::from_utf8(h.drain_by(usize::MAX)).unwrap();
        assert!(out.starts_with(want), "{name}: {out}");
        assert!(out.ends_with("hello world\n"), "{name}: {out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{name}: {out}");
        run_open_jobs(&mut h);
        h.s.resume(&mut h.svc, h.now);
        let out = String::from_utf8(h.drain_by(usize::MAX)).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{name}: {out}");
        assert!(out.ends_with("<h1>home</h1>\n"), "{name}: {out}");
        assert!(!h.s.should_close(), "{name}");
    }

    // Expect: 100-continue: the final status goes out without the body, and the connection
    // closes after it, whether or not the body came while the request was parked.
    let mut h = Harness::new("park-expect", Config::default());
    h.svc.files().set_async_open(true);
    h.feed(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(h.s.parked(), Some(&b"\0\0/a.txt"[..]));
    h.feed(b"hello");
    run_open_jobs(&mut h);
    h.s.resume(&mut h.svc, h.now);
    let out = String::from_utf8(h.drain_by(usize::MAX)).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("hello world\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert!(h.s.should_close());
}

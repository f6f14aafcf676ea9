//! Fuzz target: the request-head parser (`ringd::proto::parse::parse`) and the body reader
//! (`ringd::proto::framing::BodyReader`: Content-Length, chunked, extensions, trailers,
//! limits).
//!
//! Input: byte 0 picks the limits (bit 0: tiny limits) and the mode (bit 1: the rest is a
//! chunked body fed straight to a `BodyReader`); byte 1 seeds the split points; the rest is
//! the request (or body). Asserts, beyond "no panic":
//! - a complete head ends with CRLF CRLF, is self-contained (parsing just `head_len` bytes
//!   gives the same request) and every strict prefix of it is `Partial` (a stream parser must
//!   never refuse what later turns out to be valid);
//! - target, version, Host and framing satisfy what the parser promises (origin-form path,
//!   HTTP/1.1 has one Host, `Length(n)` has n > 0);
//! - a body fed in arbitrary pieces gives the same result (bytes used, done, error) as fed
//!   whole; a Content-Length body uses exactly min(n, available) bytes; a finished chunked
//!   body ends with CRLF; the declared sizes never exceed `max_body`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringd::config::Limits;
use ringd::proto::framing::{BodyReader, Framing};
use ringd::proto::parse::{parse, Method, Parsed};
use ringd::proto::ProtoError;
use ringd_fuzz::{split_control, tiny_limits, Rng};

fuzz_target!(|data: &[u8]| {
    let (ctl, input) = split_control::<2>(data);
    let limits = if ctl[0] & 1 == 1 {
        tiny_limits()
    } else {
        Limits::default()
    };
    let mut rng = Rng::new(u64::from(ctl[1]));
    if ctl[0] & 2 == 2 {
        check_body(Framing::Chunked, input, &limits, &mut rng);
        return;
    }
    let req = match parse(input, &limits) {
        Ok(Parsed::Complete(r)) => r,
        Ok(Parsed::Partial) => {
            assert!(
                input.len() <= limits.max_request_line + limits.max_header_bytes + 4,
                "Partial past every limit"
            );
            return;
        }
        Err(_) => return,
    };
    let n = req.head_len;
    assert!(n <= input.len());
    assert!(
        input[..n].ends_with(b"\r\n\r\n"),
        "head not ended by CRLF CRLF"
    );
    assert!(req.minor <= 1);
    assert!(req.path_query == "*" || req.path_query.starts_with('/'));
    assert!(!req.path_query.contains('#'));
    if req.minor == 1 {
        assert!(req.fields.host.is_some(), "HTTP/1.1 without Host accepted");
    } else {
        assert!(
            req.framing != Framing::Chunked,
            "chunked accepted in HTTP/1.0"
        );
    }
    if matches!(req.method, Method::Get | Method::Head) {
        assert!(req.path_query.starts_with('/'));
    }
    if let Framing::Length(len) = req.framing {
        assert!(len > 0);
    }

    // Self-contained: the head alone parses to the same request.
    match parse(&input[..n], &limits) {
        Ok(Parsed::Complete(again)) => {
            assert_eq!(again.head_len, n);
            assert_eq!(again.framing, req.framing);
            assert_eq!(again.target, req.target);
        }
        other => panic!("head alone gives {other:?}"),
    }
    // Every strict prefix is Partial: probe all short ones, and a sample of long ones.
    let probes: Vec<usize> = if n <= 300 {
        (0..n).collect()
    } else {
        (0..64).map(|_| rng.below(n as u64) as usize).collect()
    };
    for k in probes {
        match parse(&input[..k], &limits) {
            Ok(Parsed::Partial) => {}
            other => panic!("prefix {k} of a complete {n}-byte head gives {other:?}"),
        }
    }

    if req.framing != Framing::None {
        check_body(req.framing, &input[n..], &limits, &mut rng);
    }
});

/// Feeds `body` whole and in random pieces; both must agree.
fn check_body(framing: Framing, body: &[u8], limits: &Limits, rng: &mut Rng) {
    let max_trailer = limits.max_header_bytes;
    let whole = BodyReader::new(framing, limits.max_body, max_trailer).map(|mut r| {
        let res = r.feed(body);
        (res, r.done())
    });
    let Ok((whole_res, whole_done)) = whole else {
        assert!(matches!(whole, Err(ProtoError::BodyTooLarge)));
        assert!(matches!(framing, Framing::Length(n) if n > limits.max_body));
        return;
    };
    if let Ok(used) = whole_res {
        match framing {
            Framing::Length(n) => {
                assert_eq!(used as u64, n.min(body.len() as u64));
                assert_eq!(whole_done, used as u64 == n);
            }
            Framing::Chunked if whole_done => {
                assert!(
                    body[..used].ends_with(b"\r\n"),
                    "chunked body not ended by CRLF"
                );
                assert!(used >= 5, "a chunked body is at least `0\\r\\n\\r\\n`");
            }
            _ => {}
        }
        if !whole_done {
            assert_eq!(used, body.len(), "stopped early without finishing");
        }
    }

    // The same body in pieces: feed what the reader has not used, as a driver does.
    let mut r = BodyReader::new(framing, limits.max_body, max_trailer).expect("built above");
    let mut off = 0;
    let mut split_res = Ok(());
    while off < body.len() && !r.done() {
        let end = (off + rng.piece(body.len() - off)).min(body.len());
        match r.feed(&body[off..end]) {
            Ok(used) => {
                assert!(used <= end - off);
                off += used;
                if off < end {
                    assert!(r.done(), "stopped inside a piece without finishing");
                }
            }
            Err(e) => {
                split_res = Err(e);
                break;
            }
        }
    }
    match (whole_res, split_res) {
        (Ok(used), Ok(())) => {
            assert_eq!(used, off, "bytes used differ whole vs split");
            assert_eq!(whole_done, r.done());
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "errors differ whole vs split"),
        (a, b) => panic!("whole feed {a:?} vs split feed {b:?}"),
    }
}

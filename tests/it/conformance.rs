//! ringd's own HTTP/1.1 conformance cases, written from RFC 9110 and RFC 9112: message framing,
//! request-smuggling vectors, header and request-target syntax, limits and pipelining.
//!
//! Unlike the llhttp corpus replay (which needs `../shared/corpus/llhttp`), these always run,
//! so a user's `cargo test` on a fresh clone still drives the parser's reject paths. Each case is
//! one write of raw bytes on a fresh connection, the statuses its responses must have, in order,
//! and what must follow: the connection stays usable (`Open`: a follow-up request gets the file
//! back, which proves the server found the end of every message exactly where the RFC puts it)
//! or it is closed with nothing more answered (`Closed`). Where the RFC lets a server choose, the
//! comment says which choice ringd made and why.

use std::time::Duration;

use crate::harness::{Server, ServerBuilder, TempDir};
use crate::http::Client;

/// The file every case may fetch, and its body.
const FILE: &str = "/a.txt";
const BODY: &[u8] = b"hello\n";

/// What must follow the expected responses.
#[derive(Clone, Copy, Debug)]
enum After {
    /// A follow-up `GET /a.txt` on the same connection is answered 200 with the file.
    Open,
    /// The server closes the connection; nothing more arrives.
    Closed,
}

/// One expected response: the statuses allowed, and whether it answers a HEAD.
type Ans = (&'static [u16], bool);

const OK: Ans = (&[200], false);
const HEAD_OK: Ans = (&[200], true);
const NOT_ALLOWED: Ans = (&[405], false);
const BAD: Ans = (&[400], false);

struct Case {
    name: &'static str,
    /// The RFC clause the expectation comes from.
    rfc: &'static str,
    send: &'static [u8],
    answers: &'static [Ans],
    after: After,
}

const fn case(
    name: &'static str,
    rfc: &'static str,
    send: &'static [u8],
    answers: &'static [Ans],
    after: After,
) -> Case {
    Case {
        name,
        rfc,
        send,
        answers,
        after,
    }
}

use After::{Closed, Open};

/// Message framing (RFC 9112 §6): where a body ends decides where the next request starts.
const FRAMING: &[Case] = &[
    case("Content-Length body, then a pipelined GET", "RFC 9112 §6.2",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[NOT_ALLOWED, OK], Open),
    case("Content-Length: 0", "RFC 9112 §6.2",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("a GET with a body is framed by its Content-Length", "RFC 9110 §9.3.1, RFC 9112 §6.3",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        &[OK], Open),
    case("chunked body with extensions and a trailer", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1;a=\"q\"\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("chunk sizes in hex, upper and lower case", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\nb\r\n0123456789a\r\n0\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("Transfer-Encoding is case-insensitive", "RFC 9112 §7",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("a tab is optional whitespace around a field value", "RFC 9110 §5.6.3",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\t\r\n\r\n0\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("two different Content-Lengths", "RFC 9112 §6.3 (4)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        &[BAD], Closed),
    case("Content-Length with a list of different values", "RFC 9112 §6.3 (4)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
        &[BAD], Closed),
    case("Content-Length and Transfer-Encoding (CL.TE)", "RFC 9112 §6.1, §6.3 (3)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
        &[BAD], Closed),
    case("Transfer-Encoding and Content-Length (TE.CL)", "RFC 9112 §6.1, §6.3 (3)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        &[BAD], Closed),
    case("negative Content-Length", "RFC 9110 §8.6",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        &[BAD], Closed),
    case("Content-Length with a plus sign", "RFC 9110 §8.6",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        &[BAD], Closed),
    case("Content-Length with a space inside", "RFC 9110 §8.6",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        &[BAD], Closed),
    case("Content-Length in hex", "RFC 9110 §8.6",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        &[BAD], Closed),
    case("Content-Length that overflows 64 bits", "RFC 9112 §6.3 (5)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        &[(&[400, 413], false)], Closed),
    case("chunked applied twice", "RFC 9112 §6.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        &[BAD], Closed),
    case("chunked not the final coding", "RFC 9112 §6.3 (4)",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        &[BAD], Closed),
    // RFC 9112 §6.1 lets a server answer an unknown coding with 501; ringd says 400 or 501.
    case("an unknown transfer coding", "RFC 9112 §6.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        &[(&[400, 501], false)], Closed),
    // Found by scripts/differential.py: ringd took `gzip, chunked` as chunked and handed the
    // still-gzipped body on as if it had no coding (nginx, h2o and h11 refuse it). ringd decodes
    // no coding but chunked, so it refuses any other (RFC 9112 §6.1 suggests 501).
    case("a transfer coding before chunked that ringd does not decode", "RFC 9112 §6.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &[(&[400, 501], false)], Closed),
    case("identity (no longer a transfer coding) before chunked", "RFC 9112 §6.1, §7",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &[(&[400, 501], false)], Closed),
    case("Transfer-Encoding split over two fields", "RFC 9112 §6.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        &[(&[400, 501], false)], Closed),
    case("Transfer-Encoding on an HTTP/1.0 request", "RFC 9112 §6.1",
        b"POST /a.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &[BAD], Closed),
    case("chunk size that is not hex", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        &[BAD], Closed),
    case("chunk size with a 0x prefix", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        &[BAD], Closed),
    case("chunk size that overflows 64 bits", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        &[(&[400, 413], false)], Closed),
    case("chunk data not followed by CRLF", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelloGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[BAD], Closed),
    // Found by scripts/differential.py: ringd skipped trailer lines without checking their
    // syntax (h11 and HAProxy refuse these). A trailer field is a field line like any other.
    case("a trailer line without a colon", "RFC 9112 §7.1.2, §5",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[BAD], Closed),
    case("whitespace before the colon of a trailer field", "RFC 9112 §7.1.2, §5.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length : 5\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[BAD], Closed),
    case("a body over the limit", "RFC 9110 §15.5.14",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n",
        &[(&[413], false)], Closed),
];

/// Header-section syntax (RFC 9110 §5, RFC 9112 §5).
const HEADERS: &[Case] = &[
    case(
        "HTTP/1.1 without Host",
        "RFC 9112 §3.2",
        b"GET /a.txt HTTP/1.1\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "two Host fields",
        "RFC 9112 §3.2",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "HTTP/1.0 without Host is fine",
        "RFC 9112 §3.2",
        b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        &[OK],
        Open,
    ),
    case(
        "whitespace before the colon",
        "RFC 9112 §5.1",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "obsolete line folding",
        "RFC 9112 §5.2",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "a field line without a colon",
        "RFC 9112 §5",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "an empty field name",
        "RFC 9110 §5.1",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n: value\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "a separator in a field name",
        "RFC 9110 §5.1",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "NUL in a field value",
        "RFC 9110 §5.5",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "a bare CR in a field value",
        "RFC 9110 §5.5",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "a whitespace-only line before the first field",
        "RFC 9112 §2.2",
        b"GET /a.txt HTTP/1.1\r\n \r\nHost: a\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "a Host that is not a valid authority",
        "RFC 9110 §7.2",
        b"GET /a.txt HTTP/1.1\r\nHost: a b\r\n\r\n",
        &[BAD],
        Closed,
    ),
    case(
        "field values keep working with obs-text and trailing spaces",
        "RFC 9110 §5.5",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9   \r\n\r\n",
        &[OK],
        Open,
    ),
    case(
        "field names are case-insensitive",
        "RFC 9110 §5.1",
        b"GET /a.txt HTTP/1.1\r\nhOsT: a\r\ncontent-LENGTH: 2\r\n\r\nhi",
        &[OK],
        Open,
    ),
];

/// Request line and target syntax (RFC 9112 §3).
const TARGETS: &[Case] = &[
    case("absolute-form target", "RFC 9112 §3.2.2",
        b"GET http://a/a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[OK], Open),
    // Found by scripts/differential.py: ringd took `http://u@a/` as the authority `a`.
    case("userinfo in an absolute-form target", "RFC 9110 §4.2.4",
        b"GET http://u@a/a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("asterisk-form with a method other than OPTIONS", "RFC 9112 §3.2.4",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("a space inside the target", "RFC 9112 §3.2",
        b"GET /a b.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    // A fragment is not part of a request-target (RFC 9112 §3.2); ringd drops it, as nginx
    // does, rather than refusing the request, so nothing after `#` is ever routed or forwarded.
    case("a fragment in the target is dropped", "RFC 9112 §3.2, RFC 3986 §3.5",
        b"GET /a.txt#../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", &[OK], Open),
    case("a control character in the target", "RFC 9112 §3.2",
        b"GET /a\x01.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("a non-ASCII byte in the target", "RFC 9112 §3.2, RFC 3986 §2",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("a target that is not origin-form", "RFC 9112 §3.2",
        b"GET a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("the version is case-sensitive", "RFC 9112 §2.3",
        b"GET /a.txt http/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("a major version other than 1", "RFC 9110 §15.6.6",
        b"GET /a.txt HTTP/2.0\r\nHost: a\r\n\r\n", &[(&[505], false)], Closed),
    case("no version (HTTP/0.9)", "RFC 9112 §2.3",
        b"GET /a.txt\r\n\r\n", &[(&[400, 505], false)], Closed),
    case("an empty line before the request line is ignored", "RFC 9112 §2.2",
        b"\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[OK], Open),
    case("an unknown method token", "RFC 9110 §9.1, §15.6.2",
        b"BREW /a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[(&[405, 501], false)], Open),
    case("a method that is not a token", "RFC 9110 §9.1",
        b"G@T /a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[BAD], Closed),
    case("methods are case-sensitive: get is not GET", "RFC 9110 §9.1",
        b"get /a.txt HTTP/1.1\r\nHost: a\r\n\r\n", &[(&[405, 501], false)], Open),
    case("a request line over the limit", "RFC 9112 §3",
        b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
        &[(&[414], false)], Closed),
];

/// Pipelining and persistence (RFC 9112 §9).
const PIPELINING: &[Case] = &[
    case("three requests in one write, answered in order", "RFC 9112 §9.3.2",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[OK, HEAD_OK, OK], Open),
    case("Connection: close ends the pipeline", "RFC 9112 §9.6",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[OK, OK], Closed),
    case("HTTP/1.0 without keep-alive closes after one response", "RFC 9112 §9.3",
        b"GET /a.txt HTTP/1.0\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[OK], Closed),
    case("an error in the middle ends the pipeline", "RFC 9112 §9.3.2",
        b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[OK, BAD], Closed),
    case("a chunked body hiding a request is one request", "RFC 9112 §7.1",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n",
        &[NOT_ALLOWED], Open),
    case("a Content-Length body hiding a request is one request", "RFC 9112 §6.2",
        b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        &[NOT_ALLOWED], Open),
];

/// Runs `c` on a fresh connection; Err(why) on any difference.
fn check(srv: &Server, c: &Case) -> Result<(), String> {
    let mut cl = Client::new(srv.connect());
    cl.set_timeout(Duration::from_secs(5));
    let _ = cl.try_send(c.send);
    for (i, (statuses, head)) in c.answers.iter().enumerate() {
        let r = cl
            .read_response(*head)
            .map_err(|e| format!("response {} of {}: {e}", i + 1, c.answers.len()))?;
        if !statuses.contains(&r.status) {
            return Err(format!(
                "response {}: status {} (want one of {statuses:?})\n{}",
                i + 1,
                r.status,
                r.head
            ));
        }
        if r.status == 200 && !*head && r.body != BODY {
            return Err(format!("response {}: wrong body {:?}", i + 1, r.body_str()));
        }
    }
    match c.after {
        After::Closed => match cl.wait_close(Duration::from_secs(3)) {
            Ok(rest) if rest.is_empty() => Ok(()),
            Ok(rest) => Err(format!(
                "answered more before closing: {:?}",
                String::from_utf8_lossy(&rest)
            )),
            Err(rest) => Err(format!(
                "connection left open (received {:?})",
                String::from_utf8_lossy(&rest)
            )),
        },
        After::Open => {
            cl.try_send(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                .map_err(|e| format!("follow-up request: {e}"))?;
            let r = cl
                .read_response(false)
                .map_err(|e| format!("no answer to the follow-up GET: {e}"))?;
            if r.status != 200 || r.body != BODY {
                return Err(format!(
                    "follow-up GET got {} {:?}: the server lost the message boundary",
                    r.status,
                    r.body_str()
                ));
            }
            Ok(())
        }
    }
}

/// Every case of every table, on one server per backend.
pub fn conformance(backend: &str) {
    let root = TempDir::new("conformance");
    root.write(&FILE[1..], BODY);
    let srv = ServerBuilder::new(backend, root.path())
        .args(&["--max-request-line", "128", "--max-body", "64K"])
        .start();
    let mut failures = Vec::new();
    let mut n = 0;
    for (table, cases) in [
        ("framing", FRAMING),
        ("headers", HEADERS),
        ("targets", TARGETS),
        ("pipelining", PIPELINING),
    ] {
        for c in cases {
            n += 1;
            if let Err(why) = check(&srv, c) {
                failures.push(format!(
                    "[{table}] {} ({}): {why}\n    sent: {}",
                    c.name,
                    c.rfc,
                    c.send.escape_ascii()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "backend {backend}: {} of {n} conformance cases failed:\n\n{}\n\n{}",
        failures.len(),
        failures.join("\n\n"),
        srv.diagnostics()
    );
}

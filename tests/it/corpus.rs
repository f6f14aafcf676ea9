//! Replay of the llhttp request corpus (`shared/corpus/llhttp/*.md`) against the real server.
//!
//! Every case whose meta `type` is exactly `"request"` is decoded as the corpus README says and
//! sent in one write on its own connection. What llhttp reported (the ```log block) tells us the
//! requests in it; the server's answers are checked against them:
//!
//! * a request llhttp completed is answered, in order, and not rejected (no 400, no 5xx other
//!   than 501), unless one of the stricter rules below applies;
//! * invalid input (the log ends in `error code=`) gets a 4xx/5xx or a close, the connection
//!   is closed, and nothing that followed it is answered;
//! * after `Connection: close`, HTTP/1.0 without keep-alive, or a 400, nothing more is answered.
//!
//! # Where issue 2 (and RFC 9112) is stricter than llhttp's acceptance
//! These classes of llhttp-valid requests are expected to be rejected (or may be):
//! 1. HTTP/1.1 without a Host field → must be 400 (RFC 9112 §3.2: "A server MUST respond with a
//!    400 (Bad Request) status code to any HTTP/1.1 request message that lacks a Host header
//!    field"; issue 2: "missing Host on HTTP/1.1 → 400"). Most llhttp cases have no Host.
//! 2. A version that is not `HTTP/x.y` (RTSP/1.0, ICE/1.0) or no version at all (HTTP/0.9)
//!    → must be 400 or 505, or a close (RFC 9112 §2.3 HTTP-version grammar; issue 2:
//!    "unsupported version → 505").
//! 3. `*` as the target of a method other than OPTIONS → may be 400 (RFC 9112 §3.2.4).
//! 4. A target with characters RFC 3986 does not allow (`"`, `|`, `#`, non-ASCII …) → may be
//!    400 (RFC 9112 §3.2; issue 2: "invalid request-target → 400").
//! 5. CONNECT (authority-form, meaningless to a static server) → may be 400, 405 or 501.
//! 6. A transfer coding other than `chunked` (e.g. `deflate, chunked`) → may be 400 or 501
//!    (RFC 9112 §6.1: unknown coding SHOULD get 501; issue 2: "a Transfer-Encoding other than
//!    a final chunked → 400").
//!
//! Invalid inputs may also get 405 where llhttp's complaint is only that it does not know the
//! method (`ANNOUNCE … HTTP/1.0`): RFC 9110 §9.1 makes any token a method, and issue 2 answers
//! other methods with 405. When llhttp's error lies in the body (after the header section was
//! complete), the server may already have answered the request's head with any 4xx/5xx
//! (RFC 9110 §15: a response may come before the whole request) — it must still close and
//! answer nothing after. "Pause on CONNECT/Upgrade" is not an error: ringd does not upgrade
//! (RFC 9110 §7.8 lets it ignore Upgrade), so what follows is parsed as HTTP; at most one error
//! response to those bytes is allowed. Where llhttp rejects inside a header section that the
//! input never ends (a duplicate Content-Length and no blank line), a server may wait for the
//! end of the section: after silence the test sends the missing CRLF, then expects the rejection.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::harness::{ServerBuilder, Skip, TempDir};
use crate::http::{Client, ReadError, Response};

/// Threads replaying cases at once.
const PARALLEL: usize = 8;
/// Silence after which we stop waiting for more responses.
const QUIET: Duration = Duration::from_secs(2);

/// One corpus case.
struct Case {
    file: String,
    title: String,
    skip_body: bool,
    input: Vec<u8>,
    log: Vec<String>,
}

/// Find the corpus: `RINGD_CORPUS_DIR`, `shared/` beside the checkout (CI), inside it, or beside
/// a worktree folder. Err(why) when it is nowhere: a user's fresh clone has no `../shared`.
fn corpus_dir() -> Result<PathBuf, String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("RINGD_CORPUS_DIR") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(manifest.join("../shared/corpus/llhttp"));
    candidates.push(manifest.join("shared/corpus/llhttp"));
    candidates.push(manifest.join("../../shared/corpus/llhttp"));
    for c in candidates {
        if c.join("README.md").is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "llhttp corpus not found (tried {}; set RINGD_CORPUS_DIR to replay it)",
        tried.join(", ")
    ))
}

/// The corpus cases, or a skip: with no corpus the replay is reported as skipped, with the
/// reason, on stderr (never a silent pass). `RINGD_REQUIRE_CORPUS=1` (CI's main run) turns a
/// missing corpus into a failure instead.
fn cases_or_skip() -> Option<Vec<Case>> {
    match corpus_dir() {
        Ok(dir) => Some(load_cases(&dir)),
        Err(why) if std::env::var_os("RINGD_REQUIRE_CORPUS").is_some_and(|v| v != "0") => {
            panic!("RINGD_REQUIRE_CORPUS is set but {why}")
        }
        Err(why) => {
            std::panic::panic_any(Skip(why));
        }
    }
}

/// Parse every `*.md` file into cases of type exactly "request".
fn load_cases(dir: &Path) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("README.md"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read corpus file");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let lines: Vec<&str> = text.split('\n').collect();
        let mut title = String::new();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if line.starts_with('#') {
                title = line.trim_start_matches('#').trim().to_string();
            }
            if let Some(meta) = line
                .strip_prefix("<!-- meta=")
                .and_then(|m| m.strip_suffix(" -->"))
            {
                let (http, next) = fenced_block(&lines, i + 1, "```http");
                let (log, next) = fenced_block(&lines, next, "```log");
                i = next;
                if meta_type(meta).as_deref() != Some("request") {
                    continue;
                }
                cases.push(Case {
                    file: file.clone(),
                    title: title.clone(),
                    skip_body: meta.replace(' ', "").contains("\"skipBody\":true"),
                    input: decode(&http),
                    log: log.into_iter().map(str::to_string).collect(),
                });
            }
            i += 1;
        }
    }
    assert!(
        cases.len() > 50,
        "only {} request cases parsed",
        cases.len()
    );
    cases
}

/// The `type` of a meta object such as `{"type": "request", "noScan": true}`.
fn meta_type(meta: &str) -> Option<String> {
    let rest = &meta[meta.find("\"type\"")? + 6..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The lines of the next fenced block opened by `fence`, and the index after its end.
fn fenced_block<'a>(lines: &[&'a str], from: usize, fence: &str) -> (Vec<&'a str>, usize) {
    let start = (from..lines.len())
        .find(|&j| lines[j].starts_with(fence))
        .unwrap_or_else(|| panic!("no {fence} block after line {from}"));
    let end = (start + 1..lines.len())
        .find(|&j| lines[j] == "```")
        .expect("unterminated block");
    (lines[start + 1..end].to_vec(), end + 1)
}

/// Decode an http block per the corpus README: drop one trailing newline, delete
/// backslash+linebreak, linebreaks → CRLF, then `\r \n \t \f \xHH \OOO` escapes.
fn decode(block: &[&str]) -> Vec<u8> {
    // The block's text is every line followed by "\n"; dropping one trailing newline leaves
    // the lines joined by "\n".
    let text = block.join("\n").replace("\\\n", "").replace('\n', "\r\n");
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        let simple = match c {
            b'r' => Some(b'\r'),
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'f' => Some(0x0c),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            i += 2;
        } else if c == b'x'
            && i + 3 < b.len()
            && b[i + 2].is_ascii_hexdigit()
            && b[i + 3].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else if (b'0'..=b'7').contains(&c) {
            let mut j = i + 1;
            let mut v: u32 = 0;
            while j < b.len() && j < i + 4 && (b'0'..=b'7').contains(&b[j]) {
                v = v * 8 + u32::from(b[j] - b'0');
                j += 1;
            }
            out.push(v as u8);
            i = j;
        } else {
            out.push(b'\\');
            i += 1;
        }
    }
    out
}

/// One request as llhttp's log describes it.
#[derive(Default, Debug)]
struct Msg {
    method: String,
    url: String,
    protocol: String,
    /// (major, minor) from `headers complete … v=1/1`.
    version: Option<(u8, u8)>,
    headers: Vec<(String, String)>,
    headers_complete: bool,
    complete: bool,
}

impl Msg {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    fn persists(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version != Some((1, 0)) || self.has_token("connection", "keep-alive")
    }

    fn describe(&self) -> String {
        format!("{} {} {}", self.method, self.url, self.protocol)
    }
}

/// Messages, and the error llhttp ended with (code, reason).
fn parse_log(log: &[String]) -> (Vec<Msg>, Option<(u32, String)>) {
    let mut msgs: Vec<Msg> = Vec::new();
    let mut field = String::new();
    let mut error = None;
    for line in log {
        let body = line.split_once(' ').map(|x| x.1).unwrap_or("");
        if body == "message begin" {
            msgs.push(Msg::default());
            continue;
        }
        let Some(m) = msgs.last_mut() else { continue };
        if let Some(rest) = body.strip_prefix("error code=") {
            let code = rest.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
            let reason = rest.split_once("reason=").map(|x| x.1).unwrap_or("");
            error = Some((code, reason.trim_matches('"').to_string()));
        } else if body == "message complete" {
            m.complete = true;
        } else if let Some(rest) = body.strip_prefix("headers complete ") {
            m.headers_complete = true;
            if let Some(v) = rest.split(' ').find_map(|t| t.strip_prefix("v=")) {
                let (a, b) = v.split_once('/').unwrap_or(("0", "0"));
                m.version = Some((a.parse().unwrap_or(0), b.parse().unwrap_or(0)));
            }
        } else if let Some(i) = body.find(" span[") {
            let rest = &body[i + 6..];
            let (kind, value) = rest.split_once("]=").unwrap_or(("", ""));
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            match kind {
                "method" => m.method.push_str(value),
                "url" => m.url.push_str(value),
                "protocol" => m.protocol.push_str(value),
                "header_field" => field.push_str(value),
                "header_value" => {
                    if let Some(last) = m.headers.last_mut() {
                        last.1.push_str(value);
                    }
                }
                _ => {}
            }
        } else if body == "header_field complete" {
            // The value spans that follow (none for an empty value) append to this entry.
            m.headers.push((std::mem::take(&mut field), String::new()));
        }
    }
    (msgs, error)
}

/// What the server must do with one request llhttp completed.
enum Expect {
    Accept,
    /// Must answer with one of these (or close without answering).
    MustReject(&'static [u16], &'static str),
    /// May answer with one of these, otherwise as Accept.
    MayReject(&'static [u16], &'static str),
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Accept => write!(f, "accepted: not 400, no 5xx but 501"),
            Expect::MustReject(set, why) => write!(f, "one of {set:?} or a close, since {why}"),
            Expect::MayReject(set, why) => write!(f, "accepted, or one of {set:?} since {why}"),
        }
    }
}

/// Apply the stricter rules listed in the module doc.
fn classify(m: &Msg) -> Expect {
    if m.version == Some((0, 9)) || m.protocol.is_empty() {
        return Expect::MustReject(&[400, 505], "no HTTP version (HTTP/0.9): RFC 9112 §2.3");
    }
    if m.protocol != "HTTP" {
        return Expect::MustReject(&[400, 505], "not an HTTP-version: RFC 9112 §2.3");
    }
    let hosts = m.header_values("host").len();
    if m.version == Some((1, 1)) && hosts == 0 {
        return Expect::MustReject(&[400], "HTTP/1.1 without Host: RFC 9112 §3.2");
    }
    if hosts > 1 {
        return Expect::MustReject(&[400], "several Host fields: RFC 9112 §3.2");
    }
    if m.method == "CONNECT" {
        return Expect::MayReject(&[400, 405, 501], "CONNECT to a static server");
    }
    if m.url == "*" && m.method != "OPTIONS" {
        return Expect::MayReject(&[400], "asterisk-form without OPTIONS: RFC 9112 §3.2.4");
    }
    let bad_char = |c: char| !c.is_ascii() || c.is_ascii_control() || "\"|#{}\\^` <>".contains(c);
    if m.url.chars().any(bad_char) {
        return Expect::MayReject(&[400], "target outside RFC 3986: RFC 9112 §3.2");
    }
    let codings: Vec<String> = m
        .header_values("transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if codings.iter().any(|c| c != "chunked") {
        return Expect::MayReject(&[400, 501], "transfer coding other than chunked");
    }
    Expect::Accept
}

/// A response a valid request may get: anything but 400 and 5xx other than 501.
fn accepted(status: u16) -> bool {
    status != 400 && !(status >= 500 && status != 501)
}

/// Statuses after which the server must close (issue 2: after an error, close).
fn closing_status(status: u16) -> bool {
    matches!(status, 400 | 413 | 414 | 431 | 505)
}

/// How the reading of responses ended.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Quiet,
    Broken(String),
}

/// Send one case on a fresh connection; collect the responses until close or silence.
///
/// llhttp rejects some inputs in the middle of a header section that the input never ends
/// (e.g. a duplicate Content-Length with no blank line after it). A server may wait for the
/// end of the section before judging it, so when such invalid input meets silence the test
/// ends the section with one more CRLF and then expects the rejection.
fn exchange(port: u16, case: &Case, msgs: &[Msg], invalid: bool) -> (Vec<Response>, End) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = Client::new(stream);
    c.set_timeout(QUIET);
    if let Err(e) = c.try_send(&case.input) {
        return (Vec::new(), End::Broken(format!("write failed: {e}")));
    }
    let mut out = Vec::new();
    let mut end = collect(&mut c, msgs, &mut out);
    let unterminated = crate::http::find(&case.input, b"\r\n\r\n").is_none();
    if invalid && unterminated && end == End::Quiet && c.pending().is_empty() {
        if let Err(e) = c.try_send(b"\r\n") {
            return (
                out,
                End::Broken(format!("write of the final CRLF failed: {e}")),
            );
        }
        end = collect(&mut c, msgs, &mut out);
    }
    (out, end)
}

/// Read responses into `out` until close, silence or garbage.
fn collect(c: &mut Client, msgs: &[Msg], out: &mut Vec<Response>) -> End {
    loop {
        let head = msgs.get(out.len()).is_some_and(|m| m.method == "HEAD");
        match c.read_response(head) {
            Ok(r) => out.push(r),
            Err(ReadError::Closed) => return End::Eof,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return End::Eof
            }
            Err(ReadError::Timeout { partial: 0 }) => return End::Quiet,
            Err(e) => {
                let after = match out.last() {
                    Some(r)
                        if head || msgs.get(out.len() - 1).is_some_and(|m| m.method == "HEAD") =>
                    {
                        format!(
                            " (after a {} response to HEAD: did it carry a body?)",
                            r.status
                        )
                    }
                    _ => String::new(),
                };
                return End::Broken(format!("{e}{after}"));
            }
        }
    }
}

/// Check one case; Err(reason) on failure.
fn check_case(port: u16, case: &Case) -> Result<(), String> {
    let (mut msgs, error) = parse_log(&case.log);
    if case.skip_body {
        // llhttp's harness skipped the body here (as for a response to HEAD); a real server
        // reads the declared body, so only the first request is real.
        msgs.truncate(1);
    }
    let pause = matches!(error, Some((22 | 23, _)));
    let invalid = error.is_some() && !pause;
    let (resps, end) = exchange(port, case, &msgs, invalid);
    if std::env::var_os("RINGD_CORPUS_VERBOSE").is_some() {
        let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
        let _ = writeln!(
            std::io::stderr(),
            "corpus [{} › {}] error={error:?} → {statuses:?} {end:?}",
            case.file,
            case.title
        );
    }
    if let End::Broken(e) = &end {
        return Err(format!("unreadable answer: {e}"));
    }
    let mut i = 0; // next response
    let mut stopped: Option<String> = None;
    let mut must_close = false;
    let complete: Vec<&Msg> = msgs.iter().filter(|m| m.complete).collect();
    for (k, m) in complete.iter().enumerate() {
        let e = classify(m);
        let Some(r) = resps.get(i) else {
            if matches!(e, Expect::MustReject(..)) && end == End::Eof {
                stopped = Some(format!("closed without answering request #{k}"));
                break;
            }
            return Err(format!(
                "no response to request #{k} `{}` (expected {e:?}); {} response(s), end {end:?}",
                m.describe(),
                resps.len()
            ));
        };
        i += 1;
        let ok = match &e {
            Expect::MustReject(set, _) => set.contains(&r.status),
            Expect::MayReject(set, _) => set.contains(&r.status) || accepted(r.status),
            Expect::Accept => accepted(r.status),
        };
        if !ok {
            return Err(format!(
                "request #{k} `{}` answered {} (expected {e:?})\n{r:?}",
                m.describe(),
                r.status
            ));
        }
        if closing_status(r.status) || matches!(e, Expect::MustReject(..)) {
            must_close = true;
            stopped = Some(format!("{} to request #{k}", r.status));
        } else if r.closes() || !m.persists() {
            stopped = Some(format!("request/response #{k} ends the connection"));
        }
        if stopped.is_some() {
            break;
        }
    }
    if stopped.is_none() {
        // What follows the completed requests: llhttp's error point, upgrade bytes, or an
        // incomplete request.
        let next = msgs.iter().find(|m| !m.complete);
        let allowed: Box<dyn Fn(u16) -> bool> = if invalid {
            must_close = true;
            let reason = error.as_ref().map(|e| e.1.clone()).unwrap_or_default();
            if next.is_some_and(|m| m.headers_complete) {
                Box::new(|s| s >= 400)
            } else if reason.to_ascii_lowercase().contains("method") {
                Box::new(|s| matches!(s, 400 | 405 | 413 | 414 | 431 | 501 | 505))
            } else {
                Box::new(|s| matches!(s, 400 | 413 | 414 | 431 | 501 | 505))
            }
        } else if pause {
            Box::new(|s| s >= 400)
        } else if let Some(m) = next.filter(|m| m.headers_complete) {
            match classify(m) {
                Expect::MustReject(set, _) | Expect::MayReject(set, _) => {
                    Box::new(move |s| set.contains(&s))
                }
                Expect::Accept => Box::new(|_| false),
            }
        } else {
            Box::new(|_| false)
        };
        if let Some(r) = resps.get(i) {
            i += 1;
            if !allowed(r.status) {
                return Err(format!(
                    "{} answered {} (invalid={invalid}, error={error:?})\n{r:?}",
                    next.map(Msg::describe)
                        .unwrap_or_else(|| "trailing bytes".into()),
                    r.status
                ));
            }
            if closing_status(r.status) {
                must_close = true;
            }
            stopped = Some(format!("{} to the trailing request", r.status));
        }
    }
    if i < resps.len() {
        let extra: Vec<u16> = resps[i..].iter().map(|r| r.status).collect();
        return Err(format!(
            "answered {} more response(s) {extra:?} after {}",
            extra.len(),
            stopped.unwrap_or_else(|| "the last request".into())
        ));
    }
    if must_close && end != End::Eof {
        return Err(format!(
            "connection left open after invalid input ({} response(s): {:?})",
            resps.len(),
            resps.iter().map(|r| r.status).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Bytes shown the way the corpus writes them.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Case 1: replay every `"request"` case of the corpus (module doc gives the rules).
pub fn replay(backend: &str) {
    let Some(cases) = cases_or_skip() else {
        return;
    };
    let root = TempDir::new("corpus"); // empty: every path is 404, no 2xx anywhere
    let srv = ServerBuilder::new(backend, root.path()).start();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(n) else { break };
                if let Err(why) = check_case(srv.port, case) {
                    failures.lock().unwrap().push(format!(
                        "[{} › {}] {why}\n    sent: {}",
                        case.file,
                        case.title,
                        show(&case.input)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "backend {backend}: {} of {} llhttp cases failed:\n\n{}\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        srv.diagnostics()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_follows_the_readme() {
        assert_eq!(
            decode(&["GET / HTTP/1.1", "", ""]),
            b"GET / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(decode(&["a\\", "b"]), b"ab");
        assert_eq!(
            decode(&["x\\r\\n\\t\\f\\x41\\101\\01\\test"]),
            b"x\r\n\t\x0cAA\x01\test"
        );
        assert_eq!(decode(&["q=\\\"a\\\""]), b"q=\\\"a\\\"");
    }

    #[test]
    fn corpus_parses_with_expected_classes() {
        crate::harness::catch_skip("corpus", || {
            if let Some(cases) = cases_or_skip() {
                check_classes(&cases);
            }
        });
    }

    fn check_classes(cases: &[Case]) {
        let invalid = cases
            .iter()
            .filter(|c| c.log.last().is_some_and(|l| l.contains(" error code=")))
            .count();
        assert!(invalid > 20 && invalid < cases.len(), "{invalid} invalid");
        // Every case's log yields at least one message.
        for c in cases {
            let (msgs, _) = parse_log(&c.log);
            assert!(
                !msgs.is_empty(),
                "{} › {}: no message in log",
                c.file,
                c.title
            );
        }
    }
}

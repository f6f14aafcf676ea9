//! Fuzz target: the pure header-value functions the static-file handler acts on:
//! `Range` (`ringd::handler::range::evaluate`), conditional requests
//! (`ringd::handler::conditional::{evaluate, if_range_holds, http_date}`) and
//! `Accept-Encoding` (`ringd::handler::encoding::{weights, choose}`).
//!
//! Input: byte 0 picks the function, bytes 1..9 a length / Last-Modified / availability mask,
//! the rest is the header value (NUL-separated values for the conditional fields: a real
//! field value never holds a NUL). Asserts, beyond "no panic":
//! - ranges lie inside the representation, are ordered `first <= last`, at most
//!   `MAX_RANGES`, never overlap in a multipart answer, and a plain `bytes=a-b` is honoured;
//! - an HTTP-date round-trips through its IMF-fixdate form; preconditions with no fields
//!   proceed; `If-None-Match: <our tag>` gives 304 (GET/HEAD) or 412; `If-Range` holds for our
//!   own strong tag and exact date, never for a weak tag;
//! - weights are q-values in 0..=1000, and `choose` returns an available coding of the
//!   highest non-zero weight, the first in preference order on ties, or none.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use ringd::handler::conditional::{self, Conditions, Precondition};
use ringd::handler::encoding;
use ringd::handler::range::{self, Ranges, MAX_RANGES};
use ringd_fuzz::split_control;

/// Largest time an HTTP-date can express (9999-12-31T23:59:59Z).
const MAX_DATE: u64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = split_control::<9>(data);
    let num = u64::from_le_bytes(ctl[1..9].try_into().expect("8 bytes"));
    match ctl[0] % 3 {
        0 => check_range(rest, num),
        1 => check_conditional(rest, num, ctl[0] & 0x80 != 0),
        _ => check_encoding(rest, num),
    }
});

fn check_range(header: &[u8], num: u64) {
    // Mostly small lengths (where ranges bite), sometimes any u64.
    let len = if num & 1 == 0 { (num >> 1) % 4096 } else { num };
    match range::evaluate(header, len) {
        Ranges::Full => {}
        Ranges::Unsatisfiable => {}
        Ranges::Single(a, b) => {
            assert!(a <= b && b < len, "Single({a}, {b}) for len {len}");
        }
        Ranges::Multi(v) => {
            assert!(v.len() >= 2 && v.len() <= MAX_RANGES, "{} ranges", v.len());
            for &(a, b) in &v {
                assert!(a <= b && b < len, "({a}, {b}) for len {len}");
            }
            let mut s = v.clone();
            s.sort_unstable();
            assert!(s.windows(2).all(|w| w[0].1 < w[1].0), "overlap in {v:?}");
        }
    }
    // A well-formed single range is honoured as RFC 9110 §14.1.2 says.
    if let Some(spec) = header.strip_prefix(b"bytes=") {
        let text = std::str::from_utf8(spec).unwrap_or("");
        if let Some((a, b)) = text.split_once('-') {
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
            if digits(a) && digits(b) {
                let (a, b): (u64, u64) = (a.parse().expect("digits"), b.parse().expect("digits"));
                let want = if a > b {
                    Ranges::Full
                } else if a >= len {
                    Ranges::Unsatisfiable
                } else {
                    Ranges::Single(a, b.min(len - 1))
                };
                assert_eq!(range::evaluate(header, len), want);
            }
        }
    }
}

fn fmt_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

fn check_conditional(rest: &[u8], num: u64, get_or_head: bool) {
    let lm = (num % (MAX_DATE + 1)) as i64;
    let etag: &[u8] = b"\"5f3a-1c8e\"";
    let mut parts = rest
        .split(|&b| b == 0)
        .map(|p| (!p.is_empty()).then_some(p));
    let mut next = || parts.next().flatten();
    let c = Conditions {
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
    };
    let if_range = next();
    let got = conditional::evaluate(&c, etag, lm, get_or_head);
    if c.if_match.is_none()
        && c.if_none_match.is_none()
        && c.if_modified_since.is_none()
        && c.if_unmodified_since.is_none()
    {
        assert_eq!(got, Precondition::Proceed);
    }
    if c.if_match.is_none() && c.if_unmodified_since.is_none() && c.if_none_match == Some(etag) {
        let want = if get_or_head {
            Precondition::NotModified
        } else {
            Precondition::Failed
        };
        assert_eq!(got, want);
    }
    if let Some(ir) = if_range {
        let _ = conditional::if_range_holds(ir, etag, lm);
    }
    // Any date the parser accepts round-trips through IMF-fixdate.
    for v in [c.if_modified_since, c.if_unmodified_since, if_range]
        .into_iter()
        .flatten()
    {
        if let Some(t) = conditional::http_date(v) {
            assert!(t >= 0 && t as u64 <= MAX_DATE);
            assert_eq!(
                conditional::http_date(fmt_date(t as u64).as_bytes()),
                Some(t)
            );
        }
    }
    let d = fmt_date(lm as u64);
    assert_eq!(conditional::http_date(d.as_bytes()), Some(lm));
    assert!(conditional::if_range_holds(d.as_bytes(), etag, lm));
    assert!(conditional::if_range_holds(etag, etag, lm));
    assert!(!conditional::if_range_holds(b"W/\"5f3a-1c8e\"", etag, lm));
}

fn check_encoding(header: &[u8], num: u64) {
    let w = encoding::weights(header);
    assert!(w.iter().all(|&q| q <= 1000), "{w:?}");
    let avail = [num & 1 != 0, num & 2 != 0, num & 4 != 0];
    let got = encoding::choose(w, avail);
    let best = (0..3)
        .filter(|&i| avail[i] && w[i] > 0)
        .max_by_key(|&i| (w[i], std::cmp::Reverse(i)));
    assert_eq!(got, best, "weights {w:?} available {avail:?}");
}

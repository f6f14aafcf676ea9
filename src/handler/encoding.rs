//! Precompressed variants: the codings ringd serves from sidecar files, and the pure
//! Accept-Encoding negotiation (q-values, `*`, `q=0` exclusion) that picks one.

use crate::proto::framing::{list, trim};

/// A content coding served from a sidecar file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

/// Codings in order of preference when the client weighs them equally.
pub const CODINGS: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

impl Coding {
    /// Sidecar file suffix.
    pub fn suffix(self) -> &'static [u8] {
        match self {
            Coding::Br => b".br",
            Coding::Zstd => b".zst",
            Coding::Gzip => b".gz",
        }
    }

    /// Content-Encoding token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    fn matches(self, t: &[u8]) -> bool {
        t.eq_ignore_ascii_case(self.token().as_bytes())
            || (self == Coding::Gzip && t.eq_ignore_ascii_case(b"x-gzip"))
    }
}

/// The q-value (in thousandths, 0..=1000) of `q=...` text; None when malformed.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The weight the client gives each coding of `CODINGS` (0 = not acceptable).
pub fn weights(accept_encoding: &[u8]) -> [u16; 3] {
    let mut explicit: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for elem in list(accept_encoding) {
        let mut parts = elem.split(|&b| b == b';');
        let name = trim(parts.next().unwrap_or(b""));
        let mut q = Some(1000);
        for p in parts {
            let p = trim(p);
            if p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") {
                q = qvalue(&p[2..]);
            }
        }
        let Some(q) = q else { continue };
        if name == b"*" {
            star = Some(q);
        }
        for (i, c) in CODINGS.iter().enumerate() {
            if c.matches(name) {
                explicit[i] = Some(q);
            }
        }
    }
    let mut w = [0u16; 3];
    for i in 0..3 {
        w[i] = explicit[i].or(star).unwrap_or(0);
    }
    w
}

/// Which variant to serve (index into `CODINGS`) given the client's `weights` and which
/// sidecars exist: the highest non-zero weight, ties broken by `CODINGS` order.
pub fn choose(weights: [u16; 3], available: [bool; 3]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in 0..3 {
        if available[i] && weights[i] > 0 && best.is_none_or(|b| weights[i] > weights[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_from_header() {
        assert_eq!(weights(b"gzip, deflate, br"), [1000, 0, 1000]);
        assert_eq!(weights(b"br;q=0.5, gzip;q=0.8, zstd"), [500, 1000, 800]);
        assert_eq!(weights(b"*;q=0.1, gzip;q=0"), [100, 100, 0]);
        assert_eq!(weights(b"BR;Q=1.000"), [1000, 0, 0]);
        assert_eq!(weights(b"br;q=2, gzip;q=0.1234, x-gzip"), [0, 0, 1000]);
        assert_eq!(weights(b"identity"), [0, 0, 0]);
        assert_eq!(weights(b""), [0, 0, 0]);
    }

    #[test]
    fn choosing() {
        assert_eq!(choose([1000, 1000, 1000], [true, true, true]), Some(0));
        assert_eq!(choose([1000, 1000, 1000], [false, false, true]), Some(2));
        assert_eq!(choose([500, 0, 800], [true, true, true]), Some(2));
        assert_eq!(choose([0, 0, 0], [true, true, true]), None);
        assert_eq!(choose([1000, 1000, 0], [false, false, true]), None);
    }
}

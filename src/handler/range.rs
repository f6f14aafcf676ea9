//! Range requests (RFC 9110 §14): parse a `Range: bytes=...` value against a length into the
//! outcome to serve. Pure.

/// More ranges than this in one request are answered with the whole file (as nginx does).
pub const MAX_RANGES: usize = 16;

/// What to send for a Range header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Ignore the header: 200 with the whole representation.
    Full,
    /// 206 with one range, inclusive bounds.
    Single(u64, u64),
    /// 206 multipart/byteranges, inclusive bounds, in the order requested.
    Multi(Vec<(u64, u64)>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates `Range` for a representation of `len` bytes. Syntax the server does not
/// understand, other units, too many ranges and overlapping ranges all give `Full`.
pub fn evaluate(header: &[u8], len: u64) -> Ranges {
    let v = crate::proto::framing::trim(header);
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"bytes=") {
        return Ranges::Full;
    }
    let mut found: [(u64, u64); MAX_RANGES] = [(0, 0); MAX_RANGES];
    let mut n = 0;
    let mut specs = 0;
    for spec in v[6..].split(|&b| b == b',') {
        let spec = crate::proto::framing::trim(spec);
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return Ranges::Full;
        }
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return Ranges::Full;
        };
        let (a, b) = (&spec[..dash], &spec[dash + 1..]);
        let range = match (number(a), number(b)) {
            (Some(first), Some(last)) if a.len() + b.len() > 0 => {
                if first > last {
                    return Ranges::Full;
                }
                (first < len).then(|| (first, last.min(len - 1)))
            }
            (Some(first), None) if !a.is_empty() && b.is_empty() => {
                (first < len).then(|| (first, len - 1))
            }
            (None, Some(suffix)) if a.is_empty() && !b.is_empty() => {
                (suffix > 0 && len > 0).then(|| (len - suffix.min(len), len - 1))
            }
            _ => return Ranges::Full,
        };
        if let Some(r) = range {
            found[n] = r;
            n += 1;
        }
    }
    match n {
        0 if specs == 0 => Ranges::Full,
        0 => Ranges::Unsatisfiable,
        1 => Ranges::Single(found[0].0, found[0].1),
        _ => {
            let mut sorted = found[..n].to_vec();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
                return Ranges::Full;
            }
            Ranges::Multi(found[..n].to_vec())
        }
    }
}

/// A 1*DIGIT number; None for empty, non-digits or overflow.
fn number(v: &[u8]) -> Option<u64> {
    crate::proto::framing::parse_decimal(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ranges::*;

    #[test]
    fn single_forms() {
        assert_eq!(evaluate(b"bytes=0-99", 1000), Single(0, 99));
        assert_eq!(evaluate(b"bytes=900-", 1000), Single(900, 999));
        assert_eq!(evaluate(b"bytes=-100", 1000), Single(900, 999));
        assert_eq!(evaluate(b"bytes=-5000", 1000), Single(0, 999));
        assert_eq!(evaluate(b"bytes=500-5000", 1000), Single(500, 999));
        assert_eq!(evaluate(b"Bytes = 0-0", 1000), Full); // space before '=' is not the syntax
        assert_eq!(evaluate(b"BYTES=0-0", 1000), Single(0, 0));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(evaluate(b"bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(evaluate(b"bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(evaluate(b"bytes=-0", 1000), Unsatisfiable);
        assert_eq!(evaluate(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(evaluate(b"bytes=2000-3000, 0-1", 1000), Single(0, 1));
    }

    #[test]
    fn ignored() {
        for h in [
            &b"items=0-1"[..],
            b"bytes=",
            b"bytes=abc",
            b"bytes=5-1",
            b"bytes=-",
            b"bytes=1-2-3",
            b"bytes=+1-2",
        ] {
            assert_eq!(evaluate(h, 1000), Full, "{:?}", String::from_utf8_lossy(h));
        }
    }

    #[test]
    fn multiple() {
        assert_eq!(
            evaluate(b"bytes=0-9, 20-29", 100),
            Multi(vec![(0, 9), (20, 29)])
        );
        assert_eq!(
            evaluate(b"bytes=50-59,0-9", 100),
            Multi(vec![(50, 59), (0, 9)])
        );
        assert_eq!(evaluate(b"bytes=0-9,5-15", 100), Full);
        assert_eq!(evaluate(b"bytes=0-9,-95", 100), Full);
        let many: String = (0..17)
            .map(|i| format!("{}-{},", i * 10, i * 10 + 1))
            .collect();
        assert_eq!(evaluate(format!("bytes={many}").as_bytes(), 1000), Full);
        let ok: String = (0..16)
            .map(|i| format!("{}-{},", i * 10, i * 10 + 1))
            .collect();
        assert!(
            matches!(evaluate(format!("bytes={ok}").as_bytes(), 1000), Multi(v) if v.len() == 16)
        );
    }
}

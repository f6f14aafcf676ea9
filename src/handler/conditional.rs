//! Conditional requests (RFC 9110 §13.2.2) as one pure function, plus the entity-tag and
//! date comparisons it and If-Range need.

/// What the preconditions of a request decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Go on and serve (or evaluate Range).
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition failed.
    Failed,
}

/// The conditional header fields of a request (raw values).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
}

/// Evaluates the preconditions in RFC 9110 §13.2.2 order against the selected
/// representation's strong `etag` (quoted) and `last_modified` (seconds since the epoch).
pub fn evaluate(
    c: &Conditions<'_>,
    etag: &[u8],
    last_modified: i64,
    get_or_head: bool,
) -> Precondition {
    // 1. If-Match (strong comparison); 2. otherwise If-Unmodified-Since.
    if let Some(im) = c.if_match {
        if !list_matches(im, etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(since) = c.if_unmodified_since.and_then(http_date) {
        if last_modified > since {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match (weak comparison); 4. otherwise If-Modified-Since (GET/HEAD only).
    if let Some(inm) = c.if_none_match {
        if list_matches(inm, etag, true) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        if let Some(since) = c.if_modified_since.and_then(http_date) {
            if last_modified <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// What to answer for one representation: preconditions in RFC 9110 §13.2.2 order, then
/// Range (§14) when the preconditions let it through. The one decision behind static files
/// and cached responses alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 200 with the whole representation.
    Full,
    /// 304.
    NotModified,
    /// 412.
    Failed,
    /// 206 with one range, inclusive bounds.
    Single(u64, u64),
    /// 206 multipart/byteranges.
    Multi(Vec<(u64, u64)>),
    /// 416.
    Unsatisfiable,
}

/// What a request asks of a representation: its conditional fields and, for a GET, its
/// Range and If-Range.
#[derive(Clone, Copy, Debug, Default)]
pub struct Asked<'a> {
    pub conds: Conditions<'a>,
    /// Range (GET only: the caller leaves it None for other methods).
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// Decides the answer for a representation with entity tag `etag` (strong `"x"` or weak
/// `W/"x"`: a weak one never satisfies If-Match or If-Range but does If-None-Match),
/// `last_modified` (seconds since the epoch) and `len` bytes, for a GET or HEAD.
pub fn decide(a: &Asked<'_>, etag: &[u8], last_modified: i64, len: u64) -> Decision {
    let (tag, weak) = match etag.strip_prefix(b"W/") {
        Some(t) => (t, true),
        None => (etag, false),
    };
    let mut conds = a.conds;
    if weak {
        if let Some(im) = conds.if_match {
            if crate::proto::framing::trim(im) != b"*" {
                return Decision::Failed;
            }
        }
    }
    if weak && conds.if_match.is_some() {
        conds.if_match = Some(b"*");
    }
    match evaluate(&conds, tag, last_modified, true) {
        Precondition::Proceed => {}
        Precondition::NotModified => return Decision::NotModified,
        Precondition::Failed => return Decision::Failed,
    }
    let Some(r) = a.range else {
        return Decision::Full;
    };
    let honour = a.if_range.is_none_or(|ir| {
        let is_tag = {
            let v = crate::proto::framing::trim(ir);
            v.starts_with(b"\"") || v.starts_with(b"W/")
        };
        !(weak && is_tag) && if_range_holds(ir, tag, last_modified)
    });
    if !honour {
        return Decision::Full;
    }
    match super::range::evaluate(r, len) {
        super::range::Ranges::Full => Decision::Full,
        super::range::Ranges::Single(x, y) => Decision::Single(x, y),
        super::range::Ranges::Multi(v) => Decision::Multi(v),
        super::range::Ranges::Unsatisfiable => Decision::Unsatisfiable,
    }
}

/// If-Range (RFC 9110 §13.1.5): true when the Range may be honoured. An entity tag must match
/// strongly; a date must equal Last-Modified exactly.
pub fn if_range_holds(if_range: &[u8], etag: &[u8], last_modified: i64) -> bool {
    let v = crate::proto::framing::trim(if_range);
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        let mut tags = EtagList { rest: v };
        match (tags.next(), tags.next()) {
            (Some(Some((false, tag))), None) => Some(tag) == opaque(etag),
            _ => false,
        }
    } else {
        http_date(v) == Some(last_modified)
    }
}

/// Seconds since the epoch of an HTTP-date (any of the three formats), or None.
pub fn http_date(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(crate::proto::framing::trim(v)).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// The opaque part (with quotes) of our own strong tag.
fn opaque(etag: &[u8]) -> Option<&[u8]> {
    (etag.len() >= 2 && etag.starts_with(b"\"") && etag.ends_with(b"\"")).then_some(etag)
}

/// Whether the `If-Match` / `If-None-Match` value matches `etag`: `*` matches any current
/// representation; otherwise any listed tag, compared weakly or strongly. A malformed list
/// matches nothing.
fn list_matches(list: &[u8], etag: &[u8], weak: bool) -> bool {
    let v = crate::proto::framing::trim(list);
    if v == b"*" {
        return true;
    }
    let Some(ours) = opaque(etag) else {
        return false;
    };
    for item in (EtagList { rest: v }) {
        let Some((is_weak, tag)) = item else {
            return false;
        };
        if tag == ours && (weak || !is_weak) {
            return true;
        }
    }
    false
}

/// Iterator over `#entity-tag`: yields `Some((weak, "opaque"))`, or `None` once on bad syntax.
struct EtagList<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for EtagList<'a> {
    type Item = Option<(bool, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut r = self.rest;
        while let [b' ' | b'\t' | b',', tail @ ..] = r {
            r = tail;
        }
        if r.is_empty() {
            return None;
        }
        let weak = r.starts_with(b"W/");
        if weak {
            r = &r[2..];
        }
        let close = match r {
            [b'"', tail @ ..] => tail.iter().position(|&b| b == b'"'),
            _ => None,
        };
        let Some(close) = close else {
            self.rest = b"";
            return Some(None);
        };
        let tag = &r[..close + 2];
        if tag[1..close + 1].iter().any(|&b| b < 0x21 || b == 0x7f) {
            self.rest = b"";
            return Some(None);
        }
        self.rest = &r[close + 2..];
        Some(Some((weak, tag)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precondition::*;

    const TAG: &[u8] = b"\"abc-10\"";
    const LM: i64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn eval(c: Conditions<'_>) -> Precondition {
        evaluate(&c, TAG, LM, true)
    }

    #[test]
    fn none_proceeds() {
        assert_eq!(eval(Conditions::default()), Proceed);
    }

    #[test]
    fn if_match_strong() {
        let c = |v: &'static [u8]| Conditions {
            if_match: Some(v),
            ..Default::default()
        };
        assert_eq!(eval(c(b"\"abc-10\"")), Proceed);
        assert_eq!(eval(c(b"\"x\", \"abc-10\"")), Proceed);
        assert_eq!(eval(c(b"*")), Proceed);
        assert_eq!(eval(c(b"W/\"abc-10\"")), Failed);
        assert_eq!(eval(c(b"\"other\"")), Failed);
        assert_eq!(eval(c(b"garbage")), Failed);
    }

    #[test]
    fn if_unmodified_since() {
        let c = |v: &'static [u8]| Conditions {
            if_unmodified_since: Some(v),
            ..Default::default()
        };
        assert_eq!(eval(c(b"Sun, 06 Nov 1994 08:49:37 GMT")), Proceed);
        assert_eq!(eval(c(b"Sun, 06 Nov 1994 08:49:36 GMT")), Failed);
        assert_eq!(eval(c(b"not a date")), Proceed);
        // If-Match present: If-Unmodified-Since is not looked at.
        let both = Conditions {
            if_match: Some(b"*"),
            if_unmodified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(both), Proceed);
    }

    #[test]
    fn if_none_match_weak() {
        let c = |v: &'static [u8]| Conditions {
            if_none_match: Some(v),
            ..Default::default()
        };
        assert_eq!(eval(c(b"\"abc-10\"")), NotModified);
        assert_eq!(eval(c(b"W/\"abc-10\"")), NotModified);
        assert_eq!(eval(c(b"\"a\" , W/\"abc-10\"")), NotModified);
        assert_eq!(eval(c(b"*")), NotModified);
        assert_eq!(eval(c(b"\"abc-1\"")), Proceed);
        assert_eq!(evaluate(&c(b"*"), TAG, LM, false), Failed);
    }

    #[test]
    fn if_modified_since() {
        let c = |v: &'static [u8]| Conditions {
            if_modified_since: Some(v),
            ..Default::default()
        };
        assert_eq!(eval(c(b"Sun, 06 Nov 1994 08:49:37 GMT")), NotModified);
        assert_eq!(eval(c(b"Sunday, 06-Nov-94 08:49:38 GMT")), NotModified);
        assert_eq!(eval(c(b"Sun Nov  6 08:49:36 1994")), Proceed);
        assert_eq!(eval(c(b"yesterday")), Proceed);
        // If-None-Match present and not matching: If-Modified-Since is ignored.
        let both = Conditions {
            if_none_match: Some(b"\"zzz\""),
            if_modified_since: Some(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(both), Proceed);
        // Not for other methods.
        assert_eq!(
            evaluate(&c(b"Sun, 06 Nov 1994 08:49:37 GMT"), TAG, LM, false),
            Proceed
        );
    }

    #[test]
    fn order_412_before_304() {
        let c = Conditions {
            if_match: Some(b"\"nope\""),
            if_none_match: Some(b"\"abc-10\""),
            ..Default::default()
        };
        assert_eq!(eval(c), Failed);
    }

    #[test]
    fn if_range() {
        assert!(if_range_holds(b"\"abc-10\"", TAG, LM));
        assert!(!if_range_holds(b"W/\"abc-10\"", TAG, LM));
        assert!(!if_range_holds(b"\"abc-11\"", TAG, LM));
        assert!(if_range_holds(b"Sun, 06 Nov 1994 08:49:37 GMT", TAG, LM));
        assert!(!if_range_holds(b"Sun, 06 Nov 1994 08:49:38 GMT", TAG, LM));
        assert!(!if_range_holds(b"junk", TAG, LM));
    }
}

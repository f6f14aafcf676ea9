//! A per-worker response cache (RFC 9111, a first slice) in front of the gateway: proxied
//! responses that may be stored are kept in memory (bounded in bytes and per entry, least
//! recently used out first) and answered again without the upstream while fresh, with `Age`
//! and `X-Cache: HIT`; `stale_if_error` answers a stale copy when the upstream fails.
//! Sans-IO: time comes in as `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::head::{self, ConnHeader};

/// A route's caching policy (`cache = { default_ttl, stale_while_revalidate, stale_if_error }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Freshness for responses that state none (micro-caching); zero: none.
    pub default_ttl: Duration,
    /// How long past freshness a stale copy may be served while refreshing (not yet used:
    /// a stale entry is refetched).
    pub stale_while_revalidate: Duration,
    /// How long past freshness a stale copy answers when the upstream fails.
    pub stale_if_error: Duration,
}

/// What may be stored of one response, decided from its status and fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storable {
    /// Yes, fresh for this long.
    Fresh(Duration),
    No(&'static str),
}

/// The fields of a response that decide storing, as received.
#[derive(Debug, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub cache_control: Vec<&'a [u8]>,
    pub expires: Option<&'a [u8]>,
    pub date: Option<&'a [u8]>,
    pub set_cookie: bool,
    pub vary: Vec<&'a [u8]>,
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1 "heuristically
/// cacheable").
fn heuristic(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether and for how long a response may be stored by a shared cache (RFC 9111 §3, §4.2):
/// never with no-store, private, no-cache (revalidation is not implemented yet), Set-Cookie
/// or `Vary: *`; a request with Authorization only when the response says public, s-maxage
/// or must-revalidate. s-maxage, then max-age, then Expires − Date give the freshness; a
/// heuristically cacheable status without any takes the route's `default_ttl`.
pub fn storable(f: &ResponseFacts<'_>, authorized: bool, policy: &Policy) -> Storable {
    let mut max_age = None;
    let mut s_maxage = None;
    let mut public = false;
    let mut must_revalidate = false;
    for v in &f.cache_control {
        for d in crate::proto::framing::list(v) {
            let (name, arg) = match d.iter().position(|&b| b == b'=') {
                Some(i) => (&d[..i], Some(&d[i + 1..])),
                None => (d, None),
            };
            let secs = || {
                arg.map(|a| a.strip_prefix(b"\"").unwrap_or(a))
                    .map(|a| a.strip_suffix(b"\"").unwrap_or(a))
                    .and_then(crate::proto::framing::parse_decimal)
            };
            match name.to_ascii_lowercase().as_slice() {
                b"no-store" => return Storable::No("no-store"),
                b"private" => return Storable::No("private"),
                b"no-cache" => return Storable::No("no-cache"),
                b"public" => public = true,
                b"must-revalidate" | b"proxy-revalidate" => must_revalidate = true,
                b"max-age" => max_age = secs(),
                b"s-maxage" => s_maxage = secs(),
                _ => {}
            }
        }
    }
    if f.set_cookie {
        return Storable::No("Set-Cookie");
    }
    if f.vary
        .iter()
        .any(|v| crate::proto::framing::list(v).any(|t| t == b"*"))
    {
        return Storable::No("Vary: *");
    }
    if authorized && !(public || s_maxage.is_some() || must_revalidate) {
        return Storable::No("Authorization");
    }
    if let Some(s) = s_maxage.or(max_age) {
        return if s == 0 {
            Storable::No("max-age=0")
        } else {
            Storable::Fresh(Duration::from_secs(s))
        };
    }
    if let Some(exp) = f.expires {
        let parse = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
        };
        let date = f.date.and_then(parse);
        return match (parse(exp), date) {
            (Some(e), Some(d)) if e > d => {
                Storable::Fresh(e.duration_since(d).unwrap_or(Duration::ZERO))
            }
            // An invalid Expires means already expired (RFC 9111 §5.3).
            _ => Storable::No("expired"),
        };
    }
    if heuristic(f.status) && !policy.default_ttl.is_zero() {
        return Storable::Fresh(policy.default_ttl);
    }
    Storable::No("no freshness")
}

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    pub reason: String,
    /// Header lines as first sent to the client (Date included, the origin's), without
    /// framing and connection fields.
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    /// Request fields the response varies on, and their values at store time.
    pub vary: Vec<(String, Option<Vec<u8>>)>,
    pub stored: Instant,
    pub fresh_for: Duration,
    pub policy: Policy,
    used: u64,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: u16,
        reason: String,
        fields: Vec<u8>,
        body: Vec<u8>,
        vary: Vec<(String, Option<Vec<u8>>)>,
        stored: Instant,
        fresh_for: Duration,
        policy: Policy,
    ) -> Entry {
        Entry {
            status,
            reason,
            fields,
            body,
            vary,
            stored,
            fresh_for,
            policy,
            used: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.fields.len() + self.body.len() + self.reason.len() + 64
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    pub fn fresh(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for
    }

    /// Within `stale_if_error` past its freshness.
    pub fn usable_on_error(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for + self.policy.stale_if_error
    }
}

/// The cache of one worker.
#[derive(Debug, Default)]
pub struct Cache {
    map: HashMap<String, Vec<Entry>>,
    bytes: usize,
    /// Most bytes held (all entries). Zero: caching off.
    pub max_bytes: usize,
    /// Largest entry kept; larger responses stream through uncached.
    pub max_entry: usize,
    tick: u64,
    pub hits: u64,
    pub misses: u64,
}

/// The cache key of a request: method class, scheme, host and target.
pub fn key(host: &[u8], target: &str) -> String {
    let mut k = String::with_capacity(host.len() + target.len() + 8);
    k.push_str("http://");
    k.push_str(&String::from_utf8_lossy(host).to_ascii_lowercase());
    k.push_str(target);
    k
}

impl Cache {
    pub fn new(max_bytes: usize, max_entry: usize) -> Cache {
        Cache {
            max_bytes,
            max_entry,
            ..Cache::default()
        }
    }

    /// The entry for `key` whose Vary fields match the request's (`field` gives a request
    /// field's value by name), if any.
    pub fn get(
        &mut self,
        key: &str,
        field: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Option<&mut Entry> {
        self.tick += 1;
        let tick = self.tick;
        let list = self.map.get_mut(key)?;
        let e = list
            .iter_mut()
            .find(|e| e.vary.iter().all(|(n, v)| field(n) == *v))?;
        e.used = tick;
        Some(e)
    }

    /// Stores `e` under `key` (replacing the variant with the same Vary values), evicting the
    /// least recently used entries beyond `max_bytes`.
    pub fn insert(&mut self, key: String, mut e: Entry) {
        let size = e.size();
        if self.max_bytes == 0 || size > self.max_entry || size > self.max_bytes {
            return;
        }
        self.tick += 1;
        e.used = self.tick;
        let list = self.map.entry(key).or_default();
        if let Some(i) = list.iter().position(|x| x.vary == e.vary) {
            self.bytes -= list[i].size();
            list.swap_remove(i);
        }
        list.push(e);
        self.bytes += size;
        while self.bytes > self.max_bytes {
            // Least recently used out (a scan: eviction is rare next to hits).
            let Some((k, i)) = self
                .map
                .iter()
                .flat_map(|(k, l)| l.iter().enumerate().map(move |(i, e)| (k, i, e.used)))
                .min_by_key(|&(_, _, u)| u)
                .map(|(k, i, _)| (k.clone(), i))
            else {
                break;
            };
            if let Some(l) = self.map.get_mut(&k) {
                let gone = l.swap_remove(i);
                self.bytes -= gone.size();
                if l.is_empty() {
                    self.map.remove(&k);
                }
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Queues `e` as one whole response: its status and fields, `Age`, `X-Cache: tag`, the
/// length, the connection header, then the body (none for HEAD). Returns the status and the
/// body bytes sent.
pub fn render(
    e: &Entry,
    tag: &str,
    now: Instant,
    head_only: bool,
    conn: ConnHeader,
    out: &mut OutQueue,
    pool: &mut BufPool,
) -> (u16, u64) {
    let buf = out.bytes(pool);
    buf.extend_from_slice(b"HTTP/1.1 ");
    head::put_u64(buf, u64::from(e.status));
    buf.push(b' ');
    buf.extend_from_slice(e.reason.as_bytes());
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&e.fields);
    head::header_u64(buf, "Age", e.age(now).as_secs());
    head::header(buf, "X-Cache", tag.as_bytes());
    if !matches!(e.status, 204 | 304) {
        head::header_u64(buf, "Content-Length", e.body.len() as u64);
    }
    let at = buf.len();
    buf.extend_from_slice(conn.line());
    buf.extend_from_slice(b"\r\n");
    let mut n = 0;
    if !head_only && !matches!(e.status, 204 | 304) {
        buf.extend_from_slice(&e.body);
        n = e.body.len() as u64;
    }
    out.mark_conn(at, conn.line().len());
    out.end_response();
    (e.status, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ttl: u64, sie: u64) -> Policy {
        Policy {
            default_ttl: Duration::from_secs(ttl),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(sie),
        }
    }

    fn facts<'a>(status: u16, cc: &[&'a [u8]]) -> ResponseFacts<'a> {
        ResponseFacts {
            status,
            cache_control: cc.to_vec(),
            ..ResponseFacts::default()
        }
    }

    #[test]
    fn storing_follows_rfc_9111() {
        let pol = p(0, 0);
        assert_eq!(
            storable(&facts(200, &[b"max-age=60"]), false, &pol),
            Storable::Fresh(Duration::from_secs(60))
        );
        assert_eq!(
            storable(&facts(200, &[b"max-age=60, s-maxage=5"]), false, &pol),
            Storable::Fresh(Duration::from_secs(5))
        );
        assert_eq!(
            storable(&facts(200, &[b"no-store, max-age=60"]), false, &pol),
            Storable::No("no-store")
        );
        assert_eq!(
            storable(&facts(200, &[b"private"]), false, &pol),
            Storable::No("private")
        );
        assert_eq!(
            storable(&facts(200, &[b"max-age=60"]), true, &pol),
            Storable::No("Authorization")
        );
        assert_eq!(
            storable(&facts(200, &[b"public, max-age=60"]), true, &pol),
            Storable::Fresh(Duration::from_secs(60))
        );
        assert_eq!(
            storable(&facts(200, &[]), false, &pol),
            Storable::No("no freshness")
        );
        assert_eq!(
            storable(&facts(200, &[]), false, &p(1, 0)),
            Storable::Fresh(Duration::from_secs(1))
        );
        assert_eq!(
            storable(&facts(500, &[]), false, &p(1, 0)),
            Storable::No("no freshness")
        );
        let mut f = facts(200, &[b"max-age=60"]);
        f.set_cookie = true;
        assert_eq!(storable(&f, false, &pol), Storable::No("Set-Cookie"));
        let mut f = facts(200, &[b"max-age=60"]);
        f.vary = vec![b"Accept-Encoding, *"];
        assert_eq!(storable(&f, false, &pol), Storable::No("Vary: *"));
        let mut f = facts(200, &[]);
        f.date = Some(b"Tue, 01 Dec 2026 10:00:00 GMT");
        f.expires = Some(b"Tue, 01 Dec 2026 10:00:30 GMT");
        assert_eq!(
            storable(&f, false, &pol),
            Storable::Fresh(Duration::from_secs(30))
        );
        f.expires = Some(b"0");
        assert_eq!(storable(&f, false, &pol), Storable::No("expired"));
    }

    fn entry(body: usize, vary: Vec<(String, Option<Vec<u8>>)>) -> Entry {
        Entry {
            status: 200,
            reason: "OK".into(),
            fields: b"Date: x\r\n".to_vec(),
            body: vec![b'x'; body],
            vary,
            stored: Instant::now(),
            fresh_for: Duration::from_secs(10),
            policy: p(0, 0),
            used: 0,
        }
    }

    #[test]
    fn variants_eviction_and_bounds() {
        let mut c = Cache::new(1000, 500);
        let gz = vec![("accept-encoding".to_string(), Some(b"gzip".to_vec()))];
        let none = vec![("accept-encoding".to_string(), None)];
        c.insert("k".into(), entry(10, gz.clone()));
        c.insert("k".into(), entry(20, none));
        assert_eq!(c.len(), 2);
        let with_gzip = |n: &str| (n == "accept-encoding").then(|| b"gzip".to_vec());
        assert_eq!(c.get("k", &with_gzip).map(|e| e.body.len()), Some(10));
        assert_eq!(c.get("k", &|_| None).map(|e| e.body.len()), Some(20));
        // Too large for one entry: not kept.
        c.insert("big".into(), entry(600, Vec::new()));
        assert!(c.get("big", &|_| None).is_none());
        // Over max_bytes: the least recently used go.
        for i in 0..10 {
            c.insert(format!("e{i}"), entry(200, Vec::new()));
        }
        assert!(c.bytes() <= 1000);
        assert!(c.get("e9", &|_| None).is_some());
        assert!(c.get("e0", &|_| None).is_none());
    }
}

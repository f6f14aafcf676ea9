//! A per-worker response cache (RFC 9111) in front of the gateway: proxied, CGI (and any
//! other gateway source's) responses that may be stored are kept in memory (bounded in bytes
//! and per entry, least recently used out first) and answered again without the upstream
//! while fresh, with `Age` and `X-Cache: HIT`. Stale entries with a validator are revalidated
//! (a 304 refreshes the stored head); `stale_while_revalidate` answers a stale copy and
//! refreshes it behind the client's back; `stale_if_error` answers one when the upstream
//! fails. Concurrent misses for one key wait for one origin fetch (`Pending`). A client's
//! conditional and range requests are answered from the entry with the static handler's
//! rules (`handler::conditional::decide`). Purges reach every worker through a process-wide
//! list (`purge_all`). Sans-IO: time comes in as `now`.

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
    /// Store responses that set cookies (`store_set_cookie = true`); off by default.
    pub store_set_cookie: bool,
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
    /// The response has ETag or Last-Modified (so a stale copy can be revalidated).
    pub validator: bool,
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
/// never with no-store, private, Set-Cookie (unless the route says `store_set_cookie`) or
/// `Vary: *`; no-cache only with a validator (every use is then revalidated: freshness zero); a request with Authorization only when the response says public, s-maxage
/// or must-revalidate. s-maxage, then max-age, then Expires − Date give the freshness; a
/// heuristically cacheable status without any takes the route's `default_ttl`.
pub fn storable(f: &ResponseFacts<'_>, authorized: bool, policy: &Policy) -> Storable {
    let mut max_age = None;
    let mut s_maxage = None;
    let mut public = false;
    let mut must_revalidate = false;
    let mut no_cache = false;
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
                // `no-cache="field"` limits what may be reused without revalidation; treated
                // like the bare directive (stricter).
                b"no-cache" => no_cache = true,
                b"public" => public = true,
                b"must-revalidate" | b"proxy-revalidate" => must_revalidate = true,
                b"max-age" => max_age = secs(),
                b"s-maxage" => s_maxage = secs(),
                _ => {}
            }
        }
    }
    if f.set_cookie && !policy.store_set_cookie {
        return Storable::No("Set-Cookie");
    }
    // Partial and not-modified answers never replace a whole stored response.
    if matches!(f.status, 206 | 304) {
        return Storable::No("partial or not modified");
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
    if no_cache || (must_revalidate && s_maxage.or(max_age) == Some(0)) {
        // Stored, but stale at once: every use revalidates (needs a validator).
        return if f.validator {
            Storable::Fresh(Duration::ZERO)
        } else {
            Storable::No("no-cache without a validator")
        };
    }
    if let Some(s) = s_maxage.or(max_age) {
        return if s == 0 && !f.validator {
            Storable::No("max-age=0")
        } else if s == 0 {
            Storable::Fresh(Duration::ZERO)
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
    /// A background refresh (stale-while-revalidate) began at this time.
    pub refreshing: Option<Instant>,
    /// The bytes counted for it when stored (a refresh may change `size()`).
    charged: usize,
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
            refreshing: None,
            charged: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.fields.len() + self.body.len() + self.reason.len() + 64
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    pub fn fresh(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for
    }

    /// Within `stale_if_error` past its freshness.
    pub fn usable_on_error(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for + self.policy.stale_if_error
    }

    /// Within `stale_while_revalidate` past its freshness.
    pub fn usable_while_revalidating(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for + self.policy.stale_while_revalidate
    }

    /// A stored field's value (the first line of that name).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        fields_iter(&self.fields)
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The request fields that revalidate this entry with its origin (`If-None-Match`,
    /// `If-Modified-Since`), as header lines; None without a validator.
    pub fn validators(&self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        if let Some(t) = self.field("etag") {
            head::header(&mut v, "If-None-Match", t);
        }
        if let Some(d) = self.field("last-modified") {
            head::header(&mut v, "If-Modified-Since", d);
        }
        (!v.is_empty()).then_some(v)
    }

    /// A 304 from the origin: its end-to-end fields replace the stored ones of the same name
    /// (RFC 9111 §4.3.4; never the framing, the coding or the validators ringd may have
    /// rewritten), and the entry is fresh again for `fresh_for` from `now`.
    pub fn refresh(&mut self, fields: &[u8], fresh_for: Option<Duration>, now: Instant) {
        const KEEP: [&[u8]; 5] = [
            b"content-length",
            b"content-encoding",
            b"transfer-encoding",
            b"vary",
            b"etag",
        ];
        let names: Vec<Vec<u8>> = fields_iter(fields)
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| !KEEP.contains(&n.as_slice()))
            .collect();
        let mut merged = Vec::with_capacity(self.fields.len() + fields.len());
        for (line, (n, _)) in lines(&self.fields).zip(fields_iter(&self.fields)) {
            if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                merged.extend_from_slice(line);
            }
        }
        for (line, (n, _)) in lines(fields).zip(fields_iter(fields)) {
            if names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                merged.extend_from_slice(line);
            }
        }
        self.fields = merged;
        self.stored = now;
        if let Some(d) = fresh_for {
            self.fresh_for = d;
        }
        self.refreshing = None;
    }
}

/// The `Name: value\r\n` lines of a field block, each with its line end.
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.len() > 2)
}

/// `(name, value)` of each line of a field block (value trimmed).
pub fn fields_iter(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines(block).map(|l| {
        let i = l.iter().position(|&b| b == b':').unwrap_or(l.len());
        let v = l.get(i + 1..).unwrap_or_default();
        (
            &l[..i],
            crate::proto::framing::trim(v.strip_suffix(b"\r\n").unwrap_or(v)),
        )
    })
}

/// Purges posted by any worker (a `PURGE` request): each worker applies those it has not
/// seen on its next lookup. The sequence number of the newest is `PURGE_SEQ`.
static PURGES: std::sync::Mutex<Vec<(u64, String)>> = std::sync::Mutex::new(Vec::new());
static PURGE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Purges kept for workers that have not looked yet; one further behind clears its cache.
const PURGES_KEPT: usize = 1024;

/// Drops `key` (every variant) in every worker's cache, at each one's next lookup.
pub fn purge_all(key: &str) {
    let mut list = PURGES.lock().unwrap_or_else(|e| e.into_inner());
    let seq = PURGE_SEQ.load(std::sync::atomic::Ordering::Relaxed) + 1;
    list.push((seq, key.to_string()));
    if list.len() > PURGES_KEPT {
        let n = list.len() - PURGES_KEPT;
        list.drain(..n);
    }
    PURGE_SEQ.store(seq, std::sync::atomic::Ordering::Release);
}

/// Counters of one worker's cache, readable from any thread (the status report).
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    pub stale: std::sync::atomic::AtomicU64,
    pub revalidated: std::sync::atomic::AtomicU64,
    pub bypass: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub entries: std::sync::atomic::AtomicU64,
    pub origin_fetches: std::sync::atomic::AtomicU64,
}

/// Every worker's `Stats`, in creation order (a reload keeps a worker's slot).
static STATS: std::sync::Mutex<Vec<std::sync::Arc<Stats>>> = std::sync::Mutex::new(Vec::new());

/// The cache status of every worker as JSON: per worker its hits, misses, stale, revalidated,
/// bypass, bytes, entries, origin fetches and hit ratio (hits + stale + revalidated over all
/// lookups).
pub fn status_json() -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let list = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = String::from("{\"workers\": [");
    for (i, w) in list.iter().enumerate() {
        let (h, m, st, rv, b) = (
            w.hits.load(Relaxed),
            w.misses.load(Relaxed),
            w.stale.load(Relaxed),
            w.revalidated.load(Relaxed),
            w.bypass.load(Relaxed),
        );
        let served = h + st + rv;
        let all = served + m;
        let ratio = if all == 0 {
            0.0
        } else {
            served as f64 / all as f64
        };
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!(
            "{{\"worker\": {i}, \"hits\": {h}, \"misses\": {m}, \"stale\": {st}, \
             \"revalidated\": {rv}, \"bypass\": {b}, \"hit_ratio\": {ratio:.4}, \
             \"bytes\": {}, \"entries\": {}, \"origin_fetches\": {}}}",
            w.bytes.load(Relaxed),
            w.entries.load(Relaxed),
            w.origin_fetches.load(Relaxed)
        ));
    }
    s.push_str("]}\n");
    s
}

/// An origin fetch in flight for a key (request collapsing): who waits for it.
#[derive(Debug)]
struct Pending {
    since: Instant,
    waiters: Vec<u64>,
}

/// What the cache says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry: answer it.
    Hit,
    /// A stale entry within `stale_while_revalidate`: answer it, and refresh it in the
    /// background when `refresh` is Some (no refresh is running yet), with these
    /// conditional fields.
    StaleRevalidate { refresh: Option<Option<Vec<u8>>> },
    /// Go to the origin, with these conditional fields when a stale entry has validators;
    /// `leader`: other misses of this key wait for this fetch (`resolve` ends it).
    Fetch {
        validators: Option<Vec<u8>>,
        leader: bool,
    },
    /// Another request of this worker is fetching this key: wait for it.
    Wait,
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
    /// Keys with an origin fetch in flight, and the sessions (wake tags) waiting for them.
    pending: HashMap<String, Pending>,
    /// Keys whose last fetch could not be stored: their misses go to the origin in parallel
    /// until this time (no collapsing on what will not be cached).
    pass: HashMap<String, Instant>,
    /// Wake tags of sessions whose key is resolved (the driver drives them again).
    woken: Vec<u64>,
    purge_seen: u64,
    pub stats: std::sync::Arc<Stats>,
}

/// The cache key of a request: method class, scheme, host and target.
pub fn key(host: &[u8], target: &str) -> String {
    let mut k = String::with_capacity(host.len() + target.len() + 8);
    k.push_str("http://");
    k.push_str(&String::from_utf8_lossy(host).to_ascii_lowercase());
    k.push_str(target);
    k
}

/// A waiter gives up on a collapsed fetch after this long and goes to the origin itself.
pub const COLLAPSE_WAIT: Duration = Duration::from_secs(5);
/// How long a key whose response was not storable skips collapsing.
const PASS_FOR: Duration = Duration::from_secs(2);
/// A background refresh that has not finished after this long may be started again.
const REFRESH_RETRY: Duration = Duration::from_secs(10);

impl Cache {
    pub fn new(max_bytes: usize, max_entry: usize) -> Cache {
        let stats = std::sync::Arc::new(Stats::default());
        STATS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        Cache {
            max_bytes,
            max_entry,
            purge_seen: PURGE_SEQ.load(std::sync::atomic::Ordering::Acquire),
            stats,
            ..Cache::default()
        }
    }

    /// The same cache with new limits (a reload): entries, counters and the status slot are
    /// kept; entries over the new limits go.
    pub fn reconfigure(&mut self, max_bytes: usize, max_entry: usize) {
        self.max_bytes = max_bytes;
        self.max_entry = max_entry;
        if max_bytes == 0 {
            self.map.clear();
            self.bytes = 0;
        }
        self.map.retain(|_, l| {
            l.retain(|e| e.size() <= max_entry);
            !l.is_empty()
        });
        self.bytes = self.map.values().flatten().map(|e| e.charged).sum();
        self.evict();
        self.publish();
    }

    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.bytes.store(self.bytes as u64, Relaxed);
        self.stats.entries.store(self.len() as u64, Relaxed);
    }

    /// Applies purges posted since the last look (by any worker).
    fn apply_purges(&mut self) {
        let seq = PURGE_SEQ.load(std::sync::atomic::Ordering::Acquire);
        if seq == self.purge_seen {
            return;
        }
        let list = PURGES.lock().unwrap_or_else(|e| e.into_inner());
        let behind = list.first().is_some_and(|(s, _)| *s > self.purge_seen + 1);
        if behind {
            self.map.clear();
        } else {
            for (_, k) in list.iter().filter(|(s, _)| *s > self.purge_seen) {
                self.map.remove(k);
            }
        }
        self.purge_seen = list.last().map_or(seq, |(s, _)| *s);
        drop(list);
        self.bytes = self.map.values().flatten().map(|e| e.charged).sum();
        self.publish();
    }

    /// Whether this worker holds `key` (any variant), after applying posted purges.
    pub fn contains(&mut self, key: &str) -> bool {
        self.apply_purges();
        self.map.contains_key(key)
    }

    /// What to do for a request with `key` (its Vary fields given by `field`), at `now`.
    /// `get`: the request may fill the cache (GET); `collapse`: it may wait for another's
    /// fetch of the same key.
    pub fn lookup(
        &mut self,
        key: &str,
        field: &dyn Fn(&str) -> Option<Vec<u8>>,
        get: bool,
        collapse: bool,
        now: Instant,
    ) -> Lookup {
        self.apply_purges();
        let mut validators = None;
        if let Some(e) = self.get(key, field) {
            if e.fresh(now) {
                return Lookup::Hit;
            }
            if e.usable_while_revalidating(now) {
                let refresh = e
                    .refreshing
                    .is_none_or(|t| now.saturating_duration_since(t) > REFRESH_RETRY);
                if refresh && get {
                    e.refreshing = Some(now);
                }
                return Lookup::StaleRevalidate {
                    refresh: (refresh && get).then(|| e.validators()),
                };
            }
            validators = e.validators();
        }
        if get && self.max_bytes > 0 {
            if self.pass.get(key).is_some_and(|&t| now < t) {
                return Lookup::Fetch {
                    validators,
                    leader: false,
                };
            }
            match self.pending.get(key) {
                Some(p) if now.saturating_duration_since(p.since) < COLLAPSE_WAIT => {
                    if collapse {
                        return Lookup::Wait;
                    }
                    return Lookup::Fetch {
                        validators,
                        leader: false,
                    };
                }
                _ => {
                    self.pending.insert(
                        key.to_string(),
                        Pending {
                            since: now,
                            waiters: Vec::new(),
                        },
                    );
                    return Lookup::Fetch {
                        validators,
                        leader: true,
                    };
                }
            }
        }
        Lookup::Fetch {
            validators,
            leader: false,
        }
    }

    /// A session (wake tag `tag`) waits for the fetch of `key`.
    pub fn wait_for(&mut self, key: &str, tag: u64) {
        if let Some(p) = self.pending.get_mut(key) {
            p.waiters.push(tag);
        }
    }

    /// Whether a fetch for `key` is still in flight (a waiter keeps waiting).
    pub fn is_pending(&self, key: &str, now: Instant) -> bool {
        self.pending
            .get(key)
            .is_some_and(|p| now.saturating_duration_since(p.since) < COLLAPSE_WAIT)
    }

    /// The fetch of `key` ended (`stored`: its response is in the cache now): wake its
    /// waiters. One that could not be stored lets the next misses go to the origin in
    /// parallel for a while.
    pub fn resolve(&mut self, key: &str, stored: bool, now: Instant) {
        if let Some(p) = self.pending.remove(key) {
            self.woken.extend(p.waiters);
        }
        if !stored {
            if self.pass.len() > 4096 {
                self.pass.retain(|_, t| now < *t);
            }
            self.pass.insert(key.to_string(), now + PASS_FOR);
        } else {
            self.pass.remove(key);
        }
    }

    /// The fetch of `key` was abandoned (its client went away): wake its waiters, one of
    /// which fetches instead.
    pub fn release(&mut self, key: &str) {
        if let Some(p) = self.pending.remove(key) {
            self.woken.extend(p.waiters);
        }
    }

    /// The wake tags of sessions to drive again (their collapsed fetch ended); the driver
    /// takes them after each pass.
    pub fn take_woken(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.woken)
    }

    /// Whether any session waits to be woken.
    pub fn has_woken(&self) -> bool {
        !self.woken.is_empty()
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
    /// Returns whether it was stored.
    pub fn insert(&mut self, key: String, mut e: Entry) -> bool {
        let size = e.size();
        if self.max_bytes == 0 || size > self.max_entry || size > self.max_bytes {
            return false;
        }
        self.tick += 1;
        e.used = self.tick;
        e.charged = size;
        let list = self.map.entry(key).or_default();
        if let Some(i) = list.iter().position(|x| x.vary == e.vary) {
            self.bytes -= list[i].charged;
            list.swap_remove(i);
        }
        list.push(e);
        self.bytes += size;
        self.evict();
        self.publish();
        true
    }

    /// Least recently used out until the bytes fit.
    fn evict(&mut self) {
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
                self.bytes -= gone.charged;
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

/// Queues the answer to a request (`asked`: its conditional fields, and Range for a GET)
/// from `e`, by the static handler's rules (`conditional::decide`): 304, 412, 206 (one
/// range; several get the whole response), 416, or the whole response. Only a stored 200
/// answers conditions and ranges. Returns the status and the body bytes sent.
#[allow(clippy::too_many_arguments)]
pub fn render_asked(
    e: &Entry,
    tag: &str,
    now: Instant,
    asked: &crate::handler::conditional::Asked<'_>,
    head_only: bool,
    conn: ConnHeader,
    out: &mut OutQueue,
    pool: &mut BufPool,
) -> (u16, u64) {
    use crate::handler::conditional::{decide, http_date, Decision};
    let plain = asked.conds.if_match.is_none()
        && asked.conds.if_none_match.is_none()
        && asked.conds.if_modified_since.is_none()
        && asked.conds.if_unmodified_since.is_none()
        && asked.range.is_none();
    if plain || e.status != 200 {
        return render(e, tag, now, head_only, conn, out, pool);
    }
    let etag = e.field("etag").unwrap_or_default();
    // Without Last-Modified, the response's Date stands in (RFC 9111 §4.3.2); without
    // either, no date condition holds.
    let lm = e
        .field("last-modified")
        .or(e.field("date"))
        .and_then(http_date)
        .unwrap_or(i64::MAX);
    let len = e.body.len() as u64;
    type Keep = fn(&[u8]) -> bool;
    let (status, keep, body): (u16, Keep, Option<(u64, u64)>) = match decide(asked, etag, lm, len) {
        Decision::Full | Decision::Multi(_) => {
            return render(e, tag, now, head_only, conn, out, pool)
        }
        // RFC 9110 §15.4.5: the fields a 200 would have carried that matter to caches.
        Decision::NotModified => (304, not_modified_field, None),
        Decision::Failed => (412, |_| false, None),
        Decision::Unsatisfiable => (416, |_| false, None),
        Decision::Single(a, b) => (
            206,
            |n| !n.eq_ignore_ascii_case(b"content-length"),
            Some((a, b)),
        ),
    };
    let buf = out.bytes(pool);
    buf.extend_from_slice(b"HTTP/1.1 ");
    head::put_u64(buf, u64::from(status));
    buf.push(b' ');
    buf.extend_from_slice(head::reason(status).as_bytes());
    buf.extend_from_slice(b"\r\n");
    for (line, (n, _)) in lines(&e.fields).zip(fields_iter(&e.fields)) {
        if keep(n) || n.eq_ignore_ascii_case(b"date") {
            buf.extend_from_slice(line);
        }
    }
    head::header_u64(buf, "Age", e.age(now).as_secs());
    head::header(buf, "X-Cache", tag.as_bytes());
    let mut n = 0u64;
    match (status, body) {
        (206, Some((a, b))) => {
            buf.extend_from_slice(b"Content-Range: bytes ");
            head::put_u64(buf, a);
            buf.push(b'-');
            head::put_u64(buf, b);
            buf.push(b'/');
            head::put_u64(buf, len);
            buf.extend_from_slice(b"\r\n");
            n = b - a + 1;
            head::header_u64(buf, "Content-Length", n);
        }
        (416, _) => {
            buf.extend_from_slice(b"Content-Range: bytes */");
            head::put_u64(buf, len);
            buf.extend_from_slice(b"\r\n");
            head::header_u64(buf, "Content-Length", 0);
        }
        (304, _) => {}
        _ => head::header_u64(buf, "Content-Length", 0),
    }
    let at = buf.len();
    buf.extend_from_slice(conn.line());
    buf.extend_from_slice(b"\r\n");
    if let (Some((a, _)), false) = (body, head_only) {
        buf.extend_from_slice(&e.body[a as usize..(a + n) as usize]);
    } else {
        n = 0;
    }
    out.mark_conn(at, conn.line().len());
    out.end_response();
    (status, n)
}

fn not_modified_field(n: &[u8]) -> bool {
    [
        &b"etag"[..],
        b"cache-control",
        b"expires",
        b"vary",
        b"content-location",
        b"last-modified",
    ]
    .iter()
    .any(|x| n.eq_ignore_ascii_case(x))
}

/// The head of a request to revalidate a stored response: `head` (a request head without its
/// blank line) less the client's own conditional and Range fields, plus `validators`.
pub fn conditional_head(head: &[u8], validators: &[u8]) -> Vec<u8> {
    const DROP: [&[u8]; 6] = [
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    ];
    let mut h = Vec::with_capacity(head.len() + validators.len());
    let mut it = head.split_inclusive(|&b| b == b'\n');
    if let Some(first) = it.next() {
        h.extend_from_slice(first);
    }
    for line in it {
        let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(0)];
        if !DROP.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            h.extend_from_slice(line);
        }
    }
    h.extend_from_slice(validators);
    h
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
            store_set_cookie: false,
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
            refreshing: None,
            charged: 0,
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

    #[test]
    fn refresh_merges_the_304_fields() {
        let mut e = entry(3, Vec::new());
        e.fields = b"Date: a\r\nETag: W/\"x\"\r\nCache-Control: max-age=1\r\nX-A: 1\r\n".to_vec();
        let later = e.stored + Duration::from_secs(5);
        e.refresh(
            b"Date: b\r\nETag: \"x\"\r\nCache-Control: max-age=9\r\n",
            Some(Duration::from_secs(9)),
            later,
        );
        assert_eq!(e.field("date"), Some(&b"b"[..]));
        assert_eq!(
            e.field("etag"),
            Some(&b"W/\"x\""[..]),
            "ringd's weak tag stays"
        );
        assert_eq!(e.field("cache-control"), Some(&b"max-age=9"[..]));
        assert_eq!(e.field("x-a"), Some(&b"1"[..]));
        assert!(e.fresh(later + Duration::from_secs(8)));
        assert_eq!(
            e.validators().as_deref(),
            Some(&b"If-None-Match: W/\"x\"\r\n"[..])
        );
    }

    #[test]
    fn conditional_head_replaces_the_clients_conditions() {
        let h = conditional_head(
            b"GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"c\"\r\nRange: bytes=0-1\r\nX: y\r\n",
            b"If-None-Match: \"s\"\r\n",
        );
        assert_eq!(
            h,
            b"GET /a HTTP/1.1\r\nHost: h\r\nX: y\r\nIf-None-Match: \"s\"\r\n".to_vec()
        );
    }

    #[test]
    fn misses_collapse_onto_one_fetch() {
        let mut c = Cache::new(1 << 20, 1 << 16);
        let now = Instant::now();
        let none = |_: &str| None;
        assert_eq!(
            c.lookup("k", &none, true, true, now),
            Lookup::Fetch {
                validators: None,
                leader: true
            }
        );
        assert_eq!(c.lookup("k", &none, true, true, now), Lookup::Wait);
        c.wait_for("k", 7);
        assert!(c.is_pending("k", now));
        c.insert("k".into(), entry(5, Vec::new()));
        c.resolve("k", true, now);
        assert_eq!(c.take_woken(), vec![7]);
        assert_eq!(c.lookup("k", &none, true, true, now), Lookup::Hit);
        // Not storable: later misses go to the origin in parallel for a while.
        c.lookup("u", &none, true, true, now);
        c.resolve("u", false, now);
        for _ in 0..3 {
            assert!(matches!(
                c.lookup("u", &none, true, true, now),
                Lookup::Fetch { leader: false, .. }
            ));
        }
    }

    #[test]
    fn purges_reach_every_cache() {
        let mut a = Cache::new(1 << 20, 1 << 16);
        let mut b = Cache::new(1 << 20, 1 << 16);
        a.insert("purge-me".into(), entry(5, Vec::new()));
        b.insert("purge-me".into(), entry(5, Vec::new()));
        b.insert("keep-me".into(), entry(5, Vec::new()));
        purge_all("purge-me");
        assert!(!a.contains("purge-me"));
        assert!(!b.contains("purge-me"));
        assert!(b.contains("keep-me"));
        assert!(status_json().contains("\"hit_ratio\""));
    }
}

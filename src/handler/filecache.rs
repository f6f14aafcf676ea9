//! Per-worker open-file cache: for each request path, the file's metadata, its validators,
//! its pre-encoded `200` head, and either its bytes (small files) or an open fd (large ones),
//! plus the same for its precompressed sidecars. Trusted for `cache.valid`, then re-probed;
//! bounded in entries and bytes with clock (second-chance) eviction.

use std::collections::HashMap;
use std::ffi::CString;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::proto::head::{self, DATE_LEN};

use super::encoding::{Coding, CODINGS};
use super::fs::{self, Kind, Meta};
use super::resolve::{c_path, PathError};

/// Why a file could not be served, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("not found")]
    NotFound,
    #[error("permission denied")]
    Forbidden,
    /// EMFILE / ENFILE / ENOMEM: out of descriptors or memory; try again later.
    #[error("out of file descriptors: {0}")]
    Unavailable(io::Error),
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl ServeError {
    /// The same error again, for one more request (io::Error is not Clone; errno and kind
    /// are kept).
    pub fn again(&self) -> ServeError {
        let copy = |e: &io::Error| {
            e.raw_os_error()
                .map(io::Error::from_raw_os_error)
                .unwrap_or_else(|| io::Error::new(e.kind(), e.to_string()))
        };
        match self {
            ServeError::Path(p) => ServeError::Path(*p),
            ServeError::NotFound => ServeError::NotFound,
            ServeError::Forbidden => ServeError::Forbidden,
            ServeError::Unavailable(e) => ServeError::Unavailable(copy(e)),
            ServeError::Io(e) => ServeError::Io(copy(e)),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ServeError::Path(p) => p.status(),
            ServeError::NotFound => 404,
            ServeError::Forbidden => 403,
            ServeError::Unavailable(_) => 503,
            ServeError::Io(_) => 500,
        }
    }
}

impl From<io::Error> for ServeError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(
                libc::ENOENT
                | libc::ENOTDIR
                | libc::ELOOP
                | libc::EXDEV
                | libc::ENAMETOOLONG
                | libc::ENXIO
                | libc::ENODEV,
            ) => ServeError::NotFound,
            Some(libc::EACCES | libc::EPERM) => ServeError::Forbidden,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => {
                ServeError::Unavailable(e)
            }
            _ => ServeError::Io(e),
        }
    }
}

/// One representation of a file: the file itself or one precompressed sidecar.
#[derive(Debug)]
pub struct Rep {
    pub meta: Meta,
    /// Open fd for bodies served from the file (None when `body` holds the bytes).
    pub fd: Option<Arc<OwnedFd>>,
    /// The whole file, for files up to `cache.small_file_max`.
    pub body: Option<Box<[u8]>>,
    /// Quoted strong entity tag.
    pub etag: Box<[u8]>,
    pub last_modified: [u8; DATE_LEN],
    pub coding: Option<Coding>,
    /// Pre-encoded `200` head up to (not including) the Connection header and final CRLF.
    pub head: Vec<u8>,
    /// Offset of the Date value in `head`.
    pub date_at: usize,
}

impl Rep {
    pub fn size(&self) -> u64 {
        self.meta.size
    }
}

/// A cached path.
#[derive(Debug)]
pub struct Entry {
    pub identity: Rep,
    /// Sidecars in `CODINGS` order (br, zstd, gzip), when present and not larger.
    pub variants: [Option<Rep>; 3],
    pub content_type: Box<[u8]>,
    /// Some sidecar exists, so every response varies on Accept-Encoding.
    pub vary: bool,
    checked: Instant,
    referenced: bool,
    bytes: usize,
}

/// An open file and its metadata.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    pub meta: Meta,
}

/// The result of opening a request path: everything needed to build or revalidate an entry.
#[derive(Debug)]
pub struct Probe {
    ident: Opened,
    /// Last segment of the file served (for the Content-Type).
    name: Vec<u8>,
    sidecars: [Option<Opened>; 3],
}

/// What a request path turned out to be.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // built once per cache miss, moved straight into an entry
pub enum Found {
    File(Probe),
    /// A directory named without its trailing slash: redirect to the slash form.
    DirNoSlash,
}

/// The paths a request path needs opened, relative to the root: the file (or, for a URL
/// ending in `/`, its `index.html`) and its precompressed sidecars in [`CODINGS`] order.
#[derive(Debug)]
pub struct OpenPlan {
    pub paths: [CString; 4],
    dir_url: bool,
    /// Last segment of the file served (for the Content-Type).
    name: Vec<u8>,
}

/// The [`OpenPlan`] for the decoded relative path `rel`.
pub fn plan(rel: &[u8]) -> OpenPlan {
    let dir_url = rel.is_empty() || rel.ends_with(b"/");
    let index: &[u8] = if dir_url { b"index.html" } else { b"" };
    let mut cbuf = Vec::with_capacity(rel.len() + index.len() + 5);
    let mut file = rel.to_vec();
    file.extend_from_slice(index);
    let main = CString::from(c_path(&mut cbuf, rel, index));
    let side =
        |coding: Coding, cbuf: &mut Vec<u8>| CString::from(c_path(cbuf, &file, coding.suffix()));
    let paths = [
        main,
        side(CODINGS[0], &mut cbuf),
        side(CODINGS[1], &mut cbuf),
        side(CODINGS[2], &mut cbuf),
    ];
    let name = if dir_url {
        b"index.html".to_vec()
    } else {
        rel.rsplit(|&b| b == b'/').next().unwrap_or(rel).to_vec()
    };
    OpenPlan {
        paths,
        dir_url,
        name,
    }
}

/// Opens the file for the decoded relative path `rel` (a trailing slash means its
/// `index.html`) and its sidecars, synchronously.
pub fn probe(root: BorrowedFd<'_>, rel: &[u8], cfg: &Config) -> Result<Found, ServeError> {
    let plan = plan(rel);
    let follow = cfg.follow_symlinks;
    let ident = match check_main(&plan, fs::open_beneath(root, &plan.paths[0], follow))? {
        Some(o) => o,
        None => return Ok(Found::DirNoSlash),
    };
    let mut sidecars: [Option<Opened>; 3] = [None, None, None];
    for (slot, path) in sidecars.iter_mut().zip(&plan.paths[1..]) {
        *slot = check_sidecar(fs::open_beneath(root, path, follow), &ident.meta)?;
    }
    Ok(Found::File(Probe {
        ident,
        name: plan.name,
        sidecars,
    }))
}

/// The same as [`probe`] from files opened elsewhere (the uring driver's OpenAt2): `opened`
/// holds the results of opening `plan.paths`, in order, with the same flags as
/// [`fs::open_beneath`].
pub fn classify(plan: OpenPlan, opened: [io::Result<OwnedFd>; 4]) -> Result<Found, ServeError> {
    let [main, a, b, c] = opened;
    let ident = match check_main(&plan, main)? {
        Some(o) => o,
        None => return Ok(Found::DirNoSlash),
    };
    let sidecars = [
        check_sidecar(a, &ident.meta)?,
        check_sidecar(b, &ident.meta)?,
        check_sidecar(c, &ident.meta)?,
    ];
    Ok(Found::File(Probe {
        ident,
        name: plan.name,
        sidecars,
    }))
}

/// The opened main file if it is a regular file; None for a directory named without its
/// trailing slash (a redirect).
fn check_main(plan: &OpenPlan, opened: io::Result<OwnedFd>) -> Result<Option<Opened>, ServeError> {
    let fd = opened?;
    let meta = fs::fstat(fd.as_fd())?;
    match meta.kind {
        Kind::File => Ok(Some(Opened { fd, meta })),
        Kind::Dir if !plan.dir_url => Ok(None),
        Kind::Dir | Kind::Other => Err(ServeError::NotFound),
    }
}

/// A sidecar that exists, is a regular file and is not larger than the original.
fn check_sidecar(opened: io::Result<OwnedFd>, ident: &Meta) -> Result<Option<Opened>, ServeError> {
    let fd = match opened {
        Ok(fd) => fd,
        Err(e) => {
            return match ServeError::from(e) {
                ServeError::Unavailable(e) => Err(ServeError::Unavailable(e)),
                _ => Ok(None),
            }
        }
    };
    let meta = fs::fstat(fd.as_fd())?;
    Ok((meta.kind == Kind::File && meta.size <= ident.size).then_some(Opened { fd, meta }))
}

/// The representations of `probe` whose bodies [`build`] keeps in memory (and so reads):
/// `(which, fd, size)` with `which` 0 for the file itself and 1..=3 for its sidecars in
/// [`CODINGS`] order.
pub fn small_bodies<'a>(probe: &'a Probe, cfg: &Config) -> Vec<(usize, BorrowedFd<'a>, usize)> {
    std::iter::once(Some(&probe.ident))
        .chain(probe.sidecars.iter().map(Option::as_ref))
        .enumerate()
        .filter_map(|(i, o)| {
            let o = o?;
            (o.meta.size <= cfg.cache.small_file_max)
                .then(|| (i, o.fd.as_fd(), o.meta.size as usize))
        })
        .collect()
}

/// Whether `probe` found exactly the files `entry` was built from.
pub fn unchanged(entry: &Entry, probe: &Probe) -> bool {
    entry.identity.meta == probe.ident.meta
        && entry
            .variants
            .iter()
            .zip(&probe.sidecars)
            .all(|(v, s)| match (v, s) {
                (None, None) => true,
                (Some(v), Some(s)) => v.meta == s.meta,
                _ => false,
            })
}

/// Builds a cache entry: reads small bodies, keeps fds of large ones, encodes the heads.
/// `bodies[i]`, when given, is the already-read body of representation `i` (as numbered by
/// [`small_bodies`]); the others are read here.
pub fn build(
    probe: Probe,
    cfg: &Config,
    date: &[u8; DATE_LEN],
    now: Instant,
    bodies: [Option<Vec<u8>>; 4],
) -> io::Result<Entry> {
    let content_type = super::mime::content_type(&probe.name)
        .into_bytes()
        .into_boxed_slice();
    let vary = probe.sidecars.iter().any(Option::is_some);
    let mk = |o: Opened, coding: Option<Coding>, body: Option<Vec<u8>>| {
        make_rep(o, coding, cfg, &content_type, vary, date, body)
    };
    let [b0, b1, b2, b3] = bodies;
    let identity = mk(probe.ident, None, b0)?;
    let [a, b, c] = probe.sidecars;
    let variants = [
        a.map(|o| mk(o, Some(CODINGS[0]), b1)).transpose()?,
        b.map(|o| mk(o, Some(CODINGS[1]), b2)).transpose()?,
        c.map(|o| mk(o, Some(CODINGS[2]), b3)).transpose()?,
    ];
    let bytes = std::iter::once(&identity)
        .chain(variants.iter().flatten())
        .map(|r| r.head.len() + r.body.as_ref().map_or(0, |b| b.len()))
        .sum();
    Ok(Entry {
        identity,
        variants,
        content_type,
        vary,
        checked: now,
        referenced: true,
        bytes,
    })
}

fn make_rep(
    o: Opened,
    coding: Option<Coding>,
    cfg: &Config,
    content_type: &[u8],
    vary: bool,
    date: &[u8; DATE_LEN],
    body: Option<Vec<u8>>,
) -> io::Result<Rep> {
    let meta = o.meta;
    let mut etag = Vec::with_capacity(32);
    etag.push(b'"');
    head::put_hex(&mut etag, meta.mtime.max(0) as u64);
    etag.push(b'-');
    head::put_hex(&mut etag, meta.size);
    if let Some(c) = coding {
        etag.push(b'-');
        etag.extend_from_slice(c.token().as_bytes());
    }
    etag.push(b'"');
    let mut last_modified = [0u8; DATE_LEN];
    head::fmt_http_date(meta.mtime.max(0) as u64, &mut last_modified);

    let mut h = Vec::with_capacity(256);
    let date_at = head::start(&mut h, 200, date, &cfg.server_name);
    head::header(&mut h, "Content-Type", content_type);
    head::header_u64(&mut h, "Content-Length", meta.size);
    head::header(&mut h, "Last-Modified", &last_modified);
    head::header(&mut h, "ETag", &etag);
    h.extend_from_slice(b"Accept-Ranges: bytes\r\n");
    if let Some(c) = coding {
        head::header(&mut h, "Content-Encoding", c.token().as_bytes());
    }
    if vary {
        h.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }

    let (fd, body) = if meta.size <= cfg.cache.small_file_max {
        let body = match body {
            Some(b) if b.len() as u64 == meta.size => b,
            _ => fs::read_all(o.fd.as_fd(), meta.size as usize)?,
        };
        (None, Some(body.into_boxed_slice()))
    } else {
        (Some(Arc::new(o.fd)), None)
    };
    Ok(Rep {
        meta,
        fd,
        body,
        etag: etag.into_boxed_slice(),
        last_modified,
        coding,
        head: h,
        date_at,
    })
}

/// A fast multiplicative hash (FxHash) over 8-byte words, keyed with a per-cache random
/// seed so that request paths cannot be chosen to collide. Keys are short paths; SipHash
/// costs more than the rest of a cache hit.
#[derive(Clone, Copy, Debug)]
pub struct SeededFx(u64);

impl BuildHasher for SeededFx {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(self.0)
    }
}

impl SeededFx {
    fn random() -> SeededFx {
        // RandomState is seeded from the OS once per thread; borrow its randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        SeededFx(h.finish() | 1)
    }
}

pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 8 {
            let (w, rest) = bytes.split_at(8);
            self.add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
            bytes = rest;
        }
        let mut last = [0u8; 8];
        last[..bytes.len()].copy_from_slice(bytes);
        self.add(u64::from_le_bytes(last) ^ (bytes.len() as u64) << 56);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so the last word's bits reach the low bits the table uses.
        (self.0 ^ self.0 >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }
}

impl std::fmt::Debug for FxHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FxHasher")
    }
}

/// The cache itself: path → slot, slots swept by a clock hand for eviction.
#[derive(Debug)]
pub struct FileCache {
    map: HashMap<Box<[u8]>, usize, SeededFx>,
    slots: Vec<Option<(Box<[u8]>, Entry)>>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
    valid: Duration,
    max_entries: usize,
    max_bytes: usize,
}

impl FileCache {
    pub fn new(cfg: &Config) -> FileCache {
        FileCache {
            map: HashMap::with_hasher(SeededFx::random()),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
            valid: cfg.cache.valid,
            max_entries: cfg.cache.max_entries.max(1),
            max_bytes: cfg.cache.max_bytes,
        }
    }

    /// The slot for `key` and whether it is still within its validity window at `now`.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Option<(usize, bool)> {
        let &idx = self.map.get(key)?;
        let (_, e) = self.slots[idx].as_mut()?;
        e.referenced = true;
        let fresh = now.saturating_duration_since(e.checked) < self.valid;
        Some((idx, fresh))
    }

    pub fn get(&self, idx: usize) -> Option<&Entry> {
        self.slots.get(idx)?.as_ref().map(|(_, e)| e)
    }

    /// The entry at `idx` was found unchanged at `now`.
    pub fn revalidated(&mut self, idx: usize, now: Instant) {
        if let Some((_, e)) = self.slots.get_mut(idx).and_then(Option::as_mut) {
            e.checked = now;
        }
    }

    /// Number of cached paths.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes the entry at `idx`.
    pub fn remove(&mut self, idx: usize) {
        if let Some((key, e)) = self.slots.get_mut(idx).and_then(Option::take) {
            self.map.remove(&key);
            self.bytes -= e.bytes;
            self.free.push(idx);
        }
    }

    /// Caches `entry` under `key` (replacing any previous one), evicting as needed, and
    /// returns its slot. An entry larger than the whole byte budget evicts everything else
    /// and is itself evicted by the next insert.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> usize {
        if let Some(&idx) = self.map.get(key) {
            self.remove(idx);
        }
        while !self.map.is_empty()
            && (self.map.len() >= self.max_entries || self.bytes + entry.bytes > self.max_bytes)
        {
            self.evict_one();
        }
        self.bytes += entry.bytes;
        let key: Box<[u8]> = key.into();
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.map.insert(key.clone(), idx);
        self.slots[idx] = Some((key, entry));
        idx
    }

    /// Clock sweep: clear reference bits until an unreferenced entry is found; evict it.
    fn evict_one(&mut self) {
        let n = self.slots.len();
        for _ in 0..2 * n + 1 {
            self.hand = (self.hand + 1) % n;
            if let Some((_, e)) = self.slots[self.hand].as_mut() {
                if e.referenced {
                    e.referenced = false;
                } else {
                    let idx = self.hand;
                    self.remove(idx);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testdir::TempDir;

    const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn load(dir: &TempDir, rel: &[u8], cfg: &Config, now: Instant) -> Result<Entry, ServeError> {
        let root = dir.root_fd();
        match probe(root.as_fd(), rel, cfg)? {
            Found::File(p) => Ok(build(p, cfg, DATE, now, Default::default())?),
            Found::DirNoSlash => Err(ServeError::NotFound),
        }
    }

    #[test]
    fn small_and_large_files() {
        let dir = TempDir::new("cache-build");
        dir.write("s.txt", b"small");
        dir.write("big.bin", &[7u8; 100]);
        let cfg = Config {
            cache: crate::config::CacheConfig {
                small_file_max: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let now = Instant::now();
        let s = load(&dir, b"s.txt", &cfg, now).unwrap();
        assert_eq!(s.identity.body.as_deref(), Some(&b"small"[..]));
        assert!(s.identity.fd.is_none() && !s.vary);
        let head = String::from_utf8(s.identity.head.clone()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"));
        assert!(head.contains("Accept-Ranges: bytes\r\n") && head.ends_with("\r\n"));
        assert_eq!(&s.identity.head[s.identity.date_at..][..DATE_LEN], DATE);
        let b = load(&dir, b"big.bin", &cfg, now).unwrap();
        assert!(b.identity.body.is_none() && b.identity.fd.is_some());
    }

    #[test]
    fn directories_and_sidecars() {
        let dir = TempDir::new("cache-dir");
        dir.write("d/index.html", b"<p>hello hello hello</p>");
        dir.write("d/index.html.gz", b"gz");
        dir.write("d/index.html.br", &[b'x'; 100]); // larger than the original: ignored
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let cfg = Config::default();
        let root = dir.root_fd();
        let now = Instant::now();
        assert!(matches!(
            probe(root.as_fd(), b"d", &cfg),
            Ok(Found::DirNoSlash)
        ));
        assert!(matches!(
            probe(root.as_fd(), b"empty/", &cfg),
            Err(ServeError::NotFound)
        ));
        let e = load(&dir, b"d/", &cfg, now).unwrap();
        assert_eq!(&*e.content_type, b"text/html; charset=utf-8");
        assert!(e.vary && e.variants[0].is_none() && e.variants[1].is_none());
        let gz = e.variants[2].as_ref().unwrap();
        assert_eq!(gz.body.as_deref(), Some(&b"gz"[..]));
        assert!(String::from_utf8_lossy(&gz.head).contains("Content-Encoding: gzip\r\n"));
        assert_ne!(gz.etag, e.identity.etag);
    }

    #[test]
    fn revalidation_sees_changes() {
        let dir = TempDir::new("cache-reval");
        dir.write("f", b"one");
        let cfg = Config::default();
        let root = dir.root_fd();
        let now = Instant::now();
        let e = load(&dir, b"f", &cfg, now).unwrap();
        let Found::File(p) = probe(root.as_fd(), b"f", &cfg).unwrap() else {
            panic!()
        };
        assert!(unchanged(&e, &p));
        dir.write("f", b"three");
        let Found::File(p) = probe(root.as_fd(), b"f", &cfg).unwrap() else {
            panic!()
        };
        assert!(!unchanged(&e, &p));
        dir.write("f.zst", b"z");
        let Found::File(p) = probe(root.as_fd(), b"f", &cfg).unwrap() else {
            panic!()
        };
        let e2 = build(p, &cfg, DATE, now, Default::default()).unwrap();
        assert!(e2.vary && e2.variants[1].is_some());
    }

    #[test]
    fn bounded_with_clock_eviction() {
        let dir = TempDir::new("cache-evict");
        let cfg = Config {
            cache: crate::config::CacheConfig {
                max_entries: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let now = Instant::now();
        let mut c = FileCache::new(&cfg);
        for i in 0..5 {
            let name = format!("f{i}");
            dir.write(&name, b"x");
            let e = load(&dir, name.as_bytes(), &cfg, now).unwrap();
            c.insert(name.as_bytes(), e);
            assert!(c.len() <= 3);
            // keep f0 hot
            assert!(c.lookup(b"f0", now).is_some(), "f0 evicted at {i}");
        }
        assert_eq!(c.len(), 3);
        let (_, fresh) = c.lookup(b"f0", now).unwrap();
        assert!(fresh);
        let (_, fresh) = c.lookup(b"f0", now + Duration::from_secs(2)).unwrap();
        assert!(!fresh);
    }

    #[test]
    fn errno_maps_to_status() {
        let st = |e: i32| ServeError::from(io::Error::from_raw_os_error(e)).status();
        assert_eq!(st(libc::EMFILE), 503);
        assert_eq!(st(libc::ENFILE), 503);
        assert_eq!(st(libc::ENOENT), 404);
        assert_eq!(st(libc::EXDEV), 404); // RESOLVE_BENEATH escape
        assert_eq!(st(libc::ELOOP), 404); // symlink refused
        assert_eq!(st(libc::EACCES), 403);
        assert_eq!(st(libc::EIO), 500);
    }

    #[test]
    fn byte_budget() {
        let dir = TempDir::new("cache-bytes");
        dir.write("a", &[1u8; 600]);
        dir.write("b", &[2u8; 600]);
        let cfg = Config {
            cache: crate::config::CacheConfig {
                max_bytes: 1500,
                ..Default::default()
            },
            ..Default::default()
        };
        let now = Instant::now();
        let mut c = FileCache::new(&cfg);
        c.insert(b"a", load(&dir, b"a", &cfg, now).unwrap());
        c.insert(b"b", load(&dir, b"b", &cfg, now).unwrap());
        assert_eq!(c.len(), 1);
    }
}

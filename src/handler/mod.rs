//! Static files: path resolution confined to the root, conditional requests, ranges,
//! precompressed variants, per-worker open-file cache. `Files::respond` turns one parsed
//! request into queued output.

pub mod conditional;
pub mod encoding;
pub mod filecache;
pub mod fs;
pub mod listing;
pub mod mime;
pub mod range;
pub mod render;
pub mod resolve;
#[cfg(test)]
pub(crate) mod testdir;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::config::sites::HeaderEdit;
use crate::config::Config;
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::head::{self, ConnHeader, DATE_LEN};
use crate::proto::parse::{Method, Request};

use conditional::{Conditions, Decision};
use filecache::{FileCache, Found, OpenPlan, Probe, ServeError};

/// What a response was, for the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub status: u16,
    /// Body bytes (0 for HEAD).
    pub body_bytes: u64,
}

/// Where a response goes and what it is stamped with.
pub struct Reply<'a> {
    pub out: &'a mut OutQueue,
    pub pool: &'a mut BufPool,
    pub date: &'a [u8; DATE_LEN],
    pub conn: ConnHeader,
    /// Header changes the matched routes ask for, applied to whatever response is rendered.
    pub edit: Option<std::sync::Arc<HeaderEdit>>,
}

impl Reply<'_> {
    /// A small plain-text response (`404 Not Found\n`) with `extra` header lines.
    pub fn simple(&mut self, server: &str, status: u16, extra: &[u8], head_only: bool) -> Sent {
        if self.edit.is_some() && status < 400 {
            let mut body = Vec::with_capacity(32);
            head::put_u64(&mut body, u64::from(status));
            body.push(b' ');
            body.extend_from_slice(head::reason(status).as_bytes());
            body.push(b'\n');
            let mut hdrs = b"Content-Type: text/plain; charset=utf-8\r\n".to_vec();
            hdrs.extend_from_slice(extra);
            return self.text(server, status, &hdrs, &body, head_only);
        }
        let buf = self.out.bytes(self.pool);
        let (body_bytes, at) =
            head::simple(buf, status, self.date, server, extra, self.conn, head_only);
        self.out.mark_conn(at, self.conn.line().len());
        self.out.end_response();
        Sent { status, body_bytes }
    }

    /// A response with header lines `extra` (each ending in CRLF) and `body` (none for HEAD
    /// and for statuses that never carry one).
    pub fn text(
        &mut self,
        server: &str,
        status: u16,
        extra: &[u8],
        body: &[u8],
        head_only: bool,
    ) -> Sent {
        let no_body = head_only || status == 204 || status == 304;
        let buf = self.out.bytes(self.pool);
        let start = buf.len();
        head::start(buf, status, self.date, server);
        if status != 204 && status != 304 {
            head::header_u64(buf, "Content-Length", body.len() as u64);
        }
        buf.extend_from_slice(extra);
        // As nginx's add_header: route header changes go on successes and redirects, never
        // on errors (a year of `immutable` on a 404 would outlive the fix).
        if let (Some(e), true) = (&self.edit, status < 400) {
            head::apply_edit(buf, start, e);
        }
        let at = buf.len();
        buf.extend_from_slice(self.conn.line());
        buf.extend_from_slice(b"\r\n");
        if !no_body {
            buf.extend_from_slice(body);
        }
        self.out.mark_conn(at, self.conn.line().len());
        self.out.end_response();
        Sent {
            status,
            body_bytes: if no_body { 0 } else { body.len() as u64 },
        }
    }
}

/// How a request path resolved against a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A file (or a folder's index file): cache entry index.
    Entry(usize),
    /// A folder asked for without its trailing slash.
    DirNoSlash,
    /// Not served, with this status (404, 403, 400, 503, 500).
    Error(u16),
}

/// A request that must wait for the driver to open files; the job's key.
pub use crate::router::Park;

/// Cache and job keys: the root's index (2 bytes, big-endian), then the URL path.
pub const KEY_ROOT_LEN: usize = 2;

/// The static-file handler of one worker.
#[derive(Debug)]
pub struct Files {
    /// `O_PATH` fds of the served roots (`Sites::roots`), shared read-only by the workers.
    roots: Roots,
    cfg: Config,
    cache: FileCache,
    /// Scratch: the decoded request path.
    path: Vec<u8>,
    /// Multipart boundaries are numbered.
    boundaries: u64,
    /// Asynchronous opening (the uring driver): a request whose path needs opening or
    /// revalidating is parked instead of opening files on the loop; the driver runs the opens
    /// ([`Files::take_wanted`] … [`Files::finish`]) and resumes it.
    async_open: bool,
    /// URL paths with an open job under way (so a second request waits for the same job).
    jobs: HashSet<Box<[u8]>>,
    /// URL paths whose job the driver has yet to start.
    wanted: Vec<Box<[u8]>>,
    /// Finished jobs that cached nothing (a redirect or an error), kept for `cache.valid` as a
    /// negative cache: the requests that waited on them, and those that try several paths in
    /// turn (`try_files`, index names, error pages), find the answer without a new job.
    outcomes: HashMap<Box<[u8]>, (Outcome, Instant)>,
    /// Scratch: a cache key.
    key: Vec<u8>,
    /// Roots replaced by a reload, kept open while open jobs may still use their fds.
    retired: Vec<Roots>,
    /// The latest `now` seen by a job's end (outcomes are stamped with it).
    now_hint: Instant,
}

/// The root folders, opened `O_PATH | O_DIRECTORY`, in `Sites::roots` order.
pub type Roots = std::sync::Arc<[OwnedFd]>;

/// Most negative-cache entries a worker keeps before it drops them all.
pub const MAX_OUTCOMES: usize = 4096;

/// How a path resolved inside `Files`.
enum Resolved {
    Entry(usize),
    Redirect,
    Parked,
}

/// A finished open job that left nothing in the cache.
#[derive(Debug)]
enum Outcome {
    Redirect,
    Error(ServeError),
}

/// What an open job needs next, after its files were opened.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // once per open job, moved straight into the job
pub enum AfterOpen {
    /// Nothing: the result is in place and the waiting requests can go on.
    Done,
    /// The bodies that the cache keeps in memory must be read first (`(which, fd, size)`,
    /// see [`filecache::small_bodies`]); then [`Files::finish`] with them.
    Read(Probe, Vec<(usize, RawFd, usize)>),
}

impl Files {
    pub fn new(cfg: &Config, roots: Roots) -> Files {
        Files {
            roots,
            cfg: cfg.clone(),
            cache: FileCache::new(cfg),
            path: Vec::new(),
            boundaries: 0,
            async_open: false,
            jobs: HashSet::new(),
            wanted: Vec::new(),
            outcomes: HashMap::new(),
            key: Vec::new(),
            retired: Vec::new(),
            now_hint: Instant::now(),
        }
    }

    /// A reload: serve from `roots` (new `Sites::roots`) with `cfg` from now on. Cached
    /// entries are dropped (root indices may mean other folders now); the old root fds stay
    /// open until no open job can be using them.
    pub fn reload(&mut self, cfg: &Config, roots: Roots) {
        let old = std::mem::replace(&mut self.roots, roots);
        if !self.jobs.is_empty() {
            self.retired.push(old);
        }
        self.cfg = cfg.clone();
        self.cache = FileCache::new(cfg);
        self.outcomes.clear();
    }

    /// The Server header value.
    pub fn server_name(&self) -> &str {
        &self.cfg.server_name
    }

    /// Resolves URL path `path` beneath root `root`: a cache entry, a redirect to the
    /// folder's slash form, or an error status; parks when files must be opened first.
    pub fn lookup(&mut self, root: usize, path: &str, now: Instant) -> Result<Lookup, Park> {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.extend_from_slice(&(root as u16).to_be_bytes());
        key.extend_from_slice(path.as_bytes());
        let r = match self.resolve(&key, now) {
            Ok(Resolved::Entry(idx)) => Ok(Lookup::Entry(idx)),
            Ok(Resolved::Redirect) => Ok(Lookup::DirNoSlash),
            Ok(Resolved::Parked) => Err(Park(key.as_slice().into())),
            Err(e) => Ok(Lookup::Error(e.status())),
        };
        self.key = key;
        r
    }

    /// Static files of root `root` for a GET or HEAD of `path` (`query` with its `?`): the
    /// file, a redirect to the folder's slash form, or the error.
    pub fn respond_static(
        &mut self,
        root: usize,
        path: &str,
        query: &str,
        req: &Request<'_>,
        reply: &mut Reply<'_>,
        now: Instant,
    ) -> Result<Sent, Park> {
        let head_only = req.method == Method::Head;
        Ok(match self.lookup(root, path, now)? {
            Lookup::Entry(idx) => self.serve(idx, req, reply),
            Lookup::DirNoSlash => {
                let mut extra = b"Location: ".to_vec();
                extra.extend_from_slice(path.as_bytes());
                extra.push(b'/');
                extra.extend_from_slice(query.as_bytes());
                extra.extend_from_slice(b"\r\n");
                reply.simple(&self.cfg.server_name, 301, &extra, head_only)
            }
            Lookup::Error(status) => reply.simple(&self.cfg.server_name, status, b"", head_only),
        })
    }

    /// Answers `req` (GET or HEAD) from cache entry `idx` (conditionals, ranges, encodings).
    pub fn serve_entry(&mut self, idx: usize, req: &Request<'_>, reply: &mut Reply<'_>) -> Sent {
        self.serve(idx, req, reply)
    }

    /// Cache entry `idx` as the body of an error response with `status` (error pages).
    pub fn serve_entry_as(
        &mut self,
        idx: usize,
        status: u16,
        head_only: bool,
        reply: &mut Reply<'_>,
    ) -> Sent {
        match self.cache.get(idx) {
            Some(entry) => render::full_as(&entry.identity, status, reply, head_only),
            None => reply.simple(&self.cfg.server_name, status, b"", head_only),
        }
    }

    /// The `O_PATH` fd of root `root`, for listings.
    pub fn root(&self, root: usize) -> Option<BorrowedFd<'_>> {
        self.roots.get(root).map(|f| f.as_fd())
    }

    /// Whether dotfiles are served (listings hide them otherwise).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Answers `req` from cache entry `idx`.
    fn serve(&mut self, idx: usize, req: &Request<'_>, reply: &mut Reply<'_>) -> Sent {
        let head_only = req.method == Method::Head;
        let Some(entry) = self.cache.get(idx) else {
            return reply.simple(&self.cfg.server_name, 500, b"", head_only);
        };
        let server = &self.cfg.server_name;
        let mut rep = &entry.identity;
        if entry.vary {
            if let Some(ae) = &req.fields.accept_encoding {
                let avail = [0, 1, 2].map(|i| entry.variants[i].is_some());
                if let Some(i) = encoding::choose(encoding::weights(ae), avail) {
                    rep = entry.variants[i].as_ref().unwrap_or(rep);
                }
            }
        }
        let f = &req.fields;
        let asked = conditional::Asked {
            conds: Conditions {
                if_match: f.if_match.as_deref(),
                if_none_match: f.if_none_match.as_deref(),
                if_modified_since: f.if_modified_since,
                if_unmodified_since: f.if_unmodified_since,
            },
            // Range is defined for GET only (RFC 9110 §14.2); HEAD gets the 200 headers.
            range: f.range.filter(|_| req.method == Method::Get),
            if_range: f.if_range,
        };
        let ct = &entry.content_type;
        match conditional::decide(&asked, &rep.etag, rep.meta.mtime, rep.size()) {
            Decision::Full => {}
            Decision::NotModified => return render::not_modified(rep, entry.vary, server, reply),
            Decision::Failed => return reply.simple(server, 412, b"", head_only),
            Decision::Single(a, b) => {
                return render::partial(rep, ct, entry.vary, server, a, b, reply)
            }
            Decision::Multi(v) => {
                self.boundaries = self.boundaries.wrapping_add(1);
                let seq = self.boundaries;
                return render::multipart(rep, ct, entry.vary, server, &v, seq, reply);
            }
            Decision::Unsatisfiable => return render::unsatisfiable(rep, server, reply),
        }
        render::full(rep, reply, head_only)
    }

    /// Finds (or loads, or revalidates) the cache entry for `key` (root index + URL path).
    fn resolve(&mut self, key: &[u8], now: Instant) -> Result<Resolved, ServeError> {
        self.now_hint = now;
        let stale = match self.cache.lookup(key, now) {
            Some((idx, true)) => return Ok(Resolved::Entry(idx)),
            Some((idx, false)) => Some(idx),
            None => None,
        };
        if self.async_open {
            match self.outcomes.get(key) {
                Some((o, t)) if now < *t + self.cfg.cache.valid => {
                    return match o {
                        Outcome::Redirect => Ok(Resolved::Redirect),
                        Outcome::Error(e) => Err(e.again()),
                    }
                }
                _ => {}
            }
            if !self.jobs.contains(key) {
                self.jobs.insert(key.into());
                self.wanted.push(key.into());
            }
            return Ok(Resolved::Parked);
        }
        let (root, path) = split_key(key);
        resolve::decode(path, self.cfg.serve_dotfiles, &mut self.path)?;
        let Some(root) = self.roots.get(root) else {
            return Err(ServeError::NotFound);
        };
        let found = filecache::probe(root.as_fd(), &self.path, &self.cfg);
        self.settle(key, stale, found, [None, None, None, None], now)
    }

    /// Puts what opening `key` found into the cache (or revalidates the stale entry `stale`).
    fn settle(
        &mut self,
        key: &[u8],
        stale: Option<usize>,
        found: Result<Found, ServeError>,
        bodies: [Option<Vec<u8>>; 4],
        now: Instant,
    ) -> Result<Resolved, ServeError> {
        let probe = match found {
            Ok(Found::File(p)) => p,
            Ok(Found::DirNoSlash) => {
                if let Some(idx) = stale {
                    self.cache.remove(idx);
                }
                return Ok(Resolved::Redirect);
            }
            // Out of fds: keep serving what we have. With asynchronous opening, for another
            // validity window: the requests resumed after this job would otherwise find the
            // entry stale again and start job after job while the shortage lasts.
            Err(ServeError::Unavailable(e)) => {
                return match stale {
                    Some(idx) => {
                        if self.async_open {
                            self.cache.revalidated(idx, now);
                        }
                        Ok(Resolved::Entry(idx))
                    }
                    None => Err(ServeError::Unavailable(e)),
                }
            }
            Err(e) => {
                if let Some(idx) = stale {
                    self.cache.remove(idx);
                }
                return Err(e);
            }
        };
        if let Some(idx) = stale {
            if self
                .cache
                .get(idx)
                .is_some_and(|e| filecache::unchanged(e, &probe))
            {
                self.cache.revalidated(idx, now);
                return Ok(Resolved::Entry(idx));
            }
        }
        let date = [0u8; DATE_LEN]; // patched in per response
        let entry = filecache::build(probe, &self.cfg, &date, now, bodies)?;
        Ok(Resolved::Entry(self.cache.insert(key, entry)))
    }

    /// Turn on asynchronous opening (see [`Files::respond`]).
    pub fn set_async_open(&mut self, on: bool) {
        self.async_open = on;
    }

    /// The root (an `O_PATH` directory fd) job `key` opens beneath, for the driver's OpenAt2.
    pub fn root_fd(&self, key: &[u8]) -> RawFd {
        let (root, _) = split_key(key);
        self.roots.get(root).map_or(-1, |f| f.as_raw_fd())
    }

    /// Whether the open job for `key` is still to finish (queued or running). A request that
    /// parked on a job that has already finished (refused at once while its waiters were not
    /// noted yet) must be resumed by its driver, not left waiting.
    pub fn job_pending(&self, key: &[u8]) -> bool {
        self.jobs.contains(key)
    }

    /// The next URL path whose open job the driver should start.
    pub fn take_wanted(&mut self) -> Option<Box<[u8]>> {
        self.wanted.pop()
    }

    /// What to open for job `key`; None when the path is refused without opening anything
    /// (the job is then finished: resume its requests).
    pub fn open_plan(&mut self, key: &[u8]) -> Option<OpenPlan> {
        let (_, path) = split_key(key);
        match resolve::decode(path, self.cfg.serve_dotfiles, &mut self.path) {
            Ok(()) => Some(filecache::plan(&self.path)),
            Err(e) => {
                self.end_job(key, Err(ServeError::from(e)));
                None
            }
        }
    }

    /// Job `key`'s files are open (`opened`: the results for `plan.paths`, in order).
    pub fn opened(
        &mut self,
        key: &[u8],
        plan: OpenPlan,
        opened: [io::Result<OwnedFd>; 4],
        now: Instant,
    ) -> AfterOpen {
        match filecache::classify(plan, opened) {
            Ok(Found::File(probe)) => {
                // Unchanged files need no reading: revalidate without it.
                let same = self
                    .cache
                    .lookup(key, now)
                    .and_then(|(idx, _)| self.cache.get(idx))
                    .is_some_and(|e| filecache::unchanged(e, &probe));
                let reads: Vec<(usize, RawFd, usize)> = if same {
                    Vec::new()
                } else {
                    filecache::small_bodies(&probe, &self.cfg)
                        .into_iter()
                        .map(|(i, fd, n)| (i, fd.as_raw_fd(), n))
                        .collect()
                };
                if reads.is_empty() {
                    self.finish(key, Ok(Found::File(probe)), Default::default(), now);
                    AfterOpen::Done
                } else {
                    AfterOpen::Read(probe, reads)
                }
            }
            other => {
                self.finish(key, other, Default::default(), now);
                AfterOpen::Done
            }
        }
    }

    /// Job `key` is complete: cache what it found (with the bodies it read, indexed as in
    /// [`AfterOpen::Read`]), or keep the redirect or error for the requests that waited.
    pub fn finish(
        &mut self,
        key: &[u8],
        found: Result<Found, ServeError>,
        bodies: [Option<Vec<u8>>; 4],
        now: Instant,
    ) {
        self.now_hint = now;
        let stale = self.cache.lookup(key, now).map(|(idx, _)| idx);
        let res = self.settle(key, stale, found, bodies, now);
        self.end_job(key, res);
    }

    fn end_job(&mut self, key: &[u8], res: Result<Resolved, ServeError>) {
        self.jobs.remove(key);
        if self.jobs.is_empty() {
            self.retired.clear();
        }
        let outcome = match res {
            Ok(Resolved::Entry(_)) | Ok(Resolved::Parked) => return,
            Ok(Resolved::Redirect) => Outcome::Redirect,
            Err(e) => Outcome::Error(e),
        };
        if self.outcomes.len() >= MAX_OUTCOMES {
            self.outcomes.clear();
        }
        self.outcomes.insert(key.into(), (outcome, self.now_hint));
    }

    /// The requests that waited on job `key` have been answered. Its outcome stays cached
    /// for `cache.valid` (see `outcomes`); this only drops outcomes that have expired.
    pub fn forget_outcome(&mut self, _key: &[u8]) {
        if self.outcomes.len() >= MAX_OUTCOMES / 2 {
            let valid = self.cfg.cache.valid;
            let now = self.now_hint;
            self.outcomes.retain(|_, (_, t)| now < *t + valid);
        }
    }
}

/// A cache/job key's root index and URL path.
pub fn split_key(key: &[u8]) -> (usize, &str) {
    if key.len() < KEY_ROOT_LEN {
        return (usize::MAX, "");
    }
    let root = usize::from(u16::from_be_bytes([key[0], key[1]]));
    (
        root,
        std::str::from_utf8(&key[KEY_ROOT_LEN..]).unwrap_or(""),
    )
}

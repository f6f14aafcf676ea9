//! Static files: path resolution confined to the root, conditional requests, ranges,
//! precompressed variants, per-worker open-file cache. `Files::respond` turns one parsed
//! request into queued output.

pub mod conditional;
pub mod encoding;
pub mod filecache;
pub mod fs;
pub mod mime;
pub mod range;
pub mod render;
pub mod resolve;
#[cfg(test)]
pub(crate) mod testdir;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::config::Config;
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::head::{self, ConnHeader, DATE_LEN};
use crate::proto::parse::{Method, Request};

use conditional::{Conditions, Precondition};
use filecache::{FileCache, Found, OpenPlan, Probe, ServeError};
use range::Ranges;

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
}

impl Reply<'_> {
    /// A small plain-text response with `extra` header lines.
    pub fn simple(&mut self, server: &str, status: u16, extra: &[u8], head_only: bool) -> Sent {
        let buf = self.out.bytes(self.pool);
        let (body_bytes, at) =
            head::simple(buf, status, self.date, server, extra, self.conn, head_only);
        self.out.mark_conn(at, self.conn.line().len());
        self.out.end_response();
        Sent { status, body_bytes }
    }
}

/// The static-file handler of one worker.
#[derive(Debug)]
pub struct Files {
    root: OwnedFd,
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
    /// Finished jobs that cached nothing (a redirect or an error), kept for the requests that
    /// waited on them until the driver has resumed those ([`Files::forget_outcome`]).
    outcomes: HashMap<Box<[u8]>, Outcome>,
}

/// How a request path resolved.
enum Lookup {
    Entry(usize),
    Redirect,
    /// Parked: the path needs opening; the request waits for the driver.
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
    pub fn new(cfg: &Config, root: OwnedFd) -> Files {
        Files {
            root,
            cfg: cfg.clone(),
            cache: FileCache::new(cfg),
            path: Vec::new(),
            boundaries: 0,
            async_open: false,
            jobs: HashSet::new(),
            wanted: Vec::new(),
            outcomes: HashMap::new(),
        }
    }

    /// Answers `req` (GET, HEAD, or a method that gets 405/501) into `reply`. Returns None,
    /// with nothing queued, when the request is parked (asynchronous opening, and its file must
    /// be opened or revalidated): ask again once the driver has finished the path's open job.
    pub fn respond(
        &mut self,
        req: &Request<'_>,
        reply: &mut Reply<'_>,
        now: Instant,
    ) -> Option<Sent> {
        let head_only = req.method == Method::Head;
        let server = &self.cfg.server_name;
        match req.method {
            Method::Get | Method::Head => {}
            Method::Other => {
                return Some(reply.simple(server, 405, b"Allow: GET, HEAD\r\n", false))
            }
            Method::Unknown => return Some(reply.simple(server, 501, b"", false)),
        }
        let idx = match self.lookup(req.path(), now) {
            Ok(Lookup::Entry(idx)) => idx,
            Ok(Lookup::Parked) => return None,
            Ok(Lookup::Redirect) => {
                let mut extra = b"Location: ".to_vec();
                extra.extend_from_slice(req.path().as_bytes());
                extra.push(b'/');
                extra.extend_from_slice(req.query().as_bytes());
                extra.extend_from_slice(b"\r\n");
                return Some(reply.simple(&self.cfg.server_name, 301, &extra, head_only));
            }
            Err(e) => return Some(reply.simple(&self.cfg.server_name, e.status(), b"", head_only)),
        };
        Some(self.serve(idx, req, reply))
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
        let conds = Conditions {
            if_match: f.if_match.as_deref(),
            if_none_match: f.if_none_match.as_deref(),
            if_modified_since: f.if_modified_since,
            if_unmodified_since: f.if_unmodified_since,
        };
        match conditional::evaluate(&conds, &rep.etag, rep.meta.mtime, true) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                return render::not_modified(rep, entry.vary, server, reply)
            }
            Precondition::Failed => return reply.simple(server, 412, b"", head_only),
        }
        // Range is defined for GET only (RFC 9110 §14.2); HEAD gets the 200 headers.
        if let (Method::Get, Some(r)) = (req.method, f.range) {
            let honour = f
                .if_range
                .is_none_or(|ir| conditional::if_range_holds(ir, &rep.etag, rep.meta.mtime));
            if honour {
                let ct = &entry.content_type;
                match range::evaluate(r, rep.size()) {
                    Ranges::Full => {}
                    Ranges::Single(a, b) => {
                        return render::partial(rep, ct, entry.vary, server, a, b, reply)
                    }
                    Ranges::Multi(v) => {
                        self.boundaries = self.boundaries.wrapping_add(1);
                        let seq = self.boundaries;
                        return render::multipart(rep, ct, entry.vary, server, &v, seq, reply);
                    }
                    Ranges::Unsatisfiable => return render::unsatisfiable(rep, server, reply),
                }
            }
        }
        render::full(rep, reply, head_only)
    }

    /// Finds (or loads, or revalidates) the cache entry for URL path `path`.
    fn lookup(&mut self, path: &str, now: Instant) -> Result<Lookup, ServeError> {
        let stale = match self.cache.lookup(path.as_bytes(), now) {
            Some((idx, true)) => return Ok(Lookup::Entry(idx)),
            Some((idx, false)) => Some(idx),
            None => None,
        };
        if self.async_open {
            match self.outcomes.get(path.as_bytes()) {
                Some(Outcome::Redirect) => return Ok(Lookup::Redirect),
                Some(Outcome::Error(e)) => return Err(e.again()),
                None => {}
            }
            if !self.jobs.contains(path.as_bytes()) {
                self.jobs.insert(path.as_bytes().into());
                self.wanted.push(path.as_bytes().into());
            }
            return Ok(Lookup::Parked);
        }
        resolve::decode(path, self.cfg.serve_dotfiles, &mut self.path)?;
        let found = filecache::probe(self.root.as_fd(), &self.path, &self.cfg);
        self.settle(path.as_bytes(), stale, found, [None, None, None, None], now)
    }

    /// Puts what opening `key` found into the cache (or revalidates the stale entry `stale`).
    fn settle(
        &mut self,
        key: &[u8],
        stale: Option<usize>,
        found: Result<Found, ServeError>,
        bodies: [Option<Vec<u8>>; 4],
        now: Instant,
    ) -> Result<Lookup, ServeError> {
        let probe = match found {
            Ok(Found::File(p)) => p,
            Ok(Found::DirNoSlash) => {
                if let Some(idx) = stale {
                    self.cache.remove(idx);
                }
                return Ok(Lookup::Redirect);
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
                        Ok(Lookup::Entry(idx))
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
                return Ok(Lookup::Entry(idx));
            }
        }
        let date = [0u8; DATE_LEN]; // patched in per response
        let entry = filecache::build(probe, &self.cfg, &date, now, bodies)?;
        Ok(Lookup::Entry(self.cache.insert(key, entry)))
    }

    /// Turn on asynchronous opening (see [`Files::respond`]).
    pub fn set_async_open(&mut self, on: bool) {
        self.async_open = on;
    }

    /// The served root (an `O_PATH` directory fd), for the driver's OpenAt2.
    pub fn root_fd(&self) -> RawFd {
        self.root.as_raw_fd()
    }

    /// The next URL path whose open job the driver should start.
    pub fn take_wanted(&mut self) -> Option<Box<[u8]>> {
        self.wanted.pop()
    }

    /// What to open for job `key`; None when the path is refused without opening anything
    /// (the job is then finished: resume its requests).
    pub fn open_plan(&mut self, key: &[u8]) -> Option<OpenPlan> {
        let path = std::str::from_utf8(key).unwrap_or("");
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
        let stale = self.cache.lookup(key, now).map(|(idx, _)| idx);
        let res = self.settle(key, stale, found, bodies, now);
        self.end_job(key, res);
    }

    fn end_job(&mut self, key: &[u8], res: Result<Lookup, ServeError>) {
        self.jobs.remove(key);
        match res {
            Ok(Lookup::Entry(_)) | Ok(Lookup::Parked) => {}
            Ok(Lookup::Redirect) => {
                self.outcomes.insert(key.into(), Outcome::Redirect);
            }
            Err(e) => {
                self.outcomes.insert(key.into(), Outcome::Error(e));
            }
        }
    }

    /// The requests that waited on job `key` have been answered: drop its outcome.
    pub fn forget_outcome(&mut self, key: &[u8]) {
        self.outcomes.remove(key);
    }
}

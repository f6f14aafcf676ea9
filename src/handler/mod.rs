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

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use crate::config::Config;
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::head::{self, ConnHeader, DATE_LEN};
use crate::proto::parse::{Method, Request};

use conditional::{Conditions, Precondition};
use filecache::{FileCache, Found, ServeError};
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
    /// Scratch: NUL-terminated paths for openat2.
    cbuf: Vec<u8>,
    /// Multipart boundaries are numbered.
    boundaries: u64,
}

/// How a request path resolved.
enum Lookup {
    Entry(usize),
    Redirect,
}

impl Files {
    pub fn new(cfg: &Config, root: OwnedFd) -> Files {
        Files {
            root,
            cfg: cfg.clone(),
            cache: FileCache::new(cfg),
            path: Vec::new(),
            cbuf: Vec::new(),
            boundaries: 0,
        }
    }

    /// Answers `req` (GET, HEAD, or a method that gets 405/501) into `reply`.
    pub fn respond(&mut self, req: &Request<'_>, reply: &mut Reply<'_>, now: Instant) -> Sent {
        let head_only = req.method == Method::Head;
        match req.method {
            Method::Get | Method::Head => {}
            Method::Other => {
                return reply.simple(&self.cfg.server_name, 405, b"Allow: GET, HEAD\r\n", false)
            }
            Method::Unknown => return reply.simple(&self.cfg.server_name, 501, b"", false),
        }
        let idx = match self.lookup(req.path(), now) {
            Ok(Lookup::Entry(idx)) => idx,
            Ok(Lookup::Redirect) => {
                let mut extra = b"Location: ".to_vec();
                extra.extend_from_slice(req.path().as_bytes());
                extra.push(b'/');
                extra.extend_from_slice(req.query().as_bytes());
                extra.extend_from_slice(b"\r\n");
                return reply.simple(&self.cfg.server_name, 301, &extra, head_only);
            }
            Err(e) => return reply.simple(&self.cfg.server_name, e.status(), b"", head_only),
        };
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
        resolve::decode(path, self.cfg.serve_dotfiles, &mut self.path)?;
        let probe = match filecache::probe(self.root.as_fd(), &self.path, &self.cfg, &mut self.cbuf)
        {
            Ok(Found::File(p)) => p,
            Ok(Found::DirNoSlash) => {
                if let Some(idx) = stale {
                    self.cache.remove(idx);
                }
                return Ok(Lookup::Redirect);
            }
            // Out of fds: keep serving what we have.
            Err(ServeError::Unavailable(e)) => {
                return match stale {
                    Some(idx) => Ok(Lookup::Entry(idx)),
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
        let entry = filecache::build(probe, &self.cfg, &date, now)?;
        Ok(Lookup::Entry(self.cache.insert(path.as_bytes(), entry)))
    }
}

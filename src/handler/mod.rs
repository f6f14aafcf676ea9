//! Static files: path resolution confined to the root, conditional requests, ranges,
//! precompressed variants, per-worker open-file cache. `Files::respond` turns one parsed
//! request into queued output.

pub mod encoding;
pub mod filecache;
pub mod fs;
pub mod mime;
pub mod resolve;
#[cfg(test)]
pub(crate) mod testdir;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use crate::config::Config;
use crate::proto::conn::{BufPool, OutQueue};
use crate::proto::head::{self, ConnHeader, DATE_LEN};
use crate::proto::parse::{Method, Request};

use filecache::{FileCache, Found, Rep, ServeError};

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
        let mut rep = &entry.identity;
        if entry.vary {
            if let Some(ae) = &req.fields.accept_encoding {
                let avail = [0, 1, 2].map(|i| entry.variants[i].is_some());
                if let Some(i) = encoding::choose(encoding::weights(ae), avail) {
                    rep = entry.variants[i].as_ref().unwrap_or(rep);
                }
            }
        }
        full(rep, reply, head_only)
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

/// A full `200` of `rep` from its pre-encoded head: copy, stamp the Date, add the connection
/// header, then the body (copied when cached in memory, else a file range).
fn full(rep: &Rep, reply: &mut Reply<'_>, head_only: bool) -> Sent {
    let buf = reply.out.bytes(reply.pool);
    let start = buf.len();
    buf.extend_from_slice(&rep.head);
    let at = start + rep.date_at;
    buf[at..at + DATE_LEN].copy_from_slice(reply.date);
    let conn_at = buf.len();
    buf.extend_from_slice(reply.conn.line());
    buf.extend_from_slice(b"\r\n");
    if !head_only {
        if let Some(body) = &rep.body {
            buf.extend_from_slice(body);
        }
    }
    reply.out.mark_conn(conn_at, reply.conn.line().len());
    if let (false, Some(fd)) = (head_only, &rep.fd) {
        reply.out.file(fd, 0, rep.size());
    }
    reply.out.end_response();
    Sent {
        status: 200,
        body_bytes: if head_only { 0 } else { rep.size() },
    }
}

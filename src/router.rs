//! Host → site, path → route, compiled once per config: a hash map of exact host names, a
//! table of wildcard suffixes (longest first) and the `_` site; per site one matcher for all
//! its routes (exact paths in a hash map, prefixes in a byte trie, regexes in one `RegexSet`),
//! so a request costs one host lookup and one match however many routes there are. A regex
//! anchored with a literal start (`^/user/…`) is gated by that literal in a second trie: it
//! runs only on paths that start so, and the `RegexSet` holds only the regexes without one.
//!
//! `Router::answer` then runs the matched routes in file order: modifiers (headers) gather,
//! the first route with a handler answers (redirect, respond, rewrite → match again,
//! try_files, static files with listings and error pages). Sans-IO: files come from `Files`
//! (which may park the request while the driver opens them), output goes to a `Reply`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use regex::{Regex, RegexSet};

use crate::config::sites::{
    Action, HeaderEdit, HostPattern, Part, PathPattern, Proxy, Redirect, Respond, Route, Site,
    Sites, Template, MAX_REWRITES,
};
use crate::gateway::{self, cgi, proxy, wsgi};
use crate::handler::{listing, Files, Lookup, Reply, Sent};
use crate::proto::parse::{Method, Request};

/// Marker for "no site" / "no route" in `Answered`.
pub const NONE: u16 = u16::MAX;

/// A request answered: what was sent, and which site and route did it (for the access log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub sent: Sent,
    pub site: u16,
    pub route: u16,
}

/// The request waits on the driver to open files (asynchronous opening); the key names the job.
pub struct Park(pub Box<[u8]>);

/// Why a request is not answered yet.
pub enum Wait {
    /// On an open job (see [`Park`]).
    Park(Box<[u8]>),
    /// On an upstream: the proxy exchange to start, and the site and route (for the log).
    Proxy(Box<proxy::Start>, u16, u16),
    /// On a CGI script: the exchange's settings and the script to spawn.
    Cgi(Box<(proxy::Start, cgi::Spawn)>, u16, u16),
    /// On a WSGI app: the exchange's settings and the call to queue.
    Wsgi(Box<(proxy::Start, wsgi::Call)>, u16, u16),
}

impl Wait {
    /// The exchange settings and the site and route of a gateway wait (proxy, CGI, WSGI):
    /// what the cache in front of every source looks at. None for a park.
    pub fn gateway_mut(&mut self) -> Option<(&mut proxy::Start, u16, u16)> {
        match self {
            Wait::Park(_) => None,
            Wait::Proxy(start, site, route) => Some((start, *site, *route)),
            Wait::Cgi(both, site, route) => Some((&mut both.0, *site, *route)),
            Wait::Wsgi(both, site, route) => Some((&mut both.0, *site, *route)),
        }
    }
}

impl From<Park> for Wait {
    fn from(p: Park) -> Wait {
        Wait::Park(p.0)
    }
}

/// FNV-1a: a fast hash for the router's maps. They are built from the config and only
/// looked up afterwards, so request bytes can never fill them (no hash flooding to defend).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// One site's route matcher.
#[derive(Clone, Debug, Default)]
struct SiteMatcher {
    exact: FastMap<Box<str>, Vec<u16>>,
    trie: Trie,
    /// Regex routes anchored with a literal start, keyed by that literal.
    gated: Trie,
    /// The regexes without such a start, matched together.
    set: Option<RegexSet>,
    /// For each pattern of `set`, its route.
    set_routes: Vec<u16>,
    /// Per route: its regex (for captures), if it is a regex route.
    regexes: Vec<Option<Regex>>,
}

/// A byte trie of route prefixes: walking a path collects every route whose prefix it starts
/// with, in one pass over the path's bytes.
#[derive(Clone, Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Sorted by byte.
    next: Vec<(u8, u32)>,
    routes: Vec<u16>,
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], route: u16) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for &b in prefix {
            at = match self.nodes[at].next.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => self.nodes[at].next[i].1 as usize,
                Err(i) => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    self.nodes[at].next.insert(i, (b, n));
                    n as usize
                }
            };
        }
        self.nodes[at].routes.push(route);
    }

    fn walk(&self, path: &[u8], out: &mut Vec<u16>) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        out.extend_from_slice(&node.routes);
        for &b in path {
            match node.next.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => node = &self.nodes[node.next[i].1 as usize],
                Err(_) => return,
            }
            out.extend_from_slice(&node.routes);
        }
    }
}

/// The compiled routing of one config, owned by one worker.
#[derive(Debug)]
pub struct Router {
    sites: Arc<Sites>,
    hosts: FastMap<Box<[u8]>, u16>,
    /// Wildcard suffixes (with their leading dot) → site.
    wild: FastMap<Box<[u8]>, u16>,
    default: Option<u16>,
    matchers: Vec<SiteMatcher>,
    /// Flag-only form: one default site, no routes, no options: static files straight away.
    plain: bool,
    /// Scratch: the Host lower-cased; route indices matched.
    host_buf: Vec<u8>,
    hits: Vec<u16>,
}

impl Clone for Router {
    /// A deep copy (each worker gets its own regex caches).
    fn clone(&self) -> Router {
        Router {
            sites: self.sites.clone(),
            hosts: self.hosts.clone(),
            wild: self.wild.clone(),
            default: self.default,
            matchers: self.matchers.clone(),
            plain: self.plain,
            host_buf: Vec::new(),
            hits: Vec::new(),
        }
    }
}

/// What the request looks like to routing while it is being rewritten: borrowed from the
/// request until a rewrite makes it new (no allocation for a request no route rewrites).
struct Target<'a> {
    path: Cow<'a, str>,
    /// Without its `?`.
    query: Cow<'a, str>,
}

/// Placeholder values of the route that matched.
struct Vars<'a> {
    path: &'a str,
    query: &'a str,
    host: &'a str,
    star: &'a str,
    caps: Option<regex::Captures<'a>>,
}

impl Template {
    /// The template with `vars` filled in.
    fn expand(&self, vars: &Vars<'_>) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Path => s.push_str(vars.path),
                Part::Query => s.push_str(vars.query),
                Part::Host => s.push_str(vars.host),
                Part::Star => s.push_str(vars.star),
                Part::Index(i) => {
                    if let Some(m) = vars.caps.as_ref().and_then(|c| c.get(*i)) {
                        s.push_str(m.as_str());
                    }
                }
                Part::Name(n) => {
                    if let Some(m) = vars.caps.as_ref().and_then(|c| c.name(n)) {
                        s.push_str(m.as_str());
                    }
                }
            }
        }
        s
    }
}

impl Router {
    /// Compiles `sites` (already validated: every regex compiles).
    pub fn new(sites: Arc<Sites>) -> Router {
        let mut hosts = FastMap::default();
        let mut wild = FastMap::default();
        let mut default = None;
        let mut matchers = Vec::new();
        for (i, site) in sites.sites.iter().enumerate() {
            let i = i as u16;
            for h in &site.hosts {
                match h {
                    HostPattern::Exact(n) => {
                        hosts.insert(n.as_bytes().into(), i);
                    }
                    HostPattern::Wildcard(s) => {
                        wild.insert(s.as_bytes().into(), i);
                    }
                    HostPattern::Default => default = Some(i),
                }
            }
            matchers.push(compile_site(site));
        }
        let plain = sites.implicit
            && sites.sites.len() == 1
            && sites.sites[0].routes.is_empty()
            && sites.sites[0].errors.is_empty()
            && !sites.sites[0].browse
            && sites.sites[0].headers.is_none()
            && sites.sites[0].index == ["index.html"]
            && sites.sites[0].fallback.is_none();
        Router {
            sites,
            hosts,
            wild,
            default,
            matchers,
            plain,
            host_buf: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// The sites this router was compiled from.
    pub fn sites(&self) -> &Arc<Sites> {
        &self.sites
    }

    /// The site for a Host value (port ignored, case-insensitive): exact names, then the
    /// longest wildcard suffix, then `_`.
    pub fn site_for(&mut self, host: Option<&[u8]>) -> Option<u16> {
        let Some(h) = host else {
            return self.default;
        };
        let h = strip_port(h);
        self.host_buf.clear();
        self.host_buf.extend(h.iter().map(u8::to_ascii_lowercase));
        if let Some(dot) = self.host_buf.strip_suffix(b".") {
            // `example.test.` is the same name (fully qualified).
            let n = dot.len();
            self.host_buf.truncate(n);
        }
        if let Some(&i) = self.hosts.get(self.host_buf.as_slice()) {
            return Some(i);
        }
        if !self.wild.is_empty() {
            // Each suffix that starts at a dot, longest first; one label at least stays before
            // it: `*.a.test` matches `x.a.test` and `x.y.a.test`, not `a.test`.
            for (i, &b) in self.host_buf.iter().enumerate().skip(1) {
                if b == b'.' {
                    if let Some(&site) = self.wild.get(&self.host_buf[i..]) {
                        return Some(site);
                    }
                }
            }
        }
        self.default
    }

    /// The routes of `site` whose pattern matches `path`, in file order (method not checked).
    pub fn matching(&mut self, site: u16, path: &str) -> &[u16] {
        self.hits.clear();
        let m = &self.matchers[usize::from(site)];
        if let Some(v) = m.exact.get(path) {
            self.hits.extend_from_slice(v);
        }
        m.trie.walk(path.as_bytes(), &mut self.hits);
        let before = self.hits.len();
        m.gated.walk(path.as_bytes(), &mut self.hits);
        let mut i = before;
        while i < self.hits.len() {
            let ri = usize::from(self.hits[i]);
            if m.regexes[ri].as_ref().is_some_and(|re| re.is_match(path)) {
                i += 1;
            } else {
                self.hits.swap_remove(i);
            }
        }
        if let Some(set) = &m.set {
            for i in set.matches(path).iter() {
                self.hits.push(m.set_routes[i]);
            }
        }
        if self.hits.len() > 1 {
            self.hits.sort_unstable();
            self.hits.dedup();
        }
        &self.hits
    }

    /// Which site and route would answer a request (no rewrite followed): the routing
    /// decision alone, for benchmarks and diagnostics. The route is `NONE` when no route with
    /// a handler matches (the site's own answer or files).
    pub fn decide(&mut self, host: Option<&[u8]>, method: &str, path: &str) -> Option<(u16, u16)> {
        let si = self.site_for(host)?;
        self.matching(si, path);
        let site = &self.sites.sites[usize::from(si)];
        for &ri in &self.hits {
            let r = &site.routes[usize::from(ri)];
            if r.methods
                .as_ref()
                .is_some_and(|m| !m.iter().any(|x| x == method))
            {
                continue;
            }
            if r.action.is_some() {
                return Some((si, ri));
            }
        }
        Some((si, NONE))
    }

    /// Whether `req`'s body is to be streamed to its source as it arrives: the first route
    /// that takes it (no rewrite before it) runs a WSGI app or proxies to a group with
    /// `buffer_requests = false`, and the method is not GET or HEAD (which a cache may answer
    /// without the source).
    pub fn streams_body(&mut self, req: &Request<'_>) -> bool {
        if self.plain || matches!(req.method, Method::Get | Method::Head) {
            return false;
        }
        let host = request_host(req);
        let Some((si, ri)) = self.decide(host, req.method_str, req.path()) else {
            return false;
        };
        let sites = &self.sites;
        let route = sites
            .sites
            .get(usize::from(si))
            .and_then(|s| s.routes.get(usize::from(ri)));
        match route.and_then(|r| r.action.as_ref()) {
            Some(Action::Proxy(p)) => sites
                .upstreams
                .get(p.upstream)
                .is_some_and(|u| !u.buffer_requests),
            // An app reads `wsgi.input` as the body arrives (PEP 3333).
            Some(Action::Wsgi(_)) => true,
            _ => false,
        }
    }

    /// Answers `req` into `reply`, or parks it on an open job.
    pub fn answer(
        &mut self,
        files: &mut Files,
        req: &Request<'_>,
        peer_addr: std::net::SocketAddr,
        reply: &mut Reply<'_>,
        now: Instant,
    ) -> Result<Answered, Wait> {
        let peer = peer_addr.ip();
        if self.plain {
            return match req.method {
                Method::Get | Method::Head => {
                    let path = req.path();
                    let sent = files.respond_static(0, path, req.query(), req, reply, now)?;
                    Ok(Answered {
                        sent,
                        site: 0,
                        route: NONE,
                    })
                }
                _ => Ok(Answered {
                    sent: method_not_allowed(files, req, reply),
                    site: 0,
                    route: NONE,
                }),
            };
        }
        let host = request_host(req);
        let Some(si) = self.site_for(host) else {
            let head = req.method == Method::Head;
            let server = files.server_name().to_string();
            return Ok(Answered {
                sent: reply.text(&server, 421, b"", b"unknown host\n", head),
                site: NONE,
                route: NONE,
            });
        };
        let sites = self.sites.clone();
        let site = &sites.sites[usize::from(si)];
        let mut edit = site.headers.clone();
        let mut target = Target {
            path: Cow::Borrowed(req.path()),
            query: Cow::Borrowed(req.query().strip_prefix('?').unwrap_or("")),
        };
        let host_str = host.and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
        // The route that rewrote the request last, for the log when no route answers it.
        let mut via = NONE;
        for _ in 0..=MAX_REWRITES {
            // The scratch list itself, taken while the loop reads it and put back after (no
            // copy per request).
            self.matching(si, &target.path);
            let hits = std::mem::take(&mut self.hits);
            let mut acted = None;
            for &ri in &hits {
                let route = &site.routes[usize::from(ri)];
                if let Some(m) = &route.methods {
                    if !m.iter().any(|x| x == req.method_str) {
                        continue;
                    }
                }
                if let Some(h) = &route.headers {
                    match &mut edit {
                        None => edit = Some(h.clone()),
                        Some(e) => Arc::make_mut(e).then(h),
                    }
                }
                if let Some(a) = &route.action {
                    acted = Some((ri, route, a));
                    break;
                }
            }
            self.hits = hits;
            let Some((ri, route, action)) = acted else {
                // No route handled it: the site's own answer, or its static files.
                reply.edit = edit.clone();
                let sent = match site_default(files, site, &target, host_str, req, reply, now)? {
                    Some(sent) => sent,
                    None => {
                        // No file: the site's fallback upstream (`--proxy`).
                        let p = site.fallback.as_ref().expect("None only with a fallback");
                        let start = proxy_start(&sites, p, &target, host, req, peer, None);
                        return Err(Wait::Proxy(start, si, via));
                    }
                };
                return Ok(Answered {
                    sent,
                    site: si,
                    route: via,
                });
            };
            let vars = self.vars(si, ri, route, &target, host_str);
            reply.edit = edit.clone();
            let sent = match action {
                Action::Redirect(r) => redirect(files, r, &vars, &target, req, reply),
                Action::Respond(r) => respond(files, r, req, reply),
                Action::Rewrite(t) => {
                    let new = t.expand(&vars);
                    target = rewritten(new, t.has_query, &target);
                    via = ri;
                    continue;
                }
                Action::TryFiles(cands) => {
                    let mut found = None;
                    let root = site.root;
                    let (last, firsts) = cands.split_last().expect("validated: not empty");
                    for c in firsts {
                        let cand = c.expand(&vars);
                        let (p, _) = cand.split_once('?').unwrap_or((&cand, ""));
                        if let Some(root) = root {
                            if let Lookup::Entry(idx) = files.lookup(root, p, now)? {
                                found = Some((root, idx));
                                break;
                            }
                        }
                    }
                    match found {
                        Some((_, idx)) => files.serve_entry(idx, req, reply),
                        None => {
                            let new = last.expand(&vars);
                            target = rewritten(new, last.has_query, &target);
                            via = ri;
                            continue;
                        }
                    }
                }
                Action::Static { root, browse } => {
                    let root = root.or(site.root);
                    let browse = browse.unwrap_or(site.browse);
                    static_files(files, site, root, browse, &target, req, reply, now)?
                }
                Action::Proxy(p) => {
                    // A tunnel (a request that may upgrade) is neither cached nor compressed.
                    let cache = if proxy::may_upgrade(req) {
                        None
                    } else {
                        cache_intent(route.cache, host_str, &target, req)
                    };
                    // A GET or HEAD the cache may answer: the upstream request head is built
                    // only if it goes upstream after all (`Start::deferred_head`).
                    let defer = cache.as_ref().is_some_and(|c| c.get || c.purge)
                        || (cache.is_some() && req.method == Method::Head);
                    let edit = p.headers.as_deref();
                    let mut start = if defer {
                        proxy_start_deferred(&sites, p, &target, host, req, peer, edit)
                    } else {
                        proxy_start(&sites, p, &target, host, req, peer, edit)
                    };
                    start.cache = cache;
                    if !start.upgrade {
                        set_compress(&mut start, route, req);
                    }
                    return Err(Wait::Proxy(start, si, ri));
                }
                Action::Cgi(c) => {
                    let prefix = match &route.pattern {
                        PathPattern::Prefix(p) => p.len(),
                        _ => 0,
                    };
                    // The prefix ends in `/`: the script's part starts with it.
                    let cut = prefix.saturating_sub(1);
                    let rest = target.path.get(cut..).unwrap_or("");
                    match cgi::find_script(&c.dir, rest) {
                        Ok((program, script, info)) => {
                            let script_name = format!("{}{}", &target.path[..cut], script);
                            let root = site.root.and_then(|r| sites.roots.get(r));
                            let server = files.server_name().to_string();
                            let port = files.config().listen.port();
                            let mut env = cgi::env(
                                req,
                                0,
                                &script_name,
                                &info,
                                &program,
                                root.map(|p| p.as_path()),
                                peer_addr,
                                port,
                                host_str,
                                &server,
                            );
                            // A rewrite may have changed the query.
                            if let Some(q) = env.iter_mut().find(|(k, _)| k == "QUERY_STRING") {
                                q.1 = target.query.as_bytes().to_vec();
                            }
                            let cwd = program.parent().map_or(c.dir.clone(), Path::to_path_buf);
                            let spawn = cgi::Spawn {
                                name: script_name,
                                program,
                                cwd,
                                env,
                                timeout: c.timeout,
                            };
                            let mut start = cgi_start(req, c.timeout);
                            start.cache = cache_intent(route.cache, host_str, &target, req);
                            set_compress(&mut start, route, req);
                            return Err(Wait::Cgi(Box::new((start, spawn)), si, ri));
                        }
                        Err(e) => {
                            let head = req.method == Method::Head;
                            reply.simple(files.server_name(), e.status(), b"", head)
                        }
                    }
                }
                Action::Wsgi(w) => {
                    // A prefix route mounts the app there: SCRIPT_NAME is the prefix.
                    let script_name = match &route.pattern {
                        PathPattern::Prefix(p) => p.trim_end_matches('/'),
                        _ => "",
                    };
                    let script_name = if target.path.starts_with(script_name) {
                        script_name
                    } else {
                        ""
                    };
                    let call = wsgi::call(
                        w.app.clone(),
                        req,
                        script_name,
                        &target.path,
                        &target.query,
                        peer_addr,
                        files.config().listen.port(),
                        host_str,
                    );
                    let mut start = cgi_start(req, w.timeout);
                    start.cache = cache_intent(route.cache, host_str, &target, req);
                    set_compress(&mut start, route, req);
                    return Err(Wait::Wsgi(Box::new((start, call)), si, ri));
                }
            };
            return Ok(Answered {
                sent,
                site: si,
                route: ri,
            });
        }
        // Rewritten more than MAX_REWRITES times: a loop in the config.
        let server = files.server_name().to_string();
        Ok(Answered {
            sent: reply.simple(&server, 500, b"", req.method == Method::Head),
            site: si,
            route: NONE,
        })
    }

    fn vars<'a>(
        &'a self,
        si: u16,
        ri: u16,
        route: &Route,
        target: &'a Target,
        host: &'a str,
    ) -> Vars<'a> {
        let star = match &route.pattern {
            PathPattern::Prefix(p) => target.path.get(p.len()..).unwrap_or(""),
            _ => "",
        };
        let caps = self.matchers[usize::from(si)].regexes[usize::from(ri)]
            .as_ref()
            .and_then(|re| re.captures(&target.path));
        Vars {
            path: &target.path,
            query: &target.query,
            host,
            star,
            caps,
        }
    }
}

fn compile_site(site: &Site) -> SiteMatcher {
    let mut m = SiteMatcher::default();
    let mut patterns = Vec::new();
    for (i, r) in site.routes.iter().enumerate() {
        let i = i as u16;
        let mut re = None;
        match &r.pattern {
            PathPattern::Exact(p) => m.exact.entry(p.as_str().into()).or_default().push(i),
            PathPattern::Prefix(p) => m.trie.insert(p.as_bytes(), i),
            PathPattern::Regex(rx) => {
                match literal_start(rx) {
                    Some(lit) => m.gated.insert(lit.as_bytes(), i),
                    None => {
                        patterns.push(rx.clone());
                        m.set_routes.push(i);
                    }
                }
                re = Regex::new(rx).ok();
            }
        }
        m.regexes.push(re);
    }
    if !patterns.is_empty() {
        m.set = RegexSet::new(&patterns).ok();
    }
    m
}

/// The literal every match of `rx` starts with, when `rx` is anchored (`^`) and begins with
/// plain characters: `^/user/(\d+)$` → `/user/`. None when there is no such start (or it is
/// followed by a quantifier or an alternation, which could make it optional).
fn literal_start(rx: &str) -> Option<String> {
    let rest = rx.strip_prefix('^')?;
    if rest.contains('|') {
        return None;
    }
    let meta = |c: char| "\\.+*?()[]{}^$|".contains(c);
    let mut lit: String = rest.chars().take_while(|&c| !meta(c)).collect();
    // A quantifier right after the literal applies to its last character.
    if let Some(next) = rest[lit.len()..].chars().next() {
        if "*?{".contains(next) {
            lit.pop();
        }
    }
    (!lit.is_empty()).then_some(lit)
}

/// The authority the request names: an absolute-form target's (RFC 9112 §3.2.2: it wins
/// over Host), else the Host field.
fn request_host<'a>(req: &Request<'a>) -> Option<&'a [u8]> {
    let t = req.target.as_bytes();
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() > scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
    }
    req.fields.host
}

/// `example.test:8080` → `example.test`; `[::1]:8080` → `[::1]`.
fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        return match h.iter().position(|&b| b == b']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.iter().rposition(|&b| b == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

/// A rewrite's result: its path and (when the template has `?`) its query.
fn rewritten<'a>(new: String, has_query: bool, old: &Target<'a>) -> Target<'a> {
    match new.split_once('?') {
        Some((p, q)) if has_query => Target {
            path: Cow::Owned(p.to_string()),
            query: Cow::Owned(q.to_string()),
        },
        _ => Target {
            path: Cow::Owned(new),
            query: old.query.clone(),
        },
    }
}

fn method_not_allowed(files: &Files, req: &Request<'_>, reply: &mut Reply<'_>) -> Sent {
    let server = files.server_name();
    match req.method {
        Method::Unknown => reply.simple(server, 501, b"", false),
        _ => reply.simple(server, 405, b"Allow: GET, HEAD\r\n", false),
    }
}

fn redirect(
    files: &Files,
    r: &Redirect,
    vars: &Vars<'_>,
    target: &Target,
    req: &Request<'_>,
    reply: &mut Reply<'_>,
) -> Sent {
    let mut loc = r.to.expand(vars);
    if !r.to.has_query && !target.query.is_empty() {
        loc.push('?');
        loc.push_str(&target.query);
    }
    // Placeholders carry request bytes: never let one end the header line.
    loc.retain(|c| c != '\r' && c != '\n' && c != '\0');
    // A template that names a path on this site (`/new/{*}`, `/{1}`) must not become a
    // scheme-relative URL (`//evil.test/`) because the request's part began with a slash:
    // that would redirect to another host (an open redirect). Extra leading slashes (or
    // backslashes, which browsers read as slashes) collapse into one.
    let local = matches!(r.to.parts.first(), Some(Part::Lit(l)) if l.starts_with('/') && !l.starts_with("//"));
    if local {
        let rest = loc.trim_start_matches(['/', '\\']);
        if rest.len() + 1 < loc.len() {
            loc = format!("/{rest}");
        }
    }
    let mut extra = Vec::with_capacity(loc.len() + 12);
    extra.extend_from_slice(b"Location: ");
    extra.extend_from_slice(loc.as_bytes());
    extra.extend_from_slice(b"\r\n");
    reply.simple(
        files.server_name(),
        r.status,
        &extra,
        req.method == Method::Head,
    )
}

fn respond(files: &Files, r: &Respond, req: &Request<'_>, reply: &mut Reply<'_>) -> Sent {
    reply.text(
        files.server_name(),
        r.status,
        &r.headers,
        &r.body,
        req.method == Method::Head,
    )
}

/// No route handled the request: the site's `respond`, `redirect`, or static files.
fn site_default(
    files: &mut Files,
    site: &Site,
    target: &Target,
    host: &str,
    req: &Request<'_>,
    reply: &mut Reply<'_>,
    now: Instant,
) -> Result<Option<Sent>, Park> {
    if let Some(r) = &site.respond {
        return Ok(Some(respond(files, r, req, reply)));
    }
    if let Some(r) = &site.redirect {
        let vars = Vars {
            path: &target.path,
            query: &target.query,
            host,
            star: "",
            caps: None,
        };
        return Ok(Some(redirect(files, r, &vars, target, req, reply)));
    }
    if site.fallback.is_some() {
        // Files that exist are served; anything else goes to the upstream.
        let Some(root) = site.root else {
            return Ok(None);
        };
        return Ok(match files.lookup(root, &target.path, now)? {
            Lookup::Entry(idx) if matches!(req.method, Method::Get | Method::Head) => {
                Some(files.serve_entry(idx, req, reply))
            }
            _ => None,
        });
    }
    static_files(files, site, site.root, site.browse, target, req, reply, now).map(Some)
}

/// The exchange settings of a CGI request.
fn cgi_start(req: &Request<'_>, timeout: std::time::Duration) -> proxy::Start {
    proxy::Start {
        group: usize::MAX,
        head: Vec::new(),
        idempotent: false,
        head_request: req.method == Method::Head,
        client_10: req.minor == 0,
        body_method: false,
        key: 0,
        connect_timeout: timeout,
        read_timeout: timeout,
        buffer: 1 << 20,
        retries: 0,
        cache: None,
        compress_route: false,
        compress: None,
        upgrade: false,
        deferred_head: None,
    }
}

/// The proxy exchange for `target` through `p`.
fn proxy_start(
    sites: &Sites,
    p: &Proxy,
    target: &Target,
    host: Option<&[u8]>,
    req: &Request<'_>,
    peer: std::net::IpAddr,
    edit: Option<&HeaderEdit>,
) -> Box<proxy::Start> {
    proxy_start_with(sites, p, target, host, req, peer, edit, true)
}

/// `proxy_start`, with the upstream request head built now (`build`) or deferred.
#[allow(clippy::too_many_arguments)]
fn proxy_start_with(
    sites: &Sites,
    p: &Proxy,
    target: &Target,
    host: Option<&[u8]>,
    req: &Request<'_>,
    peer: std::net::IpAddr,
    edit: Option<&HeaderEdit>,
    build: bool,
) -> Box<proxy::Start> {
    let up = &sites.upstreams[p.upstream];
    let mut path = &*target.path;
    if let Some(sp) = &p.strip_prefix {
        if let Some(rest) = path.strip_prefix(sp.trim_end_matches('/')) {
            path = rest;
        }
    }
    // The upstream's request-target, in pieces (joined only where a String is kept).
    let pq = [
        if path.starts_with('/') { "" } else { "/" },
        path,
        if target.query.is_empty() { "" } else { "?" },
        &target.query,
    ];
    let host = host.unwrap_or(b"");
    let (head, upgrade) = if build {
        proxy::request_head(req, &pq, host, peer, &sites.trusted_proxies, edit)
    } else {
        (Vec::new(), false)
    };
    // Only `balance = "hash"` reads the key: the other policies skip formatting it.
    let key = match up.hash_key {
        _ if up.balance != crate::config::upstreams::Balance::Hash => 0,
        crate::config::upstreams::HashKey::RemoteIp => {
            gateway::hash_bytes(peer.to_string().as_bytes())
        }
        crate::config::upstreams::HashKey::Host => gateway::hash_bytes(host),
        crate::config::upstreams::HashKey::Path => gateway::hash_bytes(target.path.as_bytes()),
        crate::config::upstreams::HashKey::Uri => gateway::hash_bytes(pq.concat().as_bytes()),
    };
    let m = req.method_str;
    Box::new(proxy::Start {
        group: p.upstream,
        head,
        idempotent: matches!(m, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        head_request: req.method == Method::Head,
        client_10: req.minor == 0,
        body_method: matches!(m, "POST" | "PUT" | "PATCH"),
        key,
        connect_timeout: up.connect_timeout,
        read_timeout: up.read_timeout,
        buffer: up.buffer_responses,
        retries: up.retries,
        cache: None,
        compress_route: false,
        compress: None,
        upgrade,
        deferred_head: (!build).then(|| {
            Box::new(proxy::DeferredHead {
                path_query: pq.concat(),
                host: host.to_vec(),
                edit: None,
            })
        }),
    })
}

/// `proxy_start` without the upstream request head: what building it needs is kept in
/// `deferred_head` (`proxy::Start::build_head` builds it when the request goes upstream).
fn proxy_start_deferred(
    sites: &Sites,
    p: &Proxy,
    target: &Target,
    host: Option<&[u8]>,
    req: &Request<'_>,
    peer: std::net::IpAddr,
    edit: Option<&HeaderEdit>,
) -> Box<proxy::Start> {
    let mut s = proxy_start_with(sites, p, target, host, req, peer, edit, false);
    if let Some(d) = s.deferred_head.as_mut() {
        d.edit = edit.cloned();
    }
    s
}

/// The coding a request on a compressing route gets, if any.
fn set_compress(start: &mut proxy::Start, route: &Route, req: &Request<'_>) {
    let Some(list) = &route.compress else { return };
    start.compress_route = true;
    let accept = req.fields.accept_encoding.as_deref().unwrap_or(b"");
    start.compress = crate::gateway::compress::pick(list, accept);
}

/// The cache intent of a request on a caching route: GET and HEAD look up and fill the
/// cache, PURGE drops its entry, other methods pass it by.
fn cache_intent(
    policy: Option<crate::cache::Policy>,
    host: &str,
    target: &Target,
    req: &Request<'_>,
) -> Option<Box<proxy::CacheIntent>> {
    let policy = policy?;
    // Other methods get `X-Cache: BYPASS` and are neither stored nor answered from it.
    let purge = req.method_str.eq_ignore_ascii_case("PURGE");
    let mut t = target.path.to_string();
    if !target.query.is_empty() {
        t.push('?');
        t.push_str(&target.query);
    }
    // A scan of the head's lines (the head is already validated): no second parse on the
    // hit path.
    let authorized = req
        .raw
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|l| l.len() > 14 && l[..14].eq_ignore_ascii_case(b"authorization:"));
    Some(Box::new(proxy::CacheIntent {
        key: crate::cache::key(host.as_bytes(), &t),
        policy,
        authorized,
        get: req.method == Method::Get,
        req_head: req.raw.to_vec(),
        revalidating: false,
        stale_ok: false,
        purge,
        leader: false,
    }))
}

/// Static files from `root` for `target`: index files, listings, error pages.
#[allow(clippy::too_many_arguments)]
fn static_files(
    files: &mut Files,
    site: &Site,
    root: Option<usize>,
    browse: bool,
    target: &Target,
    req: &Request<'_>,
    reply: &mut Reply<'_>,
    now: Instant,
) -> Result<Sent, Park> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return Ok(method_not_allowed(files, req, reply));
    }
    let head = req.method == Method::Head;
    let Some(root) = root else {
        return error_page(files, site, None, 404, req, reply, now);
    };
    let path = &*target.path;
    let dir_url = path.ends_with('/');
    let status = if dir_url && site.index != ["index.html"] {
        // Custom index names: the first that is a file.
        let mut st = 404;
        for name in &site.index {
            let cand = format!("{path}{name}");
            match files.lookup(root, &cand, now)? {
                Lookup::Entry(idx) => return Ok(files.serve_entry(idx, req, reply)),
                Lookup::Error(s) if s != 404 => st = s,
                _ => {}
            }
        }
        st
    } else {
        match files.lookup(root, path, now)? {
            Lookup::Entry(idx) => return Ok(files.serve_entry(idx, req, reply)),
            Lookup::DirNoSlash => {
                let mut extra = b"Location: ".to_vec();
                extra.extend_from_slice(path.as_bytes());
                extra.push(b'/');
                if !target.query.is_empty() {
                    extra.push(b'?');
                    extra.extend_from_slice(target.query.as_bytes());
                }
                extra.extend_from_slice(b"\r\n");
                return Ok(reply.simple(files.server_name(), 301, &extra, head));
            }
            Lookup::Error(status) => status,
        }
    };
    if status == 404 && dir_url && browse {
        if let Some(sent) = listing::respond(files, root, path, req, reply) {
            return Ok(sent);
        }
    }
    error_page(files, site, Some(root), status, req, reply, now)
}

/// An error `status`: the site's page for it when it has one (served with that status), else
/// the plain one.
fn error_page(
    files: &mut Files,
    site: &Site,
    root: Option<usize>,
    status: u16,
    req: &Request<'_>,
    reply: &mut Reply<'_>,
    now: Instant,
) -> Result<Sent, Park> {
    let head = req.method == Method::Head;
    let page = site.errors.iter().find(|(s, _)| *s == status);
    if let (Some((_, page)), Some(root)) = (page, root.or(site.root)) {
        if let Lookup::Entry(idx) = files.lookup(root, page, now)? {
            return Ok(files.serve_entry_as(idx, status, head, reply));
        }
    }
    Ok(reply.simple(files.server_name(), status, b"", head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{file, sites};
    use std::path::Path;

    fn router(text: &str) -> Router {
        let f = file::parse(Path::new("t.toml"), text).unwrap();
        let loc = file::Locator {
            file: Path::new("t.toml"),
            text,
        };
        let s = sites::build(f.sites, Path::new("/tmp"), &loc).unwrap();
        Router::new(Arc::new(s))
    }

    #[test]
    fn hosts_exact_then_longest_wildcard_then_default() {
        let mut r = router(
            "[[sites]]\nhosts = [\"a.test\", \"WWW.a.test\"]\n[[sites]]\nhosts = [\"*.test\"]\n\
             [[sites]]\nhosts = [\"*.files.test\"]\n[[sites]]\nhosts = [\"_\"]\n",
        );
        assert_eq!(r.site_for(Some(b"a.test")), Some(0));
        assert_eq!(r.site_for(Some(b"www.A.test:8080")), Some(0));
        assert_eq!(r.site_for(Some(b"a.test.")), Some(0));
        assert_eq!(r.site_for(Some(b"x.files.test")), Some(2));
        assert_eq!(r.site_for(Some(b"files.test")), Some(1));
        assert_eq!(r.site_for(Some(b"b.test")), Some(1));
        assert_eq!(r.site_for(Some(b"other.example")), Some(3));
        assert_eq!(r.site_for(Some(b"[::1]:80")), Some(3));
        assert_eq!(r.site_for(None), Some(3));
        let mut r = router("[[sites]]\nhosts = [\"a.test\"]\n");
        assert_eq!(r.site_for(Some(b"b.test")), None);
    }

    #[test]
    fn routes_match_in_file_order_through_one_matcher() {
        let mut r = router(
            "[[sites]]\nhosts = [\"_\"]\n\
             [[sites.routes]]\npath = \"/old/*\"\nrespond = {}\n\
             [[sites.routes]]\npath = \"/*\"\nheaders = { set = { \"X\" = \"1\" } }\n\
             [[sites.routes]]\nregex = '^/user/(\\d+)$'\nrespond = {}\n\
             [[sites.routes]]\npath = \"/teapot\"\nrespond = {}\n\
             [[sites.routes]]\npath = \"/old/x\"\nrespond = {}\n",
        );
        assert_eq!(r.matching(0, "/old/a/b"), &[0, 1]);
        assert_eq!(r.matching(0, "/old/x"), &[0, 1, 4]);
        assert_eq!(r.matching(0, "/user/42"), &[1, 2]);
        assert_eq!(r.matching(0, "/user/4x"), &[1]);
        assert_eq!(r.matching(0, "/teapot"), &[1, 3]);
        assert_eq!(r.matching(0, "/teapots"), &[1]);
        assert_eq!(r.matching(0, "/old"), &[1]);
    }

    #[test]
    fn templates_expand_captures_and_star() {
        let r = router(
            "[[sites]]\nhosts = [\"_\"]\n\
             [[sites.routes]]\nregex = '^/u/(?P<id>\\d+)/(\\w+)$'\nrewrite = \"/p/{id}/{2}?h={host}&q={query}\"\n\
             [[sites.routes]]\npath = \"/old/*\"\nredirect = { to = \"/new/{*}\" }\n",
        );
        let site = &r.sites.sites[0];
        let t = Target {
            path: "/u/7/abc".into(),
            query: "x=1".into(),
        };
        let v = r.vars(0, 0, &site.routes[0], &t, "h.test");
        let Some(Action::Rewrite(tpl)) = &site.routes[0].action else {
            panic!()
        };
        assert_eq!(tpl.expand(&v), "/p/7/abc?h=h.test&q=x=1");
        let t = Target {
            path: "/old/a/b.html".into(),
            query: "".into(),
        };
        let v = r.vars(0, 1, &site.routes[1], &t, "");
        let Some(Action::Redirect(rd)) = &site.routes[1].action else {
            panic!()
        };
        assert_eq!(rd.to.expand(&v), "/new/a/b.html");
    }

    #[test]
    fn rewrites_keep_the_query_unless_they_set_one() {
        let old = Target {
            path: "/a".into(),
            query: "k=v".into(),
        };
        let t = rewritten("/b".into(), false, &old);
        assert_eq!((&*t.path, &*t.query), ("/b", "k=v"));
        let t = rewritten("/b?x=1".into(), true, &old);
        assert_eq!((&*t.path, &*t.query), ("/b", "x=1"));
    }

    #[test]
    fn regex_literal_starts() {
        assert_eq!(literal_start(r"^/user/(\d+)$").as_deref(), Some("/user/"));
        assert_eq!(literal_start(r"^/ab?c").as_deref(), Some("/a"));
        assert_eq!(literal_start(r"^/a|^/b"), None);
        assert_eq!(literal_start(r"/user/(\d+)"), None);
        assert_eq!(literal_start(r"^(\w+)"), None);
        assert_eq!(literal_start(r"^/x\.html").as_deref(), Some("/x"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"a.test:80"), b"a.test");
        assert_eq!(strip_port(b"a.test"), b"a.test");
        assert_eq!(strip_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
    }
}

//! Sites and routes, validated: what the config file's `[[sites]]` say, checked (hosts,
//! patterns, placeholders, statuses, roots) and turned into plain data the router compiles.
//! No I/O beyond checking that each root folder exists (done by the caller, `load`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::file::{
    AcmeFile, CgiFile, ConfigError, HeadersFile, Locator, ProxyFile, RedirectFile, RespondFile,
    RouteFile, SiteFile, TlsFile,
};
use super::upstreams::{Cidr, Upstream};

/// Most internal rewrites of one request before it is answered 500 (nginx allows 10 too).
pub const MAX_REWRITES: usize = 10;

/// Every site of a config, plus the distinct root folders they serve from.
#[derive(Clone, Debug, Default)]
pub struct Sites {
    pub sites: Vec<Site>,
    /// Canonical root folders; `Site::root` and `Action::Static::root` index into this.
    pub roots: Vec<PathBuf>,
    /// Built from flags alone (`ringd ./public`): one default site, no routes.
    pub implicit: bool,
    /// Upstream groups (`[upstreams.NAME]`, or `default` from `--proxy`), by name order.
    pub upstreams: Vec<Upstream>,
    /// Peers whose X-Forwarded-* / Forwarded fields are passed on (others' are replaced).
    pub trusted_proxies: Vec<Cidr>,
    /// The response cache per worker: most bytes (0: off) and the largest entry.
    pub cache_max_bytes: usize,
    pub cache_max_entry: usize,
    /// Peers whose `PURGE` requests drop cached entries (`[cache] purge_from`).
    pub cache_purge_from: Vec<Cidr>,
    /// The path that reports every worker's cache counters to those peers.
    pub cache_status_path: Option<String>,
}

impl Sites {
    /// The flag-only form: one default site serving `root`.
    pub fn single(root: PathBuf) -> Sites {
        Sites {
            sites: vec![Site {
                name: "_".into(),
                hosts: vec![HostPattern::Default],
                root: Some(0),
                index: vec!["index.html".into()],
                errors: Vec::new(),
                browse: false,
                respond: None,
                redirect: None,
                headers: None,
                routes: Vec::new(),
                fallback: None,
                tls: None,
                redirect_http: false,
            }],
            roots: vec![root],
            implicit: true,
            upstreams: Vec::new(),
            trusted_proxies: Vec::new(),
            cache_max_bytes: 0,
            cache_max_entry: 0,
            cache_purge_from: Vec::new(),
            cache_status_path: None,
        }
    }

    /// The flag-only form with `--proxy`: files that exist are served, every other request
    /// goes to `upstream` (nginx's `try_files $uri @app`).
    pub fn single_with_proxy(root: PathBuf, upstream: Upstream) -> Sites {
        let mut s = Sites::single(root);
        s.upstreams.push(upstream);
        s.sites[0].fallback = Some(Proxy {
            upstream: 0,
            strip_prefix: None,
            headers: None,
        });
        s
    }

    /// `--cgi PREFIX=DIR`: a route on the default site that runs the scripts in `dir`.
    pub fn add_cgi(&mut self, prefix: &str, dir: PathBuf) {
        let p = format!("{}/", prefix.trim_end_matches('/'));
        if let Some(site) = self.sites.first_mut() {
            site.routes.push(Route {
                label: format!("#{} {p}*", site.routes.len() + 1),
                pattern: PathPattern::Prefix(p),
                methods: None,
                headers: None,
                cache: None,
                compress: None,
                action: Some(Action::Cgi(Cgi {
                    dir,
                    timeout: std::time::Duration::from_secs(30),
                })),
            });
        }
    }

    /// `ringd-wsgi APP`: a route on the default site that hands every request under `prefix`
    /// to the WSGI app `app` (`module:callable`).
    pub fn add_wsgi(&mut self, prefix: &str, app: &str, timeout: std::time::Duration) {
        let p = format!("{}/", prefix.trim_end_matches('/'));
        if let Some(site) = self.sites.first_mut() {
            site.routes.push(Route {
                label: format!("#{} {p}*", site.routes.len() + 1),
                pattern: PathPattern::Prefix(p),
                methods: None,
                headers: None,
                cache: None,
                compress: None,
                action: Some(Action::Wsgi(Wsgi {
                    app: app.into(),
                    at: "--app".into(),
                    timeout,
                })),
            });
        }
    }

    /// The WSGI routes (`module:callable`, and where each is), in file order.
    pub fn wsgi_apps(&self) -> Vec<(Arc<str>, String)> {
        let mut v: Vec<(Arc<str>, String)> = Vec::new();
        for r in self.sites.iter().flat_map(|s| &s.routes) {
            if let Some(Action::Wsgi(w)) = &r.action {
                v.push((w.app.clone(), w.at.clone()));
            }
        }
        v
    }

    pub fn route_count(&self) -> usize {
        self.sites.iter().map(|s| s.routes.len()).sum()
    }
}

/// One virtual host.
#[derive(Clone, Debug)]
pub struct Site {
    /// Its first host name, as the access log shows it.
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Index into `Sites::roots`; None: no static files (every static lookup is 404).
    pub root: Option<usize>,
    /// File names tried, in order, for a URL ending in `/`.
    pub index: Vec<String>,
    /// Error pages: status → URL path within the site, served with that status.
    pub errors: Vec<(u16, String)>,
    /// Directory listings where a folder has no index file.
    pub browse: bool,
    /// The site answers every request with this (unless a route handles it first).
    pub respond: Option<Respond>,
    /// The site redirects every request (unless a route handles it first).
    pub redirect: Option<Redirect>,
    /// Header changes applied to every response of the site.
    pub headers: Option<Arc<HeaderEdit>>,
    pub routes: Vec<Route>,
    /// Requests that find no file go here (`--proxy`).
    pub fallback: Option<Proxy>,
    /// Where this site's HTTPS certificate comes from; None: plain HTTP only.
    pub tls: Option<SiteTls>,
    /// Plain HTTP requests get 308 to `https://` the same host and target.
    pub redirect_http: bool,
}

/// A site's `tls` setting, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteTls {
    /// PEM files (paths resolved against the config file's folder).
    Files { cert: PathBuf, key: PathBuf },
    /// Issued and renewed by ringd's local CA (in the data folder).
    Internal,
    /// Obtained and renewed from an ACME CA by the management thread (`tls/acme.rs`).
    Acme(AcmeSettings),
}

/// A site's `acme = { ... }`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL (`https://...`).
    pub directory: String,
    /// The account's contact address, if any.
    pub email: Option<String>,
    /// A PEM root that the CA's HTTPS endpoint chains to, for a private CA (Pebble, step-ca);
    /// None: the system's roots.
    pub ca_root: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

/// Which ACME challenge ringd answers to prove it serves a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `GET /.well-known/acme-challenge/<token>` over plain HTTP (port 80 in public).
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` (port 443 in public): the default, since the
    /// site's TLS listener is there anyway.
    TlsAlpn01,
}

/// A pattern of `hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// An exact name, lower-case.
    Exact(String),
    /// `*.example.test`: the suffix `.example.test`, lower-case.
    Wildcard(String),
    /// `_`: any Host no other site matches.
    Default,
}

/// One route: a matcher, modifiers, and at most one handler.
#[derive(Clone, Debug)]
pub struct Route {
    /// `#N path` for logs and errors.
    pub label: String,
    pub pattern: PathPattern,
    /// Upper-case method names; None: every method.
    pub methods: Option<Vec<String>>,
    pub headers: Option<Arc<HeaderEdit>>,
    pub action: Option<Action>,
    /// Responses of this route's proxy or CGI handler go through the response cache.
    pub cache: Option<crate::cache::Policy>,
    /// ... and are compressed with the first of these codings the client accepts.
    pub compress: Option<Vec<crate::handler::encoding::Coding>>,
}

/// What a route's path must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// `/teapot`: exactly this path.
    Exact(String),
    /// `/old/*`: paths starting with `/old/`; the rest is `{*}`.
    Prefix(String),
    /// A regular expression over the path; `{1}`, `{name}` are its captures.
    Regex(String),
}

/// A route's handler.
#[derive(Clone, Debug)]
pub enum Action {
    Redirect(Redirect),
    /// Internal rewrite of path (and query, when the template has `?`); matching restarts.
    Rewrite(Template),
    /// The first candidate that is a file is served; the last one is an internal rewrite.
    TryFiles(Vec<Template>),
    Respond(Respond),
    /// Static files from `root` (or the site's), with listings when `browse`.
    Static {
        root: Option<usize>,
        browse: Option<bool>,
    },
    /// Forward to an upstream group.
    Proxy(Proxy),
    /// Run a CGI script beneath `dir` (RFC 3875).
    Cgi(Cgi),
    /// Call a WSGI app (PEP 3333); only `ringd-wsgi` (the Python package) runs these.
    Wsgi(Wsgi),
}

/// `wsgi = { app = "mysite.wsgi:application" }`.
#[derive(Clone, Debug)]
pub struct Wsgi {
    /// `module:callable`, imported by each worker process of `ringd-wsgi`.
    pub app: Arc<str>,
    /// Where the route is (`file:line:col`), for the plain `ringd` binary's refusal.
    pub at: String,
    /// A request running longer gets 504 (and `ringd-wsgi` replaces its worker process).
    pub timeout: std::time::Duration,
}

/// `cgi = { dir, timeout }`: the path after the route's prefix names a script in `dir`.
#[derive(Clone, Debug)]
pub struct Cgi {
    /// Canonical folder of the scripts.
    pub dir: PathBuf,
    /// From start to the end of the script's output; then its process group is killed (504).
    pub timeout: std::time::Duration,
}

/// `proxy = { upstream, strip_prefix, headers }`.
#[derive(Clone, Debug)]
pub struct Proxy {
    /// Index into `Sites::upstreams`.
    pub upstream: usize,
    /// Removed from the start of the path before forwarding (`/api/x` → `/x`).
    pub strip_prefix: Option<String>,
    /// Request header changes (on what is sent upstream).
    pub headers: Option<Arc<HeaderEdit>>,
}

/// `redirect = { to, status }`.
#[derive(Clone, Debug)]
pub struct Redirect {
    pub to: Template,
    pub status: u16,
}

/// `respond = { status, body, headers }`.
#[derive(Clone, Debug)]
pub struct Respond {
    pub status: u16,
    pub body: Vec<u8>,
    /// Header lines, each `Name: value\r\n`.
    pub headers: Vec<u8>,
}

/// `headers = { set, remove }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    /// (name, value): replaces any field of that name.
    pub set: Vec<(String, String)>,
    /// Names removed from the response.
    pub remove: Vec<String>,
}

impl HeaderEdit {
    /// `other` applied after `self`.
    pub fn then(&mut self, other: &HeaderEdit) {
        for (n, v) in &other.set {
            self.remove.retain(|r| !r.eq_ignore_ascii_case(n));
            self.set.retain(|(s, _)| !s.eq_ignore_ascii_case(n));
            self.set.push((n.clone(), v.clone()));
        }
        for r in &other.remove {
            self.set.retain(|(s, _)| !s.eq_ignore_ascii_case(r));
            if !self.remove.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                self.remove.push(r.clone());
            }
        }
    }
}

/// A string with placeholders: `{path}`, `{query}`, `{host}`, `{*}`, `{1}`, `{name}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
    /// The template has its own query string (`?` in a literal part).
    pub has_query: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Path,
    Query,
    Host,
    Star,
    Index(usize),
    Name(String),
}

/// What placeholders a route's templates may use.
struct Captures<'a> {
    star: bool,
    groups: usize,
    names: &'a [String],
}

impl Template {
    fn parse(
        s: &str,
        caps: &Captures<'_>,
        loc: &Locator<'_>,
        span: Range<usize>,
        key: &str,
    ) -> Result<Template, ConfigError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let Some(j) = after.find('}') else {
                return Err(loc.error(Some(span), format!("`{key}`: unclosed `{{` in {s:?}")));
            };
            let name = &after[..j];
            let part = match name {
                "path" => Part::Path,
                "query" => Part::Query,
                "host" => Part::Host,
                "*" if caps.star => Part::Star,
                "*" => {
                    return Err(loc.error(
                        Some(span),
                        format!("`{key}`: `{{*}}` needs a `path` ending in `*`"),
                    ))
                }
                n if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                    let k: usize = n.parse().unwrap_or(usize::MAX);
                    if k == 0 || k > caps.groups {
                        return Err(loc.error(
                            Some(span),
                            format!(
                                "`{key}`: `{{{n}}}` but the route's regex has {} capture group(s)",
                                caps.groups
                            ),
                        ));
                    }
                    Part::Index(k)
                }
                n if caps.names.iter().any(|x| x == n) => Part::Name(n.to_string()),
                n => {
                    return Err(loc.error(
                        Some(span),
                        format!(
                            "`{key}`: unknown placeholder `{{{n}}}` (known: {{path}}, {{query}}, \
                             {{host}}{}{}{})",
                            if caps.star { ", {*}" } else { "" },
                            if caps.groups > 0 { ", {1}…" } else { "" },
                            caps.names
                                .iter()
                                .map(|n| format!(", {{{n}}}"))
                                .collect::<String>()
                        ),
                    ))
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &after[j + 1..];
        }
        lit.push_str(rest);
        if lit.contains('}') {
            return Err(loc.error(Some(span), format!("`{key}`: stray `}}` in {s:?}")));
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let has_query = parts
            .iter()
            .any(|p| matches!(p, Part::Lit(l) if l.contains('?')));
        Ok(Template { parts, has_query })
    }
}

/// Validates `sites` (from the file at `loc.file`) into `Sites`, resolving roots against
/// `base` (the file's folder). Collects every error it finds.
pub fn build(
    sites: Vec<Spanned<SiteFile>>,
    base: &Path,
    loc: &Locator<'_>,
) -> Result<Sites, Vec<ConfigError>> {
    build_with(sites, Vec::new(), base, loc)
}

/// As [`build`], with the config's upstream groups (for `proxy` routes).
pub fn build_with(
    sites: Vec<Spanned<SiteFile>>,
    upstreams: Vec<Upstream>,
    base: &Path,
    loc: &Locator<'_>,
) -> Result<Sites, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut out = Sites {
        upstreams,
        ..Sites::default()
    };
    let names: Vec<String> = out.upstreams.iter().map(|u| u.name.clone()).collect();
    let mut seen_hosts: BTreeMap<String, usize> = BTreeMap::new();
    for (si, spanned) in sites.into_iter().enumerate() {
        let span = spanned.span();
        let sf = spanned.into_inner();
        match build_site(sf, base, loc, &names, &mut out.roots, &mut errs) {
            Some(site) => {
                for h in &site.hosts {
                    let key = match h {
                        HostPattern::Exact(n) => n.clone(),
                        HostPattern::Wildcard(s) => format!("*{s}"),
                        HostPattern::Default => "_".into(),
                    };
                    if let Some(prev) = seen_hosts.insert(key.clone(), si) {
                        errs.push(loc.error(
                            Some(span.clone()),
                            format!(
                                "`hosts`: {key:?} is already a host of site {} (sites[{prev}])",
                                prev + 1
                            ),
                        ));
                    }
                }
                out.sites.push(site);
            }
            None => continue,
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn build_site(
    sf: SiteFile,
    base: &Path,
    loc: &Locator<'_>,
    upstreams: &[String],
    roots: &mut Vec<PathBuf>,
    errs: &mut Vec<ConfigError>,
) -> Option<Site> {
    let before = errs.len();
    let mut hosts = Vec::new();
    if sf.hosts.get_ref().is_empty() {
        errs.push(loc.error(
            Some(sf.hosts.span()),
            "`hosts` is empty: name at least one host, or \"_\" for the default site",
        ));
    }
    for h in sf.hosts.get_ref() {
        match host_pattern(h.get_ref()) {
            Ok(p) => hosts.push(p),
            Err(why) => errs.push(loc.error(Some(h.span()), format!("`hosts`: {why}"))),
        }
    }
    let root = sf
        .root
        .as_ref()
        .and_then(|r| root_index(r, base, loc, roots, errs));
    let index = sf.index.unwrap_or_else(|| vec!["index.html".into()]);
    for name in &index {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            errs.push(loc.error(None, format!("`index`: {name:?} must be a plain file name")));
        }
    }
    let mut errors = Vec::new();
    if let Some(map) = &sf.errors {
        for (k, v) in map.get_ref() {
            match k.parse::<u16>() {
                Ok(s) if (400..=599).contains(&s) => {
                    if !v.get_ref().starts_with('/') {
                        errs.push(loc.error(
                            Some(v.span()),
                            format!("`errors`: the page for {s} must be a path starting with `/`"),
                        ));
                    }
                    errors.push((s, v.get_ref().clone()));
                }
                _ => errs.push(loc.error(
                    Some(map.span()),
                    format!("`errors`: {k:?} is not an error status (400-599)"),
                )),
            }
        }
    }
    let site_caps = Captures {
        star: false,
        groups: 0,
        names: &[],
    };
    let respond = sf.respond.map(|r| respond(r, loc, errs));
    let redirect = sf.redirect.and_then(|r| redirect(r, &site_caps, loc, errs));
    let headers = sf.headers.map(|h| Arc::new(header_edit(h, loc, errs)));
    let tls = site_tls(sf.tls, sf.acme, &hosts, base, loc, errs);
    if sf.redirect_http == Some(true) && tls.is_none() && errs.len() == before {
        // One port serves both: the https URL is this port, which must speak TLS for the site.
        errs.push(loc.error(
            Some(sf.hosts.span()),
            "`redirect_http` needs `tls` on the same site (the https URL is this same port)",
        ));
    }
    let mut routes = Vec::new();
    for (i, r) in sf.routes.into_iter().enumerate() {
        if let Some(route) = build_route(i, r, base, loc, upstreams, roots, errs) {
            routes.push(route);
        }
    }
    let name = sf
        .hosts
        .get_ref()
        .first()
        .map(|h| h.get_ref().to_ascii_lowercase())
        .unwrap_or_default();
    (errs.len() == before).then_some(Site {
        name,
        hosts,
        root,
        index,
        errors,
        browse: sf.browse.unwrap_or(false),
        respond,
        redirect,
        headers,
        routes,
        fallback: None,
        tls,
        redirect_http: sf.redirect_http.unwrap_or(false),
    })
}

/// A site's `tls`: `{ cert, key }`, `"internal"` or `"acme"` (with its `acme` table).
fn site_tls(
    t: Option<Spanned<TlsFile>>,
    acme: Option<Spanned<AcmeFile>>,
    hosts: &[HostPattern],
    base: &Path,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<SiteTls> {
    let is_acme = matches!(t.as_ref().map(|t| t.get_ref()), Some(TlsFile::Mode(m)) if m == "acme");
    if let (Some(a), false) = (&acme, is_acme) {
        errs.push(loc.error(
            Some(a.span()),
            "`acme` is only read with `tls = \"acme\"` on the same site",
        ));
    }
    let t = t?;
    let span = t.span();
    match t.into_inner() {
        TlsFile::Files(f) => Some(SiteTls::Files {
            cert: base.join(f.cert),
            key: base.join(f.key),
        }),
        TlsFile::Mode(m) if m == "internal" => Some(SiteTls::Internal),
        TlsFile::Mode(m) if m == "acme" => {
            let Some(a) = acme else {
                errs.push(loc.error(
                    Some(span),
                    "`tls = \"acme\"` needs `acme = { directory = \"https://...\", email = \"...\" }` \
                     on the same site",
                ));
                return None;
            };
            if let Some(h) = hosts.iter().find(|h| !matches!(h, HostPattern::Exact(_))) {
                let h = match h {
                    HostPattern::Wildcard(s) => format!("*{s}"),
                    _ => "_".to_string(),
                };
                errs.push(loc.error(
                    Some(span),
                    format!(
                        "`tls = \"acme\"`: {h:?} cannot be proved by HTTP-01 or TLS-ALPN-01; \
                         an ACME site lists exact host names only"
                    ),
                ));
                return None;
            }
            acme_settings(a, base, loc, errs).map(SiteTls::Acme)
        }
        TlsFile::Mode(m) => {
            errs.push(loc.error(
                Some(span),
                format!("`tls`: {m:?} is not a mode; give \"internal\", \"acme\" or {{ cert = \"...\", key = \"...\" }}"),
            ));
            None
        }
    }
}

/// A site's `acme` table: the directory must be an https (or, for a CA on this machine,
/// http) URL; `ca_root` a readable file; `challenge` one of the two ringd answers.
fn acme_settings(
    a: Spanned<AcmeFile>,
    base: &Path,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<AcmeSettings> {
    let before = errs.len();
    let a = a.into_inner();
    let dir = a.directory.get_ref().trim();
    let host = dir
        .strip_prefix("https://")
        .map(|r| r.split(['/', '?']).next().unwrap_or(""));
    if host.is_none_or(str::is_empty) {
        errs.push(loc.error(
            Some(a.directory.span()),
            format!("`directory`: {dir:?} is not an https:// URL (e.g. https://acme-v02.api.letsencrypt.org/directory)"),
        ));
    }
    if let Some(e) = &a.email {
        let v = e.get_ref();
        if !v.contains('@') || v.contains(char::is_whitespace) {
            errs.push(loc.error(
                Some(e.span()),
                format!("`email`: {v:?} is not an e-mail address"),
            ));
        }
    }
    let ca_root = a.ca_root.as_ref().and_then(|r| {
        let p = base.join(r.get_ref());
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Some(p),
            Ok(_) => {
                errs.push(loc.error(
                    Some(r.span()),
                    format!("`ca_root`: {} is not a file", p.display()),
                ));
                None
            }
            Err(e) => {
                errs.push(loc.error(
                    Some(r.span()),
                    format!("`ca_root`: cannot open {}: {e}", p.display()),
                ));
                None
            }
        }
    });
    let challenge = match a
        .challenge
        .as_ref()
        .map(|c| (c.get_ref().as_str(), c.span()))
    {
        None | Some(("tls-alpn-01", _)) => AcmeChallenge::TlsAlpn01,
        Some(("http-01", _)) => AcmeChallenge::Http01,
        Some((other, span)) => {
            errs.push(loc.error(
                Some(span),
                format!("`challenge`: {other:?} is not one ringd answers; give \"http-01\" or \"tls-alpn-01\""),
            ));
            AcmeChallenge::TlsAlpn01
        }
    };
    (errs.len() == before).then(|| AcmeSettings {
        directory: dir.to_string(),
        email: a.email.map(|e| e.into_inner()),
        ca_root,
        challenge,
    })
}

/// A `hosts` entry: a name, `*.suffix`, or `_`.
fn host_pattern(h: &str) -> Result<HostPattern, String> {
    if h == "_" {
        return Ok(HostPattern::Default);
    }
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.contains(':') || !name.split('.').all(ok_label) {
        return Err(format!(
            "{h:?} is not a host name (write `example.test`, `*.example.test` or `_`; \
             the port is ignored when matching, so leave it out)"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

/// Resolves `root` against the file's folder, checks it is a folder, and returns its index in
/// `roots` (the same folder twice gets one index).
fn root_index(
    r: &Spanned<String>,
    base: &Path,
    loc: &Locator<'_>,
    roots: &mut Vec<PathBuf>,
    errs: &mut Vec<ConfigError>,
) -> Option<usize> {
    let c = folder(r, "root", base, loc, errs)?;
    Some(match roots.iter().position(|x| *x == c) {
        Some(i) => i,
        None => {
            roots.push(c);
            roots.len() - 1
        }
    })
}

/// `r` resolved against the file's folder and made canonical, when it is a folder; else an
/// error naming `key`.
fn folder(
    r: &Spanned<String>,
    key: &str,
    base: &Path,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let p = base.join(r.get_ref());
    let why = match std::fs::canonicalize(&p) {
        Ok(c) if c.is_dir() => return Some(c),
        Ok(_) => format!("`{key}`: {} is not a folder", p.display()),
        Err(e) => format!("`{key}`: cannot open {}: {e}", p.display()),
    };
    errs.push(loc.error(Some(r.span()), why));
    None
}

fn respond(r: Spanned<RespondFile>, loc: &Locator<'_>, errs: &mut Vec<ConfigError>) -> Respond {
    let r = r.into_inner();
    let status = match r.status {
        Some(s) if (100..=999).contains(s.get_ref()) && !(100..200).contains(s.get_ref()) => {
            *s.get_ref()
        }
        Some(s) => {
            errs.push(loc.error(
                Some(s.span()),
                format!("`status`: {} is not a final status (200-999)", s.get_ref()),
            ));
            200
        }
        None => 200,
    };
    let mut headers = Vec::new();
    let mut has_ct = false;
    if let Some(h) = &r.headers {
        for (n, v) in h.get_ref() {
            if let Err(why) = check_field(n, v) {
                errs.push(loc.error(Some(h.span()), format!("`headers`: {why}")));
            }
            has_ct |= n.eq_ignore_ascii_case("content-type");
            if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("connection") {
                errs.push(loc.error(
                    Some(h.span()),
                    format!("`headers`: {n} is set by ringd, not by `respond`"),
                ));
            }
            headers.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    let body = r.body.unwrap_or_default().into_bytes();
    if !has_ct && !body.is_empty() {
        headers.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    Respond {
        status,
        body,
        headers,
    }
}

fn redirect(
    r: Spanned<RedirectFile>,
    caps: &Captures<'_>,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<Redirect> {
    let r = r.into_inner();
    let status = match &r.status {
        None => 302,
        Some(s) if matches!(s.get_ref(), 301 | 302 | 303 | 307 | 308) => *s.get_ref(),
        Some(s) => {
            errs.push(loc.error(
                Some(s.span()),
                format!(
                    "`status`: {} is not a redirect status (301, 302, 303, 307 or 308)",
                    s.get_ref()
                ),
            ));
            return None;
        }
    };
    if r.to.get_ref().is_empty() {
        errs.push(loc.error(Some(r.to.span()), "`to` is empty"));
        return None;
    }
    match Template::parse(r.to.get_ref(), caps, loc, r.to.span(), "to") {
        Ok(to) => Some(Redirect { to, status }),
        Err(e) => {
            errs.push(e);
            None
        }
    }
}

/// A header name must be a token and a value must have no CR, LF or NUL.
fn check_field(name: &str, value: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("the value of {name} has a line break or NUL"));
    }
    Ok(())
}

fn header_edit(
    h: Spanned<HeadersFile>,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> HeaderEdit {
    let span = h.span();
    let h = h.into_inner();
    let mut e = HeaderEdit::default();
    for (n, v) in h.set.unwrap_or_default() {
        if let Err(why) = check_field(&n, &v) {
            errs.push(loc.error(Some(span.clone()), format!("`headers.set`: {why}")));
        }
        for fixed in ["content-length", "transfer-encoding", "connection", "date"] {
            if n.eq_ignore_ascii_case(fixed) {
                errs.push(loc.error(
                    Some(span.clone()),
                    format!("`headers.set`: {n} is ringd's to write"),
                ));
            }
        }
        e.set.push((n, v));
    }
    for n in h.remove.unwrap_or_default() {
        if let Err(why) = check_field(&n, "") {
            errs.push(loc.error(Some(span.clone()), format!("`headers.remove`: {why}")));
        }
        for fixed in [
            "content-length",
            "transfer-encoding",
            "connection",
            "date",
            "content-range",
        ] {
            if n.eq_ignore_ascii_case(fixed) {
                errs.push(loc.error(
                    Some(span.clone()),
                    format!("`headers.remove`: {n} cannot be removed (it frames the response)"),
                ));
            }
        }
        e.remove.push(n);
    }
    e
}

fn build_route(
    i: usize,
    r: Spanned<RouteFile>,
    base: &Path,
    loc: &Locator<'_>,
    upstreams: &[String],
    roots: &mut Vec<PathBuf>,
    errs: &mut Vec<ConfigError>,
) -> Option<Route> {
    let span = r.span();
    let rf = r.into_inner();
    let before = errs.len();
    let mut names = Vec::new();
    let mut groups = 0;
    let (pattern, star, shown) = match (&rf.path, &rf.regex) {
        (Some(_), Some(rx)) => {
            errs.push(loc.error(Some(rx.span()), "a route has `path` or `regex`, not both"));
            return None;
        }
        (None, None) => {
            errs.push(loc.error(
                Some(span),
                "a route needs `path` (\"/exact\" or \"/prefix/*\") or `regex`",
            ));
            return None;
        }
        (Some(p), None) => {
            let s = p.get_ref();
            if !s.starts_with('/') {
                errs.push(loc.error(Some(p.span()), format!("`path`: {s:?} must start with `/`")));
            }
            let stars = s.matches('*').count();
            if stars > 1 || (stars == 1 && !s.ends_with('*')) {
                errs.push(loc.error(
                    Some(p.span()),
                    format!("`path`: {s:?}: `*` may only end a path (use `regex` for more)"),
                ));
            }
            match s.strip_suffix('*') {
                Some(prefix) => (PathPattern::Prefix(prefix.to_string()), true, s.clone()),
                None => (PathPattern::Exact(s.clone()), false, s.clone()),
            }
        }
        (None, Some(rx)) => match regex::Regex::new(rx.get_ref()) {
            Ok(re) => {
                groups = re.captures_len() - 1;
                names = re.capture_names().flatten().map(str::to_string).collect();
                (
                    PathPattern::Regex(rx.get_ref().clone()),
                    false,
                    rx.get_ref().clone(),
                )
            }
            Err(e) => {
                let msg = e.to_string().replace('\n', " ");
                errs.push(loc.error(Some(rx.span()), format!("`regex`: {msg}")));
                return None;
            }
        },
    };
    let caps = Captures {
        star,
        groups,
        names: &names,
    };
    let methods = rf.methods.as_ref().map(|m| {
        let mut v = Vec::new();
        for name in m.get_ref() {
            let up = name.to_ascii_uppercase();
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
                errs.push(loc.error(
                    Some(m.span()),
                    format!("`methods`: {name:?} is not a method"),
                ));
            }
            v.push(up);
        }
        v
    });
    let headers = rf.headers.map(|h| Arc::new(header_edit(h, loc, errs)));
    let mut handlers: Vec<(&str, Action)> = Vec::new();
    if let Some(r) = rf.redirect {
        if let Some(r) = redirect(r, &caps, loc, errs) {
            handlers.push(("redirect", Action::Redirect(r)));
        }
    }
    if let Some(rw) = &rf.rewrite {
        if !rw.get_ref().starts_with('/') && !rw.get_ref().starts_with('{') {
            errs.push(loc.error(
                Some(rw.span()),
                "`rewrite` must be a path starting with `/`",
            ));
        }
        match Template::parse(rw.get_ref(), &caps, loc, rw.span(), "rewrite") {
            Ok(t) => handlers.push(("rewrite", Action::Rewrite(t))),
            Err(e) => errs.push(e),
        }
    }
    if let Some(tf) = &rf.try_files {
        let mut v = Vec::new();
        if tf.get_ref().is_empty() {
            errs.push(loc.error(Some(tf.span()), "`try_files` is empty"));
        }
        for c in tf.get_ref() {
            match Template::parse(c.get_ref(), &caps, loc, c.span(), "try_files") {
                Ok(t) => v.push(t),
                Err(e) => errs.push(e),
            }
        }
        handlers.push(("try_files", Action::TryFiles(v)));
    }
    if let Some(r) = rf.respond {
        handlers.push(("respond", Action::Respond(respond(r, loc, errs))));
    }
    if rf.root.is_some() || rf.browse.is_some() {
        let root = rf
            .root
            .as_ref()
            .and_then(|r| root_index(r, base, loc, roots, errs));
        handlers.push((
            "root",
            Action::Static {
                root,
                browse: rf.browse,
            },
        ));
    }
    if let Some(p) = rf.proxy {
        if let Some(p) = proxy(p, upstreams, loc, errs) {
            handlers.push(("proxy", Action::Proxy(p)));
        }
    }
    if let Some(c) = rf.cgi {
        if !matches!(pattern, PathPattern::Prefix(_)) {
            errs.push(loc.error(
                Some(c.span()),
                "`cgi` needs a prefix route (`path = \"/cgi-bin/*\"`): the rest of the path names the script",
            ));
        }
        if let Some(c) = cgi(c.into_inner(), base, loc, errs) {
            handlers.push(("cgi", Action::Cgi(c)));
        }
    }
    if let Some(w) = rf.wsgi {
        let span = w.span();
        let w = w.into_inner();
        let app = w.app.get_ref();
        let ok = app
            .split_once(':')
            .is_some_and(|(m, c)| !m.is_empty() && !c.is_empty() && !c.contains(':'));
        if ok {
            let (line, col) = loc.line_col(span.start);
            handlers.push((
                "wsgi",
                Action::Wsgi(Wsgi {
                    app: app.as_str().into(),
                    at: format!("{}:{line}:{col}", loc.file.display()),
                    timeout: w
                        .timeout
                        .map_or(std::time::Duration::from_secs(30), |d| d.0),
                }),
            ));
        } else {
            errs.push(loc.error(
                Some(w.app.span()),
                format!("`wsgi.app`: {app:?} is not `module:callable` (e.g. \"mysite.wsgi:application\")"),
            ));
        }
    }
    if handlers.len() > 1 {
        let names: Vec<&str> = handlers.iter().map(|(n, _)| *n).collect();
        errs.push(loc.error(
            Some(span),
            format!(
                "a route has at most one handler, this one has {}",
                names.join(", ")
            ),
        ));
    }
    let action = handlers.pop().map(|(_, a)| a);
    let cache = rf.cache.map(|c| {
        if !matches!(
            action,
            Some(Action::Proxy(_) | Action::Cgi(_) | Action::Wsgi(_))
        ) {
            errs.push(loc.error(
                Some(c.span()),
                "`cache` goes with a `proxy` or `cgi` handler on the same route",
            ));
        }
        let c = c.into_inner();
        let d = |v: Option<super::units::Dur>| v.map_or(std::time::Duration::ZERO, |d| d.0);
        crate::cache::Policy {
            default_ttl: d(c.default_ttl),
            stale_while_revalidate: d(c.stale_while_revalidate),
            stale_if_error: d(c.stale_if_error),
            store_set_cookie: c.store_set_cookie.unwrap_or(false),
        }
    });
    let compress = rf.compress.map(|c| {
        if !matches!(
            action,
            Some(Action::Proxy(_) | Action::Cgi(_) | Action::Wsgi(_))
        ) {
            errs.push(loc.error(
                Some(c.span()),
                "`compress` goes with a `proxy` or `cgi` handler (static files use precompressed sidecars)",
            ));
        }
        let mut v = Vec::new();
        for name in c.get_ref() {
            match crate::gateway::compress::parse(name) {
                Some(k) => v.push(k),
                None => errs.push(loc.error(
                    Some(c.span()),
                    format!("`compress`: {name:?} is not a coding (zstd, br, gzip)"),
                )),
            }
        }
        v
    });
    (errs.len() == before).then(|| Route {
        label: format!("#{} {shown}", i + 1),
        pattern,
        methods,
        headers,
        action,
        cache,
        compress,
    })
}

fn cgi(c: CgiFile, base: &Path, loc: &Locator<'_>, errs: &mut Vec<ConfigError>) -> Option<Cgi> {
    let dir = folder(&c.dir, "dir", base, loc, errs)?;
    Some(Cgi {
        dir,
        timeout: c
            .timeout
            .map_or(std::time::Duration::from_secs(30), |d| d.0),
    })
}

fn proxy(
    p: Spanned<ProxyFile>,
    upstreams: &[String],
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<Proxy> {
    let p = p.into_inner();
    let name = p.upstream.get_ref();
    let Some(upstream) = upstreams.iter().position(|u| u == name) else {
        let known: Vec<&str> = upstreams.iter().map(String::as_str).collect();
        let hint = super::file::closest(name, &known)
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        errs.push(loc.error(
            Some(p.upstream.span()),
            format!("`upstream`: no [upstreams.{name}] in this file{hint}"),
        ));
        return None;
    };
    if let Some(sp) = &p.strip_prefix {
        if !sp.get_ref().starts_with('/') {
            errs.push(loc.error(Some(sp.span()), "`strip_prefix` must start with `/`"));
        }
    }
    let headers = p.headers.map(|h| Arc::new(header_edit(h, loc, errs)));
    Some(Proxy {
        upstream,
        strip_prefix: p.strip_prefix.map(Spanned::into_inner),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file;

    fn load(text: &str) -> Result<Sites, Vec<ConfigError>> {
        let dir = std::env::temp_dir();
        let f = file::parse(Path::new("t.toml"), text).map_err(|e| vec![e])?;
        let loc = Locator {
            file: Path::new("t.toml"),
            text,
        };
        build(f.sites, &dir, &loc)
    }

    fn first_err(text: &str) -> ConfigError {
        load(text).unwrap_err().remove(0)
    }

    #[test]
    fn hosts_are_checked_and_lower_cased() {
        assert_eq!(
            host_pattern("Example.TEST"),
            Ok(HostPattern::Exact("example.test".into()))
        );
        assert_eq!(
            host_pattern("*.files.test"),
            Ok(HostPattern::Wildcard(".files.test".into()))
        );
        assert_eq!(host_pattern("_"), Ok(HostPattern::Default));
        assert!(host_pattern("a b").is_err());
        assert!(host_pattern("a.test:8080").is_err());
        assert!(host_pattern("*.").is_err());
        assert!(host_pattern("a.*.test").is_err());
    }

    #[test]
    fn tls_settings_are_checked_at_load() {
        let ok = load(
            "[[sites]]\nhosts = [\"a\"]\ntls = { cert = \"c.pem\", key = \"k.pem\" }\nredirect_http = true\n\
             [[sites]]\nhosts = [\"b\"]\ntls = \"internal\"\n[[sites]]\nhosts = [\"c\"]\n",
        )
        .unwrap();
        assert!(
            matches!(&ok.sites[0].tls, Some(SiteTls::Files { cert, .. }) if cert.ends_with("c.pem"))
        );
        assert!(ok.sites[0].redirect_http);
        assert_eq!(ok.sites[1].tls, Some(SiteTls::Internal));
        assert_eq!(ok.sites[2].tls, None);
        let e = first_err("[[sites]]\nhosts = [\"a\"]\ntls = \"acme\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("needs `acme"), "{e}");
        let ok = load(
            "[[sites]]\nhosts = [\"a.test\"]\ntls = \"acme\"\n\
             acme = { directory = \"https://ca.test/dir\", email = \"me@a.test\", challenge = \"http-01\" }\n",
        )
        .unwrap();
        assert_eq!(
            ok.sites[0].tls,
            Some(SiteTls::Acme(AcmeSettings {
                directory: "https://ca.test/dir".into(),
                email: Some("me@a.test".into()),
                ca_root: None,
                challenge: AcmeChallenge::Http01,
            }))
        );
        for (bad, line, says) in [
            ("hosts = [\"*.a.test\"]\ntls = \"acme\"\nacme = { directory = \"https://c/d\" }\n", 3, "exact host names"),
            ("hosts = [\"a\"]\ntls = \"acme\"\nacme = { directory = \"http://c/d\" }\n", 4, "not an https:// URL"),
            ("hosts = [\"a\"]\ntls = \"acme\"\nacme = { directory = \"https://c/d\", challenge = \"dns-01\" }\n", 4, "`challenge`"),
            ("hosts = [\"a\"]\ntls = \"acme\"\nacme = { directory = \"https://c/d\", ca_root = \"/nonexistent.pem\" }\n", 4, "`ca_root`"),
            ("hosts = [\"a\"]\ntls = \"internal\"\nacme = { directory = \"https://c/d\" }\n", 4, "only read with"),
        ] {
            let e = first_err(&format!("[[sites]]\n{bad}"));
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let e = first_err("[[sites]]\nhosts = [\"a\"]\nredirect_http = true\n");
        assert!(e.message.contains("needs `tls`"), "{e}");
        let e = first_err("[[sites]]\nhosts = [\"a\"]\ntls = \"on\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("not a mode"), "{e}");
    }

    #[test]
    fn placeholders_are_checked_at_load() {
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/x\"\nredirect = { to = \"/y/{*}\" }\n",
        );
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("{*}"), "{e}");
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\nregex = '^/u/(\\d+)$'\nrewrite = \"/p?id={2}\"\n",
        );
        assert!(e.message.contains("1 capture group"), "{e}");
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/x\"\nrewrite = \"/p{nope}\"\n",
        );
        assert!(e.message.contains("unknown placeholder `{nope}`"), "{e}");
        let ok = load(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\nregex = '^/u/(?P<id>\\d+)$'\nrewrite = \"/p?id={id}&n={1}&h={host}\"\n",
        )
        .unwrap();
        match &ok.sites[0].routes[0].action {
            Some(Action::Rewrite(t)) => assert!(t.has_query),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_errors_have_places() {
        let e = first_err("[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\nregex = '(('\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.starts_with("`regex`"), "{e}");
        let e = first_err("[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/a/*/b\"\n");
        assert!(e.message.contains("may only end a path"), "{e}");
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/a\"\nrewrite = \"/b\"\nrespond = { status = 200 }\n",
        );
        assert!(e.message.contains("at most one handler"), "{e}");
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/a\"\nredirect = { to = \"/b\", status = 200 }\n",
        );
        assert!(e.message.contains("not a redirect status"), "{e}");
        let e = first_err("[[sites]]\nhosts = [\"a\"]\n[[sites]]\nhosts = [\"A\"]\n");
        assert!(e.message.contains("already a host"), "{e}");
        let e = first_err("[[sites]]\nhosts = [\"a\"]\nroot = \"/nonexistent/ringd-x\"\n");
        assert_eq!((e.line, e.col), (3, 8), "{e}");
        let e = first_err(
            "[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/a\"\nheaders = { set = { \"X\" = \"a\\nb\" } }\n",
        );
        assert!(e.message.contains("line break"), "{e}");
    }

    #[test]
    fn header_edits_compose() {
        let mut a = HeaderEdit {
            set: vec![("X-A".into(), "1".into())],
            remove: vec!["X-B".into()],
        };
        a.then(&HeaderEdit {
            set: vec![("x-b".into(), "2".into())],
            remove: vec!["x-a".into()],
        });
        assert_eq!(a.set, vec![("x-b".to_string(), "2".to_string())]);
        assert_eq!(a.remove, vec!["x-a".to_string()]);
    }
}

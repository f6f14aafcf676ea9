//! The TOML config file as serde reads it (`deny_unknown_fields` everywhere), and its errors as
//! `file:line:col: message` with the closest known key suggested for an unknown one.
//!
//! These types are only the file's shape; `sites.rs` validates them into the `Sites` the
//! router compiles. Every key is documented in `docs/config.md` (a test checks that the doc
//! names every field serde knows, so the two cannot drift apart).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::units::{Dur, Size};

/// The whole file. Top-level keys mirror the command-line flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Spanned<Vec<String>>>,
    pub workers: Option<Spanned<usize>>,
    pub backend: Option<Spanned<String>>,
    pub access_log: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
    pub pin: Option<bool>,
    pub follow_symlinks: Option<bool>,
    pub serve_dotfiles: Option<bool>,
    pub max_request_line: Option<Spanned<Size>>,
    pub max_header_bytes: Option<Spanned<Size>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_body: Option<Spanned<Size>>,
    pub max_conns: Option<Spanned<usize>>,
    pub max_pipeline: Option<Spanned<usize>>,
    pub header_timeout: Option<Spanned<Dur>>,
    pub keepalive_timeout: Option<Spanned<Dur>>,
    pub send_timeout: Option<Spanned<Dur>>,
    pub shutdown_timeout: Option<Spanned<Dur>>,
    pub cache_valid: Option<Spanned<Dur>>,
    pub cache_entries: Option<Spanned<usize>>,
    pub cache_bytes: Option<Spanned<Size>>,
    pub small_file_max: Option<Spanned<Size>>,
    pub pipe_pool: Option<Spanned<usize>>,
    pub pipe_size: Option<Spanned<Size>>,
    pub proxy_splice_min: Option<Spanned<Size>>,
    pub notsent_lowat: Option<Spanned<Size>>,
    pub defer_accept: Option<Spanned<Dur>>,
    pub busy_poll: Option<Spanned<Dur>>,
    pub cgi_max_procs: Option<Spanned<usize>>,
    /// Where ringd keeps its local CA and issued certificates (`--data-dir`).
    pub data_dir: Option<Spanned<String>>,
    /// Addresses (or CIDR blocks) whose X-Forwarded-* and Forwarded fields are trusted.
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    /// Named groups of upstream servers for `proxy` routes.
    pub upstreams: Option<BTreeMap<String, Spanned<UpstreamFile>>>,
    /// The response cache's limits (`[cache]`).
    pub cache: Option<Spanned<CacheFile>>,
    #[serde(default)]
    pub sites: Vec<Spanned<SiteFile>>,
}

/// `[cache] max_bytes, max_entry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub max_bytes: Option<Size>,
    pub max_entry: Option<Size>,
    /// Peers (addresses or CIDR blocks) whose `PURGE` requests are obeyed.
    pub purge_from: Option<Vec<Spanned<String>>>,
    /// A path answered with every worker's cache counters (JSON) to `purge_from` peers.
    pub status_path: Option<Spanned<String>>,
}

/// A route's `cache = { default_ttl, stale_while_revalidate, stale_if_error }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheFile {
    pub default_ttl: Option<Dur>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub store_set_cookie: Option<bool>,
}

/// One `[upstreams.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub servers: Spanned<Vec<Spanned<String>>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub keepalive: Option<usize>,
    pub idle_timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Dur>,
    pub health: Option<Spanned<HealthFile>>,
    pub retries: Option<u32>,
    pub buffer_requests: Option<Spanned<bool>>,
    pub buffer_responses: Option<Size>,
}

/// `health = { path, interval, expect }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub path: Spanned<String>,
    pub interval: Option<Dur>,
    pub expect: Option<u16>,
}

/// `proxy = { upstream, strip_prefix, headers }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub upstream: Spanned<String>,
    pub strip_prefix: Option<Spanned<String>>,
    pub headers: Option<Spanned<HeadersFile>>,
}

/// One `[[sites]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub root: Option<Spanned<String>>,
    pub index: Option<Vec<String>>,
    pub errors: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub browse: Option<bool>,
    pub respond: Option<Spanned<RespondFile>>,
    pub redirect: Option<Spanned<RedirectFile>>,
    pub headers: Option<Spanned<HeadersFile>>,
    /// HTTPS for this site: `{ cert, key }`, or `"internal"` (ringd's local CA).
    pub tls: Option<Spanned<TlsFile>>,
    /// Plain HTTP requests for this site get 308 to the same URL over https.
    pub redirect_http: Option<bool>,
    /// With `tls = "acme"`: the ACME CA and account (`{ directory, email, ... }`).
    pub acme: Option<Spanned<AcmeFile>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
}

/// `acme = { directory = "https://...", email = "...", ca_root = "...", challenge = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    pub directory: Spanned<String>,
    pub email: Option<Spanned<String>>,
    pub ca_root: Option<Spanned<String>>,
    pub challenge: Option<Spanned<String>>,
}

/// A site's `tls`: a mode name (`"internal"`) or certificate files.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TlsFile {
    Mode(String),
    Files(TlsFilesFile),
}

/// `tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFilesFile {
    pub cert: String,
    pub key: String,
}

/// One `[[sites.routes]]` table: a matcher, modifiers, at most one handler.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub path: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub headers: Option<Spanned<HeadersFile>>,
    pub redirect: Option<Spanned<RedirectFile>>,
    pub rewrite: Option<Spanned<String>>,
    pub try_files: Option<Spanned<Vec<Spanned<String>>>>,
    pub respond: Option<Spanned<RespondFile>>,
    pub root: Option<Spanned<String>>,
    pub browse: Option<bool>,
    pub proxy: Option<Spanned<ProxyFile>>,
    pub cgi: Option<Spanned<CgiFile>>,
    pub wsgi: Option<Spanned<WsgiFile>>,
    pub cache: Option<Spanned<RouteCacheFile>>,
    pub compress: Option<Spanned<Vec<String>>>,
}

/// `cgi = { dir = "cgi-bin", timeout = "30s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgiFile {
    pub dir: Spanned<String>,
    pub timeout: Option<Dur>,
}

/// `wsgi = { app = "mysite.wsgi:application", timeout = "30s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsgiFile {
    pub app: Spanned<String>,
    pub timeout: Option<Dur>,
}

/// `redirect = { to = "...", status = 301 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    pub to: Spanned<String>,
    pub status: Option<Spanned<u16>>,
}

/// `respond = { status = 418, body = "...", headers = { ... } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondFile {
    pub status: Option<Spanned<u16>>,
    pub body: Option<String>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
}

/// `headers = { set = { "Name" = "value" }, remove = ["Name"] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    pub set: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// One error in a config file, at a byte range of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column (0, 0 when the error has no place in the file).
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Errors collected while loading one file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets of one file's text into `file:line:col` errors.
pub struct Locator<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].chars().count() + 1)
    }

    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, col) = span.map_or((0, 0), |s| self.line_col(s.start));
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// Parses `text` (the contents of `file`) into the file's shape.
pub fn parse(file: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let loc = Locator { file, text };
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let message = improve_message(e.message(), text, e.span());
        loc.error(e.span(), message)
    })
}

/// serde's "unknown field `x`, expected one of `a`, `b`" becomes "unknown key `x` (did you
/// mean `a`?); known keys: ..."; other messages are kept, with the offending key named where
/// the span shows one.
fn improve_message(msg: &str, text: &str, span: Option<Range<usize>>) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let mut out = format!("unknown key `{name}`");
        if let Some(best) = closest(name, &known) {
            out.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if !known.is_empty() {
            out.push_str(&format!("; known keys here: {}", known.join(", ")));
        }
        return out;
    }
    // Name the key whose value is wrong, when the span starts at a value after `key =`.
    if let Some(s) = span {
        if let Some(key) = key_before(text, s.start) {
            if !msg.contains(&format!("`{key}`")) {
                return format!("`{key}`: {msg}");
            }
        }
    }
    msg.to_string()
}

/// The key of `key = <value at at>` on the same line, if the text there looks like that.
fn key_before(text: &str, at: usize) -> Option<&str> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..at.min(text.len())];
    let (lhs, _) = before.rsplit_once('=')?;
    let key = lhs.rsplit(['{', ',', '[']).next()?.trim().trim_matches('"');
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    ok.then_some(key)
}

/// The known name closest to `name` by edit distance, if close enough to be a likely typo.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let (d, best) = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .min_by_key(|(d, _)| *d)?;
    (d <= (name.len().max(best.len()) / 3).max(2)).then_some(best)
}

/// Levenshtein distance over characters (key names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(Path::new("ringd.toml"), text).unwrap_err()
    }

    #[test]
    fn unknown_key_names_line_col_and_closest_key() {
        let e = err("workers = 1\n\n[[sites]]\nhosts = [\"a\"]\nrooot = \"x\"\n");
        assert_eq!((e.line, e.col), (5, 1), "{e}");
        assert!(e.message.contains("unknown key `rooot`"), "{e}");
        assert!(e.message.contains("did you mean `root`?"), "{e}");
        let s = e.to_string();
        assert!(s.starts_with("ringd.toml:5:1: unknown key `rooot`"), "{s}");
    }

    #[test]
    fn unknown_top_level_and_route_keys() {
        let e = err("listne = [\"127.0.0.1:1\"]\n");
        assert!(e.message.contains("did you mean `listen`?"), "{e}");
        let e = err("[[sites]]\nhosts = [\"a\"]\n[[sites.routes]]\npath = \"/\"\nredirct = { to = \"/x\" }\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("did you mean `redirect`?"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err("workers = \"two\"\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("workers"), "{e}");
        let e = err("max_body = \"12parsecs\"\n");
        assert!(e.message.contains("max_body"), "{e}");
        assert!(e.message.contains("unknown size unit"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let e = err("workers = 1\n[[sites]\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn closest_only_suggests_near_names() {
        assert_eq!(closest("rooot", &["root", "hosts"]), Some("root"));
        assert_eq!(closest("zzzzzzzz", &["root", "hosts"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// The field names serde knows for `T`, from its "unknown field" error (so the list comes
    /// from the types themselves and cannot drift).
    fn fields<T: serde::de::DeserializeOwned + std::fmt::Debug>(extra: &str) -> Vec<String> {
        let text = format!("{extra}zz_not_a_key = 1\n");
        let e = toml::from_str::<T>(&text).unwrap_err();
        let msg = e.message().to_string();
        let tail = msg.split_once("expected").map_or("", |(_, t)| t);
        tail.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// docs/config.md documents every key of every table, as a table row "| `key` |".
    #[test]
    fn docs_config_md_names_every_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md"))
            .expect("docs/config.md");
        let mut all = Vec::new();
        all.extend(fields::<FileConfig>(""));
        all.extend(fields::<SiteFile>("hosts = []\n"));
        all.extend(fields::<RouteFile>(""));
        all.extend(fields::<RedirectFile>("to = \"/\"\n"));
        all.extend(fields::<RespondFile>(""));
        all.extend(fields::<HeadersFile>(""));
        all.extend(fields::<UpstreamFile>("servers = []\n"));
        all.extend(fields::<HealthFile>("path = \"/\"\n"));
        all.extend(fields::<ProxyFile>("upstream = \"a\"\n"));
        all.extend(fields::<CgiFile>("dir = \"a\"\n"));
        all.extend(fields::<WsgiFile>("app = \"a:b\"\n"));
        all.extend(fields::<CacheFile>(""));
        all.extend(fields::<RouteCacheFile>(""));
        all.extend(fields::<TlsFilesFile>("cert = \"a\"\n"));
        all.extend(fields::<AcmeFile>("directory = \"a\"\n"));
        assert!(all.len() > 40, "serde listed only {all:?}");
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !doc.contains(&format!("| `{k}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/config.md lacks rows for {missing:?}"
        );
    }
}

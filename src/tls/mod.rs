//! TLS termination with rustls (sans-IO): the server configuration (certificates picked by
//! SNI, ALPN `http/1.1`, TLS 1.2 and 1.3, session tickets), and the per-connection record
//! layer that `Session` runs between the driver's bytes and HTTP (`session_tls.rs`).
//!
//! The crypto provider is *ring*, chosen by build cost: it builds with a C compiler alone
//! (about 20 s here), where aws-lc-rs compiles all of AWS-LC (and wants cmake for some
//! configurations) on every fresh CI machine. Both run AES-GCM and P-256 in assembly; their
//! speed was not compared here. The benchmark (`bench.sh --scenarios tls-small`) measures
//! ringd with ring against nginx with OpenSSL.

pub mod acme;
pub mod ktls;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::config::sites::{HostPattern, SiteTls};
use crate::config::Sites;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Most plaintext handed to rustls per flight of records (four full records).
pub const CHUNK: usize = 4 * 16 * 1024;

/// What went wrong setting TLS up (certificate files, keys).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}

/// The TLS side of the listener, shared by every worker (`Config::tls`).
pub struct TlsSetup {
    /// The rustls server configuration (certificate resolver, ticketer, ALPN).
    pub config: Arc<rustls::ServerConfig>,
    /// Every site is HTTPS: a plain HTTP request gets 400 (nginx's "The plain HTTP request
    /// was sent to HTTPS port"). Otherwise plain requests are served as HTTP on the same port.
    pub only: bool,
    /// The certificates by name; replaced in place when internal certificates are renewed.
    pub resolver: Arc<SniResolver>,
    /// Connections hand their record layer to kernel TLS after the handshake (the kernel
    /// offers it and `--no-ktls` was not given; `enable_secret_extraction` is on).
    pub ktls: bool,
    /// How the certificates were made, to make them again (renewal).
    plan: Plan,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("only", &self.only)
            .field("ktls", &self.ktls)
            .finish()
    }
}

impl TlsSetup {
    /// Where the certificates come from, in a line (`ringd doctor`, the start-up log).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.plan.flag.is_some() {
            parts.push("--tls-cert".to_string());
        }
        for (name, hosts, t) in &self.plan.sites {
            parts.push(match t {
                SiteTls::Files { cert, .. } => format!("{name}: {}", cert.display()),
                SiteTls::Internal => format!("{name}: internal CA"),
                SiteTls::Acme(a) => {
                    let held = self
                        .plan
                        .data
                        .as_deref()
                        .and_then(|d| acme::load(d, a, name, hosts));
                    let state = match held {
                        Some(c) => {
                            format!("certificate until {}", httpdate::fmt_http_date(c.not_after))
                        }
                        None => "no certificate yet".into(),
                    };
                    format!("{name}: ACME {} ({state})", a.directory)
                }
            });
        }
        let mode = if self.only {
            "HTTPS only"
        } else {
            "HTTPS and plain HTTP on one port"
        };
        format!("{mode}; certificates: {}", parts.join(", "))
    }

    /// How records are made after the handshake, in a line (`ringd doctor`, the start-up
    /// log).
    pub fn record_mode(&self) -> &'static str {
        if self.ktls {
            "kernel TLS after the handshake (kTLS: file bodies by sendfile/splice)"
        } else {
            "userspace records (rustls: files read and encrypted, no splice)"
        }
    }

    /// Whether some certificate comes from the local CA (and so needs renewing).
    pub fn has_internal(&self) -> bool {
        self.plan
            .sites
            .iter()
            .any(|(_, _, t)| *t == SiteTls::Internal)
    }

    /// Whether some site answers ACME HTTP-01 challenges on this listener's plain requests.
    pub fn answers_http01(&self) -> bool {
        self.plan.sites.iter().any(|(_, _, t)| {
            matches!(t, SiteTls::Acme(a) if a.challenge == crate::config::sites::AcmeChallenge::Http01)
        })
    }

    /// The ACME challenges being answered now.
    pub fn challenges(&self) -> &acme::Challenges {
        &self.resolver.challenges
    }
}

/// The inputs of the certificate table: the flag's certificate, each TLS site's names and
/// source, and the data folder of the local CA.
#[derive(Clone, Default)]
struct Plan {
    flag: Option<Arc<CertifiedKey>>,
    sites: Vec<(String, Vec<String>, SiteTls)>,
    data: Option<PathBuf>,
}

impl Plan {
    /// Loads or issues every certificate, and lists the names of ACME sites that have none
    /// yet (their handshakes fail). Errors name the site and the file.
    fn certs(&self, now: SystemTime) -> Result<(Vec<SiteCert>, Vec<String>), String> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut ca = None;
        for (name, hosts, t) in &self.sites {
            let key = match t {
                SiteTls::Files { cert, key } => {
                    load_pem(cert, key).map_err(|e| format!("site {name}: tls: {e}"))?
                }
                SiteTls::Internal => {
                    let data = self.data.as_deref().ok_or_else(|| {
                        format!(
                            "site {name}: tls = \"internal\" needs a data folder: give \
                             --data-dir (or set HOME or XDG_DATA_HOME)"
                        )
                    })?;
                    if ca.is_none() {
                        ca = Some(
                            store::LocalCa::open_or_create(data)
                                .map_err(|e| format!("local CA: {e}"))?,
                        );
                    }
                    let mut names: Vec<String> =
                        hosts.iter().filter(|h| *h != "_").cloned().collect();
                    if names.is_empty() {
                        names.push("localhost".into());
                    }
                    let ca = ca.as_ref().expect("made above");
                    ca.site_cert(data, name, &names, now)
                        .map_err(|e| format!("site {name}: internal certificate: {e}"))?
                }
                SiteTls::Acme(a) => {
                    let data = self.data.as_deref().ok_or_else(|| {
                        format!(
                            "site {name}: tls = \"acme\" needs a data folder: give \
                             --data-dir (or set HOME or XDG_DATA_HOME)"
                        )
                    })?;
                    match acme::load(data, a, name, hosts) {
                        Some(c) => c.key,
                        None => {
                            pending.extend(hosts.iter().cloned());
                            continue;
                        }
                    }
                }
            };
            out.push(SiteCert {
                hosts: hosts.clone(),
                key,
            });
        }
        if let Some(k) = &self.flag {
            // The flag's certificate answers every name no site claims.
            out.push(SiteCert {
                hosts: vec!["_".into()],
                key: k.clone(),
            });
        }
        Ok((out, pending))
    }

    fn has_acme(&self) -> bool {
        self.sites
            .iter()
            .any(|(_, _, t)| matches!(t, SiteTls::Acme(_)))
    }
}

/// The TLS setup for `sites` (each with its own `tls`) and the `--tls-cert` certificate
/// `flag`, if any; None when nothing asks for TLS. `data` is the data folder (local CA).
/// The listener is HTTPS-only when the flag is given or every site has `tls`; otherwise
/// the first byte of each connection picks TLS or plain HTTP. With `ktls` (not
/// `--no-ktls`), connections move to kernel TLS after the handshake where the kernel offers
/// it (probed once per process).
pub fn setup_for(
    sites: &Sites,
    flag: Option<Arc<CertifiedKey>>,
    data: Option<PathBuf>,
    ktls: bool,
) -> Result<Option<TlsSetup>, String> {
    let mut plan = Plan {
        flag,
        sites: Vec::new(),
        data,
    };
    for s in &sites.sites {
        if let Some(t) = &s.tls {
            let hosts = s
                .hosts
                .iter()
                .map(|h| match h {
                    HostPattern::Exact(n) => n.clone(),
                    HostPattern::Wildcard(suffix) => format!("*{suffix}"),
                    HostPattern::Default => "_".into(),
                })
                .collect();
            plan.sites.push((s.name.clone(), hosts, t.clone()));
        }
    }
    if plan.flag.is_none() && plan.sites.is_empty() {
        return Ok(None);
    }
    let only = plan.flag.is_some() || plan.sites.len() == sites.sites.len();
    let (certs, pending) = plan.certs(SystemTime::now())?;
    let mut setup =
        server_config_with(&certs, &pending, only, plan.has_acme()).map_err(|e| e.to_string())?;
    setup.plan = plan;
    if ktls && ktls::available() {
        if let Some(cfg) = Arc::get_mut(&mut setup.config) {
            cfg.enable_secret_extraction = true;
            setup.ktls = true;
        }
    }
    Ok(Some(setup))
}

/// Which TLS setup's background threads run: each `spawn_renewer` starts a generation and
/// the threads of older ones end. (A `Weak` alone would not end them after a reload: the
/// first `Config` lives as long as `serve`.)
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether `generation` is still the one whose threads should run.
fn is_current(generation: u64) -> bool {
    GENERATION.load(std::sync::atomic::Ordering::SeqCst) == generation
}

/// How often the renewal thread looks at the internal certificates.
const RENEW_EVERY: Duration = Duration::from_secs(3600);

/// Starts the thread that renews internal certificates (two thirds into their lifetime)
/// while the server runs, off the request path; new handshakes get the new certificate.
/// It ends once `setup` is dropped (a reload made a new one, or the server stopped).
/// Also starts the ACME management thread (`acme.rs`) when some site has `tls = "acme"`.
pub fn spawn_renewer(setup: &Arc<TlsSetup>) {
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    acme::spawn_manager(setup, generation);
    if !setup.has_internal() {
        return;
    }
    let weak: Weak<TlsSetup> = Arc::downgrade(setup);
    let _ = std::thread::Builder::new()
        .name("ringd-tls-renew".into())
        .spawn(move || loop {
            std::thread::sleep(RENEW_EVERY);
            if !is_current(generation) {
                return;
            }
            let Some(s) = weak.upgrade() else { return };
            match s.plan.certs(SystemTime::now()) {
                Ok((certs, pending)) => s.resolver.replace(&certs, &pending),
                Err(e) => eprintln!("ringd: certificate renewal failed: {e}"),
            }
        });
}

/// One site's certificate with the host names it answers for.
pub struct SiteCert {
    /// Exact names and `*.suffix` wildcards (as in a site's `hosts`); `_` = the default.
    pub hosts: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// Reads a PEM certificate chain and private key into a signing key for rustls.
pub fn load_pem(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_err = |path: &Path, msg: String| TlsError::File {
        path: path.to_path_buf(),
        msg,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(cert, "holds no CERTIFICATE block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("no PEM private key found: {e}")))?;
    certified(certs, key_der).map_err(|m| file_err(key, m))
}

/// A chain and its key as rustls's signing key; checks that they belong together.
pub fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let ck = CertifiedKey::from_der(certs, key, &provider::default_provider())
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    Ok(Arc::new(ck))
}

/// Picks a certificate by the ClientHello's server name: exact name, then the longest
/// `*.suffix` wildcard, then the default (a `_` site, else the first site with TLS).
#[derive(Debug, Default)]
pub struct SniResolver {
    table: RwLock<Arc<Table>>,
    /// ACME challenges: a ClientHello offering ALPN `acme-tls/1` gets the TLS-ALPN-01
    /// certificate for its name and nothing else.
    pub challenges: acme::Challenges,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// (".suffix", key), longest suffix first.
    wild: Vec<(String, Arc<CertifiedKey>)>,
    /// Names of ACME sites without a certificate yet: no certificate (the handshake fails).
    pending: HashSet<String>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(sites: &[SiteCert]) -> SniResolver {
        SniResolver {
            table: RwLock::new(Arc::new(Table::new(sites, &[]))),
            challenges: acme::Challenges::default(),
        }
    }

    /// Serve `sites` from the next handshake on (renewal); `pending` names get none.
    pub fn replace(&self, sites: &[SiteCert], pending: &[String]) {
        let t = Arc::new(Table::new(sites, pending));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The certificate for `name` (None: the default).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        t.pick(name)
    }
}

impl Table {
    fn new(sites: &[SiteCert], pending: &[String]) -> Table {
        let mut r = Table {
            pending: pending.iter().map(|h| h.to_ascii_lowercase()).collect(),
            ..Table::default()
        };
        for s in sites {
            for h in &s.hosts {
                let h = h.to_ascii_lowercase();
                if h == "_" {
                    r.default = Some(s.key.clone());
                } else if let Some(suffix) = h.strip_prefix('*') {
                    r.wild.push((suffix.to_string(), s.key.clone()));
                } else {
                    r.exact.entry(h).or_insert_with(|| s.key.clone());
                }
            }
        }
        r.wild.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        if r.default.is_none() {
            r.default = sites.first().map(|s| s.key.clone());
        }
        r
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(n) = name {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&n) {
                return Some(k.clone());
            }
            if self.pending.contains(&n) {
                return None;
            }
            for (suffix, k) in &self.wild {
                if n.len() > suffix.len() && n.ends_with(suffix.as_str()) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(mut alpn) = hello.alpn() {
            if alpn.any(|p| p == acme::ALPN_ACME) {
                return self.challenges.alpn(hello.server_name());
            }
        }
        self.pick(hello.server_name())
    }
}

/// The server configuration every worker shares: TLS 1.3 and 1.2, ALPN `http/1.1`, stateless
/// session tickets (rustls's ticketer, whose key rotates every 6 hours; one for all workers,
/// so a client resumes whichever worker SO_REUSEPORT hands it to), and a session-ID cache for
/// TLS 1.2 clients without tickets.
pub fn server_config(sites: &[SiteCert], only: bool) -> Result<TlsSetup, TlsError> {
    server_config_with(sites, &[], only, false)
}

/// [`server_config`] with ACME: `pending` names get no certificate yet, and with `acme`
/// ALPN `acme-tls/1` is offered too (TLS-ALPN-01; such a connection never carries HTTP).
fn server_config_with(
    sites: &[SiteCert],
    pending: &[String],
    only: bool,
    acme: bool,
) -> Result<TlsSetup, TlsError> {
    let resolver = Arc::new(SniResolver {
        table: RwLock::new(Arc::new(Table::new(sites, pending))),
        challenges: acme::Challenges::default(),
    });
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Other(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme {
        cfg.alpn_protocols.push(acme::ALPN_ACME.to_vec());
    }
    cfg.ticketer =
        provider::Ticketer::new().map_err(|e| TlsError::Other(format!("session tickets: {e}")))?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    cfg.send_tls13_tickets = 2;
    Ok(TlsSetup {
        config: Arc::new(cfg),
        only,
        resolver,
        ktls: false,
        plan: Plan::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let der = PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        certified(vec![c.cert.der().clone()], der).unwrap()
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_default() {
        let (a, b, w, d) = (key("a.test"), key("b.test"), key("x.w.test"), key("d.test"));
        let r = SniResolver::new(&[
            SiteCert {
                hosts: vec!["a.test".into(), "A2.test".into()],
                key: a.clone(),
            },
            SiteCert {
                hosts: vec!["*.test".into()],
                key: b.clone(),
            },
            SiteCert {
                hosts: vec!["*.w.test".into()],
                key: w.clone(),
            },
            SiteCert {
                hosts: vec!["_".into()],
                key: d.clone(),
            },
        ]);
        let is = |n: Option<&str>, k: &Arc<CertifiedKey>| Arc::ptr_eq(&r.pick(n).unwrap(), k);
        assert!(is(Some("a.test"), &a));
        assert!(is(Some("a2.test."), &a));
        assert!(is(Some("zz.test"), &b));
        assert!(is(Some("q.w.test"), &w));
        assert!(is(Some("other.example"), &d));
        assert!(is(None, &d));
        // No `_` site: the first one is the default.
        let r = SniResolver::new(&[SiteCert {
            hosts: vec!["a.test".into()],
            key: a.clone(),
        }]);
        assert!(Arc::ptr_eq(&r.pick(Some("nope")).unwrap(), &a));
    }
}

//! TLS termination with rustls (sans-IO): the server configuration (certificates picked by
//! SNI, ALPN `http/1.1`, TLS 1.2 and 1.3, session tickets), and the per-connection record
//! layer that `Session` runs between the driver's bytes and HTTP (`session_tls.rs`).
//!
//! The crypto provider is *ring*: it builds with a C compiler alone (aws-lc-rs needs cmake
//! and a much longer C build on CI), and on this machine's AES-NI both run AES-GCM in
//! assembly at the same speed per record (see README "HTTPS").

pub mod ktls;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("only", &self.only)
            .finish()
    }
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
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// (".suffix", key), longest suffix first.
    wild: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(sites: &[SiteCert]) -> SniResolver {
        let mut r = SniResolver::default();
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

    /// The certificate for `name` (None: the default).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(n) = name {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&n) {
                return Some(k.clone());
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
        self.pick(hello.server_name())
    }
}

/// The server configuration every worker shares: TLS 1.3 and 1.2, ALPN `http/1.1`, stateless
/// session tickets (rustls's ticketer, whose key rotates every 6 hours; one for all workers,
/// so a client resumes whichever worker SO_REUSEPORT hands it to), and a session-ID cache for
/// TLS 1.2 clients without tickets.
pub fn server_config(sites: &[SiteCert], only: bool) -> Result<TlsSetup, TlsError> {
    let resolver = SniResolver::new(sites);
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Other(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ticketer =
        provider::Ticketer::new().map_err(|e| TlsError::Other(format!("session tickets: {e}")))?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    cfg.send_tls13_tickets = 2;
    Ok(TlsSetup {
        config: Arc::new(cfg),
        only,
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

//! ACME (`tls = "acme"`): certificates obtained and renewed from an ACME CA (Let's Encrypt,
//! or a private one such as Pebble or step-ca) by one management thread per process, off the
//! request path. Workers only ever read: the certificates through the shared SNI resolver,
//! the pending challenges through [`Challenges`] (HTTP-01 answers in `session_tls.rs`,
//! TLS-ALPN-01 certificates in the resolver).
//!
//! The ACME protocol itself (JWS, nonces, orders) is instant-acme's; ringd makes the CSR and
//! the TLS-ALPN-01 certificate with rcgen, keeps the account and certificates in the data
//! folder (`acme/<directory>/account-<email>.json`, `<site>.pem`, `.key`, `.names`), and
//! renews two thirds into a certificate's lifetime. Until a site has a certificate, a
//! handshake for its names fails (as Caddy's does: a stand-in self-signed certificate would
//! teach people to click through a warning, and HSTS sites cannot be clicked through anyway);
//! the log says so. A failed attempt (CA unreachable, challenge refused) is logged once with
//! its reason and retried with exponential backoff; other sites keep being served.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

use crate::config::sites::{AcmeChallenge, AcmeSettings, SiteTls};

use super::TlsSetup;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// First wait after a failed attempt; doubled after each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Least wait after the CA refused a challenge: public CAs count failed validations (Let's
/// Encrypt allows 5 an hour per name), where a CA that could not be reached counts nothing.
const REFUSED_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Most time one attempt (account, order, challenges, certificate) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(120);
/// How a failure the CA decided (a refused challenge) starts.
const REFUSED: &str = "challenge refused by the CA";
/// How an order fails when the CA no longer knows the stored account.
const STALE_ACCOUNT: &str =
    "the CA does not know the stored account (a new one is registered at the next attempt)";
/// The least time between two passes over the sites.
const MIN_PAUSE: Duration = Duration::from_secs(1);
/// The thread looks at least this often whether its setup is still in use.
const TICK: Duration = Duration::from_millis(500);

/// The challenges being answered now, shared by the management thread (writer) and the
/// workers (readers).
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → (host, key authorization).
    http: RwLock<HashMap<String, (String, String)>>,
    /// TLS-ALPN-01: host → the self-signed certificate carrying the acmeIdentifier.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for `token` when it was issued for `host` (no port).
    pub fn http(&self, token: &str, host: &str) -> Option<String> {
        let m = self.http.read().unwrap_or_else(|e| e.into_inner());
        m.get(token)
            .filter(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, ka)| ka.clone())
    }

    /// The TLS-ALPN-01 certificate for `host`, if one is being validated.
    pub fn alpn(&self, host: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let host = host?.trim_end_matches('.').to_ascii_lowercase();
        let m = self.alpn.read().unwrap_or_else(|e| e.into_inner());
        m.get(&host).cloned()
    }

    fn put_http(&self, token: &str, host: &str, ka: &str) {
        let mut m = self.http.write().unwrap_or_else(|e| e.into_inner());
        m.insert(token.into(), (host.to_ascii_lowercase(), ka.into()));
    }

    fn put_alpn(&self, host: &str, key: Arc<CertifiedKey>) {
        let mut m = self.alpn.write().unwrap_or_else(|e| e.into_inner());
        m.insert(host.to_ascii_lowercase(), key);
    }

    fn clear(&self, tokens: &[String], hosts: &[String]) {
        let mut m = self.http.write().unwrap_or_else(|e| e.into_inner());
        for t in tokens {
            m.remove(t);
        }
        drop(m);
        let mut m = self.alpn.write().unwrap_or_else(|e| e.into_inner());
        for h in hosts {
            m.remove(&h.to_ascii_lowercase());
        }
    }
}

/// A certificate from the data folder with its validity.
pub struct Stored {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Stored {
    /// Two thirds into the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// The folder of one ACME CA's account and certificates: `acme/<host_port_path>/`.
fn ca_dir(data: &Path, s: &AcmeSettings) -> PathBuf {
    let rest = s
        .directory
        .split_once("://")
        .map_or(s.directory.as_str(), |(_, r)| r);
    data.join("acme").join(super::store::sanitize(rest))
}

/// Where the account of `s` is kept.
pub fn account_path(data: &Path, s: &AcmeSettings) -> PathBuf {
    let who = s.email.as_deref().unwrap_or("anonymous");
    ca_dir(data, s).join(format!("account-{}.json", super::store::sanitize(who)))
}

/// Where site `name`'s certificate chain is kept (`.key` and `.names` beside it).
pub fn cert_path(data: &Path, s: &AcmeSettings, name: &str) -> PathBuf {
    ca_dir(data, s).join(format!("{}.pem", super::store::sanitize(name)))
}

/// The certificate on disk for site `name`, when it covers exactly `hosts` and has not
/// expired.
pub fn load(data: &Path, s: &AcmeSettings, name: &str, hosts: &[String]) -> Option<Stored> {
    let pem = cert_path(data, s, name);
    let names = fs::read_to_string(pem.with_extension("names")).ok()?;
    if names != hosts.join("\n") {
        return None;
    }
    let key = super::load_pem(&pem, &pem.with_extension("key")).ok()?;
    let (not_before, not_after) = validity(key.cert.first()?)?;
    (SystemTime::now() < not_after).then_some(Stored {
        key,
        not_before,
        not_after,
    })
}

/// A certificate's notBefore and notAfter.
fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: i64| {
        u64::try_from(t)
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    };
    let v = c.validity();
    Some((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

/// An error with its sources ("client error (Connect): tcp connect error: Connection
/// refused"): hyper's own message alone hides the reason.
fn why(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// One ACME site as the management thread tracks it.
struct SiteState {
    name: String,
    hosts: Vec<String>,
    acme: AcmeSettings,
    /// After a failure: not before this.
    retry_at: Option<SystemTime>,
    backoff: Duration,
    attempts: u32,
}

/// Starts the ACME management thread when some site has `tls = "acme"`. It ends once
/// `setup` is dropped or `generation` is no longer current (a reload started another).
pub fn spawn_manager(setup: &Arc<TlsSetup>, generation: u64) {
    let Some(data) = setup.plan.data.clone() else {
        return;
    };
    let sites: Vec<SiteState> = setup
        .plan
        .sites
        .iter()
        .filter_map(|(name, hosts, t)| match t {
            SiteTls::Acme(a) => Some(SiteState {
                name: name.clone(),
                hosts: hosts.clone(),
                acme: a.clone(),
                retry_at: None,
                backoff: FIRST_BACKOFF,
                attempts: 0,
            }),
            _ => None,
        })
        .collect();
    if sites.is_empty() {
        return;
    }
    let weak = Arc::downgrade(setup);
    let _ = std::thread::Builder::new()
        .name("ringd-acme".into())
        .spawn(move || manage(weak, generation, data, sites));
}

fn manage(weak: Weak<TlsSetup>, generation: u64, data: PathBuf, mut sites: Vec<SiteState>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringd: acme: cannot start the management thread's runtime: {e}");
            return;
        }
    };
    for s in &sites {
        match load(&data, &s.acme, &s.name, &s.hosts) {
            Some(c) => eprintln!(
                "ringd: acme: site {}: certificate from {} valid until {}, renewal at {}",
                s.name,
                cert_path(&data, &s.acme, &s.name).display(),
                httpdate::fmt_http_date(c.not_after),
                httpdate::fmt_http_date(c.renew_at()),
            ),
            None => eprintln!(
                "ringd: acme: site {}: no certificate yet; TLS handshakes for {} fail until \
                 one is issued by {}",
                s.name,
                s.hosts.join(", "),
                s.acme.directory
            ),
        }
    }
    let mut accounts: HashMap<PathBuf, Account> = HashMap::new();
    let live = || super::is_current(generation) && weak.strong_count() > 0;
    loop {
        if !live() {
            return;
        }
        let Some(setup) = weak.upgrade() else { return };
        let now = SystemTime::now();
        let mut wake = now + MAX_BACKOFF;
        for s in &mut sites {
            if !live() {
                return;
            }
            if let Some(r) = s.retry_at.filter(|r| *r > now) {
                wake = wake.min(r);
                continue;
            }
            let stored = load(&data, &s.acme, &s.name, &s.hosts);
            let why = match &stored {
                None => "no certificate yet",
                Some(c) if now >= c.renew_at() => "two thirds of its lifetime have passed",
                Some(c) => {
                    wake = wake.min(c.renew_at());
                    continue;
                }
            };
            s.attempts += 1;
            // Said once per series of attempts; each failure gets its own line below.
            if s.attempts == 1 {
                eprintln!(
                    "ringd: acme: site {}: ordering a certificate for {} from {} ({why}; {})",
                    s.name,
                    s.hosts.join(", "),
                    s.acme.directory,
                    match s.acme.challenge {
                        AcmeChallenge::Http01 => "http-01",
                        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
                    }
                );
            }
            let ch = &setup.resolver.challenges;
            let got = rt.block_on(async {
                match tokio::time::timeout(ATTEMPT_LIMIT, obtain(&data, s, &mut accounts, ch)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {ATTEMPT_LIMIT:?}")),
                }
            });
            match got {
                Ok(c) => {
                    eprintln!(
                        "ringd: acme: site {}: certificate issued, valid until {}, renewal at {}",
                        s.name,
                        httpdate::fmt_http_date(c.not_after),
                        httpdate::fmt_http_date(c.renew_at()),
                    );
                    wake = wake.min(c.renew_at());
                    s.retry_at = None;
                    s.backoff = FIRST_BACKOFF;
                    s.attempts = 0;
                    match setup.plan.certs(SystemTime::now()) {
                        Ok((certs, pending)) => setup.resolver.replace(&certs, &pending),
                        Err(e) => eprintln!("ringd: acme: reloading certificates: {e}"),
                    }
                }
                Err(e) => {
                    if e.starts_with(REFUSED) {
                        s.backoff = s.backoff.max(REFUSED_BACKOFF);
                    }
                    eprintln!(
                        "ringd: acme: site {}: attempt {} failed: {e}; next attempt in {}s",
                        s.name,
                        s.attempts,
                        s.backoff.as_secs()
                    );
                    let at = SystemTime::now() + s.backoff;
                    s.retry_at = Some(at);
                    wake = wake.min(at);
                    s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        drop(setup);
        // A CA that issues certificates already due for renewal must not make this spin.
        let wake = wake.max(SystemTime::now() + MIN_PAUSE);
        while SystemTime::now() < wake {
            std::thread::sleep(
                TICK.min(wake.duration_since(SystemTime::now()).unwrap_or_default()),
            );
            if !live() {
                return;
            }
        }
    }
}

/// The account for `s`: read from the data folder, or registered and written there.
async fn account(data: &Path, s: &AcmeSettings) -> Result<Account, String> {
    let builder = || match &s.ca_root {
        Some(p) => {
            Account::builder_with_root(p).map_err(|e| format!("ca_root {}: {e}", p.display()))
        }
        None => Account::builder().map_err(|e| format!("HTTP client: {e}")),
    };
    let path = account_path(data, s);
    if let Ok(text) = fs::read_to_string(&path) {
        let creds: AccountCredentials = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not an ACME account: {e}", path.display()))?;
        return builder()?
            .from_credentials(creds)
            .await
            .map_err(|e| format!("directory {}: {}", s.directory, why(&e)));
    }
    let mail = s.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = mail.iter().map(String::as_str).collect();
    let (acct, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            s.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("registering an account at {}: {}", s.directory, why(&e)))?;
    let json = serde_json::to_string_pretty(&creds).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    super::store::write_file(&path, json.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    eprintln!(
        "ringd: acme: account registered, kept in {}",
        path.display()
    );
    Ok(acct)
}

/// One attempt for site `s`: order, answer the challenges, finalize with a new key, write
/// the chain and key to the data folder.
async fn obtain(
    data: &Path,
    s: &SiteState,
    accounts: &mut HashMap<PathBuf, Account>,
    ch: &Challenges,
) -> Result<Stored, String> {
    let apath = account_path(data, &s.acme);
    let acct = match accounts.get(&apath) {
        Some(a) => a.clone(),
        None => {
            let a = account(data, &s.acme).await?;
            accounts.insert(apath.clone(), a.clone());
            a
        }
    };
    let mut tokens = Vec::new();
    let mut alpn_hosts = Vec::new();
    let r = order(&acct, s, ch, &mut tokens, &mut alpn_hosts).await;
    ch.clear(&tokens, &alpn_hosts);
    if r.as_ref().is_err_and(|e| e.starts_with(STALE_ACCOUNT)) {
        // The CA forgot the account (a test CA restarted, or it was deactivated): keep the
        // old file aside and register anew at the next attempt.
        accounts.remove(&apath);
        let _ = fs::rename(&apath, apath.with_extension("json.stale"));
    }
    let (chain, key_pem) = r?;
    let pem = cert_path(data, &s.acme, &s.name);
    if let Some(dir) = pem.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let w = |p: &Path, b: &str, mode| {
        super::store::write_file(p, b.as_bytes(), mode).map_err(|e| e.to_string())
    };
    w(&pem.with_extension("key"), &key_pem, 0o600)?;
    w(&pem, &chain, 0o644)?;
    w(&pem.with_extension("names"), &s.hosts.join("\n"), 0o644)?;
    load(data, &s.acme, &s.name, &s.hosts)
        .ok_or_else(|| format!("the CA's certificate in {} does not load", pem.display()))
}

/// Whether an ACME problem type (RFC 8555 §6.7) reports a failed validation of a challenge.
fn is_validation_error(ty: Option<&str>) -> bool {
    const KINDS: [&str; 7] = [
        ":connection",
        ":dns",
        ":incorrectResponse",
        ":unauthorized",
        ":tls",
        ":caa",
        ":rejectedIdentifier",
    ];
    ty.is_some_and(|t| {
        t.starts_with("urn:ietf:params:acme:error:") && KINDS.iter().any(|k| t.ends_with(k))
    })
}

/// The order itself; the challenges it set up are listed in `tokens` / `alpn_hosts` so that
/// the caller removes them whatever happens.
async fn order(
    acct: &Account,
    s: &SiteState,
    ch: &Challenges,
    tokens: &mut Vec<String>,
    alpn_hosts: &mut Vec<String>,
) -> Result<(String, String), String> {
    let ids: Vec<Identifier> = s.hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = acct.new_order(&NewOrder::new(&ids)).await.map_err(|e| {
        let msg = format!("new order at {}: {}", s.acme.directory, why(&e));
        match e {
            instant_acme::Error::Api(p)
                if p.r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                format!("{STALE_ACCOUNT}: {msg}")
            }
            _ => msg,
        }
    })?;
    let ty = match s.acme.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a.map_err(|e| format!("authorization: {}", why(&e)))?;
        let host = a.identifier().to_string();
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization for {host} is {other:?}")),
        }
        let mut c = a
            .challenge(ty.clone())
            .ok_or_else(|| format!("the CA offers no {ty:?} challenge for {host}"))?;
        let ka = c.key_authorization();
        match s.acme.challenge {
            AcmeChallenge::Http01 => {
                ch.put_http(&c.token, &host, ka.as_str());
                tokens.push(c.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                ch.put_alpn(&host, alpn_cert(&host, ka.digest().as_ref())?);
                alpn_hosts.push(host.clone());
            }
        }
        c.set_ready().await.map_err(|e| match e {
            // A CA that validates at once (Pebble with PEBBLE_VA_NOSLEEP can) answers the
            // challenge's own POST with the validation's failure: a refusal like any other.
            instant_acme::Error::Api(p) if is_validation_error(p.r#type.as_deref()) => format!(
                "{REFUSED}: {ty:?} for {host}: {} ({})",
                p.detail.as_deref().unwrap_or("no detail"),
                p.r#type.as_deref().unwrap_or("no type"),
            ),
            other => format!("{ty:?} for {host}: {}", why(&other)),
        })?;
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(Duration::from_secs(60));
    let status = order.poll_ready(&retry).await.map_err(|e| match e {
        instant_acme::Error::Api(p) => format!(
            "{REFUSED}: {} ({})",
            p.detail.as_deref().unwrap_or("no detail"),
            p.r#type.as_deref().unwrap_or("no type"),
        ),
        other => format!("validation: {}", why(&other)),
    })?;
    if status != OrderStatus::Ready {
        return Err(refusal(&mut order, status).await);
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(s.hosts.clone()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize: {}", why(&e)))?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| format!("certificate: {}", why(&e)))?;
    Ok((chain, key.serialize_pem()))
}

/// Why the CA refused an order: each failed challenge's error, as the CA words it.
async fn refusal(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut why = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(a)) = authzs.next().await {
        for c in &a.challenges {
            if let Some(e) = &c.error {
                why.push(format!("{} {:?}: {e}", a.identifier(), c.r#type));
            }
        }
    }
    if why.is_empty() {
        format!("the order is {status:?}")
    } else {
        format!("{REFUSED}: {}", why.join("; "))
    }
}

/// The TLS-ALPN-01 certificate for `host` (RFC 8737 §3): self-signed, the one name, and the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_cert(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut p = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("tls-alpn-01 certificate for {host}: {e}"))?;
    p.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = p
        .self_signed(&key)
        .map_err(|e| format!("tls-alpn-01 certificate for {host}: {e}"))?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    // Not `certified`: its key-fits-certificate check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension. The key was made just above.
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("tls-alpn-01 key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn validation_problems_count_as_refusals() {
        assert!(super::is_validation_error(Some(
            "urn:ietf:params:acme:error:connection"
        )));
        assert!(super::is_validation_error(Some(
            "urn:ietf:params:acme:error:incorrectResponse"
        )));
        assert!(!super::is_validation_error(Some(
            "urn:ietf:params:acme:error:badNonce"
        )));
        assert!(!super::is_validation_error(Some(
            "urn:ietf:params:acme:error:rateLimited"
        )));
        assert!(!super::is_validation_error(None));
    }

    use super::*;

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let der = PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        let s = Stored {
            key: super::super::certified(vec![c.cert.der().clone()], der).unwrap(),
            not_before: t0,
            not_after: t0 + Duration::from_secs(90),
        };
        assert_eq!(s.renew_at(), t0 + Duration::from_secs(60));
    }

    #[test]
    fn challenges_answer_only_their_host() {
        let ch = Challenges::default();
        ch.put_http("tok", "A.test", "tok.thumb");
        assert_eq!(ch.http("tok", "a.test").as_deref(), Some("tok.thumb"));
        assert_eq!(ch.http("tok", "b.test"), None);
        assert_eq!(ch.http("other", "a.test"), None);
        let k = alpn_cert("a.test", &[7u8; 32]).unwrap();
        ch.put_alpn("a.test", k);
        assert!(ch.alpn(Some("A.test.")).is_some());
        assert!(ch.alpn(Some("b.test")).is_none());
        ch.clear(&["tok".into()], &["a.test".into()]);
        assert_eq!(ch.http("tok", "a.test"), None);
        assert!(ch.alpn(Some("a.test")).is_none());
    }
}

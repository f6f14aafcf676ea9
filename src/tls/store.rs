//! ringd's data folder and its local CA (`tls = "internal"`): a CA key and certificate made
//! once (`ca/root.pem`, `ca/root.key`, mode 0600), and per-site certificates issued from it
//! (`internal/<site>.pem`, `.key`), valid for [`LIFETIME`] and renewed once two thirds of it
//! have passed (at start, on reload, and by the renewal thread while running).
//!
//! The folder is `--data-dir` (`data_dir` in the config), else `$XDG_DATA_HOME/ringd`, else
//! `$HOME/.local/share/ringd`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// How long an internal site certificate is valid.
pub const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the local CA is valid (10 years; made once).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The CA's name (also how its certificate is recognised when re-read).
const CA_NAME: &str = "ringd local CA";

/// The default data folder: `$XDG_DATA_HOME/ringd`, else `$HOME/.local/share/ringd`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("ringd"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/ringd"))
}

/// Where the local CA's certificate is (what `ringd trust` prints).
pub fn ca_cert_path(data: &Path) -> PathBuf {
    data.join("ca/root.pem")
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        msg: format!("{what}: {e}"),
    }
}

/// Writes `data` to `path` through a temporary file and a rename, with `mode`.
pub(super) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, "cannot write", e))?;
    f.write_all(data)
        .map_err(|e| io_err(&tmp, "cannot write", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, "cannot write", e))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name
        .push(DnType::OrganizationName, "ringd (local development CA)");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// The local CA: made on first use, read back afterwards.
pub struct LocalCa {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, sent after each leaf in the chain.
    der: CertificateDer<'static>,
}

impl LocalCa {
    /// Reads the CA under `data`, or makes it (and the folders) when there is none.
    pub fn open_or_create(data: &Path) -> Result<LocalCa, TlsError> {
        let dir = data.join("ca");
        let cert_path = ca_cert_path(data);
        let key_path = dir.join("root.key");
        if cert_path.exists() && key_path.exists() {
            let key_pem =
                fs::read_to_string(&key_path).map_err(|e| io_err(&key_path, "cannot read", e))?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| io_err(&key_path, "not a PEM private key", e))?;
            let der = CertificateDer::from_pem_file_der(&cert_path)?;
            return Ok(LocalCa {
                params: ca_params(),
                key,
                der,
            });
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "cannot create the folder", e))?;
        let key = KeyPair::generate().map_err(|e| TlsError::Other(format!("CA key: {e}")))?;
        let mut params = ca_params();
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Other(format!("CA certificate: {e}")))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(LocalCa {
            der: cert.der().clone(),
            params: ca_params(),
            key,
        })
    }

    /// The certificate for site `name` with DNS names `hosts`: the one on disk while it
    /// covers the same names and less than two thirds of its lifetime have passed, else a
    /// new one (written to disk).
    pub fn site_cert(
        &self,
        data: &Path,
        name: &str,
        hosts: &[String],
        now: SystemTime,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let dir = data.join("internal");
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "cannot create the folder", e))?;
        let file = sanitize(name);
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        let names_path = dir.join(format!("{file}.names"));
        let want = hosts.join("\n");
        let fresh = fs::read_to_string(&names_path).is_ok_and(|n| n == want)
            && fs::metadata(&cert_path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < LIFETIME * 2 / 3);
        if fresh {
            if let Ok(k) = super::load_pem(&cert_path, &key_path) {
                return Ok(k);
            }
        }
        let key = KeyPair::generate().map_err(|e| TlsError::Other(format!("site key: {e}")))?;
        let mut p = CertificateParams::new(hosts.to_vec())
            .map_err(|e| TlsError::Other(format!("site {name}: {e}")))?;
        p.distinguished_name.push(
            DnType::CommonName,
            hosts.first().map_or(name, |h| h.as_str()),
        );
        p.not_before = (now - Duration::from_secs(3600)).into();
        p.not_after = (now + LIFETIME).into();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| TlsError::Other(format!("site {name}: {e}")))?;
        let ca_pem = fs::read_to_string(ca_cert_path(data)).unwrap_or_default();
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(
            &cert_path,
            format!("{}{}", cert.pem(), ca_pem).as_bytes(),
            0o644,
        )?;
        write_file(&names_path, want.as_bytes(), 0o644)?;
        let der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Other(format!("site key: {e}")))?;
        super::certified(vec![cert.der().clone(), self.der.clone()], der).map_err(TlsError::Other)
    }
}

/// A site name as a file name: letters, digits, `-`, `.`; everything else `_`.
pub(super) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

trait FromPemFileDer: Sized {
    fn from_pem_file_der(p: &Path) -> Result<Self, TlsError>;
}

impl FromPemFileDer for CertificateDer<'static> {
    fn from_pem_file_der(p: &Path) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(p).map_err(|e| io_err(p, "not a PEM certificate", e))
    }
}

/// What `ringd trust` prints: where the CA is and how to make this machine trust it.
pub fn trust_text(data: &Path) -> String {
    let ca = ca_cert_path(data);
    let state = if ca.exists() {
        "exists"
    } else {
        "will be made the first time a site with tls = \"internal\" is served"
    };
    format!(
        "ringd's local CA certificate: {ca}\n  ({state})\n\n\
         Trust it on this machine (Debian/Ubuntu):\n  \
         sudo cp {ca} /usr/local/share/ca-certificates/ringd-local-ca.crt && sudo update-ca-certificates\n\
         Fedora/RHEL:\n  \
         sudo cp {ca} /etc/pki/ca-trust/source/anchors/ringd-local-ca.pem && sudo update-ca-trust\n\
         curl only:   curl --cacert {ca} https://HOST/\n\
         Firefox keeps its own store: Settings → Privacy & Security → Certificates → Import.\n\
         Its key ({key}) signs certificates for any name: keep it private, never copy it.\n",
        ca = ca.display(),
        key = data.join("ca/root.key").display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_made_once_site_certs_reused_then_renewed() {
        let dir = std::env::temp_dir().join(format!("ringd-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = LocalCa::open_or_create(&dir).unwrap();
        let first = fs::read(ca_cert_path(&dir)).unwrap();
        let again = LocalCa::open_or_create(&dir).unwrap();
        assert_eq!(fs::read(ca_cert_path(&dir)).unwrap(), first, "CA made once");
        assert_eq!(ca.der, again.der);
        let hosts = vec!["a.test".to_string()];
        let now = SystemTime::now();
        let k1 = ca.site_cert(&dir, "a.test", &hosts, now).unwrap();
        let k2 = again.site_cert(&dir, "a.test", &hosts, now).unwrap();
        assert_eq!(k1.cert[0], k2.cert[0], "reused while fresh");
        // Two thirds of the lifetime later: a new one.
        let later = now + LIFETIME * 2 / 3 + Duration::from_secs(60);
        let k3 = ca.site_cert(&dir, "a.test", &hosts, later).unwrap();
        assert_ne!(k1.cert[0], k3.cert[0], "renewed");
        // Other names: a new one.
        let k4 = ca
            .site_cert(&dir, "a.test", &["b.test".to_string()], later)
            .unwrap();
        assert_ne!(k3.cert[0], k4.cert[0]);
        let _ = fs::remove_dir_all(&dir);
    }
}

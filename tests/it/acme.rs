//! ACME (`tls = "acme"`, issue 15) against Pebble, Let's Encrypt's test CA (Debian's
//! `pebble` package), on loopback: real validation (`PEBBLE_VA_NOSLEEP=1`, never
//! `PEBBLE_VA_ALWAYS_VALID`), the challenges answered by ringd itself. Pebble resolves the
//! test names through `pebble-challtestsrv`'s DNS (every name is 127.0.0.1) and connects to
//! ringd's port for both HTTP-01 and TLS-ALPN-01. Pebble's own HTTPS certificate is made here
//! with rcgen; ringd trusts it through `acme.ca_root`. A client trusts only Pebble's issuing
//! root (`/roots/0` on its management port).
//!
//! Without pebble these print `SKIP acme: pebble not found`; `RINGD_REQUIRE_PEBBLE=1` (CI)
//! makes that a failure. The ACME logic is the same for every backend (a management thread
//! and the sans-IO session): HTTP-01 issuance runs on each backend, the rest on epoll.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::harness::{run_ringd, ServerBuilder, Skip, TempDir};
use crate::tls::{connect, read_resp};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pebble and its DNS, stopped on drop.
struct Pebble {
    _dir: TempDir,
    children: Vec<Child>,
    /// The directory URL.
    directory: String,
    mgmt: String,
    /// The CA of Pebble's HTTPS endpoint (for `ca_root`), PEM file and DER.
    https_ca: PathBuf,
    https_ca_der: CertificateDer<'static>,
    log: Arc<Mutex<Vec<u8>>>,
    /// Pebble's config file and DNS port (to start it again).
    conf: PathBuf,
    dns: u16,
}

/// Pebble with config `conf`, resolving through the DNS on `dns`, its output into `log`.
fn spawn_pebble(conf: &Path, dns: u16, log: &Arc<Mutex<Vec<u8>>>) -> Child {
    let mut p = Command::new("pebble")
        .args(["-config", conf.to_str().unwrap()])
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        // Deterministic runs: no deliberately rejected nonces, no reused authorizations.
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for pipe in [
        Box::new(p.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(p.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                log.lock().unwrap().extend_from_slice(line.as_bytes());
                line.clear();
            }
        });
    }
    p
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn missing(what: &str) -> ! {
    if std::env::var_os("RINGD_REQUIRE_PEBBLE").is_some_and(|v| v != "0") {
        panic!("RINGD_REQUIRE_PEBBLE is set but {what} was not found (apt-get install pebble)");
    }
    std::panic::panic_any(Skip(format!("{what} not found")));
}

impl Pebble {
    /// Pebble validating against ringd on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01).
    fn start(http_port: u16, tls_port: u16) -> Pebble {
        for prog in ["pebble", "pebble-challtestsrv"] {
            let found = Command::new(prog)
                .arg("-h")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if found.is_err() {
                missing(prog);
            }
        }
        let dir = TempDir::new("pebble");
        // Pebble's HTTPS certificate, for 127.0.0.1, from a CA made here.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble https test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let https_ca = dir.write("https-ca.pem", ca_cert.pem().as_bytes());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let cert = dir.write("https.pem", leaf.pem().as_bytes());
        let keyf = dir.write("https.key", key.serialize_pem().as_bytes());
        let (acme, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let conf = format!(
            r#"{{"pebble": {{
  "listenAddress": "127.0.0.1:{acme}",
  "managementListenAddress": "127.0.0.1:{mgmt}",
  "certificate": "{cert}",
  "privateKey": "{keyf}",
  "httpPort": {http_port},
  "tlsPort": {tls_port},
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false
}}}}"#,
            cert = cert.display(),
            keyf = keyf.display(),
        );
        let conf = dir.write("pebble.json", conf.as_bytes());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::new();
        // DNS only: every A query answers 127.0.0.1, no AAAA (ringd listens on IPv4).
        let dns_srv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(dns_srv);
        children.push(spawn_pebble(&conf, dns, &log));
        let pebble = Pebble {
            _dir: dir,
            children,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            mgmt: format!("127.0.0.1:{mgmt}"),
            https_ca,
            https_ca_der: ca_cert.der().clone(),
            log,
            conf,
            dns,
        };
        pebble.wait_listening();
        pebble
    }

    /// Stop Pebble and start it again on the same ports: it forgets every account and
    /// order, and makes a new root.
    fn restart(&mut self) {
        let mut old = self.children.pop().expect("pebble");
        let _ = old.kill();
        let _ = old.wait();
        self.children
            .push(spawn_pebble(&self.conf, self.dns, &self.log));
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let acme = self
            .directory
            .trim_start_matches("https://")
            .trim_end_matches("/dir");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(acme).is_err() || TcpStream::connect(&self.mgmt).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Pebble's issuing root (made fresh at each start), from its management endpoint.
    fn root(&self) -> CertificateDer<'static> {
        let cfg = crate::tls::client_config(&self.https_ca_der, rustls::ALL_VERSIONS);
        let mut s = connect(&self.mgmt, &cfg, "127.0.0.1").expect("pebble management");
        s.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).expect("GET /roots/0");
        assert_eq!(r.status, 200, "GET /roots/0: {r:?}");
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(&r.body).expect("a PEM root")
    }
}

/// A client that trusts only `roots`, offers ALPN http/1.1 and never resumes.
fn client(roots: &[&CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every handshake a full one: a resumed session reports the certificate it began with.
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// GET `path` for `host` over TLS: (status, body, the leaf certificate served).
fn https_get(
    addr: &str,
    cfg: &Arc<rustls::ClientConfig>,
    host: &str,
    path: &str,
) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
    let mut s = connect(addr, cfg, host)?;
    let leaf = s.conn.peer_certificates().unwrap()[0].to_vec();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let r = read_resp(&mut s, &mut Vec::new())?;
    Ok((r.status, r.body, leaf))
}

/// Retries `f` every 100 ms until it returns Ok, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: still failing: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// ringd's stderr once it contains `needle` (within 10 s).
fn wait_log(srv: &crate::harness::Server, needle: &str) -> String {
    wait_for(Duration::from_secs(10), needle, || {
        let err = srv.stderr_text();
        if err.contains(needle) {
            Ok(err)
        } else {
            Err(err)
        }
    })
}

/// A site folder and a config with one ACME site `host` (and `extra` TOML after it).
fn acme_config(
    dir: &TempDir,
    pebble_dir: &str,
    ca_root: &Path,
    host: &str,
    challenge: &str,
    extra: &str,
) -> PathBuf {
    dir.write("index.html", b"hello from acme\n");
    let conf = format!(
        r#"
[[sites]]
hosts = ["{host}"]
root = "{root}"
tls = "acme"
acme = {{ directory = "{pebble_dir}", email = "ops@{host}", ca_root = "{ca}", challenge = "{challenge}" }}
{extra}
"#,
        root = dir.path().display(),
        ca = ca_root.display(),
    );
    dir.write("ringd.toml", conf.as_bytes())
}

fn start(backend: &str, port: u16, cfg: &Path, data: &TempDir) -> crate::harness::Server {
    ServerBuilder::new(backend, data.path())
        .listen(&format!("127.0.0.1:{port}"))
        .config(cfg)
        .args(&["--data-dir", data.path().to_str().unwrap()])
        .start()
}

fn acme_files(data: &Path, pebble: &Pebble, site: &str) -> (PathBuf, PathBuf) {
    let folder = pebble
        .directory
        .trim_start_matches("https://")
        .replace(['/', ':'], "_");
    let base = data.join("acme").join(folder);
    (
        base.join(format!("account-ops_{site}.json").replace('@', "_")),
        base.join(format!("{site}.pem")),
    )
}

/// HTTP-01: ringd answers Pebble's `GET /.well-known/acme-challenge/<token>` on its port
/// (before `redirect_http`, which sends everything else to https), gets a certificate that
/// a client trusting only Pebble's root accepts, keeps the account and certificate on disk,
/// and after a restart serves the same certificate without a new order.
/// Run on every backend (`main.rs`): the challenge answer and the certificate swap go
/// through each driver.
pub fn http01_issue_and_reuse_after_restart(backend: &str) {
    crate::harness::catch_skip("acme", || {
        let port = free_port();
        let pebble = Pebble::start(port, free_port());
        let (dir, data) = (TempDir::new("acme-site"), TempDir::new("acme-data"));
        let host = "http01.acme.test";
        let cfg = acme_config(
            &dir,
            &pebble.directory,
            &pebble.https_ca,
            host,
            "http-01",
            "redirect_http = true\n",
        );
        let mut srv = start(backend, port, &cfg, &data);
        let root = pebble.root();
        let trust_pebble = client(&[&root]);
        let addr = srv.addr();
        let (status, body, leaf) = wait_for(Duration::from_secs(30), "issuance", || {
            https_get(&addr, &trust_pebble, host, "/")
        });
        assert_eq!((status, &body[..]), (200, &b"hello from acme\n"[..]));
        // The log line is written before the swap, but read by another thread here.
        let err = wait_log(&srv, "certificate issued");
        assert!(err.contains("no certificate yet"), "{err}");
        let (account, pem) = acme_files(data.path(), &pebble, host);
        let account_json = std::fs::read(&account).unwrap_or_else(|e| panic!("{account:?}: {e}"));
        assert!(pem.with_extension("key").exists() && pem.exists());
        // Plain HTTP to the same port: not a challenge, so redirect_http's 308.
        let mut s = srv.connect();
        s.write_all(format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 308, "{r:?}");
        // An unknown token is not answered by the challenge path.
        let mut s = srv.connect();
        s.write_all(
            format!("GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: {host}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(read_resp(&mut s, &mut Vec::new()).unwrap().status, 308);
        // The port is HTTPS-only (its one site has tls): any other plain request gets 400.
        let mut s = srv.connect();
        s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
            .unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 400, "{r:?}");
        srv.terminate(Duration::from_secs(10));
        let orders = pebble.log().matches("POST /order-plz").count();
        assert!(orders >= 1, "{}", pebble.log());
        // Restart: the same account and certificate, no new order.
        let srv = start(backend, port, &cfg, &data);
        let (status, _, again) = https_get(&srv.addr(), &trust_pebble, host, "/")
            .unwrap_or_else(|e| panic!("after restart: {e}\n{}", srv.stderr_text()));
        assert_eq!(status, 200);
        assert!(again == leaf, "a restart served another certificate");
        std::thread::sleep(Duration::from_millis(300));
        let err = srv.stderr_text();
        assert!(!err.contains("ordering"), "{err}");
        assert_eq!(std::fs::read(&account).unwrap(), account_json);
        assert_eq!(pebble.log().matches("POST /order-plz").count(), orders);
    });
}

/// TLS-ALPN-01: ringd presents the acmeIdentifier certificate to Pebble's `acme-tls/1`
/// handshake, gets a certificate; a site whose HTTP-01 validation fails is logged with the
/// CA's reason and retried, while the other is served. Then renewal: a stored certificate
/// that reaches two thirds of its lifetime while ringd runs is replaced by a new one from
/// Pebble, served without a restart. Last, a restarted Pebble that forgot the account: a
/// new one is registered.
#[test]
fn acme_tls_alpn01_issue_refusal_and_renewal() {
    crate::harness::catch_skip("acme", || {
        let port = free_port();
        // HTTP-01 validations go to a closed port: refused.
        let mut pebble = Pebble::start(free_port(), port);
        let (dir, data) = (TempDir::new("acme-site"), TempDir::new("acme-data"));
        let host = "alpn.acme.test";
        let refused = format!(
            r#"
[[sites]]
hosts = ["refused.acme.test"]
root = "{root}"
tls = "acme"
acme = {{ directory = "{d}", ca_root = "{ca}", challenge = "http-01" }}
"#,
            root = dir.path().display(),
            d = pebble.directory,
            ca = pebble.https_ca.display()
        );
        let cfg = acme_config(
            &dir,
            &pebble.directory,
            &pebble.https_ca,
            host,
            "tls-alpn-01",
            &refused,
        );
        let mut srv = start("epoll", port, &cfg, &data);
        let root = pebble.root();
        let trust_pebble = client(&[&root]);
        let addr = srv.addr();
        let (status, body, _) = wait_for(Duration::from_secs(30), "issuance", || {
            https_get(&addr, &trust_pebble, host, "/")
        });
        assert_eq!((status, &body[..]), (200, &b"hello from acme\n"[..]));
        // (The line's end: a line may reach us in pieces.)
        let err = wait_log(&srv, "next attempt in 60s");
        assert!(
            err.contains("attempt 1 failed: challenge refused by the CA"),
            "{err}"
        );
        assert!(err.contains("connection refused"), "the CA's reason: {err}");
        // ALPN acme-tls/1 gets a challenge certificate or nothing: none is pending now.
        let mut alpn_only = (*client(&[&root])).clone();
        alpn_only.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        let e = connect(&addr, &Arc::new(alpn_only), host)
            .map(|_| ())
            .expect_err("no handshake");
        assert!(e.contains("alert"), "{e}");
        // No certificate for the refused site yet: its handshake fails.
        let e = https_get(&addr, &trust_pebble, "refused.acme.test", "/").unwrap_err();
        assert!(e.contains("alert"), "{e}");
        srv.terminate(Duration::from_secs(10));

        // A stored certificate 15 s long, due for renewal 10 s after it began.
        let (_, pem) = acme_files(data.path(), &pebble, host);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(4)).into();
        p.not_after = (now + Duration::from_secs(11)).into();
        let short = p
            .signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key))
            .unwrap();
        std::fs::write(&pem, short.pem()).unwrap();
        std::fs::write(pem.with_extension("key"), key.serialize_pem()).unwrap();
        let both = client(&[&root, ca_cert.der()]);
        let srv = start("epoll", port, &cfg, &data);
        let addr = srv.addr();
        let (_, _, first) = https_get(&addr, &both, host, "/").unwrap();
        assert!(
            first == short.der().to_vec(),
            "the stored certificate is served first"
        );
        let (status, _, renewed) = wait_for(Duration::from_secs(25), "renewal", || {
            let (s, b, leaf) = https_get(&addr, &both, host, "/")?;
            if leaf == first {
                return Err(format!("still the old certificate\n{}", srv.stderr_text()));
            }
            Ok((s, b, leaf))
        });
        assert_eq!(status, 200);
        // The new one chains to Pebble's root alone.
        let (_, _, leaf) = https_get(&addr, &trust_pebble, host, "/").unwrap();
        assert!(leaf == renewed);
        wait_log(&srv, "two thirds of its lifetime");
        drop(srv);

        // Pebble restarted forgets the account: the order says so, ringd keeps the old file
        // aside and registers a new account at the next attempt.
        pebble.restart();
        std::fs::remove_file(&pem).unwrap();
        let root = pebble.root();
        let trust_pebble = client(&[&root]);
        let srv = start("epoll", port, &cfg, &data);
        let addr = srv.addr();
        wait_for(
            Duration::from_secs(30),
            "issuance with a new account",
            || https_get(&addr, &trust_pebble, host, "/"),
        );
        let err = wait_log(&srv, "certificate issued");
        assert!(err.contains("does not know the stored account"), "{err}");
        assert!(err.contains("account registered"), "{err}");
        assert!(pem
            .with_file_name(format!("account-ops_{host}.json.stale"))
            .exists());
    });
}

/// An ACME CA that cannot be reached: each attempt is logged with its reason and retried
/// with backoff; the ACME site's handshake fails meanwhile, and the other site is served.
/// Needs no pebble.
#[test]
fn acme_unreachable_ca_is_retried_and_other_sites_served() {
    let (dir, data) = (TempDir::new("acme-site"), TempDir::new("acme-data"));
    dir.write("index.html", b"plain site\n");
    let closed = free_port();
    let conf = format!(
        r#"
[[sites]]
hosts = ["down.acme.test"]
root = "{root}"
tls = "acme"
acme = {{ directory = "https://127.0.0.1:{closed}/dir" }}

[[sites]]
hosts = ["plain.test"]
root = "{root}"
"#,
        root = dir.path().display()
    );
    let cfg = dir.write("ringd.toml", conf.as_bytes());
    let srv = ServerBuilder::new("epoll", dir.path())
        .config(&cfg)
        .args(&["--data-dir", data.path().to_str().unwrap()])
        .start();
    let mut s = srv.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut Vec::new()).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"plain site\n"[..]));
    let any = client(&[]);
    let e = https_get(&srv.addr(), &any, "down.acme.test", "/").unwrap_err();
    // ringd has no certificate for the name: an alert, not a certificate the client rejects.
    assert!(e.contains("alert"), "{e}");
    let err = wait_log(&srv, "next attempt in 4s");
    assert!(err.contains("no certificate yet"), "{err}");
    assert!(err.contains("attempt 1 failed"), "{err}");
    assert!(err.contains("next attempt in 2s"), "{err}");
    // A reload makes a new TLS setup: its management thread starts over (and the old one
    // ends with the old setup: one series of attempts, not two).
    srv.signal(libc::SIGHUP);
    let err = wait_for(Duration::from_secs(10), "a new series after reload", || {
        let err = srv.stderr_text();
        if err.matches("attempt 1 failed").count() == 2 {
            Ok(err)
        } else {
            Err(err)
        }
    });
    assert!(err.contains("reloaded"), "{err}");
    std::thread::sleep(Duration::from_millis(4500));
    let err = srv.stderr_text();
    let after = err.split("reloaded").nth(1).unwrap();
    assert_eq!(after.matches("attempt 3 failed").count(), 0, "{err}");
    assert_eq!(after.matches("attempt 2 failed").count(), 1, "{err}");
}

/// `ringd check` validates the `acme` table (errors as FILE:LINE:COL) and says where each
/// ACME site stands. Needs no pebble.
#[test]
fn acme_config_checked_by_ringd_check() {
    let dir = TempDir::new("acme-check");
    let data = dir.path().join("data");
    let bad = dir.write(
        "bad.toml",
        format!(
            "data_dir = \"{}\"\n[[sites]]\nhosts = [\"a.test\"]\ntls = \"acme\"\n\
             acme = {{ directory = \"https://ca.test/dir\", challenge = \"dns-01\" }}\n",
            data.display()
        )
        .as_bytes(),
    );
    let (st, _, err) = run_ringd(&["check", bad.to_str().unwrap()], Duration::from_secs(10));
    assert!(!st.success());
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("`challenge`: \"dns-01\""), "{err}");
    let ok = dir.write(
        "ok.toml",
        format!(
            "data_dir = \"{}\"\n[[sites]]\nhosts = [\"a.test\"]\ntls = \"acme\"\n\
             acme = {{ directory = \"https://ca.test/dir\", email = \"me@a.test\" }}\n",
            data.display()
        )
        .as_bytes(),
    );
    let (st, out, err) = run_ringd(&["check", ok.to_str().unwrap()], Duration::from_secs(10));
    assert!(st.success(), "{err}");
    assert!(
        out.contains("a.test: ACME https://ca.test/dir (no certificate yet)"),
        "{out}"
    );
}

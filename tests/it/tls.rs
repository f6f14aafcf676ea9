//! HTTPS (issue 15): certificates made here with rcgen, a rustls client that trusts only the
//! test CA, the real server over real sockets on every backend.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

use crate::harness::{random_bytes, ServerBuilder, TempDir};

/// A test CA and leaf certificates signed by it, written as PEM files.
pub struct Pki {
    pub dir: TempDir,
    pub ca: CertificateDer<'static>,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringd test CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        dir.write("ca.pem", ca_cert.pem().as_bytes());
        Pki {
            ca: ca_cert.der().clone(),
            dir,
            ca_params: params,
            ca_key,
        }
    }

    /// Issue a leaf for `names`; returns (cert.pem, key.pem) paths named after `tag`.
    pub fn leaf(&self, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let c = self.dir.write(&format!("{tag}.pem"), cert.pem().as_bytes());
        let k = self
            .dir
            .write(&format!("{tag}.key"), key.serialize_pem().as_bytes());
        (c, k)
    }
}

/// A rustls client config that trusts only `ca`, offers ALPN http/1.1, and speaks `versions`.
pub fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connect and finish the handshake with server name `sni`.
pub fn connect(addr: &str, cfg: &Arc<rustls::ClientConfig>, sni: &str) -> Result<Tls, String> {
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(s)
}

/// One response read from a stream: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one Content-Length-framed response from `s`; `buf` keeps bytes read past it.
pub fn read_resp(s: &mut impl Read, buf: &mut Vec<u8>) -> Result<Resp, String> {
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = r.code.unwrap_or(0);
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while buf.len() < head + len {
                    let n = s.read(&mut tmp).map_err(|e| format!("body: {e}"))?;
                    if n == 0 {
                        return Err(format!("EOF in body ({} of {len})", buf.len() - head));
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let body = buf[head..head + len].to_vec();
                buf.drain(..head + len);
                return Ok(Resp {
                    status,
                    headers,
                    body,
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("bad response head: {e}")),
        }
        let n = s.read(&mut tmp).map_err(|e| format!("head: {e}"))?;
        if n == 0 {
            return Err("EOF before a response".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A site with a small and a 200 KiB file.
fn site() -> (TempDir, Vec<u8>) {
    let dir = TempDir::new("tls-site");
    dir.write("small.txt", b"hello over tls\n");
    let big = random_bytes(200 * 1024, 15);
    dir.write("big.bin", &big);
    (dir, big)
}

/// `--tls-cert/--tls-key`: GET, keep-alive, a 200 KiB file byte-exact, 8 pipelined requests,
/// over TLS 1.3 and TLS 1.2, ALPN http/1.1 negotiated, close_notify, then a resumed session.
pub fn basics(backend: &str) {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"]);
    let (dir, big) = site();
    let srv = ServerBuilder::new(backend, dir.path())
        .args(&["--tls-cert", cert.to_str().unwrap()])
        .args(&["--tls-key", key.to_str().unwrap()])
        .start();
    for (label, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let cfg = client_config(&pki.ca, &[version]);
        let mut s = connect(&srv.addr(), &cfg, "localhost").unwrap();
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "{label}");
        assert_eq!(
            s.conn.protocol_version(),
            Some(version.version),
            "{label}: negotiated"
        );
        let mut buf = Vec::new();
        // Keep-alive: three exchanges on one connection, the big file among them.
        for _ in 0..2 {
            s.write_all(&get("/small.txt", "localhost")).unwrap();
            let r = read_resp(&mut s, &mut buf).unwrap();
            assert_eq!(r.status, 200, "{label}");
            assert_eq!(r.body, b"hello over tls\n", "{label}");
        }
        s.write_all(&get("/big.bin", "localhost")).unwrap();
        let r = read_resp(&mut s, &mut buf).unwrap();
        assert_eq!(r.status, 200, "{label}");
        assert!(r.body == big, "{label}: 200 KiB body differs");
        // Pipelining: 8 requests in one write, answered in order.
        let mut batch = Vec::new();
        for i in 0..8 {
            batch.extend(get(if i % 2 == 0 { "/small.txt" } else { "/big.bin" }, "x"));
        }
        s.write_all(&batch).unwrap();
        for i in 0..8 {
            let r = read_resp(&mut s, &mut buf).unwrap();
            assert_eq!(r.status, 200, "{label}: pipelined {i}");
            let want: &[u8] = if i % 2 == 0 {
                b"hello over tls\n"
            } else {
                &big
            };
            assert!(r.body == want, "{label}: pipelined {i} body");
        }
        // Connection: close ends with close_notify, not a bare FIN.
        s.write_all(b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_resp(&mut s, &mut buf).unwrap();
        assert_eq!(r.status, 200);
        let mut rest = Vec::new();
        let end = s.read_to_end(&mut rest);
        assert!(end.is_ok(), "{label}: no close_notify before EOF: {end:?}");
        // A second connection resumes (TLS 1.3 tickets, TLS 1.2 tickets or session IDs).
        let mut s = connect(&srv.addr(), &cfg, "localhost").unwrap();
        assert_eq!(
            s.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{label}: not resumed"
        );
        s.write_all(&get("/small.txt", "localhost")).unwrap();
        assert_eq!(read_resp(&mut s, &mut Vec::new()).unwrap().status, 200);
    }
}

/// A plain HTTP request to an HTTPS-only port: 400 saying so, then close.
pub fn plain_request_to_tls_port(backend: &str) {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"]);
    let (dir, _) = site();
    let srv = ServerBuilder::new(backend, dir.path())
        .args(&["--tls-cert", cert.to_str().unwrap()])
        .args(&["--tls-key", key.to_str().unwrap()])
        .start();
    let mut s = srv.connect();
    s.write_all(&get("/small.txt", "localhost")).unwrap();
    let mut buf = Vec::new();
    let r = read_resp(&mut s, &mut buf).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("plain HTTP request was sent to an HTTPS port"),
        "{r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after the 400");
}

/// A ClientHello cut short then EOF, and one that does not decode (an alert): each
/// connection closes; the
/// server serves the next client all the same. A handshake that stalls halfway is closed by
/// the header timeout.
pub fn bad_and_slow_handshakes(backend: &str) {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"]);
    let (dir, _) = site();
    let srv = ServerBuilder::new(backend, dir.path())
        .args(&["--tls-cert", cert.to_str().unwrap()])
        .args(&["--tls-key", key.to_str().unwrap()])
        .args(&["--header-timeout", "1s"])
        .start();
    let cfg = client_config(&pki.ca, rustls::ALL_VERSIONS);
    // A real ClientHello, to cut.
    let hello = {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
        let mut v = Vec::new();
        c.write_tls(&mut v).unwrap();
        v
    };
    // Truncated, then EOF: the server closes.
    let mut s = srv.connect();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // A ClientHello record whose body does not decode: an alert, then close.
    let mut s = srv.connect();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0, 0, 0, 0])
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(rest.first(), Some(&0x15), "an alert record: {rest:?}");
    // Slow: half a ClientHello, then silence. The 1 s header timeout closes it.
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "slow handshake closed after {took:?}"
    );
    // And the server still serves.
    let mut ok = connect(&srv.addr(), &cfg, "localhost").unwrap();
    ok.write_all(&get("/small.txt", "localhost")).unwrap();
    let r = read_resp(&mut ok, &mut Vec::new()).unwrap();
    assert_eq!(r.status, 200);
}

/// The first certificate of a PEM file, as DER.
fn pem_der(path: &std::path::Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

/// Per-site `tls` in a config file: SNI picks each site's certificate (exact and wildcard
/// names); one listener carries TLS and plain sites; `redirect_http` sends plain requests
/// for its site 308 to https; other plain sites are served as HTTP.
pub fn sites_sni_mixed_redirect(backend: &str) {
    let pki = Pki::new();
    let (a_cert, a_key) = pki.leaf("a", &["a.test"]);
    let (b_cert, b_key) = pki.leaf("b", &["b.test", "*.b.test"]);
    let (dir, _) = site();
    let conf = format!(
        r#"
[[sites]]
hosts = ["a.test"]
root = "{root}"
tls = {{ cert = "{ac}", key = "{ak}" }}

[[sites]]
hosts = ["b.test", "*.b.test"]
root = "{root}"
tls = {{ cert = "{bc}", key = "{bk}" }}
redirect_http = true

[[sites]]
hosts = ["plain.test"]
root = "{root}"
"#,
        root = dir.path().display(),
        ac = a_cert.display(),
        ak = a_key.display(),
        bc = b_cert.display(),
        bk = b_key.display(),
    );
    let cfg_path = dir.write("ringd.toml", conf.as_bytes());
    let srv = ServerBuilder::new(backend, dir.path())
        .config(&cfg_path)
        .start();
    let (a_der, b_der) = (pem_der(&a_cert), pem_der(&b_cert));
    let cfg = client_config(&pki.ca, rustls::ALL_VERSIONS);
    for (sni, want) in [("a.test", &a_der), ("b.test", &b_der), ("x.b.test", &b_der)] {
        let mut s = connect(&srv.addr(), &cfg, sni).unwrap_or_else(|e| panic!("{sni}: {e}"));
        let got = &s.conn.peer_certificates().unwrap()[0];
        assert!(got == want, "{sni}: wrong certificate");
        s.write_all(&get("/small.txt", sni)).unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 200, "{sni}");
    }
    // Plain HTTP on the same port: a plain site is served; the redirect_http site gets 308.
    let mut s = srv.connect();
    let mut buf = Vec::new();
    s.write_all(&get("/small.txt", "plain.test")).unwrap();
    let r = read_resp(&mut s, &mut buf).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello over tls\n"[..]));
    s.write_all(&get("/small.txt?x=1", "x.b.test")).unwrap();
    let r = read_resp(&mut s, &mut buf).unwrap();
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("location"), Some("https://x.b.test/small.txt?x=1"));
}

/// `tls = "internal"`: ringd makes its CA once under `--data-dir` and issues the site's
/// certificate from it; a client that trusts only that CA connects; a restart keeps the CA;
/// `ringd trust` names its file.
pub fn internal_ca(backend: &str) {
    let (dir, _) = site();
    let data = TempDir::new("tls-data");
    let conf = format!(
        "[[sites]]\nhosts = [\"int.test\", \"localhost\"]\nroot = \"{}\"\ntls = \"internal\"\n",
        dir.path().display()
    );
    let cfg_path = dir.write("ringd.toml", conf.as_bytes());
    let data_arg = data.path().to_str().unwrap().to_string();
    let ca_path = data.path().join("ca/root.pem");
    let mut first_ca = Vec::new();
    for round in 0..2 {
        let srv = ServerBuilder::new(backend, dir.path())
            .config(&cfg_path)
            .args(&["--data-dir", &data_arg])
            .start();
        let ca_pem = std::fs::read(&ca_path).expect("the CA file exists");
        if round == 0 {
            first_ca = ca_pem.clone();
        } else {
            assert_eq!(ca_pem, first_ca, "the CA is made once");
        }
        let cfg = client_config(&pem_der(&ca_path), rustls::ALL_VERSIONS);
        let mut s = connect(&srv.addr(), &cfg, "int.test").unwrap();
        s.write_all(&get("/small.txt", "int.test")).unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).unwrap();
        assert_eq!(r.status, 200);
        // A client trusting another CA refuses it.
        let other = Pki::new();
        let cfg = client_config(&other.ca, rustls::ALL_VERSIONS);
        assert!(connect(&srv.addr(), &cfg, "int.test").is_err());
    }
    let (st, out, _) =
        crate::harness::run_ringd(&["trust", "--data-dir", &data_arg], Duration::from_secs(10));
    assert!(st.success());
    assert!(out.contains(ca_path.to_str().unwrap()), "{out}");
    assert!(out.contains("update-ca-certificates"), "{out}");
}

/// loadgen speaks https://: keep-alive with the test CA, and a new connection per request
/// with session resumption on and off; every request answered 200.
#[test]
fn loadgen_speaks_https() {
    let loadgen = std::path::Path::new(env!("CARGO_BIN_EXE_ringd")).with_file_name("loadgen");
    if !loadgen.is_file() {
        crate::harness::catch_skip("loadgen https", || {
            std::panic::panic_any(crate::harness::Skip(format!(
                "{} not built (cargo test --workspace builds it)",
                loadgen.display()
            )))
        });
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.leaf("ip", &["127.0.0.1", "localhost"]);
    let (dir, _) = site();
    let srv = ServerBuilder::new("epoll", dir.path())
        .args(&["--tls-cert", cert.to_str().unwrap()])
        .args(&["--tls-key", key.to_str().unwrap()])
        .start();
    let url = format!("https://127.0.0.1:{}/small.txt", srv.port);
    let ca = pki.dir.path().join("ca.pem");
    for extra in [
        &["--pipeline", "2"][..],
        &["--no-keepalive", "--tls-resume", "on"],
        &["--no-keepalive", "--tls-resume", "off"],
    ] {
        let json = dir.path().join("lg.json");
        let out = std::process::Command::new(&loadgen)
            .args([
                url.as_str(),
                "-c",
                "2",
                "-t",
                "1",
                "-d",
                "1s",
                "-q",
                "--no-pin",
            ])
            .arg("--tls-ca")
            .arg(&ca)
            .args(extra)
            .arg("--json")
            .arg(&json)
            .output()
            .expect("run loadgen");
        assert!(out.status.success(), "{extra:?}: {out:?}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["errors_total"], 0, "{extra:?}: {}", v["errors"]);
        let ok = v["status"]["200"].as_u64().unwrap_or(0);
        assert!(ok > 20, "{extra:?}: only {ok} answers");
    }
}

/// A request over HTTPS says so to what answers it: a CGI script sees `HTTPS=on` (the
/// session's `secure` flag, which also survives a switch to kernel TLS); a plain request on
/// the same port does not.
#[test]
fn https_reaches_cgi_as_https_on() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let (cert, key) = pki.leaf("cgi", &["s.test"]);
    let (dir, _) = site();
    let p = dir.write(
        "cgi/scheme.sh",
        b"#!/bin/sh\nb=\"HTTPS=$HTTPS\"\nprintf 'Content-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n%s\\n' $((${#b} + 1)) \"$b\"\n",
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = format!(
        r#"
[[sites]]
hosts = ["s.test"]
root = "{root}"
tls = {{ cert = "{c}", key = "{k}" }}
[[sites.routes]]
path = "/cgi-bin/*"
cgi = {{ dir = "{cgi}" }}

[[sites]]
hosts = ["plain.test"]
root = "{root}"
[[sites.routes]]
path = "/cgi-bin/*"
cgi = {{ dir = "{cgi}" }}
"#,
        root = dir.path().display(),
        c = cert.display(),
        k = key.display(),
        cgi = dir.path().join("cgi").display(),
    );
    let cfg_path = dir.write("ringd.toml", conf.as_bytes());
    let srv = ServerBuilder::new("epoll", dir.path())
        .config(&cfg_path)
        .start();
    let cfg = client_config(&pki.ca, rustls::ALL_VERSIONS);
    let mut s = connect(&srv.addr(), &cfg, "s.test").unwrap();
    s.write_all(&get("/cgi-bin/scheme.sh", "s.test")).unwrap();
    let r = read_resp(&mut s, &mut Vec::new()).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"HTTPS=on\n"[..]), "{r:?}");
    let mut s = srv.connect();
    s.write_all(&get("/cgi-bin/scheme.sh", "plain.test"))
        .unwrap();
    let r = read_resp(&mut s, &mut Vec::new()).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"HTTPS=\n"[..]), "{r:?}");
}

/// Every thread of a serving ringd blocks SIGINT, SIGTERM and SIGHUP, the certificate
/// renewer (`tls = "internal"`, started before the listeners) included: the kernel hands a
/// signal sent to the process to any thread that does not block it, and one that lands on a
/// thread without a handler takes its default action, ending the process at once (no drain,
/// and a `kill -HUP` meant to reload would stop it).
#[test]
fn every_thread_blocks_the_shutdown_signals() {
    let (dir, _) = site();
    let data = TempDir::new("tls-sigmask");
    let conf = format!(
        "[[sites]]\nhosts = [\"localhost\"]\nroot = \"{}\"\ntls = \"internal\"\n",
        dir.path().display()
    );
    let cfg_path = dir.write("ringd.toml", conf.as_bytes());
    let srv = ServerBuilder::new("epoll", dir.path())
        .config(&cfg_path)
        .args(&["--data-dir", data.path().to_str().unwrap()])
        .workers(2)
        .start();
    // A thread names itself once it runs, which may be just after ringd reports ready: look
    // again until the renewer has its name (every thread's mask is checked each time).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = thread_masks_block_shutdown_signals(srv.pid());
        if names.iter().any(|n| n == "ringd-tls-renew") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewer thread runs: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that every thread of `pid` but the main one blocks SIGINT, SIGTERM and SIGHUP;
/// returns their names.
fn thread_masks_block_shutdown_signals(pid: i32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut names = Vec::new();
    for t in tasks {
        let t = t.unwrap().path();
        if t.file_name().and_then(|n| n.to_str()) == Some(&pid.to_string()) {
            // The main thread: it takes them with sigtimedwait, which unblocks them while it
            // waits (its SigBlk shows them cleared then).
            continue;
        }
        let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let Some(blk) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) else {
            continue; // the thread ended meanwhile
        };
        let mask = u64::from_str_radix(blk.trim(), 16).unwrap();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            assert!(
                mask & (1 << (sig - 1)) != 0,
                "thread {:?} does not block signal {sig} (SigBlk {blk})",
                name.trim()
            );
        }
        names.push(name.trim().to_string());
    }
    names
}

//! The TLS record layer of `Session`, sans-IO: an in-memory rustls client against a session
//! over real files, on a simulated clock.

use std::io::{Read, Write};
use std::sync::Arc;

use super::tests::Harness;
use super::Output;
use crate::config::Config;
use crate::tls::{certified, server_config, SiteCert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A server config with a leaf issued by a fresh CA, and a client config trusting that CA.
fn pair() -> (Config, Arc<rustls::ClientConfig>) {
    pair_with(rustls::DEFAULT_VERSIONS)
}

/// [`pair`] with a client that speaks only `versions`.
fn pair_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Config, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "session test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["x.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let ck = certified(vec![leaf.der().clone()], der).unwrap();
    let setup = server_config(
        &[SiteCert {
            hosts: vec!["_".into()],
            key: ck,
        }],
        true,
    )
    .unwrap();
    let cfg = Config {
        tls: Some(Arc::new(setup)),
        ..Config::default()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (cfg, Arc::new(client))
}

/// Moves bytes both ways until neither side has anything to say; returns the plaintext the
/// client read. The session's output is consumed `chunk` bytes at a time.
fn pump(h: &mut Harness, c: &mut rustls::ClientConnection, chunk: usize) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..10_000 {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            h.feed(&to_server);
        }
        let to_client = h.drain_by(chunk);
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        let mut rd = &to_client[..];
        let mut buf = vec![0u8; 1 << 16];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
            loop {
                match c.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    plain
}

#[test]
fn handshake_then_requests_files_and_partial_sends() {
    let (cfg, client) = pair();
    let mut h = Harness::new("tls-sess", cfg);
    let name = ServerName::try_from("x.test").unwrap();
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    assert!(pump(&mut h, &mut c, usize::MAX).is_empty());
    assert!(!c.is_handshaking());
    c.writer()
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8(pump(&mut h, &mut c, usize::MAX)).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nhello world\n"), "{got}");
    // A spliced-size file, the driver sending 1000 bytes at a time: byte-exact.
    c.writer()
        .write_all(
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    let got = pump(&mut h, &mut c, 1000);
    let want: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&got[at..at + want.len()], &want[..]);
    assert!(got.ends_with(b"hello world\n"));
    assert!(!h.s.should_close());
}

#[test]
fn plain_request_gets_400_and_a_stalled_handshake_times_out() {
    let (cfg, client) = pair();
    let mut h = Harness::new("tls-sess2", cfg.clone());
    let got = h.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(
        got.contains("plain HTTP request was sent to an HTTPS port"),
        "{got}"
    );
    assert!(h.s.should_close());
    // Half a ClientHello: nothing to answer; the header timeout bounds the handshake.
    let mut h = Harness::new("tls-sess3", cfg.clone());
    let name = ServerName::try_from("x.test").unwrap();
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    h.feed(&hello[..hello.len() / 2]);
    assert!(h.drain().is_empty());
    assert_eq!(
        h.s.deadline(),
        Some(h.now + cfg.timeouts.header_read),
        "the header timeout covers the handshake"
    );
    // A ClientHello with an empty body: an alert (decode error), then close.
    let mut h = Harness::new("tls-sess4", cfg);
    h.feed(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0, 0, 0, 0]);
    let out = h.drain();
    assert_eq!(out.first(), Some(&0x15), "an alert record: {out:?}");
    assert!(h.s.should_close());
}

/// A resumed TLS 1.3 handshake whose request rides with the client's Finished (as loadgen
/// and browsers send it): the response comes in the same exchange, nothing waits.
#[test]
fn resumed_handshake_with_the_request_in_its_flight() {
    let (cfg, client) = pair();
    let mut h = Harness::new("tls-sess5", cfg.clone());
    let name = ServerName::try_from("x.test").unwrap();
    let mut c = rustls::ClientConnection::new(client.clone(), name.clone()).unwrap();
    c.writer()
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8(pump(&mut h, &mut c, usize::MAX)).unwrap();
    assert!(got.ends_with("hello world\n"), "{got}");
    // Second connection, same client config: resumed, request written before the handshake.
    let mut h = Harness::new("tls-sess6", cfg);
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    c.writer()
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8(pump(&mut h, &mut c, usize::MAX)).unwrap();
    assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    assert!(got.ends_with("hello world\n"), "{got}");
}

/// [`pair`] on a listener that runs kernel TLS (as if the probe had found it), with a client
/// that speaks only `versions` and can hand over its own secrets to compare.
fn ktls_pair(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Config, Arc<rustls::ClientConfig>) {
    let (mut cfg, mut client) = pair_with(versions);
    let setup = Arc::get_mut(cfg.tls.as_mut().unwrap()).unwrap();
    Arc::get_mut(&mut setup.config)
        .unwrap()
        .enable_secret_extraction = true;
    setup.ktls = true;
    Arc::get_mut(&mut client).unwrap().enable_secret_extraction = true;
    (cfg, client)
}

/// What the kernel would be given on each side agrees: the server's TX is the client's RX
/// (key, IV, next record sequence number) and the other way round.
fn assert_secrets_match(server: &rustls::ExtractedSecrets, client: rustls::ExtractedSecrets) {
    use rustls::ConnectionTrafficSecrets as S;
    fn raw(s: &S) -> (Vec<u8>, Vec<u8>) {
        match s {
            S::Aes128Gcm { key, iv }
            | S::Aes256Gcm { key, iv }
            | S::Chacha20Poly1305 { key, iv } => (key.as_ref().to_vec(), iv.as_ref().to_vec()),
            _ => panic!("unexpected cipher"),
        }
    }
    assert_eq!(server.tx.0, client.rx.0, "server TX / client RX sequence");
    assert_eq!(server.rx.0, client.tx.0, "server RX / client TX sequence");
    assert_eq!(raw(&server.tx.1), raw(&client.rx.1));
    assert_eq!(raw(&server.rx.1), raw(&client.tx.1));
}

/// After the handshake (tickets sent), the session hands out nothing and wants no reads
/// until the driver takes the keys; then it is a plain session that sends files as
/// `Output::File` (sendfile/splice), and what it hands over matches the client's view.
#[test]
fn ktls_switch_after_the_handshake_then_plain_files() {
    for (tag, versions) in [
        ("tls13", &[&rustls::version::TLS13][..]),
        ("tls12", &[&rustls::version::TLS12][..]),
    ] {
        let (cfg, client) = ktls_pair(versions);
        let mut h = Harness::new(&format!("ktls-{tag}"), cfg);
        let name = ServerName::try_from("x.test").unwrap();
        let mut c = rustls::ClientConnection::new(client, name).unwrap();
        pump(&mut h, &mut c, usize::MAX);
        assert!(!c.is_handshaking(), "{tag}");
        assert!(h.s.next_output().is_none(), "{tag}: held for the switch");
        assert!(!h.s.wants_read(), "{tag}: no read while the switch is due");
        let sw = h.s.take_ktls().expect("the switch is due");
        assert!(h.s.take_ktls().is_none(), "{tag}: once");
        assert!(h.s.ktls_on());
        let secrets = sw.secrets.expect("secrets");
        assert_secrets_match(&secrets, c.dangerous_extract_secrets().unwrap());
        // The kernel decrypts from here on: plaintext in, plaintext (and files) out.
        assert!(h.s.wants_read());
        h.feed(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut saw_file = false;
        let mut got = Vec::new();
        while let Some(out) = h.s.next_output() {
            let n = match out {
                Output::Bytes(b) => {
                    got.extend_from_slice(b);
                    b.len()
                }
                Output::File { len, .. } => {
                    saw_file = true;
                    len as usize
                }
                Output::Pipe { .. } => panic!("no pipe"),
            };
            h.s.consume(&mut h.svc, n, h.now);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{tag}");
        assert!(
            saw_file,
            "{tag}: a file body goes as Output::File after the switch"
        );
    }
}

/// rustls holding part of a client record (the request came with the Finished, split by
/// TCP) puts the switch off: the session reads on, and switches once the record is whole
/// (the response then goes in plaintext through the kernel).
#[test]
fn ktls_waits_for_a_record_boundary() {
    let (cfg, client) = ktls_pair(&[&rustls::version::TLS13]);
    let mut h = Harness::new("ktls-edge", cfg);
    let name = ServerName::try_from("x.test").unwrap();
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    // ClientHello → server flight.
    let mut wire = Vec::new();
    c.write_tls(&mut wire).unwrap();
    h.feed(&wire);
    let flight = h.drain();
    let mut rd = &flight[..];
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
    }
    // Finished and the request, fed in two pieces cut inside the request's record.
    c.writer()
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    let cut = wire.len() - 10;
    h.feed(&wire[..cut]);
    let tickets = h.drain();
    assert!(!tickets.is_empty(), "the session tickets go out, encrypted");
    assert!(h.s.take_ktls().is_none(), "a partial record is in rustls");
    assert!(h.s.wants_read(), "the rest of the record must be read");
    h.feed(&wire[cut..]);
    assert!(h.drain().is_empty(), "nothing until the switch");
    let sw = h.s.take_ktls().expect("due at the record boundary");
    assert_eq!(
        sw.secrets.unwrap().rx.0,
        1,
        "one client record read by rustls"
    );
    let got = String::from_utf8(h.drain()).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n"),
        "in plaintext: {got}"
    );
    assert!(got.ends_with("hello world\n"), "{got}");
}

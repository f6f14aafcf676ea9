//! Kernel TLS end to end (issue 15): `scripts/ktls-uml.sh` boots User-Mode Linux, whose
//! kernel has the `tls` ULP (this machine's may not), and checks there that every backend
//! hands its TLS connections to the kernel after the handshake (`/proc/net/tls_stat` counts
//! TX and RX kTLS sockets) and serves small files, a 10 MiB file, a Range and keep-alive runs
//! over TLS 1.3 and 1.2 with AES-GCM and ChaCha20-Poly1305; that `ringd doctor` says so; and
//! that `--no-ktls` keeps records in user space. Without `linux.uml` this prints `SKIP ktls:
//! user-mode-linux not installed`; `RINGD_REQUIRE_KTLS=1` (CI) makes that a failure.
//!
//! On this host the userspace record layer is what `tls.rs` tests (the probe finds no ULP).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Skip, TempDir};

/// The whole UML run, boot to power-off (the script bounds UML itself at 85 s).
const LIMIT: Duration = Duration::from_secs(90);

fn missing(what: &str) -> ! {
    if std::env::var_os("RINGD_REQUIRE_KTLS").is_some_and(|v| v != "0") {
        panic!("RINGD_REQUIRE_KTLS is set but {what} (apt-get install user-mode-linux kmod curl)");
    }
    std::panic::panic_any(Skip(what.to_string()));
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

#[test]
fn ktls_offload_in_user_mode_linux() {
    crate::harness::catch_skip("ktls", || {
        if !on_path("linux.uml") {
            missing("user-mode-linux not installed");
        }
        let out = TempDir::new("ktls-uml");
        let log = out.path().join("out.txt");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ktls-uml.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg("--ringd")
            .arg(env!("CARGO_BIN_EXE_ringd"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run scripts/ktls-uml.sh");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for ktls-uml.sh") {
                break s;
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                let got = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("scripts/ktls-uml.sh ran past {LIMIT:?}:\n{got}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let got = std::fs::read_to_string(&log).unwrap_or_default();
        if status.code() == Some(77) {
            missing(got.trim());
        }
        assert!(
            status.success(),
            "scripts/ktls-uml.sh failed ({status}):\n{got}"
        );
        assert!(got.contains(" 0 failed"), "{got}");
        // Every backend that starts under UML offloaded; epoll always starts.
        for backend in ["epoll", "uring", "tokio-uring"] {
            let offloaded = format!("PASS {backend} tls_stat counts TX and RX kTLS sockets");
            let skipped = format!("SKIP {backend}:");
            assert!(
                got.contains(&offloaded) || (backend != "epoll" && got.contains(&skipped)),
                "{backend}: no proof of kTLS:\n{got}"
            );
            if got.contains(&offloaded) {
                let corked = format!("{backend} Finished and request in one segment");
                assert!(
                    got.contains(&format!("PASS {corked}"))
                        || got.contains(&format!("SKIP {corked}")),
                    "missing `{corked}`:\n{got}"
                );
                for case in [
                    "tls1.3-aes128",
                    "tls1.3-chacha20",
                    "tls1.2-aes256",
                    "tls1.2-chacha20",
                ] {
                    for what in ["small file", "MiB file, equal", "range", "keep-alive"] {
                        let head = format!("PASS {backend} {case} ");
                        assert!(
                            got.lines()
                                .any(|l| l.starts_with(&head) && l.contains(what)),
                            "missing `{head}... {what}`:\n{got}"
                        );
                    }
                }
            }
        }
        for line in [
            "PASS epoll tls1.3-aes128 10 MiB file, equal",
            "PASS epoll tls1.2-chacha20 10 MiB file, equal",
            "PASS CGI sees HTTPS=on on a kTLS connection",
            "PASS doctor says the listener runs ktls",
            "PASS --no-ktls serves from user space",
        ] {
            assert!(got.contains(line), "missing `{line}`:\n{got}");
        }
        eprintln!("{got}");
    });
}

//! loadgen end to end: the real binary against real servers on loopback sockets (small servers
//! written here, and the real ringd), checking what it counts against what the servers sent.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{f, loadgen, loadgen_ok, serve, serve_unix, temp_dir, u, Mode};

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn counts_and_bytes_match_what_the_server_sent() {
    let srv = serve(Mode::Length(body(1000)));
    let r = loadgen_ok(
        "counts",
        &["-n", "2000", "-c", "4", "-t", "2", &srv.url("/f")],
    );
    assert_eq!(u(&r, &["requests"]), 2000);
    assert_eq!(srv.requests(), 2000, "server answered exactly -n requests");
    assert_eq!(u(&r, &["bytes"]), srv.bytes_out(), "wire bytes match");
    assert_eq!(u(&r, &["body_bytes"]), 2000 * 1000);
    assert_eq!(u(&r, &["status", "200"]), 2000);
    assert_eq!(u(&r, &["errors_total"]), 0);
    assert_eq!(u(&r, &["latency_us", "count"]), 2000);
    // The histogram in the JSON decodes to the same distribution.
    let h = loadgen::hist::decode(r["histograms"]["latency"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), 2000);
    assert!((h.max() as f64 / 1000.0 - f(&r, &["latency_us", "max"])).abs() < 1.0);
    assert!(f(&r, &["rps"]) > 0.0);
}

#[test]
fn pipelining_keeps_requests_in_flight() {
    let srv = serve(Mode::Length(body(100)));
    let r = loadgen_ok(
        "pipeline",
        &[
            "-n",
            "3200",
            "-c",
            "2",
            "-t",
            "1",
            "--pipeline",
            "16",
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 3200);
    assert_eq!(srv.requests(), 3200);
    assert_eq!(u(&r, &["bytes"]), srv.bytes_out());
    assert!(
        srv.stats.max_batch.load(Ordering::SeqCst) > 1,
        "the server never saw two requests in one read"
    );
    assert!(
        u(&r, &["batch_us", "count"]) > 0,
        "per-batch latency recorded"
    );
}

#[test]
fn no_keepalive_opens_a_connection_per_request() {
    let srv = serve(Mode::Length(body(10)));
    let r = loadgen_ok(
        "nokeepalive",
        &[
            "-n",
            "200",
            "-c",
            "2",
            "-t",
            "1",
            "--no-keepalive",
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 200);
    assert_eq!(u(&r, &["errors_total"]), 0);
    // One connection per request (plus at most one spare per connection racing the last one).
    let connects = u(&r, &["connects"]);
    assert!((200..=202).contains(&connects), "{connects} connects");
    assert_eq!(u(&r, &["connect_us", "count"]), connects);
    // The server also saw the pre-flight connection check.
    assert!(srv.stats.accepts.load(Ordering::SeqCst) >= 200);
}

#[test]
fn server_close_with_requests_pipelined_behind_it_loses_nothing() {
    // The server answers 5 requests per connection, then closes; 8 are pipelined, so 3 are
    // cut off every time and must go out again on the next connection, without errors.
    let srv = serve(Mode::CloseEvery(body(64), 5));
    let r = loadgen_ok(
        "closeevery",
        &[
            "-n",
            "1000",
            "-c",
            "2",
            "-t",
            "1",
            "--pipeline",
            "8",
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 1000);
    assert_eq!(u(&r, &["errors_total"]), 0);
    assert_eq!(u(&r, &["body_bytes"]), 1000 * 64);
    assert!(u(&r, &["connects"]) >= 200, "reconnected after every close");
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_parse() {
    let chunks = vec![body(7), body(300), body(1)];
    let srv = serve(Mode::Chunked(chunks));
    let r = loadgen_ok(
        "chunked",
        &["-n", "500", "-c", "3", "-t", "1", &srv.url("/")],
    );
    assert_eq!(u(&r, &["requests"]), 500);
    assert_eq!(u(&r, &["body_bytes"]), 500 * 308);
    assert_eq!(u(&r, &["bytes"]), srv.bytes_out());
    assert_eq!(u(&r, &["errors_total"]), 0);
}

#[test]
fn close_delimited_bodies_parse_and_reconnect() {
    let srv = serve(Mode::CloseDelimited(body(4321)));
    let r = loadgen_ok(
        "closedelim",
        &["-n", "200", "-c", "2", "-t", "1", &srv.url("/")],
    );
    assert_eq!(u(&r, &["requests"]), 200);
    assert_eq!(u(&r, &["body_bytes"]), 200 * 4321);
    assert_eq!(u(&r, &["errors_total"]), 0);
    assert!(u(&r, &["connects"]) >= 200);
}

#[test]
fn unix_socket_targets_work() {
    let dir = temp_dir("unix");
    let srv = serve_unix(Mode::Length(body(50)), &dir.join("s.sock"));
    let r = loadgen_ok(
        "unixrun",
        &["-n", "300", "-c", "2", "-t", "1", &srv.url("/u")],
    );
    assert_eq!(u(&r, &["requests"]), 300);
    assert_eq!(srv.requests(), 300);
    assert_eq!(srv.stats.paths.lock().unwrap().get("/u"), Some(&300));
}

#[test]
fn weighted_url_mix_follows_weights() {
    let srv = serve(Mode::Length(body(5)));
    let dir = temp_dir("mix");
    let file = dir.join("urls.txt");
    std::fs::write(&file, format!("3 {}\n1 /b\n", srv.url("/a"))).unwrap();
    let r = loadgen_ok(
        "mixrun",
        &[
            "-n",
            "4000",
            "-c",
            "2",
            "-t",
            "1",
            "--urls",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 4000);
    let paths = srv.stats.paths.lock().unwrap().clone();
    let a = paths["/a"] as f64;
    let b = paths["/b"] as f64;
    assert_eq!(a + b, 4000.0);
    assert!((a / 4000.0 - 0.75).abs() < 0.04, "{paths:?}");
}

#[test]
fn open_loop_stall_shows_in_corrected_latency_only() {
    // The whole server stalls for 300 ms, 700 ms into the run.
    let srv = serve(Mode::Stall {
        body: body(20),
        at: Duration::from_millis(700),
        len: Duration::from_millis(300),
    });
    let r = loadgen_ok(
        "stall",
        &[
            "-R",
            "2000",
            "-c",
            "2",
            "-t",
            "1",
            "-d",
            "3s",
            &srv.url("/"),
        ],
    );
    let corrected = f(&r, &["latency_us", "p999"]);
    let uncorrected = f(&r, &["latency_uncorrected_us", "p999"]);
    assert!(
        corrected >= 250_000.0,
        "corrected p99.9 {corrected} µs should show the 300 ms stall"
    );
    assert!(
        uncorrected < 100_000.0,
        "uncorrected p99.9 {uncorrected} µs should stay low"
    );
    assert_eq!(r["mode"], "open");
    assert_eq!(f(&r, &["target_rps"]), 2000.0);
    let achieved = f(&r, &["achieved_rps"]);
    assert!(
        achieved > 1800.0 && achieved < 2100.0,
        "achieved {achieved}"
    );
}

#[test]
fn timeouts_are_counted_and_the_run_completes() {
    let srv = serve(Mode::Silent);
    let r = loadgen_ok(
        "timeout",
        &[
            "-n",
            "2",
            "-c",
            "1",
            "-t",
            "1",
            "--timeout",
            "300ms",
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 0);
    assert!(u(&r, &["errors", "timeout"]) >= 1);
}

#[test]
fn a_counted_run_ends_when_the_server_goes_away() {
    // Connections close after 5 responses; once the listener is gone, reconnects are refused.
    let srv = serve(Mode::CloseEvery(body(10), 5));
    let dir = temp_dir("dies");
    let json = dir.join("r.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "-n",
            "100000000",
            "-c",
            "2",
            "-t",
            "1",
            "--timeout",
            "500ms",
            "-q",
        ])
        .arg("--json")
        .arg(&json)
        .arg(srv.url("/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(srv);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("loadgen kept running after the server went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(u(&r, &["requests"]) > 0);
    assert!(u(&r, &["errors", "connect_refused"]) > 0);
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("stopped before the requested count"),
        "{warnings}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn warmup_is_measured_but_kept_apart() {
    let srv = serve(Mode::Length(body(10)));
    let r = loadgen_ok(
        "warmup",
        &[
            "-d",
            "600ms",
            "--warmup",
            "400ms",
            "-c",
            "2",
            "-t",
            "1",
            &srv.url("/"),
        ],
    );
    let warm = u(&r, &["warmup", "requests"]);
    let main = u(&r, &["requests"]);
    assert!(warm > 0 && main > 0);
    // Requests still in flight at the end are answered by the server but not counted.
    assert!(srv.requests() >= warm + main);
    assert!((f(&r, &["duration_s"]) - 0.6).abs() < 0.1);
}

#[test]
fn bad_flags_bad_urls_and_unreachable_targets_fail_clearly() {
    let (out, _) = loadgen("bad1", &["http://127.0.0.1:1/"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    let (out, _) = loadgen("bad2", &["htp:/nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid URL"));
    let (out, _) = loadgen("bad3", &["http://127.0.0.1:1/", "--pipeline", "x"]);
    assert!(!out.status.success());
    let (out, _) = loadgen("bad4", &["http://127.0.0.1:1/", "-d", "1s", "-n", "3"]);
    assert!(!out.status.success());
}

#[test]
fn compare_writes_every_report_with_every_target() {
    let a = serve(Mode::Length(body(100)));
    let b = serve(Mode::Chunked(vec![body(100)]));
    let dir = temp_dir("compare");
    let out_dir = dir.join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "compare",
            "--target",
            &format!("alpha={}", a.url("/x")),
            "--target",
            &format!("beta={}", b.url("/y")),
            "--server-pid",
            &format!("beta={}", std::process::id()),
            "--baseline",
            "beta",
            "--rounds",
            "2",
            "-c",
            "2",
            "-t",
            "1",
            "-d",
            "300ms",
            "--pause",
            "0s",
            "--title",
            "it compare",
            "--meta",
            "machine=test box",
            "-q",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    for name in ["alpha", "beta"] {
        assert!(md.contains(name) && html.contains(name), "{name} missing");
        assert!(out_dir.join(format!("{name}.hgrm")).exists());
    }
    assert!(md.contains("machine") && md.contains("test box"));
    assert!(html.contains("<svg") && html.matches("<svg").count() >= 3);
    assert!(!html.contains("plot failed"));
    assert_eq!(json["title"], "it compare");
    assert_eq!(json["meta"]["machine"], "test box");
    assert_eq!(json["baseline"], "beta");
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    for t in targets {
        assert_eq!(t["runs"].as_array().unwrap().len(), 2);
        assert!(t["median"]["rps"].as_f64().unwrap() > 0.0);
        assert!(t["min"]["rps"].as_f64().unwrap() <= t["max"]["rps"].as_f64().unwrap());
        assert!(t["ratio_vs_baseline"]["rps"].as_f64().is_some());
    }
    assert_eq!(targets[1]["ratio_vs_baseline"]["rps"], 1.0);
    assert!(targets[1]["median"]["server_cpu_us_per_request"]
        .as_f64()
        .is_some());
    assert_eq!(targets[0]["url"], a.url("/x"));
    assert_eq!(targets[1]["url"], b.url("/y"));
    // Interleaved: both targets served both rounds.
    assert!(a.requests() > 0 && b.requests() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A ringd process serving a directory; killed on drop.
struct Ringd {
    child: Child,
    url: String,
}

impl Drop for Ringd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ringd binary: `RINGD_BIN`, or target/<profile>/ringd next to this test binary (built
/// with cargo if missing).
fn ringd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RINGD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ringd");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ringd", "--bin", "ringd"])
            .status()
            .expect("cargo build ringd");
        assert!(status.success(), "building ringd failed");
    }
    bin
}

fn start_ringd(root: &Path) -> Ringd {
    let mut child = Command::new(ringd_bin())
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ringd");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches('/').to_string());
    let mut ringd = Ringd {
        child,
        url: String::new(),
    };
    ringd.url = url.unwrap_or_else(|| panic!("ringd printed no URL: {line:?}"));
    ringd
}

#[test]
fn against_ringd_counts_bytes_pipelining_and_sigstop_stall() {
    let dir = temp_dir("ringd");
    std::fs::write(dir.join("f.txt"), body(1234)).unwrap();
    let ringd = start_ringd(&dir);
    let url = format!("{}/f.txt", ringd.url);
    let r = loadgen_ok("ringd1", &["-n", "3000", "-c", "4", "-t", "1", &url]);
    assert_eq!(u(&r, &["requests"]), 3000);
    assert_eq!(u(&r, &["status", "200"]), 3000);
    assert_eq!(u(&r, &["body_bytes"]), 3000 * 1234);
    assert_eq!(u(&r, &["errors_total"]), 0);
    let r = loadgen_ok(
        "ringd2",
        &["-n", "3200", "-c", "2", "-t", "1", "--pipeline", "16", &url],
    );
    assert_eq!(u(&r, &["requests"]), 3200);
    assert_eq!(u(&r, &["body_bytes"]), 3200 * 1234);
    let r = loadgen_ok(
        "ringd3",
        &["-n", "100", "-c", "2", "-t", "1", "--no-keepalive", &url],
    );
    assert_eq!(u(&r, &["requests"]), 100);
    assert!((100..=102).contains(&u(&r, &["connects"])));
    // Stop the server process for 300 ms in the middle of an open-loop run.
    let pid = ringd.child.id() as i32;
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(900));
        // SAFETY: signalling the child process this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let r = loadgen_ok(
        "ringd4",
        &["-R", "2000", "-c", "2", "-t", "1", "-d", "3s", &url],
    );
    stopper.join().unwrap();
    assert!(f(&r, &["latency_us", "p999"]) >= 250_000.0);
    assert!(f(&r, &["latency_uncorrected_us", "p999"]) < 100_000.0);
    let _ = std::fs::remove_dir_all(&dir);
}

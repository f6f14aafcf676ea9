//! Load shapes and verdicts end to end: thresholds, stages with per-second series, request
//! mixes, slow readers, whole-machine CPU, shards and their merge, all with the real binary
//! against real servers on loopback sockets.

mod support;

use std::process::Command;

use support::{f, loadgen, loadgen_ok, serve, temp_dir, u, Mode};

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn thresholds_pass_fail_and_set_the_exit_status() {
    let srv = serve(Mode::Length(body(100)));
    let url = srv.url("/t");
    let r = loadgen_ok(
        "thr-pass",
        &[
            "-n",
            "300",
            "-c",
            "2",
            "-t",
            "1",
            "--threshold",
            "p99<10s",
            "--threshold",
            "errors<0.1%",
            &url,
        ],
    );
    let t = r["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|x| x["ok"] == true), "{t:?}");
    assert_eq!(t[1]["value"], 0.0);
    // Whole-machine CPU is recorded with every core.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(u(&r, &["machine_cpu", "cores"]) >= cores.min(1));
    assert_eq!(
        r["machine_cpu"]["per_core"].as_array().unwrap().len() as u64,
        u(&r, &["machine_cpu", "cores"])
    );
    assert!(f(&r, &["machine_cpu", "us_per_request"]) >= 0.0);

    let (out, v) = loadgen(
        "thr-fail",
        &[
            "-n",
            "100",
            "-c",
            "1",
            "-t",
            "1",
            "--threshold",
            "p50<1ns",
            &url,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(99),
        "k6's exit status for failed thresholds"
    );
    let v = v.expect("the result is still written");
    assert_eq!(v["thresholds"][0]["ok"], false);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL p50<1ns"));
    let (out, _) = loadgen("thr-bad", &["-n", "1", "--threshold", "p98<1ms", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown metric"));
}

#[test]
fn compare_marks_failed_thresholds() {
    let a = serve(Mode::Length(body(10)));
    let dir = temp_dir("thr-compare");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "compare",
            "--target",
            &format!("a={}", a.url("/")),
            "--rounds",
            "2",
            "-n",
            "50",
            "-c",
            "1",
            "-t",
            "1",
            "--pause",
            "0s",
            "-q",
            "--threshold",
            "max<1ns",
            "--threshold",
            "errors<=0",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(99));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| a | `max<1ns` | ✗ **FAIL** | 0/2 |"), "{md}");
    assert!(md.contains("| a | `errors<=0` | ✓ pass | 2/2 |"), "{md}");
    assert!(md.contains("machine CPU/req"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("✗ FAIL"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stages_ramp_the_rate_and_the_series_shows_it() {
    let srv = serve(Mode::Length(body(50)));
    // 0→400 over 1 s (200), 400 for 1 s (400), 400→0 over 1 s (200): 800 requests.
    let r = loadgen_ok(
        "stages",
        &[
            "--stages",
            "1s:400,1s:400,1s:0",
            "-c",
            "4",
            "-t",
            "2",
            &srv.url("/"),
        ],
    );
    let n = u(&r, &["requests"]);
    assert!((798..=800).contains(&n), "{n} requests");
    assert_eq!(srv.requests(), n + u(&r, &["errors_total"]));
    assert_eq!(r["mode"], "open");
    assert_eq!(r["settings"]["stages"][1][1], 400.0);
    let iv = r["intervals"].as_array().unwrap();
    assert!(iv.len() >= 3, "{iv:?}");
    let got = |i: usize| iv[i]["requests"].as_u64().unwrap() as f64;
    // Each second carries its share of the ramp (± the boundary jitter of one tick).
    for (i, want) in [(0, 200.0), (1, 400.0), (2, 200.0)] {
        assert!(
            (got(i) - want).abs() <= want * 0.1,
            "second {i}: {} of {want}",
            got(i)
        );
        assert!((iv[i]["target_rps"].as_f64().unwrap() - want).abs() < 1e-6);
        assert!(iv[i]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(iv[i]["p50_us"].as_f64().unwrap() <= iv[i]["p99_us"].as_f64().unwrap());
        let h = loadgen::hist::decode_as::<u32>(iv[i]["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), iv[i]["requests"].as_u64().unwrap());
    }
    let sent: u64 = iv.iter().map(|x| x["sent"].as_u64().unwrap()).sum();
    assert_eq!(sent, u(&r, &["sent"]));
}

#[test]
fn request_mix_hits_paths_sites_and_methods_by_weight() {
    let srv = serve(Mode::Length(body(20)));
    let dir = temp_dir("reqmix");
    let file = dir.join("mix.txt");
    std::fs::write(
        &file,
        "# weights 2:1:1\n2 GET /a\nHEAD /b\n\
         {\"method\":\"POST\",\"path\":\"/c\",\"headers\":{\"Host\":\"site-b.test\"},\"body\":\"hello\"}\n",
    )
    .unwrap();
    let r = loadgen_ok(
        "reqmix-run",
        &[
            "-n",
            "2000",
            "-c",
            "4",
            "-t",
            "1",
            "--pipeline",
            "4",
            "--requests",
            file.to_str().unwrap(),
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 2000);
    assert_eq!(
        u(&r, &["errors_total"]),
        0,
        "HEAD answers parse without a body"
    );
    assert_eq!(u(&r, &["bytes"]), srv.bytes_out());
    let paths = srv.stats.paths.lock().unwrap().clone();
    let share = |p: &str| *paths.get(p).unwrap_or(&0) as f64 / 2000.0;
    assert!((share("/a") - 0.5).abs() < 0.05, "{paths:?}");
    assert!((share("/b") - 0.25).abs() < 0.05, "{paths:?}");
    assert!((share("/c") - 0.25).abs() < 0.05, "{paths:?}");
    let posts = paths["/c"];
    let hosts = srv.stats.hosts.lock().unwrap().clone();
    assert_eq!(hosts.get("site-b.test").copied(), Some(posts), "{hosts:?}");
    assert_eq!(
        srv.stats
            .body_bytes_in
            .load(std::sync::atomic::Ordering::SeqCst),
        posts * 5
    );
    // Bodies of GET and POST answers only: HEAD answers have none.
    assert_eq!(u(&r, &["body_bytes"]), (2000 - paths["/b"]) * 20);
    assert_eq!(r["urls"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_rate_makes_a_slow_client() {
    let srv = serve(Mode::Length(body(6000)));
    let fast = loadgen_ok("fast", &["-n", "3", "-c", "1", "-t", "1", &srv.url("/")]);
    assert!(f(&fast, &["latency_us", "max"]) < 500_000.0);
    // About 6 KiB at 4000 B/s in reads of 400 B: the first read is free, the rest take ~1.4 s.
    let r = loadgen_ok(
        "slow",
        &[
            "-n",
            "2",
            "-c",
            "1",
            "-t",
            "1",
            "--read-rate",
            "4000/s",
            &srv.url("/"),
        ],
    );
    assert_eq!(u(&r, &["requests"]), 2);
    assert_eq!(u(&r, &["errors_total"]), 0);
    assert_eq!(u(&r, &["body_bytes"]), 12_000);
    assert_eq!(u(&r, &["settings", "read_rate"]), 4000);
    let p50 = f(&r, &["latency_us", "p50"]);
    assert!(
        (1_200_000.0..3_000_000.0).contains(&p50),
        "a response read at 4000 B/s took {p50} µs"
    );
    // The two responses arrive at the pace of the reads: about 3 s for both.
    assert!(f(&r, &["duration_s"]) > 2.4, "{}", f(&r, &["duration_s"]));
}

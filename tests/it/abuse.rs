//! Abusive clients, all at once, while a well-behaved client is served: resets in the middle of
//! spliced bodies, garbage, half-sent requests and bodies, pipelined misses abandoned while their
//! files are being opened, idle connections. Afterwards every connection the server held is
//! closed (no socket fd left but the listeners) and its other fds stay within what its pools
//! and caches may keep: the error and cancellation paths of every driver free what they hold.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Server, ServerBuilder};
use crate::http::{req, Client};
use crate::static_files::{expect, site, SMALL};

/// Workers (the harness starts two), pipes per worker and cache entries per worker.
const WORKERS: usize = 2;
const PIPE_POOL: usize = 4;
const CACHE_ENTRIES: usize = 32;
/// Abusive connections per thread per round, and threads.
const PER_THREAD: usize = 40;
const THREADS: usize = 6;

/// The kinds of fd the server holds, counted from /proc/PID/fd.
fn fd_kinds(pid: i32) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        let kind = if t.starts_with("socket:") {
            "socket".to_string()
        } else if t.starts_with("pipe:") {
            "pipe".to_string()
        } else if t.starts_with("anon_inode:") {
            t.into_owned()
        } else {
            "file".to_string()
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

fn count(kinds: &BTreeMap<String, usize>, k: &str) -> usize {
    kinds.get(k).copied().unwrap_or(0)
}

/// Close with RST (SO_LINGER 0) instead of FIN.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// One abusive connection of kind `k` (0..8); `n` makes paths distinct.
fn abuse_once(srv: &Server, k: usize, n: usize) {
    let Ok(mut s) = TcpStream::connect(srv.addr()) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut buf = [0u8; 4096];
    match k {
        // A spliced body reset after its first bytes.
        0 => {
            let _ = s.write_all(&req("GET", "/big.bin", &[]));
            let _ = s.read(&mut buf);
            reset(s);
        }
        // Garbage, NULs included: answered with a 4xx or closed, then read to the end.
        1 => {
            let junk: Vec<u8> = (0..300u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> (n % 24)) as u8)
                .collect();
            let _ = s.write_all(&junk);
            let _ = s.shutdown(Shutdown::Write);
            while matches!(s.read(&mut buf), Ok(m) if m > 0) {}
        }
        // Half a request line, then gone.
        2 => {
            let _ = s.write_all(b"GET /small.t");
            drop(s);
        }
        // Pipelined misses (files being opened when the client resets).
        3 => {
            let mut batch = Vec::new();
            for i in 0..8 {
                batch.extend(req("GET", &format!("/missing-{n}-{i}.txt"), &[]));
            }
            batch.extend(req("GET", "/medium.bin", &[]));
            let _ = s.write_all(&batch);
            reset(s);
        }
        // Pipelined requests, our side shut, nothing read: the server writes into a window
        // that never opens, then we go.
        4 => {
            let mut batch = Vec::new();
            for _ in 0..4 {
                batch.extend(req("GET", "/big.bin", &[]));
            }
            let _ = s.write_all(&batch);
            let _ = s.shutdown(Shutdown::Write);
            thread::sleep(Duration::from_millis(20));
            drop(s);
        }
        // Connect and say nothing for a moment.
        5 => {
            thread::sleep(Duration::from_millis(5 + (n % 20) as u64));
            drop(s);
        }
        // A chunked body cut off in the middle.
        6 => {
            let _ = s.write_all(
                b"GET /small.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
            );
            reset(s);
        }
        // A well-formed request read to its end, then a reset with a keep-alive request sent.
        _ => {
            let mut c = Client::new(s);
            let r = c.exchange(&req("GET", "/small.txt", &[]));
            assert_eq!(r.status, 200, "plain GET among the abusers: {r:?}");
            let _ = c.try_send(&req("GET", "/medium.bin", &[]));
        }
    }
}

fn abuse_round(srv: &Server, round: usize) {
    thread::scope(|sc| {
        for t in 0..THREADS {
            sc.spawn(move || {
                for i in 0..PER_THREAD {
                    abuse_once(srv, (t + i) % 8, round * 100_000 + t * 1000 + i);
                }
            });
        }
    });
}

/// The server's fds once every connection has ended (header, keep-alive and send timeouts are
/// 1 s, a lingering close at most 2 s): waits up to 10 s for its sockets to be just the
/// listeners.
fn settled(pid: i32, listeners: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = fd_kinds(pid);
    while count(&now, "socket") > listeners && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        now = fd_kinds(pid);
    }
    now
}

pub fn abusive_clients(backend: &str) {
    let site = site(true);
    let pipes = PIPE_POOL.to_string();
    let entries = CACHE_ENTRIES.to_string();
    let srv = ServerBuilder::new(backend, site.dir.path())
        .args(&[
            "--pipe-pool",
            &pipes,
            "--cache-entries",
            &entries,
            "--header-timeout",
            "1s",
            "--keepalive-timeout",
            "1s",
            "--send-timeout",
            "1s",
        ])
        .start();
    let pid = srv.pid();
    // Workers build their rings and runtimes after the URL is printed: count the fds they
    // start with once each has served (a first round of abuse), and its connections are gone.
    let listeners = WORKERS;
    abuse_round(&srv, 99);
    let start = settled(pid, listeners);

    // A well-behaved client keeps asking throughout; every answer must be whole and prompt.
    let stop = AtomicBool::new(false);
    thread::scope(|sc| {
        let good = sc.spawn(|| {
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut c = Client::new(srv.connect());
                for _ in 0..10 {
                    let t0 = Instant::now();
                    let r = c.exchange(&req("GET", "/small.txt", &[]));
                    expect(&srv, "well-behaved client", &r, 200, Some(SMALL));
                    assert!(
                        t0.elapsed() < Duration::from_secs(2),
                        "a request took {:?} beside the abusers",
                        t0.elapsed()
                    );
                    served += 1;
                }
            }
            served
        });
        for round in 0..3 {
            abuse_round(&srv, round);
        }
        stop.store(true, Ordering::Relaxed);
        let served = good.join().expect("well-behaved client");
        assert!(served > 0, "the well-behaved client was never served");
    });

    let now = settled(pid, listeners);
    assert_eq!(
        count(&now, "socket"),
        listeners,
        "sockets still open after every client left: {now:?} (at start {start:?})\n{}",
        srv.diagnostics()
    );
    // Rings, eventfds and the like: exactly what the server started with.
    for (k, v) in &start {
        if k.starts_with("anon_inode:") {
            assert_eq!(count(&now, k), *v, "{k}: {now:?} (at start {start:?})");
        }
    }
    // Pipes and files: no more than the pools and caches may keep (two fds per pipe; a cached
    // entry holds its file and at most three sidecars), plus what the server started with.
    let pipe_max = count(&start, "pipe") + WORKERS * PIPE_POOL * 2;
    assert!(
        count(&now, "pipe") <= pipe_max,
        "{} pipe fds, at most {pipe_max} expected: {now:?}",
        count(&now, "pipe")
    );
    let file_max = count(&start, "file") + WORKERS * CACHE_ENTRIES * 4;
    assert!(
        count(&now, "file") <= file_max,
        "{} file fds, at most {file_max} expected: {now:?}",
        count(&now, "file")
    );
    // And it still serves.
    let mut c = Client::new(srv.connect());
    let r = c.exchange(&req("GET", "/big.bin", &[]));
    expect(&srv, "after the abuse", &r, 200, Some(&site.big));
}

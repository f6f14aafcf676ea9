//! The relay binary (bench.sh proxy-small's floor), epoll and io_uring, over real loopback sockets: every byte
//! reaches the other side in order both ways, a slow reader is waited for (short writes kept,
//! not lost), each client gets its own upstream connection, and a client that leaves closes its
//! upstream connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(upstream: SocketAddr, uring: bool) -> (Relay, SocketAddr) {
    start_with(upstream, uring, &[])
}

fn start_with(upstream: SocketAddr, uring: bool, more: &[&str]) -> (Relay, SocketAddr) {
    let listen = free_port();
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--upstream".to_string(),
        upstream.to_string(),
    ];
    if uring {
        args.push("--uring".into());
    }
    args.extend(more.iter().map(|a| a.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let relay = Relay(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "relay did not listen on {listen}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    (relay, listen)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn bytes_pass_both_ways_and_a_slow_reader_loses_none() {
    both_ways(false, &[]);
}

#[test]
fn uring_bytes_pass_both_ways_and_a_slow_reader_loses_none() {
    both_ways(true, &[]);
}

#[test]
fn uring_with_few_buffers_waits_for_them_and_loses_none() {
    // 16 buffers of 16 KiB against 32 MiB: receives run out of buffers again and again.
    both_ways(true, &["--uring-bufs", "16"]);
}

fn both_ways(uring: bool, more: &[&str]) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let (relay, addr) = start_with(up_addr, uring, more);
    // The readiness probe's connection came first: its upstream connection is accepted and
    // closed when the probe leaves.
    let (probe, _) = up.accept().unwrap();
    drop(probe);

    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = up.accept().unwrap();
    // A relay that stalls fails the test instead of hanging it.
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = pattern(300_000, 1);
    let response = pattern(32 << 20, 7);

    // Client -> upstream.
    let req2 = request.clone();
    let w = thread::spawn(move || {
        client.write_all(&req2).unwrap();
        client
    });
    let mut got = vec![0; request.len()];
    server.read_exact(&mut got).unwrap();
    assert!(got == request, "the request arrived changed");
    let mut client = w.join().unwrap();

    // Upstream -> a client that reads slowly at first: the relay's writes come up short and
    // it must keep the rest.
    let resp2 = response.clone();
    let w = thread::spawn(move || {
        server.write_all(&resp2).unwrap();
        server
    });
    thread::sleep(Duration::from_millis(300));
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = vec![0; response.len()];
    client.read_exact(&mut got).unwrap();
    assert!(got == response, "the response arrived changed");
    let mut server = w.join().unwrap();

    // The client leaves: the relay closes its upstream connection.
    drop(client);
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(server.read(&mut b).unwrap(), 0, "upstream side not closed");
    drop(relay);
}

#[test]
fn each_client_gets_its_own_upstream_connection() {
    own_upstream(false);
}

#[test]
fn uring_each_client_gets_its_own_upstream_connection() {
    own_upstream(true);
}

fn own_upstream(uring: bool) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    // An upstream that answers each connection with its own index, after the first byte.
    thread::spawn(move || {
        for (i, s) in up.incoming().enumerate() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut b = [0u8; 1];
                if s.read(&mut b).unwrap_or(0) == 1 {
                    let _ = s.write_all(format!("{i}").as_bytes());
                    let _ = tx.send(i);
                }
                let _ = s.read(&mut b);
            });
        }
    });
    let (_relay, addr) = start(up_addr, uring);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut seen = Vec::new();
    for c in &mut clients {
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 8];
        let n = c.read(&mut b).unwrap();
        seen.push(String::from_utf8_lossy(&b[..n]).into_owned());
    }
    let upstream_conns: Vec<usize> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        3,
        "clients shared an upstream connection: {seen:?}"
    );
    assert_eq!(upstream_conns.len(), 3);
}

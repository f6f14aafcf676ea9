//! A deliberately trivial HTTP/1.1 responder (one thread, level-triggered epoll) that answers
//! every request head with the same small response, so loadgen's own ceiling can be measured
//! with a server that costs almost nothing per pipelined request. Not a real server: it ignores
//! methods, paths and bodies.
//!
//! `cargo run --release -p loadgen --example fastsrv -- [ADDR] [BODY_BYTES]`

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

struct Conn {
    stream: TcpStream,
    /// Up to 3 bytes carried over from the last read (a terminator split across reads).
    tail: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    want_out: bool,
}

fn epoll_ctl(ep: i32, op: i32, fd: i32, events: u32) {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: plain epoll_ctl on descriptors we own; `ev` lives across the call.
    unsafe {
        libc::epoll_ctl(ep, op, fd, &mut ev);
    }
}

/// Count `\r\n\r\n` in `tail ++ data`, and keep the last 3 bytes as the new tail.
fn count_heads(tail: &mut Vec<u8>, data: &[u8]) -> usize {
    let mut n = 0;
    let mut joined = [0u8; 6];
    // Terminators straddling the boundary.
    let t = tail.len();
    let k = data.len().min(3);
    joined[..t].copy_from_slice(tail);
    joined[t..t + k].copy_from_slice(&data[..k]);
    for w in joined[..t + k].windows(4) {
        if w == b"\r\n\r\n" {
            n += 1;
        }
    }
    let mut pos = 0;
    while let Some(i) = memchr::memmem::find(&data[pos..], b"\r\n\r\n") {
        n += 1;
        pos += i + 4;
    }
    let mut last: Vec<u8> = tail.iter().chain(data.iter()).copied().collect();
    let cut = last.len().saturating_sub(3);
    last.drain(..cut);
    *tail = last;
    n
}

fn flush(c: &mut Conn) -> bool {
    while c.out_off < c.out.len() {
        match c.stream.write(&c.out[c.out_off..]) {
            Ok(0) => return false,
            Ok(n) => c.out_off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.out.clear();
    c.out_off = 0;
    true
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_string());
    let body_len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(13);
    let body = vec![b'x'; body_len];
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
    resp.extend_from_slice(&body);

    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    println!("fastsrv listening on http://{}/", listener.local_addr()?);
    // SAFETY: creating an epoll instance; checked below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let lfd = listener.as_raw_fd();
    epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32);
    let mut conns: HashMap<i32, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: `events` has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, -1) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as i32;
            if fd == lfd {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    let cfd = s.as_raw_fd();
                    epoll_ctl(ep, libc::EPOLL_CTL_ADD, cfd, libc::EPOLLIN as u32);
                    conns.insert(
                        cfd,
                        Conn {
                            stream: s,
                            tail: Vec::with_capacity(3),
                            out: Vec::new(),
                            out_off: 0,
                            want_out: false,
                        },
                    );
                }
                continue;
            }
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            let mut alive = true;
            if ev.events & libc::EPOLLIN as u32 != 0 {
                match c.stream.read(&mut buf) {
                    Ok(0) => alive = false,
                    Ok(n) => {
                        let heads = count_heads(&mut c.tail, &buf[..n]);
                        for _ in 0..heads {
                            c.out.extend_from_slice(&resp);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => alive = false,
                }
            }
            if alive {
                alive = flush(c);
            }
            if !alive {
                epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0);
                conns.remove(&fd);
                continue;
            }
            let want_out = !c.out.is_empty();
            if want_out != c.want_out {
                c.want_out = want_out;
                let mut evs = libc::EPOLLIN as u32;
                if want_out {
                    evs |= libc::EPOLLOUT as u32;
                }
                epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, evs);
            }
        }
    }
}

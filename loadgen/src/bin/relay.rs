//! relay: the floor of a proxy's CPU per request on this kernel, for `bench.sh`'s proxy-small.
//!
//! A TCP relay, not an HTTP proxy: one thread, level-triggered epoll, one upstream connection
//! opened per client connection when it is accepted and kept for its life (what a perfect
//! keep-alive pool gives), and every byte read from one side written as-is to the other. It
//! parses nothing, rewrites no header and picks no server, so it does less than any proxy can:
//! its CPU per request is what the kernel alone charges a proxy for one request and one response
//! (two reads, two writes and the TCP work of four segments), and no proxy on the same kernel
//! can go below it. bench.sh measures it beside the proxies so that a CPU bar can be read
//! against the floor.
//!
//! `--uring` does the same on io_uring: one receive per side always in flight, each completed
//! receive becomes one send to the other side, and every submission of a pass goes to the kernel
//! in one `io_uring_enter` (the syscall count per request that a completion-driven proxy pays).
//!
//! Usage: relay --listen 127.0.0.1:18097 --upstream 127.0.0.1:18083 [--uring]
//! Runs until it is killed (bench.sh stops it by its PID).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "relay",
    about = "A TCP relay: the floor of a proxy's CPU per request (bench.sh proxy-small)"
)]
struct Args {
    /// Address to accept clients on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address every client connection is relayed to (one upstream connection each).
    #[arg(long)]
    upstream: SocketAddr,
    /// Use io_uring (batched receives and sends) instead of epoll with read/write.
    #[arg(long)]
    uring: bool,
}

const LISTENER: u64 = u64::MAX;
const BUF: usize = 64 * 1024;

/// One side of a pair: its socket and the bytes read from the other side that it has not
/// taken yet (a short write).
struct Side {
    sock: TcpStream,
    pending: Vec<u8>,
}

struct Pair {
    /// [client, upstream]
    sides: [Side; 2],
}

struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the fd it returns is owned by Epoll.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live local for the call; `fd` is an open socket of ours.
        let rc = unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: `events` is a live, writable slice of `events.len()` entries.
            let n =
                unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, -1) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

struct Relay {
    ep: Epoll,
    pairs: Vec<Option<Pair>>,
    free: Vec<usize>,
    upstream: SocketAddr,
    buf: Vec<u8>,
}

fn token(idx: usize, side: usize) -> u64 {
    (idx as u64) << 1 | side as u64
}

impl Relay {
    fn accept(&mut self, l: &TcpListener) {
        loop {
            let client = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("relay: accept: {e}");
                    return;
                }
            };
            let up = match TcpStream::connect(self.upstream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("relay: connect {}: {e}", self.upstream);
                    continue;
                }
            };
            if let Err(e) = self.add(client, up) {
                eprintln!("relay: {e}");
            }
        }
    }

    fn add(&mut self, client: TcpStream, up: TcpStream) -> io::Result<()> {
        for s in [&client, &up] {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
        }
        let idx = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        self.ep.ctl(
            libc::EPOLL_CTL_ADD,
            client.as_raw_fd(),
            libc::EPOLLIN as u32,
            token(idx, 0),
        )?;
        self.ep.ctl(
            libc::EPOLL_CTL_ADD,
            up.as_raw_fd(),
            libc::EPOLLIN as u32,
            token(idx, 1),
        )?;
        let side = |sock| Side {
            sock,
            pending: Vec::new(),
        };
        self.pairs[idx] = Some(Pair {
            sides: [side(client), side(up)],
        });
        Ok(())
    }

    fn close(&mut self, idx: usize) {
        // Dropping the sockets closes them, which also takes them out of the epoll set.
        if self.pairs[idx].take().is_some() {
            self.free.push(idx);
        }
    }

    /// Readable `from`: read once, write what came to the other side; a short write keeps the
    /// rest, waits for EPOLLOUT there and stops reading `from` until it is taken.
    fn readable(&mut self, idx: usize, from: usize) -> io::Result<bool> {
        let Some(pair) = self.pairs[idx].as_mut() else {
            return Ok(true);
        };
        let n = match pair.sides[from].sock.read(&mut self.buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                return Ok(true)
            }
            Err(_) => return Ok(false),
        };
        let to = 1 - from;
        let wrote = match pair.sides[to].sock.write(&self.buf[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return Ok(false),
        };
        if wrote < n {
            pair.sides[to]
                .pending
                .extend_from_slice(&self.buf[wrote..n]);
            let (a, b) = (
                pair.sides[from].sock.as_raw_fd(),
                pair.sides[to].sock.as_raw_fd(),
            );
            self.ep.ctl(libc::EPOLL_CTL_MOD, a, 0, token(idx, from))?;
            self.ep.ctl(
                libc::EPOLL_CTL_MOD,
                b,
                libc::EPOLLOUT as u32,
                token(idx, to),
            )?;
        }
        Ok(true)
    }

    /// Writable `to` (only while it has pending bytes): write them; once all are taken, read
    /// both sides again.
    fn writable(&mut self, idx: usize, to: usize) -> io::Result<bool> {
        let Some(pair) = self.pairs[idx].as_mut() else {
            return Ok(true);
        };
        let side = &mut pair.sides[to];
        match side.sock.write(&side.pending) {
            Ok(w) => {
                side.pending.drain(..w);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return Ok(false),
        }
        if pair.sides[to].pending.is_empty() {
            for s in 0..2 {
                let fd = pair.sides[s].sock.as_raw_fd();
                self.ep
                    .ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32, token(idx, s))?;
            }
        }
        Ok(true)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| anyhow::anyhow!("relay: cannot listen on {}: {e}", args.listen))?;
    if args.uring {
        eprintln!(
            "relay: listening on {} -> {} (io_uring)",
            args.listen, args.upstream
        );
        return uring::run(listener, args.upstream);
    }
    listener.set_nonblocking(true)?;
    let mut relay = Relay {
        ep: Epoll::new()?,
        pairs: Vec::new(),
        free: Vec::new(),
        upstream: args.upstream,
        buf: vec![0; BUF],
    };
    relay.ep.ctl(
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        libc::EPOLLIN as u32,
        LISTENER,
    )?;
    eprintln!("relay: listening on {} -> {}", args.listen, args.upstream);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let n = relay.ep.wait(&mut events)?;
        for ev in &events[..n] {
            let (tok, bits) = (ev.u64, ev.events);
            if tok == LISTENER {
                relay.accept(&listener);
                continue;
            }
            let (idx, side) = ((tok >> 1) as usize, (tok & 1) as usize);
            let alive = if bits & libc::EPOLLOUT as u32 != 0 {
                relay.writable(idx, side)?
            } else if bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                relay.readable(idx, side)?
            } else {
                true
            };
            if !alive {
                relay.close(idx);
            }
        }
    }
}

/// The io_uring relay: per side one buffer and one operation in flight at a time (a receive,
/// or the send of what the other side's receive brought); a pair is freed once both sides'
/// operations have completed after it was shut down.
mod uring {
    use std::io;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use io_uring::{opcode, squeue, types, IoUring};

    const ACCEPT: u64 = u64::MAX;
    const BUF: usize = 16 * 1024;

    struct Side {
        sock: TcpStream,
        /// Bytes this side received, being sent to the other side: `buf[sent..len]` left.
        buf: Box<[u8]>,
        len: usize,
        sent: usize,
        /// Whether this side's receive or its send to the other side is in flight.
        busy: bool,
    }

    struct Pair {
        sides: [Side; 2],
        closing: bool,
    }

    /// user_data: pair index << 2 | direction (the side that received) << 1 | 1 for a send.
    fn ud(idx: usize, side: usize, send: bool) -> u64 {
        (idx as u64) << 2 | (side as u64) << 1 | send as u64
    }

    struct Relay {
        ring: IoUring,
        pairs: Vec<Option<Pair>>,
        free: Vec<usize>,
        backlog: Vec<squeue::Entry>,
    }

    impl Relay {
        fn push(&mut self, e: squeue::Entry) {
            // SAFETY: every entry points at a socket and a buffer owned by a live pair, which
            // is not freed while its operation is in flight (`busy`), or at nothing (accept).
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push(e);
            }
        }

        fn recv(&mut self, idx: usize, side: usize) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let s = &mut p.sides[side];
            s.busy = true;
            let e = opcode::Recv::new(
                types::Fd(s.sock.as_raw_fd()),
                s.buf.as_mut_ptr(),
                s.buf.len() as u32,
            )
            .build()
            .user_data(ud(idx, side, false));
            self.push(e);
        }

        fn send(&mut self, idx: usize, side: usize) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let to = p.sides[1 - side].sock.as_raw_fd();
            let s = &mut p.sides[side];
            s.busy = true;
            let e = opcode::Send::new(
                types::Fd(to),
                s.buf[s.sent..].as_ptr(),
                (s.len - s.sent) as u32,
            )
            .build()
            .user_data(ud(idx, side, true));
            self.push(e);
        }

        fn add(&mut self, client: TcpStream, up: TcpStream) -> io::Result<()> {
            for s in [&client, &up] {
                s.set_nodelay(true)?;
            }
            let idx = self.free.pop().unwrap_or_else(|| {
                self.pairs.push(None);
                self.pairs.len() - 1
            });
            let side = |sock| Side {
                sock,
                buf: vec![0u8; BUF].into_boxed_slice(),
                len: 0,
                sent: 0,
                busy: false,
            };
            self.pairs[idx] = Some(Pair {
                sides: [side(client), side(up)],
                closing: false,
            });
            self.recv(idx, 0);
            self.recv(idx, 1);
            Ok(())
        }

        /// Shuts both sockets down (in-flight receives then complete with 0) and frees the
        /// pair once nothing of it is in flight.
        fn close(&mut self, idx: usize) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            if !p.closing {
                p.closing = true;
                for s in &p.sides {
                    let _ = s.sock.shutdown(std::net::Shutdown::Both);
                }
            }
            if p.sides.iter().all(|s| !s.busy) {
                self.pairs[idx] = None;
                self.free.push(idx);
            }
        }

        fn complete(&mut self, user_data: u64, res: i32) {
            let idx = (user_data >> 2) as usize;
            let side = ((user_data >> 1) & 1) as usize;
            let send = user_data & 1 == 1;
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let s = &mut p.sides[side];
            s.busy = false;
            if p.closing || res <= 0 {
                self.close(idx);
                return;
            }
            if send {
                s.sent += res as usize;
                if s.sent < s.len {
                    self.send(idx, side);
                } else {
                    self.recv(idx, side);
                }
            } else {
                s.len = res as usize;
                s.sent = 0;
                self.send(idx, side);
            }
        }
    }

    pub fn run(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
        let mut r = Relay {
            ring: IoUring::new(1024)?,
            pairs: Vec::new(),
            free: Vec::new(),
            backlog: Vec::new(),
        };
        let accept = |fd| {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .build()
                .user_data(ACCEPT)
        };
        r.push(accept(listener.as_raw_fd()));
        loop {
            match r.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e.into()),
            }
            let done: Vec<(u64, i32)> = r
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, res) in done {
                if user_data == ACCEPT {
                    if res >= 0 {
                        use std::os::fd::FromRawFd;
                        // SAFETY: a non-negative accept result is a new socket that nothing
                        // else owns.
                        let client = unsafe { TcpStream::from_raw_fd(res) };
                        match TcpStream::connect(upstream) {
                            Ok(up) => {
                                if let Err(e) = r.add(client, up) {
                                    eprintln!("relay: {e}");
                                }
                            }
                            Err(e) => eprintln!("relay: connect {upstream}: {e}"),
                        }
                    }
                    r.push(accept(listener.as_raw_fd()));
                } else {
                    r.complete(user_data, res);
                }
            }
            while let Some(e) = r.backlog.pop() {
                // SAFETY: as in `push`.
                if unsafe { r.ring.submission().push(&e) }.is_err() {
                    r.backlog.push(e);
                    break;
                }
            }
        }
    }
}

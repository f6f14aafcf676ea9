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
//! `--uring` does the same on io_uring, set up and receiving as ringd's uring driver does
//! (single issuer, deferred task work; one multishot receive per side into a provided-buffer
//! ring), each received buffer sent on to the other side (one
//! send in flight per direction, in order), and every submission of a pass given to the kernel
//! in one `io_uring_enter`.
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
    /// With --uring: 16 KiB receive buffers in the ring (a power of two); a side whose receive
    /// finds none free waits until a send hands one back.
    #[arg(long, default_value_t = 4096, value_parser = parse_bufs)]
    uring_bufs: u16,
}

fn parse_bufs(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n.is_power_of_two() => Ok(n),
        _ => Err(format!("{s} is not a power of two from 1 to 32768")),
    }
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

/// Puts `item` in a free slot of `slots` (one freed earlier, listed in `free`, or a new one)
/// and returns its index: both relays keep their pairs so.
fn insert<T>(slots: &mut Vec<Option<T>>, free: &mut Vec<usize>, item: T) -> usize {
    match free.pop() {
        Some(idx) => {
            slots[idx] = Some(item);
            idx
        }
        None => {
            slots.push(Some(item));
            slots.len() - 1
        }
    }
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
        let (cfd, ufd) = (client.as_raw_fd(), up.as_raw_fd());
        let side = |sock| Side {
            sock,
            pending: Vec::new(),
        };
        let pair = Pair {
            sides: [side(client), side(up)],
        };
        let idx = insert(&mut self.pairs, &mut self.free, pair);
        let ev = libc::EPOLLIN as u32;
        let added = self
            .ep
            .ctl(libc::EPOLL_CTL_ADD, cfd, ev, token(idx, 0))
            .and_then(|()| self.ep.ctl(libc::EPOLL_CTL_ADD, ufd, ev, token(idx, 1)));
        if added.is_err() {
            self.close(idx);
        }
        added
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
        return uring::run(listener, args.upstream, args.uring_bufs);
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

/// The io_uring relay: per side one multishot receive into a provided-buffer ring (as ringd's
/// uring driver and loadgen's engine receive), and per direction one send in flight at a time,
/// of the buffers that side received, in order, each handed back to the ring once sent. A pair
/// is freed once nothing of it is in flight after it was shut down.
mod uring {
    use std::collections::VecDeque;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    use io_uring::{cqueue, opcode, squeue, types, IoUring};
    use loadgen::bufring::BufRing;

    const ACCEPT: u64 = u64::MAX;
    const BUF: usize = 16 * 1024;
    const BGID: u16 = 7;

    struct Side {
        sock: TcpStream,
        /// The multishot receive is armed.
        armed: bool,
        /// Buffers received here, not yet all sent to the other side: (bid, sent, len).
        queue: VecDeque<(u16, usize, usize)>,
        /// A send of `queue`'s front to the other side is in flight.
        sending: bool,
    }

    struct Pair {
        sides: [Side; 2],
        closing: bool,
    }

    /// user_data: pair index << 2 | the side that received << 1 | 1 for a send.
    fn ud(idx: usize, side: usize, send: bool) -> u64 {
        (idx as u64) << 2 | (side as u64) << 1 | send as u64
    }

    struct Relay {
        // Declared before `bufs`: the ring closes before the buffers it uses are unmapped.
        ring: IoUring,
        bufs: BufRing,
        pairs: Vec<Option<Pair>>,
        free: Vec<usize>,
        backlog: Vec<squeue::Entry>,
        /// Sides whose receive ended for want of buffers: re-armed once buffers come back.
        starved: Vec<(usize, usize)>,
    }

    impl Relay {
        fn push(&mut self, e: squeue::Entry) {
            // SAFETY: every entry names a socket of a live pair and, for a send, bytes of a
            // ring buffer that is not recycled before the send completes; pairs are not freed
            // while an operation of theirs is in flight.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push(e);
            }
        }

        fn arm(&mut self, idx: usize, side: usize) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            if p.closing || p.sides[side].armed {
                return;
            }
            p.sides[side].armed = true;
            let fd = p.sides[side].sock.as_raw_fd();
            let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
                .build()
                .user_data(ud(idx, side, false));
            self.push(e);
        }

        fn send_front(&mut self, idx: usize, side: usize) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let to = p.sides[1 - side].sock.as_raw_fd();
            let s = &mut p.sides[side];
            let Some(&(bid, sent, len)) = s.queue.front() else {
                return;
            };
            s.sending = true;
            let bytes = &self.bufs.get(bid, len)[sent..];
            let e = opcode::Send::new(types::Fd(to), bytes.as_ptr(), bytes.len() as u32)
                .build()
                .user_data(ud(idx, side, true));
            self.push(e);
        }

        fn add(&mut self, client: TcpStream, up: TcpStream) -> std::io::Result<()> {
            for s in [&client, &up] {
                s.set_nodelay(true)?;
            }
            let side = |sock| Side {
                sock,
                armed: false,
                queue: VecDeque::new(),
                sending: false,
            };
            let pair = Pair {
                sides: [side(client), side(up)],
                closing: false,
            };
            let idx = super::insert(&mut self.pairs, &mut self.free, pair);
            self.arm(idx, 0);
            self.arm(idx, 1);
            Ok(())
        }

        /// Shuts both sockets down (armed receives then end) and frees the pair, handing its
        /// queued buffers back, once nothing of it is in flight.
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
            if p.sides.iter().any(|s| s.armed || s.sending) {
                return;
            }
            let p = self.pairs[idx].take().expect("checked above");
            for s in &p.sides {
                for &(bid, _, _) in &s.queue {
                    self.bufs.recycle(bid);
                }
            }
            self.bufs.publish();
            self.free.push(idx);
        }

        fn received(&mut self, idx: usize, side: usize, res: i32, flags: u32) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let more = cqueue::more(flags);
            if !more {
                p.sides[side].armed = false;
            }
            if res > 0 {
                let bid =
                    cqueue::buffer_select(flags).expect("a multishot receive names its buffer");
                let s = &mut p.sides[side];
                s.queue.push_back((bid, 0, res as usize));
                if p.closing {
                    self.close(idx);
                    return;
                }
                if !s.sending {
                    self.send_front(idx, side);
                }
                if !more {
                    self.arm(idx, side);
                }
            } else if res == -libc::ENOBUFS && !p.closing {
                self.starved.push((idx, side));
            } else {
                self.close(idx);
            }
        }

        fn sent(&mut self, idx: usize, side: usize, res: i32) {
            let Some(p) = self.pairs[idx].as_mut() else {
                return;
            };
            let s = &mut p.sides[side];
            s.sending = false;
            if res <= 0 || p.closing {
                self.close(idx);
                return;
            }
            let front = s
                .queue
                .front_mut()
                .expect("a send in flight has its buffer queued");
            front.1 += res as usize;
            if front.1 == front.2 {
                let (bid, _, _) = s.queue.pop_front().expect("front exists");
                self.bufs.recycle(bid);
                self.bufs.publish();
                for (i, sd) in std::mem::take(&mut self.starved) {
                    self.arm(i, sd);
                }
            }
            self.send_front(idx, side);
        }
    }

    /// The ring ringd's uring driver would make: single issuer with deferred task work (Linux
    /// 6.1), else cooperative task work (5.19), else a plain ring. Without them every
    /// completion's task work interrupts the thread, which costs a relay more than its sends.
    fn build_ring() -> std::io::Result<IoUring> {
        let mut last = None;
        for (single, defer, coop) in [
            (true, true, false),
            (false, false, true),
            (false, false, false),
        ] {
            let mut b = IoUring::builder();
            b.setup_cqsize(4096).setup_clamp();
            if single {
                b.setup_single_issuer();
            }
            if defer {
                b.setup_defer_taskrun();
            }
            if coop {
                b.setup_coop_taskrun();
            }
            match b.build(1024) {
                Ok(r) => return Ok(r),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("io_uring setup failed")))
    }

    pub fn run(listener: TcpListener, upstream: SocketAddr, nbufs: u16) -> anyhow::Result<()> {
        let ring = build_ring()?;
        let bufs = BufRing::new(&ring, nbufs, BUF, BGID)?;
        let mut r = Relay {
            ring,
            bufs,
            pairs: Vec::new(),
            free: Vec::new(),
            backlog: Vec::new(),
            starved: Vec::new(),
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
            let done: Vec<(u64, i32, u32)> = r
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (user_data, res, flags) in done {
                if user_data == ACCEPT {
                    if res >= 0 {
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
                    continue;
                }
                let idx = (user_data >> 2) as usize;
                let side = ((user_data >> 1) & 1) as usize;
                if user_data & 1 == 1 {
                    r.sent(idx, side, res);
                } else {
                    r.received(idx, side, res, flags);
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

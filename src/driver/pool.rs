//! Per-worker pools of idle upstream connections (shared-nothing: each worker keeps its own,
//! as HAProxy's per-thread idle lists): most recently used first, bounded per server, aged
//! out after the group's `idle_timeout`, and checked before reuse for a close that happened
//! while idle.
//!
//! The bound (`keepalive`) is on connections that stay idle, not on a burst: a connection
//! returned while the pool is full is kept, and the least recently used ones beyond the bound
//! are closed once they have been idle for [`SURPLUS_GRACE`] (HAProxy purges its idle surplus
//! the same way, `pool-purge-delay`). Closing at once, as nginx's `keepalive N` does, makes a
//! worker that handles completions in batches close connections in one batch and open new ones
//! in the next: with 64 clients and `keepalive = 32`, one connect (and close) per three
//! proxied requests was measured, for nginx as for ringd before this.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// A connection idle for less than this is reused without the peek: an upstream that closes
/// idle keep-alive connections does so after seconds, and the rare one that loses the race is
/// retried once on a new connection (`Exchange::retry_stale`). Saves a syscall per request.
pub const PEEK_AFTER: Duration = Duration::from_millis(500);

/// How long an idle connection beyond the per-server bound is kept for the next request.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(1);

/// Idle connections of one kind of socket, keyed by (group, server); each list oldest first.
pub struct Pool<S> {
    idle: HashMap<(usize, usize), VecDeque<(S, Instant)>>,
}

impl<S: AsFd> Default for Pool<S> {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
        }
    }
}

impl<S: AsFd> Pool<S> {
    /// Keeps `sock` for reuse (unless `max` is 0: then it is dropped, which closes it), and
    /// closes the least recently used idle connections beyond `max` that have been idle for
    /// [`SURPLUS_GRACE`]. Returns whether `sock` was kept.
    pub fn put(&mut self, key: (usize, usize), sock: S, max: usize, now: Instant) -> bool {
        if max == 0 {
            return false;
        }
        let list = self.idle.entry(key).or_default();
        list.push_back((sock, now));
        trim(list, max, now);
        true
    }

    /// Closes what has been idle too long: beyond `idle_timeout`, or beyond the bound for
    /// [`SURPLUS_GRACE`]. `limits` gives a server's (bound, idle_timeout), or `None` when its
    /// group is gone. Called from the driver's tick, so that idle sockets do not outlive their
    /// time while no request comes to take them.
    pub fn sweep(
        &mut self,
        now: Instant,
        limits: impl Fn((usize, usize)) -> Option<(usize, Duration)>,
    ) {
        self.idle.retain(|key, list| {
            let Some((max, idle)) = limits(*key) else {
                return false;
            };
            list.retain(|(_, t)| now.saturating_duration_since(*t) < idle);
            trim(list, max, now);
            !list.is_empty()
        });
    }

    /// The most recently used idle connection to `key` that is younger than `max_idle` and
    /// still open (for one idle over `PEEK_AFTER`, or always when `always_peek`, a peek finds
    /// neither EOF nor unexpected bytes); older and dead ones are closed on the way. Requests
    /// that must never be sent twice (not idempotent) ask for `always_peek`: they are not
    /// retried on a stale connection.
    pub fn take(
        &mut self,
        key: (usize, usize),
        max_idle: Duration,
        now: Instant,
        always_peek: bool,
    ) -> Option<S> {
        let list = self.idle.get_mut(&key)?;
        // Anything idle too long is closed (oldest first in the list).
        list.retain(|(_, t)| now.saturating_duration_since(*t) < max_idle);
        while let Some((sock, since)) = list.pop_back() {
            let recent = !always_peek && now.saturating_duration_since(since) < PEEK_AFTER;
            if recent || still_open(&sock) {
                return Some(sock);
            }
        }
        None
    }

    /// [`Pool::sweep`] with each server's `keepalive` and `idle_timeout` from `ups`.
    pub fn sweep_upstreams(&mut self, now: Instant, ups: &crate::gateway::Upstreams) {
        self.sweep(now, |(group, server)| {
            let spec = ups.spec(group).filter(|s| server < s.servers.len())?;
            Some((spec.keepalive, spec.idle_timeout))
        });
    }

    /// Drops every idle connection (a reload may renumber servers).
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    /// Idle connections held, all servers together.
    pub fn len(&self) -> usize {
        self.idle.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Closes the oldest connections of `list` beyond `max` that have been idle for
/// [`SURPLUS_GRACE`] (the list is oldest first, so they are at its front).
fn trim<S>(list: &mut VecDeque<(S, Instant)>, max: usize, now: Instant) {
    while list.len() > max
        && list
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= SURPLUS_GRACE)
    {
        list.pop_front();
    }
}

/// Whether an idle upstream connection is still usable: a non-blocking peek must find
/// nothing to read (EOF means the upstream closed it; bytes mean it sent something nobody
/// asked for).
pub fn still_open(sock: &impl AsFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid 1-byte buffer for the duration of the call; the fd is borrowed
    // from a live socket.
    let n = unsafe {
        libc::recv(
            sock.as_fd().as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn dead_and_old_connections_are_never_reused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer_a, _) = l.accept().unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer_b, _) = l.accept().unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_peer_c, _) = l.accept().unwrap();
        let mut p: Pool<TcpStream> = Pool::default();
        let now = Instant::now();
        let long = Duration::from_secs(30);
        assert!(p.put((0, 0), a, 2, now));
        assert!(p.put((0, 0), b, 2, now));
        assert!(!p.put((0, 0), c, 0, now), "keepalive = 0 keeps nothing");
        // b (most recent) sent bytes nobody asked for; a's peer closed. Idle long enough to be
        // peeked, both are found dead.
        peer_b.write_all(b"x").unwrap();
        drop(peer_a);
        std::thread::sleep(Duration::from_millis(50));
        assert!(p.take((0, 0), long, now + PEEK_AFTER, false).is_none());
        assert!(p.is_empty());
        // Aged out.
        let d = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_peer_d, _) = l.accept().unwrap();
        p.put((0, 1), d, 2, now);
        assert!(p
            .take(
                (0, 1),
                Duration::from_secs(1),
                now + Duration::from_secs(2),
                false
            )
            .is_none());
        let e = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_peer_e, _) = l.accept().unwrap();
        p.put((0, 1), e, 2, now);
        assert!(
            p.take((0, 1), long, now, false).is_some(),
            "a live one is reused"
        );
        // Within PEEK_AFTER no peek is made: a dead one comes back (the exchange's stale
        // retry then takes a new connection).
        let f = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer_f, _) = l.accept().unwrap();
        p.put((0, 2), f, 2, now);
        drop(peer_f);
        std::thread::sleep(Duration::from_millis(50));
        let soon = now + Duration::from_millis(100);
        assert!(
            p.take((0, 2), long, soon, true).is_none(),
            "always_peek finds it dead"
        );
        let g = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer_g, _) = l.accept().unwrap();
        p.put((0, 2), g, 2, now);
        drop(peer_g);
        std::thread::sleep(Duration::from_millis(50));
        assert!(p.take((0, 2), long, soon, false).is_some());
    }

    #[test]
    fn a_burst_beyond_the_bound_is_kept_for_the_grace_then_trimmed() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = Vec::new();
        let mut p: Pool<TcpStream> = Pool::default();
        let now = Instant::now();
        let long = Duration::from_secs(30);
        // Five returned in one batch with keepalive = 2: all kept for now.
        for _ in 0..5 {
            let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            peers.push(l.accept().unwrap().0);
            assert!(p.put((0, 0), s, 2, now));
        }
        assert_eq!(p.len(), 5, "a burst is not closed at once");
        // The next batch takes three of them back: no new connection needed.
        for _ in 0..3 {
            assert!(p.take((0, 0), long, now, false).is_some());
        }
        assert_eq!(p.len(), 2);
        // Five again; then the surplus idles past the grace and the tick trims it.
        for _ in 0..3 {
            let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            peers.push(l.accept().unwrap().0);
            p.put((0, 0), s, 2, now);
        }
        assert_eq!(p.len(), 5);
        p.sweep(now + SURPLUS_GRACE / 2, |_| Some((2, long)));
        assert_eq!(p.len(), 5, "within the grace");
        p.sweep(now + SURPLUS_GRACE, |_| Some((2, long)));
        assert_eq!(p.len(), 2, "trimmed to the bound");
        // idle_timeout ages out the rest; a group that is gone loses everything.
        p.sweep(now + Duration::from_secs(31), |_| Some((2, long)));
        assert!(p.is_empty());
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        peers.push(l.accept().unwrap().0);
        p.put((1, 0), s, 2, now);
        p.sweep(now, |_| None);
        assert!(p.is_empty());
    }
}

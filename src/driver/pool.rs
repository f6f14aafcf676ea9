//! Per-worker pools of idle upstream connections (shared-nothing: each worker keeps its own,
//! as HAProxy's per-thread idle lists): most recently used first, bounded per server, aged
//! out after the group's `idle_timeout`, and checked before reuse for a close that happened
//! while idle.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// A connection idle for less than this is reused without the peek: an upstream that closes
/// idle keep-alive connections does so after seconds, and the rare one that loses the race is
/// retried once on a new connection (`Exchange::retry_stale`). Saves a syscall per request.
pub const PEEK_AFTER: Duration = Duration::from_millis(500);

/// Idle connections of one kind of socket, keyed by (group, server).
pub struct Pool<S> {
    idle: HashMap<(usize, usize), Vec<(S, Instant)>>,
}

impl<S: AsFd> Default for Pool<S> {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
        }
    }
}

impl<S: AsFd> Pool<S> {
    /// Keeps `sock` for reuse unless `max` are already idle for that server (then it is
    /// dropped, which closes it). Returns whether it was kept.
    pub fn put(&mut self, key: (usize, usize), sock: S, max: usize, now: Instant) -> bool {
        let list = self.idle.entry(key).or_default();
        if list.len() >= max {
            return false;
        }
        list.push((sock, now));
        true
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
        while let Some((sock, since)) = list.pop() {
            let recent = !always_peek && now.saturating_duration_since(since) < PEEK_AFTER;
            if recent || still_open(&sock) {
                return Some(sock);
            }
        }
        None
    }

    /// Drops every idle connection (a reload may renumber servers).
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    /// Idle connections held, all servers together.
    pub fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert!(!p.put((0, 0), c, 2, now), "over the per-server bound");
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
}

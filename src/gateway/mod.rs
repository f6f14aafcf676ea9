//! The gateway seam: responses that come from somewhere other than a file. Today the proxy
//! (`proxy.rs`: one sans-IO exchange per proxied request); the per-worker upstream state here
//! (balancing, passive health, requests in flight) is plain data the core decides on.
//!
//! The driver owns every socket: it asks the session's exchange where to connect, takes a
//! pooled connection or opens one, moves bytes both ways, and reports what happened; the core
//! picks servers, builds and parses heads, re-frames bodies and applies the retry rule.

pub mod cgi;
pub mod compress;
pub mod proxy;
pub mod wsgi;

use std::time::Instant;

use crate::config::upstreams::{Balance, Upstream};

/// One server's state in one worker.
#[derive(Clone, Debug, Default)]
struct ServerState {
    /// Requests in flight to it from this worker.
    inflight: u32,
    /// Failures since `window_start`.
    fails: u32,
    window_start: Option<Instant>,
    /// Taken out (passive health) until then.
    down_until: Option<Instant>,
    /// Its going out was logged and its coming back not yet: one line each per outage, not
    /// one per `fail_timeout` while it stays dead.
    reported_down: bool,
    /// Smooth weighted round robin's running weight.
    current: i64,
}

/// One group's state.
#[derive(Clone, Debug)]
struct GroupState {
    servers: Vec<ServerState>,
}

/// Every upstream group's state in one worker (shared-nothing: each worker balances and
/// health-checks on what it sees itself, as nginx's workers do without a shared zone).
#[derive(Debug)]
pub struct Upstreams {
    specs: Vec<Upstream>,
    groups: Vec<GroupState>,
    rng: u64,
}

impl Upstreams {
    pub fn new(specs: &[Upstream], seed: u64) -> Upstreams {
        Upstreams {
            groups: specs
                .iter()
                .map(|u| GroupState {
                    servers: vec![ServerState::default(); u.servers.len()],
                })
                .collect(),
            specs: specs.to_vec(),
            rng: seed | 1,
        }
    }

    /// The group's configuration.
    pub fn spec(&self, group: usize) -> Option<&Upstream> {
        self.specs.get(group)
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: fast and good enough to spread load.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn up(&self, group: usize, server: usize, now: Instant) -> bool {
        let passive = self.groups[group].servers[server]
            .down_until
            .is_none_or(|t| now >= t);
        let active = self.specs[group]
            .health
            .as_ref()
            .and_then(|h| h.up.get(server))
            .is_none_or(|f| f.load(std::sync::atomic::Ordering::Relaxed));
        passive && active
    }

    /// Picks a server of `group` for a request, skipping `tried` and servers taken out.
    /// `key` feeds the hash policy. None when no server is left (→ 503).
    pub fn pick(&mut self, group: usize, key: u64, tried: &[usize], now: Instant) -> Option<usize> {
        let spec = self.specs.get(group)?;
        let n = spec.servers.len();
        let ok = |s: &Self, i: usize| !tried.contains(&i) && s.up(group, i, now);
        // The usable servers, on the stack for groups of up to 16 (no allocation per request).
        let mut stack = [0usize; 16];
        let heap: Vec<usize>;
        let candidates: &[usize] = if n <= stack.len() {
            let mut k = 0;
            for i in (0..n).filter(|&i| ok(self, i)) {
                stack[k] = i;
                k += 1;
            }
            &stack[..k]
        } else {
            heap = (0..n).filter(|&i| ok(self, i)).collect();
            &heap
        };
        if candidates.is_empty() {
            return None;
        }
        let weight = |i: usize| i64::from(spec.servers[i].weight);
        // nginx's smooth weighted round robin over `among`.
        let wrr = |groups: &mut Vec<GroupState>, among: &[usize]| {
            let total: i64 = among.iter().map(|&i| weight(i)).sum();
            let g = &mut groups[group];
            let mut best = among[0];
            for &i in among {
                g.servers[i].current += weight(i);
                if g.servers[i].current > g.servers[best].current {
                    best = i;
                }
            }
            g.servers[best].current -= total;
            best
        };
        let choice = match spec.balance {
            Balance::RoundRobin => wrr(&mut self.groups, candidates),
            Balance::LeastConn => {
                // Fewest in flight per unit of weight; ties in weighted round robin, as
                // nginx's least_conn does.
                let g = &self.groups[group];
                let score = |i: usize| u64::from(g.servers[i].inflight) * 1000 / weight(i) as u64;
                let min = candidates.iter().map(|&i| score(i)).min().unwrap_or(0);
                let ties: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| score(i) == min)
                    .collect();
                wrr(&mut self.groups, &ties)
            }
            Balance::RandomTwo => {
                let a = candidates[(self.random() % candidates.len() as u64) as usize];
                let b = candidates[(self.random() % candidates.len() as u64) as usize];
                let g = &self.groups[group];
                if g.servers[b].inflight < g.servers[a].inflight {
                    b
                } else {
                    a
                }
            }
            Balance::Hash => {
                // Rendezvous (highest random weight): removing a server moves only its keys.
                *candidates
                    .iter()
                    .max_by_key(|&&i| mix(key ^ mix(i as u64 + 1)) / 1000 * weight(i) as u64)
                    .unwrap_or(&candidates[0])
            }
        };
        self.groups[group].servers[choice].inflight += 1;
        Some(choice)
    }

    /// A request to (`group`, `server`) ended: `ok` false counts a failure (connect error,
    /// reset, timeout, bad response) toward taking the server out.
    pub fn done(&mut self, group: usize, server: usize, ok: bool, now: Instant) {
        let Some(spec) = self.specs.get(group) else {
            return;
        };
        let (max_fails, fail_timeout) = (spec.max_fails, spec.fail_timeout);
        let Some(s) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.servers.get_mut(server))
        else {
            return;
        };
        s.inflight = s.inflight.saturating_sub(1);
        if ok {
            if std::mem::take(&mut s.reported_down) {
                let (u, addr) = (
                    &self.specs[group].name,
                    &self.specs[group].servers[server].addr,
                );
                eprintln!("ringd: upstream {u}: {addr} answers again (passive health)");
            }
            return;
        }
        if s.window_start.is_none_or(|t| now >= t + fail_timeout) {
            s.window_start = Some(now);
            s.fails = 0;
        }
        s.fails += 1;
        if max_fails > 0 && s.fails >= max_fails {
            s.down_until = Some(now + fail_timeout);
            s.fails = 0;
            s.window_start = None;
            if !std::mem::replace(&mut s.reported_down, true) {
                let (u, addr) = (
                    &self.specs[group].name,
                    &self.specs[group].servers[server].addr,
                );
                eprintln!(
                    "ringd: upstream {u}: {addr} taken out after {max_fails} failures within \
                     {fail_timeout:?}, retried every {fail_timeout:?} (passive health; logged \
                     again when it answers)"
                );
            }
        }
    }
}

/// A 64-bit mixer (splitmix64's finaliser).
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of `b`, for hash keys.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstreams::{from_flags, server_spec};
    use std::time::Duration;

    fn group(balance: Balance, servers: &[&str]) -> Upstreams {
        let mut u = from_flags(servers.iter().map(|s| server_spec(s).unwrap()).collect());
        u.balance = balance;
        Upstreams::new(&[u], 7)
    }

    #[test]
    fn weighted_round_robin_is_smooth() {
        let mut g = group(
            Balance::RoundRobin,
            &["127.0.0.1:1", "127.0.0.1:2 weight=2"],
        );
        let now = Instant::now();
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                let s = g.pick(0, 0, &[], now).unwrap();
                g.done(0, s, true, now);
                s
            })
            .collect();
        assert_eq!(picks.iter().filter(|&&s| s == 1).count(), 4);
        assert_eq!(picks, vec![1, 0, 1, 1, 0, 1]);
    }

    #[test]
    fn least_conn_prefers_idle_servers() {
        let mut g = group(Balance::LeastConn, &["127.0.0.1:1", "127.0.0.1:2"]);
        let now = Instant::now();
        let a = g.pick(0, 0, &[], now).unwrap();
        let b = g.pick(0, 0, &[], now).unwrap();
        assert_ne!(a, b);
        g.done(0, a, true, now);
        assert_eq!(g.pick(0, 0, &[], now), Some(a));
    }

    #[test]
    fn hash_is_stable_and_moves_only_a_removed_servers_keys() {
        let mut g = group(
            Balance::Hash,
            &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        );
        let now = Instant::now();
        let keys: Vec<u64> = (0..300)
            .map(|k| hash_bytes(format!("10.0.0.{k}").as_bytes()))
            .collect();
        let first: Vec<usize> = keys
            .iter()
            .map(|&k| g.pick(0, k, &[], now).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|&k| g.pick(0, k, &[], now).unwrap())
            .collect();
        assert_eq!(first, again);
        for s in 0..3 {
            let n = first.iter().filter(|&&x| x == s).count();
            assert!(n > 50, "server {s} got {n} of 300");
        }
        // Server 1 excluded: only its keys move.
        let without: Vec<usize> = keys
            .iter()
            .map(|&k| g.pick(0, k, &[1], now).unwrap())
            .collect();
        for (a, b) in first.iter().zip(&without) {
            if *a != 1 {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn passive_health_takes_a_server_out_then_back() {
        let mut g = group(Balance::RoundRobin, &["127.0.0.1:1", "127.0.0.1:2"]);
        let now = Instant::now();
        for _ in 0..3 {
            g.groups[0].servers[0].inflight += 1;
            g.done(0, 0, false, now);
        }
        for _ in 0..4 {
            assert_eq!(g.pick(0, 0, &[], now), Some(1));
        }
        assert_eq!(g.pick(0, 0, &[1], now), None, "no server left");
        let later = now + Duration::from_secs(11);
        let picks: Vec<usize> = (0..4).filter_map(|_| g.pick(0, 0, &[], later)).collect();
        assert!(picks.contains(&0), "{picks:?}");
    }
}

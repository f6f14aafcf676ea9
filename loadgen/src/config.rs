//! A validated run description (no I/O), and how it is split across threads.

use std::sync::Arc;
use std::time::Duration;

use crate::schedule::{Arrival, Stages};
use crate::target::RequestSet;
use crate::threshold::Threshold;

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long (measured window; warm-up comes before it).
    Duration(Duration),
    /// After this many requests have been answered or failed (warm-up excluded).
    Count(u64),
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Requests to send, and where.
    pub requests: RequestSet,
    /// `https://`: the TLS client configuration (None: plain HTTP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Worker threads.
    pub threads: usize,
    /// Connections in total (spread over threads).
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Keep connections open across requests (false: `--no-keepalive`).
    pub keepalive: bool,
    /// When to stop.
    pub stop: Stop,
    /// Warm-up before the measured window: measured, reported apart.
    pub warmup: Duration,
    /// A request (or connect) with no answer after this long fails as a timeout.
    pub timeout: Duration,
    /// Open loop: requests per second in total. `None`: closed loop.
    pub rate: Option<f64>,
    /// Open-loop arrival process.
    pub arrival: Arrival,
    /// Pin threads to cores.
    pub pin: bool,
    /// Server process whose CPU time is measured.
    pub server_pid: Option<u32>,
    /// Seed for arrivals and the URL mix.
    pub seed: u64,
    /// `--threshold` checks made on the result.
    pub thresholds: Vec<Threshold>,
    /// `--shard i/N`: this process runs the i-th (0-based) of N equal parts of the load.
    pub shard: Option<(u32, u32)>,
    /// `--start-at`: the measured run starts at this wall-clock time (Unix seconds).
    pub start_at_unix_s: Option<f64>,
    /// `--read-rate`: each connection reads at most this many bytes per second (slow client).
    pub read_rate: Option<u64>,
    /// `--stages`: the open-loop rate ramps instead of staying at `rate` (which then holds the
    /// mean rate, for reports).
    pub stages: Option<Arc<Stages>>,
}

/// One thread's share of a run.
#[derive(Clone, Debug)]
pub struct ThreadPlan {
    /// Thread index.
    pub index: usize,
    /// Core to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// Connections this thread drives.
    pub connections: usize,
    /// This thread's open-loop rate (req/s).
    pub rate: Option<f64>,
    /// Offset of this thread's first send from the start, ns (staggers threads).
    pub start_offset_ns: u64,
    /// This thread's share of a `-n` count.
    pub count: Option<u64>,
    /// PRNG seed.
    pub seed: u64,
    /// This thread's share of the open-loop arrivals (its connections' share).
    pub share: f64,
    /// Offset of this thread's first arrival, in its own arrivals (`index / threads`).
    pub phase: f64,
}

impl RunConfig {
    /// Threads actually used: never more than connections.
    pub fn effective_threads(&self) -> usize {
        self.threads.clamp(1, self.connections.max(1))
    }

    /// Split connections, rate and count over threads; pin round-robin over `cores`.
    pub fn plan(&self, cores: &[core_affinity::CoreId]) -> Vec<ThreadPlan> {
        let t = self.effective_threads();
        let (count_share, count_rem) = match self.stop {
            Stop::Count(n) => (n / t as u64, n % t as u64),
            Stop::Duration(_) => (0, 0),
        };
        let total_interval_ns = self.rate.map(|r| 1e9 / r);
        // Shard s of N: its threads' arrivals fall between those of the other shards, so the N
        // shards together send the whole schedule evenly (shard rate = whole rate / N).
        let (shard, shards) = self.shard.map_or((0.0, 1.0), |(i, n)| (i as f64, n as f64));
        let shard_offset_ns = total_interval_ns.map_or(0.0, |iv| iv * shard / shards);
        (0..t)
            .map(|i| {
                let conns = self.connections / t + usize::from(i < self.connections % t);
                ThreadPlan {
                    index: i,
                    core: if self.pin && !cores.is_empty() {
                        Some(cores[i % cores.len()])
                    } else {
                        None
                    },
                    connections: conns,
                    rate: self
                        .rate
                        .map(|r| r * conns as f64 / self.connections as f64),
                    start_offset_ns: total_interval_ns
                        .map_or(0, |iv| (iv * i as f64 + shard_offset_ns) as u64),
                    count: match self.stop {
                        Stop::Count(_) => Some(count_share + u64::from((i as u64) < count_rem)),
                        Stop::Duration(_) => None,
                    },
                    seed: self
                        .seed
                        .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    share: conns as f64 / self.connections as f64 / shards,
                    phase: (i as f64 + shard / shards) / t as f64,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{RequestSpec, Url};

    fn cfg(conns: usize, threads: usize, stop: Stop) -> RunConfig {
        let url = Url::parse("http://127.0.0.1:1/").unwrap();
        RunConfig {
            tls: None,
            requests: RequestSet::single(
                &url,
                &RequestSpec {
                    method: "GET".into(),
                    ..Default::default()
                },
            ),
            threads,
            connections: conns,
            pipeline: 1,
            keepalive: true,
            stop,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            rate: Some(1000.0),
            arrival: Arrival::Constant,
            pin: false,
            server_pid: None,
            seed: 1,
            thresholds: Vec::new(),
            stages: None,
            read_rate: None,
            shard: None,
            start_at_unix_s: None,
        }
    }

    #[test]
    fn plan_splits_everything_exactly() {
        let c = cfg(10, 3, Stop::Count(100));
        let plan = c.plan(&[]);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan.iter().map(|p| p.connections).sum::<usize>(), 10);
        assert_eq!(plan.iter().map(|p| p.count.unwrap()).sum::<u64>(), 100);
        let rate: f64 = plan.iter().map(|p| p.rate.unwrap()).sum();
        assert!((rate - 1000.0).abs() < 1e-6);
        // Never more threads than connections.
        assert_eq!(cfg(2, 8, Stop::Count(1)).plan(&[]).len(), 2);
    }
}

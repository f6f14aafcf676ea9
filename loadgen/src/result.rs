//! The result of one run: merged thread measurements turned into the figures every report
//! prints, with the JSON shape `--json` writes (key names are part of the interface).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, Stop};
use crate::hist::{self, HistSet, SecondHist, Summary};
use crate::procstat::{self, CpuTicks, MachineSample};
use crate::schedule::Arrival;
use crate::stats::{ErrorClass, Interval, ThreadResult, Window, MAX_STATUS};
use crate::threshold::Outcome;

/// Above this share of wall time busy, a generator thread counts as saturated.
pub const SATURATED: f64 = 0.90;
/// Below this share of the target rate, the open loop counts as not keeping up.
pub const KEEP_UP: f64 = 0.95;

/// The settings a run used (echoed into its result).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Threads.
    pub threads: usize,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Connections reused across requests.
    pub keepalive: bool,
    /// Measured duration asked for, seconds (`-d`).
    pub duration_s: Option<f64>,
    /// Requests asked for (`-n`).
    pub count: Option<u64>,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Request timeout, seconds.
    pub timeout_s: f64,
    /// Open-loop arrival process (`constant` / `poisson`), absent in closed loop.
    pub arrival: Option<String>,
    /// Threads pinned to cores.
    pub pinned: bool,
    /// `--stages` as [seconds, rate at the end] pairs, absent without a ramp.
    pub stages: Option<Vec<[f64; 2]>>,
    /// `--read-rate`: bytes per second each connection reads at most.
    pub read_rate: Option<u64>,
}

/// The generator's own CPU use.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GeneratorCpu {
    /// User time of all load threads, seconds.
    pub user_s: f64,
    /// System time of all load threads, seconds.
    pub sys_s: f64,
    /// CPU time per response, microseconds.
    pub us_per_request: f64,
    /// Busy share of wall time, per thread (1.0 = one core fully used).
    pub thread_utilization: Vec<f64>,
    /// The busiest thread's share.
    pub max_utilization: f64,
    /// Time spent spinning to pace open-loop sends on time, seconds (counted in the CPU time
    /// above, but not towards saturation).
    pub pacing_spin_s: f64,
    /// The busiest thread's share without pacing spins: what `saturated` is judged on.
    pub max_work_utilization: f64,
    /// Some thread was busier than [`SATURATED`]: the server may not have been the limit.
    pub saturated: bool,
}

/// Which part of a sharded run (`--shard i/N`) a result is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// 0-based index.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
    /// `--start-at`, Unix seconds, if given.
    pub start_at_unix_s: Option<f64>,
}

/// One core's share of the measured window (seconds of CPU time).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CoreCpu {
    /// Core number (as in /proc/stat).
    pub cpu: u32,
    /// User (and nice) time.
    pub user_s: f64,
    /// System time.
    pub system_s: f64,
    /// Soft-interrupt time (network receive and transmit completion).
    pub softirq_s: f64,
    /// Hard-interrupt time.
    pub irq_s: f64,
    /// Time taken by the hypervisor.
    pub steal_s: f64,
    /// Idle (and I/O wait) time.
    pub idle_s: f64,
    /// Busy share of the window (1.0 = the core was never idle).
    pub busy: f64,
}

/// The machine's TCP counters over the measured window (/proc/net/snmp, every socket on the
/// machine): in front of a proxy, `other_opens` are the connections the proxy (or anything
/// else) opened, such as upstream connections it could not keep alive, and `segs_per_request`
/// the segments every side sent per response.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TcpCounts {
    /// Connections opened on the machine (connect()), this generator's included.
    pub active_opens: u64,
    /// Of those, the ones this generator did not open (measured-window connects subtracted).
    pub other_opens: u64,
    /// Connections accepted on the machine.
    pub passive_opens: u64,
    /// Segments sent by every socket on the machine.
    pub out_segs: u64,
    /// Segments retransmitted.
    pub retrans_segs: u64,
    /// Connections reset from ESTABLISHED or CLOSE-WAIT.
    pub estab_resets: u64,
    /// Segments sent per response.
    pub segs_per_request: f64,
    /// `other_opens` per 1000 responses.
    pub other_opens_per_1k: f64,
}

impl TcpCounts {
    /// From two samples around a window with `requests` responses and `own_connects`
    /// connections of this generator.
    pub fn from_samples(
        a: &procstat::TcpSnmp,
        b: &procstat::TcpSnmp,
        requests: u64,
        own_connects: u64,
    ) -> TcpCounts {
        let active_opens = b.active_opens.saturating_sub(a.active_opens);
        let other_opens = active_opens.saturating_sub(own_connects);
        let out_segs = b.out_segs.saturating_sub(a.out_segs);
        let per = |n: u64, k: f64| {
            if requests > 0 {
                round3(n as f64 * k / requests as f64)
            } else {
                0.0
            }
        };
        TcpCounts {
            active_opens,
            other_opens,
            passive_opens: b.passive_opens.saturating_sub(a.passive_opens),
            out_segs,
            retrans_segs: b.retrans_segs.saturating_sub(a.retrans_segs),
            estab_resets: b.estab_resets.saturating_sub(a.estab_resets),
            segs_per_request: per(out_segs, 1.0),
            other_opens_per_1k: per(other_opens, 1000.0),
        }
    }
}

/// The whole machine's CPU over the measured window, from /proc/stat: every process and every
/// kernel context (softirq included), so the TCP work the kernel bills to whichever side
/// happens to run it is counted once, wherever it ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MachineCpu {
    /// Cores seen.
    pub cores: usize,
    /// Busy time of all cores (user + nice + system + irq + softirq + steal), seconds.
    pub busy_s: f64,
    /// User (and nice) time of all cores, seconds.
    pub user_s: f64,
    /// System time of all cores, seconds.
    pub system_s: f64,
    /// Soft-interrupt time of all cores, seconds.
    pub softirq_s: f64,
    /// Hard-interrupt time of all cores, seconds.
    pub irq_s: f64,
    /// Busy cores on average over the window (2.0 = two cores' worth).
    pub utilization: f64,
    /// Busy time of the whole machine per response, µs: server, generator, kernel and anything
    /// else that ran, together.
    pub us_per_request: f64,
    /// Per core.
    pub per_core: Vec<CoreCpu>,
}

impl MachineCpu {
    /// Build from two /proc/stat samples around a window of `window_ns` with `requests`
    /// responses.
    pub fn from_samples(
        start: &[(u32, CpuTicks)],
        end: &[(u32, CpuTicks)],
        window_ns: u64,
        requests: u64,
    ) -> MachineCpu {
        let tick_s = procstat::tick_ns() as f64 / 1e9;
        let mut m = MachineCpu::default();
        let mut busy_ticks = 0u64;
        for (cpu, e) in end {
            let Some((_, s)) = start.iter().find(|(c, _)| c == cpu) else {
                continue;
            };
            let d = e.since(s);
            let all = d.busy() + d.idle + d.iowait;
            busy_ticks += d.busy();
            m.user_s += (d.user + d.nice) as f64 * tick_s;
            m.system_s += d.system as f64 * tick_s;
            m.softirq_s += d.softirq as f64 * tick_s;
            m.irq_s += d.irq as f64 * tick_s;
            m.per_core.push(CoreCpu {
                cpu: *cpu,
                user_s: (d.user + d.nice) as f64 * tick_s,
                system_s: d.system as f64 * tick_s,
                softirq_s: d.softirq as f64 * tick_s,
                irq_s: d.irq as f64 * tick_s,
                steal_s: d.steal as f64 * tick_s,
                idle_s: (d.idle + d.iowait) as f64 * tick_s,
                busy: if all > 0 {
                    round3(d.busy() as f64 / all as f64)
                } else {
                    0.0
                },
            });
        }
        m.cores = m.per_core.len();
        m.busy_s = busy_ticks as f64 * tick_s;
        m.utilization = round3(m.busy_s / (window_ns.max(1) as f64 / 1e9));
        m.us_per_request = if requests > 0 {
            m.busy_s * 1e6 / requests as f64
        } else {
            0.0
        };
        m
    }
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalOut {
    /// Second since the start (warm-up included).
    pub t_s: u64,
    /// Part of the warm-up.
    pub warmup: bool,
    /// Responses.
    pub requests: u64,
    /// Failures.
    pub errors: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Requests sent (the achieved rate of this second).
    pub sent: u64,
    /// The open-loop schedule's rate over this second (ramps follow `--stages`).
    pub target_rps: Option<f64>,
    /// Mean corrected latency, µs.
    pub mean_us: f64,
    /// Median corrected latency, µs (2 significant digits).
    pub p50_us: f64,
    /// 90th percentile, µs (2 significant digits).
    pub p90_us: f64,
    /// 99th percentile, µs (2 significant digits).
    pub p99_us: f64,
    /// Largest corrected latency, µs.
    pub max_us: f64,
    /// This second's corrected latency histogram (base64 V2, ns, 2 significant digits), for
    /// exact merges of shards.
    pub histogram: String,
}

/// The warm-up window, reported apart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WarmupOut {
    /// Responses during the warm-up.
    pub requests: u64,
    /// Warm-up length, seconds.
    pub duration_s: f64,
    /// Failures.
    pub errors: u64,
    /// Corrected latency.
    pub latency_us: Summary,
    /// Latency histogram (base64 V2).
    pub histogram: String,
}

/// Every histogram of the measured window in HdrHistogram's base64 V2 (deflate) encoding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Histograms {
    /// Unit of the recorded values.
    pub unit: String,
    /// Corrected latency.
    pub latency: String,
    /// Uncorrected latency.
    pub latency_uncorrected: String,
    /// Connect time.
    pub connect: String,
    /// Time to first byte.
    pub ttfb: String,
    /// Pipelined batch latency.
    pub batch: String,
    /// Send lag behind the schedule.
    pub schedule_lag: String,
}

/// The result of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// The target URL (the first one of a mix).
    pub url: String,
    /// Every URL of the mix.
    pub urls: Vec<String>,
    /// `closed` or `open`.
    pub mode: String,
    /// Settings used.
    pub settings: Settings,
    /// Complete responses in the measured window.
    pub requests: u64,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Responses per second.
    pub rps: f64,
    /// Bytes received (heads, bodies, framing).
    pub bytes: u64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Decoded body bytes received.
    pub body_bytes: u64,
    /// Requests sent.
    pub sent: u64,
    /// Responses per status code.
    pub status: BTreeMap<String, u64>,
    /// Failures per class.
    pub errors: BTreeMap<String, u64>,
    /// Total failures.
    pub errors_total: u64,
    /// Latency from the intended send time (coordinated-omission corrected in open loop).
    pub latency_us: Summary,
    /// Latency from the actual send time.
    pub latency_uncorrected_us: Summary,
    /// Connect time.
    pub connect_us: Summary,
    /// Time to first response byte.
    pub ttfb_us: Summary,
    /// Pipelined batch latency (with `--pipeline` > 1).
    pub batch_us: Option<Summary>,
    /// How late sends went out against the schedule (open loop).
    pub schedule_lag_us: Summary,
    /// Open-loop target rate.
    pub target_rps: Option<f64>,
    /// Rate at which requests actually went out.
    pub achieved_rps: f64,
    /// Open loop: requests that were due but never sent by the end.
    pub unsent: Option<u64>,
    /// Connections established.
    pub connects: u64,
    /// The generator's own CPU.
    pub generator_cpu: GeneratorCpu,
    /// Server CPU time per response (with `--server-pid`), µs.
    pub server_cpu_us_per_request: Option<f64>,
    /// Server CPU time over the measured window (with `--server-pid`), seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU share of one core over the window (with `--server-pid`).
    pub server_cpu_utilization: Option<f64>,
    /// The whole machine's CPU over the measured window (every core, from /proc/stat).
    pub machine_cpu: Option<MachineCpu>,
    /// The machine's TCP counters over the measured window (/proc/net/snmp).
    #[serde(default)]
    pub tcp: Option<TcpCounts>,
    /// Per-second intervals.
    pub intervals: Vec<IntervalOut>,
    /// The warm-up window, if any.
    pub warmup: Option<WarmupOut>,
    /// Things the reader must know (saturation, not keeping up, errors).
    pub warnings: Vec<String>,
    /// The run was stopped early by Ctrl-C.
    pub interrupted: bool,
    /// `--threshold` checks, in the order given.
    pub thresholds: Vec<Outcome>,
    /// Histograms, mergeable later.
    pub histograms: Histograms,
    /// `--shard`: which part of a sharded run this is.
    pub shard: Option<ShardInfo>,
    /// The merged histograms themselves (not serialised; rebuilt from `histograms` by merge).
    #[serde(skip)]
    pub hists: HistSet,
}

/// What the coordinator measured around the threads.
#[derive(Clone, Debug, Default)]
pub struct Outside {
    /// Server CPU time (ns) over the measured window.
    pub server_cpu_ns: Option<u64>,
    /// Length of the warm-up actually run, ns.
    pub warmup_ns: u64,
    /// /proc/stat per core at the start and the end of the measured window.
    pub machine: Option<(MachineSample, MachineSample)>,
    /// Wall time between the two /proc/stat samples, ns.
    pub machine_window_ns: u64,
    /// /proc/net/snmp's TCP counters at the start and the end of the measured window.
    pub tcp: Option<(procstat::TcpSnmp, procstat::TcpSnmp)>,
}

fn status_map(w: &Window) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (code, &n) in w.counters.status.iter().enumerate().take(MAX_STATUS + 1) {
        if n > 0 {
            let key = if code == 0 {
                "other".to_string()
            } else {
                code.to_string()
            };
            m.insert(key, n);
        }
    }
    m
}

fn error_map(w: &Window) -> BTreeMap<String, u64> {
    ErrorClass::ALL
        .iter()
        .map(|c| (c.name().to_string(), w.counters.errors[*c as usize]))
        .collect()
}

impl RunResult {
    /// Merge thread results and compute every figure.
    pub fn build(cfg: &RunConfig, threads: &[ThreadResult], outside: &Outside) -> RunResult {
        let mut main = Window::default();
        let mut warm = Window::default();
        let mut intervals: Vec<Interval> = Vec::new();
        let mut second_hists: Vec<SecondHist> = Vec::new();
        let mut gen = GeneratorCpu::default();
        let mut wall_ns = 0u64;
        let mut scheduled = 0u64;
        for t in threads {
            main.merge(&t.main);
            warm.merge(&t.warmup);
            if intervals.len() < t.intervals.len() {
                intervals.resize(t.intervals.len(), Interval::default());
            }
            for (a, b) in intervals.iter_mut().zip(&t.intervals) {
                a.merge(b);
            }
            while second_hists.len() < t.interval_hists.len() {
                second_hists.push(hist::new_second_hist());
            }
            for (a, b) in second_hists.iter_mut().zip(&t.interval_hists) {
                a.add(b).expect("histograms share bounds");
            }
            gen.user_s += t.cpu_user_ns as f64 / 1e9;
            gen.sys_s += t.cpu_sys_ns as f64 / 1e9;
            let util = if t.wall_ns > 0 {
                (t.cpu_user_ns + t.cpu_sys_ns) as f64 / t.wall_ns as f64
            } else {
                0.0
            };
            gen.thread_utilization.push(round3(util));
            gen.max_utilization = gen.max_utilization.max(round3(util));
            gen.pacing_spin_s += t.spin_ns as f64 / 1e9;
            let work = if t.wall_ns > 0 {
                (t.cpu_user_ns + t.cpu_sys_ns).saturating_sub(t.spin_ns) as f64 / t.wall_ns as f64
            } else {
                0.0
            };
            gen.max_work_utilization = gen.max_work_utilization.max(round3(work));
            wall_ns = wall_ns.max(t.wall_ns);
            scheduled += t.scheduled;
        }
        let warmup_ns = outside.warmup_ns.min(wall_ns);
        // A timed run measures exactly its window (the loop stops at its end, possibly a little
        // late); a counted run measures until its last answer.
        let mut measured_ns = wall_ns.saturating_sub(warmup_ns).max(1);
        if let Stop::Duration(d) = cfg.stop {
            measured_ns = measured_ns.min(d.as_nanos() as u64);
        }
        let duration_s = measured_ns as f64 / 1e9;
        let c = &main.counters;
        let requests = c.responses;
        let rps = requests as f64 / duration_s;
        gen.saturated = gen.max_work_utilization > SATURATED;
        gen.us_per_request = if requests > 0 {
            (gen.user_s + gen.sys_s) * 1e6 / (requests + warm.counters.responses) as f64
        } else {
            0.0
        };
        let achieved_rps = c.sent as f64 / duration_s;
        let mut warnings = Vec::new();
        if gen.saturated {
            warnings.push(format!(
                "generator thread(s) were {:.0}% busy: the generator, not the server, may have \
                 been the limit (add threads with -t)",
                gen.max_work_utilization * 100.0
            ));
        }
        let unsent = cfg
            .rate
            .map(|_| scheduled.saturating_sub(c.sent + warm.counters.sent));
        if let Some(target) = cfg.rate {
            if achieved_rps < target * KEEP_UP {
                let lag = hist::summary(&main.hists.lag);
                warnings.push(format!(
                    "could not keep up: sent {achieved_rps:.0} req/s of {target:.0} target \
                     ({} due requests never sent; send lag p99 {:.0} µs, max {:.0} µs){}",
                    unsent.unwrap_or(0),
                    lag.p99,
                    lag.max,
                    if gen.saturated {
                        " — the generator was saturated"
                    } else {
                        " — connections were all busy: the server was the limit"
                    }
                ));
            }
        }
        if threads.iter().any(|t| t.gave_up) {
            warnings.push(format!(
                "stopped before the requested count: no connection could be made for {:.1}s \
                 (--timeout)",
                cfg.timeout.as_secs_f64()
            ));
        }
        let errors_total = c.error_total();
        if errors_total > 0 {
            warnings.push(format!("{errors_total} requests or connects failed"));
        }
        let server_cpu_us_per_request = outside
            .server_cpu_ns
            .filter(|_| requests > 0)
            .map(|ns| ns as f64 / 1000.0 / requests as f64);
        let h = &main.hists;
        let warmup = (warmup_ns > 0).then(|| WarmupOut {
            requests: warm.counters.responses,
            duration_s: warmup_ns as f64 / 1e9,
            errors: warm.counters.error_total(),
            latency_us: hist::summary(&warm.hists.latency),
            histogram: hist::encode(&warm.hists.latency),
        });
        let warm_secs = warmup_ns.div_ceil(1_000_000_000);
        RunResult {
            url: cfg.requests.urls[0].clone(),
            urls: cfg.requests.urls.clone(),
            mode: if cfg.rate.is_some() { "open" } else { "closed" }.to_string(),
            settings: Settings {
                threads: threads.len(),
                connections: cfg.connections,
                pipeline: cfg.pipeline,
                keepalive: cfg.keepalive,
                duration_s: match cfg.stop {
                    Stop::Duration(d) => Some(d.as_secs_f64()),
                    Stop::Count(_) => None,
                },
                count: match cfg.stop {
                    Stop::Count(n) => Some(n),
                    Stop::Duration(_) => None,
                },
                warmup_s: cfg.warmup.as_secs_f64(),
                timeout_s: cfg.timeout.as_secs_f64(),
                arrival: cfg.rate.map(|_| match cfg.arrival {
                    Arrival::Constant => "constant".to_string(),
                    Arrival::Poisson => "poisson".to_string(),
                }),
                pinned: cfg.pin,
                stages: cfg
                    .stages
                    .as_ref()
                    .map(|st| st.stages().iter().map(|s| [s.dur_s, s.target]).collect()),
                read_rate: cfg.read_rate,
            },
            requests,
            duration_s,
            rps,
            bytes: c.bytes,
            bytes_per_s: c.bytes as f64 / duration_s,
            body_bytes: c.body_bytes,
            sent: c.sent,
            status: status_map(&main),
            errors: error_map(&main),
            errors_total,
            latency_us: hist::summary(&h.latency),
            latency_uncorrected_us: hist::summary(&h.uncorrected),
            connect_us: hist::summary(&h.connect),
            ttfb_us: hist::summary(&h.ttfb),
            batch_us: (cfg.pipeline > 1).then(|| hist::summary(&h.batch)),
            schedule_lag_us: hist::summary(&h.lag),
            target_rps: cfg.rate,
            achieved_rps,
            unsent,
            connects: c.connects + warm.counters.connects,
            generator_cpu: gen,
            server_cpu_us_per_request,
            server_cpu_s: outside.server_cpu_ns.map(|ns| ns as f64 / 1e9),
            server_cpu_utilization: outside
                .server_cpu_ns
                .map(|ns| round3(ns as f64 / measured_ns as f64)),
            machine_cpu: outside.machine.as_ref().map(|(a, b)| {
                MachineCpu::from_samples(a, b, outside.machine_window_ns.max(1), requests)
            }),
            tcp: outside
                .tcp
                .as_ref()
                .map(|(a, b)| TcpCounts::from_samples(a, b, requests, c.connects)),
            intervals: intervals
                .iter()
                .enumerate()
                .map(|(i, iv)| {
                    let empty = hist::new_second_hist();
                    let h = second_hists.get(i).unwrap_or(&empty);
                    let q = |q: f64| {
                        if h.is_empty() {
                            0.0
                        } else {
                            h.highest_equivalent(h.value_at_quantile(q)) as f64 / 1000.0
                        }
                    };
                    IntervalOut {
                        t_s: i as u64,
                        warmup: (i as u64) < warm_secs,
                        requests: iv.responses,
                        errors: iv.errors,
                        bytes: iv.bytes,
                        sent: iv.sent,
                        target_rps: target_rate(cfg, i as f64),
                        mean_us: if iv.responses > 0 {
                            iv.latency_sum_ns as f64 / iv.responses as f64 / 1000.0
                        } else {
                            0.0
                        },
                        p50_us: q(0.50),
                        p90_us: q(0.90),
                        p99_us: q(0.99),
                        max_us: iv.latency_max_ns as f64 / 1000.0,
                        histogram: hist::encode(h),
                    }
                })
                .collect(),
            warmup,
            warnings,
            interrupted: false,
            thresholds: Vec::new(),
            shard: cfg.shard.map(|(index, count)| ShardInfo {
                index,
                count,
                start_at_unix_s: cfg.start_at_unix_s,
            }),
            histograms: Histograms {
                unit: "ns".to_string(),
                latency: hist::encode(&h.latency),
                latency_uncorrected: hist::encode(&h.uncorrected),
                connect: hist::encode(&h.connect),
                ttfb: hist::encode(&h.ttfb),
                batch: hist::encode(&h.batch),
                schedule_lag: hist::encode(&h.lag),
            },
            hists: main.hists,
        }
    }

    /// The result as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("result serialises")
    }

    /// Some `--threshold` failed.
    pub fn thresholds_failed(&self) -> bool {
        self.thresholds.iter().any(|t| !t.ok)
    }
}

/// The schedule's rate over second `t` of the run (`None` in closed loop).
fn target_rate(cfg: &RunConfig, t: f64) -> Option<f64> {
    match (&cfg.stages, cfg.rate) {
        (Some(st), _) => {
            let shards = cfg.shard.map_or(1.0, |(_, n)| n as f64);
            Some((st.count_at(t + 1.0) - st.count_at(t)) / shards)
        }
        (None, r) => r,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

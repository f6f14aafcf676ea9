//! Command-line flags: parsed and validated here, turned into a `RunConfig` / `CompareConfig`;
//! nothing past this file sees a flag.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use loadgen::compare::{CompareConfig, CompareTarget};
use loadgen::config::{RunConfig, Stop};
use loadgen::schedule::{Arrival, Stage, Stages};
use loadgen::target::{RequestSet, RequestSpec, Url};
use loadgen::threshold::Threshold;

/// An HTTP/1.1 load generator: closed loop like wrk, open loop with coordinated-omission
/// correction like wrk2, and side-by-side comparison of servers.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Subcommand (omit to run one load test).
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Load-test flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run several targets interleaved over rounds and write a comparison report.
    Compare(Box<CompareArgs>),
    /// Add the --json results of `--shard i/N` runs into one result (histograms added exactly,
    /// never averaged). Example: loadgen merge shards/ --json merged.json
    Merge(MergeArgs),
}

/// `loadgen merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Result files, or directories whose *.json files are results (one per shard).
    #[arg(required = true, value_name = "DIR|FILE")]
    pub paths: Vec<PathBuf>,
    /// Write the merged result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the merged corrected latency distribution in .hgrm form to this file.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Pass/fail check on the merged result (as for a run; exit status 99 when one fails).
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
}

/// One load test.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Target: http://host:port/path or unix:/path/to.sock:/path
    pub url: Option<String>,
    /// Load settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the corrected latency distribution in .hgrm form to this file.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Measure this server process's CPU time per request (threads and children included).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// Open-loop arrival process.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ArrivalArg {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps.
    Poisson,
}

/// Settings shared by a single run and by `compare`.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// Connections in total (spread over threads).
    #[arg(short = 'c', long = "connections", default_value_t = 64)]
    pub connections: usize,
    /// Threads, each pinned to a core [default: available cores].
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Measured duration, e.g. 10s, 500ms, 2m [default: 10s].
    #[arg(short = 'd', long = "duration", conflicts_with = "requests")]
    pub duration: Option<String>,
    /// Stop after this many requests instead of a duration. Example: -n 100000
    #[arg(short = 'n', long = "count", value_name = "N")]
    pub requests: Option<u64>,
    /// Weighted request mix, one request per line: `[WEIGHT] METHOD PATH`, or JSON
    /// {"method","path","headers","body"|"body_file","weight"} (paths relative to the target;
    /// a "Host" header picks the site). Example: --requests mix.txt with lines such as
    /// `3 GET /index.html` and {"method":"POST","path":"/api","headers":{"Host":"b.test"},"body":"x"}
    #[arg(long = "requests", value_name = "FILE", conflicts_with = "urls")]
    pub requests_file: Option<PathBuf>,
    /// Open loop at this many requests per second in total (default: closed loop).
    #[arg(short = 'R', long = "rate")]
    pub rate: Option<f64>,
    /// Open loop with a ramping rate: DURATION:RATE stages, each moving the rate linearly from
    /// the previous stage's (0 at the start) to its own; the run lasts their sum.
    /// Example: --stages 10s:1000,30s:20000,10s:0
    #[arg(long, value_name = "STAGES", conflicts_with_all = ["rate", "duration", "requests"])]
    pub stages: Option<String>,
    /// Slow clients: each connection reads at most this many bytes per second (small receive
    /// buffer, bounded reads). Units B, KB, KiB, MB, MiB; "/s" optional. Raise --timeout for
    /// large responses. Example: --read-rate 1KiB/s
    #[arg(long, value_name = "BYTES/s")]
    pub read_rate: Option<String>,
    /// Open-loop arrival process.
    #[arg(long, value_enum, default_value = "constant")]
    pub arrival: ArrivalArg,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// A new connection per request (connect time is measured separately).
    #[arg(long)]
    pub no_keepalive: bool,
    /// https:// targets: resume TLS sessions on new connections (tickets / session IDs), or
    /// make every handshake a full one.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub tls_resume: OnOff,
    /// https:// targets: trust the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// https:// targets: do not verify the server's certificate (benchmarks on loopback).
    #[arg(long)]
    pub tls_insecure: bool,
    /// https:// targets: offer TLS 1.3 only (default: 1.3 and 1.2).
    #[arg(long)]
    pub tls13_only: bool,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request method.
    #[arg(short = 'm', long = "method", default_value = "GET")]
    pub method: String,
    /// Request body (sent with Content-Length); @FILE reads it from a file.
    #[arg(long)]
    pub body: Option<String>,
    /// Weighted URL mix: one `URL` or `WEIGHT URL` per line (paths are relative to the target).
    #[arg(long, value_name = "FILE")]
    pub urls: Option<PathBuf>,
    /// Warm-up before the measured window (measured, reported apart), e.g. 2s.
    #[arg(long, default_value = "0s")]
    pub warmup: String,
    /// A request or connect with no answer after this long fails as a timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Seed for Poisson arrivals and the URL mix.
    #[arg(long, default_value_t = 0x10AD)]
    pub seed: u64,
    /// Run the i-th (0-based) of N equal parts of this load, for generators on several machines:
    /// open loop at rate/N with arrivals offset between the other shards', closed loop with
    /// connections/N, -n with count/N. Write each shard's --json, then `loadgen merge`.
    /// Example: --shard 2/8 --start-at 1767225600 --json shard-2.json
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// Start the measured run at this wall-clock time (Unix seconds, as `date +%s` prints, or
    /// +DURATION from now), after the connections are open, so shards start together.
    /// Example: --start-at $(( $(date +%s) + 60 ))  or  --start-at +30s
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Pass/fail check on the result, METRIC<VALUE (repeatable); the run exits with status 99
    /// when one fails. Metrics: p50, p90, p99, p99.9, p99.99, max, mean (corrected latency),
    /// errors (a count, or a share with %), rps, machine_cpu_us (per request).
    /// Example: --threshold 'p99<5ms' --threshold 'errors<0.1%'
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
}

/// `loadgen compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// A target, NAME=URL (repeatable; each may use its own path).
    #[arg(long = "target", value_name = "NAME=URL", required = true)]
    pub targets: Vec<String>,
    /// A target's server process, NAME=PID, for CPU per request (repeatable).
    #[arg(long = "server-pid", value_name = "NAME=PID")]
    pub server_pids: Vec<String>,
    /// The target the ratios are computed against [default: the first].
    #[arg(long)]
    pub baseline: Option<String>,
    /// Rounds; each round runs every target once, in order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Output directory for report.md, report.html, report.json and NAME.hgrm.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Report title.
    #[arg(long)]
    pub title: Option<String>,
    /// Metadata recorded in the report, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Pause between runs, so one server's tail does not land in the next one's window.
    #[arg(long, default_value = "1s")]
    pub pause: String,
    /// Load settings, identical for every target.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Parse `10s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?} (expected e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        other => bail!("invalid duration unit {other:?} in {s:?} (use ns, us, ms, s, m or h)"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("invalid duration {s:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse `--shard i/N` (0 ≤ i < N).
pub fn parse_shard(s: &str) -> Result<(u32, u32)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("invalid --shard {s:?}: expected i/N, e.g. 0/4"))?;
    let (i, n): (u32, u32) = (
        i.trim()
            .parse()
            .with_context(|| format!("invalid --shard {s:?}"))?,
        n.trim()
            .parse()
            .with_context(|| format!("invalid --shard {s:?}"))?,
    );
    if n == 0 || i >= n {
        bail!("invalid --shard {s:?}: need 0 <= i < N");
    }
    Ok((i, n))
}

/// Parse `--start-at`: Unix seconds, or `+DURATION` from now.
pub fn parse_start_at(s: &str) -> Result<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Some(rel) = s.trim().strip_prefix('+') {
        return Ok(now + parse_duration(rel)?.as_secs_f64());
    }
    let t: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("invalid --start-at {s:?}: expected Unix seconds or +10s"))?;
    if !t.is_finite() || t < 0.0 {
        bail!("invalid --start-at {s:?}");
    }
    if t > now + 86_400.0 {
        bail!("--start-at {s:?} is more than a day away");
    }
    Ok(t)
}

/// Parse a byte rate: `1KiB/s`, `500B/s`, `2MB`, `4096` (bytes per second).
pub fn parse_byte_rate(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("invalid byte rate {s:?} (expected e.g. 1KiB/s)"))?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" | "k" => 1e3,
        "KiB" | "K" => 1024.0,
        "MB" | "M" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        other => bail!("invalid byte rate unit {other:?} in {s:?} (use B, KB, KiB, MB or MiB)"),
    };
    let b = v * scale;
    if !(b.is_finite() && b >= 1.0) {
        bail!("--read-rate must be at least 1 byte per second");
    }
    Ok(b as u64)
}

/// Parse `--stages`: `DURATION:RATE,DURATION:RATE,...`.
pub fn parse_stages(s: &str) -> Result<Stages> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (d, r) = part.split_once(':').with_context(|| {
            format!("invalid stage {part:?}: expected DURATION:RATE, e.g. 10s:1000")
        })?;
        let dur = parse_duration(d)?;
        if dur.is_zero() {
            bail!("invalid stage {part:?}: the duration must be positive");
        }
        let target: f64 = r
            .trim()
            .parse()
            .with_context(|| format!("invalid stage {part:?}: {r:?} is not a rate"))?;
        if !(target.is_finite() && target >= 0.0) {
            bail!("invalid stage {part:?}: the rate must be a non-negative number");
        }
        out.push(Stage {
            dur_s: dur.as_secs_f64(),
            target,
        });
    }
    if out.is_empty() {
        bail!("--stages needs at least one DURATION:RATE stage");
    }
    let st = Stages::new(out);
    if st.total_count() < 1.0 {
        bail!("--stages never sends a request (every rate is 0)");
    }
    Ok(st)
}

fn request_spec(load: &LoadArgs) -> Result<RequestSpec> {
    RequestSpec::check_method(&load.method)?;
    let headers = load
        .headers
        .iter()
        .map(|h| RequestSpec::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &load.body {
        None => None,
        Some(b) => match b.strip_prefix('@') {
            Some(file) => {
                Some(std::fs::read(file).with_context(|| format!("cannot read body file {file}"))?)
            }
            None => Some(b.clone().into_bytes()),
        },
    };
    Ok(RequestSpec {
        method: load.method.clone(),
        headers,
        body,
        close: load.no_keepalive,
    })
}

/// Build a validated run configuration for `url` (or the `--urls` mix).
pub fn build_config(
    load: &LoadArgs,
    url: Option<&str>,
    server_pid: Option<u32>,
) -> Result<RunConfig> {
    if load.connections == 0 {
        bail!("-c/--connections must be at least 1");
    }
    if load.pipeline == 0 || load.pipeline > 1024 {
        bail!("--pipeline must be between 1 and 1024");
    }
    if load.no_keepalive && load.pipeline > 1 {
        bail!("--pipeline needs keep-alive connections (drop --no-keepalive)");
    }
    if let Some(t) = load.threads {
        if t == 0 {
            bail!("-t/--threads must be at least 1");
        }
    }
    if let Some(r) = load.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("-R/--rate must be a positive number of requests per second");
        }
    }
    let stop = match (load.requests, &load.duration) {
        (Some(0), _) => bail!("-n/--count must be at least 1"),
        (Some(n), _) => Stop::Count(n),
        (None, Some(d)) => {
            let d = parse_duration(d)?;
            if d.is_zero() {
                bail!("-d/--duration must be positive");
            }
            Stop::Duration(d)
        }
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let shard = load.shard.as_deref().map(parse_shard).transpose()?;
    let start_at_unix_s = load.start_at.as_deref().map(parse_start_at).transpose()?;
    let (connections, stop, mut rate) = match shard {
        None => (load.connections, stop, load.rate),
        Some((i, n)) => {
            let part = |total: u64| total / n as u64 + u64::from((i as u64) < total % n as u64);
            if (load.connections as u64) < n as u64 {
                bail!("--shard {i}/{n} needs at least {n} connections in total (-c)");
            }
            let stop = match stop {
                Stop::Count(c) if c < n as u64 => {
                    bail!("--shard {i}/{n} needs at least {n} requests in total (-n)")
                }
                Stop::Count(c) => Stop::Count(part(c)),
                d => d,
            };
            (
                part(load.connections as u64) as usize,
                stop,
                load.rate.map(|r| r / n as f64),
            )
        }
    };
    let stages = load.stages.as_deref().map(parse_stages).transpose()?;
    let stop = match &stages {
        Some(st) => {
            if !parse_duration(&load.warmup)?.is_zero() {
                bail!("--stages and --warmup do not mix: make the first stage the warm-up ramp");
            }
            let shards = shard.map_or(1.0, |(_, n)| n as f64);
            rate = Some((st.total_count() / st.total_s() / shards).max(1e-9));
            Stop::Duration(Duration::from_secs_f64(st.total_s()))
        }
        None => stop,
    };
    let timeout = parse_duration(&load.timeout)?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    let spec = request_spec(load)?;
    let base = url.map(Url::parse).transpose()?;
    let requests = match (&load.urls, &base) {
        _ if load.requests_file.is_some() => {
            let file = load.requests_file.as_ref().expect("checked");
            let base = base.as_ref().context(
                "--requests needs the target URL (paths in the file are relative to it)",
            )?;
            RequestSet::from_requests_file(&file.to_string_lossy(), base, &spec)?
        }
        (Some(file), base) => RequestSet::from_file(&file.to_string_lossy(), base.as_ref(), &spec)?,
        (None, Some(u)) => RequestSet::single(u, &spec),
        (None, None) => bail!("a target URL (or --urls FILE) is required"),
    };
    let threads = load
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let tls = match &requests.tls {
        None => None,
        Some(_) => {
            let verify = match (&load.tls_ca, load.tls_insecure) {
                (Some(p), false) => loadgen::tls::Verify::Ca(p.clone()),
                (None, true) => loadgen::tls::Verify::None,
                (Some(_), true) => bail!("--tls-ca and --tls-insecure do not mix"),
                (None, false) => {
                    bail!("an https:// target needs --tls-ca PEM (or --tls-insecure)")
                }
            };
            let c =
                loadgen::tls::client_config(&verify, load.tls_resume == OnOff::On, load.tls13_only)
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
            Some(c)
        }
    };
    Ok(RunConfig {
        tls,
        requests,
        threads,
        connections,
        pipeline: load.pipeline,
        keepalive: !load.no_keepalive,
        stop,
        warmup: parse_duration(&load.warmup)?,
        timeout,
        rate,
        arrival: match load.arrival {
            ArrivalArg::Constant => Arrival::Constant,
            ArrivalArg::Poisson => Arrival::Poisson,
        },
        pin: !load.no_pin,
        server_pid,
        seed: load.seed,
        thresholds: load
            .thresholds
            .iter()
            .map(|t| Threshold::parse(t))
            .collect::<Result<_, _>>()?,
        stages: stages.map(Arc::new),
        shard,
        start_at_unix_s,
        read_rate: load.read_rate.as_deref().map(parse_byte_rate).transpose()?,
    })
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

fn split_pair<'a>(s: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!("invalid {what} {s:?}: expected NAME=VALUE"),
    }
}

/// Build a validated comparison.
pub fn build_compare(args: &CompareArgs) -> Result<CompareConfig> {
    if args.load.urls.is_some() {
        bail!("compare takes one URL per target (--target NAME=URL), not --urls");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut targets: Vec<CompareTarget> = Vec::new();
    for t in &args.targets {
        let (name, url) = split_pair(t, "--target")?;
        if targets.iter().any(|x| x.name == name) {
            bail!("target name {name:?} given twice");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("target name {name:?} may only hold letters, digits, '-', '_' and '.'");
        }
        let cfg =
            build_config(&args.load, Some(url), None).with_context(|| format!("target {name}"))?;
        targets.push(CompareTarget {
            name: name.to_string(),
            config: cfg,
        });
    }
    for p in &args.server_pids {
        let (name, pid) = split_pair(p, "--server-pid")?;
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("invalid pid in --server-pid {p:?}"))?;
        let t = targets
            .iter_mut()
            .find(|t| t.name == name)
            .with_context(|| format!("--server-pid names unknown target {name:?}"))?;
        t.config.server_pid = Some(pid);
    }
    let baseline = match &args.baseline {
        Some(b) => {
            if !targets.iter().any(|t| &t.name == b) {
                bail!("--baseline {b:?} is not one of the targets");
            }
            b.clone()
        }
        None => targets[0].name.clone(),
    };
    let mut meta = Vec::new();
    for m in &args.meta {
        let (k, v) = split_pair(m, "--meta")?;
        meta.push((k.to_string(), v.to_string()));
    }
    Ok(CompareConfig {
        targets,
        baseline,
        rounds: args.rounds,
        out: args.out.clone(),
        title: args
            .title
            .clone()
            .unwrap_or_else(|| "loadgen comparison".to_string()),
        meta,
        pause: parse_duration(&args.pause)?,
        progress: !args.load.quiet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn byte_rates_parse() {
        assert_eq!(parse_byte_rate("1KiB/s").unwrap(), 1024);
        assert_eq!(parse_byte_rate("500B/s").unwrap(), 500);
        assert_eq!(parse_byte_rate("2MB").unwrap(), 2_000_000);
        assert_eq!(parse_byte_rate("4096").unwrap(), 4096);
        assert!(parse_byte_rate("0/s").is_err());
        assert!(parse_byte_rate("fast").is_err());
        assert!(parse_byte_rate("1GiB/s").is_err());
    }

    #[test]
    fn stages_parse_and_set_the_run() {
        let st = parse_stages("10s:1000, 30s:20000,10s:0").unwrap();
        assert_eq!(st.stages().len(), 3);
        assert_eq!(st.total_s(), 50.0);
        assert!(parse_stages("10s").is_err());
        assert!(parse_stages("0s:10").is_err());
        assert!(parse_stages("1s:-5").is_err());
        assert!(parse_stages("5s:0").is_err());
        let cli =
            Cli::try_parse_from(["loadgen", "http://127.0.0.1:1/", "--stages", "1s:100,1s:0"])
                .unwrap();
        let cfg = build_config(&cli.run.load, cli.run.url.as_deref(), None).unwrap();
        assert_eq!(cfg.stop, Stop::Duration(Duration::from_secs(2)));
        assert_eq!(cfg.rate, Some(50.0));
        assert!(cfg.stages.is_some());
        assert!(
            Cli::try_parse_from(["loadgen", "http://x/", "--stages", "1s:1", "-R", "5"]).is_err()
        );
    }

    #[test]
    fn flags_parse_and_validate() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "http://127.0.0.1:1/",
            "-c",
            "8",
            "--rate",
            "100",
            "-d",
            "2s",
        ])
        .unwrap();
        let cfg = build_config(&cli.run.load, cli.run.url.as_deref(), None).unwrap();
        assert_eq!(cfg.rate, Some(100.0));
        assert_eq!(cfg.stop, Stop::Duration(Duration::from_secs(2)));
        assert!(Cli::try_parse_from(["loadgen", "http://x/", "-d", "1s", "-n", "5"]).is_err());
        let cli =
            Cli::try_parse_from(["loadgen", "http://127.0.0.1:1/", "--pipeline", "0"]).unwrap();
        assert!(build_config(&cli.run.load, cli.run.url.as_deref(), None).is_err());
        let cli = Cli::try_parse_from(["loadgen", "nonsense://"]).unwrap();
        assert!(build_config(&cli.run.load, cli.run.url.as_deref(), None).is_err());
        let cli = Cli::try_parse_from([
            "loadgen",
            "compare",
            "--target",
            "a=http://127.0.0.1:1/x",
            "--target",
            "b=http://127.0.0.1:2/y",
            "--out",
            "/tmp/x",
            "--meta",
            "cpu=foo",
            "-R",
            "5",
        ])
        .unwrap();
        let Some(Cmd::Compare(c)) = cli.cmd else {
            panic!("expected compare")
        };
        let cc = build_compare(&c).unwrap();
        assert_eq!(cc.baseline, "a");
        assert_eq!(
            cc.targets[1].config.requests.urls[0],
            "http://127.0.0.1:2/y"
        );
        assert_eq!(cc.meta, vec![("cpu".to_string(), "foo".to_string())]);
    }
}

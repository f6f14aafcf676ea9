//! `loadgen merge`: add the results of `--shard` runs into one result, exactly: histograms are
//! decoded and added bucket by bucket (percentiles are recomputed, never averaged), counters are
//! summed, and the per-second series are added second by second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hist::{self, HistSet, SecondHist};
use crate::result::{GeneratorCpu, Histograms, IntervalOut, RunResult, WarmupOut};

/// Why shard results could not be merged.
#[derive(Debug, Error)]
pub enum MergeError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not a loadgen result.
    #[error("{path} is not a loadgen --json result: {why}")]
    NotAResult {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A histogram in a result does not decode.
    #[error("{path}: histogram {which} does not decode")]
    Histogram {
        /// The file.
        path: String,
        /// Which histogram.
        which: &'static str,
    },
    /// No results were found.
    #[error("no loadgen results (*.json with histograms) in {0}")]
    Empty(String),
    /// The shards do not belong together.
    #[error("{0}")]
    Mismatch(String),
}

/// Every result file under `paths`: files as given, directories' `*.json` files (not recursive),
/// in name order.
pub fn find_results(paths: &[PathBuf]) -> Result<Vec<PathBuf>, MergeError> {
    let mut out = Vec::new();
    for p in paths {
        let read = |e| MergeError::Read {
            path: p.display().to_string(),
            source: e,
        };
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(read)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            std::fs::metadata(p).map_err(read)?;
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Read one result file, with its histograms decoded.
pub fn load(path: &Path) -> Result<RunResult, MergeError> {
    let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut r: RunResult = serde_json::from_str(&text).map_err(|e| MergeError::NotAResult {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let dec = |b64: &str, which| {
        hist::decode(b64).ok_or(MergeError::Histogram {
            path: path.display().to_string(),
            which,
        })
    };
    let h = &r.histograms;
    r.hists = HistSet {
        latency: dec(&h.latency, "latency")?,
        uncorrected: dec(&h.latency_uncorrected, "latency_uncorrected")?,
        ttfb: dec(&h.ttfb, "ttfb")?,
        connect: dec(&h.connect, "connect")?,
        batch: dec(&h.batch, "batch")?,
        lag: dec(&h.schedule_lag, "schedule_lag")?,
    };
    Ok(r)
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Add shard results into one. They must come from one sharded run: the same N, distinct
/// indices (a missing shard is a warning, so a partial merge still reports what it has).
pub fn merge(parts: &[RunResult]) -> Result<RunResult, MergeError> {
    let first = parts
        .first()
        .ok_or_else(|| MergeError::Empty("the arguments".into()))?;
    let mut warnings = Vec::new();
    let count = first.shard.map(|s| s.count);
    let mut seen = Vec::new();
    for p in parts {
        match (p.shard, count) {
            (Some(s), Some(n)) if s.count == n => {
                if seen.contains(&s.index) {
                    return Err(MergeError::Mismatch(format!(
                        "shard {}/{n} given twice",
                        s.index
                    )));
                }
                seen.push(s.index);
            }
            (None, None) => {}
            _ => {
                return Err(MergeError::Mismatch(
                    "the results are not shards of one run (different or missing --shard i/N)"
                        .into(),
                ))
            }
        }
        if p.mode != first.mode {
            return Err(MergeError::Mismatch(
                "open- and closed-loop results do not merge".into(),
            ));
        }
    }
    if let Some(n) = count {
        if seen.len() != n as usize {
            warnings.push(format!(
                "only {} of {n} shards merged: totals and rates cover those only",
                seen.len()
            ));
        }
    }

    let mut m = first.clone();
    let mut hists = HistSet::default();
    let mut warm_hist = hist::new_hist();
    let mut warm: Option<WarmupOut> = None;
    let mut gen = GeneratorCpu::default();
    let mut secs: Vec<(IntervalOut, SecondHist, f64)> = Vec::new();
    let (mut requests, mut sent, mut bytes, mut body, mut connects) = (0, 0, 0, 0, 0);
    let (mut status, mut errors) = (BTreeMap::new(), BTreeMap::new());
    let mut duration_s = 0f64;
    let mut target: Option<f64> = None;
    let mut unsent: Option<u64> = None;
    let (mut threads, mut conns) = (0, 0);
    for p in parts {
        hists.merge(&p.hists);
        requests += p.requests;
        sent += p.sent;
        bytes += p.bytes;
        body += p.body_bytes;
        connects += p.connects;
        add_map(&mut status, &p.status);
        add_map(&mut errors, &p.errors);
        duration_s = duration_s.max(p.duration_s);
        target = p.target_rps.map(|t| t + target.unwrap_or(0.0)).or(target);
        unsent = p.unsent.map(|u| u + unsent.unwrap_or(0)).or(unsent);
        threads += p.settings.threads;
        conns += p.settings.connections;
        let g = &p.generator_cpu;
        gen.user_s += g.user_s;
        gen.sys_s += g.sys_s;
        gen.pacing_spin_s += g.pacing_spin_s;
        gen.thread_utilization
            .extend(g.thread_utilization.iter().copied());
        gen.max_utilization = gen.max_utilization.max(g.max_utilization);
        gen.max_work_utilization = gen.max_work_utilization.max(g.max_work_utilization);
        gen.saturated |= g.saturated;
        if let Some(w) = &p.warmup {
            if let Some(h) = hist::decode(&w.histogram) {
                warm_hist.add(&h).expect("histograms share bounds");
            }
            let acc = warm.get_or_insert_with(|| WarmupOut {
                requests: 0,
                duration_s: 0.0,
                errors: 0,
                latency_us: Default::default(),
                histogram: String::new(),
            });
            acc.requests += w.requests;
            acc.errors += w.errors;
            acc.duration_s = acc.duration_s.max(w.duration_s);
        }
        for (i, iv) in p.intervals.iter().enumerate() {
            if secs.len() <= i {
                let mut zero = iv.clone();
                zero.requests = 0;
                zero.errors = 0;
                zero.bytes = 0;
                zero.sent = 0;
                zero.target_rps = None;
                zero.max_us = 0.0;
                secs.push((zero, hist::new_second_hist(), 0.0));
            }
            let (acc, h, lat_sum) = &mut secs[i];
            acc.requests += iv.requests;
            acc.errors += iv.errors;
            acc.bytes += iv.bytes;
            acc.sent += iv.sent;
            acc.target_rps = iv
                .target_rps
                .map(|t| t + acc.target_rps.unwrap_or(0.0))
                .or(acc.target_rps);
            acc.max_us = acc.max_us.max(iv.max_us);
            acc.warmup |= iv.warmup;
            *lat_sum += iv.mean_us * iv.requests as f64;
            if let Some(sh) = hist::decode_as::<u32>(&iv.histogram) {
                h.add(&sh).expect("histograms share bounds");
            }
        }
        for w in &p.warnings {
            let who = p.shard.map_or(String::new(), |s| {
                format!("shard {}/{}: ", s.index, s.count)
            });
            warnings.push(format!("{who}{w}"));
        }
    }
    let duration_s = duration_s.max(1e-9);
    gen.us_per_request = if requests > 0 {
        (gen.user_s + gen.sys_s) * 1e6 / requests as f64
    } else {
        0.0
    };
    m.requests = requests;
    m.sent = sent;
    m.bytes = bytes;
    m.body_bytes = body;
    m.connects = connects;
    m.errors_total = errors.values().sum();
    m.status = status;
    m.errors = errors;
    m.duration_s = duration_s;
    m.rps = requests as f64 / duration_s;
    m.bytes_per_s = bytes as f64 / duration_s;
    m.achieved_rps = sent as f64 / duration_s;
    m.target_rps = target;
    m.unsent = unsent;
    m.settings.threads = threads;
    m.settings.connections = conns;
    m.latency_us = hist::summary(&hists.latency);
    m.latency_uncorrected_us = hist::summary(&hists.uncorrected);
    m.connect_us = hist::summary(&hists.connect);
    m.ttfb_us = hist::summary(&hists.ttfb);
    m.batch_us = first.batch_us.map(|_| hist::summary(&hists.batch));
    m.schedule_lag_us = hist::summary(&hists.lag);
    m.generator_cpu = gen;
    // The server's and the machine's CPU were measured per shard, on each shard's machine:
    // neither adds up across machines, so the shard files keep them.
    m.server_cpu_us_per_request = None;
    m.server_cpu_s = None;
    m.server_cpu_utilization = None;
    m.machine_cpu = None;
    m.tcp = None;
    m.warmup = warm.map(|mut w| {
        w.latency_us = hist::summary(&warm_hist);
        w.histogram = hist::encode(&warm_hist);
        w
    });
    m.intervals = secs
        .into_iter()
        .map(|(mut iv, h, lat_sum)| {
            let q = |q: f64| {
                if h.is_empty() {
                    0.0
                } else {
                    h.highest_equivalent(h.value_at_quantile(q)) as f64 / 1000.0
                }
            };
            iv.mean_us = if iv.requests > 0 {
                lat_sum / iv.requests as f64
            } else {
                0.0
            };
            iv.p50_us = q(0.50);
            iv.p90_us = q(0.90);
            iv.p99_us = q(0.99);
            iv.histogram = hist::encode(&h);
            iv
        })
        .collect();
    m.warnings = warnings;
    m.interrupted = parts.iter().any(|p| p.interrupted);
    m.thresholds = Vec::new();
    m.shard = None;
    m.histograms = Histograms {
        unit: "ns".to_string(),
        latency: hist::encode(&hists.latency),
        latency_uncorrected: hist::encode(&hists.uncorrected),
        connect: hist::encode(&hists.connect),
        ttfb: hist::encode(&hists.ttfb),
        batch: hist::encode(&hists.batch),
        schedule_lag: hist::encode(&hists.lag),
    };
    m.hists = hists;
    Ok(m)
}

/// Find, load and merge every result under `paths`.
pub fn merge_paths(paths: &[PathBuf]) -> Result<RunResult, MergeError> {
    let files = find_results(paths)?;
    let parts = files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(MergeError::Empty(names.join(", ")));
    }
    merge(&parts)
}

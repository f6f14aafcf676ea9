//! `loadgen compare`: run several targets interleaved (A B C A B C ...) with identical settings,
//! then summarise each target by its medians across rounds, the spread (min/max), and ratios
//! against a baseline, and write report.md, report.html, report.json and NAME.hgrm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use thiserror::Error;

use crate::config::RunConfig;
use crate::hist::{self, HistSet};
use crate::report;
use crate::result::RunResult;
use crate::run::{self, RunError, RunOptions};

/// Why a comparison failed.
#[derive(Debug, Error)]
pub enum CompareError {
    /// A run failed.
    #[error("target {target}, round {round}: {source}")]
    Run {
        /// Target name.
        target: String,
        /// 1-based round.
        round: usize,
        /// The run's error.
        source: RunError,
    },
    /// A target was unreachable before the first round.
    #[error("target {target}: {source}")]
    Preflight {
        /// Target name.
        target: String,
        /// The connect error.
        source: RunError,
    },
    /// Ctrl-C stopped the comparison; reports of the finished runs were written.
    #[error("interrupted after {0} runs (reports of the finished runs written)")]
    Interrupted(usize),
    /// A report could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One target of a comparison.
#[derive(Clone, Debug)]
pub struct CompareTarget {
    /// Short name (used in reports and file names).
    pub name: String,
    /// Its run configuration (identical to the others except URL and server pid).
    pub config: RunConfig,
}

/// A validated comparison.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Targets, in run order.
    pub targets: Vec<CompareTarget>,
    /// Name of the target ratios are computed against.
    pub baseline: String,
    /// Rounds.
    pub rounds: usize,
    /// Output directory.
    pub out: PathBuf,
    /// Report title.
    pub title: String,
    /// Metadata passed through to the reports.
    pub meta: Vec<(String, String)>,
    /// Pause between runs.
    pub pause: Duration,
    /// Show progress bars.
    pub progress: bool,
}

/// Reads one metric from a run (`None` when the run did not measure it).
pub type MetricFn = fn(&RunResult) -> Option<f64>;

/// The figures a comparison summarises, with how to read each from a run. Lower is better for
/// all but `rps`.
pub const METRICS: [(&str, MetricFn); 11] = [
    ("rps", |r| Some(r.rps)),
    ("p50_us", |r| Some(r.latency_us.p50)),
    ("p90_us", |r| Some(r.latency_us.p90)),
    ("p99_us", |r| Some(r.latency_us.p99)),
    ("p999_us", |r| Some(r.latency_us.p999)),
    ("max_us", |r| Some(r.latency_us.max)),
    ("uncorrected_p99_us", |r| Some(r.latency_uncorrected_us.p99)),
    ("server_cpu_us_per_request", |r| r.server_cpu_us_per_request),
    ("loadgen_cpu_us_per_request", |r| {
        Some(r.generator_cpu.us_per_request)
    }),
    ("machine_cpu_us_per_request", |r| {
        r.machine_cpu.as_ref().map(|m| m.us_per_request)
    }),
    ("errors", |r| Some(r.errors_total as f64)),
];

/// One target's runs and summary.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Server pid, if CPU was measured.
    pub server_pid: Option<u32>,
    /// Median of each metric across rounds.
    pub median: BTreeMap<String, f64>,
    /// Smallest value of each metric across rounds.
    pub min: BTreeMap<String, f64>,
    /// Largest value of each metric across rounds.
    pub max: BTreeMap<String, f64>,
    /// Median divided by the baseline's median, per metric.
    pub ratio_vs_baseline: BTreeMap<String, f64>,
    /// Corrected latency of all rounds merged (base64 V2, ns).
    pub merged_latency_histogram: String,
    /// Every round's full result.
    pub runs: Vec<RunResult>,
    /// Latency histograms of all rounds merged (not serialised).
    #[serde(skip)]
    pub merged: HistSet,
}

/// A finished comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Title.
    pub title: String,
    /// Metadata, in the order given.
    pub meta: BTreeMap<String, String>,
    /// Baseline target.
    pub baseline: String,
    /// Rounds run.
    pub rounds: usize,
    /// Run order within a round.
    pub order: Vec<String>,
    /// When the comparison started (Unix seconds).
    pub started_unix_s: u64,
    /// Settings shared by every run (from the first one).
    pub settings: crate::result::Settings,
    /// Open-loop rate, if any.
    pub target_rps: Option<f64>,
    /// Per target, in run order.
    pub targets: Vec<TargetReport>,
}

/// Per threshold expression: (expression, rounds it held in, rounds checked), in the order given.
pub fn threshold_tally(t: &TargetReport) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    for r in &t.runs {
        for o in &r.thresholds {
            match out.iter_mut().find(|x| x.0 == o.threshold) {
                Some(x) => {
                    x.1 += usize::from(o.ok);
                    x.2 += 1;
                }
                None => out.push((o.threshold.clone(), usize::from(o.ok), 1)),
            }
        }
    }
    out
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Run the comparison and write its reports.
pub fn run(cc: &CompareConfig) -> Result<Comparison, CompareError> {
    std::fs::create_dir_all(&cc.out).map_err(|source| CompareError::Write {
        path: cc.out.display().to_string(),
        source,
    })?;
    for t in &cc.targets {
        run::preflight(&t.config.requests.addr, Duration::from_secs(5)).map_err(|source| {
            CompareError::Preflight {
                target: t.name.clone(),
                source,
            }
        })?;
    }
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); cc.targets.len()];
    let total = cc.rounds * cc.targets.len();
    let mut k = 0;
    for round in 1..=cc.rounds {
        for (i, t) in cc.targets.iter().enumerate() {
            k += 1;
            let opts = RunOptions {
                progress: cc.progress,
                label: format!("[{k}/{total}] round {round} {}", t.name),
            };
            let r = run::run(&t.config, &opts).map_err(|source| CompareError::Run {
                target: t.name.clone(),
                round,
                source,
            })?;
            if cc.progress {
                eprintln!(
                    "[{k}/{total}] round {round} {:<12} {:>12} req/s  p99 {}  errors {}",
                    t.name,
                    report::fmt_count(r.rps),
                    report::fmt_us(r.latency_us.p99),
                    r.errors_total
                );
            }
            if r.interrupted {
                if runs.iter().all(|r| !r.is_empty()) {
                    let cmp = summarise(cc, runs, started_unix_s);
                    write_reports(cc, &cmp)?;
                }
                return Err(CompareError::Interrupted(k - 1));
            }
            runs[i].push(r);
            if k < total && !cc.pause.is_zero() {
                std::thread::sleep(cc.pause);
            }
        }
    }
    let cmp = summarise(cc, runs, started_unix_s);
    write_reports(cc, &cmp)?;
    Ok(cmp)
}

/// Turn the rounds' results into per-target medians, spreads and ratios.
pub fn summarise(cc: &CompareConfig, runs: Vec<Vec<RunResult>>, started_unix_s: u64) -> Comparison {
    let mut targets: Vec<TargetReport> = cc
        .targets
        .iter()
        .zip(runs)
        .map(|(t, runs)| {
            let mut merged = HistSet::default();
            for r in &runs {
                merged.merge(&r.hists);
            }
            let mut median_m = BTreeMap::new();
            let mut min_m = BTreeMap::new();
            let mut max_m = BTreeMap::new();
            for (name, get) in METRICS {
                let vals: Vec<f64> = runs.iter().filter_map(get).collect();
                if vals.is_empty() {
                    continue;
                }
                median_m.insert(name.to_string(), median(&vals));
                min_m.insert(
                    name.to_string(),
                    vals.iter().copied().fold(f64::INFINITY, f64::min),
                );
                max_m.insert(
                    name.to_string(),
                    vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                );
            }
            TargetReport {
                name: t.name.clone(),
                url: t.config.requests.urls[0].clone(),
                server_pid: t.config.server_pid,
                median: median_m,
                min: min_m,
                max: max_m,
                ratio_vs_baseline: BTreeMap::new(),
                merged_latency_histogram: hist::encode(&merged.latency),
                runs,
                merged,
            }
        })
        .collect();
    let base = targets
        .iter()
        .find(|t| t.name == cc.baseline)
        .map(|t| t.median.clone())
        .unwrap_or_default();
    for t in &mut targets {
        for (k, v) in &t.median {
            if let Some(b) = base.get(k) {
                if *b != 0.0 {
                    t.ratio_vs_baseline.insert(k.clone(), v / b);
                }
            }
        }
    }
    let first = &targets[0].runs[0];
    Comparison {
        title: cc.title.clone(),
        meta: cc.meta.iter().cloned().collect(),
        baseline: cc.baseline.clone(),
        rounds: cc.rounds,
        order: cc.targets.iter().map(|t| t.name.clone()).collect(),
        started_unix_s,
        settings: first.settings.clone(),
        target_rps: first.target_rps,
        targets,
    }
}

/// Write report.md, report.html, report.json and one NAME.hgrm per target into `cc.out`.
pub fn write_reports(cc: &CompareConfig, cmp: &Comparison) -> Result<(), CompareError> {
    let write = |name: &str, text: String| {
        let path = cc.out.join(name);
        std::fs::write(&path, text).map_err(|source| CompareError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    write("report.md", report::md::render(cmp))?;
    write("report.html", report::html::render(cmp))?;
    write("report.json", report::json::render(cmp))?;
    for t in &cmp.targets {
        write(&format!("{}.hgrm", t.name), hist::hgrm(&t.merged.latency))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}

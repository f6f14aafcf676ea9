//! report.md of a comparison: settings, metadata, medians with ratios against the baseline,
//! the spread across rounds, and every round.

use std::fmt::Write as _;

use super::{fmt_count, fmt_us};
use crate::compare::{Comparison, TargetReport};

fn get(t: &TargetReport, map: &str, key: &str) -> Option<f64> {
    let m = match map {
        "median" => &t.median,
        "min" => &t.min,
        "max" => &t.max,
        _ => &t.ratio_vs_baseline,
    };
    m.get(key).copied()
}

/// `12.3µs` or `–` when the metric is absent.
fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), fmt_us)
}

/// A ratio as `1.23×`.
fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"))
}

/// A one-line description of the shared settings.
pub fn settings_line(cmp: &Comparison) -> String {
    let s = &cmp.settings;
    let mut parts = vec![
        format!("{} connections", s.connections),
        format!("{} threads", s.threads),
        format!("pipeline {}", s.pipeline),
    ];
    if let Some(d) = s.duration_s {
        parts.push(format!("{d}s per run"));
    }
    if let Some(n) = s.count {
        parts.push(format!("{n} requests per run"));
    }
    if s.warmup_s > 0.0 {
        parts.push(format!("{}s warm-up", s.warmup_s));
    }
    match (cmp.target_rps, &s.stages) {
        (Some(_), Some(st)) => parts.push(format!(
            "open loop ramping through stages {} ({})",
            st.iter()
                .map(|[d, r]| format!("{d}s→{}", fmt_count(*r)))
                .collect::<Vec<_>>()
                .join(", "),
            s.arrival.as_deref().unwrap_or("constant")
        )),
        (Some(r), None) => parts.push(format!(
            "open loop at {} req/s ({})",
            fmt_count(r),
            s.arrival.as_deref().unwrap_or("constant")
        )),
        (None, _) => parts.push("closed loop".to_string()),
    }
    if !s.keepalive {
        parts.push("no keep-alive".to_string());
    }
    parts.push(format!(
        "{} rounds interleaved ({})",
        cmp.rounds,
        cmp.order.join(" → ")
    ));
    parts.join(", ")
}

/// Render the markdown report.
pub fn render(cmp: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", cmp.title);
    let _ = writeln!(o, "{}\n", settings_line(cmp));
    if !cmp.meta.is_empty() {
        let _ = writeln!(o, "| key | value |\n|---|---|");
        for (k, v) in &cmp.meta {
            let _ = writeln!(o, "| {} | {} |", k, v.replace('|', "\\|"));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "## Medians over {} rounds (ratios against `{}`)\n",
        cmp.rounds, cmp.baseline
    );
    let _ = writeln!(
        o,
        "| target | req/s | × | p50 | p99 | p99.9 | max | server CPU/req | × | loadgen CPU/req | machine CPU/req | × | errors |"
    );
    let _ = writeln!(o, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for t in &cmp.targets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            fmt_count(get(t, "median", "rps").unwrap_or(0.0)),
            ratio(get(t, "ratio", "rps")),
            us(get(t, "median", "p50_us")),
            us(get(t, "median", "p99_us")),
            us(get(t, "median", "p999_us")),
            us(get(t, "median", "max_us")),
            us(get(t, "median", "server_cpu_us_per_request")),
            ratio(get(t, "ratio", "server_cpu_us_per_request")),
            us(get(t, "median", "loadgen_cpu_us_per_request")),
            us(get(t, "median", "machine_cpu_us_per_request")),
            ratio(get(t, "ratio", "machine_cpu_us_per_request")),
            get(t, "median", "errors").unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        o,
        "\nServer CPU/req is the server's process tree only; machine CPU/req is every core's busy \
         time (/proc/stat: user, system, softirq) per request, generator and kernel included. On \
         one machine the kernel bills TCP work to whichever side runs it, so compare servers by \
         machine CPU/req; read server CPU/req as the server's own share."
    );
    let tallies: Vec<_> = cmp
        .targets
        .iter()
        .map(|t| (t, crate::compare::threshold_tally(t)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !tallies.is_empty() {
        let _ = writeln!(o, "\n## Thresholds\n");
        let _ = writeln!(o, "| target | threshold | verdict | rounds passed |");
        let _ = writeln!(o, "|---|---|---|--:|");
        for (t, v) in tallies {
            for (expr, ok, n) in v {
                let _ = writeln!(
                    o,
                    "| {} | `{}` | {} | {ok}/{n} |",
                    t.name,
                    expr.replace('|', "\\|"),
                    if ok == n { "✓ pass" } else { "✗ **FAIL**" }
                );
            }
        }
    }
    let _ = writeln!(o, "\n## Spread across rounds (min – max)\n");
    let _ = writeln!(
        o,
        "| target | req/s | p50 | p99 | p99.9 | server CPU/req | machine CPU/req |"
    );
    let _ = writeln!(o, "|---|--:|--:|--:|--:|--:|--:|");
    for t in &cmp.targets {
        let range = |k: &str, f: fn(f64) -> String| match (get(t, "min", k), get(t, "max", k)) {
            (Some(a), Some(b)) => format!("{} – {}", f(a), f(b)),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            range("rps", fmt_count),
            range("p50_us", fmt_us),
            range("p99_us", fmt_us),
            range("p999_us", fmt_us),
            range("server_cpu_us_per_request", fmt_us),
            range("machine_cpu_us_per_request", fmt_us),
        );
    }
    let _ = writeln!(o, "\n## Every round\n");
    let _ = writeln!(
        o,
        "| round | target | req/s | p50 | p99 | p99.9 | uncorrected p99 | errors | loadgen busiest thread |"
    );
    let _ = writeln!(o, "|--:|---|--:|--:|--:|--:|--:|--:|--:|");
    for round in 0..cmp.rounds {
        for t in &cmp.targets {
            let Some(r) = t.runs.get(round) else { continue };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
                round + 1,
                t.name,
                fmt_count(r.rps),
                fmt_us(r.latency_us.p50),
                fmt_us(r.latency_us.p99),
                fmt_us(r.latency_us.p999),
                fmt_us(r.latency_uncorrected_us.p99),
                r.errors_total,
                r.generator_cpu.max_utilization * 100.0
            );
        }
    }
    let warnings: Vec<String> = cmp
        .targets
        .iter()
        .flat_map(|t| {
            t.runs.iter().enumerate().flat_map(move |(i, r)| {
                r.warnings
                    .iter()
                    .map(move |w| format!("- {} round {}: {}", t.name, i + 1, w))
            })
        })
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(o, "\n## Warnings\n");
        for w in warnings {
            let _ = writeln!(o, "{w}");
        }
    }
    let _ = writeln!(
        o,
        "\n{} Histograms of every run are in report.json (HdrHistogram base64 V2, ns); merged \
         distributions per target in NAME.hgrm.",
        if cmp.target_rps.is_some() {
            "Latency is corrected for coordinated omission: measured from each request's intended \
             send time."
        } else {
            "Latency is measured from each request's send time (closed loop)."
        }
    );
    o
}

//! The terminal summary of one run (wrk-like, plus the uncorrected latency, schedule lag and
//! CPU costs).

use std::fmt::Write as _;

use super::{fmt_bytes, fmt_count, fmt_us};
use crate::hist::Summary;
use crate::result::RunResult;

fn latency_row(out: &mut String, name: &str, s: &Summary) {
    if s.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "    {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fmt_us(s.p50),
        fmt_us(s.p90),
        fmt_us(s.p99),
        fmt_us(s.p999),
        fmt_us(s.p9999),
        fmt_us(s.max),
        fmt_us(s.mean),
    );
}

/// Render the summary.
pub fn summary(r: &RunResult) -> String {
    let mut out = String::new();
    let st = &r.settings;
    let _ = writeln!(
        out,
        "{} loop @ {}{}",
        r.mode,
        r.url,
        if r.urls.len() > 1 {
            format!(" (+{} more URLs)", r.urls.len() - 1)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  {} threads, {} connections, pipeline {}{}",
        st.threads,
        st.connections,
        st.pipeline,
        if st.keepalive { "" } else { ", no keep-alive" }
    );
    let _ = writeln!(
        out,
        "  requests     {} in {:.2}s = {} req/s, {} ({}/s)",
        r.requests,
        r.duration_s,
        fmt_count(r.rps),
        fmt_bytes(r.bytes as f64),
        fmt_bytes(r.bytes_per_s)
    );
    let status: Vec<String> = r.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        out,
        "  status       {}",
        if status.is_empty() {
            "none".to_string()
        } else {
            status.join(", ")
        }
    );
    let errors: Vec<String> = r
        .errors
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(
        out,
        "  errors       {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  latency      {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
    );
    let corrected = if r.mode == "open" {
        "corrected"
    } else {
        "total"
    };
    latency_row(&mut out, corrected, &r.latency_us);
    if r.mode == "open" {
        latency_row(&mut out, "uncorrected", &r.latency_uncorrected_us);
    }
    latency_row(&mut out, "ttfb", &r.ttfb_us);
    latency_row(&mut out, "connect", &r.connect_us);
    if let Some(b) = &r.batch_us {
        latency_row(&mut out, "batch", b);
    }
    if let Some(target) = r.target_rps {
        let _ = writeln!(
            out,
            "  schedule     target {} req/s, sent {} req/s, send lag p99 {} max {}",
            fmt_count(target),
            fmt_count(r.achieved_rps),
            fmt_us(r.schedule_lag_us.p99),
            fmt_us(r.schedule_lag_us.max)
        );
    }
    let g = &r.generator_cpu;
    let _ = writeln!(
        out,
        "  loadgen CPU  {:.2}s user + {:.2}s sys = {:.2}µs/req, busiest thread {:.0}%{}",
        g.user_s,
        g.sys_s,
        g.us_per_request,
        g.max_utilization * 100.0,
        if g.pacing_spin_s >= 0.005 {
            format!(
                " ({:.0}% without {:.2}s of pacing spins)",
                g.max_work_utilization * 100.0,
                g.pacing_spin_s
            )
        } else {
            String::new()
        }
    );
    if let (Some(per), Some(util)) = (r.server_cpu_us_per_request, r.server_cpu_utilization) {
        let _ = writeln!(
            out,
            "  server CPU   {per:.2}µs/req ({:.0}% of one core)",
            util * 100.0
        );
    }
    if let Some(m) = &r.machine_cpu {
        let _ = writeln!(
            out,
            "  machine CPU  {:.2}µs/req ({:.2} of {} cores busy: user {:.2}s, sys {:.2}s, softirq {:.2}s)",
            m.us_per_request, m.utilization, m.cores, m.user_s, m.system_s, m.softirq_s
        );
    }
    if let Some(t) = &r.tcp {
        let _ = writeln!(
            out,
            "  machine TCP  {:.2} segments/req, {} connections opened by others ({:.2} per 1k req), {} retransmitted",
            t.segs_per_request, t.other_opens, t.other_opens_per_1k, t.retrans_segs
        );
    }
    if let Some(w) = &r.warmup {
        let _ = writeln!(
            out,
            "  warm-up      {} requests in {:.2}s (discarded), p99 {}",
            w.requests,
            w.duration_s,
            fmt_us(w.latency_us.p99)
        );
    }
    for t in &r.thresholds {
        let _ = writeln!(out, "  threshold    {t}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

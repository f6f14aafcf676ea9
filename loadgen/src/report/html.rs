//! report.html of a comparison: one self-contained page (inline CSS and SVG, no scripts or
//! external files) with the tables of report.md and three plots: the latency percentile
//! spectrum overlaid per target, req/s per round, and CPU per request.

use std::fmt::Write as _;

use super::plots::{self, Series};
use super::{escape_html as esc, fmt_count, fmt_us};
use crate::compare::Comparison;

const STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;\
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}\
.warn{color:#a60}.plot{margin:1em 0}";

fn plot_or_note(out: &mut String, r: Result<String, String>) {
    match r {
        Ok(svg) => {
            let _ = writeln!(out, "<div class=\"plot\">{svg}</div>");
        }
        Err(e) => {
            let _ = writeln!(out, "<p class=\"warn\">plot failed: {}</p>", esc(&e));
        }
    }
}

/// Render the HTML report.
pub fn render(cmp: &Comparison) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        esc(&cmp.title),
        esc(&cmp.title),
        esc(&super::md::settings_line(cmp))
    );
    if !cmp.meta.is_empty() {
        let _ = writeln!(o, "<table><tr><th>key</th><th>value</th></tr>");
        for (k, v) in &cmp.meta {
            let _ = writeln!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(
        o,
        "<h2>Medians over {} rounds (ratios against {})</h2>\n<table><tr><th>target</th>\
         <th>req/s</th><th>×</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th>\
         <th>server CPU/req</th><th>×</th><th>loadgen CPU/req</th><th>machine CPU/req</th>\
         <th>×</th><th>errors</th></tr>",
        cmp.rounds,
        esc(&cmp.baseline)
    );
    for t in &cmp.targets {
        let m = |k: &str| t.median.get(k).copied();
        let r = |k: &str| {
            t.ratio_vs_baseline
                .get(k)
                .map_or("–".to_string(), |v| format!("{v:.2}×"))
        };
        let us = |k: &str| m(k).map_or("–".to_string(), fmt_us);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.name),
            fmt_count(m("rps").unwrap_or(0.0)),
            r("rps"),
            us("p50_us"),
            us("p99_us"),
            us("p999_us"),
            us("max_us"),
            us("server_cpu_us_per_request"),
            r("server_cpu_us_per_request"),
            us("loadgen_cpu_us_per_request"),
            us("machine_cpu_us_per_request"),
            r("machine_cpu_us_per_request"),
            m("errors").unwrap_or(0.0)
        );
    }
    let _ = writeln!(o, "</table>");
    let tallies: Vec<_> = cmp
        .targets
        .iter()
        .map(|t| (t, crate::compare::threshold_tally(t)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !tallies.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Thresholds</h2>\n<table><tr><th>target</th><th>threshold</th><th>verdict</th>\
             <th>rounds passed</th></tr>"
        );
        for (t, v) in tallies {
            for (expr, ok, n) in v {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td><code>{}</code></td><td{}>{}</td><td>{ok}/{n}</td></tr>",
                    esc(&t.name),
                    esc(&expr),
                    if ok == n { "" } else { " class=\"warn\"" },
                    if ok == n { "✓ pass" } else { "✗ FAIL" }
                );
            }
        }
        let _ = writeln!(o, "</table>");
    }

    let spectrum: Vec<Series> = cmp
        .targets
        .iter()
        .map(|t| Series {
            name: t.name.clone(),
            points: plots::spectrum_points(&t.merged.latency),
        })
        .collect();
    let _ = writeln!(o, "<h2>Latency by percentile (all rounds merged)</h2>");
    plot_or_note(
        &mut o,
        plots::spectrum(
            if cmp.target_rps.is_some() {
                "latency, corrected for coordinated omission"
            } else {
                "latency"
            },
            &spectrum,
        ),
    );

    let rps: Vec<Series> = cmp
        .targets
        .iter()
        .map(|t| Series {
            name: t.name.clone(),
            points: t
                .runs
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1) as f64, r.rps))
                .collect(),
        })
        .collect();
    let _ = writeln!(o, "<h2>Requests per second, each round</h2>");
    plot_or_note(&mut o, plots::per_round("req/s per round", "req/s", &rps));

    // Per second, first round: the shape of the load (ramps of --stages) and how each server
    // followed it.
    let per_sec = |f: fn(&crate::result::IntervalOut) -> f64| -> Vec<Series> {
        cmp.targets
            .iter()
            .filter_map(|t| t.runs.first().map(|r| (t, r)))
            .map(|(t, r)| Series {
                name: t.name.clone(),
                points: r
                    .intervals
                    .iter()
                    .map(|iv| (iv.t_s as f64 + 1.0, f(iv)))
                    .collect(),
            })
            .collect()
    };
    let _ = writeln!(o, "<h2>Per second (round 1)</h2>");
    plot_or_note(
        &mut o,
        plots::per_second(
            "responses per second",
            "req/s",
            &per_sec(|iv| iv.requests as f64),
        ),
    );
    plot_or_note(
        &mut o,
        plots::per_second("p99 latency per second", "µs", &per_sec(|iv| iv.p99_us)),
    );
    plot_or_note(
        &mut o,
        plots::per_second(
            "errors per second",
            "errors",
            &per_sec(|iv| iv.errors as f64),
        ),
    );

    let names: Vec<String> = cmp.targets.iter().map(|t| t.name.clone()).collect();
    let values: Vec<Vec<Option<f64>>> = cmp
        .targets
        .iter()
        .map(|t| {
            vec![
                t.median.get("server_cpu_us_per_request").copied(),
                t.median.get("loadgen_cpu_us_per_request").copied(),
                t.median.get("machine_cpu_us_per_request").copied(),
            ]
        })
        .collect();
    let _ = writeln!(o, "<h2>CPU time per request (medians)</h2>");
    plot_or_note(
        &mut o,
        plots::bars(
            "CPU per request",
            "CPU time",
            &names,
            &["server", "loadgen", "machine"],
            &values,
        ),
    );
    if values.iter().all(|v| v[0].is_none()) {
        let _ = writeln!(
            o,
            "<p>No server CPU measured (give <code>--server-pid NAME=PID</code>).</p>"
        );
    }

    let _ = writeln!(
        o,
        "<h2>Every round</h2>\n<table><tr><th>round</th><th>target</th><th>req/s</th>\
         <th>p50</th><th>p99</th><th>p99.9</th><th>uncorrected p99</th><th>errors</th></tr>"
    );
    for round in 0..cmp.rounds {
        for t in &cmp.targets {
            let Some(r) = t.runs.get(round) else { continue };
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                round + 1,
                esc(&t.name),
                fmt_count(r.rps),
                fmt_us(r.latency_us.p50),
                fmt_us(r.latency_us.p99),
                fmt_us(r.latency_us.p999),
                fmt_us(r.latency_uncorrected_us.p99),
                r.errors_total
            );
        }
    }
    let _ = writeln!(o, "</table>");
    for t in &cmp.targets {
        for (i, r) in t.runs.iter().enumerate() {
            for w in &r.warnings {
                let _ = writeln!(
                    o,
                    "<p class=\"warn\">{} round {}: {}</p>",
                    esc(&t.name),
                    i + 1,
                    esc(w)
                );
            }
        }
    }
    let _ = writeln!(o, "</body></html>");
    o
}

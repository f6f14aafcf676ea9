//! Pass/fail thresholds on a run's figures (`--threshold 'p99<5ms'`), k6's contract: a run whose
//! thresholds fail exits non-zero, and reports mark which ones failed.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::result::RunResult;

/// Why a threshold expression does not parse.
#[derive(Debug, Error, PartialEq)]
pub enum ThresholdError {
    /// No comparison operator.
    #[error(
        "threshold {0:?}: expected METRIC<VALUE, METRIC<=VALUE, METRIC>VALUE or METRIC>=VALUE"
    )]
    NoOperator(String),
    /// The metric name is not known.
    #[error("threshold {expr:?}: unknown metric {metric:?} (use p50, p90, p99, p99.9, p99.99, max, mean, errors, rps or machine_cpu_us)")]
    Metric {
        /// The expression.
        expr: String,
        /// The metric as written.
        metric: String,
    },
    /// The value does not parse or has the wrong unit for the metric.
    #[error("threshold {expr:?}: {why}")]
    Value {
        /// The expression.
        expr: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// What a threshold looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A corrected-latency percentile (0..100), or max/mean.
    Latency(LatencyStat),
    /// Failed requests: a count, or (with `%`) a share of all requests.
    Errors,
    /// Responses per second.
    Rps,
    /// Whole-machine CPU per response, µs (needs /proc/stat).
    MachineCpu,
}

/// Which latency figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyStat {
    /// p50.
    P50,
    /// p90.
    P90,
    /// p99.
    P99,
    /// p99.9.
    P999,
    /// p99.99.
    P9999,
    /// Largest.
    Max,
    /// Mean.
    Mean,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

/// A parsed threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The expression as given.
    pub expr: String,
    /// The metric.
    pub metric: Metric,
    /// The operator.
    pub op: Op,
    /// The limit, in µs for latencies and CPU, a fraction (0..1) for error shares, else as is.
    pub limit: f64,
    /// The error limit is a share of requests (`errors<0.1%`), not a count.
    pub percent: bool,
}

/// One threshold checked against one run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The expression.
    pub threshold: String,
    /// The run's value, in the threshold's unit (µs, req/s, a count or a percentage).
    pub value: f64,
    /// Whether it held.
    pub ok: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (was {:.3})",
            if self.ok { "pass" } else { "FAIL" },
            self.threshold,
            self.value
        )
    }
}

/// A latency or CPU value in µs: `5ms`, `250us`, `1.5s`, `800ns`, or a bare number of µs.
fn parse_micros(v: &str) -> Option<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let x: f64 = num.parse().ok()?;
    let scale = match unit {
        "" | "us" | "µs" => 1.0,
        "ns" => 1e-3,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some(x * scale)
}

impl Threshold {
    /// Parse `METRIC OP VALUE`, e.g. `p99<5ms`, `errors<0.1%`, `errors<=10`, `rps>=20000`.
    pub fn parse(expr: &str) -> Result<Threshold, ThresholdError> {
        let s: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let pos = s
            .find(['<', '>'])
            .ok_or_else(|| ThresholdError::NoOperator(expr.to_string()))?;
        let (name, rest) = s.split_at(pos);
        let (op, value) = match rest.as_bytes() {
            [b'<', b'=', ..] => (Op::Le, &rest[2..]),
            [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
            [b'<', ..] => (Op::Lt, &rest[1..]),
            _ => (Op::Gt, &rest[1..]),
        };
        let metric = match name.to_ascii_lowercase().as_str() {
            "p50" | "median" => Metric::Latency(LatencyStat::P50),
            "p90" => Metric::Latency(LatencyStat::P90),
            "p99" => Metric::Latency(LatencyStat::P99),
            "p99.9" | "p999" => Metric::Latency(LatencyStat::P999),
            "p99.99" | "p9999" => Metric::Latency(LatencyStat::P9999),
            "max" => Metric::Latency(LatencyStat::Max),
            "mean" | "avg" => Metric::Latency(LatencyStat::Mean),
            "errors" | "error_rate" => Metric::Errors,
            "rps" => Metric::Rps,
            "machine_cpu_us" | "machine_cpu" => Metric::MachineCpu,
            _ => {
                return Err(ThresholdError::Metric {
                    expr: expr.to_string(),
                    metric: name.to_string(),
                })
            }
        };
        let bad = |why| ThresholdError::Value {
            expr: expr.to_string(),
            why,
        };
        let (limit, percent) = match metric {
            Metric::Latency(_) | Metric::MachineCpu => (
                parse_micros(value).ok_or_else(|| bad("expected a time such as 5ms or 250us"))?,
                false,
            ),
            Metric::Errors => match value.strip_suffix('%') {
                Some(p) => (
                    p.parse::<f64>()
                        .map_err(|_| bad("expected a percentage such as 0.1%"))?
                        / 100.0,
                    true,
                ),
                None => (
                    value
                        .parse::<f64>()
                        .map_err(|_| bad("expected a count or a percentage such as 0.1%"))?,
                    false,
                ),
            },
            Metric::Rps => (
                value
                    .parse::<f64>()
                    .map_err(|_| bad("expected a number of requests per second"))?,
                false,
            ),
        };
        if !limit.is_finite() || limit < 0.0 {
            return Err(bad("the limit must be a non-negative number"));
        }
        Ok(Threshold {
            expr: expr.trim().to_string(),
            metric,
            op,
            limit,
            percent,
        })
    }

    /// The run's value in this threshold's unit, or `None` when the run did not measure it.
    pub fn value(&self, r: &RunResult) -> Option<f64> {
        let l = &r.latency_us;
        Some(match self.metric {
            Metric::Latency(s) => match s {
                LatencyStat::P50 => l.p50,
                LatencyStat::P90 => l.p90,
                LatencyStat::P99 => l.p99,
                LatencyStat::P999 => l.p999,
                LatencyStat::P9999 => l.p9999,
                LatencyStat::Max => l.max,
                LatencyStat::Mean => l.mean,
            },
            Metric::Errors if self.percent => {
                let all = r.requests + r.errors_total;
                if all == 0 {
                    0.0
                } else {
                    r.errors_total as f64 / all as f64
                }
            }
            Metric::Errors => r.errors_total as f64,
            Metric::Rps => r.rps,
            Metric::MachineCpu => r.machine_cpu.as_ref()?.us_per_request,
        })
    }

    /// Check the run. A figure the run did not measure fails (a threshold nobody can check
    /// must not pass silently).
    pub fn check(&self, r: &RunResult) -> Outcome {
        let v = self.value(r);
        let shown = v.map_or(f64::NAN, |v| if self.percent { v * 100.0 } else { v });
        Outcome {
            threshold: self.expr.clone(),
            value: shown,
            ok: v.is_some_and(|v| self.op.holds(v, self.limit)),
        }
    }
}

/// Check every threshold against a run.
pub fn check_all(ts: &[Threshold], r: &RunResult) -> Vec<Outcome> {
    ts.iter().map(|t| t.check(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k6_style_expressions() {
        let t = Threshold::parse("p99<5ms").unwrap();
        assert_eq!(t.metric, Metric::Latency(LatencyStat::P99));
        assert_eq!(t.op, Op::Lt);
        assert_eq!(t.limit, 5000.0);
        let t = Threshold::parse(" errors < 0.1% ").unwrap();
        assert_eq!(t.metric, Metric::Errors);
        assert!(t.percent);
        assert!((t.limit - 0.001).abs() < 1e-12);
        let t = Threshold::parse("errors<=10").unwrap();
        assert_eq!((t.op, t.limit, t.percent), (Op::Le, 10.0, false));
        let t = Threshold::parse("rps>=20000").unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Rps, Op::Ge, 20000.0));
        assert_eq!(
            Threshold::parse("p99.9<250us").unwrap().metric,
            Metric::Latency(LatencyStat::P999)
        );
        assert!(matches!(
            Threshold::parse("p99"),
            Err(ThresholdError::NoOperator(_))
        ));
        assert!(matches!(
            Threshold::parse("p98<1ms"),
            Err(ThresholdError::Metric { .. })
        ));
        assert!(matches!(
            Threshold::parse("p99<5 parsecs"),
            Err(ThresholdError::Value { .. })
        ));
        assert!(Threshold::parse("errors<x%").is_err());
    }

    #[test]
    fn ops_compare_as_written() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && !Op::Le.holds(3.0, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
        assert!(Op::Ge.holds(2.0, 2.0) && !Op::Ge.holds(1.0, 2.0));
    }
}

//! Latency histograms: fixed-size HdrHistograms in nanoseconds (3 significant digits, 1 ns to 1
//! hour, no auto-resize so memory is constant), their summaries, the base64 V2-deflate encoding
//! other HdrHistogram tools read, and the `.hgrm` percentile text form.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Serialize};

/// Highest trackable value: one hour in nanoseconds. Larger values saturate here.
pub const MAX_NS: u64 = 3_600_000_000_000;
/// Significant decimal digits kept per value.
pub const SIGFIG: u8 = 3;

/// A latency histogram with values in nanoseconds.
pub type Hist = Histogram<u64>;

/// A new, empty, fixed-size nanosecond histogram.
pub fn new_hist() -> Hist {
    // Bounds are constants that are always valid; auto-resize stays off (the default for
    // `new_with_bounds`), so recording never allocates.
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("valid histogram bounds")
}

/// Record one value (ns), clamped into the trackable range. Never allocates.
#[inline(always)]
pub fn record(h: &mut Hist, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// One second's latency histogram: 2 significant digits from 1 µs (32-bit counts, about 13 KiB),
/// enough for per-second percentiles and small enough to keep one per second per thread.
pub type SecondHist = Histogram<u32>;

/// A new, empty per-second histogram.
pub fn new_second_hist() -> SecondHist {
    Histogram::new_with_bounds(1000, MAX_NS, 2).expect("valid histogram bounds")
}

/// Every histogram one measurement window keeps.
#[derive(Clone, Debug)]
pub struct HistSet {
    /// Response latency from the intended send time (coordinated-omission corrected). In closed
    /// loop the intended time is the actual send time, so this equals `uncorrected`.
    pub latency: Hist,
    /// Response latency from the actual send time.
    pub uncorrected: Hist,
    /// Time to first response byte, from the actual send time.
    pub ttfb: Hist,
    /// TCP/unix connect time.
    pub connect: Hist,
    /// Pipelined batch latency: from a batch's send to its last response (`--pipeline` > 1).
    pub batch: Hist,
    /// How late each request went out against its intended time (open loop).
    pub lag: Hist,
}

impl Default for HistSet {
    fn default() -> Self {
        HistSet {
            latency: new_hist(),
            uncorrected: new_hist(),
            ttfb: new_hist(),
            connect: new_hist(),
            batch: new_hist(),
            lag: new_hist(),
        }
    }
}

impl HistSet {
    /// Add every histogram of `other` into this one.
    pub fn merge(&mut self, other: &HistSet) {
        // Same bounds on both sides, so addition cannot fail.
        for (a, b) in [
            (&mut self.latency, &other.latency),
            (&mut self.uncorrected, &other.uncorrected),
            (&mut self.ttfb, &other.ttfb),
            (&mut self.connect, &other.connect),
            (&mut self.batch, &other.batch),
            (&mut self.lag, &other.lag),
        ] {
            a.add(b).expect("histograms share bounds");
        }
    }
}

/// Percentile summary of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Number of values.
    pub count: u64,
}

/// Summarise a nanosecond histogram in microseconds. An empty histogram gives all zeros.
pub fn summary(h: &Hist) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Summary {
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        p9999: us(h.value_at_quantile(0.9999)),
        max: us(h.max()),
        mean: h.mean() / 1000.0,
        min: us(h.min()),
        stdev: h.stdev() / 1000.0,
        count: h.len(),
    }
}

/// Encode a histogram in HdrHistogram's compressed V2 form, base64 (as `HistogramLogProcessor`
/// and the other HdrHistogram libraries read it).
pub fn encode<T: Counter>(h: &Histogram<T>) -> String {
    let mut bytes = Vec::new();
    // Serialising into a Vec cannot fail on I/O; the only error is an internal encoding one.
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("histogram serialisation");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode a histogram written by [`encode`] (for merging stored runs).
pub fn decode(b64: &str) -> Option<Hist> {
    decode_as(b64)
}

/// Decode a histogram of any counter type written by [`encode`].
pub fn decode_as<T: Counter>(b64: &str) -> Option<Histogram<T>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// The percentile distribution in the usual `.hgrm` text form, values in milliseconds (the
/// histogram holds nanoseconds).
pub fn hgrm(h: &Hist) -> String {
    use std::fmt::Write as _;
    const SCALE: f64 = 1_000_000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / SCALE;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    value,
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{:12.3} {:1.12} {:10}", value, q, total);
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        mean, stdev
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        max,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        (2 * 10u64.pow(u32::from(SIGFIG))).next_power_of_two()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_beyond_an_hour_saturate_and_zero_counts() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_NS);
    }

    #[test]
    fn encode_roundtrips() {
        let mut h = new_hist();
        for v in 1..10_000u64 {
            record(&mut h, v * 997);
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn summary_is_in_microseconds() {
        let mut h = new_hist();
        for _ in 0..100 {
            record(&mut h, 2_000_000); // 2 ms
        }
        let s = summary(&h);
        assert!((s.p50 - 2000.0).abs() < 2.0, "{s:?}");
        assert_eq!(s.count, 100);
        assert_eq!(summary(&new_hist()), Summary::default());
    }

    #[test]
    fn hgrm_ends_at_the_max() {
        let mut h = new_hist();
        for v in [1_000_000u64, 2_000_000, 3_000_000] {
            record(&mut h, v);
        }
        let text = hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        let last_row = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(last_row.contains("1.000000000000"), "{text}");
        assert!(last_row.trim_end().ends_with(" 3"), "{text}");
        assert!(text.contains("Total count    =            3"), "{text}");
    }
}

//! Where one thread's measurements go: the warm-up or the measured window (chosen by time, kept
//! apart, never reset), and the per-second intervals.

use crate::hist::{new_second_hist, record, SecondHist};
use crate::stats::{ErrorClass, Interval, ThreadResult, Window};

const SECOND_NS: u64 = 1_000_000_000;

/// One thread's measurement sink.
#[derive(Debug)]
pub struct Recorder {
    main: Window,
    warm: Window,
    /// Events before this time (ns) belong to the warm-up window.
    warmup_end: u64,
    intervals: Vec<Interval>,
    cur: Interval,
    hists: Vec<SecondHist>,
    cur_hist: SecondHist,
    next_interval: u64,
    responses: u64,
    errors: u64,
}

impl Recorder {
    /// A recorder; without a warm-up, events before the start (connects) count as measured.
    pub fn new(no_warmup: bool) -> Recorder {
        Recorder {
            main: Window::default(),
            warm: Window::default(),
            warmup_end: if no_warmup { 0 } else { u64::MAX },
            intervals: Vec::with_capacity(128),
            cur: Interval::default(),
            hists: Vec::with_capacity(128),
            cur_hist: new_second_hist(),
            next_interval: u64::MAX,
            responses: 0,
            errors: 0,
        }
    }

    /// The run starts at `t0`; the warm-up lasts `warmup_ns`.
    pub fn begin(&mut self, t0: u64, warmup_ns: u64) {
        self.warmup_end = t0 + warmup_ns;
        self.next_interval = t0 + SECOND_NS;
    }

    #[inline(always)]
    fn window(&mut self, now: u64) -> &mut Window {
        if now < self.warmup_end {
            &mut self.warm
        } else {
            &mut self.main
        }
    }

    /// A complete response with its latencies (ns), counted in the window of its intended
    /// send time (so a warm-up request answered after the warm-up is still warm-up).
    #[inline]
    pub fn response(
        &mut self,
        intended: u64,
        status: u16,
        body_len: u64,
        latency: u64,
        uncorrected: u64,
        batch: Option<u64>,
    ) {
        self.responses += 1;
        self.cur.responses += 1;
        self.cur.latency_sum_ns += latency;
        self.cur.latency_max_ns = self.cur.latency_max_ns.max(latency);
        self.cur_hist.saturating_record(latency);
        let w = self.window(intended);
        w.counters.response(status, body_len);
        record(&mut w.hists.latency, latency);
        record(&mut w.hists.uncorrected, uncorrected);
        if let Some(b) = batch {
            record(&mut w.hists.batch, b);
        }
    }

    /// `n` failures of one class.
    #[inline]
    pub fn error(&mut self, now: u64, class: ErrorClass, n: u64) {
        if n == 0 {
            return;
        }
        self.errors += n;
        self.cur.errors += n;
        self.window(now).counters.error(class, n);
    }

    /// Bytes received.
    #[inline]
    pub fn bytes(&mut self, now: u64, n: u64) {
        self.cur.bytes += n;
        self.window(now).counters.bytes += n;
    }

    /// Time to first byte (ns).
    #[inline]
    pub fn ttfb(&mut self, now: u64, ns: u64) {
        record(&mut self.window(now).hists.ttfb, ns);
    }

    /// How late a request went out (ns).
    #[inline]
    pub fn lag(&mut self, now: u64, ns: u64) {
        record(&mut self.window(now).hists.lag, ns);
    }

    /// Requests handed to the kernel.
    #[inline]
    pub fn sent(&mut self, now: u64, n: u64) {
        self.cur.sent += n;
        self.window(now).counters.sent += n;
    }

    /// A connection was established after `ns`.
    #[inline]
    pub fn connected(&mut self, now: u64, ns: u64) {
        let w = self.window(now);
        w.counters.connects += 1;
        record(&mut w.hists.connect, ns);
    }

    /// Close every finished second (allocates one small histogram per second, off the hot
    /// path).
    pub fn tick(&mut self, now: u64) {
        while now >= self.next_interval {
            self.intervals.push(self.cur);
            self.cur = Interval::default();
            self.hists
                .push(std::mem::replace(&mut self.cur_hist, new_second_hist()));
            self.next_interval += SECOND_NS;
        }
    }

    /// Responses so far, both windows.
    pub fn total_responses(&self) -> u64 {
        self.responses
    }

    /// Failures so far, both windows.
    pub fn total_errors(&self) -> u64 {
        self.errors
    }

    /// The measurements, the unfinished last second included.
    pub fn into_result(mut self) -> ThreadResult {
        if self.cur != Interval::default() {
            self.intervals.push(self.cur);
            self.hists.push(self.cur_hist);
        }
        ThreadResult {
            main: self.main,
            warmup: self.warm,
            intervals: self.intervals,
            interval_hists: self.hists,
            ..Default::default()
        }
    }
}

//! Per-thread counters (requests, bytes, per-status counts, error classes), per-second
//! intervals, and what a thread hands back after join. All fixed-size: recording never allocates.

use crate::hist::{HistSet, SecondHist};

/// Classes of failed requests and connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ErrorClass {
    /// The server refused the connection.
    ConnectRefused = 0,
    /// Connecting failed for another reason (unreachable, no ports, ...).
    Connect,
    /// The connection was reset (ECONNRESET, EPIPE) with requests outstanding.
    Reset,
    /// The server closed the connection with requests outstanding.
    Closed,
    /// No response (or connection) within `--timeout`.
    Timeout,
    /// The response did not parse.
    Parse,
    /// Any other I/O error.
    Io,
}

impl ErrorClass {
    /// Number of classes.
    pub const COUNT: usize = 7;
    /// Every class, in report order.
    pub const ALL: [ErrorClass; Self::COUNT] = [
        ErrorClass::ConnectRefused,
        ErrorClass::Connect,
        ErrorClass::Reset,
        ErrorClass::Closed,
        ErrorClass::Timeout,
        ErrorClass::Parse,
        ErrorClass::Io,
    ];

    /// The key used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnectRefused => "connect_refused",
            ErrorClass::Connect => "connect",
            ErrorClass::Reset => "reset",
            ErrorClass::Closed => "closed",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Parse => "parse",
            ErrorClass::Io => "io",
        }
    }

    /// Classify a connect error (a negative errno from a completion).
    pub fn from_connect_errno(errno: i32) -> ErrorClass {
        match errno {
            libc::ECONNREFUSED => ErrorClass::ConnectRefused,
            libc::ETIMEDOUT | libc::ECANCELED => ErrorClass::Timeout,
            _ => ErrorClass::Connect,
        }
    }

    /// Classify an I/O error on an established connection.
    pub fn from_io_errno(errno: i32) -> ErrorClass {
        match errno {
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => ErrorClass::Reset,
            libc::ETIMEDOUT => ErrorClass::Timeout,
            _ => ErrorClass::Io,
        }
    }
}

/// Highest status code counted individually; others land in the `0` slot.
pub const MAX_STATUS: usize = 599;

/// Counters of one measurement window.
#[derive(Clone, Debug)]
pub struct Counters {
    /// Complete responses.
    pub responses: u64,
    /// Bytes received (heads, bodies and framing).
    pub bytes: u64,
    /// Decoded response body bytes.
    pub body_bytes: u64,
    /// Requests sent (handed to the kernel).
    pub sent: u64,
    /// Responses per status code (index = status; index 0 = out-of-range codes).
    pub status: Box<[u64; MAX_STATUS + 1]>,
    /// Failures per class.
    pub errors: [u64; ErrorClass::COUNT],
    /// Connections established.
    pub connects: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            responses: 0,
            bytes: 0,
            body_bytes: 0,
            sent: 0,
            status: Box::new([0; MAX_STATUS + 1]),
            errors: [0; ErrorClass::COUNT],
            connects: 0,
        }
    }
}

impl Counters {
    /// Count one response.
    #[inline]
    pub fn response(&mut self, status: u16, body_len: u64) {
        self.responses += 1;
        self.body_bytes += body_len;
        let i = status as usize;
        self.status[if i <= MAX_STATUS { i } else { 0 }] += 1;
    }

    /// Count `n` failures of one class.
    #[inline]
    pub fn error(&mut self, class: ErrorClass, n: u64) {
        self.errors[class as usize] += n;
    }

    /// Total failures.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        self.responses += other.responses;
        self.bytes += other.bytes;
        self.body_bytes += other.body_bytes;
        self.sent += other.sent;
        self.connects += other.connects;
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
    }
}

/// One measurement window: the warm-up, or the measured run.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Latency histograms.
    pub hists: HistSet,
    /// Counters.
    pub counters: Counters,
}

impl Window {
    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &Window) {
        self.hists.merge(&other.hists);
        self.counters.merge(&other.counters);
    }
}

/// One second of a run, as one thread saw it (mergeable across threads by addition and max).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interval {
    /// Complete responses.
    pub responses: u64,
    /// Failed requests and connects.
    pub errors: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Requests sent.
    pub sent: u64,
    /// Sum of corrected latencies (ns), for the mean.
    pub latency_sum_ns: u64,
    /// Largest corrected latency (ns).
    pub latency_max_ns: u64,
}

impl Interval {
    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &Interval) {
        self.responses += other.responses;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.sent += other.sent;
        self.latency_sum_ns += other.latency_sum_ns;
        self.latency_max_ns = self.latency_max_ns.max(other.latency_max_ns);
    }
}

/// Everything a thread hands back after join.
#[derive(Clone, Debug, Default)]
pub struct ThreadResult {
    /// The measured window.
    pub main: Window,
    /// The warm-up window (measured, then reported apart).
    pub warmup: Window,
    /// Per-second intervals from the start of the run (warm-up included).
    pub intervals: Vec<Interval>,
    /// Corrected latency of each second, same length as `intervals`.
    pub interval_hists: Vec<SecondHist>,
    /// Requests the open-loop schedule made due by the end (sent or not).
    pub scheduled: u64,
    /// Thread CPU time in user mode, ns.
    pub cpu_user_ns: u64,
    /// Thread CPU time in kernel mode, ns.
    pub cpu_sys_ns: u64,
    /// Wall time the thread ran its loop, ns.
    pub wall_ns: u64,
    /// Wall (and CPU) time spent spinning to pace open-loop sends, ns.
    pub spin_ns: u64,
    /// A counted run stopped early: no connection could be made for a whole `--timeout`.
    pub gave_up: bool,
    /// A fatal setup error, if the thread could not run.
    pub fatal: Option<String>,
}

//! When requests are due: the closed loop (send again as soon as a response arrives) and the
//! open loop at a fixed rate, with constant or Poisson arrivals. Open-loop send times are
//! arithmetic (`start + n / rate`, never accumulated), so a late sender catches up instead of
//! drifting, and every request keeps its intended time for coordinated-omission correction.
//! `--stages` ramps the open-loop rate linearly from stage to stage: intended times come from
//! inverting the expected arrival count `N(t)` (piecewise quadratic), so ramps stay exact too.

use std::sync::Arc;

/// Inter-arrival distribution of the open loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Arrival {
    /// Evenly spaced sends (wrk2).
    #[default]
    Constant,
    /// Exponentially distributed gaps (a Poisson process).
    Poisson,
}

/// A small, fast, seedable PRNG (xorshift64*), good enough for arrival gaps and URL mixes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator; any seed works (zero is remapped).
    pub fn new(seed: u64) -> Rng {
        // Run the seed through splitmix64 so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in (0, 1].
    #[inline]
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// One stage of `--stages`: over `dur_s` the rate moves linearly to `target` req/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// Length, seconds.
    pub dur_s: f64,
    /// Rate at its end, req/s (the run starts at 0).
    pub target: f64,
}

/// A ramp of the open-loop rate: stages, each ramping linearly from the previous target (0 for
/// the first) to its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Stages {
    stages: Vec<Stage>,
    /// Per stage: (start time s, start rate, arrivals before it).
    starts: Vec<(f64, f64, f64)>,
}

impl Stages {
    /// Stages with positive lengths and non-negative, finite targets (checked by the caller).
    pub fn new(stages: Vec<Stage>) -> Stages {
        let mut starts = Vec::with_capacity(stages.len());
        let (mut t, mut r, mut n) = (0.0, 0.0, 0.0);
        for s in &stages {
            starts.push((t, r, n));
            n += (r + s.target) / 2.0 * s.dur_s;
            t += s.dur_s;
            r = s.target;
        }
        Stages { stages, starts }
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Total length, seconds.
    pub fn total_s(&self) -> f64 {
        self.stages.iter().map(|s| s.dur_s).sum()
    }

    /// Expected arrivals over the whole ramp.
    pub fn total_count(&self) -> f64 {
        self.count_at(self.total_s())
    }

    /// The rate at `t` seconds after the start (0 after the end).
    pub fn rate_at(&self, t: f64) -> f64 {
        for (s, &(t0, r0, _)) in self.stages.iter().zip(&self.starts) {
            if t < t0 + s.dur_s {
                return r0 + (s.target - r0) * ((t - t0).max(0.0) / s.dur_s);
            }
        }
        0.0
    }

    /// Expected arrivals `N(t)` in the first `t` seconds.
    pub fn count_at(&self, t: f64) -> f64 {
        let mut last = 0.0;
        for (s, &(t0, r0, n0)) in self.stages.iter().zip(&self.starts) {
            if t < t0 + s.dur_s {
                let tau = (t - t0).max(0.0);
                return n0 + r0 * tau + (s.target - r0) * tau * tau / (2.0 * s.dur_s);
            }
            last = n0 + (r0 + s.target) / 2.0 * s.dur_s;
        }
        last
    }

    /// The time (seconds) at which `N(t)` reaches `c`, or `None` when the ramp ends first.
    pub fn time_of(&self, c: f64) -> Option<f64> {
        for (s, &(t0, r0, n0)) in self.stages.iter().zip(&self.starts) {
            let n1 = n0 + (r0 + s.target) / 2.0 * s.dur_s;
            if c < n1 {
                let x = (c - n0).max(0.0);
                let a = (s.target - r0) / (2.0 * s.dur_s);
                // a·τ² + r0·τ = x, in the form that stays stable as a → 0.
                let disc = (r0 * r0 + 4.0 * a * x).max(0.0);
                let den = r0 + disc.sqrt();
                let tau = if den > 0.0 { 2.0 * x / den } else { 0.0 };
                return Some(t0 + tau.min(s.dur_s));
            }
        }
        None
    }
}

/// A thread's part of a ramp: it takes the arrivals `(n + phase) / share` of the whole run, so
/// threads (and shards) with equal shares interleave exactly.
#[derive(Clone, Debug)]
pub struct Ramp {
    /// The whole run's ramp.
    pub stages: Arc<Stages>,
    /// This thread's share of the arrivals (0, 1].
    pub share: f64,
    /// Offset of its first arrival, in its own arrivals [0, 1).
    pub phase: f64,
}

/// The open-loop send schedule of one thread: a cursor over intended send times (nanoseconds
/// since the run's start). Requests due and not yet sent are simply the ones before the cursor
/// that have not been taken, so a backlog costs no memory however long a stall lasts.
#[derive(Clone, Debug)]
pub struct OpenSchedule {
    start_ns: f64,
    interval_ns: f64,
    arrival: Arrival,
    rng: Rng,
    n: u64,
    next_ns: u64,
    /// Poisson: the running (fractional) time of the next arrival.
    poisson_t: f64,
    /// A ramp instead of a fixed rate.
    ramp: Option<Ramp>,
    /// Ramp: this thread's running arrival count of the next request.
    ramp_c: f64,
}

impl OpenSchedule {
    /// A schedule at `rate` requests per second starting at `start_ns`.
    pub fn new(rate: f64, start_ns: u64, arrival: Arrival, seed: u64) -> OpenSchedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        let interval_ns = 1e9 / rate;
        let mut s = OpenSchedule {
            start_ns: start_ns as f64,
            interval_ns,
            arrival,
            rng: Rng::new(seed),
            n: 0,
            next_ns: start_ns,
            poisson_t: start_ns as f64,
            ramp: None,
            ramp_c: 0.0,
        };
        if arrival == Arrival::Poisson {
            s.poisson_t += s.gap();
            s.next_ns = s.poisson_t as u64;
        }
        s
    }

    /// A schedule following `ramp`, whose time zero is `start_ns`.
    pub fn ramped(ramp: Ramp, start_ns: u64, arrival: Arrival, seed: u64) -> OpenSchedule {
        let mut s = OpenSchedule {
            start_ns: start_ns as f64,
            interval_ns: 1.0,
            arrival,
            rng: Rng::new(seed),
            n: 0,
            next_ns: start_ns,
            poisson_t: 0.0,
            ramp: Some(ramp),
            ramp_c: 0.0,
        };
        s.ramp_c = match arrival {
            Arrival::Constant => s.ramp.as_ref().map_or(0.0, |r| r.phase),
            Arrival::Poisson => -s.rng.unit().ln(),
        };
        s.next_ns = s.ramp_time();
        s
    }

    /// Intended time of the ramp arrival at this thread's count `ramp_c`.
    fn ramp_time(&self) -> u64 {
        let Some(r) = &self.ramp else {
            return u64::MAX;
        };
        match r.stages.time_of(self.ramp_c / r.share) {
            Some(t) => (self.start_ns + t * 1e9) as u64,
            None => u64::MAX,
        }
    }

    fn gap(&mut self) -> f64 {
        -self.rng.unit().ln() * self.interval_ns
    }

    /// Intended time of the next request not yet taken.
    #[inline]
    pub fn peek(&self) -> u64 {
        self.next_ns
    }

    /// Take the next request: returns its intended send time and moves the cursor on.
    #[inline]
    pub fn take(&mut self) -> u64 {
        let t = self.next_ns;
        self.n += 1;
        if self.ramp.is_some() {
            self.ramp_c += match self.arrival {
                Arrival::Constant => 1.0,
                Arrival::Poisson => -self.rng.unit().ln(),
            };
            self.next_ns = self.ramp_time();
            return t;
        }
        self.next_ns = match self.arrival {
            Arrival::Constant => (self.start_ns + self.n as f64 * self.interval_ns) as u64,
            Arrival::Poisson => {
                self.poisson_t += self.gap();
                self.poisson_t as u64
            }
        };
        t
    }

    /// How many requests have been taken.
    pub fn taken(&self) -> u64 {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_is_arithmetic() {
        let mut s = OpenSchedule::new(1000.0, 500, Arrival::Constant, 1);
        assert_eq!(s.take(), 500);
        assert_eq!(s.take(), 1_000_500);
        for _ in 0..997 {
            s.take();
        }
        // No drift after many steps.
        assert_eq!(s.peek(), 500 + 999 * 1_000_000);
        assert_eq!(s.taken(), 999);
    }

    #[test]
    fn poisson_mean_gap_matches_rate() {
        let mut s = OpenSchedule::new(10_000.0, 0, Arrival::Poisson, 42);
        let n = 100_000;
        let mut last = 0;
        let mut gaps_under_mean = 0;
        for _ in 0..n {
            let t = s.take();
            if t - last < 100_000 {
                gaps_under_mean += 1;
            }
            last = t;
        }
        let mean_gap = last as f64 / n as f64;
        assert!((mean_gap - 100_000.0).abs() < 2_000.0, "{mean_gap}");
        // Exponential gaps: P(gap < mean) = 1 - 1/e ≈ 0.632.
        let frac = gaps_under_mean as f64 / n as f64;
        assert!((frac - 0.632).abs() < 0.01, "{frac}");
    }

    fn ramp() -> Arc<Stages> {
        Arc::new(Stages::new(vec![
            Stage {
                dur_s: 10.0,
                target: 1000.0,
            },
            Stage {
                dur_s: 30.0,
                target: 20000.0,
            },
            Stage {
                dur_s: 10.0,
                target: 0.0,
            },
        ]))
    }

    #[test]
    fn stages_integrate_and_invert() {
        let s = ramp();
        assert_eq!(s.total_s(), 50.0);
        // 0→1000 over 10 s: 5000; 1000→20000 over 30 s: 315000; 20000→0 over 10 s: 100000.
        assert!((s.total_count() - 420_000.0).abs() < 1e-6);
        assert!((s.rate_at(5.0) - 500.0).abs() < 1e-9);
        assert!((s.rate_at(25.0) - 10_500.0).abs() < 1e-9);
        assert_eq!(s.rate_at(60.0), 0.0);
        for t in [0.0, 0.3, 7.5, 10.0, 22.2, 39.9, 45.0, 49.99] {
            let c = s.count_at(t);
            let back = s.time_of(c).unwrap();
            assert!((back - t).abs() < 1e-6, "{t} -> {c} -> {back}");
        }
        assert_eq!(s.time_of(420_001.0), None);
    }

    #[test]
    fn ramped_threads_interleave_and_follow_the_rate() {
        let s = ramp();
        let mut all: Vec<u64> = Vec::new();
        for i in 0..4 {
            let r = Ramp {
                stages: Arc::clone(&s),
                share: 0.25,
                phase: i as f64 / 4.0,
            };
            let mut sch = OpenSchedule::ramped(r, 0, Arrival::Constant, 1);
            while sch.peek() != u64::MAX {
                all.push(sch.take());
            }
        }
        // Exactly the whole ramp's arrivals, each once.
        assert_eq!(all.len(), 420_000);
        all.sort_unstable();
        // Arrivals in second 25 match the rate there (10,500/s at its middle).
        let in_25 = all
            .iter()
            .filter(|&&t| (25_000_000_000..26_000_000_000).contains(&t))
            .count() as f64;
        assert!(
            (in_25 - s.count_at(26.0) + s.count_at(25.0)).abs() <= 1.0,
            "{in_25}"
        );
        // Poisson arrivals follow the same ramp on average.
        let r = Ramp {
            stages: Arc::clone(&s),
            share: 1.0,
            phase: 0.0,
        };
        let mut p = OpenSchedule::ramped(r, 0, Arrival::Poisson, 9);
        let mut n = 0u64;
        while p.peek() != u64::MAX {
            p.take();
            n += 1;
        }
        assert!(
            (n as f64 - 420_000.0).abs() < 3.0 * 420_000f64.sqrt(),
            "{n}"
        );
    }

    #[test]
    fn rng_below_is_in_range_and_spread() {
        let mut r = Rng::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        for _ in 0..1000 {
            let u = r.unit();
            assert!(u > 0.0 && u <= 1.0);
        }
    }
}

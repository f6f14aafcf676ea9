//! When requests are due: the closed loop (send again as soon as a response arrives) and the
//! open loop at a fixed rate, with constant or Poisson arrivals. Open-loop send times are
//! arithmetic (`start + n / rate`, never accumulated), so a late sender catches up instead of
//! drifting, and every request keeps its intended time for coordinated-omission correction.

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
        };
        if arrival == Arrival::Poisson {
            s.poisson_t += s.gap();
            s.next_ns = s.poisson_t as u64;
        }
        s
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

//! A small seeded pseudo-random generator (SplitMix64). The shell seeds it
//! (from the OS, or from a test seed), so protocol decisions that need
//! randomness (NACK back-off) stay deterministic under simulation.

use core::time::Duration;

/// SplitMix64: tiny, fast, statistically fine for back-off jitter. Not for keys.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole future output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniform in `0..bound` (`0` when `bound` is 0). Multiply-shift, no floats.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A duration uniform in `[low, high]` (microsecond resolution).
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let lo = u64::try_from(low.as_micros()).unwrap_or(u64::MAX);
        let hi = u64::try_from(high.as_micros()).unwrap_or(u64::MAX);
        if hi <= lo {
            return low;
        }
        Duration::from_micros(lo + self.below(hi - lo + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let (lo, hi) = (Duration::from_millis(5), Duration::from_millis(9));
        let mut seen_low_half = false;
        let mut seen_high_half = false;
        for _ in 0..1000 {
            let d = r.duration_between(lo, hi);
            assert!(d >= lo && d <= hi);
            seen_low_half |= d < Duration::from_millis(7);
            seen_high_half |= d > Duration::from_millis(7);
            assert!(r.below(10) < 10);
        }
        assert!(seen_low_half && seen_high_half);
        assert_eq!(r.below(0), 0);
    }
}

//! Time as an input: an [`Instant`] is a count of microseconds on the shell's
//! monotonic clock. Nothing in `proto` reads a clock; every `handle_*` and
//! `poll_*` call takes `now` from the caller.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the caller's monotonic clock, in microseconds from an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(micros(rhs)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(micros(rhs)))
    }
}

/// The earlier of two optional deadlines (`None` means "no deadline").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_micros(10);
        assert_eq!((t - Duration::from_secs(1)).as_micros(), 0);
        assert_eq!((t + Duration::from_millis(1)).as_micros(), 1010);
        assert_eq!(t.saturating_since(Instant::from_micros(20)), Duration::ZERO);
        assert_eq!(earliest(Some(t), Some(Instant::ZERO)), Some(Instant::ZERO));
        assert_eq!(earliest(None, Some(t)), Some(t));
    }
}

//! The group-silence watchdog: when the data group has been silent for a
//! while during an update, the agent leaves and re-joins its groups, which
//! sends a fresh IGMP membership report.
//!
//! Why: a snooping switch forwards a group only to ports it has seen a report
//! from. Hosts report on join and when queried, so a port can lose the group
//! mid-update: IGMPv2 report suppression (a host that hears a neighbour's
//! report for the group keeps quiet, and a switch that floods reports hides
//! the quiet host), a LAN without a querier (memberships age out after about
//! 260 s), a switch reboot. On the bench's Linux bridge with an IGMPv2
//! querier, devices without it lost the carousel for seconds (figures in
//! bench/README.md, "Figures behind code comments").
//!
//! The first re-join comes after [`FIRST_AFTER`] of silence, later ones after
//! doubling silences up to [`MAX_AFTER`]; any datagram resets it. Pure
//! logic: the agent's loop feeds it the time and what it heard.

use proto::Instant;
use std::time::Duration;

/// Silence on the data group before the first re-join. The carousel sends
/// many datagrams per second, so a second of silence is not a gap in it.
pub const FIRST_AFTER: Duration = Duration::from_secs(1);
/// Longest silence between two re-joins (a sender that stopped for good
/// costs one IGMP report per this interval per device).
pub const MAX_AFTER: Duration = Duration::from_secs(16);

/// When to re-join.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    heard_at: Instant,
    after: Duration,
}

impl Watchdog {
    /// Start watching at `now` (a join has just been made).
    pub fn new(now: Instant) -> Self {
        Watchdog {
            heard_at: now,
            after: FIRST_AFTER,
        }
    }

    /// A datagram arrived on the data group at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.heard_at = now;
        self.after = FIRST_AFTER;
    }

    /// When a re-join is due if nothing is heard before.
    pub fn due_at(&self) -> Instant {
        self.heard_at + self.after
    }

    /// Whether to re-join now; if so, the silence counts from `now` again and
    /// the next one must be twice as long. Returns the silence so far.
    pub fn poll(&mut self, now: Instant) -> Option<Duration> {
        if now < self.due_at() {
            return None;
        }
        let silent = now.saturating_since(self.heard_at);
        self.heard_at = now;
        self.after = (self.after * 2).min(MAX_AFTER);
        Some(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn rejoins_after_a_second_of_silence_then_backs_off_to_16_s() {
        let mut w = Watchdog::new(at(0));
        assert_eq!(w.poll(at(999)), None);
        assert_eq!(w.poll(at(1000)), Some(Duration::from_secs(1)));
        // Next after 2 s more, then 4, 8, 16, 16.
        let mut t = 1000;
        for gap in [2000u64, 4000, 8000, 16_000, 16_000] {
            assert_eq!(w.poll(at(t + gap - 1)), None, "before {gap}");
            assert!(w.poll(at(t + gap)).is_some(), "at {gap}");
            t += gap;
        }
    }

    #[test]
    fn any_datagram_resets_the_silence_and_the_back_off() {
        let mut w = Watchdog::new(at(0));
        assert!(w.poll(at(1000)).is_some());
        w.heard(at(1500));
        assert_eq!(w.due_at(), at(2500));
        assert_eq!(w.poll(at(2499)), None);
        assert!(w.poll(at(2500)).is_some());
    }
}

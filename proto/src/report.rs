//! When a device sends its Status frames: every `status_interval` while a
//! transfer runs (R-STAT-1), and each outcome [`FINAL_REPEATS`] times,
//! [`FINAL_GAP`] apart, since UDP may lose one (R-STAT-1, R-STAT-2, R-STAT-3,
//! R-STAT-7). The receiver and the agent's own reports (activation, boot
//! confirmation) share this one timer, so the repeat rule lives here only.

use core::time::Duration;

use crate::time::Instant;

/// Copies of each outcome report.
pub const FINAL_REPEATS: u32 = 3;
/// Gap between two copies of an outcome report.
pub const FINAL_GAP: Duration = Duration::from_millis(50);

/// The Status timer: when the next report is due and how many copies of
/// an outcome are still to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    next_at: Option<Instant>,
    finals_left: u32,
}

impl Reporter {
    /// A timer whose first periodic report is due at `now`.
    pub const fn new(now: Instant) -> Reporter {
        Reporter {
            next_at: Some(now),
            finals_left: 0,
        }
    }

    /// A timer for one outcome: [`FINAL_REPEATS`] copies, the first at `now`.
    pub const fn outcome(now: Instant) -> Reporter {
        Reporter {
            next_at: Some(now),
            finals_left: FINAL_REPEATS,
        }
    }

    /// Something changed: report at `now` (copies of an outcome still to go
    /// stay due).
    pub fn report_now(&mut self, now: Instant) {
        self.next_at = Some(now);
    }

    /// An outcome: [`FINAL_REPEATS`] copies from `now`.
    pub fn report_outcome(&mut self, now: Instant) {
        *self = Reporter::outcome(now);
    }

    /// A fresh periodic report at `now`; copies of an earlier outcome are
    /// dropped (it no longer holds).
    pub fn restart(&mut self, now: Instant) {
        *self = Reporter::new(now);
    }

    /// When the next report is due; `None` once everything is sent.
    pub fn due_at(&self) -> Option<Instant> {
        self.next_at
    }

    /// Whether a report is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_at.is_some_and(|at| at <= now)
    }

    /// Whether copies of an outcome are still to go.
    pub fn outcome_pending(&self) -> bool {
        self.finals_left > 0
    }

    /// A report was sent at `now`. The next one: the next copy of an
    /// outcome, else after `interval`, or none with `interval` `None` (the
    /// device has nothing more to report).
    pub fn sent(&mut self, now: Instant, interval: Option<Duration>) {
        if self.finals_left > 0 {
            self.finals_left -= 1;
            self.next_at = if self.finals_left == 0 && interval.is_none() {
                None
            } else {
                Some(now + FINAL_GAP)
            };
        } else {
            self.next_at = interval.map(|d| now + d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    #[test]
    fn r_stat_1_an_outcome_goes_out_three_times_50_ms_apart_then_stops() {
        let mut r = Reporter::outcome(ms(10));
        let mut sent = alloc::vec::Vec::new();
        for _ in 0..10 {
            let Some(at) = r.due_at() else { break };
            sent.push(at);
            r.sent(at, None);
        }
        std::println!("outcome copies at {sent:?}");
        assert_eq!(sent, [ms(10), ms(60), ms(110)]);
    }

    #[test]
    fn r_stat_1_after_the_copies_a_running_device_goes_back_to_its_interval() {
        let mut r = Reporter::outcome(ms(0));
        let every = Some(Duration::from_secs(1));
        r.sent(ms(0), every);
        r.sent(ms(50), every);
        r.sent(ms(100), every);
        assert_eq!(r.due_at(), Some(ms(150)));
        assert!(!r.outcome_pending());
        r.sent(ms(150), every);
        assert_eq!(r.due_at(), Some(ms(1150)));
    }
}

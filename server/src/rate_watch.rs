//! The sender's check of its own pace: the bits it put on the wire against
//! the rate it was asked to hold, per window of a few seconds, so that a
//! host (or a socket) that cannot keep up with `--rate` is said once, with
//! the figures, instead of silently stretching the update.

use std::time::Duration;

/// Length of one measuring window.
const WINDOW: Duration = Duration::from_secs(2);
/// Consecutive short windows before the warning: one slow window is a
/// hiccup (another process, a page fault storm), three are the host.
const SHORT_WINDOWS: u32 = 3;
/// Below this share of the asked rate a window counts as short.
const SHORT_PERMILLE: u64 = 900;

/// Achieved-rate watch over wire bits (IPv4/UDP headers included).
#[derive(Debug)]
pub struct RateWatch {
    start: Option<(proto::Instant, u64)>,
    asked_bps: u64,
    short: u32,
    /// The worst (achieved, asked) of the run of short windows.
    worst: Option<(u64, u64)>,
    warned: bool,
}

impl RateWatch {
    /// A watch that has not started a window yet.
    pub fn new() -> Self {
        RateWatch {
            start: None,
            asked_bps: 0,
            short: 0,
            worst: None,
            warned: false,
        }
    }

    /// Note the bits sent so far (`wire_bits`, a running total) at `now`,
    /// with the rate the carousel was asked to hold (`asked_bps`), or `None`
    /// when it was not asked to send (holding, or a window with a different
    /// rate). Returns the warning line when this window completes the run of
    /// short ones, once per process.
    pub fn tick(
        &mut self,
        now: proto::Instant,
        wire_bits: u64,
        asked_bps: Option<u64>,
    ) -> Option<String> {
        let Some(asked) = asked_bps else {
            self.start = None;
            return None;
        };
        let Some((t0, b0)) = self.start.filter(|_| self.asked_bps == asked) else {
            self.start = Some((now, wire_bits));
            self.asked_bps = asked;
            return None;
        };
        let span = now.saturating_since(t0);
        if span < WINDOW {
            return None;
        }
        self.start = Some((now, wire_bits));
        let micros = u64::try_from(span.as_micros()).unwrap_or(u64::MAX).max(1);
        let achieved = u64::try_from(
            u128::from(wire_bits.saturating_sub(b0)) * 1_000_000 / u128::from(micros),
        )
        .unwrap_or(u64::MAX);
        if achieved.saturating_mul(1000) >= asked.saturating_mul(SHORT_PERMILLE) {
            self.short = 0;
            self.worst = None;
            return None;
        }
        self.short += 1;
        if self.worst.is_none_or(|(a, _)| achieved < a) {
            self.worst = Some((achieved, asked));
        }
        if self.short < SHORT_WINDOWS || self.warned {
            return None;
        }
        self.warned = true;
        let (a, r) = self.worst.unwrap_or((achieved, asked));
        Some(format!(
            "the carousel reaches only {:.1} of the {:.1} Mbit/s asked ({}% in the worst of {} windows of {} s): \
             this host or its socket cannot send faster; the update takes longer than --rate promises",
            a as f64 / 1e6,
            r as f64 / 1e6,
            a * 100 / r.max(1),
            SHORT_WINDOWS,
            WINDOW.as_secs()
        ))
    }
}

impl Default for RateWatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> proto::Instant {
        proto::Instant::from_micros(ms * 1000)
    }

    #[test]
    fn warns_once_after_three_short_windows_and_not_when_on_pace_or_holding() {
        let mut w = RateWatch::new();
        let rate = 10_000_000u64;
        // On pace: 10 Mbit per second.
        for s in 0..10u64 {
            assert_eq!(w.tick(at(s * 1000), s * rate, Some(rate)), None);
        }
        // Holding resets the window.
        assert_eq!(w.tick(at(10_500), 10 * rate, None), None);
        // 80% of the rate from here on.
        let mut warned = Vec::new();
        for s in 11..30u64 {
            let bits = 10 * rate + (s - 11) * rate * 8 / 10;
            if let Some(line) = w.tick(at(s * 1000), bits, Some(rate)) {
                warned.push((s, line));
            }
        }
        assert_eq!(warned.len(), 1, "{warned:?}");
        let (s, line) = &warned[0];
        println!("warned at {s} s: {line}");
        assert!(line.contains("8.0 of the 10.0 Mbit/s"), "{line}");
        assert!(*s <= 18, "warned at {s} s");
    }
}

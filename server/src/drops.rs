//! Quiet under flood: datagrams dropped and repairs refused are counted per
//! kind and logged as at most one summary line per kind per interval, never
//! one line per datagram (a forger controls how many datagrams arrive).
//!
//! ```text
//!  note(now, reason, from) ─┐
//!  repair stats (refusals) ─┼─► tick(now): one line per kind with a count, every INTERVAL
//!                           └─► finish(): what is left at the end
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proto::repair::RepairStats;
use proto::{DropReason, Instant};

/// How often a kind with a count is summarised.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One refusal counter of the repair server: what it counts, and how to read it.
type Refusal = (&'static str, fn(&RepairStats) -> u64);

/// Refusal counters of the repair server, summarised like drops.
const REFUSALS: [Refusal; 4] = [
    (
        "chunks refused over their source's budget (R-REP-10)",
        |s| s.over_budget,
    ),
    (
        "lone-straggler repairs sent to the group, not unicast to an unverified address (R-REP-8)",
        |s| s.unicast_refused,
    ),
    ("chunks refused with the pending table full", |s| s.overload),
    ("chunks past the per-NACK cap (R-REP-2)", |s| s.capped),
];

/// Counts since the last summary, per kind.
#[derive(Debug)]
pub struct DropLog {
    /// Who is logging ("repair", "send").
    who: &'static str,
    /// Dropped datagrams per reason: count and the last source.
    drops: BTreeMap<String, (u64, SocketAddr)>,
    /// Refusal counters at the last summary.
    refused_before: [u64; REFUSALS.len()],
    next_at: Instant,
}

impl DropLog {
    /// A log for `who`, first summary one interval after `now`.
    pub fn new(who: &'static str, now: Instant) -> Self {
        DropLog {
            who,
            drops: BTreeMap::new(),
            refused_before: [0; REFUSALS.len()],
            next_at: now + INTERVAL,
        }
    }

    /// A datagram from `from` was dropped for `reason`.
    pub fn note(&mut self, reason: DropReason, from: SocketAddr) {
        let e = self.drops.entry(reason.to_string()).or_insert((0, from));
        e.0 += 1;
        e.1 = from;
    }

    /// Log the summary lines due at `now`; `repair` are the repair server's
    /// counters, if there is one. Returns the lines logged.
    pub fn tick(&mut self, now: Instant, repair: Option<&RepairStats>) -> Vec<String> {
        if now < self.next_at {
            return Vec::new();
        }
        self.next_at = now + INTERVAL;
        self.flush(repair)
    }

    /// Log whatever was counted since the last summary (at the end of a run).
    pub fn finish(&mut self, repair: Option<&RepairStats>) -> Vec<String> {
        self.flush(repair)
    }

    fn flush(&mut self, repair: Option<&RepairStats>) -> Vec<String> {
        let mut lines = Vec::new();
        for (reason, (count, last)) in std::mem::take(&mut self.drops) {
            lines.push(format!(
                "{}: dropped {count} datagram{} ({reason}), the last from {last}",
                self.who,
                if count == 1 { "" } else { "s" }
            ));
        }
        if let Some(stats) = repair {
            for ((what, counter), before) in REFUSALS.iter().zip(self.refused_before.iter_mut()) {
                let now = counter(stats);
                if now > *before {
                    lines.push(format!("{}: {} {what}", self.who, now - *before));
                }
                *before = now;
            }
        }
        for line in &lines {
            log::warn!("{line}");
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::DecodeError;

    #[test]
    fn a_flood_is_one_line_per_kind_per_interval() {
        let from: SocketAddr = "127.0.0.66:9".parse().expect("addr");
        let t0 = Instant::from_micros(0);
        let mut log = DropLog::new("repair", t0);
        let mut stats = RepairStats::default();
        let mut lines = Vec::new();
        for i in 0..20_000u64 {
            let now = t0 + Duration::from_millis(i);
            log.note(DropReason::Overload, from);
            log.note(DropReason::Decode(DecodeError::BadCrc), from);
            stats.over_budget += 256;
            lines.extend(log.tick(now, Some(&stats)));
        }
        lines.extend(log.finish(Some(&stats)));
        std::println!(
            "{} log lines for 40,000 dropped datagrams in 20 s:\n{}",
            lines.len(),
            lines.join("\n")
        );
        // One interval ends inside the 20 s, the rest is logged at the end:
        // three kinds, twice.
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines[0].contains("dropped"));
        assert!(lines.iter().any(|l| l.contains("R-REP-10")));
    }
}

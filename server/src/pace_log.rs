//! What `firmcast send` says about the fleet's write pace (R-PACE-2): a log
//! line when a device starts or stops holding the carousel back, the device
//! in the progress line, and which devices held it back for how long in the
//! summary, so the operator can see which CPEs set the update's length.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::pace::Slowest;
use serde_json::{json, Value};

/// Devices named in the summary, slowest-longest first.
const NAMED: usize = 5;

/// The pacing story of one `firmcast send`.
#[derive(Debug, Default)]
pub struct PaceLog {
    current: Option<Slowest>,
    since: Option<proto::Instant>,
    /// Device id → time it held the carousel and the least rate it reported.
    held: BTreeMap<u64, (Duration, u32)>,
    least_cap: Option<u64>,
}

impl PaceLog {
    /// Note the pace at `now`: the cap the carousel keeps and the device
    /// that sets it (`None` when the carousel runs at the operator's rate).
    pub fn note(&mut self, now: proto::Instant, cap_bps: u64, slowest: Option<Slowest>) {
        if let (Some(cur), Some(since)) = (self.current, self.since) {
            let e = self
                .held
                .entry(cur.device_id)
                .or_insert((Duration::ZERO, u32::MAX));
            e.0 += now.saturating_since(since);
            e.1 = e.1.min(cur.write_kbps);
        }
        self.since = Some(now);
        if slowest.is_some() {
            self.least_cap = Some(self.least_cap.map_or(cap_bps, |c| c.min(cap_bps)));
        }
        match (self.current.map(|s| s.device_id), slowest) {
            (None, Some(s)) => log::info!(
                "pacing the carousel to {:.2} Mbit/s: device {:016x} writes flash at {} KB/s ({} window slots free)",
                cap_bps as f64 / 1e6,
                s.device_id,
                s.write_kbps / 8,
                s.window_free
            ),
            (Some(old), Some(s)) if old != s.device_id => log::info!(
                "pacing the carousel to {:.2} Mbit/s: now device {:016x} is the slowest, at {} KB/s",
                cap_bps as f64 / 1e6,
                s.device_id,
                s.write_kbps / 8
            ),
            (Some(_), None) => log::info!("the carousel goes back to the full rate: no device's flash holds it back"),
            _ => {}
        }
        self.current = slowest;
    }

    /// For the progress line: "paced by 00000000000000a1 (256 KB/s)".
    pub fn progress(&self) -> Option<String> {
        self.current
            .map(|s| format!("paced by {:016x} ({} KB/s)", s.device_id, s.write_kbps / 8))
    }

    fn ranked(&self) -> Vec<(u64, Duration, u32)> {
        let mut v: Vec<_> = self.held.iter().map(|(id, (d, k))| (*id, *d, *k)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    /// For the summary: "; held back by the flash of 00000000000000a1 (31.9 s at 256 KB/s), …".
    pub fn summary(&self) -> String {
        let v = self.ranked();
        if v.is_empty() {
            return String::new();
        }
        let named: Vec<String> = v
            .iter()
            .take(NAMED)
            .map(|(id, d, k)| format!("{id:016x} ({:.1} s at {} KB/s)", d.as_secs_f64(), k / 8))
            .collect();
        let more = v.len().saturating_sub(NAMED);
        format!(
            "; held back by the flash of {}{}",
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }

    /// For the JSON summary.
    pub fn json(&self) -> Value {
        let held: Vec<Value> = self
            .ranked()
            .iter()
            .take(NAMED)
            .map(|(id, d, k)| {
                json!({"device": format!("{id:016x}"), "held_s": d.as_secs_f64(), "write_kbps": k})
            })
            .collect();
        json!({ "least_cap_bps": self.least_cap, "held_back_by": held })
    }
}

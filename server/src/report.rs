//! Human and JSON reporting: devices by state, progress lines.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use proto::fleet::{Fleet, ALL_STATES};
use serde_json::{Map, Value};

/// How often [`DropSummary`] lines go out while drops continue.
pub const DROP_SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Dropped datagrams summarised (R-STAT-5): one line per kind of drop per
/// interval, naming the count and the last source, so a flood of forged
/// datagrams costs a few log lines, not one per datagram.
#[derive(Debug)]
pub struct DropSummary {
    interval: std::time::Duration,
    window_start: Option<proto::Instant>,
    kinds: std::collections::BTreeMap<String, (u64, std::net::SocketAddr)>,
}

impl DropSummary {
    /// Summaries every `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        DropSummary {
            interval,
            window_start: None,
            kinds: std::collections::BTreeMap::new(),
        }
    }

    /// Count a drop of kind `why` from `from` at `now`; returns the lines of
    /// the window that ended, if one did.
    pub fn note(
        &mut self,
        now: proto::Instant,
        from: std::net::SocketAddr,
        why: &dyn std::fmt::Display,
    ) -> Vec<String> {
        let lines = match self.window_start {
            Some(start) if now.saturating_since(start) >= self.interval => self.flush(),
            _ => Vec::new(),
        };
        self.window_start.get_or_insert(now);
        let e = self.kinds.entry(why.to_string()).or_insert((0, from));
        e.0 += 1;
        e.1 = from;
        lines
    }

    /// The lines of the current window, which starts anew.
    pub fn flush(&mut self) -> Vec<String> {
        self.window_start = None;
        std::mem::take(&mut self.kinds)
            .into_iter()
            .map(|(why, (n, from))| format!("dropped {n} datagrams: {why} (last from {from})"))
            .collect()
    }
}

/// A device-supplied string made safe to print or log (R-STAT-5): control
/// characters (ESC, newline, DEL, C1) escaped as `\u{..}`/`\n`, so a forged
/// report cannot move the cursor, recolour the terminal or fake a log line.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What the fleet table knows about authentication and what it refused
/// (R-STAT-4, R-FLEET-1..3), for the JSON summaries.
pub fn fleet_auth_json(fleet: &Fleet) -> Value {
    let s = fleet.stats();
    serde_json::json!({
        "roster": fleet.has_roster(),
        "authenticated": fleet.authenticated(),
        "unauthenticated": fleet.len() - fleet.authenticated(),
        "dropped_unsigned": s.unsigned,
        "dropped_bad_signature": s.bad_signature,
        "dropped_full": s.dropped_full,
        "evicted": s.evicted,
        "aged_out": s.aged_out,
    })
}

/// "5 devices: receiving 3, done 2" (only non-zero states).
pub fn devices_line(fleet: &Fleet) -> String {
    let counts = fleet.state_counts();
    let parts: Vec<String> = ALL_STATES
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    let line = if parts.is_empty() {
        format!("{} devices", fleet.len())
    } else {
        format!("{} devices: {}", fleet.len(), parts.join(", "))
    };
    if fleet.has_roster() {
        format!("{line} ({} authenticated)", fleet.authenticated())
    } else {
        line
    }
}

/// `{"listening": 0, …, "done": 2, …}` with every state present.
pub fn devices_json(fleet: &Fleet) -> Value {
    let counts = fleet.state_counts();
    let mut m = Map::new();
    for (s, n) in ALL_STATES.iter().zip(counts) {
        m.insert(s.as_str().to_string(), Value::from(n));
    }
    Value::Object(m)
}

/// Progress output: a rewritten line on a TTY at most 4×/s, otherwise a
/// plain log line every few seconds.
pub struct Progress {
    tty: bool,
    interval: Duration,
    last: Option<Instant>,
    dirty: bool,
}

impl Progress {
    /// Progress on stderr; `verbose` makes the non-TTY lines more frequent.
    pub fn new(verbose: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let interval = if tty {
            Duration::from_millis(250)
        } else if verbose {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        Progress {
            tty,
            interval,
            last: None,
            dirty: false,
        }
    }

    /// `true` when a line is due now.
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Print `line` if due.
    pub fn tick(&mut self, line: impl FnOnce() -> String) {
        if !self.due() {
            return;
        }
        self.last = Some(Instant::now());
        let text = line();
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            self.dirty = true;
        } else {
            log::info!("{text}");
        }
    }

    /// End the progress line before other output.
    pub fn finish(&mut self) {
        if self.tty && self.dirty {
            eprintln!();
            self.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_stat_5_drops_are_one_line_per_kind_per_interval() {
        let mut s = DropSummary::new(Duration::from_secs(5));
        let from: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut lines = Vec::new();
        for i in 0..10_000u64 {
            let now = proto::Instant::from_micros(i * 1000);
            let why = if i % 2 == 0 { "bad CRC" } else { "not signed" };
            lines.extend(s.note(now, from, &why));
        }
        lines.extend(s.flush());
        // 10 s of drops of two kinds: two windows, two lines each.
        println!("10000 drops of 2 kinds over 10 s: {} lines", lines.len());
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("dropped 2500 datagrams: bad CRC"));
    }

    #[test]
    fn r_stat_5_control_characters_are_escaped() {
        assert_eq!(printable("2.1.0"), "2.1.0");
        assert_eq!(printable("a\u{1b}[2J\nb\\"), "a\\u{1b}[2J\\nb\\\\");
        assert_eq!(printable("\u{9b}x\u{7f}"), "\\u{9b}x\\u{7f}");
    }
}

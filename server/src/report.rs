//! Human and JSON reporting: devices by state, progress lines.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use proto::fleet::{Fleet, ALL_STATES};
use serde_json::{Map, Value};

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

/// Devices per state name, every state this build knows and then
/// `unknown` (R-STAT-9: states a newer agent reports).
fn named_counts(fleet: &Fleet) -> impl Iterator<Item = (&'static str, usize)> {
    let known = ALL_STATES
        .iter()
        .map(|s| s.as_str())
        .zip(fleet.state_counts());
    known.chain([("unknown", fleet.unknown_states())])
}

/// "5 devices: receiving 3, done 2" (only non-zero states).
pub fn devices_line(fleet: &Fleet) -> String {
    let parts: Vec<String> = named_counts(fleet)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{s} {n}"))
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

/// `{"listening": 0, …, "done": 2, …, "unknown": 0}` with every state present.
pub fn devices_json(fleet: &Fleet) -> Value {
    let mut m = Map::new();
    for (s, n) in named_counts(fleet) {
        m.insert(s.to_string(), Value::from(n));
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
    fn r_stat_5_control_characters_are_escaped() {
        assert_eq!(printable("2.1.0"), "2.1.0");
        assert_eq!(printable("a\u{1b}[2J\nb\\"), "a\\u{1b}[2J\\nb\\\\");
        assert_eq!(printable("\u{9b}x\u{7f}"), "\\u{9b}x\\u{7f}");
    }
}

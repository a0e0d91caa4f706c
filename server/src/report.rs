//! Human and JSON reporting: devices by state, progress lines.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use proto::fleet::{Fleet, ALL_STATES};
use serde_json::{Map, Value};

/// "5 devices: receiving 3, done 2" (only non-zero states).
pub fn devices_line(fleet: &Fleet) -> String {
    let counts = fleet.state_counts();
    let parts: Vec<String> = ALL_STATES
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    if parts.is_empty() {
        format!("{} devices", fleet.len())
    } else {
        format!("{} devices: {}", fleet.len(), parts.join(", "))
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

//! Quiet under flood: what the network says is logged escaped, and repeated
//! drops, hints and foreign datagrams are counted and summarised, at most
//! one line per kind when it first occurs in an interval and one summary per
//! kind when the interval ends. A forger controls how often these happen; it
//! must not control how much the device logs, nor what a log line looks like.

use std::fmt::Write;
use std::time::Duration;

use proto::Instant;

/// How long repeats of one kind are counted before their summary line.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Distinct kinds tracked; more share the last entry.
const MAX_KINDS: usize = 16;

/// `s` with control characters, backslashes and quotes escaped, cut to
/// `max` characters: safe to put in a log line.
pub fn escape(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
struct Kind {
    key: &'static str,
    level: log::Level,
    /// Occurrences since the first of this interval was logged.
    repeats: u64,
    total: u64,
    until: Instant,
}

/// Counts per kind; see the module docs.
#[derive(Debug, Default)]
pub struct Summary {
    kinds: Vec<Kind>,
    /// Lines this summary has let through (for tests and the exit line).
    pub lines: u64,
}

impl Summary {
    /// Note one occurrence of `key`. The first of an interval is logged
    /// with `detail()`; later ones only counted.
    pub fn note(
        &mut self,
        now: Instant,
        level: log::Level,
        key: &'static str,
        detail: impl FnOnce() -> String,
    ) {
        self.flush(now);
        let i = match self.kinds.iter().position(|k| k.key == key) {
            Some(i) => i,
            None if self.kinds.len() < MAX_KINDS => {
                self.kinds.push(Kind {
                    key,
                    level,
                    repeats: 0,
                    total: 0,
                    until: Instant::ZERO,
                });
                self.kinds.len() - 1
            }
            None => MAX_KINDS - 1,
        };
        let k = &mut self.kinds[i];
        k.total += 1;
        if k.until == Instant::ZERO {
            k.until = now + SUMMARY_EVERY;
            self.lines += 1;
            log::log!(
                k.level,
                "{key}: {} (repeats are summarised every {} s)",
                detail(),
                SUMMARY_EVERY.as_secs()
            );
        } else {
            k.repeats += 1;
        }
    }

    /// Log the summary of every kind whose interval is over.
    pub fn flush(&mut self, now: Instant) {
        for k in self.kinds.iter_mut() {
            if k.until != Instant::ZERO && now >= k.until {
                if k.repeats > 0 {
                    self.lines += 1;
                    log::log!(
                        k.level,
                        "{}: {} more in the last {} s ({} in all)",
                        k.key,
                        k.repeats,
                        SUMMARY_EVERY.as_secs(),
                        k.total
                    );
                }
                k.repeats = 0;
                k.until = Instant::ZERO;
            }
        }
    }

    /// When the next summary is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.kinds
            .iter()
            .filter(|k| k.until != Instant::ZERO && k.repeats > 0)
            .map(|k| k.until)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_newlines_and_escape_sequences() {
        let s = escape("acme\n12.345 INFO  update complete\u{1b}[2J\"\\", 64);
        assert!(!s.chars().any(char::is_control), "{s}");
        assert_eq!(
            s,
            "acme\\u{a}12.345 INFO  update complete\\u{1b}[2J\\\"\\\\"
        );
        assert_eq!(escape("abcdef", 3), "abc…");
    }

    #[test]
    fn a_flood_of_one_kind_gives_two_lines_per_interval() {
        let mut s = Summary::default();
        for i in 0..10_000u64 {
            s.note(
                Instant::from_micros(i * 1000),
                log::Level::Info,
                "hint",
                String::new,
            );
        }
        s.flush(Instant::from_micros(10_000_000));
        // 10 s of flood: the first line and one summary.
        assert_eq!(s.lines, 2);
    }
}

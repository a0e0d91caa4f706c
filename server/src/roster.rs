//! The operator's roster (R-STAT-4): which devices must sign their Status
//! reports, and with which key.
//!
//! One device per line: its id (16 hex digits, as `firmcast status` prints
//! it, or a decimal number) and its hex Ed25519 public key (as `firmcast
//! keygen --device` writes it), separated by white space. `#` starts a
//! comment; blank lines are ignored.

use std::path::Path;

use proto::fleet::Roster;

use crate::error::{config, Error};
use crate::keys::unhex;

/// Load a roster file; an error names the file and line.
pub fn load(path: &Path) -> Result<Roster, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config(format!("roster {}: {e}", path.display())))?;
    parse(&text).map_err(|(line, what)| config(format!("roster {}:{line}: {what}", path.display())))
}

fn parse(text: &str) -> Result<Roster, (usize, String)> {
    let mut roster = Roster::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let mut fields = line.split_whitespace();
        let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((n, "expected `DEVICE_ID PUBLIC_KEY`".to_string()));
        };
        let id = parse_id(id).ok_or_else(|| {
            (
                n,
                format!("device id {id:?}: not 16 hex digits or a decimal number"),
            )
        })?;
        let key: [u8; 32] = unhex(key)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| (n, "public key: expected 64 hex digits".to_string()))?;
        if roster.insert(id, key).is_some() {
            return Err((n, format!("device {id:016x} listed twice")));
        }
    }
    Ok(roster)
}

fn parse_id(s: &str) -> Option<u64> {
    if s.len() == 16 {
        if let Ok(v) = u64::from_str_radix(s, 16) {
            return Some(v);
        }
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

    fn bad_line(text: &str) -> usize {
        parse(text).map(|_| ()).expect_err("refused").0
    }

    #[test]
    fn r_stat_4_roster_lines_comments_and_errors() {
        let text = format!("# fleet\n\n00000000000000ff {KEY}  # lab\n7 {KEY}\n");
        let r = parse(&text).expect("parses");
        assert_eq!(r.len(), 2);
        assert!(r.contains_key(&0xff) && r.contains_key(&7));
        assert_eq!(bad_line(&format!("1 {KEY}\nx {KEY}\n")), 2);
        assert_eq!(bad_line("1 abcd\n"), 1);
        assert_eq!(bad_line(&format!("1 {KEY} extra\n")), 1);
        assert_eq!(bad_line(&format!("1 {KEY}\n1 {KEY}\n")), 2);
    }
}

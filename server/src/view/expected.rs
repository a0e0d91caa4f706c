//! `--devices FILE`: the devices a rollout expects, by id or address, so the
//! operator sees who never reported and `--until-done all` knows whom to wait for.
//!
//! One device per line: a device id (16 hex digits, or `0x` + hex, as the
//! tables print it), an IPv4 address (any port) or `ADDR:PORT`; text after
//! the first word and lines starting with `#` are ignored.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use proto::fleet::{DeviceRecord, Fleet};

use crate::error::{config, Error};

/// One expected device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// By device id.
    Id(u64),
    /// By address, any port.
    Ip(IpAddr),
    /// By address and port.
    Addr(SocketAddr),
}

impl Entry {
    /// Whether device `id` with record `r` is this entry.
    pub fn matches(&self, id: u64, r: &DeviceRecord) -> bool {
        self.matches_report(id, r.addr)
    }

    /// Whether device `id`, reporting from `addr`, is this entry.
    pub fn matches_report(&self, id: u64, addr: SocketAddr) -> bool {
        match self {
            Entry::Id(e) => *e == id,
            Entry::Ip(ip) => addr.ip() == *ip,
            Entry::Addr(a) => addr == *a,
        }
    }

    /// As written in tables.
    pub fn label(&self) -> String {
        match self {
            Entry::Id(id) => format!("{id:016x}"),
            Entry::Ip(ip) => ip.to_string(),
            Entry::Addr(a) => a.to_string(),
        }
    }
}

/// The devices expected, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    entries: Vec<Entry>,
}

impl Expected {
    /// Parse the text of a devices file (`what` names it in errors).
    pub fn parse(text: &str, what: &str) -> Result<Self, Error> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let Some(word) = line.split_whitespace().next() else {
                continue;
            };
            if word.starts_with('#') {
                continue;
            }
            let e = parse_entry(word).ok_or_else(|| {
                config(format!(
                    "{what} line {}: `{word}` is neither a device id (16 hex digits) nor an address (IP or IP:PORT)",
                    n + 1
                ))
            })?;
            if !entries.contains(&e) {
                entries.push(e);
            }
        }
        if entries.is_empty() {
            return Err(config(format!("{what}: lists no device")));
        }
        Ok(Expected { entries })
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let what = format!("--devices {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| config(format!("{what}: {e}")))?;
        Self::parse(&text, &what)
    }

    /// The entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of devices expected.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a loaded list (an empty file is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether device `id` is one of those expected.
    pub fn contains(&self, id: u64, r: &DeviceRecord) -> bool {
        self.entries.iter().any(|e| e.matches(id, r))
    }

    /// For each entry, the device that answers to it (first by id), if any reported.
    pub fn resolve<'f>(&self, fleet: &'f Fleet) -> Vec<(Entry, Option<(u64, &'f DeviceRecord)>)> {
        self.entries
            .iter()
            .map(|e| (*e, fleet.iter().find(|(id, r)| e.matches(*id, r))))
            .collect()
    }
}

fn parse_entry(word: &str) -> Option<Entry> {
    if let Ok(a) = word.parse::<SocketAddr>() {
        return Some(Entry::Addr(a));
    }
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(Entry::Ip(ip));
    }
    let hex = word.strip_prefix("0x").unwrap_or(word);
    if !hex.is_empty() && hex.len() <= 16 {
        return u64::from_str_radix(hex, 16).ok().map(Entry::Id);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_addresses_comments_and_errors() {
        let e = Expected::parse(
            "# rollout 7\n00000000000000a1 router-1\n0xa2\n10.0.0.3\n10.0.0.4:7000\n\n0xa2\n",
            "t",
        )
        .expect("parse");
        assert_eq!(
            e.entries(),
            [
                Entry::Id(0xa1),
                Entry::Id(0xa2),
                Entry::Ip("10.0.0.3".parse().expect("ip")),
                Entry::Addr("10.0.0.4:7000".parse().expect("addr")),
            ]
        );
        let err = Expected::parse("0xa1\nrouter-2\n", "devices.txt").expect_err("bad");
        assert!(err.to_string().contains("devices.txt line 2"), "{err}");
        assert!(Expected::parse("# none\n", "t").is_err());
    }
}

//! The devices the operator expects (`firmcast fleet --devices FILE`), in
//! the format `send --devices` reads (issue 16's outcome part): one device
//! per line, its first word a device id (16 hex digits, or `0x` + hex) or an
//! address (IP, any port, or `IP:PORT`); the rest of the line, blank lines
//! and lines starting with `#` are ignored. When both parts meet, this
//! module gives way to that one's parser.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::error::{config, Error};

/// One expected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// By device id.
    Id(u64),
    /// By address (any port).
    Ip(IpAddr),
    /// By address and port.
    Addr(SocketAddr),
}

impl Expected {
    /// Whether a device with this id, reporting from `addr`, is this one.
    pub fn matches(&self, id: u64, addr: &str) -> bool {
        match self {
            Expected::Id(x) => *x == id,
            Expected::Ip(ip) => super::addr_ip(addr)
                .parse::<IpAddr>()
                .is_ok_and(|a| a == *ip),
            Expected::Addr(a) => addr.parse::<SocketAddr>().is_ok_and(|b| b == *a),
        }
    }

    /// As written in the file.
    pub fn label(&self) -> String {
        match self {
            Expected::Id(x) => format!("{x:016x}"),
            Expected::Ip(ip) => ip.to_string(),
            Expected::Addr(a) => a.to_string(),
        }
    }
}

/// Parse a devices file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Expected>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        if word.starts_with('#') {
            continue;
        }
        let e = entry(word).ok_or_else(|| {
            config(format!(
                "--devices {} line {}: `{word}` is neither a device id (16 hex digits) nor an address (IP or IP:PORT)",
                path.display(),
                n + 1
            ))
        })?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.is_empty() {
        return Err(config(format!(
            "--devices {}: lists no device",
            path.display()
        )));
    }
    Ok(out)
}

fn entry(word: &str) -> Option<Expected> {
    if let Ok(a) = word.parse::<SocketAddr>() {
        return Some(Expected::Addr(a));
    }
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(Expected::Ip(ip));
    }
    let hex = word.strip_prefix("0x").unwrap_or(word);
    if !hex.is_empty() && hex.len() <= 16 {
        return u64::from_str_radix(hex, 16).ok().map(Expected::Id);
    }
    None
}

/// Read and parse a devices file.
pub fn load(path: &Path) -> Result<Vec<Expected>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config(format!("--devices {}: {e}", path.display())))?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_addresses_and_comments() {
        let p = Path::new("devices.txt");
        let got = parse(
            "# lab rack\n00000000000000ab router-1\n10.0.0.7  # camera\n\n10.0.0.8:7000\n0xab\n",
            p,
        )
        .expect("test setup");
        assert_eq!(got.len(), 3);
        assert!(got[0].matches(0xab, "1.2.3.4:5"));
        assert!(got[1].matches(1, "10.0.0.7:4242"));
        assert!(!got[2].matches(1, "10.0.0.8:4242"));
        let err = parse("router-7\n", p).expect_err("refused").to_string();
        assert!(err.contains("devices.txt line 1"), "{err}");
        assert!(parse("# nobody\n", p).is_err(), "an empty list is refused");
    }
}

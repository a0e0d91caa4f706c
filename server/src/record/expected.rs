//! The devices the operator expects (`--devices FILE`): one device id (16
//! hex digits) or address (IPv4, optionally with `:port`) per line; `#`
//! starts a comment; blank lines are ignored.

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
        let item = line.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let e = if let Ok(a) = item.parse::<SocketAddr>() {
            Expected::Addr(a)
        } else if let Ok(ip) = item.parse::<IpAddr>() {
            Expected::Ip(ip)
        } else if item.len() == 16 && item.bytes().all(|b| b.is_ascii_hexdigit()) {
            Expected::Id(
                u64::from_str_radix(item, 16)
                    .map_err(|e| config(format!("{}:{}: `{item}`: {e}", path.display(), n + 1)))?,
            )
        } else {
            return Err(config(format!(
                "{}:{}: `{item}` is neither a device id (16 hex digits) nor an address",
                path.display(),
                n + 1
            )));
        };
        out.push(e);
    }
    Ok(out)
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
            "# lab rack\n00000000000000ab\n10.0.0.7  # camera\n\n10.0.0.8:7000\n",
            p,
        )
        .expect("test setup");
        assert_eq!(got.len(), 3);
        assert!(got[0].matches(0xab, "1.2.3.4:5"));
        assert!(got[1].matches(1, "10.0.0.7:4242"));
        assert!(!got[2].matches(1, "10.0.0.8:4242"));
        let err = parse("router-7\n", p).expect_err("refused").to_string();
        assert!(err.contains("devices.txt:1"), "{err}");
    }
}

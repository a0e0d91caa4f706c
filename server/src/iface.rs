//! `--interface` checked against this host's addresses, so a typo is a
//! usage error (exit 2) that lists what the host has, not a failed send.

use std::net::IpAddr;

use crate::error::{config, Error};

/// This host's addresses of `iface`'s family, by interface name (empty when
/// unreadable).
pub fn host_addrs(iface: IpAddr) -> Vec<(String, IpAddr)> {
    mcast::host_addrs()
        .into_iter()
        .filter(|(_, _, a)| a.is_ipv4() == iface.is_ipv4())
        .map(|(name, _, a)| (name, a))
        .collect()
}

/// `Ok` when `iface` is unspecified or one of `host`'s addresses; else a
/// usage error naming `flag` and listing the host's addresses.
pub fn check_in(iface: IpAddr, flag: &str, host: &[(String, IpAddr)]) -> Result<(), Error> {
    if iface.is_unspecified() || host.is_empty() || host.iter().any(|(_, a)| *a == iface) {
        return Ok(());
    }
    let list: Vec<String> = host.iter().map(|(n, a)| format!("{a} ({n})")).collect();
    let family = if iface.is_ipv4() { "IPv4" } else { "IPv6" };
    Err(config(format!(
        "{flag} {iface}: no interface of this host has that address; this host's {family} addresses: {} \
         (e.g. {flag} {})",
        list.join(", "),
        host.iter()
            .map(|(_, a)| *a)
            .find(|a| !a.is_loopback())
            .unwrap_or(host[0].1)
    )))
}

/// [`check_in`] against this host.
pub fn check(iface: IpAddr, flag: &str) -> Result<(), Error> {
    check_in(iface, flag, &host_addrs(iface))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_interface_is_a_usage_error_listing_the_host_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("addr");
        let host = vec![
            ("lo".to_string(), ip("127.0.0.1")),
            ("eth0".to_string(), ip("192.168.1.10")),
        ];
        assert!(check_in(ip("192.168.1.10"), "--interface", &host).is_ok());
        assert!(check_in(ip("0.0.0.0"), "--interface", &host).is_ok());
        let e = check_in(ip("192.168.1.11"), "--interface", &host).expect_err("typo");
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("127.0.0.1 (lo), 192.168.1.10 (eth0)"), "{msg}");
        println!("{msg}");
    }
}

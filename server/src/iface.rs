//! `--interface` checked against this host's IPv4 addresses, so a typo is a
//! usage error (exit 2) that lists what the host has, not a failed send.

use std::net::Ipv4Addr;

use crate::error::{config, Error};

/// This host's IPv4 addresses, by interface name (empty when unreadable).
pub fn host_addrs() -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect()
}

/// `Ok` when `iface` is unspecified or one of `host`'s addresses; else a
/// usage error naming `flag` and listing the host's addresses.
pub fn check_in(iface: Ipv4Addr, flag: &str, host: &[(String, Ipv4Addr)]) -> Result<(), Error> {
    if iface.is_unspecified() || host.is_empty() || host.iter().any(|(_, a)| *a == iface) {
        return Ok(());
    }
    let list: Vec<String> = host.iter().map(|(n, a)| format!("{a} ({n})")).collect();
    Err(config(format!(
        "{flag} {iface}: no interface of this host has that address; this host's IPv4 addresses: {} \
         (e.g. {flag} {})",
        list.join(", "),
        host.iter()
            .map(|(_, a)| *a)
            .find(|a| !a.is_loopback())
            .unwrap_or(Ipv4Addr::LOCALHOST)
    )))
}

/// [`check_in`] against this host.
pub fn check(iface: Ipv4Addr, flag: &str) -> Result<(), Error> {
    check_in(iface, flag, &host_addrs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_interface_is_a_usage_error_listing_the_host_addresses() {
        let host = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("eth0".to_string(), Ipv4Addr::new(192, 168, 1, 10)),
        ];
        assert!(check_in(Ipv4Addr::new(192, 168, 1, 10), "--interface", &host).is_ok());
        assert!(check_in(Ipv4Addr::UNSPECIFIED, "--interface", &host).is_ok());
        let e = check_in(Ipv4Addr::new(192, 168, 1, 11), "--interface", &host).expect_err("typo");
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("127.0.0.1 (lo), 192.168.1.10 (eth0)"), "{msg}");
        println!("{msg}");
    }
}

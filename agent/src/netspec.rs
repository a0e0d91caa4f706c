//! The network settings one firmware image can carry for a whole fleet:
//! `interface` as an address, a name (`br-lan`) or `auto` (the interface of
//! the route to the data group), and `repair_server` as `IPv4:port` or
//! `host:port`. A name or `auto` is turned into this device's address, and a
//! host name into an address, at start ([`resolve`]), retried while the
//! boot window lasts: at boot the link, its DHCP lease or the resolver may
//! not be up yet.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::exit::ExitCode;

/// `interface` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// Not set or `0.0.0.0`: the kernel chooses.
    Any,
    /// An address of this device.
    Addr(Ipv4Addr),
    /// An interface name (`eth0`, `br-lan`): its first IPv4 address.
    Name(String),
    /// The interface of the route to the data group.
    Auto,
}

impl Interface {
    /// Parse the config value; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Interface, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(Interface::Auto);
        }
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            if a.is_multicast() {
                return Err(
                    "must be the address of a local interface, not a multicast group".to_string(),
                );
            }
            return Ok(if a.is_unspecified() {
                Interface::Any
            } else {
                Interface::Addr(a)
            });
        }
        // IFNAMSIZ is 16 with the NUL; names have no '/', ':' or blanks.
        let name_ok = !s.is_empty()
            && s.len() < 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
            && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if name_ok {
            Ok(Interface::Name(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not an IPv4 address, an interface name or \"auto\" (e.g. \"192.168.1.1\", \"br-lan\", \"auto\")"
            ))
        }
    }

    /// The address to bind and join on, if it needs no lookup.
    pub fn fixed(&self) -> Option<Ipv4Addr> {
        match self {
            Interface::Any => Some(Ipv4Addr::UNSPECIFIED),
            Interface::Addr(a) => Some(*a),
            Interface::Name(_) | Interface::Auto => None,
        }
    }

    /// One lookup of this device's address for `self` (`group`: for `auto`).
    pub fn lookup(&self, group: SocketAddrV4) -> Result<Ipv4Addr, String> {
        match self {
            Interface::Any => Ok(Ipv4Addr::UNSPECIFIED),
            Interface::Addr(a) => Ok(*a),
            Interface::Name(name) => {
                let links = crate::device_id::HostFacts::read().links;
                let link = links
                    .iter()
                    .find(|l| &l.name == name)
                    .ok_or_else(|| format!("no interface named {name}"))?;
                link.addrs
                    .first()
                    .copied()
                    .ok_or_else(|| format!("interface {name} has no IPv4 address"))
            }
            Interface::Auto => {
                // connect() on UDP sends nothing: the kernel only picks the
                // route, and with it the source address.
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .map_err(|e| format!("auto: socket: {e}"))?;
                s.connect(group)
                    .map_err(|e| format!("auto: no route to {}: {e}", group.ip()))?;
                match s.local_addr() {
                    Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Ok(*a.ip()),
                    Ok(a) => Err(format!("auto: the route to {} gives {a}", group.ip())),
                    Err(e) => Err(format!("auto: {e}")),
                }
            }
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Any => f.write_str("0.0.0.0"),
            Interface::Addr(a) => write!(f, "{a}"),
            Interface::Name(n) => f.write_str(n),
            Interface::Auto => f.write_str("auto"),
        }
    }
}

/// `repair_server` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// `IPv4:port`.
    Addr(SocketAddrV4),
    /// `host:port`, resolved at start.
    Host(String, u16),
}

impl Server {
    /// Parse the config value; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Server, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            return Ok(Server::Addr(a));
        }
        let bad = || {
            format!("`{s}` is not IPv4:port or host:port (e.g. \"10.0.0.2:7855\", \"firmcast.lan:7855\")")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !host_ok || port == 0 {
            return Err(bad());
        }
        Ok(Server::Host(host.to_string(), port))
    }

    /// The address, if it needs no lookup.
    pub fn fixed(&self) -> Option<SocketAddrV4> {
        match self {
            Server::Addr(a) => Some(*a),
            Server::Host(..) => None,
        }
    }

    /// The port (for the placeholder until resolved).
    pub fn port(&self) -> u16 {
        match self {
            Server::Addr(a) => a.port(),
            Server::Host(_, p) => *p,
        }
    }

    /// One resolution (the system resolver: /etc/hosts, DNS) to an IPv4 address.
    pub fn lookup(&self) -> Result<SocketAddrV4, String> {
        match self {
            Server::Addr(a) => Ok(*a),
            Server::Host(host, port) => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?;
                addrs
                    .filter_map(|a| match a {
                        SocketAddr::V4(v4) => Some(v4),
                        SocketAddr::V6(_) => None,
                    })
                    .next()
                    .ok_or_else(|| format!("{host} has no IPv4 address"))
            }
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Addr(a) => write!(f, "{a}"),
            Server::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// How often [`resolve`] tries again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Fill in `cfg.interface` and `cfg.repair_server` from their specs,
/// trying again while `cfg.boot_window` lasts. The error is the exit code
/// (an interface without an address: 0, no update this boot, as for an
/// address that never comes up; a host name that does not resolve: 2) and
/// one line naming the config file and the key.
pub fn resolve(cfg: &mut Config) -> Result<(), (ExitCode, String)> {
    let until = Instant::now() + cfg.boot_window;
    let mut logged = false;
    loop {
        let r = cfg
            .interface_spec
            .lookup(cfg.group)
            .map_err(|why| ("interface", why))
            .and_then(|a| {
                Ok((
                    a,
                    cfg.repair_server_spec
                        .lookup()
                        .map_err(|w| ("repair_server", w))?,
                ))
            });
        match r {
            Ok((iface, server)) => {
                if cfg.interface_spec.fixed().is_none() || cfg.repair_server_spec.fixed().is_none()
                {
                    log::info!(
                        "interface {} is {iface}; repair server {} is {server}",
                        cfg.interface_spec,
                        cfg.repair_server_spec
                    );
                }
                cfg.interface = iface;
                cfg.repair_server = server;
                return Ok(());
            }
            Err((key, why)) => {
                let line = format!("config {}: key `{key}`: {why}", cfg.path.display());
                if Instant::now() >= until {
                    let code = if key == "interface" {
                        ExitCode::Ok
                    } else {
                        ExitCode::Usage
                    };
                    let line = format!(
                        "{line} (still, after the {} s boot window); no update this boot",
                        cfg.boot_window.as_secs()
                    );
                    return Err((code, line));
                }
                if !logged {
                    log::info!(
                        "{line}; retrying every {} ms within the boot window",
                        RETRY_EVERY.as_millis()
                    );
                    logged = true;
                }
                std::thread::sleep(RETRY_EVERY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_forms() {
        assert_eq!(Interface::parse("auto"), Ok(Interface::Auto));
        assert_eq!(
            Interface::parse(" br-lan "),
            Ok(Interface::Name("br-lan".into()))
        );
        assert_eq!(
            Interface::parse("eth0.2"),
            Ok(Interface::Name("eth0.2".into()))
        );
        assert_eq!(Interface::parse("0.0.0.0"), Ok(Interface::Any));
        assert_eq!(
            Interface::parse("10.0.0.3"),
            Ok(Interface::Addr(Ipv4Addr::new(10, 0, 0, 3)))
        );
        for bad in [
            "239.1.2.3",
            "",
            "a b",
            "10.0.0.300",
            "averyveryverylongname0",
            "eth/0",
        ] {
            assert!(Interface::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_lookup_by_name_and_route() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 7854);
        assert_eq!(
            Interface::Name("lo".into()).lookup(group),
            Ok(Ipv4Addr::LOCALHOST)
        );
        let e = Interface::Name("nosuch0".into())
            .lookup(group)
            .expect_err("missing");
        assert!(e.contains("nosuch0"), "{e}");
        // The route to 127.x is loopback whatever the host's network.
        let lo = Interface::Auto.lookup(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 7854));
        println!("auto for 127.0.0.9: {lo:?}");
        assert_eq!(lo, Ok(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn server_forms_and_lookup() {
        assert_eq!(
            Server::parse("10.0.0.2:7855"),
            Ok(Server::Addr("10.0.0.2:7855".parse().expect("addr")))
        );
        assert_eq!(
            Server::parse("firmcast.lan:7855"),
            Ok(Server::Host("firmcast.lan".into(), 7855))
        );
        for bad in [
            "firmcast.lan",
            "10.0.0.2",
            ":7855",
            "a b:1",
            "host:0",
            "host:99999",
            "1.2.3.400:7",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad:?}");
        }
        // /etc/hosts always has localhost.
        let a = Server::Host("localhost".into(), 7855)
            .lookup()
            .expect("localhost");
        assert_eq!(a, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7855));
        let e = Server::Host("no-such-host.invalid".into(), 1)
            .lookup()
            .expect_err("invalid");
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }
}

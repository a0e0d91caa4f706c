//! The network settings one firmware image can carry for a whole fleet:
//! `group`/`repair_group` as `IPv4:port` or `[IPv6]:port`, with `source`/
//! `repair_source` for a source-specific join (R-NET-1), `interface` as an
//! address, a name (`br-lan`) or `auto` (the interface of the route to the
//! data group), and `repair_server` as `IPv4:port`, `[IPv6]:port` or
//! `host:port`. A name or `auto` is turned into this device's address, and a
//! host name into an address of the groups' family, at start ([`resolve`]),
//! retried while the boot window lasts: at boot the link, its DHCP lease or
//! the resolver may not be up yet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crate::config::schema::key;
use crate::config::Config;
use crate::exit::ExitCode;

/// `interface` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// Not set or `0.0.0.0`: the kernel chooses.
    Any,
    /// An address of this device.
    Addr(IpAddr),
    /// An interface name (`eth0`, `br-lan`): its first address of the
    /// groups' family (for IPv6 a global or unique-local one first).
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
        if let Ok(a) = s.parse::<IpAddr>() {
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
                "`{s}` is not an IP address, an interface name or \"auto\" (e.g. \"192.168.1.1\", \"fd00::3\", \"br-lan\", \"auto\")"
            ))
        }
    }

    /// The address to bind and join on, if it needs no lookup (`Any`:
    /// `0.0.0.0`; [`Interface::fixed_for`] gives the groups' family).
    pub fn fixed(&self) -> Option<IpAddr> {
        match self {
            Interface::Any => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Interface::Addr(a) => Some(*a),
            Interface::Name(_) | Interface::Auto => None,
        }
    }

    /// As [`Interface::fixed`], with `Any` (and the placeholder until a
    /// lookup) the unspecified address of `group`'s family.
    pub fn fixed_for(&self, group: SocketAddr) -> IpAddr {
        match self {
            Interface::Addr(a) => *a,
            _ => mcast::unspecified(group.ip()),
        }
    }

    /// One lookup of this device's address for `self`, in the family of
    /// `group` (and for `auto`, on the route to it).
    pub fn lookup(&self, group: SocketAddr) -> Result<IpAddr, String> {
        let family = if group.is_ipv4() { "IPv4" } else { "IPv6" };
        match self {
            Interface::Any | Interface::Addr(_) => Ok(self.fixed_for(group)),
            Interface::Name(name) => mcast::addr_of(name, group.ip()).ok_or_else(|| {
                if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
                    format!("no interface named {name}")
                } else {
                    format!("interface {name} has no {family} address")
                }
            }),
            Interface::Auto => {
                // connect() on UDP sends nothing: the kernel only picks the
                // route, and with it the source address.
                let s = UdpSocket::bind((mcast::unspecified(group.ip()), 0))
                    .map_err(|e| format!("auto: socket: {e}"))?;
                s.connect(group)
                    .map_err(|e| format!("auto: no route to {}: {e}", group.ip()))?;
                match s.local_addr() {
                    Ok(a) if !a.ip().is_unspecified() => Ok(a.ip()),
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
    /// `IPv4:port` or `[IPv6]:port`.
    Addr(SocketAddr),
    /// `host:port`, resolved at start.
    Host(String, u16),
}

impl Server {
    /// Parse the config value; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Server, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Server::Addr(a));
        }
        let bad = || {
            format!("`{s}` is not IPv4:port, [IPv6]:port or host:port (e.g. \"10.0.0.2:7855\", \"[fd00::1]:7855\", \"firmcast.lan:7855\")")
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
    pub fn fixed(&self) -> Option<SocketAddr> {
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

    /// As [`Server::fixed`], else `unspecified:port` of `group`'s family
    /// (the placeholder until [`resolve`]).
    pub fn fixed_for(&self, group: SocketAddr) -> SocketAddr {
        self.fixed()
            .unwrap_or_else(|| SocketAddr::new(mcast::unspecified(group.ip()), self.port()))
    }

    /// One resolution (the system resolver: /etc/hosts, DNS) to an address
    /// of `group`'s family (A for IPv4 groups, AAAA for IPv6).
    pub fn lookup(&self, group: SocketAddr) -> Result<SocketAddr, String> {
        match self {
            Server::Addr(a) => Ok(*a),
            Server::Host(host, port) => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?;
                let mut addrs = addrs.filter(|a| a.is_ipv4() == group.is_ipv4());
                addrs.next().ok_or_else(|| {
                    let family = if group.is_ipv4() { "IPv4" } else { "IPv6" };
                    format!("{host} has no {family} address (the groups are {family})")
                })
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

/// Parse a `group` or `repair_group` value: a multicast `IPv4:port` or
/// `[IPv6]:port`; the error says what is accepted.
pub fn parse_group(s: &str, example: SocketAddr) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = s.parse::<SocketAddr>().map_err(|_| {
        format!("`{s}` is not IPv4:port or [IPv6]:port (e.g. \"{example}\", \"[ff15::77]:7854\")")
    })?;
    if !addr.ip().is_multicast() {
        return Err(format!(
            "{} is not a multicast address (224.0.0.0/4, ff00::/8)",
            addr.ip()
        ));
    }
    if addr.port() == 0 {
        return Err("port must not be 0".to_string());
    }
    Ok(addr)
}

/// Parse a `source` or `repair_source` value: the unicast address the
/// group's datagrams come from.
pub fn parse_source(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    match s.parse::<IpAddr>() {
        Ok(a) if !a.is_multicast() && !a.is_unspecified() => Ok(a),
        _ => Err(format!(
            "`{s}` is not the unicast address of a sender (e.g. \"10.0.0.1\", \"fd00::1\")"
        )),
    }
}

/// The addresses of one configuration, checked together (R-NET-1): one
/// family for groups, sources, interface and repair server, and a source
/// for a group in a source-specific range. The error names the key.
pub struct Addresses<'a> {
    /// `group`.
    pub group: SocketAddr,
    /// `source`.
    pub source: Option<IpAddr>,
    /// `repair_group`.
    pub repair_group: SocketAddr,
    /// `repair_source`.
    pub repair_source: Option<IpAddr>,
    /// `interface`.
    pub interface: &'a Interface,
    /// `repair_server`.
    pub repair_server: &'a Server,
}

impl Addresses<'_> {
    /// `Err((key, why))` for the first key that does not fit.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let v4 = self.group.is_ipv4();
        let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
        let mine = family(self.group.ip());
        let other = |key: &'static str, a: IpAddr| {
            (
                key,
                format!(
                    "{a} is {}, but group {} is {mine}: use one address family throughout",
                    family(a),
                    self.group
                ),
            )
        };
        if self.repair_group.is_ipv4() != v4 {
            return Err(other(key::repair_group, self.repair_group.ip()));
        }
        for (key, a) in [
            (key::source, self.source),
            (key::repair_source, self.repair_source),
        ] {
            match a {
                Some(a) if a.is_ipv4() != v4 => return Err(other(key, a)),
                _ => {}
            }
        }
        if let Interface::Addr(a) = self.interface {
            if a.is_ipv4() != v4 {
                return Err(other(key::interface, *a));
            }
        }
        if let Server::Addr(a) = self.repair_server {
            if a.is_ipv4() != v4 {
                return Err(other(key::repair_server, a.ip()));
            }
        }
        if self.source.is_none() && mcast::is_ssm(self.group.ip()) {
            return Err((
                key::source,
                format!(
                    "group {} is in the source-specific range ({}): set source = \"ADDR\", the sender's address",
                    self.group,
                    if v4 { "232.0.0.0/8" } else { "ff3x::/32" }
                ),
            ));
        }
        Ok(())
    }
}

/// The IPv4 address of `interface` for picking the link the device id
/// comes from; unspecified (pick as for `0.0.0.0`) for IPv6 or a lookup.
pub fn v4_or_any(interface: &Interface) -> Ipv4Addr {
    match interface.fixed() {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// The source to join `repair_group` from (R-NET-1): `repair_source` if
/// set, else for a group in a source-specific range the repair server's
/// address, else none (any source).
pub fn repair_source(cfg: &Config) -> Option<IpAddr> {
    cfg.repair_source
        .or_else(|| mcast::is_ssm(cfg.repair_group.ip()).then(|| cfg.repair_server.ip()))
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
            .map_err(|why| (key::interface, why))
            .and_then(|a| {
                Ok((
                    a,
                    cfg.repair_server_spec
                        .lookup(cfg.group)
                        .map_err(|w| (key::repair_server, w))?,
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
            Err((at, why)) => {
                let line = format!("config {}: key `{at}`: {why}", cfg.path.display());
                if Instant::now() >= until {
                    let code = if at == key::interface {
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
                        crate::logger::millis(RETRY_EVERY)
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
            Ok(Interface::Addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))))
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
        let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, 1), 7854));
        assert_eq!(
            Interface::Name("lo".into()).lookup(group),
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        let v6: SocketAddr = "[ff15::77]:7854".parse().expect("group");
        assert_eq!(
            Interface::Name("lo".into()).lookup(v6),
            Ok("::1".parse().expect("::1"))
        );
        assert_eq!(Interface::Any.lookup(v6), Ok("::".parse().expect("::")));
        let e = Interface::Name("nosuch0".into())
            .lookup(group)
            .expect_err("missing");
        assert!(e.contains("nosuch0"), "{e}");
        // The route to 127.x is loopback whatever the host's network.
        let lo = Interface::Auto.lookup(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 9), 7854)));
        println!("auto for 127.0.0.9: {lo:?}");
        assert_eq!(lo, Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
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
        let v4: SocketAddr = "239.255.77.1:7854".parse().expect("group");
        let a = Server::Host("localhost".into(), 7855)
            .lookup(v4)
            .expect("localhost");
        assert_eq!(a, SocketAddr::from((Ipv4Addr::LOCALHOST, 7855)));
        let e = Server::Host("no-such-host.invalid".into(), 1)
            .lookup(v4)
            .expect_err("invalid");
        assert!(e.contains("no-such-host.invalid"), "{e}");
        assert_eq!(
            Server::parse("[fd00::1]:7855"),
            Ok(Server::Addr("[fd00::1]:7855".parse().expect("addr")))
        );
        // A host name resolves in the groups' family only.
        let v6: SocketAddr = "[ff15::77]:7854".parse().expect("group");
        let e = Server::Host("127.0.0.1.nip".into(), 1).lookup(v6);
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn group_and_source_forms() {
        let ex: SocketAddr = "239.255.77.1:7854".parse().expect("ex");
        for ok in ["232.1.2.3:7854", "[ff3e::8000:1]:7854", "[ff15::77]:7854"] {
            assert_eq!(parse_group(ok, ex), Ok(ok.parse().expect("addr")), "{ok}");
        }
        for (bad, why) in [
            ("10.0.0.1:7854", "not a multicast address"),
            ("[fd00::1]:7854", "not a multicast address"),
            ("ff15::77:7854", "[IPv6]:port"),
            ("239.1.1.1:0", "port"),
        ] {
            let e = parse_group(bad, ex).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            parse_source(" 10.0.0.1 "),
            Ok("10.0.0.1".parse().expect("a"))
        );
        assert_eq!(parse_source("fd00::1"), Ok("fd00::1".parse().expect("a")));
        for bad in ["232.1.1.1", "::", "0.0.0.0", "host"] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    fn addrs<'a>(g: &str, src: Option<&str>, rg: &str, server: &'a Server) -> Addresses<'a> {
        Addresses {
            group: g.parse().expect("g"),
            source: src.map(|s| s.parse().expect("src")),
            repair_group: rg.parse().expect("rg"),
            repair_source: None,
            interface: &Interface::Any,
            repair_server: server,
        }
    }

    /// R-NET-1: a group in a source-specific range needs a source; one
    /// family throughout; the error names the key.
    #[test]
    fn addresses_checked_together() {
        let server = &Server::Addr("10.0.0.2:7855".parse().expect("s"));
        let server6 = &Server::Addr("[fd00::2]:7855".parse().expect("s"));
        let a = addrs;
        assert_eq!(
            a("239.1.1.1:1", None, "239.1.1.2:2", server).check(),
            Ok(())
        );
        assert_eq!(
            a("232.1.1.1:1", Some("10.0.0.1"), "232.1.1.2:2", server).check(),
            Ok(())
        );
        assert_eq!(
            a("[ff3e::1]:1", Some("fd00::1"), "[ff15::2]:2", server6).check(),
            Ok(())
        );
        let cases = [
            (
                a("232.1.1.1:1", None, "239.1.1.2:2", server),
                "source",
                "232.0.0.0/8",
            ),
            (
                a("[ff3e::1]:1", None, "[ff15::2]:2", server6),
                "source",
                "ff3x::/32",
            ),
            (
                a("239.1.1.1:1", None, "[ff15::2]:2", server),
                "repair_group",
                "family",
            ),
            (
                a("239.1.1.1:1", Some("fd00::1"), "239.1.1.2:2", server),
                "source",
                "family",
            ),
            (
                a("[ff15::1]:1", None, "[ff15::2]:2", server),
                "repair_server",
                "family",
            ),
        ];
        for (addrs, key, why) in cases {
            let (k, e) = addrs.check().expect_err(key);
            println!("{k}: {e}");
            assert_eq!(k, key, "{e}");
            assert!(e.contains(why), "{e}");
        }
    }
}

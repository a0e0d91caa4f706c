//! Multicast membership for both address families, shared by the agent and
//! the operator CLI so the two join alike (R-NET-1..4):
//!
//! ```text
//!  family  any-source join          source-specific join (SSM)
//!  IPv4    IP_ADD_MEMBERSHIP        IP_ADD_SOURCE_MEMBERSHIP   (IGMPv3)
//!  IPv6    IPV6_ADD_MEMBERSHIP      MCAST_JOIN_SOURCE_GROUP    (MLDv2)
//! ```
//!
//! An IPv4 interface is named by its address, an IPv6 one by its index
//! (found from its address, [`ifindex_of`]). The only `unsafe` is the one
//! `setsockopt` for the IPv6 source-specific join in `sys`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use socket2::{Domain, Socket};

mod sys;

/// R-NET-1: the source-specific ranges, where only (S,G) joins are routed:
/// 232.0.0.0/8 and ff3x::/32 (RFC 4607).
pub fn is_ssm(group: IpAddr) -> bool {
    match group {
        IpAddr::V4(a) => a.octets()[0] == 232,
        IpAddr::V6(a) => a.segments()[0] & 0xfff0 == 0xff30,
    }
}

/// The socket domain of `addr`'s family.
pub fn domain(addr: IpAddr) -> Domain {
    match addr {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    }
}

/// The unspecified address of `like`'s family (`0.0.0.0` or `::`).
pub fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// This host's addresses, by interface name and index (empty when unreadable).
pub fn host_addrs() -> Vec<(String, u32, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let sa = a.address.as_ref()?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            let index = nix::net::if_::if_nametoindex(a.interface_name.as_str()).unwrap_or(0);
            Some((a.interface_name, index, ip))
        })
        .collect()
}

/// The index of the interface holding `addr` (0 for the unspecified
/// address: the kernel chooses).
pub fn ifindex_of(addr: IpAddr) -> io::Result<u32> {
    if addr.is_unspecified() {
        return Ok(0);
    }
    host_addrs()
        .into_iter()
        .find(|(_, _, a)| *a == addr)
        .map(|(_, index, _)| index)
        .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL))
}

/// The address an interface called `name` has in the family of `like`:
/// for IPv6 a global or unique-local one before a link-local one.
pub fn addr_of(name: &str, like: IpAddr) -> Option<IpAddr> {
    preferred(
        host_addrs()
            .into_iter()
            .filter(|(n, _, a)| n == name && a.is_ipv4() == like.is_ipv4())
            .map(|(_, _, a)| a),
    )
}

/// The first address that is not IPv6 link-local, else the first one. A
/// loop, not a sort: a sort's generic code would land in the device binary.
fn preferred(addrs: impl Iterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut link_local = None;
    for a in addrs {
        match a {
            IpAddr::V6(v6) if is_link_local(v6) => {
                link_local.get_or_insert(a);
            }
            _ => return Some(a),
        }
    }
    link_local
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `addr:port` as a socket address, with the scope (interface index) a
/// link-local IPv6 address needs to be bound.
pub fn bind_addr(addr: IpAddr, port: u16) -> SocketAddr {
    match addr {
        IpAddr::V6(v6) if is_link_local(v6) => SocketAddr::V6(SocketAddrV6::new(
            v6,
            port,
            0,
            ifindex_of(addr).unwrap_or(0),
        )),
        _ => SocketAddr::new(addr, port),
    }
}

/// A UDP socket of `addr`'s family; an IPv6 one carries IPv6 only.
pub fn udp(addr: IpAddr) -> io::Result<Socket> {
    let s = Socket::new(
        domain(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// Join `group` on the interface with address `iface` (unspecified: the
/// kernel chooses), from `source` only when given (R-NET-2).
pub fn join(sock: &Socket, group: IpAddr, source: Option<IpAddr>, iface: IpAddr) -> io::Result<()> {
    match (group, source, iface) {
        (IpAddr::V4(g), None, IpAddr::V4(i)) => sock.join_multicast_v4(&g, &i),
        (IpAddr::V4(g), Some(IpAddr::V4(s)), IpAddr::V4(i)) => sock.join_ssm_v4(&s, &g, &i),
        (IpAddr::V6(g), None, IpAddr::V6(_)) => sock.join_multicast_v6(&g, ifindex_of(iface)?),
        (IpAddr::V6(g), Some(IpAddr::V6(s)), IpAddr::V6(_)) => {
            sys::source_group(sock, sys::Op::Join, g, s, ifindex_of(iface)?)
        }
        _ => Err(mixed()),
    }
}

/// Leave what [`join`] joined.
pub fn leave(
    sock: &Socket,
    group: IpAddr,
    source: Option<IpAddr>,
    iface: IpAddr,
) -> io::Result<()> {
    match (group, source, iface) {
        (IpAddr::V4(g), None, IpAddr::V4(i)) => sock.leave_multicast_v4(&g, &i),
        (IpAddr::V4(g), Some(IpAddr::V4(s)), IpAddr::V4(i)) => sock.leave_ssm_v4(&s, &g, &i),
        (IpAddr::V6(g), None, IpAddr::V6(_)) => sock.leave_multicast_v6(&g, ifindex_of(iface)?),
        (IpAddr::V6(g), Some(IpAddr::V6(s)), IpAddr::V6(_)) => {
            sys::source_group(sock, sys::Op::Leave, g, s, ifindex_of(iface)?)
        }
        _ => Err(mixed()),
    }
}

/// Send multicast out of the interface with address `iface`, `hops` routers
/// far (the IPv4 TTL, the IPv6 hop limit; R-NET-4), looped back to this host
/// (devices may share it).
pub fn set_sending(sock: &Socket, iface: IpAddr, hops: u32) -> io::Result<()> {
    match iface {
        IpAddr::V4(i) => {
            sock.set_multicast_if_v4(&i)?;
            sock.set_multicast_loop_v4(true)?;
            sock.set_multicast_ttl_v4(hops)
        }
        IpAddr::V6(_) => {
            sock.set_multicast_if_v6(ifindex_of(iface)?)?;
            sock.set_multicast_loop_v6(true)?;
            sock.set_multicast_hops_v6(hops)
        }
    }
}

fn mixed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "group, source and interface must all be IPv4 or all IPv6",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssm_ranges() {
        for (a, ssm) in [
            ("232.1.2.3", true),
            ("239.255.77.1", false),
            ("231.255.255.255", false),
            ("ff3e::8000:1", true),
            ("ff35::1", true),
            ("ff15::77", false),
            ("ff02::1", false),
        ] {
            assert_eq!(is_ssm(a.parse().expect("addr")), ssm, "{a}");
        }
    }

    #[test]
    fn a_global_or_unique_local_address_before_a_link_local_one() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("addr");
        let pick = |list: &[&str]| preferred(list.iter().map(|s| ip(s)));
        assert_eq!(
            pick(&["fe80::1", "fd77::1", "2001:db8::1"]),
            Some(ip("fd77::1"))
        );
        assert_eq!(pick(&["fe80::1", "fe80::2"]), Some(ip("fe80::1")));
        assert_eq!(pick(&["10.0.0.1", "10.0.0.2"]), Some(ip("10.0.0.1")));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn loopback_index_and_family_mismatch() {
        let lo = ifindex_of(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("lo");
        assert!(lo > 0, "{lo}");
        assert_eq!(
            ifindex_of("0.0.0.0".parse().expect("addr")).expect("any"),
            0
        );
        assert!(ifindex_of("203.0.113.77".parse().expect("addr")).is_err());
        let s = udp(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("socket");
        let e = join(
            &s,
            "232.1.1.1".parse().expect("g"),
            Some("::1".parse().expect("s")),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
        .expect_err("mixed");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// R-NET-2: a source-specific join on loopback is accepted for IPv4;
    /// the IPv6 one is checked in a namespace by the integration tests.
    #[test]
    fn ssm_join_and_leave_v4() {
        let s = udp(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("socket");
        let g = "232.77.0.9".parse().expect("g");
        let src = Some("127.0.0.1".parse().expect("s"));
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        join(&s, g, src, lo).expect("join");
        leave(&s, g, src, lo).expect("leave");
    }
}

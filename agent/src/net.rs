//! The agent's three UDP sockets, all non-blocking, all of the groups'
//! address family (IPv4 or IPv6):
//!
//! ```text
//!  data    bound to group:port         join (source, group) on interface    carousel
//!  repair  bound to repair_group:port  join (repair source, repair group)   multicast repairs
//!  unicast bound to interface:0        sends NACK + Status, receives unicast repairs
//! ```
//!
//! A join with a source is source-specific (IGMPv3 / MLDv2, R-NET-2);
//! [`mcast`] does the joining for both families.
//!
//! Only repair Data may arrive on the unicast socket ([`unicast_admissible`],
//! R-LOCAL-4): the rest of the protocol comes over the groups, so an
//! Announce, manifest chunk, NACK or Status sent to a device's own port is
//! someone talking past the sender, and is dropped and counted.
//!
//! The group sockets set SO_REUSEADDR and SO_REUSEPORT so several agents on
//! one host all receive the groups; binding to the group address (not
//! INADDR_ANY) keeps other groups on the same port out.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{SockRef, Socket};

use crate::config::Config;

/// The sockets of one agent.
#[derive(Debug)]
pub struct Sockets {
    /// Data group.
    pub data: UdpSocket,
    /// Repair group.
    pub repair: UdpSocket,
    /// Unicast: NACK/Status out, unicast repairs in.
    pub unicast: UdpSocket,
    /// SO_RCVBUF the kernel granted on the group sockets (as read back).
    pub rcvbuf_effective: usize,
}

/// Which step of [`open`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// The interface address does not exist (yet): binding to it or joining on it failed.
    /// Worth retrying while the boot window lasts.
    Interface(String),
    /// Anything else (permissions, bad addresses): retrying will not help.
    Fatal(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Interface(s) | OpenError::Fatal(s) => f.write_str(s),
        }
    }
}

/// What the agent joins, and where: the memberships of one [`Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    /// The data group.
    pub data: SocketAddr,
    /// Its source, for a source-specific join.
    pub data_source: Option<IpAddr>,
    /// The repair group.
    pub repair: SocketAddr,
    /// Its source ([`crate::netspec::repair_source`]).
    pub repair_source: Option<IpAddr>,
    /// The interface address to join on (unspecified: the kernel chooses).
    pub interface: IpAddr,
}

impl Groups {
    /// The memberships `cfg` asks for (after [`crate::netspec::resolve`]).
    pub fn of(cfg: &Config) -> Groups {
        Groups {
            data: cfg.group,
            data_source: cfg.source,
            repair: cfg.repair_group,
            repair_source: crate::netspec::repair_source(cfg),
            interface: cfg.interface,
        }
    }
}

impl Groups {
    /// R-NET-5: the line for a boot window of `cfg` that ended without one
    /// datagram on the data group.
    pub fn nothing_heard(&self, cfg: &Config) -> String {
        let via = match &cfg.interface_spec {
            crate::netspec::Interface::Name(n) => format!("{n} ({})", cfg.interface),
            _ => cfg.interface.to_string(),
        };
        let window_secs = cfg.boot_window.as_secs();
        let source = self
            .data_source
            .map(|s| format!(" (source {s})"))
            .unwrap_or_default();
        format!(
            "nothing received on {} via {via} within {window_secs} s: check IGMP/MLD snooping and multicast routing{source}",
            self.data
        )
    }
}

/// One membership as `(S,G)` or `G`.
struct Membership(IpAddr, Option<IpAddr>);

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(s) => write!(f, "({s},{})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for Groups {
    /// `(S,G) and G` as joined.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} and {}",
            Membership(self.data.ip(), self.data_source),
            Membership(self.repair.ip(), self.repair_source)
        )
    }
}

fn udp(like: IpAddr) -> io::Result<Socket> {
    mcast::udp(like)
}

/// Set SO_RCVBUF to `bytes` and return what the kernel granted (Linux reports
/// twice the usable size, capped by `net.core.rmem_max`).
pub fn set_rcvbuf(sock: &Socket, bytes: usize) -> io::Result<usize> {
    sock.set_recv_buffer_size(bytes)?;
    sock.recv_buffer_size()
}

/// A non-blocking socket bound to `group` with address reuse, not yet joined.
pub fn group_socket(group: SocketAddr, rcvbuf: usize) -> io::Result<(Socket, usize)> {
    let s = udp(group.ip())?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let granted = set_rcvbuf(&s, rcvbuf)?;
    s.bind(&group.into())?;
    s.set_nonblocking(true)?;
    Ok((s, granted))
}

/// A non-blocking socket bound to `interface:0`.
pub fn unicast_socket(interface: IpAddr, rcvbuf: usize) -> io::Result<Socket> {
    let s = udp(interface)?;
    let _ = set_rcvbuf(&s, rcvbuf)?;
    s.bind(&mcast::bind_addr(interface, 0).into())?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn is_interface_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::EADDRNOTAVAIL
                | nix::libc::ENODEV
                | nix::libc::ENETUNREACH
                | nix::libc::ENETDOWN
        )
    )
}

/// One attempt at opening and joining everything. The caller retries on
/// [`OpenError::Interface`] while the boot window lasts.
pub fn open(groups: &Groups, rcvbuf: usize) -> Result<Sockets, OpenError> {
    let Groups {
        data: group,
        data_source,
        repair: repair_group,
        repair_source,
        interface,
    } = *groups;
    let classify = |what: String, e: io::Error| {
        if is_interface_error(&e) {
            OpenError::Interface(format!("{what}: {e}"))
        } else {
            OpenError::Fatal(format!("{what}: {e}"))
        }
    };
    let unicast = unicast_socket(interface, rcvbuf)
        .map_err(|e| classify(format!("bind {interface}:0"), e))?;
    let (data, granted) =
        group_socket(group, rcvbuf).map_err(|e| OpenError::Fatal(format!("bind {group}: {e}")))?;
    let join = |sock: &Socket, g: SocketAddr, source: Option<IpAddr>| {
        mcast::join(sock, g.ip(), source, interface).map_err(|e| {
            classify(
                format!("join {} on {interface}", Membership(g.ip(), source)),
                e,
            )
        })
    };
    join(&data, group, data_source)?;
    let (repair, _) = group_socket(repair_group, rcvbuf)
        .map_err(|e| OpenError::Fatal(format!("bind {repair_group}: {e}")))?;
    join(&repair, repair_group, repair_source)?;
    Ok(Sockets {
        data: data.into(),
        repair: repair.into(),
        unicast: unicast.into(),
        rcvbuf_effective: granted,
    })
}

impl Sockets {
    /// Leave and join both groups again: the kernel sends a fresh
    /// membership report for each ([`crate::rejoin`]).
    pub fn rejoin(&self, groups: &Groups) -> io::Result<()> {
        for (sock, g, source) in [
            (&self.data, groups.data, groups.data_source),
            (&self.repair, groups.repair, groups.repair_source),
        ] {
            let sock = SockRef::from(sock);
            // Not joined any more (e.g. the interface went away and came
            // back): the join below is what counts.
            let _ = mcast::leave(&sock, g.ip(), source, groups.interface);
            mcast::join(&sock, g.ip(), source, groups.interface)?;
        }
        Ok(())
    }
}

/// R-LOCAL-4: what may arrive on the unicast socket: Data with
/// `FLAG_REPAIR` (a repair server answering this device's NACK).
pub fn unicast_admissible(datagram: &[u8]) -> bool {
    use proto::wire::{FrameKind, Header, FLAG_REPAIR};
    Header::parse(datagram).is_ok_and(|h| h.kind == FrameKind::Data && h.flags & FLAG_REPAIR != 0)
}

/// One datagram from a non-blocking socket: `Ok(None)` when none is waiting.
pub fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    loop {
        match sock.recv_from(buf) {
            Ok((n, from)) => return Ok(Some((n, from))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn unicast_socket_round_trip_and_nonblocking() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = UdpSocket::from(unicast_socket(lo, 65536).expect("a"));
        let b = UdpSocket::from(unicast_socket(lo, 65536).expect("b"));
        let mut buf = [0u8; 64];
        assert!(recv(&b, &mut buf).expect("empty").is_none());
        a.send_to(b"hi", b.local_addr().expect("addr"))
            .expect("send");
        // Loopback delivery is synchronous, but allow the kernel a moment.
        let mut got = None;
        for _ in 0..100 {
            got = recv(&b, &mut buf).expect("recv");
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (n, from) = got.expect("datagram");
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, a.local_addr().expect("addr"));
    }

    /// R-LOCAL-4: only repair Data passes the unicast socket's filter.
    #[test]
    fn unicast_socket_admits_only_repair_data() {
        use proto::wire::{FrameKind, Header, ImageId, FLAG_PARITY, FLAG_REPAIR, HEADER_LEN};
        let frame = |kind, flags| {
            let mut b = [0u8; HEADER_LEN];
            Header {
                kind,
                flags,
                session: 7,
                image_id: ImageId([1; 8]),
            }
            .emit(&mut b);
            b.to_vec()
        };
        assert!(unicast_admissible(&frame(FrameKind::Data, FLAG_REPAIR)));
        assert!(unicast_admissible(&frame(
            FrameKind::Data,
            FLAG_REPAIR | FLAG_PARITY
        )));
        let refused = [
            frame(FrameKind::Data, 0),
            frame(FrameKind::Announce, 0),
            frame(FrameKind::ManifestChunk, 0),
            frame(FrameKind::Nack, 0),
            frame(FrameKind::Status, 0),
            b"junk".to_vec(),
        ];
        for f in &refused {
            assert!(!unicast_admissible(f), "{f:?}");
        }
        println!(
            "unicast socket: {} of {} non-repair frame kinds dropped",
            refused.len(),
            refused.len()
        );
    }

    #[test]
    fn missing_interface_address_is_retryable() {
        // TEST-NET-3: never configured on a test host.
        let e = open(
            &Groups {
                data: "239.255.77.9:17854".parse().expect("group"),
                data_source: None,
                repair: "239.255.77.10:17855".parse().expect("group"),
                repair_source: None,
                interface: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77)),
            },
            65536,
        )
        .expect_err("no such interface");
        assert!(matches!(e, OpenError::Interface(_)), "{e}");
    }

    #[test]
    fn rcvbuf_reads_back_granted_size() {
        let s = udp(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("socket");
        let granted = set_rcvbuf(&s, 65536).expect("rcvbuf");
        assert!(granted >= 4096, "{granted}");
    }
}

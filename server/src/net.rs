//! The I/O half of the shell: the monotonic clock as `proto::Instant`, UDP
//! sockets set up for multicast (IPv4 or IPv6, any-source or
//! source-specific joins through [`mcast`]), draining a socket, waiting for
//! the next deadline or a readable socket, and the SIGINT/SIGTERM flag.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::{runtime, Error};

/// Microseconds since the shell started, as the state machines' clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current instant.
    pub fn now(&self) -> proto::Instant {
        proto::Instant::from_micros(
            u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX),
        )
    }

    /// Seconds since the origin.
    pub fn secs(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}

/// Require a multicast group address and port (IPv4 or IPv6) of the family
/// of `--interface` (`interface`), naming the flag.
pub fn group(addr: SocketAddr, flag: &str, interface: IpAddr) -> Result<SocketAddr, Error> {
    if !addr.ip().is_multicast() || addr.port() == 0 {
        return Err(crate::error::config(format!(
            "{flag} {addr}: expected a multicast group and port, e.g. 239.255.77.1:7854 or [ff15::77]:7854"
        )));
    }
    same_family(addr.ip(), flag, interface)?;
    Ok(addr)
}

/// Require `addr` (given with `flag`) in the family of `--interface`.
pub fn same_family(addr: IpAddr, flag: &str, interface: IpAddr) -> Result<(), Error> {
    if addr.is_ipv4() == interface.is_ipv4() {
        return Ok(());
    }
    Err(crate::error::config(format!(
        "{flag} {addr} and --interface {interface}: use one address family (IPv4 or IPv6) for both"
    )))
}

/// The source to join `group` from (R-NET-1): `source` (given with `flag`),
/// required for a group in a source-specific range (232/8, ff3x::/32).
pub fn group_source(
    group: SocketAddr,
    group_flag: &str,
    source: Option<IpAddr>,
    flag: &str,
) -> Result<Option<IpAddr>, Error> {
    match source {
        Some(s) if s.is_ipv4() != group.is_ipv4() || s.is_multicast() => {
            Err(crate::error::config(format!(
                "{flag} {s}: must be a unicast address of the family of {group_flag} {group}"
            )))
        }
        None if mcast::is_ssm(group.ip()) => Err(crate::error::config(format!(
            "{group_flag} {group} is source-specific (232.0.0.0/8, ff3x::/32): give {flag} ADDR, the address its datagrams come from"
        ))),
        s => Ok(s),
    }
}

/// A non-blocking UDP socket bound to `bind`, sending multicast out of
/// `interface` `ttl` routers far (the IPv6 hop limit: R-NET-4), multicast
/// loop on (devices may share the host).
pub fn multicast_socket(bind: SocketAddr, interface: IpAddr, ttl: u32) -> Result<UdpSocket, Error> {
    let ctx = |what: &str, e: io::Error| runtime(format!("{what}: {e}"));
    let sock = mcast::udp(interface).map_err(|e| ctx("creating UDP socket", e))?;
    mcast::set_sending(&sock, interface, ttl).map_err(|e| {
        ctx(
            &format!(
                "--interface {interface} --ttl {ttl}: setting the multicast interface and hops"
            ),
            e,
        )
    })?;
    // Room for bursts of Status/NACK replies from a large fleet.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&bind.into())
        .map_err(|e| ctx(&format!("binding {bind}"), e))?;
    sock.set_nonblocking(true)
        .map_err(|e| ctx("setting non-blocking mode", e))?;
    Ok(sock.into())
}

/// A non-blocking socket that hears `group` on `interface` (the other
/// process's traffic, R-REP-11/12), bound with address reuse beside the
/// agents or tools on the same host, with a receive buffer of `rcvbuf` bytes:
/// what does not fit between two turns of the loop is dropped by the kernel,
/// which is all right for a listener that only needs recent samples.
pub fn group_listener(
    group: SocketAddr,
    source: Option<IpAddr>,
    interface: IpAddr,
    rcvbuf: usize,
) -> Result<UdpSocket, Error> {
    let ctx = |what: String, e: io::Error| runtime(format!("{what}: {e}"));
    let sock = mcast::udp(interface).map_err(|e| ctx("creating UDP socket".into(), e))?;
    sock.set_reuse_address(true)
        .map_err(|e| ctx("setting SO_REUSEADDR".into(), e))?;
    sock.set_reuse_port(true)
        .map_err(|e| ctx("setting SO_REUSEPORT".into(), e))?;
    let _ = sock.set_recv_buffer_size(rcvbuf);
    sock.bind(&group.into())
        .map_err(|e| ctx(format!("binding {group}"), e))?;
    mcast::join(&sock, group.ip(), source, interface).map_err(|e| {
        let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
        ctx(format!("joining {}{from} on {interface}", group.ip()), e)
    })?;
    sock.set_nonblocking(true)
        .map_err(|e| ctx("setting non-blocking mode".into(), e))?;
    Ok(sock.into())
}

/// Receive every datagram waiting on `sock` (non-blocking), handing each to `f`.
pub fn drain(
    sock: &UdpSocket,
    buf: &mut [u8],
    mut f: impl FnMut(SocketAddr, &[u8]),
) -> Result<(), Error> {
    // Bounded, so a flood cannot starve the sending side.
    for _ in 0..4096 {
        match sock.recv_from(buf) {
            Ok((n, from)) => f(from, &buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return Ok(())
            }
            // ICMP errors from an earlier unicast send surface here; not fatal.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(runtime(format!("receiving: {e}"))),
        }
    }
    Ok(())
}

/// Sleep until `deadline` or until `sock` is readable. Short waits use a
/// precise sleep (socket timeouts tick in jiffies, which would break pacing);
/// longer ones block in `recv` with a timeout and hand any datagram to `f`.
pub fn wait(
    sock: &UdpSocket,
    clock: &Clock,
    deadline: proto::Instant,
    buf: &mut [u8],
    mut f: impl FnMut(SocketAddr, &[u8]),
) -> Result<(), Error> {
    let now = clock.now();
    let micros = deadline.as_micros().saturating_sub(now.as_micros());
    if micros == 0 {
        return Ok(());
    }
    let wait = Duration::from_micros(micros);
    if wait < Duration::from_millis(5) {
        std::thread::sleep(wait);
        return Ok(());
    }
    let set = |nb: bool| {
        sock.set_nonblocking(nb)
            .map_err(|e| runtime(format!("socket mode: {e}")))
    };
    set(false)?;
    sock.set_read_timeout(Some(wait))
        .map_err(|e| runtime(format!("socket timeout: {e}")))?;
    let result = sock.recv_from(buf);
    set(true)?;
    match result {
        Ok((n, from)) => f(from, &buf[..n]),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock
                    | ErrorKind::TimedOut
                    | ErrorKind::Interrupted
                    | ErrorKind::ConnectionRefused
            ) => {}
        Err(e) => return Err(runtime(format!("receiving: {e}"))),
    }
    Ok(())
}

/// Send one datagram, retrying briefly while the socket buffer is full.
pub fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match sock.send_to(bytes, to) {
            Ok(_) => return Ok(()),
            Err(e)
                if (e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted)
                    && tries < 200 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A flag set by SIGINT/SIGTERM (installed once per process).
pub fn interrupted() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        if let Err(e) = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst)) {
            log::warn!("cannot install the SIGINT/SIGTERM handler: {e}");
        }
        flag
    })
    .clone()
}

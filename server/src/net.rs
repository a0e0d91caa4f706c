//! The I/O half of the shell: the monotonic clock as `proto::Instant`, UDP
//! sockets set up for multicast, draining a socket, waiting for the next
//! deadline or a readable socket, and the SIGINT/SIGTERM flag.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

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

/// Require an IPv4 address (multicast here is IPv4), naming the flag.
pub fn ipv4(addr: IpAddr, flag: &str) -> Result<Ipv4Addr, Error> {
    match addr {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(crate::error::config(format!(
            "{flag} {addr}: only IPv4 is supported"
        ))),
    }
}

/// Require an IPv4 multicast group address, naming the flag.
pub fn group(addr: SocketAddr, flag: &str) -> Result<SocketAddrV4, Error> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() && a.port() != 0 => Ok(a),
        _ => Err(crate::error::config(format!(
            "{flag} {addr}: expected an IPv4 multicast group and port, e.g. 239.255.77.1:7854"
        ))),
    }
}

/// A non-blocking UDP socket bound to `bind`, sending multicast out of
/// `interface` with `ttl`, multicast loop on (devices may share the host).
pub fn multicast_socket(
    bind: SocketAddrV4,
    interface: Ipv4Addr,
    ttl: u32,
) -> Result<UdpSocket, Error> {
    let ctx = |what: &str, e: io::Error| runtime(format!("{what}: {e}"));
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ctx("creating UDP socket", e))?;
    sock.set_multicast_if_v4(&interface).map_err(|e| {
        ctx(
            &format!("--interface {interface}: setting IP_MULTICAST_IF"),
            e,
        )
    })?;
    sock.set_multicast_loop_v4(true)
        .map_err(|e| ctx("setting IP_MULTICAST_LOOP", e))?;
    sock.set_multicast_ttl_v4(ttl)
        .map_err(|e| ctx(&format!("--ttl {ttl}"), e))?;
    // Room for bursts of Status/NACK replies from a large fleet.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&SocketAddr::V4(bind).into())
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
    group: SocketAddrV4,
    interface: Ipv4Addr,
    rcvbuf: usize,
) -> Result<UdpSocket, Error> {
    let ctx = |what: String, e: io::Error| runtime(format!("{what}: {e}"));
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ctx("creating UDP socket".into(), e))?;
    sock.set_reuse_address(true)
        .map_err(|e| ctx("setting SO_REUSEADDR".into(), e))?;
    sock.set_reuse_port(true)
        .map_err(|e| ctx("setting SO_REUSEPORT".into(), e))?;
    let _ = sock.set_recv_buffer_size(rcvbuf);
    sock.bind(&SocketAddr::V4(group).into())
        .map_err(|e| ctx(format!("binding {group}"), e))?;
    sock.join_multicast_v4(group.ip(), &interface)
        .map_err(|e| ctx(format!("joining {} on {interface}", group.ip()), e))?;
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

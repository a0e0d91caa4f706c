//! The IPv6 source-specific join (MCAST_JOIN_SOURCE_GROUP, RFC 3678), which
//! socket2 does not wrap: the one `setsockopt` with a `group_source_req`.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use nix::libc;
use socket2::Socket;

/// Join or leave.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Join,
    Leave,
}

fn storage(addr: Ipv6Addr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        sin6_scope_id: 0,
    };
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
    unsafe {
        std::ptr::write(
            std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in6>(),
            sin6,
        );
    }
    ss
}

/// (S,G) membership on interface `index` of an IPv6 socket.
pub fn source_group(
    sock: &Socket,
    op: Op,
    group: Ipv6Addr,
    source: Ipv6Addr,
    index: u32,
) -> io::Result<()> {
    let req = libc::group_source_req {
        gsr_interface: index,
        gsr_group: storage(group),
        gsr_source: storage(source),
    };
    let name = match op {
        Op::Join => libc::MCAST_JOIN_SOURCE_GROUP,
        Op::Leave => libc::MCAST_LEAVE_SOURCE_GROUP,
    };
    // SAFETY: `req` is a valid group_source_req that outlives the call, and
    // the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            name,
            std::ptr::addr_of!(req).cast(),
            std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

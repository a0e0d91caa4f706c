//! `firmcast relay --forward-status`: each Status frame the relay's fleet
//! accepted goes on, verbatim, to a central `firmcast status --listen`
//! (R-RELAY-4).
//!
//! Verbatim, so a device's signature (R-STAT-4) still verifies at the
//! centre and the central roster decides as the relay's does; the centre
//! sees the relay's address as the report's source, which is how its table
//! shows the site a device is at. At most one frame goes out per frame
//! received, and a token bucket caps the rate, so a flood on a site's LAN
//! (or a fleet stuck in a report loop) reaches the centre as at most
//! [`FORWARD_PER_SEC`] frames a second.

use std::net::{SocketAddr, UdpSocket};

use proto::wire::{self, Frame};
use proto::Instant;
use serde_json::json;

use crate::error::{runtime, Error};

/// Frames forwarded per second at most, on average.
pub const FORWARD_PER_SEC: u64 = 200;
/// Frames forwarded back to back at most after a quiet spell: a site's
/// whole fleet reporting its outcome at once (three copies each, R-STAT-7)
/// passes unthrottled up to this many.
pub const FORWARD_BURST: u64 = 400;

/// The forwarding socket, its rate limit and its counters.
pub struct StatusForward {
    sock: UdpSocket,
    to: SocketAddr,
    /// Token bucket in micro-frames (1,000,000 = one frame).
    credit: u64,
    last: Option<Instant>,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Frames not forwarded: over the rate.
    pub limited: u64,
    /// Frames the socket refused.
    pub send_errors: u64,
}

impl StatusForward {
    /// A socket for forwarding to `to` (an ephemeral port on the address
    /// the route to `to` leaves from).
    pub fn open(to: SocketAddr) -> Result<Self, Error> {
        let bind: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .map_err(|e| runtime(format!("--forward-status {to}: binding a socket: {e}")))?;
        sock.set_nonblocking(true)
            .map_err(|e| runtime(format!("--forward-status {to}: socket mode: {e}")))?;
        Ok(StatusForward {
            sock,
            to,
            credit: FORWARD_BURST * 1_000_000,
            last: None,
            forwarded: 0,
            limited: 0,
            send_errors: 0,
        })
    }

    /// A datagram the relay's fleet accepted at `now`: forward it if it is
    /// a Status frame and the rate allows.
    pub fn accepted(&mut self, now: Instant, datagram: &[u8]) {
        if !matches!(wire::decode(datagram), Ok((_, Frame::Status(_)))) {
            return;
        }
        if !self.take(now) {
            self.limited += 1;
            return;
        }
        match self.sock.send_to(datagram, self.to) {
            Ok(_) => self.forwarded += 1,
            Err(e) => {
                self.send_errors += 1;
                if self.send_errors == 1 {
                    log::warn!("forwarding status to {}: {e}", self.to);
                }
            }
        }
    }

    /// Refill the bucket for the time since the last frame; take one frame.
    fn take(&mut self, now: Instant) -> bool {
        let cap = FORWARD_BURST * 1_000_000;
        if let Some(last) = self.last {
            let us = u64::try_from(now.saturating_since(last).as_micros()).unwrap_or(u64::MAX);
            self.credit = self
                .credit
                .saturating_add(us.saturating_mul(FORWARD_PER_SEC))
                .min(cap);
        }
        self.last = Some(now);
        if self.credit >= 1_000_000 {
            self.credit -= 1_000_000;
            true
        } else {
            false
        }
    }

    /// The counters as JSON, for the relay's summary.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "to": self.to.to_string(),
            "forwarded": self.forwarded,
            "rate_limited": self.limited,
            "send_errors": self.send_errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_relay_4_bucket_caps_a_flood_and_refills_with_time() {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut f = StatusForward::open(sink.local_addr().expect("addr")).expect("open");
        let t0 = Instant::from_micros(1_000_000);
        let taken = (0..1000).filter(|_| f.take(t0)).count();
        println!("burst: {taken} of 1000 frames at one instant");
        assert_eq!(taken as u64, FORWARD_BURST);
        // One second later the bucket has FORWARD_PER_SEC frames again.
        let t1 = Instant::from_micros(2_000_000);
        let taken = (0..1000).filter(|_| f.take(t1)).count();
        assert_eq!(taken as u64, FORWARD_PER_SEC);
    }

    #[test]
    fn r_relay_4_only_status_frames_go_on_byte_for_byte_one_per_frame() {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sink.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut f = StatusForward::open(sink.local_addr().expect("addr")).expect("open");
        let now = Instant::from_micros(0);
        f.accepted(now, b"not a frame");
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let data = Frame::Data(wire::Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(&[1, 2, 3]),
        });
        let n = wire::encode(1, wire::ImageId([1; 8]), 0, &data, &mut buf).expect("encode");
        f.accepted(now, &buf[..n]);
        assert_eq!((f.forwarded, f.limited), (0, 0), "not Status: dropped");
        let status = Frame::Status(wire::Status {
            device_id: 7,
            state: wire::DeviceState::Receiving,
            blocks_done: 1,
            blocks_total: 2,
            current_version: "1.0.0",
            reason: wire::Reason::None,
            write_kbps: 0,
            window_free: wire::WINDOW_FREE_NONE,
        });
        let n = wire::encode(1, wire::ImageId([1; 8]), 0, &status, &mut buf).expect("encode");
        f.accepted(now, &buf[..n]);
        assert_eq!(f.forwarded, 1);
        let mut got = vec![0u8; wire::MAX_DATAGRAM];
        let (len, _) = sink.recv_from(&mut got).expect("forwarded");
        assert_eq!(&got[..len], &buf[..n], "byte for byte");
    }
}

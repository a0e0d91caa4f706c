//! Pacing as a token bucket over the caller's clock, shared by the carousel
//! sender (R-CAR-4) and the repair server (R-REP-6, R-REP-9): a datagram of
//! `len` UDP payload bytes costs `(len + 28) * 8` bits (IPv4 + UDP headers
//! included) at `rate_bps`, and after an idle gap the bucket holds at most
//! [`BURST_DATAGRAMS`] full datagrams' worth of credit.

use crate::time::Instant;
use crate::wire::{HEADER_LEN, TRAILER_LEN};

/// Bytes of IPv4 + UDP header counted against the rate for each datagram.
pub const IP_UDP_OVERHEAD: u64 = 28;
/// Most datagrams a pacer sends back to back after an idle gap (or after the
/// process was not scheduled for a while): 64 full chunks are about 6 ms at
/// 90 Mbit/s, so a sender that was descheduled for a few milliseconds catches
/// up instead of losing that time for good (figures in bench/README.md).
pub const BURST_DATAGRAMS: u64 = 64;
/// Frame overhead beyond the chunk payload, generously rounded (header,
/// postcard varints, CRC), used to size the burst allowance.
pub(crate) const FRAME_OVERHEAD: u64 = (HEADER_LEN + TRAILER_LEN) as u64 + 16;

/// A token bucket over the caller's clock, in integer nanoseconds (no floats,
/// no clock reads). Shared by the sender and the repair server.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bps: u64,
    /// Earliest time the next datagram may go, in nanoseconds.
    next_ns: u64,
    /// Largest credit the bucket may hold, in nanoseconds of sending time.
    burst_ns: u64,
}

impl Pacer {
    /// A pacer for `rate_bps` bits per second (at least 1) whose burst after
    /// an idle gap is [`BURST_DATAGRAMS`] datagrams of `typical_len` bytes.
    pub fn new(rate_bps: u64, typical_len: usize, now: Instant) -> Self {
        let rate_bps = rate_bps.max(1);
        let mut p = Pacer {
            rate_bps,
            next_ns: now.as_micros().saturating_mul(1000),
            burst_ns: 0,
        };
        p.burst_ns = p.cost_ns(typical_len).saturating_mul(BURST_DATAGRAMS);
        p
    }

    /// A pacer for `rate_bps` whose credit after an idle gap is at most
    /// `burst_us` microseconds of sending time.
    pub fn with_burst_us(rate_bps: u64, burst_us: u64, now: Instant) -> Self {
        Pacer {
            rate_bps: rate_bps.max(1),
            next_ns: now.as_micros().saturating_mul(1000),
            burst_ns: burst_us.saturating_mul(1000),
        }
    }

    /// The configured rate in bits per second.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Change the rate (at least 1) from the next datagram on; the burst
    /// allowance keeps its length in datagrams.
    pub fn set_rate(&mut self, rate_bps: u64) {
        let rate_bps = rate_bps.max(1);
        self.burst_ns = u64::try_from(
            u128::from(self.burst_ns) * u128::from(self.rate_bps) / u128::from(rate_bps),
        )
        .unwrap_or(u64::MAX);
        self.rate_bps = rate_bps;
    }

    /// Nanoseconds of link time one datagram of `len` payload bytes takes.
    pub fn cost_ns(&self, len: usize) -> u64 {
        cost_ns_at(len, self.rate_bps)
    }

    /// `true` when a datagram may go at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        now.as_micros().saturating_mul(1000) >= self.next_ns
    }

    /// Charge one datagram of `len` bytes sent at `now`.
    pub fn charge(&mut self, now: Instant, len: usize) {
        self.charge_ns(now, self.cost_ns(len));
    }

    /// Charge one datagram of `len` bytes sent at `now` by someone else
    /// sharing the link, at the link's `link_bps` rather than this pacer's
    /// rate: when this pacer runs below the link (a carousel paced to the
    /// fleet's flash, R-PACE-2), the other traffic takes only the link time
    /// it used, not that time scaled up by the link-to-pace ratio.
    pub fn charge_link(&mut self, now: Instant, len: usize, link_bps: u64) {
        self.charge_ns(now, cost_ns_at(len, link_bps.max(self.rate_bps)));
    }

    /// Charge `cost` nanoseconds of sending time at `now`.
    fn charge_ns(&mut self, now: Instant, cost: u64) {
        let now_ns = now.as_micros().saturating_mul(1000);
        // Credit saved during an idle gap is capped at the burst allowance.
        let base = self.next_ns.max(now_ns.saturating_sub(self.burst_ns));
        self.next_ns = base.saturating_add(cost);
    }

    /// When the next datagram may go (rounded up to the microsecond).
    pub fn next_at(&self) -> Instant {
        Instant::from_micros(self.next_ns.div_ceil(1000))
    }
}

/// Nanoseconds one datagram of `len` payload bytes takes at `rate_bps` (at
/// least 1), IPv4/UDP headers included.
fn cost_ns_at(len: usize, rate_bps: u64) -> u64 {
    let bits = (len as u128 + u128::from(IP_UDP_OVERHEAD)) * 8;
    let ns = bits * 1_000_000_000 / u128::from(rate_bps.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

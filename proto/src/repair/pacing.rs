//! The repair server's pacing: its own rate (R-REP-6), carousel datagrams
//! sent on the same link charged against it (R-REP-7), and beside a
//! carousel that has data to send, its share of the link (R-REP-9).

use crate::pacer::Pacer;
use crate::time::Instant;

/// Two token buckets: the repair rate, and the repairs' share of a link
/// shared with a carousel, enforced while the carousel is sending.
#[derive(Debug, Clone)]
pub(super) struct RepairPacing {
    pacer: Pacer,
    share: Pacer,
    /// Percent of the rate the share is (clamped to 1..=100).
    share_percent: u64,
    carousel_sending: bool,
}

impl RepairPacing {
    /// Pacing at `rate_bps`, with a share of `share_percent` of it, for
    /// datagrams of about `typical_len` bytes.
    pub(super) fn new(rate_bps: u64, share_percent: u32, typical_len: usize) -> Self {
        let share_percent = u64::from(share_percent.clamp(1, 100));
        RepairPacing {
            pacer: Pacer::new(rate_bps, typical_len, Instant::ZERO),
            share: Pacer::new(
                rate_bps.saturating_mul(share_percent) / 100,
                typical_len,
                Instant::ZERO,
            ),
            share_percent,
            carousel_sending: false,
        }
    }

    /// A carousel datagram of `len` bytes went out at `now` on the same
    /// link (R-REP-7).
    pub(super) fn charge_shared(&mut self, now: Instant, len: usize) {
        self.pacer.charge(now, len);
    }

    /// Whether a carousel on the same link has data to send (R-REP-9).
    pub(super) fn set_carousel_sending(&mut self, sending: bool) {
        self.carousel_sending = sending;
    }

    /// Pace at `rate_bps` from now on, the share following it (R-REP-12).
    pub(super) fn set_rate(&mut self, rate_bps: u64) {
        if rate_bps == self.pacer.rate_bps() {
            return;
        }
        self.pacer.set_rate(rate_bps);
        self.share
            .set_rate(rate_bps.saturating_mul(self.share_percent) / 100);
    }

    /// The repair rate now.
    pub(super) fn rate_bps(&self) -> u64 {
        self.pacer.rate_bps()
    }

    /// Whether a repair may go at `now`.
    pub(super) fn may_send(&self, now: Instant) -> bool {
        self.pacer.ready(now) && (!self.carousel_sending || self.share.ready(now))
    }

    /// When a repair may go next.
    pub(super) fn next_send_at(&self) -> Instant {
        if self.carousel_sending {
            self.pacer.next_at().max(self.share.next_at())
        } else {
            self.pacer.next_at()
        }
    }

    /// A repair datagram of `len` bytes went out at `now`.
    pub(super) fn charge(&mut self, now: Instant, len: usize) {
        self.pacer.charge(now, len);
        self.share.charge(now, len);
    }
}

//! The carousel's pace from the fleet's flash (R-PACE-2, R-PACE-3): a cap in
//! bits/s that keeps the slowest receiving device's block window from
//! overflowing, never above the operator's rate and never below a floor,
//! so a forged Status can slow the carousel only within a bound.
//!
//! One entry point, [`Pace::cap_bps`]; the shell hands the least of the
//! caps that apply to [`crate::sender::Sender::set_rate_cap`]. Before any
//! device has reported, the carousel sends only [`START_BLOCKS`] blocks at
//! the rate and then slows down until the first report (R-PACE-5).

use core::time::Duration;

use crate::fleet::{DeviceRecord, Fleet};
use crate::pacer::IP_UDP_OVERHEAD;
use crate::time::Instant;
use crate::wire::{DeviceState, ImageId, HEADER_LEN, TRAILER_LEN, WINDOW_FREE_NONE};

/// How often the cap is worked out again (devices report once a second).
pub const PACE_EVERY: Duration = Duration::from_millis(100);
/// R-PACE-3: a report older than this (three missed Status intervals) no
/// longer paces: a device that went away must not hold the fleet back.
pub const PACE_FRESH: Duration = Duration::from_secs(3);
/// R-PACE-3: the cap never goes below the rate divided by this.
pub const FLOOR_DIVISOR: u64 = 64;
/// R-PACE-5: carousel blocks sent at the rate before the first report
/// about the image; a window of this many blocks holds them all.
pub const START_BLOCKS: u64 = 8;
/// R-PACE-5: the longest the carousel waits for a first report.
pub const START_WAIT: Duration = Duration::from_secs(1);
/// R-PACE-5: while it waits, the carousel runs at the rate divided by this:
/// slow enough that a window holds what goes by before a slow flash's first
/// write is reported, fast enough that a device that joins then completes
/// (and so reports) a block in a fraction of the wait.
pub const START_DIVISOR: u64 = 16;
/// Data frame bytes beyond the payload (header, postcard fields, CRC),
/// rounded up, plus the IPv4/UDP headers the rate counts.
const DATA_OVERHEAD: u64 = (HEADER_LEN + TRAILER_LEN) as u64 + 12 + IP_UDP_OVERHEAD;

/// The device that sets the pace, as last worked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slowest {
    /// Its device id.
    pub device_id: u64,
    /// The write rate it reported, kbit/s of image bytes.
    pub write_kbps: u32,
    /// The free slots of its window it reported.
    pub window_free: u16,
}

/// The fleet's write pace for one image.
#[derive(Debug, Clone)]
pub struct Pace {
    rate_bps: u64,
    /// Wire bits per image bit, in per-mille (frame and IP/UDP headers,
    /// the Announce every `announce_every` datagrams).
    wire_permille: u64,
    cap_bps: u64,
    slowest: Option<Slowest>,
    next_at: Option<Instant>,
    /// R-PACE-5: carousel Data frames that may go before a first report.
    start_frames: u64,
    /// R-PACE-5: when the wait for a first report began and ends.
    start_wait_until: Option<Instant>,
    /// R-PACE-5: a report about the image was heard, or the wait ran out.
    started: bool,
}

impl Pace {
    /// A pace for a carousel at most `rate_bps`, sending `block_size`-byte
    /// blocks in `chunk_size`-byte chunks with an Announce every
    /// `announce_every` datagrams.
    pub fn new(rate_bps: u64, block_size: u32, chunk_size: u32, announce_every: u32) -> Self {
        let chunk = u64::from(chunk_size.max(1));
        let every = u64::from(announce_every.max(1));
        let per_block = u64::from(crate::wire::chunks_per_block(block_size, chunk_size.max(1)));
        Pace {
            rate_bps,
            wire_permille: (chunk + DATA_OVERHEAD) * 1000 * (every + 1) / (chunk * every),
            cap_bps: rate_bps,
            slowest: None,
            next_at: None,
            start_frames: START_BLOCKS.saturating_mul(per_block.max(1)),
            start_wait_until: None,
            started: false,
        }
    }

    /// R-PACE-2: the cap for the carousel at `now`, from the reports in
    /// `fleet` about `image_id`: for each device receiving it whose report
    /// counts (R-STAT-4) and is fresh (R-PACE-3) and carries a write rate,
    /// its write rate in wire bits times a gain set by its free window
    /// slots; the least of them, within `[rate / 64, rate]`. The operator's
    /// rate when no report paces. R-PACE-5: before any counted report about
    /// `image_id`, the rate / [`START_DIVISOR`] once `data_sent` (carousel
    /// Data frames sent) reaches [`START_BLOCKS`] blocks, for at most
    /// [`START_WAIT`].
    pub fn cap_bps(
        &mut self,
        now: Instant,
        fleet: &Fleet,
        image_id: ImageId,
        data_sent: u64,
    ) -> u64 {
        if self.waiting_for_first_report(now, fleet, image_id, data_sent) {
            self.cap_bps = self.start_bps();
            self.slowest = None;
            self.next_at = None;
            return self.cap_bps;
        }
        if self.next_at.is_some_and(|t| now < t) {
            return self.cap_bps;
        }
        self.next_at = Some(now + PACE_EVERY);
        let mut least: Option<(u64, Slowest)> = None;
        for (id, r) in fleet.iter() {
            let Some(bps) = self.device_bps(now, fleet, image_id, r) else {
                continue;
            };
            if least.is_none_or(|(b, _)| bps < b) {
                least = Some((bps, slowest_of(id, r)));
            }
        }
        let (cap, slowest) = match least {
            Some((bps, s)) if bps < self.rate_bps => (bps.max(self.floor_bps()), Some(s)),
            _ => (self.rate_bps, None),
        };
        self.cap_bps = cap;
        self.slowest = slowest;
        cap
    }

    /// R-PACE-2: a report from `device_id` was just recorded in `fleet`. One
    /// that lowers the cap sets it at once; one from the device that sets
    /// the cap (its rate may have risen) has the next [`Pace::cap_bps`] work
    /// the cap out again at once. So the carousel follows the fleet within
    /// one report's round trip, not the next [`PACE_EVERY`], and a report
    /// costs a scan of the fleet only when it comes from the slowest device.
    pub fn note_report(&mut self, now: Instant, fleet: &Fleet, image_id: ImageId, device_id: u64) {
        let Some(r) = fleet.get(device_id) else {
            return;
        };
        match self.device_bps(now, fleet, image_id, r) {
            Some(bps) if bps < self.cap_bps => {
                self.cap_bps = bps.max(self.floor_bps());
                self.slowest = Some(slowest_of(device_id, r));
            }
            _ if self.slowest.is_some_and(|s| s.device_id == device_id) => self.next_at = None,
            _ => {}
        }
    }

    /// The cap `r`'s report asks for in wire bits/s, when it paces: a
    /// device receiving `image_id` whose report counts (R-STAT-4), is fresh
    /// (R-PACE-3) and carries a write rate.
    fn device_bps(
        &self,
        now: Instant,
        fleet: &Fleet,
        image_id: ImageId,
        r: &DeviceRecord,
    ) -> Option<u64> {
        let paces = r.image_id == image_id
            && r.state == DeviceState::Receiving
            && r.write_kbps != 0
            && r.window_free != WINDOW_FREE_NONE
            && now.saturating_since(r.last_seen) <= PACE_FRESH
            && fleet.counts(r);
        paces.then(|| {
            u64::from(r.write_kbps) * 1000 * self.wire_permille / 1000
                * gain_permille(r.window_free)
                / 1000
        })
    }

    /// R-PACE-5: the carousel's rate while it waits for the first report.
    pub fn start_bps(&self) -> u64 {
        (self.rate_bps / START_DIVISOR).max(self.floor_bps())
    }

    /// R-PACE-5: `true` while the carousel waits, at [`Pace::start_bps`],
    /// for the first report about `image_id`: [`START_BLOCKS`] blocks went
    /// out and no counted report about the image came, for at most
    /// [`START_WAIT`] from the moment the blocks were out. A device learns
    /// the sender's address only from a block it verified (R-STAT-6) and
    /// measures its flash only once it wrote one (R-PACE-1): until then the
    /// sender cannot tell a slow flash, and what goes by meanwhile must fit
    /// a device's window and socket buffer.
    fn waiting_for_first_report(
        &mut self,
        now: Instant,
        fleet: &Fleet,
        image_id: ImageId,
        data_sent: u64,
    ) -> bool {
        if self.started {
            return false;
        }
        if fleet
            .iter()
            .any(|(_, r)| r.image_id == image_id && fleet.counts(r))
        {
            self.started = true;
            return false;
        }
        if data_sent < self.start_frames {
            return false;
        }
        let until = *self.start_wait_until.get_or_insert(now + START_WAIT);
        if now >= until {
            self.started = true;
            return false;
        }
        true
    }

    /// R-PACE-5: `true` while the carousel waits for the first report.
    pub fn waiting(&self) -> bool {
        !self.started && self.start_wait_until.is_some()
    }

    /// The device that holds the carousel below the operator's rate, if any.
    pub fn slowest(&self) -> Option<Slowest> {
        self.slowest
    }

    /// R-PACE-3: the least cap reports can set.
    pub fn floor_bps(&self) -> u64 {
        (self.rate_bps / FLOOR_DIVISOR).max(1)
    }
}

fn slowest_of(device_id: u64, r: &DeviceRecord) -> Slowest {
    Slowest {
        device_id,
        write_kbps: r.write_kbps,
        window_free: r.window_free,
    }
}

/// R-PACE-2: how much faster than a device writes the carousel may go, in
/// per-mille, by its free window slots: with room, faster (the window fills
/// and the flash never waits); with one slot or none, slower (a full window
/// drops the chunks of new blocks, and those wait for a repair or the next
/// pass).
fn gain_permille(window_free: u16) -> u64 {
    match window_free {
        0 => 700,
        1 => 850,
        2 => 1000,
        3 => 1050,
        _ => 1100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::testutil::{image, manifest};
    use crate::sender::{Sender, SenderConfig};
    use crate::wire::{self, Frame, Reason, Status, MAX_DATAGRAM};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    const IMG: ImageId = ImageId([7; 8]);

    fn report(fleet: &mut Fleet, now: Instant, id: u64, kbps: u32, free: u16) {
        let st = Status {
            device_id: id,
            state: DeviceState::Receiving,
            blocks_done: 1,
            blocks_total: 10,
            current_version: "1.0",
            reason: Reason::None,
            write_kbps: kbps,
            window_free: free,
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = wire::encode(1, IMG, 0, &Frame::Status(st), &mut buf).expect("encode");
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        fleet.record(now, from, &buf[..n]).expect("record");
    }

    /// A pace at `rate` for 1400-byte chunks and an empty fleet.
    fn fresh(rate: u64) -> (Pace, Fleet) {
        (Pace::new(rate, 65536, 1400, 64), Fleet::new(16))
    }

    fn s(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn r_pace_2_the_slowest_fresh_device_sets_the_cap_with_a_window_gain() {
        let rate = 100_000_000;
        let (mut p, mut fleet) = fresh(rate);
        assert_eq!(
            p.cap_bps(s(0), &fleet, IMG, 0),
            rate,
            "no report: full rate"
        );
        report(&mut fleet, s(1), 1, 2048, 2);
        report(&mut fleet, s(1), 2, 8000, 2);
        let cap = p.cap_bps(s(1), &fleet, IMG, 0);
        std::println!("2048 kbit/s writer, 2 free slots: cap {cap} bit/s");
        // Wire bits per image bit: a bit over 1 (headers, Announces).
        assert!((2_100_000..2_300_000).contains(&cap), "{cap}");
        assert_eq!(p.slowest().map(|s| s.device_id), Some(1));
        // Room in the window: faster; no room: slower.
        report(&mut fleet, s(2), 1, 2048, 6);
        let roomy = p.cap_bps(s(2), &fleet, IMG, 0);
        report(&mut fleet, s(3), 1, 2048, 0);
        let full = p.cap_bps(s(3), &fleet, IMG, 0);
        std::println!("window with room: {roomy}, full: {full}");
        assert!(roomy > cap && full < cap, "{roomy} {cap} {full}");
        // Within PACE_EVERY the cap is not worked out again.
        report(&mut fleet, s(3), 1, 9000, 6);
        assert_eq!(p.cap_bps(s(3), &fleet, IMG, 0), full);
    }

    #[test]
    fn r_pace_2_a_report_that_lowers_the_cap_acts_at_once() {
        let rate = 100_000_000;
        let (mut p, mut fleet) = fresh(rate);
        report(&mut fleet, s(1), 1, 8000, 2);
        let fast = p.cap_bps(s(1), &fleet, IMG, 0);
        // 10 ms later, well within PACE_EVERY, a slower device's first
        // report lowers the cap as it arrives.
        let t = s(1) + Duration::from_millis(10);
        report(&mut fleet, t, 2, 2048, 2);
        p.note_report(t, &fleet, IMG, 2);
        let slow = p.cap_bps(t, &fleet, IMG, 0);
        std::println!("8000 kbit/s device: cap {fast}; a 2048 kbit/s report 10 ms later: {slow}");
        assert!(slow < fast / 3, "{slow} {fast}");
        assert_eq!(p.slowest().map(|s| s.device_id), Some(2));
        // A faster report from another device waits for the next PACE_EVERY...
        let t = t + Duration::from_millis(10);
        report(&mut fleet, t, 3, 9000, 2);
        p.note_report(t, &fleet, IMG, 3);
        assert_eq!(p.cap_bps(t, &fleet, IMG, 0), slow);
        // ...one from the device that sets the cap is worked out at once:
        // device 1 (8000 kbit/s) is the slowest now.
        let t = t + Duration::from_millis(10);
        report(&mut fleet, t, 2, 16000, 2);
        p.note_report(t, &fleet, IMG, 2);
        assert_eq!(p.cap_bps(t, &fleet, IMG, 0), fast);
        assert_eq!(p.slowest().map(|s| s.device_id), Some(1));
    }

    #[test]
    fn r_pace_2_r_rep_7_shared_repairs_cost_link_time_not_capped_time() {
        let (img, mut tx) = capped_sender(100_000_000, 2_000_000);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while tx.poll_transmit(Instant::ZERO, &img, &mut buf).is_some() {}
        let before = tx.poll_timeout().expect("deadline");
        // 100 full repairs heard: 100 x 1,128 B x 8 at 100 Mbit/s is 9 ms
        // of the link; at the 2 Mbit/s cap it would be 451 ms of silence.
        for _ in 0..100 {
            tx.charge_shared(Instant::ZERO, 1100);
        }
        let after = tx.poll_timeout().expect("deadline");
        let yielded = after.saturating_since(before);
        std::println!(
            "100 heard repairs at a 2 Mbit/s cap of a 100 Mbit/s link: {yielded:?} yielded"
        );
        assert!(yielded <= Duration::from_millis(10), "{yielded:?}");
        assert!(yielded >= Duration::from_millis(8), "{yielded:?}");
    }

    /// A 1 MiB image and a sender of it at `rate` capped at `cap`.
    fn capped_sender(rate: u64, cap: u64) -> (Vec<u8>, Sender) {
        let img = image(1 << 20);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mut tx = Sender::new(SenderConfig::new(1, rate), &m, signed, Instant::ZERO);
        tx.set_rate_cap(cap);
        (img, tx)
    }

    /// Wire bits a sender sends from `from` to `to` (virtual time).
    fn bits_between(s: &mut Sender, img: &[u8], from: Instant, to: Instant) -> u64 {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = from;
        let mut bits = 0u64;
        loop {
            while let Some(t) = s.poll_transmit(now, img, &mut buf) {
                bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
            }
            let next = s.poll_timeout().expect("deadline");
            if next >= to {
                return bits;
            }
            now = next;
        }
    }

    #[test]
    fn r_car_4_r_pace_2_the_sender_keeps_to_the_cap_and_never_above_the_rate() {
        let rate = 20_000_000;
        let (img, mut tx) = capped_sender(rate, 2_000_000);
        let capped = bits_between(&mut tx, &img, s(0), s(1));
        // A cap above the rate leaves the rate.
        tx.set_rate_cap(u64::MAX);
        let full = bits_between(&mut tx, &img, s(1), s(2));
        std::println!("capped at 2 Mbit/s: {capped} bits in 1 s; uncapped: {full}");
        // Within 2%, as R-CAR-4 holds the rate.
        assert!((1_960_000..=2_040_000).contains(&capped), "{capped}");
        assert!((19_600_000..=20_400_000).contains(&full), "{full}");
        assert_eq!(tx.rate_bps(), rate);
    }

    #[test]
    fn r_pace_5_before_the_first_report_the_carousel_sends_start_blocks_then_waits() {
        let rate = 90_000_000;
        let mut p = Pace::new(rate, 65536, 1408, 64);
        let mut fleet = Fleet::new(16);
        let frames = START_BLOCKS * 47;
        let ms = |m: u64| Instant::from_micros(m * 1000);
        assert_eq!(p.cap_bps(ms(0), &fleet, IMG, 0), rate);
        assert_eq!(p.cap_bps(ms(10), &fleet, IMG, frames - 1), rate);
        assert_eq!(p.cap_bps(ms(20), &fleet, IMG, frames), rate / START_DIVISOR);
        assert!(p.waiting());
        assert_eq!(
            p.cap_bps(ms(100), &fleet, IMG, frames + 10),
            rate / START_DIVISOR
        );
        // The first report ends it: R-PACE-2 from then on.
        report(&mut fleet, ms(270), 1, 2048, 8);
        let cap = p.cap_bps(ms(270), &fleet, IMG, frames + 30);
        assert!((2_100_000..2_600_000).contains(&cap), "{cap}");
        assert!(!p.waiting());
        // Nobody reports: the wait ends START_WAIT after it began.
        let mut p = Pace::new(rate, 65536, 1408, 64);
        let empty = Fleet::new(16);
        assert_eq!(p.cap_bps(ms(20), &empty, IMG, frames), rate / START_DIVISOR);
        let end = ms(20) + START_WAIT;
        assert_eq!(p.cap_bps(end, &empty, IMG, frames + 400), rate);
        assert_eq!(p.cap_bps(end + START_WAIT, &empty, IMG, u64::MAX), rate);
    }

    #[test]
    fn r_pace_5_a_slow_first_write_lets_no_more_than_a_window_go_by() {
        // The shell's loop in virtual time: a 90 Mbit/s carousel of an 8 MiB
        // image in 64 KiB blocks; the first report (a 256 KB/s first write)
        // comes 270 ms after the start, as in bench/fleet's slow-flash cell.
        let rate = 90_000_000;
        let img = image(8 << 20);
        let (m, signed) = manifest(&img, 64 * 1024, 1408);
        let mut tx = Sender::new(SenderConfig::new(1, rate), &m, signed, Instant::ZERO);
        let mut p = Pace::new(rate, 64 * 1024, 1408, 64);
        let mut fleet = Fleet::new(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let first_report = Instant::from_micros(270_000);
        let mut now = Instant::ZERO;
        while now < first_report {
            let cap = p.cap_bps(now, &fleet, IMG, tx.stats().data);
            tx.set_rate_cap(cap);
            while tx.poll_transmit(now, &img, &mut buf).is_some() {
                let cap = p.cap_bps(now, &fleet, IMG, tx.stats().data);
                tx.set_rate_cap(cap);
            }
            now = tx.poll_timeout().expect("deadline").min(first_report);
        }
        let before = tx.stats().data;
        report(&mut fleet, now, 1, 2048, 8);
        let cap = p.cap_bps(now, &fleet, IMG, before);
        std::println!(
            "data frames before the first report: {before} ({:.1} blocks of 47); then {cap} bit/s",
            before as f64 / 47.0
        );
        // A 9-slot window and a few blocks of socket buffer hold them; at
        // the full rate a third of the image (about 44 blocks) went by.
        assert!(before <= 12 * 47, "{before}");
        assert!(before >= START_BLOCKS * 47, "{before}");
        assert!(cap > p.floor_bps() && cap < rate, "{cap}");
    }

    #[test]
    fn r_pace_3_forged_or_stale_reports_slow_the_carousel_only_to_the_floor() {
        let rate = 100_000_000;
        let (mut p, mut fleet) = fresh(rate);
        report(&mut fleet, s(0), 1, 1, 0);
        let cap = p.cap_bps(s(0), &fleet, IMG, 0);
        std::println!("a 1 kbit/s report with a full window: cap {cap} bit/s");
        assert_eq!(cap, rate / FLOOR_DIVISOR);
        // A device not heard from for PACE_FRESH no longer paces.
        let later = s(0) + PACE_FRESH + Duration::from_millis(1);
        assert_eq!(p.cap_bps(later, &fleet, IMG, 0), rate);
        assert_eq!(p.slowest(), None);
        // With a roster, an unsigned report for a device outside it is shown
        // but does not pace.
        let mut fleet = Fleet::new(16);
        fleet.set_roster([(99u64, [0u8; 32])].into_iter().collect());
        report(&mut fleet, s(10), 1, 1, 0);
        assert_eq!(p.cap_bps(s(10), &fleet, IMG, 0), rate);
        // Another image's reports do not pace this one.
        let mut p = Pace::new(rate, 65536, 1400, 64);
        let mut fleet = Fleet::new(16);
        report(&mut fleet, s(0), 1, 1, 0);
        assert_eq!(p.cap_bps(s(0), &fleet, ImageId([8; 8]), 0), rate);
    }
}

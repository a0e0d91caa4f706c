//! One link budget for a carousel and a repair server in different processes
//! (R-REP-11, R-REP-12): what each hears of the other's traffic, turned into
//! what it may still send.
//!
//! ```text
//!  sender  ◄── repair group datagrams ──  repair server      R-REP-11: the carousel yields
//!  (hears)      (FLAG_REPAIR Data)        (same host or LAN)   what repairs take, within
//!                                                              shared_repair_percent
//!  repair  ◄── data group datagrams ────  sender            R-REP-12: repairs pace at
//!  server       (Announce rate_kbps,                           min(own rate, announced rate),
//!  (hears)       carousel Data)                                their share while it sends
//! ```
//!
//! Both directions are unauthenticated (anyone on the LAN can send to either
//! group), so what is heard only ever *lowers* a rate, and by a bounded
//! amount: forged repairs take the carousel down to its
//! `100 - shared_repair_percent` floor at most (as R-REP-9 does inline), and a
//! forged Announce cannot raise the repair server above its own `--rate`
//! (without one: the default, or the link's rate as measured, which forged
//! carousel Data raises only by its own traffic).

use crate::pacer::{Pacer, IP_UDP_OVERHEAD};
use crate::time::Instant;
use crate::wire::{self, Frame, FrameKind, Header, FLAG_REPAIR};

/// How long after the last carousel Data frame heard the repair server still
/// counts the carousel as sending. Longer than the carousel pauses while it
/// yields to a burst of repairs (64 datagrams, R-REP-11: 56 ms at 10 Mbit/s,
/// 0.5 s at 1 Mbit/s), so the pause does not hand the repairs the whole rate.
pub const CAROUSEL_QUIET_US: u64 = 1_000_000;

/// Credit of the share a carousel yields to heard repairs (R-REP-11), in
/// microseconds of the share's sending time. The shell reads what it heard
/// in batches stamped with the time of reading: a loop that was not
/// scheduled for a while reads many repairs at one instant, and those must
/// still be yielded for. Forged repairs can take this much of the share at
/// once, then the share.
pub const YIELD_BURST_US: u64 = 250_000;

/// The sender's side (R-REP-11): which datagrams heard on the repair group
/// the carousel's pacer is charged for.
#[derive(Debug, Clone)]
pub struct HeardRepairs {
    /// Repairs of this image are heard (another transfer's on the same
    /// group are another budget's business).
    image_id: wire::ImageId,
    /// At most `shared_repair_percent` of the rate is yielded to repairs.
    share: Pacer,
    /// Bytes yielded so far (the carousel's pacer was charged for them).
    yielded: u64,
    /// Bytes of repair traffic heard beyond the share (not yielded).
    over_share: u64,
}

impl HeardRepairs {
    /// For a carousel of `image_id` at `rate_bps` that yields at most
    /// `share_percent` (clamped to 1..=100) of it to repairs it hears, with
    /// up to [`YIELD_BURST_US`] of the share's credit saved up.
    pub fn new(image_id: wire::ImageId, rate_bps: u64, share_percent: u32, now: Instant) -> Self {
        let share_bps = rate_bps.saturating_mul(u64::from(share_percent.clamp(1, 100))) / 100;
        HeardRepairs {
            image_id,
            share: Pacer::with_burst_us(share_bps, YIELD_BURST_US, now),
            yielded: 0,
            over_share: 0,
        }
    }

    /// A datagram heard on the repair group at `now`: `Some(len)` when the
    /// carousel must be charged `len` bytes for it (a repair Data frame within
    /// the share), `None` otherwise (not a repair, or beyond the share).
    pub fn hear(&mut self, now: Instant, bytes: &[u8]) -> Option<usize> {
        let h = Header::parse(bytes).ok()?;
        if h.kind != FrameKind::Data || h.flags & FLAG_REPAIR == 0 || h.image_id != self.image_id {
            return None;
        }
        if !self.share.ready(now) {
            self.over_share += bytes.len() as u64;
            return None;
        }
        self.share.charge(now, bytes.len());
        self.yielded += bytes.len() as u64;
        Some(bytes.len())
    }

    /// Payload bytes of repairs the carousel yielded for.
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    /// Payload bytes of repairs heard beyond the share (not yielded for).
    pub fn over_share(&self) -> u64 {
        self.over_share
    }
}

/// Over how long the repair server measures the carousel's rate (R-REP-12).
const HEARD_RATE_WINDOW_US: u64 = 250_000;

/// The repair server's side (R-REP-12): the carousel's announced rate, the
/// rate its Data frames are heard at, and whether it is sending, from what
/// is heard on the data group.
#[derive(Debug, Clone)]
pub struct CarouselWatch {
    image_id: wire::ImageId,
    announced_bps: Option<u64>,
    last_data: Option<Instant>,
    /// The measurement under way: when it began, and the bytes (with
    /// IPv4/UDP headers) of carousel Data heard and repairs sent since.
    measuring: Option<(Instant, u64)>,
    /// The link's rate over the last whole measurement: the carousel's
    /// Data heard and the repairs sent.
    heard_bps: u64,
}

impl CarouselWatch {
    /// Watching the carousel of `image_id`.
    pub fn new(image_id: wire::ImageId) -> Self {
        CarouselWatch {
            image_id,
            announced_bps: None,
            last_data: None,
            measuring: None,
            heard_bps: 0,
        }
    }

    /// A datagram heard on the data group at `now`.
    pub fn hear(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(h) = Header::parse(bytes) else { return };
        if h.image_id != self.image_id {
            return;
        }
        match h.kind {
            FrameKind::Data if h.flags & FLAG_REPAIR == 0 => {
                self.last_data = Some(now);
                self.measure(now, bytes.len());
            }
            FrameKind::Announce => {
                // The latest genuine Announce (every `announce_every`
                // datagrams) replaces a forged one.
                if let Ok((_, Frame::Announce(a))) = wire::decode(bytes) {
                    self.announced_bps = Some(u64::from(a.rate_kbps).saturating_mul(1000));
                }
            }
            _ => {}
        }
    }

    /// The repair server sent a repair of `len` bytes at `now`: on the same
    /// link as the carousel, so it counts towards the rate measured there.
    pub fn repair_sent(&mut self, now: Instant, len: usize) {
        self.measure(now, len);
    }

    fn measure(&mut self, now: Instant, len: usize) {
        let (began, bytes) = self.measuring.get_or_insert((now, 0));
        *bytes = bytes.saturating_add(len as u64 + IP_UDP_OVERHEAD);
        let elapsed = now.as_micros().saturating_sub(began.as_micros());
        if elapsed >= HEARD_RATE_WINDOW_US {
            self.heard_bps = bytes.saturating_mul(8_000_000) / elapsed;
            self.measuring = None;
        }
    }

    /// The rate repairs keep to: the carousel's announced rate once one was
    /// heard, never above the operator's `cap`; without one, never above
    /// `fallback` (the default rate) or, while the carousel is sending, the
    /// rate measured on the link (its Data heard, the repairs sent) if that
    /// is higher. Unsigned frames only lower it, or raise it as far as their
    /// own traffic goes: beside a sending carousel repairs take at most
    /// their share of the rate (R-REP-9), so at most as much as the
    /// carousel's Data heard.
    pub fn rate_bps(&self, now: Instant, cap: Option<u64>, fallback: u64) -> u64 {
        let ceiling = cap.unwrap_or(if self.sending(now) {
            fallback.max(self.heard_bps)
        } else {
            fallback
        });
        self.announced_bps
            .map_or(ceiling, |a| a.min(ceiling))
            .max(1)
    }

    /// The link's rate over the last whole measurement (carousel Data heard
    /// and repairs sent, with IPv4/UDP headers); 0 before one.
    pub fn heard_bps(&self) -> u64 {
        self.heard_bps
    }

    /// The announced carousel rate, once heard.
    pub fn announced_bps(&self) -> Option<u64> {
        self.announced_bps
    }

    /// `true` while carousel Data was heard within [`CAROUSEL_QUIET_US`].
    pub fn sending(&self, now: Instant) -> bool {
        self.last_data
            .is_some_and(|t| now.as_micros().saturating_sub(t.as_micros()) < CAROUSEL_QUIET_US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::tests::ForgedNacks;
    use crate::repair::{RepairConfig, RepairMode, RepairServer};
    use crate::sender::testutil::{image, manifest};
    use crate::sender::{Sender, SenderConfig};
    use crate::wire::{Announce, Data, MAX_DATAGRAM};
    use alloc::vec;
    use core::time::Duration;

    /// What one side of the link sent, in bytes with IPv4/UDP headers.
    #[derive(Debug, Default)]
    struct Sent {
        carousel: u64,
        repairs: u64,
    }

    /// A carousel at `rate` and a *separate* repair server (its own pacer,
    /// its fallback rate `repair_fallback`, no `--rate`) for `secs` virtual
    /// seconds while `nacks_per_sec` NACKs for 256 chunks each arrive from
    /// ever new sources. Each hears the other's datagrams as on one host:
    /// the sender the repairs (R-REP-11), the server the carousel
    /// (R-REP-12). With `listen` false neither hears the other (the
    /// topology before R-REP-11/12).
    fn separate(
        rate: u64,
        repair_fallback: u64,
        secs: u64,
        nacks_per_sec: u64,
        listen: bool,
    ) -> (Sent, u64) {
        let img = image(4 << 20);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mut sender = Sender::new(SenderConfig::new(7, rate), &m, signed, Instant::ZERO);
        let mut ear = HeardRepairs::new(m.image_id, rate, 50, Instant::ZERO);
        let mut r = RepairServer::new(
            RepairConfig {
                rate_bps: repair_fallback,
                mode: RepairMode::Parity,
                ..RepairConfig::default()
            },
            &m,
        );
        let mut watch = CarouselWatch::new(m.image_id);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sent = Sent::default();
        let end = Instant::from_micros(secs * 1_000_000);
        let mut nacks = ForgedNacks::new(nacks_per_sec, end);
        let mut now = Instant::ZERO;
        while now < end {
            nacks.feed(now, &mut r, m.image_id);
            if listen {
                r.set_rate(watch.rate_bps(now, None, repair_fallback));
                r.set_carousel_sending(watch.sending(now));
            }
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
                sent.repairs += t.len as u64 + IP_UDP_OVERHEAD;
                watch.repair_sent(now, t.len);
                if !listen {
                    continue;
                }
                if let Some(len) = ear.hear(now, &buf[..t.len]) {
                    sender.charge_shared(now, len);
                }
            }
            while let Some(t) = sender.poll_transmit(now, &img, &mut buf) {
                sent.carousel += t.len as u64 + IP_UDP_OVERHEAD;
                watch.hear(now, &buf[..t.len]);
            }
            now = [
                r.poll_timeout(),
                sender.poll_timeout(),
                Some(nacks.next_at()),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("deadline")
            .max(now + Duration::from_micros(1));
        }
        (sent, r.rate_bps())
    }

    #[test]
    fn r_rep_11_12_a_separate_repair_server_and_the_carousel_keep_to_one_rate() {
        let rate = 10_000_000;
        let secs = 2;
        let budget = rate * secs / 8;
        let (alone, _) = separate(rate, 50_000_000, secs, 0, true);
        let total = |s: &Sent| s.carousel + s.repairs;
        for (nps, what) in [
            (2, "a genuine crowd's NACKs"),
            (50, "a flood of forged NACKs"),
        ] {
            let (before, _) = separate(rate, 50_000_000, secs, nps, false);
            let (after, learned) = separate(rate, 50_000_000, secs, nps, true);
            // Before R-REP-11/12 the two oversubscribed the link.
            assert!(total(&before) > budget * 120 / 100);
            std::println!(
                "R-REP-11/12 {what} ({nps}/s), carousel at {rate} bit/s, repair server without --rate: \
                 link {} bytes in {secs} s ({:.2} x the budget) and carousel {:.0}% of alone before; \
                 {} bytes ({:.2} x) and carousel {:.0}% after; repairs paced at {learned} bit/s",
                total(&before),
                total(&before) as f64 / budget as f64,
                before.carousel as f64 * 100.0 / alone.carousel as f64,
                total(&after),
                total(&after) as f64 / budget as f64,
                after.carousel as f64 * 100.0 / alone.carousel as f64,
            );
            assert_eq!(
                learned, rate,
                "the repair server paces at the announced rate"
            );
            assert!(
                total(&after) <= budget * 103 / 100,
                "{what}: together within the rate: {} > {budget}",
                total(&after)
            );
            // Only repairs within the share are yielded for, so forged
            // repairs leave the carousel at least the rest (R-REP-9).
            assert!(
                after.carousel * 100 >= alone.carousel * 48,
                "{what}: carousel keeps its share: {} of {}",
                after.carousel,
                alone.carousel
            );
        }
    }

    /// A Data frame carrying `payload` as chunk 0 of block 0.
    fn chunk_zero(payload: &[u8]) -> Frame<'_> {
        Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(payload),
        })
    }

    #[test]
    fn r_rep_11_forged_repairs_beyond_the_share_are_not_yielded_for() {
        let rate = 10_000_000;
        let mut ear = HeardRepairs::new(wire::ImageId([1; 8]), rate, 50, Instant::ZERO);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let payload = [0u8; 1024];
        let frame = chunk_zero(&payload);
        let n =
            wire::encode(1, wire::ImageId([1; 8]), FLAG_REPAIR, &frame, &mut buf).expect("data");
        // Ten times the link of repairs heard in one second: at most the
        // share (plus the burst allowance) is yielded for.
        let per_sec = 10 * rate / ((n as u64 + IP_UDP_OVERHEAD) * 8);
        for i in 0..per_sec {
            let _ = ear.hear(Instant::from_micros(i * 1_000_000 / per_sec), &buf[..n]);
        }
        let yielded_bits = (ear.yielded() + ear.yielded() / n as u64 * IP_UDP_OVERHEAD) * 8;
        std::println!(
            "R-REP-11 forged repairs at 10 x the link for 1 s: {yielded_bits} bits yielded ({:.0}% of the rate)",
            yielded_bits as f64 * 100.0 / rate as f64
        );
        let burst_bits = rate / 2 * YIELD_BURST_US / 1_000_000;
        assert!(
            yielded_bits <= rate / 2 + burst_bits + rate / 100,
            "{yielded_bits}"
        );
        assert!(ear.over_share() > 0);
        // A carousel Data frame (no FLAG_REPAIR) is not a repair, nor is
        // another image's repair.
        let later = Instant::from_micros(5_000_000);
        let n = wire::encode(1, wire::ImageId([1; 8]), 0, &frame, &mut buf).expect("data");
        assert_eq!(ear.hear(later, &buf[..n]), None);
        let n =
            wire::encode(1, wire::ImageId([2; 8]), FLAG_REPAIR, &frame, &mut buf).expect("data");
        assert_eq!(ear.hear(later, &buf[..n]), None);
        let n =
            wire::encode(1, wire::ImageId([1; 8]), FLAG_REPAIR, &frame, &mut buf).expect("data");
        assert_eq!(ear.hear(later, &buf[..n]), Some(n));
    }

    #[test]
    fn r_rep_12_beside_a_carousel_faster_than_the_default_a_flood_still_keeps_to_one_rate() {
        // A carousel at 95 Mbit/s, a repair server without --rate (default
        // 50 Mbit/s) and a flood of forged NACKs: the server's ceiling is the
        // link as measured, above the default, and still the two keep to
        // the carousel's rate with the carousel keeping its half.
        let (rate, fallback, secs) = (95_000_000, 50_000_000, 1);
        let budget = rate * secs / 8;
        let (alone, _) = separate(rate, fallback, secs, 0, true);
        let (after, learned) = separate(rate, fallback, secs, 50, true);
        let total = after.carousel + after.repairs;
        std::println!(
            "R-REP-12 a flood of forged NACKs beside a carousel at {rate} bit/s, repair server \
             without --rate: link {total} bytes in {secs} s ({:.2} x the budget), carousel {:.0}% \
             of alone, repairs {} bytes; repairs paced at {learned} bit/s",
            total as f64 / budget as f64,
            after.carousel as f64 * 100.0 / alone.carousel as f64,
            after.repairs,
        );
        assert!(learned > fallback && learned <= rate, "paced at {learned}");
        assert!(
            total <= budget * 103 / 100,
            "within the rate: {total} > {budget}"
        );
        assert!(
            after.carousel * 100 >= alone.carousel * 48,
            "carousel keeps its share: {} of {}",
            after.carousel,
            alone.carousel
        );
        // More than the default's share would have let through.
        assert!(after.repairs * 8 > fallback / 2 * secs * 12 / 10);
    }

    /// `watch` hears an Announce of `image` at `kbps` at `now`.
    fn hear_announce(watch: &mut CarouselWatch, now: Instant, image: wire::ImageId, kbps: u32) {
        let a = Frame::Announce(Announce {
            board: "acme,rt1",
            version: "2.1.0",
            image_len: 1 << 20,
            block_size: 65536,
            chunk_size: 1408,
            manifest_len: 500,
            rate_kbps: kbps,
            pass: 0,
        });
        let mut buf = [0u8; 256];
        let n = wire::encode(1, image, 0, &a, &mut buf).expect("announce");
        watch.hear(now, &buf[..n]);
    }

    #[test]
    fn r_rep_12_an_announce_only_lowers_the_repair_rate_and_the_latest_counts() {
        let id = wire::ImageId([3; 8]);
        let mut watch = CarouselWatch::new(id);
        let announce = |watch: &mut CarouselWatch, image: wire::ImageId, kbps: u32| {
            hear_announce(watch, Instant::ZERO, image, kbps);
        };
        assert_eq!(watch.rate_bps(Instant::ZERO, None, 50_000_000), 50_000_000);
        assert_eq!(
            watch.rate_bps(Instant::ZERO, Some(20_000_000), 50_000_000),
            20_000_000
        );
        announce(&mut watch, id, 30_000);
        assert_eq!(
            watch.rate_bps(Instant::ZERO, None, 50_000_000),
            30_000_000,
            "follows the carousel"
        );
        announce(&mut watch, id, 95_000);
        assert_eq!(
            watch.rate_bps(Instant::ZERO, None, 50_000_000),
            50_000_000,
            "never above the default without --rate"
        );
        assert_eq!(
            watch.rate_bps(Instant::ZERO, Some(20_000_000), 50_000_000),
            20_000_000,
            "never above --rate"
        );
        announce(&mut watch, id, 4_000_000); // forged: 4 Gbit/s
        assert_eq!(
            watch.rate_bps(Instant::ZERO, Some(20_000_000), 50_000_000),
            20_000_000
        );
        assert_eq!(watch.rate_bps(Instant::ZERO, None, 50_000_000), 50_000_000);
        announce(&mut watch, wire::ImageId([4; 8]), 1); // another image's
        assert_eq!(watch.announced_bps(), Some(4_000_000_000));
        announce(&mut watch, id, 19_000); // the genuine one again
        assert_eq!(
            watch.rate_bps(Instant::ZERO, Some(20_000_000), 50_000_000),
            19_000_000
        );
        assert!(!watch.sending(Instant::ZERO), "no carousel Data heard yet");
    }

    #[test]
    fn r_rep_12_without_rate_the_repair_rate_follows_the_link_as_measured() {
        let id = wire::ImageId([3; 8]);
        let fallback = 50_000_000;
        let mut watch = CarouselWatch::new(id);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let payload = [0u8; 1408];
        let n = wire::encode(1, id, 0, &chunk_zero(&payload), &mut buf).expect("data");
        let bits = (n as u64 + IP_UDP_OVERHEAD) * 8;
        let announce = |watch: &mut CarouselWatch, now: Instant, kbps: u32| {
            hear_announce(watch, now, id, kbps);
        };
        announce(&mut watch, Instant::ZERO, 95_000);
        // Carousel Data at 70 Mbit/s and repairs sent at 25 Mbit/s for a
        // second: the link carries 95 Mbit/s, the announced rate.
        let mut now = Instant::ZERO;
        let (mut carousel_due, mut repair_due) = (0u64, 0u64);
        while now.as_micros() < 1_000_000 {
            let t = now.as_micros();
            if t >= carousel_due {
                watch.hear(now, &buf[..n]);
                carousel_due += bits * 1_000_000 / 70_000_000;
            }
            if t >= repair_due {
                watch.repair_sent(now, n);
                repair_due += bits * 1_000_000 / 25_000_000;
            }
            now = Instant::from_micros(carousel_due.min(repair_due));
        }
        let rate = watch.rate_bps(now, None, fallback);
        assert!(
            (94_000_000..=95_000_000).contains(&rate),
            "the link as measured, up to the Announce: {rate}"
        );
        assert_eq!(
            watch.rate_bps(now, Some(20_000_000), fallback),
            20_000_000,
            "--rate caps"
        );
        // A forged Announce still only lowers it.
        announce(&mut watch, now, 30_000);
        assert_eq!(watch.rate_bps(now, None, fallback), 30_000_000);
        // Once the carousel is quiet, the measurement no longer counts.
        announce(&mut watch, now, 95_000);
        let quiet = Instant::from_micros(now.as_micros() + CAROUSEL_QUIET_US);
        assert_eq!(watch.rate_bps(quiet, None, fallback), fallback);
        // Repairs sent alone (forged NACKs, no carousel) never raise it.
        for i in 0..10_000u64 {
            watch.repair_sent(Instant::from_micros(quiet.as_micros() + i * 10), n);
        }
        let later = Instant::from_micros(quiet.as_micros() + 100_000);
        assert_eq!(watch.rate_bps(later, None, fallback), fallback);
    }
}

//! The repair server, sans-IO: devices NACK the chunks they miss; the server
//! aggregates NACKs over a short window and sends each missing chunk once —
//! to the repair group when several devices asked, unicast to the device
//! when one did (DESIGN.md "Repair"; rules `R-REP-*` in PROTOCOL.md).
//!
//! ```text
//!  Nack ──► clip to image (R-REP-1) ──► cap per NACK (R-REP-2) ──► holdoff (R-REP-3)
//!       ──► pending batch (aggregation window, R-REP-4) ──► send queue, chunk order
//!       ──► paced sends (R-REP-6): one requester → unicast, several → group (R-REP-5)
//! ```
//!
//! Driving contract: after every `handle_datagram` or `handle_timeout`, call
//! `poll_transmit` until `None`, then sleep until `poll_timeout()` or until
//! the socket is readable; call `handle_timeout(now)` when the deadline passes.
//!
//! A NACK is not a traffic amplifier: one NACK yields at most
//! `max_chunks_per_nack` chunks, all traffic is paced at `rate_bps`, and a
//! chunk just sent to the group is not sent again within `resend_holdoff`.
//! Source addresses are unverified, so nothing goes unicast to an address
//! beyond three times the bytes that came from it (R-REP-8); one source
//! (address or device id) takes at most its share of the chunks
//! (R-REP-10); beside a carousel, repairs take at most their share of the
//! link while the carousel has data to send (R-REP-9). See [`budget`].

pub mod budget;
mod pacing;
mod parity;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use self::budget::{Sources, DEFAULT_MAX_SOURCES};
use self::pacing::RepairPacing;
use self::parity::{Asked, ParityPlanner};
use crate::fec;
use crate::fleet::{Fleet, DEFAULT_MAX_DEVICES};
use crate::geometry::Geometry;
use crate::manifest::Manifest;
use crate::pacer::IP_UDP_OVERHEAD;
use crate::time::{earliest, Instant};
use crate::transmit::{Dest, DropReason, Transmit};
use crate::wire::{self, Data, Frame, FrameKind, FLAG_REPAIR, HEADER_LEN, TRAILER_LEN};

/// How a repair server answers a crowd of NACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepairMode {
    /// Send every missing source chunk once (R-REP-*).
    #[default]
    Retransmit,
    /// Send fresh parity symbols per block, as many as the neediest device
    /// asked for (R-PAR-5). A lone straggler still gets source chunks unicast.
    Parity,
}

/// Configuration of a [`RepairServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfig {
    /// Aggregation window, from the first NACK of a batch (R-REP-4). Short:
    /// a repair that goes out early is overheard by the devices still
    /// backing off, which then NACK only what it left (R-NACK-4); a long
    /// window collects their NACKs instead.
    pub aggregate: Duration,
    /// Cap on repair traffic, bits per second (IPv4/UDP headers included).
    pub rate_bps: u64,
    /// Most chunks taken from one NACK.
    pub max_chunks_per_nack: u32,
    /// A chunk sent to the group less than this ago is not queued again.
    pub resend_holdoff: Duration,
    /// Most chunks pending or queued at once.
    pub max_pending: usize,
    /// Bound on the fleet table.
    pub max_devices: usize,
    /// Unicast is used only while one device alone has been NACKing for
    /// this long (R-REP-5): a lone straggler.
    pub straggler_window: Duration,
    /// Retransmit (default) or parity repair.
    pub mode: RepairMode,
    /// Sources (addresses, device ids) whose accounts are kept (R-REP-8, R-REP-10).
    pub max_sources: usize,
    /// Chunks one source may ask for, as a percentage of the chunks
    /// `rate_bps` carries per second, with one second's worth saved up
    /// (R-REP-10).
    pub per_source_percent: u32,
    /// Most of `rate_bps` repairs take while a carousel on the same link
    /// has data to send, in percent (R-REP-9).
    pub shared_repair_percent: u32,
}

impl Default for RepairConfig {
    /// 2 ms window, 100 Mbit/s, 256 chunks per NACK, 20 ms holdoff,
    /// 65536 pending chunks, 65536 devices, 1024 sources, 25% of the
    /// rate per source, 50% beside a sending carousel.
    fn default() -> Self {
        RepairConfig {
            aggregate: Duration::from_millis(2),
            rate_bps: 100_000_000,
            max_chunks_per_nack: 256,
            resend_holdoff: Duration::from_millis(20),
            max_pending: 65_536,
            max_devices: DEFAULT_MAX_DEVICES,
            straggler_window: Duration::from_millis(500),
            mode: RepairMode::Retransmit,
            max_sources: DEFAULT_MAX_SOURCES,
            per_source_percent: 25,
            shared_repair_percent: 50,
        }
    }
}

/// Counters of a [`RepairServer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// NACK frames accepted.
    pub nacks: u64,
    /// Chunks those NACKs asked for (after clipping to the image).
    pub chunks_requested: u64,
    /// Chunks sent to the repair group.
    pub chunks_sent_group: u64,
    /// Chunks sent unicast to one device.
    pub chunks_sent_unicast: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// Requests for a chunk sent to the group within the holdoff (R-REP-3).
    pub suppressed: u64,
    /// Requests for a chunk already pending or queued (merged into it).
    pub merged: u64,
    /// Chunks past the per-NACK cap (R-REP-2).
    pub capped: u64,
    /// Chunks refused because the pending table was full.
    pub overload: u64,
    /// Status frames taken in.
    pub status_frames: u64,
    /// Input datagrams dropped.
    pub drops: u64,
    /// Parity symbols sent to the repair group (R-PAR-5).
    pub parity_sent: u64,
    /// Parity symbols not asked again because as many were just sent for the block.
    pub parity_suppressed: u64,
    /// Lone-straggler chunks sent to the group instead of unicast, since the
    /// address had not sent a third of their bytes (R-REP-8).
    pub unicast_refused: u64,
    /// Chunks refused because their source's budget was spent (R-REP-10).
    pub over_budget: u64,
}

/// One chunk somebody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    /// The first requester's address and device id.
    addr: SocketAddr,
    device_id: u64,
    /// The header session of the first requester's NACK.
    session: u32,
    /// More than one distinct device asked.
    multi: bool,
}

impl Request {
    fn merge(&mut self, device_id: u64) {
        if device_id != self.device_id {
            self.multi = true;
        }
    }
}

/// The sans-IO repair server.
#[derive(Debug, Clone)]
pub struct RepairServer {
    config: RepairConfig,
    geo: Geometry,
    /// One past the last valid global chunk index.
    chunk_end: u32,
    /// The batch being aggregated.
    pending: BTreeMap<u32, Request>,
    batch_due: Option<Instant>,
    /// Chunks ready to send, served in ascending order from `cursor`, wrapping.
    queue: BTreeMap<u32, Request>,
    cursor: u32,
    /// When each recently repaired chunk went to the group.
    group_sent: BTreeMap<u32, Instant>,
    pacing: RepairPacing,
    /// R-REP-8 and R-REP-10 per address; R-REP-10 per device id.
    addrs: Sources<SocketAddr>,
    devices: Sources<u64>,
    /// The device that sent the last NACK, and when.
    last_nacker: Option<(u64, Instant)>,
    /// Until then, more than one device is NACKing: repairs go to the group.
    crowd_until: Instant,
    fleet: Fleet,
    stats: RepairStats,
    /// Parity mode (R-PAR-5..7).
    parity: ParityPlanner,
    /// The last `poll_transmit` left (source, parity) requests queued
    /// because its image did not reach their blocks yet; `poll_timeout`
    /// does not count that queue.
    waiting_for_image: (bool, bool),
}

/// The chunks a NACK asks for, clipped to the image (R-REP-1), at most
/// `take` of them (R-REP-2), in order.
fn taken_chunks(
    ranges: &[wire::ChunkRange],
    chunk_end: u32,
    take: u64,
) -> impl Iterator<Item = u32> + '_ {
    ranges
        .iter()
        .flat_map(move |r| r.start.min(chunk_end)..r.end().min(chunk_end))
        .take(usize::try_from(take).unwrap_or(usize::MAX))
}

impl RepairServer {
    /// A repair server for the image `manifest` describes.
    pub fn new(config: RepairConfig, manifest: &Manifest) -> Self {
        let geo = Geometry::of(manifest);
        let typical = geo.chunk_size as usize + HEADER_LEN + TRAILER_LEN + 16;
        // R-REP-10: a source's share of the chunks the rate carries.
        let chunk_bits = (typical as u64 + IP_UDP_OVERHEAD) * 8;
        let per_source = config
            .rate_bps
            .saturating_mul(u64::from(config.per_source_percent.clamp(1, 100)))
            / 100
            / chunk_bits;
        let per_source = per_source.max(1);
        let burst = per_source.max(u64::from(config.max_chunks_per_nack));
        RepairServer {
            pacing: RepairPacing::new(config.rate_bps, config.shared_repair_percent, typical),
            addrs: Sources::new(config.max_sources, per_source, burst),
            devices: Sources::new(config.max_sources, per_source, burst),
            fleet: Fleet::new(config.max_devices),
            config,
            chunk_end: geo.chunk_end(),
            geo,
            pending: BTreeMap::new(),
            batch_due: None,
            queue: BTreeMap::new(),
            cursor: 0,
            group_sent: BTreeMap::new(),
            last_nacker: None,
            crowd_until: Instant::ZERO,
            stats: RepairStats::default(),
            parity: ParityPlanner::default(),
            waiting_for_image: (false, false),
        }
    }

    /// Whether parity repair is in use: asked for, and the geometry allows it
    /// (R-PAR-2: an even chunk size).
    pub fn parity_active(&self) -> bool {
        self.config.mode == RepairMode::Parity
            && fec::supported(self.geo.chunk_size, self.geo.chunks_per_block)
    }

    // R-PAR-5/6: a NACK asks for `n` symbols of `block`.
    fn request_parity(&mut self, now: Instant, session: u32, block: u32, n: u32) {
        let limits = (self.config.resend_holdoff, self.config.max_pending);
        let asked = self
            .parity
            .request(now, &self.geo, limits, &mut self.stats, session, block, n);
        if asked == Asked::Batched && self.batch_due.is_none() {
            self.batch_due = Some(now + self.config.aggregate);
        }
    }

    /// Charge the repair pacer for a carousel datagram of `len` bytes sent
    /// at `now` on the same link (R-REP-7).
    pub fn charge_shared(&mut self, now: Instant, len: usize) {
        self.pacing.charge_shared(now, len);
    }

    /// Tell the server whether a carousel on the same link has data to send
    /// (it is not holding, R-CAR-5): while it has, repairs keep to
    /// `shared_repair_percent` of the rate (R-REP-9).
    pub fn set_carousel_sending(&mut self, sending: bool) {
        self.pacing.set_carousel_sending(sending);
    }

    /// Pace repairs at `rate_bps` from now on, and their share beside a
    /// carousel at `shared_repair_percent` of it: a separate repair server
    /// learns the carousel's rate from its Announce (R-REP-12).
    pub fn set_rate(&mut self, rate_bps: u64) {
        self.pacing.set_rate(rate_bps);
    }

    /// The rate repairs are paced at now (R-REP-6, R-REP-12).
    pub fn rate_bps(&self) -> u64 {
        self.pacing.rate_bps()
    }

    /// Charge a repair datagram of `len` bytes sent at `now`.
    fn charge(&mut self, now: Instant, len: usize) {
        self.pacing.charge(now, len);
        self.stats.bytes_sent += len as u64;
    }

    /// Take in a datagram (NACK or Status) that arrived from `from` at `now`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        self.handle_decoded(now, from, bytes, &wire::decode(bytes))
    }

    /// [`RepairServer::handle_datagram`] for a datagram the shell decoded once.
    pub fn handle_decoded(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        decoded: &wire::Decoded<'_>,
    ) -> Result<(), DropReason> {
        self.flush_if_due(now);
        // R-REP-8: whatever arrives from an address earns it unicast credit.
        self.addrs.received(now, from, bytes.len());
        let result = match decoded {
            Err(e) => Err(DropReason::Decode(*e)),
            Ok((header, Frame::Status(status))) => {
                self.stats.status_frames += 1;
                // R-STAT-4, R-FLEET-1..3: the fleet decides what the report is worth.
                self.fleet.record_status(now, from, bytes, header, status)
            }
            Ok((header, Frame::Nack(nack))) => {
                if header.image_id != self.geo.image_id {
                    Err(DropReason::OtherImage)
                } else {
                    self.handle_nack(now, from, header.session, nack)
                }
            }
            Ok(_) => Err(DropReason::Unexpected),
        };
        if result.is_err() {
            self.stats.drops += 1;
        }
        result
    }

    fn handle_nack(
        &mut self,
        now: Instant,
        from: SocketAddr,
        session: u32,
        nack: &wire::Nack,
    ) -> Result<(), DropReason> {
        // R-REP-1: clip ranges to the image; a NACK with nothing inside is refused.
        let mut in_image = 0u64;
        for r in &nack.ranges {
            let start = r.start.min(self.chunk_end);
            let end = r.end().min(self.chunk_end);
            in_image += u64::from(end - start);
        }
        if in_image == 0 {
            return Err(DropReason::OutOfManifest);
        }
        // R-REP-2: take at most max_chunks_per_nack; the rest is capped.
        let take = in_image.min(u64::from(self.config.max_chunks_per_nack));
        // R-REP-10: and no more than the address and the device id have
        // credit for; a NACK with none left is refused whole.
        let allowed = self
            .addrs
            .available(now, from, take)
            .min(self.devices.available(now, nack.device_id, take));
        self.stats.over_budget += take - allowed;
        if allowed == 0 {
            return Err(DropReason::Overload);
        }
        self.addrs.spend(from, allowed);
        self.devices.spend(nack.device_id, allowed);
        self.stats.nacks += 1;
        self.stats.chunks_requested += in_image;
        // R-REP-5: several devices NACKing within the straggler window make a crowd.
        if let Some((id, at)) = self.last_nacker {
            if id != nack.device_id && now.saturating_since(at) < self.config.straggler_window {
                self.crowd_until = now + self.config.straggler_window;
            }
        }
        self.last_nacker = Some((nack.device_id, now));
        self.stats.capped += in_image - take;
        let take = allowed;
        if self.parity_active() && now < self.crowd_until {
            // R-PAR-5: count what this device misses per block.
            let req = Request {
                addr: from,
                device_id: nack.device_id,
                session,
                multi: false,
            };
            let asked: Vec<(u32, Request)> = taken_chunks(&nack.ranges, self.chunk_end, take)
                .map(|chunk| (chunk, req))
                .collect();
            self.request_symbols(now, &asked);
            return Ok(());
        }
        for chunk in taken_chunks(&nack.ranges, self.chunk_end, take) {
            self.request(now, from, nack.device_id, session, chunk);
        }
        Ok(())
    }

    /// R-PAR-5/7: what one device asked for, `(chunk, request)` in chunk
    /// order, served per block with parity symbols while the block has
    /// unsent ones and with the named source chunks beyond that.
    fn request_symbols(&mut self, now: Instant, asked: &[(u32, Request)]) {
        let cpb = self.geo.chunks_per_block;
        for run in asked.chunk_by(|a, b| a.0 / cpb == b.0 / cpb) {
            let Some(&(first, req)) = run.first() else {
                continue;
            };
            let block = first / cpb;
            let by_parity = u32::try_from(run.len())
                .unwrap_or(u32::MAX)
                .min(self.parity.unsent(&self.geo, block));
            if by_parity > 0 {
                self.request_parity(now, req.session, block, by_parity);
            }
            for &(chunk, req) in &run[by_parity as usize..] {
                if self.admit(now, req.device_id, chunk) {
                    // Straight to the queue: the batch that would aggregate
                    // it would turn it back into a parity need.
                    self.queue.insert(chunk, req);
                }
            }
        }
    }

    fn request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        device_id: u64,
        session: u32,
        chunk: u32,
    ) {
        if !self.admit(now, device_id, chunk) {
            return;
        }
        self.pending.insert(
            chunk,
            Request {
                addr: from,
                device_id,
                session,
                multi: false,
            },
        );
        // R-REP-4: the window opens with the batch's first NACK.
        if self.batch_due.is_none() {
            self.batch_due = Some(now + self.config.aggregate);
        }
    }

    /// Whether a request of `device_id` for `chunk` needs a new entry: not
    /// when it merges into a queued or pending one, when the group got the
    /// chunk moments ago (R-REP-3), or when the table is full.
    fn admit(&mut self, now: Instant, device_id: u64, chunk: u32) -> bool {
        if let Some(req) = self
            .queue
            .get_mut(&chunk)
            .or_else(|| self.pending.get_mut(&chunk))
        {
            req.merge(device_id);
            self.stats.merged += 1;
            return false;
        }
        // R-REP-3: a chunk the group got moments ago is not sent again
        // (unicast sends are not recorded, so they never suppress).
        if let Some(sent) = self.group_sent.get(&chunk) {
            if now.saturating_since(*sent) < self.config.resend_holdoff {
                self.stats.suppressed += 1;
                return false;
            }
        }
        if self.pending.len() + self.queue.len() >= self.config.max_pending {
            self.stats.overload += 1;
            return false;
        }
        true
    }

    fn flush_if_due(&mut self, now: Instant) {
        if self.batch_due.is_some_and(|due| now >= due) {
            self.batch_due = None;
            let batch = core::mem::take(&mut self.pending);
            if self.parity_active() && now < self.crowd_until {
                // R-PAR-5: a crowd formed while the batch aggregated; the
                // source chunks its first NACK asked for (before anyone knew)
                // count as parity needs like the rest.
                let asked: Vec<(u32, Request)> = batch.into_iter().collect();
                self.request_symbols(now, &asked);
            } else {
                for (chunk, req) in batch {
                    match self.queue.get_mut(&chunk) {
                        Some(q) => q.merge(req.device_id),
                        None => {
                            self.queue.insert(chunk, req);
                        }
                    }
                }
            }
            self.parity.flush();
        }
    }

    /// Advance timers: close the aggregation window when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_if_due(now);
        self.prune_holdoff(now);
    }

    fn prune_holdoff(&mut self, now: Instant) {
        // Bounded memory: forget group sends older than the holdoff once the
        // table grows past the pending bound.
        if self.group_sent.len() > self.config.max_pending {
            let holdoff = self.config.resend_holdoff;
            self.group_sent
                .retain(|_, t| now.saturating_since(*t) < holdoff);
        }
    }

    /// Write the next repair datagram into `buf` if one is queued and pacing
    /// allows it at `now`. `image` is the image the manifest describes, or
    /// the part of it read so far (`firmcast send` reads its image as the
    /// carousel goes): requests for blocks past its end wait in the queue
    /// until a longer `image` covers them. `buf` should hold
    /// [`wire::MAX_DATAGRAM`] bytes.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        image: &[u8],
        buf: &mut [u8],
    ) -> Option<Transmit> {
        self.flush_if_due(now);
        let ready_blocks = self.blocks_within(image.len());
        self.waiting_for_image = (false, false);
        while !self.queue.is_empty() && self.pacing.may_send(now) {
            // Serve in ascending chunk order from the cursor, wrapping, so a
            // steady stream of low-numbered NACKs cannot starve the rest.
            // Blocks not yet in `image` lie past the ready prefix: wrap
            // there too, and stop when even the lowest is not ready.
            let ready = |c: &u32| c / self.geo.chunks_per_block < ready_blocks;
            let (chunk, req) = match self.queue.range(self.cursor..).next() {
                Some((c, r)) if ready(c) => (*c, *r),
                _ => match self.queue.first_key_value() {
                    Some((c, r)) if ready(c) => (*c, *r),
                    _ => {
                        self.waiting_for_image.0 = true;
                        break;
                    }
                },
            };
            self.queue.remove(&chunk);
            self.cursor = chunk.saturating_add(1);
            let block = chunk / self.geo.chunks_per_block;
            let index = chunk % self.geo.chunks_per_block;
            let payload = self.geo.chunk_bytes(image, block, index);
            let Some(payload) = payload else { continue };
            let frame = Frame::Data(Data {
                block,
                chunk: index,
                payload: wire::Bytes(payload),
            });
            let Ok(len) = wire::encode(req.session, self.geo.image_id, FLAG_REPAIR, &frame, buf)
            else {
                continue;
            };
            self.charge(now, len);
            // R-REP-5: a lone straggler gets unicast; a chunk several devices
            // asked for, or any chunk while a crowd is NACKing, goes to the
            // group. R-REP-8: so does one for an address that has not sent a
            // third of its bytes: its NACK may be forged, and the group
            // reaches the asker too if it is genuine.
            let lone = !req.multi && now >= self.crowd_until;
            let dest = if lone && self.addrs.try_unicast(req.addr, len) {
                self.stats.chunks_sent_unicast += 1;
                Dest::Peer(req.addr)
            } else {
                if lone {
                    self.stats.unicast_refused += 1;
                }
                self.stats.chunks_sent_group += 1;
                self.group_sent.insert(chunk, now);
                self.prune_holdoff(now);
                Dest::Group
            };
            return Some(Transmit {
                dest,
                len,
                kind: FrameKind::Data,
            });
        }
        while !self.parity.queue_is_empty() && self.pacing.may_send(now) {
            let Some(block) = self.parity.next_block(ready_blocks) else {
                self.waiting_for_image.1 = true;
                break;
            };
            let limits = (self.config.resend_holdoff, self.config.max_pending);
            let sent = self
                .parity
                .send(now, &self.geo, limits, block, image, buf, &mut self.stats);
            if let Some(len) = sent {
                self.charge(now, len);
                return Some(Transmit {
                    dest: Dest::Group,
                    len,
                    kind: FrameKind::Data,
                });
            }
        }
        None
    }

    /// Blocks wholly inside the first `len` bytes of the image (all of them
    /// when `len` covers the image).
    fn blocks_within(&self, len: usize) -> u32 {
        if len as u64 >= self.geo.image_len {
            return u32::MAX;
        }
        u32::try_from(len as u64 / u64::from(self.geo.block_size.max(1))).unwrap_or(u32::MAX)
    }

    /// The next deadline: the end of the aggregation window, or when the next
    /// queued chunk may go. Requests that wait for more of the image (see
    /// [`RepairServer::poll_transmit`]) set no deadline: the caller polls
    /// again once it has read more.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (source_waits, parity_waits) = self.waiting_for_image;
        let idle = (self.queue.is_empty() || source_waits)
            && (self.parity.queue_is_empty() || parity_waits);
        let send_at = if idle {
            None
        } else {
            Some(self.pacing.next_send_at())
        };
        earliest(self.batch_due, send_at)
    }

    /// Chunks waiting in the current batch plus the send queue.
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.queue.len() + self.parity.backlog()
    }

    /// What devices reported.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The fleet table, to set its roster (R-STAT-4).
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    /// Counters.
    pub fn stats(&self) -> &RepairStats {
        &self.stats
    }
}

#[cfg(test)]
pub(crate) mod tests;

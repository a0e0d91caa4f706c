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

use alloc::collections::BTreeMap;
use core::net::SocketAddr;
use core::time::Duration;

use alloc::vec::Vec;

use self::budget::{Sources, DEFAULT_MAX_SOURCES};
use crate::fec;
use crate::fleet::{Fleet, DEFAULT_MAX_DEVICES};
use crate::manifest::Manifest;
use crate::sender::{Pacer, IP_UDP_OVERHEAD};
use crate::time::{earliest, Instant};
use crate::transmit::{Dest, DropReason, Transmit};
use crate::wire::{self, Data, Frame, ImageId, FLAG_PARITY, FLAG_REPAIR, HEADER_LEN, TRAILER_LEN};

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

/// Blocks whose parity symbols are kept computed.
const PARITY_CACHE_BLOCKS: usize = 64;

/// Configuration of a [`RepairServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfig {
    /// Aggregation window, from the first NACK of a batch.
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
    /// 10 ms window, 100 Mbit/s, 256 chunks per NACK, 20 ms holdoff,
    /// 65536 pending chunks, 65536 devices, 1024 sources, 25% of the
    /// rate per source, 50% beside a sending carousel.
    fn default() -> Self {
        RepairConfig {
            aggregate: Duration::from_millis(10),
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

/// One block some devices need parity for (R-PAR-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockNeed {
    /// The most symbols one device asked for.
    need: u32,
    session: u32,
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
    image_id: ImageId,
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    chunks_per_block: u32,
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
    pacer: Pacer,
    /// R-REP-9: the repairs' own share of a link shared with a carousel,
    /// enforced while `carousel_sending`.
    share: Pacer,
    carousel_sending: bool,
    /// R-REP-8 and R-REP-10 per address; R-REP-10 per device id.
    addrs: Sources<SocketAddr>,
    devices: Sources<u64>,
    /// The device that sent the last NACK, and when.
    last_nacker: Option<(u64, Instant)>,
    /// Until then, more than one device is NACKing: repairs go to the group.
    crowd_until: Instant,
    fleet: Fleet,
    stats: RepairStats,
    /// Parity mode: the batch being aggregated, and the blocks ready to serve.
    parity_pending: BTreeMap<u32, BlockNeed>,
    parity_queue: BTreeMap<u32, BlockNeed>,
    parity_cursor: u32,
    /// The last `poll_transmit` left (source, parity) requests queued
    /// because its image did not reach their blocks yet; `poll_timeout`
    /// does not count that queue.
    waiting_for_image: (bool, bool),
    /// Parity symbols of each block sent so far, which is also the next
    /// index: indices are never repeated, and a block whose `k` symbols all
    /// went out is served with source chunks (R-PAR-7).
    parity_issued: BTreeMap<u32, u32>,
    /// When parity for a block last went out, and how many symbols since the holdoff began.
    parity_sent: BTreeMap<u32, (Instant, u32)>,
    /// Computed parity of recent blocks, GF(2^16) transfers only (bounded).
    parity_cache: BTreeMap<u32, Vec<u8>>,
    /// One GF(2^8) parity symbol, computed when it is sent.
    symbol: Vec<u8>,
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
        let chunk_size = manifest.chunk_size.max(1);
        let chunks_per_block = manifest.chunks_per_block().max(1);
        let blocks = manifest.block_count();
        let end = u64::from(blocks.saturating_sub(1)) * u64::from(chunks_per_block)
            + u64::from(manifest.chunks_in_block(blocks.saturating_sub(1)));
        let typical = chunk_size as usize + HEADER_LEN + TRAILER_LEN + 16;
        // R-REP-10: a source's share of the chunks the rate carries.
        let chunk_bits = (typical as u64 + IP_UDP_OVERHEAD) * 8;
        let per_source = config
            .rate_bps
            .saturating_mul(u64::from(config.per_source_percent.clamp(1, 100)))
            / 100
            / chunk_bits;
        let per_source = per_source.max(1);
        let burst = per_source.max(u64::from(config.max_chunks_per_nack));
        let share_bps = config
            .rate_bps
            .saturating_mul(u64::from(config.shared_repair_percent.clamp(1, 100)))
            / 100;
        RepairServer {
            pacer: Pacer::new(config.rate_bps, typical, Instant::ZERO),
            share: Pacer::new(share_bps, typical, Instant::ZERO),
            carousel_sending: false,
            addrs: Sources::new(config.max_sources, per_source, burst),
            devices: Sources::new(config.max_sources, per_source, burst),
            fleet: Fleet::new(config.max_devices),
            config,
            image_id: manifest.image_id,
            image_len: manifest.image_len,
            block_size: manifest.block_size,
            chunk_size,
            chunks_per_block,
            chunk_end: u32::try_from(end).unwrap_or(u32::MAX),
            pending: BTreeMap::new(),
            batch_due: None,
            queue: BTreeMap::new(),
            cursor: 0,
            group_sent: BTreeMap::new(),
            last_nacker: None,
            crowd_until: Instant::ZERO,
            stats: RepairStats::default(),
            parity_pending: BTreeMap::new(),
            parity_queue: BTreeMap::new(),
            parity_cursor: 0,
            waiting_for_image: (false, false),
            parity_issued: BTreeMap::new(),
            parity_sent: BTreeMap::new(),
            parity_cache: BTreeMap::new(),
            symbol: Vec::new(),
        }
    }

    /// Whether parity repair is in use: asked for, and the geometry allows it
    /// (R-PAR-2: an even chunk size).
    pub fn parity_active(&self) -> bool {
        self.config.mode == RepairMode::Parity
            && fec::supported(self.chunk_size, self.chunks_per_block)
    }

    fn chunks_in_block(&self, block: u32) -> u32 {
        let start = block.saturating_mul(self.chunks_per_block);
        self.chunk_end
            .saturating_sub(start)
            .min(self.chunks_per_block)
    }

    // R-PAR-5/6: a NACK asks for `n` symbols of `block`, less those sent to
    // the group within the holdoff (they may have crossed the NACK).
    fn request_parity(&mut self, now: Instant, session: u32, block: u32, n: u32) {
        let recent = match self.parity_sent.get(&block) {
            Some((at, count)) if now.saturating_since(*at) < self.config.resend_holdoff => *count,
            _ => 0,
        };
        let n = n.saturating_sub(recent);
        if n == 0 {
            self.stats.parity_suppressed += 1;
            return;
        }
        let k = self.chunks_in_block(block);
        let n = n.min(fec::parity_count(k));
        if let Some(q) = self.parity_queue.get_mut(&block) {
            q.need = q.need.max(n);
            self.stats.merged += 1;
            return;
        }
        match self.parity_pending.get_mut(&block) {
            Some(p) => {
                p.need = p.need.max(n);
                self.stats.merged += 1;
            }
            None => {
                if self.parity_pending.len() + self.parity_queue.len() >= self.config.max_pending {
                    self.stats.overload += 1;
                    return;
                }
                self.parity_pending
                    .insert(block, BlockNeed { need: n, session });
            }
        }
        if self.batch_due.is_none() {
            self.batch_due = Some(now + self.config.aggregate);
        }
    }

    /// Charge the repair pacer for a carousel datagram of `len` bytes sent
    /// at `now` on the same link (R-REP-7).
    pub fn charge_shared(&mut self, now: Instant, len: usize) {
        self.pacer.charge(now, len);
    }

    /// Tell the server whether a carousel on the same link has data to send
    /// (it is not holding, R-CAR-5): while it has, repairs keep to
    /// `shared_repair_percent` of the rate (R-REP-9).
    pub fn set_carousel_sending(&mut self, sending: bool) {
        self.carousel_sending = sending;
    }

    /// Pace repairs at `rate_bps` from now on, and their share beside a
    /// carousel at `shared_repair_percent` of it: a separate repair server
    /// learns the carousel's rate from its Announce (R-REP-12).
    pub fn set_rate(&mut self, rate_bps: u64) {
        if rate_bps == self.pacer.rate_bps() {
            return;
        }
        self.pacer.set_rate(rate_bps);
        let share = u64::from(self.config.shared_repair_percent.clamp(1, 100));
        self.share.set_rate(rate_bps.saturating_mul(share) / 100);
    }

    /// The rate repairs are paced at now (R-REP-6, R-REP-12).
    pub fn rate_bps(&self) -> u64 {
        self.pacer.rate_bps()
    }

    /// Whether pacing lets a repair go at `now` (R-REP-6, R-REP-7, R-REP-9).
    fn may_send(&self, now: Instant) -> bool {
        self.pacer.ready(now) && (!self.carousel_sending || self.share.ready(now))
    }

    /// When pacing next lets a repair go.
    fn next_send_at(&self) -> Instant {
        if self.carousel_sending {
            self.pacer.next_at().max(self.share.next_at())
        } else {
            self.pacer.next_at()
        }
    }

    /// Charge a repair datagram of `len` bytes sent at `now`.
    fn charge(&mut self, now: Instant, len: usize) {
        self.pacer.charge(now, len);
        self.share.charge(now, len);
        self.stats.bytes_sent += len as u64;
    }

    /// Take in a datagram (NACK or Status) that arrived from `from` at `now`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        self.flush_if_due(now);
        // R-REP-8: whatever arrives from an address earns it unicast credit.
        self.addrs.received(now, from, bytes.len());
        let result = match wire::decode(bytes) {
            Err(e) => Err(DropReason::Decode(e)),
            Ok((_, Frame::Status(_))) => {
                self.stats.status_frames += 1;
                // R-STAT-4, R-FLEET-1..3: the fleet decides what the report is worth.
                self.fleet.record(now, from, bytes)
            }
            Ok((header, Frame::Nack(nack))) => {
                if header.image_id != self.image_id {
                    Err(DropReason::OtherImage)
                } else {
                    self.handle_nack(now, from, header.session, &nack)
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
        let cpb = self.chunks_per_block;
        for run in asked.chunk_by(|a, b| a.0 / cpb == b.0 / cpb) {
            let Some(&(first, req)) = run.first() else {
                continue;
            };
            let block = first / cpb;
            let by_parity = u32::try_from(run.len())
                .unwrap_or(u32::MAX)
                .min(self.parity_unsent(block));
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

    /// Parity symbols of `block` not sent yet (R-PAR-7).
    fn parity_unsent(&self, block: u32) -> u32 {
        let issued = self.parity_issued.get(&block).copied().unwrap_or(0);
        fec::parity_count(self.chunks_in_block(block)).saturating_sub(issued)
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
            self.batch_due = None;
            let batch = core::mem::take(&mut self.parity_pending);
            for (block, need) in batch {
                let q = self.parity_queue.entry(block).or_insert(need);
                q.need = q.need.max(need.need);
            }
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
        while !self.queue.is_empty() && self.may_send(now) {
            // Serve in ascending chunk order from the cursor, wrapping, so a
            // steady stream of low-numbered NACKs cannot starve the rest.
            // Blocks not yet in `image` lie past the ready prefix: wrap
            // there too, and stop when even the lowest is not ready.
            let ready = |c: &u32| c / self.chunks_per_block < ready_blocks;
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
            let block = chunk / self.chunks_per_block;
            let index = chunk % self.chunks_per_block;
            let payload = wire::chunk_bytes(
                image,
                self.image_len,
                self.block_size,
                self.chunk_size,
                block,
                index,
            );
            let Some(payload) = payload else { continue };
            let frame = Frame::Data(Data {
                block,
                chunk: index,
                payload: wire::Bytes(payload),
            });
            let Ok(len) = wire::encode(req.session, self.image_id, FLAG_REPAIR, &frame, buf) else {
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
            return Some(Transmit { dest, len });
        }
        while !self.parity_queue.is_empty() && self.may_send(now) {
            let ready = |b: &u32| *b < ready_blocks;
            let block = match self.parity_queue.range(self.parity_cursor..).next() {
                Some((b, _)) if ready(b) => *b,
                _ => match self.parity_queue.first_key_value() {
                    Some((b, _)) if ready(b) => *b,
                    _ => {
                        self.waiting_for_image.1 = true;
                        break;
                    }
                },
            };
            if let Some(t) = self.send_parity(now, block, image, buf) {
                return Some(t);
            }
        }
        None
    }

    /// Blocks wholly inside the first `len` bytes of the image (all of them
    /// when `len` covers the image).
    fn blocks_within(&self, len: usize) -> u32 {
        if len as u64 >= self.image_len {
            return u32::MAX;
        }
        u32::try_from(len as u64 / u64::from(self.block_size.max(1))).unwrap_or(u32::MAX)
    }

    /// One parity symbol of `block`, queued in the parity queue (R-PAR-5).
    fn send_parity(
        &mut self,
        now: Instant,
        block: u32,
        image: &[u8],
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let mut need = self.parity_queue.remove(&block)?;
        if need.need == 0 || self.parity_unsent(block) == 0 {
            // R-PAR-7: every symbol went out; the need is dropped (needs were
            // capped at the unsent symbols when asked for).
            return None;
        }
        let issued = self.parity_issued.entry(block).or_insert(0);
        let index = *issued;
        *issued += 1;
        need.need -= 1;
        if need.need > 0 {
            self.parity_queue.insert(block, need);
        } else {
            self.parity_cursor = block.saturating_add(1);
        }
        let start = usize::try_from(u64::from(block) * u64::from(self.block_size)).ok()?;
        let end = usize::try_from(
            (u64::from(block) * u64::from(self.block_size) + u64::from(self.block_size))
                .min(self.image_len),
        )
        .ok()?;
        let source = image.get(start..end)?;
        let cs = self.chunk_size as usize;
        let payload: &[u8] = if fec::uses_gf256(self.chunks_per_block) {
            // One symbol costs k multiply-adds: computed when sent, not cached.
            self.symbol.resize(cs, 0);
            fec::encode_symbol(source, cs, self.chunks_per_block, index, &mut self.symbol).ok()?;
            &self.symbol
        } else {
            if !self.parity_cache.contains_key(&block) {
                let parity = fec::encode_block(source, cs, self.chunks_per_block).ok()?;
                if self.parity_cache.len() >= PARITY_CACHE_BLOCKS {
                    // Bounded: forget the block farthest from this one.
                    let far = *self.parity_cache.keys().max_by_key(|b| b.abs_diff(block))?;
                    self.parity_cache.remove(&far);
                }
                self.parity_cache.insert(block, parity);
            }
            let parity = self.parity_cache.get(&block)?;
            parity.get(index as usize * cs..(index as usize + 1) * cs)?
        };
        let frame = Frame::Data(Data {
            block,
            chunk: index,
            payload: wire::Bytes(payload),
        });
        let len = wire::encode(
            need.session,
            self.image_id,
            FLAG_REPAIR | FLAG_PARITY,
            &frame,
            buf,
        )
        .ok()?;
        self.charge(now, len);
        self.stats.parity_sent += 1;
        let e = self.parity_sent.entry(block).or_insert((now, 0));
        if now.saturating_since(e.0) >= self.config.resend_holdoff {
            *e = (now, 0);
        }
        e.1 += 1;
        if self.parity_sent.len() > self.config.max_pending {
            let holdoff = self.config.resend_holdoff;
            self.parity_sent
                .retain(|_, (t, _)| now.saturating_since(*t) < holdoff);
        }
        Some(Transmit {
            dest: Dest::Group,
            len,
        })
    }

    /// The next deadline: the end of the aggregation window, or when the next
    /// queued chunk may go. Requests that wait for more of the image (see
    /// [`RepairServer::poll_transmit`]) set no deadline: the caller polls
    /// again once it has read more.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (source_waits, parity_waits) = self.waiting_for_image;
        let idle = (self.queue.is_empty() || source_waits)
            && (self.parity_queue.is_empty() || parity_waits);
        let send_at = if idle {
            None
        } else {
            Some(self.next_send_at())
        };
        earliest(self.batch_due, send_at)
    }

    /// Chunks waiting in the current batch plus the send queue.
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.queue.len() + self.parity_pending.len() + self.parity_queue.len()
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
pub(crate) mod tests {
    use super::*;
    use crate::sender::testutil::{image, manifest};
    use crate::sender::IP_UDP_OVERHEAD;
    use crate::wire::{decode, ChunkRange, Nack, MAX_DATAGRAM};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr};

    fn dev(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 7000)
    }

    /// R-REP-8: `bytes` arriving from `addr` (any datagram counts, even
    /// one that is dropped) earn it three times as many unicast bytes.
    fn earn_unicast(r: &mut RepairServer, now: Instant, addr: SocketAddr, bytes: usize) {
        let filler = vec![0u8; bytes];
        assert!(r.handle_datagram(now, addr, &filler).is_err());
    }

    fn nack_bytes(
        session: u32,
        image_id: ImageId,
        device_id: u64,
        ranges: &[(u32, u32)],
    ) -> Vec<u8> {
        let mut rs = heapless::Vec::new();
        for &(start, len) in ranges {
            rs.push(ChunkRange { start, len }).expect("few ranges");
        }
        let mut buf = vec![0u8; 1024];
        let n = wire::encode(
            session,
            image_id,
            0,
            &Frame::Nack(Nack {
                device_id,
                ranges: rs,
            }),
            &mut buf,
        )
        .expect("encode");
        buf.truncate(n);
        buf
    }

    #[derive(Debug)]
    struct Sent {
        dest: Dest,
        session: u32,
        block: u32,
        chunk: u32,
    }

    /// Poll until idle, jumping the clock to each deadline; checks every
    /// frame decodes as a repair Data frame whose payload is the image's.
    fn drain(
        r: &mut RepairServer,
        img: &[u8],
        m: &Manifest,
        mut now: Instant,
        until: Instant,
    ) -> (Vec<Sent>, Instant) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        loop {
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, img, &mut buf) {
                let (h, f) = decode(&buf[..t.len]).expect("repair frames decode");
                assert_eq!(h.flags, FLAG_REPAIR);
                assert_eq!(h.image_id, m.image_id);
                let Frame::Data(d) = f else {
                    panic!("repair sent {f:?}")
                };
                let start = d.block as usize * m.block_size as usize
                    + d.chunk as usize * m.chunk_size as usize;
                assert_eq!(d.payload.0, &img[start..start + d.payload.0.len()]);
                out.push(Sent {
                    dest: t.dest,
                    session: h.session,
                    block: d.block,
                    chunk: d.chunk,
                });
            }
            match r.poll_timeout() {
                Some(t) if t <= until => now = t.max(now),
                _ => return (out, now),
            }
        }
    }

    fn setup(config: RepairConfig) -> (RepairServer, Vec<u8>, Manifest) {
        // 4 blocks of 8 chunks; the last block holds 3 chunks (the last short).
        let img = image(3 * 8192 + 2 * 1024 + 500);
        let (m, _signed) = manifest(&img, 8192, 1024);
        (RepairServer::new(config, &m), img, m)
    }

    /// Poll until idle like [`drain`], for parity mode: returns (dest,
    /// parity?, block, index) and checks every payload (source chunk or the
    /// block's parity symbol).
    fn drain_parity(
        r: &mut RepairServer,
        img: &[u8],
        m: &Manifest,
        mut now: Instant,
        until: Instant,
    ) -> (Vec<(Dest, bool, u32, u32)>, Instant) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        loop {
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, img, &mut buf) {
                let (h, f) = decode(&buf[..t.len]).expect("repair frames decode");
                let Frame::Data(d) = f else {
                    panic!("repair sent {f:?}")
                };
                let bs = m.block_size as usize;
                let cs = m.chunk_size as usize;
                let block =
                    &img[d.block as usize * bs..((d.block as usize + 1) * bs).min(img.len())];
                let parity = h.flags & FLAG_PARITY != 0;
                let want = if parity {
                    let all = fec::encode_block(block, cs, m.chunks_per_block()).expect("encode");
                    all[d.chunk as usize * cs..(d.chunk as usize + 1) * cs].to_vec()
                } else {
                    block[d.chunk as usize * cs..((d.chunk as usize + 1) * cs).min(block.len())]
                        .to_vec()
                };
                assert_eq!(d.payload.0, &want[..]);
                out.push((t.dest, parity, d.block, d.chunk));
            }
            match r.poll_timeout() {
                Some(t) if t <= until => now = t.max(now),
                _ => return (out, now),
            }
        }
    }

    fn parity_setup() -> (RepairServer, Vec<u8>, Manifest) {
        setup(RepairConfig {
            mode: RepairMode::Parity,
            ..RepairConfig::default()
        })
    }

    #[test]
    fn r_par_5_6_the_neediest_device_sets_the_count_with_fresh_indices() {
        let (mut r, img, m) = parity_setup();
        assert!(r.parity_active());
        let t0 = Instant::from_micros(1_000);
        // Block 1 (global 8..16): one device misses 2 chunks, another 3.
        r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(9, 2)]))
            .expect("nack");
        r.handle_datagram(
            t0,
            dev(2),
            &nack_bytes(1, m.image_id, 2, &[(8, 1), (12, 2)]),
        )
        .expect("nack");
        let (sent, now) = drain_parity(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
        assert_eq!(
            sent,
            [0, 1, 2].map(|i| (Dest::Group, true, 1, i)),
            "as many symbols as the neediest device asked for"
        );
        // NACKs built before those symbols arrived, within the holdoff: one
        // asking no more than was sent adds nothing, one asking more adds the
        // difference.
        let t1 = now + Duration::from_millis(2);
        r.handle_datagram(t1, dev(3), &nack_bytes(1, m.image_id, 3, &[(8, 3)]))
            .expect("nack");
        assert_eq!(r.stats().parity_suppressed, 1);
        r.handle_datagram(t1, dev(4), &nack_bytes(1, m.image_id, 4, &[(8, 4)]))
            .expect("nack");
        let (sent, now) = drain_parity(&mut r, &img, &m, t1, t1 + Duration::from_millis(11));
        assert_eq!(sent, [(Dest::Group, true, 1, 3)]);
        // After the holdoff a NACK counts only what its device still misses
        // (it subtracted the symbols it holds): that many fresh ones.
        let t2 = now + RepairConfig::default().resend_holdoff;
        r.handle_datagram(t2, dev(1), &nack_bytes(1, m.image_id, 1, &[(9, 2)]))
            .expect("nack");
        let (sent, _) = drain_parity(&mut r, &img, &m, t2, t2 + Duration::from_millis(11));
        assert_eq!(sent, [4, 5].map(|i| (Dest::Group, true, 1, i)));
        assert_eq!(r.stats().parity_sent, 6);
        assert_eq!(
            r.stats().chunks_sent_group + r.stats().chunks_sent_unicast,
            0
        );
    }

    #[test]
    fn requests_for_blocks_past_a_partial_image_wait_until_it_covers_them() {
        // Retransmit: a lone device misses chunks of blocks 0 and 2 while
        // only block 0 has been read.
        let (mut r, img, m) = setup(RepairConfig::default());
        let t0 = Instant::from_micros(1_000);
        r.handle_datagram(
            t0,
            dev(1),
            &nack_bytes(1, m.image_id, 1, &[(2, 1), (17, 2)]),
        )
        .expect("nack");
        let until = |t: Instant| t + Duration::from_millis(20);
        let (sent, now) = drain(&mut r, &img[..8192], &m, t0, until(t0));
        let got: Vec<_> = sent.iter().map(|s| (s.block, s.chunk)).collect();
        assert_eq!(got, [(0, 2)], "only the block that is read");
        assert_eq!(r.backlog(), 2, "block 2's chunks wait, not dropped");
        let (sent, _) = drain(&mut r, &img, &m, now, until(now));
        let got: Vec<_> = sent.iter().map(|s| (s.block, s.chunk)).collect();
        assert_eq!(got, [(2, 1), (2, 2)]);
        assert_eq!(r.backlog(), 0);

        // Parity: a crowd for blocks 0 and 2, then the short last block 3.
        let (mut r, img, m) = parity_setup();
        for d in 1..=2 {
            r.handle_datagram(
                t0,
                dev(d),
                &nack_bytes(1, m.image_id, u64::from(d), &[(1, 1), (16, 2), (24, 1)]),
            )
            .expect("nack");
        }
        let (sent, now) = drain_parity(&mut r, &img[..3 * 8192], &m, t0, until(t0));
        assert_eq!(
            sent,
            [
                (Dest::Group, true, 0, 0),
                (Dest::Group, true, 2, 0),
                (Dest::Group, true, 2, 1)
            ]
        );
        assert_eq!(r.backlog(), 1, "the last block waits for the whole image");
        let (sent, _) = drain_parity(&mut r, &img, &m, now, until(now));
        assert_eq!(sent, [(Dest::Group, true, 3, 0)]);
    }

    #[test]
    fn r_par_5_a_crowd_that_forms_within_the_batch_gets_parity_only() {
        let (mut r, img, m) = parity_setup();
        let t0 = Instant::from_micros(1_000);
        // The first NACK comes before anyone knows there is a crowd ...
        r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 3)]))
            .expect("nack");
        // ... a second device's NACK inside the aggregation window makes one.
        let t1 = t0 + Duration::from_millis(3);
        r.handle_datagram(t1, dev(2), &nack_bytes(1, m.image_id, 2, &[(1, 2)]))
            .expect("nack");
        let (sent, _) = drain_parity(&mut r, &img, &m, t1, t1 + Duration::from_millis(20));
        assert_eq!(sent, [0, 1, 2].map(|i| (Dest::Group, true, 0, i)));
    }

    #[test]
    fn r_par_7_a_block_whose_parity_is_spent_is_served_with_the_source_chunks_named() {
        // Blocks of k = 8 chunks have 8 parity symbols. A device that lost a
        // whole block (an end-game fetch) needs all of them; once each went
        // out, sending one again would help only a device that lost that very
        // symbol, so what is asked for beyond them is sent as the source
        // chunks the NACK names, which the asker lacks for sure.
        let (mut r, img, m) = parity_setup();
        let holdoff = RepairConfig::default().resend_holdoff;
        let crowd = |r: &mut RepairServer, t: Instant, asks: [&[(u32, u32)]; 2]| {
            for (d, ranges) in (1u8..).zip(asks) {
                r.handle_datagram(t, dev(d), &nack_bytes(1, m.image_id, u64::from(d), ranges))
                    .expect("nack");
            }
        };
        let window = |t: Instant| t + Duration::from_millis(20);
        let t0 = Instant::from_micros(1_000);
        crowd(&mut r, t0, [&[(8, 5)], &[(8, 5)]]);
        let (sent, now) = drain_parity(&mut r, &img, &m, t0, window(t0));
        assert_eq!(sent, [0, 1, 2, 3, 4].map(|i| (Dest::Group, true, 1, i)));
        // Five asked for again, three symbols unsent: those three, and the
        // last two chunks named (global 11 and 12) as source.
        let t1 = now + holdoff;
        crowd(&mut r, t1, [&[(8, 5)], &[(10, 1)]]);
        let (sent, now) = drain_parity(&mut r, &img, &m, t1, window(t1));
        assert_eq!(
            sent,
            [
                (Dest::Group, false, 1, 3),
                (Dest::Group, false, 1, 4),
                (Dest::Group, true, 1, 5),
                (Dest::Group, true, 1, 6),
                (Dest::Group, true, 1, 7),
            ]
        );
        // Spent: source chunks only, each once for both devices.
        let t2 = now + holdoff;
        crowd(&mut r, t2, [&[(9, 2)], &[(9, 1)]]);
        let (sent, _) = drain_parity(&mut r, &img, &m, t2, window(t2));
        assert_eq!(
            sent,
            [(Dest::Group, false, 1, 1), (Dest::Group, false, 1, 2)]
        );
        assert_eq!(r.stats().parity_sent, 8, "no parity index sent twice");
    }

    #[test]
    fn r_par_5_a_lone_straggler_still_gets_source_chunks_unicast() {
        let (mut r, img, m) = parity_setup();
        let t0 = Instant::from_micros(1_000);
        earn_unicast(&mut r, t0, dev(7), 1_000);
        r.handle_datagram(t0, dev(7), &nack_bytes(1, m.image_id, 7, &[(10, 2)]))
            .expect("nack");
        let (sent, _) = drain_parity(&mut r, &img, &m, t0, t0 + Duration::from_millis(20));
        assert_eq!(
            sent,
            [
                (Dest::Peer(dev(7)), false, 1, 2),
                (Dest::Peer(dev(7)), false, 1, 3)
            ]
        );
        assert_eq!(r.stats().parity_sent, 0);
    }

    #[test]
    fn r_rep_4_5_two_devices_same_chunk_one_group_send() {
        let (mut r, img, m) = setup(RepairConfig::default());
        let t0 = Instant::from_micros(1_000);
        r.handle_datagram(t0, dev(1), &nack_bytes(11, m.image_id, 1, &[(9, 1)]))
            .expect("nack 1");
        // Inside the window: nothing goes yet.
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert!(r.poll_transmit(t0, &img, &mut buf).is_none());
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(10)));
        r.handle_datagram(
            t0 + Duration::from_millis(4),
            dev(2),
            &nack_bytes(22, m.image_id, 2, &[(9, 1)]),
        )
        .expect("nack 2");
        let (sent, _) = drain(
            &mut r,
            &img,
            &m,
            t0 + Duration::from_millis(4),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].dest, Dest::Group);
        assert_eq!((sent[0].block, sent[0].chunk), (1, 1));
        assert_eq!(sent[0].session, 11, "first requester's session");
        assert_eq!(r.stats().chunks_sent_group, 1);
        assert_eq!(r.stats().merged, 1);
        assert_eq!(r.stats().nacks, 2);
    }

    #[test]
    fn r_rep_5_lone_requester_gets_unicast_in_chunk_order() {
        let (mut r, img, m) = setup(RepairConfig::default());
        let t0 = Instant::from_micros(500);
        earn_unicast(&mut r, t0, dev(3), 1_500);
        // Last block: global 24..27, clipped (the range runs past the image).
        r.handle_datagram(
            t0,
            dev(3),
            &nack_bytes(5, m.image_id, 3, &[(2, 2), (25, 100)]),
        )
        .expect("nack");
        let (sent, _) = drain(&mut r, &img, &m, t0, t0 + Duration::from_secs(1));
        let got: Vec<(u32, u32)> = sent.iter().map(|s| (s.block, s.chunk)).collect();
        assert_eq!(got, [(0, 2), (0, 3), (3, 1), (3, 2)]);
        assert!(sent
            .iter()
            .all(|s| s.dest == Dest::Peer(dev(3)) && s.session == 5));
        assert_eq!(r.stats().chunks_requested, 4);
        assert_eq!(r.stats().chunks_sent_unicast, 4);
        assert_eq!(r.stats().capped, 0);
    }

    #[test]
    fn r_rep_1_nack_outside_the_image_is_refused() {
        let (mut r, _img, m) = setup(RepairConfig::default());
        let res = r.handle_datagram(
            Instant::ZERO,
            dev(1),
            &nack_bytes(1, m.image_id, 1, &[(27, 5), (1000, 1)]),
        );
        assert_eq!(res, Err(DropReason::OutOfManifest));
        assert_eq!(r.backlog(), 0);
        assert_eq!(r.stats().drops, 1);
    }

    #[test]
    fn r_rep_2_per_nack_cap() {
        let config = RepairConfig {
            max_chunks_per_nack: 5,
            ..RepairConfig::default()
        };
        let (mut r, img, m) = setup(config);
        r.handle_datagram(
            Instant::ZERO,
            dev(1),
            &nack_bytes(1, m.image_id, 1, &[(0, 3), (10, 10)]),
        )
        .expect("nack");
        assert_eq!(r.stats().chunks_requested, 13);
        assert_eq!(r.stats().capped, 8);
        let (sent, _) = drain(
            &mut r,
            &img,
            &m,
            Instant::ZERO,
            Instant::from_micros(1_000_000),
        );
        let got: Vec<(u32, u32)> = sent.iter().map(|s| (s.block, s.chunk)).collect();
        assert_eq!(got, [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)]);
    }

    #[test]
    fn r_rep_3_holdoff_suppresses_group_resends_but_not_after_unicast() {
        // Per-chunk decisions only: no crowd detection.
        let (mut r, img, m) = setup(RepairConfig {
            straggler_window: Duration::ZERO,
            ..RepairConfig::default()
        });
        let t0 = Instant::from_micros(1_000);
        earn_unicast(&mut r, t0, dev(1), 400);
        earn_unicast(&mut r, t0, dev(3), 400);
        r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 1)]))
            .expect("nack");
        r.handle_datagram(t0, dev(2), &nack_bytes(1, m.image_id, 2, &[(0, 1)]))
            .expect("nack");
        r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(5, 1)]))
            .expect("nack");
        let (sent, now) = drain(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].dest, Dest::Group);
        assert_eq!(sent[1].dest, Dest::Peer(dev(1)));
        // 5 ms later both ask again: the group chunk is held off, the unicast one is not.
        let t1 = now + Duration::from_millis(5);
        r.handle_datagram(t1, dev(3), &nack_bytes(1, m.image_id, 3, &[(0, 1), (5, 1)]))
            .expect("nack");
        assert_eq!(r.stats().suppressed, 1);
        let (sent, now) = drain(&mut r, &img, &m, t1, t1 + Duration::from_millis(50));
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].block, sent[0].chunk, sent[0].dest),
            (0, 5, Dest::Peer(dev(3)))
        );
        // After the holdoff the group chunk is served again.
        let t2 = now + Duration::from_millis(30);
        r.handle_datagram(t2, dev(3), &nack_bytes(1, m.image_id, 3, &[(0, 1)]))
            .expect("nack");
        let (sent, _) = drain(&mut r, &img, &m, t2, t2 + Duration::from_millis(50));
        assert_eq!(sent.len(), 1);
        assert_eq!(r.stats().suppressed, 1);
    }

    #[test]
    fn r_rep_5_while_a_crowd_nacks_even_single_requests_go_to_the_group() {
        let (mut r, img, m) = setup(RepairConfig::default());
        let t0 = Instant::from_micros(1_000);
        r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 1)]))
            .expect("nack");
        r.handle_datagram(t0, dev(2), &nack_bytes(1, m.image_id, 2, &[(3, 1)]))
            .expect("nack");
        let (sent, now) = drain(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|s| s.dest == Dest::Group), "{sent:?}");
        // Once the crowd has been quiet for the straggler window, a lone device gets unicast.
        let later = now + RepairConfig::default().straggler_window + Duration::from_millis(1);
        earn_unicast(&mut r, later, dev(2), 400);
        r.handle_datagram(later, dev(2), &nack_bytes(1, m.image_id, 2, &[(7, 1)]))
            .expect("nack");
        let (sent, _) = drain(&mut r, &img, &m, later, later + Duration::from_millis(11));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].dest, Dest::Peer(dev(2)));
    }

    /// A forged NACK names its victim as source. (address, device id) of
    /// NACK `i` when the forger rotates both, so that no per-source account
    /// holds it back.
    fn forged(i: u32) -> (SocketAddr, u64) {
        let [_, _, a, b] = i.to_be_bytes();
        let ip = Ipv4Addr::new(10, 66, a, b);
        (
            SocketAddr::new(IpAddr::V4(ip), 7000),
            0xF0_0000 + u64::from(i),
        )
    }

    #[test]
    fn r_rep_8_a_forged_nack_gets_no_unicast_beyond_three_times_its_bytes() {
        // 1 MiB in 1 KiB chunks: 1024 chunks. The victim never sent anything;
        // a forger sends NACKs for 256 chunks each with the victim's
        // address, spaced beyond the straggler window so each is a "lone
        // straggler" (R-REP-5), the case that went unicast unchecked.
        let img = image(1 << 20);
        let (m, _signed) = manifest(&img, 8192, 1024);
        let mut r = RepairServer::new(RepairConfig::default(), &m);
        let victim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66)), 5555);
        let mut now = Instant::from_micros(1_000);
        let (mut bytes_in, mut to_victim, mut to_group) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for i in 0..60u32 {
            let nack = nack_bytes(1, m.image_id, 0xBAD, &[((i * 256) % 1024, 256)]);
            bytes_in += nack.len() as u64;
            let _ = r.handle_datagram(now, victim, &nack);
            let until = now + Duration::from_millis(600);
            loop {
                r.handle_timeout(now);
                while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
                    match t.dest {
                        Dest::Peer(a) if a == victim => to_victim += t.len as u64,
                        Dest::Group => to_group += t.len as u64,
                        d => panic!("repair to {d:?}"),
                    }
                }
                match r.poll_timeout() {
                    Some(t) if t <= until => now = t.max(now),
                    _ => break,
                }
            }
            now = until;
        }
        std::println!(
            "R-REP-8 amplification: {to_victim} bytes to the forged source for {bytes_in} bytes in \
             ({:.2}x); {to_group} bytes went to the repair group instead",
            to_victim as f64 / bytes_in as f64
        );
        assert!(
            to_victim <= budget::AMPLIFICATION_FACTOR * bytes_in,
            "{to_victim} bytes to the victim for {bytes_in} in"
        );
        assert!(r.stats().unicast_refused > 0);
        assert!(
            to_group > 0,
            "a genuine straggler is still served, by the group"
        );
    }

    /// Forged NACKs for 256 chunks each, from ever new addresses and device
    /// ids (so no per-source budget holds them, R-REP-10), `per_sec` a
    /// second (none with 0) for session 7.
    pub(crate) struct ForgedNacks {
        next: Instant,
        gap: Duration,
        i: u32,
    }

    impl ForgedNacks {
        /// Starting at time zero, until `end`.
        pub(crate) fn new(per_sec: u64, end: Instant) -> Self {
            ForgedNacks {
                next: if per_sec == 0 { end } else { Instant::ZERO },
                gap: Duration::from_micros(1_000_000 / per_sec.max(1)),
                i: 0,
            }
        }

        /// Hand `r` the NACK due at `now`, if one is.
        pub(crate) fn feed(&mut self, now: Instant, r: &mut RepairServer, image_id: ImageId) {
            if now < self.next {
                return;
            }
            let (from, id) = forged(self.i);
            let start = (self.i * 256) % 4096;
            let _ = r.handle_datagram(now, from, &nack_bytes(7, image_id, id, &[(start, 256)]));
            self.i += 1;
            self.next = now + self.gap;
        }

        /// When the next NACK is due.
        pub(crate) fn next_at(&self) -> Instant {
            self.next
        }
    }

    /// Runs a carousel and an inline repair server sharing one pacer
    /// (R-REP-7) for `secs` virtual seconds at `rate` while `nacks_per_sec`
    /// forged NACKs for 256 chunks each arrive; returns (carousel bytes,
    /// repair bytes) including IPv4/UDP headers.
    fn shared_link(rate: u64, secs: u64, nacks_per_sec: u64) -> (u64, u64) {
        use crate::sender::{Sender, SenderConfig};
        let img = image(4 << 20);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mut sender = Sender::new(SenderConfig::new(7, rate), &m, signed, Instant::ZERO);
        let mut r = RepairServer::new(
            RepairConfig {
                rate_bps: rate,
                mode: RepairMode::Parity,
                ..RepairConfig::default()
            },
            &m,
        );
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (mut carousel, mut repairs) = (0u64, 0u64);
        let end = Instant::from_micros(secs * 1_000_000);
        let mut nacks = ForgedNacks::new(nacks_per_sec, end);
        let mut now = Instant::ZERO;
        while now < end {
            nacks.feed(now, &mut r, m.image_id);
            // As `firmcast send --repair-listen` drives them: repairs due
            // first, then the carousel, each charged to the other.
            r.set_carousel_sending(!sender.holding());
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
                sender.charge_shared(now, t.len);
                repairs += t.len as u64 + IP_UDP_OVERHEAD;
            }
            while let Some(t) = sender.poll_transmit(now, &img, &mut buf) {
                r.charge_shared(now, t.len);
                carousel += t.len as u64 + IP_UDP_OVERHEAD;
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
        (carousel, repairs)
    }

    #[test]
    fn r_rep_9_a_nack_flood_leaves_the_carousel_its_share_of_a_shared_link() {
        // 50 forged NACKs/s from ever new addresses and device ids (so no
        // per-source budget holds them, R-REP-10) ask for ten times the link.
        let rate = 10_000_000;
        let (alone, _) = shared_link(rate, 2, 0);
        let (carousel, repairs) = shared_link(rate, 2, 50);
        let share = carousel as f64 / alone as f64;
        std::println!(
            "R-REP-9 carousel under a flood of 50 forged NACKs/s: {carousel} bytes in 2 s \
             against {alone} alone ({:.0}%), repairs {repairs} bytes",
            share * 100.0
        );
        let min = 100 - u64::from(RepairConfig::default().shared_repair_percent);
        assert!(
            carousel * 100 >= alone * (min - 3),
            "the carousel kept {:.0}% of its rate, under {min}%",
            share * 100.0
        );
        assert!(
            carousel + repairs <= alone + alone / 50,
            "together within the one rate"
        );
    }

    #[test]
    fn r_rep_10_one_source_takes_at_most_its_share() {
        // One host at 50 NACKs/s for 256 chunks each (12,800 chunks/s),
        // rotating device ids; the link (100 Mbit/s, about 11,500 chunks/s)
        // is no limit. Its address gets per_source_percent of the chunks the
        // rate carries, plus one second saved up.
        let img = image(4 << 20);
        let (m, _signed) = manifest(&img, 64 * 1024, 1024);
        let config = RepairConfig::default();
        let mut r = RepairServer::new(config.clone(), &m);
        let host = dev(9);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let secs = 2u64;
        let end = Instant::from_micros(secs * 1_000_000);
        let mut now = Instant::ZERO;
        let mut next_nack = Instant::ZERO;
        let mut i = 0u32;
        let mut asked = 0u64;
        while now < end {
            if now >= next_nack {
                let start = (i * 256) % 4096;
                let _ = r.handle_datagram(
                    now,
                    host,
                    &nack_bytes(1, m.image_id, 0xD000 + u64::from(i), &[(start, 256)]),
                );
                asked += 256;
                i += 1;
                next_nack = now + Duration::from_millis(20);
            }
            r.handle_timeout(now);
            while r.poll_transmit(now, &img, &mut buf).is_some() {}
            now = earliest(r.poll_timeout(), Some(next_nack))
                .expect("deadline")
                .max(now + Duration::from_micros(1));
        }
        let sent = r.stats().chunks_sent_group + r.stats().chunks_sent_unicast;
        let chunk_bits = (1024 + HEADER_LEN + TRAILER_LEN + 16) as u64 * 8 + IP_UDP_OVERHEAD * 8;
        let per_sec = config.rate_bps * u64::from(config.per_source_percent) / 100 / chunk_bits;
        let bound = per_sec * (secs + 1);
        std::println!(
            "R-REP-10 one host asked for {asked} chunks in {secs} s, {sent} were sent \
             (budget {per_sec}/s plus one second saved up: {bound})"
        );
        assert!(
            sent <= bound,
            "{sent} chunks sent to one host, over {bound}"
        );
        assert!(
            sent >= per_sec * secs,
            "the host still gets its share: {sent}"
        );
        assert!(r.stats().over_budget > 0);
    }

    #[test]
    fn r_rep_6_repair_traffic_is_rate_capped() {
        // A big image and a flood of NACKs: 1 Mbit/s must hold over a second.
        let img = image(4 << 20);
        let (m, _signed) = manifest(&img, 64 * 1024, 1024);
        let rate = 1_000_000;
        let mut r = RepairServer::new(
            RepairConfig {
                rate_bps: rate,
                ..RepairConfig::default()
            },
            &m,
        );
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        let end = Instant::from_micros(1_000_000);
        let mut bits = 0u64;
        let mut next_nack = Instant::ZERO;
        let mut device = 0u64;
        while now < end {
            if now >= next_nack {
                device += 1;
                let start = (device * 256) as u32 % 4000;
                let _ = r.handle_datagram(
                    now,
                    dev(1),
                    &nack_bytes(1, m.image_id, device, &[(start, 256)]),
                );
                next_nack = now + Duration::from_millis(5);
            }
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
                bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
            }
            now = earliest(r.poll_timeout(), Some(next_nack))
                .expect("deadline")
                .max(now + Duration::from_micros(1));
        }
        assert!(r.backlog() > 0, "the flood must outrun the cap");
        // One idle-gap burst of credit is allowed on top of the rate.
        let burst = 16 * (1024 + 64 + IP_UDP_OVERHEAD) * 8;
        assert!(
            bits <= rate + burst && bits >= rate * 95 / 100,
            "sent {bits} bits in 1 s at {rate} bit/s"
        );
    }

    #[test]
    fn wrong_image_or_wrong_kind_is_dropped() {
        let (mut r, _img, m) = setup(RepairConfig::default());
        let res = r.handle_datagram(
            Instant::ZERO,
            dev(1),
            &nack_bytes(1, ImageId([0xee; 8]), 1, &[(0, 1)]),
        );
        assert_eq!(res, Err(DropReason::OtherImage));
        let mut buf = vec![0u8; 256];
        let n = wire::encode(
            1,
            m.image_id,
            0,
            &Frame::Data(Data {
                block: 0,
                chunk: 0,
                payload: wire::Bytes(&[1]),
            }),
            &mut buf,
        )
        .expect("encode");
        assert_eq!(
            r.handle_datagram(Instant::ZERO, dev(1), &buf[..n]),
            Err(DropReason::Unexpected)
        );
        assert_eq!(r.backlog(), 0);
        assert_eq!(r.stats().drops, 2);
        assert_eq!(r.stats().nacks, 0);
    }

    #[test]
    fn pending_table_is_bounded() {
        let config = RepairConfig {
            max_pending: 10,
            ..RepairConfig::default()
        };
        let (mut r, _img, m) = setup(config);
        r.handle_datagram(
            Instant::ZERO,
            dev(1),
            &nack_bytes(1, m.image_id, 1, &[(0, 27)]),
        )
        .expect("nack");
        assert_eq!(r.backlog(), 10);
        assert_eq!(r.stats().overload, 17);
    }

    #[test]
    fn status_frames_feed_the_fleet() {
        let (mut r, _img, m) = setup(RepairConfig::default());
        let st = wire::Status {
            device_id: 4,
            state: wire::DeviceState::Receiving,
            blocks_done: 1,
            blocks_total: 4,
            current_version: "1.0",
            reason: wire::Reason::None,
            write_kbps: 0,
            window_free: 0,
        };
        let mut buf = vec![0u8; 256];
        let n = wire::encode(1, m.image_id, 0, &Frame::Status(st), &mut buf).expect("encode");
        r.handle_datagram(Instant::ZERO, dev(4), &buf[..n])
            .expect("status");
        assert_eq!(r.fleet().count(m.image_id, wire::DeviceState::Receiving), 1);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut r, img, m) = setup(RepairConfig::default());
        let mut rng = crate::rng::Rng::new(11);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        for i in 0..20_000u32 {
            let len = rng.below(200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 2 == 0 && len >= 24 {
                // Valid header and CRC around a random NACK body, to reach the body decoder.
                bytes[..4].copy_from_slice(&wire::MAGIC);
                bytes[4] = wire::VERSION;
                bytes[5] = 4;
                bytes[6] = 0;
                bytes[7] = 0;
                bytes[12..20].copy_from_slice(&m.image_id.0);
                let crc_at = len - 4;
                let crc = wire::CRC32.checksum(&bytes[..crc_at]);
                bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = r.handle_datagram(now, dev((i % 200) as u8), &bytes);
            now = now + Duration::from_micros(rng.below(3000));
            r.handle_timeout(now);
            while r.poll_transmit(now, &img, &mut buf).is_some() {}
        }
    }
}

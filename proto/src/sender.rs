//! The carousel sender, sans-IO: it decides what goes on the data group and
//! when; the shell (`firmcast send`) owns the socket and the clock.
//!
//! ```text
//!  pass p:  Announce(p) · ManifestChunk × m · Data(0,0) Data(0,1) … Data(last)
//!           with an Announce every `announce_every` datagrams (R-CAR-2) and
//!           `manifest_repeats_per_pass` more copies of the manifest spread
//!           evenly, one chunk at a time, among the data (R-CAR-3)
//!  pass p+1: …
//! ```
//! With a format 2 manifest each block's chunk-hash list (one ChunkList
//! frame in the default geometry) goes just before its first chunk (R-AUTH-2).
//!
//! Driving contract: after every `handle_datagram`, call `poll_transmit`
//! until it returns `None`, send each datagram to the data group, then sleep
//! until `poll_timeout()` or until the socket is readable.
//!
//! Pacing (R-CAR-4) is a token bucket in integer nanoseconds of the caller's
//! clock: a datagram of `len` UDP payload bytes costs `(len + 28) * 8` bits
//! (IPv4 + UDP headers included) at `rate_bps`, and after an idle gap the
//! bucket holds at most [`BURST_DATAGRAMS`] full datagrams' worth of credit.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::chunk_list;
use crate::fleet::{Fleet, DEFAULT_MAX_DEVICES};
use crate::manifest::Manifest;
use crate::time::Instant;
use crate::transmit::{Dest, DropReason, Transmit};
use crate::wire::{
    self, Announce, ChunkList, Data, DeviceState, Frame, ManifestChunk, HEADER_LEN, TRAILER_LEN,
};

/// Bytes of IPv4 + UDP header counted against the rate for each datagram.
pub const IP_UDP_OVERHEAD: u64 = 28;
/// Most datagrams a pacer sends back to back after an idle gap (or after the
/// process was not scheduled for a while): 64 full chunks are about 6 ms at
/// 90 Mbit/s. With 16, a sender sharing two cores with ten agents in the
/// bench/fleet rig lost the time it was descheduled for good and ran at about
/// 75 instead of 90 Mbit/s.
pub const BURST_DATAGRAMS: u64 = 64;
/// Frame overhead beyond the chunk payload, generously rounded (header,
/// postcard varints, CRC), used to size the burst allowance.
const FRAME_OVERHEAD: u64 = (HEADER_LEN + TRAILER_LEN) as u64 + 16;

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
        let bits = (len as u128 + u128::from(IP_UDP_OVERHEAD)) * 8;
        let ns = bits * 1_000_000_000 / u128::from(self.rate_bps);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// `true` when a datagram may go at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        now.as_micros().saturating_mul(1000) >= self.next_ns
    }

    /// Charge one datagram of `len` bytes sent at `now`.
    pub fn charge(&mut self, now: Instant, len: usize) {
        let now_ns = now.as_micros().saturating_mul(1000);
        // Credit saved during an idle gap is capped at the burst allowance.
        let base = self.next_ns.max(now_ns.saturating_sub(self.burst_ns));
        self.next_ns = base.saturating_add(self.cost_ns(len));
    }

    /// When the next datagram may go (rounded up to the microsecond).
    pub fn next_at(&self) -> Instant {
        Instant::from_micros(self.next_ns.div_ceil(1000))
    }
}

/// Configuration of a [`Sender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Session id carried in every header (random per `firmcast send`).
    pub session: u32,
    /// Carousel rate in bits per second, UDP payload plus IPv4/UDP headers.
    pub rate_bps: u64,
    /// Datagrams between two Announces (at least 1).
    pub announce_every: u32,
    /// Extra copies of the manifest per pass, spread among the data.
    pub manifest_repeats_per_pass: u32,
    /// Whole copies of the manifest back to back at the start of each pass,
    /// each after an Announce (at least 1; R-CAR-1). With one copy, a device
    /// that lost any one of its chunks waited for the next repeat (an eighth
    /// of a pass) and missed the data meanwhile: in bench/fleet at 1% loss
    /// one device of ten accepted the manifest 0.6 s after the others; with
    /// two copies and one Announce, a device that lost that Announce (1 in
    /// 100) ignored both copies and was 0.8 s late. With three, at 5% loss
    /// one device in 247 still missed a chunk in every copy (bench/fleet, 50
    /// devices at 20 Mbit/s: one accepted it 1.4 s after the others, waited
    /// for the next pass for the blocks that went by, and the run made 0.743
    /// against 0.792); five copies make that one in 58,003 (the R-CAR-1 test
    /// prints the table).
    pub manifest_lead_copies: u32,
    /// Bound on the fleet table.
    pub max_devices: usize,
    /// The fleet the operator waits for (`firmcast send --until-done N`):
    /// once this many devices report the image received and none known
    /// still needs data, the carousel holds (R-CAR-5). `None`: never holds.
    pub hold_when_received: Option<usize>,
}

impl SenderConfig {
    /// Defaults: an Announce every 64 datagrams, the manifest five times at
    /// the start of a pass and 8 more times spread over it, 65536 devices.
    pub fn new(session: u32, rate_bps: u64) -> Self {
        SenderConfig {
            session,
            rate_bps,
            announce_every: 64,
            manifest_repeats_per_pass: 8,
            manifest_lead_copies: 5,
            max_devices: DEFAULT_MAX_DEVICES,
            hold_when_received: None,
        }
    }
}

/// Counters of a [`Sender`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Datagrams emitted.
    pub datagrams: u64,
    /// UDP payload bytes emitted.
    pub bytes: u64,
    /// Data frames emitted.
    pub data: u64,
    /// ManifestChunk frames emitted.
    pub manifest: u64,
    /// Announce frames emitted.
    pub announce: u64,
    /// ChunkList frames emitted (R-AUTH-2).
    pub chunk_lists: u64,
    /// Status frames taken in.
    pub status_frames: u64,
    /// Input datagrams dropped (undecodable, unexpected kind, fleet full).
    pub drops: u64,
    /// Chunks skipped because the image given to `poll_transmit` was too short.
    pub image_short: u64,
    /// Times the carousel started holding (R-CAR-5).
    pub holds: u64,
}

/// While the carousel holds, an Announce goes out this often (R-CAR-5), so
/// a device that boots meanwhile still finds the session and, by asking for
/// the manifest, resumes the carousel.
pub const HOLD_ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The pass's opening Announce is next.
    PassStart,
    /// The opening copy of the manifest; the next chunk index.
    Manifest(u32),
    /// Data, with repeats and Announces interleaved.
    Data,
}

enum Next {
    Announce,
    Manifest(u32),
    /// Piece `.1` of block `.0`'s chunk-hash list (R-AUTH-2).
    ChunkList(u32, u32),
    Data(u32, u32),
}

/// The sans-IO carousel sender.
#[derive(Debug, Clone)]
pub struct Sender {
    config: SenderConfig,
    board: heapless::String<{ wire::MAX_BOARD_LEN }>,
    version: heapless::String<{ wire::MAX_VERSION_LEN }>,
    image_id: wire::ImageId,
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    block_count: u32,
    chunks_per_block: u32,
    last_block_chunks: u32,
    data_chunks: u64,
    signed_manifest: Vec<u8>,
    manifest_chunks: u32,
    pacer: Pacer,
    phase: Phase,
    pass: u32,
    passes_completed: u32,
    block: u32,
    chunk: u32,
    since_announce: u32,
    /// Bresenham accumulator spreading the manifest repeats among the data.
    repeat_acc: u64,
    repeats_owed: u64,
    repeat_cursor: u32,
    fleet: Fleet,
    /// R-AUTH-2: a format 2 manifest; each block's chunk-hash list goes
    /// ahead of its chunks. `list_piece`: pieces of the current block's
    /// list sent; `list_buf` holds one piece while it is encoded.
    chunk_auth: bool,
    list_piece: u32,
    list_buf: Vec<u8>,
    /// R-CAR-5: holding, and when the next Announce of the hold is due.
    hold: Option<Instant>,
    stats: SenderStats,
}

impl Sender {
    /// A sender for the image `manifest` describes; `signed_manifest` is the
    /// signed manifest file as devices must receive it.
    pub fn new(
        config: SenderConfig,
        manifest: &Manifest,
        signed_manifest: Vec<u8>,
        now: Instant,
    ) -> Sender {
        let chunk_size = manifest.chunk_size.max(1);
        let block_count = manifest.block_count();
        let last_block_chunks = manifest.chunks_in_block(block_count.saturating_sub(1));
        let chunks_per_block = manifest.chunks_per_block();
        let data_chunks = u64::from(block_count.saturating_sub(1)) * u64::from(chunks_per_block)
            + u64::from(last_block_chunks);
        let manifest_chunks =
            u32::try_from(signed_manifest.len().div_ceil(chunk_size as usize)).unwrap_or(u32::MAX);
        let pacer = Pacer::new(
            config.rate_bps,
            chunk_size as usize + FRAME_OVERHEAD as usize,
            now,
        );
        Sender {
            fleet: Fleet::new(config.max_devices),
            config,
            board: manifest.board.clone(),
            version: manifest.version.clone(),
            image_id: manifest.image_id,
            image_len: manifest.image_len,
            block_size: manifest.block_size,
            chunk_size,
            block_count,
            chunks_per_block,
            last_block_chunks,
            data_chunks,
            signed_manifest,
            manifest_chunks,
            pacer,
            phase: Phase::PassStart,
            pass: 0,
            passes_completed: 0,
            block: 0,
            chunk: 0,
            since_announce: 0,
            repeat_acc: 0,
            repeats_owed: 0,
            repeat_cursor: 0,
            chunk_auth: manifest.chunk_auth(),
            list_piece: 0,
            list_buf: alloc::vec![0u8; chunk_size as usize],
            hold: None,
            stats: SenderStats::default(),
        }
    }

    /// Take in a datagram that arrived on the sender's socket. Status frames
    /// update the fleet; anything else is dropped and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let result = match wire::decode(bytes) {
            Err(e) => Err(DropReason::Decode(e)),
            Ok((_, Frame::Status(_))) => {
                self.stats.status_frames += 1;
                // R-STAT-4, R-FLEET-1..3: the fleet decides what the report is worth.
                let r = self.fleet.record(now, from, bytes);
                if r.is_ok() {
                    self.update_hold(now);
                }
                r
            }
            Ok(_) => Err(DropReason::Unexpected),
        };
        if result.is_err() {
            self.stats.drops += 1;
        }
        result
    }

    /// Charge the carousel's pacer for a datagram of `len` bytes that a
    /// repair server sharing this sender's link sent at `now` (R-REP-7), so
    /// that the two together keep to `rate_bps`.
    pub fn charge_shared(&mut self, now: Instant, len: usize) {
        self.pacer.charge(now, len);
    }

    /// Cap the carousel's rate at `cap_bps` (never above `rate_bps`): the
    /// one place the carousel rate is decided. The shell passes the least of
    /// the caps that apply, e.g. the fleet's write pace (R-PACE-2).
    pub fn set_rate_cap(&mut self, cap_bps: u64) {
        let rate = cap_bps.clamp(1, self.config.rate_bps);
        if rate != self.pacer.rate_bps() {
            self.pacer.set_rate(rate);
        }
    }

    /// The rate the carousel keeps now, in bits per second.
    pub fn rate_bps(&self) -> u64 {
        self.pacer.rate_bps()
    }

    /// Write the next carousel datagram into `buf` if pacing allows it at
    /// `now`. `image` is the image the manifest describes; `buf` should hold
    /// [`wire::MAX_DATAGRAM`] bytes. The destination is always the data group.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        image: &[u8],
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if let Some(announce_at) = self.hold {
            if now < announce_at {
                return None;
            }
            self.hold = Some(now + HOLD_ANNOUNCE_EVERY);
            let len = self.emit(Next::Announce, image, buf)?;
            return Some(self.sent(now, len));
        }
        if !self.pacer.ready(now) {
            return None;
        }
        // A bounded number of skips (chunks missing from a short image) per call.
        for _ in 0..64 {
            let next = self.advance();
            if let Some(len) = self.emit(next, image, buf) {
                return Some(self.sent(now, len));
            }
        }
        None
    }

    /// Charge and count a datagram of `len` bytes handed out at `now`.
    fn sent(&mut self, now: Instant, len: usize) -> Transmit {
        self.pacer.charge(now, len);
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        Transmit {
            dest: Dest::Group,
            len,
        }
    }

    /// When the next datagram may go.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.hold.unwrap_or_else(|| self.pacer.next_at()))
    }

    /// Whether the carousel holds (R-CAR-5): every device the operator
    /// waits for has the image, and none known still needs data.
    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// R-CAR-5, after a Status: hold once `hold_when_received` devices report
    /// this image verifying or later and no device reports a state that
    /// needs the carousel (listening, fetching the manifest, resuming,
    /// receiving); go on as soon as one does.
    fn update_hold(&mut self, now: Instant) {
        let Some(want) = self.config.hold_when_received else {
            return;
        };
        // Any device that asks for data keeps the carousel going; only
        // devices that count toward `--until-done` (R-STAT-4) can hold it.
        let states = self.fleet.state_counts();
        let needs_data: usize = [
            DeviceState::Listening,
            DeviceState::FetchingManifest,
            DeviceState::Resuming,
            DeviceState::Receiving,
        ]
        .iter()
        .map(|s| states[*s as usize])
        .sum();
        let has_image: usize = [
            DeviceState::Verifying,
            DeviceState::Done,
            DeviceState::Activated,
            DeviceState::Confirmed,
        ]
        .iter()
        .map(|s| self.fleet.count(self.image_id, *s))
        .sum();
        let hold = needs_data == 0 && has_image >= want.max(1);
        match (hold, self.hold) {
            (true, None) => {
                self.hold = Some(now + HOLD_ANNOUNCE_EVERY);
                self.stats.holds += 1;
            }
            (false, Some(_)) => self.hold = None,
            _ => {}
        }
    }

    /// Complete passes sent so far.
    pub fn passes_completed(&self) -> u32 {
        self.passes_completed
    }

    /// The current pass and the block the data cursor is at.
    pub fn position(&self) -> (u32, u32) {
        (self.pass, self.block)
    }

    /// Fraction of the current pass's data sent, in per-mille (0..=1000).
    pub fn pass_permille(&self) -> u32 {
        let done = u64::from(self.block) * u64::from(self.chunks_per_block) + u64::from(self.chunk);
        let pm = done * 1000 / self.data_chunks.max(1);
        u32::try_from(pm.min(1000)).unwrap_or(1000)
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
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Decide the next frame and move the carousel on (R-CAR-1..3).
    fn advance(&mut self) -> Next {
        loop {
            match self.phase {
                Phase::PassStart => {
                    self.phase = if self.manifest_chunks > 0 {
                        Phase::Manifest(0)
                    } else {
                        Phase::Data
                    };
                    self.since_announce = 0;
                    return Next::Announce;
                }
                _ if self.since_announce >= self.config.announce_every.max(1) => {
                    self.since_announce = 0;
                    return Next::Announce;
                }
                Phase::Manifest(i) => {
                    // R-CAR-1: an Announce before every lead copy, so that a
                    // device that lost the first still collects a later copy
                    // (a ManifestChunk means nothing before an Announce).
                    if i > 0 && i % self.manifest_chunks == 0 && self.since_announce > 0 {
                        self.since_announce = 0;
                        return Next::Announce;
                    }
                    let lead = self
                        .manifest_chunks
                        .saturating_mul(self.config.manifest_lead_copies.max(1));
                    self.phase = if i + 1 >= lead {
                        Phase::Data
                    } else {
                        Phase::Manifest(i + 1)
                    };
                    self.since_announce += 1;
                    return Next::Manifest(i % self.manifest_chunks);
                }
                Phase::Data => {
                    if self.repeats_owed > 0 && self.manifest_chunks > 0 {
                        self.repeats_owed -= 1;
                        let i = self.repeat_cursor;
                        self.repeat_cursor = (i + 1) % self.manifest_chunks;
                        self.since_announce += 1;
                        self.finish_pass_if_done();
                        return Next::Manifest(i);
                    }
                    if self.block < self.block_count {
                        let (b, c) = (self.block, self.chunk);
                        let in_block = if b + 1 == self.block_count {
                            self.last_block_chunks
                        } else {
                            self.chunks_per_block
                        };
                        if self.chunk_auth
                            && c == 0
                            && self.list_piece < chunk_list::pieces(in_block, self.chunk_size)
                        {
                            self.list_piece += 1;
                            self.since_announce += 1;
                            return Next::ChunkList(b, self.list_piece - 1);
                        }
                        self.chunk += 1;
                        if self.chunk >= in_block {
                            self.chunk = 0;
                            self.block += 1;
                            self.list_piece = 0;
                        }
                        // Spread repeats × m manifest chunks evenly over the
                        // pass's data chunks; exact count per pass.
                        let per_pass = u64::from(self.config.manifest_repeats_per_pass)
                            * u64::from(self.manifest_chunks);
                        self.repeat_acc += per_pass;
                        while self.repeat_acc >= self.data_chunks.max(1) && per_pass > 0 {
                            self.repeat_acc -= self.data_chunks.max(1);
                            self.repeats_owed += 1;
                        }
                        self.since_announce += 1;
                        self.finish_pass_if_done();
                        return Next::Data(b, c);
                    }
                    // Not reached: a pass ends as its last frame is chosen.
                    self.finish_pass_if_done();
                    self.phase = Phase::PassStart;
                }
            }
        }
    }

    /// After the pass's last data chunk and last manifest repeat, count the
    /// pass and start the next one, so `passes_completed` is exact as soon as
    /// the last frame of a pass is handed out.
    fn finish_pass_if_done(&mut self) {
        if self.block < self.block_count || self.repeats_owed > 0 {
            return;
        }
        self.passes_completed = self.passes_completed.saturating_add(1);
        self.pass = self.pass.saturating_add(1);
        self.block = 0;
        self.chunk = 0;
        self.repeat_acc = 0;
        self.repeats_owed = 0;
        self.repeat_cursor = 0;
        self.list_piece = 0;
        self.phase = Phase::PassStart;
    }

    fn emit(&mut self, next: Next, image: &[u8], buf: &mut [u8]) -> Option<usize> {
        let frame = match next {
            Next::Announce => Frame::Announce(Announce {
                board: &self.board,
                version: &self.version,
                image_len: self.image_len,
                block_size: self.block_size,
                chunk_size: self.chunk_size,
                manifest_len: u32::try_from(self.signed_manifest.len()).unwrap_or(u32::MAX),
                rate_kbps: u32::try_from(self.config.rate_bps / 1000).unwrap_or(u32::MAX),
                pass: self.pass,
            }),
            Next::Manifest(i) => {
                let start = i as usize * self.chunk_size as usize;
                let end = (start + self.chunk_size as usize).min(self.signed_manifest.len());
                let bytes = self.signed_manifest.get(start..end)?;
                Frame::ManifestChunk(ManifestChunk {
                    offset: start as u32,
                    bytes: wire::Bytes(bytes),
                })
            }
            Next::ChunkList(block, piece) => {
                let in_block = if block + 1 == self.block_count {
                    self.last_block_chunks
                } else {
                    self.chunks_per_block
                };
                let span = chunk_list::piece_span(in_block, self.chunk_size, piece)?;
                let Some(n) = chunk_list::fill_piece(
                    image,
                    self.image_len,
                    self.block_size,
                    self.chunk_size,
                    block,
                    span,
                    &mut self.list_buf,
                ) else {
                    self.stats.image_short += 1;
                    return None;
                };
                Frame::ChunkList(ChunkList {
                    block,
                    first: span.0,
                    hashes: wire::Bytes(&self.list_buf[..n]),
                })
            }
            Next::Data(block, chunk) => {
                let payload = wire::chunk_bytes(
                    image,
                    self.image_len,
                    self.block_size,
                    self.chunk_size,
                    block,
                    chunk,
                );
                let Some(payload) = payload else {
                    self.stats.image_short += 1;
                    return None;
                };
                Frame::Data(Data {
                    block,
                    chunk,
                    payload: wire::Bytes(payload),
                })
            }
        };
        let len = wire::encode(self.config.session, self.image_id, 0, &frame, buf).ok()?;
        match frame {
            Frame::Announce(_) => self.stats.announce += 1,
            Frame::ManifestChunk(_) => self.stats.manifest += 1,
            Frame::ChunkList(_) => self.stats.chunk_lists += 1,
            _ => self.stats.data += 1,
        }
        Some(len)
    }
}

/// Test helpers shared by the sender and repair tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::manifest::{sign_format, ManifestSpec};

    /// A deterministic image of `len` bytes.
    pub fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    /// Sign `image` in format 1 and return (manifest, signed bytes): the
    /// carousel without ChunkList frames, whose order the R-CAR tests pin.
    pub fn manifest(image: &[u8], block_size: u32, chunk_size: u32) -> (Manifest, Vec<u8>) {
        manifest_format(
            image,
            block_size,
            chunk_size,
            crate::manifest::MANIFEST_FORMAT_V1,
        )
    }

    /// Sign `image` in `format` and return (manifest, signed bytes).
    pub fn manifest_format(
        image: &[u8],
        block_size: u32,
        chunk_size: u32,
        format: u8,
    ) -> (Manifest, Vec<u8>) {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9; 32]));
        let spec = ManifestSpec {
            board: "acme,rt1",
            version: "2.1.0",
            block_size,
            chunk_size,
            created_unix: 1,
            min_version: "",
        };
        let signed = sign_format(&spec, image, &kp.sk, format).expect("sign");
        let m = Manifest::verify(&signed, &kp.pk).expect("verify");
        (m, signed)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::wire::{decode, DeviceState, ImageId, Reason, Status, MAX_DATAGRAM};
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use core::net::{IpAddr, Ipv4Addr};

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum K {
        A(u32),
        M(u32),
        D(u32, u32),
    }

    /// Drive the sender with a clock that jumps to each deadline, collecting
    /// frame kinds and checking every frame decodes with the right header.
    fn run(sender: &mut Sender, image: &[u8], m: &Manifest, frames: usize) -> Vec<K> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        let mut out = Vec::new();
        while out.len() < frames {
            match sender.poll_transmit(now, image, &mut buf) {
                Some(t) => {
                    assert_eq!(t.dest, Dest::Group);
                    let (h, f) = decode(&buf[..t.len]).expect("sender frames decode");
                    assert_eq!(h.session, sender.config().session);
                    assert_eq!(h.image_id, m.image_id);
                    assert_eq!(h.flags, 0);
                    out.push(match f {
                        Frame::Announce(a) => {
                            assert_eq!(a.board, "acme,rt1");
                            assert_eq!(a.image_len, m.image_len);
                            assert_eq!(a.chunk_size, m.chunk_size);
                            K::A(a.pass)
                        }
                        Frame::ManifestChunk(c) => K::M(c.offset / m.chunk_size),
                        Frame::Data(d) => {
                            let start = d.block as usize * m.block_size as usize
                                + d.chunk as usize * m.chunk_size as usize;
                            assert_eq!(d.payload.0, &image[start..start + d.payload.0.len()]);
                            K::D(d.block, d.chunk)
                        }
                        other => panic!("sender emitted {other:?}"),
                    });
                }
                None => now = sender.poll_timeout().expect("sender always has a deadline"),
            }
        }
        out
    }

    fn frames_per_pass(s: &Sender) -> usize {
        let m = s.manifest_chunks as u64;
        let lead = u64::from(s.config.manifest_lead_copies.max(1));
        let body = lead * m + s.data_chunks + u64::from(s.config.manifest_repeats_per_pass) * m;
        // Announces: one at the start and one before each further lead copy
        // (R-CAR-1; the copies here are shorter than announce_every), then
        // one before every announce_every-th body frame after the last of those.
        let after = body - (lead - 1) * m;
        (body + lead + (after - 1) / u64::from(s.config.announce_every)) as usize
    }

    #[test]
    fn r_car_1_pass_is_announce_then_manifest_then_data() {
        let img = image(10_000);
        let (m, signed) = manifest(&img, 4096, 1024);
        let mut cfg = SenderConfig::new(42, 10_000_000);
        cfg.manifest_repeats_per_pass = 0;
        cfg.manifest_lead_copies = 1;
        cfg.announce_every = 1000;
        let mut s = Sender::new(cfg, &m, signed.clone(), Instant::ZERO);
        let mchunks = signed.len().div_ceil(1024) as u32;
        let frames = run(&mut s, &img, &m, (1 + mchunks + 10) as usize * 2);
        let mut expect = vec![K::A(0)];
        expect.extend((0..mchunks).map(K::M));
        for b in 0..3 {
            for c in 0..m.chunks_in_block(b) {
                expect.push(K::D(b, c));
            }
        }
        assert_eq!(
            expect.len(),
            1 + mchunks as usize + 10,
            "two full blocks + 2-chunk tail"
        );
        let mut second = expect.clone();
        second[0] = K::A(1);
        expect.extend(second);
        assert_eq!(frames, expect);
        assert_eq!(s.passes_completed(), 2);
        assert_eq!(s.position(), (2, 0));
        assert_eq!(s.stats().announce, 2);
    }

    #[test]
    fn r_car_1_every_chunk_exactly_once_per_pass_with_short_last_chunk() {
        // 3 full blocks of 8 chunks, then a last block of 2 full chunks + 100 bytes.
        let img = image(3 * 8192 + 2 * 1024 + 100);
        let (m, signed) = manifest(&img, 8192, 1024);
        assert_eq!(m.chunks_in_block(3), 3);
        let mut s = Sender::new(SenderConfig::new(1, 50_000_000), &m, signed, Instant::ZERO);
        let per_pass = frames_per_pass(&s);
        let frames = run(&mut s, &img, &m, per_pass * 3);
        for pass in 0..3 {
            let mut seen: BTreeMap<(u32, u32), u32> = BTreeMap::new();
            for k in &frames[pass * per_pass..(pass + 1) * per_pass] {
                if let K::D(b, c) = k {
                    *seen.entry((*b, *c)).or_default() += 1;
                }
            }
            assert_eq!(seen.len(), 27, "pass {pass}");
            assert!(
                seen.values().all(|&n| n == 1),
                "pass {pass} repeats a chunk"
            );
            assert!(seen.contains_key(&(3, 2)));
            assert_eq!(frames[pass * per_pass], K::A(pass as u32));
        }
        assert_eq!(s.passes_completed(), 3);
        assert_eq!(s.stats().data, 81);
    }

    #[test]
    fn r_car_2_announce_interleaved_every_n_datagrams() {
        let img = image(64 * 1024);
        let (m, signed) = manifest(&img, 16 * 1024, 1024);
        let mut cfg = SenderConfig::new(1, 50_000_000);
        cfg.announce_every = 10;
        let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
        let per_pass = frames_per_pass(&s);
        let frames = run(&mut s, &img, &m, per_pass);
        let mut gap = 0;
        for k in &frames {
            match k {
                K::A(p) => {
                    assert_eq!(*p, 0);
                    gap = 0;
                }
                _ => {
                    gap += 1;
                    assert!(gap <= 10, "more than 10 datagrams without an announce");
                }
            }
        }
        let announces = frames.iter().filter(|k| matches!(k, K::A(_))).count();
        // One before each lead copy (R-CAR-1), then every 10th.
        let lead = s.config.manifest_lead_copies as usize;
        let lead_extra = (lead - 1) * s.manifest_chunks as usize;
        assert_eq!(
            announces,
            lead + (per_pass - announces - lead_extra - 1) / 10
        );
    }

    /// The share of devices that miss the manifest in a pass's lead copies
    /// (R-CAR-1), exactly, for the frame sequence `lead` at independent loss
    /// `p`: a device collects ManifestChunks only after the first Announce
    /// it hears, and misses if some chunk index is lost every time after it.
    fn lead_miss_rate(lead: &[K], chunks: u32, p: f64) -> f64 {
        let pow = |n: usize| (0..n).fold(1.0, |acc, _| acc * p);
        let mut heard = 0.0; // P(the first Announce heard is this one), summed
        let mut ok = 0.0;
        let mut announces_before = 0;
        for (at, k) in lead.iter().enumerate() {
            if !matches!(k, K::A(_)) {
                continue;
            }
            let first_here = pow(announces_before) * (1.0 - p);
            let all_chunks: f64 = (0..chunks)
                .map(|i| {
                    let copies = lead[at..].iter().filter(|f| **f == K::M(i)).count();
                    1.0 - pow(copies)
                })
                .product();
            ok += first_here * all_chunks;
            heard += first_here;
            announces_before += 1;
        }
        assert!(heard <= 1.0);
        1.0 - ok
    }

    #[test]
    fn r_car_1_lead_copies_and_the_devices_that_miss_the_manifest() {
        // 512 blocks and 1408-byte chunks: the 12-chunk manifest of a
        // 32 MiB image in 64 KiB blocks (16,500 bytes).
        let img = image(512 * 2048);
        let (m, signed) = manifest(&img, 2048, 1408);
        let chunks = signed.len().div_ceil(1408) as u32;
        let mut rates = Vec::new();
        std::println!("lead copies | loss | devices missing the manifest | any of 50");
        for copies in 1..=5u32 {
            for p in [0.01, 0.05] {
                let mut cfg = SenderConfig::new(1, 50_000_000);
                cfg.manifest_lead_copies = copies;
                let mut s = Sender::new(cfg, &m, signed.clone(), Instant::ZERO);
                let per_pass = frames_per_pass(&s);
                let frames = run(&mut s, &img, &m, per_pass);
                let lead: Vec<K> = frames
                    .iter()
                    .take_while(|k| !matches!(k, K::D(..)))
                    .cloned()
                    .collect();
                let miss = lead_miss_rate(&lead, chunks, p);
                let any_of_50 = 1.0 - (0..50).fold(1.0, |acc, _| acc * (1.0 - miss));
                std::println!(
                    "{copies:>11} | {:>3}% | 1 in {:>11.0} | {any_of_50:.3}",
                    p * 100.0,
                    1.0 / miss
                );
                rates.push((copies, p, miss));
            }
        }
        assert_eq!(chunks, 12);
        let rate = |c: u32, p: f64| {
            rates
                .iter()
                .find(|r| r.0 == c && r.1 == p)
                .map(|r| r.2)
                .expect("computed")
        };
        // More copies never hurt, and the default keeps a 5%-loss fleet of
        // 50 clear of a late device in all but about one pass in a thousand.
        for p in [0.01, 0.05] {
            for c in 1..5 {
                assert!(rate(c + 1, p) < rate(c, p));
            }
        }
        let default = SenderConfig::new(1, 1).manifest_lead_copies;
        assert!(
            rate(default, 0.05) < 1.0 / 50_000.0,
            "{}",
            rate(default, 0.05)
        );
        assert!(rate(3, 0.05) > 1.0 / 300.0, "{}", rate(3, 0.05));
    }

    #[test]
    fn r_car_3_manifest_repeated_as_configured_and_spread() {
        let img = image(200 * 1024);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mchunks = signed.len().div_ceil(1024);
        let mut cfg = SenderConfig::new(1, 50_000_000);
        cfg.manifest_repeats_per_pass = 3;
        cfg.manifest_lead_copies = 3;
        let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
        let per_pass = frames_per_pass(&s);
        let frames = run(&mut s, &img, &m, per_pass);
        let mut counts = vec![0u32; mchunks];
        for k in &frames {
            if let K::M(i) = k {
                counts[*i as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&n| n == 6),
            "each manifest chunk three times up front + 3 repeats: {counts:?}"
        );
        // The three lead copies come in order before any data, each after
        // an Announce (R-CAR-1).
        let lead: Vec<K> = frames
            .iter()
            .take_while(|k| !matches!(k, K::D(..)))
            .cloned()
            .collect();
        let once: Vec<K> = core::iter::once(K::A(0))
            .chain((0..mchunks as u32).map(K::M))
            .collect();
        assert_eq!(lead, [once.clone(), once.clone(), once].concat());
        // Spread: the repeats sit among the data, not in a lump.
        let first_data = frames
            .iter()
            .position(|k| matches!(k, K::D(..)))
            .expect("data");
        let positions: Vec<usize> = frames
            .iter()
            .enumerate()
            .skip(first_data)
            .filter(|(_, k)| matches!(k, K::M(_)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 3 * mchunks);
        let data = s.data_chunks as usize;
        let expected_gap = data / (3 * mchunks);
        for w in positions.windows(2) {
            assert!(
                w[1] - w[0] <= expected_gap + 3,
                "repeats lumped: gap {}",
                w[1] - w[0]
            );
        }
    }

    #[test]
    fn r_car_4_pacing_holds_the_rate_within_two_percent() {
        for rate in [1_000_000u64, 20_000_000, 1_000_000_000] {
            let img = image(1 << 20);
            let (m, signed) = manifest(&img, 64 * 1024, 1024);
            let mut s = Sender::new(SenderConfig::new(1, rate), &m, signed, Instant::ZERO);
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut now = Instant::ZERO;
            let end = Instant::from_micros(1_000_000);
            let mut wire_bits = 0u64;
            loop {
                while let Some(t) = s.poll_transmit(now, &img, &mut buf) {
                    wire_bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
                }
                let next = s.poll_timeout().expect("deadline");
                assert!(next > now, "deadline must move forward");
                if next >= end {
                    break;
                }
                now = next;
            }
            let lo = rate * 98 / 100;
            let hi = rate * 102 / 100;
            assert!(
                (lo..=hi).contains(&wire_bits),
                "rate {rate}: sent {wire_bits} bits in 1 s"
            );
        }
    }

    #[test]
    fn r_car_4_idle_gap_allows_only_a_bounded_burst() {
        let img = image(256 * 1024);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mut s = Sender::new(SenderConfig::new(1, 10_000_000), &m, signed, Instant::ZERO);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Ten seconds pass with nobody polling.
        let now = Instant::from_micros(10_000_000);
        let (mut burst, mut bytes) = (0, 0u64);
        while let Some(t) = s.poll_transmit(now, &img, &mut buf) {
            burst += 1;
            bytes += t.len as u64 + IP_UDP_OVERHEAD;
            assert!(burst < 200, "unbounded burst");
        }
        // Announces and the last manifest chunk are shorter than a full
        // chunk, so a few more than BURST_DATAGRAMS fit the same credit: the
        // bound is on link time, BURST_DATAGRAMS full datagrams and the one
        // that overdraws it.
        let full = 1024 + FRAME_OVERHEAD + IP_UDP_OVERHEAD;
        assert!(burst >= BURST_DATAGRAMS as usize, "burst {burst}");
        assert!(
            bytes <= (BURST_DATAGRAMS + 1) * full,
            "burst of {bytes} bytes"
        );
    }

    #[test]
    fn status_frames_feed_the_fleet_and_other_kinds_are_dropped() {
        let img = image(5000);
        let (m, signed) = manifest(&img, 4096, 1024);
        let mut s = Sender::new(SenderConfig::new(1, 1_000_000), &m, signed, Instant::ZERO);
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        let mut buf = vec![0u8; 256];
        let st = Status {
            device_id: 5,
            state: DeviceState::Done,
            blocks_done: 2,
            blocks_total: 2,
            current_version: "2.1.0",
            reason: Reason::None,
            write_kbps: 0,
            window_free: 0,
        };
        let n = wire::encode(0, m.image_id, 0, &Frame::Status(st), &mut buf).expect("encode");
        s.handle_datagram(Instant::from_micros(3), from, &buf[..n])
            .expect("status accepted");
        assert_eq!(s.fleet().count(m.image_id, DeviceState::Done), 1);
        assert_eq!(s.stats().status_frames, 1);
        let mut big = vec![0u8; MAX_DATAGRAM];
        let n = wire::encode(
            0,
            m.image_id,
            0,
            &Frame::Data(Data {
                block: 0,
                chunk: 0,
                payload: wire::Bytes(&[1, 2]),
            }),
            &mut big,
        )
        .expect("encode");
        assert_eq!(
            s.handle_datagram(Instant::ZERO, from, &big[..n]),
            Err(DropReason::Unexpected)
        );
        assert!(matches!(
            s.handle_datagram(Instant::ZERO, from, b"junk"),
            Err(DropReason::Decode(_))
        ));
        assert_eq!(s.stats().drops, 2);
    }

    #[test]
    fn r_car_5_holds_while_the_awaited_fleet_verifies_and_goes_on_when_one_needs_data() {
        let img = image(50_000);
        let (m, signed) = manifest(&img, 4096, 1024);
        let mut cfg = SenderConfig::new(1, 8_000_000);
        cfg.hold_when_received = Some(2);
        let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        let mut sbuf = vec![0u8; 256];
        let mut report = |s: &mut Sender, now: Instant, id: u64, state: DeviceState, image| {
            let st = Status {
                device_id: id,
                state,
                blocks_done: 0,
                blocks_total: 13,
                current_version: "1.0",
                reason: Reason::None,
                write_kbps: 0,
                window_free: 0,
            };
            let n = wire::encode(0, image, 0, &Frame::Status(st), &mut sbuf).expect("encode");
            s.handle_datagram(now, from, &sbuf[..n]).expect("status");
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Frames sent from `from` up to `until`, the clock jumping to each deadline.
        let mut drive = |s: &mut Sender, from: Instant, until: Instant| {
            let (mut now, mut kinds) = (from, Vec::new());
            while now < until {
                match s.poll_transmit(now, &img, &mut buf) {
                    Some(t) => kinds.push(decode(&buf[..t.len]).expect("decodes").1.kind()),
                    None => now = s.poll_timeout().expect("a deadline").max(now),
                }
            }
            kinds
        };
        let t = |ms: u64| Instant::from_micros(ms * 1000);
        assert!(drive(&mut s, t(0), t(20)).contains(&wire::FrameKind::Data));
        // One device has the image, the other still receives: no hold.
        report(&mut s, t(20), 1, DeviceState::Verifying, m.image_id);
        report(&mut s, t(20), 2, DeviceState::Receiving, m.image_id);
        assert!(!s.holding());
        // A device of another image that is done does not count.
        report(&mut s, t(20), 3, DeviceState::Done, ImageId([7; 8]));
        report(&mut s, t(20), 2, DeviceState::Done, m.image_id);
        assert!(s.holding(), "both awaited devices have the image");
        assert_eq!(s.stats().holds, 1);
        // Holding: only an Announce every HOLD_ANNOUNCE_EVERY, nothing else.
        let (pos, data) = (s.position(), s.stats().data);
        let held = drive(&mut s, t(20), t(520));
        assert!(
            held.iter().all(|k| *k == wire::FrameKind::Announce),
            "{held:?}"
        );
        assert!(
            (4..=6).contains(&held.len()),
            "{} announces in 500 ms",
            held.len()
        );
        assert_eq!(
            (s.position(), s.stats().data),
            (pos, data),
            "the carousel did not move"
        );
        // A device boots and asks for the manifest: the carousel goes on where it was.
        report(&mut s, t(520), 4, DeviceState::FetchingManifest, m.image_id);
        assert!(!s.holding());
        let after = drive(&mut s, t(520), t(540));
        assert!(after.contains(&wire::FrameKind::Data), "{after:?}");
        // Without the option the sender never holds.
        let mut plain = Sender::new(
            SenderConfig::new(1, 8_000_000),
            &m,
            manifest(&img, 4096, 1024).1,
            t(0),
        );
        report(&mut plain, t(1), 1, DeviceState::Done, m.image_id);
        assert!(!plain.holding());
    }

    #[test]
    fn short_image_is_skipped_not_panicked_on() {
        let img = image(9000);
        let (m, signed) = manifest(&img, 4096, 1024);
        let mut s = Sender::new(
            SenderConfig::new(1, 1_000_000_000),
            &m,
            signed,
            Instant::ZERO,
        );
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        for _ in 0..500 {
            let _ = s.poll_transmit(now, &img[..3000], &mut buf);
            now = s.poll_timeout().expect("deadline");
        }
        assert!(s.stats().image_short > 0);
        assert!(s.passes_completed() > 0);
    }

    #[test]
    fn garbage_input_never_panics() {
        let img = image(5000);
        let (m, signed) = manifest(&img, 4096, 1024);
        let mut s = Sender::new(SenderConfig::new(1, 1_000_000), &m, signed, Instant::ZERO);
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        let mut rng = crate::rng::Rng::new(3);
        for i in 0..20_000 {
            let len = rng.below(300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 2 == 0 && len >= 8 {
                bytes[..4].copy_from_slice(&wire::MAGIC);
                bytes[4] = wire::VERSION;
                bytes[5] = 5;
                bytes[6] = 0;
                bytes[7] = 0;
                let crc_at = len - 4;
                let crc = wire::CRC32.checksum(&bytes[..crc_at]);
                bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = s.handle_datagram(Instant::ZERO, from, &bytes);
        }
    }
}

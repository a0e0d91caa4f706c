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
//! Pacing (R-CAR-4) is the token bucket of [`crate::pacer`].

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::chunk_list;
use crate::fleet::{Fleet, DEFAULT_MAX_DEVICES};
use crate::geometry::Geometry;
use crate::manifest::Manifest;
use crate::pacer::{Pacer, FRAME_OVERHEAD};
use crate::time::Instant;
use crate::transmit::{Dest, DropReason, Transmit};
use crate::wire::{self, Announce, ChunkList, Data, DeviceState, Frame, FrameKind, ManifestChunk};

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
    /// each after an Announce (at least 1; R-CAR-1): a device that misses
    /// the manifest waits for a repeat and misses the data meanwhile, so the
    /// copies make that rare at the loss rates devices see (`cargo test -p
    /// firmcast-proto --lib r_car_1_lead -- --nocapture` prints the table;
    /// PROTOCOL.md's appendix has the bench runs).
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
    geo: Geometry,
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
        let geo = Geometry::of(manifest);
        let chunk_size = geo.chunk_size;
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
            geo,
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
        self.handle_decoded(now, from, bytes, &wire::decode(bytes))
    }

    /// [`Sender::handle_datagram`] for a datagram the shell decoded once.
    pub fn handle_decoded(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        decoded: &wire::Decoded<'_>,
    ) -> Result<(), DropReason> {
        let result = match decoded {
            Err(e) => Err(DropReason::Decode(*e)),
            Ok((header, Frame::Status(status))) => {
                self.stats.status_frames += 1;
                // R-STAT-4, R-FLEET-1..3: the fleet decides what the report is worth.
                let r = self.fleet.record_status(now, from, bytes, header, status);
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
    /// that the two together keep to `rate_bps`. It costs the link time it
    /// took at `rate_bps` also while the carousel is capped below it
    /// (R-PACE-2): a carousel paced to a slow fleet's flash yields only the
    /// link time the repairs used, not seconds of silence.
    pub fn charge_shared(&mut self, now: Instant, len: usize) {
        self.pacer.charge_link(now, len, self.config.rate_bps);
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
            let (kind, len) = self.emit(Next::Announce, image, buf)?;
            return Some(self.sent(now, kind, len));
        }
        if !self.pacer.ready(now) {
            return None;
        }
        // A bounded number of skips (chunks missing from a short image) per call.
        for _ in 0..64 {
            let next = self.advance();
            if let Some((kind, len)) = self.emit(next, image, buf) {
                return Some(self.sent(now, kind, len));
            }
        }
        None
    }

    /// Charge and count a datagram of `len` bytes handed out at `now`.
    fn sent(&mut self, now: Instant, kind: FrameKind, len: usize) -> Transmit {
        self.pacer.charge(now, len);
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        Transmit {
            dest: Dest::Group,
            len,
            kind,
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
        let needs_data: usize = [
            DeviceState::Listening,
            DeviceState::FetchingManifest,
            DeviceState::Resuming,
            DeviceState::Receiving,
        ]
        .iter()
        .map(|s| self.fleet.in_state(*s))
        .sum();
        let has_image: usize = [
            DeviceState::Verifying,
            DeviceState::Done,
            DeviceState::Activated,
            DeviceState::Confirmed,
        ]
        .iter()
        .map(|s| self.fleet.count(self.geo.image_id, *s))
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
        let done =
            u64::from(self.block) * u64::from(self.geo.chunks_per_block) + u64::from(self.chunk);
        let pm = done * 1000 / self.geo.chunk_count.max(1);
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
                    if self.block < self.geo.block_count {
                        let (b, c) = (self.block, self.chunk);
                        let in_block = self.geo.chunks_in_block(b);
                        if self.chunk_auth
                            && c == 0
                            && self.list_piece < chunk_list::pieces(in_block, self.geo.chunk_size)
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
                        while self.repeat_acc >= self.geo.chunk_count.max(1) && per_pass > 0 {
                            self.repeat_acc -= self.geo.chunk_count.max(1);
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
        if self.block < self.geo.block_count || self.repeats_owed > 0 {
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

    fn emit(&mut self, next: Next, image: &[u8], buf: &mut [u8]) -> Option<(FrameKind, usize)> {
        let frame = match next {
            Next::Announce => Frame::Announce(Announce {
                board: &self.board,
                version: &self.version,
                image_len: self.geo.image_len,
                block_size: self.geo.block_size,
                chunk_size: self.geo.chunk_size,
                manifest_len: u32::try_from(self.signed_manifest.len()).unwrap_or(u32::MAX),
                rate_kbps: u32::try_from(self.config.rate_bps / 1000).unwrap_or(u32::MAX),
                pass: self.pass,
            }),
            Next::Manifest(i) => {
                let start = i as usize * self.geo.chunk_size as usize;
                let end = (start + self.geo.chunk_size as usize).min(self.signed_manifest.len());
                let bytes = self.signed_manifest.get(start..end)?;
                Frame::ManifestChunk(ManifestChunk {
                    offset: start as u32,
                    bytes: wire::Bytes(bytes),
                })
            }
            Next::ChunkList(block, piece) => {
                let in_block = self.geo.chunks_in_block(block);
                let span = chunk_list::piece_span(in_block, self.geo.chunk_size, piece)?;
                let Some(n) = chunk_list::fill_piece(
                    image,
                    self.geo.image_len,
                    self.geo.block_size,
                    self.geo.chunk_size,
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
                let payload = self.geo.chunk_bytes(image, block, chunk);
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
        let len = wire::encode(self.config.session, self.geo.image_id, 0, &frame, buf).ok()?;
        match frame {
            Frame::Announce(_) => self.stats.announce += 1,
            Frame::ManifestChunk(_) => self.stats.manifest += 1,
            Frame::ChunkList(_) => self.stats.chunk_lists += 1,
            _ => self.stats.data += 1,
        }
        Some((frame.kind(), len))
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
mod tests;

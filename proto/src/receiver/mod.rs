//! The device's receiver: a sans-IO state machine that turns datagrams into
//! verified blocks for the flasher, and missing chunks into NACKs.
//!
//! ```text
//!  Listening ──Announce(for us, newer)──▶ FetchingManifest ──verified──▶ Resuming
//!      ▲                                        │ refused                   │ scan done
//!      └───────────── Refused (logged, reported)┘                          ▼
//!   Done ◀── verify ok ── Verifying ◀── every block flashed ────────── Receiving
//! ```
//!
//! Memory is fixed when the manifest is accepted: `window_blocks` block
//! buffers with a chunk bitmap each, and one bit per image block. Nothing is
//! allocated per datagram; the block buffers are given back when the update
//! is done ([`Receiver::window_bytes`]). The shell drives it by the crate's contract:
//! `handle_*`, then drain [`Receiver::poll_event`] and
//! [`Receiver::poll_transmit`], then sleep until [`Receiver::poll_timeout`].
//!
//! Rules implemented here are named by their ids in `proto/PROTOCOL.md`.

extern crate alloc;

use core::net::SocketAddr;

use crate::manifest::Manifest;
use crate::report::Reporter;
use crate::rng::Rng;
use crate::time::{earliest, Instant};
use crate::transmit::{Dest, DropReason, Transmit};
use crate::wire::{
    self, ChunkRange, DeviceState, Frame, FrameKind, ImageId, Nack, Reason, FLAG_REPAIR,
    MAX_BOARD_LEN, MAX_NACK_RANGES, MAX_VERSION_LEN,
};

/// A refused image, kept for the shell's log line and the Status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refused image.
    pub image_id: ImageId,
    /// Why.
    pub reason: Reason,
    /// The board it was for (from the manifest, or the announce if refused before fetching).
    pub board: heapless::String<MAX_BOARD_LEN>,
    /// Its version.
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// A detail for the log (e.g. the manifest error).
    pub detail: &'static str,
    /// The refusal rests on signed data (a manifest that hashed to its image
    /// id) and is remembered; `false`: an unsigned Announce or a manifest
    /// that did not hash to its id was only not followed (R-ANN-2).
    pub signed: bool,
}

/// What the shell must act on.
#[derive(Debug)]
pub enum Event<'a> {
    /// A manifest verified and was accepted. Scan the target: call
    /// [`Receiver::handle_block_present`] for every block that already
    /// matches its digest, then [`Receiver::handle_scan_done`] (R-RES-1).
    ManifestAccepted,
    /// An image was refused ([`Refusal::signed`]), or an unsigned hint was
    /// not followed; nothing was or will be written for it.
    Refused(&'a Refusal),
    /// A verified block: write it, then call [`Receiver::handle_flash_done`].
    WriteBlock {
        /// Block index.
        index: u32,
        /// Its bytes (the last block may be short).
        data: &'a [u8],
    },
    /// Every block is written: read back the blocks R-VER-2 asks for (those
    /// not read back right since their last write) and call
    /// [`Receiver::handle_verify_done`].
    VerifyImage,
    /// The image is written and verified.
    Done,
    /// The update failed.
    Failed(Reason),
    /// First datagram of another session or image seen while busy (for the log).
    Foreign {
        /// Its session id.
        session: u32,
        /// Its image id.
        image_id: ImageId,
    },
}

/// Why the shell could not write a block ([`Receiver::handle_flash_done`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashFailure {
    /// An erase or write failed.
    Write,
    /// The block read back differs from what was written.
    ReadBack,
    /// No good eraseblock is left for the block.
    NoSpace,
}

/// Counters: the receiver's telemetry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Dropped: undecodable (bad magic, version, CRC, body).
    pub dropped_decode: u64,
    /// Dropped: bad CRC (also counted in `dropped_decode`).
    pub dropped_crc: u64,
    /// Dropped: another image or session.
    pub dropped_foreign: u64,
    /// Dropped: not wanted in the current phase.
    pub dropped_unexpected: u64,
    /// Dropped: index or length outside the manifest.
    pub dropped_out_of_manifest: u64,
    /// Data chunks stored.
    pub chunks_stored: u64,
    /// Data chunks that arrived as repairs and were stored.
    pub repairs_stored: u64,
    /// Parity symbols stored (R-PAR-3).
    pub parity_stored: u64,
    /// Blocks rebuilt by the erasure decoder.
    pub blocks_decoded: u64,
    /// NACKs held back or shrunk because a repair for the block was heard (R-NACK-4).
    pub nacks_suppressed: u64,
    /// Data chunks already held or already flashed.
    pub chunks_duplicate: u64,
    /// Data chunks dropped because no window slot was free.
    pub chunks_no_slot: u64,
    /// Partly filled blocks evicted to make room.
    pub evictions: u64,
    /// Complete blocks whose SHA-256 did not match (forged or corrupt chunks).
    pub digest_failures: u64,
    /// Data chunks dropped, on arrival or when the list came, for not
    /// matching their block's verified chunk-hash list (R-AUTH-3).
    pub chunks_forged: u64,
    /// Chunk-hash lists that matched the signed manifest (R-AUTH-2).
    pub chunk_lists_verified: u64,
    /// Chunk-hash lists that did not (a forged piece), forgotten.
    pub chunk_lists_forged: u64,
    /// Announces not followed (wrong board, not newer, too large): hints only (R-ANN-2).
    pub announces_refused: u64,
    /// Assembled manifests that did not hash to their image id, fetched again (R-MAN-3).
    pub manifest_refetches: u64,
    /// Manifest fetches dropped or put back for making no progress (R-ANN-3).
    pub fetches_abandoned: u64,
    /// NACK datagrams sent.
    pub nacks_sent: u64,
    /// Chunks asked for in NACKs.
    pub chunks_nacked: u64,
    /// Blocks found already written by the resume scan.
    pub blocks_resumed: u32,
    /// Blocks written and verified in this run.
    pub blocks_flashed: u32,
    /// Carousel passes seen (wraps of the stream position).
    pub passes_seen: u32,
    /// Blocks asked for whole in the end game (R-NACK-6).
    pub endgame_fetches: u32,
}

const MAX_REFUSED: usize = 8;
/// Announced images waiting for a fetch (R-ANN-3).
const MAX_CANDIDATES: usize = 4;
const MAX_VERIFY_ATTEMPTS: u32 = 3;

/// The device receiver. See the module docs for the driving contract.
pub struct Receiver {
    config: ReceiverConfig,
    phase: Phase,
    rng: Rng,
    events: heapless::Deque<Queued, 16>,
    refused: heapless::Vec<ImageId, MAX_REFUSED>,
    refusal: Option<Refusal>,
    /// The last unsigned hint not followed (R-ANN-2).
    hint: Option<Refusal>,
    candidates: heapless::Vec<Candidate, MAX_CANDIDATES>,
    foreign_seen: heapless::Vec<(u32, ImageId), 4>,
    sender: Option<SocketAddr>,
    /// Session/image the Status frames are stamped with.
    status_stamp: (u32, ImageId),
    nack_at: Option<Instant>,
    nack: heapless::Vec<ChunkRange, MAX_NACK_RANGES>,
    /// When the next Status is due (R-STAT-1).
    status: Reporter,
    status_to_sender: Option<SocketAddr>,
    /// R-STAT-6: the source of the last carousel Data frame stored, and the
    /// sender's address once a block matched the manifest with it.
    carousel_from: Option<SocketAddr>,
    proven_sender: Option<SocketAddr>,
    /// R-STAT-6: the source of the chunk that completed the accepted
    /// manifest; proves the sender when no verified block did.
    manifest_from: Option<SocketAddr>,
    last_progress_at: Instant,
    /// R-PACE-1: the shell's measured flash write rate, kbit/s (0: unknown).
    write_kbps: u32,
    /// R-PACE-1: rate changes reported at once so far (the provisional
    /// first one, and the one that replaces it).
    write_rate_changes: u8,
    stats: ReceiverStats,
}

impl Receiver {
    /// A receiver in the Listening phase. `now` starts its Status timer.
    pub fn new(config: ReceiverConfig, now: Instant) -> Receiver {
        let rng = Rng::new(config.rng_seed ^ config.device_id.rotate_left(17));
        Receiver {
            config,
            phase: Phase::Listening,
            rng,
            events: heapless::Deque::new(),
            refused: heapless::Vec::new(),
            refusal: None,
            hint: None,
            candidates: heapless::Vec::new(),
            foreign_seen: heapless::Vec::new(),
            sender: None,
            status_stamp: (0, ImageId::default()),
            nack_at: None,
            nack: heapless::Vec::new(),
            status: Reporter::new(now),
            status_to_sender: None,
            carousel_from: None,
            proven_sender: None,
            manifest_from: None,
            last_progress_at: now,
            write_kbps: 0,
            write_rate_changes: 0,
            stats: ReceiverStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// The phase, as reported in Status frames.
    pub fn state(&self) -> DeviceState {
        match &self.phase {
            Phase::Listening => DeviceState::Listening,
            Phase::FetchingManifest(_) => DeviceState::FetchingManifest,
            Phase::Resuming(_) => DeviceState::Resuming,
            Phase::Receiving(_) => DeviceState::Receiving,
            Phase::Verifying(_) => DeviceState::Verifying,
            Phase::Done(_) => DeviceState::Done,
            Phase::Failed(_) => DeviceState::Failed,
        }
    }

    fn transfer(&self) -> Option<&Transfer> {
        match &self.phase {
            Phase::Resuming(t) | Phase::Receiving(t) | Phase::Verifying(t) | Phase::Done(t) => {
                Some(t)
            }
            _ => None,
        }
    }

    /// Bytes of the receive window's block buffers now: allocated when the
    /// manifest is accepted, given back when the update is done.
    pub fn window_bytes(&self) -> usize {
        self.transfer().map_or(0, Transfer::window_bytes)
    }

    /// The accepted manifest, once there is one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.transfer().map(|t| &t.manifest)
    }

    /// The last refusal.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// Blocks written and verified (including those found by the resume scan).
    pub fn blocks_done(&self) -> u32 {
        self.transfer().map_or(0, |t| t.done_count)
    }

    /// When the transfer last made signed progress (R-RUN-1): the fetch
    /// began, the manifest was accepted, a block matched its digest or was
    /// found on flash.
    pub fn last_progress_at(&self) -> Instant {
        self.last_progress_at
    }

    /// The sender's address, learned from its Announce (unverified).
    pub fn sender(&self) -> Option<SocketAddr> {
        self.sender
    }

    /// The sender's address proven by a block it completed (R-STAT-6):
    /// where Status reports go besides the repair server.
    pub fn proven_sender(&self) -> Option<SocketAddr> {
        self.proven_sender
    }

    /// The session and image id its Status frames carry now (R-STAT-7: the
    /// shell stamps its own final report with them).
    pub fn status_stamp(&self) -> (u32, ImageId) {
        self.status_stamp
    }

    /// `true` once the update is done or failed and the final Status reports are out.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done(_) | Phase::Failed(_)) && !self.status.outcome_pending()
    }

    /// Feed one received datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        self.stats.datagrams += 1;
        let result = self.dispatch(now, from, bytes);
        match result {
            Err(DropReason::Decode(e)) => {
                self.stats.dropped_decode += 1;
                if e == wire::DecodeError::BadCrc {
                    self.stats.dropped_crc += 1;
                }
            }
            Err(DropReason::OtherImage | DropReason::OtherSession) => {
                self.stats.dropped_foreign += 1
            }
            Err(DropReason::OutOfManifest) => self.stats.dropped_out_of_manifest += 1,
            Err(DropReason::Unexpected | DropReason::Overload | DropReason::Unauthenticated) => {
                self.stats.dropped_unexpected += 1
            }
            // Counted where found: `chunks_forged`, `chunk_lists_forged`.
            Err(DropReason::Forged) => {}
            Ok(()) => {}
        }
        result
    }

    fn dispatch(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        let (header, frame) = wire::decode(bytes)?;
        match frame {
            Frame::Announce(a) => self.on_announce(now, from, &header, &a),
            Frame::ManifestChunk(m) => self.on_manifest_chunk(now, from, &header, &m),
            Frame::Data(d) => {
                // R-STAT-6: the source of the last carousel Data stored is
                // the sender's candidate address; a verified block proves it.
                let prev = self.carousel_from;
                if header.flags & FLAG_REPAIR == 0 {
                    self.carousel_from = Some(from);
                }
                let r = self.on_data(now, &header, &d);
                if r.is_err() {
                    self.carousel_from = prev;
                }
                r
            }
            Frame::ChunkList(l) => self.on_chunk_list(now, &header, &l),
            Frame::Nack(_) | Frame::Status(_) => Err(DropReason::Unexpected),
        }
    }

    fn queue(&mut self, q: Queued) {
        // The queue holds at most a handful of phase events; if it is ever full the
        // oldest informational event goes, never a phase event.
        if self.events.is_full() {
            if let Some(pos) = self
                .events
                .iter()
                .position(|e| matches!(e, Queued::Foreign(..) | Queued::Hint))
            {
                let mut kept: heapless::Deque<Queued, 16> = heapless::Deque::new();
                for (i, e) in self.events.iter().enumerate() {
                    if i != pos {
                        let _ = kept.push_back(*e);
                    }
                }
                self.events = kept;
            }
        }
        let _ = self.events.push_back(q);
    }
    /// Time passed: fire due NACK and Status timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_fetch(now);
        if self.nack_at.is_some_and(|at| at <= now) {
            self.nack_at = None;
            self.build_nack(now);
        }
    }
    /// The next datagram to send, written into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (session, image_id) = self.status_stamp;
        if !self.nack.is_empty() {
            let nack = Nack {
                device_id: self.config.device_id,
                ranges: core::mem::take(&mut self.nack),
            };
            let session = self.transfer().map_or(session, |t| t.session);
            if let Ok(len) = wire::encode(session, image_id, 0, &Frame::Nack(nack), buf) {
                self.stats.nacks_sent += 1;
                return Some(Transmit {
                    dest: Dest::RepairServer,
                    len,
                    kind: FrameKind::Nack,
                });
            }
        }
        if let Some(addr) = self.status_to_sender.take() {
            let len = self.encode_status(buf)?;
            return Some(Transmit {
                dest: Dest::Peer(addr),
                len,
                kind: FrameKind::Status,
            });
        }
        if self.status.is_due(now) {
            let len = self.encode_status(buf)?;
            // R-STAT-1: each report goes to the repair server, then to the
            // sender once its address is proven (R-STAT-6), never to the
            // unverified source of an Announce.
            self.status_to_sender = self.proven_sender;
            self.schedule_next_status(now);
            return Some(Transmit {
                dest: Dest::RepairServer,
                len,
                kind: FrameKind::Status,
            });
        }
        None
    }

    /// The next event for the shell.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if let Some(q) = self.events.pop_front() {
            return Some(match q {
                Queued::ManifestAccepted => Event::ManifestAccepted,
                Queued::Refused => match &self.refusal {
                    Some(r) => Event::Refused(r),
                    None => return None,
                },
                Queued::Hint => match &self.hint {
                    Some(r) => Event::Refused(r),
                    None => return None,
                },
                Queued::VerifyImage => Event::VerifyImage,
                Queued::Done => Event::Done,
                Queued::Failed(r) => Event::Failed(r),
                Queued::Foreign(session, image_id) => Event::Foreign { session, image_id },
            });
        }
        let Phase::Receiving(t) = &mut self.phase else {
            return None;
        };
        let s = t.slots.iter().position(|sl| sl.state == SlotState::Ready)?;
        t.slots[s].state = SlotState::Flashing;
        let index = t.slots[s].block;
        Some(Event::WriteBlock {
            index,
            data: t.slot_data(s),
        })
    }

    /// When the shell must call [`Receiver::handle_timeout`] or poll again.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            earliest(self.nack_at, self.status.due_at()),
            self.fetch_deadline(),
        )
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

mod chunk_auth;
mod config;
mod data;
mod fetch;
mod nack;
mod pace;
mod phase;
mod span;
mod status;
mod window;
mod window_budget;

pub use config::ReceiverConfig;
use fetch::Candidate;
use phase::{Phase, Queued};
use window::{SlotState, Transfer};
#[cfg(test)]
mod tests;

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
//! allocated per datagram. The shell drives it by the crate's contract:
//! `handle_*`, then drain [`Receiver::poll_event`] and
//! [`Receiver::poll_transmit`], then sleep until [`Receiver::poll_timeout`].
//!
//! Rules implemented here are named by their ids in `proto/PROTOCOL.md`.

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::fec::{self, BlockDecoder};
use crate::manifest::{Manifest, PUBLIC_KEY_LEN};
use crate::rng::Rng;
use crate::time::{earliest, Instant};
use crate::transmit::{Dest, DropReason, Transmit};
use crate::version;
use crate::wire::{
    self, Announce, ChunkRange, Data, DeviceState, Frame, Header, ImageId, ManifestChunk, Nack,
    Reason, Status, FLAG_PARITY, FLAG_REPAIR, MAX_BOARD_LEN, MAX_NACK_RANGES, MAX_VERSION_LEN,
};

/// How a receiver behaves; fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// This device's id, as reported in NACK and Status frames.
    pub device_id: u64,
    /// This device's board id; manifests for other boards are refused.
    pub board: String,
    /// The version running now; only strictly newer images are accepted.
    pub current_version: String,
    /// The operator's Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Block buffers in the receive window.
    pub window_blocks: u32,
    /// Bytes the window's block buffers may take: fewer than
    /// `window_blocks` slots for large blocks (R-PACE-4).
    pub max_window_bytes: u64,
    /// Largest block size accepted (bounds the window's memory).
    pub max_block_size: u32,
    /// Largest signed manifest accepted.
    pub max_manifest_len: u32,
    /// Bytes the target can hold; larger images are refused.
    pub capacity: u64,
    /// Keep block 0 (the image header) until every other block is flashed (in-place updates).
    pub hold_first_block: bool,
    /// Shortest random back-off before a NACK (R-NACK-2).
    pub nack_delay_min: Duration,
    /// Longest random back-off before a NACK.
    pub nack_delay_max: Duration,
    /// Wait before asking again for chunks already NACKed (R-NACK-3).
    pub nack_retry: Duration,
    /// NACKs per block before the receiver waits for the next carousel pass instead.
    pub max_nacks_per_block: u32,
    /// Interval between Status reports (R-STAT-1).
    pub status_interval: Duration,
    /// Seed of the back-off generator.
    pub rng_seed: u64,
    /// Round trip to the repair server, measured by the shell or configured;
    /// zero when unknown. Scales the back-off (R-NACK-2).
    pub round_trip: Duration,
    /// The back-off reaches at least this many round trips.
    pub nack_backoff_rtts: u32,
    /// Shape of the back-off: the largest of this many uniform draws (1 =
    /// uniform). Larger values make early NACKs rare, so that in a big fleet
    /// few devices ask before the repair is overheard (R-NACK-4).
    pub nack_backoff_shape: u32,
    /// After a repair for a block is heard, the block's NACK waits until no
    /// repair for it has arrived for this long (R-NACK-4).
    pub nack_suppress: Duration,
    /// NACK a block only once the carousel has passed all of it (R-NACK-5):
    /// one NACK then carries the block's whole loss count, which is what a
    /// parity repair server sizes its answer by. A receiver also does so,
    /// without being told, once it has heard a parity symbol.
    pub nack_whole_blocks: bool,
    /// End-game fetch (R-NACK-6): once every block still missing fits the
    /// window, blocks the carousel will not bring within `window_blocks`
    /// blocks are asked for whole from the repair server instead of waiting
    /// for the next pass.
    pub endgame_fetch: bool,
    /// A manifest fetch that stores no new chunk for this long is dropped,
    /// and one that runs four times this long while another announced image
    /// waits goes behind it (R-ANN-3).
    pub manifest_fetch_timeout: Duration,
    /// The anti-rollback floor (R-ROLL-1): the newest `min_version` of an
    /// image this device activated, kept by the shell; images older than it
    /// are refused as not newer. Empty for none.
    pub min_version: String,
    /// Fetch the manifest of an image announced with the running version,
    /// so that a signed manifest, not the Announce, can say the device is
    /// current (R-ANN-2; the agent's `exit_when_current`).
    pub fetch_when_current: bool,
}

impl ReceiverConfig {
    /// A configuration with the defaults for everything but identity and key.
    pub fn new(
        device_id: u64,
        board: &str,
        current_version: &str,
        public_key: [u8; PUBLIC_KEY_LEN],
    ) -> Self {
        ReceiverConfig {
            device_id,
            board: String::from(board),
            current_version: String::from(current_version),
            public_key,
            window_blocks: 8,
            max_window_bytes: u64::MAX,
            max_block_size: 256 * 1024,
            max_manifest_len: 256 * 1024,
            capacity: u64::MAX,
            hold_first_block: false,
            nack_delay_min: Duration::from_millis(2),
            nack_delay_max: Duration::from_millis(12),
            nack_retry: Duration::from_millis(60),
            max_nacks_per_block: 12,
            status_interval: Duration::from_secs(1),
            rng_seed: device_id,
            round_trip: Duration::ZERO,
            nack_backoff_rtts: 4,
            nack_backoff_shape: 1,
            nack_suppress: Duration::from_millis(15),
            nack_whole_blocks: false,
            endgame_fetch: true,
            manifest_fetch_timeout: Duration::from_secs(5),
            fetch_when_current: false,
            min_version: String::new(),
        }
    }
}

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
    /// Every block is written: read the image back and call [`Receiver::handle_verify_done`].
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Filling,
    /// Digest verified; waiting to be handed to the shell.
    Ready,
    /// Verified block 0, kept until every other block is flashed.
    Held,
    /// Handed to the shell; waiting for `handle_flash_done`.
    Flashing,
}

#[derive(Debug, Clone)]
struct Slot {
    state: SlotState,
    block: u32,
    received: u32,
    /// Every chunk of this block should have arrived (the stream passed it, or it was asked for whole).
    expect_all: bool,
    /// Holes below this index have been seen (new holes start a back-off).
    scanned: u32,
    nacks: u32,
    last_activity: Instant,
    /// Parity symbols held, in positions of missing source chunks (R-PAR-3).
    parity_held: u32,
    /// No NACK for this block before then: a repair for it was heard (R-NACK-4).
    quiet_until: Instant,
    /// When this block's NACK is due: its own back-off after new holes
    /// (R-NACK-2), a retry (R-NACK-3) or the end of a quiet period (R-NACK-4).
    nack_due: Option<Instant>,
    /// `nack_due` is a retry of holes already asked for: new holes pull it in.
    due_is_retry: bool,
}

impl Slot {
    const FREE: Slot = Slot {
        state: SlotState::Free,
        block: 0,
        received: 0,
        expect_all: false,
        scanned: 0,
        nacks: 0,
        last_activity: Instant::ZERO,
        parity_held: 0,
        quiet_until: Instant::ZERO,
        nack_due: None,
        due_is_retry: false,
    };
}

/// An announced image that passed the hint checks (R-ANN-3): what its
/// Announce said, unsigned.
#[derive(Debug, Clone)]
struct Candidate {
    session: u32,
    image_id: ImageId,
    from: SocketAddr,
    chunk_size: u32,
    manifest_len: u32,
    board: heapless::String<MAX_BOARD_LEN>,
    version: heapless::String<MAX_VERSION_LEN>,
    image_len: u64,
    block_size: u32,
}

struct ManifestFetch {
    session: u32,
    image_id: ImageId,
    chunk_size: u32,
    buf: Vec<u8>,
    have: Vec<u64>,
    missing: u32,
    board: heapless::String<MAX_BOARD_LEN>,
    version: heapless::String<MAX_VERSION_LEN>,
    image_len: u64,
    block_size: u32,
    /// The Announce it came from, to put it back in the candidates (R-ANN-3).
    from: SocketAddr,
    started_at: Instant,
    /// When the last new chunk was stored.
    progress_at: Instant,
    /// Global index of the last carousel Data frame of this image heard
    /// meanwhile: the stream started before the device could store it.
    deaf_pos: Option<u32>,
}

/// The window and bookkeeping of an accepted image; allocated once.
struct Transfer {
    manifest: Manifest,
    session: u32,
    /// `window_blocks * padded_block_len` bytes (R-WIRE-6).
    data: Vec<u8>,
    /// `window_blocks * words_per_slot` bitmap words.
    bits: Vec<u64>,
    words_per_slot: usize,
    /// `window_blocks * chunks_per_block`: which parity symbol a position
    /// holds in place of its missing source chunk ([`NO_PARITY`] if none).
    parity_at: Vec<u16>,
    /// `window_blocks * words_per_slot`: parity indices already held.
    parity_bits: Vec<u64>,
    /// Present when the geometry allows parity repair (R-PAR-2).
    decoder: Option<BlockDecoder>,
    slots: Vec<Slot>,
    done: Vec<u64>,
    done_count: u32,
    /// Global chunk index of the last carousel datagram, and its pass.
    stream_pos: Option<u32>,
    /// Block of the first carousel datagram stored or skipped in this
    /// transfer, and wraps of the stream since: which blocks have gone by
    /// while this device listened (R-NACK-6).
    first_block: Option<u32>,
    wraps: u32,
    /// In the pass the device joined: the last carousel position sent
    /// before it could store data (it was fetching the manifest or scanning
    /// its flash). Blocks that began streaming by then are not NACKed until
    /// the pass wraps (R-NACK-1).
    late_until: Option<u32>,
    /// NACK whole blocks (R-NACK-5): configured, or a parity symbol was heard.
    whole_blocks: bool,
    verify_attempts: u32,
    /// Chunk-hash lists of the window's blocks (R-AUTH-2); format 2 only.
    lists: Option<chunk_auth::ChunkLists>,
}

enum Phase {
    Listening,
    FetchingManifest(ManifestFetch),
    Resuming(Transfer),
    Receiving(Transfer),
    Verifying(Transfer),
    Done(Transfer),
    Failed(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    ManifestAccepted,
    Refused,
    Hint,
    VerifyImage,
    Done,
    Failed(Reason),
    Foreign(u32, ImageId),
}

const FINAL_STATUS_REPEATS: u32 = 3;
const FINAL_STATUS_GAP: Duration = Duration::from_millis(50);
const MAX_REFUSED: usize = 8;
/// Announced images waiting for a fetch (R-ANN-3).
const MAX_CANDIDATES: usize = 4;
const MAX_VERIFY_ATTEMPTS: u32 = 3;
const NO_PARITY: u16 = fec::SOURCE;

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
    status_at: Option<Instant>,
    status_to_sender: Option<SocketAddr>,
    /// R-STAT-6: the source of the last carousel Data frame stored, and the
    /// sender's address once a block matched the manifest with it.
    carousel_from: Option<SocketAddr>,
    proven_sender: Option<SocketAddr>,
    /// R-STAT-6: the source of the chunk that completed the accepted
    /// manifest; proves the sender when no verified block did.
    manifest_from: Option<SocketAddr>,
    final_status_left: u32,
    last_progress_at: Instant,
    /// R-PACE-1: the shell's measured flash write rate, kbit/s (0: unknown).
    write_kbps: u32,
    stats: ReceiverStats,
}

fn set_bit(words: &mut [u64], i: u32) -> bool {
    let (w, b) = ((i / 64) as usize, i % 64);
    match words.get_mut(w) {
        Some(word) => {
            let was = *word & (1 << b) != 0;
            *word |= 1 << b;
            !was
        }
        None => false,
    }
}

fn get_bit(words: &[u64], i: u32) -> bool {
    words
        .get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn clear_bit(words: &mut [u64], i: u32) {
    if let Some(w) = words.get_mut((i / 64) as usize) {
        *w &= !(1 << (i % 64));
    }
}

impl Transfer {
    fn new(manifest: Manifest, session: u32, window_blocks: u32) -> Transfer {
        let window = window_blocks.max(1) as usize;
        let words_per_slot = (manifest.chunks_per_block() as usize).div_ceil(64);
        let done_words = (manifest.block_count() as usize).div_ceil(64);
        let cpb = manifest.chunks_per_block();
        // R-PAR-3: everything parity needs is allocated here, once.
        let decoder = BlockDecoder::new(cpb, manifest.chunk_size).ok();
        let parity_len = if decoder.is_some() {
            window * cpb as usize
        } else {
            0
        };
        Transfer {
            lists: chunk_auth::ChunkLists::new(&manifest, window),
            data: vec![0u8; window * manifest.padded_block_len()],
            bits: vec![0u64; window * words_per_slot],
            parity_at: vec![NO_PARITY; parity_len],
            parity_bits: vec![
                0u64;
                if decoder.is_some() {
                    window * words_per_slot
                } else {
                    0
                }
            ],
            decoder,
            words_per_slot,
            slots: vec![Slot::FREE; window],
            first_block: None,
            wraps: 0,
            done: vec![0u64; done_words],
            done_count: 0,
            stream_pos: None,
            late_until: None,
            whole_blocks: false,
            verify_attempts: 0,
            manifest,
            session,
        }
    }

    fn slot_bits(&self, s: usize) -> &[u64] {
        &self.bits[s * self.words_per_slot..(s + 1) * self.words_per_slot]
    }

    fn slot_bits_mut(&mut self, s: usize) -> &mut [u64] {
        &mut self.bits[s * self.words_per_slot..(s + 1) * self.words_per_slot]
    }

    fn slot_data(&self, s: usize) -> &[u8] {
        let bs = self.manifest.padded_block_len();
        let len = self.manifest.block_len(self.slots[s].block);
        &self.data[s * bs..s * bs + len]
    }

    fn is_done(&self, block: u32) -> bool {
        get_bit(&self.done, block)
    }

    fn mark_done(&mut self, block: u32) {
        if set_bit(&mut self.done, block) {
            self.done_count += 1;
        }
    }

    fn reset_slot(&mut self, s: usize) {
        self.slots[s] = Slot::FREE;
        self.slot_bits_mut(s).fill(0);
        self.clear_parity(s);
        if let Some(l) = &mut self.lists {
            l.clear(s);
        }
    }

    fn clear_parity(&mut self, s: usize) {
        if self.decoder.is_some() {
            let cpb = self.manifest.chunks_per_block() as usize;
            self.parity_at[s * cpb..(s + 1) * cpb].fill(NO_PARITY);
            let w = self.words_per_slot;
            self.parity_bits[s * w..(s + 1) * w].fill(0);
        }
        self.slots[s].parity_held = 0;
    }

    /// A position of slot `s` holding neither its source chunk nor a parity
    /// symbol, other than `except`.
    fn free_position(&self, s: usize, except: u32) -> Option<u32> {
        let cpb = self.manifest.chunks_per_block() as usize;
        let n = self.manifest.chunks_in_block(self.slots[s].block);
        let bits = self.slot_bits(s);
        (0..n).find(|&c| {
            c != except && !get_bit(bits, c) && self.parity_at[s * cpb + c as usize] == NO_PARITY
        })
    }

    fn find_slot(&self, block: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|sl| sl.state != SlotState::Free && sl.block == block)
    }

    fn global(&self, block: u32, chunk: u32) -> u32 {
        block
            .saturating_mul(self.manifest.chunks_per_block())
            .saturating_add(chunk)
    }

    /// Chunks of slot `s` that should have arrived by now (R-NACK-1).
    fn horizon(&self, s: usize) -> u32 {
        let slot = &self.slots[s];
        if self
            .late_until
            .is_some_and(|l| self.global(slot.block, 0) <= l)
        {
            // R-NACK-1: this block began streaming before the device could
            // store it; the next pass brings it.
            return 0;
        }
        let n = self.manifest.chunks_in_block(slot.block);
        if slot.expect_all {
            return n;
        }
        match self.stream_pos {
            Some(pos) => {
                let start = self.global(slot.block, 0);
                if pos >= start {
                    (pos - start).min(n)
                } else {
                    0
                }
            }
            None => 0,
        }
    }

    /// Whether the carousel has sent `block` while this device listened,
    /// given that it is now in block `current` (R-NACK-6).
    fn went_by(&self, block: u32, current: u32) -> bool {
        let Some(first) = self.first_block else {
            return false;
        };
        match self.wraps {
            0 => block >= first && block < current,
            1 => block >= first || block < current,
            _ => true,
        }
    }

    fn has_hole_below(&self, s: usize, from: u32, to: u32) -> bool {
        let bits = self.slot_bits(s);
        (from..to).any(|c| !get_bit(bits, c))
    }

    /// Chunks of slot `s` below `to` not held.
    fn holes_below(&self, s: usize, to: u32) -> u32 {
        let bits = self.slot_bits(s);
        let full = (to / 64) as usize;
        let mut held: u32 = bits[..full.min(bits.len())]
            .iter()
            .map(|w| w.count_ones())
            .sum();
        if to % 64 != 0 {
            if let Some(w) = bits.get(full) {
                held += (w & ((1u64 << (to % 64)) - 1)).count_ones();
            }
        }
        to.saturating_sub(held)
    }
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
            status_at: Some(now),
            status_to_sender: None,
            carousel_from: None,
            proven_sender: None,
            manifest_from: None,
            final_status_left: 0,
            last_progress_at: now,
            write_kbps: 0,
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
        matches!(self.phase, Phase::Done(_) | Phase::Failed(_)) && self.final_status_left == 0
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

    fn make_refusal(
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
        signed: bool,
    ) -> Refusal {
        let mut b = heapless::String::new();
        let _ = b.push_str(truncate(board, MAX_BOARD_LEN));
        let mut v = heapless::String::new();
        let _ = v.push_str(truncate(version, MAX_VERSION_LEN));
        Refusal {
            image_id,
            reason,
            board: b,
            version: v,
            detail,
            signed,
        }
    }

    /// R-ANN-2: a refusal that rests on signed data (a manifest that hashed
    /// to its image id): remembered, reported, then the next candidate.
    fn refuse(
        &mut self,
        now: Instant,
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
    ) {
        if !self.refused.contains(&image_id) {
            if self.refused.is_full() {
                self.refused.remove(0);
            }
            let _ = self.refused.push(image_id);
        }
        self.candidates.retain(|c| c.image_id != image_id);
        self.refusal = Some(Self::make_refusal(
            image_id, reason, board, version, detail, true,
        ));
        self.phase = Phase::Listening;
        self.queue(Queued::Refused);
        self.final_status_left = FINAL_STATUS_REPEATS;
        self.status_at = Some(now);
        self.next_candidate(now);
    }

    /// R-ANN-2: unsigned input not followed: counted and handed to the shell
    /// for its summary, but nothing is remembered and nothing is reported.
    fn hint(
        &mut self,
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
    ) {
        self.hint = Some(Self::make_refusal(
            image_id, reason, board, version, detail, false,
        ));
        self.queue(Queued::Hint);
    }

    fn note_foreign(&mut self, header: &Header) {
        let key = (header.session, header.image_id);
        if !self.foreign_seen.contains(&key) && self.foreign_seen.push(key).is_ok() {
            self.queue(Queued::Foreign(header.session, header.image_id));
        }
    }

    /// Newer, or current when a signed "nothing to do" is wanted (R-ANN-2).
    fn wanted_version(&self, v: &str) -> bool {
        if version::below_floor(v, &self.config.min_version) {
            return false;
        }
        match version::compare(v, &self.config.current_version) {
            core::cmp::Ordering::Greater => true,
            core::cmp::Ordering::Equal => self.config.fetch_when_current,
            core::cmp::Ordering::Less => false,
        }
    }

    /// Why a signed `v` is refused as not newer (R-VER-1), if it is: a
    /// version older than the floor is a replay (R-ROLL-1).
    fn not_newer(&self, v: &str) -> Option<&'static str> {
        if version::below_floor(v, &self.config.min_version) {
            Some("signed version is below the anti-rollback floor")
        } else if !version::is_newer(v, &self.config.current_version) {
            Some("signed version is not newer")
        } else {
            None
        }
    }

    /// R-ANN-2: what an Announce alone can rule out, as a hint.
    fn announce_hint(&self, a: &Announce<'_>) -> Option<(Reason, &'static str)> {
        if a.board != self.config.board {
            Some((Reason::WrongBoard, "announced for another board"))
        } else if version::below_floor(a.version, &self.config.min_version) {
            Some((
                Reason::NotNewer,
                "announced version is below the anti-rollback floor",
            ))
        } else if !self.wanted_version(a.version) {
            Some((Reason::NotNewer, "announced version is not newer"))
        } else if a.manifest_len > self.config.max_manifest_len {
            Some((Reason::TooLarge, "manifest larger than max_manifest_len"))
        } else if a.block_size > self.config.max_block_size || a.image_len > self.config.capacity {
            Some((
                Reason::TooLarge,
                "image or block larger than this device allows",
            ))
        } else {
            None
        }
    }

    // R-ANN-1: an Announce only starts a manifest fetch; the manifest decides.
    fn on_announce(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        a: &Announce<'_>,
    ) -> Result<(), DropReason> {
        match &mut self.phase {
            Phase::Listening | Phase::FetchingManifest(_) => {}
            Phase::Resuming(t) | Phase::Receiving(t) | Phase::Verifying(t) | Phase::Done(t) => {
                if t.manifest.image_id != header.image_id {
                    self.note_foreign(header);
                    return Err(DropReason::OtherImage);
                }
                // R-SES-2: an Announce switches no session; Data decides (R-SES-3).
                self.sender = Some(from);
                return Ok(());
            }
            Phase::Failed(_) => return Err(DropReason::Unexpected),
        }
        if let Phase::FetchingManifest(f) = &mut self.phase {
            if f.image_id == header.image_id {
                f.session = header.session;
                self.sender = Some(from);
                return Ok(());
            }
        }
        if self.refused.contains(&header.image_id) {
            return Err(DropReason::OtherImage);
        }
        if let Some((reason, detail)) = self.announce_hint(a) {
            self.stats.announces_refused += 1;
            self.hint(header.image_id, reason, a.board, a.version, detail);
            return Ok(());
        }
        let mut board = heapless::String::new();
        let _ = board.push_str(a.board);
        let mut version = heapless::String::new();
        let _ = version.push_str(a.version);
        let cand = Candidate {
            session: header.session,
            image_id: header.image_id,
            from,
            chunk_size: a.chunk_size,
            manifest_len: a.manifest_len,
            board,
            version,
            image_len: a.image_len,
            block_size: a.block_size,
        };
        if matches!(self.phase, Phase::FetchingManifest(_)) {
            // R-ANN-3: another image is announced while fetching: it waits its
            // turn. A flood of forged ids replaces entries at random, so the
            // real one, announced again and again, keeps a place.
            if let Some(c) = self
                .candidates
                .iter_mut()
                .find(|c| c.image_id == cand.image_id)
            {
                *c = cand;
            } else if let Err(cand) = self.candidates.push(cand) {
                let i = self.rng.below(MAX_CANDIDATES as u64) as usize;
                self.candidates[i] = cand;
            }
            return Ok(());
        }
        self.last_progress_at = now;
        self.start_fetch(now, cand);
        Ok(())
    }

    fn start_fetch(&mut self, now: Instant, c: Candidate) {
        let chunks = c.manifest_len.div_ceil(c.chunk_size);
        self.sender = Some(c.from);
        self.status_stamp = (c.session, c.image_id);
        self.phase = Phase::FetchingManifest(ManifestFetch {
            session: c.session,
            image_id: c.image_id,
            chunk_size: c.chunk_size,
            buf: vec![0u8; c.manifest_len as usize],
            have: vec![0u64; (chunks as usize).div_ceil(64)],
            missing: chunks,
            board: c.board,
            version: c.version,
            image_len: c.image_len,
            block_size: c.block_size,
            from: c.from,
            started_at: now,
            progress_at: now,
            deaf_pos: None,
        });
        self.status_at = Some(now);
    }

    /// Fetch the next announced image waiting, if any (R-ANN-3).
    fn next_candidate(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Listening) || self.candidates.is_empty() {
            return;
        }
        let c = self.candidates.remove(0);
        self.start_fetch(now, c);
    }

    /// Stop fetching `f`; with `keep` it goes behind the other candidates
    /// (or, alone, is fetched again from scratch).
    fn abandon_fetch(&mut self, now: Instant, f: ManifestFetch, keep: bool) {
        self.phase = Phase::Listening;
        if keep && !self.candidates.is_full() {
            let _ = self.candidates.push(Candidate {
                session: f.session,
                image_id: f.image_id,
                from: f.from,
                chunk_size: f.chunk_size,
                manifest_len: f.buf.len() as u32,
                board: f.board,
                version: f.version,
                image_len: f.image_len,
                block_size: f.block_size,
            });
        }
        self.next_candidate(now);
    }

    /// When the current fetch is due to be dropped or put back (R-ANN-3).
    fn fetch_deadline(&self) -> Option<Instant> {
        let Phase::FetchingManifest(f) = &self.phase else {
            return None;
        };
        let t = self.config.manifest_fetch_timeout;
        let stale = f.progress_at + t;
        if self.candidates.is_empty() {
            Some(stale)
        } else {
            Some(stale.min(f.started_at + t.saturating_mul(4)))
        }
    }

    fn check_fetch(&mut self, now: Instant) {
        if self.fetch_deadline().is_none_or(|d| now < d) {
            return;
        }
        let Phase::FetchingManifest(f) = core::mem::replace(&mut self.phase, Phase::Listening)
        else {
            return;
        };
        self.stats.fetches_abandoned += 1;
        // A fetch that stored chunks lately goes behind the others; one that
        // stored nothing is dropped (its next Announce brings it back).
        let keep = now < f.progress_at + self.config.manifest_fetch_timeout;
        self.abandon_fetch(now, f, keep);
    }

    fn on_manifest_chunk(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        m: &ManifestChunk<'_>,
    ) -> Result<(), DropReason> {
        let Phase::FetchingManifest(f) = &mut self.phase else {
            return Err(DropReason::Unexpected);
        };
        if f.image_id != header.image_id {
            return Err(DropReason::OtherImage);
        }
        let total = f.buf.len() as u32;
        let expected_len = total.saturating_sub(m.offset).min(f.chunk_size) as usize;
        if m.offset % f.chunk_size != 0 || m.offset >= total || m.bytes.0.len() != expected_len {
            return Err(DropReason::OutOfManifest);
        }
        let index = m.offset / f.chunk_size;
        if !set_bit(&mut f.have, index) {
            return Ok(());
        }
        f.buf[m.offset as usize..m.offset as usize + expected_len].copy_from_slice(m.bytes.0);
        f.missing -= 1;
        // Unsigned: keeps this fetch alive (R-ANN-3), not the run (R-RUN-1).
        f.progress_at = now;
        if f.missing == 0 {
            self.finish_manifest(now, from);
        }
        Ok(())
    }

    /// `from` sent the chunk that completed the manifest: the sender's
    /// address if the manifest hashes to its image id and verifies (R-STAT-6).
    fn finish_manifest(&mut self, now: Instant, from: SocketAddr) {
        let Phase::FetchingManifest(f) = core::mem::replace(&mut self.phase, Phase::Listening)
        else {
            return;
        };
        // R-MAN-3: the manifest must be the one the header names. If it is
        // not, a forged chunk got in: the bytes say nothing about the image
        // id, so it is fetched again, never refused.
        if crate::manifest::image_id(&f.buf) != f.image_id {
            self.stats.manifest_refetches += 1;
            self.hint(
                f.image_id,
                Reason::ManifestMismatch,
                &f.board,
                &f.version,
                "assembled manifest does not hash to its image id; fetching it again",
            );
            self.abandon_fetch(now, f, true);
            return;
        }
        // From here the image id names exactly these bytes: a refusal is
        // remembered whoever sent them (R-ANN-2).
        let manifest = match Manifest::verify(&f.buf, &self.config.public_key) {
            Ok(m) => m,
            Err(crate::manifest::ManifestError::BadSignature) => {
                self.refuse(
                    now,
                    f.image_id,
                    Reason::BadSignature,
                    &f.board,
                    &f.version,
                    "signature does not verify with the configured public key",
                );
                return;
            }
            Err(_) => {
                self.refuse(
                    now,
                    f.image_id,
                    Reason::ManifestMismatch,
                    &f.board,
                    &f.version,
                    "manifest does not decode",
                );
                return;
            }
        };
        let (board, version) = (manifest.board.clone(), manifest.version.clone());
        if manifest.board.as_str() != self.config.board {
            self.refuse(
                now,
                f.image_id,
                Reason::WrongBoard,
                &board,
                &version,
                "signed for another board",
            );
        } else if let Some(detail) = self.not_newer(&manifest.version) {
            self.refuse(now, f.image_id, Reason::NotNewer, &board, &version, detail);
        } else if manifest.block_size > self.config.max_block_size
            || manifest.image_len > self.config.capacity
        {
            self.refuse(
                now,
                f.image_id,
                Reason::TooLarge,
                &board,
                &version,
                "image or block larger than this device allows",
            );
        } else {
            // R-MAN-3: where the unsigned Announce disagrees with the signed
            // manifest, the manifest wins.
            if manifest.board != f.board
                || manifest.version != f.version
                || manifest.image_len != f.image_len
                || manifest.block_size != f.block_size
                || manifest.chunk_size != f.chunk_size
            {
                self.hint(
                    f.image_id,
                    Reason::ManifestMismatch,
                    &f.board,
                    &f.version,
                    "announce disagrees with the signed manifest; the manifest wins",
                );
            }
            let slots = window_slots(
                self.config.window_blocks,
                self.config.max_window_bytes,
                manifest.padded_block_len(),
            );
            let mut t = Transfer::new(manifest, f.session, slots);
            t.whole_blocks = self.config.nack_whole_blocks;
            if let Some(pos) = f
                .deaf_pos
                .filter(|&p| p < t.global(t.manifest.block_count(), 0))
            {
                t.stream_pos = Some(pos);
                t.late_until = Some(pos);
            }
            self.candidates.clear();
            self.manifest_from = Some(from);
            self.last_progress_at = now;
            self.phase = Phase::Resuming(t);
            self.queue(Queued::ManifestAccepted);
            self.status_at = Some(now);
        }
    }

    /// The resume scan found that block `index` already holds the right
    /// bytes (R-RES-1). The shell may scan before [`Self::handle_scan_done`]
    /// or, so that no carousel data is missed meanwhile, after it while
    /// receiving (R-RES-2): a block being filled in the window is then
    /// dropped from it, one already complete there is written anyway.
    pub fn handle_block_present(&mut self, now: Instant, index: u32) {
        match &mut self.phase {
            Phase::Resuming(t) if index < t.manifest.block_count() && !t.is_done(index) => {
                t.mark_done(index);
                self.stats.blocks_resumed += 1;
            }
            Phase::Receiving(t) => {
                if index >= t.manifest.block_count() || t.is_done(index) {
                    return;
                }
                if let Some(s) = t.find_slot(index) {
                    if t.slots[s].state != SlotState::Filling {
                        return;
                    }
                    t.reset_slot(s);
                }
                t.mark_done(index);
                self.stats.blocks_resumed += 1;
                self.after_block_done(now);
            }
            _ => {}
        }
    }

    /// The resume scan is over: start receiving (or verifying, if nothing is missing).
    pub fn handle_scan_done(&mut self, now: Instant) {
        let phase = core::mem::replace(&mut self.phase, Phase::Listening);
        self.phase = match phase {
            Phase::Resuming(t) => {
                self.last_progress_at = now;
                self.status_at = Some(now);
                if t.done_count == t.manifest.block_count() {
                    self.queue(Queued::VerifyImage);
                    self.prove_by_manifest();
                    Phase::Verifying(t)
                } else {
                    Phase::Receiving(t)
                }
            }
            other => other,
        };
    }

    /// R-NACK-1: carousel data of the image heard before the device can
    /// store it (fetching the manifest, scanning its flash) marks where it
    /// joined the pass.
    fn note_deaf(&mut self, header: &Header, d: &Data<'_>) {
        if header.flags & (FLAG_REPAIR | FLAG_PARITY) != 0 {
            return;
        }
        match &mut self.phase {
            Phase::FetchingManifest(f)
                if f.image_id == header.image_id
                    && d.chunk < wire::chunks_per_block(f.block_size, f.chunk_size) =>
            {
                let cpb = wire::chunks_per_block(f.block_size, f.chunk_size);
                f.deaf_pos = d
                    .block
                    .checked_mul(cpb)
                    .and_then(|g| g.checked_add(d.chunk));
            }
            Phase::Resuming(t)
                if t.manifest.image_id == header.image_id
                    && d.block < t.manifest.block_count()
                    && d.chunk < t.manifest.chunks_in_block(d.block) =>
            {
                let pos = t.global(d.block, d.chunk);
                t.stream_pos = Some(pos);
                t.late_until = Some(pos);
            }
            _ => {}
        }
    }

    fn on_data(&mut self, now: Instant, header: &Header, d: &Data<'_>) -> Result<(), DropReason> {
        self.note_deaf(header, d);
        let Phase::Receiving(t) = &mut self.phase else {
            return match &self.phase {
                Phase::Resuming(t) | Phase::Verifying(t) | Phase::Done(t)
                    if t.manifest.image_id != header.image_id =>
                {
                    self.note_foreign(header);
                    Err(DropReason::OtherImage)
                }
                _ => Err(DropReason::Unexpected),
            };
        };
        // R-SES-1: only chunks of the accepted image are stored, whatever
        // their session: the image id and the signed digests bind the content.
        if header.image_id != t.manifest.image_id {
            self.note_foreign(header);
            return Err(DropReason::OtherImage);
        }
        let m = &t.manifest;
        let is_repair = header.flags & FLAG_REPAIR != 0;
        let is_parity = header.flags & FLAG_PARITY != 0;
        if d.block >= m.block_count() {
            return Err(DropReason::OutOfManifest);
        }
        let k = m.chunks_in_block(d.block);
        let cs = m.chunk_size as usize;
        let (chunk_off, expected) = if is_parity {
            // R-PAR-1: parity symbol `chunk` of the block; full chunk_size always.
            if t.decoder.is_none() || d.chunk >= fec::parity_count(k) {
                return Err(DropReason::OutOfManifest);
            }
            (0, cs)
        } else {
            if d.chunk >= k {
                return Err(DropReason::OutOfManifest);
            }
            let off = d.chunk as usize * cs;
            (off, (m.block_len(d.block) - off).min(cs))
        };
        if d.payload.0.len() != expected {
            return Err(DropReason::OutOfManifest);
        }
        if is_parity {
            // R-NACK-5: the repair server answers with parity; from now on a
            // block is NACKed whole, with its whole loss count.
            t.whole_blocks = true;
        }
        if !is_repair && !is_parity {
            let pos = t.global(d.block, d.chunk);
            if t.first_block.is_none() {
                t.first_block = Some(d.block);
            }
            if t.stream_pos.is_some_and(|p| pos < p) {
                self.stats.passes_seen += 1;
                t.wraps = t.wraps.saturating_add(1);
                // A new pass: every block in the window has now been passed
                // once whole, except those that began streaming before the
                // device joined: the stream brings them again (R-NACK-1).
                let late = t.late_until.take();
                let cpb = t.manifest.chunks_per_block();
                for sl in t.slots.iter_mut().filter(|s| s.state == SlotState::Filling) {
                    sl.expect_all = late.is_none_or(|l| sl.block.saturating_mul(cpb) > l);
                }
            }
            t.stream_pos = Some(pos);
            for sl in t.slots.iter_mut().filter(|s| s.state == SlotState::Filling) {
                if sl.block < d.block {
                    sl.expect_all = true;
                }
            }
        }
        if t.is_done(d.block) {
            self.stats.chunks_duplicate += 1;
            self.after_data(now);
            return Ok(());
        }
        let s = match t.find_slot(d.block) {
            Some(s) => s,
            None => match Self::claim_slot(t, is_repair, &mut self.stats) {
                Some(s) => {
                    t.slots[s] = Slot {
                        state: SlotState::Filling,
                        block: d.block,
                        last_activity: now,
                        ..Slot::FREE
                    };
                    s
                }
                None => {
                    self.stats.chunks_no_slot += 1;
                    self.after_data(now);
                    return Ok(());
                }
            },
        };
        if is_parity && t.slots[s].state == SlotState::Filling {
            // R-NACK-4: a parity symbol for this block was heard; whoever asked,
            // it repairs a loss here too, so this block's NACK waits until the
            // symbols stop. A retransmitted source chunk only helps the devices
            // that lack that very chunk, so it holds nothing back: at fleet
            // scale others' repairs would otherwise defer ours past the window.
            let cfg = &self.config;
            let sl = &mut t.slots[s];
            sl.quiet_until = now + cfg.nack_suppress;
            // R-NACK-3: parity after this block's NACK answers it (or another
            // device's, which repairs a loss here too). If the block is still
            // short once the symbols stop, a symbol of the answer was lost
            // here: the retry comes then, after a fresh back-off, instead of
            // a whole `nack_retry` later.
            if sl.due_is_retry {
                let at = sl.quiet_until + backoff(cfg, &mut self.rng);
                if sl.nack_due.is_some_and(|due| at < due) {
                    sl.nack_due = Some(at);
                    self.nack_at = earliest(self.nack_at, Some(at));
                }
            }
        }
        if t.slots[s].state != SlotState::Filling {
            self.stats.chunks_duplicate += 1;
            self.after_data(now);
            return Ok(());
        }
        let cpb = t.manifest.chunks_per_block() as usize;
        let base = s * t.manifest.padded_block_len();
        if is_parity {
            let w = t.words_per_slot;
            if !set_bit(&mut t.parity_bits[s * w..(s + 1) * w], d.chunk) {
                self.stats.chunks_duplicate += 1;
                self.after_data(now);
                return Ok(());
            }
            // R-PAR-3: a parity symbol lives in the place of a missing source
            // chunk; held symbols never exceed k, so a place is always free.
            let Some(c) = t.free_position(s, u32::MAX) else {
                self.stats.chunks_duplicate += 1;
                self.after_data(now);
                return Ok(());
            };
            let at = base + c as usize * cs;
            t.data[at..at + cs].copy_from_slice(d.payload.0);
            t.parity_at[s * cpb + c as usize] = d.chunk as u16;
            t.slots[s].parity_held += 1;
            self.stats.parity_stored += 1;
        } else {
            // R-AUTH-3: a chunk its block's verified list does not name is
            // dropped before it can take the chunk's place.
            if t.chunk_forged(s, d.chunk, d.payload.0) {
                self.stats.chunks_forged += 1;
                return Err(DropReason::Forged);
            }
            if !set_bit(t.slot_bits_mut(s), d.chunk) {
                self.stats.chunks_duplicate += 1;
                self.after_data(now);
                return Ok(());
            }
            if t.decoder.is_some() && t.parity_at[s * cpb + d.chunk as usize] != NO_PARITY {
                // R-PAR-3: the source chunk takes its place back; the parity
                // symbol there moves to a free place (one exists: fewer than
                // k symbols were held).
                let from = base + chunk_off;
                let moved = t.parity_at[s * cpb + d.chunk as usize];
                t.parity_at[s * cpb + d.chunk as usize] = NO_PARITY;
                match t.free_position(s, d.chunk) {
                    Some(f) => {
                        t.data.copy_within(from..from + cs, base + f as usize * cs);
                        t.parity_at[s * cpb + f as usize] = moved;
                    }
                    None => {
                        let w = t.words_per_slot;
                        clear_bit(&mut t.parity_bits[s * w..(s + 1) * w], u32::from(moved));
                        t.slots[s].parity_held -= 1;
                    }
                }
            }
            let start = base + chunk_off;
            t.data[start..start + expected].copy_from_slice(d.payload.0);
            self.stats.chunks_stored += 1;
            if is_repair {
                self.stats.repairs_stored += 1;
            }
            t.slots[s].received += 1;
        }
        let slot = &mut t.slots[s];
        slot.last_activity = now;
        if slot.received + slot.parity_held >= k {
            let block = slot.block;
            let checked = t.all_chunks_checked(s);
            let mut ok = true;
            if t.slots[s].parity_held > 0 {
                ok = Self::decode_slot(t, s, k).is_ok();
                if ok {
                    self.stats.blocks_decoded += 1;
                }
            }
            // R-BLK-1: a block is flashed only when its SHA-256 matches the
            // manifest (R-AUTH-3: by construction when every chunk matched
            // its verified list).
            let ok = ok
                && (checked
                    || t.manifest
                        .digest(block)
                        .is_some_and(|want| *want == t.manifest.digest_of(t.slot_data(s))));
            if ok {
                // R-RUN-1: only a verified block is progress. R-SES-3: the
                // session of carousel data that completed one is the one
                // NACKs and Status carry from now on.
                self.last_progress_at = now;
                if !is_repair && !is_parity {
                    t.session = header.session;
                    self.status_stamp = (header.session, header.image_id);
                }
                // R-STAT-6: the source of the carousel data stored when a
                // block matched the signed manifest is the real sender.
                if let Some(addr) = self.carousel_from {
                    self.proven_sender = Some(addr);
                }
                let hold = self.config.hold_first_block
                    && block == 0
                    && t.done_count + 1 < t.manifest.block_count();
                t.slots[s].state = if hold {
                    SlotState::Held
                } else {
                    SlotState::Ready
                };
            } else {
                self.stats.digest_failures += 1;
                // R-BLK-2 / R-PAR-4: a forged or corrupt chunk or parity
                // symbol costs this block, nothing more. R-AUTH-4: with a
                // verified list the source chunks were checked one by one;
                // only the parity symbols go.
                t.clear_parity(s);
                if t.list_verified(s) {
                    t.purge_forged(s, &mut self.stats);
                } else {
                    t.slot_bits_mut(s).fill(0);
                    t.slots[s].received = 0;
                }
                let slot = &mut t.slots[s];
                slot.expect_all = true;
                slot.scanned = 0;
            }
        }
        self.after_data(now);
        Ok(())
    }

    /// Rebuild slot `s` (k symbols held, some of them parity) in place (R-PAR-3).
    fn decode_slot(t: &mut Transfer, s: usize, k: u32) -> Result<(), fec::FecError> {
        let cs = t.manifest.chunk_size as usize;
        let cpb = t.manifest.chunks_per_block() as usize;
        let base = s * t.manifest.padded_block_len();
        let k = k as usize;
        let block_len = t.manifest.block_len(t.slots[s].block);
        // The short last chunk is coded padded with zeros.
        if t.parity_at[s * cpb + k - 1] == NO_PARITY {
            t.data[base + block_len..base + k * cs].fill(0);
        }
        let map = &t.parity_at[s * cpb..s * cpb + k];
        let decoder = t.decoder.as_mut().ok_or(fec::FecError::Unsupported)?;
        decoder.decode(&mut t.data[base..base + k * cs], cs, map)
    }

    /// A slot for a block not in the window: a free one, or (for carousel data
    /// only) the least recently active partly filled one (R-WIN-1).
    fn claim_slot(t: &mut Transfer, is_repair: bool, stats: &mut ReceiverStats) -> Option<usize> {
        if let Some(s) = t.slots.iter().position(|sl| sl.state == SlotState::Free) {
            return Some(s);
        }
        if is_repair {
            return None;
        }
        let victim = t
            .slots
            .iter()
            .enumerate()
            .filter(|(_, sl)| sl.state == SlotState::Filling)
            .min_by_key(|(_, sl)| sl.last_activity)
            .map(|(i, _)| i)?;
        t.reset_slot(victim);
        stats.evictions += 1;
        Some(victim)
    }

    /// After any data: a block with new holes gets its own NACK back-off
    /// (R-NACK-2); a retry further out is pulled in, so new holes never wait
    /// for an old retry. Each block has its own: a block that rode along in
    /// another block's NACK would be asked for before its repair could be
    /// overheard (R-NACK-4).
    fn after_data(&mut self, now: Instant) {
        self.endgame(now);
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        let cfg = &self.config;
        for s in 0..t.slots.len() {
            let sl = &t.slots[s];
            if sl.state != SlotState::Filling || sl.nacks >= cfg.max_nacks_per_block {
                continue;
            }
            let horizon = t.horizon(s);
            if horizon <= sl.scanned
                || (t.whole_blocks && horizon < t.manifest.chunks_in_block(sl.block))
            {
                continue;
            }
            let fresh = t.has_hole_below(s, sl.scanned, horizon);
            let sl = &mut t.slots[s];
            sl.scanned = horizon;
            if !fresh || (sl.nack_due.is_some() && !sl.due_is_retry) {
                continue;
            }
            let at = now + backoff(cfg, &mut self.rng);
            let due = sl.nack_due.map_or(at, |d| d.min(at));
            sl.nack_due = Some(due);
            sl.due_is_retry = false;
            self.nack_at = earliest(self.nack_at, Some(due));
        }
    }

    /// R-NACK-6, the end game: when every block still missing fits the
    /// window, a free slot is given to each missing block that is not in the
    /// window, that the carousel has already sent while this device listened
    /// (so it was lost or evicted here) and that the carousel will not reach
    /// again within `window_blocks` blocks; the slot is marked as expected
    /// whole, and a NACK is armed. The repair
    /// server then brings it in milliseconds instead of the device waiting
    /// up to a whole carousel pass for it. Before the end game those blocks
    /// are left to the carousel, which costs the network nothing extra.
    fn endgame(&mut self, now: Instant) {
        if !self.config.endgame_fetch {
            return;
        }
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        let total = t.manifest.block_count();
        let missing = total - t.done_count;
        let window = t.slots.len() as u32;
        if missing == 0 || missing > window {
            return;
        }
        // Quick exit: a free slot and a missing block outside the window.
        let in_window = t
            .slots
            .iter()
            .filter(|sl| sl.state != SlotState::Free && !t.is_done(sl.block))
            .count() as u32;
        if in_window >= missing || in_window >= window {
            return;
        }
        let Some(pos) = t.stream_pos else {
            return;
        };
        let current = pos / t.manifest.chunks_per_block().max(1);
        for block in 0..total {
            if t.is_done(block) || t.find_slot(block).is_some() {
                continue;
            }
            // Blocks the carousel has not sent since this device listens,
            // or is in, or is about to bring again, are left to it.
            let ahead = (block + total - current % total) % total;
            if !t.went_by(block, current) || ahead < window {
                continue;
            }
            let Some(s) = t.slots.iter().position(|sl| sl.state == SlotState::Free) else {
                break;
            };
            t.reset_slot(s);
            // Its own NACK back-off (R-NACK-2).
            let due = now + backoff(&self.config, &mut self.rng);
            t.slots[s] = Slot {
                state: SlotState::Filling,
                block,
                expect_all: true,
                last_activity: now,
                nack_due: Some(due),
                ..Slot::FREE
            };
            self.stats.endgame_fetches += 1;
            self.nack_at = earliest(self.nack_at, Some(due));
        }
    }
}

/// A random NACK back-off (R-NACK-2): in `[nack_delay_min, top]`, where
/// `top` is `nack_delay_max` or `nack_backoff_rtts` round trips if that is
/// longer; the largest of `nack_backoff_shape` uniform draws, so that in a
/// large fleet the earliest NACKs are few.
fn backoff(cfg: &ReceiverConfig, rng: &mut Rng) -> Duration {
    let top = cfg
        .nack_delay_max
        .max(cfg.round_trip.saturating_mul(cfg.nack_backoff_rtts));
    let mut d = cfg.nack_delay_min;
    for _ in 0..cfg.nack_backoff_shape.clamp(1, 64) {
        d = d.max(rng.duration_between(cfg.nack_delay_min, top));
    }
    d
}

impl Receiver {
    /// The shell finished writing block `index`; `ok` is whether the write
    /// (with read-back) succeeded.
    pub fn handle_flash_done(&mut self, now: Instant, index: u32, ok: bool) {
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        let Some(s) = t
            .slots
            .iter()
            .position(|sl| sl.state == SlotState::Flashing && sl.block == index)
        else {
            return;
        };
        t.reset_slot(s);
        if !ok {
            self.phase = Phase::Failed(Reason::FlashError);
            self.queue(Queued::Failed(Reason::FlashError));
            self.final_status_left = FINAL_STATUS_REPEATS;
            self.status_at = Some(now);
            return;
        }
        t.mark_done(index);
        self.stats.blocks_flashed += 1;
        self.after_block_done(now);
    }

    /// A block became done (flashed, or found on flash by the scan): release
    /// a held header when it is the last one missing, start the end game, or
    /// go on to the read-back when nothing is missing.
    fn after_block_done(&mut self, now: Instant) {
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        self.last_progress_at = now;
        let total = t.manifest.block_count();
        if t.done_count + 1 == total {
            // R-HDR-1: the header goes last, once everything else is on flash.
            if let Some(h) = t.slots.iter_mut().find(|sl| sl.state == SlotState::Held) {
                h.state = SlotState::Ready;
            }
        }
        if t.done_count < total {
            self.endgame(now);
            return;
        }
        if t.done_count == total {
            self.nack_at = None;
            let t = match core::mem::replace(&mut self.phase, Phase::Listening) {
                Phase::Receiving(t) => t,
                other => {
                    self.phase = other;
                    return;
                }
            };
            self.phase = Phase::Verifying(t);
            self.prove_by_manifest();
            self.queue(Queued::VerifyImage);
            self.status_at = Some(now);
        }
    }

    /// R-STAT-6: every block is on flash and none came from the carousel
    /// here (the resume scan found them, or repairs completed them): the
    /// manifest's source proves the sender, so `--until-done` counts it.
    fn prove_by_manifest(&mut self) {
        if self.proven_sender.is_none() {
            self.proven_sender = self.manifest_from;
        }
    }

    /// The shell read the image back: `bad_blocks` lists blocks that do not
    /// match (empty when the image is good). Bad blocks are received again,
    /// a bounded number of times, before the update fails (R-VER-2).
    pub fn handle_verify_done(&mut self, now: Instant, bad_blocks: &[u32]) {
        let phase = core::mem::replace(&mut self.phase, Phase::Listening);
        let Phase::Verifying(mut t) = phase else {
            self.phase = phase;
            return;
        };
        self.status_at = Some(now);
        self.final_status_left = FINAL_STATUS_REPEATS;
        if bad_blocks.is_empty() {
            self.phase = Phase::Done(t);
            self.queue(Queued::Done);
            return;
        }
        t.verify_attempts += 1;
        if t.verify_attempts >= MAX_VERIFY_ATTEMPTS {
            self.phase = Phase::Failed(Reason::VerifyFailed);
            self.queue(Queued::Failed(Reason::VerifyFailed));
            return;
        }
        self.final_status_left = 0;
        for &b in bad_blocks {
            if t.is_done(b) {
                clear_bit(&mut t.done, b);
                t.done_count -= 1;
            }
        }
        self.phase = Phase::Receiving(t);
        self.endgame(now);
    }

    /// Time passed: fire due NACK and Status timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_fetch(now);
        if self.nack_at.is_some_and(|at| at <= now) {
            self.nack_at = None;
            self.build_nack(now);
        }
    }

    /// Send a NACK for every block whose NACK is due (R-NACK-1..5).
    fn build_nack(&mut self, now: Instant) {
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        self.nack.clear();
        let mut order: heapless::Vec<usize, 64> = heapless::Vec::new();
        for (i, sl) in t.slots.iter().enumerate() {
            if sl.state == SlotState::Filling
                && sl.nack_due.is_some_and(|d| d <= now)
                && order.push(i).is_err()
            {
                break;
            }
        }
        order.sort_unstable_by_key(|&i| t.slots[i].block);
        for &s in order.iter() {
            let cfg = &self.config;
            let horizon = t.horizon(s);
            let sl = &t.slots[s];
            let whole_pending = t.whole_blocks && horizon < t.manifest.chunks_in_block(sl.block);
            // Missing below the horizon, less the parity symbols already held
            // (each stands in for one missing chunk): R-NACK-4, R-PAR-6.
            let holes = t.holes_below(s, horizon);
            let mut needed = holes.saturating_sub(sl.parity_held);
            if sl.nacks >= cfg.max_nacks_per_block || whole_pending || needed == 0 {
                // R-NACK-3: out of NACKs, the next pass brings it; R-NACK-5:
                // not yet passed whole; or nothing is missing any more.
                t.slots[s].nack_due = None;
                continue;
            }
            if now < sl.quiet_until {
                // R-NACK-4: repairs for this block are arriving; ask, if still
                // needed, once they stop, after a fresh back-off.
                self.stats.nacks_suppressed += 1;
                let at = sl.quiet_until + backoff(cfg, &mut self.rng);
                let sl = &mut t.slots[s];
                sl.nack_due = Some(at);
                sl.due_is_retry = false;
                continue;
            }
            // R-NACK-1: ask for the chunks below the horizon not yet held, as
            // many as are still needed (R-PAR-3).
            let base = t.global(sl.block, 0);
            let bits = t.slot_bits(s);
            let ranges_before = self.nack.len();
            let mut c = 0;
            let mut full = false;
            while c < horizon && needed > 0 {
                if get_bit(bits, c) {
                    c += 1;
                    continue;
                }
                let start = c;
                while c < horizon && !get_bit(bits, c) && c - start < needed {
                    c += 1;
                }
                needed -= c - start;
                if self
                    .nack
                    .push(ChunkRange {
                        start: base + start,
                        len: c - start,
                    })
                    .is_err()
                {
                    full = true;
                    break;
                }
                self.stats.chunks_nacked += u64::from(c - start);
            }
            if full && self.nack.len() == ranges_before {
                // The NACK is full before this block: it stays due and goes
                // in the next NACK, right after this one.
                break;
            }
            // R-NACK-3: the retry waits nack_retry plus a back-off, so the
            // retries of a fleet spread out like its first NACKs.
            let next = now + cfg.nack_retry + backoff(cfg, &mut self.rng);
            let sl = &mut t.slots[s];
            sl.nacks += 1;
            sl.scanned = sl.scanned.max(horizon);
            sl.nack_due = Some(next);
            sl.due_is_retry = true;
            if full {
                // What did not fit is asked for with the retry.
                break;
            }
        }
        self.nack_at = t
            .slots
            .iter()
            .filter(|sl| sl.state == SlotState::Filling)
            .filter_map(|sl| sl.nack_due)
            .min();
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
                });
            }
        }
        if let Some(addr) = self.status_to_sender.take() {
            let len = self.encode_status(buf)?;
            return Some(Transmit {
                dest: Dest::Peer(addr),
                len,
            });
        }
        if self.status_at.is_some_and(|at| at <= now) {
            let len = self.encode_status(buf)?;
            // R-STAT-1: each report goes to the repair server, then to the
            // sender once its address is proven (R-STAT-6), never to the
            // unverified source of an Announce.
            self.status_to_sender = self.proven_sender;
            self.schedule_next_status(now);
            return Some(Transmit {
                dest: Dest::RepairServer,
                len,
            });
        }
        None
    }

    fn encode_status(&self, buf: &mut [u8]) -> Option<usize> {
        let (session, image_id) = self.status_stamp;
        let refused_now = matches!(self.phase, Phase::Listening) && self.final_status_left > 0;
        let (state, reason) = match (&self.phase, &self.refusal) {
            (Phase::Failed(r), _) => (DeviceState::Failed, *r),
            (_, Some(r)) if refused_now => (DeviceState::Refused, r.reason),
            _ => (self.state(), Reason::None),
        };
        let blocks_total = self.manifest().map_or(0, Manifest::block_count);
        let status = Status {
            device_id: self.config.device_id,
            state,
            blocks_done: self.blocks_done().min(blocks_total),
            blocks_total,
            current_version: truncate(&self.config.current_version, MAX_VERSION_LEN),
            reason,
            write_kbps: self.write_kbps,
            window_free: self.window_free(),
        };
        let stamp_image = match (&self.refusal, refused_now) {
            (Some(r), true) => r.image_id,
            _ => image_id,
        };
        wire::encode(session, stamp_image, 0, &Frame::Status(status), buf).ok()
    }

    fn schedule_next_status(&mut self, now: Instant) {
        if self.final_status_left > 0 {
            self.final_status_left -= 1;
            self.status_at = Some(now + FINAL_STATUS_GAP);
            if self.final_status_left == 0
                && matches!(self.phase, Phase::Done(_) | Phase::Failed(_))
            {
                self.status_at = None;
            }
        } else if matches!(self.phase, Phase::Done(_) | Phase::Failed(_)) {
            self.status_at = None;
        } else {
            self.status_at = Some(now + self.config.status_interval);
        }
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
            earliest(self.nack_at, self.status_at),
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
mod pace;
mod window_budget;
use window_budget::window_slots;
#[cfg(test)]
mod tests;

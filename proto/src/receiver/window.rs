//! The block window: the slots that hold blocks being received, the chunk
//! and parity bitmaps, the stream position, and storing one Data frame
//! (source chunk or parity symbol) until its block matches the manifest.

use alloc::vec;
use alloc::vec::Vec;

use super::chunk_auth;
use super::span::WindowSpan;
use crate::fec::{self, BlockDecoder};
use crate::manifest::Manifest;
use crate::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
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
pub(super) struct Slot {
    pub(super) state: SlotState,
    pub(super) block: u32,
    pub(super) received: u32,
    /// Every chunk of this block should have arrived (the stream passed it, or it was asked for whole).
    pub(super) expect_all: bool,
    /// Holes below this index have been seen (new holes start a back-off).
    pub(super) scanned: u32,
    pub(super) nacks: u32,
    pub(super) last_activity: Instant,
    /// Parity symbols held, in positions of missing source chunks (R-PAR-3).
    pub(super) parity_held: u32,
    /// No NACK for this block before then: a repair for it was heard (R-NACK-4).
    pub(super) quiet_until: Instant,
    /// When this block's NACK is due: its own back-off after new holes
    /// (R-NACK-2), a retry (R-NACK-3) or the end of a quiet period (R-NACK-4).
    pub(super) nack_due: Option<Instant>,
    /// `nack_due` is a retry of holes already asked for: new holes pull it in.
    pub(super) due_is_retry: bool,
}

impl Slot {
    pub(super) const FREE: Slot = Slot {
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

/// The window and bookkeeping of an accepted image; allocated once.
pub(super) struct Transfer {
    pub(super) manifest: Manifest,
    pub(super) session: u32,
    /// `window_blocks * padded_block_len` bytes (R-WIRE-6).
    pub(super) data: Vec<u8>,
    /// `window_blocks * words_per_slot` bitmap words.
    pub(super) bits: Vec<u64>,
    pub(super) words_per_slot: usize,
    /// `window_blocks * chunks_per_block`: which parity symbol a position
    /// holds in place of its missing source chunk ([`NO_PARITY`] if none).
    pub(super) parity_at: Vec<u16>,
    /// `window_blocks * words_per_slot`: parity indices already held.
    pub(super) parity_bits: Vec<u64>,
    /// Present when the geometry allows parity repair (R-PAR-2).
    pub(super) decoder: Option<BlockDecoder>,
    pub(super) slots: Vec<Slot>,
    pub(super) done: Vec<u64>,
    pub(super) done_count: u32,
    /// Global chunk index of the last carousel datagram, and its pass.
    pub(super) stream_pos: Option<u32>,
    /// How long the stream takes to bring a window's worth of chunks
    /// (R-NACK-2's cap on the back-off).
    pub(super) span: WindowSpan,
    /// Block of the first carousel datagram stored or skipped in this
    /// transfer, and wraps of the stream since: which blocks have gone by
    /// while this device listened (R-NACK-6).
    pub(super) first_block: Option<u32>,
    pub(super) wraps: u32,
    /// In the pass the device joined: the last carousel position sent
    /// before it could store data (it was fetching the manifest or scanning
    /// its flash). Blocks that began streaming by then are not NACKed until
    /// the pass wraps (R-NACK-1).
    pub(super) late_until: Option<u32>,
    /// NACK whole blocks (R-NACK-5): configured, or a parity symbol was heard.
    pub(super) whole_blocks: bool,
    pub(super) verify_attempts: u32,
    /// Chunk-hash lists of the window's blocks (R-AUTH-2); format 2 only.
    pub(super) lists: Option<chunk_auth::ChunkLists>,
}

pub(super) const NO_PARITY: u16 = fec::SOURCE;

pub(super) fn set_bit(words: &mut [u64], i: u32) -> bool {
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

pub(super) fn get_bit(words: &[u64], i: u32) -> bool {
    words
        .get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

pub(super) fn clear_bit(words: &mut [u64], i: u32) {
    if let Some(w) = words.get_mut((i / 64) as usize) {
        *w &= !(1 << (i % 64));
    }
}

impl Transfer {
    pub(super) fn new(manifest: Manifest, session: u32, window_blocks: u32) -> Transfer {
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
            span: WindowSpan::default(),
            late_until: None,
            whole_blocks: false,
            verify_attempts: 0,
            manifest,
            session,
        }
    }

    /// The update is done and nothing more is received into the window:
    /// give back its block buffers and their bookkeeping, so that what the
    /// shell does next (an A/B activation saves a U-Boot environment of up
    /// to an eraseblock, twice over with its read-back) does not come on top
    /// of them. The manifest and the done bitmap stay.
    pub(super) fn release_window(&mut self) {
        self.data = Vec::new();
        self.bits = Vec::new();
        self.parity_at = Vec::new();
        self.parity_bits = Vec::new();
        self.decoder = None;
        self.slots = Vec::new();
        self.lists = None;
    }

    /// Bytes of the window's block buffers.
    pub(super) fn window_bytes(&self) -> usize {
        self.data.len()
    }

    pub(super) fn slot_bits(&self, s: usize) -> &[u64] {
        &self.bits[s * self.words_per_slot..(s + 1) * self.words_per_slot]
    }

    pub(super) fn slot_bits_mut(&mut self, s: usize) -> &mut [u64] {
        &mut self.bits[s * self.words_per_slot..(s + 1) * self.words_per_slot]
    }

    pub(super) fn slot_data(&self, s: usize) -> &[u8] {
        let bs = self.manifest.padded_block_len();
        let len = self.manifest.block_len(self.slots[s].block);
        &self.data[s * bs..s * bs + len]
    }

    pub(super) fn is_done(&self, block: u32) -> bool {
        get_bit(&self.done, block)
    }

    pub(super) fn mark_done(&mut self, block: u32) {
        if set_bit(&mut self.done, block) {
            self.done_count += 1;
        }
    }

    pub(super) fn reset_slot(&mut self, s: usize) {
        self.slots[s] = Slot::FREE;
        self.slot_bits_mut(s).fill(0);
        self.clear_parity(s);
        if let Some(l) = &mut self.lists {
            l.clear(s);
        }
    }

    pub(super) fn clear_parity(&mut self, s: usize) {
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
    pub(super) fn free_position(&self, s: usize, except: u32) -> Option<u32> {
        let cpb = self.manifest.chunks_per_block() as usize;
        let n = self.manifest.chunks_in_block(self.slots[s].block);
        let bits = self.slot_bits(s);
        (0..n).find(|&c| {
            c != except && !get_bit(bits, c) && self.parity_at[s * cpb + c as usize] == NO_PARITY
        })
    }

    pub(super) fn find_slot(&self, block: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|sl| sl.state != SlotState::Free && sl.block == block)
    }

    pub(super) fn global(&self, block: u32, chunk: u32) -> u32 {
        block
            .saturating_mul(self.manifest.chunks_per_block())
            .saturating_add(chunk)
    }

    /// Chunks of slot `s` that should have arrived by now (R-NACK-1).
    pub(super) fn horizon(&self, s: usize) -> u32 {
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
    pub(super) fn went_by(&self, block: u32, current: u32) -> bool {
        let Some(first) = self.first_block else {
            return false;
        };
        match self.wraps {
            0 => block >= first && block < current,
            1 => block >= first || block < current,
            _ => true,
        }
    }

    pub(super) fn has_hole_below(&self, s: usize, from: u32, to: u32) -> bool {
        let bits = self.slot_bits(s);
        (from..to).any(|c| !get_bit(bits, c))
    }

    /// Chunks of slot `s` below `to` not held.
    pub(super) fn holes_below(&self, s: usize, to: u32) -> u32 {
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

//! Per-chunk authentication in the receive window (R-AUTH-2..4). Owns the
//! chunk-hash list of each block being assembled: placed from ChunkList
//! pieces, kept once it hashes to the block's digest in the signed manifest
//! (format 2), then every source chunk of the block is checked on arrival
//! and a forged one dropped before it takes the chunk's place. Chunks stored
//! before the list arrived are checked when it does. One list per window
//! slot, allocated with the window; nothing per datagram.

use alloc::vec;
use alloc::vec::Vec;

use super::window::{clear_bit, get_bit, set_bit, SlotState, Transfer};
use super::{Phase, Receiver, ReceiverStats};
use crate::chunk_list::{hashes_per_piece, piece_span, pieces};
use crate::manifest::{chunk_hash, chunk_list_digest, Manifest, CHUNK_HASH_LEN};
use crate::time::Instant;
use crate::transmit::DropReason;
use crate::wire::{ChunkList, Header, FLAG_REPAIR};

/// The window's chunk-hash lists, one per slot.
pub(super) struct ChunkLists {
    /// Bytes of one slot's list: a full block's chunks × [`CHUNK_HASH_LEN`].
    stride: usize,
    lists: Vec<u8>,
    /// Pieces held, `words` bitmap words per slot.
    pieces: Vec<u64>,
    words: usize,
    /// The block whose list a slot holds (pieces or verified), if any.
    owner: Vec<Option<u32>>,
    verified: Vec<bool>,
}

impl ChunkLists {
    /// The lists for `window` slots, or `None` for a format 1 manifest
    /// (no chunk hashes are signed: blocks are checked whole, R-BLK-1).
    pub(super) fn new(m: &Manifest, window: usize) -> Option<ChunkLists> {
        if !m.chunk_auth() {
            return None;
        }
        let cpb = m.chunks_per_block();
        let stride = cpb as usize * CHUNK_HASH_LEN;
        let words = (pieces(cpb, m.chunk_size) as usize).div_ceil(64);
        Some(ChunkLists {
            stride,
            lists: vec![0; window * stride],
            pieces: vec![0; window * words],
            words,
            owner: vec![None; window],
            verified: vec![false; window],
        })
    }

    /// Forget slot `s`'s list.
    pub(super) fn clear(&mut self, s: usize) {
        self.pieces[s * self.words..(s + 1) * self.words].fill(0);
        self.owner[s] = None;
        self.verified[s] = false;
    }

    /// `Some(false)` when slot `s` holds the verified list of `block` and
    /// `payload` is not chunk `chunk` of it; `None` without a verified list.
    fn check(&self, s: usize, block: u32, chunk: u32, payload: &[u8]) -> Option<bool> {
        if !self.verified[s] || self.owner[s] != Some(block) {
            return None;
        }
        let at = s * self.stride + chunk as usize * CHUNK_HASH_LEN;
        let want = self.lists.get(at..at + CHUNK_HASH_LEN)?;
        Some(want == chunk_hash(payload).as_slice())
    }
}

impl Transfer {
    /// R-AUTH-3: `true` when slot `s` holds a verified list that `payload`
    /// (source chunk `chunk`) does not match.
    pub(super) fn chunk_forged(&self, s: usize, chunk: u32, payload: &[u8]) -> bool {
        let block = self.slots[s].block;
        self.lists
            .as_ref()
            .and_then(|l| l.check(s, block, chunk, payload))
            == Some(false)
    }

    /// R-AUTH-3: `true` when every chunk slot `s` holds was checked against
    /// its block's verified list and no parity symbol stands in for one: the
    /// block then hashes to its signed digest by construction (the digest is
    /// the hash of that list), so it is not hashed a second time.
    pub(super) fn all_chunks_checked(&self, s: usize) -> bool {
        self.slots[s].parity_held == 0 && self.list_verified(s)
    }

    /// `true` when slot `s`'s block has its verified chunk-hash list.
    pub(super) fn list_verified(&self, s: usize) -> bool {
        let block = self.slots[s].block;
        self.lists
            .as_ref()
            .is_some_and(|l| l.verified[s] && l.owner[s] == Some(block))
    }

    /// R-AUTH-3: drop the chunks slot `s` holds that its verified list does
    /// not name; they become holes again (asked for as new ones).
    pub(super) fn purge_forged(&mut self, s: usize, stats: &mut ReceiverStats) {
        let Some(lists) = &self.lists else {
            return;
        };
        let cs = self.manifest.chunk_size as usize;
        let base = s * self.manifest.padded_block_len();
        let block = self.slots[s].block;
        let block_len = self.manifest.block_len(block);
        let w = self.words_per_slot;
        let bits = &mut self.bits[s * w..(s + 1) * w];
        for c in 0..self.manifest.chunks_in_block(block) {
            if !get_bit(bits, c) {
                continue;
            }
            let off = c as usize * cs;
            let data = &self.data[base + off..base + off + cs.min(block_len - off)];
            if lists.check(s, block, c, data) == Some(false) {
                clear_bit(bits, c);
                let sl = &mut self.slots[s];
                sl.received = sl.received.saturating_sub(1);
                sl.scanned = sl.scanned.min(c);
                stats.chunks_forged += 1;
            }
        }
    }
}

impl Receiver {
    /// A ChunkList piece (R-AUTH-2): placed in its block's slot (claimed as
    /// carousel data would claim it, R-WIN-1); once the list is whole it is
    /// kept if it hashes to the signed digest, else forgotten.
    pub(super) fn on_chunk_list(
        &mut self,
        now: Instant,
        header: &Header,
        l: &ChunkList<'_>,
    ) -> Result<(), DropReason> {
        let Phase::Receiving(t) = &mut self.phase else {
            return Err(DropReason::Unexpected);
        };
        if header.image_id != t.manifest.image_id {
            self.note_foreign(header);
            return Err(DropReason::OtherImage);
        }
        if t.lists.is_none() {
            return Err(DropReason::Unexpected);
        }
        let m = &t.manifest;
        if l.block >= m.block_count() {
            return Err(DropReason::OutOfManifest);
        }
        let chunks = m.chunks_in_block(l.block);
        let per = hashes_per_piece(m.chunk_size);
        let piece = l.first / per;
        let span = piece_span(chunks, m.chunk_size, piece);
        let Some((first, count)) = span.filter(|(f, _)| *f == l.first) else {
            return Err(DropReason::OutOfManifest);
        };
        if l.hashes.0.len() != count as usize * CHUNK_HASH_LEN {
            return Err(DropReason::OutOfManifest);
        }
        let want = m.digest(l.block).copied();
        if t.is_done(l.block) {
            return Ok(());
        }
        let is_repair = header.flags & FLAG_REPAIR != 0;
        // A list carried whole by this piece that needs a new slot is checked
        // before it claims one: one that matches its signed digest may evict
        // (R-AUTH-5). A block that has its slot is not hashed here.
        let authenticated = t.find_slot(l.block).is_none()
            && pieces(chunks, m.chunk_size) == 1
            && want.is_some_and(|w| chunk_list_digest(l.hashes.0) == w);
        let Some(s) = t.slot_for(now, l.block, is_repair, authenticated, &mut self.stats) else {
            self.stats.chunks_no_slot += 1;
            return Ok(());
        };
        if t.slots[s].state != SlotState::Filling || t.list_verified(s) {
            return Ok(());
        }
        let Some(lists) = t.lists.as_mut() else {
            return Err(DropReason::Unexpected);
        };
        if lists.owner[s] != Some(l.block) {
            lists.clear(s);
            lists.owner[s] = Some(l.block);
        }
        let at = s * lists.stride + first as usize * CHUNK_HASH_LEN;
        lists.lists[at..at + l.hashes.0.len()].copy_from_slice(l.hashes.0);
        let words = &mut lists.pieces[s * lists.words..(s + 1) * lists.words];
        set_bit(words, piece);
        let all = (0..pieces(chunks, t.manifest.chunk_size)).all(|p| get_bit(words, p));
        if !all {
            return Ok(());
        }
        let list =
            &lists.lists[s * lists.stride..s * lists.stride + chunks as usize * CHUNK_HASH_LEN];
        if Some(chunk_list_digest(list)) != want {
            // A forged piece got in: forget the list (the next pass brings
            // it again) and a slot it alone claimed.
            lists.clear(s);
            self.stats.chunk_lists_forged += 1;
            let sl = &t.slots[s];
            if sl.received == 0 && sl.parity_held == 0 {
                t.reset_slot(s);
            }
            return Err(DropReason::Forged);
        }
        lists.verified[s] = true;
        self.stats.chunk_lists_verified += 1;
        t.purge_forged(s, &mut self.stats);
        self.after_data(now);
        Ok(())
    }
}

//! One Data frame into the window: check it against the manifest's
//! geometry, follow the carousel's position, store the source chunk or
//! parity symbol in its block's slot, and check the block once it holds
//! enough symbols (R-BLK-1, R-PAR-3, R-AUTH-3).

use super::nack::parity_heard;
use super::window::{clear_bit, set_bit, Slot, SlotState, Transfer, NO_PARITY};
use super::{Phase, Receiver, ReceiverStats};
use crate::fec;
use crate::time::{earliest, Instant};
use crate::transmit::DropReason;
use crate::wire::{self, Data, Header, FLAG_PARITY, FLAG_REPAIR};

impl Receiver {
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

    pub(super) fn on_data(
        &mut self,
        now: Instant,
        header: &Header,
        d: &Data<'_>,
    ) -> Result<(), DropReason> {
        self.note_deaf(header, d);
        let Phase::Receiving(t) = &mut self.phase else {
            return self.data_while_not_receiving(header);
        };
        // R-SES-1: only chunks of the accepted image are stored, whatever
        // their session: the image id and the signed digests bind the content.
        if header.image_id != t.manifest.image_id {
            self.note_foreign(header);
            return Err(DropReason::OtherImage);
        }
        let is_repair = header.flags & FLAG_REPAIR != 0;
        let is_parity = header.flags & FLAG_PARITY != 0;
        let offset = t.place(is_parity, d)?;
        if is_parity {
            // R-NACK-5: the repair server answers with parity; from now on a
            // block is NACKed whole, with its whole loss count.
            t.whole_blocks = true;
        } else if !is_repair && t.track_stream(now, d.block, d.chunk) {
            self.stats.passes_seen += 1;
        }
        if let Some(s) = self.store(now, is_repair, is_parity, offset, d)? {
            self.check_block(now, header, !is_repair && !is_parity, s);
        }
        self.after_data(now);
        Ok(())
    }

    fn data_while_not_receiving(&mut self, header: &Header) -> Result<(), DropReason> {
        match &self.phase {
            Phase::Resuming(t) | Phase::Verifying(t) | Phase::Done(t)
                if t.manifest.image_id != header.image_id =>
            {
                self.note_foreign(header);
                Err(DropReason::OtherImage)
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// Store the chunk or symbol at `offset` of its block; the slot, when it
    /// now holds as many symbols as the block has chunks. Only a forged
    /// chunk is an error; duplicates and data with no free slot are counted.
    fn store(
        &mut self,
        now: Instant,
        is_repair: bool,
        is_parity: bool,
        offset: usize,
        d: &Data<'_>,
    ) -> Result<Option<usize>, DropReason> {
        let Phase::Receiving(t) = &mut self.phase else {
            return Ok(None);
        };
        if t.is_done(d.block) {
            self.stats.chunks_duplicate += 1;
            return Ok(None);
        }
        let Some(s) = t.slot_for(now, d.block, is_repair, false, &mut self.stats) else {
            self.stats.chunks_no_slot += 1;
            return Ok(None);
        };
        if is_parity && t.slots[s].state == SlotState::Filling {
            let cap = t.span.backoff_cap();
            let due = parity_heard(&self.config, cap, &mut self.rng, &mut t.slots[s], now);
            self.nack_at = earliest(self.nack_at, due);
        }
        if t.slots[s].state != SlotState::Filling {
            self.stats.chunks_duplicate += 1;
            return Ok(None);
        }
        let stored = if is_parity {
            t.store_parity(s, d.chunk, d.payload.0)
        } else {
            // R-AUTH-3: a chunk its block's verified list does not name is
            // dropped before it can take the chunk's place.
            if t.chunk_forged(s, d.chunk, d.payload.0) {
                self.stats.chunks_forged += 1;
                return Err(DropReason::Forged);
            }
            t.store_source(s, d.chunk, offset, d.payload.0)
        };
        if !stored {
            self.stats.chunks_duplicate += 1;
            return Ok(None);
        }
        if is_parity {
            self.stats.parity_stored += 1;
        } else {
            self.stats.chunks_stored += 1;
            if is_repair {
                self.stats.repairs_stored += 1;
            }
        }
        let slot = &mut t.slots[s];
        slot.last_activity = now;
        let k = t.manifest.chunks_in_block(slot.block);
        Ok((slot.received + slot.parity_held >= k).then_some(s))
    }

    /// Slot `s` holds enough symbols: flash it if it matches the manifest,
    /// else drop what cannot be trusted and receive it again.
    fn check_block(&mut self, now: Instant, header: &Header, carousel: bool, s: usize) {
        let Phase::Receiving(t) = &mut self.phase else {
            return;
        };
        if !t.verify_slot(s, &mut self.stats) {
            return;
        }
        // R-RUN-1: only a verified block is progress. R-SES-3: the session
        // of carousel data that completed one is the one NACKs and Status
        // carry from now on.
        self.last_progress_at = now;
        if carousel {
            t.session = header.session;
            self.status_stamp = (header.session, header.image_id);
        }
        // R-STAT-6: the source of the carousel data stored when a block
        // matched the signed manifest is the real sender.
        if let Some(addr) = self.carousel_from {
            self.proven_sender = Some(addr);
        }
        let block = t.slots[s].block;
        let hold = self.config.hold_first_block
            && block == 0
            && t.done_count + 1 < t.manifest.block_count();
        t.slots[s].state = if hold {
            SlotState::Held
        } else {
            SlotState::Ready
        };
    }
}

impl Transfer {
    /// Checks a Data frame against the manifest's geometry: the byte offset
    /// of its payload in the block.
    fn place(&self, is_parity: bool, d: &Data<'_>) -> Result<usize, DropReason> {
        let m = &self.manifest;
        if d.block >= m.block_count() {
            return Err(DropReason::OutOfManifest);
        }
        let k = m.chunks_in_block(d.block);
        let cs = m.chunk_size as usize;
        let (offset, expected) = if is_parity {
            // R-PAR-1: parity symbol `chunk` of the block; full chunk_size always.
            if self.decoder.is_none() || d.chunk >= fec::parity_count(k) {
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
        Ok(offset)
    }

    /// Carousel data at `block`/`chunk` moves the stream position; `true`
    /// when it began a new pass (R-NACK-1). A new pass falls back by more
    /// than [`Transfer::reorder_slack`]; a frame that falls back less came
    /// out of order (the network reordered it) and leaves the position
    /// where it is: counted as a wrap it would tell R-NACK-1 and R-NACK-6
    /// that every block went by.
    fn track_stream(&mut self, now: Instant, block: u32, chunk: u32) -> bool {
        let pos = self.global(block, chunk);
        if self.first_block.is_none() {
            self.first_block = Some(block);
        }
        let back = self.stream_pos.map_or(0, |p| p.saturating_sub(pos));
        let wrapped = back > self.reorder_slack();
        if back > 0 && !wrapped {
            return false;
        }
        if wrapped {
            self.wraps = self.wraps.saturating_add(1);
            // A new pass: every block in the window has now been passed
            // once whole, except those that began streaming before the
            // device joined: the stream brings them again (R-NACK-1).
            let late = self.late_until.take();
            let cpb = self.manifest.chunks_per_block();
            for sl in self
                .slots
                .iter_mut()
                .filter(|s| s.state == SlotState::Filling)
            {
                sl.expect_all = late.is_none_or(|l| sl.block.saturating_mul(cpb) > l);
            }
        }
        self.stream_pos = Some(pos);
        let window_chunks =
            (self.slots.len() as u32).saturating_mul(self.manifest.chunks_per_block());
        self.span.observe(now, pos, window_chunks, wrapped);
        for sl in self
            .slots
            .iter_mut()
            .filter(|s| s.state == SlotState::Filling)
        {
            if sl.block < block {
                sl.expect_all = true;
            }
        }
        wrapped
    }

    /// How far back, in chunks, a carousel frame may land behind the
    /// stream position and still be taken for one the network reordered
    /// rather than the start of a new pass: one block, or half a pass for
    /// an image of one or two blocks. A device that hears nothing for
    /// almost exactly a whole pass around a wrap does not see that wrap.
    fn reorder_slack(&self) -> u32 {
        let cpb = self.manifest.chunks_per_block();
        cpb.min(self.manifest.block_count().saturating_mul(cpb) / 2)
    }

    /// The slot of `block`, or a new one for it: a free one, or (for
    /// carousel data only) the least recently active partly filled one
    /// (R-WIN-1). Only an `authenticated` claim (a chunk-hash list that
    /// matched its signed digest) may evict a slot whose list is verified,
    /// and it takes one without a verified list first (R-AUTH-5): forged
    /// carousel chunks cannot push the genuine stream out of the window.
    pub(super) fn slot_for(
        &mut self,
        now: Instant,
        block: u32,
        is_repair: bool,
        authenticated: bool,
        stats: &mut ReceiverStats,
    ) -> Option<usize> {
        if let Some(s) = self.find_slot(block) {
            return Some(s);
        }
        let s = match self.slots.iter().position(|sl| sl.state == SlotState::Free) {
            Some(s) => s,
            None if is_repair => return None,
            None => {
                let victim = (0..self.slots.len())
                    .filter(|&i| self.slots[i].state == SlotState::Filling)
                    .map(|i| (i, self.list_verified(i)))
                    .filter(|&(_, verified)| authenticated || !verified)
                    .min_by_key(|&(i, verified)| (verified, self.slots[i].last_activity))
                    .map(|(i, _)| i)?;
                self.reset_slot(victim);
                stats.evictions += 1;
                victim
            }
        };
        self.slots[s] = Slot {
            state: SlotState::Filling,
            block,
            last_activity: now,
            ..Slot::FREE
        };
        Some(s)
    }

    /// R-PAR-3: parity symbol `symbol` of slot `s`'s block lives in the
    /// place of a missing source chunk; held symbols never exceed k, so a
    /// place is always free. `false`: already held.
    fn store_parity(&mut self, s: usize, symbol: u32, payload: &[u8]) -> bool {
        let w = self.words_per_slot;
        if !set_bit(&mut self.parity_bits[s * w..(s + 1) * w], symbol) {
            return false;
        }
        let Some(c) = self.free_position(s, u32::MAX) else {
            return false;
        };
        let cs = self.manifest.chunk_size as usize;
        let cpb = self.manifest.chunks_per_block() as usize;
        let at = s * self.manifest.padded_block_len() + c as usize * cs;
        self.data[at..at + cs].copy_from_slice(payload);
        self.parity_at[s * cpb + c as usize] = symbol as u16;
        self.slots[s].parity_held += 1;
        true
    }

    /// Source chunk `chunk` of slot `s`'s block, at byte `offset` of the
    /// block. `false`: already held.
    fn store_source(&mut self, s: usize, chunk: u32, offset: usize, payload: &[u8]) -> bool {
        if !set_bit(self.slot_bits_mut(s), chunk) {
            return false;
        }
        let cs = self.manifest.chunk_size as usize;
        let cpb = self.manifest.chunks_per_block() as usize;
        let base = s * self.manifest.padded_block_len();
        if self.decoder.is_some() && self.parity_at[s * cpb + chunk as usize] != NO_PARITY {
            // R-PAR-3: the source chunk takes its place back; the parity
            // symbol there moves to a free place (one exists: fewer than
            // k symbols were held).
            let from = base + offset;
            let moved = self.parity_at[s * cpb + chunk as usize];
            self.parity_at[s * cpb + chunk as usize] = NO_PARITY;
            match self.free_position(s, chunk) {
                Some(f) => {
                    self.data
                        .copy_within(from..from + cs, base + f as usize * cs);
                    self.parity_at[s * cpb + f as usize] = moved;
                }
                None => {
                    let w = self.words_per_slot;
                    clear_bit(&mut self.parity_bits[s * w..(s + 1) * w], u32::from(moved));
                    self.slots[s].parity_held -= 1;
                }
            }
        }
        let start = base + offset;
        self.data[start..start + payload.len()].copy_from_slice(payload);
        self.slots[s].received += 1;
        true
    }

    /// Slot `s` holds k symbols: decode it if parity stands in for chunks,
    /// then check it (R-BLK-1: a block is flashed only when its SHA-256
    /// matches the manifest; R-AUTH-3: by construction when every chunk
    /// matched its verified list). On a mismatch what cannot be trusted is
    /// dropped and the block is received again; `true` when it matched.
    fn verify_slot(&mut self, s: usize, stats: &mut ReceiverStats) -> bool {
        let block = self.slots[s].block;
        let checked = self.all_chunks_checked(s);
        let mut ok = true;
        if self.slots[s].parity_held > 0 {
            ok = self.decode_slot(s).is_ok();
            if ok {
                stats.blocks_decoded += 1;
            }
        }
        let ok = ok
            && (checked
                || self
                    .manifest
                    .digest(block)
                    .is_some_and(|want| *want == self.manifest.digest_of(self.slot_data(s))));
        if ok {
            return true;
        }
        stats.digest_failures += 1;
        // R-BLK-2 / R-PAR-4: a forged or corrupt chunk or parity symbol
        // costs this block, nothing more. R-AUTH-4: with a verified list the
        // source chunks were checked one by one; only the parity symbols go.
        self.clear_parity(s);
        if self.list_verified(s) {
            self.purge_forged(s, stats);
        } else {
            self.slot_bits_mut(s).fill(0);
            self.slots[s].received = 0;
        }
        let slot = &mut self.slots[s];
        slot.expect_all = true;
        slot.scanned = 0;
        false
    }

    /// Rebuild slot `s` (k symbols held, some of them parity) in place (R-PAR-3).
    fn decode_slot(&mut self, s: usize) -> Result<(), fec::FecError> {
        let cs = self.manifest.chunk_size as usize;
        let cpb = self.manifest.chunks_per_block() as usize;
        let base = s * self.manifest.padded_block_len();
        let block_len = self.manifest.block_len(self.slots[s].block);
        let k = self.manifest.chunks_in_block(self.slots[s].block) as usize;
        // The short last chunk is coded padded with zeros.
        if self.parity_at[s * cpb + k - 1] == NO_PARITY {
            self.data[base + block_len..base + k * cs].fill(0);
        }
        let map = &self.parity_at[s * cpb..s * cpb + k];
        let decoder = self.decoder.as_mut().ok_or(fec::FecError::Unsupported)?;
        decoder.decode(&mut self.data[base..base + k * cs], cs, map)
    }
}

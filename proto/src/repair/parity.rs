//! The parity planner (R-PAR-5..7): which blocks need how many fresh parity
//! symbols, batched like source requests, served block by block with
//! indices never repeated, and the symbols themselves (computed when sent,
//! or cached for GF(2^16) transfers).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::time::Duration;

use super::RepairStats;
use crate::fec;
use crate::geometry::Geometry;
use crate::time::Instant;
use crate::wire::{self, Data, Frame, FLAG_PARITY, FLAG_REPAIR};

/// Blocks whose parity symbols are kept computed.
const PARITY_CACHE_BLOCKS: usize = 64;

/// One block some devices need parity for (R-PAR-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockNeed {
    /// The most symbols one device asked for.
    need: u32,
    session: u32,
}

/// What a parity request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    /// In the batch being aggregated: its window must be open.
    Batched,
    /// Merged into a block already queued, suppressed or refused.
    Settled,
}

/// The planner's state, bounded by `max_pending` blocks and
/// [`PARITY_CACHE_BLOCKS`] cached blocks.
#[derive(Debug, Clone, Default)]
pub(super) struct ParityPlanner {
    /// Needs of the batch being aggregated.
    pending: BTreeMap<u32, BlockNeed>,
    /// Blocks ready to serve, in ascending order from `cursor`, wrapping.
    queue: BTreeMap<u32, BlockNeed>,
    cursor: u32,
    /// Parity symbols of each block sent so far, which is also the next
    /// index: indices are never repeated, and a block whose `k` symbols all
    /// went out is served with source chunks (R-PAR-7).
    issued: BTreeMap<u32, u32>,
    /// When parity for a block last went out, and how many symbols since
    /// the holdoff began.
    sent: BTreeMap<u32, (Instant, u32)>,
    /// Computed parity of recent blocks, GF(2^16) transfers only.
    cache: BTreeMap<u32, Vec<u8>>,
    /// One GF(2^8) parity symbol, computed when it is sent.
    symbol: Vec<u8>,
}

impl ParityPlanner {
    /// Parity symbols of `block` not sent yet (R-PAR-7).
    pub(super) fn unsent(&self, geo: &Geometry, block: u32) -> u32 {
        let issued = self.issued.get(&block).copied().unwrap_or(0);
        fec::parity_count(geo.chunks_in_block(block)).saturating_sub(issued)
    }

    /// R-PAR-5/6: a NACK asks for `n` symbols of `block`, less those sent
    /// to the group within `holdoff` (they may have crossed the NACK).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request(
        &mut self,
        now: Instant,
        geo: &Geometry,
        (holdoff, max_pending): (Duration, usize),
        stats: &mut RepairStats,
        session: u32,
        block: u32,
        n: u32,
    ) -> Asked {
        let recent = match self.sent.get(&block) {
            Some((at, count)) if now.saturating_since(*at) < holdoff => *count,
            _ => 0,
        };
        let n = n.saturating_sub(recent);
        if n == 0 {
            stats.parity_suppressed += 1;
            return Asked::Settled;
        }
        let n = n.min(fec::parity_count(geo.chunks_in_block(block)));
        if let Some(q) = self.queue.get_mut(&block) {
            q.need = q.need.max(n);
            stats.merged += 1;
            return Asked::Settled;
        }
        match self.pending.get_mut(&block) {
            Some(p) => {
                p.need = p.need.max(n);
                stats.merged += 1;
            }
            None => {
                if self.pending.len() + self.queue.len() >= max_pending {
                    stats.overload += 1;
                    return Asked::Settled;
                }
                self.pending.insert(block, BlockNeed { need: n, session });
            }
        }
        Asked::Batched
    }

    /// The aggregation window closed: the batch's needs join the queue.
    pub(super) fn flush(&mut self) {
        for (block, need) in core::mem::take(&mut self.pending) {
            let q = self.queue.entry(block).or_insert(need);
            q.need = q.need.max(need.need);
        }
    }

    /// Blocks pending or queued.
    pub(super) fn backlog(&self) -> usize {
        self.pending.len() + self.queue.len()
    }

    /// Whether no block is queued to serve.
    pub(super) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next queued block to serve among the first `ready_blocks` (the
    /// image read so far), from the cursor, wrapping; `None` when no queued
    /// block is ready.
    pub(super) fn next_block(&self, ready_blocks: u32) -> Option<u32> {
        let ready = |b: &u32| *b < ready_blocks;
        match self.queue.range(self.cursor..).next() {
            Some((b, _)) if ready(b) => Some(*b),
            _ => match self.queue.first_key_value() {
                Some((b, _)) if ready(b) => Some(*b),
                _ => None,
            },
        }
    }

    /// One parity symbol of queued `block` encoded into `buf` (R-PAR-5): its
    /// length, or `None` when the block has nothing (more) to send.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        now: Instant,
        geo: &Geometry,
        (holdoff, max_pending): (Duration, usize),
        block: u32,
        image: &[u8],
        buf: &mut [u8],
        stats: &mut RepairStats,
    ) -> Option<usize> {
        let mut need = self.queue.remove(&block)?;
        if need.need == 0 || self.unsent(geo, block) == 0 {
            // R-PAR-7: every symbol went out; the need is dropped (needs were
            // capped at the unsent symbols when asked for).
            return None;
        }
        let issued = self.issued.entry(block).or_insert(0);
        let index = *issued;
        *issued += 1;
        need.need -= 1;
        if need.need > 0 {
            self.queue.insert(block, need);
        } else {
            self.cursor = block.saturating_add(1);
        }
        let payload = self.symbol(geo, block, index, image)?;
        let frame = Frame::Data(Data {
            block,
            chunk: index,
            payload: wire::Bytes(payload),
        });
        let len = wire::encode(
            need.session,
            geo.image_id,
            FLAG_REPAIR | FLAG_PARITY,
            &frame,
            buf,
        )
        .ok()?;
        stats.parity_sent += 1;
        let e = self.sent.entry(block).or_insert((now, 0));
        if now.saturating_since(e.0) >= holdoff {
            *e = (now, 0);
        }
        e.1 += 1;
        if self.sent.len() > max_pending {
            self.sent
                .retain(|_, (t, _)| now.saturating_since(*t) < holdoff);
        }
        Some(len)
    }

    /// Parity symbol `index` of `block`.
    fn symbol(&mut self, geo: &Geometry, block: u32, index: u32, image: &[u8]) -> Option<&[u8]> {
        let start = usize::try_from(u64::from(block) * u64::from(geo.block_size)).ok()?;
        let end = usize::try_from(
            (u64::from(block) * u64::from(geo.block_size) + u64::from(geo.block_size))
                .min(geo.image_len),
        )
        .ok()?;
        let source = image.get(start..end)?;
        let cs = geo.chunk_size as usize;
        if fec::uses_gf256(geo.chunks_per_block) {
            // One symbol costs k multiply-adds: computed when sent, not cached.
            self.symbol.resize(cs, 0);
            fec::encode_symbol(source, cs, geo.chunks_per_block, index, &mut self.symbol).ok()?;
            return Some(&self.symbol);
        }
        if !self.cache.contains_key(&block) {
            let parity = fec::encode_block(source, cs, geo.chunks_per_block).ok()?;
            if self.cache.len() >= PARITY_CACHE_BLOCKS {
                // Bounded: forget the block farthest from this one.
                let far = *self.cache.keys().max_by_key(|b| b.abs_diff(block))?;
                self.cache.remove(&far);
            }
            self.cache.insert(block, parity);
        }
        let parity = self.cache.get(&block)?;
        parity.get(index as usize * cs..(index as usize + 1) * cs)
    }
}

//! NACK scheduling: per-block back-off (R-NACK-2), retries (R-NACK-3),
//! suppression by overheard repairs (R-NACK-4), whole-block NACKs (R-NACK-5),
//! the end game (R-NACK-6), and building the NACK frame (R-NACK-1).

use core::time::Duration;

use super::window::{get_bit, Slot, SlotState};
use super::{Phase, Receiver, ReceiverConfig};
use crate::rng::Rng;
use crate::time::{earliest, Instant};
use crate::wire::ChunkRange;

impl Receiver {
    /// After any data: a block with new holes gets its own NACK back-off
    /// (R-NACK-2); a retry further out is pulled in, so new holes never wait
    /// for an old retry. Each block has its own: a block that rode along in
    /// another block's NACK would be asked for before its repair could be
    /// overheard (R-NACK-4).
    pub(super) fn after_data(&mut self, now: Instant) {
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
            let at = now + backoff(cfg, t.span.backoff_cap(), &mut self.rng);
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
    pub(super) fn endgame(&mut self, now: Instant) {
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
            let due = now + backoff(&self.config, t.span.backoff_cap(), &mut self.rng);
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

    /// Send a NACK for every block whose NACK is due (R-NACK-1..5).
    pub(super) fn build_nack(&mut self, now: Instant) {
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
                let at = sl.quiet_until + backoff(cfg, t.span.backoff_cap(), &mut self.rng);
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
            let next = now + cfg.nack_retry + backoff(cfg, t.span.backoff_cap(), &mut self.rng);
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
}

/// A random NACK back-off (R-NACK-2): in `[nack_delay_min, top]`, where
/// `top` is `nack_delay_max` or `nack_backoff_rtts` round trips if that is
/// longer, but no more than `cap` (a quarter of the window's span once it
/// is measured: [`super::span::WindowSpan`]); the largest of
/// `nack_backoff_shape` uniform draws, so that in a large fleet the
/// earliest NACKs are few. Not inlined: six callers, and the device agent
/// counts its bytes.
#[inline(never)]
pub(super) fn backoff(cfg: &ReceiverConfig, cap: Option<Duration>, rng: &mut Rng) -> Duration {
    let top = cfg
        .nack_delay_max
        .max(cfg.round_trip.saturating_mul(cfg.nack_backoff_rtts));
    let top = cap.map_or(top, |cap| top.min(cap).max(cfg.nack_delay_min));
    let mut d = cfg.nack_delay_min;
    for _ in 0..cfg.nack_backoff_shape.clamp(1, 64) {
        d = d.max(rng.duration_between(cfg.nack_delay_min, top));
    }
    d
}

/// R-NACK-4: a parity symbol for `slot`'s block was heard; whoever asked,
/// it repairs a loss here too, so this block's NACK waits until the symbols
/// stop. A retransmitted source chunk only helps the devices that lack that
/// very chunk, so it holds nothing back: at fleet scale others' repairs
/// would otherwise defer ours past the window. Returns the NACK's new due
/// time when it was pulled in.
pub(super) fn parity_heard(
    cfg: &ReceiverConfig,
    cap: Option<Duration>,
    rng: &mut Rng,
    slot: &mut Slot,
    now: Instant,
) -> Option<Instant> {
    slot.quiet_until = now + cfg.nack_suppress;
    // R-NACK-3: parity after this block's NACK answers it (or another
    // device's, which repairs a loss here too). If the block is still short
    // once the symbols stop, a symbol of the answer was lost here: the retry
    // comes then, after a fresh back-off, instead of a whole `nack_retry`
    // later.
    if !slot.due_is_retry {
        return None;
    }
    let at = slot.quiet_until + backoff(cfg, cap, rng);
    if slot.nack_due.is_some_and(|due| at < due) {
        slot.nack_due = Some(at);
        return Some(at);
    }
    None
}

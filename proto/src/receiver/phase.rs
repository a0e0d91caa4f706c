//! Phase changes after the manifest is accepted: the resume scan, flash
//! completions, the read-back (R-RES-1, R-HDR-1, R-VER-2).

use super::fetch::ManifestFetch;
use super::window::Transfer;
use super::window::{clear_bit, SlotState};
use super::{FlashFailure, Receiver, MAX_VERIFY_ATTEMPTS};
use crate::time::Instant;
use crate::wire::ImageId;
use crate::wire::Reason;

/// Where the receiver is; the data of a phase lives in its variant.
pub(super) enum Phase {
    Listening,
    FetchingManifest(ManifestFetch),
    Resuming(Transfer),
    Receiving(Transfer),
    Verifying(Transfer),
    Done(Transfer),
    Failed(Reason),
}

/// An event waiting for [`Receiver::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    ManifestAccepted,
    Refused,
    Hint,
    VerifyImage,
    Done,
    Failed(Reason),
    Foreign(u32, ImageId),
}

impl Receiver {
    /// The one transition function for reported phase changes: enter
    /// `phase`, queue the event that goes with it and make a Status due now;
    /// an outcome (done, failed, or back to listening after a signed
    /// refusal, R-ANN-2) is reported [`crate::report::FINAL_REPEATS`] times
    /// (R-STAT-1). Listening is entered here only by a refusal; a dropped
    /// fetch returns to it silently.
    pub(super) fn enter(&mut self, now: Instant, phase: Phase) {
        let (event, outcome) = match &phase {
            Phase::Listening => (Some(Queued::Refused), true),
            Phase::FetchingManifest(_) | Phase::Receiving(_) => (None, false),
            Phase::Resuming(_) => (Some(Queued::ManifestAccepted), false),
            Phase::Verifying(_) => (Some(Queued::VerifyImage), false),
            Phase::Done(_) => (Some(Queued::Done), true),
            Phase::Failed(r) => (Some(Queued::Failed(*r)), true),
        };
        if matches!(phase, Phase::Verifying(_)) {
            self.nack_at = None;
            self.prove_by_manifest();
        }
        self.phase = phase;
        if let Some(e) = event {
            self.queue(e);
        }
        if outcome {
            self.status.report_outcome(now);
        } else {
            self.status.report_now(now);
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
        let Phase::Resuming(t) = phase else {
            self.phase = phase;
            return;
        };
        self.last_progress_at = now;
        let next = if t.done_count == t.manifest.block_count() {
            Phase::Verifying(t)
        } else {
            Phase::Receiving(t)
        };
        self.enter(now, next);
    }

    /// The shell finished writing block `index` (with read-back), or could
    /// not: a failure ends the update (`failed`, `flash-error`).
    pub fn handle_flash_done(
        &mut self,
        now: Instant,
        index: u32,
        result: Result<(), FlashFailure>,
    ) {
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
        if result.is_err() {
            self.enter(now, Phase::Failed(Reason::FlashError));
            return;
        }
        t.mark_done(index);
        self.stats.blocks_flashed += 1;
        self.after_block_done(now);
    }

    /// A block became done (flashed, or found on flash by the scan): release
    /// a held header when it is the last one missing, start the end game, or
    /// go on to the read-back when nothing is missing.
    pub(super) fn after_block_done(&mut self, now: Instant) {
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
            if let Phase::Receiving(t) = core::mem::replace(&mut self.phase, Phase::Listening) {
                self.enter(now, Phase::Verifying(t));
            }
        }
    }

    /// R-STAT-6: every block is on flash and none came from the carousel
    /// here (the resume scan found them, or repairs completed them): the
    /// manifest's source proves the sender, so `--until-done` counts it.
    pub(super) fn prove_by_manifest(&mut self) {
        if self.proven_sender.is_none() {
            self.proven_sender = self.manifest_from;
        }
    }

    /// The shell did the final read-back (R-VER-2): `bad_blocks` lists the
    /// blocks that do not match (empty when the image is good). Bad blocks
    /// are received again, a bounded number of times, before the update
    /// fails.
    pub fn handle_verify_done(&mut self, now: Instant, bad_blocks: &[u32]) {
        let phase = core::mem::replace(&mut self.phase, Phase::Listening);
        let Phase::Verifying(mut t) = phase else {
            self.phase = phase;
            return;
        };
        if bad_blocks.is_empty() {
            t.release_window();
            self.enter(now, Phase::Done(t));
            return;
        }
        t.verify_attempts += 1;
        if t.verify_attempts >= MAX_VERIFY_ATTEMPTS {
            self.enter(now, Phase::Failed(Reason::VerifyFailed));
            return;
        }
        for &b in bad_blocks {
            if t.is_done(b) {
                clear_bit(&mut t.done, b);
                t.done_count -= 1;
            }
        }
        // Receiving again: copies of an earlier outcome no longer hold.
        self.status.restart(now);
        self.enter(now, Phase::Receiving(t));
        self.endgame(now);
    }
}

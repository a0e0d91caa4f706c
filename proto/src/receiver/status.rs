//! Status reporting: what the receiver's Status frame says (R-STAT-1) and
//! when the next one is due.

use super::{truncate, Phase, Receiver};
use crate::manifest::Manifest;
use crate::time::Instant;
use crate::wire::{self, DeviceState, Frame, Reason, Status, MAX_VERSION_LEN};

impl Receiver {
    pub(super) fn encode_status(&self, buf: &mut [u8]) -> Option<usize> {
        let (session, image_id) = self.status_stamp;
        let refused_now = matches!(self.phase, Phase::Listening) && self.status.outcome_pending();
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

    /// A Status was sent at `now`: the next copy of an outcome, the next
    /// periodic report, or none once the update is over (R-STAT-1).
    pub(super) fn schedule_next_status(&mut self, now: Instant) {
        let over = matches!(self.phase, Phase::Done(_) | Phase::Failed(_));
        let interval = (!over).then_some(self.config.status_interval);
        self.status.sent(now, interval);
    }
}

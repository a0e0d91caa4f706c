//! What a receiver tells the sender about its flash (R-PACE-1): the write
//! rate the shell measured and the free slots of its block window, carried
//! in every Status so the sender can pace the carousel to the fleet.

use super::window::SlotState;
use super::{Phase, Receiver};
use crate::time::Instant;
use crate::wire::WINDOW_FREE_NONE;

/// R-PACE-1: rate changes that go out at once rather than with the next
/// periodic Status: the provisional rate of the first write, then the
/// measurement that replaces it.
const AT_ONCE_CHANGES: u8 = 2;

impl Receiver {
    /// The shell's measured flash write rate in kbit/s of image bytes
    /// (R-PACE-1). The first rate (the shell's provisional one, from one
    /// write) and the first different one after it are reported at once:
    /// until the sender hears them the carousel runs faster than a slow
    /// flash can take, or a fast fleet stays paced to one slow first write.
    pub fn set_write_rate(&mut self, now: Instant, kbps: u32) {
        if kbps > 0 && kbps != self.write_kbps && self.write_rate_changes < AT_ONCE_CHANGES {
            self.write_rate_changes += 1;
            if self.status.due_at().is_some() {
                self.status.report_now(now);
            }
        }
        self.write_kbps = kbps;
    }

    /// Free slots of the block window, or [`WINDOW_FREE_NONE`] without one.
    pub(super) fn window_free(&self) -> u16 {
        match &self.phase {
            Phase::Receiving(t) => {
                let free = t
                    .slots
                    .iter()
                    .filter(|s| s.state == SlotState::Free)
                    .count();
                u16::try_from(free).unwrap_or(WINDOW_FREE_NONE - 1)
            }
            _ => WINDOW_FREE_NONE,
        }
    }
}

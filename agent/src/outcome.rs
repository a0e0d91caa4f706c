//! The agent's own final Status reports (R-STAT-2, R-STAT-7, R-STAT-8): the
//! copies [`proto::report::Reporter`] times, each to the configured repair
//! server and, when the receiver proved the sender's address (R-STAT-6), to
//! the sender too; never to an unproven address.
//! Used after activation and for the outcomes the shell decides itself:
//! target not opened, image larger than the target, stalled, refused when
//! the boot window ends.

use std::net::SocketAddr;

use proto::report::Reporter;
use proto::wire::{DeviceState, ImageId, Reason};
use proto::Instant;

use crate::confirm;

/// One outcome to report before the process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalReport {
    state: DeviceState,
    reason: Reason,
    /// Blocks done and in the image, as far as known.
    blocks: (u32, u32),
    /// Session and image id of the header.
    stamp: (u32, ImageId),
    /// Wait for the receiver's own final reports first (after `done`).
    after_receiver: bool,
    /// When the next copy is due.
    timer: Reporter,
    /// The copy just sent to the repair server goes here next.
    to_sender: Option<SocketAddr>,
}

impl FinalReport {
    /// A report of `state`/`reason`, first copy due at `now`.
    pub fn new(
        now: Instant,
        state: DeviceState,
        reason: Reason,
        blocks: (u32, u32),
        stamp: (u32, ImageId),
        after_receiver: bool,
    ) -> Self {
        FinalReport {
            state,
            reason,
            blocks,
            stamp,
            after_receiver,
            timer: Reporter::outcome(now),
            to_sender: None,
        }
    }

    /// The state reported.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// Copies still to send.
    pub fn pending(&self) -> bool {
        self.timer.due_at().is_some() || self.to_sender.is_some()
    }

    /// When the next copy is due; `None` when none is, or while it waits for
    /// the receiver (`receiver_done` false).
    pub fn due_at(&self, receiver_done: bool) -> Option<Instant> {
        if self.to_sender.is_some() {
            return Some(Instant::ZERO);
        }
        self.timer
            .due_at()
            .filter(|_| receiver_done || !self.after_receiver)
    }

    /// Where the next copy goes, if one is due now; then [`FinalReport::encode`] it.
    pub fn poll(
        &mut self,
        now: Instant,
        receiver_done: bool,
        repair_server: SocketAddr,
        proven_sender: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if let Some(to) = self.to_sender.take() {
            return Some(to);
        }
        if self.due_at(receiver_done).is_none_or(|t| now < t) {
            return None;
        }
        self.timer.sent(now, None);
        self.to_sender = proven_sender;
        Some(repair_server)
    }

    /// The Status frame, signed with `key` if given; its length in `buf`.
    pub fn encode(
        &self,
        device_id: u64,
        version: &str,
        key: Option<&ed25519_compact::SecretKey>,
        buf: &mut [u8],
    ) -> Option<usize> {
        confirm::status_frame(
            device_id,
            version,
            self.state,
            self.reason,
            self.blocks,
            self.stamp,
            key,
            buf,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn r_stat_7_three_copies_50_ms_apart_to_the_repair_server_and_the_proven_sender() {
        let t0 = Instant::from_micros(1_000);
        let st = (DeviceState::Stalled, Reason::None);
        let mut r = FinalReport::new(t0, st.0, st.1, (4, 16), (7, ImageId([1; 8])), false);
        let mut sent = Vec::new();
        let mut now = t0;
        for _ in 0..100 {
            while let Some(to) = r.poll(now, false, addr(1), Some(addr(2))) {
                sent.push((now.saturating_since(t0).as_millis(), to.port()));
            }
            if !r.pending() {
                break;
            }
            now = now + Duration::from_millis(10);
        }
        assert_eq!(sent, [(0, 1), (0, 2), (50, 1), (50, 2), (100, 1), (100, 2)]);
        // After `done` it waits for the receiver's own reports.
        let mut a = FinalReport::new(
            t0,
            DeviceState::Activated,
            Reason::None,
            (0, 0),
            (7, ImageId([1; 8])),
            true,
        );
        assert_eq!(a.poll(t0, false, addr(1), None), None);
        assert_eq!(a.poll(t0, true, addr(1), None), Some(addr(1)));
        let mut buf = [0u8; proto::wire::MAX_DATAGRAM];
        assert!(r.encode(9, "1.0", None, &mut buf).is_some());
        println!("R-STAT-7: copies (ms, port): {sent:?}");
    }
}

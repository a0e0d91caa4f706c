//! The fleet table: what the operator side knows about each device, built
//! from the Status frames devices send to the sender and the repair server.
//!
//! Bounded at construction: a table full of devices drops (and counts) Status
//! frames from new devices rather than growing, so a flood of forged device
//! ids costs a counter, not memory (R-FLEET-1).

use alloc::collections::BTreeMap;
use core::net::SocketAddr;

use crate::time::Instant;
use crate::wire::{DeviceState, ImageId, Reason, Status, MAX_VERSION_LEN};
use crate::DropReason;

/// Default bound on the number of devices a [`Fleet`] tracks.
pub const DEFAULT_MAX_DEVICES: usize = 65_536;

/// Every [`DeviceState`], in wire order (for per-state tables).
pub const ALL_STATES: [DeviceState; 11] = [
    DeviceState::Listening,
    DeviceState::FetchingManifest,
    DeviceState::Resuming,
    DeviceState::Receiving,
    DeviceState::Verifying,
    DeviceState::Done,
    DeviceState::Refused,
    DeviceState::Failed,
    DeviceState::Activated,
    DeviceState::Confirmed,
    DeviceState::RolledBack,
];

/// What is known about one device: its latest Status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The address its last Status came from.
    pub addr: SocketAddr,
    /// Where it is in the update.
    pub state: DeviceState,
    /// Blocks written and verified.
    pub blocks_done: u32,
    /// Blocks in the image it works on.
    pub blocks_total: u32,
    /// The version it runs now.
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// Why it refused or failed.
    pub reason: Reason,
    /// The image id in the header of its last Status.
    pub image_id: ImageId,
    /// When its first Status arrived.
    pub first_seen: Instant,
    /// When its last Status arrived.
    pub last_seen: Instant,
}

/// Device id → [`DeviceRecord`], bounded.
#[derive(Debug, Clone)]
pub struct Fleet {
    devices: BTreeMap<u64, DeviceRecord>,
    max_devices: usize,
    dropped: u64,
}

impl Fleet {
    /// An empty table that tracks at most `max_devices` devices.
    pub fn new(max_devices: usize) -> Self {
        Fleet {
            devices: BTreeMap::new(),
            max_devices,
            dropped: 0,
        }
    }

    /// Record a Status report that arrived at `now` from `from`, whose header
    /// named `image_id`. A new device when the table is full is dropped and
    /// counted ([`DropReason::Overload`]); known devices are always updated.
    pub fn record(
        &mut self,
        now: Instant,
        from: SocketAddr,
        image_id: ImageId,
        status: &Status<'_>,
    ) -> Result<(), DropReason> {
        let version = version_string(status.current_version);
        if let Some(rec) = self.devices.get_mut(&status.device_id) {
            rec.addr = from;
            rec.state = status.state;
            rec.blocks_done = status.blocks_done;
            rec.blocks_total = status.blocks_total;
            rec.version = version;
            rec.reason = status.reason;
            rec.image_id = image_id;
            rec.last_seen = now;
            return Ok(());
        }
        if self.devices.len() >= self.max_devices {
            self.dropped += 1;
            return Err(DropReason::Overload);
        }
        self.devices.insert(
            status.device_id,
            DeviceRecord {
                addr: from,
                state: status.state,
                blocks_done: status.blocks_done,
                blocks_total: status.blocks_total,
                version,
                reason: status.reason,
                image_id,
                first_seen: now,
                last_seen: now,
            },
        );
        Ok(())
    }

    /// Devices whose last Status named `image_id` and reported `state`.
    pub fn count(&self, image_id: ImageId, state: DeviceState) -> usize {
        self.devices
            .values()
            .filter(|r| r.image_id == image_id && r.state == state)
            .count()
    }

    /// Devices in each state whatever image they reported, indexed like [`ALL_STATES`].
    pub fn state_counts(&self) -> [usize; ALL_STATES.len()] {
        let mut counts = [0usize; ALL_STATES.len()];
        for r in self.devices.values() {
            counts[r.state as usize] += 1;
        }
        counts
    }

    /// The record of one device.
    pub fn get(&self, device_id: u64) -> Option<&DeviceRecord> {
        self.devices.get(&device_id)
    }

    /// Every device, by ascending device id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &DeviceRecord)> + '_ {
        self.devices.iter().map(|(id, r)| (*id, r))
    }

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// `true` when no device has reported.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Status frames from new devices dropped because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn version_string(s: &str) -> heapless::String<MAX_VERSION_LEN> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn status(id: u64, state: DeviceState) -> Status<'static> {
        Status {
            device_id: id,
            state,
            blocks_done: 1,
            blocks_total: 4,
            current_version: "1.0.0",
            reason: Reason::None,
        }
    }

    #[test]
    fn records_updates_and_counts_by_image_and_state() {
        let img = ImageId([1; 8]);
        let other = ImageId([2; 8]);
        let mut f = Fleet::new(10);
        f.record(
            Instant::from_micros(5),
            addr(1),
            img,
            &status(7, DeviceState::Receiving),
        )
        .expect("new");
        f.record(
            Instant::from_micros(6),
            addr(2),
            other,
            &status(8, DeviceState::Receiving),
        )
        .expect("new");
        f.record(
            Instant::from_micros(9),
            addr(3),
            img,
            &status(7, DeviceState::Done),
        )
        .expect("update");
        assert_eq!(f.len(), 2);
        assert_eq!(f.count(img, DeviceState::Done), 1);
        assert_eq!(f.count(img, DeviceState::Receiving), 0);
        assert_eq!(f.count(other, DeviceState::Receiving), 1);
        let r = f.get(7).expect("device 7");
        assert_eq!(r.addr, addr(3));
        assert_eq!(r.first_seen, Instant::from_micros(5));
        assert_eq!(r.last_seen, Instant::from_micros(9));
        assert_eq!(r.version.as_str(), "1.0.0");
        assert_eq!(f.state_counts()[DeviceState::Done as usize], 1);
        assert_eq!(
            f.iter().map(|(id, _)| id).collect::<alloc::vec::Vec<_>>(),
            [7, 8]
        );
    }

    #[test]
    fn full_table_drops_new_devices_but_updates_known_ones() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(2);
        for id in 0..2 {
            f.record(
                Instant::ZERO,
                addr(1),
                img,
                &status(id, DeviceState::Listening),
            )
            .expect("room");
        }
        assert_eq!(
            f.record(
                Instant::ZERO,
                addr(1),
                img,
                &status(99, DeviceState::Listening)
            ),
            Err(DropReason::Overload)
        );
        assert_eq!(f.dropped(), 1);
        f.record(Instant::ZERO, addr(1), img, &status(1, DeviceState::Done))
            .expect("known device");
        assert_eq!(f.len(), 2);
        assert_eq!(f.count(img, DeviceState::Done), 1);
    }
}

//! The fleet table: what the operator side knows about each device, built
//! from the Status frames devices send to the sender and the repair server.
//!
//! Every Status is forged until proven otherwise. With a roster (device id →
//! Ed25519 public key, R-STAT-4) a roster device's report is recorded only
//! when its signature verifies (R-WIRE-7), and only authenticated reports
//! count toward the operator's `--until-done`; devices outside the roster are
//! recorded as unauthenticated. Without a roster every report is
//! unauthenticated and counts: anyone on the LAN can fake it.
//!
//! Bounded at construction (R-FLEET-1..3): unauthenticated devices share
//! `max_devices` places; a device not heard from for `idle` leaves if it is
//! in a state that still changes, and a new device in a full table evicts
//! the unauthenticated device heard from longest ago (non-final states
//! first). Authenticated roster devices have their own room and are never
//! evicted by others. So a flood of forged ids costs counters, not memory,
//! and never the operator's count.

//!
//! Outcomes (R-FLEET-4, `outcome`): a final state stays until another
//! outcome or a report of a later attempt. With events enabled
//! ([`Fleet::set_event_capacity`]) every accepted report also queues a
//! [`FleetEvent`] for the operator's views and records.

mod outcome;

pub use outcome::{is_final, is_success, replaces, FleetEvent};

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::net::SocketAddr;
use core::time::Duration;

use crate::time::Instant;
use crate::wire::{
    self, DeviceState, Frame, Header, ImageId, Reason, Status, FLAG_SIGNED, MAX_VERSION_LEN,
};
use crate::DropReason;

/// Default bound on the number of unauthenticated devices a [`Fleet`] tracks.
pub const DEFAULT_MAX_DEVICES: usize = 65_536;

/// Default time after which a device in a non-final state that has not
/// reported leaves the table (R-FLEET-2). Devices report every second while
/// they work; final states are not repeated, so they never age out.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);

/// Every [`DeviceState`], in wire order (for per-state tables).
pub const ALL_STATES: [DeviceState; 12] = [
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
    DeviceState::Stalled,
];

/// Device id → Ed25519 public key of the devices the operator knows (R-STAT-4).
pub type Roster = BTreeMap<u64, [u8; 32]>;

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
    /// The version it runs now (as the device sent it: escape it before printing).
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// Why it refused or failed.
    pub reason: Reason,
    /// The image id in the header of its last Status.
    pub image_id: ImageId,
    /// When its first Status arrived.
    pub first_seen: Instant,
    /// When its last Status arrived.
    pub last_seen: Instant,
    /// Its reports are signed with the key the roster holds for it (R-STAT-4).
    pub authenticated: bool,
    /// Its flash write rate, kbit/s, 0 when unknown (R-PACE-1).
    pub write_kbps: u32,
    /// Free slots of its block window (R-PACE-1).
    pub window_free: u16,
}

/// What the table refused or let go, by kind (R-FLEET-1..3, R-STAT-5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Reports from new unauthenticated devices dropped: no room and nothing to evict.
    pub dropped_full: u64,
    /// Unauthenticated devices evicted to make room for a new one.
    pub evicted: u64,
    /// Devices that left after `idle` without a report.
    pub aged_out: u64,
    /// Reports for a roster device without a signature.
    pub unsigned: u64,
    /// Reports for a roster device whose signature does not verify.
    pub bad_signature: u64,
    /// Events not queued because nobody drained the queue in time.
    pub events_dropped: u64,
}

/// Device id → [`DeviceRecord`], bounded.
#[derive(Debug, Clone)]
pub struct Fleet {
    devices: BTreeMap<u64, DeviceRecord>,
    /// Unauthenticated devices in eviction order: non-final first, then by
    /// last report, oldest first.
    evictable: BTreeSet<(bool, Instant, u64)>,
    roster: Roster,
    max_devices: usize,
    idle: Duration,
    /// Devices per state, every device, indexed like [`ALL_STATES`].
    states: [usize; ALL_STATES.len()],
    /// Devices in a state this build does not know (R-STAT-9).
    unknown_states: usize,
    /// Devices that count toward `--until-done`, per (image, state).
    counted: BTreeMap<(ImageId, u8), usize>,
    /// Accepted reports not yet taken by [`Fleet::poll_event`], at most `event_cap`.
    events: VecDeque<FleetEvent>,
    event_cap: usize,
    stats: FleetStats,
}

impl Fleet {
    /// An empty table that tracks at most `max_devices` unauthenticated devices.
    pub fn new(max_devices: usize) -> Self {
        Fleet {
            devices: BTreeMap::new(),
            evictable: BTreeSet::new(),
            roster: Roster::new(),
            max_devices,
            idle: DEFAULT_IDLE,
            states: [0; ALL_STATES.len()],
            unknown_states: 0,
            counted: BTreeMap::new(),
            events: VecDeque::new(),
            event_cap: 0,
            stats: FleetStats::default(),
        }
    }

    /// Queue a [`FleetEvent`] for each accepted report, at most `cap` of them
    /// until [`Fleet::poll_event`] takes them (the rest are counted in
    /// [`FleetStats::events_dropped`]). 0, the default, queues none.
    pub fn set_event_capacity(&mut self, cap: usize) {
        self.event_cap = cap;
        self.events = VecDeque::with_capacity(cap);
    }

    /// The oldest queued event.
    pub fn poll_event(&mut self) -> Option<FleetEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, at: Instant, device_id: u64, old_state: Option<DeviceState>) {
        if self.event_cap == 0 {
            return;
        }
        let Some(rec) = self.devices.get(&device_id) else {
            return;
        };
        if self.events.len() >= self.event_cap {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(FleetEvent {
            at,
            device_id,
            addr: rec.addr,
            old_state,
            new_state: rec.state,
            record: rec.clone(),
        });
    }

    /// The idle time after which a device in a non-final state leaves (R-FLEET-2).
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Devices whose reports must be signed with the given keys (R-STAT-4).
    /// Set it before the first report.
    pub fn set_roster(&mut self, roster: Roster) {
        self.roster = roster;
    }

    /// Whether a roster is in force.
    pub fn has_roster(&self) -> bool {
        !self.roster.is_empty()
    }

    /// Record the Status datagram `datagram` that arrived at `now` from
    /// `from` (R-STAT-4, R-FLEET-1..3). Refused: anything but a Status
    /// ([`DropReason::Unexpected`]), an unsigned or badly signed report for a
    /// roster device ([`DropReason::Unauthenticated`]), a new device when the
    /// table is full of devices that may not be evicted ([`DropReason::Overload`]).
    pub fn record(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (header, frame) = wire::decode(datagram)?;
        let Frame::Status(status) = frame else {
            return Err(DropReason::Unexpected);
        };
        self.record_status(now, from, datagram, &header, &status)
    }

    /// [`Fleet::record`] for a Status the caller decoded from `datagram`
    /// (whose bytes the signature covers).
    pub fn record_status(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        header: &Header,
        status: &Status<'_>,
    ) -> Result<(), DropReason> {
        let authenticated = self.authenticate(header, status, datagram)?;
        self.expire(now);
        let version = version_string(status.current_version);
        let id = status.device_id;
        let report = DeviceRecord {
            addr: from,
            state: status.state,
            blocks_done: status.blocks_done,
            blocks_total: status.blocks_total,
            version,
            reason: status.reason,
            image_id: header.image_id,
            first_seen: now,
            last_seen: now,
            authenticated,
            write_kbps: status.write_kbps,
            window_free: status.window_free,
        };
        if let Some(old) = self.devices.remove(&id) {
            self.unindex(id, &old);
            let old_state = old.state;
            let rec = if replaces(old.state, status.state) {
                DeviceRecord {
                    first_seen: old.first_seen,
                    ..report
                }
            } else {
                // R-FLEET-4: the outcome stands; the device is alive.
                DeviceRecord {
                    state: old.state,
                    blocks_done: old.blocks_done,
                    blocks_total: old.blocks_total,
                    reason: old.reason,
                    image_id: old.image_id,
                    first_seen: old.first_seen,
                    ..report
                }
            };
            self.index(id, &rec);
            self.devices.insert(id, rec);
            self.emit(now, id, Some(old_state));
            return Ok(());
        }
        if !authenticated && self.evictable.len() >= self.max_devices {
            // R-FLEET-3: make room by the unauthenticated device heard from
            // longest ago, non-final states first.
            let Some(&(_, _, victim)) = self.evictable.first() else {
                self.stats.dropped_full += 1;
                return Err(DropReason::Overload);
            };
            self.remove(victim);
            self.stats.evicted += 1;
        }
        let rec = report;
        self.index(id, &rec);
        self.devices.insert(id, rec);
        self.emit(now, id, None);
        Ok(())
    }

    /// R-STAT-4: a roster device's report must carry its signature; others
    /// are unauthenticated whatever they carry.
    fn authenticate(
        &mut self,
        header: &Header,
        status: &Status<'_>,
        datagram: &[u8],
    ) -> Result<bool, DropReason> {
        let Some(key) = self.roster.get(&status.device_id) else {
            return Ok(false);
        };
        if header.flags & FLAG_SIGNED == 0 {
            self.stats.unsigned += 1;
            return Err(DropReason::Unauthenticated);
        }
        if !wire::verify_status(datagram, key) {
            self.stats.bad_signature += 1;
            return Err(DropReason::Unauthenticated);
        }
        Ok(true)
    }

    /// R-FLEET-2: unauthenticated devices in a non-final state not heard
    /// from for `idle` leave. Roster devices keep their reserved place.
    fn expire(&mut self, now: Instant) {
        while let Some(&(final_state, last_seen, id)) = self.evictable.first() {
            if final_state || now.saturating_since(last_seen) < self.idle {
                break;
            }
            self.remove(id);
            self.stats.aged_out += 1;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.devices.remove(&id) {
            self.unindex(id, &old);
        }
    }

    /// Whether `rec`'s report counts for the operator's decisions: with a
    /// roster only authenticated ones, without one every report (R-STAT-4).
    pub fn counts(&self, rec: &DeviceRecord) -> bool {
        rec.authenticated || self.roster.is_empty()
    }

    /// The per-state counter of `state`: its slot in `states`, or
    /// `unknown_states` for a value this build does not know (R-STAT-9).
    fn state_slot(&mut self, state: DeviceState) -> &mut usize {
        match state {
            DeviceState::Unknown(_) => &mut self.unknown_states,
            known => match self.states.get_mut(usize::from(known.to_u8())) {
                Some(n) => n,
                None => &mut self.unknown_states,
            },
        }
    }

    fn index(&mut self, id: u64, rec: &DeviceRecord) {
        *self.state_slot(rec.state) += 1;
        if !rec.authenticated {
            self.evictable
                .insert((is_final(rec.state), rec.last_seen, id));
        }
        if self.counts(rec) {
            *self
                .counted
                .entry((rec.image_id, rec.state.to_u8()))
                .or_insert(0) += 1;
        }
    }

    fn unindex(&mut self, id: u64, rec: &DeviceRecord) {
        let n = self.state_slot(rec.state);
        *n = n.saturating_sub(1);
        if !rec.authenticated {
            self.evictable
                .remove(&(is_final(rec.state), rec.last_seen, id));
        }
        if self.counts(rec) {
            let key = (rec.image_id, rec.state.to_u8());
            if let Some(n) = self.counted.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counted.remove(&key);
                }
            }
        }
    }

    /// Devices whose last Status named `image_id` and reported `state`, of
    /// those that count toward `--until-done`: with a roster only
    /// authenticated ones, without one every device (R-STAT-4).
    pub fn count(&self, image_id: ImageId, state: DeviceState) -> usize {
        self.counted
            .get(&(image_id, state.to_u8()))
            .copied()
            .unwrap_or(0)
    }

    /// Devices whose last Status named `image_id` and reported success
    /// (done, activated, confirmed), of those that count (as [`Fleet::count`]).
    pub fn count_success(&self, image_id: ImageId) -> usize {
        ALL_STATES
            .iter()
            .filter(|s| is_success(**s))
            .map(|s| self.count(image_id, *s))
            .sum()
    }

    /// Devices in each state whatever image they reported, indexed like
    /// [`ALL_STATES`]; those in states this build does not know are in
    /// [`Fleet::unknown_states`].
    pub fn state_counts(&self) -> [usize; ALL_STATES.len()] {
        self.states
    }

    /// Devices in `state`, whatever image they reported.
    pub fn in_state(&self, state: DeviceState) -> usize {
        match state {
            DeviceState::Unknown(_) => 0,
            known => self
                .states
                .get(usize::from(known.to_u8()))
                .copied()
                .unwrap_or(0),
        }
    }

    /// Devices whose last report named a state this build does not know
    /// (R-STAT-9), whatever its value.
    pub fn unknown_states(&self) -> usize {
        self.unknown_states
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

    /// Devices tracked whose reports are authenticated.
    pub fn authenticated(&self) -> usize {
        self.devices.len() - self.evictable.len()
    }

    /// `true` when no device has reported.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Reports refused: no room, or not authenticated for a roster device.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped_full + self.stats.unsigned + self.stats.bad_signature
    }

    /// Counters of what was refused, evicted and aged out.
    pub fn stats(&self) -> &FleetStats {
        &self.stats
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
    use alloc::vec;
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn key(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    fn secs(n: u64) -> Instant {
        Instant::from_micros(n * 1_000_000)
    }

    /// A Status datagram for `id` in `state` about `img`, signed with `signer` if given.
    fn report(id: u64, state: DeviceState, img: ImageId, signer: Option<u8>) -> Vec<u8> {
        let st = Status {
            device_id: id,
            state,
            blocks_done: 1,
            blocks_total: 4,
            current_version: "1.0.0",
            reason: Reason::None,
            write_kbps: 0,
            window_free: 0,
        };
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut n = wire::encode(7, img, 0, &Frame::Status(st), &mut buf).expect("encode");
        if let Some(seed) = signer {
            n = wire::sign_status(&mut buf, n, &key(seed).sk).expect("sign");
        }
        buf.truncate(n);
        buf
    }

    fn plain(id: u64, state: DeviceState, img: ImageId) -> Vec<u8> {
        report(id, state, img, None)
    }

    #[test]
    fn records_updates_and_counts_by_image_and_state() {
        let img = ImageId([1; 8]);
        let other = ImageId([2; 8]);
        let mut f = Fleet::new(10);
        let t = Instant::from_micros;
        f.record(t(5), addr(1), &plain(7, DeviceState::Receiving, img))
            .expect("new");
        f.record(t(6), addr(2), &plain(8, DeviceState::Receiving, other))
            .expect("new");
        f.record(t(9), addr(3), &plain(7, DeviceState::Done, img))
            .expect("update");
        assert_eq!(f.len(), 2);
        assert_eq!(f.count(img, DeviceState::Done), 1);
        assert_eq!(f.count(img, DeviceState::Receiving), 0);
        assert_eq!(f.count(other, DeviceState::Receiving), 1);
        let r = f.get(7).expect("device 7");
        assert_eq!(r.addr, addr(3));
        assert_eq!(r.first_seen, t(5));
        assert_eq!(r.last_seen, t(9));
        assert_eq!(r.version.as_str(), "1.0.0");
        assert!(!r.authenticated);
        assert_eq!(f.in_state(DeviceState::Done), 1);
        assert_eq!(f.in_state(DeviceState::Receiving), 1);
        assert_eq!(f.iter().map(|(id, _)| id).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn r_fleet_3_full_table_evicts_the_oldest_non_final_device() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(2);
        f.record(secs(0), addr(1), &plain(0, DeviceState::Done, img))
            .expect("room");
        f.record(secs(1), addr(1), &plain(1, DeviceState::Listening, img))
            .expect("room");
        // Device 0 is older but done: the listening one goes first.
        f.record(secs(2), addr(1), &plain(99, DeviceState::Listening, img))
            .expect("evicts");
        assert!(f.get(1).is_none() && f.get(0).is_some() && f.get(99).is_some());
        // With only a final state left to evict, the oldest goes.
        f.record(secs(3), addr(1), &plain(99, DeviceState::Done, img))
            .expect("update");
        f.record(secs(4), addr(1), &plain(100, DeviceState::Done, img))
            .expect("evicts");
        assert!(f.get(0).is_none() && f.get(99).is_some());
        assert_eq!(f.stats().evicted, 2);
        assert_eq!(f.len(), 2);
        assert_eq!(f.count(img, DeviceState::Done), 2);
        assert_eq!(f.in_state(DeviceState::Listening), 0);
        let mut none = Fleet::new(0);
        assert_eq!(
            none.record(secs(0), addr(1), &plain(1, DeviceState::Done, img)),
            Err(DropReason::Overload)
        );
        assert_eq!(none.stats().dropped_full, 1);
    }

    #[test]
    fn r_fleet_2_idle_non_final_devices_age_out_final_ones_stay() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(10).with_idle(Duration::from_secs(30));
        f.record(secs(0), addr(1), &plain(1, DeviceState::Receiving, img))
            .expect("new");
        f.record(secs(0), addr(1), &plain(2, DeviceState::Done, img))
            .expect("new");
        f.record(secs(20), addr(1), &plain(3, DeviceState::Receiving, img))
            .expect("new");
        f.record(secs(31), addr(1), &plain(4, DeviceState::Listening, img))
            .expect("new");
        assert!(f.get(1).is_none(), "idle receiving device aged out");
        assert!(f.get(2).is_some(), "a final state does not age out");
        assert!(f.get(3).is_some(), "heard from within the idle time");
        assert_eq!(f.stats().aged_out, 1);
        assert_eq!(f.in_state(DeviceState::Receiving), 1);
    }

    #[test]
    fn r_stat_4_roster_devices_must_sign_and_only_they_count() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(10);
        f.set_roster(Roster::from([(1, *key(1).pk), (2, *key(2).pk)]));
        // Unsigned and wrongly signed reports for roster devices are dropped.
        assert_eq!(
            f.record(secs(0), addr(1), &plain(1, DeviceState::Done, img)),
            Err(DropReason::Unauthenticated)
        );
        assert_eq!(
            f.record(
                secs(0),
                addr(1),
                &report(2, DeviceState::Done, img, Some(1))
            ),
            Err(DropReason::Unauthenticated)
        );
        assert_eq!(f.stats().unsigned, 1);
        assert_eq!(f.stats().bad_signature, 1);
        assert_eq!(f.count(img, DeviceState::Done), 0);
        // A device outside the roster is shown, unauthenticated, and does not count.
        f.record(
            secs(0),
            addr(1),
            &report(3, DeviceState::Done, img, Some(3)),
        )
        .expect("shown");
        assert!(!f.get(3).expect("3").authenticated);
        assert_eq!(f.count(img, DeviceState::Done), 0);
        // The genuine signature counts.
        f.record(
            secs(1),
            addr(1),
            &report(1, DeviceState::Done, img, Some(1)),
        )
        .expect("genuine");
        assert!(f.get(1).expect("1").authenticated);
        assert_eq!(f.count(img, DeviceState::Done), 1);
        assert_eq!(f.authenticated(), 1);
        std::println!(
            "R-STAT-4: {} counted of {} shown; dropped {} unsigned, {} bad signature",
            f.count(img, DeviceState::Done),
            f.len(),
            f.stats().unsigned,
            f.stats().bad_signature
        );
    }

    #[test]
    fn r_fleet_4_an_outcome_stays_until_a_later_attempt_and_every_report_is_an_event() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(10);
        f.set_event_capacity(3);
        f.record(secs(0), addr(1), &plain(1, DeviceState::Refused, img))
            .expect("new");
        f.record(secs(1), addr(2), &plain(1, DeviceState::Listening, img))
            .expect("kept");
        let r = f.get(1).expect("1");
        assert_eq!(
            (r.state, r.last_seen, r.addr),
            (DeviceState::Refused, secs(1), addr(2))
        );
        assert_eq!(f.in_state(DeviceState::Refused), 1);
        f.record(secs(2), addr(2), &plain(1, DeviceState::Receiving, img))
            .expect("later attempt");
        assert_eq!(f.get(1).expect("1").state, DeviceState::Receiving);
        f.record(secs(3), addr(2), &plain(1, DeviceState::Done, img))
            .expect("queue full");
        assert_eq!(f.count_success(img), 1);
        let ev: Vec<_> = core::iter::from_fn(|| f.poll_event()).collect();
        let seen: Vec<_> = ev
            .iter()
            .map(|e| (e.old_state, e.new_state, e.changed()))
            .collect();
        assert_eq!(
            seen,
            [
                (None, DeviceState::Refused, true),
                (Some(DeviceState::Refused), DeviceState::Refused, false),
                (Some(DeviceState::Refused), DeviceState::Receiving, true),
            ]
        );
        assert_eq!(f.stats().events_dropped, 1);
        std::println!(
            "R-FLEET-4: refused kept over listening, replaced by receiving; {} events, {} dropped",
            ev.len(),
            f.stats().events_dropped
        );
    }

    #[test]
    fn r_fleet_3_a_flood_of_ids_never_evicts_a_roster_device() {
        let img = ImageId([1; 8]);
        let mut f = Fleet::new(100);
        f.set_roster(Roster::from([(1, *key(1).pk)]));
        f.record(
            secs(0),
            addr(1),
            &report(1, DeviceState::Done, img, Some(1)),
        )
        .expect("genuine");
        for id in 1000..1000 + 1000 {
            f.record(secs(1), addr(2), &plain(id, DeviceState::Done, img))
                .expect("evicts another forged id");
        }
        assert!(f.get(1).is_some_and(|r| r.authenticated));
        assert_eq!(f.len(), 101);
        assert_eq!(f.count(img, DeviceState::Done), 1);
        std::println!(
            "R-FLEET-3: 1000 forged ids into 100 places: {} evicted, roster device kept, {} counted done",
            f.stats().evicted,
            f.count(img, DeviceState::Done)
        );
        assert_eq!(f.stats().evicted, 900);
    }
}

//! Outcomes in the fleet table: which states are final, which count as
//! success, when a final state gives way (R-FLEET-4), and the
//! [`FleetEvent`] every accepted report produces for the operator's views
//! and records.

use core::net::SocketAddr;

use super::DeviceRecord;
use crate::time::Instant;
use crate::wire::DeviceState;

/// Whether a state is an outcome: the device will not move on from it in
/// this attempt (done and later, refused, failed, stalled). A state this
/// build does not know is not one (R-STAT-9): it is kept like a state that
/// still changes.
pub fn is_final(state: DeviceState) -> bool {
    matches!(
        state,
        DeviceState::Done
            | DeviceState::Refused
            | DeviceState::Failed
            | DeviceState::Activated
            | DeviceState::Confirmed
            | DeviceState::RolledBack
            | DeviceState::Stalled
    )
}

/// Whether a state means the image arrived intact: done, activated or
/// confirmed (what `--until-done` counts).
pub fn is_success(state: DeviceState) -> bool {
    matches!(
        state,
        DeviceState::Done | DeviceState::Activated | DeviceState::Confirmed
    )
}

/// R-FLEET-4: whether a report in state `new` replaces a recorded `old`.
/// A final state stays until another outcome or a report of a later
/// attempt (the device fetching, resuming, receiving or verifying again);
/// the `listening` a device reports after a refusal does not erase it, nor
/// does a state this build does not know (R-STAT-9).
pub fn replaces(old: DeviceState, new: DeviceState) -> bool {
    !is_final(old) || !matches!(new, DeviceState::Listening | DeviceState::Unknown(_))
}

/// One report the table accepted, as the operator's views and records see
/// it ([`super::Fleet::poll_event`]). Emitted for every accepted report, also
/// when nothing changed (`old_state == Some(new_state)`): a view that wants
/// only changes filters with [`FleetEvent::changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEvent {
    /// When the report arrived.
    pub at: Instant,
    /// The device it is about.
    pub device_id: u64,
    /// The address it came from.
    pub addr: SocketAddr,
    /// The recorded state before it; `None` for a device's first report.
    pub old_state: Option<DeviceState>,
    /// The recorded state after it (an outcome kept by R-FLEET-4 stays).
    pub new_state: DeviceState,
    /// The device's record after the report.
    pub record: DeviceRecord,
}

impl FleetEvent {
    /// Whether the recorded state changed (a first report is a change).
    pub fn changed(&self) -> bool {
        self.old_state != Some(self.new_state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ALL_STATES;

    #[test]
    fn r_fleet_4_only_listening_leaves_an_outcome_standing() {
        for old in ALL_STATES {
            for new in ALL_STATES {
                let expect = !is_final(old) || new != DeviceState::Listening;
                assert_eq!(replaces(old, new), expect, "{old:?} -> {new:?}");
            }
        }
        assert!(!replaces(DeviceState::Refused, DeviceState::Listening));
        assert!(!replaces(DeviceState::Stalled, DeviceState::Listening));
        assert!(replaces(DeviceState::Stalled, DeviceState::Resuming));
        assert!(replaces(DeviceState::Done, DeviceState::Activated));
        assert!(is_final(DeviceState::Stalled) && !is_success(DeviceState::Stalled));
        assert!(is_success(DeviceState::Activated) && !is_success(DeviceState::Failed));
    }

    #[test]
    fn r_stat_9_an_unknown_state_is_no_outcome_and_leaves_one_standing() {
        let unknown = DeviceState::Unknown(200);
        assert!(!is_final(unknown) && !is_success(unknown));
        for old in ALL_STATES {
            assert_eq!(replaces(old, unknown), !is_final(old), "{old:?}");
            assert!(replaces(unknown, old), "{old:?}");
        }
    }
}

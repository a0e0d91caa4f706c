//! The operator's record of the fleet (issue 16): every Status report that
//! `send`, `repair` and `status` record in their fleet table is also handed
//! to a [`Hub`], which feeds the SQLite fleet record (`--db`, see
//! [`writer`]) and the live fleet page (`--http`, see [`live`]).
//!
//! The hub is fed from the hot path: it never blocks and never waits on the
//! disk. It takes one report per `FleetEvent` the fleet table queues for an
//! accepted Status (`view::View::drain` hands each to [`Hub::take`]).

pub mod live;
pub mod query;
pub mod schema;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::fleet::{is_final, is_success, DeviceRecord, ALL_STATES};
use proto::wire::DeviceState;
use serde::Serialize;

use crate::cli::RecordArgs;
use crate::error::Error;

/// One Status report as the record keeps it: owned, with the wall-clock
/// time it arrived. `version` is the device's word: escape before printing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Milliseconds since the Unix epoch when the report arrived.
    pub at_ms: i64,
    /// The device id, 16 hex digits.
    pub device: String,
    /// The image id of the rollout the report is about, 16 hex digits.
    pub image_id: String,
    /// Where the report came from.
    pub addr: String,
    /// The device's state (`DeviceState`'s `Display`: `unknown(n)` for a value
    /// this build does not know, R-STAT-9).
    pub state: String,
    /// Why it refused or failed (`Reason`'s `Display`; `none` otherwise).
    pub reason: String,
    /// Blocks written and verified.
    pub blocks_done: u32,
    /// Blocks in the image.
    pub blocks_total: u32,
    /// The version the device runs.
    pub version: String,
    /// Signed with the key the roster holds for the device (R-STAT-4).
    pub authenticated: bool,
}

impl Report {
    /// A report from the fleet table's record of device `id`.
    pub fn from_record(id: u64, rec: &DeviceRecord, at_ms: i64) -> Report {
        Report {
            at_ms,
            device: format!("{id:016x}"),
            image_id: rec.image_id.to_string(),
            addr: rec.addr.to_string(),
            state: rec.state.to_string(),
            reason: rec.reason.to_string(),
            blocks_done: rec.blocks_done,
            blocks_total: rec.blocks_total,
            version: rec.version.as_str().to_string(),
            authenticated: rec.authenticated,
        }
    }
}

/// The names of the states `keep` selects, as the record stores them.
pub fn state_names(keep: fn(DeviceState) -> bool) -> Vec<&'static str> {
    ALL_STATES
        .iter()
        .copied()
        .filter(|s| keep(*s))
        .map(DeviceState::as_str)
        .collect()
}

/// Whether a state ends an attempt without the image (refused, failed,
/// stalled, rolled back).
pub fn ends_without_image(state: DeviceState) -> bool {
    is_final(state) && !is_success(state)
}

/// Whether a stored state means the device has the image.
pub fn has_image(state: &str) -> bool {
    state_names(is_success).contains(&state)
}

/// Whether a stored state ends an attempt without the image.
pub fn is_failure(state: &str) -> bool {
    state_names(ends_without_image).contains(&state)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where the reports a command receives go: the SQLite writer and the live
/// page, each only if asked for.
pub struct Hub {
    writer: Option<writer::Writer>,
    live: Option<Arc<live::Live>>,
}

impl Hub {
    /// Open `--db` and start `--http` as `args` ask; `tool` names the
    /// command (`send`, `repair`, `status`) in the record and on the page.
    pub fn start(args: &RecordArgs, tool: &'static str) -> Result<Hub, Error> {
        let writer = args
            .db
            .as_deref()
            .map(|p| writer::Writer::start(p, tool))
            .transpose()?;
        let live = match &args.http {
            Some(addr) => {
                let live = Arc::new(live::Live::new(tool));
                crate::http::serve(addr, Arc::clone(&live))?;
                Some(live)
            }
            None => None,
        };
        Ok(Hub { writer, live })
    }

    /// Whether `--db` or `--http` asked for reports (so callers build none
    /// for nobody).
    pub fn is_on(&self) -> bool {
        self.writer.is_some() || self.live.is_some()
    }

    /// Hand one accepted report to the record and the page.
    pub fn take(&self, report: Report) {
        if let Some(live) = &self.live {
            live.push(&report);
        }
        if let Some(w) = &self.writer {
            w.push(report);
        }
    }

    /// Tell the page what is being rolled out (shown in its header).
    pub fn set_rollout(&self, image_id: &str, what: &str) {
        if let Some(live) = &self.live {
            live.set_rollout(image_id, what);
        }
    }

    /// Commit what is queued, stop the writer and log what the record holds.
    pub fn finish(self) {
        if let Some(w) = self.writer {
            w.finish();
        }
    }
}

/// The database path, for messages.
pub(crate) fn show(path: &Path) -> String {
    path.display().to_string()
}

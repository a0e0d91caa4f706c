//! What the operator sees of the fleet while `send` or `status` runs, fed by
//! the fleet table's [`FleetEvent`]s:
//!
//! - stderr a TTY: a live table ([`table`]) redrawn at most 4 times a
//!   second with plain ANSI (cursor up, clear to end), problems on top;
//! - otherwise: one log line per change of a device's state;
//! - `--json`: one JSON object per line on stdout per change, then the
//!   command's summary object as the last line.
//!
//! At the end the table is printed once more (on a TTY it stays on screen).

pub mod expected;
pub mod table;

use crate::record::{unix_ms, Hub, Report};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use proto::fleet::{DeviceRecord, Fleet, FleetEvent};
use serde_json::{json, Value};

use crate::keys::hex;
use crate::report::printable;
use expected::Expected;

/// Shortest time between two redraws of the live table.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// Rows of the live table when the terminal's height is unknown.
const DEFAULT_ROWS: usize = 20;

/// A device's record as JSON (`--json` lines and summaries).
pub fn device_json(id: u64, r: &DeviceRecord) -> Value {
    json!({
        "device_id": format!("{id:016x}"),
        "addr": r.addr.to_string(),
        "state": r.state.to_string(),
        "blocks_done": r.blocks_done,
        "blocks_total": r.blocks_total,
        // serde_json escapes control characters itself (R-STAT-5).
        "version": r.version.as_str(),
        "reason": r.reason.to_string(),
        "image_id": hex(&r.image_id.0),
        "authenticated": r.authenticated,
        "last_seen": r.last_seen.as_micros() as f64 / 1e6,
    })
}

/// The JSON line of one event.
pub fn event_json(ev: &FleetEvent) -> Value {
    let mut v = device_json(ev.device_id, &ev.record);
    v["event"] = json!("change");
    v["at"] = json!(ev.at.as_micros() as f64 / 1e6);
    v["old_state"] = json!(ev.old_state.map(|s| s.to_string()));
    v
}

/// The operator's view of the fleet. See the module docs.
pub struct View {
    live: bool,
    json: bool,
    expected: Option<Expected>,
    max_rows: usize,
    last_draw: Option<std::time::Instant>,
    /// Lines of the last live drawing (to move back over them).
    drawn: usize,
}

impl View {
    /// A view on stderr (live when it is a TTY), JSON lines on stdout with `json`.
    pub fn new(json: bool, expected: Option<Expected>) -> Self {
        let rows = std::env::var("LINES")
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .map_or(DEFAULT_ROWS, |l| l.saturating_sub(4).max(5));
        View {
            live: std::io::stderr().is_terminal(),
            json,
            expected,
            max_rows: rows,
            last_draw: None,
            drawn: 0,
        }
    }

    /// Whether the live table is drawn (stderr is a TTY).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The devices expected (`--devices`).
    pub fn expected(&self) -> Option<&Expected> {
        self.expected.as_ref()
    }

    /// Take every event the fleet queued: each accepted report goes to the
    /// record and the page (`hub`), each change to this view.
    pub fn drain(&mut self, fleet: &mut Fleet, hub: &Hub) {
        while let Some(ev) = fleet.poll_event() {
            if hub.is_on() {
                hub.take(Report::from_record(ev.device_id, &ev.record, unix_ms()));
            }
            self.event(&ev);
        }
    }

    /// One accepted report.
    pub fn event(&mut self, ev: &FleetEvent) {
        if !ev.changed() {
            return;
        }
        if self.json {
            println!("{}", event_json(ev));
        }
        if !self.live {
            let r = &ev.record;
            log::info!(
                "device {:016x} at {}: {} -> {} ({}/{} blocks, version {}{})",
                ev.device_id,
                ev.addr,
                ev.old_state.map_or("new".to_string(), |s| s.to_string()),
                ev.new_state,
                r.blocks_done,
                r.blocks_total,
                printable(&r.version),
                match r.reason {
                    proto::wire::Reason::None => String::new(),
                    why => format!(", reason {why}"),
                }
            );
        }
    }

    /// Redraw the live table under `head` if one is due.
    pub fn tick(&mut self, fleet: &Fleet, now: proto::Instant, head: &str) {
        if !self.live || self.last_draw.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.draw(fleet, now, head);
    }

    fn draw(&mut self, fleet: &Fleet, now: proto::Instant, head: &str) {
        self.last_draw = Some(std::time::Instant::now());
        let text = format!(
            "{head}\n{}",
            table::render(fleet, self.expected.as_ref(), now, self.max_rows)
        );
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            // Back to the first line of the last drawing, clear to the end.
            let _ = write!(err, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
        self.drawn = text.lines().count();
    }

    /// The closing table: redrawn in full on a TTY, printed on stderr otherwise.
    pub fn finish(&mut self, fleet: &Fleet, now: proto::Instant, head: &str) {
        if self.live {
            self.max_rows = usize::MAX;
            self.draw(fleet, now, head);
        } else {
            eprint!(
                "{}",
                table::render(fleet, self.expected.as_ref(), now, usize::MAX)
            );
        }
    }
}

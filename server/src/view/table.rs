//! The device table of the live view and of the closing summary: one row
//! per device (and per expected device that never reported), problems on
//! top, then fleet totals and an ETA.

use std::time::Duration;

use proto::fleet::{is_final, is_success, DeviceRecord, Fleet};
use proto::wire::{DeviceState, Reason};

use super::expected::Expected;
use crate::report::{devices_line, printable};
use crate::rollout::ago;

/// A device that has not reported for this long while in a state that
/// still changes is shown as silent (devices report every second).
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

/// Sort key: failures first, success last.
fn rank(r: &DeviceRecord, silent: bool) -> u8 {
    match r.state {
        DeviceState::Failed => 0,
        DeviceState::Stalled => 1,
        DeviceState::RolledBack => 2,
        DeviceState::Refused => 3,
        _ if silent && !is_final(r.state) => 5,
        DeviceState::Listening => 7,
        s if is_success(s) => 8,
        _ => 6,
    }
}

/// Never-reported expected devices sort after failures, before the silent.
const NEVER_RANK: u8 = 4;

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    rank: u8,
    cells: [String; 7],
}

const HEADERS: [&str; 7] = [
    "device", "address", "state", "blocks", "version", "seen", "reason",
];

/// The rows, sorted so problems are on top.
pub fn rows(fleet: &Fleet, expected: Option<&Expected>, now: proto::Instant) -> Vec<Row> {
    let mut out: Vec<Row> = fleet
        .iter()
        .map(|(id, r)| {
            let since = now.saturating_since(r.last_seen);
            let silent = since >= SILENT_AFTER;
            let mut state = r.state.to_string();
            if silent && !is_final(r.state) {
                state.push_str(" (silent)");
            }
            if fleet.has_roster() && !r.authenticated {
                state.push_str(" (unauth)");
            }
            Row {
                rank: rank(r, silent),
                cells: [
                    format!("{id:016x}"),
                    r.addr.to_string(),
                    state,
                    format!("{}/{}", r.blocks_done, r.blocks_total),
                    // R-STAT-5: the device's word, escaped.
                    printable(&r.version),
                    format!("{} ago", ago(since)),
                    match r.reason {
                        Reason::None => String::new(),
                        why => why.to_string(),
                    },
                ],
            }
        })
        .collect();
    if let Some(e) = expected {
        for (entry, d) in e.resolve(fleet) {
            if d.is_none() {
                out.push(Row {
                    rank: NEVER_RANK,
                    cells: [
                        entry.label(),
                        String::new(),
                        "never reported".into(),
                        String::new(),
                        String::new(),
                        "-".into(),
                        String::new(),
                    ],
                });
            }
        }
    }
    out.sort_by(|a, b| (a.rank, &a.cells[0]).cmp(&(b.rank, &b.cells[0])));
    out
}

/// Rough time to go: for each device still receiving, its blocks to go at
/// its own pace so far; the slowest decides.
pub fn eta(fleet: &Fleet, now: proto::Instant) -> Option<Duration> {
    fleet
        .iter()
        .filter(|(_, r)| !is_final(r.state) && r.blocks_done > 0 && r.blocks_total > 0)
        .filter_map(|(_, r)| {
            let spent = r.last_seen.saturating_since(r.first_seen).as_secs_f64();
            let left = f64::from(r.blocks_total.saturating_sub(r.blocks_done));
            let per_block = spent / f64::from(r.blocks_done);
            let behind = now.saturating_since(r.last_seen).as_secs_f64();
            (spent > 0.0).then(|| Duration::from_secs_f64((left * per_block - behind).max(0.0)))
        })
        .max()
}

/// The totals line: devices by state, expected and never reported, ETA.
pub fn totals(fleet: &Fleet, expected: Option<&Expected>, now: proto::Instant) -> String {
    let mut line = devices_line(fleet);
    if let Some(e) = expected {
        let never = e.resolve(fleet).iter().filter(|(_, d)| d.is_none()).count();
        line.push_str(&format!("; {} expected, {never} never reported", e.len()));
    }
    if let Some(t) = eta(fleet, now) {
        line.push_str(&format!("; ETA {}", ago(t)));
    }
    line
}

/// The table as text: a header, at most `max_rows` rows (then a count of
/// the rest), and the totals line.
pub fn render(
    fleet: &Fleet,
    expected: Option<&Expected>,
    now: proto::Instant,
    max_rows: usize,
) -> String {
    let rows = rows(fleet, expected, now);
    let shown = &rows[..rows.len().min(max_rows)];
    let mut width = HEADERS.map(str::len);
    for r in shown {
        for (w, c) in width.iter_mut().zip(&r.cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 6 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADERS);
    for r in shown {
        out.push_str(&line(r.cells.each_ref().map(String::as_str)));
    }
    if rows.len() > shown.len() {
        out.push_str(&format!("... and {} more\n", rows.len() - shown.len()));
    }
    out.push_str(&totals(fleet, expected, now));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::{self, Frame, ImageId, Status};

    fn report(f: &mut Fleet, at: u64, id: u64, state: DeviceState, done: u32, reason: Reason) {
        let st = Status {
            device_id: id,
            state,
            blocks_done: done,
            blocks_total: 16,
            current_version: "1.0\u{1b}[2J",
            reason,
            write_kbps: 0,
            window_free: wire::WINDOW_FREE_NONE,
        };
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let n = wire::encode(1, ImageId([1; 8]), 0, &Frame::Status(st), &mut buf).expect("enc");
        let from = format!("127.0.0.1:{}", 4000 + id).parse().expect("addr");
        f.record(proto::Instant::from_micros(at * 1_000_000), from, &buf[..n])
            .expect("record");
    }

    #[test]
    fn problems_on_top_never_reported_shown_success_last_with_an_eta() {
        let mut f = Fleet::new(16);
        report(&mut f, 0, 1, DeviceState::Done, 16, Reason::None);
        report(&mut f, 0, 2, DeviceState::Receiving, 0, Reason::None);
        report(&mut f, 4, 2, DeviceState::Receiving, 4, Reason::None);
        report(&mut f, 4, 3, DeviceState::Failed, 3, Reason::TargetOpen);
        report(&mut f, 4, 4, DeviceState::Refused, 0, Reason::WrongBoard);
        let e = Expected::parse("0x1\n0x9\n", "t").expect("list");
        let now = proto::Instant::from_micros(4_000_000);
        let text = render(&f, Some(&e), now, 20);
        let order: Vec<&str> = text.lines().skip(1).map(|l| &l[..16]).collect();
        assert_eq!(
            &order[..5],
            [
                "0000000000000003",
                "0000000000000004",
                "0000000000000009",
                "0000000000000002",
                "0000000000000001"
            ],
            "{text}"
        );
        assert!(text.contains("target-open") && text.contains("never reported"));
        assert!(!text.contains('\u{1b}'), "escaped version: {text}");
        // Device 2: 4 blocks in 4 s, 12 to go.
        assert_eq!(eta(&f, now), Some(Duration::from_secs(12)));
        assert!(
            text.contains("2 expected, 1 never reported; ETA 12.0s"),
            "{text}"
        );
        println!("{text}");
    }
}

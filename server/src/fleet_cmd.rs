//! `firmcast fleet`: answer the operator's questions from the fleet record
//! (`--db`): which version each device runs (its latest report), who failed
//! and why, who never reported (`--devices`), across rollouts; as a table,
//! CSV or JSON.

use std::fmt::Write as _;

use serde_json::json;

use crate::cli::FleetArgs;
use crate::error::{config, runtime, Error, EXIT_OK};
use crate::record::query::{self, DeviceRow, RolloutRow};
use crate::record::{has_image, is_failure, schema, Report};
use crate::report::printable;
use crate::view::expected::{Entry, Expected};

/// Run `firmcast fleet`; returns the exit code.
pub fn run(args: &FleetArgs) -> Result<u8, Error> {
    for (flag, v) in [("--rollout", &args.rollout), ("--history", &args.history)] {
        if let Some(v) = v {
            if v.len() != 16 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(config(format!(
                    "{flag} {v}: expected 16 hex digits, as `firmcast fleet` prints ids"
                )));
            }
        }
    }
    let conn = schema::open(&args.db, false)?;
    let ctx = |e: rusqlite::Error| runtime(format!("reading {}: {e}", args.db.display()));
    if let Some(device) = &args.history {
        let changes = query::history(&conn, &device.to_ascii_lowercase()).map_err(ctx)?;
        print!("{}", history(device, &changes, args.json, args.csv));
        return Ok(EXIT_OK);
    }
    let mut devices = query::devices(&conn, args.rollout.as_deref()).map_err(ctx)?;
    let rollouts = query::rollouts(&conn).map_err(ctx)?;
    let reports = query::count(&conn).map_err(ctx)?;
    let wanted = args.devices.as_deref().map(Expected::load).transpose()?;
    let never: Vec<Entry> = wanted
        .iter()
        .flat_map(Expected::entries)
        .filter(|e| !devices.iter().any(|d| matches(e, d)))
        .cloned()
        .collect();
    // Problems first: failed or refused, then devices still on their way.
    devices.sort_by_key(|d| (rank(&d.latest.state), d.latest.device.clone()));
    if args.json {
        let rows: Vec<_> = devices
            .iter()
            .map(|d| {
                let mut v = json!(d);
                v["expected"] = json!(wanted
                    .as_ref()
                    .is_some_and(|w| w.entries().iter().any(|e| matches(e, d))));
                v
            })
            .collect();
        let obj = json!({
            "rollouts": rollouts,
            "devices": rows,
            "never_reported": never.iter().map(Entry::label).collect::<Vec<_>>(),
            "reports": reports,
        });
        println!("{obj}");
    } else if args.csv {
        print!("{}", csv(&devices, &never));
    } else {
        print!("{}", table(&rollouts, &devices, &never, reports));
    }
    Ok(EXIT_OK)
}

fn matches(e: &Entry, d: &DeviceRow) -> bool {
    let id = u64::from_str_radix(&d.latest.device, 16);
    let addr = d.latest.addr.parse::<std::net::SocketAddr>();
    matches!((id, addr), (Ok(id), Ok(addr)) if e.matches_report(id, addr))
}

fn rank(state: &str) -> u8 {
    if is_failure(state) {
        0
    } else if !has_image(state) {
        1
    } else {
        2
    }
}

/// The text report: rollouts, devices (problems first), the never-reported.
fn table(rollouts: &[RolloutRow], devices: &[DeviceRow], never: &[Entry], reports: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16}  {:<19}  {:<19}  {:>7}  {:>5}  {:>6}",
        "rollout", "first report (UTC)", "last report (UTC)", "devices", "done", "failed"
    );
    for r in rollouts {
        let _ = writeln!(
            out,
            "{:<16}  {:<19}  {:<19}  {:>7}  {:>5}  {:>6}",
            r.image_id,
            utc(r.first_ms),
            utc(r.last_ms),
            r.devices,
            r.done,
            r.failed
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16}  {:<21}  {:<11}  {:>11}  {:<12}  {:<19}  {:<16}  {:<19}",
        "device", "address", "state", "blocks", "version", "reason", "rollout", "last report (UTC)"
    );
    for d in devices {
        let r = &d.latest;
        let _ = writeln!(
            out,
            "{:<16}  {:<21}  {:<11}  {:>11}  {:<12}  {:<19}  {:<16}  {}",
            r.device,
            r.addr,
            r.state,
            format!("{}/{}", r.blocks_done, r.blocks_total),
            // R-STAT-5: the version is the device's word; escape it.
            printable(&r.version),
            r.reason,
            r.image_id,
            utc(r.at_ms)
        );
    }
    for e in never {
        let _ = writeln!(out, "{:<16}  never reported", e.label());
    }
    let failed = devices
        .iter()
        .filter(|d| is_failure(&d.latest.state))
        .count();
    let done = devices
        .iter()
        .filter(|d| has_image(&d.latest.state))
        .count();
    let _ = writeln!(
        out,
        "\n{} devices: {done} with the image, {failed} failed or refused, {} under way; {} never reported; {reports} reports in {} rollouts",
        devices.len(),
        devices.len() - done - failed,
        never.len(),
        rollouts.len()
    );
    out
}

/// One device's history as a table, CSV or JSON lines.
fn history(device: &str, changes: &[(Report, u64)], json: bool, csv: bool) -> String {
    let mut out = String::new();
    if csv {
        out.push_str(
            "time_utc,state,reason,blocks_done,blocks_total,version,image_id,address,reports\n",
        );
    } else if !json {
        let _ = writeln!(
            out,
            "{:<19}  {:<11}  {:<19}  {:>11}  {:<12}  {:<16}  {:<21}  {:>7}",
            "time (UTC)", "state", "reason", "blocks", "version", "rollout", "address", "reports"
        );
    }
    for (r, n) in changes {
        if json {
            let mut v = json!(r);
            v["reports"] = json!(n);
            let _ = writeln!(out, "{v}");
        } else if csv {
            let _ = writeln!(out, "{},{},{},{n}", utc(r.at_ms), csv_report(r), r.addr);
        } else {
            let _ = writeln!(
                out,
                "{:<19}  {:<11}  {:<19}  {:>11}  {:<12}  {:<16}  {:<21}  {n:>7}",
                utc(r.at_ms),
                r.state,
                r.reason,
                format!("{}/{}", r.blocks_done, r.blocks_total),
                printable(&r.version),
                r.image_id,
                r.addr
            );
        }
    }
    if changes.is_empty() && !json && !csv {
        let _ = writeln!(out, "no report from {device} in the record");
    }
    out
}

/// CSV, one row per device (and per expected device that never reported).
fn csv(devices: &[DeviceRow], never: &[Entry]) -> String {
    let mut out = String::from(
        "device,address,state,reason,blocks_done,blocks_total,version,image_id,first_report_utc,last_report_utc,reports,authenticated\n",
    );
    for d in devices {
        let r = &d.latest;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            r.device,
            r.addr,
            csv_report(r),
            utc(d.first_ms),
            utc(r.at_ms),
            d.reports,
            r.authenticated
        );
    }
    for e in never {
        let _ = writeln!(out, "{},,never-reported,,,,,,,,0,", e.label());
    }
    out
}

/// The report's `state,reason,blocks_done,blocks_total,version,image_id` columns.
fn csv_report(r: &Report) -> String {
    format!(
        "{},{},{},{},{},{}",
        r.state,
        r.reason,
        r.blocks_done,
        r.blocks_total,
        csv_field(&r.version),
        r.image_id
    )
}

/// A device-supplied CSV field: quoted, control characters escaped, and a
/// leading `= + - @` defused so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = printable(s);
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for milliseconds since the Unix epoch.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_474_073_000), "2026-12-05 12:34:33");
    }

    #[test]
    fn csv_fields_from_devices_are_defused() {
        assert_eq!(csv_field("2.1.0"), "\"2.1.0\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "\"'=cmd|' /C calc'!A0\"");
        assert_eq!(csv_field("a\"b\nc"), "\"a\"\"b\\nc\"");
    }
}

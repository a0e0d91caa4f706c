//! Questions asked of the fleet record: each device's latest report (what
//! it runs, where it is, why it failed), optionally within one rollout, and
//! the rollouts with their outcomes.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use proto::fleet::is_success;

use super::{ends_without_image, state_names, Report};

/// A device's latest report and how much the record knows about it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    /// Its latest report.
    #[serde(flatten)]
    pub latest: Report,
    /// When it first reported (in the rollout asked about, if any).
    pub first_ms: i64,
    /// How many reports the record holds for it.
    pub reports: u64,
}

/// A rollout (image id) and how its devices ended up.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRow {
    /// The image id.
    pub image_id: String,
    /// First and last report about it.
    pub first_ms: i64,
    /// Last report about it.
    pub last_ms: i64,
    /// Devices that reported about it.
    pub devices: u64,
    /// Of those, whose latest report about it is done, activated or confirmed.
    pub done: u64,
    /// Of those, whose latest report about it is refused, failed, stalled or rolled back.
    pub failed: u64,
}

/// `('a','b')` for an SQL `IN` (the states are our constants, not input).
fn sql_list(states: &[&str]) -> String {
    let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(","))
}

fn report(r: &Row<'_>) -> rusqlite::Result<Report> {
    Ok(Report {
        at_ms: r.get("at_ms")?,
        device: r.get("device")?,
        image_id: r.get("image_id")?,
        addr: r.get("addr")?,
        state: r.get("state")?,
        reason: r.get("reason")?,
        blocks_done: r.get("blocks_done")?,
        blocks_total: r.get("blocks_total")?,
        version: r.get("version")?,
        authenticated: r.get("authenticated")?,
    })
}

/// Each device's latest report, across rollouts or within `rollout`.
pub fn devices(conn: &Connection, rollout: Option<&str>) -> rusqlite::Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare(
        "SELECT r.*, m.first_ms, m.n FROM reports r
         JOIN (SELECT device, max(seq) AS s, min(at_ms) AS first_ms, count(*) AS n
               FROM reports WHERE ?1 IS NULL OR image_id = ?1 GROUP BY device) m
           ON r.seq = m.s
         ORDER BY r.device",
    )?;
    let rows = stmt.query_map(params![rollout], |r| {
        Ok(DeviceRow {
            latest: report(r)?,
            first_ms: r.get("first_ms")?,
            reports: r.get::<_, i64>("n")?.try_into().unwrap_or(0),
        })
    })?;
    rows.collect()
}

/// Every rollout, oldest first, with its devices' outcomes.
pub fn rollouts(conn: &Connection) -> rusqlite::Result<Vec<RolloutRow>> {
    let good = sql_list(&state_names(is_success));
    let bad = sql_list(&state_names(ends_without_image));
    let sql = format!(
        "SELECT o.image_id, o.first_ms, o.last_ms, count(r.device) AS devices,
                coalesce(sum(r.state IN {good}), 0) AS done,
                coalesce(sum(r.state IN {bad}), 0) AS failed
         FROM rollouts o
         LEFT JOIN (SELECT device, image_id, max(seq) AS s FROM reports
                    GROUP BY image_id, device) m ON m.image_id = o.image_id
         LEFT JOIN reports r ON r.seq = m.s
         GROUP BY o.image_id ORDER BY o.first_ms"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |r| {
        let n = |k: &str| r.get::<_, i64>(k).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(RolloutRow {
            image_id: r.get("image_id")?,
            first_ms: r.get("first_ms")?,
            last_ms: r.get("last_ms")?,
            devices: n("devices")?,
            done: n("done")?,
            failed: n("failed")?,
        })
    })?;
    rows.collect()
}

/// The reports of `device` at which its state, reason, version, rollout or
/// address changed, oldest first, each with the reports it stood for.
pub fn history(conn: &Connection, device: &str) -> rusqlite::Result<Vec<(Report, u64)>> {
    let mut stmt = conn.prepare("SELECT * FROM reports WHERE device = ?1 ORDER BY seq")?;
    let mut rows = stmt.query([device])?;
    let mut out: Vec<(Report, u64)> = Vec::new();
    while let Some(row) = rows.next()? {
        let r = report(row)?;
        match out.last_mut() {
            Some((last, n))
                if last.state == r.state
                    && last.reason == r.reason
                    && last.version == r.version
                    && last.image_id == r.image_id
                    && last.addr == r.addr =>
            {
                *n += 1;
            }
            _ => out.push((r, 1)),
        }
    }
    Ok(out)
}

/// Reports the record holds in all.
pub fn count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM reports", [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
}

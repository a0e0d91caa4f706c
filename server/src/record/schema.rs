//! The fleet record's SQLite schema and its migrations.
//!
//! The schema version is `PRAGMA user_version`: migration `i` (0-based) of
//! [`MIGRATIONS`] takes a database from version `i` to `i + 1`, each in its
//! own transaction. A database newer than this binary is refused rather than
//! written to. The journal is WAL with `synchronous = FULL`: a committed
//! transaction survives the process being killed and the host losing power.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use super::show;
use crate::error::{config, runtime, Error};

/// Migrations in order; never edit a released one, append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: devices, rollouts (image ids), and every report with its time.
    "CREATE TABLE devices (
         device     TEXT PRIMARY KEY,   -- 16 hex digits
         first_ms   INTEGER NOT NULL,
         last_ms    INTEGER NOT NULL
     );
     CREATE TABLE rollouts (
         image_id   TEXT PRIMARY KEY,   -- 16 hex digits
         first_ms   INTEGER NOT NULL,
         last_ms    INTEGER NOT NULL
     );
     CREATE TABLE reports (
         seq           INTEGER PRIMARY KEY,
         at_ms         INTEGER NOT NULL,
         device        TEXT NOT NULL REFERENCES devices(device),
         image_id      TEXT NOT NULL REFERENCES rollouts(image_id),
         tool          TEXT NOT NULL,   -- send, repair or status
         addr          TEXT NOT NULL,
         state         TEXT NOT NULL,
         reason        TEXT NOT NULL,
         blocks_done   INTEGER NOT NULL,
         blocks_total  INTEGER NOT NULL,
         version       TEXT NOT NULL,   -- as the device sent it
         authenticated INTEGER NOT NULL
     );
     CREATE INDEX reports_device ON reports(device, seq);
     CREATE INDEX reports_rollout ON reports(image_id, device, seq);",
];

/// How long a tool waits for another one's lock on the record.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Open (creating if `create`) the fleet record at `path`, in WAL mode and
/// migrated to the current schema.
pub fn open(path: &Path, create: bool) -> Result<Connection, Error> {
    if !create && !path.exists() {
        return Err(config(format!(
            "--db {}: no such fleet record (send, repair and status create it with --db)",
            show(path)
        )));
    }
    let ctx = |e: rusqlite::Error| runtime(format!("fleet record {}: {e}", show(path)));
    // A path that cannot be opened is the operator's to fix (exit 2).
    let mut conn =
        Connection::open(path).map_err(|e| config(format!("--db {}: {e}", show(path))))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(ctx)?;
    let mode = wal_mode(&conn).map_err(ctx)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(runtime(format!(
            "fleet record {}: cannot use WAL journal (got {mode})",
            show(path)
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(ctx)?;
    migrate(&mut conn).map_err(|e| match e {
        Migrate::Sql(e) => ctx(e),
        Migrate::TooNew(v) => config(format!(
            "fleet record {}: schema version {v} is newer than this firmcast knows ({}); use a newer firmcast",
            show(path),
            MIGRATIONS.len()
        )),
    })?;
    Ok(conn)
}

/// `PRAGMA journal_mode = WAL`, retried while another connection holds a
/// lock: the switch upgrades a read lock to an exclusive one, and there
/// SQLite returns SQLITE_BUSY at once instead of calling the busy handler
/// (waiting could deadlock), so tools started together on a new record
/// would fail. Bounded by [`BUSY_TIMEOUT`], like every other wait.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let until = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Why a migration failed.
#[derive(Debug)]
pub enum Migrate {
    /// SQLite refused a statement.
    Sql(rusqlite::Error),
    /// The database has this newer schema version.
    TooNew(usize),
}

impl From<rusqlite::Error> for Migrate {
    fn from(e: rusqlite::Error) -> Self {
        Migrate::Sql(e)
    }
}

/// Bring `conn` to the current schema; returns the version it had. Each
/// step reads the version and migrates under one write lock (`BEGIN
/// IMMEDIATE`), so tools started together on one record migrate it once.
pub fn migrate(conn: &mut Connection) -> Result<usize, Migrate> {
    let mut had = None;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let v = usize::try_from(v).unwrap_or(usize::MAX);
        had.get_or_insert(v);
        if v > MIGRATIONS.len() {
            return Err(Migrate::TooNew(v));
        }
        let Some(sql) = MIGRATIONS.get(v) else {
            return Ok(had.unwrap_or(v));
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(v + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("fleet.db");
        assert!(
            open(&path, false).is_err(),
            "a missing record is not created"
        );
        drop(open(&path, true).expect("test setup"));
        let mut conn = open(&path, false).expect("test setup");
        assert_eq!(migrate(&mut conn).expect("test setup"), MIGRATIONS.len());
        conn.pragma_update(None, "user_version", 99)
            .expect("test setup");
        drop(conn);
        let err = open(&path, false).expect_err("refused").to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn tools_started_together_migrate_one_record_once() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("fleet.db");
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || open(&p, true).map(drop))
            })
            .collect();
        for t in opened {
            assert_eq!(t.join().expect("thread"), Ok(()));
        }
    }
}

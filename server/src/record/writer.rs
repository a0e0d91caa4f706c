//! The fleet record's writer thread: reports come in through a bounded
//! channel from the hot path and go to SQLite in one transaction per
//! [`COMMIT_INTERVAL`].
//!
//! Acknowledged means committed: a report is acknowledged once the
//! transaction holding it has committed, and from then on it survives the
//! operator's tool being killed (and, with `synchronous = FULL`, the host
//! losing power). A report received at time t is committed by t +
//! [`COMMIT_INTERVAL`] + the time of one transaction, so `kill -9` loses at
//! most the reports of the last interval. The hot path never waits: when the
//! queue of [`QUEUE`] reports is full a report is counted as not recorded
//! (the summary says how many) rather than slowing the carousel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::{schema, show, Report};
use crate::error::{runtime, Error};

/// How long reports wait in the queue before their transaction commits.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(150);

/// Reports the queue holds: several seconds of a 2,000-device fleet
/// reporting every second, far more than one interval.
pub const QUEUE: usize = 16_384;

/// Counters shared with the hot path.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reports committed (acknowledged).
    pub committed: AtomicU64,
    /// Reports not recorded: the queue was full.
    pub queue_full: AtomicU64,
    /// Reports not recorded: their transaction failed.
    pub failed: AtomicU64,
}

/// The writer thread and its queue.
pub struct Writer {
    tx: SyncSender<Report>,
    thread: JoinHandle<()>,
    counters: Arc<Counters>,
    path: PathBuf,
}

impl Writer {
    /// Open the record at `path` (creating and migrating it) and start the
    /// thread; `tool` is stored with every report.
    pub fn start(path: &Path, tool: &'static str) -> Result<Writer, Error> {
        let conn = schema::open(path, true)?;
        let (tx, rx) = sync_channel::<Report>(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let shown = show(path);
        let thread = std::thread::Builder::new()
            .name("fleet-record".into())
            .spawn(move || {
                let mut conn = conn;
                let mut batch = Vec::new();
                let mut open = true;
                while open {
                    let due = Instant::now() + COMMIT_INTERVAL;
                    // Collect one interval's reports (or until the hub closes).
                    loop {
                        let left = due.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(r) => batch.push(r),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let n = batch.len() as u64;
                    match commit(&mut conn, tool, &batch) {
                        Ok(()) => c.committed.fetch_add(n, Ordering::SeqCst),
                        Err(e) => {
                            log::warn!("fleet record {shown}: {n} reports not recorded: {e}");
                            c.failed.fetch_add(n, Ordering::SeqCst)
                        }
                    };
                    batch.clear();
                }
            })
            .map_err(|e| runtime(format!("starting the fleet record writer: {e}")))?;
        log::info!(
            "recording every report in {} (committed every {} ms)",
            show(path),
            COMMIT_INTERVAL.as_millis()
        );
        Ok(Writer {
            tx,
            thread,
            counters,
            path: path.to_path_buf(),
        })
    }

    /// Queue a report; never blocks.
    pub fn push(&self, report: Report) {
        match self.tx.try_send(report) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::SeqCst);
            }
            // The thread ended (it never does on its own): count it lost.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The shared counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Commit the queue, stop the thread, and log what was recorded.
    pub fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            log::warn!("fleet record {}: the writer panicked", show(&self.path));
        }
        let c = &self.counters;
        let lost = c.queue_full.load(Ordering::SeqCst) + c.failed.load(Ordering::SeqCst);
        log::info!(
            "fleet record {}: {} reports committed{}",
            show(&self.path),
            c.committed.load(Ordering::SeqCst),
            if lost > 0 {
                format!(", {lost} not recorded (queue full or write failed)")
            } else {
                String::new()
            }
        );
    }
}

/// Write one batch in one transaction.
fn commit(conn: &mut Connection, tool: &str, batch: &[Report]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut dev = tx.prepare_cached(
            "INSERT INTO devices (device, first_ms, last_ms) VALUES (?1, ?2, ?2)
             ON CONFLICT(device) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
        )?;
        let mut roll = tx.prepare_cached(
            "INSERT INTO rollouts (image_id, first_ms, last_ms) VALUES (?1, ?2, ?2)
             ON CONFLICT(image_id) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
        )?;
        let mut rep = tx.prepare_cached(
            "INSERT INTO reports (at_ms, device, image_id, tool, addr, state, reason,
                                  blocks_done, blocks_total, version, authenticated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for r in batch {
            dev.execute(params![r.device, r.at_ms])?;
            roll.execute(params![r.image_id, r.at_ms])?;
            rep.execute(params![
                r.at_ms,
                r.device,
                r.image_id,
                tool,
                r.addr,
                r.state,
                r.reason,
                r.blocks_done,
                r.blocks_total,
                r.version,
                r.authenticated
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u32) -> Report {
        Report {
            at_ms: 1_000 + i64::from(n),
            device: format!("{:016x}", n % 3),
            image_id: "00112233445566ff".into(),
            addr: "127.0.0.1:4000".into(),
            state: "receiving".into(),
            reason: "none".into(),
            blocks_done: n,
            blocks_total: 100,
            version: "1.0\u{1b}[2J".into(),
            authenticated: false,
        }
    }

    #[test]
    fn every_queued_report_is_committed_by_finish() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("fleet.db");
        let w = Writer::start(&path, "status").expect("test setup");
        let start = Instant::now();
        let mut pushes = Vec::with_capacity(10_000);
        for n in 0..10_000 {
            let t = Instant::now();
            w.push(report(n));
            pushes.push(t.elapsed());
        }
        pushes.sort();
        let counters = Arc::clone(&w.counters);
        w.finish();
        let bytes: u64 = ["fleet.db", "fleet.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "10,000 reports committed in {:?}; push median {:?}, 99th percentile {:?} (max {:?}); {} bytes a report on disk",
            start.elapsed(),
            pushes[5_000],
            pushes[9_900],
            pushes[9_999],
            bytes / 10_000
        );
        assert_eq!(counters.committed.load(Ordering::SeqCst), 10_000);
        let conn = schema::open(&path, false).expect("test setup");
        let (rows, devices): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM reports), (SELECT count(*) FROM devices)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("test setup");
        assert_eq!((rows, devices), (10_000, 3));
    }
}

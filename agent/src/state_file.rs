//! The state file: one small JSON object (default
//! `/var/run/firmcast/state.json`, config key `state_file`, `""` = none)
//! that an LED daemon or a web UI reads. It is rewritten on every state
//! change of the run (and at most once a second for block progress), always
//! whole: written to a temporary file beside it, then renamed over it, so a
//! reader never sees half a file.
//!
//! ```json
//! {"state":"receiving","version":"2.1.0","current_version":"2.0.3","board":"acme,rt1",
//!  "blocks_done":12,"blocks_total":40,"exit":null,"reason":"","pid":312,"time":1764936000}
//! ```
//!
//! `state` is `starting`, then the receiver's (`listening`, `manifest`,
//! `resuming`, `receiving`, `verifying`, `done`, `refused`, `failed`), then at exit
//! the outcome: `exit` is the exit code and `reason` its word
//! ([`ExitCode::reason`]: `nothing-to-do`, `updated`, `stalled`, ...),
//! with `state` = `idle`, `updated` or `failed`.
//!
//! The writer is process-wide ([`install`] once at start): the receive loop
//! calls [`observe`] on every turn, the shell calls [`finish`] at exit, and
//! neither needs to carry it through the run's types.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::receiver::Receiver;

use crate::config::Config;
use crate::exit::ExitCode;
use crate::quote::quoted;

/// Where the state file goes when the config does not say.
pub const DEFAULT_STATE_FILE: &str = "/var/run/firmcast/state.json";

/// Block progress is written at most this often (state changes at once).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Receiver state, or the outcome at exit.
    pub state: String,
    /// The offered image's version, once its manifest is accepted.
    pub version: String,
    /// The running version.
    pub current_version: String,
    /// Board id.
    pub board: String,
    /// Blocks on flash.
    pub blocks_done: u32,
    /// Blocks of the image.
    pub blocks_total: u32,
    /// The exit code, at exit.
    pub exit: Option<i32>,
    /// Its word, at exit.
    pub reason: String,
}

impl Record {
    /// The JSON text (one line, keys in a fixed order).
    pub fn to_json(&self, pid: u32, time: u64) -> String {
        let exit = self
            .exit
            .map_or_else(|| "null".to_string(), |c| c.to_string());
        format!(
            "{{\"state\":{},\"version\":{},\"current_version\":{},\"board\":{},\"blocks_done\":{},\"blocks_total\":{},\"exit\":{exit},\"reason\":{},\"pid\":{pid},\"time\":{time}}}\n",
            quoted(&self.state),
            quoted(&self.version),
            quoted(&self.current_version),
            quoted(&self.board),
            self.blocks_done,
            self.blocks_total,
            quoted(&self.reason),
        )
    }
}

/// Write `text` to `path` atomically: a temporary file in the same
/// directory, then rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

struct Writer {
    /// `None`: no file (`state_file = ""`), the record is still kept.
    path: Option<PathBuf>,
    record: Record,
    written_at: Option<Instant>,
    failed: bool,
}

impl Writer {
    fn write(&mut self) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(path) = &self.path else {
            return;
        };
        match write_atomic(path, &self.record.to_json(std::process::id(), time)) {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                // Once per failure streak: the update does not depend on it.
                log::warn!("state file {}: {e}", path.display());
                self.failed = true;
            }
            Err(_) => {}
        }
        self.written_at = Some(Instant::now());
    }
}

static WRITER: OnceLock<Mutex<Writer>> = OnceLock::new();

/// Start the state file for `cfg` (no-op without one): create its directory
/// (as root: owned by the user the agent becomes, R-LOCAL-3, so the file can
/// still be replaced after the drop) and write `starting`.
pub fn install(cfg: &Config) {
    let path = cfg.state_file.clone();
    if let Some(dir) = path.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                log::warn!("state file: creating {}: {e}", dir.display());
            } else if crate::perms::running_as_root() {
                if let crate::privdrop::Plan::Drop(user) = crate::privdrop::plan_for(cfg) {
                    if let Ok((uid, gid)) = crate::privdrop::resolve(&user) {
                        let _ = nix::unistd::chown(dir, Some(uid), Some(gid));
                    }
                }
            }
        }
    }
    let mut w = Writer {
        path,
        record: Record {
            state: "starting".to_string(),
            current_version: cfg.current_version.clone(),
            board: cfg.board.clone(),
            ..Record::default()
        },
        written_at: None,
        failed: false,
    };
    w.write();
    let _ = WRITER.set(Mutex::new(w));
}

fn with_writer(f: impl FnOnce(&mut Writer)) {
    if let Some(m) = WRITER.get() {
        if let Ok(mut w) = m.lock() {
            f(&mut w);
        }
    }
}

/// One turn of the receive loop: rewrite the file if the receiver's state
/// or offered version changed, or its progress (at most once a second).
pub fn observe(rx: &Receiver) {
    with_writer(|w| {
        let state = rx.state().as_str();
        let version = rx.manifest().map(|m| m.version.as_str()).unwrap_or("");
        let blocks_done = rx.blocks_done();
        let changed = w.record.state != state || w.record.version != version;
        let progressed = w.record.blocks_done != blocks_done
            && w.written_at.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if !changed && !progressed {
            return;
        }
        w.record.state = state.to_string();
        w.record.version = version.to_string();
        w.record.blocks_done = blocks_done;
        w.record.blocks_total = rx.manifest().map_or(0, |m| m.block_count());
        w.write();
    });
}

/// The run is over with `code`: write the outcome.
pub fn finish(code: ExitCode) {
    with_writer(|w| {
        w.record.state = match code {
            ExitCode::Ok | ExitCode::Signal => "idle",
            ExitCode::Updated => "updated",
            _ => "failed",
        }
        .to_string();
        w.record.exit = Some(code.code());
        w.record.reason = code.reason().to_string();
        w.write();
    });
}

/// The offered image's version, once a manifest was accepted this run (for
/// the hooks' `FIRMCAST_VERSION`).
pub fn offered_version() -> Option<String> {
    let mut v = None;
    with_writer(|w| {
        if !w.record.version.is_empty() {
            v = Some(w.record.version.clone());
        }
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_escaped_and_complete() {
        let r = Record {
            state: "receiving".into(),
            version: "2.1\"x\\\n".into(),
            current_version: "2.0".into(),
            board: "acme,rt1".into(),
            blocks_done: 3,
            blocks_total: 9,
            exit: None,
            reason: String::new(),
        };
        let j = r.to_json(7, 100);
        assert_eq!(
            j,
            "{\"state\":\"receiving\",\"version\":\"2.1\\\"x\\\\\\n\",\"current_version\":\"2.0\",\"board\":\"acme,rt1\",\"blocks_done\":3,\"blocks_total\":9,\"exit\":null,\"reason\":\"\",\"pid\":7,\"time\":100}\n"
        );
        let done = Record {
            exit: Some(10),
            reason: "updated".into(),
            ..r
        };
        assert!(done
            .to_json(7, 100)
            .contains("\"exit\":10,\"reason\":\"updated\""));
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("fc-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("state.json");
        write_atomic(&p, "{\"a\":1}\n").expect("first");
        write_atomic(&p, "{\"b\":2}\n").expect("second");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "{\"b\":2}\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}

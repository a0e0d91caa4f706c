//! Logging for a daemon on a small device: syslog (RFC 3164 lines on the
//! `/dev/log` datagram socket) by default, stderr in `--foreground` mode or
//! when `/dev/log` is absent. No allocation beyond one line per message.
//!
//! Logging never blocks the agent (R-LOCAL-8): the syslog socket is
//! non-blocking, a line syslogd cannot take (queue full, syslogd gone) is
//! counted and the count goes out with the next line that is sent. A send
//! that fails for another reason than a full queue (syslogd restarted, so
//! the socket names a `/dev/log` that is gone) reconnects once and sends the
//! line again: at most one reconnect per line, never a loop. While
//! `/dev/log` stays absent, reconnects are tried at most once per
//! [`RECONNECT_EVERY`].
//!
//! Hand-written rather than the `syslog` crate (7.0): that crate brings 8
//! crates the agent does not link otherwise (syslog, hostname, time,
//! time-core, deranged, num-conv, num_threads, powerfmt) to the agent's 38
//! (`cargo tree -e normal --target armv7-unknown-linux-musleabihf`), for one
//! datagram per line.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The program name in syslog lines.
pub const IDENT: &str = "firmcast-agent";
/// syslog facility LOG_DAEMON.
const FACILITY_DAEMON: u8 = 3;
/// The syslog socket.
pub const DEV_LOG: &str = "/dev/log";
/// Least time between two attempts to reconnect to a vanished syslogd.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// stderr, with seconds.millis since start and the level.
    Stderr,
    /// syslog via `/dev/log`, falling back to stderr.
    Syslog,
}

/// The syslog severity of a log level.
pub fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whole milliseconds of `d` as a `u64`, for log lines and the config dump:
/// `Duration::as_millis` is a `u128`, and formatting one links core's
/// 128-bit division and printing into the device binary. Saturates (no
/// duration the agent logs comes near).
pub fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// One stderr line: `  12.345 INFO  message`.
pub fn format_stderr(elapsed: Duration, level: Level, msg: &str) -> String {
    format!(
        "{:>4}.{:03} {:<5} {msg}\n",
        elapsed.as_secs(),
        elapsed.subsec_millis(),
        level.as_str()
    )
}

/// One RFC 3164 datagram as syslogd takes it on `/dev/log`:
/// `<PRI>firmcast-agent[PID]: message` (syslogd adds time and host).
pub fn format_syslog(level: Level, pid: u32, msg: &str) -> String {
    let pri = FACILITY_DAEMON * 8 + severity(level);
    format!("<{pri}>{IDENT}[{pid}]: {msg}")
}

/// A non-blocking syslog client (R-LOCAL-8).
#[derive(Debug)]
pub struct Syslog {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    /// Lines not sent since the last line that was.
    dropped: u64,
    last_attempt: Option<Instant>,
    reconnect_every: Duration,
}

fn connect(path: &Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.set_nonblocking(true).ok()?;
    sock.connect(path).ok()?;
    Some(sock)
}

impl Syslog {
    /// Connect to the syslog socket at `path` (normally [`DEV_LOG`]);
    /// `None` when nothing listens there.
    pub fn connect(path: &Path, reconnect_every: Duration) -> Option<Syslog> {
        let sock = connect(path)?;
        Some(Syslog {
            path: path.to_path_buf(),
            sock: Some(sock),
            dropped: 0,
            last_attempt: None,
            reconnect_every,
        })
    }

    /// Lines counted as dropped and not reported yet.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Send one line, never waiting: a line that cannot go now is counted,
    /// and the count is appended to the next line that goes out.
    pub fn send(&mut self, line: &str) -> bool {
        let now = Instant::now();
        let mut reconnected = false;
        if self.sock.is_none()
            && self
                .last_attempt
                .is_none_or(|t| now.duration_since(t) >= self.reconnect_every)
        {
            self.reconnect(now);
            reconnected = true;
        }
        let mut r = self.try_send(line);
        // syslogd restarted: the socket names the old `/dev/log`. One
        // reconnect for this line; if that fails too the socket is dropped
        // and the timer above paces the next attempts.
        if matches!(&r, Err(e) if gone(e)) && self.sock.is_some() && !reconnected {
            self.reconnect(now);
            r = self.try_send(line);
        }
        match r {
            Ok(()) => {
                self.dropped = 0;
                true
            }
            Err(e) => {
                self.dropped += 1;
                if gone(&e) {
                    self.sock = None;
                }
                false
            }
        }
    }

    fn reconnect(&mut self, now: Instant) {
        self.last_attempt = Some(now);
        self.sock = connect(&self.path);
    }

    /// One `send` of `line`, with the count of dropped lines if any.
    fn try_send(&self, line: &str) -> std::io::Result<()> {
        let sock = self.sock.as_ref().ok_or(std::io::ErrorKind::NotConnected)?;
        if self.dropped > 0 {
            let with = format!(
                "{line} [{} earlier log line(s) dropped: syslog was busy or restarting]",
                self.dropped
            );
            sock.send(with.as_bytes())
        } else {
            sock.send(line.as_bytes())
        }
        .map(drop)
    }
}

/// Whether a send error means the socket is of no more use (anything but a
/// full queue).
fn gone(e: &std::io::Error) -> bool {
    e.kind() != std::io::ErrorKind::WouldBlock
}

enum Sink {
    Stderr,
    Syslog(Syslog),
}

struct Logger {
    start: Instant,
    pid: u32,
    sink: Mutex<Sink>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Sink::Syslog(syslog) = &mut *sink {
            syslog.send(&format_syslog(record.level(), self.pid, &msg));
            return;
        }
        let line = format_stderr(self.start.elapsed(), record.level(), &msg);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Install the global logger. Returns where lines actually go (syslog falls
/// back to stderr when `/dev/log` is absent). A second call changes nothing.
pub fn init(target: Target, verbose: bool) -> Target {
    let (sink, actual) = match target {
        Target::Syslog => match Syslog::connect(Path::new(DEV_LOG), RECONNECT_EVERY) {
            Some(s) => (Sink::Syslog(s), Target::Syslog),
            None => (Sink::Stderr, Target::Stderr),
        },
        Target::Stderr => (Sink::Stderr, Target::Stderr),
    };
    let logger = Logger {
        start: Instant::now(),
        pid: std::process::id(),
        sink: Mutex::new(sink),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
    actual
}

#[cfg(test)]
mod tests {
    use super::*;

    /// syslogd exits: its socket is shut down, not only closed here. A
    /// process another test forks at this instant holds a copy of every fd
    /// until its exec, and a closed copy leaves the socket taking lines.
    fn stop_syslogd(server: UnixDatagram) {
        server.shutdown(std::net::Shutdown::Both).expect("shutdown");
    }

    #[test]
    fn stderr_format_has_seconds_millis_and_level() {
        let l = format_stderr(
            Duration::from_millis(12_345),
            Level::Info,
            "resume: 3 of 8 blocks already on flash",
        );
        assert_eq!(l, "  12.345 INFO  resume: 3 of 8 blocks already on flash\n");
        let l = format_stderr(Duration::from_millis(7), Level::Warn, "x");
        assert_eq!(l, "   0.007 WARN  x\n");
        let l = format_stderr(Duration::from_secs(10_000), Level::Error, "y");
        assert_eq!(l, "10000.000 ERROR y\n");
    }

    #[test]
    fn syslog_format_is_rfc3164_for_dev_log() {
        assert_eq!(
            format_syslog(Level::Error, 42, "boom"),
            "<27>firmcast-agent[42]: boom"
        );
        assert_eq!(
            format_syslog(Level::Warn, 1, "w"),
            "<28>firmcast-agent[1]: w"
        );
        assert_eq!(
            format_syslog(Level::Info, 1, "i"),
            "<30>firmcast-agent[1]: i"
        );
        assert_eq!(
            format_syslog(Level::Debug, 1, "d"),
            "<31>firmcast-agent[1]: d"
        );
    }

    #[test]
    fn syslog_lines_reach_a_dev_log_socket() {
        // A stand-in for syslogd: bind a datagram socket and send to it the way the logger does.
        let dir = std::env::temp_dir().join(format!("fc-agent-log-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).expect("bind");
        let client = UnixDatagram::unbound().expect("unbound");
        client.connect(&path).expect("connect");
        let line = format_syslog(Level::Info, std::process::id(), "hello");
        client.send(line.as_bytes()).expect("send");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], line.as_bytes());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// R-LOCAL-8: a full syslog queue never blocks; the lines it could not
    /// take are counted and reported with the next line; a restarted
    /// syslogd is found again.
    #[test]
    fn syslog_never_blocks_counts_drops_and_reconnects() {
        let dir = std::env::temp_dir().join(format!("fc-agent-log8-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut log = Syslog::connect(&path, Duration::ZERO).expect("connect");
        // Nobody reads: the queue fills. A blocking socket would hang here.
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            let mut failed = 0u32;
            for i in 0..5_000 {
                if !log.send(&format!("line {i}")) {
                    failed += 1;
                }
            }
            let _ = tx.send(());
            (log, failed)
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("5,000 log lines into a full syslog queue must not block");
        let (mut log, failed) = sender.join().expect("join");
        assert!(failed > 0, "the queue never filled");
        assert_eq!(log.dropped(), u64::from(failed));
        // Drain, then the next line carries the count.
        server.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 512];
        while server.recv(&mut buf).is_ok() {}
        assert!(log.send("after"));
        let n = server.recv(&mut buf).expect("recv");
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            got.contains(&format!("[{failed} earlier log line(s) dropped")),
            "{got}"
        );
        println!(
            "syslog queue full: 5000 lines in without blocking, {failed} counted; next line: {got}"
        );
        // syslogd restarts: the old socket is gone, a new one is bound.
        stop_syslogd(server);
        std::fs::remove_file(&path).expect("rm");
        assert!(!log.send("while down"));
        let server = UnixDatagram::bind(&path).expect("rebind");
        assert!(log.send("back"), "did not reconnect");
        let n = server.recv(&mut buf).expect("recv");
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(got.starts_with("back [1 earlier"), "{got}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A syslogd restart between two lines loses neither: the send to the
    /// old socket fails and the one reconnect of that line finds the new
    /// one, however long the reconnect timer. While `/dev/log` is absent a
    /// line costs one failed reconnect at most (none within the timer).
    #[test]
    fn a_send_error_reconnects_once_for_that_line() {
        let dir = std::env::temp_dir().join(format!("firmcast-log-re-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log");
        let mut buf = [0u8; 512];
        let mut server = UnixDatagram::bind(&path).expect("bind");
        let hour = Duration::from_secs(3600);
        let mut log = Syslog::connect(&path, hour).expect("connect");
        assert!(log.send("one"));
        for round in 0..3 {
            stop_syslogd(server);
            std::fs::remove_file(&path).expect("rm");
            server = UnixDatagram::bind(&path).expect("rebind");
            let line = format!("after restart {round}");
            assert!(log.send(&line), "round {round}: line lost");
            let n = server.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..n], line.as_bytes());
        }
        // Down: this line's one reconnect fails and the socket is dropped...
        stop_syslogd(server);
        std::fs::remove_file(&path).expect("rm");
        let t0 = Instant::now();
        assert!(!log.send("down 0"));
        assert!(log.sock.is_none());
        // ...and within the hour no line tries again, even once it is back.
        let _server = UnixDatagram::bind(&path).expect("rebind");
        for i in 1..=1_000 {
            assert!(!log.send(&format!("down {i}")));
        }
        assert_eq!(log.dropped(), 1_001);
        println!(
            "syslogd restarted 3 times: 3 of 3 lines delivered; down: 1001 lines in {:?}, all counted",
            t0.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

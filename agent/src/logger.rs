//! Logging for a daemon on a small device: syslog (RFC 3164 lines on the
//! `/dev/log` datagram socket) by default, stderr in `--foreground` mode or
//! when `/dev/log` is absent. No allocation beyond one line per message.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The program name in syslog lines.
pub const IDENT: &str = "firmcast-agent";
/// syslog facility LOG_DAEMON.
const FACILITY_DAEMON: u8 = 3;

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

enum Sink {
    Stderr,
    Syslog(UnixDatagram),
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
        if let Sink::Syslog(sock) = &*sink {
            let line = format_syslog(record.level(), self.pid, &msg);
            if sock.send(line.as_bytes()).is_ok() {
                return;
            }
            // syslogd went away (or was restarted): keep the message, on stderr.
            *sink = Sink::Stderr;
        }
        let line = format_stderr(self.start.elapsed(), record.level(), &msg);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn connect_syslog() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect("/dev/log").ok()?;
    Some(sock)
}

/// Install the global logger. Returns where lines actually go (syslog falls
/// back to stderr when `/dev/log` is absent). A second call changes nothing.
pub fn init(target: Target, verbose: bool) -> Target {
    let (sink, actual) = match target {
        Target::Syslog => match connect_syslog() {
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
}

//! Running a board command: `activation = "command"`, the `[hooks]`, the
//! `confirm` health check and `reboot_command`. Each is an argv (no shell)
//! started with `posix_spawnp` (the program is looked up in `PATH` unless it
//! names a path), stdin on `/dev/null`, stdout and stderr inherited (they
//! land in the agent's log or console), killed after a timeout.
//!
//! The child starts the way std's `Command` would start it: no blocked
//! signals (the event loop blocks SIGTERM and SIGINT for its signalfd) and
//! SIGPIPE at its default action (Rust's runtime ignores it). std's
//! `Command` is not used: it links its fork/exec path, its pipes and an
//! environment map beside `posix_spawn`, all of which the agent never needs
//! (flash on the device build).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How often a running command is checked for having ended.
const POLL: Duration = Duration::from_millis(20);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// Exited with this status (0 = success).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Still running at the timeout; killed.
    TimedOut,
    /// Could not be started.
    SpawnFailed(String),
}

impl CommandResult {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        *self == CommandResult::Exited(0)
    }
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResult::Exited(c) => write!(f, "exit status {c}"),
            CommandResult::Signaled(s) => write!(f, "killed by signal {s}"),
            CommandResult::TimedOut => f.write_str("timed out (killed)"),
            CommandResult::SpawnFailed(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// Runs `argv` and waits for it, at most `timeout` (then kills it with
/// SIGKILL). `env` adds variables to the agent's environment, replacing
/// any of the same name.
pub fn run_command(argv: &[String], env: &[(&str, String)], timeout: Duration) -> CommandResult {
    let Some(prog) = argv.first() else {
        return CommandResult::SpawnFailed("empty command".into());
    };
    let pid = match spawn(argv, env) {
        Ok(pid) => pid,
        Err(e) => return CommandResult::SpawnFailed(format!("{prog}: {e}")),
    };
    let until = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return CommandResult::Exited(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return CommandResult::Signaled(signal as i32)
            }
            Ok(_) if Instant::now() >= until => {
                let _ = kill(pid, Signal::SIGKILL);
                reap(pid);
                return CommandResult::TimedOut;
            }
            Ok(_) | Err(Errno::EINTR) => std::thread::sleep(POLL),
            Err(e) => {
                return CommandResult::SpawnFailed(format!("{prog}: wait: {}", io(e)));
            }
        }
    }
}

/// Waits for a killed child so it leaves no zombie.
fn reap(pid: Pid) {
    while let Err(Errno::EINTR) = waitpid(pid, None) {}
}

/// Starts `argv` with the agent's environment plus `extra`.
fn spawn(argv: &[String], extra: &[(&str, String)]) -> Result<Pid, String> {
    let args = argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = environment(extra)?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let mut actions = PosixSpawnFileActions::init().map_err(io)?;
    actions.add_dup2(null.as_raw_fd(), 0).map_err(io)?;
    let mut attr = PosixSpawnAttr::init().map_err(io)?;
    attr.set_sigmask(&SigSet::empty()).map_err(io)?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default).map_err(io)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(io)?;
    posix_spawnp(&args[0], &actions, &attr, &args, &envp).map_err(io)
}

/// `NAME=value` for every variable of the agent's environment not in
/// `extra`, then those of `extra`.
fn environment(extra: &[(&str, String)]) -> Result<Vec<CString>, String> {
    let mut envp = Vec::new();
    let inherited = std::env::vars_os()
        .filter(|(name, _)| !extra.iter().any(|(e, _)| e.as_bytes() == name.as_bytes()));
    for (name, value) in inherited {
        envp.push(assignment(name.as_bytes(), value.as_bytes())?);
    }
    for (name, value) in extra {
        envp.push(assignment(name.as_bytes(), value.as_bytes())?);
    }
    Ok(envp)
}

fn assignment(name: &[u8], value: &[u8]) -> Result<CString, String> {
    let mut bytes = Vec::with_capacity(name.len() + 1 + value.len());
    bytes.extend_from_slice(name);
    bytes.push(b'=');
    bytes.extend_from_slice(value);
    c_string(&bytes)
}

fn c_string(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| {
        format!(
            "{:?} contains a NUL byte",
            String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or_default())
        )
    })
}

/// The errno as std prints it ("No such file or directory (os error 2)"),
/// not nix's own table of names.
fn io(e: Errno) -> String {
    std::io::Error::from(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()]
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn commands_report_status_signal_and_timeout() {
        assert_eq!(run_command(&sh("exit 0"), &[], T), CommandResult::Exited(0));
        assert_eq!(run_command(&sh("exit 3"), &[], T), CommandResult::Exited(3));
        assert_eq!(
            run_command(&sh("kill -9 $$"), &[], T),
            CommandResult::Signaled(9)
        );
        let started = Instant::now();
        assert_eq!(
            run_command(&sh("sleep 5"), &[], Duration::from_millis(100)),
            CommandResult::TimedOut
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "killed, not waited for"
        );
        let r = run_command(&["/nonexistent/cmd".to_string()], &[], T);
        assert!(
            matches!(&r, CommandResult::SpawnFailed(e)
                if e.contains("/nonexistent/cmd") && e.contains("No such file or directory")),
            "{r:?}"
        );
        assert!(matches!(
            run_command(&[], &[], T),
            CommandResult::SpawnFailed(_)
        ));
    }

    #[test]
    fn environment_is_inherited_with_the_extra_variables_on_top() {
        // PATH comes from the agent's environment; X is added; HOME replaced.
        assert_eq!(
            run_command(
                &sh("test -n \"$PATH\" && test \"$X\" = y && test \"$HOME\" = /nowhere"),
                &[("X", "y".into()), ("HOME", "/nowhere".into())],
                T
            ),
            CommandResult::Exited(0)
        );
        let homes = environment(&[("HOME", "/nowhere".into())]).expect("env");
        let homes = homes
            .iter()
            .filter(|a| a.as_bytes().starts_with(b"HOME="))
            .count();
        assert_eq!(homes, 1, "one HOME, the replaced one");
    }

    #[test]
    fn program_is_looked_up_in_path() {
        assert_eq!(
            run_command(&["sh".to_string(), "-c".into(), "exit 7".into()], &[], T),
            CommandResult::Exited(7)
        );
    }

    #[test]
    fn child_starts_with_stdin_empty_sigpipe_default_and_nothing_blocked() {
        // stdin is /dev/null, whatever the agent's is: with this process's
        // stdin a pipe holding a line, the child's `read` still sees end of
        // file. (fd 0 is process-wide; no other test reads it.)
        let saved = nix::unistd::dup(std::io::stdin()).expect("dup stdin");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        nix::unistd::write(&w, b"a line\n").expect("write");
        drop(w);
        nix::unistd::dup2_stdin(&r).expect("stdin = pipe");
        let read = run_command(&sh("read line; test $? -ne 0"), &[], T);
        nix::unistd::dup2_stdin(&saved).expect("stdin restored");
        assert_eq!(read, CommandResult::Exited(0));
        // No signal blocked although this thread blocks one (as the event
        // loop does for its signalfd): SigBlk in /proc/self/status is zero.
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        usr1.thread_block().expect("block SIGUSR1");
        assert_eq!(
            run_command(
                &sh("grep -q '^SigBlk:[[:space:]]*0*$' /proc/self/status"),
                &[],
                T
            ),
            CommandResult::Exited(0)
        );
        // SIGPIPE at its default although Rust's runtime ignores it here:
        // SigIgn has not bit 13 (mask 0x1000).
        assert_eq!(
            run_command(
                &sh("ign=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status); test $(( 0x$ign & 0x1000 )) -eq 0"),
                &[],
                T
            ),
            CommandResult::Exited(0)
        );
    }

    #[test]
    fn a_nul_byte_is_a_spawn_error_not_a_panic() {
        let r = run_command(&["/bin/true".to_string(), "a\0b".to_string()], &[], T);
        assert!(
            matches!(&r, CommandResult::SpawnFailed(e) if e.contains("NUL")),
            "{r:?}"
        );
        let r = run_command(&["/bin/true".to_string()], &[("X", "a\0b".into())], T);
        assert!(matches!(&r, CommandResult::SpawnFailed(_)), "{r:?}");
    }
}

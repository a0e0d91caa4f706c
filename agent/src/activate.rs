//! Activation: making a written, verified image the one that boots.
//!
//! ```text
//!  in-place   header block invalidated first, written last (run.rs, writer)
//!  none       nothing: the board's own scripts switch
//!  ab-uboot   before receiving: read the env, pick the inactive slot as target
//!             after verify: ONE env write  slot_var=<new>  upgrade_available=1
//!                                          bootcount=0      activated_var=<new>
//!  command    after verify: run argv ({image} {size} {version}), with a timeout
//! ```
//!
//! The env write goes to the inactive copy of a redundant environment
//! (`flasher::uboot_env`), so a power cut leaves either the old slot choice
//! or the new one, never a mix. U-Boot's bootcount (`bootlimit`,
//! `altbootcmd`) then falls back to the old slot if the new one does not
//! boot; `firmcast-agent confirm` (confirm.rs) disarms that once healthy.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::Path;

use flasher::uboot_env::{EnvConfig, EnvError, UbootEnv};
use flasher::{Error, Flash, Geometry, ReadStatus};

use crate::config::{AbConfig, ConfigError};

/// R-LOCAL-5: a single-copy environment is refused unless the config says
/// `ab.allow_single_copy_env = true`. Saving one copy erases it before
/// writing it: a power cut in between leaves no valid environment, and the
/// board boots U-Boot's built-in default (the slot choice and the bootcount
/// rollback are gone). The error names the config file, the key and the
/// environment's device.
pub fn check_env_copies(
    config_file: &Path,
    ab: &AbConfig,
    env: &EnvConfig,
) -> Result<(), ConfigError> {
    if env.redundant() || ab.allow_single_copy_env {
        return Ok(());
    }
    let device = env
        .copies
        .first()
        .map_or_else(|| "(none)".to_string(), |l| l.describe());
    Err(ConfigError {
        file: config_file.to_path_buf(),
        key: Some("ab.allow_single_copy_env".to_string()),
        line: None,
        message: format!(
            "{} describes a single-copy U-Boot environment ({device}): a power cut while it is saved can leave no valid environment (the board then boots U-Boot's built-in default); add a second copy to {} or set ab.allow_single_copy_env = true to accept that",
            ab.env_config.display(),
            ab.env_config.display()
        ),
    })
}

/// One of the two A/B slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `A` or `B`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// The slot's target spec.
    pub fn target(self, ab: &AbConfig) -> &str {
        match self {
            Slot::A => &ab.slot_a,
            Slot::B => &ab.slot_b,
        }
    }

    /// The slot variable's value for this slot.
    pub fn value(self, ab: &AbConfig) -> &str {
        match self {
            Slot::A => &ab.slot_a_value,
            Slot::B => &ab.slot_b_value,
        }
    }

    /// The slot a value names, if any.
    pub fn from_value(ab: &AbConfig, v: &str) -> Option<Slot> {
        if v == ab.slot_a_value {
            Some(Slot::A)
        } else if v == ab.slot_b_value {
            Some(Slot::B)
        } else {
            None
        }
    }
}

/// The running slot according to the environment. A missing slot variable
/// means slot A (a board fresh from the factory, before its first update);
/// an unknown value is an error naming it.
pub fn active_slot<F: Flash>(env: &UbootEnv<F>, ab: &AbConfig) -> Result<Slot, String> {
    match env.get(&ab.slot_var) {
        None => Ok(Slot::A),
        Some(v) => Slot::from_value(ab, v).ok_or_else(|| {
            format!(
                "U-Boot variable {}={v:?} names neither slot A ({:?}) nor slot B ({:?})",
                ab.slot_var, ab.slot_a_value, ab.slot_b_value
            )
        }),
    }
}

/// Whether a previous update still waits for its confirmation
/// (`upgrade_available=1`): the inactive slot is then the fallback, and must
/// not be overwritten.
pub fn pending_confirmation<F: Flash>(env: &UbootEnv<F>, ab: &AbConfig) -> bool {
    env.get(&ab.upgrade_available_var) == Some("1")
}

/// The variables one activation sets, in the order they are logged.
pub fn activation_vars(ab: &AbConfig, new: Slot) -> Vec<(String, String)> {
    vec![
        (ab.slot_var.clone(), new.value(ab).to_string()),
        (ab.upgrade_available_var.clone(), "1".to_string()),
        (ab.bootcount_var.clone(), "0".to_string()),
        (ab.activated_var.clone(), new.value(ab).to_string()),
    ]
}

/// Flips the environment to `new` in one write (or, with `dry_run`, says
/// what it would write), raising the anti-rollback floor to `min_version`
/// in the same write (R-ROLL-2). Returns the log line.
pub fn activate_ab<F: Flash>(
    env: &mut UbootEnv<F>,
    ab: &AbConfig,
    new: Slot,
    min_version: &str,
    dry_run: bool,
) -> Result<String, EnvError> {
    let mut vars = activation_vars(ab, new);
    if crate::floor::raises(env.get(crate::floor::ENV_VAR).unwrap_or(""), min_version) {
        vars.push((crate::floor::ENV_VAR.to_string(), min_version.to_string()));
    }
    let list: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for (k, v) in &vars {
        env.set(k, v)?;
    }
    let plan = env.plan();
    if dry_run {
        return Ok(format!(
            "dry run: would set {} ({plan}); nothing written",
            list.join(" ")
        ));
    }
    crate::phase::mark(format_args!("environment save ({plan})"));
    env.save()?;
    crate::phase::mark(format_args!("environment saved"));
    Ok(format!(
        "activated slot {} ({}): {} ({plan})",
        new.name(),
        new.target(ab),
        list.join(" ")
    ))
}

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

/// `argv` with `{image}`, `{size}` and `{version}` replaced.
pub fn expand(argv: &[String], image: &str, size: u64, version: &str) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{image}", image)
                .replace("{size}", &size.to_string())
                .replace("{version}", version)
        })
        .collect()
}

/// Runs `argv` (no shell), stdin closed, output inherited (it lands in the
/// agent's log or console), killed after `timeout`. `env` adds variables.
pub fn run_command(argv: &[String], env: &[(&str, String)], timeout: Duration) -> CommandResult {
    use std::os::unix::process::ExitStatusExt;
    let Some((prog, args)) = argv.split_first() else {
        return CommandResult::SpawnFailed("empty command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return CommandResult::SpawnFailed(format!("{prog}: {e}")),
    };
    let until = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return match (st.code(), st.signal()) {
                    (Some(c), _) => CommandResult::Exited(c),
                    (None, Some(s)) => CommandResult::Signaled(s),
                    (None, None) => CommandResult::Exited(-1),
                }
            }
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return CommandResult::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return CommandResult::SpawnFailed(format!("{prog}: wait: {e}")),
        }
    }
}

/// For `--dry-run`: a [`Flash`] that reads the real target but only counts
/// erases and writes (nothing touches the medium).
#[derive(Debug)]
pub struct DryRunFlash<F> {
    inner: F,
    /// Erases that would have happened.
    pub erases: u64,
    /// Writes that would have happened.
    pub writes: u64,
    /// Bytes that would have been written.
    pub bytes: u64,
}

impl<F: Flash> DryRunFlash<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        DryRunFlash {
            inner,
            erases: 0,
            writes: 0,
            bytes: 0,
        }
    }
}

#[cfg(test)]
impl DryRunFlash<crate::resume::tests::MemFlash> {
    /// The wrapped memory flash saw no write.
    pub fn inner_untouched(&self) -> bool {
        self.inner.writes.is_empty() && self.inner.bytes.iter().all(|&b| b == 0xFF)
    }
}

impl<F: Flash> Flash for DryRunFlash<F> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        self.inner.read(offset, buf)
    }
    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        log::debug!("dry run: would erase eraseblock {block}");
        self.erases += 1;
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        log::debug!("dry run: would write {} bytes at {offset:#x}", data.len());
        self.writes += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }
    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        self.inner.is_bad(block)
    }
    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        log::info!("dry run: would mark eraseblock {block} bad");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R-LOCAL-5: one copy is refused (naming file, key and device) unless allowed.
    #[test]
    fn single_copy_environment_needs_explicit_consent() {
        use flasher::uboot_env::parse_fw_env_config;
        let mut ab = crate::config::AbConfig {
            slot_a: "mtd:a".into(),
            slot_b: "mtd:b".into(),
            slot_var: "boot_slot".into(),
            slot_a_value: "a".into(),
            slot_b_value: "b".into(),
            upgrade_available_var: "upgrade_available".into(),
            bootcount_var: "bootcount".into(),
            activated_var: "firmcast_activated".into(),
            env_config: "/etc/fw_env.config".into(),
            env_endian: crate::config::EnvEndian::Native,
            allow_single_copy_env: false,
        };
        let cfg = Path::new("/etc/firmcast/agent.toml");
        let single = parse_fw_env_config("fw_env.config", "/dev/mtd3 0x0 0x10000 0x10000\n")
            .expect("single");
        let e = check_env_copies(cfg, &ab, &single).expect_err("one copy");
        let msg = e.to_string();
        for part in [
            "/etc/firmcast/agent.toml",
            "ab.allow_single_copy_env",
            "/dev/mtd3",
            "power cut",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
        println!("single-copy environment refused: {msg}");
        let two = parse_fw_env_config(
            "fw_env.config",
            "/dev/mtd3 0x0 0x10000 0x10000\n/dev/mtd3 0x10000 0x10000 0x10000\n",
        )
        .expect("redundant");
        check_env_copies(cfg, &ab, &two).expect("two copies");
        ab.allow_single_copy_env = true;
        check_env_copies(cfg, &ab, &single).expect("allowed explicitly");
    }

    #[test]
    fn expand_replaces_placeholders() {
        let argv = vec![
            "/sbin/sysupgrade".to_string(),
            "-n".to_string(),
            "{image}".to_string(),
            "len={size},v={version}".to_string(),
        ];
        assert_eq!(
            expand(&argv, "/tmp/fw.img", 42, "2.0"),
            ["/sbin/sysupgrade", "-n", "/tmp/fw.img", "len=42,v=2.0"]
        );
    }

    #[test]
    fn commands_report_status_signal_and_timeout() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        let t = Duration::from_secs(5);
        assert_eq!(run_command(&sh("exit 0"), &[], t), CommandResult::Exited(0));
        assert_eq!(run_command(&sh("exit 3"), &[], t), CommandResult::Exited(3));
        assert_eq!(
            run_command(&sh("test \"$X\" = y"), &[("X", "y".into())], t),
            CommandResult::Exited(0)
        );
        assert_eq!(
            run_command(&sh("kill -9 $$"), &[], t),
            CommandResult::Signaled(9)
        );
        assert_eq!(
            run_command(&sh("sleep 5"), &[], Duration::from_millis(100)),
            CommandResult::TimedOut
        );
        let r = run_command(&["/nonexistent/cmd".to_string()], &[], t);
        assert!(
            matches!(&r, CommandResult::SpawnFailed(e) if e.contains("/nonexistent/cmd")),
            "{r:?}"
        );
    }
}

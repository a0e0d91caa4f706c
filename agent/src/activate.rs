//! Activation: making a written, verified image the one that boots.
//!
//! ```text
//!  in-place   header block invalidated first, written last (run/shell/flash.rs, writer)
//!  none       nothing: the board's own scripts switch
//!  ab-uboot   before receiving: read the env, pick the inactive slot as target
//!             after verify: ONE env write  slot_var=<new>  upgrade_available=1
//!                                          bootcount=0      activated_var=<new>
//!  command    after verify: run argv ({image} {size} {version}), with a timeout
//! ```
//!
//! The slot decisions are `flasher::ab`'s; this module gives them the
//! configured variables and saves. The env write goes to the inactive copy
//! of a redundant environment (`flasher::uboot_env`), so a power cut leaves
//! either the old slot choice or the new one, never a mix. U-Boot's bootcount (`bootlimit`,
//! `altbootcmd`) then falls back to the old slot if the new one does not
//! boot; `firmcast-agent confirm` (confirm.rs) disarms that once healthy.

use std::path::{Path, PathBuf};

use flasher::ab::{AbError, Policy, Slot};
use flasher::uboot_env::{EnvConfig, UbootEnv};
use flasher::{Error, Flash, Geometry, ReadStatus};

use crate::config::schema::key;
use crate::config::{AbConfig, ConfigError, ConfigFault};
use crate::floor;
use crate::spawn::CommandResult;

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
    Err(ConfigFault {
        file: config_file.to_path_buf(),
        key: Some(key::ab::allow_single_copy_env.to_string()),
        line: None,
        message: format!(
            "{} describes a single-copy U-Boot environment ({device}): a power cut while it is saved can leave no valid environment (the board then boots U-Boot's built-in default); add a second copy to {} or set {} = true to accept that",
            ab.env_config.display(),
            ab.env_config.display(),
            key::ab::allow_single_copy_env,
        ),
    }
    .into())
}

/// The A/B policy ([`flasher::ab`]) over `ab`'s variables and slot values.
pub fn policy(ab: &AbConfig) -> Policy<'_> {
    Policy {
        slot_var: &ab.slot_var,
        slot_values: [&ab.slot_a_value, &ab.slot_b_value],
        upgrade_available_var: &ab.upgrade_available_var,
        bootcount_var: &ab.bootcount_var,
        activated_var: &ab.activated_var,
    }
}

/// The target spec of `slot`.
pub fn slot_target(ab: &AbConfig, slot: Slot) -> &str {
    slot.pick([&ab.slot_a, &ab.slot_b])
}

/// Flips the environment from `new`'s other slot to `new` in one write (or,
/// with `dry_run`, says what it would write), raising the anti-rollback
/// floor to `min_version` in the same write (R-ROLL-2). Returns the log line.
pub fn activate_ab<F: Flash>(
    env: &mut UbootEnv<F>,
    ab: &AbConfig,
    new: Slot,
    min_version: &str,
    dry_run: bool,
) -> Result<String, AbError> {
    let p = policy(ab);
    let raise = floor::raises(env.get(floor::ENV_VAR).unwrap_or(""), min_version);
    let extra: &[(&str, &str)] = if raise {
        &[(floor::ENV_VAR, min_version)]
    } else {
        &[]
    };
    p.stage_activation(env, new.other(), new, extra)?;
    let list: Vec<String> = p
        .activation_vars(new)
        .iter()
        .chain(extra)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
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
        slot_target(ab, new),
        list.join(" ")
    ))
}

/// Why an activation failed: the activator's error, naming the file,
/// command or variable at fault.
#[derive(Debug)]
pub enum ActivationError {
    /// `ab-uboot`: the environment `env_config` describes.
    Ab {
        /// The fw_env.config.
        env_config: PathBuf,
        /// What went wrong there (boxed: it carries the flash error).
        error: Box<AbError>,
    },
    /// `command`: the command did not succeed.
    Command {
        /// The command as run.
        argv: Vec<String>,
        /// How it ended.
        result: CommandResult,
    },
    /// `command`: the `file:` target could not be cut to the image length.
    Trim {
        /// The target file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The update finished without a manifest (a bug).
    NoManifest,
}

impl ActivationError {
    /// An A/B error on `ab`'s environment.
    pub fn ab(ab: &AbConfig, error: impl Into<AbError>) -> Self {
        ActivationError::Ab {
            env_config: ab.env_config.clone(),
            error: Box::new(error.into()),
        }
    }
}

impl std::fmt::Display for ActivationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivationError::Ab { env_config, error } => {
                write!(f, "{error} (environment of {})", env_config.display())
            }
            ActivationError::Command { argv, result } => write!(f, "command {argv:?}: {result}"),
            ActivationError::Trim { path, error } => write!(
                f,
                "truncating {} to the image length: {error}",
                path.display()
            ),
            ActivationError::NoManifest => f.write_str("no manifest"),
        }
    }
}

impl std::error::Error for ActivationError {}

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
pub(crate) mod tests {
    use super::*;

    /// The default variables, slots `mem:a` and `mem:b`, environment at
    /// `/etc/fw_env.config`, one copy not allowed.
    pub(crate) fn ab_config() -> AbConfig {
        AbConfig {
            slot_a: "mem:a".into(),
            slot_b: "mem:b".into(),
            slot_var: "boot_slot".into(),
            slot_a_value: "a".into(),
            slot_b_value: "b".into(),
            upgrade_available_var: "upgrade_available".into(),
            bootcount_var: "bootcount".into(),
            activated_var: "firmcast_activated".into(),
            env_config: "/etc/fw_env.config".into(),
            env_endian: crate::config::EnvEndian::Native,
            allow_single_copy_env: false,
        }
    }

    /// R-LOCAL-5: one copy is refused (naming file, key and device) unless allowed.
    #[test]
    fn single_copy_environment_needs_explicit_consent() {
        use flasher::uboot_env::parse_fw_env_config;
        let mut ab = ab_config();
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
}

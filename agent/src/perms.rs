//! R-LOCAL-1: as root, the agent trusts only files that root alone can
//! change (sshd's `StrictModes`). Whoever can write the config, the public
//! key, the device id, the version file, the anti-rollback floor file or the
//! environment description, or swap a directory above a `file:` target,
//! could otherwise steer a root daemon that writes flash (a writable floor
//! file lowers the floor and lets an older signed image be replayed).
//!
//! ```text
//!  file       owner root, not writable by group or others
//!  directory  the same, or root's and sticky (like /tmp: others cannot
//!             rename or remove what root put there)
//! ```
//!
//! Every directory from `/` down to the file is checked. [`refusal`] is the
//! pure rule; [`check_config`] applies it to everything a [`Config`] names.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::schema::key;
use crate::config::{Config, ConfigError, ConfigFault};
use crate::device_id::IdSource;

const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a file or directory with `mode` owned by `uid` is not trusted, or
/// `None` when it is.
pub fn refusal(mode: u32, uid: u32, is_dir: bool) -> Option<&'static str> {
    if uid != 0 {
        return Some("is owned by a user other than root");
    }
    if mode & GROUP_OTHER_WRITE != 0 && !(is_dir && mode & STICKY != 0) {
        return Some("is writable by group or others");
    }
    None
}

/// Check the directories above `path` and (with `check_file`) `path`
/// itself; `key` names the config key that pointed at it.
pub fn check_path(
    config: &Path,
    key: Option<&str>,
    path: &Path,
    check_file: bool,
) -> Result<(), ConfigError> {
    let err = |p: &Path, why: String| -> ConfigError {
        ConfigFault {
            file: config.to_path_buf(),
            key: key.map(str::to_string),
            line: None,
            message: why.replace("{path}", &p.display().to_string()),
        }
        .into()
    };
    // Resolve links and `..` so the directories checked are the real ones.
    let real = std::fs::canonicalize(path)
        .map_err(|e| err(path, format!("cannot resolve {{path}}: {e}")))?;
    let skip = usize::from(!check_file);
    for p in real.ancestors().skip(skip) {
        let meta = std::fs::metadata(p).map_err(|e| err(p, format!("{{path}}: {e}")))?;
        if let Some(why) = refusal(meta.mode(), meta.uid(), meta.is_dir()) {
            let shown = if p == real && check_file {
                format!("{}", path.display())
            } else {
                format!("{} (a directory above {})", p.display(), path.display())
            };
            return Err(err(
                p,
                format!(
                    "{shown} {why} (mode {:04o}, owner uid {}): as root the agent only trusts files root alone can change (chown root, chmod go-w)",
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
            ));
        }
    }
    Ok(())
}

/// The path of a `file:` target spec.
fn file_target(spec: &str) -> Option<&Path> {
    match flasher::TargetSpec::parse(spec)? {
        flasher::TargetSpec::File(p) => Some(p),
        _ => None,
    }
}

/// R-LOCAL-1 over everything `cfg` names: the config file, `public_key`,
/// `device_id_file`, `current_version_file`, `floor_file` (its directory
/// while the agent has not created it yet), `ab.env_config`, and the
/// directories above each `file:` target (the target itself may be a block
/// device a group can write, e.g. `disk`; a link there is refused when it is
/// opened, R-LOCAL-2).
pub fn check_config(cfg: &Config) -> Result<(), ConfigError> {
    let c = cfg.path.as_path();
    check_path(c, None, c, true)?;
    if let Some(p) = &cfg.public_key_file {
        check_path(c, Some(key::public_key), p, true)?;
    }
    if let Some((p, _)) = &cfg.device_key {
        check_path(c, Some(key::device_key), p, true)?;
    }
    if let IdSource::File(p) = &cfg.device_id_source {
        check_path(c, Some(key::device_id_file), p, true)?;
    }
    if let Some(p) = &cfg.current_version_file {
        check_path(c, Some(key::current_version_file), p, true)?;
    }
    if let Some(p) = &cfg.floor_file {
        check_path(c, Some(key::floor_file), &created_here(p), true)?;
    }
    let mut targets = vec![(key::target, cfg.target.as_str())];
    if let Some(ab) = &cfg.ab {
        check_path(c, Some(key::ab::env_config), &ab.env_config, true)?;
        targets.push((key::ab::slot_a, ab.slot_a.as_str()));
        targets.push((key::ab::slot_b, ab.slot_b.as_str()));
    }
    for (key, spec) in targets {
        if let Some(dir) = file_target(spec).and_then(Path::parent) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            check_path(c, Some(key), dir, true)?;
        }
    }
    Ok(())
}

/// `path` when it exists (a link counts), else the directory it will be
/// created in.
fn created_here(path: &Path) -> std::path::PathBuf {
    if path.symlink_metadata().is_ok() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    }
}

/// Whether the agent runs as root (the checks apply only then).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// R-LOCAL-1 as a table of (mode, owner) cases.
    #[test]
    fn strict_modes_rule() {
        assert_eq!(refusal(0o100644, 0, false), None);
        assert_eq!(refusal(0o100600, 0, false), None);
        assert_eq!(refusal(0o040755, 0, true), None);
        assert!(refusal(0o100664, 0, false).is_some(), "group-writable");
        assert!(refusal(0o100646, 0, false).is_some(), "world-writable");
        assert!(refusal(0o100644, 1000, false).is_some(), "not root's");
        assert!(
            refusal(0o040777, 0, false).is_some(),
            "a file is never excused by sticky"
        );
        assert_eq!(refusal(0o041777, 0, true), None, "/tmp: root's and sticky");
        assert!(refusal(0o040777, 0, true).is_some(), "not sticky");
        assert!(
            refusal(0o041777, 1000, true).is_some(),
            "sticky but not root's"
        );
    }

    /// One real file: world-writable is refused with its mode and path named.
    #[test]
    fn world_writable_public_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("fc-perms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let key = dir.join("op.pub");
        std::fs::write(&key, "x\n").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let cfg = Path::new("/etc/firmcast/agent.toml");
        let meta = std::fs::metadata(&key).expect("meta");
        let r = check_path(cfg, Some("public_key"), &key, true);
        if meta.uid() == 0 && running_as_root() {
            let e = r.expect_err("world-writable");
            let msg = e.to_string();
            assert!(msg.contains("op.pub") && msg.contains("0666"), "{msg}");
            assert_eq!(e.key.as_deref(), Some("public_key"));
            println!("world-writable public key: {msg}");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            check_path(cfg, Some("public_key"), &key, true).expect("0644 root");
            // A file root does not own.
            nix::unistd::chown(&key, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
            let e = check_path(cfg, Some("public_key"), &key, true).expect_err("not root's");
            assert!(e.to_string().contains("uid 65534"), "{e}");
        } else {
            println!("not root: only the pure rule is checked ({r:?})");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

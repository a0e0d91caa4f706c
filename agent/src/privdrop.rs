//! R-LOCAL-3: root only as long as it is needed. Once the sockets, the
//! target and the U-Boot environment are open, the agent becomes `user`
//! (default `nobody`): a bug in the datagram path then holds an
//! unprivileged process with a few open descriptors, not root.
//!
//! ```text
//!  in-place, none    drop: the target is open, nothing else needs root
//!  ab-uboot          drop: the environment's devices were opened before
//!  command           keep root: the board command (sysupgrade, ...) needs it
//!  reboot_command    keep root: rebooting needs it
//!  user = "root"     keep root: the operator asked for it
//! ```
//!
//! [`plan`] is the pure decision; [`drop_to`] does it and checks that root
//! cannot be regained.

use std::fmt;

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::config::{Activation, Config};

/// Default `user`.
pub const DEFAULT_USER: &str = "nobody";
/// The traditional overflow id, used for `nobody` on a system that has no
/// such entry in /etc/passwd.
const NOBODY_ID: u32 = 65_534;

/// What to do once everything is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Become this user.
    Drop(String),
    /// Stay root, for this reason (logged once).
    KeepRoot(&'static str),
}

/// The decision for `cfg` (see the module docs).
pub fn plan(activation: Activation, reboot_command: bool, user: &str) -> Plan {
    if user == "root" {
        Plan::KeepRoot("user = \"root\" in the config")
    } else if activation == Activation::Command {
        Plan::KeepRoot("activation = \"command\" runs a board command that needs root")
    } else if reboot_command {
        Plan::KeepRoot("reboot_command needs root to reboot")
    } else {
        Plan::Drop(user.to_string())
    }
}

/// [`plan`] for a config.
pub fn plan_for(cfg: &Config) -> Plan {
    plan(cfg.activation, !cfg.reboot_command.is_empty(), &cfg.user)
}

/// Why root could not be dropped: the user or the id at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropError {
    /// `user` has no passwd entry.
    NoSuchUser(String),
    /// Looking `user` up failed.
    Lookup(String, Errno),
    /// `setgroups(&[])` failed.
    SetGroups(Errno),
    /// `setgid` to this gid failed.
    SetGid(Gid, Errno),
    /// `setuid` to this uid failed.
    SetUid(Uid, Errno),
    /// After `setuid` to this uid, root could still be regained.
    RootRegainable(Uid),
}

impl fmt::Display for DropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropError::NoSuchUser(user) => write!(f, "user {user:?} does not exist"),
            DropError::Lookup(user, e) => write!(f, "looking up user {user:?}: {}", os_error(*e)),
            DropError::SetGroups(e) => write!(f, "setgroups: {}", os_error(*e)),
            DropError::SetGid(gid, e) => write!(f, "setgid({gid}): {}", os_error(*e)),
            DropError::SetUid(uid, e) => write!(f, "setuid({uid}): {}", os_error(*e)),
            DropError::RootRegainable(uid) => {
                write!(f, "still able to become root after setuid({uid})")
            }
        }
    }
}

impl std::error::Error for DropError {}

/// Resolve `user` to (uid, its primary gid).
pub fn resolve(user: &str) -> Result<(Uid, Gid), DropError> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        // A minimal image may have no /etc/passwd at all (musl's lookup then
        // fails with ENOENT): the default user is still uid/gid 65534.
        Ok(None) | Err(_) if user == DEFAULT_USER => {
            Ok((Uid::from_raw(NOBODY_ID), Gid::from_raw(NOBODY_ID)))
        }
        Ok(None) => Err(DropError::NoSuchUser(user.to_string())),
        Err(e) => Err(DropError::Lookup(user.to_string(), e)),
    }
}

/// A system call's error as std prints one (`Operation not permitted (os
/// error 1)`), like every other I/O error the agent logs: nix's own
/// `Display` adds a table of every errno name to the device binary.
pub fn os_error(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Become `user`: no supplementary groups, its gid, its uid (real, effective
/// and saved, so there is no way back), then check that root is gone.
pub fn drop_to(user: &str) -> Result<(Uid, Gid), DropError> {
    let (uid, gid) = resolve(user)?;
    nix::unistd::setgroups(&[]).map_err(DropError::SetGroups)?;
    nix::unistd::setgid(gid).map_err(|e| DropError::SetGid(gid, e))?;
    nix::unistd::setuid(uid).map_err(|e| DropError::SetUid(uid, e))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
        return Err(DropError::RootRegainable(uid));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_keeps_root() {
        assert_eq!(
            plan(Activation::InPlace, false, "nobody"),
            Plan::Drop("nobody".into())
        );
        assert_eq!(
            plan(Activation::AbUboot, false, "firmcast"),
            Plan::Drop("firmcast".into())
        );
        assert_eq!(
            plan(Activation::None, false, "nobody"),
            Plan::Drop("nobody".into())
        );
        assert!(matches!(
            plan(Activation::Command, false, "nobody"),
            Plan::KeepRoot(_)
        ));
        assert!(matches!(
            plan(Activation::AbUboot, true, "nobody"),
            Plan::KeepRoot(_)
        ));
        assert!(matches!(
            plan(Activation::InPlace, false, "root"),
            Plan::KeepRoot(_)
        ));
    }

    #[test]
    fn nobody_resolves_even_without_a_passwd_entry() {
        let (uid, _) = resolve(DEFAULT_USER).expect("nobody");
        assert_ne!(uid.as_raw(), 0);
        let Err(e) = resolve("no-such-user-firmcast") else {
            panic!("no such user")
        };
        assert!(e.to_string().contains("\"no-such-user-firmcast\""), "{e}");
        assert_eq!(
            DropError::SetUid(Uid::from_raw(65534), Errno::EPERM).to_string(),
            format!("setuid(65534): {}", std::io::Error::from_raw_os_error(1))
        );
    }
}

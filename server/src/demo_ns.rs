//! An IPv6 LAN on this machine, without root, for `firmcast demo --ipv6`
//! and the IPv6 integration tests. Loopback carries no IPv6 multicast (the
//! kernel has no multicast route on `lo`), so the processes run in a network
//! namespace of their own, made in an unprivileged user namespace (root
//! needs none), where one end of a veth pair holds the addresses (`fd77::/64`, no duplicate address
//! detection, so they are usable at once):
//!
//! ```text
//!  holder   unshare [--user --map-current-user --keep-caps] --net sh -c SETUP
//!           SETUP: lo up; veth fc0 <-> fc1, both up; fd77::N/64 on fc0; then
//!           `cat` until the stdin pipe of the process that made it closes
//!  others   nsenter --target HOLDER --net [--user --preserve-credentials] PROGRAM ARGS
//!  (the bracketed parts unless root)
//! ```
//!
//! Everything sent to a group on `fc0` is looped back to the members on this
//! host, as on `lo` for IPv4. The mapping keeps the caller's own user id
//! inside (so files and the agent's R-LOCAL-1 checks look as outside);
//! `--keep-caps` lets `ip` configure the namespace's links all the same.
//! Root makes no user namespace: one would forbid what a root agent does
//! next (setgroups and setuid when it drops to `nobody`, R-LOCAL-3).
//! The namespace ends with its last process: the holder's `cat` sees end of
//! file when this [`Lan6`] is dropped or its owner dies, however it dies.
//! Needs util-linux (`unshare`, `nsenter`) and iproute2 (`ip`).

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The veth end holding the LAN's addresses.
pub const LINK: &str = "fc0";

/// `fd77::n`, an address of the LAN.
pub fn addr(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n)
}

/// Why the namespace could not be made.
#[derive(Debug)]
pub enum Lan6Error {
    /// This kernel refuses unprivileged user namespaces; the settings read.
    UserNamespacesDisabled {
        /// What unshare said.
        said: String,
        /// The sysctls that decide it, with their values here.
        settings: String,
    },
    /// A program it needs could not be started.
    Missing {
        /// The program.
        tool: &'static str,
        /// Its package.
        package: &'static str,
        /// The error.
        error: std::io::Error,
    },
    /// Setting up the namespace's links failed.
    Setup {
        /// The step.
        step: &'static str,
        /// What the tools printed.
        output: String,
    },
}

impl std::fmt::Display for Lan6Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lan6Error::UserNamespacesDisabled { said, settings } => write!(
                f,
                "cannot make an unprivileged user + network namespace for the IPv6 LAN ({said}): \
                 this kernel refuses user namespaces to this user ({settings}); allow them \
                 (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, \
                 kernel.apparmor_restrict_unprivileged_userns=0) or run as root"
            ),
            Lan6Error::Missing {
                tool,
                package,
                error,
            } => write!(
                f,
                "cannot run `{tool}` ({error}): the IPv6 LAN needs it (package {package})"
            ),
            Lan6Error::Setup { step, output } => {
                write!(
                    f,
                    "setting up the IPv6 LAN namespace: {step}: {}",
                    output.trim()
                )
            }
        }
    }
}

impl std::error::Error for Lan6Error {}

/// The sysctls deciding whether unprivileged user namespaces are allowed,
/// as `name = value` (those this kernel has).
pub fn userns_settings() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|v| v.trim().to_string())
    };
    [
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ]
    .iter()
    .filter_map(|(name, path)| read(path).map(|v| format!("{name} = {v}")))
    .collect::<Vec<_>>()
    .join(", ")
}

const SETUP: &str = r#"set -e
ip link set lo up
ip link add fc0 type veth peer name fc1
ip link set fc1 up
ip link set fc0 up
for a in "$@"; do ip -6 addr add "$a/64" dev fc0 nodad; done
echo ready
exec cat >/dev/null"#;

/// A user + network namespace with addresses on [`LINK`]; ends on drop.
pub struct Lan6 {
    holder: Child,
    // Made by root: a network namespace only, entered without a user one.
    root: bool,
    // Held open: the holder's `cat` ends when it closes.
    stdin: Option<ChildStdin>,
}

impl Lan6 {
    /// Make the namespace with `addrs` on [`LINK`].
    pub fn up(addrs: &[Ipv6Addr]) -> Result<Lan6, Lan6Error> {
        let root = nix::unistd::geteuid().is_root();
        let mut cmd = Command::new("unshare");
        if !root {
            cmd.args(["--user", "--map-current-user", "--keep-caps"]);
        }
        cmd.args(["--net", "sh", "-c", SETUP, "sh"])
            .args(addrs.iter().map(Ipv6Addr::to_string))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut holder = cmd.spawn().map_err(|error| Lan6Error::Missing {
            tool: "unshare",
            package: "util-linux",
            error,
        })?;
        let stdin = holder.stdin.take();
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut said = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut said);
            }
            let said = said.trim().to_string();
            if said.starts_with("unshare:") {
                return Err(Lan6Error::UserNamespacesDisabled {
                    said,
                    settings: userns_settings(),
                });
            }
            return Err(Lan6Error::Setup {
                step: "ip (iproute2) adding the veth pair and fd77::/64 addresses",
                output: said,
            });
        }
        let lan = Lan6 {
            holder,
            root,
            stdin,
        };
        let entered =
            lan.command(Path::new("true"))
                .output()
                .map_err(|error| Lan6Error::Missing {
                    tool: "nsenter",
                    package: "util-linux",
                    error,
                })?;
        if !entered.status.success() {
            return Err(Lan6Error::Setup {
                step: "nsenter entering the namespace",
                output: String::from_utf8_lossy(&entered.stderr).into_owned(),
            });
        }
        Ok(lan)
    }

    /// What it is, for messages.
    pub fn kind(&self) -> &'static str {
        if self.root {
            "a network namespace"
        } else {
            "a user + network namespace"
        }
    }

    /// A command running `program` inside the namespace (add its arguments).
    /// The process started is `program` itself: nsenter enters and execs.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.holder.id().to_string(), "--net"]);
        if !self.root {
            cmd.args(["--user", "--preserve-credentials"]);
        }
        cmd.arg("--").arg(program);
        cmd
    }
}

impl Drop for Lan6 {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disabled_error_names_the_settings() {
        let e = Lan6Error::UserNamespacesDisabled {
            said: "unshare: unshare failed: Operation not permitted".into(),
            settings: "user.max_user_namespaces = 0".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("user.max_user_namespaces = 0"), "{msg}");
        assert!(msg.contains("kernel.unprivileged_userns_clone"), "{msg}");
    }
}

//! The IPv6 tier's network: the namespace `firmcast demo --ipv6` makes
//! ([`firmcast_server::demo_ns`]: a veth link holding `fd77::N/64`, in an
//! unprivileged user + network namespace, or a network namespace alone as
//! root), processes started in it, and its files read from inside.
//!
//! Loopback carries no IPv6 multicast, so this is where the IPv6 tests run;
//! no root needed. They skip (a printed `NOT RUN` line) only when this
//! kernel refuses user namespaces to a non-root user; as root they always run.

use std::net::Ipv6Addr;
use std::path::Path;

pub use firmcast_server::demo_ns::{addr, Lan6, Lan6Error, LINK};

use crate::{Proc, Scratch};

/// The LAN with `addrs` on [`LINK`], or `None` after a `NOT RUN` line for
/// `test` when user namespaces are refused; any other failure panics.
pub fn up(test: &str, addrs: &[Ipv6Addr]) -> Option<Lan6> {
    match Lan6::up(addrs) {
        Ok(lan) => Some(lan),
        Err(e @ Lan6Error::UserNamespacesDisabled { .. }) => {
            crate::netns::say(&format!("NOT RUN: {test}: {e}"));
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Start `program args…` inside `lan`, logging to `dir/<name>.log`.
pub fn start(lan: &Lan6, dir: &Scratch, name: &str, program: &Path, args: &[&str]) -> Proc {
    Proc::spawn(name, lan.command(program), args, dir.path())
}

/// A file as a process inside `lan` reads it (`/proc/net/…` is the
/// namespace's own).
pub fn read(lan: &Lan6, path: &str) -> String {
    let out = lan
        .command(Path::new("cat"))
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cat {path} in the namespace: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

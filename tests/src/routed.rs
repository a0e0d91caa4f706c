//! Test tier 4b: devices in two subnets behind a multicast router, and one
//! in a subnet the router sends no multicast to.
//!
//! ```text
//!   PREFIX-srv 10.78.0.1 fd78::1 ── s0 ┐ PREFIX-rt: unicast routing; multicast
//!   PREFIX-aN 10.78.1.1N ── switch ── a0 ┤ to a0/b0 by IGMPv3/MLDv2 membership,
//!   PREFIX-bN 10.78.2.1N ── switch ── b0 ┤ TTL > 1 only
//!   PREFIX-c1 10.78.3.11 ──────────── c0 ┘ no multicast routing
//! ```
//!
//! `tests/netns/routed.sh` builds and tears the network down (its header says
//! why the router's forwarding plane is nftables + snooping bridges rather
//! than pimd here); this module wraps it in a [`Routed`] whose `Drop` deletes
//! every namespace, also when a test panics, and reads the router's
//! per-interface group/source table for the tests to assert on.
//!
//! Root is needed: without it [`not_run`] prints `NOT RUN` and why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::netns::{effective_uid, have, say, Host};

/// The sender's IPv4 and IPv6 addresses.
pub const SERVER_ADDR: (&str, &str) = ("10.78.0.1", "fd78::1");

/// The rig script.
pub fn routed_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/routed.sh")
}

/// `Some(reason)` when the routed tests cannot run here (prints `NOT RUN`);
/// missing tools as root are a failure, as in the other namespace tests.
pub fn not_run(test: &str) -> Option<String> {
    let reason = if std::env::var_os("FIRMCAST_SKIP_NETNS").is_some() {
        Some("FIRMCAST_SKIP_NETNS is set".to_string())
    } else if effective_uid() != Some(0) {
        Some("needs root for network namespaces (CI runs as root; locally: sudo -E cargo test -p firmcast-integration --test routed)".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        say(&format!("NOT RUN: routed::{test}: {r}"));
        return reason;
    }
    for tool in ["ip", "nft", "bridge"] {
        assert!(
            have(tool),
            "{tool} is missing: run scripts/setup-netns.sh (as root) before the namespace tests"
        );
    }
    None
}

/// The routed network of one test; deleted on drop (also on panic).
pub struct Routed {
    prefix: String,
    per_subnet: usize,
}

fn run_script(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(routed_script())
        .args(args)
        .output()
        .map_err(|e| format!("run routed.sh: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "routed.sh {args:?} failed ({}): {text}",
            out.status
        ))
    }
}

impl Routed {
    /// Build the network with `per_subnet` devices in each of the routed
    /// subnets a and b (and the one device of subnet c). `tag` (a–z) keeps
    /// rigs of one process apart.
    pub fn up(tag: char, per_subnet: usize) -> Routed {
        let rig = Routed {
            prefix: format!("fr{}{tag}", std::process::id()),
            per_subnet,
        };
        let started = Instant::now();
        if let Err(e) = run_script(&["up", &rig.prefix, &per_subnet.to_string()]) {
            panic!("{e}");
        }
        say(&format!(
            "routed rig {}: 2 routed subnets × {per_subnet} devices + 1 unrouted, up in {:.1?}",
            rig.prefix,
            started.elapsed()
        ));
        rig
    }

    /// The sender's host (IPv4 address; IPv6 in [`SERVER_ADDR`]).
    pub fn server(&self) -> Host {
        Host {
            ns: format!("{}-srv", self.prefix),
            addr: SERVER_ADDR.0.into(),
        }
    }

    /// Device `n` (1-based) of subnet `subnet` (`'a'`, `'b'`; `'c'` has one).
    pub fn device(&self, subnet: char, n: usize) -> Host {
        let net = match subnet {
            'a' => 1,
            'b' => 2,
            'c' => 3,
            _ => panic!("no subnet {subnet}"),
        };
        let count = if subnet == 'c' { 1 } else { self.per_subnet };
        assert!(n >= 1 && n <= count, "no device {subnet}{n}");
        Host {
            ns: format!("{}-{subnet}{n}", self.prefix),
            addr: format!("10.78.{net}.{}", 10 + n),
        }
    }

    /// The router's group/source membership per interface (the snooping
    /// tables of a0 and b0, link-local groups left out) and its forwarding
    /// counters, as `routed.sh show` prints them.
    pub fn router_table(&self) -> String {
        match run_script(&["show", &self.prefix]) {
            Ok(t) => t
                .lines()
                .filter(|l| !l.contains(" grp ff02:") && !l.contains(" grp 224.0.0."))
                .map(|l| format!("{}\n", l.trim_end()))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        if let Err(e) = run_script(&["down", &self.prefix]) {
            say(&format!("routed rig {}: teardown failed: {e}", self.prefix));
        }
    }
}

/// `/proc/net/mcfilter` (or `mcfilter6`) of `host`: the source filters its
/// sockets hold (an SSM join shows its group and source there).
pub fn mcfilter(host: &Host, v6: bool) -> String {
    let file = if v6 {
        "/proc/net/mcfilter6"
    } else {
        "/proc/net/mcfilter"
    };
    let out = Command::new("ip")
        .args(["netns", "exec", &host.ns, "cat", file])
        .output()
        .expect("read mcfilter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

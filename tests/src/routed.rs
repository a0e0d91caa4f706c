//! Test tier 4b: devices in two subnets behind a real multicast router, and
//! one in a subnet the router sends no multicast to.
//!
//! ```text
//!   PREFIX-srv 10.78.0.1  fd78::1 ────────── s0 ┐ the router: a qemu guest with
//!   PREFIX-aN 10.78.1.1N ── snooping switch ── a0 ┤ Debian's kernel, FRR pimd
//!   PREFIX-bN 10.78.2.1N ── snooping switch ── b0 ┤ (IGMPv3, PIM-SM/SSM) and
//!   PREFIX-c1 10.78.3.11 ───────────────────── c0 ┘ smcrouted (IPv6 (S,G))
//! ```
//!
//! `tests/netns/routed.sh` builds and tears the network down (its header says
//! why the router is a guest); this module wraps it in a [`Routed`] whose
//! `Drop` stops the guest and deletes every namespace, also when a test
//! panics, and reads the tables the router writes (pimd's IGMP group and
//! source tables, the kernel's IPv4 and IPv6 multicast routes).
//!
//! Root is needed: without it [`not_run`] prints `NOT RUN` and why.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::netns::{effective_uid, have, say, Host};
use crate::Scratch;

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
    for tool in ["ip", "bridge", "qemu-system-x86_64", "busybox", "cpio"] {
        assert!(
            have(tool),
            "{tool} is missing: run scripts/setup-netns.sh (as root) before the namespace tests"
        );
    }
    for daemon in [
        "/usr/lib/frr/pimd",
        "/usr/lib/frr/zebra",
        "/usr/sbin/smcrouted",
    ] {
        assert!(
            Path::new(daemon).exists(),
            "{daemon} is missing: run scripts/setup-netns.sh (as root) before the routed tests"
        );
    }
    let kernel = router_vm().join("root/boot");
    let found = fs::read_dir(&kernel).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
    });
    assert!(
        found,
        "no router kernel in {}: run scripts/setup-netns.sh (as root) before the routed tests",
        kernel.display()
    );
    None
}

/// Where scripts/setup-netns.sh put the router guest's kernel:
/// `$FIRMCAST_ROUTER_VM`, else `target/router-vm` of the workspace.
pub fn router_vm() -> PathBuf {
    std::env::var_os("FIRMCAST_ROUTER_VM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target/router-vm")
        })
}

/// The routed network of one test; deleted on drop (also on panic).
pub struct Routed {
    prefix: String,
    per_subnet: usize,
    /// The router's state directory (shared with the guest).
    state: Scratch,
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
    pub fn up(tag: char, per_subnet: usize, routes6: &[(&str, &str)]) -> Routed {
        let state = Scratch::new("router");
        let lines: String = routes6.iter().map(|(s, g)| format!("{s} {g}\n")).collect();
        fs::write(state.join("groups6"), lines).expect("write groups6");
        let rig = Routed {
            prefix: format!("fr{}{tag}", std::process::id()),
            per_subnet,
            state,
        };
        let started = Instant::now();
        let dir = crate::path_str(rig.state.path()).to_string();
        if let Err(e) = run_script(&["up", &rig.prefix, &per_subnet.to_string(), &dir]) {
            panic!("{e}\nrouter console:\n{}", rig.console_tail());
        }
        say(&format!(
            "routed rig {}: 2 routed subnets × {per_subnet} devices + 1 unrouted, router guest up in {:.1?}",
            rig.prefix,
            started.elapsed()
        ));
        rig
    }

    /// The end of the router guest's console (for failure messages).
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(self.state.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
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

    /// The router's tables as it last wrote them (every 2 s or so: the
    /// guest is emulated): pimd's `show ip igmp sources`, `show ip igmp
    /// groups`, `show ip mroute`, the kernel's `ip -s mroute`, its IPv4
    /// per-interface counters and `ip -s -6 mroute` (a route's counters on
    /// its line); then each access switch's snooping table (`bridge -d mdb
    /// show`, link-local groups left out).
    pub fn router_table(&self) -> String {
        let dir = crate::path_str(self.state.path()).to_string();
        run_script(&["show", &self.prefix, &dir]).unwrap_or_else(|e| e)
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        let dir = crate::path_str(self.state.path()).to_string();
        if let Err(e) = run_script(&["down", &self.prefix, &dir]) {
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

/// The rows of the section of `table` ([`Routed::router_table`]) whose
/// heading contains `heading`.
fn section<'a>(table: &'a str, heading: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut inside = false;
    table.lines().filter(move |line| {
        if line.starts_with("== ") {
            inside = line.contains(heading);
            false
        } else {
            inside
        }
    })
}

/// The rows of the section of `table` ([`Routed::router_table`]) whose
/// heading contains `heading` that hold `fields` as whole whitespace-separated
/// fields in this order (others may stand between them).
pub fn rows_with<'a>(table: &'a str, heading: &'a str, fields: &[&str]) -> Vec<&'a str> {
    section(table, heading)
        .filter(|line| {
            let mut row = line.split_whitespace();
            fields.iter().all(|f| row.any(|field| field == *f))
        })
        .collect()
}

/// The packets the router's kernel forwarded out of `iface` by IPv4
/// multicast routing so far (`/proc/net/ip_mr_vif`: `Idx Interface BytesIn
/// PktsIn BytesOut PktsOut …`; it outlives the routes), with its row.
pub fn vif_packets_out<'a>(table: &'a str, iface: &str) -> Option<(u64, &'a str)> {
    section(table, "ip_mr_vif").find_map(|line| {
        let row: Vec<&str> = line.split_whitespace().collect();
        if row.get(1) != Some(&iface) {
            return None;
        }
        Some((row.get(5)?.parse().ok()?, line.trim()))
    })
}

/// The packet count of a kernel multicast route row (`ip -s mroute`, its
/// statistics joined onto the route's line by the router: `… N packets, M
/// bytes`); 0 when the row has none.
pub fn packets(row: &str) -> u64 {
    let fields: Vec<&str> = row.split_whitespace().collect();
    fields
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == "packets")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

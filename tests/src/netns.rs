//! Test tier 4: a real network of hosts in network namespaces.
//!
//! ```text
//!   PREFIX-srv 10.77.0.1 ──tbf──┐
//!   PREFIX-rep 10.77.0.2 ──tbf──┤   PREFIX-br: Linux bridge br0,
//!   PREFIX-d1  10.77.1.1 ───────┤   IGMP snooping + querier on
//!   …                           │
//!   PREFIX-dN  10.77.K.M ───────┘   nftables loss in each device's input chain
//! ```
//!
//! The network itself is built and torn down by `tests/netns/rig.sh` (one
//! implementation, shared with the race in `bench/fleet`); this module wraps
//! it in a [`Rig`] whose `Drop` deletes every namespace of the run, also when
//! a test panics. Each rig has a prefix unique to the process and the rig
//! (`fc<pid><tag>`), so runs side by side never meet.
//!
//! Traffic stays inside the namespaces: 10.77/16 exists only there, and the
//! multicast groups are 239.77.x inside them.
//!
//! Root is needed. Without it [`not_run`] prints that the test was NOT run and
//! why, and the test returns without asserting anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{agent_config_on, bin, bin_dir, path_str, AgentSpec, Net, Proc, Release, Scratch};

/// The sender's address.
pub const SERVER_ADDR: &str = "10.77.0.1";
/// The repair server's address.
pub const REPAIR_ADDR: &str = "10.77.0.2";

/// The rig script.
pub fn rig_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netns/rig.sh")
}

/// Address of device `n` (1-based), as `rig.sh` assigns it.
pub fn device_addr(n: usize) -> String {
    format!("10.77.{}.{}", 1 + (n - 1) / 250, 1 + (n - 1) % 250)
}

/// Groups and ports inside a rig (no other test can see them).
pub fn net() -> Net {
    Net {
        group: "239.77.0.1:7854".into(),
        repair_group: "239.77.0.2:7855".into(),
        repair_listen: format!("{REPAIR_ADDR}:7855"),
    }
}

/// Print a line that `cargo test` shows even for a passing test: libtest
/// captures only the print macros, so this writes to stderr directly.
pub fn say(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

pub(crate) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `Some(reason)` when the namespace tests cannot run here; prints a clear
/// `NOT RUN` line for `test`. Missing tools as root are a failure, not a skip:
/// CI runs as root and must not pass without running these tests.
pub fn not_run(test: &str) -> Option<String> {
    let reason = if std::env::var_os("FIRMCAST_SKIP_NETNS").is_some() {
        Some("FIRMCAST_SKIP_NETNS is set".to_string())
    } else if effective_uid() != Some(0) {
        Some("needs root for network namespaces (CI runs as root; locally: sudo -E cargo test -p firmcast-integration --test fleet_netns)".to_string())
    } else {
        None
    };
    if let Some(r) = &reason {
        say(&format!("NOT RUN: fleet_netns::{test}: {r}"));
        return reason;
    }
    for tool in ["ip", "tc", "nft"] {
        assert!(
            have(tool),
            "{tool} is missing: run scripts/setup-netns.sh (as root) before the namespace tests"
        );
    }
    None
}

/// A workspace binary for the namespace tests: `$FIRMCAST_BIN_DIR/name` if
/// set, else `target/release/name` when it exists and is not older than the
/// profile's own build (20 agents on 2 cores want optimised binaries), else
/// the test profile's binary.
pub fn fleet_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FIRMCAST_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(p.exists(), "{} is missing (FIRMCAST_BIN_DIR)", p.display());
        return p;
    }
    let own = bin_dir().join(name);
    let release = bin_dir()
        .parent()
        .map(|t| t.join("release").join(name))
        .filter(|p| p.exists());
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match release {
        Some(r) if !own.exists() || mtime(&r) >= mtime(&own) => r,
        _ => bin(name),
    }
}

/// Start `program args…` inside `host`'s namespace; output in `dir/<name>.log`.
/// `ip netns exec` execs the program, so the `Proc`'s PID is the program's.
pub fn start_in(host: &Host, name: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
    let mut full = vec!["netns", "exec", &host.ns, path_str(program)];
    full.extend_from_slice(args);
    Proc::start(name, Path::new("ip"), &full, dir)
}

/// One host of a rig: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// IPv4 address of its eth0.
    pub addr: String,
}

/// The namespace network of one test; deleted on drop (also on panic).
pub struct Rig {
    prefix: String,
    devices: usize,
}

fn run_rig(args: &[&str]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(rig_script())
        .args(args)
        .output()
        .map_err(|e| format!("run rig.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rig.sh {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Rig {
    /// Build a network of a sender host, a repair host and `devices` device
    /// hosts; uplinks of sender and repair host shaped to `rate_mbit`
    /// (0 = unshaped); every device loses `loss_permille` of what it receives.
    /// `tag` (a–z) keeps rigs of one process apart.
    pub fn up(tag: char, devices: usize, rate_mbit: u32, loss_permille: u32) -> Rig {
        let prefix = format!("fc{}{tag}", std::process::id());
        let rig = Rig { prefix, devices };
        let started = Instant::now();
        if let Err(e) = run_rig(&[
            "up",
            &rig.prefix,
            &devices.to_string(),
            &rate_mbit.to_string(),
            &loss_permille.to_string(),
        ]) {
            panic!("{e}");
        }
        say(&format!(
            "rig {}: {devices} devices, {rate_mbit} Mbit/s uplinks, loss {loss_permille}‰, up in {:.1?}",
            rig.prefix,
            started.elapsed()
        ));
        rig
    }

    /// The sender's host.
    pub fn server(&self) -> Host {
        Host {
            ns: format!("{}-srv", self.prefix),
            addr: SERVER_ADDR.into(),
        }
    }

    /// The repair server's host.
    pub fn repair(&self) -> Host {
        Host {
            ns: format!("{}-rep", self.prefix),
            addr: REPAIR_ADDR.into(),
        }
    }

    /// Device host `n` (1-based).
    pub fn device(&self, n: usize) -> Host {
        assert!(n >= 1 && n <= self.devices, "no device {n}");
        Host {
            ns: format!("{}-d{n}", self.prefix),
            addr: device_addr(n),
        }
    }

    /// Change the receive loss of device `n`.
    pub fn set_loss(&self, n: usize, permille: u32) {
        if let Err(e) = run_rig(&[
            "loss",
            &self.prefix,
            &format!("d{n}"),
            &permille.to_string(),
        ]) {
            panic!("{e}");
        }
    }

    /// Bytes sent so far on `host`'s eth0 (what left the host, all protocols).
    pub fn tx_bytes(&self, host: &Host) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                "cat",
                "/sys/class/net/eth0/statistics/tx_bytes",
            ])
            .output()
            .expect("read tx_bytes");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Start `program args…` inside `host`'s namespace; output in `dir/<name>.log`.
    /// `ip netns exec` execs the program, so the `Proc`'s PID is the program's.
    pub fn start(
        &self,
        host: &Host,
        name: &str,
        program: &Path,
        args: &[&str],
        dir: &Path,
    ) -> Proc {
        start_in(host, name, program, args, dir)
    }

    /// Write the config of device `n` (interface = its address, repair server
    /// on the repair host) from `spec`; returns (config, target).
    pub fn agent_config(
        &self,
        dir: &Scratch,
        n: usize,
        spec: &AgentSpec<'_>,
    ) -> (PathBuf, PathBuf) {
        agent_config_on(dir, &net(), spec, &device_addr(n))
    }

    /// Start the agent of device `n` with `config`.
    pub fn start_agent(&self, dir: &Scratch, n: usize, name: &str, config: &Path) -> Proc {
        self.start(
            &self.device(n),
            name,
            &fleet_bin("firmcast-agent"),
            &["--config", path_str(config), "--foreground", "--verbose"],
            dir.path(),
        )
    }

    /// Start `firmcast send` for `rel` on the sender host with `extra` arguments.
    pub fn start_sender(&self, dir: &Scratch, rel: &Release, name: &str, extra: &[&str]) -> Proc {
        let net = net();
        let mut args = crate::send_args(rel, &net.group, SERVER_ADDR);
        // The sender hears the repairs there and yields to them (R-REP-11).
        args.extend(["--repair-group", &net.repair_group, "--json"]);
        args.extend_from_slice(extra);
        self.start(
            &self.server(),
            name,
            &fleet_bin("firmcast"),
            &args,
            dir.path(),
        )
    }

    /// Start `firmcast repair` for `rel` on the repair host.
    pub fn start_repair(&self, dir: &Scratch, rel: &Release, name: &str, extra: &[&str]) -> Proc {
        self.start_repair_on(&self.repair(), dir, rel, name, extra)
    }

    /// Start `firmcast repair` for `rel` on `host` (the repair host, or the
    /// sender's host beside the sender, as the README's typical session),
    /// listening on its address at the repair port and hearing the carousel's
    /// group (R-REP-12), with `extra` arguments.
    pub fn start_repair_on(
        &self,
        host: &Host,
        dir: &Scratch,
        rel: &Release,
        name: &str,
        extra: &[&str],
    ) -> Proc {
        let net = net();
        let listen = format!("{}:7855", host.addr);
        let mut args = vec![
            "repair",
            "--image",
            path_str(&rel.image),
            "--manifest",
            path_str(&rel.manifest),
            "--listen",
            &listen,
            "--interface",
            &host.addr,
            "--group",
            &net.group,
            "--repair-group",
            &net.repair_group,
            "--json",
        ];
        args.extend_from_slice(extra);
        self.start(host, name, &fleet_bin("firmcast"), &args, dir.path())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = run_rig(&["down", &self.prefix]) {
            say(&format!("rig {}: teardown failed: {e}", self.prefix));
        }
    }
}

/// Number of `block_size` blocks of `image` that `target` already holds.
pub fn blocks_on_target(target: &Path, image: &[u8], block_size: usize) -> usize {
    let Ok(flash) = fs::read(target) else {
        return 0;
    };
    image
        .chunks(block_size)
        .enumerate()
        .filter(|(i, blk)| flash.get(i * block_size..i * block_size + blk.len()) == Some(*blk))
        .count()
}

/// The first integer value of `"key":` in a JSON text (the `--json` summaries).
pub fn json_u64(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = text.rfind(&pat)? + pat.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Seconds since `t`, for the summary lines.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Wait until `cond()` or `timeout`; `true` if the condition came true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

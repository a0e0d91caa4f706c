//! Harness for the emulated-device tier (`tests/tests/emulated.rs`): a real
//! Linux kernel under `qemu-system-*` with real MTD flash (block2mtd over an
//! IDE or virtio disk, nandsim, optionally partitioned into A/B slots and a
//! U-Boot environment that libubootenv's `fw_setenv`/`fw_printenv` set up and
//! read in the guest), the cross-built static `firmcast-agent` started by
//! the guest's init, and the operator side (`firmcast send`/`repair`) in a
//! network namespace of its own.
//!
//! ```text
//!  host netns "fcemu-PID-N"                         guest (qemu, TCG)
//!  ┌──────────────────────────────────┐            ┌──────────────────────────┐
//!  │ firmcast send / repair           │            │ /init (tests/emulated)   │
//!  │   10.77.0.1 on br0 ── tap0 ──────┼── virtio ──┼─ eth0 10.77.0.2          │
//!  └──────────────────────────────────┘   -net     │ firmcast-agent → /dev/mtd0│
//!                                                   └──────────────────────────┘
//! ```
//!
//! Addresses and groups are fixed (10.77.0.0/24, 239.255.77.1/2): every test
//! has its own namespace, so nothing is shared with the host or other tests.
//! The namespace is deleted and every process (qemu included) is killed by
//! PID through its `Child` handle when the values are dropped, also when the
//! test panics.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use firmcast_agent::config::writer::AgentToml;

use crate::{bin, path_str, repair_args, run_ok, send_args, Net, Proc, Release, Scratch};

/// Host address on the namespace's bridge.
pub const HOST_IP: &str = "10.77.0.1";
/// The guest's address.
pub const GUEST_IP: &str = "10.77.0.2";
/// Data group (inside the namespace only).
pub const GROUP: &str = "239.255.77.1:7854";
/// Repair group.
pub const REPAIR_GROUP: &str = "239.255.77.2:7855";
/// Repair server's unicast address.
pub const REPAIR_LISTEN: &str = "10.77.0.1:7855";

/// An emulated board: which qemu, kernel and cross-built agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// MIPS Malta (little endian), Debian's 4kc-malta kernel.
    Mipsel,
    /// ARM virt (armv7), Debian's armmp kernel (nandsim only).
    Armhf,
}

impl Arch {
    fn triple(self) -> &'static str {
        match self {
            Arch::Mipsel => "mipsel-unknown-linux-musl",
            Arch::Armhf => "armv7-unknown-linux-musleabihf",
        }
    }
    fn deb_arch(self) -> &'static str {
        match self {
            Arch::Mipsel => "mipsel",
            Arch::Armhf => "armhf",
        }
    }
    fn qemu(self) -> &'static str {
        match self {
            Arch::Mipsel => "qemu-system-mipsel",
            Arch::Armhf => "qemu-system-arm",
        }
    }
}

/// The workspace root (`tests/..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Everything a guest needs, found on this machine.
#[derive(Debug, Clone)]
pub struct Emu {
    /// Which board.
    pub arch: Arch,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Extracted Debian packages (busybox, modules, mtd-utils, libubootenv).
    pub root: PathBuf,
    /// The static, stripped agent.
    pub agent: PathBuf,
}

impl Emu {
    /// Finds the kernel, the extracted guest packages and the cross-built
    /// agent, or says which is missing and how to get it.
    pub fn find(arch: Arch) -> Result<Emu, String> {
        if nix_euid() != 0 {
            return Err("not root (network namespaces and tap devices need root)".into());
        }
        for tool in [arch.qemu(), "ip", "cpio", "gzip", "sha256sum"] {
            if !on_path(tool) {
                return Err(format!("`{tool}` not found (scripts/setup-qemu.sh)"));
            }
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err("/dev/net/tun missing".into());
        }
        let ws = workspace();
        let emu_dir = std::env::var_os("FIRMCAST_EMU_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target/emulated"));
        let root = emu_dir.join(arch.deb_arch()).join("root");
        let kernel = fs::read_dir(root.join("boot"))
            .ok()
            .and_then(|rd| {
                rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinu"))
                })
            })
            .ok_or_else(|| {
                format!(
                    "no {} kernel in {} (scripts/setup-qemu.sh)",
                    arch.deb_arch(),
                    root.join("boot").display()
                )
            })?;
        if !root.join("bin/busybox").exists() {
            return Err(format!(
                "no busybox in {} (scripts/setup-qemu.sh)",
                root.display()
            ));
        }
        let out = std::env::var_os("FIRMCAST_CROSS_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target/cross-build/out"));
        // The `test` feature set (cross/build.sh --test): the [test] table
        // (block_delay_ms) is linked only with test-hooks.
        let dir = out.join(arch.triple());
        let agent = [dir.join("firmcast-agent-test"), dir.join("firmcast-agent")]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| dir.join("firmcast-agent-test"));
        if !agent.exists() {
            return Err(format!(
                "no cross-built agent at {} (scripts/setup-cross.sh && cross/build.sh --test {})",
                agent.display(),
                arch.triple()
            ));
        }
        Ok(Emu {
            arch,
            kernel,
            root,
            agent,
        })
    }

    /// Builds the base initramfs into `dir` (busybox, init, modules,
    /// mtd-utils, fw_printenv/fw_setenv, agent).
    pub fn initramfs(&self, dir: &Scratch) -> PathBuf {
        let out = dir.join("base.cpio.gz");
        run_ok(
            Command::new("bash").args([
                path_str(&workspace().join("tests/emulated/build-initramfs.sh")),
                path_str(&self.root),
                path_str(&self.agent),
                path_str(&out),
            ]),
            "build initramfs",
        );
        out
    }
}

fn nix_euid() -> u32 {
    // No libc dependency in this crate: /proc/self/status has "Uid: r e s f".
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A network namespace with a bridge `br0` (10.77.0.1/24) and a tap `tap0`
/// on it for the guest's NIC. Deleted on drop.
pub struct NetNs {
    /// Its name.
    pub name: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    /// Creates the namespace, bridge and tap.
    pub fn new() -> NetNs {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("fcemu-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok(
            Command::new("ip").args(["netns", "add", &name]),
            "netns add",
        );
        let ns = NetNs { name };
        let ip = |args: &[&str]| {
            let mut full = vec!["-n", ns.name.as_str()];
            full.extend_from_slice(args);
            run_ok(Command::new("ip").args(&full), "ip");
        };
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "br0", "type", "bridge"]);
        ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ip(&["link", "set", "tap0", "master", "br0"]);
        ip(&["link", "set", "tap0", "up"]);
        ip(&["link", "set", "br0", "up"]);
        ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "br0"]);
        ip(&["route", "add", "224.0.0.0/4", "dev", "br0"]);
        ns
    }

    /// Start `program args…` inside the namespace (`ip netns exec` execs the
    /// program, so the `Child` PID is the program's own).
    pub fn start(&self, name: &str, program: &Path, args: &[&str], dir: &Scratch) -> Proc {
        let mut full = vec!["netns", "exec", self.name.as_str(), path_str(program)];
        full.extend_from_slice(args);
        Proc::start(name, &which("ip"), &full, dir.path())
    }

    /// `firmcast repair` for `rel`, in the namespace.
    pub fn start_repair(&self, dir: &Scratch, rel: &Release) -> Proc {
        let net = guest_net();
        let mut args = repair_args(&net, rel, HOST_IP);
        args.extend_from_slice(&["--duration", "900"]);
        self.start("repair", &bin("firmcast"), &args, dir)
    }

    /// `firmcast send` for `rel`, in the namespace, with extra arguments.
    pub fn start_sender(&self, dir: &Scratch, rel: &Release, extra: &[&str]) -> Proc {
        let mut args = send_args(rel, GROUP, HOST_IP);
        args.extend_from_slice(extra);
        self.start("sender", &bin("firmcast"), &args, dir)
    }

    /// Drops `permille` / 1000 of the UDP datagrams leaving the bridge for
    /// the guest's tap (nftables `numgen random` in the bridge family's
    /// output hook: the sender and the repair server are not told), as a
    /// lossy LAN in front of the device would.
    pub fn drop_udp_to_guest(&self, permille: u32) {
        let nft = |args: &[&str]| {
            let mut full = vec!["netns", "exec", self.name.as_str(), "nft"];
            full.extend_from_slice(args);
            run_ok(Command::new("ip").args(&full), "nft");
        };
        nft(&["add", "table", "bridge", "fcemu_loss"]);
        nft(&[
            "add",
            "chain",
            "bridge",
            "fcemu_loss",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        let limit = permille.to_string();
        nft(&[
            "add",
            "rule",
            "bridge",
            "fcemu_loss",
            "out",
            "oifname",
            "tap0",
            "meta",
            "l4proto",
            "udp",
            "numgen",
            "random",
            "mod",
            "1000",
            "<",
            &limit,
            "counter",
            "drop",
        ]);
    }

    /// Datagrams [`NetNs::drop_udp_to_guest`] dropped so far.
    pub fn udp_dropped_to_guest(&self) -> u64 {
        let out = run_ok(
            Command::new("ip").args([
                "netns",
                "exec",
                &self.name,
                "nft",
                "list",
                "chain",
                "bridge",
                "fcemu_loss",
                "out",
            ]),
            "nft list",
        );
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The groups and the repair listener of the guest's link, as a [`Net`].
fn guest_net() -> Net {
    Net {
        group: GROUP.to_string(),
        repair_group: REPAIR_GROUP.to_string(),
        repair_listen: REPAIR_LISTEN.to_string(),
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The flash the guest's init sets up.
#[derive(Debug, Clone)]
pub enum Medium {
    /// block2mtd over the virtio disk `disk` (persists across boots).
    Block2mtd {
        /// Raw disk image on the host.
        disk: PathBuf,
        /// Eraseblock size in bytes.
        erase: u32,
    },
    /// nandsim: 128 MiB SLC, 2048-byte pages, 128 KiB eraseblocks.
    Nandsim {
        /// Eraseblock numbers nandsim marks bad (of the whole chip).
        bad_blocks: Vec<u32>,
        /// Partition sizes in eraseblocks: `/dev/mtd0`, `/dev/mtd1`, …, the
        /// rest of the chip one more. Empty: the whole chip is `/dev/mtd0`.
        parts: Vec<u32>,
    },
}

/// nandsim's eraseblock.
pub const NAND_ERASE: u32 = 128 << 10;

/// A/B through the U-Boot environment (`activation = "ab-uboot"`) on
/// [`Medium::Nandsim`] with three partitions: `/dev/mtd0` slot A,
/// `/dev/mtd1` slot B, `/dev/mtd2` the environment. Before the agent starts
/// the guest's init writes `slot_a` to slot A with `nandwrite` and creates
/// the environment with libubootenv's `fw_setenv` (`-f initial_env` plus the
/// slot variable, then `-s second_save`, so both redundant copies are
/// valid); after the agent it prints `fw_printenv` (`FCEMU: env-before:` /
/// `env-after:` / `env-confirmed:` lines, see [`Guest::env`]), reads slot A
/// back (`FCEMU: slot-a:`) and slot B (`FCEMU: readback:`).
///
/// Why nandsim: libubootenv only opens MTD devices of type NOR or NAND;
/// block2mtd and mtdram are `MTD_RAM`, and on them Debian's `fw_setenv` and
/// `fw_printenv` (0.3.2) say "Configuration file wrong or corrupted" and exit
/// 234. Debian's Malta kernel has no NOR driver for qemu's Malta flash
/// (physmap without OF or compat probing).
pub struct AbSetup<'a> {
    /// The running image, written to slot A.
    pub slot_a: &'a [u8],
    /// Value of `boot_slot` the first `fw_setenv` sets (`a`: slot A runs).
    pub running_slot: &'a str,
    /// `/etc/fw_env.config`.
    pub fw_env_config: &'a str,
    /// `name=value` lines: the default environment for `fw_setenv -f`.
    pub initial_env: &'a str,
    /// `name=value` lines for the second save, `fw_setenv -s`.
    pub second_save: &'a str,
    /// After the update, run `firmcast-agent confirm` and print the
    /// environment again.
    pub confirm: bool,
}

/// One boot's settings.
pub struct Boot<'a> {
    /// The flash.
    pub medium: &'a Medium,
    /// `/etc/firmcast/agent.toml`.
    pub agent_toml: &'a str,
    /// `/etc/firmcast/operator.pub`.
    pub public_key: &'a Path,
    /// `/etc/fw-version`.
    pub current_version: &'a str,
    /// After a successful update, read back this many bytes with mtd-utils.
    pub readback_len: Option<u64>,
    /// Bytes of flash to dump for that (covers skipped bad blocks).
    pub dump_len: u64,
    /// A/B slots and the U-Boot environment (nandsim with partitions).
    pub ab: Option<&'a AbSetup<'a>>,
    /// nandsim: what `/dev/mtd0` holds before the agent starts (the old
    /// image, written with `nandwrite` as a factory would). block2mtd's
    /// disk holds its old image already.
    pub old_image: Option<&'a [u8]>,
}

/// A running guest; qemu is killed (SIGKILL, a power cut) on drop.
pub struct Guest {
    /// qemu, started through `ip netns exec`.
    pub proc: Proc,
    /// When qemu was started.
    pub started: Instant,
}

impl Guest {
    /// Boots `emu` with `base` initramfs plus a per-boot overlay archive.
    pub fn boot(
        emu: &Emu,
        ns: &NetNs,
        dir: &Scratch,
        name: &str,
        base: &Path,
        b: &Boot<'_>,
    ) -> Guest {
        let ov = dir.join(&format!("{name}-overlay"));
        let _ = fs::remove_dir_all(&ov);
        fs::create_dir_all(ov.join("etc/firmcast")).expect("overlay dir");
        fs::write(ov.join("etc/firmcast/agent.toml"), b.agent_toml).expect("agent.toml");
        fs::copy(b.public_key, ov.join("etc/firmcast/operator.pub")).expect("public key");
        fs::write(
            ov.join("etc/fw-version"),
            format!("{}\n", b.current_version),
        )
        .expect("fw-version");
        let mut env = format!(
            "FC_IP={GUEST_IP}\nFC_HOSTNAME=cpe-{name}\nFC_DUMP_LEN={}\n",
            b.dump_len
        );
        if std::env::var_os("FIRMCAST_EMU_DEBUG").is_some() {
            env.push_str("FC_DEBUG=1\n");
        }
        if let Some(n) = b.readback_len {
            env.push_str(&format!("FC_READBACK_LEN={n}\n"));
        }
        match b.medium {
            Medium::Block2mtd { erase, .. } => {
                env.push_str(&format!("FC_MTD=block2mtd\nFC_ERASE={erase}\n"))
            }
            Medium::Nandsim { bad_blocks, parts } => {
                let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                env.push_str(&format!(
                    "FC_MTD=nandsim\nFC_BADBLOCKS={}\nFC_NAND_PARTS={}\n",
                    list(bad_blocks),
                    list(parts)
                ));
            }
        }
        if let Some(old) = b.old_image {
            fs::write(ov.join("etc/old.img"), old).expect("old.img");
            env.push_str("FC_OLD_IMAGE=/etc/old.img\n");
        }
        if let Some(ab) = b.ab {
            fs::write(ov.join("etc/slot-a.img"), ab.slot_a).expect("slot-a.img");
            fs::write(ov.join("etc/fw_env.config"), ab.fw_env_config).expect("fw_env.config");
            fs::write(ov.join("etc/u-boot-initial-env"), ab.initial_env).expect("initial env");
            fs::write(ov.join("etc/u-boot-setenv.script"), ab.second_save).expect("setenv script");
            env.push_str(&format!(
                "FC_AB=1\nFC_AB_SLOT={}\nFC_READBACK_DEV=/dev/mtd1\n",
                ab.running_slot
            ));
            if ab.confirm {
                env.push_str("FC_CONFIRM=1\n");
            }
        }
        fs::write(ov.join("etc/emulated.env"), env).expect("emulated.env");
        let initrd = dir.join(&format!("{name}-initrd"));
        // The kernel unpacks concatenated cpio archives in order; an
        // uncompressed archive must come before the compressed one (after a
        // gzip member the kernel expects only more compressed data). The two
        // hold disjoint files.
        let mut bytes = run_bytes(
            Command::new("sh").args([
                "-c",
                &format!(
                    "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0",
                    path_str(&ov)
                ),
            ]),
            "overlay cpio",
        );
        bytes.extend_from_slice(&fs::read(base).expect("base initramfs"));
        fs::write(&initrd, bytes).expect("write initrd");

        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
        match emu.arch {
            Arch::Mipsel => push(&["-M", "malta", "-m", "256", "-vga", "none"]),
            Arch::Armhf => push(&["-M", "virt", "-cpu", "cortex-a15", "-m", "256"]),
        }
        push(&[
            "-kernel",
            path_str(&emu.kernel),
            "-initrd",
            path_str(&initrd),
            "-append",
            "console=ttyS0 console=ttyAMA0 rdinit=/init loglevel=4 panic=-1",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
        ]);
        match emu.arch {
            Arch::Mipsel => push(&[
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02,romfile=",
            ]),
            // armmp (no LPAE) cannot use virt's high PCIe ECAM: virtio-mmio.
            Arch::Armhf => push(&[
                "-device",
                "virtio-net-device,netdev=n0,mac=52:54:00:77:00:02",
            ]),
        }
        if let Medium::Block2mtd { disk, .. } = b.medium {
            // Malta: the PIIX4 IDE disk (ata_piix, /dev/sda). virtio-blk on
            // Malta now and then loses a completion under load and the agent
            // hangs in D state reading the flash.
            match emu.arch {
                Arch::Mipsel => push(&[
                    "-drive",
                    &format!("file={},format=raw,if=ide,index=0", path_str(disk)),
                ]),
                Arch::Armhf => push(&[
                    "-drive",
                    &format!("file={},format=raw,if=none,id=d0", path_str(disk)),
                    "-device",
                    "virtio-blk-device,drive=d0",
                ]),
            }
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let qemu = which(emu.arch.qemu());
        Guest {
            proc: ns.start(name, &qemu, &argv, dir),
            started: Instant::now(),
        }
    }

    /// The console so far.
    pub fn console(&self) -> String {
        self.proc.output()
    }

    /// Wait until the console shows `needle`; panics with the console if
    /// qemu exits or time runs out.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        if !self.proc.wait_for_output(needle, timeout) {
            let console = self.console();
            self.proc.kill();
            panic!(
                "{}: no `{needle}` within {timeout:?}; console:\n{console}",
                self.proc.name
            );
        }
    }

    /// Pull the plug: SIGKILL qemu (by PID, through its Child handle).
    pub fn power_cut(&mut self) {
        self.proc.kill();
    }

    /// The `FCEMU: agent: exit RC vmhwm_kb K ...` line: (exit code, VmHWM kB).
    pub fn agent_exit(&self) -> Option<(i32, u64)> {
        let c = self.console();
        let line = c.lines().find(|l| l.contains("FCEMU: agent: exit "))?;
        let mut w = line[line.find("exit ")? + 5..].split_whitespace();
        let rc = w.next()?.parse().ok()?;
        let _ = w.next()?;
        let hwm = w.next()?.parse().ok()?;
        Some((rc, hwm))
    }

    /// The SHA-256 the guest computed over its mtd-utils read-back.
    pub fn readback_sha256(&self) -> Option<String> {
        self.sha256_line("readback")
    }

    /// The SHA-256 of a `FCEMU: TAG: N bytes sha256 HEX` line.
    pub fn sha256_line(&self, tag: &str) -> Option<String> {
        let c = self.console();
        let needle = format!("FCEMU: {tag}: ");
        let line = c.lines().find(|l| l.contains(&needle))?;
        line.split_whitespace().last().map(str::to_string)
    }

    /// The variables of the `FCEMU: TAG: name=value` lines (`fw_printenv`
    /// in the guest; TAG `env-before`, `env-after` or `env-confirmed`).
    pub fn env(&self, tag: &str) -> BTreeMap<String, String> {
        let needle = format!("FCEMU: {tag}: ");
        self.console()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(&needle)? + needle.len()..];
                let (k, v) = rest.trim_end_matches('\r').split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The flag bytes of the environment copies (`FCEMU: TAG-flag: DEV OFF
    /// FLAG` lines), in fw_env.config order.
    pub fn env_flags(&self, tag: &str) -> Vec<u8> {
        let needle = format!("FCEMU: {tag}-flag: ");
        self.console()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().last()?.parse().ok())
            .collect()
    }

    /// The exit code of `firmcast-agent confirm` (`FCEMU: confirm: exit RC`).
    pub fn confirm_exit(&self) -> Option<i32> {
        let c = self.console();
        let line = c.lines().find(|l| l.contains("FCEMU: confirm: exit "))?;
        line.split_whitespace().last()?.parse().ok()
    }
}

fn run_bytes(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// SHA-256 of a file, hex (the host's `sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path), "sha256sum");
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// SHA-256 of bytes, hex.
pub fn sha256_bytes(dir: &Scratch, bytes: &[u8]) -> String {
    let p = dir.join("sha256-input");
    fs::write(&p, bytes).expect("write");
    sha256_file(&p)
}

/// The keys every guest config shares.
pub fn agent_toml_common(activation: &str) -> AgentToml {
    let mut t = AgentToml::new();
    for (k, v) in [
        ("board", "acme,rt1"),
        ("current_version_file", "/etc/fw-version"),
        ("group", GROUP),
        ("repair_group", REPAIR_GROUP),
        ("interface", GUEST_IP),
        ("repair_server", REPAIR_LISTEN),
        ("public_key", "/etc/firmcast/operator.pub"),
        ("activation", activation),
        ("window_blocks", "4"),
        ("boot_window_secs", "90"),
        ("stall_timeout_secs", "90"),
        ("rcvbuf_bytes", "1048576"),
    ] {
        t.set_text(k, v).unwrap_or_else(|e| panic!("{e}"));
    }
    t
}

/// `t` with each of `settings` (key, value as text) set.
pub fn with(mut t: AgentToml, settings: &[(&str, &str)]) -> String {
    for (k, v) in settings {
        t.set_text(k, v).unwrap_or_else(|e| panic!("{e}"));
    }
    t.to_string()
}

/// The agent's config in the guest, as an integrator would write it.
pub fn agent_toml(activation: &str, block_delay_ms: u32) -> String {
    let delay = block_delay_ms.to_string();
    let mut settings = vec![("target", "mtd:/dev/mtd0")];
    if block_delay_ms > 0 {
        settings.push(("test.block_delay_ms", &delay));
    }
    with(agent_toml_common(activation), &settings)
}

/// The agent's config for [`AbSetup`]: `ab-uboot` with slot A `/dev/mtd0`,
/// slot B `/dev/mtd1`, the environment per `/etc/fw_env.config`, the
/// default variable names spelled out (`boot_slot=a|b`).
pub fn agent_toml_ab() -> String {
    with(
        agent_toml_common("ab-uboot"),
        &[
            ("ab.slot_a", "mtd:/dev/mtd0"),
            ("ab.slot_b", "mtd:/dev/mtd1"),
            ("ab.slot_var", "boot_slot"),
            ("ab.slot_a_value", "a"),
            ("ab.slot_b_value", "b"),
            ("ab.upgrade_available_var", "upgrade_available"),
            ("ab.bootcount_var", "bootcount"),
            ("ab.env_config", "/etc/fw_env.config"),
        ],
    )
}

/// Skip (print why, return `None`) unless the tier can run; with
/// `FIRMCAST_REQUIRE_EMULATED=1` a missing prerequisite fails the test instead.
pub fn require(arch: Arch, test: &str) -> Option<Emu> {
    require_with(arch, test, &[])
}

/// [`require`], and also these files (relative to the extracted guest root,
/// e.g. `usr/bin/fw_setenv`).
pub fn require_with(arch: Arch, test: &str, guest_files: &[&str]) -> Option<Emu> {
    let missing = |e: &Emu| {
        guest_files
            .iter()
            .find(|f| !e.root.join(f).exists())
            .copied()
    };
    let found = Emu::find(arch).and_then(|e| match missing(&e) {
        Some(f) => Err(format!(
            "no {f} in {} (scripts/setup-qemu.sh)",
            e.root.display()
        )),
        None => Ok(e),
    });
    match found {
        Ok(e) => Some(e),
        Err(why) => {
            let msg = format!("emulated: SKIPPED {test}: {why}");
            if std::env::var_os("FIRMCAST_REQUIRE_EMULATED").is_some_and(|v| v == "1") {
                panic!("{msg} (FIRMCAST_REQUIRE_EMULATED=1)");
            }
            println!("{msg}");
            eprintln!("{msg}");
            None
        }
    }
}

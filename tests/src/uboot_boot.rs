//! Harness for the real-U-Boot tier (`tests/tests/uboot_boot.rs`): Debian's
//! `u-boot-qemu` (qemu_arm) boots the emulated ARM device from a virtio disk
//! that holds both firmware slots and the U-Boot environment the agent
//! writes, with the A/B script of `packaging/u-boot/` deciding the slot.
//!
//! ```text
//!  virtio disk (raw, MBR)          U-Boot                      Linux (slot image)
//!  0x100000 env copy 0 ─┐ virtio read + env import -c    /dev/vda   fw_env.config
//!  0x110000 env copy 1 ─┘ write-back: env export -c       (agent: ab-uboot, confirm)
//!  sector 0x1000  slot A (/dev/vda1, FIT) ─ bootm #conf-1
//!  sector 0x7000  slot B (/dev/vda2, FIT)
//!  pflash unit 1: U-Boot's own environment = packaging/u-boot/firmcast-ab.env
//!                 + tests/uboot/qemu-virtio.env (board glue) + per-boot keys
//! ```
//!
//! Debian's kernels cannot write qemu_arm's pflash, hence the environment the
//! agent writes lives on the disk, where U-Boot reads it with `virtio read`
//! and writes its bootcount back with `virtio write`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::qemu::{agent_toml_common, require_with, with, workspace, Emu, Guest, NetNs};
use crate::{firmcast_ok, path_str, run_ok, set_mode, Release, Scratch};

/// Debian's U-Boot for qemu's `virt` machine.
pub const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// Slot A's first sector (`/dev/vda1`).
pub const SLOT_A_SECTOR: u32 = 0x1000;
/// Slot B's first sector (`/dev/vda2`).
pub const SLOT_B_SECTOR: u32 = 0x7000;
/// Sectors per slot (12 MiB).
pub const SLOT_SECTORS: u32 = 0x6000;
/// The two environment copies on the disk and their size (matches
/// `tests/uboot/qemu-virtio.env` and the slot image's fw_env.config).
pub const ENV_OFFSETS: [u64; 2] = [0x10_0000, 0x11_0000];
/// Environment size of each copy.
pub const ENV_SIZE: u32 = 0x4000;
const PFLASH_ENV_SIZE: &str = "0x40000";
const PFLASH_BYTES: u64 = 64 << 20;

/// Skip (print why) unless the emulated ARM tier and U-Boot's packages are
/// there (`scripts/setup-qemu.sh`, `scripts/setup-uboot.sh`).
pub fn require_uboot(test: &str) -> Option<Emu> {
    let emu = require_with(crate::qemu::Arch::Armhf, test, &["bin/busybox"])?;
    let missing = [UBOOT_BIN, "mkimage", "mkenvimage", "fw_setenv", "dtc"]
        .into_iter()
        .find(|t| {
            if t.starts_with('/') {
                !Path::new(t).exists()
            } else {
                !on_path(t)
            }
        });
    match missing {
        None => Some(emu),
        Some(m) => {
            let msg = format!("uboot: SKIPPED {test}: {m} missing (scripts/setup-uboot.sh)");
            if std::env::var_os("FIRMCAST_REQUIRE_EMULATED").is_some_and(|v| v == "1") {
                panic!("{msg} (FIRMCAST_REQUIRE_EMULATED=1)");
            }
            println!("{msg}");
            None
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The agent's config baked into every slot image: `ab-uboot` with the two
/// partitions of the virtio disk and the environment at its raw offsets.
pub fn agent_toml() -> String {
    with(
        agent_toml_common("ab-uboot"),
        &[
            ("ab.slot_a", "file:/dev/vda1"),
            ("ab.slot_b", "file:/dev/vda2"),
            ("ab.env_config", "/etc/fw_env.config"),
        ],
    )
}

/// Keys in `dir/keys` and the `/etc/firmcast` every slot image carries.
pub fn etc_dir(dir: &Scratch) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.join("firmcast.key").exists() {
        firmcast_ok(&["keygen", "--out", path_str(&keys)]);
        set_mode(&keys, 0o755);
    }
    let etc = dir.join("etc-firmcast");
    fs::create_dir_all(&etc).expect("etc dir");
    fs::write(etc.join("agent.toml"), agent_toml()).expect("agent.toml");
    fs::copy(keys.join("firmcast.pub"), etc.join("operator.pub")).expect("operator.pub");
    etc
}

/// A slot image (FIT: kernel + initramfs), `behaviour` `good` or `dead`
/// (its init powers off before confirming).
pub fn slot_image(emu: &Emu, dir: &Scratch, version: &str, behaviour: &str) -> PathBuf {
    let etc = etc_dir(dir);
    let out = dir.join(&format!("slot-{version}-{behaviour}.itb"));
    run_ok(
        Command::new("bash").args([
            path_str(&workspace().join("tests/uboot/build-slot.sh")),
            path_str(&emu.root),
            path_str(&emu.agent),
            path_str(&etc),
            version,
            behaviour,
            path_str(&out),
        ]),
        "build slot image",
    );
    out
}

/// A signed release of a slot image (keys from [`etc_dir`]).
pub fn release_of(dir: &Scratch, image: &Path, version: &str) -> Release {
    let manifest = dir.join(&format!("{version}.manifest"));
    firmcast_ok(&[
        "manifest",
        "--image",
        path_str(image),
        "--board",
        "acme,rt1",
        "--version",
        version,
        "--key",
        path_str(&dir.join("keys/firmcast.key")),
        "--out",
        path_str(&manifest),
    ]);
    Release {
        image: image.to_path_buf(),
        bytes: fs::read(image).expect("slot image"),
        manifest,
        public_key: dir.join("keys/firmcast.pub"),
    }
}

/// The virtio disk `dir/NAME.img`: an MBR with the two slot partitions,
/// the images in them, and the environment `env` (`name=value` lines, e.g.
/// `boot_slot=a`) written by libubootenv's `fw_setenv` as a factory would.
pub fn make_disk(dir: &Scratch, name: &str, slots: [Option<&Path>; 2], env: &str) -> PathBuf {
    let disk = dir.join(&format!("{name}.img"));
    let sector = 512usize;
    let total = (SLOT_B_SECTOR + SLOT_SECTORS) as usize * sector;
    let mut bytes = vec![0u8; total];
    for (i, start) in [SLOT_A_SECTOR, SLOT_B_SECTOR].into_iter().enumerate() {
        let e = &mut bytes[446 + 16 * i..462 + 16 * i];
        // status, CHS (unused), type 0x83, CHS, LBA start, sector count.
        e[..4].copy_from_slice(&[0, 0xff, 0xff, 0xff]);
        e[4..8].copy_from_slice(&[0x83, 0xff, 0xff, 0xff]);
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&SLOT_SECTORS.to_le_bytes());
    }
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    for (image, start) in slots.into_iter().zip([SLOT_A_SECTOR, SLOT_B_SECTOR]) {
        let Some(image) = image else { continue };
        let data = fs::read(image).expect("slot image");
        let at = start as usize * sector;
        bytes[at..at + data.len()].copy_from_slice(&data);
    }
    fs::write(&disk, bytes).expect("disk image");
    let cfg = dir.join(&format!("{name}-fw_env.config"));
    let lines: Vec<String> = ENV_OFFSETS
        .iter()
        .map(|o| format!("{} {o:#x} {ENV_SIZE:#x}\n", path_str(&disk)))
        .collect();
    fs::write(&cfg, lines.concat()).expect("fw_env.config");
    let initial = dir.join(&format!("{name}-initial.env"));
    fs::write(&initial, env).expect("initial env");
    run_ok(
        Command::new("fw_setenv").args(["-c", path_str(&cfg), "-f", path_str(&initial)]),
        "fw_setenv on the disk image",
    );
    disk
}

/// `name=value` lines of an environment text file (`#` comments skipped).
fn env_text(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// U-Boot's own environment for one boot (pflash unit 1): the shipped A/B
/// script, the board glue, then `extra` (later entries win).
pub fn board_env(dir: &Scratch, name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let ws = workspace();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.extend(env_text(&ws.join("packaging/u-boot/firmcast-ab.env")));
    vars.extend(env_text(&ws.join("tests/uboot/qemu-virtio.env")));
    for (k, v) in extra {
        vars.insert((*k).to_string(), (*v).to_string());
    }
    let txt = dir.join(&format!("{name}-uboot-env.txt"));
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(&txt, text).expect("env text");
    let img = dir.join(&format!("{name}-uboot-env.bin"));
    run_ok(
        Command::new("mkenvimage").args([
            "-s",
            PFLASH_ENV_SIZE,
            "-o",
            path_str(&img),
            path_str(&txt),
        ]),
        "mkenvimage",
    );
    fs::File::options()
        .write(true)
        .open(&img)
        .and_then(|f| f.set_len(PFLASH_BYTES))
        .expect("pad pflash image");
    img
}

/// Power on: U-Boot from `-bios`, its environment in pflash, the disk and
/// the tap NIC as virtio-mmio devices.
pub fn boot(ns: &NetNs, dir: &Scratch, name: &str, disk: &Path, env: &Path) -> Guest {
    let pflash = format!("if=pflash,unit=1,format=raw,file={}", path_str(env));
    let drive = format!("file={},format=raw,if=none,id=d0", path_str(disk));
    let args = [
        "-M",
        "virt",
        "-cpu",
        "cortex-a15",
        "-m",
        "256",
        "-bios",
        UBOOT_BIN,
        "-nic",
        "none",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-drive",
        &pflash,
        "-drive",
        &drive,
        "-device",
        "virtio-blk-device,drive=d0",
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:00:77:00:02",
    ];
    Guest {
        proc: ns.start(name, Path::new("qemu-system-arm"), &args, dir),
        started: Instant::now(),
    }
}

/// The console lines of the A/B script (`firmcast: …`) and of the guest
/// (`FCUB: …`), carriage returns removed, for asserting and printing.
pub fn script_lines(console: &str) -> Vec<String> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            l.starts_with("firmcast: ")
                || l.contains("FCUB: ")
                || l.contains("activated slot")
                || l.contains("rolled back: ")
                || l.contains("confirmed: ")
                || l.contains("resume: ")
        })
        .map(str::to_string)
        .collect()
}

/// The variables of the current environment copy as the guest dumped them
/// (`FCUB: env-TAG copy C flag F: name=value`): the copy with the higher flag
/// (copies here are adjacent saves, so no wrap-around).
pub fn guest_env(console: &str, tag: &str) -> BTreeMap<String, String> {
    let needle = format!("FCUB: env-{tag} copy ");
    let mut copies: BTreeMap<(u32, u32), BTreeMap<String, String>> = BTreeMap::new();
    for l in console.lines() {
        let Some(at) = l.find(&needle) else { continue };
        let rest = l[at + needle.len()..].trim_end_matches('\r');
        let mut w = rest.splitn(4, ' ');
        let (Some(c), Some(_), Some(flag), Some(kv)) = (w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let (Ok(c), Ok(flag)) = (c.parse::<u32>(), flag.trim_end_matches(':').parse::<u32>())
        else {
            continue;
        };
        if let Some((k, v)) = kv.split_once('=') {
            copies
                .entry((flag, c))
                .or_default()
                .insert(k.into(), v.into());
        }
    }
    copies
        .into_iter()
        .next_back()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

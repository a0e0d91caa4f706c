//! Interoperability of `flasher::uboot_env` with libubootenv's real tools
//! (`fw_printenv` / `fw_setenv`, installed by `scripts/setup-uboot.sh`), on
//! file environments described by an fw_env.config: single and redundant,
//! both directions, every variable equal.
//!
//! Without `fw_printenv` on the PATH the tests say so on stderr and return.

use std::path::{Path, PathBuf};
use std::process::Command;

use flasher::uboot_env::{open_config_file, Endian, Vars};

fn have_tools() -> bool {
    let ok = ["fw_printenv", "fw_setenv"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if !ok {
        eprintln!("SKIPPED: fw_printenv/fw_setenv not found (run scripts/setup-uboot.sh)");
    }
    ok
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("fc-ubootenv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Files of 0xFF and an fw_env.config naming them; returns the config path.
fn setup(dir: &Path, redundant: bool) -> PathBuf {
    let size = 0x4000usize;
    let mut lines = String::from("# firmcast interop test\n");
    let copies = if redundant { 2 } else { 1 };
    for i in 0..copies {
        let f = dir.join(format!("env{i}.bin"));
        std::fs::write(&f, vec![0xFFu8; size + 0x1000]).expect("write");
        // Copy 1 at an offset, to check offsets too.
        let off = if i == 1 { 0x1000 } else { 0 };
        lines.push_str(&format!("{} {off:#x} {size:#x}\n", f.display()));
    }
    let cfg = dir.join("fw_env.config");
    std::fs::write(&cfg, lines).expect("config");
    cfg
}

/// libubootenv's script format (`-s`): `name=value` per line; an empty
/// value deletes the variable.
fn fw_setenv(cfg: &Path, script: &str, defenv: Option<&Path>) {
    let s = cfg.with_file_name("script.txt");
    std::fs::write(&s, script).expect("script");
    let mut c = Command::new("fw_setenv");
    c.arg("-c").arg(cfg).arg("-s").arg(&s);
    if let Some(d) = defenv {
        c.arg("-f").arg(d);
    }
    let out = c.output().expect("fw_setenv");
    assert!(out.status.success(), "fw_setenv: {out:?}");
}

fn fw_printenv(cfg: &Path) -> Vars {
    let out = Command::new("fw_printenv")
        .arg("-c")
        .arg(cfg)
        .output()
        .expect("fw_printenv");
    assert!(out.status.success(), "fw_printenv: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn roundtrip(redundant: bool) {
    if !have_tools() {
        return;
    }
    let dir = Dir::new(if redundant { "redund" } else { "single" });
    let cfg = setup(&dir.0, redundant);
    // 1. fw_setenv creates it (from a default environment: none is valid yet).
    let defenv = dir.0.join("defenv");
    std::fs::write(
        &defenv,
        "bootcmd=run boot_${boot_slot}\nboot_slot=a\nbootlimit=3\n",
    )
    .expect("defenv");
    fw_setenv(
        &cfg,
        "bootcount=0\nupgrade_available=0\nbootargs=console=ttyS0,115200 root=/dev/mtdblock3\n",
        Some(&defenv),
    );
    for _ in 0..3 {
        // More saves: the redundant flags move on, copies alternate.
        fw_setenv(&cfg, "serial#=0042\n", None);
    }
    let theirs = fw_printenv(&cfg);
    assert_eq!(theirs.get("boot_slot"), Some("a"));
    assert!(theirs.len() >= 7, "{theirs:?}");

    // 2. firmcast reads exactly what fw_printenv reads.
    let mut env = open_config_file(&cfg, Endian::native()).expect("open");
    assert!(env.is_valid());
    assert_eq!(env.is_redundant(), redundant);
    assert_eq!(env.vars(), &theirs, "firmcast reads what fw_printenv reads");

    // 3. firmcast changes it (the A/B flip), fw_printenv reads it back.
    for (k, v) in [
        ("boot_slot", "b"),
        ("upgrade_available", "1"),
        ("bootcount", "0"),
        ("firmcast_activated", "b"),
    ] {
        env.set(k, v).expect("set");
    }
    env.unset("serial#");
    env.save().expect("save");
    let expected = env.vars().clone();
    drop(env);
    assert_eq!(
        fw_printenv(&cfg),
        expected,
        "fw_printenv reads what firmcast wrote"
    );

    // 4. fw_setenv changes firmcast's environment; firmcast reads it back.
    fw_setenv(
        &cfg,
        "upgrade_available=0\nbootcount=0\nfirmcast_activated=\n",
        None,
    );
    let env = open_config_file(&cfg, Endian::native()).expect("reopen");
    let theirs = fw_printenv(&cfg);
    assert_eq!(env.vars(), &theirs);
    assert_eq!(env.get("upgrade_available"), Some("0"));
    assert_eq!(env.get("firmcast_activated"), None);
    assert_eq!(env.get("boot_slot"), Some("b"));

    // 5. Several firmcast saves in a row, each read by fw_printenv.
    let mut env = env;
    for i in 0..5 {
        env.set("round", &i.to_string()).expect("set");
        env.save().expect("save");
        assert_eq!(fw_printenv(&cfg).get("round"), Some(i.to_string().as_str()));
    }
    eprintln!(
        "{} environment: {} variables equal both ways",
        if redundant { "redundant" } else { "single" },
        env.vars().len()
    );
}

#[test]
fn single_copy_both_directions() {
    roundtrip(false);
}

#[test]
fn redundant_copies_both_directions() {
    roundtrip(true);
}

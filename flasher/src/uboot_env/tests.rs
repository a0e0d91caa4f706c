//! Codec golden bytes, copy selection, flag wrap-around, fw_env.config
//! parsing, NAND bad sectors, and a power cut at every flash operation of a
//! save on simulated NOR and NAND.

use super::*;
use crate::testutil::TempDir;
use crate::{Faults, FileFlash, SimNand, SimNor};

pub(super) fn vars(list: &[(&str, &str)]) -> Vars {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Encoding golden bytes; the CRC was computed independently (Python's
/// `zlib.crc32`) over the data padded with 0xFF to 0x4000 bytes.
#[test]
fn golden_single_copy() {
    let v = vars(&[("baz", "qux"), ("boot_slot", "a"), ("bootcmd", "run x")]);
    let out = encode(&v, 0x4000, None, Endian::Little).expect("encode");
    let mut want = vec![0x8f, 0x75, 0xc0, 0x03];
    want.extend_from_slice(b"baz=qux\0boot_slot=a\0bootcmd=run x\0\0");
    assert_eq!(&out[..want.len()], &want[..]);
    assert!(out[want.len()..].iter().all(|&b| b == 0xFF));
    assert_eq!(out.len(), 0x4000);
    let d = decode(&out, false, Endian::Little);
    assert!(d.crc_ok);
    assert_eq!(d.vars, v);
    assert_eq!(d.flag, None);
    // The same environment for a big-endian CPU: the CRC bytes swap.
    let be = encode(&v, 0x4000, None, Endian::Big).expect("encode");
    assert_eq!(&be[..4], &[0x03, 0xc0, 0x75, 0x8f]);
    assert_eq!(&be[4..], &out[4..]);
    assert!(!decode(&be, false, Endian::Little).crc_ok);
    assert!(decode(&be, false, Endian::Big).crc_ok);
}

/// Written by libubootenv 0.3.2's `fw_setenv` (x86-64) on a 0x4000-byte
/// file of 0xFF: `fw_setenv -c single.config -f defenv baz qux` with defenv
/// `bootcmd=run x`, `boot_slot=a`. Its padding is not all 0xFF: the tool
/// leaves 8 bytes of uninitialised heap at 0x1008, covered by the CRC. A
/// reader must accept any padding.
#[test]
fn golden_fw_setenv_output_decodes() {
    let mut raw = vec![0xFFu8; 0x4000];
    let mut head = vec![0x31, 0x70, 0x47, 0x8c];
    head.extend_from_slice(b"baz=qux\0boot_slot=a\0bootcmd=run x\0\0");
    raw[..head.len()].copy_from_slice(&head);
    raw[0x1008..0x1010].copy_from_slice(&[0x41, 0xe7, 0x01, 0, 0, 0, 0, 0]);
    let d = decode(&raw, false, Endian::Little);
    assert!(d.crc_ok);
    assert_eq!(
        d.vars,
        vars(&[("baz", "qux"), ("boot_slot", "a"), ("bootcmd", "run x")])
    );
}

#[test]
fn redundant_copy_has_a_flag_outside_the_crc() {
    let v = vars(&[("a", "1")]);
    let mut out = encode(&v, 64, Some(7), Endian::Little).expect("encode");
    assert_eq!(
        &out[..4],
        &[0x85, 0x4a, 0xce, 0x26],
        "zlib.crc32 of the data"
    );
    assert_eq!(out[4], 7);
    assert_eq!(&out[5..10], b"a=1\0\0");
    let crc = crc32fast::hash(&out[5..]);
    assert_eq!(&out[..4], &crc.to_le_bytes());
    out[4] = 200;
    let d = decode(&out, true, Endian::Little);
    assert!(d.crc_ok, "the flag is not covered by the CRC");
    assert_eq!(d.flag, Some(200));
    out[20] ^= 1;
    let d = decode(&out, true, Endian::Little);
    assert!(!d.crc_ok && d.vars.is_empty());
}

#[test]
fn empty_environment_and_limits() {
    let out = encode(&Vars::new(), 16, None, Endian::Little).expect("empty");
    assert_eq!(&out[4..6], b"\0\0");
    assert!(decode(&out, false, Endian::Little).vars.is_empty());
    let e = encode(
        &vars(&[("long", &"x".repeat(20))]),
        16,
        None,
        Endian::Little,
    )
    .expect_err("too large");
    assert_eq!(e.kind, EnvErrorKind::TooLarge);
    assert!(e.to_string().contains("\"long\""), "{e}");
    // Exactly full: 4 CRC + "ab=cd\0" + "\0" = 11.
    assert!(encode(&vars(&[("ab", "cd")]), 11, None, Endian::Little).is_ok());
    assert!(encode(&vars(&[("ab", "cd")]), 10, None, Endian::Little).is_err());
    for (k, v) in [("", "x"), ("a=b", "x"), ("a", "x\0y")] {
        let e = check_variable(k, v).expect_err(k);
        assert_eq!(e.kind, EnvErrorKind::BadVariable);
    }
}

#[test]
fn decode_skips_junk_and_stops_at_the_terminator() {
    let mut data = vec![0u8; 4];
    data.extend_from_slice(b"noequals\0a=1\0a=2\0b==x\0\0c=3\0");
    data.resize(64, 0xAB);
    let crc = crc32fast::hash(&data[4..]);
    data[..4].copy_from_slice(&crc.to_le_bytes());
    let d = decode(&data, false, Endian::Little);
    assert!(d.crc_ok);
    assert_eq!(d.vars, vars(&[("a", "2"), ("b", "=x")]));
}

#[test]
fn copy_selection_follows_libubootenv() {
    use FlagScheme::{Boolean, Incremental};
    assert_eq!(select_copy([false, false], [1, 1], Boolean), None);
    assert_eq!(select_copy([true, false], [0, 1], Boolean), Some(0));
    assert_eq!(select_copy([false, true], [1, 0], Incremental), Some(1));
    // Boolean: active (1) beats obsolete (0); a 0xFF flag counts as newest.
    assert_eq!(select_copy([true, true], [1, 0], Boolean), Some(0));
    assert_eq!(select_copy([true, true], [0, 1], Boolean), Some(1));
    assert_eq!(select_copy([true, true], [1, 0xFF], Boolean), Some(1));
    assert_eq!(select_copy([true, true], [0xFF, 1], Boolean), Some(0));
    // Both active (power cut before the old flag was cleared): copy 0.
    assert_eq!(select_copy([true, true], [1, 1], Boolean), Some(0));
    // Incremental: larger wins, with 255 → 0 wrap-around.
    assert_eq!(select_copy([true, true], [4, 5], Incremental), Some(1));
    assert_eq!(select_copy([true, true], [5, 4], Incremental), Some(0));
    assert_eq!(select_copy([true, true], [0xFF, 0], Incremental), Some(1));
    assert_eq!(select_copy([true, true], [0, 0xFF], Incremental), Some(0));
    assert_eq!(select_copy([true, true], [3, 3], Incremental), Some(0));
}

#[test]
fn fw_env_config_parses_like_libubootenv() {
    let text = "\
# NOR router: two copies in one 64 KiB partition of 4 KiB sectors
/dev/mtd1  0x0000  0x8000  0x1000  8
/dev/mtd1  0x8000  8000    1000
/dev/mtd9  0x0  0x8000
";
    let c = parse_fw_env_config("fw_env.config", text).expect("parses");
    assert!(c.redundant());
    assert_eq!(
        c.copies[0],
        EnvLocation {
            device: "/dev/mtd1".into(),
            offset: 0,
            env_size: 0x8000,
            sector_size: 0x1000,
            sectors: 8
        }
    );
    // Sizes are hexadecimal even without 0x; the third line is ignored.
    assert_eq!(c.copies[1].offset, 0x8000);
    assert_eq!(c.copies[1].env_size, 0x8000);
    assert_eq!(c.copies[1].sector_size, 0x1000);
    assert_eq!(c.copies[1].sectors, 0);
    let one = parse_fw_env_config("x", "/tmp/env 16384 4000\njunk\n").expect("decimal offset");
    assert_eq!(one.copies.len(), 1);
    assert_eq!(one.copies[0].offset, 16384);
    assert_eq!(one.copies[0].env_size, 0x4000);

    let e = parse_fw_env_config("/etc/fw_env.config", "# only comments\n").expect_err("empty");
    assert_eq!(e.kind, EnvErrorKind::Config);
    let e =
        parse_fw_env_config("/etc/fw_env.config", "\n/dev/mtd1 0x0 0xZZ\n").expect_err("bad size");
    assert!(e.to_string().contains("/etc/fw_env.config line 2"), "{e}");
    assert!(e.to_string().contains("0xZZ"), "{e}");
    let e = parse_fw_env_config("f", "/a 0 0x4000\n/b 0 0x2000\n").expect_err("sizes differ");
    assert!(e.to_string().contains("differ"), "{e}");
}

fn nor(dir: &TempDir, name: &str) -> SimNor {
    SimNor::create(dir.join(name), 4 * 0x10000, 0x10000, 1).expect("create nor")
}

fn loc(dev: &str, offset: u64, size: u32) -> EnvLocation {
    EnvLocation::new(dev, offset, size)
}

#[test]
fn file_flags_increment_and_wrap_around() {
    let dir = TempDir::new("env-wrap");
    let p = dir.join("env.bin");
    let f = FileFlash::open(&p, Some(0x2000)).expect("file");
    let path = p.display().to_string();
    let mut env = UbootEnv::open_redundant_on_one(
        f,
        loc(&path, 0, 0x1000),
        loc(&path, 0x1000, 0x1000),
        Endian::Little,
    )
    .expect("open");
    assert!(!env.is_valid());
    assert_eq!(env.scheme(), FlagScheme::Incremental);
    let mut seen_wrap = false;
    for i in 0..600u32 {
        let before = env.current_copy();
        env.set("counter", &i.to_string()).expect("set");
        let plan = env.plan();
        assert_ne!(plan.copy, before, "always the inactive copy");
        env.save().expect("save");
        seen_wrap |= plan.flag == Some(0) && i > 0;
        // A fresh reader sees the latest save.
        let f = FileFlash::open(&p, None).expect("reopen");
        let again = UbootEnv::open_redundant_on_one(
            f,
            loc(&path, 0, 0x1000),
            loc(&path, 0x1000, 0x1000),
            Endian::Little,
        )
        .expect("reopen env");
        assert_eq!(
            again.get("counter"),
            Some(i.to_string().as_str()),
            "save {i}"
        );
        assert_eq!(again.current_copy(), plan.copy);
    }
    assert!(seen_wrap, "the flag wrapped from 255 to 0");
}

#[test]
fn nor_boolean_flags_and_obsolete_copy() {
    let dir = TempDir::new("env-nor");
    let n = nor(&dir, "nor.bin");
    let dev = n.path().display().to_string();
    let mut env = UbootEnv::open_redundant_on_one(
        n,
        loc(&dev, 0, 0x4000),
        loc(&dev, 0x10000, 0x4000),
        Endian::Little,
    )
    .expect("open");
    assert_eq!(env.scheme(), FlagScheme::Boolean);
    env.set("x", "1").expect("set");
    env.save().expect("first");
    assert_eq!(env.current_copy(), 1);
    env.set("x", "2").expect("set");
    let plan = env.plan();
    assert_eq!(plan.copy, 0);
    assert_eq!(plan.flag, Some(FLAG_ACTIVE));
    assert!(
        plan.to_string().contains("then clear the flag of"),
        "{plan}"
    );
    env.save().expect("second");
    let raw = std::fs::read(dir.join("nor.bin")).expect("read");
    assert_eq!(raw[4], FLAG_ACTIVE, "copy 0 active");
    assert_eq!(raw[0x10000 + 4], FLAG_OBSOLETE, "copy 1 obsolete");
    let reopened = UbootEnv::open_redundant_on_one(
        SimNor::open(dir.join("nor.bin")).expect("open"),
        loc(&dev, 0, 0x4000),
        loc(&dev, 0x10000, 0x4000),
        Endian::Little,
    )
    .expect("reopen");
    assert_eq!(reopened.get("x"), Some("2"));
}

#[test]
fn copies_sharing_an_eraseblock_are_refused() {
    let dir = TempDir::new("env-overlap");
    let n = nor(&dir, "nor.bin");
    let dev = n.path().display().to_string();
    // Copy 0 reserves two sectors (one spare); copy 1 starts in the spare.
    let mut spare = loc(&dev, 0, 0x4000);
    spare.sectors = 2;
    let e = UbootEnv::open_redundant_on_one(n, spare, loc(&dev, 0x10000, 0x4000), Endian::Little)
        .expect_err("shared eraseblock");
    assert_eq!(e.kind, EnvErrorKind::Geometry);
    let msg = e.to_string();
    assert!(
        msg.contains("share erase sectors") && msg.contains(&dev),
        "{msg}"
    );
    let n = nor(&dir, "nor2.bin");
    let e = UbootEnv::open_redundant_on_one(
        n,
        loc("nor2", 0, 0x4000),
        loc("nor2", 0x8000, 0x4000),
        Endian::Little,
    )
    .expect_err("inside the first copy's eraseblock");
    assert!(e.to_string().contains("nor2 at offset 0x8000"), "{e}");
    let n = nor(&dir, "nor3.bin");
    let e = UbootEnv::open_single(n, loc("nor2", 0x1000, 0x4000), Endian::Little)
        .expect_err("unaligned");
    assert!(e.to_string().contains("nor2 at offset 0x1000"), "{e}");
}

#[test]
fn nand_skips_bad_sectors_in_the_copy_area() {
    let dir = TempDir::new("env-nand");
    // 8 eraseblocks of 16 KiB, 512-byte pages; block 0 and 4 are bad.
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 0x4000, 0x4000, 512, &[0, 4]).expect("nand");
    let dev = p.display().to_string();
    let mk = |off: u64| EnvLocation {
        device: dev.clone(),
        offset: off,
        env_size: 0x2000,
        sector_size: 0,
        sectors: 2,
    };
    let mut env =
        UbootEnv::open_redundant_on_one(nand, mk(0), mk(0x10000), Endian::Little).expect("open");
    assert_eq!(env.scheme(), FlagScheme::Incremental);
    env.set("boot_slot", "b").expect("set");
    env.save().expect("save 1");
    env.set("boot_slot", "a").expect("set");
    env.save().expect("save 2");
    let raw = std::fs::read(&p).expect("read");
    // Both copies landed in the spare sector after the bad one.
    assert!(
        raw[0..0x4000].iter().all(|&b| b == 0xFF),
        "bad block 0 untouched"
    );
    assert_eq!(&raw[0x4000 + 5..0x4000 + 16], b"boot_slot=a");
    assert_eq!(&raw[0x14000 + 5..0x14000 + 16], b"boot_slot=b");
    let again = UbootEnv::open_redundant_on_one(
        SimNand::open(&p).expect("reopen"),
        mk(0),
        mk(0x10000),
        Endian::Little,
    )
    .expect("reopen env");
    assert_eq!(again.get("boot_slot"), Some("a"));
    // One sector and it is bad: the error names the device and offset.
    let nand = SimNand::open(&p).expect("reopen");
    let mut only = mk(0);
    only.sectors = 1;
    let e = UbootEnv::open_single(nand, only, Endian::Little).expect_err("no good sector");
    assert!(
        e.to_string().contains(&format!("{dev} at offset 0x0")),
        "{e}"
    );
    assert!(e.to_string().contains("no good sector"), "{e}");
}

/// A power cut at every flash operation of a save leaves one valid
/// environment, entirely old or entirely new; the next save then works.
fn power_cut_at_every_step(make: impl Fn(&std::path::Path) -> Box<dyn Flash>, tag: &str) {
    let dir = TempDir::new(tag);
    let p = dir.join("flash.bin");
    let dev = p.display().to_string();
    let (l0, l1) = (loc(&dev, 0, 0x4000), loc(&dev, 0x20000, 0x4000));
    let old = vars(&[
        ("boot_slot", "a"),
        ("bootcount", "0"),
        ("upgrade_available", "0"),
    ]);
    let new = vars(&[
        ("boot_slot", "b"),
        ("bootcount", "0"),
        ("upgrade_available", "1"),
        ("extra", "y"),
    ]);
    {
        let mut env =
            UbootEnv::open_redundant_on_one(make(&p), l0.clone(), l1.clone(), Endian::Little)
                .expect("open");
        for (k, v) in old.iter() {
            env.set(k, v).expect("set");
        }
        env.save().expect("gen 1");
        env.save().expect("gen 2: both copies valid");
    }
    let snapshot = std::fs::read(&p).expect("snapshot");
    let side = {
        let mut s = p.clone().into_os_string();
        s.push(".sim");
        std::path::PathBuf::from(s)
    };
    let side_snapshot = std::fs::read(&side).expect("sidecar");
    let (mut saw_old, mut saw_new, mut cuts) = (false, false, 0);
    for n in 0..64u64 {
        std::fs::write(&p, &snapshot).expect("restore");
        std::fs::write(&side, &side_snapshot).expect("restore sidecar");
        let mut env =
            UbootEnv::open_redundant_on_one(make(&p), l0.clone(), l1.clone(), Endian::Little)
                .expect("open");
        assert_eq!(env.vars(), &old);
        env.vars.clone_from(&new);
        set_power_cut(env.devices_mut(), n);
        match env.save() {
            Ok(()) => {
                assert!(n > 0, "at least one operation");
                break;
            }
            Err(e) => assert!(e.is_power_cut(), "op {n}: {e}"),
        }
        cuts += 1;
        drop(env);
        let mut after =
            UbootEnv::open_redundant_on_one(make(&p), l0.clone(), l1.clone(), Endian::Little)
                .expect("reopen");
        assert!(after.is_valid(), "cut at op {n}: no valid copy");
        if after.vars() == &old {
            saw_old = true;
        } else {
            assert_eq!(after.vars(), &new, "cut at op {n}: a mix");
            saw_new = true;
        }
        // Power back: the next save works and is read back.
        after.set("after_cut", "1").expect("set");
        after.save().expect("save after the cut");
        let check =
            UbootEnv::open_redundant_on_one(make(&p), l0.clone(), l1.clone(), Endian::Little)
                .expect("reopen");
        assert_eq!(check.get("after_cut"), Some("1"));
    }
    assert!(cuts >= 2, "{tag}: only {cuts} operations");
    assert!(saw_old, "{tag}: a cut leaves the old environment");
    eprintln!("{tag}: {cuts} power-cut points, old survived: {saw_old}, new survived: {saw_new}");
}

fn set_power_cut(devs: &mut [Box<dyn Flash>], n: u64) {
    // Box<dyn Flash> hides the sim type; the tests keep a side channel.
    POWER_CUT.with(|c| c.set(Some(n)));
    let _ = devs;
}

thread_local! {
    static POWER_CUT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// A sim whose faults are set from [`POWER_CUT`] on its first erase/write.
struct CutNor(SimNor, bool);
struct CutNand(SimNand, bool);

macro_rules! cut_flash {
    ($t:ident) => {
        impl Flash for $t {
            fn geometry(&self) -> crate::Geometry {
                self.0.geometry()
            }
            fn read(&mut self, o: u64, b: &mut [u8]) -> Result<crate::ReadStatus, Error> {
                self.0.read(o, b)
            }
            fn erase_block(&mut self, b: u32) -> Result<(), Error> {
                self.arm();
                self.0.erase_block(b)
            }
            fn write(&mut self, o: u64, d: &[u8]) -> Result<(), Error> {
                self.arm();
                self.0.write(o, d)
            }
            fn is_bad(&mut self, b: u32) -> Result<bool, Error> {
                self.0.is_bad(b)
            }
            fn mark_bad(&mut self, b: u32) -> Result<(), Error> {
                self.0.mark_bad(b)
            }
        }
        impl $t {
            fn arm(&mut self) {
                if !self.1 {
                    self.1 = true;
                    if let Some(n) = POWER_CUT.with(|c| c.take()) {
                        let done = self.0.op_count();
                        self.0.set_faults(Faults {
                            power_cut_after: Some(done + n),
                            ..Faults::default()
                        });
                    }
                }
            }
        }
    };
}
cut_flash!(CutNor);
cut_flash!(CutNand);

#[test]
fn power_cut_at_every_step_nor() {
    power_cut_at_every_step(
        |p| {
            let f = if p.exists() {
                SimNor::open(p)
            } else {
                SimNor::create(p, 4 * 0x20000, 0x20000, 1)
            };
            Box::new(CutNor(f.expect("nor"), false))
        },
        "env-cut-nor",
    );
}

#[test]
fn power_cut_at_every_step_nand() {
    power_cut_at_every_step(
        |p| {
            let f = if p.exists() {
                SimNand::open(p)
            } else {
                SimNand::create(p, 4 * 0x20000, 0x20000, 2048, &[])
            };
            Box::new(CutNand(f.expect("nand"), false))
        },
        "env-cut-nand",
    );
}

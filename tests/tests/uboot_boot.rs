//! The A/B boot script of `packaging/u-boot/` in a real bootloader: Debian's
//! U-Boot (qemu_arm) boots the emulated ARM device from the slot the agent's
//! `ab-uboot` activation chose, counts the boots of an unconfirmed slot, and
//! falls back to the old slot after `bootlimit` boots of a new image that
//! never confirms. See `tests/src/uboot_boot.rs` for the rig.
//!
//! Needs root, `qemu-system-arm`, the extracted armhf packages and the armv7
//! agent (`scripts/setup-qemu.sh`, `cross/build.sh`), and `u-boot-qemu`,
//! `u-boot-tools`, `device-tree-compiler` (`scripts/setup-uboot.sh`);
//! otherwise it prints `uboot: SKIPPED …` (a failure with
//! `FIRMCAST_REQUIRE_EMULATED=1`).

use std::time::{Duration, Instant};

use firmcast_integration::qemu::{Guest, NetNs};
use firmcast_integration::uboot_boot::*;
use firmcast_integration::*;

const BOOT: Duration = Duration::from_secs(60);
const RECEIVE: Duration = Duration::from_secs(150);

/// Runs one power-on to its end (`FCUB: done` or the image powering itself
/// off) and returns the console; prints the script's and the guest's lines.
fn power_on(g: &mut Guest, n: u32, until: &str, timeout: Duration) -> String {
    g.expect(until, timeout);
    // The guest powers off after its last line; give qemu that moment.
    let _ = g.proc.wait(Duration::from_secs(10));
    g.power_cut();
    let console = g.console();
    for l in script_lines(&console) {
        println!("uboot: boot {n}: {l}");
    }
    println!("uboot: boot {n}: {:.1} s", g.started.elapsed().as_secs_f64());
    console
}

fn has(console: &str, needle: &str) -> bool {
    console.contains(needle)
}

#[test]
fn arm_virt_real_uboot_boots_new_slot_and_falls_back() {
    let Some(emu) = require_uboot("arm_virt_real_uboot_boots_new_slot_and_falls_back") else {
        return;
    };
    let t0 = Instant::now();
    let dir = Scratch::new("uboot-ab");
    let slot_a = slot_image(&emu, &dir, "1.0.0", "good");
    let dead = slot_image(&emu, &dir, "2.0.0", "dead");
    let good = slot_image(&emu, &dir, "2.0.1", "good");
    let rel_dead = release_of(&dir, &dead, "2.0.0");
    let rel_good = release_of(&dir, &good, "2.0.1");
    let disk = make_disk(&dir, &slot_a);
    let ns = NetNs::new();
    let receive = [("fc_bootargs", "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 fc_receive=1")];
    let send = ["--rate", "16M", "--until-done", "1", "--duration", "300"];

    // Boot 1: slot A runs 1.0.0 and receives 2.0.0 (an image that never
    // confirms) into slot B; the activation flips the environment.
    let mut sender = ns.start_sender(&dir, &rel_dead, &send);
    let mut repair = ns.start_repair(&dir, &rel_dead);
    let env = board_env(&dir, "b1", &receive);
    let c = power_on(&mut boot(&ns, &dir, "b1", &disk, &env), 1, "FCUB: done", RECEIVE);
    assert!(has(&c, "firmcast: slot a chosen"), "boot 1 console:\n{c}");
    assert!(has(&c, "linux up: version 1.0.0 slot a"), "boot 1 console:\n{c}");
    assert!(has(&c, "FCUB: agent: exit 0"), "boot 1 console:\n{c}");
    let after = guest_env(&c, "after");
    assert_eq!(after.get("boot_slot").map(String::as_str), Some("b"), "{after:?}\n{c}");
    assert_eq!(after.get("upgrade_available").map(String::as_str), Some("1"), "{after:?}");
    assert_eq!(sender.expect_exit(Duration::from_secs(30)), 0, "{}", sender.output());
    repair.kill();

    // Boots 2..=3: U-Boot counts the unconfirmed slot B; its image stops.
    let env = board_env(&dir, "plain", &[]);
    for n in 2..=3u32 {
        let c = power_on(
            &mut boot(&ns, &dir, &format!("b{n}"), &disk, &env),
            n,
            "stops before confirming",
            BOOT,
        );
        let line = format!("firmcast: slot b chosen (bootcount {}", n - 1);
        assert!(has(&c, &line), "boot {n}: no `{line}`; console:\n{c}");
        assert!(has(&c, "linux up: version 2.0.0 slot b image dead"), "boot {n}:\n{c}");
    }

    // Boot 4: bootcount passes bootlimit (2): back to slot A, whose confirm
    // reports the rollback; then it receives 2.0.1 (good) into slot B.
    let mut sender = ns.start_sender(&dir, &rel_good, &send);
    let mut repair = ns.start_repair(&dir, &rel_good);
    let env4 = board_env(&dir, "b4", &receive);
    let c = power_on(&mut boot(&ns, &dir, "b4", &disk, &env4), 4, "FCUB: done", RECEIVE);
    assert!(has(&c, "firmcast: fallback to slot a after 2 boots of slot b"), "boot 4:\n{c}");
    assert!(has(&c, "firmcast: slot a chosen (bootcount 1"), "boot 4:\n{c}");
    assert!(has(&c, "linux up: version 1.0.0 slot a image good"), "boot 4:\n{c}");
    let confirmed = guest_env(&c, "confirmed");
    assert_eq!(confirmed.get("upgrade_available").map(String::as_str), Some("0"), "{confirmed:?}\n{c}");
    let after = guest_env(&c, "after");
    assert_eq!(after.get("boot_slot").map(String::as_str), Some("b"), "{after:?}\n{c}");
    assert_eq!(sender.expect_exit(Duration::from_secs(30)), 0, "{}", sender.output());
    repair.kill();

    // Boot 5: slot B (2.0.1) boots once and confirms.
    let c = power_on(&mut boot(&ns, &dir, "b5", &disk, &env), 5, "FCUB: done", BOOT);
    assert!(has(&c, "firmcast: slot b chosen (bootcount 1"), "boot 5:\n{c}");
    assert!(has(&c, "linux up: version 2.0.1 slot b image good"), "boot 5:\n{c}");
    let confirmed = guest_env(&c, "confirmed");
    assert_eq!(confirmed.get("upgrade_available").map(String::as_str), Some("0"), "{confirmed:?}\n{c}");
    assert_eq!(confirmed.get("boot_slot").map(String::as_str), Some("b"), "{confirmed:?}");

    // Boot 6: confirmed: U-Boot boots B without counting or saving.
    let c = power_on(&mut boot(&ns, &dir, "b6", &disk, &env), 6, "FCUB: done", BOOT);
    assert!(has(&c, "firmcast: slot b chosen (bootcount 0"), "boot 6:\n{c}");
    assert!(!has(&c, "firmcast: environment saved"), "boot 6 saved the environment:\n{c}");
    assert!(has(&c, "linux up: version 2.0.1 slot b"), "boot 6:\n{c}");
    println!(
        "uboot: scenario (6 power-ons, 2 updates of {} and {} bytes): {:.1} s",
        rel_dead.bytes.len(),
        rel_good.bytes.len(),
        t0.elapsed().as_secs_f64()
    );
}

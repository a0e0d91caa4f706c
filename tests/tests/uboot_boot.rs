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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firmcast_integration::qemu::{workspace, Guest, NetNs};
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
    println!(
        "uboot: boot {n}: {:.1} s",
        g.started.elapsed().as_secs_f64()
    );
    console
}

fn has(console: &str, needle: &str) -> bool {
    console.contains(needle)
}

/// Every needle is on power-on `n`'s console.
fn expect_all(console: &str, n: u32, needles: &[&str]) {
    for needle in needles {
        assert!(
            has(console, needle),
            "boot {n}: no `{needle}`; console:\n{console}"
        );
    }
}

/// The guest saw `name=value` in the environment it dumped.
fn expect_var(env: &BTreeMap<String, String>, name: &str, value: &str, console: &str) {
    assert_eq!(
        env.get(name).map(String::as_str),
        Some(value),
        "{name} in {env:?}; console:\n{console}"
    );
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
    let disk = make_disk(&dir, "disk", [Some(&slot_a), None], "boot_slot=a\n");
    let ns = NetNs::new();
    let receive = [(
        "fc_bootargs",
        "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 fc_receive=1",
    )];
    let send = ["--rate", "16M", "--until-done", "1", "--duration", "300"];

    // Boot 1: slot A runs 1.0.0 and receives 2.0.0 (an image that never
    // confirms) into slot B; the activation flips the environment.
    let mut sender = ns.start_sender(&dir, &rel_dead, &send);
    let mut repair = ns.start_repair(&dir, &rel_dead);
    let env = board_env(&dir, "b1", &receive);
    let c = power_on(
        &mut boot(&ns, &dir, "b1", &disk, &env),
        1,
        "FCUB: done",
        RECEIVE,
    );
    expect_all(&c, 1, &["firmcast: slot a chosen"]);
    expect_all(&c, 1, &["linux up: version 1.0.0 slot a"]);
    expect_all(&c, 1, &["FCUB: agent: exit 10"]);
    expect_all(&c, 1, &["activated slot B"]);
    let after = guest_env(&c, "after");
    expect_var(&after, "boot_slot", "b", &c);
    expect_var(&after, "upgrade_available", "1", &c);
    assert_eq!(
        sender.expect_exit(Duration::from_secs(30)),
        0,
        "{}",
        sender.output()
    );
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
        assert!(
            has(&c, "linux up: version 2.0.0 slot b image dead"),
            "boot {n}:\n{c}"
        );
    }

    // Boot 4: bootcount passes bootlimit (2): back to slot A, whose confirm
    // reports the rollback; then it receives 2.0.1 (good) into slot B.
    let mut sender = ns.start_sender(&dir, &rel_good, &send);
    let mut repair = ns.start_repair(&dir, &rel_good);
    let env4 = board_env(&dir, "b4", &receive);
    let c = power_on(
        &mut boot(&ns, &dir, "b4", &disk, &env4),
        4,
        "FCUB: done",
        RECEIVE,
    );
    expect_all(
        &c,
        4,
        &["firmcast: fallback to slot a after 2 boots of slot b"],
    );
    expect_all(&c, 4, &["firmcast: slot a chosen (bootcount 1"]);
    expect_all(&c, 4, &["linux up: version 1.0.0 slot a image good"]);
    expect_all(
        &c,
        4,
        &["rolled back: slot B (b) was activated but the bootloader runs slot A (a)"],
    );
    let confirmed = guest_env(&c, "confirmed");
    expect_var(&confirmed, "upgrade_available", "0", &c);
    let after = guest_env(&c, "after");
    expect_var(&after, "boot_slot", "b", &c);
    assert_eq!(
        sender.expect_exit(Duration::from_secs(30)),
        0,
        "{}",
        sender.output()
    );
    repair.kill();

    // Boot 5: slot B (2.0.1) boots once and confirms.
    let c = power_on(
        &mut boot(&ns, &dir, "b5", &disk, &env),
        5,
        "FCUB: done",
        BOOT,
    );
    expect_all(&c, 5, &["firmcast: slot b chosen (bootcount 1"]);
    expect_all(&c, 5, &["linux up: version 2.0.1 slot b image good"]);
    expect_all(&c, 5, &["confirmed: slot B (boot_slot=b) version 2.0.1"]);
    let confirmed = guest_env(&c, "confirmed");
    expect_var(&confirmed, "upgrade_available", "0", &c);
    expect_var(&confirmed, "boot_slot", "b", &c);

    // Boot 6: confirmed: U-Boot boots B without counting or saving.
    let c = power_on(
        &mut boot(&ns, &dir, "b6", &disk, &env),
        6,
        "FCUB: done",
        BOOT,
    );
    expect_all(&c, 6, &["firmcast: slot b chosen (bootcount 0"]);
    assert!(
        !has(&c, "firmcast: environment saved"),
        "boot 6 saved the environment:\n{c}"
    );
    expect_all(&c, 6, &["linux up: version 2.0.1 slot b"]);
    println!(
        "uboot: scenario (6 power-ons, 2 updates of {} and {} bytes): {:.1} s",
        rel_dead.bytes.len(),
        rel_good.bytes.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// Console markers, in the order one update passes them, and the phase a cut
/// after each one (and before the next) interrupts. `FCPHASE:` lines come
/// from the test-hooks agent (`agent/src/phase.rs`), `FCUB:` lines from the
/// slot image's init, `firmcast:` lines from the A/B script in U-Boot.
const MARKERS: [(&str, &str); 16] = [
    ("firmcast: environment copy", "U-Boot: environment import"),
    (
        PAUSE_LINE,
        "U-Boot: bootcount counted, before its write-back",
    ),
    (
        "firmcast: environment saved",
        "U-Boot: bootcount written back, before loading the slot",
    ),
    (
        "chosen (bootcount",
        "U-Boot: loading the slot / kernel start",
    ),
    ("FCUB: linux up", "init: before confirm"),
    ("FCUB: confirm: start", "confirm"),
    ("FCUB: confirm: exit", "agent start / listen"),
    ("resume: ", "receive"),
    ("FCPHASE: block ", "receive"),
    (
        "FCPHASE: program and read back block",
        "program + read-back of a block",
    ),
    ("FCPHASE: final read-back", "final read-back"),
    ("update complete", "activation"),
    (
        "FCPHASE: environment saved",
        "activation: after the environment save",
    ),
    ("FCPHASE: environment save (", "environment save"),
    ("activated slot", "after activation, before power-off"),
    ("FCUB: agent: exit", "after activation, before power-off"),
];

/// The phase a cut interrupted: from the last marker on the console before
/// the cut; `boot` 0 is the update boot, 1 the new slot's first boot.
fn phase_at(console: &str, boot: u32) -> String {
    let last = console
        .lines()
        .rev()
        .find_map(|l| MARKERS.iter().find(|(m, _)| l.contains(m)))
        .map_or("U-Boot start", |(_, p)| p);
    let which = if boot == 0 {
        "update boot"
    } else {
        "new slot's first boot"
    };
    format!("{which}: {last}")
}

/// Where a cut is aimed: the marker to wait for (its `nth` occurrence, 0 =
/// a random one of the update's blocks), on which boot, and the most
/// milliseconds to wait after it. Cuts rotate through these so that even a
/// handful of cuts reaches the update boot and the new slot's first boot.
struct Aim {
    boot: u32,
    marker: &'static str,
    nth: usize,
    max_delay_ms: u64,
}

const AIMS: [Aim; 11] = [
    Aim {
        boot: 0,
        marker: "resume: ",
        nth: 1,
        max_delay_ms: 3000,
    },
    Aim {
        boot: 0,
        marker: "FCPHASE: program and read back block",
        nth: 0,
        max_delay_ms: 0,
    },
    Aim {
        boot: 0,
        marker: "FCPHASE: final read-back",
        nth: 1,
        max_delay_ms: 150,
    },
    Aim {
        boot: 0,
        marker: "update complete",
        nth: 1,
        max_delay_ms: 20,
    },
    Aim {
        boot: 0,
        marker: "FCPHASE: environment save (",
        nth: 1,
        max_delay_ms: 5,
    },
    Aim {
        boot: 0,
        marker: "activated slot",
        nth: 1,
        max_delay_ms: 400,
    },
    Aim {
        boot: 1,
        marker: "firmcast: environment saved",
        nth: 1,
        max_delay_ms: 20,
    },
    Aim {
        boot: 1,
        marker: PAUSE_LINE,
        nth: 1,
        max_delay_ms: PAUSE_MS,
    },
    Aim {
        boot: 1,
        marker: "chosen (bootcount",
        nth: 1,
        max_delay_ms: 4000,
    },
    Aim {
        boot: 1,
        marker: "FCUB: linux up",
        nth: 1,
        max_delay_ms: 300,
    },
    Aim {
        boot: 1,
        marker: "FCUB: confirm: start",
        nth: 1,
        max_delay_ms: 150,
    },
];

/// U-Boot writes the bootcount back in one `virtio write` of a few
/// milliseconds; the campaign's board environment pauses before it (the
/// shipped `fc_env_save` then runs unchanged) so that a cut can land between
/// the count and its write.
const PAUSE_LINE: &str = "firmcast: test pause before the write-back";
const PAUSE_MS: u64 = 1000;

/// The campaign's extra board variables: the pause, then the board glue's
/// own `fc_env_save` (`tests/uboot/qemu-virtio.env`).
fn paused_env_save() -> [(String, String); 2] {
    let glue = std::fs::read_to_string(workspace().join("tests/uboot/qemu-virtio.env"))
        .expect("tests/uboot/qemu-virtio.env");
    let shipped = glue
        .lines()
        .find_map(|l| l.strip_prefix("fc_env_save="))
        .expect("fc_env_save in qemu-virtio.env")
        .to_string();
    [
        ("fc_env_save_glue".to_string(), shipped),
        (
            "fc_env_save".to_string(),
            format!(
                "echo \"{PAUSE_LINE}\"; sleep {}; run fc_env_save_glue",
                PAUSE_MS / 1000
            ),
        ),
    ]
}

/// Deterministic spread of cut instants: a small LCG (no rand dependency).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// Waits (polling the console every 2 ms) until `needle` is on it `n` times;
/// false if qemu exits or `timeout` passes first.
fn wait_nth(g: &mut Guest, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if g.console().matches(needle).count() >= n {
            return true;
        }
        if g.proc.wait(Duration::ZERO).is_some() {
            return g.console().matches(needle).count() >= n;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// The bootcount U-Boot printed when it chose the slot (`… chosen (bootcount N`).
fn bootcount(console: &str) -> Option<u32> {
    let at = console.find("chosen (bootcount ")? + "chosen (bootcount ".len();
    let digits: String = console[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Power cuts over the whole update: the receive, each block's program and
/// read-back, the final read-back, the activation and its environment save
/// (update boot), and U-Boot's bootcount write-back, the kernel start and
/// the confirm (first boot of the new slot). Each cut waits for a marker of
/// its aimed phase, then a seeded random delay, then pulls the plug; the
/// phase it hit is named from the last marker on the console. After every
/// cut the real U-Boot must boot a valid image (old 1.0.0 in slot A or new
/// 2.0.1 in slot B, never neither) and the following boots must finish the
/// update (slot B confirmed). `FIRMCAST_CUTS` cuts (default 3),
/// `FIRMCAST_CUTS_SEED`.
#[test]
fn arm_virt_real_uboot_power_cuts_always_boot_a_valid_slot() {
    let Some(emu) = require_uboot("arm_virt_real_uboot_power_cuts_always_boot_a_valid_slot") else {
        return;
    };
    let cuts: u32 = std::env::var("FIRMCAST_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut seed: u64 = std::env::var("FIRMCAST_CUTS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(17);
    let t0 = Instant::now();
    let dir = Scratch::new("uboot-cuts");
    let slot_a = slot_image(&emu, &dir, "1.0.0", "good");
    let good = slot_image(&emu, &dir, "2.0.1", "good");
    let rel = release_of(&dir, &good, "2.0.1");
    let pristine = make_disk(&dir, "pristine", [Some(&slot_a), None], "boot_slot=a\n");
    let ns = NetNs::new();
    let mut sender = ns.start_sender(&dir, &rel, &["--rate", "16M", "--duration", "1800"]);
    let _repair = ns.start_repair(&dir, &rel);
    let pause = paused_env_save();
    let receive = board_env(
        &dir,
        "cuts",
        &[
            (
                "fc_bootargs",
                "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 fc_receive=1",
            ),
            (&pause[0].0, &pause[0].1),
            (&pause[1].0, &pause[1].1),
        ],
    );
    let mut summary = Vec::new();
    for cut in 0..cuts {
        let disk = dir.join("disk-cut.img");
        std::fs::copy(&pristine, &disk).expect("pristine disk");
        let aim = &AIMS[(cut as usize * AIMS.len()) / cuts.max(1) as usize % AIMS.len()];
        let delay = Duration::from_millis(next(&mut seed) % (aim.max_delay_ms + 1));
        let pick = next(&mut seed) as usize;
        // The update boot runs to its end when the cut is aimed at the new
        // slot's first boot.
        let mut boot_no = 0;
        let (instant, cut_phase) = loop {
            let mut g = boot(&ns, &dir, &format!("c{cut}-{boot_no}"), &disk, &receive);
            if boot_no < aim.boot {
                g.expect("FCUB: done", RECEIVE);
                let _ = g.proc.wait(Duration::from_secs(10));
                g.power_cut();
                boot_no += 1;
                continue;
            }
            // A random one of the blocks this boot writes (the resume line
            // gives their number).
            let nth = match aim.nth {
                0 => {
                    wait_nth(&mut g, "resume: ", 1, RECEIVE);
                    let (on_flash, total) = resume_count(&g.console()).unwrap_or((0, 2));
                    1 + pick % (total.saturating_sub(on_flash + 1).max(1) as usize)
                }
                n => n,
            };
            let found = wait_nth(&mut g, aim.marker, nth, RECEIVE);
            std::thread::sleep(delay);
            let instant = g.started.elapsed();
            g.power_cut();
            let c = g.console();
            assert!(
                found,
                "cut {cut}: `{}` (#{nth}) not seen on boot {boot_no}; console:\n{c}",
                aim.marker
            );
            break (instant, phase_at(&c, boot_no));
        };
        // After the cut: every power-on boots a valid slot; within four the
        // update is confirmed.
        let mut slots = Vec::new();
        let mut counts = Vec::new();
        let mut resumed = None;
        let mut done = false;
        for n in 0..4 {
            let mut g = boot(&ns, &dir, &format!("c{cut}-r{n}"), &disk, &receive);
            let c = power_on(&mut g, 100 * cut + n, "FCUB: done", RECEIVE);
            let chosen = if has(&c, "firmcast: slot b chosen") {
                "b"
            } else {
                "a"
            };
            let version = if chosen == "b" { "2.0.1" } else { "1.0.0" };
            let up = format!("linux up: version {version} slot {chosen} image good");
            assert!(
                has(&c, &format!("firmcast: slot {chosen} chosen")) && has(&c, &up),
                "cut {cut} ({cut_phase}), power-on {n}: U-Boot did not boot a valid slot; console:\n{c}"
            );
            slots.push(chosen);
            counts.push(bootcount(&c).unwrap_or(0));
            resumed = resumed.or(resume_count(&c));
            if chosen == "b"
                && (has(&c, "confirmed: slot B") || has(&c, "confirm: no update waiting"))
            {
                done = true;
                break;
            }
        }
        assert!(
            done,
            "cut {cut} ({cut_phase}): slot B not confirmed after 4 power-ons ({slots:?})"
        );
        let resumed = resumed.map_or("-".to_string(), |(r, n)| format!("{r}/{n}"));
        let line = format!(
            "| {cut:>2} | boot {boot_no} +{:>5.2} s | {cut_phase} | {} | {resumed} | {} |",
            instant.as_secs_f64(),
            slots.join(" "),
            counts
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("uboot: {line}");
        summary.push(line);
    }
    sender.kill();
    println!(
        "uboot: power-cut campaign: {cuts} cuts, every power-on booted a valid slot, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("uboot:   | cut | instant (power-on + s) | phase hit | slots booted after | resumed blocks | bootcount per power-on |");
    for l in summary {
        println!("uboot:   {l}");
    }
}

/// The both-slots-bad guard: slot B was activated and never confirms, and
/// slot A (the fallback) does not start either. With `bootlimit=1` U-Boot
/// falls back once, then says both slots failed and stops counting and
/// switching: the fourth power-on boots slot A again without writing the
/// environment, instead of flipping between the slots forever.
#[test]
fn arm_virt_real_uboot_both_slots_bad_stops_switching() {
    let Some(emu) = require_uboot("arm_virt_real_uboot_both_slots_bad_stops_switching") else {
        return;
    };
    let t0 = Instant::now();
    let dir = Scratch::new("uboot-bad");
    let dead_a = slot_image(&emu, &dir, "1.0.0", "dead");
    let dead_b = slot_image(&emu, &dir, "2.0.0", "dead");
    let disk = make_disk(
        &dir,
        "disk",
        [Some(&dead_a), Some(&dead_b)],
        "boot_slot=b\nupgrade_available=1\nbootcount=0\nfirmcast_activated=b\n",
    );
    let ns = NetNs::new();
    let env = board_env(&dir, "bad", &[("bootlimit", "1")]);
    let expect = [
        ("b", "firmcast: slot b chosen (bootcount 1"),
        ("a", "firmcast: fallback to slot a after 1 boots of slot b"),
        (
            "a",
            "firmcast: both slots failed (b, then a); booting a without counting",
        ),
        (
            "a",
            "firmcast: slot a chosen (bootcount 2, bootlimit 1, upgrade_available 0)",
        ),
    ];
    for (n, (slot, line)) in expect.into_iter().enumerate() {
        let n = n as u32 + 1;
        let mut g = boot(&ns, &dir, &format!("bad{n}"), &disk, &env);
        let c = power_on(&mut g, n, "stops before confirming", BOOT);
        assert!(has(&c, line), "power-on {n}: no `{line}`; console:\n{c}");
        assert!(
            has(&c, "FCUB: linux up: version") && has(&c, &format!(" slot {slot} image dead")),
            "power-on {n}:\n{c}"
        );
        if n == 4 {
            assert!(
                !has(&c, "firmcast: environment saved"),
                "power-on 4 wrote the environment:\n{c}"
            );
        }
    }
    println!(
        "uboot: both slots bad: 4 power-ons, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

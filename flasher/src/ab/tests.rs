//! The policy's decisions, and a power cut at every flash operation of an
//! activation, a confirmation and a rollback's disarm on simulated NOR and
//! NAND: what is left is always the old environment or the new one, and a
//! model of U-Boot's bootcount booting it ends on a healthy slot.

use std::path::PathBuf;

use super::*;
use crate::testutil::TempDir;
use crate::uboot_env::{Endian, EnvLocation};
use crate::{Faults, SimNand, SimNor};

const POLICY: Policy<'static> = Policy {
    slot_var: "boot_slot",
    slot_values: ["a", "b"],
    upgrade_available_var: "upgrade_available",
    bootcount_var: "bootcount",
    activated_var: "firmcast_activated",
};

/// U-Boot's limit before `altbootcmd` (as in tests/tests/emulated.rs).
const BOOTLIMIT: u32 = 3;

/// Boxes a sim that loses power `cut_after` operations from now, if given.
macro_rules! armed {
    ($sim:expr, $cut_after:expr) => {{
        let mut f = $sim;
        if let Some(n) = $cut_after {
            let at = f.op_count() + n;
            f.set_faults(Faults {
                power_cut_after: Some(at),
                ..Faults::default()
            });
        }
        Box::new(f)
    }};
}

#[derive(Clone, Copy)]
enum Medium {
    Nor,
    Nand,
}

/// A redundant environment on simulated flash, one copy per eraseblock.
struct Board {
    medium: Medium,
    path: PathBuf,
}

impl Board {
    fn new(dir: &TempDir, medium: Medium) -> Board {
        let path = dir.join("env.bin");
        match medium {
            Medium::Nor => drop(SimNor::create(&path, 2 * 0x10000, 0x10000, 1).expect("nor")),
            Medium::Nand => {
                drop(SimNand::create(&path, 2 * 0x20000, 0x20000, 2048, &[]).expect("nand"));
            }
        }
        Board { medium, path }
    }

    fn erase_size(&self) -> u64 {
        match self.medium {
            Medium::Nor => 0x10000,
            Medium::Nand => 0x20000,
        }
    }

    /// Opens the environment; `cut_after`: the power fails at that flash
    /// operation from now on.
    fn open(&self, cut_after: Option<u64>) -> UbootEnv<Box<dyn Flash>> {
        let flash: Box<dyn Flash> = match self.medium {
            Medium::Nor => armed!(SimNor::open(&self.path).expect("nor"), cut_after),
            Medium::Nand => armed!(SimNand::open(&self.path).expect("nand"), cut_after),
        };
        let dev = self.path.display().to_string();
        UbootEnv::open_redundant_on_one(
            flash,
            EnvLocation::new(dev.clone(), 0, 0x4000),
            EnvLocation::new(dev, self.erase_size(), 0x4000),
            Endian::Little,
        )
        .expect("open env")
    }

    fn files(&self) -> [PathBuf; 2] {
        let mut side = self.path.clone().into_os_string();
        side.push(".sim");
        [self.path.clone(), PathBuf::from(side)]
    }

    fn snapshot(&self) -> Vec<Option<Vec<u8>>> {
        self.files().iter().map(|p| std::fs::read(p).ok()).collect()
    }

    fn restore(&self, snap: &[Option<Vec<u8>>]) {
        for (p, bytes) in self.files().iter().zip(snap) {
            if let Some(b) = bytes {
                std::fs::write(p, b).expect("restore");
            }
        }
    }

    /// Saves `vars` twice, so both copies are valid.
    fn factory(&self, vars: &[(&str, &str)]) {
        let mut env = self.open(None);
        for (k, v) in vars {
            env.set(k, v).expect("set");
        }
        env.save().expect("save 1");
        env.save().expect("save 2");
    }

    fn state(&self) -> Vec<(String, String)> {
        let env = self.open(None);
        assert!(env.is_valid(), "no valid copy left");
        env.vars()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// One boot by U-Boot with the environment bootcount (`CONFIG_BOOTCOUNT_ENV`)
/// and the `altbootcmd` of tests/tests/emulated.rs: while
/// `upgrade_available=1` each boot counts; past `bootlimit` the other slot
/// is selected and saved. Returns the slot booted.
fn uboot_boot<F: Flash>(env: &mut UbootEnv<F>) -> Slot {
    assert!(env.is_valid(), "U-Boot would boot its built-in default");
    if POLICY.pending_confirmation(env) {
        let count = env
            .get(POLICY.bootcount_var)
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        env.set(POLICY.bootcount_var, &count.to_string())
            .expect("bootcount");
        if count > BOOTLIMIT {
            let other = POLICY.running(env).expect("slot").other();
            env.set(POLICY.slot_var, POLICY.value(other)).expect("alt");
        }
        env.save().expect("u-boot saveenv");
    }
    POLICY.running(env).expect("slot")
}

/// Boots until a healthy slot runs with nothing pending: a slot that is not
/// healthy never gets to run the agent (the watchdog resets it); a healthy
/// one runs the agent's start-up confirm, which disarms a rollback or
/// confirms itself. Returns the slot the board settles on.
fn settle(board: &Board, healthy: [bool; 2]) -> Slot {
    for _ in 0..2 * (BOOTLIMIT + 2) {
        let mut env = board.open(None);
        let slot = uboot_boot(&mut env);
        if !slot.pick(healthy) {
            continue;
        }
        match POLICY.boot_state(&env) {
            BootState::NothingPending => return slot,
            BootState::Pending { .. } | BootState::RolledBack { .. } => {
                POLICY.stage_disarm(&mut env).expect("disarm");
                env.save().expect("confirm save");
                assert_eq!(POLICY.boot_state(&env), BootState::NothingPending);
                return slot;
            }
        }
    }
    panic!("the board never settled on a healthy slot");
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// Cuts the power at every flash operation of `step` (which stages and
/// saves) from the environment `before`; after each cut the environment is
/// `before` or `after`, never a mix, and `check` judges it. Returns the
/// number of cut points.
fn cut_at_every_step(
    board: &Board,
    before: &[(&str, &str)],
    after: &[(&str, &str)],
    step: impl Fn(&mut UbootEnv<Box<dyn Flash>>) -> Result<(), AbError>,
    check: impl Fn(&Board, bool),
) -> u64 {
    board.factory(before);
    let snap = board.snapshot();
    let (old, new) = (owned(before), owned(after));
    let (mut saw_old, mut saw_new) = (false, false);
    for n in 0..64u64 {
        board.restore(&snap);
        let mut env = board.open(Some(n));
        match step(&mut env) {
            Ok(()) => {
                assert!(n > 0, "a save takes flash operations");
                drop(env);
                assert_eq!(board.state(), new, "uncut");
                check(board, true);
                assert!(saw_old, "a cut leaves the old environment");
                return n;
            }
            Err(AbError::Env(e)) => assert!(e.is_power_cut(), "op {n}: {e}"),
            Err(e) => panic!("op {n}: {e}"),
        }
        drop(env);
        let state = board.state();
        let is_new = state == new;
        assert!(is_new || state == old, "cut at op {n}: a mix {state:?}");
        saw_old |= !is_new;
        saw_new |= is_new;
        check(board, is_new);
    }
    panic!("the step never completed (old {saw_old}, new {saw_new})");
}

const FACTORY: [(&str, &str); 4] = [
    ("boot_slot", "a"),
    ("bootcount", "0"),
    ("bootlimit", "3"),
    ("upgrade_available", "0"),
];
const ACTIVATED_B: [(&str, &str); 6] = [
    ("boot_slot", "b"),
    ("bootcount", "0"),
    ("bootlimit", "3"),
    ("firmcast_activated", "b"),
    ("firmcast_min_version", "2.0"),
    ("upgrade_available", "1"),
];

fn activation_cuts(medium: Medium, tag: &str) {
    let dir = TempDir::new(tag);
    let board = Board::new(&dir, medium);
    let cuts = cut_at_every_step(
        &board,
        &FACTORY,
        &ACTIVATED_B,
        |env| {
            let running = POLICY.update_from(env)?;
            let extra = [("firmcast_min_version", "2.0")];
            POLICY.stage_activation(env, running, running.other(), &extra)?;
            Ok(env.save()?)
        },
        |board, is_new| {
            let snap = board.snapshot();
            // The new slot boots with the fallback armed; if it never comes
            // up, U-Boot goes back to A.
            assert_eq!(settle(board, [true, false]), Slot::A);
            board.restore(&snap);
            let want = if is_new { Slot::B } else { Slot::A };
            assert_eq!(settle(board, [true, true]), want);
            board.restore(&snap);
        },
    );
    eprintln!("{tag}: activation A→B survives a power cut at each of its {cuts} flash operations");
}

#[test]
fn activation_power_cut_at_every_step_nor() {
    activation_cuts(Medium::Nor, "ab-act-nor");
}

#[test]
fn activation_power_cut_at_every_step_nand() {
    activation_cuts(Medium::Nand, "ab-act-nand");
}

/// The disarm after U-Boot rolled back (A runs, B was activated), and the
/// confirmation of a healthy B: a cut leaves the pending state (the agent
/// disarms on the next boot) or the disarmed one.
fn disarm_cuts(medium: Medium, tag: &str) {
    let dir = TempDir::new(tag);
    let board = Board::new(&dir, medium);
    let rolled_back = [
        ("boot_slot", "a"),
        ("bootcount", "4"),
        ("bootlimit", "3"),
        ("firmcast_activated", "b"),
        ("upgrade_available", "1"),
    ];
    let disarmed_a = [
        ("boot_slot", "a"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("upgrade_available", "0"),
    ];
    let disarm = |env: &mut UbootEnv<Box<dyn Flash>>| {
        assert!(matches!(
            POLICY.boot_state(env),
            BootState::RolledBack { .. } | BootState::Pending { .. }
        ));
        POLICY.stage_disarm(env)?;
        Ok(env.save()?)
    };
    let rollback = cut_at_every_step(&board, &rolled_back, &disarmed_a, disarm, |board, _| {
        let snap = board.snapshot();
        assert_eq!(settle(board, [true, false]), Slot::A);
        board.restore(&snap);
    });
    let pending_b = [
        ("boot_slot", "b"),
        ("bootcount", "1"),
        ("bootlimit", "3"),
        ("firmcast_activated", "b"),
        ("upgrade_available", "1"),
    ];
    let confirmed_b = [
        ("boot_slot", "b"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("upgrade_available", "0"),
    ];
    let confirm = cut_at_every_step(&board, &pending_b, &confirmed_b, disarm, |board, _| {
        let snap = board.snapshot();
        assert_eq!(settle(board, [true, true]), Slot::B);
        board.restore(&snap);
    });
    eprintln!(
        "{tag}: rollback disarm survives a cut at each of its {rollback} flash operations, confirm at each of its {confirm}"
    );
}

#[test]
fn disarm_power_cut_at_every_step_nor() {
    disarm_cuts(Medium::Nor, "ab-disarm-nor");
}

#[test]
fn disarm_power_cut_at_every_step_nand() {
    disarm_cuts(Medium::Nand, "ab-disarm-nand");
}

#[test]
fn running_slot_update_target_and_errors() {
    let dir = TempDir::new("ab-decide");
    let board = Board::new(&dir, Medium::Nor);
    let mut env = board.open(None);
    assert_eq!(POLICY.running(&env), Ok(Slot::A), "factory board: A");
    env.set("boot_slot", "b").expect("set");
    assert_eq!(POLICY.update_from(&env), Ok(Slot::B));
    env.set("upgrade_available", "1").expect("set");
    let e = POLICY.update_from(&env).expect_err("unconfirmed");
    assert_eq!(
        e.to_string(),
        "upgrade_available=1: the running slot B is not confirmed yet and slot A is its fallback"
    );
    env.set("boot_slot", "c").expect("set");
    let e = POLICY.running(&env).expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "U-Boot variable boot_slot=\"c\" names neither slot A (\"a\") nor slot B (\"b\")"
    );
    env.set("boot_slot", "b").expect("set");
    let e = POLICY
        .stage_activation(&mut env, Slot::A, Slot::B, &[])
        .expect_err("switched");
    assert_eq!(e, AbError::Switched { now: Slot::B });
    assert!(e.to_string().contains("switched to slot B"), "{e}");
    let e = POLICY
        .stage_activation(&mut env, Slot::B, Slot::A, &[("bad=name", "x")])
        .expect_err("bad variable");
    assert!(matches!(&e, AbError::Env(_)), "{e:?}");
    assert!(e.to_string().contains("bad=name"), "{e}");
}

#[test]
fn boot_state_reads_rollback_before_pending() {
    let dir = TempDir::new("ab-state");
    let board = Board::new(&dir, Medium::Nor);
    let mut env = board.open(None);
    assert_eq!(POLICY.boot_state(&env), BootState::NothingPending);
    env.set("upgrade_available", "1").expect("set");
    env.set("firmcast_activated", "a").expect("set");
    assert_eq!(
        POLICY.boot_state(&env),
        BootState::Pending {
            running: "a".into()
        },
        "missing slot variable: A runs"
    );
    env.set("boot_slot", "b").expect("set");
    assert_eq!(
        POLICY.boot_state(&env),
        BootState::RolledBack {
            activated: "a".into(),
            running: "b".into()
        }
    );
    POLICY.stage_disarm(&mut env).expect("disarm");
    assert_eq!(env.get("firmcast_activated"), None);
    assert_eq!(POLICY.boot_state(&env), BootState::NothingPending);
}

#[test]
fn activation_sets_four_variables_in_log_order() {
    assert_eq!(
        POLICY.activation_vars(Slot::B),
        [
            ("boot_slot", "b"),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
            ("firmcast_activated", "b"),
        ]
    );
    assert_eq!(POLICY.slot_of("a"), Some(Slot::A));
    assert_eq!(POLICY.slot_of("x"), None);
    assert_eq!(Slot::B.pick([1, 2]), 2);
}

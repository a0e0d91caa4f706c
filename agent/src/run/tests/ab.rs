//! A/B through the U-Boot environment: the full flow on simulated flash
//! (pick the inactive slot, write it with the [`Core`], flip, confirm, roll
//! back), the anti-rollback floor in the flip, a failed activation, a dry run.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use flasher::ab::Slot;
use flasher::uboot_env::{Endian, EnvError, EnvErrorKind, EnvLocation, UbootEnv};
use flasher::SimNor;
use proto::receiver::ReceiverConfig;
use proto::sender::{Sender, SenderConfig};
use proto::wire::{DeviceState, Reason, MAX_DATAGRAM};
use proto::Instant;

use super::{pk, sender_addr, settings, Harness, BLOCK};
use crate::activate::tests::ab_config;
use crate::activate::{activate_ab, policy, ActivationError};
use crate::config::Activation;
use crate::confirm::{confirm, Outcome};
use crate::exit::ExitCode;
use crate::resume::tests::{image, signed, MemFlash};
use crate::run::{Core, ImageInfo};

/// A redundant environment on a simulated NOR: two 64 KiB sectors.
fn open_env(p: &Path) -> UbootEnv<SimNor> {
    let dev = p.display().to_string();
    let nor = if p.exists() {
        SimNor::open(p).expect("open nor")
    } else {
        SimNor::create(p, 2 * 0x10000, 0x10000, 1).expect("create nor")
    };
    UbootEnv::open_redundant_on_one(
        nor,
        EnvLocation::new(dev.clone(), 0, 0x4000),
        EnvLocation::new(dev, 0x10000, 0x4000),
        Endian::native(),
    )
    .expect("env")
}

struct Dir(PathBuf);

impl Dir {
    /// A fresh temp dir, removed on drop.
    fn new(tag: &str) -> Dir {
        let dir = Dir(std::env::temp_dir().join(format!("fc-agent-{tag}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        dir
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One update as `run::prepare` does it: pick the inactive slot, write it
/// with the Core, activate through the env. Returns the slot written.
fn update(
    env_path: &Path,
    slots: &mut [MemFlash; 2],
    current: &str,
    version: &str,
) -> (ExitCode, Slot, Harness) {
    let ab = ab_config();
    let env = open_env(env_path);
    assert!(
        !policy(&ab).pending_confirmation(&env),
        "no update while unconfirmed"
    );
    let active = policy(&ab).running(&env).expect("slot");
    let new = active.other();
    drop(env);
    let idx = usize::from(new == Slot::B);
    let mut s = settings();
    s.activation = Activation::AbUboot;
    s.current_version = current.into();
    let mut h = Harness::new(s, version, pk(), slots[idx].clone());
    let p = env_path.to_path_buf();
    h.core.set_activator(Box::new(move |info: &ImageInfo| {
        let mut env = open_env(&p);
        activate_ab(&mut env, &ab, new, &info.min_version, false)
            .map_err(|e| ActivationError::ab(&ab, e))
    }));
    let code = h.run(Duration::from_secs(60)).expect("exits");
    slots[idx] = h.core.writer_mut().expect("writer").flash_mut().clone();
    (code, new, h)
}

/// R-ROLL-2: on `ab-uboot` the floor goes into the environment in the
/// save that flips the slot, and never goes down.
#[test]
fn r_roll_2_the_floor_is_saved_with_the_slot_flip_and_never_lowered() {
    let dir = Dir::new("floor");
    let env_path = dir.0.join("env.simnor");
    let ab = ab_config();
    {
        let mut env = open_env(&env_path);
        env.set("boot_slot", "a").expect("set");
        env.save().expect("factory env");
    }
    let line =
        activate_ab(&mut open_env(&env_path), &ab, Slot::B, "2.3.0", false).expect("flip to B");
    println!("R-ROLL-2: {line}");
    let env = open_env(&env_path);
    assert_eq!(env.get("boot_slot"), Some("b"));
    assert_eq!(env.get(crate::floor::ENV_VAR), Some("2.3.0"));
    activate_ab(&mut open_env(&env_path), &ab, Slot::A, "2.2.0", false).expect("flip to A");
    let env = open_env(&env_path);
    assert_eq!(env.get("boot_slot"), Some("a"));
    assert_eq!(
        env.get(crate::floor::ENV_VAR),
        Some("2.3.0"),
        "never lowered"
    );
}

#[test]
fn update_flip_confirm_rollback_and_back_to_a() {
    let dir = Dir::new("ab");
    let env_path = dir.0.join("env.simnor");
    let ab = ab_config();
    {
        let mut env = open_env(&env_path);
        for (k, v) in [
            ("boot_slot", "a"),
            ("bootcount", "0"),
            ("upgrade_available", "0"),
            ("bootlimit", "3"),
        ] {
            env.set(k, v).expect("set");
        }
        env.save().expect("factory env");
    }
    let mut slots = [MemFlash::new(64 * 1024), MemFlash::new(64 * 1024)];

    // 1. A runs; the update goes to B, then one env write flips to B.
    let (code, new, h) = update(&env_path, &mut slots, "1.0", "2.0");
    assert_eq!((code, new), (ExitCode::Updated, Slot::B));
    assert!(h.core.activated());
    assert_eq!(&slots[1].bytes[..h.image.len()], &h.image[..]);
    assert!(slots[0].writes.is_empty(), "slot A untouched");
    // Activated is reported after the receiver's Done reports, to the repair server.
    let last_done = h
        .statuses
        .iter()
        .rposition(|s| s.1 == DeviceState::Done)
        .expect("done");
    let first_act = h
        .statuses
        .iter()
        .position(|s| s.1 == DeviceState::Activated)
        .expect("activated");
    assert!(first_act > last_done, "{:?}", h.statuses);
    let acts: Vec<_> = h
        .statuses
        .iter()
        .filter(|s| s.1 == DeviceState::Activated)
        .collect();
    // R-STAT-2: three to the repair server, each followed by a copy to
    // the sender whose address a block proved (R-STAT-6).
    let repair: SocketAddr = "10.0.0.2:7855".parse().expect("addr");
    let to_repair = acts.iter().filter(|s| s.0 == repair).count();
    let proven = h.core.receiver().proven_sender().expect("proven");
    assert_eq!((to_repair, acts.len()), (3, 6), "{acts:?}");
    assert!(acts.iter().all(|s| s.0 == repair || s.0 == proven));
    let env = open_env(&env_path);
    assert_eq!(env.get("boot_slot"), Some("b"));
    assert_eq!(env.get("upgrade_available"), Some("1"));
    assert_eq!(env.get("bootcount"), Some("0"));
    assert_eq!(env.get("firmcast_activated"), Some("b"));
    assert_eq!(env.get("bootlimit"), Some("3"), "other variables kept");
    drop(env);

    // 2. First boot of B (U-Boot counted it): a failing health check
    //    writes nothing, so the rollback stays armed.
    {
        let mut env = open_env(&env_path);
        env.set("bootcount", "1").expect("set");
        env.save().expect("u-boot bootcount");
    }
    let before = std::fs::read(&env_path).expect("read");
    let mut env = open_env(&env_path);
    let o = confirm(&mut env, &ab, || Err("web UI not answering".into()), false).expect("confirm");
    assert_eq!(
        o,
        Outcome::HealthCheckFailed {
            why: "web UI not answering".into()
        }
    );
    assert_eq!(
        o.status(),
        Some((DeviceState::Failed, Reason::HealthCheckFailed))
    );
    assert_eq!(
        std::fs::read(&env_path).expect("read"),
        before,
        "nothing written"
    );
    // While unconfirmed, no update may overwrite the fallback slot A.
    assert!(policy(&ab).pending_confirmation(&env));

    // 3. Healthy now: confirm clears upgrade_available and bootcount.
    let o = confirm(&mut env, &ab, || Ok(()), false).expect("confirm");
    assert_eq!(o, Outcome::Confirmed { slot: "b".into() });
    let env = open_env(&env_path);
    assert_eq!(env.get("upgrade_available"), Some("0"));
    assert_eq!(env.get("bootcount"), Some("0"));
    assert_eq!(env.get("firmcast_activated"), None);
    assert_eq!(env.get("boot_slot"), Some("b"));
    drop(env);

    // 4. A second update goes back to A.
    let (code, new, h) = update(&env_path, &mut slots, "2.0", "3.0");
    assert_eq!((code, new), (ExitCode::Updated, Slot::A));
    assert_eq!(&slots[0].bytes[..h.image.len()], &h.image[..]);
    let env = open_env(&env_path);
    assert_eq!(env.get("boot_slot"), Some("a"));
    assert_eq!(env.get("upgrade_available"), Some("1"));
    drop(env);

    // 5. A never boots healthily; U-Boot's altbootcmd goes back to B.
    {
        let mut env = open_env(&env_path);
        env.set("boot_slot", "b").expect("set");
        env.set("bootcount", "4").expect("set");
        env.save().expect("altbootcmd");
    }
    let mut env = open_env(&env_path);
    let o = confirm(
        &mut env,
        &ab,
        || panic!("no health check on a rollback"),
        false,
    )
    .expect("confirm");
    assert_eq!(
        o,
        Outcome::RolledBack {
            activated: "a".into(),
            running: "b".into()
        }
    );
    assert_eq!(o.status(), Some((DeviceState::RolledBack, Reason::None)));
    let env = open_env(&env_path);
    assert_eq!(env.get("upgrade_available"), Some("0"));
    assert_eq!(env.get("boot_slot"), Some("b"));
    assert_eq!(policy(&ab).running(&env).expect("slot"), Slot::B);
}

#[test]
fn failed_activation_reports_and_exits_six() {
    let mut s = settings();
    s.activation = Activation::AbUboot;
    let mut h = Harness::new(s, "2.0", pk(), MemFlash::new(64 * 1024));
    h.core.set_activator(Box::new(|_| {
        let gone = EnvError {
            kind: EnvErrorKind::Flash,
            message: "env device gone".into(),
            flash: None,
        };
        Err(ActivationError::ab(&ab_config(), gone))
    }));
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Activation));
    assert!(!h.core.activated());
    assert!(h
        .statuses
        .iter()
        .any(|s| s.1 == DeviceState::Failed && s.2 == Reason::ActivationFailed));
}

#[test]
fn dry_run_writes_nothing_and_only_plans_the_flip() {
    let dir = Dir::new("ab-dry");
    let env_path = dir.0.join("env.simnor");
    {
        let mut env = open_env(&env_path);
        env.set("boot_slot", "a").expect("set");
        env.save().expect("save");
    }
    let before = std::fs::read(&env_path).expect("read");
    let mut s = settings();
    s.activation = Activation::AbUboot;
    s.dry_run = true;
    let flash = crate::activate::DryRunFlash::new(MemFlash::new(64 * 1024));
    let img = image(BLOCK as usize * 6 + 100);
    let (m, signed_bytes) = signed(&img, BLOCK, "2.0");
    let mut rxc = ReceiverConfig::new(0x42, &s.board, &s.current_version, pk());
    rxc.window_blocks = 4;
    let clock = Rc::new(Cell::new(0u64));
    let c = clock.clone();
    let mut flash = Some(flash);
    let mut core = Core::new(
        s,
        rxc,
        Box::new(move || Ok(flash.take().expect("opened once"))),
        Box::new(move || Instant::from_micros(c.get())),
        Instant::ZERO,
        Instant::ZERO,
    );
    let p = env_path.clone();
    let line = Rc::new(std::cell::RefCell::new(String::new()));
    let l2 = line.clone();
    core.set_activator(Box::new(move |_| {
        let mut env = open_env(&p);
        let r = activate_ab(&mut env, &ab_config(), Slot::B, "", true)
            .map_err(|e| ActivationError::ab(&ab_config(), e));
        if let Ok(l) = &r {
            l2.replace(l.clone());
        }
        r
    }));
    let mut sender = Sender::new(
        SenderConfig::new(7, 40_000_000),
        &m,
        signed_bytes,
        Instant::ZERO,
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let code = loop {
        let now = Instant::from_micros(clock.get());
        assert!(now < Instant::ZERO + Duration::from_secs(60), "no exit");
        if let Some(t) = sender.poll_transmit(now, &img, &mut buf) {
            core.handle_datagram(now, sender_addr(), &buf[..t.len]);
        }
        core.handle_timeout(now);
        while core.poll_transmit(now, &mut out).is_some() {}
        if let Some(code) = core.exit_check(now) {
            break code;
        }
        clock.set(clock.get() + 200);
    };
    assert_eq!(code, ExitCode::Updated);
    let w = core.writer_mut().expect("writer").flash_mut();
    assert!(
        w.bytes > 0 && w.erases == 0,
        "MemFlash is plain: writes only"
    );
    assert!(w.inner_untouched(), "nothing reached the flash");
    assert_eq!(
        std::fs::read(&env_path).expect("read"),
        before,
        "env untouched"
    );
    assert!(
        line.borrow()
            .contains("dry run: would set boot_slot=b upgrade_available=1 bootcount=0"),
        "{}",
        line.borrow()
    );
    assert!(!core.activated());
}

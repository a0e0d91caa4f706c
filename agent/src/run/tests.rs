//! Loop-level tests of [`Core`] without a network: an in-process
//! `proto::sender::Sender` feeds it datagrams on a fake clock, an in-memory
//! flash takes the writes.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use proto::sender::{Sender, SenderConfig};
use proto::wire::{decode, DeviceState, Frame, MAX_DATAGRAM};

use super::*;
use crate::resume::tests::{image, keypair, signed, MemFlash};

const BLOCK: u32 = 4096;

struct Harness {
    core: Core<MemFlash>,
    clock: Rc<Cell<u64>>,
    sender: Sender,
    image: Vec<u8>,
    /// Feed the sender's datagrams (false: the sender went silent).
    feeding: bool,
    opened: Rc<Cell<u32>>,
    statuses: Vec<(SocketAddr, DeviceState, Reason)>,
    nacks: u32,
}

fn settings() -> CoreSettings {
    CoreSettings {
        board: "acme,rt1".into(),
        current_version: "1.0".into(),
        target: "mem:".into(),
        activation: Activation::InPlace,
        exit_when_current: true,
        final_read_back: crate::resume::FinalReadBack::Stale,
        boot_window: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(3),
        run_deadline: Duration::from_secs(600),
        repair_server: "10.0.0.2:7855".parse().expect("addr"),
        rx_loss_permille: 0,
        rx_loss_seed: 1,
        block_delay: Duration::ZERO,
        dry_run: false,
        device_id: 0x42,
        device_key: None,
    }
}

fn sender_addr() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000)
}

impl Harness {
    fn new(s: CoreSettings, version: &str, pubkey: [u8; 32], flash: MemFlash) -> Harness {
        let img = image(BLOCK as usize * 6 + 100);
        let (m, signed_bytes) = signed(&img, BLOCK, version);
        let clock = Rc::new(Cell::new(0u64));
        let c = clock.clone();
        let opened = Rc::new(Cell::new(0u32));
        let o = opened.clone();
        let opener: Opener<MemFlash> = Box::new(move || {
            o.set(o.get() + 1);
            Ok(flash.clone())
        });
        let mut rxc = ReceiverConfig::new(0x42, &s.board, &s.current_version, pubkey);
        rxc.hold_first_block = s.activation == Activation::InPlace;
        rxc.fetch_when_current = s.exit_when_current;
        rxc.window_blocks = 4;
        let core = Core::new(
            s,
            rxc,
            opener,
            Box::new(move || Instant::from_micros(c.get())),
            Instant::ZERO,
        );
        let sender = Sender::new(
            SenderConfig::new(7, 40_000_000),
            &m,
            signed_bytes,
            Instant::ZERO,
        );
        Harness {
            core,
            clock,
            sender,
            image: img,
            feeding: true,
            opened,
            statuses: Vec::new(),
            nacks: 0,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.clock.get())
    }

    /// Run until the core exits (or `limit` of fake time passes).
    fn run(&mut self, limit: Duration) -> Option<ExitCode> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        while self.now() < Instant::ZERO + limit {
            let now = self.now();
            if self.feeding {
                if let Some(t) = self.sender.poll_transmit(now, &self.image, &mut buf) {
                    self.core.handle_datagram(now, sender_addr(), &buf[..t.len]);
                }
            }
            self.core.handle_timeout(now);
            while let Some((to, len)) = self.core.poll_transmit(now, &mut out) {
                match decode(&out[..len]) {
                    Ok((_, Frame::Status(s))) => self.statuses.push((to, s.state, s.reason)),
                    Ok((_, Frame::Nack(_))) => self.nacks += 1,
                    other => panic!("unexpected transmit {other:?}"),
                }
            }
            if let Some(code) = self.core.exit_check(now) {
                return Some(code);
            }
            let mut next = self
                .core
                .deadline()
                .unwrap_or(now + Duration::from_millis(100));
            if self.feeding {
                next = next.min(self.sender.poll_timeout().unwrap_or(next));
            }
            let next = next.max(now + Duration::from_micros(1));
            self.clock.set(next.as_micros());
        }
        None
    }

    fn flash(&mut self) -> Vec<u8> {
        self.core
            .writer_mut()
            .expect("writer")
            .flash_mut()
            .bytes
            .clone()
    }
}

fn pk() -> [u8; 32] {
    *keypair().pk
}

#[test]
fn full_update_from_erased_flash_with_loss() {
    let mut s = settings();
    s.rx_loss_permille = 100;
    let mut h = Harness::new(s, "2.0", pk(), MemFlash::new(64 * 1024));
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Updated));
    let flash = h.flash();
    assert_eq!(&flash[..h.image.len()], &h.image[..]);
    assert_eq!(h.core.receiver().state(), DeviceState::Done);
    assert!(h.core.receiver().is_finished());
    assert_eq!(h.core.stats().resumed, 0);
    assert_eq!(h.core.stats().blocks_written, 7);
    assert!(h.core.stats().test_dropped > 0);
    assert_eq!(h.opened.get(), 1);
    // Final reports went to the repair server and to the sender.
    let done: Vec<_> = h
        .statuses
        .iter()
        .filter(|s| s.1 == DeviceState::Done)
        .collect();
    assert!(done.iter().any(|s| s.0 == sender_addr()));
    assert!(done
        .iter()
        .any(|s| s.0 == "10.0.0.2:7855".parse().expect("addr")));
}

#[test]
fn the_verifying_status_goes_out_before_the_read_back() {
    // R-CAR-5: a sender waiting for its fleet holds the carousel once every
    // device reports `verifying`, so that report must not wait for the
    // read-back it announces.
    let mut h = Harness::new(settings(), "2.0", pk(), MemFlash::new(64 * 1024));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    while h.core.receiver().state() != DeviceState::Verifying {
        assert!(
            now < Instant::ZERO + Duration::from_secs(10),
            "never verifying"
        );
        if let Some(t) = h.sender.poll_transmit(now, &h.image, &mut buf) {
            h.core.handle_datagram(now, sender_addr(), &buf[..t.len]);
        }
        if h.core.receiver().state() == DeviceState::Verifying {
            break;
        }
        h.core.handle_timeout(now);
        while h.core.poll_transmit(now, &mut out).is_some() {}
        now = now + Duration::from_micros(200);
        h.clock.set(now.as_micros());
    }
    // The read-back is due at once, but not done yet: the Status is first.
    assert_eq!(h.core.deadline(), Some(Instant::ZERO));
    let mut sent = Vec::new();
    while let Some((to, len)) = h.core.poll_transmit(now, &mut out) {
        if let Ok((_, Frame::Status(st))) = decode(&out[..len]) {
            sent.push((to, st.state));
        }
    }
    assert!(
        sent.contains(&(sender_addr(), DeviceState::Verifying)),
        "{sent:?}"
    );
    assert_eq!(h.core.receiver().state(), DeviceState::Verifying);
    h.core.handle_timeout(now);
    assert_eq!(
        h.core.receiver().state(),
        DeviceState::Done,
        "read back on the next turn"
    );
}

#[test]
fn resume_skips_blocks_on_flash_and_rewrites_the_header_last() {
    let img = image(BLOCK as usize * 6 + 100);
    let mut flash = MemFlash::new(64 * 1024);
    // A previous run wrote the header and blocks 1..=3 before the power went.
    flash.bytes[..BLOCK as usize * 4].copy_from_slice(&img[..BLOCK as usize * 4]);
    let mut h = Harness::new(settings(), "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Updated));
    // The matching header is withheld: 3 resumed, header + 3 tail blocks written.
    assert_eq!(h.core.stats().resumed, 3);
    assert_eq!(h.core.stats().blocks_written, 4);
    assert_eq!(&h.flash()[..img.len()], &img[..]);
    // Header invalidated first, written last.
    let writes = h
        .core
        .writer_mut()
        .expect("writer")
        .flash_mut()
        .writes
        .clone();
    assert_eq!(writes.first(), Some(&(0, BLOCK as usize)), "{writes:?}");
    assert_eq!(writes.last(), Some(&(0, BLOCK as usize)), "{writes:?}");
    assert!(
        writes[1..writes.len() - 1]
            .iter()
            .all(|w| w.0 >= u64::from(BLOCK)),
        "{writes:?}"
    );
}

#[test]
fn resume_without_in_place_counts_the_header() {
    let img = image(BLOCK as usize * 6 + 100);
    let mut flash = MemFlash::new(64 * 1024);
    flash.bytes[..BLOCK as usize * 4].copy_from_slice(&img[..BLOCK as usize * 4]);
    let mut s = settings();
    s.activation = Activation::None;
    let mut h = Harness::new(s, "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Updated));
    assert_eq!(h.core.stats().resumed, 4);
    assert_eq!(h.core.stats().blocks_written, 3);
    assert_eq!(&h.flash()[..img.len()], &img[..]);
}

#[test]
fn image_already_complete_is_verified_without_writing() {
    let img = image(BLOCK as usize * 6 + 100);
    let mut flash = MemFlash::new(64 * 1024);
    flash.bytes[..img.len()].copy_from_slice(&img);
    let mut h = Harness::new(settings(), "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(10)), Some(ExitCode::Updated));
    assert_eq!(h.core.stats().resumed, 7);
    assert_eq!(h.core.stats().blocks_written, 0);
}

#[test]
fn not_newer_exits_zero_after_final_statuses_and_writes_nothing() {
    let mut h = Harness::new(settings(), "1.0", pk(), MemFlash::new(64 * 1024));
    assert_eq!(h.run(Duration::from_secs(10)), Some(ExitCode::Ok));
    assert!(
        h.now() < Instant::ZERO + Duration::from_secs(2),
        "exits at once, not at the window's end"
    );
    assert_eq!(h.opened.get(), 0);
    let refused = h
        .statuses
        .iter()
        .filter(|s| s.1 == DeviceState::Refused && s.2 == Reason::NotNewer)
        .count();
    assert!(refused >= 3, "{:?}", h.statuses);
}

/// H1 (R-ANN-2): a signed image older than the running one is a replay or
/// a stale sender: no "nothing to do" exit, the device listens on.
#[test]
fn r_ann_2_an_older_signed_image_does_not_end_the_run() {
    let mut s = settings();
    s.current_version = "2.0".into();
    let mut h = Harness::new(s, "1.0", pk(), MemFlash::new(64 * 1024));
    assert_eq!(h.run(Duration::from_secs(10)), Some(ExitCode::Ok));
    assert!(
        h.now() >= Instant::ZERO + Duration::from_secs(5),
        "listened for the whole boot window"
    );
}

#[test]
fn not_newer_without_exit_when_current_waits_for_the_window() {
    let mut s = settings();
    s.exit_when_current = false;
    let mut h = Harness::new(s, "1.0", pk(), MemFlash::new(64 * 1024));
    assert_eq!(h.run(Duration::from_secs(10)), Some(ExitCode::Ok));
    assert!(h.now() >= Instant::ZERO + Duration::from_secs(5));
}

#[test]
fn bad_signature_keeps_listening_then_exits_three() {
    let other = *ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([8; 32])).pk;
    let mut h = Harness::new(settings(), "2.0", other, MemFlash::new(64 * 1024));
    assert_eq!(h.run(Duration::from_secs(20)), Some(ExitCode::Refused));
    assert!(h.now() >= Instant::ZERO + Duration::from_secs(5));
    assert_eq!(h.opened.get(), 0);
    assert!(h
        .statuses
        .iter()
        .any(|s| s.1 == DeviceState::Refused && s.2 == Reason::BadSignature));
    // R-STAT-7: the refusal is also the last word before the exit.
    assert_eq!(
        last_statuses(&h, 3),
        [(DeviceState::Refused, Reason::BadSignature); 3]
    );
}

/// The states and reasons of the last `n` Status reports.
fn last_statuses(h: &Harness, n: usize) -> Vec<(DeviceState, Reason)> {
    let st = &h.statuses[h.statuses.len().saturating_sub(n)..];
    st.iter().map(|s| (s.1, s.2)).collect()
}

#[test]
fn r_stat_7_a_target_too_small_is_reported_refused_too_large_before_exit_four() {
    let mut h = Harness::new(settings(), "2.0", pk(), MemFlash::new(2 * BLOCK as usize));
    assert_eq!(h.run(Duration::from_secs(20)), Some(ExitCode::Flash));
    assert_eq!(
        last_statuses(&h, 3),
        [(DeviceState::Refused, Reason::TooLarge); 3]
    );
    assert!(
        h.now() < Instant::ZERO + Duration::from_secs(1),
        "{:?}",
        h.now()
    );
    println!("R-STAT-7: too large: {:?}", last_statuses(&h, 3));
}

#[test]
fn no_announce_exits_zero_at_the_end_of_the_boot_window() {
    let mut h = Harness::new(settings(), "2.0", pk(), MemFlash::new(64 * 1024));
    h.feeding = false;
    assert_eq!(h.run(Duration::from_secs(20)), Some(ExitCode::Ok));
    let t = h.now();
    assert!(
        t >= Instant::ZERO + Duration::from_secs(5) && t < Instant::ZERO + Duration::from_secs(6),
        "{t:?}"
    );
}

#[test]
fn silence_mid_transfer_is_a_stall() {
    let mut h = Harness::new(settings(), "2.0", pk(), MemFlash::new(64 * 1024));
    // Run until receiving has started, then the sender goes away.
    while h.core.receiver().state() != DeviceState::Receiving || h.core.receiver().blocks_done() < 2
    {
        assert_eq!(
            h.run(h.now().saturating_since(Instant::ZERO) + Duration::from_millis(1)),
            None
        );
    }
    h.feeding = false;
    let silent_at = h.now();
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Stalled));
    let waited = h.now().saturating_since(silent_at);
    assert!(
        waited >= Duration::from_millis(2900) && waited <= Duration::from_millis(3200),
        "{waited:?}"
    );
    // R-STAT-7: stalled, three times to the repair server and three to the
    // proven sender, and nothing after it.
    let last = last_statuses(&h, 7);
    assert_eq!(last[0], (DeviceState::Receiving, Reason::None));
    assert!(last[1..]
        .iter()
        .all(|s| *s == (DeviceState::Stalled, Reason::None)));
    let sender = h
        .statuses
        .iter()
        .rev()
        .take(6)
        .filter(|s| s.0 == sender_addr());
    assert_eq!(sender.count(), 3);
}

#[test]
fn flash_write_failure_exits_four_after_reporting() {
    let mut flash = MemFlash::new(64 * 1024);
    flash.fail_write_at = Some(u64::from(BLOCK) * 2 + 10);
    let mut h = Harness::new(settings(), "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Flash));
    assert_eq!(h.core.receiver().state(), DeviceState::Failed);
    assert!(h
        .statuses
        .iter()
        .any(|s| s.1 == DeviceState::Failed && s.2 == Reason::FlashError));
}

#[test]
fn poll_timeout_rounds_up_and_is_capped() {
    let now = Instant::from_micros(1_000);
    assert_eq!(poll_ms(now, Some(Instant::from_micros(1_400))), 1);
    assert_eq!(poll_ms(now, Some(Instant::from_micros(500))), 0);
    assert_eq!(poll_ms(now, Some(Instant::from_micros(60_000_000))), 1000);
    assert_eq!(poll_ms(now, None), 1000);
}

#[test]
fn new_bad_block_restarts_with_a_rescan_and_completes() {
    let mut flash = MemFlash::new(64 * 1024);
    flash.new_bad_at = Some(u64::from(BLOCK) * 3 + 1);
    let mut h = Harness::new(settings(), "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Updated));
    assert_eq!(h.core.stats().restarts, 1);
    assert_eq!(
        h.opened.get(),
        1,
        "the open target is kept across the restart"
    );
    assert!(
        h.core.stats().resumed >= 1,
        "blocks written before the restart are resumed"
    );
    let img = h.image.clone();
    assert_eq!(&h.flash()[..img.len()], &img[..]);
}

// ---------------------------------------------------------------------------
// A/B through the U-Boot environment: the full flow on simulated flash.

mod ab {
    use super::*;
    use crate::activate::{activate_ab, active_slot, pending_confirmation, Slot};
    use crate::config::{AbConfig, EnvEndian};
    use crate::confirm::{confirm, Outcome};
    use flasher::uboot_env::{Endian, EnvLocation, UbootEnv};
    use flasher::SimNor;
    use std::path::{Path, PathBuf};

    fn ab_config() -> AbConfig {
        AbConfig {
            slot_a: "mem:a".into(),
            slot_b: "mem:b".into(),
            slot_var: "boot_slot".into(),
            slot_a_value: "a".into(),
            slot_b_value: "b".into(),
            upgrade_available_var: "upgrade_available".into(),
            bootcount_var: "bootcount".into(),
            activated_var: "firmcast_activated".into(),
            env_config: PathBuf::from("/unused"),
            env_endian: EnvEndian::Native,
            allow_single_copy_env: false,
        }
    }

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
            !pending_confirmation(&env, &ab),
            "no update while unconfirmed"
        );
        let active = active_slot(&env, &ab).expect("slot");
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
            activate_ab(&mut env, &ab, new, &info.min_version, false).map_err(|e| e.to_string())
        }));
        let code = h.run(Duration::from_secs(60)).expect("exits");
        slots[idx] = h.core.writer_mut().expect("writer").flash_mut().clone();
        (code, new, h)
    }

    /// R-ROLL-2: on `ab-uboot` the floor goes into the environment in the
    /// save that flips the slot, and never goes down.
    #[test]
    fn r_roll_2_the_floor_is_saved_with_the_slot_flip_and_never_lowered() {
        let dir = Dir(std::env::temp_dir().join(format!("fc-agent-floor-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("mkdir");
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
        let dir = Dir(std::env::temp_dir().join(format!("fc-agent-ab-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("mkdir");
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
        let o =
            confirm(&mut env, &ab, || Err("web UI not answering".into()), false).expect("confirm");
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
        assert!(pending_confirmation(&env, &ab));

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
        assert_eq!(active_slot(&env, &ab).expect("slot"), Slot::B);
    }

    #[test]
    fn failed_activation_reports_and_exits_six() {
        let mut s = settings();
        s.activation = Activation::AbUboot;
        let mut h = Harness::new(s, "2.0", pk(), MemFlash::new(64 * 1024));
        h.core
            .set_activator(Box::new(|_| Err("env device gone".into())));
        assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Activation));
        assert!(!h.core.activated());
        assert!(h
            .statuses
            .iter()
            .any(|s| s.1 == DeviceState::Failed && s.2 == Reason::ActivationFailed));
    }

    #[test]
    fn dry_run_writes_nothing_and_only_plans_the_flip() {
        let dir = Dir(std::env::temp_dir().join(format!("fc-agent-ab-dry-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("mkdir");
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
        );
        let p = env_path.clone();
        let line = Rc::new(std::cell::RefCell::new(String::new()));
        let l2 = line.clone();
        core.set_activator(Box::new(move |_| {
            let mut env = open_env(&p);
            let r =
                activate_ab(&mut env, &ab_config(), Slot::B, "", true).map_err(|e| e.to_string());
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
}

#[test]
fn a_block_not_yet_scanned_is_not_rewritten_when_the_flash_holds_it() {
    let img = image(BLOCK as usize * 3);
    let mut flash = MemFlash::new(64 * 1024);
    flash.bytes[BLOCK as usize..BLOCK as usize * 2]
        .copy_from_slice(&img[BLOCK as usize..BLOCK as usize * 2]);
    let opts = WriterOptions {
        header_last: true,
        verify: true,
    };
    let mut writer = Some(ImageWriter::new(flash, img.len() as u64, BLOCK, opts).expect("writer"));
    let mut invalidated = false;
    let block = |i: usize| &img[i * BLOCK as usize..(i + 1) * BLOCK as usize];
    // Block 1 is on flash already: read, compared, not written; the old
    // header is left alone since nothing changed.
    let r = write_block(&mut writer, &mut invalidated, true, true, 1, block(1));
    assert_eq!(r.expect("read"), Written::AlreadyThere);
    assert!(!invalidated);
    let w = writer.as_mut().expect("writer");
    assert!(w.flash_mut().writes.is_empty());
    // Block 2 is not: the header is invalidated first, then it is written.
    let r = write_block(&mut writer, &mut invalidated, true, true, 2, block(2));
    assert_eq!(r.expect("write"), Written::Flashed);
    assert!(invalidated);
    // Once the scan has passed a block, it is written without a look.
    let r = write_block(&mut writer, &mut invalidated, true, false, 1, block(1));
    assert_eq!(r.expect("write"), Written::Flashed);
    let writes = &writer.as_mut().expect("writer").flash_mut().writes;
    assert!(
        writes.contains(&(u64::from(BLOCK), BLOCK as usize)),
        "{writes:?}"
    );
}

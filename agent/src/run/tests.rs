//! Loop-level tests of [`Core`] without a network: an in-process
//! `proto::sender::Sender` feeds it datagrams on a fake clock, an in-memory
//! flash takes the writes.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use proto::sender::{Sender, SenderConfig};
use proto::wire::{decode, DeviceState, Frame, MAX_DATAGRAM};

use flasher::{ImageWriter, WriterOptions};
use proto::receiver::ReceiverConfig;
use proto::wire::Reason;
use proto::Instant;

use super::event_loop::poll_ms;
use super::shell::{write_block, Written};
use super::{Core, CoreSettings, Opener};
use crate::config::Activation;
use crate::exit::ExitCode;
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
    // The read-back runs on the next turn; the receiver learns its result
    // on the turn after, with that turn's `now`.
    h.core.handle_timeout(now);
    assert_eq!(
        h.core.deadline(),
        Some(Instant::ZERO),
        "result to hand over"
    );
    let now = now + Duration::from_micros(200);
    h.core.handle_timeout(now);
    assert_eq!(
        h.core.receiver().state(),
        DeviceState::Done,
        "read back, then verified"
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
fn blocks_sharing_an_eraseblock_cost_it_one_erase() {
    // Four blocks to a 16 KiB NOR eraseblock, over an old image: the scan
    // marks every block to be written, so the in-place header's erase and
    // each later eraseblock's first write leave the neighbours erased.
    let img = image(BLOCK as usize * 6 + 100);
    let mut flash = MemFlash::nor(64 * 1024, 4 * BLOCK);
    flash.bytes[..img.len()].fill(0x5A);
    let mut h = Harness::new(settings(), "2.0", pk(), flash);
    assert_eq!(h.run(Duration::from_secs(60)), Some(ExitCode::Updated));
    assert_eq!(h.core.stats().blocks_written, 7);
    assert_eq!(&h.flash()[..img.len()], &img[..]);
    let w = h.core.writer_mut().expect("writer");
    assert_eq!(w.shared_eraseblock_size(), Some(4 * BLOCK));
    assert_eq!(w.erases(), 2, "one erase per eraseblock");
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
    assert_eq!(poll_ms(now, Some(Instant::from_micros(501_300))), 501);
    assert_eq!(poll_ms(now, Some(Instant::from_micros(1_000_999))), 1000);
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

mod ab;

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

/// The already-there check of a block larger than the writer's read-back
/// piece compares every piece: a block that differs only in its last byte
/// is written.
#[test]
fn the_already_there_check_compares_a_large_block_to_its_last_byte() {
    let bs = 65_536usize;
    let img = image(bs * 2);
    let mut flash = MemFlash::new(bs * 2);
    flash.bytes.copy_from_slice(&img);
    flash.bytes[2 * bs - 1] ^= 0x80;
    let opts = WriterOptions {
        header_last: false,
        verify: true,
    };
    let mut writer =
        Some(ImageWriter::new(flash, img.len() as u64, bs as u32, opts).expect("writer"));
    let mut invalidated = false;
    let r = write_block(&mut writer, &mut invalidated, false, true, 0, &img[..bs]);
    assert_eq!(r.expect("read"), Written::AlreadyThere);
    let r = write_block(&mut writer, &mut invalidated, false, true, 1, &img[bs..]);
    assert_eq!(r.expect("write"), Written::Flashed);
    let w = writer.as_mut().expect("writer");
    let writes = &w.flash_mut().writes;
    assert!(writes.iter().all(|&(at, _)| at >= bs as u64), "{writes:?}");
    assert_eq!(writes.iter().map(|&(_, n)| n).sum::<usize>(), bs);
}

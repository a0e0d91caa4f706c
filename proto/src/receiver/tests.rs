//! One test per receiver rule (ids from PROTOCOL.md), driven through the
//! public sans-IO interface with hand-built datagrams and fake time.

use super::nack::backoff;
use super::*;
use crate::manifest::{sign, ManifestSpec};
use crate::wire::{Announce, Data, ManifestChunk, FLAG_PARITY};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

const SESSION: u32 = 0x5e55_1011;
const BLOCK: u32 = 4096;
const CHUNK: u32 = 1024;

fn keypair(seed: u8) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
}

fn sender_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000)
}

fn ms(n: u64) -> Instant {
    Instant::from_micros(n * 1000)
}

struct Fixture {
    image: Vec<u8>,
    signed: Vec<u8>,
    manifest: Manifest,
    board: &'static str,
    version: &'static str,
}

fn fixture_with(board: &'static str, version: &'static str, key: u8, len: usize) -> Fixture {
    let image: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let spec = ManifestSpec {
        board,
        version,
        block_size: BLOCK,
        chunk_size: CHUNK,
        created_unix: 0,
        min_version: "",
    };
    let signed = sign(&spec, &image, &keypair(key).sk).expect("sign");
    let manifest = Manifest::verify(&signed, &keypair(key).pk).expect("verify");
    Fixture {
        image,
        signed,
        manifest,
        board,
        version,
    }
}

fn fixture() -> Fixture {
    // 5 blocks; the last one is short (2 chunks and a bit).
    fixture_with("acme,rt1", "2.1.0", 1, 4 * BLOCK as usize + 2100)
}

fn config() -> ReceiverConfig {
    let mut c = ReceiverConfig::new(42, "acme,rt1", "2.0.0", *keypair(1).pk);
    c.window_blocks = 4;
    c
}

fn enc(f: &Fixture, flags: u8, frame: &Frame<'_>) -> Vec<u8> {
    enc_as(SESSION, f.manifest.image_id, flags, frame)
}

fn enc_as(session: u32, id: ImageId, flags: u8, frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_DATAGRAM];
    let n = wire::encode(session, id, flags, frame, &mut buf).expect("encode");
    buf[..n].to_vec()
}

fn announce(f: &Fixture) -> Vec<u8> {
    enc(
        f,
        0,
        &Frame::Announce(Announce {
            board: f.board,
            version: f.version,
            image_len: f.image.len() as u64,
            block_size: BLOCK,
            chunk_size: CHUNK,
            manifest_len: f.signed.len() as u32,
            rate_kbps: 1000,
            pass: 0,
        }),
    )
}

fn manifest_chunks(f: &Fixture) -> Vec<Vec<u8>> {
    f.signed
        .chunks(CHUNK as usize)
        .enumerate()
        .map(|(i, c)| {
            enc(
                f,
                0,
                &Frame::ManifestChunk(ManifestChunk {
                    offset: i as u32 * CHUNK,
                    bytes: wire::Bytes(c),
                }),
            )
        })
        .collect()
}

fn data(f: &Fixture, block: u32, chunk: u32, flags: u8) -> Vec<u8> {
    let start = (block * BLOCK + chunk * CHUNK) as usize;
    let end = (start + CHUNK as usize)
        .min(f.image.len())
        .min(((block + 1) * BLOCK) as usize);
    enc(
        f,
        flags,
        &Frame::Data(Data {
            block,
            chunk,
            payload: wire::Bytes(&f.image[start..end]),
        }),
    )
}

/// Every (block, chunk) of the image in carousel order.
fn all_chunks(f: &Fixture) -> Vec<(u32, u32)> {
    (0..f.manifest.block_count())
        .flat_map(|b| (0..f.manifest.chunks_in_block(b)).map(move |c| (b, c)))
        .collect()
}

/// What the fake shell saw.
#[derive(Default)]
struct Shell {
    flash: Vec<Option<Vec<u8>>>,
    write_order: Vec<u32>,
    refusals: Vec<Reason>,
    /// Unsigned hints not followed (R-ANN-2).
    hints: Vec<Reason>,
    accepted: bool,
    done: bool,
    failed: Option<Reason>,
    foreign: u32,
    nacks: Vec<Nack>,
    statuses: Vec<(Dest, DeviceState, Reason)>,
}

impl Shell {
    fn new(blocks: u32) -> Shell {
        Shell {
            flash: (0..blocks).map(|_| None).collect(),
            ..Shell::default()
        }
    }

    /// Drain events and transmits like the agent does; writes always succeed.
    fn drain(&mut self, rx: &mut Receiver, now: Instant, present: &[u32]) {
        loop {
            let mut progressed = false;
            while let Some(ev) = rx.poll_event() {
                progressed = true;
                match ev {
                    Event::ManifestAccepted => {
                        self.accepted = true;
                        for &b in present {
                            rx.handle_block_present(now, b);
                        }
                        rx.handle_scan_done(now);
                    }
                    Event::Refused(r) if r.signed => self.refusals.push(r.reason),
                    Event::Refused(r) => self.hints.push(r.reason),
                    Event::WriteBlock { index, data } => {
                        self.flash[index as usize] = Some(data.to_vec());
                        self.write_order.push(index);
                        rx.handle_flash_done(now, index, Ok(()));
                    }
                    Event::VerifyImage => rx.handle_verify_done(now, &[]),
                    Event::Done => self.done = true,
                    Event::Failed(r) => self.failed = Some(r),
                    Event::Foreign { .. } => self.foreign += 1,
                }
            }
            let mut buf = [0u8; wire::MAX_DATAGRAM];
            while let Some(t) = rx.poll_transmit(now, &mut buf) {
                progressed = true;
                match wire::decode(&buf[..t.len]).expect("receiver emits valid frames") {
                    (_, Frame::Nack(n)) => self.nacks.push(n),
                    (_, Frame::Status(s)) => self.statuses.push((t.dest, s.state, s.reason)),
                    other => panic!("unexpected frame from receiver: {other:?}"),
                }
            }
            if !progressed {
                return;
            }
        }
    }
}

fn feed(
    rx: &mut Receiver,
    shell: &mut Shell,
    now: Instant,
    dgram: &[u8],
) -> Result<(), DropReason> {
    let r = rx.handle_datagram(now, sender_addr(), dgram);
    shell.drain(rx, now, &[]);
    r
}

/// Announce + manifest: the receiver ends up Receiving.
fn start(f: &Fixture, rx: &mut Receiver, shell: &mut Shell, present: &[u32]) {
    rx.handle_datagram(ms(0), sender_addr(), &announce(f))
        .expect("announce");
    for m in manifest_chunks(f) {
        rx.handle_datagram(ms(0), sender_addr(), &m)
            .expect("manifest chunk");
    }
    shell.drain(rx, ms(0), present);
    assert!(shell.accepted, "manifest accepted");
}

fn flash_equals_image(f: &Fixture, shell: &Shell) -> bool {
    let mut all = Vec::new();
    for b in &shell.flash {
        match b {
            Some(d) => all.extend_from_slice(d),
            None => return false,
        }
    }
    all == f.image
}

#[test]
fn lossless_stream_is_written_verified_and_reported_done() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    assert_eq!(rx.window_bytes(), 0, "no window before a manifest");
    start(&f, &mut rx, &mut shell, &[]);
    assert_eq!(rx.state(), DeviceState::Receiving);
    assert_eq!(rx.window_bytes(), 4 * f.manifest.padded_block_len());
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert!(flash_equals_image(&f, &shell));
    assert!(shell.nacks.is_empty(), "no loss, no NACK");
    // Done: the window's memory goes back before the shell activates.
    assert_eq!(rx.window_bytes(), 0);
    for (b, c) in all_chunks(&f).into_iter().take(3) {
        let _ = feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0));
    }
    assert_eq!(
        rx.state(),
        DeviceState::Done,
        "data after done changes nothing"
    );
    // R-STAT-1: final reports go to the repair server and to the sender.
    let mut t = 1;
    while !rx.is_finished() {
        t += 60;
        rx.handle_timeout(ms(t));
        shell.drain(&mut rx, ms(t), &[]);
        assert!(t < 2000, "final statuses never finished");
    }
    let done_reports: Vec<_> = shell
        .statuses
        .iter()
        .filter(|s| s.1 == DeviceState::Done)
        .collect();
    assert!(done_reports.iter().any(|s| s.0 == Dest::RepairServer));
    assert!(done_reports
        .iter()
        .any(|s| s.0 == Dest::Peer(sender_addr())));
}

/// An Announce with these fields for image `id` in `session`.
fn announce_as(f: &Fixture, session: u32, id: ImageId, board: &str, version: &str) -> Vec<u8> {
    enc_as(
        session,
        id,
        0,
        &Frame::Announce(Announce {
            board,
            version,
            image_len: f.image.len() as u64,
            block_size: BLOCK,
            chunk_size: CHUNK,
            manifest_len: f.signed.len() as u32,
            rate_kbps: 1000,
            pass: 0,
        }),
    )
}

fn was_refused_in_status(shell: &Shell) -> bool {
    shell.statuses.iter().any(|s| s.1 == DeviceState::Refused)
}

#[test]
fn r_ann_2_announce_for_another_board_is_a_hint_neither_fetched_nor_remembered() {
    let f = fixture_with("acme,rt2", "2.1.0", 1, 5000);
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    feed(&mut rx, &mut shell, ms(0), &announce(&f)).expect("announce");
    assert_eq!(shell.hints, [Reason::WrongBoard]);
    assert!(shell.refusals.is_empty(), "nothing signed was refused");
    assert_eq!(rx.state(), DeviceState::Listening);
    for m in manifest_chunks(&f) {
        assert_eq!(
            feed(&mut rx, &mut shell, ms(1), &m),
            Err(DropReason::Unexpected)
        );
    }
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, 0, 0)),
        Err(DropReason::Unexpected)
    );
    assert!(shell.write_order.is_empty());
    assert!(
        !was_refused_in_status(&shell),
        "an unsigned Announce is no reason to report a refusal"
    );
    // Not remembered: the next one is looked at again.
    feed(&mut rx, &mut shell, ms(2), &announce(&f)).expect("announce again");
    assert_eq!(shell.hints.len(), 2);
    assert_eq!(rx.stats().announces_refused, 2);
}

#[test]
fn r_ver_1_announced_version_not_newer_is_a_hint() {
    let f = fixture_with("acme,rt1", "2.0.0", 1, 5000);
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    feed(&mut rx, &mut shell, ms(0), &announce(&f)).expect("announce");
    assert_eq!(shell.hints, [Reason::NotNewer]);
    assert!(shell.refusals.is_empty());
}

/// H1: a forged Announce of an older version for this board, then the real
/// sender: nothing ends, nothing is reported, the real image is written.
#[test]
fn r_ann_2_a_forged_older_announce_ends_nothing() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let forged = announce_as(&f, 0xbad, ImageId([0xEE; 8]), "acme,rt1", "1.0.0");
    feed(&mut rx, &mut shell, ms(0), &forged).expect("forged announce");
    assert_eq!(rx.state(), DeviceState::Listening);
    assert!(
        !was_refused_in_status(&shell),
        "no Refused status for a forged Announce"
    );
    start(&f, &mut rx, &mut shell, &[]);
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done && flash_equals_image(&f, &shell));
    assert!(shell.refusals.is_empty());
    std::println!(
        "forged older Announce: {} hint(s), 0 refusals, image written",
        shell.hints.len()
    );
}

/// H2: an Announce naming the real image id with another board does not put
/// the real image on the refused list.
#[test]
fn r_ann_2_a_forged_announce_for_the_real_image_id_does_not_block_it() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let forged = announce_as(&f, SESSION, f.manifest.image_id, "evil,board", "2.1.0");
    feed(&mut rx, &mut shell, ms(0), &forged).expect("forged announce");
    assert_eq!(shell.hints, [Reason::WrongBoard]);
    start(&f, &mut rx, &mut shell, &[]);
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done && flash_equals_image(&f, &shell));
}

/// H2: a forged ManifestChunk that wins the race costs a re-fetch.
#[test]
fn r_man_3_a_forged_manifest_chunk_costs_a_refetch_not_the_image() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    feed(&mut rx, &mut shell, ms(0), &announce(&f)).expect("announce");
    let forged = enc(
        &f,
        0,
        &Frame::ManifestChunk(ManifestChunk {
            offset: 0,
            bytes: wire::Bytes(&[0x55; CHUNK as usize][..f.signed.len().min(CHUNK as usize)]),
        }),
    );
    feed(&mut rx, &mut shell, ms(1), &forged).expect("forged chunk is stored first");
    assert!(!shell.accepted, "the polluted copy does not hash to the id");
    assert_eq!(shell.hints, [Reason::ManifestMismatch]);
    assert!(
        shell.refusals.is_empty(),
        "nothing is refused or remembered"
    );
    assert_eq!(rx.state(), DeviceState::FetchingManifest, "fetched again");
    for m in manifest_chunks(&f) {
        feed(&mut rx, &mut shell, ms(3), &m).expect("next copy");
    }
    assert!(shell.accepted);
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(4), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done && flash_equals_image(&f, &shell));
    std::println!(
        "forged manifest chunk: {} re-fetch, image written",
        rx.stats().manifest_refetches
    );
}

/// A forged Announce made the device fetch a fake image id while the real
/// Announce went by: the fetch that makes no progress gives way.
#[test]
fn r_ann_3_a_fetch_that_makes_no_progress_gives_way_to_the_next_candidate() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let fake = announce_as(&f, 0xbad, ImageId([0x77; 8]), "acme,rt1", "9.9.9");
    feed(&mut rx, &mut shell, ms(0), &fake).expect("forged announce");
    assert_eq!(rx.state(), DeviceState::FetchingManifest);
    feed(&mut rx, &mut shell, ms(10), &announce(&f)).expect("real announce waits");
    for m in manifest_chunks(&f) {
        assert_eq!(
            feed(&mut rx, &mut shell, ms(20), &m),
            Err(DropReason::OtherImage)
        );
    }
    assert!(rx.poll_timeout().is_some_and(|t| t <= ms(5000)));
    rx.handle_timeout(ms(4999));
    assert_eq!(rx.stats().fetches_abandoned, 0);
    let due = ms(5000);
    rx.handle_timeout(due);
    shell.drain(&mut rx, due, &[]);
    assert_eq!(rx.stats().fetches_abandoned, 1);
    for m in manifest_chunks(&f) {
        feed(&mut rx, &mut shell, due, &m).expect("real manifest");
    }
    assert!(shell.accepted, "the real image was fetched next");
    std::println!(
        "forged image id: gave way after {} ms without progress",
        due.saturating_since(ms(0)).as_millis()
    );
}

#[test]
fn r_man_1_manifest_signed_by_another_key_is_refused_and_nothing_written() {
    let f = fixture_with("acme,rt1", "2.1.0", 9, 5000);
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    feed(&mut rx, &mut shell, ms(0), &announce(&f)).expect("announce");
    for m in manifest_chunks(&f) {
        let _ = feed(&mut rx, &mut shell, ms(1), &m);
    }
    assert_eq!(shell.refusals, [Reason::BadSignature]);
    assert!(!shell.accepted);
    for (b, c) in all_chunks(&f) {
        let _ = feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0));
    }
    assert!(shell.write_order.is_empty());
    // The refused image is remembered: its next announce does not start another fetch.
    assert_eq!(
        feed(&mut rx, &mut shell, ms(3), &announce(&f)),
        Err(DropReason::OtherImage)
    );
}

#[test]
fn r_ann_2_a_signed_not_newer_manifest_is_refused_and_remembered() {
    let f = fixture_with("acme,rt1", "2.0.0", 1, 5000);
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    // The Announce lies about the version; the signed manifest decides.
    let lying = announce_as(&f, SESSION, f.manifest.image_id, "acme,rt1", "3.0.0");
    feed(&mut rx, &mut shell, ms(0), &lying).expect("announce");
    for m in manifest_chunks(&f) {
        let _ = feed(&mut rx, &mut shell, ms(1), &m);
    }
    assert_eq!(shell.refusals, [Reason::NotNewer]);
    assert!(rx.refusal().is_some_and(|r| r.signed));
    assert_eq!(
        feed(&mut rx, &mut shell, ms(2), &lying),
        Err(DropReason::OtherImage),
        "remembered"
    );
}

#[test]
fn r_man_3_where_the_announce_disagrees_with_the_signed_manifest_the_manifest_wins() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let lying = enc(
        &f,
        0,
        &Frame::Announce(Announce {
            board: f.board,
            version: f.version,
            image_len: f.image.len() as u64 - 1,
            block_size: BLOCK,
            chunk_size: CHUNK,
            manifest_len: f.signed.len() as u32,
            rate_kbps: 1,
            pass: 0,
        }),
    );
    feed(&mut rx, &mut shell, ms(0), &lying).expect("announce");
    for m in manifest_chunks(&f) {
        let _ = feed(&mut rx, &mut shell, ms(1), &m);
    }
    assert_eq!(shell.hints, [Reason::ManifestMismatch]);
    assert!(shell.refusals.is_empty());
    assert!(shell.accepted);
    assert_eq!(
        rx.manifest().map(|m| m.image_len),
        Some(f.image.len() as u64)
    );
}

#[test]
fn r_ses_1_datagrams_of_another_image_are_dropped_and_reported_once() {
    let f = fixture();
    let other = fixture_with("acme,rt1", "2.2.0", 1, 5000);
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for _ in 0..3 {
        assert_eq!(
            feed(&mut rx, &mut shell, ms(1), &data(&other, 0, 0, 0)),
            Err(DropReason::OtherImage)
        );
    }
    assert_eq!(
        shell.foreign, 1,
        "one log event per foreign (session, image)"
    );
    assert_eq!(rx.stats().chunks_stored, 0);
    assert_eq!(rx.stats().dropped_foreign, 3);
}

fn data_in(f: &Fixture, session: u32, block: u32, chunk: u32) -> Vec<u8> {
    let start = (block * BLOCK + chunk * CHUNK) as usize;
    let end = (start + CHUNK as usize)
        .min(f.image.len())
        .min(((block + 1) * BLOCK) as usize);
    enc_as(
        session,
        f.manifest.image_id,
        0,
        &Frame::Data(Data {
            block,
            chunk,
            payload: wire::Bytes(&f.image[start..end]),
        }),
    )
}

/// R-SES-1: a restarted sender (new session, same image) is followed
/// without any Announce: the image id and the digests bind the content.
#[test]
fn r_ses_1_data_of_the_image_in_another_session_is_stored() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let new_session = SESSION ^ 0xffff;
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(2), &data_in(&f, new_session, b, c))
            .expect("data of the image in another session");
    }
    assert!(shell.done && flash_equals_image(&f, &shell));
}

/// H5: forged Announces of the real image in a random session switch
/// nothing; the session the device stamps follows data that completed a
/// verified block.
#[test]
fn r_ses_2_3_a_forged_announce_with_a_random_session_switches_nothing() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let forged = announce_as(&f, 0xdead_beef, f.manifest.image_id, f.board, f.version);
    let mut stored_before = 0;
    for (i, (b, c)) in all_chunks(&f).into_iter().enumerate() {
        feed(&mut rx, &mut shell, ms(2), &forged).expect("forged announce");
        if i == 3 {
            stored_before = rx.stats().chunks_stored;
        }
        feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0)).expect("real data is stored");
    }
    assert!(stored_before > 0);
    assert_eq!(rx.stats().dropped_foreign, 0);
    assert!(shell.done && flash_equals_image(&f, &shell));
    let mut buf = [0u8; wire::MAX_DATAGRAM];
    rx.handle_timeout(ms(5000));
    let t = rx.poll_transmit(ms(5000), &mut buf).expect("a status");
    let (h, _) = wire::decode(&buf[..t.len]).expect("valid");
    assert_eq!(h.session, SESSION, "stamped with the real data's session");
}

#[test]
fn r_nack_1_2_holes_are_nacked_after_a_bounded_backoff_and_repairs_complete_the_block() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 1 loses chunks 1 and 2; the stream goes on into block 2.
    for (b, c) in all_chunks(&f).into_iter().filter(|&(b, _)| b <= 2) {
        if b == 1 && (c == 1 || c == 2) {
            continue;
        }
        feed(&mut rx, &mut shell, ms(10), &data(&f, b, c, 0)).expect("data");
    }
    let due = rx.poll_timeout().expect("NACK timer armed");
    let cfg = config();
    assert!(
        due >= ms(10) + cfg.nack_delay_min && due <= ms(10) + cfg.nack_delay_max,
        "back-off within bounds"
    );
    assert!(shell.nacks.is_empty(), "no NACK before the back-off");
    rx.handle_timeout(due);
    shell.drain(&mut rx, due, &[]);
    assert_eq!(shell.nacks.len(), 1);
    let cpb = f.manifest.chunks_per_block();
    assert_eq!(
        shell.nacks[0].ranges.as_slice(),
        &[ChunkRange {
            start: cpb + 1,
            len: 2
        }]
    );
    assert_eq!(shell.nacks[0].device_id, 42);
    // Repairs arrive flagged; the block completes and is flashed.
    for c in [1, 2] {
        feed(&mut rx, &mut shell, due, &data(&f, 1, c, FLAG_REPAIR)).expect("repair");
    }
    assert!(shell.write_order.contains(&1));
    assert_eq!(rx.stats().repairs_stored, 2);
}

#[test]
fn r_nack_3_unanswered_nacks_are_retried_then_given_up() {
    let f = fixture();
    let mut cfg = config();
    cfg.max_nacks_per_block = 3;
    let mut rx = Receiver::new(cfg.clone(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for c in 1..f.manifest.chunks_per_block() {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    let mut now = ms(1);
    for _ in 0..20 {
        match rx.poll_timeout() {
            Some(t) if t < ms(5000) => {
                now = t;
                rx.handle_timeout(now);
                shell.drain(&mut rx, now, &[]);
            }
            _ => break,
        }
    }
    assert_eq!(shell.nacks.len(), 3, "retried up to max_nacks_per_block");
    assert!(shell
        .nacks
        .iter()
        .all(|n| n.ranges.as_slice() == [ChunkRange { start: 0, len: 1 }]));
    assert!(
        now.saturating_since(ms(1)) >= cfg.nack_retry * 2,
        "retries are spaced by nack_retry"
    );
}

/// Blocks 0 to 2 of the carousel at 10 ms, less chunks `lost` of `block`.
fn stream_blocks_0_to_2_without(
    f: &Fixture,
    rx: &mut Receiver,
    shell: &mut Shell,
    block: u32,
    lost: core::ops::RangeInclusive<u32>,
) {
    for (b, c) in all_chunks(f).into_iter().filter(|&(b, _)| b <= 2) {
        if b == block && lost.contains(&c) {
            continue;
        }
        feed(rx, shell, ms(10), &data(f, b, c, 0)).expect("data");
    }
}

#[test]
fn r_nack_3_an_answer_that_leaves_the_block_short_brings_the_retry_in() {
    let f = fixture();
    let cfg = config();
    let mut rx = Receiver::new(cfg.clone(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 1 loses chunks 1, 2 and 3; the stream goes on into block 2.
    stream_blocks_0_to_2_without(&f, &mut rx, &mut shell, 1, 1..=3);
    let due = rx.poll_timeout().expect("NACK armed");
    rx.handle_timeout(due);
    shell.drain(&mut rx, due, &[]);
    assert_eq!(shell.nacks.len(), 1, "the first NACK");
    // The answer: three symbols, of which the second is lost here.
    let answer = due + Duration::from_millis(5);
    for index in [0, 2] {
        feed(
            &mut rx,
            &mut shell,
            answer,
            &parity_frame(&f, 1, index, None),
        )
        .expect("parity");
    }
    let retry = rx.poll_timeout().expect("retry armed");
    assert!(
        retry >= answer + cfg.nack_suppress,
        "not while the answer may still arrive"
    );
    assert!(
        retry <= answer + cfg.nack_suppress + cfg.nack_delay_max,
        "once the answer stopped, after a back-off: not {:?} after the NACK",
        retry.saturating_since(due)
    );
    assert!(retry < due + cfg.nack_retry);
    rx.handle_timeout(retry);
    shell.drain(&mut rx, retry, &[]);
    assert_eq!(shell.nacks.len(), 2);
    let asked: u32 = shell.nacks[1].ranges.iter().map(|r| r.len).sum();
    assert_eq!(asked, 1, "3 holes less 2 symbols held");
}

#[test]
fn r_blk_2_a_forged_chunk_costs_one_block_and_is_never_flashed() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let forged = enc(
        &f,
        0,
        &Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(&[0xEE; CHUNK as usize]),
        }),
    );
    feed(&mut rx, &mut shell, ms(1), &forged).expect("CRC is valid, so it is stored");
    for c in 1..f.manifest.chunks_per_block() {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    assert_eq!(rx.stats().digest_failures, 1);
    assert!(
        shell.write_order.is_empty(),
        "a block failing its digest is not flashed"
    );
    // The next pass brings the real block.
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert!(flash_equals_image(&f, &shell));
}

/// H3: forged chunks of the real session and image, each winning the race
/// against the real one, are not progress: the stall timer runs; once the
/// forger stops, the blocks are received again and written.
#[test]
fn r_run_1_r_blk_2_forged_chunks_are_not_progress_and_cost_only_time() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let accepted_at = rx.last_progress_at();
    let forged_payload = [0xEE; CHUNK as usize];
    let mut forged_sent = 0;
    for pass in 1..=3u64 {
        for (b, c) in all_chunks(&f) {
            let real = data(&f, b, c, 0);
            let want = f.manifest.block_len(b) - c as usize * CHUNK as usize;
            let forged = enc(
                &f,
                0,
                &Frame::Data(Data {
                    block: b,
                    chunk: c,
                    payload: wire::Bytes(&forged_payload[..want.min(CHUNK as usize)]),
                }),
            );
            forged_sent += 1;
            feed(&mut rx, &mut shell, ms(1000 * pass), &forged).expect("forged, valid CRC");
            feed(&mut rx, &mut shell, ms(1000 * pass), &real).expect("real, loses the race");
        }
    }
    assert!(rx.stats().chunks_stored > 0, "forged chunks were stored");
    assert!(rx.stats().digest_failures > 0);
    assert!(shell.write_order.is_empty(), "nothing forged is flashed");
    assert_eq!(
        rx.last_progress_at(),
        accepted_at,
        "stored chunks are not progress: the stall timer runs"
    );
    // R-BLK-2: a block still holding forged chunks fails once more and is
    // received again: two clean passes.
    for _ in 0..2 {
        for (b, c) in all_chunks(&f) {
            let _ = feed(&mut rx, &mut shell, ms(4000), &data(&f, b, c, 0));
        }
    }
    assert!(
        shell.done && flash_equals_image(&f, &shell),
        "{:?} {} {:?}",
        rx.state(),
        rx.blocks_done(),
        rx.stats()
    );
    assert_eq!(rx.last_progress_at(), ms(4000));
    std::println!(
        "forged chunks: {forged_sent} forged, {} digest failures, progress stayed at {:?} for 3 passes, then the image",
        rx.stats().digest_failures,
        accepted_at
    );
}

#[test]
fn r_win_1_the_window_never_exceeds_its_bound_and_evicts_the_stalest_block() {
    let f = fixture_with("acme,rt1", "2.1.0", 1, 12 * BLOCK as usize);
    let mut cfg = config();
    cfg.window_blocks = 2;
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Every block loses its last chunk: none completes, so slots must be recycled.
    for (i, (b, c)) in all_chunks(&f).into_iter().enumerate() {
        if c == 3 {
            continue;
        }
        feed(&mut rx, &mut shell, ms(i as u64), &data(&f, b, c, 0)).expect("data");
    }
    assert_eq!(
        rx.stats().evictions,
        10,
        "12 incomplete blocks through 2 slots"
    );
    assert!(shell.write_order.is_empty());
    // A lossless second pass completes everything.
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(500), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert!(flash_equals_image(&f, &shell));
}

#[test]
fn r_nack_6_in_the_end_game_an_evicted_block_is_asked_for_whole_before_the_next_pass() {
    // 6 full blocks of 4 chunks, a window of 2.
    let f = fixture_with("acme,rt1", "2.1.0", 1, 6 * BLOCK as usize);
    let mut cfg = config();
    cfg.window_blocks = 2;
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let cpb = f.manifest.chunks_per_block();
    // Blocks 1 and 2 lose chunk 3; block 3's first chunk evicts block 1.
    for (b, c) in all_chunks(&f) {
        if (b == 1 || b == 2) && c == 3 {
            continue;
        }
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
        if b == 3 && c == 0 {
            assert_eq!(rx.stats().evictions, 1, "block 1 evicted for block 3");
        }
        if b < 4 {
            // Not yet the end game: 3 or more blocks missing, 2 slots.
            assert_eq!(rx.stats().endgame_fetches, 0, "after block {b} chunk {c}");
        }
    }
    // Blocks 1 and 2 are all that is missing: block 2 is in the window, and
    // block 1, which went by and is 3 blocks away from the next pass's
    // position, is taken back into the window and asked for whole.
    assert_eq!(rx.stats().endgame_fetches, 1);
    // Each block has its own back-off (R-NACK-2): fire every NACK due soon.
    let mut due = rx.poll_timeout().expect("NACK armed");
    while due <= ms(100) {
        rx.handle_timeout(due);
        shell.drain(&mut rx, due, &[]);
        match rx.poll_timeout() {
            Some(next) if next > due => due = next,
            _ => break,
        }
    }
    let asked: Vec<ChunkRange> = shell
        .nacks
        .iter()
        .flat_map(|n| n.ranges.iter().copied())
        .collect();
    assert!(
        asked.contains(&ChunkRange {
            start: cpb,
            len: cpb
        }),
        "block 1 asked for whole: {asked:?}"
    );
    assert!(
        asked.contains(&ChunkRange {
            start: 2 * cpb + 3,
            len: 1
        }),
        "block 2's hole asked for: {asked:?}"
    );
    // The repairs complete the image with no second pass.
    for (b, c) in [(1, 0), (1, 1), (1, 2), (1, 3), (2, 3)] {
        feed(&mut rx, &mut shell, due, &data(&f, b, c, FLAG_REPAIR)).expect("repair");
    }
    assert!(shell.done);
    assert_eq!(rx.stats().passes_seen, 0);
    assert!(flash_equals_image(&f, &shell));
}

#[test]
fn r_nack_6_blocks_not_yet_sent_while_listening_are_left_to_the_carousel() {
    // A resumed device holds blocks 0-3 of 6 and misses 4 and 5, which fit
    // its window of 2: the end game holds from the start. The carousel is at
    // the start of a pass: blocks 4 and 5 have not gone by while this device
    // listened, so they are left to the carousel, not asked for.
    let f = fixture_with("acme,rt1", "2.1.0", 1, 6 * BLOCK as usize);
    let mut cfg = config();
    cfg.window_blocks = 2;
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[0, 1, 2, 3]);
    for (b, c) in all_chunks(&f).into_iter().filter(|&(b, _)| b <= 1) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert_eq!(rx.stats().endgame_fetches, 0);
    if let Some(due) = rx.poll_timeout() {
        rx.handle_timeout(due);
        shell.drain(&mut rx, due, &[]);
    }
    assert!(shell.nacks.is_empty(), "nothing asked: {:?}", shell.nacks);
    // The carousel brings them.
    for (b, c) in all_chunks(&f).into_iter().filter(|&(b, _)| b >= 2) {
        feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert_eq!(rx.stats().endgame_fetches, 0);
}

#[test]
fn r_res_2_a_block_found_by_the_scan_while_receiving_leaves_the_window() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    // The shell reports the scan done at once and scans while receiving.
    start(&f, &mut rx, &mut shell, &[]);
    assert_eq!(rx.state(), DeviceState::Receiving);
    // Block 1 is half received when the scan finds it on flash.
    for c in 0..2 {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 1, c, 0)).expect("data");
    }
    rx.handle_block_present(ms(2), 1);
    assert_eq!(rx.blocks_done(), 1);
    assert_eq!(rx.stats().blocks_resumed, 1);
    // The rest of the pass: block 1 is not taken again nor written.
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(3), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert!(!shell.write_order.contains(&1), "{:?}", shell.write_order);
    assert_eq!(shell.write_order.len() as u32, f.manifest.block_count() - 1);
}

#[test]
fn r_res_2_the_last_missing_block_found_by_the_scan_starts_the_read_back() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for (b, c) in all_chunks(&f).into_iter().filter(|&(b, _)| b != 3) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(!shell.done);
    rx.handle_block_present(ms(2), 3);
    shell.drain(&mut rx, ms(2), &[]);
    assert!(shell.done, "read back and done once block 3 was found");
}

#[test]
fn r_hdr_1_with_hold_first_block_the_header_is_written_last() {
    let f = fixture();
    let mut cfg = config();
    cfg.hold_first_block = true;
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert_eq!(shell.write_order.last(), Some(&0));
    assert_eq!(shell.write_order.len(), f.manifest.block_count() as usize);
}

#[test]
fn r_res_1_blocks_found_by_the_resume_scan_are_not_received_again() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[0, 2, 3]);
    assert_eq!(rx.stats().blocks_resumed, 3);
    assert_eq!(rx.blocks_done(), 3);
    for (b, c) in all_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.done);
    assert_eq!(shell.write_order, [1, 4]);
}

#[test]
fn r_ver_2_blocks_that_fail_read_back_are_received_again() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[0, 1, 2, 3, 4]);
    // Everything was already there: the receiver goes straight to verifying,
    // and the fake shell's drain reports a clean read-back.
    assert!(shell.done);
    // Now a receiver whose read-back finds block 2 bad.
    let mut rx = Receiver::new(config(), ms(0));
    rx.handle_datagram(ms(0), sender_addr(), &announce(&f))
        .expect("announce");
    for m in manifest_chunks(&f) {
        rx.handle_datagram(ms(0), sender_addr(), &m)
            .expect("manifest");
    }
    assert!(matches!(rx.poll_event(), Some(Event::ManifestAccepted)));
    for b in 0..5 {
        rx.handle_block_present(ms(0), b);
    }
    rx.handle_scan_done(ms(0));
    assert!(matches!(rx.poll_event(), Some(Event::VerifyImage)));
    rx.handle_verify_done(ms(0), &[2]);
    assert_eq!(rx.state(), DeviceState::Receiving);
    assert_eq!(rx.blocks_done(), 4);
}

#[test]
fn garbage_and_truncations_never_panic_and_are_counted() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let good = data(&f, 0, 0, 0);
    for n in 0..good.len() {
        assert!(rx
            .handle_datagram(ms(1), sender_addr(), &good[..n])
            .is_err());
    }
    let mut rng = Rng::new(3);
    for _ in 0..2000 {
        let len = rng.below(1200) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert!(rx.handle_datagram(ms(1), sender_addr(), &junk).is_err());
    }
    assert_eq!(rx.stats().chunks_stored, 0);
    assert!(rx.stats().dropped_decode >= 2000);
}

#[test]
fn out_of_manifest_indices_and_lengths_are_dropped() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let beyond = enc(
        &f,
        0,
        &Frame::Data(Data {
            block: 99,
            chunk: 0,
            payload: wire::Bytes(&[0; 1024]),
        }),
    );
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &beyond),
        Err(DropReason::OutOfManifest)
    );
    let short = enc(
        &f,
        0,
        &Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(&[0; 10]),
        }),
    );
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &short),
        Err(DropReason::OutOfManifest)
    );
    let past_last = enc(
        &f,
        0,
        &Frame::Data(Data {
            block: 4,
            chunk: 3,
            payload: wire::Bytes(&[0; 1024]),
        }),
    );
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &past_last),
        Err(DropReason::OutOfManifest)
    );
}

// --- parity repair and NACK suppression ----------------------------------

fn parity_frame(f: &Fixture, block: u32, index: u32, payload: Option<&[u8]>) -> Vec<u8> {
    let start = (block * BLOCK) as usize;
    let end = (start + BLOCK as usize).min(f.image.len());
    let all = crate::fec::encode_block(&f.image[start..end], CHUNK as usize, BLOCK / CHUNK)
        .expect("encode");
    let sym = &all[index as usize * CHUNK as usize..(index as usize + 1) * CHUNK as usize];
    enc(
        f,
        FLAG_REPAIR | FLAG_PARITY,
        &Frame::Data(Data {
            block,
            chunk: index,
            payload: wire::Bytes(payload.unwrap_or(sym)),
        }),
    )
}

#[test]
fn r_par_3_k_distinct_symbols_rebuild_the_block_in_place() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 1 loses chunks 0 and 2; the short last block 4 loses its last chunk.
    for (b, c) in all_chunks(&f) {
        if (b == 1 && (c == 0 || c == 2)) || (b == 4 && c == 2) {
            continue;
        }
        feed(&mut rx, &mut shell, ms(1), &data(&f, b, c, 0)).expect("data");
    }
    // A parity symbol, its duplicate, then a late source chunk that takes its place back.
    feed(&mut rx, &mut shell, ms(2), &parity_frame(&f, 1, 3, None)).expect("parity");
    feed(&mut rx, &mut shell, ms(2), &parity_frame(&f, 1, 3, None)).expect("dup");
    assert!(!shell.write_order.contains(&1), "3 of 4 symbols");
    // Parity index past the block's parity count (k = 4) is out of the manifest.
    let mut bad = parity_frame(&f, 1, 0, None);
    let (h, _) = wire::decode(&bad).expect("decodes");
    bad = enc_as(
        h.session,
        h.image_id,
        h.flags,
        &Frame::Data(Data {
            block: 1,
            chunk: 4,
            payload: wire::Bytes(&[0u8; CHUNK as usize]),
        }),
    );
    assert_eq!(
        feed(&mut rx, &mut shell, ms(2), &bad),
        Err(DropReason::OutOfManifest)
    );
    // The 4th symbol is a late source chunk that takes its place back from
    // the parity symbol; the block decodes.
    feed(&mut rx, &mut shell, ms(2), &data(&f, 1, 0, FLAG_REPAIR)).expect("late source");
    assert!(shell.write_order.contains(&1));
    feed(&mut rx, &mut shell, ms(3), &parity_frame(&f, 4, 0, None)).expect("short block parity");
    assert!(shell.done, "every block written");
    assert!(flash_equals_image(&f, &shell));
    assert_eq!(rx.stats().blocks_decoded, 2);
    assert_eq!(rx.stats().parity_stored, 2);
}

#[test]
fn r_par_4_a_forged_parity_symbol_costs_the_block_never_a_wrong_write() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for c in 1..f.manifest.chunks_per_block() {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    let forged = [0x55u8; CHUNK as usize];
    feed(
        &mut rx,
        &mut shell,
        ms(2),
        &parity_frame(&f, 0, 0, Some(&forged)),
    )
    .expect("stored");
    assert_eq!(rx.stats().digest_failures, 1);
    assert!(shell.write_order.is_empty(), "nothing flashed");
    // The block is received again whole, and then written right.
    for c in 0..f.manifest.chunks_per_block() {
        feed(&mut rx, &mut shell, ms(3), &data(&f, 0, c, FLAG_REPAIR)).expect("again");
    }
    assert_eq!(shell.flash[0].as_deref(), Some(&f.image[..BLOCK as usize]));
}

#[test]
fn r_nack_4_an_overheard_repair_holds_the_nack_and_parity_shrinks_it() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 1 loses chunks 1, 2 and 3; the stream goes on into block 2.
    for (b, c) in all_chunks(&f).into_iter().filter(|&(b, _)| b <= 2) {
        if b == 1 && c >= 1 {
            continue;
        }
        feed(&mut rx, &mut shell, ms(10), &data(&f, b, c, 0)).expect("data");
    }
    let due = rx.poll_timeout().expect("NACK armed");
    // Before the back-off ends, another device's parity repair is heard.
    feed(&mut rx, &mut shell, ms(11), &parity_frame(&f, 1, 0, None)).expect("parity");
    rx.handle_timeout(due.max(ms(11)));
    shell.drain(&mut rx, due.max(ms(11)), &[]);
    assert!(shell.nacks.is_empty(), "held while repairs arrive");
    assert!(rx.stats().nacks_suppressed >= 1);
    // Once repairs stop, it asks for what is still needed: 3 holes - 1 parity.
    let mut now = due.max(ms(11));
    while shell.nacks.is_empty() {
        now = rx.poll_timeout().expect("retry armed").max(now);
        assert!(
            now >= ms(11) + config().nack_suppress,
            "not before the quiet period"
        );
        rx.handle_timeout(now);
        shell.drain(&mut rx, now, &[]);
    }
    let cpb = f.manifest.chunks_per_block();
    let asked: u32 = shell.nacks[0].ranges.iter().map(|r| r.len).sum();
    assert_eq!(asked, 2);
    assert_eq!(shell.nacks[0].ranges[0].start, cpb + 1);
}

#[test]
fn r_nack_4_a_retransmitted_chunk_for_another_device_does_not_hold_the_nack() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 1 loses chunks 1 and 2; chunk 3 is lost too but another device's
    // retransmit of it arrives on the repair group before our back-off ends.
    stream_blocks_0_to_2_without(&f, &mut rx, &mut shell, 1, 1..=3);
    let due = rx.poll_timeout().expect("NACK armed");
    feed(&mut rx, &mut shell, ms(11), &data(&f, 1, 3, FLAG_REPAIR)).expect("repair");
    let fire = due.max(ms(11));
    rx.handle_timeout(fire);
    shell.drain(&mut rx, fire, &[]);
    assert_eq!(
        shell.nacks.len(),
        1,
        "not held back by a repair of another chunk"
    );
    let cpb = f.manifest.chunks_per_block();
    assert_eq!(
        shell.nacks[0].ranges.as_slice(),
        &[ChunkRange {
            start: cpb + 1,
            len: 2
        }]
    );
}

#[test]
fn r_nack_5_whole_block_nacks_wait_for_the_stream_to_pass_the_block() {
    let f = fixture();
    let mut cfg = config();
    cfg.nack_whole_blocks = true;
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 0 loses chunk 0; the stream is still inside block 0.
    for c in 1..3 {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    rx.handle_timeout(ms(100));
    shell.drain(&mut rx, ms(100), &[]);
    assert!(shell.nacks.is_empty(), "no NACK while the block streams");
    feed(&mut rx, &mut shell, ms(100), &data(&f, 0, 3, 0)).expect("data");
    feed(&mut rx, &mut shell, ms(100), &data(&f, 1, 0, 0)).expect("data");
    let due = rx.poll_timeout().expect("armed once the block is passed");
    assert!(due <= ms(100) + config().nack_delay_max);
    rx.handle_timeout(due);
    shell.drain(&mut rx, due, &[]);
    assert_eq!(shell.nacks.len(), 1);
}

#[test]
fn r_nack_2_shaped_backoff_stays_in_bounds_and_reaches_the_round_trips() {
    let mut cfg = config();
    cfg.round_trip = Duration::from_millis(2);
    cfg.nack_backoff_rtts = 20;
    cfg.nack_backoff_shape = 8;
    let mut rng = Rng::new(3);
    let mut late = 0;
    for _ in 0..1000 {
        let d = backoff(&cfg, None, &mut rng);
        assert!(d >= cfg.nack_delay_min && d <= Duration::from_millis(40));
        if d > Duration::from_millis(20) {
            late += 1;
        }
    }
    assert!(late > 950, "max of 8 draws: early NACKs are rare ({late})");
}

/// R-NACK-2: once the stream has brought a window's worth of chunks, the
/// back-off stays within a quarter of the time that took, whatever
/// `nack_delay_max` says: a NACK later than that would have its repair
/// arrive after the blocks streamed meanwhile had evicted the block.
#[test]
fn r_nack_2_backoff_stays_within_a_quarter_of_the_window_span() {
    let f = fixture();
    let mut cfg = config();
    // A large fleet's back-off (board-configs/): up to 40 ms, late draws.
    cfg.nack_delay_max = Duration::from_millis(40);
    cfg.nack_backoff_shape = 8;
    // The window's 4 slots hold 16 chunks. Blocks 0-3 stream whole, one
    // chunk every `per_chunk_ms`; block 4 then loses chunk 1.
    let due_after_hole = |per_chunk_ms: u64| {
        let mut rx = Receiver::new(cfg.clone(), ms(0));
        let mut shell = Shell::new(f.manifest.block_count());
        start(&f, &mut rx, &mut shell, &[]);
        let mut at = ms(0);
        for (i, (b, c)) in (0..4)
            .flat_map(|b| (0..4).map(move |c| (b, c)))
            .chain([(4, 0), (4, 2)])
            .enumerate()
        {
            at = ms(i as u64 * per_chunk_ms);
            feed(&mut rx, &mut shell, at, &data(&f, b, c, 0)).expect("data");
        }
        let due = rx.poll_timeout().expect("a NACK is due");
        due.saturating_since(at)
    };
    // 1 ms a chunk: the 16 chunks took 16 ms, so the back-off is 2-4 ms.
    let fast = due_after_hole(1);
    assert!(
        fast >= Duration::from_millis(2) && fast <= Duration::from_millis(4),
        "{fast:?}"
    );
    // 10 ms a chunk: a 160 ms span leaves the configured 40 ms alone.
    let slow = due_after_hole(10);
    assert!(slow > Duration::from_millis(10), "{slow:?}");
}

/// Fire every timer due up to `until`, draining after each.
fn run_timers(rx: &mut Receiver, shell: &mut Shell, until: Instant) {
    while let Some(t) = rx.poll_timeout() {
        if t > until {
            break;
        }
        rx.handle_timeout(t);
        shell.drain(rx, t, &[]);
    }
}

#[test]
fn r_nack_1_a_late_joiner_leaves_what_streamed_before_it_listened_to_the_next_pass() {
    let f = fixture();
    let cpb = f.manifest.chunks_per_block();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    // The device hears the Announce; block 0 and the start of block 1 stream
    // by while it fetches the manifest (nothing of them can be stored).
    feed(&mut rx, &mut shell, ms(0), &announce(&f)).expect("announce");
    for (b, c) in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)] {
        let _ = feed(&mut rx, &mut shell, ms(0), &data(&f, b, c, 0));
    }
    for m in manifest_chunks(&f) {
        feed(&mut rx, &mut shell, ms(1), &m).expect("manifest chunk");
    }
    assert!(shell.accepted);
    // It stores the rest of block 1 (chunk 1 lost as well), and block 2,
    // which loses chunk 2.
    for (b, c) in [(1, 2), (1, 3), (2, 0), (2, 1), (2, 3), (3, 0)] {
        feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0)).expect("data");
    }
    run_timers(&mut rx, &mut shell, ms(500));
    let asked: Vec<ChunkRange> = shell
        .nacks
        .iter()
        .flat_map(|n| n.ranges.iter().copied())
        .collect();
    assert!(!asked.is_empty(), "block 2's loss is asked for");
    assert!(
        asked.iter().all(|r| r.start == 2 * cpb + 2 && r.len == 1),
        "blocks that began streaming before the device listened wait for the next pass: {asked:?}"
    );
    // The next pass: block 0 streams whole; block 1 loses chunk 1 again.
    shell.nacks.clear();
    for (b, c) in [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 0),
        (1, 2),
        (1, 3),
        (2, 0),
    ] {
        feed(&mut rx, &mut shell, ms(600), &data(&f, b, c, 0)).expect("data");
    }
    assert!(shell.write_order.contains(&0), "block 0 came with the pass");
    run_timers(&mut rx, &mut shell, ms(650));
    let asked: Vec<ChunkRange> = shell
        .nacks
        .iter()
        .flat_map(|n| n.ranges.iter().copied())
        .filter(|r| r.start < 2 * cpb)
        .collect();
    assert_eq!(
        asked,
        [ChunkRange {
            start: cpb + 1,
            len: 1
        }],
        "in the next pass, what the device missed while it listened"
    );
}

#[test]
fn r_nack_2_each_block_waits_for_its_own_backoff() {
    let f = fixture();
    let cpb = f.manifest.chunks_per_block();
    let mut cfg = config();
    // A fixed back-off, to see which NACK carries what.
    cfg.nack_delay_min = Duration::from_millis(10);
    cfg.nack_delay_max = Duration::from_millis(10);
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // Block 0 loses chunk 1 at 10 ms; block 1 loses chunk 2 at 15 ms.
    for (b, c) in [(0, 0), (0, 2), (0, 3), (1, 0)] {
        feed(&mut rx, &mut shell, ms(10), &data(&f, b, c, 0)).expect("data");
    }
    for (b, c) in [(1, 1), (1, 3), (2, 0)] {
        feed(&mut rx, &mut shell, ms(15), &data(&f, b, c, 0)).expect("data");
    }
    assert_eq!(rx.poll_timeout(), Some(ms(20)));
    rx.handle_timeout(ms(20));
    shell.drain(&mut rx, ms(20), &[]);
    assert_eq!(shell.nacks.len(), 1);
    assert_eq!(
        shell.nacks[0].ranges.as_slice(),
        &[ChunkRange { start: 1, len: 1 }],
        "block 1 does not ride along before its own back-off has run"
    );
    assert_eq!(rx.poll_timeout(), Some(ms(25)));
    rx.handle_timeout(ms(25));
    shell.drain(&mut rx, ms(25), &[]);
    assert_eq!(shell.nacks.len(), 2);
    assert_eq!(
        shell.nacks[1].ranges.as_slice(),
        &[ChunkRange {
            start: cpb + 2,
            len: 1
        }]
    );
}

#[test]
fn r_nack_5_a_parity_symbol_heard_turns_on_whole_block_nacks() {
    let f = fixture();
    let cpb = f.manifest.chunks_per_block();
    let mut rx = Receiver::new(config(), ms(0));
    assert!(!rx.config().nack_whole_blocks);
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // A parity symbol (for a block still ahead) says the server repairs with parity.
    feed(&mut rx, &mut shell, ms(1), &parity_frame(&f, 3, 0, None)).expect("parity");
    // Block 1 loses chunk 0 while it streams: not asked for yet.
    for (b, c) in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2)] {
        feed(&mut rx, &mut shell, ms(2), &data(&f, b, c, 0)).expect("data");
    }
    run_timers(&mut rx, &mut shell, ms(200));
    assert!(shell.nacks.is_empty(), "no NACK while the block streams");
    // Once the stream has passed it, the whole block's loss is asked for.
    for (b, c) in [(1, 3), (2, 0)] {
        feed(&mut rx, &mut shell, ms(200), &data(&f, b, c, 0)).expect("data");
    }
    run_timers(&mut rx, &mut shell, ms(300));
    assert_eq!(
        shell.nacks.first().map(|n| n.ranges.as_slice()),
        Some(&[ChunkRange { start: cpb, len: 1 }][..])
    );
}

#[test]
fn r_stat_6_status_goes_to_the_sender_only_once_a_block_proves_it() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let spoofed = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66)), 7854);
    // M1: a forged Announce from a spoofed source starts the fetch...
    rx.handle_datagram(ms(0), spoofed, &announce(&f))
        .expect("announce");
    shell.drain(&mut rx, ms(0), &[]);
    // ...and status intervals pass while the manifest arrives.
    for (i, m) in manifest_chunks(&f).iter().enumerate() {
        let t = ms(1500 * (i as u64 + 1));
        rx.handle_timeout(t);
        feed(&mut rx, &mut shell, t, m).expect("manifest chunk");
    }
    assert!(shell.accepted);
    let before = shell.statuses.len();
    let to_peer = |s: &Shell| {
        s.statuses
            .iter()
            .filter(|s| matches!(s.0, Dest::Peer(_)))
            .count()
    };
    assert!(before > 0, "reports went to the repair server meanwhile");
    assert_eq!(to_peer(&shell), 0, "no Status to the source of an Announce");
    // Carousel data of block 0 from the real sender completes a verified block.
    let mut t = 1500 * 10;
    for c in 0..f.manifest.chunks_in_block(0) {
        feed(&mut rx, &mut shell, ms(t), &data(&f, 0, c, 0)).expect("data");
    }
    assert_eq!(rx.proven_sender(), Some(sender_addr()));
    for _ in 0..3 {
        t += 1100;
        rx.handle_timeout(ms(t));
        shell.drain(&mut rx, ms(t), &[]);
    }
    let peers: Vec<_> = shell
        .statuses
        .iter()
        .filter_map(|s| match s.0 {
            Dest::Peer(a) => Some(a),
            _ => None,
        })
        .collect();
    std::println!(
        "R-STAT-6: {} reports to the spoofed Announce source, {} to the proven sender",
        peers.iter().filter(|a| **a == spoofed).count(),
        peers.iter().filter(|a| **a == sender_addr()).count()
    );
    assert!(!peers.is_empty(), "the proven sender gets reports");
    assert!(peers.iter().all(|a| *a == sender_addr()));
}

#[test]
fn r_stat_6_repair_data_proves_no_sender() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    for c in 0..f.manifest.chunks_in_block(0) {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, FLAG_REPAIR)).expect("repair data");
    }
    assert!(shell.write_order.contains(&0), "the block was written");
    assert_eq!(
        rx.proven_sender(),
        None,
        "a repair server is not the sender"
    );
}

#[test]
fn r_stat_6_a_block_completed_by_repair_proves_the_carousel_source() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let k = f.manifest.chunks_in_block(0);
    // The carousel brings all but the last chunk (lost); a repair completes it.
    for c in 0..k - 1 {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    assert_eq!(rx.proven_sender(), None, "no block verified yet");
    feed(&mut rx, &mut shell, ms(2), &data(&f, 0, k - 1, FLAG_REPAIR)).expect("repair");
    assert_eq!(rx.proven_sender(), Some(sender_addr()));
}

#[test]
fn r_stat_6_a_resume_that_finds_every_block_proves_the_manifest_source() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let spoofed = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66)), 7854);
    // The Announce's source is never used; the manifest chunks come from the sender.
    rx.handle_datagram(ms(0), spoofed, &announce(&f))
        .expect("announce");
    for m in manifest_chunks(&f) {
        rx.handle_datagram(ms(0), sender_addr(), &m)
            .expect("manifest chunk");
    }
    let all: Vec<u32> = (0..f.manifest.block_count()).collect();
    shell.drain(&mut rx, ms(0), &all);
    assert!(shell.done, "the whole image was on flash");
    assert_eq!(rx.proven_sender(), Some(sender_addr()));
    let to_sender = shell
        .statuses
        .iter()
        .filter(|s| s.0 == Dest::Peer(sender_addr()) && s.1 == DeviceState::Done)
        .count();
    std::println!(
        "R-STAT-6: {to_sender} done reports to the manifest's source after a full resume"
    );
    assert!(to_sender >= 1, "the sender hears the device's done");
    assert!(shell.statuses.iter().all(|s| s.0 != Dest::Peer(spoofed)));
}

/// The Status frames a receiver emits at `now`, decoded into their pacing fields.
fn pace_fields(rx: &mut Receiver, now: Instant) -> Vec<(u32, u16)> {
    let mut buf = [0u8; wire::MAX_DATAGRAM];
    let mut out = Vec::new();
    while let Some(t) = rx.poll_transmit(now, &mut buf) {
        if let Ok((_, Frame::Status(s))) = wire::decode(&buf[..t.len]) {
            out.push((s.write_kbps, s.window_free));
        }
    }
    out
}

#[test]
fn r_pace_1_status_carries_the_write_rate_at_once_and_the_free_window_slots() {
    let f = fixture();
    let window = config().window_blocks;
    let mut rx = Receiver::new(config(), ms(0));
    // No window yet: the "none" value.
    assert_eq!(
        pace_fields(&mut rx, ms(0)),
        vec![(0, wire::WINDOW_FREE_NONE)]
    );
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // One chunk of block 1 takes a slot.
    let d = data(&f, 1, 0, 0);
    rx.handle_datagram(ms(10), sender_addr(), &d).expect("data");
    // A Status is due every second; the first measured rate goes at once.
    assert!(pace_fields(&mut rx, ms(20)).is_empty(), "not due yet");
    rx.set_write_rate(ms(20), 2048);
    let got = pace_fields(&mut rx, ms(20));
    std::println!("status after the first write rate: {got:?} (window {window})");
    assert_eq!(got, vec![(2048, (window - 1) as u16)]);
    // The measurement that replaces the provisional first one goes at once
    // too (a slow first write must not pace a fast fleet for a second)...
    rx.set_write_rate(ms(30), 8192);
    assert_eq!(
        pace_fields(&mut rx, ms(30)),
        vec![(8192, (window - 1) as u16)]
    );
    // ...later ones wait for the next regular report.
    rx.set_write_rate(ms(40), 1024);
    assert!(pace_fields(&mut rx, ms(40)).is_empty());
}

#[test]
fn r_nack_1_carousel_frames_out_of_order_are_not_a_new_pass() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // One pass that loses chunk 1 of block 3; the network swaps two
    // neighbours and holds one frame back by three (within a block).
    let mut pass = all_chunks(&f);
    pass.retain(|&bc| bc != (3, 1));
    pass.swap(1, 2);
    let late = pass.remove(5);
    pass.insert(8, late);
    let mut t = 1;
    for &(b, c) in &pass {
        feed(&mut rx, &mut shell, ms(t), &data(&f, b, c, 0)).expect("data");
        t += 1;
    }
    std::println!(
        "one pass out of order: passes seen {}",
        rx.stats().passes_seen
    );
    assert_eq!(rx.stats().passes_seen, 0, "no wrap yet");
    assert!(!shell.done);
    // The next pass brings the lost chunk: one wrap.
    for (b, c) in all_chunks(&f).into_iter().take_while(|&bc| bc != (3, 2)) {
        feed(&mut rx, &mut shell, ms(t), &data(&f, b, c, 0)).expect("data");
        t += 1;
    }
    assert_eq!(rx.stats().passes_seen, 1);
    assert!(shell.done && flash_equals_image(&f, &shell));
}

mod auth;

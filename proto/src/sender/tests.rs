//! One test per carousel rule (ids from PROTOCOL.md).

use super::testutil::*;
use super::*;
use crate::pacer::{BURST_DATAGRAMS, IP_UDP_OVERHEAD};
use crate::wire::{decode, DeviceState, ImageId, Reason, Status, MAX_DATAGRAM};
use alloc::collections::BTreeMap;
use alloc::vec;
use core::net::{IpAddr, Ipv4Addr};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum K {
    A(u32),
    M(u32),
    D(u32, u32),
}

/// Drive the sender with a clock that jumps to each deadline, collecting
/// frame kinds and checking every frame decodes with the right header.
fn run(sender: &mut Sender, image: &[u8], m: &Manifest, frames: usize) -> Vec<K> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    let mut out = Vec::new();
    while out.len() < frames {
        match sender.poll_transmit(now, image, &mut buf) {
            Some(t) => {
                assert_eq!(t.dest, Dest::Group);
                let (h, f) = decode(&buf[..t.len]).expect("sender frames decode");
                assert_eq!(h.session, sender.config().session);
                assert_eq!(h.image_id, m.image_id);
                assert_eq!(h.flags, 0);
                out.push(match f {
                    Frame::Announce(a) => {
                        assert_eq!(a.board, "acme,rt1");
                        assert_eq!(a.image_len, m.image_len);
                        assert_eq!(a.chunk_size, m.chunk_size);
                        K::A(a.pass)
                    }
                    Frame::ManifestChunk(c) => K::M(c.offset / m.chunk_size),
                    Frame::Data(d) => {
                        let start = d.block as usize * m.block_size as usize
                            + d.chunk as usize * m.chunk_size as usize;
                        assert_eq!(d.payload.0, &image[start..start + d.payload.0.len()]);
                        K::D(d.block, d.chunk)
                    }
                    other => panic!("sender emitted {other:?}"),
                });
            }
            None => now = sender.poll_timeout().expect("sender always has a deadline"),
        }
    }
    out
}

fn frames_per_pass(s: &Sender) -> usize {
    let m = s.manifest_chunks as u64;
    let lead = u64::from(s.config.manifest_lead_copies.max(1));
    let body = lead * m + s.geo.chunk_count + u64::from(s.config.manifest_repeats_per_pass) * m;
    // Announces: one at the start and one before each further lead copy
    // (R-CAR-1; the copies here are shorter than announce_every), then
    // one before every announce_every-th body frame after the last of those.
    let after = body - (lead - 1) * m;
    (body + lead + (after - 1) / u64::from(s.config.announce_every)) as usize
}

#[test]
fn r_car_1_pass_is_announce_then_manifest_then_data() {
    let img = image(10_000);
    let (m, signed) = manifest(&img, 4096, 1024);
    let mut cfg = SenderConfig::new(42, 10_000_000);
    cfg.manifest_repeats_per_pass = 0;
    cfg.manifest_lead_copies = 1;
    cfg.announce_every = 1000;
    let mut s = Sender::new(cfg, &m, signed.clone(), Instant::ZERO);
    let mchunks = signed.len().div_ceil(1024) as u32;
    let frames = run(&mut s, &img, &m, (1 + mchunks + 10) as usize * 2);
    let mut expect = vec![K::A(0)];
    expect.extend((0..mchunks).map(K::M));
    for b in 0..3 {
        for c in 0..m.chunks_in_block(b) {
            expect.push(K::D(b, c));
        }
    }
    assert_eq!(
        expect.len(),
        1 + mchunks as usize + 10,
        "two full blocks + 2-chunk tail"
    );
    let mut second = expect.clone();
    second[0] = K::A(1);
    expect.extend(second);
    assert_eq!(frames, expect);
    assert_eq!(s.passes_completed(), 2);
    assert_eq!(s.position(), (2, 0));
    assert_eq!(s.stats().announce, 2);
}

#[test]
fn r_car_1_every_chunk_exactly_once_per_pass_with_short_last_chunk() {
    // 3 full blocks of 8 chunks, then a last block of 2 full chunks + 100 bytes.
    let img = image(3 * 8192 + 2 * 1024 + 100);
    let (m, signed) = manifest(&img, 8192, 1024);
    assert_eq!(m.chunks_in_block(3), 3);
    let mut s = Sender::new(SenderConfig::new(1, 50_000_000), &m, signed, Instant::ZERO);
    let per_pass = frames_per_pass(&s);
    let frames = run(&mut s, &img, &m, per_pass * 3);
    for pass in 0..3 {
        let mut seen: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        for k in &frames[pass * per_pass..(pass + 1) * per_pass] {
            if let K::D(b, c) = k {
                *seen.entry((*b, *c)).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), 27, "pass {pass}");
        assert!(
            seen.values().all(|&n| n == 1),
            "pass {pass} repeats a chunk"
        );
        assert!(seen.contains_key(&(3, 2)));
        assert_eq!(frames[pass * per_pass], K::A(pass as u32));
    }
    assert_eq!(s.passes_completed(), 3);
    assert_eq!(s.stats().data, 81);
}

#[test]
fn r_car_2_announce_interleaved_every_n_datagrams() {
    let img = image(64 * 1024);
    let (m, signed) = manifest(&img, 16 * 1024, 1024);
    let mut cfg = SenderConfig::new(1, 50_000_000);
    cfg.announce_every = 10;
    let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
    let per_pass = frames_per_pass(&s);
    let frames = run(&mut s, &img, &m, per_pass);
    let mut gap = 0;
    for k in &frames {
        match k {
            K::A(p) => {
                assert_eq!(*p, 0);
                gap = 0;
            }
            _ => {
                gap += 1;
                assert!(gap <= 10, "more than 10 datagrams without an announce");
            }
        }
    }
    let announces = frames.iter().filter(|k| matches!(k, K::A(_))).count();
    // One before each lead copy (R-CAR-1), then every 10th.
    let lead = s.config.manifest_lead_copies as usize;
    let lead_extra = (lead - 1) * s.manifest_chunks as usize;
    assert_eq!(
        announces,
        lead + (per_pass - announces - lead_extra - 1) / 10
    );
}

/// The share of devices that miss the manifest in a pass's lead copies
/// (R-CAR-1), exactly, for the frame sequence `lead` at independent loss
/// `p`: a device collects ManifestChunks only after the first Announce
/// it hears, and misses if some chunk index is lost every time after it.
fn lead_miss_rate(lead: &[K], chunks: u32, p: f64) -> f64 {
    let pow = |n: usize| (0..n).fold(1.0, |acc, _| acc * p);
    let mut heard = 0.0; // P(the first Announce heard is this one), summed
    let mut ok = 0.0;
    let mut announces_before = 0;
    for (at, k) in lead.iter().enumerate() {
        if !matches!(k, K::A(_)) {
            continue;
        }
        let first_here = pow(announces_before) * (1.0 - p);
        let all_chunks: f64 = (0..chunks)
            .map(|i| {
                let copies = lead[at..].iter().filter(|f| **f == K::M(i)).count();
                1.0 - pow(copies)
            })
            .product();
        ok += first_here * all_chunks;
        heard += first_here;
        announces_before += 1;
    }
    assert!(heard <= 1.0);
    1.0 - ok
}

#[test]
fn r_car_1_lead_copies_and_the_devices_that_miss_the_manifest() {
    // 512 blocks and 1408-byte chunks: the 12-chunk manifest of a
    // 32 MiB image in 64 KiB blocks (16,500 bytes).
    let img = image(512 * 2048);
    let (m, signed) = manifest(&img, 2048, 1408);
    let chunks = signed.len().div_ceil(1408) as u32;
    let mut rates = Vec::new();
    std::println!("lead copies | loss | devices missing the manifest | any of 50");
    for copies in 1..=5u32 {
        for p in [0.01, 0.05] {
            let mut cfg = SenderConfig::new(1, 50_000_000);
            cfg.manifest_lead_copies = copies;
            let mut s = Sender::new(cfg, &m, signed.clone(), Instant::ZERO);
            let per_pass = frames_per_pass(&s);
            let frames = run(&mut s, &img, &m, per_pass);
            let lead: Vec<K> = frames
                .iter()
                .take_while(|k| !matches!(k, K::D(..)))
                .cloned()
                .collect();
            let miss = lead_miss_rate(&lead, chunks, p);
            let any_of_50 = 1.0 - (0..50).fold(1.0, |acc, _| acc * (1.0 - miss));
            std::println!(
                "{copies:>11} | {:>3}% | 1 in {:>11.0} | {any_of_50:.3}",
                p * 100.0,
                1.0 / miss
            );
            rates.push((copies, p, miss));
        }
    }
    assert_eq!(chunks, 12);
    let rate = |c: u32, p: f64| {
        rates
            .iter()
            .find(|r| r.0 == c && r.1 == p)
            .map(|r| r.2)
            .expect("computed")
    };
    // More copies never hurt, and the default keeps a 5%-loss fleet of
    // 50 clear of a late device in all but about one pass in a thousand.
    for p in [0.01, 0.05] {
        for c in 1..5 {
            assert!(rate(c + 1, p) < rate(c, p));
        }
    }
    let default = SenderConfig::new(1, 1).manifest_lead_copies;
    assert!(
        rate(default, 0.05) < 1.0 / 50_000.0,
        "{}",
        rate(default, 0.05)
    );
    assert!(rate(3, 0.05) > 1.0 / 300.0, "{}", rate(3, 0.05));
}

#[test]
fn r_car_3_manifest_repeated_as_configured_and_spread() {
    let img = image(200 * 1024);
    let (m, signed) = manifest(&img, 64 * 1024, 1024);
    let mchunks = signed.len().div_ceil(1024);
    let mut cfg = SenderConfig::new(1, 50_000_000);
    cfg.manifest_repeats_per_pass = 3;
    cfg.manifest_lead_copies = 3;
    let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
    let per_pass = frames_per_pass(&s);
    let frames = run(&mut s, &img, &m, per_pass);
    let mut counts = vec![0u32; mchunks];
    for k in &frames {
        if let K::M(i) = k {
            counts[*i as usize] += 1;
        }
    }
    assert!(
        counts.iter().all(|&n| n == 6),
        "each manifest chunk three times up front + 3 repeats: {counts:?}"
    );
    // The three lead copies come in order before any data, each after
    // an Announce (R-CAR-1).
    let lead: Vec<K> = frames
        .iter()
        .take_while(|k| !matches!(k, K::D(..)))
        .cloned()
        .collect();
    let once: Vec<K> = core::iter::once(K::A(0))
        .chain((0..mchunks as u32).map(K::M))
        .collect();
    assert_eq!(lead, [once.clone(), once.clone(), once].concat());
    // Spread: the repeats sit among the data, not in a lump.
    let first_data = frames
        .iter()
        .position(|k| matches!(k, K::D(..)))
        .expect("data");
    let positions: Vec<usize> = frames
        .iter()
        .enumerate()
        .skip(first_data)
        .filter(|(_, k)| matches!(k, K::M(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(positions.len(), 3 * mchunks);
    let data = s.geo.chunk_count as usize;
    let expected_gap = data / (3 * mchunks);
    for w in positions.windows(2) {
        assert!(
            w[1] - w[0] <= expected_gap + 3,
            "repeats lumped: gap {}",
            w[1] - w[0]
        );
    }
}

#[test]
fn r_car_4_pacing_holds_the_rate_within_two_percent() {
    for rate in [1_000_000u64, 20_000_000, 1_000_000_000] {
        let img = image(1 << 20);
        let (m, signed) = manifest(&img, 64 * 1024, 1024);
        let mut s = Sender::new(SenderConfig::new(1, rate), &m, signed, Instant::ZERO);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut now = Instant::ZERO;
        let end = Instant::from_micros(1_000_000);
        let mut wire_bits = 0u64;
        loop {
            while let Some(t) = s.poll_transmit(now, &img, &mut buf) {
                wire_bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
            }
            let next = s.poll_timeout().expect("deadline");
            assert!(next > now, "deadline must move forward");
            if next >= end {
                break;
            }
            now = next;
        }
        let lo = rate * 98 / 100;
        let hi = rate * 102 / 100;
        assert!(
            (lo..=hi).contains(&wire_bits),
            "rate {rate}: sent {wire_bits} bits in 1 s"
        );
    }
}

#[test]
fn r_car_4_idle_gap_allows_only_a_bounded_burst() {
    let img = image(256 * 1024);
    let (m, signed) = manifest(&img, 64 * 1024, 1024);
    let mut s = Sender::new(SenderConfig::new(1, 10_000_000), &m, signed, Instant::ZERO);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Ten seconds pass with nobody polling.
    let now = Instant::from_micros(10_000_000);
    let (mut burst, mut bytes) = (0, 0u64);
    while let Some(t) = s.poll_transmit(now, &img, &mut buf) {
        burst += 1;
        bytes += t.len as u64 + IP_UDP_OVERHEAD;
        assert!(burst < 200, "unbounded burst");
    }
    // Announces and the last manifest chunk are shorter than a full
    // chunk, so a few more than BURST_DATAGRAMS fit the same credit: the
    // bound is on link time, BURST_DATAGRAMS full datagrams and the one
    // that overdraws it.
    let full = 1024 + FRAME_OVERHEAD + IP_UDP_OVERHEAD;
    assert!(burst >= BURST_DATAGRAMS as usize, "burst {burst}");
    assert!(
        bytes <= (BURST_DATAGRAMS + 1) * full,
        "burst of {bytes} bytes"
    );
}

#[test]
fn status_frames_feed_the_fleet_and_other_kinds_are_dropped() {
    let img = image(5000);
    let (m, signed) = manifest(&img, 4096, 1024);
    let mut s = Sender::new(SenderConfig::new(1, 1_000_000), &m, signed, Instant::ZERO);
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
    let mut buf = vec![0u8; 256];
    let st = Status {
        device_id: 5,
        state: DeviceState::Done,
        blocks_done: 2,
        blocks_total: 2,
        current_version: "2.1.0",
        reason: Reason::None,
        write_kbps: 0,
        window_free: 0,
    };
    let n = wire::encode(0, m.image_id, 0, &Frame::Status(st), &mut buf).expect("encode");
    s.handle_datagram(Instant::from_micros(3), from, &buf[..n])
        .expect("status accepted");
    assert_eq!(s.fleet().count(m.image_id, DeviceState::Done), 1);
    assert_eq!(s.stats().status_frames, 1);
    let mut big = vec![0u8; MAX_DATAGRAM];
    let n = wire::encode(
        0,
        m.image_id,
        0,
        &Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(&[1, 2]),
        }),
        &mut big,
    )
    .expect("encode");
    assert_eq!(
        s.handle_datagram(Instant::ZERO, from, &big[..n]),
        Err(DropReason::Unexpected)
    );
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, from, b"junk"),
        Err(DropReason::Decode(_))
    ));
    assert_eq!(s.stats().drops, 2);
}

#[test]
fn r_car_5_holds_while_the_awaited_fleet_verifies_and_goes_on_when_one_needs_data() {
    let img = image(50_000);
    let (m, signed) = manifest(&img, 4096, 1024);
    let mut cfg = SenderConfig::new(1, 8_000_000);
    cfg.hold_when_received = Some(2);
    let mut s = Sender::new(cfg, &m, signed, Instant::ZERO);
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
    let mut sbuf = vec![0u8; 256];
    let mut report = |s: &mut Sender, now: Instant, id: u64, state: DeviceState, image| {
        let st = Status {
            device_id: id,
            state,
            blocks_done: 0,
            blocks_total: 13,
            current_version: "1.0",
            reason: Reason::None,
            write_kbps: 0,
            window_free: 0,
        };
        let n = wire::encode(0, image, 0, &Frame::Status(st), &mut sbuf).expect("encode");
        s.handle_datagram(now, from, &sbuf[..n]).expect("status");
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Frames sent from `from` up to `until`, the clock jumping to each deadline.
    let mut drive = |s: &mut Sender, from: Instant, until: Instant| {
        let (mut now, mut kinds) = (from, Vec::new());
        while now < until {
            match s.poll_transmit(now, &img, &mut buf) {
                Some(t) => kinds.push(decode(&buf[..t.len]).expect("decodes").1.kind()),
                None => now = s.poll_timeout().expect("a deadline").max(now),
            }
        }
        kinds
    };
    let t = |ms: u64| Instant::from_micros(ms * 1000);
    assert!(drive(&mut s, t(0), t(20)).contains(&wire::FrameKind::Data));
    // One device has the image, the other still receives: no hold.
    report(&mut s, t(20), 1, DeviceState::Verifying, m.image_id);
    report(&mut s, t(20), 2, DeviceState::Receiving, m.image_id);
    assert!(!s.holding());
    // A device of another image that is done does not count.
    report(&mut s, t(20), 3, DeviceState::Done, ImageId([7; 8]));
    report(&mut s, t(20), 2, DeviceState::Done, m.image_id);
    assert!(s.holding(), "both awaited devices have the image");
    assert_eq!(s.stats().holds, 1);
    // Holding: only an Announce every HOLD_ANNOUNCE_EVERY, nothing else.
    let (pos, data) = (s.position(), s.stats().data);
    let held = drive(&mut s, t(20), t(520));
    assert!(
        held.iter().all(|k| *k == wire::FrameKind::Announce),
        "{held:?}"
    );
    assert!(
        (4..=6).contains(&held.len()),
        "{} announces in 500 ms",
        held.len()
    );
    assert_eq!(
        (s.position(), s.stats().data),
        (pos, data),
        "the carousel did not move"
    );
    // A device boots and asks for the manifest: the carousel goes on where it was.
    report(&mut s, t(520), 4, DeviceState::FetchingManifest, m.image_id);
    assert!(!s.holding());
    let after = drive(&mut s, t(520), t(540));
    assert!(after.contains(&wire::FrameKind::Data), "{after:?}");
    // Without the option the sender never holds.
    let mut plain = Sender::new(
        SenderConfig::new(1, 8_000_000),
        &m,
        manifest(&img, 4096, 1024).1,
        t(0),
    );
    report(&mut plain, t(1), 1, DeviceState::Done, m.image_id);
    assert!(!plain.holding());
}

#[test]
fn short_image_is_skipped_not_panicked_on() {
    let img = image(9000);
    let (m, signed) = manifest(&img, 4096, 1024);
    let mut s = Sender::new(
        SenderConfig::new(1, 1_000_000_000),
        &m,
        signed,
        Instant::ZERO,
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    for _ in 0..500 {
        let _ = s.poll_transmit(now, &img[..3000], &mut buf);
        now = s.poll_timeout().expect("deadline");
    }
    assert!(s.stats().image_short > 0);
    assert!(s.passes_completed() > 0);
}

#[test]
fn garbage_input_never_panics() {
    let img = image(5000);
    let (m, signed) = manifest(&img, 4096, 1024);
    let mut s = Sender::new(SenderConfig::new(1, 1_000_000), &m, signed, Instant::ZERO);
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
    let mut rng = crate::rng::Rng::new(3);
    for i in 0..20_000 {
        let len = rng.below(300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && len >= 8 {
            bytes[..4].copy_from_slice(&wire::MAGIC);
            bytes[4] = wire::VERSION;
            bytes[5] = 5;
            bytes[6] = 0;
            bytes[7] = 0;
            let crc_at = len - 4;
            let crc = wire::CRC32.checksum(&bytes[..crc_at]);
            bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
        }
        let _ = s.handle_datagram(Instant::ZERO, from, &bytes);
    }
}

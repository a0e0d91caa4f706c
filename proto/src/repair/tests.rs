//! One test per repair rule (ids from PROTOCOL.md), driven through the
//! public sans-IO interface.

use super::*;
use crate::pacer::IP_UDP_OVERHEAD;
use crate::sender::testutil::{image, manifest};
use crate::wire::{decode, ChunkRange, Nack, MAX_DATAGRAM};
use crate::wire::{ImageId, FLAG_PARITY};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr};

fn dev(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 7000)
}

/// R-REP-8: `bytes` arriving from `addr` (any datagram counts, even
/// one that is dropped) earn it three times as many unicast bytes.
fn earn_unicast(r: &mut RepairServer, now: Instant, addr: SocketAddr, bytes: usize) {
    let filler = vec![0u8; bytes];
    assert!(r.handle_datagram(now, addr, &filler).is_err());
}

fn nack_bytes(session: u32, image_id: ImageId, device_id: u64, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut rs = heapless::Vec::new();
    for &(start, len) in ranges {
        rs.push(ChunkRange { start, len }).expect("few ranges");
    }
    let mut buf = vec![0u8; 1024];
    let n = wire::encode(
        session,
        image_id,
        0,
        &Frame::Nack(Nack {
            device_id,
            ranges: rs,
        }),
        &mut buf,
    )
    .expect("encode");
    buf.truncate(n);
    buf
}

#[derive(Debug)]
struct Sent {
    dest: Dest,
    session: u32,
    block: u32,
    chunk: u32,
}

/// Poll until idle, jumping the clock to each deadline; checks every
/// frame decodes as a repair Data frame whose payload is the image's.
fn drain(
    r: &mut RepairServer,
    img: &[u8],
    m: &Manifest,
    mut now: Instant,
    until: Instant,
) -> (Vec<Sent>, Instant) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::new();
    loop {
        r.handle_timeout(now);
        while let Some(t) = r.poll_transmit(now, img, &mut buf) {
            let (h, f) = decode(&buf[..t.len]).expect("repair frames decode");
            assert_eq!(h.flags, FLAG_REPAIR);
            assert_eq!(h.image_id, m.image_id);
            let Frame::Data(d) = f else {
                panic!("repair sent {f:?}")
            };
            let start =
                d.block as usize * m.block_size as usize + d.chunk as usize * m.chunk_size as usize;
            assert_eq!(d.payload.0, &img[start..start + d.payload.0.len()]);
            out.push(Sent {
                dest: t.dest,
                session: h.session,
                block: d.block,
                chunk: d.chunk,
            });
        }
        match r.poll_timeout() {
            Some(t) if t <= until => now = t.max(now),
            _ => return (out, now),
        }
    }
}

fn setup(config: RepairConfig) -> (RepairServer, Vec<u8>, Manifest) {
    // 4 blocks of 8 chunks; the last block holds 3 chunks (the last short).
    let img = image(3 * 8192 + 2 * 1024 + 500);
    let (m, _signed) = manifest(&img, 8192, 1024);
    (RepairServer::new(config, &m), img, m)
}

/// Poll until idle like [`drain`], for parity mode: returns (dest,
/// parity?, block, index) and checks every payload (source chunk or the
/// block's parity symbol).
fn drain_parity(
    r: &mut RepairServer,
    img: &[u8],
    m: &Manifest,
    mut now: Instant,
    until: Instant,
) -> (Vec<(Dest, bool, u32, u32)>, Instant) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::new();
    loop {
        r.handle_timeout(now);
        while let Some(t) = r.poll_transmit(now, img, &mut buf) {
            let (h, f) = decode(&buf[..t.len]).expect("repair frames decode");
            let Frame::Data(d) = f else {
                panic!("repair sent {f:?}")
            };
            let bs = m.block_size as usize;
            let cs = m.chunk_size as usize;
            let block = &img[d.block as usize * bs..((d.block as usize + 1) * bs).min(img.len())];
            let parity = h.flags & FLAG_PARITY != 0;
            let want = if parity {
                let all = fec::encode_block(block, cs, m.chunks_per_block()).expect("encode");
                all[d.chunk as usize * cs..(d.chunk as usize + 1) * cs].to_vec()
            } else {
                block[d.chunk as usize * cs..((d.chunk as usize + 1) * cs).min(block.len())]
                    .to_vec()
            };
            assert_eq!(d.payload.0, &want[..]);
            out.push((t.dest, parity, d.block, d.chunk));
        }
        match r.poll_timeout() {
            Some(t) if t <= until => now = t.max(now),
            _ => return (out, now),
        }
    }
}

fn parity_setup() -> (RepairServer, Vec<u8>, Manifest) {
    setup(RepairConfig {
        mode: RepairMode::Parity,
        ..RepairConfig::default()
    })
}

#[test]
fn r_par_5_6_the_neediest_device_sets_the_count_with_fresh_indices() {
    let (mut r, img, m) = parity_setup();
    assert!(r.parity_active());
    let t0 = Instant::from_micros(1_000);
    // Block 1 (global 8..16): one device misses 2 chunks, another 3.
    r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(9, 2)]))
        .expect("nack");
    r.handle_datagram(
        t0,
        dev(2),
        &nack_bytes(1, m.image_id, 2, &[(8, 1), (12, 2)]),
    )
    .expect("nack");
    let (sent, now) = drain_parity(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
    assert_eq!(
        sent,
        [0, 1, 2].map(|i| (Dest::Group, true, 1, i)),
        "as many symbols as the neediest device asked for"
    );
    // NACKs built before those symbols arrived, within the holdoff: one
    // asking no more than was sent adds nothing, one asking more adds the
    // difference.
    let t1 = now + Duration::from_millis(2);
    r.handle_datagram(t1, dev(3), &nack_bytes(1, m.image_id, 3, &[(8, 3)]))
        .expect("nack");
    assert_eq!(r.stats().parity_suppressed, 1);
    r.handle_datagram(t1, dev(4), &nack_bytes(1, m.image_id, 4, &[(8, 4)]))
        .expect("nack");
    let (sent, now) = drain_parity(&mut r, &img, &m, t1, t1 + Duration::from_millis(11));
    assert_eq!(sent, [(Dest::Group, true, 1, 3)]);
    // After the holdoff a NACK counts only what its device still misses
    // (it subtracted the symbols it holds): that many fresh ones.
    let t2 = now + RepairConfig::default().resend_holdoff;
    r.handle_datagram(t2, dev(1), &nack_bytes(1, m.image_id, 1, &[(9, 2)]))
        .expect("nack");
    let (sent, _) = drain_parity(&mut r, &img, &m, t2, t2 + Duration::from_millis(11));
    assert_eq!(sent, [4, 5].map(|i| (Dest::Group, true, 1, i)));
    assert_eq!(r.stats().parity_sent, 6);
    assert_eq!(
        r.stats().chunks_sent_group + r.stats().chunks_sent_unicast,
        0
    );
}

#[test]
fn requests_for_blocks_past_a_partial_image_wait_until_it_covers_them() {
    // Retransmit: a lone device misses chunks of blocks 0 and 2 while
    // only block 0 has been read.
    let (mut r, img, m) = setup(RepairConfig::default());
    let t0 = Instant::from_micros(1_000);
    r.handle_datagram(
        t0,
        dev(1),
        &nack_bytes(1, m.image_id, 1, &[(2, 1), (17, 2)]),
    )
    .expect("nack");
    let until = |t: Instant| t + Duration::from_millis(20);
    let (sent, now) = drain(&mut r, &img[..8192], &m, t0, until(t0));
    let got: Vec<_> = sent.iter().map(|s| (s.block, s.chunk)).collect();
    assert_eq!(got, [(0, 2)], "only the block that is read");
    assert_eq!(r.backlog(), 2, "block 2's chunks wait, not dropped");
    let (sent, _) = drain(&mut r, &img, &m, now, until(now));
    let got: Vec<_> = sent.iter().map(|s| (s.block, s.chunk)).collect();
    assert_eq!(got, [(2, 1), (2, 2)]);
    assert_eq!(r.backlog(), 0);

    // Parity: a crowd for blocks 0 and 2, then the short last block 3.
    let (mut r, img, m) = parity_setup();
    for d in 1..=2 {
        r.handle_datagram(
            t0,
            dev(d),
            &nack_bytes(1, m.image_id, u64::from(d), &[(1, 1), (16, 2), (24, 1)]),
        )
        .expect("nack");
    }
    let (sent, now) = drain_parity(&mut r, &img[..3 * 8192], &m, t0, until(t0));
    assert_eq!(
        sent,
        [
            (Dest::Group, true, 0, 0),
            (Dest::Group, true, 2, 0),
            (Dest::Group, true, 2, 1)
        ]
    );
    assert_eq!(r.backlog(), 1, "the last block waits for the whole image");
    let (sent, _) = drain_parity(&mut r, &img, &m, now, until(now));
    assert_eq!(sent, [(Dest::Group, true, 3, 0)]);
}

#[test]
fn r_par_5_a_crowd_that_forms_within_the_batch_gets_parity_only() {
    let (mut r, img, m) = parity_setup();
    let t0 = Instant::from_micros(1_000);
    // The first NACK comes before anyone knows there is a crowd ...
    r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 3)]))
        .expect("nack");
    // ... a second device's NACK inside the aggregation window makes one.
    let t1 = t0 + RepairConfig::default().aggregate / 2;
    r.handle_datagram(t1, dev(2), &nack_bytes(1, m.image_id, 2, &[(1, 2)]))
        .expect("nack");
    let (sent, _) = drain_parity(&mut r, &img, &m, t1, t1 + Duration::from_millis(20));
    assert_eq!(sent, [0, 1, 2].map(|i| (Dest::Group, true, 0, i)));
}

#[test]
fn r_par_7_a_block_whose_parity_is_spent_is_served_with_the_source_chunks_named() {
    // Blocks of k = 8 chunks have 8 parity symbols. A device that lost a
    // whole block (an end-game fetch) needs all of them; once each went
    // out, sending one again would help only a device that lost that very
    // symbol, so what is asked for beyond them is sent as the source
    // chunks the NACK names, which the asker lacks for sure.
    let (mut r, img, m) = parity_setup();
    let holdoff = RepairConfig::default().resend_holdoff;
    let crowd = |r: &mut RepairServer, t: Instant, asks: [&[(u32, u32)]; 2]| {
        for (d, ranges) in (1u8..).zip(asks) {
            r.handle_datagram(t, dev(d), &nack_bytes(1, m.image_id, u64::from(d), ranges))
                .expect("nack");
        }
    };
    let window = |t: Instant| t + Duration::from_millis(20);
    let t0 = Instant::from_micros(1_000);
    crowd(&mut r, t0, [&[(8, 5)], &[(8, 5)]]);
    let (sent, now) = drain_parity(&mut r, &img, &m, t0, window(t0));
    assert_eq!(sent, [0, 1, 2, 3, 4].map(|i| (Dest::Group, true, 1, i)));
    // Five asked for again, three symbols unsent: those three, and the
    // last two chunks named (global 11 and 12) as source.
    let t1 = now + holdoff;
    crowd(&mut r, t1, [&[(8, 5)], &[(10, 1)]]);
    let (sent, now) = drain_parity(&mut r, &img, &m, t1, window(t1));
    assert_eq!(
        sent,
        [
            (Dest::Group, false, 1, 3),
            (Dest::Group, false, 1, 4),
            (Dest::Group, true, 1, 5),
            (Dest::Group, true, 1, 6),
            (Dest::Group, true, 1, 7),
        ]
    );
    // Spent: source chunks only, each once for both devices.
    let t2 = now + holdoff;
    crowd(&mut r, t2, [&[(9, 2)], &[(9, 1)]]);
    let (sent, _) = drain_parity(&mut r, &img, &m, t2, window(t2));
    assert_eq!(
        sent,
        [(Dest::Group, false, 1, 1), (Dest::Group, false, 1, 2)]
    );
    assert_eq!(r.stats().parity_sent, 8, "no parity index sent twice");
}

#[test]
fn r_par_5_a_lone_straggler_still_gets_source_chunks_unicast() {
    let (mut r, img, m) = parity_setup();
    let t0 = Instant::from_micros(1_000);
    earn_unicast(&mut r, t0, dev(7), 1_000);
    r.handle_datagram(t0, dev(7), &nack_bytes(1, m.image_id, 7, &[(10, 2)]))
        .expect("nack");
    let (sent, _) = drain_parity(&mut r, &img, &m, t0, t0 + Duration::from_millis(20));
    assert_eq!(
        sent,
        [
            (Dest::Peer(dev(7)), false, 1, 2),
            (Dest::Peer(dev(7)), false, 1, 3)
        ]
    );
    assert_eq!(r.stats().parity_sent, 0);
}

#[test]
fn r_rep_4_5_two_devices_same_chunk_one_group_send() {
    let (mut r, img, m) = setup(RepairConfig::default());
    let t0 = Instant::from_micros(1_000);
    r.handle_datagram(t0, dev(1), &nack_bytes(11, m.image_id, 1, &[(9, 1)]))
        .expect("nack 1");
    // Inside the window: nothing goes yet.
    let mut buf = vec![0u8; MAX_DATAGRAM];
    assert!(r.poll_transmit(t0, &img, &mut buf).is_none());
    let aggregate = RepairConfig::default().aggregate;
    assert_eq!(r.poll_timeout(), Some(t0 + aggregate));
    let t1 = t0 + aggregate / 2;
    r.handle_datagram(t1, dev(2), &nack_bytes(22, m.image_id, 2, &[(9, 1)]))
        .expect("nack 2");
    let (sent, _) = drain(&mut r, &img, &m, t1, t0 + Duration::from_secs(1));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dest, Dest::Group);
    assert_eq!((sent[0].block, sent[0].chunk), (1, 1));
    assert_eq!(sent[0].session, 11, "first requester's session");
    assert_eq!(r.stats().chunks_sent_group, 1);
    assert_eq!(r.stats().merged, 1);
    assert_eq!(r.stats().nacks, 2);
}

#[test]
fn r_rep_5_lone_requester_gets_unicast_in_chunk_order() {
    let (mut r, img, m) = setup(RepairConfig::default());
    let t0 = Instant::from_micros(500);
    earn_unicast(&mut r, t0, dev(3), 1_500);
    // Last block: global 24..27, clipped (the range runs past the image).
    r.handle_datagram(
        t0,
        dev(3),
        &nack_bytes(5, m.image_id, 3, &[(2, 2), (25, 100)]),
    )
    .expect("nack");
    let (sent, _) = drain(&mut r, &img, &m, t0, t0 + Duration::from_secs(1));
    let got: Vec<(u32, u32)> = sent.iter().map(|s| (s.block, s.chunk)).collect();
    assert_eq!(got, [(0, 2), (0, 3), (3, 1), (3, 2)]);
    assert!(sent
        .iter()
        .all(|s| s.dest == Dest::Peer(dev(3)) && s.session == 5));
    assert_eq!(r.stats().chunks_requested, 4);
    assert_eq!(r.stats().chunks_sent_unicast, 4);
    assert_eq!(r.stats().capped, 0);
}

#[test]
fn r_rep_1_nack_outside_the_image_is_refused() {
    let (mut r, _img, m) = setup(RepairConfig::default());
    let res = r.handle_datagram(
        Instant::ZERO,
        dev(1),
        &nack_bytes(1, m.image_id, 1, &[(27, 5), (1000, 1)]),
    );
    assert_eq!(res, Err(DropReason::OutOfManifest));
    assert_eq!(r.backlog(), 0);
    assert_eq!(r.stats().drops, 1);
}

#[test]
fn r_rep_2_per_nack_cap() {
    let config = RepairConfig {
        max_chunks_per_nack: 5,
        ..RepairConfig::default()
    };
    let (mut r, img, m) = setup(config);
    r.handle_datagram(
        Instant::ZERO,
        dev(1),
        &nack_bytes(1, m.image_id, 1, &[(0, 3), (10, 10)]),
    )
    .expect("nack");
    assert_eq!(r.stats().chunks_requested, 13);
    assert_eq!(r.stats().capped, 8);
    let (sent, _) = drain(
        &mut r,
        &img,
        &m,
        Instant::ZERO,
        Instant::from_micros(1_000_000),
    );
    let got: Vec<(u32, u32)> = sent.iter().map(|s| (s.block, s.chunk)).collect();
    assert_eq!(got, [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)]);
}

#[test]
fn r_rep_3_holdoff_suppresses_group_resends_but_not_after_unicast() {
    // Per-chunk decisions only: no crowd detection.
    let (mut r, img, m) = setup(RepairConfig {
        straggler_window: Duration::ZERO,
        ..RepairConfig::default()
    });
    let t0 = Instant::from_micros(1_000);
    earn_unicast(&mut r, t0, dev(1), 400);
    earn_unicast(&mut r, t0, dev(3), 400);
    r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 1)]))
        .expect("nack");
    r.handle_datagram(t0, dev(2), &nack_bytes(1, m.image_id, 2, &[(0, 1)]))
        .expect("nack");
    r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(5, 1)]))
        .expect("nack");
    let (sent, now) = drain(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].dest, Dest::Group);
    assert_eq!(sent[1].dest, Dest::Peer(dev(1)));
    // 5 ms later both ask again: the group chunk is held off, the unicast one is not.
    let t1 = now + Duration::from_millis(5);
    r.handle_datagram(t1, dev(3), &nack_bytes(1, m.image_id, 3, &[(0, 1), (5, 1)]))
        .expect("nack");
    assert_eq!(r.stats().suppressed, 1);
    let (sent, now) = drain(&mut r, &img, &m, t1, t1 + Duration::from_millis(50));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].block, sent[0].chunk, sent[0].dest),
        (0, 5, Dest::Peer(dev(3)))
    );
    // After the holdoff the group chunk is served again.
    let t2 = now + Duration::from_millis(30);
    r.handle_datagram(t2, dev(3), &nack_bytes(1, m.image_id, 3, &[(0, 1)]))
        .expect("nack");
    let (sent, _) = drain(&mut r, &img, &m, t2, t2 + Duration::from_millis(50));
    assert_eq!(sent.len(), 1);
    assert_eq!(r.stats().suppressed, 1);
}

#[test]
fn r_rep_5_while_a_crowd_nacks_even_single_requests_go_to_the_group() {
    let (mut r, img, m) = setup(RepairConfig::default());
    let t0 = Instant::from_micros(1_000);
    r.handle_datagram(t0, dev(1), &nack_bytes(1, m.image_id, 1, &[(0, 1)]))
        .expect("nack");
    r.handle_datagram(t0, dev(2), &nack_bytes(1, m.image_id, 2, &[(3, 1)]))
        .expect("nack");
    let (sent, now) = drain(&mut r, &img, &m, t0, t0 + Duration::from_millis(11));
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.dest == Dest::Group), "{sent:?}");
    // Once the crowd has been quiet for the straggler window, a lone device gets unicast.
    let later = now + RepairConfig::default().straggler_window + Duration::from_millis(1);
    earn_unicast(&mut r, later, dev(2), 400);
    r.handle_datagram(later, dev(2), &nack_bytes(1, m.image_id, 2, &[(7, 1)]))
        .expect("nack");
    let (sent, _) = drain(&mut r, &img, &m, later, later + Duration::from_millis(11));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dest, Dest::Peer(dev(2)));
}

/// A forged NACK names its victim as source. (address, device id) of
/// NACK `i` when the forger rotates both, so that no per-source account
/// holds it back.
fn forged(i: u32) -> (SocketAddr, u64) {
    let [_, _, a, b] = i.to_be_bytes();
    let ip = Ipv4Addr::new(10, 66, a, b);
    (
        SocketAddr::new(IpAddr::V4(ip), 7000),
        0xF0_0000 + u64::from(i),
    )
}

#[test]
fn r_rep_8_a_forged_nack_gets_no_unicast_beyond_three_times_its_bytes() {
    // 1 MiB in 1 KiB chunks: 1024 chunks. The victim never sent anything;
    // a forger sends NACKs for 256 chunks each with the victim's
    // address, spaced beyond the straggler window so each is a "lone
    // straggler" (R-REP-5), the case that went unicast unchecked.
    let img = image(1 << 20);
    let (m, _signed) = manifest(&img, 8192, 1024);
    let mut r = RepairServer::new(RepairConfig::default(), &m);
    let victim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66)), 5555);
    let mut now = Instant::from_micros(1_000);
    let (mut bytes_in, mut to_victim, mut to_group) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for i in 0..60u32 {
        let nack = nack_bytes(1, m.image_id, 0xBAD, &[((i * 256) % 1024, 256)]);
        bytes_in += nack.len() as u64;
        let _ = r.handle_datagram(now, victim, &nack);
        let until = now + Duration::from_millis(600);
        loop {
            r.handle_timeout(now);
            while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
                match t.dest {
                    Dest::Peer(a) if a == victim => to_victim += t.len as u64,
                    Dest::Group => to_group += t.len as u64,
                    d => panic!("repair to {d:?}"),
                }
            }
            match r.poll_timeout() {
                Some(t) if t <= until => now = t.max(now),
                _ => break,
            }
        }
        now = until;
    }
    std::println!(
        "R-REP-8 amplification: {to_victim} bytes to the forged source for {bytes_in} bytes in \
         ({:.2}x); {to_group} bytes went to the repair group instead",
        to_victim as f64 / bytes_in as f64
    );
    assert!(
        to_victim <= budget::AMPLIFICATION_FACTOR * bytes_in,
        "{to_victim} bytes to the victim for {bytes_in} in"
    );
    assert!(r.stats().unicast_refused > 0);
    assert!(
        to_group > 0,
        "a genuine straggler is still served, by the group"
    );
}

/// Forged NACKs for 256 chunks each, from ever new addresses and device
/// ids (so no per-source budget holds them, R-REP-10), `per_sec` a
/// second (none with 0) for session 7.
pub(crate) struct ForgedNacks {
    next: Instant,
    gap: Duration,
    i: u32,
}

impl ForgedNacks {
    /// Starting at time zero, until `end`.
    pub(crate) fn new(per_sec: u64, end: Instant) -> Self {
        ForgedNacks {
            next: if per_sec == 0 { end } else { Instant::ZERO },
            gap: Duration::from_micros(1_000_000 / per_sec.max(1)),
            i: 0,
        }
    }

    /// Hand `r` the NACK due at `now`, if one is.
    pub(crate) fn feed(&mut self, now: Instant, r: &mut RepairServer, image_id: ImageId) {
        if now < self.next {
            return;
        }
        let (from, id) = forged(self.i);
        let start = (self.i * 256) % 4096;
        let _ = r.handle_datagram(now, from, &nack_bytes(7, image_id, id, &[(start, 256)]));
        self.i += 1;
        self.next = now + self.gap;
    }

    /// When the next NACK is due.
    pub(crate) fn next_at(&self) -> Instant {
        self.next
    }
}

/// Runs a carousel and an inline repair server sharing one pacer
/// (R-REP-7) for `secs` virtual seconds at `rate` while `nacks_per_sec`
/// forged NACKs for 256 chunks each arrive; returns (carousel bytes,
/// repair bytes) including IPv4/UDP headers.
fn shared_link(rate: u64, secs: u64, nacks_per_sec: u64) -> (u64, u64) {
    use crate::sender::{Sender, SenderConfig};
    let img = image(4 << 20);
    let (m, signed) = manifest(&img, 64 * 1024, 1024);
    let mut sender = Sender::new(SenderConfig::new(7, rate), &m, signed, Instant::ZERO);
    let mut r = RepairServer::new(
        RepairConfig {
            rate_bps: rate,
            mode: RepairMode::Parity,
            ..RepairConfig::default()
        },
        &m,
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut carousel, mut repairs) = (0u64, 0u64);
    let end = Instant::from_micros(secs * 1_000_000);
    let mut nacks = ForgedNacks::new(nacks_per_sec, end);
    let mut now = Instant::ZERO;
    while now < end {
        nacks.feed(now, &mut r, m.image_id);
        // As `firmcast send --repair-listen` drives them: repairs due
        // first, then the carousel, each charged to the other.
        r.set_carousel_sending(!sender.holding());
        r.handle_timeout(now);
        while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
            sender.charge_shared(now, t.len);
            repairs += t.len as u64 + IP_UDP_OVERHEAD;
        }
        while let Some(t) = sender.poll_transmit(now, &img, &mut buf) {
            r.charge_shared(now, t.len);
            carousel += t.len as u64 + IP_UDP_OVERHEAD;
        }
        now = [
            r.poll_timeout(),
            sender.poll_timeout(),
            Some(nacks.next_at()),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("deadline")
        .max(now + Duration::from_micros(1));
    }
    (carousel, repairs)
}

#[test]
fn r_rep_9_a_nack_flood_leaves_the_carousel_its_share_of_a_shared_link() {
    // 50 forged NACKs/s from ever new addresses and device ids (so no
    // per-source budget holds them, R-REP-10) ask for ten times the link.
    let rate = 10_000_000;
    let (alone, _) = shared_link(rate, 2, 0);
    let (carousel, repairs) = shared_link(rate, 2, 50);
    let share = carousel as f64 / alone as f64;
    std::println!(
        "R-REP-9 carousel under a flood of 50 forged NACKs/s: {carousel} bytes in 2 s \
         against {alone} alone ({:.0}%), repairs {repairs} bytes",
        share * 100.0
    );
    let min = 100 - u64::from(RepairConfig::default().shared_repair_percent);
    assert!(
        carousel * 100 >= alone * (min - 3),
        "the carousel kept {:.0}% of its rate, under {min}%",
        share * 100.0
    );
    assert!(
        carousel + repairs <= alone + alone / 50,
        "together within the one rate"
    );
}

#[test]
fn r_rep_10_one_source_takes_at_most_its_share() {
    // One host at 50 NACKs/s for 256 chunks each (12,800 chunks/s),
    // rotating device ids; the link (100 Mbit/s, about 11,500 chunks/s)
    // is no limit. Its address gets per_source_percent of the chunks the
    // rate carries, plus one second saved up.
    let img = image(4 << 20);
    let (m, _signed) = manifest(&img, 64 * 1024, 1024);
    let config = RepairConfig::default();
    let mut r = RepairServer::new(config.clone(), &m);
    let host = dev(9);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let secs = 2u64;
    let end = Instant::from_micros(secs * 1_000_000);
    let mut now = Instant::ZERO;
    let mut next_nack = Instant::ZERO;
    let mut i = 0u32;
    let mut asked = 0u64;
    while now < end {
        if now >= next_nack {
            let start = (i * 256) % 4096;
            let _ = r.handle_datagram(
                now,
                host,
                &nack_bytes(1, m.image_id, 0xD000 + u64::from(i), &[(start, 256)]),
            );
            asked += 256;
            i += 1;
            next_nack = now + Duration::from_millis(20);
        }
        r.handle_timeout(now);
        while r.poll_transmit(now, &img, &mut buf).is_some() {}
        now = earliest(r.poll_timeout(), Some(next_nack))
            .expect("deadline")
            .max(now + Duration::from_micros(1));
    }
    let sent = r.stats().chunks_sent_group + r.stats().chunks_sent_unicast;
    let chunk_bits = (1024 + HEADER_LEN + TRAILER_LEN + 16) as u64 * 8 + IP_UDP_OVERHEAD * 8;
    let per_sec = config.rate_bps * u64::from(config.per_source_percent) / 100 / chunk_bits;
    let bound = per_sec * (secs + 1);
    std::println!(
        "R-REP-10 one host asked for {asked} chunks in {secs} s, {sent} were sent \
         (budget {per_sec}/s plus one second saved up: {bound})"
    );
    assert!(
        sent <= bound,
        "{sent} chunks sent to one host, over {bound}"
    );
    assert!(
        sent >= per_sec * secs,
        "the host still gets its share: {sent}"
    );
    assert!(r.stats().over_budget > 0);
}

#[test]
fn r_rep_6_repair_traffic_is_rate_capped() {
    // A big image and a flood of NACKs: 1 Mbit/s must hold over a second.
    let img = image(4 << 20);
    let (m, _signed) = manifest(&img, 64 * 1024, 1024);
    let rate = 1_000_000;
    let mut r = RepairServer::new(
        RepairConfig {
            rate_bps: rate,
            ..RepairConfig::default()
        },
        &m,
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    let end = Instant::from_micros(1_000_000);
    let mut bits = 0u64;
    let mut next_nack = Instant::ZERO;
    let mut device = 0u64;
    while now < end {
        if now >= next_nack {
            device += 1;
            let start = (device * 256) as u32 % 4000;
            let _ = r.handle_datagram(
                now,
                dev(1),
                &nack_bytes(1, m.image_id, device, &[(start, 256)]),
            );
            next_nack = now + Duration::from_millis(5);
        }
        r.handle_timeout(now);
        while let Some(t) = r.poll_transmit(now, &img, &mut buf) {
            bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
        }
        now = earliest(r.poll_timeout(), Some(next_nack))
            .expect("deadline")
            .max(now + Duration::from_micros(1));
    }
    assert!(r.backlog() > 0, "the flood must outrun the cap");
    // One idle-gap burst of credit is allowed on top of the rate.
    let burst = 16 * (1024 + 64 + IP_UDP_OVERHEAD) * 8;
    assert!(
        bits <= rate + burst && bits >= rate * 95 / 100,
        "sent {bits} bits in 1 s at {rate} bit/s"
    );
}

#[test]
fn wrong_image_or_wrong_kind_is_dropped() {
    let (mut r, _img, m) = setup(RepairConfig::default());
    let res = r.handle_datagram(
        Instant::ZERO,
        dev(1),
        &nack_bytes(1, ImageId([0xee; 8]), 1, &[(0, 1)]),
    );
    assert_eq!(res, Err(DropReason::OtherImage));
    let mut buf = vec![0u8; 256];
    let n = wire::encode(
        1,
        m.image_id,
        0,
        &Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: wire::Bytes(&[1]),
        }),
        &mut buf,
    )
    .expect("encode");
    assert_eq!(
        r.handle_datagram(Instant::ZERO, dev(1), &buf[..n]),
        Err(DropReason::Unexpected)
    );
    assert_eq!(r.backlog(), 0);
    assert_eq!(r.stats().drops, 2);
    assert_eq!(r.stats().nacks, 0);
}

#[test]
fn pending_table_is_bounded() {
    let config = RepairConfig {
        max_pending: 10,
        ..RepairConfig::default()
    };
    let (mut r, _img, m) = setup(config);
    r.handle_datagram(
        Instant::ZERO,
        dev(1),
        &nack_bytes(1, m.image_id, 1, &[(0, 27)]),
    )
    .expect("nack");
    assert_eq!(r.backlog(), 10);
    assert_eq!(r.stats().overload, 17);
}

#[test]
fn status_frames_feed_the_fleet() {
    let (mut r, _img, m) = setup(RepairConfig::default());
    let st = wire::Status {
        device_id: 4,
        state: wire::DeviceState::Receiving,
        blocks_done: 1,
        blocks_total: 4,
        current_version: "1.0",
        reason: wire::Reason::None,
        write_kbps: 0,
        window_free: 0,
    };
    let mut buf = vec![0u8; 256];
    let n = wire::encode(1, m.image_id, 0, &Frame::Status(st), &mut buf).expect("encode");
    r.handle_datagram(Instant::ZERO, dev(4), &buf[..n])
        .expect("status");
    assert_eq!(r.fleet().count(m.image_id, wire::DeviceState::Receiving), 1);
}

#[test]
fn garbage_never_panics() {
    let (mut r, img, m) = setup(RepairConfig::default());
    let mut rng = crate::rng::Rng::new(11);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = Instant::ZERO;
    for i in 0..20_000u32 {
        let len = rng.below(200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && len >= 24 {
            // Valid header and CRC around a random NACK body, to reach the body decoder.
            bytes[..4].copy_from_slice(&wire::MAGIC);
            bytes[4] = wire::VERSION;
            bytes[5] = 4;
            bytes[6] = 0;
            bytes[7] = 0;
            bytes[12..20].copy_from_slice(&m.image_id.0);
            let crc_at = len - 4;
            let crc = wire::CRC32.checksum(&bytes[..crc_at]);
            bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
        }
        let _ = r.handle_datagram(now, dev((i % 200) as u8), &bytes);
        now = now + Duration::from_micros(rng.below(3000));
        r.handle_timeout(now);
        while r.poll_transmit(now, &img, &mut buf).is_some() {}
    }
}

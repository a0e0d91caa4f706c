//! Deterministic fleet simulation (test tier 2): one `Sender`, one
//! `RepairServer` and N `Receiver`s over a seeded lossy network in virtual
//! time. Every receiver's simulated flash must end byte-identical to the
//! image; the run prints repair bytes / image bytes and NACKs per receiver.
//!
//! The network: every link has a fixed latency; each receiver loses each
//! datagram addressed to it independently (Bernoulli) or in bursts
//! (Gilbert–Elliott: a two-state chain, all datagrams lost in the bad state).
//! NACKs and Status reports cross the same kind of link toward the servers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proto::manifest::{sign, Manifest, ManifestSpec};
use proto::receiver::{Event, Receiver, ReceiverConfig};
use proto::repair::{RepairConfig, RepairMode, RepairServer};
use proto::rng::Rng;
use proto::sender::{Sender, SenderConfig};
use proto::wire::MAX_DATAGRAM;
use proto::{Dest, Instant};

/// How each receiver loses datagrams.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// Independent loss with this probability in parts per million.
    Bernoulli { ppm: u64 },
    /// Gilbert–Elliott: enter the bad state with `enter_ppm`, leave it with
    /// `leave_ppm` per datagram; everything is lost while bad.
    Burst { enter_ppm: u64, leave_ppm: u64 },
}

impl Loss {
    fn describe(&self) -> String {
        match *self {
            Loss::Bernoulli { ppm } => format!("bernoulli {:.1}%", ppm as f64 / 10_000.0),
            Loss::Burst {
                enter_ppm,
                leave_ppm,
            } => {
                let bad = enter_ppm as f64 / (enter_ppm + leave_ppm) as f64;
                format!(
                    "burst {:.1}% (mean run {:.0})",
                    bad * 100.0,
                    1e6 / leave_ppm as f64
                )
            }
        }
    }
}

/// One device's link state and loss generator.
struct Link {
    rng: Rng,
    bad: bool,
}

impl Link {
    fn lose(&mut self, loss: Loss) -> bool {
        match loss {
            Loss::Bernoulli { ppm } => self.rng.below(1_000_000) < ppm,
            Loss::Burst {
                enter_ppm,
                leave_ppm,
            } => {
                let flip = if self.bad { leave_ppm } else { enter_ppm };
                if self.rng.below(1_000_000) < flip {
                    self.bad = !self.bad;
                }
                self.bad
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    /// Every receiver, from the sender.
    DataGroup,
    /// Every receiver, from the repair server.
    RepairGroup,
    /// One receiver, from the repair server.
    Device(usize),
    /// The repair server, from a receiver.
    RepairServer(usize),
    /// The sender, from a receiver.
    Sender(usize),
}

struct Scenario {
    receivers: usize,
    image_len: usize,
    loss: Loss,
    /// Loss on the NACK/Status path too.
    uplink_loss: Loss,
    rate_bps: u64,
    seed: u64,
    max_passes: u32,
    /// Repair mode, block size and receive window.
    mode: RepairMode,
    block_size: u32,
    window_blocks: u32,
    /// NACK back-off shape and reach (R-NACK-2, R-NACK-4).
    backoff_shape: u32,
    backoff_rtts: u32,
}

impl Scenario {
    /// The retransmit-mode defaults the 200-receiver tests were written for.
    fn retransmit(receivers: usize, image_len: usize, loss: Loss, seed: u64) -> Scenario {
        Scenario {
            receivers,
            image_len,
            loss,
            uplink_loss: loss,
            rate_bps: 50_000_000,
            seed,
            max_passes: 20,
            mode: RepairMode::Retransmit,
            block_size: 65536,
            window_blocks: 8,
            backoff_shape: 1,
            backoff_rtts: 4,
        }
    }
}

#[derive(Debug)]
struct Outcome {
    image_bytes: u64,
    sender_bytes: u64,
    repair_bytes: u64,
    nacks: u64,
    passes: u32,
    virtual_ms: u64,
    evictions: u64,
    done: usize,
    identical: usize,
    /// Repair server: parity symbols, source chunks to the group, unicast.
    parity_sent: u64,
    source_group: u64,
    source_unicast: u64,
}

/// A datagram in flight: (arrival time, sequence, destination, bytes).
type Delivery = (Instant, u64, To, Vec<u8>);

const LATENCY: Duration = Duration::from_millis(1);

fn addr(i: usize) -> SocketAddr {
    // In-memory identities only: nothing is ever sent to these addresses.
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8)),
        7000,
    )
}

fn run(s: &Scenario) -> Outcome {
    let mut gen = Rng::new(s.seed);
    let image: Vec<u8> = (0..s.image_len).map(|_| gen.next_u64() as u8).collect();
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let spec = ManifestSpec {
        board: "sim,board",
        version: "2.0.0",
        block_size: s.block_size,
        chunk_size: 1024,
        created_unix: 0,
    };
    let signed = sign(&spec, &image, &kp.sk).expect("sign");
    let manifest = Manifest::verify(&signed, &kp.pk).expect("verify");

    let start = Instant::ZERO;
    let sender_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 40000);
    let repair_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 7855);
    let mut sender = Sender::new(
        SenderConfig::new(0xC0FFEE, s.rate_bps),
        &manifest,
        signed.clone(),
        start,
    );
    let mut repair = RepairServer::new(
        RepairConfig {
            mode: s.mode,
            ..RepairConfig::default()
        },
        &manifest,
    );
    let mut rxs: Vec<Receiver> = (0..s.receivers)
        .map(|i| {
            let mut c = ReceiverConfig::new(1000 + i as u64, "sim,board", "1.0.0", *kp.pk);
            c.rng_seed = s.seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
            c.window_blocks = s.window_blocks;
            c.max_block_size = s.block_size;
            c.round_trip = LATENCY * 2;
            c.nack_backoff_rtts = s.backoff_rtts;
            c.nack_backoff_shape = s.backoff_shape;
            c.nack_whole_blocks = s.mode == RepairMode::Parity;
            Receiver::new(c, start)
        })
        .collect();
    let mut flash: Vec<Vec<u8>> = vec![vec![0xFF; s.image_len]; s.receivers];
    let mut down: Vec<Link> = (0..s.receivers)
        .map(|i| Link {
            rng: Rng::new(s.seed.wrapping_add(i as u64 * 31 + 1)),
            bad: false,
        })
        .collect();
    let mut up: Vec<Link> = (0..s.receivers)
        .map(|i| Link {
            rng: Rng::new(s.seed.wrapping_add(i as u64 * 77 + 5)),
            bad: false,
        })
        .collect();
    let mut done = vec![false; s.receivers];

    let mut heap: BinaryHeap<Reverse<Delivery>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut now = start;
    let mut sender_bytes = 0u64;
    let limit = Instant::from_micros(600_000_000);

    loop {
        // Deliver everything due.
        while let Some(Reverse((at, _, _, _))) = heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, to, bytes))) = heap.pop() else {
                break;
            };
            match to {
                To::DataGroup | To::RepairGroup => {
                    let from = if to == To::DataGroup {
                        sender_addr
                    } else {
                        repair_addr
                    };
                    for i in 0..s.receivers {
                        if !down[i].lose(s.loss) {
                            let _ = rxs[i].handle_datagram(now, from, &bytes);
                        }
                    }
                }
                To::Device(i) => {
                    if !down[i].lose(s.loss) {
                        let _ = rxs[i].handle_datagram(now, repair_addr, &bytes);
                    }
                }
                To::RepairServer(i) => {
                    if !up[i].lose(s.uplink_loss) {
                        let _ = repair.handle_datagram(now, addr(i), &bytes);
                    }
                }
                To::Sender(i) => {
                    if !up[i].lose(s.uplink_loss) {
                        let _ = sender.handle_datagram(now, addr(i), &bytes);
                    }
                }
            }
        }
        // Servers.
        if sender.passes_completed() < s.max_passes {
            while let Some(t) = sender.poll_transmit(now, &image, &mut buf) {
                sender_bytes += t.len as u64;
                seq += 1;
                heap.push(Reverse((
                    now + LATENCY,
                    seq,
                    To::DataGroup,
                    buf[..t.len].to_vec(),
                )));
            }
        }
        repair.handle_timeout(now);
        while let Some(t) = repair.poll_transmit(now, &image, &mut buf) {
            let to = match t.dest {
                Dest::Group => To::RepairGroup,
                Dest::Peer(a) => match (0..s.receivers).find(|&i| addr(i) == a) {
                    Some(i) => To::Device(i),
                    None => continue,
                },
                Dest::RepairServer => continue,
            };
            seq += 1;
            heap.push(Reverse((now + LATENCY, seq, to, buf[..t.len].to_vec())));
        }
        // Receivers: timers, events (the fake shell writes flash), transmits.
        for i in 0..s.receivers {
            let rx = &mut rxs[i];
            if rx.poll_timeout().is_some_and(|t| t <= now) {
                rx.handle_timeout(now);
            }
            while let Some(ev) = rx.poll_event() {
                match ev {
                    Event::ManifestAccepted => rx.handle_scan_done(now),
                    Event::WriteBlock { index, data } => {
                        let off = index as usize * s.block_size as usize;
                        flash[i][off..off + data.len()].copy_from_slice(data);
                        rx.handle_flash_done(now, index, true);
                    }
                    Event::VerifyImage => {
                        let bad: Vec<u32> = (0..manifest.block_count())
                            .filter(|&b| {
                                let off = b as usize * s.block_size as usize;
                                !manifest
                                    .block_matches(b, &flash[i][off..off + manifest.block_len(b)])
                            })
                            .collect();
                        rx.handle_verify_done(now, &bad);
                    }
                    Event::Done => done[i] = true,
                    Event::Refused(r) => panic!("receiver {i} refused: {r:?}"),
                    Event::Failed(r) => panic!("receiver {i} failed: {r:?}"),
                    Event::Foreign { .. } => {}
                }
            }
            while let Some(t) = rx.poll_transmit(now, &mut buf) {
                let to = match t.dest {
                    Dest::RepairServer => To::RepairServer(i),
                    Dest::Peer(a) if a == sender_addr => To::Sender(i),
                    _ => continue,
                };
                seq += 1;
                heap.push(Reverse((now + LATENCY, seq, to, buf[..t.len].to_vec())));
            }
        }
        if done.iter().all(|d| *d) || now > limit {
            break;
        }
        // Advance virtual time to the next thing that happens.
        let mut next: Option<Instant> = heap.peek().map(|Reverse((t, ..))| *t);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if sender.passes_completed() < s.max_passes {
            consider(sender.poll_timeout());
        }
        consider(repair.poll_timeout());
        for rx in &rxs {
            consider(rx.poll_timeout());
        }
        match next {
            Some(t) => now = t.max(now + Duration::from_micros(1)),
            None => break,
        }
    }
    let identical = flash.iter().filter(|f| **f == image).count();
    Outcome {
        image_bytes: s.image_len as u64,
        sender_bytes,
        repair_bytes: repair.stats().bytes_sent,
        nacks: rxs.iter().map(|r| r.stats().nacks_sent).sum(),
        passes: sender.passes_completed(),
        virtual_ms: now.as_micros() / 1000,
        evictions: rxs.iter().map(|r| r.stats().evictions).sum(),
        done: done.iter().filter(|d| **d).count(),
        identical,
        parity_sent: repair.stats().parity_sent,
        source_group: repair.stats().chunks_sent_group,
        source_unicast: repair.stats().chunks_sent_unicast,
    }
}

fn report(s: &Scenario, o: &Outcome) {
    println!(
        "sim | {:>4} rx | {:<26} | image {:>5} KiB | passes {:>2} | {:>6} ms virtual | sender/image {:.3} | repair/image {:.3} | NACKs/rx {:>5.1} | evictions {:>4} | done {}/{} identical {}",
        s.receivers,
        s.loss.describe(),
        o.image_bytes / 1024,
        o.passes,
        o.virtual_ms,
        o.sender_bytes as f64 / o.image_bytes as f64,
        o.repair_bytes as f64 / o.image_bytes as f64,
        o.nacks as f64 / s.receivers as f64,
        o.evictions,
        o.done,
        s.receivers,
        o.identical,
    );
}

fn check(s: &Scenario, max_repair_ratio: f64, max_nacks_per_rx: f64) -> Outcome {
    let o = run(s);
    report(s, &o);
    assert_eq!(o.done, s.receivers, "every receiver completes: {o:?}");
    assert_eq!(
        o.identical, s.receivers,
        "every flash is byte-identical to the image: {o:?}"
    );
    let ratio = o.repair_bytes as f64 / o.image_bytes as f64;
    assert!(
        ratio <= max_repair_ratio,
        "repair/image {ratio:.3} over {max_repair_ratio}: {o:?}"
    );
    let per_rx = o.nacks as f64 / s.receivers as f64;
    assert!(
        per_rx <= max_nacks_per_rx,
        "NACKs per receiver {per_rx:.1} over {max_nacks_per_rx}: {o:?}"
    );
    o
}

const MIB: usize = 1 << 20;

// Bounds below follow from the loss arithmetic of plain retransmission: with
// independent loss p, a chunk is missed by at least one of N receivers with
// probability 1-(1-p)^N (0.87 for p = 1%, N = 200; ~1 for p = 5%), and each
// missed chunk is repaired once for everyone, plus rounds for lost repairs.

#[test]
fn fleet_of_200_at_1_percent_bernoulli_loss() {
    let mut s = Scenario::retransmit(200, 2 * MIB + 12345, Loss::Bernoulli { ppm: 10_000 }, 1);
    s.uplink_loss = Loss::Bernoulli { ppm: 10_000 };
    let o = check(&s, 1.3, 40.0);
    assert!(
        o.passes <= 2,
        "repair finishes the fleet within two passes: {o:?}"
    );
}

#[test]
fn fleet_of_200_at_5_percent_bernoulli_loss() {
    let s = Scenario::retransmit(200, 2 * MIB, Loss::Bernoulli { ppm: 50_000 }, 2);
    check(&s, 2.5, 80.0);
}

#[test]
fn fleet_of_200_with_burst_loss() {
    // Bad state entered with 0.1% per datagram, left with 10%: ~1% loss in runs of ~10.
    let mut s = Scenario::retransmit(
        200,
        2 * MIB,
        Loss::Burst {
            enter_ppm: 1_010,
            leave_ppm: 100_000,
        },
        3,
    );
    s.uplink_loss = Loss::Bernoulli { ppm: 10_000 };
    check(&s, 1.5, 40.0);
}

#[test]
fn lossless_fleet_needs_one_pass_and_no_repair() {
    let mut s = Scenario::retransmit(50, MIB, Loss::Bernoulli { ppm: 0 }, 4);
    s.max_passes = 3;
    let o = check(&s, 0.0, 0.0);
    assert!(o.passes <= 1, "done within the first pass: {o:?}");
}

#[test]
fn loss_sweep_table() {
    for (n, ppm) in [
        (20, 0),
        (20, 10_000),
        (20, 50_000),
        (100, 10_000),
        (100, 100_000),
    ] {
        let mut s = Scenario::retransmit(n, MIB, Loss::Bernoulli { ppm }, 10 + ppm);
        s.max_passes = 30;
        check(&s, 3.0, 200.0);
    }
}

// --- parity repair (R-PAR-*) and NACK suppression (R-NACK-4) --------------

/// Expected maximum over `n` devices of the source chunks one device loses
/// in a block of `k` at loss `p`, divided by `k`: the least parity repair
/// can cost per image byte (each parity symbol repairs a different loss at
/// every device). E[max] = sum over j >= 1 of 1 - F(j-1)^n, F the binomial CDF.
fn binomial_bound(k: u32, p: f64, n: usize) -> f64 {
    let mut pmf = (1.0 - p).powi(k as i32);
    let mut cdf = 0.0;
    let mut e = 0.0;
    for j in 0..k {
        cdf += pmf;
        e += 1.0 - cdf.min(1.0).powf(n as f64);
        // pmf(j+1) from pmf(j)
        pmf *= (f64::from(k - j) / f64::from(j + 1)) * (p / (1.0 - p));
    }
    e / f64::from(k)
}

/// A lossy block is one where a device lost at least one chunk: the NACK
/// target counts NACK datagrams per device per such block.
fn lossy_blocks_per_device(blocks: u32, k: u32, p: f64) -> f64 {
    f64::from(blocks) * (1.0 - (1.0 - p).powi(k as i32))
}

fn parity(receivers: usize, ppm: u64, k: u32, image_len: usize, seed: u64) -> Scenario {
    let block_size = k * 1024;
    Scenario {
        receivers,
        image_len,
        loss: Loss::Bernoulli { ppm },
        uplink_loss: Loss::Bernoulli { ppm },
        rate_bps: 50_000_000,
        seed,
        max_passes: 20,
        mode: RepairMode::Parity,
        block_size,
        // About 1 MiB of window whatever the block size.
        window_blocks: (MIB as u32 / block_size).max(4),
        backoff_shape: 8,
        backoff_rtts: 20,
    }
}

/// Run a parity cell and print it beside its bound; returns (repair/image, bound, NACKs per device per lossy block).
fn parity_cell(s: &Scenario) -> (f64, f64, f64) {
    let started = std::time::Instant::now();
    let o = run(s);
    let k = s.block_size / 1024;
    let p = match s.loss {
        Loss::Bernoulli { ppm } => ppm as f64 / 1e6,
        Loss::Burst { .. } => 0.0,
    };
    let blocks = (s.image_len as u64).div_ceil(u64::from(s.block_size)) as u32;
    let bound = binomial_bound(k, p, s.receivers);
    let ratio = o.repair_bytes as f64 / o.image_bytes as f64;
    let per_lossy =
        o.nacks as f64 / s.receivers as f64 / lossy_blocks_per_device(blocks, k, p).max(1e-9);
    println!(
        "parity | {:>5} rx | loss {:>2.0}% | k {:>3} | {:>3} blocks | repair/image {:.3} | bound {:.3} | ratio {:.2} | NACKs/rx {:>5.2} | NACKs/rx/lossy block {:.3} | passes {} | {:>6} ms virtual | done {}/{} identical {} | parity {} src-group {} src-unicast {} | wall {:.1} s",
        s.receivers,
        p * 100.0,
        k,
        blocks,
        ratio,
        bound,
        ratio / bound,
        o.nacks as f64 / s.receivers as f64,
        per_lossy,
        o.passes,
        o.virtual_ms,
        o.done,
        s.receivers,
        o.identical,
        o.parity_sent,
        o.source_group,
        o.source_unicast,
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(o.done, s.receivers, "every receiver completes: {o:?}");
    assert_eq!(o.identical, s.receivers, "byte-identical: {o:?}");
    (ratio, bound, per_lossy)
}

#[test]
fn binomial_bound_matches_the_issue_arithmetic() {
    // Independent of the issue's figures: a direct check on a tiny case.
    // k = 1: max of n Bernoulli(p) = 1 - (1-p)^n.
    let b = binomial_bound(1, 0.01, 50);
    assert!((b - (1.0 - 0.99f64.powi(50))).abs() < 1e-12);
    assert!(binomial_bound(64, 0.0, 100) == 0.0);
}

#[test]
fn parity_fleet_of_200_at_1_and_5_percent() {
    for (ppm, k) in [(10_000, 64), (50_000, 64)] {
        let s = parity(200, ppm, k, 2 * MIB, 20 + ppm);
        let (ratio, bound, per_lossy) = parity_cell(&s);
        // Regression guard, not the issue's target (1.5 x bound, not met yet:
        // see the report of the parity branch). Retransmission costs 0.98
        // (1%) and 2.2 (5%) of the image in the same fleet.
        let guard = if ppm == 10_000 { 0.3 } else { 0.8 };
        assert!(ratio <= guard, "repair {ratio:.3} (bound {bound:.3})");
        assert!(
            per_lossy < 1.0,
            "NACKs per device per lossy block {per_lossy:.3}"
        );
    }
}

/// The issue's table: 10,000 receivers, 1% and 5% loss, k = 64 and 256.
/// Heavy: run with `cargo test --release -p firmcast-proto --test sim -- --ignored --nocapture`.
#[test]
#[ignore]
fn parity_fleet_of_10000_table() {
    let mut failures = Vec::new();
    for (ppm, k) in [(10_000, 64), (10_000, 256), (50_000, 64), (50_000, 256)] {
        let s = parity(10_000, ppm, k, 2 * MIB, 30 + ppm + u64::from(k));
        let (ratio, bound, per_lossy) = parity_cell(&s);
        if ratio > 1.5 * bound {
            // The issue's target; reported, and failing today.
            failures.push(format!(
                "k {k} loss {ppm} ppm: repair {ratio:.3} > 1.5 x bound {bound:.3}"
            ));
        }
        if per_lossy >= 1.0 {
            failures.push(format!(
                "k {k} loss {ppm} ppm: {per_lossy:.3} NACKs per device per lossy block"
            ));
        }
        if ppm == 10_000 && k == 256 && ratio > 0.06 {
            failures.push(format!("k 256 at 1%: repair {ratio:.3} > 0.06"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

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
use proto::repair::{RepairConfig, RepairServer};
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
        block_size: 65536,
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
    let mut repair = RepairServer::new(RepairConfig::default(), &manifest);
    let mut rxs: Vec<Receiver> = (0..s.receivers)
        .map(|i| {
            let mut c = ReceiverConfig::new(1000 + i as u64, "sim,board", "1.0.0", *kp.pk);
            c.rng_seed = s.seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
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
                        let off = index as usize * 65536;
                        flash[i][off..off + data.len()].copy_from_slice(data);
                        rx.handle_flash_done(now, index, true);
                    }
                    Event::VerifyImage => {
                        let bad: Vec<u32> = (0..manifest.block_count())
                            .filter(|&b| {
                                let off = b as usize * 65536;
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
    let s = Scenario {
        receivers: 200,
        image_len: 2 * MIB + 12345,
        loss: Loss::Bernoulli { ppm: 10_000 },
        uplink_loss: Loss::Bernoulli { ppm: 10_000 },
        rate_bps: 50_000_000,
        seed: 1,
        max_passes: 20,
    };
    let o = check(&s, 1.3, 40.0);
    assert!(
        o.passes <= 2,
        "repair finishes the fleet within two passes: {o:?}"
    );
}

#[test]
fn fleet_of_200_at_5_percent_bernoulli_loss() {
    let s = Scenario {
        receivers: 200,
        image_len: 2 * MIB,
        loss: Loss::Bernoulli { ppm: 50_000 },
        uplink_loss: Loss::Bernoulli { ppm: 50_000 },
        rate_bps: 50_000_000,
        seed: 2,
        max_passes: 20,
    };
    check(&s, 2.5, 80.0);
}

#[test]
fn fleet_of_200_with_burst_loss() {
    // Bad state entered with 0.1% per datagram, left with 10%: ~1% loss in runs of ~10.
    let s = Scenario {
        receivers: 200,
        image_len: 2 * MIB,
        loss: Loss::Burst {
            enter_ppm: 1_010,
            leave_ppm: 100_000,
        },
        uplink_loss: Loss::Bernoulli { ppm: 10_000 },
        rate_bps: 50_000_000,
        seed: 3,
        max_passes: 20,
    };
    check(&s, 1.5, 40.0);
}

#[test]
fn lossless_fleet_needs_one_pass_and_no_repair() {
    let s = Scenario {
        receivers: 50,
        image_len: MIB,
        loss: Loss::Bernoulli { ppm: 0 },
        uplink_loss: Loss::Bernoulli { ppm: 0 },
        rate_bps: 50_000_000,
        seed: 4,
        max_passes: 3,
    };
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
        let s = Scenario {
            receivers: n,
            image_len: MIB,
            loss: Loss::Bernoulli { ppm },
            uplink_loss: Loss::Bernoulli { ppm },
            rate_bps: 50_000_000,
            seed: 10 + ppm,
            max_passes: 30,
        };
        check(&s, 3.0, 200.0);
    }
}

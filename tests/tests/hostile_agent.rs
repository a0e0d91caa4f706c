//! Hostile tier, device side (issue 14: H1, H2, H3, H5, M4): forged datagrams
//! built with `proto::wire` are sent to the data group on loopback while the
//! genuine `firmcast send` runs; the real agent must finish with a
//! byte-identical image (or, under a lasting attack, exit stalled instead of
//! hanging), and its log must stay small and free of raw control characters.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use firmcast_integration::*;
use proto::wire::{self, Announce, Data, Frame, ImageId, ManifestChunk};

const MIB: usize = 1 << 20;
const FLASH: u64 = 4 << 20;
/// `firmcast manifest`'s default geometry.
const BLOCK: usize = 64 * 1024;
const CHUNK: usize = 1408;

/// A forger on the LAN: a socket on its own loopback address that sends to
/// the data group.
struct Forger {
    sock: UdpSocket,
    group: SocketAddr,
    sent: u64,
    bytes: u64,
}

impl Forger {
    fn new(net: &Net) -> Forger {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        s.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 66), 0)).into())
            .expect("bind forger");
        s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
            .expect("multicast if");
        s.set_multicast_loop_v4(true).expect("multicast loop");
        let sock = UdpSocket::from(s);
        Forger {
            sock,
            group: net.group.parse().expect("group"),
            sent: 0,
            bytes: 0,
        }
    }

    fn send(&mut self, session: u32, id: ImageId, frame: &Frame<'_>) {
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        let n = wire::encode(session, id, 0, frame, &mut buf).expect("encode");
        if self.sock.send_to(&buf[..n], self.group).is_ok() {
            self.sent += 1;
            self.bytes += n as u64;
        }
    }

    fn announce(&mut self, session: u32, id: ImageId, board: &str, version: &str) {
        self.send(
            session,
            id,
            &Frame::Announce(Announce {
                board,
                version,
                image_len: 2 * MIB as u64,
                block_size: BLOCK as u32,
                chunk_size: CHUNK as u32,
                manifest_len: 2048,
                rate_kbps: 1000,
                pass: 0,
            }),
        );
    }
}

fn image_id(manifest: &Path) -> (ImageId, usize) {
    let bytes = std::fs::read(manifest).expect("read manifest");
    (proto::manifest::image_id(&bytes), bytes.len())
}

fn listening_agent(
    dir: &Scratch,
    net: &Net,
    rel: &Release,
    name: &str,
    edit: &[(&str, &str)],
) -> (Proc, std::path::PathBuf) {
    let (config, target) = agent_config(dir, net, &AgentSpec::new(name, &rel.public_key, FLASH));
    let mut text = std::fs::read_to_string(&config).expect("config");
    for (from, to) in edit {
        assert!(text.contains(from), "{from} in the agent config");
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).expect("config");
    let mut agent = start_agent(dir, name, &config);
    assert!(
        agent.wait_for_output("listening", Duration::from_secs(10)),
        "{name} never listened:\n{}",
        agent.output()
    );
    (agent, target)
}

fn expect_image(agent: &mut Proc, target: &Path, rel: &Release, started: Instant, what: &str) {
    let code = agent.expect_exit(Duration::from_secs(60));
    let log = agent.output();
    assert_eq!(code, 10, "{what}: exit code (10: updated); log:\n{log}");
    assert!(
        target_holds(target, &rel.bytes),
        "{what}: target differs; log:\n{log}"
    );
    println!(
        "{what}: agent exit 10, image byte-identical after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// H1 (R-ANN-2): unsigned Announces of an older version for this board,
/// before and while the real sender runs, neither end nor block the update.
#[test]
fn h1_a_forged_older_announce_does_not_end_the_run() {
    let dir = Scratch::new("h1");
    let net = Net::for_test(40);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", 40);
    let (mut agent, target) = listening_agent(&dir, &net, &rel, "h1", &[]);
    let mut forger = Forger::new(&net);
    let started = Instant::now();
    for i in 0..50u32 {
        forger.announce(i, ImageId([i as u8; 8]), "acme,rt1", "0.9.0");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        agent.wait(Duration::from_millis(300)).is_none(),
        "the agent exited on forged Announces:\n{}",
        agent.output()
    );
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "40"],
    );
    for i in 0..200u32 {
        forger.announce(i, ImageId([i as u8; 8]), "acme,rt1", "0.9.0");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("H1: {} forged older Announces", forger.sent);
    expect_image(&mut agent, &target, &rel, started, "H1");
}

/// H2 (R-ANN-2, R-MAN-3): an Announce naming the real image id with another
/// board, and forged first manifest chunks of the real image id racing the
/// real ones while the sender starts, cost at most a re-fetch.
#[test]
fn h2_forged_announce_and_manifest_chunks_for_the_real_image_cost_a_refetch() {
    let dir = Scratch::new("h2");
    let net = Net::for_test(41);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", 41);
    let (id, manifest_len) = image_id(&rel.manifest);
    let (mut agent, target) = listening_agent(&dir, &net, &rel, "h2", &[]);
    let mut forger = Forger::new(&net);
    let started = Instant::now();
    forger.announce(7, id, "evil,board", "2.1.0");
    let junk = vec![0x55u8; CHUNK.min(manifest_len)];
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "40"],
    );
    // The first 0.5 s of the run: the lead copies of the manifest.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        forger.announce(7, id, "evil,board", "2.1.0");
        forger.send(
            7,
            id,
            &Frame::ManifestChunk(ManifestChunk {
                offset: 0,
                bytes: wire::Bytes(&junk),
            }),
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    println!(
        "H2: {} forged frames (Announce of the real id for another board, manifest chunk 0)",
        forger.sent
    );
    expect_image(&mut agent, &target, &rel, started, "H2");
}

/// H5 (R-SES-1..3): Announces of the real image id in random sessions, all
/// through the transfer, switch nothing.
#[test]
fn h5_forged_announces_with_random_sessions_switch_nothing() {
    let dir = Scratch::new("h5");
    let net = Net::for_test(42);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", 42);
    let (id, _) = image_id(&rel.manifest);
    let (mut agent, target) = listening_agent(&dir, &net, &rel, "h5", &[]);
    let mut forger = Forger::new(&net);
    let started = Instant::now();
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "40"],
    );
    let mut session = 0x1234_5678u32;
    while agent.wait(Duration::from_millis(2)).is_none()
        && started.elapsed() < Duration::from_secs(30)
    {
        session = session.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        forger.announce(session, id, "acme,rt1", "2.1.0");
    }
    println!(
        "H5: {} forged Announces of the real image id in random sessions",
        forger.sent
    );
    expect_image(&mut agent, &target, &rel, started, "H5");
}

/// Every chunk of every block of the real image, forged, once.
fn forge_every_chunk(forger: &mut Forger, id: ImageId, len: usize) {
    let payload = [0xEEu8; CHUNK];
    for block in 0..len.div_ceil(BLOCK) {
        let block_len = BLOCK.min(len - block * BLOCK);
        for chunk in 0..block_len.div_ceil(CHUNK) {
            let n = CHUNK.min(block_len - chunk * CHUNK);
            forger.send(
                1,
                id,
                &Frame::Data(Data {
                    block: block as u32,
                    chunk: chunk as u32,
                    payload: wire::Bytes(&payload[..n]),
                }),
            );
        }
    }
}

/// An H3 run: a 2 MiB release, a listening agent, a forger, and the
/// genuine sender at 10 Mbit/s, started now. Fields drop in order: the
/// processes before the scratch directory.
struct H3 {
    rel: Release,
    id: ImageId,
    agent: Proc,
    target: std::path::PathBuf,
    forger: Forger,
    started: Instant,
    _sender: Proc,
    _dir: Scratch,
}

fn h3_run(name: &str, n: u32) -> H3 {
    let dir = Scratch::new(name);
    let net = Net::for_test(n);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", u64::from(n));
    let (id, _) = image_id(&rel.manifest);
    let (agent, target) = listening_agent(&dir, &net, &rel, name, &[]);
    let forger = Forger::new(&net);
    let started = Instant::now();
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "10M", "--duration", "50"],
    );
    H3 {
        rel,
        id,
        agent,
        target,
        forger,
        started,
        _sender,
        _dir: dir,
    }
}

/// H3 (R-RUN-1, R-BLK-2): forged chunks of the real image racing the real
/// stream cost time, never the update: once they stop the device finishes.
#[test]
fn h3_forged_chunks_delay_the_update_until_they_stop() {
    let mut h = h3_run("h3", 43);
    let attack = Duration::from_secs(3);
    while h.started.elapsed() < attack {
        forge_every_chunk(&mut h.forger, h.id, h.rel.bytes.len());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "H3: {} forged chunks ({} bytes) in {} s, every chunk of every block about every 20 ms",
        h.forger.sent,
        h.forger.bytes,
        attack.as_secs()
    );
    expect_image(&mut h.agent, &h.target, &h.rel, h.started, "H3");
}

/// H3 (R-AUTH-1..3): with a format 2 manifest the chunk-hash list of each
/// block goes ahead of it, so forged chunks of the real image, racing the
/// real stream for the whole run, are dropped on arrival: the device
/// finishes during the attack.
#[test]
fn h3_chunk_lists_finish_the_update_during_a_lasting_forgery() {
    let mut h = h3_run("h3a", 46);
    let mut bursts = 0u32;
    // Every chunk of every block about every 20 ms until the agent exits
    // (at most 40 s): the attack never stops while the device works.
    while h.agent.wait(Duration::from_millis(20)).is_none()
        && h.started.elapsed() < Duration::from_secs(40)
    {
        forge_every_chunk(&mut h.forger, h.id, h.rel.bytes.len());
        bursts += 1;
    }
    let secs = h.started.elapsed().as_secs_f64();
    println!(
        "H3 during the attack: {} forged chunks ({} bytes, {:.0}/s) in {bursts} bursts until the agent exited after {secs:.2} s",
        h.forger.sent,
        h.forger.bytes,
        h.forger.sent as f64 / secs
    );
    expect_image(
        &mut h.agent,
        &h.target,
        &h.rel,
        h.started,
        "H3 with chunk lists",
    );
    assert!(
        secs < 20.0,
        "H3: finished during the attack in {secs:.2} s (a 2 MiB image at 10 Mbit/s is a 1.7 s pass)"
    );
}

/// H3 (R-RUN-1, R-RUN-2): with a format 1 manifest (no chunk hashes) an
/// attack that lasts longer than the stall timeout makes the agent exit
/// stalled (5) instead of sitting forever.
#[test]
fn h3_a_lasting_forgery_ends_in_exit_5_not_a_hang() {
    let dir = Scratch::new("h3s");
    let net = Net::for_test(44);
    let rel = release_with(&dir, 2 * MIB, "acme,rt1", "2.1.0", 44, &["--format", "1"]);
    let (id, _) = image_id(&rel.manifest);
    let (mut agent, _target) = listening_agent(
        &dir,
        &net,
        &rel,
        "h3s",
        &[(
            "stall_timeout_secs = 30\n",
            "stall_timeout_secs = 3\nrun_deadline_secs = 8\n",
        )],
    );
    let mut forger = Forger::new(&net);
    let started = Instant::now();
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "10M", "--duration", "30"],
    );
    let mut code = None;
    while started.elapsed() < Duration::from_secs(20) {
        forge_every_chunk(&mut forger, id, rel.bytes.len());
        if let Some(s) = agent.wait(Duration::from_millis(5)) {
            code = s.code();
            break;
        }
    }
    let log = agent.output();
    assert_eq!(
        code,
        Some(5),
        "exit stalled under a lasting forgery; log:\n{log}"
    );
    println!(
        "H3 lasting: {} forged chunks; agent exit 5 after {:.1} s (stall timeout 3 s, run deadline 8 s)",
        forger.sent,
        started.elapsed().as_secs_f64()
    );
}

/// M7 (R-ROLL-1, R-ROLL-2): a device that activated 2.3.0, signed with
/// `--min-version 2.3.0`, keeps that floor in `floor_file`; an older image
/// signed with the same key (2.2.0, newer than the 1.0.0 its config still
/// names, as after a reset version file) replayed by the genuine tool is
/// not even fetched (its Announce is below the floor, R-ANN-2): the agent
/// ends its boot window with nothing written and the flash keeps 2.3.0.
#[test]
fn m7_a_replayed_older_signed_image_below_the_floor_is_refused() {
    let dir = Scratch::new("m7");
    let net = Net::for_test(47);
    let new = release_with(
        &dir,
        MIB / 2,
        "acme,rt1",
        "2.3.0",
        47,
        &["--min-version", "2.3.0"],
    );
    let old = release(&dir, MIB / 2, "acme,rt1", "2.2.0", 48);
    let floor = dir.join("floor");
    let with_floor = format!(
        "stall_timeout_secs = 30\nfloor_file = \"{}\"\n",
        path_str(&floor)
    );
    let (mut agent, target) = listening_agent(
        &dir,
        &net,
        &new,
        "m7",
        &[("stall_timeout_secs = 30\n", &with_floor)],
    );
    let started = Instant::now();
    let sender = start_sender(
        &dir,
        &net,
        &new,
        "sender-new",
        &["--rate", "20M", "--duration", "30"],
    );
    expect_image(&mut agent, &target, &new, started, "M7 rollout of 2.3.0");
    drop(sender);
    let kept = std::fs::read_to_string(&floor).expect("floor file");
    assert_eq!(
        kept, "2.3.0\n",
        "the floor is recorded once the image is done"
    );
    let (mut agent, _) = listening_agent(
        &dir,
        &net,
        &old,
        "m7",
        &[
            ("stall_timeout_secs = 30\n", &with_floor),
            ("boot_window_secs = 20\n", "boot_window_secs = 4\n"),
        ],
    );
    let started = Instant::now();
    let _replay = start_sender(
        &dir,
        &net,
        &old,
        "sender-old",
        &["--rate", "20M", "--duration", "30"],
    );
    let code = agent.expect_exit(Duration::from_secs(30));
    let log = agent.output();
    println!(
        "M7: replayed signed 2.2.0 under floor {:?}: agent exit {code} after {:.2} s",
        kept.trim(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "no update within the boot window; log:\n{log}");
    assert!(
        log.contains("below the anti-rollback floor"),
        "the log names the floor:\n{log}"
    );
    assert!(
        target_holds(&target, &new.bytes),
        "the flash still holds 2.3.0; log:\n{log}"
    );
}

/// M4, device side: 10,000 forged Announces with random image ids and a
/// board string carrying a newline and ESC give a bounded number of log
/// lines and no raw control character.
#[test]
fn m4_a_flood_of_forged_announces_is_summarised_and_escaped() {
    let dir = Scratch::new("m4");
    let net = Net::for_test(45);
    let rel = release(&dir, 64 * 1024, "acme,rt1", "2.1.0", 45);
    let (mut agent, _target) = listening_agent(
        &dir,
        &net,
        &rel,
        "m4",
        &[("boot_window_secs = 20\n", "boot_window_secs = 4\n")],
    );
    let before = agent.output().lines().count();
    let mut forger = Forger::new(&net);
    let board = "acme,rt1\n   0.001 INFO  update complete: version 9.9.9\u{1b}[2J";
    let mut x = 0x9e37_79b9u64;
    for i in 0..10_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        forger.announce(i, ImageId(x.to_be_bytes()), board, "9.9.9");
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let code = agent.expect_exit(Duration::from_secs(20));
    let log = agent.output();
    assert_eq!(code, 0, "{log}");
    let lines = log.lines().count() - before;
    println!(
        "M4: {} forged Announces -> {lines} agent log lines",
        forger.sent
    );
    assert!(lines < 20, "{lines} log lines for the flood:\n{log}");
    assert!(!log.contains('\u{1b}'), "raw ESC in the log:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.trim_start().starts_with("0.001 INFO  update complete")),
        "an injected log line:\n{log}"
    );
}

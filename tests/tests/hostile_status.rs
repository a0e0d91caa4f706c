//! Hostile LAN, the operator's side (issue 14, rows H4, M1, M3, M4): forged
//! Status frames, forged device ids and a forged Announce with a spoofed
//! source, over loopback, against the real binaries (R-STAT-4..6,
//! R-FLEET-1..3, R-WIRE-7). Each test prints the figure it is about.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use firmcast_integration::*;
use proto::wire::{self, Announce, DeviceState, Frame, ImageId, Status};

const FLASH: u64 = 1 << 20;
const IMAGE_LEN: usize = 256 * 1024 + 99;

/// A Status datagram; signed with `seed`'s key if given.
fn status_frame(
    image_id: ImageId,
    id: u64,
    state: DeviceState,
    version: &str,
    seed: Option<u8>,
) -> Vec<u8> {
    let st = Status {
        window_free: 0,
        ..status_report(id, state, version)
    };
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    let mut n = wire::encode(1, image_id, 0, &Frame::Status(st), &mut buf).expect("encode");
    if let Some(s) = seed {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([s; 32]));
        n = wire::sign_status(&mut buf, n, &kp.sk).expect("sign");
    }
    buf.truncate(n);
    buf
}

/// The sender's unicast address and image id, from its start-up line
/// ("... image id HEX) to GROUP via IFACE from ADDR at ...").
fn sender_endpoint(sender: &mut Proc) -> (SocketAddr, ImageId) {
    assert!(
        sender.wait_for_output(" at ", Duration::from_secs(20)),
        "sender did not start:\n{}",
        sender.output()
    );
    let out = sender.output();
    let line = out
        .lines()
        .find(|l| l.contains("sending ") && l.contains(" from "))
        .expect("start-up line");
    let from = line
        .split(" from ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("from address");
    let mut addr: SocketAddr = from.parse().expect("sender address");
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let hex = line
        .split("image id ")
        .nth(1)
        .map(|r| &r[..16])
        .expect("image id");
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    (addr, ImageId(id))
}

/// The JSON summary a `--json` run printed last.
fn json_line(p: &Proc) -> String {
    p.output()
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default()
        .to_string()
}

/// A top-level field of `json` (the last occurrence of the key: nested
/// per-state counts come first).
fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    json.rsplit(&pat)
        .next()
        .filter(|_| json.contains(&pat))
        .map(|r| r.split([',', '}']).next().unwrap_or(""))
        .unwrap_or("")
}

/// A device key pair from `firmcast keygen --device`, and its public hex.
fn device_key(dir: &Scratch, name: &str) -> (String, String) {
    let out = dir.join(name);
    firmcast_ok(&["keygen", "--device", "--out", path_str(&out)]);
    let public = fs::read_to_string(out.join("device.pub")).expect("device.pub");
    (
        path_str(&out.join("device.key")).to_string(),
        // The typed file's last line is the key's hex (R-LOCAL-7).
        public.lines().last().unwrap_or("").trim().to_string(),
    )
}

fn with_extra(config: &Path, extra: &str) {
    let mut text = fs::read_to_string(config).expect("config");
    text.push_str(extra);
    fs::write(config, text).expect("config");
}

// H4: forged Status (unsigned, or signed with a wrong key, or from devices
// outside the roster) never moves `--until-done`; the genuine, signed
// agent does.
#[test]
fn r_stat_4_forged_status_never_moves_until_done_with_a_roster() {
    let dir = Scratch::new("hstat-forged");
    let net = Net::for_test(61);
    let rel = release(&dir, IMAGE_LEN, "acme,rt1", "2.1.0", 61);
    let (key_path, public) = device_key(&dir, "dev7");
    let roster = dir.join("roster");
    fs::write(&roster, format!("# lab fleet\n7 {public}\n8 {public}\n")).expect("roster");

    // Phase 1: no agent, only forgeries.
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "forged-sender",
        &[
            "--rate",
            "5M",
            "--until-done",
            "2",
            "--duration",
            "4",
            "--json",
            "--roster",
            path_str(&roster),
        ],
    );
    let (to, image_id) = sender_endpoint(&mut sender);
    let forger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let forged = [
        status_frame(image_id, 7, DeviceState::Done, "2.1.0", None),
        status_frame(image_id, 8, DeviceState::Done, "2.1.0", Some(99)),
        status_frame(image_id, 9, DeviceState::Done, "2.1.0", Some(99)),
        status_frame(image_id, 10, DeviceState::Done, "2.1.0", None),
    ];
    let mut sent = 0;
    for _ in 0..20 {
        for f in &forged {
            forger.send_to(f, to).expect("send");
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = sender.expect_exit(Duration::from_secs(20));
    let json = json_line(&sender);
    println!(
        "forged Status: {sent} frames in, done counted {}, reached {}, sender exit {code}",
        json_field(&json, "done"),
        json_field(&json, "reached")
    );
    assert_eq!(json_field(&json, "reached"), "false", "{}", sender.output());
    assert_eq!(json_field(&json, "done"), "0");
    assert_ne!(code, 0);
    // R-STAT-5: the dropped forgeries are summarised, not logged one by one.
    let drop_lines = sender
        .output()
        .lines()
        .filter(|l| l.contains(" dropped ") && l.contains(" datagrams"))
        .count();
    println!("forged Status: {drop_lines} drop summary lines for {sent} forged frames");
    assert!((1..=4).contains(&drop_lines), "{}", sender.output());

    // Phase 2: the genuine agent signs its reports; forgeries go on.
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let (config, target) =
        agent_config(&dir, &net, &AgentSpec::new("dev7", &rel.public_key, FLASH));
    with_extra(
        &config,
        &format!("device_id = 7\ndevice_key = \"{key_path}\"\n"),
    );
    let mut agent = start_agent(&dir, "dev7", &config);
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "genuine-sender",
        &[
            "--rate",
            "20M",
            "--until-done",
            "1",
            "--duration",
            "60",
            "--json",
            "--roster",
            path_str(&roster),
        ],
    );
    let (to, _) = sender_endpoint(&mut sender);
    for _ in 0..10 {
        for f in &forged {
            let _ = forger.send_to(f, to);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        agent.expect_exit(Duration::from_secs(60)),
        10,
        "{}",
        agent.output()
    );
    assert!(target_holds(&target, &rel.bytes));
    let code = sender.expect_exit(Duration::from_secs(30));
    let json = json_line(&sender);
    println!(
        "genuine signed agent: reached {}, fleet {}",
        json_field(&json, "reached"),
        json.split("\"fleet\":")
            .nth(1)
            .and_then(|r| r.split('}').next())
            .unwrap_or("")
    );
    assert_eq!(code, 0, "{}", sender.output());
    assert_eq!(json_field(&json, "reached"), "true");
}

// M3: 70,000 forged device ids leave room for the real device.
#[test]
fn r_fleet_3_seventy_thousand_forged_ids_leave_room_for_a_real_device() {
    let dir = Scratch::new("hstat-flood");
    let net = Net::for_test(62);
    let rel = release(&dir, IMAGE_LEN, "acme,rt1", "2.1.0", 62);
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &[
            "--rate",
            "20M",
            "--until-done",
            "1",
            "--duration",
            "60",
            "--json",
        ],
    );
    let (to, image_id) = sender_endpoint(&mut sender);
    let forger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    for id in 0..70_000u64 {
        let f = status_frame(
            image_id,
            1_000_000 + id,
            DeviceState::Listening,
            "1.0.0",
            None,
        );
        let _ = forger.send_to(&f, to);
        if id % 200 == 199 {
            // Paced so that the sender's socket buffer takes them all.
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let (config, target) =
        agent_config(&dir, &net, &AgentSpec::new("real", &rel.public_key, FLASH));
    let mut agent = start_agent(&dir, "real", &config);
    assert_eq!(
        agent.expect_exit(Duration::from_secs(60)),
        10,
        "{}",
        agent.output()
    );
    assert!(target_holds(&target, &rel.bytes));
    let code = sender.expect_exit(Duration::from_secs(30));
    let json = json_line(&sender);
    println!(
        "70000 forged ids in {flood_secs:.2} s: sender took {} status frames, {} devices kept, evicted {}, reached {}",
        json_field(&json, "status_frames"),
        json_field(&json, "devices_total"),
        json_field(&json, "evicted"),
        json_field(&json, "reached")
    );
    assert_eq!(code, 0, "{}", sender.output());
    assert_eq!(json_field(&json, "reached"), "true");
}

// R-STAT-6: a device that finds the whole image on flash when it resumes
// proves the sender by the manifest it fetched from it, so `send
// --until-done` with a separate repair server counts it (before, its reports
// went to the repair server only and the sender ran to --duration).
#[test]
fn r_stat_6_a_fully_resumed_device_counts_toward_until_done() {
    let dir = Scratch::new("hstat-resumed");
    let net = Net::for_test(64);
    let rel = release(&dir, IMAGE_LEN, "acme,rt1", "2.1.0", 64);
    let (config, target) = agent_config(&dir, &net, &AgentSpec::new("dev", &rel.public_key, FLASH));
    {
        let _first = start_sender(
            &dir,
            &net,
            &rel,
            "first",
            &["--rate", "20M", "--duration", "30"],
        );
        let mut agent = start_agent(&dir, "dev", &config);
        assert_eq!(
            agent.expect_exit(Duration::from_secs(40)),
            10, // updated
            "{}",
            agent.output()
        );
        assert!(target_holds(&target, &rel.bytes));
    }
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let started = Instant::now();
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &[
            "--rate",
            "20M",
            "--until-done",
            "1",
            "--duration",
            "20",
            "--json",
        ],
    );
    let mut agent = start_agent(&dir, "dev-again", &config);
    assert_eq!(
        agent.expect_exit(Duration::from_secs(40)),
        10, // updated
        "{}",
        agent.output()
    );
    assert!(
        agent.output().contains("5 of 5 blocks already on flash"),
        "{}",
        agent.output()
    );
    let code = sender.expect_exit(Duration::from_secs(30));
    let json = json_line(&sender);
    println!(
        "R-STAT-6: fully resumed device: sender exit {code}, reached {} after {:.2} s (--duration 20)",
        json_field(&json, "reached"),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{}", sender.output());
    assert_eq!(json_field(&json, "reached"), "true");
}

// M1: a forged Announce with a spoofed source gets no Status back.
#[test]
fn r_stat_6_a_spoofed_announce_source_gets_no_status() {
    let dir = Scratch::new("hstat-reflect");
    let net = Net::for_test(63);
    let rel = release(&dir, IMAGE_LEN, "acme,rt1", "2.1.0", 63);
    let mut spec = AgentSpec::new("victim-dev", &rel.public_key, FLASH);
    spec.boot_window_secs = 30;
    let (config, _) = agent_config(&dir, &net, &spec);
    let mut agent = start_agent(&dir, "victim-dev", &config);
    std::thread::sleep(Duration::from_millis(500));

    let victim = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    victim
        .bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 66), 0)).into())
        .expect("bind 127.0.0.66");
    victim
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .expect("multicast if");
    let victim: UdpSocket = victim.into();
    victim
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let group: SocketAddr = net.group.parse().expect("group");
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    let n = wire::encode(
        0xbad,
        ImageId([0x66; 8]),
        0,
        &Frame::Announce(Announce {
            board: "acme,rt1",
            version: "9.9.9",
            image_len: 200_000,
            block_size: 65_536,
            chunk_size: 1024,
            manifest_len: 3000,
            rate_kbps: 1000,
            pass: 0,
        }),
        &mut buf,
    )
    .expect("announce");
    // The configured repair server's place: its Status shows the agent acted.
    let repair = UdpSocket::bind(&net.repair_listen).expect("bind repair listen");
    repair.set_nonblocking(true).expect("nonblocking");
    let mut fetching = 0usize;
    let mut received = 0usize;
    let mut frames = 0usize;
    let mut rbuf = [0u8; 2048];
    let until = Instant::now() + Duration::from_millis(3500);
    let mut next_announce = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_announce {
            victim.send_to(&buf[..n], group).expect("send announce");
            next_announce += Duration::from_millis(500);
        }
        if let Ok((len, _)) = victim.recv_from(&mut rbuf) {
            received += len;
            frames += 1;
        }
        while let Ok((len, _)) = repair.recv_from(&mut rbuf) {
            if let Ok((_, Frame::Status(st))) = wire::decode(&rbuf[..len]) {
                if st.state == DeviceState::FetchingManifest {
                    fetching += 1;
                }
            }
        }
    }
    agent.kill();
    assert!(
        fetching > 0,
        "the agent never acted on the forged Announce:\n{}",
        agent.output()
    );
    println!(
        "reflection: {received} bytes ({frames} datagrams) to the spoofed Announce source in 3.5 s; {fetching} fetching reports to the repair server"
    );
    assert_eq!(received, 0);
}

/// Run `firmcast status` on a port of its own (`n` picks it), send it `frame`
/// three times, and return its output and the row of device `id`.
fn status_row(name: &str, n: u32, frame: &[u8], id: u64) -> (String, String) {
    let dir = Scratch::new(name);
    let port = 20_000 + (std::process::id() % 300) * 100 + n * 3 % 100 + 50;
    let listen = format!("127.0.0.1:{port}");
    let mut status = Proc::start(
        "status",
        &bin("firmcast"),
        &["status", "--listen", &listen, "--duration", "2"],
        dir.path(),
    );
    assert!(status.wait_for_output("listening", Duration::from_secs(10)));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..3 {
        sock.send_to(frame, &listen).expect("send");
    }
    assert_eq!(status.expect_exit(Duration::from_secs(10)), 0);
    let out = status.output();
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{id:016x}")))
        .unwrap_or_else(|| panic!("device row:\n{out}"))
        .to_string();
    println!("status row: {row}");
    (out, row)
}

// M4 (operator side): a device-supplied version with ESC and a newline is
// printed escaped by `firmcast status`.
#[test]
fn r_stat_5_status_prints_device_strings_escaped() {
    let evil = "1.0\x1b[2J\nFAKE line";
    let f = status_frame(ImageId([1; 8]), 0xe5c, DeviceState::Done, evil, None);
    let (out, row) = status_row("hstat-escape", 64, &f, 0xe5c);
    assert!(!out.contains('\x1b'), "raw ESC printed");
    assert!(row.contains("\\u{1b}[2J\\nFAKE line"), "{row}");
    assert!(!out.lines().any(|l| l.starts_with("FAKE line")));
}

// R-STAT-9: a newer agent's state and reason, unknown to this build, are
// shown as `unknown(n)`, not dropped with the whole Status.
#[test]
fn r_stat_9_status_shows_a_newer_agents_unknown_state_and_reason() {
    let newer = Status {
        reason: wire::Reason::from_u8(200),
        ..status_report(0xa9e, DeviceState::from_u8(200), "9.0")
    };
    let f = status_datagram(ImageId([1; 8]), newer);
    let (out, row) = status_row("hstat-unknown", 65, &f, 0xa9e);
    assert_eq!(row.matches("unknown(200)").count(), 2, "{row}");
    assert!(out.contains("unknown 1"), "{out}");
}

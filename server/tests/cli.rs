//! Integration tests: the real `firmcast` binary, real files, real loopback
//! multicast (IP_MULTICAST_IF = 127.0.0.1, receivers join on 127.0.0.1).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use proto::wire::{self, ChunkRange, Data, Frame, Nack};
use socket2::{Domain, Protocol, Socket, Type};

const BIN: &str = env!("CARGO_BIN_EXE_firmcast");

fn firmcast(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run firmcast")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// A temp dir with a key pair, an image and its manifest (4 KiB blocks, 1 KiB chunks).
struct Fixture {
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

impl Fixture {
    fn new(image_len: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let image: Vec<u8> = (0..image_len).map(|i| (i * 7 + i / 1000) as u8).collect();
        std::fs::write(dir.path().join("fw.img"), &image).expect("write image");
        let f = Fixture { dir, image };
        let out = firmcast(&["keygen", "--out", p(&f.path("keys"))]);
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
        let out = firmcast(&[
            "manifest",
            "--image",
            p(&f.path("fw.img")),
            "--board",
            "acme,rt1",
            "--version",
            "2.1.0",
            "--key",
            p(&f.path("keys/firmcast.key")),
            "--out",
            p(&f.path("fw.manifest")),
            "--block-size",
            "4K",
            "--chunk-size",
            "1024",
        ]);
        assert!(out.status.success(), "manifest: {}", text(&out.stderr));
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn keygen_manifest_show_verifies() {
    let f = Fixture::new(10_000);
    // Typed key file (R-LOCAL-7): a header line, then the 64 hex digits.
    let public = std::fs::read_to_string(f.path("keys/firmcast.pub")).expect("pub");
    let lines: Vec<&str> = public.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"firmcast-ed25519-public-key"),
        "{public}"
    );
    assert_eq!(lines.get(1).map(|l| l.len()), Some(64), "{public}");
    let out = firmcast(&[
        "manifest",
        "--show",
        p(&f.path("fw.manifest")),
        "--public-key",
        p(&f.path("keys/firmcast.pub")),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("acme,rt1") && shown.contains("2.1.0"),
        "{shown}"
    );
    assert!(shown.contains("verified with"), "{shown}");
    let out = firmcast(&["manifest", "--show", p(&f.path("fw.manifest")), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["blocks"], 3);
    assert_eq!(v["image_len"], 10_000);
    assert_eq!(v["chunk_size"], 1024);
    assert_eq!(v["verified"], false);
    let signed = std::fs::read(f.path("fw.manifest")).expect("manifest");
    assert_eq!(
        v["image_id"],
        proto::manifest::image_id(&signed).to_string()
    );
}

#[test]
fn refusals_are_one_clear_line_with_the_right_exit_code() {
    let f = Fixture::new(10_000);
    // keygen will not overwrite.
    let out = firmcast(&["keygen", "--out", p(&f.path("keys"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // A bad key file is named.
    std::fs::write(f.path("bad.key"), "not hex at all\n").expect("write");
    let out = firmcast(&[
        "manifest",
        "--image",
        p(&f.path("fw.img")),
        "--board",
        "b",
        "--version",
        "1",
        "--key",
        p(&f.path("bad.key")),
        "--out",
        p(&f.path("x.manifest")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: key ") && err.contains("bad.key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A --interface this host does not have: exit 2, the host's addresses listed.
    let (img, man) = (f.path("fw.img"), f.path("fw.manifest"));
    let mut args = vec!["send", "--image", p(&img), "--manifest", p(&man)];
    args.extend(["--group", "239.255.77.1:7854", "--rate", "1M"]);
    args.extend(["--interface", "192.0.2.77"]);
    let out = firmcast(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--interface 192.0.2.77: no interface of this host")
            && err.contains("127.0.0.1 (lo)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A wrong public key does not verify.
    let out = firmcast(&["keygen", "--out", p(&f.path("other"))]);
    assert!(out.status.success());
    let out = firmcast(&[
        "manifest",
        "--show",
        p(&f.path("fw.manifest")),
        "--public-key",
        p(&f.path("other/firmcast.pub")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("signature does not verify with"),
        "{}",
        text(&out.stderr)
    );
    // An image that does not match its manifest names the first bad block.
    let mut img = f.image.clone();
    img[9000] ^= 0xff;
    std::fs::write(f.path("bad.img"), &img).expect("write");
    // One pass of `image` at 1 Mbit/s on loopback, plus `extra`.
    let manifest = f.path("fw.manifest");
    let send_once = |image: &str, extra: &[&str]| {
        let mut args = vec![
            "send",
            "--image",
            image,
            "--manifest",
            p(&manifest),
            "--group",
            "239.255.77.1:7854",
            "--interface",
            "127.0.0.1",
            "--rate",
            "1M",
            "--passes",
            "1",
        ];
        args.extend_from_slice(extra);
        firmcast(&args)
    };
    let bad = f.path("bad.img");
    let out = send_once(p(&bad), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("block 2"),
        "{}",
        text(&out.stderr)
    );
    // A repair mode for `send` needs the inline repair server's address.
    let good = f.path("fw.img");
    let out = send_once(p(&good), &["--repair", "parity"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--repair needs --repair-listen"),
        "{}",
        text(&out.stderr)
    );
    // Not a manifest at all.
    let out = firmcast(&["manifest", "--show", p(&f.path("fw.img"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a firmcast manifest"),
        "{}",
        text(&out.stderr)
    );
    // Bad sizes.
    let out = firmcast(&[
        "manifest",
        "--image",
        p(&f.path("fw.img")),
        "--board",
        "b",
        "--version",
        "1",
        "--key",
        p(&f.path("keys/firmcast.key")),
        "--out",
        p(&f.path("x.manifest")),
        "--block-size",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--block-size"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in [
        "keygen",
        "manifest",
        "send",
        "repair",
        "status",
        "fleet",
        "demo",
        "relay",
        "agent-config",
    ] {
        let out = firmcast(&[cmd, "--help"]);
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("Examples:") && help.contains("firmcast "),
            "{cmd}: {help}"
        );
    }
}

/// A socket joined to `group` on the loopback interface, as a device would.
fn join(group: SocketAddrV4) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port())).into())
        .expect("bind");
    s.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)
        .expect("IP_ADD_MEMBERSHIP on 127.0.0.1");
    let u: UdpSocket = s.into();
    u.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    u
}

fn unique_port(salt: u16) -> u16 {
    20_000 + (std::process::id() % 20_000) as u16 + salt
}

fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("firmcast did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn send_over_loopback_multicast_covers_every_chunk_and_counts_status() {
    let f = Fixture::new(3 * 4096 + 1500); // 4 blocks, last one 2 chunks (1024 + 476)
    let signed = std::fs::read(f.path("fw.manifest")).expect("manifest");
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 101), unique_port(0));
    let rx = join(group);
    let mut child = Command::new(BIN)
        .args([
            "send",
            "--image",
            p(&f.path("fw.img")),
            "--manifest",
            p(&f.path("fw.manifest")),
            "--group",
            &group.to_string(),
            "--interface",
            "127.0.0.1",
            "--rate",
            "2M",
            "--passes",
            "3",
            "--until-done",
            "1",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    let mut announces = 0;
    let mut manifest = vec![0u8; signed.len()];
    let mut manifest_seen = BTreeSet::new();
    let mut chunks = BTreeSet::new();
    let mut lists = BTreeSet::new();
    let mut sender_addr = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let Ok((n, from)) = rx.recv_from(&mut buf) else {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            continue;
        };
        sender_addr = Some(from);
        let (h, frame) = wire::decode(&buf[..n]).expect("every datagram decodes");
        assert_eq!(h.image_id, proto::manifest::image_id(&signed));
        match frame {
            Frame::Announce(a) => {
                announces += 1;
                assert_eq!(
                    (a.board, a.version, a.image_len),
                    ("acme,rt1", "2.1.0", f.image.len() as u64)
                );
                assert_eq!(a.manifest_len as usize, signed.len());
                assert_eq!(a.rate_kbps, 2000);
            }
            Frame::ManifestChunk(m) => {
                let at = m.offset as usize;
                manifest[at..at + m.bytes.0.len()].copy_from_slice(m.bytes.0);
                manifest_seen.insert(m.offset);
            }
            Frame::Data(d) => {
                let at = d.block as usize * 4096 + d.chunk as usize * 1024;
                assert_eq!(d.payload.0, &f.image[at..at + d.payload.0.len()]);
                chunks.insert((d.block, d.chunk));
                if chunks.len() == 14 {
                    // Every chunk seen: report Done, as a device would, to the sender's socket.
                    let st = wire::Status {
                        device_id: 0xfeed,
                        state: wire::DeviceState::Done,
                        blocks_done: 4,
                        blocks_total: 4,
                        current_version: "2.1.0",
                        reason: wire::Reason::None,
                        write_kbps: 0,
                        window_free: 0,
                    };
                    let mut out = [0u8; 128];
                    let len = wire::encode(h.session, h.image_id, 0, &Frame::Status(st), &mut out)
                        .expect("encode");
                    rx.send_to(&out[..len], from).expect("status to sender");
                }
            }
            Frame::ChunkList(l) => {
                // R-AUTH-2: each block's chunk-hash list, matching its digest.
                let at = l.block as usize * 4096;
                let block = &f.image[at..(at + 4096).min(f.image.len())];
                assert_eq!(
                    proto::manifest::chunk_list_digest(l.hashes.0),
                    proto::manifest::chunked_block_digest(1024, block)
                );
                lists.insert(l.block);
            }
            other => panic!("sender emitted {other:?}"),
        }
    }
    let status = wait_child(&mut child, Duration::from_secs(10));
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "send failed: {}", text(&out.stderr));
    assert!(sender_addr.is_some(), "no multicast received on loopback");
    assert!(announces >= 1);
    assert_eq!(manifest, signed, "manifest reassembled from ManifestChunks");
    assert_eq!(
        chunks.len(),
        14,
        "3 blocks × 4 chunks + 2 in the last block"
    );
    assert_eq!(lists.len(), 4, "a chunk-hash list for every block");
    let (v, changes) = json_lines(&out.stdout);
    assert_eq!(v["devices"]["done"], 1);
    // The device's change to done is a line of the stream before the summary.
    assert!(
        changes
            .iter()
            .any(|c| c["state"] == "done" && c["event"] == "change"),
        "{changes:?}"
    );
    assert_eq!(v["reached"], true);
    assert_eq!(v["stopped_by"], "until-done");
}

#[test]
fn send_passes_without_devices_stops_and_until_done_unmet_exits_1() {
    let f = Fixture::new(8192);
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 102), unique_port(1));
    let rx = join(group);
    let (img, man) = (f.path("fw.img"), f.path("fw.manifest"));
    let run = |extra: &[&str]| {
        let mut args = vec!["send", "--image", p(&img), "--manifest", p(&man), "--group"];
        let g = group.to_string();
        args.extend([
            g.as_str(),
            "--interface",
            "127.0.0.1",
            "--rate",
            "4M",
            "--json",
        ]);
        args.extend(extra);
        Command::new(BIN).args(&args).output().expect("run send")
    };
    let out = run(&["--passes", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["passes"], 2);
    assert_eq!(v["data"], 16, "2 passes × 8 chunks");
    let mut buf = [0u8; 2048];
    let mut data = 0;
    while let Ok((n, _)) = rx.recv_from(&mut buf) {
        if let Ok((_, Frame::Data(_))) = wire::decode(&buf[..n]) {
            data += 1;
        }
    }
    assert_eq!(data, 16);
    let out = run(&["--passes", "1", "--until-done", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reached"], false);
}

fn nack(session: u32, image_id: wire::ImageId, device_id: u64, start: u32, len: u32) -> Vec<u8> {
    let mut ranges = heapless::Vec::new();
    ranges.push(ChunkRange { start, len }).expect("room");
    let mut out = vec![0u8; 512];
    let n = wire::encode(
        session,
        image_id,
        0,
        &Frame::Nack(Nack { device_id, ranges }),
        &mut out,
    )
    .expect("encode");
    out.truncate(n);
    out
}

#[test]
fn repair_over_loopback_unicasts_a_lone_request_and_groups_a_shared_one() {
    // Retransmission (parity is the default; its answers are tested in
    // proto's repair tests and the loopback and namespace tiers).
    let f = Fixture::new(3 * 4096 + 1500);
    let signed = std::fs::read(f.path("fw.manifest")).expect("manifest");
    let image_id = proto::manifest::image_id(&signed);
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, unique_port(2));
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 103), unique_port(3));
    let group_rx = join(group);
    let mut child = Command::new(BIN)
        .args([
            "repair",
            "--image",
            p(&f.path("fw.img")),
            "--manifest",
            p(&f.path("fw.manifest")),
            "--listen",
            &listen.to_string(),
            "--interface",
            "127.0.0.1",
            "--repair-group",
            &group.to_string(),
            "--rate",
            "5M",
            "--duration",
            "4",
            "--repair",
            "retransmit",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn repair");
    let dev_a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
    let dev_b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
    dev_a
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    // Lone requester: global chunk 13 = block 3 chunk 1 (the short tail), unicast back.
    let start = Instant::now();
    let got = loop {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no unicast repair (is the repair server up?)"
        );
        // R-REP-8: unicast only within 3x what the address sent; a device's
        // earlier datagrams (here one of 600 bytes, dropped as undecodable)
        // earn the credit. Without it the repair would go to the group.
        dev_a.send_to(&[0u8; 600], listen).expect("filler");
        dev_a
            .send_to(&nack(7, image_id, 1, 13, 1), listen)
            .expect("nack");
        if let Ok((n, from)) = dev_a.recv_from(&mut buf) {
            assert_eq!(from, SocketAddr::V4(listen));
            break buf[..n].to_vec();
        }
    };
    let (h, frame) = wire::decode(&got).expect("decodes");
    assert_eq!(h.flags, wire::FLAG_REPAIR);
    assert_eq!(h.session, 7);
    let Frame::Data(d) = frame else {
        panic!("not data: {frame:?}")
    };
    assert_eq!((d.block, d.chunk), (3, 1));
    assert_eq!(d.payload.0, &f.image[3 * 4096 + 1024..]);
    // Two devices, same chunk, within the aggregation window: one group send.
    dev_a
        .send_to(&nack(7, image_id, 1, 2, 1), listen)
        .expect("nack a");
    dev_b
        .send_to(&nack(8, image_id, 2, 2, 1), listen)
        .expect("nack b");
    let start = Instant::now();
    let mut group_frames = Vec::new();
    while start.elapsed() < Duration::from_millis(500) {
        if let Ok((n, _)) = group_rx.recv_from(&mut buf) {
            group_frames.push(buf[..n].to_vec());
        }
    }
    assert_eq!(group_frames.len(), 1, "one group repair for two requesters");
    let (h, frame) = wire::decode(&group_frames[0]).expect("decodes");
    assert_eq!(h.flags, wire::FLAG_REPAIR);
    assert!(matches!(
        frame,
        Frame::Data(Data {
            block: 0,
            chunk: 2,
            ..
        })
    ));
    let status = wait_child(&mut child, Duration::from_secs(10));
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["nacks"].as_u64().expect("nacks") >= 3);
    assert_eq!(v["chunks_sent_group"], 1);
    assert!(v["chunks_sent_unicast"].as_u64().expect("unicast") >= 1);
}

#[test]
fn sigint_stops_send_with_a_clean_summary() {
    let f = Fixture::new(8192);
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 104), unique_port(4));
    let mut child = Command::new(BIN)
        .args([
            "send",
            "--image",
            p(&f.path("fw.img")),
            "--manifest",
            p(&f.path("fw.manifest")),
            "--group",
            &group.to_string(),
            "--interface",
            "127.0.0.1",
            "--rate",
            "1M",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    std::thread::sleep(Duration::from_millis(700));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = wait_child(&mut child, Duration::from_secs(5));
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains("stopped by interrupted") && summary.contains("passes"),
        "{summary}"
    );
}

#[test]
fn status_collects_device_reports() {
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, unique_port(5));
    let child = Command::new(BIN)
        .args([
            "status",
            "--listen",
            &listen.to_string(),
            "--duration",
            "1.5",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn status");
    let dev = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut out = [0u8; 128];
    for i in 0..10u64 {
        let st = wire::Status {
            device_id: 0xab00 + i % 2,
            state: if i % 2 == 0 {
                wire::DeviceState::Receiving
            } else {
                wire::DeviceState::Refused
            },
            blocks_done: 1,
            blocks_total: 4,
            current_version: "1.0",
            reason: if i % 2 == 0 {
                wire::Reason::None
            } else {
                wire::Reason::NotNewer
            },
            write_kbps: 0,
            window_free: wire::WINDOW_FREE_NONE,
        };
        let len = wire::encode(1, wire::ImageId([1; 8]), 0, &Frame::Status(st), &mut out)
            .expect("encode");
        let _ = dev.send_to(&out[..len], listen);
        let _ = dev.send_to(b"garbage", listen);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("status output");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (v, changes) = json_lines(&out.stdout);
    // One change per device: its first report; repeats of a state are not lines.
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1]["old_state"], serde_json::Value::Null);
    assert_eq!(v["states"]["receiving"], 1);
    assert_eq!(v["states"]["refused"], 1);
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[1]["reason"], "not-newer");
    assert!(v["drops"].as_u64().expect("drops") > 0);
}

/// `--json` output: the summary object (the last line) and the device
/// change objects streamed before it.
fn json_lines(stdout: &[u8]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut all: Vec<serde_json::Value> = String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let summary = all.pop().expect("a summary line");
    (summary, all)
}

#[test]
fn a_rate_without_a_unit_is_refused_with_a_hint() {
    let f = Fixture::new(8192);
    let send = firmcast(&[
        "send",
        "--image",
        p(&f.path("fw.img")),
        "--manifest",
        p(&f.path("fw.manifest")),
        "--group",
        "239.255.77.1:7854",
        "--interface",
        "127.0.0.1",
        "--rate",
        "50000",
        "--passes",
        "1",
    ]);
    let repair = firmcast(&[
        "repair",
        "--manifest",
        p(&f.path("fw.manifest")),
        "--image",
        p(&f.path("fw.img")),
        "--listen",
        "127.0.0.1:0",
        "--interface",
        "127.0.0.1",
        "--rate",
        "50000",
        "--duration",
        "1",
    ]);
    for (cmd, out) in [("send", send), ("repair", repair)] {
        let err = text(&out.stderr);
        println!("{cmd} --rate 50000: exit {:?}: {err}", out.status.code());
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("--rate") && err.contains("needs a unit: 50M, 800K, 1G"),
            "{cmd}: {err}"
        );
    }
}

/// `firmcast send --rate 5G` on loopback: faster than the host can send, so
/// the pacer always has credit. SIGINT and SIGTERM stop it within about a
/// second (exit 0 without --until-done, as documented for an interrupt),
/// and so does --duration.
#[test]
fn send_at_a_rate_the_host_cannot_reach_still_stops_on_signals_and_duration() {
    let f = Fixture::new(1 << 20);
    let spawn = |salt: u16, extra: &[&str]| {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 105), unique_port(salt));
        let mut args = vec![
            "send".to_string(),
            "--image".into(),
            p(&f.path("fw.img")).into(),
            "--manifest".into(),
            p(&f.path("fw.manifest")).into(),
            "--group".into(),
            group.to_string(),
            "--interface".into(),
            "127.0.0.1".into(),
            "--rate".into(),
            "5G".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn send")
    };
    for (salt, sig) in [(5u16, "-INT"), (6, "-TERM")] {
        let mut child = spawn(salt, &[]);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "send ended early"
        );
        let t0 = Instant::now();
        let killed = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = wait_child(&mut child, Duration::from_secs(5));
        let took = t0.elapsed();
        let out = child.wait_with_output().expect("output");
        let summary = text(&out.stdout);
        println!("kill {sig} at --rate 5G: stopped in {took:?}, exit {status}: {summary}");
        assert_eq!(status.code(), Some(0), "{}", text(&out.stderr));
        assert!(summary.contains("stopped by interrupted"), "{summary}");
        assert!(took < Duration::from_millis(1200), "{sig}: {took:?}");
    }
    let t0 = Instant::now();
    let mut child = spawn(7, &["--duration", "1"]);
    let status = wait_child(&mut child, Duration::from_secs(6));
    let took = t0.elapsed();
    let out = child.wait_with_output().expect("output");
    let summary = text(&out.stdout);
    println!("--duration 1 at --rate 5G: ended after {took:?}: {summary}");
    assert_eq!(status.code(), Some(0), "{}", text(&out.stderr));
    assert!(summary.contains("stopped by duration"), "{summary}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

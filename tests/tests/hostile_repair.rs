//! Hostile tier, repair server (issue 14 rows C1 and M2): forged NACKs
//! against the real `firmcast repair` and `firmcast send --repair-listen` on
//! loopback. The "victim" is a socket bound on 127.0.0.66: the attacker's
//! NACKs carry its address as their source (sent from it, which is what a
//! forged source address looks like to the server), and it counts what
//! comes back.
//!
//! Run `cargo build --workspace --bins` first.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use firmcast_integration::*;
use proto::manifest::Manifest;
use proto::wire::{self, ChunkRange, Frame, ImageId, Nack, MAX_DATAGRAM};

const MIB: usize = 1 << 20;

/// A NACK for `len` chunks from global chunk `start`, as a device would send it.
fn nack(session: u32, image_id: ImageId, device_id: u64, start: u32, len: u32) -> Vec<u8> {
    let mut ranges = heapless::Vec::new();
    ranges
        .push(ChunkRange { start, len })
        .expect("one range fits");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = wire::encode(
        session,
        image_id,
        0,
        &Frame::Nack(Nack { device_id, ranges }),
        &mut buf,
    )
    .expect("encode NACK");
    buf.truncate(n);
    buf
}

/// The image id and chunk count of `rel`, read from its manifest (the
/// attacker reads the same from any multicast header and Announce).
fn target_of(rel: &Release) -> (ImageId, u32) {
    let signed = std::fs::read(&rel.manifest).expect("read manifest");
    let m = Manifest::decode_unverified(&signed).expect("decode manifest");
    let chunks = (0..m.block_count()).map(|b| m.chunks_in_block(b)).sum();
    (m.image_id, chunks)
}

/// A socket on 127.0.0.66 standing for the victim whose address is forged.
fn victim() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.66:0").expect("bind 127.0.0.66 (loopback)");
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    s
}

/// Bytes arriving at `sock` until `until`.
fn count_until(sock: &UdpSocket, until: Instant) -> u64 {
    let mut buf = vec![0u8; 65_536];
    let mut total = 0u64;
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            total += n as u64;
        }
    }
    total
}

#[test]
fn c1_r_rep_8_a_forged_nack_source_gets_at_most_three_times_its_bytes() {
    let dir = Scratch::new("hostile-c1");
    let net = Net::for_test(61);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", 61);
    let (image_id, chunks) = target_of(&rel);
    let mut repair = start_repair(&dir, &net, &rel, "repair");
    assert!(
        repair.wait_for_output("repairing", Duration::from_secs(10)),
        "repair server never started:\n{}",
        repair.output()
    );
    let to: SocketAddr = net.repair_listen.parse().expect("listen address");
    let sock = victim();
    // 60 NACKs for 256 chunks each (the attack), one device id: a
    // "lone straggler" (R-REP-5), the case that went unicast unverified.
    let mut bytes_in = 0u64;
    let mut bytes_back = 0u64;
    for i in 0..60u32 {
        let start = (i * 256) % chunks.saturating_sub(256).max(1);
        let frame = nack(1, image_id, 0xBAD, start, 256);
        sock.send_to(&frame, to).expect("send NACK");
        bytes_in += frame.len() as u64;
        bytes_back += count_until(&sock, Instant::now() + Duration::from_millis(15));
    }
    bytes_back += count_until(&sock, Instant::now() + Duration::from_secs(1));
    println!(
        "C1 amplification: {bytes_back} bytes to the forged source for {bytes_in} bytes in \
         ({:.2}x)",
        bytes_back as f64 / bytes_in as f64
    );
    assert!(
        bytes_back <= 3 * bytes_in,
        "{bytes_back} bytes to the victim for {bytes_in} bytes of forged NACKs; repair output:\n{}",
        repair.output()
    );
}

/// Run `firmcast send --repair-listen … --passes 1`, with `nacks_per_sec`
/// forged NACKs (from 127.0.0.66, ever new device ids, 256 chunks each)
/// while it runs; returns the seconds its one pass took.
fn one_pass_secs(label: &str, test: u32, nacks_per_sec: u32) -> f64 {
    let dir = Scratch::new(label);
    let net = Net::for_test(test);
    let rel = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", u64::from(test));
    let (image_id, chunks) = target_of(&rel);
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &[
            "--rate",
            "10M",
            "--passes",
            "1",
            "--repair-listen",
            &net.repair_listen,
            "--repair-group",
            &net.repair_group,
        ],
    );
    let to: SocketAddr = net.repair_listen.parse().expect("listen address");
    let sock = victim();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);
    let mut sent = 0u32;
    while sender.wait(Duration::from_millis(1)).is_none() && Instant::now() < deadline {
        let due = (started.elapsed().as_secs_f64() * f64::from(nacks_per_sec)) as u32;
        while sent < due {
            let start = (sent * 256) % chunks.saturating_sub(256).max(1);
            let frame = nack(1, image_id, 0xF000 + u64::from(sent), start, 256);
            let _ = sock.send_to(&frame, to);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let code = sender.expect_exit(Duration::from_secs(5));
    let out = sender.output();
    assert_eq!(code, 0, "sender output:\n{out}");
    // "pass 1 complete at 1.76 s: …"
    let secs = out
        .lines()
        .find_map(|l| {
            let at = l.split("pass 1 complete at ").nth(1)?;
            at.split(' ').next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no pass line in:\n{out}"));
    println!("{label}: one pass {secs:.2} s with {sent} forged NACKs sent");
    secs
}

#[test]
fn m2_r_rep_9_10_forged_nacks_do_not_starve_the_inline_carousel() {
    let alone = one_pass_secs("hostile-m2-alone", 62, 0);
    let attacked = one_pass_secs("hostile-m2-flood", 63, 50);
    let ratio = attacked / alone;
    println!(
        "M2 carousel pass: {alone:.2} s alone, {attacked:.2} s under 50 forged NACKs/s ({ratio:.2}x)"
    );
    assert!(
        ratio <= 2.5,
        "a pass took {attacked:.2} s under the flood against {alone:.2} s alone"
    );
}

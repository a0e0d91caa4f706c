//! R-PACE-1..3 over loopback multicast: a fleet whose flash is far slower
//! than the network finishes close to its flash-limited time, and the
//! carousel, paced to the devices' write rate, puts little more than the
//! image on the wire instead of spinning at the full rate.

use std::process::Command;
use std::time::{Duration, Instant};

use firmcast_integration::*;

const MIB: usize = 1 << 20;
const FLASH: u64 = 8 << 20;
/// 64 KiB blocks (the manifest default) at one per 160 ms: 400 KiB/s, a
/// fast SPI NOR.
const BLOCK_DELAY_MS: u32 = 160;

/// The number before `unit` in `text` ("…, 123 bytes in …").
fn figure_before(text: &str, unit: &str) -> Option<u64> {
    let at = text.rfind(unit)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

#[test]
fn r_pace_2_a_slow_flash_fleet_finishes_near_its_flash_limit_with_little_on_the_wire() {
    let dir = Scratch::new("pace");
    let net = Net::for_test(90);
    let image_len = 4 * MIB;
    let rel = release(&dir, image_len, "acme,rt1", "2.1.0", 90);
    let mut repair = start_repair(&dir, &net, &rel, "repair");
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for i in 0..4 {
        let name = format!("slow{i}");
        let mut spec = AgentSpec::new(&name, &rel.public_key, FLASH);
        spec.block_delay_ms = BLOCK_DELAY_MS;
        let (agent, target) = start_listening_agent(&dir, &net, &spec);
        agents.push(agent);
        targets.push(target);
    }
    let t0 = Instant::now();
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "40M", "--until-done", "4", "--duration", "60"],
    );
    let code = sender.expect_exit(Duration::from_secs(70));
    let wall = t0.elapsed().as_secs_f64();
    let out = sender.output();
    assert_eq!(code, 0, "sender output:\n{out}");
    for a in agents.iter_mut() {
        assert_eq!(a.expect_exit(Duration::from_secs(30)), 10, "{}", a.output());
    }
    for t in &targets {
        assert!(target_holds(t, &rel.bytes), "{} differs", t.display());
    }
    // The repair server's summary names the bytes it sent.
    let killed = Command::new("kill")
        .args(["-INT", &repair.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(
        repair.wait(Duration::from_secs(5)).is_some(),
        "repair did not stop"
    );
    let rlog = repair.output();
    let carousel = figure_before(&out, " bytes in ").expect("sender summary");
    let repairs = figure_before(&rlog, " repair bytes").expect("repair summary");
    let blocks = image_len.div_ceil(64 << 10) as f64;
    let flash_limit = blocks * f64::from(BLOCK_DELAY_MS) / 1000.0;
    let on_wire = (carousel + repairs) as f64 / image_len as f64;
    println!(
        "slow flash: wall {wall:.1} s against a flash limit of {flash_limit:.1} s ({:.2} x); \
         {carousel} carousel + {repairs} repair bytes = {on_wire:.2} x the image\n{}",
        wall / flash_limit,
        out.lines()
            .filter(|l| l.contains("pac") || l.starts_with("sent"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Issue 15's targets are 1.1 x the flash limit and 2 x the image. The
    // bytes on the wire hardly move with the host's load, so that bound is
    // tighter than the target; the wall moves most next to other tests on
    // a 2-core host, so it keeps 3 s for start-up and the last reports.
    assert!(
        wall <= 1.1 * flash_limit + 3.0,
        "wall {wall:.1} s > 1.1 x {flash_limit:.1} s + 3 s\n{out}"
    );
    assert!(
        on_wire <= 1.6,
        "{on_wire:.2} x the image on the wire\n{out}\n{rlog}"
    );
    // The sender names the devices that held the fleet back.
    assert!(out.contains("held back by the flash of"), "{out}");
}

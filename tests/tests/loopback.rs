//! Test tier 3: the real `firmcast` and `firmcast-agent` binaries over real
//! multicast on the loopback interface, with simulated NOR flash in files.
//!
//! Each test uses its own multicast groups and ports (`Net::for_test`), so the
//! tests can run side by side.

use std::time::Duration;

use firmcast_integration::*;

const MIB: usize = 1 << 20;
const FLASH: u64 = 8 << 20;

/// Every agent exits 10 (updated) within two minutes and its flash holds `rel`.
fn expect_all_hold(agents: &mut [Proc], targets: &[std::path::PathBuf], rel: &Release) {
    for a in agents.iter_mut() {
        let code = a.expect_exit(Duration::from_secs(120));
        assert_eq!(
            code,
            10,
            "{} exit code (10: updated); output:\n{}",
            a.name,
            a.output()
        );
    }
    for t in targets {
        assert!(
            target_holds(t, &rel.bytes),
            "{} differs from the image",
            t.display()
        );
    }
}

/// Four agents for `rel` that drop 2%, 2%, 10% and 10% of what they receive;
/// their processes and flash files.
fn start_lossy_agents(
    dir: &Scratch,
    net: &Net,
    rel: &Release,
    label: &str,
) -> (Vec<Proc>, Vec<std::path::PathBuf>) {
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for (i, loss) in [20u32, 20, 100, 100].into_iter().enumerate() {
        let name = format!("{label}{loss}-{i}");
        let mut spec = AgentSpec::new(&name, &rel.public_key, FLASH);
        spec.rx_loss_permille = loss;
        let (config, target) = agent_config(dir, net, &spec);
        let mut agent = start_agent(dir, &name, &config);
        // Joined before the sender starts: it sends at once, and with three
        // passes at most a device that missed the first has no slack.
        assert!(
            agent.wait_for_output("listening", Duration::from_secs(10)),
            "{name} never listened:\n{}",
            agent.output()
        );
        agents.push(agent);
        targets.push(target);
    }
    (agents, targets)
}

#[test]
fn five_agents_receive_a_signed_image_over_loopback_multicast() {
    let dir = Scratch::new("five");
    let net = Net::for_test(1);
    let rel = release(&dir, 4 * MIB + 777, "acme,rt1", "2.1.0", 1);
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for i in 0..5 {
        let name = format!("agent{i}");
        let (config, target) =
            agent_config(&dir, &net, &AgentSpec::new(&name, &rel.public_key, FLASH));
        agents.push(start_agent(&dir, &name, &config));
        targets.push(target);
    }
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "40M", "--until-done", "5", "--duration", "120"],
    );
    for a in agents.iter_mut() {
        let code = a.expect_exit(Duration::from_secs(120));
        assert_eq!(
            code,
            10,
            "{} exit code (10: updated); output:\n{}",
            a.name,
            a.output()
        );
        assert!(
            a.output().contains("update complete"),
            "{} output:\n{}",
            a.name,
            a.output()
        );
    }
    for t in &targets {
        assert!(
            target_holds(t, &rel.bytes),
            "{} differs from the image",
            t.display()
        );
    }
    let code = sender.expect_exit(Duration::from_secs(30));
    assert_eq!(
        code,
        0,
        "sender stops once 5 devices report done; output:\n{}",
        sender.output()
    );
}

#[test]
fn agents_with_2_and_10_percent_receive_loss_finish_through_repair() {
    let dir = Scratch::new("loss");
    let net = Net::for_test(2);
    let rel = release(&dir, 3 * MIB, "acme,rt1", "2.1.0", 2);
    let mut repair = start_repair(&dir, &net, &rel, "repair");
    let (mut agents, targets) = start_lossy_agents(&dir, &net, &rel, "loss");
    // Three passes at most: completion must come from repairs, not from many passes.
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "30M", "--until-done", "4", "--passes", "3"],
    );
    expect_all_hold(&mut agents, &targets, &rel);
    assert_eq!(
        sender.expect_exit(Duration::from_secs(30)),
        0,
        "sender output:\n{}",
        sender.output()
    );
    repair.kill();
    let log = repair.output();
    assert!(!log.is_empty(), "repair server said nothing");
}

#[test]
fn an_agent_killed_mid_update_resumes_from_what_is_on_flash() {
    let dir = Scratch::new("resume");
    let net = Net::for_test(3);
    let rel = release(&dir, 4 * MIB, "acme,rt1", "2.1.0", 3);
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let mut spec = AgentSpec::new("slow", &rel.public_key, FLASH);
    spec.block_delay_ms = 60; // 64 blocks: about 4 s of writing
    let (config, target) = agent_config(&dir, &net, &spec);
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--until-done", "1", "--duration", "120"],
    );
    let mut first = start_agent(&dir, "slow-run1", &config);
    assert!(
        first.wait_for_output("resume:", Duration::from_secs(30)),
        "first run never started receiving:\n{}",
        first.output()
    );
    std::thread::sleep(Duration::from_millis(1500));
    first.kill(); // SIGKILL: like pulling the plug, mid-write
    assert!(
        !target_holds(&target, &rel.bytes),
        "killed too late: the update had already finished"
    );

    let mut second = start_agent(&dir, "slow-run2", &config);
    let code = second.expect_exit(Duration::from_secs(120));
    let log = second.output();
    assert_eq!(code, 10, "second run output:\n{log}");
    let (resumed, total) =
        resume_count(&log).unwrap_or_else(|| panic!("no resume line in:\n{log}"));
    assert_eq!(total, 64);
    assert!(
        resumed > 0,
        "the second run found nothing already written:\n{log}"
    );
    assert!(
        resumed < total,
        "the first run was not actually interrupted:\n{log}"
    );
    assert!(target_holds(&target, &rel.bytes));
    assert_eq!(sender.expect_exit(Duration::from_secs(30)), 0);
}

#[test]
fn a_manifest_signed_with_another_key_is_refused_and_nothing_is_written() {
    let dir = Scratch::new("badsig");
    let net = Net::for_test(4);
    let rel = release(&dir, MIB, "acme,rt1", "2.1.0", 4);
    let other_keys = dir.join("other-keys");
    firmcast_ok(&["keygen", "--out", path_str(&other_keys)]);
    let other_pub = other_keys.join("firmcast.pub");
    let mut spec = AgentSpec::new("badsig", &other_pub, FLASH);
    spec.boot_window_secs = 4;
    let (config, target) = agent_config(&dir, &net, &spec);
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "30"],
    );
    let mut agent = start_agent(&dir, "badsig", &config);
    let code = agent.expect_exit(Duration::from_secs(30));
    let log = agent.output();
    assert!(
        log.contains("bad-signature"),
        "no clear refusal line:\n{log}"
    );
    assert_eq!(
        code, 3,
        "a security refusal ends the boot window with exit 3:\n{log}"
    );
    assert!(
        target_untouched(&target),
        "flash was written despite a bad signature"
    );
}

#[test]
fn an_image_for_another_board_is_refused_and_nothing_is_written() {
    let dir = Scratch::new("board");
    let net = Net::for_test(5);
    let rel = release(&dir, MIB, "acme,rt2", "2.1.0", 5);
    let mut spec = AgentSpec::new("board", &rel.public_key, FLASH);
    spec.boot_window_secs = 4;
    let (config, target) = agent_config(&dir, &net, &spec);
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "30"],
    );
    let mut agent = start_agent(&dir, "board", &config);
    let code = agent.expect_exit(Duration::from_secs(30));
    let log = agent.output();
    assert!(log.contains("wrong-board"), "no clear refusal line:\n{log}");
    assert!(
        log.contains("acme,rt2"),
        "the log names the image's board:\n{log}"
    );
    assert_eq!(code, 0, "nothing for this board: the boot goes on:\n{log}");
    assert!(
        target_untouched(&target),
        "flash was written for another board"
    );
}

#[test]
fn an_image_not_newer_than_the_running_version_is_refused_at_once() {
    let dir = Scratch::new("older");
    let net = Net::for_test(6);
    let rel = release(&dir, MIB, "acme,rt1", "2.1.0", 6);
    let mut spec = AgentSpec::new("older", &rel.public_key, FLASH);
    spec.current_version = "2.1.0";
    spec.boot_window_secs = 20;
    let (config, target) = agent_config(&dir, &net, &spec);
    let _sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &["--rate", "20M", "--duration", "30"],
    );
    let mut agent = start_agent(&dir, "older", &config);
    let started = std::time::Instant::now();
    let code = agent.expect_exit(Duration::from_secs(30));
    let log = agent.output();
    assert!(log.contains("not-newer"), "no clear refusal line:\n{log}");
    assert_eq!(code, 0, "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not exit at once: {:?}",
        started.elapsed()
    );
    assert!(target_untouched(&target));
}

#[test]
fn send_refuses_an_image_that_does_not_match_its_manifest() {
    let dir = Scratch::new("mismatch");
    let net = Net::for_test(7);
    let rel = release(&dir, MIB, "acme,rt1", "2.1.0", 7);
    let mut tampered = rel.bytes.clone();
    tampered[5 * 65536 + 3] ^= 1;
    let bad_image = dir.join("tampered.bin");
    std::fs::write(&bad_image, &tampered).expect("write");
    let out = std::process::Command::new(bin("firmcast"))
        .args([
            "send",
            "--image",
            path_str(&bad_image),
            "--manifest",
            path_str(&rel.manifest),
        ])
        .args([
            "--group",
            &net.group,
            "--interface",
            "127.0.0.1",
            "--rate",
            "10M",
            "--passes",
            "1",
        ])
        .output()
        .expect("run firmcast send");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "send accepted a tampered image:\n{text}"
    );
    assert!(
        text.contains("block 5"),
        "the error names the first mismatching block:\n{text}"
    );
}

#[test]
fn datagrams_of_another_session_never_mix_into_the_image() {
    let dir = Scratch::new("sessions");
    let net = Net::for_test(8);
    let a = release(&dir, 2 * MIB, "acme,rt1", "2.1.0", 8);
    let b = release(&dir, 2 * MIB, "acme,rt1", "2.2.0", 9);
    let _repair = start_repair(&dir, &net, &a, "repair");
    let (config, target) = agent_config(&dir, &net, &AgentSpec::new("mixed", &a.public_key, FLASH));
    let _sa = start_sender(
        &dir,
        &net,
        &a,
        "sender-a",
        &["--rate", "15M", "--duration", "60"],
    );
    let _sb = start_sender(
        &dir,
        &net,
        &b,
        "sender-b",
        &["--rate", "15M", "--duration", "60"],
    );
    let mut agent = start_agent(&dir, "mixed", &config);
    let code = agent.expect_exit(Duration::from_secs(90));
    let log = agent.output();
    assert_eq!(code, 10, "{log}");
    assert!(
        log.contains("ignoring datagrams of session"),
        "the foreign session is logged:\n{log}"
    );
    assert!(
        target_holds(&target, &a.bytes) || target_holds(&target, &b.bytes),
        "the target holds neither image whole"
    );
}

/// `firmcast send --repair-listen --repair parity`: one process sends the
/// carousel and the parity repairs (R-REP-7). Agents losing 2% and 10% finish
/// (`--passes 3` only bounds the run: the last device's Done may come just
/// after the second pass ends), and carousel plus repairs together keep to
/// the one `--rate` (a separate repair server would add its repairs on top).
#[test]
fn one_process_sends_and_repairs_with_parity_within_one_rate() {
    let dir = Scratch::new("inline");
    let net = Net::for_test(9);
    let rel = release(&dir, 3 * MIB, "acme,rt1", "2.1.0", 9);
    let (mut agents, targets) = start_lossy_agents(&dir, &net, &rel, "inline");
    let rate_bps = 20_000_000u64;
    let mut sender = start_sender(
        &dir,
        &net,
        &rel,
        "sender",
        &[
            "--rate",
            "20M",
            "--until-done",
            "4",
            "--passes",
            "3",
            "--repair-listen",
            &net.repair_listen,
            "--repair-group",
            &net.repair_group,
            "--repair",
            "parity",
            "--json",
        ],
    );
    expect_all_hold(&mut agents, &targets, &rel);
    let code = sender.expect_exit(Duration::from_secs(30));
    let out = sender.output();
    assert_eq!(code, 0, "sender:\n{out}");
    // The summary is the last JSON line (device changes come before it).
    let json = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary:\n{out}"));
    let field = |key: &str| -> f64 {
        let pat = format!("\"{key}\":");
        let at = json.find(&pat).map(|i| i + pat.len());
        at.and_then(|i| {
            let v: String = json[i..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            v.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {key} in {json}"))
    };
    let carousel = field("bytes");
    let repairs = field("bytes_sent");
    let parity = field("parity_sent");
    let datagrams = field("datagrams") + parity + field("chunks_sent_unicast");
    let secs = field("seconds");
    assert!(parity > 0.0, "no parity was sent:\n{out}");
    eprintln!(
        "inline repair: carousel {carousel} B, repairs {repairs} B ({parity} parity), {secs:.2} s, {:.2} of 20 Mbit/s",
        (carousel + repairs + 28.0 * datagrams) * 8.0 / secs / rate_bps as f64
    );
    // What the pacers charge: payload plus 28 bytes of IP/UDP per datagram.
    let sent_bits = (carousel + repairs + 28.0 * datagrams) * 8.0;
    let limit = rate_bps as f64 * secs * 1.03;
    assert!(
        sent_bits <= limit,
        "carousel {carousel} B + repairs {repairs} B in {secs} s exceed 20 Mbit/s:\n{out}"
    );
    assert!(
        repairs / carousel > 0.03,
        "too few repairs ({repairs} B) for the test to tell a shared rate from two:\n{out}"
    );
}

/// The README's first command ends in `firmcast demo`: it must update its
/// devices with the product's own defaults (a sender whose arguments the CLI
/// refuses once left every device listening, and the demo still exited 1
/// only after its 30 s boot window).
#[test]
fn the_readme_demo_updates_every_device() {
    let net = Net::for_test(93);
    let started = std::time::Instant::now();
    let out = std::process::Command::new(bin("firmcast"))
        .args(["demo", "--devices", "2", "--size", "1", "--json"])
        .args(["--group", &net.group, "--repair-group", &net.repair_group])
        .args(["--repair-listen", &net.repair_listen])
        .output()
        .expect("run firmcast demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "firmcast demo --devices 2 --size 1: exit {:?} after {:.2} s",
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("\"all_identical\":true"),
        "{stdout}\n{stderr}"
    );
}

//! Test tier 3b for issue 18: the whole chain over IPv6 on one machine, in
//! the namespace `firmcast demo --ipv6` makes (`firmcast_integration::lan6`:
//! loopback carries no IPv6 multicast; no root needed). Each test has a
//! namespace of its own, so ports are fixed.
//!
//! ```text
//!  fd77::1   firmcast send, firmcast repair, firmcast status   (ASM test)
//!  fd77::1   firmcast send --repair-listen, source A            (SSM test)
//!  fd77::2   firmcast send --repair-listen, source B            (SSM test)
//!  fd77::1N  one address per agent, so the tools tell them apart
//! ```

use std::time::{Duration, Instant};

use firmcast_integration::lan6::{self, Lan6};
use firmcast_integration::*;

const MIB: usize = 1 << 20;
const FLASH: u64 = 4 << 20;

/// Start an agent for `spec` on `net` from `ip` inside `lan`; waits until it
/// listens.
fn agent(lan: &Lan6, dir: &Scratch, net: &Net, spec: &AgentSpec<'_>, ip: &str) -> Proc {
    let (config, _) = agent_config_on(dir, net, spec, ip);
    let mut p = lan6::start(
        lan,
        dir,
        spec.name,
        &bin("firmcast-agent"),
        &["--config", path_str(&config), "--foreground", "--verbose"],
    );
    assert!(
        p.wait_for_output("listening", Duration::from_secs(10)),
        "{} never listened:\n{}",
        spec.name,
        p.output()
    );
    p
}

/// Wait for `agent` to exit 10 (updated) holding `rel`'s image.
fn expect_updated(agent: &mut Proc, dir: &Scratch, rel: &Release) -> String {
    let code = agent.expect_exit(Duration::from_secs(90));
    let out = agent.output();
    assert_eq!(code, 10, "{} (10: updated):\n{out}", agent.name);
    assert!(
        target_holds(&dir.join(&format!("{}.flash", agent.name)), &rel.bytes),
        "{} does not hold its image:\n{out}",
        agent.name
    );
    out
}

/// The device addresses (`"addr"`) in a tool's `--json` lines.
fn addrs_seen(json_lines: &str) -> Vec<String> {
    let mut seen: Vec<String> = json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["addr"].as_str().map(str::to_string))
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// The number at JSON `pointer` (`/repair/nacks`) in the last `--json` line
/// holding it (the summary).
fn count_in(text: &str, pointer: &str) -> u64 {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.pointer(pointer).and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

/// R-NET-3: the any-source chain over IPv6. Site-local groups
/// `[ff15::77]` (data) and `[ff15::78]` (repairs), a separate `firmcast
/// repair` on `[fd77::1]`, two agents at 2% receive loss sending it NACKs
/// and Status over IPv6 unicast, and a third, lossless one reporting to a
/// `firmcast status` (its only job: Status over IPv6). All three end with the
/// image byte for byte; the repair server and the status tool saw the
/// devices at their fd77:: addresses.
#[test]
fn ipv6_asm_fleet_with_separate_repair_and_status() {
    let devices = [lan6::addr(0x11), lan6::addr(0x12), lan6::addr(0x13)];
    let mut addrs = vec![lan6::addr(1)];
    addrs.extend(devices);
    let Some(lan) = lan6::up(
        "ipv6::ipv6_asm_fleet_with_separate_repair_and_status",
        &addrs,
    ) else {
        return;
    };
    let started = Instant::now();
    let dir = Scratch::new("ipv6-asm");
    let rel = release(&dir, MIB, "acme,rt1", "2.0.0", 601);
    let net = Net {
        group: "[ff15::77]:7854".into(),
        repair_group: "[ff15::78]:7855".into(),
        repair_listen: "[fd77::1]:7856".into(),
    };
    let status_at = "[fd77::1]:7857";
    let firmcast = bin("firmcast");
    let mut args = repair_args(&net, &rel, "fd77::1");
    args.extend_from_slice(&["--group", &net.group, "--duration", "60", "--json"]);
    let mut repair = lan6::start(&lan, &dir, "repair", &firmcast, &args);
    let expected = dir.join("expected.txt");
    std::fs::write(&expected, format!("{}\n", devices[2])).expect("devices file");
    let mut status = lan6::start(
        &lan,
        &dir,
        "status",
        &firmcast,
        &[
            "status",
            "--listen",
            status_at,
            "--devices",
            path_str(&expected),
            "--duration",
            "60",
            "--json",
        ],
    );
    for (p, ready) in [
        (&mut repair, "repairing"),
        (&mut status, "listening for device status"),
    ] {
        assert!(
            p.wait_for_output(ready, Duration::from_secs(10)),
            "{} did not start:\n{}",
            p.name,
            p.output()
        );
    }
    let names = ["v6-lossy-0", "v6-lossy-1", "v6-status"];
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut spec = AgentSpec::new(name, &rel.public_key, FLASH);
        let mut to = net.clone();
        if i < 2 {
            spec.rx_loss_permille = 20;
        } else {
            to.repair_listen = status_at.into();
        }
        agents.push(agent(&lan, &dir, &to, &spec, &devices[i].to_string()));
    }
    let mut args = send_args(&rel, &net.group, "fd77::1");
    args.extend_from_slice(&[
        "--repair-group",
        &net.repair_group,
        "--rate",
        "20M",
        "--duration",
        "60",
    ]);
    let mut sender = lan6::start(&lan, &dir, "send", &firmcast, &args);
    for a in &mut agents {
        let out = expect_updated(a, &dir, &rel);
        assert!(!out.contains("refused"), "{}:\n{out}", a.name);
    }
    let wall = started.elapsed();
    for p in [&mut sender, &mut repair] {
        assert_eq!(
            p.terminate(Duration::from_secs(10)),
            0,
            "{}:\n{}",
            p.name,
            p.output()
        );
    }
    let status_code = status.expect_exit(Duration::from_secs(20));
    let status_out = status.output();
    assert_eq!(
        status_code, 0,
        "status --devices (0: every listed device succeeded):\n{status_out}"
    );
    let repair_out = repair.output();
    let nacks = count_in(&repair_out, "/nacks");
    let repair_bytes = count_in(&repair_out, "/bytes_sent");
    assert!(
        nacks > 0 && repair_bytes > 0,
        "no NACK answered over IPv6:\n{repair_out}"
    );
    let repair_saw = addrs_seen(&repair_out);
    let status_saw = addrs_seen(&status_out);
    for (tool, saw, want) in [
        ("repair", &repair_saw, &devices[..2]),
        ("status", &status_saw, &devices[2..]),
    ] {
        for d in want {
            assert!(
                saw.iter().any(|a| a.starts_with(&format!("[{d}]:"))),
                "{tool} saw {saw:?}, not [{d}]"
            );
        }
    }
    println!(
        "IPv6 ASM [ff15::77] from fd77::1: 3 agents updated 1 MiB byte for byte in {:.1} s; the repair server answered {nacks} NACKs with {repair_bytes} bytes, saw {repair_saw:?}; status saw {status_saw:?}",
        wall.as_secs_f64()
    );
}

/// `addr` as /proc/net/mcfilter6 writes it (32 hex digits).
fn hex6(addr: std::net::Ipv6Addr) -> String {
    addr.octets().iter().map(|b| format!("{b:02x}")).collect()
}

/// R-NET-1/2/5 over IPv6: two senders on one source-specific group
/// `[ff3e::8000:1]`, from fd77::1 and fd77::2, each with its own image and
/// its own inline repair server (repair group `[ff3e::8000:2]`, joined from
/// the repair server's address). The MLDv2 (S,G) joins are read from the
/// namespace's /proc/net/mcfilter6, not assumed. Two agents joined for
/// fd77::1 (2% receive loss: NACKs and repairs flow over IPv6) end with image
/// A, the one joined for fd77::2 with image B, and one joined for fd77::3,
/// where nobody sends, hears nothing and says so when its boot window ends.
#[test]
fn ipv6_ssm_agents_hear_only_the_source_they_joined() {
    let (src_a, src_b, src_none) = (lan6::addr(1), lan6::addr(2), lan6::addr(3));
    let devices = [0x21, 0x22, 0x23, 0x24].map(lan6::addr);
    let mut addrs = vec![src_a, src_b];
    addrs.extend(devices);
    let Some(lan) = lan6::up(
        "ipv6::ipv6_ssm_agents_hear_only_the_source_they_joined",
        &addrs,
    ) else {
        return;
    };
    let dir = Scratch::new("ipv6-ssm");
    let rel_a = release(&dir, MIB, "acme,rt1", "2.0.0", 611);
    let rel_b = release(&dir, MIB, "acme,rt1", "2.0.1", 612);
    let net = |src: std::net::Ipv6Addr| Net {
        group: "[ff3e::8000:1]:7854".into(),
        repair_group: "[ff3e::8000:2]:7855".into(),
        repair_listen: format!("[{src}]:7856"),
    };
    let plan = [
        ("v6-ssm-a0", src_a, 20, &rel_a),
        ("v6-ssm-a1", src_a, 20, &rel_a),
        ("v6-ssm-b", src_b, 0, &rel_b),
        ("v6-ssm-none", src_none, 0, &rel_a),
    ];
    let mut agents = Vec::new();
    for (i, (name, src, loss, rel)) in plan.iter().enumerate() {
        let source = src.to_string();
        let mut spec = AgentSpec::new(name, &rel.public_key, FLASH);
        spec.rx_loss_permille = *loss;
        spec.source = Some(&source);
        if *src == src_none {
            spec.boot_window_secs = 4;
        }
        agents.push(agent(
            &lan,
            &dir,
            &net(*src),
            &spec,
            &devices[i].to_string(),
        ));
    }
    let filters = lan6::read(&lan, "/proc/net/mcfilter6");
    let group = hex6("ff3e::8000:1".parse().expect("group"));
    let joined: Vec<String> = [src_a, src_b, src_none]
        .iter()
        .filter(|s| {
            filters
                .lines()
                .any(|l| l.contains(&group) && l.contains(&hex6(**s)))
        })
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        joined.len(),
        3,
        "the (S,G) joins of ff3e::8000:1 on {}:\n{filters}",
        lan6::LINK
    );

    let started = Instant::now();
    let firmcast = bin("firmcast");
    let sender = |name: &str, rel: &Release, src: std::net::Ipv6Addr, devices: &str| {
        let n = net(src);
        let iface = src.to_string();
        let mut args = send_args(rel, &n.group, &iface);
        args.extend_from_slice(&[
            "--repair-listen",
            &n.repair_listen,
            "--repair-group",
            &n.repair_group,
            "--rate",
            "20M",
            "--until-done",
            devices,
            "--duration",
            "60",
            "--json",
        ]);
        lan6::start(&lan, &dir, name, &firmcast, &args)
    };
    let mut send_a = sender("send-a", &rel_a, src_a, "2");
    let mut send_b = sender("send-b", &rel_b, src_b, "1");
    let mut none = agents.pop().expect("the agent joined for fd77::3");
    for (agent, (_, _, _, rel)) in agents.iter_mut().zip(plan) {
        let out = expect_updated(agent, &dir, rel);
        assert!(!out.contains("refused"), "{}:\n{out}", agent.name);
    }
    let wall = started.elapsed();
    let mut seen = Vec::new();
    for (s, want) in [(&mut send_a, &devices[..2]), (&mut send_b, &devices[2..3])] {
        assert_eq!(
            s.expect_exit(Duration::from_secs(30)),
            0,
            "{}:\n{}",
            s.name,
            s.output()
        );
        let out = s.output();
        let saw = addrs_seen(&out);
        for d in want {
            assert!(
                saw.iter().any(|a| a.starts_with(&format!("[{d}]:"))),
                "{} saw {saw:?}, not [{d}]",
                s.name
            );
        }
        seen.push(format!("{} saw {saw:?}", s.name));
    }
    let nacks = count_in(&send_a.output(), "/repair/nacks");
    assert!(
        nacks > 0,
        "no NACK reached send-a over IPv6:\n{}",
        send_a.output()
    );
    let code = none.expect_exit(Duration::from_secs(30));
    let out = none.output();
    assert_eq!(
        code, 0,
        "{} (0: no announce in the boot window):\n{out}",
        none.name
    );
    let line = out
        .lines()
        .find(|l| l.contains("nothing received on [ff3e::8000:1]:7854"))
        .unwrap_or_else(|| panic!("no R-NET-5 line:\n{out}"));
    assert!(line.contains("(source fd77::3)"), "{line}");
    assert!(
        target_untouched(&dir.join("v6-ssm-none.flash")),
        "v6-ssm-none wrote flash"
    );
    println!(
        "IPv6 SSM [ff3e::8000:1]: (S,G) joins for {joined:?} in /proc/net/mcfilter6; two sources, each agent installed its own source's 1 MiB image in {:.1} s ({nacks} NACKs answered by send-a); {}; the agent joined for fd77::3: {line}",
        wall.as_secs_f64(),
        seen.join(", ")
    );
}

/// `firmcast demo --ipv6`, as the README shows it, with 2% receive loss;
/// then with source-specific groups (the devices join (S,G) from the sender
/// and the repair server). Exit 0 and every device byte for byte.
#[test]
fn the_readme_demo_over_ipv6_updates_every_device() {
    let ssm = [
        "--group",
        "[ff3e::8000:77]:7854",
        "--repair-group",
        "[ff3e::8000:78]:7855",
    ];
    for (what, groups) in [
        ("ASM [ff15::77]", &[][..]),
        ("SSM [ff3e::8000:77]", &ssm[..]),
    ] {
        let started = Instant::now();
        let out = std::process::Command::new(bin("firmcast"))
            .args([
                "demo",
                "--ipv6",
                "--devices",
                "2",
                "--size",
                "1",
                "--loss",
                "20",
            ])
            .args(groups)
            .arg("--json")
            .output()
            .expect("run firmcast demo --ipv6");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("refuses user namespaces") {
            firmcast_integration::netns::say(&format!(
                "NOT RUN: ipv6::the_readme_demo_over_ipv6_updates_every_device: {stderr}"
            ));
            return;
        }
        assert_eq!(out.status.code(), Some(0), "{what}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("\"all_identical\":true"),
            "{what}:\n{stdout}\n{stderr}"
        );
        println!(
            "firmcast demo --ipv6 --devices 2 --size 1 --loss 20 ({what}): exit 0 after {:.2} s, repair {} bytes",
            started.elapsed().as_secs_f64(),
            count_in(&stdout, "/repair_bytes")
        );
    }
}

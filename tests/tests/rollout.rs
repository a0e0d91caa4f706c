//! Operating a rollout (issue 16): one sender with its inline repair server,
//! nine agents that each end differently. Every outcome reaches the sender
//! before the agent exits (R-STAT-7, R-STAT-8), stays in the table
//! (R-FLEET-4), and `--until-done all` ends once every listed device is in a
//! final state (R-FLEET-5), exit 1 with a summary naming the others and why.

use std::fs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use firmcast_integration::*;
use proto::wire::{DeviceState, ImageId, Reason, Status};

const FLASH: u64 = 1 << 20;
const IMAGE: usize = 256 * 1024;

/// `firmcast send` at 20 Mbit/s that is also the repair server, so every
/// device's reports reach it (R-STAT-8), with `extra` arguments.
fn start_inline_sender(dir: &Scratch, net: &Net, rel: &Release, extra: &[&str]) -> Proc {
    let mut args = vec!["--rate", "20M", "--repair-listen", &net.repair_listen];
    args.extend(["--repair-group", &net.repair_group]);
    args.extend_from_slice(extra);
    start_sender(dir, net, rel, "sender", &args)
}

/// One agent: name, the state and reason it must end in, config line
/// edits (line prefix, new line), and config text to add.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(String, String)>,
    String,
);

/// Replace the lines of a config that start with an `edits` prefix.
fn edit_config(config: &std::path::Path, edits: &[(&str, &str)]) {
    let mut text = fs::read_to_string(config).expect("read config");
    for (old, new) in edits {
        let line = text
            .lines()
            .find(|l| l.starts_with(old))
            .unwrap_or_else(|| panic!("no `{old}` in {text}"))
            .to_string();
        text = text.replace(&line, new);
    }
    fs::write(config, text).expect("write config");
}

#[test]
fn r_stat_7_a_mixed_rollout_reports_every_outcome_and_ends_in_bounded_time() {
    let dir = Scratch::new("rollout");
    let net = Net::for_test(70);
    let rel = release(&dir, IMAGE, "acme,rt1", "2.0.0", 70);
    let other = Scratch::new("rollout-otherkey");
    let other_rel = release(&other, 4096, "acme,rt1", "2.0.0", 71);
    let fail = dir.join("fail.sh");
    fs::write(&fail, "#!/bin/sh\necho 'board says no' >&2\nexit 3\n").expect("script");
    set_mode(&fail, 0o755);
    let open_missing = dir.join("noopen-missing.img");

    // (name, expected state, expected reason, config edits, extra config text)
    let cases: Vec<Case> = vec![
        ("ok-a", "done", "none", vec![], String::new()),
        ("ok-b", "done", "none", vec![], String::new()),
        (
            "board",
            "refused",
            "wrong-board",
            vec![("board".into(), "board = \"acme,cam9\"".into())],
            String::new(),
        ),
        (
            "key",
            "refused",
            "bad-signature",
            vec![(
                "public_key".into(),
                format!("public_key = \"{}\"", path_str(&other_rel.public_key)),
            )],
            String::new(),
        ),
        (
            "version",
            "refused",
            "not-newer",
            vec![(
                "current_version".into(),
                "current_version = \"9.0.0\"".into(),
            )],
            String::new(),
        ),
        (
            "toolarge",
            "refused",
            "too-large",
            vec![("target_size".into(), "target_size = 65536".into())],
            String::new(),
        ),
        (
            "noopen",
            "failed",
            "target-open",
            vec![
                (
                    "target =".into(),
                    format!("target = \"file:{}\"", path_str(&open_missing)),
                ),
                ("target_size".into(), String::new()),
            ],
            String::new(),
        ),
        (
            "stall",
            "stalled",
            "none",
            // 99% receive loss: 5 s bring fewer datagrams than the image
            // has, so the run deadline (R-RUN-2) passes before the end.
            vec![],
            "run_deadline_secs = 5\n\n[test]\nrx_loss_permille = 990\n".into(),
        ),
        (
            "activate",
            "failed",
            "activation-failed",
            vec![],
            format!(
                "activation = \"command\"\n\n[command]\nrun = [\"{}\"]\n",
                path_str(&fail)
            ),
        ),
    ];

    let mut agents = Vec::new();
    let mut ids = String::from("# the rollout's devices\n");
    for (i, (name, _, _, edits, extra)) in cases.iter().enumerate() {
        let mut spec = AgentSpec::new(name, &rel.public_key, FLASH);
        spec.boot_window_secs = 8;
        let (config, _) = agent_config(&dir, &net, &spec);
        let id = 0xf00 + i as u64;
        let edits: Vec<(&str, &str)> = edits
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // Top-level keys go before any [table] the extra text opens.
        edit_config(&config, &edits);
        let text = fs::read_to_string(&config).expect("read");
        let (top, tables) = match extra.find('[') {
            Some(at) => (&extra[..at], &extra[at..]),
            None => (extra.as_str(), ""),
        };
        let merged = match text.find("\n[") {
            Some(at) => format!(
                "{}\ndevice_id = {id}\n{top}{}\n{tables}",
                &text[..at],
                &text[at..]
            ),
            None => format!("{text}device_id = {id}\n{top}{tables}"),
        };
        fs::write(&config, merged).expect("write");
        ids.push_str(&format!("{id:016x} {name}\n"));
        let mut agent = start_agent(&dir, name, &config);
        assert!(
            agent.wait_for_output("listening", Duration::from_secs(10)),
            "{name} never listened:\n{}",
            agent.output()
        );
        agents.push(agent);
    }
    let devices = dir.join("devices.txt");
    fs::write(&devices, &ids).expect("devices file");

    let started = Instant::now();
    let mut sender = start_inline_sender(
        &dir,
        &net,
        &rel,
        &[
            "--devices",
            path_str(&devices),
            "--until-done",
            "all",
            "--duration",
            "45",
            "--json",
        ],
    );
    let code = sender.expect_exit(Duration::from_secs(60));
    let took = started.elapsed();
    let out = sender.output();
    let mut codes = Vec::new();
    for a in agents.iter_mut() {
        codes.push((a.name.clone(), a.expect_exit(Duration::from_secs(30))));
    }
    println!("agent exit codes: {codes:?}");
    // The closing table (stderr) and the summary, as the operator saw them.
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("device "))
        .take_while(|l| !l.starts_with('{'))
        .collect();
    println!(
        "sender ended after {:.1} s with exit {code}; its table:\n{}",
        took.as_secs_f64(),
        table.join("\n")
    );
    assert_eq!(code, 1, "not every device succeeded:\n{out}");
    assert!(
        out.contains("stopped by every awaited device final"),
        "{out}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}:\n{out}");

    // Each device's outcome is in the JSON-lines stream and the summary.
    let summary = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    for (i, (name, state, reason, _, _)) in cases.iter().enumerate() {
        let id = format!("{:016x}", 0xf00 + i as u64);
        let line = out
            .lines()
            .rev()
            .filter(|l| l.starts_with("{\"") && l.contains("\"event\":\"change\""))
            .find(|l| l.contains(&format!("\"device_id\":\"{id}\"")))
            .unwrap_or_else(|| panic!("{name}: no JSON line for {id}:\n{out}"));
        assert!(
            line.contains(&format!("\"state\":\"{state}\""))
                && line.contains(&format!("\"reason\":\"{reason}\"")),
            "{name}: expected {state}/{reason}, last change: {line}"
        );
        let row = table
            .iter()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{name}: no row"));
        assert!(row.contains(state), "{name}: {row}");
        if *state != "done" {
            assert!(
                summary.contains(&format!("{id} ")),
                "{name} not named in the summary's not_done: {summary}"
            );
        }
    }
    // Agent exit codes agree with what they reported.
    let expect_codes = [10, 10, 0, 3, 0, 4, 4, 5, 6];
    let got: Vec<i32> = codes.iter().map(|c| c.1).collect();
    assert_eq!(got, expect_codes, "{codes:?}");
}

/// A Status datagram from device `id` in `state`.
fn status(id: u64, state: DeviceState, reason: Reason) -> Vec<u8> {
    let st = Status {
        blocks_done: 4,
        blocks_total: 4,
        reason,
        ..status_report(id, state, "1.0.0")
    };
    status_datagram(ImageId([7; 8]), st)
}

#[test]
fn status_with_devices_stops_once_all_are_final_and_exits_1_unless_all_succeeded() {
    let dir = Scratch::new("status-devices");
    let devices = dir.join("devices.txt");
    fs::write(&devices, "00000000000000d1\n0xd2\n0xd3\n").expect("devices file");
    let net = Net::for_test(71);
    let listen = net.repair_listen.clone();
    let mut results = Vec::new();
    for (round, d3) in [(0, DeviceState::Stalled), (1, DeviceState::Activated)] {
        let mut st = Proc::start(
            &format!("status{round}"),
            &bin("firmcast"),
            &[
                "status",
                "--listen",
                &listen,
                "--devices",
                path_str(&devices),
                "--duration",
                "20",
                "--json",
            ],
            dir.path(),
        );
        assert!(st.wait_for_output("listening", Duration::from_secs(10)));
        let started = Instant::now();
        let dev = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // R-FLEET-4: the `listening` after `done` does not undo it.
        for (id, state) in [
            (0xd1, DeviceState::Done),
            (0xd1, DeviceState::Listening),
            (0xd2, DeviceState::Done),
        ] {
            dev.send_to(&status(id, state, Reason::None), &listen)
                .expect("send");
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            st.wait(Duration::ZERO),
            None,
            "d3 never reported: still waiting"
        );
        dev.send_to(&status(0xd3, d3, Reason::None), &listen)
            .expect("send");
        let code = st.expect_exit(Duration::from_secs(10));
        let took = started.elapsed();
        let out = st.output();
        assert!(took < Duration::from_secs(5), "{took:?}:\n{out}");
        let summary = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
        assert!(summary.contains("\"never_reported\":[]"), "{summary}");
        println!(
            "round {round}: d3 {} -> exit {code} after {:.2} s",
            d3.as_str(),
            took.as_secs_f64()
        );
        results.push(code);
    }
    assert_eq!(results, [1, 0]);
}

#[test]
fn abort_if_failed_stops_the_carousel_at_the_first_failed_activation() {
    let dir = Scratch::new("rollout-abort");
    let net = Net::for_test(72);
    let rel = release(&dir, IMAGE, "acme,rt1", "2.0.0", 72);
    let fail = dir.join("fail.sh");
    fs::write(&fail, "#!/bin/sh\nexit 1\n").expect("script");
    set_mode(&fail, 0o755);
    let spec = AgentSpec::new("act", &rel.public_key, FLASH);
    let (config, _) = agent_config(&dir, &net, &spec);
    let mut text = fs::read_to_string(&config).expect("read");
    text.push_str(&format!(
        "activation = \"command\"\n\n[command]\nrun = [\"{}\"]\n",
        path_str(&fail)
    ));
    fs::write(&config, text).expect("write");
    let mut agent = start_agent(&dir, "act", &config);
    assert!(agent.wait_for_output("listening", Duration::from_secs(10)));
    let started = Instant::now();
    // Two devices awaited, one exists: only the abort can end this early.
    let mut sender = start_inline_sender(
        &dir,
        &net,
        &rel,
        &[
            "--until-done",
            "2",
            "--abort-if-failed",
            "1",
            "--duration",
            "30",
        ],
    );
    let code = sender.expect_exit(Duration::from_secs(40));
    let took = started.elapsed();
    let out = sender.output();
    assert_eq!(agent.expect_exit(Duration::from_secs(20)), 6);
    println!(
        "--abort-if-failed 1: exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stopped by abort-if-failed"), "{out}");
    assert!(out.contains("failed activation-failed"), "{out}");
    assert!(took < Duration::from_secs(15), "{took:?}:\n{out}");
}

//! Issue 17 (device semantics): the agent's exit codes (0 nothing to do,
//! 10 updated, 6 refused by `pre_install`), its `[hooks]` with their
//! environment, `reboot_command` after an in-place update, and the state
//! file's sequence, on loopback multicast. The updating agent also joins by
//! interface name (`lo`) and finds the repair server by host name
//! (`localhost`), as a fleet-wide config would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firmcast_integration::*;

const FLASH: u64 = 4 << 20;

/// A hook script that appends one line per call: the hook's name and the
/// documented variables.
fn hook_script(log: &Path) -> PathBuf {
    let script = log.with_extension("sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 hook=$FIRMCAST_HOOK version=$FIRMCAST_VERSION current=$FIRMCAST_CURRENT_VERSION board=$FIRMCAST_BOARD exit=$FIRMCAST_EXIT reason=$FIRMCAST_REASON\" >> {}\nexit \"${{2:-0}}\"\n",
            log.display()
        ),
    )
    .expect("write hook");
    set_mode(&script, 0o755);
    script
}

/// `[hooks]` (and a reboot command) calling `script`; `pre_exit`: the
/// pre_install hook's exit status.
fn hooks_toml(script: &Path, log: &Path, pre_exit: u32) -> String {
    let s = script.display();
    format!(
        "reboot_command = [\"/bin/sh\", \"-c\", \"echo reboot >> {log}\"]\n\n[hooks]\n\
         pre_install = [\"{s}\", \"pre\", \"{pre_exit}\"]\npost_install = [\"{s}\", \"post\"]\n\
         on_failure = [\"{s}\", \"fail\"]\ntimeout_secs = 10\n",
        log = log.display()
    )
}

/// Insert top-level `extra` keys before the first table of `config`, then
/// append `tables`.
fn extend_config(config: &Path, replace: &[(&str, &str)], tables: &str) {
    let mut text = std::fs::read_to_string(config).expect("read config");
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in {text}");
        text = text.replace(from, to);
    }
    let at = text.find("\n[").map_or(text.len(), |i| i + 1);
    text.insert_str(at, tables);
    std::fs::write(config, text).expect("write config");
}

/// Poll the state file every 2 ms until `stop`; the distinct `"state"`
/// values in the order first seen, and the last text.
fn watch_states(
    path: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, String)> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut last = String::new();
        // Bounded: 2 minutes at most.
        for _ in 0..60_000 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                assert!(text.ends_with("}\n"), "a torn state file: {text:?}");
                if let Some(state) = field(&text, "state") {
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
                last = text;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (seen, last)
    })
}

/// The carousel for `rel`, at most a minute.
fn sender(dir: &Scratch, net: &Net, rel: &Release) -> Proc {
    start_sender(
        dir,
        net,
        rel,
        "sender",
        &["--rate", "20M", "--duration", "60"],
    )
}

/// `"key":"value"` or `"key":value` of a one-line JSON object.
fn field(json: &str, key: &str) -> Option<String> {
    let rest = &json[json.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ',', '}'])?;
    Some(rest[..end].to_string())
}

#[test]
fn an_update_exits_10_runs_its_hooks_in_order_and_the_state_file_follows() {
    let dir = Scratch::new("semantics-update");
    let net = Net::for_test(90);
    let rel = release(&dir, 512 * 1024, "acme,rt1", "2.4.0", 90);
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let log = dir.join("upd-hooks.txt");
    let script = hook_script(&log);
    let mut spec = AgentSpec::new("upd", &rel.public_key, FLASH);
    // 8 blocks: receiving lasts at least 160 ms, long for a 2 ms poll.
    spec.block_delay_ms = 20;
    let (config, target) = agent_config(&dir, &net, &spec);
    let port = net.repair_listen.rsplit_once(':').expect("port").1;
    extend_config(
        &config,
        &[
            ("interface = \"127.0.0.1\"", "interface = \"lo\""),
            (
                &format!("repair_server = \"{}\"", net.repair_listen),
                &format!("repair_server = \"localhost:{port}\""),
            ),
        ],
        &hooks_toml(&script, &log, 0),
    );
    let state = dir.join("upd.state.json");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_states(state.clone(), stop.clone());
    // The agent listens before the sender starts, so `listening` lasts.
    let mut agent = start_agent(&dir, "upd", &config);
    assert!(
        agent.wait_for_output("listening (unicast", Duration::from_secs(20)),
        "{}",
        agent.output()
    );
    std::thread::sleep(Duration::from_millis(100));
    let _sender = sender(&dir, &net, &rel);
    let code = agent.expect_exit(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let (states, last) = watcher.join().expect("watcher");
    let out = agent.output();
    let hooks = std::fs::read_to_string(&log).unwrap_or_default();
    println!("exit {code}; state sequence {states:?}; final {last}hooks:\n{hooks}");
    assert_eq!(code, 10, "updated: exit 10\n{out}");
    assert!(target_holds(&target, &rel.bytes), "flash differs\n{out}");
    assert!(
        out.contains("interface lo is 127.0.0.1; repair server localhost:")
            && out.contains("is 127.0.0.1:"),
        "name and host resolved at start:\n{out}"
    );
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(lines.len(), 3, "pre, post, reboot:\n{hooks}");
    assert!(
        lines[0].starts_with(
            "pre hook=pre_install version=2.4.0 current=1.0.0 board=acme,rt1 exit= reason="
        ),
        "{hooks}"
    );
    assert!(
        lines[1].starts_with("post hook=post_install version=2.4.0 current=1.0.0 board=acme,rt1 exit=10 reason=updated"),
        "{hooks}"
    );
    assert_eq!(
        lines[2], "reboot",
        "reboot_command after post_install, in place:\n{hooks}"
    );
    // Every state is written as it happens; listening and receiving last
    // long enough (above) for a 2 ms poll to see them.
    let order = ["listening", "receiving", "updated"];
    let mut at = 0;
    for s in &states {
        if at < order.len() && s == order[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        order.len(),
        "state sequence {states:?} lacks {order:?} in order"
    );
    assert_eq!(field(&last, "exit").as_deref(), Some("10"), "{last}");
    assert_eq!(field(&last, "reason").as_deref(), Some("updated"), "{last}");
    assert_eq!(field(&last, "version").as_deref(), Some("2.4.0"), "{last}");
}

#[test]
fn nothing_to_do_exits_0_and_a_refusing_pre_install_exits_6_with_on_failure() {
    let dir = Scratch::new("semantics-refuse");
    // No sender: nothing announced within the boot window.
    let quiet = Net::for_test(91);
    let log_idle = dir.join("idle-hooks.txt");
    let script_idle = hook_script(&log_idle);
    let key = release(&dir, 64 * 1024, "acme,rt1", "2.4.0", 91);
    let mut spec = AgentSpec::new("idle", &key.public_key, FLASH);
    spec.boot_window_secs = 2;
    let (idle_cfg, _) = agent_config(&dir, &quiet, &spec);
    extend_config(&idle_cfg, &[], &hooks_toml(&script_idle, &log_idle, 0));
    let mut idle = start_agent(&dir, "idle", &idle_cfg);

    // An update whose pre_install hook says no.
    let net = Net::for_test(92);
    let rel = release(&dir, 256 * 1024, "acme,rt1", "2.5.0", 92);
    let _repair = start_repair(&dir, &net, &rel, "repair");
    let log = dir.join("refuse-hooks.txt");
    let script = hook_script(&log);
    let (config, target) = agent_config(
        &dir,
        &net,
        &AgentSpec::new("refuse", &rel.public_key, FLASH),
    );
    extend_config(&config, &[], &hooks_toml(&script, &log, 3));
    let _sender = sender(&dir, &net, &rel);
    let mut agent = start_agent(&dir, "refuse", &config);

    let idle_code = idle.expect_exit(Duration::from_secs(30));
    let idle_state = std::fs::read_to_string(dir.join("idle.state.json")).unwrap_or_default();
    println!("no announce: exit {idle_code}, state {idle_state}");
    assert_eq!(idle_code, 0, "nothing to do: exit 0\n{}", idle.output());
    assert!(
        !log_idle.exists(),
        "no hook runs when there is nothing to do: {:?}",
        std::fs::read_to_string(&log_idle)
    );
    assert_eq!(
        field(&idle_state, "state").as_deref(),
        Some("idle"),
        "{idle_state}"
    );
    assert_eq!(
        field(&idle_state, "reason").as_deref(),
        Some("nothing-to-do"),
        "{idle_state}"
    );

    let code = agent.expect_exit(Duration::from_secs(60));
    let out = agent.output();
    let hooks = std::fs::read_to_string(&log).unwrap_or_default();
    let last = std::fs::read_to_string(dir.join("refuse.state.json")).unwrap_or_default();
    println!("pre_install exit 3: agent exit {code}, state {last}hooks:\n{hooks}");
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains("pre_install hook refused version 2.5.0"),
        "{out}"
    );
    assert!(
        target_untouched(&target),
        "nothing written after the refusal"
    );
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(lines.len(), 2, "pre, fail (no post, no reboot):\n{hooks}");
    assert!(
        lines[0].starts_with("pre hook=pre_install version=2.5.0"),
        "{hooks}"
    );
    assert!(
        lines[1].starts_with("fail hook=on_failure version=2.5.0 current=1.0.0 board=acme,rt1 exit=6 reason=activation-failed"),
        "{hooks}"
    );
    assert_eq!(field(&last, "state").as_deref(), Some("failed"), "{last}");
    assert_eq!(field(&last, "exit").as_deref(), Some("6"), "{last}");
}

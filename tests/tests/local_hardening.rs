//! Local hardening of the real `firmcast-agent` (issue 14 M6): as root it
//! refuses a world-writable config (R-LOCAL-1), drops root once its sockets
//! and target are open (R-LOCAL-3), and drops anything but repair Data that
//! arrives on its unicast socket (R-LOCAL-4). The root-only parts print why
//! they are skipped when the tests do not run as root.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use firmcast_integration::*;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The effective uid of a running process.
fn euid_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// R-LOCAL-1: a world-writable config is a config error (exit 2) naming the
/// file and its mode, before any socket is opened.
#[test]
fn world_writable_config_is_refused_as_root() {
    if !is_root() {
        println!("skipped: not root (the ownership checks apply to root only)");
        return;
    }
    let dir = Scratch::new("local-perm");
    let net = Net::for_test(80);
    let rel = release(&dir, 10_000, "acme,rt1", "2.0.0", 80);
    let spec = AgentSpec::new("d0", &rel.public_key, 1 << 20);
    let (config, _) = agent_config(&dir, &net, &spec);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let mut agent = start_agent(&dir, "d0", &config);
    assert_eq!(agent.expect_exit(Duration::from_secs(10)), 2);
    let out = agent.output();
    assert!(
        out.contains("d0.toml")
            && out.contains("0666")
            && out.contains("writable by group or others"),
        "{out}"
    );
    println!(
        "world-writable config: exit 2: {}",
        out.lines().find(|l| l.contains("0666")).unwrap_or("")
    );
}

/// R-LOCAL-1 for the anti-rollback floor (R-ROLL-2): whoever can write
/// `floor_file` can lower the floor and replay an older signed image, so a
/// group/world-writable floor file, or a world-writable directory it would be
/// created in, is a config error (exit 2) naming `floor_file` and the mode.
#[test]
fn writable_floor_file_is_refused_as_root() {
    if !is_root() {
        println!("skipped: not root (the ownership checks apply to root only)");
        return;
    }
    let dir = Scratch::new("local-floor");
    let net = Net::for_test(82);
    let rel = release(&dir, 10_000, "acme,rt1", "2.0.0", 82);
    let spec = AgentSpec::new("d0", &rel.public_key, 1 << 20);
    let (config, _) = agent_config(&dir, &net, &spec);
    let floor_dir = dir.join("data");
    std::fs::create_dir_all(&floor_dir).expect("mkdir");
    let floor = floor_dir.join("floor");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("floor_file = \"{}\"\n{text}", path_str(&floor)),
    )
    .expect("config");
    let refused = |what: &str, log: &str| {
        let mut agent = start_agent(&dir, log, &config);
        let rc = agent.expect_exit(Duration::from_secs(10));
        let out = agent.output();
        assert!(
            rc == 2 && out.contains("floor_file") && out.contains("writable by group or others"),
            "{what}: exit {rc}: {out}"
        );
        let line = out.lines().find(|l| l.contains("floor_file")).unwrap_or("");
        println!("{what}: exit 2: {line}");
    };
    // Not created yet, in a world-writable (not sticky) directory.
    std::fs::set_permissions(&floor_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refused("floor_file's directory 0777", "d0-dir");
    assert!(
        !floor.exists(),
        "the refused agent created {}",
        floor.display()
    );
    std::fs::set_permissions(&floor_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(&floor, "1.0.0\n").expect("floor");
    std::fs::set_permissions(&floor, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    refused("floor_file 0666", "d0-file");
    // Root's alone: accepted (the agent listens until it is stopped).
    std::fs::set_permissions(&floor, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut agent = start_agent(&dir, "d0-ok", &config);
    let early = agent.wait(Duration::from_secs(2));
    let out = agent.output();
    agent.kill();
    assert!(
        early.is_none() && !out.contains("floor_file"),
        "floor_file 0600 refused ({early:?}): {out}"
    );
    println!("floor_file 0600 in a 0755 directory: accepted, the agent listened");
}

/// R-LOCAL-3 and R-LOCAL-4: the agent runs as `nobody` once listening, and
/// a forged Announce, Status and NACK sent to its unicast port are dropped
/// and counted.
#[test]
fn agent_drops_root_and_filters_its_unicast_socket() {
    let dir = Scratch::new("local-drop");
    let net = Net::for_test(81);
    let rel = release(&dir, 10_000, "acme,rt1", "2.0.0", 81);
    let mut spec = AgentSpec::new("d0", &rel.public_key, 1 << 20);
    spec.boot_window_secs = 4;
    let (config, _) = agent_config(&dir, &net, &spec);
    let mut agent = start_agent(&dir, "d0", &config);
    assert!(
        agent.wait_for_output("listening (unicast ", Duration::from_secs(10)),
        "{}",
        agent.output()
    );
    let out = agent.output();
    let port: u16 = out
        .split("listening (unicast ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("unicast port in the log");
    if is_root() {
        assert!(
            agent.wait_for_output("dropped root", Duration::from_secs(5)),
            "{}",
            agent.output()
        );
        let euid = euid_of(agent.pid()).expect("/proc status");
        assert_ne!(euid, 0, "the agent kept root: {}", agent.output());
        println!("agent euid after listening: {euid} (was 0)");
    } else {
        println!("not root: the privilege drop is not exercised");
    }
    // A forged Announce (kind 1), NACK (4) and Status (5): header only; the
    // filter looks at the header, before any CRC or body check.
    let forger = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    let mut sent = 0;
    for kind in [1u8, 4, 5] {
        let mut h = vec![0u8; 20];
        h[0..4].copy_from_slice(b"FMCS");
        h[4] = 1;
        h[5] = kind;
        forger.send_to(&h, ("127.0.0.1", port)).expect("send");
        sent += 1;
    }
    assert!(
        agent.wait_for_output(
            "unicast socket: dropped 2 datagram(s)",
            Duration::from_secs(5)
        ),
        "{}",
        agent.output()
    );
    assert_eq!(agent.expect_exit(Duration::from_secs(15)), 0);
    let out = agent.output();
    let lines = out
        .lines()
        .filter(|l| l.contains("unicast socket: dropped"))
        .count();
    println!("unicast socket: {sent} forged non-repair datagrams in, {lines} log lines");
}

//! Test tier 4b: the real binaries across a multicast router — a fleet
//! spread over two subnets behind it, and a device in a third subnet the
//! router sends no multicast to (see `firmcast_integration::routed` and
//! `tests/netns/routed.sh`). One router boot serves three scenarios:
//! any-source IPv4 (pimd with an RP for 239/8), IPv4 SSM (pimd, IGMPv3
//! (S,G) joins) and IPv6 SSM (smcrouted's static (S,G) routes, MLDv2 (S,G)
//! joins).
//!
//! Needs root: without it the test prints `NOT RUN: … (why)` and returns.
//! Each scenario prints a `routed:` line with its wall time, the bytes the
//! sender sent, the packets the router forwarded into each subnet and the
//! table rows asserted on: the devices' joins as the router (or, for IPv6,
//! the access switches in front of it) saw them, and its routes.

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use firmcast_integration::netns::{say, secs, start_in, wait_until, Host};
use firmcast_integration::routed::*;
use firmcast_integration::*;

const MIB: usize = 1 << 20;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A section of the router's tables (a part of its heading) and the fields
/// one of its rows must hold, in this order ([`rows_with`]).
type Check = (&'static str, &'static [&'static str]);

/// One scenario: its groups, how the agents name the sender and their
/// interface, and what the router's tables must show.
struct Scenario {
    name: &'static str,
    group: &'static str,
    repair_group: &'static str,
    /// The sender's address: its `--interface`, the host of the agents'
    /// `repair_server` and, for source-specific groups, their `source` and
    /// `repair_source`.
    server: &'static str,
    /// Source-specific groups: the agents join (server, group).
    ssm: bool,
    /// The agents' `interface` by name (IPv6), else their IPv4 address.
    iface_name: Option<&'static str>,
    /// The rows that must be in the tables before the first datagram: the
    /// devices' memberships on a0 and b0 and the router's route for them.
    joined: &'static [Check],
    /// The packets the router's kernel has forwarded out of a0 and b0 for
    /// these groups so far, with the rows they were read from.
    forwarded: fn(table: &str) -> Option<Forwarded>,
}

impl Scenario {
    /// The sender's unicast repair address (`[v6]:port` or `v4:port`).
    fn repair_listen(&self) -> String {
        let ip: std::net::IpAddr = self.server.parse().expect("server address");
        std::net::SocketAddr::new(ip, 7855).to_string()
    }
}

/// Packets forwarded out of a0 and b0, and the table rows that say so.
struct Forwarded {
    out: [u64; 2],
    rows: Vec<String>,
}

/// IPv4: the kernel's per-interface counters of a0 and b0, which outlive
/// the routes pimd removes when the devices leave.
fn forwarded_v4(table: &str) -> Option<Forwarded> {
    let (a, row_a) = vif_packets_out(table, "a0")?;
    let (b, row_b) = vif_packets_out(table, "b0")?;
    Some(Forwarded {
        out: [a, b],
        rows: vec![row_a.to_string(), row_b.to_string()],
    })
}

/// IPv6: the counters of smcrouted's static (S,G) routes to a0 and b0 (the
/// kernel keeps per-interface ones only for routing table 0).
fn forwarded_v6(table: &str) -> Option<Forwarded> {
    let rows = all_rows(
        table,
        &[
            (
                "ip -s -6 mroute",
                &["(fd78::1,ff3e::8000:1)", "Iif:", "s0", "Oifs:", "a0", "b0"],
            ),
            (
                "ip -s -6 mroute",
                &["(fd78::1,ff3e::8000:2)", "Iif:", "s0", "Oifs:", "a0", "b0"],
            ),
        ],
    )?;
    let n = rows.iter().map(|r| packets(r)).sum();
    Some(Forwarded { out: [n, n], rows })
}

/// `Some(rows)` when every check finds a row ([`rows_with`]), the rows of
/// each check in order; `None` while one finds none.
fn all_rows(table: &str, checks: &[(&str, &[&str])]) -> Option<Vec<String>> {
    let mut found = Vec::new();
    for (heading, fields) in checks {
        let rows = rows_with(table, heading, fields);
        if rows.is_empty() {
            return None;
        }
        found.extend(rows.iter().map(|r| r.trim().to_string()));
    }
    Some(found)
}

/// The config of device `host` for `scenario`.
fn device_config(
    dir: &Scratch,
    host: &Host,
    scenario: &Scenario,
    spec: &AgentSpec<'_>,
) -> (PathBuf, PathBuf) {
    let net = Net {
        group: scenario.group.into(),
        repair_group: scenario.repair_group.into(),
        repair_listen: scenario.repair_listen(),
    };
    let (config, target) = agent_config(dir, &net, spec);
    let text = fs::read_to_string(&config).expect("read agent config");
    let line = "interface = \"127.0.0.1\"";
    assert!(
        text.contains(line),
        "agent_config changed its interface line"
    );
    // Top-level keys, so they go where the interface line is (tables follow).
    let mut keys = format!(
        "interface = \"{}\"",
        scenario.iface_name.unwrap_or(&host.addr)
    );
    if scenario.ssm {
        keys += &format!(
            "\nsource = \"{0}\"\nrepair_source = \"{0}\"",
            scenario.server
        );
    }
    fs::write(&config, text.replace(line, &keys)).expect("write agent config");
    (config, target)
}

fn start_device(dir: &Scratch, host: &Host, name: &str, config: &std::path::Path) -> Proc {
    let mut agent = start_in(
        host,
        name,
        &netns::fleet_bin("firmcast-agent"),
        &["--config", path_str(config), "--foreground", "--verbose"],
        dir.path(),
    );
    assert!(
        agent.wait_for_output("listening", Duration::from_secs(20)),
        "{name} never listened:\n{}",
        agent.output()
    );
    agent
}

/// The sender's JSON summary (its last stdout line that is a JSON object).
fn sender_summary(output: &str) -> serde_json::Value {
    output
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("the sender printed no JSON summary:\n{output}"))
}

/// The devices of one scenario, listening.
struct Fleet {
    /// Two in each routed subnet (a1, a2, b1, b2) and their flash files.
    routed: Vec<(Host, Proc, PathBuf)>,
    /// The device of subnet c (no multicast routed there), its flash file
    /// and when it started.
    unrouted: (Proc, PathBuf, Instant),
}

/// Start the scenario's devices; b2 loses 2% of what it hears, so that its
/// NACKs and repairs cross the router; c1 has an 8 s boot window.
fn start_fleet(rig: &Routed, dir: &Scratch, rel: &Release, scenario: &Scenario) -> Fleet {
    let len = rel.bytes.len() as u64;
    let mut routed = Vec::new();
    for (subnet, n) in [('a', 1), ('a', 2), ('b', 1), ('b', 2)] {
        let host = rig.device(subnet, n);
        let name = format!("dev-{subnet}{n}");
        let mut spec = AgentSpec::new(&name, &rel.public_key, len);
        if (subnet, n) == ('b', 2) {
            spec.rx_loss_permille = 20;
        }
        let (config, target) = device_config(dir, &host, scenario, &spec);
        let agent = start_device(dir, &host, &name, &config);
        routed.push((host, agent, target));
    }
    let host = rig.device('c', 1);
    let mut spec = AgentSpec::new("dev-c1", &rel.public_key, len);
    spec.boot_window_secs = 8;
    let (config, target) = device_config(dir, &host, scenario, &spec);
    let started = Instant::now();
    let agent = start_device(dir, &host, "dev-c1", &config);
    Fleet {
        routed,
        unrouted: (agent, target, started),
    }
}

/// Send the release across the router (`--ttl 8`, the sender its own repair
/// server by unicast across it, until the 4 routed devices are done) and
/// check that they updated byte-identical; returns the seconds from the
/// sender's start to the last device's exit and the sender's JSON summary.
fn update_fleet(
    rig: &Routed,
    dir: &Scratch,
    rel: &Release,
    scenario: &Scenario,
    fleet: &mut Fleet,
) -> (f64, serde_json::Value) {
    let test = scenario.name;
    let started = Instant::now();
    let repair_listen = scenario.repair_listen();
    let mut args = send_args(rel, scenario.group, scenario.server);
    args.extend([
        "--ttl",
        "8",
        "--rate",
        "20M",
        "--repair-listen",
        &repair_listen,
        "--repair-group",
        scenario.repair_group,
        "--until-done",
        "4",
        "--duration",
        "60",
        "--json",
    ]);
    let mut sender = start_in(
        &rig.server(),
        "sender",
        &netns::fleet_bin("firmcast"),
        &args,
        dir.path(),
    );
    for (_, agent, _) in fleet.routed.iter_mut() {
        let code = agent.expect_exit(Duration::from_secs(60));
        assert_eq!(
            code,
            10,
            "{test}: {} exit code (10: updated):\n{}",
            agent.name,
            agent.output()
        );
    }
    let secs_taken = secs(started);
    for (_, _, target) in &fleet.routed {
        assert!(
            target_holds(target, &rel.bytes),
            "{test}: {} differs from the image",
            target.display()
        );
    }
    assert_eq!(
        sender.expect_exit(Duration::from_secs(30)),
        0,
        "{test}: sender output:\n{}",
        sender.output()
    );
    let output = sender.output();
    let summary = sender_summary(&output);
    // The sender's inline repair server heard the devices by unicast across
    // the router (their Status ended the carousel: --until-done 4).
    let status_frames = summary["status_frames"].as_u64().unwrap_or(0);
    assert!(
        status_frames >= 4,
        "{test}: the sender heard {status_frames} Status frames:\n{output}"
    );
    (secs_taken, summary)
}

/// The packets the router forwarded out of a0 and b0 since `before`, read
/// from a table it wrote after the fleet was done, and that table's rows;
/// each at least `least` (else the test fails).
fn forwarded_since(
    rig: &Routed,
    scenario: &Scenario,
    before: [u64; 2],
    least: u64,
) -> ([u64; 2], Vec<String>) {
    let test = scenario.name;
    let since = |f: &Forwarded| [0, 1].map(|i| f.out[i].saturating_sub(before[i]));
    let mut after = None;
    let mut table = String::new();
    wait_until(Duration::from_secs(30), || {
        table = rig.router_table();
        after = (scenario.forwarded)(&table);
        after
            .as_ref()
            .is_some_and(|f| since(f).iter().all(|&n| n >= least))
    });
    let Some(after) = after else {
        panic!("{test}: no forwarding counters for a0 and b0 in the router's tables:\n{table}");
    };
    let out = since(&after);
    assert!(
        out.iter().all(|&n| n >= least),
        "{test}: the router forwarded {} packets out of a0 and {} out of b0, \
         fewer than the {least} the image needs:\n{table}",
        out[0],
        out[1]
    );
    (out, after.rows)
}

/// The unrouted device ends with exit 0 and its boot-window line, its flash
/// untouched; returns that line and its seconds from start to exit.
fn unrouted_gave_up(scenario: &Scenario, fleet: &mut Fleet) -> (String, f64) {
    let test = scenario.name;
    let (agent, target, started) = &mut fleet.unrouted;
    let code = agent.expect_exit(Duration::from_secs(30));
    let secs_taken = secs(*started);
    let out = agent.output();
    assert_eq!(
        code, 0,
        "{test}: dev-c1 exit code (0: nothing to do):\n{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("nothing received on "))
        .unwrap_or_else(|| panic!("{test}: dev-c1 said nothing about hearing nothing:\n{out}"));
    assert!(target_untouched(target), "{test}: dev-c1 wrote flash");
    (line.trim().to_string(), secs_taken)
}

/// Two devices in each routed subnet update from one sender on the far side
/// of the router, byte-identical; the tables show the devices' memberships
/// on a0 and b0 and the router's route before the first datagram, and the
/// router's kernel counted at least the image's worth of packets forwarded
/// out of each afterwards. Subnet c's device, beside the same live carousel
/// but with no multicast routed to it, ends with exit 0 and its boot-window
/// line instead of hanging.
fn fleet_across_router(rig: &Routed, scenario: &Scenario) {
    let test = scenario.name;
    let started = Instant::now();
    let dir = Scratch::new("routed");
    let len = MIB + 12_345;
    let rel = release(&dir, len, "acme,rt1", "2.2.0", 41);
    let mut fleet = start_fleet(rig, &dir, &rel, scenario);

    // A join the router missed waits for its next query (10 s, plus up to
    // 10 s for the answer); the emulated router writes its tables slowly on
    // a loaded host.
    let mut table = String::new();
    let mut joins = None;
    let joining = Instant::now();
    wait_until(Duration::from_secs(30), || {
        table = rig.router_table();
        joins = all_rows(&table, scenario.joined);
        joins.is_some()
    });
    let Some(joins) = joins else {
        let v6 = scenario.server.contains(':');
        panic!(
            "{test}: the tables never showed the joins on a0 and b0:\n{table}\n\
             dev-a1's kernel source filters:\n{}\nrouter console:\n{}",
            mcfilter(&fleet.routed[0].0, v6),
            rig.console_tail()
        );
    };
    let join_secs = secs(joining);
    let before = (scenario.forwarded)(&table).map_or([0, 0], |f| f.out);

    let (fleet_secs, summary) = update_fleet(rig, &dir, &rel, scenario, &mut fleet);
    // Every datagram carries at most 1500 B of the image: a subnet whose
    // devices hold it got at least this many by multicast (repairs by
    // unicast aside, a few).
    let (forwarded, counters) = forwarded_since(rig, scenario, before, len as u64 / 1500);
    let (line, lonely_secs) = unrouted_gave_up(scenario, &mut fleet);

    let field = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let carousel = field(&summary["bytes"]);
    let repairs = field(&summary["repair"]["bytes_sent"]);
    say(&format!(
        "routed: {test}: 4 devices in 2 subnets updated ({len} B) in {fleet_secs:.1} s; \
         the sender sent {} B ({carousel} B carousel + {repairs} B repairs; {} NACKs, \
         {} Status across the router); the router forwarded {} packets out of a0 and {} \
         out of b0; dev-c1 (unrouted subnet) exit 0 after {lonely_secs:.1} s: {line}; \
         scenario {:.1} s\n  joins and routes before the first datagram (in the tables \
         after {join_secs:.1} s):\n    {}\n  \
         forwarding counters after (since boot):\n    {}",
        carousel + repairs,
        field(&summary["repair"]["nacks"]),
        field(&summary["status_frames"]),
        forwarded[0],
        forwarded[1],
        secs(started),
        joins.join("\n    "),
        counters.join("\n    "),
    ));
}

/// Every scenario on one router (its guest boots once).
#[test]
fn fleet_across_a_pim_router() {
    if not_run("fleet_across_a_pim_router").is_some() {
        return;
    }
    let _one = lock();
    let started = Instant::now();
    let v6 = SERVER_ADDR.1;
    let rig = Routed::up('a', 2, &[(v6, "ff3e::8000:1"), (v6, "ff3e::8000:2")]);
    let scenarios = [
        Scenario {
            name: "asm_v4",
            group: "239.78.0.1:7854",
            repair_group: "239.78.0.2:7855",
            server: SERVER_ADDR.0,
            ssm: false,
            iface_name: None,
            joined: &[
                ("show ip igmp groups", &["a0", "239.78.0.1", "EXCL"]),
                ("show ip igmp groups", &["b0", "239.78.0.1", "EXCL"]),
                (
                    "ip -s mroute",
                    &["(0.0.0.0,239.78.0.1)", "Iif:", "s0", "Oifs:", "a0", "b0"],
                ),
            ],
            forwarded: forwarded_v4,
        },
        Scenario {
            name: "ssm_v4",
            group: "232.78.0.1:7854",
            repair_group: "232.78.0.2:7855",
            server: SERVER_ADDR.0,
            ssm: true,
            iface_name: None,
            joined: &[
                ("show ip igmp sources", &["a0", "232.78.0.1", "10.78.0.1"]),
                ("show ip igmp sources", &["b0", "232.78.0.1", "10.78.0.1"]),
                ("show ip mroute", &["10.78.0.1", "232.78.0.1", "IGMP", "s0"]),
                (
                    "ip -s mroute",
                    &["(10.78.0.1,232.78.0.1)", "Iif:", "s0", "Oifs:", "a0", "b0"],
                ),
                ("-sa:", &["grp", "232.78.0.1", "src", "10.78.0.1"]),
                ("-sb:", &["grp", "232.78.0.1", "src", "10.78.0.1"]),
            ],
            forwarded: forwarded_v4,
        },
        Scenario {
            name: "ssm_v6",
            group: "[ff3e::8000:1]:7854",
            repair_group: "[ff3e::8000:2]:7855",
            server: SERVER_ADDR.1,
            ssm: true,
            iface_name: Some("eth0"),
            // smcrouted keeps no membership table: the MLDv2 (S,G) joins as
            // the access switches in front of a0 and b0 snooped them.
            joined: &[
                ("-sa:", &["grp", "ff3e::8000:1", "src", "fd78::1"]),
                ("-sb:", &["grp", "ff3e::8000:1", "src", "fd78::1"]),
                (
                    "ip -s -6 mroute",
                    &["(fd78::1,ff3e::8000:1)", "Iif:", "s0", "Oifs:", "a0", "b0"],
                ),
            ],
            forwarded: forwarded_v6,
        },
    ];
    for scenario in &scenarios {
        fleet_across_router(&rig, scenario);
    }
    drop(rig);
    say(&format!(
        "routed: {} scenarios on one router boot, whole test {:.1} s",
        scenarios.len(),
        secs(started)
    ));
}

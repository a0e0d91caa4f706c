//! Test tier 4b: the real binaries across a multicast router — a fleet
//! spread over two subnets behind it, and a device in a third subnet the
//! router sends no multicast to (see `firmcast_integration::routed` and
//! `tests/netns/routed.sh`).
//!
//! Needs root: without it every test prints `NOT RUN: … (why)` and returns.
//! Each test prints a `routed:` line with its wall time and the router's
//! group/source table as it stood while the devices listened.

use std::fs;
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

/// Groups and what an agent adds to its config for them.
struct Groups {
    group: &'static str,
    repair_group: &'static str,
    /// The sender's address as the agents name it (repair server, SSM source).
    server: &'static str,
    /// Whether the router's table shows the devices' membership of the
    /// data group on an interface (`a0`, `b0`).
    joined: fn(table: &str, iface: &str) -> bool,
}

/// The config of device `host` for `groups`.
fn device_config(
    dir: &Scratch,
    host: &Host,
    groups: &Groups,
    spec: &AgentSpec<'_>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let net = Net {
        group: groups.group.into(),
        repair_group: groups.repair_group.into(),
        repair_listen: format!("{}:7855", groups.server),
    };
    let (config, target) = agent_config(dir, &net, spec);
    let text = fs::read_to_string(&config).expect("read agent config");
    let line = "interface = \"127.0.0.1\"";
    assert!(
        text.contains(line),
        "agent_config changed its interface line"
    );
    let text = text.replace(line, &format!("interface = \"{}\"", host.addr));
    fs::write(&config, text).expect("write agent config");
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

/// Two devices in each routed subnet update from one sender on the far side
/// of the router (`--ttl 8`, the sender its own repair server by unicast
/// across the router), byte-identical; the router's table shows the devices'
/// memberships on a0 and b0 before the first datagram. Subnet c's device,
/// beside the same live carousel but with no multicast routed to it, ends
/// with exit 0 and its boot-window line instead of hanging.
fn fleet_across_router(rig: &Routed, test: &str, groups: &Groups) {
    let started = Instant::now();
    let dir = Scratch::new("routed");
    let len = MIB + 12_345;
    let rel = release(&dir, len, "acme,rt1", "2.2.0", 41);
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for (subnet, n) in [('a', 1), ('a', 2), ('b', 1), ('b', 2)] {
        let host = rig.device(subnet, n);
        let name = format!("dev-{subnet}{n}");
        let mut spec = AgentSpec::new(&name, &rel.public_key, len as u64);
        // b2 loses 2% of what it hears: its NACKs and repairs cross the router.
        if (subnet, n) == ('b', 2) {
            spec.rx_loss_permille = 20;
        }
        let (config, target) = device_config(&dir, &host, groups, &spec);
        agents.push(start_device(&dir, &host, &name, &config));
        targets.push(target);
    }
    let unrouted = rig.device('c', 1);
    let mut spec = AgentSpec::new("dev-c1", &rel.public_key, len as u64);
    spec.boot_window_secs = 8;
    let (config, unrouted_target) = device_config(&dir, &unrouted, groups, &spec);
    let unrouted_started = Instant::now();
    let mut lonely = start_device(&dir, &unrouted, "dev-c1", &config);

    // The joins as the router saw them: a membership on each routed subnet.
    let mut table = String::new();
    let joined = wait_until(Duration::from_secs(10), || {
        table = rig.router_table();
        (groups.joined)(&table, "a0") && (groups.joined)(&table, "b0")
    });
    say(&format!(
        "routed: {test}: router table while the devices listen:\n{table}"
    ));
    assert!(
        joined,
        "the router never saw the joins on a0 and b0:\n{table}"
    );

    let fleet_started = Instant::now();
    let repair_listen = format!("{}:7855", groups.server);
    let mut args = send_args(&rel, groups.group, groups.server);
    args.extend([
        "--ttl",
        "8",
        "--rate",
        "20M",
        "--repair-listen",
        &repair_listen,
        "--repair-group",
        groups.repair_group,
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
    for a in agents.iter_mut() {
        let code = a.expect_exit(Duration::from_secs(60));
        assert_eq!(
            code,
            10,
            "{} exit code (10: updated):\n{}",
            a.name,
            a.output()
        );
    }
    let fleet_secs = secs(fleet_started);
    for t in &targets {
        assert!(
            target_holds(t, &rel.bytes),
            "{} differs from the image",
            t.display()
        );
    }
    assert_eq!(
        sender.expect_exit(Duration::from_secs(30)),
        0,
        "sender output:\n{}",
        sender.output()
    );
    // The sender's inline repair server heard the devices by unicast across
    // the router (their Status ended the carousel: --until-done 4).
    let sent = sender.output();
    let nacks = netns::json_u64(&sent, "nacks").unwrap_or(0);
    let status_frames = netns::json_u64(&sent, "status_frames").unwrap_or(0);
    assert!(
        status_frames >= 4,
        "the sender heard {status_frames} Status frames:\n{sent}"
    );

    let code = lonely.expect_exit(Duration::from_secs(30));
    let lonely_secs = secs(unrouted_started);
    let out = lonely.output();
    assert_eq!(code, 0, "dev-c1 exit code (0: nothing to do):\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("nothing received on "))
        .unwrap_or_else(|| panic!("dev-c1 said nothing about hearing nothing:\n{out}"));
    assert!(target_untouched(&unrouted_target), "dev-c1 wrote flash");
    let table = rig.router_table();
    say(&format!(
        "routed: {test}: 4 devices in 2 subnets updated ({len} B) in {fleet_secs:.1} s \
         ({nacks} NACKs, {status_frames} Status across the router); \
         dev-c1 (unrouted subnet) exit {code} after {lonely_secs:.1} s: {line}; \
         whole test {:.1} s; router after:\n{table}",
        secs(started)
    ));
}

/// Every scenario on one router (its guest boots once).
#[test]
fn fleet_across_a_pim_router() {
    if not_run("fleet_across_a_pim_router").is_some() {
        return;
    }
    let _one = lock();
    let rig = Routed::up('a', 2, &[]);
    fleet_across_router(
        &rig,
        "asm_v4",
        &Groups {
            group: "239.78.0.1:7854",
            repair_group: "239.78.0.2:7855",
            server: SERVER_ADDR.0,
            joined: |t, iface| table_has(t, "show ip igmp groups", &[iface, "239.78.0.1", "EXCL"]),
        },
    );
}

//! Test tier 3 for issue 18's address families: source-specific multicast
//! (IGMPv3 (S,G) joins) over IPv4 loopback. The same over IPv6 (MLDv2) runs
//! in a namespace of the test's own (`ipv6.rs`: loopback carries no IPv6
//! multicast).

use std::time::{Duration, Instant};

use firmcast_integration::*;

const MIB: usize = 1 << 20;
const FLASH: u64 = 4 << 20;

/// `net` moved into the source-specific range 232.0.0.0/8.
fn ssm(net: &Net) -> Net {
    Net {
        group: net.group.replacen("239.", "232.", 1),
        repair_group: net.repair_group.replacen("239.", "232.", 1),
        repair_listen: net.repair_listen.clone(),
    }
}

/// An agent config for `spec` on `net` joined from `source`, reporting to
/// `repair_server` (the repair group's source by default, R-NET-1).
fn ssm_agent(
    dir: &Scratch,
    net: &Net,
    spec: &AgentSpec<'_>,
    source: &str,
    repair_server: &str,
) -> Proc {
    let mut net = net.clone();
    net.repair_listen = repair_server.to_string();
    let (config, _) = agent_config(dir, &net, spec);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.insert_str(0, &format!("source = \"{source}\"\n"));
    std::fs::write(&config, text).expect("write config");
    let mut agent = start_agent(dir, spec.name, &config);
    assert!(
        agent.wait_for_output("listening", Duration::from_secs(10)),
        "{} never listened:\n{}",
        spec.name,
        agent.output()
    );
    agent
}

/// R-NET-1/2/5: two senders on one source-specific group, from 127.0.0.1
/// and 127.0.0.2, each with its own image (same key, so either would be
/// accepted). Each agent joins (S,G) for one source and ends up with exactly
/// that source's image; an agent joined for a third source hears nothing and
/// says so when its boot window ends (exit 0, the "no announce" code).
#[test]
fn ssm_agents_hear_only_the_source_they_joined() {
    let dir = Scratch::new("ssm4");
    let net = ssm(&Net::for_test(50));
    let rel_a = release(&dir, MIB, "acme,rt1", "2.0.0", 501);
    let rel_b = release(&dir, MIB, "acme,rt1", "2.0.1", 502);
    let port = net.repair_listen.rsplit_once(':').expect("port").1;
    let listen_a = format!("127.0.0.1:{port}");
    let listen_b = format!("127.0.0.2:{port}");

    let spec_a = AgentSpec::new("ssm-a", &rel_a.public_key, FLASH);
    let mut agent_a = ssm_agent(&dir, &net, &spec_a, "127.0.0.1", &listen_a);
    let spec_b = AgentSpec::new("ssm-b", &rel_b.public_key, FLASH);
    let mut agent_b = ssm_agent(&dir, &net, &spec_b, "127.0.0.2", &listen_b);
    let mut spec_c = AgentSpec::new("ssm-c", &rel_a.public_key, FLASH);
    spec_c.boot_window_secs = 4;
    let mut agent_c = ssm_agent(&dir, &net, &spec_c, "127.0.0.3", &listen_a);

    let started = Instant::now();
    let sender = |rel: &Release, name: &str, listen: &str| {
        let mut args = send_args(rel, &net.group, "127.0.0.1");
        // Bound to `listen`: the datagrams' source address.
        args.extend_from_slice(&[
            "--rate",
            "20M",
            "--until-done",
            "1",
            "--duration",
            "60",
            "--repair-listen",
            listen,
            "--repair-group",
            &net.repair_group,
        ]);
        Proc::start(name, &bin("firmcast"), &args, dir.path())
    };
    let mut send_a = sender(&rel_a, "send-a", &listen_a);
    let mut send_b = sender(&rel_b, "send-b", &listen_b);

    for (agent, rel, target) in [
        (&mut agent_a, &rel_a, dir.join("ssm-a.flash")),
        (&mut agent_b, &rel_b, dir.join("ssm-b.flash")),
    ] {
        let code = agent.expect_exit(Duration::from_secs(90));
        let out = agent.output();
        assert_eq!(code, 10, "{} (10: updated):\n{out}", agent.name);
        assert!(
            target_holds(&target, &rel.bytes),
            "{} holds another image than its source's:\n{out}",
            agent.name
        );
        assert!(!out.contains("refused"), "{}:\n{out}", agent.name);
    }
    let both = started.elapsed();
    let code = agent_c.expect_exit(Duration::from_secs(30));
    let out_c = agent_c.output();
    assert_eq!(
        code, 0,
        "ssm-c (0: no announce in the boot window):\n{out_c}"
    );
    let line = out_c
        .lines()
        .find(|l| l.contains("nothing received on 232."))
        .unwrap_or_else(|| panic!("no R-NET-5 line:\n{out_c}"));
    assert!(line.contains("(source 127.0.0.3)"), "{line}");
    assert!(
        target_untouched(&dir.join("ssm-c.flash")),
        "ssm-c wrote flash"
    );
    for s in [&mut send_a, &mut send_b] {
        assert_eq!(
            s.expect_exit(Duration::from_secs(30)),
            0,
            "{}:\n{}",
            s.name,
            s.output()
        );
    }
    println!(
        "SSM 232/8 over loopback: two sources on {}, each agent installed its own source's 1 MiB image in {:.1} s; the agent joined for 127.0.0.3 heard nothing: {line}",
        net.group,
        both.as_secs_f64()
    );
}

//! Issue 17: one config for a fleet (interface by name or `auto`, repair
//! server by host name, `--lint` on the build host), `[hooks]` and
//! `state_file`.

use super::*;
use crate::device_id::{self, HostFacts};

const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

fn base() -> String {
    format!(
        "board = \"acme,rt1\"\ncurrent_version = \"1.0\"\nrepair_server = \"10.0.0.2:7855\"\n\
         public_key = \"{KEY}\"\ntarget = \"mtd:firmware\"\n"
    )
}

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("/etc/firmcast/agent.toml"), text, "host")
}

#[test]
fn interface_by_name_or_auto_and_server_by_host() {
    let c = p(&format!(
        "{}interface = \"br-lan\"\n",
        base().replace("10.0.0.2:7855", "firmcast-repair.lan:7855")
    ))
    .expect("parses");
    assert_eq!(c.interface_spec, Interface::Name("br-lan".into()));
    assert_eq!(c.interface, Ipv4Addr::UNSPECIFIED, "looked up at start");
    assert_eq!(
        c.repair_server_spec,
        Server::Host("firmcast-repair.lan".into(), 7855)
    );
    assert_eq!(c.repair_server.port(), 7855);
    let d = c.describe();
    assert!(
        d.contains("br-lan") && d.contains("firmcast-repair.lan:7855"),
        "{d}"
    );
    let auto = p(&format!("{}interface = \"auto\"\n", base())).expect("auto");
    assert_eq!(auto.interface_spec, Interface::Auto);
    let e = p(&format!("{}interface = \"eth 0\"\n", base())).expect_err("blank");
    assert!(e.to_string().contains("key `interface`"), "{e}");
    let e = p(&base().replace("10.0.0.2:7855", "firmcast-repair.lan")).expect_err("no port");
    assert!(
        e.to_string().contains("key `repair_server`") && e.to_string().contains("host:port"),
        "{e}"
    );
}

#[test]
fn device_id_follows_the_named_interface_mac() {
    let link = |name: &str, mac: &str| device_id::Link {
        name: name.into(),
        addrs: Vec::new(),
        mac: mac.into(),
    };
    let host = HostFacts {
        links: vec![
            link("eth0", "02:00:00:00:00:01"),
            link("br-lan", "02:00:00:00:00:02"),
        ],
        ..HostFacts::hostname_only("router")
    };
    let path = Path::new("/etc/firmcast/agent.toml");
    let by_name =
        parse_with(path, &format!("{}interface = \"br-lan\"\n", base()), &host).expect("name");
    let d = by_name.describe();
    assert!(
        d.contains("br-lan") && d.contains("02:00:00:00:00:02"),
        "{d}"
    );
    let other =
        parse_with(path, &format!("{}interface = \"eth0\"\n", base()), &host).expect("eth0");
    assert_ne!(by_name.device_id, other.device_id);
}

#[test]
fn hooks_and_state_file() {
    let c = p(&base()).expect("defaults");
    assert_eq!(c.hooks, HooksConfig::default());
    assert_eq!(
        c.state_file.as_deref(),
        Some(Path::new(crate::state_file::DEFAULT_STATE_FILE))
    );
    let c = p(&format!(
        "{}state_file = \"\"\n\n[hooks]\npre_install = [\"/bin/stop\", \"web\"]\n\
         post_install = [\"/bin/led\", \"ok\"]\non_failure = [\"/bin/led\", \"err\"]\ntimeout_secs = 5\n",
        base()
    ))
    .expect("hooks");
    assert_eq!(c.state_file, None);
    assert_eq!(c.hooks.pre_install, ["/bin/stop", "web"]);
    assert_eq!(c.hooks.post_install, ["/bin/led", "ok"]);
    assert_eq!(c.hooks.on_failure, ["/bin/led", "err"]);
    assert_eq!(c.hooks.timeout, Duration::from_secs(5));
    let rel = p(&format!("{}state_file = \"run/state.json\"\n", base())).expect("relative");
    assert_eq!(
        rel.state_file.as_deref(),
        Some(Path::new("/etc/firmcast/run/state.json"))
    );
    for (bad, key) in [
        ("[hooks]\npre_install = []\n", "hooks.pre_install"),
        ("[hooks]\non_failure = [\"\"]\n", "hooks.on_failure"),
        ("[hooks]\ntimeout_secs = 0\n", "hooks.timeout_secs"),
        ("[hooks]\npost = [\"/bin/x\"]\n", "post"),
    ] {
        let e = p(&format!("{}\n{bad}", base())).expect_err(bad);
        assert!(
            e.to_string().contains(&format!("key `{key}`")),
            "{bad}: {e}"
        );
    }
}

/// The shipped examples pass `--lint` as they are (the device's files are
/// not read), and carry the settings for a fleet: no address, no fixed
/// device id, the big-fleet NACK back-off.
#[test]
fn shipped_board_configs_lint_and_suit_a_fleet() {
    let mut n = 0;
    for (path, _) in super::tests::board_config_files() {
        let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if !name.starts_with("acme-") {
            continue;
        }
        let c = load_lint(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.interface_spec.fixed().is_none(),
            "{name}: interface {} is one device's address",
            c.interface_spec
        );
        assert!(
            c.repair_server_spec.fixed().is_none(),
            "{name}: repair_server by host name"
        );
        assert!(
            !matches!(c.device_id_source, IdSource::Configured),
            "{name}: a fixed device_id collides across the fleet"
        );
        assert!(
            c.nack_backoff >= Duration::from_millis(40) && c.nack_backoff_shape >= 8,
            "{name}: NACK back-off for thousands of devices"
        );
        n += 1;
    }
    println!("{n} shipped board configs pass --lint with fleet settings");
    assert!(n >= 5, "expected the five acme boards, found {n}");
}

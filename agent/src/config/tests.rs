//! The config's tests: each key's parsing, defaults and errors (named
//! key, line and file), key files, the device id, the shipped board files.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::device_id::{self, HostFacts, IdSource};
use crate::resume::FinalReadBack;

const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

fn full() -> String {
    format!(
        r#"
board = "acme,rt1"
current_version = "2.0.0"
group = "239.255.77.1:7854"
repair_group = "239.255.77.2:7855"
interface = "127.0.0.1"
repair_server = "127.0.0.1:7855"
public_key = "{KEY}"
target = "simnor:/tmp/fc-nor.bin"
target_size = 1048576
boot_window_secs = 10
window_blocks = 4
max_block_size = 65536
device_id = "0xdeadbeef"
activation = "none"
stall_timeout_secs = 20
rcvbuf_bytes = 1048576
nack_backoff_ms = 40
nack_backoff_shape = 8
exit_when_current = false
final_read_back = "all"

[test]
rx_loss_permille = 50
rx_loss_seed = 7
block_delay_ms = 3
"#
    )
}

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("/etc/firmcast/agent.toml"), text, "host1")
}

fn minimal_without(key: &str) -> String {
    let lines = [
        ("board", "board = \"acme,rt1\"".to_string()),
        ("current_version", "current_version = \"1.0\"".to_string()),
        (
            "repair_server",
            "repair_server = \"10.0.0.2:7855\"".to_string(),
        ),
        ("public_key", format!("public_key = \"{KEY}\"")),
        ("target", "target = \"mtd:firmware\"".to_string()),
    ];
    lines
        .iter()
        .filter(|(k, _)| *k != key)
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

#[test]
fn full_example_parses() {
    let c = p(&full()).expect("parses");
    assert_eq!(c.board, "acme,rt1");
    assert_eq!(c.current_version, "2.0.0");
    assert_eq!(c.group, "239.255.77.1:7854".parse().expect("ok"));
    assert_eq!(c.interface, Ipv4Addr::LOCALHOST);
    assert_eq!(c.repair_server, "127.0.0.1:7855".parse().expect("ok"));
    assert_eq!(c.public_key[0], 0x3b);
    assert_eq!(c.public_key[31], 0x29);
    assert_eq!(c.target_size, Some(1 << 20));
    assert_eq!(c.boot_window, Duration::from_secs(10));
    assert_eq!(c.window_blocks, 4);
    assert_eq!(c.max_block_size, 65536);
    assert_eq!(c.device_id, 0xdead_beef);
    assert_eq!(c.device_id_source, IdSource::Configured);
    assert_eq!(c.activation, Activation::None);
    assert_eq!(c.stall_timeout, Duration::from_secs(20));
    assert_eq!(c.rcvbuf_bytes, 1 << 20);
    assert_eq!(c.nack_backoff, Duration::from_millis(40));
    assert_eq!(c.nack_backoff_shape, 8);
    assert!(!c.exit_when_current);
    assert_eq!(c.final_read_back, FinalReadBack::All);
    assert_eq!(
        c.test,
        TestOptions {
            rx_loss_permille: 50,
            rx_loss_seed: 7,
            block_delay: Duration::from_millis(3)
        }
    );
    let d = c.describe();
    assert!(
        d.contains("device_id              = 00000000deadbeef"),
        "{d}"
    );
    assert!(d.contains("test.rx_loss_permille"));
    assert!(d.contains("final_read_back        = all"), "{d}");
}

#[test]
fn defaults_apply() {
    let c = p(&minimal_without("")).expect("parses");
    assert_eq!(c.group, SocketAddr::V4(DEFAULT_GROUP));
    assert_eq!(c.repair_group, SocketAddr::V4(DEFAULT_REPAIR_GROUP));
    assert_eq!(c.interface, Ipv4Addr::UNSPECIFIED);
    assert_eq!(c.boot_window, Duration::from_secs(30));
    assert_eq!(c.window_blocks, 16);
    assert_eq!(c.max_block_size, 262_144);
    assert_eq!(c.activation, Activation::InPlace);
    assert_eq!(c.stall_timeout, Duration::from_secs(60));
    assert_eq!(c.rcvbuf_bytes, 2 << 20);
    assert_eq!(c.nack_backoff, Duration::from_millis(12));
    assert_eq!(c.nack_backoff_shape, 1);
    assert!(c.exit_when_current);
    assert_eq!(c.final_read_back, FinalReadBack::Stale);
    assert_eq!(
        c.test,
        TestOptions {
            rx_loss_seed: 1,
            ..TestOptions::default()
        }
    );
    assert!(c.device_id_source.is_guess());
    assert_eq!(
        c.device_id,
        device_id::hostname_device_id("host1", "mtd:firmware")
    );
    assert!(c.describe().contains("GUESSED"), "{}", c.describe());
}

#[test]
fn each_required_key_missing_is_named() {
    for key in [
        "board",
        "current_version",
        "repair_server",
        "public_key",
        "target",
    ] {
        let e = p(&minimal_without(key)).expect_err(key);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        let line = e.to_string();
        assert!(
            line.contains(&format!("key `{key}`")) && line.contains("/etc/firmcast/agent.toml"),
            "{line}"
        );
        assert!(line.contains("missing"), "{line}");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = p(&format!("{}bogus_key = 1\n", minimal_without(""))).expect_err("unknown");
    assert_eq!(e.key.as_deref(), Some("bogus_key"), "{e}");
    assert_eq!(e.line, Some(6));
    assert!(!e.to_string().contains('\n'), "{e}");
    let e =
        p(&format!("{}[test]\nrx_loss = 5\n", minimal_without(""))).expect_err("unknown in [test]");
    assert_eq!(e.key.as_deref(), Some("rx_loss"), "{e}");
    let e = p(&format!("{}[other]\nx = 5\n", minimal_without(""))).expect_err("unknown table");
    assert_eq!(e.key.as_deref(), Some("other"), "{e}");
}

/// Keys are known per table: a top-level key inside a table, a table's key
/// at the top level, or a table's name used as a key are each an error
/// naming it; an empty table is a table all the same.
#[test]
fn keys_belong_to_their_table() {
    let base = minimal_without("");
    let e = p(&format!("{base}[hooks]\nboard = \"x\"\n")).expect_err("board in [hooks]");
    assert_eq!(e.key.as_deref(), Some("board"), "{e}");
    assert!(e.message.contains("unknown key in [hooks]"), "{e}");
    let e = p(&format!("{base}timeout_secs = 5\n")).expect_err("a [hooks] key at the top");
    assert_eq!(e.key.as_deref(), Some("timeout_secs"), "{e}");
    let e = p(&format!("{base}hooks = \"x\"\n")).expect_err("a table name as a key");
    assert!(e.message.contains("a [hooks] table"), "{e}");
    let e = p(&format!("{base}[command]\n")).expect_err("[command] without its activation");
    assert_eq!(e.key.as_deref(), Some("command"), "{e}");
    let c = p(&format!(
        "{base}[hooks]\ntimeout_secs = 7\n[test]\nblock_delay_ms = 3\n"
    ))
    .expect("hooks and test keys");
    assert_eq!(c.hooks.timeout, Duration::from_secs(7));
    assert_eq!(c.test.block_delay, Duration::from_millis(3));
}

#[test]
fn wrong_types_name_the_key() {
    let e = p(&format!(
        "{}window_blocks = \"many\"\n",
        minimal_without("")
    ))
    .expect_err("type");
    assert_eq!(e.key.as_deref(), Some("window_blocks"), "{e}");
    let e = p(&format!(
        "{}[test]\nrx_loss_permille = 1001\n",
        minimal_without("")
    ))
    .expect_err("range");
    assert_eq!(e.key.as_deref(), Some("test.rx_loss_permille"), "{e}");
    let e = p(&format!(
        "{}group = \"10.0.0.1:7854\"\n",
        minimal_without("")
    ))
    .expect_err("unicast group");
    assert_eq!(e.key.as_deref(), Some("group"), "{e}");
    let e = p(&format!(
        "{}activation = \"ab-boot\"\n",
        minimal_without("")
    ))
    .expect_err("activation");
    assert_eq!(e.key.as_deref(), Some("activation"), "{e}");
    let e = p(&format!("{}device_id = \"xyz\"\n", minimal_without(""))).expect_err("device id");
    assert_eq!(e.key.as_deref(), Some("device_id"), "{e}");
    let e = p("board = \n").expect_err("syntax");
    assert!(e.line.is_some() && !e.to_string().contains('\n'), "{e}");
    let e = p(&minimal_without("target").replace("board", "target = \"flash0\"\nboard"))
        .expect_err("target");
    assert_eq!(e.key.as_deref(), Some("target"), "{e}");
}

#[test]
fn errors_name_the_line() {
    let base = minimal_without("");
    // Type errors, from the parser's view of the file.
    for (extra, key, what) in [
        (
            "window_blocks = \"many\"\n",
            "window_blocks",
            "expected an integer, found a string",
        ),
        (
            "window_blocks = 5000000000\n",
            "window_blocks",
            "out of range",
        ),
        ("target_size = -1\n", "target_size", "out of range"),
        (
            "exit_when_current = 1\n",
            "exit_when_current",
            "expected true or false",
        ),
        (
            "reboot_command = \"/sbin/reboot\"\n",
            "reboot_command",
            "expected an array of strings",
        ),
        (
            "reboot_command = [\"/sbin/reboot\", 1]\n",
            "reboot_command",
            "found an integer in it",
        ),
        ("device_id = true\n", "device_id", "integer or a hex string"),
        ("device_id = -1\n", "device_id", "negative"),
        ("test = 1\n", "test", "expected a [test] table"),
        ("window_blocks = 0\n", "window_blocks", "must be 1 to 1024"),
        (
            "max_buffer_bytes = 4096\n",
            "max_buffer_bytes",
            "must be 65536 to 1073741824",
        ),
        (
            "final_read_back = \"some\"\n",
            "final_read_back",
            "`some` is not one of \"stale\", \"all\"",
        ),
        (
            "group = \"10.0.0.1:7854\"\n",
            "group",
            "not a multicast address",
        ),
    ] {
        let e = p(&format!("{base}{extra}")).expect_err(extra);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
        let line = e.to_string();
        assert!(line.contains(what), "{line}");
        assert!(
            line.starts_with("config /etc/firmcast/agent.toml line 6: key `"),
            "{line}"
        );
    }
    // Inside a table: `table.key`, the line of the key.
    for (table, extra, key) in [
        ("test", "rx_loss_permille = \"5\"", "test.rx_loss_permille"),
        ("test", "rx_loss_permille = 1001", "test.rx_loss_permille"),
        ("confirm", "at_startup = \"yes\"", "confirm.at_startup"),
        ("confirm", "timeout_secs = 0", "confirm.timeout_secs"),
        ("command", "run = \"/sbin/sysupgrade\"", "command.run"),
    ] {
        let text = format!("{base}\n[{table}]\n# why\n{extra}\n");
        let e = p(&text).expect_err(extra);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line, Some(9), "{e}");
    }
    // Syntax errors.
    for (extra, key, what) in [
        (
            "window_blocks = 8\nwindow_blocks = 8\n",
            "window_blocks",
            "duplicate key",
        ),
        ("board = \"acme,rt1\n", "board", "unterminated string"),
        ("window_blocks = 1.5\n", "window_blocks", "floats"),
        ("test.rx_loss_permille = 5\n", "test", "dotted keys"),
        ("[test]\n[test]\n", "test", "defined twice"),
    ] {
        let e = p(&format!("{base}{extra}")).expect_err(extra);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line, Some(6 + extra.matches('\n').count() - 1), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    // A missing key has no line.
    let e = p(&minimal_without("board")).expect_err("missing");
    assert_eq!((e.key.as_deref(), e.line), (Some("board"), None), "{e}");
    // A check that names a table points at its header.
    let e = p(&format!("{base}\n[ab]\nslot_a = \"mtd:a\"\n")).expect_err("[ab] unused");
    assert_eq!((e.key.as_deref(), e.line), (Some("ab"), Some(7)), "{e}");
}

#[test]
fn crlf_comments_escapes_and_integer_forms() {
    let lf = full();
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(p(&crlf).expect("crlf"), p(&lf).expect("lf"));
    let text = full()
        .replace(
            "board = \"acme,rt1\"",
            "board = \"acme\\u002crt1\"   # escaped comma ",
        )
        .replace("target_size = 1048576", "target_size = 0x10_0000")
        .replace("rcvbuf_bytes = 1048576", "rcvbuf_bytes = 1_048_576\t")
        .replace(
            "target = \"simnor:/tmp/fc-nor.bin\"",
            "target = 'simnor:/tmp/fc-nor.bin'",
        );
    assert_eq!(p(&text).expect("variants"), p(&lf).expect("lf"));
    let c = p(&format!(
        "{}reboot_command = [\n  \"/bin/sh\", # shell\n  \"-c\",\n  \"echo \\\"bye\\\"\",\n]\n",
        minimal_without("")
    ))
    .expect("multi-line array");
    assert_eq!(c.reboot_command, ["/bin/sh", "-c", "echo \"bye\""]);
}

/// The shapes the integration tests write (tests/src/lib.rs `agent_config`,
/// tests/src/qemu.rs `agent_toml`) and bench/fleet writes.
#[test]
fn test_harness_configs_parse() {
    let harness = format!(
        "board = \"acme,rt1\"\ncurrent_version = \"1.0.0\"\ngroup = \"239.255.77.1:7854\"\nrepair_group = \"239.255.77.2:7855\"\n\
         interface = \"127.0.0.1\"\nrepair_server = \"127.0.0.1:7855\"\npublic_key = \"{KEY}\"\n\
         target = \"simnor:/tmp/x/d1.flash\"\ntarget_size = 4194304\nboot_window_secs = 20\nwindow_blocks = 8\n\
         stall_timeout_secs = 30\n\n[test]\nrx_loss_permille = 20\nrx_loss_seed = 7939\nblock_delay_ms = 0\n"
    );
    let c = p(&harness).expect("agent_config");
    assert_eq!(c.test.rx_loss_permille, 20);
    assert_eq!(c.test.rx_loss_seed, 7939);
    let qemu = format!(
        "board = \"acme,rt1\"\ncurrent_version = \"1.0.0\"\n\
         group = \"239.255.77.1:7854\"\nrepair_group = \"239.255.77.2:7855\"\ninterface = \"10.0.2.15\"\n\
         repair_server = \"10.0.2.2:7855\"\npublic_key = \"{KEY}\"\n\
         target = \"mtd:/dev/mtd0\"\nactivation = \"none\"\nwindow_blocks = 4\n\
         boot_window_secs = 90\nstall_timeout_secs = 90\nrcvbuf_bytes = 1048576\n\n[test]\nblock_delay_ms = 250\n"
    );
    let c = p(&qemu).expect("agent_toml");
    assert_eq!(c.test.block_delay, Duration::from_millis(250));
    let bench = format!(
        "board = \"acme,rt1\"\ncurrent_version = \"1.0.0\"\ngroup = \"239.77.0.1:7854\"\nrepair_group = \"239.77.0.2:7855\"\n\
         interface = \"10.77.1.3\"\nrepair_server = \"10.77.0.2:7855\"\npublic_key = \"{KEY}\"\n\
         target = \"file:/tmp/d3.out\"\ntarget_size = 1048576\nboot_window_secs = 60\n\
         stall_timeout_secs = 60\ndevice_id = 3\n"
    );
    assert_eq!(p(&bench).expect("bench/fleet").device_id, 3);
}

#[test]
fn device_id_forms() {
    let base = minimal_without("");
    assert_eq!(
        p(&format!("{base}device_id = 42\n")).expect("ok").device_id,
        42
    );
    assert_eq!(
        p(&format!("{base}device_id = \"ff\"\n"))
            .expect("ok")
            .device_id,
        255
    );
    assert_eq!(
        p(&format!("{base}device_id = \"0x10\"\n"))
            .expect("ok")
            .device_id,
        16
    );
    assert!(p(&format!("{base}device_id = -1\n")).is_err());
}

#[test]
fn device_id_default_differs_per_target() {
    let a = device_id::hostname_device_id("router", "simnor:/tmp/a");
    let b = device_id::hostname_device_id("router", "simnor:/tmp/b");
    let c = device_id::hostname_device_id("other", "simnor:/tmp/a");
    assert_ne!(a, b);
    assert_ne!(a, c);
}

/// R-LOCAL-6: identical configs on two hosts with the same hostname get
/// different ids from their machine ids, and --check-config says where
/// the id came from.
#[test]
fn default_device_id_from_machine_id_and_mac() {
    let text = minimal_without("");
    let host = |mid: &str| HostFacts {
        machine_id: Some(mid.to_string()),
        ..HostFacts::hostname_only("router")
    };
    let path = Path::new("/etc/firmcast/agent.toml");
    let a = parse_with(path, &text, &host("0123456789abcdef0123456789abcdef")).expect("a");
    let b = parse_with(path, &text, &host("fedcba9876543210fedcba9876543210")).expect("b");
    assert_ne!(a.device_id, b.device_id);
    assert!(
        a.describe().contains("from /etc/machine-id"),
        "{}",
        a.describe()
    );
    let with_link = HostFacts {
        links: vec![device_id::Link {
            name: "eth0".into(),
            addrs: vec![Ipv4Addr::new(192, 168, 1, 1)],
            mac: "02:00:00:00:00:01".into(),
        }],
        ..HostFacts::hostname_only("router")
    };
    let c = parse_with(
        path,
        &format!("{text}interface = \"192.168.1.1\"\n"),
        &with_link,
    )
    .expect("mac");
    assert!(
        c.describe().contains("MAC 02:00:00:00:00:01 of eth0"),
        "{}",
        c.describe()
    );
    // device_id_file wins, and must be readable.
    let dir = TempDir::new("idfile");
    std::fs::write(dir.0.join("serial"), "SN-42\n").expect("write");
    let cfg = dir.0.join("agent.toml");
    let d = parse_with(
        &cfg,
        &format!("{text}device_id_file = \"serial\"\n"),
        &host("0123456789abcdef0123456789abcdef"),
    )
    .expect("file");
    assert_eq!(d.device_id_source, IdSource::File(dir.0.join("serial")));
    let e = parse(&cfg, &format!("{text}device_id_file = \"nope\"\n"), "h").expect_err("missing");
    assert_eq!(e.key.as_deref(), Some("device_id_file"));
    let e = parse(
        &cfg,
        &format!("{text}device_id_file = \"serial\"\ndevice_id = 3\n"),
        "h",
    )
    .expect_err("both");
    assert_eq!(e.key.as_deref(), Some("device_id_file"));
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("fc-agent-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn public_key_inline_and_from_file() {
    let dir = TempDir::new("pk");
    std::fs::write(dir.0.join("op.pub"), format!("{KEY}\n")).expect("write");
    let cfg = dir.0.join("agent.toml");
    let text = minimal_without("public_key");
    // relative to the config file's directory
    let c = parse(&cfg, &format!("{text}public_key = \"op.pub\"\n"), "h").expect("relative");
    assert_eq!(
        c.public_key,
        p(&minimal_without("")).expect("ok").public_key
    );
    assert_eq!(c.public_key_file, Some(dir.0.join("op.pub")));
    let abs = dir.0.join("op.pub");
    let c = parse(
        &cfg,
        &format!("{text}public_key = \"{}\"\n", abs.display()),
        "h",
    )
    .expect("absolute");
    assert_eq!(c.public_key[0], 0x3b);
    // a missing file
    let e =
        parse(&cfg, &format!("{text}public_key = \"nope.pub\"\n"), "h").expect_err("missing file");
    assert_eq!(e.key.as_deref(), Some("public_key"));
    // a file with junk
    std::fs::write(dir.0.join("bad.pub"), "hello\n").expect("write");
    let e = parse(&cfg, &format!("{text}public_key = \"bad.pub\"\n"), "h").expect_err("junk file");
    assert!(e.to_string().contains("64 hex"), "{e}");
    // The typed format (R-LOCAL-7).
    std::fs::write(
        dir.0.join("typed.pub"),
        format!("{PUBLIC_KEY_HEADER}\n{KEY}\n"),
    )
    .expect("write");
    let c = parse(&cfg, &format!("{text}public_key = \"typed.pub\"\n"), "h").expect("typed");
    assert_eq!(c.public_key[0], 0x3b);
}

/// R-LOCAL-7: a secret key given as `public_key` is refused, typed or
/// in the old 128-hex-digit form.
#[test]
fn secret_key_as_public_key_is_refused() {
    let dir = TempDir::new("sk");
    let cfg = dir.0.join("agent.toml");
    let text = minimal_without("public_key");
    std::fs::write(
        dir.0.join("firmcast.key"),
        format!("{SECRET_KEY_HEADER}\n{KEY}\n"),
    )
    .expect("write");
    let e = parse(&cfg, &format!("{text}public_key = \"firmcast.key\"\n"), "h")
        .expect_err("typed secret key");
    assert_eq!(e.key.as_deref(), Some("public_key"));
    assert!(e.to_string().contains("is a secret key"), "{e}");
    println!("secret key as public_key: {e}");
    std::fs::write(dir.0.join("long.key"), format!("{KEY}{KEY}\n")).expect("write");
    let e = parse(&cfg, &format!("{text}public_key = \"long.key\"\n"), "h")
        .expect_err("untyped secret key");
    assert!(e.to_string().contains("secret key"), "{e}");
}

#[test]
fn bad_hex_key_is_an_error() {
    let text = minimal_without("public_key");
    let bad = KEY.replace('3', "g");
    let e = p(&format!("{text}public_key = \"{bad}\"\n")).expect_err("bad hex");
    assert_eq!(e.key.as_deref(), Some("public_key"));
    assert!(e.to_string().contains("not hex"), "{e}");
    let e = p(&format!("{text}public_key = \"{}\"\n", &KEY[..62])).expect_err("short");
    assert!(e.to_string().contains("got 62"), "{e}");
}

#[test]
fn current_version_from_file() {
    let dir = TempDir::new("ver");
    std::fs::write(dir.0.join("version"), "3.1.4\nbuilt by ci\n").expect("write");
    let cfg = dir.0.join("agent.toml");
    let text = minimal_without("current_version");
    let c = parse(
        &cfg,
        &format!("{text}current_version_file = \"version\"\n"),
        "h",
    )
    .expect("file");
    assert_eq!(c.current_version, "3.1.4");
    let e = parse(
        &cfg,
        &format!("{text}current_version_file = \"nope\"\n"),
        "h",
    )
    .expect_err("missing");
    assert_eq!(e.key.as_deref(), Some("current_version_file"));
    let both = format!("{text}current_version_file = \"version\"\ncurrent_version = \"1\"\n");
    assert!(parse(&cfg, &both, "h").is_err());
}

/// The shipped board files (board-configs/*.toml): each path and its text.
pub(super) fn board_config_files() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("board-configs/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read");
            (path, text)
        })
        .collect();
    files.sort();
    files
}

mod board_configs {
    use super::*;

    /// Every shipped board file uses only known keys with valid values (file
    /// references are replaced by inline values, as the device's files are absent here).
    #[test]
    fn shipped_board_configs_parse() {
        let mut n = 0;
        for (path, text) in board_config_files() {
            let text: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("current_version_file") {
                        "current_version = \"1.0.0\"".to_string()
                    } else if l.starts_with("public_key") && l.contains('/') {
                        format!("public_key = \"{}\"", "ab".repeat(32))
                    } else {
                        l.to_string()
                    }
                })
                .map(|l| l + "\n")
                .collect();
            let c = parse(&path, &text, "host").unwrap_or_else(|e| panic!("{e}"));
            assert!(c.board.starts_with("acme,"), "{}", path.display());
            n += 1;
        }
        assert!(n >= 3, "expected the three example boards, found {n}");
    }
}

//! The board configuration: a TOML file (default `/etc/firmcast/agent.toml`)
//! parsed into [`Config`]. Every key is documented, with its default and an
//! example, in `board-configs/README.md`.
//!
//! ```text
//!  text ─▶ toml_subset::parse ─▶ Document ─▶ schema::read_raw ─▶ Raw ─▶ build ─▶ Config
//!          (syntax: the TOML      (entries    (every key of the       (values checked,
//!           the boards use)        + lines)    schema, typed)           defaults)
//! ```
//!
//! The file is read by `toml_subset`, a small parser for the part of TOML
//! that board configurations use, not by the `toml` crate: that one was the
//! biggest piece of the static device binary (see the module's docs).
//!
//! Every error is one line naming the file, the line (when the file has one
//! for it) and the key ([`ConfigError`]); the agent turns it into exit code 2.
//! Unknown keys and tables are errors, so a typo never falls back to a default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schema::{read_raw, Raw, RawAb, RawHooks};

use crate::device_id::{self, HostFacts, IdSource};
use crate::features::{self, Feature};
use crate::hooks::HooksConfig;
use crate::netspec::{self, Interface, Server};
use crate::resume::FinalReadBack;

pub mod schema;
mod toml_subset;
pub mod writer;

/// Where the agent looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/firmcast/agent.toml";

/// Default data group.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 7854);
/// Default repair group.
pub const DEFAULT_REPAIR_GROUP: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 2), 7855);
/// Default boot window.
pub const DEFAULT_BOOT_WINDOW_SECS: u64 = 30;
/// Default receive window, in blocks.
pub const DEFAULT_WINDOW_BLOCKS: u32 = 16;
/// Default memory budget of the window's block buffers (R-PACE-4): 9 slots
/// of 64 KiB blocks, 4 of 128 KiB; a smaller window evicts blocks whose
/// repairs are still on their way under heavy loss (bench/README.md).
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 640 * 1024;
/// Default largest block size accepted.
pub const DEFAULT_MAX_BLOCK_SIZE: u32 = 262_144;
/// Default stall timeout.
pub const DEFAULT_STALL_TIMEOUT_SECS: u64 = 60;
/// Default hard deadline for a whole update run (R-RUN-2).
pub const DEFAULT_RUN_DEADLINE_SECS: u64 = 3600;
/// Default socket receive buffer.
pub const DEFAULT_RCVBUF_BYTES: u64 = 2 * 1024 * 1024;
/// Default longest NACK back-off, milliseconds (R-NACK-2).
pub const DEFAULT_NACK_BACKOFF_MS: u64 = 12;
/// Default NACK back-off shape (1: uniform; R-NACK-2).
pub const DEFAULT_NACK_BACKOFF_SHAPE: u32 = 1;

/// How a written image becomes the one that boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Overwrite the running slot; the header block (block 0) is written last,
    /// after being invalidated, so a torn update never shows a valid header.
    InPlace,
    /// Write the image in block order; activation is someone else's job.
    None,
    /// A/B slots through the U-Boot environment: write the inactive slot,
    /// verify, then one environment write flips the slot variable and arms
    /// the bootloader's bootcount rollback (see [`AbConfig`]).
    AbUboot,
    /// Hand the verified image to a board command (see [`CommandConfig`]).
    Command,
}

impl Activation {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::InPlace => "in-place",
            Activation::None => "none",
            Activation::AbUboot => "ab-uboot",
            Activation::Command => "command",
        }
    }
}

/// Default U-Boot variable holding the active slot.
pub const DEFAULT_SLOT_VAR: &str = "boot_slot";
/// Default U-Boot variable armed after an update (U-Boot's bootcount feature).
pub const DEFAULT_UPGRADE_AVAILABLE_VAR: &str = "upgrade_available";
/// Default U-Boot boot counter variable.
pub const DEFAULT_BOOTCOUNT_VAR: &str = "bootcount";
/// Default variable in which the agent records the slot it activated.
pub const DEFAULT_ACTIVATED_VAR: &str = "firmcast_activated";
/// Default timeout of the activation command.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 600;
/// Default timeout of the health check.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 60;

/// Byte order of the environment's CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvEndian {
    /// The CPU's own (what U-Boot on this board writes).
    Native,
    /// Little-endian.
    Little,
    /// Big-endian.
    Big,
}

impl EnvEndian {
    /// The flasher's value.
    pub fn resolve(self) -> flasher::uboot_env::Endian {
        use flasher::uboot_env::Endian;
        match self {
            EnvEndian::Native => Endian::native(),
            EnvEndian::Little => Endian::Little,
            EnvEndian::Big => Endian::Big,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            EnvEndian::Native => "native",
            EnvEndian::Little => "little",
            EnvEndian::Big => "big",
        }
    }
}

/// The `[ab]` table: A/B slots and the U-Boot variables that choose between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbConfig {
    /// Target spec of slot A (e.g. `mtd:firmware_a`).
    pub slot_a: String,
    /// Target spec of slot B.
    pub slot_b: String,
    /// Variable naming the slot U-Boot boots.
    pub slot_var: String,
    /// Its value for slot A.
    pub slot_a_value: String,
    /// Its value for slot B.
    pub slot_b_value: String,
    /// Set to 1 when a new slot is activated, cleared on confirm.
    pub upgrade_available_var: String,
    /// Reset to 0 on activation and confirm.
    pub bootcount_var: String,
    /// Where the agent records the slot value it activated (rollback detection).
    pub activated_var: String,
    /// fw_env.config describing where the environment lives.
    pub env_config: PathBuf,
    /// CRC byte order.
    pub env_endian: EnvEndian,
    /// Accept an environment with one copy (R-LOCAL-5): a power cut while
    /// saving it can leave no valid environment at all.
    pub allow_single_copy_env: bool,
}

/// The `[command]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// argv; `{image}`, `{size}`, `{version}` are replaced.
    pub argv: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// The `[confirm]` table and the reboot command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfirmConfig {
    /// Run the confirm step at every start, before listening.
    pub at_startup: bool,
    /// argv of the health check; empty = healthy once the agent runs.
    pub health_check: Vec<String>,
    /// Killed (and counted as failed) after this long.
    pub health_timeout: Duration,
}

/// Test-only options (the `[test]` table). Never set these on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestOptions {
    /// Drop this many per thousand received datagrams before the protocol sees them.
    pub rx_loss_permille: u32,
    /// Seed of the loss generator.
    pub rx_loss_seed: u64,
    /// Sleep this long after each block write.
    pub block_delay: Duration,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Board id, e.g. `acme,rt1`.
    pub board: String,
    /// The version running now.
    pub current_version: String,
    /// Where `current_version` was read from, if from a file.
    pub current_version_file: Option<PathBuf>,
    /// Data multicast group.
    pub group: SocketAddr,
    /// `source`: join `group` from this sender only (R-NET-1).
    pub source: Option<IpAddr>,
    /// Repair multicast group.
    pub repair_group: SocketAddr,
    /// `repair_source`: join `repair_group` from this address only
    /// ([`crate::netspec::repair_source`] gives the default).
    pub repair_source: Option<IpAddr>,
    /// Address of the interface to join on (unspecified: let the kernel
    /// choose); for a name or `auto`, unspecified until [`crate::netspec::resolve`].
    pub interface: IpAddr,
    /// `interface` as configured: address, name or `auto`.
    pub interface_spec: Interface,
    /// Where NACKs and Status reports go; for a host name, `0.0.0.0:port`
    /// until [`crate::netspec::resolve`].
    pub repair_server: SocketAddr,
    /// `repair_server` as configured: `IPv4:port` or `host:port`.
    pub repair_server_spec: Server,
    /// The operator's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Where `public_key` was read from, if from a file.
    pub public_key_file: Option<PathBuf>,
    /// `device_key`: this device's own Ed25519 key file and the seed it
    /// holds; every Status is signed with it (R-STAT-4, R-WIRE-7).
    pub device_key: Option<(PathBuf, [u8; 32])>,
    /// Target spec: `file:PATH`, `simnor:PATH`, `simnand:PATH`, `mtd:NAME`.
    pub target: String,
    /// Size used to create a missing sim/file target.
    pub target_size: Option<u64>,
    /// How long to wait for an Announce before exiting 0.
    pub boot_window: Duration,
    /// Block buffers in the receive window.
    pub window_blocks: u32,
    /// Bytes the window's block buffers may take (R-PACE-4).
    pub max_buffer_bytes: u64,
    /// Largest block size accepted.
    pub max_block_size: u32,
    /// This device's id.
    pub device_id: u64,
    /// Where `device_id` came from (R-LOCAL-6).
    pub device_id_source: IdSource,
    /// Activation method.
    pub activation: Activation,
    /// No progress for this long while receiving → exit 5.
    pub stall_timeout: Duration,
    /// A run that has not finished after this long exits 5 (R-RUN-2).
    pub run_deadline: Duration,
    /// Requested SO_RCVBUF.
    pub rcvbuf_bytes: usize,
    /// Longest random wait before a NACK (R-NACK-2).
    pub nack_backoff: Duration,
    /// The wait is the largest of this many uniform draws (R-NACK-2).
    pub nack_backoff_shape: u32,
    /// Exit 0 at once when the offered image is not newer.
    pub exit_when_current: bool,
    /// Where the anti-rollback floor is kept besides the U-Boot environment
    /// (R-ROLL-2); `None`: only `ab-uboot` keeps one.
    pub floor_file: Option<PathBuf>,
    /// Which blocks the final read-back reads (R-VER-2).
    pub final_read_back: FinalReadBack,
    /// Test-only knobs.
    pub test: TestOptions,
    /// `[ab]`: required with `activation = "ab-uboot"`.
    pub ab: Option<AbConfig>,
    /// `[command]`: required with `activation = "command"`.
    pub command: Option<CommandConfig>,
    /// `[confirm]`.
    pub confirm: ConfirmConfig,
    /// Run after a successful update (exit 10); empty = none.
    pub reboot_command: Vec<String>,
    /// The user the agent becomes once everything is open (R-LOCAL-3);
    /// `root` = stay root.
    pub user: String,
    /// `[hooks]`: commands around an update ([`crate::hooks`]).
    pub hooks: HooksConfig,
    /// Where the state file goes ([`crate::state_file`]); `None`: nowhere.
    pub state_file: Option<PathBuf>,
}

/// A configuration error: one line naming the file and, where it can, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key at fault (`test.rx_loss_permille` for keys in `[test]`).
    pub key: Option<String>,
    /// The 1-based line: of the syntax error, or of the key at fault when
    /// the file sets it.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    // Out of line: `build` checks dozens of keys, and an inlined copy of
    // this constructor at every check was most of its code on the device.
    #[cold]
    #[inline(never)]
    fn key(file: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: Some(key.to_string()),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        // One line, whatever the parser said.
        let msg: String = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        write!(f, ": {msg}")
    }
}

impl std::error::Error for ConfigError {}

fn parse_hex_u64(s: &str) -> Result<u64, &'static str> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be an integer or 1 to 16 hex digits (optionally 0x-prefixed)");
    }
    u64::from_str_radix(t, 16).map_err(|_| "not a hex number")
}

/// Read and resolve the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse_with(path, &read_config(path)?, &HostFacts::read())
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: None,
        line: None,
        message: format!("cannot read: {e}"),
    })
}

/// `--check-config --lint`: read and check the config at `path` on the
/// build host: the device's own files are not read (see [`HostFacts::lint`]).
pub fn load_lint(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config(path)?;
    let host = HostFacts {
        lint: true,
        ..HostFacts::hostname_only("lint")
    };
    parse_with(path, &text, &host)
}

/// [`parse_with`] on a host that offers only its `hostname` for the
/// default device id.
pub fn parse(path: &Path, text: &str, hostname: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, &HostFacts::hostname_only(hostname))
}

/// Resolve `text` (the content of `path`); relative paths in it are relative
/// to the file's directory. `host` feeds the default device id.
pub fn parse_with(path: &Path, text: &str, host: &HostFacts) -> Result<Config, ConfigError> {
    let doc = toml_subset::parse(text).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: e.key,
        line: Some(e.line),
        message: e.message,
    })?;
    let raw = read_raw(path, &doc)?;
    build(path, raw, host).map_err(|mut e| {
        // The checks below know the key at fault; the document knows its line.
        if e.line.is_none() {
            e.line = e.key.as_deref().and_then(|k| doc.line_of(k));
        }
        e
    })
}

/// Check and resolve the values, fill in the defaults.
fn build(path: &Path, mut raw: Raw, host: &HostFacts) -> Result<Config, ConfigError> {
    // Fields are taken, never moved out of `raw`: a partly moved `raw`
    // would be dropped field by field at every early return below.
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let file = path;

    let board = required(
        file,
        "board",
        raw.board.take(),
        "the board id, e.g. board = \"acme,rt1\"",
    )?;
    if board.is_empty() || board.len() > proto::wire::MAX_BOARD_LEN {
        return Err(ConfigError::key(
            file,
            "board",
            format!("must be 1 to {} bytes", proto::wire::MAX_BOARD_LEN),
        ));
    }

    let (current_version, current_version_file) = match (raw.current_version.take(), raw.current_version_file.take()) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(file, "current_version", "set only one of current_version and current_version_file"))
        }
        (Some(v), None) => (v.trim().to_string(), None),
        (None, Some(p)) => {
            let p = resolve(base, &p);
            let text = device_file(host, &p, "lint").map_err(|e| {
                ConfigError::key(file, "current_version_file", format!("cannot read {}: {e}", p.display()))
            })?;
            let first = text.lines().next().unwrap_or("").trim().to_string();
            if first.is_empty() {
                return Err(ConfigError::key(file, "current_version_file", format!("first line of {} is empty", p.display())));
            }
            (first, Some(p))
        }
        (None, None) => {
            return Err(ConfigError::key(
                file,
                "current_version",
                "missing (required: current_version = \"1.0.0\" or current_version_file = \"/etc/version\")",
            ))
        }
    };
    let key = if current_version_file.is_some() {
        "current_version_file"
    } else {
        "current_version"
    };
    if current_version.is_empty() || current_version.len() > proto::wire::MAX_VERSION_LEN {
        return Err(ConfigError::key(
            file,
            key,
            format!(
                "version must be 1 to {} bytes",
                proto::wire::MAX_VERSION_LEN
            ),
        ));
    }

    let group = multicast(file, "group", raw.group.take(), DEFAULT_GROUP)?;
    let repair_group = multicast(
        file,
        "repair_group",
        raw.repair_group.take(),
        DEFAULT_REPAIR_GROUP,
    )?;
    let interface_spec = match raw.interface.take() {
        None => Interface::Any,
        Some(s) => Interface::parse(&s).map_err(|why| ConfigError::key(file, "interface", why))?,
    };
    // A name or `auto` is looked up at start (netspec::resolve).
    let interface = interface_spec.fixed_for(group);
    let repair_server = required(
        file,
        "repair_server",
        raw.repair_server.take(),
        "where NACKs go, e.g. repair_server = \"10.0.0.2:7855\" or \"firmcast.lan:7855\"",
    )?;
    let repair_server_spec = Server::parse(&repair_server)
        .map_err(|why| ConfigError::key(file, "repair_server", why))?;
    let repair_server = repair_server_spec.fixed_for(group);
    let source_of = |key: &str, v: Option<String>| {
        v.map(|s| netspec::parse_source(&s).map_err(|why| ConfigError::key(file, key, why)))
            .transpose()
    };
    let source = source_of("source", raw.source.take())?;
    let repair_source = source_of("repair_source", raw.repair_source.take())?;
    netspec::Addresses {
        group,
        source,
        repair_group,
        repair_source,
        interface: &interface_spec,
        repair_server: &repair_server_spec,
    }
    .check()
    .map_err(|(key, why)| ConfigError::key(file, key, why))?;

    let pk = required(
        file,
        "public_key",
        raw.public_key.take(),
        "64 hex characters, or the path of a `firmcast keygen` .pub file",
    )?;
    let (public_key, public_key_file) = public_key(file, base, &pk, host)?;
    let device_key = match &raw.device_key {
        Some(v) => Some(device_key(file, base, v, host)?),
        None => None,
    };

    // With A/B slots the target is whichever slot is inactive; `target`
    // (only used for the default device id then) defaults to slot A.
    let target = match (&raw.target, raw.activation.as_deref(), &raw.ab) {
        (None, Some("ab-uboot"), Some(ab)) => ab.slot_a.clone(),
        _ => raw.target.clone(),
    };
    let target = required(file, "target", target, "e.g. target = \"mtd:firmware\"")?;
    check_target(file, &target)?;
    if raw.target_size == Some(0) {
        return Err(ConfigError::key(
            file,
            "target_size",
            "must be greater than 0",
        ));
    }

    let window_blocks = raw.window_blocks.unwrap_or(DEFAULT_WINDOW_BLOCKS);
    if !(1..=1024).contains(&window_blocks) {
        return Err(ConfigError::key(file, "window_blocks", "must be 1 to 1024"));
    }
    let max_buffer_bytes = raw.max_buffer_bytes.unwrap_or(DEFAULT_MAX_BUFFER_BYTES);
    if !(64 * 1024..=1 << 30).contains(&max_buffer_bytes) {
        return Err(ConfigError::key(
            file,
            "max_buffer_bytes",
            "must be 65536 to 1073741824",
        ));
    }
    let max_block_size = raw.max_block_size.unwrap_or(DEFAULT_MAX_BLOCK_SIZE);
    if !(proto::wire::MIN_CHUNK_SIZE..=proto::wire::MAX_BLOCK_SIZE).contains(&max_block_size) {
        return Err(ConfigError::key(
            file,
            "max_block_size",
            format!(
                "must be {} to {} bytes",
                proto::wire::MIN_CHUNK_SIZE,
                proto::wire::MAX_BLOCK_SIZE
            ),
        ));
    }
    let nack_backoff_ms = raw.nack_backoff_ms.unwrap_or(DEFAULT_NACK_BACKOFF_MS);
    if !(2..=10_000).contains(&nack_backoff_ms) {
        return Err(ConfigError::key(
            file,
            "nack_backoff_ms",
            "must be 2 to 10000 milliseconds",
        ));
    }
    let nack_backoff_shape = raw.nack_backoff_shape.unwrap_or(DEFAULT_NACK_BACKOFF_SHAPE);
    if !(1..=64).contains(&nack_backoff_shape) {
        return Err(ConfigError::key(
            file,
            "nack_backoff_shape",
            "must be 1 to 64",
        ));
    }
    let (device_id, device_id_source) = device_id_of(
        file,
        base,
        raw.device_id,
        raw.device_id_file.take(),
        host,
        &interface_spec,
        &target,
    )?;
    let activation = match raw.activation.as_deref() {
        None | Some("in-place") => Activation::InPlace,
        Some("none") => Activation::None,
        Some("ab-uboot") => Activation::AbUboot,
        Some("command") => Activation::Command,
        Some(other) => {
            return Err(ConfigError::key(
                file,
                "activation",
                format!(
                    "`{other}` is not one of \"in-place\", \"ab-uboot\", \"command\", \"none\""
                ),
            ))
        }
    };
    match activation {
        Activation::AbUboot => features::require(file, "activation", Feature::AbUboot)?,
        Activation::Command => features::require(file, "activation", Feature::Command)?,
        Activation::InPlace | Activation::None => {}
    }
    if raw.device_key.is_some() {
        features::require(file, "device_key", Feature::DeviceKey)?;
    }
    if raw.test.is_some() {
        features::require(file, "test", Feature::TestHooks)?;
    }
    let final_read_back = match raw.final_read_back.as_deref() {
        None | Some("stale") => FinalReadBack::Stale,
        Some("all") => FinalReadBack::All,
        Some(other) => {
            return Err(ConfigError::key(
                file,
                "final_read_back",
                format!("`{other}` is not one of \"stale\", \"all\""),
            ))
        }
    };
    let ab = match (activation, raw.ab.take()) {
        (Activation::AbUboot, Some(r)) => Some(ab_config(file, base, r)?),
        (Activation::AbUboot, None) => {
            return Err(ConfigError::key(
                file,
                "ab",
                "activation = \"ab-uboot\" needs an [ab] table with slot_a and slot_b",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::key(
                file,
                "ab",
                "[ab] is only used with activation = \"ab-uboot\"",
            ))
        }
        (_, None) => None,
    };
    let command = match (activation, raw.command.take()) {
        (Activation::Command, Some(r)) => {
            let argv = r.run.unwrap_or_default();
            if argv.is_empty() || argv[0].trim().is_empty() {
                return Err(ConfigError::key(
                    file,
                    "command.run",
                    "missing (e.g. run = [\"/sbin/sysupgrade\", \"{image}\"])",
                ));
            }
            let secs = r.timeout_secs.unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECS);
            if secs == 0 {
                return Err(ConfigError::key(
                    file,
                    "command.timeout_secs",
                    "must be at least 1",
                ));
            }
            Some(CommandConfig {
                argv,
                timeout: Duration::from_secs(secs),
            })
        }
        (Activation::Command, None) => {
            return Err(ConfigError::key(
                file,
                "command",
                "activation = \"command\" needs a [command] table with run = [...]",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::key(
                file,
                "command",
                "[command] is only used with activation = \"command\"",
            ))
        }
        (_, None) => None,
    };
    let rc = raw.confirm.take().unwrap_or_default();
    let health_secs = rc.timeout_secs.unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS);
    if health_secs == 0 {
        return Err(ConfigError::key(
            file,
            "confirm.timeout_secs",
            "must be at least 1",
        ));
    }
    let confirm = ConfirmConfig {
        at_startup: rc.at_startup.unwrap_or(false),
        health_check: rc.health_check.unwrap_or_default(),
        health_timeout: Duration::from_secs(health_secs),
    };
    if confirm.at_startup && ab.is_none() {
        return Err(ConfigError::key(
            file,
            "confirm.at_startup",
            "confirming needs activation = \"ab-uboot\" (the U-Boot environment)",
        ));
    }
    let reboot_command = raw.reboot_command.take().unwrap_or_default();
    let hooks = hooks_config(file, raw.hooks.take().unwrap_or_default())?;
    let state_file = match raw.state_file.as_deref() {
        None => Some(PathBuf::from(crate::state_file::DEFAULT_STATE_FILE)),
        Some("") => None,
        Some(p) => Some(resolve(base, p)),
    };
    let user = raw
        .user
        .take()
        .unwrap_or_else(|| crate::privdrop::DEFAULT_USER.to_string());
    if user.is_empty() || user.contains(['\0', ':', '/']) || user.trim() != user {
        return Err(ConfigError::key(
            file,
            "user",
            "must be a user name (e.g. \"nobody\"), or \"root\" to keep root",
        ));
    }
    let stall = raw.stall_timeout_secs.unwrap_or(DEFAULT_STALL_TIMEOUT_SECS);
    if stall == 0 {
        return Err(ConfigError::key(
            file,
            "stall_timeout_secs",
            "must be at least 1",
        ));
    }
    let run_deadline = raw.run_deadline_secs.unwrap_or(DEFAULT_RUN_DEADLINE_SECS);
    if run_deadline == 0 || run_deadline > 86_400 * 365 {
        return Err(ConfigError::key(
            file,
            "run_deadline_secs",
            "must be 1 s to a year",
        ));
    }
    let rcvbuf = raw.rcvbuf_bytes.unwrap_or(DEFAULT_RCVBUF_BYTES);
    let rcvbuf_bytes = match usize::try_from(rcvbuf) {
        Ok(n) if (1024..=1 << 30).contains(&n) => n,
        _ => {
            return Err(ConfigError::key(
                file,
                "rcvbuf_bytes",
                "must be 1024 to 1073741824",
            ))
        }
    };
    let boot_window_secs = raw.boot_window_secs.unwrap_or(DEFAULT_BOOT_WINDOW_SECS);
    if boot_window_secs > 86_400 * 365 {
        return Err(ConfigError::key(
            file,
            "boot_window_secs",
            "must be at most a year",
        ));
    }
    let t = raw.test.take().unwrap_or_default();
    let rx_loss_permille = t.rx_loss_permille.unwrap_or(0);
    if rx_loss_permille > 1000 {
        return Err(ConfigError::key(
            file,
            "test.rx_loss_permille",
            "must be 0 to 1000",
        ));
    }
    let test = TestOptions {
        rx_loss_permille,
        rx_loss_seed: t.rx_loss_seed.unwrap_or(1),
        block_delay: Duration::from_millis(t.block_delay_ms.unwrap_or(0)),
    };

    Ok(Config {
        path: path.to_path_buf(),
        board,
        current_version,
        current_version_file,
        group,
        source,
        repair_group,
        repair_source,
        interface,
        interface_spec: interface_spec.clone(),
        repair_server,
        repair_server_spec,
        public_key,
        public_key_file,
        device_key,
        target,
        target_size: raw.target_size,
        boot_window: Duration::from_secs(boot_window_secs),
        window_blocks,
        max_buffer_bytes,
        max_block_size,
        device_id,
        device_id_source,
        activation,
        stall_timeout: Duration::from_secs(stall),
        run_deadline: Duration::from_secs(run_deadline),
        rcvbuf_bytes,
        nack_backoff: Duration::from_millis(nack_backoff_ms),
        nack_backoff_shape,
        exit_when_current: raw.exit_when_current.unwrap_or(true),
        floor_file: raw.floor_file.as_deref().map(|p| resolve(base, p)),
        final_read_back,
        test,
        ab,
        command,
        confirm,
        reboot_command,
        user,
        hooks,
        state_file,
    })
}

fn hooks_config(file: &Path, r: RawHooks) -> Result<HooksConfig, ConfigError> {
    let secs = r
        .timeout_secs
        .unwrap_or(crate::hooks::DEFAULT_HOOK_TIMEOUT_SECS);
    if secs == 0 {
        return Err(ConfigError::key(
            file,
            "hooks.timeout_secs",
            "must be at least 1",
        ));
    }
    let argv = |key: &str, v: Option<Vec<String>>| match v {
        Some(a) if a.first().is_none_or(|p| p.trim().is_empty()) => Err(ConfigError::key(
            file,
            key,
            "must name a program, e.g. [\"/etc/firmcast/led\", \"busy\"] (no shell)",
        )),
        v => Ok(v.unwrap_or_default()),
    };
    Ok(HooksConfig {
        pre_install: argv("hooks.pre_install", r.pre_install)?,
        post_install: argv("hooks.post_install", r.post_install)?,
        on_failure: argv("hooks.on_failure", r.on_failure)?,
        timeout: Duration::from_secs(secs),
    })
}

/// `device_id`, or the default of [`device_id::derive`] (R-LOCAL-6).
fn device_id_of(
    file: &Path,
    base: &Path,
    configured: Option<u64>,
    id_file: Option<String>,
    host: &HostFacts,
    interface: &Interface,
    target: &str,
) -> Result<(u64, IdSource), ConfigError> {
    let id_file = match (configured, id_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                file,
                "device_id_file",
                "set only one of device_id and device_id_file",
            ))
        }
        (Some(id), None) => return Ok((id, IdSource::Configured)),
        (None, f) => f.map(|p| resolve(base, &p)),
    };
    let id_text = match &id_file {
        Some(p) => Some(device_file(host, p, "lint").map_err(|e| {
            ConfigError::key(
                file,
                "device_id_file",
                format!("cannot read {}: {e}", p.display()),
            )
        })?),
        None => None,
    };
    let first_line = id_text.as_deref().map(|t| t.lines().next().unwrap_or(""));
    // By name when configured by name; `auto` picks as for `0.0.0.0` (the
    // route may change, the id must not).
    let link = match interface {
        Interface::Name(n) => host.links.iter().find(|l| &l.name == n),
        other => device_id::pick_link(&host.links, netspec::v4_or_any(other)),
    };
    device_id::derive(device_id::Inputs {
        file: id_file.as_deref().zip(first_line),
        machine_id: host.machine_id.as_deref(),
        mac: link.map(|l| (l.name.as_str(), l.mac.as_str())),
        hostname: &host.hostname,
        target: &device_id::target_key(target, &std::env::current_dir().unwrap_or_default()),
    })
    .map_err(|why| ConfigError::key(file, "device_id_file", why))
}

fn ab_config(file: &Path, base: &Path, r: RawAb) -> Result<AbConfig, ConfigError> {
    let slot = |key: &str, v: Option<String>| -> Result<String, ConfigError> {
        let v = required(file, key, v, "a target spec, e.g. \"mtd:firmware_a\"")?;
        check_target(file, &v).map_err(|e| ConfigError {
            key: Some(key.to_string()),
            ..e
        })?;
        Ok(v)
    };
    let slot_a = slot("ab.slot_a", r.slot_a)?;
    let slot_b = slot("ab.slot_b", r.slot_b)?;
    if slot_a == slot_b {
        return Err(ConfigError::key(
            file,
            "ab.slot_b",
            "must differ from ab.slot_a",
        ));
    }
    let var = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_string());
        flasher::uboot_env::check_variable(&v, "")
            .map_err(|e| ConfigError::key(file, key, e.to_string()))?;
        Ok(v)
    };
    let value = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_string());
        if v.is_empty() || v.contains('\0') {
            return Err(ConfigError::key(file, key, "must be a non-empty string"));
        }
        Ok(v)
    };
    let slot_a_value = value("ab.slot_a_value", r.slot_a_value, "a")?;
    let slot_b_value = value("ab.slot_b_value", r.slot_b_value, "b")?;
    if slot_a_value == slot_b_value {
        return Err(ConfigError::key(
            file,
            "ab.slot_b_value",
            "must differ from ab.slot_a_value",
        ));
    }
    let env_endian = match r.env_endian.as_deref() {
        None | Some("native") => EnvEndian::Native,
        Some("little") => EnvEndian::Little,
        Some("big") => EnvEndian::Big,
        Some(other) => {
            return Err(ConfigError::key(
                file,
                "ab.env_endian",
                format!("`{other}` is not one of \"native\", \"little\", \"big\""),
            ))
        }
    };
    Ok(AbConfig {
        slot_a,
        slot_b,
        slot_var: var("ab.slot_var", r.slot_var, DEFAULT_SLOT_VAR)?,
        slot_a_value,
        slot_b_value,
        upgrade_available_var: var(
            "ab.upgrade_available_var",
            r.upgrade_available_var,
            DEFAULT_UPGRADE_AVAILABLE_VAR,
        )?,
        bootcount_var: var("ab.bootcount_var", r.bootcount_var, DEFAULT_BOOTCOUNT_VAR)?,
        activated_var: var("ab.activated_var", r.activated_var, DEFAULT_ACTIVATED_VAR)?,
        env_config: resolve(
            base,
            r.env_config
                .as_deref()
                .unwrap_or(flasher::uboot_env::DEFAULT_FW_ENV_CONFIG),
        ),
        env_endian,
        allow_single_copy_env: r.allow_single_copy_env.unwrap_or(false),
    })
}

fn required(
    file: &Path,
    key: &str,
    value: Option<String>,
    hint: &str,
) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Some(_) => Err(ConfigError::key(file, key, format!("is empty ({hint})"))),
        None => Err(ConfigError::key(
            file,
            key,
            format!("missing (required: {hint})"),
        )),
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn multicast(
    file: &Path,
    key: &str,
    value: Option<String>,
    default: SocketAddrV4,
) -> Result<SocketAddr, ConfigError> {
    let Some(s) = value else {
        return Ok(SocketAddr::V4(default));
    };
    netspec::parse_group(&s, SocketAddr::V4(default))
        .map_err(|why| ConfigError::key(file, key, why))
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// First line of a typed public key file (`firmcast keygen`, R-LOCAL-7).
pub const PUBLIC_KEY_HEADER: &str = "firmcast-ed25519-public-key";
/// First line of a typed secret key file: never a `public_key`.
pub const SECRET_KEY_HEADER: &str = "firmcast-ed25519-secret-key";

/// The hex line of a key file given as `public_key`: after the
/// [`PUBLIC_KEY_HEADER`] line, or the first line of an untyped (older) file.
/// A secret key is refused (R-LOCAL-7).
pub fn public_key_line(text: &str) -> Result<&str, &'static str> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next().unwrap_or("") {
        SECRET_KEY_HEADER => Err("is a secret key (firmcast-ed25519-secret-key): give the operator's .pub file, and keep the secret key off the device"),
        PUBLIC_KEY_HEADER => Ok(lines.next().unwrap_or("")),
        l if l.len() == 128 && l.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err("holds 128 hex digits, an untyped secret key (seed and public key): give the operator's .pub file")
        }
        l => Ok(l),
    }
}

/// What `--lint` reads in place of a key file: a well-formed key.
const LINT_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A file of the device (version, key, id file); under `--lint` (the build
/// host) not read: `placeholder` stands in for its content.
fn device_file(host: &HostFacts, p: &Path, placeholder: &str) -> std::io::Result<String> {
    if host.lint {
        return Ok(placeholder.to_string());
    }
    std::fs::read_to_string(p)
}

/// `public_key`: 64 hex characters inline, or a path to a `firmcast keygen`
/// .pub file (typed, or one hex line).
fn public_key(
    file: &Path,
    base: &Path,
    value: &str,
    host: &HostFacts,
) -> Result<([u8; 32], Option<PathBuf>), ConfigError> {
    let v = value.trim();
    let looks_inline =
        v.len() == 64 || (!v.contains('/') && v.bytes().all(|b| b.is_ascii_hexdigit()));
    if looks_inline {
        return match decode_hex32(v) {
            Some(k) => Ok((k, None)),
            None if v.len() == 64 => Err(ConfigError::key(
                file,
                "public_key",
                "not hex: expected 64 hex characters",
            )),
            None => Err(ConfigError::key(
                file,
                "public_key",
                format!(
                    "expected 64 hex characters, got {} (or give the path of a .pub file)",
                    v.len()
                ),
            )),
        };
    }
    let p = resolve(base, v);
    let text = device_file(host, &p, LINT_KEY).map_err(|e| {
        ConfigError::key(
            file,
            "public_key",
            format!("cannot read key file {}: {e}", p.display()),
        )
    })?;
    let line = public_key_line(&text).map_err(|why| {
        ConfigError::key(
            file,
            "public_key",
            format!("key file {} {why}", p.display()),
        )
    })?;
    match decode_hex32(line) {
        Some(k) => Ok((k, Some(p))),
        None => Err(ConfigError::key(
            file,
            "public_key",
            format!(
                "key file {} holds no line of 64 hex characters (after its firmcast-ed25519-public-key line)",
                p.display()
            ),
        )),
    }
}

/// `device_key`: the path of a `firmcast keygen --device` secret key file
/// (its `firmcast-ed25519-secret-key` line, then 64 hex characters: the
/// Ed25519 seed; an untyped file is the hex line alone).
fn device_key(
    file: &Path,
    base: &Path,
    value: &str,
    host: &HostFacts,
) -> Result<(PathBuf, [u8; 32]), ConfigError> {
    let p = resolve(base, value.trim());
    let text = device_file(host, &p, LINT_KEY).map_err(|e| {
        ConfigError::key(
            file,
            "device_key",
            format!("cannot read key file {}: {e}", p.display()),
        )
    })?;
    // A typed file (R-LOCAL-7) opens with its kind; an untyped one is the hex line.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or("");
    if line == "firmcast-ed25519-secret-key" {
        line = lines.next().unwrap_or("");
    }
    match decode_hex32(line) {
        Some(seed) => Ok((p, seed)),
        None => Err(ConfigError::key(
            file,
            "device_key",
            format!(
                "key file {} does not start with a line of 64 hex characters (a `firmcast keygen --device` device.key)",
                p.display()
            ),
        )),
    }
}

fn check_target(file: &Path, target: &str) -> Result<(), ConfigError> {
    match flasher::TargetSpec::parse(target) {
        Some(spec) if spec.is_sim() => features::require(file, "target", Feature::TestHooks),
        Some(_) => Ok(()),
        None => Err(ConfigError::key(
            file,
            "target",
            format!(
                "`{target}` is not one of file:PATH, simnor:PATH, simnand:PATH, mtd:PARTITION-NAME"
            ),
        )),
    }
}

/// One `key = value` line of [`Config::describe`]: one non-generic writer
/// for every line, no `String` per value.
fn kv(s: &mut String, key: &str, value: fmt::Arguments<'_>) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = writeln!(s, "{key:<22} = {value}");
}

/// `Some(path)` as ` (from PATH)`, `None` as nothing.
struct FromFile<'a>(Option<&'a Path>);

impl fmt::Display for FromFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " (from {})", p.display()),
            None => Ok(()),
        }
    }
}

impl Config {
    /// The resolved settings, one `key = value` per line (for `--check-config`).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let s = &mut out;
        kv(s, "config", format_args!("{}", self.path.display()));
        kv(s, "board", format_args!("{:?}", self.board));
        kv(
            s,
            "current_version",
            format_args!(
                "{:?}{}",
                self.current_version,
                FromFile(self.current_version_file.as_deref())
            ),
        );
        kv(s, "group", format_args!("{}", self.group));
        kv(s, "repair_group", format_args!("{}", self.repair_group));
        for (key, a) in [
            ("source", self.source),
            ("repair_source", self.repair_source),
        ] {
            match a {
                Some(a) => kv(s, key, format_args!("{a}")),
                None => kv(s, key, format_args!("(any)")),
            }
        }
        kv(s, "interface", format_args!("{}", self.interface_spec));
        kv(
            s,
            "repair_server",
            format_args!("{}", self.repair_server_spec),
        );
        let hex: String = self.public_key.iter().map(|b| format!("{b:02x}")).collect();
        kv(
            s,
            "public_key",
            format_args!("{hex}{}", FromFile(self.public_key_file.as_deref())),
        );
        match &self.device_key {
            Some((p, _)) => kv(
                s,
                "device_key",
                format_args!("{} (Status reports signed)", p.display()),
            ),
            None => kv(
                s,
                "device_key",
                format_args!("none (Status reports unsigned)"),
            ),
        }
        kv(s, "target", format_args!("{}", self.target));
        match self.target_size {
            Some(n) => kv(s, "target_size", format_args!("{n}")),
            None => kv(s, "target_size", format_args!("(not set)")),
        }
        kv(
            s,
            "boot_window_secs",
            format_args!("{}", self.boot_window.as_secs()),
        );
        kv(s, "window_blocks", format_args!("{}", self.window_blocks));
        kv(
            s,
            "max_buffer_bytes",
            format_args!("{}", self.max_buffer_bytes),
        );
        kv(s, "max_block_size", format_args!("{}", self.max_block_size));
        kv(
            s,
            "device_id",
            format_args!("{:016x} ({})", self.device_id, self.device_id_source),
        );
        kv(
            s,
            "activation",
            format_args!("{}", self.activation.as_str()),
        );
        kv(
            s,
            "stall_timeout_secs",
            format_args!("{}", self.stall_timeout.as_secs()),
        );
        kv(
            s,
            "run_deadline_secs",
            format_args!("{}", self.run_deadline.as_secs()),
        );
        kv(s, "rcvbuf_bytes", format_args!("{}", self.rcvbuf_bytes));
        kv(
            s,
            "nack_backoff_ms",
            format_args!("{}", crate::logger::millis(self.nack_backoff)),
        );
        kv(
            s,
            "nack_backoff_shape",
            format_args!("{}", self.nack_backoff_shape),
        );
        kv(
            s,
            "exit_when_current",
            format_args!("{}", self.exit_when_current),
        );
        if let Some(p) = &self.floor_file {
            kv(s, "floor_file", format_args!("{}", p.display()));
        }
        kv(
            s,
            "final_read_back",
            format_args!("{}", self.final_read_back.as_str()),
        );
        if let Some(ab) = &self.ab {
            kv(s, "ab.slot_a", format_args!("{}", ab.slot_a));
            kv(s, "ab.slot_b", format_args!("{}", ab.slot_b));
            kv(s, "ab.slot_var", format_args!("{}", ab.slot_var));
            kv(s, "ab.slot_a_value", format_args!("{:?}", ab.slot_a_value));
            kv(s, "ab.slot_b_value", format_args!("{:?}", ab.slot_b_value));
            kv(
                s,
                "ab.upgrade_available_var",
                format_args!("{}", ab.upgrade_available_var),
            );
            kv(s, "ab.bootcount_var", format_args!("{}", ab.bootcount_var));
            kv(s, "ab.activated_var", format_args!("{}", ab.activated_var));
            kv(
                s,
                "ab.env_config",
                format_args!("{}", ab.env_config.display()),
            );
            kv(
                s,
                "ab.env_endian",
                format_args!("{}", ab.env_endian.as_str()),
            );
            kv(
                s,
                "ab.allow_single_copy_env",
                format_args!("{}", ab.allow_single_copy_env),
            );
        }
        if let Some(c) = &self.command {
            kv(s, "command.run", format_args!("{:?}", c.argv));
            kv(
                s,
                "command.timeout_secs",
                format_args!("{}", c.timeout.as_secs()),
            );
        }
        kv(
            s,
            "confirm.at_startup",
            format_args!("{}", self.confirm.at_startup),
        );
        kv(
            s,
            "confirm.health_check",
            format_args!("{:?}", self.confirm.health_check),
        );
        kv(
            s,
            "confirm.timeout_secs",
            format_args!("{}", self.confirm.health_timeout.as_secs()),
        );
        kv(
            s,
            "reboot_command",
            format_args!("{:?}", self.reboot_command),
        );
        kv(
            s,
            "hooks.pre_install",
            format_args!("{:?}", self.hooks.pre_install),
        );
        kv(
            s,
            "hooks.post_install",
            format_args!("{:?}", self.hooks.post_install),
        );
        kv(
            s,
            "hooks.on_failure",
            format_args!("{:?}", self.hooks.on_failure),
        );
        kv(
            s,
            "hooks.timeout_secs",
            format_args!("{}", self.hooks.timeout.as_secs()),
        );
        match &self.state_file {
            Some(p) => kv(s, "state_file", format_args!("{}", p.display())),
            None => kv(s, "state_file", format_args!("(none)")),
        }
        match crate::privdrop::plan_for(self) {
            crate::privdrop::Plan::Drop(_) => kv(
                s,
                "user",
                format_args!(
                    "{:?} (root dropped once sockets and target are open)",
                    self.user
                ),
            ),
            crate::privdrop::Plan::KeepRoot(why) => kv(
                s,
                "user",
                format_args!("{:?} (stays root: {why})", self.user),
            ),
        }
        if self.test != TestOptions::default() {
            kv(
                s,
                "test.rx_loss_permille",
                format_args!("{}", self.test.rx_loss_permille),
            );
            kv(
                s,
                "test.rx_loss_seed",
                format_args!("{}", self.test.rx_loss_seed),
            );
            kv(
                s,
                "test.block_delay_ms",
                format_args!("{}", crate::logger::millis(self.test.block_delay)),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = p(&format!("{}[test]\nrx_loss = 5\n", minimal_without("")))
            .expect_err("unknown in [test]");
        assert_eq!(e.key.as_deref(), Some("rx_loss"), "{e}");
        let e = p(&format!("{}[other]\nx = 5\n", minimal_without(""))).expect_err("unknown table");
        assert_eq!(e.key.as_deref(), Some("other"), "{e}");
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
        let e =
            parse(&cfg, &format!("{text}device_id_file = \"nope\"\n"), "h").expect_err("missing");
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
        let e = parse(&cfg, &format!("{text}public_key = \"nope.pub\"\n"), "h")
            .expect_err("missing file");
        assert_eq!(e.key.as_deref(), Some("public_key"));
        // a file with junk
        std::fs::write(dir.0.join("bad.pub"), "hello\n").expect("write");
        let e =
            parse(&cfg, &format!("{text}public_key = \"bad.pub\"\n"), "h").expect_err("junk file");
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
}

#[cfg(test)]
mod board_configs {
    use super::*;

    /// Every shipped board file uses only known keys with valid values (file
    /// references are replaced by inline values, as the device's files are absent here).
    #[test]
    fn shipped_board_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("board-configs/") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
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

#[cfg(test)]
mod fleet_tests;

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

//!
//! The parts, one concern each: [`schema`] (the key table: every key's
//! name, table and type), `toml_subset` (the syntax), `load` (files in),
//! `lint` (`--check-config --lint` on the build host), `build` (values
//! checked, defaults filled in), `keyfile` (the key files `public_key` and
//! `device_key` name), `describe` (the `--check-config` dump), [`writer`]
//! (config files out, for everything that is not a device).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device_id::IdSource;
use crate::hooks::HooksConfig;
use crate::netspec::{Interface, Server};
use crate::resume::FinalReadBack;

mod build;
mod describe;
mod keyfile;
mod lint;
mod load;
pub mod schema;
mod toml_subset;
pub mod writer;

pub use keyfile::{public_key_line, PUBLIC_KEY_HEADER, SECRET_KEY_HEADER};
pub use lint::load_lint;
pub use load::{load, parse, parse_with};

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

/// A configuration error: one line naming the file and, where it can, the
/// key. Boxed: `build` and the reader pass it up through dozens of `?`, and
/// each moves a pointer in a register instead of the four fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(Box<ConfigFault>);

/// What a [`ConfigError`] says (its fields, reached through `Deref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFault {
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
        ConfigFault {
            file: file.to_path_buf(),
            key: Some(key.to_string()),
            line: None,
            message: message.into(),
        }
        .into()
    }
}

impl From<ConfigFault> for ConfigError {
    fn from(fault: ConfigFault) -> Self {
        ConfigError(Box::new(fault))
    }
}

impl std::ops::Deref for ConfigError {
    type Target = ConfigFault;
    fn deref(&self) -> &ConfigFault {
        &self.0
    }
}

impl std::ops::DerefMut for ConfigError {
    fn deref_mut(&mut self) -> &mut ConfigFault {
        &mut self.0
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fleet_tests;

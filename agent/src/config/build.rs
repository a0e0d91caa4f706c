//! From the file as written to a [`Config`]: every value checked (its
//! range, its form, how it goes with the others), the defaults filled in,
//! relative paths resolved against the file's directory. Each error names
//! the key at fault ([`key`]); [`super::load`] adds the line.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keyfile::{device_key, public_key};
use super::lint::device_file;
use super::schema::{key, Raw, RawAb, RawHooks};
use super::*;
use crate::device_id::{self, HostFacts, IdSource};
use crate::features::{self, Feature};
use crate::hooks::HooksConfig;
use crate::netspec::{self, Interface, Server};
use crate::resume::FinalReadBack;

/// Check and resolve the values, fill in the defaults.
pub(super) fn build(path: &Path, mut raw: Raw, host: &HostFacts) -> Result<Config, ConfigError> {
    // Fields are taken, never moved out of `raw`: a partly moved `raw`
    // would be dropped field by field at every early return below.
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let file = path;

    let board = required(
        file,
        key::board,
        raw.board.take(),
        "the board id, e.g. board = \"acme,rt1\"",
    )?;
    if board.is_empty() || board.len() > proto::wire::MAX_BOARD_LEN {
        return Err(ConfigError::key(
            file,
            key::board,
            format!("must be 1 to {} bytes", proto::wire::MAX_BOARD_LEN),
        ));
    }

    let (current_version, current_version_file) = match (raw.current_version.take(), raw.current_version_file.take()) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(file, key::current_version, "set only one of current_version and current_version_file"))
        }
        (Some(v), None) => (v.trim().to_string(), None),
        (None, Some(p)) => {
            let p = resolve(base, &p);
            let text = device_file(host, &p, "lint").map_err(|e| {
                ConfigError::key(file, key::current_version_file, format!("cannot read {}: {e}", p.display()))
            })?;
            let first = text.lines().next().unwrap_or("").trim().to_string();
            if first.is_empty() {
                return Err(ConfigError::key(file, key::current_version_file, format!("first line of {} is empty", p.display())));
            }
            (first, Some(p))
        }
        (None, None) => {
            return Err(ConfigError::key(
                file,
                key::current_version,
                "missing (required: current_version = \"1.0.0\" or current_version_file = \"/etc/version\")",
            ))
        }
    };
    let key = if current_version_file.is_some() {
        key::current_version_file
    } else {
        key::current_version
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

    let group = multicast(file, key::group, raw.group.take(), DEFAULT_GROUP)?;
    let repair_group = multicast(
        file,
        key::repair_group,
        raw.repair_group.take(),
        DEFAULT_REPAIR_GROUP,
    )?;
    let interface_spec = match raw.interface.take() {
        None => Interface::Any,
        Some(s) => {
            Interface::parse(&s).map_err(|why| ConfigError::key(file, key::interface, why))?
        }
    };
    // A name or `auto` is looked up at start (netspec::resolve).
    let interface = interface_spec.fixed_for(group);
    let repair_server = required(
        file,
        key::repair_server,
        raw.repair_server.take(),
        "where NACKs go, e.g. repair_server = \"10.0.0.2:7855\" or \"firmcast.lan:7855\"",
    )?;
    let repair_server_spec = Server::parse(&repair_server)
        .map_err(|why| ConfigError::key(file, key::repair_server, why))?;
    let repair_server = repair_server_spec.fixed_for(group);
    let source_of = |key: &str, v: Option<String>| {
        v.map(|s| netspec::parse_source(&s).map_err(|why| ConfigError::key(file, key, why)))
            .transpose()
    };
    let source = source_of(key::source, raw.source.take())?;
    let repair_source = source_of(key::repair_source, raw.repair_source.take())?;
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
        key::public_key,
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
    let target = required(file, key::target, target, "e.g. target = \"mtd:firmware\"")?;
    check_target(file, &target)?;
    if raw.target_size == Some(0) {
        return Err(ConfigError::key(
            file,
            key::target_size,
            "must be greater than 0",
        ));
    }

    let u32_of = |v: Option<u32>| v.map(u64::from);
    // The ranges keep each value within u32 where the field is a u32.
    let window_blocks = number(
        file,
        key::window_blocks,
        u32_of(raw.window_blocks),
        DEFAULT_WINDOW_BLOCKS.into(),
        (1, 1024),
        "",
    )? as u32;
    let max_buffer_bytes = number(
        file,
        key::max_buffer_bytes,
        raw.max_buffer_bytes,
        DEFAULT_MAX_BUFFER_BYTES,
        (64 * 1024, 1 << 30),
        "",
    )?;
    let max_block_size = number(
        file,
        key::max_block_size,
        u32_of(raw.max_block_size),
        DEFAULT_MAX_BLOCK_SIZE.into(),
        (
            proto::wire::MIN_CHUNK_SIZE.into(),
            proto::wire::MAX_BLOCK_SIZE.into(),
        ),
        " bytes",
    )? as u32;
    let nack_backoff_ms = number(
        file,
        key::nack_backoff_ms,
        raw.nack_backoff_ms,
        DEFAULT_NACK_BACKOFF_MS,
        (2, 10_000),
        " milliseconds",
    )?;
    let nack_backoff_shape = number(
        file,
        key::nack_backoff_shape,
        u32_of(raw.nack_backoff_shape),
        DEFAULT_NACK_BACKOFF_SHAPE.into(),
        (1, 64),
        "",
    )? as u32;
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
                key::activation,
                format!(
                    "`{other}` is not one of \"in-place\", \"ab-uboot\", \"command\", \"none\""
                ),
            ))
        }
    };
    match activation {
        Activation::AbUboot => features::require(file, key::activation, Feature::AbUboot)?,
        Activation::Command => features::require(file, key::activation, Feature::Command)?,
        Activation::InPlace | Activation::None => {}
    }
    if raw.device_key.is_some() {
        features::require(file, key::device_key, Feature::DeviceKey)?;
    }
    if raw.test.is_some() {
        features::require(file, key::test, Feature::TestHooks)?;
    }
    let final_read_back = match raw.final_read_back.as_deref() {
        None | Some("stale") => FinalReadBack::Stale,
        Some("all") => FinalReadBack::All,
        Some(other) => {
            return Err(ConfigError::key(
                file,
                key::final_read_back,
                format!("`{other}` is not one of \"stale\", \"all\""),
            ))
        }
    };
    let ab = match (activation, raw.ab.take()) {
        (Activation::AbUboot, Some(r)) => Some(ab_config(file, base, r)?),
        (Activation::AbUboot, None) => {
            return Err(ConfigError::key(
                file,
                key::ab,
                "activation = \"ab-uboot\" needs an [ab] table with slot_a and slot_b",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::key(
                file,
                key::ab,
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
                    key::command::run,
                    "missing (e.g. run = [\"/sbin/sysupgrade\", \"{image}\"])",
                ));
            }
            let secs = number(
                file,
                key::command::timeout_secs,
                r.timeout_secs,
                DEFAULT_COMMAND_TIMEOUT_SECS,
                AT_LEAST_1,
                "",
            )?;
            Some(CommandConfig {
                argv,
                timeout: Duration::from_secs(secs),
            })
        }
        (Activation::Command, None) => {
            return Err(ConfigError::key(
                file,
                key::command,
                "activation = \"command\" needs a [command] table with run = [...]",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::key(
                file,
                key::command,
                "[command] is only used with activation = \"command\"",
            ))
        }
        (_, None) => None,
    };
    let rc = raw.confirm.take().unwrap_or_default();
    let health_secs = number(
        file,
        key::confirm::timeout_secs,
        rc.timeout_secs,
        DEFAULT_HEALTH_TIMEOUT_SECS,
        AT_LEAST_1,
        "",
    )?;
    let confirm = ConfirmConfig {
        at_startup: rc.at_startup.unwrap_or(false),
        health_check: rc.health_check.unwrap_or_default(),
        health_timeout: Duration::from_secs(health_secs),
    };
    if confirm.at_startup && ab.is_none() {
        return Err(ConfigError::key(
            file,
            key::confirm::at_startup,
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
            key::user,
            "must be a user name (e.g. \"nobody\"), or \"root\" to keep root",
        ));
    }
    let stall = number(
        file,
        key::stall_timeout_secs,
        raw.stall_timeout_secs,
        DEFAULT_STALL_TIMEOUT_SECS,
        AT_LEAST_1,
        "",
    )?;
    let run_deadline = number(
        file,
        key::run_deadline_secs,
        raw.run_deadline_secs,
        DEFAULT_RUN_DEADLINE_SECS,
        (1, A_YEAR_SECS),
        " s (a year)",
    )?;
    let rcvbuf_bytes = number(
        file,
        key::rcvbuf_bytes,
        raw.rcvbuf_bytes,
        DEFAULT_RCVBUF_BYTES,
        (1024, 1 << 30),
        "",
    )? as usize;
    let boot_window_secs = number(
        file,
        key::boot_window_secs,
        raw.boot_window_secs,
        DEFAULT_BOOT_WINDOW_SECS,
        (0, A_YEAR_SECS),
        " s (a year)",
    )?;
    let t = raw.test.take().unwrap_or_default();
    let rx_loss_permille = number(
        file,
        key::test::rx_loss_permille,
        u32_of(t.rx_loss_permille),
        0,
        (0, 1000),
        "",
    )? as u32;
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
    let secs = number(
        file,
        key::hooks::timeout_secs,
        r.timeout_secs,
        crate::hooks::DEFAULT_HOOK_TIMEOUT_SECS,
        AT_LEAST_1,
        "",
    )?;
    let argv = |key: &str, v: Option<Vec<String>>| match v {
        Some(a) if a.first().is_none_or(|p| p.trim().is_empty()) => Err(ConfigError::key(
            file,
            key,
            "must name a program, e.g. [\"/etc/firmcast/led\", \"busy\"] (no shell)",
        )),
        v => Ok(v.unwrap_or_default()),
    };
    Ok(HooksConfig {
        pre_install: argv(key::hooks::pre_install, r.pre_install)?,
        post_install: argv(key::hooks::post_install, r.post_install)?,
        on_failure: argv(key::hooks::on_failure, r.on_failure)?,
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
                key::device_id_file,
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
                key::device_id_file,
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
    .map_err(|why| ConfigError::key(file, key::device_id_file, why))
}

fn ab_config(file: &Path, base: &Path, r: RawAb) -> Result<AbConfig, ConfigError> {
    let slot = |key: &str, v: Option<String>| -> Result<String, ConfigError> {
        let v = required(file, key, v, "a target spec, e.g. \"mtd:firmware_a\"")?;
        check_target(file, &v).map_err(|mut e| {
            e.key = Some(key.to_string());
            e
        })?;
        Ok(v)
    };
    let slot_a = slot(key::ab::slot_a, r.slot_a)?;
    let slot_b = slot(key::ab::slot_b, r.slot_b)?;
    if slot_a == slot_b {
        return Err(ConfigError::key(
            file,
            key::ab::slot_b,
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
    let slot_a_value = value(key::ab::slot_a_value, r.slot_a_value, "a")?;
    let slot_b_value = value(key::ab::slot_b_value, r.slot_b_value, "b")?;
    if slot_a_value == slot_b_value {
        return Err(ConfigError::key(
            file,
            key::ab::slot_b_value,
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
                key::ab::env_endian,
                format!("`{other}` is not one of \"native\", \"little\", \"big\""),
            ))
        }
    };
    Ok(AbConfig {
        slot_a,
        slot_b,
        slot_var: var(key::ab::slot_var, r.slot_var, DEFAULT_SLOT_VAR)?,
        slot_a_value,
        slot_b_value,
        upgrade_available_var: var(
            key::ab::upgrade_available_var,
            r.upgrade_available_var,
            DEFAULT_UPGRADE_AVAILABLE_VAR,
        )?,
        bootcount_var: var(
            key::ab::bootcount_var,
            r.bootcount_var,
            DEFAULT_BOOTCOUNT_VAR,
        )?,
        activated_var: var(
            key::ab::activated_var,
            r.activated_var,
            DEFAULT_ACTIVATED_VAR,
        )?,
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

/// A whole number of seconds from 1 up.
const AT_LEAST_1: (u64, u64) = (1, u64::MAX);
/// The longest boot window or run deadline: a year, in seconds.
const A_YEAR_SECS: u64 = 86_400 * 365;

/// A number key: `value`, or `default` when it is not set; outside
/// `min..=max` an error naming the key and the range (`unit` after it).
#[inline(never)]
fn number(
    file: &Path,
    key: &str,
    value: Option<u64>,
    default: u64,
    (min, max): (u64, u64),
    unit: &str,
) -> Result<u64, ConfigError> {
    let n = value.unwrap_or(default);
    if (min..=max).contains(&n) {
        return Ok(n);
    }
    let why = if max == u64::MAX {
        format!("must be at least {min}{unit}")
    } else {
        format!("must be {min} to {max}{unit}")
    };
    Err(ConfigError::key(file, key, why))
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

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
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

fn check_target(file: &Path, target: &str) -> Result<(), ConfigError> {
    match flasher::TargetSpec::parse(target) {
        Some(spec) if spec.is_sim() => features::require(file, key::target, Feature::TestHooks),
        Some(_) => Ok(()),
        None => Err(ConfigError::key(
            file,
            key::target,
            format!(
                "`{target}` is not one of file:PATH, simnor:PATH, simnand:PATH, mtd:PARTITION-NAME"
            ),
        )),
    }
}

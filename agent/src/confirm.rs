//! Boot confirmation: `firmcast-agent confirm`, or the same at start-up
//! (`[confirm] at_startup = true`).
//!
//! ```text
//!  activated_var set and != slot_var  → rolled back: U-Boot's altbootcmd went
//!                                       back to the old slot; disarm, report
//!  upgrade_available = 1              → health check (optional command)
//!        passes                       → upgrade_available=0 bootcount=0 (one
//!                                       env write), report confirmed
//!        fails                        → write nothing: the bootloader's
//!                                       bootcount rolls back; report failed
//!  otherwise                          → nothing pending
//! ```
//!
//! The outcome is one log line and a Status frame to the repair server
//! (R-STAT-3: three times, 50 ms apart, session 0, image id 0).

use std::net::{SocketAddr, UdpSocket};

use flasher::ab::{AbError, BootState, Slot};
use flasher::uboot_env::UbootEnv;
use flasher::Flash;
use proto::report::Reporter;
use proto::wire::{self, DeviceState, Frame, ImageId, Reason, Status, MAX_DATAGRAM};
use proto::Instant;

use crate::activate;
use crate::config::{AbConfig, Config};
use crate::exit::ExitCode;
use crate::features::Feature;
use crate::spawn::run_command;

/// What the confirm step found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No update waits for confirmation.
    NothingPending,
    /// Health check passed; rollback disarmed.
    Confirmed {
        /// The slot value confirmed.
        slot: String,
    },
    /// Health check failed; rollback left armed.
    HealthCheckFailed {
        /// Why.
        why: String,
    },
    /// The bootloader runs another slot than the one activated.
    RolledBack {
        /// The slot value activated.
        activated: String,
        /// The slot value running now.
        running: String,
    },
}

impl Outcome {
    /// The Status state and reason to report, if any.
    pub fn status(&self) -> Option<(DeviceState, Reason)> {
        match self {
            Outcome::NothingPending => None,
            Outcome::Confirmed { .. } => Some((DeviceState::Confirmed, Reason::None)),
            Outcome::HealthCheckFailed { .. } => {
                Some((DeviceState::Failed, Reason::HealthCheckFailed))
            }
            Outcome::RolledBack { .. } => Some((DeviceState::RolledBack, Reason::None)),
        }
    }
}

/// The confirm step on an open environment ([`flasher::ab`] decides).
/// `health` runs only when an update is pending. With `dry_run` nothing is
/// written.
pub fn confirm<F: Flash>(
    env: &mut UbootEnv<F>,
    ab: &AbConfig,
    health: impl FnOnce() -> Result<(), String>,
    dry_run: bool,
) -> Result<Outcome, AbError> {
    let p = activate::policy(ab);
    let disarm = |env: &mut UbootEnv<F>| -> Result<(), AbError> {
        p.stage_disarm(env)?;
        if dry_run {
            log::info!(
                "dry run: would set {}=0 {}=0 and remove {} ({}); nothing written",
                ab.upgrade_available_var,
                ab.bootcount_var,
                ab.activated_var,
                env.plan()
            );
            Ok(())
        } else {
            Ok(env.save()?)
        }
    };
    match p.boot_state(env) {
        BootState::RolledBack { activated, running } => {
            disarm(env)?;
            Ok(Outcome::RolledBack { activated, running })
        }
        BootState::NothingPending => Ok(Outcome::NothingPending),
        BootState::Pending { running } => {
            if let Err(why) = health() {
                return Ok(Outcome::HealthCheckFailed { why });
            }
            disarm(env)?;
            Ok(Outcome::Confirmed { slot: running })
        }
    }
}

/// The health check from the config: no command = healthy.
pub fn health_check(cfg: &Config) -> Result<(), String> {
    let argv = &cfg.confirm.health_check;
    if argv.is_empty() {
        return Ok(());
    }
    let r = run_command(argv, &[], cfg.confirm.health_timeout);
    if r.success() {
        Ok(())
    } else {
        Err(format!("health check {argv:?}: {r}"))
    }
}

/// The secret half of the configured `device_key`, if any (R-STAT-4).
pub fn device_secret(cfg: &Config) -> Option<ed25519_compact::SecretKey> {
    // Without `device-key` the config refuses the key; saying so here keeps
    // the key derivation (a base-point multiply) out of the build.
    if !Feature::DeviceKey.enabled() {
        return None;
    }
    cfg.device_key
        .as_ref()
        .map(|(_, seed)| ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed)).sk)
}

/// Sign the Status datagram `buf[..len]` in place with the device key, if
/// one is configured (R-STAT-4, R-WIRE-7); returns the length to send. Every
/// Status this device sends passes through here.
pub fn sign(key: Option<&ed25519_compact::SecretKey>, buf: &mut [u8], len: usize) -> Option<usize> {
    // Without `device-key` the config refuses the key: no signing code linked.
    if !Feature::DeviceKey.enabled() {
        return Some(len);
    }
    match key {
        Some(k) => wire::sign_status(buf, len, k).ok(),
        None => Some(len),
    }
}

/// Encodes one Status frame (session and image id as given), signed with
/// `key` if given.
#[allow(clippy::too_many_arguments)]
pub fn status_frame(
    device_id: u64,
    version: &str,
    state: DeviceState,
    reason: Reason,
    (blocks_done, blocks_total): (u32, u32),
    (session, image_id): (u32, ImageId),
    key: Option<&ed25519_compact::SecretKey>,
    buf: &mut [u8],
) -> Option<usize> {
    let mut v = version;
    while v.len() > wire::MAX_VERSION_LEN {
        let mut end = wire::MAX_VERSION_LEN;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v = &v[..end];
    }
    let st = Status {
        device_id,
        state,
        blocks_done,
        blocks_total,
        current_version: v,
        reason,
        write_kbps: 0,
        window_free: wire::WINDOW_FREE_NONE,
    };
    let len = wire::encode(session, image_id, 0, &Frame::Status(st), buf).ok()?;
    sign(key, buf, len)
}

/// Sends a Status three times, 50 ms apart, to `to` (best effort: the
/// network may not be up this early in the boot; failures are logged).
pub fn report(cfg: &Config, to: SocketAddr, state: DeviceState, reason: Reason) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let Some(len) = status_frame(
        cfg.device_id,
        &cfg.current_version,
        state,
        reason,
        (0, 0),
        (0, ImageId([0; 8])),
        device_secret(cfg).as_ref(),
        &mut buf,
    ) else {
        return;
    };
    let sock = match UdpSocket::bind(SocketAddr::from((cfg.interface, 0))) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("status report to {to}: {e}");
            return;
        }
    };
    // R-STAT-3: the copies of an outcome, timed by proto's one reporter.
    let mut timer = Reporter::outcome(Instant::ZERO);
    let mut now = Instant::ZERO;
    while let Some(at) = timer.due_at() {
        std::thread::sleep(at.saturating_since(now));
        now = at;
        if let Err(e) = sock.send_to(&buf[..len], to) {
            log::warn!("status report to {to}: {e}");
            return;
        }
        timer.sent(now, None);
    }
}

/// `firmcast-agent confirm` (and the start-up confirm): returns the exit code.
pub fn run(cfg: &Config, dry_run: bool) -> ExitCode {
    // Without `ab-uboot` there is no [ab] (the config refuses it) and no
    // U-Boot environment code is linked.
    let Some(ab) = cfg.ab.as_ref().filter(|_| Feature::AbUboot.enabled()) else {
        log::error!(
            "confirm needs activation = \"ab-uboot\" (config {} has {:?})",
            cfg.path.display(),
            cfg.activation.as_str()
        );
        return ExitCode::Usage;
    };
    let mut env =
        match flasher::uboot_env::open_config_file(&ab.env_config, ab.env_endian.resolve()) {
            Ok(e) if e.is_valid() => e,
            Ok(_) => {
                log::error!(
                    "confirm: no valid U-Boot environment at {} (both copies fail their CRC)",
                    ab.env_config.display()
                );
                return ExitCode::Activation;
            }
            Err(e) => {
                log::error!("confirm: U-Boot environment: {e}");
                return ExitCode::Activation;
            }
        };
    let outcome = match confirm(&mut env, ab, || health_check(cfg), dry_run) {
        Ok(o) => o,
        Err(e) => {
            log::error!("confirm: writing the U-Boot environment failed: {e}");
            return ExitCode::Activation;
        }
    };
    let slot_name = |v: &str| activate::policy(ab).slot_of(v).map_or("?", Slot::name);
    let code = match &outcome {
        Outcome::NothingPending => {
            log::info!(
                "confirm: no update waiting for confirmation ({}={})",
                ab.upgrade_available_var,
                env.get(&ab.upgrade_available_var).unwrap_or("(unset)")
            );
            ExitCode::Ok
        }
        Outcome::Confirmed { slot } => {
            log::info!(
                "confirmed: slot {} ({}={slot}) version {} is healthy; {}=0 {}=0{}",
                slot_name(slot),
                ab.slot_var,
                cfg.current_version,
                ab.upgrade_available_var,
                ab.bootcount_var,
                if dry_run {
                    " (dry run: not written)"
                } else {
                    ""
                }
            );
            ExitCode::Ok
        }
        Outcome::HealthCheckFailed { why } => {
            log::error!(
                "not confirmed: {why}; {}=1 stays set so the bootloader rolls back after bootlimit failed boots",
                ab.upgrade_available_var
            );
            ExitCode::Activation
        }
        Outcome::RolledBack { activated, running } => {
            log::warn!(
                "rolled back: slot {} ({activated}) was activated but the bootloader runs slot {} ({running}), version {}; rollback disarmed",
                slot_name(activated),
                slot_name(running),
                cfg.current_version
            );
            ExitCode::Ok
        }
    };
    if let Some((state, reason)) = outcome.status() {
        if dry_run {
            log::info!(
                "dry run: would report {} to {}",
                state.as_str(),
                cfg.repair_server
            );
        } else {
            report(cfg, cfg.repair_server, state, reason);
        }
    }
    code
}

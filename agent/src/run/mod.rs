//! The agent's run: [`run`] wires the parts together and each lives in its
//! own file.
//!
//! - `settings.rs`: [`CoreSettings`] and the receiver's config, from the [`Config`].
//! - `activation.rs`: before listening, where the image goes and the
//!   [`Activator`] that makes it boot (`ab-uboot` through `flasher::ab`).
//! - `shell.rs` (+ `shell/flash.rs`): [`Core`], the network-free shell around
//!   [`proto::receiver::Receiver`]: datagrams and time in, flash written,
//!   datagrams out, the exit decided. It reads no clock: every handler is
//!   given `now`. Tests drive it with a fake clock and an in-process sender.
//! - `event_loop.rs`: sockets, signals and `poll`, following the driving
//!   contract of `proto`: after every input drain every output (events, then
//!   transmits), then sleep until the next deadline or a readable socket.
//! - `nap.rs`: how long the loop lets its sockets collect a batch after a
//!   thin wakeup, sized to the stream.
//! - `target.rs`: target-path helpers; `seed.rs`: the OS's randomness and clock.
//!
//! ```text
//!  poll(signalfd, data, repair, unicast; timeout = earliest deadline)
//!    ├─ datagram ─▶ Core::handle_datagram(now) ─▶ Receiver::handle_datagram
//!    │                 └─ events: ManifestAccepted → open target, resume scan
//!    │                            WriteBlock → ImageWriter::write_block → handle_flash_done
//!    │                            VerifyImage → (next turn, after the Status) read back,
//!    │                                          (the turn after) handle_verify_done
//!    │                            Done / Failed / Refused → decide the exit
//!    ├─ deadline ─▶ Core::handle_timeout(now)
//!    └─ Core::poll_transmit ─▶ unicast socket (repair server, sender)
//! ```

use std::time::Duration;

use activate::DryRunFlash;
use flasher::Flash;
use proto::wire::DeviceState;
use proto::Instant;

use crate::activate;
use crate::config::{Activation, Config};
use crate::exit::ExitCode;
use crate::{confirm, floor, net};

mod activation;
mod event_loop;
mod nap;
mod seed;
mod settings;
mod shell;
mod target;

use activation::Prepared;
pub use activation::{Activator, ImageInfo};
pub use seed::os_seed;
pub use settings::{receiver_config, CoreSettings};
pub use shell::{Core, CoreStats, Opener, Stopwatch, PROGRESS_EVERY};

/// Run the agent with `cfg` until it exits (`dry_run`: write nothing).
pub fn run(cfg: &Config, dry_run: bool) -> ExitCode {
    if cfg.confirm.at_startup {
        let code = confirm::run(cfg, dry_run);
        if code == ExitCode::Usage {
            return code;
        }
    }
    let mut prepared = match activation::prepare(cfg, dry_run) {
        Ok(p) => p,
        Err(code) => return crate::hooks::finish(code),
    };
    // R-ROLL-2: the floor file is opened now, before root is dropped.
    let mut floor_file = match cfg.floor_file.as_deref().map(floor::FloorFile::open) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(why)) => {
            log::error!("{why}; not updating");
            return ExitCode::Usage;
        }
    };
    if let Some(f) = &floor_file {
        prepared.floor = floor::newest(&prepared.floor, f.floor()).to_string();
    }
    if !prepared.floor.is_empty() {
        log::info!(
            "anti-rollback floor {}: images older than it are refused",
            prepared.floor
        );
    }
    let mut activated = false;
    let mut done_floor = String::new();
    let code = run_update(cfg, dry_run, prepared, &mut activated, &mut done_floor);
    if let (Some(f), false, ExitCode::Updated) = (floor_file.as_mut(), dry_run, code) {
        match f.raise(&done_floor) {
            Ok(true) => log::info!("anti-rollback floor raised to {done_floor}"),
            Ok(false) => {}
            Err(why) => log::warn!("{why}; the floor stays {}", f.floor()),
        }
    }
    let code = crate::hooks::finish(code);
    if code == ExitCode::Updated
        && !cfg.reboot_command.is_empty()
        && (activated
            || dry_run
            || matches!(cfg.activation, Activation::InPlace | Activation::None))
    {
        if dry_run {
            log::info!("dry run: would reboot with {:?}", cfg.reboot_command);
        } else {
            log::info!("rebooting into the new image: {:?}", cfg.reboot_command);
            let r = crate::spawn::run_command(&cfg.reboot_command, &[], Duration::from_secs(60));
            if !r.success() {
                log::error!("reboot command {:?}: {r}", cfg.reboot_command);
            }
        }
    }
    code
}

/// R-LOCAL-3: as root, open the target now and become `cfg.user`, unless
/// the activation needs root or the target cannot be opened yet (then root
/// is kept for this run, and the log says why once). Returns the open target.
fn drop_root(cfg: &Config, target: &str) -> Result<Option<Box<dyn Flash + Send>>, ExitCode> {
    if !crate::perms::running_as_root() {
        return Ok(None);
    }
    let user = match crate::privdrop::plan_for(cfg) {
        crate::privdrop::Plan::Drop(user) => user,
        crate::privdrop::Plan::KeepRoot(why) => {
            log::info!("running as root for the whole run: {why}");
            return Ok(None);
        }
    };
    let flash = match flasher::open_target(target, cfg.target_size) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("keeping root: the target must be open before dropping it, and opening it failed ({e}); it is opened again when an update comes");
            return Ok(None);
        }
    };
    match crate::privdrop::drop_to(&user) {
        Ok((uid, gid)) => {
            log::info!("dropped root: running as {user} (uid {uid}, gid {gid}) with the sockets, the target and the environment open");
            Ok(Some(flash))
        }
        Err(why) => {
            // A half-done drop (groups gone, uid not) is not worth keeping
            // going with: the operator asked for an unprivileged agent.
            log::error!("dropping root to {user}: {why}; not updating");
            Err(ExitCode::Usage)
        }
    }
}

/// The receive loop; `activated` tells the caller a reboot is due.
/// `done_floor` receives the signed floor of an image this run wrote and
/// activated (R-ROLL-2).
fn run_update(
    cfg: &Config,
    dry_run: bool,
    prepared: Prepared,
    activated: &mut bool,
    done_floor: &mut String,
) -> ExitCode {
    let clock = seed::monotonic();
    let sfd = event_loop::signal_fd();
    log::info!(
        "firmcast-agent {} starting: board {} version {}, target {}, group {} / repair {} on {}, repair server {}, device id {:016x}, boot window {} s",
        env!("CARGO_PKG_VERSION"),
        cfg.board,
        cfg.current_version,
        cfg.target,
        cfg.group,
        cfg.repair_group,
        cfg.interface,
        cfg.repair_server,
        cfg.device_id,
        cfg.boot_window.as_secs()
    );

    // At boot the interface may not be up yet: retry, bounded by the boot window.
    let join_until = clock() + cfg.boot_window;
    let mut waiting = false;
    let groups = net::Groups::of(cfg);
    let sockets = loop {
        match net::open(&groups, cfg.rcvbuf_bytes) {
            Ok(s) => break s,
            Err(net::OpenError::Interface(why)) => {
                if clock() >= join_until {
                    log::info!(
                        "interface {} did not come up within {} s ({why}); no update this boot",
                        cfg.interface,
                        cfg.boot_window.as_secs()
                    );
                    return ExitCode::Ok;
                }
                if !waiting {
                    log::info!(
                        "waiting for interface address {} ({why}); retrying every 200 ms",
                        cfg.interface
                    );
                    waiting = true;
                }
                if let Some(code) = event_loop::sleep_or_signal(sfd.as_ref(), 200) {
                    return code;
                }
            }
            Err(net::OpenError::Fatal(why)) => {
                log::error!("sockets: {why}");
                return ExitCode::Usage;
            }
        }
    };
    if sockets.rcvbuf_effective < cfg.rcvbuf_bytes {
        log::warn!(
            "SO_RCVBUF: asked for {} bytes, the kernel granted {} (raise net.core.rmem_max)",
            cfg.rcvbuf_bytes,
            sockets.rcvbuf_effective
        );
    }
    log::info!(
        "joined {groups} on {}; listening (unicast {})",
        cfg.interface,
        sockets
            .unicast
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );

    let target = prepared.target.clone();
    let size = cfg.target_size;
    let mut opened = match drop_root(cfg, &target) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let opener: Opener<Box<dyn Flash + Send>> = Box::new(move || {
        let f = match opened.take() {
            Some(f) => f,
            None => flasher::open_target(&target, size)?,
        };
        Ok(if dry_run {
            Box::new(DryRunFlash::new(f))
        } else {
            f
        })
    });
    let mut rxc = receiver_config(cfg, seed::os_seed() ^ cfg.device_id);
    rxc.min_version = prepared.floor;
    let mut settings = CoreSettings::from_config(cfg);
    settings.target = prepared.target;
    settings.dry_run = dry_run;
    let mut core = Core::new(
        settings,
        rxc,
        opener,
        Box::new(clock),
        Instant::ZERO,
        clock(),
    );
    if let Some(a) = prepared.activator {
        core.set_activator(a);
    }
    let code = event_loop::drive(cfg, &sockets, &groups, sfd.as_ref(), &mut core, clock);
    *activated = core.activated();
    if code == ExitCode::Updated && core.receiver().state() == DeviceState::Done {
        if let Some(m) = core.receiver().manifest() {
            *done_floor = m.min_version.to_string();
        }
    }
    code
}

#[cfg(test)]
mod tests;

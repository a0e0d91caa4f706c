//! Activation wiring: before listening, decide where the image goes and
//! build the [`Activator`] that makes it the one that boots once it is
//! written and verified (`ab-uboot` through `flasher::ab`, `command` through
//! the board's command; `in-place` and `none` need none).

use flasher::ab::AbError;
use proto::wire::ImageId;

use super::target::{image_path, trim_file_target};
use crate::activate::{self, ActivationError};
use crate::config::{Activation, Config};
use crate::exit::ExitCode;
use crate::features::Feature;
use crate::floor;

/// Activates a written, verified image (`ab-uboot`, `command`): returns the
/// log line on success.
pub type Activator = Box<dyn FnMut(&ImageInfo) -> Result<String, ActivationError>>;

/// What an [`Activator`] learns about the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The manifest's version.
    pub version: String,
    /// The manifest's signed anti-rollback floor (R-ROLL-1), empty for none.
    pub min_version: String,
    /// Image length in bytes.
    pub image_len: u64,
    /// The image id.
    pub image_id: ImageId,
    /// The target spec it was written to.
    pub target: String,
}

/// Where to write and how to activate, decided before listening.
pub(super) struct Prepared {
    pub(super) target: String,
    pub(super) activator: Option<Activator>,
    /// The anti-rollback floor in effect (R-ROLL-2).
    pub(super) floor: String,
}

/// `ab-uboot`: read the environment, refuse while an update waits for its
/// confirmation, write the inactive slot. `command`: the configured target.
pub(super) fn prepare(cfg: &Config, dry_run: bool) -> Result<Prepared, ExitCode> {
    match cfg.activation {
        Activation::AbUboot => {
            let Some(ab) = cfg.ab.clone().filter(|_| Feature::AbUboot.enabled()) else {
                return Err(ExitCode::Usage);
            };
            let endian = ab.env_endian.resolve();
            let env_cfg = std::fs::read_to_string(&ab.env_config)
                .map_err(|e| format!("cannot read {}: {e}", ab.env_config.display()))
                .and_then(|text| {
                    flasher::uboot_env::parse_fw_env_config(
                        &ab.env_config.display().to_string(),
                        &text,
                    )
                    .map_err(|e| e.to_string())
                });
            let env_cfg = match env_cfg {
                Ok(c) => c,
                Err(why) => {
                    log::error!("ab-uboot: U-Boot environment: {why}; not updating");
                    return Err(ExitCode::Activation);
                }
            };
            if let Err(e) = activate::check_env_copies(&cfg.path, &ab, &env_cfg) {
                log::error!("{e}");
                return Err(ExitCode::Usage);
            }
            let env = match flasher::uboot_env::open_config(&env_cfg, endian) {
                Ok(e) if e.is_valid() => e,
                Ok(_) => {
                    log::error!(
                        "ab-uboot: no valid U-Boot environment at {} (both copies fail their CRC); not updating",
                        ab.env_config.display()
                    );
                    return Err(ExitCode::Activation);
                }
                Err(e) => {
                    log::error!("ab-uboot: U-Boot environment: {e}; not updating");
                    return Err(ExitCode::Activation);
                }
            };
            let p = activate::policy(&ab);
            let active = match p.update_from(&env) {
                Ok(s) => s,
                Err(e @ AbError::Unconfirmed { .. }) => {
                    log::warn!(
                        "ab-uboot: {e}; not updating until `firmcast-agent confirm` succeeds"
                    );
                    return Err(ExitCode::Ok);
                }
                Err(e) => {
                    log::error!("ab-uboot: {e}; not updating");
                    return Err(ExitCode::Activation);
                }
            };
            let new = active.other();
            let target = activate::slot_target(&ab, new).to_string();
            log::info!(
                "ab-uboot: running slot {} ({}={}); an update goes to slot {} ({target})",
                active.name(),
                ab.slot_var,
                p.value(active),
                new.name(),
            );
            // The devices stay open: after the privilege drop (R-LOCAL-3)
            // they could not be opened again.
            let mut env = env;
            let floor = env.get(floor::ENV_VAR).unwrap_or("").to_string();
            let activator: Activator = Box::new(move |info: &ImageInfo| {
                // Read the environment again: the flip checks that it still
                // names the slot we started from (someone else may have
                // switched meanwhile).
                env.reload().map_err(|e| ActivationError::ab(&ab, e))?;
                activate::activate_ab(&mut env, &ab, new, &info.min_version, dry_run)
                    .map_err(|e| ActivationError::ab(&ab, e))
            });
            Ok(Prepared {
                target,
                activator: Some(activator),
                floor,
            })
        }
        Activation::Command => {
            let Some(c) = cfg.command.clone().filter(|_| Feature::Command.enabled()) else {
                return Err(ExitCode::Usage);
            };
            let activator: Activator = Box::new(move |info: &ImageInfo| {
                let path = image_path(&info.target);
                let argv = activate::expand(&c.argv, &path, info.image_len, &info.version);
                if dry_run {
                    return Ok(format!(
                        "dry run: would run {argv:?} (timeout {} s)",
                        c.timeout.as_secs()
                    ));
                }
                trim_file_target(&info.target, info.image_len)?;
                let env = [
                    ("FIRMCAST_IMAGE", path.clone()),
                    ("FIRMCAST_IMAGE_SIZE", info.image_len.to_string()),
                    ("FIRMCAST_VERSION", info.version.clone()),
                    ("FIRMCAST_TARGET", info.target.clone()),
                ];
                log::info!(
                    "command: running {argv:?} (timeout {} s)",
                    c.timeout.as_secs()
                );
                let r = crate::spawn::run_command(&argv, &env, c.timeout);
                if r.success() {
                    Ok(format!(
                        "command {argv:?}: {r}; version {} activated",
                        info.version
                    ))
                } else {
                    Err(ActivationError::Command { argv, result: r })
                }
            });
            Ok(Prepared {
                target: cfg.target.clone(),
                activator: Some(activator),
                floor: String::new(),
            })
        }
        Activation::InPlace | Activation::None => Ok(Prepared {
            target: cfg.target.clone(),
            activator: None,
            floor: String::new(),
        }),
    }
}

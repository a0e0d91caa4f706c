//! The shell's settings ([`CoreSettings`]) and the receiver's
//! ([`ReceiverConfig`]), both taken from the agent's [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use proto::receiver::ReceiverConfig;

use crate::config::{Activation, Config};
use crate::{confirm, resume};

/// The settings of [`Core`](super::Core), taken from the [`Config`].
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// This device's board.
    pub board: String,
    /// The running version.
    pub current_version: String,
    /// The target spec (for log lines).
    pub target: String,
    /// Activation method.
    pub activation: Activation,
    /// Exit 0 at once on a not-newer image.
    pub exit_when_current: bool,
    /// Which blocks the final read-back reads (R-VER-2).
    pub final_read_back: resume::FinalReadBack,
    /// Listening this long with no update → exit 0.
    pub boot_window: Duration,
    /// No progress for this long while receiving → exit 5.
    pub stall_timeout: Duration,
    /// The whole run ends (exit 5) this long after it started (R-RUN-2).
    pub run_deadline: Duration,
    /// Where `Dest::RepairServer` goes.
    pub repair_server: SocketAddr,
    /// Test: drop this many per thousand received datagrams.
    pub rx_loss_permille: u32,
    /// Test: seed of the loss generator.
    pub rx_loss_seed: u64,
    /// Test: sleep after each block write.
    pub block_delay: Duration,
    /// `--dry-run`: the target is wrapped so nothing is written; the
    /// read-back is skipped (blocks were digest-checked before "writing").
    pub dry_run: bool,
    /// This device's id (for the shell's own Status reports).
    pub device_id: u64,
    /// The device key every Status is signed with (R-STAT-4), if configured.
    pub device_key: Option<ed25519_compact::SecretKey>,
}

impl CoreSettings {
    /// From the config file.
    pub fn from_config(c: &Config) -> Self {
        CoreSettings {
            board: c.board.clone(),
            current_version: c.current_version.clone(),
            target: c.target.clone(),
            activation: c.activation,
            exit_when_current: c.exit_when_current,
            final_read_back: c.final_read_back,
            boot_window: c.boot_window,
            stall_timeout: c.stall_timeout,
            run_deadline: c.run_deadline,
            repair_server: c.repair_server,
            rx_loss_permille: c.test.rx_loss_permille,
            rx_loss_seed: c.test.rx_loss_seed,
            block_delay: c.test.block_delay,
            dry_run: false,
            device_id: c.device_id,
            device_key: confirm::device_secret(c),
        }
    }
}

/// The receiver configuration for `c`, seeded with `rng_seed`.
pub fn receiver_config(c: &Config, rng_seed: u64) -> ReceiverConfig {
    let mut rc = ReceiverConfig::new(c.device_id, &c.board, &c.current_version, c.public_key);
    rc.window_blocks = c.window_blocks;
    rc.max_window_bytes = c.max_buffer_bytes;
    rc.max_block_size = c.max_block_size;
    rc.hold_first_block = c.activation == Activation::InPlace;
    rc.rng_seed = rng_seed;
    // R-NACK-2: the round trip is not measured here (0); the operator sizes
    // the back-off for the fleet.
    rc.nack_delay_max = c.nack_backoff.max(rc.nack_delay_min);
    rc.nack_backoff_shape = c.nack_backoff_shape;
    // R-ANN-2: "nothing to do" needs the signed manifest, not an Announce.
    rc.fetch_when_current = c.exit_when_current;
    rc
}

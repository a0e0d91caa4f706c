//! The receiver's configuration: identity, key and the knobs of the window,
//! NACK back-off and Status timer.

use alloc::string::String;
use core::time::Duration;

use crate::manifest::PUBLIC_KEY_LEN;

/// How a receiver behaves; fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// This device's id, as reported in NACK and Status frames.
    pub device_id: u64,
    /// This device's board id; manifests for other boards are refused.
    pub board: String,
    /// The version running now; only strictly newer images are accepted.
    pub current_version: String,
    /// The operator's Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Block buffers in the receive window.
    pub window_blocks: u32,
    /// Bytes the window's block buffers may take: fewer than
    /// `window_blocks` slots for large blocks (R-PACE-4).
    pub max_window_bytes: u64,
    /// Largest block size accepted (bounds the window's memory).
    pub max_block_size: u32,
    /// Largest signed manifest accepted.
    pub max_manifest_len: u32,
    /// Bytes the target can hold; larger images are refused.
    pub capacity: u64,
    /// Keep block 0 (the image header) until every other block is flashed (in-place updates).
    pub hold_first_block: bool,
    /// Shortest random back-off before a NACK (R-NACK-2).
    pub nack_delay_min: Duration,
    /// Longest random back-off before a NACK.
    pub nack_delay_max: Duration,
    /// Wait before asking again for chunks already NACKed (R-NACK-3).
    pub nack_retry: Duration,
    /// NACKs per block before the receiver waits for the next carousel pass instead.
    pub max_nacks_per_block: u32,
    /// Interval between Status reports (R-STAT-1).
    pub status_interval: Duration,
    /// Seed of the back-off generator.
    pub rng_seed: u64,
    /// Round trip to the repair server, measured by the shell or configured;
    /// zero when unknown. Scales the back-off (R-NACK-2).
    pub round_trip: Duration,
    /// The back-off reaches at least this many round trips.
    pub nack_backoff_rtts: u32,
    /// Shape of the back-off: the largest of this many uniform draws (1 =
    /// uniform). Larger values make early NACKs rare, so that in a big fleet
    /// few devices ask before the repair is overheard (R-NACK-4).
    pub nack_backoff_shape: u32,
    /// After a repair for a block is heard, the block's NACK waits until no
    /// repair for it has arrived for this long (R-NACK-4).
    pub nack_suppress: Duration,
    /// NACK a block only once the carousel has passed all of it (R-NACK-5):
    /// one NACK then carries the block's whole loss count, which is what a
    /// parity repair server sizes its answer by. A receiver also does so,
    /// without being told, once it has heard a parity symbol.
    pub nack_whole_blocks: bool,
    /// End-game fetch (R-NACK-6): once every block still missing fits the
    /// window, blocks the carousel will not bring within `window_blocks`
    /// blocks are asked for whole from the repair server instead of waiting
    /// for the next pass.
    pub endgame_fetch: bool,
    /// A manifest fetch that stores no new chunk for this long is dropped,
    /// and one that runs four times this long while another announced image
    /// waits goes behind it (R-ANN-3).
    pub manifest_fetch_timeout: Duration,
    /// The anti-rollback floor (R-ROLL-1): the newest `min_version` of an
    /// image this device activated, kept by the shell; images older than it
    /// are refused as not newer. Empty for none.
    pub min_version: String,
    /// Fetch the manifest of an image announced with the running version,
    /// so that a signed manifest, not the Announce, can say the device is
    /// current (R-ANN-2; the agent's `exit_when_current`).
    pub fetch_when_current: bool,
}

impl ReceiverConfig {
    /// A configuration with the defaults for everything but identity and key.
    pub fn new(
        device_id: u64,
        board: &str,
        current_version: &str,
        public_key: [u8; PUBLIC_KEY_LEN],
    ) -> Self {
        ReceiverConfig {
            device_id,
            board: String::from(board),
            current_version: String::from(current_version),
            public_key,
            window_blocks: 8,
            max_window_bytes: u64::MAX,
            max_block_size: 256 * 1024,
            max_manifest_len: 256 * 1024,
            capacity: u64::MAX,
            hold_first_block: false,
            nack_delay_min: Duration::from_millis(2),
            nack_delay_max: Duration::from_millis(12),
            nack_retry: Duration::from_millis(60),
            max_nacks_per_block: 12,
            status_interval: Duration::from_secs(1),
            rng_seed: device_id,
            round_trip: Duration::ZERO,
            nack_backoff_rtts: 4,
            nack_backoff_shape: 1,
            nack_suppress: Duration::from_millis(15),
            nack_whole_blocks: false,
            endgame_fetch: true,
            manifest_fetch_timeout: Duration::from_secs(5),
            fetch_when_current: false,
            min_version: String::new(),
        }
    }
}

//! How many block slots the receive window gets (R-PACE-4): the configured
//! `window_blocks`, fewer when that many blocks of this image's size would
//! take more than the memory budget, never fewer than two (one filling
//! while one is written).

/// Slots for blocks of `padded_block_len` bytes: `window_blocks`, at most
/// `max_window_bytes / padded_block_len`, at least 2 (or `window_blocks` if
/// that is less).
pub(crate) fn window_slots(
    window_blocks: u32,
    max_window_bytes: u64,
    padded_block_len: usize,
) -> u32 {
    let fit = max_window_bytes / (padded_block_len as u64).max(1);
    let fit = u32::try_from(fit).unwrap_or(u32::MAX);
    window_blocks.min(fit.max(2)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_pace_4_the_budget_bounds_the_slots_for_large_blocks() {
        let budget = 640 * 1024;
        // 64 KiB blocks of 1408-byte chunks: 47 chunks, 66,176 bytes.
        assert_eq!(window_slots(16, budget, 47 * 1408), 9);
        // 128 KiB blocks: 94 chunks, 132,352 bytes.
        assert_eq!(window_slots(16, budget, 94 * 1408), 4);
        // Small blocks: window_blocks is the bound.
        assert_eq!(window_slots(16, budget, 4096), 16);
        // Never fewer than two, unless configured so.
        assert_eq!(window_slots(16, 1000, 256 * 1024), 2);
        assert_eq!(window_slots(1, 1000, 256 * 1024), 1);
        assert_eq!(window_slots(16, u64::MAX, 256 * 1024), 16);
    }
}

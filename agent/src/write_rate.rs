//! The device's flash write rate (R-PACE-1): image bytes per second of time
//! spent writing, over the last few blocks, as the Status reports it so the
//! sender can pace the carousel to the flash. Fixed size, no allocation.

use std::time::Duration;

/// Blocks the rate is averaged over: one slow erase (a NOR sector that
/// needed a retry) does not halve the pace, and a change of speed shows
/// within a few blocks.
const BLOCKS: usize = 8;

/// The last `BLOCKS` (8) writes: bytes and time taken.
#[derive(Debug, Default)]
pub struct WriteRate {
    writes: [(u64, Duration); BLOCKS],
    next: usize,
    /// Block writes seen, the first one included.
    seen: usize,
}

/// The first block write of a run is left out of the average (R-PACE-1):
/// it often pays for opening, erasing ahead or a cold page cache, and a fast
/// device that kept it would hold a fast fleet back at a fraction of its
/// speed. Until the second write it is all there is, so it is reported
/// alone, as a provisional rate: a slow fleet's sender hears it one write
/// earlier than the average, and the second write replaces it.
const SKIP_FIRST: usize = 1;

impl WriteRate {
    /// Note a block of `bytes` written in `took`; returns the rate in kbit/s
    /// (at least 1): the first write's own rate (provisional), then the
    /// average of the last `BLOCKS` writes after it.
    pub fn record(&mut self, bytes: usize, took: Duration) -> u32 {
        self.seen += 1;
        if self.seen <= SKIP_FIRST {
            return kbps(bytes as u64, took);
        }
        self.writes[self.next] = (bytes as u64, took);
        self.next = (self.next + 1) % BLOCKS;
        let (bytes, took) = self
            .writes
            .iter()
            .fold((0u64, Duration::ZERO), |(b, t), w| (b + w.0, t + w.1));
        kbps(bytes, took)
    }
}

/// `bytes` in `took` in kbit/s, at least 1 (instant writes, e.g. a file in
/// tmpfs, count as one microsecond). In u64: a 32-bit device has no 128-bit
/// division, and the library routine that stands in for it costs 2 KB.
fn kbps(bytes: u64, took: Duration) -> u32 {
    let micros = took
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(took.subsec_micros()))
        .max(1);
    // bits per microsecond = Mbit/s; times 1000 = kbit/s.
    let kbps = bytes.saturating_mul(8 * 1000) / micros;
    u32::try_from(kbps).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_pace_1_rate_over_the_last_blocks() {
        let mut w = WriteRate::default();
        // The first write of a run is reported alone, provisionally...
        assert_eq!(w.record(65_536, Duration::from_millis(2500)), 209);
        // ...and left out once the second is measured: 64 KiB in 250 ms is
        // 2,097 kbit/s, not the 381 of the two together.
        let k = w.record(65_536, Duration::from_millis(250));
        assert_eq!(k, 2097);
        for _ in 0..BLOCKS {
            w.record(65_536, Duration::from_millis(125));
        }
        assert_eq!(w.record(65_536, Duration::from_millis(125)), 4194);
        // Instant writes (a file in tmpfs) still give a finite rate.
        assert!(w.record(65_536, Duration::ZERO) > 4194);
    }
}

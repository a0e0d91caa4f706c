//! The progress line's ETA: when the least advanced device still receiving
//! this image will have every block, extrapolated from its own progress;
//! before any device has written a block, when the carousel pass ends.

use std::time::Duration;

use proto::fleet::Fleet;
use proto::wire::{DeviceState, ImageId};

/// Time left, or `None` when nothing is known yet. `pass_left` is the time
/// the rest of the current carousel pass takes at the current rate.
pub fn eta(
    fleet: &Fleet,
    image_id: ImageId,
    now: proto::Instant,
    pass_left: Duration,
) -> Option<Duration> {
    let mut worst: Option<Duration> = None;
    let mut waiting = false;
    for (_, r) in fleet.iter() {
        if r.image_id != image_id
            || !matches!(r.state, DeviceState::Receiving | DeviceState::Resuming)
        {
            continue;
        }
        if r.blocks_done == 0 || r.blocks_total == 0 {
            waiting = true;
            continue;
        }
        let elapsed = now.saturating_since(r.first_seen);
        let left = r.blocks_total.saturating_sub(r.blocks_done);
        let t = elapsed.mul_f64(f64::from(left) / f64::from(r.blocks_done));
        worst = Some(worst.map_or(t, |w| w.max(t)));
    }
    match worst {
        Some(t) => Some(t),
        None if waiting || fleet.is_empty() => Some(pass_left),
        None => None,
    }
}

/// "ETA 1m05s", "ETA 12s" or "ETA -".
pub fn eta_text(t: Option<Duration>) -> String {
    match t.map(|d| d.as_secs()) {
        None => "ETA -".to_string(),
        Some(s) if s >= 60 => format!("ETA {}m{:02}s", s / 60, s % 60),
        Some(s) => format!("ETA {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(eta_text(None), "ETA -");
        assert_eq!(eta_text(Some(Duration::from_secs(65))), "ETA 1m05s");
        assert_eq!(eta_text(Some(Duration::from_millis(12_900))), "ETA 12s");
    }
}

//! The window's span: how long the carousel takes to stream as many chunks
//! as the window's slots hold, measured from where carousel datagrams land
//! and when they arrive. A block's repair has to come back within it, or the
//! blocks the stream brings meanwhile evict the block before it is complete:
//! R-NACK-2 keeps the NACK back-off within a quarter of it.

use core::time::Duration;

use crate::time::Instant;

/// Back-offs stay within this fraction of the span (R-NACK-2).
const BACKOFF_SHARE_OF_SPAN: u64 = 4;

/// The span, measured over each stretch of the stream as long as the window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WindowSpan {
    /// Where the stretch being measured began: when, and the stream position.
    mark: Option<(Instant, u32)>,
    /// A quarter of the last whole stretch's duration, scaled to exactly
    /// the window (kept rather than the span: every back-off reads it).
    cap: Option<Duration>,
}

impl WindowSpan {
    /// Carousel data at global chunk `pos` arrived at `now`, moving the
    /// stream forward (`wrapped`: it began a new pass). `window_chunks`: the
    /// chunks the window's slots hold.
    pub(super) fn observe(&mut self, now: Instant, pos: u32, window_chunks: u32, wrapped: bool) {
        let Some((began, from)) = self.mark.filter(|&(_, from)| !wrapped && pos >= from) else {
            self.mark = Some((now, pos));
            return;
        };
        let advanced = pos - from;
        if advanced < window_chunks.max(1) {
            return;
        }
        let micros = now.as_micros().saturating_sub(began.as_micros());
        let span = micros.saturating_mul(u64::from(window_chunks)) / u64::from(advanced);
        self.cap = Some(Duration::from_micros(span / BACKOFF_SHARE_OF_SPAN));
        self.mark = Some((now, pos));
    }

    /// The longest NACK back-off that leaves a repair most of the window's
    /// span to come back in (R-NACK-2); `None` until a stretch was measured.
    pub(super) fn backoff_cap(&self) -> Option<Duration> {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn the_span_is_the_time_one_window_of_chunks_takes_to_stream() {
        let mut s = WindowSpan::default();
        // 100 chunks per window, one chunk every 0.5 ms.
        for c in 0..100u32 {
            s.observe(Instant::from_micros(u64::from(c) * 500), c, 100, false);
        }
        assert_eq!(s.backoff_cap(), None, "not a whole window yet");
        s.observe(at(50), 100, 100, false);
        assert_eq!(s.backoff_cap(), Some(Duration::from_micros(12_500)));
        // Losses leave gaps in the positions; a stretch longer than the
        // window is scaled to it. The stream slows down to 1 ms a chunk.
        s.observe(at(200), 250, 100, false);
        assert_eq!(s.backoff_cap(), Some(Duration::from_millis(25)));
    }

    #[test]
    fn a_new_pass_starts_a_new_stretch() {
        let mut s = WindowSpan::default();
        s.observe(at(0), 900, 100, false);
        // The pass wraps after 40 chunks: no stretch spans the wrap.
        s.observe(at(20), 10, 100, true);
        s.observe(at(40), 60, 100, false);
        assert_eq!(s.backoff_cap(), None);
        s.observe(at(80), 110, 100, false);
        assert_eq!(s.backoff_cap(), Some(Duration::from_millis(15)));
    }
}

//! The nap after a thin wakeup: how long the event loop lets its sockets
//! collect datagrams before it reads again, sized to the stream.
//!
//! Without it a stream wakes the agent once per datagram. A nap lets the
//! socket buffer collect a batch instead; its length follows the stream, so
//! a slow stream is not read one or two datagrams at a time and a fast one
//! does not fill the socket buffer meanwhile: the wakeup after a nap counts
//! what arrived during it, and the next nap doubles while that is under
//! [`BATCH_LOW`] and halves while it is over [`BATCH_HIGH`]. A nap never
//! runs past half the time left to a protocol deadline, so the socket is
//! drained before the deadline's handler runs (a NACK asks only for what
//! is really missing).

use std::time::Duration;

use proto::Instant;

/// A wakeup that read fewer datagrams than this is thin: nap after it.
const THIN_BELOW: usize = 8;
/// A nap that collected fewer datagrams than this doubles.
const BATCH_LOW: usize = 16;
/// A nap that collected more datagrams than this halves.
const BATCH_HIGH: usize = 64;
/// The first nap.
const FIRST: Duration = Duration::from_millis(3);
/// At least: a shorter nap is not worth a sleep.
const SHORTEST: Duration = Duration::from_millis(1);
/// At most: repairs wait in the socket buffer no longer than this.
const LONGEST: Duration = Duration::from_millis(10);

/// The nap length, learned from what the naps before it collected.
#[derive(Debug)]
pub(super) struct Nap {
    len: Duration,
    /// The last wakeup ended in a nap: the next one counts what it collected.
    napped: bool,
}

impl Nap {
    pub(super) fn new() -> Nap {
        Nap {
            len: FIRST,
            napped: false,
        }
    }

    /// After a wakeup that read `received` datagrams at `now`: how long to
    /// nap before polling again (`None`: poll at once), given the earliest
    /// protocol `deadline`.
    pub(super) fn after_wakeup(
        &mut self,
        received: usize,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        if std::mem::take(&mut self.napped) {
            if received < BATCH_LOW {
                self.len = (self.len * 2).min(LONGEST);
            } else if received > BATCH_HIGH {
                self.len = (self.len / 2).max(SHORTEST);
            }
        }
        if !(1..THIN_BELOW).contains(&received) {
            return None;
        }
        let room = deadline.map_or(self.len, |d| d.saturating_since(now) / 2);
        let nap = self.len.min(room);
        self.napped = nap >= SHORTEST;
        self.napped.then_some(nap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_busy_wakeup_or_an_empty_one_does_not_nap() {
        let mut nap = Nap::new();
        assert_eq!(nap.after_wakeup(0, at(0), None), None);
        assert_eq!(nap.after_wakeup(THIN_BELOW, at(0), None), None);
        assert_eq!(nap.after_wakeup(512, at(0), None), None);
    }

    #[test]
    fn a_slow_stream_doubles_the_nap_up_to_the_longest() {
        // 20 Mbit/s: about 1.7 datagrams a millisecond, 5 in the first nap.
        let mut nap = Nap::new();
        assert_eq!(nap.after_wakeup(1, at(0), None), Some(FIRST));
        assert_eq!(nap.after_wakeup(5, at(3), None), Some(FIRST * 2));
        assert_eq!(nap.after_wakeup(7, at(9), None), Some(LONGEST));
        // 17 collected: enough; the wakeup after it is busy, the thin one
        // after that naps as long again.
        assert_eq!(nap.after_wakeup(17, at(19), None), None);
        assert_eq!(nap.after_wakeup(1, at(20), None), Some(LONGEST));
        // A slower stream still: capped.
        assert_eq!(nap.after_wakeup(2, at(30), None), Some(LONGEST));
    }

    #[test]
    fn a_fast_stream_halves_the_nap_down_to_the_shortest() {
        let mut nap = Nap::new();
        assert_eq!(nap.after_wakeup(2, at(0), None), Some(FIRST));
        // 250 datagrams in 3 ms (1 Gbit/s): halve, then halve again.
        assert_eq!(nap.after_wakeup(250, at(3), None), None);
        assert_eq!(nap.after_wakeup(1, at(4), None), Some(FIRST / 2));
        assert_eq!(nap.after_wakeup(120, at(6), None), None);
        assert_eq!(nap.after_wakeup(1, at(6), None), Some(SHORTEST));
        assert_eq!(nap.after_wakeup(70, at(7), None), None);
        assert_eq!(nap.after_wakeup(1, at(7), None), Some(SHORTEST));
    }

    #[test]
    fn a_nap_takes_at_most_half_the_time_left_to_a_deadline() {
        let mut nap = Nap::new();
        for (received, now) in [(1, 0), (2, 3), (2, 9)] {
            nap.after_wakeup(received, at(now), None);
        }
        // The nap is now the longest; a NACK due in 8 ms allows 4.
        assert_eq!(
            nap.after_wakeup(3, at(19), Some(at(27))),
            Some(Duration::from_millis(4))
        );
        // Due in 1 ms: no nap at all, so the busy wakeup after it does not
        // count as one after a nap: the nap is not halved.
        assert_eq!(nap.after_wakeup(3, at(23), Some(at(24))), None);
        assert_eq!(nap.after_wakeup(100, at(24), None), None);
        assert_eq!(nap.after_wakeup(3, at(25), None), Some(LONGEST));
    }
}

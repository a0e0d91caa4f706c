//! What the repair server owes each source of NACKs, and no more: a bounded
//! table of per-source accounts (R-REP-8, R-REP-10).
//!
//! ```text
//!  datagram from addr ──► received(addr) += len          (R-REP-8: anti-amplification)
//!  NACK (addr, device) ──► take ≤ credit(addr), credit(device)   (R-REP-10: per-source budget)
//!  unicast to addr     ──► only while unicast_sent(addr) + len ≤ 3 × received(addr)
//! ```
//!
//! Source addresses are unverified: anyone on the LAN can forge them. The
//! accounts therefore only ever *limit* what a source gets; none of them
//! grants more than the global bounds (R-REP-2, R-REP-6, R-REP-9). A table
//! holds at most `capacity` sources; a new one evicts the least recently
//! seen. Eviction forgets what a source received and starts it over with no
//! anti-amplification credit, so churning the table never yields more bytes
//! to an address than three times what was sent from it.

use alloc::collections::BTreeMap;

use crate::time::Instant;

/// Most unicast bytes per byte received from an address before it is
/// verified (QUIC's anti-amplification factor, RFC 9000 section 8).
pub const AMPLIFICATION_FACTOR: u64 = 3;

/// Sources remembered per table (addresses, device ids).
pub const DEFAULT_MAX_SOURCES: usize = 1024;

/// Per-source chunk credit is counted in millionths of a chunk, so that a
/// rate in chunks per second refills it exactly per microsecond.
const SCALE: u64 = 1_000_000;

/// One source's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Account {
    /// Position in the age order (larger: seen more recently).
    seq: u64,
    /// UDP payload bytes received from it (R-REP-8).
    received: u64,
    /// UDP payload bytes sent to it by unicast (R-REP-8).
    unicast_sent: u64,
    /// Chunk credit, in millionths of a chunk (R-REP-10).
    credit: u64,
    /// When `credit` was last refilled.
    refilled_at: Instant,
}

/// A bounded table of accounts keyed by `K` (an address or a device id).
#[derive(Debug, Clone)]
pub(crate) struct Sources<K: Ord + Copy> {
    capacity: usize,
    /// Chunks per second each source's credit refills at.
    chunks_per_sec: u64,
    /// Most chunks of credit a source can save up.
    burst_chunks: u64,
    by_key: BTreeMap<K, Account>,
    by_age: BTreeMap<u64, K>,
    next_seq: u64,
}

impl<K: Ord + Copy> Sources<K> {
    /// A table of at most `capacity` sources (at least 1), each allowed
    /// `chunks_per_sec` chunks with up to `burst_chunks` saved up.
    pub(crate) fn new(capacity: usize, chunks_per_sec: u64, burst_chunks: u64) -> Self {
        Sources {
            capacity: capacity.max(1),
            chunks_per_sec,
            burst_chunks,
            by_key: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The account of `key`, created (with a full chunk credit and nothing
    /// received) if it is new, evicting the least recently seen when full.
    fn touch(&mut self, now: Instant, key: K) -> &mut Account {
        let seq = self.next_seq;
        self.next_seq += 1;
        let fresh = Account {
            seq,
            received: 0,
            unicast_sent: 0,
            credit: self.burst_chunks.saturating_mul(SCALE),
            refilled_at: now,
        };
        match self.by_key.get(&key).map(|a| a.seq) {
            Some(old) => {
                self.by_age.remove(&old);
            }
            None => {
                if self.by_key.len() >= self.capacity {
                    if let Some((_, oldest)) = self.by_age.pop_first() {
                        self.by_key.remove(&oldest);
                    }
                }
            }
        }
        self.by_age.insert(seq, key);
        let account = self.by_key.entry(key).or_insert(fresh);
        account.seq = seq;
        // Refill the chunk credit for the time since it was last used.
        let elapsed = now
            .as_micros()
            .saturating_sub(account.refilled_at.as_micros());
        account.credit = account
            .credit
            .saturating_add(elapsed.saturating_mul(self.chunks_per_sec))
            .min(self.burst_chunks.saturating_mul(SCALE));
        account.refilled_at = account.refilled_at.max(now);
        account
    }

    /// R-REP-8: `len` bytes arrived from `key`.
    pub(crate) fn received(&mut self, now: Instant, key: K, len: usize) {
        let a = self.touch(now, key);
        a.received = a.received.saturating_add(len as u64);
    }

    /// R-REP-8: whether `len` more unicast bytes to `key` stay within
    /// [`AMPLIFICATION_FACTOR`] times what it sent; if so they are charged.
    /// An address the table does not hold (never heard, or evicted) gets
    /// nothing.
    pub(crate) fn try_unicast(&mut self, key: K, len: usize) -> bool {
        let Some(a) = self.by_key.get_mut(&key) else {
            return false;
        };
        let after = a.unicast_sent.saturating_add(len as u64);
        if after > a.received.saturating_mul(AMPLIFICATION_FACTOR) {
            return false;
        }
        a.unicast_sent = after;
        true
    }

    /// R-REP-10: how many of `want` chunks `key` has credit for at `now`.
    pub(crate) fn available(&mut self, now: Instant, key: K, want: u64) -> u64 {
        let a = self.touch(now, key);
        want.min(a.credit / SCALE)
    }

    /// R-REP-10: charge `n` chunks to `key` (after [`Sources::available`]).
    pub(crate) fn spend(&mut self, key: K, n: u64) {
        if let Some(a) = self.by_key.get_mut(&key) {
            a.credit = a.credit.saturating_sub(n.saturating_mul(SCALE));
        }
    }

    /// Sources in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn r_rep_8_unicast_stays_within_three_times_what_arrived() {
        let mut s: Sources<u32> = Sources::new(4, 0, 0);
        let t = Instant::ZERO;
        assert!(!s.try_unicast(1, 1), "an address never heard gets nothing");
        s.received(t, 1, 29);
        assert!(s.try_unicast(1, 80));
        assert!(!s.try_unicast(1, 8), "87 bytes is the limit for 29 in");
        assert!(s.try_unicast(1, 7));
        s.received(t, 1, 1000);
        assert!(s.try_unicast(1, 3000));
        assert!(!s.try_unicast(1, 1));
    }

    #[test]
    fn r_rep_8_eviction_never_adds_credit() {
        // Churning the table through more addresses than it holds: the
        // evicted address starts over with nothing.
        let mut s: Sources<u32> = Sources::new(4, 0, 0);
        let t = Instant::ZERO;
        s.received(t, 1, 100);
        for k in 2..=5 {
            s.received(t, k, 10);
        }
        assert_eq!(s.len(), 4);
        assert!(!s.try_unicast(1, 1), "evicted: no credit left");
        assert!(s.try_unicast(5, 30));
    }

    #[test]
    fn r_rep_10_credit_refills_at_the_rate_up_to_the_burst() {
        let mut s: Sources<u64> = Sources::new(8, 1000, 300);
        let t0 = Instant::from_micros(1_000);
        assert_eq!(s.available(t0, 7, 1000), 300, "a new source starts full");
        s.spend(7, 300);
        assert_eq!(s.available(t0, 7, 1000), 0);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(s.available(t1, 7, 1000), 100, "1000 chunks/s for 100 ms");
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(s.available(t2, 7, 1000), 300, "capped at the burst");
    }
}

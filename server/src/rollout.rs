//! The rollout's goal and how it ends (R-FLEET-5): `--until-done N|all`,
//! `--devices`, `--abort-if-failed N`; and who did not succeed, and why,
//! for the summary.

use std::time::Duration;

use proto::fleet::{is_final, is_success, DeviceRecord, Fleet};
use proto::wire::{DeviceState, ImageId, Reason};

use crate::report::printable;
use crate::view::expected::Expected;

/// `--until-done`: a number of devices, or every device of `--devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntilDone {
    /// N devices succeed.
    Count(usize),
    /// Every device listed with `--devices` succeeds.
    All,
}

/// Parse `--until-done` (`N` or `all`).
pub fn parse_until_done(s: &str) -> Result<UntilDone, String> {
    match s.trim() {
        "all" => Ok(UntilDone::All),
        n => n.parse::<usize>().map(UntilDone::Count).map_err(|_| {
            format!(
                "invalid --until-done `{s}`: a number of devices, or `all` (with --devices FILE)"
            )
        }),
    }
}

/// Why a rollout ended before its time or pass limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The devices asked for succeeded.
    Reached,
    /// Every awaited device is in a final state, and not enough succeeded.
    Settled,
    /// `--abort-if-failed N`: N devices failed verification or activation.
    Aborted(usize),
}

/// What the operator asked the rollout to achieve.
#[derive(Debug, Clone)]
pub struct Goal {
    /// `--until-done`.
    pub until: Option<UntilDone>,
    /// `--abort-if-failed`.
    pub abort_if_failed: Option<usize>,
    /// `--devices`.
    pub expected: Option<Expected>,
    /// The image sent.
    pub image: ImageId,
}

/// A failure that counts toward `--abort-if-failed`: the image did not
/// verify on flash, or did not activate.
pub fn is_hard_failure(r: &DeviceRecord) -> bool {
    r.state == DeviceState::Failed
        && matches!(
            r.reason,
            Reason::VerifyFailed | Reason::FlashError | Reason::ActivationFailed
        )
}

impl Goal {
    /// The number of devices the carousel waits for (R-CAR-5).
    pub fn awaited(&self) -> Option<usize> {
        match self.until? {
            UntilDone::Count(n) => Some(n),
            UntilDone::All => self.expected.as_ref().map(Expected::len),
        }
    }

    /// Whether device `id` is one the rollout waits for and counts (R-STAT-4).
    fn awaits(&self, fleet: &Fleet, id: u64, r: &DeviceRecord) -> bool {
        fleet.counts(r) && self.expected.as_ref().is_none_or(|e| e.contains(id, r))
    }

    /// Awaited devices that succeeded with this image.
    pub fn successes(&self, fleet: &Fleet) -> usize {
        fleet
            .iter()
            .filter(|(id, r)| self.awaits(fleet, *id, r))
            .filter(|(_, r)| is_success(r.state) && r.image_id == self.image)
            .count()
    }

    /// Counted devices that failed verification or activation.
    pub fn hard_failures(&self, fleet: &Fleet) -> usize {
        fleet
            .iter()
            .filter(|(_, r)| fleet.counts(r) && is_hard_failure(r))
            .count()
    }

    /// Whether `--until-done` is met (always, without it).
    pub fn reached(&self, fleet: &Fleet) -> bool {
        match self.until {
            None => true,
            Some(UntilDone::Count(n)) => self.successes(fleet) >= n,
            Some(UntilDone::All) => self.expected.as_ref().is_some_and(|e| {
                e.resolve(fleet).iter().all(|(_, d)| {
                    d.is_some_and(|(_, r)| is_success(r.state) && r.image_id == self.image)
                })
            }),
        }
    }

    /// Whether every awaited device is in a final state (and, for a count,
    /// at least that many reported).
    fn settled(&self, fleet: &Fleet, n: usize) -> bool {
        match &self.expected {
            Some(e) => e
                .resolve(fleet)
                .iter()
                .all(|(_, d)| d.is_some_and(|(_, r)| is_final(r.state))),
            None => {
                let awaited: Vec<_> = fleet
                    .iter()
                    .filter(|(id, r)| self.awaits(fleet, *id, r))
                    .collect();
                awaited.len() >= n && awaited.iter().all(|(_, r)| is_final(r.state))
            }
        }
    }

    /// Whether the rollout is over, and how.
    pub fn check(&self, fleet: &Fleet) -> Option<Verdict> {
        if let Some(n) = self.abort_if_failed {
            let failed = self.hard_failures(fleet);
            if failed >= n {
                return Some(Verdict::Aborted(failed));
            }
        }
        let until = self.until?;
        if self.reached(fleet) {
            return Some(Verdict::Reached);
        }
        let n = match until {
            UntilDone::Count(n) => n,
            UntilDone::All => self.expected.as_ref().map_or(0, Expected::len),
        };
        self.settled(fleet, n).then_some(Verdict::Settled)
    }

    /// One line per device that did not succeed (state, reason, last seen),
    /// and per expected device that never reported, for the summary.
    pub fn others(&self, fleet: &Fleet, now: proto::Instant) -> Vec<String> {
        let mut out: Vec<String> = fleet
            .iter()
            .filter(|(_, r)| !(is_success(r.state) && r.image_id == self.image))
            .map(|(id, r)| {
                format!(
                    "{id:016x} {} {}{} (version {}, last seen {} ago)",
                    r.addr,
                    r.state,
                    if r.reason == Reason::None {
                        String::new()
                    } else {
                        format!(" {}", r.reason)
                    },
                    printable(&r.version),
                    ago(now.saturating_since(r.last_seen)),
                )
            })
            .collect();
        if let Some(e) = &self.expected {
            for (entry, d) in e.resolve(fleet) {
                if d.is_none() {
                    out.push(format!("{} never reported", entry.label()));
                }
            }
        }
        out
    }
}

/// "3.2s", "2m05s".
pub fn ago(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::{self, Frame, Status};

    fn report(f: &mut Fleet, id: u64, state: DeviceState, reason: Reason, img: ImageId) {
        let st = Status {
            device_id: id,
            state,
            blocks_done: 0,
            blocks_total: 4,
            current_version: "1.0",
            reason,
            write_kbps: 0,
            window_free: wire::WINDOW_FREE_NONE,
        };
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let n = wire::encode(1, img, 0, &Frame::Status(st), &mut buf).expect("encode");
        let from = format!("127.0.0.1:{}", 4000 + id).parse().expect("addr");
        f.record(proto::Instant::ZERO, from, &buf[..n])
            .expect("record");
    }

    #[test]
    fn r_fleet_5_until_done_ends_when_every_awaited_device_is_final() {
        let img = ImageId([3; 8]);
        let mut f = Fleet::new(16);
        let goal = Goal {
            until: Some(UntilDone::Count(3)),
            abort_if_failed: None,
            expected: None,
            image: img,
        };
        report(&mut f, 1, DeviceState::Done, Reason::None, img);
        report(&mut f, 2, DeviceState::Refused, Reason::WrongBoard, img);
        report(&mut f, 3, DeviceState::Receiving, Reason::None, img);
        assert_eq!(goal.check(&f), None, "device 3 still receives");
        report(&mut f, 3, DeviceState::Stalled, Reason::None, img);
        assert_eq!(goal.check(&f), Some(Verdict::Settled));
        assert!(!goal.reached(&f));
        let others = goal.others(&f, proto::Instant::ZERO);
        assert_eq!(others.len(), 2);
        assert!(others[0].contains("refused wrong-board"), "{others:?}");
        // Activated counts as success; two failed activations abort.
        let goal = Goal {
            until: Some(UntilDone::All),
            abort_if_failed: Some(2),
            expected: Some(Expected::parse("0x1\n0x4\n0x5\n", "t").expect("list")),
            image: img,
        };
        report(&mut f, 4, DeviceState::Activated, Reason::None, img);
        assert_eq!(goal.check(&f), None, "0x5 never reported");
        report(
            &mut f,
            5,
            DeviceState::Failed,
            Reason::ActivationFailed,
            img,
        );
        assert_eq!(goal.check(&f), Some(Verdict::Settled));
        report(&mut f, 6, DeviceState::Failed, Reason::VerifyFailed, img);
        assert_eq!(goal.check(&f), Some(Verdict::Aborted(2)));
        assert_eq!(parse_until_done("all"), Ok(UntilDone::All));
        assert_eq!(parse_until_done(" 7"), Ok(UntilDone::Count(7)));
        assert!(parse_until_done("most").is_err());
    }
}

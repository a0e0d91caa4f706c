//! The shell half of one link budget across processes (R-REP-11, R-REP-12):
//! the listening sockets, fed to [`proto::link`]. `firmcast send` hears the
//! repair group and yields what repairs take; `firmcast repair` hears the
//! data group and paces at the carousel's announced rate, at its share while
//! the carousel sends.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use proto::link::{CarouselWatch, HeardRepairs};
use proto::repair::{RepairConfig, RepairServer};
use proto::wire::ImageId;

use crate::error::Error;
use crate::net::{self, Clock};

/// Receive buffer of the sender's ear: every repair must be heard (and
/// yielded for) even when the send loop was not scheduled for a while.
const EAR_RCVBUF: usize = 4 << 20;

/// Receive buffer of the repair server's watch: a few hundred datagrams
/// between two turns of its loop; it only needs the latest Announce and
/// whether Data flows, the rest is dropped by the kernel, never read.
const WATCH_RCVBUF: usize = 256 * 1024;

/// The sender's ear on the repair group (R-REP-11).
pub struct HeardRepairsSocket {
    sock: UdpSocket,
    heard: HeardRepairs,
}

impl HeardRepairsSocket {
    /// Join `repair_group` (from its source, if given) on `interface` for a
    /// carousel of `image_id` at `rate_bps`.
    pub fn open(
        (repair_group, source): (SocketAddr, Option<IpAddr>),
        interface: IpAddr,
        image_id: ImageId,
        rate_bps: u64,
        now: proto::Instant,
    ) -> Result<Self, Error> {
        Ok(HeardRepairsSocket {
            sock: net::group_listener(repair_group, source, interface, EAR_RCVBUF)?,
            heard: HeardRepairs::new(
                image_id,
                rate_bps,
                RepairConfig::default().shared_repair_percent,
                now,
            ),
        })
    }

    /// Read what was heard; `charge(now, len)` for each repair the carousel
    /// yields for.
    pub fn drain(
        &mut self,
        clock: &Clock,
        buf: &mut [u8],
        mut charge: impl FnMut(proto::Instant, usize),
    ) -> Result<(), Error> {
        let heard = &mut self.heard;
        net::drain(&self.sock, buf, |_, bytes| {
            let now = clock.now();
            if let Some(len) = heard.hear(now, bytes) {
                charge(now, len);
            }
        })
    }

    /// Counters for `--json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "yielded_bytes": self.heard.yielded(),
            "over_share_bytes": self.heard.over_share(),
        })
    }
}

/// The repair server's ear on the data group (R-REP-12).
pub struct CarouselSocket {
    sock: UdpSocket,
    watch: CarouselWatch,
    /// The operator's `--rate`, if given: never exceeded.
    cap: Option<u64>,
    /// The rate before any Announce was heard (without `--rate`).
    fallback: u64,
    /// The rate last logged: the heard rate moves a little every
    /// measurement, and only a change of more than a tenth is logged.
    logged: u64,
}

impl CarouselSocket {
    /// Join `group` (from its source, if given) on `interface` and watch
    /// the carousel of `image_id`.
    pub fn open(
        (group, source): (SocketAddr, Option<IpAddr>),
        interface: IpAddr,
        image_id: ImageId,
        cap: Option<u64>,
        fallback: u64,
    ) -> Result<Self, Error> {
        let watch = CarouselWatch::new(image_id);
        Ok(CarouselSocket {
            sock: net::group_listener(group, source, interface, WATCH_RCVBUF)?,
            // The start-up line names the initial rate.
            logged: watch.rate_bps(proto::Instant::ZERO, cap, fallback),
            watch,
            cap,
            fallback,
        })
    }

    /// A repair of `len` bytes left at `now` (R-REP-12: the link's rate
    /// counts it).
    pub fn repair_sent(&mut self, now: proto::Instant, len: usize) {
        self.watch.repair_sent(now, len);
    }

    /// The rate before anything is heard.
    pub fn initial_rate(&self) -> u64 {
        self.watch
            .rate_bps(proto::Instant::ZERO, self.cap, self.fallback)
    }

    /// Read what was heard and set the server's rate and whether the
    /// carousel is sending (its share, R-REP-9) from it.
    pub fn drain(
        &mut self,
        clock: &Clock,
        buf: &mut [u8],
        server: &mut RepairServer,
    ) -> Result<(), Error> {
        let watch = &mut self.watch;
        net::drain(&self.sock, buf, |_, bytes| watch.hear(clock.now(), bytes))?;
        let rate = self.watch.rate_bps(clock.now(), self.cap, self.fallback);
        if rate.abs_diff(self.logged) > self.logged / 10 {
            self.logged = rate;
            log::info!(
                "pacing repairs at {rate} bit/s (carousel announced {} bit/s, heard at {} bit/s, --rate {})",
                self.watch.announced_bps().unwrap_or(0),
                self.watch.heard_bps(),
                self.cap.map_or("not given".to_string(), |c| c.to_string())
            );
        }
        server.set_rate(rate);
        server.set_carousel_sending(self.watch.sending(clock.now()));
        Ok(())
    }
}

//! The event loop, following `proto`'s driving contract: read the clock,
//! give [`Core`] one input with that `now`, drain every output (events,
//! then transmits), then sleep in `poll` until the next deadline, a
//! readable socket or a signal.

use std::os::fd::AsFd;
use std::time::Duration;

use flasher::Flash;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proto::wire::MAX_DATAGRAM;
use proto::Instant;

use super::nap::Nap;
use super::Core;
use crate::config::Config;
use crate::exit::ExitCode;
use crate::{net, rejoin};

/// Datagrams read from one socket per wakeup. Large enough that the NACK
/// timer, handled at the top of the loop, nearly always sees a drained
/// socket: a device that NACKs while repairs for its holes still wait in its
/// own socket buffer makes the repair server send them again (50 agents on
/// two cores at 1% loss: 286,701 chunks asked for, 1.2 x the image repaired).
const MAX_READS_PER_WAKEUP: usize = 512;
pub(super) fn poll_ms(now: Instant, deadline: Option<Instant>) -> u16 {
    // Round up so a deadline 0.4 ms away does not spin; wake at least once a
    // second. In u64 (whole seconds + rounded-up microseconds): a u128
    // division links a 2 KB library routine on 32-bit devices.
    let ms = deadline.map_or(1000, |d| {
        let wait = d.saturating_since(now);
        wait.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(wait.subsec_micros().div_ceil(1000)))
    });
    ms.min(1000) as u16
}

/// SIGTERM and SIGINT as a readable fd (no handler, no unsafe).
pub(super) fn signal_fd() -> Option<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    if let Err(e) = mask.thread_block() {
        log::warn!(
            "cannot block SIGTERM/SIGINT ({}); they will kill the agent without a log line",
            crate::privdrop::os_error(e)
        );
        return None;
    }
    match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::warn!(
                "signalfd: {}; restoring default SIGTERM/SIGINT",
                crate::privdrop::os_error(e)
            );
            let _ = mask.thread_unblock();
            None
        }
    }
}

fn check_signal(sfd: Option<&SignalFd>) -> Option<ExitCode> {
    let sig = sfd?.read_signal().ok()??;
    let name = Signal::try_from(sig.ssi_signo as i32).map_or("signal", Signal::as_str);
    log::warn!("{name} received: exiting (flash is consistent after every block write; the next run resumes)");
    Some(ExitCode::Signal)
}

/// Sleep up to `ms`, waking early on a signal.
pub(super) fn sleep_or_signal(sfd: Option<&SignalFd>, ms: u16) -> Option<ExitCode> {
    match sfd {
        Some(fd) => {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
            check_signal(Some(fd))
        }
        None => {
            std::thread::sleep(Duration::from_millis(u64::from(ms)));
            None
        }
    }
}

/// Drives `core` until it exits: read the clock, one handler, drain every
/// output, then `poll` until the next deadline or a readable socket (or a
/// signal).
pub(super) fn drive<F: Flash>(
    cfg: &Config,
    sockets: &net::Sockets,
    groups: &net::Groups,
    sfd: Option<&SignalFd>,
    core: &mut Core<F>,
    clock: impl Fn() -> Instant + Copy,
) -> ExitCode {
    let mut inbuf = vec![0u8; MAX_DATAGRAM];
    let mut outbuf = vec![0u8; MAX_DATAGRAM];
    let mut send_errors = 0u64;
    let mut unicast_dropped = 0u64;

    // One clock read per datagram, shared by the watchdog, the receiver and
    // this flush: with three, the clock was 3.4-4.3% of an agent's CPU samples
    // (bench/README.md, "The flash writer reads back in pieces").
    let flush = |core: &mut Core<F>, now: Instant, out: &mut [u8], errors: &mut u64| {
        while let Some((to, len)) = core.poll_transmit(now, out) {
            if let Err(e) = sockets.unicast.send_to(&out[..len], to) {
                *errors += 1;
                if *errors == 1 || log::log_enabled!(log::Level::Debug) {
                    log::warn!("send to {to} failed: {e}");
                }
            }
        }
    };

    let mut watchdog = rejoin::Watchdog::new(clock());
    let mut data_heard = 0u64;
    let mut nap = Nap::new();
    loop {
        let now = clock();
        core.handle_timeout(now);
        flush(core, now, &mut outbuf, &mut send_errors);
        crate::state_file::observe(core.receiver());
        if core.wants_data() {
            if let Some(silent) = watchdog.poll(now) {
                match sockets.rejoin(groups) {
                    Ok(()) => log::info!(
                        "no datagram on {} for {} ms: re-joined {groups} on {} (a fresh IGMP/MLD report)",
                        cfg.group,
                        crate::logger::millis(silent),
                        cfg.interface
                    ),
                    Err(e) => log::warn!(
                        "no datagram on {} for {} ms; re-joining on {} failed: {e}",
                        cfg.group,
                        crate::logger::millis(silent),
                        cfg.interface
                    ),
                }
            }
        } else {
            watchdog.heard(now);
        }
        if let Some(code) = core.exit_check(clock()) {
            if code == ExitCode::Ok && data_heard == 0 {
                log::warn!("{}", groups.nothing_heard(cfg));
            }
            return code;
        }
        let now = clock();
        let deadline = match core.deadline() {
            Some(d) if core.wants_data() => Some(d.min(watchdog.due_at())),
            None if core.wants_data() => Some(watchdog.due_at()),
            d => d,
        };
        let ms = poll_ms(now, deadline);
        let socks = [&sockets.data, &sockets.repair, &sockets.unicast];
        let mut ready = [false; 3];
        let mut sig_ready = false;
        {
            // Fixed array, no allocation per wakeup; the signalfd is the fourth entry.
            let mut fds = [
                PollFd::new(sockets.data.as_fd(), PollFlags::POLLIN),
                PollFd::new(sockets.repair.as_fd(), PollFlags::POLLIN),
                PollFd::new(sockets.unicast.as_fd(), PollFlags::POLLIN),
                PollFd::new(
                    sfd.map_or(sockets.unicast.as_fd(), |fd| fd.as_fd()),
                    PollFlags::POLLIN,
                ),
            ];
            let n = if sfd.is_some() { 4 } else { 3 };
            match nix::poll::poll(&mut fds[..n], PollTimeout::from(ms)) {
                Ok(_) => {
                    for (i, fd) in fds[..n].iter().enumerate() {
                        let r = fd.revents().is_some_and(|r| !r.is_empty());
                        if i < 3 {
                            ready[i] = r;
                        } else {
                            sig_ready = r;
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("poll: {}", crate::privdrop::os_error(e));
                    return ExitCode::Flash;
                }
            }
        }
        if sig_ready {
            if let Some(code) = check_signal(sfd) {
                return code;
            }
        }
        let mut received = 0usize;
        for (i, sock) in socks.iter().enumerate() {
            if !ready[i] {
                continue;
            }
            for _ in 0..MAX_READS_PER_WAKEUP {
                match net::recv(sock, &mut inbuf) {
                    Ok(Some((n, from))) => {
                        received += 1;
                        if i == 2 && !net::unicast_admissible(&inbuf[..n]) {
                            // R-LOCAL-4; logged at 1, 2, 4, 8, ... drops: a flood stays quiet.
                            unicast_dropped += 1;
                            if unicast_dropped.is_power_of_two() {
                                log::warn!(
                                    "unicast socket: dropped {unicast_dropped} datagram(s) that were not repair Data (last from {from}); only repairs may arrive there"
                                );
                            }
                            continue;
                        }
                        let at = clock();
                        if i == 0 {
                            watchdog.heard(at);
                            data_heard += 1;
                        }
                        core.handle_datagram(at, from, &inbuf[..n]);
                        crate::state_file::observe(core.receiver());
                        flush(core, at, &mut outbuf, &mut send_errors);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("recv: {e}");
                        break;
                    }
                }
            }
        }
        // A thin wakeup: let the socket buffers collect a batch (nap.rs).
        let now = clock();
        if let Some(d) = nap.after_wakeup(received, now, core.deadline()) {
            std::thread::sleep(d);
        }
    }
}

//! `firmcast send`: the shell around [`proto::sender::Sender`], and with
//! `--repair-listen` also around a [`proto::repair::RepairServer`] that shares
//! its socket and its rate (R-REP-7).
//!
//! Loop, per the driving contract: read the clock, drain the socket into
//! `handle_datagram`, send the repairs due, drain `poll_transmit` to the
//! group, check the stop conditions, then sleep until the earliest
//! `poll_timeout()` or a readable socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::pace::Pace;
use proto::pacer::IP_UDP_OVERHEAD;
use proto::repair::RepairServer;
use proto::sender::{Sender, SenderConfig};
use proto::wire::{self, Frame, MAX_DATAGRAM};
use proto::DropReason;
use serde_json::json;

use crate::cli::{RepairModeArg, SendArgs};
use crate::drops::DropLog;
use crate::error::{config, runtime, Error, EXIT_FAILURE, EXIT_OK};
use crate::eta;
use crate::feed::{Blocks, Feed};
use crate::image_file::StreamedImage;
use crate::manifest_file::load_manifest;
use crate::net::{self, Clock};
use crate::pace_log::PaceLog;
use crate::rate_watch::RateWatch;
use crate::record::Hub;
use crate::repair;
use crate::report::{devices_json, devices_line, fleet_auth_json, Progress};
use crate::rollout::{Goal, UntilDone, Verdict};
use crate::view::expected::Expected;
use crate::view::View;

/// Why the send loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    UntilDone,
    Settled,
    Aborted,
    Passes,
    Duration,
    Interrupted,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::UntilDone => "until-done",
            Stop::Settled => "every awaited device final",
            Stop::Aborted => "abort-if-failed",
            Stop::Passes => "passes",
            Stop::Duration => "duration",
            Stop::Interrupted => "interrupted",
        }
    }
}

/// Shortest sleep between two bursts of sends. Waking once per datagram
/// (every 94 us at 90 Mbit/s) made the sender lose its pace whenever the
/// machine was busy (figures in bench/README.md); 1 ms bursts are about 11
/// datagrams, which any switch port and the devices' socket buffers take in
/// stride.
const PACING_NAP: Duration = Duration::from_millis(1);

/// Blocks of the image read and checked per turn of the send loop beyond
/// those the carousel is about to send: 16 x 64 KiB is ~1 ms of reading and
/// SHA-256, and a 32 MiB image is all in within ~32 turns.
const READ_BLOCKS_PER_TURN: usize = 16;

/// Fleet events queued between two turns of the loop (the view takes them
/// every turn; a burst beyond this is counted, not shown).
const FLEET_EVENTS: usize = 65_536;

/// Most carousel datagrams sent in one turn of the loop. At a rate the host
/// cannot reach (`--rate 5G` on loopback) the pacer always has credit, and a
/// turn without a bound never got back to the signal flag, the socket or
/// `--duration`; 256 datagrams are about 30 ms at 100 Mbit/s.
const SENDS_PER_TURN: usize = 256;

/// The repair group and the source to hear it from (R-NET-1: a separate
/// repair server's address, `--repair-source`).
fn repair_membership(
    args: &SendArgs,
    iface: IpAddr,
) -> Result<(SocketAddr, Option<IpAddr>), Error> {
    let group = net::group(args.repair_group, "--repair-group", iface)?;
    let source = net::group_source(
        group,
        "--repair-group",
        args.repair_source,
        "--repair-source",
    )?;
    Ok((group, source))
}

/// Run `firmcast send`; returns the exit code.
pub fn run(args: &SendArgs) -> Result<u8, Error> {
    run_fed(args, Feed::default())
}

/// The send loop with the blocks and the Status forwarding of `feed`
/// (`firmcast relay`); the defaults are `firmcast send`'s.
pub(crate) fn run_fed(args: &SendArgs, feed: Feed<'_>) -> Result<u8, Error> {
    let iface = args.interface;
    crate::iface::check(iface, "--interface")?;
    let group = net::group(args.group, "--group", iface)?;
    let expected = args.devices.as_deref().map(Expected::load).transpose()?;
    if args.until_done == Some(UntilDone::All) && expected.is_none() {
        return Err(config(
            "--until-done all: needs --devices FILE (the devices to wait for)",
        ));
    }
    if args.ttl > 255 {
        return Err(config(format!("--ttl {}: must be 0..=255", args.ttl)));
    }
    let (signed, info, manifest) = load_manifest(&args.manifest, args.public_key.as_deref())?;
    // Each block is read and checked against the manifest just before the
    // carousel first reaches it, the rest a few blocks per turn of the loop;
    // repairs are served from the blocks read so far.
    let mut image: Box<dyn Blocks + '_> = match feed.blocks {
        Some(blocks) => blocks,
        None => Box::new(StreamedImage::open(&info, &args.image, &args.manifest)?),
    };
    let mut forward = feed.forward;
    let image_id = manifest.image_id;
    let goal = Goal {
        until: args.until_done,
        abort_if_failed: args.abort_if_failed,
        expected: expected.clone(),
        image: image_id,
    };
    let mut session = [0u8; 4];
    getrandom::getrandom(&mut session)
        .map_err(|e| runtime(format!("reading OS randomness: {e}")))?;
    let session = u32::from_be_bytes(session);

    let inline_repair = match args.repair_listen {
        Some(listen) => {
            net::same_family(listen.ip(), "--repair-listen", iface)?;
            Some((
                listen,
                net::group(args.repair_group, "--repair-group", iface)?,
            ))
        }
        None if args.repair.is_some() => {
            return Err(config(
                "--repair needs --repair-listen (or give it to `firmcast repair`)",
            ))
        }
        None => None,
    };
    // With an inline repair server, one socket bound to its address carries
    // the carousel, the repairs, Status and NACKs.
    let bind = inline_repair.map_or(mcast::bind_addr(iface, 0), |(listen, _)| listen);
    let sock = net::multicast_socket(bind, iface, args.ttl)?;
    let local = sock
        .local_addr()
        .map_err(|e| runtime(format!("socket address: {e}")))?;
    let hub = Hub::start(&args.record, "send")?;
    hub.set_rollout(&image_id.to_string(), &args.image.display().to_string());
    let interrupted = net::interrupted();
    let clock = Clock::start();
    let mut cfg = SenderConfig::new(session, args.rate);
    cfg.announce_every = args.announce_every;
    cfg.manifest_repeats_per_pass = args.manifest_repeats;
    cfg.manifest_lead_copies = args.manifest_lead;
    // R-CAR-5: with --until-done N, no data while the N devices read back
    // what they received (the rest of the pass would reach nobody).
    cfg.hold_when_received = goal.awaited();
    // R-PACE-2: the carousel keeps to what the fleet's flash can take.
    let mut pace = Pace::new(
        args.rate,
        manifest.block_size,
        manifest.chunk_size,
        cfg.announce_every,
    );
    let mut pace_log = PaceLog::default();
    let mut start_wait_logged = false;
    let mut sender = Sender::new(cfg, &manifest, signed, clock.now());
    sender.fleet_mut().set_event_capacity(FLEET_EVENTS);
    let mut view = View::new(args.json, expected);
    let roster = args
        .roster
        .as_deref()
        .map(crate::roster::load)
        .transpose()?;
    if let Some(r) = &roster {
        sender.fleet_mut().set_roster(r.clone());
    }
    let mut repairer: Option<(RepairServer, SocketAddr)> = inline_repair.map(|(_, group)| {
        let mut server = repair::new_server(
            args.repair.unwrap_or(RepairModeArg::Parity),
            args.rate,
            &manifest,
        );
        if let Some(r) = &roster {
            server.fleet_mut().set_roster(r.clone());
        }
        (server, group)
    });
    // R-REP-11: beside a separate repair server (on this host or the LAN),
    // the carousel yields what it hears the repairs take.
    let mut heard = match repairer {
        Some(_) => None,
        None => Some(crate::shared_link::HeardRepairsSocket::open(
            repair_membership(args, iface)?,
            iface,
            image_id,
            args.rate,
            clock.now(),
        )?),
    };
    let stop_at = args
        .duration
        .map(|d| clock.now() + Duration::from_secs_f64(d));
    log::info!(
        "sending {} ({} bytes, {} blocks, image id {image_id}) to {group} via {iface} from {local} at {} bit/s, session {session:08x}",
        args.image.display(),
        info.image_len,
        info.block_count(),
        args.rate,
    );
    if let Some((server, repair_group)) = &repairer {
        log::info!(
            "repairing on {local} ({} mode): group repairs to {repair_group}, sharing the {} bit/s with the carousel",
            if server.parity_active() { "parity" } else { "retransmit" },
            args.rate
        );
    }

    let dest = group;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rbuf = vec![0u8; 65_536];
    let mut progress = Progress::new(args.verbose);
    let mut consecutive_errors = 0u32;
    let mut passes_logged = 0u32;
    let mut holding = false;
    let mut send_errors = 0u64;
    let mut repair_send_errors = 0u64;
    let mut wire_bits = 0u64;
    let mut rate_watch = RateWatch::new();
    // Drops and refusals are summarised per kind, never logged per datagram.
    let mut drops = DropLog::new("send", clock.now());
    let mut handle = |sender: &mut Sender,
                      pace: &mut Pace,
                      repairer: &mut Option<(RepairServer, SocketAddr)>,
                      drops: &mut DropLog,
                      now: proto::Instant,
                      from: SocketAddr,
                      bytes: &[u8]| {
        // Decoded once; NACKs are the repair server's, Status frames feed
        // both fleets.
        let decoded = wire::decode(bytes);
        let is_status = matches!(decoded, Ok((_, Frame::Status(_))));
        let for_repair = repairer
            .as_mut()
            .map(|(server, _)| server.handle_decoded(now, from, bytes, &decoded));
        match for_repair {
            Some(Ok(())) if !is_status => return,
            // A NACK the repair server refused, or what nobody decodes.
            Some(Err(e)) if e != DropReason::Unexpected && !is_status => {
                drops.note(e, from);
                return;
            }
            _ => {}
        }
        // State changes reach the operator through the fleet's events (the view).
        match sender.handle_decoded(now, from, bytes, &decoded) {
            Ok(()) => {
                if let Ok((_, Frame::Status(st))) = &decoded {
                    // R-PACE-2: a report that lowers the cap acts at once.
                    pace.note_report(now, sender.fleet(), image_id, st.device_id);
                }
                if let Some(f) = forward.as_deref_mut() {
                    f.accepted(now, bytes);
                }
            }
            Err(e) => drops.note(e, from),
        }
    };

    let stop = loop {
        net::drain(&sock, &mut rbuf, |from, bytes| {
            handle(
                &mut sender,
                &mut pace,
                &mut repairer,
                &mut drops,
                clock.now(),
                from,
                bytes,
            )
        })?;
        if let Some(h) = heard.as_mut() {
            h.drain(&clock, &mut rbuf, |now, len| sender.charge_shared(now, len))?;
        }
        image.more(READ_BLOCKS_PER_TURN)?;
        if let Some((server, repair_group)) = repairer.as_mut() {
            // R-REP-9: repairs keep to their share while the carousel has
            // data to send.
            server.set_carousel_sending(!sender.holding());
            // Repairs for blocks not read yet wait in the server's queue.
            repair::send_due(
                server,
                &clock,
                image.ready(),
                &mut buf,
                &sock,
                *repair_group,
                &mut repair_send_errors,
                |now, len| {
                    wire_bits += (len as u64 + IP_UDP_OVERHEAD) * 8;
                    sender.charge_shared(now, len)
                },
            );
        }
        // The one place the carousel's rate is decided: the least of the
        // caps that apply (here the fleet's write pace, R-PACE-2).
        let now = clock.now();
        let cap = pace.cap_bps(now, sender.fleet(), image_id, sender.stats().data);
        sender.set_rate_cap(cap);
        if pace.waiting() != start_wait_logged {
            start_wait_logged = pace.waiting();
            if start_wait_logged {
                log::info!(
                    "{} blocks sent and no device has reported yet: the carousel runs at {:.2} Mbit/s until a first report, at most {} s (R-PACE-5)",
                    proto::pace::START_BLOCKS,
                    cap as f64 / 1e6,
                    proto::pace::START_WAIT.as_secs()
                );
            } else {
                log::info!(
                    "the first report is in: the carousel keeps to the fleet's pace (R-PACE-2)"
                );
            }
        }
        pace_log.note(now, cap, pace.slowest());
        let mut passes_met = false;
        let mut sends = 0usize;
        // The block the next carousel chunk comes from (a Data frame moves
        // the cursor past its block only after that block's last chunk).
        // A block not there yet (a relay's download) holds the carousel.
        let mut ready = image.through(sender.position().1 as usize + 1)?;
        while ready && sends < SENDS_PER_TURN {
            let Some(t) = sender.poll_transmit(clock.now(), image.bytes(), &mut buf) else {
                break;
            };
            sends += 1;
            wire_bits += (t.len as u64 + IP_UDP_OVERHEAD) * 8;
            ready = image.through(sender.position().1 as usize + 1)?;
            if let Some((server, _)) = &mut repairer {
                server.charge_shared(clock.now(), t.len);
            }
            match net::send(&sock, &buf[..t.len], dest) {
                Ok(()) => consecutive_errors = 0,
                Err(e) => {
                    send_errors += 1;
                    consecutive_errors += 1;
                    if send_errors == 1 {
                        log::warn!("sending to {group} via {iface}: {e}");
                    }
                    if consecutive_errors >= 100 {
                        return Err(runtime(format!(
                            "sending to {group} via --interface {iface}: {e} (100 sends in a row failed)"
                        )));
                    }
                }
            }
            if args.passes.is_some_and(|n| sender.passes_completed() >= n) {
                passes_met = true;
                break;
            }
        }
        if sender.holding() != holding {
            holding = sender.holding();
            if holding {
                log::info!(
                    "holding the carousel at {:.2} s: every awaited device has the image ({})",
                    clock.secs(),
                    devices_line(sender.fleet())
                );
            } else {
                log::info!(
                    "carousel goes on at {:.2} s: a device needs data ({})",
                    clock.secs(),
                    devices_line(sender.fleet())
                );
            }
        }
        if sender.passes_completed() > passes_logged {
            passes_logged = sender.passes_completed();
            let st = sender.stats();
            log::info!(
                "pass {passes_logged} complete at {:.2} s: {} datagrams, {:.1} Mbit/s so far",
                clock.secs(),
                st.datagrams,
                st.bytes as f64 * 8.0 / clock.secs().max(1e-3) / 1e6
            );
        }
        let asked = (!sender.holding()).then(|| sender.rate_bps());
        if let Some(line) = rate_watch.tick(clock.now(), wire_bits, asked) {
            log::warn!("{line}");
        }
        let _ = drops.tick(clock.now(), repairer.as_ref().map(|(s, _)| s.stats()));
        view.drain(sender.fleet_mut(), &hub);
        match goal.check(sender.fleet()) {
            Some(Verdict::Reached) => break Stop::UntilDone,
            Some(Verdict::Settled) => break Stop::Settled,
            Some(Verdict::Aborted(n)) => {
                log::error!("--abort-if-failed: {n} devices failed verification or activation; stopping the carousel");
                break Stop::Aborted;
            }
            None => {}
        }
        if passes_met {
            break Stop::Passes;
        }
        if interrupted.load(Ordering::SeqCst) {
            break Stop::Interrupted;
        }
        let now = clock.now();
        if stop_at.is_some_and(|t| now >= t) {
            break Stop::Duration;
        }
        let head = || {
            let (pass, _) = sender.position();
            let pm = sender.pass_permille();
            let mbps = sender.stats().bytes as f64 * 8.0 / clock.secs().max(1e-3) / 1e6;
            let pass_left = Duration::from_secs_f64(
                f64::from(1000 - pm.min(1000)) / 1000.0 * info.image_len as f64 * 8.0
                    / sender.rate_bps().max(1) as f64,
            );
            format!(
                "pass {} {:>3}.{}%  {mbps:.1} Mbit/s  {}  {}{}",
                pass + 1,
                pm / 10,
                pm % 10,
                eta::eta_text(eta::eta(sender.fleet(), image_id, clock.now(), pass_left)),
                devices_line(sender.fleet()),
                pace_log
                    .progress()
                    .map_or(String::new(), |p| format!("  {p}"))
            )
        };
        if view.is_live() {
            view.tick(sender.fleet(), now, &head());
        } else {
            progress.tick(head);
        }
        let next_tick = now + Duration::from_millis(250);
        // Nap at least PACING_NAP: the datagrams due meanwhile then go
        // back to back (the pacer's burst credit covers them), one wakeup
        // per ~11 datagrams at 90 Mbit/s instead of one per datagram.
        let next_send = sender.poll_timeout().map(|t| t.max(now + PACING_NAP));
        let next_repair = repairer
            .as_ref()
            .and_then(|(server, _)| server.poll_timeout())
            .map(|t| t.max(now + PACING_NAP));
        // A turn cut short by SENDS_PER_TURN goes on at once: the pacer
        // still has credit.
        let deadline = if sends >= SENDS_PER_TURN {
            now
        } else {
            [next_send, next_repair, stop_at, Some(next_tick)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_tick)
        };
        net::wait(&sock, &clock, deadline, &mut rbuf, |from, bytes| {
            handle(
                &mut sender,
                &mut pace,
                &mut repairer,
                &mut drops,
                clock.now(),
                from,
                bytes,
            )
        })?;
    };
    progress.finish();

    // Late Status replies already queued on the socket still count.
    net::drain(&sock, &mut rbuf, |from, bytes| {
        handle(
            &mut sender,
            &mut pace,
            &mut repairer,
            &mut drops,
            clock.now(),
            from,
            bytes,
        )
    })?;
    let _ = drops.finish(repairer.as_ref().map(|(s, _)| s.stats()));
    view.drain(sender.fleet_mut(), &hub);
    let secs = clock.secs();
    hub.finish();
    let stats = sender.stats();
    let done = goal.successes(sender.fleet());
    let reached = goal.reached(sender.fleet()) && stop != Stop::Aborted;
    view.finish(sender.fleet(), clock.now(), "final");
    let mbps = stats.bytes as f64 * 8.0 / secs.max(1e-3) / 1e6;
    let others = goal.others(sender.fleet(), clock.now());
    let summary = format!(
        "sent {} passes, {} datagrams, {} bytes in {secs:.1} s ({mbps:.2} Mbit/s); {}{}; stopped by {}{}{}",
        sender.passes_completed(),
        stats.datagrams,
        stats.bytes,
        devices_line(sender.fleet()),
        pace_log.summary(),
        stop.as_str(),
        match args.until_done {
            Some(UntilDone::Count(n)) if !reached => {
                format!(" before {n} devices succeeded ({done} did)")
            }
            Some(UntilDone::All) if !reached => format!(
                " before all {} listed devices succeeded ({done} did)",
                goal.awaited().unwrap_or(0)
            ),
            _ => String::new(),
        },
        others
            .iter()
            .map(|o| format!("\n  not done: {o}"))
            .collect::<String>()
    );
    let summary = match &repairer {
        Some((server, _)) => format!("{summary}\n{}", repair::summary_line(server)),
        None => summary,
    };
    if args.json {
        eprintln!("{summary}");
        let mut obj = json!({
            "passes": sender.passes_completed(),
            "datagrams": stats.datagrams,
            "bytes": stats.bytes,
            "data": stats.data,
            "manifest": stats.manifest,
            "announce": stats.announce,
            "holds": stats.holds,
            "seconds": secs,
            "mbit_per_s": mbps,
            "rate_bps": args.rate,
            "session": format!("{session:08x}"),
            "image_id": image_id.to_string(),
            "group": group.to_string(),
            "devices": devices_json(sender.fleet()),
            "devices_total": sender.fleet().len(),
            "not_done": others,
            "aborted": stop == Stop::Aborted,
            "fleet": fleet_auth_json(sender.fleet()),
            "done": done,
            "until_done": match args.until_done {
                Some(UntilDone::Count(n)) => json!(n),
                Some(UntilDone::All) => json!("all"),
                None => json!(null),
            },
            "reached": reached,
            "stopped_by": stop.as_str(),
            "status_frames": stats.status_frames,
            "drops": stats.drops,
            "send_errors": send_errors,
            "pace": pace_log.json(),
        });
        if let Some((server, _)) = &repairer {
            obj["repair"] = repair::stats_json(server, repair_send_errors);
        }
        if let Some(h) = &heard {
            obj["repairs_heard"] = h.json();
        }
        println!("{obj}");
    } else {
        println!("{summary}");
    }
    Ok(if reached { EXIT_OK } else { EXIT_FAILURE })
}

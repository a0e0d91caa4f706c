//! `firmcast repair`: the shell around [`proto::repair::RepairServer`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::repair::{RepairConfig, RepairMode, RepairServer};
use proto::wire::MAX_DATAGRAM;
use proto::Dest;
use serde_json::json;

use crate::cli::{RepairArgs, RepairModeArg};
use crate::drops::DropLog;
use crate::error::{config, runtime, Error, EXIT_OK};
use crate::manifest_file::load_for_image;
use crate::net::{self, Clock};
use crate::record::Hub;
use crate::report::{devices_json, devices_line, fleet_auth_json, Progress};
use crate::view::expected::Expected;
use crate::view::View;

/// Fleet events queued between two turns of the loop.
const FLEET_EVENTS: usize = 65_536;
use crate::shared_link::CarouselSocket;

/// Repair rate before the carousel's Announce is heard, without `--rate`.
const DEFAULT_RATE_BPS: u64 = 50_000_000;

/// Run `firmcast repair`; returns the exit code.
pub fn run(args: &RepairArgs) -> Result<u8, Error> {
    let iface = args.interface;
    crate::iface::check(iface, "--interface")?;
    let repair_group = net::group(args.repair_group, "--repair-group", iface)?;
    let listen = args.listen;
    net::same_family(listen.ip(), "--listen", iface)?;
    let carousel_group = net::group(args.group, "--group", iface)?;
    let carousel_source = net::group_source(carousel_group, "--group", args.source, "--source")?;
    if args.ttl > 255 {
        return Err(config(format!("--ttl {}: must be 0..=255", args.ttl)));
    }
    let loaded = load_for_image(&args.image, &args.manifest, args.public_key.as_deref())?;
    let sock = net::multicast_socket(listen, iface, args.ttl)?;
    let local = sock
        .local_addr()
        .map_err(|e| runtime(format!("socket address: {e}")))?;
    let hub = Hub::start(&args.record, "repair")?;
    let interrupted = net::interrupted();
    let clock = Clock::start();
    // R-REP-12: the carousel's Announce sets the rate (never above --rate).
    let mut carousel = CarouselSocket::open(
        (carousel_group, carousel_source),
        iface,
        loaded.manifest.image_id,
        args.rate,
        DEFAULT_RATE_BPS,
    )?;
    let mut server = new_server(args.repair, carousel.initial_rate(), &loaded.manifest);
    if let Some(path) = &args.roster {
        server.fleet_mut().set_roster(crate::roster::load(path)?);
    }
    // Every report reaches the repair server (R-STAT-8): its table is the
    // fullest view of the fleet.
    server.fleet_mut().set_event_capacity(FLEET_EVENTS);
    let expected = args.devices.as_deref().map(Expected::load).transpose()?;
    let mut view = View::new(args.json, expected);
    let stop_at = args
        .duration
        .map(|d| clock.now() + Duration::from_secs_f64(d));
    log::info!(
        "repairing {} (image id {}) on {local}; group repairs to {repair_group} via {iface}, {} bit/s until the carousel on {} announces its rate",
        args.image.display(),
        loaded.manifest.image_id,
        server.rate_bps(),
        args.group
    );

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rbuf = vec![0u8; 65_536];
    let mut progress = Progress::new(args.verbose);
    let mut send_errors = 0u64;
    // Drops and refusals are summarised per kind, never logged per datagram.
    let mut drops = DropLog::new("repair", clock.now());
    let handle = |server: &mut RepairServer,
                  drops: &mut DropLog,
                  now: proto::Instant,
                  from: SocketAddr,
                  bytes: &[u8]| {
        if let Err(e) = server.handle_datagram(now, from, bytes) {
            drops.note(e, from);
        }
    };

    let interrupted_by_signal = loop {
        net::drain(&sock, &mut rbuf, |from, bytes| {
            handle(&mut server, &mut drops, clock.now(), from, bytes)
        })?;
        carousel.drain(&clock, &mut rbuf, &mut server)?;
        server.handle_timeout(clock.now());
        send_due(
            &mut server,
            &clock,
            &loaded.image,
            &mut buf,
            &sock,
            repair_group,
            &mut send_errors,
            |now, len| carousel.repair_sent(now, len),
        );
        let _ = drops.tick(clock.now(), Some(server.stats()));
        view.drain(server.fleet_mut(), &hub);
        if interrupted.load(Ordering::SeqCst) {
            break true;
        }
        let now = clock.now();
        if stop_at.is_some_and(|t| now >= t) {
            break false;
        }
        let head = || {
            let s = server.stats();
            format!(
                "{} NACKs, {} chunks asked, {} sent to group, {} unicast, backlog {}; {}",
                s.nacks,
                s.chunks_requested,
                s.chunks_sent_group,
                s.chunks_sent_unicast,
                server.backlog(),
                devices_line(server.fleet())
            )
        };
        if view.is_live() {
            view.tick(server.fleet(), now, &head());
        } else {
            progress.tick(head);
        }
        let next_tick = now + Duration::from_millis(250);
        let deadline = [server.poll_timeout(), stop_at, Some(next_tick)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
        net::wait(&sock, &clock, deadline, &mut rbuf, |from, bytes| {
            handle(&mut server, &mut drops, clock.now(), from, bytes)
        })?;
    };
    progress.finish();
    let _ = drops.finish(Some(server.stats()));
    view.drain(server.fleet_mut(), &hub);
    view.finish(server.fleet(), clock.now(), "final");

    let secs = clock.secs();
    hub.finish();
    let summary = format!(
        "{} in {secs:.1} s; {}; stopped by {}",
        summary_line(&server),
        devices_line(server.fleet()),
        if interrupted_by_signal {
            "interrupted"
        } else {
            "duration"
        }
    );
    if args.json {
        eprintln!("{summary}");
        let mut obj = stats_json(&server, send_errors);
        obj["seconds"] = json!(secs);
        obj["image_id"] = json!(loaded.manifest.image_id.to_string());
        obj["stopped_by"] = json!(if interrupted_by_signal {
            "interrupted"
        } else {
            "duration"
        });
        println!("{obj}");
    } else {
        println!("{summary}");
    }
    Ok(EXIT_OK)
}

/// A repair server for `mode`, paced at `rate_bps`; warns when parity was
/// asked for but the geometry cannot carry it.
pub(crate) fn new_server(
    mode: RepairModeArg,
    rate_bps: u64,
    manifest: &proto::manifest::Manifest,
) -> RepairServer {
    let cfg = RepairConfig {
        rate_bps,
        mode: match mode {
            RepairModeArg::Retransmit => RepairMode::Retransmit,
            RepairModeArg::Parity => RepairMode::Parity,
        },
        ..RepairConfig::default()
    };
    let server = RepairServer::new(cfg, manifest);
    if mode == RepairModeArg::Parity && !server.parity_active() {
        log::warn!(
            "--repair parity: {} chunks of {} bytes per block cannot be coded (more than 128 chunks need an even chunk size); retransmitting instead",
            manifest.chunks_per_block(),
            manifest.chunk_size
        );
    }
    server
}

/// Send every repair datagram the server has due now; `sent(now, len)` is
/// told of each one that left (R-REP-7: the carousel is charged for it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_due(
    server: &mut RepairServer,
    clock: &Clock,
    image: &[u8],
    buf: &mut [u8],
    sock: &std::net::UdpSocket,
    repair_group: SocketAddr,
    send_errors: &mut u64,
    mut sent: impl FnMut(proto::Instant, usize),
) {
    server.handle_timeout(clock.now());
    loop {
        let now = clock.now();
        let Some(t) = server.poll_transmit(now, image, buf) else {
            break;
        };
        let to = match t.dest {
            Dest::Group => repair_group,
            Dest::Peer(a) => a,
            Dest::RepairServer => continue,
        };
        match net::send(sock, &buf[..t.len], to) {
            Ok(()) => sent(now, t.len),
            Err(e) => {
                *send_errors += 1;
                log::debug!("sending repair to {to}: {e}");
                if *send_errors == 1 {
                    log::warn!("sending repair to {to}: {e}");
                }
            }
        }
    }
}

/// The repair counters in one line, for the summary.
pub(crate) fn summary_line(server: &RepairServer) -> String {
    let s = server.stats();
    format!(
        "repair: {} NACKs, {} chunks asked, {} sent to group, {} unicast, {} repair bytes \
         ({} suppressed, {} capped, {} over budget, {} to the group not unicast, {} dropped)",
        s.nacks,
        s.chunks_requested,
        s.chunks_sent_group,
        s.chunks_sent_unicast,
        s.bytes_sent,
        s.suppressed,
        s.capped,
        s.over_budget,
        s.unicast_refused,
        s.drops,
    )
}

/// The repair counters as JSON (the `firmcast repair --json` object, also
/// `repair` in `firmcast send --repair-listen --json`).
pub(crate) fn stats_json(server: &RepairServer, send_errors: u64) -> serde_json::Value {
    let s = server.stats();
    json!({
        "nacks": s.nacks,
        "chunks_requested": s.chunks_requested,
        "chunks_sent_group": s.chunks_sent_group,
        "chunks_sent_unicast": s.chunks_sent_unicast,
        "bytes_sent": s.bytes_sent,
        "suppressed": s.suppressed,
        "merged": s.merged,
        "capped": s.capped,
        "over_budget": s.over_budget,
        "unicast_refused": s.unicast_refused,
        "overload": s.overload,
        "status_frames": s.status_frames,
        "drops": s.drops,
        "parity_sent": s.parity_sent,
        "parity_suppressed": s.parity_suppressed,
        "mode": if server.parity_active() { "parity" } else { "retransmit" },
        "rate_bps": server.rate_bps(),
        "send_errors": send_errors,
        "devices": devices_json(server.fleet()),
        "devices_total": server.fleet().len(),
        "fleet": fleet_auth_json(server.fleet()),
    })
}

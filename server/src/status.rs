//! `firmcast status`: collect device Status reports into a fleet table,
//! shown by the [`crate::view`]; with `--devices`, wait for those devices and
//! exit 1 unless every one of them succeeded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::fleet::{is_final, is_success, Fleet, DEFAULT_MAX_DEVICES};
use serde_json::json;

use crate::cli::StatusArgs;
use crate::error::{runtime, Error, EXIT_FAILURE, EXIT_OK};
use crate::net::{self, Clock};
use crate::record::Hub;
use crate::report::{devices_json, devices_line, fleet_auth_json};
use crate::view::expected::Expected;
use crate::view::{device_json, View};

/// Fleet events queued between two turns of the loop.
const FLEET_EVENTS: usize = 65_536;

/// Run `firmcast status`; returns the exit code.
pub fn run(args: &StatusArgs) -> Result<u8, Error> {
    let listen = args.listen;
    let sock =
        UdpSocket::bind(listen).map_err(|e| runtime(format!("binding --listen {listen}: {e}")))?;
    sock.set_nonblocking(true)
        .map_err(|e| runtime(format!("socket mode: {e}")))?;
    let hub = Hub::start(&args.record, "status")?;
    let interrupted = net::interrupted();
    let clock = Clock::start();
    let stop_at = args
        .duration
        .map(|d| clock.now() + Duration::from_secs_f64(d));
    let mut fleet = Fleet::new(DEFAULT_MAX_DEVICES);
    if let Some(path) = &args.roster {
        fleet.set_roster(crate::roster::load(path)?);
    }
    fleet.set_event_capacity(FLEET_EVENTS);
    let expected = args.devices.as_deref().map(Expected::load).transpose()?;
    // With --devices: done once every listed device is in a final state;
    // success only if every one of them succeeded, whatever image it reported.
    let settled = |fleet: &Fleet, e: &Expected| {
        e.resolve(fleet)
            .iter()
            .all(|(_, d)| d.is_some_and(|(_, r)| is_final(r.state)))
    };
    let succeeded = |fleet: &Fleet, e: &Expected| {
        e.resolve(fleet)
            .iter()
            .all(|(_, d)| d.is_some_and(|(_, r)| is_success(r.state)))
    };
    let mut view = View::new(args.json, expected);
    let mut frames = 0u64;
    let mut drops = 0u64;
    let mut rbuf = vec![0u8; 65_536];
    log::info!("listening for device status on {listen}");
    let mut handle =
        |fleet: &mut Fleet, now: proto::Instant, from: SocketAddr, bytes: &[u8]| match fleet
            .record(now, from, bytes)
        {
            Ok(()) => frames += 1,
            Err(_) => drops += 1,
        };
    loop {
        net::drain(&sock, &mut rbuf, |from, bytes| {
            handle(&mut fleet, clock.now(), from, bytes)
        })?;
        view.drain(&mut fleet, &hub);
        let now = clock.now();
        if interrupted.load(Ordering::SeqCst) || stop_at.is_some_and(|t| now >= t) {
            break;
        }
        if view.expected().is_some_and(|e| settled(&fleet, e)) {
            break;
        }
        view.tick(&fleet, now, &format!("status on {listen}"));
        let tick = now + Duration::from_millis(250);
        let deadline = stop_at.map_or(tick, |t| t.min(tick));
        net::wait(&sock, &clock, deadline, &mut rbuf, |from, bytes| {
            handle(&mut fleet, clock.now(), from, bytes)
        })?;
    }
    view.drain(&mut fleet, &hub);
    let finished = view.expected().is_none_or(|e| succeeded(&fleet, e));
    view.finish(&fleet, clock.now(), &format!("status on {listen}"));
    hub.finish();
    if args.json {
        let devices: Vec<_> = fleet.iter().map(|(id, r)| device_json(id, r)).collect();
        let never: Vec<String> = view.expected().map_or(Vec::new(), |e| {
            e.resolve(&fleet)
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(entry, _)| entry.label())
                .collect()
        });
        let obj = json!({
            "event": "summary",
            "devices": devices,
            "states": devices_json(&fleet),
            "fleet": fleet_auth_json(&fleet),
            "never_reported": never,
            "finished": finished,
            "status_frames": frames,
            "drops": drops,
            "seconds": clock.secs(),
        });
        println!("{obj}");
    } else {
        println!(
            "{}; {frames} status frames, {drops} dropped",
            devices_line(&fleet)
        );
    }
    Ok(if finished { EXIT_OK } else { EXIT_FAILURE })
}

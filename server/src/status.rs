//! `firmcast status`: collect device Status reports into a fleet table.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::fleet::{Fleet, DEFAULT_MAX_DEVICES};
use serde_json::json;

use crate::cli::StatusArgs;
use crate::error::{config, runtime, Error, EXIT_OK};
use crate::keys::hex;
use crate::net::{self, Clock};
use crate::record::Hub;
use crate::report::{devices_json, devices_line, fleet_auth_json, printable};

/// Run `firmcast status`; returns the exit code.
pub fn run(args: &StatusArgs) -> Result<u8, Error> {
    let listen = match args.listen {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => {
            return Err(config(format!(
                "--listen {}: only IPv4 is supported",
                args.listen
            )))
        }
    };
    let sock = UdpSocket::bind(SocketAddrV4::new(*listen.ip(), listen.port()))
        .map_err(|e| runtime(format!("binding --listen {listen}: {e}")))?;
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
    let mut frames = 0u64;
    let mut drops = 0u64;
    let mut rbuf = vec![0u8; 65_536];
    log::info!("listening for device status on {listen}");
    let mut handle = |now: proto::Instant, from: SocketAddr, bytes: &[u8]| {
        match fleet.record(now, from, bytes) {
            Ok(()) => frames += 1,
            Err(_) => drops += 1,
        }
        hub.observe(&fleet, now, bytes);
    };
    loop {
        net::drain(&sock, &mut rbuf, |from, bytes| {
            handle(clock.now(), from, bytes)
        })?;
        let now = clock.now();
        if interrupted.load(Ordering::SeqCst) || stop_at.is_some_and(|t| now >= t) {
            break;
        }
        let tick = now + Duration::from_millis(250);
        let deadline = stop_at.map_or(tick, |t| t.min(tick));
        net::wait(&sock, &clock, deadline, &mut rbuf, |from, bytes| {
            handle(clock.now(), from, bytes)
        })?;
    }
    hub.finish();
    if args.json {
        let devices: Vec<_> = fleet
            .iter()
            .map(|(id, r)| {
                json!({
                    "device_id": format!("{id:016x}"),
                    "addr": r.addr.to_string(),
                    "state": r.state.as_str(),
                    "blocks_done": r.blocks_done,
                    "blocks_total": r.blocks_total,
                    "version": r.version.as_str(),
                    "authenticated": r.authenticated,
                    "reason": r.reason.as_str(),
                    "image_id": hex(&r.image_id.0),
                })
            })
            .collect();
        let obj = json!({
            "devices": devices,
            "states": devices_json(&fleet),
            "fleet": fleet_auth_json(&fleet),
            "status_frames": frames,
            "drops": drops,
            "seconds": clock.secs(),
        });
        println!("{obj}");
    } else {
        println!(
            "{:<16}  {:<21}  {:<9}  {:>13}  {:<12}  {:<6}  reason",
            "device", "address", "state", "blocks", "version", "auth"
        );
        for (id, r) in fleet.iter() {
            // R-STAT-5: the version is the device's word; escape it.
            println!(
                "{id:016x}  {:<21}  {:<9}  {:>13}  {:<12}  {:<6}  {}",
                r.addr.to_string(),
                r.state.as_str(),
                format!("{}/{}", r.blocks_done, r.blocks_total),
                printable(r.version.as_str()),
                if r.authenticated { "signed" } else { "no" },
                r.reason.as_str()
            );
        }
        println!(
            "{}; {frames} status frames, {drops} dropped",
            devices_line(&fleet)
        );
    }
    Ok(EXIT_OK)
}

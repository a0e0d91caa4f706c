//! `firmcast`, the operator binary, as a library so tests can call into it.
//!
//! ```text
//!   main.rs ── cli (clap) ── sign   (keygen, manifest)
//!                          ├─ send   ── net (socket, clock, wait) ── proto::sender::Sender
//!                          ├─ repair ── net                         ── proto::repair::RepairServer
//!                          ├─ status ── net                         ── proto::fleet::Fleet
//!                          │  (send and status: view ◀─ FleetEvent, rollout: the goal)
//!                          │   (send, repair, status) ── record::Hub ── record::writer (SQLite, --db)
//!                          │                                          └─ http (fleet page, --http)
//!                          ├─ relay  ── relay::fetch (HTTP(S) origin) ── send (its loop, fed by relay::cached)
//!                          ├─ fleet  ── record::query (reads --db)
//!                          └─ demo   (runs the binaries above + N × firmcast-agent on loopback;
//!                                   --ipv6: in demo_ns's user + network namespace)
//! ```
//!
//! The shells follow `proto`'s driving contract: after every input, drain
//! every output, then sleep until `poll_timeout()` or a readable socket. No
//! protocol decisions are made here; this crate owns files, sockets, the
//! clock, signals and the human interface (progress, summaries, exit codes:
//! 0 done, 1 runtime failure or goal not reached, 2 usage/configuration).

pub mod agent_config;
pub mod cli;
pub mod demo;
pub mod demo_ns;
pub mod drops;
pub mod error;
pub mod eta;
pub mod feed;
pub mod fleet_cmd;
pub mod http;
pub mod iface;
pub mod image_file;
pub mod keys;
pub mod logger;
pub mod manifest_file;
pub mod net;
pub mod pace_log;
pub mod rate_watch;
pub mod record;
pub mod relay;
pub mod repair;
pub mod report;
pub mod rollout;
pub mod roster;
pub mod send;
pub mod shared_link;
pub mod sign;
pub mod status;
pub mod units;
pub mod view;

pub use error::Error;

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: cli::Cli) -> Result<u8, Error> {
    match cli.command {
        cli::Command::Keygen(a) => {
            logger::init(false);
            sign::keygen(&a)
        }
        cli::Command::Manifest(a) => {
            logger::init(false);
            sign::manifest(&a)
        }
        cli::Command::Send(a) => {
            logger::init(a.verbose);
            send::run(&a)
        }
        cli::Command::Repair(a) => {
            logger::init(a.verbose);
            repair::run(&a)
        }
        cli::Command::Status(a) => {
            logger::init(false);
            status::run(&a)
        }
        cli::Command::Relay(a) => {
            logger::init(a.verbose);
            relay::run(&a)
        }
        cli::Command::Fleet(a) => {
            logger::init(false);
            fleet_cmd::run(&a)
        }
        cli::Command::AgentConfig(a) => {
            logger::init(false);
            agent_config::run(&a)
        }
        cli::Command::Demo(a) => {
            logger::init(false);
            let net = if a.ipv6 {
                demo::DemoNet::ipv6()
            } else {
                demo::DemoNet::ipv4()
            };
            let opts = demo::DemoOptions {
                devices: a.devices,
                size_mib: a.size,
                loss_permille: a.loss,
                rate_bps: a.rate,
                dir: a.dir,
                keep: a.keep,
                net: demo::DemoNet {
                    group: a.group.unwrap_or(net.group),
                    repair_group: a.repair_group.unwrap_or(net.repair_group),
                    repair_listen: a.repair_listen.unwrap_or(net.repair_listen),
                    ipv6: a.ipv6,
                },
                json: a.json,
            };
            match demo::run(&opts) {
                Ok(code) => Ok(code as u8),
                Err(e) => Err(error::config(e.to_string())),
            }
        }
    }
}

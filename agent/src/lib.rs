//! firmcast-agent: the device daemon. It starts at boot, listens for a
//! firmcast Announce for its board during a bounded boot window, fetches and
//! verifies the signed manifest, resumes from what is already on flash,
//! receives the missing blocks over multicast (NACKing gaps to the repair
//! server), writes them with the flasher, reads each block back (R-VER-2), and exits
//! with a code that tells the init script what happened.
//!
//! ```text
//!  main.rs ─▶ cli (this file): arguments, logger, config
//!               └─▶ run::run: sockets (net), signals, poll loop
//!                     └─▶ run::Core: Receiver (proto) + ImageWriter (flasher) + resume scan
//! ```
//!
//! The protocol decisions live in `proto`; this crate only does I/O and
//! turns outcomes into log lines and [`exit::ExitCode`]s.

pub mod activate;
pub mod config;
pub mod confirm;
pub mod device_id;
pub mod exit;
pub mod features;
pub mod floor;
pub mod hooks;
pub mod logger;
pub mod net;
pub mod netspec;
pub mod outcome;
pub mod perms;
pub mod phase;
pub mod privdrop;
pub mod quiet;
pub mod quote;
pub mod rejoin;
pub mod resume;
pub mod run;
pub mod spawn;
pub mod state_file;
pub mod write_rate;

use std::ffi::OsString;
use std::path::PathBuf;

use exit::{ExitCode, EXIT_CODES_HELP};

/// `--help` text.
pub fn help() -> String {
    format!(
        "\
firmcast-agent {version}: receive a multicast firmware update and write it to flash

USAGE:
    firmcast-agent [--config PATH] [--foreground] [--verbose] [--check-config [--lint]] [--dry-run]
    firmcast-agent confirm [--config PATH] [--foreground] [--verbose] [--dry-run]
    firmcast-agent --version | --help

Started at boot, the agent joins the firmcast data and repair multicast groups
and waits up to boot_window_secs for an Announce for its board. No announce, or
an image that is not newer than current_version: it exits 0 so the boot goes on.
interface may be an address, a name (br-lan) or auto; repair_server IPv4:port
or host:port: one config serves a whole fleet.
Otherwise it fetches the signed manifest, checks the Ed25519 signature against
public_key, scans the target for blocks already written (a power cut costs
nothing), receives the missing blocks (NACKing gaps to repair_server), writes
each verified block to the target and reads it back (header block last for
in-place updates), at the end reads back again only the blocks a later write
may have touched (final_read_back = stale; all: every block), activates the
image (activation = in-place, ab-uboot, command or none), reports to the
operator and exits 10 (reboot_command, if set, reboots). [hooks] run around
the update and the state file (/var/run/firmcast/state.json) follows it.

`confirm` runs on the first boot of a new A/B slot (or at every start with
[confirm] at_startup = true): if upgrade_available=1 and the health check
passes, it clears upgrade_available and bootcount in the U-Boot environment;
if the check fails it leaves them, so the bootloader rolls back. It reports
confirmed / failed / rolled-back to the repair server.

OPTIONS:
    -c, --config PATH   configuration file [default: {default}]
    -f, --foreground    log to stderr (seconds.millis since start, level) instead of syslog
    -v, --verbose       log debug messages too
        --check-config  parse the configuration, print the resolved settings, exit 0 (or 2)
        --lint          with --check-config: check a config on the build host, without
                        the device's files (version file, keys, id file) or owners, e.g.
                        firmcast-agent --check-config --lint --config board-configs/openwrt.toml
    -n, --dry-run       do everything but write flash and the U-Boot environment (and run no
                        activation or reboot command); log what would be done, to stderr
    -V, --version       print the version
    -h, --help          print this help

{EXIT_CODES_HELP}

MINIMAL CONFIG (all keys: board-configs/README.md):
    board = \"acme,rt1\"
    current_version_file = \"/etc/fw-version\"
    repair_server = \"10.0.0.2:7855\"
    public_key = \"/etc/firmcast/operator.pub\"
    target = \"mtd:firmware\"
",
        version = env!("CARGO_PKG_VERSION"),
        default = config::DEFAULT_CONFIG_PATH,
    )
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--config`.
    pub config: PathBuf,
    /// `--foreground`.
    pub foreground: bool,
    /// `--verbose`.
    pub verbose: bool,
    /// `--check-config`.
    pub check_config: bool,
    /// `--lint` (with `--check-config`): on the build host, without the device's files.
    pub lint: bool,
    /// `--version`.
    pub version: bool,
    /// `--help`.
    pub help: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The `confirm` subcommand.
    pub confirm: bool,
}

/// Parse the command line (`args` includes the program name).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        config: PathBuf::from(config::DEFAULT_CONFIG_PATH),
        foreground: false,
        verbose: false,
        check_config: false,
        lint: false,
        version: false,
        help: false,
        dry_run: false,
        confirm: false,
    };
    let mut p = lexopt::Parser::from_iter(args);
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("config") => a.config = PathBuf::from(p.value()?),
            Short('f') | Long("foreground") => a.foreground = true,
            Short('v') | Long("verbose") => a.verbose = true,
            Long("check-config") => a.check_config = true,
            Long("lint") => a.lint = true,
            Short('V') | Long("version") => a.version = true,
            Short('h') | Long("help") => a.help = true,
            Short('n') | Long("dry-run") => a.dry_run = true,
            Value(v) if v == "confirm" && !a.confirm => a.confirm = true,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

/// The whole program: returns the process exit status.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("firmcast-agent: {e} (see --help)");
            return ExitCode::Usage.code();
        }
    };
    if a.help {
        print!("{}", help());
        return 0;
    }
    if a.version {
        println!(
            "firmcast-agent {} (features: {})",
            env!("CARGO_PKG_VERSION"),
            features::list()
        );
        return 0;
    }
    if a.lint && !a.check_config {
        eprintln!("firmcast-agent: --lint goes with --check-config (see --help)");
        return ExitCode::Usage.code();
    }
    if a.check_config {
        let loaded = if a.lint {
            // The build host: not the device's files, owners or addresses.
            config::load_lint(&a.config)
        } else {
            config::load(&a.config).and_then(check_files)
        };
        return match loaded {
            Ok(c) => {
                print!("{}", c.describe());
                if a.lint {
                    println!("# lint: the device's files (current_version_file, public_key, device_key, device_id_file) were not read; device_id is computed on the device");
                } else if c.device_id_source.is_guess() {
                    eprintln!("firmcast-agent: warning: {}", guess_warning(&c));
                }
                0
            }
            Err(e) => {
                eprintln!("firmcast-agent: {e}");
                ExitCode::Usage.code()
            }
        };
    }
    // A dry run is interactive: its account goes to the terminal.
    let target = if a.foreground || a.dry_run {
        logger::Target::Stderr
    } else {
        logger::Target::Syslog
    };
    let actual = logger::init(target, a.verbose);
    let mut cfg = match config::load(&a.config).and_then(check_files) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            if actual == logger::Target::Syslog {
                // Also on the console: whoever runs it by hand should see why.
                eprintln!("firmcast-agent: {e}");
            }
            return ExitCode::Usage.code();
        }
    };
    if cfg.device_id_source.is_guess() {
        log::warn!("{}", guess_warning(&cfg));
    }
    if a.dry_run {
        log::info!("dry run: nothing is written to flash or the U-Boot environment");
    }
    if let Err((code, why)) = netspec::resolve(&mut cfg) {
        if code == ExitCode::Ok {
            log::info!("{why}");
        } else {
            log::error!("{why}");
        }
        return code.code();
    }
    if a.confirm {
        return confirm::run(&cfg, a.dry_run).code();
    }
    state_file::install(&cfg);
    hooks::install(&cfg, a.dry_run);
    run::run(&cfg, a.dry_run).code()
}

/// R-LOCAL-1: as root, every file the config names must be root's alone.
fn check_files(c: config::Config) -> Result<config::Config, config::ConfigError> {
    if perms::running_as_root() {
        perms::check_config(&c)?;
    }
    Ok(c)
}

/// R-LOCAL-6: the id had to be guessed from hostname and target.
fn guess_warning(c: &config::Config) -> String {
    format!(
        "device id {:016x} was guessed from hostname and target (no device_id_file, no {}, no MAC for interface {}): identical devices will share it; set device_id_file or device_id",
        c.device_id,
        device_id::MACHINE_ID_PATH,
        c.interface_spec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, lexopt::Error> {
        parse_args(
            std::iter::once("firmcast-agent")
                .chain(list.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn arguments_parse() {
        let a = args(&[]).expect("none");
        assert_eq!(a.config, PathBuf::from("/etc/firmcast/agent.toml"));
        assert!(!a.foreground && !a.verbose && !a.check_config);
        let a = args(&[
            "--config",
            "/tmp/x.toml",
            "--foreground",
            "-v",
            "--check-config",
        ])
        .expect("all");
        assert_eq!(a.config, PathBuf::from("/tmp/x.toml"));
        assert!(a.foreground && a.verbose && a.check_config);
        let a = args(&["--config=/tmp/y.toml"]).expect("eq form");
        assert_eq!(a.config, PathBuf::from("/tmp/y.toml"));
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--config"]).is_err());
        assert!(args(&["stray"]).is_err());
        let a = args(&["confirm", "-c", "/tmp/z.toml", "--dry-run"]).expect("confirm");
        assert!(a.confirm && a.dry_run);
        assert!(args(&["confirm", "confirm"]).is_err());
    }

    #[test]
    fn help_mentions_config_path_and_exit_codes() {
        let h = help();
        assert!(h.contains("/etc/firmcast/agent.toml"));
        assert!(h.contains("130"));
        assert!(h.contains("current_version_file"));
        assert_eq!(
            main_with_args(["firmcast-agent", "--bogus"].map(OsString::from)),
            2
        );
        assert_eq!(
            main_with_args(
                [
                    "firmcast-agent",
                    "--check-config",
                    "--config",
                    "/nonexistent/x.toml"
                ]
                .map(OsString::from)
            ),
            2
        );
    }
}

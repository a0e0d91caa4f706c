//! Command-line interface: the subcommands and their flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::rollout::{parse_until_done, UntilDone};
use crate::units::{parse_rate, parse_size};

/// Multicast firmware updates for fleets of Linux devices: sign an image,
/// send it once to thousands of devices, repair what they missed.
#[derive(Debug, Parser)]
#[command(name = "firmcast", version, about, long_about = None)]
#[command(after_help = "\
Typical session:
  firmcast keygen --out keys
  firmcast manifest --image fw.img --board acme,rt1 --version 2.1.0 --key keys/firmcast.key --out fw.manifest
  firmcast repair --image fw.img --manifest fw.manifest --listen 0.0.0.0:7855 --interface 192.168.1.10 &
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 --interface 192.168.1.10 --rate 50M

Exit codes: 0 done, 1 runtime failure or goal not reached, 2 usage or configuration error.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 signing key pair.
    Keygen(KeygenArgs),
    /// Sign an image into a manifest, or show (and verify) a manifest.
    Manifest(ManifestArgs),
    /// Send an image to a multicast group as a paced carousel.
    Send(SendArgs),
    /// Serve NACKs: resend missing chunks to the repair group or one device.
    Repair(RepairArgs),
    /// Listen for device Status reports and print the fleet table.
    Status(StatusArgs),
    /// Answer questions from the fleet record (--db): versions, failures, silence.
    Fleet(FleetArgs),
    /// Run a real multicast update of several agents on this machine (loopback).
    Demo(DemoArgs),
    /// Serve one site: fetch a signed image over HTTP(S), verify it, send it.
    Relay(RelayArgs),
    /// Write an agent config file from KEY=VALUE pairs, each checked against the agent's schema.
    AgentConfig(AgentConfigArgs),
}

/// `firmcast agent-config`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes the TOML file firmcast-agent reads (board-configs/README.md lists every
key). Each KEY is `key` or `table.key`; an unknown key or a value of the wrong
form is refused (exit 2), so a script that writes agent configs breaks where it
writes them, not on the device. Integers are decimal, booleans true/false,
arrays (argv keys such as reboot_command) are split at commas.

Examples:
  firmcast agent-config board=acme,rt1 current_version=1.0.0 \\
      repair_server=192.168.1.10:7855 public_key=/etc/firmcast/operator.pub \\
      target=mtd:firmware --out agent.toml
  firmcast agent-config board=acme,rt2 activation=ab-uboot ab.slot_a=mtd:firmware_a \\
      ab.slot_b=mtd:firmware_b reboot_command=/sbin/reboot ...")]
pub struct AgentConfigArgs {
    /// The settings, in the order they are written (tables after the top level).
    #[arg(value_name = "KEY=VALUE", required = true)]
    pub settings: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `firmcast send --announce-every` default (the relay's too).
pub const ANNOUNCE_EVERY: u32 = 64;
/// `firmcast send --manifest-repeats` default (the relay's too).
pub const MANIFEST_REPEATS: u32 = 8;
/// `firmcast send --manifest-lead` default (the relay's too).
pub const MANIFEST_LEAD: u32 = 5;

/// `firmcast relay`.
#[derive(Debug, Args)]
#[command(after_help = "\
One command per site: the relay fetches the signed manifest (--manifest-url)
and the image (--origin) from any web server, object store or CDN over HTTP or
HTTPS, and serves its site as `firmcast send` does, carousel plus (with
--repair-listen) repair server, so the origin link carries the image once per
site, not once per device.

What it checks before sending (R-RELAY-1..3): the manifest's signature with
--public-key (the key the devices trust; nothing is fetched or sent on a bad
one), then every block's SHA-256 against the manifest before the first byte of
that block goes out. A block that differs ends the relay (exit 1) with a line
naming the block; the devices never see it.

Streaming: the carousel starts with the first block downloaded and verified
and holds whenever its next block has not arrived yet, so the first pass runs
at the download's speed and later passes at --rate. The download goes to a
cache file (--cache, default a temporary file removed at exit) and is resumed
with a Range request after a dropped connection (up to 8 attempts in a row
without progress, 0.2 s to 4 s apart), and after a restart of the relay with
the same --cache and manifest. Memory: like `firmcast send`, the image is held
in memory once (the carousel and repairs read any block at any time); the
cache file means a restart does not fetch it again.

--forward-status sends every Status frame the relay accepted, unchanged, to a
central `firmcast status --listen` (or `send`/`repair`), at most one per frame
received and at most 200 a second (bursts of 400): the central table then has
every site's devices, each shown at the address of its site's relay; signed
reports (R-STAT-4) verify there against the central --roster.

Examples:
  firmcast relay --origin https://fw.example.com/acme/fw-2.1.0.img \\
      --manifest-url https://fw.example.com/acme/fw-2.1.0.manifest \\
      --public-key firmcast.pub --group 239.255.77.1:7854 --interface 10.1.0.1 \\
      --rate 50M --repair-listen 10.1.0.1:7855 --until-done 40 --duration 3600 \\
      --cache /var/cache/firmcast/fw-2.1.0.img --forward-status 10.0.0.5:7856
  firmcast relay --origin https://origin.lan/fw.img --manifest-url https://origin.lan/fw.manifest \\
      --ca-file private-ca.pem --public-key firmcast.pub --group 239.255.77.1:7854 \\
      --interface 192.168.7.1 --rate 20M --passes 3
  firmcast status --listen 10.0.0.5:7856      # the central view of every site")]
pub struct RelayArgs {
    /// URL of the image (http:// or https://); fetched with Range requests.
    #[arg(long, value_name = "URL")]
    pub origin: String,
    /// URL of its signed manifest.
    #[arg(long, value_name = "URL")]
    pub manifest_url: String,
    /// The public key the devices trust: the manifest must verify with it.
    #[arg(long, value_name = "PUBFILE")]
    pub public_key: PathBuf,
    /// Trust only this CA (PEM) for https:// (a private CA); default: the
    /// bundled web PKI roots.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Download into this file (FILE.manifest beside it) and keep it: a
    /// relay restarted with the same file and manifest resumes the download.
    #[arg(long, value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Forward the devices' Status frames to a central `firmcast status`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub forward_status: Option<SocketAddr>,
    /// Multicast group and port to send to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub group: SocketAddr,
    /// Local address of the site's interface to send from: IPv4, or IPv6
    /// for an IPv6 group.
    #[arg(long, value_name = "IP")]
    pub interface: IpAddr,
    /// Carousel rate in bits per second with a unit: 50M, 800K, 1G.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: u64,
    /// Multicast TTL (1 = this subnet only).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ttl: u32,
    /// Serve repairs too, receiving NACKs and Status on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub repair_listen: Option<SocketAddr>,
    /// Multicast group and port for repairs (as `firmcast send`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "239.255.77.2:7855")]
    pub repair_group: SocketAddr,
    /// Without --repair-listen and with a source-specific --repair-group:
    /// the site's repair server's address (as `firmcast send`).
    #[arg(long, value_name = "IP")]
    pub repair_source: Option<IpAddr>,
    /// With --repair-listen: parity (default) or retransmit.
    #[arg(long, value_enum)]
    pub repair: Option<RepairModeArg>,
    /// Stop once N devices of the site succeeded (`all`: every device of --devices).
    #[arg(long, value_name = "N|all", value_parser = parse_until_done)]
    pub until_done: Option<UntilDone>,
    /// The site's devices (as `firmcast send --devices`).
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Stop after this many seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Stop after N complete carousel passes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub passes: Option<u32>,
    /// Roster of device keys (as `firmcast send --roster`).
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Print a JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Log every device state change and more.
    #[arg(long, short)]
    pub verbose: bool,
    /// The fleet record (--db) and the fleet page (--http).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `firmcast demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
Runs the real binaries, as an operator and a fleet would: firmcast keygen,
firmcast manifest, firmcast repair, N x firmcast-agent (each writing a simulated
NOR flash file), then firmcast send --until-done N, all over multicast on the
loopback interface. Then it compares every device's flash with the image byte
for byte and prints a summary. Needs firmcast-agent next to firmcast
(cargo build --release --workspace --bins). No root needed.

--ipv6 runs the same over IPv6: loopback carries no IPv6 multicast, so the
demo makes an unprivileged user + network namespace (util-linux unshare and
nsenter, iproute2 ip) with a veth link holding fd77::1 (sender and repair
server) and fd77::100 and up (one address per device), and runs repair,
agents and sender in it; the files stay where they are. The kernel must allow
unprivileged user namespaces (sysctls kernel.unprivileged_userns_clone,
user.max_user_namespaces; the error says which refused); run as root, it
makes a network namespace only.
A source-specific group (ff3x::/32, 232/8) makes the devices join (S,G)
from the sender, and the repair group from the repair server.

Examples:
  firmcast demo                                # 5 devices, 16 MiB
  firmcast demo --devices 10 --size 32 --loss 20   # 2% receive loss per device
  firmcast demo --keep --dir /tmp/fc           # keep flash files and logs
  firmcast demo --ipv6 --loss 20               # [ff15::77]:7854 via fd77::1
  firmcast demo --ipv6 --group '[ff3e::8000:1]:7854' --repair-group '[ff3e::8000:2]:7855'")]
// The field docs are `--help` text: "[ff15::77]:7854" is an address, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct DemoArgs {
    /// Number of devices (agents) to run.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub devices: u32,
    /// Image size in MiB.
    #[arg(long, default_value_t = 16, value_name = "MB")]
    pub size: u32,
    /// Receive loss at each device, in permille (the agent's rx-loss test option).
    #[arg(long, default_value_t = 0, value_name = "PERMILLE")]
    pub loss: u32,
    /// Carousel rate (bits/s; K/M/G suffixes).
    #[arg(long, default_value = "100M", value_name = "RATE", value_parser = parse_rate)]
    pub rate: u64,
    /// Work directory (default: a fresh temp dir, removed on success).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the work directory (flash files, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Data multicast group [default: 239.255.77.1:7854; with --ipv6
    /// [ff15::77]:7854].
    #[arg(long, value_name = "ADDR:PORT")]
    pub group: Option<SocketAddr>,
    /// Repair multicast group [default: 239.255.77.2:7855; with --ipv6
    /// [ff15::78]:7855].
    #[arg(long, value_name = "ADDR:PORT")]
    pub repair_group: Option<SocketAddr>,
    /// Repair server's listen address [default: 127.0.0.1:7855; with --ipv6
    /// [fd77::1]:7855].
    #[arg(long, value_name = "ADDR:PORT")]
    pub repair_listen: Option<SocketAddr>,
    /// Run over IPv6, in a user + network namespace of the demo's own (see
    /// below).
    #[arg(long)]
    pub ipv6: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `firmcast keygen`.
#[derive(Debug, Args)]
#[command(after_help = "\
Writes DIR/firmcast.key (a firmcast-ed25519-secret-key line, then the hex Ed25519
seed; mode 0600: keep it on the build host) and DIR/firmcast.pub (a
firmcast-ed25519-public-key line, then the hex public key: put it in every
device's agent config). `manifest` refuses a public key as --key and a secret
key that group or others may read.
Prints the key id, the first 8 bytes of SHA-256 of the public key, which every
manifest signed with this key carries.

Examples:
  firmcast keygen --out keys
  firmcast keygen --out keys --force      # replace an existing key pair
  firmcast keygen --device --out dev1     # a device key: dev1/device.key, dev1/device.pub")]
pub struct KeygenArgs {
    /// Directory to write firmcast.key and firmcast.pub into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite an existing key pair.
    #[arg(long)]
    pub force: bool,
    /// Make a device key pair instead (DIR/device.key for the agent's
    /// `device_key`, DIR/device.pub for the operator's --roster).
    #[arg(long)]
    pub device: bool,
}

/// `firmcast manifest`.
#[derive(Debug, Args)]
#[command(after_help = "\
Signing binds board, version, image length, block and chunk sizes and the
SHA-256 of every block; devices check all of it before writing a byte.
Sizes accept K and M suffixes (powers of 1024). The chunk size is the payload
of one datagram (64..8192). The default, 1408, fills a 1500-byte Ethernet
frame (1408 + 29 bytes of firmcast frame + 28 of IPv4/UDP = 1465); use
less on paths with a smaller MTU (tunnels, e.g. 1200), more only with jumbo
frames. The block size is the unit of verification and flashing (at least one
chunk); where the chunk size does not divide it, each block's last chunk is
short (64 KiB = 46 chunks of 1408 bytes and one of 768).

--min-version V signs an anti-rollback floor (R-ROLL-1): a device that
activates this image refuses, from then on, every image older than V, even
one signed by you (an old release with a known hole, replayed by anyone on
the LAN). Devices record the floor only when this image is activated, and
keep it across reflashes of the root filesystem (the U-Boot environment on
A/B boards, `floor_file` otherwise). V must not be newer than --version.

Manifests are format 2: each block's digest is over the hashes of its
chunks, which the sender sends ahead of the block, so devices drop a forged
chunk on arrival (R-AUTH-1). --format 1 writes the first format for agents
that predate it (blocks checked whole; no --min-version).

Examples:
  firmcast manifest --image fw.img --board acme,rt1 --version 2.1.0 \\
      --key keys/firmcast.key --out fw.manifest
  firmcast manifest --image fw.img --board acme,rt1 --version 2.1.0 \\
      --key keys/firmcast.key --out fw.manifest --block-size 128K --chunk-size 1200
  firmcast manifest --image fw.img --board acme,rt1 --version 2.3.0 \\
      --min-version 2.3.0 --key keys/firmcast.key --out fw.manifest
  firmcast manifest --show fw.manifest --public-key keys/firmcast.pub
  firmcast manifest --show fw.manifest --json")]
pub struct ManifestArgs {
    /// Show the fields of an existing manifest instead of signing one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["image", "board", "version", "key", "out"])]
    pub show: Option<PathBuf>,
    /// With --show: verify the signature with this public key file.
    #[arg(long, value_name = "PUBFILE", requires = "show")]
    pub public_key: Option<PathBuf>,
    /// With --show: print a JSON object on stdout.
    #[arg(long, requires = "show")]
    pub json: bool,
    /// The firmware image to sign.
    #[arg(long, value_name = "FILE", required_unless_present = "show")]
    pub image: Option<PathBuf>,
    /// Board id the image is for, e.g. acme,rt1.
    #[arg(long, value_name = "ID", required_unless_present = "show")]
    pub board: Option<String>,
    /// Image version, e.g. 2.1.0 (devices refuse versions not newer than theirs).
    #[arg(long, value_name = "V", required_unless_present = "show")]
    pub version: Option<String>,
    /// Secret key file from `firmcast keygen`.
    #[arg(long, value_name = "KEYFILE", required_unless_present = "show")]
    pub key: Option<PathBuf>,
    /// Where to write the signed manifest.
    #[arg(long, value_name = "FILE", required_unless_present = "show")]
    pub out: Option<PathBuf>,
    /// Signed anti-rollback floor: devices that activate this image refuse
    /// images older than V from then on (e.g. 2.3.0).
    #[arg(long, value_name = "V", conflicts_with = "show")]
    pub min_version: Option<String>,
    /// Manifest format: 2 (chunk authentication, --min-version) or 1 (for
    /// agents that predate format 2).
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(1..=2), conflicts_with = "show")]
    pub format: u8,
    /// Block size (verification and flashing unit).
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    pub block_size: u64,
    /// Chunk size (payload bytes per datagram).
    #[arg(long, value_name = "SIZE", default_value = "1408", value_parser = parse_size)]
    pub chunk_size: u64,
}

/// `firmcast send`.
#[derive(Debug, Args)]
#[command(after_help = "\
Sends the image as a carousel: an Announce, the manifest, then every chunk in
order, pass after pass, paced at --rate (bits/s including IP/UDP headers; K, M,
G suffixes are powers of 1000). Devices report Status to the socket this
command sends from; progress shows devices by state.

Stops at the first of --until-done, --abort-if-failed, --duration, --passes,
or Ctrl-C / SIGTERM (without any of them it runs until interrupted), then
prints the device table (stderr) and a summary naming every device that did
not succeed and why.
--until-done N stops once N devices succeeded (done, activated), or once every
device heard from (at least N; with --devices, every listed one) is in a final
state: done, refused, failed, stalled... --until-done all needs --devices.
On a terminal, stderr shows a live table of the devices (problems on top),
totals and an ETA; otherwise one line per device state change. --json writes
one JSON object per change on stdout, then the summary object as the last line.
Exit 0 when the stop condition was met; 1 when --until-done was given and not
met when it stopped, or --abort-if-failed stopped it.

Examples:
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \\
      --interface 192.168.1.10 --rate 50M --until-done 200 --duration 1800
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \\
      --interface 127.0.0.1 --rate 5M --passes 2 --json
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \\
      --interface 192.168.1.10 --rate 20M --repair-listen 192.168.1.10:7855 \\
      --devices wave1.txt --until-done all --abort-if-failed 3 --duration 3600
    (wave1.txt: one device id or address per line)

Beside a separate `firmcast repair` (on this host or another), the sender
hears --repair-group and slows the carousel by the repairs it hears (up to
half of --rate), so carousel and repairs together keep to --rate (R-REP-11).
The typical session, repair server and sender on one host:
  firmcast repair --image fw.img --manifest fw.manifest --listen 192.168.1.10:7855 \
      --interface 192.168.1.10 &
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \
      --interface 192.168.1.10 --rate 95M --until-done 50

With --repair-listen this process is also the repair server (what `firmcast
repair` does, on the same host): devices send NACKs to that address, and
repairs and the carousel share --rate, repairs first, so the uplink is never
asked for more than --rate. Point the devices' repair server at it.
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \\
      --interface 192.168.1.10 --rate 20M --repair-listen 192.168.1.10:7855 \\
      --until-done 50

Keep every device report in a fleet record and watch the rollout in a browser
(see `firmcast fleet --help` for reading the record):
  firmcast send --image fw.img --manifest fw.manifest --group 239.255.77.1:7854 \\
      --interface 192.168.1.10 --rate 50M --until-done 200 --db fleet.db --http 8080
  # then open http://127.0.0.1:8080/ (use --http 0.0.0.0:8080 to serve other hosts)")]
pub struct SendArgs {
    /// The firmware image.
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Its signed manifest (checked against the image block by block).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Also verify the manifest's signature with this public key file.
    #[arg(long, value_name = "PUBFILE")]
    pub public_key: Option<PathBuf>,
    /// Multicast group and port to send to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub group: SocketAddr,
    /// Local address of the interface to send from: IPv4, or IPv6 for an
    /// IPv6 group (the interface holding it sends).
    #[arg(long, value_name = "IP")]
    pub interface: IpAddr,
    /// Carousel rate in bits per second with a unit: 50M, 800K, 1G (a bare
    /// number is refused). The carousel goes slower when the devices' flash
    /// cannot keep up (R-PACE-2), never faster.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: u64,
    /// Multicast TTL, the IPv6 hop limit (1 = this subnet only; one more
    /// per multicast router between here and the devices: --ttl 8).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ttl: u32,
    /// Stop once N devices succeeded with this image (`all`: every device
    /// of --devices), or once every awaited device is in a final state. While
    /// the N devices read back what they received (and no other needs data),
    /// the carousel holds: an Announce every 100 ms, no data.
    #[arg(long, value_name = "N|all", value_parser = parse_until_done)]
    pub until_done: Option<UntilDone>,
    /// The devices this rollout expects: a file with one device id (16 hex
    /// digits) or address (IP or IP:PORT) per line. The table shows who never
    /// reported; --until-done waits for these only.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Stop the carousel (exit 1) once N devices failed verification or
    /// activation (failed: verify-failed, flash-error, activation-failed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub abort_if_failed: Option<usize>,
    /// Stop after this many seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Stop after N complete carousel passes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub passes: Option<u32>,
    /// Datagrams between two Announces.
    #[arg(long, default_value_t = ANNOUNCE_EVERY, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub announce_every: u32,
    /// Extra copies of the manifest per pass, spread among the data.
    #[arg(long, default_value_t = MANIFEST_REPEATS, value_name = "N")]
    pub manifest_repeats: u32,
    /// Copies of the manifest at the start of each pass, each after an Announce.
    #[arg(long, default_value_t = MANIFEST_LEAD, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub manifest_lead: u32,
    /// Also serve repairs from this process, receiving NACKs and Status on
    /// this address (instead of an ephemeral port); repairs share --rate.
    #[arg(long, value_name = "ADDR:PORT")]
    pub repair_listen: Option<SocketAddr>,
    /// Multicast group and port for repairs several devices need: with
    /// --repair-listen this process sends them there; without it, it hears
    /// a separate repair server's there and yields to them (R-REP-11).
    #[arg(long, value_name = "ADDR:PORT", default_value = "239.255.77.2:7855")]
    pub repair_group: SocketAddr,
    /// Without --repair-listen and with a source-specific --repair-group
    /// (232.0.0.0/8, ff3x::/32): the separate repair server's address, the
    /// only source heard on it, e.g. --repair-source 10.0.0.2.
    #[arg(long, value_name = "IP")]
    pub repair_source: Option<IpAddr>,
    /// With --repair-listen: how to answer a crowd of NACKs (as `firmcast
    /// repair --repair`; default parity).
    #[arg(long, value_enum)]
    pub repair: Option<RepairModeArg>,
    /// Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status
    /// reports signed by a roster device count, and are shown as authenticated.
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Print a JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Log every device state change and more.
    #[arg(long, short)]
    pub verbose: bool,
    /// The fleet record (--db) and the fleet page (--http).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `firmcast repair`.
#[derive(Debug, Args)]
#[command(after_help = "\
Listens for NACKs (and Status) from devices, aggregates them for a few
milliseconds, and answers on the repair group with as many fresh parity
symbols per block as the neediest device asked for (--repair parity, the
default: one symbol repairs a different lost chunk at every device), or
resends each missing chunk once (--repair retransmit); a lone straggler gets
source chunks unicast. Repairs and the carousel share one link budget
(R-REP-11/12): the repair server hears the carousel's Announce on --group and
paces at its rate, taking at most half of it while the carousel sends, and
the sender yields what it hears the repairs take; --rate (bits/s; K, M, G
suffixes are powers of 1000) caps the repairs below that.
Every device reports to the repair server, also those that never proved the
sender's address (R-STAT-8), so its table of devices is the fullest: live on
a terminal (stderr), one line per state change otherwise, one JSON object per
change on stdout with --json; --devices FILE shows who never reported.
Stops after --duration or on Ctrl-C / SIGTERM and prints its counters
(a JSON object on stdout with --json, the last line).

Examples:
  firmcast repair --image fw.img --manifest fw.manifest --listen 0.0.0.0:7855 \\
      --interface 192.168.1.10
  firmcast repair --image fw.img --manifest fw.manifest --listen 127.0.0.1:7855 \\
      --interface 127.0.0.1 --repair-group 239.255.77.2:7855 --rate 20M --duration 60 --json")]
pub struct RepairArgs {
    /// The firmware image.
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Its signed manifest (checked against the image block by block).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Also verify the manifest's signature with this public key file.
    #[arg(long, value_name = "PUBFILE")]
    pub public_key: Option<PathBuf>,
    /// Address and port to receive NACKs and Status on.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Local address of the interface to send group repairs from (IPv4, or
    /// IPv6 for IPv6 groups).
    #[arg(long, value_name = "IP")]
    pub interface: IpAddr,
    /// Multicast group and port for repairs several devices need.
    #[arg(long, value_name = "ADDR:PORT", default_value = "239.255.77.2:7855")]
    pub repair_group: SocketAddr,
    /// The devices expected: a file with one device id (16 hex digits) or
    /// address (IP or IP:PORT) per line; the table shows who never reported.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// The carousel's multicast group and port (as given to `firmcast send
    /// --group`): the repair server hears its Announce and paces repairs at
    /// the carousel's rate, at most half of it while the carousel sends, so
    /// the two together keep to one link budget (R-REP-12).
    #[arg(long, default_value = "239.255.77.1:7854", value_name = "ADDR:PORT")]
    pub group: SocketAddr,
    /// With a source-specific --group (232.0.0.0/8, ff3x::/32): the
    /// carousel's sender address, the only source heard on it, e.g.
    /// --source 10.0.0.1.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,
    /// Cap on repair traffic in bits per second. Repairs follow the
    /// carousel's announced rate, never above this cap. Without it the cap
    /// is 50M, or the rate measured on the link while the carousel sends
    /// if that is higher (a forged Announce cannot raise it). A unit is
    /// required: 50M, 800K, 1G.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Multicast TTL (IPv6 hop limit) for group repairs (1 = this subnet
    /// only; one more per multicast router: --ttl 8).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ttl: u32,
    /// How to answer a crowd of NACKs: send fresh parity symbols per block
    /// (each repairs a different loss at each device), or resend the missing
    /// chunks. A lone straggler gets source chunks unicast either way.
    #[arg(long, value_enum, default_value_t = RepairModeArg::Parity)]
    pub repair: RepairModeArg,
    /// Stop after this many seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status
    /// reports signed by a roster device count, and are shown as authenticated.
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Print a JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Log every NACK.
    #[arg(long, short)]
    pub verbose: bool,
    /// The fleet record (--db) and the fleet page (--http).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `firmcast status`.
#[derive(Debug, Args)]
#[command(after_help = "\
Collects the Status reports devices send (every second while busy, three
times on a final state) into a table: id, address, state, blocks done,
running version, last seen and reason, problems on top. On a terminal the
table is live (stderr); otherwise one line per state change, and the table
at the end. --json: one JSON object per change on stdout, then a summary
object. Useful on a host where devices report but no sender or repair
server runs. Stops after --duration, on Ctrl-C / SIGTERM, or (with
--devices) once every listed device is in a final state.
Exit 0; with --devices, 1 unless every listed device succeeded (done,
activated, confirmed).

Examples:
  firmcast status --listen 0.0.0.0:7855 --duration 10
  firmcast status --listen 127.0.0.1:7856 --duration 5 --json
  firmcast status --listen 0.0.0.0:7855 --devices wave1.txt --duration 600
  firmcast status --listen 0.0.0.0:7855 --db fleet.db --http 8080   # record + live page")]
pub struct StatusArgs {
    /// Address and port to receive Status reports on.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The devices expected: a file with one device id (16 hex digits) or
    /// address (IP or IP:PORT) per line; see the exit status above.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Stop after this many seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Roster of device keys (lines `DEVICE_ID PUBLIC_KEY`): only Status
    /// reports signed by a roster device count, and are shown as authenticated.
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Print a JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// The fleet record (--db) and the fleet page (--http).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `--db` and `--http`, shared by send, repair and status.
#[derive(Debug, Clone, Default, Args)]
pub struct RecordArgs {
    /// Keep every Status report in this SQLite fleet record (created if
    /// missing; WAL). A report is acknowledged once committed (within
    /// ~150 ms) and then survives the tool being killed. Read it with
    /// `firmcast fleet --db FILE`.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Serve a live fleet page: PORT (on 127.0.0.1) or ADDR:PORT (any other
    /// address only when given, e.g. 0.0.0.0:8080; it has no authentication).
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub http: Option<String>,
}

/// `firmcast fleet`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads the fleet record that `send`, `repair` and `status` keep with --db and
prints, for every device that ever reported, its latest report: the version it
runs, its state and reason, its blocks, the rollout (image id) and when;
problems first (failed or refused, then devices still under way), then the
devices with the image. Above them, each rollout with how many devices took it
and how many failed. With --devices, the devices expected that never reported
are listed too. Reports are kept with the time they arrived (UTC).

Devices file (as `send --devices` reads it): one device per line, its first
word a device id (16 hex digits, or 0x + hex) or an address (IP or IP:PORT);
the rest of the line and lines starting with `#` are ignored.

Examples:
  firmcast fleet --db fleet.db
  firmcast fleet --db fleet.db --devices lab.txt          # who never reported
  firmcast fleet --db fleet.db --rollout 3f2a9c0d11e4b7a8 # one rollout only
  firmcast fleet --db fleet.db --history 8572b05704268b9b # what happened to one device
  firmcast fleet --db fleet.db --csv > fleet.csv
  firmcast fleet --db fleet.db --json | jq '.devices[] | select(.state == \"failed\")'")]
pub struct FleetArgs {
    /// The fleet record to read.
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,
    /// The devices expected (ids or addresses, one a line): list those that never reported.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Only reports about this rollout (image id, 16 hex digits).
    #[arg(long, value_name = "IMAGE_ID")]
    pub rollout: Option<String>,
    /// Instead: the history of one device (each change of state, reason,
    /// version, rollout or address, with when and how many reports).
    #[arg(long, value_name = "DEVICE_ID", conflicts_with_all = ["devices", "rollout"])]
    pub history: Option<String>,
    /// Print CSV (one row per device) instead of the table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Print one JSON object (rollouts, devices, never_reported) instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!(
            "invalid duration `{s}`: expected seconds, e.g. 30 or 2.5"
        )),
    }
}

/// `firmcast repair --repair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairModeArg {
    /// Resend each missing chunk once.
    Retransmit,
    /// Send parity symbols (Reed-Solomon over each block): the default. One
    /// symbol repairs a different lost chunk at every device, so a lossy
    /// crowd needs fewer repairs than by retransmission (bench/README.md).
    Parity,
}

//! The agent's main loop, split in two:
//!
//! - [`Core`]: the shell around [`proto::receiver::Receiver`] that needs no
//!   network — it takes datagrams and time in, writes flash, hands out the
//!   datagrams to send, and decides when and how the process exits. Tests
//!   drive it with a fake clock and an in-process sender.
//! - [`run`]: sockets, signals and `poll`, following the driving contract of
//!   `proto`: after every input drain every output (events, then transmits),
//!   then sleep until the next deadline or a readable socket.
//!
//! ```text
//!  poll(signalfd, data, repair, unicast; timeout = earliest deadline)
//!    ├─ datagram ─▶ Core::handle_datagram ─▶ Receiver::handle_datagram
//!    │                 └─ events: ManifestAccepted → open target, resume scan
//!    │                            WriteBlock → ImageWriter::write_block → handle_flash_done
//!    │                            VerifyImage → (next turn, after the Status) read back → handle_verify_done
//!    │                            Done / Failed / Refused → decide the exit
//!    ├─ deadline ─▶ Core::handle_timeout
//!    └─ Core::poll_transmit ─▶ unicast socket (repair server, sender)
//! ```

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use flasher::{ErrorKind, Flash, ImageWriter, WriterOptions};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proto::manifest::Manifest;
use proto::receiver::{Event, FlashFailure, Receiver, ReceiverConfig, Refusal};
use proto::rng::Rng;
use proto::wire::{DeviceState, FrameKind, ImageId, Reason, MAX_DATAGRAM};
use proto::{Dest, Instant};

use crate::activate::{self, DryRunFlash};
use crate::config::{Activation, Config};
use crate::exit::ExitCode;
use crate::features::Feature;
use crate::outcome::FinalReport;
use crate::quiet::{escape, Summary};
use crate::write_rate::WriteRate;
use crate::{confirm, floor, net, rejoin, resume};

/// Opens the flash target (the real one calls `flasher::open_target`).
pub type Opener<F> = Box<dyn FnMut() -> Result<F, flasher::Error>>;
/// Reads the monotonic clock.
pub type Clock = Box<dyn Fn() -> Instant>;
/// Activates a written, verified image (`ab-uboot`, `command`): returns the
/// log line on success, the reason on failure.
pub type Activator = Box<dyn FnMut(&ImageInfo) -> Result<String, String>>;

/// What an [`Activator`] learns about the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The manifest's version.
    pub version: String,
    /// The manifest's signed anti-rollback floor (R-ROLL-1), empty for none.
    pub min_version: String,
    /// Image length in bytes.
    pub image_len: u64,
    /// The image id.
    pub image_id: ImageId,
    /// The target spec it was written to.
    pub target: String,
}

/// How often the progress line is logged while receiving.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long final Status reports may take before the process exits anyway.
const FINAL_STATUS_GRACE: Duration = Duration::from_secs(2);
/// Final Status reports the receiver sends after a refusal.
const REFUSAL_STATUSES: u32 = 3;
/// Restarts after a new bad block before giving up.
const MAX_RESTARTS: u32 = 3;
/// Datagrams read from one socket per wakeup. Large enough that the NACK
/// timer, handled at the top of the loop, nearly always sees a drained
/// socket: a device that NACKs while repairs for its holes still wait in its
/// own socket buffer makes the repair server send them again (50 agents on
/// two cores at 1% loss: 286,701 chunks asked for, 1.2 x the image repaired).
const MAX_READS_PER_WAKEUP: usize = 512;
/// After a wakeup that found fewer datagrams than this, nap for [`COALESCE`].
const COALESCE_BELOW: usize = 8;
/// The nap: at 20 Mbit/s (1,700 datagrams/s) about 5 datagrams, where 1 ms
/// woke an agent for almost every one; fifty agents on two cores in
/// bench/fleet then spent 11.7 ms of CPU per MB, 8.3 with 3 ms. Faster
/// streams fill [`COALESCE_BELOW`] and never nap.
const COALESCE: Duration = Duration::from_millis(3);
/// Blocks of the resume scan per turn of the loop (R-RES-2): between two
/// turns the sockets are read, so the scan never holds the data up for
/// longer than reading this many blocks takes.
const SCAN_BLOCKS_PER_TURN: u32 = 64;
/// Blocks of the resume scan looked at after each block written, whatever
/// the time: the scan then outpaces the writes even on slow flash.
const SCAN_BLOCKS_PER_WRITE: u32 = 4;
/// Longest a turn of the resume scan may take (after its first block); the socket buffer holds far
/// more than this of the stream.
const SCAN_TURN_BUDGET: Duration = Duration::from_millis(10);

/// When the process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Once the receiver's final Status reports are out (or `by`).
    WhenFinished { code: ExitCode, by: Instant },
    /// After `left` more Status reports to the repair server (or `by`).
    AfterStatuses {
        code: ExitCode,
        left: u32,
        by: Instant,
    },
    /// Once the shell's own final report is out (or `by`), R-STAT-7; the
    /// receiver sends nothing meanwhile.
    AfterReport { code: ExitCode, by: Instant },
    /// At once.
    Now(ExitCode),
}

/// The settings of [`Core`], taken from the [`Config`].
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// This device's board.
    pub board: String,
    /// The running version.
    pub current_version: String,
    /// The target spec (for log lines).
    pub target: String,
    /// Activation method.
    pub activation: Activation,
    /// Exit 0 at once on a not-newer image.
    pub exit_when_current: bool,
    /// Which blocks the final read-back reads (R-VER-2).
    pub final_read_back: resume::FinalReadBack,
    /// Listening this long with no update → exit 0.
    pub boot_window: Duration,
    /// No progress for this long while receiving → exit 5.
    pub stall_timeout: Duration,
    /// The whole run ends (exit 5) this long after it started (R-RUN-2).
    pub run_deadline: Duration,
    /// Where `Dest::RepairServer` goes.
    pub repair_server: SocketAddr,
    /// Test: drop this many per thousand received datagrams.
    pub rx_loss_permille: u32,
    /// Test: seed of the loss generator.
    pub rx_loss_seed: u64,
    /// Test: sleep after each block write.
    pub block_delay: Duration,
    /// `--dry-run`: the target is wrapped so nothing is written; the
    /// read-back is skipped (blocks were digest-checked before "writing").
    pub dry_run: bool,
    /// This device's id (for the shell's own Status reports).
    pub device_id: u64,
    /// The device key every Status is signed with (R-STAT-4), if configured.
    pub device_key: Option<ed25519_compact::SecretKey>,
}

impl CoreSettings {
    /// From the config file.
    pub fn from_config(c: &Config) -> Self {
        CoreSettings {
            board: c.board.clone(),
            current_version: c.current_version.clone(),
            target: c.target.clone(),
            activation: c.activation,
            exit_when_current: c.exit_when_current,
            final_read_back: c.final_read_back,
            boot_window: c.boot_window,
            stall_timeout: c.stall_timeout,
            run_deadline: c.run_deadline,
            repair_server: c.repair_server,
            rx_loss_permille: c.test.rx_loss_permille,
            rx_loss_seed: c.test.rx_loss_seed,
            block_delay: c.test.block_delay,
            dry_run: false,
            device_id: c.device_id,
            device_key: confirm::device_secret(c),
        }
    }
}

/// The receiver configuration for `c`, seeded with `rng_seed`.
pub fn receiver_config(c: &Config, rng_seed: u64) -> ReceiverConfig {
    let mut rc = ReceiverConfig::new(c.device_id, &c.board, &c.current_version, c.public_key);
    rc.window_blocks = c.window_blocks;
    rc.max_window_bytes = c.max_buffer_bytes;
    rc.max_block_size = c.max_block_size;
    rc.hold_first_block = c.activation == Activation::InPlace;
    rc.rng_seed = rng_seed;
    // R-NACK-2: the round trip is not measured here (0); the operator sizes
    // the back-off for the fleet.
    rc.nack_delay_max = c.nack_backoff.max(rc.nack_delay_min);
    rc.nack_backoff_shape = c.nack_backoff_shape;
    // R-ANN-2: "nothing to do" needs the signed manifest, not an Announce.
    rc.fetch_when_current = c.exit_when_current;
    rc
}

/// Counters of the shell itself (the receiver keeps its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Datagrams dropped by the test loss knob.
    pub test_dropped: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Blocks written in this run.
    pub blocks_written: u32,
    /// Bytes written in this run.
    pub bytes_written: u64,
    /// Blocks found on flash by the last resume scan (including those read
    /// before writing and found already there).
    pub resumed: u32,
    /// Blocks received before the scan reached them and found on flash
    /// already, so not written again.
    pub already_there: u32,
    /// Receiver restarts after a new bad block.
    pub restarts: u32,
}

/// The network-free part of the agent. See the module docs.
pub struct Core<F: Flash> {
    s: CoreSettings,
    rx_config: ReceiverConfig,
    rx: Receiver,
    open: Opener<F>,
    clock: Clock,
    writer: Option<ImageWriter<F>>,
    /// The open target between a restart and the next manifest.
    spare_flash: Option<F>,
    manifest: Option<Manifest>,
    header_invalidated: bool,
    /// The resume scan, while it runs beside receiving (R-RES-2).
    scan: Option<resume::Scanner>,
    /// CRC-32 of each block once its SHA-256 matched, for the final read-back.
    prints: resume::Fingerprints,
    write_rate: WriteRate,
    /// The receiver asked for the final read-back; it runs on the next turn
    /// of the loop, after the `verifying` Status has gone out, so that a
    /// sender waiting for its fleet can stop the carousel meanwhile (R-CAR-5).
    verify_due: bool,
    /// Blocks the scan found that the receiver did not have yet.
    scan_found: u32,
    listen_until: Instant,
    /// R-RUN-2: the hard deadline of the whole run.
    run_until: Instant,
    /// Repeated drops, hints and foreign datagrams, summarised.
    summary: Summary,
    accepted_at: Instant,
    next_progress_at: Instant,
    finish: Option<Finish>,
    security_refusal: Option<Reason>,
    /// The last unsigned hint not followed (R-ANN-2): reported as the
    /// outcome when the boot window ends without anything better (R-STAT-7).
    hint_refusal: Option<(Reason, ImageId)>,
    loss: Rng,
    stats: CoreStats,
    activator: Option<Activator>,
    activated: bool,
    /// The shell's own final report (R-STAT-2, R-STAT-7).
    post: Option<FinalReport>,
}

/// What [`write_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Erased and programmed (and read back).
    Flashed,
    /// The flash already held exactly these bytes: nothing was written.
    AlreadyThere,
}

/// Write one block, invalidating the header first on the first write of an
/// in-place run. While the resume scan has not reached the block yet
/// (`unscanned`), it is read first and not written again if the flash holds
/// it already (R-RES-2: a resumed block the stream brings before the scan
/// finds it costs a read, not an erase and a write). Free function so it can
/// borrow the writer while the block data still borrows the receiver.
fn write_block<F: Flash>(
    writer: &mut Option<ImageWriter<F>>,
    header_invalidated: &mut bool,
    in_place: bool,
    unscanned: bool,
    index: u32,
    data: &[u8],
) -> Result<Written, flasher::Error> {
    let Some(w) = writer.as_mut() else {
        return Err(flasher::Error::new(ErrorKind::NotFound, flasher::Op::Write)
            .with_detail("no target open"));
    };
    if unscanned
        && w.read_block_here(index)
            .is_ok_and(|block| flasher::same_bytes(block, data))
    {
        return Ok(Written::AlreadyThere);
    }
    if in_place && !*header_invalidated {
        w.invalidate_header()?;
        *header_invalidated = true;
        log::info!("in-place: old header invalidated; it is rewritten last");
    }
    crate::phase::mark(format_args!("program and read back block {index}"));
    let r = w.write_block(index, data).map(|()| Written::Flashed);
    crate::phase::mark(format_args!("block {index} on flash"));
    r
}

impl<F: Flash> Core<F> {
    /// A core listening for an announce; the boot window runs from `started`.
    pub fn new(
        s: CoreSettings,
        rx_config: ReceiverConfig,
        open: Opener<F>,
        clock: Clock,
        started: Instant,
    ) -> Self {
        let now = clock();
        let rx = Receiver::new(rx_config.clone(), now);
        let loss = Rng::new(s.rx_loss_seed);
        Core {
            listen_until: started + s.boot_window,
            run_until: started + s.run_deadline,
            summary: Summary::default(),
            s,
            rx_config,
            rx,
            open,
            clock,
            writer: None,
            spare_flash: None,
            manifest: None,
            header_invalidated: false,
            scan: None,
            prints: resume::Fingerprints::default(),
            write_rate: WriteRate::default(),
            verify_due: false,
            scan_found: 0,
            accepted_at: now,
            next_progress_at: now + PROGRESS_EVERY,
            finish: None,
            security_refusal: None,
            hint_refusal: None,
            loss,
            stats: CoreStats::default(),
            activator: None,
            activated: false,
            post: None,
        }
    }

    /// Activate with `a` once the image is written and verified.
    pub fn set_activator(&mut self, a: Activator) {
        self.activator = Some(a);
    }

    /// Whether the activator succeeded in this run.
    pub fn activated(&self) -> bool {
        self.activated
    }

    /// The receiver (for its state and counters).
    pub fn receiver(&self) -> &Receiver {
        &self.rx
    }

    /// The shell's counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The writer, once a target is open.
    pub fn writer_mut(&mut self) -> Option<&mut ImageWriter<F>> {
        self.writer.as_mut()
    }

    /// Feed one received datagram, then act on every event.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.s.rx_loss_permille > 0 && self.loss.below(1000) < u64::from(self.s.rx_loss_permille)
        {
            self.stats.test_dropped += 1;
            return;
        }
        if let Err(why) = self.rx.handle_datagram(now, from, bytes) {
            let len = bytes.len();
            self.summary
                .note(now, log::Level::Debug, "dropped datagrams", || {
                    format!("{len} bytes from {from}: {why}")
                });
        }
        self.process_events(now);
    }

    /// Fire the receiver's timers if due, then act on every event.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.rx.poll_timeout().is_some_and(|t| t <= now) {
            self.rx.handle_timeout(now);
            self.process_events(now);
        }
        if self.scan.is_some() {
            self.scan_step(now, 1, SCAN_BLOCKS_PER_TURN);
        }
        if std::mem::take(&mut self.verify_due) {
            self.on_verify();
            self.process_events(self.now());
        }
    }

    /// The next datagram to send: where, and `buf[..len]`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        loop {
            if matches!(self.finish, Some(Finish::AfterReport { .. })) {
                // R-FLEET-4: no progress report may follow the outcome.
                return self.poll_post_status(now, buf);
            }
            let Some(t) = self.rx.poll_transmit(now, buf) else {
                return self.poll_post_status(now, buf);
            };
            let mut len = t.len;
            if t.kind == FrameKind::Status {
                // R-STAT-4: the receiver's reports are signed like our own.
                let Some(signed) = confirm::sign(self.s.device_key.as_ref(), buf, len) else {
                    log::debug!("status report does not fit the buffer once signed");
                    continue;
                };
                len = signed;
            }
            let to = match t.dest {
                Dest::RepairServer => self.s.repair_server,
                Dest::Peer(a) => a,
                Dest::Group => {
                    log::debug!("receiver asked to send to the group; not used on a device");
                    continue;
                }
            };
            if let Some(Finish::AfterStatuses { left, .. }) = &mut self.finish {
                if t.dest == Dest::RepairServer && t.kind == FrameKind::Status {
                    *left = left.saturating_sub(1);
                }
            }
            self.stats.sent += 1;
            return Some((to, len));
        }
    }

    /// Our own Status reports (R-STAT-2, R-STAT-7), after activation once
    /// the receiver's final ones are out.
    fn poll_post_status(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let rx_done = self.rx.is_finished();
        let p = self.post.as_mut()?;
        let repair = self.s.repair_server;
        let to = p.poll(now, rx_done, repair, self.rx.proven_sender())?;
        let len = p.encode(
            self.s.device_id,
            &self.s.current_version,
            self.s.device_key.as_ref(),
            buf,
        )?;
        self.stats.sent += 1;
        Some((to, len))
    }

    fn post_pending(&self) -> bool {
        self.post.is_some_and(|p| p.pending())
    }

    /// R-STAT-7: report an outcome the shell decided, then exit with `code`.
    fn report_and_exit(
        &mut self,
        now: Instant,
        code: ExitCode,
        state: DeviceState,
        reason: Reason,
        image_id: Option<ImageId>,
    ) {
        let (session, current) = self.rx.status_stamp();
        let total = self.rx.manifest().map_or(0, Manifest::block_count);
        let blocks = (self.rx.blocks_done().min(total), total);
        let stamp = (session, image_id.unwrap_or(current));
        self.post = Some(FinalReport::new(now, state, reason, blocks, stamp, false));
        self.finish = Some(Finish::AfterReport {
            code,
            by: now + FINAL_STATUS_GRACE,
        });
    }

    /// R-RUN-1/2, R-STAT-7: log why the run ends unfinished, report
    /// `stalled` and exit 5; flash keeps what was written, the next run resumes.
    fn exit_stalled(&mut self, now: Instant, why: &str) {
        log::error!(
            "{why} ({}, {} of {} blocks on flash); exiting as stalled, the next run resumes",
            self.rx.state().as_str(),
            self.rx.blocks_done(),
            self.manifest.as_ref().map_or(0, Manifest::block_count),
        );
        log::debug!("receiver counters at stall: {:?}", self.rx.stats());
        self.report_and_exit(
            now,
            ExitCode::Stalled,
            DeviceState::Stalled,
            Reason::None,
            None,
        );
    }

    /// The earliest time something is due (timer, window end, stall, progress log).
    pub fn deadline(&self) -> Option<Instant> {
        let mut d = self.rx.poll_timeout();
        let mut add = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        match self.finish {
            Some(Finish::Now(_)) => return Some(Instant::ZERO),
            Some(
                Finish::WhenFinished { by, .. }
                | Finish::AfterStatuses { by, .. }
                | Finish::AfterReport { by, .. },
            ) => add(by),
            None => {}
        }
        if self.scan.is_some() || self.verify_due {
            // More of the resume scan, or the read-back, to do: come back at once.
            return Some(Instant::ZERO);
        }
        if let Some(t) = self.post.and_then(|p| p.due_at(self.rx.is_finished())) {
            add(t);
        }
        if let Some(t) = self.summary.next_at() {
            add(t);
        }
        if !matches!(self.rx.state(), DeviceState::Done | DeviceState::Failed) {
            add(self.run_until);
        }
        match self.rx.state() {
            DeviceState::Listening => add(self.listen_until),
            DeviceState::FetchingManifest | DeviceState::Receiving => {
                add(self.rx.last_progress_at() + self.s.stall_timeout);
                add(self.next_progress_at);
            }
            _ => {}
        }
        d
    }

    /// Whether the agent is waiting for the carousel (listening for an
    /// announce, fetching the manifest or receiving): silence on the data
    /// group then calls for a re-join ([`crate::rejoin`]).
    pub fn wants_data(&self) -> bool {
        self.finish.is_none()
            && matches!(
                self.rx.state(),
                DeviceState::Listening | DeviceState::FetchingManifest | DeviceState::Receiving
            )
    }

    /// Whether the process should exit now, and how. Also logs progress.
    pub fn exit_check(&mut self, now: Instant) -> Option<ExitCode> {
        match self.finish {
            Some(Finish::Now(code)) => return Some(code),
            Some(Finish::WhenFinished { code, by })
                if (self.rx.is_finished() && !self.post_pending()) || now >= by =>
            {
                return Some(code)
            }
            Some(Finish::AfterStatuses { code, left, by }) if left == 0 || now >= by => {
                return Some(code)
            }
            Some(Finish::AfterReport { code, by }) if !self.post_pending() || now >= by => {
                return Some(code)
            }
            Some(_) => return None,
            None => {}
        }
        self.summary.flush(now);
        let unfinished = !matches!(self.rx.state(), DeviceState::Done | DeviceState::Failed);
        if unfinished && now >= self.run_until {
            // R-RUN-2: whatever arrives, the boot goes on.
            let why = format!(
                "run deadline: not finished after {} s",
                self.s.run_deadline.as_secs()
            );
            self.exit_stalled(now, &why);
            return None;
        }
        match self.rx.state() {
            DeviceState::Listening if now >= self.listen_until => {
                let secs = self.s.boot_window.as_secs();
                let signed = self.rx.refusal().filter(|r| r.signed);
                let refused = signed.map(|r| (r.reason, r.image_id)).or(self.hint_refusal);
                let code = if let Some(r) = self.security_refusal {
                    log::error!(
                        "boot window over: only refused images were offered ({}); no update for board {} within {secs} s",
                        r.as_str(),
                        self.s.board
                    );
                    ExitCode::Refused
                } else {
                    log::info!("no update for board {} announced within {secs} s; exiting so the boot continues", self.s.board);
                    ExitCode::Ok
                };
                match refused {
                    // R-STAT-7: the refusal is this run's outcome.
                    Some((reason, image)) => {
                        self.report_and_exit(now, code, DeviceState::Refused, reason, Some(image));
                        None
                    }
                    None => Some(code),
                }
            }
            DeviceState::FetchingManifest | DeviceState::Receiving => {
                let stalled_at = self.rx.last_progress_at() + self.s.stall_timeout;
                if now >= stalled_at {
                    let why = format!(
                        "stalled: no progress for {} s",
                        self.s.stall_timeout.as_secs()
                    );
                    self.exit_stalled(now, &why);
                    return None;
                }
                if now >= self.next_progress_at {
                    self.log_progress();
                    self.next_progress_at = now + PROGRESS_EVERY;
                }
                None
            }
            _ => None,
        }
    }

    fn log_progress(&self) {
        let st = self.rx.stats();
        let total = self.manifest.as_ref().map_or(0, Manifest::block_count);
        let drops = st.dropped_decode
            + st.dropped_foreign
            + st.dropped_unexpected
            + st.dropped_out_of_manifest
            + st.chunks_no_slot
            + self.stats.test_dropped;
        log::info!(
            "progress: {} blocks {}/{}, chunks {} ({} repairs), NACKs {}, drops {}, digest failures {}",
            self.rx.state().as_str(),
            self.rx.blocks_done(),
            total,
            st.chunks_stored,
            st.repairs_stored,
            st.nacks_sent,
            drops,
            st.digest_failures
        );
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn process_events(&mut self, now: Instant) {
        let in_place = self.s.activation == Activation::InPlace;
        while let Some(ev) = self.rx.poll_event() {
            match ev {
                Event::ManifestAccepted => self.on_manifest_accepted(),
                Event::Refused(r) => {
                    let r: Refusal = r.clone();
                    self.on_refused(now, &r);
                }
                Event::WriteBlock { index, data } => {
                    let len = data.len();
                    let started = (self.clock)();
                    let unscanned = self.scan.as_ref().is_some_and(|sc| sc.position() <= index);
                    let r = write_block(
                        &mut self.writer,
                        &mut self.header_invalidated,
                        in_place,
                        unscanned,
                        index,
                        data,
                    );
                    if r.is_ok() {
                        // `data` passed its SHA-256 and is on flash now.
                        self.prints.record(index, data);
                    }
                    let flashed = matches!(r, Ok(Written::Flashed));
                    self.on_written(index, len, r);
                    if flashed {
                        // R-PACE-1: the time the write took, the test's
                        // slow-flash delay included.
                        let done = self.now();
                        let kbps = self.write_rate.record(len, done.saturating_since(started));
                        self.rx.set_write_rate(done, kbps);
                    }
                    if self.scan.is_some() {
                        // Keep the scan ahead of the writes when flash is
                        // slow and the loop turns seldom.
                        self.scan_step(now, SCAN_BLOCKS_PER_WRITE, SCAN_BLOCKS_PER_WRITE);
                    }
                }
                Event::VerifyImage => self.verify_due = true,
                Event::Done => self.on_done(),
                Event::Failed(reason) => {
                    log::error!(
                        "update failed: {} ({} of {} blocks on flash; the next run resumes)",
                        reason.as_str(),
                        self.rx.blocks_done(),
                        self.manifest.as_ref().map_or(0, Manifest::block_count)
                    );
                    let now = self.now();
                    self.finish = Some(Finish::WhenFinished {
                        code: ExitCode::Flash,
                        by: now + FINAL_STATUS_GRACE,
                    });
                }
                Event::Foreign { session, image_id } => {
                    self.summary.note(now, log::Level::Info, "foreign", || {
                        format!("ignoring datagrams of session {session:08x} image {image_id}")
                    });
                }
            }
            if matches!(self.finish, Some(Finish::Now(_))) {
                break;
            }
        }
    }

    fn on_manifest_accepted(&mut self) {
        let Some(m) = self.rx.manifest().cloned() else {
            return;
        };
        log::info!(
            "manifest accepted: image {} version {} for {}: {} bytes, {} blocks of {} bytes, chunks of {}",
            m.image_id,
            escape(&m.version, 64),
            escape(&m.board, 64),
            m.image_len,
            m.block_count(),
            m.block_size,
            m.chunk_size
        );
        if let Err(code) = crate::hooks::pre_install(&m.version) {
            self.finish = Some(Finish::Now(code));
            return;
        }
        let opened = match self.spare_flash.take() {
            Some(f) => Ok(f),
            None => (self.open)(),
        };
        let flash = match opened {
            Ok(f) => f,
            Err(e) => {
                log::error!("cannot open target {}: {e}", self.s.target);
                let now = self.now();
                let (state, reason) = (DeviceState::Failed, Reason::TargetOpen);
                self.report_and_exit(now, ExitCode::Flash, state, reason, None);
                return;
            }
        };
        let opts = WriterOptions {
            header_last: self.s.activation == Activation::InPlace,
            // A dry run writes nothing, so there is nothing to read back.
            verify: !self.s.dry_run,
        };
        let writer = match ImageWriter::new(flash, m.image_len, m.block_size, opts) {
            Ok(w) => w,
            Err(e) => {
                log::error!("target {} cannot take this image: {e}", self.s.target);
                let (state, reason) = if e.kind == ErrorKind::OutOfRange {
                    (DeviceState::Refused, Reason::TooLarge)
                } else {
                    (DeviceState::Failed, Reason::FlashError)
                };
                let now = self.now();
                self.report_and_exit(now, ExitCode::Flash, state, reason, None);
                return;
            }
        };
        if writer.bad_blocks_skipped() > 0 {
            log::info!(
                "target {}: {} bad eraseblocks skipped",
                self.s.target,
                writer.bad_blocks_skipped()
            );
        }
        self.scan_found = 0;
        self.stats.already_there = 0;
        self.scan = Some(resume::Scanner::new(
            &m,
            self.s.activation == Activation::InPlace,
        ));
        self.prints = resume::Fingerprints::new(&m);
        self.writer = Some(writer);
        self.manifest = Some(m);
        let now = self.now();
        self.accepted_at = now;
        self.next_progress_at = now + PROGRESS_EVERY;
        // R-RES-2: receive while the scan runs, a few blocks per turn.
        self.rx.handle_scan_done(now);
        self.scan_step(now, 1, SCAN_BLOCKS_PER_TURN);
    }

    /// Look at `min` to `max` more blocks of the resume scan (more than `min`
    /// only within [`SCAN_TURN_BUDGET`]) and report those
    /// already on flash; at the end, apply the in-place header rule and log
    /// the outcome.
    fn scan_step(&mut self, now: Instant, min: u32, max: u32) {
        let (Some(sc), Some(w), Some(m)) = (
            self.scan.as_mut(),
            self.writer.as_mut(),
            self.manifest.as_ref(),
        ) else {
            return;
        };
        let rx = &mut self.rx;
        let before = rx.stats().blocks_resumed;
        // Time-bounded: between two turns the sockets are read.
        let started = (self.clock)();
        let mut looked = 0;
        while !sc.is_done() && looked < max {
            sc.step(w, m, 1, &mut self.prints, |i| {
                rx.handle_block_present(now, i);
            });
            looked += 1;
            if looked >= min && (self.clock)().saturating_since(started) >= SCAN_TURN_BUDGET {
                break;
            }
        }
        self.scan_found += rx.stats().blocks_resumed - before;
        if !sc.is_done() {
            return;
        }
        let total = m.block_count();
        let mut note = String::new();
        let mut reported = self.scan_found;
        if sc.header_matches {
            // R-HDR-1: a matching header counts only if nothing was written
            // in this run (which invalidates it first) and every other block
            // is on flash; otherwise it is received again and written last.
            if !self.header_invalidated && self.rx.blocks_done() + 1 == total {
                self.rx.handle_block_present(now, 0);
                reported += 1;
            } else {
                note.push_str("; header block matches but is rewritten last");
            }
        }
        if sc.unreadable > 0 {
            note.push_str(&format!("; {} unreadable", sc.unreadable));
        }
        if self.stats.already_there > 0 {
            note.push_str(&format!(
                "; {} more were already there when received before the scan reached them",
                self.stats.already_there
            ));
        }
        log::info!("resume: {reported} of {total} blocks already on flash{note}");
        self.stats.resumed = reported + self.stats.already_there;
        self.scan = None;
        self.process_events(now);
    }

    fn on_refused(&mut self, now: Instant, r: &Refusal) {
        let detail = || {
            format!(
                "image {}: {} ({}): board \"{}\" version \"{}\"; this device: board {} version {}",
                r.image_id,
                r.reason.as_str(),
                r.detail,
                escape(&r.board, 64),
                escape(&r.version, 32),
                self.s.board,
                self.s.current_version
            )
        };
        if !r.signed {
            // R-ANN-2: unsigned input only hints; a forger sets the rate.
            self.hint_refusal = Some((r.reason, r.image_id));
            let line = detail();
            self.summary.note(
                now,
                log::Level::Info,
                "not following unsigned input",
                || line,
            );
            return;
        }
        log::warn!("refused {}", detail());
        match r.reason {
            Reason::NotNewer
                if self.s.exit_when_current
                    && proto::version::compare(&r.version, &self.s.current_version)
                        == std::cmp::Ordering::Equal =>
            {
                log::info!(
                    "version {} is current (signed manifest); nothing to do",
                    self.s.current_version
                );
                self.finish = Some(Finish::AfterStatuses {
                    code: ExitCode::Ok,
                    left: REFUSAL_STATUSES,
                    by: now + FINAL_STATUS_GRACE,
                });
            }
            Reason::NotNewer => {
                // R-ANN-2: an older signed image is a replay or a stale
                // sender; a newer one may still come within the boot window.
                log::info!("signed image not newer than the running version: listening on");
            }
            Reason::BadSignature | Reason::ManifestMismatch => {
                self.security_refusal = Some(r.reason)
            }
            _ => {}
        }
    }

    fn on_written(&mut self, index: u32, len: usize, r: Result<Written, flasher::Error>) {
        let now = self.now();
        match r {
            Ok(Written::AlreadyThere) => {
                self.stats.already_there += 1;
                log::debug!("block {index} already on flash ({len} bytes); not rewritten");
                self.rx.handle_flash_done(now, index, Ok(()));
            }
            Ok(Written::Flashed) => {
                self.stats.blocks_written += 1;
                self.stats.bytes_written += len as u64;
                log::debug!("block {index} written ({len} bytes)");
                self.rx.handle_flash_done(now, index, Ok(()));
                if !self.s.block_delay.is_zero() {
                    std::thread::sleep(self.s.block_delay);
                }
            }
            Err(e) if e.kind == ErrorKind::NewBadBlock => {
                log::warn!(
                    "flash: {e}; the eraseblock was marked bad and later blocks moved: rescanning"
                );
                self.restart(now);
            }
            Err(e) => {
                log::error!("flash: writing block {index} failed: {e}");
                let failure = match e.kind {
                    ErrorKind::VerifyMismatch => FlashFailure::ReadBack,
                    ErrorKind::NoSpareBlocks => FlashFailure::NoSpace,
                    _ => FlashFailure::Write,
                };
                self.rx.handle_flash_done(now, index, Err(failure));
            }
        }
    }

    /// After a new bad block every later logical block moved: start over with
    /// a fresh receiver, which fetches the manifest again and rescans.
    fn restart(&mut self, now: Instant) {
        self.stats.restarts += 1;
        if self.stats.restarts > MAX_RESTARTS {
            log::error!(
                "flash: {} new bad blocks in one run; giving up (exit 4)",
                self.stats.restarts
            );
            let (state, reason) = (DeviceState::Failed, Reason::FlashError);
            self.report_and_exit(now, ExitCode::Flash, state, reason, None);
            return;
        }
        // Keep the target open; the next manifest builds a new writer (and map) on it.
        self.spare_flash = self.writer.take().map(ImageWriter::into_inner);
        self.manifest = None;
        self.header_invalidated = false;
        self.scan = None;
        self.verify_due = false;
        let mut cfg = self.rx_config.clone();
        cfg.rng_seed = cfg.rng_seed.wrapping_add(u64::from(self.stats.restarts));
        self.rx = Receiver::new(cfg, now);
        // Not a boot any more: wait for the next announce as long as a stall would.
        self.listen_until = now + self.s.boot_window.max(self.s.stall_timeout);
    }

    fn on_verify(&mut self) {
        let (Some(w), Some(m)) = (self.writer.as_mut(), self.manifest.as_ref()) else {
            log::error!("verify requested with no target open");
            self.finish = Some(Finish::Now(ExitCode::Flash));
            return;
        };
        let bad = if self.s.dry_run {
            log::info!(
                "dry run: {} blocks passed their SHA-256 check and would have been written to {}; read-back skipped",
                m.block_count(),
                self.s.target
            );
            Vec::new()
        } else {
            let which = self.s.final_read_back;
            log::info!(
                "verify: all {} blocks on flash; reading back {} (final_read_back = \"{}\")",
                m.block_count(),
                match which {
                    resume::FinalReadBack::Stale => "those not read back since their last write",
                    resume::FinalReadBack::All => "every block",
                },
                which.as_str()
            );
            crate::phase::mark(format_args!("final read-back"));
            let v = resume::verify(w, m, &self.prints, which);
            if v.bad.is_empty() {
                log::info!(
                    "verify: all {} blocks read back correctly ({} read now, {} since their last write)",
                    m.block_count(),
                    v.read,
                    m.block_count() - v.read
                );
            }
            v.bad
        };
        if !bad.is_empty() {
            let list: Vec<String> = bad.iter().take(16).map(u32::to_string).collect();
            log::warn!(
                "verify: {} blocks differ on read-back ({}); receiving them again",
                bad.len(),
                list.join(" ")
            );
        }
        let now = self.now();
        self.rx.handle_verify_done(now, &bad);
    }

    fn on_done(&mut self) {
        let now = self.now();
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flash_mut().sync() {
                log::error!("flash: sync failed: {e}");
                let (state, reason) = (DeviceState::Failed, Reason::FlashError);
                self.report_and_exit(now, ExitCode::Flash, state, reason, None);
                return;
            }
        }
        let (version, blocks) = self.manifest.as_ref().map_or((String::new(), 0), |m| {
            (m.version.to_string(), m.block_count())
        });
        let ms = now.saturating_since(self.accepted_at).as_millis().max(1) as u64;
        let kib_s = self.stats.bytes_written * 1000 / ms / 1024;
        log::info!(
            "update complete: version {version}, {blocks} blocks ({} resumed), {} bytes in {ms} ms, {kib_s} KiB/s",
            self.stats.resumed,
            self.stats.bytes_written
        );
        let st = self.rx.stats();
        log::info!(
            "receive counters: datagrams {}, chunks {} ({} repairs, {} parity, {} blocks decoded), duplicates {}, no-slot drops {}, evictions {}, NACKs {} ({} chunks, {} held back), passes seen {}, digest failures {}, forged chunks dropped {}",
            st.datagrams,
            st.chunks_stored,
            st.repairs_stored,
            st.parity_stored,
            st.blocks_decoded,
            st.chunks_duplicate,
            st.chunks_no_slot,
            st.evictions,
            st.nacks_sent,
            st.chunks_nacked,
            st.nacks_suppressed,
            st.passes_seen,
            st.digest_failures,
            st.chunks_forged
        );
        let mut code = ExitCode::Updated;
        if let Some(act) = self.activator.as_mut() {
            let info = self.manifest.as_ref().map(|m| ImageInfo {
                version: m.version.to_string(),
                min_version: m.min_version.to_string(),
                image_len: m.image_len,
                image_id: m.image_id,
                target: self.s.target.clone(),
            });
            let result = match &info {
                Some(info) => act(info),
                None => Err("no manifest".to_string()),
            };
            let (state, reason) = match result {
                Ok(line) => {
                    log::info!("{line}");
                    self.activated = !self.s.dry_run;
                    (DeviceState::Activated, Reason::None)
                }
                Err(why) => {
                    log::error!(
                        "activation ({}) failed: {why}; the image is on {} but the old one still boots",
                        self.s.activation.as_str(),
                        self.s.target
                    );
                    code = ExitCode::Activation;
                    (DeviceState::Failed, Reason::ActivationFailed)
                }
            };
            if !self.s.dry_run {
                // R-STAT-2: after the receiver's `done`, same session and image.
                let stamp = self.rx.status_stamp();
                let total = self.rx.manifest().map_or(0, Manifest::block_count);
                let blocks = (total, total);
                self.post = Some(FinalReport::new(now, state, reason, blocks, stamp, true));
            }
        }
        self.finish = Some(Finish::WhenFinished {
            code,
            by: now + FINAL_STATUS_GRACE,
        });
    }
}

/// 8 bytes from /dev/urandom, or the time if that fails.
pub fn os_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn poll_ms(now: Instant, deadline: Option<Instant>) -> u16 {
    // Round up so a deadline 0.4 ms away does not spin; wake at least once a second.
    let ms = deadline.map_or(1000, |d| d.saturating_since(now).as_micros().div_ceil(1000));
    ms.min(1000) as u16
}

/// SIGTERM and SIGINT as a readable fd (no handler, no unsafe).
fn signal_fd() -> Option<SignalFd> {
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
fn sleep_or_signal(sfd: Option<&SignalFd>, ms: u16) -> Option<ExitCode> {
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

/// Where to write and how to activate, decided before listening.
struct Prepared {
    target: String,
    activator: Option<Activator>,
    /// The anti-rollback floor in effect (R-ROLL-2).
    floor: String,
}

/// `ab-uboot`: read the environment, refuse while an update waits for its
/// confirmation, write the inactive slot. `command`: the configured target.
fn prepare(cfg: &Config, dry_run: bool) -> Result<Prepared, ExitCode> {
    match cfg.activation {
        Activation::AbUboot => {
            let Some(ab) = cfg.ab.clone().filter(|_| Feature::AbUboot.enabled()) else {
                return Err(ExitCode::Usage);
            };
            let endian = ab.env_endian.resolve();
            let env_cfg = std::fs::read_to_string(&ab.env_config)
                .map_err(|e| format!("cannot read {}: {e}", ab.env_config.display()))
                .and_then(|text| {
                    flasher::uboot_env::parse_fw_env_config(
                        &ab.env_config.display().to_string(),
                        &text,
                    )
                    .map_err(|e| e.to_string())
                });
            let env_cfg = match env_cfg {
                Ok(c) => c,
                Err(why) => {
                    log::error!("ab-uboot: U-Boot environment: {why}; not updating");
                    return Err(ExitCode::Activation);
                }
            };
            if let Err(e) = activate::check_env_copies(&cfg.path, &ab, &env_cfg) {
                log::error!("{e}");
                return Err(ExitCode::Usage);
            }
            let env = match flasher::uboot_env::open_config(&env_cfg, endian) {
                Ok(e) if e.is_valid() => e,
                Ok(_) => {
                    log::error!(
                        "ab-uboot: no valid U-Boot environment at {} (both copies fail their CRC); not updating",
                        ab.env_config.display()
                    );
                    return Err(ExitCode::Activation);
                }
                Err(e) => {
                    log::error!("ab-uboot: U-Boot environment: {e}; not updating");
                    return Err(ExitCode::Activation);
                }
            };
            let active = activate::active_slot(&env, &ab).map_err(|why| {
                log::error!("ab-uboot: {why}; not updating");
                ExitCode::Activation
            })?;
            if activate::pending_confirmation(&env, &ab) {
                log::warn!(
                    "ab-uboot: {}=1: the running slot {} is not confirmed yet and slot {} is its fallback; not updating until `firmcast-agent confirm` succeeds",
                    ab.upgrade_available_var,
                    active.name(),
                    active.other().name()
                );
                return Err(ExitCode::Ok);
            }
            let new = active.other();
            log::info!(
                "ab-uboot: running slot {} ({}={}); an update goes to slot {} ({})",
                active.name(),
                ab.slot_var,
                active.value(&ab),
                new.name(),
                new.target(&ab)
            );
            let target = new.target(&ab).to_string();
            // The devices stay open: after the privilege drop (R-LOCAL-3)
            // they could not be opened again.
            let mut env = env;
            let floor = env.get(floor::ENV_VAR).unwrap_or("").to_string();
            let activator: Activator = Box::new(move |info: &ImageInfo| {
                // Read the environment again: it must still name the slot we
                // started from, or someone else switched meanwhile.
                env.reload().map_err(|e| e.to_string())?;
                match activate::active_slot(&env, &ab) {
                    Ok(s) if s == active => {}
                    Ok(s) => {
                        return Err(format!(
                            "the environment switched to slot {} while updating; not flipping",
                            s.name()
                        ))
                    }
                    Err(why) => return Err(why),
                }
                activate::activate_ab(&mut env, &ab, new, &info.min_version, dry_run)
                    .map_err(|e| e.to_string())
            });
            Ok(Prepared {
                target,
                activator: Some(activator),
                floor,
            })
        }
        Activation::Command => {
            let Some(c) = cfg.command.clone().filter(|_| Feature::Command.enabled()) else {
                return Err(ExitCode::Usage);
            };
            let activator: Activator = Box::new(move |info: &ImageInfo| {
                let path = image_path(&info.target);
                let argv = activate::expand(&c.argv, &path, info.image_len, &info.version);
                if dry_run {
                    return Ok(format!(
                        "dry run: would run {argv:?} (timeout {} s)",
                        c.timeout.as_secs()
                    ));
                }
                trim_file_target(&info.target, info.image_len)?;
                let env = [
                    ("FIRMCAST_IMAGE", path.clone()),
                    ("FIRMCAST_IMAGE_SIZE", info.image_len.to_string()),
                    ("FIRMCAST_VERSION", info.version.clone()),
                    ("FIRMCAST_TARGET", info.target.clone()),
                ];
                log::info!(
                    "command: running {argv:?} (timeout {} s)",
                    c.timeout.as_secs()
                );
                let r = activate::run_command(&argv, &env, c.timeout);
                if r.success() {
                    Ok(format!(
                        "command {argv:?}: {r}; version {} activated",
                        info.version
                    ))
                } else {
                    Err(format!("command {argv:?}: {r}"))
                }
            });
            Ok(Prepared {
                target: cfg.target.clone(),
                activator: Some(activator),
                floor: String::new(),
            })
        }
        Activation::InPlace | Activation::None => Ok(Prepared {
            target: cfg.target.clone(),
            activator: None,
            floor: String::new(),
        }),
    }
}

/// The file or device path behind a target spec (for the command's `{image}`).
fn image_path(target: &str) -> String {
    match flasher::TargetSpec::parse(target) {
        Some(flasher::TargetSpec::MtdName(name)) => flasher::find_partition(name)
            .map_or_else(|_| target.to_string(), |p| p.display().to_string()),
        Some(spec) => spec
            .path()
            .map_or_else(String::new, |p| p.display().to_string()),
        None => target.to_string(),
    }
}

/// A `file:` target that is a regular file is cut to the image length, so
/// the command sees exactly the verified image.
fn trim_file_target(target: &str, len: u64) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(flasher::TargetSpec::File(path)) = flasher::TargetSpec::parse(target) else {
        return Ok(());
    };
    // Not through a link (R-LOCAL-2), like the target itself.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() > len => std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| f.set_len(len))
            .map_err(|e| format!("truncating {} to the image length: {e}", path.display())),
        _ => Ok(()),
    }
}

/// Run the agent with `cfg` until it exits (`dry_run`: write nothing).
pub fn run(cfg: &Config, dry_run: bool) -> ExitCode {
    if cfg.confirm.at_startup {
        let code = confirm::run(cfg, dry_run);
        if code == ExitCode::Usage {
            return code;
        }
    }
    let mut prepared = match prepare(cfg, dry_run) {
        Ok(p) => p,
        Err(code) => return crate::hooks::finish(code),
    };
    // R-ROLL-2: the floor file is opened now, before root is dropped.
    let mut floor_file = match cfg.floor_file.as_deref().map(floor::FloorFile::open) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(why)) => {
            log::error!("{why}; not updating");
            return ExitCode::Usage;
        }
    };
    if let Some(f) = &floor_file {
        prepared.floor = floor::newest(&prepared.floor, f.floor()).to_string();
    }
    if !prepared.floor.is_empty() {
        log::info!(
            "anti-rollback floor {}: images older than it are refused",
            prepared.floor
        );
    }
    let mut activated = false;
    let mut done_floor = String::new();
    let code = run_update(cfg, dry_run, prepared, &mut activated, &mut done_floor);
    if let (Some(f), false, ExitCode::Updated) = (floor_file.as_mut(), dry_run, code) {
        match f.raise(&done_floor) {
            Ok(true) => log::info!("anti-rollback floor raised to {done_floor}"),
            Ok(false) => {}
            Err(why) => log::warn!("{why}; the floor stays {}", f.floor()),
        }
    }
    let code = crate::hooks::finish(code);
    if code == ExitCode::Updated
        && !cfg.reboot_command.is_empty()
        && (activated
            || dry_run
            || matches!(cfg.activation, Activation::InPlace | Activation::None))
    {
        if dry_run {
            log::info!("dry run: would reboot with {:?}", cfg.reboot_command);
        } else {
            log::info!("rebooting into the new image: {:?}", cfg.reboot_command);
            let r = activate::run_command(&cfg.reboot_command, &[], Duration::from_secs(60));
            if !r.success() {
                log::error!("reboot command {:?}: {r}", cfg.reboot_command);
            }
        }
    }
    code
}

/// R-LOCAL-3: as root, open the target now and become `cfg.user`, unless
/// the activation needs root or the target cannot be opened yet (then root
/// is kept for this run, and the log says why once). Returns the open target.
fn drop_root(cfg: &Config, target: &str) -> Result<Option<Box<dyn Flash + Send>>, ExitCode> {
    if !crate::perms::running_as_root() {
        return Ok(None);
    }
    let user = match crate::privdrop::plan_for(cfg) {
        crate::privdrop::Plan::Drop(user) => user,
        crate::privdrop::Plan::KeepRoot(why) => {
            log::info!("running as root for the whole run: {why}");
            return Ok(None);
        }
    };
    let flash = match flasher::open_target(target, cfg.target_size) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("keeping root: the target must be open before dropping it, and opening it failed ({e}); it is opened again when an update comes");
            return Ok(None);
        }
    };
    match crate::privdrop::drop_to(&user) {
        Ok((uid, gid)) => {
            log::info!("dropped root: running as {user} (uid {uid}, gid {gid}) with the sockets, the target and the environment open");
            Ok(Some(flash))
        }
        Err(why) => {
            // A half-done drop (groups gone, uid not) is not worth keeping
            // going with: the operator asked for an unprivileged agent.
            log::error!("dropping root to {user}: {why}; not updating");
            Err(ExitCode::Usage)
        }
    }
}

/// The receive loop; `activated` tells the caller a reboot is due.
/// `done_floor` receives the signed floor of an image this run wrote and
/// activated (R-ROLL-2).
fn run_update(
    cfg: &Config,
    dry_run: bool,
    prepared: Prepared,
    activated: &mut bool,
    done_floor: &mut String,
) -> ExitCode {
    let origin = std::time::Instant::now();
    let clock = move || {
        Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    };
    let sfd = signal_fd();
    log::info!(
        "firmcast-agent {} starting: board {} version {}, target {}, group {} / repair {} on {}, repair server {}, device id {:016x}, boot window {} s",
        env!("CARGO_PKG_VERSION"),
        cfg.board,
        cfg.current_version,
        cfg.target,
        cfg.group,
        cfg.repair_group,
        cfg.interface,
        cfg.repair_server,
        cfg.device_id,
        cfg.boot_window.as_secs()
    );

    // At boot the interface may not be up yet: retry, bounded by the boot window.
    let join_until = clock() + cfg.boot_window;
    let mut waiting = false;
    let groups = net::Groups::of(cfg);
    let sockets = loop {
        match net::open(&groups, cfg.rcvbuf_bytes) {
            Ok(s) => break s,
            Err(net::OpenError::Interface(why)) => {
                if clock() >= join_until {
                    log::info!(
                        "interface {} did not come up within {} s ({why}); no update this boot",
                        cfg.interface,
                        cfg.boot_window.as_secs()
                    );
                    return ExitCode::Ok;
                }
                if !waiting {
                    log::info!(
                        "waiting for interface address {} ({why}); retrying every 200 ms",
                        cfg.interface
                    );
                    waiting = true;
                }
                if let Some(code) = sleep_or_signal(sfd.as_ref(), 200) {
                    return code;
                }
            }
            Err(net::OpenError::Fatal(why)) => {
                log::error!("sockets: {why}");
                return ExitCode::Usage;
            }
        }
    };
    if sockets.rcvbuf_effective < cfg.rcvbuf_bytes {
        log::warn!(
            "SO_RCVBUF: asked for {} bytes, the kernel granted {} (raise net.core.rmem_max)",
            cfg.rcvbuf_bytes,
            sockets.rcvbuf_effective
        );
    }
    log::info!(
        "joined {groups} on {}; listening (unicast {})",
        cfg.interface,
        sockets
            .unicast
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );

    let target = prepared.target.clone();
    let size = cfg.target_size;
    let mut opened = match drop_root(cfg, &target) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let opener: Opener<Box<dyn Flash + Send>> = Box::new(move || {
        let f = match opened.take() {
            Some(f) => f,
            None => flasher::open_target(&target, size)?,
        };
        Ok(if dry_run {
            Box::new(DryRunFlash::new(f))
        } else {
            f
        })
    });
    let mut rxc = receiver_config(cfg, os_seed() ^ cfg.device_id);
    rxc.min_version = prepared.floor;
    let mut settings = CoreSettings::from_config(cfg);
    settings.target = prepared.target;
    settings.dry_run = dry_run;
    let mut core = Core::new(settings, rxc, opener, Box::new(clock), Instant::ZERO);
    if let Some(a) = prepared.activator {
        core.set_activator(a);
    }
    let mut inbuf = vec![0u8; MAX_DATAGRAM];
    let mut outbuf = vec![0u8; MAX_DATAGRAM];
    let mut send_errors = 0u64;
    let mut unicast_dropped = 0u64;

    let flush = |core: &mut Core<_>, out: &mut [u8], errors: &mut u64| {
        let now = clock();
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
    loop {
        let now = clock();
        core.handle_timeout(now);
        flush(&mut core, &mut outbuf, &mut send_errors);
        crate::state_file::observe(core.receiver());
        if core.wants_data() {
            if let Some(silent) = watchdog.poll(now) {
                match sockets.rejoin(&groups) {
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
            *activated = core.activated();
            if code == ExitCode::Updated && core.receiver().state() == DeviceState::Done {
                if let Some(m) = core.receiver().manifest() {
                    *done_floor = m.min_version.to_string();
                }
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
                    sfd.as_ref()
                        .map_or(sockets.unicast.as_fd(), |fd| fd.as_fd()),
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
            if let Some(code) = check_signal(sfd.as_ref()) {
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
                        if i == 0 {
                            watchdog.heard(clock());
                            data_heard += 1;
                        }
                        core.handle_datagram(clock(), from, &inbuf[..n]);
                        crate::state_file::observe(core.receiver());
                        flush(&mut core, &mut outbuf, &mut send_errors);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("recv: {e}");
                        break;
                    }
                }
            }
        }
        // A stream of datagrams would wake us once per datagram; a short nap
        // after a thin wakeup lets the socket buffer collect a batch instead
        // (the kernel buffer holds far more than COALESCE of traffic). Never
        // past a protocol deadline: NACK timing is unchanged to within COALESCE.
        if (1..COALESCE_BELOW).contains(&received) {
            let now = clock();
            if core.deadline().is_none_or(|d| d >= now + COALESCE * 2) {
                std::thread::sleep(COALESCE);
            }
        }
    }
}

#[cfg(test)]
mod tests;

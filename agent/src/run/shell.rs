//! The device shell [`Core`]: the network-free part of the agent around
//! [`proto::receiver::Receiver`]. It takes datagrams and timeouts in, each
//! with the `now` the event loop read, writes flash (`flash.rs`: the
//! writer, the resume scan, the read-back), activates, hands out the
//! datagrams to send and decides when and how the process exits. Tests
//! drive it with a fake clock and an in-process sender.

use std::net::SocketAddr;
use std::time::Duration;

use flasher::{Flash, ImageWriter};
use proto::manifest::Manifest;
use proto::receiver::{Event, Receiver, ReceiverConfig, Refusal};
use proto::rng::Rng;
use proto::wire::{DeviceState, FrameKind, ImageId, Reason};
use proto::{Dest, Instant};

use super::activation::{Activator, ImageInfo};
use super::settings::CoreSettings;
use crate::activate::ActivationError;
use crate::config::Activation;
use crate::exit::ExitCode;
use crate::outcome::FinalReport;
use crate::quiet::{escape, Summary};
use crate::write_rate::WriteRate;
use crate::{confirm, resume};

mod flash;

pub(crate) use flash::{write_block, Written};
use flash::{SCAN_BLOCKS_PER_TURN, SCAN_BLOCKS_PER_WRITE};

/// Opens the flash target (the real one calls `flasher::open_target`).
pub type Opener<F> = Box<dyn FnMut() -> Result<F, flasher::Error>>;
/// Times the shell's own flash work: how long a block write took
/// (R-PACE-1) and the resume scan's turn budget. It never stamps an input:
/// every handler is given `now` by the event loop, and the final read-back,
/// which takes real time, hands its result over on the next turn.
pub type Stopwatch = Box<dyn Fn() -> Instant>;

/// How often the progress line is logged while receiving.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long final Status reports may take before the process exits anyway.
const FINAL_STATUS_GRACE: Duration = Duration::from_secs(2);
/// Final Status reports the receiver sends after a refusal.
const REFUSAL_STATUSES: u32 = 3;

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
    /// Eraseblocks erased by the writers of earlier restarts.
    pub erases_before_restart: u64,
}

/// The network-free part of the agent. See the module docs.
pub struct Core<F: Flash> {
    s: CoreSettings,
    rx_config: ReceiverConfig,
    rx: Receiver,
    open: Opener<F>,
    stopwatch: Stopwatch,
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
    /// The blocks the final read-back found bad, for the receiver on the
    /// next turn (with that turn's `now`).
    verified: Option<Vec<u32>>,
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

impl<F: Flash> Core<F> {
    /// A core listening for an announce at `now`; the boot window runs
    /// from `started`.
    pub fn new(
        s: CoreSettings,
        rx_config: ReceiverConfig,
        open: Opener<F>,
        stopwatch: Stopwatch,
        started: Instant,
        now: Instant,
    ) -> Self {
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
            stopwatch,
            writer: None,
            spare_flash: None,
            manifest: None,
            header_invalidated: false,
            scan: None,
            prints: resume::Fingerprints::default(),
            write_rate: WriteRate::default(),
            verify_due: false,
            verified: None,
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
        self.finish_verify(now);
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
        self.finish_verify(now);
        if self.rx.poll_timeout().is_some_and(|t| t <= now) {
            self.rx.handle_timeout(now);
            self.process_events(now);
        }
        if self.scan.is_some() {
            self.scan_step(now, 1, SCAN_BLOCKS_PER_TURN);
        }
        if std::mem::take(&mut self.verify_due) {
            self.read_back();
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
        self.log_receive_counters();
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
        if self.scan.is_some() || self.verify_due || self.verified.is_some() {
            // More of the resume scan, the read-back or its result to
            // hand over: come back at once.
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

    /// The receiver's counters, one line an operator can grep for
    /// ("receive counters"), at the end of a run: updated or stalled.
    fn log_receive_counters(&self) {
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

    fn process_events(&mut self, now: Instant) {
        let in_place = self.s.activation == Activation::InPlace;
        while let Some(ev) = self.rx.poll_event() {
            match ev {
                Event::ManifestAccepted => self.on_manifest_accepted(now),
                Event::Refused(r) => {
                    let r: Refusal = r.clone();
                    self.on_refused(now, &r);
                }
                Event::WriteBlock { index, data } => {
                    let len = data.len();
                    let started = (self.stopwatch)();
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
                    self.on_written(now, index, len, r);
                    if flashed {
                        // R-PACE-1: the time the write took, the test's
                        // slow-flash delay included.
                        let took = (self.stopwatch)().saturating_since(started);
                        let kbps = self.write_rate.record(len, took);
                        self.rx.set_write_rate(now, kbps);
                    }
                    if self.scan.is_some() {
                        // Keep the scan ahead of the writes when flash is
                        // slow and the loop turns seldom.
                        self.scan_step(now, SCAN_BLOCKS_PER_WRITE, SCAN_BLOCKS_PER_WRITE);
                    }
                }
                Event::VerifyImage => self.verify_due = true,
                Event::Done => self.on_done(now),
                Event::Failed(reason) => {
                    log::error!(
                        "update failed: {} ({} of {} blocks on flash; the next run resumes)",
                        reason.as_str(),
                        self.rx.blocks_done(),
                        self.manifest.as_ref().map_or(0, Manifest::block_count)
                    );
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

    fn on_done(&mut self, now: Instant) {
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
        let erases =
            self.stats.erases_before_restart + self.writer.as_ref().map_or(0, ImageWriter::erases);
        log::info!(
            "update complete: version {version}, {blocks} blocks ({} resumed), {} bytes in {ms} ms, {kib_s} KiB/s, {erases} eraseblocks erased",
            self.stats.resumed,
            self.stats.bytes_written
        );
        self.log_receive_counters();
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
                None => Err(ActivationError::NoManifest),
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

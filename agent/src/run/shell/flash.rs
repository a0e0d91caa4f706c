//! The shell's flash work: opening the target and building the writer when
//! a manifest is accepted, the resume scan beside receiving (R-RES-2), one
//! block's write, a restart after a new bad block, and the final read-back.

use std::time::Duration;

use flasher::{ErrorKind, Flash, ImageWriter, WriterOptions};
use proto::receiver::{FlashFailure, Receiver};
use proto::wire::{DeviceState, Reason};
use proto::Instant;

use super::{Core, Finish, PROGRESS_EVERY};
use crate::config::Activation;
use crate::exit::ExitCode;
use crate::quiet::escape;
use crate::resume;

/// Restarts after a new bad block before giving up.
const MAX_RESTARTS: u32 = 3;
/// Blocks of the resume scan per turn of the loop (R-RES-2): between two
/// turns the sockets are read, so the scan never holds the data up for
/// longer than reading this many blocks takes.
pub(super) const SCAN_BLOCKS_PER_TURN: u32 = 64;
/// Blocks of the resume scan looked at after each block written, whatever
/// the time: the scan then outpaces the writes even on slow flash.
pub(super) const SCAN_BLOCKS_PER_WRITE: u32 = 4;
/// Longest a turn of the resume scan may take (after its first block); the socket buffer holds far
/// more than this of the stream.
const SCAN_TURN_BUDGET: Duration = Duration::from_millis(10);

/// What [`write_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
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
pub(crate) fn write_block<F: Flash>(
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
    if unscanned && holds(w, index, data) {
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

/// Whether block `index` on flash reads exactly `data` (an unreadable block
/// does not).
fn holds<F: Flash>(w: &mut ImageWriter<F>, index: u32, data: &[u8]) -> bool {
    let (mut same, mut at) = (true, 0);
    let read = w.read_block_pieces(index, |piece| {
        let want = data.get(at..at + piece.len());
        same = same && want.is_some_and(|want| flasher::same_bytes(piece, want));
        at += piece.len();
    });
    read.is_ok_and(|len| same && len == data.len())
}

impl<F: Flash> Core<F> {
    pub(super) fn on_manifest_accepted(&mut self, now: Instant) {
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
        if let Some(es) = writer.shared_eraseblock_size() {
            log::warn!(
                "target {}: image blocks of {} bytes share its {es}-byte eraseblocks: a block kept while a neighbour is written (already on flash, or not yet scanned) costs its eraseblock one more erase and {es} bytes of RAM; sign images for it with `firmcast manifest --block-size {es}`",
                self.s.target,
                m.block_size
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
    pub(super) fn scan_step(&mut self, now: Instant, min: u32, max: u32) {
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
        let started = (self.stopwatch)();
        let mut looked = 0;
        while !sc.is_done() && looked < max {
            sc.step(w, m, 1, &mut self.prints, |i| {
                rx.handle_block_present(now, i);
            });
            looked += 1;
            if looked >= min && (self.stopwatch)().saturating_since(started) >= SCAN_TURN_BUDGET {
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

    pub(super) fn on_written(
        &mut self,
        now: Instant,
        index: u32,
        len: usize,
        r: Result<Written, flasher::Error>,
    ) {
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
        self.stats.erases_before_restart += self.writer.as_ref().map_or(0, ImageWriter::erases);
        self.spare_flash = self.writer.take().map(ImageWriter::into_inner);
        self.manifest = None;
        self.header_invalidated = false;
        self.scan = None;
        self.verify_due = false;
        self.verified = None;
        let mut cfg = self.rx_config.clone();
        cfg.rng_seed = cfg.rng_seed.wrapping_add(u64::from(self.stats.restarts));
        self.rx = Receiver::new(cfg, now);
        // Not a boot any more: wait for the next announce as long as a stall would.
        self.listen_until = now + self.s.boot_window.max(self.s.stall_timeout);
    }

    /// The final read-back (R-VER-2); its result reaches the receiver on
    /// the next turn ([`Core::finish_verify`]), stamped with that turn's
    /// `now` rather than a time from before the read-back.
    pub(super) fn read_back(&mut self) {
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
        self.verified = Some(bad);
    }

    /// Hands the read-back's result, if one waits, to the receiver at `now`.
    pub(super) fn finish_verify(&mut self, now: Instant) {
        if let Some(bad) = self.verified.take() {
            self.rx.handle_verify_done(now, &bad);
            self.process_events(now);
        }
    }
}

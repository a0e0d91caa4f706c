//! Announces and the manifest fetch: which announced image to fetch
//! (R-ANN-1..3), assembling and verifying its manifest (R-MAN-3), and the
//! refusals and hints that come out of it (R-ANN-2).

use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::window::{set_bit, Transfer};
use super::window_budget::window_slots;
use super::{truncate, Phase, Queued, Receiver, Refusal, MAX_CANDIDATES};
use crate::manifest::Manifest;
use crate::time::Instant;
use crate::transmit::DropReason;
use crate::version;
use crate::wire::{
    Announce, Header, ImageId, ManifestChunk, Reason, MAX_BOARD_LEN, MAX_VERSION_LEN,
};

/// An announced image that passed the hint checks (R-ANN-3): what its
/// Announce said, unsigned.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) session: u32,
    pub(super) image_id: ImageId,
    pub(super) from: SocketAddr,
    pub(super) chunk_size: u32,
    pub(super) manifest_len: u32,
    pub(super) board: heapless::String<MAX_BOARD_LEN>,
    pub(super) version: heapless::String<MAX_VERSION_LEN>,
    pub(super) image_len: u64,
    pub(super) block_size: u32,
}

pub(super) struct ManifestFetch {
    pub(super) session: u32,
    pub(super) image_id: ImageId,
    pub(super) chunk_size: u32,
    pub(super) buf: Vec<u8>,
    pub(super) have: Vec<u64>,
    pub(super) missing: u32,
    pub(super) board: heapless::String<MAX_BOARD_LEN>,
    pub(super) version: heapless::String<MAX_VERSION_LEN>,
    pub(super) image_len: u64,
    pub(super) block_size: u32,
    /// The Announce it came from, to put it back in the candidates (R-ANN-3).
    pub(super) from: SocketAddr,
    pub(super) started_at: Instant,
    /// When the last new chunk was stored.
    pub(super) progress_at: Instant,
    /// Global index of the last carousel Data frame of this image heard
    /// meanwhile: the stream started before the device could store it.
    pub(super) deaf_pos: Option<u32>,
}

impl Receiver {
    pub(super) fn make_refusal(
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
        signed: bool,
    ) -> Refusal {
        let mut b = heapless::String::new();
        let _ = b.push_str(truncate(board, MAX_BOARD_LEN));
        let mut v = heapless::String::new();
        let _ = v.push_str(truncate(version, MAX_VERSION_LEN));
        Refusal {
            image_id,
            reason,
            board: b,
            version: v,
            detail,
            signed,
        }
    }

    /// R-ANN-2: a refusal that rests on signed data (a manifest that hashed
    /// to its image id): remembered, reported, then the next candidate.
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
    ) {
        if !self.refused.contains(&image_id) {
            if self.refused.is_full() {
                self.refused.remove(0);
            }
            let _ = self.refused.push(image_id);
        }
        self.candidates.retain(|c| c.image_id != image_id);
        self.refusal = Some(Self::make_refusal(
            image_id, reason, board, version, detail, true,
        ));
        self.enter(now, Phase::Listening);
        self.next_candidate(now);
    }

    /// R-ANN-2: unsigned input not followed: counted and handed to the shell
    /// for its summary, but nothing is remembered and nothing is reported.
    pub(super) fn hint(
        &mut self,
        image_id: ImageId,
        reason: Reason,
        board: &str,
        version: &str,
        detail: &'static str,
    ) {
        self.hint = Some(Self::make_refusal(
            image_id, reason, board, version, detail, false,
        ));
        self.queue(Queued::Hint);
    }

    pub(super) fn note_foreign(&mut self, header: &Header) {
        let key = (header.session, header.image_id);
        if !self.foreign_seen.contains(&key) && self.foreign_seen.push(key).is_ok() {
            self.queue(Queued::Foreign(header.session, header.image_id));
        }
    }

    /// Newer, or current when a signed "nothing to do" is wanted (R-ANN-2).
    pub(super) fn wanted_version(&self, v: &str) -> bool {
        if version::below_floor(v, &self.config.min_version) {
            return false;
        }
        match version::compare(v, &self.config.current_version) {
            core::cmp::Ordering::Greater => true,
            core::cmp::Ordering::Equal => self.config.fetch_when_current,
            core::cmp::Ordering::Less => false,
        }
    }

    /// Why a signed `v` is refused as not newer (R-VER-1), if it is: a
    /// version older than the floor is a replay (R-ROLL-1).
    pub(super) fn not_newer(&self, v: &str) -> Option<&'static str> {
        if version::below_floor(v, &self.config.min_version) {
            Some("signed version is below the anti-rollback floor")
        } else if !version::is_newer(v, &self.config.current_version) {
            Some("signed version is not newer")
        } else {
            None
        }
    }

    /// R-ANN-2: what an Announce alone can rule out, as a hint.
    pub(super) fn announce_hint(&self, a: &Announce<'_>) -> Option<(Reason, &'static str)> {
        if a.board != self.config.board {
            Some((Reason::WrongBoard, "announced for another board"))
        } else if version::below_floor(a.version, &self.config.min_version) {
            Some((
                Reason::NotNewer,
                "announced version is below the anti-rollback floor",
            ))
        } else if !self.wanted_version(a.version) {
            Some((Reason::NotNewer, "announced version is not newer"))
        } else if a.manifest_len > self.config.max_manifest_len {
            Some((Reason::TooLarge, "manifest larger than max_manifest_len"))
        } else if a.block_size > self.config.max_block_size || a.image_len > self.config.capacity {
            Some((
                Reason::TooLarge,
                "image or block larger than this device allows",
            ))
        } else {
            None
        }
    }

    // R-ANN-1: an Announce only starts a manifest fetch; the manifest decides.
    pub(super) fn on_announce(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        a: &Announce<'_>,
    ) -> Result<(), DropReason> {
        match &mut self.phase {
            Phase::Listening | Phase::FetchingManifest(_) => {}
            Phase::Resuming(t) | Phase::Receiving(t) | Phase::Verifying(t) | Phase::Done(t) => {
                if t.manifest.image_id != header.image_id {
                    self.note_foreign(header);
                    return Err(DropReason::OtherImage);
                }
                // R-SES-2: an Announce switches no session; Data decides (R-SES-3).
                self.sender = Some(from);
                return Ok(());
            }
            Phase::Failed(_) => return Err(DropReason::Unexpected),
        }
        if let Phase::FetchingManifest(f) = &mut self.phase {
            if f.image_id == header.image_id {
                f.session = header.session;
                self.sender = Some(from);
                return Ok(());
            }
        }
        if self.refused.contains(&header.image_id) {
            return Err(DropReason::OtherImage);
        }
        if let Some((reason, detail)) = self.announce_hint(a) {
            self.stats.announces_refused += 1;
            self.hint(header.image_id, reason, a.board, a.version, detail);
            return Ok(());
        }
        let mut board = heapless::String::new();
        let _ = board.push_str(a.board);
        let mut version = heapless::String::new();
        let _ = version.push_str(a.version);
        let cand = Candidate {
            session: header.session,
            image_id: header.image_id,
            from,
            chunk_size: a.chunk_size,
            manifest_len: a.manifest_len,
            board,
            version,
            image_len: a.image_len,
            block_size: a.block_size,
        };
        if matches!(self.phase, Phase::FetchingManifest(_)) {
            // R-ANN-3: another image is announced while fetching: it waits its
            // turn. A flood of forged ids replaces entries at random, so the
            // real one, announced again and again, keeps a place.
            if let Some(c) = self
                .candidates
                .iter_mut()
                .find(|c| c.image_id == cand.image_id)
            {
                *c = cand;
            } else if let Err(cand) = self.candidates.push(cand) {
                let i = self.rng.below(MAX_CANDIDATES as u64) as usize;
                self.candidates[i] = cand;
            }
            return Ok(());
        }
        self.last_progress_at = now;
        self.start_fetch(now, cand);
        Ok(())
    }

    pub(super) fn start_fetch(&mut self, now: Instant, c: Candidate) {
        let chunks = c.manifest_len.div_ceil(c.chunk_size);
        self.sender = Some(c.from);
        self.status_stamp = (c.session, c.image_id);
        let fetch = ManifestFetch {
            session: c.session,
            image_id: c.image_id,
            chunk_size: c.chunk_size,
            buf: vec![0u8; c.manifest_len as usize],
            have: vec![0u64; (chunks as usize).div_ceil(64)],
            missing: chunks,
            board: c.board,
            version: c.version,
            image_len: c.image_len,
            block_size: c.block_size,
            from: c.from,
            started_at: now,
            progress_at: now,
            deaf_pos: None,
        };
        self.enter(now, Phase::FetchingManifest(fetch));
    }

    /// Fetch the next announced image waiting, if any (R-ANN-3).
    pub(super) fn next_candidate(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Listening) || self.candidates.is_empty() {
            return;
        }
        let c = self.candidates.remove(0);
        self.start_fetch(now, c);
    }

    /// Stop fetching `f`; with `keep` it goes behind the other candidates
    /// (or, alone, is fetched again from scratch).
    pub(super) fn abandon_fetch(&mut self, now: Instant, f: ManifestFetch, keep: bool) {
        self.phase = Phase::Listening;
        if keep && !self.candidates.is_full() {
            let _ = self.candidates.push(Candidate {
                session: f.session,
                image_id: f.image_id,
                from: f.from,
                chunk_size: f.chunk_size,
                manifest_len: f.buf.len() as u32,
                board: f.board,
                version: f.version,
                image_len: f.image_len,
                block_size: f.block_size,
            });
        }
        self.next_candidate(now);
    }

    /// When the current fetch is due to be dropped or put back (R-ANN-3).
    pub(super) fn fetch_deadline(&self) -> Option<Instant> {
        let Phase::FetchingManifest(f) = &self.phase else {
            return None;
        };
        let t = self.config.manifest_fetch_timeout;
        let stale = f.progress_at + t;
        if self.candidates.is_empty() {
            Some(stale)
        } else {
            Some(stale.min(f.started_at + t.saturating_mul(4)))
        }
    }

    pub(super) fn check_fetch(&mut self, now: Instant) {
        if self.fetch_deadline().is_none_or(|d| now < d) {
            return;
        }
        let Phase::FetchingManifest(f) = core::mem::replace(&mut self.phase, Phase::Listening)
        else {
            return;
        };
        self.stats.fetches_abandoned += 1;
        // A fetch that stored chunks lately goes behind the others; one that
        // stored nothing is dropped (its next Announce brings it back).
        let keep = now < f.progress_at + self.config.manifest_fetch_timeout;
        self.abandon_fetch(now, f, keep);
    }

    pub(super) fn on_manifest_chunk(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        m: &ManifestChunk<'_>,
    ) -> Result<(), DropReason> {
        let Phase::FetchingManifest(f) = &mut self.phase else {
            return Err(DropReason::Unexpected);
        };
        if f.image_id != header.image_id {
            return Err(DropReason::OtherImage);
        }
        let total = f.buf.len() as u32;
        let expected_len = total.saturating_sub(m.offset).min(f.chunk_size) as usize;
        if m.offset % f.chunk_size != 0 || m.offset >= total || m.bytes.0.len() != expected_len {
            return Err(DropReason::OutOfManifest);
        }
        let index = m.offset / f.chunk_size;
        if !set_bit(&mut f.have, index) {
            return Ok(());
        }
        f.buf[m.offset as usize..m.offset as usize + expected_len].copy_from_slice(m.bytes.0);
        f.missing -= 1;
        // Unsigned: keeps this fetch alive (R-ANN-3), not the run (R-RUN-1).
        f.progress_at = now;
        if f.missing == 0 {
            self.finish_manifest(now, from);
        }
        Ok(())
    }

    /// `from` sent the chunk that completed the manifest: the sender's
    /// address if the manifest hashes to its image id and verifies (R-STAT-6).
    pub(super) fn finish_manifest(&mut self, now: Instant, from: SocketAddr) {
        let Phase::FetchingManifest(f) = core::mem::replace(&mut self.phase, Phase::Listening)
        else {
            return;
        };
        // R-MAN-3: the manifest must be the one the header names. If it is
        // not, a forged chunk got in: the bytes say nothing about the image
        // id, so it is fetched again, never refused.
        if crate::manifest::image_id(&f.buf) != f.image_id {
            self.stats.manifest_refetches += 1;
            self.hint(
                f.image_id,
                Reason::ManifestMismatch,
                &f.board,
                &f.version,
                "assembled manifest does not hash to its image id; fetching it again",
            );
            self.abandon_fetch(now, f, true);
            return;
        }
        // From here the image id names exactly these bytes: a refusal is
        // remembered whoever sent them (R-ANN-2).
        let manifest = match Manifest::verify(&f.buf, &self.config.public_key) {
            Ok(m) => m,
            Err(crate::manifest::ManifestError::BadSignature) => {
                self.refuse(
                    now,
                    f.image_id,
                    Reason::BadSignature,
                    &f.board,
                    &f.version,
                    "signature does not verify with the configured public key",
                );
                return;
            }
            Err(_) => {
                self.refuse(
                    now,
                    f.image_id,
                    Reason::ManifestMismatch,
                    &f.board,
                    &f.version,
                    "manifest does not decode",
                );
                return;
            }
        };
        let (board, version) = (manifest.board.clone(), manifest.version.clone());
        if manifest.board.as_str() != self.config.board {
            self.refuse(
                now,
                f.image_id,
                Reason::WrongBoard,
                &board,
                &version,
                "signed for another board",
            );
        } else if let Some(detail) = self.not_newer(&manifest.version) {
            self.refuse(now, f.image_id, Reason::NotNewer, &board, &version, detail);
        } else if manifest.block_size > self.config.max_block_size
            || manifest.image_len > self.config.capacity
        {
            self.refuse(
                now,
                f.image_id,
                Reason::TooLarge,
                &board,
                &version,
                "image or block larger than this device allows",
            );
        } else {
            // R-MAN-3: where the unsigned Announce disagrees with the signed
            // manifest, the manifest wins.
            if manifest.board != f.board
                || manifest.version != f.version
                || manifest.image_len != f.image_len
                || manifest.block_size != f.block_size
                || manifest.chunk_size != f.chunk_size
            {
                self.hint(
                    f.image_id,
                    Reason::ManifestMismatch,
                    &f.board,
                    &f.version,
                    "announce disagrees with the signed manifest; the manifest wins",
                );
            }
            let slots = window_slots(
                self.config.window_blocks,
                self.config.max_window_bytes,
                manifest.padded_block_len(),
            );
            let mut t = Transfer::new(manifest, f.session, slots);
            t.whole_blocks = self.config.nack_whole_blocks;
            if let Some(pos) = f
                .deaf_pos
                .filter(|&p| p < t.global(t.manifest.block_count(), 0))
            {
                t.stream_pos = Some(pos);
                t.late_until = Some(pos);
            }
            self.candidates.clear();
            self.manifest_from = Some(from);
            self.last_progress_at = now;
            self.enter(now, Phase::Resuming(t));
        }
    }
}

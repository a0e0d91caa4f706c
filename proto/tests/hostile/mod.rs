//! A hostile LAN around one genuine transfer, driven by a script of bytes.
//!
//! One real [`Sender`], one real [`RepairServer`] and one [`Receiver`] with
//! an in-memory flash run an update of a real signed image in virtual time.
//! The script decides, op by op, what the network does: deliver, drop,
//! reorder or duplicate genuine datagrams, let time pass, and inject forged
//! ones (random bytes, genuine frames mutated with a fixed CRC, Announces,
//! ManifestChunks and Data with the real session and image id, NACKs and
//! Status with random fields from random sources). The shell around the
//! receiver acts as `agent/src/run/shell.rs` does (scan on manifest accepted,
//! write blocks, read back).
//!
//! Invariants checked as the script runs (a panic names the broken one):
//! - no machine panics;
//! - every block the receiver hands out for writing matches the signed
//!   manifest, and a receiver that reports `Done` holds the whole image
//!   (R-BLK-1, R-BLK-2, R-PAR-4: nothing written that the manifest does not sign);
//! - the only manifest a receiver accepts is the signed one (R-MAN-1);
//! - the repair server sends at most `max_chunks_per_nack` datagrams per
//!   NACK it took in (R-REP-2), and both servers keep to their pacing
//!   (R-CAR-4, R-REP-6).
//!
//! The same driver runs under proptest (`proto/tests/hostile_sequences.rs`,
//! in CI) and under cargo-fuzz (`fuzz/fuzz_targets/*_sequence.rs`, nightly).
//! Memory is the caller's to measure; the driver allocates only a bounded
//! queue of datagrams in flight and one buffer per datagram.

#![allow(dead_code)] // Each including crate uses a different part.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proto::manifest::{sign, Manifest, ManifestSpec};
use proto::pacer::{BURST_DATAGRAMS, IP_UDP_OVERHEAD};
use proto::receiver::{Event, Receiver, ReceiverConfig};
use proto::repair::{RepairConfig, RepairMode, RepairServer};
use proto::rng::Rng;
use proto::sender::{Sender, SenderConfig};
use proto::wire::{
    self, Announce, Bytes, ChunkList, ChunkRange, Data, DeviceState, Frame, ImageId, ManifestChunk,
    Nack, Reason, Status, CRC32, FLAG_PARITY, FLAG_REPAIR, MAX_DATAGRAM, MAX_NACK_RANGES,
    TRAILER_LEN,
};
use proto::{Dest, Instant};

/// Board of the genuine image and of the device.
pub const BOARD: &str = "fuzz,board";
/// Block size: not a multiple of the chunk size (R-WIRE-6), like the
/// default geometry (64 KiB blocks of 1408-byte chunks), scaled down.
pub const BLOCK_SIZE: u32 = 8192;
/// Chunk size: 1408 bytes fill a 1500-byte Ethernet MTU.
pub const CHUNK_SIZE: u32 = 1408;
/// Image length: five full blocks and a short last one.
pub const IMAGE_LEN: usize = 5 * BLOCK_SIZE as usize + 3000;
/// Session id of the genuine sender.
pub const SESSION: u32 = 0x5E55_1011;
/// Carousel and repair rate.
pub const RATE_BPS: u64 = 10_000_000;
/// Genuine datagrams in flight to the device at most (older ones are lost).
pub const AIR_CAPACITY: usize = 256;

/// Most chunks the repair server takes from one NACK (R-REP-2).
pub const MAX_CHUNKS_PER_NACK: u32 = 256;

const SENDER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 40000);
const REPAIR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 7855);
const DEVICE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)), 7000);

thread_local! {
    static IN_MACHINE: Cell<bool> = const { Cell::new(false) };
}

/// `true` while the current thread runs code of one of the state machines
/// (not the driver's own bookkeeping): lets a counting allocator measure
/// the machines' heap alone.
pub fn in_machine() -> bool {
    IN_MACHINE.try_with(Cell::get).unwrap_or(false)
}

/// Marks a call into a state machine for [`in_machine`].
struct MachineCall(bool);

impl MachineCall {
    fn enter() -> Self {
        MachineCall(IN_MACHINE.try_with(|c| c.replace(true)).unwrap_or(false))
    }
}

impl Drop for MachineCall {
    fn drop(&mut self) {
        let _ = IN_MACHINE.try_with(|c| c.set(self.0));
    }
}

/// Evaluates a call into a state machine as [`in_machine`].
macro_rules! machine {
    ($e:expr) => {{
        let _call = MachineCall::enter();
        $e
    }};
}

/// The signed image every case updates to; built once per process.
pub struct Fixture {
    /// The image bytes.
    pub image: Vec<u8>,
    /// The signed manifest as the sender sends it.
    pub signed: Vec<u8>,
    /// The manifest, decoded.
    pub manifest: Manifest,
    /// The operator's public key, configured on the device.
    pub public_key: [u8; 32],
}

impl Fixture {
    /// An image of [`IMAGE_LEN`] pseudo-random bytes, signed for [`BOARD`]
    /// version 2.0.0.
    pub fn new() -> Fixture {
        let mut gen = Rng::new(0xF1A5);
        let image: Vec<u8> = (0..IMAGE_LEN).map(|_| gen.next_u64() as u8).collect();
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x33; 32]));
        let spec = ManifestSpec {
            board: BOARD,
            version: "2.0.0",
            block_size: BLOCK_SIZE,
            chunk_size: CHUNK_SIZE,
            created_unix: 0,
            min_version: "",
        };
        let signed = sign(&spec, &image, &kp.sk).expect("the fixture's manifest signs");
        let manifest = Manifest::verify(&signed, &kp.pk).expect("the fixture's manifest verifies");
        Fixture {
            image,
            signed,
            manifest,
            public_key: *kp.pk,
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

/// Reads a script: each read takes the next bytes, zeros once it ran out.
pub struct Script<'a> {
    bytes: &'a [u8],
}

impl<'a> Script<'a> {
    /// A script over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Script { bytes }
    }

    /// `true` once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }
}

/// What a run did; summed over cases for the printed figures.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Datagrams handed to any of the three machines.
    pub datagrams: u64,
    /// Of those, forged.
    pub forged: u64,
    /// Blocks the receiver handed out for writing (each checked).
    pub blocks_written: u64,
    /// Runs that reached `Done`.
    pub done: u64,
    /// Runs in which the genuine image was refused (a forged Announce or
    /// manifest chunk won: issue 14 H1/H2).
    pub genuine_refused: u64,
    /// Runs that ended `Failed`.
    pub failed: u64,
    /// Digest failures the receiver counted (forged or mutated chunks caught).
    pub digest_failures: u64,
    /// Chunks the receiver dropped for not matching a verified chunk-hash
    /// list, and lists it forgot for not matching the manifest (R-AUTH-2/3).
    pub chunks_forged: u64,
    pub lists_forged: u64,
    /// NACK frames the repair server took in, genuine and forged.
    pub nacks_in: u64,
    /// Datagrams the repair server sent.
    pub repair_out: u64,
    /// Bytes in forged NACKs.
    pub forged_nack_bytes: u64,
    /// Bytes the repair server sent unicast to an address that is not the device.
    pub unicast_to_forged: u64,
    /// Status bytes the receiver sent to an address that is neither the
    /// repair server nor the sender (issue 14 M1).
    pub status_to_forged: u64,
    /// Datagrams the sender sent.
    pub sender_out: u64,
}

impl Tally {
    /// Add `other` into `self`.
    pub fn add(&mut self, o: &Tally) {
        self.datagrams += o.datagrams;
        self.forged += o.forged;
        self.blocks_written += o.blocks_written;
        self.done += o.done;
        self.genuine_refused += o.genuine_refused;
        self.failed += o.failed;
        self.digest_failures += o.digest_failures;
        self.chunks_forged += o.chunks_forged;
        self.lists_forged += o.lists_forged;
        self.nacks_in += o.nacks_in;
        self.repair_out += o.repair_out;
        self.forged_nack_bytes += o.forged_nack_bytes;
        self.unicast_to_forged += o.unicast_to_forged;
        self.status_to_forged += o.status_to_forged;
        self.sender_out += o.sender_out;
    }
}

/// Cumulative output of one paced machine, checked against its rate.
struct PaceCheck {
    name: &'static str,
    start: Instant,
    bits: u128,
    /// Datagrams allowed outside the token bucket (the held carousel's
    /// Announces, R-CAR-5), whose bits are added to the allowance.
    exempt_bits: u128,
}

impl PaceCheck {
    fn new(name: &'static str, start: Instant) -> Self {
        PaceCheck {
            name,
            start,
            bits: 0,
            exempt_bits: 0,
        }
    }

    fn sent(&mut self, now: Instant, len: usize, exempt: bool) {
        let bits = (len as u128 + u128::from(IP_UDP_OVERHEAD)) * 8;
        self.bits += bits;
        if exempt {
            self.exempt_bits += bits;
        }
        // The bucket starts full (a burst) and refills at the rate; the
        // last datagram may overdraw it by one datagram.
        let burst = (u128::from(BURST_DATAGRAMS) + 2) * (MAX_DATAGRAM as u128 + 28) * 8;
        let elapsed_us = u128::from(now.as_micros().saturating_sub(self.start.as_micros()));
        let allowed = u128::from(RATE_BPS) * elapsed_us / 1_000_000 + burst + self.exempt_bits;
        assert!(
            self.bits <= allowed,
            "R-CAR-4/R-REP-6: {} sent {} bits in {} µs, over its pacing ({allowed} allowed)",
            self.name,
            self.bits,
            elapsed_us
        );
    }
}

/// One genuine datagram on its way to the device.
struct Air {
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The world of one case.
pub struct World<'f> {
    fx: &'f Fixture,
    now: Instant,
    rx: Receiver,
    sender: Sender,
    repair: RepairServer,
    repair_cfg: RepairConfig,
    /// The device's flash: what it would boot.
    flash: Vec<u8>,
    /// Genuine datagrams in flight to the device.
    air: VecDeque<Air>,
    /// The last genuine datagrams seen, templates for mutation.
    recent: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    sender_pace: PaceCheck,
    repair_pace: PaceCheck,
    /// The receiver's NACKs and Status reports are lost while set.
    uplink_down: bool,
    done: bool,
    /// Every genuine Data frame of this block is lost: the receiver stays
    /// in the middle of its transfer for as long as the script runs.
    pub withhold: Option<u32>,
    /// Counters of this case.
    pub tally: Tally,
}

impl<'f> World<'f> {
    /// A world whose configuration (repair mode, header hold, what is on
    /// flash already) the first bytes of `script` choose.
    pub fn new(fx: &'f Fixture, script: &mut Script<'_>) -> World<'f> {
        let now = Instant::from_micros(1_000_000);
        let knobs = script.u8();
        let mut rc = ReceiverConfig::new(0xD1, BOARD, "1.0.0", fx.public_key);
        rc.window_blocks = 3;
        rc.max_block_size = BLOCK_SIZE;
        rc.hold_first_block = knobs & 1 != 0;
        rc.rng_seed = u64::from(script.u16());
        let rx = machine!(Receiver::new(rc, now));
        let mut sc = SenderConfig::new(SESSION, RATE_BPS);
        sc.max_devices = 16;
        // Forged Status may try to stop the carousel (R-CAR-5).
        sc.hold_when_received = (knobs & 2 != 0).then_some(1);
        let signed = fx.signed.clone();
        let sender = machine!(Sender::new(sc, &fx.manifest, signed, now));
        let repair_cfg = RepairConfig {
            max_chunks_per_nack: MAX_CHUNKS_PER_NACK,
            max_devices: 16,
            max_pending: 64,
            // Per-source accounts (R-REP-8) are a bounded table that fills with
            // forged sources: small here, so the heap check sees it full.
            max_sources: 16,
            mode: if knobs & 4 != 0 {
                RepairMode::Parity
            } else {
                RepairMode::Retransmit
            },
            ..RepairConfig::default()
        };
        let repair = machine!(RepairServer::new(repair_cfg.clone(), &fx.manifest));
        // Flash holds an older image in which some blocks already match
        // (a resumed update, R-RES-1).
        let mut flash = vec![0xFFu8; IMAGE_LEN];
        let present = script.u8();
        for b in 0..fx.manifest.block_count() {
            if present & (1 << (b % 8)) != 0 {
                let start = b as usize * BLOCK_SIZE as usize;
                let end = (start + BLOCK_SIZE as usize).min(IMAGE_LEN);
                flash[start..end].copy_from_slice(&fx.image[start..end]);
            }
        }
        World {
            fx,
            now,
            rx,
            sender,
            repair,
            repair_cfg,
            flash,
            air: VecDeque::with_capacity(AIR_CAPACITY),
            recent: VecDeque::with_capacity(8),
            buf: vec![0u8; MAX_DATAGRAM],
            sender_pace: PaceCheck::new("sender", now),
            repair_pace: PaceCheck::new("repair server", now),
            uplink_down: false,
            done: false,
            withhold: None,
            tally: Tally::default(),
        }
    }

    /// The receiver, for the caller's own checks.
    pub fn receiver(&self) -> &Receiver {
        &self.rx
    }

    /// Run the whole script, or until `max_datagrams` were handed in.
    pub fn run(&mut self, script: &mut Script<'_>, max_datagrams: u64) {
        self.pump();
        while !script.is_empty() && self.tally.datagrams < max_datagrams {
            self.step(script);
        }
        self.finish();
    }

    /// One op of the script, then everything it caused.
    pub fn step(&mut self, script: &mut Script<'_>) {
        let op = script.u8();
        match op {
            // Genuine traffic dominates, so transfers make progress.
            0..=99 => self.deliver(),
            100..=129 => {
                // Up to 5 ms: about as long as the carousel takes for four chunks.
                let dt = u64::from(script.u8()) * 20;
                self.now = self.now + Duration::from_micros(dt);
            }
            130..=139 => {
                self.air.pop_front();
            }
            140..=145 => {
                let k = usize::from(script.u8()) % self.air.len().max(1);
                if self.air.len() > k {
                    self.air.swap(0, k);
                }
            }
            146..=149 => {
                if let Some(a) = self.air.front() {
                    let dup = Air {
                        from: a.from,
                        bytes: a.bytes.clone(),
                    };
                    self.push_air(dup);
                }
            }
            150..=151 => self.uplink_down = !self.uplink_down,
            152..=161 => self.forge_random(script),
            162..=181 => self.forge_mutated(script),
            182..=195 => self.forge_announce(script),
            196..=207 => self.forge_manifest_chunk(script),
            208..=222 => self.forge_data(script),
            223..=229 => self.forge_chunk_list(script),
            230..=242 => self.forge_nack(script),
            _ => self.forge_status(script),
        }
        self.pump();
    }

    fn push_air(&mut self, a: Air) {
        if self.air.len() == AIR_CAPACITY {
            self.air.pop_front();
        }
        self.air.push_back(a);
    }

    fn deliver(&mut self) {
        let Some(a) = self.air.pop_front() else {
            // Nothing in flight: let the carousel's clock run.
            self.now = self.now + Duration::from_micros(1500);
            return;
        };
        if self.withhold.is_some()
            && matches!(wire::decode(&a.bytes), Ok((_, Frame::Data(d))) if Some(d.block) == self.withhold)
        {
            return;
        }
        if self.recent.len() == 8 {
            self.recent.pop_front();
        }
        self.feed_receiver(a.from, &a.bytes);
        self.recent.push_back(a.bytes);
    }

    fn feed_receiver(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.tally.datagrams += 1;
        let _ = machine!(self.rx.handle_datagram(self.now, from, bytes));
        self.drain_receiver();
    }

    fn feed_repair(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.tally.datagrams += 1;
        if matches!(wire::decode(bytes), Ok((_, Frame::Nack(_)))) {
            self.tally.nacks_in += 1;
        }
        let _ = machine!(self.repair.handle_datagram(self.now, from, bytes));
        self.drain_repair();
    }

    fn feed_sender(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.tally.datagrams += 1;
        let _ = machine!(self.sender.handle_datagram(self.now, from, bytes));
        self.drain_sender();
    }

    /// The driving contract: fire due timers, then drain every output.
    fn pump(&mut self) {
        if self.rx.poll_timeout().is_some_and(|t| t <= self.now) {
            machine!(self.rx.handle_timeout(self.now));
        }
        self.drain_receiver();
        if self.repair.poll_timeout().is_some_and(|t| t <= self.now) {
            machine!(self.repair.handle_timeout(self.now));
        }
        self.drain_repair();
        self.drain_sender();
    }

    fn drain_sender(&mut self) {
        loop {
            let exempt = self.sender.holding();
            let Some(t) =
                machine!(self
                    .sender
                    .poll_transmit(self.now, &self.fx.image, &mut self.buf))
            else {
                break;
            };
            assert_eq!(
                t.dest,
                Dest::Group,
                "the sender sends to the data group only"
            );
            self.tally.sender_out += 1;
            self.sender_pace.sent(self.now, t.len, exempt);
            let bytes = self.buf[..t.len].to_vec();
            self.push_air(Air {
                from: SENDER,
                bytes,
            });
        }
    }

    fn drain_repair(&mut self) {
        while let Some(t) =
            machine!(self
                .repair
                .poll_transmit(self.now, &self.fx.image, &mut self.buf))
        {
            self.tally.repair_out += 1;
            self.repair_pace.sent(self.now, t.len, false);
            // R-REP-2: a NACK is not an amplifier, whoever sent it.
            let cap = u64::from(self.repair_cfg.max_chunks_per_nack);
            assert!(
                self.tally.repair_out <= cap * self.tally.nacks_in,
                "R-REP-2: {} repair datagrams for {} NACKs",
                self.tally.repair_out,
                self.tally.nacks_in
            );
            match t.dest {
                Dest::Group => {}
                Dest::Peer(a) if a == DEVICE => {}
                Dest::Peer(_) => {
                    self.tally.unicast_to_forged += t.len as u64;
                    continue;
                }
                Dest::RepairServer => panic!("the repair server sent to itself"),
            }
            let bytes = self.buf[..t.len].to_vec();
            self.push_air(Air {
                from: REPAIR,
                bytes,
            });
        }
    }

    /// The shell of `agent/src/run/shell.rs`, with an in-memory flash.
    fn drain_receiver(&mut self) {
        let now = self.now;
        let m = &self.fx.manifest;
        let mut scan = false;
        let mut verify = false;
        while let Some(ev) = machine!(self.rx.poll_event()) {
            match ev {
                Event::ManifestAccepted => scan = true,
                Event::WriteBlock { index, data } => {
                    // R-BLK-1: nothing is written that the manifest does not sign.
                    assert!(
                        m.block_matches(index, data),
                        "R-BLK-1: block {index} handed out for writing does not match the manifest"
                    );
                    let start = index as usize * BLOCK_SIZE as usize;
                    self.flash[start..start + data.len()].copy_from_slice(data);
                    self.tally.blocks_written += 1;
                    machine!(self.rx.handle_flash_done(now, index, Ok(())));
                }
                Event::VerifyImage => verify = true,
                Event::Done => {
                    assert!(
                        self.flash == self.fx.image,
                        "Done with an image on flash that differs from the signed one"
                    );
                    self.done = true;
                }
                Event::Refused(r) => {
                    if r.image_id == m.image_id {
                        self.tally.genuine_refused = 1;
                    }
                }
                Event::Failed(_) => self.tally.failed = 1,
                Event::Foreign { .. } => {}
            }
            if scan || verify {
                break;
            }
        }
        if scan {
            let accepted = self.rx.manifest().map(|a| a.image_id);
            assert_eq!(
                accepted,
                Some(m.image_id),
                "R-MAN-1: a manifest other than the signed one was accepted"
            );
            // R-RES-2: receive at once, report blocks found as the scan goes.
            machine!(self.rx.handle_scan_done(now));
            let hold = self.rx.config().hold_first_block;
            for b in 0..m.block_count() {
                if hold && b == 0 {
                    continue;
                }
                if m.block_matches(b, self.block_on_flash(b)) {
                    machine!(self.rx.handle_block_present(now, b));
                }
            }
            return self.drain_receiver();
        }
        if verify {
            let bad: Vec<u32> = (0..m.block_count())
                .filter(|&b| !m.block_matches(b, self.block_on_flash(b)))
                .collect();
            machine!(self.rx.handle_verify_done(now, &bad));
            return self.drain_receiver();
        }
        while let Some(t) = machine!(self.rx.poll_transmit(now, &mut self.buf)) {
            let bytes = self.buf[..t.len].to_vec();
            match t.dest {
                _ if self.uplink_down => {}
                Dest::RepairServer => self.feed_repair(DEVICE, &bytes),
                Dest::Peer(a) if a == SENDER => self.feed_sender(DEVICE, &bytes),
                Dest::Peer(_) => self.tally.status_to_forged += t.len as u64,
                Dest::Group => panic!("a receiver never sends to a group"),
            }
        }
    }

    fn block_on_flash(&self, b: u32) -> &[u8] {
        let start = b as usize * BLOCK_SIZE as usize;
        let len = self.fx.manifest.block_len(b);
        &self.flash[start..start + len]
    }

    fn finish(&mut self) {
        self.tally.done = u64::from(self.done);
        self.tally.digest_failures = self.rx.stats().digest_failures;
        self.tally.chunks_forged = self.rx.stats().chunks_forged;
        self.tally.lists_forged = self.rx.stats().chunk_lists_forged;
    }

    // ---- forgeries ----

    fn forged_source(script: &mut Script<'_>) -> SocketAddr {
        let o = script.u32().to_le_bytes();
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, o[0], o[1], o[2])),
            7000 + u16::from(o[3]),
        )
    }

    fn encode_forged(
        &mut self,
        session: u32,
        image_id: ImageId,
        flags: u8,
        f: &Frame<'_>,
    ) -> Option<Vec<u8>> {
        let n = wire::encode(session, image_id, flags, f, &mut self.buf).ok()?;
        Some(self.buf[..n].to_vec())
    }

    fn header_ids(&self, script: &mut Script<'_>) -> (u32, ImageId) {
        let sel = script.u8();
        let session = if sel & 1 == 0 { SESSION } else { script.u32() };
        let image_id = if sel & 2 == 0 {
            self.fx.manifest.image_id
        } else {
            ImageId((u64::from(script.u32()) << 32 | u64::from(script.u32())).to_le_bytes())
        };
        (session, image_id)
    }

    /// Deliver a forged datagram to the machine `to` (0 receiver, 1 repair
    /// server, 2 sender), from the genuine sender's address or a random one.
    fn inject(&mut self, script: &mut Script<'_>, to: u8, bytes: &[u8]) {
        self.tally.forged += 1;
        let from = if script.u8() & 1 == 0 {
            SENDER
        } else {
            Self::forged_source(script)
        };
        match to % 3 {
            0 => self.feed_receiver(from, bytes),
            1 => {
                if matches!(wire::decode(bytes), Ok((_, Frame::Nack(_)))) {
                    self.tally.forged_nack_bytes += bytes.len() as u64;
                }
                self.feed_repair(from, bytes)
            }
            _ => self.feed_sender(from, bytes),
        }
    }

    fn forge_random(&mut self, script: &mut Script<'_>) {
        let to = script.u8();
        let len = usize::from(script.u16()) % 256;
        let bytes = script.take(len).to_vec();
        self.inject(script, to, &bytes);
    }

    /// A genuine datagram with some bytes replaced and the CRC made right
    /// again: past the CRC check, into the body parsers and the machines.
    fn forge_mutated(&mut self, script: &mut Script<'_>) {
        let pick = usize::from(script.u8());
        let Some(mut d) = self.recent.get(pick % self.recent.len().max(1)).cloned() else {
            return;
        };
        for _ in 0..(script.u8() % 4) + 1 {
            let at = usize::from(script.u16()) % d.len();
            d[at] = script.u8();
        }
        if d.len() >= wire::HEADER_LEN + TRAILER_LEN {
            let n = d.len() - TRAILER_LEN;
            let crc = CRC32.checksum(&d[..n]);
            d[n..].copy_from_slice(&crc.to_be_bytes());
        }
        self.inject(script, 0, &d);
    }

    fn forge_announce(&mut self, script: &mut Script<'_>) {
        const VERSIONS: [&str; 6] = ["0.9", "1.0.0", "2.0.0", "2.0.0-rc1", "9.9.9", "10"];
        const BOARDS: [&str; 3] = [BOARD, "other,board", "fuzz,board\n\x1b[2J"];
        let (session, image_id) = self.header_ids(script);
        let sel = script.u8();
        let m = &self.fx.manifest;
        let real_geometry = sel & 0x80 == 0;
        let a = Announce {
            board: BOARDS[usize::from(sel & 3) % BOARDS.len()],
            version: VERSIONS[usize::from((sel >> 2) & 7) % VERSIONS.len()],
            image_len: if real_geometry {
                m.image_len
            } else {
                u64::from(script.u32())
            },
            block_size: if real_geometry {
                m.block_size
            } else {
                script.u32()
            },
            chunk_size: if real_geometry {
                m.chunk_size
            } else {
                u32::from(script.u16())
            },
            manifest_len: if sel & 0x40 == 0 {
                self.fx.signed.len() as u32
            } else {
                script.u32() % (1 << 20) + 1
            },
            rate_kbps: script.u32(),
            pass: script.u32(),
        };
        if let Some(d) = self.encode_forged(session, image_id, 0, &Frame::Announce(a)) {
            self.inject(script, 0, &d);
        }
    }

    fn forge_manifest_chunk(&mut self, script: &mut Script<'_>) {
        let (session, image_id) = self.header_ids(script);
        let signed_len = self.fx.signed.len() as u32;
        let offset = script.u32() % (signed_len + 16);
        let len = usize::from(script.u16()) % CHUNK_SIZE as usize + 1;
        // Half the time the genuine bytes with one changed: a near miss.
        let mut bytes = if script.u8() & 1 == 0 {
            let start = (offset as usize).min(self.fx.signed.len());
            let end = (start + len).min(self.fx.signed.len());
            self.fx.signed[start..end].to_vec()
        } else {
            script.take(len).to_vec()
        };
        if bytes.is_empty() {
            bytes.push(script.u8());
        }
        let at = usize::from(script.u16()) % bytes.len();
        bytes[at] ^= script.u8();
        let f = Frame::ManifestChunk(ManifestChunk {
            offset,
            bytes: Bytes(&bytes),
        });
        if let Some(d) = self.encode_forged(session, image_id, 0, &f) {
            self.inject(script, 0, &d);
        }
    }

    fn forge_data(&mut self, script: &mut Script<'_>) {
        let (session, image_id) = self.header_ids(script);
        let blocks = self.fx.manifest.block_count();
        let block = u32::from(script.u8()) % (blocks + 2);
        let chunk = u32::from(script.u8()) % 10;
        let flags =
            [0, FLAG_REPAIR, FLAG_REPAIR | FLAG_PARITY, FLAG_PARITY][usize::from(script.u8() % 4)];
        let len = if script.u8() & 1 == 0 {
            CHUNK_SIZE as usize
        } else {
            usize::from(script.u16()) % CHUNK_SIZE as usize + 1
        };
        let fill = script.u8();
        let mut payload = vec![fill; len];
        let head = script.take(16.min(len));
        payload[..head.len()].copy_from_slice(head);
        let f = Frame::Data(Data {
            block,
            chunk,
            payload: Bytes(&payload),
        });
        if let Some(d) = self.encode_forged(session, image_id, flags, &f) {
            self.inject(script, 0, &d);
        }
    }

    /// A ChunkList piece (R-AUTH-2): a real or out-of-range block, an
    /// aligned or odd first hash, hashes from the script.
    fn forge_chunk_list(&mut self, script: &mut Script<'_>) {
        let (session, image_id) = self.header_ids(script);
        let block = u32::from(script.u8()) % (self.fx.manifest.block_count() + 2);
        let first = [0, 0, 0, u32::from(script.u8())][usize::from(script.u8() % 4)];
        let n = usize::from(script.u8() % 80) + 1;
        let mut hashes = vec![script.u8(); n * 16];
        let head = script.take(16.min(hashes.len()));
        hashes[..head.len()].copy_from_slice(head);
        let f = Frame::ChunkList(ChunkList {
            block,
            first,
            hashes: Bytes(&hashes),
        });
        if let Some(d) = self.encode_forged(session, image_id, 0, &f) {
            self.inject(script, 0, &d);
        }
    }

    fn forge_nack(&mut self, script: &mut Script<'_>) {
        let (session, image_id) = self.header_ids(script);
        let mut ranges = heapless::Vec::<ChunkRange, MAX_NACK_RANGES>::new();
        let mut start = u32::from(script.u8());
        for _ in 0..(script.u8() as usize % MAX_NACK_RANGES) + 1 {
            let len = u32::from(script.u16()) % 512 + 1;
            if ranges.push(ChunkRange { start, len }).is_err() {
                break;
            }
            start = start
                .saturating_add(len)
                .saturating_add(u32::from(script.u8()));
        }
        let f = Frame::Nack(Nack {
            device_id: u64::from(script.u32()),
            ranges,
        });
        if let Some(d) = self.encode_forged(session, image_id, 0, &f) {
            self.inject(script, 1, &d);
        }
    }

    fn forge_status(&mut self, script: &mut Script<'_>) {
        const STATES: [DeviceState; proto::fleet::ALL_STATES.len()] = proto::fleet::ALL_STATES;
        const REASONS: [Reason; 4] = [
            Reason::None,
            Reason::NotNewer,
            Reason::WrongBoard,
            Reason::VerifyFailed,
        ];
        let (session, image_id) = self.header_ids(script);
        let total = u32::from(script.u8());
        let s = Status {
            device_id: u64::from(script.u8()),
            state: STATES[usize::from(script.u8()) % STATES.len()],
            blocks_done: u32::from(script.u8()).min(total),
            blocks_total: total,
            current_version: "1.0.0",
            reason: REASONS[usize::from(script.u8()) % REASONS.len()],
            write_kbps: 0,
            window_free: 0,
        };
        if let Some(d) = self.encode_forged(session, image_id, 0, &Frame::Status(s)) {
            let to = 1 + script.u8() % 2;
            self.inject(script, to, &d);
        }
    }
}

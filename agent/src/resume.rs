//! The resume scan and the final read-back: hash every block of the target
//! against the signed manifest, and check it again before activation.
//!
//! A power cut mid-update costs nothing already written: on the next run the
//! scan finds every block whose SHA-256 matches and reports it to the
//! receiver (R-RES-1), which then only asks for the rest.
//!
//! In-place rule: the header (block 0) is written last, after the old one is
//! invalidated. If block 0 already matches but some other block does not, the
//! header is *not* reported present: the receiver then fetches it again and
//! the shell writes it last, after invalidating it, so the flash never shows a
//! valid header in front of a partial image.
//!
//! The final read-back compares each block with the CRC-32 it had when its
//! SHA-256 matched ([`Fingerprints`]): the signature and the digests guard
//! what reaches flash, the read-back guards against what flash does to it
//! afterwards (a write that disturbed another block, a bad-block mapping
//! gone wrong), for which a CRC is enough; hashing the whole image again
//! delays the end of every update, by seconds on a MIPS router's CPU.

use flasher::{uniform_byte, Flash, ImageWriter};
use proto::manifest::{BlockHasher, Manifest, DIGEST_LEN};
use proto::wire::CRC32;

/// What the resume scan found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Blocks to report with `handle_block_present`.
    pub present: Vec<u32>,
    /// Blocks whose bytes matched (including a withheld header).
    pub matched: u32,
    /// Block 0 matched but was withheld (in-place rule).
    pub header_withheld: bool,
    /// Blocks that could not be read (they are simply received again).
    pub unreadable: u32,
}

/// The CRC-32 of every block as it was when its SHA-256 matched the manifest
/// (written in this run, or found by the resume scan); allocated once per
/// accepted manifest, 8 bytes per block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    crcs: Vec<Option<u32>>,
}

impl Fingerprints {
    /// Room for every block of `manifest`, none known yet.
    pub fn new(manifest: &Manifest) -> Self {
        Fingerprints {
            crcs: vec![None; manifest.block_count() as usize],
        }
    }

    /// Block `index` held `data` when it matched its digest.
    pub fn record(&mut self, index: u32, data: &[u8]) {
        self.record_crc(index, CRC32.checksum(data));
    }

    /// Block `index` matched its digest, and its bytes' CRC-32 was `crc`.
    pub fn record_crc(&mut self, index: u32, crc: u32) {
        if let Some(c) = self.crcs.get_mut(index as usize) {
            *c = Some(crc);
        }
    }

    /// The recorded CRC-32 of block `index`.
    pub fn get(&self, index: u32) -> Option<u32> {
        self.crcs.get(index as usize).copied().flatten()
    }
}

/// Which matching blocks to report, given which blocks match.
pub fn blocks_to_report(matches: &[bool], in_place: bool) -> Scan {
    let matched = matches.iter().filter(|&&m| m).count() as u32;
    let all = matched as usize == matches.len();
    let withhold = in_place && !all && matches.first() == Some(&true);
    let present = matches
        .iter()
        .enumerate()
        .filter(|&(i, &m)| m && !(withhold && i == 0))
        .map(|(i, _)| i as u32)
        .collect();
    Scan {
        present,
        matched,
        header_withheld: withhold,
        unreadable: 0,
    }
}

/// Read every block of the image from the target and compare it with the
/// manifest, in one go.
pub fn scan<F: Flash>(writer: &mut ImageWriter<F>, manifest: &Manifest, in_place: bool) -> Scan {
    let mut scanner = Scanner::new(manifest, in_place);
    let mut matches = vec![false; manifest.block_count() as usize];
    let mut prints = Fingerprints::new(manifest);
    while !scanner.is_done() {
        scanner.step(writer, manifest, u32::MAX, &mut prints, |i| {
            matches[i as usize] = true
        });
    }
    if scanner.header_matches {
        matches[0] = true;
    }
    let mut s = blocks_to_report(&matches, in_place);
    s.unreadable = scanner.unreadable;
    s
}

/// The resume scan done a few blocks at a time, between socket reads, while
/// the device already receives (R-RES-2): a scan that blocked the agent for
/// a whole target cost it the data the carousel sent meanwhile (a scan takes
/// far longer than the socket buffer holds, on a slow NOR chip too).
///
/// Blocks are reported as they are found. In place, a matching header
/// (block 0) is not reported by [`Scanner::step`] but kept in
/// [`Scanner::header_matches`]; the shell reports it at the end only if
/// nothing was written meanwhile and every other block is on flash.
#[derive(Default)]
pub struct Scanner {
    next: u32,
    total: u32,
    in_place: bool,
    uniform: UniformDigest,
    /// Blocks reported present so far.
    pub reported: u32,
    /// In place: block 0 matched and was not reported.
    pub header_matches: bool,
    /// Blocks that could not be read (they are simply received again).
    pub unreadable: u32,
}

impl Scanner {
    /// A scan of every block of `manifest`'s image, from block 0.
    pub fn new(manifest: &Manifest, in_place: bool) -> Self {
        Scanner {
            total: manifest.block_count(),
            in_place,
            ..Scanner::default()
        }
    }

    /// Every block has been looked at.
    pub fn is_done(&self) -> bool {
        self.next >= self.total
    }

    /// Blocks looked at so far.
    pub fn position(&self) -> u32 {
        self.next
    }

    /// Look at up to `max` more blocks; call `present` for each one that
    /// already holds the right bytes (but see the in-place header rule), and
    /// record the fingerprint of every block that matches.
    pub fn step<F: Flash>(
        &mut self,
        writer: &mut ImageWriter<F>,
        manifest: &Manifest,
        max: u32,
        prints: &mut Fingerprints,
        mut present: impl FnMut(u32),
    ) {
        let end = self.next.saturating_add(max).min(self.total);
        for i in self.next..end {
            let mut sum = BlockSum::new(manifest);
            let ok = match writer.read_block_pieces(i, |piece| sum.add(piece)) {
                Ok(_) => match sum.finish(manifest, i, &mut self.uniform) {
                    Some(crc) => {
                        prints.record_crc(i, crc);
                        true
                    }
                    None => false,
                },
                Err(e) => {
                    log::debug!("resume: block {i} unreadable ({e}); it will be received again");
                    self.unreadable += 1;
                    false
                }
            };
            if !ok {
                // It will be written: a neighbour's write may leave its place
                // erased rather than keep its old bytes.
                writer.mark_to_write(i);
                continue;
            }
            writer.confirm_read_back(i);
            if i == 0 && self.in_place {
                self.header_matches = true;
            } else {
                self.reported += 1;
                present(i);
            }
        }
        self.next = end;
    }
}

/// The digest of a uniform block (every byte the same: erased flash is all
/// 0xFF, a freshly created file target all 0x00), computed once per
/// (length, byte): a fresh target is all uniform, and hashing it block by
/// block kept the agent from reading its socket right after the manifest,
/// so it missed the start of the first pass.
#[derive(Default)]
struct UniformDigest {
    /// (block length, the byte, its digest)
    cached: Option<(usize, u8, [u8; DIGEST_LEN])>,
}

impl UniformDigest {
    fn digest(&mut self, manifest: &Manifest, len: usize, byte: u8) -> [u8; DIGEST_LEN] {
        match self.cached {
            Some((l, b, d)) if l == len && b == byte => d,
            _ => {
                let mut h = manifest.block_hasher();
                feed_uniform(len, byte, |run| h.update(run));
                let d = h.finish();
                self.cached = Some((len, byte, d));
                d
            }
        }
    }
}

/// Hands `len` bytes of `byte` to `f`, a few hundred at a time.
fn feed_uniform(len: usize, byte: u8, mut f: impl FnMut(&[u8])) {
    let run = [byte; 256];
    let mut left = len;
    while left > 0 {
        let n = left.min(run.len());
        f(&run[..n]);
        left -= n;
    }
}

/// One block read from flash in pieces, summed as it comes: its digest and
/// CRC-32, except that while every byte so far is the same the bytes are
/// only counted (a uniform block's digest comes from [`UniformDigest`]).
struct BlockSum {
    /// `Some((byte, n))`: the first `n` bytes were all `byte`, nothing fed
    /// to `hasher` and `crc` yet.
    uniform: Option<(u8, usize)>,
    hasher: BlockHasher,
    crc: u32,
}

impl BlockSum {
    fn new(manifest: &Manifest) -> Self {
        BlockSum {
            uniform: Some((0, 0)),
            hasher: manifest.block_hasher(),
            crc: 0,
        }
    }

    fn add(&mut self, piece: &[u8]) {
        if let Some((byte, n)) = self.uniform {
            match uniform_byte(piece) {
                Some(b) if b == byte || n == 0 => {
                    self.uniform = Some((b, n + piece.len()));
                    return;
                }
                _ => {
                    self.uniform = None;
                    feed_uniform(n, byte, |run| self.feed(run));
                }
            }
        }
        self.feed(piece);
    }

    fn feed(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.crc = CRC32.append(self.crc, data);
    }

    /// The block's CRC-32 when it is block `index` of `manifest`.
    fn finish(self, manifest: &Manifest, index: u32, cache: &mut UniformDigest) -> Option<u32> {
        let expected = manifest.digest(index)?;
        match self.uniform {
            Some((byte, len)) if len == manifest.block_len(index) && len > 0 => {
                if cache.digest(manifest, len, byte) != *expected {
                    return None;
                }
                let mut crc = 0;
                feed_uniform(len, byte, |run| crc = CRC32.append(crc, run));
                Some(crc)
            }
            // A short read of a uniform block: no digest matches it.
            Some(_) => None,
            None => (self.hasher.finish() == *expected).then_some(self.crc),
        }
    }
}

/// Which blocks the final read-back (R-VER-2) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalReadBack {
    /// Only blocks not read back right since their eraseblocks were last
    /// erased or programmed ([`ImageWriter::is_read_back`]).
    Stale,
    /// Every block, once more.
    All,
}

impl FinalReadBack {
    /// The config value (`final_read_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinalReadBack::Stale => "stale",
            FinalReadBack::All => "all",
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Blocks that do not match.
    pub bad: Vec<u32>,
    /// Blocks read from flash for it (the others had been read back right
    /// since their eraseblocks were last written).
    pub read: u32,
}

/// Read the image back (every block, or with [`FinalReadBack::Stale`] those
/// not read back since their last write) and return the blocks that do not
/// match: each against its fingerprint, or, where none was recorded, its
/// SHA-256.
pub fn verify<F: Flash>(
    writer: &mut ImageWriter<F>,
    manifest: &Manifest,
    prints: &Fingerprints,
    which: FinalReadBack,
) -> Verified {
    let mut out = Verified::default();
    for i in 0..manifest.block_count() {
        if which == FinalReadBack::Stale && writer.is_read_back(i) {
            continue;
        }
        out.read += 1;
        let print = prints.get(i);
        let (mut crc, mut hasher) = (0, manifest.block_hasher());
        let read = writer.read_block_pieces(i, |piece| match print {
            Some(_) => crc = CRC32.append(crc, piece),
            None => hasher.update(piece),
        });
        let ok = match read {
            Ok(len) => match print {
                Some(want) => crc == want,
                None => {
                    len == manifest.block_len(i) && manifest.digest(i) == Some(&hasher.finish())
                }
            },
            Err(e) => {
                log::warn!("verify: block {i} unreadable: {e}");
                false
            }
        };
        if ok {
            writer.confirm_read_back(i);
        } else {
            out.bad.push(i);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flasher::{Error, ErrorKind, FlashKind, Geometry, Op, ReadStatus, WriterOptions};

    /// An in-memory flash without physics, for tests of the shell: a
    /// plain file (4 KiB "eraseblocks"), or NOR with eraseblocks of a given size.
    #[derive(Debug, Clone)]
    pub struct MemFlash {
        pub bytes: Vec<u8>,
        pub kind: FlashKind,
        pub erase_size: u32,
        /// Writes covering this offset fail with EIO.
        pub fail_write_at: Option<u64>,
        /// The first write covering this offset fails with NewBadBlock (once).
        pub new_bad_at: Option<u64>,
        /// (offset, len) of every write, in order.
        pub writes: Vec<(u64, usize)>,
    }

    impl MemFlash {
        pub fn new(size: usize) -> Self {
            MemFlash {
                bytes: vec![0xFF; size],
                kind: FlashKind::Plain,
                erase_size: 4096,
                fail_write_at: None,
                new_bad_at: None,
                writes: Vec::new(),
            }
        }

        pub fn nor(size: usize, erase_size: u32) -> Self {
            MemFlash {
                kind: FlashKind::Nor,
                erase_size,
                ..MemFlash::new(size)
            }
        }
    }

    impl Flash for MemFlash {
        fn geometry(&self) -> Geometry {
            Geometry {
                kind: self.kind,
                size: self.bytes.len() as u64,
                erase_size: self.erase_size,
                write_size: 1,
            }
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
            let o = offset as usize;
            let src = self
                .bytes
                .get(o..o + buf.len())
                .ok_or_else(|| Error::new(ErrorKind::OutOfRange, Op::Read))?;
            buf.copy_from_slice(src);
            Ok(ReadStatus::Clean)
        }
        fn erase_block(&mut self, block: u32) -> Result<(), Error> {
            let es = self.erase_size as usize;
            let o = block as usize * es;
            self.bytes[o..o + es].fill(0xFF);
            Ok(())
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
            if self
                .fail_write_at
                .is_some_and(|f| (offset..offset + data.len() as u64).contains(&f))
            {
                return Err(Error::new(ErrorKind::Io, Op::Write).with_errno(5));
            }
            if self
                .new_bad_at
                .is_some_and(|f| (offset..offset + data.len() as u64).contains(&f))
            {
                self.new_bad_at = None;
                return Err(Error::new(ErrorKind::NewBadBlock, Op::Write)
                    .with_block((offset / 4096) as u32));
            }
            self.writes.push((offset, data.len()));
            let o = offset as usize;
            let dst = self
                .bytes
                .get_mut(o..o + data.len())
                .ok_or_else(|| Error::new(ErrorKind::OutOfRange, Op::Write))?;
            dst.copy_from_slice(data);
            Ok(())
        }
        fn is_bad(&mut self, _block: u32) -> Result<bool, Error> {
            Ok(false)
        }
        fn mark_bad(&mut self, _block: u32) -> Result<(), Error> {
            Ok(())
        }
    }

    pub fn keypair() -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]))
    }

    pub fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    pub fn signed(image: &[u8], block_size: u32, version: &str) -> (Manifest, Vec<u8>) {
        let kp = keypair();
        let spec = proto::manifest::ManifestSpec {
            board: "acme,rt1",
            version,
            block_size,
            chunk_size: 1024,
            created_unix: 1,
            min_version: "",
        };
        let signed = proto::manifest::sign(&spec, image, &kp.sk).expect("sign");
        (Manifest::verify(&signed, &kp.pk).expect("verify"), signed)
    }

    #[test]
    fn in_place_withholds_a_matching_header_unless_everything_matches() {
        let s = blocks_to_report(&[true, false, true], true);
        assert_eq!(s.present, [2]);
        assert_eq!(s.matched, 2);
        assert!(s.header_withheld);
        let s = blocks_to_report(&[true, true, true], true);
        assert_eq!(s.present, [0, 1, 2]);
        assert!(!s.header_withheld);
        let s = blocks_to_report(&[true, false, true], false);
        assert_eq!(s.present, [0, 2]);
        let s = blocks_to_report(&[false, true, true], true);
        assert_eq!(s.present, [1, 2]);
        assert!(!s.header_withheld);
    }

    /// A plain writer with 4 KiB image blocks over `flash`.
    fn writer_4k(flash: MemFlash, image_len: u64) -> ImageWriter<MemFlash> {
        let opts = WriterOptions {
            header_last: false,
            verify: true,
        };
        ImageWriter::new(flash, image_len, 4096, opts).expect("writer")
    }

    #[test]
    fn erased_blocks_match_only_where_the_image_itself_is_erased() {
        // Block 1 of this image is all 0xFF: on an erased flash it is already "written".
        let mut img = image(4096 * 3);
        img[4096..8192].fill(0xFF);
        let (m, _) = signed(&img, 4096, "2.0");
        let flash = MemFlash::new(64 * 1024);
        let mut w = writer_4k(flash, img.len() as u64);
        let s = scan(&mut w, &m, false);
        assert_eq!(s.matched, 1);
        assert_eq!(s.present, [1]);
    }

    #[test]
    fn uniform_blocks_are_checked_against_their_own_byte() {
        // Block 0 is all 0x00, block 2 all 0xFF: a target holding zeros
        // (a fresh file) matches block 0 only, an erased one block 2 only.
        let mut img = image(4096 * 3);
        img[..4096].fill(0x00);
        img[8192..].fill(0xFF);
        let (m, _) = signed(&img, 4096, "2.0");
        for (fill, want) in [(0x00u8, [0u32]), (0xFF, [2])] {
            let mut flash = MemFlash::new(64 * 1024);
            flash.bytes.fill(fill);
            let mut w = writer_4k(flash, img.len() as u64);
            let s = scan(&mut w, &m, false);
            assert_eq!(s.present, want, "target filled with {fill:#04x}");
        }
    }

    #[test]
    fn scan_finds_written_blocks_and_verify_finds_bad_ones() {
        let img = image(4096 * 3 + 100);
        let (m, _) = signed(&img, 4096, "2.0");
        let mut flash = MemFlash::new(64 * 1024);
        // blocks 0 and 2 already written, block 3 (the short tail) corrupt
        flash.bytes[..4096].copy_from_slice(&img[..4096]);
        flash.bytes[8192..12288].copy_from_slice(&img[8192..12288]);
        let mut w = ImageWriter::new(
            flash,
            img.len() as u64,
            4096,
            WriterOptions {
                header_last: true,
                verify: true,
            },
        )
        .expect("writer");
        let s = scan(&mut w, &m, true);
        assert_eq!(s.matched, 2);
        assert_eq!(s.present, [2]);
        assert!(s.header_withheld);
        let s = scan(&mut w, &m, false);
        assert_eq!(s.present, [0, 2]);
        let none = Fingerprints::new(&m);
        let all = verify(&mut w, &m, &none, FinalReadBack::All);
        assert_eq!((all.bad, all.read), (vec![1, 3], 4));
        w.write_block(1, &img[4096..8192]).expect("write 1");
        w.write_block(3, &img[12288..]).expect("write 3");
        assert!(verify(&mut w, &m, &none, FinalReadBack::All).bad.is_empty());
        // Blocks 0 and 2 were read back by the scans above, 1 and 3 by their
        // writes, nothing was written since: none needs reading again.
        let stale = verify(&mut w, &m, &none, FinalReadBack::Stale);
        assert_eq!(stale, Verified::default());
        assert_eq!(scan(&mut w, &m, true).present, [0, 1, 2, 3]);
    }

    /// Blocks far larger than the writer's read-back piece
    /// ([`flasher::writer::READ_PIECE`]): a block that starts with a long
    /// run of one byte and then differs, a uniform block, an ordinary one
    /// and a short tail are found by the scan with the fingerprints of
    /// their whole bytes, and a bit flipped deep inside one is caught.
    #[test]
    fn blocks_read_in_pieces_match_as_whole_blocks() {
        let bs = 65_536usize;
        let mut img = image(3 * bs + 10_000);
        img[..20_000].fill(0xFF);
        img[bs..2 * bs].fill(0x00);
        let (m, _) = signed(&img, bs as u32, "2.0");
        let mut flash = MemFlash::new(4 * bs);
        flash.bytes[..img.len()].copy_from_slice(&img);
        let opts = WriterOptions {
            header_last: false,
            verify: true,
        };
        let mut w = ImageWriter::new(flash, img.len() as u64, bs as u32, opts).expect("writer");
        let mut prints = Fingerprints::new(&m);
        let mut sc = Scanner::new(&m, false);
        let mut present = Vec::new();
        sc.step(&mut w, &m, u32::MAX, &mut prints, |i| present.push(i));
        assert_eq!(present, [0, 1, 2, 3]);
        for (i, block) in img.chunks(bs).enumerate() {
            assert_eq!(
                prints.get(i as u32),
                Some(CRC32.checksum(block)),
                "block {i}"
            );
        }
        let all = verify(&mut w, &m, &prints, FinalReadBack::All);
        assert_eq!((all.bad.len(), all.read), (0, 4));
        // One bit deep in block 0's run of 0xFF, one in block 2's last piece.
        w.flash_mut().bytes[19_000] ^= 0x01;
        w.flash_mut().bytes[3 * bs - 3] ^= 0x01;
        let all = verify(&mut w, &m, &prints, FinalReadBack::All);
        assert_eq!(all.bad, [0, 2]);
        let none = Fingerprints::new(&m);
        let all = verify(&mut w, &m, &none, FinalReadBack::All);
        assert_eq!(all.bad, [0, 2], "against the manifest's digests");
        assert_eq!(scan(&mut w, &m, false).present, [1, 3]);
    }

    #[test]
    fn verify_compares_fingerprints_and_finds_what_changed_on_flash() {
        let img = image(4096 * 3);
        let (m, _) = signed(&img, 4096, "2.0");
        let mut w = writer_4k(MemFlash::new(64 * 1024), img.len() as u64);
        let mut prints = Fingerprints::new(&m);
        for (i, block) in img.chunks(4096).enumerate() {
            w.write_block(i as u32, block).expect("write");
            prints.record(i as u32, block);
        }
        let all = verify(&mut w, &m, &prints, FinalReadBack::All);
        assert_eq!((all.bad.len(), all.read), (0, 3));
        // One bit of block 1 flipped after its write (a disturbed cell, a
        // stray write) by whoever held the flash: the fingerprint catches it,
        // also in a read-back of the stale blocks only (all are stale now).
        w.flash_mut().bytes[4096 + 77] ^= 0x01;
        let stale = verify(&mut w, &m, &prints, FinalReadBack::Stale);
        assert_eq!((stale.bad, stale.read), (vec![1], 3));
        let stale = verify(&mut w, &m, &prints, FinalReadBack::Stale);
        assert_eq!(
            (stale.bad, stale.read),
            (vec![1], 1),
            "only block 1 left to read"
        );
        let flash = w.into_inner();
        let mut w = writer_4k(flash, img.len() as u64);
        let all = verify(&mut w, &m, &prints, FinalReadBack::All);
        assert_eq!(all.bad, [1]);
        // The scan records what it finds: blocks 0 and 2 still match.
        let mut scanned = Fingerprints::new(&m);
        let mut sc = Scanner::new(&m, false);
        let mut present = Vec::new();
        sc.step(&mut w, &m, u32::MAX, &mut scanned, |i| present.push(i));
        assert_eq!(present, [0, 2]);
        assert_eq!(scanned.get(0), prints.get(0));
        assert_eq!(scanned.get(1), None);
        assert_eq!(scanned.get(2), prints.get(2));
    }
}

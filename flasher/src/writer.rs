//! [`ImageWriter`]: writes an image, block by block in any order, onto a
//! [`Flash`] following the rules of SWUpdate's flash handler and mtd-utils'
//! `nandwrite`.
//!
//! - **Logical addressing.** Image block `i` lives at logical offset
//!   `i * block_size`. Logical eraseblock `k` is the `k`-th good physical
//!   eraseblock (bad ones are skipped, as `nandwrite` and U-Boot's
//!   `nand write` do). The map is built once in [`ImageWriter::new`]; if the
//!   good blocks cannot hold the image, `new` fails with
//!   [`ErrorKind::NoSpareBlocks`] before anything is written.
//! - **Erase just before write, whole pages, read back.** A block covering
//!   whole eraseblocks erases each and writes it. Several blocks sharing one
//!   eraseblock are written directly when the eraseblock was erased in this
//!   run and the target still reads `0xFF`; otherwise read-modify-write (the
//!   other blocks in it are preserved, the new block is programmed last),
//!   except blocks the caller marked to be written
//!   ([`ImageWriter::mark_to_write`]): their places are left erased, so each
//!   eraseblock is erased once when its blocks are all to be written. The
//!   short last block is padded with `0xFF` to the page. All-`0xFF` NAND pages
//!   are not programmed, so they stay programmable.
//! - **New bad blocks.** On NAND an erase or write failing with EIO marks the
//!   physical block bad and returns [`ErrorKind::NewBadBlock`]: the writer has
//!   already rebuilt its map, and the caller must rescan (`read_block`) since
//!   every later logical block moved.
//! - **Header last** ([`WriterOptions::header_last`], in-place updates): the
//!   caller calls [`ImageWriter::invalidate_header`] first, writes blocks
//!   `1..n`, then block 0. Then, after a power cut at any point, the flash
//!   holds a complete new image whenever it holds the new header.
//!
//! - **What has been read back** ([`ImageWriter::is_read_back`]): every
//!   erase and program stamps its eraseblock first; a block counts as read
//!   back after its write's verify, or a [`ImageWriter::read_block`] the
//!   caller confirmed ([`ImageWriter::confirm_read_back`]), until one of its
//!   eraseblocks is stamped again (module `ledger`). The agent's final
//!   read-back reads only the blocks that are not.
//!
//! Buffers are allocated in `new`; writing allocates nothing. Reading back
//! (verify, the erased check, [`ImageWriter::read_block_pieces`]) goes
//! through one buffer of [`READ_PIECE`] bytes, not a whole image block: on a
//! device with 1 MiB for the agent, a 64 KiB block is 6% of it.

mod ledger;

use crate::{Error, ErrorKind, Flash, FlashKind, Geometry, Op, ReadStatus};
use ledger::ReadBackLedger;

/// How an [`ImageWriter`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// In-place update: block 0 (the header) is written last by the caller,
    /// and the old header is invalidated first ([`ImageWriter::invalidate_header`]).
    pub header_last: bool,
    /// Read back and compare every write (default true).
    pub verify: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            header_last: false,
            verify: true,
        }
    }
}

/// The flash plus the logical → physical eraseblock map.
#[derive(Debug)]
struct Mapped<F> {
    flash: F,
    geo: Geometry,
    /// `map[k]` = physical eraseblock of logical eraseblock `k`.
    map: Vec<u32>,
    /// Bad physical eraseblocks skipped while building `map`.
    skipped: u32,
    /// Every erase and program is stamped here first.
    ledger: ReadBackLedger,
    /// Eraseblocks erased by this writer.
    erases: u64,
}

impl<F: Flash> Mapped<F> {
    fn erase_size(&self) -> u64 {
        u64::from(self.geo.erase_size)
    }

    /// Rebuilds the map for `needed` logical eraseblocks.
    fn build_map(&mut self, needed: u32) -> Result<(), Error> {
        // Every logical eraseblock may move: nothing read back counts.
        self.ledger.touch_all();
        self.map.clear();
        self.skipped = 0;
        let total = self.geo.eraseblocks();
        let mut p = 0;
        while self.map.len() < needed as usize && p < total {
            if self.flash.is_bad(p)? {
                self.skipped += 1;
            } else {
                self.map.push(p);
            }
            p += 1;
        }
        if self.map.len() < needed as usize {
            return Err(
                Error::new(ErrorKind::NoSpareBlocks, Op::BadBlockQuery).with_detail(format!(
                    "image needs {needed} eraseblocks, only {} of {total} are good",
                    self.map.len()
                )),
            );
        }
        Ok(())
    }

    /// Physical byte offset of logical byte offset `off`, and the physical block.
    fn locate(&self, off: u64) -> (u32, u64) {
        let es = self.erase_size();
        let p = self.map[(off / es) as usize];
        (p, u64::from(p) * es + off % es)
    }

    fn read(&mut self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        for (at, range) in PieceIter::new(off, buf.len(), self.erase_size()) {
            let (p, phys) = self.locate(at);
            match self.flash.read(phys, &mut buf[range]) {
                Ok(ReadStatus::Clean) => {}
                Ok(ReadStatus::Corrected(bits)) => {
                    log::debug!("eraseblock {p}: ECC corrected {bits} bitflips");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// An erase or write on NAND failing with EIO: mark the block bad.
    fn went_bad(&mut self, e: Error, p: u32) -> Error {
        if self.geo.kind != FlashKind::Nand || e.kind != ErrorKind::Io {
            return e;
        }
        log::warn!("{e}; marking eraseblock {p} bad");
        if let Err(m) = self.flash.mark_bad(p) {
            return m.with_detail(format!("after {e}"));
        }
        let mut out = Error::new(ErrorKind::NewBadBlock, e.op).with_block(p);
        out.errno = e.errno;
        out.offset = e.offset;
        out
    }

    fn erase(&mut self, logical_block: u32) -> Result<(), Error> {
        self.ledger.touch(logical_block);
        let p = self.map[logical_block as usize];
        match self.flash.erase_block(p) {
            Ok(()) => {
                self.erases += 1;
                Ok(())
            }
            Err(e) => Err(self.went_bad(e, p)),
        }
    }

    /// Programs `data` (a multiple of the write size) at logical `off`.
    /// On NAND, all-`0xFF` pages are skipped so they stay programmable.
    fn program(&mut self, off: u64, data: &[u8]) -> Result<(), Error> {
        let ws = self.geo.write_size as usize;
        let skip_ff = self.geo.kind == FlashKind::Nand;
        for (at, range) in PieceIter::new(off, data.len(), self.erase_size()) {
            self.ledger.touch((at / self.erase_size()) as u32);
            let (p, phys) = self.locate(at);
            let piece = &data[range];
            if !skip_ff {
                if let Err(e) = self.flash.write(phys, piece) {
                    return Err(self.went_bad(e, p));
                }
                continue;
            }
            // Runs of pages that are not all 0xFF.
            let mut page = 0usize;
            let pages = piece.len().div_ceil(ws);
            while page < pages {
                let is_ff = |i: usize| {
                    piece[i * ws..((i + 1) * ws).min(piece.len())]
                        .iter()
                        .all(|&b| b == 0xFF)
                };
                if is_ff(page) {
                    page += 1;
                    continue;
                }
                let start = page;
                while page < pages && !is_ff(page) {
                    page += 1;
                }
                let bytes = start * ws..(page * ws).min(piece.len());
                if let Err(e) = self.flash.write(phys + bytes.start as u64, &piece[bytes]) {
                    return Err(self.went_bad(e, p));
                }
            }
        }
        Ok(())
    }
}

/// Splits logical `[off, off + len)` at eraseblock boundaries:
/// yields (logical offset, range within the buffer).
struct PieceIter {
    off: u64,
    len: usize,
    done: usize,
    es: u64,
}

impl PieceIter {
    fn new(off: u64, len: usize, es: u64) -> Self {
        PieceIter {
            off,
            len,
            done: 0,
            es,
        }
    }
}

impl Iterator for PieceIter {
    type Item = (u64, std::ops::Range<usize>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.done >= self.len {
            return None;
        }
        let at = self.off + self.done as u64;
        let n = ((self.es - at % self.es) as usize).min(self.len - self.done);
        let r = self.done..self.done + n;
        self.done += n;
        Some((at, r))
    }
}

/// Writes `data` at logical `off`, padding a partial last page with `0xFF`.
fn program_padded<F: Flash>(
    m: &mut Mapped<F>,
    page_buf: &mut [u8],
    off: u64,
    data: &[u8],
) -> Result<(), Error> {
    let ws = page_buf.len();
    let full = data.len() / ws * ws;
    m.program(off, &data[..full])?;
    let tail = &data[full..];
    if !tail.is_empty() {
        page_buf[..tail.len()].copy_from_slice(tail);
        page_buf[tail.len()..].fill(0xFF);
        m.program(off + full as u64, page_buf)?;
    }
    Ok(())
}

/// The byte ranges of one logical eraseblock (offsets within it) whose old
/// contents a read-modify-write keeps, adjacent ones merged: the eraseblock
/// is `block_size` slots, and a slot loses the padded place of its image
/// block when that block is the one being written or is marked to be
/// written. Bytes past the image are kept.
#[derive(Debug, Clone)]
struct KeptRuns<'a> {
    to_write: &'a [bool],
    /// Image block in the eraseblock's first slot, and the next slot.
    first_block: u64,
    slot: usize,
    slots: usize,
    block_size: u64,
    write_size: u64,
    image_len: u64,
    /// The image block being written.
    writing: u64,
}

impl<'a> KeptRuns<'a> {
    /// Runs of logical eraseblock `l` of `geo` while image block `writing`
    /// (of an image of `image_len` bytes in blocks of `block_size`, which
    /// divides the eraseblock) is written.
    fn new(
        to_write: &'a [bool],
        geo: &Geometry,
        (image_len, block_size): (u64, u32),
        l: u32,
        writing: u32,
    ) -> Self {
        let es = u64::from(geo.erase_size);
        let bs = u64::from(block_size);
        KeptRuns {
            to_write,
            first_block: u64::from(l) * es / bs,
            slot: 0,
            slots: (es / bs) as usize,
            block_size: bs,
            write_size: u64::from(geo.write_size),
            image_len,
            writing: u64::from(writing),
        }
    }

    /// What slot `j` keeps, as offsets within the eraseblock.
    fn kept(&self, j: usize) -> std::ops::Range<usize> {
        let index = self.first_block + j as u64;
        let marked = usize::try_from(index)
            .ok()
            .and_then(|i| self.to_write.get(i))
            .is_some_and(|&t| t);
        let dropped = if index == self.writing || marked {
            // The block's padded place; 0 past the image. The block size is
            // a multiple of the page, so this is at most the slot.
            let len = self.image_len.saturating_sub(index * self.block_size);
            round_up(len.min(self.block_size), self.write_size)
        } else {
            0
        };
        let at = j as u64 * self.block_size;
        (at + dropped) as usize..(at + self.block_size) as usize
    }
}

impl Iterator for KeptRuns<'_> {
    type Item = std::ops::Range<usize>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut run: Option<std::ops::Range<usize>> = None;
        while self.slot < self.slots {
            let k = self.kept(self.slot);
            match run.as_mut() {
                None if k.is_empty() => {}
                None => run = Some(k),
                Some(r) if !k.is_empty() && r.end == k.start => r.end = k.end,
                // This slot starts the next run.
                Some(_) => break,
            }
            self.slot += 1;
        }
        run
    }
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Bytes read from flash at a time when reading back (rounded up to the
/// page): an eighth of a default 64 KiB block's RAM, for eight system calls
/// instead of one (bench/README.md, "The flash writer reads back in
/// pieces").
pub const READ_PIECE: usize = 8 * 1024;

/// Writes an image of `image_len` bytes in blocks of `block_size` onto a
/// [`Flash`], skipping bad blocks; see the module docs for the rules.
pub struct ImageWriter<F: Flash> {
    m: Mapped<F>,
    image_len: u64,
    block_size: u32,
    opts: WriterOptions,
    /// Logical eraseblocks needed for the image.
    needed: u32,
    /// Per logical eraseblock: erased in this run (the shared-eraseblock case).
    erased: Vec<bool>,
    /// [`READ_PIECE`] bytes (or one page, if larger): the read-back of
    /// verify and the erased check, and the `0xFF` fill on plain files.
    piece_buf: Vec<u8>,
    /// One page, for padding the short last block.
    page_buf: Vec<u8>,
    /// One eraseblock, for read-modify-write when blocks share an eraseblock.
    erase_buf: Vec<u8>,
    /// Per image block, when blocks share eraseblocks: marked to be written
    /// ([`ImageWriter::mark_to_write`]) and not written since.
    to_write: Vec<bool>,
}

impl<F: Flash + std::fmt::Debug> std::fmt::Debug for ImageWriter<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Buffers left out on purpose: they are large and say nothing.
        f.debug_struct("ImageWriter")
            .field("flash", &self.m.flash)
            .field("geometry", &self.m.geo)
            .field("image_len", &self.image_len)
            .field("block_size", &self.block_size)
            .field("opts", &self.opts)
            .field("map", &self.m.map)
            .field("bad_blocks_skipped", &self.m.skipped)
            .finish_non_exhaustive()
    }
}

impl<F: Flash> ImageWriter<F> {
    /// Prepares to write an image of `image_len` bytes in blocks of
    /// `block_size` bytes: checks the geometry, builds the bad-block map and
    /// allocates the buffers. Writes nothing.
    ///
    /// Errors: [`ErrorKind::Geometry`] unless `block_size` is a multiple of
    /// the eraseblock size or divides it (and is a multiple of the page size);
    /// [`ErrorKind::OutOfRange`] if the image is larger than the device;
    /// [`ErrorKind::NoSpareBlocks`] if the good eraseblocks cannot hold it.
    pub fn new(
        flash: F,
        image_len: u64,
        block_size: u32,
        opts: WriterOptions,
    ) -> Result<Self, Error> {
        let geo = flash.geometry();
        let geometry_err =
            |msg: String| Err(Error::new(ErrorKind::Geometry, Op::Open).with_detail(msg));
        let (es, ws, bs) = (geo.erase_size, geo.write_size, block_size);
        if es == 0 || ws == 0 || bs == 0 {
            return geometry_err(format!(
                "zero size (block {bs}, eraseblock {es}, write {ws})"
            ));
        }
        if geo.kind != FlashKind::Plain {
            if es % ws != 0 {
                return geometry_err(format!(
                    "eraseblock {es} is not a multiple of the page {ws}"
                ));
            }
            if !(bs % es == 0 || es % bs == 0) || bs % ws != 0 {
                return geometry_err(format!(
                    "block size {bs} must be a multiple or a divisor of the eraseblock size {es} and a multiple of the page size {ws}"
                ));
            }
        }
        let padded = round_up(image_len, u64::from(ws));
        if padded > geo.size {
            return Err(
                Error::new(ErrorKind::OutOfRange, Op::Open).with_detail(format!(
                    "image of {image_len} bytes does not fit in {} bytes of flash",
                    geo.size
                )),
            );
        }
        let needed = u32::try_from(padded.div_ceil(u64::from(es)))
            .map_err(|_| Error::new(ErrorKind::OutOfRange, Op::Open))?;
        if image_len > u64::from(u32::MAX) * u64::from(bs) {
            return Err(Error::new(ErrorKind::OutOfRange, Op::Open)
                .with_detail("more than 2^32 image blocks"));
        }
        let mut m = Mapped {
            flash,
            geo,
            map: Vec::with_capacity(needed as usize),
            skipped: 0,
            ledger: ReadBackLedger::new(needed, u64::from(es), image_len, u64::from(bs)),
            erases: 0,
        };
        m.build_map(needed)?;
        let shares_eraseblocks = geo.kind != FlashKind::Plain && bs < es;
        Ok(ImageWriter {
            m,
            image_len,
            block_size,
            opts,
            needed,
            erased: vec![false; needed as usize],
            piece_buf: vec![0; round_up(READ_PIECE as u64, u64::from(ws)) as usize],
            page_buf: vec![0xFF; ws as usize],
            erase_buf: if shares_eraseblocks {
                vec![0; es as usize]
            } else {
                Vec::new()
            },
            to_write: if shares_eraseblocks {
                // `image_len` was bounded to 2^32 blocks above.
                vec![false; image_len.div_ceil(u64::from(bs)) as usize]
            } else {
                Vec::new()
            },
        })
    }

    /// The flash.
    #[must_use]
    pub fn flash(&self) -> &F {
        &self.m.flash
    }

    /// The flash, mutably (e.g. to `sync` or inject faults in tests). The
    /// caller may change anything: no block counts as read back after this
    /// ([`ImageWriter::is_read_back`]).
    pub fn flash_mut(&mut self) -> &mut F {
        self.m.ledger.touch_all();
        &mut self.m.flash
    }

    /// Gives the flash back.
    #[must_use]
    pub fn into_inner(self) -> F {
        self.m.flash
    }

    /// Number of image blocks (the last may be short).
    #[must_use]
    pub fn block_count(&self) -> u32 {
        // `new` bounds the count to u32.
        self.image_len.div_ceil(u64::from(self.block_size)) as u32
    }

    /// The eraseblock size when image blocks are smaller than the
    /// eraseblocks they share (flash, not a plain file): each write then
    /// reads, erases and rewrites the eraseblock unless this run erased it
    /// and the block's place still reads erased. Neighbours marked
    /// [`ImageWriter::mark_to_write`] are left erased; any other neighbour
    /// is kept, in an eraseblock-sized buffer, and costs its eraseblock one
    /// more erase when its own write comes. `None` when every block covers
    /// whole eraseblocks.
    #[must_use]
    pub fn shared_eraseblock_size(&self) -> Option<u32> {
        (!self.erase_buf.is_empty()).then_some(self.m.geo.erase_size)
    }

    /// Bad physical eraseblocks skipped by the current map.
    #[must_use]
    pub fn bad_blocks_skipped(&self) -> u32 {
        self.m.skipped
    }

    /// Eraseblocks this writer has erased (flash wear; 0 on a plain file).
    #[must_use]
    pub fn erases(&self) -> u64 {
        self.m.erases
    }

    /// The caller read image block `index` and found it wrong, and will
    /// write it in this run: until it does, a read-modify-write of an
    /// eraseblock the block shares leaves the block's place erased instead
    /// of rewriting its old bytes, so its own write programs it without a
    /// second erase. Its old bytes may be lost from then on. Nothing happens
    /// when blocks cover whole eraseblocks, or for an index past the image.
    pub fn mark_to_write(&mut self, index: u32) {
        if let Some(t) = self.to_write.get_mut(index as usize) {
            *t = true;
        }
    }

    /// Logical offset and length of image block `index`.
    fn block_range(&self, op: Op, index: u32) -> Result<(u64, usize), Error> {
        if index >= self.block_count() {
            return Err(Error::new(ErrorKind::OutOfRange, op)
                .with_detail(format!("image block {index} of {}", self.block_count())));
        }
        if self.m.map.len() < self.needed as usize {
            // A remap after a new bad block ran out of good blocks.
            return Err(Error::new(ErrorKind::NoSpareBlocks, op)
                .with_detail("no good eraseblocks left for the image after a new bad block"));
        }
        let start = u64::from(index) * u64::from(self.block_size);
        let len = (self.image_len - start).min(u64::from(self.block_size)) as usize;
        Ok((start, len))
    }

    /// Reads image block `index` into `buf` (at least the block's length,
    /// normally `block_size`) and returns the block's length (the last block
    /// may be short). For the resume scan.
    pub fn read_block(&mut self, index: u32, buf: &mut [u8]) -> Result<usize, Error> {
        let (start, len) = self.block_range(Op::Read, index)?;
        if buf.len() < len {
            return Err(
                Error::new(ErrorKind::OutOfRange, Op::Read).with_detail(format!(
                    "buffer of {} bytes for image block {index} of {len} bytes",
                    buf.len()
                )),
            );
        }
        self.m.read(start, &mut buf[..len])?;
        self.m.ledger.read(index);
        Ok(len)
    }

    /// Reads image block `index` a piece at a time into the writer's own
    /// read-back buffer, hands each piece to `piece` in order, and returns
    /// the block's length: the resume scan, the final read-back and the
    /// already-there check hash or compare a block without a block-sized
    /// buffer in the device's RAM. Counts as a [`ImageWriter::read_block`]
    /// for [`ImageWriter::confirm_read_back`] once every piece was read.
    pub fn read_block_pieces(
        &mut self,
        index: u32,
        mut piece: impl FnMut(&[u8]),
    ) -> Result<usize, Error> {
        let (start, len) = self.block_range(Op::Read, index)?;
        self.read_pieces(start, len, |_, p| {
            piece(p);
            true
        })?;
        self.m.ledger.read(index);
        Ok(len)
    }

    /// Reads logical `[start, start + len)` a piece at a time and hands
    /// each piece and its offset from `start` to `f`, until `f` says stop.
    /// Returns whether every piece was read.
    fn read_pieces(
        &mut self,
        start: u64,
        len: usize,
        mut f: impl FnMut(usize, &[u8]) -> bool,
    ) -> Result<bool, Error> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.piece_buf.len());
            let buf = &mut self.piece_buf[..n];
            self.m.read(start + done as u64, buf)?;
            if !f(done, buf) {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    /// Whether logical `[start, start + len)` reads all `0xFF`.
    fn reads_erased(&mut self, start: u64, len: usize) -> Result<bool, Error> {
        self.read_pieces(start, len, |_, p| p.iter().all(|&b| b == 0xFF))
    }

    /// The caller found the bytes of its last [`ImageWriter::read_block`] of
    /// `index` right (against the manifest's SHA-256 or a fingerprint taken
    /// when it matched). Ignored if anything was erased or programmed since
    /// that read, or if the last read was of another block.
    pub fn confirm_read_back(&mut self, index: u32) {
        self.m.ledger.confirm(index);
    }

    /// Whether block `index` was read back from flash and found right, by
    /// [`ImageWriter::write_block`]'s verify or a confirmed
    /// [`ImageWriter::read_block`], after the last erase or program of every
    /// eraseblock it lies in (in this writer's life, under its current
    /// bad-block map, with the flash not handed out by
    /// [`ImageWriter::flash_mut`] since). A later write into a shared
    /// eraseblock makes it stale: program disturb is a NAND fact.
    #[must_use]
    pub fn is_read_back(&self, index: u32) -> bool {
        self.m.ledger.is_read_back(index)
    }

    /// Erases what holds image block 0, so that an old header never sits in
    /// front of a half-written new image. Other image blocks sharing that
    /// eraseblock are preserved. Idempotent; meant for
    /// [`WriterOptions::header_last`].
    pub fn invalidate_header(&mut self) -> Result<(), Error> {
        if self.image_len == 0 {
            return Ok(());
        }
        let r = self.invalidate_header_inner();
        let r = self.after(r);
        r?;
        self.m.flash.sync()
    }

    fn invalidate_header_inner(&mut self) -> Result<(), Error> {
        let (_, len) = self.block_range(Op::Erase, 0)?;
        let ws = u64::from(self.m.geo.write_size);
        let es = self.m.erase_size();
        let padded = round_up(len as u64, ws);
        match self.m.geo.kind {
            FlashKind::Plain => {
                self.piece_buf.fill(0xFF);
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(self.piece_buf.len());
                    self.m.program(done as u64, &self.piece_buf[..n])?;
                    done += n;
                }
                Ok(())
            }
            _ if u64::from(self.block_size) >= es => {
                for l in 0..padded.div_ceil(es) as u32 {
                    self.m.erase(l)?;
                    self.erased[l as usize] = true;
                }
                Ok(())
            }
            _ => {
                if self.reads_erased(0, padded as usize)? {
                    return Ok(());
                }
                self.read_modify_erase(0, 0)
            }
        }
    }

    /// Reads what logical eraseblock `l` keeps, erases it, and rewrites
    /// that: everything but the places of image block `writing` (about to
    /// be written) and of blocks marked to be written. When nothing is kept
    /// nothing is read.
    fn read_modify_erase(&mut self, l: u32, writing: u32) -> Result<(), Error> {
        let es = self.m.erase_size();
        let base = u64::from(l) * es;
        let image = (self.image_len, self.block_size);
        let runs = KeptRuns::new(&self.to_write, &self.m.geo, image, l, writing);
        let mut lost = None;
        for r in runs.clone() {
            if let Err(e) = self
                .m
                .read(base + r.start as u64, &mut self.erase_buf[r.clone()])
            {
                if e.kind != ErrorKind::Uncorrectable {
                    return Err(e);
                }
                // Unreadable neighbours are lost either way; their digests
                // will not match on the next scan and they get written again.
                self.erase_buf[r].fill(0xFF);
                lost.get_or_insert(e);
            }
        }
        if let Some(e) = lost {
            log::warn!("{e}; rewriting logical eraseblock {l} without what could not be read");
        }
        self.m.erase(l)?;
        self.erased[l as usize] = true;
        for r in runs {
            self.m.program(base + r.start as u64, &self.erase_buf[r])?;
        }
        Ok(())
    }

    /// Erases what image block `index` occupies (just before writing it),
    /// writes `data` (exactly the block's length; the last block may be
    /// short and is padded with `0xFF` to the page) and, with
    /// [`WriterOptions::verify`], reads it back and compares.
    ///
    /// With [`WriterOptions::header_last`], writing block 0 first syncs
    /// everything written before it, and syncs again after.
    ///
    /// On [`ErrorKind::NewBadBlock`] the map has already been rebuilt (every
    /// later logical eraseblock moved): rescan with [`ImageWriter::read_block`].
    pub fn write_block(&mut self, index: u32, data: &[u8]) -> Result<(), Error> {
        let (start, len) = self.block_range(Op::Write, index)?;
        if data.len() != len {
            return Err(
                Error::new(ErrorKind::OutOfRange, Op::Write).with_detail(format!(
                    "image block {index} is {len} bytes, got {}",
                    data.len()
                )),
            );
        }
        let header = self.opts.header_last && index == 0;
        if header {
            self.m.flash.sync()?;
        }
        let r = self.write_inner(index, start, data);
        self.after(r)?;
        if let Some(t) = self.to_write.get_mut(index as usize) {
            *t = false;
        }
        if self.opts.verify {
            self.verify(start, data)?;
            self.m.ledger.written_and_checked(index);
        }
        if header {
            self.m.flash.sync()?;
        }
        Ok(())
    }

    fn write_inner(&mut self, index: u32, start: u64, data: &[u8]) -> Result<(), Error> {
        let es = self.m.erase_size();
        let ws = u64::from(self.m.geo.write_size);
        let padded = round_up(data.len() as u64, ws);
        if self.m.geo.kind == FlashKind::Plain {
            return self.m.program(start, data);
        }
        if u64::from(self.block_size) >= es {
            let first = (start / es) as u32;
            let last = ((start + padded - 1) / es) as u32;
            for l in first..=last {
                self.m.erase(l)?;
                self.erased[l as usize] = true;
                let lo = (u64::from(l) * es).max(start) - start;
                let hi = (u64::from(l + 1) * es).min(start + data.len() as u64) - start;
                program_padded(
                    &mut self.m,
                    &mut self.page_buf,
                    start + lo,
                    &data[lo as usize..hi as usize],
                )?;
            }
            return Ok(());
        }
        // Several image blocks share this eraseblock.
        let l = (start / es) as u32;
        let direct = self.erased[l as usize] && self.reads_erased(start, padded as usize)?;
        if !direct {
            self.read_modify_erase(l, index)?;
        }
        program_padded(&mut self.m, &mut self.page_buf, start, data)
    }

    fn verify(&mut self, start: u64, data: &[u8]) -> Result<(), Error> {
        let mut differs_at = None;
        // The word-wise compare first: the byte-by-byte search that names
        // the offset was 17% of an agent's CPU when it ran on every block.
        let read = self.read_pieces(start, data.len(), |at, piece| {
            let want = &data[at..at + piece.len()];
            if crate::same_bytes(piece, want) {
                return true;
            }
            differs_at = piece
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .map(|i| at + i);
            false
        });
        if let Err(mut e) = read {
            e.op = Op::Verify;
            return Err(e);
        }
        if let Some(i) = differs_at {
            let (p, phys) = self.m.locate(start + i as u64);
            return Err(Error::new(ErrorKind::VerifyMismatch, Op::Verify)
                .with_block(p)
                .with_offset(phys)
                .with_detail(format!("image offset {:#x}", start + i as u64)));
        }
        Ok(())
    }

    /// After a failed step: on a new bad block, rebuild the map now.
    fn after(&mut self, r: Result<(), Error>) -> Result<(), Error> {
        match r {
            Err(e) if e.kind == ErrorKind::NewBadBlock => {
                self.erased.fill(false);
                // Every later block moved: the caller scans again.
                self.to_write.fill(false);
                self.m.build_map(self.needed)?;
                Err(e)
            }
            r => r,
        }
    }

    #[cfg(test)]
    fn physical_of(&self, logical_block: u32) -> u32 {
        self.m.map[logical_block as usize]
    }
}

#[cfg(test)]
mod tests;

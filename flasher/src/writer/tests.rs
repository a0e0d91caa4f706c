use std::path::Path;

use super::*;
use crate::testutil::{random_bytes, TempDir};
use crate::{Faults, FileFlash, SimNand, SimNor};

/// What the tests need from both simulations.
trait Sim: Flash + Sized {
    fn reopen(path: &Path) -> Self;
    fn faults(&mut self, f: Faults);
    fn ops(&self) -> u64;
}

impl Sim for SimNor {
    fn reopen(path: &Path) -> Self {
        SimNor::open(path).expect("reopen SimNor")
    }
    fn faults(&mut self, f: Faults) {
        self.set_faults(f);
    }
    fn ops(&self) -> u64 {
        self.op_count()
    }
}

impl Sim for SimNand {
    fn reopen(path: &Path) -> Self {
        SimNand::open(path).expect("reopen SimNand")
    }
    fn faults(&mut self, f: Faults) {
        self.set_faults(f);
    }
    fn ops(&self) -> u64 {
        self.op_count()
    }
}

fn block(image: &[u8], bs: u32, i: u32) -> &[u8] {
    let s = i as usize * bs as usize;
    &image[s..(s + bs as usize).min(image.len())]
}

fn opts(header_last: bool) -> WriterOptions {
    WriterOptions {
        header_last,
        verify: true,
    }
}

fn write_all<F: Flash>(w: &mut ImageWriter<F>, image: &[u8], bs: u32) {
    for i in 0..w.block_count() {
        w.write_block(i, block(image, bs, i))
            .unwrap_or_else(|e| panic!("block {i}: {e}"));
    }
}

fn read_all<F: Flash>(w: &mut ImageWriter<F>, bs: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; bs as usize];
    for i in 0..w.block_count() {
        let n = w.read_block(i, &mut buf).expect("read_block");
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn file_prefix(path: &Path, len: usize) -> Vec<u8> {
    let mut data = std::fs::read(path).expect("read data file");
    data.truncate(len);
    data
}

/// Write `image`, then check through the file and through a new writer.
fn round_trip<S: Sim>(path: &Path, flash: S, image: &[u8], bs: u32) {
    let mut w = ImageWriter::new(flash, image.len() as u64, bs, opts(false)).expect("writer");
    assert_eq!(w.block_count() as usize, image.len().div_ceil(bs as usize));
    write_all(&mut w, image, bs);
    assert_eq!(read_all(&mut w, bs), image, "same writer, bs {bs}");
    drop(w);
    assert!(
        file_prefix(path, image.len()) == image,
        "file contents, bs {bs}"
    );
    let mut w =
        ImageWriter::new(S::reopen(path), image.len() as u64, bs, opts(false)).expect("writer");
    assert!(read_all(&mut w, bs) == image, "reopened, bs {bs}");
}

#[test]
fn nor_round_trip_all_block_size_relations() {
    let dir = TempDir::new("w-nor-rt");
    // 70_000 bytes: the last block is short for every block size below.
    let image = random_bytes(11, 70_000);
    for (n, bs) in [1024u32, 4096, 16_384].into_iter().enumerate() {
        for ws in [1u32, 4] {
            let p = dir.join(&format!("nor-{n}-{ws}.bin"));
            let nor = SimNor::create(&p, 32 * 4096, 4096, ws).expect("create");
            round_trip(&p, nor, &image, bs);
        }
    }
}

#[test]
fn nand_round_trip_all_block_size_relations() {
    let dir = TempDir::new("w-nand-rt");
    let image = random_bytes(12, 70_001);
    for (n, bs) in [2048u32, 8192, 32_768].into_iter().enumerate() {
        let p = dir.join(&format!("nand-{n}.bin"));
        let nand = SimNand::create(&p, 16 * 8192, 8192, 512, &[]).expect("create");
        round_trip(&p, nand, &image, bs);
    }
}

#[test]
fn nand_round_trip_over_an_old_image_and_out_of_order() {
    // Blocks written in any order over old contents (the resume case).
    let dir = TempDir::new("w-nand-order");
    let old = random_bytes(20, 40_000);
    let new = random_bytes(21, 40_000);
    for bs in [1024u32, 4096, 8192] {
        let p = dir.join(&format!("nand-{bs}.bin"));
        let nand = SimNand::create(&p, 16 * 4096, 4096, 512, &[]).expect("create");
        let mut w = ImageWriter::new(nand, old.len() as u64, bs, opts(false)).expect("writer");
        write_all(&mut w, &old, bs);
        let n = w.block_count();
        let order: Vec<u32> = (0..n)
            .rev()
            .filter(|i| i % 2 == 1)
            .chain((0..n).filter(|i| i % 2 == 0))
            .collect();
        assert_eq!(order.len() as u32, n);
        let mut w =
            ImageWriter::new(w.into_inner(), new.len() as u64, bs, opts(false)).expect("writer");
        for &i in &order {
            w.write_block(i, block(&new, bs, i)).expect("write");
        }
        // Rewriting a block already written in this run keeps its neighbours.
        w.write_block(1, block(&new, bs, 1)).expect("rewrite");
        assert!(read_all(&mut w, bs) == new, "bs {bs}");
        assert!(file_prefix(&p, new.len()) == new);
    }
}

#[test]
fn nand_bad_blocks_are_skipped() {
    let dir = TempDir::new("w-nand-bad");
    let es = 4096usize;
    // 5 eraseblocks of data (short last block); 8 physical, 1 and 3 bad.
    let image = random_bytes(30, 4 * es + 1000);
    for bs in [1024u32, 4096, 8192] {
        let p = dir.join(&format!("nand-{bs}.bin"));
        let nand = SimNand::create(&p, 8 * es as u64, es as u32, 512, &[1, 3]).expect("create");
        let mut w = ImageWriter::new(nand, image.len() as u64, bs, opts(false)).expect("writer");
        assert_eq!(w.bad_blocks_skipped(), 2);
        assert_eq!(
            (0..5).map(|l| w.physical_of(l)).collect::<Vec<_>>(),
            vec![0, 2, 4, 5, 6]
        );
        write_all(&mut w, &image, bs);
        drop(w);
        let raw = std::fs::read(&p).expect("read");
        assert!(
            raw[es..2 * es].iter().all(|&b| b == 0xFF),
            "block 1 untouched"
        );
        assert!(
            raw[3 * es..4 * es].iter().all(|&b| b == 0xFF),
            "block 3 untouched"
        );
        assert!(raw[..es] == image[..es]);
        assert!(raw[2 * es..3 * es] == image[es..2 * es]);
        assert!(raw[6 * es..6 * es + 1000] == image[4 * es..]);
        let mut w = ImageWriter::new(SimNand::reopen(&p), image.len() as u64, bs, opts(false))
            .expect("writer");
        assert_eq!(w.bad_blocks_skipped(), 2);
        assert!(read_all(&mut w, bs) == image);
    }
}

#[test]
fn nand_not_enough_good_blocks_fails_before_writing() {
    let dir = TempDir::new("w-nand-nospare");
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[1, 3]).expect("create");
    let before = std::fs::read(&p).expect("read");
    // 7 eraseblocks needed, 6 good.
    let Err(e) = ImageWriter::new(nand, 6 * 4096 + 1, 4096, opts(false)) else {
        panic!("must fail with NoSpareBlocks");
    };
    assert_eq!(e.kind, ErrorKind::NoSpareBlocks);
    assert!(e.to_string().contains("only 6 of 8"), "{e}");
    assert_eq!(std::fs::read(&p).expect("read"), before);
    // Exactly enough is fine.
    let nand = SimNand::reopen(&p);
    let w = ImageWriter::new(nand, 6 * 4096, 4096, opts(false)).expect("fits");
    assert_eq!(w.flash().op_count(), 0);
}

#[test]
fn image_larger_than_device_or_bad_geometry_is_refused() {
    let dir = TempDir::new("w-geom");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    let kind = |r: Result<ImageWriter<&mut SimNand>, Error>| match r {
        Ok(_) => panic!("must fail"),
        Err(e) => e.kind,
    };
    assert_eq!(
        kind(ImageWriter::new(&mut nand, 8 * 4096 + 1, 4096, opts(false))),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        kind(ImageWriter::new(&mut nand, 4096, 3072, opts(false))),
        ErrorKind::Geometry
    );
    assert_eq!(
        kind(ImageWriter::new(&mut nand, 4096, 256, opts(false))),
        ErrorKind::Geometry
    );
    assert_eq!(
        kind(ImageWriter::new(&mut nand, 4096, 6144, opts(false))),
        ErrorKind::Geometry
    );
    // A multiple that is not a power of two is fine.
    assert!(ImageWriter::new(&mut nand, 4096, 12_288, opts(false)).is_ok());
    assert_eq!(
        kind(ImageWriter::new(&mut nand, 4096, 0, opts(false))),
        ErrorKind::Geometry
    );
    let mut w = ImageWriter::new(&mut nand, 5000, 4096, opts(false)).expect("ok");
    assert_eq!(w.block_count(), 2);
    let e = w.write_block(1, &[0u8; 1000]).expect_err("wrong length");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    let e = w.write_block(2, &[0u8; 904]).expect_err("no such block");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    let e = w.read_block(0, &mut [0u8; 100]).expect_err("small buffer");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    let w = ImageWriter::new(&mut nand, 0, 4096, opts(true)).expect("empty image");
    assert_eq!(w.block_count(), 0);
}

/// A 4 KiB-block writer on `nand` whose physical eraseblock 2 fails writes
/// with EIO, with image blocks 0 and 1 written.
fn blocks_0_and_1_before_eio_at_2(mut nand: SimNand, image: &[u8]) -> ImageWriter<SimNand> {
    nand.set_faults(Faults {
        fail_write_blocks: vec![2],
        ..Faults::default()
    });
    let mut w = ImageWriter::new(nand, image.len() as u64, 4096, opts(false)).expect("writer");
    w.write_block(0, block(image, 4096, 0)).expect("block 0");
    w.write_block(1, block(image, 4096, 1)).expect("block 1");
    w
}

#[test]
fn nand_write_eio_marks_bad_and_remaps() {
    let dir = TempDir::new("w-nand-eio");
    let p = dir.join("nand.bin");
    let image = random_bytes(40, 5 * 4096 - 100);
    let nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    let mut w = blocks_0_and_1_before_eio_at_2(nand, &image);
    let e = w.write_block(2, block(&image, 4096, 2)).expect_err("eio");
    assert_eq!(
        (e.kind, e.op, e.block, e.errno),
        (ErrorKind::NewBadBlock, Op::Write, Some(2), Some(5))
    );
    assert!(e.to_string().contains("eraseblock 2"), "{e}");
    assert_eq!(w.flash().bad_blocks(), &[2]);
    // The writer already remapped: logical 2 is now physical 3.
    assert_eq!(w.physical_of(2), 3);
    assert_eq!(w.bad_blocks_skipped(), 1);
    drop(w);
    // A new writer (a rescan after restart) skips it; blocks 0 and 1 did not move.
    let mut w = ImageWriter::new(SimNand::reopen(&p), image.len() as u64, 4096, opts(false))
        .expect("writer");
    assert_eq!(w.bad_blocks_skipped(), 1);
    let mut buf = vec![0u8; 4096];
    for i in 0..2 {
        let n = w.read_block(i, &mut buf).expect("scan");
        assert_eq!(
            &buf[..n],
            block(&image, 4096, i),
            "block {i} survives the remap"
        );
    }
    for i in 2..w.block_count() {
        w.write_block(i, block(&image, 4096, i)).expect("rest");
    }
    assert!(read_all(&mut w, 4096) == image);
}

#[test]
fn nand_erase_eio_in_shared_eraseblock_marks_bad() {
    let dir = TempDir::new("w-nand-erase-eio");
    let p = dir.join("nand.bin");
    let image = random_bytes(41, 3 * 4096);
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    nand.set_faults(Faults {
        fail_erase_blocks: vec![1],
        ..Faults::default()
    });
    let mut w = ImageWriter::new(nand, image.len() as u64, 1024, opts(false)).expect("writer");
    assert_eq!(w.shared_eraseblock_size(), Some(4096));
    let mut failed = None;
    for i in 0..w.block_count() {
        if let Err(e) = w.write_block(i, block(&image, 1024, i)) {
            failed = Some((i, e));
            break;
        }
    }
    let (i, e) = failed.expect("erase of block 1 must fail");
    assert_eq!(i, 4, "first image block in eraseblock 1");
    assert_eq!(
        (e.kind, e.op, e.block),
        (ErrorKind::NewBadBlock, Op::Erase, Some(1))
    );
    // Same writer, remapped: finish the job.
    for i in 4..w.block_count() {
        w.write_block(i, block(&image, 1024, i)).expect("rest");
    }
    assert!(read_all(&mut w, 1024) == image);
    assert_eq!(w.flash().bad_blocks(), &[1]);
}

#[test]
fn new_bad_block_without_spares_stops_cleanly() {
    let dir = TempDir::new("w-nand-last-spare");
    let p = dir.join("nand.bin");
    let image = random_bytes(42, 4 * 4096);
    let mut nand = SimNand::create(&p, 4 * 4096, 4096, 512, &[]).expect("create");
    nand.set_faults(Faults {
        fail_write_blocks: vec![1],
        ..Faults::default()
    });
    let mut w = ImageWriter::new(nand, image.len() as u64, 4096, opts(false)).expect("writer");
    w.write_block(0, block(&image, 4096, 0)).expect("block 0");
    let e = w
        .write_block(1, block(&image, 4096, 1))
        .expect_err("no spare");
    assert_eq!(e.kind, ErrorKind::NoSpareBlocks);
    assert_eq!(w.flash().bad_blocks(), &[1]);
    for i in 0..4 {
        let e = w
            .write_block(i, block(&image, 4096, i))
            .expect_err("stays stopped");
        assert_eq!(e.kind, ErrorKind::NoSpareBlocks);
    }
    let e = w
        .read_block(0, &mut [0u8; 4096])
        .expect_err("stays stopped");
    assert_eq!(e.kind, ErrorKind::NoSpareBlocks);
}

#[test]
fn nor_eio_is_reported_not_marked() {
    let dir = TempDir::new("w-nor-eio");
    let p = dir.join("nor.bin");
    let mut nor = SimNor::create(&p, 8 * 4096, 4096, 1).expect("create");
    nor.set_faults(Faults {
        fail_erase_blocks: vec![0],
        ..Faults::default()
    });
    let mut w = ImageWriter::new(nor, 4096, 4096, opts(false)).expect("writer");
    let e = w.write_block(0, &[0u8; 4096]).expect_err("eio");
    assert_eq!((e.kind, e.errno), (ErrorKind::Io, Some(5)));
    assert!(w.flash().bad_blocks().is_empty());
}

/// Reads flip one bit of the byte at flash offset `at`, wherever a read
/// covering it starts.
struct FlipAt<F>(F, u64);

impl<F: Flash> Flash for FlipAt<F> {
    fn geometry(&self) -> Geometry {
        self.0.geometry()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, Error> {
        let r = self.0.read(offset, buf)?;
        if let Some(b) = self
            .1
            .checked_sub(offset)
            .and_then(|i| buf.get_mut(i as usize))
        {
            *b ^= 0x01;
        }
        Ok(r)
    }
    fn erase_block(&mut self, block: u32) -> Result<(), Error> {
        self.0.erase_block(block)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.0.write(offset, data)
    }
    fn is_bad(&mut self, block: u32) -> Result<bool, Error> {
        self.0.is_bad(block)
    }
    fn mark_bad(&mut self, block: u32) -> Result<(), Error> {
        self.0.mark_bad(block)
    }
}

/// A block larger than the read-back buffer is read back piece by piece:
/// a difference deep inside it is found at its offset, and
/// `read_block_pieces` hands over the whole block in order.
#[test]
fn blocks_larger_than_a_read_piece_are_read_back_in_pieces() {
    let dir = TempDir::new("w-pieces");
    let p = dir.join("nor.bin");
    let bs = 65_536u32;
    let nor = SimNor::create(&p, 4 * u64::from(bs), bs, 1).expect("create");
    let image = random_bytes(51, 2 * bs as usize - 1000);
    let flip = u64::from(bs) + 5 * READ_PIECE as u64 + 17;
    let mut w =
        ImageWriter::new(FlipAt(nor, flip), image.len() as u64, bs, opts(false)).expect("writer");
    w.write_block(0, block(&image, bs, 0)).expect("block 0");
    let e = w
        .write_block(1, block(&image, bs, 1))
        .expect_err("mismatch");
    assert_eq!(
        (e.kind, e.block, e.offset),
        (ErrorKind::VerifyMismatch, Some(1), Some(flip))
    );
    let mut pieces = Vec::new();
    let mut got = Vec::new();
    let len = w
        .read_block_pieces(0, |piece| {
            pieces.push(piece.len());
            got.extend_from_slice(piece);
        })
        .expect("read block 0");
    assert_eq!(len, bs as usize);
    assert_eq!(got, block(&image, bs, 0));
    assert!(pieces.len() > 1 && pieces.iter().all(|&n| n <= READ_PIECE));
    got.clear();
    let len = w
        .read_block_pieces(1, |piece| got.extend_from_slice(piece))
        .expect("read block 1");
    assert_eq!(len, image.len() - bs as usize);
    assert_eq!(got.len(), len);
    let i = (flip - u64::from(bs)) as usize;
    assert_eq!(got[i], block(&image, bs, 1)[i] ^ 0x01, "the flipped byte");
}

#[test]
fn verify_catches_mismatch() {
    let dir = TempDir::new("w-verify");
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    let image = random_bytes(50, 8192);
    let mut w = ImageWriter::new(FlipAt(nand, 4096 + 3), 8192, 4096, opts(false)).expect("writer");
    assert_eq!(w.shared_eraseblock_size(), None, "one block per eraseblock");
    let e = w
        .write_block(1, block(&image, 4096, 1))
        .expect_err("mismatch");
    assert_eq!(
        (e.kind, e.op, e.block, e.offset),
        (
            ErrorKind::VerifyMismatch,
            Op::Verify,
            Some(1),
            Some(4096 + 3)
        )
    );
    // Without verify the write goes through.
    let nand = w.into_inner().0;
    let mut w = ImageWriter::new(
        FlipAt(nand, 3),
        8192,
        4096,
        WriterOptions {
            verify: false,
            ..opts(false)
        },
    )
    .expect("writer");
    w.write_block(0, block(&image, 4096, 0)).expect("no verify");
}

#[test]
fn corrected_reads_are_fine() {
    let dir = TempDir::new("w-bitflips");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    nand.set_faults(Faults {
        bitflips_on_read: true,
        ..Faults::default()
    });
    let image = random_bytes(51, 10_000);
    let mut w = ImageWriter::new(nand, image.len() as u64, 2048, opts(false)).expect("writer");
    write_all(&mut w, &image, 2048);
    assert!(read_all(&mut w, 2048) == image);
}

#[test]
fn plain_file_header_last() {
    let dir = TempDir::new("w-plain");
    let p = dir.join("slot.img");
    let old = random_bytes(60, 50_000);
    let new = random_bytes(61, 50_000);
    for bs in [4096u32, 65_536, 131_072] {
        let f = FileFlash::open(&p, Some(200_000)).expect("open");
        let mut w = ImageWriter::new(f, old.len() as u64, bs, opts(false)).expect("writer");
        write_all(&mut w, &old, bs);
        let mut w =
            ImageWriter::new(w.into_inner(), new.len() as u64, bs, opts(true)).expect("writer");
        w.invalidate_header().expect("invalidate");
        let raw = file_prefix(&p, new.len());
        let b0 = (bs as usize).min(new.len());
        assert!(raw[..b0].iter().all(|&b| b == 0xFF), "header gone");
        assert!(raw[b0..] == old[b0..], "rest untouched");
        for i in 1..w.block_count() {
            w.write_block(i, block(&new, bs, i)).expect("write");
        }
        w.write_block(0, block(&new, bs, 0)).expect("header");
        assert!(file_prefix(&p, new.len()) == new);
    }
}

/// The in-place update: invalidate the header, blocks 1..n, block 0 last.
/// With `resume`, first scan and skip blocks that already match. Every
/// block it will write is marked so ([`ImageWriter::mark_to_write`]), as the
/// agent's scan does.
fn update<F: Flash>(
    w: &mut ImageWriter<F>,
    new: &[u8],
    bs: u32,
    resume: bool,
) -> Result<(), Error> {
    let n = w.block_count();
    let mut have = vec![false; n as usize];
    if resume {
        let mut buf = vec![0u8; bs as usize];
        for i in 0..n {
            let len = w.read_block(i, &mut buf)?;
            have[i as usize] = buf[..len] == *block(new, bs, i);
        }
        if have.iter().all(|&h| h) {
            return Ok(());
        }
    }
    for i in (0..n).filter(|&i| !have[i as usize]) {
        w.mark_to_write(i);
    }
    w.invalidate_header()?;
    for i in 1..n {
        if !have[i as usize] {
            w.write_block(i, block(new, bs, i))?;
        }
    }
    w.write_block(0, block(new, bs, 0))
}

fn copy_sim(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy data");
    let side = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".sim");
        std::path::PathBuf::from(s)
    };
    std::fs::copy(side(from), side(to)).expect("copy sidecar");
}

/// After power comes back: a new header implies the whole new image, and an
/// intact old header implies the whole old image.
fn check_after_cut<S: Sim>(path: &Path, old: &[u8], new: &[u8], bs: u32, what: &str) {
    let mut w =
        ImageWriter::new(S::reopen(path), new.len() as u64, bs, opts(true)).expect("writer");
    let got = read_all(&mut w, bs);
    let b0 = (bs as usize).min(new.len());
    if got[..b0] == new[..b0] {
        assert!(got == new, "{what}: new header in front of a partial image");
    }
    if got[..b0] == old[..b0] {
        assert!(
            got == old,
            "{what}: old header in front of a modified image"
        );
    }
}

/// Runs a resumed update (scan, then write what differs) on `path`,
/// optionally cut at operation `cut`; returns the operations it took.
fn resume<S: Sim>(path: &Path, new: &[u8], bs: u32, cut: Option<u64>) -> Result<u64, Error> {
    let mut flash = S::reopen(path);
    flash.faults(Faults {
        power_cut_after: cut,
        ..Faults::default()
    });
    let mut w = ImageWriter::new(flash, new.len() as u64, bs, opts(true))?;
    update(&mut w, new, bs, true)?;
    Ok(w.flash().ops())
}

/// Power cut at every operation index of a header-last update from `old` to
/// `new`, then power cuts at chosen points of the resumed update (the start,
/// the middle and the header write at the end). After every cut the
/// invariants of [`check_after_cut`] hold, and an uncut resume completes.
fn power_cut_sweep<S: Sim>(create: impl Fn(&Path) -> S, bs: u32, len: usize) -> u64 {
    let dir = TempDir::new("w-cut");
    let base = dir.join("base.bin");
    let work = dir.join("work.bin");
    let torn = dir.join("torn.bin");
    let old = random_bytes(u64::from(bs) + 1, len);
    let new = random_bytes(u64::from(bs) + 2, len);
    let mut w = ImageWriter::new(create(&base), len as u64, bs, opts(false)).expect("writer");
    write_all(&mut w, &old, bs);
    drop(w);

    copy_sim(&base, &work);
    let mut w = ImageWriter::new(S::reopen(&work), len as u64, bs, opts(true)).expect("writer");
    update(&mut w, &new, bs, false).expect("uninterrupted update");
    let total = w.flash().ops();
    drop(w);
    assert!(file_prefix(&work, len) == new);
    assert!(total > 0);

    let b0 = (bs as usize).min(len);
    for cut in 0..total {
        copy_sim(&base, &work);
        let mut flash = S::reopen(&work);
        flash.faults(Faults {
            power_cut_after: Some(cut),
            ..Faults::default()
        });
        let mut w = ImageWriter::new(flash, len as u64, bs, opts(true)).expect("writer");
        let e = update(&mut w, &new, bs, false).expect_err("power cut");
        assert_eq!(e.kind, ErrorKind::PowerCut, "cut {cut}: {e}");
        drop(w);

        // Power back on: a new process sees only the file.
        let what = format!("bs {bs}, cut {cut} of {total}");
        check_after_cut::<S>(&work, &old, &new, bs, &what);
        let mut w = ImageWriter::new(S::reopen(&work), len as u64, bs, opts(true)).expect("writer");
        let mut hdr = vec![0u8; bs as usize];
        let n = w.read_block(0, &mut hdr).expect("read header");
        assert!(
            hdr[..n] != old[..b0],
            "{what}: the first operation kills the old header"
        );
        drop(w);

        // Cut the resumed update too.
        copy_sim(&work, &torn);
        let resume_ops =
            resume::<S>(&work, &new, bs, None).unwrap_or_else(|e| panic!("{what}: resume: {e}"));
        assert!(file_prefix(&work, len) == new, "{what}: resumed file");
        let mut cuts2 = vec![
            0,
            resume_ops / 2,
            resume_ops.saturating_sub(2),
            resume_ops.saturating_sub(1),
        ];
        cuts2.dedup();
        for cut2 in cuts2.into_iter().filter(|&c| c < resume_ops) {
            copy_sim(&torn, &work);
            let e = resume::<S>(&work, &new, bs, Some(cut2)).expect_err("second cut");
            assert_eq!(e.kind, ErrorKind::PowerCut);
            let what = format!("{what}, then resume cut {cut2} of {resume_ops}");
            check_after_cut::<S>(&work, &old, &new, bs, &what);
            resume::<S>(&work, &new, bs, None).unwrap_or_else(|e| panic!("{what}: resume: {e}"));
            let mut w =
                ImageWriter::new(S::reopen(&work), len as u64, bs, opts(true)).expect("writer");
            assert!(read_all(&mut w, bs) == new, "{what}: resumed image");
        }
    }
    total
}

#[test]
fn nor_power_cut_at_every_operation() {
    for bs in [1024u32, 4096, 8192] {
        let total = power_cut_sweep(
            |p| SimNor::create(p, 32 * 4096, 4096, 1).expect("create"),
            bs,
            30_000,
        );
        assert!(total >= 8, "bs {bs}: {total} ops");
    }
}

#[test]
fn nand_power_cut_at_every_operation() {
    for bs in [2048u32, 8192, 16_384] {
        let total = power_cut_sweep(
            |p| SimNand::create(p, 16 * 8192, 8192, 512, &[]).expect("create"),
            bs,
            50_001,
        );
        assert!(total >= 8, "bs {bs}: {total} ops");
    }
}

#[test]
fn read_back_lasts_until_the_eraseblock_is_written_again() {
    let dir = TempDir::new("w-readback");
    // 2 KiB blocks, four to a 8 KiB NAND eraseblock; 6 blocks, the last short.
    let image = random_bytes(50, 5 * 2048 + 700);
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 8192, 8192, 512, &[]).expect("create");
    let mut w = ImageWriter::new(nand, image.len() as u64, 2048, opts(false)).expect("writer");
    assert!((0..6).all(|i| !w.is_read_back(i)), "nothing read yet");
    w.write_block(0, block(&image, 2048, 0)).expect("block 0");
    assert!(w.is_read_back(0), "write_block's verify read it back");
    // Block 1 is programmed into block 0's eraseblock: 0 must be read again.
    w.write_block(1, block(&image, 2048, 1)).expect("block 1");
    assert!(!w.is_read_back(0) && w.is_read_back(1));
    // Block 4 lies in the next eraseblock: block 1 stays read back.
    w.write_block(4, block(&image, 2048, 4)).expect("block 4");
    assert!(w.is_read_back(1) && w.is_read_back(4));
    let mut buf = vec![0u8; 2048];
    w.read_block(0, &mut buf).expect("read 0");
    w.confirm_read_back(0);
    assert!(w.is_read_back(0), "read and confirmed");
    // A confirm after another block's read, or after a write, counts for nothing.
    w.read_block(2, &mut buf).expect("read 2");
    w.confirm_read_back(3);
    assert!(!w.is_read_back(3));
    w.read_block(5, &mut buf).expect("read 5");
    w.write_block(2, block(&image, 2048, 2)).expect("block 2");
    w.confirm_read_back(5);
    assert!(!w.is_read_back(5));
    assert!(!w.is_read_back(0), "block 2 went into eraseblock 0");
    // Whoever holds the flash mutably may have changed anything.
    let _ = w.flash_mut();
    assert!((0..6).all(|i| !w.is_read_back(i)));
}

#[test]
fn nothing_counts_as_read_back_without_verify_or_after_a_remap() {
    let dir = TempDir::new("w-readback-remap");
    let image = random_bytes(51, 5 * 4096 - 100);
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    let no_verify = WriterOptions {
        header_last: false,
        verify: false,
    };
    let mut w = ImageWriter::new(nand, image.len() as u64, 4096, no_verify).expect("writer");
    w.write_block(0, block(&image, 4096, 0)).expect("block 0");
    assert!(!w.is_read_back(0), "not read back: verify is off");
    let mut w = blocks_0_and_1_before_eio_at_2(w.into_inner(), &image);
    assert!(w.is_read_back(0) && w.is_read_back(1));
    let e = w.write_block(2, block(&image, 4096, 2)).expect_err("eio");
    assert_eq!(e.kind, ErrorKind::NewBadBlock);
    assert!(
        (0..w.block_count()).all(|i| !w.is_read_back(i)),
        "a new map: every block must be read again"
    );
}

/// Writes `new` over `old` on a NAND of 8 KiB eraseblocks in 2 KiB blocks
/// (four to an eraseblock), in `order`, with the blocks in `marked` marked
/// to be written first; returns the flash's contents and the erases.
fn shared_eraseblock_update(order: &[u32], marked: &[u32], seed: u64) -> (Vec<u8>, Vec<u8>, u64) {
    let dir = TempDir::new("w-shared-eb");
    let old = random_bytes(seed, 4 * 8192 - 1000);
    let new = random_bytes(seed + 1, old.len());
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 8192, 8192, 512, &[]).expect("create");
    let mut w = ImageWriter::new(nand, old.len() as u64, 2048, opts(false)).expect("writer");
    write_all(&mut w, &old, 2048);
    let mut w =
        ImageWriter::new(w.into_inner(), new.len() as u64, 2048, opts(false)).expect("writer");
    for &i in marked {
        w.mark_to_write(i);
    }
    for &i in order {
        w.write_block(i, block(&new, 2048, i)).expect("write");
    }
    let erases = w.erases();
    (read_all(&mut w, 2048), new, erases)
}

#[test]
fn blocks_marked_to_write_cost_their_eraseblock_one_erase() {
    let n = 16u32;
    let in_order: Vec<u32> = (0..n).collect();
    // Odd blocks first, backwards, then the even ones: repairs come in any order.
    let shuffled: Vec<u32> = (0..n)
        .rev()
        .filter(|i| i % 2 == 1)
        .chain((0..n).filter(|i| i % 2 == 0))
        .collect();
    for order in [&in_order, &shuffled] {
        let (got, new, erases) = shared_eraseblock_update(order, &in_order, 60);
        assert!(got == new, "order {order:?}");
        assert_eq!(erases, 4, "order {order:?}: one erase per eraseblock");
    }
    // Unmarked, every neighbour is kept: one erase per block.
    let (got, new, erases) = shared_eraseblock_update(&in_order, &[], 62);
    assert!(got == new);
    assert_eq!(erases, 16);
}

#[test]
fn blocks_not_marked_to_write_are_kept_in_a_shared_eraseblock() {
    // Blocks 1, 6, 7 and 15 (the short last) already hold the new image:
    // written first in this run, unmarked; the rest are marked and written
    // out of order, and must not wipe them.
    let there = [1u32, 6, 7, 15];
    let rest: Vec<u32> = (0..16).rev().filter(|i| !there.contains(i)).collect();
    let order: Vec<u32> = there.iter().copied().chain(rest.iter().copied()).collect();
    let (got, new, erases) = shared_eraseblock_update(&order, &rest, 64);
    assert!(got == new);
    // Once per eraseblock, and once more for eraseblock 1: block 6's write
    // kept block 7's old bytes (7 is not marked), so 7's own write erased
    // it again. The marked blocks never cost an erase of their own.
    assert_eq!(erases, 4 + 1);
}

#[test]
fn a_marked_short_last_block_keeps_what_lies_past_the_image() {
    // The image ends inside its last eraseblock: the bytes past it are not
    // the image's and survive the erase of a marked last block's eraseblock.
    let dir = TempDir::new("w-shared-tail");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 4 * 8192, 8192, 512, &[]).expect("create");
    // From the page after the image's last byte to the eraseblock's end.
    let tail = random_bytes(70, 8192 - 2560);
    nand.erase_block(1).expect("erase");
    nand.write(8192 + 2560, &tail).expect("tail");
    let image = random_bytes(71, 8192 + 2048 + 300);
    let mut w = ImageWriter::new(nand, image.len() as u64, 2048, opts(false)).expect("writer");
    for i in 0..w.block_count() {
        w.mark_to_write(i);
    }
    write_all(&mut w, &image, 2048);
    assert!(read_all(&mut w, 2048) == image);
    let mut past = vec![0u8; tail.len()];
    w.flash_mut().read(8192 + 2560, &mut past).expect("read");
    assert!(past == tail, "bytes past the image were lost");
}

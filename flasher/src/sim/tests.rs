use super::*;
use crate::testutil::TempDir;

fn contents(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read data file")
}

#[test]
fn create_is_erased_with_sidecar() {
    let dir = TempDir::new("sim-create");
    let p = dir.join("nand.bin");
    let nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[3, 1]).expect("create");
    assert_eq!(nand.bad_blocks(), &[1, 3]);
    assert!(contents(&p).iter().all(|&b| b == 0xFF));
    assert_eq!(contents(&p).len(), 8 * 4096);
    let side = std::fs::read_to_string(sidecar_path(&p)).expect("sidecar");
    assert!(side.contains("kind=nand"));
    assert!(side.contains("bad=1,3"));
    let again = SimNand::open(&p).expect("open");
    assert_eq!(again.geometry(), nand.geometry());
    assert_eq!(again.bad_blocks(), &[1, 3]);
    assert_eq!(
        SimNor::open(&p).expect_err("kind mismatch").kind,
        ErrorKind::Geometry
    );
}

#[test]
fn open_without_sidecar_uses_defaults() {
    let dir = TempDir::new("sim-defaults");
    let p = dir.join("nor.bin");
    std::fs::write(&p, vec![0xFFu8; 2 * 65536]).expect("write");
    let nor = SimNor::open(&p).expect("open");
    assert_eq!(
        nor.geometry(),
        Geometry {
            kind: FlashKind::Nor,
            size: 131_072,
            erase_size: 65536,
            write_size: 1
        }
    );
    let p = dir.join("nand.bin");
    std::fs::write(&p, vec![0xFFu8; 2 * 131_072]).expect("write");
    let nand = SimNand::open(&p).expect("open");
    assert_eq!(nand.geometry().write_size, 2048);
    assert_eq!(nand.geometry().erase_size, 131_072);
    let p = dir.join("odd.bin");
    std::fs::write(&p, vec![0xFFu8; 1000]).expect("write");
    assert_eq!(SimNor::open(&p).expect_err("odd").kind, ErrorKind::Geometry);
}

#[test]
fn nor_write_only_clears_bits() {
    let dir = TempDir::new("sim-nor-bits");
    let p = dir.join("nor.bin");
    let mut nor = SimNor::create(&p, 4 * 1024, 1024, 1).expect("create");
    nor.write(5, &[0xF0, 0x0F]).expect("write");
    nor.write(5, &[0xC0, 0x0F])
        .expect("clearing more bits is fine");
    let before = contents(&p);
    let e = nor.write(5, &[0xF0]).expect_err("0 -> 1");
    assert_eq!(e.kind, ErrorKind::NotErased);
    assert_eq!(e.offset, Some(5));
    assert_eq!(contents(&p), before);
    nor.erase_block(0).expect("erase");
    nor.write(5, &[0x12]).expect("after erase");
    let mut b = [0u8; 2];
    nor.read(5, &mut b).expect("read");
    assert_eq!(b, [0x12, 0xFF]);
    assert_eq!(
        nor.mark_bad(1).expect_err("nor").errno,
        Some(nix::libc::EOPNOTSUPP)
    );
}

#[test]
fn nand_physics_refusals_change_nothing() {
    let dir = TempDir::new("sim-nand-physics");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[2]).expect("create");
    let page = vec![0xA5u8; 512];
    nand.write(512, &page).expect("program page 1");
    let before = contents(&p);

    let e = nand.write(100, &page).expect_err("unaligned offset");
    assert_eq!(e.kind, ErrorKind::Unaligned);
    let e = nand.write(1024, &page[..100]).expect_err("short write");
    assert_eq!(e.kind, ErrorKind::Unaligned);
    let e = nand.write(512, &page).expect_err("second program");
    assert_eq!(e.kind, ErrorKind::PageAlreadyProgrammed);
    let e = nand
        .write(512, &[0u8; 512])
        .expect_err("second program, even clearing bits");
    assert_eq!(e.kind, ErrorKind::PageAlreadyProgrammed);
    let e = nand.write(2 * 4096, &page).expect_err("bad block");
    assert_eq!((e.kind, e.block), (ErrorKind::BadBlock, Some(2)));
    let e = nand.erase_block(2).expect_err("bad block");
    assert_eq!(e.kind, ErrorKind::BadBlock);
    let e = nand.write(8 * 4096, &page).expect_err("out of range");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    let e = nand.erase_block(8).expect_err("out of range");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert_eq!(contents(&p), before);

    // A restarted process sees page 1 as programmed.
    drop(nand);
    let mut nand = SimNand::open(&p).expect("reopen");
    let e = nand
        .write(512, &page)
        .expect_err("still programmed after reopen");
    assert_eq!(e.kind, ErrorKind::PageAlreadyProgrammed);
    nand.write(0, &page).expect("page 0 is free");
    nand.erase_block(0).expect("erase");
    nand.write(512, &page)
        .expect("programmable again after erase");
}

#[test]
fn nor_write_over_programmed_bits_changes_nothing() {
    let dir = TempDir::new("sim-nor-noterased");
    let p = dir.join("nor.bin");
    let mut nor = SimNor::create(&p, 4 * 4096, 4096, 4).expect("create");
    nor.write(0, &[0, 0, 0, 0, 0xF0, 0xF0, 0xF0, 0xF0])
        .expect("write");
    let before = contents(&p);
    // First word would be fine, second word sets bits: whole write refused.
    let e = nor
        .write(0, &[0, 0, 0, 0, 0xFF, 0, 0, 0])
        .expect_err("0 -> 1");
    assert_eq!((e.kind, e.offset), (ErrorKind::NotErased, Some(4)));
    assert_eq!(
        nor.write(2, &[0; 4]).expect_err("unaligned").kind,
        ErrorKind::Unaligned
    );
    assert_eq!(contents(&p), before);
}

#[test]
fn mark_bad_persists() {
    let dir = TempDir::new("sim-markbad");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    assert!(!nand.is_bad(5).expect("is_bad"));
    nand.mark_bad(5).expect("mark");
    nand.mark_bad(5).expect("idempotent");
    assert!(nand.is_bad(5).expect("is_bad"));
    drop(nand);
    let mut nand = SimNand::open(&p).expect("reopen");
    assert!(nand.is_bad(5).expect("is_bad"));
    assert_eq!(
        nand.is_bad(8).expect_err("range").kind,
        ErrorKind::OutOfRange
    );
}

#[test]
fn injected_faults() {
    let dir = TempDir::new("sim-faults");
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 8 * 4096, 4096, 512, &[]).expect("create");
    nand.set_faults(Faults {
        fail_erase_blocks: vec![1],
        fail_write_blocks: vec![2],
        bitflips_on_read: true,
        ..Faults::default()
    });
    let e = nand.erase_block(1).expect_err("eio");
    assert_eq!(
        (e.kind, e.errno, e.block),
        (ErrorKind::Io, Some(5), Some(1))
    );
    assert_eq!(
        e.to_string(),
        "erase of eraseblock 1 failed: I/O error (errno 5)"
    );
    let e = nand.write(2 * 4096 + 512, &[0u8; 512]).expect_err("eio");
    assert_eq!(
        (e.kind, e.errno, e.block),
        (ErrorKind::Io, Some(5), Some(2))
    );
    let mut b = [0u8; 16];
    assert_eq!(
        nand.read(0, &mut b).expect("read"),
        ReadStatus::Corrected(1)
    );
    assert!(contents(&p).iter().all(|&b| b == 0xFF));
    assert_eq!(nand.op_count(), 2);
}

#[test]
fn power_cut_tears_then_everything_fails() {
    let dir = TempDir::new("sim-cut");
    let p = dir.join("nor.bin");
    let mut nor = SimNor::create(&p, 4 * 1024, 1024, 1).expect("create");
    nor.write(0, &[0u8; 1024]).expect("op 0");
    nor.set_faults(Faults {
        power_cut_after: Some(2),
        ..Faults::default()
    });
    nor.write(1024, &[0x11u8; 8]).expect("op 1");
    // Op 2: torn erase of block 0 -> first half 0xFF, second half unchanged.
    assert_eq!(
        nor.erase_block(0).expect_err("cut").kind,
        ErrorKind::PowerCut
    );
    assert_eq!(
        nor.write(2048, &[0u8; 4]).expect_err("dead").kind,
        ErrorKind::PowerCut
    );
    assert_eq!(
        nor.erase_block(3).expect_err("dead").kind,
        ErrorKind::PowerCut
    );
    assert_eq!(nor.op_count(), 5);
    let data = contents(&p);
    assert!(data[..512].iter().all(|&b| b == 0xFF));
    assert!(data[512..1024].iter().all(|&b| b == 0));
    assert!(data[1024..1032].iter().all(|&b| b == 0x11));
    assert!(data[2048..].iter().all(|&b| b == 0xFF));

    // Torn write programs the first half of its bytes.
    let p = dir.join("nand.bin");
    let mut nand = SimNand::create(&p, 4 * 4096, 4096, 512, &[]).expect("create");
    nand.set_faults(Faults {
        power_cut_after: Some(0),
        ..Faults::default()
    });
    assert_eq!(
        nand.write(0, &[0u8; 2048]).expect_err("cut").kind,
        ErrorKind::PowerCut
    );
    let data = contents(&p);
    assert!(data[..1024].iter().all(|&b| b == 0));
    assert!(data[1024..].iter().all(|&b| b == 0xFF));
    // A restarted process: pages 0-1 programmed, 2-3 free.
    let mut nand = SimNand::open(&p).expect("reopen");
    assert_eq!(
        nand.write(512, &[0u8; 512]).expect_err("programmed").kind,
        ErrorKind::PageAlreadyProgrammed
    );
    nand.write(1024, &[0u8; 1024]).expect("free pages");
}

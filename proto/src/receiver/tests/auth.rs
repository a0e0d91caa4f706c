//! Chunk authentication in the window (R-AUTH-2..5) and the anti-rollback
//! floor (R-ROLL-1), with the receiver
//! tests' fixture: a format 2 manifest, ChunkList frames built like the
//! sender builds them.

use super::*;
use crate::chunk_list;
use crate::wire::ChunkList;

/// The ChunkList frame for block `block` (one piece in this geometry).
fn list(f: &Fixture, block: u32) -> Vec<u8> {
    let chunks = f.manifest.chunks_in_block(block);
    let span = chunk_list::piece_span(chunks, CHUNK, 0).expect("one piece");
    assert_eq!(chunk_list::pieces(chunks, CHUNK), 1);
    let mut out = [0u8; CHUNK as usize];
    let n = chunk_list::fill_piece(
        &f.image,
        f.image.len() as u64,
        BLOCK,
        CHUNK,
        block,
        span,
        &mut out,
    )
    .expect("fill");
    enc(
        f,
        0,
        &Frame::ChunkList(ChunkList {
            block,
            first: 0,
            hashes: wire::Bytes(&out[..n]),
        }),
    )
}

/// Chunk `chunk` of block `block` with every payload byte flipped: the
/// real session, image id and length, as an attacker on the LAN forges it.
fn forged(f: &Fixture, block: u32, chunk: u32) -> Vec<u8> {
    let start = (block * BLOCK + chunk * CHUNK) as usize;
    let payload: Vec<u8> = f.image[start..start + CHUNK as usize]
        .iter()
        .map(|b| !b)
        .collect();
    enc(
        f,
        0,
        &Frame::Data(Data {
            block,
            chunk,
            payload: wire::Bytes(&payload),
        }),
    )
}

#[test]
fn r_auth_3_a_forged_chunk_after_the_list_is_dropped_on_arrival() {
    let f = fixture();
    assert!(f.manifest.chunk_auth());
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    feed(&mut rx, &mut shell, ms(1), &list(&f, 0)).expect("list");
    assert_eq!(rx.stats().chunk_lists_verified, 1);
    for c in 0..f.manifest.chunks_in_block(0) {
        // First-write-wins would keep a forged chunk sent first: it is
        // refused before it takes the place.
        assert_eq!(
            feed(&mut rx, &mut shell, ms(2), &forged(&f, 0, c)),
            Err(DropReason::Forged)
        );
        feed(&mut rx, &mut shell, ms(2), &data(&f, 0, c, 0)).expect("genuine chunk");
    }
    std::println!(
        "R-AUTH-3: {} forged chunks dropped on arrival, {} digest failures, block 0 written: {}",
        rx.stats().chunks_forged,
        rx.stats().digest_failures,
        shell.write_order.contains(&0)
    );
    assert_eq!(rx.stats().chunks_forged, 4);
    assert_eq!(rx.stats().digest_failures, 0);
    assert_eq!(shell.flash[0].as_deref(), Some(&f.image[..BLOCK as usize]));
}

#[test]
fn r_auth_3_chunks_stored_before_the_list_are_checked_when_it_arrives() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    feed(&mut rx, &mut shell, ms(1), &forged(&f, 1, 2)).expect("stored unchecked: no list yet");
    feed(&mut rx, &mut shell, ms(1), &data(&f, 1, 0, 0)).expect("genuine");
    feed(&mut rx, &mut shell, ms(2), &list(&f, 1)).expect("list");
    assert_eq!(rx.stats().chunks_forged, 1, "the forged chunk 2 was purged");
    for c in 0..f.manifest.chunks_in_block(1) {
        feed(&mut rx, &mut shell, ms(3), &data(&f, 1, c, 0)).expect("genuine");
    }
    assert_eq!(rx.stats().digest_failures, 0);
    assert_eq!(
        shell.flash[1].as_deref(),
        Some(&f.image[BLOCK as usize..2 * BLOCK as usize])
    );
}

#[test]
fn r_auth_5_forged_chunks_of_other_blocks_never_evict_a_kept_list() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    feed(&mut rx, &mut shell, ms(1), &list(&f, 0)).expect("list");
    // A flood of forged chunks for blocks 1..5 (more blocks than the 4
    // window buffers), each more recent than block 0's list: before
    // R-AUTH-5 the least recently active buffer, block 0's, was evicted.
    for round in 0..3u64 {
        for block in 1..f.manifest.block_count() {
            let _ = feed(&mut rx, &mut shell, ms(2 + round), &forged(&f, block, 0));
        }
    }
    let Phase::Receiving(t) = &rx.phase else {
        panic!("receiving")
    };
    assert!(
        t.find_slot(0).is_some(),
        "block 0 keeps its buffer and list"
    );
    for c in 0..f.manifest.chunks_in_block(0) {
        feed(&mut rx, &mut shell, ms(9), &data(&f, 0, c, 0)).expect("genuine chunk");
    }
    assert_eq!(shell.flash[0].as_deref(), Some(&f.image[..BLOCK as usize]));
    // A genuine list may still take a buffer: from one without a kept list.
    feed(&mut rx, &mut shell, ms(10), &list(&f, 4)).expect("list of block 4");
    assert_eq!(rx.stats().chunk_lists_verified, 2);
}

#[test]
fn r_auth_2_a_forged_list_is_forgotten_and_frees_the_slot_it_took() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    let mut bad = list(&f, 2);
    // Flip a hash byte and reseal the CRC: a well-formed forged list.
    let body_end = bad.len() - 4;
    bad[body_end - 1] ^= 0xff;
    let crc = wire::CRC32.checksum(&bad[..body_end]);
    bad[body_end..].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &bad),
        Err(DropReason::Forged)
    );
    assert_eq!(rx.stats().chunk_lists_forged, 1);
    let Phase::Receiving(t) = &rx.phase else {
        panic!("receiving")
    };
    assert_eq!(t.find_slot(2), None, "the forged list holds no slot");
    feed(&mut rx, &mut shell, ms(2), &list(&f, 2)).expect("the genuine list");
    assert_eq!(rx.stats().chunk_lists_verified, 1);
}

#[test]
fn r_auth_1_a_format_1_manifest_ignores_lists_and_checks_blocks_whole() {
    let f = fixture();
    let image = f.image.clone();
    let spec = ManifestSpec {
        board: f.board,
        version: f.version,
        block_size: BLOCK,
        chunk_size: CHUNK,
        created_unix: 0,
        min_version: "",
    };
    let signed = crate::manifest::sign_format(
        &spec,
        &image,
        &keypair(1).sk,
        crate::manifest::MANIFEST_FORMAT_V1,
    )
    .expect("sign v1");
    let manifest = Manifest::verify(&signed, &keypair(1).pk).expect("verify");
    let f1 = Fixture {
        image,
        signed,
        manifest,
        board: f.board,
        version: f.version,
    };
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f1.manifest.block_count());
    start(&f1, &mut rx, &mut shell, &[]);
    assert_eq!(
        feed(&mut rx, &mut shell, ms(1), &list(&f1, 0)),
        Err(DropReason::Unexpected)
    );
    for b in 0..f1.manifest.block_count() {
        for c in 0..f1.manifest.chunks_in_block(b) {
            feed(&mut rx, &mut shell, ms(2), &data(&f1, b, c, 0)).expect("data");
        }
    }
    assert!(shell.done && flash_equals_image(&f1, &shell));
}

#[test]
fn r_roll_1_a_replayed_older_signed_image_below_the_floor_is_refused() {
    // The device runs 2.0.0; 2.1.0 is newer, genuinely signed, and a replay:
    // the device once activated an image whose signed floor was 2.2.0.
    let f = fixture();
    let mut cfg = config();
    cfg.min_version = String::from("2.2.0");
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    rx.handle_datagram(ms(0), sender_addr(), &announce(&f))
        .expect("announce");
    shell.drain(&mut rx, ms(0), &[]);
    assert_eq!(
        shell.hints,
        [Reason::NotNewer],
        "the Announce alone is a hint"
    );
    assert_eq!(rx.state(), DeviceState::Listening);
    // With the floor at 2.1.0 exactly, the same image is accepted.
    let mut cfg = config();
    cfg.min_version = String::from("2.1.0");
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    // A floor set between the Announce and the manifest (an Announce
    // advertising another version) still refuses the signed manifest.
    let mut cfg = config();
    cfg.min_version = String::from("2.1.1");
    let mut rx = Receiver::new(cfg, ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    let ann = enc(
        &f,
        0,
        &Frame::Announce(Announce {
            board: f.board,
            version: "2.9.0",
            image_len: f.image.len() as u64,
            block_size: BLOCK,
            chunk_size: CHUNK,
            manifest_len: f.signed.len() as u32,
            rate_kbps: 1000,
            pass: 0,
        }),
    );
    rx.handle_datagram(ms(0), sender_addr(), &ann)
        .expect("announce");
    for m in manifest_chunks(&f) {
        rx.handle_datagram(ms(0), sender_addr(), &m).expect("chunk");
    }
    shell.drain(&mut rx, ms(0), &[]);
    std::println!(
        "R-ROLL-1: signed 2.1.0 under floor 2.1.1 on a 2.0.0 device: refusals {:?}",
        shell.refusals
    );
    assert_eq!(shell.refusals, [Reason::NotNewer]);
    assert!(!shell.accepted);
}

#[test]
fn r_auth_4_with_a_list_a_forged_parity_symbol_costs_only_itself() {
    let f = fixture();
    let mut rx = Receiver::new(config(), ms(0));
    let mut shell = Shell::new(f.manifest.block_count());
    start(&f, &mut rx, &mut shell, &[]);
    feed(&mut rx, &mut shell, ms(1), &list(&f, 0)).expect("list");
    let k = f.manifest.chunks_per_block();
    for c in 1..k {
        feed(&mut rx, &mut shell, ms(1), &data(&f, 0, c, 0)).expect("data");
    }
    let forged = [0x55u8; CHUNK as usize];
    let p = parity_frame(&f, 0, 0, Some(&forged));
    feed(&mut rx, &mut shell, ms(2), &p).expect("stored: parity is not hashed");
    assert_eq!(rx.stats().digest_failures, 1);
    assert!(shell.write_order.is_empty(), "nothing flashed");
    // The three authenticated source chunks stayed: the missing one alone
    // completes the block (R-PAR-4 without a list needs all four again).
    feed(&mut rx, &mut shell, ms(3), &data(&f, 0, 0, FLAG_REPAIR)).expect("the missing chunk");
    std::println!(
        "R-AUTH-4: after a forged parity symbol failed the decode, 1 chunk of {k} completed the block"
    );
    assert_eq!(shell.flash[0].as_deref(), Some(&f.image[..BLOCK as usize]));
}

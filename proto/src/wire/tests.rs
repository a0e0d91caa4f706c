//! Golden byte vectors for every frame kind, and one test per malformed-input
//! class (R-WIRE-*): each must be a `DecodeError`, never a panic.
//!
//! The golden vectors were derived by hand from the header diagram in
//! `header.rs` and postcard's varint rules, and the CRC-32/ISO-HDLC trailer was
//! cross-checked with an independent implementation (`zlib.crc32`). They are
//! frozen: if one of these tests fails, the wire format changed, which needs a
//! version bump, not a new vector.

use super::*;
use alloc::vec;
use alloc::vec::Vec;
use serde::Serialize;

const SESSION: u32 = 0x0102_0304;
const IMAGE: ImageId = ImageId([0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7]);

// Every vector reads: magic | ver | kind | flags | rsv | session | image id | body | CRC.
const ANNOUNCE_HEX: &str = concat!(
    "464d4353 01 01 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 08 61636d652c727431", // board: len 8, "acme,rt1"
    " 05 322e312e30",       // version: len 5, "2.1.0"
    " c0843d",              // image_len 1_000_000
    " 808004",              // block_size 65536
    " 8008",                // chunk_size 1024
    " d209",                // manifest_len 1234
    " 904e",                // rate_kbps 10_000
    " 03",                  // pass 3
    " f684fe58",
);
const MANIFEST_CHUNK_HEX: &str = concat!(
    "464d4353 01 02 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 8004",        // offset 512
    " 04 deadbeef", // bytes: len 4
    " dc6b6ad7",
);
const DATA_HEX: &str = concat!(
    "464d4353 01 03 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 07 03",               // block 7, chunk 3
    " 08 6669726d77617265", // payload: len 8, "firmware"
    " 64a5ae99",
);
const DATA_REPAIR_HEX: &str = concat!(
    "464d4353 01 03 01 00 01020304 a0a1a2a3a4a5a6a7",
    " 07 03",
    " 08 6669726d77617265",
    " c12e3e97",
);
// R-AUTH-2: block 7, hashes from 0, one 16-byte hash 00..0f.
const CHUNK_LIST_HEX: &str = concat!(
    "464d4353 01 06 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 07 00",                               // block 7, first 0
    " 10 000102030405060708090a0b0c0d0e0f", // hashes: len 16
    " d1a1f508",
);
// R-PAR-1: repair + parity flags; `chunk` 2 is the parity index.
const DATA_PARITY_HEX: &str = concat!(
    "464d4353 01 03 03 00 01020304 a0a1a2a3a4a5a6a7",
    " 07 02",               // block 7, parity symbol 2
    " 08 6669726d77617265", // payload: len 8
    " be8a73f4",
);
const NACK_HEX: &str = concat!(
    "464d4353 01 04 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 88ef99abc5e88c9111", // device_id 0x1122_3344_5566_7788
    " 02",                 // two ranges
    " 0a 05",              // 10..15
    " 64 ac02",            // 100..400
    " 0b4bb16b",
);
const STATUS_HEX: &str = concat!(
    "464d4353 01 05 00 00 01020304 a0a1a2a3a4a5a6a7",
    " 2a",            // device_id 42
    " 03",            // state Receiving
    " 03 10",         // blocks 3 of 16
    " 05 322e302e39", // current_version "2.0.9"
    " 00",            // reason None
    " 8010",          // write_kbps 2048 (R-PACE-1)
    " 05",            // window_free 5
    " 22fe3a23",
);

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| {
            let s = core::str::from_utf8(p).expect("ascii");
            u8::from_str_radix(s, 16).expect("hex digit")
        })
        .collect()
}

fn announce() -> Announce<'static> {
    Announce {
        board: "acme,rt1",
        version: "2.1.0",
        image_len: 1_000_000,
        block_size: 65536,
        chunk_size: 1024,
        manifest_len: 1234,
        rate_kbps: 10_000,
        pass: 3,
    }
}

fn nack(ranges: &[(u32, u32)]) -> Nack {
    let mut v = heapless::Vec::new();
    for &(start, len) in ranges {
        v.push(ChunkRange { start, len }).expect("fits");
    }
    Nack {
        device_id: 0x1122_3344_5566_7788,
        ranges: v,
    }
}

const MANIFEST_BYTES: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
const CHUNK_HASHES: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// (name, flags, frame, golden hex) for every frame kind.
fn goldens() -> Vec<(&'static str, u8, Frame<'static>, &'static str)> {
    let data = Data {
        block: 7,
        chunk: 3,
        payload: Bytes(b"firmware"),
    };
    vec![
        ("announce", 0, Frame::Announce(announce()), ANNOUNCE_HEX),
        (
            "manifest_chunk",
            0,
            Frame::ManifestChunk(ManifestChunk {
                offset: 512,
                bytes: Bytes(&MANIFEST_BYTES),
            }),
            MANIFEST_CHUNK_HEX,
        ),
        ("data", 0, Frame::Data(data.clone()), DATA_HEX),
        (
            "data_repair",
            FLAG_REPAIR,
            Frame::Data(data),
            DATA_REPAIR_HEX,
        ),
        (
            "data_parity",
            FLAG_REPAIR | FLAG_PARITY,
            Frame::Data(Data {
                block: 7,
                chunk: 2,
                payload: Bytes(b"firmware"),
            }),
            DATA_PARITY_HEX,
        ),
        (
            "nack",
            0,
            Frame::Nack(nack(&[(10, 5), (100, 300)])),
            NACK_HEX,
        ),
        (
            "chunk_list",
            0,
            Frame::ChunkList(ChunkList {
                block: 7,
                first: 0,
                hashes: Bytes(&CHUNK_HASHES),
            }),
            CHUNK_LIST_HEX,
        ),
        (
            "status",
            0,
            Frame::Status(Status {
                device_id: 42,
                state: DeviceState::Receiving,
                blocks_done: 3,
                blocks_total: 16,
                current_version: "2.0.9",
                reason: Reason::None,
                write_kbps: 2048,
                window_free: 5,
            }),
            STATUS_HEX,
        ),
    ]
}

fn encode_vec(flags: u8, frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM * 2];
    let n = encode(SESSION, IMAGE, flags, frame, &mut buf).expect("encode");
    buf.truncate(n);
    buf
}

/// Recompute the CRC trailer of a datagram whose covered bytes were edited, so
/// that the check under test fires rather than the CRC check.
fn reseal(datagram: &mut [u8]) {
    let n = datagram.len() - TRAILER_LEN;
    let crc = CRC32.checksum(&datagram[..n]);
    datagram[n..].copy_from_slice(&crc.to_be_bytes());
}

/// A datagram with a correct header for `kind`, the given raw body, and a
/// correct CRC: for bodies that `encode` would never produce.
fn with_body(kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN);
    d.extend_from_slice(&MAGIC);
    d.extend_from_slice(&[VERSION, kind, flags, 0]);
    d.extend_from_slice(&SESSION.to_be_bytes());
    d.extend_from_slice(&IMAGE.0);
    d.extend_from_slice(body);
    d.extend_from_slice(&[0; TRAILER_LEN]);
    reseal(&mut d);
    d
}

fn body_of(datagram: &[u8]) -> &[u8] {
    &datagram[HEADER_LEN..datagram.len() - TRAILER_LEN]
}

// --- golden vectors -------------------------------------------------------

fn check_golden(name: &str) {
    let (_, flags, frame, hex) = goldens()
        .into_iter()
        .find(|g| g.0 == name)
        .expect("known golden");
    let golden = unhex(hex);
    assert_eq!(
        encode_vec(flags, &frame),
        golden,
        "{name}: encoding changed"
    );
    let expected_header = Header {
        kind: frame.kind(),
        flags,
        session: SESSION,
        image_id: IMAGE,
    };
    assert_eq!(
        decode(&golden),
        Ok((expected_header, frame)),
        "{name}: decode"
    );
}

#[test]
fn golden_announce() {
    check_golden("announce");
}

#[test]
fn golden_manifest_chunk() {
    check_golden("manifest_chunk");
}

#[test]
fn golden_data() {
    check_golden("data");
}

#[test]
fn golden_data_repair_flag() {
    check_golden("data_repair");
}

#[test]
fn golden_data_parity_flag() {
    check_golden("data_parity");
}

#[test]
fn r_par_1_parity_flag_on_other_kinds_is_refused() {
    for (name, flags, _, hex) in goldens() {
        let g = unhex(hex);
        if g[5] == FrameKind::Data as u8 {
            continue;
        }
        let d = with_body(g[5], flags | FLAG_PARITY, body_of(&g));
        assert_eq!(decode(&d), Err(DecodeError::ReservedBits), "{name}");
    }
}

#[test]
fn golden_nack_two_ranges() {
    check_golden("nack");
}

#[test]
fn golden_status() {
    check_golden("status");
}

#[test]
fn r_auth_2_golden_chunk_list_and_its_ranges() {
    check_golden("chunk_list");
    let g = unhex(CHUNK_LIST_HEX);
    // Hash bytes not a multiple of 16, none, or past the 16,384th chunk.
    for body in [
        &[7u8, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[7, 0, 0][..],
    ] {
        assert_eq!(
            decode(&with_body(g[5], 0, body)),
            Err(DecodeError::OutOfRange("hashes"))
        );
    }
    let far = encode_vec(
        0,
        &Frame::ChunkList(ChunkList {
            block: 7,
            first: 16_384,
            hashes: Bytes(&CHUNK_HASHES),
        }),
    );
    assert_eq!(decode(&far), Err(DecodeError::OutOfRange("first")));
}

/// R-WIRE-1, R-WIRE-2: the layout of the header diagram, field by field, and
/// the CRC trailer is big-endian over every byte before it.
#[test]
fn golden_header_layout_matches_diagram() {
    for (name, flags, frame, hex) in goldens() {
        let g = unhex(hex);
        assert_eq!(&g[0..4], b"FMCS", "{name}: magic");
        assert_eq!(g[4], 1, "{name}: version");
        assert_eq!(g[5], frame.kind() as u8, "{name}: kind");
        assert_eq!(g[6], flags, "{name}: flags");
        assert_eq!(g[7], 0, "{name}: reserved");
        assert_eq!(&g[8..12], &[1, 2, 3, 4], "{name}: session is big-endian");
        assert_eq!(&g[12..20], &IMAGE.0, "{name}: image id");
        let n = g.len() - 4;
        assert_eq!(
            g[n..],
            CRC32.checksum(&g[..n]).to_be_bytes(),
            "{name}: CRC trailer"
        );
    }
    // The CRC is CRC-32/ISO-HDLC, i.e. zlib's: check value of "123456789".
    assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
}

/// A CRC carried across pieces is the whole input's (the read-back of a
/// block from flash in pieces).
#[test]
fn crc_appended_piece_by_piece_is_the_wholes() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 37 + 11) as u8).collect();
    assert_eq!(CRC32.append(0, b"123456789"), 0xCBF4_3926);
    for piece in [1usize, 7, 4096, 5000] {
        let crc = data.chunks(piece).fold(0, |c, p| CRC32.append(c, p));
        assert_eq!(crc, CRC32.checksum(&data), "pieces of {piece}");
    }
}

// --- malformed input: each class is an error, never a panic ----------------

#[test]
fn every_truncation_is_an_error() {
    for (name, _, _, hex) in goldens() {
        let g = unhex(hex);
        for len in 0..g.len() {
            let want = if len < HEADER_LEN + TRAILER_LEN {
                DecodeError::Truncated
            } else {
                DecodeError::BadCrc
            };
            assert_eq!(decode(&g[..len]), Err(want), "{name} truncated to {len}");
        }
    }
}

#[test]
fn every_single_bit_flip_is_an_error() {
    for (name, _, _, hex) in goldens() {
        let g = unhex(hex);
        for bit in 0..g.len() * 8 {
            let mut bad = g.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = decode(&bad).expect_err("a flipped bit must not decode");
            // The header is checked before the CRC, so the header bytes name
            // their own error; every other flip is caught by the CRC.
            let ok = match bit / 8 {
                0..=3 => err == DecodeError::BadMagic,
                4 => err == DecodeError::UnsupportedVersion(bad[4]),
                5 => err == DecodeError::UnknownKind(bad[5]) || err == DecodeError::BadCrc,
                // Known flags (R-PAR-1, R-WIRE-7) pass the header check.
                6 if bit % 8 < 3 => err == DecodeError::BadCrc,
                6 | 7 => err == DecodeError::ReservedBits,
                _ => err == DecodeError::BadCrc,
            };
            assert!(ok, "{name}: flip of bit {bit} gave {err:?}");
        }
    }
}

#[test]
fn bad_magic_is_refused() {
    for magic in [*b"FMCT", *b"fmcs", [0; 4], [0xFF; 4]] {
        let mut d = unhex(DATA_HEX);
        d[0..4].copy_from_slice(&magic);
        reseal(&mut d);
        assert_eq!(decode(&d), Err(DecodeError::BadMagic));
    }
}

#[test]
fn other_versions_are_refused_even_with_a_good_crc() {
    for version in [0u8, 2, 0xFF] {
        let mut d = unhex(DATA_HEX);
        d[4] = version;
        reseal(&mut d);
        assert_eq!(decode(&d), Err(DecodeError::UnsupportedVersion(version)));
    }
}

#[test]
fn unknown_kinds_are_refused_even_with_a_good_crc() {
    for kind in [0u8, 7, 9, 0xFF] {
        let mut d = unhex(DATA_HEX);
        d[5] = kind;
        reseal(&mut d);
        assert_eq!(
            decode(&d),
            Err(DecodeError::UnknownKind(kind)),
            "kind {kind}"
        );
    }
}

#[test]
fn reserved_byte_set_is_refused() {
    for rsv in [1u8, 0x80, 0xFF] {
        let mut d = unhex(DATA_HEX);
        d[7] = rsv;
        reseal(&mut d);
        assert_eq!(decode(&d), Err(DecodeError::ReservedBits));
    }
}

#[test]
fn unknown_flag_bits_are_refused() {
    for bit in 2..8 {
        let mut d = unhex(DATA_REPAIR_HEX);
        d[6] |= 1 << bit;
        reseal(&mut d);
        assert_eq!(decode(&d), Err(DecodeError::ReservedBits), "flag bit {bit}");
    }
}

#[test]
fn trailing_bytes_after_the_body_are_refused() {
    for (name, flags, _, hex) in goldens() {
        let g = unhex(hex);
        let mut body = body_of(&g).to_vec();
        body.push(0);
        let d = with_body(g[5], flags, &body);
        assert_eq!(decode(&d), Err(DecodeError::TrailingBytes), "{name}");
    }
}

#[test]
fn empty_or_cut_bodies_are_refused() {
    for (name, flags, _, hex) in goldens() {
        let g = unhex(hex);
        let body = body_of(&g);
        for cut in 0..body.len() {
            let d = with_body(g[5], flags, &body[..cut]);
            assert!(decode(&d).is_err(), "{name}: body cut to {cut} decoded");
        }
    }
}

/// Same wire shape as `Nack`, but with an unbounded range list.
#[derive(Serialize)]
struct RawNack {
    device_id: u64,
    ranges: Vec<ChunkRange>,
}

fn raw_nack(count: u32) -> Vec<u8> {
    let ranges = (0..count)
        .map(|i| ChunkRange {
            start: i * 10,
            len: 1,
        })
        .collect();
    let body = postcard::to_allocvec(&RawNack {
        device_id: 1,
        ranges,
    })
    .expect("serialize");
    with_body(FrameKind::Nack as u8, 0, &body)
}

#[test]
fn nack_range_count_is_bounded() {
    match decode(&raw_nack(MAX_NACK_RANGES as u32)) {
        Ok((_, Frame::Nack(n))) => assert_eq!(n.ranges.len(), MAX_NACK_RANGES),
        other => panic!("64 ranges must decode, got {other:?}"),
    }
    assert_eq!(
        decode(&raw_nack(MAX_NACK_RANGES as u32 + 1)),
        Err(DecodeError::Malformed)
    );
    // A huge count with few bytes behind it runs out of input; nothing is
    // allocated up front.
    let mut body = vec![0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
    body.extend_from_slice(&[0x00, 0x01]);
    let d = with_body(FrameKind::Nack as u8, 0, &body);
    assert!(decode(&d).is_err());
}

#[test]
fn nack_ranges_must_be_sorted_disjoint_and_non_empty() {
    let bad: &[&[(u32, u32)]] = &[
        &[(10, 0)],                // zero length
        &[(10, 5), (12, 5)],       // overlapping
        &[(100, 5), (10, 5)],      // unsorted
        &[(10, 5), (20, 0)],       // zero length, second
        &[(u32::MAX, 2)],          // end overflows u32
        &[(0, 1), (5, 5), (7, 1)], // third overlaps second
    ];
    for ranges in bad {
        let d = encode_vec(0, &Frame::Nack(nack(ranges)));
        assert_eq!(
            decode(&d),
            Err(DecodeError::OutOfRange("ranges")),
            "{ranges:?}"
        );
    }
    // Adjacent ranges do not overlap; an empty list is a valid "nothing missing".
    for ranges in [&[(10, 5), (15, 5)][..], &[], &[(u32::MAX - 1, 1)]] {
        let d = encode_vec(0, &Frame::Nack(nack(ranges)));
        assert!(decode(&d).is_ok(), "{ranges:?}");
    }
}

const BOARD_65: &str = "b234567890123456789012345678901234567890123456789012345678901234x";
const VERSION_33: &str = "v23456789012345678901234567890123";

#[test]
fn announce_geometry_and_fields_are_checked() {
    assert_eq!(
        (BOARD_65.len(), VERSION_33.len()),
        (MAX_BOARD_LEN + 1, MAX_VERSION_LEN + 1)
    );
    type Edit = fn(&mut Announce<'static>);
    let cases: &[(Edit, &str)] = &[
        (|a| a.block_size = 1000, "block_size"), // less than one chunk
        (|a| a.block_size = 0, "block_size"),
        (|a| a.block_size = MAX_BLOCK_SIZE + 1024, "block_size"),
        (|a| a.chunk_size = 0, "chunk_size"),
        (|a| a.chunk_size = MIN_CHUNK_SIZE - 1, "chunk_size"),
        (|a| a.chunk_size = MAX_CHUNK_SIZE + 1, "chunk_size"),
        (|a| a.image_len = 0, "image_len"),
        (|a| a.board = "", "board"),
        (|a| a.board = BOARD_65, "board"),
        (|a| a.version = "", "version"),
        (|a| a.version = VERSION_33, "version"),
        (|a| a.manifest_len = 0, "manifest_len"),
        (|a| a.manifest_len = MAX_MANIFEST_LEN + 1, "manifest_len"),
    ];
    for (edit, field) in cases {
        let mut a = announce();
        edit(&mut a);
        let d = encode_vec(0, &Frame::Announce(a.clone()));
        assert_eq!(decode(&d), Err(DecodeError::OutOfRange(field)), "{a:?}");
    }
}

#[test]
fn announce_limits_are_inclusive() {
    let mut a = announce();
    a.board = "b23456789012345678901234567890123456789012345678901234567890123x";
    a.version = "v234567890123456789012345678901x";
    a.chunk_size = MAX_CHUNK_SIZE;
    a.block_size = MAX_BLOCK_SIZE;
    a.manifest_len = MAX_MANIFEST_LEN;
    assert_eq!(
        (a.board.len(), a.version.len()),
        (MAX_BOARD_LEN, MAX_VERSION_LEN)
    );
    let d = encode_vec(0, &Frame::Announce(a.clone()));
    assert_eq!(decode(&d).map(|(_, f)| f), Ok(Frame::Announce(a)));
}

#[test]
fn data_payload_must_be_1_to_8192_bytes() {
    let big = vec![0x5Au8; MAX_CHUNK_SIZE as usize + 1];
    for len in [0, MAX_CHUNK_SIZE as usize + 1] {
        let frame = Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: Bytes(&big[..len]),
        });
        let d = encode_vec(0, &frame);
        assert_eq!(
            decode(&d),
            Err(DecodeError::OutOfRange("payload")),
            "payload of {len}"
        );
    }
    for len in [1, MAX_CHUNK_SIZE as usize] {
        let frame = Frame::Data(Data {
            block: 0,
            chunk: 0,
            payload: Bytes(&big[..len]),
        });
        let d = encode_vec(FLAG_REPAIR, &frame);
        assert!(d.len() <= MAX_DATAGRAM, "a full chunk fits MAX_DATAGRAM");
        assert_eq!(decode(&d).map(|(_, f)| f), Ok(frame), "payload of {len}");
    }
}

#[test]
fn data_chunk_index_is_bounded() {
    let limit = MAX_BLOCK_SIZE / MIN_CHUNK_SIZE;
    let frame = |chunk| {
        Frame::Data(Data {
            block: 0,
            chunk,
            payload: Bytes(b"x"),
        })
    };
    assert!(decode(&encode_vec(0, &frame(limit - 1))).is_ok());
    assert_eq!(
        decode(&encode_vec(0, &frame(limit))),
        Err(DecodeError::OutOfRange("chunk"))
    );
}

#[test]
fn manifest_chunk_must_be_non_empty_and_inside_the_manifest() {
    let four = [1u8, 2, 3, 4];
    let frame = |offset, bytes| {
        Frame::ManifestChunk(ManifestChunk {
            offset,
            bytes: Bytes(bytes),
        })
    };
    for (offset, bytes) in [
        (0, &four[..0]),
        (MAX_MANIFEST_LEN - 3, &four[..]),
        (u32::MAX, &four[..1]),
    ] {
        let d = encode_vec(0, &frame(offset, bytes));
        assert_eq!(
            decode(&d),
            Err(DecodeError::OutOfRange("offset")),
            "offset {offset}"
        );
    }
    let d = encode_vec(0, &frame(MAX_MANIFEST_LEN - 4, &four[..]));
    assert!(decode(&d).is_ok());
}

/// State and reason of STATUS_HEX's Status with body byte `at` set to `value`.
fn status_codes_with(at: usize, value: u8) -> (DeviceState, Reason) {
    let mut body = body_of(&unhex(STATUS_HEX)).to_vec();
    body[at] = value;
    match decode(&with_body(5, 0, &body)) {
        Ok((_, Frame::Status(s))) => (s.state, s.reason),
        other => panic!("body byte {at} = {value}: {other:?}"),
    }
}

#[test]
fn status_fields_are_checked() {
    let g = unhex(STATUS_HEX);
    // blocks_done > blocks_total
    let d = with_body(5, 0, &[0x2a, 0x03, 0x11, 0x10, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(decode(&d), Err(DecodeError::OutOfRange("status")));
    // The appended activation and stalled states and reasons (up to
    // target-open, R-STAT-7) decode as themselves; the next values as
    // unknown (R-STAT-9).
    for state in 8..=12 {
        let (s, _) = status_codes_with(1, state);
        assert_eq!(s, DeviceState::from_u8(state));
        assert_eq!(matches!(s, DeviceState::Unknown(_)), state == 12);
    }
    // The reason is the byte after current_version.
    assert_eq!(status_codes_with(10, 10).1, Reason::TargetOpen);
    assert_eq!(status_codes_with(10, 11).1, Reason::Unknown(11));
    // current_version that is not UTF-8.
    let mut body = body_of(&g).to_vec();
    body[5] = 0xFF;
    assert_eq!(decode(&with_body(5, 0, &body)), Err(DecodeError::Malformed));
    // current_version longer than MAX_VERSION_LEN.
    let long = [b'9'; MAX_VERSION_LEN + 1];
    let mut body = vec![0x2a, 0x03, 0x03, 0x10, long.len() as u8];
    body.extend_from_slice(&long);
    body.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        decode(&with_body(5, 0, &body)),
        Err(DecodeError::OutOfRange("status"))
    );
}

/// R-STAT-9: a newer agent's state and reason, one byte each, decode as
/// `Unknown(n)` and re-encode to the same bytes; the rest of the Status is
/// kept (the known values' encoding is `golden_status`).
#[test]
fn r_stat_9_a_status_with_state_200_and_reason_200_decodes() {
    let mut body = body_of(&unhex(STATUS_HEX)).to_vec();
    body[1] = 200;
    body[10] = 200;
    let d = with_body(5, 0, &body);
    let Ok((_, Frame::Status(s))) = decode(&d) else {
        panic!("refused: {:?}", decode(&d))
    };
    assert_eq!(s.state, DeviceState::Unknown(200));
    assert_eq!(s.reason, Reason::Unknown(200));
    assert_eq!((s.device_id, s.blocks_done, s.blocks_total), (42, 3, 16));
    assert_eq!(
        (s.current_version, s.write_kbps, s.window_free),
        ("2.0.9", 2048, 5)
    );
    assert_eq!(encode_vec(0, &Frame::Status(s)), d);
}

#[test]
fn header_and_trailer_alone_are_not_a_frame() {
    for kind in 1..=5u8 {
        let d = with_body(kind, 0, &[]);
        assert_eq!(decode(&d), Err(DecodeError::Truncated), "kind {kind}");
    }
}

/// A frame's encoding is unique: the decoder must refuse a varint with
/// redundant continuation bytes, or two different datagrams (and two
/// different CRCs) mean the same frame, and decode → encode is not the
/// identity that the fuzz target checks.
#[test]
fn overlong_varints_are_refused() {
    // DATA_HEX with block 7 written as `87 00` instead of `07`.
    let g = unhex(DATA_HEX);
    let mut body = vec![0x87, 0x00];
    body.extend_from_slice(&body_of(&g)[1..]);
    let d = with_body(FrameKind::Data as u8, 0, &body);
    assert!(
        decode(&d).is_err(),
        "overlong varint accepted as {:?}",
        decode(&d)
    );
}

// --- encoding never panics ---------------------------------------------

#[test]
fn encode_into_a_short_buffer_is_an_error() {
    for (name, flags, frame, hex) in goldens() {
        let len = unhex(hex).len();
        for room in 0..len {
            let mut buf = vec![0u8; room];
            assert_eq!(
                encode(SESSION, IMAGE, flags, &frame, &mut buf),
                Err(EncodeError::BufferTooSmall),
                "{name} into {room} bytes"
            );
        }
        let mut buf = vec![0u8; len];
        assert_eq!(
            encode(SESSION, IMAGE, flags, &frame, &mut buf),
            Ok(len),
            "{name}: exact fit"
        );
    }
}

#[test]
fn errors_display_one_line() {
    use alloc::string::ToString;
    let all = [
        DecodeError::Truncated,
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion(2),
        DecodeError::UnknownKind(9),
        DecodeError::ReservedBits,
        DecodeError::BadCrc,
        DecodeError::Malformed,
        DecodeError::TrailingBytes,
        DecodeError::OutOfRange("ranges"),
    ];
    for e in all {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{e:?}");
    }
    assert!(!EncodeError::BufferTooSmall.to_string().is_empty());
}

#[test]
fn r_wire_6_a_block_need_not_be_a_multiple_of_the_chunk_size() {
    let mut a = announce();
    a.block_size = 65536;
    a.chunk_size = 1408;
    let d = encode_vec(0, &Frame::Announce(a.clone()));
    assert_eq!(decode(&d).map(|(_, f)| f), Ok(Frame::Announce(a)));
    assert_eq!(chunks_per_block(65536, 1408), 47);
    assert_eq!(chunks_per_block(65536, 1024), 64);
    // Chunk 45 is whole, chunk 46 is the short tail of block 0, chunk 47 is past it.
    assert_eq!(
        chunk_span(200_000, 65536, 1408, 0, 45),
        Some((45 * 1408, 1408))
    );
    assert_eq!(
        chunk_span(200_000, 65536, 1408, 0, 46),
        Some((46 * 1408, 768))
    );
    assert_eq!(chunk_span(200_000, 65536, 1408, 0, 47), None);
    // Block 1 starts at the block boundary, not at 47 chunks.
    assert_eq!(chunk_span(200_000, 65536, 1408, 1, 0), Some((65536, 1408)));
    // The last block (200000 - 3 * 65536 = 3392 bytes) is cut at the image end.
    assert_eq!(
        chunk_span(200_000, 65536, 1408, 3, 2),
        Some((3 * 65536 + 2816, 576))
    );
    assert_eq!(chunk_span(200_000, 65536, 1408, 3, 3), None);
    assert_eq!(chunk_span(200_000, 65536, 1408, 4, 0), None);
}

// --- signed Status (R-WIRE-7) ----------------------------------------------

fn device_key() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]))
}

// STATUS_HEX with FLAG_SIGNED, then the Ed25519 signature (seed 07 × 32)
// over header and body, then the CRC. Signature and CRC were cross-checked
// with independent implementations (OpenSSL's Ed25519 through Python's
// `cryptography`, and `zlib.crc32`).
const SIGNED_STATUS_HEX: &str = concat!(
    "464d4353 01 05 04 00 01020304 a0a1a2a3a4a5a6a7",
    " 2a 03 03 10 05 322e302e39 00 8010 05",
    " ab6262ca964af6cfd64bdf310c377a9661ecb2bcc997794eb8a29de1de5e55bf",
    " 95104204486d9f7db1c348aa42c53a38b5e1e167f6c48806a85168d0c69c560d",
    " c60b87c1",
);

fn signed_status() -> Vec<u8> {
    let mut buf = unhex(STATUS_HEX);
    let len = buf.len();
    buf.resize(len + SIGNATURE_LEN, 0);
    let n = sign_status(&mut buf, len, &device_key().sk).expect("sign");
    assert_eq!(n, len + SIGNATURE_LEN);
    buf
}

#[test]
fn r_wire_7_golden_signed_status() {
    let d = signed_status();
    let hex: alloc::string::String = d.iter().map(|b| alloc::format!("{b:02x}")).collect();
    std::println!("signed status ({} bytes): {hex}", d.len());
    assert_eq!(d, unhex(SIGNED_STATUS_HEX), "signed status golden");
    let (h, f) = decode(&d).expect("signed status decodes");
    assert_eq!(h.flags, FLAG_SIGNED);
    let (_, _, want, _) = goldens()
        .into_iter()
        .find(|g| g.0 == "status")
        .expect("status golden");
    assert_eq!(f, want, "the body is the unsigned Status's");
    assert!(verify_status(&d, &device_key().pk));
    let other = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([8; 32]));
    assert!(!verify_status(&d, &other.pk), "another key does not verify");
    assert!(
        !verify_status(&unhex(STATUS_HEX), &device_key().pk),
        "an unsigned Status is not verified"
    );
}

#[test]
fn r_wire_7_any_change_to_a_signed_status_fails_its_signature() {
    let d = signed_status();
    let pk = device_key().pk;
    let crc_at = d.len() - TRAILER_LEN;
    for i in 0..crc_at {
        if i == 6 {
            continue; // the flag itself: clearing it makes an unsigned (malformed) frame
        }
        let mut m = d.clone();
        m[i] ^= 0x01;
        reseal(&mut m);
        assert!(!verify_status(&m, &pk), "byte {i} flipped still verifies");
    }
}

#[test]
fn r_wire_7_signed_flag_only_on_status() {
    for (name, flags, _, hex) in goldens() {
        let mut d = unhex(hex);
        d[6] = flags | FLAG_SIGNED;
        reseal(&mut d);
        if name == "status" {
            // A Status with the flag but no room for a signature is cut short.
            assert!(decode(&d).is_err(), "{name}");
        } else {
            assert_eq!(decode(&d), Err(DecodeError::ReservedBits), "{name}");
        }
    }
    // Signing refuses anything but an unsigned Status.
    let mut data = unhex(DATA_HEX);
    let len = data.len();
    data.resize(len + SIGNATURE_LEN, 0);
    assert!(sign_status(&mut data, len, &device_key().sk).is_err());
    let mut twice = signed_status();
    let len = twice.len();
    twice.resize(len + SIGNATURE_LEN, 0);
    assert!(sign_status(&mut twice, len, &device_key().sk).is_err());
}

#[test]
fn r_wire_7_truncated_signed_status_is_an_error() {
    let d = signed_status();
    for cut in 0..d.len() {
        assert!(decode(&d[..cut]).is_err(), "cut at {cut}");
    }
}

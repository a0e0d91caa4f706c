//! Property tests of the wire codec (R-WIRE-*):
//!
//! - every valid frame of every kind survives `decode(encode(x)) == x`;
//! - `decode` never panics, on any bytes, including arbitrary bodies behind a
//!   valid header and CRC (which reach the body parser);
//! - a valid datagram with an arbitrary mutation (truncate, bit flip, splice)
//!   decodes only if it still carries a valid CRC, and then re-encoding the
//!   result gives back exactly the mutated bytes.
//!
//! Case counts are kept moderate so this file runs in a few seconds in debug.

use proptest::collection::vec;
use proptest::prelude::*;
use proto::wire::{
    check_crc, decode, encode, Announce, Bytes, ChunkRange, Data, DeviceState, Frame, Header,
    ImageId, ManifestChunk, Nack, Reason, Status, CRC32, FLAG_REPAIR, HEADER_LEN, MAGIC,
    MAX_BLOCK_SIZE, MAX_CHUNK_SIZE, MAX_DATAGRAM, MAX_MANIFEST_LEN, MAX_NACK_RANGES,
    MIN_CHUNK_SIZE, TRAILER_LEN, VERSION,
};

/// A frame that owns its bytes, so a strategy can produce it; `frame()`
/// borrows it as the codec's `Frame`.
#[derive(Debug, Clone)]
enum Owned {
    Announce {
        board: String,
        version: String,
        image_len: u64,
        block_size: u32,
        chunk_size: u32,
        manifest_len: u32,
        rate_kbps: u32,
        pass: u32,
    },
    ManifestChunk {
        offset: u32,
        bytes: Vec<u8>,
    },
    Data {
        block: u32,
        chunk: u32,
        payload: Vec<u8>,
    },
    Nack {
        device_id: u64,
        ranges: Vec<(u32, u32)>,
    },
    Status {
        device_id: u64,
        state: DeviceState,
        blocks_done: u32,
        blocks_total: u32,
        current_version: String,
        reason: Reason,
        write_kbps: u32,
        window_free: u16,
    },
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Owned::Announce {
                board,
                version,
                image_len,
                block_size,
                chunk_size,
                manifest_len,
                rate_kbps,
                pass,
            } => Frame::Announce(Announce {
                board,
                version,
                image_len: *image_len,
                block_size: *block_size,
                chunk_size: *chunk_size,
                manifest_len: *manifest_len,
                rate_kbps: *rate_kbps,
                pass: *pass,
            }),
            Owned::ManifestChunk { offset, bytes } => Frame::ManifestChunk(ManifestChunk {
                offset: *offset,
                bytes: Bytes(bytes),
            }),
            Owned::Data {
                block,
                chunk,
                payload,
            } => Frame::Data(Data {
                block: *block,
                chunk: *chunk,
                payload: Bytes(payload),
            }),
            Owned::Nack { device_id, ranges } => {
                let mut v = heapless::Vec::new();
                for &(start, len) in ranges {
                    v.push(ChunkRange { start, len })
                        .expect("strategy keeps at most MAX_NACK_RANGES");
                }
                Frame::Nack(Nack {
                    device_id: *device_id,
                    ranges: v,
                })
            }
            Owned::Status {
                device_id,
                state,
                blocks_done,
                blocks_total,
                current_version,
                reason,
                write_kbps,
                window_free,
            } => Frame::Status(Status {
                device_id: *device_id,
                state: *state,
                blocks_done: *blocks_done,
                blocks_total: *blocks_total,
                current_version,
                reason: *reason,
                write_kbps: *write_kbps,
                window_free: *window_free,
            }),
        }
    }
}

// ASCII plus a two-byte character, so the byte limits (64 and 32) hold.
fn board() -> impl Strategy<Value = String> {
    "[a-z0-9,._é-]{1,32}"
}

fn version() -> impl Strategy<Value = String> {
    "[0-9a-z.+é-]{1,16}"
}

fn announce() -> impl Strategy<Value = Owned> {
    (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE)
        .prop_flat_map(|chunk| (Just(chunk), 1..=MAX_BLOCK_SIZE / chunk))
        .prop_flat_map(|(chunk, k)| {
            let block = chunk * k;
            let max_image = u64::from(u32::MAX) * u64::from(block);
            let image_len = prop_oneof![1..=u64::from(block) * 4, 1..=max_image];
            (
                board(),
                version(),
                image_len,
                Just(block),
                Just(chunk),
                1..=MAX_MANIFEST_LEN,
                any::<u32>(),
                any::<u32>(),
            )
        })
        .prop_map(
            |(board, version, image_len, block_size, chunk_size, manifest_len, rate_kbps, pass)| {
                Owned::Announce {
                    board,
                    version,
                    image_len,
                    block_size,
                    chunk_size,
                    manifest_len,
                    rate_kbps,
                    pass,
                }
            },
        )
}

fn manifest_chunk() -> impl Strategy<Value = Owned> {
    vec(any::<u8>(), 1..=1024).prop_flat_map(|bytes| {
        let max_offset = MAX_MANIFEST_LEN - bytes.len() as u32;
        (0..=max_offset).prop_map(move |offset| Owned::ManifestChunk {
            offset,
            bytes: bytes.clone(),
        })
    })
}

fn data() -> impl Strategy<Value = Owned> {
    let payload = prop_oneof![
        4 => vec(any::<u8>(), 1..=256),
        1 => vec(any::<u8>(), (MAX_CHUNK_SIZE as usize - 64)..=MAX_CHUNK_SIZE as usize),
    ];
    (any::<u32>(), 0..MAX_BLOCK_SIZE / MIN_CHUNK_SIZE, payload).prop_map(
        |(block, chunk, payload)| Owned::Data {
            block,
            chunk,
            payload,
        },
    )
}

fn nack() -> impl Strategy<Value = Owned> {
    let step = (0u32..5000, 1u32..5000);
    (
        any::<u64>(),
        0u32..(1 << 31),
        vec(step, 0..=MAX_NACK_RANGES),
    )
        .prop_map(|(device_id, base, steps)| {
            // Sorted and disjoint by construction: each range starts at or after
            // the previous one's end.
            let mut next = base;
            let ranges = steps
                .into_iter()
                .map(|(gap, len)| {
                    let start = next + gap;
                    next = start + len;
                    (start, len)
                })
                .collect();
            Owned::Nack { device_id, ranges }
        })
}

// Every byte: the known values and, as a newer agent sends them, values
// this build does not know (R-STAT-9).
fn device_state() -> impl Strategy<Value = DeviceState> {
    any::<u8>().prop_map(DeviceState::from_u8)
}

fn reason() -> impl Strategy<Value = Reason> {
    any::<u8>().prop_map(Reason::from_u8)
}

fn status() -> impl Strategy<Value = Owned> {
    (
        any::<u64>(),
        device_state(),
        any::<u32>(),
        "[0-9a-z.é]{0,16}",
        reason(),
        any::<(u32, u16)>(),
    )
        .prop_flat_map(|(device_id, state, total, v, reason, (kbps, free))| {
            (0..=total).prop_map(move |done| Owned::Status {
                device_id,
                state,
                blocks_done: done,
                blocks_total: total,
                current_version: v.clone(),
                reason,
                write_kbps: kbps,
                window_free: free,
            })
        })
}

fn any_frame() -> impl Strategy<Value = Owned> {
    prop_oneof![announce(), manifest_chunk(), data(), nack(), status()]
}

/// Header fields a peer may put on any frame.
fn header_fields() -> impl Strategy<Value = (u32, ImageId, u8)> {
    (
        any::<u32>(),
        any::<[u8; 8]>().prop_map(ImageId),
        prop_oneof![Just(0u8), Just(FLAG_REPAIR)],
    )
}

fn encode_vec(session: u32, image_id: ImageId, flags: u8, frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n =
        encode(session, image_id, flags, frame, &mut buf).expect("a valid frame fits MAX_DATAGRAM");
    buf.truncate(n);
    buf
}

/// Encode what `decode` returned, with the header fields it returned.
fn reencode(header: &Header, frame: &Frame<'_>) -> Vec<u8> {
    encode_vec(header.session, header.image_id, header.flags, frame)
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize),
    Splice {
        at: usize,
        remove: usize,
        insert: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::Flip),
        (any::<usize>(), 0usize..8, vec(any::<u8>(), 0..8))
            .prop_map(|(at, remove, insert)| Mutation::Splice { at, remove, insert }),
    ]
}

fn apply(m: &Mutation, d: &mut Vec<u8>) {
    match m {
        Mutation::Truncate(n) => d.truncate(n % (d.len() + 1)),
        Mutation::Flip(bit) => {
            let bit = bit % (d.len() * 8);
            d[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::Splice { at, remove, insert } => {
            let at = at % (d.len() + 1);
            let end = (at + remove).min(d.len());
            d.splice(at..end, insert.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_valid_frame_round_trips((session, image_id, flags) in header_fields(), owned in any_frame()) {
        let frame = owned.frame();
        let bytes = encode_vec(session, image_id, flags, &frame);
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        let expected = Header { kind: frame.kind(), flags, session, image_id };
        prop_assert_eq!(decode(&bytes), Ok((expected, frame)));
    }

    #[test]
    fn a_mutated_datagram_decodes_only_with_a_valid_crc(
        (session, image_id, flags) in header_fields(),
        owned in any_frame(),
        mutations in vec(mutation(), 1..4),
    ) {
        let mut bytes = encode_vec(session, image_id, flags, &owned.frame());
        for m in &mutations {
            if bytes.is_empty() {
                break;
            }
            apply(m, &mut bytes);
        }
        if let Ok((header, frame)) = decode(&bytes) {
            prop_assert!(check_crc(&bytes).is_ok());
            prop_assert_eq!(reencode(&header, &frame), bytes, "decode then encode is not the identity");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    /// Arbitrary bodies behind a valid header and a correct CRC: the CRC is no
    /// longer a shield, so this reaches every body parser and range check.
    #[test]
    fn decode_never_panics_on_arbitrary_bodies(
        kind in 0u8..8,
        flags in prop_oneof![Just(0u8), Just(FLAG_REPAIR)],
        body in vec(any::<u8>(), 0..256),
    ) {
        let mut d = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN);
        d.extend_from_slice(&MAGIC);
        d.extend_from_slice(&[VERSION, kind, flags, 0]);
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&body);
        let crc = CRC32.checksum(&d);
        d.extend_from_slice(&crc.to_be_bytes());
        if let Ok((header, frame)) = decode(&d) {
            prop_assert_eq!(header.kind as u8, kind);
            // Meaning survives a round trip. (Byte identity does not, yet:
            // overlong varints are accepted; see wire::tests.)
            let again = reencode(&header, &frame);
            prop_assert_eq!(decode(&again), Ok((header, frame)));
        } else if !(1..=6).contains(&kind) {
            prop_assert_eq!(decode(&d).map(|_| ()), Err(proto::wire::DecodeError::UnknownKind(kind)));
        }
    }
}

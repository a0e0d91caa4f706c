//! Property tests of the signed manifest (R-MAN-1, R-MAN-2, R-WIRE-5,
//! R-WIRE-6), the stable counterpart of `fuzz/fuzz_targets/manifest.rs`:
//!
//! - `sign` then `verify` round-trips for any valid geometry, including
//!   chunk sizes that do not divide the block size, and the manifest's
//!   accessors agree with it (its chunks cover each block exactly);
//! - `verify` and `decode_unverified` never panic on arbitrary bytes, nor on
//!   an arbitrary body behind a genuine signature, and agree with each other;
//! - a block's digest fed in pieces of any length ([`BlockHasher`], the
//!   read-back from flash) equals its digest over the whole block, in both
//!   formats.

use proptest::collection::vec;
use proptest::prelude::*;
use proto::manifest::{
    block_digest, chunk_hash, chunk_list_digest, sign, BlockHasher, Manifest, ManifestError,
    ManifestSpec, MANIFEST_FORMAT, MANIFEST_MAGIC,
};
use proto::wire::{MAX_BLOCK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

fn keypair() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x42; 32]))
}

/// R-WIRE-6: the accessors of an accepted manifest agree with its geometry.
fn check_accessors(m: &Manifest) {
    let blocks = m.image_len.div_ceil(u64::from(m.block_size));
    assert_eq!(u64::from(m.block_count()), blocks);
    assert_eq!(m.chunks_per_block(), m.block_size.div_ceil(m.chunk_size));
    let last = m.block_count() - 1;
    for i in [0, last / 2, last, last.saturating_add(1)] {
        let len = m.block_len(i);
        assert_eq!(len == 0, i > last);
        if len == 0 {
            continue;
        }
        let chunks = m.chunks_in_block(i);
        assert!(chunks <= m.chunks_per_block());
        let covered: usize = (0..chunks)
            .map(|c| m.chunk_span(i, c).map_or(0, |(_, n)| n))
            .sum();
        assert_eq!(covered, len, "block {i}'s chunks cover it exactly");
        assert_eq!(m.chunk_span(i, chunks), None);
    }
}

/// Format 2's rule spelled out (R-AUTH-1): the list of chunk hashes, then
/// its SHA-256.
fn chunk_list_of(chunk_size: usize, data: &[u8]) -> [u8; 32] {
    let list: Vec<u8> = data.chunks(chunk_size).flat_map(chunk_hash).collect();
    chunk_list_digest(&list)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// [`BlockHasher`] over `data` cut at arbitrary points equals the digest
    /// of the whole block, whether or not the cuts fall on chunk edges.
    #[test]
    fn block_digest_in_pieces_is_the_whole_blocks(
        data in vec(any::<u8>(), 0..3000),
        chunk_size in 1usize..700,
        cuts in vec(0usize..3000, 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut plain = BlockHasher::plain();
        let mut chunked = BlockHasher::chunked(chunk_size as u32);
        let mut at = 0;
        for cut in cuts {
            plain.update(&data[at..cut]);
            chunked.update(&data[at..cut]);
            at = cut;
        }
        prop_assert_eq!(plain.finish(), block_digest(&data));
        prop_assert_eq!(chunked.finish(), chunk_list_of(chunk_size, &data));
    }

    /// R-MAN-1/R-MAN-2/R-WIRE-6: any valid geometry signs and verifies.
    #[test]
    fn signed_manifests_round_trip(
        chunk_size in MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE,
        blocks_per_chunk_extra in 0u32..4096,
        image_len in 1usize..40_000,
        fill in any::<u8>(),
    ) {
        let block_size = (chunk_size + blocks_per_chunk_extra * 7).min(MAX_BLOCK_SIZE);
        let image: Vec<u8> = (0..image_len).map(|i| (i as u8) ^ fill).collect();
        let kp = keypair();
        let spec = ManifestSpec { board: "b", version: "1", block_size, chunk_size, created_unix: 9, min_version: "" };
        let signed = sign(&spec, &image, &kp.sk).expect("a valid geometry signs");
        let m = Manifest::verify(&signed, &kp.pk).expect("a signed manifest verifies");
        prop_assert_eq!(m.block_size, block_size);
        prop_assert_eq!(m.chunk_size, chunk_size);
        check_accessors(&m);
        for (b, block) in image.chunks(block_size as usize).enumerate() {
            prop_assert!(m.block_matches(b as u32, block));
        }
        prop_assert_eq!(Manifest::decode_unverified(&signed), Ok(m));
    }

    /// R-MAN-1: arbitrary bytes never panic, and never verify.
    #[test]
    fn arbitrary_bytes_never_verify(mut bytes in vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        if magic && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(&MANIFEST_MAGIC);
            bytes[4..8].copy_from_slice(&[MANIFEST_FORMAT, 0, 0, 0]);
        }
        prop_assert!(Manifest::verify(&bytes, &keypair().pk).is_err());
        if let Ok(m) = Manifest::decode_unverified(&bytes) {
            check_accessors(&m);
        }
    }

    /// R-MAN-2: an arbitrary body behind a genuine signature is decoded or
    /// refused as malformed, never anything else, and both decoders agree.
    #[test]
    fn arbitrary_signed_bodies_decode_or_are_malformed(body in vec(any::<u8>(), 0..400)) {
        let kp = keypair();
        let mut signed = Vec::new();
        signed.extend_from_slice(&MANIFEST_MAGIC);
        signed.extend_from_slice(&[MANIFEST_FORMAT, 0, 0, 0]);
        signed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        signed.extend_from_slice(&body);
        let signature = kp.sk.sign(&signed, None);
        signed.extend_from_slice(signature.as_ref());
        let verified = Manifest::verify(&signed, &kp.pk);
        match &verified {
            Ok(m) => check_accessors(m),
            Err(ManifestError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "a genuinely signed body was refused as {:?}", e),
        }
        prop_assert_eq!(Manifest::decode_unverified(&signed), verified);
    }
}

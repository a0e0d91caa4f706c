//! Signed manifests (R-MAN-1, R-MAN-2): `Manifest::verify` and
//! `Manifest::decode_unverified` never panic.
//!
//! Each input is tried three ways: as a whole signed manifest under a fixed
//! public key (framing and signature checks; a fuzzer cannot forge a
//! signature), as input to `decode_unverified` (which skips the signature),
//! and as a manifest *body* that this target wraps and signs with the matching
//! secret key, so `verify`'s post-signature body parser and geometry checks
//! see arbitrary bytes too. An accepted manifest's accessors must not panic
//! and must agree with its geometry.
#![no_main]

use std::sync::OnceLock;

use ed25519_compact::{KeyPair, Seed};
use libfuzzer_sys::fuzz_target;
use proto::manifest::{Manifest, ManifestError, MANIFEST_FORMAT, MANIFEST_MAGIC, SIGNATURE_LEN};
use proto::wire::MAX_MANIFEST_LEN;

fn keypair() -> &'static KeyPair {
    static KP: OnceLock<KeyPair> = OnceLock::new();
    KP.get_or_init(|| KeyPair::from_seed(Seed::new([0x42; 32])))
}

fn exercise(m: &Manifest) {
    let blocks = m.image_len.div_ceil(u64::from(m.block_size));
    assert_eq!(u64::from(m.block_count()), blocks);
    // R-WIRE-6: a block need not be a whole number of chunks; its last
    // chunk is short then, and the chunks of a block cover it exactly.
    assert_eq!(
        m.chunks_per_block(),
        m.block_size.div_ceil(m.chunk_size),
        "chunks per block"
    );
    let last = m.block_count() - 1;
    for i in [0, last / 2, last, last.saturating_add(1), u32::MAX] {
        let len = m.block_len(i);
        assert!(len <= m.block_size as usize);
        assert_eq!(len == 0, i > last, "block {i} of {blocks}");
        assert!(m.chunks_in_block(i) <= m.chunks_per_block());
        if len > 0 {
            let last = m.chunks_in_block(i) - 1;
            let (start, n) = m
                .chunk_span(i, last)
                .expect("the last chunk of a block exists");
            assert_eq!(
                start + n as u64,
                u64::from(i) * u64::from(m.block_size) + len as u64,
                "block {i}'s chunks end where it ends"
            );
            assert_eq!(m.chunk_span(i, last + 1), None);
        }
        assert_eq!(m.digest(i).is_some(), i <= last);
        let _ = m.block_matches(i, &[]);
    }
}

fuzz_target!(|data: &[u8]| {
    let kp = keypair();
    let pk: [u8; 32] = *kp.pk;
    if let Ok(m) = Manifest::verify(data, &pk) {
        exercise(&m);
    }
    // The operator-side decoder skips the signature, so it sees every input.
    if let Ok(m) = Manifest::decode_unverified(data) {
        exercise(&m);
    }

    // `data` as the body of a manifest signed by the key we verify with.
    if 12 + data.len() + SIGNATURE_LEN > MAX_MANIFEST_LEN as usize {
        return;
    }
    let mut signed = Vec::with_capacity(12 + data.len() + SIGNATURE_LEN);
    signed.extend_from_slice(&MANIFEST_MAGIC);
    signed.extend_from_slice(&[MANIFEST_FORMAT, 0, 0, 0]);
    signed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    signed.extend_from_slice(data);
    let signature = kp.sk.sign(&signed, None);
    signed.extend_from_slice(signature.as_ref());
    let verified = Manifest::verify(&signed, &pk);
    match &verified {
        Ok(m) => exercise(m),
        Err(ManifestError::Malformed(_)) => {}
        Err(e) => panic!("a correctly signed manifest was refused as {e:?}"),
    }
    assert_eq!(
        Manifest::decode_unverified(&signed),
        verified,
        "verify and decode_unverified disagree"
    );
});

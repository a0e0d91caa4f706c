//! The signed manifest: what an image is (board, version, length, geometry)
//! and the SHA-256 of every block, signed with the operator's Ed25519 key.
//!
//! ```text
//!  "FCMF" | format u8 (1 or 2) | 3 reserved (0) | body_len u32 BE | body (postcard) | Ed25519 signature (64)
//! ```
//! The signature covers every byte before it (R-MAN-1). A receiver verifies
//! the signature before it decodes the body, and checks the body's geometry
//! before it allocates anything (R-MAN-2).
//!
//! Format 2 (what [`sign`] makes) adds a signed minimum version (R-ROLL-1)
//! and defines a block's digest over its chunk-hash list (R-AUTH-1), so a
//! device that holds the list can check every chunk on arrival; format 1
//! manifests (a plain SHA-256 per block) are still verified and used.

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::{
    check_geometry, Bytes, ImageId, MAX_BOARD_LEN, MAX_MANIFEST_LEN, MAX_VERSION_LEN,
};

/// Magic bytes of a signed manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"FCMF";
/// Manifest format [`sign`] writes: chunk-hashed digests and a minimum version.
pub const MANIFEST_FORMAT: u8 = 2;
/// The first manifest format: a plain SHA-256 per block, no minimum version.
pub const MANIFEST_FORMAT_V1: u8 = 1;
/// Bytes of a chunk hash in a block's chunk-hash list (R-AUTH-1): the first
/// 16 bytes of the chunk's SHA-256, 128 bits against a second preimage.
pub const CHUNK_HASH_LEN: usize = crate::wire::CHUNK_HASH_LEN;
const PREFIX_LEN: usize = 12;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// Why a manifest was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestError {
    /// Too short, bad magic or unknown format.
    NotAManifest,
    /// The signature does not verify with the given key.
    BadSignature,
    /// The signed body does not decode, or its fields are inconsistent; names the field.
    Malformed(&'static str),
}

impl core::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ManifestError::NotAManifest => {
                f.write_str("not a firmcast manifest (bad magic or format)")
            }
            ManifestError::BadSignature => {
                f.write_str("signature does not verify with the configured public key")
            }
            ManifestError::Malformed(field) => write!(f, "malformed manifest: field `{field}`"),
        }
    }
}

/// The signed content, as encoded on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body<'a> {
    board: &'a str,
    version: &'a str,
    image_len: u64,
    block_size: u32,
    chunk_size: u32,
    created_unix: u64,
    key_id: [u8; 8],
    #[serde(borrow)]
    digests: Bytes<'a>,
}

/// Format 2: format 1's fields, then the signed minimum version (R-ROLL-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BodyV2<'a> {
    #[serde(borrow)]
    v1: Body<'a>,
    min_version: &'a str,
}

/// What an operator signs: everything but the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSpec<'a> {
    /// Board id, e.g. `acme,rt1`.
    pub board: &'a str,
    /// Image version, e.g. `2.1.0`.
    pub version: &'a str,
    /// Block size in bytes.
    pub block_size: u32,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Creation time, seconds since the Unix epoch (informational).
    pub created_unix: u64,
    /// The oldest version a device that activates this image may install
    /// from then on (R-ROLL-1); empty for none.
    pub min_version: &'a str,
}

/// A verified manifest, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Board id.
    pub board: heapless::String<MAX_BOARD_LEN>,
    /// Image version.
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// Image length in bytes.
    pub image_len: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// First 8 bytes of SHA-256 of the signing public key.
    pub key_id: [u8; 8],
    /// The id of this image: first 8 bytes of SHA-256 of the signed manifest.
    pub image_id: ImageId,
    /// The signed anti-rollback floor (R-ROLL-1); empty for none (format 1).
    pub min_version: heapless::String<MAX_VERSION_LEN>,
    /// Format 2: block digests are over chunk-hash lists (R-AUTH-1).
    chunk_auth: bool,
    /// Shared by clones: a device's receiver and its flash shell each hold
    /// the manifest, and a 32 MiB image has 16 KiB of digests.
    digests: Arc<[[u8; DIGEST_LEN]]>,
}

/// The key id of a public key: first 8 bytes of its SHA-256.
pub fn key_id(public_key: &[u8; PUBLIC_KEY_LEN]) -> [u8; 8] {
    let d = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// The image id of a signed manifest.
pub fn image_id(signed: &[u8]) -> ImageId {
    let d = Sha256::digest(signed);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    ImageId(id)
}

/// SHA-256 of one block: its digest in a format 1 manifest.
pub fn block_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(data).into()
}

/// The hash of one chunk in its block's chunk-hash list (R-AUTH-1).
pub fn chunk_hash(chunk: &[u8]) -> [u8; CHUNK_HASH_LEN] {
    let d = Sha256::digest(chunk);
    let mut h = [0u8; CHUNK_HASH_LEN];
    h.copy_from_slice(&d[..CHUNK_HASH_LEN]);
    h
}

/// The digest of a chunk-hash list: a block's digest in a format 2 manifest.
pub fn chunk_list_digest(list: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(list).into()
}

/// A block's digest in a format 2 manifest (R-AUTH-1): SHA-256 over the
/// hashes of its `chunk_size` chunks (the last one short), computed without
/// holding the list.
pub fn chunked_block_digest(chunk_size: u32, data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = BlockHasher::chunked(chunk_size);
    h.update(data);
    h.finish()
}

/// A block's digest computed over its bytes in pieces of any length (a
/// block read back from flash a few KiB at a time): the same value as
/// [`block_digest`] or [`chunked_block_digest`] over the whole block.
#[derive(Clone)]
pub struct BlockHasher {
    /// Format 2: the chunk size, and the bytes of the current chunk hashed
    /// so far into `chunk`. `None`: format 1, one SHA-256 over the block.
    chunked: Option<(usize, usize)>,
    chunk: Sha256,
    /// Format 1: the block's SHA-256; format 2: the chunk-hash list's.
    outer: Sha256,
}

impl BlockHasher {
    /// A format 1 block digest: SHA-256 of the bytes.
    pub fn plain() -> Self {
        BlockHasher {
            chunked: None,
            chunk: Sha256::new(),
            outer: Sha256::new(),
        }
    }

    /// A format 2 block digest over chunks of `chunk_size` bytes.
    pub fn chunked(chunk_size: u32) -> Self {
        BlockHasher {
            chunked: Some((chunk_size.max(1) as usize, 0)),
            ..BlockHasher::plain()
        }
    }

    /// The next bytes of the block.
    pub fn update(&mut self, mut data: &[u8]) {
        let Some((size, filled)) = &mut self.chunked else {
            self.outer.update(data);
            return;
        };
        while !data.is_empty() {
            let n = (*size - *filled).min(data.len());
            self.chunk.update(&data[..n]);
            *filled += n;
            data = &data[n..];
            if *filled == *size {
                let d = self.chunk.finalize_reset();
                self.outer.update(&d[..CHUNK_HASH_LEN]);
                *filled = 0;
            }
        }
    }

    /// The block's digest.
    pub fn finish(mut self) -> [u8; DIGEST_LEN] {
        if let Some((_, filled)) = self.chunked {
            if filled > 0 {
                let d = self.chunk.finalize();
                self.outer.update(&d[..CHUNK_HASH_LEN]);
            }
        }
        self.outer.finalize().into()
    }
}

impl Manifest {
    /// Number of blocks in the image.
    pub fn block_count(&self) -> u32 {
        self.digests.len() as u32
    }

    /// Chunks in a full block (the last of them short where the chunk size
    /// does not divide the block size, R-WIRE-6).
    pub fn chunks_per_block(&self) -> u32 {
        crate::wire::chunks_per_block(self.block_size, self.chunk_size)
    }

    /// Bytes a full block takes with its short last chunk padded to a whole
    /// chunk: the stride of a receive window slot, where parity decoding
    /// (R-PAR-3) needs every symbol at full length. Equals `block_size`
    /// when the chunk size divides it.
    pub fn padded_block_len(&self) -> usize {
        self.chunks_per_block() as usize * self.chunk_size as usize
    }

    /// Where chunk `chunk` of block `block` lies in the image: `(offset, len)`.
    pub fn chunk_span(&self, block: u32, chunk: u32) -> Option<(u64, usize)> {
        crate::wire::chunk_span(
            self.image_len,
            self.block_size,
            self.chunk_size,
            block,
            chunk,
        )
    }

    /// Length of block `index` (the last may be short); 0 past the end.
    pub fn block_len(&self, index: u32) -> usize {
        let start = u64::from(index) * u64::from(self.block_size);
        if start >= self.image_len {
            return 0;
        }
        (self.image_len - start).min(u64::from(self.block_size)) as usize
    }

    /// Chunks in block `index` (the last block may have fewer).
    pub fn chunks_in_block(&self, index: u32) -> u32 {
        (self.block_len(index) as u32).div_ceil(self.chunk_size)
    }

    /// Expected digest of block `index` (see [`Manifest::digest_of`]).
    pub fn digest(&self, index: u32) -> Option<&[u8; DIGEST_LEN]> {
        self.digests.get(index as usize)
    }

    /// `true` when block digests are over chunk-hash lists (format 2), so
    /// chunks can be checked on arrival (R-AUTH-1).
    pub fn chunk_auth(&self) -> bool {
        self.chunk_auth
    }

    /// The digest this manifest gives a block holding `data`: its SHA-256
    /// (format 1) or the SHA-256 of its chunk-hash list (format 2).
    pub fn digest_of(&self, data: &[u8]) -> [u8; DIGEST_LEN] {
        let mut h = self.block_hasher();
        h.update(data);
        h.finish()
    }

    /// A [`BlockHasher`] that computes [`Manifest::digest_of`] over a block
    /// fed in pieces.
    pub fn block_hasher(&self) -> BlockHasher {
        if self.chunk_auth {
            BlockHasher::chunked(self.chunk_size)
        } else {
            BlockHasher::plain()
        }
    }

    /// `true` when `data` is block `index` of this image (R-BLK-1).
    pub fn block_matches(&self, index: u32, data: &[u8]) -> bool {
        data.len() == self.block_len(index)
            && self
                .digest(index)
                .is_some_and(|d| *d == self.digest_of(data))
    }

    /// Verify `signed` with `public_key` and decode it (R-MAN-1, R-MAN-2).
    pub fn verify(
        signed: &[u8],
        public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Manifest, ManifestError> {
        if signed.len() < PREFIX_LEN + SIGNATURE_LEN || signed.len() > MAX_MANIFEST_LEN as usize {
            return Err(ManifestError::NotAManifest);
        }
        if signed[0..4] != MANIFEST_MAGIC
            || !matches!(signed[4], MANIFEST_FORMAT_V1 | MANIFEST_FORMAT)
            || signed[5..8] != [0, 0, 0]
        {
            return Err(ManifestError::NotAManifest);
        }
        let (message, signature) = signed.split_at(signed.len() - SIGNATURE_LEN);
        let key = ed25519_compact::PublicKey::new(*public_key);
        let sig = ed25519_compact::Signature::from_slice(signature)
            .map_err(|_| ManifestError::BadSignature)?;
        key.verify(message, &sig)
            .map_err(|_| ManifestError::BadSignature)?;
        Self::decode_unverified(signed)
    }

    /// Decode `signed` without checking its signature. For operator tools
    /// that hold the image and check every block digest against it (the
    /// sender, the repair server); a device must use [`Manifest::verify`].
    pub fn decode_unverified(signed: &[u8]) -> Result<Manifest, ManifestError> {
        let message = Self::check_envelope(signed)?;
        Self::decode_body(signed[4], &message[PREFIX_LEN..], image_id(signed))
    }

    /// Check magic, format and length prefix; returns the signed message.
    fn check_envelope(signed: &[u8]) -> Result<&[u8], ManifestError> {
        if signed.len() < PREFIX_LEN + SIGNATURE_LEN || signed.len() > MAX_MANIFEST_LEN as usize {
            return Err(ManifestError::NotAManifest);
        }
        if signed[0..4] != MANIFEST_MAGIC
            || !matches!(signed[4], MANIFEST_FORMAT_V1 | MANIFEST_FORMAT)
            || signed[5..8] != [0, 0, 0]
        {
            return Err(ManifestError::NotAManifest);
        }
        let message = &signed[..signed.len() - SIGNATURE_LEN];
        let body_len = u32::from_be_bytes([signed[8], signed[9], signed[10], signed[11]]) as usize;
        if body_len != message.len() - PREFIX_LEN {
            return Err(ManifestError::Malformed("body_len"));
        }
        Ok(message)
    }

    fn decode_body(format: u8, bytes: &[u8], image_id: ImageId) -> Result<Manifest, ManifestError> {
        let (body, min_version, rest) = if format == MANIFEST_FORMAT_V1 {
            let (body, rest) = postcard::take_from_bytes::<Body<'_>>(bytes)
                .map_err(|_| ManifestError::Malformed("body"))?;
            (body, "", rest)
        } else {
            let (b, rest) = postcard::take_from_bytes::<BodyV2<'_>>(bytes)
                .map_err(|_| ManifestError::Malformed("body"))?;
            (b.v1, b.min_version, rest)
        };
        if !rest.is_empty() {
            return Err(ManifestError::Malformed("body"));
        }
        let min_version = heapless::String::try_from(min_version)
            .map_err(|_| ManifestError::Malformed("min_version"))?;
        let board = heapless::String::try_from(body.board)
            .map_err(|_| ManifestError::Malformed("board"))?;
        let version = heapless::String::try_from(body.version)
            .map_err(|_| ManifestError::Malformed("version"))?;
        if board.is_empty() || version.is_empty() {
            return Err(ManifestError::Malformed("board"));
        }
        check_geometry(body.image_len, body.block_size, body.chunk_size)
            .map_err(ManifestError::Malformed)?;
        let blocks = body.image_len.div_ceil(u64::from(body.block_size));
        if body.digests.0.len() as u64 != blocks * DIGEST_LEN as u64 {
            return Err(ManifestError::Malformed("digests"));
        }
        let digests = body
            .digests
            .0
            .chunks_exact(DIGEST_LEN)
            .map(|c| {
                let mut d = [0u8; DIGEST_LEN];
                d.copy_from_slice(c);
                d
            })
            .collect();
        Ok(Manifest {
            board,
            version,
            image_len: body.image_len,
            block_size: body.block_size,
            chunk_size: body.chunk_size,
            created_unix: body.created_unix,
            key_id: body.key_id,
            image_id,
            min_version,
            chunk_auth: format != MANIFEST_FORMAT_V1,
            digests,
        })
    }
}

/// Build and sign a manifest for `image` (operator side), format 2.
pub fn sign(
    spec: &ManifestSpec<'_>,
    image: &[u8],
    secret_key: &ed25519_compact::SecretKey,
) -> Result<Vec<u8>, ManifestError> {
    sign_format(spec, image, secret_key, MANIFEST_FORMAT)
}

/// Build and sign a manifest in `format`: [`MANIFEST_FORMAT`], or
/// [`MANIFEST_FORMAT_V1`] for devices whose agent predates format 2 (no
/// chunk authentication, no minimum version).
pub fn sign_format(
    spec: &ManifestSpec<'_>,
    image: &[u8],
    secret_key: &ed25519_compact::SecretKey,
    format: u8,
) -> Result<Vec<u8>, ManifestError> {
    let v1 = match format {
        MANIFEST_FORMAT_V1 => true,
        MANIFEST_FORMAT => false,
        _ => return Err(ManifestError::NotAManifest),
    };
    if v1 && !spec.min_version.is_empty() {
        return Err(ManifestError::Malformed("min_version"));
    }
    if spec.board.is_empty() || spec.board.len() > MAX_BOARD_LEN {
        return Err(ManifestError::Malformed("board"));
    }
    if spec.version.is_empty() || spec.version.len() > MAX_VERSION_LEN {
        return Err(ManifestError::Malformed("version"));
    }
    // R-ROLL-1: an image below its own floor could never be installed.
    if spec.min_version.len() > MAX_VERSION_LEN
        || (!spec.min_version.is_empty()
            && crate::version::is_newer(spec.min_version, spec.version))
    {
        return Err(ManifestError::Malformed("min_version"));
    }
    check_geometry(image.len() as u64, spec.block_size, spec.chunk_size)
        .map_err(ManifestError::Malformed)?;
    let mut digests =
        Vec::with_capacity(image.len().div_ceil(spec.block_size as usize) * DIGEST_LEN);
    for block in image.chunks(spec.block_size as usize) {
        digests.extend_from_slice(&if v1 {
            block_digest(block)
        } else {
            chunked_block_digest(spec.chunk_size, block)
        });
    }
    let public: [u8; PUBLIC_KEY_LEN] = *secret_key.public_key();
    let body = BodyV2 {
        v1: Body {
            board: spec.board,
            version: spec.version,
            image_len: image.len() as u64,
            block_size: spec.block_size,
            chunk_size: spec.chunk_size,
            created_unix: spec.created_unix,
            key_id: key_id(&public),
            digests: Bytes(&digests),
        },
        min_version: spec.min_version,
    };
    let encoded = if v1 {
        postcard::to_allocvec(&body.v1)
    } else {
        postcard::to_allocvec(&body)
    }
    .map_err(|_| ManifestError::Malformed("body"))?;
    let total = PREFIX_LEN + encoded.len() + SIGNATURE_LEN;
    if total > MAX_MANIFEST_LEN as usize {
        return Err(ManifestError::Malformed("image_len"));
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.extend_from_slice(&[format, 0, 0, 0]);
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&encoded);
    let signature = secret_key.sign(&out, None);
    out.extend_from_slice(signature.as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    fn spec() -> ManifestSpec<'static> {
        ManifestSpec {
            board: "acme,rt1",
            version: "2.1.0",
            block_size: 4096,
            chunk_size: 1024,
            created_unix: 1,
            min_version: "",
        }
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let kp = keypair(1);
        let image: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let signed = sign(&spec(), &image, &kp.sk).expect("sign");
        let m = Manifest::verify(&signed, &kp.pk).expect("verify");
        assert_eq!(m.block_count(), 3);
        assert_eq!(m.block_len(2), 10_000 - 8192);
        assert_eq!(m.chunks_in_block(2), 2);
        assert!(m.block_matches(0, &image[..4096]));
        assert!(!m.block_matches(1, &image[..4096]));
        assert!(m.block_matches(2, &image[8192..]));
        assert_eq!(m.key_id, key_id(&kp.pk));
        assert_eq!(m.image_id, image_id(&signed));
        assert!(
            Arc::ptr_eq(&m.digests, &m.clone().digests),
            "a clone shares the digests"
        );
        assert_eq!(Manifest::decode_unverified(&signed), Ok(m));
    }

    #[test]
    fn wrong_key_or_any_flipped_bit_is_refused() {
        let kp = keypair(1);
        let image = [0x5au8; 5000];
        let signed = sign(&spec(), &image, &kp.sk).expect("sign");
        assert_eq!(
            Manifest::verify(&signed, &keypair(2).pk),
            Err(ManifestError::BadSignature)
        );
        for i in 0..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 0x10;
            assert!(
                Manifest::verify(&bad, &kp.pk).is_err(),
                "bit flip at {i} accepted"
            );
        }
        assert_eq!(
            Manifest::verify(&signed[..50], &kp.pk),
            Err(ManifestError::NotAManifest)
        );
    }

    #[test]
    fn r_auth_1_format_2_digests_are_over_chunk_hash_lists_and_format_1_still_verifies() {
        let kp = keypair(1);
        let image: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let v2 = Manifest::verify(&sign(&spec(), &image, &kp.sk).expect("sign"), &kp.pk)
            .expect("verify v2");
        assert!(v2.chunk_auth());
        let mut list = Vec::new();
        for c in image[..4096].chunks(1024) {
            list.extend_from_slice(&chunk_hash(c));
        }
        assert_eq!(v2.digest(0), Some(&chunk_list_digest(&list)));
        assert!(v2.block_matches(0, &image[..4096]) && v2.block_matches(2, &image[8192..]));
        let signed1 = sign_format(&spec(), &image, &kp.sk, MANIFEST_FORMAT_V1).expect("sign v1");
        assert_eq!(signed1[4], 1);
        let v1 = Manifest::verify(&signed1, &kp.pk).expect("verify v1");
        assert!(!v1.chunk_auth());
        assert_eq!(v1.digest(1), Some(&block_digest(&image[4096..8192])));
        assert!(v1.block_matches(2, &image[8192..]));
        assert_eq!(v1.min_version.as_str(), "");
    }

    #[test]
    fn r_roll_1_min_version_is_signed_and_never_above_the_version() {
        let kp = keypair(1);
        let mut s = spec();
        s.min_version = "2.0.5";
        let signed = sign(&s, &[1u8; 5000], &kp.sk).expect("sign");
        let m = Manifest::verify(&signed, &kp.pk).expect("verify");
        assert_eq!(m.min_version.as_str(), "2.0.5");
        s.min_version = "2.1.0-rc1";
        assert!(
            sign(&s, &[1u8; 10], &kp.sk).is_ok(),
            "a floor below the version"
        );
        s.min_version = "2.1.1";
        assert_eq!(
            sign(&s, &[1u8; 10], &kp.sk),
            Err(ManifestError::Malformed("min_version"))
        );
        s.min_version = "2.0";
        assert_eq!(
            sign_format(&s, &[1u8; 10], &kp.sk, MANIFEST_FORMAT_V1),
            Err(ManifestError::Malformed("min_version")),
            "format 1 has no floor"
        );
    }

    #[test]
    fn bad_geometry_cannot_be_signed() {
        let kp = keypair(1);
        let mut s = spec();
        s.block_size = 1000;
        assert_eq!(
            sign(&s, &[0u8; 10], &kp.sk),
            Err(ManifestError::Malformed("block_size"))
        );
        assert_eq!(
            sign(&spec(), &[], &kp.sk),
            Err(ManifestError::Malformed("image_len"))
        );
    }
}

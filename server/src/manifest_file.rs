//! Reading a signed manifest file on the operator side: its fields without a
//! key (for `manifest --show` and for `send`/`repair`, which get no key), the
//! check that an image agrees with it block by block, and the [`Manifest`]
//! value the sans-IO machines take.
//!
//! `send` and `repair` are not given the public key: they decode the manifest
//! with `Manifest::decode_unverified` and check every block digest against the
//! image they hold, so an image that does not match its manifest never goes
//! out. With `--public-key` they verify the signature as a device would.

use std::path::Path;

use proto::manifest::{self as pm, Manifest, DIGEST_LEN};
use proto::wire::ImageId;

use crate::error::{config, runtime, Error};

/// A manifest's fields, decoded without checking the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Board id.
    pub board: String,
    /// Image version.
    pub version: String,
    /// Image length in bytes.
    pub image_len: u64,
    /// Block size.
    pub block_size: u32,
    /// Chunk size.
    pub chunk_size: u32,
    /// Creation time (Unix seconds).
    pub created_unix: u64,
    /// Key id of the signing key.
    pub key_id: [u8; 8],
    /// Image id (first 8 bytes of SHA-256 of the whole file).
    pub image_id: ImageId,
    /// Per-block digest (see `Manifest::digest_of`).
    pub digests: Vec<[u8; DIGEST_LEN]>,
    /// Signed anti-rollback floor, empty for none (R-ROLL-1).
    pub min_version: String,
    /// Format 2: digests are over chunk-hash lists (R-AUTH-1).
    pub chunk_auth: bool,
}

/// Decode `signed` without verifying its signature; the error names the field.
pub fn parse_unverified(signed: &[u8]) -> Result<ManifestInfo, String> {
    let m = Manifest::decode_unverified(signed).map_err(|e| e.to_string())?;
    Ok(info_of(&m))
}

fn info_of(m: &Manifest) -> ManifestInfo {
    ManifestInfo {
        board: m.board.to_string(),
        version: m.version.to_string(),
        image_len: m.image_len,
        block_size: m.block_size,
        chunk_size: m.chunk_size,
        created_unix: m.created_unix,
        key_id: m.key_id,
        image_id: m.image_id,
        digests: (0..m.block_count())
            .filter_map(|i| m.digest(i).copied())
            .collect(),
        min_version: m.min_version.to_string(),
        chunk_auth: m.chunk_auth(),
    }
}

impl ManifestInfo {
    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.digests.len()
    }
}

/// Check that `image` is the image `info` describes: length, then every
/// block digest; the error names the first mismatching block.
pub fn check_image(
    info: &ManifestInfo,
    image: &[u8],
    image_path: &Path,
    manifest_path: &Path,
) -> Result<(), Error> {
    check_length(info, image.len() as u64, image_path, manifest_path)?;
    (0..info.block_count()).try_for_each(|i| {
        check_block(
            info,
            i,
            &image[block_span(info, i)],
            image_path,
            manifest_path,
        )
    })
}

/// Check that an image of `len` bytes has the length the manifest gives.
pub fn check_length(
    info: &ManifestInfo,
    len: u64,
    image_path: &Path,
    manifest_path: &Path,
) -> Result<(), Error> {
    if len == info.image_len {
        return Ok(());
    }
    Err(config(format!(
        "image {} is {len} bytes but manifest {} describes {} bytes",
        image_path.display(),
        manifest_path.display(),
        info.image_len
    )))
}

/// Bytes of the image that block `index` covers (the last may be short).
pub fn block_span(info: &ManifestInfo, index: usize) -> std::ops::Range<usize> {
    let bs = info.block_size as usize;
    let len = usize::try_from(info.image_len).unwrap_or(usize::MAX);
    let start = index.saturating_mul(bs).min(len);
    start..start.saturating_add(bs).min(len)
}

/// Check that `block` (block `index` of the image) has the SHA-256 the
/// manifest gives it; the error names the block, its bytes and both files.
pub fn check_block(
    info: &ManifestInfo,
    index: usize,
    block: &[u8],
    image_path: &Path,
    manifest_path: &Path,
) -> Result<(), Error> {
    let digest = if info.chunk_auth {
        pm::chunked_block_digest(info.chunk_size, block)
    } else {
        pm::block_digest(block)
    };
    if info.digests.get(index) == Some(&digest) {
        return Ok(());
    }
    let span = block_span(info, index);
    Err(config(format!(
        "image {} does not match manifest {}: block {index} (bytes {}..{}) has a different SHA-256",
        image_path.display(),
        manifest_path.display(),
        span.start,
        span.end,
    )))
}

/// The [`Manifest`] for a signed file, verified with `public_key` when one
/// is given (without one, the image check against the digests is what
/// guards the image).
pub fn to_manifest(
    signed: &[u8],
    public_key: Option<(&[u8; pm::PUBLIC_KEY_LEN], &Path)>,
    manifest_path: &Path,
) -> Result<Manifest, Error> {
    if let Some((pk, pk_path)) = public_key {
        return Manifest::verify(signed, pk).map_err(|e| match e {
            pm::ManifestError::BadSignature => runtime(format!(
                "manifest {}: signature does not verify with {}",
                manifest_path.display(),
                pk_path.display()
            )),
            other => config(format!("manifest {}: {other}", manifest_path.display())),
        });
    }
    Manifest::decode_unverified(signed)
        .map_err(|e| config(format!("manifest {}: {e}", manifest_path.display())))
}

/// Read a file whole, naming it in the error.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| config(format!("{what} {}: {e}", path.display())))
}

/// Read and decode a manifest file, naming it in the error.
pub fn load(path: &Path) -> Result<(Vec<u8>, ManifestInfo), Error> {
    let signed = read_file(path, "manifest")?;
    let info = parse_unverified(&signed)
        .map_err(|e| config(format!("manifest {}: {e}", path.display())))?;
    Ok((signed, info))
}

/// Everything `repair` needs: image, signed manifest, fields, and the
/// [`Manifest`], after checking that image and manifest agree.
pub struct Loaded {
    /// The image bytes.
    pub image: Vec<u8>,
    /// The signed manifest bytes.
    pub signed: Vec<u8>,
    /// Its fields.
    pub info: ManifestInfo,
    /// The manifest value for the state machines.
    pub manifest: Manifest,
}

/// Load image + manifest (+ optional public key) and check they agree.
pub fn load_for_image(
    image_path: &Path,
    manifest_path: &Path,
    public_key: Option<&Path>,
) -> Result<Loaded, Error> {
    let image = read_file(image_path, "image")?;
    let (signed, info, manifest) = load_manifest(manifest_path, public_key)?;
    check_image(&info, &image, image_path, manifest_path)?;
    Ok(Loaded {
        image,
        signed,
        info,
        manifest,
    })
}

/// The signed manifest file, its fields and its [`Manifest`] (the signature
/// verified when `public_key` is given), without looking at the image:
/// `firmcast send` reads and checks that a block at a time
/// ([`crate::image_file::StreamedImage`]).
pub fn load_manifest(
    manifest_path: &Path,
    public_key: Option<&Path>,
) -> Result<(Vec<u8>, ManifestInfo, Manifest), Error> {
    let (signed, info) = load(manifest_path)?;
    let pk = match public_key {
        Some(p) => Some((crate::keys::load_public(p)?, p)),
        None => None,
    };
    let manifest = to_manifest(&signed, pk.as_ref().map(|(k, p)| (k, *p)), manifest_path)?;
    Ok((signed, info, manifest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::manifest::ManifestSpec;

    /// A key, a 10,000-byte image in three 4 KiB blocks, and its signed manifest.
    pub(crate) fn fixture() -> (ed25519_compact::KeyPair, Vec<u8>, Vec<u8>) {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
        let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let spec = ManifestSpec {
            board: "acme,rt1",
            version: "2.0",
            block_size: 4096,
            chunk_size: 1024,
            created_unix: 77,
            min_version: "",
        };
        let signed = pm::sign(&spec, &image, &kp.sk).expect("sign");
        (kp, image, signed)
    }

    #[test]
    fn unverified_parse_and_rebuilt_manifest_equal_the_verified_one() {
        let (kp, image, signed) = fixture();
        let info = parse_unverified(&signed).expect("parse");
        assert_eq!(info.board, "acme,rt1");
        assert_eq!(info.block_count(), 3);
        assert_eq!(info.key_id, pm::key_id(&kp.pk));
        let p = Path::new("m");
        check_image(&info, &image, p, p).expect("image agrees");
        let rebuilt = to_manifest(&signed, None, p).expect("rebuilt");
        let verified = Manifest::verify(&signed, &kp.pk).expect("verify");
        assert_eq!(rebuilt, verified);
        let via_key = to_manifest(&signed, Some((&kp.pk, p)), p).expect("with key");
        assert_eq!(via_key, verified);
    }

    #[test]
    fn mismatches_name_the_block_and_bad_files_are_refused() {
        let (_kp, mut image, signed) = fixture();
        let info = parse_unverified(&signed).expect("parse");
        image[5000] ^= 1;
        let p = Path::new("m");
        let err = check_image(&info, &image, p, p).expect_err("mismatch");
        assert!(err.to_string().contains("block 1"), "{err}");
        assert!(check_image(&info, &image[..100], p, p).is_err());
        assert!(parse_unverified(b"hello").is_err());
        for cut in [0, 20, signed.len() - 1] {
            assert!(parse_unverified(&signed[..cut]).is_err());
        }
        let other = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([4; 32]));
        let err =
            to_manifest(&signed, Some((&other.pk, Path::new("k.pub"))), p).expect_err("bad sig");
        assert!(
            err.to_string()
                .contains("signature does not verify with k.pub"),
            "{err}"
        );
    }
}

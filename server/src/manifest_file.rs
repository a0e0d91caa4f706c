//! Reading a signed manifest file on the operator side: its fields without a
//! key (for `manifest --show` and for `send`/`repair`, which get no key), the
//! check that an image agrees with it block by block, and the [`Manifest`]
//! value the sans-IO machines take.
//!
//! `proto` only builds a [`Manifest`] by verifying the signature, and the
//! operator's `send`/`repair` commands are not given the public key. So
//! without `--public-key` this module decodes the signed body itself (the
//! format in `proto::manifest`), checks every block digest against the image,
//! and then obtains an identical [`Manifest`] by signing the same body with a
//! throw-away key and patching `image_id`/`key_id` back to the file's. The
//! result equals what `Manifest::verify` with the real key yields; nothing
//! signed with the throw-away key ever leaves the process.

use std::path::Path;

use proto::manifest::{self as pm, Manifest, ManifestSpec, DIGEST_LEN, SIGNATURE_LEN};
use proto::wire::{check_geometry, Bytes, ImageId};
use serde::Deserialize;

use crate::error::{config, runtime, Error};

const PREFIX_LEN: usize = 12;

/// The signed body, as `proto::manifest` encodes it.
#[derive(Deserialize)]
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
    /// Per-block SHA-256.
    pub digests: Vec<[u8; DIGEST_LEN]>,
}

/// Decode `signed` without verifying its signature; the error names the field.
pub fn parse_unverified(signed: &[u8]) -> Result<ManifestInfo, String> {
    if signed.len() < PREFIX_LEN + SIGNATURE_LEN
        || signed[0..4] != pm::MANIFEST_MAGIC
        || signed[4] != pm::MANIFEST_FORMAT
        || signed[5..8] != [0, 0, 0]
    {
        return Err("not a firmcast manifest (bad magic or format)".into());
    }
    let body_len = u32::from_be_bytes([signed[8], signed[9], signed[10], signed[11]]) as usize;
    if body_len != signed.len() - PREFIX_LEN - SIGNATURE_LEN {
        return Err("malformed manifest: field `body_len`".into());
    }
    let bytes = &signed[PREFIX_LEN..PREFIX_LEN + body_len];
    let (body, rest) =
        postcard::take_from_bytes::<Body<'_>>(bytes).map_err(|_| "malformed manifest: field `body`".to_string())?;
    if !rest.is_empty() {
        return Err("malformed manifest: field `body`".into());
    }
    check_geometry(body.image_len, body.block_size, body.chunk_size)
        .map_err(|f| format!("malformed manifest: field `{f}`"))?;
    let blocks = body.image_len.div_ceil(u64::from(body.block_size));
    if body.digests.0.len() as u64 != blocks * DIGEST_LEN as u64 {
        return Err("malformed manifest: field `digests`".into());
    }
    Ok(ManifestInfo {
        board: body.board.to_string(),
        version: body.version.to_string(),
        image_len: body.image_len,
        block_size: body.block_size,
        chunk_size: body.chunk_size,
        created_unix: body.created_unix,
        key_id: body.key_id,
        image_id: pm::image_id(signed),
        digests: body
            .digests
            .0
            .chunks_exact(DIGEST_LEN)
            .map(|c| {
                let mut d = [0u8; DIGEST_LEN];
                d.copy_from_slice(c);
                d
            })
            .collect(),
    })
}

impl ManifestInfo {
    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.digests.len()
    }
}

/// Check that `image` is the image `info` describes: length, then every
/// block digest; the error names the first mismatching block.
pub fn check_image(info: &ManifestInfo, image: &[u8], image_path: &Path, manifest_path: &Path) -> Result<(), Error> {
    if image.len() as u64 != info.image_len {
        return Err(config(format!(
            "image {} is {} bytes but manifest {} describes {} bytes",
            image_path.display(),
            image.len(),
            manifest_path.display(),
            info.image_len
        )));
    }
    for (i, (block, digest)) in image.chunks(info.block_size as usize).zip(&info.digests).enumerate() {
        if pm::block_digest(block) != *digest {
            return Err(config(format!(
                "image {} does not match manifest {}: block {i} (bytes {}..{}) has a different SHA-256",
                image_path.display(),
                manifest_path.display(),
                i as u64 * u64::from(info.block_size),
                i as u64 * u64::from(info.block_size) + block.len() as u64,
            )));
        }
    }
    Ok(())
}

/// The [`Manifest`] for a signed file whose image has passed [`check_image`],
/// verified with `public_key` when one is given.
pub fn to_manifest(
    signed: &[u8],
    info: &ManifestInfo,
    image: &[u8],
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
    let throwaway = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x5a; 32]));
    let spec = ManifestSpec {
        board: &info.board,
        version: &info.version,
        block_size: info.block_size,
        chunk_size: info.chunk_size,
        created_unix: info.created_unix,
    };
    let internal = |what: String| runtime(format!("manifest {}: {what}", manifest_path.display()));
    let resigned = pm::sign(&spec, image, &throwaway.sk).map_err(|e| internal(e.to_string()))?;
    let mut m = Manifest::verify(&resigned, &throwaway.pk).map_err(|e| internal(e.to_string()))?;
    m.image_id = info.image_id;
    m.key_id = info.key_id;
    Ok(m)
}

/// Read a file whole, naming it in the error.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| config(format!("{what} {}: {e}", path.display())))
}

/// Read and decode a manifest file, naming it in the error.
pub fn load(path: &Path) -> Result<(Vec<u8>, ManifestInfo), Error> {
    let signed = read_file(path, "manifest")?;
    let info = parse_unverified(&signed).map_err(|e| config(format!("manifest {}: {e}", path.display())))?;
    Ok((signed, info))
}

/// Everything `send` and `repair` need: image, signed manifest, fields, and
/// the [`Manifest`], after checking that image and manifest agree.
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
pub fn load_for_image(image_path: &Path, manifest_path: &Path, public_key: Option<&Path>) -> Result<Loaded, Error> {
    let image = read_file(image_path, "image")?;
    let (signed, info) = load(manifest_path)?;
    check_image(&info, &image, image_path, manifest_path)?;
    let pk = match public_key {
        Some(p) => Some((crate::keys::load_public(p)?, p)),
        None => None,
    };
    let manifest = to_manifest(&signed, &info, &image, pk.as_ref().map(|(k, p)| (k, *p)), manifest_path)?;
    Ok(Loaded { image, signed, info, manifest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (ed25519_compact::KeyPair, Vec<u8>, Vec<u8>) {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
        let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let spec = ManifestSpec { board: "acme,rt1", version: "2.0", block_size: 4096, chunk_size: 1024, created_unix: 77 };
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
        let rebuilt = to_manifest(&signed, &info, &image, None, p).expect("rebuilt");
        let verified = Manifest::verify(&signed, &kp.pk).expect("verify");
        assert_eq!(rebuilt, verified);
        let via_key = to_manifest(&signed, &info, &image, Some((&kp.pk, p)), p).expect("with key");
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
        let err = to_manifest(&signed, &info, &image, Some((&other.pk, Path::new("k.pub"))), p).expect_err("bad sig");
        assert!(err.to_string().contains("signature does not verify with k.pub"), "{err}");
    }
}

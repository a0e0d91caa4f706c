//! `firmcast keygen` and `firmcast manifest`.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::manifest::{self as pm, ManifestSpec};
use serde_json::json;

use crate::cli::{KeygenArgs, ManifestArgs};
use crate::error::{config, runtime, Error, EXIT_OK};
use crate::keys::{self, hex};
use crate::manifest_file::{self, read_file};

/// `firmcast keygen`.
pub fn keygen(args: &KeygenArgs) -> Result<u8, Error> {
    if args.device {
        let g = keys::generate_named(&args.out, args.force, keys::DEVICE_FILES)?;
        println!(
            "wrote {} (secret, mode 0600: the agent's device_key) and {}",
            g.secret_path.display(),
            g.public_path.display()
        );
        println!(
            "roster line (DEVICE_ID as `firmcast-agent --check-config` prints it): DEVICE_ID {}",
            hex(&g.public_key)
        );
        return Ok(EXIT_OK);
    }
    let g = keys::generate(&args.out, args.force)?;
    println!(
        "wrote {} (secret, mode 0600) and {}",
        g.secret_path.display(),
        g.public_path.display()
    );
    println!("key id {}", hex(&pm::key_id(&g.public_key)));
    Ok(EXIT_OK)
}

/// `firmcast manifest` (sign, or `--show`).
pub fn manifest(args: &ManifestArgs) -> Result<u8, Error> {
    if let Some(path) = &args.show {
        return show(args, path);
    }
    let missing = |flag: &str| config(format!("manifest: {flag} is required (or use --show FILE)"));
    let image_path = args.image.as_ref().ok_or_else(|| missing("--image"))?;
    let board = args.board.as_deref().ok_or_else(|| missing("--board"))?;
    let version = args
        .version
        .as_deref()
        .ok_or_else(|| missing("--version"))?;
    let key_path = args.key.as_ref().ok_or_else(|| missing("--key"))?;
    let out = args.out.as_ref().ok_or_else(|| missing("--out"))?;
    let block_size = u32::try_from(args.block_size)
        .map_err(|_| config(format!("--block-size {}: too large", args.block_size)))?;
    let chunk_size = u32::try_from(args.chunk_size)
        .map_err(|_| config(format!("--chunk-size {}: too large", args.chunk_size)))?;
    let kp = keys::load_secret(key_path)?;
    let image = read_file(image_path, "image")?;
    let created_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let spec = ManifestSpec {
        board,
        version,
        block_size,
        chunk_size,
        created_unix,
        min_version: args.min_version.as_deref().unwrap_or(""),
    };
    let signed = pm::sign_format(&spec, &image, &kp.sk, args.format).map_err(|e| match e {
        pm::ManifestError::Malformed("chunk_size") => config(format!(
            "--chunk-size {chunk_size}: must be {}..={} bytes",
            proto::wire::MIN_CHUNK_SIZE,
            proto::wire::MAX_CHUNK_SIZE
        )),
        pm::ManifestError::Malformed("block_size") => config(format!(
            "--block-size {block_size}: must be at least the chunk size ({chunk_size}) and at most {}",
            proto::wire::MAX_BLOCK_SIZE
        )),
        pm::ManifestError::Malformed("image_len") => config(format!(
            "image {}: {} bytes is empty or too large for this block size (manifest over {} bytes)",
            image_path.display(),
            image.len(),
            proto::wire::MAX_MANIFEST_LEN
        )),
        pm::ManifestError::Malformed("board") => {
            config(format!("--board {board:?}: must be 1..={} bytes", proto::wire::MAX_BOARD_LEN))
        }
        pm::ManifestError::Malformed("min_version") => config(format!(
            "--min-version {:?}: must be at most {} bytes, not newer than --version {version:?}, and needs --format 2",
            args.min_version.as_deref().unwrap_or(""),
            proto::wire::MAX_VERSION_LEN
        )),
        pm::ManifestError::Malformed("version") => {
            config(format!("--version {version:?}: must be 1..={} bytes", proto::wire::MAX_VERSION_LEN))
        }
        other => config(format!("manifest: {other}")),
    })?;
    std::fs::write(out, &signed).map_err(|e| runtime(format!("writing {}: {e}", out.display())))?;
    let blocks = image.len().div_ceil(block_size as usize);
    println!(
        "wrote {}: image id {}, {} bytes in {blocks} blocks of {block_size} (chunk {chunk_size}), key id {}",
        out.display(),
        pm::image_id(&signed),
        image.len(),
        hex(&pm::key_id(&kp.pk))
    );
    Ok(EXIT_OK)
}

fn show(args: &ManifestArgs, path: &std::path::Path) -> Result<u8, Error> {
    let (signed, info) = manifest_file::load(path)?;
    let verified = match &args.public_key {
        Some(pk_path) => {
            let pk = keys::load_public(pk_path)?;
            pm::Manifest::verify(&signed, &pk).map_err(|e| match e {
                pm::ManifestError::BadSignature => runtime(format!(
                    "manifest {}: signature does not verify with {}",
                    path.display(),
                    pk_path.display()
                )),
                other => config(format!("manifest {}: {other}", path.display())),
            })?;
            Some(pk_path.display().to_string())
        }
        None => None,
    };
    if args.json {
        let obj = json!({
            "file": path.display().to_string(),
            "board": info.board,
            "version": info.version,
            "image_len": info.image_len,
            "block_size": info.block_size,
            "chunk_size": info.chunk_size,
            "blocks": info.block_count(),
            "created_unix": info.created_unix,
            "min_version": info.min_version,
            "chunk_auth": info.chunk_auth,
            "key_id": hex(&info.key_id),
            "image_id": info.image_id.to_string(),
            "manifest_len": signed.len(),
            "verified": verified.is_some(),
            "public_key": verified,
        });
        println!("{obj}");
    } else {
        println!("manifest     {}", path.display());
        println!("board        {}", info.board);
        println!("version      {}", info.version);
        println!("image length {} bytes", info.image_len);
        println!(
            "blocks       {} of {} bytes",
            info.block_count(),
            info.block_size
        );
        println!("chunk size   {} bytes", info.chunk_size);
        println!("created      {} (unix)", info.created_unix);
        if !info.min_version.is_empty() {
            println!("min version  {} (anti-rollback floor)", info.min_version);
        }
        println!(
            "chunk auth   {}",
            if info.chunk_auth {
                "yes (format 2)"
            } else {
                "no (format 1)"
            }
        );
        println!("key id       {}", hex(&info.key_id));
        println!("image id     {}", info.image_id);
        match verified {
            Some(k) => println!("signature    verified with {k}"),
            None => println!("signature    not checked (give --public-key to verify)"),
        }
    }
    Ok(EXIT_OK)
}

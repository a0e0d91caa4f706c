//! Key files: `firmcast.key` (hex Ed25519 seed, or the 64-byte secret key,
//! one line, mode 0600) and `firmcast.pub` (hex 32-byte public key, one line).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_compact::{KeyPair, PublicKey, SecretKey, Seed};
use proto::manifest::PUBLIC_KEY_LEN;

use crate::error::{config, runtime, Error};

/// File name of the secret key inside the `keygen --out` directory.
pub const SECRET_FILE: &str = "firmcast.key";
/// File name of the public key inside the `keygen --out` directory.
pub const PUBLIC_FILE: &str = "firmcast.pub";
/// File names of a device key pair (`keygen --device`, R-STAT-4).
pub const DEVICE_FILES: (&str, &str) = ("device.key", "device.pub");

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode hex (whitespace around it ignored).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// What `keygen` wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Path of the secret key file.
    pub secret_path: PathBuf,
    /// Path of the public key file.
    pub public_path: PathBuf,
    /// The public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

/// Generate a key pair into `dir` from a fresh OS-random seed.
pub fn generate(dir: &Path, force: bool) -> Result<Generated, Error> {
    generate_named(dir, force, (SECRET_FILE, PUBLIC_FILE))
}

/// Generate a key pair into `dir`, as files named `(secret, public)`.
pub fn generate_named(dir: &Path, force: bool, names: (&str, &str)) -> Result<Generated, Error> {
    let secret_path = dir.join(names.0);
    let public_path = dir.join(names.1);
    if !force {
        for p in [&secret_path, &public_path] {
            if p.exists() {
                return Err(config(format!(
                    "{} already exists; refusing to overwrite a key (use --force to replace it)",
                    p.display()
                )));
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| runtime(format!("creating {}: {e}", dir.display())))?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| runtime(format!("reading OS randomness: {e}")))?;
    let kp = KeyPair::from_seed(Seed::new(seed));
    let public_key: [u8; PUBLIC_KEY_LEN] = *kp.pk;
    if force {
        // A fresh file gets mode 0600 at creation; an old one may be wider.
        let _ = fs::remove_file(&secret_path);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(|e| runtime(format!("creating {}: {e}", secret_path.display())))?;
    writeln!(f, "{}", hex(&seed))
        .map_err(|e| runtime(format!("writing {}: {e}", secret_path.display())))?;
    fs::write(&public_path, format!("{}\n", hex(&public_key)))
        .map_err(|e| runtime(format!("writing {}: {e}", public_path.display())))?;
    Ok(Generated {
        secret_path,
        public_path,
        public_key,
    })
}

/// Load a secret key file: 64 hex chars (seed) or 128 (secret key = seed ‖ public key).
pub fn load_secret(path: &Path) -> Result<KeyPair, Error> {
    let text =
        fs::read_to_string(path).map_err(|e| config(format!("key {}: {e}", path.display())))?;
    let bad = |what: &str| config(format!("key {}: {what}", path.display()));
    let bytes = unhex(&text)
        .ok_or_else(|| bad("not a hex-encoded Ed25519 key (expected 64 or 128 hex digits)"))?;
    match bytes.len() {
        32 => {
            let seed = Seed::from_slice(&bytes).map_err(|_| bad("bad seed"))?;
            Ok(KeyPair::from_seed(seed))
        }
        64 => {
            let seed = Seed::from_slice(&bytes[..32]).map_err(|_| bad("bad seed"))?;
            let kp = KeyPair::from_seed(seed);
            if kp.pk.as_ref() != &bytes[32..] {
                return Err(bad(
                    "public half does not match the seed (corrupt key file)",
                ));
            }
            let sk = SecretKey::from_slice(&bytes).map_err(|_| bad("bad secret key"))?;
            Ok(KeyPair { pk: kp.pk, sk })
        }
        n => Err(bad(&format!(
            "{n} bytes; expected a 32-byte seed or 64-byte secret key"
        ))),
    }
}

/// Load a public key file: 64 hex chars.
pub fn load_public(path: &Path) -> Result<[u8; PUBLIC_KEY_LEN], Error> {
    let text = fs::read_to_string(path)
        .map_err(|e| config(format!("public key {}: {e}", path.display())))?;
    let bytes = unhex(&text)
        .filter(|b| b.len() == PUBLIC_KEY_LEN)
        .ok_or_else(|| {
            config(format!(
                "public key {}: expected 64 hex digits (32 bytes)",
                path.display()
            ))
        })?;
    PublicKey::from_slice(&bytes).map_err(|_| {
        config(format!(
            "public key {}: not an Ed25519 public key",
            path.display()
        ))
    })?;
    let mut pk = [0u8; PUBLIC_KEY_LEN];
    pk.copy_from_slice(&bytes);
    Ok(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
        assert_eq!(unhex(" 0a\n"), Some(vec![10]));
    }

    #[test]
    fn generate_then_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(dir.path(), false).expect("keygen");
        let kp = load_secret(&g.secret_path).expect("secret");
        assert_eq!(*kp.pk, g.public_key);
        assert_eq!(load_public(&g.public_path).expect("public"), g.public_key);
        assert!(matches!(generate(dir.path(), false), Err(Error::Config(_))));
        let g2 = generate(dir.path(), true).expect("forced");
        assert_ne!(g2.public_key, g.public_key);
        // The 128-hex-digit form (seed ‖ public key) loads too.
        let long = dir.path().join("long.key");
        let seed = unhex(&fs::read_to_string(&g2.secret_path).expect("read")).expect("hex");
        fs::write(&long, format!("{}{}", hex(&seed), hex(&g2.public_key))).expect("write");
        assert_eq!(*load_secret(&long).expect("long form").pk, g2.public_key);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&g2.secret_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

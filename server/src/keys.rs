//! Key files (R-LOCAL-7): typed, so that a public key is never taken for a
//! signing key and a secret key never lands where a public one belongs.
//!
//! ```text
//!  firmcast.key  (mode 0600)          firmcast.pub
//!  firmcast-ed25519-secret-key        firmcast-ed25519-public-key
//!  <64 hex: the seed>                 <64 hex: the public key>
//! ```
//!
//! Files written before the header existed are one hex line. They are still
//! read: 128 hex digits (seed ‖ public key) can only be a secret key; 64 are
//! taken as what the caller asked for, except that `--key` refuses a `.pub`
//! file. `manifest` refuses a secret key that group or others may read, as
//! ssh does.

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
/// First line of a secret key file.
pub const SECRET_HEADER: &str = "firmcast-ed25519-secret-key";
/// First line of a public key file (the agent reads the same header).
pub const PUBLIC_HEADER: &str = "firmcast-ed25519-public-key";

/// What a key file says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyText {
    /// Under [`SECRET_HEADER`].
    Secret(String),
    /// Under [`PUBLIC_HEADER`].
    Public(String),
    /// No header: a file from before key files were typed.
    Untyped(String),
}

/// Split a key file into its kind and its hex line.
pub fn classify(text: &str) -> KeyText {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let second = lines.next().unwrap_or("").to_string();
    match first {
        SECRET_HEADER => KeyText::Secret(second),
        PUBLIC_HEADER => KeyText::Public(second),
        _ => KeyText::Untyped(first.to_string()),
    }
}

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
    writeln!(f, "{SECRET_HEADER}\n{}", hex(&seed))
        .map_err(|e| runtime(format!("writing {}: {e}", secret_path.display())))?;
    fs::write(
        &public_path,
        format!("{PUBLIC_HEADER}\n{}\n", hex(&public_key)),
    )
    .map_err(|e| runtime(format!("writing {}: {e}", public_path.display())))?;
    // Readable by all, writable by its owner only, whatever the umask: an
    // agent running as root refuses a key others can change (R-LOCAL-1).
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&public_path, fs::Permissions::from_mode(0o644))
            .map_err(|e| runtime(format!("chmod {}: {e}", public_path.display())))?;
    }
    Ok(Generated {
        secret_path,
        public_path,
        public_key,
    })
}

/// Mode bits that make a secret key file too open: any access by group or others.
const SECRET_MODE_MASK: u32 = 0o077;

/// The ssh rule for a secret key file's mode: `None` when only its owner
/// may use it, else the refusal.
pub fn secret_mode_refusal(path: &Path, mode: u32) -> Option<String> {
    (mode & SECRET_MODE_MASK != 0).then(|| {
        format!(
            "key {}: permissions {:04o} for '{}' are too open: a secret key must be readable by its owner only (chmod 600 {})",
            path.display(),
            mode & 0o7777,
            path.display(),
            path.display()
        )
    })
}

/// Load a secret key file for signing: the typed format, or an untyped line
/// of 64 hex chars (seed) or 128 (seed ‖ public key). Refuses a public key
/// and a file that group or others may read.
pub fn load_secret(path: &Path) -> Result<KeyPair, Error> {
    use std::os::unix::fs::PermissionsExt;
    let text =
        fs::read_to_string(path).map_err(|e| config(format!("key {}: {e}", path.display())))?;
    let bad = |what: &str| config(format!("key {}: {what}", path.display()));
    let line = match classify(&text) {
        KeyText::Secret(line) => line,
        KeyText::Public(_) => {
            return Err(bad(&format!(
                "is a public key ({PUBLIC_HEADER}); signing needs the secret key ({SECRET_FILE} from `firmcast keygen`)"
            )))
        }
        KeyText::Untyped(_) if path.extension().is_some_and(|e| e == "pub") => {
            return Err(bad(&format!(
                "a .pub file is a public key; signing needs the secret key ({SECRET_FILE} from `firmcast keygen`)"
            )))
        }
        KeyText::Untyped(line) => line,
    };
    let mode = fs::metadata(path)
        .map_err(|e| bad(&e.to_string()))?
        .permissions()
        .mode();
    if let Some(why) = secret_mode_refusal(path, mode) {
        return Err(config(why));
    }
    let bytes = unhex(&line)
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

/// Load a public key file: the typed format or an untyped line of 64 hex
/// chars. Refuses a secret key.
pub fn load_public(path: &Path) -> Result<[u8; PUBLIC_KEY_LEN], Error> {
    let text = fs::read_to_string(path)
        .map_err(|e| config(format!("public key {}: {e}", path.display())))?;
    let line = match classify(&text) {
        KeyText::Public(line) | KeyText::Untyped(line) => line,
        KeyText::Secret(_) => {
            return Err(config(format!(
                "public key {}: is a secret key ({SECRET_HEADER}); give the .pub file",
                path.display()
            )))
        }
    };
    let bytes = unhex(&line)
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
        let KeyText::Secret(line) = classify(&fs::read_to_string(&g2.secret_path).expect("read"))
        else {
            panic!("keygen wrote an untyped secret key");
        };
        let seed = unhex(&line).expect("hex");
        fs::write(&long, format!("{}{}", hex(&seed), hex(&g2.public_key))).expect("write");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&long, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(*load_secret(&long).expect("long form").pk, g2.public_key);
        let mode = fs::metadata(&g2.secret_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// R-LOCAL-7: a public key is not a signing key, a secret key is not a
    /// public key, and a secret key others can read is refused as ssh does.
    #[test]
    fn key_kinds_and_secret_key_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(dir.path(), false).expect("keygen");
        let public = fs::read_to_string(&g.public_path).expect("read");
        assert!(public.starts_with(PUBLIC_HEADER), "{public}");
        let e = load_secret(&g.public_path).expect_err("public as secret");
        assert!(e.to_string().contains("is a public key"), "{e}");
        println!("manifest --key firmcast.pub: {e}");
        let e = load_public(&g.secret_path).expect_err("secret as public");
        assert!(e.to_string().contains("is a secret key"), "{e}");
        // An untyped (old) public key named .pub is refused as a signing key too.
        let old_pub = dir.path().join("old.pub");
        fs::write(&old_pub, format!("{}\n", hex(&g.public_key))).expect("write");
        fs::set_permissions(&old_pub, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(load_secret(&old_pub).is_err());
        assert_eq!(load_public(&old_pub).expect("old public"), g.public_key);
        // World-readable secret key.
        fs::set_permissions(&g.secret_path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_secret(&g.secret_path).expect_err("too open");
        assert!(
            e.to_string().contains("permissions 0644") && e.to_string().contains("too open"),
            "{e}"
        );
        println!("world-readable secret key: {e}");
        fs::set_permissions(&g.secret_path, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(load_secret(&g.secret_path).is_err(), "group-readable");
        fs::set_permissions(&g.secret_path, fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(*load_secret(&g.secret_path).expect("0400").pk, g.public_key);
        // An untyped (old) seed file with mode 0600 still signs.
        let old = dir.path().join("old.key");
        let KeyText::Secret(seed) = classify(&fs::read_to_string(&g.secret_path).expect("read"))
        else {
            panic!("untyped");
        };
        fs::write(&old, format!("{seed}\n")).expect("write");
        fs::set_permissions(&old, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(*load_secret(&old).expect("old secret").pk, g.public_key);
    }
}

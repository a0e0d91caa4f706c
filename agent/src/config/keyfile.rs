//! The key files a config names: `public_key` (the operator's key, inline
//! or a `firmcast keygen` .pub file) and `device_key` (this device's own
//! secret key); their typed first lines (R-LOCAL-7) and hex decoding.

use std::path::{Path, PathBuf};

use super::build::resolve;
use super::lint::{device_file, LINT_KEY};
use super::schema::key;
use super::ConfigError;
use crate::device_id::HostFacts;

/// First line of a typed public key file (`firmcast keygen`, R-LOCAL-7).
pub const PUBLIC_KEY_HEADER: &str = "firmcast-ed25519-public-key";
/// First line of a typed secret key file: never a `public_key`.
pub const SECRET_KEY_HEADER: &str = "firmcast-ed25519-secret-key";

/// The hex line of a key file given as `public_key`: after the
/// [`PUBLIC_KEY_HEADER`] line, or the first line of an untyped (older) file.
/// A secret key is refused (R-LOCAL-7).
pub fn public_key_line(text: &str) -> Result<&str, &'static str> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next().unwrap_or("") {
        SECRET_KEY_HEADER => Err("is a secret key (firmcast-ed25519-secret-key): give the operator's .pub file, and keep the secret key off the device"),
        PUBLIC_KEY_HEADER => Ok(lines.next().unwrap_or("")),
        l if l.len() == 128 && l.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err("holds 128 hex digits, an untyped secret key (seed and public key): give the operator's .pub file")
        }
        l => Ok(l),
    }
}

/// `public_key`: 64 hex characters inline, or a path to a `firmcast keygen`
/// .pub file (typed, or one hex line).
pub(super) fn public_key(
    file: &Path,
    base: &Path,
    value: &str,
    host: &HostFacts,
) -> Result<([u8; 32], Option<PathBuf>), ConfigError> {
    let v = value.trim();
    let looks_inline =
        v.len() == 64 || (!v.contains('/') && v.bytes().all(|b| b.is_ascii_hexdigit()));
    if looks_inline {
        return match decode_hex32(v) {
            Some(k) => Ok((k, None)),
            None if v.len() == 64 => Err(ConfigError::key(
                file,
                key::public_key,
                "not hex: expected 64 hex characters",
            )),
            None => Err(ConfigError::key(
                file,
                key::public_key,
                format!(
                    "expected 64 hex characters, got {} (or give the path of a .pub file)",
                    v.len()
                ),
            )),
        };
    }
    let p = resolve(base, v);
    let text = read_key_file(file, key::public_key, &p, host)?;
    let line = public_key_line(&text).map_err(|why| {
        ConfigError::key(
            file,
            key::public_key,
            format!("key file {} {why}", p.display()),
        )
    })?;
    match decode_hex32(line) {
        Some(k) => Ok((k, Some(p))),
        None => Err(ConfigError::key(
            file,
            key::public_key,
            format!(
                "key file {} holds no line of 64 hex characters (after its firmcast-ed25519-public-key line)",
                p.display()
            ),
        )),
    }
}

/// `device_key`: the path of a `firmcast keygen --device` secret key file
/// (its `firmcast-ed25519-secret-key` line, then 64 hex characters: the
/// Ed25519 seed; an untyped file is the hex line alone).
pub(super) fn device_key(
    file: &Path,
    base: &Path,
    value: &str,
    host: &HostFacts,
) -> Result<(PathBuf, [u8; 32]), ConfigError> {
    let p = resolve(base, value.trim());
    let text = read_key_file(file, key::device_key, &p, host)?;
    // A typed file (R-LOCAL-7) opens with its kind; an untyped one is the hex line.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or("");
    if line == SECRET_KEY_HEADER {
        line = lines.next().unwrap_or("");
    }
    match decode_hex32(line) {
        Some(seed) => Ok((p, seed)),
        None => Err(ConfigError::key(
            file,
            key::device_key,
            format!(
                "key file {} does not start with a line of 64 hex characters (a `firmcast keygen --device` device.key)",
                p.display()
            ),
        )),
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The key file `p` that `key` names (under `--lint`, a placeholder key).
fn read_key_file(
    file: &Path,
    key: &str,
    p: &Path,
    host: &HostFacts,
) -> Result<String, ConfigError> {
    device_file(host, p, LINT_KEY).map_err(|e| {
        ConfigError::key(
            file,
            key,
            format!("cannot read key file {}: {e}", p.display()),
        )
    })
}

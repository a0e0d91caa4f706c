//! fw_env.config: where the copies of the U-Boot environment live, parsed
//! as libubootenv reads it (`device offset env-size [sector-size [sectors]]`,
//! numbers as C's `%lli`).

use super::{EnvError, EnvErrorKind};

/// Where one copy of the environment lives (one fw_env.config line).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvLocation {
    /// The device as written in fw_env.config (`/dev/mtd1`, a file, or a
    /// firmcast target spec such as `simnor:/tmp/env.bin`).
    pub device: String,
    /// Byte offset of the copy on the device.
    pub offset: u64,
    /// Size of the copy in bytes (header included).
    pub env_size: u32,
    /// Erase sector size; 0 = the device's eraseblock size.
    pub sector_size: u32,
    /// Sectors reserved for the copy (NAND: the spares for bad blocks); 0 = 1.
    pub sectors: u32,
}

impl EnvLocation {
    /// A location with the device's sector size and one sector.
    #[must_use]
    pub fn new(device: impl Into<String>, offset: u64, env_size: u32) -> Self {
        EnvLocation {
            device: device.into(),
            offset,
            env_size,
            sector_size: 0,
            sectors: 0,
        }
    }

    /// `device at 0xOFFSET` for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{} at offset {:#x}", self.device, self.offset)
    }
}

/// A parsed fw_env.config: one location, or two for a redundant environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    /// The copies, in file order (copy 0, copy 1).
    pub copies: Vec<EnvLocation>,
}

impl EnvConfig {
    /// Whether there are two copies.
    #[must_use]
    pub fn redundant(&self) -> bool {
        self.copies.len() == 2
    }
}

/// `%lli`: decimal, `0x` hex or leading-0 octal, optionally negative.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `%zx`: hexadecimal with or without `0x` (so `10000` means 0x10000, as in
/// U-Boot's tools).
fn parse_hex(s: &str) -> Option<u64> {
    let t = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(t, 16).ok()
}

/// Parses the fw_env.config format: per line `device offset env-size
/// [sector-size [sectors]]`; `#` starts a comment line; lines with fewer than
/// three fields are ignored (as libubootenv does); the first two valid lines
/// are the copies. The offset is a C integer (decimal, `0x` hex); sizes are
/// hexadecimal with or without `0x`. `source` names the file in errors.
pub fn parse_fw_env_config(source: &str, text: &str) -> Result<EnvConfig, EnvError> {
    let mut copies = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let at = |what: &str, v: &str| {
            EnvError::new(
                EnvErrorKind::Config,
                format!("{source} line {}: {what} `{v}` is not valid", n + 1),
            )
        };
        let offset = parse_c_int(f[1]).ok_or_else(|| at("offset", f[1]))?;
        if offset < 0 {
            return Err(at("offset (negative offsets are not supported)", f[1]));
        }
        let env_size = parse_hex(f[2])
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 8)
            .ok_or_else(|| at("environment size", f[2]))?;
        let sector_size = match f.get(3) {
            Some(v) => parse_hex(v)
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| at("sector size", v))?,
            None => 0,
        };
        let sectors = match f.get(4) {
            Some(v) => parse_hex(v)
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| at("number of sectors", v))?,
            None => 0,
        };
        copies.push(EnvLocation {
            device: f[0].to_string(),
            offset: offset as u64,
            env_size,
            sector_size,
            sectors,
        });
        if copies.len() == 2 {
            break;
        }
    }
    match copies.as_slice() {
        [] => Err(EnvError::new(
            EnvErrorKind::Config,
            format!("{source}: no environment line (`device offset size [sector-size [sectors]]`)"),
        )),
        [a, b] if a.env_size != b.env_size => Err(EnvError::new(
            EnvErrorKind::Config,
            format!(
                "{source}: the two copies differ in size ({:#x} and {:#x})",
                a.env_size, b.env_size
            ),
        )),
        _ => Ok(EnvConfig { copies }),
    }
}
